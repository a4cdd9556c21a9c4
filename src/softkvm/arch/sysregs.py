"""System register encodings (Arm ARM C5.3): op0, op1, CRn, CRm, op2.

``sys_reg(op0, op1, crn, crm, op2)`` packs them as the kernel's ``sys_reg()`` macro orders the
fields in a KVM ONE_REG id and in the EC 0x18 ISS: op0[15:14] op1[13:11] CRn[10:7] CRm[6:3]
op2[2:0].
"""

from typing import NamedTuple


class SysReg(NamedTuple):
    op0: int
    op1: int
    crn: int
    crm: int
    op2: int

    @property
    def encoding(self) -> int:
        return sys_reg(*self)


def sys_reg(op0: int, op1: int, crn: int, crm: int, op2: int) -> int:
    return (op0 << 14) | (op1 << 11) | (crn << 7) | (crm << 3) | op2


def sys_reg_fields(encoding: int) -> SysReg:
    return SysReg((encoding >> 14) & 3, (encoding >> 11) & 7, (encoding >> 7) & 0xF,
                  (encoding >> 3) & 0xF, encoding & 7)


# Generic timer (EL0 view).
CNTFRQ_EL0 = SysReg(3, 3, 14, 0, 0)
CNTPCT_EL0 = SysReg(3, 3, 14, 0, 1)
CNTVCT_EL0 = SysReg(3, 3, 14, 0, 2)
CNTP_TVAL_EL0 = SysReg(3, 3, 14, 2, 0)
CNTP_CTL_EL0 = SysReg(3, 3, 14, 2, 1)
CNTP_CVAL_EL0 = SysReg(3, 3, 14, 2, 2)
CNTV_TVAL_EL0 = SysReg(3, 3, 14, 3, 0)
CNTV_CTL_EL0 = SysReg(3, 3, 14, 3, 1)
CNTV_CVAL_EL0 = SysReg(3, 3, 14, 3, 2)
CNTKCTL_EL1 = SysReg(3, 0, 14, 1, 0)

# Identification and control.
MIDR_EL1 = SysReg(3, 0, 0, 0, 0)
MPIDR_EL1 = SysReg(3, 0, 0, 0, 5)
ID_AA64PFR0_EL1 = SysReg(3, 0, 0, 4, 0)
SCTLR_EL1 = SysReg(3, 0, 1, 0, 0)
TTBR0_EL1 = SysReg(3, 0, 2, 0, 0)
ESR_EL1 = SysReg(3, 0, 5, 2, 0)
FAR_EL1 = SysReg(3, 0, 6, 0, 0)
VBAR_EL1 = SysReg(3, 0, 12, 0, 0)
SPSR_EL1 = SysReg(3, 0, 4, 0, 0)
ELR_EL1 = SysReg(3, 0, 4, 0, 1)
SP_EL0 = SysReg(3, 0, 4, 1, 0)

# EL2/EL3 controls the hypervisor programs (not guest-visible).
HCR_EL2 = SysReg(3, 4, 1, 1, 0)
CPTR_EL3 = SysReg(3, 6, 1, 1, 2)
SCR_EL3 = SysReg(3, 6, 1, 1, 0)
CNTHCTL_EL2 = SysReg(3, 4, 14, 1, 0)
CNTVOFF_EL2 = SysReg(3, 4, 14, 0, 3)
VMPIDR_EL2 = SysReg(3, 4, 0, 0, 5)

# HCR_EL2 bits.
HCR_FMO = 1 << 3
HCR_IMO = 1 << 4
HCR_AMO = 1 << 5
HCR_VF = 1 << 6
HCR_VI = 1 << 7
HCR_VSE = 1 << 8
HCR_TWI = 1 << 13
HCR_TWE = 1 << 14
HCR_TID3 = 1 << 18
HCR_TSC = 1 << 19
HCR_RW = 1 << 31

# SCR_EL3 bits.
SCR_NS = 1 << 0
SCR_HCE = 1 << 8
SCR_RW = 1 << 10

# SCTLR_EL1 bits.
SCTLR_M = 1 << 0
SCTLR_SPAN = 1 << 23

# GIC CPU interface system registers (GICv3, Arm IHI 0069 12.2).
ICC_PMR_EL1 = SysReg(3, 0, 4, 6, 0)
ICC_IAR0_EL1 = SysReg(3, 0, 12, 8, 0)
ICC_EOIR0_EL1 = SysReg(3, 0, 12, 8, 1)
ICC_HPPIR0_EL1 = SysReg(3, 0, 12, 8, 2)
ICC_BPR0_EL1 = SysReg(3, 0, 12, 8, 3)
ICC_AP0R0_EL1 = SysReg(3, 0, 12, 8, 4)
ICC_AP1R0_EL1 = SysReg(3, 0, 12, 9, 0)
ICC_DIR_EL1 = SysReg(3, 0, 12, 11, 1)
ICC_RPR_EL1 = SysReg(3, 0, 12, 11, 3)
ICC_SGI1R_EL1 = SysReg(3, 0, 12, 11, 5)
ICC_ASGI1R_EL1 = SysReg(3, 0, 12, 11, 6)
ICC_SGI0R_EL1 = SysReg(3, 0, 12, 11, 7)
ICC_IAR1_EL1 = SysReg(3, 0, 12, 12, 0)
ICC_EOIR1_EL1 = SysReg(3, 0, 12, 12, 1)
ICC_HPPIR1_EL1 = SysReg(3, 0, 12, 12, 2)
ICC_BPR1_EL1 = SysReg(3, 0, 12, 12, 3)
ICC_CTLR_EL1 = SysReg(3, 0, 12, 12, 4)
ICC_SRE_EL1 = SysReg(3, 0, 12, 12, 5)
ICC_IGRPEN0_EL1 = SysReg(3, 0, 12, 12, 6)
ICC_IGRPEN1_EL1 = SysReg(3, 0, 12, 12, 7)

# PMU (counting only: the overflow interrupt is KVM's concern).
PMCR_EL0 = SysReg(3, 3, 9, 12, 0)
