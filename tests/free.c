/* tests/free.c: keel_free of bad pointers (double, interior, foreign, from
 * another heap) is reported and changes nothing: the heap checks clean, the
 * block keeps its content and can still be freed exactly once. */
#include "test.h"

/* Allocate size, fill it, and make sure the heap is healthy. */
static unsigned char *live_block(struct t *t, struct keel_heap *h, size_t size, uint64_t tag)
{
	unsigned char *p = keel_malloc(h, size);
	T_CHECK(t, p != NULL);
	if (p)
		t_fill(p, size, tag);
	return p;
}

/* After a refused free: the heap is clean, p is live and intact, and p can
 * be freed exactly once. */
static void still_live_then_free(struct t *t, struct keel_heap *h, unsigned char *p, size_t size,
                                 uint64_t tag)
{
	T_CHECK_HEAP(t, h);
	T_CHECK(t, keel_usable_size(h, p) >= size);
	T_CHECK(t, t_verify(p, size, tag));
	T_CHECK(t, keel_free(h, p) == 0);
	T_CHECK(t, keel_free(h, p) != 0); /* exactly once */
	T_CHECK_HEAP(t, h);
}

static void free_null(struct t *t)
{
	T_CHECK(t, keel_free(t->heap, NULL) == 0);
	void *p = keel_malloc(t->heap, 10);
	T_REQUIRE(t, p != NULL);
	T_CHECK(t, keel_free(t->heap, NULL) == 0);
	struct keel_stats st;
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.free_count == 0 && st.live_blocks == 1);
	T_CHECK(t, keel_free(t->heap, p) == 0);
}

static void double_free(struct t *t, size_t size)
{
	unsigned char *keep = live_block(t, t->heap, size, 1); /* keeps the run/segment alive */
	unsigned char *p = live_block(t, t->heap, size, 2);
	struct keel_stats st;
	if (!p || !keep)
		return;
	T_CHECK(t, keel_stats(t->heap, &st) == 0);
	size_t frees0 = st.free_count;
	T_CHECK(t, keel_free(t->heap, p) == 0);
	int rc = keel_free(t->heap, p);
	if (rc != KEEL_EDOUBLE)
		t_diag("  second free of a %zu-byte block = %d", size, rc);
	T_CHECK(t, rc == KEEL_EDOUBLE);
	T_CHECK(t, keel_usable_size(t->heap, p) == 0);
	T_CHECK_HEAP(t, t->heap);
	T_CHECK(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.live_blocks == 1 && st.free_count == frees0 + 1);
	still_live_then_free(t, t->heap, keep, size, 1);
}

static void free_double_small(struct t *t)
{
	double_free(t, T_SMALL);
	double_free(t, 1);
}

static void free_double_every_class(struct t *t)
{
	size_t cs[KEEL_NCLASSES];
	unsigned n = t_class_sizes(t->heap, cs);
	T_REQUIRE(t, n > 0);
	for (unsigned i = 0; i < n; i++)
		double_free(t, cs[i]);
}

static void free_double_medium(struct t *t)
{
	double_free(t, T_MEDIUM);
	double_free(t, KEEL_SMALL_MAX + 1);
	double_free(t, 100000);
}

static void free_double_large(struct t *t)
{
	/* Once a large block's mapping is gone the core may no longer know it:
	 * KEEL_EDOUBLE or KEEL_ENOTOURS, never 0. */
	unsigned char *p = live_block(t, t->heap, T_LARGE, 3);
	T_REQUIRE(t, p != NULL);
	T_CHECK(t, keel_free(t->heap, p) == 0);
	int rc = keel_free(t->heap, p);
	T_CHECK(t, rc == KEEL_EDOUBLE || rc == KEEL_ENOTOURS);
	T_CHECK(t, keel_usable_size(t->heap, p) == 0);
	T_CHECK_HEAP(t, t->heap);
	/* and while other large blocks are live (q first: p's address may be reused) */
	unsigned char *q = live_block(t, t->heap, T_LARGE, 4);
	p = live_block(t, t->heap, T_LARGE, 5);
	T_REQUIRE(t, p != NULL && q != NULL && p != q);
	T_CHECK(t, keel_free(t->heap, p) == 0);
	rc = keel_free(t->heap, p);
	T_CHECK(t, rc == KEEL_EDOUBLE || rc == KEEL_ENOTOURS);
	still_live_then_free(t, t->heap, q, T_LARGE, 4);
}

static void interior(struct t *t, size_t size, int far_may_be_notours)
{
	const size_t offs[] = { 1, 8, 16, size / 2, size - 1 };
	unsigned char *p = live_block(t, t->heap, size, 5);
	if (!p)
		return;
	for (unsigned i = 0; i < sizeof offs / sizeof offs[0]; i++) {
		int rc = keel_free(t->heap, p + offs[i]);
		int ok = rc == KEEL_EINTERIOR;
		if (far_may_be_notours && offs[i] > 16)
			ok |= rc == KEEL_ENOTOURS;
		if (!ok)
			t_diag("  free(p + %zu) of a %zu-byte block = %d", offs[i], size, rc);
		T_CHECK(t, ok);
		T_CHECK(t, keel_usable_size(t->heap, p + offs[i]) == 0);
		T_CHECK_HEAP(t, t->heap);
	}
	still_live_then_free(t, t->heap, p, size, 5);
}

static void free_interior_small(struct t *t)
{
	interior(t, T_SMALL, 0);
	interior(t, KEEL_SMALL_MAX, 0);
}

static void free_interior_medium(struct t *t)
{
	interior(t, T_MEDIUM, 0);
	interior(t, 200000, 0);
}

static void free_interior_large(struct t *t)
{
	interior(t, T_LARGE, 1);
	unsigned char *p = live_block(t, t->heap, T_LARGE, 6);
	T_REQUIRE(t, p != NULL);
	int rc = keel_free(t->heap, p + KEEL_PAGE_SIZE);
	T_CHECK(t, rc == KEEL_EINTERIOR || rc == KEEL_ENOTOURS);
	rc = keel_free(t->heap, p + KEEL_SEGMENT_SIZE + 64);
	T_CHECK(t, rc == KEEL_EINTERIOR || rc == KEEL_ENOTOURS);
	still_live_then_free(t, t->heap, p, T_LARGE, 6);
}

static void free_interior_of_free_slot(struct t *t)
{
	/* An interior pointer into a slot that is free is still not a block start. */
	unsigned char *keep = live_block(t, t->heap, T_SMALL, 7);
	unsigned char *p = live_block(t, t->heap, T_SMALL, 8);
	T_REQUIRE(t, p != NULL && keep != NULL);
	T_CHECK(t, keel_free(t->heap, p) == 0);
	int rc = keel_free(t->heap, p + 16);
	T_CHECK(t, rc != 0);
	T_CHECK(t, rc == KEEL_EINTERIOR || rc == KEEL_EDOUBLE);
	T_CHECK_HEAP(t, t->heap);
	still_live_then_free(t, t->heap, keep, T_SMALL, 7);
}

static void free_foreign_env(struct t *t)
{
	unsigned char *p = live_block(t, t->heap, T_SMALL, 9);
	T_REQUIRE(t, p != NULL);
	void *f = t_env_foreign_pointer();
	T_CHECK(t, keel_free(t->heap, f) == KEEL_ENOTOURS);
	T_CHECK(t, keel_usable_size(t->heap, f) == 0);
	still_live_then_free(t, t->heap, p, T_SMALL, 9);
	T_CHECK(t, keel_free(t->heap, f) == KEEL_ENOTOURS); /* with no segment at all */
}

static void free_foreign_stack(struct t *t)
{
	uint64_t local[4];
	local[0] = 1;
	unsigned char *p = live_block(t, t->heap, T_MEDIUM, 10);
	T_REQUIRE(t, p != NULL);
	T_CHECK(t, keel_free(t->heap, &local[0]) == KEEL_ENOTOURS);
	T_CHECK(t, keel_free(t->heap, &local[2]) == KEEL_ENOTOURS);
	T_CHECK(t, keel_usable_size(t->heap, &local[0]) == 0);
	T_CHECK(t, local[0] == 1);
	still_live_then_free(t, t->heap, p, T_MEDIUM, 10);
}

static unsigned char unowned[256];

static void free_foreign_static(struct t *t)
{
	unsigned char *p = live_block(t, t->heap, 100, 11);
	T_REQUIRE(t, p != NULL);
	T_CHECK(t, keel_free(t->heap, unowned + 16) == KEEL_ENOTOURS);
	T_CHECK(t, keel_free(t->heap, (void *)(uintptr_t)16) == KEEL_ENOTOURS);
	T_CHECK(t, keel_free(t->heap, (void *)(uintptr_t)(UINTPTR_MAX & ~(uintptr_t)15)) ==
	                   KEEL_ENOTOURS);
	still_live_then_free(t, t->heap, p, 100, 11);
}

static void free_other_heap(struct t *t)
{
	static const size_t sizes[] = { T_SMALL, T_MEDIUM, T_LARGE };
	struct t_aux *b = t_aux_open(t, t_env_source(), NULL, 0, 0);
	T_REQUIRE(t, b != NULL);
	for (unsigned i = 0; i < 3; i++) {
		unsigned char *pa = live_block(t, t->heap, sizes[i], 20 + i);
		unsigned char *pb = live_block(t, &b->heap, sizes[i], 30 + i);
		T_REQUIRE(t, pa != NULL && pb != NULL);
		T_CHECK(t, keel_free(&b->heap, pa) == KEEL_ENOTOURS);
		T_CHECK(t, keel_free(t->heap, pb) == KEEL_ENOTOURS);
		T_CHECK(t, keel_usable_size(&b->heap, pa) == 0);
		T_CHECK(t, keel_usable_size(t->heap, pb) == 0);
		T_CHECK(t, keel_realloc(t->heap, pb, 10) == NULL);
		still_live_then_free(t, t->heap, pa, sizes[i], 20 + i);
		still_live_then_free(t, &b->heap, pb, sizes[i], 30 + i);
	}
	t_aux_close(t, b);
}

static void free_segment_header(struct t *t)
{
	/* The start of the segment that holds a block is keel's metadata, never a block. */
	unsigned char *p = live_block(t, t->heap, T_SMALL, 12);
	T_REQUIRE(t, p != NULL);
	uintptr_t seg = (uintptr_t)p & ~(uintptr_t)(KEEL_SEGMENT_SIZE - 1);
	if (seg != (uintptr_t)p) {
		int rc = keel_free(t->heap, (void *)seg);
		T_CHECK(t, rc == KEEL_EINTERIOR || rc == KEEL_ENOTOURS);
		rc = keel_free(t->heap, (void *)(seg + 64));
		T_CHECK(t, rc == KEEL_EINTERIOR || rc == KEEL_ENOTOURS);
	}
	still_live_then_free(t, t->heap, p, T_SMALL, 12);
}

static void free_errors_keep_stats(struct t *t)
{
	unsigned char *p = live_block(t, t->heap, T_MEDIUM, 13);
	T_REQUIRE(t, p != NULL);
	struct keel_stats a, b;
	T_REQUIRE(t, keel_stats(t->heap, &a) == 0);
	T_CHECK(t, keel_free(t->heap, p + 1) != 0);
	T_CHECK(t, keel_free(t->heap, p + 32) != 0);
	T_CHECK(t, keel_free(t->heap, t_env_foreign_pointer()) != 0);
	T_REQUIRE(t, keel_stats(t->heap, &b) == 0);
	T_CHECK(t, a.live_blocks == b.live_blocks);
	T_CHECK(t, a.in_use_bytes == b.in_use_bytes);
	T_CHECK(t, a.free_count == b.free_count);
	T_CHECK(t, a.free_bytes == b.free_bytes);
	still_live_then_free(t, t->heap, p, T_MEDIUM, 13);
}

const struct t_case free_cases[] = {
	T_CASE(free_null),
	T_CASE(free_double_small),
	T_CASE(free_double_every_class),
	T_CASE(free_double_medium),
	T_CASE(free_double_large),
	T_CASE(free_interior_small),
	T_CASE(free_interior_medium),
	T_CASE(free_interior_large),
	T_CASE(free_interior_of_free_slot),
	T_CASE(free_foreign_env),
	T_CASE(free_foreign_stack),
	T_CASE(free_foreign_static),
	T_CASE(free_other_heap),
	T_CASE(free_segment_header),
	T_CASE(free_errors_keep_stats),
	{ 0 },
};
