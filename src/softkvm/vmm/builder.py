"""Assemble a virt machine from a ``VmConfig``, in visible order.

Counterpart: QEMU's hw/arm/virt.c ``machvirt_init`` and kvmtool's init list — but as one explicit
function: memory → vCPUs → irqchip (KVM wants the vCPUs first) → devices → kernel/initrd →
device tree → boot registers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from softkvm.kvm import uapi
from softkvm.kvm.api import Kvm, Vcpu, Vm
from softkvm.kvm.one_reg import REG_PC_ID, core_reg
from softkvm.vmm import fdt, loader
from softkvm.vmm import console
from softkvm.vmm.bus import Bus
from softkvm.vmm.config import VmConfig
from softkvm.vmm.devices import pl011
from softkvm.vmm.devices.pl011 import Pl011
from softkvm.vmm.irqchip import kernel as kernel_irqchip
from softkvm.vmm.layout import VirtLayout, parse_gic_version
from softkvm.vmm.memory import GuestMemory
from softkvm.vmm.runner import Runner, RunResult

if TYPE_CHECKING:  # imported where used: a plain run needs neither (start-up time)
    from softkvm.vmm.irqchip.user import UserIrqChip

BOOT_FEATURES = 1 << uapi.KVM_ARM_VCPU_PSCI_0_2
SECONDARY_FEATURES = BOOT_FEATURES | 1 << uapi.KVM_ARM_VCPU_POWER_OFF


@dataclass(slots=True)
class Machine:
    config: VmConfig
    vm: Vm
    layout: VirtLayout
    memory: GuestMemory
    bus: Bus
    uart: Pl011
    irqchip: kernel_irqchip.KernelIrqChip | UserIrqChip
    dtb: bytes
    boot: loader.BootPlan
    runner: Runner
    console_out: console.ConsoleWriter
    trace_records: int | None = None   # written to config.trace at close

    @property
    def vcpus(self) -> list[Vcpu]:
        return self.vm.vcpus

    def run(self) -> RunResult:
        return self.runner.run(self.config.timeout)

    def close(self) -> None:
        try:
            self.console_out.close()
            self.irqchip.close()  # deassigns its irqfds: the VM must still be there
            self.vm.close()
            self.memory.close()
        finally:  # every thread has stopped emitting: the trace is complete, whatever happened
            self.write_trace()

    def write_trace(self) -> None:
        """Write ``config.trace`` once (``trace_records`` then says how many records)."""
        path = self.config.trace
        if path is None or not self.vm.tracer.on:
            return
        self.vm.tracer.disable()
        from softkvm.vmm import trace_export

        self.trace_records = trace_export.write_trace(
            path, self.vm.tracer, title=f"softkvm {Path(self.config.kernel).name}")


def build(config: VmConfig, kvm: Kvm | None = None) -> Machine:
    config.validate()
    layout = VirtLayout(ram_size=config.mem_size, nr_cpus=config.smp,
                        gic_version=parse_gic_version(config.gic))
    kvm = kvm or Kvm()
    vm = kvm.create_vm()
    if config.trace is not None:
        vm.tracer.enable()  # from the first vCPU on: every record of the run
    memory = GuestMemory(layout.ram.base, layout.ram.size)
    vm.set_user_memory_region(0, memory.base, memory.buffer)
    vcpus = [vm.create_vcpu(i) for i in range(config.smp)]
    for vcpu in vcpus:
        vcpu.arm_vcpu_init(features=BOOT_FEATURES if vcpu.vcpu_id == 0 else SECONDARY_FEATURES)
    bus = Bus()
    runner = Runner(vm, bus)
    if config.irqchip == "kernel":
        irqchip = kernel_irqchip.create(vm, layout)
    else:
        from softkvm.vmm.irqchip import user as user_irqchip

        publish = config.published_mmio and vm.check_extension(
            uapi.KVM_CAP_SOFTKVM_PUBLISHED_MMIO)
        irqchip = user_irqchip.create(vm, layout, bus, runner, publish_iar=publish)
    console_out = console.ConsoleWriter(config.console_out)
    uart = Pl011(irq=irqchip.level_line(layout.uart_intid), write=console_out)
    bus.add(layout.uart.base, layout.uart.size, uart, "pl011")
    if config.coalesced_mmio and vm.check_extension(uapi.KVM_CAP_COALESCED_MMIO):
        for offset, size in pl011.COALESCED_RANGES:
            vm.register_coalesced_mmio(layout.uart.base + offset, size)
    if config.published_mmio and vm.check_extension(uapi.KVM_CAP_SOFTKVM_PUBLISHED_MMIO):
        fr = vm.register_published_mmio(layout.uart.base + pl011.PUBLISHED_OFFSET,
                                        pl011.PUBLISHED_SIZE)
        uart.publish_fr_to(fr.publish)
    boot = loader.load(memory, config.kernel, initrd=config.initrd,
                       make_dtb=lambda initrd: _device_tree(config, layout, [uart], initrd))
    if config.dump_dtb is not None:
        fdt.dump(boot.dtb, config.dump_dtb)
    vm.notify_memory_written()
    boot_vcpu = vcpus[0]
    boot_vcpu.set_one_reg(REG_PC_ID, boot.entry)
    boot_vcpu.set_one_reg(core_reg(0), boot.dtb_address)
    if config.console_in is not None:
        console.start_input(uart, config.console_in.fileno())
    return Machine(config, vm, layout, memory, bus, uart, irqchip, boot.dtb, boot, runner,
                   console_out)


def _device_tree(config: VmConfig, layout: VirtLayout, devices: list[fdt.FdtNodeWriter],
                 initrd: tuple[int, int] | None) -> bytes:
    if config.dtb is not None:  # the user's tree, with our command line and initrd in /chosen
        return fdt.fixup_chosen(fdt.load_dtb_file(config.dtb), bootargs=config.append,
                                initrd=initrd)
    seeds = fdt.DtbSeeds.fresh() if config.dtb_randomness else None
    return fdt.build_dtb(layout, devices, bootargs=config.append, initrd=initrd, seeds=seeds)
