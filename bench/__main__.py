"""Run the benchmark: ``python -m bench [micro|linux|all]``; writes bench/results/<suite>.json."""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import linux, micro
from bench.micro import Result

RESULTS = Path(__file__).resolve().parent / "results"
SUITES: dict[str, Callable[[], list[Result]]] = {
    "micro": lambda: micro.cpu_bound() + micro.trap_path(),
    "linux": lambda: linux.boot_times(1) + linux.boot_times(2),
}


def run_suite(name: str) -> None:
    results = SUITES[name]()
    width = max(len(r.name) for r in results)
    for r in results:
        print(f"{r.name:<{width}}  {r.value:10.3f} {r.unit}  {r.detail}")
    RESULTS.mkdir(exist_ok=True)
    doc = {"suite": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.platform(),
           "python": sys.version.split()[0], "results": [r.as_dict() for r in results]}
    (RESULTS / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")


def main(argv: list[str]) -> int:
    chosen = argv[1:] or ["all"]
    for name in (list(SUITES) if chosen == ["all"] else chosen):
        if name not in SUITES:
            print(f"unknown suite {name!r}: choose from {', '.join(SUITES)} or all",
                  file=sys.stderr)
            return 2
        run_suite(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
