"""Run every benchmark in ``tests/bench/`` (``make bench``); each prints its figures and writes
``tests/bench/results/<name>.json``. Benchmarks report; they never assert timings."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def main() -> None:
    here = Path(__file__).parent
    wanted = set(sys.argv[1:])
    for path in sorted(here.glob("bench_*.py")):
        if wanted and path.stem not in wanted:
            continue
        print(f"== {path.stem}", flush=True)
        saved = sys.argv
        sys.argv = [str(path)]
        try:
            runpy.run_path(str(path), run_name="__main__")
        finally:
            sys.argv = saved


if __name__ == "__main__":
    main()
