/*
 * exceptions: synchronous exception entry as the architecture defines it.
 *
 * SVC, UDF and BRK are raised from EL1h (vector 0x200), EL1t (0x000) and EL0t (0x400); each
 * check compares ESR (EC, IL, ISS), ELR (SVC: next instruction; UDF/BRK: the instruction),
 * SPSR (M[4:0] and DAIF of the source) and the vector taken.  Then two synchronous external
 * aborts at the first address past the end of RAM: an instruction fetch and a 64-bit load.
 */
#include "runtime.h"

GUEST_NAME("exceptions");

#define SVC_IMM 0x1234
#define BRK_IMM 0x4321
#define ESR_IL (1UL << 25)
#define ESR_SVC ((uint64_t)EC_SVC64 << 26 | ESR_IL | SVC_IMM)
#define ESR_BRK ((uint64_t)EC_BRK64 << 26 | ESR_IL | BRK_IMM)
#define ESR_UDF ((uint64_t)EC_UNKNOWN << 26 | ESR_IL) /* ISS 0: the UDF imm16 is not reported */
#define ISS_FNV (1UL << 10)
#define ISS_WNR (1UL << 6)
#define FSC_SEA 0x10
#define SPSR_CHECKED 0x3df /* DAIF + M[4:0] */
#define MODE_EL0T 0x0
#define MODE_EL1T 0x4
#define MODE_EL1H 0x5

/* What the last synchronous exception looked like, as the handler saw it. */
static volatile struct {
	uint64_t count, vector, esr, elr, spsr, far;
} last;
static uint64_t fetch_target; /* the SEA fetch target: ELR there means "return to LR" */

static int on_sync(struct exc_frame *f)
{
	last.vector = f->vector;
	last.esr = f->esr;
	last.elr = f->elr;
	last.spsr = f->spsr;
	last.far = f->far;
	last.count++;
	if (f->elr == fetch_target) { /* whatever the fetch raised: resume after the call */
		f->elr = f->x[30];
		return 1;
	}
	switch (ESR_EC(f->esr)) {
	case EC_SVC64: /* ELR already points past the SVC */
		return 1;
	case EC_UNKNOWN:
	case EC_BRK64:
	case EC_DABT_CUR:
		f->elr += 4; /* these report the instruction itself */
		return 1;
	default:
		return 0;
	}
}

/* Each trigger returns the address of the instruction that raises the exception.  They are
 * plain functions so that the same code runs at EL1h, EL1t and EL0. */
static uint64_t trigger_svc(void)
{
	uint64_t site;
	__asm__ volatile("adr %0, 1f\n1: svc #%1" : "=&r"(site) : "i"(SVC_IMM) : "memory");
	return site;
}
static uint64_t trigger_udf(void)
{
	uint64_t site;
	__asm__ volatile("adr %0, 1f\n1: udf #0xbeef" : "=&r"(site) : : "memory");
	return site;
}
static uint64_t trigger_brk(void)
{
	uint64_t site;
	__asm__ volatile("adr %0, 1f\n1: brk #%1" : "=&r"(site) : "i"(BRK_IMM) : "memory");
	return site;
}

static uint64_t read_daif(void)
{
	uint64_t v;
	__asm__ volatile("mrs %0, daif" : "=r"(v));
	return v;
}

enum source { FROM_EL1H, FROM_EL1T, FROM_EL0 };
static const char *const source_name[] = {"el1h", "el1t", "el0"};
static const uint64_t source_vector[] = {VEC_CUR_SPX, VEC_CUR_SP0, VEC_LOWER_A64};
static const uint64_t source_mode[] = {MODE_EL1H, MODE_EL1T, MODE_EL0T};

static void check_one(const char *insn, uint64_t (*trigger)(void), enum source src, uint64_t exp_esr,
		      int elr_is_next)
{
	uint64_t before = last.count;
	/* EL0 runs with SPSR = 0 (DAIF clear); EL1 keeps whatever DAIF is current. */
	uint64_t daif = src == FROM_EL0 ? 0 : read_daif();
	uint64_t site = src == FROM_EL1H ? trigger() : src == FROM_EL1T ? run_el1t(trigger) : run_el0(trigger);
	uint64_t exp_elr = site + (elr_is_next ? 4 : 0);
	uint64_t exp_spsr = daif | source_mode[src];
	int ok = last.count == before + 1 && last.esr == exp_esr && last.elr == exp_elr &&
		 (last.spsr & SPSR_CHECKED) == exp_spsr && last.vector == source_vector[src];
	if (ok)
		report(1, "%s-%s", insn, source_name[src]);
	else
		report(0,
		       "%s-%s (got/expected) exceptions=%lu/1 vector=0x%lx/0x%lx esr=0x%lx/0x%lx "
		       "elr=0x%lx/0x%lx spsr=0x%lx/0x%lx",
		       insn, source_name[src], last.count - before, last.vector, source_vector[src], last.esr,
		       exp_esr, last.elr, exp_elr, last.spsr & SPSR_CHECKED, exp_spsr);
}

static void set_daif(uint64_t v) { __asm__ volatile("msr daif, %0" ::"r"(v) : "memory"); }

static void sea_fetch(uint64_t ram_end)
{
	uint64_t before = last.count;
	fetch_target = ram_end;
	/* Only x30 changes across this: the handler restores everything and returns to LR. */
	__asm__ volatile("blr %0" : : "r"(ram_end) : "x30", "memory");
	uint64_t esr = last.esr, fnv = esr & ISS_FNV;
	int ok = last.count == before + 1 && ESR_EC(esr) == EC_IABT_CUR && (esr & 0x3f) == FSC_SEA &&
		 last.elr == ram_end && (fnv || last.far == ram_end) && last.vector == VEC_CUR_SPX;
	report(ok, "sea-fetch esr=0x%lx (EC 0x%lx/0x21 IFSC 0x%lx/0x10) elr=0x%lx/0x%lx far=0x%lx%s",
	       esr, ESR_EC(esr), esr & 0x3f, last.elr, ram_end, last.far,
	       fnv ? " (FnV=1: FAR not checked)" : "");
}

static void sea_load(uint64_t ram_end)
{
	uint64_t before = last.count, site, val = 0;
	__asm__ volatile("adr %0, 1f\n1: ldr %1, [%2]" : "=&r"(site), "+r"(val) : "r"(ram_end) : "memory");
	uint64_t esr = last.esr, fnv = esr & ISS_FNV;
	int ok = last.count == before + 1 && ESR_EC(esr) == EC_DABT_CUR && (esr & 0x3f) == FSC_SEA &&
		 !(esr & ISS_WNR) && last.elr == site && (fnv || last.far == ram_end) &&
		 last.vector == VEC_CUR_SPX;
	report(ok, "sea-load esr=0x%lx (EC 0x%lx/0x25 DFSC 0x%lx/0x10 WnR %lu/0) elr=0x%lx/0x%lx far=0x%lx%s",
	       esr, ESR_EC(esr), esr & 0x3f, (esr >> 6) & 1, last.elr, site, last.far,
	       fnv ? " (FnV=1: FAR not checked)" : "");
}

int main(void)
{
	set_exception_hook(HOOK_SYNC_SPX, on_sync);
	set_exception_hook(HOOK_SYNC_SP0, on_sync);
	set_exception_hook(HOOK_SYNC_LOWER, on_sync);

	for (enum source s = FROM_EL1H; s <= FROM_EL0; s++) {
		check_one("svc", trigger_svc, s, ESR_SVC, 1);
		check_one("udf", trigger_udf, s, ESR_UDF, 0);
		check_one("brk", trigger_brk, s, ESR_BRK, 0);
	}

	/* SPSR must carry DAIF exactly, not just "all masked": D and I set, A and F clear. */
	uint64_t saved = read_daif();
	set_daif(0x280);
	check_one("svc-daif", trigger_svc, FROM_EL1H, ESR_SVC, 1);
	set_daif(saved);

	uint64_t ram_end = fdt_mem_base() + fdt_mem_size();
	printf("RAM 0x%lx..0x%lx; aborting at 0x%lx\n", fdt_mem_base(), ram_end, ram_end);
	sea_fetch(ram_end);
	sea_load(ram_end);
	return 0;
}
