"""Run from a checkout without installing: put src/ on the path when the package is not
installed (an installed copy, e.g. on PYTHONPATH, wins)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("deerflow_example_handlers") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
