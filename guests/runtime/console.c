/* PL011 console, polled, with one lock so that each printf call is one unbroken write. */
#include "runtime.h"
#include "internal.h"

#define UART_DR 0x00
#define UART_FR 0x18
#define FR_RXFE (1u << 4)
#define FR_TXFF (1u << 5)

static inline uint32_t uart_read(uint64_t off)
{
	return *(volatile uint32_t *)(PL011_BASE + off);
}
static inline void uart_write(uint64_t off, uint32_t v)
{
	*(volatile uint32_t *)(PL011_BASE + off) = v;
}

/* 0 = free, else owner's logical index + 1.  The owner is recorded so the fatal-exception
 * path can print even when it interrupted its own CPU in the middle of a printf. */
static volatile uint64_t console_lock_word;

int console_lock(void)
{
	uint64_t me = smp_cpu_index() + 1;
	if (atomic_load_acquire(&console_lock_word) == me)
		return 0; /* re-entered from an exception on the same CPU */
	while (atomic_cas(&console_lock_word, 0, me) != 0)
		cpu_relax();
	return 1;
}

void console_unlock(int taken)
{
	if (taken)
		atomic_store_release(&console_lock_word, 0);
}

void putc_raw(int c)
{
	while (uart_read(UART_FR) & FR_TXFF)
		;
	uart_write(UART_DR, (uint32_t)(unsigned char)c);
}

static void puts_raw(const char *s)
{
	while (*s)
		putc_raw(*s++);
}

void putc(int c)
{
	int t = console_lock();
	putc_raw(c);
	console_unlock(t);
}

void puts(const char *s)
{
	int t = console_lock();
	puts_raw(s);
	putc_raw('\n');
	console_unlock(t);
}

int try_getc(void)
{
	if (uart_read(UART_FR) & FR_RXFE)
		return -1;
	return (int)(uart_read(UART_DR) & 0xff);
}

int getc(void)
{
	int c;
	while ((c = try_getc()) < 0)
		cpu_relax();
	return c;
}

/* width < 0: left-justified in -width columns */
static void put_unsigned(uint64_t v, unsigned base, int upper, int width, char pad)
{
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	char buf[24];
	int n = 0;
	do {
		buf[n++] = digits[v % base];
		v /= base;
	} while (v);
	for (int w = width; w > n; w--)
		putc_raw(pad);
	for (int i = n; i;)
		putc_raw(buf[--i]);
	for (int w = -width; w > n; w--)
		putc_raw(' ');
}

static void put_string(const char *s, int width)
{
	int n = (int)strlen(s);
	for (int w = width; w > n; w--)
		putc_raw(' ');
	while (*s)
		putc_raw(*s++);
	for (int w = -width; w > n; w--)
		putc_raw(' ');
}

void vprintf_raw(const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			putc_raw(*fmt);
			continue;
		}
		fmt++;
		char pad = ' ';
		int width = 0, lng = 0, left = 0;
		for (;; fmt++) {
			if (*fmt == '0')
				pad = '0';
			else if (*fmt == '-')
				left = 1;
			else
				break;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		if (left) {
			width = -width;
			pad = ' ';
		}
		while (*fmt == 'l' || *fmt == 'z') {
			lng = 1;
			fmt++;
		}
		switch (*fmt) {
		case 'd':
		case 'i': {
			int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
			uint64_t u = (uint64_t)v;
			if (v < 0) {
				putc_raw('-');
				u = -u;
				width += width > 0 ? -1 : width < 0 ? 1 : 0;
			}
			put_unsigned(u, 10, 0, width, pad);
			break;
		}
		case 'u':
			put_unsigned(lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10, 0, width, pad);
			break;
		case 'x':
		case 'X':
			put_unsigned(lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16, *fmt == 'X',
				     width, pad);
			break;
		case 'p':
			puts_raw("0x");
			put_unsigned((uint64_t)va_arg(ap, void *), 16, 0, width, pad);
			break;
		case 's': {
			const char *s = va_arg(ap, const char *);
			put_string(s ? s : "(null)", width);
			break;
		}
		case 'c':
			putc_raw(va_arg(ap, int));
			break;
		case '%':
			putc_raw('%');
			break;
		case '\0':
			return;
		default: /* unknown conversion: show it rather than guess */
			putc_raw('%');
			putc_raw(*fmt);
		}
	}
}

void vprintf(const char *fmt, va_list ap)
{
	int t = console_lock();
	vprintf_raw(fmt, ap);
	console_unlock(t);
}

void printf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
}

void printf_raw(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf_raw(fmt, ap);
	va_end(ap);
}
