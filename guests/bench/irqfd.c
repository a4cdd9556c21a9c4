/*
 * bench irqfd: SPIs driven by the host through irqfds (softkvm's in-kernel irqchip only).
 *
 *   irqfd-edge=N   SPI 42 (irqfd gsi 10), edge.  After "READY irqfd-edge" the host sends N
 *                  edges, one outstanding at a time: the handler acknowledges each delivery by
 *                  writing its count to the 32-bit `doorbell=` register (a host device), and
 *                  the host sends the next edge then.  Rate = deliveries between the first and
 *                  the last handler entry.
 *   irqfd-level=N  SPI 43 (gsi 11), level with a resamplefd.  After "READY irqfd-level" the
 *                  host asserts the line; each EOI lowers it and signals the resamplefd, and
 *                  the host asserts it again until N deliveries.
 *   irqfd-lat=N    SPI 44 (gsi 12), edge.  After "READY irqfd-lat" the host writes the eventfd
 *                  N times, noting CLOCK_MONOTONIC before each write; the handler notes
 *                  CNTPCT_EL0 (no offset: CLOCK_MONOTONIC / 16 on softkvm), then writes the
 *                  doorbell at offset 4, after which the host waits 1-3 ms and writes again
 *                  (no two writes coalesce).  The raw values: "SAMPLES irqfd-lat pct ...".
 * The CPU waits in WFI throughout; a phase gives up after 30 s without a new delivery.
 */
#include "bench.h"

#define SPI_EDGE 42
#define SPI_LEVEL 43
#define SPI_LAT 44
#define IDLE_TIMEOUT_MS 30000

struct phase {
	volatile uint64_t count;
	volatile uint64_t first, last;
};
static struct phase edge, level, lat;
static uint64_t pct[BENCH_MAX_SAMPLES];

static void note_delivery(struct phase *p, uint64_t now)
{
	uint64_t k = p->count;
	if (k == 0)
		p->first = now;
	p->last = now;
	atomic_store_release(&p->count, k + 1);
}

static int edge_handler(struct irq_ctx *c)
{
	(void)c;
	note_delivery(&edge, now_ticks());
	if (bp.doorbell)
		*(volatile uint32_t *)bp.doorbell = (uint32_t)edge.count;
	return IRQ_EOI;
}

static int level_handler(struct irq_ctx *c)
{
	(void)c;
	note_delivery(&level, now_ticks());
	return IRQ_EOI;
}

static int lat_handler(struct irq_ctx *c)
{
	uint64_t now = timer_counter(TIMER_PHYS);
	(void)c;
	if (lat.count < BENCH_MAX_SAMPLES)
		pct[lat.count] = now;
	note_delivery(&lat, now);
	if (bp.doorbell)
		*(volatile uint32_t *)(bp.doorbell + 4) = (uint32_t)lat.count;
	return IRQ_EOI;
}

/* Idles until p->count >= want; the timeout restarts on every delivery. */
static void wait_progress(struct phase *p, uint64_t want)
{
	uint64_t seen = 0, deadline = deadline_after_ms(IDLE_TIMEOUT_MS);
	while (atomic_load_acquire(&p->count) < want && !deadline_passed(deadline)) {
		if (p->count != seen) {
			seen = p->count;
			deadline = deadline_after_ms(IDLE_TIMEOUT_MS);
		}
		idle_step();
	}
}

static void run_phase(const char *op, struct phase *p, uint64_t want)
{
	if (!want)
		return;
	mark_begin(op);
	printf("READY %s\n", op);
	wait_progress(p, want);
	mark_end(op, p->count);
	if (p->count > 1)
		bench_rate(op, p->last - p->first, p->count - 1);
	report(p->count == want, "bench-%s: %lu of %lu deliveries", op, p->count, want);
}

void bench_irqfd(void)
{
	gic_request_irq(SPI_EDGE, edge_handler, GIC_PRIO_DEFAULT, 1, 0);
	gic_request_irq(SPI_LEVEL, level_handler, GIC_PRIO_DEFAULT, 0, 0);
	gic_request_irq(SPI_LAT, lat_handler, GIC_PRIO_DEFAULT, 1, 0);
	irq_disable();
	run_phase("irqfd-edge", &edge, bp.irqfd_edge);
	run_phase("irqfd-level", &level, bp.irqfd_level);
	run_phase("irqfd-lat", &lat, bp.irqfd_lat);
	if (bp.irqfd_lat)
		bench_samples("irqfd-lat", "pct", pct, lat.count < BENCH_MAX_SAMPLES ? lat.count : BENCH_MAX_SAMPLES);
	gic_disable_irq(SPI_EDGE);
	gic_disable_irq(SPI_LEVEL);
	gic_disable_irq(SPI_LAT);
	if (!bp.irqfd_edge && !bp.irqfd_level && !bp.irqfd_lat)
		report(1, "bench-irqfd: nothing asked (irqfd-edge=, irqfd-level=, irqfd-lat=)");
}
