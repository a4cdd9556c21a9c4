"""The userspace irqchip: a GICv2 in the VMM, fed by KVM_EXIT_MMIO and device_irq_level.

Counterpart: QEMU's ``kernel-irqchip=off`` on arm (hw/intc/arm_gic.c with KVM_CAP_ARM_USER_IRQ):
the GIC's frames are ordinary MMIO on the VMM's bus, its per-CPU outputs drive each vCPU's IRQ/FIQ
input (KVM_IRQ_LINE, type CPU), and the timer/PMU levels KVM reports after every exit feed its
PPIs.
"""

from __future__ import annotations

from dataclasses import dataclass

from softkvm.arch import gic as G
from softkvm.kvm.api import PublishedRegister, Vm
from softkvm.vmm.bus import Bus
from softkvm.vmm.irqchip.user_gic import SpiLine, UserGic, UserGicExitHook, VcpuContext, VmCpuLines
from softkvm.vmm.layout import VirtLayout
from softkvm.vmm.runner import Runner


@dataclass(slots=True)
class UserIrqChip:
    gic: UserGic

    def spi_line(self, intid: int) -> SpiLine:
        return self.gic.spi_line(intid)

    def level_line(self, intid: int) -> SpiLine:
        """The GIC's own input: level semantics are the model's."""
        return self.gic.spi_line(intid)

    def close(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class PublishedIar:
    """Each vCPU's GICC_IAR as a banked published register: 1023 while nothing is forwarded
    to that CPU (such a read changes nothing), withdrawn before anything is. Linux's GICv2
    handler ends every interrupt with an IAR read that finds nothing: no exit for it."""

    registers: tuple[PublishedRegister, ...]

    @classmethod
    def register(cls, vm: Vm, layout: VirtLayout) -> PublishedIar:
        iar = layout.gic_cpu.base + G.GICC_IAR  # type: ignore[union-attr]
        return cls(tuple(v.register_published_mmio(iar, 4) for v in vm.vcpus))

    def __call__(self, cpu: int, quiet: bool) -> None:
        if quiet:
            self.registers[cpu].publish(G.INTID_SPURIOUS)
        else:
            self.registers[cpu].withdraw()


def create(vm: Vm, layout: VirtLayout, bus: Bus, runner: Runner,
           publish_iar: bool = False) -> UserIrqChip:
    """``publish_iar``: answer a spurious GICC_IAR read without an exit (PublishedIar)."""
    quiet = PublishedIar.register(vm, layout) if publish_iar else None
    gic = UserGic(len(vm.vcpus), VmCpuLines(vm), nr_irqs=256, tracer=vm.tracer,
                  set_cpu_quiet=quiet)
    gic.model.flush_lines()   # every CPU starts quiet: its IAR is published from the start
    context = VcpuContext()
    dist, cpuif = gic.banked_windows(context)
    bus.add(layout.gic_dist.base, layout.gic_dist.size, dist, "gic-dist")
    bus.add(layout.gic_cpu.base, layout.gic_cpu.size, cpuif, "gic-cpu")  # type: ignore[union-attr]
    runner.on_exit.append(UserGicExitHook(gic, context))
    return UserIrqChip(gic)
