/*
 * irqfd: the guest half of the host's irqfd / resamplefd test.
 *
 * SPI 42 (INTID 42, irqfd gsi 10) is configured edge, SPI 43 (INTID 43, gsi 11) level; both
 * enabled, priority 0xA0, targeted at CPU0.  The host says how many deliveries to expect
 * through the bootargs: "irqfd edge=N level=M" (decimal; absent = 0).
 *
 * Protocol (lines the guest prints; the host acts only after READY):
 *   irqfd: expecting edge=N level=M
 *   READY irqfd        SPIs configured and IRQs unmasked: the host may start signalling.
 *   IRQFD 42 <k>       printed from the handler for the k-th delivery of SPI 42, after the
 *                      acknowledge and before the EOI.  Edge: the host should signal the next
 *                      edge only after seeing the line for the previous one -- eventfd writes
 *                      that land before the injection work runs coalesce into one edge, and a
 *                      second edge while one is still pending merges with it (GIC semantics).
 *   IRQFD 43 <k>       the k-th delivery of SPI 43.  Level + resamplefd: the handler returns
 *                      and the runtime EOIs; the EOI lowers the line and signals the resamplefd,
 *                      and the host re-signals the irqfd while it has events left (M in all).
 *   COUNTS edge=<n> level=<m>   once both targets are reached, or after 30 s without any
 *                      new delivery (the timeout restarts on every delivery).
 *   ...50 ms later, PASS/FAIL per SPI (exact counts: extra deliveries in those 50 ms fail),
 *   then SUMMARY.
 * With the bootarg word "early" the GIC set-up keeps the SPIs' pending state, for a host that
 * signalled before the vGIC was initialised: those deliveries count like the others.
 * With no host (QEMU) run it with no bootargs or "edge=0 level=0": it passes at once.
 */
#include "runtime.h"

GUEST_NAME("irqfd");

#define SPI_EDGE 42
#define SPI_LEVEL 43
#define IDLE_TIMEOUT_MS 30000

static volatile uint64_t count[2];

static int handler(struct irq_ctx *c)
{
	unsigned k = c->intid == SPI_LEVEL;
	uint64_t n = atomic_add(&count[k], 1);
	printf("IRQFD %u %lu\n", c->intid, n);
	return IRQ_EOI;
}

int main(void)
{
	uint64_t want_edge = bootarg_uint("edge", 0), want_level = bootarg_uint("level", 0);
	if (gic_init_flags(bootarg_present("early") ? GIC_INIT_KEEP_PENDING : 0) != 0)
		return 1;
	printf("irqfd: expecting edge=%lu level=%lu\n", want_edge, want_level);
	gic_request_irq(SPI_EDGE, handler, GIC_PRIO_DEFAULT, 1, 0);
	gic_request_irq(SPI_LEVEL, handler, GIC_PRIO_DEFAULT, 0, 0);
	irq_enable();
	puts("READY irqfd");

	uint64_t seen = 0, deadline = deadline_after_ms(IDLE_TIMEOUT_MS);
	int timed_out = 0;
	while (atomic_load_acquire(&count[0]) < want_edge || atomic_load_acquire(&count[1]) < want_level) {
		uint64_t now_seen = atomic_load_acquire(&count[0]) + atomic_load_acquire(&count[1]);
		if (now_seen != seen) {
			seen = now_seen;
			deadline = deadline_after_ms(IDLE_TIMEOUT_MS);
		}
		if (deadline_passed(deadline)) {
			timed_out = 1;
			break;
		}
		cpu_relax();
	}
	printf("COUNTS edge=%lu level=%lu\n", atomic_load_acquire(&count[0]), atomic_load_acquire(&count[1]));
	delay_ms(50);
	irq_disable();
	gic_disable_irq(SPI_EDGE);
	gic_disable_irq(SPI_LEVEL);
	uint64_t e = count[0], l = count[1];
	if (timed_out)
		note("irqfd: no new delivery for %u s; gave up", IDLE_TIMEOUT_MS / 1000);
	report(e == want_edge, "irqfd-edge: SPI %u delivered %lu times, expected exactly %lu", SPI_EDGE, e, want_edge);
	report(l == want_level, "irqfd-level: SPI %u delivered %lu times, expected exactly %lu", SPI_LEVEL, l, want_level);
	return 0;
}
