"""The emulated core: exits as values and the exception-entry recipe from every source EL."""

import pytest
from unicorn import arm64_const as A
from unicorn import unicorn_const as U

from softkvm.arch import esr as E
from softkvm.arch import sysregs as S
from softkvm.hw.core import ExitKind, REG_PSTATE
from softkvm.hw.native import NativeShimError
from tests.support.machine import CODE, RAM_BASE, RAM_SIZE, VBAR, VECTORS, load, make_vm

RAM_END = RAM_BASE + RAM_SIZE


@pytest.fixture
def core_vm():
    vm, vcpus, ram = make_vm(1)
    load(vm, ram, VBAR, VECTORS)
    core = vcpus[0].core
    core.raw.write(A.UC_ARM64_REG_VBAR_EL1, VBAR)
    core.flush_tb()
    yield vm, core, ram
    vm.close()


def run_code(vm, core, ram, source):
    load(vm, ram, CODE, source)
    core.flush_tb()
    core.set_pc(CODE)
    return core.run()


# Drop from EL1h to the given mode, then run the instruction under test at "target".
def enter_mode(mode: int, insn: str) -> str:
    return f"""
        adr x9, target
        msr elr_el1, x9
        mov x9, #{mode}
        msr spsr_el1, x9
        ldr x9, ={RAM_BASE + 0x200000}
        msr sp_el0, x9
        eret
    target:
        {insn}
    """


EXIT_TABLE = [
    ("hvc #0x42", ExitKind.HVC, {"imm": 0x42}),
    (".inst 0xd40000e3  // smc #0x7", ExitKind.SMC, {"imm": 0x7}),
    ("wfi", ExitKind.WFX, {}),
    ("ldr x1, =0x09000000\n ldr w2, [x1, #0x18]", ExitKind.DABT,
     {"addr": 0x09000018, "size": 4, "is_write": False}),
    ("ldr x1, =0x09000000\n mov x2, #0x41\n strb w2, [x1]", ExitKind.DABT,
     {"addr": 0x09000000, "size": 1, "is_write": True, "value": 0x41}),
    (f"ldr x1, ={RAM_END}\n br x1", ExitKind.IABT, {"addr": RAM_END}),
]


@pytest.mark.parametrize("source,kind,fields", EXIT_TABLE, ids=[t[0].split()[0] + f"-{t[1].value}" for t in EXIT_TABLE])
def test_exit_mapping(core_vm, source, kind, fields):
    vm, core, ram = core_vm
    exit_ = run_code(vm, core, ram, source)
    assert exit_.kind is kind
    for name, value in fields.items():
        assert getattr(exit_, name) == value, name


def test_hvc_leaves_pc_after_instruction_and_wfi_on_it(core_vm):
    vm, core, ram = core_vm
    run_code(vm, core, ram, "hvc #0")
    assert core.get_pc() == CODE + 4
    run_code(vm, core, ram, "wfi")
    assert core.get_pc() == CODE


def test_kick_stops_a_spinning_guest(core_vm):
    vm, core, ram = core_vm
    load(vm, ram, CODE, "1: b 1b")
    core.flush_tb()
    core.set_pc(CODE)
    core.kick()  # a kick set before entry is not lost: it stops at the first block
    assert core.run().kind is ExitKind.KICKED


def test_trapped_id_register_with_tid3(core_vm):
    vm, core, ram = core_vm
    core.set_hcr_traps(S.HCR_TID3, True)
    exit_ = run_code(vm, core, ram, "mrs x3, id_aa64pfr0_el1")
    assert exit_.kind is ExitKind.SYSREG
    assert E.esr_ec(exit_.esr) == E.EC_SYS64


# (mode name, SPSR mode bits, vector offset of the source)
SOURCES = [("el1h", E.PSR_MODE_EL1h, E.VECTOR_CUR_SPX), ("el1t", E.PSR_MODE_EL1t, E.VECTOR_CUR_SP0),
           ("el0", E.PSR_MODE_EL0t, E.VECTOR_LOWER_A64)]
# (instruction, expected ESR, whether ELR points after the instruction)
KINDS = [("svc #0x1234", E.esr(E.EC_SVC64, 0x1234), True),
         ("udf #0x55", E.esr(E.EC_UNKNOWN, 0), False),
         ("brk #0x77", E.esr(E.EC_BRK64, 0x77), False)]


@pytest.mark.parametrize("mode_name,mode,vector", SOURCES, ids=[s[0] for s in SOURCES])
@pytest.mark.parametrize("insn,esr,after", KINDS, ids=[k[0].split()[0] for k in KINDS])
def test_exception_recipe(core_vm, mode_name, mode, vector, insn, esr, after):
    vm, core, ram = core_vm
    exit_ = run_code(vm, core, ram, enter_mode(mode, insn))
    # the vector table answers with hvc #(0x100 + entry)
    assert exit_.kind is ExitKind.HVC
    assert exit_.imm == 0x100 + vector // 0x80
    target = CODE + 7 * 4 + 8  # after the 7 set-up instructions and the literal-pool free eret
    elr = core.raw.read(A.UC_ARM64_REG_ELR_EL1)
    insn_addr = elr - 4 if after else elr
    assert core.raw.read(A.UC_ARM64_REG_ESR_EL1) == esr
    assert core.raw.cpr_read(*S.SPSR_EL1) & 0x3FF == mode  # M[3:0], DAIF clear as set by eret
    assert core.current_el() == 1 and core.raw.read(REG_PSTATE) & E.PSTATE_DAIF == E.PSTATE_DAIF
    assert core.read_insn(insn_addr) is not None
    assert insn_addr >= CODE and insn_addr < target + 16


def test_sp_banking_on_entry_from_el0(core_vm):
    vm, core, ram = core_vm
    core.raw.write(A.UC_ARM64_REG_SP, RAM_BASE + 0x300000)  # live SP at EL1h: ERET banks it
    load(vm, ram, VBAR + 0x400, "mov x5, sp\n hvc #0x500")
    core.flush_tb()
    exit_ = run_code(vm, core, ram, enter_mode(E.PSR_MODE_EL0t, "svc #1"))
    assert exit_.imm == 0x500
    assert core.get_x(5) == RAM_BASE + 0x300000        # the handler runs on SP_EL1
    assert core.raw.read(A.UC_ARM64_REG_SP_EL0) == RAM_BASE + 0x200000  # EL0's SP kept


def test_data_abort_under_mmu_off_reflects_nothing_but_exits(core_vm):
    """An access past the end of RAM is the hypervisor's business (an exit), not a guest fault."""
    vm, core, ram = core_vm
    exit_ = run_code(vm, core, ram, f"ldr x1, ={RAM_END}\n ldr x2, [x1]")
    assert exit_.kind is ExitKind.DABT and exit_.addr == RAM_END
    assert core.stats.reflected == {}


@pytest.mark.parametrize("reported_pc_offset", [0, 8])
def test_unbacked_access_found_from_a_block_start_pc(core_vm, reported_pc_offset):
    """The PC the core reports for an unbacked access may be its block's start: the exit still
    names the instruction that made the access, with the PC moved onto it and nothing re-run."""
    vm, core, ram = core_vm
    load(vm, ram, CODE, """
        mov x5, #1
        str w4, [x6]          // RAM: same size, another address
        add x5, x5, #1
        str w3, [x2, #0x38]   // the unbacked access
        b .
    """)
    core.set_x(2, 0x09000000)
    core.set_x(3, 0x50)
    core.set_x(6, RAM_BASE + 0x1000)
    core.set_pc(CODE + 12 - reported_pc_offset)     # what Unicorn reported
    core.state.mem_type, core.state.mem_addr = U.UC_MEM_WRITE_UNMAPPED, 0x09000038
    core.state.mem_size, core.state.mem_value = 4, 0x50
    exit_ = core._unmapped_exit()
    assert exit_.kind is ExitKind.DABT and exit_.insn is not None
    assert (exit_.insn.rt, exit_.insn.rn, exit_.insn.offset) == (3, 2, 0x38)
    assert core.get_pc() == CODE + 12


def test_unbacked_access_with_no_matching_instruction_has_no_decode(core_vm):
    vm, core, ram = core_vm
    load(vm, ram, CODE, "mov x5, #1\n add x5, x5, #1\n b .")
    core.set_pc(CODE)
    core.state.mem_type, core.state.mem_addr = U.UC_MEM_WRITE_UNMAPPED, 0x09000038
    core.state.mem_size, core.state.mem_value = 4, 0
    assert core._unmapped_exit().insn is None
    assert core.get_pc() == CODE


def test_a_closed_core_raises_instead_of_touching_the_freed_engine():
    vm, vcpus, _ram = make_vm(1)
    vm.close()
    with pytest.raises(NativeShimError, match="closed"):
        vcpus[0].core.get_pc()
    with pytest.raises(NativeShimError, match="closed"):
        vcpus[0].core.flush_tb()
    vcpus[0].core.close()  # twice is harmless
