"""GICv3 model: list register encode/fold, enable, redistributor regions, resource checks.

Counterpart: arch/arm64/kvm/vgic/vgic-v3.c (``vgic_v3_populate_lr``, ``vgic_v3_fold_lr_state``,
``vgic_v3_enable``, ``vgic_v3_map_resources``, ``vgic_v3_check_base``, the redistributor region
list: ``vgic_v3_alloc_redist_region``, ``vgic_v3_rdist_free_slot``) and vgic-mmio-v3.c
(``vgic_mmio_vcpu_rdist_is_last``). LRs use the ICH_LR format; the GICv3 model tracks no SGI
sources.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from softkvm.arch import gic as G
from softkvm.hw.vcpu_if import VcpuInterface
from softkvm.kvm.vgic.arm_vgic import (
    VGIC_ADDR_ALIGN_V3,
    VGIC_CONFIG_EDGE,
    VGIC_CONFIG_LEVEL,
    RdRegion,
    VgicIrq,
    handle_resampling,
    irq_is_pending,
    lr_consume_mapped_level,
    lr_hw_or_resample,
    ranges_overlap,
    vgic_check_iorange,
)

if TYPE_CHECKING:
    from softkvm.kvm.vgic.vgic import Vgic

LR = G.ICH_LR
RD_SIZE = G.GICR_FRAME_SIZE

RdSlot = tuple[RdRegion, int]   # (region, index of the frame inside it)


def vgic_v3_populate_lr(irq: VgicIrq) -> int:
    """Encode ``irq`` into an ICH_LR value, consuming the edge latch."""
    val = LR.vintid.val(irq.intid)
    allow_pending = True
    if irq.active:
        val |= LR.state.val(G.LR_STATE_ACTIVE)
    val, allow_pending = lr_hw_or_resample(LR, irq, val, allow_pending)
    if allow_pending and irq_is_pending(irq):
        val |= LR.state.val(G.LR_STATE_PENDING)
        if irq.config == VGIC_CONFIG_EDGE:
            irq.pending_latch = False
    lr_consume_mapped_level(LR, irq, val)
    if irq.group:
        val |= LR.group.val(1)
    return LR.put_priority(val, irq.priority)


def vgic_v3_fold_lr(irq: VgicIrq, lr: int) -> None:
    """Fold one ICH_LR value back into ``irq`` after the guest ran."""
    state = LR.state.get(lr)
    deactivated = irq.active and not state & G.LR_STATE_ACTIVE
    irq.active = bool(state & G.LR_STATE_ACTIVE)
    if irq.config == VGIC_CONFIG_EDGE and state & G.LR_STATE_PENDING:
        irq.pending_latch = True    # the guest has not taken this edge yet
    if irq.config == VGIC_CONFIG_LEVEL and state == G.LR_STATE_INVALID:
        irq.pending_latch = False   # acked and EOIed: a soft-pending level is consumed
    handle_resampling(irq, deactivated, bool(state & G.LR_STATE_PENDING))


def vgic_v3_enable(vif: VcpuInterface) -> None:
    """VMCR to zero (binary points at their minimum), HCR.En; ICC_SRE reads SRE|DFB|DIB."""
    vif.write_vmcr(0)
    vif.hcr = G.HCR.En.val(1)


# --- redistributor regions --------------------------------------------------------------------


def rd_region_size(region: RdRegion, nr_vcpus: int) -> int:
    return (region.count or nr_vcpus) * RD_SIZE


def rd_slots(regions: list[RdRegion], nr_vcpus: int) -> list[RdSlot | None]:
    """Each vCPU's redistributor, in vCPU order: the first region with a free frame, as KVM
    fills them when vCPUs and regions appear (vgic_v3_rdist_free_slot)."""
    used = {r.index: 0 for r in regions}
    slots: list[RdSlot | None] = []
    for _ in range(nr_vcpus):
        region = next((r for r in regions if not r.count or used[r.index] < r.count), None)
        if region is None:
            slots.append(None)
            continue
        slots.append((region, used[region.index]))
        used[region.index] += 1
    return slots


def rd_base(slot: RdSlot) -> int:
    region, index = slot
    return region.base + index * RD_SIZE


def rdist_is_last(regions: list[RdRegion], slots: list[RdSlot | None], vcpu_id: int) -> bool:
    """GICR_TYPER.Last: the final frame of a contiguous run of redistributors."""
    slot = slots[vcpu_id]
    if slot is None:
        return False
    region, index = slot
    used = sum(1 for s in slots if s is not None and s[0] is region)
    if index < used - 1:
        return False
    if region.count and index == region.count - 1:
        end = region.base + region.count * RD_SIZE
        return not any(r.base == end and any(s is not None and s[0] is r for s in slots)
                       for r in regions)
    return True


def _rdist_overlap(regions: list[RdRegion], base: int, size: int, nr_vcpus: int) -> bool:
    return any(ranges_overlap(r.base, rd_region_size(r, nr_vcpus), base, size) for r in regions)


def vgic_v3_check_base(dist: Vgic) -> bool:
    """No region wraps or leaves the IPA space, and none overlaps the distributor."""
    nr = dist.nr_vcpus()
    for region in dist.rd_regions:
        if vgic_check_iorange(None, region.base, VGIC_ADDR_ALIGN_V3, rd_region_size(region, nr)):
            return False
    if dist.dist_base is None:
        return True
    return not _rdist_overlap(dist.rd_regions, dist.dist_base, G.GICD_V3_SIZE, nr)


def vgic_v3_alloc_redist_region(dist: Vgic, index: int, base: int, count: int) -> int:
    """Add a redistributor region (count 0: the legacy single region). 0 or -errno."""
    regions, nr = dist.rd_regions, dist.nr_vcpus()
    size = (count or nr) * RD_SIZE
    if not regions:
        if index != 0:
            return -errno.EINVAL
    else:
        last = regions[-1]
        if not count and last.count:
            return -errno.EINVAL   # do not mix the single region with discrete ones
        if not count:
            return -errno.EEXIST
        if index != last.index + 1:
            return -errno.EINVAL
    if not count and dist.dist_base is not None and ranges_overlap(
            dist.dist_base, G.GICD_V3_SIZE, base, size):
        return -errno.EINVAL
    if _rdist_overlap(regions, base, size, nr):
        return -errno.EINVAL
    ret = vgic_check_iorange(None, base, VGIC_ADDR_ALIGN_V3, size)
    if ret:
        return ret
    regions.append(RdRegion(index, base, count))
    if nr and not vgic_v3_check_base(dist):   # registering the existing vCPUs' frames
        regions.pop()
        return -errno.EINVAL
    return 0


def vgic_v3_check_resources(dist: Vgic) -> int:
    """The checks of vgic_v3_map_resources: 0 or -errno."""
    if any(slot is None for slot in rd_slots(dist.rd_regions, dist.nr_vcpus())):
        return -errno.ENXIO   # some vCPU has no redistributor
    if dist.dist_base is None:
        return -errno.ENXIO
    if not vgic_v3_check_base(dist):
        return -errno.EINVAL
    if not dist.initialized:
        return -errno.EBUSY   # GICv3 must be initialised explicitly (KVM_DEV_ARM_VGIC_CTRL_INIT)
    return 0
