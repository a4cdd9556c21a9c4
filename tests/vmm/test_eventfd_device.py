"""The eventfd test device against a fake KVM: the test reads the irqfd and writes the
resamplefd itself. Deterministic: every wait is on a condition, with a generous deadline."""

from __future__ import annotations

import os
import select

import pytest

from softkvm.vmm.devices.eventfd_device import EventfdDevice

DEADLINE = 30.0


def readable(fd, timeout=0.0):
    return bool(select.select([fd], [], [], timeout)[0])


def take(fd):
    """What KVM's irqfd does: wait for the eventfd, consume its counter."""
    assert readable(fd, DEADLINE), "the device did not signal"
    return os.eventfd_read(fd)


@pytest.fixture
def devices():
    made = []

    def make(*args, **kwargs):
        device = EventfdDevice.create(*args, **kwargs)
        made.append(device)
        return device.start()

    yield make
    for device in made:
        device.close()


def test_edge_without_window_writes_every_event(devices):
    device = devices()
    device.raise_events(5)
    assert device.wait_idle(DEADLINE)
    assert os.eventfd_read(device.irqfd) == 5          # five writes, folded by the counter
    assert (device.stats.raised, device.stats.signals, device.stats.retired) == (5, 5, 5)
    assert not device.level and device.outstanding == 5


def test_edge_window_waits_for_each_ack(devices):
    device = devices(window=1)
    device.raise_events(3)
    for sent in range(1, 4):
        assert take(device.irqfd) == 1
        assert device.wait_signals(sent, DEADLINE)
        assert device.stats.signals == sent and device.outstanding == 1
        assert not readable(device.irqfd)              # nothing more until the ack
        assert not device.idle()
        device.ack()
    assert device.wait_idle(DEADLINE)
    assert (device.stats.signals, device.stats.retired) == (3, 3)


def test_edge_window_of_two_keeps_two_outstanding(devices):
    device = devices(window=2)
    device.raise_events(5)
    assert device.wait_signals(2, DEADLINE)
    assert take(device.irqfd) == 2 and device.stats.signals == 2
    device.ack(2)
    assert device.wait_signals(4, DEADLINE)
    device.ack(2)
    assert device.wait_signals(5, DEADLINE)
    device.ack()
    assert device.wait_idle(DEADLINE) and device.stats.signals == 5


def test_level_asserts_once_and_reasserts_after_each_resample(devices):
    device = devices(level=True)
    device.raise_events(3)
    for retired in range(3):
        assert take(device.irqfd) == 1                 # asserted once ...
        assert device.outstanding == 1
        assert not readable(device.irqfd)              # ... and held, not re-written
        assert device.stats.retired == retired
        os.eventfd_write(device.resamplefd, 1)         # the guest EOIed: KVM lowered the line
        assert device.wait_signals(min(retired + 2, 3), DEADLINE)
    assert device.wait_idle(DEADLINE)
    assert not readable(device.irqfd)                  # no fourth assertion
    s = device.stats
    assert (s.signals, s.resamples, s.retired, s.spurious) == (3, 3, 3, 0)
    assert device.outstanding == 0


def test_level_events_raised_while_asserted_wait_for_the_resample(devices):
    device = devices(level=True)
    device.raise_events(1)
    assert take(device.irqfd) == 1
    device.raise_events(1)                             # the line is already high
    assert not readable(device.irqfd, 0.05)
    os.eventfd_write(device.resamplefd, 1)
    assert take(device.irqfd) == 1                     # re-asserted for the second event
    os.eventfd_write(device.resamplefd, 1)
    assert device.wait_idle(DEADLINE) and device.stats.signals == 2


def test_level_resample_while_deasserted_is_spurious(devices):
    device = devices(level=True)
    os.eventfd_write(device.resamplefd, 1)             # e.g. another device's EOI on the GSI
    assert device.wait_until(lambda stats: stats.resamples == 1, DEADLINE)
    assert device.stats.spurious == 1 and device.stats.signals == 0 and device.idle()
    assert not readable(device.irqfd)


def test_given_descriptors_are_left_open_and_own_ones_closed():
    irqfd, resamplefd = os.eventfd(0, os.EFD_NONBLOCK), os.eventfd(0, os.EFD_NONBLOCK)
    try:
        with EventfdDevice(irqfd, resamplefd) as device:
            device.raise_events(1)
            assert take(irqfd) == 1 and device.running
        assert not device.running
        os.fstat(irqfd)                                # still ours
        os.fstat(resamplefd)
    finally:
        os.close(irqfd)
        os.close(resamplefd)
    device = EventfdDevice.create(level=True)
    fds = (device.irqfd, device.resamplefd)
    device.close()
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_window_must_be_positive():
    with pytest.raises(ValueError):
        EventfdDevice.create(window=0)
