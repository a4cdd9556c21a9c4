"""The run loop: MMIO exits and their completion, external aborts, WFI blocking, signals."""

import threading
import time

import pytest
from unicorn import arm64_const as A

from softkvm.arch import esr as E
from softkvm.arch import sysregs as S
from softkvm.kvm import irq_line, uapi
from tests.support.machine import (CODE, POWER_OFF, RAM_BASE, RAM_SIZE, VBAR, VECTORS, load,
                                   make_vm, run_source, start_at)


@pytest.fixture
def guest(vm1):
    vm, vcpu, ram = vm1
    load(vm, ram, VBAR, VECTORS)
    vcpu.core.raw.write(A.UC_ARM64_REG_VBAR_EL1, VBAR)
    return vm, vcpu, ram




def test_mmio_read_completes_with_sign_extension_and_writeback(guest):
    _vm, vcpu, _ = guest
    run = run_source(*guest, "ldr x1, =0x09000010\n ldrsh x2, [x1], #2\n" + POWER_OFF)
    assert run.exit_reason == uapi.KVM_EXIT_MMIO
    assert (run.mmio.phys_addr, run.mmio.len, run.mmio.is_write) == (0x09000010, 2, False)
    run.mmio.data[:2] = (0x8001).to_bytes(2, "little")
    run = vcpu.run()  # completes the load, then the guest powers off
    assert run.exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT
    assert vcpu.core.get_x(2) == 0xFFFFFFFFFFFF8001
    assert vcpu.core.get_x(1) == 0x09000012
    assert vcpu.stats.mmio_exit_user == 1


def test_mmio_write_data(guest):
    run = run_source(*guest, "ldr x1, =0x09000000\n ldr x2, =0x1122334455667788\n str w2, [x1, #4]")
    assert run.exit_reason == uapi.KVM_EXIT_MMIO and run.mmio.is_write
    assert (run.mmio.phys_addr, run.mmio.len) == (0x09000004, 4)
    assert bytes(run.mmio.data[:4]) == (0x55667788).to_bytes(4, "little")


def test_unclaimed_mmio_gets_a_synchronous_external_abort(guest):
    _vm, vcpu, _ = guest
    end = RAM_BASE + RAM_SIZE
    run = run_source(*guest, f"ldr x1, ={end}\n ldr x2, [x1]\n" + POWER_OFF)
    assert run.exit_reason == uapi.KVM_EXIT_MMIO and run.mmio.phys_addr == end
    vcpu.set_vcpu_events(ext_dabt_pending=True)
    threading.Timer(0.3, vcpu.interrupt).start()
    run = vcpu.run()  # the abort is taken; the guest parks in its vector
    assert run.exit_reason == uapi.KVM_EXIT_INTR
    core = vcpu.core
    esr = core.raw.read(A.UC_ARM64_REG_ESR_EL1)
    assert E.esr_ec(esr) == E.EC_DABT_CUR and esr & 0x3F == E.FSC_SEA
    assert not esr & E.ISS_WNR and not esr & E.ISS_FNV
    assert core.raw.read(A.UC_ARM64_REG_FAR_EL1) == end
    assert core.raw.read(A.UC_ARM64_REG_ELR_EL1) == CODE + 4  # the load itself


def test_instruction_fetch_outside_ram_is_a_prefetch_abort(guest):
    _vm, vcpu, _ = guest
    end = RAM_BASE + RAM_SIZE
    load_src = f"ldr x1, ={end}\n br x1"
    threading.Timer(0.5, vcpu.interrupt).start()
    run_source(*guest, load_src)
    core = vcpu.core
    esr = core.raw.read(A.UC_ARM64_REG_ESR_EL1)
    assert E.esr_ec(esr) == E.EC_IABT_CUR and esr & 0x3F == E.FSC_SEA
    assert core.raw.read(A.UC_ARM64_REG_ELR_EL1) == end
    assert core.raw.read(A.UC_ARM64_REG_FAR_EL1) == end


def test_wfi_blocks_until_the_irq_line_rises(guest):
    vm, vcpu, _ = guest
    raised = []

    def raise_line():
        # Only once the vCPU sleeps in WFI: a slow start must not find the line already high.
        deadline = time.monotonic() + 30
        while not vcpu.blocked and time.monotonic() < deadline:
            time.sleep(0.005)
        raised.append(time.monotonic())
        vm.irq_line(irq_line.encode(uapi.KVM_ARM_IRQ_TYPE_CPU, 0, uapi.KVM_ARM_IRQ_CPU_IRQ), 1)

    threading.Thread(target=raise_line).start()
    # IRQs stay masked: WFI still wakes on a pending interrupt, and execution goes on after it.
    run = run_source(*guest, "wfi\n ldr x1, =0x09000000\n str wzr, [x1]")
    assert raised and run.exit_reason == uapi.KVM_EXIT_MMIO
    assert vcpu.stats.wfi_exit_stat == 1 and vcpu.stats.halt_wakeup == 1


def test_irq_taken_through_the_vector_when_unmasked(guest):
    vm, vcpu, _ = guest
    vm.irq_line(irq_line.encode(uapi.KVM_ARM_IRQ_TYPE_CPU, 0, uapi.KVM_ARM_IRQ_CPU_IRQ), 1)
    threading.Timer(0.5, vcpu.interrupt).start()
    run_source(*guest, "msr daifclr, #2\n 1: b 1b")
    # the core delivered the IRQ itself: ELR is the loop, PC parked in the IRQ vector's hvc
    assert vcpu.core.raw.read(A.UC_ARM64_REG_ELR_EL1) == CODE + 4


def test_interrupt_ends_a_spinning_run(guest):
    _vm, vcpu, _ = guest
    threading.Timer(0.2, vcpu.interrupt).start()
    run = run_source(*guest, "1: b 1b")
    assert run.exit_reason == uapi.KVM_EXIT_INTR and vcpu.stats.signal_exits == 1


def test_fiq_line_is_taken_through_the_fiq_vector(guest):
    vm, vcpu, _ = guest
    vm.irq_line(irq_line.encode(uapi.KVM_ARM_IRQ_TYPE_CPU, 0, uapi.KVM_ARM_IRQ_CPU_FIQ), 1)
    threading.Timer(0.5, vcpu.interrupt).start()
    run_source(*guest, "msr daifclr, #1\n 1: b 1b")
    assert vcpu.core.get_pc() == VBAR + 0x200 + 0x100 + 4  # FIQ, current EL with SP_ELx; parked


# Level-1 tables, 4K granule, 39-bit VA, TTBR1 walks off. Each 1 GiB slot maps all of RAM:
# slot 1 at its own address (executable), slot 2 as data only (PXN, UXN, as Linux's linear
# map), slot 3 as code at another address.
TCR_39BIT = 25 | 1 << 8 | 1 << 10 | 3 << 12 | 1 << 23
BLOCK = 1 << 10 | 3 << 8 | 1  # AF, inner shareable, MAIR attr 0, 1 GiB block
XN = 1 << 53 | 1 << 54
PAGE = 1 << 10 | 3 << 8 | 3  # AF, inner shareable, MAIR attr 0, 4 KiB page descriptor
SLOTS = {1: RAM_BASE | BLOCK, 2: RAM_BASE | BLOCK | XN, 3: RAM_BASE | BLOCK}


def _put64(ram, gpa: int, value: int) -> None:
    """Store a 64-bit value in guest RAM behind the cores' backs (no notify)."""
    ram[gpa - RAM_BASE: gpa - RAM_BASE + 8] = value.to_bytes(8, "little")


def _table(vm, ram, table: int, slots: tuple[int, ...]) -> None:
    for index in slots:
        _put64(ram, table + 8 * index, SLOTS[index])
    vm.notify_memory_written()


def _mmu_on(table: int) -> str:
    return (f"ldr x0, =0xff\n msr mair_el1, x0\n ldr x0, ={TCR_39BIT}\n msr tcr_el1, x0\n"
            f"ldr x0, ={table}\n msr ttbr0_el1, x0\n isb\n"
            "mrs x0, sctlr_el1\n orr x0, x0, #1\n msr sctlr_el1, x0\n isb\n")


def _slot(pa: int, slot: int) -> int:
    return pa - RAM_BASE + (slot << 30)


@pytest.mark.parametrize("host_cpus", [1, 2])
def test_ic_ivau_through_a_data_alias_drops_just_that_page_on_the_other_vcpus(host_cpus):
    """IC IVAU names code by any VA of it (Linux uses the non-executable linear map), and the
    other vCPU may map that page elsewhere or not at all: it still drops its translations of
    that physical page, and only of it, whether it takes turns with the writer or not."""
    vm, vcpus, ram = make_vm(2, host_cpus=host_cpus)
    try:
        a, b = vcpus
        boot, code_only = RAM_BASE + 0xA0000, RAM_BASE + 0xA1000
        _table(vm, ram, boot, (1, 2, 3))
        _table(vm, ram, code_only, (3,))  # B ends up here: no VA of its own is the page's PA
        routine, other, entry = RAM_BASE + 0x90000, RAM_BASE + 0x92000, CODE + 0x800
        load(vm, ram, routine, "mov x0, #1\n ret")
        load(vm, ram, other, "mov x0, #5\n ret")
        load(vm, ram, CODE, _mmu_on(boot) + f"ldr x9, ={_slot(entry, 3)}\n br x9")
        load(vm, ram, entry, f"ldr x0, ={code_only}\n msr ttbr0_el1, x0\n tlbi vmalle1\n"
             f"dsb ish\n isb\n ldr x9, ={_slot(routine, 3)}\n blr x9\n mov x20, x0\n"
             f"ldr x9, ={_slot(other, 3)}\n blr x9\n mov x21, x0\n" + POWER_OFF)
        start_at(b, CODE)
        assert b.run().exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT
        assert (b.core.get_x(20), b.core.get_x(21)) == (1, 5)
        writer = CODE + 0x1000
        load(vm, ram, writer, _mmu_on(boot) + f"ldr x1, ={_slot(routine, 2)}\n"
             f"ldr w2, ={0xD2800040}\n str w2, [x1]\n"  # mov x0, #2
             "dc cvau, x1\n dsb ish\n ic ivau, x1\n dsb ish\n isb\n" + POWER_OFF)
        b.pending_tb_flush = False  # the host's loads above flushed everyone: only IC may now
        a.power_off = False
        start_at(a, writer)
        assert a.run().exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT
        if host_cpus == 1:  # taking turns: B drops the page before it next runs
            assert not b.pending_tb_flush and b.pending_code == {routine}
        flushes = vm.read_stats().softkvm
        assert (flushes["remote_tb_flush"], flushes["remote_tb_page_flush"]) == (0, 1)
        # Behind the cores' backs (mov x0, #6): B keeps running its translation of that page.
        ram[other - RAM_BASE: other - RAM_BASE + 4] = (0xD28000C0).to_bytes(4, "little")
        b.power_off = False
        start_at(b, _slot(entry, 3))
        assert b.run().exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT
        assert (b.core.get_x(20), b.core.get_x(21)) == (2, 5)
        assert b.core.raw.cpr_read(*S.SCTLR_EL1) & S.SCTLR_M  # its MMU is back on
    finally:
        vm.close()


def _pages_table(vm, ram, l1: int, pages: dict[int, int]) -> None:
    """L1 at ``l1``: slot 1 maps RAM at its own address (1 GiB block); slot 2 goes through an L2
    and an L3 table (the next two pages) to 4 KiB pages, page i of slot 2 -> ``pages[i]``."""
    l2, l3 = l1 + 0x1000, l1 + 0x2000
    entries = {l1 + 8: SLOTS[1], l1 + 16: l2 | 3, l2: l3 | 3}
    entries.update({l3 + 8 * i: pa | PAGE for i, pa in pages.items()})
    for at, value in entries.items():
        _put64(ram, at, value)
    vm.notify_memory_written()


def test_tlbi_vae1_drops_only_that_page(guest):
    """The core's TLB works in the guest's 4 KiB pages: a TLBI by VA drops that page alone. (With
    Unicorn's default 1 KiB target page every guest page was a "large page", and any TLBI by VA
    emptied the TLB.)"""
    vm, vcpu, ram = guest
    l1, p_va, q_va = RAM_BASE + 0xA0000, 2 << 30, (2 << 30) + 0x1000
    old_q, new_q = RAM_BASE + 0xB0000, RAM_BASE + 0xB1000
    _put64(ram, old_q, 33)
    _put64(ram, new_q, 44)
    _pages_table(vm, ram, l1, {0: old_q, 1: old_q})
    reader, flush = CODE + 0x800, {p_va: CODE + 0x1000, q_va: CODE + 0x1800}
    load(vm, ram, CODE, _mmu_on(l1) + f"ldr x9, ={reader}\n br x9")
    load(vm, ram, reader, f"ldr x1, ={q_va}\n ldr x21, [x1]\n" + POWER_OFF)
    for va, at in flush.items():
        load(vm, ram, at, f"ldr x1, ={va >> 12}\n tlbi vae1, x1\n dsb nsh\n isb\n"
             f"ldr x9, ={reader}\n br x9")
    start_at(vcpu, CODE)
    assert vcpu.run().exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT and vcpu.core.get_x(21) == 33
    q_pte = l1 + 0x2000 + 8  # changed behind the TLB's back, then P's translation dropped
    _put64(ram, q_pte, new_q | PAGE)
    for va, value in ((p_va, 33), (q_va, 44)):
        vcpu.power_off = False
        start_at(vcpu, flush[va])
        assert vcpu.run().exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT
        assert vcpu.core.get_x(21) == value


@pytest.mark.parametrize("host_cpus", [1, 2])
def test_tlbi_vae1is_drops_that_page_from_the_other_vcpus_tlbs(host_cpus):
    """A's TLBI VAE1IS reaches B's TLB before A's DSB completes. Running in parallel, B replays
    it and drops that page only; taking turns, B flushes its whole TLB before it next runs."""
    vm, vcpus, ram = make_vm(2, host_cpus=host_cpus)
    try:
        a, b = vcpus
        l1, p_va, q_va = RAM_BASE + 0xA0000, 2 << 30, (2 << 30) + 0x1000
        old_p, new_p, old_q, new_q = (RAM_BASE + 0xB0000 + 0x1000 * i for i in range(4))
        for pa, value in ((old_p, 11), (new_p, 22), (old_q, 33), (new_q, 44)):
            _put64(ram, pa, value)
        _pages_table(vm, ram, l1, {0: old_p, 1: old_q})
        reader = CODE + 0x800  # entered again later with the MMU on, its TLB as it was left
        load(vm, ram, CODE, _mmu_on(l1) + f"ldr x9, ={reader}\n br x9")
        load(vm, ram, reader, f"ldr x1, ={p_va}\n ldr x20, [x1]\n ldr x1, ={q_va}\n"
             "ldr x21, [x1]\n" + POWER_OFF)
        writer, l3 = CODE + 0x1000, l1 + 0x2000
        load(vm, ram, writer, f"ldr x1, ={l3}\n ldr x2, ={new_p | PAGE}\n str x2, [x1]\n"
             f"ldr x2, ={new_q | PAGE}\n str x2, [x1, #8]\n dsb ishst\n"
             f"ldr x1, ={p_va >> 12}\n tlbi vae1is, x1\n dsb ish\n isb\n" + POWER_OFF)
        b.pending_tlb_flush = False  # the host's loads above flushed everyone
        start_at(b, CODE)
        assert b.run().exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT
        assert (b.core.get_x(20), b.core.get_x(21)) == (11, 33)
        a.power_off = False
        start_at(a, writer)  # MMU off: it writes the tables at their physical address
        assert a.run().exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT
        stats = vm.read_stats()
        parallel = host_cpus == 2
        assert (stats.kvm["remote_tlb_flush"], stats.softkvm["remote_tlb_page_flush"]) == \
            ((0, 1) if parallel else (1, 0))
        assert b.pending_tlb_flush == (not parallel)
        b.power_off = False
        start_at(b, reader)
        assert b.run().exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT
        # Q changed without a TLBI of its own: B may go on using its old translation of it, and
        # does when only P's was dropped.
        assert (b.core.get_x(20), b.core.get_x(21)) == ((22, 33) if parallel else (22, 44))
    finally:
        vm.close()


@pytest.mark.parametrize("host_cpus", [1, 2])
def test_code_written_by_one_vcpu_is_seen_by_another_after_ic_ialluis(host_cpus):
    """Translated code is per core: IC IALLUIS on one vCPU must flush the others' translations."""
    vm, vcpus, ram = make_vm(2, host_cpus=host_cpus)
    try:
        a, b = vcpus
        # B runs a routine that reports 1, then A rewrites it to report 2 and broadcasts IC.
        routine = RAM_BASE + 0x90000
        load(vm, ram, routine, "mov x0, #1\n ret")
        load(vm, ram, CODE, f"ldr x9, ={routine}\n blr x9\n mov x20, x0\n" + POWER_OFF)
        start_at(b, CODE)
        assert b.run().exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT and b.core.get_x(20) == 1
        new_insn = 0xD2800040  # mov x0, #2
        writer = CODE + 0x1000
        load(vm, ram, writer, f"ldr x1, ={routine}\n ldr w2, ={new_insn}\n str w2, [x1]\n"
             "dc cvau, x1\n dsb ish\n ic ialluis\n dsb ish\n isb\n" + POWER_OFF)
        b.pending_tb_flush = False  # the host's load above flushed everyone: only IC may now
        a.power_off = False
        start_at(a, writer)
        assert a.run().exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT
        assert b.pending_tb_flush == (host_cpus == 1)  # else done in B's core, at A's DSB
        assert vm.read_stats().softkvm["remote_tb_flush"] == 1
        b.power_off = False
        start_at(b, CODE)
        assert b.run().exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT and b.core.get_x(20) == 2
    finally:
        vm.close()


def test_wfe_runs_through_when_the_vcpu_is_alone(guest):
    """kvm_arch_vcpu_load clears HCR_EL2.TWE for the single task of a physical CPU."""
    _vm, vcpu, _ = guest
    assert run_source(*guest, "wfe\n wfe" + POWER_OFF).exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT
    assert vcpu.stats.wfe_exit_stat == 0


@pytest.mark.parametrize("host_cpus", [1, 2])
def test_a_wfe_spin_loop_hands_the_cpu_to_the_vcpu_it_waits_for(host_cpus):
    """With a second vCPU on the shared physical CPU, WFE traps (kvm_handle_wfx): the waiter
    yields to the vCPU that will set its flag, and each WFE is stepped over. With a CPU each,
    WFE runs through (KVM clears TWE for a vCPU alone on its CPU) while the setter runs."""
    vm, vcpus, ram = make_vm(2, host_cpus=host_cpus)
    flag = RAM_BASE + 0x90000
    try:
        waiter, setter = vcpus
        load(vm, ram, CODE, f"ldr x2, ={flag}\n 1: wfe\n ldr w1, [x2]\n cbz w1, 1b" + POWER_OFF)
        load(vm, ram, CODE + 0x1000, f"ldr x2, ={flag}\n mov w1, #1\n str w1, [x2]\n 1: wfi\n b 1b")
        start_at(waiter, CODE)
        start_at(setter, CODE + 0x1000)
        exits = {}

        def run(vcpu):
            exits[vcpu.vcpu_id] = vcpu.run().exit_reason

        threads = [threading.Thread(target=run, args=(v,), daemon=True) for v in vcpus]
        for thread in threads:
            thread.start()
        threads[0].join(60)
        vm.vcpus[1].interrupt()
        threads[1].join(60)
        assert exits[0] == uapi.KVM_EXIT_SYSTEM_EVENT
        assert (waiter.stats.wfe_exit_stat >= 1) == (host_cpus == 1)
        assert setter.stats.wfe_exit_stat == 0
    finally:
        vm.close()
