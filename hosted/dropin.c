/* dropin.c: keel as the process's malloc. libkeel.so (LD_PRELOAD) and
 * libkeel.a export the glibc malloc family over one keel heap on the Linux
 * page source, with a keel_cache per thread in initial-exec TLS, so the
 * common small malloc/free takes no lock. Nothing here allocates through
 * libc, so start-up, dlsym and thread creation cannot recurse into us.
 * KEEL_OPTIONS (comma-separated): abort (default) | warn, stats, checked. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../alloc/keel.h"
#include "source_linux.h"
#include "syscall.h"

#define EXPORT __attribute__((visibility("default")))
#define TLS    __thread __attribute__((tls_model("initial-exec")))

static struct keel_heap heap;
static int opt_warn, opt_stats, opt_checked;

/* ---- the heap lock -----------------------------------------------------
 * A spinlock that yields the CPU after a short spin: with more threads than
 * cores a preempted holder must get to run. fork() holds it across the fork
 * so the child never inherits it taken. */
static _Alignas(64) int heap_spin; /* a line of its own: waiters spin on it */

static uintptr_t dropin_lock(void *ctx)
{
	(void)ctx;
	for (unsigned n = 0; __atomic_exchange_n(&heap_spin, 1, __ATOMIC_ACQUIRE); n++) {
		while (__atomic_load_n(&heap_spin, __ATOMIC_RELAXED)) {
			if (++n < 64)
				__asm__ volatile("pause");
			else
				sys_call0(SYS_sched_yield);
		}
	}
	return 0;
}

static void dropin_unlock(void *ctx, uintptr_t token)
{
	(void)ctx;
	(void)token;
	__atomic_store_n(&heap_spin, 0, __ATOMIC_RELEASE);
}

static const struct keel_lock heap_lock = { dropin_lock, dropin_unlock, NULL };

static void fork_prepare(void)
{
	dropin_lock(NULL);
}

static void fork_parent(void)
{
	dropin_unlock(NULL, 0);
}

static void fork_child(void)
{
	/* Only this thread lives on: other threads' caches stay counted as
	 * live blocks, never reused (as with any allocator's thread caches). */
	__atomic_store_n(&heap_spin, 0, __ATOMIC_RELEASE);
}

/* ---- start-up ------------------------------------------------------------ */
enum { UNINIT, STARTING, READY };
static int state;
static pthread_key_t cache_key;

static void parse_options(const char *o, size_t len)
{
	while (len) {
		size_t n = 0;
		while (n < len && o[n] != ',')
			n++;
		if (n == 4 && !memcmp(o, "warn", 4))
			opt_warn = 1;
		else if (n == 5 && !memcmp(o, "abort", 5))
			opt_warn = 0;
		else if (n == 5 && !memcmp(o, "stats", 5))
			opt_stats = 1;
		else if (n == 7 && !memcmp(o, "checked", 7))
			opt_checked = 1;
		n += n < len;
		o += n;
		len -= n;
	}
}

/* KEEL_OPTIONS from /proc/self/environ: the heap starts at the first malloc,
 * which ld.so may make before libc has its environment, and the options
 * (checked mode) must be known then. */
static void read_options(void)
{
	static const char key[] = "KEEL_OPTIONS=";
	char buf[4096];
	size_t have = 0, keylen = sizeof key - 1;
	int at_start = 1; /* buf[0] starts a variable */
	long fd = sys_call2(SYS_open, (long)"/proc/self/environ", 0);
	if (fd < 0)
		return;
	for (;;) {
		long got = sys_call3(SYS_read, fd, (long)(buf + have), (long)(sizeof buf - have));
		if (got <= 0)
			break;
		have += (size_t)got;
		size_t i = 0, start = 0;
		for (; i < have; i++) {
			if (buf[i])
				continue;
			if (at_start && i - start >= keylen && !memcmp(buf + start, key, keylen)) {
				parse_options(buf + start + keylen, i - start - keylen);
				sys_call1(SYS_close, fd);
				return;
			}
			at_start = 1;
			start = i + 1;
		}
		/* keep the unfinished variable; one longer than buf is skipped */
		if (start < have && start > 0) {
			memmove(buf, buf + start, have - start);
			have -= start;
		} else if (start >= have) {
			have = 0;
		} else { /* start == 0 and buf full */
			have = 0;
			at_start = 0;
		}
	}
	sys_call1(SYS_close, fd);
}

__attribute__((noinline, cold)) static void misuse(const char *fn, const void *p, int err);

/* Checked mode's faults found on the way (a write after free): reported as a
 * bad free is. Called with the heap lock held; misuse() takes no lock. */
static void on_report(void *ctx, int err, const void *p)
{
	(void)ctx;
	misuse("malloc", p, err);
}

static void thread_exit(void *cache);

static void start_slow(void)
{
	int expect = UNINIT;
	if (!__atomic_compare_exchange_n(&state, &expect, STARTING, 0, __ATOMIC_ACQUIRE,
	                                 __ATOMIC_ACQUIRE)) {
		while (__atomic_load_n(&state, __ATOMIC_ACQUIRE) != READY)
			sys_call0(SYS_sched_yield);
		return;
	}
	read_options();
	struct keel_config cfg = {
		.source = &keel_linux_source,
		.lock = &heap_lock,
		.flags = opt_checked ? KEEL_HEAP_CHECKED : 0u,
		.retain_bytes = 4 * KEEL_SEGMENT_SIZE,
		.report = on_report,
	};
	if (keel_heap_init(&heap, &cfg) != 0)
		abort();
	__atomic_store_n(&state, READY, __ATOMIC_RELEASE);
	/* These may call malloc; the heap is ready for them. */
	pthread_key_create(&cache_key, thread_exit);
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

static inline void start(void)
{
	if (__builtin_expect(__atomic_load_n(&state, __ATOMIC_ACQUIRE) != READY, 0))
		start_slow();
}

/* ---- the thread's cache ---------------------------------------------------- */
enum { CACHE_NONE, CACHE_LIVE, CACHE_GONE };
/* The state and the cache in one thread-local object: malloc and free find
 * both from one address (a shared library loads each variable's TLS
 * offset on its own). */
static TLS struct {
	int state;
	struct keel_cache cache;
} tls;

static void thread_exit(void *cache)
{
	keel_cache_flush(cache);
	tls.state = CACHE_GONE; /* later frees in this thread go to the heap */
}

/* The calling thread's cache, or NULL once its exit has flushed it. */
__attribute__((noinline, cold)) static struct keel_cache *my_cache_slow(void)
{
	if (tls.state == CACHE_GONE)
		return NULL;
	start();
	keel_cache_init(&tls.cache, &heap);
	tls.state = CACHE_LIVE;
	/* A non-NULL value makes the key's destructor run at thread exit. */
	pthread_setspecific(cache_key, &tls.cache);
	return &tls.cache;
}

static inline struct keel_cache *my_cache(void)
{
	if (__builtin_expect(tls.state == CACHE_LIVE, 1))
		return &tls.cache;
	return my_cache_slow();
}

/* ---- misuse --------------------------------------------------------------- */
static char *put_str(char *d, const char *s)
{
	while (*s)
		*d++ = *s++;
	return d;
}

static char *put_hex(char *d, uintptr_t v)
{
	d = put_str(d, "0x");
	int shift = 60;
	while (shift > 0 && !((v >> shift) & 0xf))
		shift -= 4;
	for (; shift >= 0; shift -= 4)
		*d++ = "0123456789abcdef"[(v >> shift) & 0xf];
	return d;
}

static void misuse(const char *fn, const void *p, int err)
{
	char line[160], *d = line;
	d = put_str(d, "keel: ");
	d = put_str(d, fn);
	d = put_str(d, "(");
	d = put_hex(d, (uintptr_t)p);
	d = put_str(d, "): ");
	d = put_str(d, keel_strerror(err));
	d = put_str(d, opt_warn ? " (ignored)\n" : "\n");
	sys_call3(SYS_write, 2, (long)line, d - line);
	if (!opt_warn)
		abort();
}

/* ---- the malloc family ------------------------------------------------------ */
/* The common calls stay a few instructions long: every rare case (no cache
 * yet, ENOMEM, misuse) is out of line and cold. */
__attribute__((noinline, cold)) static void *out_of_memory(void)
{
	errno = ENOMEM;
	return NULL;
}

static inline void *alloc(size_t size)
{
	struct keel_cache *c = my_cache();
	void *p = c ? keel_cache_malloc(c, size) : keel_malloc(&heap, size);
	return p ? p : out_of_memory();
}

/* NULL on failure, errno untouched (posix_memalign's way). */
static inline void *alloc_aligned_quiet(size_t align, size_t size)
{
	struct keel_cache *c = my_cache();
	return c ? keel_cache_aligned_alloc(c, align, size)
	         : keel_aligned_alloc(&heap, align, size);
}

static void *alloc_aligned(size_t align, size_t size)
{
	void *p = alloc_aligned_quiet(align, size);
	return p ? p : out_of_memory();
}

EXPORT void *malloc(size_t size)
{
	return alloc(size);
}

EXPORT void free(void *p)
{
	if (!p)
		return;
	struct keel_cache *c = my_cache();
	int err = c ? keel_cache_free(c, p) : keel_free(&heap, p);
	if (__builtin_expect(err != 0, 0))
		misuse("free", p, err);
}

EXPORT void *calloc(size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size) {
		errno = ENOMEM;
		return NULL;
	}
	size_t total = n * size;
	if (total > KEEL_SMALL_MAX) {
		/* keel_calloc knows fresh pages from the source are zero */
		start();
		void *p = keel_calloc(&heap, n, size);
		if (!p)
			errno = ENOMEM;
		return p;
	}
	void *p = alloc(total);
	if (p)
		memset(p, 0, total);
	return p;
}

EXPORT void *realloc(void *p, size_t size)
{
	if (!p)
		return alloc(size);
	if (size == 0) { /* glibc: free and return NULL */
		free(p);
		return NULL;
	}
	struct keel_cache *c = my_cache();
	size_t old = c ? keel_cache_usable_size(c, p) : keel_usable_size(&heap, p);
	if (!old) {
		/* not a live block, or (checked mode, which counts the bytes asked)
		 * a live one of 0 bytes: then it goes, with nothing to copy, once
		 * its successor is had, so that a failure leaves it as it was */
		void *q = alloc(size);
		if (!q)
			return NULL;
		int err = keel_free(&heap, p);
		if (!err)
			return q;
		free(q);
		misuse("realloc", p, err);
		errno = EINVAL;
		return NULL;
	}
	/* a block that still fits and would not be half empty stays: a string
	 * appended to a few bytes at a time takes no lock until it outgrows
	 * its block (checked mode moves it, so the canary follows the size) */
	if (size <= old && size > old / 2 && !opt_checked)
		return p;
	void *q = c ? keel_cache_realloc(c, p, size) : keel_realloc(&heap, p, size);
	if (!q)
		errno = ENOMEM;
	return q;
}

EXPORT void *reallocarray(void *p, size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size) {
		errno = ENOMEM;
		return NULL;
	}
	return realloc(p, n * size);
}

/* An alignment that is a power of two but above KEEL_MAX_ALIGN is valid
 * (POSIX keeps EINVAL for the others), just more than keel can give: ENOMEM. */
EXPORT void *aligned_alloc(size_t align, size_t size)
{
	if (align == 0 || (align & (align - 1))) {
		errno = EINVAL;
		return NULL;
	}
	if (align > KEEL_MAX_ALIGN)
		return out_of_memory();
	return alloc_aligned(align, size);
}

EXPORT int posix_memalign(void **out, size_t align, size_t size)
{
	if (align < sizeof(void *) || (align & (align - 1)))
		return EINVAL;
	if (align > KEEL_MAX_ALIGN)
		return ENOMEM;
	void *p = alloc_aligned_quiet(align, size); /* it reports through its result only */
	if (!p)
		return ENOMEM;
	*out = p;
	return 0;
}

/* glibc's memalign rounds an alignment that is not a power of two up to one. */
EXPORT void *memalign(size_t align, size_t size)
{
	if (align > KEEL_MAX_ALIGN)
		return out_of_memory();
	size_t a = 1;
	while (a < align)
		a <<= 1;
	return alloc_aligned(a, size);
}

EXPORT void *valloc(size_t size)
{
	return alloc_aligned(KEEL_PAGE_SIZE, size);
}

EXPORT void *pvalloc(size_t size)
{
	size_t rounded = (size + KEEL_PAGE_SIZE - 1) & ~(size_t)(KEEL_PAGE_SIZE - 1);
	if (rounded < size) {
		errno = ENOMEM;
		return NULL;
	}
	return alloc_aligned(KEEL_PAGE_SIZE, rounded ? rounded : KEEL_PAGE_SIZE);
}

EXPORT size_t malloc_usable_size(void *p)
{
	if (!p)
		return 0;
	struct keel_cache *c = my_cache();
	return c ? keel_cache_usable_size(c, p) : keel_usable_size(&heap, p);
}

/* glibc's malloc_trim: this thread's cache and then the heap give back what
 * they can (pad is not kept: keel keeps no top to pad). 1 if any went back. */
EXPORT int malloc_trim(size_t pad)
{
	(void)pad;
	if (__atomic_load_n(&state, __ATOMIC_ACQUIRE) != READY)
		return 0;
	struct keel_cache *c = my_cache();
	if (c)
		keel_cache_flush(c);
	return keel_trim(&heap) != 0;
}

/* ---- statistics at exit ---------------------------------------------------- */
static char *put_dec(char *d, size_t v)
{
	char tmp[24];
	int n = 0;
	do
		tmp[n++] = (char)('0' + v % 10);
	while (v /= 10);
	while (n)
		*d++ = tmp[--n];
	return d;
}

static void put_stat(const char *name, size_t v)
{
	char line[96], *d = line;
	d = put_str(d, "keel: ");
	d = put_str(d, name);
	d = put_str(d, " ");
	d = put_dec(d, v);
	d = put_str(d, "\n");
	sys_call3(SYS_write, 2, (long)line, d - line);
}

__attribute__((destructor)) static void print_stats(void)
{
	struct keel_stats s;
	if (!opt_stats || __atomic_load_n(&state, __ATOMIC_ACQUIRE) != READY ||
	    keel_stats(&heap, &s) != 0)
		return;
	put_stat("in_use_bytes", s.in_use_bytes);
	put_stat("peak_in_use_bytes", s.peak_in_use_bytes);
	put_stat("source_bytes", s.source_bytes);
	put_stat("peak_source_bytes", s.peak_source_bytes);
	put_stat("free_bytes", s.free_bytes);
	put_stat("largest_free", s.largest_free);
	put_stat("fragmentation_pct", s.fragmentation_pct);
	put_stat("live_blocks", s.live_blocks);
	put_stat("alloc_count", s.alloc_count);
	put_stat("free_count", s.free_count);
	put_stat("failed_allocs", s.failed_allocs);
	put_stat("source_maps", s.source_maps);
	put_stat("source_unmaps", s.source_unmaps);
	put_stat("segments", s.segments);
	put_stat("large_blocks", s.large_blocks);
}
