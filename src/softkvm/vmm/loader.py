"""Putting the guest into RAM: kernel (ELF, Linux arm64 Image, raw binary), initrd, device tree.

Counterpart: QEMU hw/arm/boot.c (``arm_setup_direct_kernel_boot``, ``load_aarch64_image``,
``arm_load_dtb``) and kvmtool's ``kvm__arch_load_kernel_image``; the protocol is Linux
Documentation/arch/arm64/booting.rst.

Placement, in RAM order::

    RAM base ─┬─ ELF: wherever its PT_LOAD p_paddr say
              ├─ Image: 2 MiB-aligned base (the bottom of RAM) + text_offset, image_size bytes
              └─ raw: RAM + 0x80000 (QEMU's KERNEL64_LOAD_ADDR)
    initrd ──── RAM + min(RAM/2, 128 MiB), or right after the kernel if that is higher (QEMU's
                rule: far enough for a decompressing kernel, low enough for small boards); if it
                does not fit there, right after the kernel; page-aligned
    DTB ─────── the next 2 MiB boundary after the initrd (or the kernel): booting.rst wants it
                8-byte aligned, at most 2 MiB and inside one 2 MiB block, which this guarantees

The boot CPU then enters at ``entry`` with x0 = DTB address, EL1h, DAIF masked, MMU off;
another layer sets those registers from the :class:`BootPlan`.
"""

from __future__ import annotations

import io
import mmap
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from softkvm.errors import ImageError
from softkvm.vmm.fdt import MAX_DTB_SIZE
from softkvm.vmm.memory import GuestMemory

if TYPE_CHECKING:
    from elftools.elf.elffile import ELFFile

KiB = 1 << 10
MiB = 1 << 20
PAGE_SIZE = 4 * KiB

RAW_LOAD_OFFSET = 0x80000  # QEMU KERNEL64_LOAD_ADDR
IMAGE_BASE_ALIGN = 2 * MiB  # booting.rst: text_offset from a 2 MiB-aligned base
LEGACY_TEXT_OFFSET = 0x80000  # booting.rst: image_size == 0 means a pre-3.17 kernel
INITRD_MAX_OFFSET = 128 * MiB
DTB_ALIGN = 2 * MiB

# Linux arm64 Image header (booting.rst): code0, code1, text_offset, image_size, flags,
# res2, res3, res4, magic, res5 — little-endian.
IMAGE_HEADER = struct.Struct("<IIQQQQQQII")
IMAGE_MAGIC = 0x644D5241  # "ARM\x64"
IMAGE_FLAG_BE = 1 << 0  # flags bit 0: kernel endianness, 1 = big-endian

# An image file's contents: mapped read-only (``_read_file``), or bytes once decompressed.
FileData = bytes | mmap.mmap
ELF_MAGIC = b"\x7fELF"
GZIP_MAGIC = b"\x1f\x8b"
PF_X = 1


class ImageKind(Enum):
    ELF = "elf"
    LINUX_IMAGE = "linux-image"
    RAW = "raw"


@dataclass(frozen=True, slots=True)
class LoadedImage:
    """A kernel in RAM: where to start it, and the guest-physical range it occupies."""

    kind: ImageKind
    entry: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class BootPlan:
    """Everything the boot vCPU needs: PC = entry, x0 = dtb_address."""

    kernel: LoadedImage
    dtb_address: int
    dtb: bytes = field(repr=False)
    initrd: tuple[int, int] | None = None

    @property
    def entry(self) -> int:
        return self.kernel.entry

    @property
    def dtb_size(self) -> int:
        return len(self.dtb)


@dataclass(frozen=True, slots=True)
class _Segment:
    index: int
    paddr: int
    vaddr: int
    offset: int
    filesz: int
    memsz: int
    flags: int


# --- kernel ------------------------------------------------------------------------------------


def load_kernel(mem: GuestMemory, path: str | Path) -> LoadedImage:
    """Load an ELF64 AArch64 executable, a Linux arm64 Image (optionally gzip'd) or a raw
    binary, detected by content."""
    data = _read_file(mem, path, "kernel image")
    if data[: len(ELF_MAGIC)] == ELF_MAGIC:
        return _load_elf(mem, data, str(path))
    if data[: len(GZIP_MAGIC)] == GZIP_MAGIC:
        data = _gunzip(mem, data, str(path))
        if not _is_linux_image(data):
            raise ImageError(f"kernel image '{path}' is gzip-compressed but not a Linux arm64 "
                             f"Image: give the uncompressed file")
    if _is_linux_image(data):
        return _load_linux_image(mem, data, str(path))
    load = mem.base + RAW_LOAD_OFFSET
    _check_fits(mem, "kernel image", str(path), load, len(data))
    mem.write(load, data)
    return LoadedImage(ImageKind.RAW, load, load, load + len(data))


def _read_file(mem: GuestMemory, path: str | Path, what: str) -> FileData:
    """The file's bytes, mapped rather than read: a Linux Image is tens of MiB, and a copy in
    fresh host memory costs a page fault and a zeroed page per 4 KiB before it is copied again
    into guest RAM."""
    file = Path(path)
    try:
        size = file.stat().st_size
        if size > mem.size:  # refuse before reading a huge file into the host's memory
            raise _too_big(mem, what, str(path), size)
        if not size:
            raise ImageError(f"{what} '{path}' is empty: give a built image")
        with open(file, "rb") as handle:
            return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError as err:
        raise ImageError(f"{what} '{path}' not found: check the path") from err
    except OSError as err:
        raise ImageError(f"cannot read {what} '{path}': {err.strerror}: check the path and "
                         f"its permissions") from err


def _too_big(mem: GuestMemory, what: str, path: str, size: int) -> ImageError:
    return ImageError(f"{what} '{path}' ({_mib(size)} MiB) does not fit in RAM of "
                      f"{_mib(mem.size)} MiB: give more memory with -m")


def _check_fits(mem: GuestMemory, what: str, path: str, start: int, size: int) -> None:
    if not mem.contains(start, size):
        raise _too_big(mem, what, path, size)


def _mib(size: int) -> str:
    return f"{size / MiB:.1f}".removesuffix(".0")


# --- Linux arm64 Image -------------------------------------------------------------------------


def _is_linux_image(data: FileData) -> bool:
    return len(data) >= IMAGE_HEADER.size and IMAGE_HEADER.unpack_from(data)[8] == IMAGE_MAGIC


def _load_linux_image(mem: GuestMemory, data: FileData, path: str) -> LoadedImage:
    _, _, text_offset, image_size, flags, *_ = IMAGE_HEADER.unpack_from(data)
    if flags & IMAGE_FLAG_BE:
        raise ImageError(f"kernel image '{path}' is a big-endian kernel: softkvm runs "
                         f"little-endian guests, build with CONFIG_CPU_LITTLE_ENDIAN")
    if image_size == 0:
        text_offset, image_size = LEGACY_TEXT_OFFSET, len(data)
    # The bottom of RAM is the lowest 2 MiB-aligned base: right for both values of flags bit 3
    # (physical placement "as low as possible" or "anywhere").
    base = _align_up(mem.base, IMAGE_BASE_ALIGN)
    load = base + text_offset
    span = max(image_size, len(data))  # the kernel owns image_size bytes (its BSS included)
    _check_fits(mem, "kernel image", path, load, span)
    mem.write(load, data)
    return LoadedImage(ImageKind.LINUX_IMAGE, load, load, load + span)


def _gunzip(mem: GuestMemory, data: FileData, path: str) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # 16+: expect a gzip wrapper
    try:
        out = inflater.decompress(data, mem.size + 1)  # bounded: a bomb stops at RAM size
    except zlib.error as err:
        raise ImageError(f"kernel image '{path}' is a corrupt gzip file ({err}): give a "
                         f"valid image") from err
    if len(out) > mem.size:
        raise _too_big(mem, "kernel image", path, len(out))
    if not inflater.eof:
        raise ImageError(f"kernel image '{path}' is a truncated gzip file: give a complete image")
    return out


# --- ELF ---------------------------------------------------------------------------------------


def _load_elf(mem: GuestMemory, data: FileData, path: str) -> LoadedImage:
    entry, segments = _parse_elf(data, path)
    if not segments:
        raise ImageError(f"ELF '{path}' has no loadable segment: link it with a PT_LOAD "
                         f"segment in RAM")
    for seg in segments:
        _check_segment(mem, seg, len(data), path)
    entry = _physical_entry(entry, segments)
    if not mem.contains(entry, 4):
        raise ImageError(f"entry point {entry:#x} of ELF '{path}' is outside RAM "
                         f"[{mem.base:#x}, {mem.end:#x}): link it for RAM at {mem.base:#x}")
    for seg in segments:
        mem.write(seg.paddr, data[seg.offset: seg.offset + seg.filesz])
        mem.fill(seg.paddr + seg.filesz, seg.memsz - seg.filesz)  # .bss
    start = min(s.paddr for s in segments)
    end = max(s.paddr + s.memsz for s in segments)
    return LoadedImage(ImageKind.ELF, entry, start, end)


def _parse_elf(data: FileData, path: str) -> tuple[int, list[_Segment]]:
    """Header checks and PT_LOAD segments; any parse failure becomes an ImageError."""
    # pyelftools takes 40 ms to import: only an ELF image pays for it.
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(io.BytesIO(data))
        _check_elf_header(elf, path)
        segments = [
            _Segment(i, seg["p_paddr"], seg["p_vaddr"], seg["p_offset"], seg["p_filesz"],
                     seg["p_memsz"], seg["p_flags"])
            for i, seg in enumerate(elf.iter_segments())
            if seg["p_type"] == "PT_LOAD" and seg["p_memsz"] > 0]
        return elf.header["e_entry"], segments
    except (ELFError, struct.error, ValueError, EOFError) as err:
        raise ImageError(f"ELF '{path}' is truncated or corrupt ({err}): rebuild it") from err


def _check_elf_header(elf: ELFFile, path: str) -> None:
    if elf.elfclass != 64:
        raise ImageError(f"ELF '{path}' is 32-bit: softkvm runs AArch64 guests, build an "
                         f"ELF64 for aarch64")
    if not elf.little_endian:
        raise ImageError(f"ELF '{path}' is big-endian: build a little-endian aarch64 guest")
    machine = elf.header["e_machine"]
    if machine != "EM_AARCH64":
        raise ImageError(f"ELF '{path}' is for {machine}, not AArch64: build the guest for "
                         f"aarch64")
    kind = elf.header["e_type"]
    if kind != "ET_EXEC":
        raise ImageError(f"ELF '{path}' is of type {kind}, not an executable: link it as a "
                         f"static executable (ET_EXEC) at its load address")


def _check_segment(mem: GuestMemory, seg: _Segment, file_size: int, path: str) -> None:
    if seg.filesz > seg.memsz or seg.offset + seg.filesz > file_size:
        raise ImageError(f"ELF segment {seg.index} of '{path}' runs past the end of the file "
                         f"(truncated or corrupt): rebuild it")
    if not mem.contains(seg.paddr, seg.memsz):
        raise ImageError(
            f"ELF segment {seg.index} of '{path}' at [{seg.paddr:#x}, {seg.paddr + seg.memsz:#x})"
            f" is outside RAM [{mem.base:#x}, {mem.end:#x}): link the guest for RAM at "
            f"{mem.base:#x}, or give more memory with -m")


def _physical_entry(entry: int, segments: list[_Segment]) -> int:
    """The MMU is off at entry, so e_entry (a virtual address) is moved into the physical
    image when an executable segment is linked with p_vaddr != p_paddr (QEMU elf_ops.h)."""
    for seg in segments:
        if (seg.flags & PF_X and seg.vaddr != seg.paddr
                and seg.vaddr <= entry < seg.vaddr + seg.filesz):
            return entry - seg.vaddr + seg.paddr
    return entry


# --- initrd and device tree --------------------------------------------------------------------


def load_initrd(mem: GuestMemory, path: str | Path, after: int) -> tuple[int, int]:
    """Load an initrd above ``after`` (the kernel's end); returns [start, end)."""
    data = _read_file(mem, path, "initrd")
    start = initrd_address(mem, after, len(data))
    if start is None:
        raise ImageError(f"initrd '{path}' ({_mib(len(data))} MiB) does not fit in RAM of "
                         f"{_mib(mem.size)} MiB after the kernel (which ends at {after:#x}): "
                         f"give more memory with -m")
    mem.write(start, data)
    return start, start + len(data)


def initrd_address(mem: GuestMemory, after: int, size: int) -> int | None:
    """QEMU's spot (RAM + min(RAM/2, 128 MiB), not below ``after``), else right after the
    kernel; None when neither fits."""
    preferred = mem.base + min(mem.size // 2, INITRD_MAX_OFFSET)
    for candidate in (max(preferred, after), after):
        start = _align_up(max(candidate, mem.base), PAGE_SIZE)
        if mem.contains(start, size):
            return start
    return None


def place_dtb(mem: GuestMemory, blob: bytes, after: int) -> int:
    """Copy the DTB to the first 2 MiB boundary at or above ``after``; returns its address."""
    if len(blob) > MAX_DTB_SIZE:
        raise ImageError(f"the device tree is {len(blob) >> 10} KiB, more than the 2 MiB a "
                         f"kernel accepts (booting.rst): shrink it")
    gpa = _align_up(max(after, mem.base), DTB_ALIGN)
    if not mem.contains(gpa, len(blob)):
        raise ImageError(f"no room for the device tree ({len(blob)} bytes) at {gpa:#x}, above "
                         f"the kernel and initrd, in RAM of {_mib(mem.size)} MiB: give more "
                         f"memory with -m")
    mem.write(gpa, blob)
    return gpa


def load(mem: GuestMemory, kernel: str | Path, *, initrd: str | Path | None = None,
         make_dtb: Callable[[tuple[int, int] | None], bytes]) -> BootPlan:
    """Kernel, then initrd, then the DTB built for that initrd range, in RAM order.

    ``make_dtb`` receives the initrd range (or None) and returns the blob: ``build_dtb`` with
    ``initrd=``, or a user's ``--dtb`` passed through ``fixup_chosen``.
    """
    image = load_kernel(mem, kernel)
    initrd_range = load_initrd(mem, initrd, image.end) if initrd is not None else None
    blob = make_dtb(initrd_range)
    dtb_address = place_dtb(mem, blob, initrd_range[1] if initrd_range else image.end)
    return BootPlan(image, dtb_address, blob, initrd_range)


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) & ~(align - 1)
