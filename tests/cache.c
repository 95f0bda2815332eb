/* tests/cache.c: keel_cache, the per-thread (per-CPU) front end: blocks go
 * through it and back, misuse is caught even for slots sitting in a cache,
 * and a flush leaves the heap as if the cache had never been. */
#include "test.h"

static struct keel_cache cache_a, cache_b; /* static: kernel stacks are small */

static size_t live_blocks(struct keel_heap *h)
{
	struct keel_stats st;
	return keel_stats(h, &st) == 0 ? st.live_blocks : (size_t)-1;
}

static size_t in_use(struct keel_heap *h)
{
	struct keel_stats st;
	return keel_stats(h, &st) == 0 ? st.in_use_bytes : 0;
}

static void cache_init_bad_args(struct t *t)
{
	T_CHECK(t, keel_cache_init(NULL, t->heap) == KEEL_EINVAL);
	static struct keel_heap never_initialised;
	T_CHECK(t, keel_cache_init(&cache_a, &never_initialised) == KEEL_EINVAL);
	T_CHECK(t, keel_cache_init(&cache_a, t->heap) == 0);
}

static void cache_small_round_trip(struct t *t)
{
	static unsigned char *p[300];
	T_REQUIRE(t, keel_cache_init(&cache_a, t->heap) == 0);
	for (unsigned i = 0; i < 300; i++) {
		size_t size = 1 + (i * 37) % KEEL_SMALL_MAX;
		p[i] = keel_cache_malloc(&cache_a, size);
		T_REQUIRE(t, p[i] != NULL);
		T_CHECK(t, T_ALIGNED(p[i], 16));
		T_CHECK(t, keel_cache_usable_size(&cache_a, p[i]) >= size);
		t_fill(p[i], size, i);
	}
	for (unsigned i = 0; i < 300; i++) {
		T_CHECK(t, t_verify(p[i], 1 + (i * 37) % KEEL_SMALL_MAX, i));
		T_CHECK(t, keel_cache_free(&cache_a, p[i]) == 0);
	}
	T_CHECK_HEAP(t, t->heap);
	keel_cache_flush(&cache_a);
	T_CHECK(t, live_blocks(t->heap) == 0);
	T_CHECK_HEAP(t, t->heap);
}

static void cache_reuses_freed_slot(struct t *t)
{
	T_REQUIRE(t, keel_cache_init(&cache_a, t->heap) == 0);
	void *p = keel_cache_malloc(&cache_a, 48);
	T_REQUIRE(t, p != NULL);
	T_CHECK(t, keel_cache_free(&cache_a, p) == 0);
	void *q = keel_cache_malloc(&cache_a, 48);
	T_CHECK(t, q == p); /* last in, first out: the warm slot comes back */
	T_CHECK(t, keel_cache_free(&cache_a, q) == 0);
	keel_cache_flush(&cache_a);
}

static void cache_power_of_two_aligned(struct t *t)
{
	T_REQUIRE(t, keel_cache_init(&cache_a, t->heap) == 0);
	for (size_t size = 16; size <= KEEL_SMALL_MAX; size *= 2) {
		void *p = keel_cache_malloc(&cache_a, size);
		T_REQUIRE(t, p != NULL);
		T_CHECK(t, T_ALIGNED(p, size));
		T_CHECK(t, keel_cache_free(&cache_a, p) == 0);
	}
	keel_cache_flush(&cache_a);
}

/* keel_cache_aligned_alloc: every power of two to 8 KiB and sizes around
 * each class, from the cache and past it; each block aligned, big enough,
 * freed once and caught the second time. */
static void cache_aligned_alloc(struct t *t)
{
	static const size_t sizes[] = { 0,   1,    15,   16,   17,   100,  128,  129,  300,
		                        513, 1000, 1024, 1025, 2000, 3000, 4096, 4097, 5000 };
	T_REQUIRE(t, keel_cache_init(&cache_a, t->heap) == 0);
	for (size_t align = 1; align <= 8192; align *= 2) {
		for (unsigned k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
			unsigned char *p[3];
			for (unsigned j = 0; j < 3;
			     j++) { /* the second and third may come from the bin */
				p[j] = keel_cache_aligned_alloc(&cache_a, align, sizes[k]);
				T_REQUIRE(t, p[j] != NULL);
				T_CHECK(t, T_ALIGNED(p[j], align < 16 ? 16 : align));
				T_CHECK(t, keel_cache_usable_size(&cache_a, p[j]) >= sizes[k]);
				t_fill(p[j], sizes[k], k + j);
			}
			for (unsigned j = 0; j < 3; j++) {
				T_CHECK(t, t_verify(p[j], sizes[k], k + j));
				T_CHECK(t, keel_cache_free(&cache_a, p[j]) == 0);
			}
			/* a slot (past KEEL_SMALL_MAX when asked an alignment) */
			if (sizes[k] <= (align > 16 ? KEEL_SLOT_MAX : KEEL_SMALL_MAX) &&
			    align <= KEEL_SLOT_MAX)
				T_CHECK(t, keel_cache_free(&cache_a, p[0]) == KEEL_EDOUBLE);
		}
	}
	T_CHECK(t, keel_cache_aligned_alloc(&cache_a, 48, 10) == NULL); /* not a power of two */
	T_CHECK(t, keel_cache_aligned_alloc(&cache_a, 0, 10) == NULL);  /* as keel_aligned_alloc */
	T_CHECK_HEAP(t, t->heap);
	keel_cache_flush(&cache_a);
	T_CHECK(t, live_blocks(t->heap) == 0);
}

static void cache_double_free(struct t *t)
{
	T_REQUIRE(t, keel_cache_init(&cache_a, t->heap) == 0);
	unsigned char *p = keel_cache_malloc(&cache_a, 40);
	T_REQUIRE(t, p != NULL);
	T_CHECK(t, keel_cache_free(&cache_a, p) == 0);
	/* the slot sits in the cache: every way in knows it is free */
	T_CHECK(t, keel_cache_free(&cache_a, p) == KEEL_EDOUBLE);
	T_CHECK(t, keel_free(t->heap, p) == KEEL_EDOUBLE);
	T_CHECK(t, keel_usable_size(t->heap, p) == 0);
	T_CHECK(t, keel_cache_usable_size(&cache_a, p) == 0);
	T_CHECK(t, keel_realloc(t->heap, p, 100) == NULL);
	T_CHECK_HEAP(t, t->heap);
	/* and after it went back to the heap */
	keel_cache_flush(&cache_a);
	T_CHECK(t, keel_cache_free(&cache_a, p) == KEEL_EDOUBLE);
	T_CHECK(t, keel_free(t->heap, p) == KEEL_EDOUBLE);
	T_CHECK(t, live_blocks(t->heap) == 0);
	T_CHECK_HEAP(t, t->heap);
}

static void cache_double_free_other_cache(struct t *t)
{
	T_REQUIRE(t, keel_cache_init(&cache_a, t->heap) == 0);
	T_REQUIRE(t, keel_cache_init(&cache_b, t->heap) == 0);
	void *p = keel_cache_malloc(&cache_a, 100);
	T_REQUIRE(t, p != NULL);
	T_CHECK(t, keel_cache_free(&cache_a, p) == 0);
	T_CHECK(t, keel_cache_free(&cache_b, p) == KEEL_EDOUBLE);
	keel_cache_flush(&cache_a);
	keel_cache_flush(&cache_b);
	T_CHECK(t, live_blocks(t->heap) == 0);
}

static void cache_bad_pointers(struct t *t)
{
	T_REQUIRE(t, keel_cache_init(&cache_a, t->heap) == 0);
	unsigned char *p = keel_cache_malloc(&cache_a, 64);
	unsigned char *m = keel_cache_malloc(&cache_a, T_MEDIUM);
	T_REQUIRE(t, p != NULL && m != NULL);
	t_fill(p, 64, 1);
	int local = 0;
	T_CHECK(t, keel_cache_free(&cache_a, &local) == KEEL_ENOTOURS);
	T_CHECK(t, keel_cache_free(&cache_a, t_env_foreign_pointer()) == KEEL_ENOTOURS);
	T_CHECK(t, keel_cache_free(&cache_a, p + 16) == KEEL_EINTERIOR);
	T_CHECK(t, keel_cache_free(&cache_a, p + 1) == KEEL_EINTERIOR);
	T_CHECK(t, keel_cache_free(&cache_a, m + 32) == KEEL_EINTERIOR);
	/* p with an address bit past the registry's 48 flipped (not canonical):
	 * the registry's key drops those bits and finds p's segment, which must
	 * not be taken for p's */
	void *alias = (void *)((uintptr_t)p ^ ((uintptr_t)1 << 52));
	T_CHECK(t, keel_cache_free(&cache_a, alias) == KEEL_ENOTOURS);
	T_CHECK(t, keel_free(t->heap, alias) == KEEL_ENOTOURS);
	T_CHECK(t, keel_cache_usable_size(&cache_a, alias) == 0);
	T_CHECK(t, keel_cache_usable_size(&cache_a, p) >= 64);
	T_CHECK(t, t_verify(p, 64, 1));
	T_CHECK_HEAP(t, t->heap);
	T_CHECK(t, keel_cache_free(&cache_a, p) == 0);
	T_CHECK(t, keel_cache_free(&cache_a, m) == 0);
	T_CHECK(t, keel_cache_free(&cache_a, NULL) == 0);
	keel_cache_flush(&cache_a);
	T_CHECK(t, live_blocks(t->heap) == 0);
}

static void cache_other_heap(struct t *t)
{
	struct t_aux *a = t_aux_open(t, t_env_source(), NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	T_REQUIRE(t, keel_cache_init(&cache_a, t->heap) == 0);
	T_REQUIRE(t, keel_cache_init(&cache_b, &a->heap) == 0);
	void *p = keel_cache_malloc(&cache_a, 32);
	void *q = keel_cache_malloc(&cache_b, 32);
	T_REQUIRE(t, p && q);
	T_CHECK(t, keel_cache_free(&cache_b, p) == KEEL_ENOTOURS);
	T_CHECK(t, keel_cache_free(&cache_a, q) == KEEL_ENOTOURS);
	T_CHECK(t, keel_cache_free(&cache_a, p) == 0);
	T_CHECK(t, keel_cache_free(&cache_b, q) == 0);
	keel_cache_flush(&cache_a);
	keel_cache_flush(&cache_b);
	T_CHECK(t, t_aux_close(t, a));
}

/* A freed medium block stays in the cache (still live, a second free of it
 * caught through the cache and the heap alike) and serves the next request
 * of its size; a large block passes through to the heap. */
static void cache_medium_kept_large_passes(struct t *t)
{
	T_REQUIRE(t, keel_cache_init(&cache_a, t->heap) == 0);
	unsigned char *m = keel_cache_malloc(&cache_a, T_MEDIUM);
	unsigned char *l = keel_cache_malloc(&cache_a, T_LARGE);
	T_REQUIRE(t, m != NULL && l != NULL);
	t_fill(m, T_MEDIUM, 2);
	t_fill(l, T_LARGE, 3);
	struct keel_stats st;
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.large_blocks == 1);
	T_CHECK(t, t_verify(m, T_MEDIUM, 2) && t_verify(l, T_LARGE, 3));
	T_CHECK(t, keel_cache_free(&cache_a, m) == 0);
	T_CHECK(t, keel_cache_free(&cache_a, l) == 0);
	T_CHECK(t, keel_cache_free(&cache_a, l) != 0);
	T_CHECK(t, live_blocks(t->heap) == 1); /* m is kept */
	T_CHECK(t, keel_cache_free(&cache_a, m) == KEEL_EDOUBLE);
	T_CHECK(t, keel_free(t->heap, m) == KEEL_EDOUBLE);
	T_CHECK(t, keel_cache_usable_size(&cache_a, m) == 0);
	T_CHECK_HEAP(t, t->heap);
	unsigned char *m2 = keel_cache_malloc(&cache_a, T_MEDIUM - 8); /* the same list */
	T_REQUIRE(t, m2 != NULL);
	T_CHECK(t, m2 == m);
	T_CHECK(t, keel_cache_usable_size(&cache_a, m2) >= T_MEDIUM - 8);
	t_fill(m2, T_MEDIUM - 8, 4);
	T_CHECK(t, keel_cache_free(&cache_a, m2) == 0);
	keel_cache_flush(&cache_a);
	T_CHECK(t, live_blocks(t->heap) == 0);
	T_CHECK_HEAP(t, t->heap);
}

/* A request whose own list holds nothing kept takes a block from one of the
 * next eight lists (a block up to half a power of two larger), the nearest
 * first, and none from further up. */
static void cache_medium_nearby_list(struct t *t)
{
	T_REQUIRE(t, keel_cache_init(&cache_a, t->heap) == 0);
	/* blocks of 2688 and 2304 bytes (lists 2048 + 5 and + 2 sixteenths) */
	unsigned char *far = keel_cache_malloc(&cache_a, 2560);
	unsigned char *near = keel_cache_malloc(&cache_a, 2200);
	T_REQUIRE(t, far != NULL && near != NULL);
	T_CHECK(t, keel_cache_free(&cache_a, far) == 0);
	T_CHECK(t, keel_cache_free(&cache_a, near) == 0);
	unsigned char *q = keel_cache_malloc(&cache_a, 1100); /* 1152: too far below */
	T_REQUIRE(t, q != NULL);
	T_CHECK(t, q != far && q != near);
	unsigned char *r = keel_cache_malloc(&cache_a, 2100); /* 2176: one list below near */
	unsigned char *u = keel_cache_malloc(&cache_a, 2100);
	T_REQUIRE(t, r != NULL && u != NULL);
	T_CHECK(t, r == near && u == far);
	T_CHECK(t, keel_cache_usable_size(&cache_a, u) >= 2560);
	t_fill(u, 2560, 5);
	T_CHECK(t, t_verify(u, 2560, 5));
	T_CHECK(t, keel_cache_free(&cache_a, q) == 0);
	T_CHECK(t, keel_cache_free(&cache_a, r) == 0);
	T_CHECK(t, keel_cache_free(&cache_a, u) == 0);
	T_CHECK_HEAP(t, t->heap);
	keel_cache_flush(&cache_a);
	T_CHECK(t, live_blocks(t->heap) == 0);
	T_CHECK_HEAP(t, t->heap);
}

/* A list's bin holds 64 KiB of blocks or 16, whichever is more, but no
 * more than the heap takes whole from a full bin (256 KiB): 16 freed blocks
 * of 16000 bytes (four make 64 KiB) stay in the cache, none going to the
 * heap's lists, and serve the next 16 requests of that size; 17 of 20000
 * bytes fill a bin of 13 (16 would be past 256 KiB), which goes to the heap
 * whole and from there to another cache, and none goes to the heap's
 * lists either, even with 5 MiB live, for which the cache may keep more
 * than 256 KiB in all. */
static void medium_free_all(struct t *t, unsigned char **p, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		T_CHECK(t, keel_cache_free(&cache_a, p[i]) == 0);
}

static void cache_medium_bin_bounds(struct t *t)
{
	enum { N = 17 };
	static unsigned char *p[N];
	static const size_t size[2] = { 16000, 20000 };
	static const unsigned count[2] = { 16, 17 };
	T_REQUIRE(t, keel_cache_init(&cache_a, t->heap) == 0);
	T_REQUIRE(t, keel_cache_init(&cache_b, t->heap) == 0);
	for (unsigned k = 0; k < 2; k++) {
		unsigned n = count[k];
		void *big = k ? keel_malloc(t->heap, (size_t)5 << 20) : NULL;
		T_REQUIRE(t, !k || big != NULL);
		for (unsigned i = 0; i < n; i++) {
			p[i] = keel_cache_malloc(&cache_a, size[k]);
			T_REQUIRE(t, p[i] != NULL);
		}
		struct keel_stats before, after;
		T_REQUIRE(t, keel_stats(t->heap, &before) == 0);
		medium_free_all(t, p, n);
		T_REQUIRE(t, keel_stats(t->heap, &after) == 0);
		T_CHECK(t, after.free_bytes == before.free_bytes);
		T_CHECK(t, after.live_blocks == before.live_blocks);
		if (k == 0) { /* all kept: last freed, first taken */
			unsigned same = 0;
			for (unsigned i = 0; i < n; i++) {
				unsigned char *q = keel_cache_malloc(&cache_a, size[k]);
				T_REQUIRE(t, q != NULL);
				same += q == p[n - 1 - i];
				p[n - 1 - i] = q;
			}
			T_CHECK(t, same == n);
			medium_free_all(t, p, n);
		} else { /* the first 13 went to the heap whole */
			unsigned char *q = keel_cache_malloc(&cache_b, size[k]);
			T_REQUIRE(t, q != NULL);
			int at = -1;
			for (unsigned i = 0; i < n; i++)
				at = q == p[i] ? (int)i : at;
			T_CHECK(t, at >= 0 && at < 13);
			T_CHECK(t, keel_cache_free(&cache_b, q) == 0);
		}
		T_CHECK_HEAP(t, t->heap);
		keel_cache_flush(&cache_a);
		keel_cache_flush(&cache_b);
		T_CHECK(t, keel_free(t->heap, big) == 0);
		T_CHECK(t, live_blocks(t->heap) == 0);
		T_CHECK_HEAP(t, t->heap);
	}
}

/* A full bin whose blocks the heap will not take (its place holds a list
 * of that size already) grows by half if its list served a malloc of the
 * cache since, and keeps the block; a bin only frees fill does not. 33
 * blocks of 16000 bytes (bins of 16): the 17th free hands a bin to the
 * heap, the 33rd finds bin and place full. Freed through the cache that
 * allocated them, none goes to the heap's lists; through another, the
 * 33rd does. With 2 MiB live the cache may keep more than 256 KiB. */
static void cache_medium_bin_grows(struct t *t)
{
	enum { N = 33 };
	static unsigned char *p[N];
	void *big = keel_malloc(t->heap, (size_t)2 << 20);
	T_REQUIRE(t, big != NULL);
	for (unsigned k = 0; k < 2; k++) {
		struct keel_cache *freer = k ? &cache_b : &cache_a;
		T_REQUIRE(t, keel_cache_init(&cache_a, t->heap) == 0);
		T_REQUIRE(t, keel_cache_init(&cache_b, t->heap) == 0);
		for (unsigned i = 0; i < N; i++) {
			p[i] = keel_cache_malloc(&cache_a, 16000);
			T_REQUIRE(t, p[i] != NULL);
		}
		struct keel_stats before, after;
		T_REQUIRE(t, keel_stats(t->heap, &before) == 0);
		for (unsigned i = 0; i < N; i++)
			T_CHECK(t, keel_cache_free(freer, p[i]) == 0);
		T_REQUIRE(t, keel_stats(t->heap, &after) == 0);
		T_CHECK(t, after.live_blocks == before.live_blocks - k);
		T_CHECK(t, (after.free_bytes > before.free_bytes) == (k == 1));
		T_CHECK_HEAP(t, t->heap);
		keel_cache_flush(&cache_a);
		keel_cache_flush(&cache_b);
		T_CHECK(t, live_blocks(t->heap) == 1);
	}
	T_CHECK(t, keel_free(t->heap, big) == 0);
	T_CHECK(t, live_blocks(t->heap) == 0);
	T_CHECK_HEAP(t, t->heap);
}

/* A cache whose kept medium blocks reach its cap hands a list's blocks to
 * the heap whole, where another cache takes them: a thread that only frees
 * (a consumer) would otherwise keep what its producer waits for, and send
 * every further free to the heap's lists. Pairs of blocks over 80 lists
 * (1-32 KiB) are past any cache's cap: the firsts freed fill it, and the
 * second of a pair whose first was kept hands that first on, which only
 * the heap can then give to cache_b. */
static void cache_medium_cap_hands_over(struct t *t)
{
	enum { NLISTS = 80 };
	static unsigned char *first[NLISTS], *second[NLISTS];
	static size_t size[NLISTS];
	T_REQUIRE(t, keel_cache_init(&cache_a, t->heap) == 0);
	T_REQUIRE(t, keel_cache_init(&cache_b, t->heap) == 0);
	for (unsigned i = 0; i < NLISTS; i++) {
		size_t base = (size_t)1024 << (i / 16); /* 16 lists a doubling */
		size[i] = base + (i % 16) * (base / 16);
		first[i] = keel_cache_malloc(&cache_a, size[i]);
		second[i] = keel_cache_malloc(&cache_a, size[i]);
		T_REQUIRE(t, first[i] != NULL && second[i] != NULL);
	}
	for (unsigned i = 0; i < NLISTS; i++)
		T_CHECK(t, keel_cache_free(&cache_a, first[i]) == 0);
	for (unsigned i = 0; i < NLISTS; i++)
		T_CHECK(t, keel_cache_free(&cache_a, second[i]) == 0);
	T_CHECK_HEAP(t, t->heap);
	unsigned handed = 0;
	for (unsigned i = 0; i < NLISTS; i++) {
		unsigned char *q = keel_cache_malloc(&cache_b, size[i]);
		T_REQUIRE(t, q != NULL);
		handed += q == first[i];
		T_CHECK(t, keel_cache_free(&cache_b, q) == 0);
	}
	T_CHECK(t, handed > 0);
	keel_cache_flush(&cache_a);
	keel_cache_flush(&cache_b);
	T_CHECK(t, live_blocks(t->heap) == 0);
	T_CHECK_HEAP(t, t->heap);
}

/* A medium block the cache kept, handed to an aligned request because its
 * address happens to suit, carries that alignment on: a keel_cache_realloc
 * that moves it keeps it, as for a block keel_aligned_alloc made (the
 * cache once handed such blocks out with the alignment their first malloc
 * asked, and a move then lost it). */
static void cache_aligned_kept_block_realloc(struct t *t)
{
	static void *q[64];
	T_REQUIRE(t, keel_cache_init(&cache_a, t->heap) == 0);
	unsigned moved = 0;
	for (unsigned round = 0; round < 400 && !t->failed; round++) {
		size_t base = 5000 + (round % 5) * 16;
		for (unsigned i = 0; i < 64; i++)
			T_REQUIRE(t, (q[i] = keel_cache_malloc(&cache_a, base + (i % 7) * 16)) !=
			                     NULL);
		for (unsigned i = 0; i < 64; i++)
			T_CHECK(t, keel_cache_free(&cache_a, q[i]) == 0);
		for (unsigned i = 0; i < 64; i++) {
			size_t align = (size_t)64 << ((i + round) % 7); /* 64 B to 4 KiB */
			unsigned char *p = keel_cache_aligned_alloc(&cache_a, align, 5000);
			T_REQUIRE(t, p != NULL && T_ALIGNED(p, align));
			if (i % 2 == 0) { /* the others go back to the cache as they are */
				t_fill(p, 5000, i);
				p = keel_cache_realloc(&cache_a, p, 100000 + round * 16);
				T_REQUIRE(t, p != NULL);
				if (!T_ALIGNED(p, align))
					t_diag("  round %u: a block aligned to %zu moved to %p",
					       round, align, (void *)p);
				T_CHECK(t, T_ALIGNED(p, align) && t_verify(p, 5000, i));
				moved++;
			}
			T_CHECK(t, keel_cache_free(&cache_a, p) == 0);
		}
	}
	T_CHECK(t, moved == 400 * 32);
	keel_cache_flush(&cache_a);
	T_CHECK(t, live_blocks(t->heap) == 0);
	T_CHECK_HEAP(t, t->heap);
}

/* keel_cache_realloc keeps keel_realloc's contract: NULL mallocs, a block
 * that fits stays, one that grows or shrinks keeps its bytes through small
 * classes, medium sizes and back, 0 frees, a stranger or an interior pointer
 * gets NULL and the heap is left as it was (unreported, as keel_realloc), a
 * block keel_aligned_alloc aligned stays aligned; the slot a block moved
 * out of is freed (a second free of the old pointer is a double free). */
static void cache_realloc(struct t *t)
{
	T_REQUIRE(t, keel_cache_init(&cache_a, t->heap) == 0);
	unsigned char *p = keel_cache_realloc(&cache_a, NULL, 24);
	T_REQUIRE(t, p != NULL);
	t_fill(p, 24, 7);
	T_CHECK(t, keel_cache_realloc(&cache_a, p, 20) == p); /* fits, not half empty */
	static const size_t sizes[] = { 40, 100, 300, 1000, 1024, T_MEDIUM, 2 * T_MEDIUM, 700, 24 };
	size_t have = 24;
	for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		unsigned char *q = keel_cache_realloc(&cache_a, p, sizes[i]);
		T_REQUIRE(t, q != NULL);
		size_t keep = sizes[i] < have ? sizes[i] : have;
		T_CHECK(t, t_verify(q, keep, 7));
		if (q != p && have <= 1024 && sizes[i] <= 1024)
			T_CHECK(t, keel_cache_free(&cache_a, p) == KEEL_EDOUBLE);
		t_fill(q, sizes[i], 7);
		p = q;
		have = sizes[i];
	}
	T_CHECK(t, keel_cache_realloc(&cache_a, p, 0) == NULL); /* frees */
	/* keel_aligned_alloc's alignment goes with the block, as in keel_realloc */
	p = keel_aligned_alloc(t->heap, 256, 40);
	T_REQUIRE(t, p != NULL);
	for (size_t size = 100; size <= 1000; size += 300) {
		p = keel_cache_realloc(&cache_a, p, size);
		T_REQUIRE(t, p != NULL);
		T_CHECK(t, T_ALIGNED(p, 256));
	}
	T_CHECK(t, keel_cache_free(&cache_a, p) == 0);
	keel_cache_flush(&cache_a);
	T_CHECK(t, live_blocks(t->heap) == 0);
	T_CHECK_HEAP(t, t->heap);
	/* bad pointers: NULL, and nothing changed */
	unsigned char *b = keel_cache_malloc(&cache_a, 64);
	T_REQUIRE(t, b != NULL);
	t_fill(b, 64, 3);
	struct keel_stats before, after;
	T_REQUIRE(t, keel_stats(t->heap, &before) == 0);
	uint64_t local = 42;
	T_CHECK(t, keel_cache_realloc(&cache_a, &local, 64) == NULL);
	T_CHECK(t, keel_cache_realloc(&cache_a, t_env_foreign_pointer(), 64) == NULL);
	T_CHECK(t, keel_cache_realloc(&cache_a, b + 16, 200) == NULL);
	T_CHECK(t, keel_cache_realloc(&cache_a, b + 1, 20) == NULL);
	T_REQUIRE(t, keel_stats(t->heap, &after) == 0);
	T_CHECK(t, local == 42 && t_verify(b, 64, 3));
	T_CHECK(t, before.live_blocks == after.live_blocks &&
	                   before.in_use_bytes == after.in_use_bytes);
	T_CHECK(t, keel_cache_free(&cache_a, b) == 0);
	keel_cache_flush(&cache_a);
	T_CHECK(t, live_blocks(t->heap) == 0);
	T_CHECK_HEAP(t, t->heap);
}

/* Many blocks grown together through every small class (strings appended
 * to in turn) leave no class holding their old slots: once the wave has
 * passed, what is in use beyond the blocks is at most a refill a class, not
 * each class's whole stack and transfer batches (about 3 MB here when the
 * old slots stayed in the cache). */
static void cache_realloc_wave(struct t *t)
{
	enum { N = 2000 };
	static unsigned char *p[N];
	T_REQUIRE(t, keel_cache_init(&cache_a, t->heap) == 0);
	for (unsigned i = 0; i < N; i++) {
		p[i] = keel_cache_malloc(&cache_a, 16);
		T_REQUIRE(t, p[i] != NULL);
		p[i][0] = (unsigned char)i;
	}
	for (size_t size = 32; size <= 1024; size += 16)
		for (unsigned i = 0; i < N; i++) {
			unsigned char *q = keel_cache_realloc(&cache_a, p[i], size);
			T_REQUIRE(t, q != NULL);
			T_CHECK(t, q[0] == (unsigned char)i);
			p[i] = q;
		}
	struct keel_stats st;
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	/* a refill is a quarter of a 32 KiB stack: 8 KiB and a slot a class */
	T_CHECK(t, st.in_use_bytes <= (size_t)N * 1024 + KEEL_NCLASSES * (8u << 10) + 64 * 1024);
	T_CHECK_HEAP(t, t->heap);
	for (unsigned i = 0; i < N; i++)
		T_CHECK(t, keel_cache_free(&cache_a, p[i]) == 0);
	keel_cache_flush(&cache_a);
	T_CHECK(t, live_blocks(t->heap) == 0);
	T_CHECK_HEAP(t, t->heap);
}

/* A cache that only frees medium blocks, of many sizes, holds 256 KiB of
 * them (and its share of the live bytes, cache_medium_share) and hands full
 * lists on to the heap, which takes no more than 256 KiB in all: the rest
 * go back to free memory (a program that grows strings by realloc and frees
 * them never mallocs a medium block, and one list held on per size kept 2
 * MiB here). */
static void cache_medium_handed_bounded(struct t *t)
{
	enum { NLISTS = 32, PER = 130 }; /* 1-4 KiB; a list's 64 KiB twice over */
	_Static_assert(2 * (65536 / 1040) + 2 <= PER, "room for the smallest size");
	static void *p[NLISTS][PER];
	T_REQUIRE(t, keel_cache_init(&cache_a, t->heap) == 0);
	size_t n[NLISTS];
	for (unsigned i = 0; i < NLISTS; i++) {
		size_t base = (size_t)1024 << (i / 16);
		size_t size = base + (i % 16) * (base / 16) + 16; /* not 2 KiB: a slot */
		n[i] = 2 * (65536 / size) + 2;
		for (size_t k = 0; k < n[i]; k++) {
			p[i][k] = keel_cache_malloc(&cache_a, size);
			T_REQUIRE(t, p[i][k] != NULL);
		}
	}
	/* past 256 KiB a cache keeps up to 1/16 of the live bytes more */
	size_t share = in_use(t->heap) / 16;
	for (size_t k = 0; k < PER; k++) /* by turns, so every list has some at the cap */
		for (unsigned i = 0; i < NLISTS; i++)
			if (k < n[i])
				T_CHECK(t, keel_cache_free(&cache_a, p[i][k]) == 0);
	struct keel_stats st;
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	/* the cache's 256 KiB and share and the heap's 256 KiB, by their lists'
	 * lower bounds: a block is at most 1/16 over its list's and has a header */
	T_CHECK(t, st.in_use_bytes <= (2 * (256u << 10) + share) * 17 / 16 + 2 * 256 * 16);
	T_CHECK(t, st.in_use_bytes >= (256u << 10)); /* the cache did keep its share */
	T_CHECK_HEAP(t, t->heap);
	keel_cache_flush(&cache_a);
	T_CHECK(t, live_blocks(t->heap) == 0);
	T_CHECK_HEAP(t, t->heap);
}

/* One medium block of each of the 96 lists (1 KiB to 64 KiB, 16 a
 * doubling), smallest first, about 1.5 MiB in all, from cache (which may
 * hand back blocks it kept). One a list: a cache at its cap hands a list on
 * to the heap only if it holds some of the list already, so what a cache
 * keeps of these is its own. */
#define SPREAD 96
static void medium_spread(struct t *t, struct keel_cache *cache, void **p)
{
	for (unsigned i = 0; i < SPREAD; i++) {
		size_t base = (size_t)1024 << (i / 16);
		p[i] = keel_cache_malloc(cache, base + (i % 16) * (base / 16) - 16);
		T_CHECK(t, p[i] != NULL);
	}
}

/* The bytes of p's blocks freed through cache that it kept live (kept
 * blocks count as live in in_use_bytes). */
static size_t free_kept(struct t *t, struct keel_cache *cache, void **p)
{
	size_t before = in_use(t->heap), gone = 0;
	for (unsigned i = 0; i < SPREAD; i++) {
		gone += keel_cache_usable_size(cache, p[i]);
		T_CHECK(t, keel_cache_free(cache, p[i]) == 0);
	}
	return in_use(t->heap) - (before - gone);
}

/* The 64 KiB steps all caches may hold at once: 1/16 of the live bytes. */
static size_t share_steps(struct t *t)
{
	return (in_use(t->heap) / 16) >> 16;
}

/* Whether kept is what a cache granted steps steps keeps of the spread's
 * blocks: its 256 KiB and the steps, less the first block that found no
 * room (62 KiB at most), by lower bounds: a block is 1/16 over its list's. */
static int kept_as_reserved(size_t kept, size_t steps)
{
	size_t room = (256 + 64 * steps) << 10;
	return kept >= room - (62u << 10) && kept <= room * 17 / 16;
}

/* A cache full of medium blocks keeps more, 64 KiB at a time, while all
 * caches' extra stays within 1/16 of the heap's live bytes (here, with a
 * block of 2.75 MiB, four steps for the first cache, and none left for the
 * second: the share is spent); a cache gives its steps back as its blocks
 * go out again, or at a flush, for another cache. Without the share a
 * cache keeps 256 KiB. The reservations are made while every block freed
 * so far is kept, so the live bytes before the frees decide them. */
static void cache_medium_share(struct t *t)
{
	static struct keel_cache cache_c;
	static void *p[SPREAD], *q[SPREAD];
	T_REQUIRE(t, keel_cache_init(&cache_a, t->heap) == 0);
	T_REQUIRE(t, keel_cache_init(&cache_b, t->heap) == 0);
	T_REQUIRE(t, keel_cache_init(&cache_c, t->heap) == 0);
	void *big = keel_malloc(t->heap, (size_t)11 << 18);
	T_REQUIRE(t, big != NULL);
	medium_spread(t, &cache_b, p);
	size_t steps_a = share_steps(t);
	T_REQUIRE(t, steps_a == 4);
	T_CHECK(t, kept_as_reserved(free_kept(t, &cache_a, p), steps_a));
	medium_spread(t, &cache_c, q);
	T_REQUIRE(t, share_steps(t) == steps_a); /* spent: cache_b gets none */
	T_CHECK(t, kept_as_reserved(free_kept(t, &cache_b, q), 0));
	T_CHECK_HEAP(t, t->heap);
	/* cache_a hands out every block it kept and gives its steps back */
	medium_spread(t, &cache_a, p);
	medium_spread(t, &cache_b, q);
	size_t steps_c = share_steps(t);
	T_REQUIRE(t, steps_c > steps_a);
	T_CHECK(t, kept_as_reserved(free_kept(t, &cache_c, q), steps_c));
	/* and once cache_c is flushed, cache_a gets as many (having given its
	 * steps back, it asks for one again at once) */
	keel_cache_flush(&cache_c);
	medium_spread(t, &cache_b, q);
	size_t steps = share_steps(t);
	T_CHECK(t, kept_as_reserved(free_kept(t, &cache_a, q), steps));
	T_CHECK_HEAP(t, t->heap);
	for (unsigned i = 0; i < SPREAD; i++)
		T_CHECK(t, keel_cache_free(&cache_c, p[i]) == 0);
	keel_cache_flush(&cache_a);
	keel_cache_flush(&cache_b);
	keel_cache_flush(&cache_c);
	T_CHECK(t, keel_free(t->heap, big) == 0);
	T_CHECK(t, live_blocks(t->heap) == 0);
	T_CHECK_HEAP(t, t->heap);
}

/* More frees than a class's stack and the heap's transfer stack hold:
 * batches go back to the runs, none is lost. */
static void cache_overflow_drains(struct t *t)
{
	static void *p[2000];
	T_REQUIRE(t, keel_cache_init(&cache_a, t->heap) == 0);
	for (unsigned i = 0; i < 2000; i++) {
		p[i] = keel_cache_malloc(&cache_a, 24);
		T_REQUIRE(t, p[i] != NULL);
	}
	T_CHECK(t, live_blocks(t->heap) >= 2000);
	for (unsigned i = 0; i < 2000; i++)
		T_CHECK(t, keel_cache_free(&cache_a, p[i]) == 0);
	size_t cached = live_blocks(t->heap);
	/* bounded as keel.h says: 512 in the bin, 8 batches of 32 on the
	 * heap's transfer stack; the rest went back */
	T_CHECK(t, cached > 0 && cached <= 512 + 8 * 32);
	T_CHECK_HEAP(t, t->heap);
	keel_trim(t->heap); /* empties the transfer stack, not the bin */
	T_CHECK(t, live_blocks(t->heap) > 0 && live_blocks(t->heap) <= 512);
	keel_cache_flush(&cache_a);
	T_CHECK(t, live_blocks(t->heap) == 0);
	T_CHECK_HEAP(t, t->heap);
}

/* Blocks allocated through one cache and freed through another, as threads
 * (or CPUs) hand them over. */
static void cache_cross_free(struct t *t)
{
	static unsigned char *p[500];
	T_REQUIRE(t, keel_cache_init(&cache_a, t->heap) == 0);
	T_REQUIRE(t, keel_cache_init(&cache_b, t->heap) == 0);
	for (unsigned round = 0; round < 4; round++) {
		struct keel_cache *from = round & 1 ? &cache_b : &cache_a;
		struct keel_cache *to = round & 1 ? &cache_a : &cache_b;
		for (unsigned i = 0; i < 500; i++) {
			size_t size = 8 + (i * 13) % 700;
			p[i] = keel_cache_malloc(from, size);
			T_REQUIRE(t, p[i] != NULL);
			t_fill(p[i], size, i + round);
		}
		for (unsigned i = 0; i < 500; i++) {
			T_CHECK(t, t_verify(p[i], 8 + (i * 13) % 700, i + round));
			T_CHECK(t, keel_cache_free(to, p[i]) == 0);
		}
	}
	T_CHECK_HEAP(t, t->heap);
	keel_cache_flush(&cache_a);
	keel_cache_flush(&cache_b);
	T_CHECK(t, live_blocks(t->heap) == 0);
	T_CHECK_HEAP(t, t->heap);
}

/* One cache frees what another allocates, as a consumer and a producer do:
 * a full bin's slots reach a cache that runs short as whole batches, and a
 * full medium bin as a whole bin, without going back to the runs or the
 * TLSF. Each block handed out again is one the consumer freed, once. */
static int index_of(unsigned char *const *set, unsigned n, const unsigned char *p)
{
	for (unsigned i = 0; i < n; i++)
		if (set[i] == p)
			return (int)i;
	return -1;
}

static void cache_batches_between_caches(struct t *t)
{
	static struct keel_cache cache_c;
	static unsigned char *p[1200], *q[16];
	static unsigned char taken[1200];
	static const size_t sizes[2] = { 48, 3000 }; /* a small class, a medium list */
	T_REQUIRE(t, keel_cache_init(&cache_a, t->heap) == 0);
	T_REQUIRE(t, keel_cache_init(&cache_b, t->heap) == 0);
	for (unsigned k = 0; k < 2; k++) {
		unsigned n = k ? 40 : 1200; /* past a full bin: 64 KiB holds 21 of 3000 bytes */
		for (unsigned i = 0; i < n; i++) {
			p[i] = keel_cache_malloc(&cache_b, sizes[k]);
			T_REQUIRE(t, p[i] != NULL);
			taken[i] = 0;
		}
		for (unsigned i = 0; i < n; i++)
			T_CHECK(t, keel_cache_free(&cache_a, p[i]) == 0); /* the consumer */
		T_CHECK_HEAP(t, t->heap);
		struct keel_stats before, after;
		T_REQUIRE(t, keel_stats(t->heap, &before) == 0);
		/* a producer with empty bins */
		T_REQUIRE(t, keel_cache_init(&cache_c, t->heap) == 0);
		for (unsigned i = 0; i < 16; i++) {
			q[i] = keel_cache_malloc(&cache_c, sizes[k]);
			T_REQUIRE(t, q[i] != NULL);
			int at = index_of(p, n, q[i]);
			T_CHECK(t, at >= 0 && !taken[at]);
			if (at >= 0)
				taken[at] = 1;
			t_fill(q[i], sizes[k], i);
		}
		T_REQUIRE(t, keel_stats(t->heap, &after) == 0);
		T_CHECK(t, after.live_blocks == before.live_blocks); /* counted live throughout */
		T_CHECK_HEAP(t, t->heap);
		for (unsigned i = 0; i < 16; i++) {
			T_CHECK(t, t_verify(q[i], sizes[k], i));
			T_CHECK(t, keel_cache_free(&cache_c, q[i]) == 0);
		}
		keel_cache_flush(&cache_a);
		keel_cache_flush(&cache_b);
		keel_cache_flush(&cache_c);
		T_CHECK(t, live_blocks(t->heap) == 0);
	}
	T_CHECK_HEAP(t, t->heap);
}

/* Random operations through two caches and the heap itself, checked against
 * a shadow of what each live block holds. */
static void cache_random(struct t *t)
{
	enum { SLOTS = 400 };
	static unsigned char *p[SLOTS];
	static size_t size[SLOTS];
	uint64_t seed = t->seed = 0xcac4e5eedull;
	T_REQUIRE(t, keel_cache_init(&cache_a, t->heap) == 0);
	T_REQUIRE(t, keel_cache_init(&cache_b, t->heap) == 0);
	for (unsigned i = 0; i < SLOTS; i++)
		p[i] = NULL;
	for (unsigned op = 0; op < 20000; op++) {
		uint64_t r = t_rand(&seed);
		unsigned i = (unsigned)(r % SLOTS);
		struct keel_cache *c = (r >> 20) & 1 ? &cache_a : &cache_b;
		if (p[i]) {
			T_CHECK(t, t_verify(p[i], size[i], i ^ 0x5a5a));
			int rc = (r >> 21) % 5 == 0 ? keel_free(t->heap, p[i])
			                            : keel_cache_free(c, p[i]);
			T_CHECK(t, rc == 0);
			p[i] = NULL;
		} else {
			size[i] = (r >> 24) % 8 == 0 ? 1 + (r >> 32) % 20000
			                             : 1 + (r >> 32) % KEEL_SMALL_MAX;
			p[i] = keel_cache_malloc(c, size[i]);
			T_REQUIRE(t, p[i] != NULL);
			t_fill(p[i], size[i], i ^ 0x5a5a);
		}
		if (op % 4000 == 0)
			T_CHECK_HEAP(t, t->heap);
		if (t->failed)
			return;
	}
	for (unsigned i = 0; i < SLOTS; i++)
		if (p[i]) {
			T_CHECK(t, t_verify(p[i], size[i], i ^ 0x5a5a));
			T_CHECK(t, keel_cache_free(&cache_a, p[i]) == 0);
		}
	keel_cache_flush(&cache_a);
	keel_cache_flush(&cache_b);
	T_CHECK(t, live_blocks(t->heap) == 0);
}

/* A heap with caches keeps its registry nodes through keel_trim (caches read
 * them without the lock); destroy still gives everything back. */
static void cache_trim_keeps_registry(struct t *t)
{
	T_REQUIRE(t, keel_cache_init(&cache_a, t->heap) == 0);
	void *p = keel_cache_malloc(&cache_a, 100);
	T_REQUIRE(t, p != NULL);
	T_CHECK(t, keel_cache_free(&cache_a, p) == 0);
	keel_cache_flush(&cache_a);
	keel_trim(t->heap);
	T_CHECK(t, t_segment_bytes(t->src) == 0);
	T_CHECK(t, t->src->live_bytes > 0);
	T_CHECK(t, keel_cache_malloc(&cache_a, 100) != NULL);
}

const struct t_case cache_cases[] = {
	T_CASE(cache_init_bad_args),
	T_CASE(cache_small_round_trip),
	T_CASE(cache_reuses_freed_slot),
	T_CASE(cache_power_of_two_aligned),
	T_CASE(cache_aligned_alloc),
	T_CASE(cache_aligned_kept_block_realloc),
	T_CASE(cache_double_free),
	T_CASE(cache_double_free_other_cache),
	T_CASE(cache_bad_pointers),
	T_CASE(cache_other_heap),
	T_CASE(cache_medium_kept_large_passes),
	T_CASE(cache_medium_nearby_list),
	T_CASE(cache_medium_bin_bounds),
	T_CASE(cache_medium_bin_grows),
	T_CASE(cache_medium_cap_hands_over),
	T_CASE(cache_medium_handed_bounded),
	T_CASE(cache_medium_share),
	T_CASE(cache_realloc),
	T_CASE(cache_realloc_wave),
	T_CASE(cache_overflow_drains),
	T_CASE(cache_cross_free),
	T_CASE(cache_batches_between_caches),
	T_CASE(cache_random),
	T_CASE(cache_trim_keeps_registry),
	{ 0 },
};
