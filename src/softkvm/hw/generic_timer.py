"""The generic timer's comparators and the host timer interrupt they raise.

Counterpart: the Arm generic timer (Arm ARM D11) as KVM uses it while a vCPU is loaded: the
guest's CNTV_*/CNTP_* registers live in the hardware (here: the native shim's per-vCPU block,
emulated in C on every guest access), and when a comparator's condition is met the *host* takes
a timer PPI, which forces the vCPU out of the guest (``kvm_arch_timer_handler``). The PPI stays
masked while KVM leaves it active (``phys_active``), so an asserted level does not re-trap.

One watcher thread per VM plays that PPI: it sleeps until the earliest unmasked deadline of the
loaded vCPUs, or until the shim's eventfd says a guest reprogrammed a timer, and then calls
``on_fire(key, timer)`` once per expiry (until ``rearm`` says the hypervisor has seen it).

vcpu_load/put, masking and re-arming happen on every exit, so they wake the watcher only when
it would otherwise sleep past a deadline they expose: a wake-up costs a thread switch and a
round of GIL hand-offs, while a deadline that disappears merely makes the next scan find nothing.
The shim applies the same rule to the guest's timer writes: each scan publishes when its sleep
ends (``watch_until``), and a write pokes the eventfd only for a deadline before that.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from softkvm.hw.clock import NS_PER_TICK, hard_timer_slack, monotonic_ns
from softkvm.hw.native import SkvmTimer, SkvmVcpu

VTIMER = 0
PTIMER = 1
CTL_ENABLE = 1 << 0
CTL_IMASK = 1 << 1
CTL_ISTATUS = 1 << 2
MASK64 = 0xFFFFFFFFFFFFFFFF
WATCH_SCANNING = 0   # skvm_vcpu.watch_until while a scan runs: every timer write pokes
WATCH_NEVER = MASK64  # ... while the watcher sleeps until a poke


@dataclass(slots=True)
class _Watched:
    state: SkvmVcpu
    fd: int
    loaded: bool = False
    masked: list[bool] = field(default_factory=lambda: [False, False])
    fired: list[bool] = field(default_factory=lambda: [False, False])
    timers: tuple[SkvmTimer, ...] = ()  # views of state.timer, made once

    def __post_init__(self) -> None:
        self.timers = (self.state.timer[VTIMER], self.state.timer[PTIMER])


def comparator_deadline_ns(ctl: int, cval: int, offset: int) -> int | None:
    """Host CLOCK_MONOTONIC time at which a comparator's condition (counter - ``offset`` >=
    ``cval``) is met, or None if its output is off (not enabled, or IMASK)."""
    if ctl & (CTL_ENABLE | CTL_IMASK) != CTL_ENABLE:
        return None
    return ((cval + offset) & MASK64) * NS_PER_TICK


def _deadline(watched: _Watched, timer: int) -> int | None:
    """When ``timer`` can raise the PPI: None while masked, once fired, or with its output off."""
    if watched.masked[timer] or watched.fired[timer]:
        return None
    t = watched.timers[timer]
    return comparator_deadline_ns(t.ctl, t.cval, watched.state.cntvoff if timer == VTIMER else 0)


def _armed(watched: _Watched) -> Iterator[tuple[int, int]]:
    """(timer, deadline) of each timer that can raise the PPI now: unmasked, not yet fired."""
    for timer in (VTIMER, PTIMER):
        when = _deadline(watched, timer)
        if when is not None:
            yield timer, when


class TimerIrq:
    """The host timer PPI of every loaded vCPU, served by one thread."""

    def __init__(self, on_fire: Callable[[object, int], None],
                 publish: Callable[[SkvmVcpu, int], None]) -> None:
        """``publish(state, until)`` stores ``watch_until`` with a full barrier (the shim's
        ``Native.publish_watch``)."""
        self._on_fire = on_fire
        self._publish = publish
        self._lock = threading.Lock()
        self._watched: dict[object, _Watched] = {}
        self._wake_r, self._wake_w = os.pipe()
        self._stopped = False
        self._wake_at: int | None = None   # when the watcher's current sleep ends (None: never)
        self.fires = 0
        self.pokes = 0
        self._thread = threading.Thread(target=self._loop, name="softkvm-timer-ppi", daemon=True)
        self._thread.start()

    def register(self, key: object, state: SkvmVcpu) -> None:
        """Give a vCPU its eventfd (poked by the shim on every timer register write)."""
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        state.notify_fd = fd
        with self._lock:
            self._watched[key] = _Watched(state, fd)
        self._poke()   # the watcher must listen to the new eventfd

    def load(self, key: object, masked: list[bool] | None = None) -> None:
        """The vCPU's timers are live in the hardware from now on (vcpu_load), with the PPI of
        each timer masked as ``masked`` says (set_masked for both, in the same step)."""
        with self._lock:
            watched = self._watched.get(key)
            if watched is None:
                return
            changed = not watched.loaded
            if changed:
                watched.loaded = True
                watched.fired[VTIMER] = watched.fired[PTIMER] = False
            if masked is not None and watched.masked != masked:
                changed = changed or not all(masked)  # an unmasked PPI may fire sooner
                watched.masked[:] = masked
            wake = changed and self._sooner_locked(watched)
        if wake:
            self._poke()

    def put(self, key: object) -> None:
        """The vCPU's timers are the hypervisor's again (vcpu_put): no PPI for them. (Unloading
        exposes no deadline: the watcher is never woken for it.)"""
        with self._lock:
            watched = self._watched.get(key)
            if watched is None or not watched.loaded:
                return
            watched.loaded = False
            watched.fired[VTIMER] = watched.fired[PTIMER] = False

    @property
    def wake_at_ns(self) -> int | None:
        """When the watcher's current sleep ends (None: it waits for a poke or an eventfd)."""
        return self._wake_at

    def set_masked(self, key: object, timer: int, masked: bool) -> None:
        """Leave the PPI active (masked) while KVM forwards a high level, or release it."""
        with self._lock:
            watched = self._watched.get(key)
            if watched is None or watched.masked[timer] == masked:
                return
            watched.masked[timer] = masked
            wake = not masked and watched.loaded and self._sooner_locked(watched)
        if wake:
            self._poke()

    def rearm(self, key: object) -> None:
        """The hypervisor has handled the last expiry: watch again for the next one."""
        with self._lock:
            watched = self._watched.get(key)
            if watched is None or not any(watched.fired):
                return
            watched.fired = [False, False]
            wake = watched.loaded and self._sooner_locked(watched)
        if wake:
            self._poke()

    def _sooner_locked(self, watched: _Watched) -> bool:
        """Whether ``watched`` has a live deadline before the watcher's planned wake-up (asked
        at every vcpu_load: a plain loop, no generator)."""
        wake_at = self._wake_at
        for timer in (VTIMER, PTIMER):
            when = _deadline(watched, timer)
            if when is not None and (wake_at is None or when < wake_at):
                return True
        return False

    def stop(self) -> None:
        self._stopped = True
        self._poke()
        self._thread.join(timeout=5)
        with self._lock:
            for watched in self._watched.values():
                os.close(watched.fd)
            self._watched.clear()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _poke(self) -> None:
        self.pokes += 1
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _loop(self) -> None:
        hard_timer_slack()
        while not self._stopped:
            due, timeout = self._scan()
            for key, timer in due:
                self.fires += 1
                self._on_fire(key, timer)
            with self._lock:
                # Every vCPU's eventfd, loaded or not: a load need not wake the watcher, so the
                # guest's first timer write after it must.
                fds = [w.fd for w in self._watched.values()]
            ready, _, _ = select.select([self._wake_r, *fds], [], [], timeout)
            for fd in ready:
                try:
                    os.read(fd, 64 if fd == self._wake_r else 8)
                except OSError:
                    pass

    def _scan(self) -> tuple[list[tuple[object, int]], float | None]:
        due: list[tuple[object, int]] = []
        earliest: int | None = None
        with self._lock:
            # Every write from here on pokes, until the sleep below is known: a write racing
            # with this scan either is seen by it or wakes the select that follows.
            for watched in self._watched.values():
                self._publish(watched.state, WATCH_SCANNING)
            now = monotonic_ns()
            for key, watched in self._watched.items():
                if not watched.loaded:
                    continue
                for timer, when in _armed(watched):
                    if when <= now:
                        watched.fired[timer] = True
                        due.append((key, timer))
                    elif earliest is None or when < earliest:
                        earliest = when
            # Under the lock, so that a load/unmask/rearm after this scan sees where the sleep
            # ends and pokes if it exposes an earlier deadline.
            self._wake_at = earliest
            until = WATCH_NEVER if earliest is None else earliest
            for watched in self._watched.values():
                self._publish(watched.state, until)
        timeout = None if earliest is None else max(0.0, (earliest - now) / 1e9)
        return due, timeout
