"""Published MMIO registers: guest loads of a register whose value the VMM keeps current are
answered without an exit.

Counterpart: none upstream. This is a softkvm extension (``KVM_CAP_SOFTKVM_PUBLISHED_MMIO``), the
read-side twin of coalesced MMIO (virt/kvm/coalesced_mmio.c). The VMM registers a register that
reads with no side effect (a UART's flag register) and stores its value in the slot the kernel
gives back whenever the device state behind it changes, as it would fill a page it shares with
the kernel. A load that lies wholly inside the register reads that value. Guests poll such
registers around every byte they send (Linux's PL011 console polls UARTFR before each
character), so each poll would otherwise be a whole exit to userspace.

A register may also be banked: one vCPU's own (``Vcpu.register_published_mmio``), as a GIC CPU
interface is. Such a register starts withdrawn (its loads exit) and its owner publishes it only
while a read of it has no side effect: the userspace GIC publishes GICC_IAR as 1023 while
nothing is pending for that CPU, and withdraws it before anything becomes pending.

softkvm's core build serves the load in the core itself (``UC_CTL_PUBLISHED_MMIO``; each vCPU's
core has its own table, the VM's registers and its own live ones, swapped with one store), so it
costs no exit at all; on a stock core the load exits to the kernel, which answers it here
(``io_mem_abort``) and counts it in ``mmio_exit_kernel``. Either way ``published_mmio_reads``
counts it. Loads only: a store to a published register exits to userspace as usual.
"""

from __future__ import annotations

import ctypes
import errno
import threading
from dataclasses import dataclass, field

from softkvm.hw import native as N
from softkvm.hw.core import Core
from softkvm.kvm.errors import KvmError

MAX_REGISTERS = 1000  # as many as coalesced zones (NR_IOBUS_DEVS)
MASK64 = 0xFFFFFFFFFFFFFFFF


@dataclass(slots=True, eq=False)
class PublishedRegister:
    """One registered range and its value slot: ``publish`` a new value whenever it changes.
    ``vcpu`` None: every vCPU's loads read it; else only that vCPU's (a banked register)."""

    addr: int
    size: int
    vcpu: int | None = None
    live: bool = True   # False: withdrawn, its loads exit
    slot: ctypes.c_uint64 = field(default_factory=ctypes.c_uint64, repr=False)
    owner: PublishedMmio | None = field(default=None, repr=False)

    def publish(self, value: int) -> None:
        """Make ``value`` what guest loads read from now on (one aligned 64-bit store, made
        before a withdrawn register is served again)."""
        self.slot.value = value & MASK64
        if not self.live and self.owner is not None:
            self.owner.set_live(self, True)

    def withdraw(self) -> None:
        """Loads of the register exit again, until the next ``publish``."""
        if self.live and self.owner is not None:
            self.owner.set_live(self, False)

    @property
    def value(self) -> int:
        return self.slot.value

    def covers(self, addr: int, size: int) -> bool:
        return self.addr <= addr and addr + size <= self.addr + self.size

    def read(self, addr: int, size: int) -> int:
        """What a load of ``size`` bytes at ``addr`` (inside the register) returns."""
        return (self.slot.value >> (8 * (addr - self.addr))) & ((1 << (8 * size)) - 1)


class PublishedMmio:
    """The VM's published registers; each vCPU's core reads its own table of the live ones."""

    def __init__(self) -> None:
        self.registers: list[PublishedRegister] = []
        self.kernel_reads = 0  # loads a stock core exited for, answered by ``read``
        self._configs: dict[int, N.PublishedMmioConfig] = {}   # vCPU index -> its core's
        # A core may be reading a table while another is published: keep them all. Tables are
        # cached by the live registers they hold, so withdrawing and publishing a banked
        # register again swaps between two tables instead of building new ones.
        self._tables: list[ctypes.Structure] = []
        self._cache: dict[tuple[int, ...], int] = {}
        self._lock = threading.Lock()

    @property
    def reads(self) -> int:
        return sum(c.reads for c in self._configs.values()) + self.kernel_reads

    def attach(self, core: Core, vcpu: int) -> bool:
        """Give vCPU ``vcpu``'s new core its table; False when its loads must exit to be
        answered."""
        with self._lock:
            self._configs[vcpu] = N.PublishedMmioConfig(None, 0)
            self._publish_table(vcpu)
            return core.set_published_mmio(self._configs[vcpu])

    def register(self, addr: int, size: int, vcpu: int | None = None) -> PublishedRegister:
        """Publish [addr, addr + size), 1 to 8 bytes, reading 0 until its owner publishes; a
        banked register (``vcpu``) starts withdrawn."""
        if size not in range(1, 9):
            raise KvmError(errno.EINVAL, f"a published register is 1 to 8 bytes, not {size}")
        if addr < 0 or addr + size > 1 << 64:
            raise KvmError(errno.EINVAL, f"published register {addr:#x}+{size} lies outside the "
                           "64-bit address space")
        if any(r.addr < addr + size and addr < r.addr + r.size
               and (r.vcpu is None or vcpu is None or r.vcpu == vcpu) for r in self.registers):
            raise KvmError(errno.EEXIST, f"published register {addr:#x}+{size} overlaps one "
                           "already registered: unregister it first")
        if len(self.registers) >= MAX_REGISTERS:
            raise KvmError(errno.ENOSPC, f"at most {MAX_REGISTERS} published registers")
        register = PublishedRegister(addr, size, vcpu, live=vcpu is None, owner=self)
        with self._lock:
            self.registers.append(register)
            self._rebuild()
        return register

    def unregister(self, register: PublishedRegister) -> None:
        """Loads of the range exit to userspace again."""
        if register not in self.registers:
            raise KvmError(errno.ENOENT, f"no published register at {register.addr:#x}")
        with self._lock:
            self.registers = [r for r in self.registers if r is not register]
            register.owner = None
            self._rebuild()

    def set_live(self, register: PublishedRegister, live: bool) -> None:
        """Serve ``register`` from its slot, or let its loads exit (any thread)."""
        with self._lock:
            register.live = live
            for vcpu in (self._configs if register.vcpu is None else (register.vcpu,)):
                if vcpu in self._configs:
                    self._publish_table(vcpu)

    def _rebuild(self) -> None:
        self._cache.clear()
        for vcpu in self._configs:
            self._publish_table(vcpu)

    def _publish_table(self, vcpu: int) -> None:
        live = [r for r in self.registers if r.live and r.vcpu in (None, vcpu)]
        key = tuple(id(r) for r in live)
        table = self._cache.get(key)
        if table is None:
            built = N.published_regs([(r.addr, r.size, r.slot) for r in live])
            self._tables.append(built)
            table = self._cache[key] = ctypes.addressof(built)
        self._configs[vcpu].regs = table  # one aligned store: the core sees old or new

    def read(self, addr: int, size: int, vcpu: int | None = None) -> int | None:
        """The kernel's answer to a load a stock core exited for; None outside every live
        register of vCPU ``vcpu``."""
        for register in self.registers:
            if (register.live and register.vcpu in (None, vcpu)
                    and register.covers(addr, size)):
                self.kernel_reads += 1
                return register.read(addr, size)
        return None
