"""KVM_GET/SET_ONE_REG for arm64 (arch/arm64/kvm/guest.c, Documentation/virt/kvm/api.rst 4.68).

Core registers: ``KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | offsetof(kvm_regs)/4``;
system registers: ``... | KVM_REG_ARM64_SYSREG | sys_reg(op0, op1, CRn, CRm, op2)``.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from unicorn import arm64_const as A

from softkvm.arch import sysregs as S
from softkvm.hw.core import REG_PC, REG_PSTATE, X_REGS
from softkvm.kvm import uapi
from softkvm.kvm.errors import KvmError

if TYPE_CHECKING:
    from softkvm.kvm.api import Vcpu

CORE_BASE = uapi.KVM_REG_ARM64 | uapi.KVM_REG_SIZE_U64 | uapi.KVM_REG_ARM_CORE
SYSREG_BASE = uapi.KVM_REG_ARM64 | uapi.KVM_REG_SIZE_U64 | uapi.KVM_REG_ARM64_SYSREG


def core_reg(offset_u64: int) -> int:
    """ONE_REG id of the u64 at index ``offset_u64`` of struct kvm_regs."""
    return CORE_BASE | (offset_u64 * 2)


def sysreg_id(reg: S.SysReg) -> int:
    return SYSREG_BASE | reg.encoding


# struct kvm_regs: regs[31], sp (SP_EL0), pc, pstate, sp_el1, elr_el1, ...
CORE_REGS: dict[int, int] = {core_reg(i): X_REGS[i] for i in range(31)}
CORE_REGS |= {core_reg(31): A.UC_ARM64_REG_SP_EL0, core_reg(32): REG_PC,
              core_reg(33): REG_PSTATE, core_reg(34): A.UC_ARM64_REG_SP_EL1,
              core_reg(35): A.UC_ARM64_REG_ELR_EL1}
REG_PC_ID = core_reg(32)
REG_PSTATE_ID = core_reg(33)


def get(vcpu: Vcpu, reg_id: int) -> int:
    if reg_id in CORE_REGS:
        return vcpu.core.raw.read(CORE_REGS[reg_id])
    if reg_id == sysreg_id(S.MPIDR_EL1):
        return (1 << 31) | vcpu.mpidr
    if reg_id == uapi.KVM_REG_ARM_PSCI_VERSION:
        return vcpu.vm.psci_version
    value = vcpu.vm.timers.get_one_reg(vcpu, reg_id)
    if value is not None:
        return value
    raise KvmError(errno.ENOENT, f"unknown ONE_REG id {reg_id:#x}")


def set_(vcpu: Vcpu, reg_id: int, value: int) -> None:
    if reg_id in CORE_REGS:
        vcpu.core.raw.write(CORE_REGS[reg_id], value)
        return
    if reg_id == uapi.KVM_REG_ARM_PSCI_VERSION:
        if vcpu.vm.has_run:
            raise KvmError(errno.EBUSY, "the PSCI version is fixed once the VM has run")
        if value not in (0x2, 0x10000):
            raise KvmError(errno.EINVAL, f"unsupported PSCI version {value:#x}")
        vcpu.vm.psci_version = value
        return
    if vcpu.vm.timers.set_one_reg(vcpu, reg_id, value):
        return
    raise KvmError(errno.ENOENT, f"unknown ONE_REG id {reg_id:#x}")
