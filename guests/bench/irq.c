/* bench: GIC CPU-interface costs, self-SGIs and the CPU0 <-> CPU1 IPI ping-pong. */
#include "bench.h"

#define SGI_SELF 3
#define SGI_PING 1
#define SGI_PONG 2
#define WAIT_MS 5000

/* ---- ackeoi: IAR read and EOIR write of a pending self-SGI, IRQs masked ---- */
static volatile uint64_t stray;

static int count_stray(struct irq_ctx *c)
{
	(void)c;
	atomic_add(&stray, 1);
	return IRQ_EOI;
}

void bench_ack_eoi(void)
{
	uint64_t ack = 0, eoi = 0, done = 0, spurious = 0;
	irq_set_handler(SGI_SELF, count_stray);
	irq_disable();
	mark_begin("ackeoi");
	for (uint64_t i = 0; i < bp.nirq; i++) {
		gic_send_sgi_self(SGI_SELF);
		uint64_t t0 = now_ticks();
		uint32_t iar = gic_ack();
		uint64_t t1 = now_ticks();
		if (gic_iar_intid(iar) != SGI_SELF) {
			spurious++;
			if (gic_iar_intid(iar) < GIC_MAX_INTID)
				gic_eoi(iar);
			continue;
		}
		gic_eoi(iar);
		uint64_t t2 = now_ticks();
		ack += t1 - t0;
		eoi += t2 - t1;
		done++;
	}
	mark_end("ackeoi", done);
	bench_cost("ack", ack, done);
	bench_cost("eoi", eoi, done);
	irq_enable();
	delay_us(100);
	irq_disable();
	report(done == bp.nirq && !stray, "bench-ackeoi: %lu IAR reads returned the pending SGI, %lu spurious, %lu taken",
	       done, spurious, stray);
	irq_set_handler(SGI_SELF, 0);
}

/* ---- sgi: the whole self-IPI round trip through the IRQ exception ---- */
static volatile uint64_t sgi_count;

static int sgi_handler(struct irq_ctx *c)
{
	(void)c;
	atomic_store_release(&sgi_count, sgi_count + 1);
	return IRQ_EOI;
}

void bench_sgi_self(void)
{
	uint64_t done = 0;
	sgi_count = 0;
	irq_set_handler(SGI_SELF, sgi_handler);
	irq_enable();
	mark_begin("sgi");
	uint64_t t0 = now_ticks();
	for (uint64_t i = 0; i < bp.nirq; i++) {
		gic_send_sgi_self(SGI_SELF);
		if (!wait_at_least(&sgi_count, i + 1, WAIT_MS, 0))
			break;
		done++;
	}
	uint64_t t1 = now_ticks();
	mark_end("sgi", done);
	irq_disable();
	bench_cost("sgi", t1 - t0, done);
	report(done == bp.nirq && sgi_count == done, "bench-sgi: %lu of %lu self-SGIs taken", sgi_count, bp.nirq);
	irq_set_handler(SGI_SELF, 0);
}

/* ---- ipi: ping-pong between CPU0 and CPU1, both waiting in WFI ---- */
static volatile uint64_t ping_count, pong_count, ipi_done, ipi_ready;
static volatile uint64_t t_send;
static uint64_t lat[BENCH_MAX_SAMPLES], rt[BENCH_MAX_SAMPLES];

static int ping_handler(struct irq_ctx *c) /* CPU1 */
{
	uint64_t now = now_ticks();
	(void)c;
	if (atomic_load_acquire(&ipi_done))
		return IRQ_EOI;
	uint64_t k = ping_count;
	if (k < BENCH_MAX_SAMPLES)
		lat[k] = now - atomic_load_acquire(&t_send);
	atomic_store_release(&ping_count, k + 1);
	gic_send_sgi(SGI_PONG, 0);
	return IRQ_EOI;
}

static int pong_handler(struct irq_ctx *c) /* CPU0 */
{
	uint64_t now = now_ticks();
	(void)c;
	uint64_t k = pong_count;
	if (k < BENCH_MAX_SAMPLES)
		rt[k] = now - atomic_load_acquire(&t_send);
	atomic_store_release(&pong_count, k + 1);
	return IRQ_EOI;
}

static void ipi_secondary(unsigned cpu)
{
	(void)cpu;
	int ok = gic_cpu_init() == 0;
	irq_disable();
	atomic_store_release(&ipi_ready, ok ? 1 : 2);
	uint64_t deadline = deadline_after_ms(RT_WAIT_TIMEOUT_MS);
	while (!atomic_load_acquire(&ipi_done) && !deadline_passed(deadline))
		idle_step();
}

void bench_ipi(void)
{
	if (smp_num_cpus() < 2) {
		note("bench-ipi skipped: needs 2 CPUs");
		return;
	}
	ping_count = pong_count = ipi_done = ipi_ready = 0;
	irq_set_handler(SGI_PING, ping_handler);
	irq_set_handler(SGI_PONG, pong_handler);
	if (cpu_on(1, ipi_secondary) != PSCI_SUCCESS || !wait_at_least(&ipi_ready, 1, WAIT_MS, 0) || ipi_ready != 1) {
		report(0, "bench-ipi: CPU1 did not come up");
		return;
	}
	irq_disable();
	uint64_t done = 0;
	mark_begin("ipi");
	uint64_t t0 = now_ticks();
	for (uint64_t i = 0; i < bp.ipi; i++) {
		atomic_store_release(&t_send, now_ticks());
		gic_send_sgi(SGI_PING, 1);
		if (!wait_at_least(&pong_count, i + 1, WAIT_MS, 1))
			break;
		done++;
	}
	uint64_t t1 = now_ticks();
	mark_end("ipi", done);
	atomic_store_release(&ipi_done, 1);
	gic_send_sgi(SGI_PING, 1); /* wake CPU1 so it sees ipi_done */
	wait_cpu_off(1);
	bench_cost("ipi-rt", t1 - t0, done);
	uint64_t n = done < BENCH_MAX_SAMPLES ? done : BENCH_MAX_SAMPLES;
	bench_samples("ipi-lat", "ticks", lat, n);
	bench_samples("ipi-rt", "ticks", rt, n);
	report(done == bp.ipi && ping_count == done, "bench-ipi: %lu of %lu ping-pong rounds, %lu pings taken", done,
	       bp.ipi, ping_count);
	irq_set_handler(SGI_PING, 0);
	irq_set_handler(SGI_PONG, 0);
}
