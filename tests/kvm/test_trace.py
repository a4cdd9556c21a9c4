"""Tracepoints: off (and free) by default, and each one fires where KVM's does.

The table test drives small guests through the real KVM_RUN loop — PSCI, MMIO, WFI, timers with
and without an in-kernel vGIC, SPIs, SGIs with EOImode 1, irqfd with a resamplefd — once per
scenario, and checks every tracepoint of ``TRACEPOINTS`` against the records it must leave. No
assertion depends on timing: every wait is for an event the test causes, with a generous
deadline that only a failure reaches.
"""

from __future__ import annotations

import ast
import os
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from softkvm.hw.vcpu_if import VcpuInterface
from softkvm.kvm import irq_line, uapi
from softkvm.kvm.trace import TRACEPOINTS, TraceEvent, Tracer
from softkvm.vmm.irqchip.user_gic import UserGic
from tests.kvm.test_irqfd import CPU_IF, DIST, REDIST, REPORT, V2, V3, Guest, make_gic_vm
from tests.support.machine import CODE, POWER_OFF, load, make_vm, start_at

SRC = Path(__file__).resolve().parents[2] / "src" / "softkvm"
DEADLINE = 60.0
PSCI_VERSION = 0x84000000
UART = 0x09000000
TIMER_100MS = 6_250_000          # counter ticks (62.5 MHz)

# --- guests --------------------------------------------------------------------------------------

VTIMER_NOW = """
    mrs x1, cntvct_el0
    msr cntv_cval_el0, x1
    mov x2, #1
    msr cntv_ctl_el0, x2
1:  b 1b
"""
VTIMER_WFI = f"""
    mrs x1, cntvct_el0
    ldr x2, ={TIMER_100MS}
    add x1, x1, x2
    msr cntv_cval_el0, x1
    mov x2, #1
    msr cntv_ctl_el0, x2
    wfi
""" + POWER_OFF


def sgi_guest(model: int) -> str:
    """Send SGI 1 to self with EOImode 1, acknowledge it, EOI, DIR, report the INTID."""
    if model == V2:
        setup = [f"ldr x1, ={DIST}", "mov w2, #1", "str w2, [x1]",        # GICD_CTLR.Enable
                 f"ldr x3, ={CPU_IF}", "mov w2, #0xff", "str w2, [x3, #4]",  # GICC_PMR
                 "ldr w2, =0x201", "str w2, [x3]",              # GICC_CTLR: Grp0 | EOImode
                 "ldr w2, =0x02000001", "str w2, [x1, #0xf00]"]  # GICD_SGIR: self, SGI 1
        ack, eoi = "ldr w4, [x3, #0xc]", ["str w4, [x3, #0x10]", "mov x7, #0x1000",
                                          "str w4, [x3, x7]"]    # GICC_EOIR, GICC_DIR
    else:
        setup = [f"ldr x1, ={DIST}", "mov w2, #0x12", "str w2, [x1]",     # ARE | EnableGrp1
                 f"ldr x3, ={REDIST + 0x10000}", "mov w2, #2", "str w2, [x3, #0x100]",  # SGI 1
                 "mov x2, #0xff", "msr S3_0_C4_C6_0, x2",        # ICC_PMR_EL1
                 "mov x2, #2", "msr S3_0_C12_C12_4, x2",         # ICC_CTLR_EL1.EOImode
                 "mov x2, #1", "msr S3_0_C12_C12_7, x2", "isb",  # ICC_IGRPEN1_EL1
                 "ldr x2, =0x1000001", "msr S3_0_C12_C11_5, x2", "isb"]  # ICC_SGI1R: self, 1
        ack, eoi = "mrs x4, S3_0_C12_C12_0", ["msr S3_0_C12_C12_1, x4",   # IAR1, EOIR1
                                              "msr S3_0_C12_C11_1, x4"]   # ICC_DIR_EL1
    return "\n".join([*setup, f"ldr x6, ={REPORT}", "1:", ack, "and w5, w4, #0x3ff",
                      "cmp w5, #1020", "b.hs 1b", *eoi, "str w5, [x6, #4]", "b ."])


# --- scenarios: each returns the records of one traced run ----------------------------------------


def wait_until(predicate: Callable[[], bool], timeout: float = DEADLINE) -> bool:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.001)
    return True


def _run(vcpu, until: int) -> object:
    """vcpu.run() until ``until`` (an exit reason); the deadline interrupts a stuck guest."""
    watchdog = threading.Timer(DEADLINE, vcpu.interrupt)
    watchdog.start()
    try:
        for _ in range(100):
            run = vcpu.run()
            if run.exit_reason == until:
                return run
        raise AssertionError(f"no exit {until}, last {run.exit_name}")
    finally:
        watchdog.cancel()


def _plain(source: str, drive: Callable[[object, object], None] | None = None
           ) -> list[TraceEvent]:
    """A VM without an in-kernel irqchip running ``source`` (``drive(vm, vcpu)`` runs it)."""
    vm, (vcpu,), ram = make_vm(1)
    try:
        vm.tracer.enable()
        load(vm, ram, CODE, source)
        start_at(vcpu, CODE)
        if drive is None:
            _run(vcpu, uapi.KVM_EXIT_SYSTEM_EVENT)
        else:
            drive(vm, vcpu)
        return vm.tracer.events()
    finally:
        vm.close()


def scenario_psci() -> list[TraceEvent]:
    return _plain(f"ldr x0, ={PSCI_VERSION}\n hvc #0\n" + POWER_OFF)


def scenario_mmio() -> list[TraceEvent]:
    def drive(_vm, vcpu):
        run = _run(vcpu, uapi.KVM_EXIT_MMIO)
        run.mmio.data[:4] = (0x1234).to_bytes(4, "little")
        assert _run(vcpu, uapi.KVM_EXIT_MMIO).mmio.is_write
        _run(vcpu, uapi.KVM_EXIT_SYSTEM_EVENT)
    return _plain(f"ldr x1, ={UART}\n ldr w2, [x1]\n str w2, [x1, #4]\n" + POWER_OFF, drive)


def scenario_wfi() -> list[TraceEvent]:
    """WFI traps and blocks (IRQs masked); KVM_IRQ_LINE wakes the vCPU once it sleeps."""
    def drive(vm, vcpu):
        def wake():
            assert wait_until(lambda: vcpu.blocked)
            vm.irq_line(irq_line.encode(uapi.KVM_ARM_IRQ_TYPE_CPU, 0,
                                        uapi.KVM_ARM_IRQ_CPU_IRQ), 1)
        waker = threading.Thread(target=wake)
        waker.start()
        _run(vcpu, uapi.KVM_EXIT_SYSTEM_EVENT)
        waker.join()
    return _plain("wfi\n" + POWER_OFF, drive)


def scenario_vtimer() -> list[TraceEvent]:
    """A timer already due while the guest spins: the PPI kicks it, KVM_EXIT_INTR reports it."""
    return _plain(VTIMER_NOW, lambda _vm, vcpu: _run(vcpu, uapi.KVM_EXIT_INTR))


def scenario_bg_timer() -> list[TraceEvent]:
    """WFI with the timer 100 ms ahead: the background timer wakes the vCPU."""
    return _plain(VTIMER_WFI)


def _gic_scenario(model: int, body: Callable[..., None]) -> list[TraceEvent]:
    vm, vcpu, ram, _dev = make_gic_vm(model)
    try:
        vm.tracer.enable()
        body(vm, vcpu, ram)
        return vm.tracer.events()
    finally:
        vm.close()


def scenario_spi(model: int) -> list[TraceEvent]:
    def body(vm, vcpu, ram):
        guest = Guest(vm, vcpu, ram, model, {40: False})
        vm.irq_line(irq_line.encode(uapi.KVM_ARM_IRQ_TYPE_SPI, 0, 40), 1)
        assert guest.take() == 40
    return _gic_scenario(model, body)


def scenario_sgi(model: int) -> list[TraceEvent]:
    def body(vm, vcpu, ram):
        load(vm, ram, CODE, sgi_guest(model))
        start_at(vcpu, CODE)
        run = _run(vcpu, uapi.KVM_EXIT_MMIO)
        assert run.mmio.phys_addr == REPORT + 4 and run.mmio.data[0] == 1
    return _gic_scenario(model, body)


def scenario_irqfd() -> list[TraceEvent]:
    """A level SPI through an irqfd + resamplefd: inject, acknowledge, EOI, resample."""
    fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    rfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def body(vm, vcpu, ram):
        vm.irqfd(fd, 9, resamplefd=rfd)
        guest = Guest(vm, vcpu, ram, V3, {41: True})
        os.eventfd_write(fd, 1)
        assert guest.take() == 41
    try:
        return _gic_scenario(V3, body)
    finally:
        os.close(fd)
        os.close(rfd)


def scenario_user_gic() -> list[TraceEvent]:
    """The VMM's GICv2: an SPI wire, acknowledge, EOI, DIR (EOImode 1), an SGI to CPU 1."""
    tracer = Tracer()
    tracer.enable()
    gic = UserGic(2, lambda _cpu, _line, _level: None, tracer=tracer)
    dist, cpuif = gic.distributor(0), gic.cpu_interface(0)
    dist.mmio_write(0x000, 4, 1)                  # GICD_CTLR.Enable
    dist.mmio_write(0x104, 4, 1 << 8)             # GICD_ISENABLER1: SPI 40
    dist.mmio_write(0x800 + 40, 1, 1)             # GICD_ITARGETSR: CPU 0
    cpuif.mmio_write(0x04, 4, 0xFF)               # GICC_PMR
    cpuif.mmio_write(0x00, 4, 0x201)              # GICC_CTLR: EnableGrp0 | EOImode
    gic.set_spi(40, True)
    assert cpuif.mmio_read(0x0C, 4) == 40         # GICC_IAR
    cpuif.mmio_write(0x10, 4, 40)                 # GICC_EOIR
    cpuif.mmio_write(0x1000, 4, 40)               # GICC_DIR
    dist.mmio_write(0xF00, 4, 0x00020001)         # GICD_SGIR: CPU 1, SGI 1
    return tracer.events()


SCENARIOS: dict[str, Callable[[], list[TraceEvent]]] = {
    "psci": scenario_psci, "mmio": scenario_mmio, "wfi": scenario_wfi,
    "vtimer": scenario_vtimer, "bg-timer": scenario_bg_timer,
    "spi-v2": lambda: scenario_spi(V2), "spi-v3": lambda: scenario_spi(V3),
    "sgi-v2": lambda: scenario_sgi(V2), "sgi-v3": lambda: scenario_sgi(V3),
    "irqfd": scenario_irqfd, "user-gic": scenario_user_gic,
}

# tracepoint -> [(scenario, args it must carry (subset), vCPU, emitting thread prefix)]
ANY = object()
EXPECTED: dict[str, list[tuple[str, dict[str, object], object, str]]] = {
    "kvm_entry": [("psci", {}, 0, "")],
    "kvm_exit": [("psci", {"ret": "TRAP", "reason": "HVC64", "esr_ec": 0x16}, 0, ""),
                 ("mmio", {"reason": "DABT_LOW", "vcpu_pc": CODE + 4}, 0, ""),
                 ("wfi", {"reason": "WFx", "esr_ec": 0x01}, 0, ""),
                 ("vtimer", {"ret": "IRQ", "reason": "IRQ"}, 0, "")],
    "kvm_userspace_exit": [("psci", {"reason": "SYSTEM_EVENT", "errno": 0}, 0, ""),
                           ("mmio", {"reason": "MMIO"}, 0, ""),
                           ("vtimer", {"reason": "INTR"}, 0, "")],
    "kvm_vcpu_wakeup": [("bg-timer", {"waited": True, "valid": True}, 0, ""),
                        ("wfi", {"waited": True, "valid": True}, 0, "")],
    "kvm_wfx_arm64": [("wfi", {"is_wfe": False, "vcpu_pc": CODE}, 0, "")],
    "kvm_hvc_arm64": [("psci", {"r0": PSCI_VERSION, "imm": 0, "vcpu_pc": CODE + 4}, 0, "")],
    "kvm_mmio": [("mmio", {"type": "unsatisfied-read", "gpa": UART, "len": 4}, 0, ""),
                 ("mmio", {"type": "read", "gpa": UART, "val": 0x1234}, 0, ""),
                 ("mmio", {"type": "write", "gpa": UART + 4, "val": 0x1234, "len": 4}, 0, ""),
                 ("spi-v3", {"type": "write", "gpa": DIST, "kernel": True}, 0, ""),
                 ("spi-v2", {"type": "read", "kernel": True}, 0, "")],
    "kvm_psci_call": [("psci", {"function": "psci_version", "fn": PSCI_VERSION,
                                "result": 0x10000}, 0, ""),
                      ("psci", {"function": "system_off", "result": None}, 0, "")],
    "kvm_irq_line": [("wfi", {"type": "CPU", "irq": 0, "level": True}, 0, ""),
                     ("spi-v2", {"type": "SPI", "irq": 40, "level": True}, ANY, "")],
    "kvm_set_irq": [("irqfd", {"gsi": 9, "intid": 41, "level": True}, -1, "irqfd-vm"),
                    ("irqfd", {"gsi": 9, "level": False}, -1, "")],
    "kvm_ack_irq": [("irqfd", {"irqchip": 0, "pin": 9, "gsi": 9}, -1, "")],
    "irqfd_inject": [("irqfd", {"gsi": 9, "count": 1, "resample": True}, -1, "irqfd-vm")],
    "irqfd_resample": [("irqfd", {"gsi": 9, "irqfds": 1}, -1, "")],
    "kvm_timer_update_irq": [("vtimer", {"irq": 27, "level": True}, 0, ""),
                             ("spi-v3", {"irq": 27, "level": False}, 0, "")],
    "kvm_timer_save_state": [("psci", {"timer": 0}, 0, ""), ("psci", {"timer": 1}, 0, ""),
                             ("bg-timer", {"timer": 0, "ctl": 1}, 0, "")],
    "kvm_timer_restore_state": [("psci", {"timer": 0, "ctl": 0}, 0, ""),
                                ("bg-timer", {"timer": 0, "ctl": 1}, 0, "")],
    "kvm_timer_ppi": [("vtimer", {"timer": 0, "irq": 27}, 0, "")],  # on the vCPU, as KVM
    "kvm_timer_hrtimer_expire": [("bg-timer", {"timer": 0, "irq": 27}, 0, "")],  # the vCPU, woken
    "vgic_update_irq_pending": [("spi-v3", {"irq": 40, "level": True}, -1, ""),
                                ("irqfd", {"irq": 41, "level": True}, -1, "irqfd-vm"),
                                ("spi-v2", {"irq": 27, "level": False}, 0, "")],
    "vgic_send_sgi": [("sgi-v2", {"intid": 1, "targets": 1}, 0, ""),
                      ("sgi-v3", {"intid": 1, "targets": 1}, 0, "")],
    "vgic_ack": [("sgi-v2", {"intid": 1, "source": 0, "group": 0}, 0, ""),
                 ("sgi-v3", {"intid": 1, "source": None, "group": 1}, 0, ""),
                 ("spi-v2", {"intid": 40}, 0, ""), ("spi-v3", {"intid": 40}, 0, ""),
                 ("irqfd", {"intid": 41}, 0, "")],
    "vgic_eoi": [("sgi-v2", {"intid": 1, "eoimode": True}, 0, ""),
                 ("sgi-v3", {"intid": 1, "eoimode": True}, 0, ""),
                 ("spi-v3", {"intid": 40, "eoimode": False}, 0, "")],
    "vgic_dir": [("sgi-v2", {"intid": 1}, 0, ""), ("sgi-v3", {"intid": 1}, 0, "")],
    "user_gic_set_irq": [("user-gic", {"intid": 40, "level": True}, -1, "")],
    "user_gic_send_sgi": [("user-gic", {"intid": 1, "targets": 0b10}, 0, "")],
    "user_gic_ack": [("user-gic", {"intid": 40, "source": None}, 0, "")],
    "user_gic_eoi": [("user-gic", {"intid": 40, "eoimode": True}, 0, "")],
    "user_gic_dir": [("user-gic", {"intid": 40}, 0, "")],
}


@pytest.fixture(scope="module")
def traced() -> Callable[[str], list[TraceEvent]]:
    """Each scenario runs once per module, on first use."""
    cache: dict[str, list[TraceEvent]] = {}

    def get(name: str) -> list[TraceEvent]:
        if name not in cache:
            cache[name] = SCENARIOS[name]()
        return cache[name]
    return get


def test_every_tracepoint_has_a_table_entry():
    assert set(EXPECTED) == set(TRACEPOINTS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tracepoint_fires_where_expected(name, traced):
    for scenario, args, vcpu, thread in EXPECTED[name]:
        events = traced(scenario)
        assert {e.name for e in events} <= set(TRACEPOINTS), "undeclared tracepoint"
        hits = [e for e in events if e.name == name and all(
            e.args.get(k, KeyError) == v for k, v in args.items())]
        assert hits, (f"{name} {args} not recorded by scenario {scenario}: "
                      f"{[e.args for e in events if e.name == name]}")
        if vcpu is not ANY:
            assert any(e.vcpu == vcpu for e in hits), [e.vcpu for e in hits]
        assert any(e.thread_name.startswith(thread) for e in hits), \
            [e.thread_name for e in hits]


def test_records_are_in_time_order_with_the_emitting_thread(traced):
    events = traced("irqfd")
    assert [e.ts_ns for e in events] == sorted(e.ts_ns for e in events)
    threads = {e.thread_name for e in events}
    assert threading.main_thread().name in threads and any(
        t.startswith("irqfd-vm") for t in threads)


def test_guest_slice_order_on_a_vcpu(traced):
    """entry and exit alternate; the HVC's handling and the return to userspace follow."""
    names = [e.name for e in traced("psci")
             if e.name in ("kvm_entry", "kvm_exit", "kvm_hvc_arm64", "kvm_userspace_exit")]
    assert names[:3] == ["kvm_entry", "kvm_exit", "kvm_hvc_arm64"]
    assert names[-1] == "kvm_userspace_exit"
    runs = [n for n in names if n in ("kvm_entry", "kvm_exit")]
    assert runs == ["kvm_entry", "kvm_exit"] * (len(runs) // 2)


# --- off by default, and free when off ----------------------------------------------------------


def test_tracer_is_off_by_default_and_records_nothing():
    vm, (vcpu,), ram = make_vm(1)
    try:
        assert vm.tracer.on is False and vcpu.tracer is vm.tracer
        load(vm, ram, CODE, f"ldr x0, ={PSCI_VERSION}\n hvc #0\n ldr x1, ={UART}\n"
             " str w0, [x1]\n wfi\n" + POWER_OFF)
        start_at(vcpu, CODE)
        vm.irq_line(irq_line.encode(uapi.KVM_ARM_IRQ_TYPE_CPU, 0, 0), 1)
        _run(vcpu, uapi.KVM_EXIT_MMIO)
        _run(vcpu, uapi.KVM_EXIT_SYSTEM_EVENT)
        assert vm.tracer.events() == [] and vm.tracer.emitted == 0
    finally:
        vm.close()


def test_vgic_off_records_nothing():
    vm, vcpu, ram, _dev = make_gic_vm(V3)
    try:
        load(vm, ram, CODE, sgi_guest(V3))
        start_at(vcpu, CODE)
        _run(vcpu, uapi.KVM_EXIT_MMIO)
        assert vm.vgic.tracer is vm.tracer and vm.vgic.vcpu_if(0).tracer is vm.tracer
        assert vm.tracer.emitted == 0
    finally:
        vm.close()


def test_the_gate_is_a_plain_slot_attribute():
    """``tracer.on`` is a slot (one attribute load), never a property or a call."""
    assert isinstance(Tracer.__dict__["on"], types.MemberDescriptorType)
    assert VcpuInterface(3).tracer.on is False
    assert UserGic(1, lambda *_: None).model.tracer.on is False


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Is ``node`` inside the body of an ``if <...>.on`` (possibly ``and``-ed)?"""
    child, parent = node, parents.get(node)
    while parent is not None:
        if isinstance(parent, ast.If) and child in parent.body and _tests_on(parent.test):
            return True
        if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return parent.name.startswith("_trace")   # helpers called only when on
        child, parent = parent, parents.get(parent)
    return False


def _tests_on(test: ast.AST) -> bool:
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return any(_tests_on(v) for v in test.values)
    return isinstance(test, ast.Attribute) and test.attr == "on"


TRACE_CALLS = ("emit", "kvm_exit", "_traced_dispatch")


@pytest.mark.parametrize("path", sorted(p for p in SRC.rglob("*.py")
                                        if p.name not in ("trace.py", "trace_export.py")),
                         ids=lambda p: str(p.relative_to(SRC)))
def test_every_trace_site_is_gated_by_one_attribute_test(path):
    """No argument is built, nothing formatted or called, unless the tracer is on."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name)):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
            if name in TRACE_CALLS and not (name == "emit" and _in_untraced_stub(node, parents)):
                assert _guarded(node, parents), f"{path.name}:{node.lineno}: ungated {name}()"


def _in_untraced_stub(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    parent = parents.get(node)
    while parent is not None and not isinstance(parent, ast.ClassDef):
        parent = parents.get(parent)
    return parent is not None and parent.name == "_Untraced"


# --- the buffer ----------------------------------------------------------------------------------


def test_ring_buffer_overwrites_the_oldest_and_counts_the_overrun():
    tracer = Tracer(capacity=3)
    tracer.enable()
    for i in range(5):
        tracer.emit("kvm_entry", 0, vcpu_pc=i)
    assert [e.args["vcpu_pc"] for e in tracer.events()] == [2, 3, 4]
    assert tracer.overrun == 2
    tracer.disable()
    assert not tracer.on and len(tracer.events()) == 3


def test_concurrent_emitters_lose_nothing():
    tracer = Tracer()
    tracer.enable()

    def emit(n):
        for i in range(2000):
            tracer.emit("kvm_irq_line", n, i=i)
    threads = [threading.Thread(target=emit, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = tracer.events()
    assert len(events) == 8000 and tracer.overrun == 0
    assert [e.ts_ns for e in events] == sorted(e.ts_ns for e in events)
    for n in range(4):
        assert [e.args["i"] for e in events if e.vcpu == n] == list(range(2000))
