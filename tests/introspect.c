/* tests/introspect.c: the read-only API. keel_stats counters move as blocks
 * come and go, keel_walk reports every block exactly once and stops when
 * asked, keel_check passes a healthy heap, keel_strerror names every code. */
#include "test.h"

static struct keel_stats st;

static void stats_fresh(struct t *t)
{
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.requested_bytes == 0 && st.in_use_bytes == 0 && st.peak_in_use_bytes == 0);
	T_CHECK(t, st.source_bytes == 0 && st.peak_source_bytes == 0 && st.free_bytes == 0);
	T_CHECK(t, st.live_blocks == 0 && st.alloc_count == 0 && st.free_count == 0);
	T_CHECK(t, st.large_blocks == 0 && st.segments == 0);
	unsigned nonzero = 0;
	for (unsigned i = 0; i < KEEL_NCLASSES; i++) {
		T_CHECK(t, st.class_count[i] == 0);
		nonzero += st.class_size[i] != 0;
	}
	T_CHECK(t, nonzero >= 4);
}

static void stats_null_out(struct t *t)
{
	/* keel.h: "Returns 0 or KEEL_EINVAL"; a NULL out is the one bad argument */
	T_CHECK(t, keel_stats(t->heap, NULL) == KEEL_EINVAL);
}

static void stats_alloc_free_counts(struct t *t)
{
	static void *p[50];
	size_t usable = 0, peak;
	for (unsigned i = 0; i < 50; i++) {
		p[i] = keel_malloc(t->heap, 1 + i * 97);
		T_REQUIRE(t, p[i] != NULL);
		usable += keel_usable_size(t->heap, p[i]);
	}
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.alloc_count == 50);
	T_CHECK(t, st.free_count == 0);
	T_CHECK(t, st.live_blocks == 50);
	T_CHECK(t, st.in_use_bytes == usable);
	T_CHECK(t, st.peak_in_use_bytes == usable);
	T_CHECK(t, st.requested_bytes <= st.in_use_bytes);
	T_CHECK(t, st.requested_bytes >= 50 + 97 * (49 * 50 / 2));
	peak = st.peak_in_use_bytes;
	for (unsigned i = 0; i < 50; i += 2) {
		usable -= keel_usable_size(t->heap, p[i]);
		T_CHECK(t, keel_free(t->heap, p[i]) == 0);
	}
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.alloc_count == 50);
	T_CHECK(t, st.free_count == 25);
	T_CHECK(t, st.live_blocks == 25);
	T_CHECK(t, st.in_use_bytes == usable);
	T_CHECK(t, st.peak_in_use_bytes == peak);
	for (unsigned i = 1; i < 50; i += 2)
		T_CHECK(t, keel_free(t->heap, p[i]) == 0);
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.live_blocks == 0 && st.in_use_bytes == 0 && st.requested_bytes == 0);
	T_CHECK(t, st.free_count == 50 && st.peak_in_use_bytes == peak);
}

static void stats_requested_bytes(struct t *t)
{
	void *m = keel_malloc(t->heap, T_MEDIUM + 3);
	T_REQUIRE(t, m != NULL);
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.requested_bytes == T_MEDIUM + 3); /* a medium block records its ask */
	void *l = keel_malloc(t->heap, T_LARGE + 5);
	T_REQUIRE(t, l != NULL);
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.requested_bytes == T_MEDIUM + 3 + T_LARGE + 5);
	void *s = keel_malloc(t->heap, 33);
	T_REQUIRE(t, s != NULL);
	size_t su = keel_usable_size(t->heap, s);
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.requested_bytes == T_MEDIUM + 3 + T_LARGE + 5 + su); /* its class size */
	T_CHECK(t, keel_free(t->heap, m) == 0);
	T_CHECK(t, keel_free(t->heap, l) == 0);
	T_CHECK(t, keel_free(t->heap, s) == 0);
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.requested_bytes == 0);
}

static void stats_class_count(struct t *t)
{
	static void *p[KEEL_NCLASSES][3];
	static size_t size[KEEL_NCLASSES];
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	for (unsigned i = 0; i < KEEL_NCLASSES; i++)
		size[i] = st.class_size[i];
	for (unsigned i = 0; i < KEEL_NCLASSES; i++) {
		if (!size[i])
			continue;
		for (unsigned k = 0; k <= i % 3; k++) {
			/* past KEEL_SMALL_MAX a class serves aligned requests only */
			p[i][k] = size[i] <= KEEL_SMALL_MAX
			                  ? keel_malloc(t->heap, size[i])
			                  : keel_aligned_alloc(t->heap, 256, size[i]);
			T_REQUIRE(t, p[i][k] != NULL);
			T_CHECK(t, keel_usable_size(t->heap, p[i][k]) >= size[i]);
		}
	}
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	for (unsigned i = 0; i < KEEL_NCLASSES; i++) {
		if (!size[i])
			continue;
		if (st.class_count[i] != i % 3 + 1)
			t_diag("  class %u (size %zu): count %zu, want %u", i, size[i],
			       st.class_count[i], i % 3 + 1);
		T_CHECK(t, st.class_count[i] == i % 3 + 1);
		T_CHECK(t, st.class_size[i] == size[i]);
	}
	for (unsigned i = 0; i < KEEL_NCLASSES; i++)
		if (size[i])
			for (unsigned k = 0; k <= i % 3; k++)
				T_CHECK(t, keel_free(t->heap, p[i][k]) == 0);
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	for (unsigned i = 0; i < KEEL_NCLASSES; i++)
		T_CHECK(t, st.class_count[i] == 0);
}

static void stats_large_and_source(struct t *t)
{
	void *a = keel_malloc(t->heap, T_LARGE);
	void *b = keel_malloc(t->heap, 3 * KEEL_SEGMENT_SIZE);
	T_REQUIRE(t, a != NULL && b != NULL);
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.large_blocks == 2);
	T_CHECK(t, st.source_maps == t->src->maps && st.source_maps >= 2);
	T_CHECK(t, st.source_bytes >= T_LARGE + 3 * KEEL_SEGMENT_SIZE);
	T_CHECK(t, st.in_use_bytes >= T_LARGE + 3 * KEEL_SEGMENT_SIZE);
	size_t peak_src = st.peak_source_bytes;
	T_CHECK(t, peak_src >= st.source_bytes);
	T_CHECK(t, keel_free(t->heap, a) == 0);
	T_CHECK(t, keel_free(t->heap, b) == 0);
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.large_blocks == 0);
	/* freed large blocks are kept for reuse until keel_trim */
	T_CHECK(t, st.free_bytes >= T_LARGE + 3 * KEEL_SEGMENT_SIZE);
	T_CHECK(t, keel_trim(t->heap) >= T_LARGE + 3 * KEEL_SEGMENT_SIZE);
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.source_unmaps == t->src->unmaps && st.source_unmaps >= 2);
	T_CHECK(t, st.peak_source_bytes == peak_src);
	T_CHECK(t, st.source_bytes == t->src->live_bytes);
}

static void stats_free_bytes(struct t *t)
{
	static void *p[20];
	for (unsigned i = 0; i < 20; i++) {
		p[i] = keel_malloc(t->heap, 10000);
		T_REQUIRE(t, p[i] != NULL);
	}
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	size_t free0 = st.free_bytes;
	for (unsigned i = 0; i < 20; i += 2)
		T_CHECK(t, keel_free(t->heap, p[i]) == 0);
	T_REQUIRE(t, keel_stats(t->heap, &st) == 0);
	T_CHECK(t, st.free_bytes >= free0 + 10 * 10000);
	T_CHECK(t, st.largest_free >= 10000);
	T_CHECK(t, st.largest_free <= st.free_bytes);
	T_CHECK(t, st.fragmentation_pct <= 100);
	for (unsigned i = 1; i < 20; i += 2)
		T_CHECK(t, keel_free(t->heap, p[i]) == 0);
}

/* ---- walk ------------------------------------------------------------------- */

#define WMAX 512
struct walk_log {
	unsigned n, overflow, stop_after;
	int stop_value;
	struct keel_block b[WMAX];
};
static struct walk_log wl;

static int log_block(const struct keel_block *b, void *arg)
{
	struct walk_log *l = arg;
	if (l->n < WMAX)
		l->b[l->n] = *b;
	else
		l->overflow++;
	l->n++;
	if (l->stop_after && l->n == l->stop_after)
		return l->stop_value;
	return 0;
}

static void walk_reset(unsigned stop_after, int stop_value)
{
	wl.n = wl.overflow = 0;
	wl.stop_after = stop_after;
	wl.stop_value = stop_value;
}

static void walk_empty(struct t *t)
{
	walk_reset(0, 0);
	T_CHECK(t, keel_walk(t->heap, log_block, &wl) == 0);
	for (unsigned i = 0; i < wl.n && i < WMAX; i++)
		T_CHECK(t, wl.b[i].is_free);
}

static void walk_sees_every_live_block(struct t *t)
{
	static unsigned char *p[60];
	static size_t size[60];
	for (unsigned i = 0; i < 60; i++) {
		size[i] = (i == 7)    ? T_LARGE
		          : (i == 30) ? 3 * KEEL_SEGMENT_SIZE
		                      : 1 + (i * 211) % 6000;
		p[i] = keel_malloc(t->heap, size[i]);
		T_REQUIRE(t, p[i] != NULL);
	}
	for (unsigned i = 40; i < 60; i++)
		T_CHECK(t, keel_free(t->heap, p[i]) == 0);
	walk_reset(0, 0);
	T_REQUIRE(t, keel_walk(t->heap, log_block, &wl) == 0);
	T_REQUIRE(t, wl.overflow == 0);
	unsigned live = 0;
	for (unsigned k = 0; k < wl.n; k++) {
		const struct keel_block *b = &wl.b[k];
		T_CHECK(t, b->kind == KEEL_KIND_SMALL || b->kind == KEEL_KIND_MEDIUM ||
		                   b->kind == KEEL_KIND_LARGE);
		if (b->is_free)
			continue;
		live++;
		unsigned found = 0;
		for (unsigned i = 0; i < 40; i++) {
			if (b->p != p[i])
				continue;
			found++;
			T_CHECK(t, b->size == keel_usable_size(t->heap, p[i]));
			if (size[i] <= KEEL_SMALL_MAX)
				T_CHECK(t, b->kind == KEEL_KIND_SMALL);
			else if (size[i] > KEEL_SEGMENT_SIZE)
				T_CHECK(t, b->kind == KEEL_KIND_LARGE);
			else
				T_CHECK(t, b->kind != KEEL_KIND_SMALL);
		}
		if (found != 1)
			t_diag("  walk reported live block %p (%zu bytes), matched %u times", b->p,
			       b->size, found);
		T_CHECK(t, found == 1);
	}
	T_CHECK(t, live == 40);
	/* each live block reported once */
	for (unsigned i = 0; i < 40; i++) {
		unsigned seen = 0;
		for (unsigned k = 0; k < wl.n; k++)
			seen += wl.b[k].p == p[i] && !wl.b[k].is_free;
		T_CHECK(t, seen == 1);
	}
	/* freed blocks are never reported live */
	for (unsigned i = 40; i < 60; i++)
		for (unsigned k = 0; k < wl.n; k++)
			T_CHECK(t, !(wl.b[k].p == p[i] && !wl.b[k].is_free));
	for (unsigned i = 0; i < 40; i++)
		T_CHECK(t, keel_free(t->heap, p[i]) == 0);
}

static void walk_blocks_disjoint(struct t *t)
{
	static void *p[100];
	for (unsigned i = 0; i < 100; i++) {
		p[i] = keel_malloc(t->heap, 1 + (i * 389) % 9000);
		T_REQUIRE(t, p[i] != NULL);
	}
	for (unsigned i = 0; i < 100; i += 3)
		T_CHECK(t, keel_free(t->heap, p[i]) == 0);
	walk_reset(0, 0);
	T_REQUIRE(t, keel_walk(t->heap, log_block, &wl) == 0);
	T_REQUIRE(t, wl.overflow == 0);
	/* sort by address, then no block may reach into the next */
	for (unsigned i = 1; i < wl.n; i++) {
		struct keel_block x = wl.b[i];
		unsigned j = i;
		while (j > 0 && (uintptr_t)wl.b[j - 1].p > (uintptr_t)x.p) {
			wl.b[j] = wl.b[j - 1];
			j--;
		}
		wl.b[j] = x;
	}
	unsigned overlaps = 0;
	for (unsigned i = 1; i < wl.n; i++)
		if ((uintptr_t)wl.b[i - 1].p + wl.b[i - 1].size > (uintptr_t)wl.b[i].p)
			overlaps++;
	T_CHECK(t, overlaps == 0);
	for (unsigned i = 0; i < 100; i++)
		if (i % 3)
			T_CHECK(t, keel_free(t->heap, p[i]) == 0);
}

static void walk_stops_early(struct t *t)
{
	static void *p[20];
	for (unsigned i = 0; i < 20; i++) {
		p[i] = keel_malloc(t->heap, 100 + i * 300);
		T_REQUIRE(t, p[i] != NULL);
	}
	walk_reset(3, 7);
	T_CHECK(t, keel_walk(t->heap, log_block, &wl) == 7);
	T_CHECK(t, wl.n == 3);
	walk_reset(1, -42);
	T_CHECK(t, keel_walk(t->heap, log_block, &wl) == -42);
	T_CHECK(t, wl.n == 1);
	walk_reset(0, 0);
	T_CHECK(t, keel_walk(t->heap, log_block, &wl) == 0);
	T_CHECK(t, wl.n >= 20);
	for (unsigned i = 0; i < 20; i++)
		T_CHECK(t, keel_free(t->heap, p[i]) == 0);
}

static void check_healthy(struct t *t)
{
	struct keel_fault f;
	f.what = "untouched";
	f.where = NULL;
	T_CHECK(t, keel_check(t->heap, NULL) == 0);
	T_CHECK(t, keel_check(t->heap, &f) == 0);
	static void *p[300];
	for (unsigned i = 0; i < 300; i++) {
		p[i] = keel_malloc(t->heap, (i % 100 == 0) ? T_LARGE : 1 + (i * 131) % 4000);
		T_REQUIRE(t, p[i] != NULL);
		if (i % 37 == 0)
			T_CHECK(t, keel_check(t->heap, &f) == 0);
	}
	for (unsigned i = 0; i < 300; i += 2)
		T_CHECK(t, keel_free(t->heap, p[i]) == 0);
	T_CHECK(t, keel_check(t->heap, &f) == 0);
	T_CHECK(t, keel_check(t->heap, NULL) == 0);
	for (unsigned i = 1; i < 300; i += 2)
		T_CHECK(t, keel_free(t->heap, p[i]) == 0);
	T_CHECK(t, keel_check(t->heap, &f) == 0);
}

static void strerror_distinct(struct t *t)
{
	static const int codes[] = {
		0,           KEEL_ENOTOURS, KEEL_EINTERIOR, KEEL_EDOUBLE, KEEL_ECORRUPT,
		KEEL_EINVAL, KEEL_ENOMEM
	};
	const unsigned n = sizeof codes / sizeof codes[0];
	for (unsigned i = 0; i < n; i++) {
		const char *s = keel_strerror(codes[i]);
		T_CHECK(t, s != NULL);
		if (!s)
			continue;
		T_CHECK(t, s[0] != '\0');
		for (unsigned j = 0; j < i; j++) {
			const char *o = keel_strerror(codes[j]);
			if (o && t_streq(s, o)) {
				t_diag("  keel_strerror(%d) == keel_strerror(%d) == \"%s\"",
				       codes[i], codes[j], s);
				T_CHECK(t, !"distinct strings");
			}
		}
	}
	/* unknown codes still get a string */
	T_CHECK(t, keel_strerror(-7) != NULL);
	T_CHECK(t, keel_strerror(-1000) != NULL);
	T_CHECK(t, keel_strerror(12) != NULL);
	T_CHECK(t, keel_strerror(-2147483647 - 1) != NULL);
}

const struct t_case introspect_cases[] = {
	T_CASE(stats_fresh),
	T_CASE(stats_null_out),
	T_CASE(stats_alloc_free_counts),
	T_CASE(stats_requested_bytes),
	T_CASE(stats_class_count),
	T_CASE(stats_large_and_source),
	T_CASE(stats_free_bytes),
	T_CASE(walk_empty),
	T_CASE(walk_sees_every_live_block),
	T_CASE(walk_blocks_disjoint),
	T_CASE(walk_stops_early),
	T_CASE(check_healthy),
	T_CASE(strerror_distinct),
	{ 0 },
};
