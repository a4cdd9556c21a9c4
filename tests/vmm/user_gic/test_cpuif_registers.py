"""GICC register table: every CPU-interface register, reset values, clamping, RAZ/WI, read-only
and write-only registers, widths, on a fresh userspace GICv2."""

import pytest

from softkvm.arch import gic as G

from tests.vmm.user_gic.helpers import Row, make_guest, run_row

ALL = 0xFFFFFFFF


def C(name, offset, width, write, expect, **kw):   # noqa: N802 - a row constructor
    return Row(name, offset, width, write, expect, frame="cpu", **kw)


ROWS = [
    C("CTLR resets to 0", G.GICC_CTLR, 4, None, 0),
    C("CTLR keeps EnableGrp0/1, AckCtl, FIQEn, CBPR, EOImode", G.GICC_CTLR, 4, ALL, 0x21F),
    C("CTLR: bypass bits and EOImodeNS are RAZ/WI", G.GICC_CTLR, 4, 0x7E0, 0x200),
    C("CTLR byte write is ignored", G.GICC_CTLR, 1, 0x1, 0, read_width=4),
    C("PMR resets to 0", G.GICC_PMR, 4, None, 0),
    C("PMR keeps 5 bits", G.GICC_PMR, 4, 0xFF, 0xF8),
    C("PMR ignores bits above 7", G.GICC_PMR, 4, 0x1A7, 0xA0),
    C("BPR resets to its minimum 2", G.GICC_BPR, 4, None, 2),
    C("BPR below the minimum is clamped", G.GICC_BPR, 4, 0, 2),
    C("BPR writable", G.GICC_BPR, 4, 5, 5),
    C("BPR keeps 3 bits", G.GICC_BPR, 4, 0xF, 7),
    C("ABPR resets to its minimum 3", G.GICC_ABPR, 4, None, 3),
    C("ABPR below the minimum is clamped", G.GICC_ABPR, 4, 1, 3),
    C("ABPR writable", G.GICC_ABPR, 4, 6, 6),
    C("IAR with nothing pending: 1023", G.GICC_IAR, 4, None, 1023),
    C("IAR is read-only", G.GICC_IAR, 4, 33, 1023),
    C("EOIR is write-only", G.GICC_EOIR, 4, None, 0),
    C("RPR idle: 0xFF", G.GICC_RPR, 4, None, 0xFF),
    C("RPR is read-only", G.GICC_RPR, 4, 0, 0xFF),
    C("RPR follows APR0", G.GICC_RPR, 4, None, 0xA0, setup=((G.GICC_APR, 4, 1 << 0x14),)),
    C("RPR follows NSAPR0", G.GICC_RPR, 4, None, 0x08,
      setup=((G.GICC_NSAPR, 4, 0x6), (G.GICC_APR, 4, 0x8))),
    C("HPPIR with nothing pending: 1023", G.GICC_HPPIR, 4, None, 1023),
    C("AIAR with nothing pending: 1023", G.GICC_AIAR, 4, None, 1023),
    C("AEOIR is write-only", G.GICC_AEOIR, 4, None, 0),
    C("AHPPIR with nothing pending: 1023", G.GICC_AHPPIR, 4, None, 1023),
    C("APR0 resets to 0", G.GICC_APR, 4, None, 0),
    C("APR0 is writable", G.GICC_APR, 4, 0x80000001, 0x80000001),
    *(C(f"APR{n} is RAZ/WI", G.GICC_APR + 4 * n, 4, ALL, 0) for n in (1, 2, 3)),
    C("NSAPR0 is writable", G.GICC_NSAPR, 4, 0x10, 0x10),
    *(C(f"NSAPR{n} is RAZ/WI", G.GICC_NSAPR + 4 * n, 4, ALL, 0) for n in (1, 2, 3)),
    C("APR0 and NSAPR0 are separate", G.GICC_APR, 4, 0x1, 0x1, setup=((G.GICC_NSAPR, 4, 2),)),
    C("IIDR: ArchVersion 2, implementer ARM", G.GICC_IIDR, 4, None, 0x0002043B),
    C("IIDR is read-only", G.GICC_IIDR, 4, 0, 0x0002043B),
    C("DIR is write-only", G.GICC_DIR, 4, None, 0),
    C("64-bit access is RAZ", G.GICC_CTLR, 8, None, 0, setup=((G.GICC_CTLR, 4, 1),)),
    C("misaligned access is RAZ", G.GICC_PMR + 2, 4, None, 0, setup=((G.GICC_PMR, 4, 0xF8),)),
    *(C(f"unknown offset {off:#x} is RAZ/WI", off, 4, ALL, 0)
      for off in (0x2C, 0x40, 0xCC, 0xF0, 0xF8, 0x1004, 0x1FFC)),
]


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_register(row):
    run_row(row)


def test_every_register_has_rows():
    offsets = {row.offset for row in ROWS}
    for reg in (G.GICC_CTLR, G.GICC_PMR, G.GICC_BPR, G.GICC_IAR, G.GICC_EOIR, G.GICC_RPR,
                G.GICC_HPPIR, G.GICC_ABPR, G.GICC_AIAR, G.GICC_AEOIR, G.GICC_AHPPIR,
                G.GICC_APR, G.GICC_NSAPR, G.GICC_IIDR, G.GICC_DIR):
        assert reg in offsets, hex(reg)


def test_cpu_interfaces_are_banked():
    guest = make_guest(nr_cpus=2)
    guest.cwr(G.GICC_CTLR, 0x3, cpu=1)
    guest.cwr(G.GICC_PMR, 0xF0, cpu=1)
    guest.cwr(G.GICC_BPR, 4, cpu=1)
    guest.cwr(G.GICC_APR, 1, cpu=1)
    assert [guest.crd(G.GICC_CTLR, c) for c in (0, 1)] == [0, 3]
    assert [guest.crd(G.GICC_PMR, c) for c in (0, 1)] == [0, 0xF0]
    assert [guest.crd(G.GICC_BPR, c) for c in (0, 1)] == [2, 4]
    assert [guest.crd(G.GICC_RPR, c) for c in (0, 1)] == [0xFF, 0]
