"""The EL1 virtual and physical timers of every vCPU.

Counterpart: arch/arm64/kvm/arch_timer.c. Both timers are *direct* (as with VHE): while a vCPU is
loaded its CTL/CVAL live in the "hardware" (the native shim's per-vCPU block, emulated in C on
every guest access) and are saved/restored only at vcpu_put/vcpu_load. When a loaded timer's
condition is met, the host timer PPI (``hw.generic_timer.TimerIrq``) forces an exit and
``kvm_arch_timer_handler`` raises the level; the PPI then stays masked (``phys_active``) until the
guest deactivates the HW-mapped virtual interrupt — or, without an in-kernel irqchip, until the
timer no longer fires (``kvm_timer_sync_user``). A vCPU blocked in WFI is woken by its background
timer, which the same native watcher keeps (``TimerIrq.bg_arm``).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from softkvm.arch import sysregs as S
from softkvm.hw.clock import counter_now, monotonic_ns
from softkvm.hw.generic_timer import (
    CTL_ENABLE,
    CTL_IMASK,
    CTL_ISTATUS,
    PTIMER,
    VTIMER,
    TimerIrq,
    comparator_deadline_ns,
)
from softkvm.hw.native import SkvmTimer
from softkvm.kvm import uapi
from softkvm.kvm.errors import KvmError

if TYPE_CHECKING:
    from softkvm.kvm.api import Vcpu, Vm

MASK64 = 0xFFFFFFFFFFFFFFFF
DEFAULT_PPI = {VTIMER: 27, PTIMER: 30}
DEV_IRQ_BIT = {VTIMER: uapi.KVM_ARM_DEV_EL1_VTIMER, PTIMER: uapi.KVM_ARM_DEV_EL1_PTIMER}
ATTR_TIMER = {uapi.KVM_ARM_VCPU_TIMER_IRQ_VTIMER: VTIMER,
              uapi.KVM_ARM_VCPU_TIMER_IRQ_PTIMER: PTIMER}


class TimerIrqChip(Protocol):
    """What the timer needs from the in-kernel vGIC (vgic.c entry points)."""

    def kvm_vgic_inject_irq(self, vcpu_id: int | None, intid: int, level: bool,
                            owner: object) -> int: ...
    def kvm_vgic_map_is_active(self, vcpu_id: int, intid: int) -> bool: ...


@dataclass(slots=True, eq=False)
class ArchTimerContext:
    """``struct arch_timer_context``: one timer's saved registers and output level."""

    index: int
    irq: int
    hw: SkvmTimer  # the "hardware" registers while loaded (the vCPU's block in the shim)
    cnt_ctl: int = 0
    cnt_cval: int = 0
    level: bool = False
    loaded: bool = False


@dataclass(slots=True)
class ArchTimerCpu:
    """``struct arch_timer_cpu``: both timers, the background timer, the host PPI state."""

    timers: list[ArchTimerContext]
    enabled: bool = False
    bg_armed: bool = False   # the background timer (kept by the PPI watcher) is set
    phys_active: list[bool] = field(default_factory=lambda: [False, False])


class ArchTimers:
    """The timers of a VM: per-vCPU state plus the host timer PPI and background timers."""

    def __init__(self, vm: Vm) -> None:
        self.vm = vm
        self.ppi = dict(DEFAULT_PPI)
        self.cpus: dict[int, ArchTimerCpu] = {}
        self.irq = TimerIrq(vm.native)
        self.cntvoff = vm.cntvoff

    # --- set-up -------------------------------------------------------------------------

    def vcpu_init(self, vcpu: Vcpu) -> None:
        """kvm_timer_vcpu_init: both timers off, guest virtual time starting near zero."""
        hw = vcpu.core.state.timer
        self.cpus[vcpu.vcpu_id] = ArchTimerCpu(
            [ArchTimerContext(VTIMER, self.ppi[VTIMER], hw[VTIMER]),
             ArchTimerContext(PTIMER, self.ppi[PTIMER], hw[PTIMER])])
        vcpu.core.state.cntvoff = self.cntvoff
        vcpu.core.raw.cpr_write(*S.CNTVOFF_EL2, self.cntvoff)

    def reset(self, vcpu: Vcpu) -> None:
        """kvm_timer_vcpu_reset (INIT, PSCI CPU_ON): CTL = 0, levels lowered."""
        cpu = self.cpus[vcpu.vcpu_id]
        for ctx in cpu.timers:
            ctx.cnt_ctl = 0
            if ctx.loaded:
                ctx.hw.ctl = 0
            if cpu.enabled:
                self.update_irq(vcpu, ctx, False)
        self._reset_mapped(vcpu)

    def _reset_mapped(self, vcpu: Vcpu) -> None:
        cpu = self.cpus[vcpu.vcpu_id]
        for index in (VTIMER, PTIMER):
            cpu.phys_active[index] = False
            self.irq.set_masked(vcpu, index, False)
        reset_mapped = getattr(self.vm.vgic, "kvm_vgic_reset_mapped_irq", None)
        if reset_mapped is not None and cpu.enabled:
            for ctx in cpu.timers:
                reset_mapped(vcpu.vcpu_id, ctx.irq)

    def enable(self, vcpu: Vcpu) -> None:
        """kvm_timer_enable (first run): owners and HW mappings in the vGIC."""
        cpu = self.cpus[vcpu.vcpu_id]
        if cpu.enabled:
            return
        vgic = self.vm.vgic
        if vgic is not None:
            if self.ppi[VTIMER] == self.ppi[PTIMER]:
                raise KvmError(errno.EINVAL, "the virtual and physical timers share a PPI")
            for ctx in cpu.timers:
                ret = vgic.kvm_vgic_set_owner(vcpu.vcpu_id, ctx.irq, ctx)  # type: ignore[attr-defined]
                if ret < 0:
                    raise KvmError(-ret, f"timer PPI {ctx.irq} is already owned by another device")
                # The "host" PPI number is the guest's: the model has no separate host irq domain.
                vgic.kvm_vgic_map_phys_irq(  # type: ignore[attr-defined]
                    vcpu.vcpu_id, ctx.irq, ctx.irq,
                    lambda _vintid, c=ctx: self.should_fire(vcpu, c),
                    lambda active, c=ctx: self._vgic_set_phys_active(vcpu, c.index, active))
        self.irq.register(vcpu, vcpu.core.state)
        cpu.enabled = True

    # --- predicates ---------------------------------------------------------------------

    def count(self, ctx: ArchTimerContext, now: int | None = None) -> int:
        """The count ``ctx`` compares against, at the physical count ``now`` (default: now)."""
        if now is None:
            now = counter_now()
        return (now - self.cntvoff) & MASK64 if ctx.index == VTIMER else now

    def registers(self, vcpu: Vcpu, ctx: ArchTimerContext) -> tuple[int, int]:
        if ctx.loaded:
            live = ctx.hw
            return live.ctl, live.cval
        return ctx.cnt_ctl, ctx.cnt_cval

    def should_fire(self, vcpu: Vcpu, ctx: ArchTimerContext, now: int | None = None) -> bool:
        """kvm_timer_should_fire, at the physical count ``now`` (default: now). A timer whose
        output is off reads no clock (asked for both timers at every entry)."""
        ctl, cval = self.registers(vcpu, ctx)
        if ctl & (CTL_ENABLE | CTL_IMASK) != CTL_ENABLE:
            return False
        return cval <= self.count(ctx, now)

    def deadline_ns(self, vcpu: Vcpu, ctx: ArchTimerContext) -> int | None:
        """Host time at which ``ctx`` fires, or None if it cannot."""
        ctl, cval = self.registers(vcpu, ctx)
        return comparator_deadline_ns(ctl, cval, self.cntvoff if ctx.index == VTIMER else 0)

    def earliest_deadline_ns(self, vcpu: Vcpu) -> int | None:
        deadlines = [d for ctx in self.cpus[vcpu.vcpu_id].timers
                     if (d := self.deadline_ns(vcpu, ctx)) is not None]
        return min(deadlines, default=None)

    def has_pending_timer(self, vcpu: Vcpu) -> bool:
        """kvm_cpu_has_pending_timer: a timer fires (the WFI wake-up test)."""
        cpu = self.cpus.get(vcpu.vcpu_id)
        return cpu is not None and cpu.enabled and any(
            self.should_fire(vcpu, ctx) for ctx in cpu.timers)

    # --- output level -------------------------------------------------------------------

    def update_irq(self, vcpu: Vcpu, ctx: ArchTimerContext, level: bool) -> None:
        """kvm_timer_update_irq: record the level and, with a vGIC, inject it."""
        ctx.level = level
        vcpu.stats.timer_irq_updates += 1
        if vcpu.tracer.on:
            vcpu.tracer.emit("kvm_timer_update_irq", vcpu.vcpu_id, irq=ctx.irq, level=level)
        vgic = self.vm.vgic
        if vgic is not None:
            vgic.kvm_vgic_inject_irq(vcpu.vcpu_id, ctx.irq, level, ctx)  # type: ignore[attr-defined]

    def phys_deactivated(self, vcpu: Vcpu, index: int) -> None:
        """The guest deactivated the HW-mapped interrupt: the physical PPI is live again."""
        cpu = self.cpus[vcpu.vcpu_id]
        cpu.phys_active[index] = False
        self.irq.set_masked(vcpu, index, False)

    def _vgic_set_phys_active(self, vcpu: Vcpu, index: int, active: bool) -> None:
        """Called by the vGIC (under its lock) when the mapped interrupt's physical active state
        changes: guest deactivation of the HW list register, or resampling a low line."""
        self._set_phys_active(vcpu, index, active)

    def _set_phys_active(self, vcpu: Vcpu, index: int, active: bool) -> None:
        self.cpus[vcpu.vcpu_id].phys_active[index] = active
        self.irq.set_masked(vcpu, index, active)

    # --- vcpu_load / vcpu_put -------------------------------------------------------------

    def vcpu_load(self, vcpu: Vcpu) -> None:
        cpu = self.cpus[vcpu.vcpu_id]
        if not cpu.enabled:
            return
        vgic, phys_active = self.vm.vgic, cpu.phys_active
        vcpu_id, tracer = vcpu.vcpu_id, vcpu.tracer
        for ctx in cpu.timers:  # kvm_timer_vcpu_load_gic / _nogic
            level = self.should_fire(vcpu, ctx)  # reads the counter, as KVM's, if it must
            if vgic is None:
                if level != ctx.level:
                    self.update_irq(vcpu, ctx, level)
                phys_active[ctx.index] = level
                continue
            self.update_irq(vcpu, ctx, level)
            phys_active[ctx.index] = vgic.kvm_vgic_map_is_active(  # type: ignore[attr-defined]
                vcpu_id, ctx.irq) or level
        if cpu.bg_armed:
            cpu.bg_armed = False
            self.irq.bg_cancel(vcpu)
        for ctx in cpu.timers:  # timer_restore_state
            live = ctx.hw
            live.cval = ctx.cnt_cval
            live.ctl = ctx.cnt_ctl
            ctx.loaded = True
            if tracer.on:
                tracer.emit("kvm_timer_restore_state", vcpu_id, ctl=ctx.cnt_ctl,
                            cval=ctx.cnt_cval, timer=ctx.index)
        vcpu.stats.timer_restores += 1
        self.irq.load(vcpu, phys_active)  # the PPI masks and the loaded state, in one step

    def vcpu_put(self, vcpu: Vcpu, blocking: bool) -> None:
        cpu = self.cpus[vcpu.vcpu_id]
        if not cpu.enabled:
            return
        self.irq.put(vcpu)
        tracer = vcpu.tracer
        for ctx in cpu.timers:  # timer_save_state
            if ctx.loaded:
                live = ctx.hw
                ctx.cnt_ctl = live.ctl & (CTL_ENABLE | CTL_IMASK)
                ctx.cnt_cval = live.cval
                ctx.loaded = False
                if tracer.on:
                    tracer.emit("kvm_timer_save_state", vcpu.vcpu_id, ctl=ctx.cnt_ctl,
                                cval=ctx.cnt_cval, timer=ctx.index)
        vcpu.stats.timer_saves += 1
        if blocking:
            self._bg_arm(vcpu, cpu)

    def _bg_arm(self, vcpu: Vcpu, cpu: ArchTimerCpu) -> None:
        """kvm_timer_blocking: wake the blocked vCPU when its earliest timer falls."""
        deadline = self.earliest_deadline_ns(vcpu)
        if deadline is not None:
            cpu.bg_armed = True
            self.irq.bg_arm(vcpu, deadline, vcpu.wake_fd)

    def bg_woken(self, vcpu: Vcpu) -> None:
        """After each wake-up of a blocked vCPU (its thread): kvm_bg_timer_expire's re-arm if
        the background timer fell early (a timer register set meanwhile), and its trace."""
        cpu = self.cpus.get(vcpu.vcpu_id)
        if cpu is None or not cpu.bg_armed or not self.irq.bg_take(vcpu):
            return
        deadline = self.earliest_deadline_ns(vcpu)
        if deadline is not None and deadline > monotonic_ns():
            self.irq.bg_arm(vcpu, deadline, vcpu.wake_fd)
            return
        if vcpu.tracer.on:  # the timers that are due now: the interrupts this wake-up brings
            for ctx in cpu.timers:
                if self.should_fire(vcpu, ctx):
                    vcpu.tracer.emit("kvm_timer_hrtimer_expire", vcpu.vcpu_id, timer=ctx.index,
                                     irq=ctx.irq)

    # --- the host timer PPI -------------------------------------------------------------

    def kvm_arch_timer_handler(self, vcpu: Vcpu) -> None:
        """After an exit, with host interrupts on: the timer PPI taken while the guest ran (the
        watcher's marks) raises the level of each timer that fired."""
        fired = self.irq.take(vcpu)
        cpu = self.cpus.get(vcpu.vcpu_id) if fired else None
        if cpu is None:
            return
        for ctx in cpu.timers:
            if not fired >> ctx.index & 1:
                continue
            if vcpu.tracer.on:  # where a timer interrupt's flow starts
                vcpu.tracer.emit("kvm_timer_ppi", vcpu.vcpu_id, timer=ctx.index, irq=ctx.irq)
            if self.should_fire(vcpu, ctx):
                # Always inject, even if ctx.level is already high: the vGIC cleared the mapped
                # line when it queued the last expiry, so this is a new rising edge for it.
                self.update_irq(vcpu, ctx, True)
                self._set_phys_active(vcpu, ctx.index, True)  # the forwarded PPI stays active
        self.irq.rearm(vcpu)

    # --- userspace irqchip (kvm_run.s.regs.device_irq_level) ------------------------------

    def should_notify_user(self, vcpu: Vcpu) -> bool:
        published = vcpu.run_struct.s.regs.device_irq_level
        for ctx in self.cpus[vcpu.vcpu_id].timers:  # asked at every entry: no generator
            if self.should_fire(vcpu, ctx) != bool(published & DEV_IRQ_BIT[ctx.index]):
                return True
        return False

    def update_run(self, vcpu: Vcpu) -> None:
        """kvm_timer_update_run: publish the levels in device_irq_level."""
        regs = vcpu.run_struct.s.regs
        level = regs.device_irq_level & ~(uapi.KVM_ARM_DEV_EL1_VTIMER | uapi.KVM_ARM_DEV_EL1_PTIMER)
        for ctx in self.cpus[vcpu.vcpu_id].timers:
            if ctx.level:
                level |= DEV_IRQ_BIT[ctx.index]
        regs.device_irq_level = level

    def sync_user(self, vcpu: Vcpu) -> None:
        """kvm_timer_sync_user: unmask the host PPI once the timer no longer fires."""
        cpu = self.cpus[vcpu.vcpu_id]
        for ctx in cpu.timers:
            if not self.should_fire(vcpu, ctx):
                if ctx.level:
                    self.update_irq(vcpu, ctx, False)
                if cpu.phys_active[ctx.index]:
                    self._set_phys_active(vcpu, ctx.index, False)
            elif not ctx.level:  # rose while running: report it (the exit happens anyway)
                self.update_irq(vcpu, ctx, True)
                self._set_phys_active(vcpu, ctx.index, True)

    # --- ONE_REG and attributes ---------------------------------------------------------

    def get_one_reg(self, vcpu: Vcpu, reg_id: int) -> int | None:
        ctx, what = _timer_reg(self.cpus[vcpu.vcpu_id], reg_id)
        if ctx is None:
            return None
        ctl, cval = self.registers(vcpu, ctx)
        if what == "ctl":  # userspace sees ISTATUS whenever the deadline passed
            return ctl | (CTL_ISTATUS if cval <= self.count(ctx) else 0)
        if what == "cval":
            return cval
        return self.count(ctx)

    def set_one_reg(self, vcpu: Vcpu, reg_id: int, value: int) -> bool:
        ctx, what = _timer_reg(self.cpus[vcpu.vcpu_id], reg_id)
        if ctx is None:
            return False
        if what == "cnt":
            if ctx.index == VTIMER:  # VM-wide: every vCPU's CNTVOFF follows
                self.set_cntvoff((counter_now() - value) & MASK64)
            return True
        live = ctx.hw if ctx.loaded else None
        if what == "ctl":
            ctx.cnt_ctl = value & (CTL_ENABLE | CTL_IMASK)
            if live is not None:
                live.ctl = ctx.cnt_ctl
        else:
            ctx.cnt_cval = value & MASK64
            if live is not None:
                live.cval = ctx.cnt_cval
        return True

    def set_cntvoff(self, cntvoff: int) -> None:
        self.cntvoff = cntvoff
        for vcpu in self.vm.vcpus:
            vcpu.core.state.cntvoff = cntvoff
            vcpu.core.raw.cpr_write(*S.CNTVOFF_EL2, cntvoff)

    def set_irq_attr(self, vcpu: Vcpu, attr: int, ppi: int) -> None:
        """KVM_ARM_VCPU_TIMER_CTRL: choose a timer's PPI (applies to every vCPU)."""
        if self.vm.vgic is None:
            raise KvmError(errno.ENXIO, "timer interrupt numbers need an in-kernel irqchip")
        if attr not in ATTR_TIMER:
            raise KvmError(errno.ENXIO, f"unknown timer attribute {attr}")
        if not 16 <= ppi < 32:
            raise KvmError(errno.EINVAL, f"timer interrupt {ppi} is not a PPI (16..31)")
        if any(cpu.enabled for cpu in self.cpus.values()):
            raise KvmError(errno.EBUSY, "timer interrupts are fixed once the VM has run")
        index = ATTR_TIMER[attr]
        self.ppi[index] = ppi
        for cpu in self.cpus.values():
            cpu.timers[index].irq = ppi

    def get_irq_attr(self, attr: int) -> int:
        if attr not in ATTR_TIMER:
            raise KvmError(errno.ENXIO, f"unknown timer attribute {attr}")
        return self.ppi[ATTR_TIMER[attr]]

    def stop(self) -> None:
        self.irq.stop()


def _timer_reg(cpu: ArchTimerCpu, reg_id: int) -> tuple[ArchTimerContext | None, str]:
    table = {
        uapi.KVM_REG_ARM_TIMER_CTL: (VTIMER, "ctl"), uapi.KVM_REG_ARM_TIMER_CVAL: (VTIMER, "cval"),
        uapi.KVM_REG_ARM_TIMER_CNT: (VTIMER, "cnt"), uapi.KVM_REG_ARM_PTIMER_CTL: (PTIMER, "ctl"),
        uapi.KVM_REG_ARM_PTIMER_CVAL: (PTIMER, "cval"), uapi.KVM_REG_ARM_PTIMER_CNT: (PTIMER, "cnt"),
    }
    if reg_id not in table:
        return None, ""
    index, what = table[reg_id]
    return cpu.timers[index], what
