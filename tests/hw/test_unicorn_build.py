"""The Unicorn build ``make install`` puts in place (third_party/unicorn): what its patch changes
and what it must keep."""

import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from softkvm.arch import esr as E
from softkvm.arch import sysregs as S
from softkvm.arch.sysregs import ICC_PMR_EL1
from softkvm.hw import native as N
from softkvm.hw.core import ExitKind
from softkvm.hw.native import CORE_BUILD_LABEL, core_build, is_softkvm_core
from tests.support.machine import CODE, load, make_vm

DEVICE = 0x0A000000  # an in-kernel device region: served by a callback without leaving the slice


@pytest.fixture
def core_vm():
    vm, vcpus, ram = make_vm(1)
    yield vm, vcpus[0].core, ram
    vm.close()


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
    load(vm, ram, CODE, "nop\n wfe\n hvc #0")
    core.flush_tb()
    core.set_pc(CODE)
    exit_ = core.run()
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
