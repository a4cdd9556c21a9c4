"""The host half of the bench guest's ``irqfd`` sub-benchmarks (guests/bench/irqfd.c).

- edge rate: an :class:`EventfdDevice` (edge, window 1) on gsi 10; the guest acknowledges each
  delivery through the doorbell register, which frees the window for the next edge;
- level rate: an :class:`EventfdDevice` with a resamplefd on gsi 11; each EOI retires an event
  and the device asserts the line again;
- latency: a thread writes a plain eventfd on gsi 12, noting ``time.monotonic_ns()`` just before
  each write, and waits for the guest's doorbell acknowledgement (plus a random 1-3 ms gap)
  before the next one, so deliveries never coalesce and pair one to one with the guest's CNTPCT.

Only with softkvm's in-kernel irqchip (irqfd needs the vGIC).
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field

from softkvm.hw.clock import NS_PER_TICK
from softkvm.vmm.builder import Machine
from softkvm.vmm.devices.eventfd_device import EventfdDevice

EDGE_GSI, LEVEL_GSI, LAT_GSI = 10, 11, 12     # SPIs 42, 43, 44
DOORBELL_BASE = 0x0A00_0000                    # free in the virt map softkvm models
DOORBELL_SIZE = 0x1000
DOORBELL_EDGE, DOORBELL_LAT = 0x0, 0x4
ACK_TIMEOUT_S = 30.0


@dataclass(slots=True)
class IrqfdCounts:
    edge: int = 0
    level: int = 0
    lat: int = 0


@dataclass(slots=True)
class Doorbell:
    """A write-only 4 KiB window: offset 0 acknowledges an edge, offset 4 a latency sample."""

    host: IrqfdHost

    def mmio_read(self, offset: int, size: int) -> int:
        return 0

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        if offset == DOORBELL_EDGE:
            self.host.edge.ack()
        elif offset == DOORBELL_LAT:
            self.host.lat_acked.set()


@dataclass(eq=False)
class IrqfdHost:
    counts: IrqfdCounts
    edge: EventfdDevice = field(default_factory=lambda: EventfdDevice.create(
        level=False, window=1, name="bench-edge"))
    level: EventfdDevice = field(default_factory=lambda: EventfdDevice.create(
        level=True, name="bench-level"))
    lat_fd: int = field(default_factory=lambda: os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC))
    lat_acked: threading.Event = field(default_factory=threading.Event)
    write_ns: list[int] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def bootargs(self) -> str:
        c = self.counts
        return (f"irqfd irqfd-edge={c.edge} irqfd-level={c.level} irqfd-lat={c.lat} "
                f"doorbell={DOORBELL_BASE:#x}")

    def attach(self, machine: Machine) -> None:
        """Before the first vCPU runs: irqfds, the doorbell, the device threads."""
        vm = machine.vm
        vm.irqfd(self.edge.irqfd, EDGE_GSI)
        vm.irqfd(self.level.irqfd, LEVEL_GSI, resamplefd=self.level.resamplefd)
        vm.irqfd(self.lat_fd, LAT_GSI)
        machine.bus.add(DOORBELL_BASE, DOORBELL_SIZE, Doorbell(self), "bench-doorbell")
        self.edge.start()
        self.level.start()

    def on_line(self, line: str) -> None:
        """Called on the vCPU thread for each guest line: never blocks."""
        if line == "READY irqfd-edge":
            self.edge.raise_events(self.counts.edge)
        elif line == "READY irqfd-level":
            self.level.raise_events(self.counts.level)
        elif line == "READY irqfd-lat":
            thread = threading.Thread(target=self._latency_writer, name="bench-irqfd-lat",
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def latencies_us(self, pct: list[int]) -> list[float]:
        """Write -> handler latency per sample: the guest's CNTPCT is CLOCK_MONOTONIC / 16."""
        return [(p * NS_PER_TICK - t) / 1000 for p, t in zip(pct, self.write_ns)]

    def close(self) -> None:
        self._stop.set()
        self.lat_acked.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.edge.close()
        self.level.close()
        os.close(self.lat_fd)

    def _latency_writer(self) -> None:
        rng = random.Random(1)
        for _ in range(self.counts.lat):
            time.sleep(rng.uniform(0.001, 0.003))
            if self._stop.is_set():
                return
            self.lat_acked.clear()
            self.write_ns.append(time.monotonic_ns())
            os.eventfd_write(self.lat_fd, 1)
            if not self.lat_acked.wait(ACK_TIMEOUT_S) or self._stop.is_set():
                return
