"""The guest console's host side: where the UART's output goes and where its input comes from.

Counterpart: QEMU's chardev backends (``-serial stdio`` / ``-serial file:PATH``). Input is read
by a daemon thread and fed to the UART as fast as its FIFO takes it, so nothing typed is lost.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import BinaryIO, Protocol

from softkvm.errors import ConfigError


class ConsoleInput(Protocol):
    def receive(self, data: bytes) -> int: ...
    def wait_for_room(self, timeout: float | None = None) -> bool: ...


def open_serial(spec: str) -> BinaryIO | None:
    """``stdio`` (None: the process's stdout) or ``file:PATH``."""
    if spec == "stdio":
        return None
    if spec.startswith("file:") and len(spec) > 5:
        try:
            return open(spec[5:], "wb", buffering=0)  # noqa: SIM115 - lives as long as the VM
        except OSError as err:
            raise ConfigError(f"cannot open serial output '{spec[5:]}': {err.strerror}") from err
    raise ConfigError(f"bad --serial '{spec}': use stdio or file:PATH")


def writer(stream: BinaryIO | None) -> Callable[[bytes], None]:
    """Unbuffered output, so the guest's lines show as it prints them."""
    out = stream if stream is not None else sys.stdout.buffer

    def write(data: bytes) -> None:
        out.write(data)
        out.flush()

    return write


def start_input(uart: ConsoleInput, fd: int) -> threading.Thread:
    """Feed everything readable on ``fd`` to the UART until end of file."""

    def pump() -> None:
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError:
                return
            if not data:
                return
            while data:
                taken = uart.receive(data)
                data = data[taken:]
                if data:
                    uart.wait_for_room(0.1)

    thread = threading.Thread(target=pump, name="softkvm-console-in", daemon=True)
    thread.start()
    return thread
