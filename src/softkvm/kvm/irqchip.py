"""Creating the in-kernel vGIC and wiring it to the vCPUs' cores.

Counterpart: ``kvm_vm_ioctl_create_device``/``KVM_CREATE_IRQCHIP`` (virt/kvm/kvm_main.c,
arch/arm64/kvm/arm.c) and the io-bus registration of the vGIC frames (``vgic_register_dist_iodev``
and friends in vgic-mmio*.c), plus what the GIC hardware wires for KVM: the virtual CPU
interface's vIRQ/vFIQ outputs into the core, the ICC_* system registers (GICv3) routed to it,
and ID_AA64PFR0_EL1.GIC advertising them.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING

from softkvm.arch import sysregs as S
from softkvm.hw import native as N
from softkvm.kvm import uapi
from softkvm.kvm.errors import KvmError
from softkvm.kvm.vgic.vgic import Vgic
from softkvm.kvm.vgic.vgic_kvm_device import VgicDevice
from softkvm.kvm.vgic.vgic_sys_reg_v3 import SGI_REGISTERS

if TYPE_CHECKING:
    from softkvm.kvm.api import Vcpu, Vm

VGIC_TYPES = (uapi.KVM_DEV_TYPE_ARM_VGIC_V2, uapi.KVM_DEV_TYPE_ARM_VGIC_V3)
# The GICv3 CPU interface's register space at EL1: ICC_PMR_EL1 and op0=3 op1=0 CRn=12 CRm=8..12
# (the vGIC answers the ones it implements; the rest UNDEF, as on hardware).
ICC_ENCODINGS = (S.ICC_PMR_EL1.encoding, *(S.sys_reg(3, 0, 12, crm, op2)
                                            for crm in range(8, 13) for op2 in range(8)))


class VgicHost:
    """The VM as the vGIC sees it (``VgicVmHost``)."""

    def __init__(self, vm: Vm) -> None:
        self._vm = vm

    def vcpus(self) -> list[Vcpu]:
        return self._vm.vcpus

    def has_run(self) -> bool:
        return self._vm.has_run

    def vgic_initialized(self) -> None:
        """Registrations and signals kept from before init are delivered now."""
        self._vm.irqfd_vgic_ready()


def create_vgic_device(vm: Vm, dev_type: int) -> VgicDevice:
    """KVM_CREATE_DEVICE for a vGIC: one per VM, before any vCPU has run."""
    if dev_type not in VGIC_TYPES:
        raise KvmError(errno.ENODEV, f"unknown device type {dev_type}")
    if vm.vgic is not None:
        raise KvmError(errno.EEXIST, "the VM already has an in-kernel irqchip")
    if vm.has_run:
        raise KvmError(errno.EBUSY, "create the irqchip before running any vCPU")
    device = VgicDevice.create(VgicHost(vm), dev_type)
    device.vgic.tracer = vm.tracer
    vm.vgic = device.vgic
    return device


def connect_vcpu(vgic: Vgic, vcpu: Vcpu) -> None:
    """At the vCPU's first run: map the vGIC frames and its CPU interface into its core."""
    core, vcpu_id = vcpu.core, vcpu.vcpu_id
    vif = vgic.vcpu_if(vcpu_id)
    state, gicv = core.state, vgic.is_v2

    def on_change() -> None:  # the virtual CPU interface re-drives the core's inputs
        # An exit is needed when a line rises (the core notices HCR_EL2.VI/VF only back in its
        # main loop) or when the interface raises its maintenance interrupt (e.g. EOI of an LR
        # that asked for it): that is a host interrupt, which takes the vCPU out for KVM to fold
        # and refill the list registers. A falling line (the guest acknowledged the last pending
        # LR) withdraws the core's request at once, and anything else needs no exit either, as
        # on hardware.
        irq, fiq = vif.signal()
        rises = (irq and not core.hcr & S.HCR_VI) or (fiq and not core.hcr & S.HCR_VF)
        core.set_irq_lines(irq, fiq)
        if gicv:  # the GICV frame answers a spurious IAR read by itself
            state.no_pending_lr = not vif.has_pending_lr()
        if rises or vif.maintenance():
            core.kick()

    vif.on_change = on_change
    vif.tracer, vif.trace_vcpu = vcpu.tracer, vcpu_id  # the guest's acks/EOIs in the trace
    for base, size, read, write in vgic.mmio_regions(vcpu_id):
        if base == vgic.cpu_base:  # GICv2 CPU interface: the hardware's GICV, no exit
            core.map_cpu_interface(base, size, _vif_read(vcpu, read), _vif_write(vcpu, write))
        else:
            core.map_mmio(base, size, _counted_read(vcpu, base, read),
                          _counted_write(vcpu, base, write))
    if vgic.has_sysreg_cpuif:
        for encoding in ICC_ENCODINGS:
            core.set_sysreg_policy(encoding, N.SR_PY_UNKNOWN)
        core.sysreg_handler = _icc_handler(vgic, vcpu)
        core.set_hcr_traps(S.HCR_TID3, True)  # ID_AA64PFR0_EL1.GIC = 1 (sys_regs.py)


# The core serves the vGIC frames without leaving the slice; each access is still a trip out
# of the guest for KVM (a data abort that kvm_io_bus serves), so it counts as an exit too.
def _counted_read(vcpu: Vcpu, base: int, read: Callable[[int, int], int]
                  ) -> Callable[[int, int], int]:
    stats, tracer = vcpu.stats, vcpu.tracer

    def access(offset: int, size: int) -> int:
        stats.exits += 1
        stats.mmio_exit_kernel += 1
        value = read(offset, size)
        if tracer.on:  # kvm_io_bus served it: trace_kvm_mmio(KVM_TRACE_MMIO_READ, ...)
            tracer.emit("kvm_mmio", vcpu.vcpu_id, type="read", len=size, gpa=base + offset,
                        val=value, kernel=True)
        return value
    return access


def _counted_write(vcpu: Vcpu, base: int, write: Callable[[int, int, int], None]
                   ) -> Callable[[int, int, int], None]:
    stats, tracer = vcpu.stats, vcpu.tracer

    def access(offset: int, size: int, value: int) -> None:
        stats.exits += 1
        stats.mmio_exit_kernel += 1
        if tracer.on:
            tracer.emit("kvm_mmio", vcpu.vcpu_id, type="write", len=size, gpa=base + offset,
                        val=value, kernel=True)
        write(offset, size, value)
    return access


def _vif_read(vcpu: Vcpu, read: Callable[[int, int], int]) -> Callable[[int, int], int]:
    stats = vcpu.stats

    def access(offset: int, size: int) -> int:
        stats.vcpu_if_accesses += 1
        return read(offset, size)
    return access


def _vif_write(vcpu: Vcpu, write: Callable[[int, int, int], None]
               ) -> Callable[[int, int, int], None]:
    stats = vcpu.stats

    def access(offset: int, size: int, value: int) -> None:
        stats.vcpu_if_accesses += 1
        write(offset, size, value)
    return access


def _icc_handler(vgic: Vgic, vcpu: Vcpu) -> Callable[[int, bool, int], int | None]:
    """Serve the guest's ICC_* accesses; None makes the core UNDEF them."""
    vcpu_id, stats = vcpu.vcpu_id, vcpu.stats

    def handle(encoding: int, is_write: bool, value: int) -> int | None:
        if encoding in SGI_REGISTERS:  # trapped to KVM (access_gic_sgi): an exit
            stats.exits += 1
            stats.sysreg_traps += 1
        else:  # ICV_* registers: the virtual CPU interface answers, no exit
            stats.vcpu_if_accesses += 1
        if is_write:
            return 0 if vgic.vgic_v3_sysreg_write(vcpu_id, encoding, value) else None
        return vgic.vgic_v3_sysreg_read(vcpu_id, encoding)

    return handle
