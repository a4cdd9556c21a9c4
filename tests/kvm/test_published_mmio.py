"""KVM_CAP_SOFTKVM_PUBLISHED_MMIO: loads of a published register read its published value
without an exit to userspace.

Every guest test runs twice: with the core answering the load itself (softkvm's core build), and
with the core unable to (a stock core), where the load exits to the kernel, which answers it.
"""

import errno

import pytest

from softkvm.kvm import published_mmio, uapi
from softkvm.kvm.errors import KvmError
from tests.support.machine import POWER_OFF, run_source, vm_served_by

UART = 0x09000000
FR = UART + 0x18


@pytest.fixture(params=["core", "kernel"])
def publishing_vm(request, monkeypatch):
    parts = vm_served_by(request.param, monkeypatch, "set_published_mmio")
    yield parts
    parts[0].close()


def publish_fr(vm, value):
    register = vm.register_published_mmio(FR, 4)
    register.publish(value)
    return register


def test_the_capability_is_offered(vm1):
    vm, _vcpu, _ram = vm1
    assert vm.check_extension(uapi.KVM_CAP_SOFTKVM_PUBLISHED_MMIO) == 1


def test_loads_read_the_published_value_without_exiting(publishing_vm):
    vm, vcpu, ram, mode = publishing_vm
    publish_fr(vm, 0x1234_5690)
    run = run_source(vm, vcpu, ram, f"""
        ldr x0, ={FR}
        ldr w1, [x0]
        ldrh w2, [x0, #2]
        ldrb w3, [x0, #1]
        ldrsb x4, [x0], #3
        ldur w5, [x0, #1]
    """ + POWER_OFF)
    # the last load lies past the register: it alone exits, to userspace
    assert run.exit_reason == uapi.KVM_EXIT_MMIO
    assert (run.mmio.phys_addr, run.mmio.len, run.mmio.is_write) == (FR + 4, 4, False)
    core = vcpu.core
    assert [core.get_x(n) for n in range(1, 5)] == [0x1234_5690, 0x1234, 0x56,
                                                  0xFFFF_FFFF_FFFF_FF90]
    assert core.get_x(0) == FR + 3  # the post-index writeback of a served load
    stats = vcpu.read_stats().kvm
    assert stats["mmio_exit_user"] == 1
    assert stats["mmio_exit_kernel"] == (4 if mode == "kernel" else 0)
    assert vm.read_stats().softkvm["published_mmio_reads"] == 4
    assert vcpu.run().exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT


def test_a_new_value_is_read_from_the_next_load_on(publishing_vm):
    vm, vcpu, ram, _mode = publishing_vm
    fr = publish_fr(vm, 0x90)
    run = run_source(vm, vcpu, ram, f"""
        ldr x0, ={FR}
        ldr w1, [x0]
        str w1, [x0]
        ldr w2, [x0]
    """ + POWER_OFF)
    assert run.exit_reason == uapi.KVM_EXIT_MMIO and run.mmio.is_write  # stores still exit
    assert (run.mmio.phys_addr, int.from_bytes(run.mmio.data[:4], "little")) == (FR, 0x90)
    fr.publish(0x80)  # the VMM's device changed while it handled the store
    assert vcpu.run().exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT
    assert (vcpu.core.get_x(1), vcpu.core.get_x(2)) == (0x90, 0x80)


def test_an_unregistered_register_exits_again(publishing_vm):
    vm, vcpu, ram, _mode = publishing_vm
    vm.unregister_published_mmio(publish_fr(vm, 0x90))
    run = run_source(vm, vcpu, ram, f"ldr x0, ={FR}\n ldr w1, [x0]\n" + POWER_OFF)
    assert run.exit_reason == uapi.KVM_EXIT_MMIO and run.mmio.phys_addr == FR
    assert vm.read_stats().softkvm["published_mmio_reads"] == 0


def test_every_vcpu_reads_the_same_register(publishing_vm):
    vm, _vcpu, ram, _mode = publishing_vm
    publish_fr(vm, 0x42)
    second = vm.vcpus[1]
    run = run_source(vm, second, ram, f"ldr x0, ={FR}\n ldr w1, [x0]\n" + POWER_OFF)
    assert run.exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT and second.core.get_x(1) == 0x42


@pytest.mark.parametrize("addr,size,code", [
    (FR, 0, errno.EINVAL),
    (FR, 9, errno.EINVAL),
    (0xFFFFFFFFFFFFFFFC, 8, errno.EINVAL),
    (FR + 2, 4, errno.EEXIST),
])
def test_bad_registers_are_refused(vm1, addr, size, code):
    vm, _vcpu, _ram = vm1
    vm.register_published_mmio(FR, 4)
    with pytest.raises(KvmError) as info:
        vm.register_published_mmio(addr, size)
    assert info.value.errno == code
    assert [(r.addr, r.size) for r in vm.published_mmio.registers] == [(FR, 4)]


def test_unregistering_twice_is_refused(vm1):
    vm, _vcpu, _ram = vm1
    fr = vm.register_published_mmio(FR, 4)
    vm.unregister_published_mmio(fr)
    with pytest.raises(KvmError) as info:
        vm.unregister_published_mmio(fr)
    assert info.value.errno == errno.ENOENT


def test_registers_beyond_the_limit_are_refused(vm1, monkeypatch):
    monkeypatch.setattr(published_mmio, "MAX_REGISTERS", 2)
    vm, _vcpu, _ram = vm1
    vm.register_published_mmio(FR, 4)
    vm.register_published_mmio(FR + 4, 4)
    with pytest.raises(KvmError) as info:
        vm.register_published_mmio(FR + 8, 4)
    assert info.value.errno == errno.ENOSPC


# --- banked registers: one vCPU's own, withdrawn until published ---------------------------------

IAR = 0x0801000C
DONE = IAR + 8
# The result leaves through a store (an MMIO exit): powering off would stop every vCPU.
READ_IAR = f"ldr x0, ={IAR}\n ldr w1, [x0]\n str w1, [x0, #8]"


def served(run) -> bool:
    """The IAR load was answered in the kernel or core: the run exits at the store after it."""
    return run.exit_reason == uapi.KVM_EXIT_MMIO and run.mmio.phys_addr == DONE


def test_a_banked_register_is_read_by_its_vcpu_only(publishing_vm):
    vm, first, ram, _mode = publishing_vm
    second = vm.vcpus[1]
    first.register_published_mmio(IAR, 4).publish(1023)
    assert served(run_source(vm, first, ram, READ_IAR)) and first.core.get_x(1) == 1023
    run = run_source(vm, second, ram, READ_IAR)   # not its register: the load exits
    assert run.exit_reason == uapi.KVM_EXIT_MMIO and run.mmio.phys_addr == IAR


def test_a_banked_register_starts_withdrawn_and_toggles(publishing_vm):
    vm, vcpu, ram, _mode = publishing_vm
    iar = vcpu.register_published_mmio(IAR, 4)
    assert not iar.live
    run = run_source(vm, vcpu, ram, READ_IAR)     # withdrawn: the load exits
    assert run.exit_reason == uapi.KVM_EXIT_MMIO and run.mmio.phys_addr == IAR
    iar.publish(1023)
    iar.withdraw()
    run = run_source(vm, vcpu, ram, READ_IAR)
    assert run.exit_reason == uapi.KVM_EXIT_MMIO and run.mmio.phys_addr == IAR
    reads = vm.read_stats().softkvm["published_mmio_reads"]
    iar.publish(1022)
    assert served(run_source(vm, vcpu, ram, READ_IAR)) and vcpu.core.get_x(1) == 1022
    assert vm.read_stats().softkvm["published_mmio_reads"] == reads + 1


def test_banked_registers_share_an_address_but_not_with_the_vm(publishing_vm):
    vm, vcpu, _ram, _mode = publishing_vm
    vcpu.register_published_mmio(IAR, 4)
    vm.vcpus[1].register_published_mmio(IAR, 4)     # another vCPU's bank: allowed
    for register in (lambda: vcpu.register_published_mmio(IAR, 4),
                     lambda: vm.register_published_mmio(IAR, 4)):
        with pytest.raises(KvmError) as info:
            register()
        assert info.value.errno == errno.EEXIST


def test_toggling_reuses_the_two_tables(publishing_vm):
    vm, vcpu, _ram, _mode = publishing_vm
    iar = vcpu.register_published_mmio(IAR, 4)
    for _ in range(100):
        iar.publish(1023)
        iar.withdraw()
    assert len(vm.published_mmio._tables) <= 2 * len(vm.vcpus) + 2
