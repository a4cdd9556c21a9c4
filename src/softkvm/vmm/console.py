"""The guest console's host side: where the UART's output goes and where its input comes from.

Counterpart: QEMU's chardev backends (``-serial stdio`` / ``-serial file:PATH``). Input is read
by a daemon thread and fed to the UART as fast as its FIFO takes it, so nothing typed is lost.
"""

from __future__ import annotations

import os
import sys
import threading
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


FLUSH_DELAY_S = 0.01   # a partial line (a prompt, an echoed keystroke) waits at most this long
FLUSH_BYTES = 4096


class ConsoleWriter:
    """The UART's output sink: a complete line goes out at once, a partial line (a shell
    prompt, an echoed keystroke) within ``FLUSH_DELAY_S``. A printing guest then costs one
    write (and one wake-up of whoever reads the other end) per line, not per character."""

    def __init__(self, stream: BinaryIO | None, delay: float = FLUSH_DELAY_S) -> None:
        self._out = stream if stream is not None else sys.stdout.buffer
        self._delay = delay
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None   # started by the first partial line

    def __call__(self, data: bytes) -> None:
        with self._cond:
            was_empty = not self._buf
            self._buf += data
            if b"\n" in data or len(self._buf) >= FLUSH_BYTES or self._closed:
                self._flush_locked()
            elif was_empty:
                self._start_flusher()
                self._cond.notify()   # the flusher times this partial line

    def flush(self) -> None:
        with self._cond:
            self._flush_locked()

    def close(self) -> None:
        """Flush what is left and stop the flusher (later output is written at once)."""
        with self._cond:
            self._closed = True
            self._flush_locked()
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=1)

    def _start_flusher(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._flusher, name="softkvm-console-out",
                                            daemon=True)
            self._thread.start()

    def _flush_locked(self) -> None:
        if not self._buf:
            return
        try:
            self._out.write(bytes(self._buf))
            self._out.flush()
        except (OSError, ValueError):
            pass   # a closed or broken reader (a pipe whose end went away) takes nothing more
        self._buf.clear()

    def _flusher(self) -> None:
        with self._cond:
            while not self._closed:
                if not self._buf:
                    self._cond.wait()
                    continue
                self._cond.wait(self._delay)   # give the line the time to complete
                self._flush_locked()


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
