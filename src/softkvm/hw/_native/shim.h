/*
 * softkvm native shim: the state the shim's C files share (struct skvm_vcpu, which Python maps
 * with ctypes: keep hw/native.py's mirror in sync with this layout).
 */
#ifndef SOFTKVM_SHIM_H
#define SOFTKVM_SHIM_H

#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <unicorn/unicorn.h>

enum skvm_exit_kind {
    SKVM_EXIT_NONE = 0,
    SKVM_EXIT_INTR = 1,     /* UC_HOOK_INTR: exception the core did not deliver itself */
    SKVM_EXIT_UNMAPPED = 2, /* access to a physical address with no RAM and no in-kernel device */
};

/* Per-encoding sysreg policy (index = op0[15:14] op1[13:11] CRn[10:7] CRm[6:3] op2[2:0]). */
enum skvm_sysreg_policy {
    SKVM_SR_NATIVE = 0,      /* the core handles it */
    SKVM_SR_PY_KNOWN = 1,    /* Python emulates; register known to the core (no PC fix) */
    SKVM_SR_PY_UNKNOWN = 2,  /* Python emulates; unknown to the core, so we advance PC */
    SKVM_SR_TIMER = 3,       /* generic timer CTL/CVAL/TVAL, emulated here */
};

/* IC IVAU targets a slice records, one per page, before it settles for "drop everything". */
#define SKVM_IC_PAGES 64
#define SKVM_IC_ALL 0xFFFFFFFFu
/* TLBI ...IS by VA a slice records for the other vCPUs to replay, before it settles for flushing
 * their TLBs whole. */
#define SKVM_TLBI_OPS 64
#define SKVM_TLBI_ALL 0xFFFFFFFFu

/* Python callback for SKVM_SR_PY_*: returns 1 if handled (value in *rval for reads). */
typedef int (*skvm_py_sysreg_cb)(void *vcpu, uint32_t encoding, uint32_t is_write, uint64_t wval,
                                 uint64_t *rval);
/* Python callbacks for the GICv2 virtual CPU interface frame (offset in the frame). */
typedef uint64_t (*skvm_py_gicv_read_cb)(void *vcpu, uint64_t offset, uint32_t size);
typedef void (*skvm_py_gicv_write_cb)(void *vcpu, uint64_t offset, uint32_t size, uint64_t value);

/* softkvm's core: UC_CTL_PARALLEL and UC_CTL_INVALIDATE_PHYS (numbered after
 * UC_CTL_CONTEXT_MODE, as hw/core.py numbers them), the events of its callback, and the kick
 * word's bits: bit 0 stops the core, bit 1 makes it take work other vCPUs posted. */
#define SKVM_CTL_INVALIDATE_PHYS (UC_CTL_CONTEXT_MODE + 7)
#define SKVM_PARALLEL_DSB 0
#define SKVM_PARALLEL_KICK 1
#define SKVM_KICK_STOP 1
#define SKVM_KICK_WORK 2
/* What a vCPU is asked to drop (struct skvm_vcpu's rbits). */
#define SKVM_R_TLB 1u
#define SKVM_R_ALL_CODE 2u

struct skvm_api {
    uc_err (*emu_start)(uc_engine *uc, uint64_t begin, uint64_t until, uint64_t timeout,
                        size_t count);
    uc_err (*ctl)(uc_engine *uc, uc_control_type control, ...);
    uc_err (*emu_stop)(uc_engine *uc);
    uc_err (*reg_read)(uc_engine *uc, int regid, void *value);
    uc_err (*reg_write)(uc_engine *uc, int regid, const void *value);
    uc_err (*context_save)(uc_engine *uc, uc_context *context);
    uc_err (*vmem_translate)(uc_engine *uc, uint64_t address, uc_prot prot, uint64_t *paddress);
};

struct skvm_timer {
    uint64_t ctl;  /* ENABLE bit0, IMASK bit1 (ISTATUS is computed on read) */
    uint64_t cval;
};

struct skvm_vcpu {
    /* Kick: any thread sets it; the core (UC_CTL_KICK_FLAG) or the block hook consumes it at the
     * next block boundary. */
    volatile int32_t kick;
    int32_t notify_fd; /* eventfd poked when a timer register changes, or -1 */

    /* Exit record of the last stop. */
    uint32_t exit_kind;
    uint32_t intno;
    uint32_t syndrome;
    uint32_t fsr;
    uint64_t vaddress;
    uint32_t target_el;
    uint32_t mem_type;
    uint64_t mem_addr;
    int64_t mem_value;
    uint32_t mem_size;
    uint32_t pending_tlbi_is; /* TLBI ...IS by VA seen this slice (tlbi_*), or SKVM_TLBI_ALL */
    uint32_t pending_ic;      /* IC IVAU pages seen this slice (ic_va/ic_pa), or SKVM_IC_ALL */
    uint32_t exc_offset;      /* offset of env->exception in a saved context (calibrated) */
    /* A broadcast op is outstanding: a parallel core calls back at its next DSB (the flag of
     * UC_CTL_PARALLEL). */
    volatile int32_t dsb_pending;

    /* Generic timer, live while the vCPU is loaded: [0] = virtual (CNTV), [1] = physical (CNTP). */
    struct skvm_timer timer[2];
    uint64_t cntvoff;       /* CNTVOFF_EL2 in counter ticks */
    uint64_t timer_writes;  /* bumped on every CTL/CVAL/TVAL write */
    /* When the timer PPI watcher's sleep ends (CLOCK_MONOTONIC ns; UINT64_MAX: it waits for
     * a poke; 0, as set up: it is scanning, so every write pokes). Written by the watcher. */
    volatile uint64_t watch_until;

    /* The timer PPI (timer_ppi.c), guarded by its watcher's lock: SKVM_PPI_* bits. */
    uint32_t ppi_state;
    /* Expiries the watcher found and the hypervisor has not taken yet: bit 0 virtual, bit 1
     * physical (set by the watcher, taken by the vCPU's thread). */
    volatile uint32_t ppi_fired;
    /* The background timer of a vCPU blocked in WFI (kvm_bg_timer_expire), kept by the same
     * watcher: when it falls (CLOCK_MONOTONIC ns, SKVM_NEVER: none), the watcher writes the
     * vCPU's wake_fd and sets bg_fired. */
    int32_t wake_fd;
    volatile uint32_t bg_fired;
    uint64_t bg_deadline;

    /* Counters (read by the stats layer). */
    uint64_t n_intr;
    uint64_t n_sysreg_py;
    uint64_t n_sysreg_timer;

    /* The pages IC IVAU named this slice: the VA and the PA it had on this vCPU at the time. */
    uint64_t ic_va[SKVM_IC_PAGES];
    uint64_t ic_pa[SKVM_IC_PAGES];
    /* The TLBI ...IS by VA seen this slice: op2 of TLBI VAE1IS/VAAE1IS/VALE1IS/VAALE1IS, and Xt. */
    uint32_t tlbi_op2[SKVM_TLBI_OPS];
    uint64_t tlbi_val[SKVM_TLBI_OPS];

    uc_context *ctx;
    struct skvm_api *api;
    skvm_py_sysreg_cb py_cb;
    void *py_cookie;
    uint8_t policy[65536];

    /* vCPUs in parallel (remote maintenance, below). */
    uc_engine *uc;
    struct skvm_vcpu **peers; /* every vCPU of the VM, this one included */
    uint32_t npeers;
    volatile int32_t in_core;  /* inside uc_emu_start */
    volatile int32_t rlock;    /* guards rbits, rnpages, rpages, rreq */
    uint32_t rbits;            /* SKVM_R_*: what others asked this vCPU to drop */
    uint32_t rnpages;
    uint32_t rntlbi;           /* TLBI by VA others asked this vCPU to replay (rtlbi_*) */
    uint32_t remote_tb_flush;  /* drop every translation at the coming stop (Python does) */
    uint64_t rpages[SKVM_IC_PAGES];
    uint32_t rtlbi_op2[SKVM_TLBI_OPS];
    uint64_t rtlbi_val[SKVM_TLBI_OPS];
    volatile uint64_t rreq;    /* requests posted to this vCPU so far */
    volatile uint64_t rack;    /* ... and taken */
    uint64_t n_bcast_tlb;      /* broadcasts this vCPU made: TLBI ...IS flushing whole TLBs */
    uint64_t n_bcast_tlbi_va;  /* TLBI ...IS by VA it sent to be replayed */
    uint64_t n_bcast_all_code; /* IC IALLUIS, or more pages than a request holds */
    uint64_t n_bcast_pages;    /* IC IVAU pages */

    /* The GICv2 virtual CPU interface frame (GICV), mapped with the shim's MMIO callbacks. A
     * GICV_IAR read while no list register is pending returns 1023 and changes nothing (the
     * GIC's no-candidate case): the shim answers it, as the hardware GICV frame does without a
     * trap. Linux's GICv2 handler ends every interrupt with such a read. Everything else goes
     * to Python. no_pending_lr is the hypervisor's word for it (set at each entry and after each
     * access that changed the interface; 0: ask Python). */
    skvm_py_gicv_read_cb py_gicv_read;
    skvm_py_gicv_write_cb py_gicv_write;
    uint32_t no_pending_lr;
    uint32_t pad_gicv;
    uint64_t n_gicv_spurious;  /* GICV_IAR reads answered here */
};

/* CLOCK_MONOTONIC in ns, and the counter Unicorn's CNTPCT_EL0 returns (62.5 MHz: 16 ns a tick). */
uint64_t skvm_monotonic_ns(void);
#define SKVM_NS_PER_TICK 16
#define SKVM_NEVER UINT64_MAX

/* When timer ``i`` of ``v`` (0 virtual, counting from CNTVOFF; 1 physical) meets its condition
 * (count >= CVAL), in CLOCK_MONOTONIC ns: SKVM_NEVER while its output is off (not enabled, or
 * IMASK), or past what 64 bits of ns hold. */
static inline uint64_t skvm_deadline_ns(const struct skvm_vcpu *v, int i)
{
    const struct skvm_timer *t = &v->timer[i];
    uint64_t ticks = t->cval + (i == 0 ? v->cntvoff : 0);
    if ((t->ctl & 3) != 1 || ticks >= SKVM_NEVER / SKVM_NS_PER_TICK)
        return SKVM_NEVER;
    return ticks * SKVM_NS_PER_TICK;
}

/* Wake whoever waits on eventfd ``fd`` (if any: -1 is none). A full eventfd already wakes its
 * reader, so a failed write loses nothing. */
static inline void skvm_eventfd_signal(int fd)
{
    uint64_t one = 1;
    if (fd >= 0 && write(fd, &one, sizeof(one)) < 0)
        return;
}

/* Ask the vCPU to leave the core at its next block boundary (any thread). */
static inline void skvm_kick_stop(struct skvm_vcpu *v)
{
    __atomic_fetch_or(&v->kick, SKVM_KICK_STOP, __ATOMIC_SEQ_CST);
}

#endif
