/*
 * Generic timer helpers (included by runtime.h): the EL1 virtual timer (CNTV_*, counts
 * CNTVCT_EL0, PPI 27 on virt) and the EL1 physical timer (CNTP_*, counts CNTPCT_EL0, PPI 30).
 * The PPIs are read from the DT /timer node (interrupts: secure phys, non-secure phys, virt,
 * hyp); the defaults apply when it is missing.
 *
 * Semantics (ARM ARM D11): the condition is met when CVAL <= counter (unsigned 64-bit);
 * CTL.ISTATUS shows it whenever ENABLE is set; the output (a level PPI) is
 * ENABLE && !IMASK && condition.  TVAL reads the low 32 bits of CVAL - counter (signed) and
 * a TVAL write sets CVAL = counter + sext32(value).
 */
#ifndef SOFTKVM_GUEST_TIMER_H
#define SOFTKVM_GUEST_TIMER_H

#include <stdint.h>

enum timer_id { TIMER_VIRT = 0, TIMER_PHYS = 1 };
#define TIMER_PPI_VIRT_DEFAULT 27
#define TIMER_PPI_PHYS_DEFAULT 30

#define CNT_CTL_ENABLE (1u << 0)
#define CNT_CTL_IMASK (1u << 1)
#define CNT_CTL_ISTATUS (1u << 2)

unsigned timer_ppi(enum timer_id t); /* INTID from the DT (or the default) */
const char *timer_name(enum timer_id t); /* "vtimer" / "ptimer" */

static inline uint64_t timer_counter(enum timer_id t)
{
	uint64_t v;
	if (t == TIMER_VIRT)
		__asm__ volatile("isb\n mrs %0, cntvct_el0" : "=r"(v)::"memory");
	else
		__asm__ volatile("isb\n mrs %0, cntpct_el0" : "=r"(v)::"memory");
	return v;
}

static inline uint32_t timer_get_ctl(enum timer_id t)
{
	uint64_t v;
	if (t == TIMER_VIRT)
		__asm__ volatile("mrs %0, cntv_ctl_el0" : "=r"(v)::"memory");
	else
		__asm__ volatile("mrs %0, cntp_ctl_el0" : "=r"(v)::"memory");
	return (uint32_t)v;
}

static inline void timer_set_ctl(enum timer_id t, uint32_t ctl)
{
	uint64_t v = ctl;
	if (t == TIMER_VIRT)
		__asm__ volatile("msr cntv_ctl_el0, %0\n isb" ::"r"(v) : "memory");
	else
		__asm__ volatile("msr cntp_ctl_el0, %0\n isb" ::"r"(v) : "memory");
}

static inline uint64_t timer_get_cval(enum timer_id t)
{
	uint64_t v;
	if (t == TIMER_VIRT)
		__asm__ volatile("mrs %0, cntv_cval_el0" : "=r"(v)::"memory");
	else
		__asm__ volatile("mrs %0, cntp_cval_el0" : "=r"(v)::"memory");
	return v;
}

static inline void timer_set_cval(enum timer_id t, uint64_t cval)
{
	if (t == TIMER_VIRT)
		__asm__ volatile("msr cntv_cval_el0, %0\n isb" ::"r"(cval) : "memory");
	else
		__asm__ volatile("msr cntp_cval_el0, %0\n isb" ::"r"(cval) : "memory");
}

static inline int32_t timer_get_tval(enum timer_id t)
{
	uint64_t v;
	if (t == TIMER_VIRT)
		__asm__ volatile("isb\n mrs %0, cntv_tval_el0" : "=r"(v)::"memory");
	else
		__asm__ volatile("isb\n mrs %0, cntp_tval_el0" : "=r"(v)::"memory");
	return (int32_t)(uint32_t)v;
}

static inline void timer_set_tval(enum timer_id t, int32_t tval)
{
	uint64_t v = (uint64_t)(uint32_t)tval;
	if (t == TIMER_VIRT)
		__asm__ volatile("msr cntv_tval_el0, %0\n isb" ::"r"(v) : "memory");
	else
		__asm__ volatile("msr cntp_tval_el0, %0\n isb" ::"r"(v) : "memory");
}

static inline int timer_istatus(enum timer_id t) { return (timer_get_ctl(t) & CNT_CTL_ISTATUS) != 0; }

/* Counter ticks <-> time, with counter_freq() (CNTFRQ_EL0; 0 is taken as 62.5 MHz). */
uint64_t ticks_from_us(uint64_t us);
uint64_t ticks_to_us(uint64_t ticks);
/* Arms timer t at counter + ms, enabled and unmasked. */
void timer_arm_ms(enum timer_id t, uint64_t ms);

#endif
