"""Exit handling: turn each core exit into "re-enter" (1) or "return to userspace" (0).

Counterpart: arch/arm64/kvm/handle_exit.c (``handle_exit``, ``kvm_handle_wfx``, ``handle_hvc``,
``handle_smc``, the ``arm_exit_handlers`` table by ESR exception class).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from softkvm.arch import esr as E
from softkvm.hw.core import CoreExit, ExitKind
from softkvm.kvm import arm, mmio, psci, sys_regs, uapi

if TYPE_CHECKING:
    from softkvm.kvm.api import Vcpu

SMCCC_RET_NOT_SUPPORTED = 0xFFFFFFFFFFFFFFFF


def handle_exit(vcpu: Vcpu, exit_: CoreExit) -> int:
    return EXIT_HANDLERS[exit_.kind](vcpu, exit_)


def handle_kicked(vcpu: Vcpu, _exit: CoreExit) -> int:
    vcpu.stats.irq_exits += 1
    return 1


def handle_hvc(vcpu: Vcpu, exit_: CoreExit) -> int:
    vcpu.stats.hvc_exit_stat += 1
    if vcpu.tracer.on:
        vcpu.tracer.emit("kvm_hvc_arm64", vcpu.vcpu_id, vcpu_pc=vcpu.core.get_pc() - 4,
                         r0=vcpu.core.get_x(0), imm=exit_.imm)
    if exit_.imm:  # only HVC #0 is an SMCCC call
        vcpu.core.set_x(0, SMCCC_RET_NOT_SUPPORTED)
        return 1
    return psci.kvm_smccc_call_handler(vcpu)


def handle_smc(vcpu: Vcpu, exit_: CoreExit) -> int:
    vcpu.stats.smc_exit_stat += 1
    if exit_.imm:
        vcpu.core.set_x(0, SMCCC_RET_NOT_SUPPORTED)
        return 1
    return psci.kvm_smccc_call_handler(vcpu)


def kvm_handle_wfx(vcpu: Vcpu, exit_: CoreExit) -> int:
    core = vcpu.core
    if vcpu.tracer.on:
        vcpu.tracer.emit("kvm_wfx_arm64", vcpu.vcpu_id, vcpu_pc=core.get_pc(),
                         is_wfe=bool(E.esr_iss(exit_.esr) & 1))
    if E.esr_iss(exit_.esr) & 1:  # WFE: yield the physical CPU to whoever waits for it
        vcpu.stats.wfe_exit_stat += 1
        if vcpu.vm.pcpu.has_waiters():
            vcpu.vm.pcpu.yield_(vcpu)
    else:
        vcpu.stats.wfi_exit_stat += 1
        arm.kvm_vcpu_block(vcpu)
    core.skip_insn()
    return 1


def handle_sysreg(vcpu: Vcpu, exit_: CoreExit) -> int:
    vcpu.stats.sysreg_traps += 1
    return sys_regs.kvm_handle_sys_reg(vcpu, exit_.esr)


def handle_internal(vcpu: Vcpu, exit_: CoreExit) -> int:
    vcpu.stats.internal_exits += 1
    run = vcpu.run_struct
    run.exit_reason = uapi.KVM_EXIT_INTERNAL_ERROR
    run.internal.suberror = 1  # KVM_INTERNAL_ERROR_EMULATION
    run.internal.message = exit_.message
    return 0


EXIT_HANDLERS: dict[ExitKind, Callable[[Vcpu, CoreExit], int]] = {
    ExitKind.KICKED: handle_kicked,
    ExitKind.HVC: handle_hvc,
    ExitKind.SMC: handle_smc,
    ExitKind.WFX: kvm_handle_wfx,
    ExitKind.SYSREG: handle_sysreg,
    ExitKind.DABT: mmio.io_mem_abort,
    ExitKind.IABT: mmio.kvm_handle_iabt,
    ExitKind.INTERNAL: handle_internal,
}
