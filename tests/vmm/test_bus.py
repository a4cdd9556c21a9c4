"""The MMIO bus: window lookup, offsets, masking, overlap rejection."""

import pytest

from softkvm.errors import ConfigError
from softkvm.vmm.bus import Bus


class Recorder:
    def __init__(self, value=0):
        self.value = value
        self.log = []

    def mmio_read(self, offset, size):
        self.log.append(("r", offset, size))
        return self.value

    def mmio_write(self, offset, size, value):
        self.log.append(("w", offset, size, value))


class Board:
    """A bus with two recorders on it."""

    def __init__(self):
        self.uart, self.gic = Recorder(0x1122334455667788), Recorder(7)
        self.bus = Bus()
        self.bus.add(0x0900_0000, 0x1000, self.uart, "pl011")
        self.bus.add(0x0800_0000, 0x1000, self.gic, "gicd")

    def __getattr__(self, name):
        return getattr(self.bus, name)


@pytest.fixture
def bus():
    return Board()


def test_find(bus):
    assert bus.find(0x0900_0000) == (bus.uart, 0)
    assert bus.find(0x0900_0FFF) == (bus.uart, 0xFFF)
    assert bus.find(0x0800_0018) == (bus.gic, 0x18)
    assert bus.find(0x0900_1000) is None
    assert bus.find(0x07FF_FFFF) is None
    assert bus.find(0) is None


def test_read_write_dispatch_with_offsets(bus):
    assert bus.read(0x0900_0018, 4) == 0x55667788  # masked to the access size
    assert bus.read(0x0900_0018, 1) == 0x88
    assert bus.read(0x0900_0018, 8) == 0x1122334455667788
    assert bus.write(0x0900_0000, 1, 0x141) is True
    assert bus.uart.log == [("r", 0x18, 4), ("r", 0x18, 1), ("r", 0x18, 8), ("w", 0, 1, 0x41)]
    assert bus.gic.log == []


def test_no_device(bus):
    assert bus.read(0x0A00_0000, 4) is None
    assert bus.write(0x0A00_0000, 4, 1) is False


def test_access_straddling_the_end_is_not_the_devices(bus):
    assert bus.read(0x0900_0FFE, 4) is None
    assert bus.write(0x0900_0FFC, 8, 0) is False
    assert bus.read(0x0900_0FFC, 4) == 0x55667788
    assert bus.uart.log == [("r", 0xFFC, 4)]


def test_bad_access_size(bus):
    assert bus.read(0x0900_0000, 3) is None
    assert bus.write(0x0900_0000, 16, 0) is False


@pytest.mark.parametrize("base, size, other", [
    (0x0900_0800, 0x1000, "pl011"),   # starts inside
    (0x08FF_F000, 0x2000, "pl011"),   # ends inside
    (0x08FF_0000, 0x20000, "pl011"),  # covers
    (0x0800_0FFF, 1, "gicd"),
])
def test_overlap_rejected(bus, base, size, other):
    with pytest.raises(ConfigError, match=f"overlaps '{other}'.*: move one of them"):
        bus.add(base, size, Recorder(), "new")


def test_adjacent_windows_and_order(bus):
    bus.add(0x0900_1000, 0x1000, Recorder(), "rtc")
    bus.add(0x08FF_F000, 0x1000, Recorder(), "below")
    assert [r.name for r in bus.ranges()] == ["gicd", "below", "pl011", "rtc"]
    with pytest.raises(ConfigError, match="positive size"):
        bus.add(0x1000, 0, Recorder(), "empty")
