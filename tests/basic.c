/* tests/basic.c: keel_malloc and keel_usable_size across every size boundary:
 * each block is aligned, at least as big as asked, and overlaps no other. */
#include "test.h"

#define MAX_BLOCKS 256

struct blk {
	unsigned char *p;
	size_t size;
	uint64_t tag;
};

static struct blk blocks[MAX_BLOCKS];
static unsigned nblocks;

/* Allocate size, check the basic promises, fill the block with its own tag. */
static void *take(struct t *t, size_t size)
{
	unsigned char *p = keel_malloc(t->heap, size);
	T_CHECK(t, p != NULL);
	if (!p) {
		t_diag("  keel_malloc(%zu) = NULL", size);
		return NULL;
	}
	T_CHECK(t, T_ALIGNED(p, 16));
	T_CHECK(t, keel_usable_size(t->heap, p) >= size);
	if (nblocks < MAX_BLOCKS) {
		blocks[nblocks].p = p;
		blocks[nblocks].size = size;
		blocks[nblocks].tag = 0x1000u + nblocks;
		t_fill(p, size, blocks[nblocks].tag);
		nblocks++;
	}
	return p;
}

/* Verify every block's pattern (so none overlapped another), then free all. */
static void release_all(struct t *t)
{
	for (unsigned i = 0; i < nblocks; i++) {
		if (!t_verify(blocks[i].p, blocks[i].size, blocks[i].tag)) {
			t_diag("  block %u (%p, %zu bytes) was overwritten", i, blocks[i].p,
			       blocks[i].size);
			T_CHECK(t, !"block content intact");
		}
	}
	T_CHECK_HEAP(t, t->heap);
	for (unsigned i = 0; i < nblocks; i++)
		T_CHECK(t, keel_free(t->heap, blocks[i].p) == 0);
	nblocks = 0;
	T_CHECK_HEAP(t, t->heap);
}

static void take_around(struct t *t, size_t size)
{
	if (size > 0)
		take(t, size - 1);
	take(t, size);
	take(t, size + 1);
}

static void malloc_zero_unique(struct t *t)
{
	void *a = keel_malloc(t->heap, 0);
	void *b = keel_malloc(t->heap, 0);
	T_REQUIRE(t, a != NULL && b != NULL);
	T_CHECK(t, a != b);
	T_CHECK(t, T_ALIGNED(a, 16) && T_ALIGNED(b, 16));
	/* keel.h: "size 0 gives a unique 16-byte block" */
	T_CHECK(t, keel_usable_size(t->heap, a) >= 16);
	t_fill(a, 16, 1);
	t_fill(b, 16, 2);
	T_CHECK(t, t_verify(a, 16, 1) && t_verify(b, 16, 2));
	T_CHECK(t, keel_free(t->heap, a) == 0);
	T_CHECK(t, keel_free(t->heap, b) == 0);
}

static void malloc_zero_many_distinct(struct t *t)
{
	nblocks = 0;
	for (unsigned i = 0; i < 100; i++)
		take(t, 0);
	for (unsigned i = 0; i < nblocks; i++)
		for (unsigned j = i + 1; j < nblocks; j++)
			T_CHECK(t, blocks[i].p != blocks[j].p);
	release_all(t);
}

static void malloc_one(struct t *t)
{
	nblocks = 0;
	unsigned char *p = take(t, 1);
	T_REQUIRE(t, p != NULL);
	p[0] = 0x5a;
	T_CHECK(t, keel_usable_size(t->heap, p) >= 1);
	T_CHECK(t, p[0] == 0x5a);
	nblocks = 0;
	T_CHECK(t, keel_free(t->heap, p) == 0);
}

static void malloc_class_boundaries(struct t *t)
{
	size_t cs[KEEL_NCLASSES];
	unsigned n = t_class_sizes(t->heap, cs);
	T_REQUIRE(t, n > 0);
	nblocks = 0;
	for (unsigned i = 0; i < n; i++)
		take_around(t, cs[i]);
	release_all(t);
}

static void malloc_class_sizes_sane(struct t *t)
{
	size_t cs[KEEL_NCLASSES];
	unsigned n = t_class_sizes(t->heap, cs);
	T_REQUIRE(t, n > 0);
	for (unsigned i = 0; i < n; i++) {
		T_CHECK(t, cs[i] % 16 == 0); /* every slot of a run must be 16-aligned */
		if (i > 0)
			T_CHECK(t, cs[i] > cs[i - 1]);
	}
	/* malloc's classes end at KEEL_SMALL_MAX; aligned requests' at KEEL_SLOT_MAX */
	unsigned small_max = 0;
	for (unsigned i = 0; i < n; i++)
		small_max += cs[i] == KEEL_SMALL_MAX;
	T_CHECK(t, small_max == 1);
	T_CHECK(t, cs[n - 1] == KEEL_SLOT_MAX);
}

static void malloc_small_max(struct t *t)
{
	nblocks = 0;
	take_around(t, KEEL_SMALL_MAX);
	for (unsigned i = 0; i < 8; i++)
		take(t, KEEL_SMALL_MAX + 16 * i);
	release_all(t);
}

static void malloc_page_size(struct t *t)
{
	nblocks = 0;
	take_around(t, KEEL_PAGE_SIZE);
	take_around(t, 2 * KEEL_PAGE_SIZE);
	take_around(t, KEEL_PAGE_SIZE / 2);
	release_all(t);
}

static void malloc_segment_size(struct t *t)
{
	static const size_t deltas[] = { 1, 16, 64, 256, 4096, 8192, 65536 };
	/* a few at a time, so that a small kernel can hold them */
	nblocks = 0;
	take_around(t, KEEL_SEGMENT_SIZE);
	release_all(t);
	for (unsigned i = 0; i < sizeof deltas / sizeof deltas[0]; i++) {
		take(t, KEEL_SEGMENT_SIZE - deltas[i]);
		take(t, KEEL_SEGMENT_SIZE + deltas[i]);
		take(t, 100); /* small and medium neighbours among them */
		take(t, T_MEDIUM);
		release_all(t);
	}
	take_around(t, KEEL_SEGMENT_SIZE / 2);
	release_all(t);
	take_around(t, KEEL_SEGMENT_SIZE / 4);
	take_around(t, KEEL_SEGMENT_SIZE / 8);
	release_all(t);
}

static void malloc_large_sizes(struct t *t)
{
	nblocks = 0;
	take_around(t, 2 * KEEL_SEGMENT_SIZE);
	release_all(t);
	take(t, 3 * KEEL_SEGMENT_SIZE + 12345);
	take(t, 8 * KEEL_SEGMENT_SIZE);
	release_all(t);
}

static void malloc_huge_fails(struct t *t)
{
	static const size_t sizes[] = {
		SIZE_MAX,
		SIZE_MAX - 1,
		SIZE_MAX - 15,
		SIZE_MAX - 4096,
		SIZE_MAX - KEEL_SEGMENT_SIZE,
		SIZE_MAX - 2 * KEEL_SEGMENT_SIZE + 1,
		SIZE_MAX / 2,
		SIZE_MAX / 2 + 1,
		SIZE_MAX / 2 - KEEL_SEGMENT_SIZE,
		SIZE_MAX / 4,
		(size_t)1 << 62,
	};
	const unsigned n = sizeof sizes / sizeof sizes[0];
	struct keel_stats st;
	void *keep = keel_malloc(t->heap, 100);
	T_REQUIRE(t, keep != NULL);
	t_fill(keep, 100, 7);
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	size_t failed0 = st.failed_allocs, live0 = st.live_blocks, inuse0 = st.in_use_bytes;
	size_t src0 = t->src->live_bytes;
	for (unsigned i = 0; i < n; i++) {
		void *p = keel_malloc(t->heap, sizes[i]);
		T_CHECK(t, p == NULL);
		if (p) {
			t_diag("  keel_malloc(%zu) = %p", sizes[i], p);
			keel_free(t->heap, p);
		}
		T_CHECK_HEAP(t, t->heap);
	}
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.failed_allocs == failed0 + n);
	T_CHECK(t, st.live_blocks == live0);
	T_CHECK(t, st.in_use_bytes == inuse0);
	T_CHECK(t, t->src->live_bytes == src0);
	T_CHECK(t, t_verify(keep, 100, 7));
	T_CHECK(t, keel_free(t->heap, keep) == 0);
}

static void malloc_aligned_16(struct t *t)
{
	nblocks = 0;
	for (size_t size = 1; size <= 2048 && nblocks < MAX_BLOCKS; size += 9)
		take(t, size);
	release_all(t);
}

static void malloc_pow2_natural(struct t *t)
{
	nblocks = 0;
	for (size_t size = 1; size <= KEEL_PAGE_SIZE; size <<= 1) {
		for (int k = 0; k < 3; k++) {
			void *p = take(t, size);
			if (p && !T_ALIGNED(p, size)) {
				t_diag("  keel_malloc(%zu) = %p is not aligned to its size", size,
				       p);
				T_CHECK(t, !"power-of-two size naturally aligned");
			}
		}
	}
	release_all(t);
}

static void malloc_no_overlap_mixed(struct t *t)
{
	uint64_t r = 0x51ed;
	nblocks = 0;
	for (unsigned i = 0; i < 200; i++) {
		size_t size;
		switch (t_rand(&r) % 4) {
		case 0:
			size = t_rand(&r) % 64;
			break;
		case 1:
			size = t_rand(&r) % (KEEL_SMALL_MAX + 1);
			break;
		case 2:
			size = KEEL_SMALL_MAX + 1 + t_rand(&r) % 16384;
			break;
		default:
			size = t_rand(&r) % 300;
			break;
		}
		take(t, size);
	}
	take(t, T_LARGE);
	take(t, KEEL_SEGMENT_SIZE / 2 + 3);
	release_all(t);
}

static void usable_size_writable(struct t *t)
{
	/* Every usable byte may be written without touching a neighbour. */
	static const size_t sizes[] = { 1, 17, 100, 1000, KEEL_SMALL_MAX + 1, 5000, 70000 };
	nblocks = 0;
	for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		for (int k = 0; k < 4; k++) {
			unsigned char *p = keel_malloc(t->heap, sizes[i]);
			T_REQUIRE(t, p != NULL);
			size_t u = keel_usable_size(t->heap, p);
			T_CHECK(t, u >= sizes[i]);
			blocks[nblocks].p = p;
			blocks[nblocks].size = u;
			blocks[nblocks].tag = 0x2000u + nblocks;
			t_fill(p, u, blocks[nblocks].tag);
			nblocks++;
		}
	}
	release_all(t);
}

static void usable_size_null(struct t *t)
{
	T_CHECK(t, keel_usable_size(t->heap, NULL) == 0);
	void *p = keel_malloc(t->heap, 40);
	T_REQUIRE(t, p != NULL);
	T_CHECK(t, keel_usable_size(t->heap, NULL) == 0);
	T_CHECK(t, keel_usable_size(t->heap, p) >= 40);
	T_CHECK(t, keel_free(t->heap, p) == 0);
	T_CHECK(t, keel_usable_size(t->heap, p) == 0);
}

static void malloc_free_reuse(struct t *t)
{
	/* The same request after a free must not keep taking pages. */
	static const size_t sizes[] = { 24, 700, T_MEDIUM, 40000 };
	for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		void *p = keel_malloc(t->heap, sizes[i]);
		T_REQUIRE(t, p != NULL);
		T_CHECK(t, keel_free(t->heap, p) == 0);
		size_t maps = t->src->maps;
		for (int k = 0; k < 200; k++) {
			p = keel_malloc(t->heap, sizes[i]);
			T_REQUIRE(t, p != NULL);
			t_fill(p, sizes[i], (uint64_t)k);
			T_CHECK(t, keel_free(t->heap, p) == 0);
		}
		T_CHECK(t, t->src->maps == maps);
	}
}

static void malloc_many_small(struct t *t)
{
	static void *ptrs[4000];
	for (unsigned i = 0; i < 4000; i++) {
		ptrs[i] = keel_malloc(t->heap, 32);
		T_REQUIRE(t, ptrs[i] != NULL);
		t_fill(ptrs[i], 32, i);
	}
	T_CHECK_HEAP(t, t->heap);
	unsigned bad = 0;
	for (unsigned i = 0; i < 4000; i++)
		bad += !t_verify(ptrs[i], 32, i);
	T_CHECK(t, bad == 0);
	for (unsigned i = 0; i < 4000; i += 2)
		T_CHECK(t, keel_free(t->heap, ptrs[i]) == 0);
	T_CHECK_HEAP(t, t->heap);
	for (unsigned i = 1; i < 4000; i += 2)
		T_CHECK(t, keel_free(t->heap, ptrs[i]) == 0);
	keel_trim(t->heap);
	T_CHECK(t, t->src->live_bytes == 0);
}

const struct t_case basic_cases[] = {
	T_CASE(malloc_zero_unique),
	T_CASE(malloc_zero_many_distinct),
	T_CASE(malloc_one),
	T_CASE(malloc_class_sizes_sane),
	T_CASE(malloc_class_boundaries),
	T_CASE(malloc_small_max),
	T_CASE(malloc_page_size),
	T_CASE(malloc_segment_size),
	T_CASE(malloc_large_sizes),
	T_CASE(malloc_huge_fails),
	T_CASE(malloc_aligned_16),
	T_CASE(malloc_pow2_natural),
	T_CASE(malloc_no_overlap_mixed),
	T_CASE(usable_size_writable),
	T_CASE(usable_size_null),
	T_CASE(malloc_free_reuse),
	T_CASE(malloc_many_small),
	{ 0 },
};
