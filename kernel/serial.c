/* kernel/serial.c: the console. COM1 at 115200 8N1, polled both ways (the
 * monitor reads it; make run connects it to the terminal), and every output
 * byte also goes to port 0xe9, QEMU's debug console, which carries only the
 * kernel's bytes (tests/qemu reads TAP from it). */
#include "cpu.h"
#include "kernel.h"

#define COM1      0x3f8
#define DEBUGCON  0xe9
#define LSR_RX    0x01 /* line status: a byte is waiting */
#define LSR_THRE  0x20 /* line status: transmit holding register empty */

void serial_init(void)
{
	/* no UART interrupts: the kernel polls */
	outb(COM1 + 1, 0x00);
	/* divisor latch on, divisor 1 (115200 baud) */
	outb(COM1 + 3, 0x80);
	outb(COM1 + 0, 0x01);
	outb(COM1 + 1, 0x00);
	/* 8 data bits, no parity, one stop bit */
	outb(COM1 + 3, 0x03);
	/* FIFOs stay off: turning them on drops a byte already received (typed
	 * or piped before boot), and polled I/O gains nothing from them */
	outb(COM1 + 2, 0x00);
	/* DTR, RTS, OUT2 */
	outb(COM1 + 4, 0x0b);
}

static void serial_put_raw(char c)
{
	for (unsigned spins = 0; !(inb(COM1 + 5) & LSR_THRE) && spins < 100000; spins++)
		cpu_pause();
	outb(COM1, (uint8_t)c);
}

void serial_putc(char c)
{
	if (c == '\n')
		serial_put_raw('\r');
	serial_put_raw(c);
	outb(DEBUGCON, (uint8_t)c);
}

int serial_getc(void)
{
	if (!(inb(COM1 + 5) & LSR_RX))
		return -1;
	return inb(COM1);
}

void console_write(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		serial_putc(s[i]);
}
