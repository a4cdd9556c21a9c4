"""GICv3 ICC_* system registers: SGI generation (SGI1R target lists with Aff1-3, IRM, SGI0R
groups) and the routing of the other encodings to the virtual CPU interface."""

from __future__ import annotations

import pytest

from softkvm.arch import gic as G
from softkvm.arch import sysregs as S
from tests.kvm.vgic.fakes import V2, V3, guest_enable, make_vgic

F = G.ICC_SGI1R_F
SGI1R, SGI0R, ASGI1R = (S.ICC_SGI1R_EL1.encoding, S.ICC_SGI0R_EL1.encoding,
                        S.ICC_ASGI1R_EL1.encoding)


def sgi1r(intid: int, targets: int = 0, aff1: int = 0, aff2: int = 0, aff3: int = 0,
          irm: int = 0, rs: int = 0) -> int:
    return (F.INTID.val(intid) | F.TargetList.val(targets) | F.Aff1.val(aff1) | F.Aff2.val(aff2)
            | F.Aff3.val(aff3) | F.IRM.val(irm) | F.RS.val(rs))


def pending_on(vgic, intid: int) -> list[int]:
    return [c for c in range(vgic.nr_vcpus()) if vgic.get_irq(c, intid).pending_latch]


@pytest.mark.parametrize("name,sender,value,targets", [
    ("list, cluster 0", 0, sgi1r(3, 0b0110), [1, 2]),
    ("list includes self", 1, sgi1r(3, 0b0011), [0, 1]),
    ("cluster 1 (Aff1)", 0, sgi1r(3, 0b0011, aff1=1), [16, 17]),
    ("absent affinities skipped", 0, sgi1r(3, 0b1100, aff1=1), []),
    ("Aff2 names no vCPU", 0, sgi1r(3, 0b1, aff2=1), []),
    ("Aff3 names no vCPU", 0, sgi1r(3, 0b1, aff3=1), []),
    ("RS selects Aff0 16..31", 0, sgi1r(3, 0b1, rs=1), []),
    ("IRM: everyone but the sender", 17, sgi1r(3, 0b1, irm=1), list(range(17))),
])
def test_sgi1r_targets(name, sender, value, targets):
    vgic, vm = make_vgic(V3, 18)
    guest_enable(vgic, 0)
    before = vm.kicks()
    assert vgic.vgic_v3_sysreg_write(sender, SGI1R, value)
    assert pending_on(vgic, 3) == targets
    assert [c for c in range(18) if vm.kicks()[c] != before[c]] == targets


def test_sgi0r_raises_group0_sgis_only():
    vgic, _vm = make_vgic(V3, 2)
    guest_enable(vgic, 0)
    assert vgic.vgic_v3_sysreg_write(0, SGI0R, sgi1r(4, 0b10))
    assert vgic.vgic_v3_sysreg_write(0, ASGI1R, sgi1r(4, 0b10))
    assert pending_on(vgic, 4) == []                      # SGI 4 is group 1 by default
    vgic.redist_mmio_write(1, G.GICR_SGI_BASE + G.GICR_IGROUPR0, 4, ~(1 << 4) & 0xFFFFFFFF, 1)
    assert vgic.vgic_v3_sysreg_write(0, SGI0R, sgi1r(4, 0b10))
    assert pending_on(vgic, 4) == [1]
    vgic.get_irq(1, 4).pending_latch = False
    assert vgic.vgic_v3_sysreg_write(0, SGI1R, sgi1r(4, 0b10))   # SGI1R may raise group 0 too
    assert pending_on(vgic, 4) == [1]


def test_sgi_to_self_is_delivered_in_slice():
    vgic, _vm = make_vgic(V3, 1)
    guest_enable(vgic, 0)
    vif = vgic.vcpu_if(0)
    vgic.kvm_vgic_flush_hwstate(0)
    assert vgic.vgic_v3_sysreg_write(0, SGI1R, sgi1r(7, 0b1))
    assert vif.signal() == (True, False)                   # refilled without an exit
    assert vgic.vgic_v3_sysreg_read(0, S.ICC_IAR1_EL1.encoding) == 7


@pytest.mark.parametrize("reg,readable,writable,value", [
    (S.ICC_SGI1R_EL1, False, True, None),
    (S.ICC_SGI0R_EL1, False, True, None),
    (S.ICC_IAR1_EL1, True, False, 1023),
    (S.ICC_EOIR1_EL1, False, True, None),
    (S.ICC_HPPIR0_EL1, True, False, 1023),
    (S.ICC_RPR_EL1, True, False, 0xFF),
    (S.ICC_SRE_EL1, True, True, 0x7),
    (S.ICC_CTLR_EL1, True, True, 0x8400),     # PRIbits 4 (5 bits), IDbits 16, A3V
    (S.ICC_BPR0_EL1, True, True, 2),
    (S.ICC_BPR1_EL1, True, True, 3),
    (S.ICC_PMR_EL1, True, True, 0),
    (S.ICC_IGRPEN0_EL1, True, True, 0),
    (S.ICC_AP0R0_EL1, True, True, 0),
    (S.ICC_AP1R0_EL1, True, True, 0),
    (S.SysReg(3, 0, 12, 8, 5), False, False, None),   # AP0R1: not implemented, UNDEF
    (S.SysReg(3, 0, 12, 9, 3), False, False, None),   # AP1R3
    (S.MIDR_EL1, False, False, None),
])
def test_encodings(reg, readable, writable, value):
    vgic, _vm = make_vgic(V3, 1)
    got = vgic.vgic_v3_sysreg_read(0, reg.encoding)
    assert (got is not None) == readable
    if value is not None:
        assert got == value
    assert vgic.vgic_v3_sysreg_write(0, reg.encoding, 0) == writable


def test_sre_writes_are_ignored_and_gicv2_has_no_sysregs():
    vgic, _vm = make_vgic(V3, 1)
    assert vgic.vgic_v3_sysreg_write(0, S.ICC_SRE_EL1.encoding, 0)
    assert vgic.vgic_v3_sysreg_read(0, S.ICC_SRE_EL1.encoding) == 0x7
    assert vgic.has_sysreg_cpuif
    v2, _ = make_vgic(V2, 1)
    assert not v2.has_sysreg_cpuif
    assert v2.vgic_v3_sysreg_read(0, S.ICC_PMR_EL1.encoding) is None
    assert not v2.vgic_v3_sysreg_write(0, S.ICC_SGI1R_EL1.encoding, 0)
