"""Write a VM's tracepoint records as a Chrome trace-event / Perfetto JSON file (``--trace``).

Counterpart: what ``trace-cmd report`` / ``perf script`` make of the kernel's ftrace buffer, in
the Trace Event Format ({"traceEvents": [...], "displayTimeUnit": "ns"}) that ui.perfetto.dev and
chrome://tracing open. Records come from ``softkvm.kvm.trace``; this module only lays them out.

Layout (one process, the VM):

- one track per vCPU (tid = index + 1, named "vCPU n"), holding every record its thread emitted:
  ``guest`` slices (kvm_entry → kvm_exit), ``exit <class>`` slices (kvm_exit → the next entry or
  the return to userspace, named by the kernel's exception class: HVC64, DABT_LOW, WFx, IRQ...),
  ``userspace <reason>`` slices (kvm_userspace_exit → the next entry: the VMM's handling of MMIO,
  INTR, ...), and ``halt`` slices inside a WFI exit (from kvm_vcpu_wakeup);
- one track per other thread that emitted (the irqfd poller, the VMM's own threads), named
  after the thread (the timer PPI and background timer are recorded by the vCPU they stop or
  wake);
- every other record is an instant event ("i") on its track, args as recorded (addresses hex);
- interrupt flows, two arrows per delivered interrupt: from its source (timer PPI or background
  timer expiry, the irqfd signal the poller injects, SGI generation, KVM_IRQ_LINE, a device
  wire of the userspace GIC) to the guest's acknowledge of that INTID, then from the acknowledge to its EOI (and on to
  the DIR under EOImode 1). Each end point is drawn as a short slice (at most ``LEAF_NS``, cut
  short before the next record of its track so slices nest) carrying the record's args, and the
  flow events ("s", then "f" with bp "e") sit inside it, so both viewers bind them to it.

Matching is by (vCPU, INTID) for SGIs and PPIs, by INTID for SPIs; the latest source before an
acknowledge wins, and when no explicit source was recorded the last raised level (timer output,
vGIC injection) stands in for it.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from softkvm.errors import ConfigError
from softkvm.kvm.trace import TRACEPOINTS, TraceEvent, Tracer

LEAF_NS = 1000                 # longest flow end-point slice
VCPU_TID_BASE = 1              # vCPU n is tid n + 1
THREAD_TID_BASE = 1000         # other threads, in order of appearance
SPI_BASE = 32
SPECIAL_INTID_BASE = 1020
RUN_LOOP = ("kvm_entry", "kvm_exit", "kvm_userspace_exit")
AS_SLICES = (*RUN_LOOP, "kvm_vcpu_wakeup")   # drawn as slices, not instants
HEX_ARGS = frozenset({"vcpu_pc", "gpa", "val", "esr_ec", "ctl", "cval", "fn", "r0", "a1", "a2",
                      "a3", "targets"})
ACKS = ("vgic_ack", "user_gic_ack")
EOIS = ("vgic_eoi", "user_gic_eoi")
DIRS = ("vgic_dir", "user_gic_dir")

IrqKey = tuple[int | None, int]   # (vCPU, INTID) for SGIs/PPIs, (None, INTID) for SPIs


@dataclass(slots=True)
class _Slice:
    tid: int
    start: int
    end: int
    name: str
    cat: str
    args: dict[str, object]


@dataclass(slots=True)
class _Layout:
    """Where each record goes: its track, and the slices built from the run loop."""

    track_of: list[int]
    names: dict[int, str] = field(default_factory=dict)
    slices: list[_Slice] = field(default_factory=list)
    points: dict[int, list[int]] = field(default_factory=dict)   # tid -> sorted boundaries


@dataclass(slots=True)
class _Flow:
    src: int      # record indexes
    dst: int
    intid: int


# --- entry points -----------------------------------------------------------------------------


def write_trace(path: Path, tracer: Tracer, title: str = "softkvm VM") -> int:
    """Write ``tracer``'s buffer to ``path``; the number of records written."""
    events = tracer.events()
    doc = build_trace(events, start_ns=tracer.start_ns, title=title, overrun=tracer.overrun)
    try:
        with open(path, "w", encoding="utf-8") as out:
            json.dump(doc, out, separators=(",", ":"))
    except OSError as err:
        raise ConfigError(f"cannot write the trace to '{path}': {err.strerror}") from err
    return len(events)


def build_trace(events: Sequence[TraceEvent], *, start_ns: int | None = None,
                title: str = "softkvm VM", overrun: int = 0) -> dict[str, object]:
    """The JSON document for ``events`` (oldest first); timestamps count from ``start_ns``."""
    events = sorted(events, key=lambda e: e.ts_ns)
    t0 = start_ns if start_ns is not None else (events[0].ts_ns if events else 0)
    pid = os.getpid()
    layout = _layout(events)
    flows = _match_flows(events)
    ends = {i for f in flows for i in (f.src, f.dst)}
    leaves = {i: _leaf(events[i], layout, i) for i in sorted(ends)}
    out: list[tuple[int, int, float, dict[str, object]]] = []
    for sl in [*layout.slices, *leaves.values()]:
        out.append((sl.start, 0, -(sl.end - sl.start), _x(sl, pid, t0)))
    for i, ev in enumerate(events):
        if ev.name not in AS_SLICES and i not in leaves:
            out.append((ev.ts_ns, 1, 0, _instant(ev, layout.track_of[i], pid, t0)))
    for n, flow in enumerate(flows, start=1):
        for phase, index in (("s", flow.src), ("f", flow.dst)):
            leaf = leaves[index]
            mid = leaf.start + (leaf.end - leaf.start) // 2
            out.append((mid, 2, 0, _flow_event(phase, n, flow.intid, leaf.tid, mid, pid, t0)))
    out.sort(key=lambda item: item[:3])
    meta = _metadata(layout.names, pid, title)
    return {"traceEvents": meta + [item[3] for item in out], "displayTimeUnit": "ns",
            "otherData": {"source": "softkvm", "clock": "CLOCK_MONOTONIC",
                          "records": len(events), "overrun": overrun}}


# --- tracks and run-loop slices -------------------------------------------------------------------


def _layout(events: Sequence[TraceEvent]) -> _Layout:
    layout = _Layout(_assign_tracks(events))
    for i, ev in enumerate(events):
        tid = layout.track_of[i]
        if tid not in layout.names:
            layout.names[tid] = (f"vCPU {tid - VCPU_TID_BASE}" if tid < THREAD_TID_BASE
                                 else ev.thread_name)
    by_track: dict[int, list[int]] = {}
    for i, tid in enumerate(layout.track_of):
        by_track.setdefault(tid, []).append(i)
    end_of_trace = events[-1].ts_ns if events else 0
    for tid, indexes in by_track.items():
        track_events = [events[i] for i in indexes]
        points = {ev.ts_ns for ev in track_events}
        if tid < THREAD_TID_BASE:
            slices = _run_loop_slices(tid, track_events, end_of_trace)
            layout.slices += slices
            points.update(t for sl in slices for t in (sl.start, sl.end))
        layout.points[tid] = sorted(points)
    return layout


def _assign_tracks(events: Sequence[TraceEvent]) -> list[int]:
    """A thread that ran vCPUs (emitted run-loop records) draws on the track of the vCPU it runs
    at the time (of the first one before its first run); other threads on their own track."""
    ran: dict[int, int] = {}
    for ev in events:
        if ev.name in RUN_LOOP:
            ran.setdefault(ev.thread_id, ev.vcpu)
    current = dict(ran)
    others: dict[int, int] = {}
    track_of = []
    for ev in events:
        if ev.thread_id in ran:
            if ev.name in RUN_LOOP:
                current[ev.thread_id] = ev.vcpu
            track_of.append(VCPU_TID_BASE + current[ev.thread_id])
        else:
            tid = others.setdefault(ev.thread_id, THREAD_TID_BASE + len(others))
            track_of.append(tid)
    return track_of


def _run_loop_slices(tid: int, events: Sequence[TraceEvent], end_of_trace: int) -> list[_Slice]:
    """guest / exit / userspace slices from the run-loop records, halts inside exits."""
    slices: list[_Slice] = []
    open_: _Slice | None = None
    for ev in events:
        if ev.name in RUN_LOOP:
            if open_ is not None:
                open_.end = ev.ts_ns
                slices.append(open_)
            open_ = _Slice(tid, ev.ts_ns, ev.ts_ns, _slice_name(ev), "kvm", _args(ev.args))
        elif ev.name == "kvm_vcpu_wakeup" and ev.args.get("waited"):
            start = ev.ts_ns - int(ev.args.get("ns") or 0)  # type: ignore[call-overload]
            if open_ is not None:
                start = max(start, open_.start)
            slices.append(_Slice(tid, start, ev.ts_ns, "halt", "kvm", _args(ev.args)))
    if open_ is not None:
        # Still in the guest or the kernel when tracing stopped: until the end; back in the VMM
        # for good: until the vCPU thread's last record.
        in_vmm = open_.name.startswith("userspace")
        open_.end = max(open_.start, events[-1].ts_ns) if in_vmm else end_of_trace
        slices.append(open_)
    return slices


def _slice_name(ev: TraceEvent) -> str:
    if ev.name == "kvm_entry":
        return "guest"
    if ev.name == "kvm_exit":
        return f"exit {ev.args.get('reason')}"
    return f"userspace {ev.args.get('reason')}"


def _leaf(ev: TraceEvent, layout: _Layout, index: int) -> _Slice:
    """A flow end point: a slice from the record to the next boundary of its track (≤ LEAF_NS)."""
    tid = layout.track_of[index]
    points = layout.points[tid]
    after = bisect.bisect_right(points, ev.ts_ns)
    end = ev.ts_ns + LEAF_NS
    if after < len(points):
        end = min(end, points[after])
    return _Slice(tid, ev.ts_ns, end, _leaf_name(ev), _category(ev.name), _args(ev.args))


def _leaf_name(ev: TraceEvent) -> str:
    intid = ev.args.get("intid", ev.args.get("irq"))
    if intid is not None:
        return f"{ev.name} {intid}"
    return f"{ev.name} gsi {ev.args['gsi']}" if "gsi" in ev.args else ev.name


# --- interrupt flows ---------------------------------------------------------------------------


def _match_flows(events: Sequence[TraceEvent]) -> list[_Flow]:
    """source → acknowledge → EOI (→ DIR) arrows, in record order."""
    sources: dict[IrqKey, int] = {}
    fallback: dict[IrqKey, int] = {}
    acked: dict[IrqKey, int] = {}
    eoied: dict[IrqKey, int] = {}
    injects: dict[int, int] = {}   # thread -> its last irqfd_inject, not yet routed
    flows: list[_Flow] = []
    for i, ev in enumerate(events):
        if ev.name == "irqfd_inject":
            injects[ev.thread_id] = i
        origin = i
        if ev.name == "kvm_set_irq":   # the irqfd signal it routes is where the flow starts
            inject = injects.pop(ev.thread_id, None)
            if inject is not None and events[inject].args.get("gsi") == ev.args.get("gsi"):
                origin = inject
        for key in _source_keys(ev):
            sources[key] = origin
        for key in _fallback_keys(ev):
            fallback[key] = i
        if ev.name in ACKS or ev.name in EOIS or ev.name in DIRS:
            intid = int(ev.args["intid"])  # type: ignore[call-overload]
            key = _key(ev.vcpu, intid)
            own = (ev.vcpu, intid)
            if ev.name in ACKS:
                src = sources.pop(key, None)
                src = fallback.pop(key, None) if src is None else src
                fallback.pop(key, None)
                if src is not None:
                    flows.append(_Flow(src, i, intid))
                acked[own] = i
            elif ev.name in EOIS:
                ack = acked.pop(own, None)
                if ack is not None:
                    flows.append(_Flow(ack, i, intid))
                    eoied[own] = i
            else:
                eoi = eoied.pop(own, None)
                if eoi is not None:
                    flows.append(_Flow(eoi, i, intid))
    return flows


def _key(vcpu: int | None, intid: int) -> IrqKey:
    return (None, intid) if intid >= SPI_BASE else (vcpu, intid)


def _source_keys(ev: TraceEvent) -> Iterable[IrqKey]:
    """The interrupts this record makes pending, if it is where an interrupt comes from."""
    a = ev.args
    name = ev.name
    if name in ("kvm_timer_ppi", "kvm_timer_hrtimer_expire"):
        return [(ev.vcpu, int(a["irq"]))]  # type: ignore[call-overload]
    if name in ("vgic_send_sgi", "user_gic_send_sgi"):
        targets = int(a["targets"])  # type: ignore[call-overload]
        intid = int(a["intid"])  # type: ignore[call-overload]
        return [(t, intid) for t in range(targets.bit_length()) if targets >> t & 1]
    if not a.get("level"):
        return []
    if name == "kvm_irq_line" and a.get("type") in ("SPI", "PPI"):
        return [_key(ev.vcpu, int(a["irq"]))]  # type: ignore[call-overload]
    if name == "kvm_set_irq":
        return [(None, int(a["intid"]))]  # type: ignore[call-overload]
    if name == "user_gic_set_irq" and int(a["intid"]) >= SPI_BASE:  # type: ignore[call-overload]
        return [(None, int(a["intid"]))]  # type: ignore[call-overload]
    return []


def _fallback_keys(ev: TraceEvent) -> Iterable[IrqKey]:
    """Raised levels that stand in for a source nobody recorded (a timer found due at load)."""
    if ev.name in ("kvm_timer_update_irq", "vgic_update_irq_pending") and ev.args.get("level"):
        return [_key(ev.vcpu, int(ev.args["irq"]))]  # type: ignore[call-overload]
    return []


# --- JSON events ----------------------------------------------------------------------------------


def _us(ns: int) -> float:
    return round(ns / 1000.0, 3)


def _category(name: str) -> str:
    point = TRACEPOINTS.get(name)
    return point.category if point is not None else "softkvm"


def _args(args: dict[str, object]) -> dict[str, object]:
    return {k: (f"{v:#x}" if k in HEX_ARGS and isinstance(v, int) and not isinstance(v, bool)
                else v) for k, v in args.items()}


def _x(sl: _Slice, pid: int, t0: int) -> dict[str, object]:
    return {"ph": "X", "name": sl.name, "cat": sl.cat, "ts": _us(sl.start - t0),
            "dur": _us(sl.end - sl.start), "pid": pid, "tid": sl.tid, "args": sl.args}


def _instant(ev: TraceEvent, tid: int, pid: int, t0: int) -> dict[str, object]:
    args = _args(ev.args)
    if ev.vcpu >= 0:
        args["vcpu"] = ev.vcpu
    return {"ph": "i", "s": "t", "name": ev.name, "cat": _category(ev.name),
            "ts": _us(ev.ts_ns - t0), "pid": pid, "tid": tid, "args": args}


def _flow_event(phase: str, flow_id: int, intid: int, tid: int, ts: int, pid: int,
                t0: int) -> dict[str, object]:
    event: dict[str, object] = {"ph": phase, "id": flow_id, "name": f"INTID {intid}",
                                "cat": "irq-flow", "ts": _us(ts - t0), "pid": pid, "tid": tid}
    if phase == "f":
        event["bp"] = "e"   # bind to the enclosing slice: the acknowledge / EOI end point
    return event


def _metadata(names: dict[int, str], pid: int, title: str) -> list[dict[str, object]]:
    meta: list[dict[str, object]] = [
        {"ph": "M", "name": "process_name", "ts": 0, "pid": pid, "tid": 0,
         "args": {"name": title}}]
    for tid in sorted(names):
        meta.append({"ph": "M", "name": "thread_name", "ts": 0, "pid": pid, "tid": tid,
                     "args": {"name": names[tid]}})
        meta.append({"ph": "M", "name": "thread_sort_index", "ts": 0, "pid": pid, "tid": tid,
                     "args": {"sort_index": tid}})
    return meta
