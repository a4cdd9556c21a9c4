"""vGIC lifecycle: per-vCPU state, initialisation, lazy init, resource mapping, teardown.

Counterpart: arch/arm64/kvm/vgic/vgic-init.c (``kvm_vgic_vcpu_init``, ``vgic_init``,
``kvm_vgic_dist_init``, ``vgic_lazy_init``, ``kvm_vgic_map_resources``, ``kvm_vgic_destroy``).
``kvm_vgic_create`` lives in vgic.py, beside the class it builds, so imports stay one-way.
Functions return 0 or -errno as the kernel's do; the ``Vgic`` methods turn errors into KvmError.
"""

from __future__ import annotations

import errno
from functools import partial
from typing import TYPE_CHECKING

from softkvm.arch import gic as G
from softkvm.hw.vcpu_if import VcpuInterface
from softkvm.kvm import uapi
from softkvm.kvm.vgic.arm_vgic import (
    KVM_VGIC_IMP_REV_LATEST,
    VGIC_CONFIG_EDGE,
    VGIC_CONFIG_LEVEL,
    VgicCpu,
    VgicIrq,
    is_sgi,
)
from softkvm.kvm.vgic.vgic_v2 import vgic_v2_check_resources, vgic_v2_enable
from softkvm.kvm.vgic.vgic_v3 import vgic_v3_check_resources, vgic_v3_enable

if TYPE_CHECKING:
    from softkvm.kvm.vgic.vgic import Vgic


def _private_irqs(dist: Vgic, vcpu_id: int) -> list[VgicIrq]:
    """SGIs enabled and edge, PPIs level; routed to their own vCPU; group 0 (v2) / 1 (v3)."""
    irqs = []
    for intid in range(G.NR_PRIVATE_IRQS):
        irq = VgicIrq(intid=intid, target_vcpu=vcpu_id)
        if is_sgi(intid):
            irq.enabled = True
            irq.config = VGIC_CONFIG_EDGE
        else:
            irq.config = VGIC_CONFIG_LEVEL
        if dist.is_v2:
            irq.targets = 1 << vcpu_id   # what ITARGETSR0-7 read
        else:
            irq.group = 1                # (no IROUTER for private INTIDs: mpidr stays unused)
        irqs.append(irq)
    return irqs


def kvm_vgic_vcpu_init(dist: Vgic, vcpu_id: int) -> None:
    """Create the vGIC state of every vCPU up to ``vcpu_id`` that does not have one yet (it
    may be called before the host lists the new vCPU, as KVM does at vCPU creation)."""
    while len(dist.cpus) <= vcpu_id:
        n = len(dist.cpus)
        vif = VcpuInterface(2 if dist.is_v2 else 3, dist.nr_lr,
                            deactivate_phys=partial(dist.phys_deactivated, n))
        dist.cpus.append(VgicCpu(vcpu_id=n, vif=vif, private_irqs=_private_irqs(dist, n)))
        if dist.initialized:
            _vcpu_enable(dist, dist.cpus[n])


def _vcpu_enable(dist: Vgic, cpu: VgicCpu) -> None:
    if dist.is_v2:
        vgic_v2_enable(cpu.vif)
    else:
        vgic_v3_enable(cpu.vif)


def _dist_init(dist: Vgic) -> None:
    """Allocate the SPIs: disabled, edge, routed to vCPU 0, group 0 (v2) / 1 (v3)."""
    target = 0 if dist.nr_vcpus() else None
    group = 0 if dist.is_v2 else 1
    dist.spis = [VgicIrq(intid=G.SPI_BASE + i, target_vcpu=target, group=group)
                 for i in range(dist.nr_spis)]


def vgic_init(dist: Vgic) -> int:
    """Freeze the SPI count (224 by default), allocate, enable every vCPU interface."""
    if dist.initialized:
        return 0
    nr_vcpus = dist.nr_vcpus()
    if nr_vcpus:
        kvm_vgic_vcpu_init(dist, nr_vcpus - 1)
    if not dist.nr_spis:
        dist.nr_spis = uapi.VGIC_NR_IRQS_LEGACY - uapi.VGIC_NR_PRIVATE_IRQS
    _dist_init(dist)
    for cpu in dist.cpus:
        _vcpu_enable(dist, cpu)
    if not dist.implementation_rev:
        dist.implementation_rev = KVM_VGIC_IMP_REV_LATEST
    dist.initialized = True
    dist.lock.defer_call(dist.vm.vgic_initialized)  # outside the lock: irqfds installed now
    return 0


def vgic_lazy_init(dist: Vgic) -> int:
    """Only the legacy GICv2 initialises on first use; GICv3 must be initialised explicitly."""
    if dist.initialized:
        return 0
    if not dist.is_v2:
        return -errno.EBUSY
    return vgic_init(dist)


def kvm_vgic_map_resources(dist: Vgic) -> int:
    """First KVM_RUN: check the frames, initialise (v2), mark ready. Failure destroys the vGIC."""
    if dist.ready:
        return 0
    if dist.is_v2:
        ret = vgic_v2_check_resources(dist.dist_base, dist.cpu_base) or vgic_init(dist)
    else:
        ret = vgic_v3_check_resources(dist)
    if ret:
        kvm_vgic_destroy(dist)
        return ret
    dist.ready = True
    return 0


def kvm_vgic_destroy(dist: Vgic) -> None:
    """Forget the SPIs, the addresses and every vCPU's interrupt state."""
    dist.ready = False
    dist.initialized = False
    dist.enabled = False
    dist.spis = []
    dist.nr_spis = 0
    dist.dist_base = None
    dist.cpu_base = None
    dist.rd_regions.clear()
    for cpu in dist.cpus:
        cpu.ap_list.clear()
        cpu.used_lrs = 0
        cpu.live = False
        cpu.vif.reset()
        cpu.private_irqs = _private_irqs(dist, cpu.vcpu_id)
