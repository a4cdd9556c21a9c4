"""The CLI as a user meets it: exit codes and one readable line on every failure."""

import os
import subprocess
import sys

import pytest

from softkvm.vmm.fdt import dtb_to_dict
from tests.support.guests import ROOT, guest_image

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def softkvm(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "softkvm", *map(str, args)], capture_output=True,
                          text=True, env=ENV, timeout=timeout)


def one_error_line(proc):
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("softkvm:"), lines[0]
    return lines[0]


def test_hello_exits_zero():
    proc = softkvm("run", guest_image("hello"))
    assert proc.returncode == 0, proc.stderr
    assert "Hello from softkvm guest" in proc.stdout


def test_kernel_option_and_stats(tmp_path):
    dtb = tmp_path / "virt.dtb"
    proc = softkvm("run", "--smp", 2, "-m", "128M", "--stats", "--dump-dtb", dtb,
                   "--kernel", guest_image("smp"))
    assert proc.returncode == 0, proc.stderr
    assert dtb.read_bytes()[:4] == b"\xd0\x0d\xfe\xed"
    assert "hvc_exit_stat" in proc.stderr and "vcpu1" in proc.stderr
    assert "rng-seed" in dtb_to_dict(dtb.read_bytes())["/chosen"]


def test_dtb_randomness_off_leaves_the_seeds_out(tmp_path):
    dtb = tmp_path / "virt.dtb"
    proc = softkvm("run", "--dtb-randomness", "off", "--dump-dtb", dtb, guest_image("hello"))
    assert proc.returncode == 0, proc.stderr
    chosen = dtb_to_dict(dtb.read_bytes())["/chosen"]
    assert "rng-seed" not in chosen and "kaslr-seed" not in chosen


@pytest.mark.parametrize("args,needle", [
    (["run", "/nonexistent/kernel"], "not found"),
    (["run", "--smp", "0", "IMAGE"], "--smp"),
    (["run", "-m", "lots", "IMAGE"], "bad memory size"),
    (["run", "--irqchip", "user", "--gic", "v3", "IMAGE"], "--gic v2"),
    (["run"], "no guest image"),
])
def test_bad_input_one_line(args, needle):
    args = [str(guest_image("hello")) if a == "IMAGE" else a for a in args]
    proc = softkvm(*args)
    assert proc.returncode == 1
    assert needle in one_error_line(proc)


def test_bad_option_is_a_usage_error():
    proc = softkvm("run", "--gic", "v9", "x.elf")
    assert proc.returncode == 2
    assert "invalid choice" in one_error_line(proc)


def test_bad_images(tmp_path):
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    broken = tmp_path / "broken.elf"
    broken.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 20)
    for image in (empty, broken):
        proc = softkvm("run", image)
        assert proc.returncode == 1
        assert str(image.name) in one_error_line(proc)


def test_hanging_guest_times_out(tmp_path):
    spin = tmp_path / "spin.bin"
    spin.write_bytes((0x14000000).to_bytes(4, "little"))  # b .
    proc = softkvm("run", "--timeout", "1", spin)
    assert proc.returncode == 1
    assert "did not power off" in one_error_line(proc)
