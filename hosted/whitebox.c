/* whitebox.c: keel_check's invariants, one at a time, from inside. On private
 * heaps over the Linux source it breaks one field the public API cannot
 * reach (a run's count, a bitmap bit, a free-list link, a TLSF bitmap bit, a
 * counter...), requires KEEL_ECORRUPT with that invariant's label in
 * fault.what, puts the field back and requires a clean heap again.
 * Hosted only (it includes alloc/internal.h); prints TAP. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>

#include "../alloc/internal.h"
#include "source_linux.h"

static unsigned n_tests, n_failed;

static void result(int ok, const char *name, int line, const char *why)
{
	n_tests++;
	if (!ok)
		n_failed++;
	if (line)
		printf("%sok %u - %s (whitebox.c:%d)\n", ok ? "" : "not ", n_tests, name, line);
	else
		printf("%sok %u - %s\n", ok ? "" : "not ", n_tests, name);
	if (!ok && why)
		printf("#   %s\n", why);
}

/* ---- an undo log of the fields a test breaks -------------------------- */

#define UNDO_MAX 24
static struct {
	void *p;
	size_t n;
	unsigned char old[sizeof(struct kl_blk *) * KL_SL_COUNT * KL_FL_COUNT];
} undo[UNDO_MAX];
static unsigned nundo;

/* Write n bytes of v over p, keeping what was there. */
static void set_bytes(void *p, size_t n, const void *v)
{
	if (nundo == UNDO_MAX || n > sizeof undo[0].old) {
		fprintf(stderr, "whitebox: undo log full\n");
		return;
	}
	undo[nundo].p = p;
	undo[nundo].n = n;
	memcpy(undo[nundo].old, p, n);
	nundo++;
	memcpy(p, v, n);
}
#define SET(lv, v)                                                                                 \
	do {                                                                                       \
		__typeof__(lv) set_v_ = (v);                                                       \
		set_bytes(&(lv), sizeof(lv), &set_v_);                                             \
	} while (0)
static const unsigned char zeros[sizeof undo[0].old];
#define ZERO(lv) set_bytes(&(lv), sizeof(lv), zeros)

static void undo_all(void)
{
	while (nundo) {
		nundo--;
		memcpy(undo[nundo].p, undo[nundo].old, undo[nundo].n);
	}
}

/* Flip the allocation bit of granule p in segment s. */
static void flip_bit(struct kl_seg *s, uintptr_t p)
{
	size_t i = kl_bit_index(s, p);
	SET(s->bits[i >> 6], s->bits[i >> 6] ^ ((uint64_t)1 << (i & 63)));
}

/* keel_check must fail with exactly label; then the log is undone and the
 * heap must be clean again. */
static void expect(struct keel_heap *heap, const char *label, int line)
{
	struct keel_fault f = { NULL, NULL };
	int rc = keel_check(heap, &f);
	int hit = rc == KEEL_ECORRUPT && f.what && strcmp(f.what, label) == 0;
	char why[256];
	snprintf(why, sizeof why, "keel_check = %d, \"%s\"", rc, f.what ? f.what : "(none)");
	undo_all();
	f.what = NULL;
	int clean = keel_check(heap, &f) == 0;
	if (hit && !clean)
		snprintf(why, sizeof why, "not clean once repaired: \"%s\"",
		         f.what ? f.what : "(none)");
	result(hit && clean, label, line, why);
}
#define EXPECT(heap, label) expect((heap), (label), __LINE__)

static void require(int ok, const char *what)
{
	result(ok, what, 0, NULL);
}

/* ---- the heaps ------------------------------------------------------------ */

static int reports;
static void on_report(void *ctx, int err, const void *p)
{
	(void)ctx;
	(void)err;
	(void)p;
	reports++;
}

static void open_heap(struct keel_heap *heap, struct keel_config *cfg,
                      const struct keel_source *src, unsigned flags)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->source = src;
	cfg->flags = flags;
	cfg->report = on_report;
	require(keel_heap_init(heap, cfg) == 0, "keel_heap_init");
}

static struct kl_seg *seg_of(struct kl_heap *h, const void *p)
{
	return kl_seg_find(h, (uintptr_t)p).seg;
}

/* The first free-list head of the medium lists, and its list. */
static struct kl_blk *first_free(struct kl_heap *h, unsigned *fl, unsigned *sl)
{
	for (*fl = 0; *fl < KL_FL_COUNT; (*fl)++)
		for (*sl = 0; *sl < KL_SL_COUNT; (*sl)++)
			if (h->heads[*fl][*sl])
				return h->heads[*fl][*sl];
	return NULL;
}

/* An empty list (fl, sl) for a made-up entry; its bits are set in the log. */
static void fake_list_head(struct kl_heap *h, unsigned fl, unsigned sl, struct kl_blk *b)
{
	SET(h->heads[fl][sl], b);
	SET(h->sl_bitmap[fl], (uint16_t)(h->sl_bitmap[fl] | (1u << sl)));
	SET(h->fl_bitmap, h->fl_bitmap | (1u << fl));
}

static unsigned char region_buf[64 << 10] __attribute__((aligned(4096)));
static unsigned char not_ours[64] __attribute__((aligned(16)));

/* Runs, slots and the free list of a run (R0-R5, B5 inside runs). */
static void runs(struct keel_heap *heap)
{
	struct kl_heap *h = kl_heap_of(heap);
	void *a[6];
	for (int i = 0; i < 6; i++)
		a[i] = keel_malloc(heap, 64);
	keel_free(heap, a[1]);
	keel_free(heap, a[3]); /* free list: a[3], a[1]; bump 6 */
	struct kl_seg *s = seg_of(h, a[0]);
	struct kl_run *r = kl_run_of(s, (uintptr_t)a[0]);
	uintptr_t u = kl_run_base(r, &h->cls[r->cls - 1]);
	uintptr_t f = (uintptr_t)r->free;
	require(f == (uintptr_t)a[3] && r->bump == 6 && keel_check(heap, NULL) == 0,
	        "run set up: partial, two free slots");

	SET(r->cls, 0);
	EXPECT(heap, "R0 run header names a class and its segment");
	SET(r->nslots, (uint16_t)(r->nslots - 1));
	EXPECT(heap, "R0 run slot count matches its class");
	SET(r->bump, (uint16_t)(r->nslots + 1));
	EXPECT(heap, "R1 run counts within nslots");
	SET(*(uintptr_t *)f, kl_link(h, f, u + 8));
	EXPECT(heap, "R3 free-list link is a handed-out slot of its run");
	SET(*(uintptr_t *)f, kl_link(h, f, u + 6 * 64));
	EXPECT(heap, "R3 free-list link is a handed-out slot of its run");
	flip_bit(s, f);
	EXPECT(heap, "R2 slot on the free list has its bit clear");
	SET(*(uintptr_t *)f, kl_link(h, f, f));
	EXPECT(heap, "R3 free list has no cycle");
	SET(r->nfree, (uint16_t)(r->nfree - 1));
	EXPECT(heap, "R1 nfree == listed + never used");
	flip_bit(s, u + 7 * 64);
	EXPECT(heap, "R2 never-used slot has its bit clear");
	flip_bit(s, (uintptr_t)a[0] + 2 * KL_GRAN);
	EXPECT(heap, "B5 no stray bits inside a slot");
	flip_bit(s, (uintptr_t)a[0] + KL_GRAN); /* the free path would take it for a slot */
	EXPECT(heap, "B5 no stray bits inside a slot");
	flip_bit(s, kl_run_chunk(r)); /* the run block's header */
	EXPECT(heap, "B5 no bits before a run's slot 0");
	flip_bit(s, (uintptr_t)a[2]);
	EXPECT(heap, "R2 live slots == bits set");
	SET(r->where, KL_RUN_FULL);
	EXPECT(heap, "R4 run is on the list its fill says");
	SET(r->where, KL_RUN_PARTIAL | 8);
	EXPECT(heap, "R4 run is on the list its fill says");
	SET(r->prev, r);
	EXPECT(heap, "R4 partial list holds partial runs of its class");
	SET(s->runs[0].cls, 1);
	EXPECT(heap, "R0 side table marks exactly the run chunks");
	SET(kl_cmap(s)[r - s->runs], 0);
	EXPECT(heap, "R5 class map matches the side table");

	/* a run block whose size no longer fits */
	struct kl_blk *rb = (struct kl_blk *)kl_run_chunk(r);
	SET(rb->head, (rb->head & ~KL_B_SIZE_MASK) | KL_GRAN);
	EXPECT(heap, "B1 block size fits the arena");
	for (int i = 0; i < 6; i++)
		if (i != 1 && i != 3)
			keel_free(heap, a[i]);
}

/* Medium blocks, the arena's tiling, the TLSF lists and bitmaps. */
static void arena(struct keel_heap *heap)
{
	struct kl_heap *h = kl_heap_of(heap);
	char *m0 = keel_malloc(heap, 3000), *m1 = keel_malloc(heap, 3000);
	char *m2 = keel_malloc(heap, 3000);
	keel_free(heap, m1);
	struct kl_seg *s = seg_of(h, m0);
	struct kl_blk *b0 = kl_blk_of(m0), *fb = kl_blk_of(m1), *b2 = kl_blk_of(m2);
	require((fb->head & KL_B_FREE) && !(b2->head & KL_B_FREE) && keel_check(heap, NULL) == 0,
	        "arena set up: a free block between two live ones");
	uintptr_t sentinel = s->arena_end - KL_BLK_HDR;
	struct kl_blk *sb = (struct kl_blk *)sentinel;

	SET(s->arena_end, s->base + s->bytes + KL_SEG);
	EXPECT(heap, "S3 arena lies inside its segment");
	flip_bit(s, s->base); /* a whole bitmap word of metadata */
	EXPECT(heap, "B5 no bits over segment metadata");
	flip_bit(s, s->arena - KL_GRAN); /* the last, partial word */
	EXPECT(heap, "B5 no bits over segment metadata");
	SET(b2->prev_size, b2->prev_size + KL_GRAN);
	EXPECT(heap, "B3 prev_size matches the free block before");
	SET(fb->prev_size, fb->prev_size ^ KL_GRAN); /* a free block after a used one */
	EXPECT(heap, "B7 a header after a used block holds its canary");
	SET(kl_blk_next(b2)->prev_size, 0); /* whatever follows a used block */
	EXPECT(heap, "B7 a header after a used block holds its canary");
	/* the free block split in two free halves */
	size_t fsize = kl_blk_size(fb);
	struct kl_blk *half = (struct kl_blk *)((uintptr_t)fb + 64);
	SET(half->prev_size, (size_t)64);
	SET(half->head, (fsize - 64) | KL_B_FREE | KL_B_PREV_FREE);
	SET(fb->head, (fb->head & ~KL_B_SIZE_MASK) | 64);
	EXPECT(heap, "B2 no two free neighbours");
	SET(fb->head, fb->head | KL_B_RUN);
	EXPECT(heap, "B4 a free block holds no run");
	flip_bit(s, (uintptr_t)m1);
	EXPECT(heap, "B5 free block has no bits set");
	flip_bit(s, (uintptr_t)fb + fsize - KL_GRAN);
	EXPECT(heap, "B5 free block has no bits set");
	SET(s->is_empty, 1);
	EXPECT(heap, "S4 a parked arena is one free block");
	SET(b0->head, b0->head | KL_B_RUN);
	EXPECT(heap, "R0 a run block is one aligned chunk");
	flip_bit(s, (uintptr_t)m0);
	EXPECT(heap, "B5 live medium block has its bit set");
	flip_bit(s, (uintptr_t)m0 + KL_GRAN);
	EXPECT(heap, "B5 no stray bits inside a medium block");
	flip_bit(s, (uintptr_t)m0 + 64 * KL_GRAN);
	EXPECT(heap, "B5 no stray bits inside a medium block");
	SET(b0->head, (b0->head & ~KL_B_ALIGN_MASK) | ((size_t)20 << KL_B_ALIGN_SHIFT));
	EXPECT(heap, "B0 block keeps the alignment it was asked");
	SET(sb->head, sb->head | KL_GRAN);
	EXPECT(heap, "S3 blocks end exactly at the sentinel");
	SET(sb->head, sb->head ^ KL_B_PREV_FREE);
	EXPECT(heap, "B3 sentinel knows the block before");

	/* the TLSF lists */
	unsigned fl, sl;
	struct kl_blk *listed = first_free(h, &fl, &sl);
	require(listed != NULL && fl < KL_FL_COUNT - 1, "a listed free block");
	if (!listed)
		return;
	SET(h->fl_bitmap, h->fl_bitmap ^ (1u << (KL_FL_COUNT - 1)));
	EXPECT(heap, "B4 first-level bit <=> some second-level bit");
	SET(h->fl_bitmap, h->fl_bitmap | (1u << (KL_FL_COUNT - 1)));
	SET(h->sl_bitmap[KL_FL_COUNT - 1], 1);
	EXPECT(heap, "B4 second-level bit <=> list not empty");
	fake_list_head(h, KL_FL_COUNT - 1, 0, (struct kl_blk *)not_ours);
	EXPECT(heap, "B4 listed block lies in an arena of this heap");
	fake_list_head(h, KL_FL_COUNT - 1, 0, b0);
	EXPECT(heap, "B4 listed block is free and not parked");
	fake_list_head(h, KL_FL_COUNT - 1, 0, fb);
	EXPECT(heap, "B4 block is on the list of its size");
	SET(listed->prev_free, listed);
	EXPECT(heap, "B4 free list links both ways");
	ZERO(h->heads);
	ZERO(h->sl_bitmap);
	ZERO(h->fl_bitmap);
	EXPECT(heap, "B4 every free block is listed");
	keel_free(heap, m0);
	keel_free(heap, m2);
}

/* Segments, the registry, regions, parked arenas and the large cache. */
static void segments(struct keel_heap *heap)
{
	struct kl_heap *h = kl_heap_of(heap);
	char *m = keel_malloc(heap, 3000);
	char *big = keel_malloc(heap, 2 * KL_SEG), *gone = keel_malloc(heap, 2 * KL_SEG);
	keel_free(heap, gone); /* kept in the large cache */
	require(keel_heap_add_region(heap, region_buf, sizeof region_buf) == 0, "region added");
	struct kl_seg *s = seg_of(h, m), *ls = seg_of(h, big);
	struct kl_seg *rs = h->regions[0];
	require(h->large_cache != NULL && h->nsegs >= 4 && keel_check(heap, NULL) == 0,
	        "segments set up: arena, large, cached large, region");

	size_t k = kl_reg_key(s->base);
	uintptr_t *slot =
	        &h->reg_root[k >> (2 * KL_REG_NODE_BITS)]
	                    [(k >> KL_REG_NODE_BITS) & (KL_REG_NODE - 1)][k & (KL_REG_NODE - 1)];
	SET(*slot, *slot | KL_REG_CONT);
	EXPECT(heap, "S2 registry names the segment over its range");
	SET(*slot, *slot | KL_REG_LARGE);
	EXPECT(heap, "S2 registry names the segment over its range");
	/* a large block's entry without its tag: the free path would read the
	 * block as an arena */
	size_t lk = kl_reg_key(ls->base);
	uintptr_t *lslot =
	        &h->reg_root[lk >> (2 * KL_REG_NODE_BITS)]
	                    [(lk >> KL_REG_NODE_BITS) & (KL_REG_NODE - 1)][lk & (KL_REG_NODE - 1)];
	require((*lslot & KL_REG_TAGS) == KL_REG_LARGE, "a large block's first entry is tagged");
	SET(*lslot, *lslot & ~KL_REG_TAGS);
	EXPECT(heap, "S2 registry names the segment over its range");
	SET(h->nsegs, h->nsegs - 1);
	EXPECT(heap, "S0 segment list is as long as its count");
	SET(h->segs->next->prev, h->segs->next);
	EXPECT(heap, "S0 segment list links both ways");
	SET(s->magic, s->magic ^ 1);
	EXPECT(heap, "S1 segment magic and owner");
	SET(ls->bytes, ls->bytes + KL_PAGE);
	EXPECT(heap, "S1 large header where its mode puts it");
	SET(h->nregions, 0);
	EXPECT(heap, "S2 region is in the region table");
	SET(rs->kind, 9);
	EXPECT(heap, "S1 segment kind");
	SET(h->parked, s);
	EXPECT(heap, "S4 parked list holds empty arenas only");
	SET(ls->park_next, NULL);
	SET(h->large_cache, ls);
	EXPECT(heap, "S5 large cache holds freed large blocks only");
	SET(h->nlarge_cached, h->nlarge_cached + 1);
	EXPECT(heap, "S5 every cached large block is listed and counted");

	/* the counters */
	SET(h->live_blocks, h->live_blocks + 1);
	EXPECT(heap, "C1 live_blocks counts the live blocks");
	SET(h->requested_bytes, h->requested_bytes + 1);
	EXPECT(heap, "C2 in_use and requested bytes add up");
	SET(h->small_free_bytes, h->small_free_bytes + 16);
	EXPECT(heap, "C3 free bytes add up");
	SET(h->class_live[3], h->class_live[3] + 1);
	EXPECT(heap, "C4 per-class counts add up");
	SET(h->nlarge, h->nlarge + 1);
	EXPECT(heap, "C5 segment counts add up");
	SET(h->source_bytes, h->source_bytes + KL_PAGE);
	EXPECT(heap, "C6 source bytes are segments, registry nodes and unlisted mappings");
	SET(h->region_bytes, h->region_bytes + KL_GRAN);
	EXPECT(heap, "C7 region bytes add up");
	SET(h->quar_n, h->quar_n + 1);
	EXPECT(heap, "Q1 the quarantine holds what it counts");
	keel_free(heap, m);
	keel_free(heap, big);
}

/* B6: a big arena's commit map and its counts (a source that decommits). */
static void big(struct keel_heap *heap)
{
	struct kl_heap *h = kl_heap_of(heap);
	char *p = keel_malloc(heap, 2 * KL_SEG), *q = keel_malloc(heap, 3 * KL_SEG);
	struct kl_seg *s = seg_of(h, p);
	require(s && kl_seg_big(s) && seg_of(h, q) == s && keel_check(heap, NULL) == 0,
	        "two blocks in one big arena");
	uint64_t *m = kl_big_commit(s);
	size_t i = ((uintptr_t)p + KL_SEG - s->base) / KL_PAGE;
	SET(m[i >> 6], m[i >> 6] & ~((uint64_t)1 << (i & 63)));
	EXPECT(heap, "B6 a used block's pages are committed");
	SET(h->big_used, h->big_used + KL_PAGE);
	EXPECT(heap, "B6 big arenas' used and committed bytes add up");
	keel_free(heap, p);
	i = ((uintptr_t)p + KL_SEG - s->base) / KL_PAGE; /* now free: its bit may go */
	SET(m[i >> 6], m[i >> 6] ^ ((uint64_t)1 << (i & 63)));
	EXPECT(heap, "B6 big arenas' used and committed bytes add up");
	keel_free(heap, q);
}

/* A block records the alignment asked, not the one its size gave it: a
 * 2 KiB block (2 KiB-aligned, as a power of two up to a page: a slot of the
 * 2 KiB class) grown by realloc asks for no more than 16 when it moves. */
static void asked_alignment(struct keel_heap *heap)
{
	struct kl_heap *h = kl_heap_of(heap);
	char *p = keel_malloc(heap, 2048), *guard = keel_malloc(heap, 2048);
	struct kl_blockinfo bi;
	require(p && !((uintptr_t)p & 2047) && kl_locate(h, (uintptr_t)p, &bi) == 0 &&
	                bi.kind == KEEL_KIND_SMALL && bi.align == KL_GRAN,
	        "a 2 KiB block is a 2 KiB-aligned slot that records 16");
	char *q = keel_realloc(heap, p, 100000);
	require(q && q != p && kl_blk_align(kl_blk_of(q)) == KL_GRAN,
	        "moved by realloc it still asks for 16");
	keel_free(heap, q);
	keel_free(heap, guard);
	p = keel_aligned_alloc(heap, 4096, 5000);
	q = keel_realloc(heap, p, 300000);
	require(q && !((uintptr_t)q & 4095), "an alignment asked is kept by realloc");
	keel_free(heap, q);
}

/* A run's block is its chunk exactly, so the medium block carved after it
 * starts on the chunk's end: its header shares a cache line with its first
 * bytes, which a free reads. (A run's block began 16 bytes before its chunk
 * once, leaving such a header alone at the end of the line before.) */
static void run_edge(struct keel_heap *heap)
{
	struct kl_heap *h = kl_heap_of(heap);
	void *s = keel_malloc(heap, 64), *m[64];
	struct kl_run *r = kl_run_of(seg_of(h, s), (uintptr_t)s);
	uintptr_t end = kl_run_chunk(r) + KL_RUN;
	int n = 0, found = 0;
	while (n < 64 && !found) { /* the lead before the run may serve first */
		m[n] = keel_malloc(heap, 1500);
		found = m[n] && (uintptr_t)kl_blk_of(m[n]) == end;
		n++;
	}
	require(found && ((uintptr_t)m[n - 1] & 63) == 16,
	        "the medium block after a run starts at its chunk's end, on a cache line");
	while (n > 0)
		keel_free(heap, m[--n]);
	keel_free(heap, s);
}

/* A header merged into its neighbour takes its canary with it (B7), so a
 * free of a pointer where a block once began is caught even when the word
 * before it looks like a live block's head again, the cache's unlocked
 * check included: grown over by realloc, and merged by a free. */
static void stale_headers(struct keel_heap *heap)
{
	static struct keel_cache cache;
	require(keel_cache_init(&cache, heap) == 0, "a cache for stale headers");
	char *x = keel_malloc(heap, 3000), *y = keel_malloc(heap, 3000);
	char *w = keel_malloc(heap, 3000), *a = keel_malloc(heap, 3000);
	char *b = keel_malloc(heap, 3000), *d = keel_malloc(heap, 3000);
	struct kl_blk *by = kl_blk_of(y);
	size_t live_head = by->head;
	require(kl_blk_next(kl_blk_of(x)) == by && kl_blk_next(by) == kl_blk_of(w),
	        "stale headers set up: three neighbours");
	keel_free(heap, y);
	require(keel_realloc(heap, x, 5000) == x && (uintptr_t)by - (uintptr_t)x < 5000,
	        "realloc grows a block over its freed neighbour's header");
	by->head = live_head; /* x's own bytes now */
	require(keel_cache_free(&cache, y) == KEEL_EINTERIOR && keel_check(heap, NULL) == 0,
	        "a free where realloc grew over a header is an interior pointer");
	require(keel_realloc(heap, x, 2000) == x && keel_check(heap, NULL) == 0,
	        "realloc shrinks in place: the tail cut off has its canary");

	struct kl_blk *bb = kl_blk_of(b);
	live_head = bb->head;
	require(kl_blk_next(kl_blk_of(a)) == bb && kl_blk_next(bb) == kl_blk_of(d),
	        "stale headers set up: three neighbours more");
	keel_free(heap, b);
	keel_free(heap, a);   /* merges b's header into a's free block */
	bb->head = live_head; /* written after its free */
	require(keel_cache_free(&cache, b) == KEEL_EDOUBLE && keel_check(heap, NULL) == 0,
	        "a free where a merged header was is a double free");
	keel_cache_flush(&cache);
	keel_free(heap, x);
	keel_free(heap, w);
	keel_free(heap, d);
}

/* A heap whose one arena is left off the segment list, so that what the
 * lists hold is more than the walk found. */
static void unlisted(struct keel_heap *heap)
{
	struct kl_heap *h = kl_heap_of(heap);
	void *p = keel_malloc(heap, 64), *q = keel_malloc(heap, 64);
	keel_free(heap, q); /* a partial run */
	void *e = keel_malloc(heap, 512), *f = keel_malloc(heap, 3000);
	keel_free(heap, e); /* an empty run, cached */
	require(h->nsegs == 1 && h->empty_runs != NULL && keel_check(heap, NULL) == 0,
	        "one arena with a partial run, an empty run and a free block");

	SET(h->segs, NULL);
	EXPECT(heap, "B4 every listed block is a free block");
	SET(h->segs, NULL);
	ZERO(h->heads);
	ZERO(h->sl_bitmap);
	ZERO(h->fl_bitmap);
	EXPECT(heap, "R4 partial lists hold no run twice");
	SET(h->segs, NULL);
	ZERO(h->heads);
	ZERO(h->sl_bitmap);
	ZERO(h->fl_bitmap);
	ZERO(h->partial[kl_small_class(64)]);
	EXPECT(heap, "R4 empty-run cache holds no run twice");
	SET(h->empty_runs, h->partial[kl_small_class(64)]);
	EXPECT(heap, "R4 empty-run cache holds empty runs");
	SET(h->nempty_runs, h->nempty_runs + 1);
	EXPECT(heap, "R4 every partial and empty run is listed once");
	keel_free(heap, p);
	keel_free(heap, f);
}

/* Checked mode: quarantined blocks stay poison, a slot's size field fits. */
static void checked(struct keel_heap *heap)
{
	struct kl_heap *h = kl_heap_of(heap);
	unsigned char *live = keel_malloc(heap, 40);
	unsigned char *qs = keel_malloc(heap, 40), *qm = keel_malloc(heap, 3000);
	unsigned char *ql = keel_malloc(heap, 2 * KL_SEG);
	keel_free(heap, qs);
	keel_free(heap, qm);
	keel_free(heap, ql);
	require(h->quar_n == 3 && keel_check(heap, NULL) == 0,
	        "checked heap set up: a small, a medium and an unguarded large block quarantined");
	size_t csize = h->cls[kl_small_class(40 + KL_SMALL_MARGIN + KL_SMALL_LEN)].size;

	SET(qs[20], 0);
	EXPECT(heap, "Q2 a quarantined slot is still poison");
	SET(qm[2000], 0);
	EXPECT(heap, "Q2 a quarantined block is still poison");
	SET(ql[KL_SEG], 0);
	EXPECT(heap, "Q2 a quarantined block is still poison");
	SET(live[csize - 1], 0xff);
	EXPECT(heap, "Q3 a slot's size field fits it");

	/* written after its free, the large block is reported when it leaves */
	reports = 0;
	ql[10] = 0;
	keel_trim(heap);
	require(reports == 1 && keel_check(heap, NULL) == 0,
	        "a large block written in quarantine is reported as it leaves");
	keel_free(heap, live);
}

int main(void)
{
	static struct keel_heap heap;
	struct keel_config cfg;
	struct keel_source noprot = keel_linux_source;
	noprot.protect = NULL; /* checked large blocks then get poison, not guards */
	struct keel_source nobig = keel_linux_source;
	nobig.decommit = NULL; /* blocks past 256 KiB then get mappings of their own */

	open_heap(&heap, &cfg, &nobig, 0);
	runs(&heap);
	arena(&heap);
	segments(&heap);
	require(keel_check(&heap, NULL) == 0 && keel_heap_destroy(&heap) == 0, "heap destroyed");

	open_heap(&heap, &cfg, &keel_linux_source, 0);
	big(&heap);
	asked_alignment(&heap);
	require(keel_check(&heap, NULL) == 0 && keel_heap_destroy(&heap) == 0, "heap destroyed");

	open_heap(&heap, &cfg, &nobig, 0);
	run_edge(&heap);
	require(keel_check(&heap, NULL) == 0 && keel_heap_destroy(&heap) == 0, "heap destroyed");

	open_heap(&heap, &cfg, &nobig, 0);
	stale_headers(&heap);
	require(keel_check(&heap, NULL) == 0 && keel_heap_destroy(&heap) == 0, "heap destroyed");

	open_heap(&heap, &cfg, &nobig, 0);
	unlisted(&heap);
	require(keel_check(&heap, NULL) == 0 && keel_heap_destroy(&heap) == 0, "heap destroyed");

	open_heap(&heap, &cfg, &noprot, KEEL_HEAP_CHECKED);
	checked(&heap);
	require(keel_check(&heap, NULL) == 0 && keel_heap_destroy(&heap) == 0, "heap destroyed");

	printf("1..%u\n", n_tests);
	return n_failed ? 1 : 0;
}
