"""Boot the real Debian arm64 Linux: in-kernel vGICv3 and vGICv2, and the userspace GICv2.

Marked slow (each boot takes seconds); CI runs it. The guest's /init prints a marker, `uname -a`,
dumps /proc/interrupts around `sleep 1` and powers off through PSCI.
"""

import io
import os
import subprocess
import sys
import threading

import pytest

from softkvm.vmm.builder import build
from softkvm.vmm.config import VmConfig
from softkvm.vmm.runner import StopReason
from tests.support.guests import ROOT
from tests.support.linux import APPEND, BOOT_TIMEOUT, bundle, initramfs_with_init, interrupt_dumps

MODES = [("v3", "kernel"), ("v2", "kernel"), ("v2", "user")]


def boot(gic, irqchip, smp, append=APPEND, initrd=None, dtb_randomness=True):
    image, default_initrd = bundle()
    out = io.BytesIO()
    config = VmConfig(kernel=image, initrd=initrd or default_initrd, append=append, smp=smp,
                      mem_size=512 << 20, gic=gic, irqchip=irqchip, timeout=BOOT_TIMEOUT,
                      console_out=out, dtb_randomness=dtb_randomness)
    machine = build(config)
    try:
        result = machine.run()
    finally:
        machine.close()
    return result, out.getvalue().decode(errors="replace")


@pytest.mark.slow
@pytest.mark.parametrize("smp", [1, 2])
@pytest.mark.parametrize("gic,irqchip", MODES, ids=[f"{g}-{i}" for g, i in MODES])
def test_linux_boots_ticks_and_powers_off(gic, irqchip, smp):
    result, console = boot(gic, irqchip, smp)
    assert result.reason is StopReason.POWER_OFF, (result, console[-3000:])
    assert "LINUXGUEST-MARKER" in console
    assert "Linux (none) 6." in console and " aarch64 GNU/Linux" in console  # uname -a
    assert f"--- nproc: {smp}" in console
    # /chosen's seeds, as QEMU's: the RNG is ready before anything asks it, Linux moved itself
    assert "[    0.000000] random: crng init done" in console
    assert "KASLR enabled" in console
    first, second = interrupt_dumps(console)[:2]
    assert second.total("arch_timer") > first.total("arch_timer")
    if smp == 2:
        assert second.total("IPI0") + second.total("IPI1") > 0  # reschedule / call-function IPIs
        assert all(n > 0 for n in second.rows["arch_timer"])   # both CPUs take timer ticks
    assert "LINUXGUEST-DONE" in console
    assert "Oops" not in console and "BUG:" not in console


@pytest.mark.slow
def test_timer_ticks_at_hz_without_nohz():
    """With periodic ticks, one second of `sleep 1` shows about HZ (250) arch_timer interrupts.
    (Booted with --dtb-randomness off: no seeds, so Linux stays where it was loaded.)"""
    result, console = boot("v3", "kernel", 1, append=APPEND + " nohz=off", dtb_randomness=False)
    assert result.reason is StopReason.POWER_OFF
    assert "KASLR disabled due to lack of seed" in console
    assert "random: crng init done" not in console.split("Run /init")[0]
    first, second = interrupt_dumps(console)[:2]
    ticks = second.total("arch_timer") - first.total("arch_timer")
    assert 125 <= ticks <= 500, ticks  # HZ=250 over ~1 s of guest time (generous bounds)


SHELL_INIT = """#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo SHELL-READY
exec sh
"""


class Console:
    """A softkvm process whose console we read as it prints and type into at the prompt."""

    def __init__(self, args: list) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "softkvm", "run", *map(str, args)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        self.output = bytearray()
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while chunk := self.proc.stdout.read1(4096):
            with self.changed:
                self.output += chunk
                self.changed.notify_all()

    def wait_for(self, text: bytes, timeout: float) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: text in self.output, timeout), \
                self.output[-2000:].decode(errors="replace")

    def type(self, line: bytes) -> None:
        self.proc.stdin.write(line)
        self.proc.stdin.flush()


@pytest.mark.slow
@pytest.mark.parametrize("gic,irqchip", [("v3", "kernel"), ("v2", "user")])
def test_interactive_shell_on_the_console(tmp_path, gic, irqchip):
    """What a user types on stdin reaches a shell through the PL011's RX interrupt."""
    image, initrd = bundle()
    shell_initrd = initramfs_with_init(initrd, SHELL_INIT, tmp_path / "shell.cpio.gz")
    console = Console(["-m", "512M", "--gic", gic, "--irqchip", irqchip, "--timeout",
                       BOOT_TIMEOUT, "--kernel", image, "--initrd", shell_initrd,
                       "--append", APPEND])
    console.wait_for(b"/ # ", BOOT_TIMEOUT)
    console.type(b"ls /\n")
    console.wait_for(b"sbin", 120)                       # `ls /` listed the root directory
    console.type(b"echo SHELL-$((6 * 7))\n")
    console.wait_for(b"SHELL-42", 120)                   # the shell evaluated what we typed
    console.type(b"poweroff -f\n")
    assert console.proc.wait(120) == 0, console.proc.stderr.read().decode()[-2000:]
