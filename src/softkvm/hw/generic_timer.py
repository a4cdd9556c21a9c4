"""The generic timer's comparators and the host timer interrupt they raise.

Counterpart: the Arm generic timer (Arm ARM D11) as KVM uses it while a vCPU is loaded: the
guest's CNTV_*/CNTP_* registers live in the hardware (here: the native shim's per-vCPU block,
emulated in C on every guest access), and when a comparator's condition is met the *host* takes
a timer PPI, which forces the vCPU out of the guest (``kvm_arch_timer_handler``). The PPI stays
masked while KVM leaves it active (``phys_active``), so an asserted level does not re-trap.

The shim plays that PPI with one native thread per VM (``_native/timer_ppi.c``), which also keeps
the background timer of each vCPU blocked in WFI (``bg_arm``: it writes the vCPU's wake eventfd
at the deadline, as KVM's bg_timer hrtimer wakes the vCPU's thread). For the PPI it sleeps until
the earliest unmasked deadline of the loaded vCPUs, or until its eventfd says a guest timer write
or a load, unmask or re-arm exposed an earlier one, then marks the expiry and kicks the vCPU. The
vCPU's thread takes the mark after the exit (``take``), as KVM's PPI handler runs on the CPU the
interrupt took out of the guest. The thread needs no GIL: a Python watcher woke at every guest
timer tick and then waited for the vCPU threads to hand it the GIL.

vcpu_load/put, masking and re-arming happen on every exit, so they poke the watcher only when it
would otherwise sleep past a deadline they expose; a deadline that disappears merely makes the
next scan find nothing. The shim applies the same rule to the guest's timer writes: each scan
publishes when its sleep ends (``watch_until``), and a write pokes only for a deadline before that.
"""

from __future__ import annotations

import ctypes
import weakref

from softkvm.hw.clock import NS_PER_TICK
from softkvm.hw.native import Native, NativeShimError, SkvmVcpu

VTIMER = 0
PTIMER = 1
CTL_ENABLE = 1 << 0
CTL_IMASK = 1 << 1
CTL_ISTATUS = 1 << 2
MASK64 = 0xFFFFFFFFFFFFFFFF
WATCH_SCANNING = 0   # skvm_vcpu.watch_until while a scan runs: every timer write pokes
WATCH_NEVER = MASK64  # ... while the watcher sleeps until a poke
# skvm_ppi_info's questions (timer_ppi.c)
_FIRES, _POKES, _SCANS, _WAKE_AT, _TID, _BG_FIRES = range(6)


def comparator_deadline_ns(ctl: int, cval: int, offset: int) -> int | None:
    """Host CLOCK_MONOTONIC time at which a comparator's condition (counter - ``offset`` >=
    ``cval``) is met, or None if its output is off (not enabled, or IMASK)."""
    if ctl & (CTL_ENABLE | CTL_IMASK) != CTL_ENABLE:
        return None
    return ((cval + offset) & MASK64) * NS_PER_TICK


class TimerIrq:
    """The host timer PPI of every loaded vCPU: the shim's watcher thread, keyed by vCPU."""

    def __init__(self, native: Native) -> None:
        self._fast = native.fast   # these calls are short and never block: they keep the GIL
        self._ppi: int | None = native.shim.skvm_ppi_new()
        if not self._ppi:
            raise NativeShimError("could not start the timer PPI watcher thread (out of memory "
                                  "or threads?)")
        # key -> (state, its address): the states stay alive while the watcher reads them
        self._watched: dict[object, tuple[SkvmVcpu, int]] = {}
        # A VM dropped without close() must not leave the thread reading freed states: the
        # finalizer holds them until it has stopped the watcher.
        self._stop = weakref.finalize(self, _stop_watcher, native.shim, self._ppi, self._watched)

    def register(self, key: object, state: SkvmVcpu) -> None:
        """Watch a vCPU's timers (not loaded yet); its guest timer writes poke the watcher."""
        if self._ppi is None:
            return
        addr = ctypes.addressof(state)
        if not self._fast.skvm_ppi_register(self._ppi, addr):
            raise MemoryError("timer PPI watcher: no room for another vCPU")
        self._watched[key] = (state, addr)

    def load(self, key: object, masked: list[bool] | None = None) -> None:
        """The vCPU's timers are live in the hardware from now on (vcpu_load), with the PPI of
        each timer masked as ``masked`` says (set_masked for both, in the same step)."""
        addr = self._addr(key)
        if addr is not None:
            bits = -1 if masked is None else int(masked[VTIMER]) | int(masked[PTIMER]) << 1
            self._fast.skvm_ppi_load(self._ppi, addr, bits)

    def put(self, key: object) -> None:
        """The vCPU's timers are the hypervisor's again (vcpu_put): no PPI for them. (Unloading
        exposes no deadline: the watcher is never woken for it.)"""
        addr = self._addr(key)
        if addr is not None:
            self._fast.skvm_ppi_put(self._ppi, addr)

    def set_masked(self, key: object, timer: int, masked: bool) -> None:
        """Leave the PPI active (masked) while KVM forwards a high level, or release it."""
        addr = self._addr(key)
        if addr is not None:
            self._fast.skvm_ppi_set_masked(self._ppi, addr, timer, int(masked))

    def rearm(self, key: object) -> None:
        """The hypervisor has handled the last expiry: watch again for the next one."""
        addr = self._addr(key)
        if addr is not None:
            self._fast.skvm_ppi_rearm(self._ppi, addr)

    def take(self, key: object) -> int:
        """The expiries found since the last call, one bit per timer (1 << VTIMER ...). Asked
        after every exit: one field read when there is none."""
        watched = self._watched.get(key)
        if watched is None or not watched[0].ppi_fired:
            return 0
        return self._fast.skvm_ppi_take(watched[1])

    def bg_arm(self, key: object, deadline_ns: int, wake_fd: int) -> None:
        """The vCPU blocks (vcpu_put, blocking): write ``wake_fd`` at ``deadline_ns`` unless
        ``bg_cancel`` comes first. A deadline past 64 bits of ns never falls."""
        addr = self._addr(key)
        if addr is not None and deadline_ns < WATCH_NEVER:
            self._fast.skvm_ppi_bg_arm(self._ppi, addr, max(deadline_ns, 0), wake_fd)

    def bg_cancel(self, key: object) -> None:
        """The vCPU no longer blocks (vcpu_load)."""
        addr = self._addr(key)
        if addr is not None:
            self._fast.skvm_ppi_bg_cancel(self._ppi, addr)

    def bg_take(self, key: object) -> bool:
        """Whether the background timer woke the vCPU since the last call."""
        watched = self._watched.get(key)
        return (watched is not None and bool(watched[0].bg_fired)
                and bool(self._fast.skvm_ppi_bg_take(watched[1])))

    @property
    def bg_fires(self) -> int:
        return self._info(_BG_FIRES)

    def _addr(self, key: object) -> int | None:
        """Where ``key``'s state lies, for the shim; None if unknown or the watcher stopped."""
        watched = self._watched.get(key)
        return None if watched is None or self._ppi is None else watched[1]

    def _info(self, what: int) -> int:
        return 0 if self._ppi is None else self._fast.skvm_ppi_info(self._ppi, what)

    @property
    def fires(self) -> int:
        return self._info(_FIRES)

    @property
    def pokes(self) -> int:
        return self._info(_POKES)

    @property
    def scans(self) -> int:
        return self._info(_SCANS)

    @property
    def wake_at_ns(self) -> int | None:
        """When the watcher's current sleep ends (None: it waits for a poke or a timer write)."""
        wake_at = self._info(_WAKE_AT)
        return None if self._ppi is None or wake_at == WATCH_NEVER else wake_at

    @property
    def native_id(self) -> int:
        """The watcher's host thread id (0 until it runs)."""
        return self._info(_TID)

    def stop(self) -> None:
        """Stop and join the watcher; the vCPUs must no longer run."""
        self._ppi = None
        self._stop()


def _stop_watcher(shim: ctypes.CDLL, ppi: int, watched: dict[object, tuple[SkvmVcpu, int]]
                  ) -> None:
    for state, _ in watched.values():
        state.notify_fd = -1   # before its eventfd closes (and its number can be reused)
    shim.skvm_ppi_free(ppi)
    watched.clear()
