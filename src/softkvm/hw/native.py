"""ctypes view of the native shim (``_native/shim.c``) and raw libunicorn entry points.

The stock Unicorn binding costs 1.7 µs per register access; a preallocated raw ctypes call costs
about 0.65 µs (notes/unicorn.md §4), an unprototyped one about 0.25 µs. Everything on the trap
path goes through ``RawUc``.

softkvm runs on any Unicorn 2.1.4, and fastest on the build ``make install`` makes
(third_party/unicorn: no exit check after every guest load and store); ``core_build`` names the
one loaded.
"""

from __future__ import annotations

import ctypes
import importlib.util
import weakref
from dataclasses import dataclass, field
from typing import NoReturn

import unicorn
from unicorn.unicorn_py3 import unicorn as _ucpy
from unicorn.unicorn_py3.arch.arm64 import UcRegCP64

from softkvm.errors import SoftkvmError

EXIT_NONE = 0
EXIT_INTR = 1
EXIT_UNMAPPED = 2

SR_NATIVE = 0
SR_PY_KNOWN = 1
SR_PY_UNKNOWN = 2
SR_TIMER = 3

IC_PAGES = 64  # SKVM_IC_PAGES: IC IVAU pages one slice records before it counts as IC IALLUIS
IC_ALL = 0xFFFFFFFF  # SKVM_IC_ALL
TLBI_OPS = 64  # SKVM_TLBI_OPS: TLBI ...IS by VA one slice records for the others to replay

# uint64 read(void *cookie, uint64 offset, uint32 size); void write(..., uint64 value)
PyGicvRead = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32)
PyGicvWrite = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32,
                               ctypes.c_uint64)
# int cb(void *cookie, uint32 encoding, uint32 is_write, uint64 wval, uint64 *rval)
PySysregCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32,
                                    ctypes.c_uint32, ctypes.c_uint64,
                                    ctypes.POINTER(ctypes.c_uint64))


CORE_BUILD_LABEL = "+softkvm.6"  # third_party/unicorn/build.py LOCAL_LABEL, with its "+"


def core_build() -> str:
    """The Unicorn distribution in use, e.g. ``unicorn 2.1.4+softkvm.6``."""
    import importlib.metadata  # only the benchmark and the tests ask: keep it off start-up

    try:
        return f"unicorn {importlib.metadata.version('unicorn')}"
    except importlib.metadata.PackageNotFoundError:
        return f"unicorn {unicorn.__version__} (no package metadata)"


def is_softkvm_core() -> bool:
    """True for third_party/unicorn's build, where a stop takes effect at a block boundary."""
    return CORE_BUILD_LABEL in core_build()


class SkvmApi(ctypes.Structure):
    _fields_ = [("emu_start", ctypes.c_void_p), ("ctl", ctypes.c_void_p),
                ("emu_stop", ctypes.c_void_p), ("reg_read", ctypes.c_void_p),
                ("reg_write", ctypes.c_void_p), ("context_save", ctypes.c_void_p),
                ("vmem_translate", ctypes.c_void_p)]


class SkvmTimer(ctypes.Structure):
    _fields_ = [("ctl", ctypes.c_uint64), ("cval", ctypes.c_uint64)]


class SkvmVcpu(ctypes.Structure):
    """Mirror of ``struct skvm_vcpu`` (checked against the C sizeof at load)."""

    _fields_ = [
        ("kick", ctypes.c_int32),
        ("notify_fd", ctypes.c_int32),
        ("exit_kind", ctypes.c_uint32),
        ("intno", ctypes.c_uint32),
        ("syndrome", ctypes.c_uint32),
        ("fsr", ctypes.c_uint32),
        ("vaddress", ctypes.c_uint64),
        ("target_el", ctypes.c_uint32),
        ("mem_type", ctypes.c_uint32),
        ("mem_addr", ctypes.c_uint64),
        ("mem_value", ctypes.c_int64),
        ("mem_size", ctypes.c_uint32),
        ("pending_tlbi_is", ctypes.c_uint32),
        ("pending_ic", ctypes.c_uint32),
        ("exc_offset", ctypes.c_uint32),
        ("dsb_pending", ctypes.c_int32),
        ("timer", SkvmTimer * 2),
        ("cntvoff", ctypes.c_uint64),
        ("timer_writes", ctypes.c_uint64),
        ("watch_until", ctypes.c_uint64),
        ("ppi_state", ctypes.c_uint32),
        ("ppi_fired", ctypes.c_uint32),
        ("wake_fd", ctypes.c_int32),
        ("bg_fired", ctypes.c_uint32),
        ("bg_deadline", ctypes.c_uint64),
        ("n_intr", ctypes.c_uint64),
        ("n_sysreg_py", ctypes.c_uint64),
        ("n_sysreg_timer", ctypes.c_uint64),
        ("ic_va", ctypes.c_uint64 * IC_PAGES),
        ("ic_pa", ctypes.c_uint64 * IC_PAGES),
        ("tlbi_op2", ctypes.c_uint32 * TLBI_OPS),
        ("tlbi_val", ctypes.c_uint64 * TLBI_OPS),
        ("ctx", ctypes.c_void_p),
        ("api", ctypes.POINTER(SkvmApi)),
        ("py_cb", ctypes.c_void_p),
        ("py_cookie", ctypes.c_void_p),
        ("policy", ctypes.c_uint8 * 65536),
        ("uc", ctypes.c_void_p),
        ("peers", ctypes.c_void_p),
        ("npeers", ctypes.c_uint32),
        ("in_core", ctypes.c_int32),
        ("rlock", ctypes.c_int32),
        ("rbits", ctypes.c_uint32),
        ("rnpages", ctypes.c_uint32),
        ("rntlbi", ctypes.c_uint32),
        ("remote_tb_flush", ctypes.c_uint32),
        ("rpages", ctypes.c_uint64 * IC_PAGES),
        ("rtlbi_op2", ctypes.c_uint32 * TLBI_OPS),
        ("rtlbi_val", ctypes.c_uint64 * TLBI_OPS),
        ("rreq", ctypes.c_uint64),
        ("rack", ctypes.c_uint64),
        ("n_bcast_tlb", ctypes.c_uint64),
        ("n_bcast_tlbi_va", ctypes.c_uint64),
        ("n_bcast_all_code", ctypes.c_uint64),
        ("n_bcast_pages", ctypes.c_uint64),
        ("py_gicv_read", ctypes.c_void_p),
        ("py_gicv_write", ctypes.c_void_p),
        ("no_pending_lr", ctypes.c_uint32),
        ("pad_gicv", ctypes.c_uint32),
        ("n_gicv_spurious", ctypes.c_uint64),
    ]


# UC_CTL_COALESCED_MMIO (softkvm's core build): the ring is Linux's struct kvm_coalesced_mmio_ring,
# one page of 24-byte entries after {first, last}.
COALESCED_MMIO_MAX = (4096 - 8) // 24


class CoalescedMmioEntry(ctypes.Structure):
    _fields_ = [("phys_addr", ctypes.c_uint64), ("len", ctypes.c_uint32),
                ("pio", ctypes.c_uint32), ("data", ctypes.c_uint8 * 8)]


class CoalescedMmioRing(ctypes.Structure):
    _fields_ = [("first", ctypes.c_uint32), ("last", ctypes.c_uint32),
                ("coalesced_mmio", CoalescedMmioEntry * COALESCED_MMIO_MAX)]


class CoalescedMmioZone(ctypes.Structure):
    _fields_ = [("addr", ctypes.c_uint64), ("size", ctypes.c_uint64)]


class CoalescedMmioConfig(ctypes.Structure):
    """``uc_coalesced_mmio``: the ring, its size, and a zone table (``coalesced_zones``)."""

    _fields_ = [("ring", ctypes.POINTER(CoalescedMmioRing)), ("max", ctypes.c_uint32),
                ("lock", ctypes.c_uint32), ("zones", ctypes.c_void_p)]  # lock: the core's


def coalesced_zones(zones: list[tuple[int, int]]) -> ctypes.Structure:
    """A ``uc_coalesced_mmio_zones`` table: a count, then (addr, size) pairs."""

    class Zones(ctypes.Structure):
        _fields_ = [("count", ctypes.c_uint32), ("pad", ctypes.c_uint32),
                    ("zone", CoalescedMmioZone * len(zones))]

    table = Zones(len(zones))
    for index, (addr, size) in enumerate(zones):
        table.zone[index] = CoalescedMmioZone(addr, size)
    return table


# UC_CTL_PUBLISHED_MMIO (softkvm's core build): registers whose loads the core answers from a
# value their owner keeps current.
class PublishedMmioReg(ctypes.Structure):
    _fields_ = [("addr", ctypes.c_uint64), ("size", ctypes.c_uint64),
                ("value", ctypes.POINTER(ctypes.c_uint64))]


class PublishedMmioConfig(ctypes.Structure):
    """``uc_published_mmio``: a register table (``published_regs``) and the loads served."""

    _fields_ = [("regs", ctypes.c_void_p), ("reads", ctypes.c_uint64)]


def published_regs(regs: list[tuple[int, int, ctypes.c_uint64]]) -> ctypes.Structure:
    """A ``uc_published_mmio_regs`` table: a count, then (addr, size, value pointer) triples."""

    class Regs(ctypes.Structure):
        _fields_ = [("count", ctypes.c_uint32), ("pad", ctypes.c_uint32),
                    ("reg", PublishedMmioReg * len(regs))]

    table = Regs(len(regs))
    for index, (addr, size, value) in enumerate(regs):
        table.reg[index] = PublishedMmioReg(addr, size, ctypes.pointer(value))
    return table


class FaultInfo(ctypes.Structure):
    """``uc_fault_info`` (UC_CTL_FAULT_INFO): an unmapped access's virtual address and the PC
    of its instruction, as a data abort's FAR and ELR; ``pc`` is 0 when the core has none."""

    _fields_ = [("vaddr", ctypes.c_uint64), ("pc", ctypes.c_uint64)]


class NativeShimError(SoftkvmError):
    """The native shim is missing or does not match this build."""


def _shim_path() -> str:
    spec = importlib.util.find_spec("softkvm.hw._native._shim")
    if spec is None or spec.origin is None:
        raise NativeShimError("the native shim softkvm.hw._native._shim is not built: "
                              "run `make install` (or `pip install -e .`) to build it")
    return spec.origin


@dataclass(slots=True)
class Native:
    """The loaded shim and libunicorn, shared by every vCPU of a process."""

    shim: ctypes.CDLL
    uclib: ctypes.CDLL
    fast: ctypes.PyDLL   # the same shim, for short calls that never block: they keep the GIL
    api: SkvmApi = field(default_factory=SkvmApi)
    exc_offset: int = 0  # where env->exception sits in a saved context (calibrated once)

    @classmethod
    def load(cls) -> Native:
        shim = ctypes.CDLL(_shim_path())
        uclib = _ucpy.uclib
        shim.skvm_vcpu_size.restype = ctypes.c_size_t
        if shim.skvm_vcpu_size() != ctypes.sizeof(SkvmVcpu):
            raise NativeShimError("the native shim does not match hw/native.py: rebuild with "
                                  "`make install`")
        for name in ("skvm_block_cb", "skvm_intr_cb", "skvm_unmapped_cb", "skvm_mrs_cb",
                     "skvm_msr_cb", "skvm_sys_cb", "skvm_parallel_cb", "skvm_gicv_read_cb",
                     "skvm_gicv_write_cb"):
            getattr(shim, name).restype = ctypes.c_void_p
        for name in ("skvm_kick", "skvm_take_kick", "skvm_broadcast"):
            getattr(shim, name).argtypes = [ctypes.c_void_p]
        shim.skvm_counter_now.restype = ctypes.c_uint64
        fast = ctypes.PyDLL(shim._name, handle=shim._handle)
        _timer_ppi_signatures(shim, fast)
        native = cls(shim, uclib, fast)
        addr = ctypes.cast
        shim.skvm_set_api(ctypes.byref(native.api),
                          addr(uclib.uc_emu_stop, ctypes.c_void_p),
                          addr(uclib.uc_reg_read, ctypes.c_void_p),
                          addr(uclib.uc_reg_write, ctypes.c_void_p),
                          addr(uclib.uc_context_save, ctypes.c_void_p),
                          addr(uclib.uc_vmem_translate, ctypes.c_void_p),
                          addr(uclib.uc_emu_start, ctypes.c_void_p),
                          addr(uclib.uc_ctl, ctypes.c_void_p))
        return native

    def counter_now(self) -> int:
        """The guest-visible physical count (CNTPCT_EL0) right now."""
        return self.shim.skvm_counter_now()


def _timer_ppi_signatures(shim: ctypes.CDLL, fast: ctypes.PyDLL) -> None:
    """timer_ppi.c: creating and freeing the watcher (which joins its thread) release the GIL,
    the rest are short and keep it."""
    ptr, i32 = ctypes.c_void_p, ctypes.c_int32
    shim.skvm_ppi_new.restype = ptr
    shim.skvm_ppi_new.argtypes = []
    shim.skvm_ppi_free.argtypes = [ptr]
    for name, args, res in (("skvm_ppi_register", [ptr, ptr], ctypes.c_int),
                            ("skvm_ppi_load", [ptr, ptr, i32], None),
                            ("skvm_ppi_put", [ptr, ptr], None),
                            ("skvm_ppi_set_masked", [ptr, ptr, i32, i32], None),
                            ("skvm_ppi_rearm", [ptr, ptr], None),
                            ("skvm_ppi_take", [ptr], ctypes.c_uint32),
                            ("skvm_ppi_bg_arm", [ptr, ptr, ctypes.c_uint64, i32], None),
                            ("skvm_ppi_bg_cancel", [ptr, ptr], None),
                            ("skvm_ppi_bg_take", [ptr], ctypes.c_uint32),
                            ("skvm_ppi_info", [ptr, i32], ctypes.c_uint64)):
        fn = getattr(fast, name)
        fn.argtypes, fn.restype = args, res


def free_engine(uc: unicorn.Uc) -> bool:
    """uc_close now, through the binding's own finalizer so that it is not repeated when the
    object is collected. False when this binding has no such finalizer (the caller then tears
    the engine down the slow way)."""
    finalizer = getattr(uc, "_Uc__finalizer", None)
    if not isinstance(finalizer, weakref.finalize):
        return False
    finalizer()
    return True


class ClosedRawUc:
    """What a core's raw calls become once its engine is freed: a clear error, not a crash."""

    def __getattr__(self, name: str) -> NoReturn:
        raise NativeShimError(f"the vCPU's core is closed (VM closed): cannot call {name}()")


class RawUc:
    """Preallocated raw calls into libunicorn for one engine (the trap path)."""

    __slots__ = ("uch", "_lib", "_u64", "_u64p", "_cp", "_cpp", "_start", "_rr", "_rw",
                 "_vread", "_vtranslate", "_word", "_wordp", "_va", "_four", "_begin",
                 "_zero64", "_zero", "_pc", "_running", "_start_args", "_state")

    def __init__(self, uc: unicorn.Uc, uclib: ctypes.CDLL) -> None:
        self.uch = uc._uch
        self._lib = uclib
        self._u64 = ctypes.c_uint64()
        self._u64p = ctypes.byref(self._u64)
        self._cp = UcRegCP64()
        self._cpp = ctypes.byref(self._cp)
        # The calls made several times per exit, unprototyped, from a second view of the library
        # (the binding sets argtypes on its own): no from_param conversion per argument, which
        # halves a call (measured 0.23 against 0.45 µs with a CFUNCTYPE prototype). So every
        # argument is a ctypes object, a byref, or a small int (passed as a C int). (Keeping the
        # GIL across them, PYFUNCTYPE, was measured: no faster, and three times the context
        # switches, the other threads then waiting out switch intervals.)
        bare = ctypes.CDLL(uclib._name, handle=uclib._handle)
        self._rr, self._rw = bare.uc_reg_read, bare.uc_reg_write
        self._vread, self._vtranslate = bare.uc_vmem_read, bare.uc_vmem_translate
        self._start = bare.uc_emu_start
        self._begin, self._zero64 = ctypes.c_uint64(), ctypes.c_uint64()
        self._zero = ctypes.c_size_t()
        self._va = ctypes.c_uint64()
        self._four = ctypes.c_size_t(4)
        self._word = ctypes.c_uint32()
        self._wordp = ctypes.byref(self._word)
        # The PC while the core is stopped, when known without asking it: what was last written
        # to it (or what the core reported, ``pc_known``). Outside emu_start only this object
        # changes the PC, so the value stays true until the next emu_start, which forgets it:
        # every exit's "PC += 4" is then followed by a run that needs no PC read.
        self._pc: int | None = None
        self._running = False
        self._state = ctypes.c_void_p()
        self._start_args: tuple[object, ...] = (self.uch, self._begin, self._zero64,
                                                self._zero64, self._zero)

    def emu_start(self, begin: int) -> int:
        """Run from ``begin`` until stopped; returns the uc_err code (0 = stopped cleanly)."""
        self._begin.value = begin & 0xFFFFFFFFFFFFFFFF
        self._pc, self._running = None, True   # hooks may read and write the PC meanwhile
        err = self._start(*self._start_args)
        self._pc, self._running = None, False
        return err

    def start_through(self, shim: ctypes.CDLL, state: int) -> None:
        """From now on ``emu_start`` enters through the shim's skvm_emu_start for vCPU
        ``state`` (unprototyped, as the calls above), which also tells the other vCPUs whether
        this one is inside its core (for their broadcasts)."""
        self._start = ctypes.CDLL(shim._name, handle=shim._handle).skvm_emu_start
        self._state.value = state
        self._start_args = (self._state, self._begin)

    def pc_known(self, pc: int) -> None:
        """The core reported that its PC is ``pc`` (the faulting instruction of an exit)."""
        if not self._running:
            self._pc = pc

    def read(self, reg: int) -> int:
        if reg == _PC and self._pc is not None:
            return self._pc
        self._rr(self.uch, reg, self._u64p)
        return self._u64.value

    def write(self, reg: int, value: int) -> None:
        value &= 0xFFFFFFFFFFFFFFFF
        self._u64.value = value
        self._rw(self.uch, reg, self._u64p)
        if reg == _PC and not self._running:
            self._pc = value

    def vmem_read32(self, va: int, prot: int) -> int | None:
        """The 32-bit word at ``va`` through the guest's translation for ``prot``."""
        self._va.value = va & 0xFFFFFFFFFFFFFFFF
        if self._vread(self.uch, self._va, prot, self._wordp, self._four):
            return None
        return self._word.value

    def vmem_translate(self, va: int, prot: int) -> int | None:
        """The physical address ``va`` translates to for an access of kind ``prot``."""
        self._va.value = va & 0xFFFFFFFFFFFFFFFF
        if self._vtranslate(self.uch, self._va, prot, self._u64p):
            return None
        return self._u64.value

    def cpr_read(self, op0: int, op1: int, crn: int, crm: int, op2: int) -> int:
        cp = self._cp
        cp.crn, cp.crm, cp.op0, cp.op1, cp.op2, cp.val = crn, crm, op0, op1, op2, 0
        self._rr(self.uch, _CP_REG, self._cpp)
        return cp.val

    def cpr_write(self, op0: int, op1: int, crn: int, crm: int, op2: int, value: int) -> None:
        """Write a system register; any CP_REG write also rebuilds the core's cached flags."""
        cp = self._cp
        cp.crn, cp.crm, cp.op0, cp.op1, cp.op2 = crn, crm, op0, op1, op2
        cp.val = value & 0xFFFFFFFFFFFFFFFF
        self._rw(self.uch, _CP_REG, self._cpp)


_CP_REG = unicorn.arm64_const.UC_ARM64_REG_CP_REG
_PC = unicorn.arm64_const.UC_ARM64_REG_PC
