"""Tracepoints at KVM's trace sites, recorded into a per-VM in-memory ring buffer.

Counterpart: arch/arm64/kvm/trace_arm.h (``kvm_entry``, ``kvm_exit``, ``kvm_irq_line``,
``kvm_mmio``, ``kvm_timer_update_irq``, ``kvm_timer_save_state``, ``kvm_timer_restore_state``,
``kvm_timer_hrtimer_expire``), trace_handle_exit.h (``kvm_wfx_arm64``, ``kvm_hvc_arm64``),
vgic/trace.h (``vgic_update_irq_pending``), include/trace/events/kvm.h (``kvm_userspace_exit``,
``kvm_vcpu_wakeup``, ``kvm_set_irq``, ``kvm_ack_irq``) and the ftrace ring buffer that holds them.
softkvm adds points the kernel gets from hardware or other subsystems: the host timer PPI, irqfd
inject/resample, PSCI calls, SGI generation and the guest's acknowledge / EOI / deactivate at the
(virtual or userspace) GIC CPU interface — the ends of the interrupt flows a trace shows.

Free when disabled: every site is written ``if tracer.on: tracer.emit(...)`` — one attribute test;
no argument is computed, formatted or allocated unless tracing is on. The tracer exists from VM
creation (``Vm.tracer``, shared by its vCPUs, vGIC, timers and irqfds) and is switched on by the
VMM (``--trace``). Any thread may emit (vCPU threads, which also record the timer PPI and the
background timer as they take them, the irqfd poller, the VMM's threads): the timestamp is taken under the buffer's lock, so the
buffer is in time order. When full the oldest events are overwritten (ftrace's overwrite mode)
and counted in ``overrun``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from softkvm.arch import esr as E
from softkvm.hw.core import CoreExit, ExitKind

DEFAULT_CAPACITY = 1 << 19   # events kept; a busy Linux boot overwrites its oldest ones


@dataclass(frozen=True, slots=True)
class Tracepoint:
    category: str
    summary: str


# Every event softkvm emits, with its category (the exporter's ``cat``) and where it fires.
TRACEPOINTS: dict[str, Tracepoint] = {
    "kvm_entry": Tracepoint("kvm", "the run loop enters the guest (vcpu_pc)"),
    "kvm_exit": Tracepoint("kvm", "the guest exited: ret IRQ/TRAP, esr_ec and its class name"),
    "kvm_userspace_exit": Tracepoint("kvm", "KVM_RUN returns to the VMM (reason, errno)"),
    "kvm_vcpu_wakeup": Tracepoint("kvm", "a blocked vCPU (WFI, CPU_SUSPEND) woke after ns"),
    "kvm_wfx_arm64": Tracepoint("kvm", "WFI/WFE trapped (vcpu_pc, is_wfe)"),
    "kvm_hvc_arm64": Tracepoint("kvm", "HVC trapped (vcpu_pc, r0, imm)"),
    "kvm_mmio": Tracepoint("mmio", "MMIO access: read, write or unsatisfied-read (to the VMM)"),
    "kvm_psci_call": Tracepoint("psci", "PSCI/SMCCC call handled in the kernel (fn, result)"),
    "kvm_irq_line": Tracepoint("irq", "KVM_IRQ_LINE (type CPU/SPI/PPI, vcpu, irq, level)"),
    "kvm_set_irq": Tracepoint("irq", "an irqfd GSI driven through the routing (gsi, intid)"),
    "kvm_ack_irq": Tracepoint("irq", "guest EOI of a level SPI seen by the routing (pin)"),
    "irqfd_inject": Tracepoint("irqfd", "the poller consumed an irqfd's counter (gsi, count)"),
    "irqfd_resample": Tracepoint("irqfd", "a resampler lowered its GSI and signalled"),
    "kvm_timer_update_irq": Tracepoint("timer", "a timer's output level (irq, level)"),
    "kvm_timer_save_state": Tracepoint("timer", "vcpu_put saved a timer (ctl, cval, timer)"),
    "kvm_timer_restore_state": Tracepoint("timer", "vcpu_load restored a timer"),
    "kvm_timer_ppi": Tracepoint("timer", "the host timer PPI fired for a loaded timer (taken "
                                "after the exit it caused)"),
    "kvm_timer_hrtimer_expire": Tracepoint("timer", "the background timer of a blocked vCPU "
                                           "expired"),
    "vgic_update_irq_pending": Tracepoint("vgic", "kvm_vgic_inject_irq (irq, level)"),
    "vgic_send_sgi": Tracepoint("vgic", "the guest generated an SGI (intid, targets mask)"),
    "vgic_ack": Tracepoint("vgic", "guest acknowledge (IAR) at the virtual CPU interface"),
    "vgic_eoi": Tracepoint("vgic", "guest EOI (priority drop, deactivation unless EOImode)"),
    "vgic_dir": Tracepoint("vgic", "guest deactivation (DIR) with EOImode 1"),
    "user_gic_set_irq": Tracepoint("gic", "userspace GIC: an input wire changed"),
    "user_gic_send_sgi": Tracepoint("gic", "userspace GIC: GICD_SGIR write"),
    "user_gic_ack": Tracepoint("gic", "userspace GIC: GICC_IAR/AIAR acknowledge"),
    "user_gic_eoi": Tracepoint("gic", "userspace GIC: GICC_EOIR/AEOIR"),
    "user_gic_dir": Tracepoint("gic", "userspace GIC: GICC_DIR"),
}

# The kernel's names of the exception classes (kvm_arm_exception_class).
EXCEPTION_CLASS = {
    E.EC_UNKNOWN: "UNKNOWN", E.EC_WFX: "WFx", E.EC_SVC64: "SVC64", E.EC_HVC64: "HVC64",
    E.EC_SMC64: "SMC64", E.EC_SYS64: "SYS64", E.EC_SVE: "SVE", E.EC_IABT_LOW: "IABT_LOW",
    E.EC_IABT_CUR: "IABT_CUR", E.EC_PC_ALIGN: "PC_ALIGN", E.EC_DABT_LOW: "DABT_LOW",
    E.EC_DABT_CUR: "DABT_CUR", E.EC_SP_ALIGN: "SP_ALIGN", E.EC_SERROR: "SERROR",
    E.EC_BRK64: "BRK64",
}
# The class a trap of each kind has in ESR_EL2; aborts on unbacked memory come from the core
# without a syndrome, and a kick is a host interrupt (kernel: ARM_EXCEPTION_IRQ).
_EXIT_EC = {ExitKind.HVC: E.EC_HVC64, ExitKind.SMC: E.EC_SMC64, ExitKind.WFX: E.EC_WFX,
            ExitKind.SYSREG: E.EC_SYS64, ExitKind.DABT: E.EC_DABT_LOW,
            ExitKind.IABT: E.EC_IABT_LOW}


@dataclass(slots=True)   # not frozen: a frozen __init__ costs twice as much per record
class TraceEvent:
    """One record: monotonic ns, the vCPU it concerns (-1: none), the emitting thread."""

    ts_ns: int
    vcpu: int
    name: str
    args: dict[str, object]
    thread_id: int
    thread_name: str


class Tracer:
    """A VM's tracepoints: ``on`` gates every site; ``emit`` records one event."""

    __slots__ = ("_events", "_lock", "emitted", "on", "start_ns")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.on = False
        self._lock = threading.Lock()
        self._events: deque[TraceEvent] = deque(maxlen=capacity)
        self.emitted = 0
        self.start_ns = 0

    def enable(self, capacity: int | None = None) -> None:
        """Start recording (into an emptied buffer of ``capacity`` events if given)."""
        with self._lock:
            if capacity is not None:
                self._events = deque(maxlen=capacity)
            if not self._events:
                self.start_ns = time.monotonic_ns()
            self.on = True

    def disable(self) -> None:
        self.on = False

    def emit(self, name: str, vcpu: int, **args: object) -> None:
        """Record ``name`` for ``vcpu`` (-1 for none). Call only under ``if tracer.on``."""
        thread = threading.current_thread()
        with self._lock:
            self._events.append(TraceEvent(time.monotonic_ns(), vcpu, name, args,
                                           thread.ident or 0, thread.name))
            self.emitted += 1

    def events(self) -> list[TraceEvent]:
        """A snapshot of the buffer, oldest first."""
        with self._lock:
            return list(self._events)

    @property
    def overrun(self) -> int:
        """Events overwritten because the buffer was full."""
        with self._lock:
            return self.emitted - len(self._events)

    def clear(self) -> None:
        with self._lock:
            self._events.clear()
            self.emitted = 0
            self.start_ns = time.monotonic_ns()


# --- argument builders for the busier sites (called only when tracing is on) -------------------


def kvm_exit(tracer: Tracer, vcpu_id: int, exit_: CoreExit, pc: int) -> None:
    """``trace_kvm_exit(ret, esr_ec, vcpu_pc)``: the exit's class as the kernel names it."""
    kind = exit_.kind
    if kind is ExitKind.KICKED:
        ret, ec, reason = "IRQ", 0, "IRQ"
    elif kind is ExitKind.INTERNAL:
        ret, ec, reason = "INTERNAL", E.esr_ec(exit_.esr), "INTERNAL"
    else:
        ec = E.esr_ec(exit_.esr) if exit_.esr else _EXIT_EC[kind]
        ret, reason = "TRAP", EXCEPTION_CLASS.get(ec, f"EC_{ec:#x}")
    tracer.emit("kvm_exit", vcpu_id, ret=ret, esr_ec=ec, reason=reason, vcpu_pc=pc)
