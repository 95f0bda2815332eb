/* tests/region.c: heaps over caller-given regions, with no page source or
 * beside one: they fill up and refill, refuse bad regions, never write
 * outside them (guard bytes around each buffer stay intact). */
#include "test.h"

#define GUARD      256
#define BIG        (256u * 1024u)
#define SMALLR     (16u * 1024u)
#define GUARD_BYTE 0x3C

/* Each buffer has GUARD bytes before and after the part handed to keel. */
static _Alignas(64) unsigned char big_buf[GUARD + BIG + GUARD];
static _Alignas(64) unsigned char small_buf[GUARD + SMALLR + 8 + GUARD];
static _Alignas(64) unsigned char many_buf[GUARD + 10 * 8192 + GUARD];

static void guards_set(unsigned char *buf, size_t len)
{
	t_memset(buf, GUARD_BYTE, GUARD);
	t_memset(buf + GUARD + len, GUARD_BYTE, GUARD);
}

static int guards_ok(const unsigned char *buf, size_t len)
{
	return t_all_bytes(buf, GUARD, GUARD_BYTE) &&
	       t_all_bytes(buf + GUARD + len, GUARD, GUARD_BYTE);
}

static int inside(const void *p, size_t n, const unsigned char *base, size_t len)
{
	uintptr_t a = (uintptr_t)p, b = (uintptr_t)base;
	return a >= b && a + n <= b + len;
}

#define MAXP 4096
static unsigned char *ptrs[MAXP];
static size_t psize[MAXP];

/* Fill the heap with size-byte blocks (size 0: a mix) until it says NULL.
 * Every block must lie inside [base, base+len) and is filled to its usable size. */
static unsigned fill_up(struct t *t, struct keel_heap *h, size_t size, const unsigned char *base,
                        size_t len)
{
	unsigned n = 0;
	uint64_t r = 0x7e61 + size;
	while (n < MAXP) {
		size_t s = size ? size : 1 + t_rand(&r) % 2000;
		unsigned char *p = keel_malloc(h, s);
		if (!p)
			break;
		size_t u = keel_usable_size(h, p);
		T_CHECK(t, u >= s);
		T_CHECK(t, T_ALIGNED(p, 16));
		if (!inside(p, u, base, len)) {
			t_diag("  block %p (%zu bytes) is outside the region %p+%zu", p, u, base,
			       len);
			T_CHECK(t, !"block inside the region");
			break;
		}
		t_fill(p, u, n);
		ptrs[n] = p;
		psize[n] = u;
		n++;
	}
	T_CHECK(t, n < MAXP);
	return n;
}

static void free_all(struct t *t, struct keel_heap *h, unsigned n)
{
	unsigned bad = 0;
	for (unsigned i = 0; i < n; i++)
		bad += !t_verify(ptrs[i], psize[i], i);
	T_CHECK(t, bad == 0);
	T_CHECK_HEAP(t, h);
	for (unsigned i = 0; i < n; i++)
		T_CHECK(t, keel_free(h, ptrs[i]) == 0);
	T_CHECK_HEAP(t, h);
}

static void region_fill_refill(struct t *t)
{
	unsigned char *base = big_buf + GUARD;
	guards_set(big_buf, BIG);
	struct t_aux *a = t_aux_open(t, NULL, NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	T_REQUIRE(t, keel_heap_add_region(&a->heap, base, BIG) == 0);
	unsigned n = fill_up(t, &a->heap, 100, base, BIG);
	/* at least half the region must be usable as 100-byte blocks */
	T_CHECK(t, (size_t)n * 100 >= BIG / 2);
	T_CHECK(t, (size_t)n * 100 <= BIG);
	struct keel_stats st;
	T_REQUIRE(t, keel_stats(&a->heap, &st) == 0);
	T_CHECK(t, st.live_blocks == n);
	T_CHECK(t, st.failed_allocs >= 1);
	T_CHECK(t, st.source_bytes == 0 && st.source_maps == 0);
	free_all(t, &a->heap, n);
	T_REQUIRE(t, keel_stats(&a->heap, &st) == 0);
	T_CHECK(t, st.live_blocks == 0 && st.in_use_bytes == 0);
	unsigned n2 = fill_up(t, &a->heap, 100, base, BIG);
	T_CHECK(t, n2 == n);
	free_all(t, &a->heap, n2);
	/* and again with mixed sizes, then 100 bytes once more */
	unsigned n3 = fill_up(t, &a->heap, 0, base, BIG);
	T_CHECK(t, n3 > 0);
	free_all(t, &a->heap, n3);
	/* after mixed sizes, empty runs of other classes may stay carved */
	unsigned n4 = fill_up(t, &a->heap, 100, base, BIG);
	if (n4 < n - n / 10)
		t_diag("  100-byte blocks: %u at first, %u after a mixed fill", n, n4);
	T_CHECK(t, n4 >= n - n / 10);
	free_all(t, &a->heap, n4);
	T_CHECK(t, guards_ok(big_buf, BIG));
	T_CHECK(t, t_aux_close(t, a));
	T_CHECK(t, a->src.maps == 0);
	T_CHECK(t, guards_ok(big_buf, BIG));
}

static void region_misaligned(struct t *t)
{
	/* a 16 KiB region that starts 8 bytes off a 16-byte boundary */
	unsigned char *base = small_buf + GUARD + 8;
	guards_set(small_buf + 8, SMALLR);
	struct t_aux *a = t_aux_open(t, NULL, NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	T_REQUIRE(t, keel_heap_add_region(&a->heap, base, SMALLR) == 0);
	struct keel_stats st;
	T_REQUIRE(t, keel_stats(&a->heap, &st) == 0);
	T_CHECK(t, st.region_bytes <= SMALLR && st.region_bytes >= SMALLR - 16);
	for (int round = 0; round < 3; round++) {
		unsigned n = fill_up(t, &a->heap, round == 1 ? 0 : 48, base, SMALLR);
		T_CHECK(t, n > 0);
		free_all(t, &a->heap, n);
		T_CHECK(t, guards_ok(small_buf + 8, SMALLR));
	}
	t_aux_close(t, a);
	T_CHECK(t, guards_ok(small_buf + 8, SMALLR));
}

static void region_calloc_realloc(struct t *t)
{
	unsigned char *base = big_buf + GUARD;
	guards_set(big_buf, BIG);
	t_memset(base, 0xEE, BIG); /* a region is not zeroed: calloc must clear it */
	struct t_aux *a = t_aux_open(t, NULL, NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	T_REQUIRE(t, keel_heap_add_region(&a->heap, base, BIG) == 0);
	unsigned char *c = keel_calloc(&a->heap, 10, 100);
	T_REQUIRE(t, c != NULL);
	T_CHECK(t, t_is_zero(c, 1000));
	unsigned char *d = keel_calloc(&a->heap, 1, 20000);
	T_REQUIRE(t, d != NULL);
	T_CHECK(t, t_is_zero(d, 20000));
	unsigned char *p = keel_malloc(&a->heap, 16);
	T_REQUIRE(t, p != NULL);
	t_fill(p, 16, 1);
	size_t size = 16;
	for (;;) {
		unsigned char *q = keel_realloc(&a->heap, p, size * 2);
		if (!q)
			break;
		T_CHECK(t, inside(q, size * 2, base, BIG));
		T_CHECK(t, t_verify(q, size, 1));
		t_fill(q, size * 2, 1);
		p = q;
		size *= 2;
	}
	/* the last growth failed: p is still live and intact */
	T_CHECK(t, size >= 32768);
	T_CHECK(t, size < BIG);
	T_CHECK(t, t_verify(p, size, 1));
	T_CHECK(t, keel_usable_size(&a->heap, p) >= size);
	T_CHECK_HEAP(t, &a->heap);
	T_CHECK(t, keel_free(&a->heap, p) == 0);
	T_CHECK(t, keel_free(&a->heap, c) == 0);
	T_CHECK(t, keel_free(&a->heap, d) == 0);
	T_CHECK(t, guards_ok(big_buf, BIG));
	t_aux_close(t, a);
}

static void region_aligned(struct t *t)
{
	unsigned char *base = big_buf + GUARD;
	guards_set(big_buf, BIG);
	struct t_aux *a = t_aux_open(t, NULL, NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	T_REQUIRE(t, keel_heap_add_region(&a->heap, base, BIG) == 0);
	for (size_t al = 16; al <= 16384; al <<= 1) {
		unsigned char *p = keel_aligned_alloc(&a->heap, al, 1000);
		T_REQUIRE(t, p != NULL);
		T_CHECK(t, T_ALIGNED(p, al));
		T_CHECK(t, inside(p, 1000, base, BIG));
		t_fill(p, 1000, al);
		T_CHECK(t, t_verify(p, 1000, al));
		T_CHECK(t, keel_free(&a->heap, p) == 0);
	}
	/* only if the buffer happens to hold a 1 MiB boundary can this succeed */
	unsigned char *m = keel_aligned_alloc(&a->heap, (size_t)1 << 20, 1000);
	if (m) {
		T_CHECK(t, T_ALIGNED(m, (size_t)1 << 20) && inside(m, 1000, base, BIG));
		T_CHECK(t, keel_free(&a->heap, m) == 0);
	}
	/* no region can hold these: NULL, and no page source to ask */
	T_CHECK(t, keel_malloc(&a->heap, BIG) == NULL);
	T_CHECK(t, keel_malloc(&a->heap, T_LARGE) == NULL);
	T_CHECK(t, keel_calloc(&a->heap, 1, BIG + 1) == NULL);
	T_CHECK(t, guards_ok(big_buf, BIG));
	t_aux_close(t, a);
}

static void region_too_small(struct t *t)
{
	unsigned char *base = big_buf + GUARD; /* 64-byte aligned */
	struct t_aux *a = t_aux_open(t, NULL, NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	T_CHECK(t, keel_heap_add_region(&a->heap, base, 0) == KEEL_EINVAL);
	T_CHECK(t, keel_heap_add_region(&a->heap, base, 16) == KEEL_EINVAL);
	T_CHECK(t, keel_heap_add_region(&a->heap, base, 4095) == KEEL_EINVAL);
	T_CHECK(t, keel_heap_add_region(&a->heap, NULL, 0) == KEEL_EINVAL);
	/* 4096 bytes from base+8: rounding leaves 4080, under 4 KiB */
	T_CHECK(t, keel_heap_add_region(&a->heap, base + 8, 4096) == KEEL_EINVAL);
	/* regions that wrap past the top of the address space: the end, or
	 * only the start's rounding up to 16 */
	T_CHECK(t,
	        keel_heap_add_region(&a->heap, (void *)(UINTPTR_MAX - 4095), 8192) == KEEL_EINVAL);
	T_CHECK(t, keel_heap_add_region(&a->heap, (void *)(UINTPTR_MAX - 7), 7) == KEEL_EINVAL);
	struct keel_stats st;
	T_REQUIRE(t, keel_stats(&a->heap, &st) == 0);
	T_CHECK(t, st.region_bytes == 0);
	T_CHECK(t, keel_malloc(&a->heap, 16) == NULL);
	/* exactly 4 KiB after rounding is enough */
	T_CHECK(t, keel_heap_add_region(&a->heap, base, 4096) == 0);
	T_CHECK(t, keel_heap_add_region(&a->heap, base + 8192 + 8, 4096 + 24) == 0);
	T_CHECK_HEAP(t, &a->heap);
	t_aux_close(t, a);
}

static void region_overlap(struct t *t)
{
	unsigned char *base = big_buf + GUARD;
	struct t_aux *a = t_aux_open(t, NULL, NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	T_REQUIRE(t, keel_heap_add_region(&a->heap, base + 65536, 65536) == 0);
	T_CHECK(t, keel_heap_add_region(&a->heap, base + 65536, 65536) == KEEL_EINVAL);
	T_CHECK(t, keel_heap_add_region(&a->heap, base + 98304, 65536) == KEEL_EINVAL);
	T_CHECK(t, keel_heap_add_region(&a->heap, base + 32768, 65536) == KEEL_EINVAL);
	T_CHECK(t, keel_heap_add_region(&a->heap, base + 70000, 8192) == KEEL_EINVAL);
	T_CHECK(t, keel_heap_add_region(&a->heap, base, BIG) == KEEL_EINVAL);
	/* neighbours that only touch are fine */
	T_CHECK(t, keel_heap_add_region(&a->heap, base, 65536) == 0);
	T_CHECK(t, keel_heap_add_region(&a->heap, base + 131072, 65536) == 0);
	struct keel_stats st;
	T_REQUIRE(t, keel_stats(&a->heap, &st) == 0);
	T_CHECK(t, st.region_bytes == 3 * 65536);
	T_CHECK_HEAP(t, &a->heap);
	t_aux_close(t, a);
}

static void region_wraps(struct t *t)
{
	struct t_aux *a = t_aux_open(t, NULL, NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	void *top = (void *)(UINTPTR_MAX - 8191);
	T_CHECK(t, keel_heap_add_region(&a->heap, top, 65536) == KEEL_EINVAL);
	T_CHECK(t, keel_heap_add_region(&a->heap, big_buf + GUARD, SIZE_MAX) == KEEL_EINVAL);
	T_CHECK(t, keel_malloc(&a->heap, 16) == NULL);
	T_CHECK_HEAP(t, &a->heap);
	t_aux_close(t, a);
}

static void region_too_many(struct t *t)
{
	unsigned char *base = many_buf + GUARD;
	guards_set(many_buf, 10 * 8192);
	struct t_aux *a = t_aux_open(t, NULL, NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	unsigned i;
	for (i = 0; i < KEEL_MAX_REGIONS; i++)
		T_CHECK(t, keel_heap_add_region(&a->heap, base + i * 8192, 8192) == 0);
	T_CHECK(t, keel_heap_add_region(&a->heap, base + i * 8192, 8192) == KEEL_ENOMEM);
	struct keel_stats st;
	T_REQUIRE(t, keel_stats(&a->heap, &st) == 0);
	T_CHECK(t, st.region_bytes == (size_t)KEEL_MAX_REGIONS * 8192);
	/* every region serves blocks */
	unsigned n = fill_up(t, &a->heap, 200, base, (size_t)KEEL_MAX_REGIONS * 8192);
	T_CHECK(t, n * 200 >= KEEL_MAX_REGIONS * 8192 / 2);
	free_all(t, &a->heap, n);
	T_CHECK(t, guards_ok(many_buf, 10 * 8192));
	/* the refused ninth region was never touched */
	T_CHECK(t, t_all_bytes(base + KEEL_MAX_REGIONS * 8192, 8192, 0));
	t_aux_close(t, a);
}

static void region_two_regions(struct t *t)
{
	unsigned char *b1 = big_buf + GUARD, *b2 = small_buf + GUARD;
	guards_set(big_buf, BIG);
	guards_set(small_buf, SMALLR);
	struct t_aux *a = t_aux_open(t, NULL, NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	T_REQUIRE(t, keel_heap_add_region(&a->heap, b1, BIG) == 0);
	T_REQUIRE(t, keel_heap_add_region(&a->heap, b2, SMALLR) == 0);
	unsigned n = 0, in1 = 0, in2 = 0;
	while (n < MAXP) {
		unsigned char *p = keel_malloc(&a->heap, 64);
		if (!p)
			break;
		in1 += inside(p, 64, b1, BIG);
		in2 += inside(p, 64, b2, SMALLR);
		t_fill(p, 64, n);
		ptrs[n] = p;
		psize[n] = 64;
		n++;
	}
	T_CHECK(t, in1 + in2 == n);
	T_CHECK(t, in1 > 0 && in2 > 0);
	free_all(t, &a->heap, n);
	T_CHECK(t, guards_ok(big_buf, BIG));
	T_CHECK(t, guards_ok(small_buf, SMALLR));
	t_aux_close(t, a);
}

static void region_no_source_no_map(struct t *t)
{
	/* no region and no source: nothing to serve, nothing mapped */
	struct t_aux *a = t_aux_open(t, NULL, NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	T_CHECK(t, keel_malloc(&a->heap, 1) == NULL);
	T_CHECK(t, keel_calloc(&a->heap, 1, 1) == NULL);
	T_CHECK(t, keel_aligned_alloc(&a->heap, 64, 1) == NULL);
	T_CHECK(t, keel_realloc(&a->heap, NULL, 1) == NULL);
	T_CHECK(t, keel_free(&a->heap, NULL) == 0);
	T_CHECK(t, keel_trim(&a->heap) == 0);
	struct keel_stats st;
	T_REQUIRE(t, keel_stats(&a->heap, &st) == 0);
	T_CHECK(t, st.failed_allocs == 4);
	T_CHECK(t, st.source_maps == 0 && st.live_blocks == 0);
	t_aux_close(t, a);
}

static void region_with_source(struct t *t)
{
	/* regions beside a counting source: the region is used, and what does
	 * not fit comes from the source, which gets every page back.
	 * keel.h does not say which is used first; a given region must be used. */
	unsigned char *base = small_buf + GUARD;
	guards_set(small_buf, SMALLR);
	struct t_aux *a = t_aux_open(t, t_env_source(), NULL, 0, 0);
	T_REQUIRE(t, a != NULL);
	T_REQUIRE(t, keel_heap_add_region(&a->heap, base, SMALLR) == 0);
	unsigned n = 0, in_region = 0;
	for (; n < 600; n++) {
		ptrs[n] = keel_malloc(&a->heap, 100);
		T_REQUIRE(t, ptrs[n] != NULL);
		in_region += inside(ptrs[n], 100, base, SMALLR);
		t_fill(ptrs[n], 100, n);
		psize[n] = 100;
	}
	unsigned char *big = keel_malloc(&a->heap, T_LARGE);
	T_REQUIRE(t, big != NULL);
	T_CHECK(t, in_region > 0);
	T_CHECK(t, in_region < n);
	T_CHECK(t, a->src.maps >= 2);
	T_CHECK(t, a->src.live_bytes >= T_LARGE);
	struct keel_stats st;
	T_REQUIRE(t, keel_stats(&a->heap, &st) == 0);
	T_CHECK(t, st.source_bytes == a->src.live_bytes);
	T_CHECK(t, st.region_bytes == SMALLR);
	T_CHECK(t, keel_free(&a->heap, big) == 0);
	free_all(t, &a->heap, n);
	keel_trim(&a->heap);
	T_CHECK(t, a->src.live_bytes == 0);
	T_CHECK(t, guards_ok(small_buf, SMALLR));
	t_aux_close(t, a);
}

static void region_destroy_and_reuse(struct t *t)
{
	unsigned char *base = big_buf + GUARD;
	guards_set(big_buf, BIG);
	for (int round = 0; round < 2; round++) {
		struct t_aux *a = t_aux_open(t, NULL, NULL, 0, 0);
		T_REQUIRE(t, a != NULL);
		T_REQUIRE(t, keel_heap_add_region(&a->heap, base, BIG) == 0);
		/* leave blocks live: destroy takes them all back with the region */
		unsigned n = fill_up(t, &a->heap, 1000, base, BIG);
		T_CHECK(t, n > BIG / 2 / 1000);
		T_CHECK(t, t_aux_close(t, a));
	}
	T_CHECK(t, guards_ok(big_buf, BIG));
}

const struct t_case region_cases[] = {
	T_CASE(region_fill_refill),
	T_CASE(region_misaligned),
	T_CASE(region_calloc_realloc),
	T_CASE(region_aligned),
	T_CASE(region_too_small),
	T_CASE(region_overlap),
	T_CASE(region_wraps),
	T_CASE(region_too_many),
	T_CASE(region_two_regions),
	T_CASE(region_no_source_no_map),
	T_CASE(region_with_source),
	T_CASE(region_destroy_and_reuse),
	{ 0 },
};
