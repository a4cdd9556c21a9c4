"""Exception syndrome (ESR_ELx) and PSTATE/SPSR fields (Arm ARM D17.2.37, C5.2.18).

Fields are named as in the Arm ARM; builders return complete syndrome values.
"""

ESR_EC_SHIFT = 26
ESR_IL = 1 << 25
ESR_ISS_MASK = (1 << 25) - 1

# Exception classes.
EC_UNKNOWN = 0x00
EC_WFX = 0x01
EC_SVC64 = 0x15
EC_HVC64 = 0x16
EC_SMC64 = 0x17
EC_SYS64 = 0x18
EC_SVE = 0x19
EC_IABT_LOW = 0x20
EC_IABT_CUR = 0x21
EC_PC_ALIGN = 0x22
EC_DABT_LOW = 0x24
EC_DABT_CUR = 0x25
EC_SP_ALIGN = 0x26
EC_SERROR = 0x2F
EC_BRK64 = 0x3C

# Data/instruction abort ISS.
ISS_WNR = 1 << 6
ISS_FNV = 1 << 10
ISS_EA = 1 << 9
FSC_SEA = 0x10  # synchronous external abort, not on a table walk

# EC 0x18 (trapped MSR/MRS) ISS layout.
SYS64_ISS_DIR_READ = 1  # bit 0: 1 = MRS (read)
SYS64_ISS_CRM_SHIFT = 1
SYS64_ISS_RT_SHIFT = 5
SYS64_ISS_CRN_SHIFT = 10
SYS64_ISS_OP1_SHIFT = 14
SYS64_ISS_OP2_SHIFT = 17
SYS64_ISS_OP0_SHIFT = 20

# PSTATE / SPSR_EL1.
PSTATE_SP = 1 << 0  # SPSel: 1 = SP_ELx
PSTATE_EL_SHIFT = 2
PSTATE_F = 1 << 6
PSTATE_I = 1 << 7
PSTATE_A = 1 << 8
PSTATE_D = 1 << 9
PSTATE_DAIF = PSTATE_D | PSTATE_A | PSTATE_I | PSTATE_F
PSTATE_IL = 1 << 20
PSTATE_SS = 1 << 21
PSTATE_PAN = 1 << 22
PSTATE_NZCV = 0xF << 28
PSR_MODE_EL0t = 0x0
PSR_MODE_EL1t = 0x4
PSR_MODE_EL1h = 0x5

# Vector offsets from VBAR_EL1.
VECTOR_CUR_SP0 = 0x000
VECTOR_CUR_SPX = 0x200
VECTOR_LOWER_A64 = 0x400
VECTOR_SYNC = 0x000
VECTOR_IRQ = 0x080
VECTOR_FIQ = 0x100
VECTOR_SERROR = 0x180


def esr(ec: int, iss: int = 0, il: bool = True) -> int:
    """Build a syndrome: EC, IL and ISS."""
    return (ec << ESR_EC_SHIFT) | (ESR_IL if il else 0) | (iss & ESR_ISS_MASK)


def esr_ec(value: int) -> int:
    return (value >> ESR_EC_SHIFT) & 0x3F


def esr_iss(value: int) -> int:
    return value & ESR_ISS_MASK


def pstate_el(pstate: int) -> int:
    return (pstate >> PSTATE_EL_SHIFT) & 3


def sea_esr(*, from_lower_el: bool, is_write: bool, is_fetch: bool, far_valid: bool) -> int:
    """Synchronous external abort syndrome (data or instruction abort, FSC 0x10)."""
    if is_fetch:
        ec = EC_IABT_LOW if from_lower_el else EC_IABT_CUR
        iss = FSC_SEA
    else:
        ec = EC_DABT_LOW if from_lower_el else EC_DABT_CUR
        iss = FSC_SEA | (ISS_WNR if is_write else 0)
    if not far_valid:
        iss |= ISS_FNV
    return esr(ec, iss)
