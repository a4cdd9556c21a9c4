"""Turn bench/results/*.json into summary.md, the README's benchmark block, and PNG plots.

Reads whatever suites are present (guest, micro, linux); a missing one is left out. The README
block between ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` is replaced, nothing else.
"""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path

from bench import plots
from bench.metrics import WINDOWS
from bench.store import RESULTS, load
from softkvm.kvm import stats as kvm_stats

README = Path(__file__).resolve().parents[1] / "README.md"
README_BLOCK = re.compile(r"(<!-- bench:begin -->\n).*?(<!-- bench:end -->)", re.DOTALL)
SOFTKVM_MODES = ("v3-kernel", "v2-kernel", "v2-user")
QEMU_MODES = ("qemu-v3", "qemu-v2")
# Exit counters shown by reason when softkvm's stats module does not list them (EXIT_REASONS:
# (label, counter) pairs that add up to ``exits``); unknown names are simply not shown.
FALLBACK_EXIT_REASONS = (("IRQ (kick)", "irq_exits"), ("HVC64", "hvc_exit_stat"),
                         ("WFI", "wfi_exit_stat"), ("SYS64", "sysreg_traps"),
                         ("DABT mmio user", "mmio_exit_user"),
                         ("DABT mmio kernel", "mmio_exit_kernel"), ("WFE", "wfe_exit_stat"),
                         ("SMC64", "smc_exit_stat"))


def exit_reasons() -> tuple[tuple[str, str], ...]:
    return tuple(getattr(kvm_stats, "EXIT_REASONS", FALLBACK_EXIT_REASONS))


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if unit == "/s" or abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}×"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def guest_table(doc: dict) -> list[str]:
    modes = [m for m in SOFTKVM_MODES + QEMU_MODES
             if any(m in x["values"] for x in doc["metrics"])]
    ours = [m for m in modes if m in SOFTKVM_MODES]
    with_qemu = any(m in QEMU_MODES for m in modes)
    header = ["operation", "unit"] + modes + [f"{m} ÷ QEMU" for m in ours if with_qemu]
    lines = [_row(header), _row(["---"] * 2 + ["---:"] * (len(header) - 2))]
    for m in doc["metrics"]:
        cells = [m["title"], m["unit"]] + [fmt(m["values"].get(mode), m["unit"]) for mode in modes]
        if with_qemu:
            cells += [fmt_ratio(m["ratios"].get(mode)) for mode in ours]
        lines.append(_row(cells))
    return lines


def exit_cell(exits: dict[str, float] | None) -> str:
    """"5: IRQ (kick) 2, WFI 1, ...; VMM 3 (INTR 1, MMIO 2)": exits per event by reason, then
    returns to the VMM by exit reason."""
    if not exits:
        return "–"
    reasons = ", ".join(f"{label} {fmt(exits[key])}" for label, key in exit_reasons()
                        if exits.get(key, 0) >= 0.005)
    total = fmt(exits.get("exits", 0.0))
    user = fmt(exits.get("to_user", 0.0))
    why = ", ".join(f"{key.removeprefix('to_user_').upper()} {fmt(v)}"
                    for key, v in sorted(exits.items())
                    if key.startswith("to_user_") and v >= 0.005)
    return f"{total}{': ' + reasons if reasons else ''}; VMM {user}{f' ({why})' if why else ''}"


def exits_table(doc: dict) -> list[str]:
    modes = [m for m in SOFTKVM_MODES if any(m in x["exits"] for x in doc["metrics"])]
    lines = [_row(["per event of"] + modes), _row(["---"] * (len(modes) + 1))]
    seen: set[str] = set()
    for m in doc["metrics"]:
        if m["window"] in seen or not m["exits"]:
            continue
        seen.add(m["window"])
        title = WINDOWS.get(m["window"], m["window"])
        lines.append(_row([title] + [exit_cell(m["exits"].get(mode)) for mode in modes]))
    return lines


def timer_exit_lines(doc: dict) -> list[str]:
    """Exits per timer interrupt against KVM: 1 exit in kernel mode (the host timer interrupt;
    the guest's ack and EOI hit the GIC's virtual CPU interface without an exit); with a
    userspace irqchip the goal is at most 2 returns to the VMM for the timer line."""
    metric = next((m for m in doc["metrics"] if m["window"] == "timer"), None)
    if metric is None:
        return []
    lines = ["Exits per timer interrupt (10 ms deadline, vCPU idle in WFI), against KVM "
             "(1 exit with the in-kernel vGIC; goal with the userspace irqchip: at most 2 "
             "returns to the VMM for the timer line):", ""]
    for mode, exits in metric["exits"].items():
        intr = exits.get("to_user_intr", 0.0)
        lines.append(f"- {mode}: {exit_cell(exits)}; timer line {fmt(intr)} "
                     f"return(s) to the VMM")
    return lines + [""]


def micro_table(doc: dict) -> list[str]:
    lines = [_row(["CPU-bound loop", "value"]), _row(["---", "---:"])]
    for r in doc["results"]:
        lines.append(_row([r["name"], f"{fmt(r['value'])} {r['unit']}"]))
    return lines


def linux_table(doc: dict) -> list[str]:
    lines = [_row(["Linux boot", "value", "exits (last run)"]), _row(["---", "---:", "---"])]
    for r in doc["results"]:
        lines.append(_row([r["name"], f"{fmt(r['value'])} {r['unit']}",
                           r["detail"] if "exits" in r["detail"] else ""]))
    return lines


def header_lines(guest: dict | None, meta: dict | None) -> list[str]:
    lines = ["# softkvm benchmark", "",
             "Generated by `make bench` (`python -m bench`); the numbers come from "
             "`bench/results/*.json`.", ""]
    if meta:
        lines.append(f"- run: {meta['date']}, host {meta['host']}, Python {meta['python']}, "
                     f"{meta.get('cpus', '?')} CPUs; wall time of the whole run "
                     f"{fmt(meta.get('seconds'))} s; core {meta.get('core', 'not recorded')}")
    if guest:
        load = guest.get("loadavg", {})
        lines += [f"- QEMU reference: {guest.get('qemu') or 'not installed (columns left out)'}",
                  f"- load average (1/5/15 min) at the start of the guest suite "
                  f"{load.get('start')}, at its end {load.get('end')}: other work shared the "
                  "2 cores, so the numbers carry that noise",
                  f"- guest suite: {guest['params']['repeats']} boots per set-up, bootargs "
                  f"`{guest['params']['append']}`; irqfd boots: {guest['params']['irqfd']}"]
    return lines + [""]


GUEST_NOTE = [
    "Measured inside the guest (`guests/bench`) with the generic counter: µs per operation,",
    "latency percentiles over all boots' samples, events per second. `÷ QEMU`: how many times",
    "slower than QEMU TCG with the same GIC version (> 1: softkvm is slower). irqfd needs the",
    "in-kernel vGIC, so it has no QEMU or user-irqchip number.", ""]
EXITS_NOTE = [
    "Exits per event, from softkvm's counters: every exit from the guest (KVM's `exits`) by",
    "reason, then `VMM`: how many returned to userspace (KVM_RUN returning: MMIO for the VMM's",
    "devices or GIC, KVM_EXIT_INTR for the userspace irqchip's timer line). The markers' own",
    "exits are subtracted.", ""]


def summary_markdown(results: Path = RESULTS) -> str:
    guest, micro, linux, meta = (load(n, results) for n in ("guest", "micro", "linux", "run"))
    lines = header_lines(guest, meta)
    if guest:
        lines += ["## Guest micro-benchmarks", ""] + GUEST_NOTE + guest_table(guest) + [""]
        lines += ["## Exits per event (softkvm)", ""] + EXITS_NOTE + exits_table(guest) + [""]
        lines += timer_exit_lines(guest)
    if micro:
        lines += ["## CPU-bound ceiling (against bare Unicorn)", ""] + micro_table(micro) + [""]
    if linux:
        lines += [f"## Linux boot ({linux['date']})", ""] + linux_table(linux) + [""]
    return "\n".join(lines)


def readme_block(results: Path = RESULTS) -> str:
    guest = load("guest", results)
    if guest is None:
        return ""
    load_avg = guest.get("loadavg", {}).get("start")
    intro = (f"Latest `make bench` run, {guest['date']}, 2-core host (load average {load_avg} "
             "at the start: other work shared the machine); full tables, exits per event and "
             "Linux boot times: [bench/results/summary.md](bench/results/summary.md).")
    lines = textwrap.wrap(intro, 100) + [""]
    lines += GUEST_NOTE + guest_table(guest) + [""]
    for name, alt in (("latency.png", "latency histograms"), ("ratio.png", "ratio to QEMU")):
        if (results / name).exists():
            lines += [f"![{alt}](bench/results/{name})", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def update_readme(results: Path = RESULTS, readme: Path = README) -> bool:
    """Replace the README's benchmark block; False when the markers are not there."""
    text = readme.read_text()
    block = readme_block(results)
    if not block or not README_BLOCK.search(text):
        return False
    readme.write_text(README_BLOCK.sub(lambda m: m.group(1) + block + m.group(2), text, count=1))
    return True


def write_report(results: Path = RESULTS, readme: Path | None = README) -> list[Path]:
    """summary.md and the plots; the README block too unless ``readme`` is None."""
    try:
        written = plots.write_all(load("guest", results), results)
    except ModuleNotFoundError as err:  # the `bench` extra is not installed
        print(f"bench report: no plots ({err.name} missing: pip install -e '.[bench]')")
        written = []
    summary = results / "summary.md"
    summary.write_text(summary_markdown(results))
    written.append(summary)
    if readme is not None and update_readme(results, readme):
        written.append(readme)
    return written
