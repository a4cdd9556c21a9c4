"""KVM_IRQ_LINE with the arm encoding (arch/arm64/kvm/arm.c ``kvm_vm_ioctl_irq_line``).

irq = vcpu2_index[31:28] | irq_type[27:24] | vcpu_index[23:16] | irq_id[15:0].
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from softkvm.kvm import arm, uapi
from softkvm.kvm.errors import KvmError

if TYPE_CHECKING:
    from softkvm.kvm.api import Vm


_TYPE_NAMES = {uapi.KVM_ARM_IRQ_TYPE_CPU: "CPU", uapi.KVM_ARM_IRQ_TYPE_SPI: "SPI",
               uapi.KVM_ARM_IRQ_TYPE_PPI: "PPI"}


def encode(irq_type: int, vcpu_index: int, irq_id: int) -> int:
    """Build the ``irq`` field of struct kvm_irq_level."""
    return ((vcpu_index >> 8) & uapi.KVM_ARM_IRQ_VCPU2_MASK) << uapi.KVM_ARM_IRQ_VCPU2_SHIFT | (
        irq_type << uapi.KVM_ARM_IRQ_TYPE_SHIFT) | (vcpu_index & 0xFF) << uapi.KVM_ARM_IRQ_VCPU_SHIFT | (
        irq_id & uapi.KVM_ARM_IRQ_NUM_MASK)


def kvm_vm_ioctl_irq_line(vm: Vm, irq: int, level: bool) -> None:
    irq_type = (irq >> uapi.KVM_ARM_IRQ_TYPE_SHIFT) & uapi.KVM_ARM_IRQ_TYPE_MASK
    vcpu_idx = ((irq >> uapi.KVM_ARM_IRQ_VCPU_SHIFT) & uapi.KVM_ARM_IRQ_VCPU_MASK) + (
        ((irq >> uapi.KVM_ARM_IRQ_VCPU2_SHIFT) & uapi.KVM_ARM_IRQ_VCPU2_MASK) << 8)
    irq_num = (irq >> uapi.KVM_ARM_IRQ_NUM_SHIFT) & uapi.KVM_ARM_IRQ_NUM_MASK
    if vm.tracer.on:  # trace_kvm_irq_line(irq_type, vcpu_idx, irq_num, level)
        vm.tracer.emit("kvm_irq_line", vcpu_idx, type=_TYPE_NAMES.get(irq_type, str(irq_type)),
                       irq=irq_num, level=level)
    if irq_type == uapi.KVM_ARM_IRQ_TYPE_CPU:
        _cpu_line(vm, vcpu_idx, irq_num, level)
        return
    if vm.vgic is None:
        raise KvmError(errno.ENXIO, "SPI/PPI lines need an in-kernel irqchip: create a vGIC "
                       "device, or drive the vCPU line with KVM_ARM_IRQ_TYPE_CPU")
    if irq_type == uapi.KVM_ARM_IRQ_TYPE_PPI:
        if vcpu_idx >= len(vm.vcpus) or not 16 <= irq_num < 32:
            raise KvmError(errno.EINVAL, f"bad PPI {irq_num} for vCPU {vcpu_idx}")
        _inject(vm, vcpu_idx, irq_num, level)
        return
    if irq_type == uapi.KVM_ARM_IRQ_TYPE_SPI:
        if irq_num < 32:
            raise KvmError(errno.EINVAL, f"SPI number {irq_num} is below 32")
        _inject(vm, None, irq_num, level)
        return
    raise KvmError(errno.EINVAL, f"unknown irq_type {irq_type}")


def _inject(vm: Vm, vcpu_idx: int | None, intid: int, level: bool) -> None:
    ret = vm.vgic.kvm_vgic_inject_irq(vcpu_idx, intid, level, None)  # type: ignore[attr-defined]
    if ret < 0:
        raise KvmError(-ret, f"injecting INTID {intid} failed")


def _cpu_line(vm: Vm, vcpu_idx: int, line: int, level: bool) -> None:
    if vm.vgic is not None:
        raise KvmError(errno.ENXIO, "KVM_ARM_IRQ_TYPE_CPU is for VMs without an in-kernel irqchip")
    if vcpu_idx >= len(vm.vcpus):
        raise KvmError(errno.EINVAL, f"no vCPU {vcpu_idx}")
    if line not in (uapi.KVM_ARM_IRQ_CPU_IRQ, uapi.KVM_ARM_IRQ_CPU_FIQ):
        raise KvmError(errno.EINVAL, f"CPU line {line} is neither IRQ (0) nor FIQ (1)")
    vcpu = vm.vcpus[vcpu_idx]
    if vcpu.irq_lines[line] == level:
        return
    vcpu.irq_lines[line] = level
    arm.kvm_make_request(vcpu, arm.REQ_IRQ_PENDING)
    arm.kvm_vcpu_kick(vcpu)
