"""Count a vCPU's exits between the bench guest's ``MARK op begin`` and ``MARK op end`` lines.

The recorder takes the PL011's output sink. The PL011 hands it each byte from the vCPU thread
that wrote it, during that write's exit, so a snapshot taken there is exact: nothing else runs
on that vCPU meanwhile. Two kinds of counters are snapshotted, summed over all vCPUs:

- the KVM counters of every vCPU (``vcpu.stats.as_dict()``: whatever names they carry), which
  count exits from the guest, most of them handled in the kernel;
- exits to userspace (KVM_RUN returning to the VMM), by exit reason, counted by a hook on the
  VMM's run loop.

A window opens at the newline of its begin line and closes at the first byte of its end line,
so it contains the end line's first two exits (a UARTFR read and a UARTDR write); the
``empty`` window the guest prints first measures that overhead, which is then subtracted.
"""

from __future__ import annotations

import io
import threading
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from bench.parse import MARK

if TYPE_CHECKING:
    from softkvm.kvm.api import Vcpu
    from softkvm.kvm.kvm_run import KvmRun
    from softkvm.vmm.builder import Machine

USER_EXITS = "to_user"        # our own counter names, next to KVM's
USER_PREFIX = "to_user_"


class ExitRecorder(io.RawIOBase):
    """Console sink that snapshots exit counters at marker lines; ``on_line`` sees each line
    (on the vCPU thread that printed it: keep it short and non-blocking)."""

    def __init__(self, on_line: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self._on_line = on_line
        self._machine: Machine | None = None
        self._partial = bytearray()
        self._line_start: dict[str, int] = {}
        self._open: dict[str, dict[str, int]] = {}
        self._user = Counter[str]()
        self._lock = threading.Lock()
        self.chunks: list[bytes] = []
        self.windows: dict[str, dict[str, int]] = {}   # op -> counter deltas (raw)

    def attach(self, machine: Machine) -> None:
        """Take the UART's output straight from the device (the console sink buffers lines,
        and the snapshots must be taken during each byte's own exit)."""
        self._machine = machine
        machine.runner.on_exit.append(self._count_user_exit)
        machine.uart.write = self.write

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        data = bytes(data)
        self.chunks.append(data)
        for byte in data:
            if not self._partial:
                self._line_start = self.snapshot()
            if byte == 0x0A:
                self._finish_line(self._partial.decode(errors="replace").rstrip("\r"))
                self._partial.clear()
            else:
                self._partial.append(byte)
        return len(data)

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def per_op(self) -> dict[str, dict[str, float]]:
        """Counter deltas per event of each window, marker overhead removed."""
        empty = self.windows.get("empty", {})
        result = {}
        for op, deltas in self.windows.items():
            n = deltas.get("_n", 0)
            if op == "empty" or n <= 0:
                continue
            result[op] = {k: max(v - empty.get(k, 0), 0) / n for k, v in deltas.items()
                          if k != "_n" and v - empty.get(k, 0) > 0}
        return result

    def snapshot(self) -> dict[str, int]:
        if self._machine is None:
            return {}
        total = Counter[str]()
        for vcpu in self._machine.vm.vcpus:
            for key, value in vcpu.stats.as_dict().items():
                if isinstance(value, int):
                    total[key] += value
        with self._lock:
            total[USER_EXITS] = sum(self._user.values())
            for reason, count in self._user.items():
                total[USER_PREFIX + reason] = count
        return dict(total)

    def _count_user_exit(self, _vcpu: Vcpu, run: KvmRun) -> None:
        name = run.exit_name.removeprefix("KVM_EXIT_").lower()
        with self._lock:
            self._user[name] += 1

    def _finish_line(self, line: str) -> None:
        match = MARK.match(line)
        if match is not None:
            op = match.group(1)
            if match.group(2) == "begin":
                self._open[op] = self.snapshot()
            elif op in self._open:
                begin, end = self._open.pop(op), self._line_start
                deltas = {k: end.get(k, 0) - begin.get(k, 0) for k in end}
                deltas["_n"] = int(match.group(3) or 0) or (1 if op == "empty" else 0)
                self.windows[op] = deltas
        if self._on_line is not None:
            self._on_line(line)
