"""The Debian arm64 Linux guest (``make linux-guest``) and helpers to read what it printed."""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.guests import ROOT

LINUX_DIR = ROOT / "build" / "linux"
BOOT_TIMEOUT = 600.0  # generous: a loaded 2-core CI machine must not fail a boot for being slow
APPEND = "console=ttyAMA0 panic=-1"


def bundle() -> tuple[Path, Path]:
    image, initrd = LINUX_DIR / "Image", LINUX_DIR / "initramfs.cpio.gz"
    if not image.exists() or not initrd.exists():
        pytest.fail(f"the Linux guest is not in {LINUX_DIR}: run `make linux-guest`")
    return image, initrd


def newc_entry(name: str, data: bytes, mode: int = 0o100755) -> bytes:
    """One file in the cpio "newc" format the kernel's initramfs unpacker reads."""
    name_bytes = name.encode() + b"\0"
    fields = [0, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_bytes), 0]
    header = b"070701" + b"".join(f"{v:08X}".encode() for v in fields)
    pad = lambda n: b"\0" * (-n % 4)  # noqa: E731
    return header + name_bytes + pad(110 + len(name_bytes)) + data + pad(len(data))


def initramfs_with_init(base: Path, init_script: str, out: Path) -> Path:
    """``base`` plus a second archive replacing /init: later entries win when unpacking."""
    trailer = newc_entry("TRAILER!!!", b"", 0)
    extra = gzip.compress(newc_entry("init", init_script.encode()) + trailer)
    out.write_bytes(base.read_bytes() + extra)
    return out


@dataclass(slots=True)
class Interrupts:
    """One /proc/interrupts dump: counts per row label, summed over CPUs."""

    rows: dict[str, list[int]]

    def total(self, label: str) -> int:
        return sum(self.rows.get(label, []))


def interrupt_dumps(console: str) -> list[Interrupts]:
    dumps = []
    for block in re.split(r"^--- /proc/interrupts.*$", console, flags=re.MULTILINE)[1:]:
        rows: dict[str, list[int]] = {}
        for line in block.splitlines()[1:]:
            if line.startswith("---") or not line.strip():
                break
            label, _, rest = line.partition(":")
            counts = []
            for word in rest.split():
                if not word.isdigit():
                    break
                counts.append(int(word))
            name = "arch_timer" if "arch_timer" in line else label.strip()
            rows[name] = counts
        dumps.append(Interrupts(rows))
    return dumps
