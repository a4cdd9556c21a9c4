"""The host timer PPI watcher (the shim's thread): marks and kicks once per expiry of a loaded,
unmasked timer, and is woken by load/unmask/re-arm only when they expose a deadline earlier than
its planned wake-up."""

from __future__ import annotations

import gc
import os
import select
import threading
import time

import pytest

from softkvm.hw.clock import NS_PER_TICK, HostTimers, monotonic_ns
from softkvm.hw.core import ExitKind
from softkvm.hw.generic_timer import (CTL_ENABLE, CTL_IMASK, MASK64, PTIMER, VTIMER,
                                      WATCH_NEVER, WATCH_SCANNING, TimerIrq)
from softkvm.hw.native import SkvmVcpu
from tests.support.machine import CODE, kvm, load, make_vm

DEADLINE = 30.0   # generous: only a bug waits this long


def ticks_in(ms: float) -> int:
    return (monotonic_ns() + int(ms * 1e6)) // NS_PER_TICK


@pytest.fixture
def watcher():
    irq = TimerIrq(kvm().native)
    yield irq
    irq.stop()


def wait_for(predicate) -> None:
    end = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.001)


def arm(state: SkvmVcpu, timer: int, cval: int, ctl: int = CTL_ENABLE) -> None:
    state.timer[timer].cval = cval
    state.timer[timer].ctl = ctl


def fired_soon(irq: TimerIrq, key: str, state: SkvmVcpu) -> int:
    """The expiries marked for ``key`` within DEADLINE; the kick comes with them."""
    wait_for(lambda: state.ppi_fired)
    assert state.kick & 1, "an expiry kicks the vCPU"
    state.kick = 0
    return irq.take(key)


def test_loaded_unmasked_timer_fires_once_until_rearmed(watcher):
    irq = watcher
    state = SkvmVcpu()
    irq.register("v0", state)
    arm(state, VTIMER, 0)          # long expired (cntvoff 0)
    irq.load("v0")
    assert fired_soon(irq, "v0", state) == 1 << VTIMER
    assert irq.fires == 1
    time.sleep(0.2)
    assert irq.take("v0") == 0 and not state.kick   # level still high, not re-armed: no second
    irq.rearm("v0")
    assert fired_soon(irq, "v0", state) == 1 << VTIMER and irq.fires == 2


def test_masked_or_unloaded_timer_does_not_fire(watcher):
    irq = watcher
    state = SkvmVcpu()
    irq.register("v0", state)
    arm(state, PTIMER, 0)
    irq.set_masked("v0", PTIMER, True)
    irq.load("v0")
    time.sleep(0.2)
    irq.put("v0")
    irq.set_masked("v0", PTIMER, False)
    time.sleep(0.2)
    arm(state, PTIMER, 0, CTL_ENABLE | CTL_IMASK)   # IMASK: the output is off
    irq.load("v0")
    wait_for(lambda: irq.scans >= 1 and irq.wake_at_ns is None)
    time.sleep(0.2)
    assert irq.take("v0") == 0 and irq.fires == 0 and not state.kick


def test_load_and_unmask_poke_only_for_an_earlier_deadline(watcher):
    irq = watcher
    soon, late = SkvmVcpu(), SkvmVcpu()
    irq.register("soon", soon)
    irq.register("late", late)
    arm(soon, VTIMER, ticks_in(60_000))
    irq.load("soon")               # the watcher now sleeps towards "soon"'s deadline
    wait_for(lambda: irq.wake_at_ns is not None)
    pokes = irq.pokes
    arm(late, VTIMER, ticks_in(120_000))
    irq.load("late")               # later than the planned wake-up: no wake
    irq.put("late")                # unloading never wakes
    irq.set_masked("soon", VTIMER, True)   # masking never wakes
    assert irq.pokes == pokes
    arm(late, VTIMER, 0)
    irq.load("late")               # already due: wake
    assert irq.pokes == pokes + 1
    assert fired_soon(irq, "late", late) == 1 << VTIMER
    assert irq.take("soon") == 0


def test_guest_write_after_a_silent_load_still_wakes_the_watcher(watcher):
    """A load that did not poke leaves the watcher asleep; the guest's timer write reaches it
    through the vCPU's notify_fd (the shim writes it for a deadline before the watcher's wake-up,
    and the watcher that sleeps until a poke publishes none)."""
    irq = watcher
    state = SkvmVcpu()
    irq.register("v0", state)
    assert state.notify_fd >= 0
    irq.load("v0")                 # no deadline: no poke
    arm(state, VTIMER, 0)
    os.eventfd_write(state.notify_fd, 1)
    assert fired_soon(irq, "v0", state) == 1 << VTIMER


def test_each_scan_publishes_when_the_watcher_wakes(watcher):
    irq = watcher
    state = SkvmVcpu()
    irq.register("v0", state)
    wait_for(lambda: state.watch_until == WATCH_NEVER)   # nothing armed: it waits for a poke
    cval = ticks_in(60_000)
    arm(state, VTIMER, cval)
    irq.load("v0")                                        # a sooner deadline: a poke, a scan
    wait_for(lambda: state.watch_until == cval * NS_PER_TICK)
    assert irq.wake_at_ns == cval * NS_PER_TICK


def test_a_far_deadline_is_never_and_stop_releases_the_vcpus():
    """A CVAL beyond 64 bits of host ns is no deadline (not a wrapped, early one); after stop the
    shim no longer pokes the closed eventfd."""
    irq = TimerIrq(kvm().native)
    state = SkvmVcpu()
    irq.register("v0", state)
    arm(state, VTIMER, MASK64 - 5)
    irq.load("v0")
    wait_for(lambda: irq.scans >= 2 or state.watch_until == WATCH_NEVER)
    time.sleep(0.1)
    assert irq.take("v0") == 0 and irq.wake_at_ns is None
    irq.stop()
    assert state.notify_fd == -1 and irq.take("v0") == 0 and irq.fires == 0
    irq.stop()                     # twice is harmless


# The shim's side: a guest timer write pokes the watcher's eventfd only for a deadline before the
# sleep the watcher published (Linux writes its timer at every tick and idle entry).
POKE_CASES = [
    ("sooner than the wake-up", 1, 100.0, True),
    ("later than the wake-up", 1, 0.5, False),
    ("while the watcher scans", 1, None, True),
    ("with the timer off", 0, 100.0, False),
    ("with the output masked", 3, 100.0, False),
]


@pytest.mark.parametrize("what,ctl,wake_in_s,pokes", POKE_CASES, ids=[c[0] for c in POKE_CASES])
def test_a_guest_timer_write_pokes_only_for_an_earlier_deadline(what, ctl, wake_in_s, pokes):
    vm, vcpus, ram = make_vm(1)
    core = vcpus[0].core
    fd = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        core.state.notify_fd = fd                # ours, not the VM's watcher's
        # what the watcher publishes: when its sleep ends, or that it is scanning
        core.state.watch_until = (WATCH_SCANNING if wake_in_s is None
                                  else monotonic_ns() + int(wake_in_s * 1e9))
        cval = monotonic_ns() // NS_PER_TICK - core.state.cntvoff + 10 * 62_500_000  # in 10 s
        load(vm, ram, CODE, f"ldr x0, ={cval}\n msr cntv_cval_el0, x0\n mov x1, #{ctl}\n"
                            " msr cntv_ctl_el0, x1\n hvc #0")
        core.flush_tb()
        core.set_pc(CODE)
        assert core.run().kind is ExitKind.HVC
        assert core.state.timer[VTIMER].cval == cval   # the writes happened either way
        poked = True
        try:
            os.eventfd_read(fd)
        except BlockingIOError:
            poked = False
        assert poked is pokes
    finally:
        core.state.notify_fd = -1
        os.close(fd)
        vm.close()


def _timer_slack_ns(tid: int) -> int:
    with open(f"/proc/{tid}/timerslack_ns") as f:  # a thread id works as a pid
        return int(f.read())


@pytest.mark.skipif(not os.path.exists("/proc/self/timerslack_ns"),
                    reason="needs Linux's per-thread timerslack_ns")
def test_the_timer_threads_wait_with_no_timer_slack(watcher):
    """KVM's timers are hard hrtimers; a thread's timed wait may otherwise end 50 us late."""
    irq = watcher
    timers = HostTimers()
    try:
        wait_for(lambda: irq.native_id != 0)
        for tid in (irq.native_id, timers._thread.native_id):
            wait_for(lambda: _timer_slack_ns(tid) == 1)
        assert _timer_slack_ns(threading.get_native_id()) != 1  # set per thread, not for all
    finally:
        timers.stop()


def _readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def test_the_background_timer_wakes_a_blocked_vcpu_at_its_deadline(watcher):
    """bg_arm: the watcher writes the vCPU's wake eventfd once the deadline falls (not before),
    and bg_take reports it once."""
    irq = watcher
    state = SkvmVcpu()
    irq.register("v0", state)
    wake = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        deadline = monotonic_ns() + 50_000_000
        irq.bg_arm("v0", deadline, wake)
        assert _readable(wake, DEADLINE)
        assert monotonic_ns() >= deadline and os.eventfd_read(wake) == 1
        assert irq.bg_take("v0") and not irq.bg_take("v0") and irq.bg_fires == 1
        assert irq.take("v0") == 0 and not state.kick   # no PPI, no kick: it was not loaded
    finally:
        os.close(wake)


def test_a_cancelled_or_far_background_timer_never_wakes(watcher):
    irq = watcher
    state = SkvmVcpu()
    irq.register("v0", state)
    wake = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        irq.bg_arm("v0", monotonic_ns() + 100_000_000, wake)
        irq.bg_cancel("v0")                       # vcpu_load came first
        irq.bg_arm("v0", 1 << 70, wake)           # past 64 bits of ns: no deadline
        assert not _readable(wake, 0.3)
        assert not irq.bg_take("v0") and irq.bg_fires == 0 and irq.wake_at_ns is None
    finally:
        os.close(wake)


def test_a_dropped_watcher_stops_its_thread():
    """A VM dropped without close(): collecting the watcher joins its native thread (which would
    otherwise go on reading vCPU states that no longer exist)."""
    irq = TimerIrq(kvm().native)
    irq.register("v0", SkvmVcpu())
    wait_for(lambda: irq.native_id != 0)
    tid = irq.native_id
    assert os.path.exists(f"/proc/self/task/{tid}")
    del irq
    gc.collect()
    assert not os.path.exists(f"/proc/self/task/{tid}")
