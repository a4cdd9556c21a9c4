"""A device that interrupts through an irqfd (and a resamplefd): the interrupt-load generator.

Counterpart: the two ways devices outside the VMM's vCPU threads raise interrupts with KVM —
vhost's edge irqfd (write the eventfd per event) and VFIO's INTx with a resamplefd (assert through
the irqfd, wait for the guest's EOI on the resamplefd, assert again while events remain). It has
no registers: the guest cannot see it, only its interrupts. Used by tests and the benchmark.

Modes:
- **edge** (no resamplefd): every event is one 8-byte write of 1 to the irqfd. With ``window``
  set, at most ``window`` events are outstanding: the next one is sent only after :meth:`ack`
  (the consumer's "handled it") — a handshake that makes per-event delivery deterministic.
  Without a window the events go out as fast as the thread can write (KVM may coalesce them).
- **level** (resamplefd given): the line is asserted with one irqfd write while events remain;
  each signal on the resamplefd (the guest EOIed and KVM lowered the line) retires one event —
  the device has no status register, so the EOI is its acknowledgement — and the line is
  asserted again if events remain. One device per GSI: on a shared GSI every device's
  resamplefd is signalled at each EOI, which this device would take for its own.

One thread per device does all eventfd I/O; :meth:`raise_events`, :meth:`ack` and :meth:`stop`
may be called from any thread. The loop touches nothing but the two eventfds and its own wake
eventfd, so it could equally run in another process. ``stats`` counts what happened.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class EventfdDeviceStats:
    raised: int = 0       # events requested through raise_events
    signals: int = 0      # irqfd writes (edge: one per event; level: one per assertion)
    resamples: int = 0    # resamplefd signals read
    retired: int = 0      # events done: edge sent (or acked, with a window); level EOIed
    spurious: int = 0     # resamplefd signals while the line was not asserted


class EventfdDevice:
    """An interrupt source behind ``irqfd`` (edge) or ``irqfd`` + ``resamplefd`` (level)."""

    def __init__(self, irqfd: int, resamplefd: int | None = None, *, window: int | None = None,
                 name: str = "eventfd-device") -> None:
        _check_window(window)
        self.irqfd = irqfd
        self.resamplefd = resamplefd
        self.window = window
        self.name = name
        self.stats = EventfdDeviceStats()
        self._owns_fds = False
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._pending = 0       # events not yet retired (level) / not yet sent (edge)
        self._acked = 0
        self._asserted = False
        self._stop = False
        self._thread: threading.Thread | None = None

    @classmethod
    def create(cls, level: bool = False, *, window: int | None = None,
               name: str = "eventfd-device") -> EventfdDevice:
        """A device with eventfds of its own (non-blocking, close-on-exec; closed by close())."""
        _check_window(window)
        flags = os.EFD_NONBLOCK | os.EFD_CLOEXEC
        irqfd = os.eventfd(0, flags)
        resamplefd = os.eventfd(0, flags) if level else None
        device = cls(irqfd, resamplefd, window=window, name=name)
        device._owns_fds = True
        return device

    @property
    def level(self) -> bool:
        return self.resamplefd is not None

    # --- control (any thread) -----------------------------------------------------------------

    def start(self) -> EventfdDevice:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def raise_events(self, count: int = 1) -> None:
        """Queue ``count`` more events."""
        with self._lock:
            self._pending += count
            self.stats.raised += count
        self._wake()

    def ack(self, count: int = 1) -> None:
        """Edge mode: the consumer handled ``count`` events (frees window slots)."""
        with self._lock:
            self._acked += count
            if self.window is not None:
                self.stats.retired += count
            self._changed.notify_all()
        self._wake()

    @property
    def outstanding(self) -> int:
        """Edge: events sent and not acknowledged; level: 1 while the line is asserted."""
        with self._lock:
            if self.level:
                return int(self._asserted)
            return self.stats.signals - self._acked

    def idle(self) -> bool:
        with self._lock:
            return self._idle()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every raised event is retired (edge with a window: sent and acked)."""
        with self._changed:
            return self._changed.wait_for(self._idle, timeout)

    def wait_signals(self, count: int, timeout: float) -> bool:
        """Wait until the irqfd has been written ``count`` times in all."""
        return self.wait_until(lambda stats: stats.signals >= count, timeout)

    def wait_until(self, predicate: Callable[[EventfdDeviceStats], bool], timeout: float) -> bool:
        """Wait until ``predicate(stats)`` holds (checked at every change of the device)."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self.stats), timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stop = True
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)

    def close(self) -> None:
        """Stop the thread and close the wake eventfd (and the device's own eventfds)."""
        self.stop()
        if self._wake_fd >= 0:
            os.close(self._wake_fd)
            self._wake_fd = -1
        if self._owns_fds:
            os.close(self.irqfd)
            if self.resamplefd is not None:
                os.close(self.resamplefd)
            self._owns_fds = False

    def __enter__(self) -> EventfdDevice:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- the device thread ------------------------------------------------------------------

    def _idle(self) -> bool:
        if self._pending:
            return False
        return self.window is None or self.level or self.stats.signals == self._acked

    def _wake(self) -> None:
        if self._wake_fd >= 0:
            os.eventfd_write(self._wake_fd, 1)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._wake_fd, select.POLLIN)
        if self.resamplefd is not None:
            poller.register(self.resamplefd, select.POLLIN)
        while True:
            with self._lock:
                if self._stop:
                    return
                if self._should_signal():   # written under the lock: stats never run ahead
                    self._signal_locked()
                    continue
            for fd, _revents in poller.poll():
                count = _read(fd)
                if fd != self._wake_fd:
                    self._resampled(count)

    def _should_signal(self) -> bool:
        if not self._pending:
            return False
        if self.level:
            return not self._asserted
        return self.window is None or self.stats.signals - self._acked < self.window

    def _signal_locked(self) -> None:
        os.eventfd_write(self.irqfd, 1)
        self.stats.signals += 1
        if self.level:
            self._asserted = True
        else:
            self._pending -= 1
            if self.window is None:
                self.stats.retired += 1
        self._changed.notify_all()

    def _resampled(self, count: int) -> None:
        """The guest EOIed (``count`` signals read at once): the line is low again."""
        if not count:
            return
        with self._lock:
            self.stats.resamples += count
            if self._asserted:
                self._asserted = False
                self._pending -= 1
                self.stats.retired += 1
                count -= 1
            self.stats.spurious += count
            self._changed.notify_all()


def _check_window(window: int | None) -> None:
    if window is not None and window < 1:
        raise ValueError("window must be at least 1 (or None for no limit)")


def _read(fd: int) -> int:
    try:
        return os.eventfd_read(fd)
    except BlockingIOError:
        return 0
