/* test.h: the tiny freestanding test API. Cases include only keel.h and this
 * file, so the hosted runner, the kernel and the UEFI application link the very
 * same case files. Each runner supplies the three t_env_* functions below. */
#ifndef KEEL_TEST_H
#define KEEL_TEST_H

#include <stddef.h>
#include <stdint.h>

#include "../alloc/keel.h"

/* A counting page source over the environment's source. It counts live
 * mappings and pages, checks that every unmap matches a map, can be told to
 * fail from the k-th map on, and fills fresh mappings with junk when the
 * environment's source does not promise zeroed memory. */
#define T_SRC_MAX_MAPS 1024
struct t_source {
	struct keel_source src;         /* what the heap is given */
	const struct keel_source *base; /* the environment's source */
	size_t live_maps, live_bytes, peak_bytes;
	size_t maps, unmaps, protects;
	long fail_at;  /* the map call (0-based count) from which maps fail; -1 never */
	int bad_unmaps; /* unmaps of ranges this source never mapped */
	struct {
		void *p;
		size_t bytes;
	} live[T_SRC_MAX_MAPS];
};
void t_source_init(struct t_source *ts, const struct keel_source *base);

/* One case's context: a fresh heap over a fresh counting source. */
struct t {
	struct keel_heap *heap;
	struct t_source *src;
	const struct keel_config *config;
	int failed;
	unsigned checks;
	uint64_t seed; /* random cases print it when they fail */
};

/* Record a failed check with its place and text, then go on. */
void t_fail(struct t *t, const char *file, int line, const char *expr);
#define T_CHECK(t, e) ((e) ? (void)((t)->checks++) : t_fail((t), __FILE__, __LINE__, #e))
/* Check and leave the case when it fails (for checks later steps rely on). */
#define T_REQUIRE(t, e)                                                                            \
	do {                                                                                       \
		if (!(e)) {                                                                        \
			t_fail((t), __FILE__, __LINE__, #e);                                       \
			return;                                                                    \
		}                                                                                  \
		(t)->checks++;                                                                     \
	} while (0)

/* Diagnostics: a line "# ..." in the TAP output. %s %d %u %x %p %zu %lu only. */
void t_diag(const char *fmt, ...);

/* Deterministic random numbers (xorshift64*). */
uint64_t t_rand(uint64_t *state);

/* Freestanding helpers so cases need no libc. */
void t_fill(void *p, size_t n, uint64_t tag);           /* pattern derived from tag and offset */
int t_verify(const void *p, size_t n, uint64_t tag);    /* 1 if the pattern is intact */
int t_is_zero(const void *p, size_t n);
void t_memset(void *p, int c, size_t n);

/* A case and a table of cases (terminated by a zero entry). */
struct t_case {
	const char *name;
	void (*fn)(struct t *t);
};
#define T_CASE(f) { #f, f }

/* suites.c lists every table; the runner walks them in order. */
extern const struct t_case *const t_suites[];

/* Run every case of every suite, printing TAP through t_env_write.
 * Returns the number of failed cases. passed/failed may be NULL. */
int t_run_all(unsigned *passed, unsigned *failed);

/* Supplied by each runner. */
void t_env_write(const char *s, size_t n);         /* TAP output */
const struct keel_source *t_env_source(void);      /* the environment's page source */
void *t_env_foreign_pointer(void);                 /* an address no heap owns (e.g. a stack slot) */

#endif
