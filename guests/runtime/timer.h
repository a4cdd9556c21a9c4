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

/* Each timer register is its own MRS/MSR encoding: one accessor pair per register, the timer
 * chosen at run time.  Writes end with an ISB so that they take effect before what follows. */
#define TIMER_READ(fn, type, vreg, preg)                                              \
	static inline type fn(enum timer_id t)                                        \
	{                                                                             \
		uint64_t v;                                                           \
		if (t == TIMER_VIRT)                                                  \
			__asm__ volatile("isb\n mrs %0, " vreg : "=r"(v)::"memory"); \
		else                                                                  \
			__asm__ volatile("isb\n mrs %0, " preg : "=r"(v)::"memory"); \
		return (type)v;                                                       \
	}
#define TIMER_WRITE(fn, type, vreg, preg)                                               \
	static inline void fn(enum timer_id t, type value)                              \
	{                                                                               \
		uint64_t v = (uint64_t)value;                                           \
		if (t == TIMER_VIRT)                                                    \
			__asm__ volatile("msr " vreg ", %0\n isb" ::"r"(v) : "memory"); \
		else                                                                    \
			__asm__ volatile("msr " preg ", %0\n isb" ::"r"(v) : "memory"); \
	}

TIMER_READ(timer_counter, uint64_t, "cntvct_el0", "cntpct_el0")
TIMER_READ(timer_get_ctl, uint32_t, "cntv_ctl_el0", "cntp_ctl_el0")
TIMER_WRITE(timer_set_ctl, uint32_t, "cntv_ctl_el0", "cntp_ctl_el0")
TIMER_READ(timer_get_cval, uint64_t, "cntv_cval_el0", "cntp_cval_el0")
TIMER_WRITE(timer_set_cval, uint64_t, "cntv_cval_el0", "cntp_cval_el0")
/* TVAL is a signed 32-bit view (CVAL - counter); written zero-extended. */
TIMER_READ(timer_get_tval_raw, uint32_t, "cntv_tval_el0", "cntp_tval_el0")
TIMER_WRITE(timer_set_tval_raw, uint32_t, "cntv_tval_el0", "cntp_tval_el0")
static inline int32_t timer_get_tval(enum timer_id t) { return (int32_t)timer_get_tval_raw(t); }
static inline void timer_set_tval(enum timer_id t, int32_t tval) { timer_set_tval_raw(t, (uint32_t)tval); }

static inline int timer_istatus(enum timer_id t) { return (timer_get_ctl(t) & CNT_CTL_ISTATUS) != 0; }

/* Counter ticks <-> time, with counter_freq() (CNTFRQ_EL0; 0 is taken as 62.5 MHz). */
uint64_t ticks_from_us(uint64_t us);
uint64_t ticks_to_us(uint64_t ticks);
/* Arms timer t at counter + ms, enabled and unmasked. */
void timer_arm_ms(enum timer_id t, uint64_t ms);

#endif
