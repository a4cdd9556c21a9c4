"""Run the benchmark and write bench/results/latest.json (+ a dated copy)."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

from bench import micro

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    results = micro.cpu_bound() + micro.trap_path()
    width = max(len(r.name) for r in results)
    for r in results:
        print(f"{r.name:<{width}}  {r.value:10.2f} {r.unit}")
    RESULTS.mkdir(exist_ok=True)
    doc = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.platform(),
           "python": sys.version.split()[0], "results": [r.as_dict() for r in results]}
    text = json.dumps(doc, indent=2) + "\n"
    (RESULTS / "latest.json").write_text(text)
    (RESULTS / f"micro-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
