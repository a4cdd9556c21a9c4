"""The VM's configuration: one dataclass, validated once, built from the CLI or by tests.

Counterpart: QEMU's machine options (-smp, -m, -kernel, -initrd, -append, -dtb,
-machine gic-version=, kernel-irqchip=, dtb-randomness=).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from softkvm.errors import ConfigError

MAX_SMP = 8
_SIZE = re.compile(r"^(\d+)([KMGT]?)(i?B)?$", re.IGNORECASE)
_UNITS = {"": 1 << 20, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """QEMU's -m syntax: a number in MiB, or with a K/M/G/T suffix."""
    match = _SIZE.match(text.strip())
    if not match:
        raise ConfigError(f"bad memory size '{text}': use a number of MiB or a suffix, e.g. "
                          "512M or 1G")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def check_trace_path(path: Path) -> None:
    """Refuse a --trace FILE that cannot be written, before the guest runs for nothing."""
    parent = path.parent
    if path.is_dir():
        raise ConfigError(f"--trace '{path}' is a directory: give a file name, e.g. "
                          f"{path / 'trace.json'}")
    if not parent.is_dir():
        raise ConfigError(f"--trace '{path}': directory '{parent}' does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"--trace '{path}': not writable")


@dataclass(slots=True)
class VmConfig:
    kernel: Path
    smp: int = 1
    mem_size: int = 256 << 20
    gic: Literal["v2", "v3"] = "v3"
    irqchip: Literal["kernel", "user"] = "kernel"
    initrd: Path | None = None
    append: str = ""
    dtb: Path | None = None
    dump_dtb: Path | None = None
    timeout: float | None = None
    stats: bool = False
    stat_socket: Path | None = None       # serve live counters here (softkvm stat)
    stat_socket_optional: bool = False    # the per-PID default: skipped if it cannot be made
    trace: Path | None = None             # write a Perfetto / Chrome JSON trace here at exit
    console_out: BinaryIO | None = None   # None: the process's stdout
    console_in: BinaryIO | None = None    # None: no console input
    coalesced_mmio: bool = True           # queue UARTDR writes (KVM_REGISTER_COALESCED_MMIO)
    published_mmio: bool = True           # UARTFR polls exit no more (published register)
    dtb_randomness: bool = True           # kaslr-seed, rng-seed in /chosen (QEMU's default)

    def validate(self) -> VmConfig:
        if not 1 <= self.smp <= MAX_SMP:
            raise ConfigError(f"--smp {self.smp} is out of range: give 1 to {MAX_SMP} vCPUs")
        if self.irqchip == "user" and self.gic != "v2":
            raise ConfigError("--irqchip user emulates a GICv2 in the VMM: use --gic v2 with it")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError("--timeout must be a positive number of seconds")
        if self.stat_socket is not None and not self.stat_socket_optional \
                and not Path(self.stat_socket).parent.is_dir():
            raise ConfigError(f"--stat-socket '{self.stat_socket}': its directory does not "
                              "exist")
        if self.trace is not None:
            check_trace_path(Path(self.trace))
        for what, path in (("kernel image", self.kernel), ("initrd", self.initrd),
                           ("device tree", self.dtb)):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{what} '{path}' not found: check the path")
        return self
