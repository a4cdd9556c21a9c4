"""GICv2 distributor (GICD_*) of the userspace GIC: its register map as a table.

Counterpart: ARM IHI 0048B 4.3 (distributor register descriptions) and QEMU hw/intc/arm_gic.c
(``gic_dist_readb``/``gic_dist_writeb``); where the architecture leaves a choice, the choice of
KVM's arch/arm64/kvm/vgic/vgic-mmio-v2.c, so both GICv2 models pass the same conformance suite.

Access rules (guests never get an abort from the GIC):
- Word access everywhere; byte access too for IPRIORITYR, ITARGETSR, CPENDSGIR and SPENDSGIR
  (the registers the spec makes byte-accessible). Other widths and misaligned accesses: RAZ/WI.
- Unknown offsets and per-IRQ fields of INTIDs >= nr_irqs: RAZ/WI. Read-only registers ignore
  writes, write-only registers read as zero.

Register choices:
- GICD_CTLR: EnableGrp0 (bit 0) and EnableGrp1 (bit 1), the GICv2-without-Security-Extensions
  layout (KVM's vGICv2 implements only bit 0, enabling both groups).
- GICD_TYPER: ITLinesNumber, CPUNumber = nr_cpus - 1, SecurityExtn 0.
- GICD_IIDR: 0x0000043B — implementer ARM (JEP106 0x43B), product 0, revision 0, as QEMU's
  arm_gic reports (KVM reports ProductID 0x4B "KVM"; this GIC is not KVM's).
- IS/ICENABLER: SGI bits are RAO/WI (SGIs are always enabled), as QEMU's arm_gic.
- IS/ICPENDR: SGI bits are WI (their pending state is per source: SPENDSGIR/CPENDSGIR).
- IPRIORITYR: 5 priority bits implemented (``& 0xF8``), as KVM.
- ITARGETSR0-7 (private interrupts): read-only, each byte reads the accessing CPU's bit; SPI
  bytes are writable and masked to existing CPUs, also with a single CPU (as KVM; the spec
  would allow RAZ/WI on a uniprocessor GIC).
- ICFGR: SGIs read edge, PPIs read level (both read-only, as KVM); SPIs Int_config[1].
- GICD_PIDR0-7/CIDR0-3: the GIC-400 identification values (PIDR2.ArchRev = 2).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field

from softkvm.arch import gic as G
from softkvm.vmm.irqchip.user_gic.gic import MAX_INTIDS, GicModel, IrqState

W32 = (4,)
W8_32 = (1, 4)

GICD_IIDR_VALUE = G.GICD_IIDR_F.Implementer.val(G.IMPLEMENTER_ARM)
GICD_TYPER_SECURITY_EXTN = G.Field(10)
GICD_PIDR4 = 0xFD0              # the ID block starts with PIDR4..7, then PIDR0..3, CIDR0..3
GICD_ID_VALUES = (0x04, 0x00, 0x00, 0x00,      # PIDR4-7: 4 KiB block count 0, JEP106 cont. 4
                  0x90, 0xB4, 0x2B, 0x00,      # PIDR0-3: part 0x490 (GIC-400), ArchRev 2
                  0x0D, 0xF0, 0x05, 0xB1)      # CIDR0-3: the PrimeCell preamble
SGI_SOURCE_BYTES = 16           # CPENDSGIR/SPENDSGIR: one byte per SGI

FieldGet = Callable[[GicModel, int, IrqState], int]
FieldPut = Callable[[GicModel, int, IrqState, int], None]
RegRead = Callable[[GicModel, int, int, int], int]          # (model, cpu, offset in reg, size)
RegWrite = Callable[[GicModel, int, int, int, int], None]   # (..., value)


# --- the table machinery (shared with cpuif.py) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class IrqRegister:
    """A per-IRQ register block: ``bits`` bits for each INTID, INTID 0 at ``offset``.
    ``get``/``put`` work on one interrupt's field; ``put`` None makes the block read-only."""

    name: str
    offset: int
    bits: int
    widths: tuple[int, ...]
    get: FieldGet
    put: FieldPut | None

    @property
    def length(self) -> int:
        return self.bits * MAX_INTIDS // 8

    def read(self, model: GicModel, cpu: int, rel: int, size: int) -> int:
        value = 0
        for i, irq in self._irqs(model, cpu, rel, size):
            value |= self.get(model, cpu, irq) << (i * self.bits)
        return value

    def write(self, model: GicModel, cpu: int, rel: int, size: int, value: int) -> None:
        if self.put is None:
            return
        mask = (1 << self.bits) - 1
        for i, irq in self._irqs(model, cpu, rel, size):
            self.put(model, cpu, irq, (value >> (i * self.bits)) & mask)
            model.refresh(irq)

    def _irqs(self, model: GicModel, cpu: int, rel: int,
              size: int) -> list[tuple[int, IrqState]]:
        first = rel * 8 // self.bits
        if first >= model.nr_irqs:
            return []   # beyond the implemented interrupts: RAZ/WI
        found = ((i, model.irq(cpu, first + i)) for i in range(size * 8 // self.bits))
        return [(i, irq) for i, irq in found if irq is not None]


@dataclass(frozen=True, slots=True)
class Register:
    """A plain register (or a run of identical ones) of ``length`` bytes at ``offset``.
    ``read`` None: write-only (RAZ); ``write`` None: read-only (WI)."""

    name: str
    offset: int
    length: int
    widths: tuple[int, ...]
    read_fn: RegRead | None
    write_fn: RegWrite | None

    def read(self, model: GicModel, cpu: int, rel: int, size: int) -> int:
        return 0 if self.read_fn is None else self.read_fn(model, cpu, rel, size)

    def write(self, model: GicModel, cpu: int, rel: int, size: int, value: int) -> None:
        if self.write_fn is not None:
            self.write_fn(model, cpu, rel, size, value)


Row = IrqRegister | Register


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """Rows sorted by offset; lookups by bisection. Callers hold the model's lock."""

    rows: tuple[Row, ...]
    _starts: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        rows = tuple(sorted(self.rows, key=lambda r: r.offset))
        for prev, row in zip(rows, rows[1:]):
            assert prev.offset + prev.length <= row.offset, f"{prev.name} overlaps {row.name}"
        object.__setattr__(self, "rows", rows)
        object.__setattr__(self, "_starts", tuple(r.offset for r in rows))

    def find(self, offset: int, size: int) -> Row | None:
        i = bisect_right(self._starts, offset) - 1
        if i < 0:
            return None
        row = self.rows[i]
        if offset + size > row.offset + row.length or size not in row.widths or offset % size:
            return None
        return row

    def read(self, model: GicModel, cpu: int, offset: int, size: int) -> int:
        row = self.find(offset, size)
        if row is None:
            return 0
        return row.read(model, cpu, offset - row.offset, size) & ((1 << (8 * size)) - 1)

    def write(self, model: GicModel, cpu: int, offset: int, size: int, value: int) -> None:
        row = self.find(offset, size)
        if row is not None:
            row.write(model, cpu, offset - row.offset, size, value & ((1 << (8 * size)) - 1))


# --- CTLR / TYPER / IIDR / ID registers -----------------------------------------------------------
_CTLR_MASK = G.GICD_CTLR_F.Enable.mask | G.GICD_CTLR_F.EnableGrp1.mask


def _read_ctlr(model: GicModel, _cpu: int, _rel: int, _size: int) -> int:
    return model.ctlr


def _write_ctlr(model: GicModel, _cpu: int, _rel: int, _size: int, value: int) -> None:
    model.ctlr = value & _CTLR_MASK


def _read_typer(model: GicModel, _cpu: int, _rel: int, _size: int) -> int:
    f = G.GICD_TYPER_F
    return (f.ITLinesNumber.val(model.nr_irqs // 32 - 1) | f.CPUNumber.val(model.nr_cpus - 1)
            | GICD_TYPER_SECURITY_EXTN.val(0))


def _read_iidr(_model: GicModel, _cpu: int, _rel: int, _size: int) -> int:
    return GICD_IIDR_VALUE


def _read_id(_model: GicModel, _cpu: int, rel: int, _size: int) -> int:
    return GICD_ID_VALUES[rel // 4]


# --- per-IRQ fields ------------------------------------------------------------------------------


def _get_group(_m: GicModel, _cpu: int, irq: IrqState) -> int:
    return irq.group


def _put_group(_m: GicModel, _cpu: int, irq: IrqState, bit: int) -> None:
    irq.group = bit


def _get_enabled(_m: GicModel, _cpu: int, irq: IrqState) -> int:
    return int(irq.enabled)


def _put_set_enable(_m: GicModel, _cpu: int, irq: IrqState, bit: int) -> None:
    if bit and not irq.is_sgi:
        irq.enabled = True


def _put_clear_enable(_m: GicModel, _cpu: int, irq: IrqState, bit: int) -> None:
    if bit and not irq.is_sgi:   # SGIs stay enabled (RAO/WI)
        irq.enabled = False


def _get_pending(_m: GicModel, _cpu: int, irq: IrqState) -> int:
    return int(irq.pending)


def _put_set_pending(_m: GicModel, _cpu: int, irq: IrqState, bit: int) -> None:
    if bit and not irq.is_sgi:
        irq.latch = True


def _put_clear_pending(_m: GicModel, _cpu: int, irq: IrqState, bit: int) -> None:
    if bit and not irq.is_sgi:
        irq.latch = False   # a level interrupt whose line is high stays pending


def _get_active(_m: GicModel, _cpu: int, irq: IrqState) -> int:
    return int(irq.active)


def _put_set_active(_m: GicModel, _cpu: int, irq: IrqState, bit: int) -> None:
    if bit:
        irq.active = True


def _put_clear_active(_m: GicModel, _cpu: int, irq: IrqState, bit: int) -> None:
    if bit:
        irq.active = False


def _get_priority(_m: GicModel, _cpu: int, irq: IrqState) -> int:
    return irq.priority


def _put_priority(_m: GicModel, _cpu: int, irq: IrqState, value: int) -> None:
    irq.priority = value & G.PRIORITY_MASK


def _get_targets(_m: GicModel, _cpu: int, irq: IrqState) -> int:
    return irq.targets   # private: the owner's bit, i.e. the accessing CPU's


def _put_targets(model: GicModel, _cpu: int, irq: IrqState, value: int) -> None:
    if irq.owner is None:
        irq.targets = value & model.cpu_mask


def _get_config(_m: GicModel, _cpu: int, irq: IrqState) -> int:
    return 2 if irq.edge else 0


def _put_config(_m: GicModel, _cpu: int, irq: IrqState, value: int) -> None:
    if irq.owner is None:   # SGI/PPI configuration is read-only
        irq.edge = bool(value & 2)


# --- SGIR and the SGI source registers ------------------------------------------------------------


def _write_sgir(model: GicModel, source: int, _rel: int, _size: int, value: int) -> None:
    f = G.GICD_SGIR_F
    mode = f.TargetListFilter.get(value)
    if mode == G.SGIR_FILTER_LIST:
        targets = f.CPUTargetList.get(value)
    elif mode == G.SGIR_FILTER_OTHERS:
        targets = model.cpu_mask & ~(1 << source)
    elif mode == G.SGIR_FILTER_SELF:
        targets = 1 << source
    else:
        return   # reserved filter: no SGI
    intid = f.SGIINTID.get(value)
    for cpu in range(model.nr_cpus):
        if targets >> cpu & 1:
            irq = model.cpus[cpu].private[intid]
            irq.sources |= 1 << source
            model.refresh(irq)
    if model.tracer.on:
        model.tracer.emit("user_gic_send_sgi", source, intid=intid,
                          targets=targets & model.cpu_mask)


def _sgis(model: GicModel, cpu: int, rel: int, size: int) -> list[tuple[int, IrqState]]:
    return [(i, model.cpus[cpu].private[rel + i]) for i in range(size)]


def _read_sgi_sources(model: GicModel, cpu: int, rel: int, size: int) -> int:
    return sum(irq.sources << (8 * i) for i, irq in _sgis(model, cpu, rel, size))


def _write_clear_sgi_sources(model: GicModel, cpu: int, rel: int, size: int, value: int) -> None:
    for i, irq in _sgis(model, cpu, rel, size):
        irq.sources &= ~(value >> (8 * i))
        model.refresh(irq)


def _write_set_sgi_sources(model: GicModel, cpu: int, rel: int, size: int, value: int) -> None:
    for i, irq in _sgis(model, cpu, rel, size):
        irq.sources |= (value >> (8 * i)) & model.cpu_mask   # only real CPUs can be sources
        model.refresh(irq)


DIST_REGISTERS = RegisterMap((
    Register("GICD_CTLR", G.GICD_CTLR, 4, W32, _read_ctlr, _write_ctlr),
    Register("GICD_TYPER", G.GICD_TYPER, 4, W32, _read_typer, None),
    Register("GICD_IIDR", G.GICD_IIDR, 4, W32, _read_iidr, None),
    IrqRegister("GICD_IGROUPR", G.GICD_IGROUPR, 1, W32, _get_group, _put_group),
    IrqRegister("GICD_ISENABLER", G.GICD_ISENABLER, 1, W32, _get_enabled, _put_set_enable),
    IrqRegister("GICD_ICENABLER", G.GICD_ICENABLER, 1, W32, _get_enabled, _put_clear_enable),
    IrqRegister("GICD_ISPENDR", G.GICD_ISPENDR, 1, W32, _get_pending, _put_set_pending),
    IrqRegister("GICD_ICPENDR", G.GICD_ICPENDR, 1, W32, _get_pending, _put_clear_pending),
    IrqRegister("GICD_ISACTIVER", G.GICD_ISACTIVER, 1, W32, _get_active, _put_set_active),
    IrqRegister("GICD_ICACTIVER", G.GICD_ICACTIVER, 1, W32, _get_active, _put_clear_active),
    IrqRegister("GICD_IPRIORITYR", G.GICD_IPRIORITYR, 8, W8_32, _get_priority, _put_priority),
    IrqRegister("GICD_ITARGETSR", G.GICD_ITARGETSR, 8, W8_32, _get_targets, _put_targets),
    IrqRegister("GICD_ICFGR", G.GICD_ICFGR, 2, W32, _get_config, _put_config),
    Register("GICD_SGIR", G.GICD_SGIR, 4, W32, None, _write_sgir),
    Register("GICD_CPENDSGIR", G.GICD_CPENDSGIR, SGI_SOURCE_BYTES, W8_32, _read_sgi_sources,
             _write_clear_sgi_sources),
    Register("GICD_SPENDSGIR", G.GICD_SPENDSGIR, SGI_SOURCE_BYTES, W8_32, _read_sgi_sources,
             _write_set_sgi_sources),
    Register("GICD_PIDR/CIDR", GICD_PIDR4, 4 * len(GICD_ID_VALUES), W32, _read_id, None),
))


@dataclass(frozen=True, slots=True)
class Distributor:
    """The GICD window as vCPU ``cpu`` sees it (SGI/PPI registers are banked): a BusDevice."""

    model: GicModel
    cpu: int

    def mmio_read(self, offset: int, size: int) -> int:
        with self.model.access():
            return DIST_REGISTERS.read(self.model, self.cpu, offset, size)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        with self.model.access():
            DIST_REGISTERS.write(self.model, self.cpu, offset, size, value)
