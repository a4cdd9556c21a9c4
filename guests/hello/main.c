/* hello: the smallest guest; proves boot, UART, report and SYSTEM_OFF. */
#include "runtime.h"

GUEST_NAME("hello");

int main(void)
{
	puts("Hello from softkvm guest");
	report(1, "hello");
	return 0;
}
