"""GIC CPU-interface conformance scenarios, written as data, with a runner and adapters.

A scenario is a list of steps a device and a guest perform (raise a line, acknowledge, EOI,
program a register) and the architectural answers expected (IAR values, the IRQ line, pending
and active bits, running priority). ``run(scenario, gic)`` drives any ``GicUnderTest``; the
in-kernel vGIC's adapter is ``KernelVgic`` below, and the userspace GICv2 gets its own adapter
later — only the adapter knows how a GIC is reached.

The KernelVgic adapter behaves like KVM's run loop around one physical CPU: a guest step first
switches the CPU to its vCPU (sync the previous one, flush this one), and after every step the
running vCPU exits and re-enters while it was kicked or its maintenance interrupt is raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from softkvm.arch import gic as G
from softkvm.arch import sysregs as S
from softkvm.kvm.vgic.vgic import Vgic
from tests.kvm.vgic.fakes import MODELS, FakeVm, make_vgic, mpidr_of

SPURIOUS = G.INTID_SPURIOUS


class GicUnderTest(Protocol):
    model: str            # "v2" or "v3": the guest-visible architecture
    nr_vcpus: int

    def dist_enable(self, on: bool) -> None: ...
    def cpu_enable(self, vcpu: int, on: bool) -> None: ...
    def set_pmr(self, vcpu: int, value: int) -> None: ...
    def set_group_bits(self, vcpu: int, bits: int) -> None: ...
    def set_eoimode(self, vcpu: int, on: bool) -> None: ...
    def set_priority(self, vcpu: int, intid: int, priority: int) -> None: ...
    def set_trigger(self, vcpu: int, intid: int, edge: bool) -> None: ...
    def set_enabled(self, vcpu: int, intid: int, on: bool) -> None: ...
    def set_target(self, intid: int, target: int) -> None: ...
    def set_pending(self, vcpu: int, intid: int, on: bool) -> None: ...
    def set_active(self, vcpu: int, intid: int, on: bool) -> None: ...
    def is_pending(self, vcpu: int, intid: int) -> bool: ...
    def is_active(self, vcpu: int, intid: int) -> bool: ...
    def line(self, intid: int, level: bool, vcpu: int | None) -> None: ...
    def send_sgi(self, sender: int, intid: int, targets: list[int] | None) -> None: ...
    def irq_signalled(self, vcpu: int) -> bool: ...
    def ack(self, vcpu: int) -> tuple[int, int]: ...
    def eoi(self, vcpu: int, intid: int, source: int) -> None: ...
    def deactivate(self, vcpu: int, intid: int, source: int) -> None: ...
    def running_priority(self, vcpu: int) -> int: ...
    def highest_pending(self, vcpu: int) -> int: ...


# --- steps ---------------------------------------------------------------------------------------


class Step(Protocol):
    def apply(self, gic: GicUnderTest) -> None: ...


@dataclass(frozen=True)
class Boot:
    """Distributor on, every vCPU's interface on with PMR ``pmr``."""
    pmr: int = 0xF8

    def apply(self, gic: GicUnderTest) -> None:
        gic.dist_enable(True)
        for vcpu in range(gic.nr_vcpus):
            gic.cpu_enable(vcpu, True)
            gic.set_pmr(vcpu, self.pmr)


@dataclass(frozen=True)
class Irq:
    """Configure an interrupt (banked on ``vcpu`` if private) and enable it."""
    intid: int
    priority: int = 0xA0
    edge: bool = True
    vcpu: int = 0
    enabled: bool = True

    def apply(self, gic: GicUnderTest) -> None:
        gic.set_priority(self.vcpu, self.intid, self.priority)
        if self.intid >= G.NR_PRIVATE_IRQS:
            gic.set_trigger(self.vcpu, self.intid, self.edge)
        gic.set_enabled(self.vcpu, self.intid, self.enabled)


@dataclass(frozen=True)
class Call:
    """Any adapter operation without a result: ``Call("set_pmr", 0, 0x80)``."""
    op: str
    args: tuple = ()

    def __init__(self, op: str, *args: object) -> None:
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "args", args)

    def apply(self, gic: GicUnderTest) -> None:
        getattr(gic, self.op)(*self.args)


@dataclass(frozen=True)
class Line:
    intid: int
    level: bool
    vcpu: int | None = None

    def apply(self, gic: GicUnderTest) -> None:
        gic.line(self.intid, self.level, self.vcpu)


@dataclass(frozen=True)
class Pulse:
    """An edge on a device line: 1 then 0."""
    intid: int
    vcpu: int | None = None

    def apply(self, gic: GicUnderTest) -> None:
        gic.line(self.intid, True, self.vcpu)
        gic.line(self.intid, False, self.vcpu)


@dataclass(frozen=True)
class Sgi:
    sender: int
    intid: int
    targets: tuple[int, ...] | None = None   # None: everyone but the sender

    def apply(self, gic: GicUnderTest) -> None:
        gic.send_sgi(self.sender, self.intid, None if self.targets is None else list(self.targets))


@dataclass(frozen=True)
class Ack:
    """Read IAR on ``vcpu``; expect ``intid`` (and, for GICv2 SGIs, the source CPU)."""
    vcpu: int
    intid: int
    source: int | None = None

    def apply(self, gic: GicUnderTest) -> None:
        got, source = gic.ack(self.vcpu)
        assert got == self.intid, f"IAR on vCPU {self.vcpu}: got {got}, expected {self.intid}"
        if self.source is not None:
            assert source == self.source, f"IAR source: got {source}, expected {self.source}"


@dataclass(frozen=True)
class Eoi:
    vcpu: int
    intid: int
    source: int = 0

    def apply(self, gic: GicUnderTest) -> None:
        gic.eoi(self.vcpu, self.intid, self.source)


@dataclass(frozen=True)
class Dir:
    vcpu: int
    intid: int
    source: int = 0

    def apply(self, gic: GicUnderTest) -> None:
        gic.deactivate(self.vcpu, self.intid, self.source)


@dataclass(frozen=True)
class AckEoi:
    """Acknowledge ``intid`` (expecting it) and EOI it at once."""
    vcpu: int
    intid: int
    source: int | None = None

    def apply(self, gic: GicUnderTest) -> None:
        Ack(self.vcpu, self.intid, self.source).apply(gic)
        gic.eoi(self.vcpu, self.intid, self.source or 0)


@dataclass(frozen=True)
class Signal:
    vcpu: int
    expected: bool

    def apply(self, gic: GicUnderTest) -> None:
        got = gic.irq_signalled(self.vcpu)
        assert got == self.expected, (
            f"IRQ line of vCPU {self.vcpu}: {got}, expected {self.expected}")


@dataclass(frozen=True)
class Pending:
    intid: int
    expected: bool
    vcpu: int = 0

    def apply(self, gic: GicUnderTest) -> None:
        got = gic.is_pending(self.vcpu, self.intid)
        assert got == self.expected, f"pending({self.intid}) = {got}, expected {self.expected}"


@dataclass(frozen=True)
class Active:
    intid: int
    expected: bool
    vcpu: int = 0

    def apply(self, gic: GicUnderTest) -> None:
        got = gic.is_active(self.vcpu, self.intid)
        assert got == self.expected, f"active({self.intid}) = {got}, expected {self.expected}"


@dataclass(frozen=True)
class Rpr:
    vcpu: int
    expected: int

    def apply(self, gic: GicUnderTest) -> None:
        got = gic.running_priority(self.vcpu)
        assert got == self.expected, f"RPR = {got:#x}, expected {self.expected:#x}"


@dataclass(frozen=True)
class Hppi:
    vcpu: int
    expected: int

    def apply(self, gic: GicUnderTest) -> None:
        got = gic.highest_pending(self.vcpu)
        assert got == self.expected, f"HPPIR = {got}, expected {self.expected}"


@dataclass(frozen=True)
class Scenario:
    name: str
    steps: tuple[Step, ...]
    nr_vcpus: int = 1
    models: tuple[str, ...] = ("v2", "v3")


def run(scenario: Scenario, gic: GicUnderTest) -> None:
    for index, step in enumerate(scenario.steps):
        try:
            step.apply(gic)
        except AssertionError as exc:
            raise AssertionError(f"{scenario.name}, step {index} {step}: {exc}") from None


# --- the scenarios -------------------------------------------------------------------------------

SPI, SPI2, SPI3 = 40, 41, 42
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("edge SPI: pending, acknowledged, EOIed", (
        Boot(), Irq(SPI), Signal(0, False), Pulse(SPI), Signal(0, True), Pending(SPI, True),
        Hppi(0, SPI), Ack(0, SPI), Signal(0, False), Active(SPI, True), Pending(SPI, False),
        Rpr(0, 0xA0), Eoi(0, SPI), Active(SPI, False), Rpr(0, 0xFF), Ack(0, SPURIOUS))),
    Scenario("level SPI held high comes back after EOI", (
        Boot(), Irq(SPI, edge=False), Line(SPI, True), AckEoi(0, SPI), Signal(0, True),
        Ack(0, SPI), Line(SPI, False), Eoi(0, SPI), Signal(0, False), Ack(0, SPURIOUS),
        Pending(SPI, False))),
    Scenario("level SPI lowered before the guest looks: nothing", (
        Boot(), Irq(SPI, edge=False), Line(SPI, True), Line(SPI, False), Signal(0, False),
        Ack(0, SPURIOUS))),
    Scenario("edge re-raised while active: active and pending", (
        Boot(), Irq(SPI), Pulse(SPI), Ack(0, SPI), Pulse(SPI), Active(SPI, True),
        Pending(SPI, True), Ack(0, SPURIOUS), Eoi(0, SPI), AckEoi(0, SPI), Ack(0, SPURIOUS))),
    Scenario("priorities: lowest value first, no preemption by equal or lower", (
        Boot(), Irq(SPI, 0x80), Irq(SPI2, 0x40), Irq(SPI3, 0xC0), Pulse(SPI), Pulse(SPI2),
        Pulse(SPI3), Ack(0, SPI2), Ack(0, SPURIOUS), Eoi(0, SPI2), Ack(0, SPI), Eoi(0, SPI),
        AckEoi(0, SPI3), Ack(0, SPURIOUS))),
    Scenario("preemption: a higher priority nests, RPR follows", (
        Boot(), Irq(SPI, 0x80), Irq(SPI2, 0x40), Pulse(SPI), Ack(0, SPI), Rpr(0, 0x80),
        Signal(0, False), Pulse(SPI2), Signal(0, True), Ack(0, SPI2), Rpr(0, 0x40),
        Eoi(0, SPI2), Rpr(0, 0x80), Eoi(0, SPI), Rpr(0, 0xFF))),
    Scenario("PMR masks priorities at or above it", (
        Boot(pmr=0x80), Irq(SPI, 0x80), Pulse(SPI), Signal(0, False), Ack(0, SPURIOUS),
        Call("set_pmr", 0, 0x88), Signal(0, True), AckEoi(0, SPI))),
    Scenario("binary point: same group priority does not preempt", (
        Boot(), Call("set_group_bits", 0, 3), Irq(SPI, 0x48), Irq(SPI2, 0x40), Pulse(SPI),
        Ack(0, SPI), Pulse(SPI2), Signal(0, False), Ack(0, SPURIOUS), Rpr(0, 0x40),
        Eoi(0, SPI), AckEoi(0, SPI2))),
    Scenario("EOImode 1: EOI drops priority, DIR deactivates", (
        Boot(), Call("set_eoimode", 0, True), Irq(SPI, 0x80), Irq(SPI2, 0xA0), Pulse(SPI),
        Ack(0, SPI), Eoi(0, SPI), Rpr(0, 0xFF), Active(SPI, True), Pulse(SPI2), Ack(0, SPI2),
        Eoi(0, SPI2), Dir(0, SPI), Active(SPI, False), Dir(0, SPI2), Active(SPI2, False))),
    Scenario("EOImode 0: DIR is ignored", (
        Boot(), Irq(SPI), Pulse(SPI), Ack(0, SPI), Dir(0, SPI), Active(SPI, True),
        Eoi(0, SPI), Active(SPI, False))),
    Scenario("disabled interrupt stays pending and is seen in ISPENDR", (
        Boot(), Irq(SPI, edge=False, enabled=False), Line(SPI, True), Pending(SPI, True),
        Signal(0, False), Ack(0, SPURIOUS), Call("set_enabled", 0, SPI, True), Signal(0, True),
        Ack(0, SPI), Line(SPI, False), Eoi(0, SPI))),
    Scenario("distributor disabled: nothing delivered until it is enabled", (
        Boot(), Call("dist_enable", False), Irq(SPI), Pulse(SPI), Signal(0, False),
        Ack(0, SPURIOUS), Call("dist_enable", True), Signal(0, True), AckEoi(0, SPI))),
    Scenario("CPU interface group disabled: no signal", (
        Boot(), Call("cpu_enable", 0, False), Irq(SPI), Pulse(SPI), Signal(0, False),
        Ack(0, SPURIOUS), Call("cpu_enable", 0, True), AckEoi(0, SPI))),
    Scenario("ISPENDR/ICPENDR set and clear the pending state", (
        Boot(), Irq(SPI), Call("set_pending", 0, SPI, True), Pending(SPI, True),
        Call("set_pending", 0, SPI, False), Pending(SPI, False), Ack(0, SPURIOUS),
        Call("set_pending", 0, SPI, True), AckEoi(0, SPI))),
    Scenario("ISACTIVER/ICACTIVER set and clear the active state", (
        Boot(), Irq(SPI), Call("set_active", 0, SPI, True), Active(SPI, True), Pulse(SPI),
        Pending(SPI, True), Ack(0, SPURIOUS), Call("set_active", 0, SPI, False),
        Active(SPI, False), AckEoi(0, SPI))),
    Scenario("SPI routed to the second vCPU", (
        Boot(), Irq(SPI), Call("set_target", SPI, 1), Pulse(SPI), Signal(0, False),
        Ack(0, SPURIOUS), Signal(1, True), AckEoi(1, SPI)), nr_vcpus=2),
    Scenario("pending SPI re-routed before delivery follows the new target", (
        Boot(), Irq(SPI), Call("set_pmr", 0, 0x80),
        Pulse(SPI), Call("set_target", SPI, 1), Ack(1, SPI), Eoi(1, SPI), Ack(0, SPURIOUS)),
        nr_vcpus=2),
    Scenario("active SPI re-routed stays where it is active", (
        Boot(), Irq(SPI), Pulse(SPI), Ack(0, SPI), Call("set_target", SPI, 1),
        Ack(1, SPURIOUS), Eoi(0, SPI), Active(SPI, False), Pulse(SPI), AckEoi(1, SPI)),
        nr_vcpus=2),
    Scenario("PPIs are private to their vCPU", (
        Boot(), Irq(20, edge=False, vcpu=1), Line(20, True, 1), Signal(0, False),
        Ack(0, SPURIOUS), Ack(1, 20), Line(20, False, 1), Eoi(1, 20), Ack(1, SPURIOUS)),
        nr_vcpus=2),
    Scenario("more pending than list registers: all delivered in priority order", (
        Boot(), *(Irq(32 + i, 0x10 * (i + 1)) for i in range(6)),
        *(Pulse(37 - i) for i in range(6)),
        *(AckEoi(0, 32 + i) for i in range(6)), Ack(0, SPURIOUS))),
    Scenario("SGI to another vCPU", (
        Boot(), Irq(3, vcpu=1), Sgi(0, 3, (1,)), Ack(0, SPURIOUS), Ack(1, 3, source=0),
        Eoi(1, 3, 0), Ack(1, SPURIOUS)), nr_vcpus=2),
    Scenario("SGI to everyone but the sender", (
        Boot(), Sgi(1, 5), Ack(1, SPURIOUS), AckEoi(0, 5), AckEoi(2, 5)), nr_vcpus=3),
    Scenario("GICv2 SGI from three sources: one at a time, each source reported", (
        Boot(), Sgi(1, 2, (0,)), Sgi(2, 2, (0,)), Sgi(3, 2, (0,)), Ack(0, 2, source=1),
        Eoi(0, 2, 1), Ack(0, 2, source=2), Eoi(0, 2, 2), Ack(0, 2, source=3), Eoi(0, 2, 3),
        Ack(0, SPURIOUS)), nr_vcpus=4, models=("v2",)),
    Scenario("GICv2 multi-source SGI is seen before a lower-priority SPI", (
        Boot(), Irq(SPI, 0xC0), Pulse(SPI), Sgi(1, 2, (0,)), Sgi(2, 2, (0,)),
        AckEoi(0, 2, 1), AckEoi(0, 2, 2), AckEoi(0, SPI), Ack(0, SPURIOUS)),
        nr_vcpus=3, models=("v2",)),
    Scenario("GICv3 SGIs from several sources collapse into one", (
        Boot(), Sgi(1, 2, (0,)), Sgi(2, 2, (0,)), AckEoi(0, 2), Ack(0, SPURIOUS)),
        nr_vcpus=3, models=("v3",)),
)


# --- the in-kernel vGIC adapter ------------------------------------------------------------------


class SetClearBits:
    """The enable/pending/active parts of ``GicUnderTest`` through the set/clear-enable,
    -pending and -active bit registers; a driver supplies ``_bit_write`` and ``_bit_read``."""

    def _bit_write(self, vcpu: int, intid: int, set_off: int, clear_off: int, on: bool) -> None:
        raise NotImplementedError

    def _bit_read(self, vcpu: int, intid: int, off: int) -> bool:
        raise NotImplementedError

    def set_enabled(self, vcpu: int, intid: int, on: bool) -> None:
        self._bit_write(vcpu, intid, G.GICD_ISENABLER, G.GICD_ICENABLER, on)

    def set_pending(self, vcpu: int, intid: int, on: bool) -> None:
        self._bit_write(vcpu, intid, G.GICD_ISPENDR, G.GICD_ICPENDR, on)

    def set_active(self, vcpu: int, intid: int, on: bool) -> None:
        self._bit_write(vcpu, intid, G.GICD_ISACTIVER, G.GICD_ICACTIVER, on)

    def is_pending(self, vcpu: int, intid: int) -> bool:
        return self._bit_read(vcpu, intid, G.GICD_ISPENDR)

    def is_active(self, vcpu: int, intid: int) -> bool:
        return self._bit_read(vcpu, intid, G.GICD_ISACTIVER)


class KernelVgic(SetClearBits):
    """``GicUnderTest`` for softkvm's in-kernel vGIC, guest accesses through its MMIO/sysregs."""

    def __init__(self, model: str, nr_vcpus: int, nr_lr: int = 4) -> None:
        self.model, self.nr_vcpus = model, nr_vcpus
        self.vgic: Vgic
        self.vm: FakeVm
        self.vgic, self.vm = make_vgic(MODELS[model], nr_vcpus, nr_irqs=96, nr_lr=nr_lr)
        self.running: int | None = None
        self._kicks_seen = [0] * nr_vcpus
        self.exits = 0

    @property
    def v2(self) -> bool:
        return self.model == "v2"

    # --- the physical CPU: one vCPU between flush and sync at a time ---

    def _enter(self, vcpu: int) -> None:
        if self.running == vcpu:
            return
        if self.running is not None:
            self.vgic.kvm_vgic_sync_hwstate(self.running)
        self._kicks_seen[vcpu] = self.vm.vcpus()[vcpu].kicks
        self.vgic.kvm_vgic_flush_hwstate(vcpu)
        self.running = vcpu
        self._settle()

    def _settle(self) -> None:
        """Exit and re-enter the running vCPU while it is kicked or asks for maintenance."""
        vcpu = self.running
        if vcpu is None:
            return
        for _ in range(64):
            kicked = self.vm.vcpus()[vcpu].kicks != self._kicks_seen[vcpu]
            if not kicked and not self.vgic.vcpu_if(vcpu).maintenance():
                return
            self._kicks_seen[vcpu] = self.vm.vcpus()[vcpu].kicks
            self.exits += 1
            self.vgic.kvm_vgic_sync_hwstate(vcpu)
            self.vgic.kvm_vgic_flush_hwstate(vcpu)
        raise AssertionError("the vCPU keeps exiting (maintenance storm)")

    def _guest(self, vcpu: int) -> None:
        self._enter(vcpu)

    # --- distributor / redistributor access, as the guest on ``vcpu`` ---

    def _private_frame(self, intid: int) -> bool:
        return not self.v2 and intid < G.NR_PRIVATE_IRQS

    def _read(self, vcpu: int, intid: int, dist_off: int, sgi_off: int, size: int = 4) -> int:
        self._guest(vcpu)
        if self._private_frame(intid):
            value = self.vgic.redist_mmio_read(vcpu, G.GICR_SGI_BASE + sgi_off, size, vcpu)
        else:
            value = self.vgic.dist_mmio_read(vcpu, dist_off, size)
        self._settle()
        return value

    def _write(self, vcpu: int, intid: int, dist_off: int, sgi_off: int, value: int,
               size: int = 4) -> None:
        self._guest(vcpu)
        if self._private_frame(intid):
            self.vgic.redist_mmio_write(vcpu, G.GICR_SGI_BASE + sgi_off, size, value, vcpu)
        else:
            self.vgic.dist_mmio_write(vcpu, dist_off, size, value)
        self._settle()

    def _bit_write(self, vcpu: int, intid: int, set_off: int, clear_off: int, on: bool) -> None:
        word, bit = divmod(intid, 32)
        off = (set_off if on else clear_off)
        self._write(vcpu, intid, off + 4 * word, off, 1 << bit)

    def _bit_read(self, vcpu: int, intid: int, off: int) -> bool:
        word, bit = divmod(intid, 32)
        return bool(self._read(vcpu, intid, off + 4 * word, off) >> bit & 1)

    def dist_enable(self, on: bool) -> None:
        field = G.GICD_CTLR_F.Enable if self.v2 else G.GICD_CTLR_F.EnableGrp1
        self._guest(0)
        self.vgic.dist_mmio_write(0, G.GICD_CTLR, 4, field.val(on))
        self._settle()

    def set_priority(self, vcpu: int, intid: int, priority: int) -> None:
        self._write(vcpu, intid, G.GICD_IPRIORITYR + intid, G.GICR_IPRIORITYR0 + intid,
                    priority, size=1)

    def set_trigger(self, vcpu: int, intid: int, edge: bool) -> None:
        word, slot = divmod(intid, 16)
        value = self._read(vcpu, intid, G.GICD_ICFGR + 4 * word, G.GICR_ICFGR0 + 4 * word)
        value = G.Field(2 * slot + 1).put(value, int(edge))
        self._write(vcpu, intid, G.GICD_ICFGR + 4 * word, G.GICR_ICFGR0 + 4 * word, value)

    def set_target(self, intid: int, target: int) -> None:
        if self.v2:
            self._write(0, intid, G.GICD_ITARGETSR + intid, 0, 1 << target, size=1)
        else:
            self._write(0, intid, G.GICD_IROUTER + 8 * intid, 0, mpidr_of(target), size=8)

    def send_sgi(self, sender: int, intid: int, targets: list[int] | None) -> None:
        self._guest(sender)
        if self.v2:
            f = G.GICD_SGIR_F
            value = f.SGIINTID.val(intid) | (
                f.TargetListFilter.val(G.SGIR_FILTER_OTHERS) if targets is None
                else f.CPUTargetList.val(sum(1 << t for t in targets)))
            self.vgic.dist_mmio_write(sender, G.GICD_SGIR, 4, value)
        else:
            for value in self._sgi1r_values(intid, targets):
                assert self.vgic.vgic_v3_sysreg_write(sender, S.ICC_SGI1R_EL1.encoding, value)
        self._settle()

    @staticmethod
    def _sgi1r_values(intid: int, targets: list[int] | None) -> list[int]:
        f = G.ICC_SGI1R_F
        if targets is None:
            return [f.INTID.val(intid) | f.IRM.val(1)]
        values = []
        for target in targets:
            mpidr = mpidr_of(target)
            values.append(f.INTID.val(intid) | f.TargetList.val(1 << G.MPIDR_AFF0.get(mpidr))
                          | f.Aff1.val(G.MPIDR_AFF1.get(mpidr))
                          | f.Aff2.val(G.MPIDR_AFF2.get(mpidr)))
        return values

    def line(self, intid: int, level: bool, vcpu: int | None) -> None:
        assert self.vgic.kvm_vgic_inject_irq(vcpu, intid, level, None) == 0
        self._settle()

    # --- the CPU interface ---

    def _icc_write(self, vcpu: int, reg: S.SysReg, value: int) -> None:
        assert self.vgic.vgic_v3_sysreg_write(vcpu, reg.encoding, value)

    def _icc_read(self, vcpu: int, reg: S.SysReg) -> int:
        value = self.vgic.vgic_v3_sysreg_read(vcpu, reg.encoding)
        assert value is not None
        return value

    def _cpu_write(self, vcpu: int, offset: int, reg: S.SysReg, value: int) -> None:
        self._guest(vcpu)
        if self.v2:
            self.vgic.cpu_mmio_write(vcpu, offset, 4, value)
        else:
            self._icc_write(vcpu, reg, value)
        self._settle()

    def _cpu_read(self, vcpu: int, offset: int, reg: S.SysReg) -> int:
        self._guest(vcpu)
        value = self.vgic.cpu_mmio_read(vcpu, offset, 4) if self.v2 else self._icc_read(vcpu, reg)
        self._settle()
        return value

    def cpu_enable(self, vcpu: int, on: bool) -> None:
        value = G.GICC_CTLR_F.EnableGrp0.val(on) if self.v2 else int(on)
        self._cpu_write(vcpu, G.GICC_CTLR, S.ICC_IGRPEN1_EL1, value)

    def set_pmr(self, vcpu: int, value: int) -> None:
        self._cpu_write(vcpu, G.GICC_PMR, S.ICC_PMR_EL1, value)

    def set_group_bits(self, vcpu: int, bits: int) -> None:
        # group 0 (v2 default) masks with BPR+1, group 1 (v3 default) with BPR1
        self._cpu_write(vcpu, G.GICC_BPR, S.ICC_BPR1_EL1, 7 - bits if self.v2 else 8 - bits)

    def set_eoimode(self, vcpu: int, on: bool) -> None:
        if self.v2:
            ctlr = self._cpu_read(vcpu, G.GICC_CTLR, S.ICC_CTLR_EL1)
            self._cpu_write(vcpu, G.GICC_CTLR, S.ICC_CTLR_EL1,
                            G.GICC_CTLR_F.EOImode.put(ctlr, int(on)))
        else:
            self._cpu_write(vcpu, 0, S.ICC_CTLR_EL1, G.ICC_CTLR_F.EOImode.val(on))

    def irq_signalled(self, vcpu: int) -> bool:
        self._guest(vcpu)
        irq, fiq = self.vgic.vcpu_if(vcpu).signal()
        assert not fiq, "the default group must not signal FIQ"
        return irq

    def ack(self, vcpu: int) -> tuple[int, int]:
        value = self._cpu_read(vcpu, G.GICC_IAR, S.ICC_IAR1_EL1)
        if self.v2:
            return G.GICC_IAR_F.InterruptID.get(value), G.GICC_IAR_F.CPUID.get(value)
        return value, 0

    def _id(self, intid: int, source: int) -> int:
        return intid | (G.GICC_IAR_F.CPUID.val(source) if self.v2 else 0)

    def eoi(self, vcpu: int, intid: int, source: int) -> None:
        self._cpu_write(vcpu, G.GICC_EOIR, S.ICC_EOIR1_EL1, self._id(intid, source))

    def deactivate(self, vcpu: int, intid: int, source: int) -> None:
        self._cpu_write(vcpu, G.GICC_DIR, S.ICC_DIR_EL1, self._id(intid, source))

    def running_priority(self, vcpu: int) -> int:
        return self._cpu_read(vcpu, G.GICC_RPR, S.ICC_RPR_EL1)

    def highest_pending(self, vcpu: int) -> int:
        value = self._cpu_read(vcpu, G.GICC_HPPIR, S.ICC_HPPIR1_EL1)
        return G.GICC_IAR_F.InterruptID.get(value) if self.v2 else value
