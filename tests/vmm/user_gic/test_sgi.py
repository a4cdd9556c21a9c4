"""SGIs: GICD_SGIR target list and filters, per-source pending state, one delivery per source
(lowest source first, IAR CPUID = source), SPENDSGIR/CPENDSGIR, active state via ICACTIVER."""

import pytest

from softkvm.arch import gic as G

from tests.vmm.user_gic.helpers import iar, make_guest

SPURIOUS = 1023


@pytest.fixture
def quad():
    guest = make_guest(nr_cpus=4)
    guest.boot()
    return guest


def acks(guest, cpus=range(4)):
    return [guest.ack(cpu) for cpu in cpus]


def test_target_list(quad):
    quad.sgi(0, 5, targets=0b0110)
    assert [quad.lines.irq(c) for c in range(4)] == [False, True, True, False]
    assert acks(quad) == [SPURIOUS, iar(5, 0), iar(5, 0), SPURIOUS]


def test_target_list_bits_beyond_the_cpus_are_ignored():
    guest = make_guest(nr_cpus=2)
    guest.boot()
    guest.sgi(1, 4, targets=0xFC)
    assert acks(guest, (0, 1)) == [SPURIOUS, SPURIOUS]
    guest.sgi(1, 4, targets=0xFF)
    assert acks(guest, (0, 1)) == [iar(4, 1), iar(4, 1)]


def test_filter_all_but_self(quad):
    quad.sgi(2, 7, targets=0b0100, mode=G.SGIR_FILTER_OTHERS)   # the list is ignored
    assert acks(quad) == [iar(7, 2), iar(7, 2), SPURIOUS, iar(7, 2)]


def test_filter_self(quad):
    quad.sgi(3, 1, targets=0b0001, mode=G.SGIR_FILTER_SELF)
    assert acks(quad) == [SPURIOUS, SPURIOUS, SPURIOUS, iar(1, 3)]


def test_reserved_filter_sends_nothing(quad):
    quad.sgi(0, 1, targets=0b1111, mode=G.SGIR_FILTER_RESERVED)
    assert acks(quad) == [SPURIOUS] * 4
    assert quad.lines.calls == []


def test_multi_source_one_delivery_per_source_lowest_first(quad):
    for sender in (3, 1, 2):
        quad.sgi(sender, 2, targets=0b0001)
    assert quad.rd(G.GICD_SPENDSGIR, cpu=0) == 0b1110 << 16
    assert quad.crd(G.GICC_HPPIR) == iar(2, 1)
    for source in (1, 2, 3):
        assert quad.ack() == iar(2, source)
        assert quad.ack() == SPURIOUS, "active SGI: the next source waits for deactivation"
        assert quad.bit(G.GICD_ISACTIVER, 2)
        quad.eoi(iar(2, source))
    assert quad.ack() == SPURIOUS
    assert quad.rd(G.GICD_SPENDSGIR, cpu=0) == 0
    assert not quad.bit(G.GICD_ISPENDR, 2) and not quad.bit(G.GICD_ISACTIVER, 2)


def test_multi_source_sgi_is_active_and_pending(quad):
    quad.sgi(1, 2, targets=0b0001)
    quad.sgi(2, 2, targets=0b0001)
    assert quad.ack() == iar(2, 1)
    assert quad.bit(G.GICD_ISPENDR, 2) and quad.bit(G.GICD_ISACTIVER, 2)
    assert quad.rd(G.GICD_SPENDSGIR + 2, 1) == 0b0100


def test_same_source_again_while_active_is_delivered_after_eoi(quad):
    quad.sgi(1, 9, targets=0b0001)
    assert quad.ack() == iar(9, 1)
    quad.sgi(1, 9, targets=0b0001)
    assert quad.ack() == SPURIOUS
    quad.eoi(iar(9, 1))
    assert quad.ack() == iar(9, 1)
    quad.eoi(iar(9, 1))
    assert quad.ack() == SPURIOUS


def test_sgis_are_banked_per_target(quad):
    quad.sgi(0, 3, targets=0b0110)
    assert quad.ack(1) == iar(3, 0)
    assert quad.bit(G.GICD_ISACTIVER, 3, cpu=1)
    assert not quad.bit(G.GICD_ISACTIVER, 3, cpu=2)
    assert quad.bit(G.GICD_ISPENDR, 3, cpu=2)


def test_acknowledged_sgi_cleared_by_icactiver_is_delivered_once(quad):
    quad.sgi(1, 6, targets=0b0001)
    assert quad.ack() == iar(6, 1)
    quad.set_bit(G.GICD_ICACTIVER, 6)
    assert not quad.bit(G.GICD_ISACTIVER, 6)
    assert quad.ack() == SPURIOUS
    assert quad.crd(G.GICC_RPR) == 0x00, "the priority stays up until EOIR"
    quad.eoi(iar(6, 1))
    assert quad.crd(G.GICC_RPR) == 0xFF
    assert quad.ack() == SPURIOUS
    assert not quad.lines.irq(0)


def test_cpendsgir_withdraws_one_source(quad):
    quad.sgi(1, 4, targets=0b0001)
    quad.sgi(2, 4, targets=0b0001)
    quad.wr(G.GICD_CPENDSGIR + 4, 0b0010, size=1)   # drop source 1 of SGI 4
    assert quad.ack() == iar(4, 2)
    quad.eoi(iar(4, 2))
    assert quad.ack() == SPURIOUS


def test_cpendsgir_last_source_clears_pending_and_the_line(quad):
    quad.sgi(1, 4, targets=0b0001)
    assert quad.lines.irq(0)
    quad.wr(G.GICD_CPENDSGIR + 4, 0xFF, size=1)
    assert not quad.bit(G.GICD_ISPENDR, 4)
    assert not quad.lines.irq(0)


def test_spendsgir_makes_an_sgi_pending_from_a_chosen_source(quad):
    quad.wr(G.GICD_SPENDSGIR + 8, 0b1000, size=1, cpu=1)   # SGI 8 on CPU 1, from CPU 3
    assert quad.ack(1) == iar(8, 3)


def test_sgi_ispendr_and_icpendr_bits_are_ignored(quad):
    quad.wr(G.GICD_ISPENDR, 0xFFFF)
    assert quad.ack() == SPURIOUS
    quad.sgi(1, 0, targets=0b0001)
    quad.wr(G.GICD_ICPENDR, 0xFFFF)
    assert quad.ack() == iar(0, 1)


def test_sgi_priority_orders_against_other_sgis(quad):
    quad.wr(G.GICD_IPRIORITYR + 1, 0x80, size=1)
    quad.wr(G.GICD_IPRIORITYR + 2, 0x40, size=1)
    quad.sgi(3, 1, targets=0b0001)
    quad.sgi(3, 2, targets=0b0001)
    assert quad.ack() == iar(2, 3)
    quad.eoi(iar(2, 3))
    assert quad.ack() == iar(1, 3)
