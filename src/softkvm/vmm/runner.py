"""vCPU threads and exit handling: the VMM's side of KVM_RUN.

Counterpart: QEMU's accel/kvm/kvm-all.c ``kvm_cpu_exec`` and kvmtool's ``kvm_cpu__start``: one
thread per vCPU loops on ``run()`` and handles each exit value; MMIO goes to the bus, a system
event stops the machine. Exit handling is a plain function of (vcpu, kvm_run) so tests can feed
it exits directly.

Coalesced MMIO writes are drained to the bus after every ``run()``, before its exit is handled
(``kvm_flush_coalesced_mmio_buffer``), so devices see them in guest order. The thread that
waits for the guest also drains the ring every ``COALESCED_FLUSH_S``: a guest that writes and
then only waits (WFI is handled in the kernel) still has its writes delivered.
"""

from __future__ import annotations

import ctypes
import itertools
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from softkvm.kvm import uapi
from softkvm.kvm.api import KvmCoalescedMmioRing, Vcpu, Vm
from softkvm.kvm.errors import KvmError
from softkvm.kvm.kvm_run import MMIO_DATA, KvmRun
from softkvm.vmm.bus import Bus


COALESCED_FLUSH_S = 0.02
_RING_ENTRY = struct.Struct("<QII8s")  # struct kvm_coalesced_mmio: phys_addr, len, pio, data[8]


class StopReason(Enum):
    POWER_OFF = "the guest powered off (PSCI SYSTEM_OFF)"
    RESET = "the guest asked for a reset (PSCI SYSTEM_RESET)"
    TIMEOUT = "the guest did not power off in time"
    INTERNAL_ERROR = "internal error"
    STOPPED = "stopped by the host"


class ExitHook(Protocol):
    """Extra exit handling (e.g. the userspace irqchip reading device_irq_level)."""

    def __call__(self, vcpu: Vcpu, run: KvmRun) -> None: ...


@dataclass(slots=True)
class RunResult:
    reason: StopReason
    message: str = ""
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 0 if self.reason in (StopReason.POWER_OFF, StopReason.RESET) else 1


@dataclass(slots=True)
class Runner:
    vm: Vm
    bus: Bus
    on_exit: list[ExitHook] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _result: RunResult | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _coalesced_lock: threading.Lock = field(default_factory=threading.Lock)
    _ring: KvmCoalescedMmioRing | None = None
    unhandled_mmio: int = 0

    def run(self, timeout: float | None = None) -> RunResult:
        """Start every vCPU thread and wait for the guest to stop (or the timeout)."""
        start = time.monotonic()
        threads = [threading.Thread(target=self._vcpu_thread, args=(v,), daemon=True,
                                    name=f"vcpu{v.vcpu_id}") for v in self.vm.vcpus]
        for thread in threads:
            thread.start()
        deadline = None if timeout is None else start + timeout
        while not self._stop.wait(COALESCED_FLUSH_S):
            self.flush_coalesced_mmio()
            if deadline is not None and time.monotonic() >= deadline:
                self.stop(RunResult(StopReason.TIMEOUT, f"no power-off after {timeout:g} s"))
        for thread in threads:
            thread.join()
        self.flush_coalesced_mmio()
        assert self._result is not None
        self._result.seconds = time.monotonic() - start
        return self._result

    def stop(self, result: RunResult) -> None:
        with self._lock:
            if self._result is None:
                self._result = result
        self._stop.set()
        for vcpu in self.vm.vcpus:
            vcpu.interrupt()

    def _vcpu_thread(self, vcpu: Vcpu) -> None:
        try:
            while not self._stop.is_set():
                run = vcpu.run()
                self.flush_coalesced_mmio()
                for hook in self.on_exit:
                    hook(vcpu, run)
                self.handle_exit(vcpu, run)
        except KvmError as err:
            self.stop(RunResult(StopReason.INTERNAL_ERROR, f"vCPU {vcpu.vcpu_id}: {err}"))
        except Exception as err:  # noqa: BLE001 - a dead vCPU thread must stop the machine
            self.stop(RunResult(StopReason.INTERNAL_ERROR,
                                f"vCPU {vcpu.vcpu_id}: {type(err).__name__}: {err}"))

    def flush_coalesced_mmio(self) -> None:
        """Hand the queued coalesced writes to the bus, oldest first (any thread)."""
        ring = self._ring
        if ring is None:
            if not self.vm.vcpus:
                return
            ring = self._ring = self.vm.vcpus[0].coalesced_mmio_ring  # the VM's one ring
        if ring.first == ring.last:
            return
        with self._coalesced_lock:  # one consumer at a time keeps the writes in order
            last = ring.last
            writes = _ring_entries(ring, ring.first, last)
            # A run of writes to one register (a console line's UARTDR bytes) goes to the
            # device at once: one sink write rather than one per byte.
            for (addr, size), run in itertools.groupby(writes, key=lambda w: (w[0], w[1])):
                values = [value for _, _, value in run]
                if not self.bus.write_burst(addr, size, values):
                    self.unhandled_mmio += len(values)  # queued: too late for an abort, as on KVM
            ring.first = last

    def handle_exit(self, vcpu: Vcpu, run: KvmRun) -> None:
        handler = EXIT_HANDLERS.get(run.exit_reason)
        if handler is None:
            self.stop(RunResult(StopReason.INTERNAL_ERROR,
                                f"vCPU {vcpu.vcpu_id}: unexpected exit {run.exit_name}"))
            return
        handler(self, vcpu, run)

    def _mmio(self, vcpu: Vcpu, run: KvmRun) -> None:
        mmio = run.mmio
        if mmio.is_write:
            value = int.from_bytes(mmio.data[: mmio.len], "little")
            handled = self.bus.write(mmio.phys_addr, mmio.len, value)
        else:
            result = self.bus.read(mmio.phys_addr, mmio.len)
            handled = result is not None
            MMIO_DATA.pack_into(mmio.data, 0, result or 0)
        if not handled:  # no device there: an external abort, as on QEMU's virt board
            self.unhandled_mmio += 1
            vcpu.set_vcpu_events(ext_dabt_pending=True)

    def _system_event(self, vcpu: Vcpu, run: KvmRun) -> None:
        kind = run.system_event.type
        if kind == uapi.KVM_SYSTEM_EVENT_SHUTDOWN:
            self.stop(RunResult(StopReason.POWER_OFF))
        elif kind == uapi.KVM_SYSTEM_EVENT_RESET:
            self.stop(RunResult(StopReason.RESET))
        else:
            self.stop(RunResult(StopReason.INTERNAL_ERROR, f"system event type {kind}"))

    def _intr(self, vcpu: Vcpu, run: KvmRun) -> None:
        """A signal or forced exit: nothing to do unless we are stopping (checked by the loop)."""

    def _internal(self, vcpu: Vcpu, run: KvmRun) -> None:
        self.stop(RunResult(StopReason.INTERNAL_ERROR,
                            f"vCPU {vcpu.vcpu_id}: {run.internal.message}"))


EXIT_HANDLERS: dict[int, Callable[[Runner, Vcpu, KvmRun], None]] = {
    uapi.KVM_EXIT_MMIO: Runner._mmio,
    uapi.KVM_EXIT_SYSTEM_EVENT: Runner._system_event,
    uapi.KVM_EXIT_INTR: Runner._intr,
    uapi.KVM_EXIT_INTERNAL_ERROR: Runner._internal,
}


def _ring_entries(ring: KvmCoalescedMmioRing, first: int, last: int) -> list[tuple[int, int, int]]:
    """The ring's entries [first, last) as (phys_addr, len, value), oldest first."""
    count = len(ring.coalesced_mmio)
    base = ctypes.addressof(ring) + type(ring).coalesced_mmio.offset
    spans = [(first, last)] if first <= last else [(first, count), (0, last)]
    blob = b"".join(ctypes.string_at(base + start * _RING_ENTRY.size,
                                      (end - start) * _RING_ENTRY.size) for start, end in spans)
    return [(addr, size, int.from_bytes(data[:size], "little"))
            for addr, size, _pio, data in _RING_ENTRY.iter_unpack(blob)]
