"""The vGIC device fd: KVM_{SET,GET,HAS}_DEVICE_ATTR for KVM_DEV_TYPE_ARM_VGIC_V2 / _V3.

Counterpart: arch/arm64/kvm/vgic/vgic-kvm-device.c (``kvm_vgic_addr``, ``vgic_set_common_attr``,
``vgic_get_common_attr``, ``vgic_v2_parse_attr``, ``vgic_v3_parse_attr``,
``vgic_v{2,3}_attr_regs_access``, ``vgic_v{2,3}_has_attr``) and
Documentation/virt/kvm/devices/arm-vgic.rst, arm-vgic-v3.rst. Errors are raised as the ioctl
would fail them: ``KvmError(errno, message)``. Register groups move 32-bit values (u64 for
CPU_SYSREGS); "all vCPUs idle" means no vCPU is between flush and sync (else EBUSY).
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from softkvm.arch import gic as G
from softkvm.kvm import uapi
from softkvm.kvm.errors import KvmError
from softkvm.kvm.vgic import vgic_init as I
from softkvm.kvm.vgic.arm_vgic import VGIC_ADDR_ALIGN_V2, VGIC_ADDR_ALIGN_V3, vgic_check_iorange
from softkvm.kvm.vgic.vgic import Vgic, VgicVmHost, kvm_vgic_create
from softkvm.kvm.vgic.vgic_mmio import VgicIoDevice
from softkvm.kvm.vgic.vgic_mmio_v2 import VGIC_V2_CPU, VGIC_V2_DIST
from softkvm.kvm.vgic.vgic_mmio_v3 import (
    VGIC_V3_DIST,
    VGIC_V3_RDIST,
    read_line_level_info,
    write_line_level_info,
)
from softkvm.kvm.vgic.vgic_sys_reg_v3 import (
    vgic_v3_cpu_sysregs_uaccess,
    vgic_v3_has_cpu_sysregs_attr,
)
from softkvm.kvm.vgic.vgic_v3 import vgic_v3_alloc_redist_region

# UAPI pieces softkvm.kvm.uapi does not carry (arch/arm64/include/uapi/asm/kvm.h).
KVM_VGIC_ITS_ADDR_TYPE = 4
KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES = 3
KVM_DEV_ARM_VGIC_CPUID_MASK = 0xFF << uapi.KVM_DEV_ARM_VGIC_CPUID_SHIFT
KVM_DEV_ARM_VGIC_V3_MPIDR_MASK = 0xFFFFFFFF << uapi.KVM_DEV_ARM_VGIC_V3_MPIDR_SHIFT
KVM_DEV_ARM_VGIC_LINE_LEVEL_INFO_MASK = 0x3FFFFF << uapi.KVM_DEV_ARM_VGIC_LINE_LEVEL_INFO_SHIFT
KVM_VGIC_V3_RDIST_INDEX_MASK = 0xFFF
KVM_VGIC_V3_RDIST_FLAGS = G.Field(12, 4)
KVM_VGIC_V3_RDIST_BASE_MASK = ((1 << 52) - 1) & ~0xFFFF
KVM_VGIC_V3_RDIST_COUNT = G.Field(52, 12)
VGIC_ADDR_UNDEF = (1 << 64) - 1   # what reading an unset address returns

# attr MPIDR byte layout (Aff3.Aff2.Aff1.Aff0) -> MPIDR_EL1 layout
_ATTR_AFF = (G.Field(0, 8), G.Field(8, 8), G.Field(16, 8), G.Field(24, 8))
_MPIDR_AFF = (G.MPIDR_AFF0, G.MPIDR_AFF1, G.MPIDR_AFF2, G.MPIDR_AFF3)

_V2, _V3 = uapi.KVM_DEV_TYPE_ARM_VGIC_V2, uapi.KVM_DEV_TYPE_ARM_VGIC_V3
# KVM_DEV_ARM_VGIC_GRP_ADDR types with a plain base: (model, Vgic attribute, alignment, size)
_ADDR_TYPES = {
    uapi.KVM_VGIC_V2_ADDR_TYPE_DIST: (_V2, "dist_base", VGIC_ADDR_ALIGN_V2,
                                      uapi.KVM_VGIC_V2_DIST_SIZE),
    uapi.KVM_VGIC_V2_ADDR_TYPE_CPU: (_V2, "cpu_base", VGIC_ADDR_ALIGN_V2,
                                     uapi.KVM_VGIC_V2_CPU_SIZE),
    uapi.KVM_VGIC_V3_ADDR_TYPE_DIST: (_V3, "dist_base", VGIC_ADDR_ALIGN_V3,
                                      uapi.KVM_VGIC_V3_DIST_SIZE),
}
_REDIST_TYPES = (uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST, uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION)


def _fail(ret: int, message: str) -> None:
    if ret < 0:
        raise KvmError(-ret, message)


def vgic_to_mpidr(attr_mpidr: int) -> int:
    """The attribute's Aff3.Aff2.Aff1.Aff0 bytes as an MPIDR_EL1 value (kernel: VGIC_TO_MPIDR)."""
    value = 0
    for src, dst in zip(_ATTR_AFF, _MPIDR_AFF, strict=True):
        value = dst.put(value, src.get(attr_mpidr))
    return value


class VgicDevice:
    """The device fd KVM_CREATE_DEVICE returns for a vGIC."""

    def __init__(self, vgic: Vgic) -> None:
        self.vgic = vgic
        self._set: dict[int, Callable[[int, int], object]] = {
            uapi.KVM_DEV_ARM_VGIC_GRP_ADDR: lambda attr, value: self._addr(attr, value, True),
            uapi.KVM_DEV_ARM_VGIC_GRP_NR_IRQS: lambda _attr, value: self._set_nr_irqs(value),
            uapi.KVM_DEV_ARM_VGIC_GRP_CTRL: lambda attr, _value: self._ctrl(attr),
        }
        self._get: dict[int, Callable[[int, int], int]] = {
            uapi.KVM_DEV_ARM_VGIC_GRP_ADDR: lambda attr, value: self._addr(attr, value, False),
            uapi.KVM_DEV_ARM_VGIC_GRP_NR_IRQS: lambda _attr, _value: self.vgic.nr_irqs,
        }
        for group in self._reg_groups():
            self._set[group] = _regs_accessor(self, group, True)
            self._get[group] = _regs_accessor(self, group, False)

    @classmethod
    def create(cls, vm: VgicVmHost, dev_type: int, nr_lr: int = 4) -> VgicDevice:
        """KVM_CREATE_DEVICE {type 5 | 7}."""
        return cls(kvm_vgic_create(vm, dev_type, nr_lr))

    def _reg_groups(self) -> tuple[int, ...]:
        if self.vgic.is_v2:
            return (uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS, uapi.KVM_DEV_ARM_VGIC_GRP_CPU_REGS)
        return (uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS, uapi.KVM_DEV_ARM_VGIC_GRP_REDIST_REGS,
                uapi.KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS, uapi.KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO)

    # --- the three ioctls ------------------------------------------------------------------------

    def set_attr(self, group: int, attr: int, value: int = 0) -> None:
        handler = self._set.get(group)
        if handler is None:
            raise KvmError(errno.ENXIO, f"attribute group {group} is not settable on this vGIC")
        with self.vgic.lock:
            handler(attr, value)

    def get_attr(self, group: int, attr: int, value: int = 0) -> int:
        """``value`` carries input where KVM reads it first (the REDIST_REGION index)."""
        handler = self._get.get(group)
        if handler is None:
            raise KvmError(errno.ENXIO, f"attribute group {group} is not readable on this vGIC")
        with self.vgic.lock:
            return handler(attr, value)

    def has_attr(self, group: int, attr: int, value: int = 0) -> None:
        """Raises ENXIO (or the parse error) when the attribute does not exist."""
        with self.vgic.lock:
            _fail(self._has_attr(group, attr), f"no attribute {attr:#x} in group {group}")

    def _has_addr_attr(self, attr: int) -> int:
        if attr in _REDIST_TYPES:
            model = _V3
        elif attr in _ADDR_TYPES:
            model = _ADDR_TYPES[attr][0]
        else:
            return -errno.ENXIO
        return 0 if model == self.vgic.model else -errno.ENXIO

    def _has_attr(self, group: int, attr: int) -> int:
        dist = self.vgic
        if group == uapi.KVM_DEV_ARM_VGIC_GRP_ADDR:
            return self._has_addr_attr(attr)
        if group == uapi.KVM_DEV_ARM_VGIC_GRP_NR_IRQS:
            return 0
        if group == uapi.KVM_DEV_ARM_VGIC_GRP_CTRL:
            ok = (uapi.KVM_DEV_ARM_VGIC_CTRL_INIT,) + (
                () if dist.is_v2 else (KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES,))
            return 0 if attr in ok else -errno.ENXIO
        if group == uapi.KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO and not dist.is_v2:
            known = self._level_info_type(attr) == uapi.VGIC_LEVEL_INFO_LINE_LEVEL
            return 0 if known else -errno.ENXIO
        if group not in self._reg_groups():
            return -errno.ENXIO
        _vcpu, offset = self._parse(group, attr)   # EINVAL for a vCPU that is not there
        if group == uapi.KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS:
            encoding = attr & uapi.KVM_DEV_ARM_VGIC_SYSREG_INSTR_MASK
            return 0 if vgic_v3_has_cpu_sysregs_attr(encoding) else -errno.ENXIO
        return 0 if self._iodev(group).has(dist, offset) else -errno.ENXIO

    # --- KVM_DEV_ARM_VGIC_GRP_ADDR ---------------------------------------------------------------

    def _addr(self, attr: int, value: int, write: bool) -> int:
        dist = self.vgic
        if attr in _REDIST_TYPES:
            if dist.is_v2:
                raise KvmError(errno.ENXIO, "redistributor addresses need a GICv3 device")
            return self._redist_addr(attr, value, write)
        kind = _ADDR_TYPES.get(attr)
        if kind is None:
            raise KvmError(errno.ENXIO, f"unknown vGIC address type {attr}")
        model, name, alignment, size = kind
        if model != dist.model:
            raise KvmError(errno.ENXIO, f"address type {attr} belongs to the other GIC model")
        current = getattr(dist, name)
        if not write:
            return VGIC_ADDR_UNDEF if current is None else current
        _fail(vgic_check_iorange(current, value, alignment, size),
              f"cannot place the {name.replace('_base', '')} frame at {value:#x}: set once, "
              f"{alignment:#x}-aligned, inside the {1 << 40:#x}-byte IPA space")
        setattr(dist, name, value)
        return 0

    def _redist_addr(self, attr: int, value: int, write: bool) -> int:
        dist = self.vgic
        if attr == uapi.KVM_VGIC_V3_ADDR_TYPE_REDIST:
            if write:
                _fail(vgic_v3_alloc_redist_region(dist, 0, value, 0),
                      f"cannot place the redistributors at {value:#x}: 64K-aligned, set once, "
                      "no overlap, not mixed with KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION")
                return 0
            return dist.rd_regions[0].base if dist.rd_regions else VGIC_ADDR_UNDEF
        index = value & KVM_VGIC_V3_RDIST_INDEX_MASK
        if write:
            count, flags = KVM_VGIC_V3_RDIST_COUNT.get(value), KVM_VGIC_V3_RDIST_FLAGS.get(value)
            if not count or flags:
                raise KvmError(errno.EINVAL, "a redistributor region needs count > 0 and no flags")
            _fail(vgic_v3_alloc_redist_region(dist, index, value & KVM_VGIC_V3_RDIST_BASE_MASK,
                                              count),
                  f"cannot add redistributor region {index}: indices ascend from 0, 64K-aligned, "
                  "no overlap, not mixed with KVM_VGIC_V3_ADDR_TYPE_REDIST")
            return 0
        region = next((r for r in dist.rd_regions if r.index == index), None)
        if region is None:
            raise KvmError(errno.ENOENT, f"no redistributor region {index}")
        return index | region.base | KVM_VGIC_V3_RDIST_COUNT.val(region.count)

    # --- NR_IRQS, CTRL -------------------------------------------------------------------------

    def _set_nr_irqs(self, value: int) -> None:
        if value < G.NR_PRIVATE_IRQS + 32 or value > uapi.VGIC_MAX_RESERVED or value % 32:
            raise KvmError(errno.EINVAL, f"NR_IRQS {value}: need 64..992, a multiple of 32")
        if self.vgic.nr_spis:
            raise KvmError(errno.EBUSY, "NR_IRQS is already set (by userspace or by "
                           "initialisation)")
        self.vgic.nr_spis = value - G.NR_PRIVATE_IRQS

    def _ctrl(self, attr: int) -> None:
        if attr == uapi.KVM_DEV_ARM_VGIC_CTRL_INIT:
            _fail(I.vgic_init(self.vgic), "vGIC initialisation failed")
        elif attr == KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES and not self.vgic.is_v2:
            return   # no LPIs, no pending tables to write
        else:
            raise KvmError(errno.ENXIO, f"unknown KVM_DEV_ARM_VGIC_GRP_CTRL attribute {attr}")

    # --- register groups -----------------------------------------------------------------------

    def _parse(self, group: int, attr: int) -> tuple[int, int]:
        """(vCPU, offset) named by a register attribute, EINVAL for a vCPU that is not there."""
        dist = self.vgic
        offset = attr & uapi.KVM_DEV_ARM_VGIC_OFFSET_MASK
        if dist.is_v2:
            cpuid = (attr & KVM_DEV_ARM_VGIC_CPUID_MASK) >> uapi.KVM_DEV_ARM_VGIC_CPUID_SHIFT
            vcpu: int | None = cpuid if cpuid < dist.nr_vcpus() else None
        elif group == uapi.KVM_DEV_ARM_VGIC_GRP_DIST_REGS:
            vcpu = 0 if dist.nr_vcpus() else None   # the distributor attr holds no MPIDR
        else:
            attr_mpidr = (attr & KVM_DEV_ARM_VGIC_V3_MPIDR_MASK) >> (
                uapi.KVM_DEV_ARM_VGIC_V3_MPIDR_SHIFT)
            vcpu = dist.vcpu_by_mpidr(vgic_to_mpidr(attr_mpidr))
        if vcpu is None:
            raise KvmError(errno.EINVAL, f"attribute {attr:#x} names no vCPU")
        return vcpu, offset

    def _iodev(self, group: int) -> VgicIoDevice:
        if group == uapi.KVM_DEV_ARM_VGIC_GRP_CPU_REGS:
            return VGIC_V2_CPU
        if group == uapi.KVM_DEV_ARM_VGIC_GRP_REDIST_REGS:
            return VGIC_V3_RDIST
        return VGIC_V2_DIST if self.vgic.is_v2 else VGIC_V3_DIST

    @staticmethod
    def _level_info_type(attr: int) -> int:
        return (attr & KVM_DEV_ARM_VGIC_LINE_LEVEL_INFO_MASK) >> (
            uapi.KVM_DEV_ARM_VGIC_LINE_LEVEL_INFO_SHIFT)

    def regs_access(self, group: int, attr: int, is_write: bool, value: int) -> int:
        """vgic_v{2,3}_attr_regs_access: vCPUs idle, v2 initialises, v3 must be initialised."""
        dist = self.vgic
        vcpu, offset = self._parse(group, attr)
        if any(cpu.live for cpu in dist.cpus):
            raise KvmError(errno.EBUSY, "vGIC registers can only be accessed while no vCPU runs")
        if dist.is_v2:
            _fail(I.vgic_init(dist), "vGIC initialisation failed")
        elif not dist.initialized:
            raise KvmError(errno.EBUSY, "initialise the GICv3 (KVM_DEV_ARM_VGIC_CTRL_INIT) before "
                           "accessing its registers")
        if group == uapi.KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS:
            encoding = attr & uapi.KVM_DEV_ARM_VGIC_SYSREG_INSTR_MASK
            err, result = vgic_v3_cpu_sysregs_uaccess(dist, vcpu, is_write, encoding, value)
        elif group == uapi.KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO:
            err, result = self._level_info(vcpu, attr, is_write, value)
        else:
            err, result = self._iodev(group).uaccess(dist, vcpu, is_write, offset, value)
        _fail(err, f"register access {attr:#x} in group {group} failed")
        return result

    def _level_info(self, vcpu: int, attr: int, is_write: bool, value: int) -> tuple[int, int]:
        if self._level_info_type(attr) != uapi.VGIC_LEVEL_INFO_LINE_LEVEL:
            return -errno.EINVAL, 0
        intid = attr & uapi.KVM_DEV_ARM_VGIC_LINE_LEVEL_INTID_MASK
        if intid % 32:
            return -errno.EINVAL, 0
        if is_write:
            write_line_level_info(self.vgic, vcpu, intid, value & G.U32_MASK)
            return 0, 0
        return 0, read_line_level_info(self.vgic, vcpu, intid)


def _regs_accessor(device: VgicDevice, group: int, is_write: bool) -> Callable[[int, int], int]:
    def access(attr: int, value: int) -> int:
        return device.regs_access(group, attr, is_write, value)
    return access
