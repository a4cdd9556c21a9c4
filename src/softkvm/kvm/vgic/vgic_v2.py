"""GICv2 model: list register encode/fold, CPU interface enable, resource checks.

Counterpart: arch/arm64/kvm/vgic/vgic-v2.c (``vgic_v2_populate_lr``, ``vgic_v2_fold_lr_state``,
``vgic_v2_enable``, ``vgic_v2_map_resources``/``vgic_v2_check_base``). LRs use the GICH_LR
format of ``softkvm.arch.gic``; a GICv2 SGI carries its source CPU in LR.CPUID and goes one
source per LR, with EOI maintenance while more sources are pending.
"""

from __future__ import annotations

import errno

from softkvm.arch import gic as G
from softkvm.hw.vcpu_if import VcpuInterface
from softkvm.kvm import uapi
from softkvm.kvm.vgic.arm_vgic import (
    VGIC_CONFIG_EDGE,
    VGIC_CONFIG_LEVEL,
    VgicIrq,
    handle_resampling,
    irq_is_pending,
    lr_consume_mapped_level,
    lr_hw_or_resample,
    is_multi_sgi,
    is_sgi,
)

LR = G.GICH_LR


def vgic_v2_populate_lr(irq: VgicIrq) -> int:
    """Encode ``irq`` into a GICH_LR value, consuming the edge latch / one SGI source."""
    val = LR.vintid.val(irq.intid)
    allow_pending = True
    if irq.active:
        val |= LR.state.val(G.LR_STATE_ACTIVE)
        if is_sgi(irq.intid):
            val |= LR.cpuid.val(irq.active_source)
        if is_multi_sgi(irq):
            allow_pending = False   # one instance at a time: the rest waits for EOI maintenance
            val |= LR.eoi.val(1)
    if irq.group:
        val |= LR.group.val(1)
    val, allow_pending = lr_hw_or_resample(LR, irq, val, allow_pending)
    if allow_pending and irq_is_pending(irq):
        val |= LR.state.val(G.LR_STATE_PENDING)
        if irq.config == VGIC_CONFIG_EDGE:
            irq.pending_latch = False
        if is_sgi(irq.intid) and irq.source:
            src = (irq.source & -irq.source).bit_length() - 1
            val |= LR.cpuid.val(src)
            irq.source &= ~(1 << src)
            if irq.source:
                irq.pending_latch = True
                val |= LR.eoi.val(1)
    lr_consume_mapped_level(LR, irq, val)
    return LR.put_priority(val, irq.priority)


def vgic_v2_fold_lr(irq: VgicIrq, lr: int) -> None:
    """Fold one GICH_LR value back into ``irq`` after the guest ran."""
    state = LR.state.get(lr)
    cpuid = LR.get_cpuid(lr)
    deactivated = irq.active and not state & G.LR_STATE_ACTIVE
    irq.active = bool(state & G.LR_STATE_ACTIVE)
    if irq.active and is_sgi(irq.intid):
        irq.active_source = cpuid
    if irq.config == VGIC_CONFIG_EDGE and state & G.LR_STATE_PENDING:
        irq.pending_latch = True    # the guest has not taken this edge yet
        if is_sgi(irq.intid):
            irq.source |= 1 << cpuid
    if irq.config == VGIC_CONFIG_LEVEL and state == G.LR_STATE_INVALID:
        irq.pending_latch = False   # acked and EOIed: a soft-pending level is consumed
    handle_resampling(irq, deactivated, bool(state & G.LR_STATE_PENDING))


def vgic_v2_enable(vif: VcpuInterface) -> None:
    """VMCR to zero (the hardware restores the binary points to their minimum), HCR.En."""
    vif.write_vmcr(0)
    vif.hcr = G.HCR.En.val(1)


def vgic_v2_check_base(dist_base: int, cpu_base: int) -> bool:
    """The distributor and CPU interface frames must not wrap or overlap."""
    dist_end = dist_base + uapi.KVM_VGIC_V2_DIST_SIZE
    cpu_end = cpu_base + uapi.KVM_VGIC_V2_CPU_SIZE
    return dist_end <= cpu_base or cpu_end <= dist_base


def vgic_v2_check_resources(dist_base: int | None, cpu_base: int | None) -> int:
    """The address checks of vgic_v2_map_resources: 0 or -errno."""
    if dist_base is None or cpu_base is None:
        return -errno.ENXIO
    if not vgic_v2_check_base(dist_base, cpu_base):
        return -errno.EINVAL
    return 0
