"""``--trace FILE.json``: the Chrome trace-event / Perfetto file, checked against the format.

A validator (required keys per phase, X slices in time order and properly nested per track,
flow "s"/"f" pairs sharing an id and bound inside a slice of their track) runs on every file;
then synthetic records pin the layout, and real guests (the timer and the SGIs of the ``gic``
guest, in the three irqchip modes) must show their interrupts' flows: source → acknowledge → EOI.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from pathlib import Path

import pytest

from softkvm.errors import ConfigError
from softkvm.kvm.trace import TraceEvent, Tracer
from softkvm.vmm.builder import build
from softkvm.vmm.config import VmConfig
from softkvm.vmm.runner import StopReason
from softkvm.vmm.trace_export import build_trace, write_trace
from tests.kvm.test_trace import SCENARIOS
from tests.support.guests import guest_image, run_guest
from tests.test_cli import one_error_line, softkvm

MODES = [("v3", "kernel"), ("v2", "kernel"), ("v2", "user")]
MODE_IDS = [f"gic{g}-{i}" for g, i in MODES]
REQUIRED = {
    "X": {"name", "cat", "ts", "dur", "pid", "tid"},
    "i": {"name", "cat", "ts", "pid", "tid", "s"},
    "s": {"name", "cat", "ts", "pid", "tid", "id"},
    "f": {"name", "cat", "ts", "pid", "tid", "id", "bp"},
    "M": {"name", "pid", "tid", "args"},
}


# --- the validator ------------------------------------------------------------------------------


def validate(doc: dict) -> dict:
    """Check ``doc`` against the Trace Event Format as the viewers read it; returns it."""
    doc = json.loads(json.dumps(doc))   # plain JSON all the way down
    assert doc["displayTimeUnit"] == "ns"
    events = doc["traceEvents"]
    assert isinstance(events, list)
    for ev in events:
        missing = REQUIRED[ev["ph"]] - set(ev)
        assert not missing, (missing, ev)
        if ev["ph"] != "M":
            assert isinstance(ev["ts"], (int, float)) and ev["ts"] >= 0, ev
        if ev["ph"] == "X":
            assert isinstance(ev["dur"], (int, float)) and ev["dur"] >= 0, ev
        if ev["ph"] == "i":
            assert ev["s"] in ("t", "p", "g")
        if ev["ph"] == "f":
            assert ev["bp"] == "e"
        if ev["ph"] == "M":
            assert ev["name"] in ("process_name", "thread_name", "thread_sort_index"), ev
    _check_slices(events)
    _check_flows(events)
    return doc


def _track(ev: dict) -> tuple[int, int]:
    return ev["pid"], ev["tid"]


def slices_by_track(events: list[dict]) -> dict[tuple[int, int], list[dict]]:
    tracks: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for ev in events:
        if ev["ph"] == "X":
            tracks[_track(ev)].append(ev)
    return tracks


def _check_slices(events: list[dict]) -> None:
    """Per track: X events in time order, and each one inside the last one still open."""
    for track, slices in slices_by_track(events).items():
        stack: list[float] = []
        last = -1.0
        for sl in slices:
            assert sl["ts"] >= last, f"X events out of order on {track}: {sl}"
            last = sl["ts"]
            end = sl["ts"] + sl["dur"]
            while stack and stack[-1] <= sl["ts"] + 1e-6:   # ended: a sibling or an uncle
                stack.pop()
            assert not stack or end <= stack[-1] + 1e-6, f"overlapping slices on {track}: {sl}"
            stack.append(end)


def _check_flows(events: list[dict]) -> None:
    """Each id: one "s" then one "f", same name and category, each inside a slice of its
    track (the one the viewer binds it to)."""
    by_id: dict[int, dict[str, dict]] = defaultdict(dict)
    for ev in events:
        if ev["ph"] in ("s", "f"):
            assert ev["ph"] not in by_id[ev["id"]], f"flow {ev['id']} has two {ev['ph']}"
            by_id[ev["id"]][ev["ph"]] = ev
    for flow_id, pair in by_id.items():
        assert set(pair) == {"s", "f"}, f"flow {flow_id} is not an s/f pair: {pair}"
        start, finish = pair["s"], pair["f"]
        assert (start["name"], start["cat"]) == (finish["name"], finish["cat"])
        assert start["ts"] <= finish["ts"]
        assert bound_slice(events, start) is not None and bound_slice(events, finish) is not None


def bound_slice(events: list[dict], flow: dict) -> dict | None:
    """The innermost X slice of the flow event's track that contains it."""
    inside = [e for e in events if e["ph"] == "X" and _track(e) == _track(flow)
              and e["ts"] <= flow["ts"] <= e["ts"] + e["dur"]]
    return min(inside, key=lambda e: e["dur"], default=None)


def flow_chains(doc: dict) -> list[tuple[dict, dict]]:
    """(source slice, destination slice) of every flow."""
    events = doc["traceEvents"]
    pairs: dict[int, dict[str, dict]] = defaultdict(dict)
    for ev in events:
        if ev["ph"] in ("s", "f"):
            pairs[ev["id"]][ev["ph"]] = ev
    return [(bound_slice(events, p["s"]), bound_slice(events, p["f"])) for p in pairs.values()]


def thread_names(doc: dict) -> dict[int, str]:
    return {e["tid"]: e["args"]["name"] for e in doc["traceEvents"]
            if e["ph"] == "M" and e["name"] == "thread_name"}


# --- synthetic records: the layout -----------------------------------------------------------------

VCPU0, VCPU1, POLLER = 11, 12, 22
NAMES = {VCPU0: "vcpu0", VCPU1: "vcpu1", POLLER: "irqfd-poller"}


def rec(ts_us: int, thread: int, name: str, vcpu: int = -1, **args: object) -> TraceEvent:
    return TraceEvent(ts_us * 1000, vcpu, name, args, thread, NAMES[thread])


SYNTHETIC = [
    rec(0, VCPU0, "kvm_timer_restore_state", 0, ctl=1, cval=5, timer=0),
    rec(1, VCPU0, "kvm_entry", 0, vcpu_pc=0x40080000),
    rec(2, VCPU1, "kvm_entry", 1, vcpu_pc=0x40080000),
    rec(12, VCPU0, "kvm_exit", 0, ret="IRQ", esr_ec=0, reason="IRQ", vcpu_pc=0x40080004),
    rec(13, VCPU0, "kvm_timer_ppi", 0, timer=0, irq=27),   # taken after the exit it caused
    rec(13, VCPU0, "kvm_timer_update_irq", 0, irq=27, level=True),
    rec(14, VCPU0, "kvm_entry", 0, vcpu_pc=0x40080004),
    rec(20, VCPU0, "vgic_ack", 0, intid=27, source=None, group=1),
    rec(22, VCPU0, "vgic_eoi", 0, intid=27, eoimode=False),
    rec(25, POLLER, "irqfd_inject", -1, gsi=8, count=1, resample=False),
    rec(26, POLLER, "kvm_set_irq", -1, gsi=8, level=True, intid=40),
    rec(30, VCPU1, "vgic_ack", 1, intid=40, source=None, group=1),   # an SPI: any vCPU
    rec(31, VCPU1, "vgic_send_sgi", 1, intid=3, targets=0b11),
    rec(32, VCPU1, "vgic_ack", 1, intid=3, source=None, group=1),
    rec(33, VCPU1, "vgic_eoi", 1, intid=3, eoimode=True),
    rec(34, VCPU1, "vgic_dir", 1, intid=3),
    rec(35, VCPU1, "kvm_exit", 1, ret="TRAP", esr_ec=1, reason="WFx", vcpu_pc=0x40080010),
    rec(36, VCPU1, "kvm_wfx_arm64", 1, vcpu_pc=0x40080010, is_wfe=False),
    rec(50, VCPU1, "kvm_vcpu_wakeup", 1, ns=10_000, waited=True, valid=True),
    rec(52, VCPU1, "kvm_entry", 1, vcpu_pc=0x40080014),
    rec(60, VCPU0, "vgic_ack", 0, intid=3, source=None, group=1),
    rec(70, VCPU0, "kvm_exit", 0, ret="TRAP", esr_ec=0x24, reason="DABT_LOW", vcpu_pc=0x40080008),
    rec(71, VCPU0, "kvm_mmio", 0, type="write", len=4, gpa=0x09000000, val=0x41),
    rec(72, VCPU0, "kvm_userspace_exit", 0, reason="MMIO", errno=0),
    rec(80, VCPU0, "kvm_entry", 0, vcpu_pc=0x4008000C),
    rec(90, VCPU0, "kvm_exit", 0, ret="TRAP", esr_ec=0x16, reason="HVC64", vcpu_pc=0x40080010),
    rec(91, VCPU0, "kvm_psci_call", 0, fn=0x84000008, function="system_off", a1=0, a2=0, a3=0,
        result=None),
    rec(92, VCPU0, "kvm_userspace_exit", 0, reason="SYSTEM_EVENT", errno=0),
]


@pytest.fixture(scope="module")
def synthetic() -> dict:
    return validate(build_trace(SYNTHETIC, start_ns=0, title="test VM"))


def _x(doc: dict, tid: int, name: str) -> list[dict]:
    return [e for e in doc["traceEvents"] if e["ph"] == "X" and e["tid"] == tid
            and e["name"] == name]


def test_one_track_per_vcpu_and_per_other_thread(synthetic):
    names = thread_names(synthetic)
    assert names[1] == "vCPU 0" and names[2] == "vCPU 1"
    assert "irqfd-poller" in set(names.values())
    assert all(tid >= 1000 for tid, n in names.items() if not n.startswith("vCPU"))
    process = [e for e in synthetic["traceEvents"] if e["name"] == "process_name"]
    assert process[0]["args"]["name"] == "test VM"


def test_guest_exit_and_userspace_slices(synthetic):
    guests = _x(synthetic, 1, "guest")
    assert [(g["ts"], g["dur"]) for g in guests] == [(1.0, 11.0), (14.0, 56.0), (80.0, 10.0)]
    assert guests[0]["args"]["vcpu_pc"] == "0x40080000"
    irq_exit = _x(synthetic, 1, "exit IRQ")
    assert [(e["ts"], e["dur"]) for e in irq_exit] == [(12.0, 2.0)]
    assert irq_exit[0]["args"]["reason"] == "IRQ"
    assert [(e["ts"], e["dur"]) for e in _x(synthetic, 1, "exit DABT_LOW")] == [(70.0, 2.0)]
    assert [(e["ts"], e["dur"]) for e in _x(synthetic, 1, "userspace MMIO")] == [(72.0, 8.0)]
    assert _x(synthetic, 1, "exit HVC64")[0]["args"]["esr_ec"] == "0x16"
    assert [(e["ts"], e["dur"]) for e in _x(synthetic, 2, "exit WFx")] == [(35.0, 17.0)]
    assert [(e["ts"], e["dur"]) for e in _x(synthetic, 2, "halt")] == [(40.0, 10.0)]


def test_other_records_are_instants_on_their_track(synthetic):
    instants = {(e["tid"], e["name"]) for e in synthetic["traceEvents"] if e["ph"] == "i"}
    assert (1, "kvm_timer_restore_state") in instants and (1, "kvm_mmio") in instants
    assert (2, "kvm_wfx_arm64") in instants
    assert any(name == "kvm_set_irq" and tid >= 1000 for tid, name in instants)
    mmio = next(e for e in synthetic["traceEvents"] if e["name"] == "kvm_mmio")
    assert mmio["args"]["gpa"] == "0x9000000" and mmio["args"]["vcpu"] == 0
    assert mmio["cat"] == "mmio"


def test_interrupt_flows_from_source_to_ack_to_eoi(synthetic):
    chains = {(src["name"], src["tid"], dst["name"], dst["tid"])
              for src, dst in flow_chains(synthetic)}
    poller = next(tid for tid, n in thread_names(synthetic).items() if n == "irqfd-poller")
    assert chains == {
        ("kvm_timer_ppi 27", 1, "vgic_ack 27", 1), ("vgic_ack 27", 1, "vgic_eoi 27", 1),
        ("irqfd_inject gsi 8", poller, "vgic_ack 40", 2),
        ("vgic_send_sgi 3", 2, "vgic_ack 3", 2), ("vgic_ack 3", 2, "vgic_eoi 3", 2),
        ("vgic_eoi 3", 2, "vgic_dir 3", 2), ("vgic_send_sgi 3", 2, "vgic_ack 3", 1),
    }


def test_flow_end_points_are_short_slices_nested_in_the_guest(synthetic):
    ack = _x(synthetic, 1, "vgic_ack 27")[0]
    assert ack["ts"] == 20.0 and 0 < ack["dur"] <= 1.0 and ack["args"]["intid"] == 27
    guest = _x(synthetic, 1, "guest")[1]
    assert guest["ts"] <= ack["ts"] and ack["ts"] + ack["dur"] <= guest["ts"] + guest["dur"]


def test_without_a_recorded_source_the_raised_level_stands_in():
    records = [rec(1, VCPU0, "kvm_entry", 0, vcpu_pc=0),
               rec(2, VCPU0, "kvm_exit", 0, ret="IRQ", esr_ec=0, reason="IRQ", vcpu_pc=0),
               rec(3, VCPU0, "kvm_timer_update_irq", 0, irq=27, level=True),
               rec(4, VCPU0, "kvm_entry", 0, vcpu_pc=0),
               rec(5, VCPU0, "vgic_ack", 0, intid=27, source=None, group=1)]
    doc = validate(build_trace(records))
    assert [(s["name"], d["name"]) for s, d in flow_chains(doc)] == [
        ("kvm_timer_update_irq 27", "vgic_ack 27")]


def _doc(*events: dict) -> dict:
    base = {"pid": 1, "tid": 1, "cat": "c"}
    return {"displayTimeUnit": "ns", "traceEvents": [{**base, **e} for e in events]}


@pytest.mark.parametrize("doc", [
    _doc({"ph": "X", "name": "a", "ts": 0}),                                     # no dur
    _doc({"ph": "X", "name": "a", "ts": 5, "dur": 1}, {"ph": "X", "name": "b", "ts": 1,
                                                       "dur": 1}),               # out of order
    _doc({"ph": "X", "name": "a", "ts": 0, "dur": 5}, {"ph": "X", "name": "b", "ts": 3,
                                                       "dur": 5}),               # overlapping
    _doc({"ph": "X", "name": "a", "ts": 0, "dur": 5}, {"ph": "s", "name": "f", "ts": 1,
                                                       "id": 1}),                # no "f"
    _doc({"ph": "X", "name": "a", "ts": 0, "dur": 5}, {"ph": "s", "name": "f", "ts": 1, "id": 1},
         {"ph": "f", "name": "f", "ts": 2, "id": 1, "bp": "e", "tid": 2}),       # f in no slice
    _doc({"ph": "i", "name": "a", "ts": 0}),                                     # no scope
], ids=["no-dur", "order", "overlap", "unpaired-flow", "unbound-flow", "instant-scope"])
def test_the_validator_rejects_broken_files(doc):
    with pytest.raises((AssertionError, KeyError)):
        validate(doc)


def test_empty_trace_is_still_a_valid_file(tmp_path):
    assert validate(build_trace([]))["traceEvents"][0]["name"] == "process_name"


# --- the real thing: guests in every irqchip mode ------------------------------------------------


@pytest.mark.parametrize("scenario,chains", [
    ("irqfd", {("irqfd_inject gsi 9", "vgic_ack 41"), ("vgic_ack 41", "vgic_eoi 41")}),
    ("spi-v2", {("kvm_irq_line 40", "vgic_ack 40"), ("vgic_ack 40", "vgic_eoi 40")}),
    ("sgi-v3", {("vgic_send_sgi 1", "vgic_ack 1"), ("vgic_ack 1", "vgic_eoi 1"),
                ("vgic_eoi 1", "vgic_dir 1")}),
    ("user-gic", {("user_gic_set_irq 40", "user_gic_ack 40"),
                  ("user_gic_ack 40", "user_gic_eoi 40"), ("user_gic_eoi 40", "user_gic_dir 40")}),
])
def test_flows_of_recorded_vms(scenario, chains):
    """The records of real runs (tests/kvm/test_trace.py's scenarios) give the expected arrows:
    irqfd signal, KVM_IRQ_LINE, SGI and a userspace-GIC wire to the acknowledge, then EOI, DIR."""
    doc = validate(build_trace(SCENARIOS[scenario]()))
    assert {(s["name"], d["name"]) for s, d in flow_chains(doc)} == chains


def traced_guest(tmp_path: Path, name: str, smp: int, gic: str, irqchip: str,
                 append: str) -> dict:
    path = tmp_path / f"{name}.json"
    run = run_guest(name, smp, gic=gic, irqchip=irqchip, append=append, trace=path)
    assert run.result.reason is StopReason.POWER_OFF, run.output[-2000:]
    assert run.failures == [], run.output[-2000:]
    return validate(json.loads(path.read_text()))


@pytest.mark.guest
@pytest.mark.parametrize(("gic", "irqchip"), MODES, ids=MODE_IDS)
def test_timer_guest_trace(tmp_path, gic, irqchip):
    doc = traced_guest(tmp_path, "timer", 1, gic, irqchip, "vtimer")
    events = doc["traceEvents"]
    names = {e["name"] for e in events}
    assert {"guest", "kvm_timer_save_state", "kvm_timer_restore_state"} <= names
    assert any(n.startswith("exit ") for n in names) and "exit HVC64" in names
    assert "kvm_timer_update_irq" in names or "kvm_timer_update_irq 27" in names
    if irqchip == "user":
        assert "userspace INTR" in names and "userspace MMIO" in names
    ack = "user_gic_ack 27" if irqchip == "user" else "vgic_ack 27"
    eoi = ack.replace("ack", "eoi")
    chains = [(s["name"], d["name"]) for s, d in flow_chains(doc)]
    sources = {s for s, d in chains if d == ack}
    assert sources & {"kvm_timer_ppi 27", "kvm_timer_hrtimer_expire 27"}, chains[:10]
    assert chains.count((ack, eoi)) >= 20          # 20 periodic ticks at least, each EOId
    vcpu_tracks = {tid for tid, n in thread_names(doc).items() if n.startswith("vCPU")}
    assert {d["tid"] for s, d in flow_chains(doc)} <= vcpu_tracks


@pytest.mark.guest
@pytest.mark.parametrize(("gic", "irqchip"), MODES, ids=MODE_IDS)
def test_ipi_guest_trace_has_sgi_flows_between_vcpus(tmp_path, gic, irqchip):
    doc = traced_guest(tmp_path, "gic", 2, gic, irqchip, "ipi")
    names = thread_names(doc)
    assert {"vCPU 0", "vCPU 1"} <= set(names.values())
    send = "user_gic_send_sgi" if irqchip == "user" else "vgic_send_sgi"
    ack = "user_gic_ack" if irqchip == "user" else "vgic_ack"
    sgi = [(s, d) for s, d in flow_chains(doc) if s["name"].startswith(send + " ")]
    assert sgi and all(d["name"].startswith(ack + " ") for _, d in sgi)
    assert any(s["tid"] != d["tid"] for s, d in sgi), "no SGI crossed vCPUs"
    assert any(s["tid"] == d["tid"] for s, d in sgi), "no SGI to self"
    eois = [d for s, d in flow_chains(doc) if s["name"].startswith(ack + " ")]
    assert len(eois) >= len(sgi) // 2


@pytest.mark.guest
def test_trace_is_written_when_the_guest_times_out(tmp_path):
    path = tmp_path / "timeout.json"
    machine = build(VmConfig(kernel=guest_image("uart"), timeout=1.0, trace=path,
                             console_out=io.BytesIO()))
    try:
        result = machine.run()
    finally:
        machine.close()
    assert result.reason is StopReason.TIMEOUT
    doc = validate(json.loads(path.read_text()))
    assert any(e["name"] == "guest" for e in doc["traceEvents"])
    assert machine.trace_records and machine.trace_records > 0


def test_write_trace_reports_an_unwritable_file(tmp_path):
    tracer = Tracer()
    tracer.enable()
    tracer.emit("kvm_entry", 0, vcpu_pc=0)
    with pytest.raises(ConfigError, match="cannot write the trace"):
        write_trace(tmp_path / "missing" / "t.json", tracer)
    assert write_trace(tmp_path / "t.json", tracer) == 1
    validate(json.loads((tmp_path / "t.json").read_text()))


# --- configuration and the CLI --------------------------------------------------------------------


@pytest.mark.parametrize("path,needle", [
    ("{tmp}/no/such/dir/t.json", "does not exist"),
    ("{tmp}", "is a directory"),
])
def test_bad_trace_path_is_a_config_error(tmp_path, path, needle):
    config = VmConfig(kernel=guest_image("hello"), trace=Path(path.format(tmp=tmp_path)))
    with pytest.raises(ConfigError, match=needle):
        config.validate()


@pytest.mark.guest
def test_cli_trace_option(tmp_path):
    path = tmp_path / "hello.json"
    proc = softkvm("run", "--trace", path, guest_image("hello"))
    assert proc.returncode == 0, proc.stderr
    assert f"records in {path}" in proc.stderr
    doc = validate(json.loads(path.read_text()))
    assert any(e["name"] == "guest" for e in doc["traceEvents"])


def test_cli_bad_trace_path_is_one_line(tmp_path):
    proc = softkvm("run", "--trace", tmp_path / "nope" / "t.json", guest_image("hello"))
    assert proc.returncode == 1
    assert "--trace" in one_error_line(proc) and "does not exist" in proc.stderr
