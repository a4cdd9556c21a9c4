"""irqfd / resamplefd on a real VM with the in-kernel vGICv2 and vGICv3.

Host-side checks read the vGIC's interrupt state directly; the EOI-driven ones run a small guest
(GIC set up, then: wfi; acknowledge; EOI; report the INTID with an MMIO write the test sees as
KVM_EXIT_MMIO). Every wait has a generous deadline and no assertion depends on timing.
"""

from __future__ import annotations

import errno
import os
import select
import threading
import time

import pytest

from softkvm.kvm import irqchip, uapi
from softkvm.kvm.errors import KvmError
from softkvm.kvm.eventfd import IrqfdState, eventfd_ident, poll_now
from softkvm.kvm.vgic import vgic_irqfd
from softkvm.kvm.vgic.vgic_irqfd import KvmIrqRoutingEntry
from softkvm.vmm.devices.eventfd_device import EventfdDevice
from tests.support.machine import CODE, load, make_vm, start_at

V2, V3 = uapi.KVM_DEV_TYPE_ARM_VGIC_V2, uapi.KVM_DEV_TYPE_ARM_VGIC_V3
MODELS = pytest.mark.parametrize("model", [V2, V3], ids=["v2", "v3"])
DIST, CPU_IF, REDIST = 0x08000000, 0x08010000, 0x080A0000
NR_IRQS = 288
REPORT = 0x0A000000          # guest: +0 "set up", +4 "took INTID <data>"
DEADLINE = 60.0              # seconds; only ever reached when a test fails
HAS_INIT_HOOK = hasattr(irqchip.VgicHost, "vgic_initialized")


# --- machines ------------------------------------------------------------------------------------


def make_gic_vm(model, init=True, nr_irqs=NR_IRQS):
    vm, vcpus, ram = make_vm(1)
    dev = vm.create_device(model)
    group = uapi.KVM_DEV_ARM_VGIC_GRP_ADDR
    if model == V2:
        dev.set_attr(group, uapi.KVM_VGIC_V2_ADDR_TYPE_DIST, DIST)
        dev.set_attr(group, uapi.KVM_VGIC_V2_ADDR_TYPE_CPU, CPU_IF)
    else:
        dev.set_attr(group, uapi.KVM_VGIC_V3_ADDR_TYPE_DIST, DIST)
        dev.set_attr(group, uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST, REDIST)
    if nr_irqs:
        dev.set_attr(uapi.KVM_DEV_ARM_VGIC_GRP_NR_IRQS, 0, nr_irqs)
    if init:
        ctrl_init(vm, dev)
    return vm, vcpus[0], ram, dev


def ctrl_init(vm, dev, explicit_ready=True):
    dev.set_attr(uapi.KVM_DEV_ARM_VGIC_GRP_CTRL, uapi.KVM_DEV_ARM_VGIC_CTRL_INIT, 0)
    if explicit_ready:
        vm.irqfd_vgic_ready()   # what the VMM calls until the vGIC's init hook does it


@pytest.fixture
def closing():
    """Close whatever the test registers (VMs, devices, fds), in reverse order."""
    things = []
    yield things.append
    for thing in reversed(things):
        if isinstance(thing, int):
            try:
                os.close(thing)
            except OSError:
                pass
        else:
            thing.close()


def eventfd(closing, value=0):
    fd = os.eventfd(value, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    closing(fd)
    return fd


def irqfds(vm):
    return vgic_irqfd.vm_irqfd(vm, create=False).irqfds


def spi(vm, gsi):
    return vm.vgic.get_irq(None, 32 + gsi)


def wait_until(predicate, timeout=DEADLINE):
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.002)
    return True


def expect_errno(code, fn, *args, **kwargs):
    with pytest.raises(KvmError) as info:
        fn(*args, **kwargs)
    assert info.value.errno == code, str(info.value)
    return info.value


def configure_level(dev, intid):
    """GICD_ICFGR through the device API (as a restored VM would): SPI ``intid`` is level."""
    group, offset = uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS, 0xC00 + 4 * (intid // 16)
    value = dev.get_attr(group, offset)
    dev.set_attr(group, offset, value & ~(1 << (2 * (intid % 16) + 1)))


def _readable(fd):
    return bool(poll_now(fd) & select.POLLIN)


def open_fds():
    """The open descriptors (not counting the one listdir used for the listing)."""
    return {name for name in os.listdir("/proc/self/fd") if _is_open(int(name))}


def _is_open(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def ack_eoi(vm, gsi):
    """What the vGIC does at a guest EOI of SPI 32 + gsi (default routing): run its notifiers."""
    for notifier in list(vm.vgic.ack_notifiers):
        notifier(gsi)


# --- the guest -----------------------------------------------------------------------------------


def guest_source(model, spis):
    """Set up the GIC for ``spis`` ({intid: level?}) on vCPU 0, report "ready", then forever:
    wfi; acknowledge; count in x20; EOI; report the INTID."""
    src = [f"ldr x1, ={DIST}", f"ldr x6, ={REPORT}", "mov x20, #0"]
    for intid, level in spis.items():
        src += [f"ldr w2, ={1 << intid % 32}", f"mov x7, #{0x100 + 4 * (intid // 32)}",
                "str w2, [x1, x7]",                                       # ISENABLER
                f"mov x7, #{0xC00 + 4 * (intid // 16)}", "ldr w2, [x1, x7]",
                f"ldr w8, ={1 << (2 * (intid % 16) + 1)}",
                "bic w2, w2, w8" if level else "orr w2, w2, w8", "str w2, [x1, x7]"]  # ICFGR
        if model == V2:
            src += [f"mov x7, #{0x800 + intid}", "mov w2, #1", "strb w2, [x1, x7]"]  # ITARGETSR
        else:
            src += [f"mov x7, #{0x6000 + 8 * intid}", "str xzr, [x1, x7]"]           # IROUTER
    if model == V2:
        src += ["mov w2, #1", "str w2, [x1]",                         # GICD_CTLR.Enable
                f"ldr x3, ={CPU_IF}", "mov w2, #0xff", "str w2, [x3, #4]",  # GICC_PMR
                "mov w2, #1", "str w2, [x3]"]                         # GICC_CTLR.EnableGrp0
        ack, eoi = "ldr w4, [x3, #0xc]", "str w4, [x3, #0x10]"       # GICC_IAR, GICC_EOIR
    else:
        src += ["mov w2, #0x12", "str w2, [x1]",                      # GICD_CTLR: ARE|EnableGrp1
                "mov x2, #0xff", "msr S3_0_C4_C6_0, x2",              # ICC_PMR_EL1
                "mov x2, #1", "msr S3_0_C12_C12_7, x2", "isb"]        # ICC_IGRPEN1_EL1
        ack, eoi = "mrs x4, S3_0_C12_C12_0", "msr S3_0_C12_C12_1, x4"  # ICC_IAR1/EOIR1_EL1
    src += ["str wzr, [x6]",
            "1: wfi", ack, "and w5, w4, #0x3ff", "cmp w5, #1020", "b.hs 1b",
            "add x20, x20, #1", eoi, "str w5, [x6, #4]", "b 1b"]
    return "\n".join(src)


class Guest:
    """Drives vCPU 0 from the test thread, one report at a time."""

    def __init__(self, vm, vcpu, ram, model, spis):
        self.vm, self.vcpu = vm, vcpu
        load(vm, ram, CODE, guest_source(model, spis))
        start_at(vcpu, CODE)
        assert self.next_report() == ("ready", 0)

    def next_report(self, timeout=DEADLINE):
        """Run until the guest reports: ("ready", 0) / ("irq", intid); ("intr", None) when
        the run was interrupted (the deadline)."""
        watchdog = threading.Timer(timeout, self.vcpu.interrupt)
        watchdog.start()
        try:
            run = self.vcpu.run()
        finally:
            watchdog.cancel()
        if run.exit_reason == uapi.KVM_EXIT_INTR:
            return "intr", None
        assert run.exit_reason == uapi.KVM_EXIT_MMIO and run.mmio.is_write, run.exit_name
        value = int.from_bytes(run.mmio.data[:4], "little")
        return ("ready" if run.mmio.phys_addr == REPORT else "irq"), value

    def take(self):
        kind, intid = self.next_report()
        assert kind == "irq", "the guest saw no interrupt before the deadline"
        return intid

    def assert_quiet(self, seconds=0.3):
        """Nothing more is delivered (checked for a short while, so only a bug can fail it)."""
        assert self.next_report(timeout=seconds) == ("intr", None)

    @property
    def acked(self):
        return self.vcpu.core.get_x(20)


# --- capabilities and errors ---------------------------------------------------------------------


def test_capabilities(closing):
    vm, *_ = make_vm(1)
    closing(vm)
    assert vm.check_extension(uapi.KVM_CAP_IRQFD) == 1
    assert vm.check_extension(uapi.KVM_CAP_IRQFD_RESAMPLE) == 1


def test_no_irqchip_is_eagain(closing):
    vm, *_ = make_vm(1)     # a userspace-irqchip VM: no vGIC at all
    closing(vm)
    err = expect_errno(errno.EAGAIN, vm.irqfd, eventfd(closing), 0)
    assert "in-kernel irqchip" in str(err)


@MODELS
def test_assign_errors(model, closing):
    vm, _vcpu, _ram, _dev = make_gic_vm(model)
    closing(vm)
    fd, rfd = eventfd(closing), eventfd(closing)
    expect_errno(errno.EINVAL, vgic_irqfd.kvm_irqfd, vm, fd, 0, 1 << 2)        # unknown flag
    expect_errno(errno.EINVAL, vm.irqfd, fd, NR_IRQS - 32)                     # beyond nr_spis
    expect_errno(errno.EINVAL, vm.irqfd, fd, -1)
    expect_errno(errno.EBADF, vm.irqfd, 9999, 0)
    read_end, write_end = os.pipe()
    closing(read_end)
    closing(write_end)
    expect_errno(errno.EINVAL, vm.irqfd, read_end, 0)                          # not an eventfd
    expect_errno(errno.EBADF, vm.irqfd, fd, 0, resamplefd=9999)
    expect_errno(errno.EINVAL, vm.irqfd, fd, 0, resamplefd=read_end)
    vm.irqfd(fd, NR_IRQS - 33)                                                 # the last SPI
    expect_errno(errno.EBUSY, vm.irqfd, fd, NR_IRQS - 33)
    expect_errno(errno.EBUSY, vm.irqfd, fd, 3, resamplefd=rfd)                 # any GSI
    expect_errno(errno.EBADF, vm.irqfd, 9999, 0, deassign=True)
    vm.irqfd(rfd, 3, deassign=True)          # not assigned: nothing to do, as KVM
    assert [i.fd for i in irqfds(vm).assigned()] == [fd]


def test_duplicate_descriptor_of_an_assigned_eventfd_is_ebusy(closing):
    vm, *_ = make_gic_vm(V3)
    closing(vm)
    fd = eventfd(closing)
    if eventfd_ident(fd, "test") is None:
        pytest.skip("this kernel does not report eventfd-id")
    other = os.dup(fd)
    closing(other)
    vm.irqfd(fd, 1)
    expect_errno(errno.EBUSY, vm.irqfd, other, 2)      # KVM compares eventfd contexts
    vm.irqfd(other, 1, deassign=True)                  # ... for deassign too
    assert irqfds(vm).assigned() == []



def test_gsi_bound_before_init(closing):
    vm, _vcpu, _ram, _dev = make_gic_vm(V3, init=False, nr_irqs=0)
    closing(vm)
    fd = eventfd(closing)
    expect_errno(errno.EINVAL, vm.irqfd, fd, 960)      # no vGIC can have that many SPIs
    vm.irqfd(fd, 959)                                  # NR_IRQS may still be set to 992
    vm2, _vcpu2, _ram2, _dev2 = make_gic_vm(V3, init=False)
    closing(vm2)
    expect_errno(errno.EINVAL, vm2.irqfd, eventfd(closing), NR_IRQS - 32)   # NR_IRQS is known


# --- edge injection (host side) ------------------------------------------------------------------


@MODELS
def test_signal_injects_an_edge_without_any_vcpu_exit(model, closing):
    vm, _vcpu, _ram, _dev = make_gic_vm(model)
    closing(vm)
    fd = eventfd(closing)
    vm.irqfd(fd, 7)
    assert not spi(vm, 7).pending_latch
    os.eventfd_write(fd, 1)
    assert wait_until(lambda: spi(vm, 7).pending_latch)
    assert not spi(vm, 7).line_level                   # a pulse: 1 then 0 on an edge SPI
    assert wait_until(lambda: irqfds(vm).stats.inject == 1)


@MODELS
def test_assign_time_poll_injects_what_is_already_signalled(model, closing):
    """Writes before the assignment are one injection: the counter is consumed at once."""
    vm, _vcpu, _ram, _dev = make_gic_vm(model)
    closing(vm)
    fd = eventfd(closing)
    for _ in range(5):
        os.eventfd_write(fd, 1)
    vm.irqfd(fd, 2)
    assert spi(vm, 2).pending_latch                    # synchronously, at assignment
    assert (irqfds(vm).stats.inject, irqfds(vm).stats.coalesced) == (1, 4)
    assert not _readable(fd)


# --- resample (host side) ------------------------------------------------------------------------


@MODELS
def test_resample_lowers_the_line_then_signals_every_resamplefd(model, closing):
    vm, _vcpu, _ram, dev = make_gic_vm(model)
    closing(vm)
    configure_level(dev, 32 + 4)
    fd_a, rfd_a, fd_b, rfd_b = (eventfd(closing) for _ in range(4))
    vm.irqfd(fd_a, 4, resamplefd=rfd_a)
    vm.irqfd(fd_b, 4, resamplefd=rfd_b)                # a shared level line
    assert irqfds(vm).resampler_gsis() == [4] and len(vm.vgic.ack_notifiers) == 1
    os.eventfd_write(fd_a, 1)
    assert wait_until(lambda: spi(vm, 4).line_level)   # raised, and left high
    seen = []

    def on_ack(_gsi):   # runs after ours: the line must already be low when fds are signalled
        seen.append((spi(vm, 4).line_level, _readable(rfd_a), _readable(rfd_b)))

    vm.vgic.register_ack_notifier(on_ack)
    ack_eoi(vm, 4)
    assert seen == [(False, True, True)]
    assert os.eventfd_read(rfd_a) == 1 and os.eventfd_read(rfd_b) == 1
    vm.vgic.unregister_ack_notifier(on_ack)
    ack_eoi(vm, 5)                                     # another GSI: not ours
    assert not _readable(rfd_a) and not _readable(rfd_b)
    stats = irqfds(vm).stats
    assert (stats.acked, stats.resample) == (1, 2)


@MODELS
def test_last_resample_irqfd_out_unregisters_and_lowers_the_line(model, closing):
    vm, _vcpu, _ram, dev = make_gic_vm(model)
    closing(vm)
    configure_level(dev, 32 + 4)
    fd_a, rfd_a, fd_b, rfd_b = (eventfd(closing) for _ in range(4))
    before = open_fds()
    vm.irqfd(fd_a, 4, resamplefd=rfd_a)
    vm.irqfd(fd_b, 4, resamplefd=rfd_b)
    os.eventfd_write(fd_b, 1)
    assert wait_until(lambda: spi(vm, 4).line_level)
    vm.irqfd(fd_a, 4, deassign=True)
    assert spi(vm, 4).line_level and irqfds(vm).resampler_gsis() == [4]
    vm.irqfd(fd_b, 4, deassign=True)
    assert not spi(vm, 4).line_level
    assert irqfds(vm).resampler_gsis() == [] and vm.vgic.ack_notifiers == []
    assert len(open_fds() - before) == 1               # the poller's wake eventfd: dups closed
    ack_eoi(vm, 4)
    assert not _readable(rfd_a) and not _readable(rfd_b)


# --- deassign, close, release -------------------------------------------------------------------


@MODELS
def test_deassign_stops_injection_and_drains_the_counter(model, closing):
    vm, _vcpu, _ram, _dev = make_gic_vm(model)
    closing(vm)
    fd = eventfd(closing)
    vm.irqfd(fd, 9)
    os.eventfd_write(fd, 1)
    assert wait_until(lambda: irqfds(vm).stats.inject == 1)
    os.eventfd_write(fd, 1)
    vm.irqfd(fd, 9, deassign=True)                     # in-flight work flushed or drained
    injected = irqfds(vm).stats.inject
    spi(vm, 9).pending_latch = False
    os.eventfd_write(fd, 3)                            # nobody listens any more
    time.sleep(0.05)
    assert os.eventfd_read(fd) == 3 and not spi(vm, 9).pending_latch
    assert irqfds(vm).stats.inject == injected and irqfds(vm).assigned() == []
    vm.irqfd(fd, 9)                                    # and it can be assigned again
    assert irqfds(vm).assigned()[0].state is IrqfdState.ACTIVE


@MODELS
def test_eventfd_closed_while_assigned_is_detached(model, closing):
    vm, _vcpu, _ram, dev = make_gic_vm(model)
    closing(vm)
    configure_level(dev, 32 + 2)
    keep, doomed, doomed_rfd = eventfd(closing), eventfd(closing), eventfd(closing)
    vm.irqfd(keep, 1)
    vm.irqfd(doomed, 2, resamplefd=doomed_rfd)
    os.eventfd_write(doomed, 1)
    assert wait_until(lambda: spi(vm, 2).line_level)
    os.close(doomed)                                   # the owner closes it, still assigned
    os.eventfd_write(keep, 1)                          # the poller's next pass notices
    assert wait_until(lambda: [i.fd for i in irqfds(vm).assigned()] == [keep])
    assert irqfds(vm).stats.detached == 1 and irqfds(vm).error is None
    assert irqfds(vm).resampler_gsis() == []
    assert wait_until(lambda: not spi(vm, 2).line_level)   # the last one lowers the line
    os.eventfd_write(keep, 1)                          # the poller lives on
    assert wait_until(lambda: irqfds(vm).stats.inject == 3)
    expect_errno(errno.EBADF, vm.irqfd, doomed, 2, deassign=True)


def test_number_reused_by_a_new_eventfd_replaces_the_stale_registration(closing):
    vm, *_ = make_gic_vm(V3)
    closing(vm)
    old = os.eventfd(0, os.EFD_NONBLOCK)
    if eventfd_ident(old, "test") is None:
        os.close(old)
        pytest.skip("this kernel does not report eventfd-id")
    vm.irqfd(old, 1)
    os.close(old)                                      # never deassigned ...
    new = eventfd(closing)                             # ... and the number comes back
    assert new == old
    vm.irqfd(new, 2)                                   # not EBUSY: the old one is gone
    assert [(i.fd, i.gsi) for i in irqfds(vm).assigned()] == [(new, 2)]
    assert irqfds(vm).stats.detached == 1
    os.eventfd_write(new, 1)
    assert wait_until(lambda: spi(vm, 2).pending_latch) and not spi(vm, 1).pending_latch


def test_number_reused_by_another_file_is_never_read(closing):
    """The owner closes an assigned irqfd and a pipe gets its number: the poller sees the
    pipe readable, finds that the number no longer names our eventfd, detaches, reads nothing."""
    vm, *_ = make_gic_vm(V3)
    closing(vm)
    keep = eventfd(closing)
    vm.irqfd(keep, 1)
    doomed = os.eventfd(0, os.EFD_NONBLOCK)
    vm.irqfd(doomed, 2)
    os.close(doomed)
    read_end, write_end = os.pipe()
    closing(read_end)
    closing(write_end)
    assert read_end == doomed
    os.write(write_end, b"not yours")
    os.eventfd_write(keep, 1)                          # wake the poller for another pass
    assert wait_until(lambda: [i.fd for i in irqfds(vm).assigned()] == [keep])
    assert os.read(read_end, 100) == b"not yours"
    assert irqfds(vm).stats.detached == 1 and not spi(vm, 2).pending_latch


@MODELS
def test_close_stops_the_poller_and_closes_every_descriptor(model, closing):
    vm, _vcpu, _ram, _dev = make_gic_vm(model)
    fd, rfd, other = eventfd(closing), eventfd(closing), eventfd(closing)
    before = open_fds()
    vm.irqfd(fd, 1, resamplefd=rfd)
    vm.irqfd(other, 2)
    poller = vgic_irqfd.irqfd_poller(vm)
    assert poller is not None and poller.is_alive()
    assert len(open_fds() - before) == 4               # wake eventfd, 2 irqfd + 1 resamplefd dups
    vm.close()
    assert not poller.is_alive()
    assert irqfds(vm).assigned() == [] and open_fds() <= before   # (the VM closes more of its own)
    expect_errno(errno.EBADF, vm.irqfd, fd, 1)         # the VM is gone


# --- before the vGIC is initialised ------------------------------------------------------------


@MODELS
def test_registrations_and_signals_before_init_are_delivered_at_init(model, closing):
    vm, _vcpu, _ram, dev = make_gic_vm(model, init=False)
    closing(vm)
    edge, level, rfd = eventfd(closing), eventfd(closing), eventfd(closing)
    vm.irqfd(edge, 5)                                  # KVM: EAGAIN; softkvm keeps it
    vm.irqfd(level, 6, resamplefd=rfd)
    assert {i.state for i in irqfds(vm).assigned()} == {IrqfdState.PENDING}
    os.eventfd_write(edge, 1)
    os.eventfd_write(level, 1)
    time.sleep(0.05)                                   # the poller sees them, and waits
    assert not vm.vgic.initialized                     # no lazy GICv2 init through an irqfd
    assert _readable(edge) and _readable(level)        # the events wait in the counters
    ctrl_init(vm, dev)
    assert spi(vm, 5).pending_latch                    # the edge
    assert spi(vm, 6).pending_latch or spi(vm, 6).line_level   # the level (SPI still edge)
    assert {i.state for i in irqfds(vm).assigned()} == {IrqfdState.ACTIVE}
    assert irqfds(vm).resampler_gsis() == [6]


@MODELS
def test_poller_installs_when_a_pending_eventfd_fires_after_init(model, closing):
    """Without the init hook and without irqfd_vgic_ready(), a signal after init still gets
    through: the poller watches pending eventfds and checks for initialisation."""
    vm, _vcpu, _ram, dev = make_gic_vm(model, init=False)
    closing(vm)
    fd = eventfd(closing)
    vm.irqfd(fd, 3)
    ctrl_init(vm, dev, explicit_ready=False)
    os.eventfd_write(fd, 1)
    assert wait_until(lambda: spi(vm, 3).pending_latch)


@pytest.mark.skipif(not HAS_INIT_HOOK, reason="the vGIC's init hook is not integrated yet")
@MODELS
def test_vgic_init_hook_installs_pending_irqfds(model, closing):
    vm, _vcpu, _ram, dev = make_gic_vm(model, init=False)
    closing(vm)
    fd = eventfd(closing, value=1)
    vm.irqfd(fd, 3)
    ctrl_init(vm, dev, explicit_ready=False)
    assert spi(vm, 3).pending_latch


# --- routing --------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", [
    KvmIrqRoutingEntry(gsi=1, pin=988),
    KvmIrqRoutingEntry(gsi=1, irqchip=1, pin=0),
    KvmIrqRoutingEntry(gsi=1, type=vgic_irqfd.KVM_IRQ_ROUTING_MSI),
    KvmIrqRoutingEntry(gsi=1, type=7),
    KvmIrqRoutingEntry(gsi=4096, pin=0),
    KvmIrqRoutingEntry(gsi=1, pin=0, flags=1),
])
def test_routing_entry_errors(entry, closing):
    vm, *_ = make_gic_vm(V3)
    closing(vm)
    expect_errno(errno.EINVAL, vm.set_gsi_routing, [entry])
    expect_errno(errno.EINVAL, vm.set_gsi_routing, [KvmIrqRoutingEntry(gsi=2, pin=1),
                                                    KvmIrqRoutingEntry(gsi=2, pin=3)])


@MODELS
def test_routed_gsi_injects_its_pin_and_eoi_maps_back(model, closing):
    vm, _vcpu, _ram, _dev = make_gic_vm(model)
    closing(vm)
    vm.set_gsi_routing([KvmIrqRoutingEntry(gsi=100, pin=3), KvmIrqRoutingEntry(gsi=101, pin=300)])
    fd, rfd = eventfd(closing), eventfd(closing)
    expect_errno(errno.EINVAL, vm.irqfd, fd, 3)        # no route any more
    expect_errno(errno.EINVAL, vm.irqfd, fd, 101)      # routed beyond nr_spis
    vm.irqfd(fd, 100, resamplefd=rfd)
    os.eventfd_write(fd, 1)
    assert wait_until(lambda: spi(vm, 3).pending_latch or spi(vm, 3).line_level)
    ack_eoi(vm, 3)                                     # pin 3 -> GSI 100's resampler
    assert _readable(rfd)


# --- concurrency ---------------------------------------------------------------------------------


def test_concurrent_signals_acks_and_reassignment(closing):
    """Writers, an EOI storm and assign/deassign churn at once: no deadlock, no lost count."""
    vm, _vcpu, _ram, _dev = make_gic_vm(V3)
    closing(vm)
    writers, per_writer = 4, 200
    fds = [eventfd(closing) for _ in range(writers)]
    for gsi, fd in enumerate(fds):
        vm.irqfd(fd, gsi)
    churn_fd, churn_rfd = eventfd(closing), eventfd(closing)
    stop = threading.Event()

    def write(fd):
        for _ in range(per_writer):
            os.eventfd_write(fd, 1)

    def churn():
        while not stop.is_set():
            vm.irqfd(churn_fd, 20, resamplefd=churn_rfd)
            vm.irqfd(churn_fd, 20, deassign=True)

    def acks():
        while not stop.is_set():
            ack_eoi(vm, 20)

    threads = [threading.Thread(target=write, args=(fd,)) for fd in fds]
    threads += [threading.Thread(target=churn), threading.Thread(target=acks)]
    for thread in threads:
        thread.start()
    for thread in threads[:writers]:
        thread.join(DEADLINE)
    total = writers * per_writer
    assert wait_until(lambda: irqfds(vm).stats.inject + irqfds(vm).stats.coalesced == total)
    stop.set()
    for thread in threads[writers:]:
        thread.join(DEADLINE)
        assert not thread.is_alive()
    assert irqfds(vm).error is None and vgic_irqfd.irqfd_poller(vm).is_alive()
    assert all(spi(vm, gsi).pending_latch for gsi in range(writers))


# --- guests: every event seen -------------------------------------------------------------------


@MODELS
def test_edge_each_signal_is_one_delivery_with_a_handshake(model, closing):
    vm, vcpu, ram, _dev = make_gic_vm(model)
    closing(vm)
    gsi, n = 10, 20
    device = EventfdDevice.create(window=1)            # next event only after the guest's EOI
    closing(device)
    vm.irqfd(device.irqfd, gsi)
    guest = Guest(vm, vcpu, ram, model, {32 + gsi: False})
    device.start()
    device.raise_events(n)
    for _ in range(n):
        assert guest.take() == 32 + gsi
        device.ack()                                   # the guest EOIed before reporting
    assert device.wait_idle(DEADLINE) and device.stats.signals == n
    assert guest.acked == n
    stats = irqfds(vm).stats
    assert (stats.inject, stats.coalesced) == (n, 0)
    guest.assert_quiet()


@MODELS
def test_edge_burst_while_the_guest_is_out_coalesces(model, closing):
    """N writes land while the vCPU is in userspace: the poller may inject several times, but
    the edge latch (and the eventfd counter) fold them: the guest sees one interrupt."""
    vm, vcpu, ram, _dev = make_gic_vm(model)
    closing(vm)
    gsi, n = 11, 50
    device = EventfdDevice.create()
    closing(device)
    vm.irqfd(device.irqfd, gsi)
    guest = Guest(vm, vcpu, ram, model, {32 + gsi: False})   # stopped at its "ready" report
    device.start()
    device.raise_events(n)
    stats = irqfds(vm).stats
    assert wait_until(lambda: stats.inject + stats.coalesced == n)
    assert 1 <= stats.inject <= n
    assert guest.take() == 32 + gsi
    guest.assert_quiet()
    assert guest.acked == 1


@MODELS
def test_level_device_reasserts_after_each_eoi_and_every_event_is_seen(model, closing):
    vm, vcpu, ram, _dev = make_gic_vm(model)
    closing(vm)
    gsi, m = 12, 10
    device = EventfdDevice.create(level=True)
    closing(device)
    vm.irqfd(device.irqfd, gsi, resamplefd=device.resamplefd)
    guest = Guest(vm, vcpu, ram, model, {32 + gsi: True})
    device.start()                                     # its thread re-asserts as the guest EOIs
    device.raise_events(m)
    for _ in range(m):
        assert guest.take() == 32 + gsi
    assert device.wait_idle(DEADLINE)
    assert (device.stats.signals, device.stats.resamples, device.stats.retired) == (m, m, m)
    assert device.stats.spurious == 0 and guest.acked == m
    assert not spi(vm, gsi).line_level
    stats = irqfds(vm).stats
    assert (stats.inject, stats.acked, stats.resample) == (m, m, m)
    guest.assert_quiet()


@MODELS
def test_guest_sees_edge_and_level_signalled_before_init(model, closing):
    vm, vcpu, ram, dev = make_gic_vm(model, init=False)
    closing(vm)
    edge_gsi, level_gsi = 5, 6
    edge = eventfd(closing)
    level = EventfdDevice.create(level=True)
    closing(level)
    vm.irqfd(edge, edge_gsi)
    vm.irqfd(level.irqfd, level_gsi, resamplefd=level.resamplefd)
    os.eventfd_write(edge, 1)
    level.start()
    level.raise_events(2)
    assert level.wait_signals(1, DEADLINE)             # asserted before the vGIC exists
    assert not vm.vgic.initialized
    ctrl_init(vm, dev)
    guest = Guest(vm, vcpu, ram, model, {32 + edge_gsi: False, 32 + level_gsi: True})
    seen = [guest.take() for _ in range(3)]
    assert sorted(seen) == [32 + edge_gsi, 32 + level_gsi, 32 + level_gsi]
    assert level.wait_idle(DEADLINE) and level.stats.retired == 2
    guest.assert_quiet()


@pytest.mark.skipif(not HAS_INIT_HOOK, reason="the vGIC's init hook is not integrated yet")
def test_lazy_gicv2_init_at_first_run_delivers_early_signals(closing):
    vm, vcpu, ram, _dev = make_gic_vm(V2, init=False)
    closing(vm)
    fd = eventfd(closing, value=1)
    vm.irqfd(fd, 5)
    guest = Guest(vm, vcpu, ram, V2, {37: False})      # first KVM_RUN initialises the GICv2
    assert guest.take() == 37
