/* liballoc.h: keel behind liballoc's interface, for kernels that already
 * provide liballoc's four hooks and call kmalloc/kfree/kcalloc/krealloc.
 * Link compat/liballoc.c and the core (alloc/ or build/dist/keel.c) in place
 * of liballoc; the kernel's hooks stay as they are. See PORTING.md. */
#ifndef KEEL_LIBALLOC_H
#define KEEL_LIBALLOC_H

#include <stddef.h>

#include "../alloc/keel.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The public names are PREFIX(malloc) etc., k by default as in liballoc.
 * Compile compat/liballoc.c with -D'KEEL_LIBALLOC_PREFIX(f)=f' for plain
 * malloc/free/calloc/realloc. */
#ifndef KEEL_LIBALLOC_PREFIX
#define KEEL_LIBALLOC_PREFIX(f) k##f
#endif

/* Live mappings the adapter can remember that were over-allocated to reach
 * keel's alignment (see keel_liballoc_source). One entry per 1 MiB segment
 * or large block whose pages liballoc_alloc did not place aligned. */
#ifndef KEEL_LIBALLOC_MAX_MAPS
#define KEEL_LIBALLOC_MAX_MAPS 1024
#endif

/* ---- the hooks the kernel provides (liballoc's contract) ----------------- */
/* Take the allocator's lock (a spinlock, or disable interrupts). Returns 0 on
 * success; the adapter ignores the value, as liballoc does. Never nested: the
 * adapter takes it at most once at a time. */
int liballoc_lock(void);
/* Release what liballoc_lock took. Returns 0 on success (ignored). */
int liballoc_unlock(void);
/* pages * 4096 bytes of writable memory, aligned to 4096 at least, or NULL.
 * Nothing more is assumed: not zeroed, no larger alignment. Always called
 * with liballoc_lock held. */
void *liballoc_alloc(size_t pages);
/* Give back exactly a range liballoc_alloc returned, with the same pages.
 * Returns 0 on success. Always called with liballoc_lock held. */
int liballoc_free(void *p, size_t pages);

/* ---- what the adapter provides --------------------------------------------
 * The names liballoc exports, over one keel heap that uses the hooks above as
 * its lock and its page source. The heap is set up on first use (under
 * liballoc_lock), so there is no init call. Thread-safe as the hooks are. */
void *KEEL_LIBALLOC_PREFIX(malloc)(size_t size);            /* keel_malloc; NULL on failure */
void *KEEL_LIBALLOC_PREFIX(calloc)(size_t n, size_t size);  /* keel_calloc */
void *KEEL_LIBALLOC_PREFIX(realloc)(void *p, size_t size);  /* keel_realloc */
/* keel_free, its status dropped (liballoc's free returns nothing); call
 * keel_free(keel_liballoc_heap(), p) to see it. */
void KEEL_LIBALLOC_PREFIX(free)(void *p);

/* The heap behind the names above, set up if needed, for keel_check,
 * keel_stats, keel_trim or keel_free with its status. NULL only if
 * keel_heap_init refused, which the adapter's fixed config never makes it. */
struct keel_heap *keel_liballoc_heap(void);

/* A keel page source over liballoc_alloc/liballoc_free, usable by any heap.
 * map first asks for exactly the pages; if they come back misaligned it gives
 * them back and asks for pages + align/4096 instead, hands out the aligned
 * part and remembers the whole (KEEL_LIBALLOC_MAX_MAPS entries; when full,
 * map returns NULL). That slack costs up to one segment (1 MiB) per
 * misaligned mapping: a kernel that can place pages aligned should give keel
 * a source of its own instead (PORTING.md). map and unmap take liballoc_lock
 * around the hooks; keel never calls them with its heap lock held. Each is
 * O(KEEL_LIBALLOC_MAX_MAPS) at worst, plus the hooks. Not zeroed. */
extern const struct keel_source keel_liballoc_source;

#ifdef __cplusplus
}
#endif
#endif /* KEEL_LIBALLOC_H */
