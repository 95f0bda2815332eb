/* tests/source.c: keel and its page source. A source that refuses from the
 * k-th map on leaves the heap consistent at every step; trim and destroy
 * give back every page; large blocks map and unmap on their own. */
#include "test.h"

#define NW 64
static void *wp[NW];
static size_t wsize[NW];

enum workload { W_SMALL, W_MIXED, W_REALLOC, W_ALIGNED };

/* The sweeps run the workload dozens of times: mark only each block's head
 * and tail (the whole of a small one), which still shows a misplaced block. */
#define MARK 512
static void mark(void *p, size_t size, uint64_t tag)
{
	unsigned char *b = p;
	if (size <= 2 * MARK) {
		t_fill(b, size, tag);
		return;
	}
	t_fill(b, MARK, tag);
	t_fill(b + size - MARK, MARK, ~tag);
}

static int marked(const void *p, size_t size, uint64_t tag)
{
	const unsigned char *b = p;
	if (size <= 2 * MARK)
		return t_verify(b, size, tag);
	return t_verify(b, MARK, tag) && t_verify(b + size - MARK, MARK, ~tag);
}

/* One step of a fixed workload: returns the size to allocate in slot i. */
static size_t w_size(enum workload w, unsigned i)
{
	static const size_t mixed[] = { 24,     700,   T_MEDIUM, 40000, T_LARGE, 1,
		                        300000, 5000,  100,      2000,  64,      KEEL_SEGMENT_SIZE,
		                        16,     20000, 800,      1 };
	switch (w) {
	case W_SMALL:
		return 16 + (i * 37) % KEEL_SMALL_MAX;
	case W_MIXED:
		return mixed[i % 16] + i;
	case W_REALLOC:
		return 100 + i * 5000;
	default:
		return 64 + i * 100;
	}
}

/* Run the workload on heap h over counting source ts with maps failing
 * from call k on. Returns the number of NULLs seen. */
static unsigned workload(struct t *t, struct keel_heap *h, struct t_source *ts, enum workload w,
                         long k)
{
	unsigned nulls = 0;
	struct keel_stats st;
	ts->fail_at = k;
	for (unsigned i = 0; i < NW; i++) {
		size_t size = w_size(w, i);
		void *p;
		if (w == W_ALIGNED)
			p = keel_aligned_alloc(h, (size_t)16 << (i % 14), size);
		else if (w == W_REALLOC && i > 0 && wp[i - 1]) {
			/* move the previous block up; on NULL it must stay intact */
			p = keel_realloc(h, wp[i - 1], size);
			if (p) {
				T_CHECK(t, marked(p, wsize[i - 1], i - 1));
				wp[i - 1] = NULL;
			} else {
				T_CHECK(t, marked(wp[i - 1], wsize[i - 1], i - 1));
			}
		} else
			p = keel_malloc(h, size);
		wp[i] = p;
		wsize[i] = p ? size : 0;
		if (p)
			mark(p, size, i);
		else
			nulls++;
		if (!T_CHECK_HEAP(t, h)) {
			t_diag("  workload %d, k %d, step %u", (int)w, (int)k, i);
			break;
		}
		if (i % 3 == 2 && wp[i - 1]) {
			T_CHECK(t, marked(wp[i - 1], wsize[i - 1], i - 1));
			T_CHECK(t, keel_free(h, wp[i - 1]) == 0);
			wp[i - 1] = NULL;
		}
	}
	T_CHECK(t, keel_stats(h, &st) == 0);
	T_CHECK(t, st.failed_allocs == nulls);
	if (st.failed_allocs != nulls)
		t_diag("  workload %d k %d: failed_allocs %zu, NULLs %u", (int)w, (int)k,
		       st.failed_allocs, nulls);
	T_CHECK(t, st.source_failures == ts->failed_maps);
	for (unsigned i = 0; i < NW; i++) {
		if (!wp[i])
			continue;
		T_CHECK(t, marked(wp[i], wsize[i], i));
		T_CHECK(t, keel_free(h, wp[i]) == 0);
		wp[i] = NULL;
	}
	T_CHECK_HEAP(t, h);
	keel_trim(h);
	T_CHECK(t, ts->live_bytes == 0);
	T_CHECK(t, keel_stats(h, &st) == 0 && st.source_bytes == 0 && st.live_blocks == 0);
	return nulls;
}

static void sweep(struct t *t, enum workload w, long kmax)
{
	unsigned saw_null = 0, saw_full = 0;
	for (long k = 0; k <= kmax; k++) {
		struct t_aux *a = t_aux_open(t, t_env_source(), NULL, 0, 0);
		T_REQUIRE(t, a != NULL);
		int failed = t->failed;
		unsigned nulls = workload(t, &a->heap, &a->src, w, k);
		saw_null |= nulls != 0;
		saw_full |= nulls == 0;
		t_aux_close(t, a);
		if (t->failed != failed) {
			t_diag("  failing source sweep: workload %d, k %d", (int)w, (int)k);
			return;
		}
	}
	T_CHECK(t, saw_null); /* k = 0 refuses everything */
	T_CHECK(t, saw_full); /* and kmax is past what the workload needs */
}

static void source_fail_small(struct t *t)
{
	sweep(t, W_SMALL, 40);
}

static void source_fail_mixed(struct t *t)
{
	sweep(t, W_MIXED, 48);
}

static void source_fail_realloc(struct t *t)
{
	sweep(t, W_REALLOC, 40);
}

static void source_fail_aligned(struct t *t)
{
	sweep(t, W_ALIGNED, 40);
}

static void source_refuses_everything(struct t *t)
{
	t->src->fail_at = 0;
	T_CHECK(t, keel_malloc(t->heap, 1) == NULL);
	T_CHECK(t, keel_malloc(t->heap, T_MEDIUM) == NULL);
	T_CHECK(t, keel_malloc(t->heap, T_LARGE) == NULL);
	T_CHECK(t, keel_calloc(t->heap, 1, 100) == NULL);
	T_CHECK(t, keel_aligned_alloc(t->heap, 4096, 100) == NULL);
	T_CHECK(t, keel_realloc(t->heap, NULL, 100) == NULL);
	struct keel_stats st;
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.failed_allocs == 6);
	T_CHECK(t, st.source_failures >= 1);
	T_CHECK(t, st.source_failures == t->src->failed_maps);
	T_CHECK(t, st.live_blocks == 0 && st.source_bytes == 0);
	T_CHECK_HEAP(t, t->heap);
	/* and it recovers once the source does */
	t->src->fail_at = -1;
	void *p = keel_malloc(t->heap, 1);
	T_REQUIRE(t, p != NULL);
	T_CHECK(t, keel_free(t->heap, p) == 0);
}

static void source_counts_match(struct t *t)
{
	struct keel_stats st;
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.source_maps == 0 && st.source_bytes == 0 && st.segments == 0);
	void *a = keel_malloc(t->heap, 100);
	T_REQUIRE(t, a != NULL);
	T_CHECK(t, t->src->maps >= 1);
	void *b = keel_malloc(t->heap, T_LARGE);
	T_REQUIRE(t, b != NULL);
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.source_maps == t->src->maps);
	T_CHECK(t, st.source_unmaps == t->src->unmaps);
	T_CHECK(t, st.source_bytes == t->src->live_bytes);
	T_CHECK(t, st.peak_source_bytes == t->src->peak_bytes);
	T_CHECK(t, st.source_bytes >= T_LARGE + 100);
	T_CHECK(t, st.segments >= 2);
	T_CHECK(t, keel_free(t->heap, b) == 0);
	T_CHECK(t, keel_free(t->heap, a) == 0);
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.source_maps == t->src->maps);
	T_CHECK(t, st.source_unmaps == t->src->unmaps);
	T_CHECK(t, st.source_bytes == t->src->live_bytes);
}

static void source_large_own_mapping(struct t *t)
{
	void *small = keel_malloc(t->heap, 100);
	T_REQUIRE(t, small != NULL);
	size_t maps = t->src->maps, live = t->src->live_bytes;
	struct keel_stats st;
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	size_t segs = st.segments;
	unsigned char *p = keel_malloc(t->heap, T_LARGE);
	T_REQUIRE(t, p != NULL);
	/* one mapping of its own, and the registry nodes for its address if
	 * it is the first in its GiB (two at most, 8 KiB each) */
	size_t maps_now = t->src->maps;
	T_CHECK(t, maps_now >= maps + 1 && maps_now <= maps + 3);
	T_CHECK(t, t->src->live_bytes >= live + T_LARGE);
	T_CHECK(t, t->src->live_bytes <= live + T_LARGE + 2 * KEEL_SEGMENT_SIZE);
	p[0] = 1;
	p[T_LARGE - 1] = 2;
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.large_blocks == 1);
	T_CHECK(t, st.segments == segs + 1);
	/* a freed large block is kept for reuse (keel.h: keel_free), counted
	 * as free, and the next block that fits takes it without a new map */
	size_t held = t->src->live_bytes;
	T_CHECK(t, keel_free(t->heap, p) == 0);
	T_CHECK(t, t->src->live_bytes == held);
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.large_blocks == 0);
	T_CHECK(t, st.free_bytes >= T_LARGE);
	T_CHECK(t, keel_free(t->heap, p) == KEEL_EDOUBLE);
	unsigned char *q = keel_malloc(t->heap, T_LARGE - 5000);
	T_CHECK(t, q == p);
	T_CHECK(t, t->src->maps == maps_now);
	T_CHECK(t, keel_free(t->heap, q) == 0);
	/* and keel_trim gives it back */
	T_CHECK(t, keel_trim(t->heap) >= T_LARGE);
	T_CHECK(t, t->src->live_bytes <= live);
	T_CHECK(t, keel_free(t->heap, p) != 0);
	T_CHECK(t, keel_free(t->heap, small) == 0);
}

static void trim_returns_everything(struct t *t)
{
	static void *p[400];
	for (unsigned i = 0; i < 400; i++) {
		p[i] = keel_malloc(t->heap, (i % 3 == 0) ? 20000 : 16 + i);
		T_REQUIRE(t, p[i] != NULL);
	}
	T_CHECK(t, t->src->live_bytes > 0);
	for (unsigned i = 0; i < 400; i++)
		T_CHECK(t, keel_free(t->heap, p[i]) == 0);
	size_t before = t->src->live_bytes;
	size_t given = keel_trim(t->heap);
	T_CHECK(t, t->src->live_bytes == 0);
	if (given != before)
		t_diag("  keel_trim returned %zu; the source got back %zu", given, before);
	T_CHECK(t, given == before);
	T_CHECK(t, keel_trim(t->heap) == 0);
	struct keel_stats st;
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.source_bytes == 0 && st.segments == 0);
	/* the heap is still usable after a trim */
	void *q = keel_malloc(t->heap, 100);
	T_REQUIRE(t, q != NULL);
	T_CHECK(t, keel_free(t->heap, q) == 0);
}

static void trim_keeps_live(struct t *t)
{
	static unsigned char *p[200];
	for (unsigned i = 0; i < 200; i++) {
		p[i] = keel_malloc(t->heap, 50 + i * 50);
		T_REQUIRE(t, p[i] != NULL);
		t_fill(p[i], 50 + i * 50, i);
	}
	for (unsigned i = 0; i < 200; i++)
		if (i % 4)
			T_CHECK(t, keel_free(t->heap, p[i]) == 0);
	keel_trim(t->heap);
	T_CHECK(t, t->src->live_bytes > 0);
	T_CHECK_HEAP(t, t->heap);
	for (unsigned i = 0; i < 200; i += 4) {
		T_CHECK(t, t_verify(p[i], 50 + i * 50, i));
		T_CHECK(t, keel_free(t->heap, p[i]) == 0);
	}
	keel_trim(t->heap);
	T_CHECK(t, t->src->live_bytes == 0);
}

static void trim_fresh_heap(struct t *t)
{
	T_CHECK(t, keel_trim(t->heap) == 0);
	T_CHECK(t, t->src->maps == 0 && t->src->unmaps == 0);
}

static void retain_bounded(struct t *t)
{
	/* Without a trim, empty segments held back stay within retain_bytes. */
	static const size_t retain[] = { 0, 3 * KEEL_SEGMENT_SIZE };
	static void *p[64];
	for (unsigned r = 0; r < 2; r++) {
		struct t_aux *a = t_aux_open(t, t_env_source(), NULL, 0, retain[r]);
		T_REQUIRE(t, a != NULL);
		size_t keep = retain[r] ? retain[r] : KEEL_SEGMENT_SIZE;
		for (unsigned i = 0; i < 64; i++) {
			p[i] = keel_malloc(&a->heap, 100000); /* ~6 MiB of medium blocks */
			T_REQUIRE(t, p[i] != NULL);
		}
		T_CHECK(t, t_segment_bytes(&a->src) >= 6 * KEEL_SEGMENT_SIZE);
		for (unsigned i = 0; i < 64; i++)
			T_CHECK(t, keel_free(&a->heap, p[i]) == 0);
		size_t held = t_segment_bytes(&a->src);
		if (held > keep)
			t_diag("  retain %zu: %zu bytes of segments still held", keep, held);
		T_CHECK(t, held <= keep);
		T_CHECK(t, held > 0); /* something is retained for reuse */
		keel_trim(&a->heap);
		T_CHECK(t, a->src.live_bytes == 0);
		t_aux_close(t, a);
	}
}

static void destroy_with_live_blocks(struct t *t)
{
	struct t_aux *a = t_aux_open(t, t_env_source(), NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	for (unsigned i = 0; i < 300; i++)
		T_REQUIRE(t, keel_malloc(&a->heap, 10 + (i * 97) % 30000) != NULL);
	T_REQUIRE(t, keel_malloc(&a->heap, T_LARGE) != NULL);
	T_REQUIRE(t, keel_aligned_alloc(&a->heap, (size_t)1 << 21, 100) != NULL);
	T_CHECK(t, a->src.live_maps >= 3);
	T_CHECK(t, t_aux_close(t, a)); /* destroy == 0 and every page back */
	T_CHECK(t, a->src.unmaps == a->src.maps);
	/* and the main heap too: the runner destroys it with these still live */
	for (unsigned i = 0; i < 50; i++)
		T_CHECK(t, keel_malloc(t->heap, 100 + i * 1000) != NULL);
	T_CHECK(t, keel_malloc(t->heap, T_LARGE) != NULL);
}

static void destroy_reports_unmap_error(struct t *t)
{
	struct t_aux *a = t_aux_open(t, t_env_source(), NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	T_REQUIRE(t, keel_malloc(&a->heap, 100) != NULL);
	T_REQUIRE(t, keel_malloc(&a->heap, T_LARGE) != NULL);
	T_REQUIRE(t, keel_malloc(&a->heap, 3 * KEEL_SEGMENT_SIZE) != NULL);
	a->src.unmap_error = -5;
	a->is_open = 0; /* destroyed here, not by t_aux_close */
	T_CHECK(t, keel_heap_destroy(&a->heap) == -5);
	/* every mapping was still offered back */
	T_CHECK(t, a->src.live_bytes == 0 && a->src.live_maps == 0);
	T_CHECK(t, a->src.unmaps == a->src.maps);
	T_CHECK(t, a->src.bad_unmaps == 0);
}

static void heap_reinit_after_destroy(struct t *t)
{
	struct t_aux *a = t_aux_open(t, t_env_source(), NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	T_REQUIRE(t, keel_malloc(&a->heap, 1000) != NULL);
	T_CHECK(t, keel_heap_destroy(&a->heap) == 0);
	T_CHECK(t, a->src.live_bytes == 0);
	T_REQUIRE(t, keel_heap_init(&a->heap, &a->config) == 0);
	void *p = keel_malloc(&a->heap, 1000);
	T_REQUIRE(t, p != NULL);
	struct keel_stats st;
	T_REQUIRE(t, keel_stats(&a->heap, &st) == 0);
	T_CHECK(t, st.live_blocks == 1 && st.alloc_count == 1);
	T_CHECK(t, keel_free(&a->heap, p) == 0);
	t_aux_close(t, a);
}

static void source_every_unmap_matches(struct t *t)
{
	/* many segments come and go; the counting source would flag a mismatch */
	for (int round = 0; round < 5; round++) {
		static void *p[24];
		for (unsigned i = 0; i < 24; i++) {
			p[i] = keel_malloc(t->heap, (i % 8 == 0) ? T_LARGE + i * 4096 : 100000);
			T_REQUIRE(t, p[i] != NULL);
		}
		for (unsigned i = 0; i < 24; i++)
			T_CHECK(t, keel_free(t->heap, p[i]) == 0);
		keel_trim(t->heap);
		T_CHECK(t, t->src->live_bytes == 0);
	}
	T_CHECK(t, t->src->bad_unmaps == 0);
	T_CHECK(t, t->src->maps == t->src->unmaps);
}

/* ---- big arenas: a source that decommits ---------------------------------- */

#define T_MIB     ((size_t)1 << 20)
#define T_BIG_SEG (32 * T_MIB) /* a big arena */

/* Whether this environment has room for a 32 MiB arena (a kernel booted with
 * 32 MiB has not). Where it has not, checks what keel does then: a big block
 * gets a mapping of its own, as without decommit, and returns 0. */
static int big_room(struct t *t)
{
	const struct keel_source *env = t_env_source();
	void *m = env->map(env->ctx, T_BIG_SEG, KEEL_SEGMENT_SIZE);
	if (m) {
		T_CHECK(t, env->unmap(env->ctx, m, T_BIG_SEG) == 0);
		return 1;
	}
	t_diag("  no room for a 32 MiB arena here: big blocks take mappings of their own");
	struct t_aux *a = t_aux_open_big(t, 64 * T_MIB);
	if (!a)
		return 0;
	unsigned char *p = keel_malloc(&a->heap, 2 * T_MIB);
	struct keel_stats st;
	T_CHECK(t, p != NULL && keel_stats(&a->heap, &st) == 0 && st.large_blocks == 1);
	if (p) {
		t_fill(p, 2 * T_MIB, 30);
		T_CHECK(t, t_verify(p, 2 * T_MIB, 30));
		T_CHECK(t, keel_free(&a->heap, p) == 0);
	}
	t_aux_close(t, a);
	return 0;
}

/* Blocks of 256 KiB to 8 MiB share one 32 MiB arena, none a mapping of its
 * own; freed neighbours coalesce and the hole serves a bigger request, and a
 * block grows in place into a freed neighbour. */
static void big_blocks_share_an_arena(struct t *t)
{
	if (!big_room(t))
		return;
	struct t_aux *a = t_aux_open_big(t, 64 * T_MIB);
	T_REQUIRE(t, a != NULL);
	struct keel_heap *h = &a->heap;
	static const size_t size[4] = { T_MIB, T_MIB + 4096, T_MIB - 100, 300 << 10 };
	unsigned char *p[4];
	for (unsigned i = 0; i < 4; i++) {
		p[i] = keel_malloc(h, size[i]);
		T_REQUIRE(t, p[i] != NULL);
		t_fill(p[i], size[i], 40 + i);
		/* on whole pages, as a mapping of its own would be */
		size_t u = keel_usable_size(h, p[i]);
		T_CHECK(t, u >= size[i] && u < size[i] + KEEL_PAGE_SIZE);
		T_CHECK(t, T_ALIGNED(p[i], KEEL_PAGE_SIZE) && (u + 16) % KEEL_PAGE_SIZE == 0);
	}
	T_CHECK(t, t_segment_bytes(&a->src) == T_BIG_SEG);
	struct keel_stats st;
	T_REQUIRE(t, keel_stats(h, &st) == 0);
	T_CHECK(t, st.large_blocks == 0 && st.segments == 1);
	/* carved in turn from the front of the arena: neighbours */
	T_CHECK(t, p[0] < p[1] && p[1] < p[2] && p[2] < p[3] && p[3] - p[0] < (long)(4 * T_MIB));
	T_CHECK(t, p[1] == p[0] + keel_usable_size(h, p[0]) + 16); /* no gap between */
	T_CHECK(t, keel_free(h, p[0]) == 0 && keel_free(h, p[1]) == 0);
	T_CHECK(t, keel_free(h, p[0]) == KEEL_EDOUBLE);
	T_CHECK(t, keel_free(h, p[1] + 16) != 0);
	/* the merged hole, not the arena's rest: a good fit takes the lowest
	 * list whose every block holds the request */
	unsigned char *q = keel_malloc(h, 3 * T_MIB / 2);
	T_CHECK(t, q == p[0]);
	T_REQUIRE(t, q != NULL);
	t_fill(q, 3 * T_MIB / 2, 50);
	/* p[2] grows into p[3]'s room once p[3] is freed */
	T_CHECK(t, keel_free(h, p[3]) == 0);
	unsigned char *r = keel_realloc(h, p[2], 3 * T_MIB);
	T_CHECK(t, r == p[2]);
	T_REQUIRE(t, r != NULL);
	T_CHECK(t, t_verify(r, size[2], 42) && t_verify(q, 3 * T_MIB / 2, 50));
	T_CHECK(t, t_segment_bytes(&a->src) == T_BIG_SEG);
	T_CHECK_HEAP(t, h);
	T_CHECK(t, keel_free(h, q) == 0 && keel_free(h, r) == 0);
	T_CHECK(t, a->src.decommits == 0); /* 64 MiB of free pages may stay */
	t_aux_close(t, a);
}

/* Past config.dirty_bytes of free pages, freed big blocks' pages go back
 * through decommit (the counting source then fills them with junk); the
 * blocks stay free and usable. keel_trim decommits the rest and gives the
 * arena back once it holds no block. */
static void big_pages_decommitted(struct t *t)
{
	if (!big_room(t))
		return;
	struct t_aux *a = t_aux_open_big(t, T_MIB);
	T_REQUIRE(t, a != NULL);
	struct keel_heap *h = &a->heap;
	unsigned char *p[6];
	for (unsigned i = 0; i < 6; i++) {
		p[i] = keel_malloc(h, 2 * T_MIB);
		T_REQUIRE(t, p[i] != NULL);
		t_fill(p[i], 2 * T_MIB, 60 + i);
	}
	T_CHECK(t, a->src.decommits == 0);
	T_CHECK(t, keel_free(h, p[1]) == 0); /* 2 MiB free: over the 1 MiB allowed */
	T_CHECK(t, a->src.decommits == 1 && a->src.decommit_bytes > T_MIB);
	T_CHECK(t, keel_free(h, p[3]) == 0);
	T_CHECK(t, a->src.decommits == 2);
	T_CHECK_HEAP(t, h);
	/* the decommitted room is handed out again */
	unsigned char *q = keel_malloc(h, 7 * T_MIB / 4);
	T_REQUIRE(t, q != NULL);
	T_CHECK(t, q == p[1] || q == p[3]);
	t_fill(q, 7 * T_MIB / 4, 70);
	for (unsigned i = 0; i < 6; i++)
		if (i != 1 && i != 3)
			T_CHECK(t, t_verify(p[i], 2 * T_MIB, 60 + i));
	T_CHECK(t, t_verify(q, 7 * T_MIB / 4, 70));
	T_CHECK(t, keel_free(h, q) == 0);
	for (unsigned i = 0; i < 6; i++)
		if (i != 1 && i != 3)
			T_CHECK(t, keel_free(h, p[i]) == 0);
	T_CHECK_HEAP(t, h);
	/* everything free: the arena went back as its last pages were decommitted */
	T_CHECK(t, t_segment_bytes(&a->src) == 0);
	t_aux_close(t, a);
}

/* With the free pages under the limit, keel_trim is what gives them back:
 * it reports the bytes decommitted and returns the empty arena. */
static void big_trim_decommits(struct t *t)
{
	if (!big_room(t))
		return;
	struct t_aux *a = t_aux_open_big(t, 64 * T_MIB);
	T_REQUIRE(t, a != NULL);
	struct keel_heap *h = &a->heap;
	/* a freed block between live ones serves the next request of its size,
	 * not the free rest of the arena */
	unsigned char *u = keel_malloc(h, 5 * T_MIB / 4 + 100), *v = keel_malloc(h, 300 << 10);
	T_REQUIRE(t, u != NULL && v != NULL);
	T_CHECK(t, keel_free(h, u) == 0);
	unsigned char *w = keel_malloc(h, 5 * T_MIB / 4 + 100);
	T_CHECK(t, w == u);
	T_CHECK(t, keel_free(h, w) == 0 && keel_free(h, v) == 0);
	/* and the closer of two fits on its list: x is exactly 1280 KiB, y a
	 * page more; y, freed last, heads the list */
	unsigned char *x = keel_malloc(h, (1280 << 10) - 16), *g1 = keel_malloc(h, 300 << 10);
	unsigned char *y = keel_malloc(h, (1284 << 10) - 16), *g2 = keel_malloc(h, 300 << 10);
	T_REQUIRE(t, x && g1 && y && g2);
	T_CHECK(t, keel_free(h, x) == 0 && keel_free(h, y) == 0);
	w = keel_malloc(h, (1280 << 10) - 16);
	T_CHECK(t, w == x);
	T_CHECK(t, keel_free(h, w) == 0 && keel_free(h, g1) == 0 && keel_free(h, g2) == 0);
	unsigned char *p = keel_malloc(h, 4 * T_MIB), *q = keel_malloc(h, 4 * T_MIB);
	T_REQUIRE(t, p != NULL && q != NULL);
	t_fill(p, 4 * T_MIB, 80);
	t_fill(q, 4 * T_MIB, 81);
	T_CHECK(t, keel_free(h, p) == 0);
	T_CHECK(t, a->src.decommits == 0);
	size_t given = keel_trim(h);
	T_CHECK(t, given >= 4 * T_MIB - 8192 && given <= 4 * T_MIB + 8192);
	T_CHECK(t, a->src.decommit_bytes >= 4 * T_MIB - 8192);
	T_CHECK(t, t_verify(q, 4 * T_MIB, 81));
	T_CHECK(t, t_segment_bytes(&a->src) == T_BIG_SEG);
	T_CHECK(t, keel_free(h, q) == 0);
	T_CHECK(t, t_segment_bytes(&a->src) == T_BIG_SEG); /* its pages are within the limit */
	T_CHECK(t, keel_trim(h) >= 4 * T_MIB);
	T_CHECK(t, t_segment_bytes(&a->src) == 0);
	t_aux_close(t, a);
}

/* ---- calls into the heap while it waits on its source --------------------
 * keel calls map, unmap and protect with its lock dropped, so other threads
 * may call into the heap meanwhile. These cases make such calls from the
 * counting source's hook, at exactly that point, the same on every run. */

struct race {
	struct keel_heap *heap;
	int armed;
	unsigned calls, failed_checks;
	size_t trimmed, mapped;
	unsigned ngot;
	void *got[64];
};
static struct race race;

/* A keel_trim while a malloc maps the registry nodes for the heap's first
 * segment, at the second (the leaf): the trim takes back the mid node the
 * leaf is for, which indexes nothing yet, and the malloc must not put the
 * leaf in it. */
static void race_trim_hook(struct t_source *ts, int call, size_t bytes)
{
	(void)ts;
	if (call == T_CALL_MAP && bytes < KEEL_SEGMENT_SIZE && race.armed && ++race.calls == 2) {
		race.armed = 0;
		race.trimmed = keel_trim(race.heap);
	}
}

static void trim_while_registry_grows(struct t *t)
{
	struct t_aux *a = t_aux_open(t, t_env_source(), NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	race = (struct race){ .heap = &a->heap, .armed = 1 };
	a->src.hook = race_trim_hook;
	void *p = keel_malloc(&a->heap, 100);
	a->src.hook = NULL;
	T_REQUIRE(t, p != NULL);
	T_CHECK(t, race.calls == 2 && race.trimmed > 0); /* the trim ran, and took a node */
	T_CHECK_HEAP(t, &a->heap);
	T_CHECK(t, keel_free(&a->heap, p) == 0);
	T_CHECK(t, keel_trim(&a->heap) > 0);
	T_CHECK(t, a->src.live_bytes == 0);
	t_aux_close(t, a);
}

/* Mallocs while a keel_trim gives back n parked arenas and then the
 * registry nodes left empty: one at every unmap, wherever trim makes them
 * (a trim that dropped its lock to unmap part way through its sweep of the
 * registry let a malloc enter a new segment in a leaf it had passed, then
 * gave back the mid node holding it). Every block the mallocs got stays
 * ours, and trim answers what the source got back. */
static void race_malloc_hook(struct t_source *ts, int call, size_t bytes)
{
	(void)ts;
	if (call == T_CALL_MAP)
		race.mapped += bytes; /* the mallocs' own maps included */
	if (call == T_CALL_UNMAP && race.armed && race.ngot < 64) {
		race.armed = 0; /* no malloc inside the malloc's own calls */
		void *p = keel_malloc(race.heap, 100);
		race.armed = 1;
		if (p)
			race.got[race.ngot++] = p;
	}
}

static void trim_while_others_allocate(struct t *t)
{
	static void *p[5 * 17];
	for (unsigned n = 1; n <= 17; n++) {
		struct t_aux *a = t_aux_open(t, t_env_source(), NULL, 0, n * KEEL_SEGMENT_SIZE);
		T_REQUIRE(t, a != NULL);
		for (unsigned i = 0; i < 5 * n; i++) /* five to an arena */
			T_REQUIRE(t, (p[i] = keel_malloc(&a->heap, 200000)) != NULL);
		for (unsigned i = 0; i < 5 * n; i++)
			T_CHECK(t, keel_free(&a->heap, p[i]) == 0);
		size_t before = a->src.live_bytes;
		race = (struct race){ .heap = &a->heap, .armed = 1 };
		a->src.hook = race_malloc_hook;
		size_t given = keel_trim(&a->heap);
		a->src.hook = NULL;
		T_CHECK(t, race.ngot > 0);
		if (given != before + race.mapped - a->src.live_bytes)
			t_diag("  %u arenas: keel_trim returned %zu; the source got back %zu", n,
			       given, before + race.mapped - a->src.live_bytes);
		T_CHECK(t, given == before + race.mapped - a->src.live_bytes);
		T_CHECK_HEAP(t, &a->heap);
		for (unsigned i = 0; i < race.ngot; i++)
			T_CHECK(t, keel_free(&a->heap, race.got[i]) == 0);
		keel_trim(&a->heap);
		T_CHECK(t, a->src.live_bytes == 0);
		t_aux_close(t, a);
	}
}

/* Two mallocs that both grow the heap: while the first maps its arena, the
 * second (in its map call) maps one and takes from it, and the first's
 * request is then met there too. The first's arena, one free block that no
 * block will ever leave, is parked as any arena left empty, so keel_trim
 * gives it back (it once stayed, held for good). */
static void race_grow_hook(struct t_source *ts, int call, size_t bytes)
{
	(void)ts;
	if (call == T_CALL_MAP && bytes == KEEL_SEGMENT_SIZE && race.armed) {
		race.armed = 0;
		race.got[race.ngot++] = keel_malloc(race.heap, 200000);
	}
}

static void grow_while_others_grow(struct t *t)
{
	struct t_aux *a = t_aux_open(t, t_env_source(), NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	race = (struct race){ .heap = &a->heap, .armed = 1 };
	a->src.hook = race_grow_hook;
	void *p = keel_malloc(&a->heap, 200000);
	a->src.hook = NULL;
	T_REQUIRE(t, p != NULL && race.ngot == 1 && race.got[0] != NULL);
	/* the case is the one it says: both blocks in the second's arena */
	T_CHECK(t, (uintptr_t)p / KEEL_SEGMENT_SIZE == (uintptr_t)race.got[0] / KEEL_SEGMENT_SIZE);
	T_CHECK_HEAP(t, &a->heap);
	T_CHECK(t, keel_free(&a->heap, p) == 0);
	T_CHECK(t, keel_free(&a->heap, race.got[0]) == 0);
	keel_trim(&a->heap);
	T_CHECK(t, t_segment_bytes(&a->src) == 0);
	t_aux_close(t, a);
}

/* keel_check at every call to the source, through a cache's traffic of
 * small, medium and large blocks that takes and gives back segments: at
 * each the heap is whole, whatever call was under way (a flush that sent
 * slots back to their runs once counted them only after its loop, which
 * an unmap part way through could show). */
static void race_check_all_hook(struct t_source *ts, int call, size_t bytes)
{
	(void)ts;
	(void)bytes;
	if (race.armed) {
		race.calls++;
		struct keel_fault f = { 0, 0 };
		if (keel_check(race.heap, &f) != 0 && race.failed_checks++ == 0)
			t_diag("  keel_check at source call %u (%d): %s", race.calls, call,
			       f.what ? f.what : "?");
	}
}

static void check_at_every_source_call(struct t *t)
{
	static struct keel_cache cache;
	static void *p[400];
	struct t_aux *a = t_aux_open(t, t_env_source(), NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	T_REQUIRE(t, keel_cache_init(&cache, &a->heap) == 0);
	race = (struct race){ .heap = &a->heap, .armed = 1 };
	a->src.hook = race_check_all_hook;
	for (unsigned round = 0; round < 3; round++) {
		for (unsigned i = 0; i < 400; i++) {
			size_t size = i % 50 == 0 ? 3 * KEEL_SEGMENT_SIZE / 2
			                          : 16 + (i * 2654435761u) % 24000;
			T_REQUIRE(t, (p[i] = keel_cache_malloc(&cache, size)) != NULL);
		}
		for (unsigned i = 0; i < 400; i++)
			T_CHECK(t, keel_cache_free(&cache, p[(i * 7 + round) % 400]) == 0);
		keel_cache_flush(&cache);
		keel_trim(&a->heap);
	}
	a->src.hook = NULL;
	T_CHECK(t, race.calls > 0);
	T_CHECK(t, race.failed_checks == 0);
	t_aux_close(t, a);
}

/* keel_check while checked mode's large block puts up its guard pages, and
 * while its pages are made inaccessible in the quarantine once freed: the
 * heap is whole at every point another thread can see it. */
static void race_check_hook(struct t_source *ts, int call, size_t bytes)
{
	(void)ts;
	(void)bytes;
	if (call == T_CALL_PROTECT && race.armed) {
		race.calls++;
		struct keel_fault f = { 0, 0 };
		if (keel_check(race.heap, &f) != 0 && race.failed_checks++ == 0)
			t_diag("  keel_check at protect call %u: %s", race.calls,
			       f.what ? f.what : "?");
	}
}

static void check_while_guards_go_up(struct t *t)
{
	struct t_aux *a = t_aux_open(t, t_env_source(), NULL, KEEL_HEAP_CHECKED, 0);
	T_REQUIRE(t, a != NULL);
	race = (struct race){ .heap = &a->heap, .armed = 1 };
	a->src.hook = race_check_hook;
	void *p = keel_malloc(&a->heap, T_LARGE);
	T_REQUIRE(t, p != NULL);
	T_CHECK(t, race.calls > 0);
	unsigned calls = race.calls;
	T_CHECK(t, keel_free(&a->heap, p) == 0);
	T_CHECK(t, race.calls > calls || !a->src.base->protect); /* no guards: poisoned */
	race.armed = 0;
	a->src.hook = NULL;
	T_CHECK(t, race.failed_checks == 0);
	t_aux_close(t, a);
}

const struct t_case source_cases[] = {
	T_CASE(source_fail_small),
	T_CASE(source_fail_mixed),
	T_CASE(source_fail_realloc),
	T_CASE(source_fail_aligned),
	T_CASE(source_refuses_everything),
	T_CASE(source_counts_match),
	T_CASE(source_large_own_mapping),
	T_CASE(source_every_unmap_matches),
	T_CASE(trim_returns_everything),
	T_CASE(trim_keeps_live),
	T_CASE(trim_fresh_heap),
	T_CASE(trim_while_registry_grows),
	T_CASE(trim_while_others_allocate),
	T_CASE(grow_while_others_grow),
	T_CASE(check_at_every_source_call),
	T_CASE(check_while_guards_go_up),
	T_CASE(retain_bounded),
	T_CASE(destroy_with_live_blocks),
	T_CASE(destroy_reports_unmap_error),
	T_CASE(heap_reinit_after_destroy),
	T_CASE(big_blocks_share_an_arena),
	T_CASE(big_pages_decommitted),
	T_CASE(big_trim_decommits),
	{ 0 },
};
