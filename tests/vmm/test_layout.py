"""The virt board map: addresses and sizes as QEMU's base_memmap, and the validation messages."""

import pytest

from softkvm.errors import ConfigError
from softkvm.vmm import layout as L
from softkvm.vmm.layout import Region, VirtLayout, kvm_mpidr

MiB = 1 << 20
GiB = 1 << 30


def test_gicv2_map():
    lay = VirtLayout(256 * MiB, 2, 2)
    assert lay.ram == Region("ram", 0x4000_0000, 256 * MiB)
    assert lay.ram.end == 0x5000_0000
    assert (lay.gic_dist.base, lay.gic_dist.size) == (0x0800_0000, 0x1000)
    assert lay.gic_cpu is not None
    assert (lay.gic_cpu.base, lay.gic_cpu.size) == (0x0801_0000, 0x2000)
    assert lay.gic_redist is None
    assert (lay.uart.base, lay.uart.size) == (0x0900_0000, 0x1000)
    assert (lay.uart_spi, lay.uart_intid) == (1, 33)


def test_gicv3_map():
    lay = VirtLayout(1 * GiB, 4, "v3")
    assert lay.gic_version == 3
    assert (lay.gic_dist.base, lay.gic_dist.size) == (0x0800_0000, 0x10000)
    assert lay.gic_cpu is None
    assert lay.gic_redist is not None
    assert (lay.gic_redist.base, lay.gic_redist.size) == (0x080A_0000, 4 * 0x20000)


def test_regions_sorted_and_disjoint():
    for lay in (VirtLayout(16 * MiB, 8, 2), VirtLayout(16 * MiB, 123, 3)):
        regions = lay.regions()
        assert [r.base for r in regions] == sorted(r.base for r in regions)
        for a, b in zip(regions, regions[1:]):
            assert not a.overlaps(b), (a, b)


def test_redistributors_of_123_vcpus_end_at_the_uart():
    lay = VirtLayout(16 * MiB, L.GIC_REDIST_MAX_CPUS, 3)
    assert L.GIC_REDIST_MAX_CPUS == 123
    assert lay.gic_redist is not None and lay.gic_redist.end == L.UART_BASE


@pytest.mark.parametrize("gic, cpus, message", [
    (2, 9, "9 vCPUs do not fit the GICv2 of the virt board (at most 8): use --gic v3 for more"),
    (3, 124, "124 vCPUs do not fit the GICv3 of the virt board (at most 123): give fewer vCPUs"),
    (3, 0, "0 vCPUs: give at least 1"),
])
def test_cpu_limits(gic, cpus, message):
    with pytest.raises(ConfigError) as err:
        VirtLayout(256 * MiB, cpus, gic)
    assert str(err.value) == message


@pytest.mark.parametrize("size, message", [
    (8 * MiB, "-m 8M is too little RAM: give at least 16M"),
    (256 * GiB, "-m 262144M is more than the virt board's 255 GiB of RAM: give at most 255G"),
    (16 * MiB + 100, "RAM size 16777316 bytes is not a multiple of 4 KiB: round it, e.g. -m 16M"),
])
def test_ram_limits(size, message):
    with pytest.raises(ConfigError) as err:
        VirtLayout(size, 1, 3)
    assert str(err.value) == message


def test_ram_bounds_accepted():
    assert VirtLayout(16 * MiB, 1, 2).ram.size == 16 * MiB
    assert VirtLayout(255 * GiB, 1, 3).ram.end == 256 * GiB


def test_unknown_gic_version():
    with pytest.raises(ConfigError, match="unknown GIC version 'v4': use v2 or v3"):
        VirtLayout(256 * MiB, 1, "v4")


def test_kvm_mpidr_has_16_cpus_per_cluster():
    assert [kvm_mpidr(i) for i in (0, 1, 15, 16, 17)] == [0, 1, 15, 0x100, 0x101]
    assert kvm_mpidr(4096) == 0x10000
    assert VirtLayout(16 * MiB, 3, 3).mpidrs == (0, 1, 2)


def test_region_contains():
    r = Region("x", 0x1000, 0x100)
    assert r.contains(0x1000) and r.contains(0x10FC, 4)
    assert not r.contains(0x10FD, 4) and not r.contains(0xFFF)
