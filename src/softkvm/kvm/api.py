"""The KVM-shaped API: ``Kvm``, ``Vm``, ``Vcpu`` — the only surface the VMM uses.

Counterpart: the ioctls of /dev/kvm, the VM fd and the vCPU fd (Documentation/virt/kvm/api.rst),
methods named after them, constants from ``softkvm.kvm.uapi``. Misuse raises ``KvmError`` with the
errno the ioctl would set; guest behaviour never raises.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from softkvm.arch import psci as P
from softkvm.hw.clock import HostTimers, counter_now
from softkvm.hw.core import Core
from softkvm.hw import native as N
from softkvm.hw.native import Native
from softkvm.hw.pcpu import OwnCpus, PhysCpu
from softkvm.kvm import arm, irq_line, irqchip, one_reg, uapi
from softkvm.kvm.arch_timer import ArchTimers
from softkvm.kvm.coalesced_mmio import CoalescedMmio, CoalescedMmioZone
from softkvm.kvm.published_mmio import PublishedMmio, PublishedRegister
from softkvm.kvm.errors import KvmError
from softkvm.kvm.kvm_run import KvmRun
from softkvm.kvm.trace import Tracer
from softkvm.kvm.stats import StatsRead, VcpuStats, VmStats, read_vcpu_stats, read_vm_stats
from softkvm.kvm.vgic import vgic_irqfd
from softkvm.kvm.vgic.vgic_irqfd import KvmIrqRoutingEntry

# struct kvm_coalesced_mmio_ring, the page Vcpu.coalesced_mmio_ring maps (its core writes it).
KvmCoalescedMmioRing = N.CoalescedMmioRing

SUPPORTED_CAPS = {
    uapi.KVM_CAP_USER_MEMORY: 1,
    uapi.KVM_CAP_COALESCED_MMIO: uapi.KVM_COALESCED_MMIO_PAGE_OFFSET,
    uapi.KVM_CAP_COALESCED_PIO: 1,
    uapi.KVM_CAP_SOFTKVM_PUBLISHED_MMIO: 1,
    uapi.KVM_CAP_ARM_PSCI: 1,
    uapi.KVM_CAP_ARM_PSCI_0_2: 1,
    uapi.KVM_CAP_IMMEDIATE_EXIT: 1,
    uapi.KVM_CAP_ARM_USER_IRQ: 1,
    uapi.KVM_CAP_ARM_INJECT_EXT_DABT: 1,
    uapi.KVM_CAP_IRQFD: 1,
    uapi.KVM_CAP_IRQFD_RESAMPLE: 1,
    uapi.KVM_CAP_NR_VCPUS: 8,
    uapi.KVM_CAP_MAX_VCPUS: uapi.KVM_MAX_VCPUS,
}


class Kvm:
    """/dev/kvm: loads the native shim once per process."""

    def __init__(self) -> None:
        self.native = Native.load()

    def check_extension(self, cap: int) -> int:
        return SUPPORTED_CAPS.get(cap, 0)

    def create_vm(self) -> Vm:
        return Vm(self)


@dataclass(slots=True)
class Memslot:
    slot: int
    guest_phys_addr: int
    memory: mmap.mmap

    @property
    def size(self) -> int:
        return len(self.memory)


class Vm:
    """A VM fd: memory, vCPUs, the irqchip, the shared physical CPU and host timers."""

    def __init__(self, kvm: Kvm) -> None:
        self.kvm = kvm
        self.native = kvm.native
        self.lock = threading.RLock()
        self.hrtimers = HostTimers()
        self.pcpu: PhysCpu | OwnCpus = PhysCpu(self.hrtimers)
        self.pcpu.set_preempt(lambda vcpu: vcpu.core.kick())  # type: ignore[attr-defined]
        # How many host CPUs the vCPU threads may use, as taskset would restrict them (None:
        # all of them). Read at the VM's first KVM_RUN: with more than one, and more than one
        # vCPU, the vCPUs run in parallel when the core can (arm.kvm_vcpu_first_run_init).
        self.host_cpus: int | None = None
        self.peers: object = None  # the parallel cores' table of each other (Core.make_peers)
        self.memslots: dict[int, Memslot] = {}
        self.vcpus: list[Vcpu] = []
        self.stats = VmStats()
        self.tracer = Tracer()  # off until the VMM enables it (--trace)
        self.vgic: object | None = None  # the in-kernel irqchip, when one is created
        self.has_run = False
        self.psci_version = P.VERSION_1_0
        self.cntvoff = counter_now()  # guest virtual time starts near 0 (kvm_timer_vcpu_init)
        self.timers = ArchTimers(self)
        self.coalesced_mmio = CoalescedMmio()
        self.published_mmio = PublishedMmio()
        self.closed = False

    # --- KVM_CHECK_EXTENSION on the VM fd ------------------------------------------------------

    def check_extension(self, cap: int) -> int:
        return self.kvm.check_extension(cap)

    # --- memory -------------------------------------------------------------------------------

    def set_user_memory_region(self, slot: int, guest_phys_addr: int, memory: mmap.mmap) -> None:
        """KVM_SET_USER_MEMORY_REGION. Slots are fixed once vCPUs exist (they map them)."""
        if self.vcpus:
            raise KvmError(errno.EBUSY, "memory regions must be set before vCPUs are created")
        if guest_phys_addr & 0xFFF or len(memory) & 0xFFF or not len(memory):
            raise KvmError(errno.EINVAL, "memory region base and size must be page-aligned and "
                           "non-zero")
        end = guest_phys_addr + len(memory)
        for other in self.memslots.values():
            if other.slot != slot and guest_phys_addr < other.guest_phys_addr + other.size \
                    and other.guest_phys_addr < end:
                raise KvmError(errno.EEXIST, f"memory region {slot} overlaps slot {other.slot}")
        self.memslots[slot] = Memslot(slot, guest_phys_addr, memory)

    def gpa_in_memslot(self, gpa: int) -> bool:
        return any(s.guest_phys_addr <= gpa < s.guest_phys_addr + s.size
                   for s in self.memslots.values())

    def register_coalesced_mmio(self, addr: int, size: int, pio: int = 0) -> None:
        """KVM_REGISTER_COALESCED_MMIO: guest writes wholly inside [addr, addr + size) queue
        in the ring (``Vcpu.coalesced_mmio_ring``) instead of exiting; drain it after every
        KVM_RUN, before handling the exit. Only for registers whose writes may take effect
        late: nothing is delivered before the next exit to userspace."""
        with self.lock:
            self.coalesced_mmio.register(CoalescedMmioZone(addr, size, pio))

    def unregister_coalesced_mmio(self, addr: int, size: int, pio: int = 0) -> None:
        """KVM_UNREGISTER_COALESCED_MMIO: drop the zones that lie inside the range."""
        with self.lock:
            self.coalesced_mmio.unregister(CoalescedMmioZone(addr, size, pio))

    def register_published_mmio(self, addr: int, size: int) -> PublishedRegister:
        """KVM_CAP_SOFTKVM_PUBLISHED_MMIO (softkvm's own): guest loads wholly inside [addr,
        addr + size) read the value last given to the returned register's ``publish`` instead
        of exiting. Only for a register whose reads have no side effect; publish its value
        before the guest runs and again whenever the device state behind it changes."""
        with self.lock:
            return self.published_mmio.register(addr, size)

    def unregister_published_mmio(self, register: PublishedRegister) -> None:
        """Loads of the register's range exit to userspace again."""
        with self.lock:
            self.published_mmio.unregister(register)

    def notify_memory_written(self) -> None:
        """Host wrote guest RAM (image load, DMA): drop translations made from the old bytes."""
        for vcpu in self.vcpus:
            vcpu.pending_tb_flush = True

    # --- vCPUs --------------------------------------------------------------------------------

    def create_vcpu(self, vcpu_id: int) -> Vcpu:
        with self.lock:
            if not self.memslots:
                raise KvmError(errno.EINVAL, "set a memory region before creating vCPUs")
            if any(v.vcpu_id == vcpu_id for v in self.vcpus):
                raise KvmError(errno.EEXIST, f"vCPU {vcpu_id} already exists")
            if not 0 <= vcpu_id < uapi.KVM_MAX_VCPUS:
                raise KvmError(errno.EINVAL, f"vCPU id {vcpu_id} out of range")
            if self.has_run:
                raise KvmError(errno.EBUSY, "cannot add vCPUs after the VM has run")
            if self.vgic is not None:  # KVM refuses once the vGIC is initialised
                self.vgic.kvm_vgic_vcpu_init(vcpu_id)  # type: ignore[attr-defined]
            vcpu = Vcpu(self, vcpu_id)
            self.vcpus.append(vcpu)
            self.timers.vcpu_init(vcpu)
            return vcpu

    def vcpu_by_mpidr(self, mpidr: int) -> Vcpu | None:
        mpidr &= P.MPIDR_HWID_MASK
        return next((v for v in self.vcpus if v.mpidr == mpidr), None)

    # --- devices and interrupts ---------------------------------------------------------------

    def create_device(self, dev_type: int) -> object:
        """KVM_CREATE_DEVICE: the vGIC (KVM_DEV_TYPE_ARM_VGIC_V2 / _V3); set_attr/get_attr/
        has_attr on the result configure it."""
        with self.lock:
            return irqchip.create_vgic_device(self, dev_type)

    def irq_line(self, irq: int, level: int) -> None:
        """KVM_IRQ_LINE with the arm encoding (vcpu2, type, vcpu, id)."""
        irq_line.kvm_vm_ioctl_irq_line(self, irq, bool(level))

    def irqfd(self, fd: int, gsi: int, resamplefd: int | None = None,
              deassign: bool = False) -> None:
        """KVM_IRQFD: eventfd ``fd`` injects GSI ``gsi`` (default routing: SPI 32 + gsi) as an
        edge, or as a level lowered at guest EOI and reported on ``resamplefd``. Accepted before
        the vGIC is initialised and applied then (softkvm.kvm.eventfd)."""
        flags = (uapi.KVM_IRQFD_FLAG_DEASSIGN if deassign else 0) | (
            uapi.KVM_IRQFD_FLAG_RESAMPLE if resamplefd is not None and not deassign else 0)
        vgic_irqfd.kvm_irqfd(self, fd, gsi, flags, resamplefd)

    def set_gsi_routing(self, entries: Sequence[KvmIrqRoutingEntry]) -> None:
        """KVM_SET_GSI_ROUTING with irqchip entries (irqchip 0, pin -> SPI 32 + pin)."""
        vgic_irqfd.kvm_set_gsi_routing(self, entries)

    def irqfd_vgic_ready(self) -> None:
        """The vGIC is initialised: install irqfds assigned before (idempotent)."""
        vgic_irqfd.kvm_irqfd_vgic_ready(self)

    # --- KVM_GET_STATS_FD ----------------------------------------------------------------------

    def read_stats(self) -> StatsRead:
        """Read the VM's stats fd: any thread, any time, no lock (the counters are ints)."""
        cores = [vcpu.core.state for vcpu in self.vcpus]
        tlb = sum(state.n_bcast_tlb for state in cores)  # one request each, always carried out
        return read_vm_stats(self.stats, {
            "pcpu_switches": self.pcpu.switches, "published_mmio_reads": self.published_mmio.reads,
            "remote_tlb_flush": tlb, "remote_tlb_flush_requests": tlb,
            "remote_tlb_page_flush": sum(state.n_bcast_tlbi_va for state in cores),
            "remote_tb_flush": sum(state.n_bcast_all_code for state in cores),
            "remote_tb_page_flush": sum(state.n_bcast_pages for state in cores)})

    # --- lifetime -----------------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Stop every vCPU (as if signalled), wait for them to leave KVM_RUN, free the cores."""
        if self.closed:
            return
        self.closed = True
        vgic_irqfd.kvm_irqfd_release(self)
        for vcpu in self.vcpus:
            vcpu.interrupt()
        for vcpu in self.vcpus:
            if not vcpu.wait_not_running(timeout):
                raise KvmError(errno.EBUSY, f"vCPU {vcpu.vcpu_id} is still running; stop its "
                               "thread before closing the VM")
        self.timers.stop()
        self.hrtimers.stop()
        for vcpu in self.vcpus:
            vcpu.core.close()
            vcpu.close_wake_fd()


class Vcpu:
    """A vCPU fd. ``run()`` is KVM_RUN; call it from one thread only (as with KVM)."""

    def __init__(self, vm: Vm, vcpu_id: int) -> None:
        self.vm = vm
        self.vcpu_id = vcpu_id
        self.mpidr = arm.reset_mpidr(vcpu_id)
        regions = [(s.guest_phys_addr, s.memory) for s in vm.memslots.values()]
        self.core = Core(vm.native, regions, self.mpidr)
        self.core.on_broadcast = lambda core, tlbi, code: arm.broadcast_flush(self, tlbi, code)
        vm.coalesced_mmio.attach(self.core)
        vm.published_mmio.attach(self.core, vcpu_id)
        self.run_struct = KvmRun()
        self.stats = VcpuStats()
        self.tracer = vm.tracer  # one attribute away from every run-loop trace site
        # Where a blocked vCPU sleeps (kvm_vcpu_block's rcuwait): any thread, and the native
        # timer watcher without the GIL, wakes it with a write.
        self.wake_fd = os.eventfd(0, os.EFD_CLOEXEC)
        self.close_wake_fd = weakref.finalize(self, os.close, self.wake_fd)
        self.requests: set[str] = set()
        self.initialized = False
        self.features = 0
        self.power_off = False
        self.in_guest = False
        self.blocked = False
        self.signal_pending = False
        self.reset_state: tuple[int, int] | None = None
        self.mmio_needed: object | None = None
        self.pending_sea = False
        self.irq_lines = [False, False]  # KVM_ARM_IRQ_CPU_IRQ / _FIQ (userspace irqchip)
        self.pending_tlb_flush = False
        self.pending_tb_flush = True
        self.pending_code: set[int] = set()  # guest pages (PA) whose translations to drop
        self.has_run_once = False
        self._run_lock = threading.Lock()

    # --- KVM_ARM_VCPU_INIT --------------------------------------------------------------------

    def arm_vcpu_init(self, target: int = uapi.KVM_ARM_TARGET_GENERIC_V8,
                      features: int = 1 << uapi.KVM_ARM_VCPU_PSCI_0_2) -> None:
        arm.kvm_arch_vcpu_ioctl_vcpu_init(self, target, features)

    # --- KVM_RUN ------------------------------------------------------------------------------

    def run(self) -> KvmRun:
        # Held for the whole KVM_RUN, as KVM holds vcpu->mutex: a second caller gets EBUSY.
        if not self._run_lock.acquire(blocking=False):
            raise KvmError(errno.EBUSY, f"vCPU {self.vcpu_id} is already running on another "
                           "thread")
        try:
            run = arm.kvm_arch_vcpu_ioctl_run(self)
            if self.tracer.on:  # kvm_vcpu_ioctl: trace_kvm_userspace_exit(exit_reason, r)
                self.tracer.emit("kvm_userspace_exit", self.vcpu_id,
                                 reason=self.run_struct.exit_name, errno=-self.run_struct.ret)
            return run
        finally:
            self._run_lock.release()

    def wait_not_running(self, timeout: float) -> bool:
        if not self._run_lock.acquire(timeout=timeout):
            return False
        self._run_lock.release()
        return True

    @property
    def coalesced_mmio_ring(self) -> KvmCoalescedMmioRing:
        """The page at KVM_COALESCED_MMIO_PAGE_OFFSET of the vCPU mapping: the VM's one ring
        (``first`` is the consumer's, ``last`` the producer's index)."""
        return self.vm.coalesced_mmio.ring

    @property
    def immediate_exit(self) -> bool:
        return self.run_struct.immediate_exit

    @immediate_exit.setter
    def immediate_exit(self, value: bool) -> None:
        self.run_struct.immediate_exit = value

    def kick(self) -> None:
        """KVM_REQ_IRQ_PENDING + kvm_vcpu_kick (what the vGIC calls after queueing)."""
        arm.kvm_make_request(self, arm.REQ_IRQ_PENDING)
        arm.kvm_vcpu_kick(self)

    def interrupt(self) -> None:
        """What a VMM does with pthread_kill(SIG_IPI): KVM_RUN returns with KVM_EXIT_INTR."""
        self.signal_pending = True
        arm.kvm_vcpu_kick(self)

    def register_published_mmio(self, addr: int, size: int) -> PublishedRegister:
        """KVM_CAP_SOFTKVM_PUBLISHED_MMIO for a register banked per vCPU (softkvm's own): as
        ``Vm.register_published_mmio``, but only this vCPU's loads read it, and it starts
        withdrawn (its loads exit) until its first ``publish``. For a register whose reads have
        a side effect in some states only (a GIC CPU interface's IAR, which acknowledges):
        publish while a read has none, withdraw before it may."""
        with self.vm.lock:
            return self.vm.published_mmio.register(addr, size, vcpu=self.vcpu_id)

    # --- KVM_GET_STATS_FD ----------------------------------------------------------------------

    def read_stats(self) -> StatsRead:
        """Read the vCPU's stats fd: any thread, even while it runs; the core's own counters
        are read here rather than copied at every exit."""
        core = self.core
        state = core.state
        return read_vcpu_stats(self.stats, {
            "core_slices": core.stats.slices, "core_kicks": core.stats.kicks,
            "sysreg_emulated": state.n_sysreg_py, "timer_sysreg_accesses": state.n_sysreg_timer,
            "vcpu_if_accesses": self.stats.vcpu_if_accesses + state.n_gicv_spurious,
        }, dict(core.stats.reflected))

    # --- registers and state ------------------------------------------------------------------

    def get_one_reg(self, reg_id: int) -> int:
        return one_reg.get(self, reg_id)

    def set_one_reg(self, reg_id: int, value: int) -> None:
        one_reg.set_(self, reg_id, value)

    def get_mp_state(self) -> int:
        return uapi.KVM_MP_STATE_STOPPED if self.power_off else uapi.KVM_MP_STATE_RUNNABLE

    def set_mp_state(self, state: int) -> None:
        if state not in (uapi.KVM_MP_STATE_STOPPED, uapi.KVM_MP_STATE_RUNNABLE):
            raise KvmError(errno.EINVAL, f"unsupported mp_state {state}")
        self.power_off = state == uapi.KVM_MP_STATE_STOPPED
        if not self.power_off:
            arm.kvm_vcpu_kick(self)

    # --- KVM_{SET,GET,HAS}_DEVICE_ATTR on the vCPU fd -----------------------------------------

    def set_device_attr(self, group: int, attr: int, value: int) -> None:
        if group == uapi.KVM_ARM_VCPU_TIMER_CTRL:
            self.vm.timers.set_irq_attr(self, attr, value)
            return
        raise KvmError(errno.ENXIO, f"unknown vCPU attribute group {group}")

    def get_device_attr(self, group: int, attr: int) -> int:
        if group == uapi.KVM_ARM_VCPU_TIMER_CTRL:
            return self.vm.timers.get_irq_attr(attr)
        raise KvmError(errno.ENXIO, f"unknown vCPU attribute group {group}")

    def has_device_attr(self, group: int, attr: int) -> bool:
        return group == uapi.KVM_ARM_VCPU_TIMER_CTRL and attr in (
            uapi.KVM_ARM_VCPU_TIMER_IRQ_VTIMER, uapi.KVM_ARM_VCPU_TIMER_IRQ_PTIMER)

    def set_vcpu_events(self, *, ext_dabt_pending: bool = False) -> None:
        """KVM_SET_VCPU_EVENTS: the VMM's answer to an access no device claims (an SEA)."""
        self.pending_sea = ext_dabt_pending
