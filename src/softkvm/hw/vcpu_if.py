"""The GIC virtual CPU interface of one vCPU: list registers, VMCR, active priorities, maintenance.

Counterpart: the hardware KVM drives — GICH/GICV (ARM IHI 0048B ch. 5) for a GICv2 guest,
ICH_*_EL2/ICV_* (ARM IHI 0069 ch. 6, 12.4-12.5) for a GICv3 guest — with the guest-facing
behaviour written as KVM's trap emulation spells it (arch/arm64/kvm/hyp/vgic-v3-sr.c:
``__vgic_v3_read_iar``, ``__vgic_v3_write_eoir``, ``__vgic_v3_write_dir`` ...), using the ARM
pseudocode notions: highest priority pending LR, group priority, running priority.

Two sides:
- the hypervisor side (what KVM programs): ``lr``, ``hcr``, ``vmcr``, ``ap0r``/``ap1r``, and the
  outputs ``signal()`` (vIRQ/vFIQ, i.e. what HCR_EL2.VI/VF must be) and ``maintenance()``;
- the guest side: the GICV MMIO frame (``gicv_read``/``gicv_write``, version 2) and the ICC/ICV
  system registers (``icc_read``/``icc_write``, version 3).

Not thread-safe: the vGIC serialises every access under its VM lock. After a guest access that
changed state, ``on_change`` is called so the integrator can re-drive the vIRQ/vFIQ inputs and
force an exit when ``maintenance()`` holds (a real maintenance interrupt would). Deactivating an
HW=1 list register calls ``deactivate_phys(pINTID)``, as the hardware deactivates the physical
interrupt. The guest's acknowledges, EOIs and deactivations are reported to ``tracer`` (a
:class:`CpuIfTracer`, off unless the hypervisor installs one): hardware KVM never sees them,
but they end the interrupt flows of a trace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from softkvm.arch import gic as G
from softkvm.arch import sysregs as S
from softkvm.arch.sysregs import sys_reg

_V2 = 2
_V3 = 3
_APR_WIDTH = 32   # active-priority bits per AP0R/AP1R (GICH_APR) register
_HCR_VGRP_IE = (G.HCR.VGrp0EIE.mask | G.HCR.VGrp0DIE.mask | G.HCR.VGrp1EIE.mask
                | G.HCR.VGrp1DIE.mask)


@dataclass(slots=True)
class Vmcr:
    """The VMCR decoded (kernel: ``struct vgic_vmcr``); ``pmr`` keeps 8-bit priority units."""

    grpen0: bool = False
    grpen1: bool = False
    ackctl: bool = False
    fiqen: bool = False
    cbpr: bool = False
    eoim: bool = False
    bpr0: int = G.BPR0_MIN   # reset value: the hardware clamps a zero VMCR to the minimum
    bpr1: int = G.BPR1_MIN
    pmr: int = 0             # 0 masks everything until the guest writes PMR


class CpuIfTracer(Protocol):
    """Where the interface reports guest acknowledges/EOIs: ``emit`` is called only when ``on``
    (the hypervisor's tracer fits)."""

    on: bool

    def emit(self, name: str, vcpu: int, **args: object) -> None: ...


class _Untraced:
    """The default tracer: always off, so each site costs one attribute test."""

    __slots__ = ()
    on = False

    def emit(self, name: str, vcpu: int, **args: object) -> None:
        """Never called (``on`` is False)."""


def _lowest_set_bit(value: int) -> int:
    return (value & -value).bit_length() - 1


def _clamp_bpr(value: int, minimum: int) -> int:
    return max(minimum, min(value & G.BPR_MAX, G.BPR_MAX))


@dataclass(slots=True, eq=False)
class VcpuInterface:
    """One vCPU's virtual CPU interface; ``version`` 2 = GICH/GICV, 3 = ICH/ICV."""

    version: int
    nr_lr: int = 4
    deactivate_phys: Callable[[int], None] | None = None
    on_change: Callable[[], None] | None = None
    tracer: CpuIfTracer = field(default_factory=_Untraced)
    trace_vcpu: int = -1         # the vCPU index the tracer's events name
    lr: list[int] = field(init=False)
    hcr: int = 0
    vmcr: Vmcr = field(default_factory=Vmcr)
    ap0r: list[int] = field(default_factory=lambda: [0] * G.MAX_APR_REGS)
    ap1r: list[int] = field(default_factory=lambda: [0] * G.MAX_APR_REGS)
    layout: G.LrLayout = field(init=False)

    def __post_init__(self) -> None:
        if self.version not in (_V2, _V3):
            raise ValueError(f"GIC virtual CPU interface version must be 2 or 3, "
                             f"not {self.version}")
        max_lr = G.GICH_MAX_LRS if self.version == _V2 else G.ICH_MAX_LRS
        if not 1 <= self.nr_lr <= max_lr:
            raise ValueError(f"nr_lr must be 1..{max_lr}, not {self.nr_lr}")
        self.lr = [0] * self.nr_lr
        self.layout = G.GICH_LR if self.version == _V2 else G.ICH_LR

    # --- hypervisor side ---------------------------------------------------------------------

    def reset(self) -> None:
        """Power-on state: no LRs, interface disabled, VMCR and APRs at reset values."""
        self.lr = [0] * self.nr_lr
        self.hcr = 0
        self.vmcr = Vmcr()
        self.ap0r = [0] * G.MAX_APR_REGS
        self.ap1r = [0] * G.MAX_APR_REGS

    def clear_lrs(self) -> None:
        for i in range(self.nr_lr):
            self.lr[i] = 0

    def vtr(self) -> int:
        """GICH_VTR / ICH_VTR_EL2."""
        if self.version == _V2:
            return (G.GICH_VTR.ListRegs.val(self.nr_lr - 1) | G.GICH_VTR.PREbits.val(G.PRE_BITS - 1)
                    | G.GICH_VTR.PRIbits.val(G.PRI_BITS - 1))
        return (G.ICH_VTR.ListRegs.val(self.nr_lr - 1) | G.ICH_VTR.IDbits.val(G.ICH_VTR_IDBITS_16)
                | G.ICH_VTR.A3V.val(1) | G.ICH_VTR.PREbits.val(G.PRE_BITS - 1)
                | G.ICH_VTR.PRIbits.val(G.PRI_BITS - 1))

    def _vmcr_layout(self) -> G.VmcrLayout:
        return G.GICH_VMCR if self.version == _V2 else G.ICH_VMCR

    def read_vmcr(self) -> int:
        """The raw GICH_VMCR / ICH_VMCR_EL2 value."""
        lay, v = self._vmcr_layout(), self.vmcr
        return (lay.grpen0.val(v.grpen0) | lay.grpen1.val(v.grpen1) | lay.ackctl.val(v.ackctl)
                | lay.fiqen.val(v.fiqen) | lay.cbpr.val(v.cbpr) | lay.eoim.val(v.eoim)
                | lay.bpr0.val(v.bpr0) | lay.bpr1.val(v.bpr1) | lay.pmr.val(v.pmr >> lay.pmr_shift))

    def write_vmcr(self, raw: int) -> None:
        """Load a raw VMCR; like the hardware, BPRs below the minimum read back as the minimum."""
        lay = self._vmcr_layout()
        self.vmcr = Vmcr(grpen0=bool(lay.grpen0.get(raw)), grpen1=bool(lay.grpen1.get(raw)),
                         ackctl=bool(lay.ackctl.get(raw)), fiqen=bool(lay.fiqen.get(raw)),
                         cbpr=bool(lay.cbpr.get(raw)), eoim=bool(lay.eoim.get(raw)),
                         bpr0=_clamp_bpr(lay.bpr0.get(raw), G.BPR0_MIN),
                         bpr1=_clamp_bpr(lay.bpr1.get(raw), G.BPR1_MIN),
                         pmr=(lay.pmr.get(raw) << lay.pmr_shift) & G.PRIORITY_MASK)

    @property
    def eoi_count(self) -> int:
        return G.HCR.EOIcount.get(self.hcr)

    def eisr(self) -> int:
        """Bit n set: LR n asks for EOI maintenance (invalid, EOI=1, HW=0)."""
        return sum(1 << i for i, lr in enumerate(self.lr) if self.layout.signals_eoi(lr))

    def elrsr(self) -> int:
        """Bit n set: LR n is free (invalid and not waiting for EOI maintenance)."""
        lay = self.layout
        return sum(1 << i for i, lr in enumerate(self.lr)
                   if lay.state.get(lr) == G.LR_STATE_INVALID and not lay.signals_eoi(lr))

    def misr(self) -> int:
        """GICH_MISR / ICH_MISR_EL2: which maintenance conditions hold right now (all levels)."""
        lay, hcr, v = self.layout, self.hcr, self.vmcr
        states = [lay.state.get(lr) for lr in self.lr]
        valid = sum(1 for s in states if s != G.LR_STATE_INVALID)
        any_pending = any(s & G.LR_STATE_PENDING for s in states)
        conditions = (
            (G.MISR.EOI, self.eisr() != 0),
            (G.MISR.U, G.HCR.UIE.get(hcr) and valid <= 1),
            (G.MISR.LRENP, G.HCR.LRENPIE.get(hcr) and self.eoi_count != 0),
            (G.MISR.NP, G.HCR.NPIE.get(hcr) and not any_pending),
            (G.MISR.VGrp0E, G.HCR.VGrp0EIE.get(hcr) and v.grpen0),
            (G.MISR.VGrp0D, G.HCR.VGrp0DIE.get(hcr) and not v.grpen0),
            (G.MISR.VGrp1E, G.HCR.VGrp1EIE.get(hcr) and v.grpen1),
            (G.MISR.VGrp1D, G.HCR.VGrp1DIE.get(hcr) and not v.grpen1),
        )
        return sum(f.val(1) for f, cond in conditions if cond)

    def maintenance(self) -> bool:
        """Would the maintenance interrupt fire (HCR.En and some MISR condition)? ``misr() != 0``
        without building MISR: asked after every guest access to the interface."""
        hcr = self.hcr
        if not G.HCR.En.get(hcr):
            return False
        if hcr & _HCR_VGRP_IE:   # the group enable/disable conditions: rare, the long way
            return self.misr() != 0
        if G.HCR.LRENPIE.get(hcr) and self.eoi_count != 0:
            return True
        lay = self.layout
        live = [lr for lr in self.lr if lr]   # an all-zero LR is invalid and asks for nothing
        if any(lay.signals_eoi(lr) for lr in live):
            return True
        states = [lay.state.get(lr) for lr in live]
        if G.HCR.UIE.get(hcr) and sum(1 for s in states if s != G.LR_STATE_INVALID) <= 1:
            return True
        return bool(G.HCR.NPIE.get(hcr)) and not any(s & G.LR_STATE_PENDING for s in states)

    def signal(self) -> tuple[bool, bool]:
        """(vIRQ, vFIQ) the interface asserts: the highest-priority pending LR of an enabled
        group, if it beats PMR and the running priority. Group 0 is FIQ on v3 and on v2 only
        with FIQEn (a v2 guest that never configures groups takes group 0 as IRQ)."""
        if not any(self.lr):  # all invalid (most entries): no pending LR to look for
            return (False, False)
        if not G.HCR.En.get(self.hcr):
            return (False, False)
        i = self._highest_pending_lr()
        if i is None or not self._can_preempt(self.lr[i]):
            return (False, False)
        if self.layout.group.get(self.lr[i]) or (self.version == _V2 and not self.vmcr.fiqen):
            return (True, False)
        return (False, True)

    # --- priority arithmetic (ARM pseudocode: GroupPriority, running priority) -----------------

    def _bpr1(self) -> int:
        """Binary point used for group 1: with CBPR it is BPR0's plus one (ICC_BPR1 reads so)."""
        return min(self.vmcr.bpr0 + 1, G.BPR_MAX) if self.vmcr.cbpr else self.vmcr.bpr1

    def group_priority(self, priority: int, group: int) -> int:
        bpr = self.vmcr.bpr0 + 1 if group == 0 else self._bpr1()
        return priority & (G.PRIORITY_BYTE << bpr) & G.PRIORITY_BYTE

    def running_priority(self) -> int:
        for n in range(G.NR_APR_REGS):
            active = self.ap0r[n] | self.ap1r[n]
            if active:
                return (_APR_WIDTH * n + _lowest_set_bit(active)) << G.BPR_MIN
        return G.IDLE_PRIORITY

    def _apr_for(self, group: int) -> list[int]:
        # GICv2 has a single GICH_APR; GICv3 splits active priorities by group.
        return self.ap1r if group and self.version == _V3 else self.ap0r

    def _set_active_priority(self, priority: int, group: int) -> None:
        bit = self.group_priority(priority, group) >> G.BPR_MIN
        regs = self._apr_for(group)
        regs[bit // _APR_WIDTH] |= 1 << (bit % _APR_WIDTH)

    def _drop_priority(self) -> int:
        """Clear the highest active priority (lowest set APR bit); return it, 0xFF if none."""
        for n in range(G.NR_APR_REGS):
            ap0, ap1 = self.ap0r[n], self.ap1r[n]
            if not ap0 and not ap1:
                continue
            c0 = _lowest_set_bit(ap0) if ap0 else _APR_WIDTH
            c1 = _lowest_set_bit(ap1) if ap1 else _APR_WIDTH
            if c0 < c1:
                self.ap0r[n] = ap0 & ~(1 << c0)
            else:
                self.ap1r[n] = ap1 & ~(1 << c1)
            return (_APR_WIDTH * n + min(c0, c1)) << G.BPR_MIN
        return G.IDLE_PRIORITY

    # --- list register searches ----------------------------------------------------------------

    def _group_enabled(self, group: int) -> bool:
        return self.vmcr.grpen1 if group else self.vmcr.grpen0

    def has_pending_lr(self) -> bool:
        """Whether some LR is pending: without one, an IAR read returns 1023 and changes
        nothing (what the hardware's GICV frame answers without the hypervisor)."""
        state = self.layout.state
        return any(state.get(lr) == G.LR_STATE_PENDING for lr in self.lr if lr)

    def _highest_pending_lr(self) -> int | None:
        """Pending-only LR of an enabled group with the lowest priority value; first LR wins."""
        lay = self.layout
        best, best_prio = None, G.IDLE_PRIORITY
        for i, lr in enumerate(self.lr):
            if lay.state.get(lr) != G.LR_STATE_PENDING:
                continue
            if not self._group_enabled(lay.group.get(lr)):
                continue
            prio = lay.get_priority(lr)
            if prio < best_prio:
                best, best_prio = i, prio
        return best

    def _can_preempt(self, lr: int) -> bool:
        lay = self.layout
        prio = lay.get_priority(lr)
        return (prio < self.vmcr.pmr
                and self.group_priority(prio, lay.group.get(lr)) < self.running_priority())

    def _find_active_lr(self, intid: int, cpuid: int) -> int | None:
        lay = self.layout
        for i, lr in enumerate(self.lr):
            if (lay.vintid.get(lr) == intid and lay.state.get(lr) & G.LR_STATE_ACTIVE
                    and (lay.hw.get(lr) or lay.get_cpuid(lr) == cpuid)):
                return i
        return None

    def _deactivate_lr(self, i: int) -> None:
        lay = self.layout
        lr = lay.state.put(self.lr[i], lay.state.get(self.lr[i]) & ~G.LR_STATE_ACTIVE)
        self.lr[i] = lr
        if lay.hw.get(lr) and self.deactivate_phys is not None:
            self.deactivate_phys(lay.pintid.get(lr))

    def _bump_eoi_count(self) -> None:
        self.hcr = G.HCR.EOIcount.put(self.hcr, self.eoi_count + 1)  # 5-bit counter wraps

    def _lr_id(self, lr: int) -> int:
        """The value IAR/HPPIR report for an LR: vINTID, plus the source CPU for v2 SGIs."""
        lay = self.layout
        if self.version == _V2:
            return (G.GICC_IAR_F.InterruptID.val(lay.vintid.get(lr))
                    | G.GICC_IAR_F.CPUID.val(lay.get_cpuid(lr)))
        return lay.vintid.get(lr)

    def _split_id(self, value: int) -> tuple[int, int]:
        if self.version == _V2:
            return G.GICC_IAR_F.InterruptID.get(value), G.GICC_IAR_F.CPUID.get(value)
        return G.ICC_IAR_F.INTID.get(value), 0

    # --- the CPU interface operations ------------------------------------------------------------

    def _group_filter(self, lr_group: int, group: int, v2_iar: bool) -> int | None:
        """None if an access for ``group`` may take this LR, else the spurious INTID to return.
        GICV_IAR/HPPIR (``v2_iar``) also serve group 1 when AckCtl is set, else report 1022."""
        if lr_group == group:
            return None
        if v2_iar and lr_group == 1:
            return None if self.vmcr.ackctl else G.INTID_SPURIOUS_GROUP1
        return G.INTID_SPURIOUS

    def acknowledge(self, group: int, v2_iar: bool = False) -> int:
        """IAR read: the highest pending LR becomes active, its priority joins the APRs."""
        i = self._highest_pending_lr()
        if i is None:
            return G.INTID_SPURIOUS
        lr, lay = self.lr[i], self.layout
        lr_group = lay.group.get(lr)
        spurious = self._group_filter(lr_group, group, v2_iar)
        if spurious is not None:
            return spurious
        if not self._can_preempt(lr):
            return G.INTID_SPURIOUS
        self.lr[i] = lay.state.put(lr, G.LR_STATE_ACTIVE)
        self._set_active_priority(lay.get_priority(lr), lr_group)
        self.notify()  # the acknowledged LR no longer signals
        if self.tracer.on:
            self.tracer.emit("vgic_ack", self.trace_vcpu, intid=lay.vintid.get(lr),
                             source=lay.get_cpuid(lr) if self.version == _V2 else None,
                             group=lr_group)
        return self._lr_id(lr)

    def highest_pending(self, group: int, v2_iar: bool = False) -> int:
        """HPPIR read: no PMR or running-priority check, just the highest pending LR."""
        i = self._highest_pending_lr()
        if i is None:
            return G.INTID_SPURIOUS
        spurious = self._group_filter(self.layout.group.get(self.lr[i]), group, v2_iar)
        return self._lr_id(self.lr[i]) if spurious is None else spurious

    def end_of_interrupt(self, value: int, group: int | None) -> None:
        """EOIR write: always drop the running priority; with EOImode 0 also deactivate the
        matching active LR if its group and group priority agree (else the guest erred: ignore).
        No matching LR counts in EOIcount. ``group`` None accepts either (GICV_EOIR)."""
        intid, cpuid = self._split_id(value)
        if G.SPECIAL_INTID_BASE <= intid < G.MIN_LPI:
            return  # special INTIDs were never acknowledged
        if self.tracer.on:
            self.tracer.emit("vgic_eoi", self.trace_vcpu, intid=intid, eoimode=self.vmcr.eoim)
        dropped = self._drop_priority()
        i = self._find_active_lr(intid, cpuid)
        if i is None:
            if intid < G.MIN_LPI:
                self._bump_eoi_count()
            return
        if self.vmcr.eoim:
            return
        lr, lay = self.lr[i], self.layout
        lr_group = lay.group.get(lr)
        if group is not None and lr_group != group:
            return
        if self.group_priority(lay.get_priority(lr), lr_group) != dropped:
            return
        self._deactivate_lr(i)

    def deactivate(self, value: int) -> None:
        """DIR write: only meaningful with EOImode 1; no matching LR counts in EOIcount."""
        if not self.vmcr.eoim:
            return
        intid, cpuid = self._split_id(value)
        if intid >= G.SPECIAL_INTID_BASE:
            return
        if self.tracer.on:
            self.tracer.emit("vgic_dir", self.trace_vcpu, intid=intid)
        i = self._find_active_lr(intid, cpuid)
        if i is None:
            self._bump_eoi_count()
            return
        self._deactivate_lr(i)

    def notify(self) -> None:
        """Tell the integrator the outputs may have changed (``on_change``)."""
        if self.on_change is not None:
            self.on_change()

    # --- GICv2: the GICV frame (guest view of GICC) ------------------------------------------

    def gicv_read(self, offset: int, size: int) -> int:
        """A guest read of the GICC frame; RAZ for unknown offsets and non-32-bit accesses."""
        reg = _GICV_REGS.get(offset) if size == 4 and self.version == _V2 else None
        if reg is None or reg[0] is None:
            return 0
        return reg[0](self)

    def gicv_write(self, offset: int, size: int, value: int, from_guest: bool = True) -> None:
        """A guest write of the GICC frame; ``from_guest`` False for the hypervisor's own state
        restores (they must not call back into the core from a foreign thread)."""
        reg = _GICV_REGS.get(offset) if size == 4 and self.version == _V2 else None
        if reg is None or reg[1] is None:
            return
        reg[1](self, value & G.U32_MASK)
        if from_guest:
            self.notify()

    def _read_gicv_ctlr(self) -> int:
        v, f = self.vmcr, G.GICC_CTLR_F
        return (f.EnableGrp0.val(v.grpen0) | f.EnableGrp1.val(v.grpen1) | f.AckCtl.val(v.ackctl)
                | f.FIQEn.val(v.fiqen) | f.CBPR.val(v.cbpr) | f.EOImode.val(v.eoim))

    def _write_gicv_ctlr(self, value: int) -> None:
        v, f = self.vmcr, G.GICC_CTLR_F
        v.grpen0, v.grpen1 = bool(f.EnableGrp0.get(value)), bool(f.EnableGrp1.get(value))
        v.ackctl, v.fiqen = bool(f.AckCtl.get(value)), bool(f.FIQEn.get(value))
        v.cbpr, v.eoim = bool(f.CBPR.get(value)), bool(f.EOImode.get(value))

    def _read_pmr(self) -> int:
        return self.vmcr.pmr

    def _write_pmr(self, value: int) -> None:
        self.vmcr.pmr = value & G.PRIORITY_MASK

    def _read_bpr0(self) -> int:
        return self.vmcr.bpr0

    def _write_bpr0(self, value: int) -> None:
        self.vmcr.bpr0 = _clamp_bpr(value, G.BPR0_MIN)

    def _read_abpr(self) -> int:
        return self.vmcr.bpr1

    def _write_abpr(self, value: int) -> None:
        self.vmcr.bpr1 = _clamp_bpr(value, G.BPR1_MIN)

    def _read_gicv_apr0(self) -> int:
        return self.ap0r[0]

    def _write_gicv_apr0(self, value: int) -> None:
        self.ap0r[0] = value

    # --- GICv3: the ICC/ICV system registers -----------------------------------------------------

    def icc_read(self, encoding: int) -> int | None:
        """MRS of an ICC register; None when the encoding is not readable here (UNDEF)."""
        reg = _ICC_REGS.get(encoding) if self.version == _V3 else None
        if reg is None or reg[0] is None:
            return None
        return reg[0](self)

    def icc_write(self, encoding: int, value: int, from_guest: bool = True) -> bool:
        """MSR of an ICC register; False when the encoding is not writable here (UNDEF)."""
        reg = _ICC_REGS.get(encoding) if self.version == _V3 else None
        if reg is None or reg[1] is None:
            return False
        reg[1](self, value & G.U64_MASK)
        if from_guest:
            self.notify()
        return True

    def _read_bpr1(self) -> int:
        return self._bpr1()

    def _write_bpr1(self, value: int) -> None:
        if not self.vmcr.cbpr:  # with CBPR, BPR1 is an alias of BPR0 and writes are ignored
            self.vmcr.bpr1 = _clamp_bpr(value, G.BPR1_MIN)

    def _read_icc_ctlr(self) -> int:
        f = G.ICC_CTLR_F
        return (f.CBPR.val(self.vmcr.cbpr) | f.EOImode.val(self.vmcr.eoim)
                | f.PRIbits.val(G.PRI_BITS - 1) | f.IDbits.val(G.ICH_VTR_IDBITS_16) | f.A3V.val(1))

    def _write_icc_ctlr(self, value: int) -> None:
        self.vmcr.cbpr = bool(G.ICC_CTLR_F.CBPR.get(value))
        self.vmcr.eoim = bool(G.ICC_CTLR_F.EOImode.get(value))

    def _read_sre(self) -> int:
        return G.ICC_SRE_VALUE

    def _write_sre(self, _value: int) -> None:
        """SRE/DFB/DIB are fixed to 1 for a GICv3 guest: writes are ignored."""

    def _read_igrpen0(self) -> int:
        return int(self.vmcr.grpen0)

    def _write_igrpen0(self, value: int) -> None:
        self.vmcr.grpen0 = bool(value & 1)

    def _read_igrpen1(self) -> int:
        return int(self.vmcr.grpen1)

    def _write_igrpen1(self, value: int) -> None:
        self.vmcr.grpen1 = bool(value & 1)


_Reader = Callable[[VcpuInterface], int | None]
_Writer = Callable[[VcpuInterface, int], None]


def _apr_accessors(regs: str, n: int) -> tuple[_Reader, _Writer]:
    def read(vif: VcpuInterface) -> int:
        return getattr(vif, regs)[n]

    def write(vif: VcpuInterface, value: int) -> None:
        getattr(vif, regs)[n] = value & G.U32_MASK
    return read, write


VIF = VcpuInterface
_GICV_REGS: MappingProxyType[int, tuple[_Reader | None, _Writer | None]] = MappingProxyType({
    G.GICC_CTLR: (VIF._read_gicv_ctlr, VIF._write_gicv_ctlr),
    G.GICC_PMR: (VIF._read_pmr, VIF._write_pmr),
    G.GICC_BPR: (VIF._read_bpr0, VIF._write_bpr0),
    G.GICC_IAR: (lambda vif: vif.acknowledge(0, v2_iar=True), None),
    G.GICC_EOIR: (None, lambda vif, v: vif.end_of_interrupt(v, None)),
    G.GICC_RPR: (VIF.running_priority, None),
    G.GICC_HPPIR: (lambda vif: vif.highest_pending(0, v2_iar=True), None),
    G.GICC_ABPR: (VIF._read_abpr, VIF._write_abpr),
    G.GICC_AIAR: (lambda vif: vif.acknowledge(1), None),
    G.GICC_AEOIR: (None, lambda vif, v: vif.end_of_interrupt(v, 1)),
    G.GICC_AHPPIR: (lambda vif: vif.highest_pending(1), None),
    G.GICC_APR: (VIF._read_gicv_apr0, VIF._write_gicv_apr0),
    G.GICC_IIDR: (lambda vif: G.GICC_IIDR_VALUE, None),
    G.GICC_DIR: (None, VIF.deactivate),
})

# ICC_AP0R<n>_EL1 = (3, 0, 12, 8, 4+n), ICC_AP1R<n>_EL1 = (3, 0, 12, 9, n); only the registers
# the implemented preemption bits need exist, the others are UNDEFINED.
_APR_REGS = {
    **{sys_reg(3, 0, 12, 8, 4 + n): _apr_accessors("ap0r", n) for n in range(G.NR_APR_REGS)},
    **{sys_reg(3, 0, 12, 9, n): _apr_accessors("ap1r", n) for n in range(G.NR_APR_REGS)},
}
_ICC_REGS: MappingProxyType[int, tuple[_Reader | None, _Writer | None]] = MappingProxyType({
    S.ICC_IAR0_EL1.encoding: (lambda vif: vif.acknowledge(0), None),
    S.ICC_IAR1_EL1.encoding: (lambda vif: vif.acknowledge(1), None),
    S.ICC_EOIR0_EL1.encoding: (None, lambda vif, v: vif.end_of_interrupt(v, 0)),
    S.ICC_EOIR1_EL1.encoding: (None, lambda vif, v: vif.end_of_interrupt(v, 1)),
    S.ICC_HPPIR0_EL1.encoding: (lambda vif: vif.highest_pending(0), None),
    S.ICC_HPPIR1_EL1.encoding: (lambda vif: vif.highest_pending(1), None),
    S.ICC_DIR_EL1.encoding: (None, VIF.deactivate),
    S.ICC_RPR_EL1.encoding: (VIF.running_priority, None),
    S.ICC_PMR_EL1.encoding: (VIF._read_pmr, VIF._write_pmr),
    S.ICC_BPR0_EL1.encoding: (VIF._read_bpr0, VIF._write_bpr0),
    S.ICC_BPR1_EL1.encoding: (VIF._read_bpr1, VIF._write_bpr1),
    S.ICC_CTLR_EL1.encoding: (VIF._read_icc_ctlr, VIF._write_icc_ctlr),
    S.ICC_SRE_EL1.encoding: (VIF._read_sre, VIF._write_sre),
    S.ICC_IGRPEN0_EL1.encoding: (VIF._read_igrpen0, VIF._write_igrpen0),
    S.ICC_IGRPEN1_EL1.encoding: (VIF._read_igrpen1, VIF._write_igrpen1),
    **_APR_REGS,
})
