"""Table test of the MMIO instruction decoder (A64 load/store single register)."""

import pytest

from softkvm.hw.mmio_decode import decode, extend_index
from tests.support.asm import assemble

# (instruction, is_load, size, sign_extend, rt_is_64, rt, rn, wb_imm, offset)
TABLE = [
    ("ldr w2, [x1, #0x18]", True, 4, False, False, 2, 1, None, 0x18),
    ("ldr x3, [x4]", True, 8, False, True, 3, 4, None, 0),
    ("ldrb w5, [x6, #1]", True, 1, False, False, 5, 6, None, 1),
    ("ldrh w7, [x8, #2]", True, 2, False, False, 7, 8, None, 2),
    ("ldrsb x1, [x2]", True, 1, True, True, 1, 2, None, 0),
    ("ldrsh w1, [x2]", True, 2, True, False, 1, 2, None, 0),
    ("ldrsw x1, [x2, #4]", True, 4, True, True, 1, 2, None, 4),
    ("str x9, [x10, #8]!", False, 8, False, True, 9, 10, 8, 8),
    ("str w9, [x10], #-4", False, 4, False, False, 9, 10, -4, 0),
    ("strb wzr, [sp]", False, 1, False, False, 31, 31, None, 0),
    ("stur w1, [x2, #-3]", False, 4, False, False, 1, 2, None, -3),
    ("ldar w1, [x2]", True, 4, False, False, 1, 2, None, 0),
    ("stlr x1, [x2]", False, 8, False, True, 1, 2, None, 0),
]


@pytest.mark.parametrize("row", TABLE, ids=[r[0] for r in TABLE])
def test_decode(row):
    word = int.from_bytes(assemble(row[0]), "little")
    insn = decode(word)
    assert insn is not None
    got = (insn.is_load, insn.size, insn.sign_extend, insn.rt_is_64, insn.rt, insn.rn,
           insn.wb_imm, insn.offset)
    assert got == tuple(row[1:])


def test_register_offset():
    insn = decode(int.from_bytes(assemble("ldr w1, [x2, w3, sxtw #2]"), "little"))
    assert insn is not None and insn.rm == 3 and insn.shift == 2
    assert extend_index(0xFFFFFFFF, insn.extend, insn.shift) == -4


@pytest.mark.parametrize("source", ["ldp x1, x2, [x3]", "ldxr x1, [x2]", "ldr q0, [x1]",
                                    "ldadd x1, x2, [x3]", "add x1, x2, x3", "prfm pldl1keep, [x1]"])
def test_not_single_register_accesses(source):
    assert decode(int.from_bytes(assemble(".arch armv8.1-a\n" + source if "ldadd" in source else source), "little")) is None


@pytest.mark.parametrize("raw,size,signed,is64,expected", [
    (0x80, 1, True, True, 0xFFFFFFFFFFFFFF80),
    (0x80, 1, True, False, 0xFFFFFF80),
    (0x80, 1, False, True, 0x80),
    (0x8000_0000, 4, True, True, 0xFFFFFFFF80000000),
])
def test_load_value_extension(raw, size, signed, is64, expected):
    from softkvm.hw.mmio_decode import MmioInsn
    insn = MmioInsn(True, size, signed, is64, 1, 2, None, 0)
    assert insn.load_value(raw) == expected
