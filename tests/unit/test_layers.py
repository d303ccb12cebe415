"""Imports flow one way: schemas ← workers, monitoring ← streams ← the composition root."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: What each layer may import of ours, besides itself.
ALLOWED = {
    "schemas": set(),
    "workers": {"schemas"},
    "monitoring": {"schemas", "workers"},
    "streams": {"schemas", "workers", "monitoring"},
}


def _our_imports(path: Path) -> set[str]:
    layers = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "streaminfer":
                layers.add(parts[1] if len(parts) > 1 and parts[1] in ALLOWED else "streaminfer")
    return layers


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_layer_imports_only_the_layers_below_it(layer):
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported - ALLOWED[layer] - {layer})
        for path in sorted((ROOT / layer).rglob("*.py"))
        if (imported := _our_imports(path)) - ALLOWED[layer] - {layer}
    }
    assert offenders == {}
