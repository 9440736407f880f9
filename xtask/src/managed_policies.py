"""Fails if SAM gives a function's role a managed policy other than basic execution.

The policy test (xtask/src/policy.rs) reads template.yaml as written; this reads it
as CloudFormation receives it: translated by SAM's own translator (offline), where
SAM adds managed policies of its own (e.g. AWSLambdaSQSQueueExecutionRole for an
`SQS` event, which allows receive and delete on every queue).

Usage: python managed_policies.py template.yaml
"""

import os
import sys

from samcli.yamlhelper import yaml_parse
from samtranslator.translator.transform import transform

ALLOWED = {"AWSLambdaBasicExecutionRole"}
PSEUDO = {
    "AWS::Region": "us-east-1",
    "AWS::Partition": "aws",
    "AWS::AccountId": "123456789012",
    "AWS::StackName": "messaging",
    "AWS::StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/messaging/x",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::NotificationARNs": [],
}


class NoPolicyLookup:
    """Named managed policies would be looked up in IAM; the template names none."""

    def load(self):
        return {}


def policy_name(arn):
    text = arn.get("Fn::Sub", arn) if isinstance(arn, dict) else arn
    return str(text).rsplit("/", 1)[-1]


def main(path):
    os.environ.setdefault("AWS_DEFAULT_REGION", PSEUDO["AWS::Region"])
    with open(path, encoding="utf-8") as f:
        template = yaml_parse(f.read())
    # As `sam validate` does: the code's location is not what is checked.
    template.get("Globals", {}).get("Function", {}).pop("CodeUri", None)
    for resource in template["Resources"].values():
        if resource.get("Type") == "AWS::Serverless::Function":
            resource.setdefault("Properties", {})["CodeUri"] = "s3://bucket/code.zip"
    translated = transform(template, dict(PSEUDO), NoPolicyLookup())
    problems = []
    roles = 0
    for logical_id, resource in translated["Resources"].items():
        if resource.get("Type") != "AWS::IAM::Role":
            continue
        roles += 1
        for arn in resource.get("Properties", {}).get("ManagedPolicyArns", []):
            name = policy_name(arn)
            if name not in ALLOWED:
                problems.append(
                    f"{logical_id}: SAM attaches the managed policy {name}; grant what it "
                    "allows with inline statements on the template's own resources"
                )
    if roles == 0:
        problems.append("the translated template has no IAM role: nothing was checked")
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"{roles} function roles carry no managed policy but basic execution")


if __name__ == "__main__":
    main(sys.argv[1])
