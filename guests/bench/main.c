/*
 * bench: micro-benchmarks measured inside the guest with the generic counter, the same image on
 * softkvm (each irqchip set-up) and on QEMU.  Sub-benchmarks are picked by bootarg words; with
 * none named every host-independent one runs (all but `irqfd`):
 *   counter     CNTVCT_EL0 read (ISB + MRS): the cost of a timestamp
 *   hvc         HVC #0 PSCI_VERSION round trip (the hypervisor answers)
 *   svc         SVC #0 taken at the guest's own EL1 vector (full frame save) and ERET
 *   mmio        PL011 UARTFR read: an MMIO access the VMM's device model serves
 *   gicd        GICD_TYPER read: the distributor (in-kernel vGIC, or the VMM's GIC)
 *   cpuif       CPU interface register read: v3 ICC_PMR_EL1 (system register), v2 GICC_PMR
 *   ackeoi      IAR read of a pending self-SGI with IRQs masked, then its EOIR write, each timed
 *   sgi         self-SGI round trip: send, IRQ exception, acknowledge, EOI, ERET
 *   ipi         CPU0 <-> CPU1 ping-pong (SGI 1 there, SGI 2 back), both idle in WFI: one-way
 *               latency (send -> receiver's handler) and round trip samples (needs 2 CPUs)
 *   timer       virtual timer, CVAL = now + deadline, CPU idle in WFI: deadline -> handler
 *               latency and deadline -> EOI done, per sample
 *   timer-busy  the same while the CPU spins (the hypervisor must preempt it)
 *   ticks-max   timer ticks per second when every tick re-arms it for "now" (TVAL = 0)
 *   ticks-1khz  timer ticks per second at 1 kHz (CVAL += 1 ms), lateness per tick
 *   irqfd       host-driven SPIs (softkvm's kernel irqchip only): see irqfd.c
 * Parameters (bootargs key=value): n= trap loop iterations (2000), nirq= interrupt loop
 * iterations (500), ipi= rounds (200), samples= timer samples (20), deadline= ms (10),
 * tickms= window of each ticks test (200), irqfd-edge=, irqfd-level=, irqfd-lat=, doorbell=.
 *
 * Output contract (parsed by bench/parse.py), all values raw counter ticks:
 *   BENCHINFO freq=<CNTFRQ> cpus=<n> gic=<2|3> qemu=<0|1>
 *   MARK <op> begin / MARK <op> end n=<N>   around each measured section of N events (the
 *                                       host counts exits in between); "MARK empty" calibrates
 *   BENCH <op> cost ticks=<T> n=<N>     one operation costs T/N ticks
 *   BENCH <op> rate ticks=<T> n=<N>     N events took T ticks
 *   SAMPLES <op> ticks|pct v v ...      per-event durations (ticks) or raw CNTPCT values (pct)
 * plus the usual PASS/FAIL lines (each sub-benchmark checks that every event happened).
 */
#include "bench.h"

GUEST_NAME("bench");

struct bench_params bp;

#define PL011_FR 0x18
#define GICD_TYPER 0x004
#define GICC_PMR 0x004
#define PSCI_VERSION_ID 0x84000000u

/* ---- output ---- */
void mark_begin(const char *op) { printf("MARK %s begin\n", op); }
void mark_end(const char *op, uint64_t n) { printf("MARK %s end n=%lu\n", op, n); }

void bench_cost(const char *op, uint64_t ticks, uint64_t n) { printf("BENCH %s cost ticks=%lu n=%lu\n", op, ticks, n); }

void bench_rate(const char *op, uint64_t ticks, uint64_t n) { printf("BENCH %s rate ticks=%lu n=%lu\n", op, ticks, n); }

void bench_samples(const char *op, const char *unit, const uint64_t *v, uint64_t n)
{
	for (uint64_t i = 0; i < n; i += 16) {
		printf("SAMPLES %s %s", op, unit);
		for (uint64_t j = i; j < n && j < i + 16; j++)
			printf(" %lu", v[j]);
		putc('\n');
	}
}

int wait_at_least(volatile uint64_t *p, uint64_t v, uint64_t ms, int idle)
{
	uint64_t deadline = deadline_after_ms(ms);
	while (atomic_load_acquire(p) < v && !deadline_passed(deadline)) {
		if (idle)
			idle_step();
		else
			cpu_relax();
	}
	return atomic_load_acquire(p) >= v;
}

/* ---- trap loops: N operations between two counter reads ---- */
typedef void (*op_fn)(void);

static void op_counter(void) { (void)now_ticks(); }

static void op_hvc(void)
{
	register uint64_t x0 __asm__("x0") = PSCI_VERSION_ID;
	__asm__ volatile("hvc #0" : "+r"(x0)::"x1", "x2", "x3", "memory");
}

static void op_svc(void) { __asm__ volatile("svc #0" ::: "memory"); }

static void op_mmio(void) { (void)*(volatile uint32_t *)(PL011_BASE + PL011_FR); }

static void op_gicd(void) { (void)*(volatile uint32_t *)(gic_dist_base() + GICD_TYPER); }

static void op_cpuif(void)
{
	if (gic_version() == 3) {
		uint64_t v;
		__asm__ volatile("mrs %0, S3_0_C4_C6_0" : "=r"(v)::"memory"); /* ICC_PMR_EL1 */
	} else {
		(void)*(volatile uint32_t *)(gic_cpuif_base() + GICC_PMR);
	}
}

static int svc_hook(struct exc_frame *f) { return ESR_EC(f->esr) == EC_SVC64; }

static void time_loop(const char *op, op_fn fn, uint64_t n)
{
	mark_begin(op);
	uint64_t t0 = now_ticks();
	for (uint64_t i = 0; i < n; i++)
		fn();
	uint64_t t1 = now_ticks();
	mark_end(op, n);
	bench_cost(op, t1 - t0, n);
	report(t1 > t0, "bench-%s: %lu operations in %lu us", op, n, ticks_to_us(t1 - t0));
}

static void bench_traps(int all)
{
	if (all || bootarg_present("counter"))
		time_loop("counter", op_counter, bp.n);
	if (all || bootarg_present("hvc"))
		time_loop("hvc", op_hvc, bp.n);
	if (all || bootarg_present("svc")) {
		set_exception_hook(HOOK_SYNC_SPX, svc_hook);
		time_loop("svc", op_svc, bp.n);
		set_exception_hook(HOOK_SYNC_SPX, 0);
	}
	if (all || bootarg_present("mmio"))
		time_loop("mmio", op_mmio, bp.n);
	if (all || bootarg_present("gicd"))
		time_loop("gicd", op_gicd, bp.n);
	if (all || bootarg_present("cpuif"))
		time_loop("cpuif", op_cpuif, bp.n);
}

/* ---- driver ---- */
static const char *const named[] = {"counter", "hvc", "svc", "mmio", "gicd", "cpuif", "ackeoi", "sgi",
				    "ipi", "timer", "timer-busy", "ticks-max", "ticks-1khz", "irqfd"};

static int any_named(void)
{
	for (unsigned i = 0; i < sizeof(named) / sizeof(named[0]); i++)
		if (bootarg_present(named[i]))
			return 1;
	return 0;
}

static void read_params(void)
{
	bp.n = bootarg_uint("n", 2000);
	bp.nirq = bootarg_uint("nirq", 500);
	bp.ipi = bootarg_uint("ipi", 200);
	bp.samples = bootarg_uint("samples", 20);
	bp.deadline_ms = bootarg_uint("deadline", 10);
	bp.tick_ms = bootarg_uint("tickms", 200);
	bp.irqfd_edge = bootarg_uint("irqfd-edge", 0);
	bp.irqfd_level = bootarg_uint("irqfd-level", 0);
	bp.irqfd_lat = bootarg_uint("irqfd-lat", 0);
	bp.doorbell = bootarg_uint("doorbell", 0);
	if (bp.samples > BENCH_MAX_SAMPLES)
		bp.samples = BENCH_MAX_SAMPLES;
	if (bp.irqfd_lat > BENCH_MAX_SAMPLES)
		bp.irqfd_lat = BENCH_MAX_SAMPLES;
}

int main(void)
{
	if (gic_init() != 0)
		return 1;
	read_params();
	int all = !any_named();
	printf("BENCHINFO freq=%lu cpus=%u gic=%d qemu=%d\n", counter_freq(), smp_num_cpus(), gic_version(),
	       rt_is_qemu());
	mark_begin("empty");
	mark_end("empty", 0);
	bench_traps(all);
	if (all || bootarg_present("ackeoi"))
		bench_ack_eoi();
	if (all || bootarg_present("sgi"))
		bench_sgi_self();
	if (all || bootarg_present("ipi"))
		bench_ipi();
	if (all || bootarg_present("timer"))
		bench_timer_lat(1);
	if (all || bootarg_present("timer-busy"))
		bench_timer_lat(0);
	if (all || bootarg_present("ticks-max"))
		bench_ticks_max();
	if (all || bootarg_present("ticks-1khz"))
		bench_ticks_1khz();
	if (bootarg_present("irqfd"))
		bench_irqfd();
	return 0;
}
