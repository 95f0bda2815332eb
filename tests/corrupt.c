/* tests/corrupt.c: damage the public API can cause, and the error paths it
 * reaches: calls on a heap never initialised, a free-list link or a cache's
 * slot written after its free, a medium header broken before an interior
 * free, a checked slot's tail overwritten, poison written in quarantine,
 * a source that misaligns, refuses or fails to unmap. Each case damages an
 * aux heap, sees the damage reported or refused, then restores what it
 * wrote or leaves the heap consistent (keel_check clean, every page back at
 * t_aux_close). */
#include "test.h"

/* Take the one report a case expects: err at p (p NULL: anywhere). */
static void take_report(struct t *t, struct t_aux *a, int err, const void *p)
{
	if (a->nreports != 1)
		t_diag("  %u reports, the first %d", a->nreports, a->reports[0].err);
	T_CHECK(t, a->nreports == 1);
	if (a->nreports >= 1) {
		T_CHECK(t, a->reports[0].err == err);
		if (p)
			T_CHECK(t, a->reports[0].p == p);
	}
	a->nreports = 0;
}

static int count_blocks(const struct keel_block *b, void *arg)
{
	(void)b;
	(*(unsigned *)arg)++;
	return 0;
}

/* Every call on a heap never initialised is refused and touches nothing. */
static void corrupt_uninit_heap(struct t *t)
{
	static struct keel_heap z;
	struct keel_fault f;
	struct keel_stats st;
	unsigned n = 0;
	t_memset(&z, 0, sizeof z);
	T_CHECK(t, keel_malloc(&z, 16) == NULL);
	T_CHECK(t, keel_aligned_alloc(&z, 64, 16) == NULL);
	T_CHECK(t, keel_calloc(&z, 2, 16) == NULL);
	T_CHECK(t, keel_realloc(&z, t_env_foreign_pointer(), 16) == NULL);
	T_CHECK(t, keel_free(&z, t_env_foreign_pointer()) == KEEL_EINVAL);
	T_CHECK(t, keel_usable_size(&z, t_env_foreign_pointer()) == 0);
	T_CHECK(t, keel_stats(&z, &st) == KEEL_EINVAL);
	T_CHECK(t, keel_trim(&z) == 0);
	T_CHECK(t, keel_heap_destroy(&z) == KEEL_EINVAL);
	T_CHECK(t, keel_walk(&z, count_blocks, &n) == KEEL_EINVAL);
	T_CHECK(t, keel_walk(t->heap, NULL, &n) == KEEL_EINVAL);
	f.what = NULL;
	T_CHECK(t, keel_check(&z, &f) == KEEL_ECORRUPT);
	T_CHECK(t, f.what != NULL && f.what[0] == 'H' && f.what[1] == '1');
	T_CHECK(t, keel_check(NULL, NULL) == KEEL_ECORRUPT);
	T_CHECK(t, n == 0 && t_all_bytes(&z, sizeof z, 0));
	const char *s = keel_strerror(KEEL_EUSEAFTER);
	T_CHECK(t, s != NULL && !t_streq(s, keel_strerror(12345)));
}

struct walk_seen {
	unsigned small_live, small_free, medium_live, stop_at;
	size_t small_size, medium_size;
};

static int walk_note(const struct keel_block *b, void *arg)
{
	struct walk_seen *w = arg;
	if (b->kind == KEEL_KIND_SMALL && !b->is_free) {
		w->small_live++;
		w->small_size = b->size;
	}
	if (b->kind == KEEL_KIND_SMALL && b->is_free)
		w->small_free++;
	if (b->kind == KEEL_KIND_MEDIUM && !b->is_free) {
		w->medium_live++;
		w->medium_size = b->size;
	}
	return w->stop_at && w->small_live + w->small_free == w->stop_at ? 7 : 0;
}

/* keel_walk in checked mode reports the sizes asked, a quarantined slot as
 * free, and stops where its visitor says. */
static void corrupt_walk_checked(struct t *t)
{
	struct t_aux *a = t_aux_open(t, t_env_source(), NULL, KEEL_HEAP_CHECKED, 0);
	T_REQUIRE(t, a != NULL);
	void *s = keel_malloc(&a->heap, 40), *q = keel_malloc(&a->heap, 40);
	void *m = keel_malloc(&a->heap, T_MEDIUM + 3);
	T_REQUIRE(t, s && q && m);
	T_CHECK(t, keel_free(&a->heap, q) == 0);
	struct walk_seen w = { 0, 0, 0, 0, 0, 0 };
	T_CHECK(t, keel_walk(&a->heap, walk_note, &w) == 0);
	T_CHECK(t, w.small_live == 1 && w.small_size == 40 && w.small_free == 1);
	T_CHECK(t, w.medium_live == 1 && w.medium_size == T_MEDIUM + 3);
	struct walk_seen stop = { 0, 0, 0, 1, 0, 0 };
	T_CHECK(t, keel_walk(&a->heap, walk_note, &stop) == 7);
	T_CHECK(t, stop.small_live + stop.small_free == 1);
	T_CHECK(t, keel_free(&a->heap, s) == 0);
	T_CHECK(t, keel_free(&a->heap, m) == 0);
	t_aux_close(t, a);
}

/* A free slot's link overwritten: the next malloc reports it, hands out
 * that slot and keeps the rest of the list out of use; all stays counted. */
static void corrupt_small_link(struct t *t)
{
	struct t_aux *a = t_aux_open(t, t_env_source(), NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	void *p[8];
	for (unsigned i = 0; i < 8; i++)
		T_REQUIRE(t, (p[i] = keel_malloc(&a->heap, T_SMALL)) != NULL);
	for (unsigned i = 2; i < 8; i += 2)
		T_CHECK(t, keel_free(&a->heap, p[i]) == 0);
	*(uintptr_t *)p[6] = (uintptr_t)0x5a5a5a5a5a5a5a5aull; /* the list's head */
	void *q = keel_malloc(&a->heap, T_SMALL);
	T_CHECK(t, q == p[6]);
	take_report(t, a, KEEL_ECORRUPT, p[6]);
	T_CHECK_HEAP(t, &a->heap);
	struct keel_stats st;
	T_CHECK(t, keel_stats(&a->heap, &st) == 0 && st.live_blocks == 8); /* 5 + q + 2 lost */
	void *r = keel_malloc(&a->heap, T_SMALL);
	T_CHECK(t, r != NULL && r != p[2] && r != p[4]);
	T_CHECK(t, keel_free(&a->heap, r) == 0);
	for (unsigned i = 0; i < 8; i++) /* the lost slots count as live: they free */
		T_CHECK(t, keel_free(&a->heap, p[i]) == 0);
	T_CHECK(t, keel_stats(&a->heap, &st) == 0 && st.live_blocks == 0);
	t_aux_close(t, a);
}

/* Checked mode: a slot written once it left the quarantine is caught when
 * the free list hands it out, retired, and another slot is given. */
static void corrupt_checked_free_slot(struct t *t)
{
	struct t_aux *a = t_aux_open(t, t_env_source(), NULL, KEEL_HEAP_CHECKED, 0);
	T_REQUIRE(t, a != NULL);
	unsigned char *keep = keel_malloc(&a->heap, 40), *p = keel_malloc(&a->heap, 40);
	T_REQUIRE(t, keep && p);
	T_CHECK(t, keel_free(&a->heap, p) == 0);
	keel_trim(&a->heap); /* the quarantine empties: p is on its run's free list */
	T_CHECK(t, a->nreports == 0);
	p[20] ^= 0x11;
	unsigned char *q = keel_malloc(&a->heap, 40);
	T_CHECK(t, q != NULL && q != p);
	take_report(t, a, KEEL_EUSEAFTER, p);
	T_CHECK_HEAP(t, &a->heap);
	T_CHECK(t, keel_free(&a->heap, q) == 0);
	T_CHECK(t, keel_free(&a->heap, keep) == 0);
	t_aux_close(t, a);
}

/* Checked mode with a source that cannot protect: a freed large block is
 * poisoned instead of guarded, and a write to it is reported as it leaves
 * the quarantine. */
static void corrupt_checked_large_poison(struct t *t)
{
	static struct keel_source noprot;
	noprot = *t_env_source();
	noprot.protect = NULL;
	struct t_aux *a = t_aux_open(t, &noprot, NULL, KEEL_HEAP_CHECKED, 0);
	T_REQUIRE(t, a != NULL);
	unsigned char *q = keel_malloc(&a->heap, T_LARGE);
	T_REQUIRE(t, q != NULL);
	T_CHECK(t, keel_free(&a->heap, q) == 0);
	T_CHECK_HEAP(t, &a->heap);
	q[100] ^= 0x11;
	keel_trim(&a->heap);
	take_report(t, a, KEEL_EUSEAFTER, q);
	T_CHECK_HEAP(t, &a->heap);
	t_aux_close(t, a);
}

/* A slot sitting free in a cache, written: the next cache malloc of its
 * class reports it and drops the bin; so does a flush. Dropped slots stay
 * counted as live, never handed out again. */
static void corrupt_cache_slot(struct t *t)
{
	static struct keel_cache c;
	struct t_aux *a = t_aux_open(t, t_env_source(), NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	T_REQUIRE(t, keel_cache_init(&c, &a->heap) == 0);
	void *p = keel_cache_malloc(&c, T_SMALL), *q = keel_cache_malloc(&c, T_SMALL);
	T_REQUIRE(t, p && q);
	T_CHECK(t, keel_cache_free(&c, q) == 0);
	T_CHECK(t, keel_cache_free(&c, p) == 0); /* the bin's top */
	((uintptr_t *)p)[1] = 0;
	void *r = keel_cache_malloc(&c, T_SMALL);
	T_CHECK(t, r != NULL && r != p && r != q);
	take_report(t, a, KEEL_ECORRUPT, p);
	T_CHECK_HEAP(t, &a->heap);
	T_CHECK(t, keel_cache_free(&c, r) == 0);

	void *s[3];
	for (unsigned i = 0; i < 3; i++)
		T_REQUIRE(t, (s[i] = keel_cache_malloc(&c, 2 * T_SMALL)) != NULL);
	for (unsigned i = 0; i < 3; i++)
		T_CHECK(t, keel_cache_free(&c, s[i]) == 0);
	((uintptr_t *)s[2])[1] ^= 1;
	keel_cache_flush(&c);
	take_report(t, a, KEEL_ECORRUPT, s[2]);
	T_CHECK_HEAP(t, &a->heap);
	t_aux_close(t, a);
}

/* A medium header zeroed, then a free inside the block after it: the walk
 * that classifies the pointer meets the broken size and says corrupt. */
static void corrupt_medium_header(struct t *t)
{
	struct t_aux *a = t_aux_open(t, t_env_source(), NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	unsigned char *m0 = keel_malloc(&a->heap, T_MEDIUM), *m1 = keel_malloc(&a->heap, T_MEDIUM);
	T_REQUIRE(t, m0 && m1);
	size_t *head = (size_t *)(void *)m1 - 1, saved = *head;
	*head = 0;
	T_CHECK(t, keel_check(&a->heap, NULL) == KEEL_ECORRUPT);
	T_CHECK(t, keel_free(&a->heap, m1 + 16) == KEEL_ECORRUPT);
	*head = saved;
	T_CHECK_HEAP(t, &a->heap);
	T_CHECK(t, keel_free(&a->heap, m1 + 16) == KEEL_EINTERIOR);
	T_CHECK(t, keel_free(&a->heap, m0) == 0);
	T_CHECK(t, keel_free(&a->heap, m1) == 0);
	t_aux_close(t, a);
}

/* Checked mode: overflows that reach past the canary, and a header word
 * written before a block whose neighbour is free or live. */
static void corrupt_checked_overflow(struct t *t)
{
	unsigned char saved[64];
	struct t_aux *a = t_aux_open(t, t_env_source(), NULL, KEEL_HEAP_CHECKED, 0);
	T_REQUIRE(t, a != NULL);
	unsigned char *p = keel_malloc(&a->heap, 40);
	T_REQUIRE(t, p != NULL);
	/* the slot's whole tail: canary, spare bytes and whatever follows */
	for (unsigned i = 40; i < 64; i++) {
		saved[i] = p[i];
		p[i] = 0xee;
	}
	T_CHECK(t, keel_free(&a->heap, p) == KEEL_EOVERFLOW);
	T_CHECK(t, keel_realloc(&a->heap, p, 100) == NULL);
	for (unsigned i = 40; i < 64; i++)
		p[i] = saved[i];
	p[40] ^= 0x5a; /* the canary alone: realloc refuses and reports it */
	T_CHECK(t, keel_realloc(&a->heap, p, 100) == NULL);
	take_report(t, a, KEEL_EOVERFLOW, p);
	p[40] ^= 0x5a;
	T_CHECK_HEAP(t, &a->heap);
	T_CHECK(t, keel_free(&a->heap, p) == 0);

	unsigned char *m0 = keel_malloc(&a->heap, T_MEDIUM), *m1 = keel_malloc(&a->heap, T_MEDIUM);
	unsigned char *m2 = keel_malloc(&a->heap, T_MEDIUM);
	T_REQUIRE(t, m0 && m1 && m2);
	size_t *prev = (size_t *)(void *)m1 - 2, was = *prev; /* m1's word before: a canary */
	*prev ^= 1;
	T_CHECK(t, keel_free(&a->heap, m1) == KEEL_ECORRUPT);
	*prev = was;
	T_CHECK(t, keel_free(&a->heap, m0) == 0);
	keel_trim(&a->heap); /* m0 leaves the quarantine: m1's neighbour is free */
	static const size_t bad[] = { 8, 32, 1u << 30 };
	for (unsigned i = 0; i < 3; i++) {
		was = *prev;
		*prev = bad[i];
		T_CHECK(t, keel_free(&a->heap, m1) == KEEL_ECORRUPT);
		*prev = was;
	}
	T_CHECK_HEAP(t, &a->heap);
	T_CHECK(t, keel_free(&a->heap, m1) == 0);
	T_CHECK(t, keel_free(&a->heap, m2) == 0);
	T_CHECK(t, a->nreports == 0);
	t_aux_close(t, a);
}

/* ---- sources that misbehave ------------------------------------------------ */

/* A source that returns its mappings a page past the alignment asked, and
 * takes them back where it really mapped them. */
static const struct keel_source *skew_base;
static void *skew_map(void *ctx, size_t bytes, size_t align)
{
	(void)ctx;
	char *m = skew_base->map(skew_base->ctx, bytes + KEEL_PAGE_SIZE, align);
	return m ? m + KEEL_PAGE_SIZE : NULL;
}
static int skew_unmap(void *ctx, void *p, size_t bytes)
{
	(void)ctx;
	return skew_base->unmap(skew_base->ctx, (char *)p - KEEL_PAGE_SIZE,
	                        bytes + KEEL_PAGE_SIZE);
}

/* A mapping not aligned as asked is given back and counted as a failure. */
static void corrupt_source_misaligned(struct t *t)
{
	static struct keel_source skew;
	skew_base = t_env_source();
	skew.map = skew_map;
	skew.unmap = skew_unmap;
	skew.protect = NULL;
	skew.ctx = NULL;
	skew.zeroed = skew_base->zeroed;
	struct t_aux *a = t_aux_open(t, &skew, NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	T_CHECK(t, keel_malloc(&a->heap, T_MEDIUM) == NULL);
	struct keel_stats st;
	T_CHECK(t, keel_stats(&a->heap, &st) == 0 && st.source_failures >= 1);
	T_CHECK(t, st.segments == 0 && st.failed_allocs == 1);
	t_aux_close(t, a);
}

/* Unmaps that fail are counted, and the heap goes on. */
static void corrupt_source_unmap_fails(struct t *t)
{
	struct t_aux *a = t_aux_open(t, t_env_source(), NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	void *p = keel_malloc(&a->heap, T_LARGE);
	T_REQUIRE(t, p != NULL);
	T_CHECK(t, keel_free(&a->heap, p) == 0);
	struct keel_stats st;
	T_CHECK(t, keel_stats(&a->heap, &st) == 0 && st.source_failures == 0);
	a->src.unmap_error = -5;
	T_CHECK(t, keel_trim(&a->heap) > 0);
	a->src.unmap_error = 0;
	T_CHECK(t, keel_stats(&a->heap, &st) == 0 && st.source_failures >= 1);
	T_CHECK_HEAP(t, &a->heap);
	t_aux_close(t, a);
}

/* A refused map first gives back the parked arena, then asks again. */
static void corrupt_source_refuses_once(struct t *t)
{
	struct t_aux *a = t_aux_open(t, t_env_source(), NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	void *m = keel_malloc(&a->heap, T_MEDIUM);
	T_REQUIRE(t, m != NULL);
	T_CHECK(t, keel_free(&a->heap, m) == 0); /* the arena is parked */
	a->src.fail_only = (long)a->src.map_calls;
	void *l = keel_malloc(&a->heap, T_LARGE);
	T_CHECK(t, l != NULL);
	struct keel_stats st;
	T_CHECK(t, keel_stats(&a->heap, &st) == 0 && st.segments == 1 && st.large_blocks == 1);
	T_CHECK(t, keel_free(&a->heap, l) == 0);
	t_aux_close(t, a);
}

/* More freed large blocks than the large cache keeps: the oldest go back. */
static void corrupt_large_cache_bound(struct t *t)
{
	struct t_aux *a = t_aux_open(t, t_env_source(), NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	void *p[20];
	size_t size = KEEL_SEGMENT_SIZE / 4 + 4096;
	for (unsigned i = 0; i < 20; i++)
		T_REQUIRE(t, (p[i] = keel_malloc(&a->heap, size)) != NULL);
	for (unsigned i = 0; i < 20; i++)
		T_CHECK(t, keel_free(&a->heap, p[i]) == 0);
	struct keel_stats st;
	T_CHECK(t, keel_stats(&a->heap, &st) == 0 && st.segments <= 16);
	T_CHECK_HEAP(t, &a->heap);
	t_aux_close(t, a);
}

/* A region may not overlap a segment the heap has from its source. */
static void corrupt_region_over_segment(struct t *t)
{
	void *m = keel_malloc(t->heap, T_MEDIUM);
	T_REQUIRE(t, m != NULL);
	uintptr_t seg = (uintptr_t)m & ~(uintptr_t)(KEEL_SEGMENT_SIZE - 1);
	T_CHECK(t, keel_heap_add_region(t->heap, (void *)(seg + 65536), 65536) == KEEL_EINVAL);
	T_CHECK_HEAP(t, t->heap);
	T_CHECK(t, keel_free(t->heap, m) == 0);
}

const struct t_case corrupt_cases[] = {
	T_CASE(corrupt_uninit_heap),
	T_CASE(corrupt_walk_checked),
	T_CASE(corrupt_small_link),
	T_CASE(corrupt_checked_free_slot),
	T_CASE(corrupt_checked_large_poison),
	T_CASE(corrupt_cache_slot),
	T_CASE(corrupt_medium_header),
	T_CASE(corrupt_checked_overflow),
	T_CASE(corrupt_source_misaligned),
	T_CASE(corrupt_source_unmap_fails),
	T_CASE(corrupt_source_refuses_once),
	T_CASE(corrupt_large_cache_bound),
	T_CASE(corrupt_region_over_segment),
	{ 0 },
};
