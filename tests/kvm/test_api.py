"""The KVM-shaped API: errors as the ioctls give them, capabilities, ONE_REG."""

import errno
import mmap

import pytest

from softkvm.hw.core import Core
from softkvm.hw.pcpu import OwnCpus, PhysCpu
from softkvm.kvm import irq_line, uapi
from softkvm.kvm.errors import KvmError
from softkvm.kvm.one_reg import REG_PC_ID, core_reg, sysreg_id
from softkvm.arch import sysregs as S
from tests.support.machine import CODE, POWER_OFF, RAM_BASE, kvm, load, make_vm, start_at


def expect_errno(code, fn, *args, **kwargs):
    with pytest.raises(KvmError) as info:
        fn(*args, **kwargs)
    assert info.value.errno == code, str(info.value)
    return info.value


def test_capabilities():
    k = kvm()
    assert k.check_extension(uapi.KVM_CAP_ARM_USER_IRQ) == 1
    assert k.check_extension(uapi.KVM_CAP_ARM_PSCI_0_2) == 1
    assert k.check_extension(9999) == 0


def test_run_before_init_is_enoexec():
    vm = kvm().create_vm()
    vm.set_user_memory_region(0, RAM_BASE, mmap.mmap(-1, 1 << 20))
    vcpu = vm.create_vcpu(0)
    err = expect_errno(errno.ENOEXEC, vcpu.run)
    assert "arm_vcpu_init" in str(err)
    vm.close()


def test_vcpu_and_memory_errors():
    vm = kvm().create_vm()
    expect_errno(errno.EINVAL, vm.create_vcpu, 0)  # no memory yet
    expect_errno(errno.EINVAL, vm.set_user_memory_region, 0, RAM_BASE + 1, mmap.mmap(-1, 4096))
    vm.set_user_memory_region(0, RAM_BASE, mmap.mmap(-1, 1 << 20))
    expect_errno(errno.EEXIST, vm.set_user_memory_region, 1, RAM_BASE + 4096, mmap.mmap(-1, 4096))
    vm.create_vcpu(0)
    expect_errno(errno.EEXIST, vm.create_vcpu, 0)
    expect_errno(errno.EBUSY, vm.set_user_memory_region, 2, 0x80000000, mmap.mmap(-1, 4096))
    vcpu = vm.vcpus[0]
    expect_errno(errno.EINVAL, vcpu.arm_vcpu_init, 3)
    expect_errno(errno.EINVAL, vcpu.arm_vcpu_init, uapi.KVM_ARM_TARGET_GENERIC_V8, 1 << 20)
    vm.close()


def test_irq_line_errors_without_irqchip(vm1):
    vm, vcpu, _ = vm1
    spi = irq_line.encode(uapi.KVM_ARM_IRQ_TYPE_SPI, 0, 40)
    expect_errno(errno.ENXIO, vm.irq_line, spi, 1)
    expect_errno(errno.ENXIO, vm.irq_line, irq_line.encode(uapi.KVM_ARM_IRQ_TYPE_PPI, 0, 20), 1)
    expect_errno(errno.EINVAL, vm.irq_line, irq_line.encode(uapi.KVM_ARM_IRQ_TYPE_CPU, 3, 0), 1)
    expect_errno(errno.EINVAL, vm.irq_line, irq_line.encode(uapi.KVM_ARM_IRQ_TYPE_CPU, 0, 2), 1)
    vm.irq_line(irq_line.encode(uapi.KVM_ARM_IRQ_TYPE_CPU, 0, uapi.KVM_ARM_IRQ_CPU_IRQ), 1)
    assert vcpu.irq_lines == [True, False]


def test_irq_line_encoding_roundtrip():
    irq = irq_line.encode(uapi.KVM_ARM_IRQ_TYPE_PPI, 0x123, 27)
    assert irq == (1 << 28) | (2 << 24) | (0x23 << 16) | 27


def test_one_reg(vm1):
    _vm, vcpu, _ = vm1
    vcpu.set_one_reg(REG_PC_ID, 0x40080000)
    assert vcpu.get_one_reg(REG_PC_ID) == 0x40080000
    vcpu.set_one_reg(core_reg(5), 0x1234)
    assert vcpu.core.get_x(5) == 0x1234
    assert vcpu.get_one_reg(sysreg_id(S.MPIDR_EL1)) == 1 << 31
    assert vcpu.get_one_reg(uapi.KVM_REG_ARM_PSCI_VERSION) == 0x10000
    expect_errno(errno.ENOENT, vcpu.get_one_reg, 0x6030000000139999)


def test_mpidr_layout_matches_kvm():
    vm, vcpus, _ = make_vm(1)
    from softkvm.kvm.arm import reset_mpidr
    assert [reset_mpidr(i) for i in (0, 1, 15, 16, 17)] == [0, 1, 15, 0x100, 0x101]
    vm.close()


def test_immediate_exit_returns_intr(vm1):
    _vm, vcpu, _ = vm1
    vcpu.immediate_exit = True
    run = vcpu.run()
    assert run.exit_reason == uapi.KVM_EXIT_INTR and run.ret == -errno.EINTR


@pytest.mark.parametrize("host_cpus,nr_vcpus,parallel", [(2, 2, True), (4, 2, True), (1, 2, False),
                                                          (2, 1, False)])
def test_the_first_run_chooses_whether_the_vcpus_run_in_parallel(host_cpus, nr_vcpus, parallel):
    """Several vCPUs and host CPUs: each vCPU runs on its own (WFE then traps only when they
    outnumber the CPUs); otherwise they take turns on one physical CPU."""
    vm, vcpus, ram = make_vm(nr_vcpus, host_cpus=host_cpus)
    try:
        load(vm, ram, CODE, POWER_OFF)
        start_at(vcpus[0], CODE)
        assert vcpus[0].run().exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT
        assert isinstance(vm.pcpu, OwnCpus) == parallel
        assert [vcpu.core.parallel for vcpu in vcpus] == [parallel] * nr_vcpus
    finally:
        vm.close()


def test_cores_that_cannot_run_in_parallel_take_turns(monkeypatch):
    """A stock core (no UC_CTL_PARALLEL): exact guest atomics need one core at a time."""
    monkeypatch.setattr(Core, "set_parallel", lambda core, on: not on)
    vm, vcpus, ram = make_vm(2, host_cpus=2)
    try:
        load(vm, ram, CODE, POWER_OFF)
        start_at(vcpus[0], CODE)
        assert vcpus[0].run().exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT
        assert isinstance(vm.pcpu, PhysCpu)
    finally:
        vm.close()
