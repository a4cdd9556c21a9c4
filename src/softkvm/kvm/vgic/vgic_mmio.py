"""Register maps as tables, and the per-IRQ register handlers GICv2 and GICv3 share.

Counterpart: arch/arm64/kvm/vgic/vgic-mmio.c and vgic-mmio.h: ``struct vgic_register_region``
and its REGISTER_DESC_WITH_BITS_PER_IRQ / _LENGTH / _BITS_PER_IRQ_SHARED constructors,
``vgic_find_mmio_region``/``check_region``, ``dispatch_mmio_read/write``, ``vgic_uaccess`` and
the ``vgic_mmio_{read,write}_*`` handlers (group, enable, pending, active, priority, config).

Guest accesses never fail: an unknown offset, a width the register does not allow, a misaligned
access or an INTID at or beyond nr_irqs reads as zero and ignores writes. Userspace accesses
(``uaccess``) to such places fail with -ENXIO instead, as KVM's device attributes do.

Handlers receive (dist, vcpu, where, size[, value]): ``vcpu`` is the vCPU whose banked view is
accessed (the accessing vCPU for the distributor, the frame's vCPU for a redistributor);
``where`` is the first INTID for per-IRQ regions and the register offset for the others.
"""

from __future__ import annotations

import errno
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from softkvm.arch import gic as G
from softkvm.kvm.vgic.arm_vgic import (
    VGIC_CONFIG_EDGE,
    VGIC_CONFIG_LEVEL,
    VgicIrq,
    get_phys_line_level,
    irq_is_pending,
    is_mapped_level,
    is_sgi,
    set_phys_active,
)

if TYPE_CHECKING:
    from softkvm.kvm.vgic.vgic import Vgic

ACCESS_8 = 1 << 0
ACCESS_32 = 1 << 1
ACCESS_64 = 1 << 2
_WIDTH_FLAG = {1: ACCESS_8, 4: ACCESS_32, 8: ACCESS_64}

ReadFn = Callable[["Vgic", int, int, int], int]
WriteFn = Callable[["Vgic", int, int, int, int], None]
UaccessWriteFn = Callable[["Vgic", int, int, int, int], int]   # returns 0 or -errno

_MAX_INTIDS = 1024


@dataclass(frozen=True, slots=True)
class RegisterRegion:
    """One row of a register map (kernel: struct vgic_register_region)."""

    offset: int
    length: int
    access: int
    read: ReadFn
    write: WriteFn
    bits_per_irq: int = 0
    intid_base: int = 0
    uaccess_read: ReadFn | None = None
    uaccess_write: UaccessWriteFn | None = None
    pass_addr: bool = False   # per-IRQ, but the handler wants the address (64-bit IROUTER)

    def where(self, addr: int) -> int:
        if self.bits_per_irq and not self.pass_addr:
            return self.intid_base + (addr - self.offset) * 8 // self.bits_per_irq
        return addr


def bits_per_irq(offset: int, bpi: int, read: ReadFn, write: WriteFn, access: int,
                 uread: ReadFn | None = None,
                 uwrite: UaccessWriteFn | None = None) -> RegisterRegion:
    """REGISTER_DESC_WITH_BITS_PER_IRQ: ``bpi`` bits for each of 1024 INTIDs."""
    return RegisterRegion(offset, bpi * _MAX_INTIDS // 8, access, read, write, bpi, 0,
                          uread, uwrite)


def bits_per_irq_shared(offset: int, bpi: int, read: ReadFn, write: WriteFn, access: int,
                        uread: ReadFn | None = None,
                        uwrite: UaccessWriteFn | None = None) -> tuple[RegisterRegion, ...]:
    """REGISTER_DESC_WITH_BITS_PER_IRQ_SHARED: as above, with the 32 private INTIDs RAZ/WI
    (under GICv3 the redistributor owns them)."""
    private = bpi * G.NR_PRIVATE_IRQS // 8
    return (RegisterRegion(offset, private, access, read_raz, write_wi, bpi, 0),
            RegisterRegion(offset + private, bpi * (_MAX_INTIDS - G.NR_PRIVATE_IRQS) // 8, access,
                           read, write, bpi, G.NR_PRIVATE_IRQS, uread, uwrite))


def length(offset: int, size: int, read: ReadFn, write: WriteFn, access: int, bpi: int = 0,
           uread: ReadFn | None = None, uwrite: UaccessWriteFn | None = None) -> RegisterRegion:
    """REGISTER_DESC_WITH_LENGTH; ``bpi`` makes it a per-IRQ register starting at INTID 0."""
    return RegisterRegion(offset, size, access, read, write, bpi, 0, uread, uwrite)


def gicd_iidr(dist: Vgic) -> int:
    """GICD_IIDR: KVM's product id, ARM as implementer, the selected revision."""
    f = G.GICD_IIDR_F
    return (f.ProductID.val(G.PRODUCT_ID_KVM) | f.Revision.val(dist.implementation_rev)
            | f.Implementer.val(G.IMPLEMENTER_ARM))


@dataclass(frozen=True, slots=True)
class VgicIoDevice:
    """A frame's register map (kernel: struct vgic_io_device + its region table)."""

    regions: tuple[RegisterRegion, ...]
    _starts: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.regions, key=lambda r: r.offset))
        object.__setattr__(self, "regions", ordered)
        object.__setattr__(self, "_starts", tuple(r.offset for r in ordered))

    def find(self, addr: int, size: int, nr_irqs: int) -> RegisterRegion | None:
        i = bisect_right(self._starts, addr) - 1
        if i < 0:
            return None
        region = self.regions[i]
        if addr >= region.offset + region.length:
            return None
        if not _WIDTH_FLAG.get(size, 0) & region.access or addr % size:
            return None
        if region.bits_per_irq and self.first_intid(region, addr) >= nr_irqs:
            return None   # an IRQ that does not exist
        return region

    @staticmethod
    def first_intid(region: RegisterRegion, addr: int) -> int:
        return region.intid_base + (addr - region.offset) * 8 // region.bits_per_irq

    def read(self, dist: Vgic, vcpu: int, addr: int, size: int) -> int:
        region = self.find(addr, size, dist.nr_irqs)
        if region is None:
            return 0
        return region.read(dist, vcpu, region.where(addr), size) & ((1 << (8 * size)) - 1)

    def write(self, dist: Vgic, vcpu: int, addr: int, size: int, value: int) -> None:
        region = self.find(addr, size, dist.nr_irqs)
        if region is not None:
            region.write(dist, vcpu, region.where(addr), size, value & ((1 << (8 * size)) - 1))

    def has(self, dist: Vgic, addr: int) -> bool:
        return self.find(addr, 4, dist.nr_irqs) is not None

    def uaccess(self, dist: Vgic, vcpu: int, is_write: bool, addr: int,
                value: int = 0) -> tuple[int, int]:
        """A 32-bit userspace access (device attribute): (0 or -errno, value read)."""
        region = self.find(addr, 4, dist.nr_irqs)
        if region is None:
            return -errno.ENXIO, 0
        where = region.where(addr)
        if is_write:
            value &= G.U32_MASK
            if region.uaccess_write is not None:
                return region.uaccess_write(dist, vcpu, where, 4, value), 0
            region.write(dist, vcpu, where, 4, value)
            return 0, 0
        reader = region.uaccess_read or region.read
        return 0, reader(dist, vcpu, where, 4) & G.U32_MASK


# --- byte helpers (kernel: extract_bytes, update_64bit_reg) ------------------------------------


def extract_bytes(data: int, offset: int, size: int) -> int:
    """``size`` bytes of a register value starting at byte ``offset``."""
    return (data >> (8 * (offset & 7))) & ((1 << (8 * size)) - 1)


def update_64bit_reg(reg: int, offset: int, size: int, value: int) -> int:
    shift = 8 * (offset & 7)
    mask = ((1 << (8 * size)) - 1) << shift
    return (reg & ~mask) | ((value << shift) & mask)


# --- trivial handlers -----------------------------------------------------------------------------


def read_raz(_dist: Vgic, _vcpu: int, _where: int, _size: int) -> int:
    return 0


def read_rao(_dist: Vgic, _vcpu: int, _where: int, size: int) -> int:
    return (1 << (8 * size)) - 1


def write_wi(_dist: Vgic, _vcpu: int, _where: int, _size: int, _value: int) -> None:
    return None


def uaccess_write_wi(_dist: Vgic, _vcpu: int, _where: int, _size: int, _value: int) -> int:
    return 0


def irqs_at(dist: Vgic, vcpu: int, intid: int, count: int) -> Iterator[tuple[int, VgicIrq]]:
    for i in range(count):
        irq = dist.get_irq(vcpu, intid + i)
        if irq is not None:
            yield i, irq


def _set_bits(dist: Vgic, vcpu: int, intid: int, size: int,
              value: int) -> Iterator[tuple[int, VgicIrq]]:
    return ((i, irq) for i, irq in irqs_at(dist, vcpu, intid, size * 8) if value >> i & 1)


def _read_bits(dist: Vgic, vcpu: int, intid: int, size: int,
               bit: Callable[[VgicIrq], bool]) -> int:
    return sum(1 << i for i, irq in irqs_at(dist, vcpu, intid, size * 8) if bit(irq))


# --- IGROUPR -------------------------------------------------------------------------------------


def read_group(dist: Vgic, vcpu: int, intid: int, size: int) -> int:
    return _read_bits(dist, vcpu, intid, size, lambda irq: bool(irq.group))


def write_group(dist: Vgic, vcpu: int, intid: int, size: int, value: int) -> None:
    for i, irq in irqs_at(dist, vcpu, intid, size * 8):
        irq.group = value >> i & 1
        dist.queue_irq(irq)   # a group change can make it deliverable


# --- IS/ICENABLER --------------------------------------------------------------------------------


def read_enable(dist: Vgic, vcpu: int, intid: int, size: int) -> int:
    return _read_bits(dist, vcpu, intid, size, lambda irq: irq.enabled)


def write_senable(dist: Vgic, vcpu: int, intid: int, size: int, value: int) -> None:
    for _, irq in _set_bits(dist, vcpu, intid, size, value):
        if is_mapped_level(irq):
            # The line may have dropped while masked: re-read it, and let the device signal
            # again if it did and the guest holds no active instance.
            was_high = irq.line_level
            irq.line_level = get_phys_line_level(irq)
            if not irq.active and was_high and not irq.line_level:
                set_phys_active(irq, False)
        irq.enabled = True
        dist.queue_irq(irq)


def write_cenable(dist: Vgic, vcpu: int, intid: int, size: int, value: int) -> None:
    for _, irq in _set_bits(dist, vcpu, intid, size, value):
        irq.enabled = False
        dist.queue_irq(irq)   # withdrawn from the LRs at the holder's next sync: kick it


def uaccess_write_senable(dist: Vgic, vcpu: int, intid: int, size: int, value: int) -> int:
    for _, irq in _set_bits(dist, vcpu, intid, size, value):
        irq.enabled = True
        dist.queue_irq(irq)
    return 0


def uaccess_write_cenable(dist: Vgic, vcpu: int, intid: int, size: int, value: int) -> int:
    write_cenable(dist, vcpu, intid, size, value)
    return 0


# --- IS/ICPENDR ----------------------------------------------------------------------------------


def read_pending(dist: Vgic, vcpu: int, intid: int, size: int) -> int:
    """Guest view: a mapped level interrupt reports its physical line."""
    def pending(irq: VgicIrq) -> bool:
        return get_phys_line_level(irq) if is_mapped_level(irq) else irq_is_pending(irq)
    return _read_bits(dist, vcpu, intid, size, pending)


def uaccess_read_pending(dist: Vgic, vcpu: int, intid: int, size: int) -> int:
    """Userspace view: GICv3 reports the raw latch (restored separately from line levels)."""
    if dist.is_v2:
        return _read_bits(dist, vcpu, intid, size, irq_is_pending)
    return _read_bits(dist, vcpu, intid, size, lambda irq: irq.pending_latch)


def _is_v2_sgi(dist: Vgic, irq: VgicIrq) -> bool:
    return dist.is_v2 and is_sgi(irq.intid)


def write_spending(dist: Vgic, vcpu: int, intid: int, size: int, value: int) -> None:
    for _, irq in _set_bits(dist, vcpu, intid, size, value):
        if _is_v2_sgi(dist, irq):
            continue   # GICD_ISPENDR0 SGI bits are WI for the guest (SPENDSGIR sets sources)
        irq.pending_latch = True
        if irq.hw:
            set_phys_active(irq, True)   # keep the device quiet while the guest forces pending
        dist.queue_irq(irq)


def write_cpending(dist: Vgic, vcpu: int, intid: int, size: int, value: int) -> None:
    for _, irq in _set_bits(dist, vcpu, intid, size, value):
        if _is_v2_sgi(dist, irq):
            continue
        irq.pending_latch = False
        if irq.hw and not irq.active:
            # SPEND+CPEND must not leave the physical interrupt masked by its active bit.
            set_phys_active(irq, False)
        dist.queue_irq(irq)   # withdraw it from the holder's LRs


def uaccess_write_spending(dist: Vgic, vcpu: int, intid: int, size: int, value: int) -> int:
    for _, irq in _set_bits(dist, vcpu, intid, size, value):
        if _is_v2_sgi(dist, irq):
            irq.source |= 1 << vcpu   # the real source cannot be restored: use the target
        irq.pending_latch = True
        dist.queue_irq(irq)
    return 0


def uaccess_write_cpending(dist: Vgic, vcpu: int, intid: int, size: int, value: int) -> int:
    for _, irq in _set_bits(dist, vcpu, intid, size, value):
        if _is_v2_sgi(dist, irq):
            irq.source = 0   # which source? all of them
        irq.pending_latch = False
    return 0


# --- IS/ICACTIVER --------------------------------------------------------------------------------


def read_active(dist: Vgic, vcpu: int, intid: int, size: int) -> int:
    with dist.halted_guest(intid):
        return _read_bits(dist, vcpu, intid, size, lambda irq: irq.active)


def _change_active(dist: Vgic, requester: int | None, irq: VgicIrq, active: bool) -> None:
    if irq.hw and not is_sgi(irq.intid):
        if requester is not None:   # userspace writes to an HW interrupt are ignored
            irq.active = active
            set_phys_active(irq, active)
    else:
        irq.active = active
        # GICv2 keeps the source of an active SGI nowhere architectural: use the requester.
        if dist.is_v2 and active and is_sgi(irq.intid):
            irq.active_source = requester if requester is not None else 0
    if irq.active:
        dist.queue_irq(irq)


def write_sactive(dist: Vgic, vcpu: int, intid: int, size: int, value: int) -> None:
    with dist.halted_guest(intid):
        for _, irq in _set_bits(dist, vcpu, intid, size, value):
            _change_active(dist, vcpu, irq, True)


def write_cactive(dist: Vgic, vcpu: int, intid: int, size: int, value: int) -> None:
    with dist.halted_guest(intid):
        for _, irq in _set_bits(dist, vcpu, intid, size, value):
            _change_active(dist, vcpu, irq, False)


def uaccess_write_sactive(dist: Vgic, vcpu: int, intid: int, size: int, value: int) -> int:
    for _, irq in _set_bits(dist, vcpu, intid, size, value):
        _change_active(dist, None, irq, True)
    return 0


def uaccess_write_cactive(dist: Vgic, vcpu: int, intid: int, size: int, value: int) -> int:
    for _, irq in _set_bits(dist, vcpu, intid, size, value):
        _change_active(dist, None, irq, False)
    return 0


# --- IPRIORITYR / ICFGR --------------------------------------------------------------------------


def read_priority(dist: Vgic, vcpu: int, intid: int, size: int) -> int:
    return sum(irq.priority << (8 * i) for i, irq in irqs_at(dist, vcpu, intid, size))


def write_priority(dist: Vgic, vcpu: int, intid: int, size: int, value: int) -> None:
    # Takes effect at the next flush: a queued interrupt is not re-sorted now (as KVM).
    for i, irq in irqs_at(dist, vcpu, intid, size):
        irq.priority = (value >> (8 * i)) & G.PRIORITY_MASK


def read_config(dist: Vgic, vcpu: int, intid: int, size: int) -> int:
    return sum(2 << (2 * i) for i, irq in irqs_at(dist, vcpu, intid, size * 4)
               if irq.config == VGIC_CONFIG_EDGE)


def write_config(dist: Vgic, vcpu: int, intid: int, size: int, value: int) -> None:
    for i, irq in irqs_at(dist, vcpu, intid, size * 4):
        if irq.intid < G.NR_PRIVATE_IRQS:
            continue   # SGIs are edge by definition; the timer needs PPIs level: read-only
        config = VGIC_CONFIG_EDGE if value >> (2 * i + 1) & 1 else VGIC_CONFIG_LEVEL
        if config == irq.config:
            continue
        irq.config = config
        if config == VGIC_CONFIG_LEVEL and irq.line_level:
            dist.queue_irq(irq)   # the line is high: pending from now on
