"""Linux boot time: softkvm in each irqchip mode against QEMU TCG, same kernel and command line.

Wall seconds from process start to the guest's LINUXGUEST-MARKER line and to process exit, the
median of a few runs; softkvm's exits by reason come from ``--stats``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.micro import Result

ROOT = Path(__file__).resolve().parents[1]
LINUX = ROOT / "build" / "linux"
APPEND = "console=ttyAMA0 panic=-1"
MODES = [("v3", "kernel"), ("v2", "kernel"), ("v2", "user")]
RUNS = 5  # the host is a shared VM: a median of 3 still swung by 10% between bench runs


def _timed(cmd: list[str]) -> tuple[float, float, str, str]:
    """(seconds to the marker, seconds to exit, console, stderr)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    marker, out = float("nan"), bytearray()
    assert proc.stdout is not None
    while chunk := proc.stdout.read1(4096):
        out += chunk
        if marker != marker and b"LINUXGUEST-MARKER" in out:
            marker = time.monotonic() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.wait()
    return marker, time.monotonic() - start, out.decode(errors="replace"), err


def softkvm_cmd(gic: str, irqchip: str, smp: int) -> list[str]:
    return [sys.executable, "-m", "softkvm", "run", "--stats", "-m", "512M", "--smp", str(smp),
            "--gic", gic, "--irqchip", irqchip, "--timeout", "300",
            "--kernel", str(LINUX / "Image"),
            "--initrd", str(LINUX / "initramfs.cpio.gz"), "--append", APPEND]


def qemu_cmd(gic: str, smp: int) -> list[str] | None:
    qemu = shutil.which("qemu-system-aarch64")
    if qemu is None:
        return None
    return [qemu, "-M", f"virt,gic-version={gic[1]}", "-cpu", "cortex-a72", "-accel", "tcg",
            "-smp", str(smp), "-m", "512M", "-nographic", "-no-reboot", "-kernel",
            str(LINUX / "Image"), "-initrd", str(LINUX / "initramfs.cpio.gz"), "-append", APPEND]


def exits_by_reason(stats: str) -> str:
    """Totals over the vCPUs of the main exit counters in ``--stats`` output (rows of a counter
    name and one number per vCPU, possibly followed by a total column)."""
    wanted = ("exits", "hvc_exit_stat", "wfi_exit_stat", "mmio_exit_user", "mmio_exit_kernel",
              "irq_exits", "signal_exits", "user_irqchip_exits", "sysreg_traps",
              "exceptions_reflected", "preemptions")
    has_total, found = False, {}
    for line in stats.splitlines():
        parts = line.split()
        if parts[:1] == ["counter"]:
            has_total = parts[-1] == "total"
        elif parts and parts[0] in wanted and all(p.isdigit() for p in parts[1:]) and parts[1:]:
            numbers = [int(p) for p in parts[1:]]
            found.setdefault(parts[0], numbers[-1] if has_total else sum(numbers))
    return ", ".join(f"{name}={found[name]}" for name in wanted if name in found)


def available() -> bool:
    return (LINUX / "Image").exists()


def boot_times(smp: int = 1) -> list[Result]:
    """Median of RUNS boots in each set-up. The set-ups take turns, round after round, so that
    a slow spell of the host weighs on QEMU's times as much as on softkvm's."""
    if not available():
        return [Result("linux boot", float("nan"), "s", "build/linux missing: make linux-guest")]
    setups = [(f"QEMU TCG gic{gic}", gic, cmd) for gic in ("v3", "v2")
              if (cmd := qemu_cmd(gic, smp)) is not None]
    setups += [(f"softkvm {gic}-{irqchip}", gic, softkvm_cmd(gic, irqchip, smp))
               for gic, irqchip in MODES]
    runs: dict[str, list[tuple[float, float, str, str]]] = {name: [] for name, _g, _c in setups}
    for _ in range(RUNS):
        for name, _gic, cmd in setups:
            runs[name].append(_timed(cmd))
    results, qemu_exit = [], {}
    for name, gic, _cmd in setups:
        marker = statistics.median(r[0] for r in runs[name])
        done = statistics.median(r[1] for r in runs[name])
        label = f"linux smp{smp} {name}"
        if name.startswith("QEMU"):
            qemu_exit[gic] = done
            results += [Result(f"{label}: to marker", marker, "s"),
                        Result(f"{label}: to exit", done, "s")]
            continue
        results += [Result(f"{label}: to marker", marker, "s"),
                    Result(f"{label}: to exit", done, "s", exits_by_reason(runs[name][-1][3]))]
        if gic in qemu_exit:
            results.append(Result(f"{label}: ratio to QEMU TCG (exit)", done / qemu_exit[gic], "x",
                                  "goal <= 1.2"))
    return results
