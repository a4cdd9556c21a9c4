"""The board's device tree, compared node by node and property by property with the tree QEMU's
virt machine writes for the same configuration (minus its extra devices; see fdt.py)."""

import struct

import libfdt
import pytest

from softkvm.errors import ImageError
from softkvm.vmm.devices.pl011 import Pl011
from softkvm.vmm.fdt import (DtbSeeds, FdtWriter, build_dtb, dtb_to_dict, dump, fixup_chosen,
                             load_dtb_file, validate_dtb)
from softkvm.vmm.layout import VirtLayout

MiB = 1 << 20
LEVEL_HI = 4


def encode(value) -> bytes:
    """str: string; list of str: string list; tuple of int: 32-bit cells; True: empty."""
    if value is True:
        return b""
    if isinstance(value, str):
        return value.encode() + b"\0"
    if isinstance(value, list):
        return b"".join(v.encode() + b"\0" for v in value)
    if isinstance(value, tuple):
        return struct.pack(f">{len(value)}I", *value)
    raise TypeError(value)


def assert_tree(blob: bytes, expected: dict) -> None:
    actual = dtb_to_dict(blob)
    assert sorted(actual) == sorted(expected), "node sets differ"
    for path, props in expected.items():
        want = {name: encode(value) for name, value in props.items()}
        assert actual[path] == want, f"properties of {path}"


def common_nodes(flags: int) -> dict:
    """Nodes that do not depend on the GIC version except through the PPI flags."""
    return {
        "/psci": {
            "compatible": ["arm,psci-1.0", "arm,psci-0.2", "arm,psci"],
            "method": "hvc",
            "cpu_suspend": (0xC4000001,), "cpu_off": (0x84000002,),
            "cpu_on": (0xC4000003,), "migrate": (0xC4000005,),
        },
        "/timer": {
            "compatible": ["arm,armv8-timer", "arm,armv7-timer"],
            "interrupts": (1, 13, flags, 1, 14, flags, 1, 11, flags, 1, 10, flags),
            "always-on": True,
        },
        "/pmu": {"compatible": "arm,armv8-pmuv3", "interrupts": (1, 7, flags)},
        "/apb-pclk": {
            "compatible": "fixed-clock", "#clock-cells": (0,),
            "clock-frequency": (24_000_000,), "clock-output-names": "clk24mhz",
            "phandle": (0x8000,),
        },
        "/pl011@9000000": {
            "compatible": ["arm,pl011", "arm,primecell"],
            "reg": (0, 0x0900_0000, 0, 0x1000),
            "interrupts": (0, 1, LEVEL_HI),
            "clocks": (0x8000, 0x8000),
            "clock-names": ["uartclk", "apb_pclk"],
        },
    }


def cpu_nodes(n: int) -> dict:
    """cpu@i and the cpu-map; phandles as QEMU numbers them (0x8000 is the clock, then the
    cpus from the last one, then the GIC)."""
    phandle = {i: 0x8000 + n - i for i in range(n)}
    nodes = {"/cpus": {"#address-cells": (1,), "#size-cells": (0,)},
             "/cpus/cpu-map": {}, "/cpus/cpu-map/socket0": {},
             "/cpus/cpu-map/socket0/cluster0": {}}
    for i in range(n):
        nodes[f"/cpus/cpu@{i}"] = {"device_type": "cpu", "compatible": "arm,cortex-a72",
                                   "reg": (i,), "enable-method": "psci",
                                   "phandle": (phandle[i],)}
        nodes[f"/cpus/cpu-map/socket0/cluster0/core{i}"] = {"cpu": (phandle[i],)}
    return nodes


def root(gic_phandle: int) -> dict:
    return {"/": {"compatible": "linux,dummy-virt", "model": "linux,dummy-virt",
                  "#address-cells": (2,), "#size-cells": (2,),
                  "interrupt-parent": (gic_phandle,)}}


def pl011() -> Pl011:
    return Pl011(write=lambda data: None, irq=None)


def test_gicv2_two_cpus_with_bootargs_and_initrd():
    layout = VirtLayout(256 * MiB, 2, 2)
    blob = build_dtb(layout, [pl011()], bootargs="console=ttyAMA0 earlycon",
                     initrd=(0x4800_0000, 0x4812_3456))
    flags = 0x304  # level-high | CPUs 0-1 in the GICv2 PPI CPU mask
    expected = {
        **root(0x8003),
        "/chosen": {"bootargs": "console=ttyAMA0 earlycon", "stdout-path": "/pl011@9000000",
                    "linux,initrd-start": (0x4800_0000,), "linux,initrd-end": (0x4812_3456,)},
        "/memory@40000000": {"device_type": "memory", "reg": (0, 0x4000_0000, 0, 0x1000_0000)},
        **cpu_nodes(2),
        "/intc@8000000": {
            "compatible": "arm,cortex-a15-gic",
            "reg": (0, 0x0800_0000, 0, 0x1000, 0, 0x0801_0000, 0, 0x2000),
            "#interrupt-cells": (3,), "interrupt-controller": True,
            "#address-cells": (2,), "#size-cells": (2,), "ranges": True,
            "phandle": (0x8003,),
        },
        **common_nodes(flags),
    }
    assert_tree(blob, expected)



def test_seeds_go_into_chosen_as_qemus_dtb_randomness():
    seeds = DtbSeeds(kaslr=bytes(range(8)), rng=bytes(range(100, 132)))
    chosen = dtb_to_dict(build_dtb(VirtLayout(256 * MiB, 1, 3), seeds=seeds))["/chosen"]
    assert chosen["kaslr-seed"] == bytes(range(8))
    assert chosen["rng-seed"] == bytes(range(100, 132))


def test_fresh_seeds_differ_from_tree_to_tree():
    first, second = DtbSeeds.fresh(), DtbSeeds.fresh()
    assert (len(first.kaslr), len(first.rng)) == (8, 32)  # QEMU's sizes
    assert first != second


def test_gicv3_four_cpus_without_initrd():
    layout = VirtLayout(512 * MiB, 4, 3)
    blob = build_dtb(layout, [pl011()])
    expected = {
        **root(0x8005),
        "/chosen": {"stdout-path": "/pl011@9000000"},
        "/memory@40000000": {"device_type": "memory", "reg": (0, 0x4000_0000, 0, 0x2000_0000)},
        **cpu_nodes(4),
        "/intc@8000000": {
            "compatible": "arm,gic-v3", "#redistributor-regions": (1,),
            "reg": (0, 0x0800_0000, 0, 0x10000, 0, 0x080A_0000, 0, 4 * 0x20000),
            "#interrupt-cells": (3,), "interrupt-controller": True,
            "#address-cells": (2,), "#size-cells": (2,), "ranges": True,
            "phandle": (0x8005,),
        },
        **common_nodes(LEVEL_HI),  # GICv3 PPIs carry no CPU mask
    }
    assert_tree(blob, expected)


def test_blob_is_a_valid_packed_tree():
    blob = build_dtb(VirtLayout(256 * MiB, 1, 3), [pl011()])
    tree = libfdt.Fdt(bytearray(blob))
    assert tree.totalsize() == len(blob)
    assert tree.getprop(tree.path_offset("/chosen"), "stdout-path").as_str() == "/pl011@9000000"
    assert validate_dtb(blob, "ours") == blob


def test_gicv2_eight_cpus_mask_fills_the_field():
    blob = build_dtb(VirtLayout(256 * MiB, 8, 2))
    timer = dtb_to_dict(blob)["/timer"]["interrupts"]
    assert struct.unpack(">12I", timer)[2] == 0xFF04


def test_aff3_mpidr_needs_two_address_cells():
    mpidrs = (0, 0x1_0000_0000)
    tree = dtb_to_dict(build_dtb(VirtLayout(256 * MiB, 2, 3), mpidrs=mpidrs))
    assert tree["/cpus"]["#address-cells"] == encode((2,))
    assert tree["/cpus/cpu@100000000"]["reg"] == struct.pack(">Q", 0x1_0000_0000)
    assert tree["/cpus/cpu@0"]["reg"] == struct.pack(">Q", 0)


def test_initrd_above_4g_uses_64bit_values():
    tree = dtb_to_dict(build_dtb(VirtLayout(8 << 30, 1, 3),
                                 initrd=(0x1_0000_0000, 0x1_0010_0000)))
    assert tree["/chosen"]["linux,initrd-start"] == struct.pack(">Q", 0x1_0000_0000)
    assert tree["/chosen"]["linux,initrd-end"] == struct.pack(">Q", 0x1_0010_0000)


def test_options_pmu_and_stdout_path():
    tree = dtb_to_dict(build_dtb(VirtLayout(256 * MiB, 1, 3), pmu=False, stdout_path=""))
    assert "/pmu" not in tree
    assert tree["/chosen"] == {}


def test_mpidr_count_must_match():
    with pytest.raises(ValueError, match="1 MPIDRs for 2 vCPUs"):
        build_dtb(VirtLayout(256 * MiB, 2, 3), mpidrs=[0])


def test_writer_phandles_by_name_and_open_nodes():
    fdt = FdtWriter()
    assert fdt.phandle("a") == 0x8000
    assert fdt.phandle("b") == 0x8001
    assert fdt.phandle("a") == 0x8000
    with fdt.node(""):
        with fdt.node("x"):
            fdt.set_phandle("b")
            fdt.u64("big", 1 << 40)
            fdt.strings("list", ["p", "q"])
    tree = dtb_to_dict(fdt.finish())
    assert tree["/x"] == {"phandle": encode((0x8001,)), "big": struct.pack(">Q", 1 << 40),
                          "list": b"p\0q\0"}
    unfinished = FdtWriter()
    with pytest.raises(KeyError), unfinished.node(""):
        raise KeyError("a node writer failed half-way")
    with pytest.raises(RuntimeError, match="finished with 1 node"):
        unfinished.finish()


# --- user blobs ---------------------------------------------------------------------------------


def test_garbage_dtb_file(tmp_path):
    bad = tmp_path / "bad.dtb"
    bad.write_bytes(b"this is not a device tree at all, just text" * 4)
    with pytest.raises(ImageError) as err:
        load_dtb_file(bad)
    assert str(err.value).startswith(f"device tree '{bad}' is not a valid device tree blob (")
    assert str(err.value).endswith("): give a .dtb compiled with dtc")


def test_tiny_and_truncated_dtb_files(tmp_path):
    tiny = tmp_path / "tiny.dtb"
    tiny.write_bytes(b"\xd0\x0d\xfe\xed")
    with pytest.raises(ImageError, match=r"is not a device tree blob \(4 bytes\)"):
        load_dtb_file(tiny)
    blob = build_dtb(VirtLayout(256 * MiB, 1, 3))
    cut = tmp_path / "cut.dtb"
    cut.write_bytes(blob[:-40])
    sizes = rf"\({len(blob) - 40} of {len(blob)} bytes\)"
    with pytest.raises(ImageError, match=rf"is truncated {sizes}: recompile it with dtc"):
        load_dtb_file(cut)


def test_corrupt_structure_is_caught(tmp_path):
    blob = bytearray(build_dtb(VirtLayout(256 * MiB, 1, 3)))
    off_struct = struct.unpack_from(">I", blob, 8)[0]
    struct.pack_into(">I", blob, off_struct + 40, 0x0BADBEEF)  # a bogus token mid-tree
    with pytest.raises(ImageError, match="is not a valid device tree blob"):
        validate_dtb(bytes(blob), "corrupt.dtb")


def test_missing_dtb_file(tmp_path):
    with pytest.raises(ImageError, match="device tree '.*nope.dtb' not found: check the path"):
        load_dtb_file(tmp_path / "nope.dtb")


def test_user_dtb_roundtrip_trims_padding(tmp_path):
    blob = build_dtb(VirtLayout(256 * MiB, 1, 3))
    path = tmp_path / "user.dtb"
    path.write_bytes(blob + bytes(4096))  # dtc -p / QEMU dumps are padded
    assert load_dtb_file(path) == blob


def test_fixup_chosen_on_a_user_tree():
    fdt = FdtWriter()
    with fdt.node(""):
        fdt.cells("#address-cells", 2)
    patched = fixup_chosen(fdt.finish(), bootargs="root=/dev/ram",
                           initrd=(0x4800_0000, 0x4900_0000))
    chosen = dtb_to_dict(patched)["/chosen"]
    assert chosen == {"bootargs": encode("root=/dev/ram"),
                      "linux,initrd-start": encode((0x4800_0000,)),
                      "linux,initrd-end": encode((0x4900_0000,))}
    untouched = build_dtb(VirtLayout(256 * MiB, 1, 3), bootargs="keep")
    assert dtb_to_dict(fixup_chosen(untouched))["/chosen"]["bootargs"] == encode("keep")


def test_dump(tmp_path):
    blob = build_dtb(VirtLayout(256 * MiB, 1, 2))
    dump(blob, tmp_path / "out.dtb")
    assert (tmp_path / "out.dtb").read_bytes() == blob
    with pytest.raises(ImageError, match="cannot write the device tree to .*: No such file or "
                                         "directory: choose a writable path"):
        dump(blob, tmp_path / "no" / "such" / "dir.dtb")
