"""arm's side of irqfd: GSI routing onto vGIC SPIs, the EOI notification, and the VM entry points.

Counterpart: arch/arm64/kvm/vgic/vgic-irqfd.c (``vgic_irqfd_set_irq``, ``kvm_set_routing_entry``,
``kvm_vgic_setup_default_irq_routing``), the routing table of virt/kvm/irqchip.c
(``kvm_set_irq_routing``, ``setup_routing_entry``, ``kvm_irq_map_gsi``, ``kvm_irq_map_chip_pin``,
``kvm_set_irq``) and ``kvm_notify_acked_irq`` (virt/kvm/eventfd.c). The irqfds themselves are
generic: ``softkvm.kvm.eventfd``. Design notes: kvm-arm-reference.md §11.

Routing. The default, as ``kvm_vgic_setup_default_irq_routing`` installs at vGIC init: GSI i ->
irqchip 0, pin i -> SPI 32 + i, for i < ``nr_spis``. ``KVM_SET_GSI_ROUTING`` replaces it with
IRQCHIP entries (irqchip 0, pin < 988, one per GSI and irqchip); a GSI without a route drops its
injections. An EOI of SPI 32 + p reaches the resamplers of the GSI that pin p maps back to (the
last entry naming that pin, as ``rt->chip[0][p]``).

Differences from KVM (each deliberate):
- KVM rewrites the routing with the default one at vGIC init, losing a table set before; softkvm
  keeps a table set before init (the default is "no table").
- MSI routes (``KVM_IRQ_ROUTING_MSI``) are refused with EINVAL: softkvm models no ITS (KVM takes
  the route and fails each injection with ENODEV).
- irqfd registration before vGIC init is accepted and kept (see ``eventfd``); KVM says EAGAIN.
  Without any in-kernel irqchip the answer is KVM's: EAGAIN.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from softkvm.arch import gic as G
from softkvm.kvm import uapi
from softkvm.kvm.errors import KvmError
from softkvm.kvm.eventfd import KvmIrqfds
from softkvm.kvm.trace import Tracer

if TYPE_CHECKING:
    from softkvm.kvm.vgic.vgic import Vgic

KVM_IRQ_ROUTING_IRQCHIP = 1
KVM_IRQ_ROUTING_MSI = 2
KVM_NR_IRQCHIPS = 1
KVM_IRQCHIP_NUM_PINS = uapi.VGIC_MAX_SPI - uapi.VGIC_NR_PRIVATE_IRQS + 1   # 988
KVM_MAX_IRQ_ROUTES = 4096
# The most SPIs a vGIC can be given (NR_IRQS <= 1023, a multiple of 32): the bound for a GSI
# assigned before NR_IRQS and initialisation have fixed nr_spis.
MAX_NR_SPIS = (uapi.VGIC_MAX_RESERVED // 32) * 32 - uapi.VGIC_NR_PRIVATE_IRQS   # 960


@dataclass(frozen=True, slots=True)
class KvmIrqRoutingEntry:
    """``struct kvm_irq_routing_entry`` with its ``u.irqchip`` member."""

    gsi: int
    type: int = KVM_IRQ_ROUTING_IRQCHIP
    flags: int = 0
    irqchip: int = 0
    pin: int = 0


@dataclass(frozen=True, slots=True)
class _Table:
    gsi_pin: dict[int, int]   # kvm_irq_map_gsi (one irqchip: at most one pin per GSI)
    pin_gsi: dict[int, int]   # rt->chip[0][pin]


class VgicIrqRouting:
    """The VM's GSI routing onto the vGIC, and the :class:`~softkvm.kvm.eventfd.IrqfdChip`
    the generic irqfd code drives. The vGIC is looked up on each use (it may come later)."""

    def __init__(self, vgic_of: Callable[[], Vgic | None], tracer: Tracer | None = None) -> None:
        self._vgic_of = vgic_of
        self._tracer = tracer if tracer is not None else Tracer()
        self._table: _Table | None = None        # None: the default routing
        self._ack_handler: Callable[[int], None] | None = None
        self._ack_vgic: Vgic | None = None       # where our ack notifier is registered
        self._notifier = self._vgic_acked        # one bound method, to unregister it again

    # --- KVM_SET_GSI_ROUTING --------------------------------------------------------------------

    def kvm_set_irq_routing(self, entries: Sequence[KvmIrqRoutingEntry], flags: int = 0) -> None:
        """Validate every entry, then replace the table at once (readers see old or new)."""
        if flags:
            raise KvmError(errno.EINVAL, f"KVM_SET_GSI_ROUTING flags must be 0, not {flags:#x}")
        if len(entries) > KVM_MAX_IRQ_ROUTES:
            raise KvmError(errno.EINVAL, f"{len(entries)} routes: at most {KVM_MAX_IRQ_ROUTES}")
        gsi_pin: dict[int, int] = {}
        pin_gsi: dict[int, int] = {}
        for entry in entries:
            _check_entry(entry)
            if entry.gsi in gsi_pin:
                raise KvmError(errno.EINVAL, f"GSI {entry.gsi} is routed to irqchip 0 twice")
            gsi_pin[entry.gsi] = entry.pin
            pin_gsi[entry.pin] = entry.gsi
        self._table = _Table(gsi_pin, pin_gsi)

    def default_routing(self) -> bool:
        return self._table is None

    def kvm_irq_map_gsi(self, gsi: int) -> int | None:
        """The irqchip pin ``gsi`` is routed to, if any."""
        table = self._table
        if table is not None:
            return table.gsi_pin.get(gsi)
        vgic = self._vgic_of()
        return gsi if vgic is not None and 0 <= gsi < vgic.nr_spis else None

    def kvm_irq_map_chip_pin(self, irqchip: int, pin: int) -> int | None:
        """The GSI whose route names (irqchip, pin), if any."""
        if irqchip != 0:
            return None
        table = self._table
        if table is not None:
            return table.pin_gsi.get(pin)
        vgic = self._vgic_of()
        return pin if vgic is not None and 0 <= pin < vgic.nr_spis else None

    # --- IrqfdChip ----------------------------------------------------------------------------

    def has_irqchip(self) -> bool:
        return self._vgic_of() is not None

    def initialized(self) -> bool:
        vgic = self._vgic_of()
        return vgic is not None and vgic.initialized

    def check_gsi(self, gsi: int) -> str | None:
        vgic = self._vgic_of()
        if not 0 <= gsi < KVM_MAX_IRQ_ROUTES:
            return f"GSI {gsi} is out of range (0..{KVM_MAX_IRQ_ROUTES - 1})"
        nr_spis = vgic.nr_spis if vgic is not None and vgic.nr_spis else MAX_NR_SPIS
        table = self._table
        if table is None:
            if gsi >= nr_spis:
                return (f"GSI {gsi} is beyond the vGIC's {nr_spis} SPIs (default routing: "
                        f"GSI i -> SPI {G.SPI_BASE} + i)")
            return None
        pin = table.gsi_pin.get(gsi)
        if pin is None:
            return f"GSI {gsi} has no route: add one with KVM_SET_GSI_ROUTING"
        if pin >= nr_spis:
            return f"GSI {gsi} is routed to pin {pin}, beyond the vGIC's {nr_spis} SPIs"
        return None

    def set_irq(self, gsi: int, level: bool) -> int:
        """``kvm_set_irq`` -> ``vgic_irqfd_set_irq``: the SPI of the GSI's route. Never
        initialises a GICv2 lazily (irqfd waits for initialisation instead)."""
        vgic = self._vgic_of()
        pin = self.kvm_irq_map_gsi(gsi)
        if vgic is None or not vgic.initialized:
            return -errno.EAGAIN
        if pin is None:
            return -errno.EINVAL
        spi = pin + G.SPI_BASE
        if not vgic.valid_spi(spi):
            return -errno.EINVAL
        if self._tracer.on:  # trace_kvm_set_irq(gsi, level, irq_source_id), with the SPI
            self._tracer.emit("kvm_set_irq", -1, gsi=gsi, level=bool(level), intid=spi)
        return vgic.kvm_vgic_inject_irq(None, spi, level, None)

    def set_ack_handler(self, handler: Callable[[int], None] | None) -> None:
        """Register our notifier with the vGIC while someone wants EOIs (resamplers exist)."""
        self._ack_handler = handler
        vgic = self._vgic_of()
        if handler is not None and self._ack_vgic is None and vgic is not None:
            self._ack_vgic = vgic
            vgic.register_ack_notifier(self._notifier)
        elif handler is None and self._ack_vgic is not None:
            self._ack_vgic.unregister_ack_notifier(self._notifier)
            self._ack_vgic = None

    def _vgic_acked(self, spi_index: int) -> None:
        """The vGIC's ack notifier: ``kvm_notify_acked_irq(kvm, 0, pin)``."""
        handler = self._ack_handler
        gsi = self.kvm_irq_map_chip_pin(0, spi_index)
        if self._tracer.on:  # trace_kvm_ack_irq(irqchip, pin)
            self._tracer.emit("kvm_ack_irq", -1, irqchip=0, pin=spi_index, gsi=gsi)
        if handler is not None and gsi is not None:
            handler(gsi)


def _check_entry(entry: KvmIrqRoutingEntry) -> None:
    """``setup_routing_entry`` + arm's ``kvm_set_routing_entry``."""
    if not 0 <= entry.gsi < KVM_MAX_IRQ_ROUTES:
        raise KvmError(errno.EINVAL, f"GSI {entry.gsi} is out of range "
                       f"(0..{KVM_MAX_IRQ_ROUTES - 1})")
    if entry.type == KVM_IRQ_ROUTING_MSI:
        raise KvmError(errno.EINVAL, "MSI routes need an ITS, which softkvm does not model")
    if entry.type != KVM_IRQ_ROUTING_IRQCHIP:
        raise KvmError(errno.EINVAL, f"unknown routing entry type {entry.type}")
    if entry.flags:
        raise KvmError(errno.EINVAL, f"irqchip routing entries take no flags ({entry.flags:#x})")
    if not 0 <= entry.irqchip < KVM_NR_IRQCHIPS:
        raise KvmError(errno.EINVAL, f"irqchip {entry.irqchip}: arm has only irqchip 0")
    if not 0 <= entry.pin < KVM_IRQCHIP_NUM_PINS:
        raise KvmError(errno.EINVAL, f"pin {entry.pin} is out of range "
                       f"(0..{KVM_IRQCHIP_NUM_PINS - 1})")


# --- the VM's entry points (kvm_main.c: KVM_IRQFD, KVM_SET_GSI_ROUTING; kvm_irqfd_release) -----


class IrqfdVm(Protocol):
    """The VM as irqfd sees it (``softkvm.kvm.api.Vm``)."""

    vgic: Any            # the in-kernel Vgic, or None
    lock: Any            # the VM's re-entrant lock
    tracer: Any          # the VM's Tracer (softkvm.kvm.trace)


@dataclass(slots=True)
class VmIrqfd:
    """What a VM owns for irqfd: its routing and its irqfds (``kvm->irq_routing``,
    ``kvm->irqfds``). Created on first use and kept as an attribute of the VM."""

    routing: VgicIrqRouting
    irqfds: KvmIrqfds


_ATTR = "irqfd_state"


def vm_irqfd(vm: IrqfdVm, create: bool = True) -> VmIrqfd | None:
    """The VM's irqfd state, created on first use when ``create``."""
    state: VmIrqfd | None = getattr(vm, _ATTR, None)
    if state is None and create:
        with vm.lock:
            state = getattr(vm, _ATTR, None)
            if state is None:
                tracer = getattr(vm, "tracer", None)
                routing = VgicIrqRouting(lambda: vm.vgic, tracer)
                state = VmIrqfd(routing, KvmIrqfds(routing, name=f"irqfd-vm{id(vm):x}",
                                                   tracer=tracer))
                setattr(vm, _ATTR, state)
    return state


def kvm_irqfd(vm: IrqfdVm, fd: int, gsi: int, flags: int = 0,
              resamplefd: int | None = None) -> None:
    """KVM_IRQFD (``struct kvm_irqfd {fd, gsi, flags, resamplefd}``)."""
    state = vm_irqfd(vm)
    assert state is not None
    state.irqfds.kvm_irqfd(fd, gsi, flags, resamplefd)


def kvm_set_gsi_routing(vm: IrqfdVm, entries: Sequence[KvmIrqRoutingEntry],
                        flags: int = 0) -> None:
    """KVM_SET_GSI_ROUTING (IRQCHIP entries only)."""
    state = vm_irqfd(vm)
    assert state is not None
    state.routing.kvm_set_irq_routing(entries, flags)


def kvm_irqfd_vgic_ready(vm: IrqfdVm) -> None:
    """The vGIC has been initialised: install the irqfds registered before."""
    state = vm_irqfd(vm, create=False)
    if state is not None:
        state.irqfds.irqchip_ready()


def kvm_irqfd_release(vm: IrqfdVm) -> None:
    """VM teardown: every irqfd shut down, the poller thread stopped, descriptors closed."""
    state = vm_irqfd(vm, create=False)
    if state is not None:
        state.irqfds.release()


def irqfd_poller(vm: IrqfdVm) -> threading.Thread | None:
    """The VM's poller thread, if it was ever started (for tests)."""
    state = vm_irqfd(vm, create=False)
    return state.irqfds.poller if state is not None else None
