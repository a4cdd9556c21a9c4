"""The vCPU run loop, vCPU init, requests, kicks and blocking.

Counterpart: arch/arm64/kvm/arm.c (``kvm_arch_vcpu_ioctl_run``, ``kvm_vcpu_first_run_init``,
``check_vcpu_requests``, ``kvm_arch_vcpu_ioctl_vcpu_init``) and virt/kvm/kvm_main.c
(``kvm_vcpu_kick``, ``kvm_vcpu_block``). The loop order is KVM's; design notes in
kvm-arm-reference.md §8.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from softkvm.arch import sysregs as S
from softkvm.hw.clock import monotonic_ns
from softkvm.hw.core import ALL_CODE, CodeBroadcast, Core
from softkvm.hw.pcpu import OwnCpus
from softkvm.kvm import handle_exit, irqchip, mmio, trace, uapi
from softkvm.kvm.errors import KvmError

if TYPE_CHECKING:
    from softkvm.kvm.api import Vcpu, Vm

REQ_SLEEP = "SLEEP"
REQ_VCPU_RESET = "VCPU_RESET"
REQ_IRQ_PENDING = "IRQ_PENDING"
MAX_PENDING_CODE = 256  # pages to drop one by one; beyond, a vCPU drops all its translations

SUPPORTED_FEATURES = (1 << uapi.KVM_ARM_VCPU_POWER_OFF) | (1 << uapi.KVM_ARM_VCPU_PSCI_0_2) | (
    1 << uapi.KVM_ARM_VCPU_PMU_V3)


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
    vcpu.vm.timers.reset(vcpu)


# --- kicks, requests, blocking ----------------------------------------------------------------


def kvm_make_request(vcpu: Vcpu, req: str) -> None:
    vcpu.requests.add(req)


def kvm_vcpu_kick(vcpu: Vcpu) -> None:
    """Make the vCPU notice its requests: stop it if it runs, wake it if it waits.

    As KVM, only a vCPU in guest mode is kicked: every caller has made a request (or set
    ``signal_pending``) first, and ``_run_once`` re-checks both after entering guest mode, so a
    vCPU outside the guest sees them before it enters. Kicking it anyway would cost it an empty
    exit on its next entry (the kick is never cleared, see ``_run_once``)."""
    if vcpu.in_guest:
        vcpu.core.kick()
    kvm_vcpu_wake_up(vcpu)


def kvm_vcpu_wake_up(vcpu: Vcpu) -> None:
    """rcuwait_wake_up: a vCPU asleep in ``_wait`` re-checks why it sleeps. Its flag is set
    before that check, so a waker either changed what the check sees or writes here."""
    if vcpu.blocked:
        os.eventfd_write(vcpu.wake_fd, 1)


def broadcast_flush(vcpu: Vcpu, tlbi: bool, code: CodeBroadcast) -> None:
    """TLBI ...IS / IC IVAU, IALLUIS seen on ``vcpu``: the others flush before they next run.
    (vCPUs that run in parallel do this in their cores, at the DSB: the shim's broadcast.)"""
    for other in vcpu.vm.vcpus:
        if other is vcpu:
            continue
        if tlbi:
            other.pending_tlb_flush = True
        if code == ALL_CODE or (code and len(other.pending_code) + len(code) > MAX_PENDING_CODE):
            other.pending_tb_flush = True
        elif code and not other.pending_tb_flush:
            other.pending_code.update(code)
    stats = vcpu.vm.stats  # once per broadcast, as kvm_flush_remote_tlbs counts its calls
    if tlbi:
        stats.remote_tlb_flush_requests += 1
        stats.remote_tlb_flush += 1  # always carried out: a request to every vCPU
    if code == ALL_CODE:
        stats.remote_tb_flush += 1
    elif code:
        stats.remote_tb_page_flush += len(code)


def _wait(vcpu: Vcpu, until: Callable[[], bool],
          woken: Callable[[], None] | None = None) -> bool:
    """Give up the physical CPU and sleep until ``until()`` or a signal; False on signal.
    ``woken`` runs after each wake-up, before the check."""
    vm = vcpu.vm
    vm.pcpu.release(vcpu)
    vcpu.blocked = True
    try:
        while not until():
            if vcpu.signal_pending:
                return False
            os.eventfd_read(vcpu.wake_fd)   # without the GIL; wakers write it (any thread)
            if woken is not None:
                woken()
        return True
    finally:
        vcpu.blocked = False
        vm.pcpu.acquire(vcpu)


def kvm_vcpu_block(vcpu: Vcpu) -> None:
    """WFI: sleep until the vCPU is runnable, a timer fires, a request or a signal arrives.

    As KVM: the vCPU is put with ``blocking`` so the background timer covers its deadlines, and
    loaded again on wake-up, which injects a timer level that became due meanwhile.
    """
    vgic = vcpu.vm.vgic
    if vgic is not None:
        vgic.kvm_vgic_vmcr_sync(vcpu.vcpu_id)  # the wake test reads a fresh PMR
    vcpu.vm.timers.vcpu_put(vcpu, blocking=True)

    def check_block() -> bool:
        return (bool(vcpu.requests) or kvm_arch_vcpu_runnable(vcpu)
                or vcpu.vm.timers.has_pending_timer(vcpu))

    stats = vcpu.stats
    stats.blocking = 1
    start = monotonic_ns()
    waits = not check_block()  # KVM's "waited": it counts no wake-up when nothing slept
    woken = _wait(vcpu, check_block, lambda: vcpu.vm.timers.bg_woken(vcpu))
    stats.blocking = 0
    if waits:
        stats.halt_wait_ns += monotonic_ns() - start
        # KVM counts a wake-up in the waker (kvm_vcpu_wake_up) when it finds the vCPU asleep;
        # counted here, once per sleep, several racing wakers cannot make one sleep count twice.
        # A signal is no such wake-up.
        stats.halt_wakeup += woken
    if vcpu.tracer.on:  # trace_kvm_vcpu_wakeup(block_ns, waited, valid)
        vcpu.tracer.emit("kvm_vcpu_wakeup", vcpu.vcpu_id, ns=monotonic_ns() - start,
                         waited=waits, valid=woken)
    vcpu.vm.timers.vcpu_load(vcpu)


def kvm_arch_vcpu_runnable(vcpu: Vcpu) -> bool:
    if vcpu.power_off:
        return False
    if vcpu.irq_lines[0] or vcpu.irq_lines[1]:
        return True
    vgic = vcpu.vm.vgic
    return vgic is not None and vgic.kvm_vgic_vcpu_pending_irq(vcpu.vcpu_id)


def check_vcpu_requests(vcpu: Vcpu) -> bool:
    """Act on pending requests; False when a signal interrupted a powered-off sleep."""
    if REQ_SLEEP in vcpu.requests or vcpu.power_off:
        vcpu.requests.discard(REQ_SLEEP)
        if vcpu.power_off and not _wait(vcpu, lambda: not vcpu.power_off):
            vcpu.requests.add(REQ_SLEEP)
            vcpu.stats.signal_exits += 1
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
        if vm.vgic is not None:
            vm.vgic.kvm_vgic_map_resources()  # KvmError as KVM fails the first KVM_RUN
            irqchip.connect_vcpu(vm.vgic, vcpu)
        if not vm.has_run:
            _choose_host_cpus(vm)
        vm.has_run = True
        vm.timers.enable(vcpu)
    vcpu.has_run_once = True


def _choose_host_cpus(vm: Vm) -> None:
    """At the VM's first KVM_RUN (its vCPUs are all created, none has run): with several
    vCPUs and host CPUs, every vCPU runs on its own when every core can translate for it."""
    host_cpus = vm.host_cpus or len(os.sched_getaffinity(0))  # what taskset left us
    cores = [v.core for v in vm.vcpus]
    if host_cpus > 1 and len(cores) > 1 and all(core.set_parallel(True) for core in cores):
        vm.pcpu = OwnCpus(host_cpus)
        vm.peers = Core.make_peers(cores)
    else:
        for core in cores:
            core.set_parallel(False)


def _return_intr(vcpu: Vcpu) -> None:
    run = vcpu.run_struct
    run.exit_reason = uapi.KVM_EXIT_INTR
    run.ret = -errno.EINTR


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
        vcpu.stats.signal_exits += vcpu.signal_pending  # immediate_exit alone counts nothing
        vcpu.signal_pending = False
        _return_intr(vcpu)
        return run
    vcpu_load(vcpu)
    try:
        ret = 1
        while ret > 0:
            ret = _run_once(vcpu)
        if vcpu.vm.vgic is None:  # userspace irqchip: publish the device output levels
            vcpu.vm.timers.update_run(vcpu)
    finally:
        vcpu_put(vcpu)
    return run


def vcpu_load(vcpu: Vcpu) -> None:
    """kvm_arch_vcpu_load: the vGIC's VMCR/APRs first, then the timers (which ask the vGIC).

    WFE traps unless the vCPU is the only task of its physical CPU (vcpu_set_wfx_traps): when
    the vCPUs share one PhysCpu (or outnumber the host CPUs), a WFE spin loop exits and hands
    the CPU to the vCPU it waits for."""
    pcpu = vcpu.vm.pcpu
    pcpu.acquire(vcpu)
    vcpu.core.set_hcr_traps(S.HCR_TWE, pcpu.traps_wfe(len(vcpu.vm.vcpus)))
    vgic = vcpu.vm.vgic
    if vgic is not None:
        vgic.kvm_vgic_load(vcpu.vcpu_id)
    vcpu.vm.timers.vcpu_load(vcpu)


def vcpu_put(vcpu: Vcpu) -> None:
    vcpu.vm.timers.vcpu_put(vcpu, blocking=False)
    vgic = vcpu.vm.vgic
    if vgic is not None:
        vgic.kvm_vgic_put(vcpu.vcpu_id)
    vcpu.vm.pcpu.release(vcpu, lease=True)


def _run_once(vcpu: Vcpu) -> int:
    """One trip into the guest and back: 1 to go round again, 0 to return to userspace."""
    if not check_vcpu_requests(vcpu):
        _return_intr(vcpu)
        return 0
    if vcpu.pending_sea:
        mmio.inject_pending_sea(vcpu)
    _flush(vcpu)
    _apply_remote_flushes(vcpu)
    vcpu.in_guest = True
    # Re-checked after "entering guest mode", so a request or signal raised meanwhile either is
    # seen here or kicks the core (it then stops at its first block). A kick is never cleared
    # here: one that lands while we are outside the guest (a preemption tick, the timer PPI)
    # must still stop the next slice; a stale one costs a single empty exit.
    if vcpu.signal_pending or vcpu.requests or _user_irqchip_must_exit(vcpu):
        vcpu.in_guest = False
        _sync(vcpu)
        if vcpu.requests and not vcpu.signal_pending and not _user_irqchip_must_exit(vcpu):
            return 1
        if vcpu.signal_pending:
            vcpu.stats.signal_exits += 1
        else:  # kvm_vcpu_exit_request: the timer level changed, no signal involved
            vcpu.stats.user_irqchip_exits += 1
        vcpu.signal_pending = False
        _return_intr(vcpu)
        return 0
    tracer = vcpu.tracer
    if tracer.on:
        tracer.emit("kvm_entry", vcpu.vcpu_id, vcpu_pc=vcpu.core.get_pc())
    exit_ = vcpu.core.run()
    if tracer.on:  # first thing after the exit, so the guest slice ends where the guest did
        trace.kvm_exit(tracer, vcpu.vcpu_id, exit_, vcpu.core.get_pc())
    vcpu.in_guest = False
    _sync(vcpu)
    # Host interrupts are back on here: a timer PPI taken while the guest ran is handled now,
    # after the vGIC fold, so it sees the guest's latest deactivation.
    vcpu.vm.timers.kvm_arch_timer_handler(vcpu)
    vcpu.stats.exits += 1
    ret = handle_exit.handle_exit(vcpu, exit_)
    if ret > 0 and vcpu.vm.pcpu.should_yield(vcpu):
        vcpu.stats.preemptions += 1
        vcpu.vm.pcpu.yield_(vcpu)
    return ret


def _user_irqchip_must_exit(vcpu: Vcpu) -> bool:
    """Userspace irqchip: exit (KVM_EXIT_INTR) while the VMM has not seen the latest levels."""
    return vcpu.vm.vgic is None and vcpu.vm.timers.should_notify_user(vcpu)


def _flush(vcpu: Vcpu) -> None:
    """Before entry: (PMU level into the vGIC,) the ap_list into the list registers, lines."""
    vgic = vcpu.vm.vgic
    if vgic is not None:
        vgic.kvm_vgic_flush_hwstate(vcpu.vcpu_id)
        vif = vgic.vcpu_if(vcpu.vcpu_id)
        core = vcpu.core
        core.set_irq_lines(*vif.signal())
        if vgic.is_v2:  # the GICV frame answers a spurious IAR read by itself
            core.state.no_pending_lr = not vif.has_pending_lr()
    else:
        vcpu.core.set_irq_lines(*vcpu.irq_lines)


def _sync(vcpu: Vcpu) -> None:
    """After exit, in KVM's order: the vGIC fold first (the timer asks whether its mapped
    interrupt is still active, which is only right once the list registers are folded), then
    the userspace-irqchip timer sync, all before the host timer PPI handler runs."""
    vgic = vcpu.vm.vgic
    if vgic is not None:
        vgic.kvm_vgic_sync_hwstate(vcpu.vcpu_id)
    else:
        vcpu.vm.timers.sync_user(vcpu)


def _apply_remote_flushes(vcpu: Vcpu) -> None:
    if vcpu.pending_tlb_flush:
        vcpu.pending_tlb_flush = False
        vcpu.core.flush_tlb()
    if vcpu.pending_tb_flush:
        vcpu.pending_tb_flush = False
        vcpu.pending_code.clear()
        vcpu.core.flush_tb()
    elif vcpu.pending_code:
        vcpu.core.invalidate_code(vcpu.pending_code)
        vcpu.pending_code.clear()
