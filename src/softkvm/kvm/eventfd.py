"""irqfd and resamplefd: eventfds that inject interrupts, and eventfds signalled on guest EOI.

Counterpart: virt/kvm/eventfd.c (``kvm_irqfd``, ``kvm_irqfd_assign``, ``kvm_irqfd_deassign``,
``irqfd_wakeup``, ``irqfd_inject``, ``irqfd_resampler_ack``, ``irqfd_resampler_shutdown``,
``irqfd_shutdown``, ``kvm_irqfd_release``, ``kvm_notify_acked_gsi``); the routing and the
interrupt controller behind a GSI are the arch's (``kvm/vgic/vgic_irqfd.py``), reached through
:class:`IrqfdChip`. Design notes: kvm-arm-reference.md §11.

How KVM's mechanism maps here:

- KVM hooks a wait-queue entry on each eventfd and injects from the wakeup callback (or a work
  item). softkvm has **one poller thread per VM**: ``poll()`` on every registered eventfd plus a
  wake eventfd; when an irqfd is readable it reads (consumes) the counter and injects at once,
  through the vGIC, which queues the interrupt and kicks the target vCPU — preempting it if it
  runs, waking it if it sleeps in WFI. No vCPU exit is waited for.
- Coalescing, as KVM: the counter is consumed when handled (``eventfd_ctx_do_read`` in
  ``irqfd_wakeup``), so N writes that land before the poller gets to the eventfd yield **one**
  injection; ``IrqfdStats.coalesced`` counts the events folded that way. A device that needs
  every event seen must wait for an acknowledgement (a resamplefd, or its own protocol).
- Plain irqfd: ``set_irq(gsi, 1)`` then ``set_irq(gsi, 0)`` — a pulse, for edge SPIs (KVM's
  default SPI configuration; on a level-configured SPI the pulse can be lost, as in KVM).
  Resample irqfd: ``set_irq(gsi, 1)`` only. When the guest EOIs that level interrupt the arch
  calls :meth:`KvmIrqfds.kvm_notify_acked_gsi`: ``set_irq(gsi, 0)`` **first**, then every
  resamplefd of the GSI is signalled, so the device re-asserts if it still has work.
- Deassign (same eventfd and GSI) flushes in-flight work: when it returns nothing more is
  injected for that irqfd. As ``irqfd_shutdown`` does, it consumes whatever count is left in the
  eventfd. The last irqfd of a resampler removes it and lowers the GSI.
- The poller thread starts with the first registration and ends in :meth:`KvmIrqfds.release`
  (``Vm.close``). Both eventfds are duplicated at assignment (KVM keeps ``eventfd_ctx``
  references): the counter is always read through our duplicate, so a number the owner closed
  and reused is never read, and closing only the resamplefd does not detach, as in KVM. The
  duplicates are closed at shutdown.

Deliberate differences from KVM:

1. **Before the vGIC is initialised** KVM refuses ``KVM_IRQFD`` with EAGAIN
   (``kvm_arch_intc_initialized``). softkvm accepts the registration and keeps it pending; the
   events stay in the eventfd counter. When the vGIC is initialised (:meth:`KvmIrqfds.
   irqchip_ready` — called by the vGIC's init hook or by the VMM through
   ``Vm.irqfd_vgic_ready()``; the poller also notices it whenever a pending eventfd fires) the
   registrations are installed and an eventfd that is already readable is injected at once
   (KVM's assign-time poll). No edge is lost and no level forgotten. Without any in-kernel
   irqchip (a userspace-irqchip VM) assignment fails with KVM's errno for that case, EAGAIN.
2. The GSI is checked at assignment (EINVAL when the routing cannot deliver it, e.g. beyond
   ``nr_spis`` with the default routing); KVM accepts any GSI and drops the injections.
3. Closing. KVM detaches an irqfd when the eventfd's last reference goes (EPOLLHUP). Here the
   owner's *descriptor number* is what is polled: when the owner closes it while assigned, the
   poller sees POLLNVAL at its next pass and detaches the irqfd (and if the number was reused
   meanwhile, the first readiness of the other file that our duplicate does not share detaches
   it too). Where the kernel exposes ``eventfd-id`` in fdinfo (pinned by our duplicate, so never
   reused while assigned), eventfds are compared by identity as KVM compares ``eventfd_ctx``: a
   second descriptor of an assigned eventfd is EBUSY too, and assigning a new eventfd that got
   the number of a closed, not yet noticed one replaces that stale registration.
4. The owner must not read the irqfd itself (it may be blocking or not: the poller reads only
   after a zero-timeout poll under its lock).

Locking: ``_config`` (a re-entrant mutex, like ``irqfds.resampler_lock``) serialises assign,
deassign, installation, detach and release, and may be held while calling the irqchip. ``_lock``
guards the tables and is the only lock the EOI path (:meth:`KvmIrqfds.kvm_notify_acked_gsi`, run
by the vGIC on a vCPU thread outside the vGIC lock) takes; the irqchip is never called with
``_lock`` held, so the vGIC lock and ``_lock`` never nest. Nothing here takes ``Vm.lock``.
"""

from __future__ import annotations

import errno
import os
import select
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from softkvm.kvm import uapi
from softkvm.kvm.errors import KvmError
from softkvm.kvm.trace import Tracer

KVM_IRQFD_VALID_FLAGS = uapi.KVM_IRQFD_FLAG_DEASSIGN | uapi.KVM_IRQFD_FLAG_RESAMPLE
_CLOSED = select.POLLNVAL | select.POLLHUP | select.POLLERR
_EVENTFD_LINK = "anon_inode:[eventfd]"
POLLER_JOIN_TIMEOUT = 30.0


class IrqfdChip(Protocol):
    """The arch side of irqfd: the in-kernel irqchip behind the GSI routing."""

    def has_irqchip(self) -> bool:
        """Is there an in-kernel irqchip at all (initialised or not)?"""

    def initialized(self) -> bool:
        """``kvm_arch_intc_initialized``: can interrupts be injected now?"""

    def check_gsi(self, gsi: int) -> str | None:
        """Why ``gsi`` cannot be delivered (the EINVAL message), or None if it can."""

    def set_irq(self, gsi: int, level: bool) -> int:
        """``kvm_set_irq`` through the routing: 0 or -errno. Called without our locks."""

    def set_ack_handler(self, handler: Callable[[int], None] | None) -> None:
        """Call ``handler(gsi)`` (outside the irqchip's lock) whenever the guest EOIs a level
        interrupt routed from ``gsi``; None stops it. Needed only while resamplers exist."""


class IrqfdState(Enum):
    PENDING = "pending"   # registered before the irqchip was initialised
    ACTIVE = "active"     # installed: polled and injected
    DEAD = "dead"         # deassigned or detached


@dataclass(slots=True)
class IrqfdStats:
    inject: int = 0       # irqfd_inject: events handled (one per counter read)
    coalesced: int = 0    # writes folded into an injection already counted
    resample: int = 0     # resamplefd signals (irqfd_resampler_ack, per irqfd)
    acked: int = 0        # guest EOIs seen by a resampler
    dropped: int = 0      # injections the routing/irqchip refused (no route, bad SPI)
    detached: int = 0     # eventfds closed by their owner while assigned


@dataclass(slots=True, eq=False)
class IrqfdResampler:
    """``struct kvm_kernel_irqfd_resampler``: the resample irqfds sharing one GSI."""

    gsi: int
    irqfds: list[KvmKernelIrqfd] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class KvmKernelIrqfd:
    """``struct kvm_kernel_irqfd``."""

    fd: int                      # the owner's descriptor number (polled: readiness, close)
    gsi: int
    ref: int                     # our duplicate of the eventfd (read through it; pins it)
    ident: int | None            # eventfd-id (fdinfo) when the kernel reports it
    resamplefd: int | None       # our duplicate of the owner's resamplefd
    state: IrqfdState = IrqfdState.PENDING
    muted: bool = False          # pending and already readable: stop polling until installed
    inflight: int = 0            # injections running now (deassign waits for 0)
    resampler: IrqfdResampler | None = None

    @property
    def resample(self) -> bool:
        return self.resamplefd is not None


@dataclass(frozen=True, slots=True)
class IrqfdInfo:
    """A registration as tests and the VMM see it."""

    fd: int
    gsi: int
    resample: bool
    state: IrqfdState


class KvmIrqfds:
    """``kvm->irqfds`` of one VM: the registrations, the resamplers and the poller thread."""

    def __init__(self, chip: IrqfdChip, name: str = "irqfd",
                 tracer: Tracer | None = None) -> None:
        self._chip = chip
        self._name = name
        self._tracer = tracer if tracer is not None else Tracer()
        self._config = threading.RLock()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)   # inflight dropped to 0
        self._items: dict[int, KvmKernelIrqfd] = {}    # by the owner's fd number
        self._resamplers: dict[int, IrqfdResampler] = {}
        self._gen = 0                                  # bumped when the poll set changes
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._thread: threading.Thread | None = None
        self._stop = False
        self._released = False
        self.stats = IrqfdStats()
        self.error: BaseException | None = None       # what killed the poller, if anything

    # --- KVM_IRQFD ------------------------------------------------------------------------

    def kvm_irqfd(self, fd: int, gsi: int, flags: int = 0, resamplefd: int | None = None) -> None:
        """The ioctl: flags checked first, then deassign or assign."""
        unknown = flags & ~KVM_IRQFD_VALID_FLAGS
        if unknown:
            raise KvmError(errno.EINVAL, f"unknown KVM_IRQFD flags {unknown:#x} (valid: "
                           "DEASSIGN 1, RESAMPLE 2)")
        if flags & uapi.KVM_IRQFD_FLAG_DEASSIGN:
            self.deassign(fd, gsi)
        elif flags & uapi.KVM_IRQFD_FLAG_RESAMPLE:
            if resamplefd is None:
                raise KvmError(errno.EBADF, "KVM_IRQFD_FLAG_RESAMPLE needs a resamplefd")
            self.assign(fd, gsi, resamplefd)
        else:
            self.assign(fd, gsi, None)

    def assign(self, fd: int, gsi: int, resamplefd: int | None = None) -> None:
        """``kvm_irqfd_assign``. Before the irqchip is initialised the registration is kept
        (module docstring, difference 1); after, it is installed and polled at once."""
        if not self._chip.has_irqchip():
            raise KvmError(errno.EAGAIN, "irqfd needs an in-kernel irqchip: create the vGIC "
                           "(KVM_CREATE_DEVICE) first; a userspace irqchip cannot use irqfds")
        with self._config:
            if self._released:
                raise KvmError(errno.EBADF, "the VM is closed")
            ident = self._ident_or_purge(fd)
            if resamplefd is not None:
                eventfd_ident(resamplefd, "resamplefd")
            reason = self._chip.check_gsi(gsi)
            if reason is not None:
                raise KvmError(errno.EINVAL, reason)
            with self._lock:
                stale = [i for i in self._items.values()
                         if i.fd == fd and not _same_eventfd(i, fd, ident)]
            for irqfd in stale:   # the number was closed and reused: that irqfd is gone
                self._detach(irqfd, closed=True)
            with self._lock:
                if any(_same_eventfd(i, fd, ident) for i in self._items.values()):
                    raise KvmError(errno.EBUSY, f"eventfd {fd} is already assigned as an irqfd")
                dup = os.dup(resamplefd) if resamplefd is not None else None
                self._items[fd] = KvmKernelIrqfd(fd, gsi, os.dup(fd), ident, dup)
                self._gen += 1
            self._start_poller()
            if self._chip.initialized():
                self._install_pending()
            else:
                self._wake()

    def deassign(self, fd: int, gsi: int) -> None:
        """``kvm_irqfd_deassign``: every irqfd of this eventfd on this GSI; returns once none
        of them can inject any more. A descriptor closed meanwhile is EBADF (as KVM), after
        dropping what it left behind (KVM would have detached it at close)."""
        with self._config:
            ident = self._ident_or_purge(fd)
            with self._lock:
                victims = [i for i in self._items.values()
                           if i.gsi == gsi and _same_eventfd(i, fd, ident)]
            for irqfd in victims:
                self._shutdown(irqfd, drain=True)

    def _ident_or_purge(self, fd: int) -> int | None:
        """(config held) ``eventfd_ident``; a number that is no eventfd any more cannot be
        the one we registered: drop that registration (the owner closed it) and fail."""
        try:
            return eventfd_ident(fd, "irqfd")
        except KvmError:
            with self._lock:
                gone = [i for i in self._items.values() if i.fd == fd]
            for irqfd in gone:
                self._detach(irqfd, closed=True)
            raise

    # --- installation (the vGIC became initialised) ---------------------------------------

    def irqchip_ready(self) -> None:
        """The irqchip is initialised: install every pending registration and inject those
        already signalled. Idempotent; a no-op while the irqchip is not initialised. Call it
        outside the irqchip's lock."""
        with self._config:
            if not self._released and self._chip.initialized():
                self._install_pending()

    def _install_pending(self) -> None:
        """(config held) Pending -> active, resamplers joined, then the assign-time poll."""
        with self._lock:
            todo = [i for i in self._items.values() if i.state is IrqfdState.PENDING]
            first_resampler = not self._resamplers
            for irqfd in todo:
                if irqfd.resample:
                    resampler = self._resamplers.setdefault(irqfd.gsi, IrqfdResampler(irqfd.gsi))
                    resampler.irqfds.append(irqfd)
                    irqfd.resampler = resampler
            need_handler = first_resampler and bool(self._resamplers)
        if need_handler:   # before anything can be asserted through a resampler
            self._chip.set_ack_handler(self.kvm_notify_acked_gsi)
        with self._lock:
            for irqfd in todo:
                irqfd.state, irqfd.muted = IrqfdState.ACTIVE, False
            self._gen += 1
        self._wake()
        for irqfd in todo:
            self._handle(irqfd)

    # --- injection --------------------------------------------------------------------------

    def _handle(self, irqfd: KvmKernelIrqfd, revents: int = 0) -> None:
        """Consume the counter if the eventfd is readable and inject (outside ``_lock``).
        ``revents`` is what the poller saw on the owner's number: closed -> detach; readable
        while our eventfd is not -> the number is another file now -> detach."""
        with self._lock:
            if irqfd.state is not IrqfdState.ACTIVE:
                return
            count = _read_if_ready(irqfd.ref)
            if count:
                irqfd.inflight += 1
                self.stats.inject += 1
                self.stats.coalesced += count - 1
        if count:
            if self._tracer.on:
                self._tracer.emit("irqfd_inject", -1, gsi=irqfd.gsi, count=count,
                                  resample=irqfd.resample)
            try:
                self._inject(irqfd)
            finally:
                with self._lock:
                    irqfd.inflight -= 1
                    self._idle.notify_all()
        if revents & _CLOSED or (revents & select.POLLIN and not count
                                 and not _still_names(irqfd)):
            self._detach(irqfd, closed=True)

    def _inject(self, irqfd: KvmKernelIrqfd) -> None:
        """``irqfd_inject``: a pulse, or a raised level for a resample irqfd."""
        ret = self._chip.set_irq(irqfd.gsi, True)
        if irqfd.resampler is None:
            self._chip.set_irq(irqfd.gsi, False)
        if ret < 0:
            with self._lock:
                self.stats.dropped += 1

    # --- EOI -> resample ----------------------------------------------------------------------

    def kvm_notify_acked_gsi(self, gsi: int) -> None:
        """``irqfd_resampler_ack``: the guest EOIed the level interrupt of ``gsi``: lower the
        line first, then signal every resamplefd of that GSI."""
        with self._lock:
            resampler = self._resamplers.get(gsi)
            if resampler is None:
                return
            self.stats.acked += 1
        if self._tracer.on:
            self._tracer.emit("irqfd_resample", -1, gsi=gsi, irqfds=len(resampler.irqfds))
        self._chip.set_irq(gsi, False)
        with self._lock:   # an irqfd shut down meanwhile has left the list: its dup is closed
            for irqfd in resampler.irqfds:
                if irqfd.resamplefd is None:
                    continue
                try:
                    os.eventfd_write(irqfd.resamplefd, 1)
                    self.stats.resample += 1
                except OSError:
                    pass   # counter saturated: the device has plenty to read

    # --- deactivation and shutdown ---------------------------------------------------------------

    def _detach(self, irqfd: KvmKernelIrqfd, closed: bool = False) -> None:
        """Drop an irqfd whose descriptor is gone (may run on the poller thread)."""
        with self._config:
            if irqfd.state is IrqfdState.DEAD:
                return
            if closed:
                self.stats.detached += 1
            self._shutdown(irqfd, drain=False)

    def _shutdown(self, irqfd: KvmKernelIrqfd, drain: bool) -> None:
        """(config held) ``irqfd_deactivate`` + ``irqfd_shutdown``: out of the table, wait for
        in-flight injections, leave the resampler (the last one lowers the GSI), drain the
        counter (``eventfd_ctx_remove_wait_queue``), close our duplicates."""
        with self._lock:
            if irqfd.state is IrqfdState.DEAD:
                return
            if self._items.get(irqfd.fd) is irqfd:
                del self._items[irqfd.fd]
            irqfd.state = IrqfdState.DEAD
            self._gen += 1
            while irqfd.inflight:
                self._idle.wait()
            resampler, irqfd.resampler = irqfd.resampler, None
            last = False
            if resampler is not None:
                resampler.irqfds.remove(irqfd)
                if not resampler.irqfds:
                    del self._resamplers[resampler.gsi]
                    last = True
            no_more_resamplers = last and not self._resamplers
            if drain:
                _read_if_ready(irqfd.ref)
            os.close(irqfd.ref)
            dup, irqfd.resamplefd = irqfd.resamplefd, None
            if dup is not None:
                os.close(dup)
        self._wake()
        if no_more_resamplers:
            self._chip.set_ack_handler(None)
        if last and resampler is not None:
            self._chip.set_irq(resampler.gsi, False)

    def release(self) -> None:
        """``kvm_irqfd_release`` (VM teardown): stop the poller, shut every irqfd down, close
        our descriptors. Idempotent."""
        with self._config:
            if self._released:
                return
            self._released = True
            with self._lock:
                self._stop = True
            thread = self._thread
        self._wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join(POLLER_JOIN_TIMEOUT)
        with self._config:
            with self._lock:
                items = list(self._items.values())
            for irqfd in items:
                self._shutdown(irqfd, drain=False)
            os.close(self._wake_fd)
            self._wake_fd = -1

    # --- the poller thread -------------------------------------------------------------------

    def _start_poller(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._poller, name=f"{self._name}-poller",
                                            daemon=True)
            self._thread.start()

    def _wake(self) -> None:
        if self._wake_fd >= 0:
            os.eventfd_write(self._wake_fd, 1)

    def _poller(self) -> None:
        try:
            self._poll_loop()
        except BaseException as err:   # recorded for the tests; the thread dies loudly
            self.error = err
            raise

    def _poll_loop(self) -> None:
        seen, poller = -1, select.poll()
        table: dict[int, KvmKernelIrqfd] = {}
        while True:
            with self._lock:
                if self._stop:
                    return
                if seen != self._gen:
                    seen, table, poller = self._gen, self._poll_set(), select.poll()
                    poller.register(self._wake_fd, select.POLLIN)
                    for fd in table:
                        poller.register(fd, select.POLLIN)
                has_pending = any(i.state is IrqfdState.PENDING for i in self._items.values())
            if has_pending and self._chip.initialized():
                self.irqchip_ready()
                continue
            for fd, revents in poller.poll():
                if fd == self._wake_fd:
                    _drain(fd)
                    continue
                irqfd = table.get(fd)
                if irqfd is not None:
                    self._event(irqfd, revents)

    def _poll_set(self) -> dict[int, KvmKernelIrqfd]:
        return {fd: i for fd, i in self._items.items()
                if i.state is IrqfdState.ACTIVE or (i.state is IrqfdState.PENDING and not i.muted)}

    def _event(self, irqfd: KvmKernelIrqfd, revents: int) -> None:
        if irqfd.state is IrqfdState.ACTIVE:
            self._handle(irqfd, revents)
        elif irqfd.state is IrqfdState.PENDING:
            if revents & _CLOSED:
                self._detach(irqfd, closed=True)
            elif not self._chip.initialized():   # keep the event in the counter for later
                with self._lock:
                    irqfd.muted = True
                    self._gen += 1
            # else: the loop installs everything before polling again

    # --- introspection -----------------------------------------------------------------------

    def assigned(self) -> list[IrqfdInfo]:
        with self._lock:
            return [IrqfdInfo(i.fd, i.gsi, i.resample, i.state) for i in self._items.values()]

    def resampler_gsis(self) -> list[int]:
        with self._lock:
            return sorted(self._resamplers)

    @property
    def poller(self) -> threading.Thread | None:
        return self._thread


# --- eventfd helpers ---------------------------------------------------------------------------


def eventfd_ident(fd: int, what: str) -> int | None:
    """Check that ``fd`` is an open eventfd (EBADF / EINVAL as ``eventfd_ctx_fdget``) and
    return its ``eventfd-id`` when the kernel reports one."""
    if fd < 0:
        raise KvmError(errno.EBADF, f"{what} {fd} is not a file descriptor")
    try:
        os.fstat(fd)
    except OSError as err:
        raise KvmError(errno.EBADF, f"{what} {fd} is not an open file descriptor") from err
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None   # no /proc: trust the caller
    if target != _EVENTFD_LINK:
        raise KvmError(errno.EINVAL, f"{what} {fd} is not an eventfd ({target})")
    try:
        with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as info:
            for line in info:
                if line.startswith("eventfd-id:"):
                    return int(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def _still_names(irqfd: KvmKernelIrqfd) -> bool:
    """Does the owner's number still name our eventfd (as far as the kernel lets us tell)?"""
    try:
        ident = eventfd_ident(irqfd.fd, "irqfd")
    except KvmError:
        return False
    return ident is None or irqfd.ident is None or ident == irqfd.ident


def _same_eventfd(irqfd: KvmKernelIrqfd, fd: int, ident: int | None) -> bool:
    if irqfd.ident is not None and ident is not None:
        return irqfd.ident == ident
    return irqfd.fd == fd


def poll_now(fd: int) -> int:
    """The descriptor's poll events right now (POLLNVAL if it is closed)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    ready = poller.poll(0)
    return ready[0][1] if ready else 0


def _read_if_ready(fd: int) -> int:
    """Consume an eventfd's counter if it is readable (never blocks); 0 if not."""
    if not poll_now(fd) & select.POLLIN:
        return 0
    try:
        return os.eventfd_read(fd)
    except OSError:
        return 0


def _drain(fd: int) -> None:
    try:
        os.eventfd_read(fd)
    except OSError:
        pass
