/* liballoc.c: the liballoc adapter. Many hobby kernels already implement
 * liballoc's four hooks; this file turns them into a keel page source and
 * lock, and exports liballoc's kmalloc-style names over one keel heap, so such
 * a kernel swaps allocators by changing what it links. It lives outside alloc/
 * because it needs symbols from outside (the hooks), which the core never may.
 * Written from liballoc's documented hook contract; shares no code with it. */
#include <stdint.h>

#include "liballoc.h"

#define LA_PAGE ((size_t)KEEL_PAGE_SIZE)

/* ---- the page source ------------------------------------------------------
 * keel asks for 1 MiB alignment (segments, large blocks) and 4 KiB (registry
 * nodes); liballoc_alloc promises 4 KiB only. A mapping liballoc placed
 * misaligned is replaced by a larger one with an aligned part inside:
 *   raw                 p = align_up(raw, align)
 *   [ head slack ...... | bytes handed to keel ....... | tail slack ]
 *   <-------------- (bytes + align) / 4096 pages ------------------->
 * and la_maps remembers raw and its pages for p, since unmap gets only p and
 * bytes. A mapping that came back aligned has no entry: unmap frees p itself.
 *   M1  an entry with p != NULL is live: p is inside [raw, raw+pages*4096)
 *       and no other entry has the same p
 * All of la_maps is guarded by liballoc_lock. */
static struct {
	void *p, *raw;
	size_t pages;
} la_maps[KEEL_LIBALLOC_MAX_MAPS];
static size_t la_nmaps; /* live entries, so that unmap skips the table when 0 */

static void *la_map(void *ctx, size_t bytes, size_t align)
{
	(void)ctx;
	size_t pages = bytes / LA_PAGE;
	liballoc_lock();
	void *p = liballoc_alloc(pages);
	if (p && ((uintptr_t)p & (align - 1)) != 0) {
		liballoc_free(p, pages);
		p = NULL;
		size_t slot = 0;
		while (slot < KEEL_LIBALLOC_MAX_MAPS && la_maps[slot].p)
			slot++;
		size_t raw_pages = pages + align / LA_PAGE;
		void *raw = slot < KEEL_LIBALLOC_MAX_MAPS ? liballoc_alloc(raw_pages) : NULL;
		if (raw) {
			uintptr_t a = ((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1);
			p = (void *)a;
			la_maps[slot].p = p;
			la_maps[slot].raw = raw;
			la_maps[slot].pages = raw_pages;
			la_nmaps++;
		}
	}
	liballoc_unlock();
	return p;
}

static int la_unmap(void *ctx, void *p, size_t bytes)
{
	(void)ctx;
	void *raw = p;
	size_t pages = bytes / LA_PAGE;
	liballoc_lock();
	for (size_t i = 0; la_nmaps > 0 && i < KEEL_LIBALLOC_MAX_MAPS; i++) {
		if (la_maps[i].p == p) {
			raw = la_maps[i].raw;
			pages = la_maps[i].pages;
			la_maps[i].p = NULL;
			la_nmaps--;
			break;
		}
	}
	int rc = liballoc_free(raw, pages);
	liballoc_unlock();
	return rc == 0 ? 0 : rc < 0 ? rc : -rc; /* keel wants 0 or a negative code */
}

const struct keel_source keel_liballoc_source = {
	.map = la_map,
	.unmap = la_unmap,
	.protect = NULL, /* liballoc has no hook for it */
	.ctx = NULL,
	.zeroed = 0,
};

/* ---- the lock: liballoc_lock as the heap lock ----------------------------- */
static uintptr_t la_lock(void *ctx)
{
	(void)ctx;
	liballoc_lock();
	return 0;
}

static void la_unlock(void *ctx, uintptr_t token)
{
	(void)ctx;
	(void)token;
	liballoc_unlock();
}

static const struct keel_lock la_lock_hooks = { .lock = la_lock, .unlock = la_unlock };

/* ---- the heap and liballoc's names ---------------------------------------- */
static const struct keel_config la_config = {
	.source = &keel_liballoc_source,
	.lock = &la_lock_hooks,
};
static struct keel_heap la_heap;
static int la_state; /* 0: not set up, 1: ready, -1: keel_heap_init refused */

struct keel_heap *keel_liballoc_heap(void)
{
	int state = __atomic_load_n(&la_state, __ATOMIC_ACQUIRE);
	if (state == 0) {
		liballoc_lock();
		state = la_state;
		if (state == 0) {
			state = keel_heap_init(&la_heap, &la_config) == 0 ? 1 : -1;
			__atomic_store_n(&la_state, state, __ATOMIC_RELEASE);
		}
		liballoc_unlock();
	}
	return state == 1 ? &la_heap : NULL;
}

void *KEEL_LIBALLOC_PREFIX(malloc)(size_t size)
{
	struct keel_heap *heap = keel_liballoc_heap();
	return heap ? keel_malloc(heap, size) : NULL;
}

void *KEEL_LIBALLOC_PREFIX(calloc)(size_t n, size_t size)
{
	struct keel_heap *heap = keel_liballoc_heap();
	return heap ? keel_calloc(heap, n, size) : NULL;
}

void *KEEL_LIBALLOC_PREFIX(realloc)(void *p, size_t size)
{
	struct keel_heap *heap = keel_liballoc_heap();
	return heap ? keel_realloc(heap, p, size) : NULL;
}

void KEEL_LIBALLOC_PREFIX(free)(void *p)
{
	struct keel_heap *heap = keel_liballoc_heap();
	if (heap)
		(void)keel_free(heap, p);
}
