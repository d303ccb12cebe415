"""The wheel is the product: one import package, no benchmark or test code inside."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("schemas", "workers", "streams", "monitoring")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    (built,) = out.glob("streaminfer-*.whl")
    return built


def test_the_installed_wheel_adds_exactly_one_top_level_import_name(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--quiet", "--target", str(target), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    names = {p.name for p in target.iterdir() if not p.name.endswith((".dist-info", ".data")) and p.name != "bin"}
    assert names == {"streaminfer"}
    for layer in LAYERS:
        assert (target / "streaminfer" / layer / "__init__.py").is_file(), layer
    assert list((target / "streaminfer" / "schemas").glob("*.schema.json")), "the JSON Schemas ship with the codecs"


def test_the_wheel_ships_no_benchmark_or_test_launcher(wheel):
    with zipfile.ZipFile(wheel) as archive:
        files = archive.namelist()
    assert not [f for f in files if "/bench/" in f or f.startswith("bench/")]
    assert not [f for f in files if "kafka_jvm" in f or f.startswith("tests/")]


def test_no_module_imports_a_layer_by_its_bare_top_level_name():
    bare = re.compile(rf"^\s*(from|import)\s+({'|'.join(LAYERS)})(\.|\s|$)", re.M)
    sources = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    offenders = [f for f in sources if bare.search((ROOT / f).read_text())]
    assert offenders == []
