/* kernel/lib.c: memcpy, memmove, memset and memcmp, which compilers call even
 * in freestanding code, plus the few string helpers the kernel uses.
 * Plain loops of 8-byte moves, 8 per iteration: under QEMU's TCG a rep
 * movsb/stosq runs one emulated iteration at a time and is 10-30x slower
 * (16 MiB zeroed: rep stosq 60 ms, this loop 2 ms). The empty asm in each
 * loop keeps the compiler from turning it back into a call to itself. */
#include "kernel.h"

/* a 64-bit word at any alignment, allowed to alias anything */
typedef uint64_t __attribute__((may_alias, aligned(1))) word_t;

#define BARRIER() __asm__ volatile("" : : : "memory")

void *memcpy(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;
	for (; n >= 64; n -= 64, d += 64, s += 64) {
		word_t *dw = (word_t *)d;
		const word_t *sw = (const word_t *)s;
		uint64_t a = sw[0], b = sw[1], c = sw[2], e = sw[3];
		uint64_t f = sw[4], g = sw[5], h = sw[6], i = sw[7];
		dw[0] = a, dw[1] = b, dw[2] = c, dw[3] = e;
		dw[4] = f, dw[5] = g, dw[6] = h, dw[7] = i;
		BARRIER();
	}
	for (; n >= 8; n -= 8, d += 8, s += 8) {
		*(word_t *)d = *(const word_t *)s;
		BARRIER();
	}
	for (; n; n--) {
		*d++ = *s++;
		BARRIER();
	}
	return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;
	if (d <= s || d >= s + n)
		return memcpy(dst, src, n);
	/* overlapping with dst above src: copy backwards, a word at a time */
	d += n;
	s += n;
	for (; n >= 8; n -= 8) {
		d -= 8;
		s -= 8;
		*(word_t *)d = *(const word_t *)s;
		BARRIER();
	}
	for (; n; n--) {
		*--d = *--s;
		BARRIER();
	}
	return dst;
}

void *memset(void *dst, int c, size_t n)
{
	unsigned char *d = dst;
	uint64_t w = (uint8_t)c * 0x0101010101010101ull;
	for (; n >= 64; n -= 64, d += 64) {
		word_t *dw = (word_t *)d;
		dw[0] = w, dw[1] = w, dw[2] = w, dw[3] = w;
		dw[4] = w, dw[5] = w, dw[6] = w, dw[7] = w;
		BARRIER();
	}
	for (; n >= 8; n -= 8, d += 8) {
		*(word_t *)d = w;
		BARRIER();
	}
	for (; n; n--) {
		*d++ = (unsigned char)c;
		BARRIER();
	}
	return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;
	for (; n >= 8 && *(const word_t *)x == *(const word_t *)y; n -= 8, x += 8, y += 8)
		BARRIER();
	for (; n; n--, x++, y++)
		if (*x != *y)
			return *x < *y ? -1 : 1;
	return 0;
}

size_t kstrlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

int kstrcmp(const char *a, const char *b)
{
	while (*a && *a == *b) {
		a++;
		b++;
	}
	return (unsigned char)*a - (unsigned char)*b;
}

int kstrncmp(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (a[i] != b[i])
			return (unsigned char)a[i] - (unsigned char)b[i];
		if (!a[i])
			return 0;
	}
	return 0;
}
