"""Injection rules, queueing and kicks, migration, the WFI check, owners and mapped IRQs,
and the locking contract (kicks outside the lock, concurrent injectors)."""

from __future__ import annotations

import errno
import threading

import pytest

from softkvm.arch import gic as G
from softkvm.arch import sysregs as S
from softkvm.kvm import uapi
from softkvm.kvm.errors import KvmError
from softkvm.kvm.vgic.vgic import kvm_vgic_create
from softkvm.kvm.vgic.vgic_kvm_device import VgicDevice
from tests.kvm.vgic.fakes import V2, V3, FakeVm, enable_spi, guest_enable, make_vgic

EINVAL, EBUSY, EAGAIN, EEXIST = -errno.EINVAL, -errno.EBUSY, -errno.EAGAIN, -errno.EEXIST


@pytest.mark.parametrize("model", [V2, V3])
@pytest.mark.parametrize("vcpu,intid,ret", [
    (None, 3, EINVAL),        # private INTID without a vCPU
    (None, 20, EINVAL),
    (5, 20, EINVAL),          # no such vCPU
    (None, 64, EINVAL),       # beyond nr_irqs
    (None, 1020, EINVAL),     # special INTIDs
    (None, 1023, EINVAL),
    (None, 8192, EINVAL),     # no LPIs
    (0, 20, 0),
    (None, 63, 0),
    (1, 40, 0),               # the vCPU is ignored for SPIs
])
def test_inject_validation(model, vcpu, intid, ret):
    vgic, _vm = make_vgic(model, 2)
    assert vgic.kvm_vgic_inject_irq(vcpu, intid, True, None) == ret


@pytest.mark.parametrize("model", [V2, V3])
def test_owner_mismatch_is_silently_ignored(model):
    vgic, _vm = make_vgic(model, 1)
    guest_enable(vgic, 0)
    timer = object()
    assert vgic.kvm_vgic_set_owner(0, 27, timer) == 0
    assert vgic.kvm_vgic_inject_irq(0, 27, True, None) == 0          # userspace: ignored
    assert vgic.kvm_vgic_inject_irq(0, 27, True, object()) == 0      # another device: ignored
    assert not vgic.get_irq(0, 27).line_level
    assert vgic.kvm_vgic_inject_irq(0, 27, True, timer) == 0
    assert vgic.get_irq(0, 27).line_level


@pytest.mark.parametrize("model", [V2, V3])
def test_level_unchanged_and_edge_zero_are_no_ops(model):
    vgic, vm = make_vgic(model, 1)
    guest_enable(vgic, 0)
    enable_spi(vgic, 40, edge=False)
    enable_spi(vgic, 41, edge=True)
    assert vgic.kvm_vgic_inject_irq(None, 40, True, None) == 0
    kicks = vm.kicks()[0]
    assert vgic.kvm_vgic_inject_irq(None, 40, True, None) == 0       # unchanged level
    assert vgic.kvm_vgic_inject_irq(None, 41, False, None) == 0      # edge lowered
    assert vm.kicks()[0] == kicks
    assert not vgic.get_irq(None, 41).pending_latch


@pytest.mark.parametrize("model", [V2, V3])
def test_a_high_line_stays_pending_when_the_guest_makes_it_level(model):
    """The input wire is remembered whatever the trigger: a level asserted while the SPI was
    still edge (its reset state) is pending once the guest configures it level — even after
    the guest cleared the edge latch — and not once the line has dropped."""
    vgic, _vm = make_vgic(model, 1)
    guest_enable(vgic, 0)
    assert vgic.kvm_vgic_inject_irq(None, 40, True, None) == 0    # SPIs reset edge
    assert vgic.kvm_vgic_inject_irq(None, 41, True, None) == 0
    assert vgic.kvm_vgic_inject_irq(None, 41, False, None) == 0   # a pulse: the wire is low
    for intid in (40, 41):
        vgic.dist_mmio_write(0, G.GICD_ICPENDR + 4, 4, 1 << (intid - 32))
        enable_spi(vgic, intid, edge=False)
    assert vgic.get_irq(None, 40).line_level and 40 in [i.intid for i in vgic.cpus[0].ap_list]
    assert not vgic.get_irq(None, 41).line_level
    assert 41 not in [i.intid for i in vgic.cpus[0].ap_list]


def test_v3_before_init_is_busy_and_v2_initialises_lazily():
    v3 = kvm_vgic_create(FakeVm(1), V3)
    assert v3.kvm_vgic_inject_irq(None, 40, True, None) == EBUSY
    assert not v3.initialized
    v2 = kvm_vgic_create(FakeVm(1), V2)
    assert v2.kvm_vgic_inject_irq(None, 40, True, None) == 0
    assert v2.initialized and v2.nr_irqs == 256 and v2.get_irq(None, 40).pending_latch
    with pytest.raises(KvmError) as info:
        VgicDevice(v2).set_attr(uapi.KVM_DEV_ARM_VGIC_GRP_NR_IRQS, 0, 128)
    assert info.value.errno == errno.EBUSY


@pytest.mark.parametrize("model", [V2, V3])
def test_injection_queues_and_kicks_the_target_once(model):
    vgic, vm = make_vgic(model, 2)
    guest_enable(vgic, 0)
    enable_spi(vgic, 40)
    before = vm.kicks()
    vgic.kvm_vgic_inject_irq(None, 40, True, None)
    assert [irq.intid for irq in vgic.cpus[0].ap_list] == [40]
    assert vm.kicks() == [before[0] + 1, before[1]]


@pytest.mark.parametrize("model", [V2, V3])
def test_lowering_a_queued_level_kicks_its_holder(model):
    """A withdrawn interrupt must leave the LRs promptly: the holder is kicked to resync."""
    vgic, vm = make_vgic(model, 1)
    guest_enable(vgic, 0)
    enable_spi(vgic, 40, edge=False)
    vgic.kvm_vgic_inject_irq(None, 40, True, None)
    vgic.kvm_vgic_flush_hwstate(0)
    kicks = vm.kicks()[0]
    vgic.kvm_vgic_inject_irq(None, 40, False, None)
    assert vm.kicks()[0] == kicks + 1
    vgic.kvm_vgic_sync_hwstate(0)
    assert vgic.cpus[0].ap_list == []


@pytest.mark.parametrize("model", [V2, V3])
def test_kicks_happen_outside_the_lock(model):
    vgic, vm = make_vgic(model, 1)
    guest_enable(vgic, 0)
    enable_spi(vgic, 40)
    held = []

    def kick():
        probe = threading.Thread(target=lambda: held.append(not _try_lock(vgic)))
        probe.start()
        probe.join()

    vm.vcpus()[0].kick = kick
    vgic.kvm_vgic_inject_irq(None, 40, True, None)
    assert held == [False]


def _try_lock(vgic) -> bool:
    if vgic.lock._rlock.acquire(blocking=False):
        vgic.lock._rlock.release()
        return True
    return False


@pytest.mark.parametrize("model", [V2, V3])
def test_enabling_the_distributor_queues_what_became_pending(model):
    vgic, _vm = make_vgic(model, 2)
    enable_spi(vgic, 40)
    vgic.kvm_vgic_inject_irq(None, 40, True, None)      # distributor still disabled
    assert all(cpu.ap_list == [] for cpu in vgic.cpus)
    guest_enable(vgic, 0)                                # GICD_CTLR 0 -> 1
    assert [irq.intid for irq in vgic.cpus[0].ap_list] == [40]
    assert vgic.kvm_vgic_vcpu_pending_irq(0)


def test_pending_spi_migrates_at_prune_and_kicks_both():
    vgic, vm = make_vgic(V2, 2)
    guest_enable(vgic, 0)
    enable_spi(vgic, 40)
    vgic.kvm_vgic_inject_irq(None, 40, True, None)
    assert vgic.get_irq(None, 40).vcpu == 0
    before = vm.kicks()
    vgic.dist_mmio_write(0, G.GICD_ITARGETSR + 40, 1, 0b10)
    assert vm.kicks()[0] == before[0] + 1                 # the holder: go prune
    vgic.kvm_vgic_sync_hwstate(0)
    assert vgic.get_irq(None, 40).vcpu == 1 and vm.kicks()[1] == before[1] + 1
    assert [irq.intid for irq in vgic.cpus[1].ap_list] == [40]


def test_active_spi_does_not_migrate():
    vgic, _vm = make_vgic(V2, 2)
    guest_enable(vgic, 0)
    enable_spi(vgic, 40)
    vgic.kvm_vgic_inject_irq(None, 40, True, None)
    vgic.kvm_vgic_flush_hwstate(0)
    assert vgic.cpu_mmio_read(0, G.GICC_IAR, 4) == 40
    vgic.kvm_vgic_sync_hwstate(0)
    vgic.dist_mmio_write(0, G.GICD_ITARGETSR + 40, 1, 0b10)
    vgic.kvm_vgic_flush_hwstate(0)
    vgic.kvm_vgic_sync_hwstate(0)
    assert vgic.get_irq(None, 40).vcpu == 0               # active interrupts never move


@pytest.mark.parametrize("model", [V2, V3])
def test_vcpu_pending_irq_for_wfi(model):
    vgic, _vm = make_vgic(model, 1)
    enable_spi(vgic, 40, priority=0x80)
    vgic.kvm_vgic_inject_irq(None, 40, True, None)
    assert not vgic.kvm_vgic_vcpu_pending_irq(0)          # distributor disabled
    guest_enable(vgic, 0, pmr=0x80)
    assert not vgic.kvm_vgic_vcpu_pending_irq(0)          # masked by PMR
    guest_enable(vgic, 0, pmr=0x88)
    assert vgic.kvm_vgic_vcpu_pending_irq(0)
    vgic.kvm_vgic_flush_hwstate(0)
    if model == V2:
        iar = vgic.cpu_mmio_read(0, G.GICC_IAR, 4)
    else:
        iar = vgic.vgic_v3_sysreg_read(0, S.ICC_IAR1_EL1.encoding)
    assert iar == 40
    vgic.kvm_vgic_sync_hwstate(0)
    assert not vgic.kvm_vgic_vcpu_pending_irq(0)          # active now


@pytest.mark.parametrize("model", [V2, V3])
def test_set_owner_rules(model):
    fresh = kvm_vgic_create(FakeVm(1), model)
    assert fresh.kvm_vgic_set_owner(0, 27, object()) == EAGAIN
    vgic, _vm = make_vgic(model, 1)
    owner = object()
    assert vgic.kvm_vgic_set_owner(0, 3, owner) == EINVAL     # SGI
    assert vgic.kvm_vgic_set_owner(0, 64, owner) == EINVAL    # not a valid SPI
    assert vgic.kvm_vgic_set_owner(0, 27, owner) == 0
    assert vgic.kvm_vgic_set_owner(0, 27, owner) == 0         # same owner again
    assert vgic.kvm_vgic_set_owner(0, 27, object()) == EEXIST
    assert vgic.kvm_vgic_set_owner(0, 40, owner) == 0


@pytest.mark.parametrize("model", [V2, V3])
def test_mapped_irq_helpers(model):
    vgic, _vm = make_vgic(model, 1)
    assert vgic.kvm_vgic_map_phys_irq(0, 27, 27, lambda _v: True) == 0
    irq = vgic.get_irq(0, 27)
    irq.active = irq.pending_latch = irq.line_level = True
    assert vgic.kvm_vgic_map_is_active(0, 27)
    vgic.kvm_vgic_reset_mapped_irq(0, 27)
    assert not (irq.active or irq.pending_latch or irq.line_level)
    assert vgic.kvm_vgic_unmap_phys_irq(0, 27) == 0 and not irq.hw
    irq.active = True
    assert not vgic.kvm_vgic_map_is_active(0, 27)           # not HW any more
    assert kvm_vgic_create(FakeVm(1), model).kvm_vgic_unmap_phys_irq(0, 27) == EAGAIN
    assert not kvm_vgic_create(FakeVm(1), model).kvm_vgic_map_is_active(0, 27)


def test_guest_pending_and_clear_on_hw_irq_drive_phys_active():
    vgic, _vm = make_vgic(V2, 1)
    phys = []
    vgic.kvm_vgic_map_phys_irq(0, 27, 27, lambda _v: False, phys.append)
    vgic.dist_mmio_write(0, G.GICD_ISPENDR, 4, 1 << 27)
    vgic.dist_mmio_write(0, G.GICD_ICPENDR, 4, 1 << 27)
    vgic.dist_mmio_write(0, G.GICD_ISACTIVER, 4, 1 << 27)
    vgic.dist_mmio_write(0, G.GICD_ICACTIVER, 4, 1 << 27)
    assert phys == [True, False, True, False]
    assert vgic.dist_mmio_read(0, G.GICD_ISPENDR, 4) == 0   # a mapped level: the physical line


def test_concurrent_injection_and_run_loop():
    """Several injector threads against a flush/ack/EOI/sync loop: every edge is delivered
    at least once and nothing is lost or left behind."""
    vgic, _vm = make_vgic(V3, 1, nr_irqs=96)
    guest_enable(vgic, 0)
    for intid in range(32, 96):
        enable_spi(vgic, intid)
    stop = threading.Event()
    delivered: set[int] = set()

    def injector(base):
        for intid in range(base, base + 16):
            assert vgic.kvm_vgic_inject_irq(None, intid, True, None) == 0

    threads = [threading.Thread(target=injector, args=(b,)) for b in (32, 48, 64, 80)]
    for thread in threads:
        thread.start()
    for _ in range(500):
        vgic.kvm_vgic_flush_hwstate(0)
        while (intid := vgic.vgic_v3_sysreg_read(0, S.ICC_IAR1_EL1.encoding)) != 1023:
            delivered.add(intid)
            vgic.vgic_v3_sysreg_write(0, S.ICC_EOIR1_EL1.encoding, intid)
        vgic.kvm_vgic_sync_hwstate(0)
        if len(delivered) == 64 and not any(t.is_alive() for t in threads):
            break
    stop.set()
    for thread in threads:
        thread.join()
    assert delivered == set(range(32, 96))
    assert vgic.cpus[0].ap_list == []
