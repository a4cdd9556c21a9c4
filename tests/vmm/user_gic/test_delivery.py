"""PPIs and SPIs, edge and level; priority, PMR, binary point and preemption; EOImode 0 and 1
with DIR; active state set and clear; the APR bits behind the running priority."""

import pytest

from softkvm.arch import gic as G

from tests.vmm.user_gic.helpers import GICC_CTLR_EN_GRP0, make_guest

SPURIOUS = 1023
SPI, SPI2, SPI3 = 40, 41, 42
EOIMODE = G.GICC_CTLR_F.EOImode.val(1)


@pytest.fixture
def guest():
    g = make_guest()
    g.boot()
    return g


# --- edge and level inputs ---------------------------------------------------------------------


def test_edge_spi_pending_active_inactive(guest):
    guest.setup(SPI)
    guest.pulse_spi(SPI)
    assert guest.bit(G.GICD_ISPENDR, SPI) and guest.lines.irq()
    assert guest.ack() == SPI
    assert guest.bit(G.GICD_ISACTIVER, SPI) and not guest.bit(G.GICD_ISPENDR, SPI)
    assert not guest.lines.irq()
    guest.eoi(SPI)
    assert not guest.bit(G.GICD_ISACTIVER, SPI)
    assert guest.ack() == SPURIOUS


def test_edges_before_acknowledge_merge(guest):
    guest.setup(SPI)
    guest.pulse_spi(SPI)
    guest.pulse_spi(SPI)
    assert guest.ack() == SPI
    guest.eoi(SPI)
    assert guest.ack() == SPURIOUS


def test_edge_while_active_is_delivered_after_eoi(guest):
    guest.setup(SPI)
    guest.pulse_spi(SPI)
    assert guest.ack() == SPI
    guest.pulse_spi(SPI)
    assert guest.bit(G.GICD_ISPENDR, SPI) and guest.bit(G.GICD_ISACTIVER, SPI)
    assert guest.ack() == SPURIOUS and not guest.lines.irq()
    guest.eoi(SPI)
    assert guest.lines.irq() and guest.ack() == SPI


def test_edge_line_held_high_does_not_repend(guest):
    guest.setup(SPI, edge=True)
    guest.gic.set_spi(SPI, True)
    assert guest.ack() == SPI
    guest.eoi(SPI)
    assert guest.ack() == SPURIOUS
    assert not guest.bit(G.GICD_ISPENDR, SPI)


def test_level_held_high_repends_after_eoi(guest):
    guest.setup(SPI, edge=False)
    guest.gic.set_spi(SPI, True)
    assert guest.ack() == SPI
    assert guest.bit(G.GICD_ISPENDR, SPI) and guest.bit(G.GICD_ISACTIVER, SPI)
    guest.eoi(SPI)
    assert guest.lines.irq() and guest.ack() == SPI
    guest.gic.set_spi(SPI, False)
    assert not guest.bit(G.GICD_ISPENDR, SPI)
    guest.eoi(SPI)
    assert not guest.lines.irq() and guest.ack() == SPURIOUS


def test_level_lowered_before_acknowledge_is_gone(guest):
    guest.setup(SPI, edge=False)
    guest.gic.set_spi(SPI, True)
    guest.gic.set_spi(SPI, False)
    assert not guest.lines.irq() and guest.ack() == SPURIOUS


def test_level_pending_is_visible_while_disabled(guest):
    guest.setup(SPI, edge=False, enable=False)
    guest.gic.set_spi(SPI, True)
    assert guest.bit(G.GICD_ISPENDR, SPI) and guest.bit(G.GICD_ICPENDR, SPI)
    assert not guest.lines.irq() and guest.ack() == SPURIOUS
    guest.set_bit(G.GICD_ISENABLER, SPI)
    assert guest.lines.irq() and guest.ack() == SPI
    guest.set_bit(G.GICD_ICENABLER, SPI)   # disabling does not touch pending/active
    assert guest.bit(G.GICD_ISPENDR, SPI) and guest.bit(G.GICD_ISACTIVER, SPI)


def test_icpendr_does_not_clear_a_high_level_line(guest):
    guest.setup(SPI, edge=False)
    guest.gic.set_spi(SPI, True)
    guest.set_bit(G.GICD_ICPENDR, SPI)
    assert guest.bit(G.GICD_ISPENDR, SPI)


def test_ispendr_latch_outlives_the_level_line_until_acknowledged(guest):
    guest.setup(SPI, edge=False)
    guest.gic.set_spi(SPI, True)
    guest.set_bit(G.GICD_ISPENDR, SPI)
    guest.gic.set_spi(SPI, False)
    assert guest.bit(G.GICD_ISPENDR, SPI)
    assert guest.ack() == SPI
    guest.eoi(SPI)
    assert guest.ack() == SPURIOUS


def test_ispendr_and_icpendr_on_an_edge_spi(guest):
    guest.setup(SPI)
    guest.set_bit(G.GICD_ISPENDR, SPI)
    assert guest.lines.irq()
    guest.set_bit(G.GICD_ICPENDR, SPI)
    assert not guest.lines.irq() and guest.ack() == SPURIOUS
    guest.set_bit(G.GICD_ISPENDR, SPI)
    assert guest.ack() == SPI


def test_level_ppi_is_private_to_its_cpu():
    guest = make_guest(nr_cpus=2)
    guest.boot()
    guest.setup(20, cpu=1)
    guest.gic.set_ppi(1, 20, True)
    assert (guest.lines.irq(0), guest.lines.irq(1)) == (False, True)
    assert not guest.bit(G.GICD_ISPENDR, 20, cpu=0) and guest.bit(G.GICD_ISPENDR, 20, cpu=1)
    assert guest.ack(0) == SPURIOUS and guest.ack(1) == 20
    guest.eoi(20, cpu=1)
    assert guest.ack(1) == 20, "a level PPI held high comes back"
    guest.gic.set_ppi(1, 20, False)
    guest.eoi(20, cpu=1)
    assert guest.ack(1) == SPURIOUS


def test_ppi_latched_by_ispendr(guest):
    guest.setup(25)
    guest.set_bit(G.GICD_ISPENDR, 25)
    assert guest.ack() == 25


# --- priority, PMR, binary point, preemption ------------------------------------------------------


def test_highest_priority_first_then_lowest_intid(guest):
    for intid, prio in ((SPI, 0x80), (SPI2, 0x40), (SPI3, 0x40), (50, 0xC0)):
        guest.setup(intid, priority=prio)
        guest.pulse_spi(intid)
    order = []
    for _ in range(4):
        intid = guest.ack()
        order.append(intid)
        guest.eoi(intid)
    assert order == [SPI2, SPI3, SPI, 50]


def test_pmr_is_strict(guest):
    guest.cwr(G.GICC_PMR, 0x80)
    guest.setup(SPI, priority=0x80)
    guest.pulse_spi(SPI)
    assert not guest.lines.irq() and guest.ack() == SPURIOUS
    assert guest.crd(G.GICC_HPPIR) == SPI, "HPPIR ignores the mask"
    guest.cwr(G.GICC_PMR, 0x88)
    assert guest.lines.irq() and guest.ack() == SPI


def test_lowering_pmr_withdraws_the_signal(guest):
    guest.setup(SPI, priority=0x80)
    guest.pulse_spi(SPI)
    assert guest.lines.irq()
    guest.cwr(G.GICC_PMR, 0x40)
    assert not guest.lines.irq()


def test_preemption_nests_and_rpr_follows(guest):
    guest.setup(SPI, priority=0x80)
    guest.setup(SPI2, priority=0x40)
    guest.setup(SPI3, priority=0x80)
    guest.pulse_spi(SPI)
    assert guest.ack() == SPI and guest.crd(G.GICC_RPR) == 0x80
    guest.pulse_spi(SPI3)
    assert not guest.lines.irq(), "equal priority does not preempt"
    guest.pulse_spi(SPI2)
    assert guest.lines.irq() and guest.ack() == SPI2
    assert guest.crd(G.GICC_RPR) == 0x40
    assert guest.crd(G.GICC_APR) == (1 << (0x80 >> 3)) | (1 << (0x40 >> 3))
    guest.eoi(SPI2)
    assert guest.crd(G.GICC_RPR) == 0x80 and not guest.lines.irq()
    guest.eoi(SPI)
    assert guest.crd(G.GICC_RPR) == 0xFF and guest.ack() == SPI3


def test_binary_point_groups_priorities(guest):
    guest.cwr(G.GICC_BPR, 4)               # group priority = bits [7:5]
    guest.setup(SPI, priority=0x48)
    guest.setup(SPI2, priority=0x40)
    guest.setup(SPI3, priority=0x20)
    guest.pulse_spi(SPI)
    assert guest.ack() == SPI
    assert guest.crd(G.GICC_RPR) == 0x40, "running priority is the group priority"
    guest.pulse_spi(SPI2)
    assert not guest.lines.irq() and guest.ack() == SPURIOUS
    guest.pulse_spi(SPI3)
    assert guest.ack() == SPI3
    guest.eoi(SPI3)
    guest.eoi(SPI)
    assert guest.ack() == SPI2


@pytest.mark.parametrize("cbpr,preempts,rpr", [(0, True, 0x80), (1, False, 0x00)])
def test_group1_uses_abpr_unless_cbpr(cbpr, preempts, rpr):
    guest = make_guest()
    guest.boot(ctlr=0x3 | G.GICC_CTLR_F.AckCtl.val(1) | G.GICC_CTLR_F.CBPR.val(cbpr))
    guest.cwr(G.GICC_BPR, 7)               # group 0 (and group 1 with CBPR): no preemption
    guest.cwr(G.GICC_ABPR, 5)              # group 1 without CBPR: group priority = [7:5]
    guest.setup(SPI, priority=0x80, group=1)
    guest.setup(SPI2, priority=0x40, group=1)
    guest.pulse_spi(SPI)
    assert guest.ack() == SPI and guest.crd(G.GICC_RPR) == rpr
    assert guest.crd(G.GICC_NSAPR) == 1 << (rpr >> 3) and guest.crd(G.GICC_APR) == 0
    guest.pulse_spi(SPI2)
    assert guest.lines.irq() == preempts


def test_group0_apr_bit(guest):
    guest.setup(SPI, priority=0xA0)
    guest.pulse_spi(SPI)
    guest.ack()
    assert guest.crd(G.GICC_APR) == 1 << 20 and guest.crd(G.GICC_NSAPR) == 0


def test_apr_write_changes_the_running_priority(guest):
    guest.setup(SPI, priority=0x80)
    guest.pulse_spi(SPI)
    guest.cwr(G.GICC_APR, 1 << (0x40 >> 3))
    assert guest.crd(G.GICC_RPR) == 0x40 and not guest.lines.irq()
    guest.cwr(G.GICC_APR, 0)
    assert guest.lines.irq()


# --- EOImode, DIR, end of interrupt corner cases ----------------------------------------------


def test_eoimode1_eoi_drops_and_dir_deactivates(guest):
    guest.cwr(G.GICC_CTLR, guest.crd(G.GICC_CTLR) | EOIMODE)
    guest.setup(SPI, priority=0x80, edge=False)
    guest.gic.set_spi(SPI, True)
    assert guest.ack() == SPI
    guest.eoi(SPI)
    assert guest.crd(G.GICC_RPR) == 0xFF
    assert guest.bit(G.GICD_ISACTIVER, SPI)
    assert not guest.lines.irq(), "active+pending: not forwarded before DIR"
    guest.cwr(G.GICC_DIR, SPI)
    assert not guest.bit(G.GICD_ISACTIVER, SPI) and guest.lines.irq()


def test_eoimode1_dir_in_any_order(guest):
    guest.cwr(G.GICC_CTLR, guest.crd(G.GICC_CTLR) | EOIMODE)
    guest.setup(SPI, priority=0x80)
    guest.setup(SPI2, priority=0xA0)
    guest.pulse_spi(SPI)
    assert guest.ack() == SPI
    guest.eoi(SPI)
    guest.pulse_spi(SPI2)
    assert guest.ack() == SPI2
    guest.eoi(SPI2)
    guest.cwr(G.GICC_DIR, SPI2)
    assert guest.bit(G.GICD_ISACTIVER, SPI) and not guest.bit(G.GICD_ISACTIVER, SPI2)
    guest.cwr(G.GICC_DIR, SPI)
    assert not guest.bit(G.GICD_ISACTIVER, SPI)


def test_eoimode0_dir_is_ignored(guest):
    guest.setup(SPI)
    guest.pulse_spi(SPI)
    guest.ack()
    guest.cwr(G.GICC_DIR, SPI)
    assert guest.bit(G.GICD_ISACTIVER, SPI)
    guest.eoi(SPI)
    assert not guest.bit(G.GICD_ISACTIVER, SPI)


def test_dir_of_an_spi_from_another_cpu():
    guest = make_guest(nr_cpus=2)
    guest.boot(ctlr=GICC_CTLR_EN_GRP0 | EOIMODE)
    guest.setup(SPI, targets=0b01)
    guest.pulse_spi(SPI)
    assert guest.ack(0) == SPI
    guest.eoi(SPI, cpu=0)
    guest.cwr(G.GICC_DIR, SPI, cpu=1)
    assert not guest.bit(G.GICD_ISACTIVER, SPI)


def test_eoi_of_a_special_intid_is_ignored(guest):
    guest.setup(SPI)
    guest.pulse_spi(SPI)
    guest.ack()
    for special in (1020, 1021, 1022, 1023):
        guest.eoi(special)
    assert guest.crd(G.GICC_RPR) == 0xA0 and guest.bit(G.GICD_ISACTIVER, SPI)


def test_eoi_drops_the_running_priority_even_for_another_intid(guest):
    """Out-of-order EOI is UNPREDICTABLE; like KVM's CPU interface we always drop."""
    guest.setup(SPI)
    guest.pulse_spi(SPI)
    guest.ack()
    guest.eoi(SPI2)
    assert guest.crd(G.GICC_RPR) == 0xFF and guest.bit(G.GICD_ISACTIVER, SPI)


def test_eoi_with_nothing_active_is_harmless(guest):
    guest.eoi(SPI)
    assert guest.crd(G.GICC_RPR) == 0xFF and guest.lines.calls == []


# --- active state through ISACTIVER/ICACTIVER -----------------------------------------------------


def test_active_set_blocks_delivery_and_clear_releases_it(guest):
    guest.setup(SPI)
    guest.set_bit(G.GICD_ISACTIVER, SPI)
    guest.pulse_spi(SPI)
    assert guest.bit(G.GICD_ISPENDR, SPI) and not guest.lines.irq()
    assert guest.ack() == SPURIOUS
    guest.set_bit(G.GICD_ICACTIVER, SPI)
    assert guest.lines.irq() and guest.ack() == SPI


def test_icactiver_on_an_acknowledged_spi_leaves_the_priority(guest):
    guest.setup(SPI, edge=False)
    guest.gic.set_spi(SPI, True)
    assert guest.ack() == SPI
    guest.set_bit(G.GICD_ICACTIVER, SPI)
    assert not guest.lines.irq(), "same priority as the running one: no preemption"
    guest.eoi(SPI)
    assert guest.lines.irq() and guest.ack() == SPI
