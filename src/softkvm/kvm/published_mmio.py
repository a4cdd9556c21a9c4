"""Published MMIO registers: guest loads of a register whose value the VMM keeps current are
answered without an exit.

Counterpart: none upstream. This is a softkvm extension (``KVM_CAP_SOFTKVM_PUBLISHED_MMIO``), the
read-side twin of coalesced MMIO (virt/kvm/coalesced_mmio.c). The VMM registers a register that
reads with no side effect (a UART's flag register) and stores its value in the slot the kernel
gives back whenever the device state behind it changes, as it would fill a page it shares with
the kernel. A load that lies wholly inside the register reads that value. Guests poll such
registers around every byte they send (Linux's PL011 console polls UARTFR before each
character), so each poll would otherwise be a whole exit to userspace.

softkvm's core build serves the load in the core itself (``UC_CTL_PUBLISHED_MMIO``), so it costs
no exit at all; on a stock core the load exits to the kernel, which answers it here
(``io_mem_abort``) and counts it in ``mmio_exit_kernel``. Either way ``published_mmio_reads``
counts it. Loads only: a store to a published register exits to userspace as usual.
"""

from __future__ import annotations

import ctypes
import errno
from dataclasses import dataclass, field

from softkvm.hw import native as N
from softkvm.hw.core import Core
from softkvm.kvm.errors import KvmError

MAX_REGISTERS = 1000  # as many as coalesced zones (NR_IOBUS_DEVS)
MASK64 = 0xFFFFFFFFFFFFFFFF


@dataclass(slots=True, eq=False)
class PublishedRegister:
    """One registered range and its value slot: ``publish`` a new value whenever it changes."""

    addr: int
    size: int
    slot: ctypes.c_uint64 = field(default_factory=ctypes.c_uint64, repr=False)

    def publish(self, value: int) -> None:
        """Make ``value`` what guest loads read from now on (one aligned 64-bit store)."""
        self.slot.value = value & MASK64

    @property
    def value(self) -> int:
        return self.slot.value

    def covers(self, addr: int, size: int) -> bool:
        return self.addr <= addr and addr + size <= self.addr + self.size

    def read(self, addr: int, size: int) -> int:
        """What a load of ``size`` bytes at ``addr`` (inside the register) returns."""
        return (self.slot.value >> (8 * (addr - self.addr))) & ((1 << (8 * size)) - 1)


class PublishedMmio:
    """The VM's published registers, shared by every vCPU's core."""

    def __init__(self) -> None:
        self.registers: list[PublishedRegister] = []
        self.config = N.PublishedMmioConfig(None, 0)
        self.kernel_reads = 0  # loads a stock core exited for, answered by ``read``
        # A core may be reading a table while a new one is published: keep them all (a few
        # bytes each; registers change a handful of times in a VM's life).
        self._tables: list[ctypes.Structure] = []

    @property
    def reads(self) -> int:
        return self.config.reads + self.kernel_reads

    def attach(self, core: Core) -> bool:
        """Give a new vCPU's core the table; False when its loads must exit to be answered."""
        return core.set_published_mmio(self.config)

    def register(self, addr: int, size: int) -> PublishedRegister:
        """Publish [addr, addr + size), 1 to 8 bytes, reading 0 until its owner publishes."""
        if size not in range(1, 9):
            raise KvmError(errno.EINVAL, f"a published register is 1 to 8 bytes, not {size}")
        if addr < 0 or addr + size > 1 << 64:
            raise KvmError(errno.EINVAL, f"published register {addr:#x}+{size} lies outside the "
                           "64-bit address space")
        if any(r.addr < addr + size and addr < r.addr + r.size for r in self.registers):
            raise KvmError(errno.EEXIST, f"published register {addr:#x}+{size} overlaps one "
                           "already registered: unregister it first")
        if len(self.registers) >= MAX_REGISTERS:
            raise KvmError(errno.ENOSPC, f"at most {MAX_REGISTERS} published registers")
        register = PublishedRegister(addr, size)
        self.registers.append(register)
        self._publish_table()
        return register

    def unregister(self, register: PublishedRegister) -> None:
        """Loads of the range exit to userspace again."""
        if register not in self.registers:
            raise KvmError(errno.ENOENT, f"no published register at {register.addr:#x}")
        self.registers = [r for r in self.registers if r is not register]
        self._publish_table()

    def _publish_table(self) -> None:
        table = N.published_regs([(r.addr, r.size, r.slot) for r in self.registers])
        self._tables.append(table)
        self.config.regs = ctypes.addressof(table)  # one aligned store: cores see old or new

    def read(self, addr: int, size: int) -> int | None:
        """The kernel's answer to a load a stock core exited for; None outside every register."""
        for register in self.registers:
            if register.covers(addr, size):
                self.kernel_reads += 1
                return register.read(addr, size)
        return None
