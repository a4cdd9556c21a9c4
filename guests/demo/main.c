/*
 * demo: what `make run` boots.  Every vCPU runs the same list of stages in lock step (a
 * barrier before and after each); after each stage the boot CPU judges it and reports.
 * Later stages (timer ticks, IPIs) are added to the table; nothing else needs to change.
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

static int hello_verdict(unsigned n)
{
	printf("demo: %lu CPUs said hello\n", atomic_load_acquire(&hellos));
	return hellos == n;
}

static const struct stage stages[] = {
	{"demo-hello", hello_on_cpu, hello_verdict},
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
	if (smp_start_all(run_stages) != 0)
		return 1; /* a CPU is missing: the barriers would never open */
	run_stages(0);
	report(wait_secondaries_off() == 0, "demo-secondaries-off");
	return 0;
}
