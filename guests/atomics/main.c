/*
 * atomics: contended exclusive-monitor loops on shared 64-bit counters.
 *
 * Every CPU adds 1 per iteration; the totals are split evenly and the boot CPU takes the
 * remainder, so any lost update shows as a short count.  Phases are separated by barriers:
 *   1. LDXR/STXR            1,000,000 in total
 *   2. LDAXR/STLXR            200,000 in total
 *   3. CAS (LDAXR/CMP/STLXR, CLREX on mismatch)  100,000 in total
 */
#include "runtime.h"

GUEST_NAME("atomics");

static const struct phase {
	const char *name;
	uint64_t total;
} phases[] = {
	{"atomics-ldxr-stxr", 1000000},
	{"atomics-ldaxr-stlxr", 200000},
	{"atomics-cas", 100000},
};
#define N_PHASES (sizeof(phases) / sizeof(phases[0]))

/* One counter per phase, each on its own 64-byte line so phases do not share a monitor
 * granule. */
static struct {
	volatile uint64_t value;
	uint64_t pad[7];
} counters[N_PHASES] __attribute__((aligned(64)));
static struct barrier bar;

static void increment(unsigned phase, volatile uint64_t *p)
{
	switch (phase) {
	case 0:
		atomic_add_relaxed(p, 1);
		break;
	case 1:
		atomic_add(p, 1);
		break;
	default:
		for (uint64_t old = *p; atomic_cas(p, old, old + 1) != old; old = *p)
			;
	}
}

static void run_phases(unsigned cpu)
{
	unsigned n = smp_num_cpus();
	for (unsigned ph = 0; ph < N_PHASES; ph++) {
		uint64_t share = phases[ph].total / n + (cpu == 0 ? phases[ph].total % n : 0);
		barrier_wait(&bar, n); /* start together: the point is contention */
		for (uint64_t i = 0; i < share; i++)
			increment(ph, &counters[ph].value);
	}
	barrier_wait(&bar, n);
}

int main(void)
{
	unsigned n = smp_num_cpus();
	if (smp_start_all(run_phases) != 0)
		return 1; /* a CPU is missing: the barriers would never open */
	run_phases(0);
	for (unsigned ph = 0; ph < N_PHASES; ph++) {
		uint64_t got = atomic_load_acquire(&counters[ph].value);
		report(got == phases[ph].total, "%s %lu of %lu increments on %u CPUs", phases[ph].name, got,
		       phases[ph].total, n);
	}
	report(wait_secondaries_off() == 0, "atomics-secondaries-off");
	return 0;
}
