"""The flattened device tree of the virt board, written with libfdt's sequential writer.

Counterpart: QEMU hw/arm/virt.c (``create_fdt``, ``fdt_add_cpu_nodes``, ``fdt_add_psci_node``,
``fdt_add_timer_nodes``, ``fdt_add_pmu_nodes``, ``create_gic``'s node) and hw/arm/boot.c
(``arm_load_dtb``: /memory, /chosen). Bindings: Linux Documentation/devicetree/bindings
(arm/cpus.yaml, arm/psci.yaml, timer/arm,arch_timer.yaml, interrupt-controller/arm,gic*.yaml).

Every node is written by an :class:`FdtNodeWriter`: the board-level ones live here, each device
writes its own (the PL011's is in devices/pl011.py). :class:`FdtWriter` wraps ``libfdt.FdtSw``
with typed properties, nested nodes and phandles allocated by name, so a device can refer to the
board's ``apb-pclk`` clock or the GIC without knowing who wrote it.

Compared with QEMU 7.2's tree (``-M virt,gic-version=2|3,dumpdtb=... -cpu cortex-a72``), the
nodes we have match in names, compatibles, interrupts, flags and phandle numbering (first
phandle 0x8000: apb-pclk, then the cpus from the last, then the GIC), except:

- ``kaslr-seed`` and ``rng-seed`` in /chosen are fresh random bytes in each tree, as in QEMU's
  (``dtb-randomness``, on by default); ``--dtb-randomness off`` leaves both out;
- GICv2 ``reg`` sizes are the windows the vGIC decodes (4 KiB distributor, 8 KiB CPU
  interface) where QEMU declares 64 KiB for both;
- the GICv3 redistributor ``reg`` covers nr_cpus × 128 KiB, not QEMU's whole 0xF60000 window
  (Linux walks the frames until GICR_TYPER.Last either way);
- no v2m/ITS child of the GIC (no MSIs), no GICH/GICV regions and no maintenance interrupt
  (QEMU writes those only with virtualization=on, which softkvm's guests never have);
- no flash, fw-cfg, virtio-mmio, PCIe, PL031, PL061/gpio-keys or platform-bus nodes;
- cpu nodes are named by MPIDR (``cpu@<reg>``, as the binding wants) where QEMU uses the
  vCPU index: the same up to 16 vCPUs;
- nodes appear in writing order (QEMU's appear reversed: it prepends subnodes).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import libfdt

from softkvm.arch import psci as P
from softkvm.errors import ImageError
from softkvm.vmm.layout import Region, VirtLayout

FIRST_PHANDLE = 0x8000  # QEMU's first phandle: leaves room below for a user's overlay
MAX_DTB_SIZE = 2 << 20  # booting.rst: the dtb must not exceed 2 MiB
KASLR_SEED_BYTES = 8  # QEMU virt.c create_kaslr_seed: one u64
RNG_SEED_BYTES = 32  # QEMU virt.c create_randomness

# Interrupt specifier of the GIC binding: <type number flags>.
GIC_FDT_IRQ_TYPE_SPI = 0
GIC_FDT_IRQ_TYPE_PPI = 1
GIC_FDT_IRQ_FLAGS_EDGE_LO_HI = 1
GIC_FDT_IRQ_FLAGS_LEVEL_HI = 4
GIC_FDT_IRQ_PPI_CPU_SHIFT = 8  # GICv2 only: which CPUs the PPI is wired to
GIC_FDT_IRQ_PPI_CPU_WIDTH = 8

# PPI numbers (INTID - 16) of the virt board (QEMU include/hw/arm/virt.h).
ARCH_TIMER_S_EL1_PPI = 13
ARCH_TIMER_NS_EL1_PPI = 14
ARCH_TIMER_VIRT_PPI = 11
ARCH_TIMER_NS_EL2_PPI = 10
VIRTUAL_PMU_PPI = 7

APB_PCLK = "apb-pclk"  # phandle name of the board's 24 MHz APB clock
GIC_PHANDLE = "intc"
APB_PCLK_HZ = 24_000_000

SMCCC_64BIT = 0x40000000  # function-id bit 30: SMC64/HVC64 calling convention
CPU_COMPATIBLE = "arm,cortex-a72"


class FdtNodeWriter(Protocol):
    """Something that writes its own node(s) at the current position of the tree."""

    def write_fdt(self, fdt: FdtWriter) -> None: ...


@dataclass(slots=True)
class FdtWriter:
    """``libfdt.FdtSw`` with typed properties, nested nodes and phandles by name."""

    first_phandle: int = FIRST_PHANDLE
    _sw: libfdt.FdtSw = field(init=False, repr=False)
    _phandles: dict[str, int] = field(default_factory=dict)
    _depth: int = 0

    def __post_init__(self) -> None:
        self._sw = libfdt.FdtSw()
        self._sw.finish_reservemap()  # no /memreserve/ entries

    def phandle(self, name: str) -> int:
        """The phandle called ``name``, allocated on first use (references may precede the node)."""
        if name not in self._phandles:
            self._phandles[name] = self.first_phandle + len(self._phandles)
        return self._phandles[name]

    @contextmanager
    def node(self, name: str) -> Iterator[None]:
        """Open a child node of the current one; properties written inside belong to it."""
        self._sw.begin_node(name)
        self._depth += 1
        yield
        self._depth -= 1
        self._sw.end_node()

    def cells(self, name: str, *values: int) -> None:
        """A list of 32-bit cells (``<a b c>``)."""
        self._sw.property(name, struct.pack(f">{len(values)}I", *values))

    def u64(self, name: str, *values: int) -> None:
        """64-bit values, each as two cells."""
        self._sw.property(name, struct.pack(f">{len(values)}Q", *values))

    def string(self, name: str, value: str) -> None:
        self._sw.property_string(name, value)

    def strings(self, name: str, values: Sequence[str]) -> None:
        """A string list (``"a", "b"``): NUL-terminated strings back to back."""
        self._sw.property(name, b"".join(v.encode() + b"\0" for v in values))

    def raw(self, name: str, value: bytes) -> None:
        """A byte string (``[00 11 ...]``)."""
        self._sw.property(name, value)

    def empty(self, name: str) -> None:
        """A boolean property: present, no value."""
        self._sw.property(name, b"")

    def reg(self, *regions: Region | tuple[int, int]) -> None:
        """``reg`` for a parent with #address-cells = #size-cells = 2 (root, GIC)."""
        pairs = [(r.base, r.size) if isinstance(r, Region) else r for r in regions]
        self.u64("reg", *(v for pair in pairs for v in pair))

    def interrupts(self, *specifiers: tuple[int, int, int]) -> None:
        """GIC interrupt specifiers, each (type, number, flags)."""
        self.cells("interrupts", *(v for spec in specifiers for v in spec))

    def set_phandle(self, name: str) -> None:
        """Give the current node the phandle called ``name``."""
        self.cells("phandle", self.phandle(name))

    def finish(self) -> bytes:
        if self._depth:
            raise RuntimeError(f"device tree finished with {self._depth} node(s) still open")
        tree = self._sw.as_fdt()
        tree.pack()
        return bytes(tree.as_bytearray())


# --- board-level nodes -----------------------------------------------------------------------


def ppi_flags(layout: VirtLayout) -> int:
    """Flags of a per-CPU interrupt as virt.c writes them: level-high, and for GICv2 the mask of
    CPUs the PPI reaches (deposit32 truncates it to GIC_FDT_IRQ_PPI_CPU_WIDTH bits)."""
    flags = GIC_FDT_IRQ_FLAGS_LEVEL_HI
    if layout.gic_version == 2:
        cpu_mask = ((1 << layout.nr_cpus) - 1) & ((1 << GIC_FDT_IRQ_PPI_CPU_WIDTH) - 1)
        flags |= cpu_mask << GIC_FDT_IRQ_PPI_CPU_SHIFT
    return flags


@dataclass(frozen=True, slots=True)
class DtbSeeds:
    """What QEMU's virt board writes into /chosen unless ``dtb-randomness=off`` (virt.c
    ``create_randomness``): ``kaslr-seed`` randomises where Linux places itself, ``rng-seed``
    is entropy Linux credits at boot (bootloader randomness), so its RNG is ready at once
    instead of gathering entropy from timer jitter while the guest boots."""

    kaslr: bytes
    rng: bytes

    @classmethod
    def fresh(cls) -> DtbSeeds:
        return cls(kaslr=os.urandom(KASLR_SEED_BYTES), rng=os.urandom(RNG_SEED_BYTES))


@dataclass(frozen=True, slots=True)
class ChosenNode:
    """/chosen: command line, console, initrd (hw/arm/boot.c arm_load_dtb), seeds (virt.c)."""

    bootargs: str = ""
    stdout_path: str = ""
    initrd: tuple[int, int] | None = None
    seeds: DtbSeeds | None = None

    def write_fdt(self, fdt: FdtWriter) -> None:
        with fdt.node("chosen"):
            if self.seeds is not None:
                fdt.raw("kaslr-seed", self.seeds.kaslr)
                fdt.raw("rng-seed", self.seeds.rng)
            if self.bootargs:  # QEMU omits an empty command line
                fdt.string("bootargs", self.bootargs)
            if self.stdout_path:
                fdt.string("stdout-path", self.stdout_path)
            if self.initrd is not None:
                _initrd_props(fdt, *self.initrd)


def _initrd_props(fdt: FdtWriter, start: int, end: int) -> None:
    # One cell as QEMU writes them while they fit; Linux reads any cell count (len / 4).
    put = fdt.cells if end <= 0xFFFF_FFFF else fdt.u64
    put("linux,initrd-start", start)
    put("linux,initrd-end", end)


@dataclass(frozen=True, slots=True)
class MemoryNode:
    ram: Region

    def write_fdt(self, fdt: FdtWriter) -> None:
        with fdt.node(f"memory@{self.ram.base:x}"):
            fdt.string("device_type", "memory")
            fdt.reg(self.ram)


@dataclass(frozen=True, slots=True)
class CpusNode:
    """/cpus with reg = MPIDR affinity and a flat cpu-map (one socket, one cluster)."""

    mpidrs: tuple[int, ...]

    def write_fdt(self, fdt: FdtWriter) -> None:
        # Aff3 lives in MPIDR[39:32]: only then does a cpu's reg need two cells.
        addr_cells = 2 if any(m >> 32 for m in self.mpidrs) else 1
        with fdt.node("cpus"):
            fdt.cells("#address-cells", addr_cells)
            fdt.cells("#size-cells", 0)
            for index, mpidr in enumerate(self.mpidrs):
                self._cpu(fdt, index, mpidr, addr_cells)
            self._cpu_map(fdt)

    @staticmethod
    def _cpu(fdt: FdtWriter, index: int, mpidr: int, addr_cells: int) -> None:
        with fdt.node(f"cpu@{mpidr:x}"):
            fdt.string("device_type", "cpu")
            fdt.string("compatible", CPU_COMPATIBLE)
            (fdt.u64 if addr_cells == 2 else fdt.cells)("reg", mpidr)
            fdt.string("enable-method", "psci")
            fdt.set_phandle(f"cpu{index}")

    def _cpu_map(self, fdt: FdtWriter) -> None:
        with fdt.node("cpu-map"), fdt.node("socket0"), fdt.node("cluster0"):
            for index in range(len(self.mpidrs)):
                with fdt.node(f"core{index}"):
                    fdt.cells("cpu", fdt.phandle(f"cpu{index}"))


@dataclass(frozen=True, slots=True)
class PsciNode:
    """/psci: 1.0 over HVC, plus the 0.1 function ids QEMU writes for old kernels."""

    def write_fdt(self, fdt: FdtWriter) -> None:
        with fdt.node("psci"):
            fdt.strings("compatible", ("arm,psci-1.0", "arm,psci-0.2", "arm,psci"))
            fdt.string("method", "hvc")
            fdt.cells("cpu_suspend", P.CPU_SUSPEND_64)
            fdt.cells("cpu_off", P.CPU_OFF)
            fdt.cells("cpu_on", P.CPU_ON_64)
            fdt.cells("migrate", P.MIGRATE | SMCCC_64BIT)


@dataclass(frozen=True, slots=True)
class GicNode:
    """intc@8000000: GICv2 (distributor + CPU interface) or GICv3 (distributor + one
    redistributor region). ``ranges`` and 2/2 cells as QEMU writes them (for MSI children)."""

    layout: VirtLayout

    def write_fdt(self, fdt: FdtWriter) -> None:
        layout = self.layout
        with fdt.node(f"intc@{layout.gic_dist.base:x}"):
            if layout.gic_version == 2:
                assert layout.gic_cpu is not None
                fdt.string("compatible", "arm,cortex-a15-gic")
                fdt.reg(layout.gic_dist, layout.gic_cpu)
            else:
                assert layout.gic_redist is not None
                fdt.string("compatible", "arm,gic-v3")
                fdt.cells("#redistributor-regions", 1)
                fdt.reg(layout.gic_dist, layout.gic_redist)
            fdt.cells("#interrupt-cells", 3)
            fdt.empty("interrupt-controller")
            fdt.cells("#address-cells", 2)
            fdt.cells("#size-cells", 2)
            fdt.empty("ranges")
            fdt.set_phandle(GIC_PHANDLE)


@dataclass(frozen=True, slots=True)
class TimerNode:
    """/timer: the four architected timer PPIs, secure phys first (binding order)."""

    flags: int

    def write_fdt(self, fdt: FdtWriter) -> None:
        with fdt.node("timer"):
            fdt.strings("compatible", ("arm,armv8-timer", "arm,armv7-timer"))
            fdt.interrupts(*((GIC_FDT_IRQ_TYPE_PPI, ppi, self.flags) for ppi in (
                ARCH_TIMER_S_EL1_PPI, ARCH_TIMER_NS_EL1_PPI, ARCH_TIMER_VIRT_PPI,
                ARCH_TIMER_NS_EL2_PPI)))
            fdt.empty("always-on")


@dataclass(frozen=True, slots=True)
class PmuNode:
    flags: int

    def write_fdt(self, fdt: FdtWriter) -> None:
        with fdt.node("pmu"):
            fdt.string("compatible", "arm,armv8-pmuv3")
            fdt.interrupts((GIC_FDT_IRQ_TYPE_PPI, VIRTUAL_PMU_PPI, self.flags))


@dataclass(frozen=True, slots=True)
class ApbClockNode:
    """The fixed 24 MHz clock PrimeCell devices name as uartclk/apb_pclk."""

    def write_fdt(self, fdt: FdtWriter) -> None:
        with fdt.node(APB_PCLK):
            fdt.string("compatible", "fixed-clock")
            fdt.cells("#clock-cells", 0)
            fdt.cells("clock-frequency", APB_PCLK_HZ)
            fdt.string("clock-output-names", "clk24mhz")
            fdt.set_phandle(APB_PCLK)


def build_dtb(layout: VirtLayout, devices: Sequence[FdtNodeWriter] = (), *,
              bootargs: str = "", initrd: tuple[int, int] | None = None,
              stdout_path: str | None = None, mpidrs: Sequence[int] | None = None,
              pmu: bool = True, seeds: DtbSeeds | None = None) -> bytes:
    """The board's tree: root, chosen, memory, cpus, psci, GIC, timer, PMU, clock, devices.

    ``stdout_path`` defaults to the board's PL011 (``"/pl011@9000000"``; "" for none);
    ``mpidrs`` to KVM's assignment for ``layout.nr_cpus`` vCPUs; ``seeds`` (None: none) go
    into /chosen.
    """
    mpidrs = tuple(layout.mpidrs if mpidrs is None else mpidrs)
    if len(mpidrs) != layout.nr_cpus:
        raise ValueError(f"{len(mpidrs)} MPIDRs for {layout.nr_cpus} vCPUs")
    if stdout_path is None:
        stdout_path = f"/pl011@{layout.uart.base:x}"
    fdt = FdtWriter()
    _allocate_phandles_like_qemu(fdt, len(mpidrs))
    flags = ppi_flags(layout)
    board: list[FdtNodeWriter] = [
        ChosenNode(bootargs, stdout_path, initrd, seeds), MemoryNode(layout.ram), CpusNode(mpidrs),
        PsciNode(), GicNode(layout), TimerNode(flags)]
    if pmu:
        board.append(PmuNode(flags))
    board.append(ApbClockNode())
    with fdt.node(""):
        fdt.string("compatible", "linux,dummy-virt")
        fdt.string("model", "linux,dummy-virt")
        fdt.cells("#address-cells", 2)
        fdt.cells("#size-cells", 2)
        fdt.cells("interrupt-parent", fdt.phandle(GIC_PHANDLE))
        for writer in (*board, *devices):
            writer.write_fdt(fdt)
    return fdt.finish()


def _allocate_phandles_like_qemu(fdt: FdtWriter, nr_cpus: int) -> None:
    """QEMU's order (clock, cpus last-first, GIC), so our dump diffs cleanly against its own."""
    fdt.phandle(APB_PCLK)
    for index in reversed(range(nr_cpus)):
        fdt.phandle(f"cpu{index}")
    fdt.phandle(GIC_PHANDLE)


# --- reading, checking and writing blobs -----------------------------------------------------


def dtb_to_dict(blob: bytes) -> dict[str, dict[str, bytes]]:
    """Every node path → {property name: raw value}. Raises libfdt.FdtException if malformed."""
    tree = libfdt.Fdt(bytearray(blob))
    nodes: dict[str, dict[str, bytes]] = {}
    offset, depth = 0, 0
    while depth >= 0:  # fdt_next_node leaves depth -1 after the root's END_NODE
        nodes[tree.get_path(offset)] = _properties(tree, offset)
        offset, depth = tree.next_node(offset, depth, (libfdt.NOTFOUND,))
        if offset < 0:
            if offset != -libfdt.NOTFOUND:
                raise libfdt.FdtException(offset)
            break
    return nodes


def _properties(tree: libfdt.Fdt, node: int) -> dict[str, bytes]:
    props: dict[str, bytes] = {}
    offset = tree.first_property_offset(node, (libfdt.NOTFOUND,))
    while offset >= 0:
        prop = tree.get_property_by_offset(offset)
        props[prop.name] = bytes(prop)
        offset = tree.next_property_offset(offset, (libfdt.NOTFOUND,))
    return props


def validate_dtb(blob: bytes, source: str) -> bytes:
    """Check a whole blob (header, sizes, every node and property); returns it trimmed to its
    totalsize. ImageError naming ``source`` when anything is wrong."""
    hint = f"device tree '{source}'"
    if len(blob) < 40:  # sizeof(struct fdt_header)
        raise ImageError(f"{hint} is not a device tree blob ({len(blob)} bytes): give a .dtb "
                         f"compiled with dtc")
    try:
        total = libfdt.Fdt(bytearray(blob)).totalsize()
        if total > len(blob):
            raise ImageError(f"{hint} is truncated ({len(blob)} of {total} bytes): recompile "
                             f"it with dtc")
        blob = bytes(blob[:total])
        dtb_to_dict(blob)
    except libfdt.FdtException as err:
        raise ImageError(f"{hint} is not a valid device tree blob ({err}): give a .dtb "
                         f"compiled with dtc") from err
    if total > MAX_DTB_SIZE:
        raise ImageError(f"{hint} is {total >> 10} KiB, more than the 2 MiB a kernel accepts: "
                         f"shrink it")
    return blob


def load_dtb_file(path: str | Path) -> bytes:
    """``--dtb FILE``: read and validate a user's blob."""
    try:
        blob = Path(path).read_bytes()
    except FileNotFoundError as err:
        raise ImageError(f"device tree '{path}' not found: check the path") from err
    except OSError as err:
        raise ImageError(f"cannot read device tree '{path}': {err.strerror}: check the path "
                         f"and its permissions") from err
    return validate_dtb(blob, str(path))


def fixup_chosen(blob: bytes, *, bootargs: str = "",
                 initrd: tuple[int, int] | None = None) -> bytes:
    """Write the boot-time /chosen properties into a user's tree, as QEMU's arm_load_dtb does
    for ``-dtb``: bootargs when given, the initrd range the loader chose. /memory is left as
    the user wrote it."""
    tree = libfdt.Fdt(bytearray(blob))
    tree.resize(len(blob) + 1024 + len(bootargs))  # room for the new properties
    chosen = tree.path_offset("/chosen", (libfdt.NOTFOUND,))
    if chosen < 0:
        chosen = tree.add_subnode(0, "chosen")
    if bootargs:
        tree.setprop_str(chosen, "bootargs", bootargs)
    if initrd is not None:
        start, end = initrd
        fmt = ">I" if end <= 0xFFFF_FFFF else ">Q"
        tree.setprop(chosen, "linux,initrd-start", struct.pack(fmt, start))
        tree.setprop(chosen, "linux,initrd-end", struct.pack(fmt, end))
    tree.pack()
    return bytes(tree.as_bytearray())


def dump(blob: bytes, path: str | Path) -> None:
    """``--dump-dtb FILE``: write the blob the guest will see (inspect with dtc -I dtb)."""
    try:
        Path(path).write_bytes(blob)
    except OSError as err:
        raise ImageError(f"cannot write the device tree to '{path}': {err.strerror}: choose "
                         f"a writable path") from err
