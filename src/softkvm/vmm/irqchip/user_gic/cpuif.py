"""GICv2 CPU interface (GICC_*) of the userspace GIC: its register map as a table.

Counterpart: ARM IHI 0048B 4.4 (CPU interface register descriptions), 3.3 (priority, binary
point, preemption) and 3.2 (acknowledge, priority drop, deactivation); QEMU hw/intc/arm_gic.c
(``gic_cpu_read``/``gic_cpu_write``). The CPU interface is banked: the window is served per
vCPU (:class:`CpuInterface` holds the index of the vCPU it belongs to).

A GIC without the Security Extensions: GICC_CTLR has EnableGrp0 (0), EnableGrp1 (1), AckCtl
(2), FIQEn (3), CBPR (4) and EOImode (9) — the bypass-disable bits and EOImodeNS are RAZ/WI (no
legacy bypass, no Non-secure copy). All registers are 32-bit; other widths, misaligned and
unknown offsets are RAZ/WI.

- GICC_PMR: 5 priority bits (``& 0xF8``), reset 0 (everything masked).
- GICC_BPR / GICC_ABPR: clamped to their minimum 2 / 3 (5 preemption bits), reset to it.
- GICC_IAR: highest forwarded interrupt → 1023 if none or not above PMR and the running
  priority; 1022 if it is group 1 and AckCtl is clear; else acknowledged: SGIs report their
  source in CPUID [12:10], one source per read (lowest first).
- GICC_EOIR: priority drop, and deactivation too while EOImode is 0. GICC_DIR: deactivation
  (EOImode 1 only). Writes of INTIDs 1020-1023 are ignored.
- GICC_AIAR / GICC_AEOIR / GICC_AHPPIR / GICC_ABPR: the group-1 aliases (group 0 → 1023;
  AEOIR drops the highest active group-1 priority and deactivates group-1 interrupts only).
- GICC_APR0 holds active group-0 priorities and GICC_NSAPR0 group-1 ones, one bit per group
  priority (bit = group priority >> 3); APR1-3 and NSAPR1-3 are RAZ/WI (32 levels fit one).
  KVM's GICv2 hardware view keeps both groups in a single GICH_APR.
- GICC_HPPIR: like IAR without acknowledging and without the PMR/running-priority check.
- GICC_IIDR: 0x0002043B — ArchVersion 2, implementer ARM, product 0 (as QEMU's arm_gic).
"""

from __future__ import annotations

from dataclasses import dataclass

from softkvm.arch import gic as G
from softkvm.vmm.irqchip.user_gic.dist import W32, Register, RegisterMap
from softkvm.vmm.irqchip.user_gic.gic import CpuState, GicModel

_F = G.GICC_CTLR_F
CTLR_MASK = (_F.EnableGrp0.mask | _F.EnableGrp1.mask | _F.AckCtl.mask | _F.FIQEn.mask
             | _F.CBPR.mask | _F.EOImode.mask)
GICC_IIDR_VALUE = (G.GICC_IIDR_F.ArchVersion.val(G.GICC_ARCH_VERSION_V2)
                   | G.GICC_IIDR_F.Implementer.val(G.IMPLEMENTER_ARM))
BPR_FIELD = G.Field(0, 3)
APR_BYTES = 16                 # APR0-3 / NSAPR0-3
APR_WORD_MASK = 0xFFFFFFFF


def _cpu(model: GicModel, cpu: int) -> CpuState:
    return model.cpus[cpu]


# --- control, mask, binary points --------------------------------------------------------------


def _read_ctlr(model: GicModel, cpu: int, _rel: int, _size: int) -> int:
    return _cpu(model, cpu).ctlr


def _write_ctlr(model: GicModel, cpu: int, _rel: int, _size: int, value: int) -> None:
    _cpu(model, cpu).ctlr = value & CTLR_MASK


def _read_pmr(model: GicModel, cpu: int, _rel: int, _size: int) -> int:
    return _cpu(model, cpu).pmr


def _write_pmr(model: GicModel, cpu: int, _rel: int, _size: int, value: int) -> None:
    _cpu(model, cpu).pmr = value & G.PRIORITY_MASK


def _read_bpr(model: GicModel, cpu: int, _rel: int, _size: int) -> int:
    return _cpu(model, cpu).bpr


def _write_bpr(model: GicModel, cpu: int, _rel: int, _size: int, value: int) -> None:
    _cpu(model, cpu).bpr = max(BPR_FIELD.get(value), G.BPR0_MIN)


def _read_abpr(model: GicModel, cpu: int, _rel: int, _size: int) -> int:
    return _cpu(model, cpu).abpr


def _write_abpr(model: GicModel, cpu: int, _rel: int, _size: int, value: int) -> None:
    _cpu(model, cpu).abpr = max(BPR_FIELD.get(value), G.BPR1_MIN)


# --- acknowledge, end of interrupt, deactivate ----------------------------------------------------


def _read_iar(model: GicModel, cpu: int, _rel: int, _size: int) -> int:
    return model.acknowledge(cpu, alias=False)


def _read_aiar(model: GicModel, cpu: int, _rel: int, _size: int) -> int:
    return model.acknowledge(cpu, alias=True)


def _write_eoir(model: GicModel, cpu: int, _rel: int, _size: int, value: int) -> None:
    model.end_of_interrupt(cpu, value, alias=False)


def _write_aeoir(model: GicModel, cpu: int, _rel: int, _size: int, value: int) -> None:
    model.end_of_interrupt(cpu, value, alias=True)


def _write_dir(model: GicModel, cpu: int, _rel: int, _size: int, value: int) -> None:
    model.deactivate(cpu, value)


def _read_hppir(model: GicModel, cpu: int, _rel: int, _size: int) -> int:
    return model.highest_pending_id(cpu, alias=False)


def _read_ahppir(model: GicModel, cpu: int, _rel: int, _size: int) -> int:
    return model.highest_pending_id(cpu, alias=True)


def _read_rpr(model: GicModel, cpu: int, _rel: int, _size: int) -> int:
    return model.running_priority(_cpu(model, cpu))


# --- active priorities ----------------------------------------------------------------------------


def _read_apr(model: GicModel, cpu: int, rel: int, _size: int) -> int:
    return _cpu(model, cpu).apr if rel == 0 else 0


def _write_apr(model: GicModel, cpu: int, rel: int, _size: int, value: int) -> None:
    if rel == 0:
        _cpu(model, cpu).apr = value & APR_WORD_MASK


def _read_nsapr(model: GicModel, cpu: int, rel: int, _size: int) -> int:
    return _cpu(model, cpu).nsapr if rel == 0 else 0


def _write_nsapr(model: GicModel, cpu: int, rel: int, _size: int, value: int) -> None:
    if rel == 0:
        _cpu(model, cpu).nsapr = value & APR_WORD_MASK


def _read_iidr(_model: GicModel, _cpu: int, _rel: int, _size: int) -> int:
    return GICC_IIDR_VALUE


CPU_REGISTERS = RegisterMap((
    Register("GICC_CTLR", G.GICC_CTLR, 4, W32, _read_ctlr, _write_ctlr),
    Register("GICC_PMR", G.GICC_PMR, 4, W32, _read_pmr, _write_pmr),
    Register("GICC_BPR", G.GICC_BPR, 4, W32, _read_bpr, _write_bpr),
    Register("GICC_IAR", G.GICC_IAR, 4, W32, _read_iar, None),
    Register("GICC_EOIR", G.GICC_EOIR, 4, W32, None, _write_eoir),
    Register("GICC_RPR", G.GICC_RPR, 4, W32, _read_rpr, None),
    Register("GICC_HPPIR", G.GICC_HPPIR, 4, W32, _read_hppir, None),
    Register("GICC_ABPR", G.GICC_ABPR, 4, W32, _read_abpr, _write_abpr),
    Register("GICC_AIAR", G.GICC_AIAR, 4, W32, _read_aiar, None),
    Register("GICC_AEOIR", G.GICC_AEOIR, 4, W32, None, _write_aeoir),
    Register("GICC_AHPPIR", G.GICC_AHPPIR, 4, W32, _read_ahppir, None),
    Register("GICC_APR", G.GICC_APR, APR_BYTES, W32, _read_apr, _write_apr),
    Register("GICC_NSAPR", G.GICC_NSAPR, APR_BYTES, W32, _read_nsapr, _write_nsapr),
    Register("GICC_IIDR", G.GICC_IIDR, 4, W32, _read_iidr, None),
    Register("GICC_DIR", G.GICC_DIR, 4, W32, None, _write_dir),
))


@dataclass(frozen=True, slots=True)
class CpuInterface:
    """The GICC window of vCPU ``cpu``: a BusDevice. The runner must route each vCPU's
    accesses to that vCPU's instance (see ``UserGic.cpu_interface``)."""

    model: GicModel
    cpu: int

    def mmio_read(self, offset: int, size: int) -> int:
        with self.model.access():
            return CPU_REGISTERS.read(self.model, self.cpu, offset, size)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        with self.model.access():
            CPU_REGISTERS.write(self.model, self.cpu, offset, size, value)
