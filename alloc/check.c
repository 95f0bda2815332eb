/* check.c: keel_check, which tests every invariant written at the data
 * structures in internal.h (labels B*, R*, S*, and the counters), and
 * keel_walk. Both hold the lock and cost O(heap size); neither changes a
 * thing, so they are safe on a heap that is already corrupt. */
#include "internal.h"

struct tally {
	size_t live, in_use, requested, medium_free, medium_free_blocks, small_free;
	size_t class_live[KL_NCLASSES];
	size_t runs_partial, runs_empty, empty_bytes, source_bytes, region_bytes, nlarge, nsegs;
	size_t nlarge_cached, large_cached_bytes;
	size_t quar_n, quar_bytes;
	size_t big_used, big_committed;
};

struct checker {
	struct kl_heap *h;
	struct keel_fault *fault;
	struct tally t;
};

static int fail(struct checker *c, const char *what, const void *where)
{
	if (c->fault) {
		c->fault->what = what;
		c->fault->where = where;
	}
	return KEEL_ECORRUPT;
}

/* R1-R4 for the run at chunk address u. */
static int check_run(struct checker *c, struct kl_seg *s, struct kl_run *r, uintptr_t u)
{
	struct kl_heap *h = c->h;
	if (r->cls == 0 || r->cls > KL_NCLASSES || r->seg != s)
		return fail(c, "R0 run header names a class and its segment", (void *)u);
	struct kl_class *cl = &h->cls[r->cls - 1];
	uintptr_t base = u + cl->first; /* slot 0 */
	unsigned list = r->where & KL_RUN_LIST;
	if (list != KL_RUN_EMPTY && r->nslots != kl_class_nslots(cl))
		return fail(c, "R0 run slot count matches its class", (void *)u);
	if (r->bump > r->nslots || r->nfree > r->nslots)
		return fail(c, "R1 run counts within nslots", (void *)u);
	size_t listed = 0;
	for (void *f = r->free; f; f = (void *)kl_link(h, (uintptr_t)f, *(uintptr_t *)f)) {
		uintptr_t off = (uintptr_t)f - base;
		if ((uintptr_t)f < base || off >= (size_t)r->bump * cl->size || off % cl->size)
			return fail(c, "R3 free-list link is a handed-out slot of its run", f);
		if (kl_bit_get(s, (uintptr_t)f))
			return fail(c, "R2 slot on the free list has its bit clear", f);
		if (++listed > r->nslots)
			return fail(c, "R3 free list has no cycle", f);
	}
	if (r->nfree != listed + (size_t)(r->nslots - r->bump))
		return fail(c, "R1 nfree == listed + never used", (void *)u);
	/* Every set bit of the run's chunk, a word of the bitmap at a time: a
	 * slot's start (R2); anything else, before slot 0 (the block's header)
	 * or in a slot, is a stray bit (B5), which the free path would take for
	 * a slot's start (kl_slot_live). */
	size_t used = 0, live = 0, live_bytes = 0;
	size_t first = kl_bit_index(s, u), last = kl_bit_index(s, u + KL_RUN);
	for (size_t w = first >> 6; w <= (last - 1) >> 6; w++) {
		uint64_t word = s->bits[w];
		if (w == first >> 6)
			word &= ~(uint64_t)0 << (first & 63);
		if (w == (last - 1) >> 6 && (last & 63))
			word &= ~(~(uint64_t)0 << (last & 63));
		for (; word; word &= word - 1) {
			uintptr_t p = s->cbase + (((w << 6) + kl_ffs(word)) << KL_GRAN_SHIFT);
			if (p < base)
				return fail(c, "B5 no bits before a run's slot 0", (void *)p);
			size_t off = p - base, i = kl_slot_index(cl, off);
			size_t rem = off - i * cl->size;
			if (i >= r->nslots || rem)
				return fail(c, "B5 no stray bits inside a slot", (void *)p);
			if (i >= r->bump)
				return fail(c, "R2 never-used slot has its bit clear", (void *)p);
			used++;
			int state = h->checked ? kl_chk_state(h, s, p) : KL_CHK_LIVE;
			if (state == KL_CHK_RETIRED)
				continue;
			if (state == KL_CHK_QUARANTINED) {
				if (!kl_chk_quarantined_ok(h, s, p))
					return fail(c, "Q2 a quarantined slot is still poison",
					            (void *)p);
				c->t.quar_n++;
				c->t.quar_bytes += cl->size;
			} else if (h->checked) {
				size_t len = kl_chk_small_len(p, cl->size);
				if (len + KL_SMALL_MARGIN + KL_SMALL_LEN > cl->size)
					return fail(c, "Q3 a slot's size field fits it", (void *)p);
				if (!kl_chk_canary_ok(h, p, len))
					return fail(c, "Q3 canary after a live block intact",
					            (void *)p);
				live++;
				live_bytes += len;
			} else {
				live++;
				live_bytes += cl->size;
			}
		}
	}
	if (used != (size_t)r->nslots - r->nfree)
		return fail(c, "R2 live slots == bits set", (void *)u);
	int want = r->nfree == r->nslots ? KL_RUN_EMPTY : r->nfree ? KL_RUN_PARTIAL : KL_RUN_FULL;
	if (list != (unsigned)want || (r->where & ~(KL_RUN_LIST | KL_RUN_ALIGNED)) ||
	    (want == KL_RUN_EMPTY && (r->where & KL_RUN_ALIGNED)))
		return fail(c, "R4 run is on the list its fill says", (void *)u);
	if (want == KL_RUN_PARTIAL)
		c->t.runs_partial++;
	if (want == KL_RUN_EMPTY)
		c->t.runs_empty++;
	else
		c->t.small_free += (size_t)r->nfree * cl->size;
	c->t.class_live[r->cls - 1] += live;
	c->t.live += live;
	c->t.in_use += live_bytes;
	c->t.requested += live_bytes;
	return 0;
}

/* No bit set for the granules of [from, to): a word of the bitmap at a
 * time where the range covers it whole. */
static int bits_clear(const struct kl_seg *s, uintptr_t from, uintptr_t to)
{
	size_t i = kl_bit_index(s, from), end = kl_bit_index(s, to);
	for (; i < end && (i & 63); i++)
		if ((s->bits[i >> 6] >> (i & 63)) & 1)
			return 0;
	for (; i + 64 <= end; i += 64)
		if (s->bits[i >> 6])
			return 0;
	for (; i < end; i++)
		if ((s->bits[i >> 6] >> (i & 63)) & 1)
			return 0;
	return 1;
}

/* B6: every page of the used block b of big arena s (and of the header after
 * it) has its commit bit set. */
static int big_used_committed(const struct kl_seg *s, uintptr_t b, size_t size)
{
	const uint64_t *m = kl_big_commit(s);
	for (uintptr_t a = kl_align_down(b, KL_PAGE); a < b + size + KL_BLK_HDR; a += KL_PAGE) {
		size_t i = (a - s->base) / KL_PAGE;
		if (!((m[i >> 6] >> (i & 63)) & 1))
			return 0;
	}
	return 1;
}

/* S3 and B1-B7 over one arena. */
static int check_arena(struct checker *c, struct kl_seg *s)
{
	const struct kl_heap *h = c->h;
	uintptr_t sentinel = s->arena_end - KL_BLK_HDR;
	if (s->arena < s->base || s->arena >= sentinel || s->arena_end > s->base + s->bytes)
		return fail(c, "S3 arena lies inside its segment", s);
	if (!bits_clear(s, s->base, s->arena))
		return fail(c, "B5 no bits over segment metadata", s);
	struct kl_blk *b = (struct kl_blk *)s->arena;
	size_t prev_size = 0;
	int prev_free = 0;
	size_t nruns = 0;
	while ((uintptr_t)b < sentinel) {
		size_t size = kl_blk_size(b);
		if (size < KL_MIN_BLOCK || size > sentinel - (uintptr_t)b)
			return fail(c, "B1 block size fits the arena", b);
		if (!!(b->head & KL_B_PREV_FREE) != prev_free)
			return fail(c, "B3 PREV_FREE matches the block before", b);
		if (prev_free && b->prev_size != prev_size)
			return fail(c, "B3 prev_size matches the free block before", b);
		if (!prev_free && b->prev_size != kl_hdr_canary(h->secret, b))
			return fail(c, "B7 a header after a used block holds its canary", b);
		uintptr_t u = (uintptr_t)kl_user_of(b);
		if (kl_seg_big(s) && !(b->head & KL_B_FREE)) {
			if (!big_used_committed(s, (uintptr_t)b, size))
				return fail(c, "B6 a used block's pages are committed", b);
			c->t.big_used += size;
		}
		if (b->head & KL_B_FREE) {
			if (prev_free)
				return fail(c, "B2 no two free neighbours", b);
			if (b->head & KL_B_RUN)
				return fail(c, "B4 a free block holds no run", b);
			if (!bits_clear(s, u, (uintptr_t)b + size))
				return fail(c, "B5 free block has no bits set", b);
			int whole = (uintptr_t)b == s->arena && (uintptr_t)b + size == sentinel;
			if (s->is_empty) {
				if (!whole)
					return fail(c, "S4 a parked arena is one free block", b);
				c->t.empty_bytes += s->bytes;
			} else {
				/* a big arena keeps its dirty pages (B6) */
				if (whole && s->kind == KL_SEG_ARENA && !kl_seg_big(s))
					return fail(c, "S4 an arena left one free block is parked",
					            b);
				c->t.medium_free += size;
				c->t.medium_free_blocks++;
			}
		} else if (b->head & KL_B_RUN) {
			uintptr_t chunk = (uintptr_t)b;
			if (size != KL_RUN || (chunk & (KL_RUN - 1)))
				return fail(c, "R0 a run block is one aligned chunk", b);
			int err = check_run(c, s, kl_run_of(s, chunk), chunk);
			if (err)
				return err;
			nruns++;
		} else {
			if (!kl_bit_get(s, u))
				return fail(c, "B5 live medium block has its bit set", b);
			if (!bits_clear(s, u + KL_GRAN, (uintptr_t)b + size))
				return fail(c, "B5 no stray bits inside a medium block", b);
			if (u & (kl_blk_align(b) - 1))
				return fail(c, "B0 block keeps the alignment it was asked", b);
			size_t usable = size - KL_BLK_HDR, asked = usable - kl_blk_slack(b);
			int state = h->checked ? kl_chk_state(h, s, u) : KL_CHK_LIVE;
			if (state == KL_CHK_RETIRED) {
				/* kept out of use, in no count */
			} else if (b->head & KL_B_QUAR) {
				if (!h->checked || !kl_chk_quarantined_ok(h, s, u))
					return fail(c, "Q2 a quarantined block is still poison", b);
				c->t.quar_n++;
				c->t.quar_bytes += usable;
			} else if (h->checked) {
				if (!kl_chk_header_ok(h, s, b))
					return fail(c, "Q3 a live block's header is intact", b);
				if (!kl_chk_canary_ok(h, u, asked))
					return fail(c, "Q3 canary after a live block intact", b);
				c->t.live++;
				c->t.in_use += asked;
				c->t.requested += asked;
			} else {
				c->t.live++;
				c->t.in_use += usable;
				c->t.requested += asked;
			}
		}
		prev_free = !!(b->head & KL_B_FREE);
		prev_size = size;
		b = (struct kl_blk *)(void *)((char *)b + size);
	}
	if ((uintptr_t)b != sentinel || kl_blk_size(b) != 0 || (b->head & KL_B_FREE))
		return fail(c, "S3 blocks end exactly at the sentinel", b);
	if (kl_seg_big(s))
		for (size_t i = 0; i < KL_BIG / KL_PAGE / 64; i++)
			c->t.big_committed += KL_PAGE * (size_t)kl_popcount(kl_big_commit(s)[i]);
	if (!!(b->head & KL_B_PREV_FREE) != prev_free || (prev_free && b->prev_size != prev_size))
		return fail(c, "B3 sentinel knows the block before", b);
	if (!prev_free && b->prev_size != kl_hdr_canary(h->secret, b))
		return fail(c, "B7 a header after a used block holds its canary", b);
	size_t marked = 0;
	for (size_t i = 0; i < s->nchunks; i++)
		if (s->runs[i].cls)
			marked++;
	if (marked != nruns)
		return fail(c, "R0 side table marks exactly the run chunks", s);
	for (size_t i = 0; i < s->nchunks; i++)
		if (kl_cmap(s)[i] != s->runs[i].cls)
			return fail(c, "R5 class map matches the side table", s);
	return 0;
}

static int check_registry(struct checker *c, struct kl_seg *s)
{
	for (uintptr_t a = s->base; a < s->base + s->bytes; a += KL_SEG) {
		int large = s->kind != KL_SEG_ARENA;
		uintptr_t want = (uintptr_t)s | (large ? KL_REG_LARGE : 0) |
		                 (large && a != s->base ? KL_REG_CONT : 0);
		if (kl_reg_get(c->h, a) != want)
			return fail(c, "S2 registry names the segment over its range", (void *)a);
	}
	return 0;
}

static int check_segments(struct checker *c)
{
	struct kl_heap *h = c->h;
	size_t n = 0;
	for (struct kl_seg *s = h->segs; s; s = s->next) {
		if (++n > h->nsegs)
			return fail(c, "S0 segment list is as long as its count", s);
		if (s->next && s->next->prev != s)
			return fail(c, "S0 segment list links both ways", s);
		if (s->magic != (KL_SEG_MAGIC ^ (uintptr_t)s) || s->heap != h)
			return fail(c, "S1 segment magic and owner", s);
		int err = 0;
		switch (s->kind) {
		case KL_SEG_LARGE:
			if (s->is_empty && h->checked) {
				if (!kl_chk_quarantined_ok(h, s, s->user))
					return fail(c, "Q2 a quarantined block is still poison",
					            (void *)s->user);
				c->t.quar_n++;
				c->t.quar_bytes += s->usable;
			} else if (s->is_empty) {
				c->t.nlarge_cached++;
				c->t.large_cached_bytes += s->bytes;
			} else {
				c->t.nlarge++;
				c->t.live++;
				c->t.in_use += kl_large_usable(s);
				c->t.requested += s->requested;
			}
			c->t.source_bytes += s->bytes;
			if ((uintptr_t)s !=
			    (h->checked ? s->base + KL_PAGE : s->base + s->bytes - KL_LARGE_HDR))
				return fail(c, "S1 large header where its mode puts it", s);
			if (h->checked && !s->is_empty && !kl_chk_canary_ok(h, s->user, s->usable))
				return fail(c, "Q3 canary after a live block intact",
				            (void *)s->user);
			err = check_registry(c, s);
			break;
		case KL_SEG_ARENA:
			c->t.source_bytes += s->bytes;
			err = check_registry(c, s);
			if (!err)
				err = check_arena(c, s);
			break;
		case KL_SEG_REGION: {
			int listed = 0;
			for (unsigned i = 0; i < h->nregions; i++)
				listed |= h->regions[i] == s;
			if (!listed)
				return fail(c, "S2 region is in the region table", s);
			c->t.region_bytes += s->bytes;
			err = check_arena(c, s);
			break;
		}
		default:
			return fail(c, "S1 segment kind", s);
		}
		if (err)
			return err;
	}
	c->t.nsegs = n;
	size_t parked = 0;
	for (struct kl_seg *s = h->parked; s; s = s->park_next)
		if (!s->is_empty || s->kind != KL_SEG_ARENA || ++parked > n)
			return fail(c, "S4 parked list holds empty arenas only", s);
	size_t cached = 0;
	for (struct kl_seg *s = h->large_cache; s; s = s->park_next)
		if (!s->is_empty || s->kind != KL_SEG_LARGE || ++cached > n)
			return fail(c, "S5 large cache holds freed large blocks only", s);
	if (cached != c->t.nlarge_cached || cached != h->nlarge_cached ||
	    c->t.large_cached_bytes != h->large_cached_bytes)
		return fail(c, "S5 every cached large block is listed and counted", NULL);
	return 0;
}

/* B4 and the two-level bitmaps. */
static int check_lists(struct checker *c)
{
	struct kl_heap *h = c->h;
	size_t blocks = 0, bytes = 0;
	for (unsigned fl = 0; fl < KL_FL_COUNT; fl++) {
		if (!!(h->fl_bitmap & (1u << fl)) != !!h->sl_bitmap[fl])
			return fail(c, "B4 first-level bit <=> some second-level bit",
			            &h->sl_bitmap[fl]);
		for (unsigned sl = 0; sl < KL_SL_COUNT; sl++) {
			struct kl_blk *b = h->heads[fl][sl];
			if (!!(h->sl_bitmap[fl] & (1u << sl)) != !!b)
				return fail(c, "B4 second-level bit <=> list not empty",
				            &h->heads[fl][sl]);
			struct kl_blk *prev = NULL;
			for (; b; prev = b, b = b->next_free) {
				struct kl_where w = kl_seg_find(h, (uintptr_t)b);
				if (!w.seg || w.seg->kind == KL_SEG_LARGE ||
				    (uintptr_t)b < w.seg->arena || (uintptr_t)b >= w.seg->arena_end)
					return fail(c,
					            "B4 listed block lies in an arena of this heap",
					            b);
				if (!(b->head & KL_B_FREE) || w.seg->is_empty)
					return fail(c, "B4 listed block is free and not parked", b);
				unsigned f, s;
				kl_fit_mapping(kl_blk_size(b), &f, &s);
				if (f != fl || s != sl)
					return fail(c, "B4 block is on the list of its size", b);
				if (b->prev_free != prev)
					return fail(c, "B4 free list links both ways", b);
				if (++blocks > c->t.medium_free_blocks)
					return fail(c, "B4 every listed block is a free block", b);
				bytes += kl_blk_size(b);
			}
		}
	}
	if (blocks != c->t.medium_free_blocks || bytes != c->t.medium_free)
		return fail(c, "B4 every free block is listed", NULL);
	return 0;
}

static int check_run_lists(struct checker *c)
{
	struct kl_heap *h = c->h;
	size_t partial = 0, empty = 0;
	for (unsigned i = 0; i < KL_NCLASSES; i++) {
		struct kl_run *prev = NULL;
		for (struct kl_run *r = h->partial[i]; r; prev = r, r = r->next) {
			if ((r->where & KL_RUN_LIST) != KL_RUN_PARTIAL || r->cls != i + 1 ||
			    r->prev != prev)
				return fail(c, "R4 partial list holds partial runs of its class",
				            r);
			if (++partial > c->t.runs_partial)
				return fail(c, "R4 partial lists hold no run twice", r);
		}
	}
	for (struct kl_run *r = h->empty_runs; r; r = r->next) {
		if (r->where != KL_RUN_EMPTY)
			return fail(c, "R4 empty-run cache holds empty runs", r);
		if (++empty > c->t.runs_empty)
			return fail(c, "R4 empty-run cache holds no run twice", r);
	}
	if (partial != c->t.runs_partial || empty != c->t.runs_empty || empty != h->nempty_runs)
		return fail(c, "R4 every partial and empty run is listed once", NULL);
	return 0;
}

static int check_counters(struct checker *c)
{
	struct kl_heap *h = c->h;
	struct tally *t = &c->t;
	if (t->live != h->live_blocks)
		return fail(c, "C1 live_blocks counts the live blocks", NULL);
	if (t->in_use != h->in_use_bytes || t->requested != h->requested_bytes)
		return fail(c, "C2 in_use and requested bytes add up", NULL);
	if (t->medium_free != h->medium_free_bytes || t->small_free != h->small_free_bytes)
		return fail(c, "C3 free bytes add up", NULL);
	for (unsigned i = 0; i < KL_NCLASSES; i++)
		if (t->class_live[i] != h->class_live[i])
			return fail(c, "C4 per-class counts add up", &h->cls[i]);
	if (t->empty_bytes != h->empty_bytes || t->nlarge != h->nlarge || t->nsegs != h->nsegs)
		return fail(c, "C5 segment counts add up", NULL);
	if (t->source_bytes + h->reg_nodes * KL_REG_NODE_BYTES + h->unlisted_bytes !=
	    h->source_bytes)
		return fail(c, "C6 source bytes are segments, registry nodes and unlisted mappings",
		            NULL);
	if (t->region_bytes != h->region_bytes)
		return fail(c, "C7 region bytes add up", NULL);
	if (t->quar_n != h->quar_n + h->quar_pending ||
	    t->quar_bytes != h->quar_bytes + h->quar_pending_bytes)
		return fail(c, "Q1 the quarantine holds what it counts", NULL);
	if (t->big_used != h->big_used || t->big_committed != h->big_committed)
		return fail(c, "B6 big arenas' used and committed bytes add up", NULL);
	return 0;
}

int keel_check(struct keel_heap *heap, struct keel_fault *fault)
{
	KL_VG_SCOPE;
	struct kl_heap *h = kl_heap_of(heap);
	struct checker c;
	kl_memset(&c, 0, sizeof(c));
	c.h = h;
	c.fault = fault;
	if (fault) {
		fault->what = NULL;
		fault->where = NULL;
	}
	if (!h || h->magic != KL_HEAP_MAGIC)
		return fail(&c, "H1 heap is initialised", h);
	uintptr_t tok = kl_lock(h);
	int err = check_segments(&c);
	if (!err)
		err = check_lists(&c);
	if (!err)
		err = check_run_lists(&c);
	if (!err)
		err = check_counters(&c);
	kl_unlock(h, tok);
	return err;
}

static int walk_arena(const struct kl_heap *h, struct kl_seg *s,
                      int (*visit)(const struct keel_block *, void *), void *arg)
{
	struct keel_block kb;
	uintptr_t sentinel = s->arena_end - KL_BLK_HDR;
	for (struct kl_blk *b = (struct kl_blk *)s->arena; (uintptr_t)b < sentinel;
	     b = kl_blk_next(b)) {
		uintptr_t u = (uintptr_t)kl_user_of(b);
		int rc;
		if (b->head & KL_B_RUN) {
			struct kl_run *r = kl_run_of(s, (uintptr_t)b);
			const struct kl_class *cl = &h->cls[r->cls - 1];
			size_t size = cl->size;
			for (size_t i = 0; i < r->bump; i++) {
				uintptr_t p = kl_run_base(r, cl) + i * size;
				kb.p = (void *)p;
				kb.size = size;
				kb.is_free = !kl_bit_get(s, p);
				if (h->checked && !kb.is_free) {
					kb.is_free = kl_chk_state(h, s, p) != KL_CHK_LIVE;
					kb.size = kb.is_free ? size : kl_chk_small_len(p, size);
				}
				kb.kind = KEEL_KIND_SMALL;
				if ((rc = visit(&kb, arg)) != 0)
					return rc;
			}
			continue;
		}
		kb.p = (void *)u;
		kb.size = kl_blk_size(b) - KL_BLK_HDR;
		kb.is_free = !!(b->head & (KL_B_FREE | KL_B_QUAR));
		if (h->checked && !kb.is_free)
			kb.size -= kl_blk_slack(b);
		kb.kind = KEEL_KIND_MEDIUM;
		if ((rc = visit(&kb, arg)) != 0)
			return rc;
	}
	return 0;
}

int keel_walk(struct keel_heap *heap, int (*visit)(const struct keel_block *b, void *arg),
              void *arg)
{
	KL_VG_SCOPE;
	struct kl_heap *h = kl_heap_of(heap);
	if (!h || h->magic != KL_HEAP_MAGIC || !visit)
		return KEEL_EINVAL;
	uintptr_t tok = kl_lock(h);
	int rc = 0;
	for (struct kl_seg *s = h->segs; s && !rc; s = s->next) {
		if (s->kind == KL_SEG_LARGE) {
			struct keel_block kb = { (void *)s->user, kl_large_usable(s), s->is_empty,
				                 KEEL_KIND_LARGE };
			rc = visit(&kb, arg);
		} else {
			rc = walk_arena(h, s, visit, arg);
		}
	}
	kl_unlock(h, tok);
	return rc;
}
