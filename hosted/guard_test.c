/* guard_test.c: checked mode's guard pages, hosted. On a checked heap over the
 * Linux source (which has protect), a large block ends right at a guard page
 * (past its canary) and starts after one: in a child process, a write into
 * the canary is KEEL_EOVERFLOW at free, a write a little further or a walk
 * down from the start dies of SIGSEGV, while the last byte is fine. Prints
 * TAP; the shared suite cannot do this, as a fault ends its runner (the
 * kernel checks its page-fault path itself). */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../alloc/keel.h"
#include "source_linux.h"

static unsigned n_tests, n_failed;

static void result(int ok, const char *name, size_t size, const char *why)
{
	n_tests++;
	n_failed += !ok;
	printf("%sok %u - %s (%zu bytes)%s%s\n", ok ? "" : "not ", n_tests, name, size,
	       ok ? "" : ": ", ok ? "" : why);
	fflush(stdout);
}

/* Run touch(p, arg) in a child. Returns the signal that ended it, 0 if it
 * exited normally, -1 if it could not be run. */
static int in_child(void (*touch)(unsigned char *p, size_t arg), unsigned char *p, size_t arg)
{
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		signal(SIGSEGV, SIG_DFL);
		touch(p, arg);
		_exit(0);
	}
	int st;
	if (waitpid(pid, &st, 0) != pid)
		return -1;
	return WIFSIGNALED(st) ? WTERMSIG(st) : 0;
}

static struct keel_heap heap;

/* The canary: a write just past the end is found by keel_free (exit 0). */
static void overflow_then_free(unsigned char *p, size_t size)
{
	p[size] ^= 1;
	_exit(keel_free(&heap, p) == KEEL_EOVERFLOW ? 0 : 1);
}

static void write_at(unsigned char *p, size_t off)
{
	((volatile unsigned char *)p)[off] ^= 1;
}

static void read_at(unsigned char *p, size_t off)
{
	volatile unsigned char x = ((volatile unsigned char *)p)[off];
	(void)x;
}

/* Writes downwards from p - 16 (over keel's header, in the child only), at
 * most limit bytes: the guard page below must stop it. */
static void walk_down(unsigned char *p, size_t limit)
{
	for (size_t off = 16; off <= limit; off += 16)
		((volatile unsigned char *)p)[-(long)off] ^= 1;
}

/* Writes upwards from end, every 16 bytes, at most limit bytes. */
static void walk_up(unsigned char *end, size_t limit)
{
	for (size_t off = 0; off <= limit; off += 16)
		((volatile unsigned char *)end)[off] ^= 1;
}

static size_t round16(size_t n)
{
	return (n + 15) & ~(size_t)15;
}

static void guarded(struct keel_heap *h, size_t align, size_t size)
{
	unsigned char *p = align ? keel_aligned_alloc(h, align, size) : keel_malloc(h, size);
	if (!p) {
		result(0, "large block allocated", size, "NULL");
		return;
	}
	result(keel_usable_size(h, p) == size, "usable size is the size asked", size,
	       "usable size differs");
	p[0] = 1;
	p[size - 1] = 2;
	int sig = in_child(write_at, p, size - 1);
	result(sig == 0, "last byte writable", size, "the child died");
	sig = in_child(overflow_then_free, p, size);
	result(sig == 0, "one byte past the end is KEEL_EOVERFLOW", size,
	       sig == 0 ? "" : "the child died or free did not say KEEL_EOVERFLOW");
	/* the canary takes the rest of the block's last 16 bytes and at most
	 * 32 more: the guard starts there. A block aligned above a page can
	 * only end near it: walk up from the end, within the alignment. */
	if (align <= KEEL_PAGE_SIZE)
		sig = in_child(write_at, p, round16(size) + 32);
	else
		sig = in_child(walk_up, p + size, align + KEEL_PAGE_SIZE);
	result(sig == SIGSEGV, "a write just past the end's canary faults", size,
	       sig == 0 ? "no fault" : "other signal");
	sig = in_child(read_at, p, round16(size) + KEEL_PAGE_SIZE - 1);
	result(sig == SIGSEGV, "a read a page past the end faults", size,
	       sig == 0 ? "no fault" : "other signal");
	/* below the start: keel's header sits between, then a guard page, within
	 * two pages plus p's offset in its page (or the alignment asked) */
	size_t limit = 2 * KEEL_PAGE_SIZE + ((uintptr_t)p & (KEEL_PAGE_SIZE - 1)) + align;
	sig = in_child(walk_down, p, limit);
	result(sig == SIGSEGV, "walking down from the start faults", size,
	       sig == 0 ? "no fault" : "other signal");
	result(keel_check(h, NULL) == 0, "heap clean", size, "keel_check failed");
	result(keel_free(h, p) == 0, "block frees", size, "keel_free failed");
}

int main(void)
{
	struct keel_config cfg = { 0 };
	cfg.source = &keel_linux_source;
	cfg.flags = KEEL_HEAP_CHECKED;
	printf("1..%u\n", 7 * 8 + 4);
	if (keel_heap_init(&heap, &cfg) != 0) {
		printf("Bail out! keel_heap_init\n");
		return 1;
	}
	guarded(&heap, 0, 2 * KEEL_SEGMENT_SIZE);
	guarded(&heap, 0, 2 * KEEL_SEGMENT_SIZE + 5);
	guarded(&heap, 0, 2 * KEEL_SEGMENT_SIZE + KEEL_PAGE_SIZE - 1);
	guarded(&heap, 0, 3 * KEEL_SEGMENT_SIZE + 1000);
	guarded(&heap, (size_t)1 << 16, 2 * KEEL_SEGMENT_SIZE + 100);
	result(keel_heap_destroy(&heap) == 0, "heap destroyed", 0, "keel_heap_destroy failed");

	/* Sampled guards: with guard_every 1 a small and a medium block get a
	 * guarded mapping too; with 3, one allocation in three does. */
	cfg.guard_every = 1;
	if (keel_heap_init(&heap, &cfg) != 0) {
		printf("Bail out! keel_heap_init\n");
		return 1;
	}
	guarded(&heap, 0, 40);
	guarded(&heap, 0, 3000);
	keel_heap_destroy(&heap);
	cfg.guard_every = 3;
	keel_heap_init(&heap, &cfg);
	void *p[6];
	for (int i = 0; i < 6; i++)
		p[i] = keel_malloc(&heap, 40);
	struct keel_stats st;
	keel_stats(&heap, &st);
	result(st.large_blocks == 2, "guard_every 3: two of six small blocks guarded", 40,
	       "not two");
	for (int i = 0; i < 6; i++)
		keel_free(&heap, p[i]);
	result(keel_check(&heap, NULL) == 0, "heap clean after sampled guards", 40,
	       "keel_check failed");
	result(keel_heap_destroy(&heap) == 0, "heap destroyed", 0, "keel_heap_destroy failed");
	return n_failed ? 1 : 0;
}
