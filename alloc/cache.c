/* cache.c: the per-thread (or per-CPU) front end. Small slots are kept in
 * bounded per-class stacks owned by one user, and freed medium blocks in
 * bins by free list, so the common malloc and free touch no lock; batches
 * move between a cache and its heap under the lock, and wait there whole
 * for the next cache that runs short. The core gives the object; the
 * environment decides who owns it. */
#include "internal.h"

/* The slots a batch holds: a full stack's spill list, given to the heap
 * whole, or a transfer batch taken back. Frees of a class that alternate
 * with its mallocs seldom fill a spill list of this many. */
#define KL_DRAIN 32u

/* A class's capacity starts at 16 KiB of slots (4 to 128 of them) and
 * doubles each time its stack runs empty and refills from the heap, up to
 * 32 KiB (8 to 512 slots): an idle class holds little, and a busy one seldom
 * reaches the heap where it frees and allocates in turn (it must wander from
 * a quarter full to empty, or up through a whole spill list). 64 KiB cost
 * the same instructions within 1% but held realloc's peak 4% higher and
 * threads2's 2%. A full class does not grow: a thread that only frees (a
 * consumer) would hold a whole stack a class of what its producer is waiting
 * for (prodcons peaked 17% higher). A cache's slots stay under 1.2 MiB, and
 * its medium bins under KL_CACHE_MED_BYTES and its share of the heap's
 * (below). Of the capacity, KL_DRAIN slots (half, for a class of fewer than
 * 64) are the spill list's. */
static void bin_size(struct kl_sbin *sb, uint32_t cap)
{
	sb->ndrain = cap / 2 < KL_DRAIN ? cap / 2 : KL_DRAIN;
	sb->b.max = cap - sb->ndrain;
}

static uint32_t bin_start(size_t size)
{
	size_t n = 16384 / size;
	return (uint32_t)(n > 128 ? 128 : n);
}

static void bin_grow(struct kl_sbin *sb, size_t size)
{
	size_t n = 32768 / size;
	uint32_t most = (uint32_t)(n > 512 ? 512 : n), cap = sb->b.max + sb->ndrain;
	bin_size(sb, cap * 2 < most ? cap * 2 : most);
}

static struct kl_cache *cache_of(struct keel_cache *c)
{
	return (struct kl_cache *)(void *)c;
}

/* Every bin, small or medium, is a stack linked through its blocks' first
 * word, with the secret in their second (K1). */
static inline void bin_push(struct kl_cache *c, struct kl_bin *b, void **p)
{
	p[0] = (void *)kl_link_s(c->secret, (uintptr_t)p, (uintptr_t)b->head);
	p[1] = (void *)c->secret;
	b->head = p;
	b->count++;
}

/* The top of b, or NULL if b is empty or its top lost the secret (written
 * after its free: the caller drops the bin). */
static inline void *bin_pop(struct kl_cache *c, struct kl_bin *b)
{
	void **p = b->head;
	if (KL_UNLIKELY(p == NULL || p[1] != (void *)c->secret))
		return NULL;
	b->head = (void **)kl_link_s(c->secret, (uintptr_t)p, (uintptr_t)p[0]);
	b->count--;
	p[1] = NULL; /* K1: no live block carries the secret */
	return p;
}

/* The size (header included) of the live medium block at p in arena s,
 * outside any run, or 0 if p is none. A used header with its canary (B7)
 * is a live block's; its line is the block's first, which the program has
 * usually just touched. Failing that (the block before is free, or p is
 * none), B5 makes a set bit at p a live block's user pointer. The bitmap
 * word is one line per 1 KiB of heap, mostly cold: read first, it cost a
 * medium free of the latency workload 250 cycles on average (fenced
 * probes), and such frees' p50 was 196-208 cycles (92-94 now). It is still
 * asked for at once, by a prefetch, which waits for nothing, so that where
 * the header cannot vouch its line comes in alongside the header's (the
 * block before is free for 30% of the medium blocks realloc's workload
 * looks up, 27% of mixed's, 10% of the latency run's): with the bitmap
 * read only after the header, realloc ran 3.5% longer than with it read
 * first (medians of 15), and free's p99 in the latency workload was 378
 * cycles against 354 (medians of 9). Header words are read as relaxed
 * atomics (internal.h, kl_head_store) and checked against the arena. */
static size_t medium_live_size(const struct kl_seg *s, uintptr_t secret, uintptr_t p)
{
	if (p < s->arena + KL_BLK_HDR || p >= s->arena_end)
		return 0;
	__builtin_prefetch(&s->bits[kl_bit_index(s, p) >> 6]);
	const struct kl_blk *b = kl_blk_of((void *)p);
	size_t head = __atomic_load_n(&b->head, __ATOMIC_RELAXED);
	size_t size = head & KL_B_SIZE_MASK;
	if ((head & (KL_B_FREE | KL_B_RUN)) || size < KL_MIN_BLOCK ||
	    size > s->arena_end - KL_BLK_HDR - (uintptr_t)b)
		return 0;
	if (!(head & KL_B_PREV_FREE) &&
	    __atomic_load_n(&b->prev_size, __ATOMIC_RELAXED) == kl_hdr_canary(secret, b))
		return size;
	return kl_bit_get(s, p) ? size : 0;
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

/* Make list (n slots, linked as in a bin) the empty bin b's stack and pop
 * its top; NULL if that lost its secret (the list reported and dropped). */
static void *bin_adopt(struct kl_cache *c, struct kl_bin *b, void **list, uint32_t n)
{
	b->head = list;
	b->count = n;
	void *s = bin_pop(c, b);
	if (!s)
		cache_bin_broken(c, b);
	return s;
}

/* ---- medium blocks (1 KiB to 64 KiB) ----------------------------------------
 * Freed blocks are kept one by one, a bin per free list (internal.h). A bin
 * holds 64 KiB of blocks and at least MBIN_MIN, but never more than the
 * heap takes whole (KL_CACHE_MED_BYTES), a cache KL_CACHE_MED_BYTES and the
 * steps it has reserved (below); a full bin is handed to the heap whole
 * (below) if it can be, or else grows if its list serves mallocs
 * (mbin_grow), and past that a free goes to the heap's TLSF.
 * A malloc takes from its bin or the nearest holding one of the next
 * MBIN_UP (mbin_pop), or a bin the heap holds.
 * With 64 KiB alone a bin held four blocks of 16 KiB, and 3.1k of the
 * latency workload's frees per million went to the TLSF past a full bin,
 * 0.1k past the cache's room (fenced probes); with MBIN_MIN 0.7k and 0.8k:
 * free's p99 238 -> 218 cycles, p99.9 860 -> 792 (medians of 11), for
 * mixed's peak +2.5%. Bins of 256 KiB sent as few (1.5k in all) for mixed's
 * peak +4.4% (more blocks of 4-16 KiB kept apart from their neighbours). A
 * bin past what the heap takes whole could never be handed on: bound only
 * by the cache's room, prodcons' peak rose by a fifth. */
#define MBIN_MIN 16

/* A cache full of medium blocks may keep more, KL_MED_STEP at a time
 * reserved under the lock, granted while all caches' steps stay within 1/16
 * of the heap's live bytes of the moment (a heap whose live bytes fall later
 * takes nothing back by force); a step goes back once the cache's blocks are
 * two steps under its cap, and all of them at keel_cache_flush. Sizes spread
 * over many lists find their own list empty often: with 256 KiB a cache
 * served 71% of the latency workload's medium mallocs, and 28% of its medium
 * frees went to the TLSF under the lock (lock, neighbours' headers and list
 * links). With the share the cache grows to about 1 MiB there: free's p99
 * 776 -> 680 cycles (medians of 5), instructions -3.1% and time -7%, and on
 * mixed -3.2% and -6% (medians of 7), for peak RSS +3.3% on mixed (1.1 MB),
 * +0.7% on latency, realloc's and prodcons' the same within noise. A share
 * of 1/32 then (in 256 KiB steps) saved twice the instructions for twice
 * that memory and realloc +4.8%: the blocks a cache keeps also keep their
 * free neighbours from merging. With 1/64 and bins that grow (mbin_grow)
 * the room was what sent frees to the TLSF (1.6k per million); 1/16 took
 * that to 0.1k, free's p99.9 714 -> 450 cycles and malloc's 960 -> 806
 * (latency, medians of 5, interleaved; mimalloc's 402 and 1048), and peak
 * RSS the same within 1% on mixed, realloc, prodcons, threads4, frag and
 * latency; 1/32 stopped halfway (582 cycles), 1/8 gained nothing more. On
 * its own 1/16 sent as many past full bins instead (1.2k in all). The
 * share bounds what all caches add, however many threads. After a refusal
 * a cache asks again only MED_RETRY frees past its cap later (or once it
 * has given a step back), so a heap whose share is spent costs one lock
 * more per 32 such frees. */
#define MED_RETRY 32
static int mbin_reserve(struct kl_cache *c)
{
	if (c->med_retry) {
		c->med_retry--;
		return 0;
	}
	struct kl_heap *h = c->heap;
	uintptr_t t = kl_lock(h);
	int ok = h->med_reserved + KL_MED_STEP <= h->in_use_bytes >> KL_MED_SHARE_SHIFT;
	if (ok)
		h->med_reserved += KL_MED_STEP;
	kl_unlock(h, t);
	if (ok)
		c->med_cap += KL_MED_STEP;
	else
		c->med_retry = MED_RETRY;
	return ok;
}

/* Give one step back: the cache's blocks are two steps under its cap. */
static __attribute__((noinline)) void mbin_release(struct kl_cache *c)
{
	struct kl_heap *h = c->heap;
	uintptr_t t = kl_lock(h);
	h->med_reserved -= KL_MED_STEP;
	kl_unlock(h, t);
	c->med_cap -= KL_MED_STEP;
	c->med_retry = 0; /* its next step may be granted again */
}

/* Keep mheld's bit for medium bin i as the bin is: holding a block or not. */
static inline void mbin_note(struct kl_cache *c, unsigned i)
{
	uint64_t bit = (uint64_t)1 << (i & 63);
	if (c->mbins[i].head)
		c->mheld[i >> 6] |= bit;
	else
		c->mheld[i >> 6] &= ~bit;
}

/* The smallest block size of medium bin i. */
static size_t mbin_low(unsigned i)
{
	unsigned f = KL_MBIN_F_LO + i / KL_SL_COUNT;
	return (KL_SL_COUNT + (size_t)(i % KL_SL_COUNT)) << (f - KL_SL_SHIFT);
}

/* The medium bin of blocks of bsize bytes (header included), or -1. */
static int mbin_of(size_t bsize)
{
	if (bsize < ((size_t)1 << KL_MBIN_F_LO) || bsize >= ((size_t)2 << KL_MBIN_F_HI))
		return -1;
	unsigned f = kl_fls(bsize);
	return (int)((f - KL_MBIN_F_LO) * KL_SL_COUNT +
	             ((bsize >> (f - KL_SL_SHIFT)) & (KL_SL_COUNT - 1)));
}

/* Free every block of the list (linked as in a bin, the secret in each),
 * lock held; a block that lost its secret ends the list, reported. */
static void mlist_back(struct kl_heap *h, struct kl_op *op, void **list)
{
	while (list) {
		void **p = list;
		if (p[1] != (void *)h->secret) {
			kl_report(h, KEEL_ECORRUPT, (uintptr_t)p);
			return;
		}
		list = (void **)kl_link(h, (uintptr_t)p, (uintptr_t)p[0]);
		p[1] = NULL; /* K1: it leaves the cache, a live block again */
		struct kl_blockinfo bi;
		if (kl_locate(h, (uintptr_t)p, &bi) == 0)
			kl_free_locked(h, op, (uintptr_t)p, &bi);
		else
			kl_report(h, KEEL_ECORRUPT, (uintptr_t)p);
	}
}

/* Medium bins meet as small ones do on the transfer stacks, one batch per
 * list: a full bin is handed to the heap whole if the list's place is free,
 * and an empty bin takes what is there. The place is read unlocked first
 * (relaxed atomics, written under the lock) so a miss costs no lock. The
 * places hold no more than one cache may (KL_CACHE_MED_BYTES) in all: a
 * program that frees medium blocks and never mallocs them (strings grown
 * by realloc, then freed) filled one place per list, 0.4 MB in realloc's
 * run, and a cap of 256 KiB left prodcons' time as it was (medians of 9:
 * 0.138 and 0.140 s) and took 0.9 MB off realloc's peak. */
static int mbin_hand_over(struct kl_cache *c, unsigned i)
{
	struct kl_heap *h = c->heap;
	struct kl_bin *b = &c->mbins[i];
	size_t bytes = (size_t)b->count * mbin_low(i);
	if (__atomic_load_n(&h->mxfer[i], __ATOMIC_RELAXED))
		return 0;
	uintptr_t t = kl_lock(h);
	int done = h->mxfer[i] == NULL && h->mxfer_bytes + bytes <= KL_CACHE_MED_BYTES;
	if (done) {
		h->mxfer_bytes += bytes;
		h->mxfer_len[i] = b->count;
		__atomic_store_n(&h->mxfer[i], b->head, __ATOMIC_RELAXED);
	}
	kl_unlock(h, t);
	if (done) {
		c->med_bytes -= bytes;
		b->head = NULL;
		b->count = 0;
		mbin_note(c, i);
	}
	return done;
}

static void mbin_take_over(struct kl_cache *c, unsigned i)
{
	struct kl_heap *h = c->heap;
	struct kl_bin *b = &c->mbins[i];
	if (!__atomic_load_n(&h->mxfer[i], __ATOMIC_RELAXED))
		return;
	uintptr_t t = kl_lock(h);
	void **list = h->mxfer[i];
	uint32_t n = h->mxfer_len[i];
	if (list)
		h->mxfer_bytes -= (size_t)n * mbin_low(i);
	__atomic_store_n(&h->mxfer[i], NULL, __ATOMIC_RELAXED);
	kl_unlock(h, t);
	if (list) {
		b->head = list;
		b->count = n;
		c->med_bytes += (size_t)n * mbin_low(i);
		mbin_note(c, i);
	}
}

/* The blocks medium bin i holds at first: 64 KiB of them, at least MBIN_MIN,
 * at most what the heap takes whole. */
static uint32_t mbin_start(unsigned i)
{
	size_t n = ((size_t)64 << 10) / mbin_low(i), most = KL_CACHE_MED_BYTES / mbin_low(i);
	n = n > MBIN_MIN ? n : MBIN_MIN;
	return (uint32_t)(n < most ? n : most);
}

/* A full bin whose blocks the heap would not take (its place there holds a
 * list already) grows by half, to MBIN_GROW_BYTES, if a malloc asked for
 * its list since it last grew and the cache has room for one more block or
 * is granted a step of the share (above): a size the thread both frees and
 * mallocs often walks its bin from empty to full and back, and every step
 * past full was a free under the lock. A bin past what the heap takes
 * whole is never handed on, so a bin only a thread's frees fill (a
 * consumer's) does not grow. Measured on the latency workload, whose sizes
 * clamped at 16 KiB make one list of 1.75% of its requests: a bin of 16
 * blocks and the heap's place of 16 more sent 0.5k of its frees per
 * million to the TLSF past them, five in six of all frees past a full bin.
 * Grown, the bins fill the cache's room instead: with a share of 1/64 the
 * TLSF frees went 1.7k -> 1.6k per million, with 1/16 to 0.1k. */
#define MBIN_GROW_BYTES ((size_t)4 << 20)
static int mbin_grow(struct kl_cache *c, unsigned i, size_t low)
{
	struct kl_bin *b = &c->mbins[i];
	uint64_t bit = (uint64_t)1 << (i & 63);
	uint32_t max = b->max + b->max / 2;
	if (!(c->masked[i >> 6] & bit) || max == b->max || (size_t)max * low > MBIN_GROW_BYTES ||
	    (c->med_bytes + low > c->med_cap && !mbin_reserve(c)))
		return 0;
	c->masked[i >> 6] &= ~bit;
	b->max = max;
	return 1;
}

/* A kept medium block for size bytes aligned to align, or NULL: from the
 * request's own list, or failing that the nearest of the next MBIN_UP
 * lists (a sixteenth of a power of two more each) that holds one, found
 * through mheld without looking at empty bins. With sizes spread over many
 * lists a request's own list is often empty while the cache is full, and
 * then a free goes to the TLSF under the lock: looking 8 lists up (a block
 * up to half a power of two larger) instead of 2, the latency workload's
 * free p99 went 342 -> 252 cycles and its p99.9 1210 -> 940, malloc's
 * p99.9 1540 -> 1166 (medians of 7), mixed ran 5% faster (medians of 7,
 * twice), peak RSS the same within 0.3%; prodcons ran 5% longer
 * (medians of 9 and 11; a producer that takes larger blocks takes over
 * fewer of its consumer's bins) with a lower peak. */
#define MBIN_UP 8
/* p, a kept block whose address suits align, goes to a request for align
 * above what its header records: record it there, as keel_aligned_alloc
 * would (keel_realloc keeps the alignment the header records), under the
 * lock, since a free of the block before p writes the same word. */
__attribute__((noinline)) static void mbin_align(struct kl_cache *c, void *p, size_t align)
{
	struct kl_op op;
	kl_op_begin(c->heap, &op);
	struct kl_blk *b = kl_blk_of(p);
	kl_head_store(b,
	              (b->head & ~KL_B_ALIGN_MASK) | ((size_t)kl_fls(align) << KL_B_ALIGN_SHIFT));
	kl_op_end(c->heap, &op);
}

static void *mbin_pop(struct kl_cache *c, size_t size, size_t align)
{
	int i0 = mbin_of(kl_medium_need(size));
	if (i0 < 0)
		return NULL;
	c->masked[i0 >> 6] |= (uint64_t)1 << (i0 & 63);
	if (!c->mbins[i0].head && c->mbins[i0].max)
		mbin_take_over(c, (unsigned)i0);
	unsigned last = (unsigned)i0 + MBIN_UP < KL_NMBINS ? (unsigned)i0 + MBIN_UP : KL_NMBINS - 1;
	for (unsigned i = (unsigned)i0; i <= last; i++) {
		uint64_t held = c->mheld[i >> 6] >> (i & 63);
		if (!held) { /* none left in this word */
			i |= 63;
			continue;
		}
		i += kl_ffs(held);
		struct kl_bin *b = &c->mbins[i];
		if (i > last || ((uintptr_t)b->head & (align - 1)))
			continue;
		void *p = bin_pop(c, b);
		if (!p) { /* written after its free */
			cache_bin_broken(c, b);
			mbin_note(c, i);
			return NULL;
		}
		mbin_note(c, i);
		c->med_bytes -= mbin_low((unsigned)i);
		if (KL_UNLIKELY(c->med_cap > KL_CACHE_MED_BYTES &&
		                c->med_bytes + 2 * KL_MED_STEP <= c->med_cap))
			mbin_release(c);
		if (align > KL_GRAN &&
		    ((__atomic_load_n(&kl_blk_of(p)->head, __ATOMIC_RELAXED) & KL_B_ALIGN_MASK) >>
		     KL_B_ALIGN_SHIFT) < (size_t)kl_fls(align))
			mbin_align(c, p, align);
		return p;
	}
	return NULL;
}

/* Keep p, a pointer into arena s outside any run, if it is a live medium
 * block of a kept size and there is room; 1 if kept. Anything else (a
 * stranger, a double free) is left to keel_free to settle and report. */
static int mbin_push(struct kl_cache *c, const struct kl_seg *s, uintptr_t p)
{
	void **blk = (void **)p;
	size_t size = medium_live_size(s, c->secret, p);
	int i = size ? mbin_of(size) : -1;
	if (i < 0 || blk[1] == (void *)c->secret)
		return 0;
	struct kl_bin *b = &c->mbins[i];
	size_t low = mbin_low((unsigned)i);
	if (b->count >= b->max && !mbin_hand_over(c, (unsigned)i) &&
	    !mbin_grow(c, (unsigned)i, low))
		return 0;
	/* At the cap the cache asks for a step of the share (above); refused,
	 * the list's own blocks go to the heap whole, if their place there is
	 * free, to make room: a thread that only frees (a consumer) hands on
	 * what another waits for, where every further free would go to the
	 * heap's lists under the lock (prodcons ran twice as long). */
	if (c->med_bytes + low > c->med_cap && !mbin_reserve(c) && b->count)
		mbin_hand_over(c, (unsigned)i);
	/* Past the room the block goes to the TLSF now. Deferred instead to the
	 * cache's next malloc that takes the lock (a list of up to 16 blocks,
	 * two freed by each such malloc), the latency workload's TLSF frees
	 * fell from 3.8k to 0.4k per million and free's p99.9 by a third, but
	 * malloc's p99.9 rose as much (1.9-2.6k -> 2.7-3.7k cycles, medians of
	 * 7, three times): the same work, timed in the other call. Deferred
	 * to a list of the cache's own, given to the TLSF 16, 32 or 64 at a
	 * time under one lock, free's p99 fell (458 -> 358-376) but its p99.9
	 * rose from 1512 to 4100-5000: every allocator has 650-950 frees per
	 * million stalled by the machine past 3000 cycles, and the batches
	 * added enough to that to set p99.9. */
	if (c->med_bytes + low > c->med_cap)
		return 0;
	bin_push(c, b, blk);
	mbin_note(c, (unsigned)i);
	c->med_bytes += low;
	return 1;
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
	c->leaf_key = UINTPTR_MAX; /* no pointer's: the first free looks its leaf up */
	/* A checked heap's caches hold nothing (every free goes through
	 * keel_free's checks): a bin of capacity 0 sends every call there. */
	for (unsigned i = 0; i < KL_NCLASSES; i++)
		bin_size(&c->bins[i], h->checked ? 0 : bin_start(h->cls[i].size));
	for (unsigned g = 0; g <= KL_SMALL_MAX / KL_GRAN; g++)
		c->class_of[g] = (uint8_t)kl_small_class(g * KL_GRAN);
	for (unsigned i = 0; i < KL_NMBINS && !h->checked; i++)
		c->mbins[i].max = mbin_start(i);
	c->med_cap = KL_CACHE_MED_BYTES;
	uintptr_t t = kl_lock(h);
	h->has_caches = 1;
	kl_unlock(h, t);
	return 0;
}

/* Fill bin cls with up to a quarter of its capacity from the heap's runs
 * and return one more slot for the caller, or fall back to a plain
 * allocation (a medium block from held memory, or a new segment) when no
 * run has a free slot. Every slot pushed is written, so its page counts in
 * the process's memory from then on: refills of half the capacity held
 * prodcons' peak 8% higher, for the same instruction count. */
static void *cache_refill(struct kl_cache *c, unsigned cls, size_t size, size_t align)
{
	struct kl_heap *h = c->heap;
	struct kl_sbin *sb = &c->bins[cls];
	struct kl_bin *b = &sb->b;
	size_t csize = h->cls[cls].size;
	struct kl_op op;
	int fresh;
	if (sb->spill && !b->head) { /* the class's own spill list first, no lock */
		void **list = sb->spill;
		sb->spill = NULL;
		void *s = bin_adopt(c, b, list, sb->nspill);
		sb->nspill = 0;
		if (s)
			return s;
	}
	bin_grow(sb, csize);
	kl_op_begin(h, &op);
	if (h->nxfer[cls] && !b->head) { /* a batch another cache gave (still live) */
		unsigned k = --h->nxfer[cls];
		void **list = h->xfer[cls][k];
		uint32_t n = h->xfer_len[cls][k];
		kl_op_end(h, &op);
		void *s = bin_adopt(c, b, list, n);
		if (s)
			return s;
		kl_op_begin(h, &op);
	}
	void *p = kl_small_alloc(h, &op, cls, 0, 0);
	if (!p) {
		p = kl_alloc_locked(h, &op, size, align, &fresh);
		kl_op_end(h, &op);
		return p;
	}
	/* never-used slots carved a run's worth at a time (pushed last first,
	 * so they pop in address order), else one by one off the runs' free
	 * lists */
	size_t got = 1, want = b->max / 4 + 1;
	while (got < want) {
		uintptr_t first;
		size_t k = kl_small_carve(h, cls, want - got, &first);
		for (size_t i = k; i-- > 0;)
			bin_push(c, b, (void **)(first + i * csize));
		got += k;
		if (k)
			continue;
		void **s = kl_small_alloc(h, &op, cls, 0, 0);
		if (!s)
			break;
		bin_push(c, b, s);
		got++;
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

/* An empty bin of class cls (or a broken one, reported and dropped): refill
 * it from the heap and return a slot for size bytes aligned to align. */
static void *cache_class_slow(struct kl_cache *c, unsigned cls, size_t size, size_t align)
{
	struct kl_bin *b = &c->bins[cls].b;
	if (b->head)
		cache_bin_broken(c, b);
	return cache_refill(c, cls, size, align);
}

/* Everything keel_cache_malloc's few instructions leave: an empty or
 * broken bin, a request above the small sizes, checked mode (whose caches
 * stay empty: its frees all go through keel_free). */
__attribute__((noinline, cold)) static void *cache_malloc_slow(struct kl_cache *c, size_t size,
                                                               size_t align)
{
	struct keel_heap *heap = (struct keel_heap *)(void *)c->heap;
	if (size > KL_SMALL_MAX && size <= KL_SLOT_MAX && !c->heap->checked &&
	    kl_natural_align(size, align) > KL_GRAN) /* 2 or 4 KiB: a slot of its size */
		return keel_cache_aligned_alloc((struct keel_cache *)(void *)c, size, size);
	if (size > KL_SMALL_MAX || c->heap->checked) {
		void *p = size > KL_SMALL_MAX ? mbin_pop(c, size, kl_natural_align(size, align))
		                              : NULL;
		if (p)
			return p;
		return align > KL_GRAN ? keel_aligned_alloc(heap, align, size)
		                       : keel_malloc(heap, size);
	}
	return cache_class_slow(c, c->class_of[(size + KL_GRAN - 1) >> KL_GRAN_SHIFT], size, align);
}

/* The top slot of the bin serving size (at most KL_SMALL_MAX), or NULL. */
static inline void *cache_pop(struct kl_cache *c, size_t size)
{
	return bin_pop(c, &c->bins[c->class_of[(size + KL_GRAN - 1) >> KL_GRAN_SHIFT]].b);
}

void *keel_cache_malloc(struct keel_cache *cache, size_t size)
{
	struct kl_cache *c = cache_of(cache);
	void *p;
	if (KL_LIKELY(size <= KL_SMALL_MAX) && KL_LIKELY((p = cache_pop(c, size)) != NULL))
		return p;
	return cache_malloc_slow(c, size, KL_GRAN);
}

/* keel_cache_aligned_alloc's other cases: a bad or small alignment, an
 * alignment or size past KL_SLOT_MAX, checked mode, an empty bin. */
__attribute__((noinline)) static void *cache_aligned_slow(struct kl_cache *c, size_t align,
                                                          size_t size)
{
	struct keel_heap *heap = (struct keel_heap *)(void *)c->heap;
	if (align == 0 || (align & (align - 1)) || align > KEEL_MAX_ALIGN)
		return NULL; /* as keel_aligned_alloc */
	if (align <= KL_GRAN)
		return keel_cache_malloc((struct keel_cache *)(void *)c, size);
	if (align > KL_SLOT_MAX || size > KL_SLOT_MAX) {
		/* a kept medium block whose address suits, else the heap with the
		 * size asked */
		void *p = mbin_pop(c, size > KL_SMALL_MAX ? size : KL_SMALL_MAX + 1, align);
		return p ? p : keel_aligned_alloc(heap, align, size);
	}
	if (c->heap->checked) /* its caches keep nothing; and the size asked is exact */
		return keel_aligned_alloc(heap, align, size);
	size_t n = kl_align_up(size ? size : 1, align);
	unsigned cls = n <= KL_SMALL_MAX ? c->class_of[n >> KL_GRAN_SHIFT] : kl_small_class(n);
	void *p = bin_pop(c, &c->bins[cls].b); /* size 0 comes here with its bin unread */
	return p ? p : cache_class_slow(c, cls, n, align);
}

/* Every class is a multiple of 16, above 256 bytes of 32, above 512 of 64,
 * above 1 KiB of 256, above 2 KiB of 512, and every power of two is a
 * class (each range holds every such multiple): so a
 * size rounded up to a multiple of a power-of-two align (to 4 KiB) is served
 * by a class whose size is a multiple of align, and since slot i of a run
 * sits at the run's 16 KiB-aligned start plus i * size, each of its slots is
 * aligned. always_inline as keel_cache_free: the drop-in's aligned
 * allocations pop a slot without a call. A checked heap's bins are empty
 * (capacity 0), so its requests all reach the slow path. */
inline __attribute__((always_inline)) void *keel_cache_aligned_alloc(struct keel_cache *cache,
                                                                     size_t align, size_t size)
{
	struct kl_cache *c = cache_of(cache);
	if (KL_LIKELY(align - (KL_GRAN + 1) < KL_SLOT_MAX - KL_GRAN && !(align & (align - 1)) &&
	              size - 1 < KL_SLOT_MAX)) {
		size_t n = kl_align_up(size, align);
		unsigned cls =
		        n <= KL_SMALL_MAX ? c->class_of[n >> KL_GRAN_SHIFT] : kl_small_class(n);
		KL_ASSERT((c->heap->cls[cls].size & (align - 1)) == 0);
		void *p = bin_pop(c, &c->bins[cls].b);
		if (KL_LIKELY(p != NULL))
			return p;
	}
	return cache_aligned_slow(c, align, size);
}

/* Give up to n slots of the list at *list (linked as in a bin, the secret
 * in each; of any classes) back to their runs, lock held, and uncount them.
 * Each was checked live when it came in and has been a cache's since, so it
 * goes straight back. A slot that lost its secret (written after its free:
 * its link cannot be trusted) ends the list: reported, and it and the rest
 * stay counted as live, never reused. Returns how many went back. */
static uint32_t slots_back(struct kl_heap *h, struct kl_op *op, void ***list, uint32_t n)
{
	uint32_t gone = 0;
	size_t bytes = 0;
	struct kl_seg *seg = NULL; /* the last slot's: neighbours share one */
	while (gone < n && *list) {
		void **s = *list;
		if (s[1] != (void *)h->secret) {
			kl_report(h, KEEL_ECORRUPT, (uintptr_t)s);
			*list = NULL;
			break;
		}
		*list = (void **)kl_link(h, (uintptr_t)s, (uintptr_t)s[0]);
		s[1] = NULL; /* K1: the slot leaves the cache */
		if (!seg || (uintptr_t)s - seg->base >= seg->bytes)
			seg = kl_seg_find(h, (uintptr_t)s).seg;
		unsigned cls = kl_chunk_class(seg, (uintptr_t)s) - 1;
		KL_ASSERT(kl_slot_live(seg, cls + 1, (uintptr_t)s));
		kl_small_free(h, op, seg, kl_run_of(seg, (uintptr_t)s), (uintptr_t)s);
		bytes += h->cls[cls].size;
		h->class_live[cls]--;
		gone++;
	}
	h->in_use_bytes -= bytes;
	h->requested_bytes -= bytes;
	h->live_blocks -= gone;
	h->free_count += gone;
	return gone;
}

/* ---- transfer stacks -----------------------------------------------------
 * A full stack's spill list goes to the heap as one batch, still linked and
 * still K1, on a short per-class stack; an empty stack takes a whole batch
 * back. A batch moves under the lock in O(1), where giving slots back to
 * their runs and taking them out again costs a run update each: so a thread
 * that allocates what another frees (a producer and a consumer) meets it
 * there, and holds the lock briefly. Past KL_XFER_MAX batches slots go back
 * to their runs; keel_trim and keel_cache_flush empty the stacks. The spill
 * list was built a push at a time, so handing it on walks nothing (cutting
 * the top KL_DRAIN slots off a full stack instead walked 32 links, most of
 * them out of the CPU's caches: a free's p99.9 of 3000-4500 cycles). */
__attribute__((noinline)) static void cache_give(struct kl_cache *c, unsigned cls)
{
	struct kl_heap *h = c->heap;
	struct kl_sbin *sb = &c->bins[cls];
	void **head = sb->spill;
	uint32_t n = sb->nspill;
	sb->spill = NULL;
	sb->nspill = 0;
	struct kl_op op;
	kl_op_begin(h, &op);
	if (h->nxfer[cls] < KL_XFER_MAX) {
		h->xfer[cls][h->nxfer[cls]] = head;
		h->xfer_len[cls][h->nxfer[cls]++] = (uint8_t)n;
	} else {
		slots_back(h, &op, &head, n);
	}
	kl_op_end(h, &op);
}

/* Push the slot (checked live, not in a cache) on the spill list of class
 * cls, whose stack is full, and hand the list on once it is full too. */
static inline void cache_spill(struct kl_cache *c, unsigned cls, void **slot)
{
	struct kl_sbin *sb = &c->bins[cls];
	slot[0] = (void *)kl_link_s(c->secret, (uintptr_t)slot, (uintptr_t)sb->spill);
	slot[1] = (void *)c->secret;
	sb->spill = slot;
	if (++sb->nspill >= sb->ndrain)
		cache_give(c, cls);
}

/* Every batch on every transfer stack, small and medium, back to the
 * heap, lock held. */
void kl_xfer_flush(struct kl_heap *h, struct kl_op *op)
{
	for (unsigned cls = 0; cls < KL_NCLASSES; cls++)
		while (h->nxfer[cls]) {
			void **list = h->xfer[cls][--h->nxfer[cls]];
			slots_back(h, op, &list, (uint32_t)-1);
		}
	for (unsigned i = 0; i < KL_NMBINS; i++) {
		void **list = h->mxfer[i];
		__atomic_store_n(&h->mxfer[i], NULL, __ATOMIC_RELAXED);
		mlist_back(h, op, list);
	}
	h->mxfer_bytes = 0;
}

/* The registry entry for p through the cache's leaf, looking the leaf up
 * (and keeping it) when p is outside it; 0 if p has none. A leaf node
 * stays for the heap's life once it has caches (kl_seg_trim), so the cache
 * may keep pointing at it. Only a canonical p: the registry's key drops
 * the top 16 bits, and the fast paths must not meet a p far from the
 * entry's segment. */
__attribute__((noinline)) static uintptr_t cache_entry_slow(struct kl_cache *c, uintptr_t p)
{
	const unsigned hi = KL_REG_BITS + KL_SEG_SHIFT - 1; /* p's bits from here: all 0 or all 1 */
	uintptr_t top = p >> hi;
	if (top != 0 && top != UINTPTR_MAX >> hi)
		return 0;
	const uintptr_t *leaf = kl_reg_leaf(c->heap, p);
	if (!leaf)
		return 0;
	c->leaf = leaf;
	c->leaf_key = p >> KL_LEAF_SHIFT;
	return leaf[kl_reg_key(p) & (KL_REG_NODE - 1)];
}

static inline uintptr_t cache_entry(struct kl_cache *c, uintptr_t p)
{
	if (KL_LIKELY(p >> KL_LEAF_SHIFT == c->leaf_key))
		return c->leaf[kl_reg_key(p) & (KL_REG_NODE - 1)];
	return cache_entry_slow(c, p);
}

/* The arena segment e (p's entry) names, or NULL if e is not an arena's.
 * The registry names only the heap's own segments (its entries are written
 * before a segment is used and cleared before it goes back), so an arena
 * found here is one of ours, and p lies in it: arenas from the source are
 * whole aligned segments, every entry naming it bare (S2), where a large
 * block's carry a tag, so the entry alone tells an arena. Regions are not
 * in the registry and take the slow paths. */
static inline const struct kl_seg *entry_arena(uintptr_t e)
{
	const struct kl_seg *s = (const struct kl_seg *)e;
	KL_ASSERT(!s || (e & KL_REG_TAGS) || s->kind == KL_SEG_ARENA);
	return e && !(e & KL_REG_TAGS) ? s : NULL;
}

/* Push p, whose registry entry is e, on its bin if p is a live small slot
 * not in a cache and the bin has room; 1 if pushed, 0 to take the slow path.
 * Unlocked: a live slot keeps its run and segment alive, so what we read of
 * them is stable. */
static inline int cache_push_slot(struct kl_cache *c, uintptr_t p, uintptr_t e)
{
	const struct kl_seg *s = entry_arena(e);
	if (!s)
		return 0;
	unsigned cls = kl_chunk_class(s, p); /* read once: a live slot's run keeps it */
	void **slot = (void **)p;
	if (!kl_slot_live(s, cls, p) || slot[1] == (void *)c->secret)
		return 0;
	struct kl_sbin *sb = &c->bins[cls - 1];
	if (KL_LIKELY(sb->b.count < sb->b.max))
		bin_push(c, &sb->b, slot);
	else if (sb->ndrain) /* 0 in checked mode, whose caches keep nothing */
		cache_spill(c, cls - 1, slot);
	else
		return 0;
	return 1;
}

/* keel_cache_free's other cases: checked mode, a medium block, a slot sitting
 * in a cache already, a pointer the fast path could not vouch for (keel_free
 * settles it under the lock). A live slot not in a cache never comes here:
 * the fast path keeps it, on its stack or its spill list. */
__attribute__((noinline)) static int cache_free_slow(struct kl_cache *c, void *ptr)
{
	struct kl_heap *h = c->heap;
	uintptr_t p = (uintptr_t)ptr;
	if (h->checked) /* every check of checked mode is in keel_free */
		return keel_free((struct keel_heap *)(void *)h, ptr);
	const struct kl_seg *s = entry_arena(cache_entry(c, p));
	if (s && !(p & (KL_GRAN - 1)) && p >= s->arena && p < s->arena_end) {
		unsigned cls = kl_chunk_class(s, p);
		if (cls == 0 && mbin_push(c, s, p))
			return 0;
		if (kl_slot_live(s, cls, p) && ((void **)ptr)[1] == (void *)c->secret)
			return KEEL_EDOUBLE; /* K1: it sits in a cache already */
	}
	return keel_free((struct keel_heap *)(void *)h, ptr);
}

/* always_inline: a link-time optimizer puts this fast path in its caller
 * (the drop-in's free: a call and the cache's address computed twice
 * saved); other callers see a plain function. */
inline __attribute__((always_inline)) int keel_cache_free(struct keel_cache *cache, void *ptr)
{
	struct kl_cache *c = cache_of(cache);
	uintptr_t p = (uintptr_t)ptr;
	if (KL_LIKELY(cache_push_slot(c, p, cache_entry(c, p))))
		return 0;
	if (!ptr)
		return 0;
	return cache_free_slow(c, ptr);
}

/* A small block that must move takes its new slot from the cache, and its
 * old slot goes back to its run, KL_DRAIN at a time (one lock): a block that
 * outgrew its class seldom comes back to it, and a wave of growing strings
 * (the realloc workload's 1024, appended to in turn) left every class's
 * stack and transfer batches full behind it. Cached, those slots also kept
 * their runs from emptying, and so from serving other classes, even with
 * only an eighth of a stack kept: the drop-in's peak was 1.8 MB (7%) higher
 * for that. Anything else (a block keel_aligned_alloc aligned keeps its
 * alignment there), and a pointer the cache cannot vouch for, is
 * keel_realloc's. */
void *keel_cache_realloc(struct keel_cache *cache, void *ptr, size_t size)
{
	struct kl_cache *c = cache_of(cache);
	struct kl_heap *h = c->heap;
	uintptr_t p = (uintptr_t)ptr;
	if (!ptr)
		return keel_cache_malloc(cache, size);
	const struct kl_seg *s = h->checked ? NULL : entry_arena(cache_entry(c, p));
	if (size && size <= KL_SMALL_MAX && s) {
		unsigned cls = kl_chunk_class(s, p);
		void **slot = ptr;
		if (kl_slot_live(s, cls, p) && slot[1] != (void *)c->secret) {
			size_t old = h->cls[cls - 1].size; /* as keel_realloc: stays if it fits */
			if (size <= old && (size > old / 2 || kl_small_class(size) == cls - 1))
				return ptr;
			if ((kl_run_where(kl_run_of(s, p)) & KL_RUN_ALIGNED) &&
			    (old & -old) > KL_GRAN)
				return keel_realloc((struct keel_heap *)(void *)h, ptr, size);
			void *q = keel_cache_malloc(cache, size);
			if (!q)
				return NULL;
			kl_memcpy(q, ptr, size < old ? size : old);
			bin_push(c, &c->moved, slot);
			if (c->moved.count >= KL_DRAIN) {
				struct kl_op op;
				kl_op_begin(h, &op);
				slots_back(h, &op, &c->moved.head, c->moved.count);
				c->moved.count = 0;
				kl_op_end(h, &op);
			}
			return q;
		}
	}
	return keel_realloc((struct keel_heap *)(void *)h, ptr, size);
}

/* Unlocked for a live small slot or medium block (as keel_cache_free and
 * mbin_push vouch for one); anything else asks the heap. 0 for a block
 * sitting in a cache (K1): the caller's pointer was freed. */
size_t keel_cache_usable_size(struct keel_cache *cache, const void *ptr)
{
	struct kl_cache *c = cache_of(cache);
	uintptr_t p = (uintptr_t)ptr;
	const struct kl_seg *s = c->heap->checked ? NULL : entry_arena(cache_entry(c, p));
	if (s && !(p & (KL_GRAN - 1))) {
		unsigned cls = kl_chunk_class(s, p);
		void *const *w = ptr;
		size_t size;
		if (cls) {
			size = kl_slot_live(s, cls, p) ? c->heap->cls[cls - 1].size : 0;
		} else {
			size = medium_live_size(s, c->secret, p);
			size = size ? size - KL_BLK_HDR : 0;
		}
		if (size)
			return w[1] == (void *)c->secret ? 0 : size;
	}
	return keel_usable_size((struct keel_heap *)(void *)c->heap, ptr);
}

void keel_cache_flush(struct keel_cache *cache)
{
	struct kl_cache *c = cache_of(cache);
	struct kl_op op;
	kl_op_begin(c->heap, &op);
	for (unsigned i = 0; i < KL_NCLASSES; i++) {
		struct kl_sbin *sb = &c->bins[i];
		slots_back(c->heap, &op, &sb->b.head, sb->b.count);
		slots_back(c->heap, &op, &sb->spill, sb->nspill);
		sb->b.count = sb->nspill = 0;
	}
	slots_back(c->heap, &op, &c->moved.head, c->moved.count);
	c->moved.count = 0;
	kl_xfer_flush(c->heap, &op);
	for (unsigned i = 0; i < KL_NMBINS; i++) {
		mlist_back(c->heap, &op, c->mbins[i].head);
		c->mbins[i].head = NULL;
		c->mbins[i].count = 0;
		if (!c->heap->checked)
			c->mbins[i].max = mbin_start(i); /* what the bin learnt goes too */
	}
	kl_memset(c->mheld, 0, sizeof c->mheld);
	kl_memset(c->masked, 0, sizeof c->masked);
	c->med_bytes = 0;
	c->heap->med_reserved -= c->med_cap - KL_CACHE_MED_BYTES; /* its steps go back */
	c->med_cap = KL_CACHE_MED_BYTES;
	c->med_retry = 0;
	kl_op_end(c->heap, &op);
}
