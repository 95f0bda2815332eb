/* internal.h: the core's private types, invariants and constants, and the
 * prototypes each file shares, grouped by the file that defines them.
 * Nothing here is visible to embedders; keel.h is the contract. */
#ifndef KEEL_INTERNAL_H
#define KEEL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "keel.h"

/* Build knobs, each with a safe default. */
#ifndef KEEL_DEBUG
#define KEEL_DEBUG 0 /* 1 or more: internal asserts (KL_ASSERT) */
#endif
#ifndef KEEL_ASSERT_FAIL
#define KEEL_ASSERT_FAIL(file, line, expr) __builtin_trap() /* needs no symbol */
#endif
#ifndef KEEL_VALGRIND
#define KEEL_VALGRIND 0 /* 1: tell memcheck about every block (valgrind's headers) */
#endif

/* Under valgrind (KEEL_VALGRIND=1) memcheck learns of every block keel hands
 * out and takes back, so it reports leaks, and overflows, reads of freed
 * blocks and the like in the program. Every heap is then in checked mode,
 * which knows each block's exact size. keel's own reads and writes of its
 * metadata, canaries and poison are kept out of the reports: each public
 * entry point turns error reporting off until it returns (KL_VG_SCOPE).
 * The client requests are inline assembly: no symbol is needed. */
#if KEEL_VALGRIND
#include <valgrind/memcheck.h>
static inline int kl_vg_quiet(void)
{
	VALGRIND_DISABLE_ERROR_REPORTING;
	return 0;
}
static inline void kl_vg_loud(int *unused)
{
	(void)unused;
	VALGRIND_ENABLE_ERROR_REPORTING;
}
#define KL_VG_SCOPE int kl_vg_scope_ __attribute__((cleanup(kl_vg_loud), unused)) = kl_vg_quiet()
#define KL_VG_ALLOC(p, size, zeroed)                                                               \
	do {                                                                                       \
		VALGRIND_MALLOCLIKE_BLOCK((p), (size), 0, (zeroed));                               \
		VALGRIND_MAKE_MEM_NOACCESS((char *)(p) + (size), KL_CANARY_BYTES);                 \
	} while (0)
#define KL_VG_FREE(p) VALGRIND_FREELIKE_BLOCK((p), 0)
#else
#define KL_VG_SCOPE          ((void)0)
#define KL_VG_ALLOC(p, s, z) ((void)0)
#define KL_VG_FREE(p)        ((void)0)
#endif

#if KEEL_DEBUG >= 1
#define KL_ASSERT(x) ((x) ? (void)0 : KEEL_ASSERT_FAIL(__FILE__, __LINE__, #x))
#else
#define KL_ASSERT(x) ((void)0)
#endif

#define KL_HIDDEN      __attribute__((visibility("hidden")))
#define KL_LIKELY(x)   __builtin_expect(!!(x), 1)
#define KL_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ---- geometry -------------------------------------------------------------
 * GRAN   every block starts on a 16-byte granule; the allocation bitmap has
 *        one bit per granule.
 * SEG    page-source memory comes in 1 MiB segments aligned to 1 MiB, so the
 *        registry (one entry per 1 MiB of address space) finds any pointer's
 *        segment in three loads. Large blocks are mappings aligned to SEG too,
 *        so two mappings never share a registry entry.
 * RUN    small objects live in 16 KiB runs, each a RUN-aligned medium block;
 *        16 KiB keeps a 1 KiB class at 16 slots and a run's slot index in 16
 *        bits, and a mostly-empty heap holds little memory per class. */
#define KL_GRAN_SHIFT 4
#define KL_GRAN       ((size_t)1 << KL_GRAN_SHIFT)
#define KL_SEG_SHIFT  20
#define KL_SEG        ((size_t)1 << KL_SEG_SHIFT)
#define KL_RUN_SHIFT  14
#define KL_RUN        ((size_t)1 << KL_RUN_SHIFT)
#define KL_PAGE       ((size_t)KEEL_PAGE_SIZE)
/* With a source, requests above this get a mapping of their own: a quarter of
 * a segment bounds the waste a medium block can strand in one. */
#define KL_MEDIUM_MAX (KL_SEG / 4)
/* BIG    with a source that can decommit, requests above KL_MEDIUM_MAX up to
 *        KL_BIG_MAX are blocks of 32 MiB arenas instead (a quarter again):
 *        a freed one coalesces with its free neighbours and its pages stay
 *        mapped for the next request of any size, where a mapping of its own
 *        would go back to the source and fault its pages in afresh. Free
 *        pages beyond config.dirty_bytes in all go back through decommit. */
#define KL_BIG_SHIFT 25
#define KL_BIG       ((size_t)1 << KL_BIG_SHIFT)
#define KL_BIG_MAX   (KL_BIG / 4)
#define KL_NCLASSES  KEEL_NCLASSES
#define KL_SMALL_MAX ((size_t)KEEL_SMALL_MAX)
/* Classes past KL_SMALL_MAX, to KL_SLOT_MAX, serve only requests that ask an
 * alignment above 16 (a power-of-two size to a page asks its own): a slot at
 * a multiple of its size from a 16 KiB-aligned run is aligned for free, where
 * a medium block pays an aligned split under the lock and a gap before it. */
#define KL_SLOT_MAX    ((size_t)KEEL_SLOT_MAX)
#define KL_MAX_REQUEST ((size_t)1 << 46) /* larger requests fail at once */
_Static_assert(KEEL_SEGMENT_SIZE == KL_SEG, "keel.h and internal.h agree on segments");
_Static_assert(KL_RUN / 16 <= 65535, "slot indexes fit 16 bits");

#define kl_align_up(x, a)   (((x) + ((a)-1)) & ~((uintptr_t)(a)-1))
#define kl_align_down(x, a) ((x) & ~((uintptr_t)(a)-1))

/* ---- medium blocks (TLSF) -------------------------------------------------
 * A block:  [prev_size | head][payload ...]
 *            16-byte header  ^ user pointer, 16-aligned
 * head packs the block's size (header included, a multiple of 16) with flags
 * in the low bits, and in the top bits the log2 of the alignment the block
 * was asked for (kept across realloc) and how many usable bytes lie beyond
 * the bytes asked for (the slack, for keel_stats; sizes are rounded to their
 * free list's granule, so it stays below KL_MEDIUM_MAX / 16). A free block
 * keeps its free-list links in its payload. Each arena ends in a sentinel
 * header of size 0 marked used.
 *   B1  size >= KL_MIN_BLOCK, a multiple of 16; the next header is at
 *       (char *)b + size, and the last one is the arena's sentinel
 *   B2  no two free blocks are neighbours (coalescing is immediate)
 *   B3  PREV_FREE in a header  <=>  the block before it is free, and then
 *       prev_size is that block's size
 *   B4  a block is in free list (fl, sl) of its size  <=>  FREE is set
 *   B5  an allocated block that is not a run has its user pointer's bit set
 *       in the segment's allocation bitmap; free blocks have no bits set
 *   B7  a header whose PREV_FREE is clear (the arena's first included) holds
 *       kl_hdr_canary in prev_size; a header merged away holds none (one
 *       merged into the free block before it held that block's size; one
 *       merged into the block before it by a free, or by realloc growing
 *       that block, has its prev_size cleared), so no word but a header's
 *       holds its address's canary
 * A free block's header holds its canary too (its block before is used),
 * so a header with its canary and FREE and RUN clear is a live medium
 * block's: keel_cache_free vouches for most medium blocks from their header
 * line alone, which the program has usually just touched, where the bitmap
 * word B5 needs is one line per 1 KiB of heap, mostly cold (cache.c).
 */
struct kl_blk {
	size_t prev_size;
	size_t head;
	struct kl_blk *next_free; /* only while FREE */
	struct kl_blk *prev_free;
};
#define KL_BLK_HDR       ((size_t)16)
#define KL_MIN_BLOCK     ((size_t)32)
#define KL_B_FREE        ((size_t)1)
#define KL_B_PREV_FREE   ((size_t)2)
#define KL_B_RUN         ((size_t)4) /* the block holds a small-object run */
#define KL_B_SIZE_MASK   ((((size_t)1 << 40) - 1) & ~(size_t)15)
#define KL_B_ALIGN_SHIFT 40 /* 6 bits: log2 of the asked alignment */
#define KL_B_ALIGN_MASK  ((size_t)63 << KL_B_ALIGN_SHIFT)
#define KL_B_SLACK_SHIFT 46 /* 18 bits: usable - asked, capped below 256 KiB */
#define KL_B_SLACK_MAX   (((size_t)1 << 18) - 1)

#define KL_FL_SHIFT  8 /* block sizes below 256 share first level 0 */
#define KL_SL_SHIFT  4
#define KL_SL_COUNT  (1u << KL_SL_SHIFT)
#define KL_FL_COUNT  31 /* block sizes below 2^38 */
#define KL_ARENA_MAX (((size_t)1 << (KL_FL_COUNT + KL_FL_SHIFT - 1)) - 16)

/* ---- runs -------------------------------------------------------------------
 * A run: nslots slots of one size class in a RUN-aligned chunk. Its header
 * lives in the segment's side table (one entry per chunk), not in the run.
 * The run is a medium block that is its chunk exactly: the block's header
 * takes the chunk's first 16 bytes, and slot 0 sits at the class's first
 * offset, the largest power of two dividing its size, so that every slot is
 * aligned to that (keel_aligned_alloc's small classes count on it):
 * nslots = (RUN - first) / size, the count a run whose slot 0 sat at the
 * chunk start, with the next block's header in its last 16 bytes, held too.
 * Runs end on a chunk boundary, so the medium blocks between and after them
 * start on a cache line (their sizes from 1 KiB are multiples of 64) and a
 * block's header shares a line with its first 48 bytes: a free reads the
 * header, and a program that read its block first has that line. When a
 * run's block began 16 bytes before its chunk, nine in ten medium blocks of
 * the latency workload began 16 bytes before a line, their header alone in
 * the line before their data, read cold by every free.
 *   R1  nfree == (length of the free list) + (nslots - bump)
 *   R2  slot i < bump is on the free list  <=>  its bitmap bit is clear
 *   R3  every free-list link points at a slot start below bump in this run
 *   R4  0 < nfree < nslots  <=>  the run is on its class's partial list;
 *       nfree == nslots (empty) runs sit in the heap's empty-run cache
 *   R5  the segment's class map says each chunk's cls (kl_cmap)
 * check_run() in check.c tests R1-R4, the arena's walk R0 and R5, and
 * each reports the label that failed. */
struct kl_run {
	void *free;                 /* free list of slots: first word links */
	struct kl_run *next, *prev; /* partial list of the class, or empty cache */
	struct kl_seg *seg;         /* the segment whose side table holds it */
	uint16_t nfree, nslots, bump;
	uint8_t cls;   /* class index + 1; 0: this chunk starts no run */
	uint8_t where; /* KL_RUN_* list it is on, and KL_RUN_ALIGNED */
};
_Static_assert(sizeof(struct kl_run) == 40, "run header is 40 bytes");
#define KL_RUN_FULL    0
#define KL_RUN_PARTIAL 1
#define KL_RUN_EMPTY   2
#define KL_RUN_LIST    3 /* where & KL_RUN_LIST: the list */
/* A slot of the run was asked with an alignment above 16 (keel_aligned_alloc):
 * realloc keeps a slot of such a run aligned to its class's largest power of
 * two (which may be more than another slot of it was asked). Cleared when
 * the run empties. where is written under the lock and read without it
 * (keel_cache_realloc): relaxed atomics, as the bitmap's bits. */
#define KL_RUN_ALIGNED 4
static inline unsigned kl_run_where(const struct kl_run *r)
{
	return __atomic_load_n(&r->where, __ATOMIC_RELAXED);
}
static inline void kl_run_set_where(struct kl_run *r, unsigned where)
{
	__atomic_store_n(&r->where, (uint8_t)where, __ATOMIC_RELAXED);
}

/* ---- segments --------------------------------------------------------------
 * An arena segment (from the source, or a caller's region):
 *   [struct kl_seg | cmap | runs[nchunks] | bitmap | arena: blocks ... | sentinel]
 * A large segment is one mapping holding one block, its header at the tail:
 *   [user block .............................. | struct kl_seg]
 *   S1  magic == KL_SEG_MAGIC ^ (uintptr_t)seg and heap == the owning heap
 *   S2  every registry entry over [base, base+bytes) names seg (a large
 *       block's first as a start, the rest as continuations; every entry of
 *       an arena as a start, so the cache's free path trusts any of them);
 *       regions are in heap->regions
 *   S3  an arena's blocks tile [arena, sentinel] exactly (B1)
 *   S4  an arena (KL_SEG bytes, or KL_BIG: a big arena): is_empty  <=>  it
 *       is parked, one free block counted in empty_bytes; an arena of
 *       KL_SEG bytes that is one free block is parked (a big one is never:
 *       all free, it stays while pages of it are committed, B6)
 *   S5  a large block: is_empty  <=>  it is free and in the large cache,
 *       counted in large_cached_bytes (still registered, still listed) */
struct kl_seg {
	uintptr_t magic;
	struct kl_heap *heap;
	struct kl_seg *next, *prev; /* the heap's list of segments */
	uintptr_t base;             /* mapping or region start */
	size_t bytes;               /* mapping or region length */
	uint8_t kind;               /* KL_SEG_* */
	uint8_t is_empty;
	uint8_t align_shift; /* large: log2 of the asked alignment */
	uint8_t guarded;     /* large, checked mode: its first and last pages are guards */
	uint32_t nchunks;
	struct kl_seg *park_next; /* parked arenas (S4), cached large blocks (S5) */
	/* arena */
	uintptr_t cbase;            /* base rounded down to RUN: chunk 0 */
	struct kl_run *runs;        /* side table, one entry per chunk */
	uint64_t *bits;             /* allocation bitmap, one bit per granule from cbase */
	uintptr_t arena, arena_end; /* first block header; arena_end - 16 is the sentinel */
	/* large */
	size_t requested;
	uintptr_t user; /* the block's start: base, or past the guard in checked mode */
	size_t usable;  /* bytes the caller may use (checked mode: the bytes asked) */
};
/* An arena's class map: a byte a chunk, right after its header, the cls of
 * the chunk's side-table entry (R5). One line holds a 1 MiB arena's, so the
 * lock-free free path learns a slot's class there instead of in the run's
 * 40-byte header (a segment's headers span 40 lines, and miss the cache
 * where the class map does not). Written under the lock, read without it:
 * relaxed atomics, as the bitmap's. */
static inline uint8_t *kl_cmap(const struct kl_seg *s)
{
	return (uint8_t *)(uintptr_t)(s + 1);
}
static inline unsigned kl_chunk_class(const struct kl_seg *s, uintptr_t p)
{
	return __atomic_load_n(&kl_cmap(s)[(p - s->cbase) >> KL_RUN_SHIFT], __ATOMIC_RELAXED);
}
static inline void kl_run_set_class(struct kl_run *r, unsigned cls)
{
	r->cls = (uint8_t)cls;
	__atomic_store_n(&kl_cmap(r->seg)[r - r->seg->runs], (uint8_t)cls, __ATOMIC_RELAXED);
}
#define KL_SEG_MAGIC         ((uintptr_t)0x6b65656c5345474dull)
#define KL_SEG_ARENA         1
#define KL_SEG_REGION        2
#define KL_SEG_LARGE         3
#define KL_LARGE_HDR         ((size_t)128)
#define KL_LARGE_CACHE_MAX   16                 /* freed large blocks kept (S5) */
#define KL_LARGE_CACHE_BYTES ((size_t)64 << 20) /* and their bytes at most */
_Static_assert(sizeof(struct kl_seg) <= KL_LARGE_HDR, "large header fits its tail slot");

/* A big arena keeps a commit map, one bit per page, after its allocation
 * bitmap: set when a block over the page is handed out, cleared when the
 * page is decommitted. A clear bit means the page holds no memory, but for
 * the first page of a free block (its header is written there).
 *   B6  big_used == the bytes of the used blocks of big arenas (runs and
 *       blocks kept by caches included); big_committed == KL_PAGE * the
 *       bits set in their commit maps; so big_committed - big_used bounds
 *       the free pages they hold, kept within dirty_max by kl_fit_give */
static inline int kl_seg_big(const struct kl_seg *s)
{
	return s->kind == KL_SEG_ARENA && s->bytes == KL_BIG;
}
static inline uint64_t *kl_big_commit(const struct kl_seg *s)
{
	return s->bits + (KL_BIG >> KL_GRAN_SHIFT) / 64;
}

/* ---- registry --------------------------------------------------------------
 * A three-level radix over the 48-bit address space at segment granularity:
 * 8 bits in the heap, 10 bits per mapped 8 KiB node. An entry is a segment
 * pointer: an arena's bare in every entry; a large block's with
 * KL_REG_LARGE, and KL_REG_CONT set for the chunks after its first; or
 * KL_REG_TOMB alone for the first chunk of a large block freed since (so a
 * second free of it reports a double free, not a stranger). So the free
 * path knows an arena by its entry, without reading the segment. A cache keeps
 * the leaf (1 GiB of address space) its last lookup used, so its free path
 * reads one entry (cache.c); once a heap has caches its nodes stay. */
#define KL_REG_BITS       (48 - KL_SEG_SHIFT)
#define KL_REG_ROOT_BITS  8
#define KL_REG_NODE_BITS  10
#define KL_REG_NODE       ((size_t)1 << KL_REG_NODE_BITS)
#define KL_REG_NODE_BYTES (KL_REG_NODE * sizeof(uintptr_t))
_Static_assert(KL_REG_ROOT_BITS + 2 * KL_REG_NODE_BITS == KL_REG_BITS, "registry covers 48 bits");
#define KL_LEAF_SHIFT (KL_SEG_SHIFT + KL_REG_NODE_BITS) /* a leaf spans 1 GiB */
#define KL_REG_CONT   ((uintptr_t)1)
#define KL_REG_TOMB   ((uintptr_t)2)
#define KL_REG_LARGE  ((uintptr_t)4)
#define KL_REG_TAGS   (KL_REG_CONT | KL_REG_TOMB | KL_REG_LARGE)

/* ---- the heap ---------------------------------------------------------------- */
/* A size class, fixed at heap init: read without the lock. */
struct kl_class {
	uint32_t size;  /* slot bytes */
	uint32_t recip; /* 2^32 / size rounded up: offset / size without a divide */
	uint32_t first; /* slot 0's offset in its chunk: size's lowest set bit */
};
/* The slots a run of class c holds. */
static inline uint16_t kl_class_nslots(const struct kl_class *c)
{
	return (uint16_t)((KL_RUN - c->first) / c->size);
}

/* A cache's stack of free slots of one class: slots linked through their
 * first word, the heap's secret in their second (K1: a slot in a cache, or
 * in a batch on the heap's transfer stack, has its bitmap bit set and the
 * secret in word 1, and counts as live; no live block has secret there,
 * since keel_cache_malloc clears it). */
struct kl_bin {
	void **head;
	uint32_t count, max;
};
/* A small class's bin: the stack the fast paths pop and push up to max, and
 * past max a spill list, which goes to the heap whole once it holds ndrain
 * slots (one lock, no walk) and which an empty stack takes back first. The
 * two together hold max + ndrain slots at most, the class's capacity. */
struct kl_sbin {
	struct kl_bin b;
	void **spill;
	uint32_t nspill, ndrain;
};
/* A cache also keeps freed medium blocks of 1 KiB to 64 KiB: one bin per
 * TLSF list (2^f + i * 2^(f-4) for f = 10..15, i = 0..15), whose blocks all
 * hold any request that rounds to the list's lower bound. K1 holds for them
 * as for slots: a kept block has its bitmap bit set and the secret in its
 * second word, and stays counted as live. */
#define KL_MBIN_F_LO       10
#define KL_MBIN_F_HI       15
#define KL_NMBINS          ((KL_MBIN_F_HI - KL_MBIN_F_LO + 1) * KL_SL_COUNT)
#define KL_CACHE_MED_BYTES ((size_t)256 << 10) /* medium bytes a cache keeps on its own */
#define KL_MED_SHARE_SHIFT 4 /* caches keep 1/16 of the live bytes more, in all (cache.c) */
#define KL_MED_STEP        ((size_t)64 << 10) /* ... reserved this much at a time */
struct kl_cache {
	struct kl_heap *heap;
	uintptr_t secret;
	uintptr_t leaf_key;    /* p >> KL_LEAF_SHIFT for the pointers leaf covers, or none */
	const uintptr_t *leaf; /* the registry leaf the cache's last free looked in */
	struct kl_sbin bins[KL_NCLASSES];
	uint8_t class_of[KL_SMALL_MAX / KL_GRAN + 1]; /* (size + 15) / 16 -> class */
	size_t med_bytes;                             /* lower bounds of the kept medium blocks */
	size_t med_cap;     /* med_bytes at most: KL_CACHE_MED_BYTES and the steps reserved */
	uint32_t med_retry; /* frees past med_cap until the next reservation is asked */
	struct kl_bin mbins[KL_NMBINS];
	uint64_t mheld[(KL_NMBINS + 63) / 64];  /* bit i: mbins[i] holds a block */
	uint64_t masked[(KL_NMBINS + 63) / 64]; /* bit i: list i asked for since mbins[i] grew */
	struct kl_bin moved; /* slots realloc moved out of, on their way back to their runs */
};
_Static_assert(sizeof(struct kl_cache) <= KEEL_CACHE_BYTES, "cache fits keel_cache storage");

#define KL_HEAP_MAGIC     ((uintptr_t)0x6b65656c48454150ull)
#define KL_XFER_MAX       8 /* batches a class's transfer stack holds (cache.c) */
#define KL_EMPTY_RUNS_MAX 4 /* empty runs cached across classes before going back */

/* The heap. Fields the lock-free paths read (keel_cache_malloc and
 * keel_cache_free, on every call) come first and stay put after init, or
 * nearly (reg_root gains a node per 1 TiB of address space); everything
 * written under the lock starts on a line of its own, so one thread's
 * locked work does not evict the lines another thread's free path reads. */
struct kl_heap {
	/* read-mostly */
	uintptr_t magic;
	uintptr_t secret; /* marks slots sitting in caches (K1), mixes links */
	int checked;      /* KEEL_HEAP_CHECKED */
	unsigned nregions;
	struct kl_seg *regions[KEEL_MAX_REGIONS];
	struct kl_class cls[KL_NCLASSES];
	uintptr_t **reg_root[1u << KL_REG_ROOT_BITS]; /* registry */
	struct keel_config config;
	struct keel_source source; /* copied when config has one */
	struct keel_lock lock;
	int has_source;
	/* written under the lock */
	_Alignas(64) int spin; /* the built-in lock, through __atomic builtins only */
	int has_caches;        /* keel_trim keeps registry nodes once set */
	unsigned guard_count;  /* checked mode: allocations until the next sampled guard */
	uintptr_t quar[KEEL_QUARANTINE_BLOCKS]; /* checked mode: freed blocks waiting, oldest at
	                                           quar_head */
	unsigned quar_head, quar_n;
	size_t quar_bytes;
	/* checked mode: large blocks freed whose pages are being made
	 * inaccessible, the lock dropped: quarantined, not in quar[] yet */
	unsigned quar_pending;
	size_t quar_pending_bytes;
	struct kl_seg *segs;        /* every arena, region and large segment */
	struct kl_seg *parked;      /* empty arenas kept for reuse, empty_bytes in all */
	struct kl_seg *large_cache; /* freed large blocks kept for reuse, newest first */
	size_t nlarge_cached, large_cached_bytes;
	size_t retain_bytes, empty_bytes;
	size_t dirty_max; /* free pages big arenas may hold (config.dirty_bytes) */
	/* small */
	struct kl_run *partial[KL_NCLASSES];   /* per class: runs with free and used slots */
	void **xfer[KL_NCLASSES][KL_XFER_MAX]; /* transfer stacks: batches of cached slots */
	uint8_t xfer_len[KL_NCLASSES][KL_XFER_MAX];
	uint8_t nxfer[KL_NCLASSES];
	void **mxfer[KL_NMBINS]; /* per medium list: one cache's full bin, handed over */
	uint32_t mxfer_len[KL_NMBINS];
	size_t mxfer_bytes;  /* the lists' lower bounds, at most KL_CACHE_MED_BYTES */
	size_t med_reserved; /* the KL_MED_STEPs caches hold past KL_CACHE_MED_BYTES */
	struct kl_run *empty_runs;
	unsigned nempty_runs;
	/* medium: TLSF */
	uint32_t fl_bitmap;
	uint16_t sl_bitmap[KL_FL_COUNT];
	struct kl_blk *heads[KL_FL_COUNT][KL_SL_COUNT];
	size_t reg_nodes;
	/* mapped for a segment not listed yet: its caller may drop the lock (to
	 * make registry nodes, or guard pages) before it lists the segment */
	size_t unlisted_bytes;
	/* counters for keel_stats */
	size_t requested_bytes, in_use_bytes, peak_in_use;
	size_t source_bytes, peak_source, region_bytes;
	size_t medium_free_bytes, small_free_bytes;
	size_t big_used, big_committed; /* B6 */
	size_t live_blocks, alloc_count, free_count, failed;
	size_t maps, unmaps, source_failures, nsegs, nlarge;
	size_t class_live[KL_NCLASSES];
};
_Static_assert(sizeof(struct kl_heap) <= KEEL_HEAP_BYTES, "heap fits keel_heap storage");

/* The alignment a block of size bytes asked with align gets: a power of two
 * up to a page is aligned to itself, as kmalloc does (small classes that are
 * powers of two are so by placement; a medium block must ask for it). */
static inline size_t kl_natural_align(size_t size, size_t align)
{
	int pow2 = size && !(size & (size - 1)) && size <= KL_PAGE;
	return pow2 && align < size ? size : align;
}

/* A free-list link as stored in the free slot p: the next slot's address
 * mixed with the heap's secret and p itself, so a stray write or a copied
 * link does not decode to a slot of the run. kl_link(h, p, kl_link(h, p, x))
 * == x, and a stored 0 still means the end. */
static inline uintptr_t kl_link_s(uintptr_t secret, uintptr_t p, uintptr_t v)
{
	return v ? v ^ secret ^ p : 0;
}
static inline uintptr_t kl_link(const struct kl_heap *h, uintptr_t p, uintptr_t v)
{
	return kl_link_s(h->secret, p, v);
}
/* ---- checked mode (checked.c) ---------------------------------------------
 * A live block:  [user bytes asked for | canary, 8 bytes | ... ]
 *   small slots also keep the size asked in their last 2 bytes, at least 16
 *   bytes past the block's end (KL_SMALL_MARGIN) so that an overflow the
 *   canary reports does not also lose the block's size; medium
 *   blocks keep it as usable - slack; large ones in their kl_seg.
 * A medium block's canary in prev_size (B7, when its neighbour before is
 * live) and the top 4 bits of its head clear let a write just before the
 * block be seen. A freed small or medium block waits in the quarantine,
 * filled with poison and marked (a small slot: the secret ^ KL_QTAG in its
 * second word; a medium block: KL_B_QUAR), its bitmap bit still set, no
 * longer counted as live; when it leaves the quarantine its poison is
 * verified, and if it was written it is retired instead: reported, kept out
 * of use for good, in no count (a small slot then says KL_RTAG in its
 * second word, a medium block in its first).
 *   Q1  quarantined blocks == quar_n and their bytes == quar_bytes
 *   Q2  a quarantined block is poison but for its mark
 *   Q3  a live block's canary is intact */
#define KL_POISON          0xdb /* the byte freed memory is filled with */
#define KL_CANARY_BYTES    8
#define KL_SMALL_LEN       2  /* a checked small slot's size field */
#define KL_SMALL_MARGIN    16 /* canary and spare bytes before that field */
#define KL_QTAG            ((uintptr_t)0x5155415241ull) /* quarantined */
#define KL_RTAG            ((uintptr_t)0x5245544952ull) /* retired */
#define KL_CHK_LIVE        0
#define KL_CHK_QUARANTINED 1
#define KL_CHK_RETIRED     2
#define KL_B_QUAR          ((size_t)8) /* a medium block in the quarantine */
#define KL_QUAR_MAX        KEEL_QUARANTINE_BLOCKS

static inline struct kl_heap *kl_heap_of(struct keel_heap *h)
{
	return (struct kl_heap *)(void *)h;
}

static inline unsigned kl_fls(size_t x) /* index of the highest set bit; x != 0 */
{
	return 63u - (unsigned)__builtin_clzll((unsigned long long)x);
}
static inline unsigned kl_ffs(size_t x) /* index of the lowest set bit; x != 0 */
{
	return (unsigned)__builtin_ctzll((unsigned long long)x);
}
static inline unsigned kl_popcount(uint64_t x) /* without libgcc or POPCNT */
{
	x -= (x >> 1) & 0x5555555555555555ull;
	x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
	x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
	return (unsigned)((x * 0x0101010101010101ull) >> 56);
}

/* Bitmap helpers over a segment's allocation bitmap, a bit per granule
 * from cbase (chunk 0), as the side table counts: the free path finds a
 * slot's run and its bit from the one offset p - cbase. */
static inline size_t kl_bit_index(const struct kl_seg *s, uintptr_t p)
{
	return (p - s->cbase) >> KL_GRAN_SHIFT;
}
/* Bits change only under the heap lock, but keel_cache_free reads them
 * without it: relaxed atomic loads and stores (plain moves on x86) make
 * that read well-defined without paying for a locked read-modify-write. */
static inline int kl_bit_get(const struct kl_seg *s, uintptr_t p)
{
	size_t i = kl_bit_index(s, p);
	return (int)((__atomic_load_n(&s->bits[i >> 6], __ATOMIC_RELAXED) >> (i & 63)) & 1);
}
static inline void kl_bit_set(struct kl_seg *s, uintptr_t p)
{
	size_t i = kl_bit_index(s, p);
	uint64_t w = __atomic_load_n(&s->bits[i >> 6], __ATOMIC_RELAXED);
	__atomic_store_n(&s->bits[i >> 6], w | (uint64_t)1 << (i & 63), __ATOMIC_RELAXED);
}
static inline void kl_bit_clear(struct kl_seg *s, uintptr_t p)
{
	size_t i = kl_bit_index(s, p);
	uint64_t w = __atomic_load_n(&s->bits[i >> 6], __ATOMIC_RELAXED);
	__atomic_store_n(&s->bits[i >> 6], w & ~((uint64_t)1 << (i & 63)), __ATOMIC_RELAXED);
}

static inline struct kl_blk *kl_blk_of(void *user)
{
	return (struct kl_blk *)(void *)((char *)user - KL_BLK_HDR);
}
static inline void *kl_user_of(struct kl_blk *b)
{
	return (char *)b + KL_BLK_HDR;
}
static inline size_t kl_blk_slack(const struct kl_blk *b)
{
	return b->head >> KL_B_SLACK_SHIFT;
}
static inline size_t kl_blk_align(const struct kl_blk *b)
{
	return (size_t)1 << ((b->head & KL_B_ALIGN_MASK) >> KL_B_ALIGN_SHIFT);
}
static inline size_t kl_blk_size(const struct kl_blk *b)
{
	return b->head & KL_B_SIZE_MASK;
}
static inline struct kl_blk *kl_blk_next(struct kl_blk *b)
{
	return (struct kl_blk *)(void *)((char *)b + kl_blk_size(b));
}

/* The block size (header included) for size usable bytes, rounded up to the
 * granule of its free list (a sixteenth of its power of two) up to
 * KL_MEDIUM_MAX: at most 6% lost, and in return a block grown by realloc a
 * few bytes at a time (a string being appended to) moves once per granule,
 * not once per call; and every block on that list holds it, which lets a
 * cache keep freed blocks by list. */
static inline size_t kl_medium_need(size_t size)
{
	size_t need = kl_align_up(size, KL_GRAN) + KL_BLK_HDR;
	if (need < KL_MIN_BLOCK)
		return KL_MIN_BLOCK;
	if (need >= ((size_t)1 << KL_FL_SHIFT) && need <= KL_MEDIUM_MAX)
		need = kl_align_up(need, (size_t)1 << (kl_fls(need) - KL_SL_SHIFT));
	else if (need > KL_MEDIUM_MAX) /* whole pages: see kl_medium_align */
		need = kl_align_up(need, KL_PAGE);
	return need;
}

/* With big arenas (a source that decommits), a block past KL_MEDIUM_MAX
 * starts its user bytes on a page and spans whole pages, so neighbours carved
 * in turn stay on pages: a block of n pages touches n pages, not n + 1, and
 * big buffers start where programs (and the page walker) expect them. A
 * region heap keeps its room: such a block there is not moved to a page. */
static inline size_t kl_medium_align(const struct kl_heap *h, size_t size, size_t align)
{
	return size > KL_MEDIUM_MAX && align < KL_PAGE && h->source.decommit ? KL_PAGE : align;
}

/* The free block size that holds a block of size bytes (header included)
 * at any user pointer aligned to align, the lead cut off included. */
static inline size_t kl_fit_want(size_t size, size_t align)
{
	return align > KL_GRAN ? size + align + KL_MIN_BLOCK : size;
}

/* A live block's head and prev_size change, under the lock, only when the
 * block before it is freed or taken (KL_B_PREV_FREE, B3, B7);
 * keel_cache_free reads them unlocked. Such writes and those reads are
 * relaxed atomics (plain moves on x86). */
static inline void kl_head_store(struct kl_blk *b, size_t v)
{
	__atomic_store_n(&b->head, v, __ATOMIC_RELAXED);
}
static inline void kl_prev_store(struct kl_blk *b, size_t v)
{
	__atomic_store_n(&b->prev_size, v, __ATOMIC_RELAXED);
}

/* What prev_size holds in a header whose block before is used (B7): the
 * heap's secret mixed with the header's address. */
static inline size_t kl_hdr_canary(uintptr_t secret, const struct kl_blk *b)
{
	return (size_t)(secret ^ ((uintptr_t)b * 0x9e3779b97f4a7c15ull));
}

/* One call into the heap: the lock token, and the unmaps deferred until the
 * lock is dropped (the source is never called for an unmap with the lock
 * held). However many there are, queueing one never drops the lock: each
 * range carries its own entry of the list (heap.c), so a loop that gives
 * back memory sees the heap change only where it calls the source itself. */
struct kl_unmap;
struct kl_op {
	uintptr_t token;
	struct kl_unmap *unmaps; /* ranges to give back, most recent first */
	size_t unmapped;         /* bytes queued for unmap by this call (keel_trim's answer) */
};

/* What the heap knows of a live block. */
struct kl_blockinfo {
	struct kl_seg *seg;
	struct kl_run *run; /* small blocks only */
	int kind;           /* KEEL_KIND_* */
	size_t usable, requested, align;
};

/* heap.c */
KL_HIDDEN struct kl_heap *kl_heap_get(struct keel_heap *heap);
KL_HIDDEN int kl_locate(struct kl_heap *h, uintptr_t p, struct kl_blockinfo *bi);
KL_HIDDEN void *kl_alloc_locked(struct kl_heap *h, struct kl_op *op, size_t size, size_t align,
                                int *fresh);
KL_HIDDEN void kl_free_locked(struct kl_heap *h, struct kl_op *op, uintptr_t p,
                              const struct kl_blockinfo *bi);
KL_HIDDEN void kl_count_alloc(struct kl_heap *h, size_t usable, size_t requested);
KL_HIDDEN void *kl_memset(void *p, int c, size_t n);
KL_HIDDEN void *kl_memcpy(void *d, const void *s, size_t n);
KL_HIDDEN uintptr_t kl_lock(struct kl_heap *h);
KL_HIDDEN void kl_unlock(struct kl_heap *h, uintptr_t token);
KL_HIDDEN void kl_report(struct kl_heap *h, int err, uintptr_t p);
KL_HIDDEN void kl_op_begin(struct kl_heap *h, struct kl_op *op);
KL_HIDDEN void kl_op_end(struct kl_heap *h, struct kl_op *op);
KL_HIDDEN void kl_op_flush(struct kl_heap *h, struct kl_op *op);
KL_HIDDEN void kl_op_unmap_guarded(struct kl_heap *h, struct kl_op *op, void *p, size_t bytes);
KL_HIDDEN int kl_op_protect(struct kl_heap *h, struct kl_op *op, void *p, size_t bytes, int prot);
KL_HIDDEN void kl_op_unmap(struct kl_heap *h, struct kl_op *op, void *p, size_t bytes);
KL_HIDDEN void *kl_op_map(struct kl_heap *h, struct kl_op *op, size_t bytes, size_t align);
KL_HIDDEN struct kl_blk *kl_fit_alloc_grow(struct kl_heap *h, struct kl_op *op, size_t size,
                                           size_t align, size_t at);

/* segment.c */
/* What a pointer is, as far as the heap can tell without touching it. */
struct kl_where {
	struct kl_seg *seg; /* NULL: not ours */
	int err;            /* 0, or the KEEL_E* a free of p would get */
};
KL_HIDDEN struct kl_seg *kl_seg_grow(struct kl_heap *h, struct kl_op *op, size_t need);
/* Is arena s one free block (empty, parked or not)? */
KL_HIDDEN int kl_seg_all_free(const struct kl_seg *s);
KL_HIDDEN void kl_seg_now_empty(struct kl_heap *h, struct kl_op *op, struct kl_seg *s);
KL_HIDDEN void kl_seg_release(struct kl_heap *h, struct kl_op *op, struct kl_seg *s);
KL_HIDDEN int kl_seg_region(struct kl_heap *h, uintptr_t base, size_t len);
KL_HIDDEN void *kl_large_alloc(struct kl_heap *h, struct kl_op *op, size_t size, size_t align,
                               int *fresh);
KL_HIDDEN void kl_large_free(struct kl_heap *h, struct kl_op *op, struct kl_seg *s);
KL_HIDDEN size_t kl_large_usable(const struct kl_seg *s);
KL_HIDDEN size_t kl_seg_trim(struct kl_heap *h, struct kl_op *op);
KL_HIDDEN void kl_big_take(struct kl_heap *h, struct kl_seg *s, uintptr_t from, uintptr_t to);
KL_HIDDEN size_t kl_big_decommit(struct kl_heap *h, struct kl_seg *s, struct kl_blk *b);
KL_HIDDEN int kl_seg_destroy_all(struct kl_heap *h);

/* checked.c */
KL_HIDDEN void kl_chk_canary_set(const struct kl_heap *h, uintptr_t p, size_t size);
KL_HIDDEN int kl_chk_canary_ok(const struct kl_heap *h, uintptr_t p, size_t size);
KL_HIDDEN size_t kl_chk_small_len(uintptr_t p, size_t csize);
KL_HIDDEN void kl_chk_small_set(const struct kl_heap *h, uintptr_t p, size_t csize, size_t size);
KL_HIDDEN int kl_chk_quarantined_ok(const struct kl_heap *h, const struct kl_seg *s, uintptr_t p);
KL_HIDDEN int kl_chk_all_poison(uintptr_t from, uintptr_t to);
KL_HIDDEN int kl_chk_header_ok(const struct kl_heap *h, const struct kl_seg *s,
                               const struct kl_blk *b);
KL_HIDDEN int kl_chk_state(const struct kl_heap *h, const struct kl_seg *s, uintptr_t p);
KL_HIDDEN void kl_chk_retire(struct kl_heap *h, const struct kl_seg *s, uintptr_t p);
KL_HIDDEN void kl_chk_quarantine(struct kl_heap *h, struct kl_op *op, const struct kl_blockinfo *bi,
                                 uintptr_t p);
KL_HIDDEN void kl_chk_quarantine_flush(struct kl_heap *h, struct kl_op *op);

/* medium.c */
KL_HIDDEN void kl_medium_set_ask(struct kl_blk *b, size_t size, size_t align);
KL_HIDDEN void kl_fit_insert(struct kl_heap *h, struct kl_blk *b);
KL_HIDDEN void kl_fit_remove(struct kl_heap *h, struct kl_blk *b);
KL_HIDDEN void kl_fit_mapping(size_t size, unsigned *fl, unsigned *sl);
KL_HIDDEN struct kl_blk *kl_fit_take(struct kl_heap *h, size_t size, size_t align, size_t at);
KL_HIDDEN void kl_fit_give(struct kl_heap *h, struct kl_op *op, struct kl_seg *s, struct kl_blk *b);
KL_HIDDEN void *kl_medium_alloc(struct kl_heap *h, struct kl_op *op, size_t size, size_t align,
                                int grow);
KL_HIDDEN int kl_medium_validate(struct kl_seg *s, uintptr_t p);
KL_HIDDEN void kl_medium_free(struct kl_heap *h, struct kl_op *op, struct kl_seg *s, uintptr_t p);
KL_HIDDEN int kl_medium_resize(struct kl_heap *h, struct kl_op *op, struct kl_seg *s, uintptr_t p,
                               size_t size);
KL_HIDDEN size_t kl_medium_usable(const struct kl_blk *b);
KL_HIDDEN size_t kl_medium_largest(const struct kl_heap *h);

/* small.c */
KL_HIDDEN void kl_small_init(struct kl_heap *h);
KL_HIDDEN int kl_small_class_aligned(const struct kl_heap *h, size_t size, size_t align);
KL_HIDDEN void *kl_small_alloc(struct kl_heap *h, struct kl_op *op, unsigned cls, int aligned,
                               int grow);
KL_HIDDEN size_t kl_small_carve(struct kl_heap *h, unsigned cls, size_t n, uintptr_t *first);
KL_HIDDEN int kl_small_validate(const struct kl_heap *h, const struct kl_seg *s,
                                const struct kl_run *r, uintptr_t p);
KL_HIDDEN void kl_small_free(struct kl_heap *h, struct kl_op *op, struct kl_seg *s,
                             struct kl_run *r, uintptr_t p);
KL_HIDDEN void kl_small_trim(struct kl_heap *h, struct kl_op *op);

/* cache.c */
KL_HIDDEN void kl_xfer_flush(struct kl_heap *h, struct kl_op *op);

/* check.c: keel_check and keel_walk only. */

/* ---- the hot lookups, inline everywhere --------------------------------- */

static inline size_t kl_reg_key(uintptr_t p)
{
	return (size_t)((p & (((uintptr_t)1 << 48) - 1)) >> KL_SEG_SHIFT);
}

/* The registry leaf node over p (1 GiB of entries), or NULL if none yet. */
static inline uintptr_t *kl_reg_leaf(const struct kl_heap *h, uintptr_t p)
{
	size_t k = kl_reg_key(p);
	uintptr_t **mid = h->reg_root[k >> (2 * KL_REG_NODE_BITS)];
	return mid ? mid[(k >> KL_REG_NODE_BITS) & (KL_REG_NODE - 1)] : NULL;
}

static inline uintptr_t kl_reg_get(const struct kl_heap *h, uintptr_t p)
{
	const uintptr_t *leaf = kl_reg_leaf(h, p);
	return leaf ? leaf[kl_reg_key(p) & (KL_REG_NODE - 1)] : 0;
}

/* The segment or region p lies in, as far as the heap can tell without
 * touching p: regions first (at most KEEL_MAX_REGIONS), then the registry.
 * A continuation entry gives the large block p is inside (its caller sees
 * that p is not the block's start). */
static inline struct kl_where kl_seg_find(const struct kl_heap *h, uintptr_t p)
{
	struct kl_where w = { NULL, 0 };
	for (unsigned i = 0; i < h->nregions; i++) {
		struct kl_seg *s = h->regions[i];
		if (p - s->base < s->bytes) {
			w.seg = s;
			return w;
		}
	}
	uintptr_t e = kl_reg_get(h, p);
	if (!e) {
		w.err = KEEL_ENOTOURS;
		return w;
	}
	if (e == KL_REG_TOMB) { /* where a large block started, freed since */
		w.err = KEEL_EDOUBLE;
		return w;
	}
	struct kl_seg *s = (struct kl_seg *)(e & ~KL_REG_TAGS);
	if (s->magic != (KL_SEG_MAGIC ^ (uintptr_t)s) || s->heap != h)
		w.err = KEEL_ECORRUPT;
	else if (p - s->base >= s->bytes) /* past a large block, in its last chunk */
		w.err = KEEL_ENOTOURS;
	else
		w.seg = s;
	return w;
}

/* The size class of a small request: 16-byte steps to 128, then eight per
 * power of two to KL_SMALL_MAX, and four past it (small.c has the table). */
static inline unsigned kl_small_class(size_t size)
{
	if (size <= 128)
		return size ? (unsigned)((size + 15) >> 4) - 1 : 0;
	unsigned f = kl_fls(size - 1);
	if (size <= KL_SMALL_MAX)
		return 8 + (f - 7) * 8 + (unsigned)(((size - 1) >> (f - 3)) & 7);
	return 32 + (f - 10) * 4 + (unsigned)(((size - 1) >> (f - 2)) & 3);
}

static inline struct kl_run *kl_run_of(const struct kl_seg *s, uintptr_t p)
{
	return &s->runs[(p - s->cbase) >> KL_RUN_SHIFT];
}

/* The chunk of run r: its block's header. */
static inline uintptr_t kl_run_chunk(const struct kl_run *r)
{
	return r->seg->cbase + ((size_t)(r - r->seg->runs) << KL_RUN_SHIFT);
}

/* Slot 0 of run r, of class c. */
static inline uintptr_t kl_run_base(const struct kl_run *r, const struct kl_class *c)
{
	return kl_run_chunk(r) + c->first;
}

/* off / size for a slot offset within a run, by multiply and shift: exact
 * for off < 2^14 because recip errs by less than 2^-18 of a slot. */
static inline size_t kl_slot_index(const struct kl_class *c, uintptr_t off)
{
	return (size_t)(((uint64_t)off * c->recip) >> 32);
}

/* Is p a live slot of class cls (its chunk's class map byte: the class + 1,
 * or 0 for no run) in arena s? Reads only what stays put while a slot of
 * the run is live (the class, p's own bit), so it needs no lock when p is
 * live; any other answer is settled under the lock. In a run's chunk a bit
 * is set only at a live slot's start (B5; an aligned slot's mark is its
 * run's KL_RUN_ALIGNED, not a bit), so a granule-aligned p with its bit set
 * is a live slot's start: no division by the slot size (the chunk's tail
 * past the last slot has no bits). */
static inline int kl_slot_live(const struct kl_seg *s, unsigned cls, uintptr_t p)
{
	return cls - 1u < KL_NCLASSES && !(p & (KL_GRAN - 1)) && kl_bit_get(s, p);
}

#endif
