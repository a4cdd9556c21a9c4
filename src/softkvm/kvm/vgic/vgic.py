"""The in-kernel vGIC: per-VM state, injection, ap_lists, LR flush/sync, the host entry points.

Counterpart: arch/arm64/kvm/vgic/vgic.c (``vgic_target_oracle``, ``vgic_queue_irq_unlock``,
``kvm_vgic_inject_irq``, ``vgic_flush_lr_state``, ``vgic_fold_lr_state``, ``vgic_prune_ap_list``,
``kvm_vgic_vcpu_pending_irq``, the map/owner helpers), with ``struct vgic_dist`` as the ``Vgic``
dataclass and ``kvm_vgic_create`` (vgic-init.c) beside it. Design notes: kvm-arm-reference.md
§2-§6. The classic flush is used (sort on overflow or multi-source SGI, UIE on overflow).

Locking — deliberately simpler than the kernel's lock hierarchy: one VM-level re-entrant lock
serialises every entry point (vCPU threads, the irqfd poller, the VMM). Work that must not run
under it is deferred to the outermost release: vCPU kicks (``VgicVcpuHost.kick``) and acked-IRQ
notifications. Called *under* the lock: the mapped-interrupt probes given to
``kvm_vgic_map_phys_irq`` (``get_input_level``, ``set_phys_active``) and
``VcpuInterface.on_change``; they must not block nor take a lock held while calling the vGIC.
The guest's own GIC accesses enter through ``vgic_guest.py``.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from softkvm.arch import gic as G
from softkvm.hw.vcpu_if import VcpuInterface
from softkvm.kvm import uapi
from softkvm.kvm.errors import KvmError
from softkvm.kvm.trace import Tracer
from softkvm.kvm.vgic import vgic_init as I
from softkvm.kvm.vgic import vgic_v3 as V3
from softkvm.kvm.vgic.arm_vgic import (
    VGIC_CONFIG_LEVEL,
    VGIC_NR_LRS_DEFAULT,
    GetInputLevel,
    RdRegion,
    SetPhysActive,
    VgicCpu,
    VgicIrq,
    VgicLock,
    flush_sort_key,
    irq_is_pending,
    is_private,
    lr_count,
    set_phys_active,
)
from softkvm.kvm.vgic.vgic_guest import VgicGuestAccess
from softkvm.kvm.vgic.vgic_park import VgicParkedLrs
from softkvm.kvm.vgic.vgic_v2 import vgic_v2_fold_lr, vgic_v2_populate_lr


class VgicVcpuHost(Protocol):
    """A vCPU as the vGIC sees it."""

    vcpu_id: int   # index in VgicVmHost.vcpus()
    mpidr: int     # Aff3..Aff0 (MPIDR_EL1 & 0xff00ffffff)

    def kick(self) -> None:
        """KVM_REQ_IRQ_PENDING + kvm_vcpu_kick: wake it if blocked, preempt it if running.
        Called outside the vGIC lock; must not block."""


class VgicVmHost(Protocol):
    """The VM as the vGIC sees it."""

    def vcpus(self) -> Sequence[VgicVcpuHost]: ...

    def has_run(self) -> bool:
        """Has any vCPU entered the guest (KVM's -EBUSY rules)?"""

    def vgic_initialized(self) -> None:
        """The vGIC just became initialised (CTRL_INIT or lazy v2 init); called unlocked."""


_NR_PRIVATE_IRQS = G.NR_PRIVATE_IRQS
AckNotifier = Callable[[int], None]   # (SPI index = INTID - 32), on guest EOI of a level SPI


@dataclass(slots=True, eq=False)
class Vgic(VgicGuestAccess, VgicParkedLrs):
    """The per-VM vGIC (kernel: struct vgic_dist) and every entry point the kernel side uses."""

    vm: VgicVmHost
    model: int
    nr_lr: int = VGIC_NR_LRS_DEFAULT
    lock: VgicLock = field(init=False)
    initialized: bool = False
    ready: bool = False
    enabled: bool = False
    nr_spis: int = 0
    implementation_rev: int = 0
    v2_groups_user_writable: bool = False
    dist_base: int | None = None
    cpu_base: int | None = None
    rd_regions: list[RdRegion] = field(default_factory=list)
    propbaser: int = 0
    spis: list[VgicIrq] = field(default_factory=list)
    cpus: list[VgicCpu] = field(default_factory=list)
    ack_notifiers: list[AckNotifier] = field(default_factory=list)
    tracer: Tracer = field(default_factory=Tracer)   # the VM's, once created through it
    # vCPUs with an interface, once the VM has run and no vCPU can be added (KVM: -EBUSY)
    _frozen_vcpus: int | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.lock = VgicLock(self._kick_now)

    # --- facts about the VM ------------------------------------------------------------------

    @property
    def is_v2(self) -> bool:
        return self.model == uapi.KVM_DEV_TYPE_ARM_VGIC_V2

    @property
    def has_sysreg_cpuif(self) -> bool:
        """Does the guest get the GICv3 system-register CPU interface (ID_AA64PFR0_EL1.GIC)?"""
        return not self.is_v2

    @property
    def max_vcpus(self) -> int:
        return uapi.VGIC_V2_MAX_CPUS if self.is_v2 else uapi.VGIC_V3_MAX_CPUS

    @property
    def nr_irqs(self) -> int:
        return self.nr_spis + G.NR_PRIVATE_IRQS

    def nr_vcpus(self) -> int:
        return len(self.vm.vcpus())

    def vcpu_mpidr(self, vcpu_id: int) -> int:
        return self.vm.vcpus()[vcpu_id].mpidr

    def vcpu_by_mpidr(self, mpidr: int) -> int | None:
        return next((v.vcpu_id for v in self.vm.vcpus() if v.mpidr == mpidr), None)

    def valid_spi(self, intid: int) -> bool:
        return G.SPI_BASE <= intid < self.nr_irqs

    def _cpu(self, vcpu_id: int | None) -> VgicCpu | None:
        frozen = self._frozen_vcpus
        if frozen is not None and vcpu_id is not None and 0 <= vcpu_id < frozen:
            return self.cpus[vcpu_id]   # the per-entry case, without asking the VM
        if vcpu_id is None or not 0 <= vcpu_id < self.nr_vcpus():
            return None
        if vcpu_id >= len(self.cpus):
            I.kvm_vgic_vcpu_init(self, vcpu_id)
        if frozen is None and self.vm.has_run():
            self._frozen_vcpus = min(len(self.cpus), self.nr_vcpus())
        return self.cpus[vcpu_id]

    def vcpu_if(self, vcpu_id: int) -> VcpuInterface:
        """The virtual CPU interface hardware of a vCPU (signal(), maintenance(), on_change)."""
        frozen = self._frozen_vcpus
        if frozen is not None and 0 <= vcpu_id < frozen:
            return self.cpus[vcpu_id].vif   # per entry: no lock (and no generation) needed
        with self.lock:
            cpu = self._cpu(vcpu_id)
            if cpu is None:
                raise KvmError(errno.EINVAL, f"no vCPU {vcpu_id}")
            return cpu.vif

    def get_irq(self, vcpu_id: int | None, intid: int) -> VgicIrq | None:
        """The interrupt ``intid`` (private ones banked per ``vcpu_id``), None if none exists."""
        if intid < 0:
            return None
        if is_private(intid):
            cpu = self._cpu(vcpu_id)
            return cpu.private_irqs[intid] if cpu is not None else None
        index = intid - G.SPI_BASE
        return self.spis[index] if index < len(self.spis) else None

    def _all_irqs(self) -> Iterator[VgicIrq]:
        for cpu in self.cpus:
            yield from cpu.private_irqs
        yield from self.spis

    # --- kicks and the oracle -------------------------------------------------------------------

    def _kick_now(self, vcpu_id: int) -> None:
        vcpus = self.vm.vcpus()
        if vcpu_id < len(vcpus):
            vcpus[vcpu_id].kick()

    def kick(self, vcpu_id: int) -> None:
        """Request + kick ``vcpu_id`` once the lock is released."""
        self.lock.defer_kick(vcpu_id)

    def target_oracle(self, irq: VgicIrq) -> int | None:
        """Where ``irq`` must be queued: active stays put, pending+enabled goes to its target
        while the distributor is enabled, the rest nowhere."""
        if irq.active:
            return irq.vcpu if irq.vcpu is not None else irq.target_vcpu
        if irq.enabled and irq_is_pending(irq):
            return irq.target_vcpu if self.enabled else None
        return None

    def queue_irq(self, irq: VgicIrq) -> bool:
        """Put ``irq`` on its target's ap_list if it belongs on one and is on none; kick the
        target either way (an edge re-raised while the previous one sits in an LR causes no
        maintenance exit). Call after any change of an interrupt's deliverability.

        Unlike KVM, an interrupt that stopped being deliverable (line lowered, disabled,
        pending cleared) while queued also kicks the vCPU holding it, so that vCPU exits and
        withdraws it from its LRs now, as a hardware GIC stops signalling at once."""
        target = self.target_oracle(irq)
        if irq.vcpu is not None or target is None:
            holder = target if target is not None else irq.vcpu
            if holder is not None:
                self.kick(holder)
            return False
        cpu = self._cpu(target)
        if cpu is None:
            return False
        cpu.ap_list.append(irq)
        irq.vcpu = target
        self.kick(target)
        return True

    def retarget(self, irq: VgicIrq, target: int | None) -> None:
        """New routing (ITARGETSR, IROUTER). A queued pending interrupt migrates when its holder
        prunes: kick the holder so it does so now, even if it sleeps with the interrupt masked by
        its PMR. One that was routed nowhere becomes deliverable: queue it (KVM does neither)."""
        irq.target_vcpu = target
        if irq.vcpu is None:
            self.queue_irq(irq)
        elif irq.vcpu != target and not irq.active:
            self.kick(irq.vcpu)

    def set_enabled(self, enabled: bool) -> None:
        """GICD_CTLR enable. On 0->1 every pending+enabled interrupt is queued (architecturally
        they become deliverable; KVM only kicks), then vCPUs with something pending are kicked."""
        was_enabled, self.enabled = self.enabled, enabled
        if enabled and not was_enabled:
            for irq in self._all_irqs():
                if irq.vcpu is None:
                    self.queue_irq(irq)
            for cpu in self.cpus:
                if self._pending_irq(cpu):
                    self.kick(cpu.vcpu_id)

    # --- injection ----------------------------------------------------------------------------

    def kvm_vgic_inject_irq(self, vcpu_id: int | None, intid: int, level: bool,
                            owner: object | None) -> int:
        """Raise or lower an interrupt line: 0 or -errno. ``vcpu_id`` selects the bank of a
        private INTID and is ignored for SPIs. Owners are compared by identity: a line owned by
        an in-kernel device (timer, PMU) ignores everyone else, userspace (None) included."""
        if self.tracer.on:
            self.tracer.emit("vgic_update_irq_pending", -1 if vcpu_id is None else vcpu_id,
                             irq=intid, level=bool(level))
        irq = self._private_irq(vcpu_id, intid)
        if irq is not None and irq.owner is owner and irq.config == VGIC_CONFIG_LEVEL \
                and irq.line_level == bool(level):
            return 0  # vgic_validate_injection: no change; each vCPU entry asks this of its timers
        with self.lock:
            ret = I.vgic_lazy_init(self)
            if ret:
                return ret
            if vcpu_id is None and is_private(intid):
                return -errno.EINVAL
            irq = self.get_irq(vcpu_id, intid)
            if irq is None:
                return -errno.EINVAL
            level = bool(level)
            if irq.owner is not owner:
                return 0
            if irq.config == VGIC_CONFIG_LEVEL:
                if irq.line_level == level:
                    return 0
                irq.line_level = level
            else:
                # The wire's state is kept for edge interrupts too (KVM keeps it only for level
                # ones): a guest that reconfigures a high line to level sees it pending, so a
                # level asserted before the guest set its trigger (before vGIC init) is not lost.
                irq.line_level = level
                if not level:
                    return 0   # an edge is a 0->1 event; lowering it is nothing
                irq.pending_latch = True
            self.queue_irq(irq)
            return 0

    # --- flush (ap_list -> LRs) -------------------------------------------------------------------

    def kvm_vgic_flush_hwstate(self, vcpu_id: int) -> None:
        """Before entry: program the vCPU's list registers from its ap_list."""
        lock = self.lock
        lock.acquire(unpark=False)
        try:
            cpu = self._cpu(vcpu_id)
            reuse = cpu is not None and cpu.parked_gen is not None \
                and lock.generation == cpu.parked_gen + 1   # nobody in since the sync
            if reuse:
                self._reload_parked(cpu)
            elif lock.unpark is not None:   # fold parked LRs back first, ours included
                lock.unpark()
            if cpu is None:
                return
            cpu.live = True
            cpu.flushed_gen = lock.generation
            if not reuse and cpu.ap_list:
                self._flush_lr_state(cpu)
        finally:
            lock.release()

    def _flush_lr_state(self, cpu: VgicCpu) -> None:
        counts = [lr_count(irq) for irq in cpu.ap_list]
        multi_sgi = any(c > 1 for c in counts)
        if sum(counts) > self.nr_lr or multi_sgi:
            cpu.ap_list.sort(key=flush_sort_key)
        populate = vgic_v2_populate_lr if self.is_v2 else V3.vgic_v3_populate_lr
        vif, used, sgi_prio = cpu.vif, 0, G.IDLE_PRIORITY
        lr_irqs: list[VgicIrq] = []
        for index, irq in enumerate(cpu.ap_list):
            # All instances of a multi-source SGI must be seen before anything of lower
            # priority: stop there, the EOI maintenance of the SGI brings us back.
            if multi_sgi and irq.priority > sgi_prio:
                break
            if self.target_oracle(irq) == cpu.vcpu_id:
                vif.lr[used] = populate(irq)
                lr_irqs.append(irq)
                used += 1
                if irq.source:
                    sgi_prio = irq.priority
            if used == self.nr_lr:
                if index != len(cpu.ap_list) - 1:
                    vif.hcr = G.HCR.UIE.put(vif.hcr, 1)   # underflow: refill when LRs drain
                break
        for i in range(used, self.nr_lr):
            vif.lr[i] = 0
        cpu.used_lrs = used
        cpu.flushed_lrs = vif.lr[:used]
        cpu.lr_irqs = lr_irqs

    # --- sync (LRs -> state), prune --------------------------------------------------------------

    def kvm_vgic_sync_hwstate(self, vcpu_id: int) -> None:
        """After exit: fold the list registers back, then prune/migrate the ap_list."""
        lock = self.lock
        lock.acquire(unpark=True)   # ``with lock``, minus two calls: this runs at every exit
        try:
            cpu = self._cpu(vcpu_id)
            if cpu is None:
                return
            cpu.live = False
            if not cpu.ap_list:
                return
            if cpu.used_lrs:
                if lock.outermost and self._park(cpu):   # not for an in-slice access
                    return
                self._fold_lr_state(cpu)
            self._prune_ap_list(cpu)
        finally:
            lock.release()

    def _fold_lr_state(self, cpu: VgicCpu) -> None:
        vif = cpu.vif
        lay = vif.layout
        fold = vgic_v2_fold_lr if self.is_v2 else V3.vgic_v3_fold_lr
        vif.hcr = G.HCR.UIE.put(vif.hcr, 0)
        for lr in vif.lr[:cpu.used_lrs]:
            intid = lay.vintid.get(lr)
            if lay.signals_eoi(lr) and self.valid_spi(intid):
                self._notify_acked(intid - G.SPI_BASE)
            irq = self.get_irq(cpu.vcpu_id, intid)
            if irq is not None:
                fold(irq, lr)
        vif.clear_lrs()   # like the hardware save: the LRs are empty while the host runs
        cpu.used_lrs = 0

    def _prune_ap_list(self, cpu: VgicCpu) -> None:
        for irq in list(cpu.ap_list):
            target = self.target_oracle(irq)
            if target == cpu.vcpu_id:
                continue
            cpu.ap_list.remove(irq)
            irq.vcpu = None
            new_cpu = self._cpu(target)
            if new_cpu is not None:   # migrate: the new target takes it from here
                new_cpu.ap_list.append(irq)
                irq.vcpu = target
                self.kick(new_cpu.vcpu_id)

    # --- acked-IRQ notifiers (irqfd resampling) ---------------------------------------------------

    def register_ack_notifier(self, notifier: AckNotifier) -> None:
        """``notifier(spi_index)`` runs after the lock is released, once per guest EOI of a level
        SPI seen at sync (kernel: kvm_notify_acked_irq on irqchip 0, pin = INTID - 32)."""
        with self.lock:
            self.ack_notifiers.append(notifier)

    def unregister_ack_notifier(self, notifier: AckNotifier) -> None:
        with self.lock:
            if notifier in self.ack_notifiers:
                self.ack_notifiers.remove(notifier)

    def _notify_acked(self, spi_index: int) -> None:
        for notifier in self.ack_notifiers:
            self.lock.defer_call(partial(notifier, spi_index))

    # --- WFI, load/put ----------------------------------------------------------------------------

    def _pending_irq(self, cpu: VgicCpu) -> bool:
        pmr = cpu.vif.vmcr.pmr
        return any(irq_is_pending(irq) and irq.enabled and not irq.active and irq.priority < pmr
                   for irq in cpu.ap_list)

    def kvm_vgic_vcpu_pending_irq(self, vcpu_id: int) -> bool:
        """Would this vCPU take an interrupt (WFI wake)? Ignores group enables and the running
        priority, as KVM does: at worst a spurious wake."""
        with self.lock:
            cpu = self._cpu(vcpu_id)
            return self.enabled and cpu is not None and self._pending_irq(cpu)

    def kvm_vgic_load(self, vcpu_id: int) -> None:
        """Nothing to restore: VMCR and APRs live in the VcpuInterface (LRs move at flush)."""

    def kvm_vgic_put(self, vcpu_id: int) -> None:
        """Nothing to save, for the same reason."""

    def kvm_vgic_vmcr_sync(self, vcpu_id: int) -> None:
        """The PMR the WFI check reads is the interface's own: always fresh."""

    # --- HW-mapped interrupts and owners -------------------------------------------------------

    def kvm_vgic_map_phys_irq(self, vcpu_id: int, host_irq: int, vintid: int,
                              get_input_level: GetInputLevel | None,
                              set_phys_active: SetPhysActive | None = None,
                              sw_resample: bool = False) -> int:
        """Back ``vintid`` by a physical interrupt: LRs carry HW=1 and pINTID = ``host_irq``
        (the model has no host irq domain), guest deactivation calls ``set_phys_active(False)``,
        ``get_input_level(vintid)`` resamples the line."""
        with self.lock:
            irq = self.get_irq(vcpu_id, vintid)
            if irq is None:
                return -errno.EINVAL
            irq.hw, irq.host_irq, irq.hwintid = True, host_irq, host_irq
            irq.get_input_level, irq.set_phys_active = get_input_level, set_phys_active
            irq.sw_resample = sw_resample
            return 0

    def kvm_vgic_unmap_phys_irq(self, vcpu_id: int, vintid: int) -> int:
        with self.lock:
            if not self.initialized:
                return -errno.EAGAIN
            irq = self.get_irq(vcpu_id, vintid)
            if irq is None:
                return -errno.EINVAL
            irq.hw, irq.hwintid, irq.sw_resample = False, 0, False
            irq.get_input_level = irq.set_phys_active = None
            return 0

    def kvm_vgic_map_is_active(self, vcpu_id: int, vintid: int) -> bool:
        irq = self._private_irq(vcpu_id, vintid)  # a snapshot, as KVM's under the irq's own lock
        if irq is not None:
            return irq.hw and irq.active
        with self.lock:
            irq = self.get_irq(vcpu_id, vintid) if self.initialized else None
            return irq is not None and irq.hw and irq.active

    def _private_irq(self, vcpu_id: int | None, intid: int) -> VgicIrq | None:
        """Lock-free lookup of an initialised vGIC's SGI/PPI, for the per-entry queries whose
        answer is one field read: the IRQ objects live as long as the vGIC, and a field read is
        atomic, so the answer is the one a locked read would have given a moment earlier."""
        frozen = self._frozen_vcpus
        if frozen is not None and vcpu_id is not None and 0 <= vcpu_id < frozen \
                and 0 <= intid < _NR_PRIVATE_IRQS and self.initialized:
            return self.cpus[vcpu_id].private_irqs[intid]  # every entry asks: the tests first
        if not self.initialized or vcpu_id is None or not 0 <= intid < _NR_PRIVATE_IRQS \
                or vcpu_id >= len(self.cpus):  # _cpu would create it: the locked path does
            return None
        cpu = self._cpu(vcpu_id)
        return cpu.private_irqs[intid] if cpu is not None else None

    def kvm_vgic_reset_mapped_irq(self, vcpu_id: int, vintid: int) -> None:
        with self.lock:
            irq = self.get_irq(vcpu_id, vintid)
            if irq is not None and irq.hw:
                irq.active = irq.pending_latch = irq.line_level = False

    def kvm_vgic_set_owner(self, vcpu_id: int, intid: int, owner: object) -> int:
        with self.lock:
            if not self.initialized:
                return -errno.EAGAIN
            if not (G.NR_SGIS <= intid < G.NR_PRIVATE_IRQS or self.valid_spi(intid)):
                return -errno.EINVAL   # SGIs cannot be wired to a device
            irq = self.get_irq(vcpu_id, intid)
            if irq is None:
                return -errno.EINVAL
            if irq.owner is not None and irq.owner is not owner:
                return -errno.EEXIST
            irq.owner = owner
            return 0

    def phys_deactivated(self, vcpu_id: int, pintid: int) -> None:
        """The VcpuInterface deactivated an HW=1 LR: deactivate the physical interrupt (the
        vCPU's own mapped PPIs first: that is where the timers are)."""
        cpu = self._cpu(vcpu_id)
        private = cpu.private_irqs if cpu is not None else []
        for irqs in (private, self.spis):
            irq = next((i for i in irqs if i.hw and i.hwintid == pintid), None)
            if irq is not None:
                set_phys_active(irq, False)
                return

    # --- lifecycle (vgic_init.py) ----------------------------------------------------------------

    def kvm_vgic_vcpu_init(self, vcpu_id: int) -> None:
        """A vCPU is being created: KVM refuses once the vGIC is initialised."""
        with self.lock:
            if vcpu_id >= len(self.cpus) and self.initialized:
                raise KvmError(errno.EBUSY, "cannot add vCPUs after the vGIC is initialised")
            if vcpu_id >= self.max_vcpus:
                raise KvmError(errno.EINVAL, f"this vGIC model supports {self.max_vcpus} vCPUs")
            I.kvm_vgic_vcpu_init(self, vcpu_id)

    def vgic_init(self) -> None:
        with self.lock:
            _check(I.vgic_init(self), "vGIC initialisation failed")

    def kvm_vgic_map_resources(self) -> None:
        """First KVM_RUN: validate addresses (and initialise a GICv2). Failure destroys it."""
        with self.lock:
            ret = I.kvm_vgic_map_resources(self)
            _check(ret, _MAP_ERRORS.get((self.model, -ret), "vGIC initialisation failed"))


_V2, _V3 = uapi.KVM_DEV_TYPE_ARM_VGIC_V2, uapi.KVM_DEV_TYPE_ARM_VGIC_V3
_MAP_ERRORS = {
    (_V2, errno.ENXIO): "set the GICv2 distributor and CPU interface addresses "
                        "(KVM_DEV_ARM_VGIC_GRP_ADDR) before the first KVM_RUN",
    (_V2, errno.EINVAL): "the GICv2 distributor and CPU interface frames overlap",
    (_V3, errno.ENXIO): "set the GICv3 distributor address and a redistributor for every vCPU "
                        "before the first KVM_RUN",
    (_V3, errno.EINVAL): "the GICv3 redistributor frames overlap the distributor or leave the "
                         "IPA space",
    (_V3, errno.EBUSY): "initialise the GICv3 (KVM_DEV_ARM_VGIC_CTRL_INIT) before the first "
                        "KVM_RUN",
}


def _check(ret: int, message: str) -> None:
    if ret < 0:
        raise KvmError(-ret, message)


def kvm_vgic_create(vm: VgicVmHost, model: int, nr_lr: int = VGIC_NR_LRS_DEFAULT) -> Vgic:
    """KVM_CREATE_DEVICE(VGIC_V2/V3) / KVM_CREATE_IRQCHIP: the VM's in-kernel irqchip.
    (The caller refuses a second irqchip with EEXIST: only it knows one exists.)"""
    if model not in (_V2, _V3):
        raise KvmError(errno.ENODEV, f"device type {model} is not a vGIC: use "
                       "KVM_DEV_TYPE_ARM_VGIC_V2 (5) or KVM_DEV_TYPE_ARM_VGIC_V3 (7)")
    if vm.has_run():
        raise KvmError(errno.EBUSY, "create the vGIC before any vCPU runs")
    dist = Vgic(vm, model, nr_lr)
    if len(vm.vcpus()) > dist.max_vcpus:
        raise KvmError(errno.E2BIG, f"this vGIC model supports at most {dist.max_vcpus} vCPUs")
    with dist.lock:
        for vcpu in vm.vcpus():
            dist._cpu(vcpu.vcpu_id)
    return dist
