"""The in-kernel irqchip as a VMM sets it up: KVM_CREATE_DEVICE + addresses + CTRL_INIT.

Counterpart: QEMU's hw/intc/arm_gic_kvm.c / arm_gicv3_kvm.c and kvmtool's arm/gic.c: create the
vGIC device, place its frames at the board's addresses, size it, initialise it; device
interrupt lines become KVM_IRQ_LINE calls (irqfds where a device has one).
"""

from __future__ import annotations

from dataclasses import dataclass

from softkvm.kvm import uapi
from softkvm.kvm.api import Vm
from softkvm.kvm.irq_line import encode
from softkvm.vmm.layout import VirtLayout

NR_IRQS = 32 + 256  # QEMU virt's GIC: 256 SPIs


@dataclass(slots=True)
class SpiLine:
    """An ``InterruptLine`` that drives one SPI of the in-kernel vGIC (KVM_IRQ_LINE)."""

    vm: Vm
    intid: int

    def set_level(self, level: bool) -> None:
        self.vm.irq_line(encode(uapi.KVM_ARM_IRQ_TYPE_SPI, 0, self.intid), int(level))


@dataclass(slots=True)
class KernelIrqChip:
    vm: Vm
    device: object

    def spi_line(self, intid: int) -> SpiLine:
        return SpiLine(self.vm, intid)


def create(vm: Vm, layout: VirtLayout) -> KernelIrqChip:
    """A vGICv2 or vGICv3 at the virt board's addresses, initialised (all vCPUs exist)."""
    v2 = layout.gic_version == 2
    device = vm.create_device(uapi.KVM_DEV_TYPE_ARM_VGIC_V2 if v2 else uapi.KVM_DEV_TYPE_ARM_VGIC_V3)
    set_attr = device.set_attr  # type: ignore[attr-defined]
    group = uapi.KVM_DEV_ARM_VGIC_GRP_ADDR
    if v2:
        set_attr(group, uapi.KVM_VGIC_V2_ADDR_TYPE_DIST, layout.gic_dist.base)
        set_attr(group, uapi.KVM_VGIC_V2_ADDR_TYPE_CPU, layout.gic_cpu.base)  # type: ignore[union-attr]
    else:
        set_attr(group, uapi.KVM_VGIC_V3_ADDR_TYPE_DIST, layout.gic_dist.base)
        set_attr(group, uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST, layout.gic_redist.base)  # type: ignore[union-attr]
    set_attr(uapi.KVM_DEV_ARM_VGIC_GRP_NR_IRQS, 0, NR_IRQS)
    set_attr(uapi.KVM_DEV_ARM_VGIC_GRP_CTRL, uapi.KVM_DEV_ARM_VGIC_CTRL_INIT, 0)
    return KernelIrqChip(vm, device)
