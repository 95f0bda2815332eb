/* kernel/print.c: formatted printing onto the console or into a buffer, and
 * the two ways out: panic (message, then a failing QEMU exit) and qemu_exit. */
#include "cpu.h"
#include "kernel.h"

static void put_str(void (*put)(char, void *), void *arg, const char *s, size_t len, int width,
                    int left, char pad)
{
	size_t n = 0;
	if (!left)
		for (; (int)(len + n) < width; n++)
			put(pad, arg);
	for (size_t i = 0; i < len; i++)
		put(s[i], arg);
	if (left)
		for (; (int)(len + n) < width; n++)
			put(' ', arg);
}

void kvprintf(void (*put)(char c, void *arg), void *arg, const char *fmt, va_list ap)
{
	char buf[24];
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			put(*fmt, arg);
			continue;
		}
		fmt++;
		int left = 0, width = 0, lng = 0;
		char pad = ' ';
		for (;; fmt++) {
			if (*fmt == '-')
				left = 1;
			else if (*fmt == '0')
				pad = '0';
			else
				break;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l' || *fmt == 'z') {
			lng = 1;
			fmt++;
		}
		uint64_t u = 0;
		int neg = 0, base = 10;
		const char *digits = "0123456789abcdef";
		switch (*fmt) {
		case 's': {
			const char *s = va_arg(ap, const char *);
			if (!s)
				s = "(null)";
			put_str(put, arg, s, kstrlen(s), width, left, ' ');
			continue;
		}
		case 'c':
			buf[0] = (char)va_arg(ap, int);
			put_str(put, arg, buf, 1, width, left, ' ');
			continue;
		case 'd':
		case 'i': {
			int64_t v = lng ? va_arg(ap, long) : va_arg(ap, int);
			neg = v < 0;
			u = neg ? -(uint64_t)v : (uint64_t)v;
			break;
		}
		case 'u':
			u = lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned);
			break;
		case 'X':
			digits = "0123456789ABCDEF";
			/* fall through */
		case 'x':
			u = lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned);
			base = 16;
			break;
		case 'p':
			u = (uintptr_t)va_arg(ap, void *);
			base = 16;
			put('0', arg);
			put('x', arg);
			break;
		case '%':
			put('%', arg);
			continue;
		default:
			/* unknown conversion: show it as written */
			put('%', arg);
			if (!*fmt)
				return;
			put(*fmt, arg);
			continue;
		}
		size_t n = 0;
		do {
			buf[sizeof(buf) - 1 - n++] = digits[u % (unsigned)base];
			u /= (unsigned)base;
		} while (u);
		if (neg && pad == '0') {
			put('-', arg);
			width--;
		} else if (neg) {
			buf[sizeof(buf) - 1 - n++] = '-';
		}
		put_str(put, arg, buf + sizeof(buf) - n, n, width, left, pad);
	}
}

static void put_console(char c, void *arg)
{
	(void)arg;
	serial_putc(c);
}

void kprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	kvprintf(put_console, NULL, fmt, ap);
	va_end(ap);
}

struct sbuf {
	char *p;
	size_t n, len;
};

static void put_buf(char c, void *arg)
{
	struct sbuf *b = arg;
	if (b->len + 1 < b->n)
		b->p[b->len] = c;
	b->len++;
}

int ksnprintf(char *buf, size_t n, const char *fmt, ...)
{
	struct sbuf b = { buf, n, 0 };
	va_list ap;
	va_start(ap, fmt);
	kvprintf(put_buf, &b, fmt, ap);
	va_end(ap);
	if (n)
		buf[b.len < n ? b.len : n - 1] = 0;
	return (int)b.len;
}

void qemu_exit(unsigned code)
{
	/* isa-debug-exit (iobase 0xf4): QEMU exits with (code << 1) | 1 */
	outl(0xf4, code);
	/* no such device (real hardware, or QEMU without it): stop here */
	for (;;)
		__asm__ volatile("cli; hlt");
}

void panic(const char *fmt, ...)
{
	irq_save();
	kprintf("\npanic: ");
	va_list ap;
	va_start(ap, fmt);
	kvprintf(put_console, NULL, fmt, ap);
	va_end(ap);
	kprintf("\nBail out! kernel panic\n");
	qemu_exit(QEMU_EXIT_FAIL);
}
