/* tests/heap.c: keel_heap_init refuses bad configurations and calls nothing;
 * custom lock hooks are called in balanced, properly nested pairs, never
 * around a page-source call; a KEEL_HEAP_NOLOCK heap works. */
#include "test.h"

static struct keel_heap scratch;

static void *dummy_map(void *ctx, size_t bytes, size_t align)
{
	(void)ctx;
	(void)bytes;
	(void)align;
	return NULL;
}

static int dummy_unmap(void *ctx, void *p, size_t bytes)
{
	(void)ctx;
	(void)p;
	(void)bytes;
	return 0;
}

static uintptr_t dummy_lock(void *ctx)
{
	(void)ctx;
	return 0;
}

static void dummy_unlock(void *ctx, uintptr_t token)
{
	(void)ctx;
	(void)token;
}

static void init_null_heap(struct t *t)
{
	static struct keel_config cfg;
	cfg.source = t_env_source();
	cfg.lock = NULL;
	cfg.flags = 0;
	cfg.retain_bytes = 0;
	T_CHECK(t, keel_heap_init(NULL, &cfg) == KEEL_EINVAL);
}

static void init_null_config(struct t *t)
{
	T_CHECK(t, keel_heap_init(&scratch, NULL) == KEEL_EINVAL);
}

static void init_source_without_map(struct t *t)
{
	static struct keel_source src;
	static struct keel_config cfg;
	src.map = NULL;
	src.unmap = dummy_unmap;
	src.protect = NULL;
	src.ctx = NULL;
	src.zeroed = 1;
	cfg.source = &src;
	cfg.lock = NULL;
	cfg.flags = 0;
	cfg.retain_bytes = 0;
	T_CHECK(t, keel_heap_init(&scratch, &cfg) == KEEL_EINVAL);
	src.map = dummy_map;
	src.unmap = NULL;
	T_CHECK(t, keel_heap_init(&scratch, &cfg) == KEEL_EINVAL);
	src.map = NULL;
	T_CHECK(t, keel_heap_init(&scratch, &cfg) == KEEL_EINVAL);
	/* both hooks present: accepted, and a refusing source only yields NULL */
	src.map = dummy_map;
	src.unmap = dummy_unmap;
	T_REQUIRE(t, keel_heap_init(&scratch, &cfg) == 0);
	T_CHECK(t, keel_malloc(&scratch, 10) == NULL);
	T_CHECK(t, keel_check(&scratch, NULL) == 0);
	T_CHECK(t, keel_heap_destroy(&scratch) == 0);
}

static void init_lock_one_hook(struct t *t)
{
	static struct keel_lock lk;
	static struct keel_config cfg;
	cfg.source = t_env_source();
	cfg.lock = &lk;
	cfg.flags = 0;
	cfg.retain_bytes = 0;
	lk.lock = dummy_lock;
	lk.unlock = NULL;
	lk.ctx = NULL;
	T_CHECK(t, keel_heap_init(&scratch, &cfg) == KEEL_EINVAL);
	lk.lock = NULL;
	lk.unlock = dummy_unlock;
	T_CHECK(t, keel_heap_init(&scratch, &cfg) == KEEL_EINVAL);
}

static void init_calls_nothing(struct t *t)
{
	/* The runner's heap was initialised over the counting source: nothing
	 * was mapped, and a fresh heap reports empty stats. */
	T_CHECK(t, t->src->map_calls == 0 && t->src->unmaps == 0);
	struct keel_stats st;
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.live_blocks == 0 && st.alloc_count == 0 && st.free_count == 0);
	T_CHECK(t, st.in_use_bytes == 0 && st.source_bytes == 0 && st.region_bytes == 0);
	T_CHECK(t, st.failed_allocs == 0 && st.source_maps == 0 && st.segments == 0);
	T_CHECK_HEAP(t, t->heap);
	T_CHECK(t, t->src->map_calls == 0);
}

/* ---- lock hooks --------------------------------------------------------- */

#define LOCK_MAX_DEPTH 8
struct lock_rec {
	unsigned locks, unlocks, depth, max_depth, bad_tokens, underflows;
	uintptr_t next_token;
	uintptr_t stack[LOCK_MAX_DEPTH];
	unsigned maps_locked, unmaps_locked; /* page-source calls made with the lock held */
};

static struct lock_rec lrec;

static uintptr_t rec_lock(void *ctx)
{
	struct lock_rec *r = ctx;
	uintptr_t tok = 0x1000 + r->next_token++;
	r->locks++;
	if (r->depth < LOCK_MAX_DEPTH)
		r->stack[r->depth] = tok;
	r->depth++;
	if (r->depth > r->max_depth)
		r->max_depth = r->depth;
	return tok;
}

static void rec_unlock(void *ctx, uintptr_t token)
{
	struct lock_rec *r = ctx;
	r->unlocks++;
	if (r->depth == 0) {
		r->underflows++;
		return;
	}
	r->depth--;
	if (r->depth < LOCK_MAX_DEPTH && r->stack[r->depth] != token)
		r->bad_tokens++;
}

static const struct keel_lock rec_hooks = { rec_lock, rec_unlock, &lrec };

/* A source wrapper that notes whether the heap lock is held when called. */
static const struct keel_source *spy_inner;

static void *spy_map(void *ctx, size_t bytes, size_t align)
{
	(void)ctx;
	if (lrec.depth)
		lrec.maps_locked++;
	return spy_inner->map(spy_inner->ctx, bytes, align);
}

static int spy_unmap(void *ctx, void *p, size_t bytes)
{
	(void)ctx;
	if (lrec.depth)
		lrec.unmaps_locked++;
	return spy_inner->unmap(spy_inner->ctx, p, bytes);
}

static struct keel_source spy;

static void lrec_reset(void)
{
	lrec.locks = lrec.unlocks = lrec.depth = lrec.max_depth = 0;
	lrec.bad_tokens = lrec.underflows = 0;
	lrec.next_token = 0;
	lrec.maps_locked = lrec.unmaps_locked = 0;
}

static void ops_on(struct t *t, struct keel_heap *h)
{
	static void *p[40];
	for (unsigned i = 0; i < 40; i++) {
		size_t size = (i % 10 == 9) ? T_LARGE : 10 + i * 500;
		p[i] = keel_malloc(h, size);
		T_CHECK(t, p[i] != NULL);
	}
	p[0] = keel_realloc(h, p[0], 50000);
	T_CHECK(t, p[0] != NULL);
	void *c = keel_calloc(h, 10, 10);
	void *c2 = keel_calloc(h, 10, 10); /* keeps c's run in use */
	void *a = keel_aligned_alloc(h, 4096, 10);
	T_CHECK(t, c != NULL && c2 != NULL && a != NULL);
	T_CHECK(t, keel_usable_size(h, c) >= 100);
	T_CHECK(t, keel_free(h, c) == 0);
	T_CHECK(t, keel_free(h, a) == 0);
	T_CHECK(t, keel_free(h, c) == KEEL_EDOUBLE); /* error paths unlock too */
	T_CHECK(t, keel_free(h, c2) == 0);
	for (unsigned i = 0; i < 40; i++)
		T_CHECK(t, keel_free(h, p[i]) == 0);
	struct keel_stats st;
	T_CHECK(t, keel_stats(h, &st) == 0);
	T_CHECK(t, st.live_blocks == 0);
	keel_trim(h);
	T_CHECK_HEAP(t, h);
}

static void lock_hooks_balanced(struct t *t)
{
	lrec_reset();
	struct t_aux *a = t_aux_open(t, t_env_source(), &rec_hooks, 0, 0);
	T_REQUIRE(t, a != NULL);
	T_CHECK(t, lrec.locks == 0); /* init calls nothing */
	ops_on(t, &a->heap);
	T_CHECK(t, lrec.locks > 0);
	T_CHECK(t, lrec.locks == lrec.unlocks);
	T_CHECK(t, lrec.depth == 0);
	T_CHECK(t, lrec.bad_tokens == 0);
	T_CHECK(t, lrec.underflows == 0);
	T_CHECK(t, lrec.max_depth >= 1 && lrec.max_depth <= LOCK_MAX_DEPTH);
	t_aux_close(t, a);
	T_CHECK(t, lrec.depth == 0 && lrec.locks == lrec.unlocks);
}

static void lock_not_held_over_source(struct t *t)
{
	lrec_reset();
	spy_inner = t_env_source();
	spy.map = spy_map;
	spy.unmap = spy_unmap;
	spy.protect = spy_inner->protect;
	spy.ctx = NULL;
	spy.zeroed = spy_inner->zeroed;
	struct t_aux *a = t_aux_open(t, &spy, &rec_hooks, 0, 0);
	T_REQUIRE(t, a != NULL);
	ops_on(t, &a->heap);
	T_CHECK(t, a->src.maps > 0);
	if (lrec.maps_locked || lrec.unmaps_locked)
		t_diag("  with the heap lock held: %u maps, %u unmaps", lrec.maps_locked,
		       lrec.unmaps_locked);
	T_CHECK(t, lrec.maps_locked == 0);
	T_CHECK(t, lrec.unmaps_locked == 0);
	t_aux_close(t, a);
	T_CHECK(t, lrec.maps_locked == 0 && lrec.unmaps_locked == 0); /* destroy too */
	T_CHECK(t, lrec.depth == 0);
}

static unsigned walk_depth_seen;

static int walk_depth(const struct keel_block *b, void *arg)
{
	(void)b;
	(void)arg;
	walk_depth_seen = lrec.depth;
	return 0;
}

static void lock_held_during_walk(struct t *t)
{
	lrec_reset();
	struct t_aux *a = t_aux_open(t, t_env_source(), &rec_hooks, 0, 0);
	T_REQUIRE(t, a != NULL);
	void *p = keel_malloc(&a->heap, 100);
	T_REQUIRE(t, p != NULL);
	walk_depth_seen = 99;
	T_CHECK(t, keel_walk(&a->heap, walk_depth, NULL) == 0);
	T_CHECK(t, walk_depth_seen >= 1 && walk_depth_seen != 99);
	T_CHECK(t, lrec.depth == 0);
	T_CHECK(t, keel_free(&a->heap, p) == 0);
	t_aux_close(t, a);
}

static void nolock_heap(struct t *t)
{
	struct t_aux *a = t_aux_open(t, t_env_source(), NULL, KEEL_HEAP_NOLOCK, 0);
	T_REQUIRE(t, a != NULL);
	ops_on(t, &a->heap);
	t_aux_close(t, a);
}

static void nolock_ignores_hooks(struct t *t)
{
	/* keel.h does not say whether a NOLOCK heap still calls given hooks;
	 * either way the heap works and any calls balance. */
	lrec_reset();
	struct t_aux *a = t_aux_open(t, t_env_source(), &rec_hooks, KEEL_HEAP_NOLOCK, 0);
	T_REQUIRE(t, a != NULL);
	ops_on(t, &a->heap);
	T_CHECK(t, lrec.locks == lrec.unlocks);
	T_CHECK(t, lrec.depth == 0);
	t_aux_close(t, a);
}

const struct t_case heap_cases[] = {
	T_CASE(init_null_heap),
	T_CASE(init_null_config),
	T_CASE(init_source_without_map),
	T_CASE(init_lock_one_hook),
	T_CASE(init_calls_nothing),
	T_CASE(lock_hooks_balanced),
	T_CASE(lock_not_held_over_source),
	T_CASE(lock_held_during_walk),
	T_CASE(nolock_heap),
	T_CASE(nolock_ignores_hooks),
	{ 0 },
};
