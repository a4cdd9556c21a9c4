/*
 * GICv2 / GICv3 driver and IRQ dispatch (included by runtime.h).
 *
 * Version and addresses come from the DT node compatible with "arm,cortex-a15-gic" (v2:
 * reg = GICD, GICC) or "arm,gic-v3" (reg = GICD, then #redistributor-regions GICR regions).
 *
 * Groups: v2 uses group 0 (what Linux does: GICC_CTLR.EnableGrp0 = 1, FIQEn = 0, so group 0
 * is signalled as IRQ); v3 uses group 1 (IGROUPR = 1, ICC_IGRPEN1_EL1 = 1) and the ICC_*
 * system registers (ICC_SRE_EL1.SRE = 1).
 *
 * Per-INTID helpers act on the calling CPU's bank for SGIs/PPIs (v2: the banked GICD
 * registers; v3: this CPU's redistributor SGI frame) and on the distributor for SPIs.
 * Logical CPU numbers are the runtime's (0 = boot CPU).
 *
 * IRQ dispatch: gic_init() installs the HOOK_IRQ handler.  It acknowledges one interrupt
 * (IAR), calls the handler registered for that INTID with IRQs still masked, then EOIs (and
 * DIRs when this CPU's EOImode is 1) unless the handler returned IRQ_HANDLED.  A handler may
 * call irq_enable() to allow nesting (preemption by higher-priority interrupts): ELR/SPSR
 * live in the exception frame, and the dispatcher masks IRQs again before returning.
 * An INTID with no handler is a FAIL ("unexpected interrupt"); it is disabled and EOId.
 */
#ifndef SOFTKVM_GUEST_GIC_H
#define SOFTKVM_GUEST_GIC_H

#include <stdint.h>

#define GIC_NR_SGIS 16
#define GIC_NR_PRIVATE 32
#define GIC_MAX_INTID 1020  /* 1020..1023 are special */
#define GIC_SPURIOUS 1023
#define GIC_PRIO_DEFAULT 0xA0 /* every INTID's priority after gic_init */
#define GIC_PMR_DEFAULT 0xF0  /* like Linux */
#define GIC_PRIO_IDLE 0xFF    /* running priority with nothing active */

/* ---- set-up ---------------------------------------------------------------------------- */
/* Boot CPU: finds the GIC in the DT, resets and enables the distributor (every SPI disabled,
 * inactive, not pending, level, priority 0xA0, routed to the boot CPU, v2 group 0 / v3 group 1),
 * then does gic_cpu_init().  Reports a FAIL and returns -1 if there is no usable GIC. */
int gic_init(void);
/* gic_init with options.  GIC_INIT_KEEP_PENDING: leave the SPIs' pending state as found, so
 * that interrupts raised before the guest started (a host signalling before the GIC was
 * initialised) are still taken once enabled. */
#define GIC_INIT_KEEP_PENDING (1u << 0)
int gic_init_flags(unsigned flags);
/* Every other CPU, before using the GIC (again after each CPU_ON): v3 wakes its
 * redistributor; SGIs enabled, PPIs disabled, all private INTIDs priority 0xA0, inactive;
 * PMR 0xF0, BPR 0 (clamped to the minimum), EOImode 0, interface enabled.  0 = ok. */
int gic_cpu_init(void);
int gic_version(void);          /* 2 or 3; 0 before gic_init */
unsigned gic_nr_irqs(void);     /* 32 * (GICD_TYPER.ITLinesNumber + 1), capped at 1020 */
uint64_t gic_dist_base(void);
uint64_t gic_cpuif_base(void);  /* v2 GICC; 0 on v3 */
uint64_t gic_rd_base(unsigned cpu);  /* v3 RD frame of a logical CPU (0 until it ran gic_cpu_init) */
uint64_t gic_sgi_base(unsigned cpu); /* v3 SGI frame = RD + 0x10000 */
uint32_t gic_cpu_iface_mask(unsigned cpu); /* v2: ITARGETSR0 byte as read by that CPU */
int gic_cpu_of_iface(unsigned iface);      /* v2: logical CPU for a CPU interface number */

/* ---- per-INTID state ------------------------------------------------------------------ */
void gic_enable_irq(unsigned intid);
void gic_disable_irq(unsigned intid); /* waits for RWP on v3 */
int gic_is_enabled(unsigned intid);
void gic_set_priority(unsigned intid, uint8_t prio); /* byte access */
uint8_t gic_get_priority(unsigned intid);
void gic_set_config(unsigned intid, int edge); /* ICFGR: 1 = edge, 0 = level */
int gic_get_config(unsigned intid);            /* 1 = edge */
void gic_set_target(unsigned intid, unsigned cpu); /* SPI: v2 ITARGETSR byte, v3 IROUTER */
void gic_set_pending(unsigned intid);   /* ISPENDR (SGIs on v2: GICD_SPENDSGIR from self) */
void gic_clear_pending(unsigned intid); /* ICPENDR (SGIs on v2: GICD_CPENDSGIR, all sources) */
int gic_is_pending(unsigned intid);     /* ISPENDR bit */
void gic_set_active(unsigned intid);    /* ISACTIVER */
void gic_clear_active(unsigned intid);  /* ICACTIVER */
int gic_is_active(unsigned intid);      /* ISACTIVER bit */
/* Configure and enable in one go: priority, edge/level (SPIs), target (SPIs), enable. */
void gic_setup_irq(unsigned intid, uint8_t prio, int edge, unsigned target_cpu);

/* ---- SGIs ------------------------------------------------------------------------------ */
void gic_send_sgi(unsigned intid, unsigned cpu);            /* one logical CPU */
void gic_send_sgi_mask(unsigned intid, uint32_t cpu_mask);  /* target list (logical CPUs) */
void gic_send_sgi_self(unsigned intid);                     /* v2 filter 2; v3 own affinity */
void gic_send_sgi_others(unsigned intid);                   /* v2 filter 1; v3 IRM = 1 */

/* ---- CPU interface (this CPU) --------------------------------------------------------- */
uint32_t gic_ack(void);                 /* raw IAR (v2 GICC_IAR / v3 ICC_IAR1_EL1) */
uint32_t gic_iar_intid(uint32_t iar);   /* v2: IAR[9:0]; v3: IAR[23:0] */
uint32_t gic_iar_src(uint32_t iar);     /* v2: source CPU interface of an SGI; v3: 0 */
void gic_eoi(uint32_t iar);             /* EOIR: the raw IAR value */
void gic_dir(uint32_t iar);             /* DIR: the raw IAR value (EOImode = 1 only) */
void gic_set_eoimode(int split);        /* 1: EOI drops priority only, DIR deactivates */
int gic_get_eoimode(void);
void gic_set_pmr(uint8_t pmr);
uint8_t gic_get_pmr(void);
void gic_set_bpr(unsigned bpr);         /* v2 GICC_BPR / v3 ICC_BPR1_EL1 */
unsigned gic_get_bpr(void);
uint8_t gic_running_priority(void);     /* v2 GICC_RPR / v3 ICC_RPR_EL1 */
uint32_t gic_hppir(void);               /* highest priority pending (raw) */

/* ---- IRQ dispatch --------------------------------------------------------------------- */
struct irq_ctx {
	uint32_t intid;
	uint32_t src;  /* v2 SGI: source CPU interface number (IAR[12:10]); else 0 */
	int src_cpu;   /* v2 SGI: logical index of the source (-1 if unknown); else -1 */
	uint32_t iar;  /* raw IAR value, what gic_eoi()/gic_dir() want */
	unsigned cpu;  /* logical CPU taking the interrupt */
	struct exc_frame *frame;
};
#define IRQ_EOI 0     /* the dispatcher EOIs (plus DIR if EOImode = 1) */
#define IRQ_HANDLED 1 /* the handler did EOI/DIR itself, or deliberately left it active */
typedef int (*irq_handler)(struct irq_ctx *c);
void irq_set_handler(unsigned intid, irq_handler fn); /* 0 removes it */
/* irq_set_handler + gic_setup_irq: the INTID handled by `fn`, configured and enabled. */
void gic_request_irq(unsigned intid, irq_handler fn, uint8_t prio, int edge, unsigned target_cpu);
uint64_t irq_spurious_count(unsigned cpu); /* IAR reads of 1020..1023 */
uint64_t irq_taken_count(unsigned cpu);    /* IRQ exceptions with a real INTID */

static inline void irq_enable(void) { __asm__ volatile("msr daifclr, #2" ::: "memory"); }
static inline void irq_disable(void) { __asm__ volatile("msr daifset, #2" ::: "memory"); }
static inline uint64_t irq_save(void)
{
	uint64_t daif;
	__asm__ volatile("mrs %0, daif\n msr daifset, #2" : "=r"(daif)::"memory");
	return daif;
}
static inline void irq_restore(uint64_t daif) { __asm__ volatile("msr daif, %0" ::"r"(daif) : "memory"); }

#endif
