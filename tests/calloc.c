/* tests/calloc.c: keel_calloc hands out zeroes, also over reused dirty memory
 * and over a source that does not promise zeroed pages, and refuses n*size
 * overflow. */
#include "test.h"

static const size_t calloc_sizes[] = {
	1,
	16,
	100,
	KEEL_SMALL_MAX,
	KEEL_SMALL_MAX + 1,
	T_MEDIUM,
	KEEL_PAGE_SIZE + 1,
	50000,
	KEEL_SEGMENT_SIZE / 2,
	KEEL_SEGMENT_SIZE + 1,
	T_LARGE,
};
#define NSIZES (sizeof calloc_sizes / sizeof calloc_sizes[0])

static void calloc_zeroed(struct t *t)
{
	for (unsigned i = 0; i < NSIZES; i++) {
		unsigned char *p = keel_calloc(t->heap, 1, calloc_sizes[i]);
		T_REQUIRE(t, p != NULL);
		T_CHECK(t, T_ALIGNED(p, 16));
		T_CHECK(t, keel_usable_size(t->heap, p) >= calloc_sizes[i]);
		T_CHECK(t, t_is_zero(p, calloc_sizes[i]));
		T_CHECK(t, keel_free(t->heap, p) == 0);
	}
}

static void calloc_n_times_size(struct t *t)
{
	unsigned char *p = keel_calloc(t->heap, 100, 37);
	T_REQUIRE(t, p != NULL);
	T_CHECK(t, keel_usable_size(t->heap, p) >= 3700);
	T_CHECK(t, t_is_zero(p, 3700));
	t_fill(p, 3700, 3);
	T_CHECK(t, t_verify(p, 3700, 3));
	T_CHECK(t, keel_free(t->heap, p) == 0);
	p = keel_calloc(t->heap, 4096, 513); /* a large block through n*size */
	T_REQUIRE(t, p != NULL);
	T_CHECK(t, t_is_zero(p, (size_t)4096 * 513));
	T_CHECK(t, keel_free(t->heap, p) == 0);
}

static void calloc_dirty_reuse(struct t *t)
{
	/* The freed block is reused for the next same-size request: calloc must
	 * clear what malloc's caller left there. */
	for (unsigned i = 0; i < NSIZES; i++) {
		size_t size = calloc_sizes[i];
		for (int round = 0; round < 3; round++) {
			unsigned char *p = keel_malloc(t->heap, size);
			T_REQUIRE(t, p != NULL);
			t_memset(p, 0xFF, keel_usable_size(t->heap, p));
			T_CHECK(t, keel_free(t->heap, p) == 0);
			unsigned char *q = keel_calloc(t->heap, size, 1);
			T_REQUIRE(t, q != NULL);
			if (!t_is_zero(q, size)) {
				t_diag("  calloc(%zu, 1) after a dirty free is not zero (p %p q "
				       "%p)",
				       size, p, q);
				T_CHECK(t, !"calloc zeroed over reused memory");
			}
			T_CHECK(t, keel_free(t->heap, q) == 0);
		}
	}
}

static void calloc_dirty_neighbours(struct t *t)
{
	/* Many dirty small and medium blocks freed in a row, then calloc'd back. */
	static void *ptrs[300];
	for (unsigned i = 0; i < 300; i++) {
		size_t size = 16 + (i * 53) % 3000;
		ptrs[i] = keel_malloc(t->heap, size);
		T_REQUIRE(t, ptrs[i] != NULL);
		t_memset(ptrs[i], 0xFF, keel_usable_size(t->heap, ptrs[i]));
	}
	for (unsigned i = 0; i < 300; i++)
		T_CHECK(t, keel_free(t->heap, ptrs[i]) == 0);
	unsigned bad = 0;
	for (unsigned i = 0; i < 300; i++) {
		size_t size = 16 + (i * 53) % 3000;
		ptrs[i] = keel_calloc(t->heap, 1, size);
		T_REQUIRE(t, ptrs[i] != NULL);
		bad += !t_is_zero(ptrs[i], size);
	}
	T_CHECK(t, bad == 0);
	for (unsigned i = 0; i < 300; i++)
		T_CHECK(t, keel_free(t->heap, ptrs[i]) == 0);
}

/* The environment's source with its zeroed promise taken away, so the
 * counting source fills fresh pages with junk and keel must clear them. */
static struct keel_source junk_base;

static void calloc_junk_source(struct t *t)
{
	junk_base = *t_env_source();
	junk_base.zeroed = 0;
	struct t_aux *a = t_aux_open(t, &junk_base, NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	T_CHECK(t, a->src.src.zeroed == 0);
	for (unsigned i = 0; i < NSIZES; i++) {
		unsigned char *p = keel_calloc(&a->heap, calloc_sizes[i], 1);
		T_REQUIRE(t, p != NULL);
		if (!t_is_zero(p, calloc_sizes[i])) {
			t_diag("  calloc(%zu) over a non-zeroed source is not zero",
			       calloc_sizes[i]);
			T_CHECK(t, !"calloc zeroed over junk pages");
		}
	}
	/* plain malloc over the same source sees the junk: the fill works */
	unsigned char *m = keel_malloc(&a->heap, T_LARGE);
	T_REQUIRE(t, m != NULL);
	T_CHECK(t, m[T_LARGE - 1] == 0xA5);
	t_aux_close(t, a);
}

static void calloc_overflow(struct t *t)
{
	static const size_t pairs[][2] = {
		{ SIZE_MAX, 2 },
		{ 2, SIZE_MAX },
		{ SIZE_MAX / 2 + 1, 2 },
		{ (size_t)1 << 33, (size_t)1 << 33 },
		{ SIZE_MAX, SIZE_MAX },
		{ SIZE_MAX / 16 + 1, 16 },
		{ 65537, SIZE_MAX / 65536 },
	};
	struct keel_stats st;
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	size_t live0 = st.live_blocks, src0 = t->src->live_bytes;
	for (unsigned i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
		void *p = keel_calloc(t->heap, pairs[i][0], pairs[i][1]);
		T_CHECK(t, p == NULL);
		if (p) {
			t_diag("  calloc(%zu, %zu) = %p", pairs[i][0], pairs[i][1], p);
			keel_free(t->heap, p);
		}
	}
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.live_blocks == live0);
	T_CHECK(t, t->src->live_bytes == src0);
	T_CHECK_HEAP(t, t->heap);
}

static void calloc_zero_args(struct t *t)
{
	/* keel.h: calloc allocates n*size bytes; n*size == 0 is taken to behave
	 * like keel_malloc(0): a unique, freeable block. */
	void *a = keel_calloc(t->heap, 0, 10);
	void *b = keel_calloc(t->heap, 10, 0);
	void *c = keel_calloc(t->heap, 0, 0);
	void *d = keel_calloc(t->heap, 0, SIZE_MAX);
	T_CHECK(t, a != NULL && b != NULL && c != NULL && d != NULL);
	T_CHECK(t, a != b && b != c && a != c);
	T_CHECK(t, keel_free(t->heap, a) == 0);
	T_CHECK(t, keel_free(t->heap, b) == 0);
	T_CHECK(t, keel_free(t->heap, c) == 0);
	T_CHECK(t, keel_free(t->heap, d) == 0);
}

const struct t_case calloc_cases[] = {
	T_CASE(calloc_zeroed),      T_CASE(calloc_n_times_size),
	T_CASE(calloc_dirty_reuse), T_CASE(calloc_dirty_neighbours),
	T_CASE(calloc_junk_source), T_CASE(calloc_overflow),
	T_CASE(calloc_zero_args),   { 0 },
};
