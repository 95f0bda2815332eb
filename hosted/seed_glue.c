/* seed_glue.c: the seed's entry points, malloc/free/calloc, over one keel
 * heap on the Linux page source, for tests/seed_example.asm (no libc).
 * free returns keel_free's status, as the seed's free reported failure. */
#include "../alloc/keel.h"
#include "source_linux.h"

void *malloc(size_t size);
int free(void *p);
void *calloc(size_t n, size_t size);

static const struct keel_config seed_config = {
	.source = &keel_linux_source,
	.flags = KEEL_HEAP_NOLOCK, /* the seed is single-threaded */
};
static struct keel_heap seed_heap;
static int seed_is_ready;

/* The heap is set up on first use: the seed has no init call. */
static struct keel_heap *seed_heap_get(void)
{
	if (!seed_is_ready) {
		if (keel_heap_init(&seed_heap, &seed_config) != 0)
			return 0;
		seed_is_ready = 1;
	}
	return &seed_heap;
}

void *malloc(size_t size)
{
	struct keel_heap *heap = seed_heap_get();
	return heap ? keel_malloc(heap, size) : 0;
}

/* 0, or a negative KEEL_E* code (KEEL_ENOTOURS when no heap exists yet). */
int free(void *p)
{
	struct keel_heap *heap = seed_heap_get();
	return heap ? keel_free(heap, p) : KEEL_ENOTOURS;
}

void *calloc(size_t n, size_t size)
{
	struct keel_heap *heap = seed_heap_get();
	return heap ? keel_calloc(heap, n, size) : 0;
}
