/* small.c: requests up to KEEL_SMALL_MAX bytes come from runs of one size
 * class: no per-object header, a free list of slots and one bitmap bit per
 * slot, so a double or interior free is caught in O(1). Runs are medium
 * blocks (medium.c); empty ones are cached a little before going back. */
#include "internal.h"

/* 16-byte steps to 128, then eight classes per doubling to KL_SMALL_MAX:
 * at most 11% of a slot is lost to rounding past 128 bytes (a program of
 * many 300-900 B objects lost 9% of its memory to four a doubling, where an
 * exact fit loses 2%), and every power of two is a class. Those past
 * KL_SMALL_MAX, four a doubling, are for aligned requests only
 * (internal.h). Finer is not free: exact 16-byte classes to 1 KiB, with
 * 64 KiB runs so that a class's last slot wastes little, took the
 * fragmentation workload's peak from 1.106 to 1.075 of its live bytes
 * (glibc's 1.066, whose 8-byte header beats any 16-byte rounding there),
 * for realloc's peak +12% and prodcons' +14%: a block that grows leaves its
 * class more often, and more classes hold more partly used runs. */
static const uint16_t class_sizes[KL_NCLASSES] = {
	16,  32,  48,  64,   80,   96,   112,  128,  144,  160,  176,  192,  208, 224,
	240, 256, 288, 320,  352,  384,  416,  448,  480,  512,  576,  640,  704, 768,
	832, 896, 960, 1024, 1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096,
};
_Static_assert(KL_SLOT_MAX == 4096, "the class table ends at KL_SLOT_MAX");
_Static_assert(KL_RUN / 16 - 1 <= 0xffff, "slot counts fit 16 bits");

void kl_small_init(struct kl_heap *h)
{
	for (unsigned i = 0; i < KL_NCLASSES; i++) {
		struct kl_class *c = &h->cls[i];
		c->size = class_sizes[i];
		c->recip = (uint32_t)((((uint64_t)1 << 32) + c->size - 1) / c->size);
		c->first = c->size & -c->size;
		h->partial[i] = NULL;
	}
}

/* The smallest class holding size whose slots are all aligned to align (slot
 * i sits at chunk + i * size, so the size must be a multiple of align), or -1. */
int kl_small_class_aligned(const struct kl_heap *h, size_t size, size_t align)
{
	if (align <= KL_GRAN)
		return (int)kl_small_class(size);
	if (size < align)
		size = align;
	if (size > KL_SLOT_MAX)
		return -1;
	for (unsigned c = kl_small_class(size); c < KL_NCLASSES; c++)
		if ((h->cls[c].size & (align - 1)) == 0)
			return (int)c;
	return -1;
}

/* Move r to another list state, keeping its KL_RUN_ALIGNED. */
static void run_list(struct kl_run *r, unsigned list)
{
	kl_run_set_where(r, (kl_run_where(r) & KL_RUN_ALIGNED) | list);
}

static void run_unlink(struct kl_run **list, struct kl_run *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		*list = r->next;
	if (r->next)
		r->next->prev = r->prev;
	r->next = r->prev = NULL;
}

static void run_push(struct kl_run **list, struct kl_run *r)
{
	r->prev = NULL;
	r->next = *list;
	if (*list)
		(*list)->prev = r;
	*list = r;
}

/* n slots of r, a run of class cls on its partial list, were handed out:
 * a run left with none leaves the list. */
static void run_taken(struct kl_heap *h, unsigned cls, struct kl_run *r, size_t n)
{
	r->nfree = (uint16_t)(r->nfree - n);
	if (r->nfree == 0) {
		run_unlink(&h->partial[cls], r);
		run_list(r, KL_RUN_FULL);
	}
}

/* A run for class cls on the class's partial list: an empty cached run if
 * there is one, else a new RUN-aligned medium block (from a new segment too
 * if grow is set). */
static struct kl_run *run_new(struct kl_heap *h, struct kl_op *op, unsigned cls, int grow)
{
	struct kl_run *r = h->empty_runs;
	if (r) {
		run_unlink(&h->empty_runs, r);
		h->nempty_runs--;
	} else {
		struct kl_blk *b = grow ? kl_fit_alloc_grow(h, op, KL_RUN, KL_RUN, 0)
		                        : kl_fit_take(h, KL_RUN, KL_RUN, 0);
		if (!b)
			return NULL;
		b->head |= KL_B_RUN;
		uintptr_t u = (uintptr_t)b;
		struct kl_seg *s = kl_seg_find(h, u).seg;
		KL_ASSERT(s && (u & (KL_RUN - 1)) == 0);
		if (kl_seg_big(s))
			kl_big_take(h, s, u, u + KL_RUN);
		r = kl_run_of(s, u);
		r->seg = s;
	}
	struct kl_class *c = &h->cls[cls];
	kl_run_set_class(r, cls + 1);
	r->nslots = kl_class_nslots(c);
	r->nfree = r->nslots;
	r->bump = 0;
	r->free = NULL;
	kl_run_set_where(r, KL_RUN_PARTIAL); /* not KL_RUN_ALIGNED: a fresh run */
	run_push(&h->partial[cls], r);
	h->small_free_bytes += (size_t)r->nslots * c->size;
	return r;
}

/* Is next, a link read from a free slot of r, a free slot of r? */
static int run_link_ok(const struct kl_heap *h, const struct kl_run *r, uintptr_t next)
{
	const struct kl_class *c = &h->cls[r->cls - 1];
	uintptr_t off = next - kl_run_base(r, c);
	size_t i = kl_slot_index(c, off);
	return off < KL_RUN && i * c->size == off && i < r->bump && !kl_bit_get(r->seg, next);
}

/* The free list of r is broken (a free slot was written after its free):
 * it is not followed again. Its slots are kept out of use for good, counted
 * as live blocks no one owns, so every invariant still holds. O(nslots),
 * on the error path only. */
static void run_abandon_list(struct kl_heap *h, struct kl_run *r)
{
	struct kl_class *c = &h->cls[r->cls - 1];
	uintptr_t base = kl_run_base(r, c);
	size_t lost = 0;
	for (size_t i = 0; i < r->bump; i++) {
		uintptr_t p = base + i * c->size;
		if (!kl_bit_get(r->seg, p)) {
			kl_bit_set(r->seg, p);
			lost++;
		}
	}
	r->free = NULL;
	r->nfree = (uint16_t)(r->nfree - lost);
	h->small_free_bytes -= lost * c->size;
	h->class_live[r->cls - 1] += lost;
	for (size_t i = 0; i < lost; i++)
		kl_count_alloc(h, c->size, c->size);
}

/* In checked mode a slot on a free list is poison but for its link word. */
static int slot_poisoned(const struct kl_class *c, uintptr_t p)
{
	return kl_chk_all_poison(p + sizeof(void *), p + c->size);
}

/* A slot of class cls, or NULL if no run has one and no new run can be had
 * (without a new segment unless grow is set). aligned marks it as asked with
 * an alignment above 16, so realloc keeps that alignment: its run's
 * KL_RUN_ALIGNED records it, not a bitmap bit (kl_slot_live counts on bits
 * at slot starts only). Free-list links are stored encoded (kl_link): a
 * link that does not decode to a free slot of the run is reported and
 * never followed. */
void *kl_small_alloc(struct kl_heap *h, struct kl_op *op, unsigned cls, int aligned, int grow)
{
	struct kl_class *c = &h->cls[cls];
	for (;;) {
		struct kl_run *r = h->partial[cls];
		if (KL_UNLIKELY(!r)) {
			r = run_new(h, op, cls, grow);
			if (!r)
				return NULL;
		}
		uintptr_t p;
		int reused = r->free != NULL;
		if (reused) {
			p = (uintptr_t)r->free;
			uintptr_t next = kl_link(h, p, *(uintptr_t *)p);
			if (KL_UNLIKELY(next && !run_link_ok(h, r, next))) {
				kl_report(h, KEEL_ECORRUPT, p);
				next = 0;
				r->free = NULL;
				kl_bit_set(r->seg, p); /* p is handed out below */
				run_abandon_list(h, r);
				kl_bit_clear(r->seg, p);
			}
			r->free = (void *)next;
		} else {
			p = kl_run_base(r, c) + (size_t)r->bump * c->size;
			r->bump++;
		}
		run_taken(h, cls, r, 1);
		kl_bit_set(r->seg, p);
		h->small_free_bytes -= c->size;
		if (KL_UNLIKELY(h->checked) && reused && !slot_poisoned(c, p)) {
			kl_chk_retire(h, r->seg, p); /* written after its free */
			continue;
		}
		if (aligned)
			kl_run_set_where(r, kl_run_where(r) | KL_RUN_ALIGNED);
		return (void *)p;
	}
}

/* Up to n never-used slots of the class's first partial run at once, for a
 * cache's refill: each is marked live, as kl_small_alloc would one by one,
 * without its per-slot work (the slots are consecutive: the first at
 * *first, then every class size). 0 if that run has slots on its free list
 * (they go first, through kl_small_alloc), or there is none; never in
 * checked mode, whose slots each need their checks. */
size_t kl_small_carve(struct kl_heap *h, unsigned cls, size_t n, uintptr_t *first)
{
	struct kl_run *r = h->partial[cls];
	if (!r || r->free || h->checked)
		return 0;
	const struct kl_class *c = &h->cls[cls];
	size_t room = (size_t)r->nslots - r->bump, size = c->size;
	if (n > room)
		n = room;
	uintptr_t p = kl_run_base(r, c) + (size_t)r->bump * size;
	*first = p;
	for (size_t i = 0; i < n; i++)
		kl_bit_set(r->seg, p + i * size);
	r->bump = (uint16_t)(r->bump + n);
	run_taken(h, cls, r, n);
	h->small_free_bytes -= n * size;
	return n;
}

/* 0 if p is a live slot of run r in segment s, else the error a free gets. */
int kl_small_validate(const struct kl_heap *h, const struct kl_seg *s, const struct kl_run *r,
                      uintptr_t p)
{
	if (r->cls > KL_NCLASSES || r->nfree > r->nslots || r->bump > r->nslots || r->seg != s)
		return KEEL_ECORRUPT;
	const struct kl_class *c = &h->cls[r->cls - 1];
	uintptr_t off = p - kl_run_base(r, c);
	size_t i = kl_slot_index(c, off);
	if (i * c->size != off || i >= r->nslots)
		return KEEL_EINTERIOR;
	if (!kl_bit_get(s, p))
		return i < r->bump ? KEEL_EDOUBLE : KEEL_EINTERIOR;
	return 0;
}

/* Give run r back to the medium blocks it came from. */
static void run_release(struct kl_heap *h, struct kl_op *op, struct kl_run *r)
{
	struct kl_blk *b = (struct kl_blk *)kl_run_chunk(r);
	kl_run_set_class(r, 0);
	b->head &= ~KL_B_RUN;
	kl_fit_give(h, op, r->seg, b);
}

void kl_small_free(struct kl_heap *h, struct kl_op *op, struct kl_seg *s, struct kl_run *r,
                   uintptr_t p)
{
	struct kl_class *c = &h->cls[r->cls - 1];
	kl_bit_clear(s, p);
	*(uintptr_t *)p = kl_link(h, p, (uintptr_t)r->free);
	r->free = (void *)p;
	h->small_free_bytes += c->size;
	if (r->nfree++ == 0) {
		run_push(&h->partial[r->cls - 1], r);
		run_list(r, KL_RUN_PARTIAL);
	}
	if (r->nfree == r->nslots) {
		run_unlink(&h->partial[r->cls - 1], r);
		h->small_free_bytes -= (size_t)r->nslots * c->size;
		if (h->nempty_runs < KL_EMPTY_RUNS_MAX) {
			kl_run_set_where(r, KL_RUN_EMPTY); /* and no longer aligned */
			run_push(&h->empty_runs, r);
			h->nempty_runs++;
		} else {
			run_release(h, op, r);
		}
	}
}

/* Return every cached empty run to the medium blocks. */
void kl_small_trim(struct kl_heap *h, struct kl_op *op)
{
	while (h->empty_runs) {
		struct kl_run *r = h->empty_runs;
		run_unlink(&h->empty_runs, r);
		h->nempty_runs--;
		run_release(h, op, r);
	}
}
