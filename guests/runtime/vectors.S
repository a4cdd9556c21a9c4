/*
 * EL1 vector table.  Every entry builds a struct exc_frame (runtime.h) on SP_EL1 and calls
 * rt_exception_dispatch(frame); ELR/SPSR are reloaded from the frame so handlers can
 * redirect or skip.  The frame layout must match struct exc_frame.
 */
#define FRAME_SIZE	304
#define F_SP		248
#define F_ELR		256
#define F_SPSR		264
#define F_ESR		272
#define F_FAR		280
#define F_VECTOR	288

.macro ventry offset
	.balign	0x80
	sub	sp, sp, #FRAME_SIZE
	stp	x0, x1, [sp, #0]
	mov	x1, #\offset
	b	vec_common
.endm

	.section .text.vectors, "ax"
	.balign	2048
	.global	rt_vectors
rt_vectors:
	ventry	0x000	/* current EL, SP_EL0: sync */
	ventry	0x080	/* irq */
	ventry	0x100	/* fiq */
	ventry	0x180	/* serror */
	ventry	0x200	/* current EL, SP_ELx */
	ventry	0x280
	ventry	0x300
	ventry	0x380
	ventry	0x400	/* lower EL, AArch64 */
	ventry	0x480
	ventry	0x500
	ventry	0x580
	ventry	0x600	/* lower EL, AArch32 (never expected) */
	ventry	0x680
	ventry	0x700
	ventry	0x780

	.balign	4
vec_common:
	stp	x2, x3, [sp, #16]
	stp	x4, x5, [sp, #32]
	stp	x6, x7, [sp, #48]
	stp	x8, x9, [sp, #64]
	stp	x10, x11, [sp, #80]
	stp	x12, x13, [sp, #96]
	stp	x14, x15, [sp, #112]
	stp	x16, x17, [sp, #128]
	stp	x18, x19, [sp, #144]
	stp	x20, x21, [sp, #160]
	stp	x22, x23, [sp, #176]
	stp	x24, x25, [sp, #192]
	stp	x26, x27, [sp, #208]
	stp	x28, x29, [sp, #224]
	str	x30, [sp, #240]
	str	x1, [sp, #F_VECTOR]
	mrs	x2, elr_el1
	mrs	x3, spsr_el1
	stp	x2, x3, [sp, #F_ELR]
	mrs	x4, esr_el1
	mrs	x5, far_el1
	stp	x4, x5, [sp, #F_ESR]
	/* Interrupted SP: ours (before the frame) if we came from EL1h, else SP_EL0. */
	add	x6, sp, #FRAME_SIZE
	mrs	x7, sp_el0
	and	x8, x3, #0xf
	cmp	x8, #5
	csel	x6, x6, x7, eq
	str	x6, [sp, #F_SP]
	mov	x0, sp
	bl	rt_exception_dispatch
	ldp	x2, x3, [sp, #F_ELR]
	msr	elr_el1, x2
	msr	spsr_el1, x3
	ldp	x0, x1, [sp, #0]
	ldp	x2, x3, [sp, #16]
	ldp	x4, x5, [sp, #32]
	ldp	x6, x7, [sp, #48]
	ldp	x8, x9, [sp, #64]
	ldp	x10, x11, [sp, #80]
	ldp	x12, x13, [sp, #96]
	ldp	x14, x15, [sp, #112]
	ldp	x16, x17, [sp, #128]
	ldp	x18, x19, [sp, #144]
	ldp	x20, x21, [sp, #160]
	ldp	x22, x23, [sp, #176]
	ldp	x24, x25, [sp, #192]
	ldp	x26, x27, [sp, #208]
	ldp	x28, x29, [sp, #224]
	ldr	x30, [sp, #240]
	add	sp, sp, #FRAME_SIZE
	eret
