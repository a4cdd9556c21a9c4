"""How the VMM wires the userspace GIC: the KVM_IRQ_LINE sink, SPI lines, per-vCPU banked
windows on the bus, and the Runner exit hook feeding device_irq_level."""

import threading
from dataclasses import dataclass

import pytest

from softkvm.arch import gic as G
from softkvm.errors import ConfigError
from softkvm.kvm import irq_line, uapi
from softkvm.kvm.kvm_run import KvmRun
from softkvm.vmm.bus import Bus
from softkvm.vmm.irqchip.user_gic import (LINE_FIQ, LINE_IRQ, UserGic, UserGicExitHook,
                                          VcpuContext, VmCpuLines)
from softkvm.vmm.layout import GIC_CPU_BASE, GIC_CPU_SIZE, GIC_DIST_BASE
from softkvm.vmm.runner import Runner

from tests.support import machine
from tests.vmm.user_gic.helpers import FakeLines, Guest, iar

SPURIOUS = 1023


class RecordingVm:
    def __init__(self):
        self.calls = []

    def irq_line(self, irq, level):
        self.calls.append((irq, level))


@dataclass
class FakeVcpu:
    vcpu_id: int


def test_vm_sink_encodes_kvm_irq_line_type_cpu():
    vm = RecordingVm()
    sink = VmCpuLines(vm)
    sink(3, LINE_FIQ, True)
    sink(1, LINE_IRQ, False)
    assert vm.calls == [
        (irq_line.encode(uapi.KVM_ARM_IRQ_TYPE_CPU, 3, uapi.KVM_ARM_IRQ_CPU_FIQ), 1),
        (irq_line.encode(uapi.KVM_ARM_IRQ_TYPE_CPU, 1, uapi.KVM_ARM_IRQ_CPU_IRQ), 0)]


def test_vm_sink_drives_the_vcpu_lines_of_a_real_vm():
    vm, vcpus, _ = machine.make_vm(2)
    try:
        gic = UserGic(2, VmCpuLines(vm))
        guest = Guest(gic, FakeLines())
        guest.boot()
        guest.sgi(0, 1, targets=0b10)
        assert vcpus[1].irq_lines == [True, False] and vcpus[0].irq_lines == [False, False]
        assert guest.ack(1) == iar(1, 0)
        assert vcpus[1].irq_lines == [False, False]
    finally:
        vm.close()


def test_spi_line_is_an_interrupt_line():
    lines = FakeLines()
    gic = UserGic(1, lines)
    guest = Guest(gic, lines)
    guest.boot()
    guest.setup(33, edge=False)
    uart_irq = gic.spi_line(33)
    uart_irq.set_level(True)
    assert lines.irq() and guest.ack() == 33
    uart_irq.set_level(False)
    guest.eoi(33)
    assert not lines.irq()


def _machine(nr_cpus=2):
    lines = FakeLines()
    gic = UserGic(nr_cpus, lines)
    ctx = VcpuContext()
    dist, cpuif = gic.banked_windows(ctx)
    bus = Bus()
    bus.add(GIC_DIST_BASE, 0x1000, dist, "gic-dist")
    bus.add(GIC_CPU_BASE, GIC_CPU_SIZE, cpuif, "gic-cpu")
    return gic, lines, bus, UserGicExitHook(gic, ctx)


def _mmio(hook, runner, vcpu, addr, value=None):
    """One KVM_EXIT_MMIO as the Runner handles it: hooks first, then handle_exit."""
    run = KvmRun(exit_reason=uapi.KVM_EXIT_MMIO)
    run.mmio.phys_addr, run.mmio.len, run.mmio.is_write = addr, 4, value is not None
    if value is not None:
        run.mmio.data[:4] = value.to_bytes(4, "little")
    hook(vcpu, run)
    runner.handle_exit(vcpu, run)
    return int.from_bytes(run.mmio.data[:4], "little")


def test_banked_windows_through_the_bus_and_the_runner():
    gic, lines, bus, hook = _machine()
    runner = Runner(vm=None, bus=bus)   # handle_exit only needs the bus for MMIO
    v0, v1 = FakeVcpu(0), FakeVcpu(1)
    _mmio(hook, runner, v0, GIC_DIST_BASE + G.GICD_CTLR, 1)
    for vcpu in (v0, v1):
        _mmio(hook, runner, vcpu, GIC_CPU_BASE + G.GICC_CTLR, 1)
        _mmio(hook, runner, vcpu, GIC_CPU_BASE + G.GICC_PMR, 0xF0)
    _mmio(hook, runner, v1, GIC_DIST_BASE + G.GICD_SGIR, 0x02000004)   # SGI 4 to self
    assert _mmio(hook, runner, v0, GIC_CPU_BASE + G.GICC_IAR) == SPURIOUS
    assert _mmio(hook, runner, v1, GIC_CPU_BASE + G.GICC_IAR) == iar(4, 1)
    assert _mmio(hook, runner, v1, GIC_CPU_BASE + G.GICC_RPR) == 0
    assert _mmio(hook, runner, v0, GIC_CPU_BASE + G.GICC_RPR) == 0xFF
    assert _mmio(hook, runner, v1, GIC_DIST_BASE + G.GICD_ITARGETSR) == 0x02020202
    assert lines.calls == [(1, LINE_IRQ, True), (1, LINE_IRQ, False)]


def test_exit_hook_feeds_device_irq_level():
    gic, lines, bus, hook = _machine()
    guest = Guest(gic, lines)
    guest.boot()
    guest.setup(27, cpu=1)
    run = KvmRun(exit_reason=uapi.KVM_EXIT_INTR)
    run.s.regs.device_irq_level = uapi.KVM_ARM_DEV_EL1_VTIMER
    hook(FakeVcpu(1), run)
    assert lines.calls == [(1, LINE_IRQ, True)]
    hook(FakeVcpu(1), run)                     # unchanged bits: nothing
    assert len(lines.calls) == 1
    run.s.regs.device_irq_level = 0
    hook(FakeVcpu(1), run)
    assert lines.calls[-1] == (1, LINE_IRQ, False)


def test_banked_window_outside_a_vcpu_thread_is_a_wiring_error():
    gic, _, bus, hook = _machine()
    hook(FakeVcpu(0), KvmRun())
    assert bus.read(GIC_CPU_BASE + G.GICC_IIDR, 4) == 0x0002043B   # this thread: vCPU 0
    errors = []

    def other_thread():
        try:
            bus.read(GIC_CPU_BASE + G.GICC_IIDR, 4)
        except ConfigError as err:
            errors.append(str(err))

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert errors and "UserGicExitHook" in errors[0]


def test_direct_per_vcpu_views():
    lines = FakeLines()
    gic = UserGic(2, lines)
    assert gic.cpu_interface(1) is gic.cpu_interface(1)
    assert gic.distributor(1).mmio_read(G.GICD_ITARGETSR, 1) == 0x02
    with pytest.raises(IndexError):
        gic.cpu_interface(2)
