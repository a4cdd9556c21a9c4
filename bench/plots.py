"""PNG plots of the guest suite (matplotlib, the ``bench`` extra; no display needed).

- ``costs.png``: µs per operation and latency percentiles, per set-up (log scale);
- ``ratio.png``: how many times slower than QEMU TCG, per softkvm set-up;
- ``rates.png``: events per second (timer ticks, irqfd injections);
- ``latency.png``: histograms of timer deadline, IPI and irqfd latency per set-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.metrics import HISTOGRAMS

MODE_ORDER = ("v3-kernel", "v2-kernel", "v2-user", "qemu-v3", "qemu-v2")
COLORS = {"v3-kernel": "#1f77b4", "v2-kernel": "#2ca02c", "v2-user": "#ff7f0e",
          "qemu-v3": "#7f7f7f", "qemu-v2": "#bcbcbc"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_all(doc: dict | None, out: Path) -> list[Path]:
    """Every plot for a guest-suite document (nothing without one)."""
    if doc is None:
        return []
    plt = _pyplot()
    paths = [grouped_bars(plt, doc, out / "costs.png", rates=False),
             grouped_bars(plt, doc, out / "rates.png", rates=True),
             ratio_bars(plt, doc, out / "ratio.png"),
             histograms(plt, doc, out / "latency.png")]
    return [p for p in paths if p is not None]


def _modes(values: list[dict]) -> list[str]:
    return [m for m in MODE_ORDER if any(m in v for v in values)]


def grouped_bars(plt: Any, doc: dict, path: Path, rates: bool) -> Path | None:
    metrics = [m for m in doc["metrics"] if m["higher_is_better"] == rates]
    if not metrics:
        return None
    fig, ax = _bars(plt, metrics, "values", 0.13)
    ax.set_xlabel("events per second" if rates else "µs (log scale)")
    ax.set_title("softkvm vs QEMU TCG: " + ("rates" if rates else "cost per operation"))
    return _save(plt, fig, path)


def ratio_bars(plt: Any, doc: dict, path: Path) -> Path | None:
    metrics = [m for m in doc["metrics"] if m["ratios"]]
    if not metrics:
        return None
    fig, ax = _bars(plt, metrics, "ratios", 0.15)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("times slower than QEMU TCG with the same GIC (log scale; 1 = equal)")
    ax.set_title("softkvm ÷ QEMU TCG")
    return _save(plt, fig, path)


def _bars(plt: Any, metrics: list[dict], key: str, row_height: float) -> tuple[Any, Any]:
    """Horizontal bars, one group per metric and one bar per set-up, on a log axis."""
    modes = _modes([m[key] for m in metrics])
    fig, ax = plt.subplots(figsize=(10, row_height * len(metrics) * len(modes) + 1.5))
    height = 0.8 / len(modes)
    for i, mode in enumerate(modes):
        ys = [k + i * height for k in range(len(metrics))]
        ax.barh(ys, [m[key].get(mode, 0) for m in metrics], height=height, label=mode,
                color=COLORS.get(mode))
    ax.set_yticks([k + 0.4 - height / 2 for k in range(len(metrics))])
    ax.set_yticklabels([m["title"] for m in metrics], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.legend(fontsize=8)
    ax.grid(axis="x", which="both", alpha=0.3)
    return fig, ax


def histograms(plt: Any, doc: dict, path: Path) -> Path | None:
    samples = {k: v for k, v in doc["samples"].items() if any(v.values())}
    if not samples:
        return None
    fig, axes = plt.subplots(len(samples), 1, figsize=(9, 2.8 * len(samples)), squeeze=False)
    for ax, (name, by_mode) in zip(axes[:, 0], samples.items()):
        _histogram(ax, name, by_mode)
    return _save(plt, fig, path)


def _histogram(ax: Any, name: str, by_mode: dict[str, list[float]]) -> None:
    values = [v for vs in by_mode.values() for v in vs if v > 0]
    low, high = max(min(values), 0.1), max(values)
    bins = [low * (high / low) ** (i / 60) for i in range(61)] if high > low else 10
    for mode in MODE_ORDER:
        data = [v for v in by_mode.get(mode, []) if v > 0]
        if data:
            ax.hist(data, bins=bins, histtype="step", linewidth=1.4,
                    label=f"{mode} (n={len(data)})", color=COLORS.get(mode))
    ax.set_xscale("log")
    ax.set_title(HISTOGRAMS.get(name, name), fontsize=10)
    ax.set_xlabel("µs (log scale)")
    ax.set_ylabel("samples")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
