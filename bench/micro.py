"""The CPU-bound ceiling: a guest loop through the real KVM_RUN loop against bare Unicorn.

The same assembled loop runs on a bare Unicorn instance (no hooks) and as a softkvm vCPU; the
ratio says what the run loop's machinery (sysreg filter, kick check) costs code that never traps.
Best of several interleaved runs (a ceiling: the least disturbed run of each). The trap path and the interrupt machinery are measured by the bench
guest (bench/suite.py).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import unicorn
from unicorn import arm64_const as A
from unicorn import unicorn_const as U

from softkvm.kvm import uapi
from tests.support.asm import assemble
from tests.support.machine import CODE, POWER_OFF, RAM_BASE, load, make_vm, start_at

REPEATS = 5


@dataclass(slots=True)
class Result:
    name: str
    value: float
    unit: str
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "value": self.value, "unit": self.unit, "detail": self.detail}


def median_of(fn: Callable[[], float], repeats: int = REPEATS) -> float:
    return statistics.median(fn() for _ in range(repeats))


def best_interleaved(first: Callable[[], float], second: Callable[[], float],
                     repeats: int = REPEATS) -> tuple[float, float]:
    """Best of ``repeats`` runs of each, alternating, so that other work on the host slows both
    sides alike and the best run of each is the least disturbed one."""
    a, b = [], []
    for _ in range(repeats):
        a.append(first())
        b.append(second())
    return max(a), max(b)


# --- CPU-bound ceiling ----------------------------------------------------------------------

LOOPS = {
    "tight (3 insns/iteration)": ("", 3),
    "alu (13 insns/iteration)": ("""
        eor x3, x3, x1
        add x4, x4, x3
        mul x5, x5, x4
        lsl x6, x6, #1
        add x7, x7, x6
        eor x8, x8, x7
        orr x9, x9, x8
        add x10, x10, x9
        udiv x11, x2, x9
        add x12, x12, x11""", 13),
}


def loop_source(body: str, iterations: int) -> str:
    return f"""
        ldr x0, ={iterations}
        mov x2, #7
        mov x9, #1
    1:  {body}
        add x1, x1, #1
        subs x0, x0, #1
        b.ne 1b
    """


def bare_mips(code: bytes, insns: int) -> float:
    uc = unicorn.Uc(U.UC_ARCH_ARM64, U.UC_MODE_ARM)
    uc.ctl_set_cpu_model(A.UC_CPU_ARM64_A72)
    uc.mem_map(RAM_BASE, 16 << 20)
    uc.mem_write(CODE, code + assemble("hvc #0"))
    uc.reg_write(A.UC_ARM64_REG_CP_REG, (1, 1, 3, 6, 0, 0x501))        # SCR_EL3
    uc.reg_write(A.UC_ARM64_REG_CP_REG, (1, 1, 3, 4, 0, 0x80000038))   # HCR_EL2
    uc.hook_add(U.UC_HOOK_INTR, lambda u, _i, _d: u.emu_stop())
    start = time.perf_counter()
    uc.emu_start(CODE, 0)
    return insns / (time.perf_counter() - start) / 1e6


def softkvm_mips(source: str, insns: int) -> float:
    vm, vcpus, ram = make_vm(1)
    try:
        load(vm, ram, CODE, source + POWER_OFF)
        start_at(vcpus[0], CODE)
        start = time.perf_counter()
        run = vcpus[0].run()
        elapsed = time.perf_counter() - start
        assert run.exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT
        return insns / elapsed / 1e6
    finally:
        vm.close()


def cpu_bound() -> list[Result]:
    results = []
    iterations = 100_000_000
    for name, (body, per) in LOOPS.items():
        source = loop_source(body, iterations)
        insns = iterations * per
        code = assemble(source)
        bare, ours = best_interleaved(lambda: bare_mips(code, insns),
                                      lambda: softkvm_mips(source, insns))
        results += [Result(f"cpu {name}: bare Unicorn", bare, "MIPS"),
                    Result(f"cpu {name}: softkvm", ours, "MIPS"),
                    Result(f"cpu {name}: ratio softkvm/bare", ours / bare, "x",
                           "goal >= 0.9; softkvm adds the sysreg filter and the kick check")]
    return results
