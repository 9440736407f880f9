"""Deploys template.yaml as a CloudFormation stack into the local AWS emulator.

What `sam deploy` does on AWS, with the functions already built: each function's
binary is zipped as `bootstrap` into the emulator's S3, and the template goes to
CloudFormation as written, SAM transform included (ministack applies SAM's own
translator), with only each function's CodeUri pointing at its zip.

Then the one step the emulator does not do itself: the HTTP API that SAM generates
carries its routes in an OpenAPI `Body`, which ministack does not import, so the
API has no routes. They are created here from the template's `HttpApi` events, one
AWS_PROXY integration (payload format 2.0) per function and one route per event,
as SAM's OpenAPI would have them. Routes the API already has are left alone.

`--environment NAME=VALUE` adds a variable to every function's environment after
the deploy (the local stack's short retry delays, and the loopback provider URLs
the template's https-only parameters cannot take); `{api_url}` in VALUE is the
API's local URL.

Usage: python deploy.py --endpoint URL --stack NAME --binaries DIR
         [--parameter KEY=VALUE]... [--environment NAME=VALUE]... template.yaml
Prints one JSON object: the stack's outputs, the API's id and local URL, and the
functions' physical names by logical id.
"""

import argparse
import io
import json
import sys
import time
import zipfile

import boto3
import yaml

BUCKET = "messaging-deployments"


class TemplateLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms (`!Ref`, `!GetAtt`, `!Sub`, ...)."""


def _short_form(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


TemplateLoader.add_multi_constructor("!", _short_form)


def functions(template):
    """(logical id, binary name) of every function the template builds."""
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            binary = resource["Metadata"]["BuildProperties"]["Binary"]
            yield logical_id, binary


def http_routes(template):
    """(logical id of the function, method, path) of every HttpApi event."""
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        for event in resource["Properties"].get("Events", {}).values():
            if event["Type"] == "HttpApi":
                props = event["Properties"]
                yield logical_id, props["Method"].upper(), props["Path"]


def single_metric_alarms(template):
    """The emulator's second gap: it cannot create metric-math alarms (`Metrics`).
    Each becomes an alarm on the first metric its expression reads, under the same
    logical id (the dashboard names it); returns their logical ids."""
    replaced = []
    for logical_id, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] != "AWS::CloudWatch::Alarm" or "Metrics" not in props:
            continue
        stat = next(m["MetricStat"] for m in props.pop("Metrics") if "MetricStat" in m)
        props.update(
            Namespace=stat["Metric"]["Namespace"],
            MetricName=stat["Metric"]["MetricName"],
            Dimensions=stat["Metric"].get("Dimensions", []),
            Period=stat["Period"],
            Statistic=stat["Stat"],
        )
        replaced.append(logical_id)
    return replaced


def bootstrap_zip(path):
    """The binary at `path` as the single, executable `bootstrap` of a zip."""
    buffer = io.BytesIO()
    # Debug builds are some 60 MB each: the fastest compression keeps the deploy short.
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o100755 << 16
        with open(path, "rb") as binary:
            archive.writestr(info, binary.read(), zipfile.ZIP_DEFLATED, compresslevel=1)
    return buffer.getvalue()


def pairs(values):
    return dict(value.split("=", 1) for value in values)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("template")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--stack", required=True)
    parser.add_argument("--binaries", required=True)
    parser.add_argument("--parameter", action="append", default=[])
    parser.add_argument("--environment", action="append", default=[])
    args = parser.parse_args()

    session = boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )

    def client(name):
        return session.client(name, endpoint_url=args.endpoint)

    with open(args.template) as f:
        template = yaml.load(f, Loader=TemplateLoader)

    stand_ins = single_metric_alarms(template)

    # The code: one zip per function in the emulator's S3, under the stack's name.
    s3 = client("s3")
    s3.create_bucket(Bucket=BUCKET)
    for logical_id, binary in functions(template):
        key = f"{args.stack}/{binary}.zip"
        s3.put_object(Bucket=BUCKET, Key=key, Body=bootstrap_zip(f"{args.binaries}/{binary}"))
        template["Resources"][logical_id]["Properties"]["CodeUri"] = f"s3://{BUCKET}/{key}"

    cloudformation = client("cloudformation")
    # An earlier run's stack, on an emulator that is still running, goes first.
    cloudformation.delete_stack(StackName=args.stack)
    deadline = time.monotonic() + 60
    while True:
        left = [
            s["StackStatus"]
            for s in cloudformation.list_stacks()["StackSummaries"]
            if s["StackName"] == args.stack and s["StackStatus"] != "DELETE_COMPLETE"
        ]
        if not left:
            break
        if "DELETE_FAILED" in left or time.monotonic() > deadline:
            sys.exit(f"the earlier stack {args.stack} could not be deleted: {left}")
        time.sleep(0.5)
    cloudformation.create_stack(
        StackName=args.stack,
        TemplateBody=json.dumps(template),
        Parameters=[
            {"ParameterKey": k, "ParameterValue": v} for k, v in pairs(args.parameter).items()
        ],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    deadline = time.monotonic() + 120
    while True:
        stack = cloudformation.describe_stacks(StackName=args.stack)["Stacks"][0]
        status = stack["StackStatus"]
        if status == "CREATE_COMPLETE":
            break
        if not status.endswith("IN_PROGRESS") or time.monotonic() > deadline:
            events = cloudformation.describe_stack_events(StackName=args.stack)["StackEvents"]
            failed = [
                f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', '')}"
                for e in events
                if e["ResourceStatus"].endswith("FAILED")
            ]
            sys.exit(f"stack {args.stack} is {status}: {'; '.join(failed) or 'no reason given'}")
        time.sleep(0.5)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    resources = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cloudformation.list_stack_resources(StackName=args.stack)[
            "StackResourceSummaries"
        ]
    }

    # The routes SAM's OpenAPI Body would have given the HTTP API.
    lambda_ = client("lambda")
    apis = client("apigatewayv2")
    api_id = resources["HttpApi"]
    existing = {r["RouteKey"] for r in apis.get_routes(ApiId=api_id)["Items"]}
    integrations = {}
    for logical_id, method, path in http_routes(template):
        route_key = f"{method} {path}"
        if route_key in existing:
            continue
        if logical_id not in integrations:
            arn = lambda_.get_function(FunctionName=resources[logical_id])["Configuration"][
                "FunctionArn"
            ]
            integrations[logical_id] = apis.create_integration(
                ApiId=api_id,
                IntegrationType="AWS_PROXY",
                IntegrationUri=arn,
                PayloadFormatVersion="2.0",
            )["IntegrationId"]
        apis.create_route(
            ApiId=api_id, RouteKey=route_key, Target=f"integrations/{integrations[logical_id]}"
        )

    # The emulator's URL of the API's $default stage (the stage stays out of the
    # path, as on AWS).
    api_url = f"{args.endpoint}/_aws/execute-api/{api_id}"
    overlay = {k: v.replace("{api_url}", api_url) for k, v in pairs(args.environment).items()}
    names = {logical_id: resources[logical_id] for logical_id, _ in functions(template)}
    if overlay:
        for name in names.values():
            config = lambda_.get_function_configuration(FunctionName=name)
            variables = config.get("Environment", {}).get("Variables", {})
            lambda_.update_function_configuration(
                FunctionName=name, Environment={"Variables": {**variables, **overlay}}
            )

    print(
        json.dumps(
            {
                "outputs": outputs,
                "api_id": api_id,
                "api_url": api_url,
                "functions": names,
                "single_metric_alarms": stand_ins,
            }
        )
    )


if __name__ == "__main__":
    main()
