/* tests/selftest.c: the test library's own oracles. The counting source and
 * the pattern helpers judge every other case, so they must catch what they
 * claim to: a mismatched unmap, a refused map, a changed byte. */
#include "test.h"

static struct t_source self_src;
static struct keel_source junk_env;

static void self_counting_source(struct t *t)
{
	struct t_source *ts = &self_src;
	t_source_init(ts, t_env_source());
	ts->quiet = 1;
	T_CHECK(t, ts->src.zeroed == t_env_source()->zeroed);
	T_CHECK(t, ts->src.map != NULL && ts->src.unmap != NULL && ts->src.ctx == ts);
	unsigned char *a = ts->src.map(ts->src.ctx, 2 * KEEL_PAGE_SIZE, KEEL_PAGE_SIZE);
	unsigned char *b = ts->src.map(ts->src.ctx, KEEL_SEGMENT_SIZE, KEEL_SEGMENT_SIZE);
	T_REQUIRE(t, a != NULL && b != NULL);
	T_CHECK(t, T_ALIGNED(a, KEEL_PAGE_SIZE) && T_ALIGNED(b, KEEL_SEGMENT_SIZE));
	T_CHECK(t, ts->maps == 2 && ts->live_maps == 2);
	T_CHECK(t, ts->live_bytes == 2 * KEEL_PAGE_SIZE + KEEL_SEGMENT_SIZE);
	T_CHECK(t, ts->peak_bytes == ts->live_bytes);
	/* a wrong size, a wrong start, an unknown pointer: refused and counted */
	T_CHECK(t, ts->src.unmap(ts->src.ctx, a, KEEL_PAGE_SIZE) == -22);
	T_CHECK(t, ts->src.unmap(ts->src.ctx, a + KEEL_PAGE_SIZE, KEEL_PAGE_SIZE) == -22);
	T_CHECK(t, ts->src.unmap(ts->src.ctx, NULL, KEEL_PAGE_SIZE) == -22);
	T_CHECK(t, ts->bad_unmaps == 3);
	T_CHECK(t, ts->live_maps == 2 && ts->unmaps == 0);
	a[0] = 1; /* still mapped */
	T_CHECK(t, ts->src.unmap(ts->src.ctx, a, 2 * KEEL_PAGE_SIZE) == 0);
	T_CHECK(t, ts->src.unmap(ts->src.ctx, a, 2 * KEEL_PAGE_SIZE) == -22); /* twice */
	T_CHECK(t, ts->src.unmap(ts->src.ctx, b, KEEL_SEGMENT_SIZE) == 0);
	T_CHECK(t, ts->live_bytes == 0 && ts->live_maps == 0 && ts->unmaps == 2);
	T_CHECK(t, ts->peak_bytes == 2 * KEEL_PAGE_SIZE + KEEL_SEGMENT_SIZE);
	T_CHECK(t, ts->bad_unmaps == 4);
}

static void self_source_fail_at(struct t *t)
{
	struct t_source *ts = &self_src;
	t_source_init(ts, t_env_source());
	ts->fail_at = 2;
	void *m[4];
	for (int i = 0; i < 4; i++)
		m[i] = ts->src.map(ts->src.ctx, KEEL_PAGE_SIZE, KEEL_PAGE_SIZE);
	T_CHECK(t, m[0] != NULL && m[1] != NULL);
	T_CHECK(t, m[2] == NULL && m[3] == NULL);
	T_CHECK(t, ts->map_calls == 4 && ts->maps == 2 && ts->failed_maps == 2);
	T_CHECK(t, ts->live_maps == 2);
	for (int i = 0; i < 2; i++)
		if (m[i])
			T_CHECK(t, ts->src.unmap(ts->src.ctx, m[i], KEEL_PAGE_SIZE) == 0);
	T_CHECK(t, ts->live_bytes == 0 && ts->bad_unmaps == 0);
	/* a reported unmap error still releases the mapping */
	ts->fail_at = -1;
	void *p = ts->src.map(ts->src.ctx, KEEL_PAGE_SIZE, KEEL_PAGE_SIZE);
	T_REQUIRE(t, p != NULL);
	ts->unmap_error = -5;
	T_CHECK(t, ts->src.unmap(ts->src.ctx, p, KEEL_PAGE_SIZE) == -5);
	T_CHECK(t, ts->live_bytes == 0 && ts->live_maps == 0);
}

static void self_source_junk(struct t *t)
{
	junk_env = *t_env_source();
	junk_env.zeroed = 0;
	struct t_source *ts = &self_src;
	t_source_init(ts, &junk_env);
	T_CHECK(t, ts->src.zeroed == 0);
	unsigned char *p = ts->src.map(ts->src.ctx, 3 * KEEL_PAGE_SIZE, KEEL_PAGE_SIZE);
	T_REQUIRE(t, p != NULL);
	T_CHECK(t, t_all_bytes(p, 3 * KEEL_PAGE_SIZE, 0xA5));
	T_CHECK(t, ts->src.unmap(ts->src.ctx, p, 3 * KEEL_PAGE_SIZE) == 0);
	/* protect passes through, or says it cannot */
	p = ts->src.map(ts->src.ctx, KEEL_PAGE_SIZE, KEEL_PAGE_SIZE);
	T_REQUIRE(t, p != NULL);
	int rc = ts->src.protect(ts->src.ctx, p, KEEL_PAGE_SIZE, KEEL_PROT_RW);
	T_CHECK(t, junk_env.protect ? rc == 0 : rc == -38);
	T_CHECK(t, ts->protects == 1);
	T_CHECK(t, ts->src.unmap(ts->src.ctx, p, KEEL_PAGE_SIZE) == 0);
}

static void self_patterns(struct t *t)
{
	static unsigned char buf[300];
	for (size_t off = 0; off < 16; off++) {
		t_fill(buf + off, 200, 0x1234 + off);
		T_CHECK(t, t_verify(buf + off, 200, 0x1234 + off));
		T_CHECK(t, !t_verify(buf + off, 200, 0x1235 + off)); /* another tag differs */
		buf[off + 137] ^= 1;
		T_CHECK(t, !t_verify(buf + off, 200, 0x1234 + off)); /* one bit shows */
	}
	/* a pattern shifted by one byte is not the same pattern */
	t_fill(buf, 100, 9);
	t_fill(buf + 150, 100, 9);
	T_CHECK(t, !t_verify(buf + 151, 99, 9));
	t_memset(buf, 0, sizeof buf);
	T_CHECK(t, t_is_zero(buf, sizeof buf));
	buf[299] = 1;
	T_CHECK(t, !t_is_zero(buf, sizeof buf));
	T_CHECK(t, t_streq("double free", "double free") && !t_streq("double", "double free"));
	uint64_t r1 = 42, r2 = 42;
	uint64_t x = t_rand(&r1);
	T_CHECK(t, x == t_rand(&r2) && t_rand(&r1) != x);
}

const struct t_case selftest_cases[] = {
	T_CASE(self_counting_source),
	T_CASE(self_source_fail_at),
	T_CASE(self_source_junk),
	T_CASE(self_patterns),
	{ 0 },
};
