"""PL011 against DDI 0183 and QEMU's pl011.c, with a fake sink and a fake interrupt line."""

import io
import threading
import time

import pytest

from softkvm.vmm.devices.pl011 import (FR_RXFE, FR_RXFF, FR_TXFE, FR_TXFF, INT_RT, INT_RX, INT_TX,
                                       LCR_H_FEN, Pl011, stream_sink)

DR, RSR, FR, IBRD, FBRD, LCR_H, CR, IFLS, IMSC, RIS, MIS, ICR, DMACR = (
    0x00, 0x04, 0x18, 0x24, 0x28, 0x2C, 0x30, 0x34, 0x38, 0x3C, 0x40, 0x44, 0x48)


class FakeLine:
    def __init__(self):
        self.levels = []

    def set_level(self, level):
        self.levels.append(level)

    @property
    def level(self):
        return bool(self.levels) and self.levels[-1]


@pytest.fixture
def parts():
    out, line = [], FakeLine()
    return Pl011(write=out.append, irq=line), out, line


def rd(dev, offset, size=4):
    return dev.mmio_read(offset, size)


def wr(dev, offset, value, size=4):
    dev.mmio_write(offset, size, value)


def test_reset_values(parts):
    dev, _, line = parts
    assert rd(dev, CR) == 0x300
    assert rd(dev, IFLS) == 0x12
    assert rd(dev, FR) == FR_TXFE | FR_RXFE
    assert (rd(dev, IMSC), rd(dev, RIS), rd(dev, MIS), rd(dev, LCR_H)) == (0, 0, 0, 0)
    assert line.levels == []


def test_id_registers_for_the_amba_probe(parts):
    dev, _, _ = parts
    ids = [rd(dev, off) for off in range(0xFE0, 0x1000, 4)]
    assert ids == [0x11, 0x10, 0x14, 0x00, 0x0D, 0xF0, 0x05, 0xB1]
    wr(dev, 0xFE0, 0xFF)  # read-only
    assert rd(dev, 0xFE0) == 0x11


def test_tx_reaches_the_sink_in_any_width(parts):
    dev, out, _ = parts
    for ch in b"hi":
        wr(dev, DR, ch, size=1)  # strb, as bare-metal guests do
    wr(dev, DR, 0x0A, size=4)
    wr(dev, DR, 0x121, size=2)  # only the data byte is sent
    assert out == [b"h", b"i", b"\n", b"!"]
    fr = rd(dev, FR)
    assert fr & FR_TXFE and not fr & FR_TXFF  # TX is instant


def test_tx_interrupt(parts):
    dev, _, line = parts
    wr(dev, DR, ord("a"))
    assert rd(dev, RIS) & INT_TX and line.levels == []  # masked
    wr(dev, IMSC, INT_TX)
    assert line.levels == [True] and rd(dev, MIS) == INT_TX
    wr(dev, ICR, INT_TX)
    assert line.levels == [True, False] and rd(dev, RIS) == 0
    wr(dev, DR, ord("b"))
    assert line.levels == [True, False, True]


def test_rx_fifo_order_and_flags_with_fifo(parts):
    dev, _, _ = parts
    wr(dev, LCR_H, LCR_H_FEN | 0x60)
    assert dev.receive(b"abc") == 3
    assert not rd(dev, FR) & FR_RXFE
    assert [rd(dev, DR) for _ in range(3)] == list(b"abc")
    assert rd(dev, FR) & FR_RXFE
    assert rd(dev, DR) == 0  # empty FIFO: no data, no side effect


def test_rx_overflow_takes_only_what_fits(parts):
    dev, _, _ = parts
    wr(dev, LCR_H, LCR_H_FEN)
    assert dev.receive(bytes(range(20))) == 16
    assert rd(dev, FR) & FR_RXFF and dev.room() == 0
    assert dev.receive(b"x") == 0
    assert rd(dev, DR) == 0
    assert not rd(dev, FR) & FR_RXFF and dev.receive(b"xyz") == 1
    assert [rd(dev, DR) for _ in range(16)] == list(range(1, 16)) + [ord("x")]
    assert rd(dev, RSR) == 0  # no overrun is ever recorded


def test_without_fifo_one_character_holds(parts):
    dev, _, _ = parts
    assert dev.receive(b"ab") == 1
    assert rd(dev, FR) & FR_RXFF
    assert rd(dev, DR) == ord("a")
    assert rd(dev, FR) & FR_RXFE


def test_toggling_fen_flushes_the_fifo(parts):
    dev, _, line = parts
    wr(dev, IMSC, INT_RX)
    dev.receive(b"q")
    assert line.level
    wr(dev, LCR_H, LCR_H_FEN)
    assert rd(dev, FR) & FR_RXFE and not line.level


def test_rx_and_rt_interrupts(parts):
    dev, _, line = parts
    wr(dev, LCR_H, LCR_H_FEN)
    dev.receive(b"ab")
    assert rd(dev, RIS) == INT_RX | INT_RT
    assert line.levels == []  # nothing enabled
    wr(dev, IMSC, INT_RX | INT_RT)
    assert line.levels == [True]
    assert rd(dev, MIS) == INT_RX | INT_RT
    rd(dev, DR)
    assert rd(dev, RIS) == INT_RX | INT_RT and line.levels == [True]  # one byte left
    rd(dev, DR)  # drained: both clear, the line drops once
    assert rd(dev, RIS) == 0 and line.levels == [True, False]


def test_icr_clears_rx_and_rt_while_data_remains(parts):
    dev, _, line = parts
    wr(dev, IMSC, INT_RX | INT_RT | INT_TX)
    dev.receive(b"z")
    wr(dev, ICR, INT_RT)
    assert rd(dev, RIS) == INT_RX and line.level
    wr(dev, ICR, INT_RX)
    assert line.levels == [True, False]
    dev.receive(b"")  # nothing new: nothing raised
    assert line.levels == [True, False]
    wr(dev, IMSC, 0)
    assert line.levels == [True, False]  # the level did not change: no call


def test_imsc_unmasking_pending_rx_raises_the_line(parts):
    dev, _, line = parts
    dev.receive(b"k")
    wr(dev, IMSC, INT_TX)
    assert line.levels == []
    wr(dev, IMSC, INT_TX | INT_RX)
    assert line.levels == [True]
    wr(dev, IMSC, 0)
    assert line.levels == [True, False]


def test_plain_registers_store_their_bits(parts):
    dev, _, _ = parts
    for offset, value, mask in ((IBRD, 0x12345, 0xFFFF), (FBRD, 0xFF, 0x3F), (CR, 0x10301, 0xFFFF),
                                (IFLS, 0x3F, 0x3F), (DMACR, 0xF, 0x7), (0x20, 0x1FF, 0xFF)):
        wr(dev, offset, value)
        assert rd(dev, offset) == value & mask, hex(offset)
    wr(dev, FR, 0)  # read-only: ignored
    assert rd(dev, FR) == FR_TXFE | FR_RXFE
    assert rd(dev, ICR) == 0  # write-only
    assert dev.unknown_accesses == 0


def test_narrow_reads_of_upper_bytes(parts):
    dev, _, _ = parts
    assert rd(dev, CR + 1, 1) == 0x03
    assert rd(dev, CR, 2) == 0x300
    assert rd(dev, CR, 8) == 0x300


def test_unknown_offsets_are_raz_wi_and_counted(parts):
    dev, out, _ = parts
    assert rd(dev, 0x08) == 0 and rd(dev, 0x800) == 0
    wr(dev, 0x08, 0xFF)
    wr(dev, DR + 1, ord("x"), size=1)  # not a register's first byte
    assert dev.unknown_accesses == 4 and out == []


def test_reset(parts):
    dev, _, line = parts
    wr(dev, IMSC, INT_RX)
    wr(dev, CR, 0)
    dev.receive(b"r")
    dev.reset()
    assert (rd(dev, CR), rd(dev, RIS), rd(dev, IMSC)) == (0x300, 0, 0)
    assert rd(dev, FR) & FR_RXFE and line.levels == [True, False]


def test_the_published_fr_follows_every_change_of_the_rx_fifo(parts):
    """Whatever changes UARTFR (data in, data read, FEN toggled, reset) hands its new value to
    the publisher before anything else can see the change; TX changes nothing."""
    dev, _, _ = parts
    published = []
    dev.publish_fr_to(published.append)
    assert published == [FR_TXFE | FR_RXFE]

    def check():
        assert published[-1] == rd(dev, FR)
    wr(dev, LCR_H, LCR_H_FEN)
    check()
    dev.receive(b"ab")
    assert published[-1] == FR_TXFE
    wr(dev, DR, 0x41)
    count = len(published)
    rd(dev, DR)
    check()
    dev.receive(bytes(15))
    assert published[-1] == FR_TXFE | FR_RXFF and len(published) > count
    wr(dev, LCR_H, 0)  # FIFO off: flushed
    check()
    dev.receive(b"z")
    assert published[-1] == FR_TXFE | FR_RXFF  # one character fills a 1-deep FIFO
    dev.reset()
    assert published[-1] == FR_TXFE | FR_RXFE
    dev.publish_fr_to(None)
    dev.receive(b"q")
    assert published[-1] == FR_TXFE | FR_RXFE


def test_input_thread_waits_for_room(parts):
    dev, _, _ = parts
    assert dev.receive(b"1") == 1
    assert dev.wait_for_room(timeout=0.01) is False
    got = []

    def feeder():
        pending = b"234"
        while pending:
            taken = dev.receive(pending)
            pending = pending[taken:]
            if pending:
                dev.wait_for_room(timeout=5)

    thread = threading.Thread(target=feeder)
    thread.start()
    deadline = time.monotonic() + 10
    while len(got) < 4 and time.monotonic() < deadline:
        if not rd(dev, FR) & FR_RXFE:
            got.append(rd(dev, DR))  # the vCPU side: each read makes room for the feeder
        time.sleep(0.001)
    thread.join(timeout=5)
    assert bytes(got) == b"1234"


def test_stream_sink_flushes_each_write():
    class Stream(io.BytesIO):
        flushes = 0

        def flush(self):
            self.flushes += 1

    stream = Stream()
    dev = Pl011(write=stream_sink(stream), irq=FakeLine())
    wr(dev, DR, ord("o"))
    wr(dev, DR, ord("k"))
    assert stream.getvalue() == b"ok" and stream.flushes == 2


def test_a_burst_of_coalesced_dr_writes_is_one_sink_write_with_the_same_effect(parts):
    dev, out, line = parts
    wr(dev, IMSC, INT_TX)
    dev.mmio_write_burst(DR, 4, [ord("o"), ord("k"), 0x10A])  # only the data bytes are sent
    assert out == [b"ok\n"]
    assert rd(dev, RIS) & INT_TX and line.levels == [True]
    dev.mmio_write_burst(IBRD, 4, [5, 7])  # any other register: each write in turn
    assert rd(dev, IBRD) == 7
