"""GIC register offsets and fields, GICv2 and GICv3, as the specs name them.

Counterpart: ARM IHI 0048B (GICv2: GICD, GICC, GICH, GICV) and ARM IHI 0069 (GICv3: GICD, GICR,
ICC/ICV/ICH system registers); the kernel spells the same facts in include/linux/irqchip/
arm-gic.h and arm-gic-v3.h. Pure facts: no state. A ``Field`` is (shift, width) with get/put, so
logic reads ``GICH_HCR.UIE.get(hcr)`` instead of masking by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class Field:
    """A bit field of a register: ``width`` bits starting at ``shift``.

    Immutable; its masks are computed once, since list-register encode/decode runs on every
    guest entry and exit."""

    __slots__ = ("shift", "width", "mask", "_low")

    def __init__(self, shift: int, width: int = 1) -> None:
        object.__setattr__(self, "shift", shift)
        object.__setattr__(self, "width", width)
        object.__setattr__(self, "_low", (1 << width) - 1)
        object.__setattr__(self, "mask", ((1 << width) - 1) << shift)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a Field is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Field) and (self.shift, self.width) == (other.shift, other.width)

    def __hash__(self) -> int:
        return hash((self.shift, self.width))

    def __repr__(self) -> str:
        return f"Field(shift={self.shift}, width={self.width})"

    def get(self, reg: int) -> int:
        return (reg >> self.shift) & self._low

    def put(self, reg: int, value: int) -> int:
        return (reg & ~self.mask) | ((int(value) << self.shift) & self.mask)

    def val(self, value: int) -> int:
        """``value`` placed in the field of an otherwise-zero register."""
        return (int(value) << self.shift) & self.mask


# --- INTID space -------------------------------------------------------------------------------
NR_SGIS = 16
NR_PPIS = 16
NR_PRIVATE_IRQS = 32
SPI_BASE = 32
MAX_SPI = 1019
INTID_SPURIOUS = 1023            # nothing to acknowledge
INTID_SPURIOUS_GROUP1 = 1022     # GICv2: highest pending is group 1 but AckCtl=0
SPECIAL_INTID_BASE = 1020        # 1020-1023: never acknowledged, EOIs of them are ignored
MIN_LPI = 8192

# --- register widths -------------------------------------------------------------------------
U32_MASK = (1 << 32) - 1
U64_MASK = (1 << 64) - 1

# --- priorities (5 implemented bits, as KVM's VGIC_PRI_BITS) ---------------------------------
PRIORITY_BYTE = 0xFF              # a priority is an 8-bit field, whatever is implemented
PRI_BITS = 5
PRE_BITS = 5                      # preemption bits: one active-priority bit per group priority
PRIORITY_MASK = (0xFF << (8 - PRI_BITS)) & 0xFF   # 0xF8: unimplemented low bits RAZ/WI
IDLE_PRIORITY = 0xFF
BPR_MIN = 8 - PRE_BITS            # 3: shift turning a group priority into an APR bit index
BPR0_MIN = BPR_MIN - 1            # 2: GICC_BPR / ICC_BPR0 reset and minimum
BPR1_MIN = BPR_MIN                # 3: GICC_ABPR / ICC_BPR1 reset and minimum
BPR_MAX = 7
NR_APR_REGS = 1 << (PRE_BITS - 5)  # 32 group priorities fit one AP0R/AP1R register
MAX_APR_REGS = 4                   # ICH_AP0R0..3 / AP1R0..3 exist architecturally

# --- implementer / product ids (kernel: IMPLEMENTER_ARM, PRODUCT_ID_KVM) --------------------
IMPLEMENTER_ARM = 0x43B
PRODUCT_ID_KVM = 0x4B
GICC_ARCH_VERSION_V2 = 2
PIDR2_ARCH_GICV3 = 0x3B           # GICD/GICR_PIDR2: ArchRev 3 plus the JEP106 bits KVM reports

# --- GICv2 distributor (IHI 0048B 4.3) ---------------------------------------------------------
GICD_CTLR = 0x000
GICD_TYPER = 0x004
GICD_IIDR = 0x008
GICD_TYPER2 = 0x00C
GICD_STATUSR = 0x010
GICD_IGROUPR = 0x080
GICD_ISENABLER = 0x100
GICD_ICENABLER = 0x180
GICD_ISPENDR = 0x200
GICD_ICPENDR = 0x280
GICD_ISACTIVER = 0x300
GICD_ICACTIVER = 0x380
GICD_IPRIORITYR = 0x400
GICD_ITARGETSR = 0x800
GICD_ICFGR = 0xC00
GICD_IGRPMODR = 0xD00
GICD_SGIR = 0xF00
GICD_CPENDSGIR = 0xF10
GICD_SPENDSGIR = 0xF20
GICD_IROUTER = 0x6000
GICD_IDREGS = 0xFFD0              # PIDR4..7, PIDR0..3, CIDR0..3: 12 words
GICD_IDREGS_SIZE = 0x30
GICD_PIDR2 = 0xFFE8
GICD_V2_SIZE = 0x1000
GICD_V3_SIZE = 0x10000


class _GicdCtlr(NamedTuple):
    Enable: Field = Field(0)          # GICv2 (and GICv3 EnableGrp0 when DS=1)
    EnableGrp1: Field = Field(1)      # GICv3 EnableGrp1 (ENABLE_SS_G1 in the kernel)
    ARE: Field = Field(4)             # GICv3, DS=1 view: affinity routing, reads 1 under KVM
    DS: Field = Field(6)              # GICv3: disable security, reads 1 under KVM
    nASSGIreq: Field = Field(8)       # GICv4.1 only
    RWP: Field = Field(31)


class _GicdTyper(NamedTuple):
    ITLinesNumber: Field = Field(0, 5)
    CPUNumber: Field = Field(5, 3)
    LPIS: Field = Field(17)
    IDbits: Field = Field(19, 5)


class _Iidr(NamedTuple):
    Implementer: Field = Field(0, 12)
    Revision: Field = Field(12, 4)
    Variant: Field = Field(16, 4)
    ProductID: Field = Field(24, 8)


class _GicdSgir(NamedTuple):
    SGIINTID: Field = Field(0, 4)
    NSATT: Field = Field(15)
    CPUTargetList: Field = Field(16, 8)
    TargetListFilter: Field = Field(24, 2)


GICD_CTLR_F = _GicdCtlr()
GICD_TYPER_F = _GicdTyper()
GICD_IIDR_F = _Iidr()
GICD_SGIR_F = _GicdSgir()
SGIR_FILTER_LIST = 0       # the CPUTargetList
SGIR_FILTER_OTHERS = 1     # every CPU but the requester
SGIR_FILTER_SELF = 2       # the requester only
SGIR_FILTER_RESERVED = 3   # ignored
INTERRUPT_ID_BITS_SPIS = 10  # GICD_TYPER.IDbits+1 without an ITS

# --- GICv2 CPU interface / virtual CPU interface (GICC / GICV, IHI 0048B 4.4, 5.3) -----------
GICC_CTLR = 0x00
GICC_PMR = 0x04
GICC_BPR = 0x08
GICC_IAR = 0x0C
GICC_EOIR = 0x10
GICC_RPR = 0x14
GICC_HPPIR = 0x18
GICC_ABPR = 0x1C
GICC_AIAR = 0x20
GICC_AEOIR = 0x24
GICC_AHPPIR = 0x28
GICC_APR = 0xD0            # APR0..3, 16 bytes
GICC_NSAPR = 0xE0          # NSAPR0..3, 16 bytes
GICC_IIDR = 0xFC
GICC_DIR = 0x1000
GICC_SIZE = 0x2000


class _GiccCtlr(NamedTuple):
    EnableGrp0: Field = Field(0)
    EnableGrp1: Field = Field(1)
    AckCtl: Field = Field(2)
    FIQEn: Field = Field(3)
    CBPR: Field = Field(4)
    EOImode: Field = Field(9)


class _GiccIar(NamedTuple):
    InterruptID: Field = Field(0, 10)
    CPUID: Field = Field(10, 3)


class _GiccIidr(NamedTuple):
    Implementer: Field = Field(0, 12)
    Revision: Field = Field(12, 4)
    ArchVersion: Field = Field(16, 4)
    ProductID: Field = Field(20, 12)


GICC_CTLR_F = _GiccCtlr()
GICC_IAR_F = _GiccIar()
GICC_IIDR_F = _GiccIidr()
GICC_IIDR_VALUE = (GICC_IIDR_F.ProductID.val(PRODUCT_ID_KVM)
                   | GICC_IIDR_F.ArchVersion.val(GICC_ARCH_VERSION_V2)
                   | GICC_IIDR_F.Implementer.val(IMPLEMENTER_ARM))

# --- GICv3 redistributor (IHI 0069 12.10/12.11) ------------------------------------------------
GICR_CTLR = 0x0000
GICR_IIDR = 0x0004
GICR_TYPER = 0x0008
GICR_STATUSR = 0x0010
GICR_WAKER = 0x0014
GICR_PROPBASER = 0x0070
GICR_PENDBASER = 0x0078
GICR_INVLPIR = 0x00A0
GICR_INVALLR = 0x00B0
GICR_SYNCR = 0x00C0
GICR_IDREGS = 0xFFD0
GICR_PIDR2 = 0xFFE8
GICR_SGI_BASE = 0x10000        # the SGI_base frame follows RD_base
GICR_IGROUPR0 = 0x0080         # offsets within the SGI_base frame
GICR_ISENABLER0 = 0x0100
GICR_ICENABLER0 = 0x0180
GICR_ISPENDR0 = 0x0200
GICR_ICPENDR0 = 0x0280
GICR_ISACTIVER0 = 0x0300
GICR_ICACTIVER0 = 0x0380
GICR_IPRIORITYR0 = 0x0400
GICR_ICFGR0 = 0x0C00
GICR_IGRPMODR0 = 0x0D00
GICR_NSACR = 0x0E00
GICR_FRAME_SIZE = 0x20000      # RD_base + SGI_base, per vCPU


class _GicrCtlr(NamedTuple):
    EnableLPIs: Field = Field(0)
    CES: Field = Field(1)
    IR: Field = Field(2)
    RWP: Field = Field(3)


class _GicrTyper(NamedTuple):
    PLPIS: Field = Field(0)
    VLPIS: Field = Field(1)
    Last: Field = Field(4)
    Processor_Number: Field = Field(8, 16)
    Affinity_Value: Field = Field(32, 32)


class _GicrWaker(NamedTuple):
    ProcessorSleep: Field = Field(1)
    ChildrenAsleep: Field = Field(2)


GICR_CTLR_F = _GicrCtlr()
GICR_TYPER_F = _GicrTyper()
GICR_WAKER_F = _GicrWaker()


class _Irouter(NamedTuple):
    Aff0: Field = Field(0, 8)
    Aff1: Field = Field(8, 8)
    Aff2: Field = Field(16, 8)
    IRM: Field = Field(31)
    Aff3: Field = Field(32, 8)


GICD_IROUTER_F = _Irouter()
IROUTER_AFF210_MASK = (GICD_IROUTER_F.Aff0.mask | GICD_IROUTER_F.Aff1.mask
                       | GICD_IROUTER_F.Aff2.mask)   # what KVM keeps of an IROUTER write

# --- GICv3 CPU interface system registers (IHI 0069 12.2) --------------------------------------


class _IccSgi1r(NamedTuple):
    TargetList: Field = Field(0, 16)
    Aff1: Field = Field(16, 8)
    INTID: Field = Field(24, 4)
    Aff2: Field = Field(32, 8)
    IRM: Field = Field(40)
    RS: Field = Field(44, 4)
    Aff3: Field = Field(48, 8)


class _IccCtlr(NamedTuple):
    CBPR: Field = Field(0)
    EOImode: Field = Field(1)
    PMHE: Field = Field(6)
    PRIbits: Field = Field(8, 3)
    IDbits: Field = Field(11, 3)
    SEIS: Field = Field(14)
    A3V: Field = Field(15)
    RSS: Field = Field(18)


class _IccSre(NamedTuple):
    SRE: Field = Field(0)
    DFB: Field = Field(1)
    DIB: Field = Field(2)


class _IccIar(NamedTuple):
    INTID: Field = Field(0, 24)


ICC_SGI1R_F = _IccSgi1r()
ICC_CTLR_F = _IccCtlr()
ICC_SRE_F = _IccSre()
ICC_IAR_F = _IccIar()
ICC_SRE_VALUE = ICC_SRE_F.SRE.val(1) | ICC_SRE_F.DFB.val(1) | ICC_SRE_F.DIB.val(1)  # 0x7
ICC_PMR_MASK = 0xFF

# MPIDR affinity fields (Aff3 sits above bit 31).
MPIDR_AFF0 = Field(0, 8)
MPIDR_AFF1 = Field(8, 8)
MPIDR_AFF2 = Field(16, 8)
MPIDR_AFF3 = Field(32, 8)

# --- hypervisor control interface (GICH_* v2 / ICH_*_EL2 v3) -----------------------------------


class _Hcr(NamedTuple):
    En: Field = Field(0)
    UIE: Field = Field(1)
    LRENPIE: Field = Field(2)
    NPIE: Field = Field(3)
    VGrp0EIE: Field = Field(4)
    VGrp0DIE: Field = Field(5)
    VGrp1EIE: Field = Field(6)
    VGrp1DIE: Field = Field(7)
    TC: Field = Field(10)         # v3 only: trap common sysregs
    TALL0: Field = Field(11)      # v3 only
    TALL1: Field = Field(12)      # v3 only
    TDIR: Field = Field(14)       # v3 only
    EOIcount: Field = Field(27, 5)


class _Misr(NamedTuple):
    EOI: Field = Field(0)
    U: Field = Field(1)
    LRENP: Field = Field(2)
    NP: Field = Field(3)
    VGrp0E: Field = Field(4)
    VGrp0D: Field = Field(5)
    VGrp1E: Field = Field(6)
    VGrp1D: Field = Field(7)


class _GichVtr(NamedTuple):
    ListRegs: Field = Field(0, 6)
    PREbits: Field = Field(26, 3)
    PRIbits: Field = Field(29, 3)


class _IchVtr(NamedTuple):
    ListRegs: Field = Field(0, 5)
    A3V: Field = Field(21)
    SEIS: Field = Field(22)
    IDbits: Field = Field(23, 3)
    PREbits: Field = Field(26, 3)
    PRIbits: Field = Field(29, 3)


HCR = _Hcr()          # GICH_HCR and ICH_HCR_EL2 share the layout of the fields both have
MISR = _Misr()        # GICH_MISR and ICH_MISR_EL2
GICH_VTR = _GichVtr()
ICH_VTR = _IchVtr()
ICH_VTR_IDBITS_16 = 0  # IDbits encoding for 16-bit INTIDs


@dataclass(frozen=True, slots=True)
class VmcrLayout:
    """GICH_VMCR / ICH_VMCR_EL2: the guest-visible CPU interface control state."""

    grpen0: Field
    grpen1: Field
    ackctl: Field
    fiqen: Field
    cbpr: Field
    eoim: Field
    bpr1: Field          # GICH_VMCR.VMABP / ICH_VMCR.VBPR1
    bpr0: Field          # GICH_VMCR.VMBP / ICH_VMCR.VBPR0
    pmr: Field           # GICH_VMCR.VMPriMask (5 bits) / ICH_VMCR.VPMR (8 bits)
    pmr_shift: int       # bits of priority below the stored PMR field


GICH_VMCR = VmcrLayout(grpen0=Field(0), grpen1=Field(1), ackctl=Field(2), fiqen=Field(3),
                       cbpr=Field(4), eoim=Field(9), bpr1=Field(18, 3), bpr0=Field(21, 3),
                       pmr=Field(27, 5), pmr_shift=8 - PRI_BITS)
ICH_VMCR = VmcrLayout(grpen0=Field(0), grpen1=Field(1), ackctl=Field(2), fiqen=Field(3),
                      cbpr=Field(4), eoim=Field(9), bpr1=Field(18, 3), bpr0=Field(21, 3),
                      pmr=Field(24, 8), pmr_shift=0)

# --- list registers ----------------------------------------------------------------------------
GICH_MAX_LRS = 64     # GICH_VTR.ListRegs is 6 bits (KVM: VGIC_V2_MAX_LRS)
ICH_MAX_LRS = 16      # ICH_VTR_EL2.ListRegs is 4 bits (KVM: VGIC_V3_MAX_LRS)
LR_STATE_INVALID = 0
LR_STATE_PENDING = 1
LR_STATE_ACTIVE = 2
LR_STATE_PENDING_ACTIVE = 3


@dataclass(frozen=True, slots=True)
class LrLayout:
    """One list register format. ``pintid`` is valid when HW=1; ``eoi``/``cpuid`` when HW=0.

    The state field holds Pending in its low bit and Active in its high bit in both formats.
    """

    vintid: Field
    pintid: Field
    cpuid: Field | None   # GICv2 SGI source; absent from the v3-model LR
    eoi: Field
    priority: Field
    priority_shift: int   # the field holds ``priority >> priority_shift``
    state: Field
    group: Field
    hw: Field

    def get_priority(self, lr: int) -> int:
        return self.priority.get(lr) << self.priority_shift

    def put_priority(self, lr: int, priority: int) -> int:
        return self.priority.put(lr, priority >> self.priority_shift)

    def get_cpuid(self, lr: int) -> int:
        if self.cpuid is None or self.hw.get(lr):
            return 0
        return self.cpuid.get(lr)

    def signals_eoi(self, lr: int) -> bool:
        """EOI maintenance condition: invalid, EOI=1, HW=0 (kernel: lr_signals_eoi_mi)."""
        return (self.state.get(lr) == LR_STATE_INVALID and not self.hw.get(lr)
                and bool(self.eoi.get(lr)))


# GICH_LRn (IHI 0048B 5.3.11), 32 bits.
GICH_LR = LrLayout(vintid=Field(0, 10), pintid=Field(10, 10), cpuid=Field(10, 3), eoi=Field(19),
                   priority=Field(23, 5), priority_shift=8 - PRI_BITS, state=Field(28, 2),
                   group=Field(30), hw=Field(31))
# ICH_LR<n>_EL2 (IHI 0069 12.5.10), 64 bits.
ICH_LR = LrLayout(vintid=Field(0, 32), pintid=Field(32, 13), cpuid=None, eoi=Field(41),
                  priority=Field(48, 8), priority_shift=0, state=Field(62, 2), group=Field(60),
                  hw=Field(61))
