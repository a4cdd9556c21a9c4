"""A guest console that a host test can converse with: every complete line the guest prints is
handed to a reactor thread, so the test drives devices from outside the vCPU threads (as a real
device or another process would), never from inside the UART write that printed the line."""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable

_STOP = object()


class LineConsole(io.RawIOBase):
    """A write-only binary stream for ``VmConfig.console_out`` that calls ``on_line(text)`` on
    its own thread for each line. ``text`` holds everything printed (for assertions)."""

    def __init__(self, on_line: Callable[[str], None]) -> None:
        super().__init__()
        self._on_line = on_line
        self._partial = b""
        self._chunks: list[bytes] = []
        self._lines: queue.Queue[object] = queue.Queue()
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._react, name="test-console", daemon=True)
        self._thread.start()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        data = bytes(data)
        self._chunks.append(data)
        self._partial += data
        *lines, self._partial = self._partial.split(b"\n")
        for line in lines:
            self._lines.put(line.decode(errors="replace").rstrip("\r"))
        return len(data)

    @property
    def text(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")

    def finish(self) -> None:
        """Stop the reactor and re-raise what it raised."""
        self._lines.put(_STOP)
        self._thread.join(timeout=30)
        if self.errors:
            raise self.errors[0]

    def _react(self) -> None:
        while (line := self._lines.get()) is not _STOP:
            try:
                self._on_line(line)  # type: ignore[arg-type]
            except BaseException as exc:  # noqa: BLE001 - reported by finish()
                self.errors.append(exc)
