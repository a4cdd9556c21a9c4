"""Run the benchmark: ``python -m bench [micro|guest|linux|report|all] [--quick] [--no-qemu]``.

``all`` (the default, what ``make bench`` runs): the CPU-bound ceiling (micro), the bench guest
in every irqchip set-up and on QEMU (guest), Linux boot times when build/linux exists (linux),
then the report. Each suite writes bench/results/<suite>.json; the report writes summary.md, the
PNG plots and the README's benchmark block; run.json records when, where and how long.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from bench import linux, micro, report, suite
from bench.micro import Result
from bench.store import RESULTS, document, write_json

SUITE_NAMES = ("micro", "guest", "linux")


def _print_results(results: list[Result]) -> None:
    width = max(len(r.name) for r in results)
    for r in results:
        print(f"{r.name:<{width}}  {r.value:10.3f} {r.unit}  {r.detail}", flush=True)


def run_results_suite(name: str, fn: Callable[[], list[Result]]) -> None:
    results = fn()
    _print_results(results)
    write_json(name, document(name, {"results": [r.as_dict() for r in results]}))


def run_guest_suite(quick: bool, qemu: bool) -> None:
    cfg = suite.QUICK if quick else suite.SuiteConfig()
    cfg.qemu = qemu
    doc = document("guest", suite.guest_suite(cfg))
    write_json("guest", doc)
    print("\n".join(report.guest_table(doc)), flush=True)


def run_suite(name: str, quick: bool, qemu: bool) -> None:
    print(f"== {name} ==", flush=True)
    if name == "micro":
        run_results_suite(name, micro.cpu_bound)
    elif name == "guest":
        run_guest_suite(quick, qemu)
    elif not linux.available():
        print("linux: build/linux is missing (make linux-guest): suite skipped", flush=True)
    else:
        run_results_suite(name, lambda: linux.boot_times(1) + linux.boot_times(2))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="*", metavar="SUITE",
                        help="micro, guest, linux, report or all (default)")
    parser.add_argument("--quick", action="store_true", help="small counts, one boot per mode")
    parser.add_argument("--no-qemu", action="store_true", help="leave the QEMU reference out")
    args = parser.parse_args(argv)
    unknown = [s for s in args.suites if s not in (*SUITE_NAMES, "report", "all")]
    if unknown:
        parser.error(f"unknown suite {unknown[0]!r}: choose from {', '.join(SUITE_NAMES)}, "
                     "report or all")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv[1:])
    suites = args.suites or ["all"]
    chosen = list(SUITE_NAMES) + ["report"] if "all" in suites else suites
    start = time.monotonic()
    for name in (n for n in chosen if n in SUITE_NAMES):
        run_suite(name, args.quick, not args.no_qemu)
    if any(n in SUITE_NAMES for n in chosen):
        write_json("run", document("run", {"suites": [n for n in chosen if n in SUITE_NAMES],
                                        "seconds": round(time.monotonic() - start, 1),
                                        "cpus": os.cpu_count()}))
    if "report" in chosen:
        for path in report.write_report(RESULTS):
            print(f"wrote {path}", flush=True)
    print(f"bench: {time.monotonic() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
