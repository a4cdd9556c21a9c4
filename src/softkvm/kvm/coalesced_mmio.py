"""Coalesced MMIO: guest writes to registered zones queue in a ring instead of exiting.

Counterpart: virt/kvm/coalesced_mmio.c (``kvm_vm_ioctl_register_coalesced_mmio``,
``coalesced_mmio_write``) and the ring page at ``KVM_COALESCED_MMIO_PAGE_OFFSET`` of every vCPU
mapping. One ring per VM. A write that lies wholly in a zone is appended; with the ring full it
exits to userspace as any MMIO write, and the VMM drains the ring before handling an exit, so
it sees every write in guest order. Reads never coalesce.

softkvm's core build appends in the core itself (``UC_CTL_COALESCED_MMIO``), so such a write
costs no exit at all; on a stock core it exits to the kernel, which appends it here
(``io_mem_abort``) and counts it in ``mmio_exit_kernel``, as KVM does. vCPUs that run in parallel
(softkvm's core) append under the ring's producer lock, in the core; on a stock core the vCPUs
take turns on one physical CPU, so only one of them appends at a time.
"""

from __future__ import annotations

import ctypes
import errno
from dataclasses import dataclass

from softkvm.hw import native as N
from softkvm.hw.core import Core
from softkvm.kvm.errors import KvmError

MAX_ZONES = 1000  # NR_IOBUS_DEVS: KVM's limit on devices of one bus
ADDR_LIMIT = 1 << 64


@dataclass(frozen=True, slots=True)
class CoalescedMmioZone:
    """``struct kvm_coalesced_mmio_zone``. ``pio`` zones are accepted as KVM does, but arm64
    has no port I/O, so they never see a write."""

    addr: int
    size: int
    pio: int = 0

    def contains(self, addr: int, size: int) -> bool:
        return self.addr <= addr and addr + size <= self.addr + self.size


class CoalescedMmio:
    """The VM's zones and its ring (``vcpu.coalesced_mmio_ring``)."""

    def __init__(self) -> None:
        self.ring = N.CoalescedMmioRing()
        self.zones: list[CoalescedMmioZone] = []
        self.config = N.CoalescedMmioConfig(ctypes.pointer(self.ring), N.COALESCED_MMIO_MAX, 0,
                                            None)
        # A core may be reading a zone table while a new one is published: keep them all (a
        # few bytes each; zones change a handful of times in a VM's life).
        self._tables: list[ctypes.Structure] = []

    def attach(self, core: Core) -> bool:
        """Give a new vCPU's core the ring; False when its writes must exit to be coalesced."""
        return core.set_coalesced_mmio(self.config)

    def register(self, zone: CoalescedMmioZone) -> None:
        """KVM_REGISTER_COALESCED_MMIO."""
        if zone.pio not in (0, 1):
            raise KvmError(errno.EINVAL, f"coalesced zone pio must be 0 (MMIO) or 1, not "
                           f"{zone.pio}")
        if zone.addr < 0 or zone.size < 0 or zone.addr + zone.size > ADDR_LIMIT:
            raise KvmError(errno.EINVAL, f"coalesced zone {zone.addr:#x}+{zone.size:#x} lies "
                           "outside the 64-bit address space")
        if len(self.zones) >= MAX_ZONES:
            raise KvmError(errno.ENOSPC, f"at most {MAX_ZONES} coalesced zones: unregister one "
                           "first")
        self.zones.append(zone)
        self._publish()

    def unregister(self, zone: CoalescedMmioZone) -> None:
        """KVM_UNREGISTER_COALESCED_MMIO: drop every zone of that kind inside the range."""
        self.zones = [z for z in self.zones if z.pio != zone.pio
                      or not zone.contains(z.addr, z.size)]
        self._publish()

    def _publish(self) -> None:
        table = N.coalesced_zones([(z.addr, z.size) for z in self.zones if not z.pio])
        self._tables.append(table)
        self.config.zones = ctypes.addressof(table)  # one aligned store: cores see old or new

    def write(self, addr: int, size: int, value: int) -> bool:
        """``coalesced_mmio_write``: queue a write the core did not; False if no zone holds it
        or the ring is full (the write then exits to userspace)."""
        if not any(not z.pio and z.contains(addr, size) for z in self.zones):
            return False
        ring, limit = self.ring, N.COALESCED_MMIO_MAX
        last = ring.last
        if (last + 1) % limit == ring.first:
            return False
        entry = ring.coalesced_mmio[last]
        entry.phys_addr, entry.len, entry.pio = addr, size, 0
        ctypes.memmove(entry.data, value.to_bytes(8, "little"), 8)
        ring.last = (last + 1) % limit
        return True
