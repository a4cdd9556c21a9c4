/*
 * The host timer PPI of every loaded vCPU: one native thread per VM that needs no GIL.
 *
 * Counterpart: the physical timer interrupt KVM takes while a vCPU runs with its timers loaded in
 * the hardware (arch/arm64/kvm/arch_timer.c, kvm_arch_timer_handler). When a loaded, unmasked
 * comparator meets its condition, the host interrupt takes the CPU out of the guest, and the PPI
 * stays masked while KVM leaves it active, so a level that stays high does not trap again.
 *
 * Here the watcher sleeps until the earliest such deadline (or until its eventfd says a guest
 * timer write or a load, unmask or re-arm exposed an earlier one), then marks each expiry in
 * ppi_fired and kicks the vCPU; the vCPU's thread takes the mark after the exit, as the PPI
 * handler runs on the CPU it interrupted. Why C: the watcher wakes at every guest timer tick, and
 * as a Python thread each wake-up cost a thread switch plus a round of GIL hand-offs with the
 * vCPU threads that were handling their own exits.
 *
 * The same thread keeps the background timer of each vCPU blocked in WFI (arch_timer.c's bg_timer,
 * an hrtimer whose expiry wakes the vCPU's thread): it writes the vCPU's wake eventfd at the
 * deadline vcpu_put armed, so a timer wake-up from WFI needs no Python thread either.
 *
 * Each scan publishes when its sleep ends in every vCPU's watch_until (SKVM_WATCH_SCANNING while
 * it runs, SKVM_NEVER when it waits for a poke), so a guest timer write pokes only for a deadline
 * before that (notify() in shim.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "shim.h"

#define SKVM_PPI_LOADED 1u
#define SKVM_PPI_MASKED(t) (2u << (t))   /* the PPI of timer t is left active by the hypervisor */
#define SKVM_PPI_FIRED(t) (8u << (t))    /* expiry seen: no second one until re-armed */
#define SKVM_PPI_ALL_FIRED (SKVM_PPI_FIRED(0) | SKVM_PPI_FIRED(1))
#define SKVM_WATCH_SCANNING 0

struct skvm_ppi {
    pthread_mutex_t lock;     /* guards everything below and every vCPU's ppi_state */
    pthread_t thread;
    int started;
    int stopped;
    int wake_fd;              /* eventfd: pokes, and every vCPU's notify_fd */
    volatile int32_t tid;     /* the watcher's thread id, once it runs */
    uint64_t wake_at;         /* when the current sleep ends (SKVM_NEVER: at a poke) */
    uint64_t fires, pokes, scans, bg_fires;
    uint32_t n, cap;
    struct skvm_vcpu **vcpus;
};

enum { SKVM_PPI_FIRES = 0, SKVM_PPI_POKES = 1, SKVM_PPI_SCANS = 2, SKVM_PPI_WAKE_AT = 3,
       SKVM_PPI_TID = 4, SKVM_PPI_BG_FIRES = 5 };

/* When timer ``t`` can raise the PPI: SKVM_NEVER while masked, once fired, or output off. */
static uint64_t ppi_deadline(const struct skvm_vcpu *v, int t)
{
    if (v->ppi_state & (SKVM_PPI_MASKED(t) | SKVM_PPI_FIRED(t)))
        return SKVM_NEVER;
    return skvm_deadline_ns(v, t);
}

/* Whether ``v`` has a live deadline before the planned wake-up (lock held). */
static int sooner_locked(const struct skvm_ppi *p, const struct skvm_vcpu *v)
{
    for (int t = 0; t < 2; t++) {
        uint64_t when = ppi_deadline(v, t);
        if (when != SKVM_NEVER && when < p->wake_at)
            return 1;
    }
    return 0;
}

static void poke(struct skvm_ppi *p)
{
    __atomic_fetch_add(&p->pokes, 1, __ATOMIC_RELAXED);
    skvm_eventfd_signal(p->wake_fd);
}

/* A full barrier orders these stores before the scan's reads of the timers, as notify's fence
 * (shim.c) orders a guest timer write before its read of watch_until. */
static void publish(struct skvm_ppi *p, uint64_t until)
{
    for (uint32_t i = 0; i < p->n; i++)
        __atomic_store_n(&p->vcpus[i]->watch_until, until, __ATOMIC_SEQ_CST);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* A blocked vCPU's background timer: wake its thread once due (lock held); returns the earliest
 * deadline still to watch. */
static uint64_t bg_expire(struct skvm_ppi *p, struct skvm_vcpu *v, uint64_t now, uint64_t earliest)
{
    if (v->bg_deadline > now)
        return v->bg_deadline < earliest ? v->bg_deadline : earliest;
    v->bg_deadline = SKVM_NEVER;
    __atomic_store_n(&v->bg_fired, 1, __ATOMIC_SEQ_CST);
    p->bg_fires++;
    skvm_eventfd_signal(v->wake_fd);
    return earliest;
}

/* Mark what is due and kick its vCPU; returns when the next deadline falls. */
static uint64_t scan(struct skvm_ppi *p)
{
    uint64_t earliest = SKVM_NEVER, now;
    pthread_mutex_lock(&p->lock);
    p->scans++;
    /* Every write from here on pokes, until the sleep below is known: a write racing with this
     * scan either is seen by it or wakes the poll that follows. */
    publish(p, SKVM_WATCH_SCANNING);
    now = skvm_monotonic_ns();
    for (uint32_t i = 0; i < p->n; i++) {
        struct skvm_vcpu *v = p->vcpus[i];
        if (v->bg_deadline != SKVM_NEVER)
            earliest = bg_expire(p, v, now, earliest);
        if (!(v->ppi_state & SKVM_PPI_LOADED))
            continue;
        for (int t = 0; t < 2; t++) {
            uint64_t when = ppi_deadline(v, t);
            if (when == SKVM_NEVER)
                continue;
            if (when <= now) {
                v->ppi_state |= SKVM_PPI_FIRED(t);
                __atomic_fetch_or(&v->ppi_fired, 1u << t, __ATOMIC_SEQ_CST);
                p->fires++;
                skvm_kick_stop(v);
            } else if (when < earliest) {
                earliest = when;
            }
        }
    }
    /* Under the lock, so that a load/unmask/rearm after this scan sees where the sleep ends. */
    p->wake_at = earliest;
    publish(p, earliest);
    pthread_mutex_unlock(&p->lock);
    return earliest;
}

static void *watch(void *arg)
{
    struct skvm_ppi *p = arg;
    prctl(PR_SET_TIMERSLACK, 1UL); /* KVM's timers are hard hrtimers: no 50 us of slack */
    __atomic_store_n(&p->tid, (int32_t)syscall(SYS_gettid), __ATOMIC_SEQ_CST);
    while (!__atomic_load_n(&p->stopped, __ATOMIC_SEQ_CST)) {
        uint64_t until = scan(p), now, left, drained;
        struct pollfd pfd = {.fd = p->wake_fd, .events = POLLIN};
        struct timespec ts, *timeout = NULL;
        if (until != SKVM_NEVER) {
            now = skvm_monotonic_ns();
            left = until > now ? until - now : 0;
            ts.tv_sec = (time_t)(left / 1000000000ull);
            ts.tv_nsec = (long)(left % 1000000000ull);
            timeout = &ts;
        }
        if (ppoll(&pfd, 1, timeout, NULL) > 0 && read(p->wake_fd, &drained, sizeof(drained)) < 0)
            (void)errno; /* another wake-up drained it first: nothing to do */
    }
    return NULL;
}

struct skvm_ppi *skvm_ppi_new(void)
{
    struct skvm_ppi *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    p->wake_at = SKVM_NEVER;
    if (p->wake_fd < 0 || pthread_mutex_init(&p->lock, NULL) != 0) {
        if (p->wake_fd >= 0)
            close(p->wake_fd);
        free(p);
        return NULL;
    }
    if (pthread_create(&p->thread, NULL, watch, p) != 0) {
        pthread_mutex_destroy(&p->lock);
        close(p->wake_fd);
        free(p);
        return NULL;
    }
    p->started = 1;
    return p;
}

/* Stop and join the watcher (it may be sleeping: call without the GIL), then free it. */
void skvm_ppi_free(struct skvm_ppi *p)
{
    if (p == NULL)
        return;
    __atomic_store_n(&p->stopped, 1, __ATOMIC_SEQ_CST);
    poke(p);
    if (p->started)
        pthread_join(p->thread, NULL);
    pthread_mutex_destroy(&p->lock);
    close(p->wake_fd);
    free(p->vcpus);
    free(p);
}

/* Watch ``v`` from now on (it is not loaded yet); its guest timer writes poke this watcher. */
int skvm_ppi_register(struct skvm_ppi *p, struct skvm_vcpu *v)
{
    int ok = 1;
    pthread_mutex_lock(&p->lock);
    if (p->n == p->cap) {
        uint32_t cap = p->cap ? 2 * p->cap : 8;
        struct skvm_vcpu **grown = realloc(p->vcpus, cap * sizeof(*grown));
        if (grown == NULL)
            ok = 0;
        else
            p->vcpus = grown, p->cap = cap;
    }
    if (ok) {
        p->vcpus[p->n++] = v;
        v->ppi_state = 0;
        v->ppi_fired = 0;
        v->bg_deadline = SKVM_NEVER;
        v->bg_fired = 0;
        __atomic_store_n(&v->watch_until, p->wake_at, __ATOMIC_SEQ_CST);
        v->notify_fd = p->wake_fd;
    }
    pthread_mutex_unlock(&p->lock);
    return ok;
}

/* vcpu_load: the timers are live in the hardware, with each PPI masked as ``masked`` (bit per
 * timer) says, or as it was if ``masked`` < 0. Pokes only for a deadline before the wake-up. */
void skvm_ppi_load(struct skvm_ppi *p, struct skvm_vcpu *v, int32_t masked)
{
    uint32_t old, bits;
    int changed, wake;
    pthread_mutex_lock(&p->lock);
    old = v->ppi_state;
    changed = !(old & SKVM_PPI_LOADED);
    if (changed)
        v->ppi_state = (old | SKVM_PPI_LOADED) & ~SKVM_PPI_ALL_FIRED;
    if (masked >= 0) {
        bits = (uint32_t)masked << 1 & (SKVM_PPI_MASKED(0) | SKVM_PPI_MASKED(1));
        if ((v->ppi_state & (SKVM_PPI_MASKED(0) | SKVM_PPI_MASKED(1))) != bits) {
            changed |= (masked & 3) != 3; /* an unmasked PPI may fire sooner */
            v->ppi_state = (v->ppi_state & ~(SKVM_PPI_MASKED(0) | SKVM_PPI_MASKED(1))) | bits;
        }
    }
    wake = changed && sooner_locked(p, v);
    pthread_mutex_unlock(&p->lock);
    if (wake)
        poke(p);
}

/* vcpu_put: the timers are the hypervisor's again. Exposes no deadline, so never pokes. */
void skvm_ppi_put(struct skvm_ppi *p, struct skvm_vcpu *v)
{
    pthread_mutex_lock(&p->lock);
    v->ppi_state &= ~(SKVM_PPI_LOADED | SKVM_PPI_ALL_FIRED);
    pthread_mutex_unlock(&p->lock);
}

/* Leave timer ``t``'s PPI active (masked) while KVM forwards a high level, or release it. */
void skvm_ppi_set_masked(struct skvm_ppi *p, struct skvm_vcpu *v, int32_t t, int32_t masked)
{
    int wake = 0;
    pthread_mutex_lock(&p->lock);
    if (!!(v->ppi_state & SKVM_PPI_MASKED(t)) != !!masked) {
        v->ppi_state ^= SKVM_PPI_MASKED(t);
        wake = !masked && (v->ppi_state & SKVM_PPI_LOADED) && sooner_locked(p, v);
    }
    pthread_mutex_unlock(&p->lock);
    if (wake)
        poke(p);
}

/* The hypervisor has handled the last expiry: watch again for the next one. */
void skvm_ppi_rearm(struct skvm_ppi *p, struct skvm_vcpu *v)
{
    int wake = 0;
    pthread_mutex_lock(&p->lock);
    if (v->ppi_state & SKVM_PPI_ALL_FIRED) {
        v->ppi_state &= ~SKVM_PPI_ALL_FIRED;
        wake = (v->ppi_state & SKVM_PPI_LOADED) && sooner_locked(p, v);
    }
    pthread_mutex_unlock(&p->lock);
    if (wake)
        poke(p);
}

/* vcpu_put of a vCPU about to block: wake its thread through ``wake_fd`` at ``deadline`` (the
 * earliest of its timers), unless cancelled first. */
void skvm_ppi_bg_arm(struct skvm_ppi *p, struct skvm_vcpu *v, uint64_t deadline, int32_t wake_fd)
{
    int wake;
    pthread_mutex_lock(&p->lock);
    v->wake_fd = wake_fd;
    v->bg_deadline = deadline;
    wake = deadline < p->wake_at;
    pthread_mutex_unlock(&p->lock);
    if (wake)
        poke(p);
}

/* vcpu_load: the background timer is no longer needed. Never pokes. */
void skvm_ppi_bg_cancel(struct skvm_ppi *p, struct skvm_vcpu *v)
{
    pthread_mutex_lock(&p->lock);
    v->bg_deadline = SKVM_NEVER;
    pthread_mutex_unlock(&p->lock);
}

/* Whether the background timer woke the vCPU since the last call. */
uint32_t skvm_ppi_bg_take(struct skvm_vcpu *v)
{
    return __atomic_exchange_n(&v->bg_fired, 0, __ATOMIC_SEQ_CST);
}

/* The expiries found since the last call (bit per timer), for the vCPU's thread. */
uint32_t skvm_ppi_take(struct skvm_vcpu *v)
{
    return __atomic_exchange_n(&v->ppi_fired, 0, __ATOMIC_SEQ_CST);
}

/* Counters and state for the hypervisor's stats and tests (SKVM_PPI_FIRES ...). */
uint64_t skvm_ppi_info(struct skvm_ppi *p, int32_t what)
{
    uint64_t value;
    pthread_mutex_lock(&p->lock);
    switch (what) {
    case SKVM_PPI_FIRES: value = p->fires; break;
    case SKVM_PPI_POKES: value = __atomic_load_n(&p->pokes, __ATOMIC_RELAXED); break;
    case SKVM_PPI_SCANS: value = p->scans; break;
    case SKVM_PPI_WAKE_AT: value = p->wake_at; break;
    case SKVM_PPI_BG_FIRES: value = p->bg_fires; break;
    default: value = (uint64_t)__atomic_load_n(&p->tid, __ATOMIC_SEQ_CST); break;
    }
    pthread_mutex_unlock(&p->lock);
    return value;
}
