"""The in-kernel irqchip as a VMM sets it up: KVM_CREATE_DEVICE + addresses + CTRL_INIT.

Counterpart: QEMU's hw/intc/arm_gic_kvm.c / arm_gicv3_kvm.c and kvmtool's arm/gic.c: create the
vGIC device, place its frames at the board's addresses, size it, initialise it; device
interrupt lines become KVM_IRQ_LINE calls (irqfds where a device has one).
"""

from __future__ import annotations

import os
import select
import threading
from dataclasses import dataclass, field

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


class IrqfdLevelLine:
    """A level-sensitive device line delivered the way VMMs do it with KVM: an irqfd with a
    resamplefd. Asserting writes the irqfd; KVM holds the SPI until the guest EOIs it, then lowers
    it and signals the resamplefd, and if the device still asserts we write the irqfd again."""

    def __init__(self, vm: Vm, intid: int) -> None:
        self.vm, self.gsi = vm, intid - 32
        self.irqfd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.resamplefd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._wake_r, self._wake_w = os.pipe()
        self._lock = threading.Lock()
        self._level = False
        self.resamples = 0
        vm.irqfd(self.irqfd, self.gsi, resamplefd=self.resamplefd)
        self._thread = threading.Thread(target=self._resampler, name=f"irqfd-gsi{self.gsi}",
                                        daemon=True)
        self._thread.start()

    def set_level(self, level: bool) -> None:
        with self._lock:
            if level and not self._level:
                os.eventfd_write(self.irqfd, 1)
            self._level = level

    def _resampler(self) -> None:
        while True:
            ready, _, _ = select.select([self.resamplefd, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            os.eventfd_read(self.resamplefd)
            with self._lock:
                self.resamples += 1
                if self._level:  # still asserted after the guest's EOI: assert again
                    os.eventfd_write(self.irqfd, 1)

    def close(self) -> None:
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        self.vm.irqfd(self.irqfd, self.gsi, resamplefd=self.resamplefd, deassign=True)
        for fd in (self.irqfd, self.resamplefd, self._wake_r, self._wake_w):
            os.close(fd)


@dataclass(slots=True)
class KernelIrqChip:
    vm: Vm
    device: object
    lines: list[IrqfdLevelLine] = field(default_factory=list)

    def spi_line(self, intid: int) -> SpiLine:
        return SpiLine(self.vm, intid)

    def level_line(self, intid: int) -> IrqfdLevelLine:
        """A device's level interrupt through an irqfd + resamplefd pair."""
        line = IrqfdLevelLine(self.vm, intid)
        self.lines.append(line)
        return line

    def close(self) -> None:
        for line in self.lines:
            line.close()
        self.lines.clear()


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
