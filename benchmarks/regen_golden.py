"""Compare (or with ``--write`` rewrite) ``senet/golden.json``: ``python -m tests.golden`` from the
repository root does the same; the checker lives beside the tests that use it."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    runpy.run_module("tests.golden", run_name="__main__")
