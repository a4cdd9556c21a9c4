"""Decode the load/store that faulted on an unbacked physical address.

Counterpart: what the ESR's ISV syndrome gives KVM for a data abort (arch/arm64/kvm/mmio.c,
``kvm_handle_mmio_return``): access size, sign extension, target register. We decode the A64
"load/store register" classes ourselves (Arm ARM C4.1.66), which also lets us complete pre/post
index writeback (hardware reports ISV=0 for those). Anything else (pairs, SIMD, atomics) is not
an emulatable MMIO access and gets an external abort.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

REG_SP = 31  # in the base-register field, 31 is SP; in Rt it is XZR/WZR


@dataclass(frozen=True, slots=True)
class MmioInsn:
    """One decoded single-register load or store."""

    is_load: bool
    size: int          # bytes accessed
    sign_extend: bool
    rt_is_64: bool     # destination/source register width
    rt: int            # 31 = zero register
    rn: int            # base register (31 = SP)
    wb_imm: int | None  # writeback: base += wb_imm after the access (pre/post index)
    offset: int        # VA = base + offset (+ scaled index register when rm is set)
    rm: int | None = None
    extend: int = 0    # option field for register offset
    shift: int = 0

    def load_value(self, raw: int) -> int:
        """The register value for loaded bytes ``raw`` (zero- or sign-extended)."""
        bits = self.size * 8
        raw &= (1 << bits) - 1
        if self.sign_extend and raw >> (bits - 1):
            raw -= 1 << bits
        return raw & (0xFFFFFFFFFFFFFFFF if self.rt_is_64 else 0xFFFFFFFF)


def _sext(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) else value


def _kind(size: int, opc: int) -> tuple[bool, bool, bool] | None:
    """(is_load, sign_extend, rt_is_64) for the integer load/store opc field."""
    if opc == 0:
        return False, False, size == 3
    if opc == 1:
        return True, False, size == 3
    if opc == 2 and size < 3:
        return True, True, True  # LDRSB/LDRSH/LDRSW to X (size 3, opc 2 is PRFM)
    if opc == 3 and size < 2:
        return True, True, False  # LDRSB/LDRSH to W
    return None


@lru_cache(maxsize=4096)
def decode(word: int) -> MmioInsn | None:
    """Decode an A64 instruction word; None if it is not a single-register GPR load/store."""
    size, opc = word >> 30, (word >> 22) & 3
    rn, rt = (word >> 5) & 31, word & 31
    if (word >> 24) & 0x3F == 0b111001:  # unsigned immediate offset
        kind = _kind(size, opc)
        if kind is None:
            return None
        return MmioInsn(kind[0], 1 << size, kind[1], kind[2], rt, rn, None,
                        ((word >> 10) & 0xFFF) << size)
    if (word >> 24) & 0x3F != 0b111000:
        return _decode_ordered(word)
    kind = _kind(size, opc)
    if kind is None:
        return None
    if (word >> 21) & 1:  # register offset
        if (word >> 10) & 3 != 2:
            return None
        option, s = (word >> 13) & 7, (word >> 12) & 1
        if not option & 2:
            return None
        return MmioInsn(kind[0], 1 << size, kind[1], kind[2], rt, rn, None, 0, (word >> 16) & 31,
                        option, size if s else 0)
    imm9 = _sext((word >> 12) & 0x1FF, 9)
    mode = (word >> 10) & 3  # 0 unscaled, 1 post-index, 2 unprivileged, 3 pre-index
    if mode == 1:
        return MmioInsn(kind[0], 1 << size, kind[1], kind[2], rt, rn, imm9, 0)
    if mode == 3:
        return MmioInsn(kind[0], 1 << size, kind[1], kind[2], rt, rn, imm9, imm9)
    return MmioInsn(kind[0], 1 << size, kind[1], kind[2], rt, rn, None, imm9)


def _decode_ordered(word: int) -> MmioInsn | None:
    """LDAR/STLR (load-acquire/store-release, no exclusivity)."""
    if (word >> 24) & 0x3F != 0b001000 or (word >> 21) & 1 or not (word >> 23) & 1:
        return None
    size, is_load = word >> 30, bool((word >> 22) & 1)
    return MmioInsn(is_load, 1 << size, False, size == 3, word & 31, (word >> 5) & 31, None, 0)


def extend_index(value: int, option: int, shift: int) -> int:
    """Apply the register-offset extend/shift (UXTW 2, LSL 3, SXTW 6, SXTX 7)."""
    if option == 2:
        value &= 0xFFFFFFFF
    elif option == 6:
        value = _sext(value & 0xFFFFFFFF, 32)
    elif option == 7:
        value = _sext(value & 0xFFFFFFFFFFFFFFFF, 64)
    return value << shift
