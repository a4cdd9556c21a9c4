"""The interrupt guests on the real core, in every irqchip set-up a KVM user can choose: the
in-kernel vGICv3, the in-kernel vGICv2 and the VMM's own GICv2 (``--irqchip user``).

- ``gic`` (ipi/active/priority/mmio) and ``timer`` on 1, 2 and 4 vCPUs;
- ``gic spi``: the host raises SPI 40 (edge) and 41 (level) while the guest waits, following the
  guest's printed commands (KVM_IRQ_LINE in kernel mode, the VMM GIC's input in user mode);
- ``uart``: a line fed on the console input comes back through RX interrupts;
- ``irqfd``: eventfd devices on other threads (edge with a handshake, level with a resamplefd),
  and signals sent before the vGIC exists;
- ``demo``: timer ticks and IPIs between vCPUs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from softkvm.kvm import uapi
from softkvm.kvm.api import Vm
from softkvm.vmm.builder import Machine
from softkvm.vmm.devices.eventfd_device import EventfdDevice
from softkvm.vmm.runner import StopReason
from tests.support.console import LineConsole
from tests.support.guests import ROOT, GuestRun, guest_image, run_guest

MODES = [("v3", "kernel"), ("v2", "kernel"), ("v2", "user")]
KERNEL_MODES = [m for m in MODES if m[1] == "kernel"]
MODE_IDS = [f"gic{g}-{i}" for g, i in MODES]


def assert_passed(run: GuestRun) -> None:
    assert run.result.reason is StopReason.POWER_OFF, (run.result, run.output[-2000:])
    assert run.failures == [], run.output[-4000:]
    assert run.passed > 0


@pytest.mark.guest
@pytest.mark.parametrize("smp", [1, 2, 4])
@pytest.mark.parametrize(("gic", "irqchip"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize("name", ["gic", "timer"])
def test_interrupt_guest_passes(name, gic, irqchip, smp):
    assert_passed(run_guest(name, smp, gic=gic, irqchip=irqchip))


@pytest.mark.guest
@pytest.mark.parametrize(("gic", "irqchip"), MODES, ids=MODE_IDS)
def test_gic_guest_runs_every_default_subtest(gic, irqchip):
    run = run_guest("gic", 2, gic=gic, irqchip=irqchip)
    assert_passed(run)
    for prefix in ("ipi-", "active-", "priority-"):
        assert f"PASS: {prefix}" in run.output, prefix
    if gic == "v2":
        assert "PASS: mmio-" in run.output


@pytest.mark.guest
@pytest.mark.parametrize(("gic", "irqchip"), MODES, ids=MODE_IDS)
def test_timer_guest_checks_both_timers(gic, irqchip):
    run = run_guest("timer", 1, gic=gic, irqchip=irqchip)
    assert_passed(run)
    for timer in ("vtimer", "ptimer"):
        for check in ("fire", "imask", "pending-while-disabled", "wfi-masked", "tval-expired",
                      "periodic"):
            assert f"PASS: {timer}-{check}:" in run.output, (timer, check)


# --- gic spi: the host drives SPI lines on the guest's command -----------------------------------

class SpiHost:
    """Acts on the guest's PULSE/RAISE/LOWER lines through the machine's SPI inputs."""

    COMMAND = re.compile(r"^(PULSE|RAISE|LOWER) (\d+)$")

    def __init__(self) -> None:
        self.machine: Machine | None = None
        self.commands: list[str] = []

    def attach(self, machine: Machine) -> None:
        self.machine = machine

    def on_line(self, line: str) -> None:
        match = self.COMMAND.match(line)
        if match is None:
            return
        self.commands.append(line)
        assert self.machine is not None
        spi = self.machine.irqchip.spi_line(int(match.group(2)))
        verb = match.group(1)
        if verb in ("PULSE", "RAISE"):
            spi.set_level(True)
        if verb in ("PULSE", "LOWER"):
            spi.set_level(False)


@pytest.mark.guest
@pytest.mark.parametrize("smp", [1, 2])
@pytest.mark.parametrize(("gic", "irqchip"), MODES, ids=MODE_IDS)
def test_host_driven_spis(gic, irqchip, smp):
    host = SpiHost()
    run = run_guest("gic", smp, gic=gic, irqchip=irqchip, append="spi",
                    console=LineConsole(host.on_line), before_run=host.attach)
    assert_passed(run)
    assert host.commands == ["PULSE 40", "PULSE 40", "RAISE 41", "LOWER 41", "RAISE 41",
                             "LOWER 41"], run.output[-3000:]
    assert "PASS: spi-level-high-redelivered" in run.output
    assert "DONE spi" in run.output


# --- uart: RX interrupts -----------------------------------------------------------------------

def _pipe_with(data: bytes):
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    return os.fdopen(r, "rb")


@pytest.mark.guest
@pytest.mark.parametrize(("gic", "irqchip"), MODES, ids=MODE_IDS)
def test_uart_echoes_a_line_received_by_interrupt(gic, irqchip):
    with _pipe_with(b"hello softkvm\n") as console_in:
        run = run_guest("uart", 1, gic=gic, irqchip=irqchip, console_in=console_in)
    assert_passed(run)
    assert "echo: hello softkvm" in run.output


@pytest.mark.guest
@pytest.mark.parametrize("irqchip", ["kernel", "user"])
def test_uart_through_the_cli_stdin(irqchip):
    proc = subprocess.run(
        [sys.executable, "-m", "softkvm", "run", "--gic", "v2", "--irqchip", irqchip,
         "--timeout", "120", str(guest_image("uart"))],
        input="hello\n", capture_output=True, text=True, timeout=180,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 0, proc.stderr
    assert "echo: hello" in proc.stdout
    assert "SUMMARY: 1 passed, 0 failed" in proc.stdout


# --- irqfd: devices on other threads, and signals before the vGIC exists -----------------------

EDGE_GSI, LEVEL_GSI = 10, 11          # SPI 42 (edge) and SPI 43 (level) in the guest
DELIVERY = re.compile(r"^IRQFD (\d+) \d+$")


class _SignalBeforeInit:
    """A vGIC device whose CTRL_INIT first runs ``before_init`` (the irqfds exist then)."""

    def __init__(self, device, before_init) -> None:
        self._device, self._before_init = device, before_init

    def __getattr__(self, name):
        return getattr(self._device, name)

    def set_attr(self, group: int, attr: int, value: int = 0) -> None:
        if (group, attr) == (uapi.KVM_DEV_ARM_VGIC_GRP_CTRL, uapi.KVM_DEV_ARM_VGIC_CTRL_INIT):
            self._before_init()
        self._device.set_attr(group, attr, value)


class IrqfdHost:
    """Two eventfd devices: an edge one that sends its next event when the guest reports the
    previous delivery, and a level one with a resamplefd, re-asserted after each EOI."""

    def __init__(self, edges: int, levels: int) -> None:
        self.edges, self.levels = edges, levels
        self.edge = EventfdDevice.create(level=False, window=1, name="edge")
        self.level = EventfdDevice.create(level=True, name="level")
        self.seen = {42: 0, 43: 0}

    def assign(self, vm) -> None:
        vm.irqfd(self.edge.irqfd, EDGE_GSI)
        vm.irqfd(self.level.irqfd, LEVEL_GSI, resamplefd=self.level.resamplefd)

    def start(self, _machine: Machine) -> None:
        self.edge.start()
        self.level.start()

    def on_line(self, line: str) -> None:
        if line == "READY irqfd":
            self.edge.raise_events(self.edges)
            self.level.raise_events(self.levels)
        elif (match := DELIVERY.match(line)) is not None:
            intid = int(match.group(1))
            self.seen[intid] += 1
            if intid == 42:
                self.edge.ack()

    def close(self) -> None:
        self.edge.close()
        self.level.close()


@pytest.mark.guest
@pytest.mark.parametrize("smp", [1, 2])
@pytest.mark.parametrize(("gic", "irqchip"), KERNEL_MODES, ids=MODE_IDS[:2])
def test_irqfd_guest_sees_every_event(gic, irqchip, smp):
    edges, levels = 40, 40
    host = IrqfdHost(edges, levels)

    def before_run(machine: Machine) -> None:
        host.assign(machine.vm)
        host.start(machine)

    try:
        run = run_guest("irqfd", smp, gic=gic, irqchip=irqchip,
                        append=f"irqfd edge={edges} level={levels}",
                        console=LineConsole(host.on_line), before_run=before_run)
    finally:
        host.close()
    assert_passed(run)
    assert f"COUNTS edge={edges} level={levels}" in run.output
    assert host.seen == {42: edges, 43: levels}
    assert host.level.stats.resamples == levels and host.level.stats.spurious == 0
    assert host.edge.stats.signals == edges


@pytest.mark.guest
@pytest.mark.parametrize(("gic", "irqchip"), KERNEL_MODES, ids=MODE_IDS[:2])
def test_irqfd_signals_before_vgic_init_reach_the_guest(gic, irqchip, monkeypatch):
    """Both irqfds are assigned and signalled before KVM_DEV_ARM_VGIC_CTRL_INIT: the edge is
    delivered once and the level line is up when the guest enables the SPI."""
    host = IrqfdHost(0, 0)          # nothing more once the guest is READY
    create_device = Vm.create_device

    def early_signals(vm: Vm) -> None:
        host.assign(vm)
        os.eventfd_write(host.edge.irqfd, 1)
        host.level.start()
        host.level.raise_events(1)
        assert host.level.wait_signals(1, 30)

    def create_device_signalling_before_init(vm: Vm, dev_type: int):
        return _SignalBeforeInit(create_device(vm, dev_type), lambda: early_signals(vm))

    monkeypatch.setattr(Vm, "create_device", create_device_signalling_before_init)
    try:
        run = run_guest("irqfd", 1, gic=gic, irqchip=irqchip, append="irqfd early edge=1 level=1",
                        console=LineConsole(host.on_line))
    finally:
        host.close()
    assert_passed(run)
    assert "COUNTS edge=1 level=1" in run.output
    assert host.level.stats.resamples == 1


# --- demo: what `make run` shows ---------------------------------------------------------------

@pytest.mark.guest
@pytest.mark.parametrize(("gic", "irqchip"), MODES, ids=MODE_IDS)
def test_demo_shows_ticks_and_ipis(gic, irqchip):
    run = run_guest("demo", 4, gic=gic, irqchip=irqchip)
    assert_passed(run)
    match = re.search(r"demo: 4 CPUs said hello, (\d+) ticks, (\d+) IPIs", run.output)
    assert match is not None, run.output[-2000:]
    assert int(match.group(1)) >= 4 and int(match.group(2)) >= 3
