"""The emulated AArch64 core of one vCPU: a Unicorn instance over the VM's shared RAM.

Counterpart: the physical CPU that KVM enters with ``__kvm_vcpu_run`` — guest code runs at EL1/EL0
with the hypervisor's traps (HCR_EL2) configured, and whatever the hypervisor must see comes back
as an exit *value* (``CoreExit``). What hardware would deliver to the guest without KVM (SVC,
UDF, BRK, MMU faults) the core reflects to the guest's EL1 vectors itself, with the syndrome the
architecture prescribes. Facts behind every choice here: ``notes/unicorn.md``.
"""

from __future__ import annotations

import ctypes
import mmap
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Final, Union

import unicorn
from unicorn import arm64_const as A
from unicorn import unicorn_const as U

from softkvm.arch import esr as E
from softkvm.arch import sysregs as S
from softkvm.hw import native as N
from softkvm.hw.mmio_decode import MmioInsn, decode, extend_index

# QEMU exception numbers seen by UC_HOOK_INTR (target/arm/cpu.h EXCP_*).
EXCP_UDEF = 1
EXCP_SWI = 2
EXCP_PREFETCH_ABORT = 3
EXCP_DATA_ABORT = 4
EXCP_BKPT = 7
EXCP_HVC = 11
EXCP_HYP_TRAP = 12
EXCP_SMC = 13

# SCR_EL3 = NS|HCE|RW: without it the core treats EL1 as AArch32 (notes §0.1).
SCR_EL3_VALUE = S.SCR_NS | S.SCR_HCE | S.SCR_RW
HCR_EL2_BASE = S.HCR_RW | S.HCR_AMO | S.HCR_IMO | S.HCR_FMO | S.HCR_TWI
PSTATE_RESET = E.PSTATE_DAIF | E.PSR_MODE_EL1h
TCG_BUFFER_SIZE = 256 << 20
TIMER_REGS = (S.CNTV_CTL_EL0, S.CNTV_CVAL_EL0, S.CNTV_TVAL_EL0,
              S.CNTP_CTL_EL0, S.CNTP_CVAL_EL0, S.CNTP_TVAL_EL0)

X_REGS = [getattr(A, f"UC_ARM64_REG_X{i}") for i in range(31)]
REG_PC = A.UC_ARM64_REG_PC
REG_SP = A.UC_ARM64_REG_SP
REG_PSTATE = A.UC_ARM64_REG_PSTATE
MASK64 = 0xFFFFFFFFFFFFFFFF
PAGE_SIZE = 4096
# How far past a reported PC the faulting access is looked for: a translation block's length.
_BLOCK_SCAN_LIMIT = 64


def _ctl_write(request: int, nr_args: int) -> int:
    """UC_CTL_WRITE(request, nr_args) of unicorn.h: the binding has no wrapper for the controls
    softkvm uses."""
    return (U.UC_CTL_IO_WRITE << 30) | (nr_args << 26) | request


_CTL_TLB_FLUSH_WRITE = _ctl_write(U.UC_CTL_TLB_FLUSH, 0)
# softkvm's core build (third_party/unicorn) numbers its own controls after UC_CTL_CONTEXT_MODE;
# a stock core answers each with UC_ERR_ARG, and softkvm then does the work itself:
# - the kick at every block start (stock: the shim's block hook checks it);
_CTL_KICK_FLAG_WRITE = _ctl_write(U.UC_CTL_CONTEXT_MODE + 1, 1)
# - writes to coalesced zones appended to a ring without a stop (stock: they exit as any other);
_CTL_COALESCED_MMIO_WRITE = _ctl_write(U.UC_CTL_CONTEXT_MODE + 2, 1)
# - an unmapped access's VA and PC (stock: the faulting instruction is looked for);
_CTL_FAULT_INFO_WRITE = _ctl_write(U.UC_CTL_CONTEXT_MODE + 3, 1)
# - the guest's EL1 vector entered for the synchronous exceptions routed there (stock: the core
#   stops, and ``inject_sync`` enters it).
_CTL_EL1_EXCEPTIONS_WRITE = _ctl_write(U.UC_CTL_CONTEXT_MODE + 4, 1)
# - loads of published registers answered from their published value without a stop (stock: they
#   exit, and the kernel answers them).
_CTL_PUBLISHED_MMIO_WRITE = _ctl_write(U.UC_CTL_CONTEXT_MODE + 5, 1)
# - code translated for a parallel context, so guest atomics are host atomics (stock: the
#   vCPUs of a VM take turns on one physical CPU).
_CTL_PARALLEL_WRITE = _ctl_write(U.UC_CTL_CONTEXT_MODE + 6, 4)
# - the code translated from a physical range dropped (the shim's remote flushes; stock: no
#   vCPUs in parallel, so no need).
_CTL_INVALIDATE_PHYS_WRITE = _ctl_write(U.UC_CTL_CONTEXT_MODE + 7, 2)
# What an IC broadcast asks of the other cores: nothing (None), all their translations
# (ALL_CODE), or those of some guest pages, by physical address.
ALL_CODE: Final = "all"
CodeBroadcast = Union[None, str, tuple[int, ...]]
UNMAPPED_ERRORS = {U.UC_ERR_READ_UNMAPPED, U.UC_ERR_WRITE_UNMAPPED, U.UC_ERR_FETCH_UNMAPPED}


class ExitKind(Enum):
    KICKED = "kicked"          # stopped by a kick (preemption, request, signal)
    HVC = "hvc"                # PC already past the HVC
    SMC = "smc"                # PC already past the SMC
    WFX = "wfx"                # trapped WFI/WFE; PC on the instruction
    SYSREG = "sysreg"          # trapped MSR/MRS (EC 0x18); PC on the instruction
    DABT = "dabt"              # data access to an unbacked physical address; PC on it
    IABT = "iabt"              # instruction fetch from an unbacked physical address
    INTERNAL = "internal"      # the core failed in a way the guest did not cause

    # Members are singletons compared by identity: the identity hash is as good as Enum's
    # hash of the name, and costs no Python call on every exit's handler lookup.
    __hash__ = object.__hash__


@dataclass(slots=True)
class CoreExit:
    kind: ExitKind
    esr: int = 0
    imm: int = 0
    addr: int = 0             # physical address for DABT/IABT
    size: int = 0
    is_write: bool = False
    value: int = 0            # store data for DABT writes
    insn: MmioInsn | None = None
    va: int = 0               # the DABT's virtual address (FAR), when ``insn`` was found
    message: str = ""


@dataclass(slots=True)
class CoreStats:
    reflected: dict[int, int]  # guest exceptions reflected to EL1, by EC
    slices: int = 0
    kicks: int = 0  # slices a kick (or a stop asked for by a callback) ended


class Core:
    """One vCPU's AArch64 core. Not thread-safe: only the vCPU's own thread runs it."""

    def __init__(self, native: N.Native, ram: list[tuple[int, mmap.mmap]], mpidr: int) -> None:
        """``ram``: the VM's memslots as (guest physical base, host buffer), shared by all vCPUs."""
        if not ram:
            raise ValueError("a core needs at least one RAM region")
        self.native = native
        self.uc = uc = unicorn.Uc(U.UC_ARCH_ARM64, U.UC_MODE_ARM)
        uc.ctl_set_cpu_model(A.UC_CPU_ARM64_A72)  # must be the first call (notes §0.1)
        # AArch64's smallest granule, as QEMU's target page for ARMv7+ (Unicorn defaults to
        # ARMv5's 1 KiB): with 1 KiB, every 4 KiB guest page counts as a "large page" to the
        # TLB, so a TLBI by VA flushes almost the whole TLB, and a page takes four fills.
        uc.ctl_set_page_size(PAGE_SIZE)
        uc.ctl_set_tcg_buffer_size(TCG_BUFFER_SIZE)
        self.raw = N.RawUc(uc, native.uclib)
        self.ram = sorted((base, len(buf)) for base, buf in ram)
        self.ram_base, self.ram_size = self.ram[0]
        self._ram_refs = []
        for base, buf in ram:
            ref = ctypes.c_char.from_buffer(buf)
            self._ram_refs.append(ref)
            uc.mem_map_ptr(base, len(buf), U.UC_PROT_ALL, ctypes.addressof(ref))
        self.state = N.SkvmVcpu()
        self.state.notify_fd = -1
        self.state.api = ctypes.pointer(native.api)
        self.state.uc = uc._uch
        self._state_p = ctypes.addressof(self.state)
        self._shim = native.shim
        self.raw.start_through(native.shim, self._state_p)
        self._hooks: list[int] = []
        self._ctx = uc.context_save()
        self.state.ctx = ctypes.cast(self._ctx.context, ctypes.c_void_p).value
        self._install_hooks()
        self.hcr = HCR_EL2_BASE
        self.parallel = False
        self.stats = CoreStats({})
        self.sysreg_handler: Callable[[int, bool, int], int | None] | None = None
        self.on_broadcast: Callable[[Core, bool, CodeBroadcast], None] | None = None
        self._py_cb = N.PySysregCallback(self._sysreg_cb)
        self.state.py_cb = ctypes.cast(self._py_cb, ctypes.c_void_p).value
        self._setup_el2_el3(mpidr)
        for reg in TIMER_REGS:  # the core drops CNTx_CTL/CVAL writes: the shim holds them
            self.state.policy[reg.encoding] = N.SR_TIMER
        self.state.exc_offset = _exception_offset(self)  # it takes an SVC: before the next line
        self._ctl(_CTL_EL1_EXCEPTIONS_WRITE, ctypes.c_int(1))

    # --- set-up -----------------------------------------------------------------------------

    def _install_hooks(self) -> None:
        lib, uch, arg = self.native.uclib, self.uc._uch, ctypes.cast(
            ctypes.pointer(self.state), ctypes.c_void_p)
        shim = self.native.shim

        def add(kind: int, cb: int, begin: int = 1, end: int = 0, *extra: int) -> None:
            handle = ctypes.c_size_t()
            err = lib.uc_hook_add(uch, ctypes.byref(handle), kind, ctypes.c_void_p(cb), arg,
                                  ctypes.c_uint64(begin), ctypes.c_uint64(end), *extra)
            if err:
                raise N.NativeShimError(f"uc_hook_add({kind}) failed with uc_err {err}")
            self._hooks.append(handle.value)

        self.fault = N.FaultInfo()
        self._ctl(_CTL_FAULT_INFO_WRITE, ctypes.byref(self.fault))  # a stock core: pc stays 0
        kick = ctypes.c_void_p(ctypes.addressof(self.state) + N.SkvmVcpu.kick.offset)
        if not self._ctl(_CTL_KICK_FLAG_WRITE, kick):
            add(U.UC_HOOK_BLOCK, shim.skvm_block_cb())  # a stock core: the shim checks the kick
        add(U.UC_HOOK_INTR, shim.skvm_intr_cb())
        # Never cover RAM with a memory hook: it sends every guest store down the slow path.
        for begin, end in _gaps(self.ram):
            add(U.UC_HOOK_MEM_UNMAPPED, shim.skvm_unmapped_cb(), begin, end)
        for insn, cb in ((A.UC_ARM64_INS_MRS, shim.skvm_mrs_cb()),
                         (A.UC_ARM64_INS_MSR, shim.skvm_msr_cb()),
                         (A.UC_ARM64_INS_SYS, shim.skvm_sys_cb())):
            add(U.UC_HOOK_INSN, cb, 1, 0, ctypes.c_int(insn))

    def _setup_el2_el3(self, mpidr: int) -> None:
        raw = self.raw
        raw.cpr_write(*S.SCR_EL3, SCR_EL3_VALUE)
        raw.cpr_write(*S.HCR_EL2, self.hcr)
        raw.cpr_write(*S.VMPIDR_EL2, (1 << 31) | mpidr)  # EL1 reads of MPIDR_EL1 see VMPIDR_EL2
        raw.write(REG_PSTATE, PSTATE_RESET)

    def set_sysreg_policy(self, encoding: int, policy: int) -> None:
        """Route guest MRS/MSR of ``encoding``: native, Python (``sysreg_handler``) or timer."""
        self.state.policy[encoding] = policy

    def set_coalesced_mmio(self, config: N.CoalescedMmioConfig) -> bool:
        """Let the core append writes to ``config``'s zones to its ring with no exit; False
        when the core cannot (a stock build: such writes then exit like any unbacked write)."""
        return self._ctl(_CTL_COALESCED_MMIO_WRITE, ctypes.c_void_p(ctypes.addressof(config)))

    def set_published_mmio(self, config: N.PublishedMmioConfig) -> bool:
        """Let the core answer loads of ``config``'s registers from their published values
        with no exit; False when the core cannot (a stock build: such loads then exit)."""
        return self._ctl(_CTL_PUBLISHED_MMIO_WRITE, ctypes.c_void_p(ctypes.addressof(config)))

    def set_parallel(self, on: bool) -> bool:
        """Translate for running beside the VM's other cores (host atomics and barriers);
        False when the core cannot, and the vCPUs must then take turns. Set before the first
        run."""
        # At a DSB that completes a broadcast op the shim recorded (dsb_pending), the core calls the
        # shim back, which sends the op to the other vCPUs and waits for them.
        flag = ctypes.c_void_p(self._state_p + N.SkvmVcpu.dsb_pending.offset)
        callback = ctypes.c_void_p(self._shim.skvm_parallel_cb())
        if not self._ctl(_CTL_PARALLEL_WRITE, ctypes.c_int(int(on)), flag if on else None,
                         callback, ctypes.c_void_p(self._state_p)):
            return False
        self.parallel = on
        return True

    def invalidate_phys(self, paddr: int, size: int) -> bool:
        """Drop the code translated from guest physical [paddr, paddr + size); False when the
        core cannot (a stock build)."""
        return self._ctl(_CTL_INVALIDATE_PHYS_WRITE, ctypes.c_uint64(paddr), ctypes.c_uint64(size))

    @staticmethod
    def make_peers(cores: list[Core]) -> ctypes.Array:
        """Tell parallel cores about each other (for their broadcasts); keep the result alive
        as long as they run."""
        peers = (ctypes.c_void_p * len(cores))(*(core._state_p for core in cores))
        for core in cores:
            core.state.peers = ctypes.addressof(peers)
            core.state.npeers = len(cores)
        return peers

    def _ctl(self, request: int, *args: object) -> bool:
        """uc_ctl(request, args...); False when the core does not know the control."""
        return self.native.uclib.uc_ctl(self.uc._uch, request, *args) == U.UC_ERR_OK

    def map_mmio(self, base: int, size: int, read: Callable[[int, int], int],
                 write: Callable[[int, int, int], None]) -> None:
        """An in-kernel device region: accesses are served synchronously, with no exit."""
        self.uc.mmio_map(base, size, lambda _uc, off, sz, _u: read(off, sz), None,
                         lambda _uc, off, sz, val, _u: write(off, sz, val), None)

    def map_cpu_interface(self, base: int, size: int, read: Callable[[int, int], int],
                          write: Callable[[int, int, int], None]) -> None:
        """The GICv2 virtual CPU interface frame: as ``map_mmio``, through the shim's callbacks,
        which answer a spurious GICV_IAR read themselves while ``no_pending_lr`` is set."""
        self._gicv_cbs = (N.PyGicvRead(lambda _cookie, off, sz: read(off, sz)),
                          N.PyGicvWrite(lambda _cookie, off, sz, val: write(off, sz, val)))
        st, shim = self.state, self._shim
        st.py_gicv_read = ctypes.cast(self._gicv_cbs[0], ctypes.c_void_p).value
        st.py_gicv_write = ctypes.cast(self._gicv_cbs[1], ctypes.c_void_p).value
        err = self.native.uclib.uc_mmio_map(
            self.uc._uch, ctypes.c_uint64(base), ctypes.c_size_t(size),
            ctypes.c_void_p(shim.skvm_gicv_read_cb()), ctypes.c_void_p(self._state_p),
            ctypes.c_void_p(shim.skvm_gicv_write_cb()), ctypes.c_void_p(self._state_p))
        if err != U.UC_ERR_OK:
            raise unicorn.UcError(err)

    def close(self) -> None:
        """Free the engine, after which the RAM buffers are no longer referenced. Freeing it
        outright takes well under a millisecond, where deleting its hooks and unmapping RAM
        first flush its translations and then its TLB page by page (about 0.1 s for 512 MiB).
        Any later use of the core raises instead of touching freed memory."""
        if isinstance(self.raw, N.ClosedRawUc):
            return
        if not N.free_engine(self.uc):  # (its hooks go with it: deleting one flushes the TBs)
            for handle in self._hooks:
                self.native.uclib.uc_hook_del(self.uc._uch, ctypes.c_size_t(handle))
            for base, size in self.ram:
                self.uc.mem_unmap(base, size)
        self._hooks.clear()
        self.raw = N.ClosedRawUc()  # type: ignore[assignment]
        self.uc = N.ClosedRawUc()  # type: ignore[assignment]
        self._ram_refs.clear()

    # --- running -----------------------------------------------------------------------------

    def kick(self) -> None:
        """Stop at the next block boundary (any thread). Never use emu_stop from outside."""
        self._shim.skvm_kick(self._state_p)  # atomic: other vCPUs post work in the same word

    def run(self) -> CoreExit:
        """Run guest code until something the hypervisor must see happens."""
        st, raw = self.state, self.raw
        while True:
            st.exit_kind = N.EXIT_NONE
            err = raw.emu_start(raw.read(REG_PC))
            self.stats.slices += 1
            if st.pending_tlbi_is or st.pending_ic:
                self._broadcast()
            if st.remote_tb_flush:  # another vCPU's IC IALLUIS, taken while this one ran
                st.remote_tb_flush = 0
                self.flush_tb()
            if err in UNMAPPED_ERRORS or st.exit_kind == N.EXIT_UNMAPPED:
                return self._unmapped_exit()
            if err == U.UC_ERR_EXCEPTION and self.parallel:
                return CoreExit(ExitKind.INTERNAL, message="an exclusive or atomic access the "
                                "core cannot make while the vCPUs run in parallel (to an "
                                f"in-kernel device?) at pc={raw.read(REG_PC):#x}")
            if err:
                return CoreExit(ExitKind.INTERNAL, message=f"the core stopped with uc_err {err}: "
                                f"{unicorn.UcError(err)} at pc={raw.read(REG_PC):#x}")
            if st.exit_kind == N.EXIT_NONE:
                self.stats.kicks += 1
                return CoreExit(ExitKind.KICKED)
            exit_ = self._intr_exit()
            if exit_ is not None:
                return exit_
            if st.kick & 1 and self._shim.skvm_take_kick(self._state_p):
                # a reflected exception must not hide a pending kick
                self.stats.kicks += 1
                return CoreExit(ExitKind.KICKED)

    def _broadcast(self) -> None:
        if self.parallel:  # ops whose DSB has not come yet: sent, and waited for, now
            self._shim.skvm_broadcast(self._state_p)
            return
        st = self.state
        tlbi, n = bool(st.pending_tlbi_is), st.pending_ic
        st.pending_tlbi_is = st.pending_ic = 0
        code: CodeBroadcast = None
        if n == N.IC_ALL:
            code = ALL_CODE
        elif n:
            code = tuple(st.ic_pa[:n])
        if self.on_broadcast is not None:
            self.on_broadcast(self, tlbi, code)

    def _intr_exit(self) -> CoreExit | None:
        """Turn a reported exception into an exit, or reflect it to the guest (None)."""
        st, intno, syndrome = self.state, self.state.intno, self.state.syndrome
        pc = self.raw.read(REG_PC)
        if intno == EXCP_HVC:
            return CoreExit(ExitKind.HVC, esr=syndrome, imm=syndrome & 0xFFFF)
        if intno == EXCP_SMC:
            return CoreExit(ExitKind.SMC, esr=syndrome, imm=syndrome & 0xFFFF)
        if intno == EXCP_HYP_TRAP:  # SMC trapped by HCR_EL2.TSC: PC is on the SMC
            self.raw.write(REG_PC, pc + 4)
            return CoreExit(ExitKind.SMC, esr=syndrome, imm=syndrome & 0xFFFF)
        if intno == EXCP_UDEF and st.target_el == 2:
            ec = E.esr_ec(syndrome)
            if ec == E.EC_WFX:
                return CoreExit(ExitKind.WFX, esr=syndrome)
            if ec == E.EC_SYS64:
                return CoreExit(ExitKind.SYSREG, esr=syndrome)
            return CoreExit(ExitKind.INTERNAL, esr=syndrome,
                            message=f"unexpected trap to EL2, ESR {syndrome:#x} at pc={pc:#x}")
        if intno in (EXCP_UDEF, EXCP_SWI, EXCP_BKPT):
            self.inject_sync(syndrome, None, pc)
            return None
        if intno in (EXCP_PREFETCH_ABORT, EXCP_DATA_ABORT):
            self.inject_sync(syndrome, st.vaddress, pc)
            return None
        return CoreExit(ExitKind.INTERNAL, message=f"unhandled core exception {intno} "
                        f"(syndrome {syndrome:#x}) at pc={pc:#x}")

    def _unmapped_exit(self) -> CoreExit:
        st = self.state
        mem_type = st.mem_type  # (each field of the shim's block is a ctypes read)
        if mem_type == U.UC_MEM_FETCH_UNMAPPED:
            return CoreExit(ExitKind.IABT, addr=st.mem_addr)
        is_write = mem_type == U.UC_MEM_WRITE_UNMAPPED
        size = st.mem_size
        fault = self.fault
        pc = fault.pc
        if pc:  # the core says where: decode that instruction, nothing to look for
            fault.pc = 0
            self.raw.pc_known(pc)  # it stopped there: completing the access needs no PC read
            insn, va = self._access_at(pc, size, is_write), fault.vaddr
        else:
            insn, va = self._faulting_access(st.mem_addr, size, is_write)
        # Positional, in field order (kind, esr, imm, addr, size, is_write, value, insn, va):
        # keywords cost a dataclass __init__ about 0.2 µs more, on every MMIO exit.
        return CoreExit(ExitKind.DABT, 0, 0, st.mem_addr, size, is_write,
                        st.mem_value & ((1 << (8 * size)) - 1), insn, va)

    def _faulting_access(self, pa: int, size: int, is_write: bool) -> tuple[MmioInsn | None, int]:
        """The load/store that made the unbacked access and its VA, with the PC moved onto it.

        Unicorn normally leaves the PC on the faulting instruction, but after a long slice it
        was seen to report the start of the translation block instead (registers already past
        the instructions before the access). The block is then scanned forward for the one
        instruction that makes exactly this access with the current registers; nothing is
        re-executed. (None, 0) when no instruction matches (the caller answers with an abort)."""
        pc = self.raw.read(REG_PC)
        prot = U.UC_PROT_WRITE if is_write else U.UC_PROT_READ
        for index in range(_BLOCK_SCAN_LIMIT):
            word = self.read_insn(pc + 4 * index)
            if word is None:
                break
            insn = decode(word)
            if insn is None or insn.size != size or insn.is_load == is_write:
                continue
            va = self.access_va(insn)
            if self.raw.vmem_translate(va, prot) == pa:
                if index:
                    self.set_pc(pc + 4 * index)
                return insn, va
        return None, 0

    def _access_at(self, pc: int, size: int, is_write: bool) -> MmioInsn | None:
        """The load/store at ``pc`` if it makes an access of this size and direction."""
        word = self.read_insn(pc)
        insn = decode(word) if word is not None else None
        if insn is None or insn.size != size or insn.is_load == is_write:
            return None
        return insn

    def base_reg(self, rn: int) -> int:
        """A load/store's base register: X0-X30, or SP for 31."""
        return self.raw.read(REG_SP) if rn == 31 else self.get_x(rn)

    def set_base_reg(self, rn: int, value: int) -> None:
        if rn == 31:
            self.raw.write(REG_SP, value)
        else:
            self.set_x(rn, value)

    def access_va(self, insn: MmioInsn) -> int:
        """The virtual address ``insn`` accesses with the current registers."""
        va = self.base_reg(insn.rn) + insn.offset
        if insn.rm is not None:
            va += extend_index(self.get_x(insn.rm), insn.extend, insn.shift)
        return va & MASK64

    def read_insn(self, va: int) -> int | None:
        """The instruction word at ``va`` through the guest's current translation."""
        raw = self.raw
        word = raw.vmem_read32(va, U.UC_PROT_EXEC)
        return word if word is not None else raw.vmem_read32(va, U.UC_PROT_READ)

    def _sysreg_cb(self, _cookie: int, encoding: int, is_write: int, wval: int,
                   rval: ctypes._Pointer) -> int:
        handler = self.sysreg_handler
        if handler is None:
            return 0
        result = handler(encoding, bool(is_write), wval)
        if result is None:
            return 0
        rval[0] = result & 0xFFFFFFFFFFFFFFFF
        return 1

    # --- interrupt lines and exceptions --------------------------------------------------------

    def set_irq_lines(self, irq: bool, fiq: bool) -> bool:
        """Drive the vIRQ/vFIQ inputs (HCR_EL2.VI/VF): the core takes the exception itself.
        True when they changed."""
        hcr = (self.hcr & ~(S.HCR_VI | S.HCR_VF)) | (S.HCR_VI if irq else 0) | (
            S.HCR_VF if fiq else 0)
        if hcr == self.hcr:
            return False
        self.hcr = hcr
        self.raw.cpr_write(*S.HCR_EL2, hcr)
        return True

    def set_hcr_traps(self, bits: int, enable: bool) -> None:
        hcr = self.hcr | bits if enable else self.hcr & ~bits
        if hcr != self.hcr:
            self.hcr = hcr
            self.raw.cpr_write(*S.HCR_EL2, hcr)

    def inject_sync(self, syndrome: int, far: int | None, ret_pc: int) -> None:
        """Take a synchronous exception to EL1 (Arm ARM D1.10; recipe in notes/unicorn.md §1)."""
        raw = self.raw
        pstate = raw.read(REG_PSTATE)
        el, spsel = E.pstate_el(pstate), pstate & E.PSTATE_SP
        sp = raw.read(REG_SP)
        if el == 1 and spsel:
            vector = E.VECTOR_CUR_SPX
        else:
            raw.write(A.UC_ARM64_REG_SP_EL0, sp)  # a PSTATE write does not swap SP banks
            sp = raw.read(A.UC_ARM64_REG_SP_EL1)
            vector = E.VECTOR_LOWER_A64 if el == 0 else E.VECTOR_CUR_SP0
        raw.write(REG_PSTATE, (pstate & E.PSTATE_NZCV) | E.PSTATE_DAIF | E.PSR_MODE_EL1h)
        raw.write(REG_SP, sp)
        raw.write(A.UC_ARM64_REG_ELR_EL1, ret_pc)
        raw.write(A.UC_ARM64_REG_ESR_EL1, syndrome)
        if far is not None:
            raw.write(A.UC_ARM64_REG_FAR_EL1, far)
        raw.cpr_write(*S.SPSR_EL1, pstate)  # last: a CP_REG write rebuilds the cached hflags
        raw.write(REG_PC, raw.read(A.UC_ARM64_REG_VBAR_EL1) + vector + E.VECTOR_SYNC)
        ec = E.esr_ec(syndrome)
        self.stats.reflected[ec] = self.stats.reflected.get(ec, 0) + 1

    def current_el(self) -> int:
        return E.pstate_el(self.raw.read(REG_PSTATE))

    # --- registers and caches -------------------------------------------------------------------

    def get_x(self, n: int) -> int:
        return 0 if n == 31 else self.raw.read(X_REGS[n])

    def set_x(self, n: int, value: int) -> None:
        if n != 31:
            self.raw.write(X_REGS[n], value)

    def get_pc(self) -> int:
        return self.raw.read(REG_PC)

    def set_pc(self, value: int) -> None:
        self.raw.write(REG_PC, value)

    def skip_insn(self) -> None:
        """Step over the instruction at PC, which the hypervisor completed (kvm_incr_pc)."""
        raw = self.raw
        raw.write(REG_PC, raw.read(REG_PC) + 4)

    def reset(self, pc: int, x0: int) -> None:
        """Architectural reset state for (re)starting a CPU: EL1h, DAIF masked, MMU off."""
        raw = self.raw
        for reg in X_REGS:
            raw.write(reg, 0)
        raw.write(X_REGS[0], x0)
        raw.write(REG_PSTATE, PSTATE_RESET)
        raw.write(REG_SP, 0)
        sctlr = raw.cpr_read(*S.SCTLR_EL1)
        raw.cpr_write(*S.SCTLR_EL1, sctlr & ~S.SCTLR_M)
        raw.write(REG_PC, pc)
        self.flush_tlb()

    def flush_tb(self) -> None:
        self.uc.ctl_flush_tb()

    def invalidate_code(self, pas: Iterable[int]) -> None:
        """Drop this core's translations of the guest pages at physical addresses ``pas``.

        Unicorn removes translations by virtual address, walking the page tables as an
        instruction fetch would, and ignores an address that does not translate. The pages named
        by another vCPU's IC IVAU are often not executable here (Linux cleans code through the
        linear map), so the walk is done with the MMU off, where a VA is its PA, for that moment.
        """
        sctlr = self.raw.cpr_read(*S.SCTLR_EL1)
        if sctlr & S.SCTLR_M:
            self.raw.cpr_write(*S.SCTLR_EL1, sctlr & ~S.SCTLR_M)
        self.flush_tlb()
        for pa in pas:
            self.uc.ctl_remove_cache(pa, pa + PAGE_SIZE)
        if sctlr & S.SCTLR_M:
            self.raw.cpr_write(*S.SCTLR_EL1, sctlr)
        self.flush_tlb()

    def flush_tlb(self) -> None:
        self._ctl(_CTL_TLB_FLUSH_WRITE)


def _gaps(ram: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive [begin, end] ranges of the physical address space not covered by RAM."""
    gaps, cursor = [], 0
    for base, size in ram:
        if base > cursor:
            gaps.append((cursor, base - 1))
        cursor = max(cursor, base + size)
    if cursor < 2**64:
        gaps.append((cursor, 2**64 - 1))
    return gaps


def _exception_offset(core: Core) -> int:
    """Find env->exception in a saved context by taking a known SVC once (notes §2a)."""
    if core.native.exc_offset:
        return core.native.exc_offset
    scratch = core.ram_base + core.ram_size - 0x1000
    saved = bytes(core.uc.mem_read(scratch, 8))
    core.uc.mem_write(scratch, (0xD4000001 | (0x5A17 << 5)).to_bytes(4, "little"))  # svc #0x5a17
    core.uc.ctl_remove_cache(scratch, scratch + 4)
    core.state.ctx = 0  # the hook must not peek before we know where to look
    core.raw.write(REG_PC, scratch)
    core.raw.emu_start(scratch)
    ctx = core.uc.context_save()
    data = ctypes.string_at(ctx.context, ctx.size)
    wanted = (0x56000000 | 0x5A17).to_bytes(4, "little")
    offset = data.find(wanted)
    core.uc.mem_write(scratch, saved)
    core.uc.ctl_remove_cache(scratch, scratch + 8)
    core.state.ctx = ctypes.cast(core._ctx.context, ctypes.c_void_p).value
    if offset < 0:
        raise N.NativeShimError("could not locate the exception syndrome in a core context")
    core.raw.write(REG_PSTATE, PSTATE_RESET)
    core.native.exc_offset = offset
    return offset
