"""List registers: encode/fold tables, and flush/sync sequences (overflow, HW bit, multi-source
SGIs, level EOI notifications, edges re-raised while active)."""

from __future__ import annotations

import threading

import pytest

from softkvm.arch import gic as G
from softkvm.arch import sysregs as S
from softkvm.kvm.vgic.arm_vgic import VGIC_CONFIG_EDGE, VGIC_CONFIG_LEVEL, VgicIrq
from softkvm.kvm.vgic.vgic_v2 import vgic_v2_fold_lr, vgic_v2_populate_lr
from softkvm.kvm.vgic.vgic_v3 import vgic_v3_fold_lr, vgic_v3_populate_lr
from tests.kvm.vgic.fakes import V2, V3, enable_spi, guest_enable, make_vgic

P2, A2, EOI2, G2, HW2 = 1 << 28, 1 << 29, 1 << 19, 1 << 30, 1 << 31
P3, A3, EOI3, G3, HW3 = 1 << 62, 1 << 63, 1 << 41, 1 << 60, 1 << 61


def prio2(p: int) -> int:
    return (p >> 3) << 23


def prio3(p: int) -> int:
    return p << 48


EDGE, LEVEL = VGIC_CONFIG_EDGE, VGIC_CONFIG_LEVEL

# (name, VgicIrq fields, expected GICH_LR, expected ICH_LR, fields expected after populate)
POPULATE = [
    ("edge pending", dict(intid=40, pending_latch=True, priority=0xA0),
     40 | P2 | prio2(0xA0), 40 | P3 | prio3(0xA0), dict(pending_latch=False)),
    ("edge pending group 1", dict(intid=40, pending_latch=True, group=1),
     40 | P2 | G2, 40 | P3 | G3, dict(pending_latch=False)),
    ("level pending asks EOI", dict(intid=41, config=LEVEL, line_level=True, priority=0x08),
     41 | P2 | EOI2 | prio2(0x08), 41 | P3 | EOI3 | prio3(0x08), dict(line_level=True)),
    ("level active+pending: no P+A", dict(intid=41, config=LEVEL, line_level=True, active=True),
     41 | A2 | EOI2, 41 | A3 | EOI3, dict(line_level=True)),
    ("edge active+pending: A+P", dict(intid=42, pending_latch=True, active=True),
     42 | A2 | P2, 42 | A3 | P3, dict(pending_latch=False)),
    ("HW level pending: pINTID, no EOI, line dropped",
     dict(intid=27, config=LEVEL, line_level=True, hw=True, hwintid=27),
     27 | P2 | HW2 | (27 << 10), 27 | P3 | HW3 | (27 << 32), dict(line_level=False)),
    ("HW active+pending: never P+A",
     dict(intid=27, config=LEVEL, line_level=True, hw=True, hwintid=26, active=True),
     27 | A2 | HW2 | (26 << 10), 27 | A3 | HW3 | (26 << 32), dict(line_level=True)),
    ("HW with software resampling behaves as a plain level",
     dict(intid=27, config=LEVEL, line_level=True, hw=True, hwintid=27, sw_resample=True),
     27 | P2 | EOI2, 27 | P3 | EOI3, dict(line_level=False)),
    ("inactive, not pending: empty state", dict(intid=43, priority=0xF8),
     43 | prio2(0xF8), 43 | prio3(0xF8), dict()),
]


@pytest.mark.parametrize("name,fields,lr_v2,lr_v3,after", POPULATE, ids=[p[0] for p in POPULATE])
def test_populate_v2(name, fields, lr_v2, lr_v3, after):
    irq = VgicIrq(**fields)
    assert hex(vgic_v2_populate_lr(irq)) == hex(lr_v2)
    for key, value in after.items():
        assert getattr(irq, key) == value, key


@pytest.mark.parametrize("name,fields,lr_v2,lr_v3,after", POPULATE, ids=[p[0] for p in POPULATE])
def test_populate_v3(name, fields, lr_v2, lr_v3, after):
    irq = VgicIrq(**fields)
    assert hex(vgic_v3_populate_lr(irq)) == hex(lr_v3)
    for key, value in after.items():
        assert getattr(irq, key) == value, key


@pytest.mark.parametrize("fields,lr,after", [
    # three sources: the lowest goes first, the rest keep the latch and ask EOI maintenance
    (dict(intid=5, pending_latch=True, source=0b1110), 5 | P2 | EOI2 | (1 << 10),
     dict(source=0b1100, pending_latch=True)),
    (dict(intid=5, pending_latch=True, source=0b1000), 5 | P2 | (3 << 10),
     dict(source=0, pending_latch=False)),
    # active from source 2, one more pending: only the active one, EOI to come back for it
    (dict(intid=5, pending_latch=True, source=0b0001, active=True, active_source=2),
     5 | A2 | EOI2 | (2 << 10), dict(source=0b0001, pending_latch=True)),
])
def test_populate_v2_sgi_sources(fields, lr, after):
    irq = VgicIrq(**fields)
    assert hex(vgic_v2_populate_lr(irq)) == hex(lr)
    for key, value in after.items():
        assert getattr(irq, key) == value, key


# (name, VgicIrq fields, LR state (P=1, A=2), fields after the fold)
FOLD = [
    ("edge not taken keeps its latch", dict(intid=40), G.LR_STATE_PENDING,
     dict(pending_latch=True, active=False)),
    ("acknowledged becomes active", dict(intid=40), G.LR_STATE_ACTIVE,
     dict(active=True, pending_latch=False)),
    ("deactivated level drops the soft latch", dict(intid=41, config=LEVEL, pending_latch=True,
                                                   active=True), G.LR_STATE_INVALID,
     dict(active=False, pending_latch=False)),
    ("level still pending keeps the latch", dict(intid=41, config=LEVEL, pending_latch=True),
     G.LR_STATE_PENDING, dict(pending_latch=True)),
]


@pytest.mark.parametrize("model", ["v2", "v3"])
@pytest.mark.parametrize("name,fields,state,after", FOLD, ids=[f[0] for f in FOLD])
def test_fold(model, name, fields, state, after):
    irq = VgicIrq(**fields)
    layout, fold = (G.GICH_LR, vgic_v2_fold_lr) if model == "v2" else (G.ICH_LR, vgic_v3_fold_lr)
    fold(irq, layout.state.put(layout.vintid.val(irq.intid), state))
    for key, value in after.items():
        assert getattr(irq, key) == value, key


def test_fold_v2_sgi_records_source():
    irq = VgicIrq(intid=3)
    vgic_v2_fold_lr(irq, 3 | P2 | (3 << 10))
    assert irq.source == 0b1000 and irq.pending_latch
    vgic_v2_fold_lr(irq, 3 | A2 | (2 << 10))
    assert irq.active and irq.active_source == 2


def test_fold_mapped_level_resamples_and_releases_phys_active():
    released = []
    irq = VgicIrq(intid=27, config=LEVEL, hw=True, hwintid=27,
                  get_input_level=lambda _vintid: False, set_phys_active=released.append)
    vgic_v3_fold_lr(irq, 27 | P3 | HW3 | (27 << 32))   # never taken, and the timer went quiet
    assert irq.line_level is False and released == [False]


# --- flush/sync sequences ---------------------------------------------------------------------


def iar(vgic, vcpu=0):
    if vgic.is_v2:
        return vgic.cpu_mmio_read(vcpu, G.GICC_IAR, 4)
    return vgic.vgic_v3_sysreg_read(vcpu, S.ICC_IAR1_EL1.encoding)


def eoir(vgic, value, vcpu=0):
    if vgic.is_v2:
        vgic.cpu_mmio_write(vcpu, G.GICC_EOIR, 4, value)
    else:
        assert vgic.vgic_v3_sysreg_write(vcpu, S.ICC_EOIR1_EL1.encoding, value)


def lr_fields(vif):
    lay = vif.layout
    return [(lay.vintid.get(lr), lay.state.get(lr)) for lr in vif.lr]


@pytest.mark.parametrize("model", [V2, V3])
def test_overflow_six_pending_four_lrs(model):
    vgic, _vm = make_vgic(model, 1)
    guest_enable(vgic, 0)
    for intid, prio in zip(range(32, 38), (0x60, 0x50, 0x40, 0x30, 0x20, 0x10), strict=True):
        enable_spi(vgic, intid, prio)
        vgic.kvm_vgic_inject_irq(None, intid, True, None)
    vif = vgic.vcpu_if(0)
    vgic.kvm_vgic_flush_hwstate(0)
    assert lr_fields(vif) == [(i, G.LR_STATE_PENDING) for i in (37, 36, 35, 34)]
    assert [vif.layout.get_priority(lr) for lr in vif.lr] == [0x10, 0x20, 0x30, 0x40]
    assert G.HCR.UIE.get(vif.hcr)
    for expected in (37, 36):
        assert iar(vgic) == expected
        eoir(vgic, expected)
        assert not vif.maintenance()       # two or more valid LRs left
    assert iar(vgic) == 35
    eoir(vgic, 35)
    assert vif.maintenance() and G.MISR.U.get(vif.misr())
    vgic.kvm_vgic_sync_hwstate(0)
    assert not G.HCR.UIE.get(vif.hcr) and vif.lr == [0, 0, 0, 0]
    vgic.kvm_vgic_flush_hwstate(0)
    assert lr_fields(vif) == [(34, 1), (33, 1), (32, 1), (0, 0)]
    assert not G.HCR.UIE.get(vif.hcr)


def _timer_ppi(vgic, line):
    """PPI 27 owned by a fake timer and mapped to a 'physical' line read from ``line``."""
    timer, phys_active = object(), []
    assert vgic.kvm_vgic_set_owner(0, 27, timer) == 0
    assert vgic.kvm_vgic_map_phys_irq(0, 27, 27, lambda _v: line["level"], phys_active.append) == 0
    if vgic.is_v2:
        vgic.dist_mmio_write(0, G.GICD_ISENABLER, 4, 1 << 27)
    else:
        vgic.redist_mmio_write(0, G.GICR_SGI_BASE + G.GICR_ISENABLER0, 4, 1 << 27)
    return timer, phys_active


@pytest.mark.parametrize("model", [V2, V3])
def test_hw_mapped_timer_ppi(model):
    vgic, _vm = make_vgic(model, 1)
    guest_enable(vgic, 0)
    line = {"level": False}
    timer, phys_active = _timer_ppi(vgic, line)
    irq = vgic.get_irq(0, 27)
    line["level"] = True
    assert vgic.kvm_vgic_inject_irq(0, 27, True, None) == 0 and not irq.line_level  # not owner
    assert vgic.kvm_vgic_inject_irq(0, 27, True, timer) == 0 and irq.line_level
    vif = vgic.vcpu_if(0)
    lay = vif.layout
    vgic.kvm_vgic_flush_hwstate(0)
    lr = vif.lr[0]
    assert (lay.hw.get(lr), lay.pintid.get(lr), lay.state.get(lr)) == (1, 27, G.LR_STATE_PENDING)
    assert not irq.line_level            # only rising edges of a mapped line are seen
    assert iar(vgic) == 27
    vgic.kvm_vgic_sync_hwstate(0)
    assert irq.active and vgic.kvm_vgic_map_is_active(0, 27)
    vgic.kvm_vgic_inject_irq(0, 27, True, timer)   # the timer still fires
    vgic.kvm_vgic_flush_hwstate(0)
    assert lay.state.get(vif.lr[0]) == G.LR_STATE_ACTIVE   # never P+A for HW
    eoir(vgic, 27)
    assert phys_active == [False]        # the guest's EOI deactivated the physical PPI
    assert lay.state.get(vif.lr[0]) == G.LR_STATE_INVALID and not vif.maintenance()
    line["level"] = False
    vgic.kvm_vgic_sync_hwstate(0)
    assert not irq.active and not irq.line_level and phys_active == [False, False]
    assert not vgic.kvm_vgic_map_is_active(0, 27)


def test_multi_source_v2_sgi_one_per_flush():
    vgic, _vm = make_vgic(V2, 4)
    guest_enable(vgic, 0)
    for source in (1, 2, 3):
        sgir = G.GICD_SGIR_F.SGIINTID.val(5) | G.GICD_SGIR_F.CPUTargetList.val(1)
        vgic.dist_mmio_write(source, G.GICD_SGIR, 4, sgir)
    vif = vgic.vcpu_if(0)
    for source, more in ((1, True), (2, True), (3, False)):
        vgic.kvm_vgic_flush_hwstate(0)
        assert vif.lr[1:] == [0, 0, 0]
        lr = vif.lr[0]
        assert (G.GICH_LR.cpuid.get(lr), bool(G.GICH_LR.eoi.get(lr))) == (source, more)
        value = iar(vgic)
        assert value == 5 | source << 10
        eoir(vgic, value)
        assert vif.maintenance() == more     # EOI maintenance brings the next source
        vgic.kvm_vgic_sync_hwstate(0)
    assert vgic.cpus[0].ap_list == []


@pytest.mark.parametrize("model", [V2, V3])
def test_level_spi_eoi_notifies_ack_with_spi_index(model):
    vgic, _vm = make_vgic(model, 1)
    guest_enable(vgic, 0)
    seen = []

    def notifier(spi):
        held = _held_elsewhere(vgic)
        seen.append((spi, held))

    vgic.register_ack_notifier(notifier)
    enable_spi(vgic, 45, edge=False)
    vgic.kvm_vgic_inject_irq(None, 45, True, None)
    vif = vgic.vcpu_if(0)
    vgic.kvm_vgic_flush_hwstate(0)
    assert vif.layout.eoi.get(vif.lr[0])
    eoir(vgic, iar(vgic))
    assert G.MISR.EOI.get(vif.misr()) and seen == []
    vgic.kvm_vgic_sync_hwstate(0)
    assert seen == [(13, False)]          # SPI index = INTID - 32, called outside the lock
    # the line is still high: pending again at the next flush
    vgic.kvm_vgic_flush_hwstate(0)
    assert vif.layout.state.get(vif.lr[0]) == G.LR_STATE_PENDING


def _held_elsewhere(vgic) -> bool:
    """Is the vGIC lock held (by anyone)? Probe from another thread."""
    result = []

    def probe():
        got = vgic.lock._rlock.acquire(blocking=False)
        if got:
            vgic.lock._rlock.release()
        result.append(not got)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return result[0]


@pytest.mark.parametrize("model", [V2, V3])
def test_edge_reraised_while_active_is_active_and_pending(model):
    vgic, vm = make_vgic(model, 1)
    guest_enable(vgic, 0)
    enable_spi(vgic, 40)
    vgic.kvm_vgic_inject_irq(None, 40, True, None)
    vif = vgic.vcpu_if(0)
    vgic.kvm_vgic_flush_hwstate(0)
    assert iar(vgic) == 40
    kicks = vm.kicks()[0]
    vgic.kvm_vgic_inject_irq(None, 40, True, None)
    assert vm.kicks()[0] == kicks + 1      # no maintenance will come: the vCPU is kicked
    vgic.kvm_vgic_sync_hwstate(0)
    vgic.kvm_vgic_flush_hwstate(0)
    assert vif.layout.state.get(vif.lr[0]) == G.LR_STATE_PENDING_ACTIVE


@pytest.mark.parametrize("model", [V2, V3])
def test_flush_of_empty_ap_list_and_prune_of_disabled(model):
    vgic, _vm = make_vgic(model, 1)
    guest_enable(vgic, 0)
    vgic.kvm_vgic_flush_hwstate(0)
    assert vgic.vcpu_if(0).lr == [0] * 4 and vgic.cpus[0].used_lrs == 0
    enable_spi(vgic, 40)
    vgic.kvm_vgic_inject_irq(None, 40, True, None)
    vgic.dist_mmio_write(0, G.GICD_ICENABLER + 4, 4, 1 << 8)   # disabled while queued
    vgic.kvm_vgic_sync_hwstate(0)
    assert vgic.cpus[0].ap_list == []
    vgic.kvm_vgic_flush_hwstate(0)
    assert vgic.vcpu_if(0).lr == [0] * 4


def test_unrouted_spi_is_not_queued():
    """GICv3: an IROUTER naming no vCPU leaves the interrupt pending nowhere."""
    vgic, _vm = make_vgic(V3, 2)
    guest_enable(vgic, 0)
    enable_spi(vgic, 40)
    vgic.dist_mmio_write(0, G.GICD_IROUTER + 8 * 40, 8, 0x0505)
    assert vgic.get_irq(None, 40).target_vcpu is None
    vgic.kvm_vgic_inject_irq(None, 40, True, None)
    assert all(cpu.ap_list == [] for cpu in vgic.cpus)
    vgic.dist_mmio_write(0, G.GICD_IROUTER + 8 * 40, 8, 1)   # vCPU 1 (MPIDR Aff0 = 1)
    assert [irq.intid for irq in vgic.cpus[1].ap_list] == [40]


# --- parked list registers: exits that change nothing keep them in place -----------------------


def _exit_and_reenter(vgic, timer, line):
    """What one exit to userspace does with the vGIC: sync, the timer's load-time injection of
    its level, flush."""
    vgic.kvm_vgic_sync_hwstate(0)
    vgic.kvm_vgic_inject_irq(0, 27, line["level"], timer)
    vgic.kvm_vgic_flush_hwstate(0)


@pytest.mark.parametrize("model", [V2, V3])
def test_untouched_lrs_stay_parked_across_exits(model):
    """A guest with interrupts masked exits again and again (printing, say): the LRs it never
    touched stay as they were, and the state seen through the lock is the folded one."""
    vgic, vm = make_vgic(model, 1)
    vm.ran = True
    guest_enable(vgic, 0)
    enable_spi(vgic, 40)
    line = {"level": True}
    timer, phys_active = _timer_ppi(vgic, line)
    vgic.kvm_vgic_inject_irq(0, 27, True, timer)
    vgic.kvm_vgic_inject_irq(None, 40, True, None)   # an edge
    vif, cpu = vgic.vcpu_if(0), vgic.cpus[0]
    vgic.kvm_vgic_flush_hwstate(0)
    flushed = list(vif.lr)
    for _ in range(3):
        _exit_and_reenter(vgic, timer, line)
        assert cpu.parked_gen is None and vif.lr == flushed   # reused, not rebuilt
    vgic.kvm_vgic_sync_hwstate(0)
    assert cpu.parked_gen is not None and vgic.lock.unpark is not None
    edge, ppi = vgic.get_irq(0, 40), vgic.get_irq(0, 27)
    assert not edge.pending_latch and ppi.line_level   # as the flush left them (+ resample)
    assert vgic.dist_mmio_read(0, G.GICD_ISPENDR + 4, 4) & 1 << 8   # the lock folds first
    assert cpu.parked_gen is None and vgic.lock.unpark is None and edge.pending_latch
    assert vif.lr == [0] * len(vif.lr) and phys_active == []
    vgic.kvm_vgic_flush_hwstate(0)
    assert sorted(vif.lr) == sorted(flushed)


@pytest.mark.parametrize("model", [V2, V3])
def test_lrs_are_folded_when_the_guest_acts_or_the_state_moves(model):
    vgic, vm = make_vgic(model, 1)
    vm.ran = True
    guest_enable(vgic, 0)
    enable_spi(vgic, 40)
    enable_spi(vgic, 41)
    line = {"level": True}
    timer, phys_active = _timer_ppi(vgic, line)
    vgic.kvm_vgic_inject_irq(0, 27, True, timer)
    cpu = vgic.cpus[0]
    vgic.kvm_vgic_flush_hwstate(0)
    vgic.kvm_vgic_inject_irq(None, 40, True, None)   # during the run: state moved
    vgic.kvm_vgic_sync_hwstate(0)
    assert cpu.parked_gen is None
    vgic.kvm_vgic_flush_hwstate(0)
    assert iar(vgic) in (27, 40)                     # the guest acknowledges one
    vgic.kvm_vgic_sync_hwstate(0)
    assert cpu.parked_gen is None
    vgic.kvm_vgic_flush_hwstate(0)
    vgic.kvm_vgic_sync_hwstate(0)                    # untouched now: parked
    assert cpu.parked_gen is not None
    vgic.kvm_vgic_inject_irq(None, 41, True, None)   # between exit and entry: folded first
    assert cpu.parked_gen is None
    vgic.kvm_vgic_flush_hwstate(0)
    assert 41 in [vgic.vcpu_if(0).layout.vintid.get(lr) for lr in vgic.vcpu_if(0).lr]


@pytest.mark.parametrize("model", [V2, V3])
def test_a_mapped_line_gone_low_is_resampled_not_parked(model):
    """The timer was reprogrammed while the guest had its interrupt pending: the sync must see
    the line low now and release the physical PPI."""
    vgic, vm = make_vgic(model, 1)
    vm.ran = True
    guest_enable(vgic, 0)
    line = {"level": True}
    timer, phys_active = _timer_ppi(vgic, line)
    vgic.kvm_vgic_inject_irq(0, 27, True, timer)
    vgic.kvm_vgic_flush_hwstate(0)
    line["level"] = False
    vgic.kvm_vgic_sync_hwstate(0)
    assert vgic.cpus[0].parked_gen is None and phys_active == [False]
    assert not vgic.get_irq(0, 27).line_level


def test_another_vcpus_lock_use_folds_parked_lrs_first():
    vgic, vm = make_vgic(V3, 2)
    vm.ran = True
    guest_enable(vgic, 0)
    guest_enable(vgic, 1)
    enable_spi(vgic, 40)
    vgic.kvm_vgic_inject_irq(None, 40, True, None)
    vgic.kvm_vgic_flush_hwstate(0)
    vgic.kvm_vgic_sync_hwstate(0)
    assert vgic.cpus[0].parked_gen is not None
    vgic.kvm_vgic_flush_hwstate(1)                   # vCPU 1 enters: vCPU 0's LRs fold
    assert vgic.cpus[0].parked_gen is None and vgic.get_irq(0, 40).pending_latch


@pytest.mark.parametrize("model", [V2, V3])
def test_active_state_accesses_fold_the_lrs_of_vcpus_running_in_parallel(model):
    """vCPU 1 runs (its LRs live) and has acknowledged SPI 40: vCPU 0 reads ISACTIVER and sees
    it active, then clears it through ICACTIVER, and vCPU 1's refilled LRs no longer hold it
    active (KVM halts the guest around such accesses); vCPU 1 is kicked to re-drive its line."""
    vgic, vm = make_vgic(model, 2)
    vm.ran = True
    guest_enable(vgic, 0)
    guest_enable(vgic, 1)
    enable_spi(vgic, 40)
    route = (G.GICD_ITARGETSR + 40, 1, 1 << 1) if vgic.is_v2 else (G.GICD_IROUTER + 8 * 40, 8, 1)
    vgic.dist_mmio_write(0, route[0], route[1], route[2])
    vgic.kvm_vgic_inject_irq(None, 40, True, None)
    vgic.kvm_vgic_flush_hwstate(1)
    assert iar(vgic, 1) == 40 and vgic.cpus[1].live
    kicks = vm.kicks()[1]
    bit = 1 << (40 - 32)
    assert vgic.dist_mmio_read(0, G.GICD_ISACTIVER + 4, 4) == bit
    assert vgic.cpus[1].live and vm.kicks()[1] > kicks
    vif = vgic.vcpu_if(1)
    assert lr_fields(vif)[0] == (40, G.LR_STATE_ACTIVE)
    vgic.dist_mmio_write(0, G.GICD_ICACTIVER + 4, 4, bit)
    assert not vgic.get_irq(0, 40).active
    assert all(state == 0 for _intid, state in lr_fields(vif))
