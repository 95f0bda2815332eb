/* run_liballoc.c: the liballoc adapter's test runner. It plays a hobby
 * kernel: the four liballoc hooks over mmap, placing pages only 4 KiB-aligned
 * (mostly not 1 MiB-aligned, as a real kernel may), and checking that the
 * adapter keeps their contract. Two suites, TAP on stdout:
 *   run_liballoc         the shared cases, every heap over keel_liballoc_source
 *   run_liballoc names   kmalloc/kfree/kcalloc/krealloc and the hooks' use
 * Exits 0 if every check passed, else 1. */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../tests/test.h"
#include "liballoc.h"

/* ---- the kernel's hooks ----------------------------------------------------
 * Every third allocation is placed 1 MiB-aligned, the others one page past a
 * 1 MiB boundary, so that both of the adapter's paths run. Each live range is
 * remembered so liballoc_free can insist on the exact pointer and pages. */
#define HOOK_MAX 8192
#define MIB ((size_t)1 << 20)
static struct {
	void *p;
	size_t pages;
	void *base;
	size_t len;
} hook_live[HOOK_MAX];
static size_t hook_live_pages, hook_allocs, hook_frees, hook_locks, hook_misplaced;
static int lock_depth;
static long fail_allocs_from = -1; /* liballoc_alloc returns NULL from this call on */
static unsigned hook_errors;       /* contract breaches seen, each with a diag */

static void hook_error(const char *what)
{
	hook_errors++;
	t_diag("liballoc hook misused: %s", what);
}

int liballoc_lock(void)
{
	if (lock_depth != 0)
		hook_error("liballoc_lock while locked (would deadlock)");
	lock_depth++;
	hook_locks++;
	return 0;
}

int liballoc_unlock(void)
{
	if (lock_depth != 1)
		hook_error("liballoc_unlock while not locked");
	lock_depth--;
	return 0;
}

void *liballoc_alloc(size_t pages)
{
	if (lock_depth != 1)
		hook_error("liballoc_alloc without the lock");
	if (pages == 0 || (fail_allocs_from >= 0 && (long)hook_allocs >= fail_allocs_from))
		return NULL;
	size_t slot = 0;
	while (slot < HOOK_MAX && hook_live[slot].p)
		slot++;
	if (slot == HOOK_MAX)
		return NULL;
	int aligned = hook_allocs % 3 == 2;
	hook_allocs++;
	size_t len = pages * KEEL_PAGE_SIZE + 2 * MIB;
	void *base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED)
		return NULL;
	uintptr_t p = ((uintptr_t)base + MIB - 1) & ~(uintptr_t)(MIB - 1);
	if (!aligned) {
		p += KEEL_PAGE_SIZE;
		hook_misplaced++;
	}
	/* a kernel's pages are not zeroed: junk where keel looks first and last
	 * (not all of it: the suite asks for up to 1 GiB of alignment slack) */
	size_t bytes = pages * KEEL_PAGE_SIZE, head = bytes < 65536 ? bytes : 65536;
	memset((void *)p, 0xd7, head);
	memset((void *)(p + bytes - KEEL_PAGE_SIZE), 0xd7, KEEL_PAGE_SIZE);
	hook_live[slot].p = (void *)p;
	hook_live[slot].pages = pages;
	hook_live[slot].base = base;
	hook_live[slot].len = len;
	hook_live_pages += pages;
	return (void *)p;
}

int liballoc_free(void *p, size_t pages)
{
	if (lock_depth != 1)
		hook_error("liballoc_free without the lock");
	for (size_t i = 0; i < HOOK_MAX; i++) {
		if (hook_live[i].p && hook_live[i].p == p) {
			if (hook_live[i].pages != pages) {
				hook_error("liballoc_free with other pages than allocated");
				return -1;
			}
			munmap(hook_live[i].base, hook_live[i].len);
			hook_live[i].p = NULL;
			hook_live_pages -= pages;
			hook_frees++;
			return 0;
		}
	}
	hook_error("liballoc_free of a range liballoc_alloc never returned");
	return -1;
}

/* ---- the test environment -------------------------------------------------- */
static long foreign_slot;

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
	return &keel_liballoc_source;
}

void *t_env_foreign_pointer(void)
{
	return &foreign_slot;
}

/* ---- the names suite -------------------------------------------------------- */
static unsigned n_test, n_failed;

static void ok(int cond, const char *name)
{
	char line[160];
	int len = snprintf(line, sizeof line, "%sok %u - %s\n", cond ? "" : "not ", ++n_test, name);
	t_env_write(line, (size_t)len);
	if (!cond)
		n_failed++;
}

static int heap_is_clean(void)
{
	struct keel_fault fault;
	if (keel_check(keel_liballoc_heap(), &fault) == 0)
		return 1;
	t_diag("keel_check: %s at %p", fault.what, fault.where);
	return 0;
}

/* Sizes from every kind: small, medium, large (its own mapping). */
static const size_t sizes[] = { 1, 24, 100, 1000, 3000, 70000, 300000, 3 * MIB + 5 };
#define NSIZES (sizeof sizes / sizeof sizes[0])

static int fill_check(unsigned char *p, size_t n, unsigned char v, int verify)
{
	for (size_t i = 0; i < n; i += 997) {
		if (!verify)
			p[i] = (unsigned char)(v + i);
		else if (p[i] != (unsigned char)(v + i))
			return 0;
	}
	return 1;
}

static void names_suite(void)
{
	t_env_write("1..9\n", 5);

	unsigned char *p[NSIZES];
	int all = 1;
	for (size_t i = 0; i < NSIZES; i++) {
		p[i] = kmalloc(sizes[i]);
		all &= p[i] != NULL && ((uintptr_t)p[i] & 15) == 0;
		if (p[i])
			fill_check(p[i], sizes[i], (unsigned char)i, 0);
	}
	for (size_t i = 0; i < NSIZES; i++)
		all &= p[i] && fill_check(p[i], sizes[i], (unsigned char)i, 1);
	ok(all && heap_is_clean(), "kmalloc serves every size, 16-aligned, contents kept");

	for (size_t i = 0; i < NSIZES; i++)
		kfree(p[i]);
	kfree(NULL);
	struct keel_stats st;
	keel_stats(keel_liballoc_heap(), &st);
	ok(st.live_blocks == 0 && heap_is_clean(), "kfree returns every block (and NULL)");

	unsigned char *z = kcalloc(1000, 7);
	int zero = z != NULL;
	for (size_t i = 0; z && i < 7000; i++)
		zero &= z[i] == 0;
	kfree(z);
	void *big = kcalloc(2, SIZE_MAX / 2 + 1);
	unsigned char *lz = kcalloc(1, 2 * MIB);
	int lzero = lz != NULL;
	for (size_t i = 0; lz && i < 2 * MIB; i += 4096)
		lzero &= lz[i] == 0 && lz[i + 4095] == 0;
	kfree(lz);
	ok(zero && lzero && big == NULL, "kcalloc zeroes over unzeroed pages, refuses overflow");

	unsigned char *r = krealloc(NULL, 50);
	int kept = r != NULL && fill_check(r, 50, 9, 0);
	static const size_t steps[] = { 900, 5000, 200000, 3 * MIB, 40 };
	for (size_t i = 0; kept && i < sizeof steps / sizeof steps[0]; i++) {
		r = krealloc(r, steps[i]);
		kept = r != NULL && fill_check(r, 40, 9, 1);
	}
	ok(kept && krealloc(r, 0) == NULL && heap_is_clean(),
	   "krealloc keeps contents through every kind; size 0 frees");

	int freed_err = 0;
	void *q = kmalloc(64);
	kfree(q);
	freed_err = keel_free(keel_liballoc_heap(), q) == KEEL_EDOUBLE;
	ok(freed_err && heap_is_clean(), "a second free is caught and changes nothing");

	/* 200 large blocks at once: each needs its own 1 MiB-aligned mapping */
	static void *many[200];
	int aligned = 1;
	for (size_t i = 0; i < 200; i++) {
		many[i] = kmalloc(MIB + 1);
		aligned &= many[i] != NULL;
	}
	for (size_t i = 0; i < 200; i++)
		kfree(many[i]);
	ok(aligned && hook_misplaced > 0 && hook_allocs > hook_misplaced && heap_is_clean(),
	   "misplaced and aligned hook pages both serve keel");

	size_t before = hook_allocs;
	fail_allocs_from = (long)hook_allocs;
	void *none = kmalloc(5 * MIB);
	fail_allocs_from = -1;
	ok(none == NULL && hook_allocs == before && heap_is_clean(),
	   "a refusing liballoc_alloc gives NULL and a clean heap");

	keel_trim(keel_liballoc_heap());
	ok(hook_live_pages == 0 && hook_allocs == hook_frees,
	   "keel_trim gives every page back through liballoc_free");
	if (hook_live_pages)
		t_diag("%zu pages still live, %zu allocs, %zu frees", hook_live_pages, hook_allocs,
		       hook_frees);

	ok(hook_errors == 0 && lock_depth == 0 && hook_locks > 0,
	   "hooks called under the lock, never nested, exact frees");
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "names") == 0) {
		names_suite();
		return n_failed == 0 ? 0 : 1;
	}
	unsigned passed = 0, failed = 0;
	int nfailed = t_run_all(&passed, &failed);
	if (hook_errors || hook_live_pages || lock_depth) {
		t_diag("liballoc hooks: %u errors, %zu pages live, lock depth %d", hook_errors,
		       hook_live_pages, lock_depth);
		return 1;
	}
	return nfailed == 0 && failed == 0 ? 0 : 1;
}
