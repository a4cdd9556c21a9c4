"""PSCI 1.0 (and 0.1) handled in the "kernel", over HVC/SMC #0.

Counterpart: arch/arm64/kvm/psci.c and hypercalls.c (``kvm_smccc_call_handler``,
``kvm_psci_vcpu_on``, ``kvm_psci_vcpu_affinity_info``, ``kvm_prepare_system_event``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from softkvm.arch import psci as P
from softkvm.kvm import arm, uapi

if TYPE_CHECKING:
    from softkvm.kvm.api import Vcpu

MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF

FEATURES_1_0 = {
    P.PSCI_VERSION, P.CPU_SUSPEND_32, P.CPU_SUSPEND_64, P.CPU_OFF, P.CPU_ON_32, P.CPU_ON_64,
    P.AFFINITY_INFO_32, P.AFFINITY_INFO_64, P.MIGRATE_INFO_TYPE, P.SYSTEM_OFF, P.SYSTEM_RESET,
    P.PSCI_FEATURES, P.SMCCC_VERSION,
}


def kvm_smccc_call_handler(vcpu: Vcpu) -> int:
    """Dispatch the SMCCC call in x0; 1 = resume the guest, 0 = exit to userspace."""
    core = vcpu.core
    fn = core.get_x(0) & MASK32
    vcpu.stats.psci_calls += 1
    if vcpu.tracer.on:
        return _traced_dispatch(vcpu, fn)
    return _dispatch(vcpu, fn)


def _dispatch(vcpu: Vcpu, fn: int) -> int:
    if not vcpu.features & (1 << uapi.KVM_ARM_VCPU_PSCI_0_2):
        return _psci_0_1(vcpu, fn)
    handler = HANDLERS_1_0.get(fn)
    if handler is None:
        return _set_ret(vcpu, P.NOT_SUPPORTED)
    return handler(vcpu, fn)


def _traced_dispatch(vcpu: Vcpu, fn: int) -> int:
    """kvm_psci_call: the function, its arguments and the guest's x0 (signed) after it; a
    call that exits to userspace (SYSTEM_OFF, SYSTEM_RESET) has no result yet."""
    args = _args(vcpu, fn)  # read before the call: results overwrite x0..x3
    ret = _dispatch(vcpu, fn)
    handler = HANDLERS_1_0.get(fn) or _PSCI_0_1.get(fn)
    name = handler.__name__ if handler is not None else "unknown"
    x0 = vcpu.core.get_x(0)
    result = (x0 - (1 << 64) if x0 >> 63 else x0) if ret else None
    vcpu.tracer.emit("kvm_psci_call", vcpu.vcpu_id, fn=fn, function=name, a1=args[0],
                     a2=args[1], a3=args[2], result=result)
    return ret


def _set_ret(vcpu: Vcpu, value: int) -> int:
    core = vcpu.core
    core.set_x(0, value & MASK64)
    for n in (1, 2, 3):
        core.set_x(n, 0)
    return 1


def _args(vcpu: Vcpu, fn: int) -> tuple[int, int, int]:
    """x1..x3, truncated to 32 bits for the SMC32/HVC32 convention."""
    mask = MASK64 if P.is_64bit(fn) else MASK32
    core = vcpu.core
    return core.get_x(1) & mask, core.get_x(2) & mask, core.get_x(3) & mask


def psci_version(vcpu: Vcpu, _fn: int) -> int:
    return _set_ret(vcpu, vcpu.vm.psci_version)


def psci_features(vcpu: Vcpu, fn: int) -> int:
    feature = _args(vcpu, fn)[0] & MASK32
    return _set_ret(vcpu, P.SUCCESS if feature in FEATURES_1_0 else P.NOT_SUPPORTED)


def smccc_version(vcpu: Vcpu, _fn: int) -> int:
    return _set_ret(vcpu, P.SMCCC_VERSION_1_1)


def cpu_suspend(vcpu: Vcpu, _fn: int) -> int:
    """Every power state retains context, so this is a WFI (psci.c kvm_psci_vcpu_suspend)."""
    arm.kvm_vcpu_block(vcpu)
    return _set_ret(vcpu, P.SUCCESS)


def cpu_off(vcpu: Vcpu, _fn: int) -> int:
    vcpu.power_off = True
    arm.kvm_make_request(vcpu, arm.REQ_SLEEP)
    return 1


def cpu_on(vcpu: Vcpu, fn: int) -> int:
    target_mpidr, entry, context = _args(vcpu, fn)
    return _set_ret(vcpu, kvm_psci_vcpu_on(vcpu, target_mpidr, entry, context))


def kvm_psci_vcpu_on(source: Vcpu, target_mpidr: int, entry: int, context: int) -> int:
    vm = source.vm
    if target_mpidr & ~P.MPIDR_HWID_MASK:
        return P.INVALID_PARAMETERS
    with vm.lock:  # racing CPU_ONs of one target: exactly one wins
        target = vm.vcpu_by_mpidr(target_mpidr)
        if target is None:
            return P.INVALID_PARAMETERS
        if not target.power_off:
            return P.ALREADY_ON
        target.reset_state = (entry, context)
        arm.kvm_make_request(target, arm.REQ_VCPU_RESET)
        target.power_off = False  # cleared last, once the reset state is in place
    arm.kvm_vcpu_kick(target)
    return P.SUCCESS


def affinity_info(vcpu: Vcpu, fn: int) -> int:
    target_affinity, level, _ = _args(vcpu, fn)
    if level > 3:
        return _set_ret(vcpu, P.INVALID_PARAMETERS)
    mask = P.MPIDR_HWID_MASK & ~_affinity_level_mask(level)
    target_affinity &= mask
    matches = [v for v in vcpu.vm.vcpus if v.mpidr & mask == target_affinity]
    if not matches:
        return _set_ret(vcpu, P.INVALID_PARAMETERS)
    on = any(not v.power_off for v in matches)
    return _set_ret(vcpu, P.AFFINITY_ON if on else P.AFFINITY_OFF)


def _affinity_level_mask(level: int) -> int:
    """The affinity fields below ``level`` (ignored when matching)."""
    return {0: 0, 1: 0xFF, 2: 0xFFFF, 3: 0xFFFFFF}[level]


def migrate_info_type(vcpu: Vcpu, _fn: int) -> int:
    return _set_ret(vcpu, P.MIGRATE_INFO_TYPE_MP)


def system_off(vcpu: Vcpu, _fn: int) -> int:
    return kvm_prepare_system_event(vcpu, uapi.KVM_SYSTEM_EVENT_SHUTDOWN)


def system_reset(vcpu: Vcpu, _fn: int) -> int:
    return kvm_prepare_system_event(vcpu, uapi.KVM_SYSTEM_EVENT_RESET)


def kvm_prepare_system_event(vcpu: Vcpu, event_type: int, flags: int = 0) -> int:
    """Stop every vCPU and tell userspace; x0 reads INTERNAL_FAILURE if the VMM resumes."""
    for other in vcpu.vm.vcpus:
        other.power_off = True
        arm.kvm_make_request(other, arm.REQ_SLEEP)
        if other is not vcpu:
            arm.kvm_vcpu_kick(other)
    run = vcpu.run_struct
    run.exit_reason = uapi.KVM_EXIT_SYSTEM_EVENT
    run.system_event.type = event_type
    run.system_event.ndata = 1
    run.system_event.data[0] = flags
    vcpu.core.set_x(0, P.INTERNAL_FAILURE & MASK64)
    return 0


def _psci_0_1(vcpu: Vcpu, fn: int) -> int:
    """PSCI 0.1: only CPU_OFF and CPU_ON, at KVM's private function ids."""
    if fn == P.PSCI_0_1_CPU_OFF:
        return cpu_off(vcpu, fn)
    if fn == P.PSCI_0_1_CPU_ON:
        target, entry, context = _args(vcpu, P.CPU_ON_64)
        result = kvm_psci_vcpu_on(vcpu, target, entry, context)
        return _set_ret(vcpu, P.INVALID_PARAMETERS if result == P.ALREADY_ON else result)
    return _set_ret(vcpu, P.NOT_SUPPORTED)


_PSCI_0_1 = {P.PSCI_0_1_CPU_OFF: cpu_off, P.PSCI_0_1_CPU_ON: cpu_on}   # names for the trace

HANDLERS_1_0: dict[int, Callable[[Vcpu, int], int]] = {
    P.PSCI_VERSION: psci_version,
    P.CPU_SUSPEND_32: cpu_suspend,
    P.CPU_SUSPEND_64: cpu_suspend,
    P.CPU_OFF: cpu_off,
    P.CPU_ON_32: cpu_on,
    P.CPU_ON_64: cpu_on,
    P.AFFINITY_INFO_32: affinity_info,
    P.AFFINITY_INFO_64: affinity_info,
    P.MIGRATE_INFO_TYPE: migrate_info_type,
    P.SYSTEM_OFF: system_off,
    P.SYSTEM_RESET: system_reset,
    P.PSCI_FEATURES: psci_features,
    P.SMCCC_VERSION: smccc_version,
}
