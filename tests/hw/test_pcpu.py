"""The shared physical CPU: FIFO hand-over, preemption after a quantum, leases."""

import threading
import time

from softkvm.hw.clock import HostTimers
from softkvm.hw.pcpu import PhysCpu


def make(quantum_ms=5):
    timers = HostTimers()
    pcpu = PhysCpu(timers, quantum_ns=quantum_ms * 1_000_000)
    kicked = []
    pcpu.set_preempt(kicked.append)
    return timers, pcpu, kicked


def test_fifo_and_preempt_kick():
    timers, pcpu, kicked = make()
    order = []
    pcpu.acquire("a")
    threads = [threading.Thread(target=lambda n=n: (pcpu.acquire(n), order.append(n),
                                                     pcpu.release(n))) for n in "bc"]
    threads[0].start()
    time.sleep(0.05)
    threads[1].start()
    time.sleep(0.05)
    assert kicked and kicked[0] == "a"  # a waiter asked for the holder to be preempted
    assert pcpu.should_yield("a")
    pcpu.release("a")
    for t in threads:
        t.join(5)
    assert order == ["b", "c"]
    timers.stop()


def test_lease_keeps_the_cpu_within_the_quantum_then_hands_it_over():
    timers, pcpu, _kicked = make(quantum_ms=200)
    pcpu.acquire("a")
    pcpu.release("a", lease=True)
    got = threading.Event()
    t = threading.Thread(target=lambda: (pcpu.acquire("b"), got.set()))
    t.start()
    pcpu.acquire("a")  # back from userspace within the quantum: still ours
    assert not got.is_set()
    pcpu.release("a", lease=True)  # away again; the waiter's tick ends the lease
    assert got.wait(5)
    t.join(5)
    timers.stop()
