/* keel.h: the one public header of the keel heap allocator.
 * Freestanding C11 (also C++): everything an embedder may touch. Memory comes
 * only from a page source (struct keel_source) or from caller-given regions.
 * Every function states what it costs and every way it can fail. */
#ifndef KEEL_H
#define KEEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Public functions stay visible from a library built with hidden visibility. */
#if defined(__GNUC__)
#define KEEL_API __attribute__((visibility("default")))
#else
#define KEEL_API
#endif

#define KEEL_VERSION "0.1.0"

/* Error codes: every non-allocating function returns 0 or one of these.
 *
 * Conventions for every function below, unless its comment says otherwise:
 *  - A heap that was never initialised (or was destroyed) is refused: the
 *    call returns KEEL_EINVAL, NULL or 0 (keel_check: KEEL_ECORRUPT) and
 *    touches nothing.
 *  - Thread-safety: calls on one heap may come from several threads or CPUs
 *    at once; each takes the heap's lock (built-in spinlock or the
 *    keel_lock hooks), and drops it around every page-source call. With
 *    KEEL_HEAP_NOLOCK the caller must serialise all calls on the heap.
 *    Different heaps share nothing.
 *  - Time: "bounded" means independent of the heap's size and history; the
 *    page source's own time is extra and only where a comment says so. */
#define KEEL_ENOTOURS  (-1) /* pointer lies in no segment or region of this heap */
#define KEEL_EINTERIOR (-2) /* ours, but not the start of a block (interior or misaligned) */
#define KEEL_EDOUBLE   (-3) /* the block is already free */
#define KEEL_ECORRUPT  (-4) /* heap metadata failed a consistency check */
#define KEEL_EINVAL    (-5) /* bad argument (alignment, region, config) */
#define KEEL_ENOMEM    (-6) /* the page source refused, or a region table is full */
#define KEEL_EOVERFLOW (-7) /* checked mode: bytes past the block's end were written */
#define KEEL_EUSEAFTER (-8) /* checked mode: a freed block was written after its free */

/* Sizes the allocator is built around (see alloc/internal.h for the why). */
#define KEEL_PAGE_SIZE    4096u
#define KEEL_SEGMENT_SIZE ((size_t)1 << 20)   /* page-source segments: 1 MiB, 1 MiB-aligned */
#define KEEL_SMALL_MAX    1024u               /* largest size served from size-class runs */
#define KEEL_SLOT_MAX     4096u               /* the same when asked an alignment above 16 */
#define KEEL_MAX_ALIGN    ((size_t)1 << 30)   /* largest alignment keel_aligned_alloc accepts */
#define KEEL_MAX_REGIONS  8                   /* caller-given regions per heap */
#define KEEL_DIRTY_BYTES  ((size_t)128 << 20) /* default keel_config.dirty_bytes */

/* protect() modes. */
#define KEEL_PROT_NONE 0 /* any access faults (guard page) */
#define KEEL_PROT_READ 1 /* read-only */
#define KEEL_PROT_RW   3 /* normal heap memory */

/* The page source: the one seam between keel and its environment.
 * bytes and align are multiples of KEEL_PAGE_SIZE; align is a power of two.
 * map returns a mapping of exactly bytes, aligned to align, or NULL; never part
 * of one. If zeroed is set, every mapping map returns reads as zero.
 * unmap gets back exactly a range that map returned (same pointer and bytes);
 * it returns 0 or a negative errno-style code.
 * protect is optional (may be NULL); it changes a page-aligned subrange of a
 * mapping to one of KEEL_PROT_* and returns 0 or a negative code.
 * decommit is optional (may be NULL); it tells the source that a page-aligned
 * subrange of a mapping holds nothing keel needs: the source may take its
 * memory back, and the range stays mapped and usable, its contents then
 * unspecified (Linux: madvise MADV_DONTNEED). A source that commits memory on
 * first touch offers it, and keel then serves blocks of 256 KiB to 8 MiB from
 * 32 MiB arenas (on whole pages, as a mapping would be), where a freed
 * block's pages stay mapped for the next request of any size while the free
 * pages in all stay under config.dirty_bytes; the
 * rest go back through decommit. Without it (or when no 32 MiB arena can be
 * had), such blocks are mappings of their own.
 * Unlike the others, decommit is called with the heap lock held (the range
 * must stay out of reach meanwhile): it must not call into the heap.
 * keel calls map, unmap and protect with no heap lock held, possibly from
 * several threads at once if the heap is shared, so a source used by a
 * shared heap must be thread-safe itself. Besides segments and large blocks,
 * keel maps 8 KiB registry nodes (a few for each GiB of address space in
 * use), given back by keel_trim once they index nothing. */
struct keel_source {
	void *(*map)(void *ctx, size_t bytes, size_t align);
	int (*unmap)(void *ctx, void *p, size_t bytes);
	int (*protect)(void *ctx, void *p, size_t bytes, int prot);
	void *ctx;
	int zeroed; /* nonzero: fresh mappings read as zero, so calloc skips memset */
	int (*decommit)(void *ctx, void *p, size_t bytes);
};

/* Optional lock hooks. lock returns a token that unlock gets back: a kernel can
 * save the interrupt flag in it and restore it, instead of forcing interrupts on.
 * Without hooks the heap uses its own spinlock on compiler atomics, unless
 * KEEL_HEAP_NOLOCK is set (one thread only). */
struct keel_lock {
	uintptr_t (*lock)(void *ctx);
	void (*unlock)(void *ctx, uintptr_t token);
	void *ctx;
};

/* Heap flags (struct keel_config.flags). */
#define KEEL_HEAP_NOLOCK 1u /* caller guarantees one thread at a time: no locking */
/* Checked mode, for finding bugs in the program above the heap:
 *  - a canary follows every block's last asked-for byte: keel_free returns
 *    KEEL_EOVERFLOW (and leaves the block allocated) if even one byte of it
 *    changed, and keel_check reports it; keel_usable_size is the size asked;
 *  - freed memory is filled with poison, verified when it is handed out
 *    again: a write after free is reported through config.report as
 *    KEEL_EUSEAFTER and that memory is never handed out again;
 *  - freed blocks wait in a bounded quarantine (KEEL_QUARANTINE_BLOCKS,
 *    KEEL_QUARANTINE_BYTES) before they can be reused, so a dangling
 *    pointer keeps hitting poison for a while; freeing one again is
 *    KEEL_EDOUBLE;
 *  - with a source that has protect, a large block ends right at an
 *    inaccessible guard page (and starts after one), so running off its end
 *    faults at once;
 *  - medium headers carry a check code and the word before a block a
 *    canary, so an underflow into the header is KEEL_ECORRUPT.
 * Free-list links of small slots are stored encoded with a per-heap secret in
 * every mode, so a corrupted link is reported, never followed. Default mode
 * keeps the O(1) pointer checks and costs next to nothing; checked mode's
 * cost is measured in README.md. */
#define KEEL_HEAP_CHECKED      2u
#define KEEL_QUARANTINE_BLOCKS 256
#define KEEL_QUARANTINE_BYTES  ((size_t)4 << 20)

struct keel_config {
	const struct keel_source *source; /* may be NULL: a region-only heap */
	const struct keel_lock *lock;     /* may be NULL: built-in spinlock */
	unsigned flags;                   /* KEEL_HEAP_* */
	size_t retain_bytes;              /* empty segments kept for reuse before they go back
	                                     to the source; 0 selects KEEL_SEGMENT_SIZE */
	size_t dirty_bytes; /* with a source that decommits: free pages the 32 MiB arenas
	                       keep before they go back; 0 selects KEEL_DIRTY_BYTES */
	/* Where a fault found outside a call that could return it goes (checked
	 * mode's write after free, a corrupted free-list link): err is a KEEL_E*
	 * code, p the block. May be NULL. Called with the heap lock held: it
	 * must not call into the heap (it may abort). */
	void (*report)(void *ctx, int err, const void *p);
	void *report_ctx;
	/* Checked mode with a source that has protect: one allocation in
	 * guard_every (of any size) gets a mapping of its own that ends right
	 * at an inaccessible page, so an overflow of it faults in the act. 0:
	 * none but the large blocks. Costs a mapping per sampled block. */
	unsigned guard_every;
};

/* Caller-provided storage for a heap: no allocation is needed to create one.
 * Its contents are private; use only the functions below. */
#define KEEL_HEAP_BYTES 16384
struct keel_heap {
	unsigned char opaque[KEEL_HEAP_BYTES];
} __attribute__((aligned(64))); /* C and C++ alike (GCC, Clang) */

/* Initialise heap with config (copied; the source and lock structs it points to
 * must outlive the heap). Returns 0 or KEEL_EINVAL (NULL heap/config, a source
 * without map or unmap, a lock with only one hook). O(1); calls nothing.
 * Not thread-safe: initialise a heap before any other thread can see it. */
KEEL_API int keel_heap_init(struct keel_heap *heap, const struct keel_config *config);

/* Give the heap a fixed region [base, base+len) to allocate from. A heap with no
 * source serves all requests from its regions and returns NULL when they are
 * full; it never calls a page source, so it works before paging exists.
 * base is rounded up and the end down to 16 bytes; the region must hold at
 * least 4 KiB after that. The heap never writes outside the region.
 * Returns 0, KEEL_EINVAL (too small, overlaps a region of this heap, wraps) or
 * KEEL_ENOMEM (KEEL_MAX_REGIONS already given). O(len / 64 KiB) to set up the
 * region's metadata at its start. */
KEEL_API int keel_heap_add_region(struct keel_heap *heap, void *base, size_t len);

/* Return every page the heap holds to its source, live blocks included. The
 * heap must be initialised again before use. Returns 0, KEEL_EINVAL (heap not
 * initialised), or the first error the source's unmap returned (every mapping
 * is still offered back). Caller-given regions are simply forgotten.
 * O(segments) plus the unmaps. Not thread-safe: no other call may use the
 * heap during or after it. */
KEEL_API int keel_heap_destroy(struct keel_heap *heap);

/* Allocate size bytes, aligned to 16 at least; a power-of-two size up to
 * KEEL_PAGE_SIZE is aligned to its size. size 0 gives a unique 16-byte block.
 * Returns NULL when size cannot be served (too large, source refused, regions
 * full); the heap is unchanged then. Bounded time, except for one call to the
 * page source when no free memory fits. Thread-safe per heap. */
KEEL_API void *keel_malloc(struct keel_heap *heap, size_t size);

/* Allocate n*size zeroed bytes. NULL if n*size overflows or on exhaustion.
 * Memory known to come fresh from a zeroed source is not written again.
 * As keel_malloc, plus O(n*size) to clear reused memory. Thread-safe. */
KEEL_API void *keel_calloc(struct keel_heap *heap, size_t n, size_t size);

/* Resize p to size bytes, keeping min(old, new) bytes of content.
 * p == NULL: same as keel_malloc(size). size == 0 with p != NULL: p is freed and
 * NULL returned. In place when it can: a small block while size still maps to
 * its class or fills more than half of it; a medium block by shrinking or by
 * growing into a free neighbour (so a block of a 32 MiB arena, see
 * keel_source.decommit, grows in place while the room after it is free); a
 * large block while size fits and keeps more
 * than half of its pages in use (a smaller one moves, so the pages go back).
 * When it moves, the new block keeps the alignment p was allocated with (a
 * small block of up to 4 KiB that keel_aligned_alloc gave, or one sharing its
 * slot run with such a block, keeps its size class's largest power of two,
 * which holds the alignment asked). On
 * failure (exhaustion, or p not a live block of this heap) NULL is returned
 * and p is left untouched. Bounded time in place; a move adds a keel_malloc,
 * an O(min(old, new)) copy and a keel_free. Thread-safe. */
KEEL_API void *keel_realloc(struct keel_heap *heap, void *p, size_t size);

/* Allocate size bytes aligned to align, any power of two up to KEEL_MAX_ALIGN.
 * Returns NULL for a bad alignment (0, not a power of two, too large) or on
 * exhaustion; the heap is unchanged then. Bounded time like keel_malloc. A
 * request whose size plus alignment passes 256 KiB takes a mapping of its
 * own, or with a source that decommits, a block of a 32 MiB arena while that
 * sum is at most 8 MiB (keel_source). Thread-safe. */
KEEL_API void *keel_aligned_alloc(struct keel_heap *heap, size_t align, size_t size);

/* Free p, which must be a live block of this heap. p == NULL does nothing and
 * returns 0. Otherwise returns 0, or leaves the heap unchanged and returns
 * KEEL_ENOTOURS, KEEL_EINTERIOR, KEEL_EDOUBLE or KEEL_ECORRUPT.
 * O(1); calls the page source only when a segment becomes empty beyond the
 * retained amount, when a large block does not fit the large-block cache
 * (up to 16 freed large blocks and 64 MiB are kept for reuse, as free bytes,
 * until keel_trim), or, with decommit, when the free pages of the 32 MiB
 * arenas pass config.dirty_bytes (then up to 16 of the largest free blocks
 * are looked at). Thread-safe (a concurrent double free is still reported
 * once). */
KEEL_API int keel_free(struct keel_heap *heap, void *p);

/* Usable bytes of the live block p (at least the size asked for), or 0 if p is
 * NULL or not a live block of this heap. O(1). Thread-safe; the block may be
 * written up to that size. */
KEEL_API size_t keel_usable_size(struct keel_heap *heap, const void *p);

/* Number of size classes reported in keel_stats.class_count. */
#define KEEL_NCLASSES 40

/* Statistics, all kept as counters on the way: reading them walks nothing. */
struct keel_stats {
	size_t requested_bytes; /* bytes asked for by live blocks (small blocks count
	                           their class size: a slot does not record the ask) */
	size_t in_use_bytes;    /* usable bytes of live blocks */
	size_t peak_in_use_bytes;
	size_t source_bytes; /* bytes currently held from the page source */
	size_t peak_source_bytes;
	size_t region_bytes;        /* bytes of caller-given regions */
	size_t free_bytes;          /* bytes in free medium blocks and free small slots */
	size_t largest_free;        /* largest free medium block (lower bound within 1/16) */
	unsigned fragmentation_pct; /* 100 * (1 - largest_free / medium free bytes) */
	size_t live_blocks;
	size_t alloc_count, free_count; /* since init */
	size_t failed_allocs;
	size_t source_maps, source_unmaps, source_failures;
	size_t segments;                   /* page-source segments and regions held */
	size_t large_blocks;               /* live blocks mapped on their own */
	size_t class_count[KEEL_NCLASSES]; /* live blocks per size class */
	size_t class_size[KEEL_NCLASSES];  /* the size of each class */
};

/* Fill *out with one consistent snapshot (taken under the heap lock).
 * Returns 0 or KEEL_EINVAL (heap not initialised, out NULL).
 * O(KEEL_NCLASSES). Thread-safe. */
KEEL_API int keel_stats(struct keel_heap *heap, struct keel_stats *out);

/* Where keel_check found a broken invariant. */
struct keel_fault {
	const char *what;  /* the invariant's label and a short text, e.g. "R2 slot bit vs list" */
	const void *where; /* the address involved */
};

/* Validate every invariant of the heap (segments, registry, free lists,
 * boundary tags, runs, bitmaps, counters). Returns 0, or KEEL_ECORRUPT and
 * describes the first failure in *fault (fault may be NULL); a heap not
 * initialised is KEEL_ECORRUPT too ("H1"). Changes nothing. O(heap size), with the heap lock held
 * throughout, so other threads wait. Thread-safe. */
KEEL_API int keel_check(struct keel_heap *heap, struct keel_fault *fault);

/* One block, as keel_walk reports it. */
struct keel_block {
	void *p;     /* start of the usable bytes */
	size_t size; /* usable bytes */
	int is_free;
	int kind; /* KEEL_KIND_* */
};
#define KEEL_KIND_SMALL  1
#define KEEL_KIND_MEDIUM 2
#define KEEL_KIND_LARGE  3

/* Call visit for every block, live and free (free small slots are reported
 * one by one only if they were ever handed out; never-used slots of a run are
 * not). Stops early and returns visit's value if it is nonzero; else 0.
 * The heap lock is held during the walk: visit must not call into this heap.
 * KEEL_EINVAL for a heap not initialised or a NULL visit.
 * O(heap size), other threads waiting. Thread-safe. */
KEEL_API int keel_walk(struct keel_heap *heap, int (*visit)(const struct keel_block *b, void *arg),
                       void *arg);

/* Give free memory back to the source: empty segments, including the retained
 * ones, cached large blocks, and empty runs (after the batches caches handed
 * the heap go back to their runs); with decommit, the pages of every free
 * block of the 32 MiB arenas, and the arenas left empty. Returns the number of
 * bytes returned, decommitted ones included (0 if none, or the heap is not
 * initialised). O(segments + slots in batches + blocks of 32 MiB arenas) plus
 * the calls to the source. Thread-safe. */
KEEL_API size_t keel_trim(struct keel_heap *heap);

/* A cache: a small front end for one thread (or one CPU) over a shared heap.
 * It keeps bounded stacks of free small slots per size class (16 KiB, and
 * 4 to 128 slots, each at first; a class that keeps refilling from the heap
 * grows to at most 32 KiB and 8 to 512 slots), so the common malloc and free
 * of a small block take no lock and no atomic operation; it refills from and flushes to
 * the heap in batches under the heap's lock. Past a full stack, frees go on
 * a spill list that is handed to the heap as one batch of up to 32 slots
 * (O(1), nothing walked), which the heap keeps whole (8 batches a class) for
 * the next cache whose stack runs empty: what one thread frees another
 * allocates without either touching the runs. It also keeps freed medium
 * blocks of 1 KiB to 64 KiB one by one (64 KiB of a size, or 16 blocks if
 * that is more and within 256 KiB, growing to 4 MiB for a size the thread
 * also allocates; 256 KiB in all, and more while all caches' extra stays
 * within 1/16 of the heap's live bytes: past that a free hands its size's
 * blocks to the heap whole, for another cache, while the heap holds less
 * than 256 KiB of such), handed out again whole,
 * without the lock, to requests of their size or up to a third smaller.
 * A cache must be used by one thread at a time (a kernel gives each CPU one
 * and keeps interrupts off around its use). Slots and blocks in a cache still
 * count as live in keel_stats, keel_check and keel_walk until flushed (a
 * flush, or keel_trim, also empties the heap's batches), at the size first
 * asked. Freeing a pointer to the wrong cache is fine: blocks
 * go back to the heap they came from.
 * Misuse is caught as by keel_free: a double free of a block sitting in any
 * cache of the heap is recognised by a per-heap secret written into it. */
#define KEEL_CACHE_BYTES 3072
struct keel_cache {
	unsigned char opaque[KEEL_CACHE_BYTES];
} __attribute__((aligned(64)));

/* Attach cache to heap. Returns 0 or KEEL_EINVAL. From then on keel_trim
 * keeps the heap's registry nodes (keel_cache_free reads them unlocked). */
KEEL_API int keel_cache_init(struct keel_cache *cache, struct keel_heap *heap);

/* As keel_malloc; small sizes come from the cache (O(1), no lock), refilled
 * in a batch when empty, and so do 2 and 4 KiB (aligned to themselves, a slot
 * of their class); a medium size from a kept block if there is one; other
 * sizes go to the heap. */
KEEL_API void *keel_cache_malloc(struct keel_cache *cache, size_t size);

/* As keel_realloc (the same results, a block keel_aligned_alloc aligned keeps
 * its alignment); a small block that must move to another small size gets
 * its new slot from the cache, and its old slot goes back to its run with the
 * next 31 others like it, under one lock: a block that outgrew its class
 * seldom comes back to it. O(size) for the copy. */
KEEL_API void *keel_cache_realloc(struct keel_cache *cache, void *p, size_t size);

/* As keel_aligned_alloc; alignments to 4 KiB for sizes to KEEL_SLOT_MAX come
 * from the cache (O(1), no lock): the slot's size class is a multiple of align.
 * Unlike keel_aligned_alloc's, such a block does not carry its alignment
 * into keel_realloc, which (as C's realloc) promises 16 bytes only. */
KEEL_API void *keel_cache_aligned_alloc(struct keel_cache *cache, size_t align, size_t size);

/* As keel_free (same codes, same guarantee: on error nothing changed); a
 * small slot stays in the cache, a batch goes back when the class's stack
 * is full; a medium block stays while there is room. O(1), with no lock for
 * what stays. */
KEEL_API int keel_cache_free(struct keel_cache *cache, void *p);

/* As keel_usable_size (which is 0 for a small slot sitting free in a cache:
 * keel_free, keel_realloc and keel_usable_size all know such a slot). */
KEEL_API size_t keel_cache_usable_size(struct keel_cache *cache, const void *p);

/* Give every cached slot and block back to the heap (a thread's exit, a CPU
 * going offline), and the batches caches handed the heap back to its runs,
 * so that once every cache is flushed nothing counts as live but what the
 * program holds. The cache stays attached and usable. O(cached slots +
 * slots in batches: at most 8 x 32 a class). */
KEEL_API void keel_cache_flush(struct keel_cache *cache);

/* A short name for an error code ("double free"...), never NULL; a static
 * string ("unknown error" for a code keel does not define). O(1), pure. */
KEEL_API const char *keel_strerror(int err);

/* Standard names on one default heap, for kernels that embed keel: define
 * KEEL_STD_NAMES when compiling alloc/ to get malloc, free, calloc and realloc
 * (and keel_default_heap) over a heap the embedder initialises first with
 * keel_heap_init(keel_default_heap(), ...). free() ignores errors there.
 * Without KEEL_STD_NAMES it is not defined. O(1); the names are as
 * thread-safe as the heap's config makes them. */
KEEL_API struct keel_heap *keel_default_heap(void);

#ifdef __cplusplus
}
#endif
#endif /* KEEL_H */
