"""The VMM's MMIO bus: guest-physical windows → userspace devices.

Counterpart: kvmtool's mmio.c (``kvm__register_mmio``/``kvm__emulate_mmio``), Firecracker's
``vm-device`` Bus, QEMU's address_space_rw for a ``KVM_EXIT_MMIO``. The runner calls
:meth:`Bus.read`/:meth:`Bus.write` with the exit's address and length; the bus finds the device
by binary search and hands it an offset from the device's base.

Devices are added while the VM is built (before any vCPU runs); lookups afterwards are
read-only, so vCPU threads may use the bus concurrently without a lock. Each device serialises
its own state.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from softkvm.errors import ConfigError

ACCESS_SIZES = (1, 2, 4, 8)


class BusDevice(Protocol):
    """A device behind one MMIO window.

    Contract:
    - ``offset`` is relative to the device's base; ``size`` is 1, 2, 4 or 8 bytes and the whole
      access lies inside the window (the bus checks both).
    - ``mmio_read`` returns the value zero-extended to ``size`` bytes (little-endian lanes).
    - Register behaviour the device does not implement is its own business (usually RAZ/WI);
      neither call raises for guest behaviour: the guest gets an architectural answer.
    - Both may be called from any vCPU thread.
    """

    def mmio_read(self, offset: int, size: int) -> int: ...

    def mmio_write(self, offset: int, size: int, value: int) -> None: ...


class BurstDevice(BusDevice, Protocol):
    """A device that takes a run of writes to one register at once (a coalesced ring's), with
    the effect of writing each value in turn."""

    def mmio_write_burst(self, offset: int, size: int, values: list[int]) -> None: ...


@dataclass(frozen=True, slots=True)
class BusRange:
    base: int
    size: int
    device: BusDevice
    name: str
    burst: Callable[[int, int, list[int]], None] | None = None  # a BurstDevice's

    @property
    def end(self) -> int:
        return self.base + self.size


@dataclass(slots=True)
class Bus:
    """Non-overlapping windows sorted by base address."""

    _ranges: list[BusRange] = field(default_factory=list)
    _bases: list[int] = field(default_factory=list)

    def add(self, base: int, size: int, device: BusDevice, name: str) -> None:
        if size <= 0 or base < 0:
            raise ConfigError(f"device '{name}' at {base:#x} has size {size:#x}: give it a "
                              f"positive size")
        new = BusRange(base, size, device, name, getattr(device, "mmio_write_burst", None))
        index = bisect.bisect_left(self._bases, base)
        for neighbour in self._ranges[max(index - 1, 0): index + 1]:
            if neighbour.base < new.end and new.base < neighbour.end:
                raise ConfigError(
                    f"device '{name}' [{base:#x}, {new.end:#x}) overlaps '{neighbour.name}' "
                    f"[{neighbour.base:#x}, {neighbour.end:#x}): move one of them")
        self._ranges.insert(index, new)
        self._bases.insert(index, base)

    def ranges(self) -> tuple[BusRange, ...]:
        return tuple(self._ranges)

    def find(self, addr: int) -> tuple[BusDevice, int] | None:
        """The device whose window holds ``addr``, and the offset into it."""
        entry = self._lookup(addr, 1)
        return None if entry is None else (entry.device, addr - entry.base)

    def read(self, addr: int, size: int) -> int | None:
        """The device's answer, or None when no device covers the whole access."""
        entry = self._lookup(addr, size)
        if entry is None:
            return None
        return entry.device.mmio_read(addr - entry.base, size) & _MASKS[size]

    def write(self, addr: int, size: int, value: int) -> bool:
        """False when no device covers the whole access (the caller decides what the guest
        sees: an external abort on the virt board)."""
        entry = self._lookup(addr, size)
        if entry is None:
            return False
        entry.device.mmio_write(addr - entry.base, size, value & _MASKS[size])
        return True

    def write_burst(self, addr: int, size: int, values: list[int]) -> bool:
        """Write each value in turn to one address; False as :meth:`write`."""
        entry = self._lookup(addr, size)
        if entry is None:
            return False
        offset, mask = addr - entry.base, _MASKS[size]
        if entry.burst is not None:
            entry.burst(offset, size, [value & mask for value in values])
        else:
            for value in values:
                entry.device.mmio_write(offset, size, value & mask)
        return True

    def _lookup(self, addr: int, size: int) -> BusRange | None:
        if size not in _MASKS:
            return None
        index = bisect.bisect_right(self._bases, addr) - 1
        if index < 0:
            return None
        entry = self._ranges[index]
        # An access straddling the end of a window is not the device's: no partial accesses.
        return entry if addr + size <= entry.end else None


_MASKS = {size: (1 << (8 * size)) - 1 for size in ACCESS_SIZES}  # the access sizes, and masks
