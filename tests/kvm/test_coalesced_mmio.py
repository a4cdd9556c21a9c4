"""KVM_REGISTER_COALESCED_MMIO: zones, the ring, and the exits a coalesced write saves.

Every guest test runs twice: with the core appending to the ring itself (softkvm's core build),
and with the core unable to (a stock core), where the write exits to the kernel, which appends
it as KVM's ``coalesced_mmio_write`` does.
"""

import errno

import pytest

from softkvm.kvm import coalesced_mmio, uapi
from softkvm.kvm.errors import KvmError
from tests.support.machine import POWER_OFF, run_source, vm_served_by

UART = 0x09000000


@pytest.fixture(params=["core", "kernel"])
def coalescing_vm(request, monkeypatch):
    parts = vm_served_by(request.param, monkeypatch, "set_coalesced_mmio")
    yield parts
    parts[0].close()


def entries(ring):
    out = []
    while ring.first != ring.last:
        e = ring.coalesced_mmio[ring.first]
        out.append((e.phys_addr, e.len, int.from_bytes(bytes(e.data)[: e.len], "little")))
        ring.first = (ring.first + 1) % len(ring.coalesced_mmio)
    return out


def test_the_capability_names_the_ring_page(vm1):
    vm, _vcpu, _ram = vm1
    assert vm.check_extension(uapi.KVM_CAP_COALESCED_MMIO) == uapi.KVM_COALESCED_MMIO_PAGE_OFFSET
    assert vm.check_extension(uapi.KVM_CAP_COALESCED_PIO) == 1


def test_every_vcpu_maps_the_one_ring(coalescing_vm):
    vm, vcpu, _ram, _mode = coalescing_vm
    assert vcpu.coalesced_mmio_ring is vm.vcpus[1].coalesced_mmio_ring
    assert len(vcpu.coalesced_mmio_ring.coalesced_mmio) == (4096 - 8) // 24


def test_writes_in_a_zone_queue_in_order_and_reads_still_exit(coalescing_vm):
    vm, vcpu, ram, mode = coalescing_vm
    vm.register_coalesced_mmio(UART, 4)
    run = run_source(vm, vcpu, ram, f"""
        ldr x0, ={UART}
        mov w1, #0x48
        str w1, [x0]
        mov w1, #0x69
        strb w1, [x0], #1
        ldr w2, [x0, #0x17]
    """ + POWER_OFF)
    assert run.exit_reason == uapi.KVM_EXIT_MMIO  # the UARTFR read
    assert (run.mmio.phys_addr, run.mmio.is_write) == (UART + 0x18, False)
    assert entries(vcpu.coalesced_mmio_ring) == [(UART, 4, 0x48), (UART, 1, 0x69)]
    assert vcpu.core.get_x(0) == UART + 1  # the post-index writeback of the queued store
    stats = vcpu.read_stats().kvm
    assert stats["mmio_exit_user"] == 1
    assert stats["mmio_exit_kernel"] == (2 if mode == "kernel" else 0)
    assert vcpu.run().exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT


def test_a_write_outside_every_zone_exits(coalescing_vm):
    vm, vcpu, ram, _mode = coalescing_vm
    vm.register_coalesced_mmio(UART, 4)
    run = run_source(vm, vcpu, ram, f"ldr x0, ={UART}\n mov w1, #7\n str w1, [x0, #2]\n"
                     + POWER_OFF)  # bytes 2-5: not wholly inside the zone
    assert run.exit_reason == uapi.KVM_EXIT_MMIO and run.mmio.is_write
    assert (run.mmio.phys_addr, run.mmio.len) == (UART + 2, 4)
    assert entries(vcpu.coalesced_mmio_ring) == []


def test_a_full_ring_makes_the_write_exit_after_everything_queued(coalescing_vm):
    """The write that finds no room exits as plain KVM_EXIT_MMIO: the VMM drains the ring
    first, then handles it, so it still sees every write in guest order."""
    vm, vcpu, ram, _mode = coalescing_vm
    vm.register_coalesced_mmio(UART, 4)
    ring = vcpu.coalesced_mmio_ring
    room = len(ring.coalesced_mmio) - 1
    run = run_source(vm, vcpu, ram, f"""
        ldr x0, ={UART}
        mov x1, #0
    1:  str w1, [x0]
        add x1, x1, #1
        cmp x1, #{room + 3}
        b.ne 1b
    """ + POWER_OFF)
    assert run.exit_reason == uapi.KVM_EXIT_MMIO and run.mmio.is_write
    assert int.from_bytes(run.mmio.data[:4], "little") == room
    assert [value for _a, _l, value in entries(ring)] == list(range(room))
    assert vcpu.run().exit_reason == uapi.KVM_EXIT_SYSTEM_EVENT
    assert [value for _a, _l, value in entries(ring)] == [room + 1, room + 2]


def test_unregister_drops_the_zones_inside_the_range(coalescing_vm):
    vm, vcpu, ram, _mode = coalescing_vm
    vm.register_coalesced_mmio(UART, 4)
    vm.register_coalesced_mmio(UART + 0x100, 4)
    vm.register_coalesced_mmio(UART, 0x1000, pio=1)  # arm64 has no port I/O: never written
    vm.unregister_coalesced_mmio(UART, 0x10)
    assert [(z.addr, z.pio) for z in vm.coalesced_mmio.zones] == [(UART + 0x100, 0), (UART, 1)]
    run = run_source(vm, vcpu, ram, f"""
        ldr x0, ={UART}
        str w1, [x0, #0x100]
        str w1, [x0]
    """ + POWER_OFF)
    assert run.exit_reason == uapi.KVM_EXIT_MMIO and run.mmio.phys_addr == UART
    assert entries(vcpu.coalesced_mmio_ring) == [(UART + 0x100, 4, 0)]


@pytest.mark.parametrize("addr,size,pio,code", [
    (UART, 4, 2, errno.EINVAL),
    (0xFFFFFFFFFFFFF000, 0x2000, 0, errno.EINVAL),
])
def test_bad_zones_are_refused(vm1, addr, size, pio, code):
    vm, _vcpu, _ram = vm1
    with pytest.raises(KvmError) as info:
        vm.register_coalesced_mmio(addr, size, pio)
    assert info.value.errno == code
    assert vm.coalesced_mmio.zones == []


def test_zones_beyond_the_bus_limit_are_refused(vm1, monkeypatch):
    monkeypatch.setattr(coalesced_mmio, "MAX_ZONES", 3)
    vm, _vcpu, _ram = vm1
    for index in range(3):
        vm.register_coalesced_mmio(UART + 0x10 * index, 4)
    with pytest.raises(KvmError) as info:
        vm.register_coalesced_mmio(UART + 0x100, 4)
    assert info.value.errno == errno.ENOSPC and len(vm.coalesced_mmio.zones) == 3
