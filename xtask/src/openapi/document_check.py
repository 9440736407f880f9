"""Check 1 of `cargo xtask openapi`: openapi.yaml is valid OpenAPI 3.1 and its
examples match their schemas (run by xtask/src/openapi.rs with `python -c`)."""

import json
import sys

import jsonschema_rs
import yaml
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

path = sys.argv[1]
with open(path, encoding="utf-8") as f:
    spec = yaml.safe_load(f)
problems = []
checked = 0

for error in OPENAPI_31_VALIDATOR.iter_errors(json.loads(json.dumps(spec))):
    at = "/" + "/".join(map(str, error.instance_path))
    problems.append(f"not valid OpenAPI 3.1 at {at}: {error.message}")


def resolve(node):
    hops = 0
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise SystemExit(f"only local references are supported, got {ref}")
        node = spec
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        hops += 1
        if hops > 20:
            raise SystemExit(f"reference loop at {ref}")
    return node


def check(where, schema, value):
    global checked
    checked += 1
    if schema is None:
        problems.append(f"{where}: an example without a schema")
        return
    # The document's components at the root, so that its references resolve.
    root = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": spec.get("components", {}),
        "allOf": [schema],
    }
    for error in jsonschema_rs.validator_for(root, validate_formats=True).iter_errors(value):
        at = "/" + "/".join(map(str, error.instance_path))
        problems.append(f"{where}: the example is invalid at {at}: {error.message}")


def examples_of(node):
    """(name, value) of a parameter's, header's or media type's examples."""
    found = []
    if "example" in node:
        found.append(("example", node["example"]))
    for name, example in (node.get("examples") or {}).items():
        example = resolve(example)
        if "value" in example:
            found.append((name, example["value"]))
    return found


def schema_examples(where, schema, depth=0):
    """The `examples` (and `example`) of a schema and of its subschemas."""
    if not isinstance(schema, dict) or depth > 30:
        return
    if isinstance(schema.get("examples"), list):
        for value in schema["examples"]:
            check(f"{where} (schema example)", schema, value)
    if "example" in schema:
        check(f"{where} (schema example)", schema, schema["example"])
    for key, sub in schema.items():
        if key in ("properties", "patternProperties", "$defs"):
            for name, subschema in sub.items():
                schema_examples(f"{where}.{name}", subschema, depth + 1)
        elif key in ("items", "not", "additionalProperties", "contains"):
            schema_examples(f"{where}[{key}]", sub, depth + 1)
        elif key in ("allOf", "anyOf", "oneOf", "prefixItems"):
            for i, subschema in enumerate(sub):
                schema_examples(f"{where}.{key}[{i}]", subschema, depth + 1)


for name, schema in spec.get("components", {}).get("schemas", {}).items():
    schema_examples(f"components.schemas.{name}", schema)

operations = 0
for route, item in spec.get("paths", {}).items():
    for method, operation in item.items():
        if method not in ("get", "put", "post", "delete", "patch", "head", "options", "trace"):
            continue
        operations += 1
        op = f"{method.upper()} {route}"
        parameters = item.get("parameters", []) + operation.get("parameters", [])
        for parameter in map(resolve, parameters):
            where = f"{op}: {parameter['in']} parameter {parameter['name']}"
            found = examples_of(parameter)
            for name, value in found:
                check(f"{where} ({name})", parameter.get("schema"), value)
            if parameter.get("required") and not found:
                problems.append(f"{where}: required, but without an example")
        body = resolve(operation.get("requestBody", {}))
        for media_type, content in body.get("content", {}).items():
            found = examples_of(content)
            for name, value in found:
                check(f"{op}: request {media_type} ({name})", content.get("schema"), value)
            if not found:
                problems.append(f"{op}: request {media_type} without an example")
        for status, response in operation.get("responses", {}).items():
            response = resolve(response)
            for header_name, header in (response.get("headers") or {}).items():
                header = resolve(header)
                for name, value in examples_of(header):
                    where = f"{op}: {status} header {header_name} ({name})"
                    check(where, header.get("schema"), value)
            for media_type, content in (response.get("content") or {}).items():
                found = examples_of(content)
                for name, value in found:
                    check(f"{op}: {status} {media_type} ({name})", content.get("schema"), value)
                if not found:
                    problems.append(f"{op}: {status} {media_type} without an example")

if operations == 0:
    problems.append("no operations")
for problem in problems:
    print(f"{path}: {problem}")
print(f"{path}: {operations} operations, {checked} examples valid, {len(problems)} problems")
sys.exit(1 if problems else 0)
