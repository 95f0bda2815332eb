/* valgrind_test.c: a keel heap built with KEEL_VALGRIND=1 under memcheck.
 * Each mode makes one kind of mistake (or none); tests/valgrind runs each
 * under valgrind and checks that memcheck names it.
 * Usage: valgrind_test clean|leak|overflow|use-after-free */
#include <stdio.h>
#include <string.h>

#include "../alloc/keel.h"
#include "source_linux.h"

static struct keel_heap heap;

/* A pointer the compiler cannot follow, so the mistakes stay in the code. */
static void *volatile launder;

static int clean(void)
{
	static void *p[64];
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 64; i++) {
			size_t size = (size_t)(i * 97 + round * 3000) % 70000 + 1;
			p[i] = i % 3 ? keel_malloc(&heap, size) : keel_calloc(&heap, 1, size);
			if (!p[i])
				return 1;
			memset(p[i], i, size);
		}
		for (int i = 0; i < 64; i += 2)
			p[i] = keel_realloc(&heap, p[i], 5000);
		for (int i = 0; i < 64; i++)
			if (keel_free(&heap, p[i]) != 0)
				return 1;
	}
	return keel_check(&heap, NULL) != 0;
}

int main(int argc, char **argv)
{
	struct keel_config cfg = { .source = &keel_linux_source };
	if (argc != 2 || keel_heap_init(&heap, &cfg) != 0)
		return 2;
	if (!strcmp(argv[1], "clean"))
		return clean();
	if (!strcmp(argv[1], "leak")) {
		launder = keel_malloc(&heap, 100); /* and the only pointer to it is lost */
		launder = NULL;
		return 0;
	}
	if (!strcmp(argv[1], "overflow")) {
		launder = keel_malloc(&heap, 24);
		volatile char *p = launder;
		p[24] = 1; /* one byte past the end */
		keel_free(&heap, launder);
		return 0;
	}
	if (!strcmp(argv[1], "use-after-free")) {
		launder = keel_malloc(&heap, 64);
		keel_free(&heap, launder);
		volatile char *p = launder;
		return p[8] == 42; /* a read of the freed block */
	}
	return 2;
}
