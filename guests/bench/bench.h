/* bench: shared declarations of the benchmark guest (see main.c for the output contract). */
#ifndef SOFTKVM_GUEST_BENCH_H
#define SOFTKVM_GUEST_BENCH_H

#include "runtime.h"

#define BENCH_MAX_SAMPLES 1024

/* Parameters from the bootargs (defaults are small, so a plain run is quick). */
struct bench_params {
	uint64_t n;        /* iterations of the trap loops (hvc, mmio, ...) */
	uint64_t nirq;     /* iterations of the interrupt loops (ack, eoi, sgi-self) */
	uint64_t ipi;      /* IPI ping-pong rounds */
	uint64_t samples;  /* timer deadline samples (idle); busy gets half */
	uint64_t deadline_ms; /* timer deadline */
	uint64_t tick_ms;  /* length of each ticks-per-second window */
	uint64_t irqfd_edge, irqfd_level, irqfd_lat; /* host-driven deliveries (0 = skip) */
	uint64_t doorbell; /* host's acknowledge register for irqfd-edge (0 = none) */
};
extern struct bench_params bp;

/* ---- output (main.c) ---- */
/* "MARK op begin" / "MARK op end n=N": the host counts exits in between, N events. */
void mark_begin(const char *op);
void mark_end(const char *op, uint64_t n);
/* "BENCH op cost ticks=T n=N": one operation costs T/N counter ticks. */
void bench_cost(const char *op, uint64_t ticks, uint64_t n);
/* "BENCH op rate ticks=T n=N": N events in T counter ticks. */
void bench_rate(const char *op, uint64_t ticks, uint64_t n);
/* "SAMPLES op unit v..." (unit "ticks": durations; "pct": raw CNTPCT values), 16 a line. */
void bench_samples(const char *op, const char *unit, const uint64_t *v, uint64_t n);
static inline uint64_t now_ticks(void) { return timer_counter(TIMER_VIRT); }
/* Masked-WFI idle step: sleep until an interrupt is pending, take it, mask again. */
static inline void idle_step(void)
{
	__asm__ volatile("dsb sy\n wfi" ::: "memory");
	irq_enable();
	__asm__ volatile("isb" ::: "memory");
	irq_disable();
}
int wait_at_least(volatile uint64_t *p, uint64_t v, uint64_t ms, int idle);

/* ---- sub-benchmarks: each prints its BENCH/SAMPLES lines and reports PASS/FAIL ---- */
void bench_ack_eoi(void);   /* irq.c */
void bench_sgi_self(void);
void bench_ipi(void);
void bench_timer_lat(int idle); /* timer.c */
void bench_ticks_max(void);
void bench_ticks_1khz(void);
void bench_irqfd(void);     /* irqfd.c */

#endif
