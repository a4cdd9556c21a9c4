"""The foundation guests on the real core, 1, 2 and 4 vCPUs: each reports PASS over the UART."""

import pytest

from softkvm.vmm.runner import StopReason
from tests.support.guests import run_guest

GUESTS = ["hello", "exceptions", "smp", "psci", "atomics", "demo"]


@pytest.mark.guest
@pytest.mark.parametrize("smp", [1, 2, 4])
@pytest.mark.parametrize("name", GUESTS)
def test_guest_passes(name, smp):
    run = run_guest(name, smp)
    assert run.result.reason is StopReason.POWER_OFF, (run.result, run.output[-2000:])
    assert run.failures == [], run.output[-4000:]
    assert run.passed > 0


def test_hello_prints_its_line():
    run = run_guest("hello")
    assert "Hello from softkvm guest" in run.output


def test_demo_every_cpu_says_hello():
    run = run_guest("demo", 4)
    for cpu in range(4):
        assert f"Hello from CPU {cpu} (MPIDR 0x{cpu:010x})" in run.output
    assert "demo: 4 CPUs said hello" in run.output


def test_smp_reports_every_secondary():
    run = run_guest("smp", 4)
    for cpu in (1, 2, 3):
        assert f"PASS: smp-cpu{cpu}-mpidr" in run.output
        assert f"PASS: smp-cpu{cpu}-off" in run.output


def test_atomics_exact_total():
    run = run_guest("atomics", 4)
    assert "1000000 of 1000000 increments on 4 CPUs" in run.output
