/* demo.c: `make run` on Linux until the kernel boots: a heap over the Linux
 * page source, a few allocations of each kind, then keel_stats and keel_check. */
#include <stdio.h>

#include "../alloc/keel.h"
#include "source_linux.h"

int main(void)
{
	static struct keel_heap heap;
	const struct keel_config config = { .source = &keel_linux_source };
	if (keel_heap_init(&heap, &config) != 0) {
		fprintf(stderr, "demo: keel_heap_init failed\n");
		return 1;
	}

	static const size_t sizes[] = { 16, 48, 100, 1000, 5000, 70000, 3 << 20 };
	void *p[sizeof sizes / sizeof *sizes];
	for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
		p[i] = keel_malloc(&heap, sizes[i]);
		printf("keel_malloc(%zu) = %p, usable %zu\n", sizes[i], p[i],
		       keel_usable_size(&heap, p[i]));
	}
	for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i += 2)
		printf("keel_free(%p) = %d\n", p[i], keel_free(&heap, p[i]));
	int err = keel_free(&heap, p[0]);
	printf("keel_free(%p) again = %d (%s)\n", p[0], err, keel_strerror(err));

	struct keel_stats st;
	keel_stats(&heap, &st);
	printf("stats: %zu live blocks, %zu bytes in use, %zu bytes from the source in %zu "
	       "segments, %zu large\n",
	       st.live_blocks, st.in_use_bytes, st.source_bytes, st.segments, st.large_blocks);

	struct keel_fault fault = { 0 };
	err = keel_check(&heap, &fault);
	printf("keel_check = %d%s%s\n", err, err ? ": " : "", err ? fault.what : "");
	keel_heap_destroy(&heap);
	return err != 0;
}
