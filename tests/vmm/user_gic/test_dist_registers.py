"""GICD register table: every distributor register, reset values, RAZ/WI, read-only fields,
byte access, banking, on a fresh userspace GICv2 (1 CPU unless a row says otherwise, 96 IRQs)."""

import pytest

from softkvm.arch import gic as G

from tests.vmm.user_gic.helpers import Row, make_guest, run_row

ALL = 0xFFFFFFFF
SGIS = 0x0000FFFF
CTLR, TYPER, IIDR = G.GICD_CTLR, G.GICD_TYPER, G.GICD_IIDR
ENABLE_S, ENABLE_C = G.GICD_ISENABLER, G.GICD_ICENABLER
PEND_S, PEND_C = G.GICD_ISPENDR, G.GICD_ICPENDR
ACT_S, ACT_C = G.GICD_ISACTIVER, G.GICD_ICACTIVER
PRIO, TARGET, CFG = G.GICD_IPRIORITYR, G.GICD_ITARGETSR, G.GICD_ICFGR
SPEND_SGI, CPEND_SGI = G.GICD_SPENDSGIR, G.GICD_CPENDSGIR

ROWS = [
    # --- CTLR / TYPER / IIDR ---
    Row("CTLR resets to 0", CTLR, 4, None, 0),
    Row("CTLR keeps EnableGrp0 and EnableGrp1 only", CTLR, 4, ALL, 0x3),
    Row("CTLR EnableGrp1 alone", CTLR, 4, 0x2, 0x2),
    Row("CTLR byte write is ignored", CTLR, 1, 0x1, 0, read_width=4),
    Row("CTLR byte read is RAZ", CTLR, 1, None, 0, setup=((CTLR, 4, 3),)),
    Row("CTLR halfword read is RAZ", CTLR, 2, None, 0, setup=((CTLR, 4, 3),)),
    Row("CTLR 64-bit read is RAZ", CTLR, 8, None, 0, setup=((CTLR, 4, 3),)),
    Row("TYPER: 3 lines of 32, 1 CPU, no security extensions", TYPER, 4, None, 0x2),
    Row("TYPER: CPUNumber = 3 on 4 CPUs", TYPER, 4, None, 0x62, nr_cpus=4),
    Row("TYPER is read-only", TYPER, 4, ALL, 0x2),
    Row("IIDR: ARM implementer, product 0, revision 0", IIDR, 4, None, 0x0000043B),
    Row("IIDR is read-only", IIDR, 4, 0, 0x43B),
    # --- IGROUPR ---
    Row("IGROUPR0 resets to group 0", G.GICD_IGROUPR, 4, None, 0),
    Row("IGROUPR0 is writable (SGIs and PPIs too)", G.GICD_IGROUPR, 4, ALL, ALL),
    Row("IGROUPR1 is writable", G.GICD_IGROUPR + 4, 4, 0x80000001, 0x80000001),
    Row("IGROUPR beyond nr_irqs is RAZ/WI", G.GICD_IGROUPR + 12, 4, ALL, 0),
    Row("IGROUPR byte access is RAZ/WI", G.GICD_IGROUPR + 4, 1, 0xFF, 0, read_width=4),
    # --- IS/ICENABLER ---
    Row("ISENABLER0: SGIs enabled at reset", ENABLE_S, 4, None, SGIS),
    Row("ICENABLER0 reads the same bits", ENABLE_C, 4, None, SGIS),
    Row("ISENABLER0 sets PPIs", ENABLE_S, 4, ALL, ALL),
    Row("ICENABLER0 cannot disable SGIs (RAO/WI)", ENABLE_C, 4, ALL, SGIS,
        setup=((ENABLE_S, 4, ALL),)),
    Row("ISENABLER1 sets SPI bits", ENABLE_S + 4, 4, 0x5, 0x5, read_at=ENABLE_C + 4),
    Row("ISENABLER writes of 0 change nothing", ENABLE_S + 4, 4, 0, 0x5,
        setup=((ENABLE_S + 4, 4, 0x5),)),
    Row("ICENABLER1 clears SPI bits", ENABLE_C + 4, 4, 0x1, 0x4, read_at=ENABLE_S + 4,
        setup=((ENABLE_S + 4, 4, 0x5),)),
    Row("ISENABLER beyond nr_irqs is RAZ/WI", ENABLE_S + 12, 4, ALL, 0),
    Row("ISENABLER halfword access is RAZ/WI", ENABLE_S + 4, 2, 0xFFFF, 0, read_width=4),
    # --- IS/ICPENDR ---
    Row("ISPENDR0: SGI bits are WI, PPIs latch", PEND_S, 4, ALL, 0xFFFF0000),
    Row("ISPENDR1 sets SPI latches", PEND_S + 4, 4, 0xF, 0xF, read_at=PEND_C + 4),
    Row("ICPENDR1 clears SPI latches", PEND_C + 4, 4, 0x3, 0xC, setup=((PEND_S + 4, 4, 0xF),)),
    Row("ICPENDR0 SGI bits are WI", PEND_C, 4, ALL, 1 << 3,
        setup=((SPEND_SGI, 4, 0x01000000),)),   # SGI 3 pending from CPU 0
    Row("ISPENDR beyond nr_irqs is RAZ/WI", PEND_S + 12, 4, ALL, 0),
    # --- IS/ICACTIVER ---
    Row("ISACTIVER0 sets SGI and PPI active bits", ACT_S, 4, ALL, ALL),
    Row("ICACTIVER0 clears them", ACT_C, 4, 0x0000FF00, 0xFFFF00FF, setup=((ACT_S, 4, ALL),)),
    Row("ISACTIVER2 sets SPI active bits", ACT_S + 8, 4, 0x80000001, 0x80000001,
        read_at=ACT_C + 8),
    Row("ISACTIVER beyond nr_irqs is RAZ/WI", ACT_S + 12, 4, ALL, 0),
    # --- IPRIORITYR ---
    Row("IPRIORITYR resets to 0", PRIO + 40, 4, None, 0),
    Row("IPRIORITYR keeps 5 bits per priority", PRIO + 40, 4, ALL, 0xF8F8F8F8),
    Row("IPRIORITYR byte write", PRIO + 41, 1, 0x87, 0x8000, read_at=PRIO + 40, read_width=4),
    Row("IPRIORITYR byte read", PRIO + 42, 1, None, 0x30, setup=((PRIO + 40, 4, 0x00302010),)),
    Row("IPRIORITYR of an SGI is writable", PRIO + 3, 1, 0x50, 0x50),
    Row("IPRIORITYR halfword write is ignored", PRIO + 40, 2, 0xFFFF, 0, read_width=4),
    Row("IPRIORITYR misaligned word is RAZ", PRIO + 41, 4, None, 0,
        setup=((PRIO + 40, 4, ALL),)),
    Row("IPRIORITYR beyond nr_irqs is RAZ/WI", PRIO + 96, 4, ALL, 0),
    Row("IPRIORITYR byte beyond nr_irqs is RAZ/WI", PRIO + 100, 1, 0xFF, 0),
    # --- ITARGETSR ---
    Row("ITARGETSR0-7 read the accessing CPU (1 CPU)", TARGET, 4, None, 0x01010101),
    Row("ITARGETSR0-7 read the accessing CPU (CPU 2 of 4)", TARGET + 28, 4, None, 0x04040404,
        cpu=2, nr_cpus=4),
    Row("ITARGETSR0-7 are read-only", TARGET + 16, 4, 0, 0x02020202, cpu=1, nr_cpus=2),
    Row("ITARGETSR0-7 byte read", TARGET + 27, 1, None, 0x08, cpu=3, nr_cpus=4),
    Row("ITARGETSR SPI resets to no target", TARGET + 32, 4, None, 0, nr_cpus=4),
    Row("ITARGETSR SPI masked to 1 CPU", TARGET + 32, 4, ALL, 0x01010101),
    Row("ITARGETSR SPI masked to 4 CPUs", TARGET + 32, 4, ALL, 0x0F0F0F0F, nr_cpus=4),
    Row("ITARGETSR SPI multi-target byte", TARGET + 33, 1, 0x06, 0x0600, read_at=TARGET + 32,
        read_width=4, nr_cpus=4),
    Row("ITARGETSR SPI byte masked to 2 CPUs", TARGET + 33, 1, 0x06, 0x02, nr_cpus=2),
    Row("ITARGETSR SPI write from another CPU", TARGET + 40, 1, 0x08, 0x08, cpu=1, nr_cpus=4),
    Row("ITARGETSR beyond nr_irqs is RAZ/WI", TARGET + 96, 4, ALL, 0, nr_cpus=4),
    # --- ICFGR ---
    Row("ICFGR0: SGIs are edge", CFG, 4, None, 0xAAAAAAAA),
    Row("ICFGR0 is read-only", CFG, 4, 0, 0xAAAAAAAA),
    Row("ICFGR1: PPIs are level", CFG + 4, 4, None, 0),
    Row("ICFGR1 is read-only", CFG + 4, 4, ALL, 0),
    Row("ICFGR2: SPIs reset to level", CFG + 8, 4, None, 0),
    Row("ICFGR2 keeps Int_config[1] only", CFG + 8, 4, ALL, 0xAAAAAAAA),
    Row("ICFGR2 one SPI edge", CFG + 8, 4, 0x8, 0x8),
    Row("ICFGR beyond nr_irqs is RAZ/WI", CFG + 24, 4, ALL, 0),
    Row("ICFGR byte access is RAZ/WI", CFG + 8, 1, 0xFF, 0, read_width=4),
    # --- SGIR and the SGI source registers ---
    Row("SGIR is write-only", G.GICD_SGIR, 4, None, 0),
    Row("SGIR to self sets the source byte", G.GICD_SGIR, 4, 0x02000005, 0x0100,
        read_at=SPEND_SGI + 4),
    Row("SPENDSGIR byte sets sources", SPEND_SGI + 1, 1, 0x3, 0x0300, read_at=SPEND_SGI,
        read_width=4, nr_cpus=2),
    Row("SPENDSGIR byte read", SPEND_SGI + 1, 1, None, 0x2, setup=((SPEND_SGI, 4, 0x0200),),
        nr_cpus=2),
    Row("SPENDSGIR keeps existing CPUs only", SPEND_SGI + 15, 1, 0xFF, 0x03, nr_cpus=2),
    Row("CPENDSGIR reads the same sources", CPEND_SGI + 4, 4, None, 0x00000300,
        setup=((SPEND_SGI + 4, 4, 0x0300),), nr_cpus=2),
    Row("CPENDSGIR byte clears sources", CPEND_SGI + 1, 1, 0x1, 0x2, read_at=SPEND_SGI + 1,
        setup=((SPEND_SGI, 4, 0x0300),), nr_cpus=2),
    Row("SPENDSGIR halfword access is RAZ/WI", SPEND_SGI, 2, 0x0101, 0, read_width=4),
    Row("SGI pending state shows in ISPENDR0", SPEND_SGI + 8, 4, 0x01000000, 1 << 11,
        read_at=PEND_S),
    # --- identification registers ---
    Row("PIDR4", 0xFD0, 4, None, 0x04),
    Row("PIDR0", 0xFE0, 4, None, 0x90),
    Row("PIDR1", 0xFE4, 4, None, 0xB4),
    Row("PIDR2: ArchRev 2", 0xFE8, 4, None, 0x2B),
    Row("PIDR3", 0xFEC, 4, None, 0x00),
    Row("CIDR0", 0xFF0, 4, None, 0x0D),
    Row("CIDR1", 0xFF4, 4, None, 0xF0),
    Row("CIDR2", 0xFF8, 4, None, 0x05),
    Row("CIDR3", 0xFFC, 4, None, 0xB1),
    Row("ID registers are read-only", 0xFE8, 4, 0, 0x2B),
    Row("ID registers: byte access is RAZ", 0xFE8, 1, None, 0),
    # --- unknown offsets ---
    *(Row(f"unknown offset {off:#x} is RAZ/WI", off, 4, ALL, 0)
      for off in (0x00C, 0x010, 0x040, 0x07C, 0xD00, 0xE00, 0xF04, 0xF30, 0xFCC)),
]


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_register(row):
    run_row(row)


def test_every_register_has_rows():
    """Each distributor register of IHI 0048B table 4-1 appears in the table above."""
    covered = {row.offset for row in ROWS} | {row.read_at for row in ROWS if row.read_at}
    for base, span in ((CTLR, 4), (TYPER, 4), (IIDR, 4), (G.GICD_IGROUPR, 0x80),
                       (ENABLE_S, 0x80), (ENABLE_C, 0x80), (PEND_S, 0x80), (PEND_C, 0x80),
                       (ACT_S, 0x80), (ACT_C, 0x80), (PRIO, 0x400), (TARGET, 0x400),
                       (CFG, 0x100), (G.GICD_SGIR, 4), (CPEND_SGI, 16), (SPEND_SGI, 16)):
        assert any(base <= off < base + span for off in covered), hex(base)


def test_private_registers_are_banked_per_cpu():
    guest = make_guest(nr_cpus=2)
    guest.wr(PRIO + 20, 0x40, size=1, cpu=1)
    guest.wr(ENABLE_S, 1 << 20, cpu=1)
    guest.wr(G.GICD_IGROUPR, 1 << 20, cpu=1)
    guest.wr(ACT_S, 1 << 21, cpu=1)
    assert guest.rd(PRIO + 20, 1, cpu=0) == 0 and guest.rd(PRIO + 20, 1, cpu=1) == 0x40
    assert guest.rd(ENABLE_S, cpu=0) == SGIS and guest.rd(ENABLE_S, cpu=1) == SGIS | 1 << 20
    assert guest.rd(G.GICD_IGROUPR, cpu=0) == 0 and guest.rd(G.GICD_IGROUPR, cpu=1) == 1 << 20
    assert guest.rd(ACT_S, cpu=0) == 0 and guest.rd(ACT_S, cpu=1) == 1 << 21


def test_spi_registers_are_shared():
    guest = make_guest(nr_cpus=2)
    guest.wr(PRIO + 40, 0x40, size=1, cpu=1)
    guest.wr(ENABLE_S + 4, 1 << 8, cpu=1)
    assert guest.rd(PRIO + 40, 1, cpu=0) == 0x40
    assert guest.rd(ENABLE_S + 4, cpu=0) == 1 << 8


def test_typer_with_the_largest_gic():
    guest = make_guest(nr_cpus=8, nr_irqs=1024)
    assert guest.rd(TYPER) == 31 | 7 << 5
    guest.wr(ENABLE_S + 124, ALL)   # INTIDs 992-1023: 1020-1023 do not exist
    assert guest.rd(ENABLE_S + 124) == 0x0FFFFFFF
