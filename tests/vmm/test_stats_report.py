"""Snapshots, rates and the tables of --stats and softkvm stat (plain text when not a terminal)."""

import io
import json

from softkvm.vmm.stats_report import live_table, make_console, print_stats, rates, snapshot, \
    stat_rows
from tests.support.machine import make_vm


def fake_snapshot(t, exits=(10, 20), hvc=(1, 2), tlb=3, blocking=(0, 1)):
    vcpus = [{"id": i, "kvm": {"hvc_exit_stat": hvc[i], "blocking": blocking[i],
                               "exits": exits[i], "halt_poll_fail_ns": 0},
              "softkvm": {"irq_exits": exits[i] - hvc[i]},
              "exits_by_reason": {"IRQ (kick)": exits[i] - hvc[i], "HVC64": hvc[i]},
              "reflected_by_ec": {"SVC64": 4} if i else {}} for i in range(len(exits))]
    return {"version": 1, "pid": 42, "time": 1.7e9 + t, "monotonic": t,
            "vm": {"kvm": {"remote_tlb_flush": tlb, "remote_tlb_flush_requests": tlb},
                   "softkvm": {"pcpu_switches": 5}}, "vcpus": vcpus}


def render(table):
    out = io.StringIO()
    make_console(out).print(table)
    return out.getvalue()


def row_cells(text, name):
    return next(line.split() for line in text.splitlines() if line.split()[:1] == [name])


def test_snapshot_of_a_vm_is_json_with_every_group():
    vm, vcpus, _ram = make_vm(2)
    try:
        vcpus[1].stats.hvc_exit_stat = 3
        snap = json.loads(json.dumps(snapshot(vm)))
    finally:
        vm.close()
    assert snap["version"] == 1 and snap["monotonic"] > 0 and snap["time"] > 1e9
    assert [v["id"] for v in snap["vcpus"]] == [0, 1]
    assert snap["vcpus"][1]["kvm"]["hvc_exit_stat"] == 3
    assert set(snap["vcpus"][0]) == {"id", "kvm", "softkvm", "exits_by_reason", "reflected_by_ec"}
    assert "remote_tlb_flush" in snap["vm"]["kvm"] and "pcpu_switches" in snap["vm"]["softkvm"]


def test_rows_keep_vcpu_columns_and_union_sparse_sections():
    rows = {(r.section, r.name): r for r in stat_rows(fake_snapshot(0))}
    hvc = rows[("KVM vCPU stats", "hvc_exit_stat")]
    assert hvc.values == [1, 2] and hvc.total == 3 and hvc.per_vcpu
    assert rows[("exceptions reflected to the guest, by EC", "SVC64")].values == [0, 4]
    tlb = rows[("KVM VM stats", "remote_tlb_flush")]
    assert tlb.values == [3] and not tlb.per_vcpu


def test_rates_per_second_per_vcpu():
    per_second = rates(fake_snapshot(10.0), fake_snapshot(12.0, exits=(30, 20), tlb=7))
    assert per_second[("KVM vCPU stats", "exits")] == [10.0, 0.0]
    assert per_second[("KVM VM stats", "remote_tlb_flush")] == [2.0]
    same_time = rates(fake_snapshot(5.0), fake_snapshot(5.0, exits=(99, 99)))
    assert same_time[("KVM vCPU stats", "exits")] == [0.0, 0.0]


def test_exit_report_has_one_column_per_vcpu_and_a_total():
    out = io.StringIO()
    print_stats(fake_snapshot(0), out)
    text = out.getvalue()
    assert "\x1b[" not in text  # not a terminal: no escape sequences
    assert row_cells(text, "counter") == ["counter", "vcpu0", "vcpu1", "total"]
    assert row_cells(text, "exits") == ["exits", "10", "20", "30"]
    assert row_cells(text, "HVC64") == ["HVC64", "1", "2", "3"]
    assert row_cells(text, "remote_tlb_flush") == ["remote_tlb_flush", "3"]
    for title in ("[KVM vCPU stats]", "[softkvm vCPU counters]", "[exits by reason]",
                  "[KVM VM stats]", "[softkvm VM counters]"):
        assert title in text


def test_exit_report_of_one_vcpu_has_no_total_column():
    snap = fake_snapshot(0, exits=(10,), hvc=(1,), blocking=(0,))
    out = io.StringIO()
    print_stats(snap, out)
    assert row_cells(out.getvalue(), "exits") == ["exits", "10"]


def test_live_table_shows_rates_and_hides_zeros():
    text = render(live_table(fake_snapshot(0.0), fake_snapshot(0.5, exits=(15, 20))))
    assert row_cells(text, "exits") == ["exits", "35", "10", "10", "0.0"]
    assert row_cells(text, "blocking") == ["blocking", "1"]  # an instant value: no rate
    assert "halt_poll_fail_ns" not in text
    assert "halt_poll_fail_ns" in render(live_table(None, fake_snapshot(0.0), show_all=True))
    assert "softkvm 42: 2 vCPUs" in text
