/* medium.c: blocks above the small classes, and the runs that hold small
 * classes, come from a two-level segregated fit (TLSF): O(1) search through
 * two bitmaps, boundary tags, immediate coalescing. Sits under small.c and
 * over segment.c, which feeds it whole arenas. */
#include "internal.h"

/* First level: the power of two of a size; second level: 16 slices of it.
 * Sizes below 256 map linearly, 16 bytes a list. */
void kl_fit_mapping(size_t size, unsigned *fl, unsigned *sl)
{
	if (size < ((size_t)1 << KL_FL_SHIFT)) {
		*fl = 0;
		*sl = (unsigned)(size >> KL_GRAN_SHIFT);
	} else {
		unsigned f = kl_fls(size);
		*fl = f - (KL_FL_SHIFT - 1);
		*sl = (unsigned)(size >> (f - KL_SL_SHIFT)) & (KL_SL_COUNT - 1);
	}
}

void kl_fit_insert(struct kl_heap *h, struct kl_blk *b)
{
	unsigned fl, sl;
	kl_fit_mapping(kl_blk_size(b), &fl, &sl);
	KL_ASSERT(fl < KL_FL_COUNT);
	struct kl_blk *head = h->heads[fl][sl];
	b->next_free = head;
	b->prev_free = NULL;
	if (head)
		head->prev_free = b;
	h->heads[fl][sl] = b;
	h->fl_bitmap |= 1u << fl;
	h->sl_bitmap[fl] = (uint16_t)(h->sl_bitmap[fl] | (1u << sl));
}

void kl_fit_remove(struct kl_heap *h, struct kl_blk *b)
{
	unsigned fl, sl;
	kl_fit_mapping(kl_blk_size(b), &fl, &sl);
	if (b->prev_free)
		b->prev_free->next_free = b->next_free;
	else
		h->heads[fl][sl] = b->next_free;
	if (b->next_free)
		b->next_free->prev_free = b->prev_free;
	if (!h->heads[fl][sl]) {
		h->sl_bitmap[fl] = (uint16_t)(h->sl_bitmap[fl] & ~(1u << sl));
		if (!h->sl_bitmap[fl])
			h->fl_bitmap &= ~(1u << fl);
	}
}

/* The head of the first list whose every block holds size bytes. */
static struct kl_blk *fit_find(struct kl_heap *h, size_t size)
{
	if (size >= ((size_t)1 << KL_FL_SHIFT))
		size += ((size_t)1 << (kl_fls(size) - KL_SL_SHIFT)) - 1;
	if (size > KL_ARENA_MAX)
		return NULL;
	unsigned fl, sl;
	kl_fit_mapping(size, &fl, &sl);
	uint32_t slmap = h->sl_bitmap[fl] & (~0u << sl);
	if (!slmap) {
		uint32_t flmap = h->fl_bitmap & (~0u << (fl + 1));
		if (!flmap)
			return NULL;
		fl = kl_ffs(flmap);
		slmap = h->sl_bitmap[fl];
	}
	return h->heads[fl][kl_ffs(slmap)];
}

/* Cut b (free, out of the lists, to be used) to size, returning the tail
 * to the lists; the header after b gets b's canary (B7). */
static void fit_split_tail(struct kl_heap *h, struct kl_blk *b, size_t size)
{
	size_t bsize = kl_blk_size(b);
	struct kl_blk *next = kl_blk_next(b);
	if (bsize - size >= KL_MIN_BLOCK) {
		struct kl_blk *r = (struct kl_blk *)(void *)((char *)b + size);
		size_t rsize = bsize - size;
		r->prev_size = kl_hdr_canary(h->secret, r);
		r->head = rsize | KL_B_FREE;
		kl_prev_store(next, rsize);
		kl_head_store(next, next->head | KL_B_PREV_FREE);
		b->head = (b->head & ~KL_B_SIZE_MASK) | size;
		kl_fit_insert(h, r);
		h->medium_free_bytes += rsize;
	} else {
		kl_prev_store(next, kl_hdr_canary(h->secret, next));
		kl_head_store(next, next->head & ~KL_B_PREV_FREE);
	}
}

/* The lead kl_fit_take cuts off the free block b so that the address at
 * bytes into the block taken is aligned to align: none, or a free block of
 * its own (KL_MIN_BLOCK at least). */
static size_t fit_gap(const struct kl_blk *b, size_t align, size_t at)
{
	size_t gap = kl_align_up((uintptr_t)b + at, align) - at - (uintptr_t)b;
	return gap != 0 && gap < KL_MIN_BLOCK ? gap + align : gap;
}

/* Whether the free block b holds size bytes placed as kl_fit_take would
 * cut them. */
static int fit_room(const struct kl_blk *b, size_t size, size_t align, size_t at)
{
	return kl_blk_size(b) >= fit_gap(b, align, at) + size;
}

/* Take a block of size bytes (header included) whose address at bytes in is
 * aligned to align: its user pointer for at == KL_BLK_HDR, the block itself
 * (a run's chunk) for 0. Returns it marked used (flags clear), or NULL. O(1).
 * A big request (past KL_MEDIUM_MAX) is placed by a bounded best fit: the
 * smallest of the first KL_FIT_LOOK blocks of its own list that hold it
 * (its size is not rounded to the list's lower bound, so the search for a
 * list whose every block holds it would pass over a block freed by a
 * request of the same size), else the smallest of the first KL_FIT_LOOK of
 * the list that search finds. With random sizes of 128 KiB to 8 MiB (the
 * large workload) taking the list's head instead left holes that held the
 * peak at 99 MB where this holds 79 (glibc 78), and faulted 25% more pages.
 * (Preferring the room the last big free left, whose pages were just
 * touched, gained nothing and cost realloc 5% of its peak.) */
#define KL_FIT_LOOK 8
struct kl_blk *kl_fit_take(struct kl_heap *h, size_t size, size_t align, size_t at)
{
	KL_ASSERT(size >= KL_MIN_BLOCK && size % KL_GRAN == 0);
	size_t want = kl_fit_want(size, align);
	struct kl_blk *b = NULL;
	if (size > KL_MEDIUM_MAX && want <= KL_ARENA_MAX) {
		unsigned fl, sl;
		kl_fit_mapping(size, &fl, &sl);
		unsigned look = 0;
		for (struct kl_blk *x = h->heads[fl][sl]; x && look < KL_FIT_LOOK;
		     x = x->next_free, look++)
			if (fit_room(x, size, align, at) && (!b || kl_blk_size(x) < kl_blk_size(b)))
				b = x;
	}
	if (!b) {
		b = fit_find(h, want); /* every block of its list holds want */
		unsigned look = 0;
		for (struct kl_blk *x = b && size > KL_MEDIUM_MAX ? b->next_free : NULL;
		     x && look < KL_FIT_LOOK; x = x->next_free, look++)
			if (kl_blk_size(x) < kl_blk_size(b))
				b = x;
	}
	if (!b)
		return NULL;
	kl_fit_remove(h, b);
	h->medium_free_bytes -= kl_blk_size(b);
	if (align > KL_GRAN) {
		size_t gap = fit_gap(b, align, at);
		if (gap) {
			/* The lead becomes a free block of its own; its neighbour
			 * before is used (B2), so it cannot coalesce. */
			size_t bsize = kl_blk_size(b);
			struct kl_blk *nb = (struct kl_blk *)(void *)((char *)b + gap);
			nb->prev_size = gap;
			nb->head = (bsize - gap) | KL_B_PREV_FREE;
			b->head = (b->head & KL_B_PREV_FREE) | gap | KL_B_FREE;
			kl_fit_insert(h, b);
			h->medium_free_bytes += gap;
			b = nb;
		}
	}
	fit_split_tail(h, b, size);
	b->head &= KL_B_SIZE_MASK | KL_B_PREV_FREE;
	KL_ASSERT((b->head & KL_B_PREV_FREE) || b->prev_size == kl_hdr_canary(h->secret, b));
	return b;
}

/* The free pages of big arenas pass dirty_max: decommit the largest free
 * blocks that hold pages. They are the last a good fit takes, so the pages
 * least likely to be asked for soon. Looks at KL_COOL_LOOK blocks at most,
 * from the highest list down. */
#define KL_COOL_LOOK 16
static void fit_cool(struct kl_heap *h)
{
	unsigned look = 0;
	for (int fl = KL_FL_COUNT - 1; fl >= 0; fl--) {
		if (!(h->fl_bitmap & (1u << fl)))
			continue;
		for (int sl = KL_SL_COUNT - 1; sl >= 0; sl--) {
			for (struct kl_blk *b = h->heads[fl][sl]; b; b = b->next_free) {
				if (h->big_committed <= h->big_used + h->dirty_max ||
				    ++look > KL_COOL_LOOK)
					return;
				struct kl_seg *s = kl_seg_find(h, (uintptr_t)b).seg;
				if (s && kl_seg_big(s))
					kl_big_decommit(h, s, b);
			}
		}
	}
}

/* Give the used block b of arena segment s back: coalesce with free
 * neighbours, list it, and tell segment.c if the whole arena is free. In a
 * big arena, when the free pages held pass dirty_max, the largest free
 * blocks' pages go back through decommit: O(1), but for the calls to the
 * source. */
void kl_fit_give(struct kl_heap *h, struct kl_op *op, struct kl_seg *s, struct kl_blk *b)
{
	size_t size = kl_blk_size(b);
	int big = kl_seg_big(s);
	if (big)
		h->big_used -= size;
	h->medium_free_bytes += size;
	if (b->head & KL_B_PREV_FREE) {
		struct kl_blk *p = (struct kl_blk *)(void *)((char *)b - b->prev_size);
		kl_fit_remove(h, p);
		size += kl_blk_size(p);
		b = p;
	}
	struct kl_blk *n = (struct kl_blk *)(void *)((char *)b + size);
	if (n->head & KL_B_FREE) {
		kl_fit_remove(h, n);
		n->prev_size = 0; /* B7: its canary goes with its header */
		size += kl_blk_size(n);
		n = (struct kl_blk *)(void *)((char *)b + size);
	}
	b->head = size | KL_B_FREE;
	kl_head_store(n, n->head | KL_B_PREV_FREE);
	kl_prev_store(n, size);
	kl_fit_insert(h, b);
	if (big && h->big_committed > h->big_used + h->dirty_max)
		fit_cool(h);
	if ((uintptr_t)b == s->arena && (uintptr_t)n == s->arena_end - KL_BLK_HDR)
		kl_seg_now_empty(h, op, s);
}

void kl_medium_set_ask(struct kl_blk *b, size_t size, size_t align)
{
	size_t usable = kl_medium_usable(b);
	size_t slack = usable - size;
	if (slack > KL_B_SLACK_MAX)
		slack = KL_B_SLACK_MAX;
	b->head = (b->head & (KL_B_SIZE_MASK | KL_B_PREV_FREE | KL_B_FREE | KL_B_RUN)) |
	          ((size_t)kl_fls(align) << KL_B_ALIGN_SHIFT) | (slack << KL_B_SLACK_SHIFT);
}

/* A medium block of size usable bytes aligned to align (a power of two >= 16),
 * or NULL; from a new segment too if grow is set. The user pointer's bit is
 * set (B5); the caller records what was asked (kl_medium_set_ask), which
 * may be less than the placement align. */
void *kl_medium_alloc(struct kl_heap *h, struct kl_op *op, size_t size, size_t align, int grow)
{
	size_t bsize = kl_medium_need(size);
	struct kl_blk *b = grow ? kl_fit_alloc_grow(h, op, bsize, align, KL_BLK_HDR)
	                        : kl_fit_take(h, bsize, align, KL_BLK_HDR);
	if (!b)
		return NULL;
	struct kl_where w = kl_seg_find(h, (uintptr_t)kl_user_of(b));
	KL_ASSERT(w.seg != NULL);
	kl_bit_set(w.seg, (uintptr_t)kl_user_of(b));
	if (kl_seg_big(w.seg))
		kl_big_take(h, w.seg, (uintptr_t)b, (uintptr_t)b + kl_blk_size(b));
	return kl_user_of(b);
}

size_t kl_medium_usable(const struct kl_blk *b)
{
	return kl_blk_size(b) - KL_BLK_HDR;
}

/* Why a free of p, which starts no live block, fails: the block around p
 * is free (a double free, possibly since merged with a neighbour) or live
 * (an interior pointer). Walks the arena's blocks, so it costs O(arena):
 * only ever on the way to an error. */
static int medium_classify(const struct kl_seg *s, uintptr_t p)
{
	uintptr_t sentinel = s->arena_end - KL_BLK_HDR;
	for (uintptr_t b = s->arena; b < sentinel;) {
		const struct kl_blk *blk = (const struct kl_blk *)b;
		size_t size = kl_blk_size(blk);
		if (size < KL_MIN_BLOCK || size > sentinel - b)
			return KEEL_ECORRUPT;
		if (p < b + size)
			return (blk->head & KL_B_FREE) && p >= b + KL_BLK_HDR ? KEEL_EDOUBLE
			                                                      : KEEL_EINTERIOR;
		b += size;
	}
	return KEEL_EINTERIOR;
}

/* 0 if p is the user pointer of a live medium block in arena s, else the
 * error a free of p gets. p is 16-aligned, inside s's arena, in no run. */
int kl_medium_validate(struct kl_seg *s, uintptr_t p)
{
	if (p < s->arena + KL_BLK_HDR || p >= s->arena_end - KL_BLK_HDR)
		return KEEL_EINTERIOR;
	struct kl_blk *b = kl_blk_of((void *)p);
	if (!kl_bit_get(s, p))
		return medium_classify(s, p);
	size_t size = kl_blk_size(b);
	if ((b->head & (KL_B_FREE | KL_B_RUN)) || size < KL_MIN_BLOCK ||
	    size > s->arena_end - KL_BLK_HDR - (uintptr_t)b)
		return KEEL_ECORRUPT;
	struct kl_blk *n = kl_blk_next(b);
	if (n->head & KL_B_PREV_FREE)
		return KEEL_ECORRUPT;
	return 0;
}

void kl_medium_free(struct kl_heap *h, struct kl_op *op, struct kl_seg *s, uintptr_t p)
{
	kl_bit_clear(s, p);
	kl_fit_give(h, op, s, kl_blk_of((void *)p));
}

/* Resize the live block at p in place to hold size bytes: shrink by cutting
 * off the tail, grow into a free neighbour. Returns 0, or -1 if it must move. */
int kl_medium_resize(struct kl_heap *h, struct kl_op *op, struct kl_seg *s, uintptr_t p,
                     size_t size)
{
	struct kl_blk *b = kl_blk_of((void *)p);
	size_t need = kl_medium_need(size), cur = kl_blk_size(b);
	size_t align = kl_blk_align(b);
	if (need <= cur) {
		if (cur - need >= KL_MIN_BLOCK) {
			struct kl_blk *r = (struct kl_blk *)(void *)((char *)b + need);
			r->prev_size = kl_hdr_canary(h->secret, r);
			r->head = cur - need; /* used, its neighbour before is used */
			b->head = (b->head & ~KL_B_SIZE_MASK) | need;
			kl_fit_give(h, op, s, r);
		}
		kl_medium_set_ask(b, size, align);
		return 0;
	}
	struct kl_blk *n = kl_blk_next(b);
	if (!(n->head & KL_B_FREE) || cur + kl_blk_size(n) < need)
		return -1;
	kl_fit_remove(h, n);
	n->prev_size = 0; /* B7: its canary goes with its header */
	h->medium_free_bytes -= kl_blk_size(n);
	b->head = (b->head & ~KL_B_SIZE_MASK) | (cur + kl_blk_size(n));
	fit_split_tail(h, b, need);
	if (kl_seg_big(s))
		kl_big_take(h, s, (uintptr_t)b + cur, (uintptr_t)b + kl_blk_size(b));
	kl_medium_set_ask(b, size, align);
	return 0;
}

/* The size of a block at the head of the highest non-empty list: the largest
 * free block, to within one sixteenth. O(1). */
size_t kl_medium_largest(const struct kl_heap *h)
{
	if (!h->fl_bitmap)
		return 0;
	unsigned fl = kl_fls(h->fl_bitmap);
	unsigned sl = kl_fls(h->sl_bitmap[fl]);
	return kl_blk_size(h->heads[fl][sl]);
}
