"""Dependencies point one way: senet <- ablations; analysis reads files and may use senet only."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_library_imports_neither_ray_nor_the_sweep_or_analysis_code():
    code = ("import sys, senet, senet.train, senet.data, senet.checkpoint, senet.interop, senet.cli; "
            "print(sorted(m for m in ('ray', 'captum', 'ablations', 'analysis') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _imported_packages(package: str) -> set[str]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package, forbidden", [
    ("senet", {"ablations", "analysis", "ray"}),
    ("ablations", {"analysis"}),
    ("analysis", {"ablations", "ray"}),
])
def test_no_import_points_the_wrong_way(package, forbidden):
    assert not _imported_packages(package) & forbidden
