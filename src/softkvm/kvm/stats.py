"""Per-VM and per-vCPU counters with KVM's stat names, and softkvm's own beside them.

Counterpart: include/linux/kvm_host.h (``KVM_GENERIC_VM_STATS``, ``KVM_GENERIC_VCPU_STATS``),
arch/arm64/kvm/guest.c (``kvm_vm_stats_desc``, ``kvm_vcpu_stats_desc``) and the binary stats fd
userspace reads them through (``KVM_GET_STATS_FD``, Documentation/virt/kvm/api.rst).

Each counter is a plain int attribute bumped with ``+= 1`` where KVM bumps it: the hot path pays
nothing more. A reader on another thread just reads the ints (no lock, as KVM's stats fd reads
its u64s while the vCPU runs). Names are split in two groups: ``KVM_*_STATS`` are exactly KVM's
names and meanings; ``SOFTKVM_*_STATS`` are softkvm's own (the emulated core's work, exits KVM
counts under no name of its own), so nobody mistakes one for the other.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from softkvm.arch import esr as E

# KVM_GENERIC_VCPU_STATS then arm64's kvm_vcpu_stats_desc, in KVM's order (histograms left out).
KVM_VCPU_STATS = (
    "halt_successful_poll", "halt_attempted_poll", "halt_poll_invalid", "halt_wakeup",
    "halt_poll_success_ns", "halt_poll_fail_ns", "halt_wait_ns", "blocking",
    "hvc_exit_stat", "wfe_exit_stat", "wfi_exit_stat", "mmio_exit_user", "mmio_exit_kernel",
    "signal_exits", "exits",
)
SOFTKVM_VCPU_COUNTERS = (
    "irq_exits", "smc_exit_stat", "sysreg_traps", "abort_exits", "internal_exits",
    "user_irqchip_exits", "preemptions", "vcpu_if_accesses", "psci_calls",
    "timer_irq_updates", "timer_saves", "timer_restores",
)
# Kept by the emulated core itself (hw/core.py), read when the stats are read.
SOFTKVM_CORE_STATS = ("core_slices", "core_kicks", "sysreg_emulated", "timer_sysreg_accesses",
                      "exceptions_reflected")
SOFTKVM_VCPU_STATS = SOFTKVM_VCPU_COUNTERS + SOFTKVM_CORE_STATS
KVM_VM_STATS = ("remote_tlb_flush", "remote_tlb_flush_requests")
# remote_tlb_page_flush: TLBI ...IS by VA that the other vCPUs replayed, each flushing one page
# rather than their whole TLB (counted by the cores, per op; vCPUs in parallel only).
SOFTKVM_VM_STATS = ("remote_tlb_page_flush", "remote_tb_flush", "remote_tb_page_flush",
                    "pcpu_switches", "published_mmio_reads")

# Every exit counted in ``exits`` is counted under exactly one of these (label, counter): the
# exception classes of handle_exit.c's table, DABT split the way KVM splits it.
EXIT_REASONS = (
    ("IRQ (kick)", "irq_exits"),
    ("HVC64", "hvc_exit_stat"),
    ("SMC64", "smc_exit_stat"),
    ("WFI", "wfi_exit_stat"),
    ("WFE", "wfe_exit_stat"),
    ("SYS64", "sysreg_traps"),
    ("DABT mmio user", "mmio_exit_user"),
    ("DABT mmio kernel", "mmio_exit_kernel"),
    ("external abort", "abort_exits"),
    ("internal error", "internal_exits"),
)

EC_NAMES = {E.EC_UNKNOWN: "UNKNOWN", E.EC_WFX: "WFx", E.EC_SVC64: "SVC64",
            E.EC_HVC64: "HVC64", E.EC_SMC64: "SMC64", E.EC_SYS64: "SYS64", E.EC_SVE: "SVE",
            E.EC_IABT_LOW: "IABT_LOW", E.EC_IABT_CUR: "IABT_CUR", E.EC_PC_ALIGN: "PC_ALIGN",
            E.EC_DABT_LOW: "DABT_LOW", E.EC_DABT_CUR: "DABT_CUR", E.EC_SP_ALIGN: "SP_ALIGN",
            E.EC_SERROR: "SERROR", E.EC_BRK64: "BRK64"}


@dataclass(slots=True)
class VcpuStats:
    """struct kvm_vcpu_stat, then softkvm's per-vCPU counters."""

    # --- KVM_GENERIC_VCPU_STATS: softkvm never halt-polls (KVM with halt_poll_ns=0), so the
    # poll counters stay 0 as they would there.
    halt_successful_poll: int = 0
    halt_attempted_poll: int = 0
    halt_poll_invalid: int = 0
    halt_wakeup: int = 0            # a WFI sleep ended by a wake-up (not by a signal)
    halt_poll_success_ns: int = 0
    halt_poll_fail_ns: int = 0
    halt_wait_ns: int = 0           # time asleep in kvm_vcpu_block
    blocking: int = 0               # instant: 1 while in kvm_vcpu_block
    # --- arm64 (guest.c)
    hvc_exit_stat: int = 0
    wfe_exit_stat: int = 0
    wfi_exit_stat: int = 0
    mmio_exit_user: int = 0         # DABT handed to the VMM (KVM_EXIT_MMIO)
    mmio_exit_kernel: int = 0       # DABT served in the kernel: vGIC; on a stock core also the
    #                                 coalesced ring and published registers
    signal_exits: int = 0           # KVM_EXIT_INTR because of a signal (Vcpu.interrupt)
    exits: int = 0                  # every trip out of the guest
    # --- softkvm's own
    irq_exits: int = 0              # the core stopped by a kick (KVM: ARM_EXCEPTION_IRQ)
    smc_exit_stat: int = 0
    sysreg_traps: int = 0           # trapped system-register accesses (EC SYS64)
    abort_exits: int = 0            # aborts KVM answers with an external abort (no ISV, fetch)
    internal_exits: int = 0         # KVM_EXIT_INTERNAL_ERROR
    user_irqchip_exits: int = 0     # KVM_EXIT_INTR to publish device_irq_level (no signal)
    preemptions: int = 0            # gave the physical CPU up at the end of a quantum
    vcpu_if_accesses: int = 0       # GICC/ICC_* accesses the virtual CPU interface served
    psci_calls: int = 0
    timer_irq_updates: int = 0      # kvm_timer_update_irq
    timer_saves: int = 0            # timer_save_state at vcpu_put
    timer_restores: int = 0         # timer_restore_state at vcpu_load

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class VmStats:
    """struct kvm_vm_stat, then softkvm's per-VM counters."""

    # --- KVM_GENERIC_VM_STATS: kvm_flush_remote_tlbs. Our "hardware" broadcast of a guest
    # TLBI ...IS is done by asking every other vCPU to flush, as that function does.
    remote_tlb_flush: int = 0
    remote_tlb_flush_requests: int = 0
    # IC IALLUIS or a host write to guest RAM drops the other cores' code;
    # IC IVAU drops their translations of one page (counted per page and broadcast)
    remote_tb_flush: int = 0
    remote_tb_page_flush: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class StatsRead:
    """One read of a stats fd: KVM's counters and softkvm's, each in a fixed order."""

    kvm: dict[str, int]
    softkvm: dict[str, int]
    exits_by_reason: dict[str, int]   # EXIT_REASONS: they add up to ``exits``
    # Guest exceptions to EL1 that softkvm entered itself, by EC name: on a stock core, every one;
    # softkvm's core takes them without a stop (as hardware does), leaving only injected aborts.
    reflected_by_ec: dict[str, int]


def read_vcpu_stats(stats: VcpuStats, core: dict[str, int],
                    reflected: dict[int, int]) -> StatsRead:
    """Copy the counters, merging in the core's own (``core``: SOFTKVM_CORE_STATS values)."""
    values = {**core, "exceptions_reflected": sum(reflected.values())}
    return StatsRead(
        kvm={name: getattr(stats, name) for name in KVM_VCPU_STATS},
        softkvm={name: values[name] if name in values else getattr(stats, name)
                 for name in SOFTKVM_VCPU_STATS},
        exits_by_reason={label: getattr(stats, name) for label, name in EXIT_REASONS},
        reflected_by_ec={EC_NAMES.get(ec, f"EC_{ec:#04x}"): n
                         for ec, n in sorted(reflected.items())})


def read_vm_stats(stats: VmStats, elsewhere: dict[str, int]) -> StatsRead:
    """Copy the counters, adding the counts kept elsewhere (the physical CPUs', the cores'):
    vCPUs that run in parallel broadcast their TLB and code maintenance in their cores."""
    def value(name: str) -> int:
        return getattr(stats, name, 0) + elsewhere.get(name, 0)
    return StatsRead(kvm={name: value(name) for name in KVM_VM_STATS},
                     softkvm={name: value(name) for name in SOFTKVM_VM_STATS},
                     exits_by_reason={}, reflected_by_ec={})
