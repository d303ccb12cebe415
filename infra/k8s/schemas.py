"""Helpers of infra/k8s/validate.sh (PyYAML only, so the test lane's Python runs them).

crds OUT CRD.yaml...   each version of each CustomResourceDefinition as the JSON schema
                       kubeconform reads (OUT/<group>/<kind>_<version>.json, kind in lower case),
                       made strict the way kubeconform's openapi2jsonschema does it: every object
                       that lists its properties refuses others, unless the CRD lets it keep
                       unknown fields; int-or-string fields accept either.
standalone SRC OUT    the built-in kinds' strict schemas of SRC (kubernetes-validate's layout: one
                       file per kind whose $refs point into _definitions.json by absolute URL,
                       which kubeconform would try to download) written to OUT with every
                       $ref inlined (a definition that contains itself is left open there).
pick GROUP             rendered manifests on stdin -> the documents of API group GROUP as one
                       JSON list on stdout (for the Strimzi validator, infra/k8s/strimzi-validate.mjs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


def strict(schema: Any) -> Any:
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: strict(value) for key, value in schema.items()}
    if schema.pop("x-kubernetes-int-or-string", False):
        schema.pop("type", None)
        schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        schema["additionalProperties"] = False
    return schema


def convert(out: Path, crd_files: list[Path]) -> int:
    written = 0
    for path in crd_files:
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"].lower()
            for version in crd["spec"]["versions"]:
                schema = strict(version["schema"]["openAPIV3Schema"])
                target = out / group / f"{kind}_{version['name']}.json"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(schema, indent=1, sort_keys=True))
                written += 1
    return written


def inline(schema: Any, definitions: dict[str, Any], stack: tuple[str, ...] = ()) -> Any:
    if isinstance(schema, list):
        return [inline(item, definitions, stack) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if isinstance(schema.get("$ref"), str):
        name = schema["$ref"].rpartition("/")[2]
        rest = {key: value for key, value in schema.items() if key != "$ref"}
        target = {} if name in stack else inline(definitions[name], definitions, (*stack, name))
        return {**target, **inline(rest, definitions, stack)}
    return {key: inline(value, definitions, stack) for key, value in schema.items() if key != "$id"}


def standalone(source: Path, out: Path) -> int:
    definitions = json.loads((source / "_definitions.json").read_text())["$defs"]
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for path in sorted(source.glob("*.json")):
        schema = json.loads(path.read_text())
        if "x-kubernetes-group-version-kind" in schema:
            (out / path.name).write_text(json.dumps(inline(schema, definitions)))
            written += 1
    return written


def pick(group: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(sys.stdin)
            if doc and str(doc.get("apiVersion", "")).split("/")[0] == group]


def main(argv: list[str]) -> int:
    if argv[:1] == ["crds"] and len(argv) >= 3:
        count = convert(Path(argv[1]), [Path(p) for p in argv[2:]])
        print(f"{count} schemas written to {argv[1]}", file=sys.stderr)
        return 0 if count else 1
    if argv[:1] == ["standalone"] and len(argv) == 3:
        count = standalone(Path(argv[1]), Path(argv[2]))
        print(f"{count} schemas written to {argv[2]}", file=sys.stderr)
        return 0 if count else 1
    if argv[:1] == ["pick"] and len(argv) == 2:
        json.dump(pick(argv[1]), sys.stdout)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
