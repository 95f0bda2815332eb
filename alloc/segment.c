/* segment.c: where memory comes from and how a pointer finds its owner.
 * Arena segments (1 MiB from the page source, or a caller's region) feed
 * medium.c; large blocks are mappings of their own. The registry, a radix
 * map over the address space, tells in O(1) whether a pointer is ours. */
#include "internal.h"

/* The leaf slot for p, or NULL if its nodes are not there. */
static uintptr_t *reg_find_slot(const struct kl_heap *h, uintptr_t p)
{
	uintptr_t *leaf = kl_reg_leaf(h, p);
	return leaf ? &leaf[kl_reg_key(p) & (KL_REG_NODE - 1)] : NULL;
}

/* Where p's node of a level lives: the root's slot for its mid node (level
 * 0), the mid node's slot for its leaf (level 1); NULL if the mid node is
 * not there. */
static void **reg_node_slot(struct kl_heap *h, size_t k, int level)
{
	uintptr_t ***mid = &h->reg_root[k >> (2 * KL_REG_NODE_BITS)];
	if (level == 0)
		return (void **)mid;
	return *mid ? (void **)&(*mid)[(k >> KL_REG_NODE_BITS) & (KL_REG_NODE - 1)] : NULL;
}

/* Make the nodes for p's entry; 0 or -1 if the source refused. A node is
 * mapped with the lock dropped, and meanwhile another thread may have put
 * one there (ours goes back) or a keel_trim taken back the mid node the new
 * leaf was for (a mid node that indexes no leaf yet): so the slot is looked
 * up again, lock held, before the node goes in. */
static int reg_prepare(struct kl_heap *h, struct kl_op *op, uintptr_t p)
{
	size_t k = kl_reg_key(p);
	for (int level = 0; level < 2;) {
		void **at = reg_node_slot(h, k, level);
		if (!at) { /* the mid node went back */
			level = 0;
			continue;
		}
		if (*at) {
			level++;
			continue;
		}
		void *n = kl_op_map(h, op, KL_REG_NODE_BYTES, KL_PAGE);
		if (!n)
			return -1;
		at = reg_node_slot(h, k, level);
		if (!at || *at) {
			h->source_bytes -= KL_REG_NODE_BYTES;
			kl_op_unmap(h, op, n, KL_REG_NODE_BYTES);
			continue;
		}
		if (!h->source.zeroed)
			kl_memset(n, 0, KL_REG_NODE_BYTES);
		*at = n;
		h->reg_nodes++;
	}
	return 0;
}

/* Enter s over [base, base+bytes): an arena bare in every entry, a large
 * block with KL_REG_LARGE and, past its first, KL_REG_CONT. Makes every node first, so a refusal
 * changes nothing (nodes made on the way stay for later and go back in keel_trim). Making a node
 * drops the lock, and a keel_trim meanwhile may take back a node that indexes nothing yet: so check
 * them all again, lock held. */
static int reg_add(struct kl_heap *h, struct kl_op *op, struct kl_seg *s, uintptr_t base,
                   size_t bytes, int large)
{
	uintptr_t a;
	do {
		for (a = base; a < base + bytes; a += KL_SEG)
			if (reg_prepare(h, op, a) != 0)
				return -1;
		for (a = base; a < base + bytes && reg_find_slot(h, a); a += KL_SEG)
			;
	} while (a < base + bytes);
	for (a = base; a < base + bytes; a += KL_SEG)
		*reg_find_slot(h, a) = (uintptr_t)s | (large ? KL_REG_LARGE : 0) |
		                       (large && a != base ? KL_REG_CONT : 0);
	return 0;
}

static void reg_remove(struct kl_heap *h, uintptr_t base, size_t bytes, uintptr_t first)
{
	for (uintptr_t a = base; a < base + bytes; a += KL_SEG)
		*reg_find_slot(h, a) = a == base ? first : 0;
}

static void seg_link(struct kl_heap *h, struct kl_seg *s)
{
	s->prev = NULL;
	s->next = h->segs;
	if (h->segs)
		h->segs->prev = s;
	h->segs = s;
	h->nsegs++;
}

static void seg_unlink(struct kl_heap *h, struct kl_seg *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		h->segs = s->next;
	if (s->next)
		s->next->prev = s->prev;
	h->nsegs--;
}

/* Lay out an arena over [base, base+bytes) and list its one free block:
 *   [kl_seg | runs[nchunks] | bitmap | free block ... | sentinel] */
static void seg_init_arena(struct kl_heap *h, struct kl_seg *s, size_t bytes, int kind, int zeroed)
{
	uintptr_t base = (uintptr_t)s, end = base + bytes;
	uintptr_t cbase = kl_align_down(base, KL_RUN);
	size_t nchunks = (end - cbase + KL_RUN - 1) >> KL_RUN_SHIFT;
	uintptr_t runs =
	        kl_align_up(base + sizeof(struct kl_seg) + nchunks, 16); /* past the cmap */
	uintptr_t bits = kl_align_up(runs + nchunks * sizeof(struct kl_run), 8);
	size_t nbits = (end - cbase) >> KL_GRAN_SHIFT;
	size_t commit = kind == KL_SEG_ARENA && bytes == KL_BIG ? KL_BIG / KL_PAGE / 8 : 0;
	uintptr_t arena = kl_align_up(bits + kl_align_up(nbits, 64) / 8 + commit, KL_GRAN);
	if (!zeroed)
		kl_memset(s, 0, arena - base);
	s->magic = KL_SEG_MAGIC ^ base;
	s->heap = h;
	s->base = base;
	s->bytes = bytes;
	s->kind = (uint8_t)kind;
	s->is_empty = 0;
	s->nchunks = (uint32_t)nchunks;
	s->park_next = NULL;
	s->cbase = cbase;
	s->runs = (struct kl_run *)runs;
	s->bits = (uint64_t *)bits;
	s->arena = arena;
	s->arena_end = kl_align_down(end, KL_GRAN);
	struct kl_blk *b = (struct kl_blk *)arena;
	struct kl_blk *sentinel = (struct kl_blk *)(s->arena_end - KL_BLK_HDR);
	size_t size = (uintptr_t)sentinel - arena;
	b->prev_size = kl_hdr_canary(h->secret, b); /* B7: nothing before it is free */
	b->head = size | KL_B_FREE;
	sentinel->prev_size = size;
	sentinel->head = KL_B_PREV_FREE;
	kl_fit_insert(h, b);
	h->medium_free_bytes += size;
	seg_link(h, s);
}

/* Bytes a region needs for its own metadata and one minimal block. */
#define REGION_MIN ((size_t)4096)

int kl_seg_region(struct kl_heap *h, uintptr_t base, size_t len)
{
	if (base + len < base)
		return KEEL_EINVAL;
	uintptr_t b = kl_align_up(base, KL_GRAN), e = kl_align_down(base + len, KL_GRAN);
	if (b < base || e <= b || e - b < REGION_MIN) /* b < base: rounding up wrapped */
		return KEEL_EINVAL;
	if (e - b > KL_ARENA_MAX)
		e = b + KL_ARENA_MAX; /* what one arena can index; the rest is unused */
	for (unsigned i = 0; i < h->nregions; i++) {
		struct kl_seg *r = h->regions[i];
		if (b < r->base + r->bytes && r->base < e)
			return KEEL_EINVAL;
	}
	for (struct kl_seg *s = h->segs; s; s = s->next)
		if (s->kind != KL_SEG_REGION && b < s->base + s->bytes && s->base < e)
			return KEEL_EINVAL;
	if (h->nregions == KEEL_MAX_REGIONS)
		return KEEL_ENOMEM;
	struct kl_seg *s = (struct kl_seg *)b;
	seg_init_arena(h, s, e - b, KL_SEG_REGION, 0);
	h->regions[h->nregions++] = s;
	h->region_bytes += e - b;
	return 0;
}

static void large_release(struct kl_heap *h, struct kl_op *op, struct kl_seg *s);

/* Hand every parked arena and cached large block to op for unmapping. */
static void seg_drop_kept(struct kl_heap *h, struct kl_op *op)
{
	while (h->parked) {
		struct kl_seg *s = h->parked;
		h->parked = s->park_next;
		h->empty_bytes -= s->bytes;
		kl_seg_release(h, op, s);
	}
	while (h->large_cache)
		large_release(h, op, h->large_cache);
}

static size_t seg_decommit_free(struct kl_heap *h, struct kl_op *op);

/* Give back every parked arena and every cached large block, now, and the
 * free pages of the big arenas with the arenas left with none: a source
 * that refused a mapping (an address-space limit, say) may grant it once
 * these are returned. Returns whether any went back. */
static int seg_release_caches(struct kl_heap *h, struct kl_op *op)
{
	size_t before = h->source_bytes;
	seg_drop_kept(h, op);
	if (h->source.decommit)
		seg_decommit_free(h, op);
	if (h->source_bytes == before)
		return 0;
	kl_op_flush(h, op);
	return 1;
}

/* Map from the source; if it refuses, give back what is kept for reuse and
 * ask once more. */
static void *seg_map(struct kl_heap *h, struct kl_op *op, size_t bytes, size_t align)
{
	void *m = kl_op_map(h, op, bytes, align);
	if (!m && seg_release_caches(h, op))
		m = kl_op_map(h, op, bytes, align);
	if (m)
		h->unlisted_bytes += bytes; /* until seg_listed or seg_unmap_unlisted */
	return m;
}

/* The segment seg_map gave is listed now. */
static void seg_listed(struct kl_heap *h, size_t bytes)
{
	h->unlisted_bytes -= bytes;
}

/* Give back a mapping seg_map gave that never got listed. */
static void seg_unmap_unlisted(struct kl_heap *h, struct kl_op *op, void *m, size_t bytes,
                               int guarded)
{
	h->unlisted_bytes -= bytes;
	h->source_bytes -= bytes;
	if (guarded)
		kl_op_unmap_guarded(h, op, m, bytes);
	else
		kl_op_unmap(h, op, m, bytes);
}

/* The commit bits of big arena s over the pages [from, to) touches: counted,
 * or set or cleared (how = 0, 1, -1). Returns how many were set, or how many
 * changed. */
static size_t commit_bits(struct kl_seg *s, uintptr_t from, uintptr_t to, int how)
{
	uint64_t *m = kl_big_commit(s);
	size_t i = (from - s->base) / KL_PAGE, end = (to - s->base + KL_PAGE - 1) / KL_PAGE;
	size_t n = 0;
	while (i < end) {
		size_t lo = i & 63, len = end - i < 64 - lo ? end - i : 64 - lo;
		uint64_t mask = (len == 64 ? ~(uint64_t)0 : ((uint64_t)1 << len) - 1) << lo;
		uint64_t old = m[i >> 6];
		if (how > 0)
			m[i >> 6] = old | mask;
		else if (how < 0)
			m[i >> 6] = old & ~mask;
		n += (size_t)kl_popcount((how > 0 ? ~old : old) & mask);
		i += len;
	}
	return n;
}

static size_t commit_count(struct kl_seg *s, uintptr_t from, uintptr_t to)
{
	return to > from ? commit_bits(s, from, to, 0) : 0;
}

/* [from, to) of big arena s was just handed out (a block, or the bytes a
 * block grew by, with the header after it): its pages count as committed. */
void kl_big_take(struct kl_heap *h, struct kl_seg *s, uintptr_t from, uintptr_t to)
{
	h->big_used += to - from;
	h->big_committed += KL_PAGE * commit_bits(s, from, to + KL_BLK_HDR, 1);
}

/* Decommit the pages inside the free block b of big arena s (past its links,
 * before the next header) that hold memory. With the lock held: dropped,
 * another thread could take b or coalesce with it. Returns the bytes given
 * back (0 also when the source refuses: the pages stay as they were). */
size_t kl_big_decommit(struct kl_heap *h, struct kl_seg *s, struct kl_blk *b)
{
	uintptr_t from = kl_align_up((uintptr_t)b + KL_MIN_BLOCK, KL_PAGE);
	uintptr_t to = kl_align_down((uintptr_t)b + kl_blk_size(b), KL_PAGE);
	if (!commit_count(s, from, to) ||
	    h->source.decommit(h->source.ctx, (void *)from, to - from) != 0)
		return 0;
	size_t bytes = KL_PAGE * commit_bits(s, from, to, -1);
	h->big_committed -= bytes;
	return bytes;
}

/* Make room for a medium block of need bytes (header and alignment slack
 * included): a parked empty arena that holds it, else a new one from the
 * source, big for a need above KL_MEDIUM_MAX if the source can decommit.
 * Returns the arena, or NULL. */
struct kl_seg *kl_seg_grow(struct kl_heap *h, struct kl_op *op, size_t need)
{
	struct kl_seg *s, **pp = &h->parked;
	while ((s = *pp) != NULL && s->arena_end - s->arena - KL_BLK_HDR < need)
		pp = &s->park_next;
	if (s) {
		*pp = s->park_next;
		s->park_next = NULL;
		s->is_empty = 0;
		h->empty_bytes -= s->bytes;
		struct kl_blk *b = (struct kl_blk *)s->arena;
		kl_fit_insert(h, b);
		h->medium_free_bytes += kl_blk_size(b);
		return s;
	}
	if (!h->has_source)
		return NULL;
	size_t bytes = h->source.decommit && need > KL_MEDIUM_MAX ? KL_BIG : KL_SEG;
	void *m = seg_map(h, op, bytes, KL_SEG);
	if (!m)
		return NULL;
	s = (struct kl_seg *)m;
	if (reg_add(h, op, s, (uintptr_t)m, bytes, 0) != 0) {
		seg_unmap_unlisted(h, op, m, bytes, 0);
		return NULL;
	}
	seg_init_arena(h, s, bytes, KL_SEG_ARENA, h->source.zeroed);
	seg_listed(h, bytes);
	return s;
}

int kl_seg_all_free(const struct kl_seg *s)
{
	const struct kl_blk *b = (const struct kl_blk *)s->arena;
	return (b->head & KL_B_FREE) && (uintptr_t)b + kl_blk_size(b) == s->arena_end - KL_BLK_HDR;
}

/* Unregister s and hand its mapping to op, to be unmapped once unlocked. */
void kl_seg_release(struct kl_heap *h, struct kl_op *op, struct kl_seg *s)
{
	void *base = (void *)s->base;
	size_t bytes = s->bytes;
	if (kl_seg_big(s))
		h->big_committed -= KL_PAGE * commit_count(s, s->base, s->base + bytes);
	reg_remove(h, s->base, bytes, 0);
	seg_unlink(h, s);
	s->magic = 0;
	h->source_bytes -= bytes;
	kl_op_unmap(h, op, base, bytes);
}

/* The arena of s is one free block (S4): take it off the lists and keep the
 * segment for reuse while the retained bytes allow, else give it back. A big
 * arena stays listed while it holds pages (they are within dirty_max), and
 * goes back once they were decommitted. Regions stay as they are. */
void kl_seg_now_empty(struct kl_heap *h, struct kl_op *op, struct kl_seg *s)
{
	if (s->kind != KL_SEG_ARENA)
		return;
	struct kl_blk *b = (struct kl_blk *)s->arena;
	int big = kl_seg_big(s);
	if (big && commit_count(s, kl_align_up(s->arena + KL_MIN_BLOCK, KL_PAGE),
	                        kl_align_down(s->arena_end - KL_BLK_HDR, KL_PAGE)))
		return;
	kl_fit_remove(h, b);
	h->medium_free_bytes -= kl_blk_size(b);
	if (!big && h->empty_bytes + s->bytes <= h->retain_bytes) {
		s->is_empty = 1;
		s->park_next = h->parked;
		h->parked = s;
		h->empty_bytes += s->bytes;
	} else {
		kl_seg_release(h, op, s);
	}
}

/* A freed large block is kept (S5) while the cache holds at most
 * KL_LARGE_CACHE_MAX blocks and KL_LARGE_CACHE_BYTES: its pages are already
 * mapped and touched, so a program that frees and allocates big buffers in
 * turn does not pay a mapping and a page fault per page each time. The
 * smallest cached block that fits is taken, however much bigger: its pages
 * are resident whether it sits in the cache or holds a smaller block. */
static struct kl_seg *large_from_cache(struct kl_heap *h, size_t bytes, size_t align)
{
	struct kl_seg **best = NULL;
	for (struct kl_seg **pp = &h->large_cache; *pp; pp = &(*pp)->park_next) {
		struct kl_seg *s = *pp;
		if (s->bytes >= bytes && !(s->base & (align - 1)) &&
		    (!best || s->bytes < (*best)->bytes))
			best = pp;
	}
	if (!best)
		return NULL;
	struct kl_seg *s = *best;
	*best = s->park_next;
	s->park_next = NULL;
	s->is_empty = 0;
	h->nlarge_cached--;
	h->large_cached_bytes -= s->bytes;
	return s;
}

/* A block of its own for size bytes: a cached one that fits, or a mapping
 * aligned to at least a segment (so no two mappings share a registry
 * entry), the header in its last bytes.
 *   [user block ...................... | kl_seg]
 * *fresh says whether the block came straight from the source. */
static void large_init(struct kl_heap *h, struct kl_seg *s, uintptr_t base, size_t bytes)
{
	if (!h->source.zeroed)
		kl_memset(s, 0, sizeof(*s));
	s->magic = KL_SEG_MAGIC ^ (uintptr_t)s;
	s->heap = h;
	s->base = base;
	s->bytes = bytes;
	s->kind = KL_SEG_LARGE;
}

/* Checked mode: the block ends right at an inaccessible page, and another
 * comes first, the header on the page after it (alignments above a page put
 * the block at the first aligned address past the header instead), so the
 * block never reaches into the header's page (kl_op_unmap_guarded counts on
 * it):
 *   [guard | kl_seg ... | ...... block + canary | guard] */
static void *large_alloc_checked(struct kl_heap *h, struct kl_op *op, size_t size, size_t align,
                                 int *fresh)
{
	size_t body = kl_align_up(size + KL_CANARY_BYTES, KL_GRAN);
	size_t lead = align <= KL_PAGE ? 2 * KL_PAGE : align;
	size_t bytes = lead + kl_align_up(body, KL_PAGE) + KL_PAGE;
	if (bytes < size)
		return NULL;
	void *m = seg_map(h, op, bytes, align > KL_SEG ? align : KL_SEG);
	if (!m)
		return NULL;
	uintptr_t base = (uintptr_t)m, tail = base + bytes - KL_PAGE;
	struct kl_seg *s = (struct kl_seg *)(base + KL_PAGE);
	large_init(h, s, base, bytes);
	s->user = align <= KL_PAGE ? kl_align_down(tail - body, align) : base + lead;
	s->usable = size;
	s->align_shift = (uint8_t)kl_fls(align);
	s->requested = size;
	/* the guards go up (the lock dropped) while no one else can see the
	 * mapping: once registered and listed, it is whole */
	if (h->source.protect && kl_op_protect(h, op, m, KL_PAGE, KEEL_PROT_NONE) == 0) {
		if (kl_op_protect(h, op, (void *)tail, KL_PAGE, KEEL_PROT_NONE) == 0)
			s->guarded = 1;
		else
			kl_op_protect(h, op, m, KL_PAGE, KEEL_PROT_RW);
	}
	if (reg_add(h, op, s, base, bytes, 1) != 0) {
		s->magic = 0;
		seg_unmap_unlisted(h, op, m, bytes, s->guarded);
		return NULL;
	}
	seg_link(h, s);
	seg_listed(h, bytes);
	*fresh = h->source.zeroed;
	h->nlarge++;
	return (void *)s->user;
}

void *kl_large_alloc(struct kl_heap *h, struct kl_op *op, size_t size, size_t align, int *fresh)
{
	if (h->checked)
		return large_alloc_checked(h, op, size, align, fresh);
	size_t bytes = kl_align_up(size + KL_LARGE_HDR, KL_PAGE);
	if (bytes < size)
		return NULL;
	size_t map_align = align > KL_SEG ? align : KL_SEG;
	struct kl_seg *s = large_from_cache(h, bytes, map_align);
	if (s) {
		*fresh = 0;
	} else {
		void *m = seg_map(h, op, bytes, map_align);
		if (!m)
			return NULL;
		s = (struct kl_seg *)(void *)((char *)m + bytes - KL_LARGE_HDR);
		large_init(h, s, (uintptr_t)m, bytes);
		s->user = (uintptr_t)m;
		s->usable = bytes - KL_LARGE_HDR;
		if (reg_add(h, op, s, (uintptr_t)m, bytes, 1) != 0) {
			s->magic = 0;
			seg_unmap_unlisted(h, op, m, bytes, 0);
			return NULL;
		}
		seg_link(h, s);
		seg_listed(h, bytes);
		*fresh = h->source.zeroed;
	}
	s->align_shift = (uint8_t)kl_fls(align);
	s->requested = size;
	h->nlarge++;
	return (void *)s->base;
}

size_t kl_large_usable(const struct kl_seg *s)
{
	return s->usable;
}

/* Unregister a large block, leaving a tombstone where it started, and hand
 * its mapping to op. */
static void large_release(struct kl_heap *h, struct kl_op *op, struct kl_seg *s)
{
	if (s->is_empty) {
		struct kl_seg **pp = &h->large_cache;
		while (*pp != s)
			pp = &(*pp)->park_next;
		*pp = s->park_next;
		h->nlarge_cached--;
		h->large_cached_bytes -= s->bytes;
	}
	void *base = (void *)s->base;
	size_t bytes = s->bytes;
	int guarded = s->guarded;
	reg_remove(h, s->base, bytes, KL_REG_TOMB);
	seg_unlink(h, s);
	s->magic = 0;
	h->source_bytes -= bytes;
	if (guarded)
		kl_op_unmap_guarded(h, op, base, bytes);
	else
		kl_op_unmap(h, op, base, bytes);
}

void kl_large_free(struct kl_heap *h, struct kl_op *op, struct kl_seg *s)
{
	h->nlarge--;
	/* checked mode gives it back at once: a dangling pointer then faults */
	if (s->bytes > KL_LARGE_CACHE_BYTES / 2 || h->checked) {
		large_release(h, op, s);
		return;
	}
	s->is_empty = 1;
	s->park_next = h->large_cache;
	h->large_cache = s;
	h->nlarge_cached++;
	h->large_cached_bytes += s->bytes;
	/* over the limits: the oldest go back (the list is newest first) */
	while (h->nlarge_cached > KL_LARGE_CACHE_MAX ||
	       h->large_cached_bytes > KL_LARGE_CACHE_BYTES) {
		struct kl_seg *old = h->large_cache;
		while (old->park_next)
			old = old->park_next;
		large_release(h, op, old);
	}
}

static int reg_leaf_live(const uintptr_t *leaf)
{
	for (size_t i = 0; i < KL_REG_NODE; i++)
		if (leaf[i] && leaf[i] != KL_REG_TOMB)
			return 1;
	return 0;
}

/* Decommit the pages of every free block of the big arenas, and give back
 * the arenas left with none. Returns the bytes decommitted. O(blocks in big
 * arenas) plus the calls to the source. */
static size_t seg_decommit_free(struct kl_heap *h, struct kl_op *op)
{
	size_t bytes = 0;
	for (struct kl_seg *s = h->segs, *next; s; s = next) {
		next = s->next;
		if (!kl_seg_big(s))
			continue;
		uintptr_t sentinel = s->arena_end - KL_BLK_HDR;
		for (uintptr_t a = s->arena; a < sentinel; a += kl_blk_size((struct kl_blk *)a))
			if (((struct kl_blk *)a)->head & KL_B_FREE)
				bytes += kl_big_decommit(h, s, (struct kl_blk *)a);
		if (kl_seg_all_free(s))
			kl_seg_now_empty(h, op, s); /* given back or kept: next stays */
	}
	return bytes;
}

/* Give back parked arenas and cached large blocks, then the pages of free
 * blocks in big arenas, then registry nodes that name no live segment.
 * Returns the bytes decommitted (the rest is off source_bytes). */
size_t kl_seg_trim(struct kl_heap *h, struct kl_op *op)
{
	seg_drop_kept(h, op);
	size_t decommitted = h->source.decommit ? seg_decommit_free(h, op) : 0;
	if (h->has_caches)
		return decommitted; /* keel_cache_free reads the registry without the lock */
	/* the lock stays held throughout: queueing an unmap never drops it */
	for (size_t r = 0; r < ((size_t)1 << KL_REG_ROOT_BITS); r++) {
		uintptr_t **mid = h->reg_root[r];
		if (!mid)
			continue;
		size_t kept = 0;
		for (size_t m = 0; m < KL_REG_NODE; m++) {
			uintptr_t *leaf = mid[m];
			if (!leaf)
				continue;
			if (reg_leaf_live(leaf)) {
				kept++;
				continue;
			}
			mid[m] = NULL;
			h->reg_nodes--;
			h->source_bytes -= KL_REG_NODE_BYTES;
			kl_op_unmap(h, op, leaf, KL_REG_NODE_BYTES);
		}
		if (!kept) {
			h->reg_root[r] = NULL;
			h->reg_nodes--;
			h->source_bytes -= KL_REG_NODE_BYTES;
			kl_op_unmap(h, op, mid, KL_REG_NODE_BYTES);
		}
	}
	return decommitted;
}

/* Unmap every segment and registry node; the heap is dead afterwards.
 * Returns 0 or the first unmap error. */
int kl_seg_destroy_all(struct kl_heap *h)
{
	int err = 0, e;
	struct kl_seg *s = h->segs;
	while (s) {
		struct kl_seg *next = s->next;
		if (s->kind != KL_SEG_REGION) {
			char *base = (char *)s->base;
			size_t bytes = s->bytes;
			if (s->kind == KL_SEG_LARGE && s->guarded)
				h->source.protect(h->source.ctx, base, bytes, KEEL_PROT_RW);
			s->magic = 0;
			e = h->source.unmap(h->source.ctx, base, bytes);
			if (e && !err)
				err = e;
		}
		s = next;
	}
	for (size_t r = 0; r < ((size_t)1 << KL_REG_ROOT_BITS); r++) {
		uintptr_t **mid = h->reg_root[r];
		if (!mid)
			continue;
		for (size_t m = 0; m < KL_REG_NODE; m++) {
			if (mid[m]) {
				e = h->source.unmap(h->source.ctx, mid[m], KL_REG_NODE_BYTES);
				if (e && !err)
					err = e;
			}
		}
		e = h->source.unmap(h->source.ctx, mid, KL_REG_NODE_BYTES);
		if (e && !err)
			err = e;
	}
	return err;
}
