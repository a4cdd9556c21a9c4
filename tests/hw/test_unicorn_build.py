"""The Unicorn build ``make install`` puts in place (third_party/unicorn): what its patch changes
and what it must keep."""

from pathlib import Path

import pytest

from softkvm.arch import esr as E
from softkvm.arch import sysregs as S
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
