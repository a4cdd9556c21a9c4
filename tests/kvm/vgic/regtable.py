"""Table rows for register-map tests: write (optional) then read back, on a fresh vGIC."""

from __future__ import annotations

from dataclasses import dataclass

from softkvm.kvm.vgic.vgic import Vgic


@dataclass(frozen=True)
class Row:
    """``frame`` is "dist", "cpu" (GICv2 GICC) or an int: the redistributor of that vCPU."""

    name: str
    offset: int
    width: int
    write: int | None
    expect: int
    read_at: int | None = None        # read another register (default: the one written)
    read_width: int | None = None
    vcpu: int = 0                     # the accessing vCPU (banked registers)
    frame: str | int = "dist"
    setup: tuple[tuple[int, int, int], ...] = ()   # (offset, width, value) writes first

    def __str__(self) -> str:
        return self.name


def _write(vgic: Vgic, row: Row, offset: int, width: int, value: int) -> None:
    if row.frame == "dist":
        vgic.dist_mmio_write(row.vcpu, offset, width, value)
    elif row.frame == "cpu":
        vgic.cpu_mmio_write(row.vcpu, offset, width, value)
    else:
        vgic.redist_mmio_write(int(row.frame), offset, width, value, row.vcpu)


def _read(vgic: Vgic, row: Row, offset: int, width: int) -> int:
    if row.frame == "dist":
        return vgic.dist_mmio_read(row.vcpu, offset, width)
    if row.frame == "cpu":
        return vgic.cpu_mmio_read(row.vcpu, offset, width)
    return vgic.redist_mmio_read(int(row.frame), offset, width, row.vcpu)


def run_row(vgic: Vgic, row: Row) -> None:
    for offset, width, value in row.setup:
        _write(vgic, row, offset, width, value)
    if row.write is not None:
        _write(vgic, row, row.offset, row.width, row.write)
    got = _read(vgic, row, row.read_at if row.read_at is not None else row.offset,
                row.read_width or row.width)
    assert got == row.expect, f"{row.name}: read {got:#x}, expected {row.expect:#x}"
