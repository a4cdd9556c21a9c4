/*
 * softkvm guest runtime: the whole API a test program sees.
 *
 * Environment: EL1, MMU and caches off (so all data accesses are Device memory; the
 * build uses -mstrict-align), no FP/SIMD.  Logical CPU 0 is always the boot CPU; the other
 * logical indexes follow the order of the /cpus/cpu@N nodes in the device tree.
 */
#ifndef SOFTKVM_GUEST_RUNTIME_H
#define SOFTKVM_GUEST_RUNTIME_H

#include <stdarg.h>
#include <stdint.h>

#define RT_MAX_CPUS 8
#define RT_STACK_SIZE (16 * 1024)
#define RT_EL0_STACK_SIZE (8 * 1024)

/* QEMU virt board */
#define RAM_BASE_DEFAULT 0x40000000UL
#define PL011_BASE 0x09000000UL

/* ---- the program ---------------------------------------------------------------------- */
int main(void); /* called on the boot CPU; a non-zero return is reported as a failure */
extern const char guest_name[]; /* defined by every program via GUEST_NAME() */
#define GUEST_NAME(n) const char guest_name[] = n

/* ---- console (PL011, polled) ---------------------------------------------------------- */
void putc(int c);
void puts(const char *s); /* appends '\n', like libc */
/* printf-lite: %d %i %u %x %X %p %s %c %%, length l/ll/z, flags 0 -, width; whole call atomic */
void printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vprintf(const char *fmt, va_list ap);
int getc(void);     /* blocks until a byte arrives */
int try_getc(void); /* -1 if the receive FIFO is empty */

/* ---- results -------------------------------------------------------------------------- */
/* Prints "PASS: <formatted>" or "FAIL: <formatted>" as one line and counts it. */
void report(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "NOTE: <formatted>" (no verdict). */
void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
uint64_t report_failures(void);
/* Prints SUMMARY (a FAIL first if nothing was checked) and powers the machine off. */
__attribute__((noreturn)) void finish(void);

/* ---- PSCI (HVC conduit) --------------------------------------------------------------- */
#define PSCI_VERSION 0x84000000u
#define PSCI_CPU_SUSPEND 0x84000001u
#define PSCI_CPU_OFF 0x84000002u
#define PSCI_CPU_ON 0xC4000003u
#define PSCI_AFFINITY_INFO 0xC4000004u
#define PSCI_MIGRATE_INFO_TYPE 0x84000006u
#define PSCI_SYSTEM_OFF 0x84000008u
#define PSCI_SYSTEM_RESET 0x84000009u
#define PSCI_FEATURES 0x8400000Au

#define PSCI_SUCCESS 0
#define PSCI_NOT_SUPPORTED (-1)
#define PSCI_INVALID_PARAMETERS (-2)
#define PSCI_DENIED (-3)
#define PSCI_ALREADY_ON (-4)
#define PSCI_ON_PENDING (-5)
#define PSCI_AFF_ON 0
#define PSCI_AFF_OFF 1
#define PSCI_AFF_ON_PENDING 2

/* Raw x0 after "hvc #0" with w0 = fn, x1..x3 = args. */
uint64_t psci_call(uint32_t fn, uint64_t a1, uint64_t a2, uint64_t a3);
/* PSCI results are 32-bit signed; compare through this so either extension of x0 works. */
static inline int psci_ret(uint64_t x0) { return (int)(int32_t)x0; }
int psci_cpu_on(uint64_t mpidr, uint64_t entry, uint64_t context);
int psci_affinity_info(uint64_t mpidr, uint64_t level);
__attribute__((noreturn)) void cpu_off(void);   /* CPU_OFF; FAILs and parks if it returns */
__attribute__((noreturn)) void power_off(void); /* SYSTEM_OFF; parks if it returns */

/* ---- SMP ------------------------------------------------------------------------------ */
typedef void (*secondary_fn)(unsigned cpu);
extern void secondary_entry(void); /* PSCI CPU_ON entry point; context id = logical index */
/* Registers fn for logical CPU `cpu` (runs there on its own stack; when it returns the CPU
 * calls CPU_OFF) then issues CPU_ON.  Returns the PSCI result. */
int cpu_on(unsigned cpu, secondary_fn fn);
void set_secondary_fn(unsigned cpu, secondary_fn fn); /* for programs issuing CPU_ON by hand */
unsigned smp_num_cpus(void);           /* CPUs in the DT, capped at RT_MAX_CPUS */
uint64_t smp_cpu_mpidr(unsigned cpu);  /* affinity of a logical CPU */
unsigned smp_cpu_index(void);          /* this CPU's logical index (from MPIDR_EL1) */
int smp_index_of_mpidr(uint64_t mpidr); /* -1 if not in the DT */
/* CPU_ON for every secondary, one at a time, each waited for until it has entered (ran
 * secondary_entry).  Reports a FAIL per CPU that did not come up; returns their number. */
int smp_start_all(secondary_fn fn);
uint64_t smp_cpu_entered(unsigned cpu); /* times cpu came through secondary_entry */
/* Polls AFFINITY_INFO(level 0) until OFF or timeout; returns the last state. */
int wait_cpu_off(unsigned cpu);
/* wait_cpu_off for every secondary; NOTEs each one still on; returns their number. */
int wait_secondaries_off(void);

#define MPIDR_AFF_MASK 0xff00ffffffUL
static inline uint64_t read_mpidr(void)
{
	uint64_t v;
	__asm__ volatile("mrs %0, mpidr_el1" : "=r"(v));
	return v & MPIDR_AFF_MASK;
}

/* ---- atomics (exclusive monitors, 64-bit) ---------------------------------------------- */
static inline uint64_t atomic_load_acquire(volatile uint64_t *p)
{
	uint64_t v;
	__asm__ volatile("ldar %0, %1" : "=r"(v) : "Q"(*p) : "memory");
	return v;
}
static inline void atomic_store_release(volatile uint64_t *p, uint64_t v)
{
	__asm__ volatile("stlr %1, %0" : "=Q"(*p) : "r"(v) : "memory");
}
/* LDXR/STXR loop without ordering; returns the new value. */
static inline uint64_t atomic_add_relaxed(volatile uint64_t *p, uint64_t v)
{
	uint64_t res;
	uint32_t fail;
	__asm__ volatile("1: ldxr %0, %2\n"
			 "   add %0, %0, %3\n"
			 "   stxr %w1, %0, %2\n"
			 "   cbnz %w1, 1b"
			 : "=&r"(res), "=&r"(fail), "+Q"(*p)
			 : "r"(v)
			 : "memory");
	return res;
}
/* LDAXR/STLXR loop: acquire + release; returns the new value. */
static inline uint64_t atomic_add(volatile uint64_t *p, uint64_t v)
{
	uint64_t res;
	uint32_t fail;
	__asm__ volatile("1: ldaxr %0, %2\n"
			 "   add %0, %0, %3\n"
			 "   stlxr %w1, %0, %2\n"
			 "   cbnz %w1, 1b"
			 : "=&r"(res), "=&r"(fail), "+Q"(*p)
			 : "r"(v)
			 : "memory");
	return res;
}
/* Compare-and-swap (acquire/release); returns the old value (== expected on success). */
static inline uint64_t atomic_cas(volatile uint64_t *p, uint64_t expected, uint64_t desired)
{
	uint64_t old;
	uint32_t fail;
	__asm__ volatile("1: ldaxr %0, %2\n"
			 "   cmp %0, %3\n"
			 "   b.ne 2f\n"
			 "   stlxr %w1, %4, %2\n"
			 "   cbnz %w1, 1b\n"
			 "   b 3f\n"
			 "2: clrex\n"
			 "3:"
			 : "=&r"(old), "=&r"(fail), "+Q"(*p)
			 : "r"(expected), "r"(desired)
			 : "memory", "cc");
	return old;
}
static inline void cpu_relax(void) { __asm__ volatile("yield" ::: "memory"); }
static inline void dsb_sy(void) { __asm__ volatile("dsb sy" ::: "memory"); }

/* Sense-free barrier for n CPUs, reusable; zero-initialise. */
struct barrier {
	volatile uint64_t count;
	volatile uint64_t generation;
};
void barrier_wait(struct barrier *b, unsigned n);

/* Generic counter: hang guards only, never a measured duration. */
static inline uint64_t counter_now(void)
{
	uint64_t v;
	__asm__ volatile("isb\n mrs %0, cntvct_el0" : "=r"(v)::"memory");
	return v;
}
static inline uint64_t counter_freq(void)
{
	uint64_t v;
	__asm__ volatile("mrs %0, cntfrq_el0" : "=r"(v));
	return v ? v : 62500000;
}
uint64_t deadline_after_ms(uint64_t ms);
static inline int deadline_passed(uint64_t deadline) { return counter_now() >= deadline; }
#define RT_WAIT_TIMEOUT_MS 90000  /* generous: a loaded 2-core host must not fail a guest */

/* ---- exceptions ----------------------------------------------------------------------- */
struct exc_frame {
	uint64_t x[31];
	uint64_t sp; /* SP of the interrupted context (read-only) */
	uint64_t elr;
	uint64_t spsr;
	uint64_t esr;
	uint64_t far;
	uint64_t vector; /* offset in the table: 0x000..0x780 */
	uint64_t pad;
};
/* Vector offsets: source group + kind. */
#define VEC_CUR_SP0 0x000
#define VEC_CUR_SPX 0x200
#define VEC_LOWER_A64 0x400
#define VEC_LOWER_A32 0x600
#define VEC_SYNC 0x000
#define VEC_IRQ 0x080
#define VEC_FIQ 0x100
#define VEC_SERROR 0x180

enum exc_hook {
	HOOK_SYNC_SP0,   /* synchronous, current EL with SP_EL0 (EL1t) */
	HOOK_SYNC_SPX,   /* synchronous, current EL with SP_ELx (EL1h) */
	HOOK_SYNC_LOWER, /* synchronous from EL0 */
	HOOK_IRQ,        /* any source group */
	HOOK_FIQ,
	HOOK_SERROR,
	HOOK_COUNT
};
/* Return non-zero if handled: the (possibly modified) frame is restored and ERETed.
 * Zero means "not mine": the runtime reports an unexpected exception and powers off. */
typedef int (*exc_handler)(struct exc_frame *f);
void set_exception_hook(enum exc_hook which, exc_handler fn);

#define ESR_EC(esr) (((esr) >> 26) & 0x3f)
#define ESR_ISS(esr) ((esr) & 0x1ffffff)
#define EC_UNKNOWN 0x00
#define EC_SVC64 0x15
#define EC_HVC64 0x16
#define EC_IABT_LOWER 0x20
#define EC_IABT_CUR 0x21
#define EC_DABT_LOWER 0x24
#define EC_DABT_CUR 0x25
#define EC_BRK64 0x3c

/* Runs fn at EL0t (SPSR = 0: all of DAIF clear) on this CPU's EL0 stack; returns its x0.
 * fn must not touch privileged state; it returns to EL1 through "svc #SVC_EL0_EXIT". */
#define SVC_EL0_EXIT 0xfff0
uint64_t run_el0(uint64_t (*fn)(void));
/* Runs fn at EL1t (SPSel = 0) on this CPU's EL0 stack. */
uint64_t run_el1t(uint64_t (*fn)(void));
uint64_t el0_stack_top(unsigned cpu);

/* ---- device tree (read-only) ---------------------------------------------------------- */
const void *fdt_blob(void);
int fdt_path_offset(const char *path); /* node offset or -1; "memory" matches "memory@..." */
const void *fdt_getprop(int node, const char *name, int *len);
int fdt_first_subnode(int node);
int fdt_next_subnode(int node);
const char *fdt_node_name(int node);
int fdt_parent_offset(int node);
unsigned fdt_address_cells(int node); /* #address-cells of node (default 2) */
unsigned fdt_size_cells(int node);    /* #size-cells of node (default 1) */
uint64_t fdt_read_cells(const void *p, unsigned cells);
unsigned fdt_cpu_count(void);
uint64_t fdt_cpu_mpidr(unsigned i); /* i-th cpu node, DT order */
uint64_t fdt_mem_base(void);
uint64_t fdt_mem_size(void);
const char *fdt_bootargs(void); /* "" if none */
int fdt_find_compatible(const char *compat); /* node offset or -1 */
int fdt_init(const void *blob);  /* 0 if blob is a usable FDT */

/* ---- string helpers ------------------------------------------------------------------- */
uint64_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, uint64_t n);
const char *strstr(const char *hay, const char *needle);
void *memset(void *d, int c, uint64_t n);
void *memcpy(void *d, const void *s, uint64_t n);
int memcmp(const void *a, const void *b, uint64_t n);
/* Is `word` one of the space-separated words of /chosen/bootargs? */
int bootarg_present(const char *word);
/* Value N of a bootargs word "key=N" (decimal, or hex with 0x); dflt if absent/malformed. */
uint64_t bootarg_uint(const char *key, uint64_t dflt);

/* ---- misc ----------------------------------------------------------------------------- */
/* Busy-waits (YIELD loop on the counter). */
void delay_us(uint64_t us);
static inline void delay_ms(uint64_t ms) { delay_us(ms * 1000); }
/* The machine is QEMU (its DT has the "qemu,fw-cfg-mmio" node, which softkvm's has not).
 * Only for tolerating documented QEMU deviations from KVM, with a NOTE. */
int rt_is_qemu(void);
/* INTID of entry `index` of a node's "interrupts" (3 cells: type 0 SPI / 1 PPI, number,
 * flags); -1 if absent. */
int fdt_irq_intid(int node, unsigned index);

#include "gic.h"
#include "timer.h"

#endif
