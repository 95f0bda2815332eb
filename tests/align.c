/* tests/align.c: keel_aligned_alloc for every power-of-two alignment up to
 * far beyond a segment, with sizes around the alignment; bad alignments are
 * refused and aligned blocks give their padding back. */
#include "test.h"

/* For each alignment in [lo, hi], sizes 1, align-1, align, align+1, 3000, all
 * live at once per alignment, filled and verified, then freed. */
static void aligned_range(struct t *t, size_t lo, size_t hi)
{
	for (size_t a = lo; a <= hi; a <<= 1) {
		const size_t sizes[] = { 1, a - 1, a, a + 1, 3000 };
		unsigned char *p[5];
		for (unsigned i = 0; i < 5; i++) {
			p[i] = keel_aligned_alloc(t->heap, a, sizes[i]);
			if (!p[i]) {
				t_diag("  aligned_alloc(%zu, %zu) = NULL", a, sizes[i]);
				T_CHECK(t, !"aligned_alloc succeeds");
				continue;
			}
			if (!T_ALIGNED(p[i], a) || !T_ALIGNED(p[i], 16)) {
				t_diag("  aligned_alloc(%zu, %zu) = %p", a, sizes[i], p[i]);
				T_CHECK(t, !"block aligned");
			}
			T_CHECK(t, keel_usable_size(t->heap, p[i]) >= sizes[i]);
			t_fill(p[i], sizes[i], a + i);
		}
		for (unsigned i = 0; i < 5; i++)
			if (p[i])
				T_CHECK(t, t_verify(p[i], sizes[i], a + i));
		T_CHECK_HEAP(t, t->heap);
		for (unsigned i = 0; i < 5; i++)
			if (p[i])
				T_CHECK(t, keel_free(t->heap, p[i]) == 0);
	}
}

static void align_1_to_64(struct t *t)
{
	aligned_range(t, 1, 64);
}

static void align_128_to_4096(struct t *t)
{
	aligned_range(t, 128, KEEL_PAGE_SIZE);
}

static void align_8k_to_64k(struct t *t)
{
	aligned_range(t, 2 * KEEL_PAGE_SIZE, 65536);
}

static void align_128k_to_1m(struct t *t)
{
	aligned_range(t, 131072, (size_t)1 << 20);
}

static void align_bad(struct t *t)
{
	static const size_t aligns[] = {
		0,
		3,
		5,
		6,
		7,
		12,
		24,
		48,
		100,
		1000,
		4097,
		65535,
		KEEL_MAX_ALIGN + 1,
		KEEL_MAX_ALIGN - 1,
		KEEL_MAX_ALIGN * 2,
		SIZE_MAX,
		(SIZE_MAX >> 1) + 1,
	};
	struct keel_stats st;
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	size_t live0 = st.live_blocks;
	for (unsigned i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
		void *p = keel_aligned_alloc(t->heap, aligns[i], 100);
		if (p) {
			t_diag("  aligned_alloc(%zu, 100) = %p", aligns[i], p);
			T_CHECK(t, !"bad alignment refused");
			keel_free(t->heap, p);
		}
		T_CHECK(t, keel_aligned_alloc(t->heap, aligns[i], 0) == NULL);
	}
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.live_blocks == live0);
	T_CHECK(t, t->src->live_bytes == 0);
	T_CHECK_HEAP(t, t->heap);
}

static void align_huge_size(struct t *t)
{
	T_CHECK(t, keel_aligned_alloc(t->heap, 64, SIZE_MAX) == NULL);
	T_CHECK(t, keel_aligned_alloc(t->heap, 4096, SIZE_MAX - 4096) == NULL);
	T_CHECK(t, keel_aligned_alloc(t->heap, (size_t)1 << 20, SIZE_MAX - 100) == NULL);
	T_CHECK(t, keel_aligned_alloc(t->heap, (size_t)1 << 20, SIZE_MAX / 2) == NULL);
	T_CHECK_HEAP(t, t->heap);
}

/* alignments beyond a segment: must work up to 64 MiB */
static void align_2m_to_64m(struct t *t)
{
	for (size_t a = (size_t)2 << 20; a <= (size_t)64 << 20; a <<= 1) {
		unsigned char *p = keel_aligned_alloc(t->heap, a, 16);
		/* a second size, kept to a few MiB so a small kernel can serve it */
		size_t qsize = a / 2 < KEEL_SEGMENT_SIZE ? a / 2 + 1 : KEEL_SEGMENT_SIZE + 1;
		unsigned char *q = keel_aligned_alloc(t->heap, a, qsize);
		if (!p || !q)
			t_diag("  aligned_alloc(%zu) = %p, %p", a, p, q);
		T_CHECK(t, p != NULL && q != NULL);
		if (p) {
			T_CHECK(t, T_ALIGNED(p, a));
			t_fill(p, 16, a);
		}
		if (q) {
			T_CHECK(t, T_ALIGNED(q, a));
			t_fill(q, qsize, a + 1);
			T_CHECK(t, t_verify(q, qsize, a + 1));
		}
		if (p)
			T_CHECK(t, t_verify(p, 16, a));
		T_CHECK_HEAP(t, t->heap);
		if (p)
			T_CHECK(t, keel_free(t->heap, p) == 0);
		if (q)
			T_CHECK(t, keel_free(t->heap, q) == 0);
	}
}

/* 128 MiB up to KEEL_MAX_ALIGN (1 GiB): may fail where address space or RAM is
 * short, but a block that comes back must be aligned and usable. */
static void align_up_to_max(struct t *t)
{
	unsigned got = 0;
	for (size_t a = (size_t)128 << 20; a <= KEEL_MAX_ALIGN; a <<= 1) {
		unsigned char *p = keel_aligned_alloc(t->heap, a, 16);
		T_CHECK_HEAP(t, t->heap);
		if (!p)
			continue;
		got++;
		T_CHECK(t, T_ALIGNED(p, a));
		T_CHECK(t, keel_usable_size(t->heap, p) >= 16);
		t_fill(p, 16, a);
		T_CHECK(t, t_verify(p, 16, a));
		T_CHECK(t, keel_free(t->heap, p) == 0);
	}
	if (!got)
		t_diag("  no alignment above 64 MiB could be served here");
}

static void align_many_live(struct t *t)
{
	static unsigned char *p[120];
	static size_t size[120], al[120];
	uint64_t r = 0xa119;
	for (unsigned i = 0; i < 120; i++) {
		al[i] = (size_t)1 << (t_rand(&r) % 17);
		size[i] = t_rand(&r) % 5000;
		p[i] = keel_aligned_alloc(t->heap, al[i], size[i]);
		T_REQUIRE(t, p[i] != NULL);
		T_CHECK(t, T_ALIGNED(p[i], al[i]));
		t_fill(p[i], size[i], i);
	}
	unsigned bad = 0;
	for (unsigned i = 0; i < 120; i++)
		bad += !t_verify(p[i], size[i], i);
	T_CHECK(t, bad == 0);
	T_CHECK_HEAP(t, t->heap);
	for (unsigned i = 0; i < 120; i += 2)
		T_CHECK(t, keel_free(t->heap, p[i]) == 0);
	T_CHECK_HEAP(t, t->heap);
	for (unsigned i = 1; i < 120; i += 2) {
		T_CHECK(t, t_verify(p[i], size[i], i));
		T_CHECK(t, keel_free(t->heap, p[i]) == 0);
	}
}

static void align_reuse_bounded(struct t *t)
{
	/* Aligned blocks freed and taken again must not pile up pages. */
	for (int round = 0; round < 300; round++) {
		void *a = keel_aligned_alloc(t->heap, KEEL_PAGE_SIZE, 5000);
		void *b = keel_aligned_alloc(t->heap, 65536, 100);
		T_REQUIRE(t, a != NULL && b != NULL);
		T_CHECK(t, keel_free(t->heap, a) == 0);
		T_CHECK(t, keel_free(t->heap, b) == 0);
	}
	T_CHECK(t, t->src->peak_bytes <= 4 * KEEL_SEGMENT_SIZE);
	struct keel_stats st;
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.in_use_bytes == 0 && st.live_blocks == 0);
	keel_trim(t->heap);
	T_CHECK(t, t->src->live_bytes == 0);
}

static void align_small_pow2_in_runs(struct t *t)
{
	/* alignments at or below 16 behave like keel_malloc */
	void *keep = keel_malloc(t->heap, 24); /* keeps the run in use */
	T_REQUIRE(t, keep != NULL);
	for (size_t a = 1; a <= 16; a <<= 1) {
		void *p = keel_aligned_alloc(t->heap, a, 24);
		T_REQUIRE(t, p != NULL);
		T_CHECK(t, T_ALIGNED(p, 16));
		T_CHECK(t, keel_usable_size(t->heap, p) >= 24);
		T_CHECK(t, keel_free(t->heap, p) == 0);
		T_CHECK(t, keel_free(t->heap, p) == KEEL_EDOUBLE);
	}
	T_CHECK(t, keel_free(t->heap, keep) == 0);
}

/* A power of two up to a page is aligned to itself even when no run can be
 * made and the slot comes from a medium block instead: a region too small
 * for a 16 KiB run (a fault the fuzzer found). */
static void align_small_pow2_without_runs(struct t *t)
{
	static unsigned char buf[12288] __attribute__((aligned(64)));
	struct t_aux *a = t_aux_open(t, NULL, NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	T_REQUIRE(t, keel_heap_add_region(&a->heap, buf + 16, sizeof buf - 16) == 0);
	for (size_t size = 16; size <= KEEL_SMALL_MAX; size *= 2) {
		void *p = keel_malloc(&a->heap, size);
		T_REQUIRE(t, p != NULL);
		T_CHECK(t, T_ALIGNED(p, size));
		t_fill(p, size, (unsigned)size);
		T_CHECK(t, t_verify(p, size, (unsigned)size));
		T_CHECK(t, keel_free(&a->heap, p) == 0);
	}
	T_CHECK(t, t_aux_close(t, a));
}

/* The classes past KEEL_SMALL_MAX: an aligned request to KEEL_SLOT_MAX is a
 * slot (counted in its class, its usable size the class's), and so is a
 * malloc of 2 or 4 KiB (a power of two, aligned to itself); any other malloc
 * past KEEL_SMALL_MAX is not. */
static unsigned slot_classes_live(struct t *t)
{
	static struct keel_stats st;
	unsigned n = 0;
	T_CHECK(t, keel_stats(t->heap, &st) == 0);
	for (unsigned i = 0; i < KEEL_NCLASSES; i++)
		if (st.class_size[i] > KEEL_SMALL_MAX)
			n += (unsigned)st.class_count[i];
	return n;
}

static void align_slot_classes(struct t *t)
{
	static const size_t req[][2] = { { 32, 1100 },   { 256, 1281 },  { 1024, 1500 },
		                         { 1024, 3072 }, { 2048, 2049 }, { 2048, 4000 },
		                         { 4096, 100 },  { 4096, 4096 } };
	static void *p[8];
	for (unsigned i = 0; i < 8; i++) {
		p[i] = keel_aligned_alloc(t->heap, req[i][0], req[i][1]);
		T_REQUIRE(t, p[i] != NULL);
		T_CHECK(t, T_ALIGNED(p[i], req[i][0]));
		size_t u = keel_usable_size(t->heap, p[i]);
		T_CHECK(t, u >= req[i][1] && u <= KEEL_SLOT_MAX && u % req[i][0] == 0);
		t_fill(p[i], req[i][1], i);
		T_CHECK(t, slot_classes_live(t) == i + 1);
	}
	void *m2 = keel_malloc(t->heap, 2048), *m4 = keel_malloc(t->heap, 4096);
	T_REQUIRE(t, m2 != NULL && m4 != NULL);
	T_CHECK(t, T_ALIGNED(m2, 2048) && T_ALIGNED(m4, 4096));
	T_CHECK(t, slot_classes_live(t) == 10);
	void *m3 = keel_malloc(t->heap, 3000);
	T_REQUIRE(t, m3 != NULL);
	T_CHECK(t, slot_classes_live(t) == 10);
	for (unsigned i = 0; i < 8; i++) {
		T_CHECK(t, t_verify(p[i], req[i][1], i));
		T_CHECK(t, keel_free(t->heap, p[i]) == 0);
		T_CHECK(t, keel_free(t->heap, p[i]) == KEEL_EDOUBLE);
	}
	T_CHECK(t, keel_free(t->heap, m2) == 0 && keel_free(t->heap, m4) == 0);
	T_CHECK(t, keel_free(t->heap, m3) == 0);
	T_CHECK(t, slot_classes_live(t) == 0);
}

static void align_interior_free(struct t *t)
{
	unsigned char *p = keel_aligned_alloc(t->heap, 65536, 1000);
	T_REQUIRE(t, p != NULL);
	t_fill(p, 1000, 1);
	T_CHECK(t, keel_free(t->heap, p + 16) == KEEL_EINTERIOR);
	T_CHECK(t, keel_free(t->heap, p - 16) != 0); /* padding before it is no block */
	T_CHECK_HEAP(t, t->heap);
	T_CHECK(t, t_verify(p, 1000, 1));
	T_CHECK(t, keel_free(t->heap, p) == 0);
}

const struct t_case align_cases[] = {
	T_CASE(align_1_to_64),
	T_CASE(align_128_to_4096),
	T_CASE(align_8k_to_64k),
	T_CASE(align_128k_to_1m),
	T_CASE(align_bad),
	T_CASE(align_huge_size),
	T_CASE(align_2m_to_64m),
	T_CASE(align_up_to_max),
	T_CASE(align_many_live),
	T_CASE(align_reuse_bounded),
	T_CASE(align_small_pow2_in_runs),
	T_CASE(align_small_pow2_without_runs),
	T_CASE(align_slot_classes),
	T_CASE(align_interior_free),
	{ 0 },
};
