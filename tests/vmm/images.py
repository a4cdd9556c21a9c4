"""Tiny guest images built in the tests: ELF64 (pyelftools only reads) and arm64 Image headers."""

from __future__ import annotations

import struct
from dataclasses import dataclass

EM_AARCH64 = 183
EM_X86_64 = 62
ET_EXEC = 2
ET_DYN = 3
PT_LOAD = 1
PF_X, PF_W, PF_R = 1, 2, 4
ELF64_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
ELF64_PHDR = struct.Struct("<IIQQQQQQ")


@dataclass
class Seg:
    paddr: int
    data: bytes
    memsz: int | None = None
    vaddr: int | None = None
    flags: int = PF_R | PF_X
    filesz: int | None = None  # override to lie about the file contents


def make_elf(segments: list[Seg], entry: int, *, machine: int = EM_AARCH64,
             ei_class: int = 2, e_type: int = ET_EXEC) -> bytes:
    """An ELF64 little-endian file: header, program headers, then each segment's bytes."""
    ident = b"\x7fELF" + bytes([ei_class, 1, 1]) + bytes(9)
    phoff = ELF64_EHDR.size
    offset = phoff + ELF64_PHDR.size * len(segments)
    phdrs, blobs = b"", b""
    for seg in segments:
        filesz = len(seg.data) if seg.filesz is None else seg.filesz
        memsz = len(seg.data) if seg.memsz is None else seg.memsz
        vaddr = seg.paddr if seg.vaddr is None else seg.vaddr
        phdrs += ELF64_PHDR.pack(PT_LOAD, seg.flags, offset + len(blobs), vaddr, seg.paddr,
                                 filesz, memsz, 0x1000)
        blobs += seg.data
    header = ELF64_EHDR.pack(ident, e_type, machine, 1, entry, phoff, 0, 0, ELF64_EHDR.size,
                             ELF64_PHDR.size, len(segments), 0, 0, 0)
    return header + phdrs + blobs


def make_linux_image(body_size: int = 0x1000, *, text_offset: int = 0, image_size: int = 0x20000,
                     flags: int = 0b1010) -> bytes:
    """An arm64 Image: booting.rst header (branch, offsets, magic "ARM\\x64") and filler."""
    header = struct.pack("<IIQQQQQQII", 0x14000010, 0, text_offset, image_size, flags,
                         0, 0, 0, 0x644D5241, 0)
    return header + bytes(range(256)) * ((body_size - len(header)) // 256 + 1)
