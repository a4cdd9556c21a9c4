"""The console's input pump: everything written to the host side reaches the UART, in order."""

import os
import threading

import pytest

from softkvm.errors import ConfigError
from softkvm.vmm.console import open_serial, start_input


class TinyFifoUart:
    """A UART whose FIFO holds 3 bytes; a 'guest' thread drains it slowly."""

    def __init__(self):
        self.fifo = bytearray()
        self.cond = threading.Condition()
        self.received = bytearray()

    def receive(self, data):
        with self.cond:
            taken = min(len(data), 3 - len(self.fifo))
            self.fifo += data[:taken]
            self.cond.notify_all()
            return taken

    def wait_for_room(self, timeout=None):
        with self.cond:
            return self.cond.wait_for(lambda: len(self.fifo) < 3, timeout)

    def drain(self, total):
        while len(self.received) < total:
            with self.cond:
                self.cond.wait_for(lambda: self.fifo, 5)
                self.received += self.fifo[:1]
                del self.fifo[:1]
                self.cond.notify_all()


def test_input_is_never_dropped():
    uart = TinyFifoUart()
    r, w = os.pipe()
    message = b"hello, guest! " * 50
    thread = start_input(uart, r)
    os.write(w, message)
    os.close(w)
    uart.drain(len(message))
    thread.join(5)
    assert bytes(uart.received) == message
    os.close(r)


def test_serial_spec(tmp_path):
    assert open_serial("stdio") is None
    stream = open_serial(f"file:{tmp_path / 'out'}")
    stream.write(b"x")
    stream.close()
    assert (tmp_path / "out").read_bytes() == b"x"
    with pytest.raises(ConfigError, match="stdio or file:PATH"):
        open_serial("tcp:1234")
