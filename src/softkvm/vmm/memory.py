"""Guest RAM: one anonymous mapping the VMM fills and the kernel layer maps into every vCPU.

Counterpart: QEMU's ``memory_region_init_ram`` for the virt board's RAM, kvmtool's
``kvm__init_ram``: userspace allocates the memory, ``KVM_SET_USER_MEMORY_REGION`` hands it to
the VM. Here ``.buffer`` (an ``mmap.mmap``) goes to ``Vm.set_user_memory_region``, which maps the
same pages into each emulated core (Unicorn ``mem_map_ptr``), so a host write is seen by the guest.

The mapping is private and never touched as a whole: the kernel gives zero pages on first touch,
and touching 512 MiB up front costs far more than the guest will ever use.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field

from softkvm.errors import ConfigError

PAGE_SIZE = mmap.PAGESIZE


@dataclass(slots=True)
class GuestMemory:
    """``size`` bytes of RAM at guest physical address ``base``."""

    base: int
    size: int
    buffer: mmap.mmap = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.base % PAGE_SIZE or self.size % PAGE_SIZE or self.size <= 0:
            raise ValueError(f"guest RAM at {self.base:#x} size {self.size:#x} must be "
                             f"page-aligned and non-empty")
        try:
            self.buffer = mmap.mmap(-1, self.size, flags=mmap.MAP_PRIVATE)
        except (OSError, OverflowError) as err:
            raise ConfigError(f"cannot allocate {self.size >> 20} MiB of guest RAM ({err}): "
                              f"give less memory with -m") from err
        # 4 KiB pages, even where transparent huge pages are the default: a guest touches its
        # RAM here and there (a 512 MiB Linux boot about 90 MiB of it), and a huge page makes
        # the first touch of each 2 MiB clear all of it, or stall while the host compacts
        # memory to find one. Measured on a smp1 Linux boot: 0.25-0.33 s of system time with
        # huge pages, 0.07-0.12 s without, and no gain in user time.
        if hasattr(mmap, "MADV_NOHUGEPAGE"):
            try:
                self.buffer.madvise(mmap.MADV_NOHUGEPAGE)
            except OSError:
                pass  # a kernel without THP: 4 KiB pages anyway

    @property
    def end(self) -> int:
        return self.base + self.size

    def contains(self, gpa: int, length: int = 1) -> bool:
        """True when [gpa, gpa + length) lies entirely in RAM."""
        return length >= 0 and self.base <= gpa and gpa + length <= self.end

    def read(self, gpa: int, length: int) -> bytes:
        start = self._offset(gpa, length)
        return self.buffer[start: start + length]

    def write(self, gpa: int, data: bytes | bytearray | memoryview | mmap.mmap) -> None:
        start = self._offset(gpa, len(data))
        self.buffer[start: start + len(data)] = data

    def fill(self, gpa: int, length: int, value: int = 0) -> None:
        """Set a range to one byte value (ELF .bss, or wiping a previous image on reset)."""
        start = self._offset(gpa, length)
        chunk = 1 << 20  # bounded temporary buffers for large ranges
        for pos in range(start, start + length, chunk):
            n = min(chunk, start + length - pos)
            self.buffer[pos: pos + n] = bytes([value]) * n

    def close(self) -> None:
        self.buffer.close()

    def _offset(self, gpa: int, length: int) -> int:
        if not self.contains(gpa, length):
            raise ValueError(f"guest physical range [{gpa:#x}, {gpa + length:#x}) is outside "
                             f"RAM [{self.base:#x}, {self.end:#x})")
        return gpa - self.base
