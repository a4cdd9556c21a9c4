"""``struct kvm_run``: what KVM_RUN hands back to userspace (include/uapi/linux/kvm.h).

One ``KvmRun`` per vCPU, reused across runs like the mmap'd structure. A run that ends because of
a pending "signal" (``Vcpu.interrupt()``) or a forced userspace-irqchip exit returns with
``exit_reason == KVM_EXIT_INTR`` and ``ret == -EINTR`` instead of raising.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from softkvm.kvm.uapi import EXIT_REASON_NAMES, KVM_EXIT_UNKNOWN

# ``mmio.data`` (``__u8 data[8]``) read or written as the little-endian u64 it holds, in one call:
# half the cost of int.to_bytes/from_bytes and a slice, on every MMIO exit.
MMIO_DATA = struct.Struct("<Q")


@dataclass(slots=True)
class KvmRunMmio:
    phys_addr: int = 0
    data: bytearray = field(default_factory=lambda: bytearray(8))
    len: int = 0
    is_write: bool = False


@dataclass(slots=True)
class KvmSystemEvent:
    type: int = 0
    ndata: int = 0
    data: list[int] = field(default_factory=lambda: [0] * 16)


@dataclass(slots=True)
class KvmInternalError:
    suberror: int = 0
    message: str = ""


@dataclass(slots=True)
class KvmSyncRegs:
    device_irq_level: int = 0  # KVM_ARM_DEV_EL1_VTIMER | _PTIMER | _PMU


@dataclass(slots=True)
class KvmRunShared:
    regs: KvmSyncRegs = field(default_factory=KvmSyncRegs)


@dataclass(slots=True)
class KvmRun:
    exit_reason: int = KVM_EXIT_UNKNOWN
    ret: int = 0
    immediate_exit: bool = False
    mmio: KvmRunMmio = field(default_factory=KvmRunMmio)
    system_event: KvmSystemEvent = field(default_factory=KvmSystemEvent)
    internal: KvmInternalError = field(default_factory=KvmInternalError)
    s: KvmRunShared = field(default_factory=KvmRunShared)

    @property
    def exit_name(self) -> str:
        return EXIT_REASON_NAMES.get(self.exit_reason, str(self.exit_reason))
