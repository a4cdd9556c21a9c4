/*
 * smp: PSCI CPU_ON / AFFINITY_INFO / CPU_OFF for every CPU in the device tree.
 *
 * Each secondary starts at secondary_entry with x0 = its logical index (the CPU_ON context
 * id), checks that MPIDR_EL1 is the DT's entry for that index, checks in, and waits.  While
 * they wait the boot CPU sees each as ON; then they return (the runtime calls CPU_OFF) and
 * the boot CPU waits until each reads OFF.
 */
#include "runtime.h"

GUEST_NAME("smp");

static volatile uint64_t checked_in, release;

static void secondary(unsigned cpu)
{
	uint64_t mpidr = read_mpidr();
	int ok = mpidr == smp_cpu_mpidr(cpu) && smp_cpu_index() == cpu;
	report(ok, "smp-cpu%u-mpidr MPIDR 0x%010lx, DT 0x%010lx", cpu, mpidr, smp_cpu_mpidr(cpu));
	atomic_add(&checked_in, 1);
	while (!atomic_load_acquire(&release))
		cpu_relax();
}

static int boot_mpidr_in_dt(void)
{
	for (unsigned i = 0; i < fdt_cpu_count(); i++)
		if (fdt_cpu_mpidr(i) == read_mpidr())
			return 1;
	return 0;
}

int main(void)
{
	unsigned n = smp_num_cpus();
	report(boot_mpidr_in_dt(), "smp-cpu0-mpidr MPIDR 0x%010lx is in the DT (%u cpu nodes)", read_mpidr(),
	       fdt_cpu_count());
	int st = psci_affinity_info(read_mpidr(), 0);
	report(st == PSCI_AFF_ON, "smp-cpu0-affinity-on AFFINITY_INFO = %d, expected 0", st);

	unsigned started = 0;
	for (unsigned i = 1; i < n; i++) {
		st = psci_affinity_info(smp_cpu_mpidr(i), 0);
		report(st == PSCI_AFF_OFF, "smp-cpu%u-off-before-on AFFINITY_INFO = %d, expected 1", i, st);
		int r = cpu_on(i, secondary);
		report(r == PSCI_SUCCESS, "smp-cpu%u-cpu-on MPIDR 0x%010lx: CPU_ON = %d", i, smp_cpu_mpidr(i), r);
		started += r == PSCI_SUCCESS;
	}

	uint64_t deadline = deadline_after_ms(RT_WAIT_TIMEOUT_MS);
	while (atomic_load_acquire(&checked_in) < started && !deadline_passed(deadline))
		cpu_relax();
	report(checked_in == started, "smp-all-checked-in %lu of %u secondaries", checked_in, started);

	/* Nobody has been released yet, so each started CPU must still read ON. */
	for (unsigned i = 1; i < n; i++) {
		st = psci_affinity_info(smp_cpu_mpidr(i), 0);
		report(st == PSCI_AFF_ON, "smp-cpu%u-affinity-on AFFINITY_INFO = %d, expected 0", i, st);
	}

	atomic_store_release(&release, 1);
	for (unsigned i = 1; i < n; i++) {
		st = wait_cpu_off(i);
		report(st == PSCI_AFF_OFF, "smp-cpu%u-off AFFINITY_INFO = %d after CPU_OFF, expected 1", i, st);
	}
	return 0;
}
