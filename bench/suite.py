"""The guest suite: the bench guest in every softkvm irqchip set-up and on QEMU TCG, repeated,
reduced to one JSON document (medians of per-run numbers, percentiles of pooled samples, exits
per event, ratios to QEMU)."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.guest import (QEMU_MODES, SOFTKVM_MODES, GuestRun, Mode, qemu_binary, qemu_version,
                         run_qemu, run_softkvm)
from bench.irqfd_host import IrqfdCounts
from bench.metrics import HISTOGRAMS, METRICS, Metric

Log = Callable[[str], None]


@dataclass(slots=True)
class SuiteConfig:
    repeats: int = 3
    append: str = "n=20000 nirq=5000 ipi=500 samples=100 deadline=10 tickms=1000"
    irqfd: IrqfdCounts = field(default_factory=lambda: IrqfdCounts(edge=2000, level=2000, lat=200))
    smp: int = 2
    qemu: bool = True
    modes: tuple[Mode, ...] = SOFTKVM_MODES


QUICK = SuiteConfig(repeats=1, append="n=1000 nirq=200 ipi=50 samples=10 tickms=200",
                    irqfd=IrqfdCounts(edge=50, level=50, lat=10))


def log_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def collect(cfg: SuiteConfig, log: Log = log_stderr) -> dict[str, list[GuestRun]]:
    """All runs, by mode name. Repeats are interleaved across modes, so a burst of load on the
    host spreads over every mode instead of skewing one."""
    runs: dict[str, list[GuestRun]] = {}
    qemu_modes = QEMU_MODES if cfg.qemu and qemu_binary() is not None else ()
    for rep in range(cfg.repeats):
        for mode in cfg.modes:
            _add(runs, run_softkvm(mode, cfg.append, cfg.smp), log, rep)
            if mode.irqchip == "kernel":
                _add(runs, run_softkvm(mode, "", cfg.smp, irqfd=cfg.irqfd), log, rep)
        for mode in qemu_modes:
            run = run_qemu(mode, cfg.append, cfg.smp)
            if run is not None:
                _add(runs, run, log, rep)
    return runs


def _add(runs: dict[str, list[GuestRun]], run: GuestRun, log: Log, rep: int) -> None:
    runs.setdefault(run.mode.name, []).append(run)
    log(f"  bench guest {run.mode.name:<10} run {rep + 1}: {run.seconds:5.1f} s")


def metric_value(metric: Metric, runs: list[GuestRun]) -> float | None:
    if metric.kind in ("cost", "rate"):
        values = [v for r in runs if (v := metric.value(r)) is not None]
        return statistics.median(values) if values else None
    return metric.of_samples([s for r in runs for s in metric.samples(r)])


def exits_per_event(metric: Metric, runs: list[GuestRun]) -> dict[str, float]:
    """Median over runs of each counter's delta per event of the metric's window."""
    windows = [r.exits[metric.window] for r in runs if metric.window in r.exits]
    keys = sorted({k for w in windows for k in w})
    return {k: round(statistics.median(w.get(k, 0.0) for w in windows), 3) for k in keys}


def qemu_peer(mode_name: str) -> str:
    return "qemu-" + mode_name.split("-")[0]


def ratio(metric: Metric, ours: float | None, qemu: float | None) -> float | None:
    """How many times slower than QEMU (> 1: softkvm is slower)."""
    if ours is None or qemu is None or not ours or not qemu:
        return None
    return qemu / ours if metric.higher_is_better else ours / qemu


def summarize(runs: dict[str, list[GuestRun]]) -> dict[str, object]:
    metrics = []
    for metric in METRICS:
        values = {mode: metric_value(metric, mode_runs) for mode, mode_runs in runs.items()}
        values = {m: v for m, v in values.items() if v is not None}
        if not values:
            continue
        metrics.append({
            "key": metric.key, "title": metric.title, "unit": metric.unit,
            "higher_is_better": metric.higher_is_better, "window": metric.window,
            "values": values,
            "ratios": {m: r for m in values if not m.startswith("qemu")
                       if (r := ratio(metric, values[m], values.get(qemu_peer(m)))) is not None},
            "exits": {m: e for m, mode_runs in runs.items() if not m.startswith("qemu")
                      if (e := exits_per_event(metric, mode_runs))},
        })
    samples = {name: {mode: [round(s, 2) for r in mode_runs for s in _samples(name, r)]
                      for mode, mode_runs in runs.items()} for name in HISTOGRAMS}
    return {"metrics": metrics, "samples": samples,
            "runs": {m: [round(r.seconds, 2) for r in rs] for m, rs in runs.items()}}


def _samples(name: str, run: GuestRun) -> list[float]:
    return run.irqfd_lat_us if name == "irqfd-lat" else run.output.samples_us(name)


def guest_suite(cfg: SuiteConfig | None = None, log: Log = log_stderr) -> dict[str, object]:
    cfg = cfg or SuiteConfig()
    start, load_start = time.monotonic(), os.getloadavg()
    runs = collect(cfg, log)
    doc = summarize(runs)
    doc.update({"params": {"append": cfg.append, "repeats": cfg.repeats, "smp": cfg.smp,
                           "irqfd": {"edge": cfg.irqfd.edge, "level": cfg.irqfd.level,
                                     "lat": cfg.irqfd.lat}},
                "qemu": qemu_version() if cfg.qemu else None,
                "loadavg": {"start": [round(x, 2) for x in load_start],
                            "end": [round(x, 2) for x in os.getloadavg()]},
                "seconds": round(time.monotonic() - start, 1)})
    return doc
