"""The physical CPUs the vCPUs of a VM run on: one shared by all (``PhysCpu``), or one each
(``OwnCpus``).

Counterpart: the host scheduler KVM's vCPU threads run under. softkvm's own core translates for a
parallel context (``Core.set_parallel``: guest atomics are host atomics, broadcast TLB and code
maintenance reaches the other cores at the DSB), so with several vCPUs and host CPUs every vCPU
thread runs on its own, as KVM's do, and the host scheduler shares the host's CPUs among them
(``OwnCpus``; ``kvm/arm.py`` chooses at the VM's first KVM_RUN).

On a stock core, or a host with one CPU, guest atomics are only exact when one Unicorn instance
executes at a time (notes/unicorn.md §3), so a vCPU holds the ``PhysCpu`` token while it is "in
KVM_RUN" and gives it up when it exits to userspace, blocks, or is preempted. Waiters are served
in FIFO order (a plain lock lets the holder barge back in forever); a waiter asks for the holder to
be kicked once it has run for a quantum, which plays the host scheduler's tick.

A vCPU that exits to userspace (an MMIO access, say) keeps the token on *lease*, as a KVM vCPU
thread keeps its host CPU while the VMM handles the exit: otherwise a guest that holds a spinlock
while it prints would hand the CPU to the spinners at every character. When its quantum ends, or
when it is not back by then, a waiter takes the token over.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable

from softkvm.hw.clock import HostTimers, monotonic_ns

DEFAULT_QUANTUM_NS = 4_000_000


class PhysCpu:
    def __init__(self, timers: HostTimers, quantum_ns: int = DEFAULT_QUANTUM_NS) -> None:
        self._lock = threading.Lock()  # held directly on the per-exit paths: no wrapper call
        self._cond = threading.Condition(self._lock)
        self._holder: object | None = None
        self._since_ns = 0
        self._waiters: deque[object] = deque()
        self._leased = False
        self._timers = timers
        self.quantum_ns = quantum_ns
        self._preempt: Callable[[object], None] = lambda _owner: None
        self.switches = 0

    def traps_wfe(self, nr_vcpus: int) -> bool:
        return nr_vcpus > 1

    def set_preempt(self, preempt: Callable[[object], None]) -> None:
        """How to make the holder give the CPU up (the kick)."""
        self._preempt = preempt

    def acquire(self, owner: object) -> None:
        with self._lock:
            if self._holder is owner and self._leased:
                self._leased = False
                return
            if self._holder is None and not self._waiters:
                self._take(owner)
                return
            self._waiters.append(owner)
            if len(self._waiters) == 1:
                self._arm_preempt()
            while self._holder is not owner:
                self._cond.wait()

    def release(self, owner: object, lease: bool = False) -> None:
        """Give the CPU up; with ``lease``, keep it until the quantum ends (exit to userspace)."""
        with self._lock:
            if self._holder is not owner:
                return
            if lease and (not self._waiters or monotonic_ns() - self._since_ns < self.quantum_ns):
                self._leased = True
                return
            self._hand_over()

    def _hand_over(self) -> None:
        self._holder = None
        self._leased = False
        if self._waiters:
            self._take(self._waiters.popleft())
            if self._waiters:
                self._arm_preempt()
            self._cond.notify_all()

    def should_yield(self, owner: object) -> bool:
        """True when others wait and ``owner`` has had its quantum."""
        return bool(self._waiters) and monotonic_ns() - self._since_ns >= self.quantum_ns

    def has_waiters(self) -> bool:
        return bool(self._waiters)

    def yield_(self, owner: object) -> None:
        self.release(owner)
        self.acquire(owner)

    def _take(self, owner: object) -> None:
        self._holder = owner
        self._since_ns = monotonic_ns()
        self.switches += 1

    def _arm_preempt(self) -> None:
        holder, since = self._holder, self._since_ns
        if holder is None:
            return

        def tick() -> None:
            with self._cond:
                still = self._holder is holder and self._since_ns == since and self._waiters
                if still and self._leased:  # away in userspace past its quantum
                    self._hand_over()
                    return
            if still:
                self._preempt(holder)

        self._timers.arm(since + self.quantum_ns, tick)


class OwnCpus:
    """Every vCPU thread runs when the host schedules it, in parallel with the others: nothing
    to take turns on, no quantum to preempt. ``host_cpus`` is how many CPUs those threads may
    use; with more vCPUs than that, they share them and WFE traps (as KVM traps it when a vCPU
    is not alone on its CPU)."""

    switches = 0

    def __init__(self, host_cpus: int) -> None:
        self.host_cpus = host_cpus

    def traps_wfe(self, nr_vcpus: int) -> bool:
        return nr_vcpus > self.host_cpus

    def set_preempt(self, preempt: Callable[[object], None]) -> None:
        pass

    def acquire(self, owner: object) -> None:
        pass

    def release(self, owner: object, lease: bool = False) -> None:
        pass

    def should_yield(self, owner: object) -> bool:
        return False

    def has_waiters(self) -> bool:
        return False

    def yield_(self, owner: object) -> None:
        os.sched_yield()  # a WFE spinner lets a vCPU that shares its CPU run
