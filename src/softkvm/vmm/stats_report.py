"""KVM's counters as tables: ``softkvm run --stats`` at exit and ``softkvm stat`` live.

Counterpart: tools/kvm/kvm_stat/kvm_stat (totals and per-second rates of KVM's stats) fed from
``KVM_GET_STATS_FD`` reads. A *snapshot* is every counter of a VM at one instant as a JSON-ready
dict; the exit table, the live view and the stats socket all speak snapshots.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from softkvm.kvm.api import Vcpu, Vm

if TYPE_CHECKING:  # rich is imported when something is drawn: a plain run never pays for it
    from rich.console import Console
    from rich.table import Table

SNAPSHOT_VERSION = 1
PLAIN_WIDTH = 200          # a pipe or a file has no width: wide enough for 8 vCPUs and a total
INSTANT_STATS = frozenset({"blocking"})  # KVM_STATS_TYPE_INSTANT: a level, it has no rate
Snapshot = dict[str, Any]

# (snapshot key, section title): per-vCPU sections, then VM-wide ones.
VCPU_SECTIONS = (("kvm", "KVM vCPU stats"), ("softkvm", "softkvm vCPU counters"),
                 ("exits_by_reason", "exits by reason"),
                 ("reflected_by_ec", "exceptions reflected to the guest, by EC"))
VM_SECTIONS = (("kvm", "KVM VM stats"), ("softkvm", "softkvm VM counters"))


def snapshot(vm: Vm) -> Snapshot:
    """Read every counter now (from any thread: the vCPUs keep running)."""
    read = vm.read_stats()
    return {"version": SNAPSHOT_VERSION, "pid": os.getpid(), "time": time.time(),
            "monotonic": time.monotonic(), "vm": {"kvm": read.kvm, "softkvm": read.softkvm},
            "vcpus": [_vcpu_snapshot(vcpu) for vcpu in list(vm.vcpus)]}


def _vcpu_snapshot(vcpu: Vcpu) -> dict[str, Any]:
    read = vcpu.read_stats()
    return {"id": vcpu.vcpu_id, "kvm": read.kvm, "softkvm": read.softkvm,
            "exits_by_reason": read.exits_by_reason, "reflected_by_ec": read.reflected_by_ec}


@dataclass(slots=True)
class StatRow:
    section: str
    name: str
    values: list[int]      # one per vCPU; a VM-wide row has one
    per_vcpu: bool

    @property
    def total(self) -> int:
        return sum(self.values)

    @property
    def key(self) -> tuple[str, str]:
        return self.section, self.name


def stat_rows(snap: Snapshot) -> list[StatRow]:
    """Flatten a snapshot: the per-vCPU sections, then the VM-wide ones, in counter order."""
    vcpus = snap["vcpus"]
    rows: list[StatRow] = []
    for key, title in VCPU_SECTIONS:
        names = dict.fromkeys(name for vcpu in vcpus for name in vcpu[key])  # ordered union
        rows += [StatRow(title, name, [vcpu[key].get(name, 0) for vcpu in vcpus], True)
                 for name in names]
    for key, title in VM_SECTIONS:
        rows += [StatRow(title, name, [value], False) for name, value in snap["vm"][key].items()]
    return rows


def rates(prev: Snapshot, cur: Snapshot) -> dict[tuple[str, str], list[float]]:
    """Per-second change of every row between two snapshots of one VM (per vCPU, as values)."""
    seconds = cur["monotonic"] - prev["monotonic"]
    before = {row.key: row.values for row in stat_rows(prev)}
    result = {}
    for row in stat_rows(cur):
        old = before.get(row.key, [0] * len(row.values))
        result[row.key] = [(new - was) / seconds if seconds > 0 else 0.0
                           for new, was in zip(row.values, old)]
    return result


# --- rendering --------------------------------------------------------------------------------


def make_console(file: TextIO) -> Console:
    """A terminal gets colour and its own width; a pipe or file gets plain, unwrapped text."""
    from rich.console import Console

    plain = not file.isatty()
    return Console(file=file, highlight=False, width=PLAIN_WIDTH if plain else None)


def print_stats(snap: Snapshot, file: TextIO) -> None:
    """The ``--stats`` report: one column per vCPU (plus the total), then the VM's counters."""
    from rich.console import Group

    make_console(file).print(Group(exit_table(snap), vm_table(snap)))


def _table(title: str) -> Table:
    from rich import box
    from rich.table import Table

    return Table(box=box.SIMPLE_HEAD, title=title, title_justify="left")


def _section_row(table: Table, section: str) -> None:
    from rich.text import Text

    table.add_row(Text(f"[{section}]", style="bold"))


def exit_table(snap: Snapshot) -> Table:
    ids = [vcpu["id"] for vcpu in snap["vcpus"]]
    table = _table("softkvm: counters per vCPU")
    table.add_column("counter")
    for vcpu_id in ids:
        table.add_column(f"vcpu{vcpu_id}", justify="right")
    if len(ids) > 1:
        table.add_column("total", justify="right")
    section = None
    for row in (r for r in stat_rows(snap) if r.per_vcpu):
        if row.section != section:
            section = row.section
            _section_row(table, section)
        totals = [str(row.total)] if len(ids) > 1 else []
        table.add_row(row.name, *map(str, row.values), *totals)
    return table


def vm_table(snap: Snapshot) -> Table:
    table = _table("softkvm: VM-wide counters")
    table.add_column("counter")
    table.add_column("value", justify="right")
    section = None
    for row in (r for r in stat_rows(snap) if not r.per_vcpu):
        if row.section != section:
            section = row.section
            _section_row(table, section)
        table.add_row(row.name, str(row.total))
    return table


def live_table(prev: Snapshot | None, cur: Snapshot, show_all: bool = False) -> Table:
    """kvm_stat's view: each counter's total and rate per second (per vCPU when several).
    Counters still at zero are left out unless ``show_all``."""
    ids = [vcpu["id"] for vcpu in cur["vcpus"]]
    per_second = rates(prev, cur) if prev is not None else {}
    when = time.strftime("%H:%M:%S", time.localtime(cur["time"]))
    table = _table(f"softkvm {cur['pid']}: {len(ids)} vCPU{'s' * (len(ids) != 1)}, {when}")
    table.add_column("counter")
    table.add_column("total", justify="right")
    table.add_column("/s", justify="right")
    if len(ids) > 1:
        for vcpu_id in ids:
            table.add_column(f"vcpu{vcpu_id} /s", justify="right")
    section = None
    for row in stat_rows(cur):
        if not (row.total or show_all):
            continue
        if row.section != section:
            section = row.section
            _section_row(table, section)
        table.add_row(row.name, str(row.total), *_rate_cells(row, per_second, len(ids)))
    return table


def _rate_cells(row: StatRow, per_second: dict[tuple[str, str], list[float]],
                nr_vcpus: int) -> list[str]:
    rate = per_second.get(row.key)
    if rate is None or row.name in INSTANT_STATS:
        return [""] * (1 + (nr_vcpus if nr_vcpus > 1 else 0))
    cells = [_rate(sum(rate))]
    if nr_vcpus > 1:
        cells += [_rate(r) for r in rate] if row.per_vcpu else [""] * nr_vcpus
    return cells


def _rate(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.1f}"
