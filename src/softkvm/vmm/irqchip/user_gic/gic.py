"""The userspace GICv2 model: per-IRQ and per-CPU state, forwarding, and the output lines.

Counterpart: ARM IHI 0048B (GICv2) chapter 3 (interrupt handling and prioritization: the state
machine, 3.3 priority grouping and preemption, 3.2.4 the SGI model) and the state side of
chapter 4; QEMU hw/intc/arm_gic.c (``gic_update``, ``gic_acknowledge_irq``, ``gic_complete_irq``,
``gic_deactivate_irq``, ``gic_set_irq``). The register maps live in ``dist.py`` and
``cpuif.py``; they call the operations here with the model's lock held.

Model: a GICv2 *without* the Security Extensions, as QEMU's virt board gives a non-secure guest.
Groups exist (GICD_CTLR.EnableGrp0/EnableGrp1, GICC_CTLR.EnableGrp0/EnableGrp1, AckCtl, FIQEn),
group 0 is signalled as FIQ only when GICC_CTLR.FIQEn is set, so a guest that configures no
groups takes everything as IRQ.

State rules (IHI 0048B 3.2):
- An interrupt is pending when: SGI — some source CPU is recorded; edge — its latch is set;
  level — its line is high *or* its latch (ISPENDR) is set. Pending is independent of enable.
- The distributor forwards to CPU c the pending, not-active, enabled interrupts of a group
  enabled in GICD_CTLR and GICC_CTLR that target c (an SPI targets every CPU of its ITARGETSR
  byte: all of them see it pending, the first to acknowledge takes it — the architecture, as
  QEMU does; KVM delivers a multi-target SPI to the lowest target only). SPI targets reset to
  0, and an SPI with no target is forwarded nowhere (KVM sends it to vCPU 0), except on a
  uniprocessor GIC, where every interrupt targets the one CPU (IHI 0048B 4.3.12).
- Ties between equal priorities go to the lowest INTID.
- Signalled when the highest such interrupt has priority < PMR and group priority < running
  priority. Running priority = the highest active priority in GICC_APR0 | GICC_NSAPR0 (one bit
  per group priority: 5 implemented priority bits give 32 levels), 0xFF when idle.

Concurrency: one lock guards all state. Every MMIO access and input runs inside
:meth:`GicModel.access`, which recomputes each CPU's IRQ and FIQ outputs when it leaves and calls
``set_cpu_line`` only for lines whose level changed. Those calls are made without the state lock
but under a second lock taken before it, so concurrent flushes cannot reorder levels: the last
flush always publishes the latest state. ``set_cpu_line`` may kick a vCPU; it must never call
back into the GIC.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from softkvm.arch import gic as G
from softkvm.errors import ConfigError
from softkvm.kvm.trace import Tracer

LineSink = Callable[[int, int, bool], None]   # (cpu, LINE_IRQ or LINE_FIQ, level)
QuietSink = Callable[[int, bool], None]       # (cpu, nothing forwarded: GICC_IAR reads 1023)
LINE_IRQ = 0                                  # KVM_ARM_IRQ_CPU_IRQ
LINE_FIQ = 1                                  # KVM_ARM_IRQ_CPU_FIQ

MAX_CPUS = 8                     # GICv2: 8 CPU interfaces, 3-bit CPUID in IAR
MAX_INTIDS = 1024                # INTID space of the per-IRQ register blocks
DEFAULT_NR_IRQS = 256            # as KVM's VGIC_NR_IRQS_LEGACY: 224 SPIs
NR_SOURCE_BITS = 8               # one source bit per CPU in CPENDSGIR/SPENDSGIR bytes


def lowest_bit(value: int) -> int:
    """Index of the lowest set bit of a non-zero value."""
    return (value & -value).bit_length() - 1


@dataclass(slots=True)
class IrqState:
    """One interrupt as the distributor holds it (private ones: one per CPU)."""

    intid: int
    owner: int | None            # the CPU of a private interrupt, None for an SPI
    group: int = 0
    enabled: bool = False
    priority: int = 0
    edge: bool = False           # ICFGR Int_config[1]
    targets: int = 0             # SPI: ITARGETSR byte; private: the owner's bit
    line_level: bool = False     # the input wire (PPIs and SPIs)
    latch: bool = False          # edge seen, or ISPENDR: cleared by acknowledge / ICPENDR
    sources: int = 0             # SGI: CPUs that requested it and were not acknowledged yet
    active: bool = False

    @property
    def is_sgi(self) -> bool:
        return self.intid < G.NR_SGIS

    @property
    def pending(self) -> bool:
        if self.is_sgi:
            return self.sources != 0
        return self.latch or (self.line_level and not self.edge)


@dataclass(slots=True)
class CpuState:
    """One CPU interface (GICC_*) plus the CPU's banked private interrupts."""

    index: int
    private: list[IrqState]
    ctlr: int = 0
    pmr: int = 0
    bpr: int = G.BPR0_MIN        # GICC_BPR: group 0 (and group 1 when CBPR)
    abpr: int = G.BPR1_MIN       # GICC_ABPR: group 1 when CBPR is clear
    apr: int = 0                 # GICC_APR0: active group-0 priorities
    nsapr: int = 0               # GICC_NSAPR0: active group-1 priorities
    pending: set[int] = field(default_factory=set)   # private INTIDs currently pending
    lines: list[bool] = field(default_factory=lambda: [False, False])  # last levels sent
    quiet: bool | None = None    # last "nothing forwarded" sent (None: not yet)

    def flag(self, bit: G.Field) -> bool:
        return bool(bit.get(self.ctlr))


def _private_irqs(cpu: int) -> list[IrqState]:
    """Reset state: SGIs enabled (their enable bits are RAO/WI) and edge; PPIs level."""
    irqs = []
    for intid in range(G.NR_PRIVATE_IRQS):
        sgi = intid < G.NR_SGIS
        irqs.append(IrqState(intid, cpu, enabled=sgi, edge=sgi, targets=1 << cpu))
    return irqs


class GicModel:
    """A GICv2 distributor and ``nr_cpus`` CPU interfaces driving ``set_cpu_line``."""

    def __init__(self, nr_cpus: int, set_cpu_line: LineSink,
                 nr_irqs: int = DEFAULT_NR_IRQS, tracer: Tracer | None = None,
                 set_cpu_quiet: QuietSink | None = None) -> None:
        if not 1 <= nr_cpus <= MAX_CPUS:
            raise ConfigError(f"a GICv2 serves 1 to {MAX_CPUS} CPUs, not {nr_cpus}: "
                              f"use --gic v3 for more vCPUs")
        if nr_irqs % 32 or not G.NR_PRIVATE_IRQS + 32 <= nr_irqs <= MAX_INTIDS:
            raise ConfigError(f"nr_irqs {nr_irqs} must be a multiple of 32 in [64, 1024]")
        self.nr_cpus = nr_cpus
        self.nr_irqs = nr_irqs
        self.ctlr = 0                                      # GICD_CTLR
        self.cpus = [CpuState(c, _private_irqs(c)) for c in range(nr_cpus)]
        last_spi = min(nr_irqs, G.SPECIAL_INTID_BASE)      # 1020-1023 are not interrupts
        self.spis = [IrqState(i, None) for i in range(G.SPI_BASE, last_spi)]
        self.spi_pending: set[int] = set()
        self._set_cpu_line = set_cpu_line
        self.set_cpu_quiet = set_cpu_quiet
        self._lock = threading.Lock()
        self._out_lock = threading.Lock()   # orders output publication; taken before _lock
        self.tracer = tracer if tracer is not None else Tracer()   # the VM's, for --trace

    # --- locking and outputs --------------------------------------------------------------------

    @contextmanager
    def access(self) -> Iterator[None]:
        """Hold the state lock for one operation, then publish changed output lines."""
        try:
            with self._lock:
                yield
        finally:
            self.flush_lines()

    def flush_lines(self) -> None:
        """Recompute every CPU's IRQ/FIQ level; call the sink once per changed line. A CPU
        that has nothing forwarded any more, or again, is reported to ``set_cpu_quiet`` first:
        a CPU interface that stops being quiet must stop answering IAR with 1023 before its
        line rises."""
        with self._out_lock:
            with self._lock:
                quiet, changes = self._line_changes()
            for cpu, is_quiet in quiet:
                self.set_cpu_quiet(cpu, is_quiet)  # type: ignore[misc]
            for cpu, line, level in changes:
                self._set_cpu_line(cpu, line, level)

    def _line_changes(self) -> tuple[list[tuple[int, bool]], list[tuple[int, int, bool]]]:
        quiet, changes = [], []
        track_quiet = self.set_cpu_quiet is not None
        for cpu in self.cpus:
            best = self.highest_pending(cpu)
            if track_quiet and cpu.quiet is not (best is None):
                cpu.quiet = best is None
                quiet.append((cpu.index, cpu.quiet))
            wanted = self._signal_for(cpu, best)
            for line in (LINE_IRQ, LINE_FIQ):
                if cpu.lines[line] != wanted[line]:
                    cpu.lines[line] = wanted[line]
                    changes.append((cpu.index, line, wanted[line]))
        return quiet, changes

    def lines(self, cpu: int) -> tuple[bool, bool]:
        """The (IRQ, FIQ) levels last published for ``cpu``."""
        with self._lock:
            irq, fiq = self.cpus[cpu].lines
            return irq, fiq

    # --- interrupt lookup and bookkeeping (lock held) --------------------------------------------

    @property
    def cpu_mask(self) -> int:
        return (1 << self.nr_cpus) - 1

    def irq(self, cpu: int, intid: int) -> IrqState | None:
        """The interrupt ``intid`` as CPU ``cpu`` sees it; None if it does not exist."""
        if intid < G.NR_PRIVATE_IRQS:
            return self.cpus[cpu].private[intid]
        index = intid - G.SPI_BASE
        return self.spis[index] if index < len(self.spis) else None

    def refresh(self, irq: IrqState) -> None:
        """Keep the pending sets in step after anything that may change ``irq.pending``."""
        bucket = self.spi_pending if irq.owner is None else self.cpus[irq.owner].pending
        if irq.pending:
            bucket.add(irq.intid)
        else:
            bucket.discard(irq.intid)

    def set_line(self, irq: IrqState, level: bool) -> None:
        """An input wire changed: a rising edge latches an edge-triggered interrupt."""
        if irq.line_level == level:
            return
        irq.line_level = level
        if level and irq.edge:
            irq.latch = True
        self.refresh(irq)
        if self.tracer.on:
            self.tracer.emit("user_gic_set_irq", -1 if irq.owner is None else irq.owner,
                             intid=irq.intid, level=level)

    # --- forwarding and priority (IHI 0048B 3.3) -------------------------------------------------

    def group_enabled(self, cpu: CpuState, group: int) -> bool:
        """Forwarded by the distributor and signalled by the CPU interface for ``group``."""
        dist_bit = G.GICD_CTLR_F.EnableGrp1 if group else G.GICD_CTLR_F.Enable
        cpu_bit = G.GICC_CTLR_F.EnableGrp1 if group else G.GICC_CTLR_F.EnableGrp0
        return bool(dist_bit.get(self.ctlr)) and cpu.flag(cpu_bit)

    def _candidates(self, cpu: CpuState) -> Iterator[IrqState]:
        for intid in cpu.pending:
            yield cpu.private[intid]
        # A uniprocessor GIC forwards every SPI to its CPU, whatever ITARGETSR holds.
        uniprocessor = self.nr_cpus == 1
        bit = 1 << cpu.index
        for intid in self.spi_pending:
            spi = self.spis[intid - G.SPI_BASE]
            if uniprocessor or spi.targets & bit:
                yield spi

    def highest_pending(self, cpu: CpuState) -> IrqState | None:
        """The highest-priority interrupt forwarded to ``cpu`` (lowest INTID on a tie)."""
        best: IrqState | None = None
        for irq in self._candidates(cpu):
            if irq.active or not irq.enabled or not self.group_enabled(cpu, irq.group):
                continue
            if best is None or (irq.priority, irq.intid) < (best.priority, best.intid):
                best = irq
        return best

    def group_priority(self, cpu: CpuState, irq: IrqState) -> int:
        """The priority bits that take part in preemption (GICv2 3.3.3): BPR splits group 0
        (and group 1 with CBPR) after bit BPR+1, ABPR splits group 1 after bit ABPR."""
        if irq.group and not cpu.flag(G.GICC_CTLR_F.CBPR):
            shift = cpu.abpr
        else:
            shift = cpu.bpr + 1
        return irq.priority & (0xFF << shift) & 0xFF

    def running_priority(self, cpu: CpuState) -> int:
        active = cpu.apr | cpu.nsapr
        return lowest_bit(active) << G.BPR_MIN if active else G.IDLE_PRIORITY

    def can_signal(self, cpu: CpuState, irq: IrqState) -> bool:
        return (irq.priority < cpu.pmr
                and self.group_priority(cpu, irq) < self.running_priority(cpu))

    def signal(self, cpu: CpuState) -> tuple[bool, bool]:
        """(IRQ, FIQ) the CPU interface drives: group 0 is FIQ only with FIQEn."""
        return self._signal_for(cpu, self.highest_pending(cpu))

    def _signal_for(self, cpu: CpuState, irq: IrqState | None) -> tuple[bool, bool]:
        if irq is None or not self.can_signal(cpu, irq):
            return (False, False)
        fiq = irq.group == 0 and cpu.flag(G.GICC_CTLR_F.FIQEn)
        return (not fiq, fiq)

    # --- CPU interface operations (lock held) ----------------------------------------------------

    @staticmethod
    def _iar_value(irq: IrqState, source: int) -> int:
        return G.GICC_IAR_F.InterruptID.val(irq.intid) | G.GICC_IAR_F.CPUID.val(source)

    def _spurious_for(self, cpu: CpuState, irq: IrqState, alias: bool) -> int | None:
        """The spurious ID an access must return for ``irq``'s group, None if it may see it.
        GICC_IAR/HPPIR see group 1 only with AckCtl (else 1022); the aliases see group 1 only."""
        if alias:
            return None if irq.group == 1 else G.INTID_SPURIOUS
        if irq.group == 1 and not cpu.flag(G.GICC_CTLR_F.AckCtl):
            return G.INTID_SPURIOUS_GROUP1
        return None

    def _forwardable(self, cpu: CpuState, alias: bool) -> IrqState | int:
        """The highest pending interrupt this read may report, or the spurious INTID it gets."""
        irq = self.highest_pending(cpu)
        if irq is None:
            return G.INTID_SPURIOUS
        spurious = self._spurious_for(cpu, irq, alias)
        return irq if spurious is None else spurious

    def acknowledge(self, cpu_index: int, alias: bool) -> int:
        """GICC_IAR (``alias`` False) / GICC_AIAR read."""
        cpu = self.cpus[cpu_index]
        irq = self._forwardable(cpu, alias)
        if isinstance(irq, int):
            return irq
        if not self.can_signal(cpu, irq):
            return G.INTID_SPURIOUS
        return self._activate(cpu, irq)

    def _activate(self, cpu: CpuState, irq: IrqState) -> int:
        """Pending -> active (or active+pending), and raise the running priority."""
        source = 0
        if irq.is_sgi:
            source = lowest_bit(irq.sources)   # one source per acknowledge, lowest first
            irq.sources &= ~(1 << source)
        else:
            irq.latch = False                  # a level line still high keeps it pending
        irq.active = True
        bit = 1 << (self.group_priority(cpu, irq) >> G.BPR_MIN)
        if irq.group:
            cpu.nsapr |= bit
        else:
            cpu.apr |= bit
        self.refresh(irq)
        if self.tracer.on:
            self.tracer.emit("user_gic_ack", cpu.index, intid=irq.intid,
                             source=source if irq.is_sgi else None, group=irq.group)
        return self._iar_value(irq, source)

    def highest_pending_id(self, cpu_index: int, alias: bool) -> int:
        """GICC_HPPIR / GICC_AHPPIR: the highest forwarded interrupt, with no PMR or running
        priority check (as the virtual CPU interface KVM relies on)."""
        cpu = self.cpus[cpu_index]
        irq = self._forwardable(cpu, alias)
        if isinstance(irq, int):
            return irq
        source = lowest_bit(irq.sources) if irq.is_sgi else 0
        return self._iar_value(irq, source)

    def _drop_priority(self, cpu: CpuState, alias: bool) -> None:
        """Clear the highest active priority: the lowest set bit of APR0 | NSAPR0 for EOIR,
        of NSAPR0 (group 1) for AEOIR."""
        active = cpu.nsapr if alias else cpu.apr | cpu.nsapr
        if not active:
            return
        bit = active & -active
        if cpu.apr & bit and not alias:
            cpu.apr &= ~bit
        else:
            cpu.nsapr &= ~bit

    def end_of_interrupt(self, cpu_index: int, value: int, alias: bool) -> None:
        """GICC_EOIR / GICC_AEOIR write: priority drop, plus deactivation when EOImode is 0.
        Special INTIDs (1020-1023) are ignored. The CPUID field of an SGI is not checked: a CPU
        holds one active instance of each SGI whatever its source."""
        cpu = self.cpus[cpu_index]
        intid = G.GICC_IAR_F.InterruptID.get(value)
        if intid >= G.SPECIAL_INTID_BASE:
            return
        if self.tracer.on:
            self.tracer.emit("user_gic_eoi", cpu_index, intid=intid,
                             eoimode=cpu.flag(G.GICC_CTLR_F.EOImode))
        self._drop_priority(cpu, alias)
        irq = self.irq(cpu_index, intid)
        if irq is None or cpu.flag(G.GICC_CTLR_F.EOImode):
            return
        if alias and irq.group != 1:
            return   # AEOIR deactivates group 1 interrupts only
        self._deactivate(irq)

    def deactivate(self, cpu_index: int, value: int) -> None:
        """GICC_DIR write: deactivation, only with EOImode 1 (UNPREDICTABLE otherwise: ignored,
        as KVM and QEMU do). Any CPU may deactivate an SPI."""
        cpu = self.cpus[cpu_index]
        intid = G.GICC_IAR_F.InterruptID.get(value)
        if intid >= G.SPECIAL_INTID_BASE or not cpu.flag(G.GICC_CTLR_F.EOImode):
            return
        if self.tracer.on:
            self.tracer.emit("user_gic_dir", cpu_index, intid=intid)
        irq = self.irq(cpu_index, intid)
        if irq is not None:
            self._deactivate(irq)

    def _deactivate(self, irq: IrqState) -> None:
        irq.active = False
        self.refresh(irq)

    # --- inputs --------------------------------------------------------------------------------

    def set_spi(self, intid: int, level: bool) -> None:
        """Drive the input wire of SPI ``intid`` (32 <= intid < nr_irqs)."""
        if not G.SPI_BASE <= intid < G.SPI_BASE + len(self.spis):
            raise ConfigError(f"SPI {intid} does not exist: this GIC has SPIs 32 to "
                              f"{G.SPI_BASE + len(self.spis) - 1}")
        with self.access():
            self.set_line(self.spis[intid - G.SPI_BASE], bool(level))

    def set_ppi(self, cpu: int, intid: int, level: bool) -> None:
        """Drive the input wire of PPI ``intid`` (16-31) of CPU ``cpu``."""
        self.set_ppis(cpu, ((intid, level),))

    def set_ppis(self, cpu: int, levels: Iterable[tuple[int, bool]]) -> None:
        """Drive several PPI wires of CPU ``cpu`` at once: (intid, level) pairs, one update."""
        levels = tuple(levels)
        for intid, _ in levels:
            if not 0 <= cpu < self.nr_cpus or not G.NR_SGIS <= intid < G.NR_PRIVATE_IRQS:
                raise ConfigError(f"no PPI {intid} on CPU {cpu}: PPIs are 16-31, CPUs "
                                  f"0-{self.nr_cpus - 1}")
        with self.access():
            for intid, level in levels:
                self.set_line(self.cpus[cpu].private[intid], bool(level))
