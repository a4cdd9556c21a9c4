"""GICv3 register maps: distributor and redistributor, SGI generation, line-level info.

Counterpart: arch/arm64/kvm/vgic/vgic-mmio-v3.c (``vgic_v3_dist_registers``,
``vgic_v3_rd_registers``, ``vgic_mmio_{read,write}_v3_misc``, ``..._irouter``,
``vgic_mmio_read_v3r_typer``, ``vgic_v3_dispatch_sgi``, ``vgic_v3_uaccess_write_pending``) and
the line-level helpers of vgic-mmio.c (``vgic_{read,write}_irq_line_level_info``).

Under KVM's GICv3: security is disabled (GICD_CTLR.DS reads 1), affinity routing is always on
(ARE reads 1), only EnableGrp1 is kept, the 32 private INTID slots of the distributor are
RAZ/WI, GICR_WAKER is RAZ/WI (no sleep handshake: ProcessorSleep and ChildrenAsleep read 0, so
a guest's wake-up loop ends at once) and there are no LPIs.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from softkvm.arch import gic as G
from softkvm.kvm.vgic import vgic_mmio as M
from softkvm.kvm.vgic.arm_vgic import (
    KVM_VGIC_IMP_REV_2,
    KVM_VGIC_IMP_REV_3,
    VGIC_CONFIG_LEVEL,
    VgicIrq,
)
from softkvm.kvm.vgic.vgic_mmio import ACCESS_8, ACCESS_32, ACCESS_64
from softkvm.kvm.vgic.vgic_v3 import RD_SIZE, RdRegion, rd_region_size

if TYPE_CHECKING:
    from softkvm.kvm.vgic.vgic import Vgic

MmioRead = Callable[[int, int], int]
MmioWrite = Callable[[int, int, int], None]
MmioRegion = tuple[int, int, MmioRead, MmioWrite]   # (guest-physical base, size, read, write)

_MISC_MASK = 0x0C      # GICD_CTLR/TYPER/IIDR/TYPER2 share one 16-byte region
_SUPPORTED_REVS = (KVM_VGIC_IMP_REV_2, KVM_VGIC_IMP_REV_3)
_HIGH_WORD = 4


# --- distributor: CTLR, TYPER, IIDR, TYPER2 ----------------------------------------------------


def _typer(dist: Vgic) -> int:
    f = G.GICD_TYPER_F
    return (f.ITLinesNumber.val((dist.nr_irqs >> 5) - 1)
            | f.IDbits.val(G.INTERRUPT_ID_BITS_SPIS - 1))


def read_v3_misc(dist: Vgic, _vcpu: int, addr: int, _size: int) -> int:
    reg, f = addr & _MISC_MASK, G.GICD_CTLR_F
    if reg == G.GICD_CTLR:
        return f.EnableGrp1.val(dist.enabled) | f.ARE.val(1) | f.DS.val(1)
    if reg == G.GICD_TYPER:
        return _typer(dist)
    if reg == G.GICD_IIDR:
        return M.gicd_iidr(dist)
    return 0   # TYPER2: no GICv4.1


def write_v3_misc(dist: Vgic, _vcpu: int, addr: int, _size: int, value: int) -> None:
    if addr & _MISC_MASK == G.GICD_CTLR:
        dist.set_enabled(bool(G.GICD_CTLR_F.EnableGrp1.get(value)))


def uaccess_write_v3_misc(dist: Vgic, vcpu: int, addr: int, size: int, value: int) -> int:
    """Userspace restores TYPER only as it is, and IIDR to pick revision 2 or 3."""
    reg = addr & _MISC_MASK
    if reg == G.GICD_TYPER:
        return 0 if value == _typer(dist) else -errno.EINVAL
    if reg == G.GICD_IIDR:
        rev_field = G.GICD_IIDR_F.Revision
        if ((value ^ M.gicd_iidr(dist)) & ~rev_field.mask
                or rev_field.get(value) not in _SUPPORTED_REVS):
            return -errno.EINVAL
        dist.implementation_rev = rev_field.get(value)
        return 0
    write_v3_misc(dist, vcpu, addr, size, value)
    return 0


def read_v3_idregs(_dist: Vgic, _vcpu: int, addr: int, _size: int) -> int:
    return G.PIDR2_ARCH_GICV3 if addr == G.GICD_PIDR2 else 0


# --- GICD_IROUTER ------------------------------------------------------------------------------


def _irouter_irq(dist: Vgic, vcpu: int, addr: int) -> tuple[int, VgicIrq | None]:
    intid = (addr - G.GICD_IROUTER) // 8
    return addr & _HIGH_WORD, dist.get_irq(vcpu, intid)


def read_irouter(dist: Vgic, vcpu: int, addr: int, size: int) -> int:
    high, irq = _irouter_irq(dist, vcpu, addr)
    if irq is None or high:
        return 0   # the upper word (Aff3) is RAZ: KVM keeps Aff2..Aff0 only
    return M.extract_bytes(irq.mpidr, addr, size)


def write_irouter(dist: Vgic, vcpu: int, addr: int, _size: int, value: int) -> None:
    high, irq = _irouter_irq(dist, vcpu, addr)
    if irq is None or high:
        return   # no Aff3; IRM (bit 31) is dropped with the rest of the unkept bits
    irq.mpidr = value & G.IROUTER_AFF210_MASK
    dist.retarget(irq, dist.vcpu_by_mpidr(irq.mpidr))


def uaccess_write_pending(dist: Vgic, vcpu: int, intid: int, size: int, value: int) -> int:
    """Userspace ISPENDR restores the raw latch, both ways (line levels come separately)."""
    for i, irq in M.irqs_at(dist, vcpu, intid, size * 8):
        irq.pending_latch = bool(value >> i & 1)
        if irq.pending_latch:
            dist.queue_irq(irq)
    return 0


VGIC_V3_DIST = M.VgicIoDevice((
    M.length(G.GICD_CTLR, 16, read_v3_misc, write_v3_misc, ACCESS_32,
             uwrite=uaccess_write_v3_misc),
    M.length(G.GICD_STATUSR, 4, M.read_rao, M.write_wi, ACCESS_32),
    *M.bits_per_irq_shared(G.GICD_IGROUPR, 1, M.read_group, M.write_group, ACCESS_32),
    *M.bits_per_irq_shared(G.GICD_ISENABLER, 1, M.read_enable, M.write_senable, ACCESS_32,
                           uwrite=M.uaccess_write_senable),
    *M.bits_per_irq_shared(G.GICD_ICENABLER, 1, M.read_enable, M.write_cenable, ACCESS_32,
                           uwrite=M.uaccess_write_cenable),
    *M.bits_per_irq_shared(G.GICD_ISPENDR, 1, M.read_pending, M.write_spending, ACCESS_32,
                           uread=M.uaccess_read_pending, uwrite=uaccess_write_pending),
    *M.bits_per_irq_shared(G.GICD_ICPENDR, 1, M.read_pending, M.write_cpending, ACCESS_32,
                           uread=M.read_raz, uwrite=M.uaccess_write_wi),
    *M.bits_per_irq_shared(G.GICD_ISACTIVER, 1, M.read_active, M.write_sactive, ACCESS_32,
                           uwrite=M.uaccess_write_sactive),
    *M.bits_per_irq_shared(G.GICD_ICACTIVER, 1, M.read_active, M.write_cactive, ACCESS_32,
                           uwrite=M.uaccess_write_cactive),
    *M.bits_per_irq_shared(G.GICD_IPRIORITYR, 8, M.read_priority, M.write_priority,
                           ACCESS_32 | ACCESS_8),
    *M.bits_per_irq_shared(G.GICD_ITARGETSR, 8, M.read_raz, M.write_wi, ACCESS_32 | ACCESS_8),
    *M.bits_per_irq_shared(G.GICD_ICFGR, 2, M.read_config, M.write_config, ACCESS_32),
    *M.bits_per_irq_shared(G.GICD_IGRPMODR, 1, M.read_raz, M.write_wi, ACCESS_32),
    M.length(G.GICD_IROUTER, 8 * G.NR_PRIVATE_IRQS, M.read_raz, M.write_wi,
             ACCESS_64 | ACCESS_32),
    M.RegisterRegion(G.GICD_IROUTER + 8 * G.NR_PRIVATE_IRQS, 8 * (1024 - G.NR_PRIVATE_IRQS),
                     ACCESS_64 | ACCESS_32, read_irouter, write_irouter, bits_per_irq=64,
                     intid_base=G.NR_PRIVATE_IRQS, pass_addr=True),
    M.length(G.GICD_IDREGS, G.GICD_IDREGS_SIZE, read_v3_idregs, M.write_wi, ACCESS_32),
))


# --- redistributor (RD_base + SGI_base frames of one vCPU) -------------------------------------


def read_v3r_ctlr(dist: Vgic, _vcpu: int, _addr: int, _size: int) -> int:
    """No LPIs: EnableLPIs stays 0; revision 3 also reports CES and IR."""
    if dist.implementation_rev >= KVM_VGIC_IMP_REV_3:
        return G.GICR_CTLR_F.CES.val(1) | G.GICR_CTLR_F.IR.val(1)
    return 0


def read_v3r_iidr(_dist: Vgic, _vcpu: int, _addr: int, _size: int) -> int:
    return G.GICD_IIDR_F.ProductID.val(G.PRODUCT_ID_KVM) | G.GICD_IIDR_F.Implementer.val(
        G.IMPLEMENTER_ARM)


def read_v3r_typer(dist: Vgic, vcpu: int, addr: int, size: int) -> int:
    """Affinity (Aff2..Aff0 of the vCPU), processor number, Last on the final frame of a run."""
    f = G.GICR_TYPER_F
    value = (f.Affinity_Value.val(dist.vcpu_mpidr(vcpu) & G.IROUTER_AFF210_MASK)
             | f.Processor_Number.val(vcpu) | f.Last.val(dist.rdist_is_last(vcpu)))
    return M.extract_bytes(value, addr, size)


def read_propbase(dist: Vgic, _vcpu: int, addr: int, size: int) -> int:
    return M.extract_bytes(dist.propbaser, addr, size)


def write_propbase(dist: Vgic, _vcpu: int, addr: int, size: int, value: int) -> None:
    dist.propbaser = M.update_64bit_reg(dist.propbaser, addr, size, value)  # LPIs never enabled


def read_pendbase(dist: Vgic, vcpu: int, addr: int, size: int) -> int:
    return M.extract_bytes(dist.cpus[vcpu].pendbaser, addr, size)


def write_pendbase(dist: Vgic, vcpu: int, addr: int, size: int, value: int) -> None:
    cpu = dist.cpus[vcpu]
    cpu.pendbaser = M.update_64bit_reg(cpu.pendbaser, addr, size, value)


_SGI = G.GICR_SGI_BASE
VGIC_V3_RDIST = M.VgicIoDevice((
    M.length(G.GICR_CTLR, 4, read_v3r_ctlr, M.write_wi, ACCESS_32),
    M.length(G.GICR_IIDR, 4, read_v3r_iidr, M.write_wi, ACCESS_32),
    M.length(G.GICR_TYPER, 8, read_v3r_typer, M.write_wi, ACCESS_64 | ACCESS_32,
             uwrite=M.uaccess_write_wi),
    M.length(G.GICR_STATUSR, 4, M.read_raz, M.write_wi, ACCESS_32),
    M.length(G.GICR_WAKER, 4, M.read_raz, M.write_wi, ACCESS_32),
    M.length(G.GICR_PROPBASER, 8, read_propbase, write_propbase, ACCESS_64 | ACCESS_32),
    M.length(G.GICR_PENDBASER, 8, read_pendbase, write_pendbase, ACCESS_64 | ACCESS_32),
    M.length(G.GICR_INVLPIR, 8, M.read_raz, M.write_wi, ACCESS_64 | ACCESS_32),
    M.length(G.GICR_INVALLR, 8, M.read_raz, M.write_wi, ACCESS_64 | ACCESS_32),
    M.length(G.GICR_SYNCR, 4, M.read_raz, M.write_wi, ACCESS_32),
    M.length(G.GICR_IDREGS, G.GICD_IDREGS_SIZE, read_v3_idregs, M.write_wi, ACCESS_32),
    M.length(_SGI + G.GICR_IGROUPR0, 4, M.read_group, M.write_group, ACCESS_32, bpi=1),
    M.length(_SGI + G.GICR_ISENABLER0, 4, M.read_enable, M.write_senable, ACCESS_32, bpi=1,
             uwrite=M.uaccess_write_senable),
    M.length(_SGI + G.GICR_ICENABLER0, 4, M.read_enable, M.write_cenable, ACCESS_32, bpi=1,
             uwrite=M.uaccess_write_cenable),
    M.length(_SGI + G.GICR_ISPENDR0, 4, M.read_pending, M.write_spending, ACCESS_32, bpi=1,
             uread=M.uaccess_read_pending, uwrite=uaccess_write_pending),
    M.length(_SGI + G.GICR_ICPENDR0, 4, M.read_pending, M.write_cpending, ACCESS_32, bpi=1,
             uread=M.read_raz, uwrite=M.uaccess_write_wi),
    M.length(_SGI + G.GICR_ISACTIVER0, 4, M.read_active, M.write_sactive, ACCESS_32, bpi=1,
             uwrite=M.uaccess_write_sactive),
    M.length(_SGI + G.GICR_ICACTIVER0, 4, M.read_active, M.write_cactive, ACCESS_32, bpi=1,
             uwrite=M.uaccess_write_cactive),
    M.length(_SGI + G.GICR_IPRIORITYR0, 32, M.read_priority, M.write_priority,
             ACCESS_32 | ACCESS_8, bpi=8),
    M.length(_SGI + G.GICR_ICFGR0, 8, M.read_config, M.write_config, ACCESS_32, bpi=2),
    M.length(_SGI + G.GICR_IGRPMODR0, 4, M.read_raz, M.write_wi, ACCESS_32),
    M.length(_SGI + G.GICR_NSACR, 4, M.read_raz, M.write_wi, ACCESS_32),
))


def _frame_vcpu(dist: Vgic, region: RdRegion, index: int) -> int | None:
    with dist.lock:
        slots = dist.rd_slots()
    return next((vcpu for vcpu, slot in enumerate(slots)
                 if slot is not None and slot[0] is region and slot[1] == index), None)


def _region_read(dist: Vgic, region: RdRegion, accessor: int, offset: int, size: int) -> int:
    vcpu = _frame_vcpu(dist, region, offset // RD_SIZE)
    return 0 if vcpu is None else dist.redist_mmio_read(vcpu, offset % RD_SIZE, size, accessor)


def _region_write(dist: Vgic, region: RdRegion, accessor: int, offset: int, size: int,
                  value: int) -> None:
    vcpu = _frame_vcpu(dist, region, offset // RD_SIZE)
    if vcpu is not None:
        dist.redist_mmio_write(vcpu, offset % RD_SIZE, size, value, accessor)


def vgic_v3_redist_regions(dist: Vgic, accessor: int) -> list[MmioRegion]:
    """One MMIO region per redistributor region, accessed by ``accessor``; each access goes to
    the frame's vCPU, by offset // 0x20000 (a free frame is RAZ/WI)."""
    nr = dist.nr_vcpus()
    return [(region.base, rd_region_size(region, nr), partial(_region_read, dist, region, accessor),
             partial(_region_write, dist, region, accessor)) for region in dist.rd_regions]


# --- SGIs (ICC_SGI0R/SGI1R/ASGI1R) -----------------------------------------------------------


def _sgi_targets(dist: Vgic, sender: int, reg: int) -> list[int]:
    f = G.ICC_SGI1R_F
    if f.IRM.get(reg):
        return [c for c in range(dist.nr_vcpus()) if c != sender]   # broadcast, not to self
    cluster = (G.MPIDR_AFF3.val(f.Aff3.get(reg)) | G.MPIDR_AFF2.val(f.Aff2.get(reg))
               | G.MPIDR_AFF1.val(f.Aff1.get(reg)))
    base_aff0 = f.RS.get(reg) * 16
    targets = []
    for bit in range(f.TargetList.width):
        if f.TargetList.get(reg) >> bit & 1:
            target = dist.vcpu_by_mpidr(cluster | G.MPIDR_AFF0.val(base_aff0 + bit))
            if target is not None:   # absent affinities are skipped
                targets.append(target)
    return targets


def vgic_v3_dispatch_sgi(dist: Vgic, sender: int, reg: int, allow_group1: bool) -> None:
    """Make SGI ``INTID`` pending on each target; an access allowed only group 0 (SGI0R,
    ASGI1R) drops group-1 SGIs. No source is recorded under GICv3."""
    sgi = G.ICC_SGI1R_F.INTID.get(reg)
    targets = _sgi_targets(dist, sender, reg)
    for target in targets:
        irq = dist.get_irq(target, sgi)
        if irq is not None and (irq.group == 0 or allow_group1):
            irq.pending_latch = True
            dist.queue_irq(irq)
    if dist.tracer.on:
        dist.tracer.emit("vgic_send_sgi", sender, intid=sgi,
                         targets=sum(1 << t for t in targets))


# --- KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO -----------------------------------------------------------


def read_line_level_info(dist: Vgic, vcpu: int, intid: int) -> int:
    """Bitmap of 32 line levels from ``intid``: level-configured IRQs only, no SGIs."""
    return sum(1 << i for i, irq in M.irqs_at(dist, vcpu, intid, 32)
               if irq.intid >= G.NR_SGIS and irq.config == VGIC_CONFIG_LEVEL and irq.line_level)


def write_line_level_info(dist: Vgic, vcpu: int, intid: int, value: int) -> None:
    """Set 32 line levels whatever the configuration (it may be restored later)."""
    for i, irq in M.irqs_at(dist, vcpu, intid, 32):
        if irq.intid < G.NR_SGIS:
            continue
        irq.line_level = bool(value >> i & 1)
        if irq.line_level:
            dist.queue_irq(irq)
