"""Run a built guest program on a fresh machine and collect what it printed."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path

import pytest

from softkvm.vmm.builder import Machine, build
from softkvm.vmm.config import VmConfig
from softkvm.vmm.runner import RunResult
from tests.support.console import LineConsole

ROOT = Path(__file__).resolve().parents[2]
GUEST_DIR = ROOT / "build" / "guests"
SUMMARY = re.compile(r"^SUMMARY: (\d+) passed, (\d+) failed$", re.MULTILINE)
# Generous: a loaded 2-core CI machine must never fail a guest for being slow.
GUEST_TIMEOUT = 180.0


@dataclass(slots=True)
class GuestRun:
    result: RunResult
    output: str

    @property
    def passed(self) -> int:
        match = SUMMARY.search(self.output)
        return int(match.group(1)) if match else 0

    @property
    def failures(self) -> list[str]:
        lines = [l for l in self.output.splitlines() if l.startswith(("FAIL", "UNEXPECTED"))]
        match = SUMMARY.search(self.output)
        if match is None:
            lines.append("no SUMMARY line")
        elif int(match.group(2)):
            lines.append(match.group(0))
        return lines


def guest_image(name: str) -> Path:
    path = GUEST_DIR / f"{name}.elf"
    if not path.exists():
        pytest.fail(f"guest {path} is not built: run `make guests`")
    return path


def run_guest(name: str, smp: int = 1, *, console: LineConsole | None = None,
              before_run: Callable[[Machine], None] | None = None,
              **options: object) -> GuestRun:
    """Boot ``build/guests/<name>.elf``; ``console`` reacts to its lines, ``before_run`` gets
    the built machine (e.g. to attach devices) before the first vCPU runs."""
    out = io.BytesIO() if console is None else console
    config = VmConfig(kernel=guest_image(name), smp=smp, console_out=out,  # type: ignore[arg-type]
                      timeout=GUEST_TIMEOUT, **options)  # type: ignore[arg-type]
    machine = build(config)
    try:
        if before_run is not None:
            before_run(machine)
        result = machine.run()
    finally:
        machine.close()
    if console is None:
        return GuestRun(result, out.getvalue().decode(errors="replace"))  # type: ignore[union-attr]
    console.finish()
    return GuestRun(result, console.text)
