"""The runner drains the coalesced MMIO ring: before every exit it handles, and on its own while
the guest only waits, so devices see queued writes in guest order and never too late."""

import threading

import pytest

from softkvm.vmm.bus import Bus
from softkvm.vmm.runner import Runner, RunResult, StopReason
from tests.support.machine import CODE, POWER_OFF, load, make_vm, start_at

DEVICE = 0x09000000


class Recorder:
    def __init__(self) -> None:
        self.writes: list[tuple[int, int]] = []
        self.written = threading.Event()

    def mmio_read(self, offset: int, size: int) -> int:
        return 0

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        self.writes.append((offset, value))
        self.written.set()


@pytest.fixture
def machine():
    vm, vcpus, ram = make_vm(1)
    vm.register_coalesced_mmio(DEVICE, 4)
    bus, device = Bus(), Recorder()
    bus.add(DEVICE, 0x1000, device, "recorder")
    yield vm, vcpus[0], ram, Runner(vm, bus), device
    vm.close()


def start(machine, *writes: tuple[int, int], then: str) -> None:
    """The guest stores each (offset, value) to the device in order, then runs ``then``."""
    vm, vcpu, ram, _runner, _device = machine
    stores = "\n".join(f"mov w1, #{value}\n str w1, [x0, #{offset}]" for offset, value in writes)
    load(vm, ram, CODE, f"ldr x0, ={DEVICE}\n{stores}\n{then}")
    start_at(vcpu, CODE)


def test_queued_writes_reach_the_device_before_the_exit_that_follows(machine):
    _vm, vcpu, _ram, runner, device = machine
    start(machine, (0, 0x61), (0, 0x62), (4, 0x99), (0, 0x63), then=POWER_OFF)
    assert runner.run(timeout=120).reason is StopReason.POWER_OFF
    assert device.writes == [(0, 0x61), (0, 0x62), (4, 0x99), (0, 0x63)]
    assert vcpu.read_stats().kvm["mmio_exit_user"] == 1


def test_writes_of_a_guest_that_then_waits_are_delivered_meanwhile(machine):
    """WFI blocks in the kernel, so no exit reaches the VMM: the waiting thread drains."""
    _vm, vcpu, _ram, runner, device = machine
    start(machine, (0, 0x21), then="1: wfi\n b 1b")
    thread = threading.Thread(target=runner.run, kwargs={"timeout": 300})
    thread.start()
    try:
        assert device.written.wait(120)
    finally:
        runner.stop(RunResult(StopReason.STOPPED))
        thread.join()
    assert device.writes == [(0, 0x21)]
    assert vcpu.read_stats().kvm["mmio_exit_user"] == 0


class BurstRecorder(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.bursts: list[tuple[int, list[int]]] = []

    def mmio_write_burst(self, offset: int, size: int, values: list[int]) -> None:
        self.bursts.append((offset, values))


def test_runs_of_writes_to_one_register_reach_a_burst_device_together_in_order():
    vm, vcpus, _ram = make_vm(1)
    try:
        bus, device = Bus(), BurstRecorder()
        bus.add(DEVICE, 0x1000, device, "recorder")
        runner = Runner(vm, bus)
        ring = vcpus[0].coalesced_mmio_ring
        count = len(ring.coalesced_mmio)
        writes = [(0, 0x61), (0, 0x62), (4, 0x99), (0, 0x63), (0, 0x64)]
        first = count - 4  # the ring wraps in the middle of the last run
        for i, (offset, value) in enumerate(writes):
            entry = ring.coalesced_mmio[(first + i) % count]
            entry.phys_addr, entry.len = DEVICE + offset, 4
            entry.data[:4] = list(value.to_bytes(4, "little"))
        ring.first, ring.last = first, (first + len(writes)) % count
        runner.flush_coalesced_mmio()
        assert device.bursts == [(0, [0x61, 0x62]), (4, [0x99]), (0, [0x63, 0x64])]
        assert ring.first == ring.last and device.writes == []
    finally:
        vm.close()
