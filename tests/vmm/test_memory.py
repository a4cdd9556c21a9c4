"""Guest RAM: reads and writes by guest physical address, bounds, the mmap handed to the kernel."""

import mmap

import pytest

from softkvm.vmm.memory import GuestMemory

BASE = 0x4000_0000
SIZE = 16 << 20


@pytest.fixture
def mem():
    m = GuestMemory(BASE, SIZE)
    yield m
    m.close()


def test_geometry(mem):
    assert (mem.base, mem.size, mem.end) == (BASE, SIZE, BASE + SIZE)
    assert isinstance(mem.buffer, mmap.mmap) and len(mem.buffer) == SIZE


def test_write_read_roundtrip_lands_in_the_buffer(mem):
    mem.write(BASE + 0x1234, b"hello")
    assert mem.read(BASE + 0x1234, 5) == b"hello"
    assert mem.buffer[0x1234:0x1239] == b"hello"
    mem.write(mem.end - 2, bytearray(b"xy"))
    assert mem.read(mem.end - 2, 2) == b"xy"


def test_fresh_memory_is_zero(mem):
    assert mem.read(BASE + SIZE // 2, 16) == bytes(16)


def test_fill(mem):
    mem.write(BASE, b"\xff" * 64)
    mem.fill(BASE + 8, 40)
    assert mem.read(BASE, 64) == b"\xff" * 8 + bytes(40) + b"\xff" * 16
    mem.fill(BASE, (2 << 20) + 5, 0xAB)  # spans several internal chunks
    assert mem.read(BASE + (2 << 20), 6) == b"\xab" * 5 + b"\x00"


def test_contains(mem):
    assert mem.contains(BASE) and mem.contains(BASE, SIZE)
    assert mem.contains(mem.end - 4, 4)
    assert not mem.contains(mem.end - 3, 4)
    assert not mem.contains(BASE - 1, 2)
    assert not mem.contains(mem.end)


@pytest.mark.parametrize("gpa, n", [(BASE - 1, 1), (BASE + SIZE - 1, 2), (0, 4)])
def test_out_of_range_raises(mem, gpa, n):
    with pytest.raises(ValueError, match=r"guest physical range \[.*\) is outside RAM "
                                         r"\[0x40000000, 0x41000000\)"):
        mem.read(gpa, n)
    with pytest.raises(ValueError, match="is outside RAM"):
        mem.write(gpa, bytes(n))


def test_unaligned_geometry_rejected():
    with pytest.raises(ValueError, match="page-aligned"):
        GuestMemory(BASE + 1, SIZE)
    with pytest.raises(ValueError, match="page-aligned"):
        GuestMemory(BASE, 100)


def test_large_ram_is_lazy():
    big = GuestMemory(BASE, 2 << 30)  # 2 GiB: only possible because nothing is touched
    big.write(big.end - 4, b"last")
    assert big.read(big.end - 4, 4) == b"last"
    big.close()
