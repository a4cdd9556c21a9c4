"""The userspace GICv2 (``--irqchip user``, KVM_CAP_ARM_USER_IRQ): a whole GIC in the VMM.

Counterpart: what QEMU's hw/intc/arm_gic.c is to a TCG virt board and kvmtool's userspace GIC
would be: with no in-kernel vGIC, the guest's distributor and CPU-interface accesses come back as
KVM_EXIT_MMIO, and the VMM drives each vCPU's IRQ/FIQ input with ``KVM_IRQ_LINE`` type CPU.
Architecture: ARM IHI 0048B (GICv2, no Security Extensions). Design notes: ``gic.py`` (state and
rules), ``dist.py`` (GICD table), ``cpuif.py`` (GICC table).

Wiring in the VMM (the board writes the GIC's DT node; this package writes none)::

    gic = UserGic(nr_cpus, VmCpuLines(vm))                  # outputs → vm.irq_line(TYPE_CPU…)
    ctx = VcpuContext()
    dist, cpuif = gic.banked_windows(ctx)                   # per-vCPU dispatch of both windows
    bus.add(GIC_DIST_BASE, 0x1000, dist, "gic-dist")
    bus.add(GIC_CPU_BASE, 0x2000, cpuif, "gic-cpu")
    runner.on_exit.append(UserGicExitHook(gic, ctx))        # before handle_exit, every exit
    uart = Pl011(..., irq=gic.spi_line(33))

- Both windows are banked: the CPU interface entirely, the distributor for SGIs/PPIs (enable,
  pending, active, priority, targets of INTIDs 0-31), GICD_SGIR (the sender) and the SGI source
  registers. A runner that knows the vCPU of each MMIO exit can instead route to
  ``gic.distributor(i)`` / ``gic.cpu_interface(i)`` directly; the banked windows find the vCPU
  through ``VcpuContext``, which the exit hook sets in the vCPU's own thread before the exit is
  handled (the Runner calls ``on_exit`` hooks before ``handle_exit``, in that thread).
- ``UserGicExitHook`` also feeds ``kvm_run.s.regs.device_irq_level`` after every exit:
  KVM_ARM_DEV_EL1_VTIMER → PPI 27, KVM_ARM_DEV_EL1_PTIMER → PPI 30, KVM_ARM_DEV_PMU → PPI 23
  of that vCPU, as level-sensitive inputs. KVM forces an exit whenever a level changes.
- vCPU index i is the vCPU created with id i (the index KVM_IRQ_LINE names).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from softkvm.errors import ConfigError
from softkvm.kvm import irq_line, uapi
from softkvm.vmm.irqchip.user_gic.cpuif import CpuInterface
from softkvm.vmm.irqchip.user_gic.dist import Distributor
from softkvm.vmm.irqchip.user_gic.gic import (DEFAULT_NR_IRQS, LINE_FIQ, LINE_IRQ, GicModel,
                                              LineSink, QuietSink)

if TYPE_CHECKING:
    from softkvm.kvm.api import Vcpu, Vm
    from softkvm.kvm.trace import Tracer
    from softkvm.kvm.kvm_run import KvmRun
    from softkvm.vmm.bus import BusDevice

__all__ = ["DEVICE_IRQ_PPIS", "LINE_FIQ", "LINE_IRQ", "BankedWindow", "CpuInterface",
           "Distributor", "GicModel", "SpiLine", "UserGic", "UserGicExitHook", "VcpuContext",
           "VmCpuLines"]

# kvm_run.s.regs.device_irq_level bit → the PPI the virt board wires it to.
VTIMER_PPI = 27
PTIMER_PPI = 30
PMU_PPI = 23
DEVICE_IRQ_PPIS = ((uapi.KVM_ARM_DEV_EL1_VTIMER, VTIMER_PPI),
                   (uapi.KVM_ARM_DEV_EL1_PTIMER, PTIMER_PPI),
                   (uapi.KVM_ARM_DEV_PMU, PMU_PPI))


@dataclass(frozen=True, slots=True)
class VmCpuLines:
    """The output sink for a real VM: ``KVM_IRQ_LINE`` with irq_type CPU (IRQ 0, FIQ 1)."""

    vm: Vm

    def __call__(self, cpu: int, line: int, level: bool) -> None:
        self.vm.irq_line(irq_line.encode(uapi.KVM_ARM_IRQ_TYPE_CPU, cpu, line), int(level))


@dataclass(frozen=True, slots=True)
class SpiLine:
    """An ``InterruptLine`` wired to one SPI input of the GIC."""

    model: GicModel
    intid: int

    def set_level(self, level: bool) -> None:
        self.model.set_spi(self.intid, level)


class VcpuContext:
    """Which vCPU the calling thread is handling an exit for (thread-local)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def enter(self, vcpu_index: int) -> None:
        self._local.index = vcpu_index

    def __call__(self) -> int:
        index = getattr(self._local, "index", None)
        if index is None:
            raise ConfigError("a banked GIC window was accessed from a thread that handles no "
                              "vCPU exit: add UserGicExitHook(gic, ctx) to Runner.on_exit")
        return index


@dataclass(frozen=True, slots=True)
class BankedWindow:
    """A BusDevice that forwards to the view of the vCPU ``current_vcpu()`` names."""

    views: tuple[BusDevice, ...]
    current_vcpu: Callable[[], int]

    def mmio_read(self, offset: int, size: int) -> int:
        return self.views[self.current_vcpu()].mmio_read(offset, size)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        self.views[self.current_vcpu()].mmio_write(offset, size, value)


class UserGic:
    """A GICv2 for ``nr_cpus`` vCPUs and ``nr_irqs`` INTIDs, driving ``set_cpu_line``."""

    def __init__(self, nr_cpus: int, set_cpu_line: LineSink,
                 nr_irqs: int = DEFAULT_NR_IRQS, tracer: Tracer | None = None,
                 set_cpu_quiet: QuietSink | None = None) -> None:
        """``set_cpu_quiet(cpu, quiet)``: told when a CPU has nothing forwarded any more, or
        again (its GICC_IAR then reads 1023 with no side effect), before its lines change."""
        self.model = GicModel(nr_cpus, set_cpu_line, nr_irqs, tracer, set_cpu_quiet)
        self._dists = tuple(Distributor(self.model, c) for c in range(nr_cpus))
        self._cpuifs = tuple(CpuInterface(self.model, c) for c in range(nr_cpus))
        self._device_bits = [0] * nr_cpus   # slot i is written by vCPU i's thread only

    @property
    def nr_cpus(self) -> int:
        return self.model.nr_cpus

    def distributor(self, vcpu_index: int) -> Distributor:
        """The distributor window as vCPU ``vcpu_index`` accesses it."""
        return self._dists[vcpu_index]

    def cpu_interface(self, vcpu_index: int) -> CpuInterface:
        """The CPU-interface window of vCPU ``vcpu_index``."""
        return self._cpuifs[vcpu_index]

    def banked_windows(self, current_vcpu: Callable[[], int]) -> tuple[BankedWindow,
                                                                       BankedWindow]:
        """(distributor, CPU interface) BusDevices that dispatch on ``current_vcpu()``."""
        return BankedWindow(self._dists, current_vcpu), BankedWindow(self._cpuifs, current_vcpu)

    def spi_line(self, intid: int) -> SpiLine:
        """The InterruptLine for SPI ``intid`` (e.g. 33 for the PL011)."""
        self._check_spi(intid)
        return SpiLine(self.model, intid)

    def set_spi(self, intid: int, level: bool) -> None:
        self.model.set_spi(intid, level)

    def set_ppi(self, vcpu_index: int, intid: int, level: bool) -> None:
        self.model.set_ppi(vcpu_index, intid, level)

    def update_device_irq_level(self, vcpu_index: int, bits: int) -> None:
        """Feed ``kvm_run.s.regs.device_irq_level`` of vCPU ``vcpu_index`` (after each exit)."""
        if self._device_bits[vcpu_index] == bits:
            return
        self._device_bits[vcpu_index] = bits
        self.model.set_ppis(vcpu_index, ((ppi, bool(bits & bit)) for bit, ppi in DEVICE_IRQ_PPIS))

    def _check_spi(self, intid: int) -> None:
        last = self.model.spis[-1].intid
        if not 32 <= intid <= last:
            raise ConfigError(f"SPI {intid} does not exist: this GIC has SPIs 32 to {last}")


@dataclass(slots=True)
class UserGicExitHook:
    """A Runner ``on_exit`` hook: records the exiting vCPU for the banked windows and feeds its
    timer/PMU levels to the GIC."""

    gic: UserGic
    context: VcpuContext = field(default_factory=VcpuContext)

    def __call__(self, vcpu: Vcpu, run: KvmRun) -> None:
        self.context.enter(vcpu.vcpu_id)
        self.gic.update_device_irq_level(vcpu.vcpu_id, run.s.regs.device_irq_level)
