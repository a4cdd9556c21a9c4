/*
 * softkvm native shim: the few Unicorn callbacks that must not cost a Python call.
 *
 * Counterparts: the hardware KVM relies on. The kick stands in for the IPI/host interrupt that
 * takes a CPU out of guest mode at an instruction boundary; the sysreg filter stands in for the
 * trap configuration (HCR_EL2/ICH_HCR_EL2/CNTHCTL_EL2) that decides which guest register accesses
 * reach the hypervisor at all; the timer registers are the generic timer's "direct" state while a
 * vCPU is loaded (arch/arm64/kvm/arch_timer.c, timer_restore_state/timer_save_state).
 *
 * Why C: Unicorn calls a MRS/MSR hook for every op0=2/3 access in range (Linux reads SP_EL0 and
 * TPIDR_EL1 millions of times), and on a stock core the kick needs a block hook for every
 * translation block. Only a C callback is cheap enough for both. Everything decided here is
 * recorded in `struct skvm_vcpu`, which Python maps with ctypes (keep hw/native.py's mirror in
 * sync with this layout).
 *
 * libunicorn is not linked: Python passes the entry points it already loaded (skvm_set_api), so
 * the shim works with whatever copy of libunicorn the unicorn package ships.
 */
#define _POSIX_C_SOURCE 200809L
#include <Python.h>

#include "shim.h"

size_t skvm_vcpu_size(void) { return sizeof(struct skvm_vcpu); }

uint64_t skvm_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The counter Unicorn's CNTPCT_EL0 returns: CLOCK_MONOTONIC ns at 62.5 MHz. */
static uint64_t counter_now(void) { return skvm_monotonic_ns() / SKVM_NS_PER_TICK; }

uint64_t skvm_counter_now(void) { return counter_now(); }

/* A write to timer ``t``: poke the watcher only if the comparator now fires before its sleep
 * ends. A later deadline it finds when it wakes anyway, a vanished one merely finds nothing; each
 * poke costs the watcher a thread wake-up and a GIL hand-off, and Linux writes its timer at every
 * tick and every idle entry. */
static void notify(struct skvm_vcpu *v, const struct skvm_timer *t)
{
    uint64_t deadline = skvm_deadline_ns(v, (int)(t - v->timer)), until;
    v->timer_writes++;
    /* Orders the write before the read of watch_until, as the watcher's publish orders its
     * store of watch_until before its reads of the timers (timer_ppi.c). */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    until = __atomic_load_n(&v->watch_until, __ATOMIC_SEQ_CST);
    if (deadline == SKVM_NEVER || (until != 0 && deadline >= until))
        return;
    skvm_eventfd_signal(v->notify_fd);
}

/* --- the kick --------------------------------------------------------------------------- */

/* Only for a core without UC_CTL_KICK_FLAG (stock Unicorn): softkvm's build checks the flag itself
 * at the start of every block, without the cost of a hook. Stopping here is exact too: the block
 * hook runs before any instruction of the block. */
static void block_cb(uc_engine *uc, uint64_t address, uint32_t size, void *user)
{
    struct skvm_vcpu *v = user;
    (void)address;
    (void)size;
    if (__builtin_expect(v->kick, 0)) {
        v->kick = 0;
        v->api->emu_stop(uc);
    }
}

/* --- the GICv2 virtual CPU interface frame ---------------------------------------------- */

#define SKVM_GICV_IAR 0x0C
#define SKVM_INTID_SPURIOUS 1023u

static uint64_t gicv_read(uc_engine *uc, uint64_t offset, unsigned size, void *user)
{
    struct skvm_vcpu *v = user;
    (void)uc;
    if (offset == SKVM_GICV_IAR && size == 4 && v->no_pending_lr) {
        v->n_gicv_spurious++;
        return SKVM_INTID_SPURIOUS;
    }
    return v->py_gicv_read ? v->py_gicv_read(v->py_cookie, offset, size) : 0;
}

static void gicv_write(uc_engine *uc, uint64_t offset, unsigned size, uint64_t value, void *user)
{
    struct skvm_vcpu *v = user;
    (void)uc;
    if (v->py_gicv_write)
        v->py_gicv_write(v->py_cookie, offset, size, value);
}

/* --- exceptions the core reports instead of delivering ----------------------------------- */

static void intr_cb(uc_engine *uc, uint32_t intno, void *user)
{
    struct skvm_vcpu *v = user;
    v->exit_kind = SKVM_EXIT_INTR;
    v->intno = intno;
    v->n_intr++;
    /* env->exception {syndrome, fsr, vaddress, target_el} is only reachable through a context. */
    if (v->ctx && v->exc_offset && v->api->context_save(uc, v->ctx) == UC_ERR_OK) {
        const uint8_t *p = (const uint8_t *)v->ctx + v->exc_offset;
        memcpy(&v->syndrome, p, 4);
        memcpy(&v->fsr, p + 4, 4);
        memcpy(&v->vaddress, p + 8, 8);
        memcpy(&v->target_el, p + 16, 4);
    }
    v->api->emu_stop(uc);
}

/* Access to an unbacked physical address: record it, let emu_start fail; Python answers. */
static bool unmapped_cb(uc_engine *uc, uc_mem_type type, uint64_t address, int size,
                        int64_t value, void *user)
{
    struct skvm_vcpu *v = user;
    (void)uc;
    v->exit_kind = SKVM_EXIT_UNMAPPED;
    v->mem_type = (uint32_t)type;
    v->mem_addr = address;
    v->mem_size = (uint32_t)size;
    v->mem_value = value;
    return false;
}

/* --- system registers -------------------------------------------------------------------- */

static uint32_t encode(const uc_arm64_cp_reg *cp)
{
    return (cp->op0 << 14) | (cp->op1 << 11) | (cp->crn << 7) | (cp->crm << 3) | cp->op2;
}

/* CNTx_* access. index: 0 virtual, 1 physical; reg: CRm[1:0]-independent op2 (0 TVAL, 1 CTL, 2 CVAL). */
static uint64_t timer_access(struct skvm_vcpu *v, uint32_t enc, int is_write, uint64_t wval)
{
    uint32_t crm = (enc >> 3) & 0xF, op2 = enc & 7;
    struct skvm_timer *t = &v->timer[crm == 3 ? 0 : 1];
    uint64_t now = counter_now();
    uint64_t count = crm == 3 ? now - v->cntvoff : now;
    v->n_sysreg_timer++;
    switch (op2) {
    case 0: /* TVAL: a signed 32-bit view of CVAL - count */
        if (is_write) {
            t->cval = count + (uint64_t)(int64_t)(int32_t)(uint32_t)wval;
            notify(v, t);
            return 0;
        }
        return (uint64_t)(uint32_t)(t->cval - count);
    case 1: /* CTL: ISTATUS (bit 2) reports the condition whenever the timer is enabled */
        if (is_write) {
            t->ctl = wval & 3;
            notify(v, t);
            return 0;
        }
        return t->ctl | (((t->ctl & 1) && t->cval <= count) ? 4u : 0u);
    default: /* CVAL */
        if (is_write) {
            t->cval = wval;
            notify(v, t);
            return 0;
        }
        return t->cval;
    }
}

static void advance_pc(struct skvm_vcpu *v, uc_engine *uc)
{
    uint64_t pc;
    v->api->reg_read(uc, UC_ARM64_REG_PC, &pc);
    pc += 4;
    v->api->reg_write(uc, UC_ARM64_REG_PC, &pc);
}

static uint32_t sysreg_access(uc_engine *uc, uc_arm64_reg reg, const uc_arm64_cp_reg *cp,
                              struct skvm_vcpu *v, int is_write)
{
    uint32_t enc = encode(cp);
    uint8_t policy = v->policy[enc];
    uint64_t value = 0;
    if (__builtin_expect(policy == SKVM_SR_NATIVE, 1))
        return 0;
    if (policy == SKVM_SR_TIMER) {
        value = timer_access(v, enc, is_write, cp->val);
    } else {
        v->n_sysreg_py++;
        if (!v->py_cb || !v->py_cb(v->py_cookie, enc, (uint32_t)is_write, cp->val, &value))
            return 0; /* not ours after all: the core decides (UNDEF for unknown registers) */
    }
    if (!is_write && reg != UC_ARM64_REG_XZR)
        v->api->reg_write(uc, reg, &value);
    if (policy == SKVM_SR_PY_UNKNOWN)
        advance_pc(v, uc);
    return 1;
}

static uint32_t mrs_cb(uc_engine *uc, uc_arm64_reg reg, const uc_arm64_cp_reg *cp, void *user)
{
    return sysreg_access(uc, reg, cp, user, 0);
}

static uint32_t msr_cb(uc_engine *uc, uc_arm64_reg reg, const uc_arm64_cp_reg *cp, void *user)
{
    return sysreg_access(uc, reg, cp, user, 1);
}

/* IC IVAU: the other cores need drop only the translations made from this page. Its PA is taken
 * now, while the VA still means what it meant to the guest; a page that will not translate, or
 * one too many, makes it an IC IALLUIS. */
static void record_ivau(struct skvm_vcpu *v, uc_engine *uc, uint64_t va)
{
    uint64_t page = va & ~(uint64_t)0xFFF, pa;
    uint32_t n = v->pending_ic;
    if (n == SKVM_IC_ALL)
        return;
    for (uint32_t i = n; i-- > 0;)
        if (v->ic_va[i] == page)
            return;
    if (n == SKVM_IC_PAGES || v->api->vmem_translate(uc, page, UC_PROT_READ, &pa) != UC_ERR_OK) {
        v->pending_ic = SKVM_IC_ALL;
        return;
    }
    v->ic_va[n] = page;
    v->ic_pa[n] = pa;
    v->pending_ic = n + 1;
}

/* TLBI ...IS: one by VA the other vCPUs replay (as QEMU's MTTCG runs the page flush on every
 * vCPU). Linux issues one per page it unmaps or changes, about 50k in a SMP boot: flushing the
 * others' whole TLB and jump cache for each kept them refilling all the time. Wider ones
 * (VMALLE1IS, ASIDE1IS: QEMU flushes EL1&0 whole for both), the range and EL2 forms, and one too
 * many, flush the others' TLBs whole. */
static void record_tlbi(struct skvm_vcpu *v, const uc_arm64_cp_reg *cp)
{
    uint32_t n = v->pending_tlbi_is;
    int by_va = cp->op1 == 0 && cp->crm == 3 && (cp->op2 & 1);
    if (n == SKVM_TLBI_ALL)
        return;
    if (!by_va || n == SKVM_TLBI_OPS) {
        v->pending_tlbi_is = SKVM_TLBI_ALL;
        return;
    }
    v->tlbi_op2[n] = cp->op2;
    v->tlbi_val[n] = cp->val;
    v->pending_tlbi_is = n + 1;
}

/* SYS (op0 = 1): the core performs every maintenance op locally; broadcast ones are recorded so
 * the other vCPUs are flushed before any of them runs again. While the vCPUs take turns that is
 * whenever this slice ends; while they run in parallel the core ends the slice after the DSB that
 * completes the ops (UC_CTL_PARALLEL), and the others are flushed and waited for there. */
static uint32_t sys_cb(uc_engine *uc, uc_arm64_reg reg, const uc_arm64_cp_reg *cp, void *user)
{
    struct skvm_vcpu *v = user;
    (void)reg;
    if (cp->crn == 8 && (cp->crm == 3 || cp->crm == 2)) /* TLBI ...IS (and range IS) */
        record_tlbi(v, cp);
    else if (cp->crn == 7 && cp->crm == 5 && cp->op1 == 3 && cp->op2 == 1) /* IC IVAU, Xt */
        record_ivau(v, uc, cp->val);
    else if (cp->crn == 7 && cp->crm == 1 && cp->op2 == 0) /* IC IALLUIS */
        v->pending_ic = SKVM_IC_ALL;
    else
        return 0;
    v->dsb_pending = 1;
    return 0;
}

/* --- vCPUs in parallel ----------------------------------------------------------------------
 *
 * With UC_CTL_PARALLEL every vCPU's core runs on its own thread. A broadcast TLBI or IC IVAU on
 * one must reach the others before its DSB completes, as kvm_flush_remote_tlbs does with a
 * KVM_REQUEST_WAIT request: the DSB posts the work to every other vCPU, kicks it with
 * SKVM_KICK_WORK, and waits until each has taken it or is outside its core (it then takes it
 * before it enters again). A vCPU takes posted work on its own thread, at a block start, where
 * flushing its own TLB and translations is safe; while waiting, a vCPU takes the work posted to
 * it, so two vCPUs that broadcast at once do not wait for each other forever. */

#if defined(__i386__) || defined(__x86_64__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() __asm__ __volatile__("" ::: "memory")
#endif

static void spin_lock(volatile int32_t *lock)
{
    while (__atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(lock, __ATOMIC_RELAXED))
            cpu_relax();
}

static void spin_unlock(volatile int32_t *lock) { __atomic_store_n(lock, 0, __ATOMIC_RELEASE); }

/* The core's own TLBI handler (non-IS semantics: this engine has one CPU) does the flush. */
static void replay_tlbi(struct skvm_vcpu *v, uint32_t op2, uint64_t val)
{
    uc_arm64_cp_reg cp = {.crn = 8, .crm = 3, .op0 = 1, .op1 = 0, .op2 = op2, .val = val};
    if (v->api->reg_write(v->uc, UC_ARM64_REG_CP_REG, &cp) != UC_ERR_OK)
        v->api->ctl(v->uc, UC_CTL_WRITE(UC_CTL_TLB_FLUSH, 0));
}

/* Drop what other vCPUs asked for. ``running``: called from inside the core, where dropping every
 * translation is not safe: that is left to Python, at a stop asked for here. */
static void take_remote(struct skvm_vcpu *v, int running)
{
    uint64_t pages[SKVM_IC_PAGES], vals[SKVM_TLBI_OPS], req;
    uint32_t op2s[SKVM_TLBI_OPS], bits, n, ntlbi;
    if (__atomic_load_n(&v->rreq, __ATOMIC_SEQ_CST) == v->rack)
        return;
    spin_lock(&v->rlock);
    req = v->rreq;
    bits = v->rbits;
    n = v->rnpages;
    ntlbi = v->rntlbi;
    memcpy(pages, v->rpages, n * sizeof(pages[0]));
    memcpy(op2s, v->rtlbi_op2, ntlbi * sizeof(op2s[0]));
    memcpy(vals, v->rtlbi_val, ntlbi * sizeof(vals[0]));
    v->rbits = v->rnpages = v->rntlbi = 0;
    spin_unlock(&v->rlock);
    if (bits & SKVM_R_TLB)
        v->api->ctl(v->uc, UC_CTL_WRITE(UC_CTL_TLB_FLUSH, 0));
    else
        for (uint32_t i = 0; i < ntlbi; i++)
            replay_tlbi(v, op2s[i], vals[i]);
    if ((bits & SKVM_R_ALL_CODE) && running) {
        v->remote_tb_flush = 1;
        skvm_kick_stop(v);
    } else if (bits & SKVM_R_ALL_CODE) {
        v->api->ctl(v->uc, UC_CTL_WRITE(UC_CTL_TB_FLUSH, 0));
    } else {
        for (uint32_t i = 0; i < n; i++)
            v->api->ctl(v->uc, UC_CTL_WRITE(SKVM_CTL_INVALIDATE_PHYS, 2), pages[i],
                        (uint64_t)0x1000);
    }
    __atomic_store_n(&v->rack, req, __ATOMIC_RELEASE);
}

static void post_remote(struct skvm_vcpu *p, uint32_t bits, const struct skvm_vcpu *v, uint32_t n,
                        uint32_t ntlbi, uint64_t *ticket)
{
    const uint64_t *pages = v->ic_pa;
    spin_lock(&p->rlock);
    p->rbits |= bits;
    if (p->rntlbi + ntlbi > SKVM_TLBI_OPS)
        p->rbits |= SKVM_R_TLB;
    if (!(p->rbits & SKVM_R_TLB)) {
        memcpy(p->rtlbi_op2 + p->rntlbi, v->tlbi_op2, ntlbi * sizeof(p->rtlbi_op2[0]));
        memcpy(p->rtlbi_val + p->rntlbi, v->tlbi_val, ntlbi * sizeof(p->rtlbi_val[0]));
        p->rntlbi += ntlbi;
    }
    for (uint32_t i = 0; i < n && !(p->rbits & SKVM_R_ALL_CODE); i++) {
        uint32_t j = 0;
        while (j < p->rnpages && p->rpages[j] != pages[i])
            j++;
        if (j < p->rnpages)
            continue;
        if (p->rnpages == SKVM_IC_PAGES)
            p->rbits |= SKVM_R_ALL_CODE;
        else
            p->rpages[p->rnpages++] = pages[i];
    }
    *ticket = ++p->rreq;
    spin_unlock(&p->rlock);
    __atomic_fetch_or(&p->kick, SKVM_KICK_WORK, __ATOMIC_SEQ_CST);
}

/* Send this vCPU's recorded broadcast ops to the others and wait until none can run on what they
 * dropped. */
void skvm_broadcast(struct skvm_vcpu *v)
{
    uint32_t bits = v->pending_tlbi_is == SKVM_TLBI_ALL ? SKVM_R_TLB : 0, n = 0;
    uint32_t ntlbi = bits ? 0 : v->pending_tlbi_is;
    uint64_t tickets[v->npeers ? v->npeers : 1];
    if (v->pending_ic == SKVM_IC_ALL)
        bits |= SKVM_R_ALL_CODE;
    else
        n = v->pending_ic;
    v->pending_tlbi_is = v->pending_ic = 0;
    if (!bits && !n && !ntlbi)
        return;
    v->n_bcast_tlb += (bits & SKVM_R_TLB) != 0;
    v->n_bcast_tlbi_va += ntlbi;
    v->n_bcast_all_code += (bits & SKVM_R_ALL_CODE) != 0;
    v->n_bcast_pages += n;
    for (uint32_t i = 0; i < v->npeers; i++)
        if (v->peers[i] != v)
            post_remote(v->peers[i], bits, v, n, ntlbi, &tickets[i]);
    for (uint32_t i = 0; i < v->npeers; i++) {
        struct skvm_vcpu *p = v->peers[i];
        if (p == v)
            continue;
        while (__atomic_load_n(&p->rack, __ATOMIC_ACQUIRE) < tickets[i] &&
               __atomic_load_n(&p->in_core, __ATOMIC_SEQ_CST)) {
            take_remote(v, 1);
            cpu_relax();
        }
    }
}

static void parallel_cb(uc_engine *uc, int event, void *user)
{
    struct skvm_vcpu *v = user;
    (void)uc;
    if (event == SKVM_PARALLEL_DSB)
        skvm_broadcast(v);
    else
        take_remote(v, 1);
}

/* uc_emu_start, inside the in_core window the broadcasts look at. */
uc_err skvm_emu_start(struct skvm_vcpu *v, uint64_t begin)
{
    uc_err err;
    __atomic_store_n(&v->in_core, 1, __ATOMIC_SEQ_CST);
    take_remote(v, 0);
    err = v->api->emu_start(v->uc, begin, 0, 0, 0);
    __atomic_store_n(&v->in_core, 0, __ATOMIC_SEQ_CST);
    return err;
}

void skvm_kick(struct skvm_vcpu *v) { skvm_kick_stop(v); }

/* Consume a pending stop (bit 0) and leave posted work alone: 1 if there was one. */
int skvm_take_kick(struct skvm_vcpu *v)
{
    return __atomic_fetch_and(&v->kick, ~SKVM_KICK_STOP, __ATOMIC_SEQ_CST) & SKVM_KICK_STOP;
}

/* --- set-up ------------------------------------------------------------------------------ */

void skvm_set_api(struct skvm_api *api, void *emu_stop, void *reg_read, void *reg_write,
                  void *context_save, void *vmem_translate, void *emu_start, void *ctl)
{
    api->emu_start = (uc_err(*)(uc_engine *, uint64_t, uint64_t, uint64_t, size_t))emu_start;
    api->ctl = (uc_err(*)(uc_engine *, uc_control_type, ...))ctl;
    api->emu_stop = (uc_err(*)(uc_engine *))emu_stop;
    api->reg_read = (uc_err(*)(uc_engine *, int, void *))reg_read;
    api->reg_write = (uc_err(*)(uc_engine *, int, const void *))reg_write;
    api->context_save = (uc_err(*)(uc_engine *, uc_context *))context_save;
    api->vmem_translate = (uc_err(*)(uc_engine *, uint64_t, uc_prot, uint64_t *))vmem_translate;
}

void *skvm_block_cb(void) { return (void *)block_cb; }
void *skvm_intr_cb(void) { return (void *)intr_cb; }
void *skvm_unmapped_cb(void) { return (void *)unmapped_cb; }
void *skvm_mrs_cb(void) { return (void *)mrs_cb; }
void *skvm_msr_cb(void) { return (void *)msr_cb; }
void *skvm_sys_cb(void) { return (void *)sys_cb; }
void *skvm_parallel_cb(void) { return (void *)parallel_cb; }
void *skvm_gicv_read_cb(void) { return (void *)gicv_read; }
void *skvm_gicv_write_cb(void) { return (void *)gicv_write; }

/* Importable as a module too, so the package build treats it as an ordinary extension. */
static struct PyModuleDef shim_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_shim",
    .m_doc = "softkvm native shim (loaded with ctypes)",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__shim(void) { return PyModule_Create(&shim_module); }
