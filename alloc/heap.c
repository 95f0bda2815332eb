/* heap.c: the public entry points. Each call takes the heap lock once,
 * routes by size (small.c runs, medium.c blocks, segment.c large mappings),
 * keeps the counters keel_stats reads, and calls the page source only with
 * the lock dropped (struct kl_op defers unmaps until then). */
#include "internal.h"

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __asm__ volatile("pause")
#else
#define cpu_relax() __asm__ volatile("" ::: "memory")
#endif

/* Our own memset/memcpy: the core links against nothing. Eight bytes at a
 * time when both ends allow it: as fast as the string instructions for the
 * sizes keel moves on real hardware, and far faster under QEMU's emulation,
 * where rep movsb/stosb crawl. The empty asm keeps any compiler from
 * turning the loops back into a call to memset or memcpy. */
typedef uint64_t kl_word __attribute__((may_alias)); /* any memory, any type */

void *kl_memset(void *p, int c, size_t n)
{
	unsigned char *d = p;
	uint64_t w = 0x0101010101010101ull * (unsigned char)c;
	for (; n && ((uintptr_t)d & 7); n--)
		*d++ = (unsigned char)c;
	for (; n >= 8; n -= 8, d += 8) {
		*(kl_word *)(void *)d = w;
		__asm__ volatile("" ::: "memory");
	}
	while (n--)
		*d++ = (unsigned char)c;
	return p;
}

/* KEEL_MEMCPY (a build knob, off by default) names a memcpy to move the
 * blocks realloc moves with, where a libc's vector copy beats eight bytes
 * at a time (the drop-in: realloc's moves of up to 1 MiB were a third of
 * its time); the core then needs that one symbol. */
#ifdef KEEL_MEMCPY
void *KEEL_MEMCPY(void *dst, const void *src, size_t n);
#endif

void *kl_memcpy(void *dst, const void *src, size_t n)
{
#ifdef KEEL_MEMCPY
	return KEEL_MEMCPY(dst, src, n);
#else
	unsigned char *d = dst;
	const unsigned char *s = src;
	if ((((uintptr_t)d ^ (uintptr_t)s) & 7) == 0) {
		for (; n && ((uintptr_t)d & 7); n--)
			*d++ = *s++;
		for (; n >= 8; n -= 8, d += 8, s += 8) {
			*(kl_word *)(void *)d = *(const kl_word *)(const void *)s;
			__asm__ volatile("" ::: "memory");
		}
	}
	for (; n; n--) {
		*d++ = *s++;
		__asm__ volatile("" ::: "memory");
	}
	return dst;
#endif
}

static uintptr_t heap_lock(struct kl_heap *h)
{
	if (h->lock.lock)
		return h->lock.lock(h->lock.ctx);
	if (h->config.flags & KEEL_HEAP_NOLOCK)
		return 0;
	while (__atomic_exchange_n(&h->spin, 1, __ATOMIC_ACQUIRE))
		while (__atomic_load_n(&h->spin, __ATOMIC_RELAXED))
			cpu_relax();
	return 0;
}

static void heap_unlock(struct kl_heap *h, uintptr_t token)
{
	if (h->lock.unlock)
		h->lock.unlock(h->lock.ctx, token);
	else if (!(h->config.flags & KEEL_HEAP_NOLOCK))
		__atomic_store_n(&h->spin, 0, __ATOMIC_RELEASE);
}

/* A fault found where no error can be returned goes to config.report. */
void kl_report(struct kl_heap *h, int err, uintptr_t p)
{
	if (h->config.report)
		h->config.report(h->config.report_ctx, err, (const void *)p);
}

void kl_op_begin(struct kl_heap *h, struct kl_op *op)
{
	op->unmaps = NULL;
	op->unmapped = 0;
	op->token = heap_lock(h);
}

/* A queued unmap's entry, written into the range it gives back, where
 * nothing is read until the lock drops and every page is writable: the
 * middle of a range (an arena's header is its first bytes, a large
 * block's its last; a range is a page at least), or for a guarded large
 * block, whose pages from its user page on may be inaccessible in the
 * quarantine, the end of its header page (the page after the first guard,
 * which the block never reaches: segment.c). */
struct kl_unmap {
	struct kl_unmap *next;
	void *p;
	size_t bytes;
	int guarded; /* make the first and last page accessible again first */
};

/* The queued unmaps, the lock held on entry and dropped on return. The
 * entries are read under the lock, a batch at a time, and only then the
 * lock drops for the source's calls: a range given back may come back from
 * the source to another call at once, and what this one read of it comes
 * before, in the lock's order, what that one writes. Out of line, so that
 * the batch's room stays off the stack of every call that gives nothing
 * back (an interrupt handler's malloc in the kernel, say). */
#define KL_UNMAP_BATCH 16
__attribute__((noinline)) static void op_unmap_all(struct kl_heap *h, struct kl_op *op)
{
	while (op->unmaps) {
		struct kl_unmap batch[KL_UNMAP_BATCH];
		unsigned n = 0;
		for (; op->unmaps && n < KL_UNMAP_BATCH; n++) {
			batch[n] = *op->unmaps;
			op->unmaps = batch[n].next;
		}
		heap_unlock(h, op->token);
		size_t failures = 0;
		for (unsigned i = 0; i < n; i++) {
			if (batch[i].guarded) /* give the source back what it gave */
				h->source.protect(h->source.ctx, batch[i].p, batch[i].bytes,
				                  KEEL_PROT_RW);
			if (h->source.unmap(h->source.ctx, batch[i].p, batch[i].bytes) != 0)
				failures++;
		}
		op->token = heap_lock(h);
		h->source_failures += failures;
	}
	heap_unlock(h, op->token);
}

void kl_op_end(struct kl_heap *h, struct kl_op *op)
{
	if (op->unmaps)
		op_unmap_all(h, op);
	else
		heap_unlock(h, op->token);
}

/* Do the queued unmaps now, dropping the lock meanwhile. */
void kl_op_flush(struct kl_heap *h, struct kl_op *op)
{
	if (!op->unmaps)
		return;
	op_unmap_all(h, op);
	op->token = heap_lock(h);
}

static void op_queue(struct kl_heap *h, struct kl_op *op, void *p, size_t bytes, int guarded)
{
	KL_ASSERT(bytes >= KL_PAGE && (!guarded || bytes >= 3 * KL_PAGE));
	uintptr_t at = guarded ? (uintptr_t)p + 2 * KL_PAGE - sizeof(struct kl_unmap)
	                       : kl_align_down((uintptr_t)p + bytes / 2, _Alignof(struct kl_unmap));
	struct kl_unmap *u = (struct kl_unmap *)at;
	u->next = op->unmaps;
	u->p = p;
	u->bytes = bytes;
	u->guarded = guarded;
	op->unmaps = u;
	op->unmapped += bytes;
	h->unmaps++;
}

/* Queue an unmap for when the lock is dropped; the caller has already taken
 * the range out of every structure and off source_bytes. Never drops the
 * lock. */
void kl_op_unmap(struct kl_heap *h, struct kl_op *op, void *p, size_t bytes)
{
	op_queue(h, op, p, bytes, 0);
}

/* As kl_op_unmap, for a mapping whose first and last pages are guards. */
void kl_op_unmap_guarded(struct kl_heap *h, struct kl_op *op, void *p, size_t bytes)
{
	op_queue(h, op, p, bytes, 1);
}

/* Change protection through the source with the lock dropped. */
int kl_op_protect(struct kl_heap *h, struct kl_op *op, void *p, size_t bytes, int prot)
{
	heap_unlock(h, op->token);
	int err = h->source.protect(h->source.ctx, p, bytes, prot);
	op->token = heap_lock(h);
	return err;
}

/* Map from the source with the lock dropped; counted on source_bytes. */
void *kl_op_map(struct kl_heap *h, struct kl_op *op, size_t bytes, size_t align)
{
	KL_ASSERT(bytes % KL_PAGE == 0 && align % KL_PAGE == 0 && (align & (align - 1)) == 0);
	heap_unlock(h, op->token);
	void *m = h->source.map(h->source.ctx, bytes, align);
	op->token = heap_lock(h);
	if (!m) {
		h->source_failures++;
		return NULL;
	}
	h->maps++;
	h->source_bytes += bytes;
	if (h->source_bytes > h->peak_source)
		h->peak_source = h->source_bytes;
	if ((uintptr_t)m & (align - 1)) { /* a source that broke its contract */
		h->source_failures++;
		h->source_bytes -= bytes;
		kl_op_unmap(h, op, m, bytes);
		return NULL;
	}
	return m;
}

struct kl_blk *kl_fit_alloc_grow(struct kl_heap *h, struct kl_op *op, size_t size, size_t align,
                                 size_t at)
{
	/* Another thread may use up a new segment while the lock is dropped
	 * to map it; a few tries make that a non-issue. Or the other way: the
	 * request is met from a segment another thread mapped meanwhile, and
	 * ours, one free block that nothing else leads to, is parked or given
	 * back as any arena left empty (or no keel_trim would ever find it). */
	size_t need = kl_fit_want(size, align);
	struct kl_seg *grown = NULL;
	for (int tries = 0; tries < 4; tries++) {
		struct kl_blk *b = kl_fit_take(h, size, align, at);
		if (b) {
			if (grown && kl_seg_all_free(grown))
				kl_seg_now_empty(h, op, grown);
			return b;
		}
		if (!(grown = kl_seg_grow(h, op, need)))
			return NULL;
	}
	return NULL;
}

/* A per-heap value no caller can guess: the heap's address and the time
 * stamp counter (where there is one) through a 64-bit mixer. */
static uintptr_t heap_secret(const struct kl_heap *h)
{
	uint64_t x = (uint64_t)(uintptr_t)h;
#if defined(__x86_64__)
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	x ^= ((uint64_t)hi << 32 | lo) * 0x9e3779b97f4a7c15ull;
#endif
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return (uintptr_t)(x | 1); /* never 0: a fresh slot is never mistaken */
}

struct kl_heap *kl_heap_get(struct keel_heap *heap)
{
	struct kl_heap *h = kl_heap_of(heap);
	return h && h->magic == KL_HEAP_MAGIC ? h : NULL;
}

int keel_heap_init(struct keel_heap *heap, const struct keel_config *config)
{
	if (!heap || !config)
		return KEEL_EINVAL;
	const struct keel_source *src = config->source;
	const struct keel_lock *lk = config->lock;
	if (src && (!src->map || !src->unmap))
		return KEEL_EINVAL;
	if (lk && (!lk->lock || !lk->unlock))
		return KEEL_EINVAL;
	struct kl_heap *h = kl_heap_of(heap);
	kl_memset(h, 0, sizeof(*h));
	h->config = *config;
	if (src) {
		h->source = *src;
		h->has_source = 1;
	}
	if (lk)
		h->lock = *lk;
	h->retain_bytes = config->retain_bytes ? config->retain_bytes : KL_SEG;
	h->dirty_max = config->dirty_bytes ? config->dirty_bytes : KEEL_DIRTY_BYTES;
	h->checked = KEEL_VALGRIND || (config->flags & KEEL_HEAP_CHECKED) != 0;
	h->guard_count = config->guard_every;
	h->secret = heap_secret(h);
	kl_small_init(h);
	h->magic = KL_HEAP_MAGIC;
	return 0;
}

int keel_heap_add_region(struct keel_heap *heap, void *base, size_t len)
{
	KL_VG_SCOPE;
	struct kl_heap *h = kl_heap_get(heap);
	if (!h || !base)
		return KEEL_EINVAL;
	struct kl_op op;
	kl_op_begin(h, &op);
	int err = kl_seg_region(h, (uintptr_t)base, len);
	kl_op_end(h, &op);
	return err;
}

int keel_heap_destroy(struct keel_heap *heap)
{
	struct kl_heap *h = kl_heap_get(heap);
	if (!h)
		return KEEL_EINVAL;
	int err = h->has_source ? kl_seg_destroy_all(h) : 0;
	h->magic = 0;
	return err;
}

/* 0 and *bi if p is a live block of h, else the error a free of p gets.
 * Reads only memory the registry or a region vouches for. O(1). */
int kl_locate(struct kl_heap *h, uintptr_t p, struct kl_blockinfo *bi)
{
	struct kl_where w = kl_seg_find(h, p);
	if (w.err)
		return w.err;
	struct kl_seg *s = w.seg;
	bi->seg = s;
	bi->run = NULL;
	if (s->kind == KL_SEG_LARGE) {
		if (p != s->user)
			return KEEL_EINTERIOR;
		if (s->is_empty)
			return KEEL_EDOUBLE; /* S5: freed and cached */
		bi->kind = KEEL_KIND_LARGE;
		bi->usable = kl_large_usable(s);
		bi->requested = s->requested;
		bi->align = (size_t)1 << s->align_shift;
		return 0;
	}
	if ((p & (KL_GRAN - 1)) || p < s->arena || p >= s->arena_end)
		return KEEL_EINTERIOR;
	struct kl_run *r = kl_run_of(s, p);
	if (r->cls) {
		int err = kl_small_validate(h, s, r, p);
		if (err)
			return err;
		if (h->has_caches && !h->checked && ((void **)p)[1] == (void *)h->secret)
			return KEEL_EDOUBLE; /* K1: it sits free in a cache */
		if (h->checked && kl_chk_state(h, s, p) != KL_CHK_LIVE)
			return KEEL_EDOUBLE; /* quarantined or retired */
		bi->run = r;
		bi->kind = KEEL_KIND_SMALL;
		bi->usable = bi->requested = h->cls[r->cls - 1].size;
		/* a run that served an aligned request is marked, and that slot's
		 * class is a multiple of the alignment asked */
		bi->align = kl_run_where(r) & KL_RUN_ALIGNED ? bi->usable & -bi->usable : KL_GRAN;
		if (h->checked) {
			size_t len = kl_chk_small_len(p, bi->usable);
			if (len + KL_SMALL_MARGIN + KL_SMALL_LEN > bi->usable)
				return KEEL_EOVERFLOW; /* the size field itself was overwritten */
			bi->usable = bi->requested = len;
		}
		return 0;
	}
	int err = kl_medium_validate(s, p);
	if (err)
		return err;
	if (h->has_caches && !h->checked && ((void **)p)[1] == (void *)h->secret)
		return KEEL_EDOUBLE; /* K1: it sits free in a cache */
	struct kl_blk *b = kl_blk_of((void *)p);
	bi->kind = KEEL_KIND_MEDIUM;
	bi->usable = kl_medium_usable(b);
	bi->requested = bi->usable - kl_blk_slack(b);
	bi->align = kl_blk_align(b);
	if (h->checked) {
		if (!kl_chk_header_ok(h, s, b))
			return KEEL_ECORRUPT; /* written just before the block */
		if (b->head & KL_B_QUAR)
			return KEEL_EDOUBLE; /* quarantined or retired */
		bi->usable = bi->requested;
	}
	return 0;
}

void kl_count_alloc(struct kl_heap *h, size_t usable, size_t requested)
{
	h->in_use_bytes += usable;
	h->requested_bytes += requested;
	if (h->in_use_bytes > h->peak_in_use)
		h->peak_in_use = h->in_use_bytes;
	h->live_blocks++;
	h->alloc_count++;
}

/* Allocate with the lock held. *fresh is set when the memory came straight
 * from a zeroing source and was never written. In checked mode every block
 * gets room for its canary (and a small slot for its size field), and its
 * usable size is the size asked. */
void *kl_alloc_locked(struct kl_heap *h, struct kl_op *op, size_t size, size_t align, int *fresh)
{
	*fresh = 0;
	if (size > KL_MAX_REQUEST)
		goto fail;
	if (align < KL_GRAN)
		align = KL_GRAN;
	/* a medium block records the alignment asked, which a realloc keeps; the
	 * natural one goes with the size (a 2 KiB block grown to 1 MiB by
	 * realloc would otherwise keep asking for 2 KiB alignment) */
	size_t asked = align;
	if (size > KL_SMALL_MAX || h->checked) /* kl_natural_align; a slot is by placement */
		align = kl_natural_align(size, align);
	size_t extra = h->checked ? KL_CANARY_BYTES : 0;
	size_t small_need = size + (h->checked ? KL_SMALL_MARGIN + KL_SMALL_LEN : 0);
	void *p;
	if (h->checked && h->config.guard_every && h->source.protect && --h->guard_count == 0) {
		/* the sampled one: a guarded mapping of its own, as a large block */
		h->guard_count = h->config.guard_every;
		goto large;
	}
	int c = small_need <= (align > KL_GRAN ? KL_SLOT_MAX : KL_SMALL_MAX)
	                ? kl_small_class_aligned(h, small_need, align)
	                : -1;
	if (c >= 0) {
		/* A slot from a run; failing that a medium block from free memory
		 * already held (a small region has no room for a whole run); only
		 * then a run from a new segment. */
		p = kl_small_alloc(h, op, (unsigned)c, asked > KL_GRAN, 0);
		if (!p && (p = kl_medium_alloc(h, op, size + extra, kl_natural_align(size, align),
		                               0)) != NULL)
			goto medium;
		if (!p && !(p = kl_small_alloc(h, op, (unsigned)c, asked > KL_GRAN, 1)))
			goto fail;
		if (h->checked) {
			kl_chk_small_set(h, (uintptr_t)p, h->cls[c].size, size);
			kl_count_alloc(h, size, size);
		} else {
			kl_count_alloc(h, h->cls[c].size, h->cls[c].size);
		}
		h->class_live[c]++;
		return p;
	}
	if (h->has_source && size + align > KL_MEDIUM_MAX &&
	    (h->checked || !h->source.decommit || size + align > KL_BIG_MAX)) {
	large:
		p = kl_large_alloc(h, op, size, align, fresh);
		if (!p)
			goto fail;
		struct kl_seg *s = kl_seg_find(h, (uintptr_t)p).seg;
		if (h->checked)
			kl_chk_canary_set(h, (uintptr_t)p, size);
		kl_count_alloc(h, kl_large_usable(s), size);
		return p;
	}
	p = kl_medium_alloc(h, op, size + extra, kl_medium_align(h, size + extra, align), 1);
	if (!p && h->has_source && size + align > KL_MEDIUM_MAX)
		goto large; /* no room for a big arena: a mapping of its own may fit */
	if (!p)
		goto fail;
medium:;
	struct kl_blk *b = kl_blk_of(p);
	kl_medium_set_ask(b, size, asked);
	if (h->checked) {
		kl_chk_canary_set(h, (uintptr_t)p, size);
		kl_count_alloc(h, size, size);
	} else {
		kl_count_alloc(h, kl_medium_usable(b), kl_medium_usable(b) - kl_blk_slack(b));
	}
	return p;
fail:
	h->failed++;
	return NULL;
}

/* Free the live block described by bi, with the lock held. In checked mode
 * a small or medium block goes to the quarantine instead. */
void kl_free_locked(struct kl_heap *h, struct kl_op *op, uintptr_t p, const struct kl_blockinfo *bi)
{
	h->in_use_bytes -= bi->usable;
	h->requested_bytes -= bi->requested;
	h->live_blocks--;
	h->free_count++;
	if (bi->kind == KEEL_KIND_SMALL)
		h->class_live[bi->run->cls - 1]--;
	if (h->checked)
		kl_chk_quarantine(h, op, bi, p);
	else if (bi->kind == KEEL_KIND_SMALL)
		kl_small_free(h, op, bi->seg, bi->run, p);
	else if (bi->kind == KEEL_KIND_MEDIUM)
		kl_medium_free(h, op, bi->seg, p);
	else
		kl_large_free(h, op, bi->seg);
}

/* keel_malloc and keel_aligned_alloc: align is 16 or a checked power of two. */
static void *alloc_public(struct keel_heap *heap, size_t size, size_t align, int align_ok)
{
	KL_VG_SCOPE;
	struct kl_heap *h = kl_heap_get(heap);
	if (!h)
		return NULL;
	struct kl_op op;
	int fresh;
	void *p = NULL;
	kl_op_begin(h, &op);
	if (!align_ok)
		h->failed++;
	else
		p = kl_alloc_locked(h, &op, size, align, &fresh);
	kl_op_end(h, &op);
	if (p)
		KL_VG_ALLOC(p, size, fresh);
	return p;
}

void *keel_malloc(struct keel_heap *heap, size_t size)
{
	return alloc_public(heap, size, KL_GRAN, 1);
}

void *keel_aligned_alloc(struct keel_heap *heap, size_t align, size_t size)
{
	int ok = align && !(align & (align - 1)) && align <= KEEL_MAX_ALIGN;
	return alloc_public(heap, size, align, ok);
}

void *keel_calloc(struct keel_heap *heap, size_t n, size_t size)
{
	KL_VG_SCOPE;
	struct kl_heap *h = kl_heap_get(heap);
	if (!h)
		return NULL;
	struct kl_op op;
	int fresh = 0;
	void *p = NULL;
	kl_op_begin(h, &op);
	if (size && n > (size_t)-1 / size)
		h->failed++;
	else
		p = kl_alloc_locked(h, &op, n * size, KL_GRAN, &fresh);
	kl_op_end(h, &op);
	if (p)
		KL_VG_ALLOC(p, n * size, fresh);
	if (p && !fresh)
		kl_memset(p, 0, n * size);
	return p;
}

int keel_free(struct keel_heap *heap, void *p)
{
	KL_VG_SCOPE;
	if (!p)
		return 0;
	struct kl_heap *h = kl_heap_get(heap);
	if (!h)
		return KEEL_EINVAL;
	struct kl_op op;
	struct kl_blockinfo bi;
	kl_op_begin(h, &op);
	int err = kl_locate(h, (uintptr_t)p, &bi);
	if (!err && h->checked && !kl_chk_canary_ok(h, (uintptr_t)p, bi.usable))
		err = KEEL_EOVERFLOW; /* Q3: the block stays as it is */
	if (!err) {
		KL_VG_FREE(p);
		kl_free_locked(h, &op, (uintptr_t)p, &bi);
	}
	kl_op_end(h, &op);
	return err;
}

size_t keel_usable_size(struct keel_heap *heap, const void *p)
{
	KL_VG_SCOPE;
	struct kl_heap *h = kl_heap_get(heap);
	if (!h || !p)
		return 0;
	struct kl_op op;
	struct kl_blockinfo bi;
	kl_op_begin(h, &op);
	int err = kl_locate(h, (uintptr_t)p, &bi);
	kl_op_end(h, &op);
	return err ? 0 : bi.usable;
}

void *keel_realloc(struct keel_heap *heap, void *p, size_t size)
{
	KL_VG_SCOPE;
	if (!p)
		return keel_malloc(heap, size);
	struct kl_heap *h = kl_heap_get(heap);
	if (!h)
		return NULL;
	if (size == 0) {
		keel_free(heap, p);
		return NULL;
	}
	struct kl_op op;
	struct kl_blockinfo bi;
	kl_op_begin(h, &op);
	int err = kl_locate(h, (uintptr_t)p, &bi);
	if (!err && h->checked && !kl_chk_canary_ok(h, (uintptr_t)p, bi.usable)) {
		err = KEEL_EOVERFLOW;
		kl_report(h, err, (uintptr_t)p);
	}
	if (err || size > KL_MAX_REQUEST) {
		h->failed++;
		kl_op_end(h, &op);
		return NULL;
	}
	/* In place (never in checked mode, where every move lets the old block
	 * wait in the quarantine): a small slot that still fits and is not
	 * mostly empty; a small slot that still fits and is not mostly empty; a
	 * medium block that can shrink or grow into its neighbour; a large
	 * block that still fits and would not waste half its pages. */
	int in_place = 0;
	if (h->checked) {
		in_place = 0;
	} else if (bi.kind == KEEL_KIND_SMALL) {
		in_place =
		        size <= bi.usable && (size > bi.usable / 2 ||
		                              kl_small_class(size) == (unsigned)(bi.run->cls - 1));
	} else if (bi.kind == KEEL_KIND_MEDIUM) {
		if (kl_medium_resize(h, &op, bi.seg, (uintptr_t)p, size) == 0) {
			struct kl_blk *b = kl_blk_of(p);
			size_t usable = kl_medium_usable(b);
			h->in_use_bytes = h->in_use_bytes - bi.usable + usable;
			h->requested_bytes =
			        h->requested_bytes - bi.requested + usable - kl_blk_slack(b);
			if (h->in_use_bytes > h->peak_in_use)
				h->peak_in_use = h->in_use_bytes;
			in_place = 1;
		}
	} else if (size <= bi.usable && size > bi.usable / 2) {
		h->requested_bytes = h->requested_bytes - bi.requested + size;
		bi.seg->requested = size;
		in_place = 1;
	}
	if (in_place) {
		kl_op_end(h, &op);
		return p;
	}
	int fresh;
	void *q = kl_alloc_locked(h, &op, size, bi.align, &fresh);
	kl_op_end(h, &op);
	if (!q)
		return NULL;
	KL_VG_ALLOC(q, size, fresh); /* before the copy, which makes it defined */
	kl_memcpy(q, p, size < bi.usable ? size : bi.usable);
	keel_free(heap, p);
	return q;
}

int keel_stats(struct keel_heap *heap, struct keel_stats *out)
{
	struct kl_heap *h = kl_heap_get(heap);
	if (!h || !out)
		return KEEL_EINVAL;
	uintptr_t t = heap_lock(h);
	out->requested_bytes = h->requested_bytes;
	out->in_use_bytes = h->in_use_bytes;
	out->peak_in_use_bytes = h->peak_in_use;
	out->source_bytes = h->source_bytes;
	out->peak_source_bytes = h->peak_source;
	out->region_bytes = h->region_bytes;
	out->free_bytes = h->medium_free_bytes + h->small_free_bytes + h->nempty_runs * KL_RUN +
	                  h->empty_bytes + h->large_cached_bytes;
	out->largest_free = kl_medium_largest(h);
	if (h->parked && h->parked->bytes > out->largest_free)
		out->largest_free = h->parked->arena_end - h->parked->arena - KL_BLK_HDR;
	size_t mfree = h->medium_free_bytes + h->empty_bytes;
	out->fragmentation_pct = mfree && out->largest_free < mfree
	                                 ? (unsigned)(100 - out->largest_free * 100 / mfree)
	                                 : 0;
	out->live_blocks = h->live_blocks;
	out->alloc_count = h->alloc_count;
	out->free_count = h->free_count;
	out->failed_allocs = h->failed;
	out->source_maps = h->maps;
	out->source_unmaps = h->unmaps;
	out->source_failures = h->source_failures;
	out->segments = h->nsegs;
	out->large_blocks = h->nlarge;
	for (unsigned i = 0; i < KL_NCLASSES; i++) {
		out->class_count[i] = h->class_live[i];
		out->class_size[i] = h->cls[i].size;
	}
	heap_unlock(h, t);
	return 0;
}

size_t keel_trim(struct keel_heap *heap)
{
	KL_VG_SCOPE;
	struct kl_heap *h = kl_heap_get(heap);
	if (!h)
		return 0;
	struct kl_op op;
	kl_op_begin(h, &op);
	if (h->checked)
		kl_chk_quarantine_flush(h, &op);
	kl_xfer_flush(h, &op);
	kl_small_trim(h, &op);
	size_t decommitted = kl_seg_trim(h, &op);
	/* counted as queued, not as source_bytes fell: other calls may map
	 * while the lock is dropped for the unmaps */
	size_t bytes = op.unmapped + decommitted;
	kl_op_end(h, &op);
	return bytes;
}

const char *keel_strerror(int err)
{
	switch (err) {
	case 0:
		return "success";
	case KEEL_ENOTOURS:
		return "pointer not owned by this heap";
	case KEEL_EINTERIOR:
		return "pointer inside a block, not at its start";
	case KEEL_EDOUBLE:
		return "double free";
	case KEEL_ECORRUPT:
		return "heap metadata corrupted";
	case KEEL_EINVAL:
		return "invalid argument";
	case KEEL_ENOMEM:
		return "out of memory";
	case KEEL_EOVERFLOW:
		return "write past the end of a block";
	case KEEL_EUSEAFTER:
		return "write to a block after its free";
	default:
		return "unknown error";
	}
}

/* Exported for the in-core walk and check (check.c). */
uintptr_t kl_lock(struct kl_heap *h)
{
	return heap_lock(h);
}

void kl_unlock(struct kl_heap *h, uintptr_t token)
{
	heap_unlock(h, token);
}

#ifdef KEEL_STD_NAMES
static struct keel_heap default_heap;

struct keel_heap *keel_default_heap(void)
{
	return &default_heap;
}

void *malloc(size_t size);
void free(void *p);
void *calloc(size_t n, size_t size);
void *realloc(void *p, size_t size);

void *malloc(size_t size)
{
	return keel_malloc(&default_heap, size);
}

void free(void *p)
{
	(void)keel_free(&default_heap, p);
}

void *calloc(size_t n, size_t size)
{
	return keel_calloc(&default_heap, n, size);
}

void *realloc(void *p, size_t size)
{
	return keel_realloc(&default_heap, p, size);
}
#endif
