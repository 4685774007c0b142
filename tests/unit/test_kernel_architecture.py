"""The package rules of DESIGN.md, checked on the source (no import needed).

* ``edge`` and ``cloud`` never import each other;
* nothing imports ``firmware_sim`` but tests, benchmarks and the demo wiring;
* ``models`` and ``gondola`` (but its CLI and demo wiring) import none of the sides;
* vendor SDKs (``azure.*``, ``paho``) are imported only by adapter modules;
* no module does I/O at import time (checked loosely: no top-level ``open(``/``connect(`` calls).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gondola", "firmware_sim", "edge", "cloud", "models")

# Modules allowed to import a vendor SDK: adapters only.
VENDOR_ADAPTERS = {
    "azure": ("edge/azure/", "cloud/azure/", "gondola/azure/"),
    "paho": ("edge/mqtt", "firmware_sim/mqtt", "firmware_sim/live"),
}


def _modules():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(), filename=str(path))


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


ALL = list(_modules())


@pytest.mark.parametrize("path, tree", ALL, ids=[p for p, _ in ALL])
def test_module_respects_the_package_rules(path, tree):
    pkg = path.split("/")[0]
    for name in _imports(tree):
        top = name.split(".")[0]
        if pkg == "edge":
            assert top != "cloud", f"{path}: edge must not import cloud ({name})"
        if pkg == "cloud":
            assert top != "edge", f"{path}: cloud must not import edge ({name})"
        if top == "firmware_sim" and pkg != "firmware_sim":
            assert path == "gondola/demo.py", f"{path}: only tests, benchmarks and the demo import firmware_sim"
        if pkg == "models":
            assert top not in ("edge", "cloud", "firmware_sim"), f"{path}: models imports {name}"
        if pkg == "gondola" and path not in ("gondola/cli.py", "gondola/demo.py"):
            assert top not in ("edge", "cloud", "firmware_sim", "models"), f"{path}: the kernel imports {name}"
        if pkg == "firmware_sim":
            assert top not in ("edge", "cloud", "models"), f"{path}: the simulator imports {name}"
        for vendor, allowed in VENDOR_ADAPTERS.items():
            if top == vendor:
                assert path.startswith(allowed), f"{path}: only adapters ({', '.join(allowed)}) import {vendor}"


@pytest.mark.parametrize("path, tree", ALL, ids=[p for p, _ in ALL])
def test_module_does_no_io_at_import_time(path, tree):
    for node in tree.body:
        if isinstance(node, (ast.Expr, ast.Assign)) and isinstance(node.value, ast.Call):
            func = node.value.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            assert name not in ("open", "connect", "Client", "mkdir", "write_text"), f"{path}: {name}() at import time"
