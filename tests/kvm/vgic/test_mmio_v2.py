"""GICv2 register maps, table-driven: GICD as the guest sees it, GICC served by the GICV
hardware; RAZ/WI beyond nr_irqs, read-only registers, byte lanes; SGIR; in-slice accesses."""

from __future__ import annotations

import pytest

from softkvm.arch import gic as G
from softkvm.kvm import uapi
from softkvm.kvm.vgic.vgic import kvm_vgic_create
from tests.kvm.test_irqfd import CPU_IF, REPORT, make_gic_vm
from tests.kvm.test_irqfd import DIST as DIST_BASE
from tests.kvm.vgic.fakes import V2, FakeVm, enable_spi, guest_enable, make_vgic
from tests.kvm.vgic.regtable import Row, run_row
from tests.support.machine import CODE, load, start_at

ALL = 0xFFFFFFFF
IIDR = 0x4B00343B          # KVM, revision 3, ARM
GICC_IIDR = 0x04B2043B     # KVM << 20 | arch v2 << 16 | ARM

DIST = [
    Row("CTLR enables", 0x000, 4, 1, 1),
    Row("CTLR keeps Enable only", 0x000, 4, ALL, 1),
    Row("TYPER: 64 IRQs, 2 CPUs", 0x004, 4, None, 0x21),
    Row("TYPER is read-only", 0x004, 4, ALL, 0x21),
    Row("IIDR is read-only", 0x008, 4, 0, IIDR),
    Row("0x00C in the CTLR block reads 0", 0x00C, 4, None, 0),
    Row("CTLR 16-bit access is RAZ", 0x000, 2, None, 0, setup=((0x000, 4, 1),)),
    Row("CTLR 64-bit access is RAZ", 0x000, 8, None, 0, setup=((0x000, 4, 1),)),
    Row("unmapped offset RAZ", 0x0C0, 4, ALL, 0),
    Row("IGROUPR0 guest-writable", 0x080, 4, ALL, ALL),
    Row("IGROUPR1 guest-writable", 0x084, 4, 0x80000001, 0x80000001),
    Row("IGROUPR2 beyond nr_irqs", 0x088, 4, ALL, 0),
    Row("ISENABLER0 reset: SGIs enabled", 0x100, 4, None, 0xFFFF),
    Row("ISENABLER0 sets PPIs", 0x100, 4, 0xFFFF0000, ALL),
    Row("ICENABLER0 clears", 0x180, 4, ALL, 0, read_at=0x100),
    Row("ISENABLER1 sets SPIs", 0x104, 4, 0x80000001, 0x80000001),
    Row("ICENABLER1 reads the enables", 0x104, 4, 0x80000001, 0x80000001, read_at=0x184),
    Row("ISENABLER byte access RAZ", 0x104, 1, None, 0, setup=((0x104, 4, 1),)),
    Row("ISENABLER2 beyond nr_irqs", 0x108, 4, ALL, 0),
    Row("ISPENDR0: SGI bits WI, PPIs set", 0x200, 4, ALL, 0xFFFF0000),
    Row("ISPENDR1 sets", 0x204, 4, 0x5, 0x5),
    Row("ICPENDR1 clears", 0x284, 4, 0x5, 0xA, read_at=0x204, setup=((0x204, 4, 0xF),)),
    Row("ICPENDR0 SGI bits WI", 0x280, 4, ALL, 0x0001, read_at=0xF10, read_width=1,
        setup=((0xF20, 1, 1),)),
    Row("ISACTIVER1 sets", 0x304, 4, 0x3, 0x3),
    Row("ICACTIVER1 clears", 0x384, 4, 0x1, 0x2, read_at=0x304, setup=((0x304, 4, 3),)),
    Row("IPRIORITYR byte masked to 5 bits", 0x428, 1, 0xFF, 0xF8),
    Row("IPRIORITYR word masked per byte", 0x428, 4, 0x12345678, 0x10305078),
    Row("IPRIORITYR byte lane 2", 0x42A, 1, 0x80, 0x00800000, read_at=0x428, read_width=4),
    Row("IPRIORITYR beyond nr_irqs", 0x440, 4, ALL, 0),
    Row("IPRIORITYR misaligned word RAZ", 0x401, 4, None, 0, setup=((0x400, 4, ALL),)),
    Row("ITARGETSR0-7 read the own CPU (vCPU 0)", 0x800, 4, None, 0x01010101),
    Row("ITARGETSR0-7 read the own CPU (vCPU 1)", 0x81C, 4, None, 0x02020202, vcpu=1),
    Row("ITARGETSR0-7 are read-only", 0x800, 4, 0, 0x01010101),
    Row("ITARGETSR0-7 byte", 0x81F, 1, None, 0x02, vcpu=1),
    Row("ITARGETSR SPIs masked to existing CPUs", 0x820, 4, ALL, 0x03030303),
    Row("ITARGETSR SPI byte", 0x822, 1, 0x02, 0x02),
    Row("ITARGETSR SPI reset 0", 0x820, 4, None, 0),
    Row("ITARGETSR beyond nr_irqs", 0x840, 4, ALL, 0),
    Row("ICFGR0 SGIs edge, read-only", 0xC00, 4, 0, 0xAAAAAAAA),
    Row("ICFGR1 PPIs level, read-only", 0xC04, 4, ALL, 0),
    Row("ICFGR2 reset: SPIs edge", 0xC08, 4, None, 0xAAAAAAAA),
    Row("ICFGR2 level", 0xC08, 4, 0, 0),
    Row("ICFGR2 ignores the even bits", 0xC08, 4, 0x55555555, 0),
    Row("ICFGR beyond nr_irqs", 0xC10, 4, ALL, 0),
    Row("SGIR reads as zero", 0xF00, 4, None, 0),
    Row("SPENDSGIR sets sources", 0xF20, 4, 0x0301, 0x0301),
    Row("SPENDSGIR seen in CPENDSGIR", 0xF20, 4, 0x0301, 0x0301, read_at=0xF10),
    Row("SPENDSGIR byte", 0xF23, 1, 0x2, 0x2),
    Row("CPENDSGIR clears sources", 0xF10, 4, 0x0101, 0x0202, read_at=0xF20,
        setup=((0xF20, 4, 0x0303),)),
]


@pytest.mark.parametrize("row", DIST, ids=str)
def test_distributor(row):
    vgic, _vm = make_vgic(V2, 2)
    run_row(vgic, row)


def test_itargetsr_single_cpu_masks_to_cpu0():
    vgic, _vm = make_vgic(V2, 1)
    run_row(vgic, Row("1 CPU", 0x820, 4, ALL, 0x01010101))
    run_row(vgic, Row("1 CPU, private", 0x800, 4, None, 0x01010101))


def test_itargetsr_routes_to_lowest_set_cpu():
    vgic, _vm = make_vgic(V2, 4)
    vgic.dist_mmio_write(0, G.GICD_ITARGETSR + 40, 1, 0b1100)
    assert vgic.get_irq(None, 40).target_vcpu == 2
    vgic.dist_mmio_write(0, G.GICD_ITARGETSR + 40, 1, 0)
    assert vgic.get_irq(None, 40).target_vcpu == 0


CPU = [
    Row("CTLR keeps the GICC_CTLR bits", 0x00, 4, ALL, 0x21F, frame="cpu"),
    Row("PMR: 5 priority bits", 0x04, 4, 0xFF, 0xF8, frame="cpu"),
    Row("BPR clamps to the minimum", 0x08, 4, 0, 2, frame="cpu"),
    Row("BPR keeps larger values", 0x08, 4, 5, 5, frame="cpu"),
    Row("ABPR clamps to the minimum", 0x1C, 4, 0, 3, frame="cpu"),
    Row("IAR idle: spurious", 0x0C, 4, None, 1023, frame="cpu"),
    Row("AIAR idle: spurious", 0x20, 4, None, 1023, frame="cpu"),
    Row("HPPIR idle", 0x18, 4, None, 1023, frame="cpu"),
    Row("AHPPIR idle", 0x28, 4, None, 1023, frame="cpu"),
    Row("RPR idle", 0x14, 4, None, 0xFF, frame="cpu"),
    Row("EOIR is write-only", 0x10, 4, None, 0, frame="cpu"),
    Row("APR0 read/write", 0xD0, 4, 0x5, 0x5, frame="cpu"),
    Row("APR1 RAZ", 0xD4, 4, 0x5, 0, frame="cpu"),
    Row("NSAPR0 RAZ", 0xE0, 4, 0x5, 0, frame="cpu"),
    Row("IIDR", 0xFC, 4, 0, GICC_IIDR, frame="cpu"),
    Row("DIR is write-only", 0x1000, 4, None, 0, frame="cpu"),
    Row("byte access is RAZ/WI", 0x04, 1, 0xFF, 0, read_at=0x04, read_width=4, frame="cpu"),
]


@pytest.mark.parametrize("row", CPU, ids=str)
def test_cpu_interface(row):
    vgic, _vm = make_vgic(V2, 2)
    run_row(vgic, row)


def test_private_registers_are_banked_per_vcpu():
    vgic, _vm = make_vgic(V2, 2)
    vgic.dist_mmio_write(1, G.GICD_IPRIORITYR + 4, 4, ALL)
    vgic.dist_mmio_write(1, G.GICD_ISENABLER, 4, 1 << 20)
    vgic.cpu_mmio_write(1, G.GICC_PMR, 4, 0x80)
    assert vgic.dist_mmio_read(1, G.GICD_IPRIORITYR + 4, 4) == 0xF8F8F8F8
    assert vgic.dist_mmio_read(0, G.GICD_IPRIORITYR + 4, 4) == 0
    assert vgic.dist_mmio_read(0, G.GICD_ISENABLER, 4) == 0xFFFF
    assert vgic.dist_mmio_read(1, G.GICD_ISENABLER, 4) == 0x10FFFF
    assert (vgic.cpu_mmio_read(0, G.GICC_PMR, 4), vgic.cpu_mmio_read(1, G.GICC_PMR, 4)) == (0, 0x80)


@pytest.mark.parametrize("value,targets", [
    (0x00020003, [1]),          # list: vCPU 1
    (0x00070003, [0, 1, 2]),    # list: several, self included
    (0x01000003, [1, 2]),       # others
    (0x02000003, [0]),          # self
    (0x03FF0003, []),           # reserved filter: ignored
    (0x00080003, []),           # vCPU 3 does not exist
])
def test_sgir_filters(value, targets):
    vgic, vm = make_vgic(V2, 3)
    vgic.dist_mmio_write(0, G.GICD_CTLR, 4, 1)
    kicks = vm.kicks()
    vgic.dist_mmio_write(0, G.GICD_SGIR, 4, value)
    pending = [c for c in range(3) if vgic.get_irq(c, 3).pending_latch]
    assert pending == targets
    assert all(vgic.get_irq(c, 3).source == 0b1 for c in targets)   # source: vCPU 0
    assert [c for c in range(3) if vm.kicks()[c] != kicks[c]] == targets


def test_in_slice_access_folds_the_live_list_registers():
    """A guest that acknowledged an interrupt and reads ISACTIVER in the same slice sees it
    active: the access folds the live LRs first and refills them after, like KVM's exit."""
    vgic, _vm = make_vgic(V2, 1)
    guest_enable(vgic, 0)
    enable_spi(vgic, 40)
    vgic.kvm_vgic_inject_irq(None, 40, True, None)
    vif = vgic.vcpu_if(0)
    changes = []
    vif.on_change = lambda: changes.append(vif.signal())
    vgic.kvm_vgic_flush_hwstate(0)
    assert vgic.cpu_mmio_read(0, G.GICC_IAR, 4) == 40
    assert vgic.dist_mmio_read(0, G.GICD_ISACTIVER + 4, 4) == 1 << 8
    assert vgic.cpus[0].live and vif.layout.state.get(vif.lr[0]) == G.LR_STATE_ACTIVE
    changes.clear()
    vgic.dist_mmio_write(0, G.GICD_ISPENDR + 4, 4, 1 << 8)   # pend it again while active
    assert vif.layout.state.get(vif.lr[0]) == G.LR_STATE_PENDING_ACTIVE
    assert changes            # the integrator was told to re-drive the lines
    vgic.cpu_mmio_write(0, G.GICC_EOIR, 4, 40)
    assert vif.signal() == (True, False)


def test_guest_access_before_init_and_from_unknown_vcpus_is_raz_wi():
    fresh = kvm_vgic_create(FakeVm(1), V2)
    assert fresh.dist_mmio_read(0, G.GICD_TYPER, 4) == 0
    fresh.dist_mmio_write(0, G.GICD_CTLR, 4, 1)
    assert not fresh.enabled
    vgic, _vm = make_vgic(V2, 1)
    assert vgic.dist_mmio_read(5, G.GICD_TYPER, 4) == 0
    assert vgic.cpu_mmio_read(5, G.GICC_IIDR, 4) == 0
    vgic.dist_mmio_write(5, G.GICD_CTLR, 4, 1)
    assert not vgic.enabled


# --- the GICV frame on the real core: a spurious IAR read is answered by the shim ---------------

GICV_GUEST = f"""
    ldr x1, ={DIST_BASE}
    mov w2, #1
    str w2, [x1]                 // GICD_CTLR.Enable
    ldr x3, ={CPU_IF}
    mov w2, #0xff
    str w2, [x3, #4]             // GICC_PMR
    mov w2, #1
    str w2, [x3]                 // GICC_CTLR.EnableGrp0
    ldr x6, ={REPORT}
    ldr w4, [x3, #0xc]           // GICC_IAR, nothing pending: 1023
    str w4, [x6]
    ldr w2, =0x02000001
    str w2, [x1, #0xf00]         // GICD_SGIR: SGI 1 to this CPU
1:  ldr w4, [x3, #0xc]           // GICC_IAR until it returns the SGI
    and w5, w4, #0x3ff
    cmp w5, #1020
    b.hs 1b
    str w4, [x3, #0x10]          // GICC_EOIR
    str w5, [x6, #4]
    ldr w4, [x3, #0xc]           // nothing pending again: 1023
    str w4, [x6, #8]
    b .
"""


def test_a_spurious_gicv_iar_read_is_answered_without_python():
    """While no list register is pending the shim returns 1023 for GICV_IAR itself (the GIC's
    no-candidate case changes no state); an IAR read with the SGI in an LR still reaches the
    Python CPU interface, which acknowledges it. Counted as CPU interface accesses either way."""
    vm, vcpu, ram, _dev = make_gic_vm(uapi.KVM_DEV_TYPE_ARM_VGIC_V2)
    try:
        load(vm, ram, CODE, GICV_GUEST)
        start_at(vcpu, CODE)
        reports = []
        while len(reports) < 3:
            run = vcpu.run()
            assert run.exit_reason == uapi.KVM_EXIT_MMIO, run.exit_name
            reports.append((run.mmio.phys_addr - REPORT,
                            int.from_bytes(run.mmio.data[:4], "little")))
        assert reports == [(0, 1023), (4, 1), (8, 1023)]
        state = vcpu.core.state
        assert state.n_gicv_spurious == 2     # the first and the last read
        assert vcpu.read_stats().softkvm["vcpu_if_accesses"] >= 2 + 4  # + PMR, CTLR, IAR, EOIR
    finally:
        vm.close()
