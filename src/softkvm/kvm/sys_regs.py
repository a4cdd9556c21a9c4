"""Trapped system register accesses (EC 0x18), as a table of emulated registers.

Counterpart: arch/arm64/kvm/sys_regs.c (``kvm_handle_sys_reg``, ``emulate_sys_reg``). Registers
that no table entry claims are UNDEFINED for the guest, as KVM injects an UNDEF
(``kvm_inject_undefined``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from softkvm.arch import esr as E
from softkvm.arch import sysregs as S

if TYPE_CHECKING:
    from softkvm.kvm.api import Vcpu

# (vcpu, is_read, value) -> value read (reads) or None (writes, or "not handled")
SysRegAccess = Callable[["Vcpu", bool, int], "int | None"]


def decode_iss(iss: int) -> tuple[int, int, bool]:
    """(encoding, Rt, is_read) from an EC 0x18 ISS."""
    op0 = (iss >> E.SYS64_ISS_OP0_SHIFT) & 3
    op2 = (iss >> E.SYS64_ISS_OP2_SHIFT) & 7
    op1 = (iss >> E.SYS64_ISS_OP1_SHIFT) & 7
    crn = (iss >> E.SYS64_ISS_CRN_SHIFT) & 0xF
    crm = (iss >> E.SYS64_ISS_CRM_SHIFT) & 0xF
    rt = (iss >> E.SYS64_ISS_RT_SHIFT) & 0x1F
    return S.sys_reg(op0, op1, crn, crm, op2), rt, bool(iss & E.SYS64_ISS_DIR_READ)


def access_id_aa64pfr0(vcpu: Vcpu, is_read: bool, _value: int) -> int | None:
    """ID_AA64PFR0_EL1 with the GIC field saying whether a GICv3 CPU interface exists."""
    if not is_read:
        return None
    value = vcpu.core.raw.cpr_read(*S.ID_AA64PFR0_EL1) & ~(0xF << 24)
    gic_sysregs = getattr(vcpu.vm.vgic, "has_sysreg_cpuif", False)
    return value | (1 << 24 if gic_sysregs else 0)


SYS_REG_TABLE: dict[int, SysRegAccess] = {
    S.ID_AA64PFR0_EL1.encoding: access_id_aa64pfr0,
}


def kvm_handle_sys_reg(vcpu: Vcpu, esr: int) -> int:
    encoding, rt, is_read = decode_iss(E.esr_iss(esr))
    core = vcpu.core
    access = SYS_REG_TABLE.get(encoding)
    if access is None:
        if is_read:  # other ID registers trapped by TID3 read their real value
            fields = S.sys_reg_fields(encoding)
            if fields.op0 == 3 and fields.op1 == 0 and fields.crn == 0:
                core.set_x(rt, core.raw.cpr_read(*fields))
                core.skip_insn()
                return 1
        core.inject_sync(E.esr(E.EC_UNKNOWN), None, core.get_pc())
        return 1
    result = access(vcpu, is_read, 0 if is_read else core.get_x(rt))
    if is_read:
        core.set_x(rt, result or 0)
    core.skip_insn()
    return 1
