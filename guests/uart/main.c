/*
 * uart: the PL011 receive interrupt.  UARTIMSC enables RX and RT (receive timeout); the
 * PL011's SPI (from the DT, INTID 33 on virt: SPI 1, level) is enabled and targeted at CPU0.
 * The guest prints "uart: type a line"; the IRQ handler clears RX/RT through UARTICR, then
 * drains the RX FIFO into a buffer.  When '\n' or '\r' arrives the guest prints "echo: <line>"
 * and passes; 30 s without a complete line is a FAIL.  Bytes that arrive before the prompt
 * are kept (they wait in the FIFO, and the interrupt fires as soon as it is unmasked).
 *
 * QEMU:    echo hello | qemu-system-aarch64 -M virt ... -nographic -kernel build/guests/uart.elf
 * softkvm: echo hello | .venv/bin/softkvm run build/guests/uart.elf
 */
#include "runtime.h"

GUEST_NAME("uart");

#define UART_DR 0x000
#define UART_FR 0x018
#define UART_IMSC 0x038
#define UART_MIS 0x040
#define UART_ICR 0x044
#define FR_RXFE (1u << 4)
#define INT_RX (1u << 4)
#define INT_RT (1u << 6)
#define LINE_MAX 128

static inline uint32_t uart_rd(uint64_t off) { return *(volatile uint32_t *)(PL011_BASE + off); }
static inline void uart_wr(uint64_t off, uint32_t v) { *(volatile uint32_t *)(PL011_BASE + off) = v; }

static char line[LINE_MAX];
static volatile uint64_t len, done, irqs, dropped;

static int uart_irq(struct irq_ctx *c)
{
	(void)c;
	atomic_add(&irqs, 1);
	/* Clear first, then drain: a byte arriving after the last FR read raises RX/RT again (a
	 * new interrupt), whereas clearing after the drain could wipe out its interrupt. */
	uart_wr(UART_ICR, INT_RX | INT_RT);
	while (!(uart_rd(UART_FR) & FR_RXFE)) {
		char ch = (char)(uart_rd(UART_DR) & 0xff);
		if (done)
			continue; /* a '\n' after '\r', or more input: not part of the line */
		if (ch == '\n' || ch == '\r') {
			line[len] = 0;
			atomic_store_release(&done, 1);
		} else if (len < LINE_MAX - 1) {
			line[len++] = ch;
		} else {
			dropped++;
		}
	}
	return IRQ_EOI;
}

int main(void)
{
	if (gic_init() != 0)
		return 1;
	int intid = fdt_irq_intid(fdt_find_compatible("arm,pl011"), 0);
	if (intid < 32) {
		note("uart: no interrupts property on the PL011 node; using INTID 33");
		intid = 33;
	}
	irq_set_handler((unsigned)intid, uart_irq);
	gic_setup_irq((unsigned)intid, GIC_PRIO_DEFAULT, 0, 0);
	uart_wr(UART_IMSC, INT_RX | INT_RT);
	puts("uart: type a line");
	irq_enable();
	uint64_t deadline = deadline_after_ms(30000);
	while (!atomic_load_acquire(&done) && !deadline_passed(deadline))
		cpu_relax();
	irq_disable();
	uart_wr(UART_IMSC, 0);
	gic_disable_irq((unsigned)intid);
	if (done) {
		printf("echo: %s\n", line);
		report(irqs > 0, "uart-rx-irq: %lu chars via %lu interrupt(s) on INTID %d%s", len, irqs, intid,
		       dropped ? " (line truncated)" : "");
	} else {
		line[len] = 0;
		report(0, "uart-rx-irq: no complete line within 30 s (%lu chars so far: \"%s\", %lu interrupt(s))", len,
		       line, irqs);
	}
	return 0;
}
