"""KVM's stat names and where they are counted: the two groups, the stats read, the run loop."""

import threading
from dataclasses import fields

import pytest
from unicorn import arm64_const as A

from softkvm.arch import esr as E
from softkvm.kvm import irq_line, stats, uapi
from softkvm.kvm.stats import VcpuStats, VmStats
from tests.kvm.test_irqfd import REPORT, V2, V3, make_gic_vm
from tests.kvm.test_trace import sgi_guest
from tests.support.machine import (CODE, POWER_OFF, VBAR, VECTORS, load, make_vm, run_source,
                                   start_at)

# include/linux/kvm_host.h KVM_GENERIC_VCPU_STATS (histograms aside) + arm64/kvm/guest.c
KVM_ARM64_VCPU_NAMES = [
    "halt_successful_poll", "halt_attempted_poll", "halt_poll_invalid", "halt_wakeup",
    "halt_poll_success_ns", "halt_poll_fail_ns", "halt_wait_ns", "blocking",
    "hvc_exit_stat", "wfe_exit_stat", "wfi_exit_stat", "mmio_exit_user", "mmio_exit_kernel",
    "signal_exits", "exits"]
KVM_VM_NAMES = ["remote_tlb_flush", "remote_tlb_flush_requests"]


def test_kvm_names_are_kvms_and_the_groups_split_every_counter():
    assert list(stats.KVM_VCPU_STATS) == KVM_ARM64_VCPU_NAMES
    assert list(stats.KVM_VM_STATS) == KVM_VM_NAMES
    vcpu_fields = [f.name for f in fields(VcpuStats)]
    assert vcpu_fields == [*stats.KVM_VCPU_STATS, *stats.SOFTKVM_VCPU_COUNTERS]
    assert not set(stats.SOFTKVM_VCPU_STATS) & set(stats.KVM_VCPU_STATS)
    assert [f.name for f in fields(VmStats)][:2] == KVM_VM_NAMES
    assert {name for _, name in stats.EXIT_REASONS} <= set(vcpu_fields)


def test_counters_are_plain_ints_on_a_slotted_class():
    counters = VcpuStats()
    assert not hasattr(counters, "__dict__")
    assert all(type(value) is int for value in counters.as_dict().values())


def test_read_merges_the_cores_counters_and_names_exception_classes():
    counters = VcpuStats(exits=5, hvc_exit_stat=2, irq_exits=3, psci_calls=2)
    core = {"core_slices": 5, "core_kicks": 3, "sysreg_emulated": 7, "timer_sysreg_accesses": 1}
    read = stats.read_vcpu_stats(counters, core, {E.EC_SVC64: 4, E.EC_DABT_CUR: 1, 0x3F: 2})
    assert list(read.kvm) == KVM_ARM64_VCPU_NAMES and read.kvm["exits"] == 5
    assert list(read.softkvm) == list(stats.SOFTKVM_VCPU_STATS)
    assert read.softkvm["core_slices"] == 5 and read.softkvm["exceptions_reflected"] == 7
    assert read.reflected_by_ec == {"SVC64": 4, "DABT_CUR": 1, "EC_0x3f": 2}
    assert read.exits_by_reason["HVC64"] == 2 and read.exits_by_reason["IRQ (kick)"] == 3
    assert sum(read.exits_by_reason.values()) == read.kvm["exits"]


def test_vm_read():
    read = stats.read_vm_stats(VmStats(remote_tlb_flush=1, remote_tlb_flush_requests=1,
                                       remote_tb_flush=2, remote_tb_page_flush=7),
                               {"pcpu_switches": 9, "published_mmio_reads": 11,
                                "remote_tb_page_flush": 1, "remote_tlb_page_flush": 5})
    assert read.kvm == {"remote_tlb_flush": 1, "remote_tlb_flush_requests": 1}
    assert read.softkvm == {"remote_tlb_page_flush": 5, "remote_tb_flush": 2,
                            "remote_tb_page_flush": 8, "pcpu_switches": 9,
                            "published_mmio_reads": 11}


# --- counted where KVM counts them ------------------------------------------------------------


def _guest(vm, vcpu, ram, source):
    load(vm, ram, VBAR, VECTORS)
    vcpu.core.raw.write(A.UC_ARM64_REG_VBAR_EL1, VBAR)
    load(vm, ram, CODE, source)
    start_at(vcpu, CODE)


def test_hvc_mmio_and_exits_add_up(vm1):
    vm, vcpu, ram = vm1
    _guest(vm, vcpu, ram, "ldr x0, =0x84000000\n hvc #0\n ldr x1, =0x09000000\n str wzr, [x1]"
           + POWER_OFF)
    assert vcpu.run().exit_reason == uapi.KVM_EXIT_MMIO
    assert vcpu.run().exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT
    read = vcpu.read_stats()
    assert read.kvm["hvc_exit_stat"] == 2 and read.kvm["mmio_exit_user"] == 1
    assert read.softkvm["psci_calls"] == 2
    assert sum(read.exits_by_reason.values()) == read.kvm["exits"] >= 3


def test_wfi_sleep_counts_a_wakeup_and_its_time(vm1):
    vm, vcpu, ram = vm1
    _guest(vm, vcpu, ram, "wfi" + POWER_OFF)
    seen_blocking = []

    def wake():
        while not vcpu.blocked:
            threading.Event().wait(0.01)
        seen_blocking.append(vcpu.stats.blocking)
        vm.irq_line(irq_line.encode(uapi.KVM_ARM_IRQ_TYPE_CPU, 0, uapi.KVM_ARM_IRQ_CPU_IRQ), 1)

    threading.Thread(target=wake).start()
    assert vcpu.run().exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT
    assert seen_blocking == [1] and vcpu.stats.blocking == 0
    assert vcpu.stats.wfi_exit_stat == 1 and vcpu.stats.halt_wakeup == 1
    assert vcpu.stats.halt_wait_ns > 0
    assert vcpu.stats.halt_attempted_poll == vcpu.stats.halt_successful_poll == 0  # no polling


def test_immediate_exit_is_no_signal_exit_but_a_signal_is(vm1):
    vm, vcpu, ram = vm1
    _guest(vm, vcpu, ram, "1: b 1b")
    vcpu.immediate_exit = True
    assert vcpu.run().exit_reason == uapi.KVM_EXIT_INTR and vcpu.stats.signal_exits == 0
    vcpu.immediate_exit = False
    vcpu.interrupt()
    assert vcpu.run().exit_reason == uapi.KVM_EXIT_INTR and vcpu.stats.signal_exits == 1


TLBI_BY_VA = "mov x1, #0x80000\n tlbi vae1is, x1\n"


@pytest.mark.parametrize("host_cpus", [1, 3])
@pytest.mark.parametrize("ops, by_va", [("tlbi vmalle1is\n", 0), (TLBI_BY_VA, 1),
                                        (TLBI_BY_VA * 65, 65)])
def test_a_broadcast_tlbi_is_one_remote_flush_request(host_cpus, ops, by_va):
    """Counted once whether the vCPUs take turns (the others flush before they next run) or
    run in parallel (their cores are flushed at the DSB). In parallel, up to 64 TLBI by VA
    before one DSB are replayed by the others instead; one more flushes them whole."""
    vm, vcpus, ram = make_vm(3, host_cpus=host_cpus)
    try:
        a = vcpus[0]
        load(vm, ram, CODE, ops + "dsb ish\n isb" + POWER_OFF)
        start_at(a, CODE)
        assert a.run().exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT
        read = vm.read_stats()
        replayed = by_va if host_cpus > 1 and by_va <= 64 else 0
        flushes = 0 if replayed else 1
        assert read.kvm == {"remote_tlb_flush": flushes, "remote_tlb_flush_requests": flushes}
        assert read.softkvm["remote_tlb_page_flush"] == replayed
        assert vcpus[1].pending_tlb_flush == vcpus[2].pending_tlb_flush == (host_cpus == 1)
    finally:
        vm.close()


def test_stats_read_while_the_vcpu_runs(vm1):
    vm, vcpu, ram = vm1
    _guest(vm, vcpu, ram, "1: ldr x0, =0x84000000\n hvc #0\n b 1b")
    reads = []

    def reader():
        for _ in range(50):
            reads.append(vcpu.read_stats().kvm["exits"])
        vcpu.interrupt()

    thread = threading.Thread(target=reader)
    thread.start()
    assert vcpu.run().exit_reason == uapi.KVM_EXIT_INTR
    thread.join()
    assert reads == sorted(reads)  # monotonic, never torn


@pytest.mark.parametrize("model", [V2, V3])
def test_an_sgi_to_self_costs_one_kick_its_ack_none(model):
    """Sending raises the vIRQ line: one kick, for the core to see it. The acknowledge lowers
    it, which the core sees at once (on hardware neither edge is an exit at all)."""
    vm, vcpu, ram, _dev = make_gic_vm(model)
    try:
        run = run_source(vm, vcpu, ram, sgi_guest(model))
        assert run.exit_reason == uapi.KVM_EXIT_MMIO and run.mmio.phys_addr == REPORT + 4
        assert run.mmio.data[0] == 1
        assert vcpu.read_stats().softkvm["irq_exits"] == 1
    finally:
        vm.close()
