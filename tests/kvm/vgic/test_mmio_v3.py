"""GICv3 register maps, table-driven: GICD (private slots RAZ/WI, IROUTER, ID registers) and
GICR (RD_base and SGI_base frames), the redistributor region dispatch and GICR_TYPER.Last."""

from __future__ import annotations

import pytest

from softkvm.arch import gic as G
from softkvm.kvm.vgic.vgic import kvm_vgic_create
from softkvm.kvm.vgic.vgic_mmio_v3 import VGIC_V3_DIST
from softkvm.kvm.vgic.vgic_v3 import vgic_v3_alloc_redist_region
from tests.kvm.vgic.fakes import REDIST_BASE, V3, FakeVm, make_vgic
from tests.kvm.vgic.regtable import Row, run_row

ALL = 0xFFFFFFFF
ALL64 = (1 << 64) - 1
SGI = G.GICR_SGI_BASE

DIST = [
    Row("CTLR reset: ARE and DS read 1", 0x0000, 4, None, 0x50),
    Row("CTLR EnableGrp1", 0x0000, 4, 0x2, 0x52),
    Row("CTLR EnableGrp0 is not kept", 0x0000, 4, 0x1, 0x50),
    Row("CTLR all ones", 0x0000, 4, ALL, 0x52),
    Row("TYPER: 64 IRQs, 10 ID bits", 0x0004, 4, ALL, 0x480001),
    Row("IIDR read-only", 0x0008, 4, 0, 0x4B00343B),
    Row("TYPER2 zero", 0x000C, 4, None, 0),
    Row("STATUSR RAO/WI", 0x0010, 4, 0, ALL),
    Row("IGROUPR0 (private) RAZ/WI", 0x0080, 4, ALL, 0),
    Row("IGROUPR1 reset: group 1", 0x0084, 4, None, ALL),
    Row("IGROUPR1 guest-writable", 0x0084, 4, 0, 0),
    Row("ISENABLER0 (private) RAZ/WI", 0x0100, 4, ALL, 0),
    Row("ISENABLER1", 0x0104, 4, 0x11, 0x11),
    Row("ICENABLER1", 0x0184, 4, 0x1, 0x10, read_at=0x104, setup=((0x104, 4, 0x11),)),
    Row("ISPENDR1", 0x0204, 4, 0x3, 0x3),
    Row("ICPENDR1", 0x0284, 4, 0x1, 0x2, read_at=0x204, setup=((0x204, 4, 0x3),)),
    Row("ISACTIVER1", 0x0304, 4, 0x6, 0x6),
    Row("ICACTIVER1", 0x0384, 4, 0x2, 0x4, read_at=0x304, setup=((0x304, 4, 0x6),)),
    Row("IPRIORITYR private RAZ/WI", 0x0400, 4, ALL, 0),
    Row("IPRIORITYR SPI word", 0x0420, 4, 0x12345678, 0x10305078),
    Row("IPRIORITYR SPI byte", 0x0423, 1, 0xFF, 0xF8),
    Row("IPRIORITYR beyond nr_irqs", 0x0440, 4, ALL, 0),
    Row("ITARGETSR RAZ/WI", 0x0820, 4, ALL, 0),
    Row("ICFGR0/1 (private) RAZ/WI", 0x0C04, 4, ALL, 0),
    Row("ICFGR2 reset edge", 0x0C08, 4, None, 0xAAAAAAAA),
    Row("ICFGR2 level", 0x0C08, 4, 0, 0),
    Row("IGRPMODR RAZ/WI", 0x0D04, 4, ALL, 0),
    Row("IROUTER private RAZ/WI", 0x6000, 8, ALL64, 0),
    Row("IROUTER keeps Aff2..Aff0", 0x6100, 8, ALL64, 0xFFFFFF),
    Row("IROUTER low word", 0x6100, 4, ALL, 0xFFFFFF),
    Row("IROUTER high word RAZ/WI", 0x6104, 4, ALL, 0),
    Row("IROUTER beyond nr_irqs", 0x6200, 8, ALL64, 0),
    Row("IROUTER byte access RAZ", 0x6100, 1, None, 0, setup=((0x6100, 8, 1),)),
    Row("PIDR2: GICv3", 0xFFE8, 4, 0, 0x3B),
    Row("PIDR0 zero", 0xFFE0, 4, None, 0),
    Row("GICD_SGIR does not exist", 0x0F00, 4, ALL, 0),
]


@pytest.mark.parametrize("row", DIST, ids=str)
def test_distributor(row):
    vgic, _vm = make_vgic(V3, 2)
    run_row(vgic, row)


REDIST = [
    Row("CTLR: CES and IR (rev 3), no LPIs", 0x0000, 4, 1, 0x6, frame=0),
    Row("IIDR", 0x0004, 4, 0, 0x4B00043B, frame=0),
    Row("TYPER vCPU 0: not last", 0x0008, 8, ALL64, 0, frame=0),
    Row("TYPER vCPU 1: affinity, number, Last", 0x0008, 8, None, 0x1_0000_0110, frame=1),
    Row("TYPER low word", 0x0008, 4, None, 0x110, frame=1),
    Row("TYPER high word", 0x000C, 4, None, 0x1, frame=1),
    Row("STATUSR RAZ/WI", 0x0010, 4, ALL, 0, frame=0),
    Row("WAKER: ProcessorSleep/ChildrenAsleep read 0", 0x0014, 4, 0x2, 0, frame=0),
    Row("PROPBASER", 0x0070, 8, 0x1234_5678_9ABC_D000, 0x1234_5678_9ABC_D000, frame=0),
    Row("PROPBASER high word", 0x0074, 4, 0x55, 0x55, frame=0),
    Row("PENDBASER per vCPU", 0x0078, 8, 0x4000, 0x4000, frame=1),
    Row("SYNCR not busy", 0x00C0, 4, None, 0, frame=0),
    Row("PIDR2: GICv3", 0xFFE8, 4, None, 0x3B, frame=1),
    Row("IGROUPR0 reset: group 1", SGI + 0x080, 4, None, ALL, frame=0),
    Row("IGROUPR0 writable", SGI + 0x080, 4, 0xFFFF0000, 0xFFFF0000, frame=0),
    Row("ISENABLER0 reset: SGIs", SGI + 0x100, 4, None, 0xFFFF, frame=0),
    Row("ISENABLER0 sets PPIs", SGI + 0x100, 4, 0x08000000, 0x0800FFFF, frame=1),
    Row("ICENABLER0 clears", SGI + 0x180, 4, ALL, 0, read_at=SGI + 0x100, frame=0),
    Row("ISPENDR0: SGIs too under GICv3", SGI + 0x200, 4, 0x8001, 0x8001, frame=0),
    Row("ICPENDR0", SGI + 0x280, 4, 0x1, 0x8000, read_at=SGI + 0x200, frame=0,
        setup=((SGI + 0x200, 4, 0x8001),)),
    Row("ISACTIVER0", SGI + 0x300, 4, 0x10000, 0x10000, frame=0),
    Row("ICACTIVER0", SGI + 0x380, 4, 0x10000, 0, read_at=SGI + 0x300, frame=0,
        setup=((SGI + 0x300, 4, 0x10000),)),
    Row("IPRIORITYR0 byte", SGI + 0x405, 1, 0xFF, 0xF8, frame=0),
    Row("IPRIORITYR7 word", SGI + 0x41C, 4, ALL, 0xF8F8F8F8, frame=1),
    Row("IPRIORITYR8 does not exist", SGI + 0x420, 4, ALL, 0, frame=0),
    Row("ICFGR0 SGIs edge, read-only", SGI + 0xC00, 4, 0, 0xAAAAAAAA, frame=0),
    Row("ICFGR1 PPIs level, read-only", SGI + 0xC04, 4, ALL, 0, frame=0),
    Row("IGRPMODR0 RAZ/WI", SGI + 0xD00, 4, ALL, 0, frame=0),
    Row("NSACR RAZ/WI", SGI + 0xE00, 4, ALL, 0, frame=0),
    Row("unmapped offset", 0x0100, 4, ALL, 0, frame=0),
]


@pytest.mark.parametrize("row", REDIST, ids=str)
def test_redistributor(row):
    vgic, _vm = make_vgic(V3, 2)
    run_row(vgic, row)


def test_redistributor_frames_are_banked():
    vgic, _vm = make_vgic(V3, 2)
    vgic.redist_mmio_write(1, SGI + G.GICR_ISENABLER0, 4, 1 << 27)
    assert vgic.redist_mmio_read(0, SGI + G.GICR_ISENABLER0, 4) == 0xFFFF
    assert vgic.redist_mmio_read(1, SGI + G.GICR_ISENABLER0, 4) == 0x0800FFFF


def test_mmio_regions_dispatch_redistributors_by_frame():
    vgic, _vm = make_vgic(V3, 3)
    regions = {base: (size, read, write) for base, size, read, write in vgic.mmio_regions(0)}
    assert set(regions) == {0x08000000, REDIST_BASE}
    size, read, write = regions[REDIST_BASE]
    assert size == 3 * G.GICR_FRAME_SIZE
    typers = [read(n * G.GICR_FRAME_SIZE + G.GICR_TYPER, 8) for n in range(3)]
    assert typers == [0, 1 << 32 | 1 << 8, 2 << 32 | 2 << 8 | 1 << 4]
    write(2 * G.GICR_FRAME_SIZE + SGI + G.GICR_ISENABLER0, 4, 1 << 20)
    assert vgic.get_irq(2, 20).enabled and not vgic.get_irq(0, 20).enabled
    dsize, dread, _dwrite = regions[0x08000000]
    assert dsize == 0x10000 and dread(G.GICD_PIDR2, 4) == 0x3B


def test_gicr_typer_last_with_discrete_regions():
    """Two regions of two frames for three vCPUs: vCPU 1 ends a full region followed by a
    contiguous one in use (not Last); vCPU 2 is the last placed."""
    vm = FakeVm(3)
    vgic = kvm_vgic_create(vm, V3)
    vgic.dist_base = 0x08000000
    assert vgic_v3_alloc_redist_region(vgic, 0, 0x080A0000, 2) == 0
    assert vgic_v3_alloc_redist_region(vgic, 1, 0x080A0000 + 2 * G.GICR_FRAME_SIZE, 2) == 0
    vgic.vgic_init()
    vgic.kvm_vgic_map_resources()
    assert [vgic.rdist_is_last(v) for v in range(3)] == [False, False, True]
    regions = vgic.mmio_regions(0)
    assert [(base, size) for base, size, _r, _w in regions][1:] == [
        (0x080A0000, 0x40000), (0x080E0000, 0x40000)]
    read = regions[2][2]
    assert read(G.GICR_TYPER, 8) == 2 << 32 | 2 << 8 | 1 << 4
    assert read(G.GICR_FRAME_SIZE + G.GICR_TYPER, 8) == 0   # a free frame: RAZ


def test_irouter_routes_by_affinity():
    vgic, _vm = make_vgic(V3, 18)
    vgic.dist_mmio_write(0, G.GICD_IROUTER + 8 * 40, 8, 1 << 8 | 1)   # Aff1=1, Aff0=1
    irq = vgic.get_irq(None, 40)
    assert irq.target_vcpu == 17 and irq.mpidr == 0x101
    vgic.dist_mmio_write(0, G.GICD_IROUTER + 8 * 40, 8, 1 << 31)      # IRM: dropped, Aff 0
    assert irq.target_vcpu == 0 and irq.mpidr == 0


def test_iidr_and_typer_userspace_restore():
    vgic, _vm = make_vgic(V3, 1)
    assert VGIC_V3_DIST.uaccess(vgic, 0, True, G.GICD_IIDR, 0x4B00243B) == (0, 0)
    assert vgic.implementation_rev == 2
    assert vgic.redist_mmio_read(0, G.GICR_CTLR, 4) == 0   # rev 2: no CES/IR
    assert VGIC_V3_DIST.uaccess(vgic, 0, True, G.GICD_IIDR, 0x4B00443B)[0] < 0   # rev 4
    assert VGIC_V3_DIST.uaccess(vgic, 0, True, G.GICD_IIDR, 0x4C00343B)[0] < 0   # product
    assert VGIC_V3_DIST.uaccess(vgic, 0, True, G.GICD_TYPER, 0x480001)[0] == 0
    assert VGIC_V3_DIST.uaccess(vgic, 0, True, G.GICD_TYPER, 0x480002)[0] < 0
