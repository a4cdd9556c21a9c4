"""Shared pieces of the userspace GICv2 tests: a fake line sink, guest-style accessors, and
register-table rows (write, then read back, on a fresh GIC)."""

from __future__ import annotations

from dataclasses import dataclass, field

from softkvm.arch import gic as G
from softkvm.vmm.irqchip.user_gic import LINE_FIQ, LINE_IRQ, UserGic

GICC_CTLR_EN_GRP0 = G.GICC_CTLR_F.EnableGrp0.val(1)
GICC_CTLR_EN_GRP1 = G.GICC_CTLR_F.EnableGrp1.val(1)
GICD_CTLR_BOTH = G.GICD_CTLR_F.Enable.val(1) | G.GICD_CTLR_F.EnableGrp1.val(1)


@dataclass
class FakeLines:
    """The ``set_cpu_line`` sink: records every call and the current levels."""

    calls: list[tuple[int, int, bool]] = field(default_factory=list)
    levels: dict[tuple[int, int], bool] = field(default_factory=dict)

    def __call__(self, cpu: int, line: int, level: bool) -> None:
        self.calls.append((cpu, line, level))
        self.levels[(cpu, line)] = level

    def irq(self, cpu: int = 0) -> bool:
        return self.levels.get((cpu, LINE_IRQ), False)

    def fiq(self, cpu: int = 0) -> bool:
        return self.levels.get((cpu, LINE_FIQ), False)

    def take(self) -> list[tuple[int, int, bool]]:
        """The calls since the last take."""
        calls, self.calls = self.calls, []
        return calls


@dataclass
class Guest:
    """A GIC plus its sink, accessed the way a guest on a given vCPU does."""

    gic: UserGic
    lines: FakeLines

    def rd(self, offset: int, size: int = 4, cpu: int = 0) -> int:
        return self.gic.distributor(cpu).mmio_read(offset, size)

    def wr(self, offset: int, value: int, size: int = 4, cpu: int = 0) -> None:
        self.gic.distributor(cpu).mmio_write(offset, size, value)

    def crd(self, offset: int, cpu: int = 0, size: int = 4) -> int:
        return self.gic.cpu_interface(cpu).mmio_read(offset, size)

    def cwr(self, offset: int, value: int, cpu: int = 0, size: int = 4) -> None:
        self.gic.cpu_interface(cpu).mmio_write(offset, size, value)

    # --- what a guest's GIC driver does ---

    def boot(self, pmr: int = 0xF8, ctlr: int = GICC_CTLR_EN_GRP0 | GICC_CTLR_EN_GRP1,
             dist: int = GICD_CTLR_BOTH) -> None:
        self.wr(G.GICD_CTLR, dist)
        for cpu in range(self.gic.nr_cpus):
            self.cwr(G.GICC_CTLR, ctlr, cpu)
            self.cwr(G.GICC_PMR, pmr, cpu)

    def setup(self, intid: int, priority: int = 0xA0, edge: bool = True, cpu: int = 0,
              targets: int | None = 1, group: int = 0, enable: bool = True) -> None:
        """Priority, group, trigger, targets (SPIs; None leaves them), enable."""
        self.wr(G.GICD_IPRIORITYR + intid, priority, size=1, cpu=cpu)
        if group:   # IGROUPR is plain read/write: read-modify-write
            word, bit = divmod(intid, 32)
            old = self.rd(G.GICD_IGROUPR + 4 * word, cpu=cpu)
            self.wr(G.GICD_IGROUPR + 4 * word, old | 1 << bit, cpu=cpu)
        if intid >= G.NR_PRIVATE_IRQS:
            word, slot = divmod(intid, 16)
            cfg = self.rd(G.GICD_ICFGR + 4 * word)
            self.wr(G.GICD_ICFGR + 4 * word, G.Field(2 * slot + 1).put(cfg, int(edge)))
            if targets is not None:
                self.wr(G.GICD_ITARGETSR + intid, targets, size=1)
        if enable:
            self.set_bit(G.GICD_ISENABLER, intid, cpu=cpu)

    def set_bit(self, base: int, intid: int, cpu: int = 0) -> None:
        word, bit = divmod(intid, 32)
        self.wr(base + 4 * word, 1 << bit, cpu=cpu)

    def bit(self, base: int, intid: int, cpu: int = 0) -> bool:
        word, bit = divmod(intid, 32)
        return bool(self.rd(base + 4 * word, cpu=cpu) >> bit & 1)

    def ack(self, cpu: int = 0) -> int:
        return self.crd(G.GICC_IAR, cpu)

    def eoi(self, value: int, cpu: int = 0) -> None:
        self.cwr(G.GICC_EOIR, value, cpu)

    def sgi(self, sender: int, intid: int, targets: int = 0,
            mode: int = G.SGIR_FILTER_LIST) -> None:
        f = G.GICD_SGIR_F
        self.wr(G.GICD_SGIR, f.SGIINTID.val(intid) | f.CPUTargetList.val(targets)
                | f.TargetListFilter.val(mode), cpu=sender)

    def pulse_spi(self, intid: int) -> None:
        self.gic.set_spi(intid, True)
        self.gic.set_spi(intid, False)


def make_guest(nr_cpus: int = 1, nr_irqs: int = 96) -> Guest:
    lines = FakeLines()
    return Guest(UserGic(nr_cpus, lines, nr_irqs), lines)


def iar(intid: int, source: int = 0) -> int:
    return G.GICC_IAR_F.InterruptID.val(intid) | G.GICC_IAR_F.CPUID.val(source)


@dataclass(frozen=True)
class Row:
    """A register-table row: optional setup writes, an optional write, then the expected read.
    ``frame`` is "dist" or "cpu"; ``cpu`` is the accessing vCPU."""

    name: str
    offset: int
    width: int
    write: int | None
    expect: int
    read_at: int | None = None
    read_width: int | None = None
    cpu: int = 0
    frame: str = "dist"
    setup: tuple[tuple[int, int, int], ...] = ()   # (offset, width, value), same frame
    nr_cpus: int = 1

    def __str__(self) -> str:
        return self.name


def run_row(row: Row) -> None:
    guest = make_guest(row.nr_cpus)
    window = (guest.gic.distributor(row.cpu) if row.frame == "dist"
              else guest.gic.cpu_interface(row.cpu))
    for offset, width, value in row.setup:
        window.mmio_write(offset, width, value)
    if row.write is not None:
        window.mmio_write(row.offset, row.width, row.write)
    got = window.mmio_read(row.read_at if row.read_at is not None else row.offset,
                           row.read_width or row.width)
    assert got == row.expect, f"{row.name}: read {got:#x}, expected {row.expect:#x}"
