"""The vGIC device attributes (KVM_{SET,GET,HAS}_DEVICE_ATTR) and KVM's errors for each, plus
creation and resource mapping."""

from __future__ import annotations

import errno

import pytest

from softkvm.arch import gic as G
from softkvm.arch import sysregs as S
from softkvm.kvm import uapi
from softkvm.kvm.errors import KvmError
from softkvm.kvm.vgic.vgic import kvm_vgic_create
from softkvm.kvm.vgic.vgic_kvm_device import VGIC_ADDR_UNDEF, VgicDevice
from tests.kvm.vgic.fakes import V2, V3, FakeVm, make_vgic

ADDR = uapi.KVM_DEV_ARM_VGIC_GRP_ADDR
DIST_REGS = uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS
CPU_REGS = uapi.KVM_DEV_ARM_VGIC_GRP_CPU_REGS
NR_IRQS = uapi.KVM_DEV_ARM_VGIC_GRP_NR_IRQS
CTRL = uapi.KVM_DEV_ARM_VGIC_GRP_CTRL
REDIST_REGS = uapi.KVM_DEV_ARM_VGIC_GRP_REDIST_REGS
CPU_SYSREGS = uapi.KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS
LEVEL_INFO = uapi.KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO
INIT = uapi.KVM_DEV_ARM_VGIC_CTRL_INIT
V2_DIST, V2_CPU = uapi.KVM_VGIC_V2_ADDR_TYPE_DIST, uapi.KVM_VGIC_V2_ADDR_TYPE_CPU
V3_DIST, V3_REDIST = uapi.KVM_VGIC_V3_ADDR_TYPE_DIST, uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST
V3_REGION = uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION


def device(model: int, nr_vcpus: int = 2) -> VgicDevice:
    return VgicDevice.create(FakeVm(nr_vcpus), model)


def region(index: int, base: int, count: int, flags: int = 0) -> int:
    return count << 52 | base | flags << 12 | index


def errno_of(call, *args) -> int:
    with pytest.raises(KvmError) as info:
        call(*args)
    return info.value.errno


def test_kvm_error_str_names_the_errno():
    assert str(KvmError(errno.EBUSY, "busy")) == "EBUSY: busy"


# --- creation --------------------------------------------------------------------------------


def test_create_errors():
    assert errno_of(kvm_vgic_create, FakeVm(1), 6) == errno.ENODEV
    assert errno_of(kvm_vgic_create, FakeVm(1, ran=True), V2) == errno.EBUSY
    assert errno_of(kvm_vgic_create, FakeVm(9), V2) == errno.E2BIG
    assert kvm_vgic_create(FakeVm(9), V3).max_vcpus == 512


def test_vcpu_precreate_before_the_host_lists_it():
    vm = FakeVm(1)
    vgic = kvm_vgic_create(vm, V3)
    vgic.kvm_vgic_vcpu_init(1)                 # KVM_CREATE_VCPU: the vGIC part comes first
    assert len(vgic.cpus) == 2 and vgic.get_irq(1, 20) is None   # not a vCPU of the VM yet
    vm._vcpus.append(type(vm._vcpus[0])(1, 1))
    assert vgic.get_irq(1, 20).target_vcpu == 1
    assert errno_of(vgic.vcpu_if, 5) == errno.EINVAL


def test_vcpu_creation_after_init_is_refused():
    vm = FakeVm(1)
    vgic = kvm_vgic_create(vm, V2)
    vgic.kvm_vgic_vcpu_init(0)
    vgic.vgic_init()
    assert errno_of(vgic.kvm_vgic_vcpu_init, 1) == errno.EBUSY
    assert errno_of(kvm_vgic_create(FakeVm(1), V2).kvm_vgic_vcpu_init, 8) == errno.EINVAL


# --- ADDR -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model,attr,value,err", [
    (V2, V2_DIST, 0x08000000, 0),
    (V2, V2_CPU, 0x08010000, 0),
    (V2, V2_DIST, 0x08000100, errno.EINVAL),          # 4K alignment
    (V2, V2_DIST, (1 << 40) - 0x1000, 0),
    (V2, V2_DIST, 1 << 40, errno.E2BIG),              # beyond the IPA space
    (V2, V2_CPU, (1 << 40) - 0x1000, errno.E2BIG),    # the 8K frame crosses the end
    (V2, V3_DIST, 0x08000000, errno.ENXIO),           # wrong model
    (V2, V3_REDIST, 0x080A0000, errno.ENXIO),
    (V2, 9, 0, errno.ENXIO),                          # unknown type
    (V3, V3_DIST, 0x08000000, 0),
    (V3, V3_DIST, 0x08001000, errno.EINVAL),          # 64K alignment
    (V3, V2_DIST, 0x08000000, errno.ENXIO),
    (V3, V3_REDIST, 0x080A0000, 0),
    (V3, V3_REDIST, 0x080A1000, errno.EINVAL),
    (V3, V3_REGION, region(0, 0x080A0000, 2), 0),
    (V3, V3_REGION, region(1, 0x080A0000, 2), errno.EINVAL),    # indices start at 0
    (V3, V3_REGION, region(0, 0x080A0000, 0), errno.EINVAL),    # count 0
    (V3, V3_REGION, region(0, 0x080A0000, 2, flags=1), errno.EINVAL),
])
def test_addr_set(model, attr, value, err):
    dev = device(model)
    if err:
        assert errno_of(dev.set_attr, ADDR, attr, value) == err
    else:
        dev.set_attr(ADDR, attr, value)
        assert dev.get_attr(ADDR, attr, value) == value   # REDIST_REGION reads back whole


def test_addr_set_twice_and_unset_reads():
    dev = device(V2)
    assert dev.get_attr(ADDR, V2_DIST) == VGIC_ADDR_UNDEF
    dev.set_attr(ADDR, V2_DIST, 0x08000000)
    assert errno_of(dev.set_attr, ADDR, V2_DIST, 0x09000000) == errno.EEXIST
    assert dev.get_attr(ADDR, V2_DIST) == 0x08000000


def test_redistributor_regions():
    dev = device(V3, 4)
    dev.set_attr(ADDR, V3_REGION, region(0, 0x080A0000, 2))
    assert errno_of(dev.set_attr, ADDR, V3_REDIST, 0x0A000000) == errno.EINVAL  # no mixing
    assert errno_of(dev.set_attr, ADDR, V3_REGION, region(2, 0x0A000000, 2)) == errno.EINVAL
    assert errno_of(dev.set_attr, ADDR, V3_REGION,
                    region(1, 0x080C0000, 2)) == errno.EINVAL                  # overlaps
    dev.set_attr(ADDR, V3_REGION, region(1, 0x0A000000, 2))
    assert dev.get_attr(ADDR, V3_REGION, 1) == region(1, 0x0A000000, 2)
    assert errno_of(dev.get_attr, ADDR, V3_REGION, 7) == errno.ENOENT
    legacy = device(V3)
    legacy.set_attr(ADDR, V3_REDIST, 0x080A0000)
    assert errno_of(legacy.set_attr, ADDR, V3_REDIST, 0x0A000000) == errno.EEXIST
    assert legacy.get_attr(ADDR, V3_REDIST) == 0x080A0000
    # KVM refuses the legacy region after discrete ones, but (as its code reads) not the reverse
    legacy.set_attr(ADDR, V3_REGION, region(1, 0x0A000000, 1))
    clash = device(V3)
    clash.set_attr(ADDR, V3_DIST, 0x08000000)
    assert errno_of(clash.set_attr, ADDR, V3_REDIST, 0x08000000) == errno.EINVAL


# --- NR_IRQS, CTRL ----------------------------------------------------------------------------


@pytest.mark.parametrize("value,err", [(63, errno.EINVAL), (32, errno.EINVAL), (100, errno.EINVAL),
                                       (1024, errno.EINVAL), (64, 0), (992, 0), (128, 0)])
def test_nr_irqs_bounds(value, err):
    dev = device(V2)
    if err:
        assert errno_of(dev.set_attr, NR_IRQS, 0, value) == err
    else:
        dev.set_attr(NR_IRQS, 0, value)
        assert dev.get_attr(NR_IRQS, 0) == value


def test_nr_irqs_busy_once_set_or_initialised():
    dev = device(V2)
    dev.set_attr(NR_IRQS, 0, 128)
    assert errno_of(dev.set_attr, NR_IRQS, 0, 256) == errno.EBUSY
    other = device(V3)
    other.set_attr(CTRL, INIT)
    assert other.get_attr(NR_IRQS, 0) == 256          # the default froze at init
    assert errno_of(other.set_attr, NR_IRQS, 0, 128) == errno.EBUSY


def test_ctrl():
    dev = device(V3)
    dev.has_attr(CTRL, INIT)
    dev.set_attr(CTRL, INIT)
    assert dev.vgic.initialized
    dev.set_attr(CTRL, INIT)                           # again: nothing to do
    dev.set_attr(CTRL, 3)                              # SAVE_PENDING_TABLES: no LPIs
    assert errno_of(dev.set_attr, CTRL, 1) == errno.ENXIO
    assert errno_of(device(V2).set_attr, CTRL, 3) == errno.ENXIO
    assert errno_of(dev.get_attr, CTRL, INIT) == errno.ENXIO


# --- register groups ------------------------------------------------------------------------------


def test_v2_dist_regs_initialise_lazily_and_check_cpuid():
    dev = device(V2)
    assert not dev.vgic.initialized
    assert dev.get_attr(DIST_REGS, G.GICD_TYPER) == 0x7 | 1 << 5    # 256 IRQs, 2 CPUs
    assert dev.vgic.initialized
    assert dev.get_attr(DIST_REGS, 1 << 32 | G.GICD_ITARGETSR) == 0x02020202
    assert errno_of(dev.get_attr, DIST_REGS, 2 << 32 | G.GICD_TYPER) == errno.EINVAL
    assert errno_of(dev.get_attr, DIST_REGS, 0x0C0) == errno.ENXIO        # no register there
    assert errno_of(dev.get_attr, DIST_REGS, G.GICD_IPRIORITYR + 256) == errno.ENXIO  # >= nr
    assert errno_of(dev.set_attr, DIST_REGS, G.GICD_IIDR, 0x4B00243B) == errno.EINVAL
    dev.set_attr(DIST_REGS, G.GICD_IIDR, 0x4B00343B)    # the same value: groups writable
    dev.set_attr(DIST_REGS, G.GICD_IGROUPR + 4, 0xFF)
    assert dev.get_attr(DIST_REGS, G.GICD_IGROUPR + 4) == 0xFF


def test_v2_user_groups_need_the_iidr_write():
    dev = device(V2)
    dev.set_attr(DIST_REGS, G.GICD_IGROUPR + 4, 0xFF)
    assert dev.get_attr(DIST_REGS, G.GICD_IGROUPR + 4) == 0


def test_v2_user_pending_of_sgis():
    dev = device(V2)
    dev.set_attr(DIST_REGS, 1 << 32 | G.GICD_ISPENDR, 1 << 3)
    assert dev.vgic.get_irq(1, 3).source == 0b10       # the target itself as source
    dev.set_attr(DIST_REGS, 1 << 32 | G.GICD_ICPENDR, 1 << 3)
    assert dev.vgic.get_irq(1, 3).source == 0 and not dev.vgic.get_irq(1, 3).pending_latch


def test_v2_cpu_regs():
    dev = device(V2)
    dev.set_attr(CPU_REGS, 1 << 32 | G.GICC_PMR, 0x1F)   # the 5-bit VMPriMask
    assert dev.vgic.vcpu_if(1).vmcr.pmr == 0xF8
    assert dev.get_attr(CPU_REGS, 1 << 32 | G.GICC_PMR) == 0x1F
    dev.set_attr(CPU_REGS, G.GICC_CTLR, 0x201)
    assert dev.vgic.cpu_mmio_read(0, G.GICC_CTLR, 4) == 0x201
    dev.set_attr(CPU_REGS, G.GICC_APR, 0x4)
    assert dev.get_attr(CPU_REGS, G.GICC_APR) == 0x4 and dev.get_attr(CPU_REGS, 0xD4) == 0
    assert dev.get_attr(CPU_REGS, G.GICC_IIDR) == 0x04B2043B
    assert errno_of(dev.get_attr, CPU_REGS, G.GICC_IAR) == errno.ENXIO
    assert errno_of(dev.get_attr, CPU_REGS, 0xE0) == errno.ENXIO


def test_v3_regs_need_init():
    dev = device(V3)
    assert errno_of(dev.get_attr, DIST_REGS, G.GICD_CTLR) == errno.EBUSY
    dev.set_attr(CTRL, INIT)
    assert dev.get_attr(DIST_REGS, G.GICD_CTLR) == 0x50


def test_v3_redist_and_sysregs_by_mpidr():
    dev = device(V3, 18)
    dev.set_attr(ADDR, V3_REDIST, 0x080A0000)
    dev.set_attr(CTRL, INIT)
    vcpu17 = 0x0101 << 32                              # Aff1=1, Aff0=1 in the attr layout
    assert dev.get_attr(REDIST_REGS, vcpu17 | G.GICR_TYPER) == 17 << 8 | 1 << 4
    assert dev.get_attr(REDIST_REGS, vcpu17 | G.GICR_TYPER + 4) == 0x101
    assert errno_of(dev.get_attr, REDIST_REGS, 0x0505 << 32 | G.GICR_TYPER) == errno.EINVAL
    assert errno_of(dev.get_attr, REDIST_REGS, vcpu17 | 0x0100) == errno.ENXIO
    pmr = S.ICC_PMR_EL1.encoding
    dev.set_attr(CPU_SYSREGS, vcpu17 | pmr, 0xFF)
    assert dev.get_attr(CPU_SYSREGS, vcpu17 | pmr) == 0xF8
    assert dev.get_attr(CPU_SYSREGS, pmr) == 0                     # vCPU 0 untouched
    assert dev.get_attr(CPU_SYSREGS, S.ICC_SRE_EL1.encoding) == 0x7
    assert errno_of(dev.set_attr, CPU_SYSREGS, S.ICC_SRE_EL1.encoding, 0) == errno.EINVAL
    assert errno_of(dev.get_attr, CPU_SYSREGS, S.ICC_IAR1_EL1.encoding) == errno.ENXIO
    ap0r1 = S.sys_reg(3, 0, 12, 8, 5)
    dev.has_attr(CPU_SYSREGS, ap0r1)
    assert errno_of(dev.get_attr, CPU_SYSREGS, ap0r1) == errno.EINVAL  # not implemented
    ctlr = S.ICC_CTLR_EL1.encoding
    value = dev.get_attr(CPU_SYSREGS, ctlr)
    dev.set_attr(CPU_SYSREGS, ctlr, value | G.ICC_CTLR_F.EOImode.val(1))
    assert dev.vgic.vcpu_if(0).vmcr.eoim
    too_many_bits = G.ICC_CTLR_F.PRIbits.put(value, 7)
    assert errno_of(dev.set_attr, CPU_SYSREGS, ctlr, too_many_bits) == errno.EINVAL


def test_v3_user_pending_is_the_raw_latch():
    dev = device(V3)
    dev.set_attr(CTRL, INIT)
    dev.set_attr(DIST_REGS, G.GICD_ICFGR + 8, 0)         # SPIs 32..47 level
    dev.set_attr(DIST_REGS, G.GICD_ISPENDR + 4, 0b11)
    dev.set_attr(DIST_REGS, G.GICD_ISPENDR + 4, 0b01)    # userspace writes clear, too
    assert dev.get_attr(DIST_REGS, G.GICD_ISPENDR + 4) == 0b01
    assert dev.get_attr(DIST_REGS, G.GICD_ICPENDR + 4) == 0         # RAZ for userspace
    dev.set_attr(DIST_REGS, G.GICD_ICPENDR + 4, 0b01)                # WI for userspace
    assert dev.vgic.get_irq(None, 32).pending_latch


def test_level_info():
    dev = device(V3)
    dev.set_attr(CTRL, INIT)
    dev.set_attr(DIST_REGS, G.GICD_ICFGR + 8, 0)         # SPIs 32..47 level, 48.. edge
    dev.set_attr(LEVEL_INFO, 32, 1 << 0 | 1 << 20)
    irq32, irq52 = dev.vgic.get_irq(None, 32), dev.vgic.get_irq(None, 52)
    assert irq32.line_level and irq52.line_level          # written whatever the config
    assert dev.get_attr(LEVEL_INFO, 32) == 1 << 0         # read reports level IRQs only
    dev.set_attr(LEVEL_INFO, 0, 0xFFFFFFFF)
    assert dev.get_attr(LEVEL_INFO, 0) == 0xFFFF0000      # SGIs never, PPIs are level
    assert dev.get_attr(LEVEL_INFO, 64) == 0              # beyond nr_irqs: RAZ
    assert errno_of(dev.get_attr, LEVEL_INFO, 33) == errno.EINVAL
    assert errno_of(dev.get_attr, LEVEL_INFO, 1 << 10 | 32) == errno.EINVAL
    dev.has_attr(LEVEL_INFO, 32)
    assert errno_of(dev.has_attr, LEVEL_INFO, 1 << 10) == errno.ENXIO
    assert errno_of(device(V2).set_attr, LEVEL_INFO, 32, 1) == errno.ENXIO


def test_register_access_while_a_vcpu_runs_is_busy():
    vgic, _vm = make_vgic(V3, 2)
    dev = VgicDevice(vgic)
    vgic.kvm_vgic_flush_hwstate(1)
    assert errno_of(dev.get_attr, DIST_REGS, G.GICD_CTLR) == errno.EBUSY
    vgic.kvm_vgic_sync_hwstate(1)
    assert dev.get_attr(DIST_REGS, G.GICD_CTLR) == 0x50


@pytest.mark.parametrize("model,group,attr,err", [
    (V2, ADDR, V2_DIST, 0), (V2, ADDR, V2_CPU, 0), (V2, ADDR, V3_DIST, errno.ENXIO),
    (V2, DIST_REGS, G.GICD_CTLR, 0), (V2, DIST_REGS, 0x0C0, errno.ENXIO),
    (V2, DIST_REGS, 9 << 32, errno.EINVAL), (V2, CPU_REGS, G.GICC_PMR, 0),
    (V2, NR_IRQS, 0, 0), (V2, CTRL, INIT, 0), (V2, CTRL, 3, errno.ENXIO),
    (V2, REDIST_REGS, 0, errno.ENXIO), (V2, 99, 0, errno.ENXIO),
    (V3, ADDR, V3_DIST, 0), (V3, ADDR, V3_REDIST, 0), (V3, ADDR, V3_REGION, 0),
    (V3, ADDR, V2_CPU, errno.ENXIO), (V3, DIST_REGS, G.GICD_IROUTER + 0x100, 0),
    (V3, REDIST_REGS, G.GICR_WAKER, 0), (V3, CPU_SYSREGS, S.ICC_IGRPEN1_EL1.encoding, 0),
    (V3, CPU_SYSREGS, S.ICC_SGI1R_EL1.encoding, errno.ENXIO), (V3, CPU_REGS, 0, errno.ENXIO),
    (V3, CTRL, 3, 0), (V3, LEVEL_INFO, 0, 0),
])
def test_has_attr(model, group, attr, err):
    dev = device(model)
    dev.set_attr(NR_IRQS, 0, 128)
    if err:
        assert errno_of(dev.has_attr, group, attr) == err
    else:
        dev.has_attr(group, attr)


# --- resource mapping (first run) -------------------------------------------------------------


def test_map_resources_v2():
    vgic = kvm_vgic_create(FakeVm(1), V2)
    assert errno_of(vgic.kvm_vgic_map_resources) == errno.ENXIO   # no addresses
    dev = VgicDevice(kvm_vgic_create(FakeVm(1), V2))
    dev.set_attr(ADDR, V2_DIST, 0x08000000)
    dev.set_attr(ADDR, V2_CPU, 0x08000000)
    assert errno_of(dev.vgic.kvm_vgic_map_resources) == errno.EINVAL   # overlap
    assert dev.vgic.dist_base is None                 # failure destroyed the vGIC state
    ok = VgicDevice(kvm_vgic_create(FakeVm(1), V2))
    ok.set_attr(ADDR, V2_DIST, 0x08000000)
    ok.set_attr(ADDR, V2_CPU, 0x08010000)
    ok.vgic.kvm_vgic_map_resources()                  # initialises lazily
    assert ok.vgic.ready and ok.vgic.initialized and ok.vgic.nr_irqs == 256
    assert [(b, s) for b, s, _r, _w in ok.vgic.mmio_regions(0)] == [
        (0x08000000, 0x1000), (0x08010000, 0x2000)]


def test_map_resources_v3():
    dev = device(V3)
    dev.set_attr(ADDR, V3_DIST, 0x08000000)
    dev.set_attr(CTRL, INIT)
    assert errno_of(dev.vgic.kvm_vgic_map_resources) == errno.ENXIO   # no redistributors
    dev = device(V3)
    dev.set_attr(ADDR, V3_DIST, 0x08000000)
    dev.set_attr(ADDR, V3_REDIST, 0x080A0000)
    assert errno_of(dev.vgic.kvm_vgic_map_resources) == errno.EBUSY   # not initialised
    dev = device(V3, 3)
    dev.set_attr(ADDR, V3_DIST, 0x08000000)
    dev.set_attr(ADDR, V3_REGION, region(0, 0x080A0000, 2))
    dev.set_attr(CTRL, INIT)
    assert errno_of(dev.vgic.kvm_vgic_map_resources) == errno.ENXIO   # vCPU 2 has no frame
    dev = device(V3)
    dev.set_attr(ADDR, V3_REDIST, 0x08000000)
    dev.set_attr(ADDR, V3_DIST, 0x08010000)                           # inside the RD frames
    dev.set_attr(CTRL, INIT)
    assert errno_of(dev.vgic.kvm_vgic_map_resources) == errno.EINVAL
