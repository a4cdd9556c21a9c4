"""Thread-safety smoke tests: device threads inject SPIs while a vCPU thread acknowledges."""

import sys
import threading
import time

import pytest

from softkvm.arch import gic as G
from softkvm.vmm.irqchip.user_gic import LINE_IRQ

from tests.vmm.user_gic.helpers import make_guest

SPURIOUS = 1023
FIRST_SPI, PER_THREAD = 40, 40


@pytest.fixture(autouse=True)
def busy_switching():
    """Switch threads as often as the interpreter allows, to shake out interleavings."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def _alternates(calls, cpu, line):
    levels = [level for c, l, level in calls if (c, l) == (cpu, line)]
    return all(a != b for a, b in zip(levels, levels[1:])) and (not levels or levels[0])


def test_two_injectors_one_acker_no_lost_or_duplicated_interrupt():
    guest = make_guest(nr_cpus=2, nr_irqs=128)
    guest.boot()
    spis = range(FIRST_SPI, FIRST_SPI + 2 * PER_THREAD)
    for n, intid in enumerate(spis):
        guest.setup(intid, priority=(n % 8) * 0x10, targets=0b01)
    start = threading.Barrier(3)

    def inject(batch):
        start.wait()
        for intid in batch:
            guest.gic.set_spi(intid, True)
            guest.gic.set_spi(intid, False)
            time.sleep(0)   # let the other threads in

    seen: list[int] = []

    def acknowledge():
        start.wait()
        deadline = time.monotonic() + 20
        while len(seen) < len(spis) and time.monotonic() < deadline:
            value = guest.ack(0)
            intid = G.GICC_IAR_F.InterruptID.get(value)
            if intid == SPURIOUS:
                time.sleep(0)
                continue
            seen.append(intid)
            guest.eoi(value, 0)

    threads = [threading.Thread(target=inject, args=(spis[:PER_THREAD],)),
               threading.Thread(target=inject, args=(spis[PER_THREAD:],)),
               threading.Thread(target=acknowledge)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(seen) == list(spis), "every SPI exactly once"
    assert guest.ack(0) == SPURIOUS
    assert guest.rd(G.GICD_ISPENDR + 4) == 0 and guest.rd(G.GICD_ISACTIVER + 4) == 0
    assert _alternates(guest.lines.calls, 0, LINE_IRQ), "one call per change, in order"
    assert not guest.lines.irq(0) and guest.gic.model.lines(0) == (False, False)
    assert all(cpu == 0 for cpu, _, _ in guest.lines.calls)


def test_concurrent_mmio_and_lines_end_consistent():
    """Several threads hammer both CPU interfaces and the SPI inputs; the published lines must
    end equal to what the final state signals."""
    guest = make_guest(nr_cpus=2, nr_irqs=64)
    guest.boot()
    for intid in (40, 41):
        guest.setup(intid, edge=False, targets=0b11)
    stop = threading.Event()

    def device(intid):
        level = False
        while not stop.is_set():
            level = not level
            guest.gic.set_spi(intid, level)
        guest.gic.set_spi(intid, False)

    def vcpu(cpu):
        while not stop.is_set():
            value = guest.ack(cpu)
            if G.GICC_IAR_F.InterruptID.get(value) != SPURIOUS:
                guest.eoi(value, cpu)
            guest.sgi(cpu, 1, targets=0b11 ^ (1 << cpu))

    threads = [threading.Thread(target=device, args=(i,)) for i in (40, 41)]
    threads += [threading.Thread(target=vcpu, args=(c,)) for c in (0, 1)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(10)
    model = guest.gic.model
    for cpu in (0, 1):
        assert _alternates(guest.lines.calls, cpu, LINE_IRQ)
        with model.access():
            wanted = model.signal(model.cpus[cpu])
        assert model.lines(cpu) == wanted
        assert guest.lines.irq(cpu) == wanted[0]
