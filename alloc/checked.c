/* checked.c: checked mode (KEEL_HEAP_CHECKED), for finding the bugs of the
 * program above the heap: canaries after blocks, poison in freed memory, a
 * quarantine that delays reuse. heap.c calls in here only when the heap's
 * checked flag is set; the layout is drawn in internal.h (Q1-Q3). */
#include "internal.h"

/* The canary of the block at p: the heap's secret mixed with p, so no two
 * blocks share one and no canary equals a marker the heap looks for. */
static unsigned char canary_byte(const struct kl_heap *h, uintptr_t p, size_t i)
{
	uint64_t k = (uint64_t)(h->secret ^ KL_QTAG) * 0xff51afd7ed558ccdull ^ (uint64_t)p;
	k *= 0x9e3779b97f4a7c15ull;
	return (unsigned char)(k >> ((i & 7) * 8));
}

void kl_chk_canary_set(const struct kl_heap *h, uintptr_t p, size_t size)
{
	unsigned char *c = (unsigned char *)(p + size);
	for (size_t i = 0; i < KL_CANARY_BYTES; i++)
		c[i] = canary_byte(h, p, i);
}

int kl_chk_canary_ok(const struct kl_heap *h, uintptr_t p, size_t size)
{
	const unsigned char *c = (const unsigned char *)(p + size);
	for (size_t i = 0; i < KL_CANARY_BYTES; i++)
		if (c[i] != canary_byte(h, p, i))
			return 0;
	return 1;
}

/* Is the header of the used medium block b (inside arena s, its size within
 * it) as the heap wrote it? Its top bits are clear and its slack holds the
 * canary; the word before it is the canary, or the size of a free
 * block before it; the next header's word before is this block's canary.
 * A write just before a block changes one of these. */
int kl_chk_header_ok(const struct kl_heap *h, const struct kl_seg *s, const struct kl_blk *b)
{
	size_t size = kl_blk_size(b), slack = kl_blk_slack(b);
	/* the asked bytes and the canary fit: usable - slack + canary <= usable */
	if ((b->head >> 60) || slack < KL_CANARY_BYTES || slack > size - KL_BLK_HDR)
		return 0;
	if (b->head & KL_B_PREV_FREE) {
		size_t ps = b->prev_size;
		if (ps < KL_MIN_BLOCK || ps % KL_GRAN || ps > (uintptr_t)b - s->arena)
			return 0;
		const struct kl_blk *prev = (const struct kl_blk *)((uintptr_t)b - ps);
		if (!(prev->head & KL_B_FREE) || kl_blk_size(prev) != ps)
			return 0;
	} else if (b->prev_size != kl_hdr_canary(h->secret, b)) {
		return 0;
	}
	const struct kl_blk *n = (const struct kl_blk *)((uintptr_t)b + size);
	return n->prev_size == kl_hdr_canary(h->secret, n);
}

/* The size asked for a checked small slot, kept in its last two bytes. */
size_t kl_chk_small_len(uintptr_t p, size_t csize)
{
	const unsigned char *b = (const unsigned char *)(p + csize - KL_SMALL_LEN);
	return (size_t)b[0] | (size_t)b[1] << 8;
}

/* Lay out a fresh live small slot: the size asked and the canary. */
void kl_chk_small_set(const struct kl_heap *h, uintptr_t p, size_t csize, size_t size)
{
	unsigned char *b = (unsigned char *)(p + csize - KL_SMALL_LEN);
	b[0] = (unsigned char)size;
	b[1] = (unsigned char)(size >> 8);
	kl_chk_canary_set(h, p, size);
}

/* Is [from, to) all poison? from is 8-byte aligned (blocks start on 16). */
int kl_chk_all_poison(uintptr_t from, uintptr_t to)
{
	const uint64_t word = 0x0101010101010101ull * KL_POISON;
	const uint64_t *w = (const uint64_t *)from;
	for (; (uintptr_t)(w + 1) <= to; w++)
		if (*w != word)
			return 0;
	for (const unsigned char *b = (const unsigned char *)w; (uintptr_t)b < to; b++)
		if (*b != KL_POISON)
			return 0;
	return 1;
}

/* Q2 for a quarantined block at p. */
int kl_chk_quarantined_ok(const struct kl_heap *h, const struct kl_seg *s, uintptr_t p)
{
	if (s->kind == KL_SEG_LARGE) /* behind its guards it cannot be written */
		return s->guarded || kl_chk_all_poison(p, p + s->usable);
	const struct kl_run *r = kl_run_of(s, p);
	if (r->cls) {
		size_t csize = h->cls[r->cls - 1].size;
		return kl_chk_all_poison(p, p + sizeof(uintptr_t)) &&
		       kl_chk_all_poison(p + 2 * sizeof(uintptr_t), p + csize);
	}
	const struct kl_blk *b = kl_blk_of((void *)p);
	return kl_chk_all_poison(p, p + kl_medium_usable(b));
}

/* What the live-looking block at p (its bit set) is: KL_CHK_LIVE, or
 * KL_CHK_QUARANTINED (waiting, Q2), or KL_CHK_RETIRED (written after its
 * free: kept out of use for good, in no count, any free of it a double
 * free). A small slot says so in its second word, a medium block with
 * KL_B_QUAR and, once retired, its first word. */
int kl_chk_state(const struct kl_heap *h, const struct kl_seg *s, uintptr_t p)
{
	const struct kl_run *r = kl_run_of(s, p);
	uintptr_t w;
	if (r->cls) {
		w = ((const uintptr_t *)p)[1];
	} else {
		if (!(kl_blk_of((void *)p)->head & KL_B_QUAR))
			return KL_CHK_LIVE;
		w = ((const uintptr_t *)p)[0];
		if (w != (h->secret ^ KL_RTAG))
			return KL_CHK_QUARANTINED;
	}
	return w == (h->secret ^ KL_QTAG)   ? KL_CHK_QUARANTINED
	       : w == (h->secret ^ KL_RTAG) ? KL_CHK_RETIRED
	                                    : KL_CHK_LIVE;
}

/* The free block at p (its bit set) was written after its free: say so and
 * retire it. */
void kl_chk_retire(struct kl_heap *h, const struct kl_seg *s, uintptr_t p)
{
	kl_report(h, KEEL_EUSEAFTER, p);
	if (kl_run_of(s, p)->cls)
		((uintptr_t *)p)[1] = h->secret ^ KL_RTAG;
	else
		((uintptr_t *)p)[0] = h->secret ^ KL_RTAG; /* KL_B_QUAR stays set */
}

/* The oldest block leaves the quarantine: verified, then really freed. */
static void quarantine_evict(struct kl_heap *h, struct kl_op *op)
{
	uintptr_t p = h->quar[h->quar_head];
	h->quar_head = (h->quar_head + 1) % KL_QUAR_MAX;
	h->quar_n--;
	struct kl_seg *s = kl_seg_find(h, p).seg;
	if (s->kind == KL_SEG_LARGE) {
		h->quar_bytes -= s->usable;
		if (!kl_chk_quarantined_ok(h, s, p))
			kl_report(h, KEEL_EUSEAFTER,
			          p); /* it goes back to the source all the same */
		s->is_empty = 0;
		kl_large_free(h, op, s);
		h->nlarge++; /* kl_large_free counted it out when it was freed */
		return;
	}
	struct kl_run *r = kl_run_of(s, p);
	size_t bytes = r->cls ? h->cls[r->cls - 1].size : kl_medium_usable(kl_blk_of((void *)p));
	h->quar_bytes -= bytes;
	if (!kl_chk_quarantined_ok(h, s, p)) {
		kl_chk_retire(h, s, p);
		return;
	}
	if (r->cls) {
		kl_memset((void *)(p + sizeof(uintptr_t)), KL_POISON, sizeof(uintptr_t));
		kl_small_free(h, op, s, r, p);
	} else {
		kl_blk_of((void *)p)->head &= ~KL_B_QUAR;
		kl_medium_free(h, op, s, p);
	}
}

/* A block just freed (counters already moved): poison it, mark it and let
 * it wait; the oldest leave while over the bounds. A large block's pages
 * are made inaccessible instead, when the source can, so a dangling
 * pointer faults at once. */
void kl_chk_quarantine(struct kl_heap *h, struct kl_op *op, const struct kl_blockinfo *bi,
                       uintptr_t p)
{
	size_t bytes;
	if (bi->kind == KEEL_KIND_LARGE) {
		struct kl_seg *s = bi->seg;
		bytes = s->usable;
		s->is_empty = 1;
		h->nlarge--;
		if (s->guarded) { /* the lock drops: freed, in no ring, counted as waiting */
			uintptr_t from = kl_align_down(p, KL_PAGE),
			          to = s->base + s->bytes - KL_PAGE;
			h->quar_pending++;
			h->quar_pending_bytes += bytes;
			kl_op_protect(h, op, (void *)from, to - from, KEEL_PROT_NONE);
			h->quar_pending--;
			h->quar_pending_bytes -= bytes;
		} else {
			kl_memset((void *)p, KL_POISON, bytes);
		}
	} else if (bi->kind == KEEL_KIND_SMALL) {
		bytes = h->cls[bi->run->cls - 1].size;
		kl_memset((void *)p, KL_POISON, bytes);
		((uintptr_t *)p)[1] = h->secret ^ KL_QTAG;
	} else {
		struct kl_blk *b = kl_blk_of((void *)p);
		bytes = kl_medium_usable(b);
		kl_memset((void *)p, KL_POISON, bytes);
		b->head |= KL_B_QUAR;
	}
	if (h->quar_n == KL_QUAR_MAX)
		quarantine_evict(h, op);
	h->quar[(h->quar_head + h->quar_n) % KL_QUAR_MAX] = p;
	h->quar_n++;
	h->quar_bytes += bytes;
	while (h->quar_n && h->quar_bytes > KEEL_QUARANTINE_BYTES)
		quarantine_evict(h, op);
}

/* Empty the quarantine (keel_trim: its memory may then go back). */
void kl_chk_quarantine_flush(struct kl_heap *h, struct kl_op *op)
{
	while (h->quar_n)
		quarantine_evict(h, op);
}
