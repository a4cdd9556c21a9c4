/*
 * gic: the GIC behaviour KVM's vGIC provides, on GICv2 (group 0, GICD/GICC MMIO) and GICv3
 * (group 1, GICR + ICC_* system registers).
 *
 * Sub-tests, selected by the space-separated words of the bootargs; when none is named, every
 * default one runs (all but `spi`, which needs a host driving SPI lines):
 *   ipi       every CPU sends SGI 1 to itself; CPU0 sends to a target list of all the others;
 *             then each CPU in turn broadcasts (v2 filter "all but self", v3 IRM = 1).  Each
 *             target takes each SGI exactly once (exact per-CPU totals after a settle delay);
 *             on v2 the source CPU in IAR[12:10] is checked for every delivery.
 *   active    EOImode = 1: SGI 2 is acknowledged, its priority dropped (EOI) but not deactivated;
 *             ISACTIVER shows it active; ICACTIVER (v2 GICD, v3 GICR) clears it; one more SGI is
 *             delivered exactly once (total 2).  Then active+pending: an SGI sent while the
 *             previous one is still active is held (pending, not taken) until DIR.
 *   priority  SGI 3 (prio 0xA0) handler re-enables IRQs and raises SGI 4 (0x80), which preempts
 *             it, and SGI 5 (0xA0), which must wait; order L H l S; RPR inside each handler.
 *             PMR: with PMR 0x80 and then 0xA0 (== priority) a pending SGI 3 is not taken and
 *             stays pending; PMR 0xF0 delivers it.
 *   mmio      GICv2 distributor register semantics (NOTE-skipped on GICv3).
 *   spi       host-driven SPIs 40 (edge) and 41 (level), protocol below.  Only when named.
 * Sub-tests needing two CPUs note a skip on one CPU.
 *
 * `spi` handshake (the guest prints a line, the host reacts; every guest wait is bounded, so
 * a host that misses a command only produces a FAIL, never a hang):
 *   The host acts on exactly three commands, each a whole line:
 *     "PULSE <n>"  assert SPI n, then de-assert it (an edge; e.g. irq_line(n, 1); irq_line(n, 0))
 *     "RAISE <n>"  assert SPI n and keep it asserted
 *     "LOWER <n>"  de-assert SPI n
 *   Every other line ("READY spi", "ACK 40", "ACK 41", "AGAIN 41", "DONE spi", PASS/FAIL...) is
 *   information.  The guest's sequence:
 *     READY spi      SPI 40 edge + SPI 41 level, enabled, priority 0xA0, targeted at CPU0
 *     PULSE 40       guest waits (30 s) for the delivery; its handler leaves it active
 *     ACK 40
 *     PULSE 40       a second edge while the first is active: the guest waits (30 s) until
 *                    ISPENDR shows it pending, checks it is not taken while active, EOIs
 *     ACK 40         ...and the held edge is delivered exactly once more (total 2)
 *     RAISE 41       guest waits (30 s) for the delivery and keeps it active
 *     ACK 41
 *     LOWER 41       guest waits (30 s) until ISPENDR[41] reads 0 (the line is low), then EOIs
 *                    10 ms later: no re-delivery within 50 ms
 *     RAISE 41       guest waits (30 s) for the delivery, keeps it active
 *     ACK 41         guest EOIs with the line still high: delivered again
 *     AGAIN 41
 *     LOWER 41       guest waits (30 s) until ISPENDR[41] reads 0, EOIs: no more deliveries
 *     DONE spi       then PASS/FAIL lines and, at the end of the run, SUMMARY
 *   The SPI numbers are INTIDs (KVM_IRQ_LINE type SPI takes the INTID; irqfd gsi = INTID - 32).
 */
#include "runtime.h"

GUEST_NAME("gic");

#define WAIT_MS 2000 /* for deliveries the guest caused itself */

static int is_qemu;

/* Waits until *p >= v or ms pass; returns whether it got there. */
static int wait_for(volatile uint64_t *p, uint64_t v, uint64_t ms)
{
	uint64_t deadline = deadline_after_ms(ms);
	while (atomic_load_acquire(p) < v && !deadline_passed(deadline))
		cpu_relax();
	return atomic_load_acquire(p) >= v;
}

/* Waits until gic_is_pending(intid) == want or ms pass. */
static int wait_pending(unsigned intid, int want, uint64_t ms)
{
	uint64_t deadline = deadline_after_ms(ms);
	while (gic_is_pending(intid) != want && !deadline_passed(deadline))
		cpu_relax();
	return gic_is_pending(intid) == want;
}

/* ================================ ipi ================================ */
#define SGI_IPI 1
static volatile uint64_t ipi_count[RT_MAX_CPUS];
static volatile uint64_t ipi_from[RT_MAX_CPUS][RT_MAX_CPUS];
static volatile uint64_t ipi_src_bad[RT_MAX_CPUS];
static uint64_t ipi_snap[3][RT_MAX_CPUS];
static struct barrier ipi_bar;
static volatile uint64_t ipi_init_failed;

static int ipi_handler(struct irq_ctx *c)
{
	atomic_add(&ipi_count[c->cpu], 1);
	if (gic_version() == 2) {
		if (c->src_cpu >= 0)
			atomic_add(&ipi_from[c->cpu][c->src_cpu], 1);
		else
			atomic_add(&ipi_src_bad[c->cpu], 1);
	}
	return IRQ_EOI;
}

/* Deliveries cpu should have seen once sender s's broadcast is done. */
static uint64_t ipi_expected_after(unsigned cpu, unsigned s)
{
	uint64_t e = 1 + (cpu != 0);
	for (unsigned i = 0; i <= s; i++)
		e += i != cpu;
	return e;
}

static void ipi_body(unsigned cpu)
{
	unsigned n = smp_num_cpus();
	if (cpu != 0 && gic_cpu_init() != 0)
		atomic_add(&ipi_init_failed, 1);
	irq_enable();
	barrier_wait(&ipi_bar, n);

	gic_send_sgi_self(SGI_IPI);
	wait_for(&ipi_count[cpu], 1, WAIT_MS);
	barrier_wait(&ipi_bar, n);
	ipi_snap[0][cpu] = ipi_count[cpu];
	barrier_wait(&ipi_bar, n);

	if (n > 1) {
		if (cpu == 0)
			gic_send_sgi_mask(SGI_IPI, ((1u << n) - 1) & ~1u);
		else
			wait_for(&ipi_count[cpu], 2, WAIT_MS);
	}
	barrier_wait(&ipi_bar, n);
	ipi_snap[1][cpu] = ipi_count[cpu];

	for (unsigned s = 0; n > 1 && s < n; s++) {
		barrier_wait(&ipi_bar, n);
		if (cpu == s)
			gic_send_sgi_others(SGI_IPI);
		else
			wait_for(&ipi_count[cpu], ipi_expected_after(cpu, s), WAIT_MS);
		barrier_wait(&ipi_bar, n);
	}
	delay_ms(20); /* extra deliveries would land now */
	barrier_wait(&ipi_bar, n);
	ipi_snap[2][cpu] = ipi_count[cpu];
	irq_disable();
	barrier_wait(&ipi_bar, n);
}

static void test_ipi(void)
{
	unsigned n = smp_num_cpus();
	irq_set_handler(SGI_IPI, ipi_handler);
	if (n > 1 && smp_start_all(ipi_body) != 0)
		return; /* the barriers would never open */
	ipi_body(0);
	report(ipi_init_failed == 0, "ipi-cpu-init: GIC CPU interface up on all %u CPUs", n);

	int ok = 1;
	for (unsigned i = 0; i < n; i++)
		ok &= ipi_snap[0][i] == 1;
	report(ok, "ipi-self: every CPU took its own SGI once (cpu0..: %lu %lu %lu %lu ...)", ipi_snap[0][0],
	       n > 1 ? ipi_snap[0][1] : 0, n > 2 ? ipi_snap[0][2] : 0, n > 3 ? ipi_snap[0][3] : 0);

	if (n == 1) {
		note("ipi-target-list and ipi-broadcast skipped: only one CPU");
	} else {
		ok = 1;
		for (unsigned i = 0; i < n; i++)
			ok &= ipi_snap[1][i] - ipi_snap[0][i] == (i != 0);
		report(ok, "ipi-target-list: CPU0 -> cpus 1..%u, each took it once, CPU0 none", n - 1);
		ok = 1;
		for (unsigned i = 0; i < n; i++)
			ok &= ipi_snap[2][i] - ipi_snap[1][i] == n - 1;
		report(ok, "ipi-broadcast: %u senders in turn (%s), each CPU took %u", n,
		       gic_version() == 2 ? "SGIR filter 1" : "SGI1R IRM=1", n - 1);
	}
	for (unsigned i = 0; i < n; i++) {
		uint64_t want = 1 + (i != 0) + (n - 1);
		report(ipi_snap[2][i] == want, "ipi-total-cpu%u: %lu deliveries, expected exactly %lu", i,
		       ipi_snap[2][i], want);
	}
	if (gic_version() == 2) {
		ok = 1;
		for (unsigned r = 0; r < n; r++) {
			ok &= ipi_src_bad[r] == 0;
			for (unsigned s = 0; s < n; s++) {
				uint64_t want = (r == s) + (s == 0 && r != 0) + (s != r);
				if (ipi_from[r][s] != want) {
					note("ipi-source: cpu%u got %lu SGIs from cpu%u, expected %lu", r, ipi_from[r][s], s, want);
					ok = 0;
				}
			}
		}
		report(ok, "ipi-source-v2: IAR[12:10] named the right sender for every delivery");
	}
	irq_set_handler(SGI_IPI, 0);
	wait_secondaries_off();
}

/* ================================ active ================================ */
#define SGI_ACT 2
static volatile uint64_t act_count;
static volatile uint64_t act_leave_active;
static volatile uint32_t act_iar;
static volatile uint64_t act_seen_active;

static int act_handler(struct irq_ctx *c)
{
	act_iar = c->iar;
	act_seen_active = gic_is_active(c->intid);
	atomic_add(&act_count, 1);
	if (act_leave_active) {
		gic_eoi(c->iar); /* EOImode = 1: priority drop only */
		return IRQ_HANDLED;
	}
	return IRQ_EOI; /* EOI + DIR */
}

static void test_active(void)
{
	const char *icact = gic_version() == 2 ? "GICD_ICACTIVER0" : "GICR_ICACTIVER0";
	irq_set_handler(SGI_ACT, act_handler);
	gic_set_priority(SGI_ACT, GIC_PRIO_DEFAULT);
	gic_enable_irq(SGI_ACT);
	gic_set_eoimode(1);
	report(gic_get_eoimode() == 1, "active-eoimode: EOImode reads 1 after setting it");
	irq_enable();

	act_leave_active = 1;
	gic_send_sgi_self(SGI_ACT);
	int got = wait_for(&act_count, 1, WAIT_MS);
	report(got && act_seen_active, "active-ack: SGI %u delivered, ISACTIVER set inside the handler (%lu)", SGI_ACT,
	       act_seen_active);
	report(gic_is_active(SGI_ACT), "active-left-active: ISACTIVER bit still set after EOI without DIR");
	uint8_t rpr = gic_running_priority();
	report(rpr == GIC_PRIO_IDLE, "active-priority-dropped: running priority 0x%02x (idle 0xff) after the EOI", rpr);
	delay_ms(10);
	report(act_count == 1, "active-no-redelivery: %lu delivery while active", act_count);

	gic_clear_active(SGI_ACT);
	report(!gic_is_active(SGI_ACT), "active-cleared: ISACTIVER bit clear after writing %s", icact);

	act_leave_active = 0;
	gic_send_sgi_self(SGI_ACT);
	wait_for(&act_count, 2, WAIT_MS);
	delay_ms(20);
	report(act_count == 2, "active-redelivered: %lu deliveries in total, expected exactly 2", act_count);
	report(!gic_is_active(SGI_ACT), "active-deactivated: ISACTIVER clear after EOI + DIR");

	/* active + pending: held while active, delivered after DIR */
	act_leave_active = 1;
	gic_send_sgi_self(SGI_ACT);
	wait_for(&act_count, 3, WAIT_MS);
	uint32_t held = act_iar;
	gic_send_sgi_self(SGI_ACT);
	delay_ms(20);
	int pend = gic_is_pending(SGI_ACT), act = gic_is_active(SGI_ACT);
	report(act_count == 3 && pend && act,
	       "active-pending: second SGI held while the first is active (deliveries %lu, pending %d, active %d)",
	       act_count, pend, act);
	act_leave_active = 0;
	gic_dir(held);
	wait_for(&act_count, 4, WAIT_MS);
	delay_ms(20);
	report(act_count == 4 && !gic_is_active(SGI_ACT) && !gic_is_pending(SGI_ACT),
	       "active-pending-released: DIR let the held SGI in, exactly once (deliveries %lu, expected 4)",
	       act_count);

	irq_disable();
	gic_set_eoimode(0);
	irq_set_handler(SGI_ACT, 0);
}

/* ================================ priority ================================ */
#define SGI_LOW 3
#define SGI_HIGH 4
#define SGI_SAME 5
#define PRIO_LOW 0xA0
#define PRIO_HIGH 0x80
static volatile uint64_t prio_mode; /* 0 = plain count, 1 = nesting test */
static volatile uint64_t low_count, high_count, same_count;
static volatile uint8_t rpr_low, rpr_high, rpr_same;
static char order[16];
static volatile uint64_t order_len;

static void log_event(char c)
{
	uint64_t i = atomic_add(&order_len, 1) - 1;
	if (i < sizeof(order) - 1)
		order[i] = c;
}

static int low_handler(struct irq_ctx *c)
{
	(void)c;
	atomic_add(&low_count, 1);
	if (prio_mode != 1)
		return IRQ_EOI;
	log_event('L');
	rpr_low = gic_running_priority();
	irq_enable(); /* allow preemption */
	gic_send_sgi_self(SGI_HIGH);
	wait_for(&high_count, 1, WAIT_MS);
	gic_send_sgi_self(SGI_SAME); /* same priority: must not preempt */
	delay_ms(10);
	log_event('l');
	irq_disable();
	return IRQ_EOI;
}

static int high_handler(struct irq_ctx *c)
{
	(void)c;
	log_event('H');
	rpr_high = gic_running_priority();
	atomic_add(&high_count, 1);
	return IRQ_EOI;
}

static int same_handler(struct irq_ctx *c)
{
	(void)c;
	log_event('S');
	rpr_same = gic_running_priority();
	atomic_add(&same_count, 1);
	return IRQ_EOI;
}

static void test_priority(void)
{
	gic_request_irq(SGI_LOW, low_handler, PRIO_LOW, 1, 0);
	gic_request_irq(SGI_HIGH, high_handler, PRIO_HIGH, 1, 0);
	gic_request_irq(SGI_SAME, same_handler, PRIO_LOW, 1, 0);
	gic_set_bpr(0); /* minimum: the group priority keeps every implemented bit we use */
	report(gic_running_priority() == GIC_PRIO_IDLE, "priority-rpr-idle: running priority 0x%02x outside handlers",
	       gic_running_priority());

	prio_mode = 1;
	irq_enable();
	gic_send_sgi_self(SGI_LOW);
	wait_for(&low_count, 1, WAIT_MS);
	wait_for(&same_count, 1, WAIT_MS);
	delay_ms(10);
	irq_disable();
	order[order_len < sizeof(order) ? order_len : sizeof(order) - 1] = 0;
	report(strcmp(order, "LHlS") == 0,
	       "priority-preemption: order %s, expected LHlS (0x80 preempts 0xA0; an equal 0xA0 waits)", order);
	report(rpr_low == PRIO_LOW && rpr_high == PRIO_HIGH && rpr_same == PRIO_LOW,
	       "priority-rpr: running priority 0x%02x in the 0xA0 handler, 0x%02x nested 0x80, 0x%02x in the "
	       "second 0xA0",
	       rpr_low, rpr_high, rpr_same);
	report(low_count == 1 && high_count == 1 && same_count == 1, "priority-counts: %lu/%lu/%lu, expected 1/1/1",
	       low_count, high_count, same_count);

	prio_mode = 0;
	low_count = 0;
	gic_set_pmr(0x80);
	irq_enable();
	gic_send_sgi_self(SGI_LOW);
	delay_ms(20);
	report(low_count == 0 && gic_is_pending(SGI_LOW),
	       "priority-pmr-masks: PMR 0x%02x: priority 0xA0 SGI not taken in 20 ms (%lu), still pending (%d)",
	       gic_get_pmr(), low_count, gic_is_pending(SGI_LOW));
	gic_set_pmr(PRIO_LOW);
	delay_ms(20);
	report(low_count == 0 && gic_is_pending(SGI_LOW),
	       "priority-pmr-equal: PMR 0x%02x == priority: not taken (%lu), still pending (%d)", gic_get_pmr(),
	       low_count, gic_is_pending(SGI_LOW));
	gic_set_pmr(GIC_PMR_DEFAULT);
	wait_for(&low_count, 1, WAIT_MS);
	delay_ms(10);
	report(low_count == 1 && !gic_is_pending(SGI_LOW),
	       "priority-pmr-unmask: PMR 0x%02x delivers it, once (%lu)", gic_get_pmr(), low_count);
	irq_disable();
	for (unsigned i = SGI_LOW; i <= SGI_SAME; i++) {
		irq_set_handler(i, 0);
		gic_set_priority(i, GIC_PRIO_DEFAULT);
	}
}

/* ================================ mmio (GICv2) ================================ */
#define D_TYPER 0x004
#define D_IIDR 0x008
#define D_ISENABLER 0x100
#define D_ICENABLER 0x180
#define D_ISPENDR 0x200
#define D_ICPENDR 0x280
#define D_ISACTIVER 0x300
#define D_ICACTIVER 0x380
#define D_IPRIORITYR 0x400
#define D_ITARGETSR 0x800
#define D_ICFGR 0xC00
#define D_ICPIDR2 0xFE8

static uint64_t D;
static inline uint32_t drd32(uint64_t off) { return *(volatile uint32_t *)(D + off); }
static inline void dwr32(uint64_t off, uint32_t v) { *(volatile uint32_t *)(D + off) = v; }
static inline uint8_t drd8(uint64_t off) { return *(volatile uint8_t *)(D + off); }
static inline void dwr8(uint64_t off, uint8_t v) { *(volatile uint8_t *)(D + off) = v; }

static volatile uint64_t itarget_ok[RT_MAX_CPUS], itarget_mask[RT_MAX_CPUS], itarget_done[RT_MAX_CPUS];

/* ITARGETSR0-7 (SGIs and PPIs): every byte reads this CPU's own bit, and writes are ignored. */
static void itargets_private_check(unsigned cpu)
{
	uint32_t first = drd8(D_ITARGETSR);
	int ok = first != 0 && (first & (first - 1)) == 0;
	for (unsigned i = 0; i < 8; i++)
		ok &= drd32(D_ITARGETSR + 4 * i) == first * 0x01010101u;
	for (unsigned i = 0; i < 8; i++)
		dwr32(D_ITARGETSR + 4 * i, ~(first * 0x01010101u));
	for (unsigned i = 0; i < 8; i++)
		ok &= drd32(D_ITARGETSR + 4 * i) == first * 0x01010101u;
	itarget_mask[cpu] = first;
	itarget_ok[cpu] = ok;
	atomic_store_release(&itarget_done[cpu], 1);
}

static void mmio_secondary(unsigned cpu) { itargets_private_check(cpu); }

static void check_ro(const char *name, uint64_t off)
{
	uint32_t v = drd32(off);
	dwr32(off, ~v);
	uint32_t after = drd32(off);
	dwr32(off, 0);
	uint32_t after0 = drd32(off);
	report(after == v && after0 == v, "mmio-ro-%s: 0x%08x unchanged after writing 0x%08x and 0 (read 0x%08x, 0x%08x)",
	       name, v, ~v, after, after0);
}

static void test_mmio(void)
{
	if (gic_version() != 2) {
		note("mmio: GICv2 distributor semantics only; skipped on GICv%d", gic_version());
		return;
	}
	D = gic_dist_base();
	unsigned n = smp_num_cpus();
	uint32_t all_ifaces = 0;

	/* read-only identification */
	check_ro("typer", D_TYPER);
	check_ro("iidr", D_IIDR);
	check_ro("icpidr2", D_ICPIDR2);
	uint32_t typer = drd32(D_TYPER);
	unsigned it_lines = typer & 0x1f, cpus = ((typer >> 5) & 7) + 1;
	report(cpus == n, "mmio-typer-cpunumber: TYPER 0x%08x: CPUNumber+1 = %u, %u CPUs", typer, cpus, n);
	note("mmio: IIDR 0x%08x, ICPIDR2 0x%08x, ITLinesNumber %u (%u INTIDs)", drd32(D_IIDR), drd32(D_ICPIDR2),
	     it_lines, 32 * (it_lines + 1));

	/* ITARGETSR0-7: own CPU, read-only, on every CPU */
	itargets_private_check(0);
	for (unsigned i = 1; i < n; i++) {
		if (cpu_on(i, mmio_secondary) != PSCI_SUCCESS)
			report(0, "mmio: CPU_ON cpu%u failed", i);
	}
	uint64_t dl = deadline_after_ms(RT_WAIT_TIMEOUT_MS);
	for (unsigned i = 1; i < n; i++)
		while (!atomic_load_acquire(&itarget_done[i]) && !deadline_passed(dl))
			cpu_relax();
	wait_secondaries_off();
	int uni_raz = is_qemu && n == 1 && itarget_mask[0] == 0;
	if (uni_raz) {
		note("mmio-itargetsr-private: QEMU makes ITARGETSR RAZ/WI on a uniprocessor GIC (KVM reads 0x01)");
	} else {
		int ok = 1, distinct = 1;
		for (unsigned i = 0; i < n; i++) {
			ok &= itarget_ok[i] != 0;
			all_ifaces |= (uint32_t)itarget_mask[i];
			for (unsigned j = 0; j < i; j++)
				distinct &= itarget_mask[i] != itarget_mask[j];
		}
		report(ok && distinct,
		       "mmio-itargetsr-private: ITARGETSR0-7 read the CPU's own bit on each of %u CPUs (cpu0 0x%02lx), "
		       "read-only",
		       n, itarget_mask[0]);
	}
	if (!all_ifaces)
		all_ifaces = 1;

	/* ITARGETSR for an SPI: writable, masked to existing CPUs */
	unsigned spi = 40;
	dwr8(D_ITARGETSR + spi, 0xff);
	uint32_t t = drd8(D_ITARGETSR + spi);
	if (is_qemu && (t == 0xff || (n == 1 && t == 0)))
		note("mmio-itargetsr-spi-mask: QEMU reads 0x%02x after writing 0xff (no masking to the %u CPU(s); "
		     "KVM reads 0x%02x)",
		     t, n, all_ifaces);
	else
		report(t == all_ifaces, "mmio-itargetsr-spi-mask: wrote 0xff, read 0x%02x, expected 0x%02x (existing CPUs)", t,
		       all_ifaces);
	dwr8(D_ITARGETSR + spi, (uint8_t)gic_cpu_iface_mask(0));

	/* IPRIORITYR implemented bits */
	dwr8(D_IPRIORITYR + spi, 0xff);
	uint32_t pmask = drd8(D_IPRIORITYR + spi);
	unsigned bits = 0;
	while (bits < 8 && (pmask & (0x80u >> bits)))
		bits++;
	report(bits >= 4 && pmask == ((0xff00u >> bits) & 0xff),
	       "mmio-ipriority-bits: wrote 0xff, read 0x%02x: %u implemented bits, from the top", pmask, bits);
	if (!pmask)
		pmask = 0xf0;

	/* byte access to IPRIORITYR and ITARGETSR */
	unsigned base = 44; /* 44..47: one word */
	dwr32(D_IPRIORITYR + base, 0x10203040u);
	int ok = drd8(D_IPRIORITYR + base) == (0x40 & pmask) && drd8(D_IPRIORITYR + base + 1) == (0x30 & pmask) &&
		 drd8(D_IPRIORITYR + base + 2) == (0x20 & pmask) && drd8(D_IPRIORITYR + base + 3) == (0x10 & pmask);
	dwr8(D_IPRIORITYR + base + 2, 0x88);
	uint32_t want = ((0x10u & pmask) << 24) | ((0x88u & pmask) << 16) | ((0x30u & pmask) << 8) | (0x40u & pmask);
	uint32_t got = drd32(D_IPRIORITYR + base);
	report(ok && got == want,
	       "mmio-ipriority-byte: word write read back per byte; byte write to lane 2 -> word 0x%08x (expected 0x%08x)",
	       got, want);
	dwr32(D_IPRIORITYR + base, GIC_PRIO_DEFAULT * 0x01010101u);

	if (uni_raz) {
		note("mmio-itargetsr-byte: skipped (QEMU uniprocessor ITARGETSR is RAZ/WI)");
	} else {
		uint32_t m0 = gic_cpu_iface_mask(0), m1 = n > 1 ? gic_cpu_iface_mask(n - 1) : m0;
		dwr32(D_ITARGETSR + base, m0 | m1 << 8 | m0 << 16 | m1 << 24);
		ok = drd8(D_ITARGETSR + base) == m0 && drd8(D_ITARGETSR + base + 1) == m1 &&
		     drd8(D_ITARGETSR + base + 2) == m0 && drd8(D_ITARGETSR + base + 3) == m1;
		dwr8(D_ITARGETSR + base + 2, (uint8_t)m1);
		want = m0 | m1 << 8 | m1 << 16 | m1 << 24;
		got = drd32(D_ITARGETSR + base);
		report(ok && got == want,
		       "mmio-itargetsr-byte: word write read back per byte; byte write to lane 2 -> 0x%08x (expected 0x%08x)",
		       got, want);
		dwr32(D_ITARGETSR + base, m0 * 0x01010101u);
	}

	/* RAZ/WI beyond the implemented INTIDs */
	unsigned nr = 32 * (it_lines + 1);
	if (nr >= 1020) {
		note("mmio-raz-wi: skipped, TYPER says all 1020 INTIDs are implemented");
	} else {
		dwr32(D_ISENABLER + nr / 8, ~0u);
		dwr32(D_ISPENDR + nr / 8, ~0u);
		dwr8(D_IPRIORITYR + nr, 0xa0);
		dwr32(D_ICFGR + nr / 4, 0xaaaaaaaau);
		uint32_t e = drd32(D_ISENABLER + nr / 8), p = drd32(D_ISPENDR + nr / 8), pr = drd8(D_IPRIORITYR + nr),
			 cf = drd32(D_ICFGR + nr / 4);
		report(e == 0 && p == 0 && pr == 0 && cf == 0,
		       "mmio-raz-wi: INTID %u (first unimplemented): ISENABLER 0x%x ISPENDR 0x%x IPRIORITYR 0x%x ICFGR 0x%x, "
		       "all expected 0",
		       nr, e, p, pr, cf);
		dwr32(D_ICENABLER + nr / 8, ~0u);
		dwr32(D_ICPENDR + nr / 8, ~0u);
	}

	/* ICFGR: SGIs read-only edge; an SPI is writable */
	uint32_t cfg0 = drd32(D_ICFGR);
	dwr32(D_ICFGR, 0);
	uint32_t cfg0b = drd32(D_ICFGR);
	report(cfg0 == 0xaaaaaaaau && cfg0b == cfg0, "mmio-icfgr-sgi: ICFGR0 0x%08x (all edge), 0x%08x after writing 0",
	       cfg0, cfg0b);
	gic_set_config(spi, 1);
	int e1 = gic_get_config(spi);
	gic_set_config(spi, 0);
	int e0 = gic_get_config(spi);
	report(e1 == 1 && e0 == 0, "mmio-icfgr-spi: SPI %u config follows writes (edge %d, then level %d)", spi, e1, e0);

	/* pending state of a disabled level SPI set through ISPENDR */
	unsigned lvl = 45;
	gic_disable_irq(lvl);
	gic_set_config(lvl, 0);
	irq_enable(); /* a delivery would be an "unexpected interrupt" FAIL */
	gic_set_pending(lvl);
	delay_ms(5);
	int p1 = gic_is_pending(lvl);
	gic_clear_pending(lvl);
	int p0 = gic_is_pending(lvl);
	irq_disable();
	report(p1 && !p0, "mmio-ispendr-level-disabled: SPI %u (level, disabled) pending after ISPENDR (%d), clear after "
			  "ICPENDR (%d), never delivered",
	       lvl, p1, p0);

	/* ISACTIVER / ICACTIVER on an SPI and on a (banked) PPI */
	unsigned act_irqs[2] = {46, 20};
	for (unsigned i = 0; i < 2; i++) {
		unsigned id = act_irqs[i];
		gic_set_active(id);
		int a1 = gic_is_active(id);
		gic_clear_active(id);
		int a0 = gic_is_active(id);
		report(a1 && !a0, "mmio-isactiver-%s: INTID %u active after ISACTIVER (%d), inactive after ICACTIVER (%d)",
		       id < 32 ? "ppi" : "spi", id, a1, a0);
	}
}

/* ================================ spi (host-driven) ================================ */
#define SPI_EDGE 40
#define SPI_LEVEL 41
#define HOST_MS 30000
static volatile uint64_t spi_count[2];
static volatile uint32_t spi_iar[2];

static int spi_handler(struct irq_ctx *c)
{
	unsigned k = c->intid == SPI_LEVEL;
	spi_iar[k] = c->iar;
	atomic_add(&spi_count[k], 1);
	return IRQ_HANDLED; /* the test body EOIs when the protocol says so */
}

static void test_spi(void)
{
	gic_request_irq(SPI_EDGE, spi_handler, GIC_PRIO_DEFAULT, 1, 0);
	gic_request_irq(SPI_LEVEL, spi_handler, GIC_PRIO_DEFAULT, 0, 0);
	irq_enable();
	puts("READY spi");

	/* edge */
	puts("PULSE 40");
	int ok = wait_for(&spi_count[0], 1, HOST_MS);
	report(ok, "spi-edge-delivered: SPI 40 taken after PULSE 40 (%lu)", spi_count[0]);
	if (!ok)
		goto done;
	puts("ACK 40");
	report(gic_is_active(SPI_EDGE), "spi-edge-active: ISACTIVER shows SPI 40 active before EOI");
	puts("PULSE 40");
	ok = wait_pending(SPI_EDGE, 1, HOST_MS);
	report(ok, "spi-edge-pending-while-active: second edge latched (ISPENDR set) while active");
	delay_ms(20);
	report(spi_count[0] == 1, "spi-edge-held: not taken while the first is active (%lu)", spi_count[0]);
	gic_eoi(spi_iar[0]);
	ok = wait_for(&spi_count[0], 2, WAIT_MS);
	report(ok, "spi-edge-redelivered: the latched edge taken after EOI (%lu)", spi_count[0]);
	if (ok) {
		puts("ACK 40");
		gic_eoi(spi_iar[0]);
	}
	delay_ms(50);
	report(spi_count[0] == 2, "spi-edge-exact: %lu deliveries of SPI 40, expected 2", spi_count[0]);

	/* level, lowered before the EOI */
	puts("RAISE 41");
	ok = wait_for(&spi_count[1], 1, HOST_MS);
	report(ok, "spi-level-delivered: SPI 41 taken after RAISE 41 (%lu)", spi_count[1]);
	if (!ok)
		goto done;
	puts("ACK 41");
	puts("LOWER 41");
	ok = wait_pending(SPI_LEVEL, 0, HOST_MS);
	report(ok, "spi-level-pending-follows-line: ISPENDR[41] cleared once the host lowered the line");
	delay_ms(10);
	gic_eoi(spi_iar[1]);
	delay_ms(50);
	report(spi_count[1] == 1, "spi-level-low-not-redelivered: %lu delivery after EOI with the line low", spi_count[1]);

	/* level, still high at the EOI */
	puts("RAISE 41");
	ok = wait_for(&spi_count[1], 2, HOST_MS);
	report(ok, "spi-level-delivered-again: SPI 41 taken after the second RAISE 41 (%lu)", spi_count[1]);
	if (!ok)
		goto done;
	puts("ACK 41");
	report(gic_is_pending(SPI_LEVEL) && gic_is_active(SPI_LEVEL),
	       "spi-level-active-pending: line high while active reads pending+active");
	gic_eoi(spi_iar[1]);
	ok = wait_for(&spi_count[1], 3, WAIT_MS);
	report(ok, "spi-level-high-redelivered: EOI with the line high -> taken again (%lu)", spi_count[1]);
	if (ok) {
		puts("AGAIN 41");
		puts("LOWER 41");
		ok = wait_pending(SPI_LEVEL, 0, HOST_MS);
		report(ok, "spi-level-lowered: ISPENDR[41] cleared after LOWER 41");
		gic_eoi(spi_iar[1]);
	}
	delay_ms(50);
	report(spi_count[1] == 3, "spi-level-exact: %lu deliveries of SPI 41, expected 3", spi_count[1]);
done:
	puts("DONE spi");
	irq_disable();
	gic_disable_irq(SPI_EDGE);
	gic_disable_irq(SPI_LEVEL);
}

/* ================================ main ================================ */
static const struct {
	const char *name;
	void (*fn)(void);
	int by_default;
} tests[] = {
	{"ipi", test_ipi, 1}, {"active", test_active, 1}, {"priority", test_priority, 1},
	{"mmio", test_mmio, 1}, {"spi", test_spi, 0},
};
#define N_TESTS (sizeof(tests) / sizeof(tests[0]))

int main(void)
{
	is_qemu = rt_is_qemu();
	if (gic_init() != 0)
		return 1;
	int named = 0;
	for (unsigned i = 0; i < N_TESTS; i++)
		named |= bootarg_present(tests[i].name);
	note("GICv%d, %u INTIDs, %u CPUs; sub-tests: %s", gic_version(), gic_nr_irqs(), smp_num_cpus(),
	     named ? fdt_bootargs() : "ipi active priority mmio (default)");
	for (unsigned i = 0; i < N_TESTS; i++) {
		if (named ? bootarg_present(tests[i].name) : tests[i].by_default) {
			note("--- %s ---", tests[i].name);
			tests[i].fn();
		}
	}
	uint64_t sp = 0;
	for (unsigned i = 0; i < smp_num_cpus(); i++)
		sp += irq_spurious_count(i);
	if (sp)
		note("%lu spurious IAR reads (1023)", sp);
	return 0;
}
