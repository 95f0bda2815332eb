/* kernel/run_tests.c: the in-kernel test runner. Links the shared cases of
 * tests/ (the t_env_* functions below give them the kernel page source and the
 * console), runs them with t_run_all, then the kernel's own cases with the
 * numbering continued, all in one TAP stream (t_run_all's plan is widened by
 * the kernel's count on its way out). Every kernel case must also give back
 * every physical frame it took. */
#include "../alloc/keel.h"
#include "../tests/test.h"
#include "cpu.h"
#include "kernel.h"
#include "percpu.h"

static unsigned plan_extra; /* kernel cases to add to the plan t_run_all prints */
static int quiet;           /* only failures and diagnostics reach the console */
static int at_line_start = 1, line_shown;
static long foreign_slot;
static int timing; /* keel.timing=1: a "# N ms" line before each result */
static int fault_pf; /* keel.fault=pf (tests/qemu selfcheck) */

/* 1 if the n bytes at s begin with prefix. */
static int starts(const char *s, size_t n, const char *prefix)
{
	size_t len = kstrlen(prefix);
	return n >= len && !memcmp(s, prefix, len);
}

void t_env_write(const char *s, size_t n)
{
	char buf[32];
	if (plan_extra && starts(s, n, "1..")) {
		/* t_run_all's plan, widened by the kernel's cases */
		unsigned plan = 0;
		for (size_t i = 3; i < n && s[i] >= '0' && s[i] <= '9'; i++)
			plan = plan * 10 + (unsigned)(s[i] - '0');
		int len = ksnprintf(buf, sizeof(buf), "1..%u\n", plan + plan_extra);
		plan_extra = 0;
		s = buf;
		n = (size_t)len;
	}
	static uint64_t last;
	static unsigned nresults;
	int is_result = starts(s, n, "ok ") || starts(s, n, "not ok ");
	if (fault_pf && is_result) {
		/* keel.fault=pf: an unexpected page fault after the third result */
		if (++nresults == 4)
			*(volatile char *)(HEAP_BASE + HEAP_BYTES) = 1;
	}
	if (timing && is_result) {
		uint64_t now = rdtsc();
		kprintf("# %lu ms\n", (unsigned long)((now - last) / (tsc_hz() / 1000 + 1)));
		last = now;
	}
	for (size_t i = 0; i < n; i++) {
		if (at_line_start)
			line_shown = !quiet || s[i] == '#' || s[i] == 'n' || s[i] == 'B';
		if (line_shown)
			serial_putc(s[i]);
		at_line_start = s[i] == '\n';
	}
}

const struct keel_source *t_env_source(void)
{
	return &kernel_source;
}

void *t_env_foreign_pointer(void)
{
	return &foreign_slot;
}

/* ---- kernel cases ---------------------------------------------------------- */

static void touch_write(void *p)
{
	*(volatile char *)p = 1;
}

static void touch_read(void *p)
{
	(void)*(volatile char *)p;
}

/* The page source itself: alignment, zeroed frames, frames and range back. */
static void kernel_source_map_unmap(struct t *t)
{
	static const size_t sizes[][2] = {
		{ 8192, 4096 },              /* a registry node */
		{ 1 << 20, 1 << 20 },        /* a segment */
		{ 3 << 20, 1 << 20 },        /* a large block */
		{ 1 << 20, (size_t)1 << 30 }, /* the largest alignment keel asks for */
	};
	size_t frames = frame_free_count(), va = source_va_bytes();
	char *stale = NULL;
	for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
		size_t bytes = sizes[i][0], align = sizes[i][1];
		char *p = kernel_source.map(kernel_source.ctx, bytes, align);
		T_REQUIRE(t, p != NULL);
		T_CHECK(t, ((uintptr_t)p & (align - 1)) == 0);
		T_CHECK(t, (uintptr_t)p >= HEAP_BASE && (uintptr_t)p + bytes <= HEAP_BASE + HEAP_BYTES);
		T_CHECK(t, frame_free_count() <= frames - bytes / PAGE_SIZE);
		T_CHECK(t, t_is_zero(p, bytes));
		t_fill(p, bytes, i);
		T_CHECK(t, t_verify(p, bytes, i));
		T_CHECK(t, source_owns(p, bytes));
		T_CHECK(t, kernel_source.unmap(kernel_source.ctx, p, bytes) == 0);
		T_CHECK(t, !source_owns(p, PAGE_SIZE));
		T_CHECK(t, frame_free_count() == frames);
		stale = p;
	}
	T_CHECK(t, source_va_bytes() == va);
	/* bad requests and foreign ranges are refused and change nothing */
	T_CHECK(t, kernel_source.map(kernel_source.ctx, 100, 4096) == NULL);
	T_CHECK(t, kernel_source.map(kernel_source.ctx, 4096, 3 * 4096) == NULL);
	T_CHECK(t, kernel_source.unmap(kernel_source.ctx, &foreign_slot, 4096) != 0);
	T_CHECK(t, kernel_source.unmap(kernel_source.ctx, stale, 4096) != 0);
	T_CHECK(t, kernel_source.unmap(kernel_source.ctx, (void *)(HEAP_BASE + HEAP_BYTES), 4096) != 0);
	T_CHECK(t, frame_free_count() == frames && source_va_bytes() == va);
}

/* Map/unmap rounds move on through the heap range (a stale pointer faults
 * rather than reaching a newer mapping), and when the range is spent the
 * freed space is used again: 600 rounds of 1 GiB wrap the 512 GiB range. */
static void kernel_source_reuses_range(struct t *t)
{
	size_t ranges = source_va_ranges(), va = source_va_bytes(), tables = pt_table_count();
	char *prev = NULL;
	int wrapped = 0;
	for (int i = 0; i < 600; i++) {
		char *p = kernel_source.map(kernel_source.ctx, 1 << 20, (size_t)1 << 30);
		char *q = kernel_source.map(kernel_source.ctx, 8192, 4096);
		T_REQUIRE(t, p && q);
		if (prev && p <= prev)
			wrapped++;
		else if (prev)
			T_CHECK(t, p != prev);
		prev = p;
		T_CHECK(t, kernel_source.unmap(kernel_source.ctx, p, 1 << 20) == 0);
		T_CHECK(t, kernel_source.unmap(kernel_source.ctx, q, 8192) == 0);
	}
	T_CHECK(t, wrapped == 1);
	T_CHECK(t, source_va_ranges() <= ranges + 1 && source_va_bytes() == va);
	T_CHECK(t, pt_table_count() == tables);
}

/* Guard pages: protect NONE gives the frame back and faults; READ faults on
 * write only; RW makes it memory again. */
static void kernel_source_protect(struct t *t)
{
	size_t frames = frame_free_count();
	char *p = kernel_source.map(kernel_source.ctx, 3 * PAGE_SIZE, PAGE_SIZE);
	T_REQUIRE(t, p != NULL);
	size_t mapped = frame_free_count();
	struct fault_info fi;
	T_CHECK(t, kernel_source.protect(kernel_source.ctx, p + PAGE_SIZE, PAGE_SIZE,
	                                 KEEL_PROT_NONE) == 0);
	T_CHECK(t, frame_free_count() == mapped + 1);
	T_CHECK(t, fault_try(touch_read, p + PAGE_SIZE + 5, &fi) == 1);
	T_CHECK(t, fi.vector == 14 && fi.cr2 == (uintptr_t)(p + PAGE_SIZE + 5));
	T_CHECK(t, (fi.error & 3) == 0); /* not present, read */
	T_CHECK(t, fault_try(touch_write, p + PAGE_SIZE - 1, &fi) == 0);

	p[0] = 42;
	T_CHECK(t, kernel_source.protect(kernel_source.ctx, p, PAGE_SIZE, KEEL_PROT_READ) == 0);
	T_CHECK(t, fault_try(touch_read, p, &fi) == 0 && p[0] == 42);
	T_CHECK(t, fault_try(touch_write, p + 8, &fi) == 1);
	T_CHECK(t, fi.vector == 14 && fi.cr2 == (uintptr_t)(p + 8) && (fi.error & 3) == 3);

	T_CHECK(t, kernel_source.protect(kernel_source.ctx, p, 2 * PAGE_SIZE, KEEL_PROT_RW) == 0);
	T_CHECK(t, fault_try(touch_write, p + PAGE_SIZE, &fi) == 0);
	T_CHECK(t, p[0] == 42 && t_is_zero(p + PAGE_SIZE + 1, PAGE_SIZE - 1));
	T_CHECK(t, kernel_source.protect(kernel_source.ctx, p, PAGE_SIZE, 7) != 0);

	/* unmapping a range with a guard page in it returns everything */
	T_CHECK(t, kernel_source.protect(kernel_source.ctx, p + 2 * PAGE_SIZE, PAGE_SIZE,
	                                 KEEL_PROT_NONE) == 0);
	T_CHECK(t, kernel_source.unmap(kernel_source.ctx, p, 3 * PAGE_SIZE) == 0);
	T_CHECK(t, frame_free_count() == frames);
}

/* A page the heap gave back faults, and the handler reports where. */
static void kernel_freed_page_faults(struct t *t)
{
	size_t bytes = 3 << 20;
	char *p = keel_malloc(t->heap, bytes);
	T_REQUIRE(t, p != NULL);
	t_fill(p, bytes, 7);
	T_CHECK(t, t_verify(p, bytes, 7));
	size_t unmaps = t->src->unmaps;
	T_CHECK(t, keel_free(t->heap, p) == 0);
	keel_trim(t->heap);
	T_CHECK(t, t->src->unmaps > unmaps);
	T_CHECK(t, !source_owns(p, PAGE_SIZE));

	struct fault_info fi = { 0, 0, 0, 0 };
	T_CHECK(t, fault_try(touch_write, p + 4096 * 17 + 3, &fi) == 1);
	T_CHECK(t, fi.vector == 14);
	T_CHECK(t, fi.cr2 == (uintptr_t)p + 4096 * 17 + 3);
	T_CHECK(t, (fi.error & 3) == 2); /* not present, write */
	T_CHECK(t, fault_try(touch_read, p, &fi) == 1 && fi.cr2 == (uintptr_t)p);

	/* small blocks too, once their segment goes back */
	char *q = keel_malloc(t->heap, 100);
	T_REQUIRE(t, q != NULL);
	T_CHECK(t, keel_free(t->heap, q) == 0);
	keel_trim(t->heap);
	if (!source_owns(q, 1)) {
		T_CHECK(t, fault_try(touch_read, q, &fi) == 1 && fi.cr2 == (uintptr_t)q);
	} else {
		t_diag("  the small block's segment is still mapped after keel_trim");
	}
}

/* Checked mode's guard pages on bare metal: a large block ends right at an
 * unmapped page, so running off its end is a page fault the handler
 * reports, as is touching it once freed (it waits in the quarantine
 * inaccessible); a sampled small block (guard_every) too. */
static void kernel_checked_guards_fault(struct t *t)
{
	static struct keel_heap ch;
	struct keel_config cfg = { .source = &kernel_source,
		                   .lock = &kernel_lock,
		                   .flags = KEEL_HEAP_CHECKED };
	size_t frames = frame_free_count();
	T_REQUIRE(t, keel_heap_init(&ch, &cfg) == 0);
	size_t size = (2 << 20) + 5;
	char *p = keel_malloc(&ch, size);
	T_REQUIRE(t, p != NULL);
	struct fault_info fi = { 0, 0, 0, 0 };
	T_CHECK(t, fault_try(touch_write, p + size - 1, &fi) == 0);
	/* the canary fills the block's last 16 bytes and the 16 after: the
	 * guard page starts at most 32 bytes past the end */
	char *over = p + ((size + 15) & ~(size_t)15) + 16;
	T_CHECK(t, fault_try(touch_write, over, &fi) == 1);
	T_CHECK(t, fi.vector == 14 && fi.cr2 == (uintptr_t)over);
	T_CHECK(t, keel_free(&ch, p) == 0);
	T_CHECK(t, fault_try(touch_read, p, &fi) == 1 && fi.cr2 == (uintptr_t)p);
	T_CHECK(t, keel_check(&ch, NULL) == 0);
	T_CHECK(t, keel_heap_destroy(&ch) == 0);

	cfg.guard_every = 1;
	T_REQUIRE(t, keel_heap_init(&ch, &cfg) == 0);
	char *q = keel_malloc(&ch, 40);
	T_REQUIRE(t, q != NULL);
	T_CHECK(t, fault_try(touch_write, q + 39, &fi) == 0);
	T_CHECK(t, fault_try(touch_write, q + 48, &fi) == 1 && fi.cr2 == (uintptr_t)(q + 48));
	T_CHECK(t, keel_free(&ch, q) == 0);
	T_CHECK(t, keel_heap_destroy(&ch) == 0);
	T_CHECK(t, frame_free_count() == frames);
}

static void do_ud2(void *arg)
{
	(void)arg;
	__asm__ volatile("ud2");
}

static void do_divide(void *arg)
{
	unsigned zero = (unsigned)(uintptr_t)arg, quotient, remainder;
	/* in asm: the compiler turns 1 / x into x == 1 */
	__asm__ volatile("divl %2" : "=a"(quotient), "=d"(remainder) : "r"(zero), "a"(1), "d"(0));
}

static void do_noncanonical(void *arg)
{
	*(volatile long *)arg = 1;
}

static void do_int3(void *arg)
{
	(void)arg;
	__asm__ volatile("int3");
}

/* Recurse until the kernel stack runs into its guard page. */
static unsigned recurse(unsigned depth)
{
	volatile unsigned frame[128];
	frame[0] = depth;
	return depth > 100000 ? frame[0] : recurse(depth + 1) + frame[0];
}

static void do_overflow(void *arg)
{
	(void)arg;
	recurse(0);
}

/* The exception handlers: each vector is reported with its details. */
static void kernel_exceptions_reported(struct t *t)
{
	struct fault_info fi;
	T_CHECK(t, fault_try(do_ud2, NULL, &fi) == 1 && fi.vector == 6);
	T_CHECK(t, fi.rip >= (uintptr_t)kernel_text && fi.rip < (uintptr_t)kernel_rodata);
	T_CHECK(t, fault_try(do_divide, NULL, &fi) == 1 && fi.vector == 0);
	T_CHECK(t, fault_try(do_noncanonical, (void *)0x8000000000000000ull, &fi) == 1 &&
	                   fi.vector == 13);
	T_CHECK(t, fault_try(do_int3, NULL, &fi) == 1 && fi.vector == 3);
	/* no identity map after boot: NULL faults */
	T_CHECK(t, fault_try(touch_read, NULL, &fi) == 1 && fi.vector == 14 && fi.cr2 == 0);
	/* the image's text is read-only */
	T_CHECK(t, fault_try(touch_write, (void *)kernel_text, &fi) == 1 && fi.vector == 14 &&
	                   (fi.error & 3) == 3);
	/* the kernel stack's guard page is absent */
	T_CHECK(t, fault_try(touch_read, kstack_guard + 64, &fi) == 1 &&
	                   fi.cr2 == (uintptr_t)kstack_guard + 64);
	T_CHECK(t, fault_try(touch_read, kstack_guard + PAGE_SIZE, &fi) == 0);
	/* a stack overflow is a page fault on the guard, handled on its own stack */
	T_CHECK(t, fault_try(do_overflow, NULL, &fi) == 1 && fi.vector == 14 &&
	                   fi.cr2 >= (uintptr_t)kstack_guard &&
	                   fi.cr2 < (uintptr_t)kstack_guard + PAGE_SIZE);
}

/* The lock hooks put RFLAGS.IF back as they found it. */
static void kernel_lock_keeps_if(struct t *t)
{
	static struct keel_heap h;
	struct keel_config cfg = { .source = &t->src->src, .lock = &kernel_lock };
	T_REQUIRE(t, keel_heap_init(&h, &cfg) == 0);
	uint64_t flags = read_rflags();
	T_CHECK(t, flags & RFLAGS_IF);
	void *p = keel_malloc(&h, 200);
	T_CHECK(t, p != NULL && (read_rflags() & RFLAGS_IF));
	uint64_t saved = irq_save();
	T_CHECK(t, keel_free(&h, p) == 0);
	T_CHECK(t, !(read_rflags() & RFLAGS_IF));
	p = keel_malloc(&h, 5000);
	T_CHECK(t, p != NULL && !(read_rflags() & RFLAGS_IF));
	irq_restore(saved);
	T_CHECK(t, read_rflags() & RFLAGS_IF);
	T_CHECK(t, keel_free(&h, p) == 0);
	T_CHECK_HEAP(t, &h);
	T_CHECK(t, keel_heap_destroy(&h) == 0);
}

/* Push the heap until the source runs out of frames, in shrinking steps;
 * free everything and every frame is back with the frame allocator. */
static void kernel_heap_exhausts_ram(struct t *t)
{
	static struct keel_heap h;
	struct keel_config cfg = { .source = &kernel_source, .lock = &kernel_lock };
	static const size_t steps[] = { 4 << 20, 1 << 20, 64 << 10, 4096, 1024, 64, 16 };
	size_t frames = frame_free_count(), tables = pt_table_count();
	T_REQUIRE(t, keel_heap_init(&h, &cfg) == 0);

	/* chain the blocks through their first word: no table needed */
	void *list = NULL;
	size_t nblocks = 0, bytes = 0;
	uint64_t t0 = rdtsc();
	for (size_t i = 0; i < ARRAY_LEN(steps); i++) {
		void **b;
		while ((b = keel_malloc(&h, steps[i])) != NULL) {
			*b = list;
			list = b;
			nblocks++;
			bytes += steps[i];
		}
	}
	struct keel_stats st;
	T_CHECK(t, keel_stats(&h, &st) == 0);
	T_CHECK(t, st.failed_allocs >= ARRAY_LEN(steps));
	t_diag("  %zu blocks, %zu KiB, %zu frames left of %zu, %lu Mcycles",
	       nblocks, bytes >> 10, frame_free_count(), frames,
	       (unsigned long)((rdtsc() - t0) >> 20));
	/* nearly every frame went to the heap (less than a segment and its tables remain) */
	T_CHECK(t, frame_free_count() < 256 + 8);
	T_CHECK(t, bytes > (frames - 256 - pt_table_count()) * (PAGE_SIZE / 2));
	T_CHECK_HEAP(t, &h);

	while (list) {
		void *next = *(void **)list;
		T_CHECK(t, keel_free(&h, list) == 0);
		list = next;
	}
	T_CHECK_HEAP(t, &h);
	T_CHECK(t, keel_heap_destroy(&h) == 0);
	T_CHECK(t, frame_free_count() == frames);
	T_CHECK(t, pt_table_count() == tables);
	/* and the memory is usable again */
	void *p = kernel_source.map(kernel_source.ctx, 1 << 20, 1 << 20);
	T_CHECK(t, p && kernel_source.unmap(kernel_source.ctx, p, 1 << 20) == 0);
}

/* The kernel's own heap (the monitor's buffers live there) is consistent. */
static void kernel_heap_consistent(struct t *t)
{
	void *p = keel_malloc(&kernel_heap, 300);
	T_REQUIRE(t, p != NULL);
	T_CHECK(t, source_owns((void *)ALIGN_DOWN((uintptr_t)p, PAGE_SIZE), PAGE_SIZE));
	T_CHECK_HEAP(t, &kernel_heap);
	T_CHECK(t, keel_free(&kernel_heap, p) == 0);
	T_CHECK(t, keel_free(&kernel_heap, p) == KEEL_EDOUBLE);
	T_CHECK(t, keel_free(&kernel_heap, &foreign_slot) == KEEL_ENOTOURS);
	T_CHECK_HEAP(t, &kernel_heap);
}

/* ---- several CPUs ------------------------------------------------------------ */

struct lock_race {
	struct spinlock lock;
	struct barrier bar;
	volatile uint64_t counter;
	unsigned rounds;
	struct keel_heap *heap;
	struct keel_lock hooks;
	volatile uint64_t bad;
};

/* Every CPU adds to a plain counter under the lock, then allocates and frees
 * on one heap with no cache, so every call takes the heap's spinlock hook. */
static void lock_race_job(struct cpu *c, void *arg)
{
	struct lock_race *lr = arg;
	barrier_wait(&lr->bar);
	for (unsigned i = 0; i < lr->rounds; i++) {
		uintptr_t t = spin_lock(&lr->lock);
		if (read_rflags() & RFLAGS_IF)
			__atomic_add_fetch(&lr->bad, 1, __ATOMIC_RELAXED);
		/* a read-modify-write stretched over some pauses: a lost update shows */
		uint64_t v = lr->counter;
		for (int k = 0; k < 16; k++)
			cpu_pause();
		lr->counter = v + 1;
		spin_unlock(&lr->lock, t);
	}
	barrier_wait(&lr->bar);
	for (unsigned i = 0; i < lr->rounds / 4; i++) {
		size_t size = 16 + (i * 131 + c->index * 17) % 3000;
		void *p = keel_malloc(lr->heap, size);
		if (!p) {
			__atomic_add_fetch(&lr->bad, 1, __ATOMIC_RELAXED);
			continue;
		}
		uint64_t key = (uintptr_t)p ^ c->index;
		pattern_fill(p, size, key);
		if (!(read_rflags() & RFLAGS_IF) || !pattern_ok(p, size, key) ||
		    keel_free(lr->heap, p) != 0)
			__atomic_add_fetch(&lr->bad, 1, __ATOMIC_RELAXED);
	}
}

/* The spinlock and its token: the token carries RFLAGS.IF (interrupts off
 * inside, back as they were after, off stays off); the lock excludes every
 * other CPU (a plain read-modify-write under it loses no update); and a heap
 * whose hooks are that lock stays consistent under all CPUs at once. */
static void kernel_spinlock_token(struct t *t)
{
	static struct lock_race lr;
	static struct keel_heap h;
	memset(&lr, 0, sizeof(lr));
	T_CHECK(t, read_rflags() & RFLAGS_IF);
	uintptr_t tok = spin_lock(&lr.lock);
	T_CHECK(t, !(read_rflags() & RFLAGS_IF) && (tok & RFLAGS_IF));
	T_CHECK(t, lr.lock.locked == 1 && lr.lock.owner == this_cpu()->index + 1);
	spin_unlock(&lr.lock, tok);
	T_CHECK(t, (read_rflags() & RFLAGS_IF) && lr.lock.locked == 0 && lr.lock.owner == 0);
	uint64_t saved = irq_save();
	tok = spin_lock(&lr.lock);
	T_CHECK(t, !(tok & RFLAGS_IF));
	spin_unlock(&lr.lock, tok);
	T_CHECK(t, !(read_rflags() & RFLAGS_IF));
	irq_restore(saved);

	lr.rounds = 2000;
	lr.bar.n = ncpus;
	lr.heap = &h;
	lr.hooks = (struct keel_lock){ spin_hook_lock, spin_hook_unlock, &lr.lock };
	/* the kernel source itself: the case's counting source serves one CPU at a time */
	struct keel_config cfg = { .source = &kernel_source, .lock = &lr.hooks };
	T_REQUIRE(t, keel_heap_init(&h, &cfg) == 0);
	smp_run(lock_race_job, &lr);
	T_CHECK(t, lr.counter == (uint64_t)lr.rounds * ncpus);
	T_CHECK(t, lr.bad == 0);
	T_CHECK_HEAP(t, &h);
	struct keel_stats st;
	T_CHECK(t, keel_stats(&h, &st) == 0 && st.live_blocks == 0);
	T_CHECK(t, keel_heap_destroy(&h) == 0);
	t_diag("  %u CPUs, %lu increments, %lu waits for the lock", ncpus, lr.counter,
	       lr.lock.contended);
}

struct tlb_case {
	volatile uint8_t *va;
	uint8_t seen[MAX_CPUS];
};

static void tlb_case_read(struct cpu *c, void *arg)
{
	struct tlb_case *tc = arg;
	tc->seen[c->index] = tc->va[100];
}

/* A TLB shootdown reaches every CPU: each reads a page (so its TLB holds
 * the translation), the page is moved to another frame with the other CPUs'
 * entries stale, and after tlb_shootdown every CPU reads the new frame. */
static void kernel_tlb_shootdown(struct t *t)
{
	static struct tlb_case tc;
	uint8_t *p = kernel_source.map(kernel_source.ctx, PAGE_SIZE, PAGE_SIZE);
	T_REQUIRE(t, p != NULL);
	tc.va = p;
	memset(p, 0xaa, PAGE_SIZE);
	smp_run(tlb_case_read, &tc);
	for (unsigned i = 0; i < ncpus; i++)
		T_CHECK(t, tc.seen[i] == 0xaa);
	uint64_t pa = frame_alloc();
	T_REQUIRE(t, pa != 0);
	memset(phys_to_virt(pa), 0x55, PAGE_SIZE);
	uint64_t old = pt_get((uintptr_t)p);
	uint64_t served[MAX_CPUS];
	for (unsigned i = 0; i < ncpus; i++)
		served[i] = cpus[i]->tlb_flushes;
	pt_set((uintptr_t)p, (old & ~PTE_ADDR) | pa); /* invlpg here only */
	tlb_shootdown();
	smp_run(tlb_case_read, &tc);
	for (unsigned i = 0; i < ncpus; i++) {
		T_CHECK(t, tc.seen[i] == 0x55);
		T_CHECK(t, i == 0 || cpus[i]->tlb_flushes == served[i] + 1);
	}
	pt_set((uintptr_t)p, old);
	tlb_shootdown();
	frame_free(pa);
	T_CHECK(t, kernel_source.unmap(kernel_source.ctx, p, PAGE_SIZE) == 0);
}

/* The SMP stress: every CPU through its own keel cache, half its blocks freed
 * by the next CPU, the timer allocating in its handler all along. */
static void kernel_smp_stress(struct t *t)
{
	static struct stress_result r;
	unsigned rounds = 40;
	uint64_t shootdowns = tlb_shootdowns;
	int rc = smp_stress(rounds, &r);
	t_diag("  %lu TLB shootdowns during the run", tlb_shootdowns - shootdowns);
	t_diag("  %u CPUs, %u rounds: %lu blocks, %lu crossed CPUs; timer handler %lu allocs, "
	       "%lu frees in %lu ticks",
	       r.ncpus, r.rounds, r.allocs, r.crossed, r.isr_allocs, r.isr_frees, r.ticks);
	if (r.what[0])
		t_diag("  %s", r.what);
	if (r.isr_fails || r.isr_bad)
		t_diag("  timer handler: %lu allocations failed, %lu bad patterns, frees or locks held",
		       r.isr_fails, r.isr_bad);
	T_CHECK(t, rc == 0);
	T_CHECK(t, r.ncpus == ncpus && r.rounds == rounds);
	T_CHECK(t, r.errors == 0 && r.check_rc == 0 && r.isr_check_rc == 0);
	T_CHECK(t, r.counts_add_up && r.frames_back);
	T_CHECK(t, r.allocs == (uint64_t)rounds * ncpus * 32);
	T_CHECK(t, ncpus == 1 || r.crossed == r.allocs / 2);
	T_CHECK(t, r.isr_fails == 0 && r.isr_bad == 0);
}

struct isr_case {
	struct barrier bar;
	struct keel_heap *heap;
	volatile uint64_t bad;
};

/* Each CPU works on a heap (every call holds its spinlock with interrupts
 * off) while its timer allocates from the handler heap, until the handler
 * has done 2 * ISR_RING allocations here (or 20 s pass). */
static void isr_case_job(struct cpu *c, void *arg)
{
	struct isr_case *ic = arg;
	uint64_t allocs0 = c->isr_allocs, deadline = rdtsc() + tsc_hz() * 20;
	barrier_wait(&ic->bar);
	timer_set(62500);
	for (unsigned i = 0; c->isr_allocs - allocs0 < 2 * ISR_RING && rdtsc() < deadline; i++) {
		void *p = keel_malloc(ic->heap, 16 + i % 2000);
		if (!p || keel_free(ic->heap, p))
			__atomic_add_fetch(&ic->bad, 1, __ATOMIC_RELAXED);
	}
	timer_set(0);
}

/* Allocation from an interrupt handler: the timer handler allocates and frees
 * on a heap over a fixed region (no page source: it cannot grow), on every
 * CPU, never while the interrupted code holds a heap lock. */
static void kernel_isr_alloc(struct t *t)
{
	static struct isr_case ic;
	memset(&ic, 0, sizeof(ic));
	ic.bar.n = ncpus;
	ic.heap = t->heap;
	struct keel_stats st0, st1;
	T_REQUIRE(t, keel_stats(&isr_heap, &st0) == 0);
	uint64_t a0[MAX_CPUS], f0 = 0, bad0 = 0, fails0 = 0, ticks0 = 0;
	for (unsigned i = 0; i < ncpus; i++) {
		a0[i] = cpus[i]->isr_allocs;
		f0 += cpus[i]->isr_frees;
		bad0 += cpus[i]->isr_bad;
		fails0 += cpus[i]->isr_fails;
		ticks0 += cpus[i]->ticks;
	}
	struct keel_config cfg = { .source = &kernel_source, .lock = &kernel_lock };
	static struct keel_heap h;
	T_REQUIRE(t, keel_heap_init(&h, &cfg) == 0);
	ic.heap = &h;
	isr_alloc_on = 1;
	smp_run(isr_case_job, &ic);
	isr_alloc_on = 0;
	isr_alloc_drain();
	uint64_t allocs = 0, frees = 0, bad = 0, fails = 0, ticks = 0;
	unsigned cpus_ok = 0;
	for (unsigned i = 0; i < ncpus; i++) {
		uint64_t a = cpus[i]->isr_allocs - a0[i];
		cpus_ok += a >= 2 * ISR_RING;
		allocs += a;
		frees += cpus[i]->isr_frees;
		bad += cpus[i]->isr_bad;
		fails += cpus[i]->isr_fails;
		ticks += cpus[i]->ticks;
	}
	frees -= f0;
	bad -= bad0;
	fails -= fails0;
	ticks -= ticks0;
	t_diag("  %u CPUs: %lu allocations and %lu frees in the timer handler, %lu ticks", ncpus,
	       allocs, frees, ticks);
	T_CHECK(t, cpus_ok == ncpus);
	T_CHECK(t, allocs == frees && bad == 0 && fails == 0 && ic.bad == 0);
	T_CHECK_HEAP(t, &isr_heap);
	T_CHECK(t, keel_stats(&isr_heap, &st1) == 0);
	T_CHECK(t, st1.live_blocks == st0.live_blocks && st1.alloc_count - st0.alloc_count == allocs);
	T_CHECK(t, st1.source_maps == 0); /* a region heap: never a page source */
	T_CHECK_HEAP(t, &h);
	T_CHECK(t, keel_heap_destroy(&h) == 0);
}

static const struct t_case kernel_cases[] = {
	T_CASE(kernel_source_map_unmap),  T_CASE(kernel_source_reuses_range),
	T_CASE(kernel_source_protect),    T_CASE(kernel_freed_page_faults),
	T_CASE(kernel_checked_guards_fault),
	T_CASE(kernel_exceptions_reported), T_CASE(kernel_lock_keeps_if),
	T_CASE(kernel_heap_exhausts_ram), T_CASE(kernel_heap_consistent),
	T_CASE(kernel_spinlock_token),    T_CASE(kernel_tlb_shootdown),
	T_CASE(kernel_smp_stress),
	T_CASE(kernel_isr_alloc),         { 0 },
};

/* ---- the runner ------------------------------------------------------------ */

static void report(unsigned n, const char *name, int failed)
{
	char buf[120];
	int len = ksnprintf(buf, sizeof(buf), "%sok %u - %s\n", failed ? "not " : "", n, name);
	t_env_write(buf, (size_t)len);
}

/* Like tests/lib.c's run_case, plus: every frame the case took is back. */
static int run_kernel_case(const struct t_case *c, unsigned n)
{
	static struct keel_heap heap;
	static struct t_source src;
	static struct keel_config cfg;
	struct t t = { .heap = &heap, .src = &src, .config = &cfg };
	size_t frames = frame_free_count();

	t_source_init(&src, &kernel_source);
	cfg = (struct keel_config){ .source = &src.src };
	if (keel_heap_init(&heap, &cfg) != 0) {
		t_fail(&t, __FILE__, __LINE__, "keel_heap_init == 0");
	} else {
		c->fn(&t);
		T_CHECK_HEAP(&t, &heap);
		T_CHECK(&t, keel_heap_destroy(&heap) == 0);
		T_CHECK(&t, src.live_bytes == 0 && src.live_maps == 0 && src.bad_unmaps == 0);
		if (frame_free_count() != frames)
			t_diag("  frames free: %zu before, %zu after", frames, frame_free_count());
		T_CHECK(&t, frame_free_count() == frames);
	}
	report(n, c->name, t.failed);
	return t.failed != 0;
}

int run_tests(unsigned flags, unsigned *passed, unsigned *failed)
{
	unsigned nkernel = 0, npassed = 0, nfailed = 0;
	while (kernel_cases[nkernel].fn)
		nkernel++;
	quiet = flags & RUN_QUIET;
	timing = cmdline_get("keel.timing") != NULL;
	const char *fault = cmdline_get("keel.fault");
	fault_pf = fault && !kstrncmp(fault, "pf", 2);
	size_t frames = frame_free_count();
	uint64_t t0 = rdtsc();
	unsigned n = 0;

	if (flags & RUN_KERNEL_ONLY) {
		/* the quick self-test leaves out filling all of RAM (seconds at 4 GiB) */
		char buf[32];
		int len = ksnprintf(buf, sizeof(buf), "1..%u\n", nkernel - 1);
		t_env_write(buf, (size_t)len);
	} else {
		plan_extra = nkernel + 1;
		t_run_all(&npassed, &nfailed);
		n = npassed + nfailed;
		/* the shared cases, taken together, gave back every frame */
		int lost = frame_free_count() != frames;
		if (lost)
			t_diag("  frames free: %zu before the shared cases, %zu after", frames,
			       frame_free_count());
		report(++n, "kernel_shared_cases_return_frames", lost);
		lost ? nfailed++ : npassed++;
	}
	for (unsigned i = 0; i < nkernel; i++) {
		if ((flags & RUN_KERNEL_ONLY) && kernel_cases[i].fn == kernel_heap_exhausts_ram)
			continue;
		run_kernel_case(&kernel_cases[i], ++n) ? nfailed++ : npassed++;
	}

	uint64_t ms = (rdtsc() - t0) / (tsc_hz() / 1000 + 1);
	char buf[120];
	int len = ksnprintf(buf, sizeof(buf), "# kernel: %u passed, %u failed in %lu ms\n",
	                    npassed, nfailed, ms);
	t_env_write(buf, (size_t)len);
	quiet = 0;
	if (passed)
		*passed = npassed;
	if (failed)
		*failed = nfailed;
	return (int)nfailed;
}
