"""Per-VM and per-vCPU counters with KVM's stat names (arch/arm64/kvm/guest.c, kvm_main.c).

KVM exports these through binary stats fds and debugfs; ours are plain dataclasses the CLI and the
benchmark read. Extra softkvm counters (the emulated core's own work) are marked as such.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass(slots=True)
class VcpuStats:
    exits: int = 0
    hvc_exit_stat: int = 0
    smc_exit_stat: int = 0
    wfe_exit_stat: int = 0
    wfi_exit_stat: int = 0
    mmio_exit_user: int = 0
    mmio_exit_kernel: int = 0
    signal_exits: int = 0
    irq_exits: int = 0            # exits forced by a kick (host interrupt / request)
    halt_wakeup: int = 0
    halt_successful_poll: int = 0
    halt_attempted_poll: int = 0
    halt_exits: int = 0
    sysreg_traps: int = 0
    psci_calls: int = 0
    timer_irq_updates: int = 0    # kvm_timer_update_irq
    timer_saves: int = 0          # timer_save_state at vcpu_put
    timer_restores: int = 0       # timer_restore_state at vcpu_load
    # softkvm's core
    exceptions_reflected: int = 0
    core_slices: int = 0
    core_kicks: int = 0
    sysreg_emulated: int = 0
    timer_sysreg_accesses: int = 0
    preemptions: int = 0
    reflected_by_ec: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "reflected_by_ec"}


@dataclass(slots=True)
class VmStats:
    remote_tlb_flush: int = 0
    remote_tb_flush: int = 0
    pcpu_switches: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
