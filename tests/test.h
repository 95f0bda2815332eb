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
enum { T_CALL_MAP, T_CALL_UNMAP, T_CALL_PROTECT };
struct t_source {
	struct keel_source src;         /* what the heap is given */
	const struct keel_source *base; /* the environment's source */
	size_t live_maps, live_bytes, peak_bytes;
	size_t maps, unmaps, protects;
	long fail_at;       /* the map call (0-based count) from which maps fail; -1 never */
	long fail_only;     /* the one map call (0-based count) that fails; -1 none */
	int bad_unmaps;     /* unmaps of ranges this source never mapped */
	size_t map_calls;   /* every call to map, refused ones included */
	size_t failed_maps; /* maps refused (fail_at, base failure or a full table) */
	int unmap_error;    /* nonzero: unmaps still happen but report this code */
	int quiet;          /* no diag line for a bad unmap (made on purpose) */
	/* Called first in every map, unmap and protect (call: T_CALL_*). keel
	 * makes those calls with no heap lock held, so another thread may call
	 * into the heap meanwhile; a case stands in for it here, at exactly that
	 * point. NULL: none. */
	void (*hook)(struct t_source *ts, int call, size_t bytes);
	void *hook_ctx;
	/* decommit, offered by t_aux_open_big only: the range must lie in a live
	 * mapping; it is filled with junk (keel may assume nothing of it) */
	size_t decommits, decommit_bytes;
	int bad_decommits;
	struct {
		void *p;
		size_t bytes;
	} live[T_SRC_MAX_MAPS];
};
void t_source_init(struct t_source *ts, const struct keel_source *base);
/* Bytes held in segment-sized (or larger) mappings: segments and large
 * blocks, as opposed to the smaller mappings keel takes for its registry. */
size_t t_segment_bytes(const struct t_source *ts);

/* One case's context: a fresh heap over a fresh counting source. */
struct t {
	struct keel_heap *heap;
	struct t_source *src;
	const struct keel_config *config;
	int failed;
	unsigned checks;
	uint64_t seed; /* random cases print it when they fail */
};

/* A second heap a case may open (over its own counting source, or with no
 * source at all for a region heap). The runner closes every aux heap still
 * open after the case, with the same checks as for the main heap. */
#define T_AUX_MAX     2
#define T_AUX_REPORTS 8 /* config.report calls kept per aux heap; more are only counted */
struct t_aux {
	struct keel_heap heap;
	struct t_source src;
	struct keel_config config;
	int is_open;
	/* Every aux heap's config.report records here (err, p) in call order. */
	unsigned nreports;
	struct {
		int err;
		const void *p;
	} reports[T_AUX_REPORTS];
};
/* base NULL: a region-only heap (config.source NULL). Returns NULL (and fails
 * the case) if no slot is free or keel_heap_init refuses. The heap's
 * config.report is a recorder filling nreports/reports. */
struct t_aux *t_aux_open(struct t *t, const struct keel_source *base, const struct keel_lock *lock,
                         unsigned flags, size_t retain_bytes);
/* An aux heap over the environment's source whose counting source also
 * decommits, so blocks of 256 KiB to 8 MiB come from 32 MiB arenas, with
 * config.dirty_bytes = dirty_bytes. */
struct t_aux *t_aux_open_big(struct t *t, size_t dirty_bytes);
/* No report left (a case takes the reports it expects by setting nreports
 * back to 0), keel_check, keel_heap_destroy, then the source's live
 * maps/bytes and bad unmaps must be zero. Returns 1 if all held (each miss
 * is a failed check). */
int t_aux_close(struct t *t, struct t_aux *aux);

/* keel_check(heap) == 0, printing the fault as a diag if not. Returns 1 if clean. */
int t_check_heap(struct t *t, struct keel_heap *heap, const char *file, int line);
#define T_CHECK_HEAP(t, h) t_check_heap((t), (h), __FILE__, __LINE__)

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

/* Diagnostics: a line "# ..." in the TAP output (the newline is added).
 * %s %d %u %x %p %zu %lu %llx %c only. */
void t_diag(const char *fmt, ...);

/* Deterministic random numbers (xorshift64*). */
uint64_t t_rand(uint64_t *state);

/* Freestanding helpers so cases need no libc. */
void t_fill(void *p, size_t n, uint64_t tag);        /* pattern derived from tag and offset */
int t_verify(const void *p, size_t n, uint64_t tag); /* 1 if the pattern is intact */
int t_is_zero(const void *p, size_t n);
void t_memset(void *p, int c, size_t n);
int t_all_bytes(const void *p, size_t n, unsigned char c); /* 1 if every byte is c */
int t_streq(const char *a, const char *b);
/* Sizes of the core's size classes (from keel_stats), ascending; returns how many. */
unsigned t_class_sizes(struct keel_heap *heap, size_t out[KEEL_NCLASSES]);
/* Representative sizes: a small class, a medium block (over KEEL_SMALL_MAX,
 * well inside a segment) and a large one (cannot fit a segment). */
#define T_SMALL         64u
#define T_MEDIUM        3000u
#define T_LARGE         (2 * KEEL_SEGMENT_SIZE)
#define T_ALIGNED(p, a) (((uintptr_t)(p) & ((uintptr_t)(a)-1)) == 0)

/* A case and a table of cases (terminated by a zero entry). */
struct t_case {
	const char *name;
	void (*fn)(struct t *t);
};
#define T_CASE(f)                                                                                  \
	{                                                                                          \
#f, f                                                                              \
	}

/* suites.c lists every table; the runner walks them in order. */
extern const struct t_case *const t_suites[];
extern const struct t_case selftest_cases[];   /* selftest.c: the library's own oracles */
extern const struct t_case basic_cases[];      /* basic.c: malloc, sizes, usable size */
extern const struct t_case calloc_cases[];     /* calloc.c: zeroing and overflow */
extern const struct t_case free_cases[];       /* free.c: bad frees change nothing */
extern const struct t_case realloc_cases[];    /* realloc.c */
extern const struct t_case align_cases[];      /* align.c: keel_aligned_alloc */
extern const struct t_case region_cases[];     /* region.c: caller-given regions */
extern const struct t_case source_cases[];     /* source.c: failing source, trim, destroy */
extern const struct t_case heap_cases[];       /* heap.c: init and lock hooks */
extern const struct t_case introspect_cases[]; /* introspect.c: stats, walk, check, strerror */
extern const struct t_case random_cases[];     /* random.c: random ops against a shadow model */
extern const struct t_case cache_cases[];      /* cache.c: keel_cache, the per-thread front end */
extern const struct t_case misuse_cases[];     /* misuse.c: each fault, default and checked mode */
extern const struct t_case inject_cases[];     /* inject.c: a map refused at each call in turn */
extern const struct t_case corrupt_cases[];    /* corrupt.c: damage reported, error paths */

/* Run every case of every suite, printing TAP through t_env_write.
 * Returns the number of failed cases. passed/failed may be NULL. */
int t_run_all(unsigned *passed, unsigned *failed);

/* Supplied by each runner. */
void t_env_write(const char *s, size_t n);    /* TAP output */
const struct keel_source *t_env_source(void); /* the environment's page source */
void *t_env_foreign_pointer(void);            /* an address no heap owns (e.g. a stack slot) */

#endif
