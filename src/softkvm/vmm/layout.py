"""The board: QEMU's ``virt`` memory map, so guests built for ``qemu-system-aarch64 -M virt`` run
unchanged.

Counterpart: QEMU hw/arm/virt.c ``base_memmap`` / ``a15irqmap`` (only the parts softkvm models).

Guest physical address map (addresses in hex, not to scale)::

    0x0000_0000 +-----------------------------+
                | (flash, unused)             |
    0x0800_0000 +-----------------------------+ GIC distributor: 4 KiB (v2) / 64 KiB (v3)
    0x0801_0000 +-----------------------------+ GICv2 CPU interface: 8 KiB      (v2 only)
                |                             |
    0x080A_0000 +-----------------------------+ GICv3 redistributors: 128 KiB per vCPU
                |  RD + SGI frame, vCPU 0     |   (v3 only; QEMU's first region holds
                |  RD + SGI frame, vCPU 1 ... |    123 vCPUs, up to 0x0900_0000)
    0x0900_0000 +-----------------------------+ PL011 UART: 4 KiB, SPI 1 = INTID 33
    0x0900_1000 +-----------------------------+
                | (RTC, fw-cfg, GPIO, virtio, |   not modelled: accesses get an
                |  PCIe windows: unused)      |   external abort, as on a board without them
    0x4000_0000 +-----------------------------+ RAM: ram_size bytes (16 MiB .. 255 GiB)
                | ...                         |
    0x40_0000_0000 -------------------------- + QEMU's limit for low RAM (256 GiB)

The GICv2 region sizes are the ones the vGIC decodes (``KVM_VGIC_V2_DIST_SIZE``/``CPU_SIZE``);
QEMU reserves 64 KiB windows for both, which changes nothing for a guest.
"""

from __future__ import annotations

from dataclasses import dataclass

from softkvm.errors import ConfigError
from softkvm.kvm import uapi

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
PAGE_SIZE = 4 * KiB

RAM_BASE = 0x4000_0000
RAM_MIN_SIZE = 16 * MiB
RAM_MAX_SIZE = 255 * GiB  # QEMU virt LEGACY_RAMLIMIT_GB: RAM must end below 256 GiB

GIC_DIST_BASE = 0x0800_0000
GIC_V2_DIST_SIZE = uapi.KVM_VGIC_V2_DIST_SIZE
GIC_V3_DIST_SIZE = uapi.KVM_VGIC_V3_DIST_SIZE
GIC_CPU_BASE = 0x0801_0000
GIC_CPU_SIZE = uapi.KVM_VGIC_V2_CPU_SIZE
GIC_REDIST_BASE = 0x080A_0000
GIC_REDIST_STRIDE = uapi.KVM_VGIC_V3_REDIST_SIZE  # RD frame + SGI frame, 64 KiB each
GIC_REDIST_REGION_SIZE = 0x00F6_0000  # QEMU VIRT_GIC_REDIST: ends at the UART
GIC_REDIST_MAX_CPUS = GIC_REDIST_REGION_SIZE // GIC_REDIST_STRIDE  # 123
GIC_V2_MAX_CPUS = uapi.VGIC_V2_MAX_CPUS

UART_BASE = 0x0900_0000
UART_SIZE = 0x1000
UART_SPI = 1  # QEMU a15irqmap[VIRT_UART]
SPI_INTID_BASE = uapi.VGIC_NR_PRIVATE_IRQS  # SPI n is INTID 32 + n


@dataclass(frozen=True, slots=True)
class Region:
    """One guest-physical window: [base, base + size)."""

    name: str
    base: int
    size: int

    @property
    def end(self) -> int:
        return self.base + self.size

    def contains(self, addr: int, length: int = 1) -> bool:
        return self.base <= addr and addr + length <= self.end

    def overlaps(self, other: Region) -> bool:
        return self.base < other.end and other.base < self.end


def kvm_mpidr(vcpu_index: int) -> int:
    """The MPIDR affinity KVM gives vCPU ``vcpu_index`` (sys_regs.c ``reset_mpidr``).

    16 CPUs per Aff1 cluster, as KVM does (the GICv3 SGI target list holds 16); without the
    RES1 bit 31, i.e. the value that goes into a cpu node's ``reg``. A VMM on real KVM reads
    this back from the vCPU; the board computes it so the DTB can be built before the vCPUs.
    """
    aff0 = vcpu_index & 0x0F
    aff1 = (vcpu_index >> 4) & 0xFF
    aff2 = (vcpu_index >> 12) & 0xFF
    return aff2 << 16 | aff1 << 8 | aff0


def parse_gic_version(value: int | str) -> int:
    """Accept 2, 3, "2", "3", "v2", "v3" (the CLI's and QEMU's spellings)."""
    text = str(value).lower().removeprefix("v")
    if text not in ("2", "3"):
        raise ConfigError(f"unknown GIC version '{value}': use v2 or v3")
    return int(text)


@dataclass(frozen=True, slots=True)
class VirtLayout:
    """The memory map of one VM: RAM size, vCPU count and GIC version decide the rest."""

    ram_size: int
    nr_cpus: int
    gic_version: int

    def __post_init__(self) -> None:
        # Normalising in a frozen dataclass needs object.__setattr__; done once, here.
        object.__setattr__(self, "gic_version", parse_gic_version(self.gic_version))
        _check_ram(self.ram_size)
        _check_cpus(self.nr_cpus, self.gic_version)

    @property
    def ram(self) -> Region:
        return Region("ram", RAM_BASE, self.ram_size)

    @property
    def gic_dist(self) -> Region:
        size = GIC_V2_DIST_SIZE if self.gic_version == 2 else GIC_V3_DIST_SIZE
        return Region("gic-dist", GIC_DIST_BASE, size)

    @property
    def gic_cpu(self) -> Region | None:
        """The GICv2 CPU interface (None for GICv3: its CPU interface is system registers)."""
        return Region("gic-cpu", GIC_CPU_BASE, GIC_CPU_SIZE) if self.gic_version == 2 else None

    @property
    def gic_redist(self) -> Region | None:
        """The GICv3 redistributors of all vCPUs, one 128 KiB stride each (None for GICv2)."""
        if self.gic_version != 3:
            return None
        return Region("gic-redist", GIC_REDIST_BASE, self.nr_cpus * GIC_REDIST_STRIDE)

    @property
    def uart(self) -> Region:
        return Region("pl011", UART_BASE, UART_SIZE)

    @property
    def uart_spi(self) -> int:
        return UART_SPI

    @property
    def uart_intid(self) -> int:
        return SPI_INTID_BASE + UART_SPI

    @property
    def mpidrs(self) -> tuple[int, ...]:
        return tuple(kvm_mpidr(i) for i in range(self.nr_cpus))

    def regions(self) -> tuple[Region, ...]:
        """Every populated window, in address order."""
        found = (self.gic_dist, self.gic_cpu, self.gic_redist, self.uart, self.ram)
        return tuple(sorted((r for r in found if r is not None), key=lambda r: r.base))


def _check_ram(size: int) -> None:
    mib = size / MiB
    if size < RAM_MIN_SIZE:
        raise ConfigError(f"-m {mib:g}M is too little RAM: give at least "
                          f"{RAM_MIN_SIZE // MiB}M")
    if size > RAM_MAX_SIZE:
        raise ConfigError(f"-m {mib:g}M is more than the virt board's "
                          f"{RAM_MAX_SIZE // GiB} GiB of RAM: give at most {RAM_MAX_SIZE // GiB}G")
    if size % PAGE_SIZE:
        raise ConfigError(f"RAM size {size} bytes is not a multiple of 4 KiB: round it, e.g. "
                          f"-m {size // MiB}M")


def _check_cpus(nr_cpus: int, gic_version: int) -> None:
    limit = GIC_V2_MAX_CPUS if gic_version == 2 else GIC_REDIST_MAX_CPUS
    if nr_cpus < 1:
        raise ConfigError(f"{nr_cpus} vCPUs: give at least 1")
    if nr_cpus > limit:
        hint = "use --gic v3 for more" if gic_version == 2 else "give fewer vCPUs"
        raise ConfigError(f"{nr_cpus} vCPUs do not fit the GICv{gic_version} of the virt board "
                          f"(at most {limit}): {hint}")
