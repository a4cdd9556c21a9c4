"""PSCI handled in the kernel: table tests of every function and its edge cases."""

import pytest

from softkvm.arch import psci as P
from softkvm.kvm import psci, uapi
from tests.support.machine import make_vm

M64 = 0xFFFFFFFFFFFFFFFF


@pytest.fixture
def vm4():
    vm, vcpus, _ram = make_vm(4)
    for vcpu in vcpus[1:]:
        vcpu.power_off = True
    yield vm, vcpus
    vm.close()


def call(vcpu, fn, *args):
    core = vcpu.core
    core.set_x(0, fn)
    for n, value in enumerate(args, start=1):
        core.set_x(n, value)
    ret = psci.kvm_smccc_call_handler(vcpu)
    value = core.get_x(0)
    return ret, value - (1 << 64) if value >> 63 else value


@pytest.mark.parametrize("fn,expected", [
    (P.PSCI_VERSION, P.VERSION_1_0),
    (P.MIGRATE_INFO_TYPE, P.MIGRATE_INFO_TYPE_MP),
    (P.SMCCC_VERSION, P.SMCCC_VERSION_1_1),
    (0x8400001F, P.NOT_SUPPORTED),
    (P.SYSTEM_RESET2_64, P.NOT_SUPPORTED),  # PSCI 1.1 only
    (P.MIGRATE, P.NOT_SUPPORTED),
    (0xC5000000, P.NOT_SUPPORTED),
])
def test_simple_calls(vm4, fn, expected):
    _vm, vcpus = vm4
    assert call(vcpus[0], fn) == (1, expected)


@pytest.mark.parametrize("feature,expected", [
    (P.PSCI_VERSION, 0), (P.CPU_ON_64, 0), (P.CPU_ON_32, 0), (P.CPU_OFF, 0),
    (P.AFFINITY_INFO_64, 0), (P.SYSTEM_OFF, 0), (P.SYSTEM_RESET, 0), (P.PSCI_FEATURES, 0),
    (P.CPU_SUSPEND_64, 0), (P.MIGRATE_INFO_TYPE, 0), (P.SMCCC_VERSION, 0),
    (P.SYSTEM_RESET2_64, P.NOT_SUPPORTED), (0x8400001F, P.NOT_SUPPORTED), (P.MIGRATE, P.NOT_SUPPORTED),
])
def test_features(vm4, feature, expected):
    _vm, vcpus = vm4
    assert call(vcpus[0], P.PSCI_FEATURES, feature) == (1, expected)


def test_results_clear_x1_to_x3(vm4):
    _vm, vcpus = vm4
    call(vcpus[0], P.PSCI_VERSION, 11, 22, 33)
    assert [vcpus[0].core.get_x(n) for n in (1, 2, 3)] == [0, 0, 0]


def test_cpu_on_then_already_on(vm4):
    _vm, vcpus = vm4
    assert call(vcpus[0], P.CPU_ON_64, 1, 0x40080000, 0x55) == (1, P.SUCCESS)
    assert vcpus[1].power_off is False and vcpus[1].reset_state == (0x40080000, 0x55)
    assert "VCPU_RESET" in vcpus[1].requests
    assert call(vcpus[0], P.CPU_ON_64, 1, 0x40080000, 0) == (1, P.ALREADY_ON)
    assert call(vcpus[0], P.CPU_ON_64, 0, 0x40080000, 0) == (1, P.ALREADY_ON)  # itself


@pytest.mark.parametrize("mpidr", [0x7, 0xFF, 1 << 40, 0x100 | 1, 1 << 31 | 1])
def test_cpu_on_invalid_target(vm4, mpidr):
    _vm, vcpus = vm4
    assert call(vcpus[0], P.CPU_ON_64, mpidr, 0x40080000, 0) == (1, P.INVALID_PARAMETERS)


def test_cpu_on_32bit_truncates_arguments(vm4):
    _vm, vcpus = vm4
    assert call(vcpus[0], P.CPU_ON_32, (1 << 32) | 2, (1 << 32) | 0x40080000, (1 << 40) | 9) == (1, 0)
    assert vcpus[2].reset_state == (0x40080000, 9)


@pytest.mark.parametrize("affinity,level,expected", [
    (0, 0, P.AFFINITY_ON), (1, 0, P.AFFINITY_OFF), (3, 0, P.AFFINITY_OFF), (4, 0, P.INVALID_PARAMETERS),
    (3, 1, P.AFFINITY_ON),  # cluster 0 has CPU 0 on
    (0x100, 1, P.INVALID_PARAMETERS), (0x10000, 2, P.INVALID_PARAMETERS),
    (0xFF, 2, P.AFFINITY_ON), (0, 3, P.AFFINITY_ON), (0, 4, P.INVALID_PARAMETERS),
])
def test_affinity_info(vm4, affinity, level, expected):
    _vm, vcpus = vm4
    assert call(vcpus[0], P.AFFINITY_INFO_64, affinity, level) == (1, expected)


def test_cpu_off_sleeps_the_caller(vm4):
    _vm, vcpus = vm4
    vcpus[1].power_off = False
    assert psci.kvm_smccc_call_handler.__name__  # the handler returns to the run loop
    ret, _ = call(vcpus[1], P.CPU_OFF)
    assert ret == 1 and vcpus[1].power_off and "SLEEP" in vcpus[1].requests
    assert call(vcpus[0], P.AFFINITY_INFO_64, 1, 0) == (1, P.AFFINITY_OFF)


@pytest.mark.parametrize("fn,event", [(P.SYSTEM_OFF, uapi.KVM_SYSTEM_EVENT_SHUTDOWN),
                                      (P.SYSTEM_RESET, uapi.KVM_SYSTEM_EVENT_RESET)])
def test_system_events(vm4, fn, event):
    _vm, vcpus = vm4
    ret, x0 = call(vcpus[0], fn)
    run = vcpus[0].run_struct
    assert ret == 0 and run.exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT
    assert run.system_event.type == event and run.system_event.ndata == 1
    assert x0 == P.INTERNAL_FAILURE  # what the guest sees if userspace resumes it
    assert all(v.power_off for v in vcpus)


def test_psci_0_1_without_the_feature():
    vm, vcpus, _ram = make_vm(2)
    try:
        for vcpu in vcpus:
            vcpu.features = 0
        vcpus[1].power_off = True
        assert call(vcpus[0], P.PSCI_VERSION) == (1, P.NOT_SUPPORTED)
        assert call(vcpus[0], P.PSCI_0_1_CPU_ON, 1, 0x40080000, 0) == (1, P.SUCCESS)
        assert call(vcpus[0], P.PSCI_0_1_CPU_ON, 1, 0x40080000, 0) == (1, P.INVALID_PARAMETERS)
    finally:
        vm.close()
