/*
 * demo: what `make run` boots.  Every vCPU runs the same list of stages in lock step (a
 * barrier before and after each); after each stage the boot CPU judges it and reports.
 * Stages: hello (each CPU prints its MPIDR), ticks (each CPU takes 5 virtual-timer ticks at
 * 10 ms: "CPU 1: tick 3"), ipi (CPU0 sends SGI 1 to every other CPU: "CPU 2: IPI from CPU 0").
 * Last line: "demo: 4 CPUs said hello, 20 ticks, 3 IPIs".
 */
#include "runtime.h"

GUEST_NAME("demo");

struct stage {
	const char *name;
	void (*on_cpu)(unsigned cpu);       /* runs on every CPU */
	int (*verdict)(unsigned n_cpus);    /* boot CPU, after every CPU finished on_cpu */
};

/* ---- stage: hello ---- */
static volatile uint64_t hellos;

static void hello_on_cpu(unsigned cpu)
{
	printf("Hello from CPU %u (MPIDR 0x%010lx)\n", cpu, read_mpidr());
	atomic_add(&hellos, 1);
}

static int hello_verdict(unsigned n) { return hellos == n; }

/* ---- stage: timer ticks (virtual timer, 10 ms, TICKS per CPU) ---- */
#define TICKS 5
#define SGI_DEMO 1
static volatile uint64_t ticks[RT_MAX_CPUS], total_ticks, gic_failed;
static uint64_t tick_period;

static int tick_irq(struct irq_ctx *c)
{
	uint64_t n = ++ticks[c->cpu];
	if (n < TICKS)
		timer_set_tval(TIMER_VIRT, (int32_t)tick_period);
	else
		timer_set_ctl(TIMER_VIRT, 0);
	printf("CPU %u: tick %lu\n", c->cpu, n);
	atomic_add(&total_ticks, 1);
	return IRQ_EOI;
}

static void ticks_on_cpu(unsigned cpu)
{
	/* the boot CPU's GIC interface was set up by gic_init() in main */
	if (cpu != 0 && gic_cpu_init() != 0)
		atomic_add(&gic_failed, 1);
	unsigned ppi = timer_ppi(TIMER_VIRT);
	gic_enable_irq(ppi);
	gic_enable_irq(SGI_DEMO);
	timer_set_tval(TIMER_VIRT, (int32_t)tick_period);
	timer_set_ctl(TIMER_VIRT, CNT_CTL_ENABLE);
	irq_enable();
	uint64_t deadline = deadline_after_ms(10000);
	while (atomic_load_acquire(&ticks[cpu]) < TICKS && !deadline_passed(deadline))
		cpu_relax();
	timer_set_ctl(TIMER_VIRT, 0);
	gic_disable_irq(ppi);
}

static int ticks_verdict(unsigned n) { return gic_failed == 0 && total_ticks == (uint64_t)TICKS * n; }

/* ---- stage: IPIs (CPU0 -> every other CPU, SGI 1) ---- */
static volatile uint64_t ipis[RT_MAX_CPUS], total_ipis;

static int ipi_irq(struct irq_ctx *c)
{
	/* v2 names the sender in IAR[12:10]; v3 does not, and CPU0 is the only sender */
	int from = gic_version() == 2 ? c->src_cpu : 0;
	printf("CPU %u: IPI from CPU %d\n", c->cpu, from);
	atomic_add(&ipis[c->cpu], 1);
	atomic_add(&total_ipis, 1);
	return IRQ_EOI;
}

static void ipi_on_cpu(unsigned cpu)
{
	if (cpu == 0) {
		unsigned n = smp_num_cpus();
		if (n > 1)
			gic_send_sgi_mask(SGI_DEMO, ((1u << n) - 1) & ~1u);
		return;
	}
	uint64_t deadline = deadline_after_ms(10000);
	while (atomic_load_acquire(&ipis[cpu]) < 1 && !deadline_passed(deadline))
		cpu_relax();
	delay_ms(10); /* a duplicate would land now */
	irq_disable();
}

static int ipi_verdict(unsigned n)
{
	irq_disable(); /* CPU0 */
	return total_ipis == n - 1;
}

static const struct stage stages[] = {
	{"demo-hello", hello_on_cpu, hello_verdict},
	{"demo-ticks", ticks_on_cpu, ticks_verdict},
	{"demo-ipi", ipi_on_cpu, ipi_verdict},
};
#define N_STAGES (sizeof(stages) / sizeof(stages[0]))

static struct barrier bar;

static void run_stages(unsigned cpu)
{
	unsigned n = smp_num_cpus();
	for (unsigned i = 0; i < N_STAGES; i++) {
		barrier_wait(&bar, n);
		stages[i].on_cpu(cpu);
		barrier_wait(&bar, n);
		if (cpu == 0)
			report(stages[i].verdict(n), "%s", stages[i].name);
	}
}

int main(void)
{
	if (gic_init() != 0)
		return 1;
	tick_period = ticks_from_us(10000);
	irq_set_handler(timer_ppi(TIMER_VIRT), tick_irq);
	irq_set_handler(SGI_DEMO, ipi_irq);
	if (smp_start_all(run_stages) != 0)
		return 1; /* a CPU is missing: the barriers would never open */
	run_stages(0);
	printf("demo: %lu CPUs said hello, %lu ticks, %lu IPIs\n", atomic_load_acquire(&hellos),
	       atomic_load_acquire(&total_ticks), atomic_load_acquire(&total_ipis));
	report(wait_secondaries_off() == 0, "demo-secondaries-off");
	return 0;
}
