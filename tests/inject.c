/* tests/inject.c: fault injection at every page-source call. A mixed
 * workload (small, medium, large, realloc, aligned, calloc, through a
 * keel_cache too) first runs clean to count its maps; then it runs once per
 * map call with exactly that call refused, in default and in checked mode.
 * Every refusal may only turn into NULL, blocks keep their contents,
 * keel_check stays clean at every step, and freeing everything gives every
 * segment back. */
#include "test.h"

#define NSLOT 32

enum op { OP_MALLOC, OP_CALLOC, OP_REALLOC, OP_ALIGNED, OP_CACHE, OP_FREE, OP_CACHE_FREE, OP_TRIM };

/* The workload: one step per line. slot: where the block goes (or which is
 * freed); size; align for OP_ALIGNED. */
static const struct step {
	enum op op;
	unsigned slot;
	size_t size, align;
} steps[] = {
	{ OP_MALLOC, 0, 24, 0 },
	{ OP_CACHE, 1, 100, 0 },
	{ OP_MALLOC, 2, T_MEDIUM, 0 },
	{ OP_CALLOC, 3, 700, 0 },
	{ OP_CACHE, 4, 16, 0 },
	{ OP_MALLOC, 5, T_LARGE, 0 },
	{ OP_REALLOC, 0, 5000, 0 },
	{ OP_ALIGNED, 6, 200, 4096 },
	{ OP_ALIGNED, 7, 3000, (size_t)1 << 16 },
	{ OP_FREE, 2, 0, 0 },
	{ OP_CALLOC, 8, 40000, 0 },
	{ OP_REALLOC, 1, 1000, 0 },
	{ OP_CACHE, 9, 512, 0 },
	{ OP_MALLOC, 10, 300000, 0 },
	{ OP_ALIGNED, 11, 100, (size_t)1 << 21 },
	{ OP_CACHE_FREE, 4, 0, 0 },
	{ OP_MALLOC, 12, KEEL_SEGMENT_SIZE, 0 },
	{ OP_REALLOC, 3, 70000, 0 },
	{ OP_CACHE, 13, 64, 0 },
	{ OP_FREE, 5, 0, 0 },
	{ OP_MALLOC, 14, T_LARGE + 5000, 0 },
	{ OP_TRIM, 0, 0, 0 },
	{ OP_REALLOC, 14, 3 * KEEL_SEGMENT_SIZE, 0 },
	{ OP_CALLOC, 15, 2 * KEEL_SEGMENT_SIZE, 0 },
	{ OP_CACHE, 16, 900, 0 },
	{ OP_MALLOC, 17, 20000, 0 },
	{ OP_REALLOC, 10, 100, 0 },
	{ OP_ALIGNED, 18, 5000, 128 },
	{ OP_FREE, 0, 0, 0 },
	{ OP_CACHE_FREE, 9, 0, 0 },
	{ OP_MALLOC, 19, 800, 0 },
	{ OP_REALLOC, 12, 200, 0 },
	{ OP_CALLOC, 20, 1, 0 },
	{ OP_MALLOC, 21, 150000, 0 },
	{ OP_CACHE, 22, 200, 0 },
	{ OP_TRIM, 0, 0, 0 },
	{ OP_MALLOC, 23, 3000, 0 },
	{ OP_MALLOC, 24, 600000, 0 },
	{ OP_CACHE, 25, 48, 0 },
	{ OP_MALLOC, 26, 600000, 0 },
	{ OP_ALIGNED, 27, 64, (size_t)1 << 21 },
	{ OP_CALLOC, 28, T_LARGE + 1, 0 },
	{ OP_FREE, 24, 0, 0 },
	{ OP_REALLOC, 26, 900000, 0 },
	{ OP_TRIM, 0, 0, 0 },
	{ OP_MALLOC, 29, 700000, 0 },
	{ OP_REALLOC, 27, 2 * KEEL_SEGMENT_SIZE, 0 },
	{ OP_CACHE_FREE, 25, 0, 0 },
	{ OP_MALLOC, 30, 10, 0 },
	{ OP_CALLOC, 31, 250000, 0 },
};
#define NSTEPS (sizeof steps / sizeof steps[0])

static unsigned char *blk[NSLOT];
static size_t blk_size[NSLOT];

/* Mark each block's head and tail (all of a small one): enough to see a
 * misplaced or clobbered block, cheap enough for a hundred runs. */
#define MARK 256
static void mark(unsigned char *p, size_t size, uint64_t tag)
{
	if (size <= 2 * MARK) {
		t_fill(p, size, tag);
		return;
	}
	t_fill(p, MARK, tag);
	t_fill(p + size - MARK, MARK, ~tag);
}

static int marked(const unsigned char *p, size_t size, uint64_t tag)
{
	if (size <= 2 * MARK)
		return t_verify(p, size, tag);
	return t_verify(p, MARK, tag) && t_verify(p + size - MARK, MARK, ~tag);
}

struct outcome {
	unsigned nulls;     /* allocations that gave NULL */
	unsigned recovered; /* steps that saw a refused map and still succeeded */
};

/* Run the workload on aux heap a with the map call number fail refused
 * (-1: none). Frees everything, flushes the cache and trims at the end. */
static int workload(struct t *t, struct t_aux *a, long fail, struct outcome *out)
{
	static struct keel_cache cache;
	struct keel_heap *h = &a->heap;
	int failed = t->failed;
	out->nulls = out->recovered = 0;
	a->src.fail_only = fail;
	T_CHECK(t, keel_cache_init(&cache, h) == 0);
	for (unsigned i = 0; i < NSLOT; i++)
		blk[i] = NULL;
	for (unsigned s = 0; s < NSTEPS && t->failed == failed; s++) {
		const struct step *st = &steps[s];
		unsigned i = st->slot;
		size_t refused = a->src.failed_maps;
		unsigned char *p = NULL;
		int allocates = 1;
		switch (st->op) {
		case OP_MALLOC:
			p = keel_malloc(h, st->size);
			break;
		case OP_CALLOC:
			p = keel_calloc(h, 1, st->size);
			T_CHECK(t, !p || t_is_zero(p, st->size));
			break;
		case OP_ALIGNED:
			p = keel_aligned_alloc(h, st->align, st->size);
			T_CHECK(t, !p || T_ALIGNED(p, st->align));
			break;
		case OP_CACHE:
			p = keel_cache_malloc(&cache, st->size);
			break;
		case OP_REALLOC:
			if (!blk[i]) {
				allocates = 0; /* its block was refused earlier */
				break;
			}
			p = keel_realloc(h, blk[i], st->size);
			if (p) {
				size_t keep = blk_size[i] < st->size ? blk_size[i] : st->size;
				T_CHECK(t, t_verify(p, keep < MARK ? keep : MARK, i));
			} else {
				T_CHECK(t, marked(blk[i], blk_size[i], i)); /* left untouched */
			}
			break;
		case OP_FREE:
		case OP_CACHE_FREE:
			allocates = 0;
			if (blk[i]) {
				T_CHECK(t, marked(blk[i], blk_size[i], i));
				int rc = st->op == OP_FREE ? keel_free(h, blk[i])
				                           : keel_cache_free(&cache, blk[i]);
				T_CHECK(t, rc == 0);
				blk[i] = NULL;
			}
			break;
		case OP_TRIM:
			allocates = 0;
			keel_trim(h);
			break;
		}
		if (allocates) {
			if (p) {
				blk[i] = p;
				blk_size[i] = st->size;
				mark(p, st->size, i);
				out->recovered += a->src.failed_maps != refused;
			} else {
				out->nulls++;
				/* only a refused map may make an allocation fail */
				if (a->src.failed_maps == refused)
					t_diag("  step %u: NULL with no map refused", s);
				T_CHECK(t, a->src.failed_maps != refused);
			}
		}
		if (!T_CHECK_HEAP(t, h))
			t_diag("  after step %u", s);
		for (unsigned k = 0; k < NSLOT; k++)
			if (blk[k] && !marked(blk[k], blk_size[k], k)) {
				t_diag("  step %u: block %u (%zu bytes) clobbered", s, k,
				       blk_size[k]);
				T_CHECK(t, !"live blocks intact");
			}
	}
	struct keel_stats st;
	T_CHECK(t, keel_stats(h, &st) == 0);
	T_CHECK(t, st.source_failures == a->src.failed_maps);
	for (unsigned i = 0; i < NSLOT; i++)
		if (blk[i]) {
			T_CHECK(t, keel_free(h, blk[i]) == 0);
			blk[i] = NULL;
		}
	keel_cache_flush(&cache);
	T_CHECK_HEAP(t, h);
	keel_trim(h);
	T_CHECK(t, keel_stats(h, &st) == 0 && st.live_blocks == 0);
	/* every segment and large block is back (registry nodes stay: a cache
	 * was attached; t_aux_close checks that destroy returns them) */
	if (t_segment_bytes(&a->src) != 0)
		t_diag("  %zu bytes of segments held after free all and trim",
		       t_segment_bytes(&a->src));
	T_CHECK(t, t_segment_bytes(&a->src) == 0);
	return t->failed == failed;
}

/* Count the maps of a clean run, then refuse each one in turn. How many
 * maps a run makes depends a little on where the source puts its segments
 * (a run whose segments straddle a 1 GiB line needs one registry leaf
 * more), and the kernel's source hands out addresses next-fit, so no two
 * runs there land alike: a run that ends before the call to refuse must
 * have run clean, and every refused call must have been handled. */
static void sweep(struct t *t, unsigned flags)
{
	struct outcome o;
	struct t_aux *a = t_aux_open(t, t_env_source(), NULL, flags, 0);
	T_REQUIRE(t, a != NULL);
	T_REQUIRE(t, workload(t, a, -1, &o));
	T_CHECK(t, o.nulls == 0 && a->src.failed_maps == 0);
	long nmaps = (long)a->src.map_calls, fewest = nmaps;
	t_aux_close(t, a);
	T_REQUIRE(t, nmaps > 0);

	unsigned with_null = 0, recovered = 0, refused = 0;
	for (long k = 0; k <= nmaps; k++) {
		a = t_aux_open(t, t_env_source(), NULL, flags, 0);
		T_REQUIRE(t, a != NULL);
		int ok = workload(t, a, k, &o);
		if (a->src.failed_maps == 0) { /* call k never came: a clean run */
			T_CHECK(t, o.nulls == 0);
			if ((long)a->src.map_calls < fewest)
				fewest = (long)a->src.map_calls;
		} else {
			T_CHECK(t, a->src.failed_maps == 1);
			refused++;
			with_null += o.nulls != 0;
			recovered += o.recovered != 0;
		}
		ok &= t_aux_close(t, a);
		if (!ok) {
			t_diag("  %s mode: map call %d of %d refused",
			       flags ? "checked" : "default", (int)k, (int)nmaps);
			return;
		}
	}
	t_diag("%s mode: %d map calls refused one at a time (runs of %d-%d maps): %u gave "
	       "NULL, %u recovered",
	       flags ? "checked" : "default", (int)refused, (int)fewest, (int)nmaps, with_null,
	       recovered);
	T_CHECK(t, fewest >= nmaps - 2); /* a registry node or two, no more */
	T_CHECK(t, with_null + recovered >= refused);
}

static void inject_each_map_default(struct t *t)
{
	sweep(t, 0);
}

static void inject_each_map_checked(struct t *t)
{
	sweep(t, KEEL_HEAP_CHECKED);
}

const struct t_case inject_cases[] = {
	T_CASE(inject_each_map_default),
	T_CASE(inject_each_map_checked),
	{ 0 },
};
