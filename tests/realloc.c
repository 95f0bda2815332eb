/* tests/realloc.c: keel_realloc keeps content and alignment, resizes in place
 * when it can, and leaves p untouched whenever it returns NULL. */
#include "test.h"

static void realloc_null_is_malloc(struct t *t)
{
	unsigned char *p = keel_realloc(t->heap, NULL, 100);
	T_REQUIRE(t, p != NULL);
	T_CHECK(t, T_ALIGNED(p, 16));
	T_CHECK(t, keel_usable_size(t->heap, p) >= 100);
	t_fill(p, 100, 1);
	T_CHECK(t, keel_free(t->heap, p) == 0);
	/* realloc(NULL, 0) is malloc(0): a unique block */
	void *z = keel_realloc(t->heap, NULL, 0);
	T_CHECK(t, z != NULL);
	T_CHECK(t, keel_free(t->heap, z) == 0);
	p = keel_realloc(t->heap, NULL, T_LARGE);
	T_REQUIRE(t, p != NULL);
	T_CHECK(t, keel_free(t->heap, p) == 0);
}

static void realloc_zero_frees(struct t *t)
{
	static const size_t sizes[] = { T_SMALL, T_MEDIUM, T_LARGE };
	for (unsigned i = 0; i < 3; i++) {
		void *keep = keel_malloc(t->heap, sizes[i]);
		void *p = keel_malloc(t->heap, sizes[i]);
		T_REQUIRE(t, p != NULL && keep != NULL);
		struct keel_stats st;
		T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
		size_t live0 = st.live_blocks;
		T_CHECK(t, keel_realloc(t->heap, p, 0) == NULL);
		T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
		T_CHECK(t, st.live_blocks == live0 - 1);
		int rc = keel_free(t->heap, p);
		T_CHECK(t, rc != 0);
		if (sizes[i] != T_LARGE)
			T_CHECK(t, rc == KEEL_EDOUBLE);
		T_CHECK_HEAP(t, t->heap);
		T_CHECK(t, keel_free(t->heap, keep) == 0);
	}
}

static void resize_check(struct t *t, size_t from, size_t to)
{
	unsigned char *p = keel_malloc(t->heap, from);
	T_REQUIRE(t, p != NULL);
	t_fill(p, from, from ^ to);
	unsigned char *q = keel_realloc(t->heap, p, to);
	T_REQUIRE(t, q != NULL);
	T_CHECK(t, T_ALIGNED(q, 16));
	T_CHECK(t, keel_usable_size(t->heap, q) >= to);
	if (!t_verify(q, from < to ? from : to, from ^ to)) {
		t_diag("  realloc %zu -> %zu lost content", from, to);
		T_CHECK(t, !"content kept");
	}
	t_fill(q, to, 99);
	T_CHECK(t, keel_free(t->heap, q) == 0);
	if (q != p)
		T_CHECK(t, keel_free(t->heap, p) != 0); /* the old block went away */
}

static void realloc_grow(struct t *t)
{
	resize_check(t, 1, 2);
	resize_check(t, 16, 17);
	resize_check(t, 100, 1000);
	resize_check(t, KEEL_SMALL_MAX, KEEL_SMALL_MAX + 1);
	resize_check(t, T_MEDIUM, 60000);
	resize_check(t, 60000, T_LARGE);
	resize_check(t, T_LARGE, T_LARGE + KEEL_SEGMENT_SIZE + 5);
}

static void realloc_shrink(struct t *t)
{
	resize_check(t, 2, 1);
	resize_check(t, 1000, 100);
	resize_check(t, KEEL_SMALL_MAX + 1, KEEL_SMALL_MAX);
	resize_check(t, 60000, T_MEDIUM);
	resize_check(t, T_LARGE, 60000);
	resize_check(t, T_LARGE, 10);
}

static void realloc_same_size_in_place(struct t *t)
{
	static const size_t sizes[] = { 1, T_SMALL, KEEL_SMALL_MAX, T_MEDIUM, 100000, T_LARGE };
	for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		unsigned char *p = keel_malloc(t->heap, sizes[i]);
		T_REQUIRE(t, p != NULL);
		t_fill(p, sizes[i], i);
		size_t u = keel_usable_size(t->heap, p);
		T_CHECK(t, keel_realloc(t->heap, p, sizes[i]) == p);
		T_CHECK(t, keel_realloc(t->heap, p, u) == p);
		T_CHECK(t, t_verify(p, sizes[i], i));
		T_CHECK(t, keel_free(t->heap, p) == 0);
	}
}

static void realloc_shrink_in_place(struct t *t)
{
	/* keel.h: a medium block shrinks in place; a large one while the new
	 * size keeps more than half of its pages in use. */
	static const size_t medium[] = { 10000, 5000, KEEL_SMALL_MAX + 1 };
	unsigned char *p = keel_malloc(t->heap, 20000);
	T_REQUIRE(t, p != NULL);
	t_fill(p, 20000, 1);
	for (unsigned i = 0; i < 3; i++) {
		T_CHECK(t, keel_realloc(t->heap, p, medium[i]) == p);
		T_CHECK(t, keel_usable_size(t->heap, p) >= medium[i]);
		T_CHECK(t, t_verify(p, medium[i], 1));
	}
	T_CHECK_HEAP(t, t->heap);
	T_CHECK(t, keel_free(t->heap, p) == 0);

	p = keel_malloc(t->heap, 4 * KEEL_SEGMENT_SIZE);
	T_REQUIRE(t, p != NULL);
	size_t u = keel_usable_size(t->heap, p);
	size_t to[3];
	to[0] = 4 * KEEL_SEGMENT_SIZE - KEEL_PAGE_SIZE;
	to[1] = u - u / 4;
	to[2] = u / 2 + KEEL_PAGE_SIZE;
	t_fill(p, 4 * KEEL_SEGMENT_SIZE, 2);
	for (unsigned i = 0; i < 3; i++) {
		unsigned char *q = keel_realloc(t->heap, p, to[i]);
		T_REQUIRE(t, q != NULL);
		if (q != p)
			t_diag("  large shrink to %zu (usable %zu) moved the block", to[i], u);
		T_CHECK(t, q == p);
		T_CHECK(t, t_verify(q, to[i], 2));
		p = q;
	}
	/* far below half it may move; the content stays either way */
	unsigned char *q = keel_realloc(t->heap, p, KEEL_SEGMENT_SIZE + 1);
	T_REQUIRE(t, q != NULL);
	T_CHECK(t, t_verify(q, KEEL_SEGMENT_SIZE + 1, 2));
	T_CHECK_HEAP(t, t->heap);
	T_CHECK(t, keel_free(t->heap, q) == 0);
}

static void realloc_grow_medium_in_place(struct t *t)
{
	/* Three neighbours carved in a row; free the middle one and grow the
	 * lowest into it: the free space right after it must be used in place. */
	unsigned char *b[3];
	for (int i = 0; i < 3; i++) {
		b[i] = keel_malloc(t->heap, 8000);
		T_REQUIRE(t, b[i] != NULL);
	}
	for (int i = 0; i < 3; i++)
		for (int j = i + 1; j < 3; j++)
			if (b[j] < b[i]) {
				unsigned char *x = b[i];
				b[i] = b[j];
				b[j] = x;
			}
	size_t u0 = keel_usable_size(t->heap, b[0]);
	size_t gap = (size_t)(b[1] - b[0]);
	if (gap < u0 || gap > u0 + 256) {
		t_diag("  the three 8000-byte blocks are not neighbours (%p %p %p)", b[0], b[1],
		       b[2]);
		T_CHECK(t, !"consecutive medium blocks are adjacent");
	}
	t_fill(b[0], 8000, 3);
	t_fill(b[2], 8000, 4);
	T_CHECK(t, keel_free(t->heap, b[1]) == 0);
	unsigned char *q = keel_realloc(t->heap, b[0], 12000);
	T_CHECK(t, q == b[0]);
	T_REQUIRE(t, q != NULL);
	T_CHECK(t, keel_usable_size(t->heap, q) >= 12000);
	T_CHECK(t, t_verify(q, 8000, 3));
	T_CHECK(t, t_verify(b[2], 8000, 4));
	t_fill(q, 12000, 5);
	T_CHECK(t, t_verify(b[2], 8000, 4));
	T_CHECK_HEAP(t, t->heap);
	T_CHECK(t, keel_free(t->heap, q) == 0);
	T_CHECK(t, keel_free(t->heap, b[2]) == 0);
}

static void realloc_moves_keep_content(struct t *t)
{
	/* small -> medium -> large -> medium -> small, content kept all the way */
	static const size_t steps[] = {
		40, 900, T_MEDIUM, 100000, T_LARGE, 3 * KEEL_SEGMENT_SIZE, 70000, 2000, 500, 24
	};
	size_t size = steps[0];
	unsigned char *p = keel_malloc(t->heap, size);
	T_REQUIRE(t, p != NULL);
	t_fill(p, size, 77);
	for (unsigned i = 1; i < sizeof steps / sizeof steps[0]; i++) {
		unsigned char *q = keel_realloc(t->heap, p, steps[i]);
		T_REQUIRE(t, q != NULL);
		size_t keep = size < steps[i] ? size : steps[i];
		if (!t_verify(q, keep, 77)) {
			t_diag("  realloc %zu -> %zu lost content", size, steps[i]);
			T_CHECK(t, !"content kept");
		}
		t_fill(q, steps[i], 77);
		T_CHECK_HEAP(t, t->heap);
		p = q;
		size = steps[i];
	}
	T_CHECK(t, keel_free(t->heap, p) == 0);
}

static void realloc_grow_by_one(struct t *t)
{
	unsigned char *p = NULL;
	for (size_t size = 1; size <= 2100; size++) {
		unsigned char *q = keel_realloc(t->heap, p, size);
		T_REQUIRE(t, q != NULL);
		if (size > 1 && !t_verify(q, size - 1, 5)) {
			t_diag("  realloc to %zu lost content", size);
			T_REQUIRE(t, !"content kept");
		}
		t_fill(q, size, 5);
		p = q;
	}
	T_CHECK(t, keel_free(t->heap, p) == 0);
}

static void realloc_keeps_alignment(struct t *t)
{
	static const size_t aligns[] = { 4096, 65536 };
	for (unsigned i = 0; i < 2; i++) {
		size_t a = aligns[i];
		unsigned char *p = keel_aligned_alloc(t->heap, a, 100);
		T_REQUIRE(t, p != NULL);
		T_CHECK(t, T_ALIGNED(p, a));
		t_fill(p, 100, a);
		unsigned char *q = keel_realloc(t->heap, p, 100000);
		T_REQUIRE(t, q != NULL);
		T_CHECK(t, T_ALIGNED(q, a));
		T_CHECK(t, t_verify(q, 100, a));
		unsigned char *r = keel_realloc(t->heap, q, 5000000);
		T_REQUIRE(t, r != NULL);
		T_CHECK(t, T_ALIGNED(r, a));
		T_CHECK(t, t_verify(r, 100, a));
		unsigned char *s = keel_realloc(t->heap, r, 50);
		T_REQUIRE(t, s != NULL);
		T_CHECK(t, T_ALIGNED(s, a));
		T_CHECK(t, t_verify(s, 50, a));
		T_CHECK(t, keel_free(t->heap, s) == 0);
	}
}

static void realloc_invalid_pointer(struct t *t)
{
	unsigned char *p = keel_malloc(t->heap, T_MEDIUM);
	unsigned char *s = keel_malloc(t->heap, T_SMALL);
	T_REQUIRE(t, p != NULL && s != NULL);
	t_fill(p, T_MEDIUM, 6);
	t_fill(s, T_SMALL, 7);
	struct keel_stats a, b;
	T_REQUIRE(t, keel_stats(t->heap, &a) == 0);
	uint64_t local = 42;
	T_CHECK(t, keel_realloc(t->heap, p + 16, 100) == NULL);
	T_CHECK(t, keel_realloc(t->heap, p + 1, 10000) == NULL);
	T_CHECK(t, keel_realloc(t->heap, s + 16, 8) == NULL);
	T_CHECK(t, keel_realloc(t->heap, t_env_foreign_pointer(), 100) == NULL);
	T_CHECK(t, keel_realloc(t->heap, &local, 100) == NULL);
	T_CHECK(t, local == 42);
	T_REQUIRE(t, keel_stats(t->heap, &b) == 0);
	T_CHECK(t, a.live_blocks == b.live_blocks);
	T_CHECK(t, a.in_use_bytes == b.in_use_bytes);
	T_CHECK(t, a.alloc_count == b.alloc_count);
	T_CHECK(t, a.free_count == b.free_count);
	T_CHECK_HEAP(t, t->heap);
	T_CHECK(t, t_verify(p, T_MEDIUM, 6));
	T_CHECK(t, t_verify(s, T_SMALL, 7));
	T_CHECK(t, keel_free(t->heap, p) == 0);
	T_CHECK(t, keel_free(t->heap, s) == 0);
}

static void realloc_freed_pointer(struct t *t)
{
	static const size_t sizes[] = { T_SMALL, T_MEDIUM };
	for (unsigned i = 0; i < 2; i++) {
		void *keep = keel_malloc(t->heap, sizes[i]);
		void *p = keel_malloc(t->heap, sizes[i]);
		T_REQUIRE(t, p != NULL && keep != NULL);
		T_CHECK(t, keel_free(t->heap, p) == 0);
		T_CHECK(t, keel_realloc(t->heap, p, sizes[i] * 2) == NULL);
		T_CHECK(t, keel_realloc(t->heap, p, 8) == NULL);
		T_CHECK_HEAP(t, t->heap);
		struct keel_stats st;
		T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
		T_CHECK(t, st.live_blocks == 1);
		T_CHECK(t, keel_free(t->heap, p) == KEEL_EDOUBLE);
		T_CHECK(t, keel_free(t->heap, keep) == 0);
	}
}

static void realloc_huge_fails(struct t *t)
{
	static const size_t sizes[] = { T_SMALL, T_MEDIUM, T_LARGE };
	for (unsigned i = 0; i < 3; i++) {
		unsigned char *p = keel_malloc(t->heap, sizes[i]);
		T_REQUIRE(t, p != NULL);
		t_fill(p, sizes[i], 8 + i);
		T_CHECK(t, keel_realloc(t->heap, p, SIZE_MAX) == NULL);
		T_CHECK(t, keel_realloc(t->heap, p, SIZE_MAX - 4096) == NULL);
		T_CHECK(t, keel_realloc(t->heap, p, SIZE_MAX / 2) == NULL);
		T_CHECK_HEAP(t, t->heap);
		T_CHECK(t, keel_usable_size(t->heap, p) >= sizes[i]);
		T_CHECK(t, t_verify(p, sizes[i], 8 + i));
		T_CHECK(t, keel_free(t->heap, p) == 0);
	}
}

static void realloc_source_refuses(struct t *t)
{
	/* When the move needs a mapping the source refuses, p stays as it was. */
	unsigned char *p = keel_malloc(t->heap, T_MEDIUM);
	T_REQUIRE(t, p != NULL);
	t_fill(p, T_MEDIUM, 9);
	t->src->fail_at = (long)t->src->map_calls;
	T_CHECK(t, keel_realloc(t->heap, p, 3 * KEEL_SEGMENT_SIZE) == NULL);
	T_CHECK_HEAP(t, t->heap);
	T_CHECK(t, t_verify(p, T_MEDIUM, 9));
	T_CHECK(t, keel_usable_size(t->heap, p) >= T_MEDIUM);
	struct keel_stats st;
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.live_blocks == 1);
	T_CHECK(t, st.failed_allocs >= 1);
	t->src->fail_at = -1;
	unsigned char *q = keel_realloc(t->heap, p, 3 * KEEL_SEGMENT_SIZE);
	T_REQUIRE(t, q != NULL);
	T_CHECK(t, t_verify(q, T_MEDIUM, 9));
	T_CHECK(t, keel_free(t->heap, q) == 0);
}

const struct t_case realloc_cases[] = {
	T_CASE(realloc_null_is_malloc),
	T_CASE(realloc_zero_frees),
	T_CASE(realloc_grow),
	T_CASE(realloc_shrink),
	T_CASE(realloc_same_size_in_place),
	T_CASE(realloc_shrink_in_place),
	T_CASE(realloc_grow_medium_in_place),
	T_CASE(realloc_moves_keep_content),
	T_CASE(realloc_grow_by_one),
	T_CASE(realloc_keeps_alignment),
	T_CASE(realloc_invalid_pointer),
	T_CASE(realloc_freed_pointer),
	T_CASE(realloc_huge_fails),
	T_CASE(realloc_source_refuses),
	{ 0 },
};
