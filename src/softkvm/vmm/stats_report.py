"""Format KVM's counters (per VM and per vCPU) for ``--stats``, like ``kvm_stat`` would."""

from __future__ import annotations

from softkvm.arch import esr as E
from softkvm.kvm.api import Vm

EC_NAMES = {E.EC_UNKNOWN: "UNKNOWN", E.EC_SVC64: "SVC64", E.EC_BRK64: "BRK64",
            E.EC_IABT_LOW: "IABT_LOW", E.EC_IABT_CUR: "IABT_CUR", E.EC_DABT_LOW: "DABT_LOW",
            E.EC_DABT_CUR: "DABT_CUR", E.EC_SYS64: "SYS64", E.EC_PC_ALIGN: "PC_ALIGN",
            E.EC_SP_ALIGN: "SP_ALIGN", E.EC_SVE: "SVE"}


def format_stats(vm: Vm) -> str:
    """A table: one row per counter, one column per vCPU, plus the VM-wide counters."""
    names = [n for n in vm.vcpus[0].stats.as_dict()] if vm.vcpus else []
    header = ["counter"] + [f"vcpu{v.vcpu_id}" for v in vm.vcpus]
    rows = [[n] + [str(v.stats.as_dict()[n]) for v in vm.vcpus] for n in names]
    ecs = sorted({ec for v in vm.vcpus for ec in v.stats.reflected_by_ec})
    rows += [[f"reflected {EC_NAMES.get(ec, hex(ec))}"]
             + [str(v.stats.reflected_by_ec.get(ec, 0)) for v in vm.vcpus] for ec in ecs]
    vm.stats.pcpu_switches = vm.pcpu.switches
    rows += [[f"vm {k}", str(val)] + [""] * (len(vm.vcpus) - 1)
             for k, val in vm.stats.as_dict().items()]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths))) for r in [header] + rows]
    return "\n".join(lines)
