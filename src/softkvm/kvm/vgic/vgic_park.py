"""Parked list registers: softkvm's shortcut between a vCPU's sync and its next flush.

No kernel counterpart: on hardware the fold and refill cost next to nothing; here each is a
round of Python. Mixed into ``Vgic`` (vgic.py), whose flush and sync call it.

A guest that runs with its interrupts masked (Linux printing to the console, say) exits
over and over with the same interrupts in its LRs, untouched: each sync would fold them
back and each flush write them again, changing nothing. Such LRs stay in place instead
("parked"), and the state stays as the flush left it: the next flush reuses them if
nobody took the vGIC lock in between, and whoever takes it first folds them back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from softkvm.kvm.vgic.arm_vgic import (
    VgicCpu,
    get_phys_line_level,
    lr_consume_mapped_level,
    lr_pends_mapped_level,
    needs_resampling,
)

if TYPE_CHECKING:
    from softkvm.kvm.vgic.vgic import Vgic


class VgicParkedLrs:
    """Parking, reuse and folding back of untouched list registers (a base of ``Vgic``)."""

    __slots__ = ()

    def _park(self: Vgic, cpu: VgicCpu) -> bool:
        """Leave the LRs in place if the guest did not touch them and folding them would only
        re-read mapped lines that are still high (a low one must be seen now)."""
        if self.lock.generation != cpu.flushed_gen + 1 or cpu.vif.lr[:cpu.used_lrs] != \
                cpu.flushed_lrs:   # someone changed state during the run, or the guest did
            return False
        lay = cpu.vif.layout
        mapped = [irq for irq, lr in zip(cpu.lr_irqs, cpu.flushed_lrs)
                  if lr_pends_mapped_level(lay, irq, lr)]
        if any(needs_resampling(irq) or not get_phys_line_level(irq) for irq in mapped):
            return False
        for irq in mapped:   # what the fold's resample reads
            irq.line_level = True
        cpu.parked_gen = self.lock.generation
        self.lock.unpark = self._unpark_all
        return True

    def _reload_parked(self: Vgic, cpu: VgicCpu) -> None:
        """The flush of parked LRs: they are what a fresh populate would write; only its
        consumption of mapped levels is re-done."""
        lay = cpu.vif.layout
        for irq, lr in zip(cpu.lr_irqs, cpu.flushed_lrs):
            lr_consume_mapped_level(lay, irq, lr)
        cpu.parked_gen = None
        self._update_unpark()

    def _unpark(self: Vgic, cpu: VgicCpu) -> None:
        cpu.parked_gen = None
        self._fold_lr_state(cpu)
        self._prune_ap_list(cpu)
        self._update_unpark()

    def _unpark_all(self: Vgic) -> None:
        for cpu in self.cpus:
            if cpu.parked_gen is not None:
                self._unpark(cpu)

    def _update_unpark(self: Vgic) -> None:
        parked = any(cpu.parked_gen is not None for cpu in self.cpus)
        self.lock.unpark = self._unpark_all if parked else None
