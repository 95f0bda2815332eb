/* tests/misuse.c: one case per way a program can misuse its heap. Each fault
 * runs on a fresh aux heap in default mode and in checked mode
 * (KEEL_HEAP_CHECKED): a bad pointer is refused with its code in both and
 * changes nothing; a fault only checked mode can see (overflow, underflow,
 * write after free, double free after reuse) is detected there. The heap is
 * left consistent: keel_check clean, every page back at t_aux_close. */
#include "test.h"

#define MODE_DEFAULT 1u
#define MODE_CHECKED 2u
#define MODE_BOTH    (MODE_DEFAULT | MODE_CHECKED)

/* Run fn on a fresh aux heap in each mode of modes. t_aux_close then
 * requires no report left untaken, keel_check clean and every page back. */
static void each_mode(struct t *t, unsigned modes,
                      void (*fn)(struct t *t, struct t_aux *a, unsigned flags))
{
	static const unsigned flags[2] = { 0, KEEL_HEAP_CHECKED };
	for (unsigned m = 0; m < 2; m++) {
		if (!(modes & (1u << m)))
			continue;
		struct t_aux *a = t_aux_open(t, t_env_source(), NULL, flags[m], 0);
		if (!a)
			return;
		int failed = t->failed;
		fn(t, a, flags[m]);
		t_aux_close(t, a);
		if (t->failed != failed)
			t_diag("  in %s mode", flags[m] ? "checked" : "default");
	}
}

/* What a refused call must leave as it was. */
struct snap {
	size_t live_blocks, in_use_bytes, free_count, free_bytes, source_bytes;
};

static void snap_take(struct t *t, struct t_aux *a, struct snap *s)
{
	struct keel_stats st;
	T_CHECK(t, keel_stats(&a->heap, &st) == 0);
	s->live_blocks = st.live_blocks;
	s->in_use_bytes = st.in_use_bytes;
	s->free_count = st.free_count;
	s->free_bytes = st.free_bytes;
	s->source_bytes = st.source_bytes;
}

static int snap_same(struct t *t, struct t_aux *a, const struct snap *s)
{
	struct snap now;
	snap_take(t, a, &now);
	int same = now.live_blocks == s->live_blocks && now.in_use_bytes == s->in_use_bytes &&
	           now.free_count == s->free_count && now.free_bytes == s->free_bytes &&
	           now.source_bytes == s->source_bytes;
	if (!same)
		t_diag("  stats moved: live %zu->%zu in_use %zu->%zu frees %zu->%zu free %zu->%zu",
		       s->live_blocks, now.live_blocks, s->in_use_bytes, now.in_use_bytes,
		       s->free_count, now.free_count, s->free_bytes, now.free_bytes);
	return same;
}

static unsigned char *live(struct t *t, struct t_aux *a, size_t size, uint64_t tag)
{
	unsigned char *p = keel_malloc(&a->heap, size);
	T_CHECK(t, p != NULL);
	if (p)
		t_fill(p, size, tag);
	return p;
}

/* p is live, intact and exactly as big as asked in checked mode; it frees once. */
static void intact_then_free(struct t *t, struct t_aux *a, unsigned flags, unsigned char *p,
                             size_t size, uint64_t tag)
{
	size_t usable = keel_usable_size(&a->heap, p);
	T_CHECK(t, flags ? usable == size : usable >= size);
	T_CHECK(t, t_verify(p, size, tag));
	T_CHECK(t, keel_free(&a->heap, p) == 0);
	T_CHECK_HEAP(t, &a->heap);
}

static int expect_rc(int rc, int want, const char *what, size_t size)
{
	if (rc == want)
		return 1;
	t_diag("  %s (%zu bytes) = %d (%s), expected %d (%s)", what, size, rc, keel_strerror(rc),
	       want, keel_strerror(want));
	return 0;
}

/* ---- double free ---------------------------------------------------------- */

static void double_free(struct t *t, struct t_aux *a, unsigned flags, size_t size)
{
	unsigned char *keep = live(t, a, size, 1); /* keeps the run/segment alive */
	unsigned char *p = live(t, a, size, 2);
	if (!p || !keep)
		return;
	T_CHECK(t, keel_free(&a->heap, p) == 0);
	struct snap s;
	snap_take(t, a, &s);
	int rc = keel_free(&a->heap, p);
	if (size >= KEEL_SEGMENT_SIZE && !flags) /* the mapping may be gone: then not ours */
		T_CHECK(t, rc == KEEL_EDOUBLE || rc == KEEL_ENOTOURS);
	else
		T_CHECK(t, expect_rc(rc, KEEL_EDOUBLE, "second free", size));
	T_CHECK(t, keel_usable_size(&a->heap, p) == 0);
	T_CHECK(t, keel_realloc(&a->heap, p, size + 1) == NULL);
	T_CHECK(t, snap_same(t, a, &s));
	T_CHECK_HEAP(t, &a->heap);
	intact_then_free(t, a, flags, keep, size, 1);
}

static void double_free_small(struct t *t, struct t_aux *a, unsigned flags)
{
	double_free(t, a, flags, T_SMALL);
	double_free(t, a, flags, 1);
	double_free(t, a, flags, KEEL_SMALL_MAX);
}

static void double_free_medium(struct t *t, struct t_aux *a, unsigned flags)
{
	double_free(t, a, flags, T_MEDIUM);
	double_free(t, a, flags, KEEL_SMALL_MAX + 1);
}

static void double_free_large(struct t *t, struct t_aux *a, unsigned flags)
{
	double_free(t, a, flags, T_LARGE);
}

/* Freed, then a new block of the same size, then the old pointer again: in
 * default mode the new block may well be the old one, so the second free is
 * a valid free of it. Checked mode's quarantine holds the old block back, so
 * the second free is still a double free and the new block survives it. */
static void double_free_reused(struct t *t, struct t_aux *a, unsigned flags)
{
	static const size_t sizes[] = { T_SMALL, T_MEDIUM, T_LARGE };
	(void)flags;
	for (unsigned i = 0; i < 3; i++) {
		size_t size = sizes[i];
		unsigned char *p = live(t, a, size, 10 + i);
		T_REQUIRE(t, p != NULL);
		T_CHECK(t, keel_free(&a->heap, p) == 0);
		unsigned char *q = live(t, a, size, 20 + i);
		T_REQUIRE(t, q != NULL);
		T_CHECK(t, q != p); /* quarantined: not handed out again yet */
		struct snap s;
		snap_take(t, a, &s);
		T_CHECK(t,
		        expect_rc(keel_free(&a->heap, p), KEEL_EDOUBLE, "free after reuse", size));
		T_CHECK(t, snap_same(t, a, &s));
		T_CHECK_HEAP(t, &a->heap);
		intact_then_free(t, a, KEEL_HEAP_CHECKED, q, size, 20 + i);
	}
}

/* ---- bad pointers ----------------------------------------------------------- */

static void free_interior(struct t *t, struct t_aux *a, unsigned flags)
{
	static const size_t sizes[] = { T_SMALL, KEEL_SMALL_MAX, T_MEDIUM, T_LARGE };
	for (unsigned i = 0; i < 4; i++) {
		size_t size = sizes[i];
		const size_t offs[] = { 1, 8, 16, size / 2, size - 1 };
		unsigned char *p = live(t, a, size, 30 + i);
		T_REQUIRE(t, p != NULL);
		struct snap s;
		snap_take(t, a, &s);
		for (unsigned k = 0; k < 5; k++) {
			int rc = keel_free(&a->heap, p + offs[k]);
			if (size >= KEEL_SEGMENT_SIZE && offs[k] > 16 && rc == KEEL_ENOTOURS)
				rc = KEEL_EINTERIOR; /* past a large block's first segment */
			T_CHECK(t, expect_rc(rc, KEEL_EINTERIOR, "free(p + off)", offs[k]));
			T_CHECK(t, keel_usable_size(&a->heap, p + offs[k]) == 0);
			T_CHECK(t, keel_realloc(&a->heap, p + offs[k], 10) == NULL);
		}
		T_CHECK(t, snap_same(t, a, &s));
		T_CHECK_HEAP(t, &a->heap);
		intact_then_free(t, a, flags, p, size, 30 + i);
	}
}

static void free_stack(struct t *t, struct t_aux *a, unsigned flags)
{
	uint64_t local[8];
	for (unsigned i = 0; i < 8; i++)
		local[i] = i;
	unsigned char *p = live(t, a, T_SMALL, 40);
	T_REQUIRE(t, p != NULL);
	struct snap s;
	snap_take(t, a, &s);
	for (unsigned i = 0; i < 8; i += 2) {
		T_CHECK(t,
		        expect_rc(keel_free(&a->heap, &local[i]), KEEL_ENOTOURS, "free(stack)", i));
		T_CHECK(t, keel_realloc(&a->heap, &local[i], 100) == NULL);
		T_CHECK(t, keel_usable_size(&a->heap, &local[i]) == 0);
	}
	for (unsigned i = 0; i < 8; i++)
		T_CHECK(t, local[i] == i);
	T_CHECK(t, snap_same(t, a, &s));
	intact_then_free(t, a, flags, p, T_SMALL, 40);
}

static void free_other_heap(struct t *t, struct t_aux *a, unsigned flags)
{
	static const size_t sizes[] = { T_SMALL, T_MEDIUM, T_LARGE };
	struct t_aux *b = t_aux_open(t, t_env_source(), NULL, flags, 0);
	T_REQUIRE(t, b != NULL);
	for (unsigned i = 0; i < 3; i++) {
		unsigned char *pa = live(t, a, sizes[i], 50 + i);
		unsigned char *pb = live(t, b, sizes[i], 60 + i);
		T_REQUIRE(t, pa != NULL && pb != NULL);
		struct snap sa, sb;
		snap_take(t, a, &sa);
		snap_take(t, b, &sb);
		T_CHECK(t, expect_rc(keel_free(&b->heap, pa), KEEL_ENOTOURS, "free(other heap's)",
		                     sizes[i]));
		T_CHECK(t, expect_rc(keel_free(&a->heap, pb), KEEL_ENOTOURS, "free(other heap's)",
		                     sizes[i]));
		T_CHECK(t, keel_realloc(&a->heap, pb, 10) == NULL);
		T_CHECK(t, keel_usable_size(&b->heap, pa) == 0);
		T_CHECK(t, snap_same(t, a, &sa) && snap_same(t, b, &sb));
		intact_then_free(t, a, flags, pa, sizes[i], 50 + i);
		intact_then_free(t, b, flags, pb, sizes[i], 60 + i);
	}
	t_aux_close(t, b);
}

/* Addresses inside a segment the heap holds that no allocation ever returned:
 * the segment's own metadata, its far end, a slot past the ones handed out.
 * They are the heap's (so never KEEL_ENOTOURS), but not a live block. */
static void free_never_allocated(struct t *t, struct t_aux *a, unsigned flags)
{
	unsigned char *p = live(t, a, T_SMALL, 70);
	unsigned char *m = live(t, a, T_MEDIUM, 71);
	T_REQUIRE(t, p != NULL && m != NULL);
	uintptr_t seg = (uintptr_t)p & ~(uintptr_t)(KEEL_SEGMENT_SIZE - 1);
	uintptr_t bad[6];
	unsigned n = 0;
	bad[n++] = seg;
	bad[n++] = seg + 64;
	bad[n++] = seg + KEEL_SEGMENT_SIZE - 16;
	bad[n++] = seg + KEEL_SEGMENT_SIZE - KEEL_PAGE_SIZE;
	bad[n++] = ((uintptr_t)m & ~(uintptr_t)(KEEL_SEGMENT_SIZE - 1)) + KEEL_SEGMENT_SIZE / 2;
	if (!flags) /* default mode: p's slot is its class size; 8 slots on none was used */
		bad[n++] = (uintptr_t)p + 8 * keel_usable_size(&a->heap, p);
	struct snap s;
	snap_take(t, a, &s);
	for (unsigned i = 0; i < n; i++) {
		if (bad[i] == (uintptr_t)p || bad[i] == (uintptr_t)m)
			continue;
		int rc = keel_free(&a->heap, (void *)bad[i]);
		if (rc != KEEL_EINTERIOR && rc != KEEL_EDOUBLE)
			t_diag("  free(%p), never allocated, in a segment at %p = %d (%s)",
			       (void *)bad[i], (void *)seg, rc, keel_strerror(rc));
		T_CHECK(t, rc == KEEL_EINTERIOR || rc == KEEL_EDOUBLE);
		T_CHECK(t, keel_usable_size(&a->heap, (void *)bad[i]) == 0);
		T_CHECK(t, keel_realloc(&a->heap, (void *)bad[i], 10) == NULL);
	}
	T_CHECK(t, snap_same(t, a, &s));
	T_CHECK_HEAP(t, &a->heap);
	/* the never-used slots are handed out normally afterwards */
	static unsigned char *more[16];
	for (unsigned i = 0; i < 16; i++) {
		more[i] = live(t, a, T_SMALL, 80 + i);
		T_REQUIRE(t, more[i] != NULL);
	}
	for (unsigned i = 0; i < 16; i++)
		intact_then_free(t, a, flags, more[i], T_SMALL, 80 + i);
	intact_then_free(t, a, flags, p, T_SMALL, 70);
	intact_then_free(t, a, flags, m, T_MEDIUM, 71);
}

static void realloc_freed(struct t *t, struct t_aux *a, unsigned flags)
{
	static const size_t sizes[] = { T_SMALL, T_MEDIUM, T_LARGE };
	for (unsigned i = 0; i < 3; i++) {
		size_t size = sizes[i];
		unsigned char *keep = live(t, a, size, 90 + i);
		unsigned char *p = live(t, a, size, 95 + i);
		T_REQUIRE(t, keep != NULL && p != NULL);
		T_CHECK(t, keel_free(&a->heap, p) == 0);
		struct snap s;
		snap_take(t, a, &s);
		T_CHECK(t, keel_realloc(&a->heap, p, size / 2) == NULL);
		T_CHECK(t, keel_realloc(&a->heap, p, size * 2) == NULL);
		T_CHECK(t, keel_realloc(&a->heap, p, size) == NULL);
		T_CHECK(t, snap_same(t, a, &s));
		T_CHECK_HEAP(t, &a->heap);
		int rc = keel_free(&a->heap, p);
		T_CHECK(t, rc == KEEL_EDOUBLE ||
		                   (!flags && size >= KEEL_SEGMENT_SIZE && rc == KEEL_ENOTOURS));
		intact_then_free(t, a, flags, keep, size, 90 + i);
	}
}

/* ---- writes outside a block (checked mode) -------------------------------- */

/* Write n bytes from p + off (saving them), see the damage reported by
 * keel_check and by keel_free as want (the block stays allocated), restore
 * the bytes, and the heap is clean and the block frees. */
static void damage(struct t *t, struct t_aux *a, size_t size, long off, size_t n, int want)
{
	unsigned char saved[16];
	unsigned char *keep = live(t, a, size, 100); /* a neighbour, maybe the next block */
	unsigned char *p = live(t, a, size, 101);
	unsigned char *after = live(t, a, size, 102);
	T_REQUIRE(t, keep != NULL && p != NULL && after != NULL && n <= 16);
	unsigned char *w = p + off;
	for (size_t i = 0; i < n; i++) {
		saved[i] = w[i];
		w[i] = (unsigned char)(saved[i] ^ 0x5a);
	}
	struct keel_fault f;
	f.what = NULL;
	int rc = keel_check(&a->heap, &f);
	if (rc != KEEL_ECORRUPT)
		t_diag("  %zu bytes at p%s%d of a %zu-byte block: keel_check = %d", n,
		       off < 0 ? "" : "+", (int)off, size, rc);
	T_CHECK(t, rc == KEEL_ECORRUPT);
	T_CHECK(t, f.what != NULL);
	rc = keel_free(&a->heap, p);
	T_CHECK(t, expect_rc(rc, want, "free of the damaged block", size));
	if (rc == 0)
		return; /* freed after all: p and its neighbours' bytes are no longer ours */
	/* still allocated; its size is known while its header is intact (a
	 * damaged header is the very thing keel_usable_size cannot trust) */
	if (want == KEEL_EOVERFLOW)
		T_CHECK(t, keel_usable_size(&a->heap, p) == size);
	T_CHECK(t, t_verify(p, size, 101));
	for (size_t i = 0; i < n; i++)
		w[i] = saved[i];
	T_CHECK_HEAP(t, &a->heap);
	intact_then_free(t, a, KEEL_HEAP_CHECKED, p, size, 101);
	intact_then_free(t, a, KEEL_HEAP_CHECKED, after, size, 102);
	intact_then_free(t, a, KEEL_HEAP_CHECKED, keep, size, 100);
}

static void overflow_1(struct t *t, struct t_aux *a, unsigned flags)
{
	static const size_t sizes[] = { 1,        40,   T_SMALL, 1000,       KEEL_SMALL_MAX,
		                        T_MEDIUM, 3001, 100000,  T_LARGE + 5 };
	(void)flags;
	for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
		damage(t, a, sizes[i], (long)sizes[i], 1, KEEL_EOVERFLOW);
}

/* 16 bytes past the end: into the next slot or block's header as well. */
static void overflow_16(struct t *t, struct t_aux *a, unsigned flags)
{
	static const size_t sizes[] = { 16, 48, T_SMALL, 1000, T_MEDIUM, 3001, 100000 };
	(void)flags;
	for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
		damage(t, a, sizes[i], (long)sizes[i], 16, KEEL_EOVERFLOW);
}

/* Before a medium block: its header's check code and canary. */
static void underflow_header(struct t *t, struct t_aux *a, unsigned flags)
{
	(void)flags;
	damage(t, a, T_MEDIUM, -1, 1, KEEL_ECORRUPT);
	damage(t, a, T_MEDIUM, -8, 1, KEEL_ECORRUPT);
	damage(t, a, T_MEDIUM, -16, 16, KEEL_ECORRUPT);
	damage(t, a, 100000, -4, 4, KEEL_ECORRUPT);
}

/* Checked mode: a byte of a freed block changed while it sat in quarantine.
 * Churn through blocks of its size until it would be handed out again: the
 * change is reported once as KEEL_EUSEAFTER for that block, which is never
 * handed out again, and the heap stays consistent. */
static void write_after_free_size(struct t *t, struct t_aux *a, size_t size, size_t at)
{
	unsigned char *p = live(t, a, size, 110);
	T_REQUIRE(t, p != NULL);
	T_CHECK(t, keel_free(&a->heap, p) == 0);
	p[at] ^= 0x21;
	unsigned churn = 0;
	while (a->nreports == 0 && churn < 4 * KEEL_QUARANTINE_BLOCKS) {
		unsigned char *q = keel_malloc(&a->heap, size);
		T_REQUIRE(t, q != NULL);
		if (q == p)
			t_diag("  the damaged %zu-byte block was handed out again", size);
		T_REQUIRE(t, q != p);
		T_CHECK(t, keel_free(&a->heap, q) == 0);
		churn++;
	}
	if (a->nreports != 1)
		t_diag("  %zu-byte block written after free: %u reports after %u blocks", size,
		       a->nreports, churn);
	T_REQUIRE(t, a->nreports == 1);
	T_CHECK(t, expect_rc(a->reports[0].err, KEEL_EUSEAFTER, "report", size));
	T_CHECK(t, a->reports[0].p == p);
	a->nreports = 0;
	T_CHECK_HEAP(t, &a->heap);
	/* the heap goes on: blocks of that size come and go, never p */
	static unsigned char *more[32];
	for (unsigned i = 0; i < 32; i++) {
		more[i] = live(t, a, size, 120 + i);
		T_REQUIRE(t, more[i] != NULL);
		T_CHECK(t, more[i] != p);
	}
	for (unsigned i = 0; i < 32; i++)
		intact_then_free(t, a, KEEL_HEAP_CHECKED, more[i], size, 120 + i);
	T_CHECK(t, keel_free(&a->heap, p) != 0);
	T_CHECK(t, a->nreports == 0);
}

static void write_after_free(struct t *t, struct t_aux *a, unsigned flags)
{
	(void)flags;
	write_after_free_size(t, a, T_SMALL, 0);
	write_after_free_size(t, a, 200, 199);
	write_after_free_size(t, a, T_MEDIUM, T_MEDIUM / 2);
}

/* Default mode: writing over a freed small slot clobbers its free-list link,
 * which is stored encoded: the corruption is reported (KEEL_ECORRUPT) when
 * the slot is reached, the link is never followed, and every block handed
 * out afterwards is a distinct, usable one. */
static void write_after_free_link(struct t *t, struct t_aux *a, unsigned flags)
{
	(void)flags;
	static unsigned char *blk[24];
	unsigned char *keep = live(t, a, T_SMALL, 130);
	unsigned char *p = live(t, a, T_SMALL, 131);
	T_REQUIRE(t, keep != NULL && p != NULL);
	T_CHECK(t, keel_free(&a->heap, p) == 0);
	t_memset(p, 0x3c, T_SMALL);
	unsigned n = 0;
	while (n < 24) {
		blk[n] = keel_malloc(&a->heap, T_SMALL);
		T_REQUIRE(t, blk[n] != NULL);
		for (unsigned i = 0; i < n; i++)
			T_CHECK(t, blk[i] != blk[n]);
		T_CHECK(t, blk[n] != keep);
		t_fill(blk[n], T_SMALL, 140 + n);
		n++;
	}
	if (a->nreports != 1)
		t_diag("  slot %p overwritten after free: %u reports", (void *)p, a->nreports);
	T_CHECK(t, a->nreports == 1);
	T_CHECK(t, a->nreports == 0 || a->reports[0].err == KEEL_ECORRUPT);
	a->nreports = 0;
	for (unsigned i = 0; i < n; i++)
		intact_then_free(t, a, 0, blk[i], T_SMALL, 140 + i);
	intact_then_free(t, a, 0, keep, T_SMALL, 130);
	T_CHECK(t, a->nreports == 0);
}

/* ---- bad sizes and alignments --------------------------------------------- */

static void calloc_overflow(struct t *t, struct t_aux *a, unsigned flags)
{
	static const size_t pairs[][2] = {
		{ SIZE_MAX / 2 + 1, 2 },   { 2, SIZE_MAX / 2 + 1 },
		{ SIZE_MAX, SIZE_MAX },    { (size_t)1 << 32, (size_t)1 << 32 },
		{ SIZE_MAX / 16 + 1, 16 }, { 3, SIZE_MAX / 3 + 1 },
	};
	(void)flags;
	unsigned char *p = live(t, a, T_SMALL, 150);
	T_REQUIRE(t, p != NULL);
	struct snap s;
	snap_take(t, a, &s);
	for (unsigned i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
		void *q = keel_calloc(&a->heap, pairs[i][0], pairs[i][1]);
		if (q)
			t_diag("  calloc(%zu, %zu) = %p", pairs[i][0], pairs[i][1], q);
		T_CHECK(t, q == NULL);
	}
	T_CHECK(t, snap_same(t, a, &s));
	T_CHECK_HEAP(t, &a->heap);
	intact_then_free(t, a, flags, p, T_SMALL, 150);
}

/* keel_aligned_alloc(align, size) of each size is NULL, and changes nothing. */
static void bad_align(struct t *t, struct t_aux *a, unsigned flags, size_t align)
{
	static const size_t sizes[] = { 0, 1, 64, T_MEDIUM, T_LARGE };
	unsigned char *p = live(t, a, T_MEDIUM, 160);
	T_REQUIRE(t, p != NULL);
	struct snap s;
	snap_take(t, a, &s);
	size_t calls = a->src.map_calls;
	for (unsigned i = 0; i < 5; i++) {
		void *q = keel_aligned_alloc(&a->heap, align, sizes[i]);
		if (q)
			t_diag("  aligned_alloc(%zu, %zu) = %p", align, sizes[i], q);
		T_CHECK(t, q == NULL);
	}
	T_CHECK(t, a->src.map_calls == calls); /* refused up front */
	T_CHECK(t, snap_same(t, a, &s));
	T_CHECK_HEAP(t, &a->heap);
	intact_then_free(t, a, flags, p, T_MEDIUM, 160);
}

static void align_zero(struct t *t, struct t_aux *a, unsigned flags)
{
	bad_align(t, a, flags, 0);
}

static void align_3(struct t *t, struct t_aux *a, unsigned flags)
{
	bad_align(t, a, flags, 3);
}

static void align_not_pow2(struct t *t, struct t_aux *a, unsigned flags)
{
	bad_align(t, a, flags, 48);
	bad_align(t, a, flags, 4097);
	bad_align(t, a, flags, 3 * KEEL_SEGMENT_SIZE);
	bad_align(t, a, flags, SIZE_MAX);
}

static void align_over_1g(struct t *t, struct t_aux *a, unsigned flags)
{
	bad_align(t, a, flags, KEEL_MAX_ALIGN * 2);
	bad_align(t, a, flags, (size_t)1 << 40);
	bad_align(t, a, flags, SIZE_MAX / 2 + 1);
}

/* Every way to ask for size bytes gives NULL and changes nothing; a block
 * realloc'ed to it stays as it was. */
static void bad_size(struct t *t, struct t_aux *a, unsigned flags, size_t size)
{
	static struct keel_cache c;
	unsigned char *p = live(t, a, T_MEDIUM, 170);
	T_REQUIRE(t, p != NULL);
	T_REQUIRE(t, keel_cache_init(&c, &a->heap) == 0);
	struct snap s;
	snap_take(t, a, &s);
	T_CHECK(t, keel_malloc(&a->heap, size) == NULL);
	T_CHECK(t, keel_calloc(&a->heap, 1, size) == NULL);
	T_CHECK(t, keel_calloc(&a->heap, size, 1) == NULL);
	T_CHECK(t, keel_realloc(&a->heap, NULL, size) == NULL);
	T_CHECK(t, keel_realloc(&a->heap, p, size) == NULL);
	T_CHECK(t, keel_aligned_alloc(&a->heap, 16, size) == NULL);
	T_CHECK(t, keel_aligned_alloc(&a->heap, KEEL_PAGE_SIZE, size) == NULL);
	T_CHECK(t, keel_aligned_alloc(&a->heap, KEEL_SEGMENT_SIZE, size) == NULL);
	T_CHECK(t, keel_cache_malloc(&c, size) == NULL);
	T_CHECK(t, snap_same(t, a, &s));
	T_CHECK_HEAP(t, &a->heap);
	intact_then_free(t, a, flags, p, T_MEDIUM, 170);
	keel_cache_flush(&c);
}

static void size_max(struct t *t, struct t_aux *a, unsigned flags)
{
	bad_size(t, a, flags, SIZE_MAX);
}

static void size_max_4096(struct t *t, struct t_aux *a, unsigned flags)
{
	bad_size(t, a, flags, SIZE_MAX - 4096);
	bad_size(t, a, flags, SIZE_MAX - KEEL_SEGMENT_SIZE);
	bad_size(t, a, flags, SIZE_MAX / 2 + 1);
}

/* ---- the table -------------------------------------------------------------- */

#define MISUSE(name, modes)                                                                        \
	static void misuse_##name(struct t *t)                                                     \
	{                                                                                          \
		each_mode(t, modes, name);                                                         \
	}

MISUSE(double_free_small, MODE_BOTH)
MISUSE(double_free_medium, MODE_BOTH)
MISUSE(double_free_large, MODE_BOTH)
MISUSE(double_free_reused, MODE_CHECKED)
MISUSE(free_interior, MODE_BOTH)
MISUSE(free_stack, MODE_BOTH)
MISUSE(free_other_heap, MODE_BOTH)
MISUSE(free_never_allocated, MODE_BOTH)
MISUSE(realloc_freed, MODE_BOTH)
MISUSE(overflow_1, MODE_CHECKED)
MISUSE(overflow_16, MODE_CHECKED)
MISUSE(underflow_header, MODE_CHECKED)
MISUSE(write_after_free, MODE_CHECKED)
MISUSE(write_after_free_link, MODE_DEFAULT)
MISUSE(calloc_overflow, MODE_BOTH)
MISUSE(align_zero, MODE_BOTH)
MISUSE(align_3, MODE_BOTH)
MISUSE(align_not_pow2, MODE_BOTH)
MISUSE(align_over_1g, MODE_BOTH)
MISUSE(size_max, MODE_BOTH)
MISUSE(size_max_4096, MODE_BOTH)

const struct t_case misuse_cases[] = {
	T_CASE(misuse_double_free_small), T_CASE(misuse_double_free_medium),
	T_CASE(misuse_double_free_large), T_CASE(misuse_double_free_reused),
	T_CASE(misuse_free_interior),     T_CASE(misuse_free_stack),
	T_CASE(misuse_free_other_heap),   T_CASE(misuse_free_never_allocated),
	T_CASE(misuse_realloc_freed),     T_CASE(misuse_overflow_1),
	T_CASE(misuse_overflow_16),       T_CASE(misuse_underflow_header),
	T_CASE(misuse_write_after_free),  T_CASE(misuse_write_after_free_link),
	T_CASE(misuse_calloc_overflow),   T_CASE(misuse_align_zero),
	T_CASE(misuse_align_3),           T_CASE(misuse_align_not_pow2),
	T_CASE(misuse_align_over_1g),     T_CASE(misuse_size_max),
	T_CASE(misuse_size_max_4096),     { 0 },
};
