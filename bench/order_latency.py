"""The order latency benchmark (bench/latency.py, bench/README.md) as a command.

.venv/bin/python bench/order_latency.py [--sequential 5] [--bursts 20,50] [--redeliver 20] [--keep-dir DIR]
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def run() -> None:
    # Run as a file, Python puts bench/ on the path instead of the project whose packages the
    # benchmark (bench/latency.py) imports.
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    runpy.run_module("bench.latency", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    run()
