/* run_static.c: the test runner for the amalgamation (build/dist/keel.c). The
 * shared cases run over a page source that hands out pages of one static
 * buffer, as an embedder without mmap or paging would write it; libc is used
 * only to print the TAP. Exits 0 if every case passed, else 1. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <unistd.h>

#include "../tests/test.h"

/* 256 MiB of .bss: the suite maps at most a few tens of MiB at once, but asks
 * for alignments up to 64 MiB (and tries up to 1 GiB, which may fail). Pages
 * are touched only when handed out. */
#define POOL_BYTES ((size_t)256 << 20)
#define POOL_PAGES (POOL_BYTES / KEEL_PAGE_SIZE)

static unsigned char pool[POOL_BYTES] __attribute__((aligned(KEEL_PAGE_SIZE)));
static uint64_t pool_used[POOL_PAGES / 64]; /* bit i: page i is handed out */

static int page_is_used(size_t i)
{
	return (int)((pool_used[i / 64] >> (i % 64)) & 1);
}

static void pages_mark(size_t first, size_t n, int used)
{
	for (size_t i = first; i < first + n; i++) {
		if (used)
			pool_used[i / 64] |= (uint64_t)1 << (i % 64);
		else
			pool_used[i / 64] &= ~((uint64_t)1 << (i % 64));
	}
}

/* First fit: the lowest align-aligned run of bytes/4096 free pages. Each
 * used page found moves the candidate past it, so a call is O(pages). */
static void *static_map(void *ctx, size_t bytes, size_t align)
{
	(void)ctx;
	uintptr_t base = (uintptr_t)pool, end = base + POOL_BYTES;
	size_t n = bytes / KEEL_PAGE_SIZE;
	uintptr_t a = (base + align - 1) & ~(uintptr_t)(align - 1);
	while (a >= base && a <= end && bytes <= end - a) {
		size_t first = (a - base) / KEEL_PAGE_SIZE, i = first;
		while (i < first + n && !page_is_used(i))
			i++;
		if (i == first + n) {
			pages_mark(first, n, 1);
			return (void *)a;
		}
		uintptr_t next = base + (i + 1) * KEEL_PAGE_SIZE;
		a = (next + align - 1) & ~(uintptr_t)(align - 1);
	}
	return NULL;
}

/* Only what static_map handed out comes back: anything else is a keel bug. */
static int static_unmap(void *ctx, void *p, size_t bytes)
{
	(void)ctx;
	uintptr_t base = (uintptr_t)pool, a = (uintptr_t)p;
	if (a < base || a % KEEL_PAGE_SIZE || bytes > POOL_BYTES - (a - base))
		return -EINVAL;
	size_t first = (a - base) / KEEL_PAGE_SIZE, n = bytes / KEEL_PAGE_SIZE;
	for (size_t i = first; i < first + n; i++)
		if (!page_is_used(i))
			return -EINVAL;
	pages_mark(first, n, 0);
	return 0;
}

/* Freed pages keep their old contents, so the source does not promise zero. */
static const struct keel_source static_source = {
	.map = static_map,
	.unmap = static_unmap,
	.ctx = NULL,
	.zeroed = 0,
};

static long foreign_slot; /* outside the pool: no heap's */

void t_env_write(const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(1, s, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		s += w;
		n -= (size_t)w;
	}
}

const struct keel_source *t_env_source(void)
{
	return &static_source;
}

void *t_env_foreign_pointer(void)
{
	return &foreign_slot;
}

int main(void)
{
	unsigned passed = 0, failed = 0;
	int nfailed = t_run_all(&passed, &failed);
	/* every case gave its pages back: the pool must be empty again */
	for (size_t i = 0; i < POOL_PAGES / 64; i++) {
		if (pool_used[i]) {
			t_diag("static pool: pages still handed out after the suite");
			return 1;
		}
	}
	return nfailed == 0 && failed == 0 ? 0 : 1;
}
