"""The console: the input pump delivers everything written to the host side to the UART, in
order; the output writer sends whole lines at once and partial ones after a short delay."""

import os
import threading

import pytest

from softkvm.errors import ConfigError
from softkvm.vmm.console import ConsoleWriter, open_serial, start_input


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


class Recorder:
    """A stream that records each write and lets a test wait for one."""

    def __init__(self):
        self.writes = []
        self.cond = threading.Condition()

    def write(self, data):
        with self.cond:
            self.writes.append(bytes(data))
            self.cond.notify_all()

    def flush(self):
        pass

    def wait_writes(self, n, timeout=5.0):
        with self.cond:
            return self.cond.wait_for(lambda: len(self.writes) >= n, timeout)


def test_a_line_printed_a_character_at_a_time_is_one_write():
    out = Recorder()
    writer = ConsoleWriter(out, delay=60.0)   # no partial-line flush can interfere
    for byte in b"hello\nworld\n":
        writer(bytes([byte]))
    assert out.writes == [b"hello\n", b"world\n"]
    writer.close()


def test_a_partial_line_goes_out_after_the_delay():
    out = Recorder()
    writer = ConsoleWriter(out, delay=0.01)
    writer(b"/ # ")
    assert out.wait_writes(1) and out.writes == [b"/ # "]
    writer.close()


def test_close_flushes_what_is_left_and_later_output_goes_straight_out():
    out = Recorder()
    writer = ConsoleWriter(out, delay=60.0)
    writer(b"no newline")
    assert out.writes == []
    writer.close()
    assert out.writes == [b"no newline"]
    writer(b"x")
    assert out.writes == [b"no newline", b"x"]


def test_a_reader_gone_away_loses_output_without_an_error():
    class Broken(Recorder):
        def write(self, data):
            raise BrokenPipeError

    writer = ConsoleWriter(Broken(), delay=60.0)
    writer(b"line\n")
    writer.close()
