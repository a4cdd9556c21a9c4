"""Kernel, initrd and DTB placement (hw/arm/boot.c, booting.rst) and every way a file can be bad."""

import gzip
import struct

import pytest

from softkvm.errors import ImageError
from softkvm.vmm.fdt import build_dtb, dtb_to_dict
from softkvm.vmm.layout import VirtLayout
from softkvm.vmm.loader import (BootPlan, ImageKind, initrd_address, load, load_initrd,
                                load_kernel, place_dtb)
from softkvm.vmm.memory import GuestMemory

from .images import EM_X86_64, ET_DYN, PF_R, PF_W, Seg, make_elf, make_linux_image

MiB = 1 << 20
RAM = 0x4000_0000


@pytest.fixture
def mem():
    m = GuestMemory(RAM, 16 * MiB)
    yield m
    m.close()


@pytest.fixture
def big_mem():
    m = GuestMemory(RAM, 256 * MiB)
    yield m
    m.close()


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def load_error(mem, path) -> str:
    with pytest.raises(ImageError) as err:
        load_kernel(mem, path)
    return str(err.value)


# --- ELF ---------------------------------------------------------------------------------------


def test_elf_segments_at_paddr_with_bss_zeroed(mem, tmp_path):
    text = b"\x1f\x20\x03\xd5" * 4  # nops
    data = b"DATA"
    mem.fill(RAM, 0x300000, 0xAA)  # stale bytes where .bss goes
    elf = make_elf([Seg(RAM + 0x80000, text),
                    Seg(RAM + 0x200000, data, memsz=0x1000, flags=PF_R | PF_W)],
                   entry=RAM + 0x80004)
    image = load_kernel(mem, write(tmp_path, "guest.elf", elf))
    assert image.kind is ImageKind.ELF
    assert (image.entry, image.start, image.end) == (RAM + 0x80004, RAM + 0x80000,
                                                     RAM + 0x201000)
    assert mem.read(RAM + 0x80000, len(text)) == text
    assert mem.read(RAM + 0x200000, 4) == data
    assert mem.read(RAM + 0x200004, 0x1000 - 4) == bytes(0x1000 - 4)
    assert mem.read(RAM + 0x201000, 1) == b"\xaa"  # nothing beyond memsz touched


def test_elf_virtual_entry_moves_into_the_physical_image(mem, tmp_path):
    vbase = 0xFFFF_0000_0008_0000
    elf = make_elf([Seg(RAM + 0x80000, bytes(64), vaddr=vbase)], entry=vbase + 0x10)
    assert load_kernel(mem, write(tmp_path, "vmlinux", elf)).entry == RAM + 0x80010


def test_elf_segment_outside_ram(mem, tmp_path):
    elf = make_elf([Seg(RAM + 0x80000, bytes(16)), Seg(0x1000, bytes(16))], entry=RAM + 0x80000)
    path = write(tmp_path, "low.elf", elf)
    assert load_error(mem, path) == (
        f"ELF segment 1 of '{path}' at [0x1000, 0x1010) is outside RAM [0x40000000, 0x41000000): "
        "link the guest for RAM at 0x40000000, or give more memory with -m")
    assert mem.read(RAM + 0x80000, 16) == bytes(16)  # nothing loaded on failure


def test_elf_segment_past_the_end_of_ram(mem, tmp_path):
    elf = make_elf([Seg(RAM + 0x80000, bytes(16), memsz=16 * MiB)], entry=RAM + 0x80000)
    message = load_error(mem, write(tmp_path, "k", elf))
    assert "at [0x40080000, 0x41080000) is outside RAM" in message


def test_x86_64_elf(mem, tmp_path):
    elf = make_elf([Seg(RAM, bytes(16))], entry=RAM, machine=EM_X86_64)
    path = write(tmp_path, "x86.elf", elf)
    assert load_error(mem, path) == (f"ELF '{path}' is for EM_X86_64, not AArch64: build the "
                                     "guest for aarch64")


def test_elf32(mem, tmp_path):
    path = write(tmp_path, "a32.elf", make_elf([Seg(RAM, bytes(16))], entry=RAM, ei_class=1))
    assert load_error(mem, path) == (f"ELF '{path}' is 32-bit: softkvm runs AArch64 guests, "
                                     "build an ELF64 for aarch64")


def test_elf_shared_object(mem, tmp_path):
    path = write(tmp_path, "pie", make_elf([Seg(RAM, bytes(16))], entry=RAM, e_type=ET_DYN))
    assert load_error(mem, path) == (
        f"ELF '{path}' is of type ET_DYN, not an executable: link it as a static executable "
        "(ET_EXEC) at its load address")


@pytest.mark.parametrize("cut", [8, 20, 63])
def test_truncated_elf_header(mem, tmp_path, cut):
    elf = make_elf([Seg(RAM, bytes(16))], entry=RAM)
    path = write(tmp_path, "cut.elf", elf[:cut])
    message = load_error(mem, path)
    assert message.startswith(f"ELF '{path}' is truncated or corrupt (")
    assert message.endswith("): rebuild it")


def test_truncated_program_headers(mem, tmp_path):
    elf = make_elf([Seg(RAM, bytes(16))], entry=RAM)
    message = load_error(mem, write(tmp_path, "cut.elf", elf[:64 + 20]))
    assert "is truncated or corrupt" in message


def test_elf_segment_data_missing_from_file(mem, tmp_path):
    elf = make_elf([Seg(RAM, bytes(16), filesz=0x1000, memsz=0x1000)], entry=RAM)
    path = write(tmp_path, "short.elf", elf)
    assert load_error(mem, path) == (f"ELF segment 0 of '{path}' runs past the end of the file "
                                     "(truncated or corrupt): rebuild it")


def test_elf_entry_outside_ram(mem, tmp_path):
    path = write(tmp_path, "e.elf", make_elf([Seg(RAM, bytes(16))], entry=0x1000))
    assert load_error(mem, path) == (f"entry point 0x1000 of ELF '{path}' is outside RAM "
                                     "[0x40000000, 0x41000000): link it for RAM at 0x40000000")


def test_elf_without_loadable_segments(mem, tmp_path):
    path = write(tmp_path, "none.elf", make_elf([], entry=RAM))
    assert "has no loadable segment" in load_error(mem, path)


# --- Linux Image and raw -----------------------------------------------------------------------


def test_linux_image_uses_its_header(mem, tmp_path):
    data = make_linux_image(0x3000, text_offset=0x10000, image_size=0x40000)
    image = load_kernel(mem, write(tmp_path, "Image", data))
    assert image.kind is ImageKind.LINUX_IMAGE
    assert (image.entry, image.start, image.end) == (RAM + 0x10000, RAM + 0x10000,
                                                     RAM + 0x50000)
    assert mem.read(RAM + 0x10000, len(data)) == data


def test_legacy_image_without_size(mem, tmp_path):
    data = make_linux_image(0x2345, text_offset=0x1234, image_size=0)
    image = load_kernel(mem, write(tmp_path, "Image", data))
    assert image.entry == RAM + 0x80000  # booting.rst: text_offset 0x80000 regardless
    assert image.end == RAM + 0x80000 + len(data)


def test_gzipped_image(mem, tmp_path):
    data = make_linux_image(0x2000, image_size=0x10000)
    image = load_kernel(mem, write(tmp_path, "Image.gz", gzip.compress(data)))
    assert (image.kind, image.entry, image.end) == (ImageKind.LINUX_IMAGE, RAM, RAM + 0x10000)
    assert mem.read(RAM, len(data)) == data


def test_gzip_that_is_not_an_image(mem, tmp_path):
    path = write(tmp_path, "x.gz", gzip.compress(b"hello" * 100))
    assert load_error(mem, path) == (f"kernel image '{path}' is gzip-compressed but not a Linux "
                                     "arm64 Image: give the uncompressed file")
    broken = write(tmp_path, "y.gz", gzip.compress(make_linux_image())[:-30])
    assert "is a truncated gzip file" in load_error(mem, broken)


def test_big_endian_image(mem, tmp_path):
    path = write(tmp_path, "Image", make_linux_image(flags=0b1011))
    assert "is a big-endian kernel" in load_error(mem, path)


def test_image_size_larger_than_ram(mem, tmp_path):
    path = write(tmp_path, "Image", make_linux_image(image_size=20 * MiB))
    assert load_error(mem, path) == (f"kernel image '{path}' (20 MiB) does not fit in RAM of "
                                     "16 MiB: give more memory with -m")


def test_raw_binary_at_ram_plus_512k(mem, tmp_path):
    data = b"\x00\x00\x80\xd2" * 10
    image = load_kernel(mem, write(tmp_path, "guest.bin", data))
    assert (image.kind, image.entry, image.start, image.end) == (
        ImageKind.RAW, RAM + 0x80000, RAM + 0x80000, RAM + 0x80000 + len(data))
    assert mem.read(RAM + 0x80000, len(data)) == data


def test_raw_binary_that_fills_ram_does_not_fit_after_the_offset(mem, tmp_path):
    path = write(tmp_path, "huge.bin", b"\x01" * (16 * MiB))
    assert load_error(mem, path) == (f"kernel image '{path}' (16 MiB) does not fit in RAM of "
                                     "16 MiB: give more memory with -m")


def test_file_larger_than_ram_is_refused_before_reading(mem, tmp_path):
    path = tmp_path / "sparse.bin"
    with open(path, "wb") as f:
        f.truncate(40 * MiB + 512 * 1024)
    assert load_error(mem, path) == (f"kernel image '{path}' (40.5 MiB) does not fit in RAM of "
                                     "16 MiB: give more memory with -m")


def test_empty_and_missing_and_unreadable(mem, tmp_path):
    empty = write(tmp_path, "empty", b"")
    assert load_error(mem, empty) == f"kernel image '{empty}' is empty: give a built image"
    missing = tmp_path / "missing.elf"
    assert load_error(mem, missing) == f"kernel image '{missing}' not found: check the path"
    assert load_error(mem, tmp_path) == (f"cannot read kernel image '{tmp_path}': Is a directory: "
                                         "check the path and its permissions")


# --- initrd, DTB, whole plan -------------------------------------------------------------------


def test_initrd_at_qemus_128m_spot(big_mem, tmp_path):
    data = b"070701" + bytes(5000)
    start, end = load_initrd(big_mem, write(tmp_path, "initrd", data), RAM + 0x300000)
    assert (start, end) == (RAM + 128 * MiB, RAM + 128 * MiB + len(data))
    assert big_mem.read(start, len(data)) == data


def test_initrd_placement_rules(mem):
    # Small RAM: halfway; a kernel reaching past that pushes it up (page-aligned).
    assert initrd_address(mem, RAM + 0x100000, 0x1000) == RAM + 8 * MiB
    assert initrd_address(mem, RAM + 9 * MiB + 1, 0x1000) == RAM + 9 * MiB + 0x1000
    # Too big for the preferred spot: right after the kernel instead.
    assert initrd_address(mem, RAM + 0x100000, 12 * MiB) == RAM + 0x100000
    assert initrd_address(mem, RAM + 0x100000, 16 * MiB) is None


def test_initrd_that_does_not_fit(mem, tmp_path):
    path = write(tmp_path, "initrd", bytes(15 * MiB))
    with pytest.raises(ImageError) as err:
        load_initrd(mem, path, RAM + 2 * MiB)
    assert str(err.value) == (f"initrd '{path}' (15 MiB) does not fit in RAM of 16 MiB after the "
                              "kernel (which ends at 0x40200000): give more memory with -m")


def test_missing_initrd(mem, tmp_path):
    with pytest.raises(ImageError, match="initrd '.*nope' not found: check the path"):
        load_initrd(mem, tmp_path / "nope", RAM)


def test_dtb_on_the_next_2m_boundary(mem):
    blob = build_dtb(VirtLayout(16 * MiB, 1, 3))
    gpa = place_dtb(mem, blob, RAM + 0x80123)
    assert gpa == RAM + 2 * MiB
    assert mem.read(gpa, len(blob)) == blob
    assert place_dtb(mem, blob, RAM + 4 * MiB) == RAM + 4 * MiB  # already aligned


def test_dtb_too_big_or_no_room(mem):
    with pytest.raises(ImageError, match=r"the device tree is 2049 KiB, more than the 2 MiB a "
                                         r"kernel accepts \(booting.rst\): shrink it"):
        place_dtb(mem, bytes(2 * MiB + 1024), RAM)
    with pytest.raises(ImageError, match="no room for the device tree .* at 0x41000000, above the "
                                         "kernel and initrd, in RAM of 16 MiB: give more memory"):
        place_dtb(mem, bytes(100), mem.end - 100)


def test_load_orders_kernel_initrd_dtb(big_mem, tmp_path):
    layout = VirtLayout(256 * MiB, 2, 2)
    kernel = write(tmp_path, "Image", make_linux_image(0x1000, image_size=0x200000))
    initrd = write(tmp_path, "initrd", bytes(3000))
    plan = load(big_mem, kernel, initrd=initrd,
                make_dtb=lambda rd: build_dtb(layout, bootargs="quiet", initrd=rd))
    assert isinstance(plan, BootPlan)
    assert plan.entry == RAM
    assert plan.initrd == (RAM + 128 * MiB, RAM + 128 * MiB + 3000)
    assert plan.dtb_address == RAM + 130 * MiB
    assert big_mem.read(plan.dtb_address, plan.dtb_size) == plan.dtb
    chosen = dtb_to_dict(plan.dtb)["/chosen"]
    assert chosen["linux,initrd-start"] == struct.pack(">I", plan.initrd[0])
    assert chosen["linux,initrd-end"] == struct.pack(">I", plan.initrd[1])


def test_load_without_initrd(mem, tmp_path):
    kernel = write(tmp_path, "guest.bin", bytes(0x10))
    seen = []
    plan = load(mem, kernel, make_dtb=lambda rd: seen.append(rd) or b"\xd0\x0d\xfe\xed")
    assert seen == [None] and plan.initrd is None
    assert (plan.entry, plan.dtb_address, plan.dtb_size) == (RAM + 0x80000, RAM + 2 * MiB, 4)
