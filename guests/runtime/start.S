/*
 * Entry points.  Both run at EL1h with the MMU off; nothing here may touch memory through a
 * stack before SP is set.
 *   _start:          boot CPU; x0 = DTB address (softkvm) or 0 (QEMU -kernel ELF).
 *   secondary_entry: PSCI CPU_ON target; x0 = context id = logical CPU index.
 */
#define RT_STACK_SIZE (16 * 1024)
#define RT_EL0_STACK_SIZE (8 * 1024)
#define RT_MAX_CPUS 8

	.section .text.boot, "ax"
	.global _start
	.type _start, %function
_start:
	mov	x19, x0
	/* Boot CPU: stack 0 (logical index 0 is the boot CPU by definition). */
	adrp	x1, rt_stacks
	add	x1, x1, :lo12:rt_stacks
	mov	x2, #RT_STACK_SIZE
	add	sp, x1, x2
	adrp	x1, rt_vectors
	add	x1, x1, :lo12:rt_vectors
	msr	vbar_el1, x1
	isb
	/* .bss is zeroed here rather than trusted from the loader: QEMU and softkvm both zero
	 * it, but a raw-binary load would not. */
	adrp	x1, __bss_start
	add	x1, x1, :lo12:__bss_start
	adrp	x2, __bss_end
	add	x2, x2, :lo12:__bss_end
1:	cmp	x1, x2
	b.hs	2f
	str	xzr, [x1], #8
	b	1b
2:	mov	x0, x19
	bl	runtime_main
3:	wfi
	b	3b
	.size _start, . - _start

	.text
	.global secondary_entry
	.type secondary_entry, %function
	.balign 4
secondary_entry:
	/* A bad context id would make us share someone else's stack: park instead. */
	cmp	x0, #RT_MAX_CPUS
	b.hs	9f
	adrp	x1, rt_stacks
	add	x1, x1, :lo12:rt_stacks
	mov	x2, #RT_STACK_SIZE
	madd	x1, x0, x2, x1
	add	sp, x1, x2
	adrp	x1, rt_vectors
	add	x1, x1, :lo12:rt_vectors
	msr	vbar_el1, x1
	isb
	bl	runtime_secondary
9:	wfe
	b	9b
	.size secondary_entry, . - secondary_entry

/*
 * uint64_t run_el0(uint64_t (*fn)(void))
 * ERET to fn at EL0t with SPSR = 0 and SP_EL0 = this CPU's EL0 stack; x30 at EL0 points at
 * a trampoline issuing "svc #0xfff0", which the runtime's sync-lower handler turns into an
 * ERET to run_el0_return at EL1h with x0 preserved.  SP_EL1 is unchanged across the round
 * trip, so the callee-saved registers pushed here are found again.
 */
	.global run_el0
	.type run_el0, %function
	.balign 4
run_el0:
	stp	x29, x30, [sp, #-96]!
	mov	x29, sp
	stp	x19, x20, [sp, #16]
	stp	x21, x22, [sp, #32]
	stp	x23, x24, [sp, #48]
	stp	x25, x26, [sp, #64]
	stp	x27, x28, [sp, #80]
	mov	x19, x0
	bl	smp_cpu_index
	mov	x20, x0
	/* DAIF to restore when the EL0 code exits (the SVC entry masks everything). */
	adrp	x1, rt_el0_saved_daif
	add	x1, x1, :lo12:rt_el0_saved_daif
	mrs	x2, daif
	str	x2, [x1, x20, lsl #3]
	mov	x0, x20
	bl	el0_stack_top
	msr	sp_el0, x0
	msr	elr_el1, x19
	msr	spsr_el1, xzr
	adr	x30, el0_exit_trampoline
	mov	x0, xzr
	mov	x29, xzr
	isb
	eret
	.global run_el0_return
run_el0_return:
	ldp	x19, x20, [sp, #16]
	ldp	x21, x22, [sp, #32]
	ldp	x23, x24, [sp, #48]
	ldp	x25, x26, [sp, #64]
	ldp	x27, x28, [sp, #80]
	ldp	x29, x30, [sp], #96
	ret
	.size run_el0, . - run_el0

	.global el0_exit_trampoline
	.balign 4
el0_exit_trampoline:
	svc	#0xfff0
	b	el0_exit_trampoline	/* not reached: the SVC never returns here */

/*
 * uint64_t run_el1t(uint64_t (*fn)(void))
 * Same EL, SPSel = 0: exceptions now use the 0x000 vector group.  SP_EL0 gets the EL0
 * stack because the handler's frame goes on SP_EL1 and must not land on fn's stack.
 */
	.global run_el1t
	.type run_el1t, %function
	.balign 4
run_el1t:
	stp	x29, x30, [sp, #-32]!
	mov	x29, sp
	str	x19, [sp, #16]
	mov	x19, x0
	bl	smp_cpu_index
	bl	el0_stack_top
	msr	sp_el0, x0
	msr	spsel, #0
	blr	x19
	msr	spsel, #1
	ldr	x19, [sp, #16]
	ldp	x29, x30, [sp], #32
	ret
	.size run_el1t, . - run_el1t

	.section .stacks, "aw", %nobits
	.balign 16
	.global rt_stacks
rt_stacks:
	.space	RT_STACK_SIZE * RT_MAX_CPUS
	.global rt_el0_stacks
rt_el0_stacks:
	.space	RT_EL0_STACK_SIZE * RT_MAX_CPUS
