/* Runtime-private declarations shared between the runtime's .c files. */
#ifndef SOFTKVM_GUEST_INTERNAL_H
#define SOFTKVM_GUEST_INTERNAL_H

#include "runtime.h"

int console_lock(void); /* returns whether the lock was taken (0 = already ours) */
void console_unlock(int taken);
void putc_raw(int c);
void vprintf_raw(const char *fmt, va_list ap);
void printf_raw(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

void runtime_main(uint64_t x0);
void runtime_secondary(uint64_t cpu);
void rt_exception_dispatch(struct exc_frame *f);
extern char run_el0_return[];

#endif
