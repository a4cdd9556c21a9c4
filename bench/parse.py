"""Parse what the ``bench`` guest prints (contract in guests/bench/main.c).

All guest numbers are raw generic-counter ticks; :class:`GuestOutput` turns them into µs and
events per second with the guest's own CNTFRQ, so a run on QEMU and one on softkvm are read the
same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

BENCHINFO = re.compile(r"^BENCHINFO freq=(\d+) cpus=(\d+) gic=(\d) qemu=(\d)$")
BENCH = re.compile(r"^BENCH (\S+) (cost|rate) ticks=(\d+) n=(\d+)$")
SAMPLES = re.compile(r"^SAMPLES (\S+) (ticks|pct)((?: \d+)*)$")
MARK = re.compile(r"^MARK (\S+) (begin|end)(?: n=(\d+))?$")
SUMMARY = re.compile(r"^SUMMARY: (\d+) passed, (\d+) failed$")


@dataclass(slots=True)
class GuestOutput:
    """Everything one run of the bench guest reported."""

    freq: int = 0
    cpus: int = 0
    gic: int = 0
    qemu: bool = False
    costs: dict[str, tuple[int, int]] = field(default_factory=dict)  # op -> (ticks, n)
    rates: dict[str, tuple[int, int]] = field(default_factory=dict)  # op -> (ticks, events)
    samples: dict[str, list[int]] = field(default_factory=dict)      # op -> ticks or CNTPCT
    sample_units: dict[str, str] = field(default_factory=dict)
    marks: dict[str, int] = field(default_factory=dict)              # op -> events in window
    passed: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.freq > 0 and self.passed > 0 and self.failed == 0 and not self.failures

    def cost_us(self, op: str) -> float | None:
        """Microseconds per operation, or None if the op did not run."""
        if op not in self.costs or not self.costs[op][1]:
            return None
        ticks, n = self.costs[op]
        return ticks / n / self.freq * 1e6

    def rate_per_s(self, op: str) -> float | None:
        if op not in self.rates or not self.rates[op][0]:
            return None
        ticks, events = self.rates[op]
        return events / (ticks / self.freq)

    def samples_us(self, op: str) -> list[float]:
        """Duration samples in µs (only for unit "ticks")."""
        if self.sample_units.get(op) != "ticks":
            return []
        return [t / self.freq * 1e6 for t in self.samples.get(op, [])]


def parse_output(text: str) -> GuestOutput:
    out = GuestOutput()
    for raw in text.splitlines():
        _parse_line(out, raw.rstrip("\r"))
    return out


def _parse_line(out: GuestOutput, line: str) -> None:
    if (m := BENCH.match(line)) is not None:
        table = out.costs if m.group(2) == "cost" else out.rates
        table[m.group(1)] = (int(m.group(3)), int(m.group(4)))
    elif (m := SAMPLES.match(line)) is not None:
        out.samples.setdefault(m.group(1), []).extend(int(v) for v in m.group(3).split())
        out.sample_units[m.group(1)] = m.group(2)
    elif (m := MARK.match(line)) is not None:
        if m.group(2) == "end":
            out.marks[m.group(1)] = int(m.group(3) or 0)
    elif (m := BENCHINFO.match(line)) is not None:
        out.freq, out.cpus, out.gic = int(m.group(1)), int(m.group(2)), int(m.group(3))
        out.qemu = m.group(4) == "1"
    elif (m := SUMMARY.match(line)) is not None:
        out.passed, out.failed = int(m.group(1)), int(m.group(2))
    elif line.startswith(("FAIL", "UNEXPECTED")):
        out.failures.append(line)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)
