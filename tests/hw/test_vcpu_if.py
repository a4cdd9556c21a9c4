"""The GIC virtual CPU interface hardware, programmed directly through its list registers:
signalling, IAR/EOIR/DIR/HPPIR/RPR, priority arithmetic, maintenance, VMCR layouts."""

from __future__ import annotations

import random

import pytest

from softkvm.arch import gic as G
from softkvm.arch import sysregs as S
from softkvm.hw.vcpu_if import VcpuInterface

P, A, PA = G.LR_STATE_PENDING, G.LR_STATE_ACTIVE, G.LR_STATE_PENDING_ACTIVE


def lr(vif: VcpuInterface, intid: int, prio: int = 0xA0, state: int = P, group: int | None = None,
       hw: int | None = None, eoi: int = 0, cpuid: int = 0) -> int:
    lay = vif.layout
    group = (1 if vif.version == 3 else 0) if group is None else group
    value = (lay.vintid.val(intid) | lay.state.val(state) | lay.group.val(group)
             | lay.eoi.val(eoi))
    if hw is not None:
        value |= lay.hw.val(1) | lay.pintid.val(hw)
    elif lay.cpuid is not None:
        value |= lay.cpuid.val(cpuid)
    return lay.put_priority(value, prio)


def make(version: int, *lrs_spec: dict, pmr: int = 0xF8, **kw) -> VcpuInterface:
    vif = VcpuInterface(version, **kw)
    vif.hcr = G.HCR.En.val(1)
    vif.vmcr.grpen0 = vif.vmcr.grpen1 = True
    vif.vmcr.pmr = pmr
    for i, spec in enumerate(lrs_spec):
        vif.lr[i] = lr(vif, **spec)
    return vif


def iar(vif: VcpuInterface) -> int:
    if vif.version == 2:
        return vif.gicv_read(G.GICC_IAR, 4)
    return vif.icc_read(S.ICC_IAR1_EL1.encoding)


def eoir(vif: VcpuInterface, value: int) -> None:
    if vif.version == 2:
        vif.gicv_write(G.GICC_EOIR, 4, value)
    else:
        vif.icc_write(S.ICC_EOIR1_EL1.encoding, value)


def state(vif: VcpuInterface, i: int = 0) -> int:
    return vif.layout.state.get(vif.lr[i])


BOTH = pytest.mark.parametrize("version", [2, 3])


@BOTH
@pytest.mark.parametrize("name,specs,vmcr,signal", [
    ("pending, enabled, unmasked", [dict(intid=40)], {}, True),
    ("interface disabled (HCR.En=0)", [dict(intid=40)], {"hcr": 0}, False),
    ("group disabled", [dict(intid=40)], {"grpen0": False, "grpen1": False}, False),
    ("masked by PMR (equal)", [dict(intid=40, prio=0xA0)], {"pmr": 0xA0}, False),
    ("active only", [dict(intid=40, state=A)], {}, False),
    ("pending+active is not signalled", [dict(intid=40, state=PA)], {}, False),
    ("running priority blocks equal", [dict(intid=40, prio=0x80)], {"ap": 0x80 >> 3}, False),
    ("running priority yields to higher", [dict(intid=40, prio=0x70)], {"ap": 0x80 >> 3}, True),
])
def test_signal(version, name, specs, vmcr, signal):
    vif = make(version, *specs)
    for key, value in vmcr.items():
        if key == "hcr":
            vif.hcr = value
        elif key == "ap":
            vif.ap0r[0] = 1 << value
        else:
            setattr(vif.vmcr, key, value)
    assert any(vif.signal()) == signal


@pytest.mark.parametrize("version,group,fiqen,expected", [
    (3, 1, False, (True, False)),
    (3, 0, False, (False, True)),       # GICv3: group 0 is FIQ
    (2, 0, False, (True, False)),       # GICv2 without FIQEn: group 0 is IRQ
    (2, 0, True, (False, True)),
    (2, 1, True, (True, False)),
])
def test_signal_line_by_group(version, group, fiqen, expected):
    vif = make(version, dict(intid=40, group=group))
    vif.vmcr.fiqen = fiqen
    assert vif.signal() == expected


@BOTH
def test_iar_takes_highest_priority_first_lr_on_ties(version):
    vif = make(version, dict(intid=40, prio=0x80), dict(intid=41, prio=0x40),
               dict(intid=42, prio=0x40))
    changes = []
    vif.on_change = lambda: changes.append(1)
    assert iar(vif) == 41
    assert [state(vif, i) for i in range(3)] == [P, A, P]
    assert changes and vif.running_priority() == 0x40
    assert (vif.ap0r[0] if version == 2 else vif.ap1r[0]) == 1 << (0x40 >> 3)
    assert iar(vif) == G.INTID_SPURIOUS              # 0x40 cannot preempt 0x40
    eoir(vif, 41)
    assert state(vif, 1) == G.LR_STATE_INVALID and vif.running_priority() == 0xFF
    assert iar(vif) == 42


@pytest.mark.parametrize("reg,lr_group,expected", [
    ("IAR0", 1, 1023), ("IAR1", 0, 1023), ("IAR0", 0, 40), ("IAR1", 1, 40),
    ("HPPIR0", 1, 1023), ("HPPIR1", 1, 40),
])
def test_v3_group_filters(reg, lr_group, expected):
    vif = make(3, dict(intid=40, group=lr_group))
    encoding = getattr(S, f"ICC_{reg}_EL1").encoding
    assert vif.icc_read(encoding) == expected


@pytest.mark.parametrize("offset,lr_group,ackctl,expected", [
    (G.GICC_IAR, 0, False, 40), (G.GICC_IAR, 1, False, 1022), (G.GICC_IAR, 1, True, 40),
    (G.GICC_AIAR, 1, False, 40), (G.GICC_AIAR, 0, False, 1023),
    (G.GICC_HPPIR, 1, False, 1022), (G.GICC_AHPPIR, 0, False, 1023),
])
def test_v2_group_filters(offset, lr_group, ackctl, expected):
    vif = make(2, dict(intid=40, group=lr_group))
    vif.vmcr.ackctl = ackctl
    assert vif.gicv_read(offset, 4) == expected


def test_v2_iar_reports_the_sgi_source():
    vif = make(2, dict(intid=3, cpuid=5))
    assert vif.gicv_read(G.GICC_IAR, 4) == 3 | 5 << 10
    vif.gicv_write(G.GICC_EOIR, 4, 3 | 4 << 10)           # wrong source: no LR matches
    assert state(vif) == A and vif.eoi_count == 1
    vif.ap0r[0] = 1 << (0xA0 >> 3)                        # put the dropped priority back
    vif.gicv_write(G.GICC_EOIR, 4, 3 | 5 << 10)
    assert state(vif) == G.LR_STATE_INVALID


@BOTH
def test_pmr_masks_acknowledge(version):
    vif = make(version, dict(intid=40, prio=0x80), pmr=0x80)
    assert iar(vif) == G.INTID_SPURIOUS and state(vif) == P
    vif.vmcr.pmr = 0x88
    assert iar(vif) == 40


@BOTH
def test_eoi_rules(version):
    deactivated = []
    vif = make(version, dict(intid=40, prio=0x80), dict(intid=27, prio=0x40, hw=26),
               deactivate_phys=deactivated.append)
    assert iar(vif) == 27 and iar(vif) == G.INTID_SPURIOUS
    eoir(vif, 40)                        # not the active one: priority drops, LR untouched
    assert vif.running_priority() == 0xFF and state(vif, 0) == P and vif.eoi_count == 1
    assert iar(vif) == 40
    eoir(vif, 27)                        # priority mismatch (0x80 running): ignored
    assert state(vif, 1) == A and deactivated == []
    vif.ap0r[0] = vif.ap1r[0] = 0
    (vif.ap1r if version == 3 else vif.ap0r)[0] = 1 << (0x40 >> 3)   # 27's priority active
    eoir(vif, 27)
    assert state(vif, 1) == G.LR_STATE_INVALID and deactivated == [26]   # HW: physical too
    eoir(vif, 1023)                      # special INTIDs are ignored entirely
    assert vif.eoi_count == 1


@BOTH
def test_eoimode1_and_dir(version):
    vif = make(version, dict(intid=40))
    vif.vmcr.eoim = True
    assert iar(vif) == 40
    eoir(vif, 40)
    assert state(vif) == A and vif.running_priority() == 0xFF
    deactivate = (lambda v: vif.gicv_write(G.GICC_DIR, 4, v)) if version == 2 else (
        lambda v: vif.icc_write(S.ICC_DIR_EL1.encoding, v))
    deactivate(41)
    assert vif.eoi_count == 1            # no such active LR: counted
    deactivate(40)
    assert state(vif) == G.LR_STATE_INVALID
    vif.vmcr.eoim = False
    vif.lr[0] = lr(vif, 40, state=A)
    deactivate(40)                       # EOImode 0: DIR does nothing
    assert state(vif) == A and vif.eoi_count == 1


@BOTH
def test_binary_point_and_group_priority(version):
    vif = make(version, dict(intid=40, prio=0x48), dict(intid=41, prio=0x40))
    vif.vmcr.bpr0 = 4 if version == 2 else 2      # v2 group 0: mask 0xE0
    vif.vmcr.bpr1 = 3 if version == 2 else 5      # v3 group 1: mask 0xE0
    assert iar(vif) == 41
    vif.lr[1] = 0
    vif.ap0r[0] = vif.ap1r[0] = 0
    vif.lr[2] = lr(vif, 42, prio=0x48)
    assert iar(vif) == 40                          # equal priorities: the first LR
    assert vif.running_priority() == 0x40          # the group priority of 0x48
    assert iar(vif) == G.INTID_SPURIOUS             # same group priority: no preemption


def test_cbpr_makes_bpr1_follow_bpr0():
    vif = make(3)
    vif.vmcr.bpr0 = 4
    vif.icc_write(S.ICC_CTLR_EL1.encoding, G.ICC_CTLR_F.CBPR.val(1))
    assert vif.icc_read(S.ICC_BPR1_EL1.encoding) == 5
    vif.icc_write(S.ICC_BPR1_EL1.encoding, 7)        # ignored while CBPR
    assert vif.vmcr.bpr1 == G.BPR1_MIN
    assert vif.group_priority(0xFF, 1) == 0xE0


@BOTH
@pytest.mark.parametrize("name,hcr,specs,vmcr,misr", [
    ("EOI: invalid, EOI=1, HW=0", {}, [dict(intid=40, state=0, eoi=1)], {}, G.MISR.EOI),
    ("no EOI for HW", {}, [dict(intid=40, state=0, hw=27)], {}, None),
    ("U: UIE and one valid LR", {"UIE": 1}, [dict(intid=40)], {}, G.MISR.U),
    ("no U with two valid LRs", {"UIE": 1}, [dict(intid=40), dict(intid=41)], {}, None),
    ("NP: NPIE and nothing pending", {"NPIE": 1}, [dict(intid=40, state=A)], {}, G.MISR.NP),
    ("LRENP: EOIcount", {"LRENPIE": 1, "EOIcount": 2}, [], {}, G.MISR.LRENP),
    ("VGrp0E", {"VGrp0EIE": 1}, [], {"grpen0": True}, G.MISR.VGrp0E),
    ("VGrp1D", {"VGrp1DIE": 1}, [], {"grpen0": True, "grpen1": False}, G.MISR.VGrp1D),
])
def test_maintenance(version, name, hcr, specs, vmcr, misr):
    vif = make(version, *specs)
    for field, value in hcr.items():
        vif.hcr = getattr(G.HCR, field).put(vif.hcr, value)
    for key, value in vmcr.items():
        setattr(vif.vmcr, key, value)
    assert vif.misr() == (misr.val(1) if misr else 0)
    assert vif.maintenance() == (misr is not None)
    vif.hcr = G.HCR.En.put(vif.hcr, 0)
    assert not vif.maintenance()


@BOTH
def test_maintenance_is_misr_on_random_states(version):
    """The short-cut ``maintenance()`` agrees with the MISR it does not build."""
    rng = random.Random(version)
    hcr_fields = ("En", "UIE", "LRENPIE", "NPIE", "VGrp0EIE", "VGrp0DIE", "VGrp1EIE", "VGrp1DIE")
    for _ in range(3000):
        vif = make(version)
        for name in hcr_fields:
            vif.hcr = getattr(G.HCR, name).put(vif.hcr, rng.random() < (0.8 if name == "En"
                                                                        else 0.3))
        vif.hcr = G.HCR.EOIcount.put(vif.hcr, rng.choice((0, 0, 1, 5)))
        vif.vmcr.grpen0, vif.vmcr.grpen1 = rng.random() < 0.5, rng.random() < 0.5
        lay = vif.layout
        for i in rng.sample(range(len(vif.lr)), rng.randint(0, len(vif.lr))):
            raw = lr(vif, 32 + i, state=rng.randint(0, 3), group=rng.randint(0, 1))
            raw = lay.eoi.put(raw, rng.random() < 0.3)
            vif.lr[i] = lay.hw.put(raw, rng.random() < 0.2)
        expected = bool(G.HCR.En.get(vif.hcr)) and vif.misr() != 0
        assert vif.maintenance() == expected, (hex(vif.hcr), [hex(x) for x in vif.lr])


@BOTH
def test_eisr_elrsr(version):
    vif = make(version, dict(intid=40, state=0, eoi=1), dict(intid=41), dict(intid=42, state=0))
    assert vif.eisr() == 0b0001
    assert vif.elrsr() == 0b1100


@pytest.mark.parametrize("version,raw", [
    (2, 0xF8000000 | 7 << 21 | 7 << 18 | 0x21F), (3, 0xF8000000 | 7 << 21 | 7 << 18 | 0x21F),
])
def test_vmcr_round_trip(version, raw):
    vif = VcpuInterface(version)
    vif.write_vmcr(raw)
    assert vif.read_vmcr() == raw
    assert vif.vmcr.pmr == 0xF8 and vif.vmcr.eoim and vif.vmcr.cbpr


@BOTH
def test_vmcr_zero_resets_binary_points_to_minimum(version):
    vif = VcpuInterface(version)
    vif.write_vmcr(0)
    assert (vif.vmcr.bpr0, vif.vmcr.bpr1, vif.vmcr.pmr) == (2, 3, 0)


def test_vmcr_v2_pmr_is_five_bits():
    vif = VcpuInterface(2)
    vif.vmcr.pmr = 0xA8
    assert G.GICH_VMCR.pmr.get(vif.read_vmcr()) == 0xA8 >> 3


@pytest.mark.parametrize("version,vtr", [
    (2, 3 | 4 << 26 | 4 << 29), (3, 3 | 1 << 21 | 4 << 26 | 4 << 29)])
def test_vtr(version, vtr):
    assert VcpuInterface(version).vtr() == vtr


def test_construction_limits():
    with pytest.raises(ValueError):
        VcpuInterface(4)
    with pytest.raises(ValueError):
        VcpuInterface(3, nr_lr=17)
    assert VcpuInterface(2, nr_lr=64).nr_lr == 64


def test_wrong_frame_and_widths_are_harmless():
    v2, v3 = make(2), make(3)
    assert v3.gicv_read(G.GICC_IAR, 4) == 0                  # no GICV frame on a GICv3
    assert v2.icc_read(S.ICC_IAR1_EL1.encoding) is None
    assert not v2.icc_write(S.ICC_PMR_EL1.encoding, 0xFF)
    assert v2.gicv_read(G.GICC_PMR, 2) == 0
    v2.gicv_write(G.GICC_PMR, 1, 0xFF)
    assert v2.vmcr.pmr == 0xF8
