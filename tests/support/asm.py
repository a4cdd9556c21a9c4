"""Assemble AArch64 snippets for tests with the project's cross toolchain (zig cc), cached."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

from elftools.elf.elffile import ELFFile

CACHE = Path(__file__).resolve().parents[2] / "build" / "test-asm"


def assemble(source: str) -> bytes:
    """Flat machine code of ``source`` (GNU as syntax, position-independent, one .text)."""
    text = ".text\n.global _start\n_start:\n" + source + "\n"
    key = hashlib.sha256(text.encode()).hexdigest()[:24]
    cached = CACHE / f"{key}.bin"
    if cached.exists():
        return cached.read_bytes()
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src, obj = Path(tmp) / "s.S", Path(tmp) / "s.o"
        src.write_text(text)
        done = subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target",
                               "aarch64-freestanding-none", "-c", str(src), "-o", str(obj)],
                              capture_output=True, text=True)
        if done.returncode:
            raise ValueError(f"assembling failed:\n{source}\n{done.stderr}")
        with obj.open("rb") as f:
            code = ELFFile(f).get_section_by_name(".text").data()
    cached.write_bytes(code)
    return code
