// keel_h.cpp: keel.h compiles on its own as C++ (make test checks it with
// g++ and clang++), and its storage types keep their size and alignment.
#include "../alloc/keel.h"

static_assert(sizeof(keel_heap) == KEEL_HEAP_BYTES, "heap storage size");
static_assert(alignof(keel_heap) == 64, "heap storage alignment");
static_assert(alignof(keel_cache) == 64, "cache storage alignment");

int main()
{
	static keel_heap heap;
	keel_config config = {};
	return keel_heap_init(&heap, &config) == 0 ? 0 : 1;
}
