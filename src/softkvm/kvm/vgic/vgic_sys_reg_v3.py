"""GICv3 CPU interface system registers: the trapped SGI generators and the userspace view.

Counterpart: arch/arm64/kvm/vgic-sys-reg-v3.c (``gic_v3_icc_reg_descs``,
``vgic_v3_cpu_sysregs_uaccess``, ``set_gic_ctlr``, ``set_gic_sre``) and sys_regs.c
(``access_gic_sgi``). The guest's other ICC accesses go to the virtual CPU interface hardware
(``VcpuInterface.icc_read/icc_write``), as ICV_* registers do under HCR_EL2.IMO/FMO.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from types import MappingProxyType
from typing import TYPE_CHECKING

from softkvm.arch import gic as G
from softkvm.arch import sysregs as S
from softkvm.arch.sysregs import sys_reg
from softkvm.hw.vcpu_if import VcpuInterface

if TYPE_CHECKING:
    from softkvm.kvm.vgic.vgic import Vgic

# SGI generation registers (write-only, trapped to KVM) -> may the access raise group-1 SGIs?
# SGI0R and the Secure alias ASGI1R generate group 0 only: with GICD_CTLR.DS=1 there is no
# "alternative" Secure group.
SGI_REGISTERS: MappingProxyType[int, bool] = MappingProxyType({
    S.ICC_SGI1R_EL1.encoding: True,
    S.ICC_ASGI1R_EL1.encoding: False,
    S.ICC_SGI0R_EL1.encoding: False,
})

_Get = Callable[[VcpuInterface, int], tuple[int, int]]      # (vif, encoding) -> (err, value)
_Set = Callable[[VcpuInterface, int, int], int]             # (vif, encoding, value) -> err


def _get_plain(vif: VcpuInterface, encoding: int) -> tuple[int, int]:
    value = vif.icc_read(encoding)
    return (0, value) if value is not None else (-errno.EINVAL, 0)


def _set_plain(vif: VcpuInterface, encoding: int, value: int) -> int:
    return 0 if vif.icc_write(encoding, value, from_guest=False) else -errno.EINVAL


def _set_ctlr(vif: VcpuInterface, encoding: int, value: int) -> int:
    """Refuse state this interface cannot hold (more priority/ID bits, SEIS/A3V mismatch);
    keep CBPR and EOImode."""
    f, ours = G.ICC_CTLR_F, vif.icc_read(encoding) or 0
    if (f.PRIbits.get(value) > f.PRIbits.get(ours) or f.IDbits.get(value) > f.IDbits.get(ours)
            or f.SEIS.get(value) != f.SEIS.get(ours) or f.A3V.get(value) != f.A3V.get(ours)):
        return -errno.EINVAL
    vif.vmcr.cbpr = bool(f.CBPR.get(value))
    vif.vmcr.eoim = bool(f.EOImode.get(value))
    return 0


def _set_sre(_vif: VcpuInterface, _encoding: int, value: int) -> int:
    return 0 if G.ICC_SRE_F.SRE.get(value) else -errno.EINVAL   # SRE is fixed to 1


def _apr_regs() -> dict[int, tuple[_Get, _Set]]:
    """AP0R0-3/AP1R0-3 all have descriptors; beyond the implemented ones access is -EINVAL."""
    regs: dict[int, tuple[_Get, _Set]] = {}
    for n in range(G.MAX_APR_REGS):
        for encoding in (sys_reg(3, 0, 12, 8, 4 + n), sys_reg(3, 0, 12, 9, n)):
            regs[encoding] = (_get_plain, _set_plain)
    return regs


CPU_SYSREGS: MappingProxyType[int, tuple[_Get, _Set]] = MappingProxyType({
    S.ICC_PMR_EL1.encoding: (_get_plain, _set_plain),
    S.ICC_BPR0_EL1.encoding: (_get_plain, _set_plain),
    S.ICC_BPR1_EL1.encoding: (_get_plain, _set_plain),
    S.ICC_CTLR_EL1.encoding: (_get_plain, _set_ctlr),
    S.ICC_SRE_EL1.encoding: (_get_plain, _set_sre),
    S.ICC_IGRPEN0_EL1.encoding: (_get_plain, _set_plain),
    S.ICC_IGRPEN1_EL1.encoding: (_get_plain, _set_plain),
    **_apr_regs(),
})


def vgic_v3_has_cpu_sysregs_attr(encoding: int) -> bool:
    return encoding in CPU_SYSREGS


def vgic_v3_cpu_sysregs_uaccess(dist: Vgic, vcpu: int, is_write: bool, encoding: int,
                                value: int = 0) -> tuple[int, int]:
    """KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS: (0 or -errno, value read)."""
    desc = CPU_SYSREGS.get(encoding)
    if desc is None:
        return -errno.ENXIO, 0
    vif = dist.cpus[vcpu].vif
    if is_write:
        return desc[1](vif, encoding, value), 0
    return desc[0](vif, encoding)
