"""Fake VM/vCPU hosts for the vGIC: count kicks, no cores, no threads of their own."""

from __future__ import annotations

from dataclasses import dataclass, field

from softkvm.arch import gic as G
from softkvm.arch import sysregs as S
from softkvm.kvm import uapi
from softkvm.kvm.vgic.vgic import Vgic, kvm_vgic_create
from softkvm.kvm.vgic.vgic_v3 import vgic_v3_alloc_redist_region

V2 = uapi.KVM_DEV_TYPE_ARM_VGIC_V2
V3 = uapi.KVM_DEV_TYPE_ARM_VGIC_V3
MODELS = {"v2": V2, "v3": V3}
DIST_BASE = 0x08000000
CPU_BASE = 0x08010000
REDIST_BASE = 0x080A0000


def mpidr_of(vcpu_id: int) -> int:
    """KVM's reset_mpidr: 16 vCPUs per Aff1 cluster."""
    return (vcpu_id & 0xF) | ((vcpu_id >> 4) & 0xFF) << 8 | ((vcpu_id >> 12) & 0xFF) << 16


@dataclass
class FakeVcpu:
    vcpu_id: int
    mpidr: int
    kicks: int = 0

    def kick(self) -> None:
        self.kicks += 1


@dataclass
class FakeVm:
    nr_vcpus: int
    ran: bool = False
    _vcpus: list[FakeVcpu] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._vcpus = [FakeVcpu(i, mpidr_of(i)) for i in range(self.nr_vcpus)]

    def vcpus(self) -> list[FakeVcpu]:
        return self._vcpus

    def has_run(self) -> bool:
        return self.ran

    def vgic_initialized(self) -> None:
        self.initialized_calls = getattr(self, "initialized_calls", 0) + 1

    def kicks(self) -> list[int]:
        return [v.kicks for v in self._vcpus]


def make_vgic(model: int = V2, nr_vcpus: int = 1, nr_irqs: int = 64, nr_lr: int = 4,
              ready: bool = True) -> tuple[Vgic, FakeVm]:
    """A vGIC with addresses set, NR_IRQS, initialised and (``ready``) resources mapped."""
    vm = FakeVm(nr_vcpus)
    vgic = kvm_vgic_create(vm, model, nr_lr)
    vgic.nr_spis = nr_irqs - G.NR_PRIVATE_IRQS
    vgic.dist_base = DIST_BASE
    if model == V2:
        vgic.cpu_base = CPU_BASE
    else:
        assert vgic_v3_alloc_redist_region(vgic, 0, REDIST_BASE, 0) == 0
    vgic.vgic_init()
    if ready:
        vgic.kvm_vgic_map_resources()
    return vgic, vm


def guest_enable(vgic: Vgic, vcpu: int, pmr: int = 0xF8) -> None:
    """What a guest does first: distributor on, its CPU interface on, PMR open."""
    vif = vgic.vcpu_if(vcpu)
    if vgic.is_v2:
        vgic.dist_mmio_write(vcpu, G.GICD_CTLR, 4, 1)
        vif.gicv_write(G.GICC_CTLR, 4, G.GICC_CTLR_F.EnableGrp0.val(1))
        vif.gicv_write(G.GICC_PMR, 4, pmr)
    else:
        vgic.dist_mmio_write(vcpu, G.GICD_CTLR, 4, G.GICD_CTLR_F.EnableGrp1.val(1))
        vif.icc_write(S.ICC_IGRPEN1_EL1.encoding, 1)
        vif.icc_write(S.ICC_PMR_EL1.encoding, pmr)


def enable_spi(vgic: Vgic, intid: int, priority: int = 0xA0, edge: bool = True,
               vcpu: int = 0) -> None:
    """Enable an SPI with a priority and trigger as a guest would, through the distributor."""
    word, bit = divmod(intid, 32)
    vgic.dist_mmio_write(vcpu, G.GICD_IPRIORITYR + intid, 1, priority)
    cfg_word, cfg_bit = divmod(intid, 16)
    cfg = vgic.dist_mmio_read(vcpu, G.GICD_ICFGR + 4 * cfg_word, 4)
    cfg = G.Field(2 * cfg_bit + 1).put(cfg, int(edge))
    vgic.dist_mmio_write(vcpu, G.GICD_ICFGR + 4 * cfg_word, 4, cfg)
    vgic.dist_mmio_write(vcpu, G.GICD_ISENABLER + 4 * word, 4, 1 << bit)
