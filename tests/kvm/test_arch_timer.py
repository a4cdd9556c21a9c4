"""Arch timers without an in-kernel irqchip: levels in device_irq_level, forced exits, WFI wake."""

import threading
import time

import pytest

from softkvm.hw.clock import COUNTER_HZ, counter_now
from softkvm.hw.generic_timer import PTIMER, VTIMER
from softkvm.kvm import uapi
from tests.support.machine import CODE, POWER_OFF, load, make_vm, start_at

VT = uapi.KVM_ARM_DEV_EL1_VTIMER
PT = uapi.KVM_ARM_DEV_EL1_PTIMER
TICKS_PER_MS = COUNTER_HZ // 1000


def arm_timer(prefix: str, delay_ticks: int, ctl: int = 1) -> str:
    counter = {"cntv": "cntvct_el0", "cntp": "cntpct_el0"}[prefix]
    return f"""
        mrs x1, {counter}
        ldr x3, ={delay_ticks}
        add x1, x1, x3
        msr {prefix}_cval_el0, x1
        mov x2, #{ctl}
        msr {prefix}_ctl_el0, x2
    """


@pytest.fixture
def vm_user():
    vm, vcpus, ram = make_vm(1)
    yield vm, vcpus[0], ram
    vm.close()


def run_until(vcpu, predicate, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = vcpu.run()
        if predicate(run):
            return run
    raise AssertionError("condition never met")


@pytest.mark.parametrize("prefix,bit", [("cntv", VT), ("cntp", PT)])
def test_rising_level_forces_one_exit_and_no_storm(vm_user, prefix, bit):
    vm, vcpu, ram = vm_user
    load(vm, ram, CODE, arm_timer(prefix, 2 * TICKS_PER_MS) + "1: b 1b")
    start_at(vcpu, CODE)
    run = run_until(vcpu, lambda r: r.exit_reason == uapi.KVM_EXIT_INTR)
    assert run.s.regs.device_irq_level & bit and vcpu.stats.user_irqchip_exits == 1
    exits_before = vcpu.stats.exits
    threading.Timer(0.3, vcpu.interrupt).start()
    run = vcpu.run()  # the level stays high: no further forced exit, only our signal
    assert run.exit_reason == uapi.KVM_EXIT_INTR and vcpu.stats.signal_exits >= 1
    assert vcpu.stats.exits - exits_before < 20, "an exit storm while the level is high"
    assert run.s.regs.device_irq_level & bit


def test_falling_level_is_published_on_the_next_exit(vm_user):
    """A direct timer's CTL write does not trap: the fall shows on the next exit, as in KVM."""
    vm, vcpu, ram = vm_user
    load(vm, ram, CODE, arm_timer("cntv", TICKS_PER_MS) + """
        2: mrs x4, cntv_ctl_el0
           tbz x4, #2, 2b          // wait for ISTATUS
           ldr x5, =0x09000000
           str wzr, [x5]           // an MMIO exit: the VMM looks
           msr cntv_ctl_el0, xzr   // timer off: the level falls
           str wzr, [x5, #4]       // the next exit carries the news
        1: b 1b""")
    start_at(vcpu, CODE)
    run = run_until(vcpu, lambda r: r.exit_reason == uapi.KVM_EXIT_MMIO)
    assert run.s.regs.device_irq_level & VT and run.mmio.phys_addr == 0x09000000
    run = vcpu.run()
    assert run.exit_reason == uapi.KVM_EXIT_MMIO and run.mmio.phys_addr == 0x09000004
    assert not run.s.regs.device_irq_level & VT


def test_level_change_piggybacks_on_an_mmio_exit(vm_user):
    """The level rises just before an MMIO exit that happens anyway: that exit carries it and
    no KVM_EXIT_INTR is added. (Should the host PPI win the race on a loaded machine, the
    forced exit comes first and the MMIO exit then adds nothing: still one exit per change.)"""
    vm, vcpu, ram = vm_user
    load(vm, ram, CODE, """
        mrs x1, cntvct_el0
        msr cntv_cval_el0, x1      // already due
        mov x2, #1
        msr cntv_ctl_el0, x2
        ldr x5, =0x09000000
        str wzr, [x5]""" + POWER_OFF)
    start_at(vcpu, CODE)
    run = vcpu.run()
    forced = run.exit_reason == uapi.KVM_EXIT_INTR
    assert run.s.regs.device_irq_level & VT
    if forced:
        run = vcpu.run()
    assert run.exit_reason == uapi.KVM_EXIT_MMIO and run.s.regs.device_irq_level & VT
    run = vcpu.run()
    assert run.exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT
    assert vcpu.stats.user_irqchip_exits == (1 if forced else 0)
    assert vcpu.stats.signal_exits == 0  # a forced exit is no signal


def test_vmm_that_ignores_levels_gets_no_exit_loop(vm_user):
    vm, vcpu, ram = vm_user
    load(vm, ram, CODE, arm_timer("cntv", 0) + "ldr x9, =200000\n3: subs x9, x9, #1\n b.ne 3b\n"
         + POWER_OFF)
    start_at(vcpu, CODE)
    reasons = []
    for _ in range(10):
        run = vcpu.run()
        reasons.append(run.exit_reason)
        if run.exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT:
            break
    assert reasons[-1] == uapi.KVM_EXIT_SYSTEM_EVENT
    assert reasons.count(uapi.KVM_EXIT_INTR) <= 1


def test_wfi_with_irqs_masked_wakes_on_the_timer(vm_user):
    vm, vcpu, ram = vm_user
    load(vm, ram, CODE, arm_timer("cntv", 20 * TICKS_PER_MS) + "wfi\n mrs x6, cntvct_el0\n"
         + POWER_OFF)
    start_at(vcpu, CODE)
    start = time.monotonic()
    run = run_until(vcpu, lambda r: r.exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT)
    assert time.monotonic() - start >= 0.015
    assert vcpu.stats.wfi_exit_stat == 1 and vcpu.stats.halt_wakeup == 1
    assert vcpu.core.get_x(6) >= vcpu.core.get_x(1)  # woke at or after CVAL


def test_istatus_with_imask_and_negative_tval(vm_user):
    vm, vcpu, ram = vm_user
    load(vm, ram, CODE, arm_timer("cntv", 0, ctl=3) + """
        isb
        mrs x7, cntv_ctl_el0
        mrs x8, cntv_tval_el0
        mov x2, #0
        msr cntv_ctl_el0, x2
        mrs x9, cntv_ctl_el0""" + POWER_OFF)
    start_at(vcpu, CODE)
    run = run_until(vcpu, lambda r: r.exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT)
    assert vcpu.core.get_x(7) == 0b111  # ENABLE | IMASK | ISTATUS: masked, still the condition
    assert vcpu.core.get_x(8) >= 0x80000000  # TVAL reads <= 0 (signed 32-bit) after expiry
    assert vcpu.core.get_x(9) == 0  # disabled: no ISTATUS
    assert not run.s.regs.device_irq_level & VT  # masked: no output level


def test_timer_state_saved_and_restored_at_load_put_only(vm_user):
    vm, vcpu, ram = vm_user
    load(vm, ram, CODE, arm_timer("cntv", 10**9) + "ldr x5, =0x09000000\n str wzr, [x5]\n"
         + POWER_OFF)
    start_at(vcpu, CODE)
    assert vcpu.run().exit_reason == uapi.KVM_EXIT_MMIO
    assert vcpu.get_one_reg(uapi.KVM_REG_ARM_TIMER_CTL) & 1
    saves = vcpu.stats.timer_saves
    assert vcpu.run().exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT
    assert vcpu.stats.timer_saves == saves + 1 and vcpu.stats.timer_restores == saves + 1


def test_one_reg_counter_and_cntvoff(vm_user):
    vm, vcpu, ram = vm_user
    vcpu.set_one_reg(uapi.KVM_REG_ARM_TIMER_CNT, 1 << 40)
    assert abs(vcpu.get_one_reg(uapi.KVM_REG_ARM_TIMER_CNT) - (1 << 40)) < COUNTER_HZ
    load(vm, ram, CODE, "mrs x1, cntvct_el0" + "\n" + POWER_OFF)
    start_at(vcpu, CODE)
    vcpu.run()
    assert abs(vcpu.core.get_x(1) - (1 << 40)) < 10 * COUNTER_HZ
    vcpu.set_one_reg(uapi.KVM_REG_ARM_TIMER_CVAL, 1234)
    vcpu.set_one_reg(uapi.KVM_REG_ARM_TIMER_CTL, 1)
    assert vcpu.get_one_reg(uapi.KVM_REG_ARM_TIMER_CVAL) == 1234
    assert vcpu.get_one_reg(uapi.KVM_REG_ARM_TIMER_CTL) == 0b101  # ISTATUS: long past due


HOUR = 3600 * COUNTER_HZ  # far enough that the counter cannot catch up during the test


@pytest.mark.parametrize("ctl,cval,count,fires", [
    (1, 100, 100, True), (1, 100 + HOUR, 100, False), (3, 0, 100, False), (0, 0, 100, False),
    (1, 2**64 - 1, 5, False),          # far future, not "negative"
    (1, 5, 2**64 - HOUR, True),        # count near wrap, deadline long passed
    (1, 2**64 - 1, 2**64 - HOUR, False),
])
def test_should_fire_predicate(vm_user, ctl, cval, count, fires):
    vm, vcpu, _ = vm_user
    timers = vm.timers
    ctx = timers.cpus[0].timers[VTIMER]
    ctx.cnt_ctl, ctx.cnt_cval = ctl, cval
    timers.set_cntvoff((counter_now() - count) % 2**64)  # virtual count = count (wrapping)
    assert timers.should_fire(vcpu, ctx) is fires
