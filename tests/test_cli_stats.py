"""``softkvm run --stats`` and ``softkvm stat``, as a user meets them (subprocesses)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from softkvm.kvm.stats import EXIT_REASONS, KVM_VCPU_STATS, KVM_VM_STATS
from tests.support.guests import guest_image
from tests.test_cli import ENV, one_error_line, softkvm

SOCKET_WAIT = 120.0   # a loaded CI machine may take a while to boot the VM: generous


def sections(report: str, nr_values: int) -> dict[str, dict[str, list[int]]]:
    """The --stats tables as {section: {counter: [values...]}} (names may hold spaces)."""
    found: dict[str, dict[str, list[int]]] = {}
    current = None
    for line in report.splitlines():
        text = line.strip()
        if text.startswith("[") and text.endswith("]"):
            current = found.setdefault(text[1:-1], {})
            continue
        tokens = text.split()
        if current is None or len(tokens) <= nr_values:
            continue
        if all(t.isdigit() for t in tokens[-nr_values:]):
            current[" ".join(tokens[:-nr_values])] = [int(t) for t in tokens[-nr_values:]]
    return found


def test_stats_table_has_kvms_names_and_per_vcpu_counts():
    proc = softkvm("run", "--smp", 2, "--stats", "--no-stat-socket", guest_image("psci"))
    assert proc.returncode == 0, proc.stderr
    vcpus = sections(proc.stderr, 3)  # vcpu0, vcpu1, total
    kvm, reasons = vcpus["KVM vCPU stats"], vcpus["exits by reason"]
    assert list(kvm) == list(KVM_VCPU_STATS)
    assert [label for label, _ in EXIT_REASONS] == list(reasons)
    assert kvm["hvc_exit_stat"][0] > 0 and kvm["hvc_exit_stat"][1] > 0  # PSCI from both
    assert kvm["mmio_exit_user"][0] > 0  # the boot CPU prints
    for index in range(3):  # each vCPU, then the total column
        assert kvm["exits"][index] == sum(values[index] for values in reasons.values())
    for values in [*kvm.values(), *reasons.values()]:
        assert values[2] == values[0] + values[1]
    assert vcpus["softkvm vCPU counters"]["psci_calls"][0] == kvm["hvc_exit_stat"][0]
    vm = sections(proc.stderr, 1)["KVM VM stats"]
    assert list(vm) == list(KVM_VM_STATS)


def test_stat_socket_usage_errors(tmp_path):
    proc = softkvm("run", "--stat-socket", tmp_path / "no" / "vm.sock", guest_image("hello"))
    assert proc.returncode == 1 and "does not exist" in one_error_line(proc)
    proc = softkvm("run", "--stat-socket", tmp_path / "vm.sock", "--no-stat-socket", "x.elf")
    assert proc.returncode == 2 and "not allowed with" in one_error_line(proc)


@pytest.fixture
def private_env(tmp_path):
    """Per-PID sockets of this test only (not those of other softkvm runs on the machine)."""
    (tmp_path / "tmp").mkdir()
    return {**ENV, "XDG_RUNTIME_DIR": str(tmp_path), "TMPDIR": str(tmp_path / "tmp")}


def stat(env, *args):
    return subprocess.run([sys.executable, "-m", "softkvm", "stat", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)


def wait_for(path, proc):
    deadline = time.monotonic() + SOCKET_WAIT
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_live_counters_of_a_running_vm(tmp_path, private_env):
    # bench's 1 kHz timer test, for minutes: ends by our SIGINT (--timeout is a safety net)
    run = subprocess.Popen(
        [sys.executable, "-m", "softkvm", "run", "--smp", "2", "--timeout", "300", "--append",
         "ticks-1khz tickms=300000", str(guest_image("bench"))],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=private_env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # even if we ignore it
    sock = tmp_path / "softkvm" / f"{run.pid}.sock"
    try:
        wait_for(sock, run)
        by_pid = stat(private_env, run.pid, "--once", "--interval", "0.5")
        assert by_pid.returncode == 0, by_pid.stderr
        lines = {line.split()[0]: line.split() for line in by_pid.stdout.splitlines()
                 if line.split()}
        assert f"softkvm {run.pid}: 2 vCPUs" in by_pid.stdout
        assert lines["counter"] == ["counter", "total", "/s", "vcpu0", "/s", "vcpu1", "/s"]
        assert int(lines["exits"][1]) > 0 and int(lines["wfi_exit_stat"][1]) > 0

        by_socket = stat(private_env, "--socket", sock, "-n", 2, "--interval", "0.2", "--json")
        assert by_socket.returncode == 0, by_socket.stderr
        snaps = [json.loads(line) for line in by_socket.stdout.splitlines()]
        assert len(snaps) == 2 and snaps[0]["pid"] == run.pid
        assert snaps[1]["monotonic"] > snaps[0]["monotonic"]
        assert [v["id"] for v in snaps[1]["vcpus"]] == [0, 1]
        exits = [sum(v["kvm"]["exits"] for v in s["vcpus"]) for s in snaps]
        assert exits[1] >= exits[0] > 0

        only_one = stat(private_env, "--once", "--json")  # no PID: the only run there is
        assert only_one.returncode == 0 and json.loads(only_one.stdout)["pid"] == run.pid
    finally:
        run.send_signal(signal.SIGINT)  # Ctrl-C: the run cleans up and exits
        try:
            _out, err = run.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            run.kill()
            raise
    assert run.returncode == 130, err
    assert not sock.exists()  # removed at exit
    gone = stat(private_env, run.pid, "--once")
    assert gone.returncode == 1 and f"no softkvm process at PID {run.pid}" in one_error_line(gone)


def test_stat_without_a_vm(private_env):
    proc = stat(private_env, "--once")
    assert proc.returncode == 1 and "no softkvm process is running" in one_error_line(proc)
    proc = stat(private_env, 999999, "--socket", "x.sock")
    assert proc.returncode == 1 and "not both" in one_error_line(proc)
    proc = stat(private_env, "--interval", "0")
    assert proc.returncode == 1 and "--interval" in one_error_line(proc)
