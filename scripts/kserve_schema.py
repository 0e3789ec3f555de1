"""Build the JSON schema that tests/test_deploy_manifests.py checks dropin's KServe manifests
(deploy/kserve/) against, from KServe's own Python SDK on PyPI.

The SDK's models are generated from the CRDs' openAPI definitions: each class lists its fields
(`openapi_types`: Python name -> type, `attribute_map`: Python name -> JSON name) and refuses
`None` for the required ones. This script reads those classes from the wheel (with `ast`, without
importing kserve, whose pins clash with dropin's) and writes one schema: KServe's objects with
exactly their fields (`additionalProperties: false`; the protocol versions with the values
their descriptions list), Kubernetes' own types (a Container, a
Volume...) marked with `x-kubernetes-type` for the test to check with kubernetes-validate.

    pip download --no-deps kserve==0.21.0 -d /tmp/kserve
    python scripts/kserve_schema.py /tmp/kserve/kserve-0.21.0-py3-none-any.whl tests/deploy_schemas/kserve.json
"""

from __future__ import annotations

import ast
import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

ROOTS = ("V1alpha1ServingRuntime", "V1alpha1ClusterServingRuntime", "V1beta1InferenceService")
SCALARS = {"str": {"type": "string"}, "int": {"type": "integer"}, "bool": {"type": "boolean"},
           "float": {"type": "number"}, "object": {}, "datetime": {"type": "string"}}


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


class Builder:
    def __init__(self, wheel: zipfile.ZipFile) -> None:
        self.wheel = wheel
        self.names = set(wheel.namelist())
        self.definitions: dict[str, Any] = {}

    def source(self, cls: str) -> str | None:
        path = f"kserve/models/{_snake(cls)}.py"
        return self.wheel.read(path).decode() if path in self.names else None

    def type_schema(self, text: str) -> dict[str, Any]:
        text = text.strip()
        if text in SCALARS:
            return dict(SCALARS[text])
        if match := re.fullmatch(r"list\[(.+)\]", text):
            return {"type": "array", "items": self.type_schema(match.group(1))}
        if match := re.fullmatch(r"dict\(str, (.+)\)", text):
            return {"type": "object", "additionalProperties": self.type_schema(match.group(1))}
        if self.source(text) is not None:  # one of KServe's objects
            self.define(text)
            return {"$ref": f"#/definitions/{text}"}
        return {"type": "object", "x-kubernetes-type": text}  # V1Container, V1ObjectMeta, ...

    def define(self, cls: str) -> None:
        if cls in self.definitions:
            return
        self.definitions[cls] = {}  # before the fields: types may refer to themselves
        source = self.source(cls)
        assert source is not None, cls
        tree = ast.parse(source)
        found: dict[str, dict[str, str]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                if node.targets[0].id in ("openapi_types", "attribute_map"):
                    found[node.targets[0].id] = ast.literal_eval(node.value)
        required = sorted(found["attribute_map"][name] for name in
                          re.findall(r"Invalid value for `(\w+)`, must not be `None`", source))
        properties = {found["attribute_map"][name]: self.type_schema(kind)
                      for name, kind in found["openapi_types"].items()}
        # the values a protocol field takes are listed in its description, "(i.e. v1 or v2 ...)"
        for name, values in re.findall(r"Gets the (\w+) of this \w+\..*?\n\n\s+[^\n]*?\(i\.e\. ([\w -]+)\)", source):
            field = properties[found["attribute_map"][name]]
            (field["items"] if field.get("type") == "array" else field)["enum"] = values.split(" or ")
        schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            schema["required"] = required
        self.definitions[cls] = schema


def main(wheel_path: str, out: str) -> None:
    with zipfile.ZipFile(wheel_path) as wheel:
        builder = Builder(wheel)
        for root in ROOTS:
            builder.define(root)
    version = re.search(r"kserve-([^-]+)-", Path(wheel_path).name)
    schema = {"$comment": f"built by scripts/kserve_schema.py from kserve {version.group(1) if version else '?'}",
              "definitions": builder.definitions}
    Path(out).write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
