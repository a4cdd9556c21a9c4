"""ARM PrimeCell UART (PL011): the virt board's console at 0x09000000, SPI 1.

Counterpart: QEMU hw/char/pl011.c; register reference ARM DDI 0183 (PrimeCell UART PL011 TRM).
Behaviour follows QEMU's, since that is what guests built for the virt board expect:

- TX completes instantly: a write to DR goes straight to the sink, FR always reads TXFE=1,
  TXFF=0, BUSY=0, and the TX interrupt is raised after every write (cleared through ICR).
- RX: the FIFO is 16 entries deep with LCR_H.FEN set, 1 otherwise (changing FEN empties it).
  The RX interrupt is raised as soon as the FIFO holds ``read_trigger`` entries, and QEMU's
  trigger is always 1 (Linux reads the FIFO only from the interrupt; IFLS is stored but not
  used). RX clears when reading DR takes the level below the trigger.
- RT (receive timeout) is raised with received data, as if the timeout elapsed at once, and
  clears when the FIFO drains or through ICR. QEMU does not model RT; a real PL011 raises it
  for data left below the trigger level, which is what Linux's driver waits for.
- No overrun: :meth:`Pl011.receive` takes only what fits and reports how much (QEMU's
  ``can_receive`` backpressure); the input thread keeps the rest and waits for room with
  :meth:`Pl011.wait_for_room`. So RSR/ECR error bits stay 0.
- CR's enable bits and loopback, baud rate and line control are stored, not acted upon.
- Accesses of 8, 16, 32 (or 64) bits: a narrow read of a register's upper bytes sees them
  shifted down; a write must start at a register's offset (its low lanes); others are WI.
- Unknown offsets read as zero and ignore writes (RAZ/WI), counted in ``unknown_accesses``.

UARTDR writes may be coalesced (``COALESCED_RANGES``, registered by the board): a byte's only
effects are the byte at the sink and TXRIS, which every write sets and which Linux's interrupt
handler, having written, re-reads through RIS (an exit, which delivers the queued bytes first).

UARTFR may be published (``PUBLISHED_OFFSET``, registered by the board through
:meth:`Pl011.publish_fr_to`): its reads have no side effect and it changes only with the RX FIFO's
fill and LCR_H.FEN, so the device hands its new value to the kernel at each such change, and the
guest's polls before every character it sends are answered without an exit.

The interrupt output is (RIS & IMSC) != 0 on an :class:`~softkvm.vmm.irq.InterruptLine`, set
only when it changes. One lock serialises the vCPU threads' MMIO and the input thread.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from softkvm.vmm.fdt import APB_PCLK, GIC_FDT_IRQ_FLAGS_LEVEL_HI, GIC_FDT_IRQ_TYPE_SPI, FdtWriter
from softkvm.vmm.irq import InterruptLine
from softkvm.vmm.layout import UART_BASE, UART_SIZE, UART_SPI

Sink = Callable[[bytes], object]

# UARTFR bits.
FR_BUSY = 1 << 3
FR_RXFE = 1 << 4
FR_TXFF = 1 << 5
FR_RXFF = 1 << 6
FR_TXFE = 1 << 7

# Interrupt bits of RIS/MIS/IMSC/ICR.
INT_RX = 1 << 4
INT_TX = 1 << 5
INT_RT = 1 << 6
INT_ALL = 0x7FF  # RI, CTS, DCD, DSR, RX, TX, RT, FE, PE, BE, OE

LCR_H_FEN = 1 << 4

FIFO_DEPTH = 16
CR_RESET = 0x300  # TXE | RXE
IFLS_RESET = 0x12  # both FIFO levels at 1/2

# (offset, size) of the registers whose writes may wait in the coalesced MMIO ring: UARTDR.
COALESCED_RANGES = ((0x000, 4),)
# The register whose value the device publishes (its loads need no exit): UARTFR.
PUBLISHED_OFFSET, PUBLISHED_SIZE = 0x018, 4

# Identification registers (0xFE0.. PeriphID0-3, 0xFF0.. PCellID0-3): Linux's AMBA bus reads
# them to match the driver. Values are QEMU's pl011_id_arm (part 0x011, designer ARM, rev 1).
ID_REGISTERS = {0xFE0: 0x11, 0xFE4: 0x10, 0xFE8: 0x14, 0xFEC: 0x00,
                0xFF0: 0x0D, 0xFF4: 0xF0, 0xFF8: 0x05, 0xFFC: 0xB1}


@dataclass(frozen=True, slots=True)
class Register:
    """One 32-bit register: name, writable bits, and how it behaves (None: not readable /
    writes ignored)."""

    name: str
    mask: int
    read: Callable[[Pl011], int] | None
    write: Callable[[Pl011, int], None] | None


@dataclass(slots=True)
class Pl011:
    """The UART. ``write`` receives every transmitted byte; ``irq`` is its interrupt output."""

    write: Sink
    irq: InterruptLine
    base: int = UART_BASE
    size: int = UART_SIZE
    spi: int = UART_SPI
    # Register state (DDI 0183 names).
    rsr: int = 0
    ilpr: int = 0
    ibrd: int = 0
    fbrd: int = 0
    lcr_h: int = 0
    cr: int = CR_RESET
    ifls: int = IFLS_RESET
    imsc: int = 0
    ris: int = 0
    dmacr: int = 0
    read_trigger: int = 1
    rx_fifo: deque[int] = field(default_factory=deque)
    unknown_accesses: int = 0
    _line: bool = False
    _publish_fr: Callable[[int], object] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _room: threading.Condition = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._room = threading.Condition(self._lock)

    # --- BusDevice ---------------------------------------------------------------------------

    def mmio_read(self, offset: int, size: int) -> int:
        reg = REGISTERS.get(offset & ~3)
        with self._lock:
            if reg is None:
                self.unknown_accesses += 1
                return 0
            if reg.read is None:  # write-only (ICR)
                return 0
            value = reg.read(self)
        # A narrow read of a register's upper bytes sees them shifted down (little-endian).
        return (value >> (8 * (offset & 3))) & ((1 << (8 * size)) - 1)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        reg = REGISTERS.get(offset)  # writes must hit a register's first byte
        with self._lock:
            if reg is None:
                self.unknown_accesses += 1
                return
            if reg.write is not None:
                reg.write(self, value & reg.mask)

    def mmio_write_burst(self, offset: int, size: int, values: list[int]) -> None:
        """Writes from the coalesced ring: a run of UARTDR bytes reaches the sink as one write."""
        if offset != 0:
            for value in values:
                self.mmio_write(offset, size, value)
            return
        with self._lock:
            self._send(bytes(value & 0xFF for value in values))

    # --- host side ---------------------------------------------------------------------------

    @property
    def fifo_depth(self) -> int:
        return FIFO_DEPTH if self.lcr_h & LCR_H_FEN else 1

    def publish_fr_to(self, publish: Callable[[int], object] | None) -> None:
        """Hand UARTFR's value to ``publish`` now and whenever it changes (None: stop)."""
        with self._lock:
            self._publish_fr = publish
            self._fr_changed()

    def room(self) -> int:
        """How many bytes :meth:`receive` would take now."""
        with self._lock:
            return self.fifo_depth - len(self.rx_fifo)

    def receive(self, data: bytes) -> int:
        """Input from the host (stdin thread): queue what fits, return how many bytes."""
        with self._lock:
            taken = max(0, min(len(data), self.fifo_depth - len(self.rx_fifo)))
            for byte in data[:taken]:
                self._put_fifo(byte)
            return taken

    def wait_for_room(self, timeout: float | None = None) -> bool:
        """Block until the guest reads DR and the FIFO has room (or the timeout passes)."""
        with self._room:
            return self._room.wait_for(lambda: len(self.rx_fifo) < self.fifo_depth, timeout)

    def reset(self) -> None:
        with self._lock:
            self.rsr = self.ilpr = self.ibrd = self.fbrd = self.lcr_h = 0
            self.imsc = self.ris = self.dmacr = 0
            self.cr, self.ifls, self.read_trigger = CR_RESET, IFLS_RESET, 1
            self.rx_fifo.clear()
            self._fr_changed()
            self._update()
            self._room.notify_all()

    # --- device tree -------------------------------------------------------------------------

    @property
    def node_name(self) -> str:
        return f"pl011@{self.base:x}"

    def write_fdt(self, fdt: FdtWriter) -> None:
        """The node QEMU's create_uart writes; clocks refer to the board's apb-pclk."""
        with fdt.node(self.node_name):
            fdt.strings("compatible", ("arm,pl011", "arm,primecell"))
            fdt.reg((self.base, self.size))
            fdt.interrupts((GIC_FDT_IRQ_TYPE_SPI, self.spi, GIC_FDT_IRQ_FLAGS_LEVEL_HI))
            clock = fdt.phandle(APB_PCLK)
            fdt.cells("clocks", clock, clock)
            fdt.strings("clock-names", ("uartclk", "apb_pclk"))

    # --- register behaviour (called with the lock held) --------------------------------------

    def _read_dr(self) -> int:
        if not self.rx_fifo:
            return 0  # reading an empty FIFO: undefined data, no side effect
        data = self.rx_fifo.popleft()
        self._fr_changed()
        if len(self.rx_fifo) < self.read_trigger:
            self.ris &= ~INT_RX
        if not self.rx_fifo:
            self.ris &= ~INT_RT
        self.rsr = 0  # no receive errors are ever recorded
        self._update()
        self._room.notify_all()
        return data

    def _write_dr(self, value: int) -> None:
        self._send(bytes([value & 0xFF]))

    def _send(self, data: bytes) -> None:
        self.write(data)
        self.ris |= INT_TX  # transmission is instant: the FIFO is already below its level
        self._update()

    def _read_fr(self) -> int:
        fill = len(self.rx_fifo)
        return (FR_TXFE | (FR_RXFE if fill == 0 else 0)
                | (FR_RXFF if fill >= self.fifo_depth else 0))

    def _write_ecr(self, value: int) -> None:
        self.rsr = 0  # any write clears the error flags

    def _write_lcr_h(self, value: int) -> None:
        if (self.lcr_h ^ value) & LCR_H_FEN:  # enabling or disabling the FIFO flushes it
            self.rx_fifo.clear()
            self.ris &= ~(INT_RX | INT_RT)
            self._room.notify_all()
        self.lcr_h = value
        self._fr_changed()
        self._update()

    def _write_imsc(self, value: int) -> None:
        self.imsc = value
        self._update()

    def _write_icr(self, value: int) -> None:
        self.ris &= ~value
        self._update()

    def _put_fifo(self, byte: int) -> None:
        self.rx_fifo.append(byte)
        self._fr_changed()
        if len(self.rx_fifo) >= self.read_trigger:
            self.ris |= INT_RX
        self.ris |= INT_RT
        self._update()

    def _fr_changed(self) -> None:
        if self._publish_fr is not None:
            self._publish_fr(self._read_fr())

    def _update(self) -> None:
        level = (self.ris & self.imsc) != 0
        if level != self._line:
            self._line = level
            self.irq.set_level(level)


def _field(name: str) -> tuple[Callable[[Pl011], int], Callable[[Pl011, int], None]]:
    """Accessors for a plain storage register."""
    return (lambda dev: getattr(dev, name)), (lambda dev, value: setattr(dev, name, value))


def _constant(value: int) -> Callable[[Pl011], int]:
    return lambda dev: value


# Offset → register. Masks are the implemented bits of each register in DDI 0183.
REGISTERS: dict[int, Register] = {
    0x000: Register("UARTDR", 0xFF, Pl011._read_dr, Pl011._write_dr),
    0x004: Register("UARTRSR/ECR", 0xFF, lambda dev: dev.rsr, Pl011._write_ecr),
    0x018: Register("UARTFR", 0, Pl011._read_fr, None),
    0x020: Register("UARTILPR", 0xFF, *_field("ilpr")),
    0x024: Register("UARTIBRD", 0xFFFF, *_field("ibrd")),
    0x028: Register("UARTFBRD", 0x3F, *_field("fbrd")),
    0x02C: Register("UARTLCR_H", 0xFF, lambda dev: dev.lcr_h, Pl011._write_lcr_h),
    0x030: Register("UARTCR", 0xFFFF, *_field("cr")),
    0x034: Register("UARTIFLS", 0x3F, *_field("ifls")),
    0x038: Register("UARTIMSC", INT_ALL, lambda dev: dev.imsc, Pl011._write_imsc),
    0x03C: Register("UARTRIS", 0, lambda dev: dev.ris, None),
    0x040: Register("UARTMIS", 0, lambda dev: dev.ris & dev.imsc, None),
    0x044: Register("UARTICR", INT_ALL, None, Pl011._write_icr),
    0x048: Register("UARTDMACR", 0x7, *_field("dmacr")),
    **{offset: Register(f"ID{offset:#x}", 0, _constant(value), None)
       for offset, value in ID_REGISTERS.items()},
}


def stream_sink(stream: BinaryIO) -> Sink:
    """A sink writing to a binary stream, flushed per write so the console is live."""
    def write(data: bytes) -> None:
        stream.write(data)
        stream.flush()
    return write
