"""GICv2 register maps: the distributor, and the CPU interface as userspace sees it.

Counterpart: arch/arm64/kvm/vgic/vgic-mmio-v2.c (``vgic_v2_dist_registers``,
``vgic_v2_cpu_registers``, ``vgic_mmio_write_sgir``, ``vgic_mmio_{read,write}_target``, the SGI
pending-source registers, ``vgic_mmio_{read,write}_vcpuif``). The guest's own GICC accesses are
served by the virtual CPU interface hardware (``VcpuInterface.gicv_read``), like GICV is; the
CPU-interface table here is KVM's userspace view (KVM_DEV_ARM_VGIC_GRP_CPU_REGS), which exposes
PMR as the 5-bit GICH_VMCR.VMPriMask.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from softkvm.arch import gic as G
from softkvm.kvm.vgic import vgic_mmio as M
from softkvm.kvm.vgic.vgic_mmio import ACCESS_8, ACCESS_32

if TYPE_CHECKING:
    from softkvm.kvm.vgic.vgic import Vgic

_MISC_MASK = 0x0C     # GICD_CTLR/TYPER/IIDR share one 12-byte region
_SGI_MASK = 0x0F      # CPENDSGIR/SPENDSGIR: one byte per SGI...
_SOURCES = 0xFF       # ...holding one bit per source CPU


def _typer(dist: Vgic) -> int:
    f = G.GICD_TYPER_F
    return (f.ITLinesNumber.val((dist.nr_irqs >> 5) - 1)
            | f.CPUNumber.val(dist.nr_vcpus() - 1))


def read_v2_misc(dist: Vgic, _vcpu: int, addr: int, _size: int) -> int:
    reg = addr & _MISC_MASK
    if reg == G.GICD_CTLR:
        return G.GICD_CTLR_F.Enable.val(dist.enabled)
    if reg == G.GICD_TYPER:
        return _typer(dist)
    if reg == G.GICD_IIDR:
        return M.gicd_iidr(dist)
    return 0


def write_v2_misc(dist: Vgic, _vcpu: int, addr: int, _size: int, value: int) -> None:
    if addr & _MISC_MASK == G.GICD_CTLR:
        dist.set_enabled(bool(G.GICD_CTLR_F.Enable.get(value)))
    # TYPER and IIDR are read-only


def uaccess_write_v2_misc(dist: Vgic, vcpu: int, addr: int, size: int, value: int) -> int:
    """Userspace writing IIDR proves it knows groups are real: make them user-writable."""
    if addr & _MISC_MASK == G.GICD_IIDR:
        if value != M.gicd_iidr(dist):
            return -errno.EINVAL
        dist.v2_groups_user_writable = True
        return 0
    write_v2_misc(dist, vcpu, addr, size, value)
    return 0


def uaccess_write_v2_group(dist: Vgic, vcpu: int, intid: int, size: int, value: int) -> int:
    if dist.v2_groups_user_writable:
        M.write_group(dist, vcpu, intid, size, value)
    return 0


# --- ITARGETSR -----------------------------------------------------------------------------------


def read_target(dist: Vgic, vcpu: int, intid: int, size: int) -> int:
    return sum(irq.targets << (8 * i) for i, irq in M.irqs_at(dist, vcpu, intid, size))


def write_target(dist: Vgic, vcpu: int, intid: int, size: int, value: int) -> None:
    """Targets masked to existing vCPUs; delivery to the lowest set bit (KVM does no 1-of-N),
    vCPU 0 when empty. ITARGETSR0-7 (private) are read-only."""
    if intid < G.NR_PRIVATE_IRQS:
        return
    cpu_mask = (1 << dist.nr_vcpus()) - 1
    for i, irq in M.irqs_at(dist, vcpu, intid, size):
        irq.targets = (value >> (8 * i)) & cpu_mask
        target = (irq.targets & -irq.targets).bit_length() - 1 if irq.targets else 0
        dist.retarget(irq, target)


# --- GICD_SGIR and the SGI pending-source registers -----------------------------------------------


def write_sgir(dist: Vgic, source: int, _addr: int, _size: int, value: int) -> None:
    f = G.GICD_SGIR_F
    nr = dist.nr_vcpus()
    intid, targets = f.SGIINTID.get(value), f.CPUTargetList.get(value)
    mode = f.TargetListFilter.get(value)
    if mode == G.SGIR_FILTER_OTHERS:
        targets = ((1 << nr) - 1) & ~(1 << source)
    elif mode == G.SGIR_FILTER_SELF:
        targets = 1 << source
    elif mode == G.SGIR_FILTER_RESERVED:
        return
    for target in range(nr):
        irq = dist.get_irq(target, intid) if targets >> target & 1 else None
        if irq is None:
            continue
        irq.pending_latch = True
        irq.source |= 1 << source
        dist.queue_irq(irq)
    if dist.tracer.on:
        dist.tracer.emit("vgic_send_sgi", source, intid=intid, targets=targets & ((1 << nr) - 1))


def read_sgipend(dist: Vgic, vcpu: int, addr: int, size: int) -> int:
    intid = addr & _SGI_MASK
    return sum(irq.source << (8 * i) for i, irq in M.irqs_at(dist, vcpu, intid, size))


def write_sgipendc(dist: Vgic, vcpu: int, addr: int, size: int, value: int) -> None:
    for i, irq in M.irqs_at(dist, vcpu, addr & _SGI_MASK, size):
        irq.source &= ~(value >> (8 * i)) & _SOURCES
        if not irq.source:
            irq.pending_latch = False


def write_sgipends(dist: Vgic, vcpu: int, addr: int, size: int, value: int) -> None:
    for i, irq in M.irqs_at(dist, vcpu, addr & _SGI_MASK, size):
        irq.source |= (value >> (8 * i)) & _SOURCES
        if irq.source:
            irq.pending_latch = True
            dist.queue_irq(irq)


VGIC_V2_DIST = M.VgicIoDevice((
    M.length(G.GICD_CTLR, 12, read_v2_misc, write_v2_misc, ACCESS_32,
             uwrite=uaccess_write_v2_misc),
    M.bits_per_irq(G.GICD_IGROUPR, 1, M.read_group, M.write_group, ACCESS_32,
                   uwrite=uaccess_write_v2_group),
    M.bits_per_irq(G.GICD_ISENABLER, 1, M.read_enable, M.write_senable, ACCESS_32,
                   uwrite=M.uaccess_write_senable),
    M.bits_per_irq(G.GICD_ICENABLER, 1, M.read_enable, M.write_cenable, ACCESS_32,
                   uwrite=M.uaccess_write_cenable),
    M.bits_per_irq(G.GICD_ISPENDR, 1, M.read_pending, M.write_spending, ACCESS_32,
                   uread=M.uaccess_read_pending, uwrite=M.uaccess_write_spending),
    M.bits_per_irq(G.GICD_ICPENDR, 1, M.read_pending, M.write_cpending, ACCESS_32,
                   uread=M.uaccess_read_pending, uwrite=M.uaccess_write_cpending),
    M.bits_per_irq(G.GICD_ISACTIVER, 1, M.read_active, M.write_sactive, ACCESS_32,
                   uwrite=M.uaccess_write_sactive),
    M.bits_per_irq(G.GICD_ICACTIVER, 1, M.read_active, M.write_cactive, ACCESS_32,
                   uwrite=M.uaccess_write_cactive),
    M.bits_per_irq(G.GICD_IPRIORITYR, 8, M.read_priority, M.write_priority,
                   ACCESS_32 | ACCESS_8),
    M.bits_per_irq(G.GICD_ITARGETSR, 8, read_target, write_target, ACCESS_32 | ACCESS_8),
    M.bits_per_irq(G.GICD_ICFGR, 2, M.read_config, M.write_config, ACCESS_32),
    M.length(G.GICD_SGIR, 4, M.read_raz, write_sgir, ACCESS_32),
    M.length(G.GICD_CPENDSGIR, 16, read_sgipend, write_sgipendc, ACCESS_32 | ACCESS_8),
    M.length(G.GICD_SPENDSGIR, 16, read_sgipend, write_sgipends, ACCESS_32 | ACCESS_8),
))


# --- the CPU interface, userspace view (KVM_DEV_ARM_VGIC_GRP_CPU_REGS) ---------------------------
_PMR_SHIFT = 8 - G.PRI_BITS   # userspace sees GICH_VMCR.VMPriMask, 5 bits


def read_vcpuif(dist: Vgic, vcpu: int, addr: int, _size: int) -> int:
    vif = dist.cpus[vcpu].vif
    if addr == G.GICC_PMR:
        return vif.vmcr.pmr >> _PMR_SHIFT
    return vif.gicv_read(addr, 4)   # CTLR, BPR, ABPR, IIDR: side-effect free reads


def write_vcpuif(dist: Vgic, vcpu: int, addr: int, _size: int, value: int) -> None:
    vif = dist.cpus[vcpu].vif
    if addr == G.GICC_PMR:
        value = value << _PMR_SHIFT
    vif.gicv_write(addr, 4, value, from_guest=False)


def read_apr(dist: Vgic, vcpu: int, addr: int, _size: int) -> int:
    """GICv2 hardware has one GICH_APR: APR0 is it, APR1-3 read as zero."""
    return dist.cpus[vcpu].vif.ap0r[0] if addr == G.GICC_APR else 0


def write_apr(dist: Vgic, vcpu: int, addr: int, _size: int, value: int) -> None:
    if addr == G.GICC_APR:
        dist.cpus[vcpu].vif.ap0r[0] = value


VGIC_V2_CPU = M.VgicIoDevice((
    M.length(G.GICC_CTLR, 4, read_vcpuif, write_vcpuif, ACCESS_32),
    M.length(G.GICC_PMR, 4, read_vcpuif, write_vcpuif, ACCESS_32),
    M.length(G.GICC_BPR, 4, read_vcpuif, write_vcpuif, ACCESS_32),
    M.length(G.GICC_ABPR, 4, read_vcpuif, write_vcpuif, ACCESS_32),
    M.length(G.GICC_APR, 16, read_apr, write_apr, ACCESS_32),
    M.length(G.GICC_IIDR, 4, read_vcpuif, M.write_wi, ACCESS_32),
))
