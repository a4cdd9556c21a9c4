"""Host timers: the hrtimer stand-in, and the guest's counter.

Counterpart: kernel/time/hrtimer.c as KVM uses it (timer expiry, the background timer that wakes a
blocked vCPU, preemption ticks). One thread per VM keeps a heap of deadlines on CLOCK_MONOTONIC
and runs each callback on that thread; callbacks must be short (set a flag, kick, notify).
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

COUNTER_HZ = 62_500_000  # CNTFRQ_EL0 of the core: CLOCK_MONOTONIC ns / 16
NS_PER_TICK = 16
PR_SET_TIMERSLACK = 29  # prctl(2)


def monotonic_ns() -> int:
    return time.monotonic_ns()


def counter_now() -> int:
    """CNTPCT_EL0 as the guest sees it right now."""
    return time.monotonic_ns() // NS_PER_TICK


def ticks_to_ns(ticks: int) -> int:
    return ticks * NS_PER_TICK


def hard_timer_slack() -> None:
    """Let the calling thread's timed waits end on time, as KVM's timers are hard hrtimers: Linux
    lets an ordinary thread's timeout run up to 50 us late (its timer slack), and 1 ns is the
    least it takes. Where prctl is missing, nothing changes."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


@dataclass(slots=True, order=True)
class _Entry:
    deadline_ns: int
    seq: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class HrTimer:
    """A cancellable handle to one armed callback."""

    __slots__ = ("_entry",)

    def __init__(self, entry: _Entry) -> None:
        self._entry = entry

    def cancel(self) -> None:
        self._entry.cancelled = True

    @property
    def deadline_ns(self) -> int:
        return self._entry.deadline_ns


class HostTimers:
    """A deadline heap served by one daemon thread."""

    def __init__(self, name: str = "softkvm-hrtimer") -> None:
        self._heap: list[_Entry] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def arm(self, deadline_ns: int, callback: Callable[[], None]) -> HrTimer:
        entry = _Entry(deadline_ns, next(self._seq), callback)
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:
                self._cond.notify()
        return HrTimer(entry)

    def arm_after(self, delay_ns: int, callback: Callable[[], None]) -> HrTimer:
        return self.arm(monotonic_ns() + delay_ns, callback)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        hard_timer_slack()
        while True:
            with self._cond:
                entry = self._next_due()
                if entry is None:
                    return
            if not entry.cancelled:
                entry.callback()

    def _next_due(self) -> _Entry | None:
        while not self._stopped:
            while self._heap and self._heap[0].cancelled:
                heapq.heappop(self._heap)
            if not self._heap:
                self._cond.wait()
                continue
            delay = self._heap[0].deadline_ns - monotonic_ns()
            if delay <= 0:
                return heapq.heappop(self._heap)
            self._cond.wait(delay / 1e9)
        return None
