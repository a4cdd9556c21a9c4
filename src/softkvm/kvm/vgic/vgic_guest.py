"""The vGIC's guest-facing entry points: the MMIO frames the core maps, the ICC_* registers.

Counterpart: the dispatch half of arch/arm64/kvm/vgic/vgic-mmio.c (``dispatch_mmio_read`` /
``dispatch_mmio_write``, the distributor and redistributor iodevs) and the access entry of
vgic-sys-reg-v3.c (the ICC_* accessors, ICC_SGI*R). Mixed into ``Vgic``; the register tables
themselves live in vgic_mmio_v2/v3.py and vgic_sys_reg_v3.py.

In-slice accesses: the emulated core serves the guest's GICD/GICR/ICC_SGI accesses without an
exit, while its list registers are live. KVM would have exited and folded them first; so does
this model (fold, emulate, flush again, ``on_change``) for the accessing vCPU. The other vCPUs'
LRs are folded already when the vCPUs take turns (one at a time runs between flush and sync).
When they run in parallel, an access to the active state does what KVM's halting of the guest
does (``halted_guest``): the other vCPUs' live LRs are folded first and refilled after.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING

from softkvm.arch import gic as G
from softkvm.kvm.vgic import vgic_v3 as V3
from softkvm.kvm.vgic.arm_vgic import VgicCpu
from softkvm.kvm.vgic.vgic_mmio_v2 import VGIC_V2_DIST
from softkvm.kvm.vgic.vgic_mmio_v3 import (
    VGIC_V3_DIST,
    VGIC_V3_RDIST,
    MmioRegion,
    vgic_v3_dispatch_sgi,
    vgic_v3_redist_regions,
)
from softkvm.kvm.vgic.vgic_sys_reg_v3 import SGI_REGISTERS

if TYPE_CHECKING:
    from softkvm.kvm.vgic.vgic import Vgic


class VgicGuestAccess:
    """What the core calls for the guest's GIC accesses (a base of ``Vgic``)."""

    __slots__ = ()

    # --- guest MMIO -------------------------------------------------------------------------

    @contextmanager
    def _guest_access(self: Vgic, vcpu_id: int) -> Iterator[VgicCpu | None]:
        """Serve an in-slice guest access as KVM would after an exit: fold the accessing vCPU's
        live LRs first, refill them after, and let the integrator re-drive its lines."""
        with self.lock:
            cpu = self._cpu(vcpu_id)
            live = cpu is not None and cpu.live
            if live:
                self.kvm_vgic_sync_hwstate(vcpu_id)
            try:
                yield cpu
            finally:
                if live and cpu is not None:
                    self.kvm_vgic_flush_hwstate(vcpu_id)
                    cpu.vif.notify()

    @contextmanager
    def halted_guest(self: Vgic, intid: int) -> Iterator[None]:
        """kvm_arm_halt_guest/kvm_arm_resume_guest around an access to active state, when
        vgic_access_active_prepare asks for it (a GICv3 VM, or a shared interrupt): the live list
        registers of vCPUs running in parallel are folded first, so that the access sees and
        changes what they hold, and refilled after; each is kicked to re-drive its IRQ line from
        its own thread. LRs change only under this lock, so folding them here is exact."""
        if self.is_v2 and intid < G.NR_PRIVATE_IRQS:
            yield
            return
        with self.lock:
            halted = [cpu.vcpu_id for cpu in self.cpus if cpu.live]
            for vcpu_id in halted:
                self.kvm_vgic_sync_hwstate(vcpu_id)
            try:
                yield
            finally:
                for vcpu_id in halted:
                    self.kvm_vgic_flush_hwstate(vcpu_id)
                    self.lock.defer_kick(vcpu_id)

    def dist_mmio_read(self: Vgic, vcpu_id: int, offset: int, size: int) -> int:
        """A guest read of the distributor frame by ``vcpu_id`` (banked registers are its)."""
        with self._guest_access(vcpu_id) as cpu:
            if cpu is None or not self.initialized:
                return 0
            iodev = VGIC_V2_DIST if self.is_v2 else VGIC_V3_DIST
            return iodev.read(self, vcpu_id, offset, size)

    def dist_mmio_write(self: Vgic, vcpu_id: int, offset: int, size: int, value: int) -> None:
        with self._guest_access(vcpu_id) as cpu:
            if cpu is not None and self.initialized:
                iodev = VGIC_V2_DIST if self.is_v2 else VGIC_V3_DIST
                iodev.write(self, vcpu_id, offset, size, value)

    def cpu_mmio_read(self: Vgic, vcpu_id: int, offset: int, size: int) -> int:
        """A guest read of its GICv2 CPU interface frame, served by its GICV hardware."""
        with self.lock:
            cpu = self._cpu(vcpu_id)
            return cpu.vif.gicv_read(offset, size) if cpu is not None and self.is_v2 else 0

    def cpu_mmio_write(self: Vgic, vcpu_id: int, offset: int, size: int, value: int) -> None:
        with self.lock:
            cpu = self._cpu(vcpu_id)
            if cpu is not None and self.is_v2:
                cpu.vif.gicv_write(offset, size, value)

    def redist_mmio_read(self: Vgic, rd_vcpu: int, offset: int, size: int,
                         accessor: int | None = None) -> int:
        """A guest read of ``rd_vcpu``'s redistributor (``offset`` within its 128K frame)."""
        with self._guest_access(rd_vcpu if accessor is None else accessor):
            if self.is_v2 or not self.initialized or self._cpu(rd_vcpu) is None:
                return 0
            return VGIC_V3_RDIST.read(self, rd_vcpu, offset, size)

    def redist_mmio_write(self: Vgic, rd_vcpu: int, offset: int, size: int, value: int,
                          accessor: int | None = None) -> None:
        with self._guest_access(rd_vcpu if accessor is None else accessor):
            if not self.is_v2 and self.initialized and self._cpu(rd_vcpu) is not None:
                VGIC_V3_RDIST.write(self, rd_vcpu, offset, size, value)

    def rd_slots(self: Vgic) -> list[V3.RdSlot | None]:
        return V3.rd_slots(self.rd_regions, self.nr_vcpus())

    def rdist_is_last(self: Vgic, vcpu_id: int) -> bool:
        return V3.rdist_is_last(self.rd_regions, self.rd_slots(), vcpu_id)

    def mmio_regions(self: Vgic, vcpu_id: int) -> list[MmioRegion]:
        """The guest-physical frames to map on ``vcpu_id``'s core, with accessors bound to it
        (distributor registers are banked by accessor). Redistributors: one region per
        redistributor region, dispatching by offset // 0x20000. Call after map_resources."""
        with self.lock:
            regions: list[MmioRegion] = []
            if self.dist_base is not None:
                size = G.GICD_V2_SIZE if self.is_v2 else G.GICD_V3_SIZE
                regions.append((self.dist_base, size, partial(self.dist_mmio_read, vcpu_id),
                                partial(self.dist_mmio_write, vcpu_id)))
            if self.is_v2 and self.cpu_base is not None:
                regions.append((self.cpu_base, G.GICC_SIZE, partial(self.cpu_mmio_read, vcpu_id),
                                partial(self.cpu_mmio_write, vcpu_id)))
            if not self.is_v2:
                regions += vgic_v3_redist_regions(self, vcpu_id)
            return regions

    # --- GICv3 system registers ----------------------------------------------------------------

    def vgic_v3_sysreg_read(self: Vgic, vcpu_id: int, encoding: int) -> int | None:
        """MRS of an ICC_* register; None means UNDEF (unknown, write-only, or a GICv2 VM)."""
        if self.is_v2 or encoding in SGI_REGISTERS:
            return None
        with self.lock:
            cpu = self._cpu(vcpu_id)
            return cpu.vif.icc_read(encoding) if cpu is not None else None

    def vgic_v3_sysreg_write(self: Vgic, vcpu_id: int, encoding: int, value: int) -> bool:
        """MSR of an ICC_* register; False means UNDEF. SGI0R/SGI1R/ASGI1R generate SGIs."""
        if self.is_v2:
            return False
        allow_group1 = SGI_REGISTERS.get(encoding)
        if allow_group1 is not None:
            with self._guest_access(vcpu_id) as cpu:
                if cpu is not None and self.initialized:
                    vgic_v3_dispatch_sgi(self, vcpu_id, value, allow_group1)
            return True
        with self.lock:
            cpu = self._cpu(vcpu_id)
            return cpu is not None and cpu.vif.icc_write(encoding, value)
