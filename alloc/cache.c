/* cache.c: the per-thread (or per-CPU) front end. Small slots are kept in
 * bounded per-class stacks owned by one user, so the common malloc and free
 * touch no lock; batches move between a cache and its heap under the lock.
 * The core gives the object; the environment decides who owns it. */
#include "internal.h"

/* A class's stack holds at most 16 KiB of slots (and 16 to 128 of them): a
 * thread's cache stays under 320 KiB whatever it frees, and a thread that
 * frees and allocates in turn goes to the heap's lock once per half stack. */
static uint32_t bin_max(size_t size)
{
	size_t n = 16384 / size;
	return (uint32_t)(n < 16 ? 16 : n > 128 ? 128 : n);
}

static struct kl_cache *cache_of(struct keel_cache *c)
{
	return (struct kl_cache *)(void *)c;
}

int keel_cache_init(struct keel_cache *cache, struct keel_heap *heap)
{
	struct kl_heap *h = kl_heap_get(heap);
	if (!cache || !h)
		return KEEL_EINVAL;
	struct kl_cache *c = cache_of(cache);
	kl_memset(c, 0, sizeof(*c));
	c->heap = h;
	c->secret = h->secret;
	for (unsigned i = 0; i < KL_NCLASSES; i++)
		c->bins[i].max = bin_max(h->cls[i].size);
	uintptr_t t = kl_lock(h);
	h->has_caches = 1;
	kl_unlock(h, t);
	return 0;
}

/* Fill bin cls with up to half its capacity from the heap's runs and return
 * one more slot for the caller, or fall back to a plain allocation (a medium
 * block from held memory, or a new segment) when no run has a free slot. */
static void *cache_refill(struct kl_cache *c, unsigned cls, size_t size)
{
	struct kl_heap *h = c->heap;
	struct kl_bin *b = &c->bins[cls];
	size_t csize = h->cls[cls].size;
	struct kl_op op;
	int fresh;
	kl_op_begin(h, &op);
	void *p = kl_small_alloc(h, &op, cls, 0, 0);
	if (!p) {
		p = kl_alloc_locked(h, &op, size, KL_GRAN, &fresh);
		kl_op_end(h, &op);
		return p;
	}
	size_t got = 1;
	for (uint32_t n = b->max / 2; n > 0; n--, got++) {
		void **s = kl_small_alloc(h, &op, cls, 0, 0);
		if (!s)
			break;
		s[0] = (void *)kl_link(h, (uintptr_t)s, (uintptr_t)b->head);
		s[1] = (void *)c->secret;
		b->head = s;
		b->count++;
	}
	/* the batch counts as live blocks, as kl_count_alloc would one by one */
	h->in_use_bytes += got * csize;
	h->requested_bytes += got * csize;
	if (h->in_use_bytes > h->peak_in_use)
		h->peak_in_use = h->in_use_bytes;
	h->live_blocks += got;
	h->alloc_count += got;
	h->class_live[cls] += got;
	kl_op_end(h, &op);
	return p;
}

/* A slot at the top of a bin lost its secret: it was written after its
 * free, and its link cannot be trusted. The bin is dropped (its slots stay
 * counted as live, never handed out) and the fault reported. */
static void cache_bin_broken(struct kl_cache *c, struct kl_bin *b)
{
	struct kl_heap *h = c->heap;
	uintptr_t t = kl_lock(h);
	kl_report(h, KEEL_ECORRUPT, (uintptr_t)b->head);
	kl_unlock(h, t);
	b->head = NULL;
	b->count = 0;
}

void *keel_cache_malloc(struct keel_cache *cache, size_t size)
{
	struct kl_cache *c = cache_of(cache);
	if (KL_LIKELY(size <= KL_SMALL_MAX && !c->heap->checked)) {
		unsigned cls = kl_small_class(size);
		struct kl_bin *b = &c->bins[cls];
		void **p = b->head;
		if (KL_LIKELY(p != NULL)) {
			if (KL_UNLIKELY(p[1] != (void *)c->secret)) {
				cache_bin_broken(c, b);
				return cache_refill(c, cls, size);
			}
			b->head = (void **)kl_link(c->heap, (uintptr_t)p, (uintptr_t)p[0]);
			b->count--;
			p[1] = NULL; /* K1: no live block carries the secret */
			return p;
		}
		return cache_refill(c, cls, size);
	}
	return keel_malloc((struct keel_heap *)(void *)c->heap, size);
}

/* Give n slots from the top of bin cls back to the heap, lock held. Each
 * was checked live when it came in and has been the cache's since, so it
 * goes straight back to its run. */
static void cache_drain(struct kl_cache *c, struct kl_op *op, unsigned cls, uint32_t n)
{
	struct kl_heap *h = c->heap;
	struct kl_bin *b = &c->bins[cls];
	size_t csize = h->cls[cls].size, gone = 0;
	while (n-- && b->head) {
		void **s = b->head;
		if (s[1] != (void *)c->secret) { /* as cache_bin_broken, lock held */
			kl_report(h, KEEL_ECORRUPT, (uintptr_t)s);
			b->head = NULL;
			b->count = 0;
			return;
		}
		b->head = (void **)kl_link(h, (uintptr_t)s, (uintptr_t)s[0]);
		b->count--;
		s[1] = NULL; /* K1: the slot leaves the cache */
		struct kl_seg *seg = kl_seg_find(h, (uintptr_t)s).seg;
		KL_ASSERT(seg &&
		          kl_small_is_live(h, seg, kl_run_of(seg, (uintptr_t)s), (uintptr_t)s));
		kl_small_free(h, op, seg, kl_run_of(seg, (uintptr_t)s), (uintptr_t)s);
		gone++;
	}
	h->in_use_bytes -= gone * csize;
	h->requested_bytes -= gone * csize;
	h->live_blocks -= gone;
	h->free_count += gone;
	h->class_live[cls] -= gone;
}

int keel_cache_free(struct keel_cache *cache, void *ptr)
{
	struct kl_cache *c = cache_of(cache);
	struct kl_heap *h = c->heap;
	uintptr_t p = (uintptr_t)ptr;
	if (!ptr)
		return 0;
	if (h->checked) /* every check of checked mode is in keel_free */
		return keel_free((struct keel_heap *)(void *)h, ptr);
	/* Unlocked: a live slot keeps its run and segment alive, so what we
	 * read of them is stable; anything else goes to the locked path. */
	struct kl_where w = kl_seg_find(h, p);
	struct kl_seg *s = w.seg;
	if (w.err || s->kind == KL_SEG_LARGE || (p & (KL_GRAN - 1)) || p < s->arena ||
	    p >= s->arena_end)
		return keel_free((struct keel_heap *)(void *)h, ptr);
	struct kl_run *r = kl_run_of(s, p);
	if (!kl_small_is_live(h, s, r, p))
		return keel_free((struct keel_heap *)(void *)h, ptr);
	void **slot = ptr;
	if (KL_UNLIKELY(slot[1] == (void *)c->secret))
		return KEEL_EDOUBLE; /* K1: it sits in a cache already */
	unsigned cls = r->cls - 1u;
	struct kl_bin *b = &c->bins[cls];
	if (KL_UNLIKELY(b->count >= b->max)) {
		struct kl_op op;
		kl_op_begin(h, &op);
		cache_drain(c, &op, cls, b->max / 2);
		kl_op_end(h, &op);
	}
	slot[0] = (void *)kl_link(h, p, (uintptr_t)b->head);
	slot[1] = (void *)c->secret;
	b->head = slot;
	b->count++;
	return 0;
}

size_t keel_cache_usable_size(struct keel_cache *cache, const void *ptr)
{
	/* keel_usable_size already knows a cached slot by the secret (K1). */
	return keel_usable_size((struct keel_heap *)(void *)cache_of(cache)->heap, ptr);
}

void keel_cache_flush(struct keel_cache *cache)
{
	struct kl_cache *c = cache_of(cache);
	struct kl_op op;
	kl_op_begin(c->heap, &op);
	for (unsigned i = 0; i < KL_NCLASSES; i++)
		cache_drain(c, &op, i, c->bins[i].count);
	kl_op_end(c->heap, &op);
}
