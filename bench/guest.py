"""Run the ``bench`` guest once: on softkvm (in this process, one irqchip set-up) or on QEMU TCG.

On softkvm the console is an :class:`ExitRecorder`, so each measured window also yields the
exits it cost; with ``irqfd`` counts the host side of the irqfd sub-benchmarks is attached.
"""

from __future__ import annotations

import io

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.exits import ExitRecorder
from bench.irqfd_host import IrqfdCounts, IrqfdHost
from bench.parse import GuestOutput, parse_output
from softkvm.vmm.builder import build
from softkvm.vmm.config import VmConfig
from softkvm.vmm.runner import StopReason

ROOT = Path(__file__).resolve().parents[1]
GUEST = ROOT / "build" / "guests" / "bench.elf"
TIMEOUT_S = 300.0


class BenchError(RuntimeError):
    """The guest did not run to a clean SUMMARY."""


@dataclass(frozen=True, slots=True)
class Mode:
    """One machine set-up: softkvm with an irqchip, or QEMU TCG (``irqchip`` None)."""

    name: str
    gic: str
    irqchip: str | None = None

    @property
    def is_qemu(self) -> bool:
        return self.irqchip is None


SOFTKVM_MODES = (Mode("v3-kernel", "v3", "kernel"), Mode("v2-kernel", "v2", "kernel"),
                 Mode("v2-user", "v2", "user"))
QEMU_MODES = (Mode("qemu-v3", "v3"), Mode("qemu-v2", "v2"))


@dataclass(slots=True)
class GuestRun:
    mode: Mode
    output: GuestOutput
    text: str
    seconds: float
    exits: dict[str, dict[str, float]] = field(default_factory=dict)  # window -> per event
    irqfd_lat_us: list[float] = field(default_factory=list)


def qemu_binary() -> str | None:
    return shutil.which("qemu-system-aarch64")


def qemu_version() -> str | None:
    qemu = qemu_binary()
    if qemu is None:
        return None
    out = subprocess.run([qemu, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else None


def run_softkvm(mode: Mode, append: str, smp: int = 2, irqfd: IrqfdCounts | None = None,
                image: Path = GUEST) -> GuestRun:
    host = IrqfdHost(irqfd) if irqfd is not None else None
    recorder = ExitRecorder(on_line=host.on_line if host is not None else None)
    args = f"{append} {host.bootargs}".strip() if host is not None else append
    config = VmConfig(kernel=image, smp=smp, gic=mode.gic,  # type: ignore[arg-type]
                      irqchip=mode.irqchip, append=args,  # type: ignore[arg-type]
                      console_out=io.BytesIO(), timeout=TIMEOUT_S,  # the recorder taps the UART
                      # it snapshots at each byte's own exit, and its "mmio" op is a UARTFR read
                      # the VMM serves (published, it would need no exit)
                      coalesced_mmio=False, published_mmio=False)
    start = time.monotonic()
    machine = build(config)
    try:
        recorder.attach(machine)
        if host is not None:
            host.attach(machine)
        result = machine.run()
    finally:
        machine.close()
        if host is not None:
            host.close()
    text = recorder.text
    output = parse_output(text)
    if result.reason is not StopReason.POWER_OFF or not output.ok:
        raise BenchError(f"bench guest on softkvm {mode.name}: {result.reason.name} "
                         f"{result.message} {output.failures}\n{text[-3000:]}")
    run = GuestRun(mode, output, text, time.monotonic() - start, recorder.per_op())
    if host is not None:
        run.irqfd_lat_us = host.latencies_us(output.samples.get("irqfd-lat", []))
    return run


def qemu_command(mode: Mode, append: str, smp: int, image: Path) -> list[str] | None:
    qemu = qemu_binary()
    if qemu is None:
        return None
    return [qemu, "-M", f"virt,gic-version={mode.gic[1]}", "-cpu", "cortex-a72", "-accel", "tcg",
            "-smp", str(smp), "-m", "128M", "-nographic", "-no-reboot", "-kernel", str(image),
            "-append", append]


def run_qemu(mode: Mode, append: str, smp: int = 2, image: Path = GUEST) -> GuestRun | None:
    """None when QEMU is not installed (it is a reference, never a dependency)."""
    cmd = qemu_command(mode, append, smp, image)
    if cmd is None:
        return None
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL,
                          timeout=TIMEOUT_S, check=False)
    text = proc.stdout.decode(errors="replace")
    output = parse_output(text)
    if proc.returncode != 0 or not output.ok:
        raise BenchError(f"bench guest on {mode.name}: rc={proc.returncode} {output.failures}\n"
                         f"{text[-3000:]}")
    return GuestRun(mode, output, text, time.monotonic() - start)
