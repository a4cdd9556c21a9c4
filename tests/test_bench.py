"""The benchmark's own code, kept from rotting without running the benchmark: the parser of the
bench guest's output, one short run of the guest on softkvm (exit windows, irqfd host side),
and the JSON / summary / README / plot writers on that run."""

from __future__ import annotations

import pytest

from bench import report, suite
from bench.guest import SOFTKVM_MODES, run_softkvm
from bench.irqfd_host import IrqfdCounts
from bench.parse import parse_output, percentile
from bench.store import document, load, write_json
from tests.support.guests import guest_image

OUTPUT = """\
== guest: bench (2 CPUs) ==
BENCHINFO freq=62500000 cpus=2 gic=3 qemu=0
MARK hvc begin
MARK hvc end n=1000
BENCH hvc cost ticks=625000 n=1000
BENCH ticks-max rate ticks=62500000 n=5000
SAMPLES timer-lat ticks 625 1250
SAMPLES timer-lat ticks 1875
SAMPLES irqfd-lat pct 100 200
PASS: bench-hvc: 1000 operations in 10000 us
SUMMARY: 1 passed, 0 failed
"""


def test_parser_reads_costs_rates_and_samples():
    out = parse_output(OUTPUT)
    assert out.ok and (out.freq, out.cpus, out.gic, out.qemu) == (62_500_000, 2, 3, False)
    assert out.cost_us("hvc") == pytest.approx(10.0)
    assert out.rate_per_s("ticks-max") == pytest.approx(5000.0)
    assert out.samples_us("timer-lat") == pytest.approx([10.0, 20.0, 30.0])
    assert out.samples["irqfd-lat"] == [100, 200] and out.samples_us("irqfd-lat") == []
    assert out.marks == {"hvc": 1000}
    assert out.cost_us("missing") is None and out.rate_per_s("missing") is None


def test_parser_sees_failures():
    out = parse_output(OUTPUT.replace("PASS: bench-hvc", "FAIL: bench-hvc"))
    assert not out.ok and out.failures == ["FAIL: bench-hvc: 1000 operations in 10000 us"]


def test_percentile_interpolates():
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert percentile([1.0, 2.0], 100) == 2.0
    assert percentile([], 50) != percentile([], 50)  # NaN


@pytest.fixture(scope="module")
def short_runs():
    guest_image("bench")
    mode = SOFTKVM_MODES[0]
    plain = run_softkvm(mode, "hvc mmio timer n=200 samples=3 deadline=2")
    irqfd = run_softkvm(mode, "", irqfd=IrqfdCounts(edge=5, level=5, lat=3))
    return {mode.name: [plain, irqfd]}


@pytest.mark.guest
def test_guest_run_measures_and_counts_exits(short_runs):
    plain, irqfd = short_runs["v3-kernel"]
    assert plain.output.cost_us("hvc") > 0 and plain.output.cost_us("mmio") > 0
    assert len(plain.output.samples_us("timer-lat")) == 3
    assert plain.exits["hvc"]["exits"] == pytest.approx(1.0)
    assert plain.exits["mmio"]["to_user"] == pytest.approx(1.0)
    assert "to_user" not in plain.exits["hvc"]
    assert irqfd.output.rate_per_s("irqfd-edge") > 0 and irqfd.output.rate_per_s("irqfd-level") > 0
    assert len(irqfd.irqfd_lat_us) == 3 and all(0 < lat < 10e6 for lat in irqfd.irqfd_lat_us)


@pytest.mark.guest
def test_results_json_summary_readme_and_plots(short_runs, tmp_path):
    doc = document("guest", suite.summarize(short_runs))
    doc.update(params={"append": "x", "repeats": 1, "smp": 2, "irqfd": {}}, qemu=None,
               loadavg={"start": [0, 0, 0], "end": [0, 0, 0]}, seconds=1.0)
    write_json("guest", doc, tmp_path)
    back = load("guest", tmp_path)
    keys = {m["key"] for m in back["metrics"]}
    assert {"hvc", "mmio", "timer-lat", "irqfd-edge", "irqfd-lat"} <= keys
    assert len(back["samples"]["irqfd-lat"]["v3-kernel"]) == 3
    summary = report.summary_markdown(tmp_path)
    assert "HVC round trip" in summary and "| HVC (PSCI_VERSION) | 1: " in summary
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- bench:begin -->\nold\n<!-- bench:end -->\ntail\n")
    assert report.update_readme(tmp_path, readme)
    text = readme.read_text()
    assert "old" not in text and "HVC round trip" in text and text.endswith("tail\n")
    written = report.write_report(tmp_path, readme=None)
    assert {p.name for p in written} >= {"costs.png", "latency.png", "summary.md"}
