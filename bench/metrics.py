"""What the guest suite reports: each metric, where its number comes from, how to compare it.

A metric reads one :class:`~bench.guest.GuestRun` field: a ``cost`` (µs per operation), a
``rate`` (events per second), or a percentile of a sample list. ``window`` names the guest's
MARK window whose exits are charged to it (per event of that window).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bench.guest import GuestRun
from bench.parse import percentile

Kind = Literal["cost", "rate", "p50", "p99"]


@dataclass(frozen=True, slots=True)
class Metric:
    key: str
    title: str
    kind: Kind
    source: str          # BENCH op or SAMPLES name ("irqfd-lat": host-paired latencies)
    window: str          # MARK window for exits per event
    host_driven: bool = False   # softkvm kernel irqchip only (irqfd)

    @property
    def unit(self) -> str:
        return "/s" if self.kind == "rate" else "us"

    @property
    def higher_is_better(self) -> bool:
        return self.kind == "rate"

    def value(self, run: GuestRun) -> float | None:
        """This metric from a single run (cost/rate), None when the run has no such number."""
        out = run.output
        if self.kind == "cost":
            return out.cost_us(self.source)
        if self.kind == "rate":
            return out.rate_per_s(self.source)
        return None

    def samples(self, run: GuestRun) -> list[float]:
        if self.source == "irqfd-lat":
            return run.irqfd_lat_us
        return run.output.samples_us(self.source)

    def of_samples(self, values: list[float]) -> float | None:
        if not values:
            return None
        return percentile(values, 50 if self.kind == "p50" else 99)


METRICS = (
    Metric("counter", "CNTVCT read (timestamp)", "cost", "counter", "counter"),
    Metric("hvc", "HVC round trip (PSCI_VERSION)", "cost", "hvc", "hvc"),
    Metric("svc", "SVC to the guest's EL1 vector + ERET", "cost", "svc", "svc"),
    Metric("mmio", "MMIO read served by the VMM (PL011 UARTFR)", "cost", "mmio", "mmio"),
    Metric("gicd", "distributor read (GICD_TYPER)", "cost", "gicd", "gicd"),
    Metric("cpuif", "CPU interface read (v3 ICC_PMR_EL1 / v2 GICC_PMR)", "cost", "cpuif",
           "cpuif"),
    Metric("ack", "acknowledge: IAR read of a pending SGI", "cost", "ack", "ackeoi"),
    Metric("eoi", "EOIR write", "cost", "eoi", "ackeoi"),
    Metric("sgi", "self-SGI round trip (send, IRQ, ack, EOI, ERET)", "cost", "sgi", "sgi"),
    Metric("ipi-lat", "IPI one-way latency p50 (2 vCPUs idle in WFI)", "p50", "ipi-lat", "ipi"),
    Metric("ipi-lat-p99", "IPI one-way latency p99", "p99", "ipi-lat", "ipi"),
    Metric("ipi-rt", "IPI ping-pong round trip (mean)", "cost", "ipi-rt", "ipi"),
    Metric("timer-lat", "timer 10 ms deadline -> handler p50 (idle in WFI)", "p50", "timer-lat",
           "timer"),
    Metric("timer-lat-p99", "timer deadline -> handler p99 (idle)", "p99", "timer-lat", "timer"),
    Metric("timer-eoi", "timer deadline -> EOI done p50 (idle)", "p50", "timer-eoi", "timer"),
    Metric("timer-busy-lat", "timer deadline -> handler p50 (CPU busy)", "p50",
           "timer-busy-lat", "timer-busy"),
    Metric("ticks-max", "timer ticks/s, each tick re-armed for now", "rate", "ticks-max",
           "ticks-max"),
    Metric("ticks-1khz", "timer ticks/s at 1 kHz", "rate", "ticks-1khz", "ticks-1khz"),
    Metric("ticks-1khz-late", "1 kHz tick lateness p99", "p99", "ticks-1khz-late",
           "ticks-1khz"),
    Metric("irqfd-edge", "irqfd edge interrupts/s (window 1, doorbell ack)", "rate",
           "irqfd-edge", "irqfd-edge", host_driven=True),
    Metric("irqfd-level", "irqfd level interrupts/s (resamplefd at EOI)", "rate", "irqfd-level",
           "irqfd-level", host_driven=True),
    Metric("irqfd-lat", "irqfd write -> guest handler p50", "p50", "irqfd-lat", "irqfd-lat",
           host_driven=True),
    Metric("irqfd-lat-p99", "irqfd write -> guest handler p99", "p99", "irqfd-lat", "irqfd-lat",
           host_driven=True),
)

# Histograms in the report: sample name -> title.
HISTOGRAMS = {
    "timer-lat": "timer deadline -> handler (idle)",
    "ipi-lat": "IPI one-way latency",
    "irqfd-lat": "irqfd write -> guest handler",
}

# MARK windows (exits per event): window -> what one event is.
WINDOWS = {
    "counter": "CNTVCT read",
    "hvc": "HVC (PSCI_VERSION)",
    "svc": "SVC + ERET",
    "mmio": "PL011 UARTFR read",
    "gicd": "GICD_TYPER read",
    "cpuif": "CPU interface read",
    "ackeoi": "self-SGI send + IAR read + EOIR write (IRQs masked)",
    "sgi": "self-SGI round trip",
    "ipi": "IPI ping-pong round trip (2 IPIs, 2 WFIs)",
    "timer": "timer interrupt, 10 ms deadline, idle in WFI",
    "timer-busy": "timer interrupt, 10 ms deadline, CPU busy",
    "ticks-max": "timer tick re-armed for now",
    "ticks-1khz": "timer tick at 1 kHz, idle in WFI",
    "irqfd-edge": "irqfd edge delivery (+ doorbell MMIO write)",
    "irqfd-level": "irqfd level delivery (EOI -> resamplefd)",
    "irqfd-lat": "irqfd latency sample (+ doorbell MMIO write)",
}
