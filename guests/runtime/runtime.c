/* Boot flow, results, PSCI, SMP bookkeeping and exception dispatch. */
#include "runtime.h"
#include "internal.h"

/* ---- results -------------------------------------------------------------------------- */
static volatile uint64_t n_pass, n_fail;

static void vreport_line(const char *tag, const char *fmt, va_list ap)
{
	int t = console_lock();
	printf_raw("%s: ", tag);
	vprintf_raw(fmt, ap);
	putc_raw('\n');
	console_unlock(t);
}

void report(int ok, const char *fmt, ...)
{
	va_list ap;
	atomic_add(ok ? &n_pass : &n_fail, 1);
	va_start(ap, fmt);
	vreport_line(ok ? "PASS" : "FAIL", fmt, ap);
	va_end(ap);
}

void note(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vreport_line("NOTE", fmt, ap);
	va_end(ap);
}

uint64_t report_failures(void) { return atomic_load_acquire(&n_fail); }

void finish(void)
{
	if (atomic_load_acquire(&n_pass) + atomic_load_acquire(&n_fail) == 0)
		report(0, "%s: no checks reported", guest_name);
	printf("SUMMARY: %lu passed, %lu failed\n", atomic_load_acquire(&n_pass),
	       atomic_load_acquire(&n_fail));
	power_off();
}

/* ---- PSCI ----------------------------------------------------------------------------- */
uint64_t psci_call(uint32_t fn, uint64_t a1, uint64_t a2, uint64_t a3)
{
	register uint64_t x0 __asm__("x0") = fn;
	register uint64_t x1 __asm__("x1") = a1;
	register uint64_t x2 __asm__("x2") = a2;
	register uint64_t x3 __asm__("x3") = a3;
	/* SMCCC 1.0 lets the callee clobber x4-x17 too (1.1 preserves them); KVM zeroes x1-x3. */
	__asm__ volatile("hvc #0"
			 : "+r"(x0), "+r"(x1), "+r"(x2), "+r"(x3)
			 :
			 : "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12", "x13", "x14",
			   "x15", "x16", "x17", "memory");
	return x0;
}

int psci_cpu_on(uint64_t mpidr, uint64_t entry, uint64_t context)
{
	return psci_ret(psci_call(PSCI_CPU_ON, mpidr, entry, context));
}

int psci_affinity_info(uint64_t mpidr, uint64_t level)
{
	return psci_ret(psci_call(PSCI_AFFINITY_INFO, mpidr, level, 0));
}

static __attribute__((noreturn)) void park(void)
{
	for (;;)
		__asm__ volatile("wfi");
}

void power_off(void)
{
	int r = psci_ret(psci_call(PSCI_SYSTEM_OFF, 0, 0, 0));
	printf("SYSTEM_OFF returned %d; parking\n", r);
	park();
}

void cpu_off(void)
{
	int r = psci_ret(psci_call(PSCI_CPU_OFF, 0, 0, 0));
	report(0, "cpu%u: CPU_OFF returned %d", smp_cpu_index(), r);
	park();
}

/* ---- SMP ------------------------------------------------------------------------------ */
/* Logical map: [0] = boot CPU, then the DT's cpu nodes in order (like Linux). */
static uint64_t cpu_mpidr[RT_MAX_CPUS];
static unsigned n_cpus;
static volatile uint64_t secondary_fns[RT_MAX_CPUS];
uint64_t rt_el0_saved_daif[RT_MAX_CPUS];

static void smp_init(void)
{
	uint64_t boot = read_mpidr();
	unsigned dt = fdt_blob() ? fdt_cpu_count() : 0;
	cpu_mpidr[0] = boot;
	n_cpus = 1;
	for (unsigned i = 0; i < dt && n_cpus < RT_MAX_CPUS; i++) {
		uint64_t m = fdt_cpu_mpidr(i);
		if (m != boot)
			cpu_mpidr[n_cpus++] = m;
	}
	if (dt > RT_MAX_CPUS)
		note("DT lists %u CPUs; using the first %u", dt, RT_MAX_CPUS);
}

unsigned smp_num_cpus(void) { return n_cpus; }
uint64_t smp_cpu_mpidr(unsigned cpu) { return cpu < n_cpus ? cpu_mpidr[cpu] : ~0UL; }

int smp_index_of_mpidr(uint64_t mpidr)
{
	for (unsigned i = 0; i < n_cpus; i++)
		if (cpu_mpidr[i] == mpidr)
			return (int)i;
	return -1;
}

unsigned smp_cpu_index(void)
{
	int i = smp_index_of_mpidr(read_mpidr());
	return i < 0 ? 0 : (unsigned)i;
}

uint64_t el0_stack_top(unsigned cpu)
{
	extern char rt_el0_stacks[];
	return (uint64_t)rt_el0_stacks + (uint64_t)(cpu + 1) * RT_EL0_STACK_SIZE;
}

void set_secondary_fn(unsigned cpu, secondary_fn fn)
{
	if (cpu < RT_MAX_CPUS)
		atomic_store_release(&secondary_fns[cpu], (uint64_t)fn);
}

int cpu_on(unsigned cpu, secondary_fn fn)
{
	if (cpu >= n_cpus)
		return PSCI_INVALID_PARAMETERS;
	set_secondary_fn(cpu, fn);
	return psci_cpu_on(cpu_mpidr[cpu], (uint64_t)secondary_entry, cpu);
}

static volatile uint64_t cpu_entered[RT_MAX_CPUS];

uint64_t smp_cpu_entered(unsigned cpu) { return cpu < RT_MAX_CPUS ? atomic_load_acquire(&cpu_entered[cpu]) : 0; }

void runtime_secondary(uint64_t cpu)
{
	atomic_add(&cpu_entered[cpu], 1);
	secondary_fn fn = (secondary_fn)atomic_load_acquire(&secondary_fns[cpu]);
	if (fn)
		fn((unsigned)cpu);
	else
		report(0, "cpu%lu: started with no secondary function", cpu);
	cpu_off();
}

int smp_start_all(secondary_fn fn)
{
	int failed = 0;
	for (unsigned i = 1; i < n_cpus; i++) {
		uint64_t before = smp_cpu_entered(i);
		int r = cpu_on(i, fn);
		if (r != PSCI_SUCCESS) {
			report(0, "cpu_on(cpu%u, MPIDR 0x%010lx) = %d", i, cpu_mpidr[i], r);
			failed++;
			continue;
		}
		uint64_t deadline = deadline_after_ms(RT_WAIT_TIMEOUT_MS);
		while (smp_cpu_entered(i) == before && !deadline_passed(deadline))
			cpu_relax();
		if (smp_cpu_entered(i) == before) {
			report(0, "cpu%u (MPIDR 0x%010lx): CPU_ON succeeded but it never arrived", i, cpu_mpidr[i]);
			failed++;
		}
	}
	return failed;
}

int wait_cpu_off(unsigned cpu)
{
	int st;
	uint64_t deadline = deadline_after_ms(RT_WAIT_TIMEOUT_MS);
	while ((st = psci_affinity_info(smp_cpu_mpidr(cpu), 0)) != PSCI_AFF_OFF && !deadline_passed(deadline))
		cpu_relax();
	return st;
}

int wait_secondaries_off(void)
{
	int stuck = 0;
	for (unsigned i = 1; i < n_cpus; i++) {
		int st = wait_cpu_off(i);
		if (st != PSCI_AFF_OFF) {
			note("cpu%u (MPIDR 0x%010lx) still not OFF: AFFINITY_INFO = %d", i, cpu_mpidr[i], st);
			stuck++;
		}
	}
	return stuck;
}

void barrier_wait(struct barrier *b, unsigned n)
{
	uint64_t gen = atomic_load_acquire(&b->generation);
	if (atomic_add(&b->count, 1) == n) {
		/* Reset before publishing the new generation, so early re-entrants see count 0. */
		b->count = 0;
		atomic_store_release(&b->generation, gen + 1);
	} else {
		while (atomic_load_acquire(&b->generation) == gen)
			cpu_relax();
	}
}

uint64_t deadline_after_ms(uint64_t ms) { return counter_now() + counter_freq() / 1000 * ms; }

/* ---- exceptions ----------------------------------------------------------------------- */
static volatile uint64_t hooks[HOOK_COUNT];
static volatile uint64_t in_fatal[RT_MAX_CPUS];

void set_exception_hook(enum exc_hook which, exc_handler fn)
{
	if (which < HOOK_COUNT)
		atomic_store_release(&hooks[which], (uint64_t)fn);
}

static int hook_for_vector(uint64_t vec)
{
	uint64_t group = vec & 0x600, kind = vec & 0x180;
	if (group == VEC_LOWER_A32)
		return -1;
	if (kind == VEC_IRQ)
		return HOOK_IRQ;
	if (kind == VEC_FIQ)
		return HOOK_FIQ;
	if (kind == VEC_SERROR)
		return HOOK_SERROR;
	return group == VEC_CUR_SP0 ? HOOK_SYNC_SP0 : group == VEC_CUR_SPX ? HOOK_SYNC_SPX : HOOK_SYNC_LOWER;
}

static __attribute__((noreturn)) void fatal(struct exc_frame *f)
{
	unsigned cpu = smp_cpu_index();
	if (atomic_add(&in_fatal[cpu], 1) > 1)
		power_off(); /* faulted while reporting a fault: just stop */
	atomic_add(&n_fail, 1);
	int t = console_lock();
	printf_raw("UNEXPECTED EXCEPTION vector=0x%03lx ESR=0x%08lx ELR=0x%016lx FAR=0x%016lx "
		   "SPSR=0x%08lx cpu=%u\n",
		   f->vector, f->esr, f->elr, f->far, f->spsr, cpu);
	console_unlock(t);
	finish();
}

void rt_exception_dispatch(struct exc_frame *f)
{
	if (f->vector == (VEC_LOWER_A64 | VEC_SYNC) && ESR_EC(f->esr) == EC_SVC64 &&
	    (f->esr & 0xffff) == SVC_EL0_EXIT) {
		f->elr = (uint64_t)run_el0_return;
		f->spsr = rt_el0_saved_daif[smp_cpu_index()] | 0x5; /* EL1h */
		return;
	}
	int h = hook_for_vector(f->vector);
	exc_handler fn = h < 0 ? 0 : (exc_handler)atomic_load_acquire(&hooks[h]);
	if (fn && fn(f))
		return;
	fatal(f);
}

/* ---- boot ----------------------------------------------------------------------------- */
void runtime_main(uint64_t x0)
{
	/* softkvm passes the DTB in x0; QEMU's ELF boot leaves x0 = 0 and the DTB at RAM start. */
	int fdt_ok = fdt_init((const void *)x0) == 0 || fdt_init((const void *)RAM_BASE_DEFAULT) == 0;
	smp_init();
	printf("== guest: %s (%u CPUs) ==\n", guest_name, n_cpus);
	if (!fdt_ok)
		report(0, "fdt: no device tree at x0=0x%lx nor at 0x%lx", x0, RAM_BASE_DEFAULT);
	int rc = main();
	if (rc != 0)
		report(0, "%s: main returned %d", guest_name, rc);
	finish();
}

/* ---- strings -------------------------------------------------------------------------- */
uint64_t strlen(const char *s)
{
	uint64_t n = 0;
	while (s[n])
		n++;
	return n;
}

int strncmp(const char *a, const char *b, uint64_t n)
{
	for (; n; n--, a++, b++) {
		if (*a != *b)
			return (unsigned char)*a - (unsigned char)*b;
		if (!*a)
			return 0;
	}
	return 0;
}

int strcmp(const char *a, const char *b) { return strncmp(a, b, ~0UL); }

const char *strstr(const char *hay, const char *needle)
{
	uint64_t n = strlen(needle);
	for (; *hay; hay++)
		if (strncmp(hay, needle, n) == 0)
			return hay;
	return n ? 0 : hay;
}

void *memset(void *d, int c, uint64_t n)
{
	volatile uint8_t *p = d; /* volatile: keep the compiler from turning this into memset() */
	while (n--)
		*p++ = (uint8_t)c;
	return d;
}

void *memcpy(void *d, const void *s, uint64_t n)
{
	volatile uint8_t *p = d;
	const uint8_t *q = s;
	while (n--)
		*p++ = *q++;
	return d;
}

int memcmp(const void *a, const void *b, uint64_t n)
{
	const uint8_t *p = a, *q = b;
	for (; n; n--, p++, q++)
		if (*p != *q)
			return *p - *q;
	return 0;
}

/* The next space-separated word of the bootargs at *s: its start, its length in *len; NULL at
 * the end.  *s moves past it. */
static const char *next_bootarg(const char **s, uint64_t *len)
{
	while (**s == ' ')
		(*s)++;
	if (!**s)
		return 0;
	const char *word = *s;
	for (*len = 0; word[*len] && word[*len] != ' '; (*len)++)
		;
	*s += *len;
	return word;
}

int bootarg_present(const char *word)
{
	const char *s = fdt_bootargs(), *w;
	uint64_t n = strlen(word), len;
	while ((w = next_bootarg(&s, &len)))
		if (len == n && n && strncmp(w, word, n) == 0)
			return 1;
	return 0;
}

uint64_t bootarg_uint(const char *key, uint64_t dflt)
{
	const char *args = fdt_bootargs(), *s;
	uint64_t n = strlen(key), len;
	while ((s = next_bootarg(&args, &len))) {
		if (len > n + 1 && strncmp(s, key, n) == 0 && s[n] == '=') {
			const char *p = s + n + 1, *end = s + len;
			unsigned base = 10;
			uint64_t v = 0;
			if (end - p > 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
				base = 16;
				p += 2;
			}
			for (; p < end; p++) {
				unsigned d;
				if (*p >= '0' && *p <= '9')
					d = (unsigned)(*p - '0');
				else if (base == 16 && *p >= 'a' && *p <= 'f')
					d = (unsigned)(*p - 'a' + 10);
				else if (base == 16 && *p >= 'A' && *p <= 'F')
					d = (unsigned)(*p - 'A' + 10);
				else
					return dflt;
				v = v * base + d;
			}
			return v;
		}
	}
	return dflt;
}

/* ---- misc ----------------------------------------------------------------------------- */
void delay_us(uint64_t us)
{
	uint64_t end = counter_now() + ticks_from_us(us);
	while (counter_now() < end)
		cpu_relax();
}

int rt_is_qemu(void) { return fdt_find_compatible("qemu,fw-cfg-mmio") >= 0; }
