"""Guest aborts on unbacked physical addresses: MMIO exits and their completion.

Counterpart: arch/arm64/kvm/mmu.c (``kvm_handle_guest_abort``: no memslot → MMIO, instruction
fetch → prefetch abort) and arch/arm64/kvm/mmio.c (``io_mem_abort``, ``kvm_handle_mmio_return``),
plus inject_fault.c for the external aborts. In-kernel devices (the vGIC) never get here: the core
serves them synchronously.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from softkvm.arch import esr as E
from softkvm.hw.core import CoreExit
from softkvm.hw.mmio_decode import MmioInsn
from softkvm.kvm import uapi
from softkvm.kvm.kvm_run import MMIO_DATA

if TYPE_CHECKING:
    from softkvm.kvm.api import Vcpu

MASK64 = 0xFFFFFFFFFFFFFFFF


@dataclass(slots=True)
class PendingMmio:
    insn: MmioInsn
    addr: int
    far: int


def io_mem_abort(vcpu: Vcpu, exit_: CoreExit) -> int:
    """A load/store hit no RAM: a coalesced write is queued, a load of a published register is
    answered, anything else goes to userspace as KVM_EXIT_MMIO."""
    insn = exit_.insn
    if insn is None:  # not a single-register access (KVM: ISV=0): an external abort
        vcpu.stats.abort_exits += 1
        inject_sea(vcpu, is_write=exit_.is_write, is_fetch=False, far=None)
        return 1
    data = (vcpu.core.get_x(insn.rt) if not insn.is_load else 0) & ((1 << (8 * insn.size)) - 1)
    if vcpu.tracer.on:  # a write carries its data; a read is satisfied by userspace later
        vcpu.tracer.emit("kvm_mmio", vcpu.vcpu_id,
                         type="unsatisfied-read" if insn.is_load else "write", len=insn.size,
                         gpa=exit_.addr, val=None if insn.is_load else data)
    vcpu.mmio_needed = PendingMmio(insn, exit_.addr, exit_.va)
    run = vcpu.run_struct
    if insn.is_load:
        published = vcpu.vm.published_mmio
        value = (published.read(exit_.addr, insn.size, vcpu.vcpu_id) if published.registers
                 else None)
        if value is not None:  # kvm_io_bus_read took it: a published register (stock core)
            MMIO_DATA.pack_into(run.mmio.data, 0, value)
            vcpu.stats.mmio_exit_kernel += 1
            kvm_handle_mmio_return(vcpu)
            return 1
    elif vcpu.vm.coalesced_mmio.write(exit_.addr, insn.size, data):
        vcpu.stats.mmio_exit_kernel += 1  # kvm_io_bus_write took it: the coalesced ring
        kvm_handle_mmio_return(vcpu)
        return 1
    run.exit_reason = uapi.KVM_EXIT_MMIO
    mmio = run.mmio
    mmio.phys_addr = exit_.addr
    mmio.len = insn.size
    mmio.is_write = not insn.is_load
    MMIO_DATA.pack_into(mmio.data, 0, data)
    vcpu.stats.mmio_exit_user += 1
    return 0


def kvm_handle_mmio_return(vcpu: Vcpu) -> None:
    """Complete the access userspace just emulated: load the data, write back, step over."""
    if vcpu.pending_sea:  # the VMM refused the access: inject_pending_sea aborts it instead
        return
    pending = vcpu.mmio_needed
    vcpu.mmio_needed = None
    if not isinstance(pending, PendingMmio):
        return
    core, insn, run = vcpu.core, pending.insn, vcpu.run_struct
    if insn.is_load:
        raw = MMIO_DATA.unpack_from(run.mmio.data)[0] & ((1 << (8 * insn.size)) - 1)
        core.set_x(insn.rt, insn.load_value(raw))
        if vcpu.tracer.on:
            vcpu.tracer.emit("kvm_mmio", vcpu.vcpu_id, type="read", len=insn.size,
                             gpa=pending.addr, val=raw)
    if insn.wb_imm is not None:
        core.set_base_reg(insn.rn, (core.base_reg(insn.rn) + insn.wb_imm) & MASK64)
    core.skip_insn()


def inject_pending_sea(vcpu: Vcpu) -> None:
    """KVM_SET_VCPU_EVENTS ext_dabt_pending: abort the access the VMM could not serve."""
    vcpu.pending_sea = False
    pending = vcpu.mmio_needed
    vcpu.mmio_needed = None
    is_write = isinstance(pending, PendingMmio) and not pending.insn.is_load
    far = pending.far if isinstance(pending, PendingMmio) else None
    inject_sea(vcpu, is_write=is_write, is_fetch=False, far=far)


def kvm_handle_iabt(vcpu: Vcpu, exit_: CoreExit) -> int:
    """Instruction fetch from outside RAM: a prefetch abort, as kvm_inject_pabt does."""
    vcpu.stats.abort_exits += 1
    inject_sea(vcpu, is_write=False, is_fetch=True, far=vcpu.core.get_pc())
    return 1


def inject_sea(vcpu: Vcpu, *, is_write: bool, is_fetch: bool, far: int | None) -> None:
    core = vcpu.core
    syndrome = E.sea_esr(from_lower_el=core.current_el() == 0, is_write=is_write,
                         is_fetch=is_fetch, far_valid=far is not None)
    core.inject_sync(syndrome, far, core.get_pc())
