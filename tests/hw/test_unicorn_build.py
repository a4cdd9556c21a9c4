"""The Unicorn build ``make install`` puts in place (third_party/unicorn): what its patch changes
and what it must keep."""

import struct
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from softkvm.arch import esr as E
from softkvm.arch import sysregs as S
from softkvm.arch.sysregs import ICC_PMR_EL1
from softkvm.hw import native as N
from softkvm.hw.core import Core, ExitKind
from softkvm.hw.native import CORE_BUILD_LABEL, core_build, is_softkvm_core
from tests.support.machine import CODE, RAM_BASE, load, make_vm

DEVICE = 0x0A000000  # an in-kernel device region: served by a callback without leaving the slice


@pytest.fixture
def core_vm():
    vm, vcpus, ram = make_vm(1)
    yield vm, vcpus[0].core, ram
    vm.close()


def run_code(vm, core, ram, source):
    """Load ``source`` at CODE, drop translations of what was there, and run the core from it."""
    load(vm, ram, CODE, source)
    core.flush_tb()
    core.set_pc(CODE)
    return core.run()


def test_the_installed_core_is_softkvms_build():
    assert is_softkvm_core(), (f"{core_build()} is loaded, not third_party/unicorn's build: "
                               "run `make install`")


def test_a_stop_asked_for_during_an_access_takes_effect_at_the_next_block(core_vm):
    """The stock core checks for a stop after every load and store and re-runs the instruction
    whose access asked for it; this build lets the block finish and runs nothing twice."""
    vm, core, ram = core_vm
    reads = []

    def read(offset: int, size: int) -> int:
        reads.append(offset)
        core.uc.emu_stop()
        return 0x5A

    core.map_mmio(DEVICE, 0x1000, read, lambda offset, size, value: None)
    load(vm, ram, CODE, f"""
        ldr x0, ={DEVICE}
        ldr w1, [x0, #8]
        add x2, x2, #1
        b next
    next:
        hvc #0
    """)
    core.flush_tb()
    core.set_x(2, 0)
    core.set_pc(CODE)
    assert core.run().kind is ExitKind.KICKED
    assert reads == [8]
    assert (core.get_x(1), core.get_x(2)) == (0x5A, 1)
    assert core.get_pc() == CODE + 16  # the start of the next block
    assert core.run().kind is ExitKind.HVC
    assert reads == [8]


@pytest.mark.parametrize("access,is_write", [("ldr w1, [x0, #0x18]", False),
                                             ("str w1, [x0, #0x18]", True)])
def test_an_unbacked_access_stops_on_its_own_instruction(core_vm, access, is_write):
    """Without the per-access check, both directions still leave at the access itself: nothing
    after it runs, and the PC names it."""
    vm, core, ram = core_vm
    load(vm, ram, CODE, f"""
        ldr x0, =0x09000000
        mov x1, #7
        {access}
        add x2, x2, #1
        b .
    """)
    core.flush_tb()
    core.set_x(2, 0)
    core.set_pc(CODE)
    exit_ = core.run()
    assert (exit_.kind, exit_.addr, exit_.is_write) == (ExitKind.DABT, 0x09000018, is_write)
    assert core.get_pc() == CODE + 8
    assert core.get_x(2) == 0


@pytest.mark.parametrize("twe", [False, True])
def test_wfe_traps_to_el2_only_with_hcr_twe(core_vm, twe):
    """Stock Unicorn never traps WFE; this build honours HCR_EL2.TWE as it does TWI for WFI."""
    vm, core, ram = core_vm
    core.set_hcr_traps(S.HCR_TWE, twe)
    exit_ = run_code(vm, core, ram, "nop\n wfe\n hvc #0")
    if twe:
        assert exit_.kind is ExitKind.WFX and core.get_pc() == CODE + 4
        assert E.esr_ec(exit_.esr) == E.EC_WFX and E.esr_iss(exit_.esr) & 1  # TI: WFE
    else:
        assert exit_.kind is ExitKind.HVC


def test_the_label_softkvm_expects_is_the_one_the_build_script_installs():
    script = Path(__file__).resolve().parents[2] / "third_party" / "unicorn" / "build.py"
    assert f'LOCAL_LABEL = "{CORE_BUILD_LABEL[1:]}"' in script.read_text()


def test_the_core_consumes_the_kick_flag_at_a_block_start(core_vm):
    """UC_CTL_KICK_FLAG replaces the block hook: a kick set before entry stops the first block
    before any instruction, one set by another thread stops a spinning guest, and each stop
    consumes the flag."""
    vm, core, ram = core_vm
    load(vm, ram, CODE, "1: add x2, x2, #1\n b 1b")
    core.flush_tb()
    core.set_x(2, 0)
    core.set_pc(CODE)
    core.kick()
    assert core.run().kind is ExitKind.KICKED
    assert (core.get_pc(), core.get_x(2), core.state.kick) == (CODE, 0, 0)
    with _kicking(core):
        while core.get_x(2) == 0:  # a kick may land before the core starts: run again
            assert core.run().kind is ExitKind.KICKED
            assert core.get_pc() in (CODE, CODE + 4)
    assert core.stats.kicks >= 2


def test_a_kick_after_a_hook_moved_the_pc_stops_on_the_block_it_interrupted(core_vm):
    """A system-register hook that steps the PC (an ICC_* register the core does not know)
    marks the PC as synced. A later kick must still leave the PC on the block it stopped: here
    a chain of three blocks, each counting in its own register, so the counts say which block
    comes next."""
    vm, core, ram = core_vm
    core.sysreg_handler = lambda encoding, is_write, value: 0
    core.set_sysreg_policy(ICC_PMR_EL1.encoding, N.SR_PY_UNKNOWN)
    load(vm, ram, CODE, """
        mrs x3, icc_pmr_el1
        mov x4, #1
    a:  add x2, x2, #1
        b b
    b:  add x5, x5, #1
        b c
    c:  add x6, x6, #1
        b a
    """)
    core.flush_tb()
    blocks = {0: CODE + 8, 1: CODE + 16, 2: CODE + 24}  # a, b, c
    for _ in range(3):
        for reg in (2, 5, 6):
            core.set_x(reg, 0)
        core.set_pc(CODE)
        with _kicking(core):
            assert core.run().kind is ExitKind.KICKED
        done = core.get_x(2) + core.get_x(5) + core.get_x(6)
        if done == 0:  # the kick came before the core started: nothing to check this time
            assert core.get_pc() in (CODE, CODE + 4)
            continue
        assert core.get_x(2) - core.get_x(6) in (0, 1)
        assert core.get_pc() == blocks[done % 3]


@contextmanager
def _kicking(core):
    """Kick ``core`` from another thread every 10 ms while the body runs."""
    stop = threading.Event()

    def kicker() -> None:
        while not stop.wait(0.01):
            core.kick()

    thread = threading.Thread(target=kicker, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _coalescing(core, zones):
    ring = N.CoalescedMmioRing()
    table = N.coalesced_zones(zones)
    config = N.CoalescedMmioConfig(N.ctypes.pointer(ring), N.COALESCED_MMIO_MAX, 0,
                                   N.ctypes.addressof(table))
    assert core.set_coalesced_mmio(config)
    return ring, config, table


def _entries(ring):
    return [(e.phys_addr, e.len, bytes(e.data))
            for e in (ring.coalesced_mmio[i] for i in range(ring.first, ring.last))]


def test_a_write_inside_a_coalesced_zone_is_queued_without_an_exit(core_vm):
    """Part 6: writes wholly inside a zone land in the ring, in order, with their width and
    little-endian bytes; the first write that leaves the zone stops on its own instruction."""
    vm, core, ram = core_vm
    ring, *keep = _coalescing(core, [(0x09000000, 4), (0x09001000, 0x10)])
    exit_ = run_code(vm, core, ram, """
        ldr x0, =0x09000000
        ldr x3, =0x09001000
        mov w1, #0x41
        str w1, [x0]
        strb w1, [x0, #3]
        ldr x1, =0x1122334455667788
        str x1, [x3, #8]
        strh w1, [x0, #3]
        b .
    """)
    assert exit_.kind is ExitKind.DABT and exit_.is_write  # strh at +3 spills past the zone
    assert (exit_.addr, exit_.size) == (0x09000003, 2)
    assert core.get_pc() == CODE + 28
    assert _entries(ring) == [
        (0x09000000, 4, b"A" + bytes(7)),
        (0x09000003, 1, b"A" + bytes(7)),
        (0x09001008, 8, bytes.fromhex("8877665544332211")),
    ]


def test_reads_in_a_coalesced_zone_exit_and_a_full_ring_stops_the_write(core_vm):
    """Only writes coalesce; with the ring full the next write exits on its own instruction,
    and once the consumer frees a slot, writes queue again."""
    vm, core, ram = core_vm
    ring, *keep = _coalescing(core, [(0x09000000, 8)])
    load(vm, ram, CODE, """
        ldr x0, =0x09000000
        ldr w2, [x0]
    1:  str w1, [x0]
        add w1, w1, #1
        b 1b
    """)
    core.flush_tb()
    core.set_x(1, 0)
    core.set_pc(CODE)
    exit_ = core.run()
    assert exit_.kind is ExitKind.DABT and not exit_.is_write
    core.set_pc(core.get_pc() + 4)
    exit_ = core.run()
    assert exit_.kind is ExitKind.DABT and exit_.is_write
    assert ring.first == 0 and ring.last == N.COALESCED_MMIO_MAX - 1
    assert core.get_x(1) == N.COALESCED_MMIO_MAX - 1  # the write of that value is the one held
    assert [e[2][0] for e in _entries(ring)] == [i & 0xFF for i in range(N.COALESCED_MMIO_MAX - 1)]
    ring.first = 5
    assert core.run().kind is ExitKind.DABT
    assert ring.last == 4 and core.get_x(1) == N.COALESCED_MMIO_MAX + 4


def test_a_new_zone_table_takes_effect_at_the_next_write(core_vm):
    """The zones pointer may be swapped between runs: a zone dropped no longer coalesces, and
    one put back coalesces again."""
    vm, core, ram = core_vm
    ring, config, table = _coalescing(core, [(0x09000000, 4)])
    empty = N.coalesced_zones([])
    config.zones = N.ctypes.addressof(empty)
    exit_ = run_code(vm, core, ram, """
        ldr x0, =0x09000000
        str w1, [x0]
        str w1, [x0]
        hvc #0
    """)
    assert exit_.kind is ExitKind.DABT and exit_.is_write
    assert ring.last == 0 and core.get_pc() == CODE + 4
    config.zones = N.ctypes.addressof(table)
    core.set_pc(CODE + 8)  # the first write, handled as the exit asked
    assert core.run().kind is ExitKind.HVC
    assert _entries(ring) == [(0x09000000, 4, bytes(8))]


def _publishing(core, registers):
    slots = [N.ctypes.c_uint64(value) for _addr, _size, value in registers]
    table = N.published_regs([(addr, size, slot) for (addr, size, _v), slot
                              in zip(registers, slots)])
    config = N.PublishedMmioConfig(N.ctypes.addressof(table), 0)
    assert core.set_published_mmio(config)
    return config, table, slots


def test_a_load_inside_a_published_register_reads_its_value_without_an_exit(core_vm):
    """Part 9: loads wholly inside a register read its current value (a narrow one sees the
    bytes it covers, little-endian), counted; the first load that leaves it, a store to it, and
    an instruction fetch from it stop on their own instruction."""
    vm, core, ram = core_vm
    config, table, slots = _publishing(core, [(0x09000018, 4, 0x8899AABB),
                                              (0x09001000, 8, 0x1122334455667788)])
    exit_ = run_code(vm, core, ram, """
        ldr x0, =0x09000018
        ldr x3, =0x09001000
        ldr w1, [x0]
        ldrb w2, [x0, #2]
        ldrsh x4, [x0, #2]
        ldr x5, [x3]
        ldr w6, [x3, #4]
        ldrh w7, [x0, #3]
        b .
    """)
    assert exit_.kind is ExitKind.DABT and not exit_.is_write  # ldrh at +3 spills past it
    assert (exit_.addr, exit_.size) == (0x0900001B, 2)
    assert core.get_pc() == CODE + 28
    assert [core.get_x(n) for n in (1, 2, 4, 5, 6)] == [
        0x8899AABB, 0x99, 0xFFFFFFFFFFFF8899, 0x1122334455667788, 0x11223344]
    assert config.reads == 5
    slots[0].value = 0x10  # the owner publishes a new value: the next load reads it
    exit_ = run_code(vm, core, ram, "ldr x0, =0x09000018\n ldr w1, [x0]\n str w1, [x0]\n b .")
    assert exit_.kind is ExitKind.DABT and exit_.is_write and core.get_pc() == CODE + 8
    assert core.get_x(1) == 0x10 and config.reads == 6


def test_a_new_published_table_takes_effect_at_the_next_load(core_vm):
    vm, core, ram = core_vm
    config, table, slots = _publishing(core, [(0x09000018, 4, 0x90)])
    config.regs = None  # dropped: the loads exit
    exit_ = run_code(vm, core, ram, "ldr x0, =0x09000018\n ldr w1, [x0]\n ldr w2, [x0]\n hvc #0")
    assert exit_.kind is ExitKind.DABT and not exit_.is_write and core.get_pc() == CODE + 4
    config.regs = N.ctypes.addressof(table)
    core.set_pc(CODE + 8)  # the first load, handled as the exit asked
    assert core.run().kind is ExitKind.HVC
    assert core.get_x(2) == 0x90 and config.reads == 1


@pytest.mark.parametrize("access,is_write", [("ldrh w1, [x0, #0x1a]", False),
                                             ("strh w1, [x0, #0x1a]", True)])
def test_the_core_reports_an_unmapped_accesss_va_and_pc(core_vm, monkeypatch, access, is_write):
    """Part 7: the exit names the instruction and its VA itself, mid-block, so the instruction
    is decoded where it is, with no search through the block."""
    vm, core, ram = core_vm
    load(vm, ram, CODE, f"""
        ldr x0, =0x09000000
        add x2, x2, #1
        add x2, x2, #1
        {access}
        b .
    """)
    core.flush_tb()
    core.set_pc(CODE)

    def search(*args):
        raise AssertionError("the core gave no PC: the instruction was searched for")

    monkeypatch.setattr(core, "_faulting_access", search)
    exit_ = core.run()
    assert exit_.kind is ExitKind.DABT and exit_.is_write == is_write
    assert (exit_.addr, exit_.va, exit_.size) == (0x0900001A, 0x0900001A, 2)
    assert exit_.insn is not None and exit_.insn.rt == 1
    assert core.get_pc() == CODE + 12 and core.fault.pc == 0  # consumed by this exit


@pytest.mark.parametrize("insn,ec", [("svc #7", E.EC_SVC64), ("brk #7", E.EC_BRK64)])
def test_a_guest_exception_to_el1_is_taken_inside_the_core(core_vm, insn, ec):
    """Part 8: an EL0 SVC (or BRK) enters the guest's EL1 vector with no stop: the one slice
    runs from the ERET to EL0 through the handler, and softkvm reflects nothing itself."""
    vm, core, ram = core_vm
    vbar = CODE + 0x10000
    load(vm, ram, vbar + 0x400, "mrs x6, esr_el1\n hvc #0")  # lower EL, AArch64, synchronous
    load(vm, ram, CODE, f"""
        ldr x9, ={vbar}
        msr vbar_el1, x9
        adr x9, el0
        msr elr_el1, x9
        msr spsr_el1, xzr
        eret
    el0:
        {insn}
    """)
    core.flush_tb()
    core.set_pc(CODE)
    slices = core.stats.slices
    exit_ = core.run()
    assert exit_.kind is ExitKind.HVC
    assert core.stats.slices == slices + 1 and core.stats.reflected == {}
    assert core.get_x(6) == E.esr(ec, 7)


def test_cores_in_parallel_make_guest_exclusives_atomic():
    """Part 10: two cores on two threads, contending for one counter with LDXR/STXR and for a
    pair with LDXP/STXP, lose no update: their code is translated for a parallel context."""
    vm, vcpus, ram = make_vm(2)
    try:
        count, pair, n = RAM_BASE + 0x100000, RAM_BASE + 0x100040, 20000
        load(vm, ram, CODE, f"""
            ldr x0, ={count}
            ldr x4, ={pair}
            ldr x3, ={n}
        1:  ldxr x1, [x0]
            add x1, x1, #1
            stxr w2, x1, [x0]
            cbnz w2, 1b
        2:  ldxp x5, x6, [x4]
            add x5, x5, #1
            add x6, x6, #2
            stxp w2, x5, x6, [x4]
            cbnz w2, 2b
            subs x3, x3, #1
            b.ne 1b
            hvc #0
        """)
        cores = [vcpu.core for vcpu in vcpus]
        assert all(core.set_parallel(True) for core in cores)
        peers = Core.make_peers(cores)
        exits = []

        def run(core):
            core.flush_tb()
            core.set_pc(CODE)
            exit_ = core.run()
            while exit_.kind is ExitKind.KICKED:
                exit_ = core.run()
            exits.append(exit_.kind)
        threads = [threading.Thread(target=run, args=(core,)) for core in cores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert exits == [ExitKind.HVC, ExitKind.HVC] and peers
        assert struct.unpack_from("<QQQ", ram, count - RAM_BASE)[0] == 2 * n
        assert struct.unpack_from("<QQ", ram, pair - RAM_BASE) == (2 * n, 4 * n)
    finally:
        vm.close()


def test_translations_of_a_physical_range_are_dropped_on_request(core_vm):
    """Part 11: UC_CTL_INVALIDATE_PHYS drops the code translated from a physical page (the
    core translates it again), and only from that page."""
    vm, core, ram = core_vm
    routine, other = RAM_BASE + 0x90000, RAM_BASE + 0x92000
    load(vm, ram, routine, "mov x0, #1\n ret")
    load(vm, ram, other, "mov x1, #5\n ret")
    source = f"ldr x9, ={routine}\n blr x9\n ldr x9, ={other}\n blr x9\n hvc #0"
    assert run_code(vm, core, ram, source).kind is ExitKind.HVC
    for addr, insn in ((routine, 0xD2800040), (other, 0xD28000C1)):  # mov x0, #2 / mov x1, #6
        ram[addr - RAM_BASE: addr - RAM_BASE + 4] = insn.to_bytes(4, "little")
    core.invalidate_phys(routine, 0x1000)
    core.set_pc(CODE)
    assert core.run().kind is ExitKind.HVC
    assert (core.get_x(0), core.get_x(1)) == (2, 5)  # the other page's old translation stays
