"""The vCPU run loop, vCPU init, requests, kicks and blocking.

Counterpart: arch/arm64/kvm/arm.c (``kvm_arch_vcpu_ioctl_run``, ``kvm_vcpu_first_run_init``,
``check_vcpu_requests``, ``kvm_arch_vcpu_ioctl_vcpu_init``) and virt/kvm/kvm_main.c
(``kvm_vcpu_kick``, ``kvm_vcpu_block``). The loop order is KVM's; design notes in
kvm-arm-reference.md §8.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from softkvm.hw.clock import monotonic_ns
from softkvm.kvm import handle_exit, mmio, uapi
from softkvm.kvm.errors import KvmError

if TYPE_CHECKING:
    from softkvm.kvm.api import Vcpu

REQ_SLEEP = "SLEEP"
REQ_VCPU_RESET = "VCPU_RESET"
REQ_IRQ_PENDING = "IRQ_PENDING"

SUPPORTED_FEATURES = (1 << uapi.KVM_ARM_VCPU_POWER_OFF) | (1 << uapi.KVM_ARM_VCPU_PSCI_0_2) | (
    1 << uapi.KVM_ARM_VCPU_PMU_V3)


class IrqChipOps(Protocol):
    """What the run loop asks of the in-kernel irqchip (vGIC + timers) around each entry."""

    def first_run(self, vcpu: Vcpu) -> None: ...
    def vcpu_load(self, vcpu: Vcpu) -> None: ...
    def vcpu_put(self, vcpu: Vcpu, blocking: bool) -> None: ...
    def flush(self, vcpu: Vcpu) -> None: ...
    def sync(self, vcpu: Vcpu) -> None: ...
    def pending(self, vcpu: Vcpu) -> bool: ...
    def next_deadline_ns(self, vcpu: Vcpu) -> int | None: ...
    def reset(self, vcpu: Vcpu) -> None: ...


def reset_mpidr(vcpu_id: int) -> int:
    """MPIDR as KVM assigns it (sys_regs.c reset_mpidr): 16 CPUs per Aff1 cluster."""
    return (vcpu_id & 0x0F) | ((vcpu_id >> 4) & 0xFF) << 8 | ((vcpu_id >> 12) & 0xFF) << 16


# --- KVM_ARM_VCPU_INIT ------------------------------------------------------------------------


def kvm_arch_vcpu_ioctl_vcpu_init(vcpu: Vcpu, target: int, features: int) -> None:
    if target != uapi.KVM_ARM_TARGET_GENERIC_V8:
        raise KvmError(errno.EINVAL, f"unsupported vCPU target {target}: use "
                       "KVM_ARM_TARGET_GENERIC_V8 (5)")
    if features & ~SUPPORTED_FEATURES:
        raise KvmError(errno.EINVAL, f"unsupported vCPU features {features & ~SUPPORTED_FEATURES:#x}")
    if vcpu.initialized and features != vcpu.features:
        raise KvmError(errno.EINVAL, "re-init must repeat the same features")
    vcpu.features = features
    vcpu.initialized = True
    vcpu.power_off = bool(features & (1 << uapi.KVM_ARM_VCPU_POWER_OFF))
    kvm_reset_vcpu(vcpu, pc=0, x0=0)


def kvm_reset_vcpu(vcpu: Vcpu, pc: int, x0: int) -> None:
    vcpu.core.reset(pc, x0)
    chip = irqchip(vcpu)
    if chip is not None:
        chip.reset(vcpu)


def irqchip(vcpu: Vcpu) -> IrqChipOps | None:
    return vcpu.vm.vgic  # type: ignore[return-value]


# --- kicks, requests, blocking ----------------------------------------------------------------


def kvm_make_request(vcpu: Vcpu, req: str) -> None:
    vcpu.requests.add(req)


def kvm_vcpu_kick(vcpu: Vcpu) -> None:
    """Make the vCPU notice its requests: stop it if it runs, wake it if it waits."""
    vcpu.core.kick()
    with vcpu.cond:
        vcpu.cond.notify_all()


def kvm_vcpu_wake_up(vcpu: Vcpu) -> None:
    with vcpu.cond:
        vcpu.cond.notify_all()


def broadcast_flush(vcpu: Vcpu, tlbi: bool, ic: bool) -> None:
    """TLBI ...IS / IC IALLUIS seen on ``vcpu``: the others flush before they next run."""
    for other in vcpu.vm.vcpus:
        if other is vcpu:
            continue
        if tlbi:
            other.pending_tlb_flush = True
            vcpu.vm.stats.remote_tlb_flush += 1
        if ic:
            other.pending_tb_flush = True
            vcpu.vm.stats.remote_tb_flush += 1


def _wait(vcpu: Vcpu, until: Callable[[], bool], deadline_of: Callable[[], float | None]) -> bool:
    """Give up the physical CPU and sleep until ``until()`` or a signal; False on signal."""
    vm = vcpu.vm
    vm.pcpu.release(vcpu)
    vcpu.blocked = True
    try:
        with vcpu.cond:
            while not until():
                if vcpu.signal_pending:
                    return False
                timeout = deadline_of()
                vcpu.cond.wait(timeout)
        return True
    finally:
        vcpu.blocked = False
        vm.pcpu.acquire(vcpu)


def kvm_vcpu_block(vcpu: Vcpu) -> None:
    """WFI: sleep until the vCPU is runnable, a timer is due, a request or a signal arrives."""
    chip = irqchip(vcpu)
    if chip is not None:
        chip.vcpu_put(vcpu, True)

    def runnable() -> bool:
        return bool(vcpu.requests) or kvm_arch_vcpu_runnable(vcpu)

    def timeout() -> float | None:
        if chip is None:
            return None
        deadline = chip.next_deadline_ns(vcpu)
        if deadline is None:
            return None
        return max(0.0, (deadline - monotonic_ns()) / 1e9)

    _wait(vcpu, runnable, timeout)
    vcpu.stats.halt_wakeup += 1
    if chip is not None:
        chip.vcpu_load(vcpu)


def kvm_arch_vcpu_runnable(vcpu: Vcpu) -> bool:
    if vcpu.power_off:
        return False
    if vcpu.irq_lines[0] or vcpu.irq_lines[1]:
        return True
    chip = irqchip(vcpu)
    return chip is not None and chip.pending(vcpu)


def check_vcpu_requests(vcpu: Vcpu) -> bool:
    """Act on pending requests; False when a signal interrupted a powered-off sleep."""
    if REQ_SLEEP in vcpu.requests or vcpu.power_off:
        vcpu.requests.discard(REQ_SLEEP)
        if vcpu.power_off and not _wait(vcpu, lambda: not vcpu.power_off, lambda: None):
            vcpu.requests.add(REQ_SLEEP)
            return False
    if REQ_VCPU_RESET in vcpu.requests:
        vcpu.requests.discard(REQ_VCPU_RESET)
        pc, x0 = vcpu.reset_state or (0, 0)
        vcpu.reset_state = None
        kvm_reset_vcpu(vcpu, pc, x0)
    vcpu.requests.discard(REQ_IRQ_PENDING)
    return True


# --- KVM_RUN ----------------------------------------------------------------------------------


def kvm_vcpu_first_run_init(vcpu: Vcpu) -> None:
    vm = vcpu.vm
    with vm.lock:
        vm.has_run = True
        chip = irqchip(vcpu)
        if chip is not None:
            chip.first_run(vcpu)
    vcpu.has_run_once = True


def _return_intr(vcpu: Vcpu) -> None:
    run = vcpu.run_struct
    run.exit_reason = uapi.KVM_EXIT_INTR
    run.ret = -errno.EINTR
    vcpu.stats.signal_exits += 1


def kvm_arch_vcpu_ioctl_run(vcpu: Vcpu) -> object:
    if not vcpu.initialized:
        raise KvmError(errno.ENOEXEC, "KVM_RUN before KVM_ARM_VCPU_INIT: call arm_vcpu_init() "
                       "first")
    if vcpu.vm.closed:
        raise KvmError(errno.EBADF, "the VM is closed")
    run = vcpu.run_struct
    if not vcpu.has_run_once:
        kvm_vcpu_first_run_init(vcpu)
    if run.exit_reason == uapi.KVM_EXIT_MMIO:
        mmio.kvm_handle_mmio_return(vcpu)
    run.exit_reason, run.ret = uapi.KVM_EXIT_UNKNOWN, 0
    if run.immediate_exit or vcpu.signal_pending:
        vcpu.signal_pending = False
        _return_intr(vcpu)
        return run
    vcpu_load(vcpu)
    try:
        ret = 1
        while ret > 0:
            ret = _run_once(vcpu)
    finally:
        vcpu_put(vcpu)
    return run


def vcpu_load(vcpu: Vcpu) -> None:
    vcpu.vm.pcpu.acquire(vcpu)
    chip = irqchip(vcpu)
    if chip is not None:
        chip.vcpu_load(vcpu)


def vcpu_put(vcpu: Vcpu) -> None:
    chip = irqchip(vcpu)
    if chip is not None:
        chip.vcpu_put(vcpu, False)
    vcpu.vm.pcpu.release(vcpu, lease=True)


def _run_once(vcpu: Vcpu) -> int:
    """One trip into the guest and back: 1 to go round again, 0 to return to userspace."""
    if not check_vcpu_requests(vcpu):
        _return_intr(vcpu)
        return 0
    if vcpu.pending_sea:
        mmio.inject_pending_sea(vcpu)
    chip = irqchip(vcpu)
    if chip is not None:
        chip.flush(vcpu)  # ap_list -> list registers, vIRQ/vFIQ lines
    else:
        vcpu.core.set_irq_lines(*vcpu.irq_lines)
    _apply_remote_flushes(vcpu)
    vcpu.in_guest = True
    vcpu.core.clear_kick()
    if vcpu.signal_pending:
        vcpu.in_guest = False
        vcpu.signal_pending = False
        if chip is not None:
            chip.sync(vcpu)
        _return_intr(vcpu)
        return 0
    if vcpu.requests:  # a request raced with entry: abort it and go round
        vcpu.in_guest = False
        if chip is not None:
            chip.sync(vcpu)
        return 1
    exit_ = vcpu.core.run()
    vcpu.in_guest = False
    if chip is not None:
        chip.sync(vcpu)  # list registers -> state (and timer sync, in KVM's order)
    vcpu.stats.exits += 1
    ret = handle_exit.handle_exit(vcpu, exit_)
    if ret > 0 and vcpu.vm.pcpu.should_yield(vcpu):
        vcpu.stats.preemptions += 1
        vcpu.vm.pcpu.yield_(vcpu)
    return ret


def _apply_remote_flushes(vcpu: Vcpu) -> None:
    if vcpu.pending_tb_flush:
        vcpu.pending_tb_flush = False
        vcpu.core.flush_tb()
    if vcpu.pending_tlb_flush:
        vcpu.pending_tlb_flush = False
        vcpu.core.flush_tlb()
