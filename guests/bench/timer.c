/* bench: virtual-timer deadline latency and ticks per second. */
#include "bench.h"

#define WAIT_SLACK_MS 2000

static volatile uint64_t tcount;
static volatile uint64_t tcval, tperiod, tend;
static uint64_t lat[BENCH_MAX_SAMPLES], eoi_done[BENCH_MAX_SAMPLES];

/* ---- timer / timer-busy: CVAL = now + deadline; handler latency and EOI-done time ---- */
static int lat_handler(struct irq_ctx *c)
{
	uint64_t now = now_ticks();
	timer_set_ctl(TIMER_VIRT, 0);
	gic_eoi(c->iar);
	uint64_t done = now_ticks();
	uint64_t k = tcount;
	if (k < BENCH_MAX_SAMPLES) {
		lat[k] = now - tcval;
		eoi_done[k] = done - tcval;
	}
	atomic_store_release(&tcount, k + 1);
	return IRQ_HANDLED;
}

static int wait_tick(uint64_t want, int idle)
{
	if (idle)
		return wait_at_least(&tcount, want, bp.deadline_ms + WAIT_SLACK_MS, 1);
	irq_enable();
	int ok = wait_at_least(&tcount, want, bp.deadline_ms + WAIT_SLACK_MS, 0);
	irq_disable();
	return ok;
}

/* IRQs masked, the virtual timer's PPI enabled with `fn` as its handler, tick count reset,
 * the host's MARK for `op` printed; returns the PPI. */
static unsigned timer_window_begin(const char *op, irq_handler fn)
{
	unsigned ppi = timer_ppi(TIMER_VIRT);
	tcount = 0;
	irq_disable();
	irq_set_handler(ppi, fn);
	gic_enable_irq(ppi);
	mark_begin(op);
	return ppi;
}

void bench_timer_lat(int idle)
{
	const char *op = idle ? "timer" : "timer-busy";
	uint64_t want = idle ? bp.samples : (bp.samples + 1) / 2, done = 0, early = 0;
	unsigned ppi = timer_window_begin(op, lat_handler);
	for (uint64_t i = 0; i < want; i++) {
		tcval = now_ticks() + ticks_from_us(bp.deadline_ms * 1000);
		timer_set_cval(TIMER_VIRT, tcval);
		timer_set_ctl(TIMER_VIRT, CNT_CTL_ENABLE);
		if (!wait_tick(i + 1, idle))
			break;
		done++;
	}
	mark_end(op, done);
	timer_set_ctl(TIMER_VIRT, 0);
	gic_disable_irq(ppi);
	irq_set_handler(ppi, 0);
	uint64_t n = done < BENCH_MAX_SAMPLES ? done : BENCH_MAX_SAMPLES;
	for (uint64_t i = 0; i < n; i++)
		early += (int64_t)lat[i] < 0;
	bench_samples(idle ? "timer-lat" : "timer-busy-lat", "ticks", lat, n);
	bench_samples(idle ? "timer-eoi" : "timer-busy-eoi", "ticks", eoi_done, n);
	report(done == want && !early, "bench-%s: %lu of %lu deadlines of %lu ms taken, %lu early", op, done, want,
	       bp.deadline_ms, early);
}

/* ---- ticks-max: every tick re-arms the timer for "now", until the window ends (the
 * handler decides: on a core that takes the next interrupt right after ERET the window loop
 * would never run again) ---- */
static int max_handler(struct irq_ctx *c)
{
	(void)c;
	if (now_ticks() < tend)
		timer_set_tval(TIMER_VIRT, 0);
	else
		timer_set_ctl(TIMER_VIRT, 0);
	atomic_store_release(&tcount, tcount + 1);
	return IRQ_EOI;
}

/* ---- ticks-1khz: CVAL += 1 ms per tick; lateness per tick ---- */
static int khz_handler(struct irq_ctx *c)
{
	uint64_t now = now_ticks();
	(void)c;
	uint64_t k = tcount;
	if (k < BENCH_MAX_SAMPLES)
		lat[k] = now - tcval;
	tcval += tperiod;
	timer_set_cval(TIMER_VIRT, tcval);
	atomic_store_release(&tcount, k + 1);
	return IRQ_EOI;
}

/* Runs the timer with `fn` as its handler for bp.tick_ms, idle in WFI; ticks counted. */
static void tick_window(const char *op, irq_handler fn, uint64_t first_cval)
{
	unsigned ppi = timer_window_begin(op, fn);
	uint64_t t0 = now_ticks();
	tend = t0 + ticks_from_us(bp.tick_ms * 1000);
	tcval = first_cval ? t0 + first_cval : t0;
	timer_set_cval(TIMER_VIRT, tcval);
	timer_set_ctl(TIMER_VIRT, CNT_CTL_ENABLE);
	while (now_ticks() < tend)
		idle_step();
	timer_set_ctl(TIMER_VIRT, 0);
	uint64_t t1 = now_ticks(), n = tcount;
	mark_end(op, n);
	gic_disable_irq(ppi);
	irq_set_handler(ppi, 0);
	bench_rate(op, t1 - t0, n);
	report(n > 0, "bench-%s: %lu ticks in %lu ms", op, n, ticks_to_us(t1 - t0) / 1000);
}

void bench_ticks_max(void) { tick_window("ticks-max", max_handler, 0); }

void bench_ticks_1khz(void)
{
	tperiod = ticks_from_us(1000);
	tick_window("ticks-1khz", khz_handler, tperiod);
	uint64_t n = tcount < BENCH_MAX_SAMPLES ? tcount : BENCH_MAX_SAMPLES;
	bench_samples("ticks-1khz-late", "ticks", lat, n);
}
