/* GICv2 / GICv3 driver and the IRQ dispatcher (see gic.h). */
#include "runtime.h"

/* ---- registers ---- */
#define GICD_CTLR 0x000
#define GICD_TYPER 0x004
#define GICD_IGROUPR 0x080
#define GICD_ISENABLER 0x100
#define GICD_ICENABLER 0x180
#define GICD_ISPENDR 0x200
#define GICD_ICPENDR 0x280
#define GICD_ISACTIVER 0x300
#define GICD_ICACTIVER 0x380
#define GICD_IPRIORITYR 0x400
#define GICD_ITARGETSR 0x800
#define GICD_ICFGR 0xC00
#define GICD_SGIR 0xF00
#define GICD_CPENDSGIR 0xF10
#define GICD_SPENDSGIR 0xF20
#define GICD_IROUTER 0x6000
#define GICD_CTLR_RWP (1u << 31)
#define GICD_CTLR_ARE (1u << 4)
#define GICD_CTLR_ENABLE_G1 (1u << 1)
#define GICD_CTLR_ENABLE_G0 (1u << 0)

#define GICC_CTLR 0x00
#define GICC_PMR 0x04
#define GICC_BPR 0x08
#define GICC_IAR 0x0C
#define GICC_EOIR 0x10
#define GICC_RPR 0x14
#define GICC_HPPIR 0x18
#define GICC_DIR 0x1000
#define GICC_CTLR_EOIMODE (1u << 9)

#define GICR_CTLR 0x0000
#define GICR_TYPER 0x0008
#define GICR_WAKER 0x0014
#define GICR_SGI_OFFSET 0x10000
#define GICR_CTLR_RWP (1u << 3)
#define GICR_TYPER_VLPIS (1u << 1)
#define GICR_TYPER_LAST (1u << 4)
#define GICR_WAKER_PROCESSOR_SLEEP (1u << 1)
#define GICR_WAKER_CHILDREN_ASLEEP (1u << 2)

/* GICv3 CPU interface system registers, by encoding (no assembler support needed). */
#define ICC_PMR_EL1 "S3_0_C4_C6_0"
#define ICC_IAR1_EL1 "S3_0_C12_C12_0"
#define ICC_EOIR1_EL1 "S3_0_C12_C12_1"
#define ICC_HPPIR1_EL1 "S3_0_C12_C12_2"
#define ICC_BPR1_EL1 "S3_0_C12_C12_3"
#define ICC_CTLR_EL1 "S3_0_C12_C12_4"
#define ICC_SRE_EL1 "S3_0_C12_C12_5"
#define ICC_IGRPEN1_EL1 "S3_0_C12_C12_7"
#define ICC_DIR_EL1 "S3_0_C12_C11_1"
#define ICC_RPR_EL1 "S3_0_C12_C11_3"
#define ICC_SGI1R_EL1 "S3_0_C12_C11_5"
#define ICC_CTLR_EOIMODE (1u << 1)
#define ICC_CTLR_CBPR (1u << 0)

#define read_sysreg(name)                                                      \
	({                                                                     \
		uint64_t v__;                                                  \
		__asm__ volatile("mrs %0, " name : "=r"(v__)::"memory");      \
		v__;                                                           \
	})
#define write_sysreg(name, v) __asm__ volatile("msr " name ", %0" ::"r"((uint64_t)(v)) : "memory")
static inline void isb(void) { __asm__ volatile("isb" ::: "memory"); }

static inline uint32_t rd32(uint64_t a) { return *(volatile uint32_t *)a; }
static inline void wr32(uint64_t a, uint32_t v) { *(volatile uint32_t *)a = v; }
static inline uint8_t rd8(uint64_t a) { return *(volatile uint8_t *)a; }
static inline void wr8(uint64_t a, uint8_t v) { *(volatile uint8_t *)a = v; }

/* ---- state ---- */
#define MAX_RD_REGIONS 4
static int version;
static uint64_t dist, cpuif;
static uint64_t rd_region_base[MAX_RD_REGIONS], rd_region_size[MAX_RD_REGIONS];
static unsigned n_rd_regions;
static unsigned nr_irqs;
static uint64_t rd_base[RT_MAX_CPUS];
static uint32_t iface_mask[RT_MAX_CPUS];
static int eoimode[RT_MAX_CPUS];
static volatile uint64_t handlers[GIC_MAX_INTID];
static volatile uint64_t spurious[RT_MAX_CPUS], taken[RT_MAX_CPUS];

int gic_version(void) { return version; }
unsigned gic_nr_irqs(void) { return nr_irqs; }
uint64_t gic_dist_base(void) { return dist; }
uint64_t gic_cpuif_base(void) { return cpuif; }
uint64_t gic_rd_base(unsigned cpu) { return cpu < RT_MAX_CPUS ? rd_base[cpu] : 0; }
uint64_t gic_sgi_base(unsigned cpu) { return gic_rd_base(cpu) ? gic_rd_base(cpu) + GICR_SGI_OFFSET : 0; }
uint32_t gic_cpu_iface_mask(unsigned cpu) { return cpu < RT_MAX_CPUS ? iface_mask[cpu] : 0; }

int gic_cpu_of_iface(unsigned iface)
{
	for (unsigned i = 0; i < smp_num_cpus(); i++)
		if (iface_mask[i] == (1u << iface))
			return (int)i;
	return -1;
}

/* Spins until (read(a) & bit) == 0; 1 s guard, then a FAIL. */
static void wait_clear(uint64_t a, uint32_t bit, const char *what)
{
	uint64_t deadline = deadline_after_ms(1000);
	while (rd32(a) & bit) {
		if (deadline_passed(deadline)) {
			report(0, "gic: %s stuck (0x%x at 0x%lx)", what, rd32(a), a);
			return;
		}
		cpu_relax();
	}
}
static void wait_rwp_dist(void) { wait_clear(dist + GICD_CTLR, GICD_CTLR_RWP, "GICD_CTLR.RWP"); }
static void wait_rwp_rd(unsigned cpu) { wait_clear(rd_base[cpu] + GICR_CTLR, GICR_CTLR_RWP, "GICR_CTLR.RWP"); }

/* Base for the per-INTID registers of intid as seen by this CPU. */
static uint64_t bank(unsigned intid)
{
	if (version == 3 && intid < GIC_NR_PRIVATE)
		return rd_base[smp_cpu_index()] + GICR_SGI_OFFSET;
	return dist;
}

static void bit_write(uint64_t reg, unsigned intid)
{
	wr32(bank(intid) + reg + (intid / 32) * 4, 1u << (intid % 32));
}

static int bit_read(uint64_t reg, unsigned intid)
{
	return (rd32(bank(intid) + reg + (intid / 32) * 4) >> (intid % 32)) & 1;
}

static uint32_t aff32(uint64_t mpidr) { return (uint32_t)(((mpidr >> 32) & 0xff) << 24) | (uint32_t)(mpidr & 0xffffff); }

/* ---- discovery ---- */
static int probe(void)
{
	int node = fdt_find_compatible("arm,gic-v3");
	int v = 3;
	if (node < 0) {
		v = 2;
		node = fdt_find_compatible("arm,cortex-a15-gic");
		if (node < 0)
			node = fdt_find_compatible("arm,gic-400");
	}
	if (node < 0) {
		report(0, "gic: no arm,gic-v3 / arm,cortex-a15-gic node in the device tree");
		return -1;
	}
	int parent = fdt_parent_offset(node);
	unsigned ac = fdt_address_cells(parent), sc = fdt_size_cells(parent);
	int len;
	const uint8_t *reg = fdt_getprop(node, "reg", &len);
	unsigned entry = 4 * (ac + sc), n_entries = reg ? (unsigned)len / entry : 0;
	if (n_entries < 2) {
		report(0, "gic: GIC node has %u reg entries, need 2", n_entries);
		return -1;
	}
	dist = fdt_read_cells(reg, ac);
	if (v == 2) {
		cpuif = fdt_read_cells(reg + entry, ac);
	} else {
		const void *p = fdt_getprop(node, "#redistributor-regions", &len);
		unsigned n = (p && len == 4) ? (unsigned)fdt_read_cells(p, 1) : 1;
		if (n > MAX_RD_REGIONS)
			n = MAX_RD_REGIONS;
		if (n > n_entries - 1)
			n = n_entries - 1;
		for (unsigned i = 0; i < n; i++) {
			rd_region_base[i] = fdt_read_cells(reg + entry * (1 + i), ac);
			rd_region_size[i] = fdt_read_cells(reg + entry * (1 + i) + 4 * ac, sc);
		}
		n_rd_regions = n;
	}
	version = v;
	return 0;
}

static uint64_t find_rd(uint64_t mpidr)
{
	uint32_t want = aff32(mpidr);
	for (unsigned r = 0; r < n_rd_regions; r++) {
		uint64_t a = rd_region_base[r], end = a + rd_region_size[r];
		while (a < end) {
			uint32_t lo = rd32(a + GICR_TYPER), hi = rd32(a + GICR_TYPER + 4);
			if (hi == want)
				return a;
			if (lo & GICR_TYPER_LAST)
				break;
			a += (lo & GICR_TYPER_VLPIS) ? 0x40000 : 0x20000;
		}
	}
	return 0;
}

/* ---- initialisation ---- */
static int irq_dispatch(struct exc_frame *f);

static void dist_init_v2(unsigned flags)
{
	wr32(dist + GICD_CTLR, 0);
	uint32_t mask = rd8(dist + GICD_ITARGETSR); /* own interface; RAZ on a uniprocessor GIC */
	iface_mask[0] = mask ? mask : 1;
	for (unsigned i = 32; i < nr_irqs; i += 32) {
		wr32(dist + GICD_ICENABLER + i / 8, ~0u);
		if (!(flags & GIC_INIT_KEEP_PENDING))
			wr32(dist + GICD_ICPENDR + i / 8, ~0u);
		wr32(dist + GICD_ICACTIVER + i / 8, ~0u);
		wr32(dist + GICD_IGROUPR + i / 8, 0);
	}
	for (unsigned i = 32; i < nr_irqs; i += 4) {
		wr32(dist + GICD_IPRIORITYR + i, GIC_PRIO_DEFAULT * 0x01010101u);
		wr32(dist + GICD_ITARGETSR + i, iface_mask[0] * 0x01010101u);
	}
	for (unsigned i = 32; i < nr_irqs; i += 16)
		wr32(dist + GICD_ICFGR + i / 4, 0); /* level, like Linux */
	wr32(dist + GICD_CTLR, GICD_CTLR_ENABLE_G0);
}

static void dist_init_v3(unsigned flags)
{
	wr32(dist + GICD_CTLR, 0);
	wait_rwp_dist();
	wr32(dist + GICD_CTLR, GICD_CTLR_ARE);
	wait_rwp_dist();
	uint32_t boot = aff32(smp_cpu_mpidr(0));
	for (unsigned i = 32; i < nr_irqs; i += 32) {
		wr32(dist + GICD_IGROUPR + i / 8, ~0u);
		wr32(dist + GICD_ICENABLER + i / 8, ~0u);
		if (!(flags & GIC_INIT_KEEP_PENDING))
			wr32(dist + GICD_ICPENDR + i / 8, ~0u);
		wr32(dist + GICD_ICACTIVER + i / 8, ~0u);
	}
	for (unsigned i = 32; i < nr_irqs; i += 4)
		wr32(dist + GICD_IPRIORITYR + i, GIC_PRIO_DEFAULT * 0x01010101u);
	for (unsigned i = 32; i < nr_irqs; i += 16)
		wr32(dist + GICD_ICFGR + i / 4, 0);
	for (unsigned i = 32; i < nr_irqs; i++) {
		wr32(dist + GICD_IROUTER + 8 * i, boot & 0xffffff);
		wr32(dist + GICD_IROUTER + 8 * i + 4, boot >> 24);
	}
	wait_rwp_dist();
	wr32(dist + GICD_CTLR, GICD_CTLR_ARE | GICD_CTLR_ENABLE_G1 | GICD_CTLR_ENABLE_G0);
	wait_rwp_dist();
}

int gic_cpu_init(void)
{
	unsigned cpu = smp_cpu_index();
	if (!version) {
		report(0, "gic: gic_cpu_init on cpu%u before gic_init", cpu);
		return -1;
	}
	eoimode[cpu] = 0;
	if (version == 2) {
		uint32_t mask = rd8(dist + GICD_ITARGETSR);
		iface_mask[cpu] = mask ? mask : (1u << cpu);
		wr32(dist + GICD_ICENABLER, 0xffff0000u);
		wr32(dist + GICD_ISENABLER, 0x0000ffffu);
		wr32(dist + GICD_ICACTIVER, ~0u);
		wr32(dist + GICD_ICPENDR, ~0u);
		for (unsigned i = 0; i < 4; i++)
			wr32(dist + GICD_CPENDSGIR + 4 * i, ~0u);
		wr32(dist + GICD_IGROUPR, 0);
		for (unsigned i = 0; i < GIC_NR_PRIVATE; i += 4)
			wr32(dist + GICD_IPRIORITYR + i, GIC_PRIO_DEFAULT * 0x01010101u);
		wr32(cpuif + GICC_PMR, GIC_PMR_DEFAULT);
		wr32(cpuif + GICC_BPR, 0);
		wr32(cpuif + GICC_CTLR, 1); /* EnableGrp0; FIQEn = 0: group 0 is signalled as IRQ */
		return 0;
	}
	uint64_t rd = find_rd(read_mpidr());
	if (!rd) {
		report(0, "gic: no redistributor for cpu%u (MPIDR 0x%lx)", cpu, read_mpidr());
		return -1;
	}
	rd_base[cpu] = rd;
	wr32(rd + GICR_WAKER, rd32(rd + GICR_WAKER) & ~GICR_WAKER_PROCESSOR_SLEEP);
	wait_clear(rd + GICR_WAKER, GICR_WAKER_CHILDREN_ASLEEP, "GICR_WAKER.ChildrenAsleep");
	uint64_t sgi = rd + GICR_SGI_OFFSET;
	wr32(sgi + GICD_IGROUPR, ~0u);
	wr32(sgi + GICD_ICENABLER, 0xffff0000u);
	wr32(sgi + GICD_ICPENDR, ~0u);
	wr32(sgi + GICD_ICACTIVER, ~0u);
	for (unsigned i = 0; i < GIC_NR_PRIVATE; i += 4)
		wr32(sgi + GICD_IPRIORITYR + i, GIC_PRIO_DEFAULT * 0x01010101u);
	wait_rwp_rd(cpu);
	wr32(sgi + GICD_ISENABLER, 0x0000ffffu);

	write_sysreg(ICC_SRE_EL1, read_sysreg(ICC_SRE_EL1) | 1);
	isb();
	if (!(read_sysreg(ICC_SRE_EL1) & 1)) {
		report(0, "gic: ICC_SRE_EL1.SRE reads 0 on cpu%u: no system register interface", cpu);
		return -1;
	}
	write_sysreg(ICC_PMR_EL1, GIC_PMR_DEFAULT);
	write_sysreg(ICC_BPR1_EL1, 0);
	write_sysreg(ICC_CTLR_EL1, read_sysreg(ICC_CTLR_EL1) & ~(uint64_t)(ICC_CTLR_EOIMODE | ICC_CTLR_CBPR));
	write_sysreg(ICC_IGRPEN1_EL1, 1);
	isb();
	return 0;
}

int gic_init(void) { return gic_init_flags(0); }

int gic_init_flags(unsigned flags)
{
	if (probe() != 0)
		return -1;
	uint32_t typer = rd32(dist + GICD_TYPER);
	nr_irqs = 32 * ((typer & 0x1f) + 1);
	if (nr_irqs > GIC_MAX_INTID)
		nr_irqs = GIC_MAX_INTID;
	set_exception_hook(HOOK_IRQ, irq_dispatch);
	if (version == 2)
		dist_init_v2(flags);
	else
		dist_init_v3(flags);
	return gic_cpu_init();
}

/* ---- per-INTID ---- */
void gic_enable_irq(unsigned intid) { bit_write(GICD_ISENABLER, intid); }

void gic_disable_irq(unsigned intid)
{
	bit_write(GICD_ICENABLER, intid);
	if (version == 3) {
		if (intid < GIC_NR_PRIVATE)
			wait_rwp_rd(smp_cpu_index());
		else
			wait_rwp_dist();
	}
}

int gic_is_enabled(unsigned intid) { return bit_read(GICD_ISENABLER, intid); }
void gic_set_priority(unsigned intid, uint8_t prio) { wr8(bank(intid) + GICD_IPRIORITYR + intid, prio); }
uint8_t gic_get_priority(unsigned intid) { return rd8(bank(intid) + GICD_IPRIORITYR + intid); }

void gic_set_config(unsigned intid, int edge)
{
	uint64_t a = bank(intid) + GICD_ICFGR + (intid / 16) * 4;
	unsigned shift = 2 * (intid % 16) + 1;
	uint32_t v = rd32(a);
	v = edge ? (v | (1u << shift)) : (v & ~(1u << shift));
	wr32(a, v);
}

int gic_get_config(unsigned intid)
{
	return (rd32(bank(intid) + GICD_ICFGR + (intid / 16) * 4) >> (2 * (intid % 16) + 1)) & 1;
}

void gic_set_target(unsigned intid, unsigned cpu)
{
	if (intid < GIC_NR_PRIVATE || cpu >= smp_num_cpus())
		return;
	if (version == 2) {
		wr8(dist + GICD_ITARGETSR + intid, (uint8_t)(iface_mask[cpu] ? iface_mask[cpu] : 1u << cpu));
	} else {
		uint32_t a = aff32(smp_cpu_mpidr(cpu));
		wr32(dist + GICD_IROUTER + 8 * intid, a & 0xffffff);
		wr32(dist + GICD_IROUTER + 8 * intid + 4, a >> 24);
	}
}

void gic_set_pending(unsigned intid)
{
	if (version == 2 && intid < GIC_NR_SGIS)
		wr8(dist + GICD_SPENDSGIR + intid, (uint8_t)iface_mask[smp_cpu_index()]);
	else
		bit_write(GICD_ISPENDR, intid);
}

void gic_clear_pending(unsigned intid)
{
	if (version == 2 && intid < GIC_NR_SGIS)
		wr8(dist + GICD_CPENDSGIR + intid, 0xff);
	else
		bit_write(GICD_ICPENDR, intid);
}

int gic_is_pending(unsigned intid) { return bit_read(GICD_ISPENDR, intid); }
void gic_set_active(unsigned intid) { bit_write(GICD_ISACTIVER, intid); }
void gic_clear_active(unsigned intid) { bit_write(GICD_ICACTIVER, intid); }
int gic_is_active(unsigned intid) { return bit_read(GICD_ISACTIVER, intid); }

void gic_setup_irq(unsigned intid, uint8_t prio, int edge, unsigned target_cpu)
{
	gic_set_priority(intid, prio);
	if (intid >= GIC_NR_PRIVATE) {
		gic_set_config(intid, edge);
		gic_set_target(intid, target_cpu);
	}
	gic_enable_irq(intid);
}

/* ---- SGIs ---- */
void gic_send_sgi_mask(unsigned intid, uint32_t cpu_mask)
{
	unsigned n = smp_num_cpus();
	dsb_sy(); /* make the sender's earlier writes visible before the interrupt */
	if (version == 2) {
		uint32_t targets = 0;
		for (unsigned i = 0; i < n; i++)
			if (cpu_mask & (1u << i))
				targets |= iface_mask[i] ? iface_mask[i] : 1u << i;
		wr32(dist + GICD_SGIR, ((targets & 0xff) << 16) | (intid & 0xf));
		return;
	}
	uint32_t todo = cpu_mask & ((1u << n) - 1);
	while (todo) {
		unsigned first = (unsigned)__builtin_ctz(todo);
		uint64_t m = smp_cpu_mpidr(first);
		uint64_t cluster = m & 0xff00ffff00UL, rs = (m & 0xff) >> 4;
		uint64_t list = 0;
		for (unsigned i = first; i < n; i++) {
			uint64_t mi = smp_cpu_mpidr(i);
			if ((todo & (1u << i)) && (mi & 0xff00ffff00UL) == cluster && ((mi & 0xff) >> 4) == rs) {
				list |= 1UL << (mi & 0xf);
				todo &= ~(1u << i);
			}
		}
		uint64_t v = (((m >> 32) & 0xff) << 48) | (rs << 44) | (((m >> 16) & 0xff) << 32) |
			     ((uint64_t)(intid & 0xf) << 24) | (((m >> 8) & 0xff) << 16) | list;
		write_sysreg(ICC_SGI1R_EL1, v);
		isb();
	}
}

void gic_send_sgi(unsigned intid, unsigned cpu) { gic_send_sgi_mask(intid, 1u << cpu); }

void gic_send_sgi_self(unsigned intid)
{
	if (version == 2) {
		dsb_sy();
		wr32(dist + GICD_SGIR, (2u << 24) | (intid & 0xf));
	} else {
		gic_send_sgi_mask(intid, 1u << smp_cpu_index());
	}
}

void gic_send_sgi_others(unsigned intid)
{
	dsb_sy();
	if (version == 2) {
		wr32(dist + GICD_SGIR, (1u << 24) | (intid & 0xf));
	} else {
		write_sysreg(ICC_SGI1R_EL1, (1UL << 40) | ((uint64_t)(intid & 0xf) << 24));
		isb();
	}
}

/* ---- CPU interface ---- */
uint32_t gic_ack(void)
{
	uint32_t iar;
	if (version == 2) {
		iar = rd32(cpuif + GICC_IAR);
	} else {
		iar = (uint32_t)read_sysreg(ICC_IAR1_EL1);
		dsb_sy();
	}
	return iar;
}

uint32_t gic_iar_intid(uint32_t iar) { return version == 2 ? (iar & 0x3ff) : (iar & 0xffffff); }
uint32_t gic_iar_src(uint32_t iar) { return version == 2 ? (iar >> 10) & 7 : 0; }

void gic_eoi(uint32_t iar)
{
	if (version == 2) {
		wr32(cpuif + GICC_EOIR, iar);
	} else {
		write_sysreg(ICC_EOIR1_EL1, iar);
		isb();
	}
}

void gic_dir(uint32_t iar)
{
	if (version == 2) {
		wr32(cpuif + GICC_DIR, iar);
	} else {
		write_sysreg(ICC_DIR_EL1, iar);
		isb();
	}
}

void gic_set_eoimode(int split)
{
	unsigned cpu = smp_cpu_index();
	if (version == 2) {
		uint32_t c = rd32(cpuif + GICC_CTLR);
		wr32(cpuif + GICC_CTLR, split ? (c | GICC_CTLR_EOIMODE) : (c & ~GICC_CTLR_EOIMODE));
	} else {
		uint64_t c = read_sysreg(ICC_CTLR_EL1);
		write_sysreg(ICC_CTLR_EL1, split ? (c | ICC_CTLR_EOIMODE) : (c & ~(uint64_t)ICC_CTLR_EOIMODE));
		isb();
	}
	eoimode[cpu] = split != 0;
}

int gic_get_eoimode(void)
{
	if (version == 2)
		return (rd32(cpuif + GICC_CTLR) & GICC_CTLR_EOIMODE) != 0;
	return (read_sysreg(ICC_CTLR_EL1) & ICC_CTLR_EOIMODE) != 0;
}

void gic_set_pmr(uint8_t pmr)
{
	if (version == 2) {
		wr32(cpuif + GICC_PMR, pmr);
	} else {
		write_sysreg(ICC_PMR_EL1, pmr);
		isb();
		dsb_sy();
	}
}

uint8_t gic_get_pmr(void)
{
	return (uint8_t)(version == 2 ? rd32(cpuif + GICC_PMR) : read_sysreg(ICC_PMR_EL1));
}

void gic_set_bpr(unsigned bpr)
{
	if (version == 2) {
		wr32(cpuif + GICC_BPR, bpr & 7);
	} else {
		write_sysreg(ICC_BPR1_EL1, bpr & 7);
		isb();
	}
}

unsigned gic_get_bpr(void) { return (unsigned)(version == 2 ? rd32(cpuif + GICC_BPR) : read_sysreg(ICC_BPR1_EL1)) & 7; }

uint8_t gic_running_priority(void)
{
	return (uint8_t)(version == 2 ? rd32(cpuif + GICC_RPR) : read_sysreg(ICC_RPR_EL1));
}

uint32_t gic_hppir(void) { return (uint32_t)(version == 2 ? rd32(cpuif + GICC_HPPIR) : read_sysreg(ICC_HPPIR1_EL1)); }

/* ---- dispatch ---- */
void irq_set_handler(unsigned intid, irq_handler fn)
{
	if (intid < GIC_MAX_INTID)
		atomic_store_release(&handlers[intid], (uint64_t)fn);
}

uint64_t irq_spurious_count(unsigned cpu) { return cpu < RT_MAX_CPUS ? atomic_load_acquire(&spurious[cpu]) : 0; }
uint64_t irq_taken_count(unsigned cpu) { return cpu < RT_MAX_CPUS ? atomic_load_acquire(&taken[cpu]) : 0; }

static int irq_dispatch(struct exc_frame *f)
{
	unsigned cpu = smp_cpu_index();
	uint32_t iar = gic_ack();
	uint32_t intid = gic_iar_intid(iar);
	if (intid >= GIC_MAX_INTID) {
		atomic_add(&spurious[cpu], 1);
		return 1;
	}
	atomic_add(&taken[cpu], 1);
	struct irq_ctx c = {
		.intid = intid,
		.src = gic_iar_src(iar),
		.src_cpu = -1,
		.iar = iar,
		.cpu = cpu,
		.frame = f,
	};
	if (version == 2 && intid < GIC_NR_SGIS)
		c.src_cpu = gic_cpu_of_iface(c.src);
	irq_handler fn = (irq_handler)atomic_load_acquire(&handlers[intid]);
	int r = IRQ_EOI;
	if (fn) {
		r = fn(&c);
	} else {
		report(0, "unexpected interrupt INTID %u on cpu%u (no handler): disabled", intid, cpu);
		gic_disable_irq(intid);
	}
	irq_disable(); /* a nesting handler re-enabled IRQs; the frame restore must not be interrupted */
	if (r == IRQ_EOI) {
		gic_eoi(iar);
		if (eoimode[cpu])
			gic_dir(iar);
	}
	return 1;
}

/* ---- timers (timer.h) ---- */
static volatile uint64_t timer_ppis[2];

unsigned timer_ppi(enum timer_id t)
{
	uint64_t v = atomic_load_acquire(&timer_ppis[t]);
	if (!v) {
		int node = fdt_find_compatible("arm,armv8-timer");
		if (node < 0)
			node = fdt_find_compatible("arm,armv7-timer");
		int intid = fdt_irq_intid(node, t == TIMER_VIRT ? 2 : 1);
		v = intid >= 16 && intid < 32 ? (uint64_t)intid
					      : (t == TIMER_VIRT ? TIMER_PPI_VIRT_DEFAULT : TIMER_PPI_PHYS_DEFAULT);
		atomic_store_release(&timer_ppis[t], v);
	}
	return (unsigned)v;
}

const char *timer_name(enum timer_id t) { return t == TIMER_VIRT ? "vtimer" : "ptimer"; }
uint64_t ticks_from_us(uint64_t us) { return counter_freq() * us / 1000000; }
uint64_t ticks_to_us(uint64_t ticks) { return ticks * 1000000 / counter_freq(); }

void timer_arm_ms(enum timer_id t, uint64_t ms)
{
	timer_set_cval(t, timer_counter(t) + ticks_from_us(ms * 1000));
	timer_set_ctl(t, CNT_CTL_ENABLE);
}

void gic_request_irq(unsigned intid, irq_handler fn, uint8_t prio, int edge, unsigned target_cpu)
{
	irq_set_handler(intid, fn);
	gic_setup_irq(intid, prio, edge, target_cpu);
}
