"""A bare VM with hand-written code in RAM, for core and KVM tests."""

from __future__ import annotations

import mmap

from softkvm.hw.core import Core
from softkvm.kvm.api import Kvm, Vcpu, Vm
from softkvm.kvm.kvm_run import KvmRun
from softkvm.kvm.one_reg import REG_PC_ID

from .asm import assemble

RAM_BASE = 0x40000000
RAM_SIZE = 16 << 20
CODE = RAM_BASE + 0x80000
VBAR = RAM_BASE + 0x10000

_KVM: list[Kvm] = []


def kvm() -> Kvm:
    if not _KVM:
        _KVM.append(Kvm())
    return _KVM[0]


def make_vm(nr_vcpus: int = 1, ram_size: int = RAM_SIZE,
            host_cpus: int | None = None) -> tuple[Vm, list[Vcpu], mmap.mmap]:
    """A VM with RAM at RAM_BASE and initialised vCPUs. ``host_cpus``: how many host CPUs its
    vCPUs may use (1: they take turns on one; default: the host's count)."""
    vm = kvm().create_vm()
    vm.host_cpus = host_cpus
    ram = mmap.mmap(-1, ram_size)
    vm.set_user_memory_region(0, RAM_BASE, ram)
    vcpus = [vm.create_vcpu(i) for i in range(nr_vcpus)]
    for vcpu in vcpus:
        vcpu.arm_vcpu_init()
    return vm, vcpus, ram


def load(vm: Vm, ram: mmap.mmap, gpa: int, source: str) -> int:
    code = assemble(source)
    ram[gpa - RAM_BASE: gpa - RAM_BASE + len(code)] = code
    vm.notify_memory_written()
    return gpa


def start_at(vcpu: Vcpu, pc: int) -> None:
    vcpu.set_one_reg(REG_PC_ID, pc)


def run_source(vm: Vm, vcpu: Vcpu, ram: mmap.mmap, source: str) -> KvmRun:
    """Load ``source`` at CODE and KVM_RUN ``vcpu`` from there."""
    load(vm, ram, CODE, source)
    start_at(vcpu, CODE)
    return vcpu.run()


# A vector table whose 16 entries each report their index with HVC #(0x100 + index) (an exit
# for the core; an unknown SMCCC call for the run loop), then park.
VECTORS = "\n".join(f".balign 0x80\n hvc #{0x100 + i}\n b ." for i in range(16))
POWER_OFF = "\n ldr x0, =0x84000008\n hvc #0"


def vm_served_by(mode: str, monkeypatch, core_control: str) -> tuple[Vm, Vcpu, mmap.mmap, str]:
    """A two-vCPU VM whose cores do ``core_control``'s work themselves (mode "core"), or leave it
    to the kernel, as a stock core does (mode "kernel", where ``core_control`` answers False)."""
    if mode == "kernel":
        monkeypatch.setattr(Core, core_control, lambda core, config: False)
    vm, vcpus, ram = make_vm(2)
    return vm, vcpus[0], ram, mode
