"""vGIC state: one ``VgicIrq`` per interrupt, one ``VgicCpu`` per vCPU, redistributor regions.

Counterpart: include/kvm/arm_vgic.h (``struct vgic_irq``, ``struct vgic_cpu``, ``struct
vgic_redist_region``) and the inline helpers of arch/arm64/kvm/vgic/vgic.h (``irq_is_pending``,
``vgic_irq_is_mapped_level``, ``vgic_irq_handle_resampling`` ...). The per-VM half (``struct
vgic_dist``) is ``Vgic`` in vgic.py. vCPUs are referred to by index (``vcpu_id``), not object.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from softkvm.arch import gic as G
from softkvm.hw.vcpu_if import VcpuInterface

VGIC_CONFIG_EDGE = 0
VGIC_CONFIG_LEVEL = 1

KVM_VGIC_IMP_REV_2 = 2       # GICD_IIDR.Revision values userspace may select
KVM_VGIC_IMP_REV_3 = 3
KVM_VGIC_IMP_REV_LATEST = KVM_VGIC_IMP_REV_3

VGIC_NR_LRS_DEFAULT = 4

GetInputLevel = Callable[[int], bool]      # (vintid) -> is the physical line high?
SetPhysActive = Callable[[bool], None]     # drive the physical interrupt's active state


@dataclass(slots=True, eq=False)
class VgicIrq:
    """One virtual interrupt (kernel: struct vgic_irq). ``vcpu`` is the vCPU whose ap_list holds
    it; ``target_vcpu`` where it should go (None: nowhere, e.g. an IROUTER naming no vCPU)."""

    intid: int
    vcpu: int | None = None
    target_vcpu: int | None = None
    line_level: bool = False
    pending_latch: bool = False
    active: bool = False
    enabled: bool = False
    hw: bool = False
    hwintid: int = 0
    host_irq: int = 0
    get_input_level: GetInputLevel | None = None
    set_phys_active: SetPhysActive | None = None
    sw_resample: bool = False   # VGIC_IRQ_SW_RESAMPLE: mapped, but resampled in software
    targets: int = 0            # GICv2 ITARGETSR byte
    mpidr: int = 0              # GICv3 IROUTER Aff2..Aff0
    source: int = 0             # GICv2 SGI: bitmap of requesting vCPUs still pending
    active_source: int = 0      # GICv2 SGI: the source of the active instance
    priority: int = 0
    group: int = 0
    config: int = VGIC_CONFIG_EDGE
    owner: object | None = None  # in-kernel device that drives the line; None = userspace


@dataclass(slots=True, eq=False)
class VgicCpu:
    """Per-vCPU vGIC state (kernel: struct vgic_cpu) plus its virtual CPU interface hardware.

    ``live`` is True between flush and sync: the list registers then hold the truth about the
    interrupts they carry, and must be folded before the distributor state is touched.
    """

    vcpu_id: int
    vif: VcpuInterface
    private_irqs: list[VgicIrq]
    ap_list: list[VgicIrq] = field(default_factory=list)
    used_lrs: int = 0
    live: bool = False
    pendbaser: int = 0
    # What the last flush wrote: the LR values and, per LR, its interrupt.
    flushed_lrs: list[int] = field(default_factory=list)
    lr_irqs: list[VgicIrq] = field(default_factory=list)
    flushed_gen: int = -1           # lock generation of the last flush
    parked_gen: int | None = None   # lock generation of the sync that parked the LRs


@dataclass(slots=True)
class RdRegion:
    """A GICv3 redistributor region (kernel: struct vgic_redist_region); ``count`` 0 is the
    legacy single region (KVM_VGIC_V3_ADDR_TYPE_REDIST) sized by the vCPU count."""

    index: int
    base: int
    count: int


class VgicLock:
    """The VM-level RLock of the vGIC. Kicks and calls queued under it run after the outermost
    release, so nothing that may block or re-enter another subsystem runs with it held."""

    __slots__ = ("_calls", "_depth", "_kick", "_kicks", "_rlock", "generation", "unpark")

    def __init__(self, kick: Callable[[int], None]) -> None:
        self._rlock = threading.RLock()
        self._depth = 0
        self._kicks: dict[int, None] = {}   # ordered set: one kick per vCPU per release
        self._calls: list[Callable[[], None]] = []
        self._kick = kick
        self.generation = 0   # outermost acquisitions so far: "has anyone been in since?"
        # Set while some vCPU's list registers are parked (see Vgic.kvm_vgic_sync_hwstate):
        # the first to take the lock folds them back before looking at any state.
        self.unpark: Callable[[], None] | None = None

    def __enter__(self) -> VgicLock:
        self.acquire(unpark=True)
        return self

    @property
    def outermost(self) -> bool:
        """Held once only: no caller up the stack is about to look at the state."""
        return self._depth == 1

    def acquire(self, unpark: bool) -> None:
        """Take the lock; ``unpark=False`` leaves parked list registers to the caller."""
        self._rlock.acquire()
        self._depth += 1
        if self._depth == 1:
            self.generation += 1
            if unpark and self.unpark is not None:
                self.unpark()

    def __exit__(self, *_exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Let go of the lock; the outermost release runs the deferred kicks and calls."""
        self._depth -= 1
        if self._depth or not (self._kicks or self._calls):  # the common case: nothing deferred
            self._rlock.release()
            return
        kicks, self._kicks = self._kicks, {}
        calls, self._calls = self._calls, []
        self._rlock.release()
        for vcpu_id in kicks:
            self._kick(vcpu_id)
        for call in calls:
            call()

    def defer_kick(self, vcpu_id: int) -> None:
        if self._depth:
            self._kicks[vcpu_id] = None
        else:
            self._kick(vcpu_id)

    def defer_call(self, call: Callable[[], None]) -> None:
        if self._depth:
            self._calls.append(call)
        else:
            call()


# --- INTID classes --------------------------------------------------------------------------


def is_sgi(intid: int) -> bool:
    return intid < G.NR_SGIS


def is_ppi(intid: int) -> bool:
    return G.NR_SGIS <= intid < G.NR_PRIVATE_IRQS


def is_private(intid: int) -> bool:
    return intid < G.NR_PRIVATE_IRQS


# --- per-IRQ predicates (vgic.h) -------------------------------------------------------------


def irq_is_pending(irq: VgicIrq) -> bool:
    if irq.config == VGIC_CONFIG_EDGE:
        return irq.pending_latch
    return irq.pending_latch or irq.line_level


def is_mapped_level(irq: VgicIrq) -> bool:
    return irq.hw and irq.config == VGIC_CONFIG_LEVEL


def needs_resampling(irq: VgicIrq) -> bool:
    return irq.sw_resample


def lr_count(irq: VgicIrq) -> int:
    """LRs this interrupt wants: a GICv2 SGI needs one per pending source, plus the active one."""
    if is_sgi(irq.intid) and irq.source:
        return irq.source.bit_count() + int(irq.active)
    return int(irq_is_pending(irq) or irq.active)


def is_multi_sgi(irq: VgicIrq) -> bool:
    return lr_count(irq) > 1


def get_phys_line_level(irq: VgicIrq) -> bool:
    """The physical input of a mapped interrupt; without a probe, the last level we saw."""
    if irq.get_input_level is not None:
        return bool(irq.get_input_level(irq.intid))
    return irq.line_level


def set_phys_active(irq: VgicIrq, active: bool) -> None:
    """Drive the physical interrupt's active bit (kernel: vgic_irq_set_phys_active)."""
    if irq.set_phys_active is not None:
        irq.set_phys_active(active)


def handle_resampling(irq: VgicIrq, lr_deactivated: bool, lr_pending: bool) -> None:
    """After folding an LR of a mapped level interrupt: re-read the line when the guest never
    took it, or deactivated it while we last saw it high; a low line releases the physical
    active state so the device can signal again (kernel: vgic_irq_handle_resampling)."""
    if not is_mapped_level(irq):
        return
    resample = False
    if needs_resampling(irq):
        resample = not (irq.active or irq.pending_latch)
    elif lr_pending or (lr_deactivated and irq.line_level):
        irq.line_level = get_phys_line_level(irq)
        resample = not irq.line_level
    if resample:
        set_phys_active(irq, False)


def lr_hw_or_resample(lay: G.LrLayout, irq: VgicIrq, val: int, allow_pending: bool
                      ) -> tuple[int, bool]:
    """The part of populating a list register both GIC versions share: a HW mapping, or EOI
    maintenance for a level interrupt; returns the LR value and whether it may still carry the
    pending state (kernel: vgic_v2/v3_populate_lr)."""
    if irq.hw and not needs_resampling(irq):
        val |= lay.hw.val(1) | lay.pintid.val(irq.hwintid)
        if irq.active:
            allow_pending = False   # the pending state lives in the physical distributor
    elif irq.config == VGIC_CONFIG_LEVEL:
        val |= lay.eoi.val(1)       # EOI maintenance lets us resample the line
        if irq.active:
            allow_pending = False   # software resampling breaks on pending+active
    return val, allow_pending


def lr_pends_mapped_level(lay: G.LrLayout, irq: VgicIrq, val: int) -> bool:
    """List register ``val`` holds mapped level interrupt ``irq`` as pending."""
    return is_mapped_level(irq) and bool(lay.state.get(val) & G.LR_STATE_PENDING)


def lr_consume_mapped_level(lay: G.LrLayout, irq: VgicIrq, val: int) -> None:
    """A mapped level interrupt put in an LR as pending: only rising edges of its line reach
    the vGIC from now on."""
    if lr_pends_mapped_level(lay, irq, val):
        irq.line_level = False


def flush_sort_key(irq: VgicIrq) -> tuple[int, int, int]:
    """ap_list order on LR overflow: active first (they must stay in LRs so the guest can
    deactivate them), then pending and enabled by priority, then the rest (vgic_irq_cmp)."""
    if irq.active:
        return (0, 0, 0)
    if irq.enabled and irq_is_pending(irq):
        return (1, 0, irq.priority)
    return (1, 1, 0)


# --- guest-physical ranges (vgic-kvm-device.c: vgic_check_iorange) ---------------------------
KVM_PHYS_SHIFT = 40          # the default IPA size of a KVM VM
VGIC_ADDR_ALIGN_V2 = 0x1000  # SZ_4K
VGIC_ADDR_ALIGN_V3 = 0x10000  # SZ_64K


def vgic_check_iorange(current: int | None, addr: int, alignment: int, size: int) -> int:
    """May a vGIC frame of ``size`` bytes go at ``addr``? 0 or -errno, as KVM answers."""
    if current is not None:
        return -errno.EEXIST
    if addr % alignment or size % alignment or addr + size >= 1 << 64:
        return -errno.EINVAL
    if addr + size > (1 << KVM_PHYS_SHIFT):
        return -errno.E2BIG
    return 0


def ranges_overlap(base_a: int, size_a: int, base_b: int, size_b: int) -> bool:
    return base_a < base_b + size_b and base_b < base_a + size_a
