"""Groups (FIQ/IRQ, AckCtl, the group-1 aliases, enables), SPI targeting (multi-target per the
architecture, no target, uniprocessor, re-targeting), output-line transitions (exactly one sink
call per change) and the device_irq_level feed (PPIs 27/30/23)."""

import pytest

from softkvm.arch import gic as G
from softkvm.errors import ConfigError
from softkvm.kvm import uapi
from softkvm.vmm.irqchip.user_gic import LINE_FIQ, LINE_IRQ, UserGic

from tests.vmm.user_gic.helpers import (GICC_CTLR_EN_GRP0, GICC_CTLR_EN_GRP1, FakeLines, Guest,
                                        iar, make_guest)

SPURIOUS, SPURIOUS_G1 = 1023, 1022
SPI, SPI2 = 40, 41
ACKCTL = G.GICC_CTLR_F.AckCtl.val(1)
FIQEN = G.GICC_CTLR_F.FIQEn.val(1)
BOTH = GICC_CTLR_EN_GRP0 | GICC_CTLR_EN_GRP1


# --- groups -------------------------------------------------------------------------------------


def test_group0_is_irq_without_fiqen():
    guest = make_guest()
    guest.boot()
    guest.setup(SPI)
    guest.pulse_spi(SPI)
    assert guest.lines.calls == [(0, LINE_IRQ, True)]


def test_group0_is_fiq_with_fiqen():
    guest = make_guest()
    guest.boot(ctlr=BOTH | FIQEN)
    guest.setup(SPI)
    guest.setup(SPI2, group=1)
    guest.pulse_spi(SPI)
    assert guest.lines.take() == [(0, LINE_FIQ, True)]
    assert guest.ack() == SPI
    assert guest.lines.take() == [(0, LINE_FIQ, False)]
    guest.eoi(SPI)
    guest.pulse_spi(SPI2)
    assert guest.lines.take() == [(0, LINE_IRQ, True)], "group 1 is always IRQ"


def test_group1_through_iar_needs_ackctl():
    guest = make_guest()
    guest.boot(ctlr=BOTH)
    guest.setup(SPI, group=1)
    guest.pulse_spi(SPI)
    assert guest.lines.irq()
    assert guest.crd(G.GICC_HPPIR) == SPURIOUS_G1
    assert guest.ack() == SPURIOUS_G1
    assert guest.bit(G.GICD_ISPENDR, SPI), "1022 acknowledges nothing"
    assert guest.crd(G.GICC_AHPPIR) == SPI
    assert guest.crd(G.GICC_AIAR) == SPI
    assert guest.crd(G.GICC_NSAPR) == 1 << (0xA0 >> 3)
    guest.cwr(G.GICC_AEOIR, SPI)
    assert not guest.bit(G.GICD_ISACTIVER, SPI) and guest.crd(G.GICC_RPR) == 0xFF


def test_group1_through_iar_with_ackctl():
    guest = make_guest()
    guest.boot(ctlr=BOTH | ACKCTL)
    guest.setup(SPI, group=1)
    guest.pulse_spi(SPI)
    assert guest.crd(G.GICC_HPPIR) == SPI
    assert guest.ack() == SPI
    guest.eoi(SPI)
    assert not guest.bit(G.GICD_ISACTIVER, SPI)


def test_aliases_do_not_see_group0():
    guest = make_guest()
    guest.boot()
    guest.setup(SPI)
    guest.pulse_spi(SPI)
    assert guest.crd(G.GICC_AHPPIR) == SPURIOUS
    assert guest.crd(G.GICC_AIAR) == SPURIOUS
    assert guest.ack() == SPI
    guest.cwr(G.GICC_AEOIR, SPI)
    assert guest.crd(G.GICC_RPR) == 0xA0, "AEOIR drops group-1 priorities only"
    assert guest.bit(G.GICD_ISACTIVER, SPI), "and deactivates group-1 interrupts only"


def test_nested_groups_keep_separate_active_priorities():
    guest = make_guest()
    guest.boot(ctlr=BOTH | ACKCTL)
    guest.setup(SPI, priority=0x80, group=1)
    guest.setup(SPI2, priority=0x40)
    guest.pulse_spi(SPI)
    assert guest.ack() == SPI
    guest.pulse_spi(SPI2)
    assert guest.ack() == SPI2, "group 0 at 0x40 preempts group 1 at 0x80"
    assert (guest.crd(G.GICC_APR), guest.crd(G.GICC_NSAPR)) == (1 << 8, 1 << 16)
    guest.cwr(G.GICC_AEOIR, SPI)                  # out of order, through the alias
    assert (guest.crd(G.GICC_APR), guest.crd(G.GICC_NSAPR)) == (1 << 8, 0)
    assert guest.crd(G.GICC_RPR) == 0x40 and not guest.bit(G.GICD_ISACTIVER, SPI)
    guest.eoi(SPI2)
    assert guest.crd(G.GICC_RPR) == 0xFF and not guest.bit(G.GICD_ISACTIVER, SPI2)


def test_higher_group0_hides_group1_from_aiar():
    guest = make_guest()
    guest.boot(ctlr=BOTH)
    guest.setup(SPI, priority=0x40)
    guest.setup(SPI2, priority=0x80, group=1)
    guest.pulse_spi(SPI)
    guest.pulse_spi(SPI2)
    assert guest.crd(G.GICC_AIAR) == SPURIOUS
    assert guest.ack() == SPI


def test_sgi_in_group1_reports_its_source_through_aiar():
    guest = make_guest(nr_cpus=2)
    guest.boot(ctlr=BOTH)
    guest.wr(G.GICD_IGROUPR, 1 << 3, cpu=0)
    guest.sgi(1, 3, targets=0b01)
    assert guest.crd(G.GICC_AIAR) == iar(3, 1)


@pytest.mark.parametrize("dist_ctlr,grp0,grp1", [(0, False, False), (1, True, False),
                                                  (2, False, True), (3, True, True)])
def test_distributor_group_enables(dist_ctlr, grp0, grp1):
    guest = make_guest()
    guest.boot(ctlr=BOTH | ACKCTL, dist=dist_ctlr)
    guest.setup(SPI, priority=0x40)
    guest.setup(SPI2, priority=0x80, group=1)
    guest.pulse_spi(SPI)
    guest.pulse_spi(SPI2)
    expected = SPI if grp0 else SPI2 if grp1 else SPURIOUS
    assert guest.lines.irq() == (grp0 or grp1)
    assert guest.ack() == expected


@pytest.mark.parametrize("cpu_ctlr,expected", [(0, SPURIOUS), (GICC_CTLR_EN_GRP0, SPI),
                                               (GICC_CTLR_EN_GRP1, SPI2)])
def test_cpu_interface_group_enables(cpu_ctlr, expected):
    guest = make_guest()
    guest.boot(ctlr=cpu_ctlr | ACKCTL)
    guest.setup(SPI, priority=0x40)
    guest.setup(SPI2, priority=0x80, group=1)
    guest.pulse_spi(SPI)
    guest.pulse_spi(SPI2)
    assert guest.ack() == expected


def test_disabling_the_distributor_drops_the_line():
    guest = make_guest()
    guest.boot()
    guest.setup(SPI)
    guest.pulse_spi(SPI)
    guest.lines.take()
    guest.wr(G.GICD_CTLR, 0)
    assert guest.lines.take() == [(0, LINE_IRQ, False)]
    assert guest.bit(G.GICD_ISPENDR, SPI)
    guest.wr(G.GICD_CTLR, 1)
    assert guest.lines.take() == [(0, LINE_IRQ, True)]


# --- SPI targets -------------------------------------------------------------------------------


def test_multi_target_spi_reaches_every_target_first_ack_wins():
    guest = make_guest(nr_cpus=3)
    guest.boot()
    guest.setup(SPI, targets=0b011)
    guest.pulse_spi(SPI)
    assert [guest.lines.irq(c) for c in range(3)] == [True, True, False]
    assert guest.ack(1) == SPI
    assert [guest.lines.irq(c) for c in range(3)] == [False, False, False]
    assert guest.ack(0) == SPURIOUS
    guest.eoi(SPI, cpu=1)
    guest.pulse_spi(SPI)
    assert guest.ack(0) == SPI


def test_spi_without_target_is_not_forwarded_on_smp():
    guest = make_guest(nr_cpus=2)
    guest.boot()
    guest.setup(SPI, targets=None)
    guest.pulse_spi(SPI)
    assert guest.bit(G.GICD_ISPENDR, SPI)
    assert guest.lines.calls == [] and guest.ack(0) == SPURIOUS and guest.ack(1) == SPURIOUS
    guest.wr(G.GICD_ITARGETSR + SPI, 0b10, size=1)
    assert guest.lines.calls == [(1, LINE_IRQ, True)]
    assert guest.ack(1) == SPI


def test_uniprocessor_forwards_spis_whatever_the_targets():
    guest = make_guest(nr_cpus=1)
    guest.boot()
    guest.setup(SPI, targets=None)
    assert guest.rd(G.GICD_ITARGETSR + SPI, 1) == 0
    guest.pulse_spi(SPI)
    assert guest.ack() == SPI


def test_retargeting_a_pending_spi_moves_the_line():
    guest = make_guest(nr_cpus=2)
    guest.boot()
    guest.setup(SPI, targets=0b01)
    guest.pulse_spi(SPI)
    guest.lines.take()
    guest.wr(G.GICD_ITARGETSR + SPI, 0b10, size=1)
    assert sorted(guest.lines.take()) == [(0, LINE_IRQ, False), (1, LINE_IRQ, True)]


def test_retargeting_an_active_spi_leaves_it_active():
    guest = make_guest(nr_cpus=2)
    guest.boot()
    guest.setup(SPI, targets=0b01)
    guest.pulse_spi(SPI)
    assert guest.ack(0) == SPI
    guest.wr(G.GICD_ITARGETSR + SPI, 0b10, size=1)
    assert guest.ack(1) == SPURIOUS
    guest.eoi(SPI, cpu=0)
    assert not guest.bit(G.GICD_ISACTIVER, SPI)


# --- output transitions ------------------------------------------------------------------------


def test_exactly_one_call_per_change():
    guest = make_guest()
    guest.boot()
    guest.setup(SPI, edge=False)
    guest.setup(SPI2, priority=0x40)
    assert guest.lines.take() == []
    guest.gic.set_spi(SPI, True)
    assert guest.lines.take() == [(0, LINE_IRQ, True)]
    guest.gic.set_spi(SPI, True)                   # same level: nothing
    guest.pulse_spi(SPI2)                          # line already high: nothing
    guest.rd(G.GICD_ISPENDR + 4)
    assert guest.lines.take() == []
    assert guest.ack() == SPI2                     # SPI (0xA0) cannot preempt 0x40
    assert guest.lines.take() == [(0, LINE_IRQ, False)]
    guest.eoi(SPI2)
    assert guest.lines.take() == [(0, LINE_IRQ, True)]
    assert guest.ack() == SPI
    guest.gic.set_spi(SPI, False)
    guest.eoi(SPI)
    assert guest.lines.take() == [(0, LINE_IRQ, False)]


def test_each_cpu_line_changes_independently():
    guest = make_guest(nr_cpus=4)
    guest.boot()
    guest.sgi(0, 1, targets=0b1010)
    assert sorted(guest.lines.take()) == [(1, LINE_IRQ, True), (3, LINE_IRQ, True)]
    guest.ack(3)
    assert guest.lines.take() == [(3, LINE_IRQ, False)]


def test_no_calls_before_the_guest_enables_anything():
    guest = make_guest()
    guest.gic.set_spi(SPI, True)
    guest.gic.update_device_irq_level(0, 7)
    assert guest.lines.calls == []


# --- device_irq_level → PPIs -------------------------------------------------------------------


@pytest.mark.parametrize("bit,ppi", [(uapi.KVM_ARM_DEV_EL1_VTIMER, 27),
                                     (uapi.KVM_ARM_DEV_EL1_PTIMER, 30),
                                     (uapi.KVM_ARM_DEV_PMU, 23)])
def test_device_irq_level_bits_drive_their_ppi(bit, ppi):
    guest = make_guest(nr_cpus=2)
    guest.boot()
    guest.setup(ppi, cpu=1)
    guest.gic.update_device_irq_level(1, bit)
    assert guest.rd(G.GICD_ISPENDR, cpu=1) == 1 << ppi
    assert guest.rd(G.GICD_ISPENDR, cpu=0) == 0
    assert guest.lines.take() == [(1, LINE_IRQ, True)]
    assert guest.ack(1) == ppi
    guest.eoi(ppi, cpu=1)
    assert guest.ack(1) == ppi, "level: still high after EOI"
    guest.gic.update_device_irq_level(1, 0)
    guest.eoi(ppi, cpu=1)
    assert guest.rd(G.GICD_ISPENDR, cpu=1) == 0 and guest.ack(1) == SPURIOUS


def test_device_irq_level_all_bits():
    guest = make_guest()
    guest.gic.update_device_irq_level(0, 0b111)
    assert guest.rd(G.GICD_ISPENDR) == (1 << 27) | (1 << 30) | (1 << 23)
    guest.gic.update_device_irq_level(0, uapi.KVM_ARM_DEV_EL1_PTIMER)
    assert guest.rd(G.GICD_ISPENDR) == 1 << 30


# --- host-side misuse --------------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: UserGic(0, FakeLines()), lambda: UserGic(9, FakeLines()),
    lambda: UserGic(1, FakeLines(), nr_irqs=100), lambda: UserGic(1, FakeLines(), nr_irqs=32),
    lambda: UserGic(1, FakeLines(), nr_irqs=2048)])
def test_bad_configurations(make):
    with pytest.raises(ConfigError):
        make()


def test_bad_inputs():
    gic = UserGic(2, FakeLines(), nr_irqs=64)
    with pytest.raises(ConfigError, match="SPI 64 does not exist"):
        gic.set_spi(64, True)
    with pytest.raises(ConfigError, match="SPI 31 does not exist"):
        gic.spi_line(31)
    with pytest.raises(ConfigError, match="no PPI 15 on CPU 0"):
        gic.set_ppi(0, 15, True)
    with pytest.raises(ConfigError, match="no PPI 20 on CPU 2"):
        gic.set_ppi(2, 20, True)


# --- "quiet": nothing forwarded, so GICC_IAR reads 1023 with no side effect ----------------------


def test_quiet_cpus_are_reported_before_their_lines_rise_and_iar_agrees():
    """The VMM publishes a quiet CPU's IAR as 1023 (no exit): it must hear that a CPU stops
    being quiet before that CPU's line rises, and every CPU it hears is quiet must read 1023."""
    events: list[tuple] = []
    lines = FakeLines()

    def line(cpu, which, level):
        events.append(("line", cpu, which, level))
        lines(cpu, which, level)

    gic = UserGic(2, line, nr_irqs=64,
                  set_cpu_quiet=lambda cpu, quiet: events.append(("quiet", cpu, quiet)))
    g = Guest(gic, lines)
    gic.model.flush_lines()
    assert events == [("quiet", 0, True), ("quiet", 1, True)]
    g.boot()
    g.setup(40, targets=0b01)
    events.clear()
    gic.set_spi(40, True)                       # pending for CPU 0 only
    assert events == [("quiet", 0, False), ("line", 0, LINE_IRQ, True)]
    assert g.ack(1) == G.INTID_SPURIOUS         # CPU 1 stayed quiet
    events.clear()
    assert g.ack(0) == iar(40)                  # the last pending one: quiet again
    assert events == [("quiet", 0, True), ("line", 0, LINE_IRQ, False)]
    assert g.ack(0) == G.INTID_SPURIOUS and not lines.irq(0)
    events.clear()
    g.eoi(iar(40))
    gic.set_spi(40, False)
    assert ("quiet", 0, False) not in events     # nothing forwarded either way: no report


def test_a_masked_pending_interrupt_is_not_quiet():
    """Quiet means nothing forwarded at all, not merely nothing signalled: a pending interrupt
    under PMR keeps IAR on the exit path (its read still returns 1023, from the model)."""
    reports = []
    lines = FakeLines()
    gic = UserGic(1, lines, nr_irqs=64, set_cpu_quiet=lambda _cpu, quiet: reports.append(quiet))
    g = Guest(gic, lines)
    g.boot(pmr=0x80)
    g.setup(40, priority=0xA0)
    gic.set_spi(40, True)
    assert reports[-1] is False and g.ack() == G.INTID_SPURIOUS
