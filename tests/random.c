/* tests/random.c: long random operation sequences against a shadow model.
 * Each live block carries its own pattern; realloc must keep the prefix,
 * calloc must give zeroes, keel_check runs every 1000 operations. Fixed seeds:
 * a failure prints the seed, and a failing seed becomes a fixed case here. */
#include "test.h"

#define SLOTS 500

struct slot {
	unsigned char *p;
	size_t size;
	size_t align; /* 0: plain block */
	uint64_t tag;
};

static struct slot slots[SLOTS];

enum mix { MIX_SMALL, MIX_MEDIUM, MIX_LARGE, MIX_ALIGNED, MIX_REALLOC, MIX_CALLOC, MIX_ALL };

struct plan {
	uint64_t seed;
	enum mix mix;
	unsigned ops;
	size_t budget; /* bytes of live blocks the model allows */
};

static size_t pick_size(uint64_t *r, enum mix mix)
{
	uint64_t x = t_rand(r);
	switch (mix) {
	case MIX_SMALL:
		return (size_t)(x % (KEEL_SMALL_MAX + 1));
	case MIX_MEDIUM:
		return KEEL_SMALL_MAX + 1 + (size_t)(x % 60000);
	case MIX_LARGE:
		if (x % 50 == 0)
			return KEEL_SEGMENT_SIZE + (size_t)((x >> 8) % (2 * KEEL_SEGMENT_SIZE));
		/* fall through */
	default:
		switch ((x >> 16) % 8) {
		case 0:
		case 1:
		case 2:
		case 3:
			return (size_t)((x >> 20) % 256);
		case 4:
		case 5:
			return (size_t)((x >> 20) % (KEEL_SMALL_MAX + 1));
		case 6:
			return (size_t)((x >> 20) % 20000);
		default:
			return (size_t)((x >> 20) % 200000);
		}
	}
}

static int slot_ok(struct t *t, const struct plan *pl, unsigned i)
{
	struct slot *s = &slots[i];
	if (t_verify(s->p, s->size, s->tag))
		return 1;
	t_diag("  seed 0x%llx: slot %u (%p, %zu bytes) corrupted", (unsigned long long)pl->seed, i,
	       s->p, s->size);
	T_CHECK(t, !"live block intact");
	return 0;
}

static void run_plan(struct t *t, const struct plan *pl)
{
	struct keel_heap *h = t->heap;
	uint64_t r = pl->seed;
	size_t live_bytes = 0;
	unsigned live = 0;
	t->seed = pl->seed;
	for (unsigned i = 0; i < SLOTS; i++)
		slots[i].p = NULL;

	for (unsigned op = 1; op <= pl->ops; op++) {
		uint64_t x = t_rand(&r);
		unsigned i = (unsigned)(x % SLOTS);
		struct slot *s = &slots[i];
		unsigned kind = (unsigned)((x >> 32) % 16);

		if (s->p &&
		    (kind < 6 || (pl->mix != MIX_REALLOC && pl->mix != MIX_ALL) || kind >= 12)) {
			/* free */
			if (!slot_ok(t, pl, i))
				return;
			int rc = keel_free(h, s->p);
			if (rc != 0) {
				t_diag("  seed 0x%llx op %u: keel_free = %d",
				       (unsigned long long)pl->seed, op, rc);
				T_CHECK(t, rc == 0);
				return;
			}
			live_bytes -= s->size;
			live--;
			s->p = NULL;
		} else if (s->p) {
			/* realloc, keeping the shorter prefix */
			size_t size = pick_size(&r, pl->mix);
			if (live_bytes - s->size + size > pl->budget)
				size = s->size / 2;
			unsigned char *q = keel_realloc(h, s->p, size);
			if (size == 0) {
				/* realloc(p, 0) frees p and returns NULL */
				T_CHECK(t, q == NULL);
				live_bytes -= s->size;
				live--;
				s->p = NULL;
				continue;
			}
			if (!q) {
				t_diag("  seed 0x%llx op %u: realloc %zu -> %zu returned NULL",
				       (unsigned long long)pl->seed, op, s->size, size);
				T_CHECK(t, q != NULL);
				slot_ok(t, pl, i);
				return;
			}
			size_t keep = size < s->size ? size : s->size;
			if (!t_verify(q, keep, s->tag)) {
				t_diag("  seed 0x%llx op %u: realloc %zu -> %zu lost content",
				       (unsigned long long)pl->seed, op, s->size, size);
				T_CHECK(t, !"realloc keeps content");
				return;
			}
			if (s->align && !T_ALIGNED(q, s->align)) {
				t_diag("  seed 0x%llx op %u: realloc lost alignment %zu",
				       (unsigned long long)pl->seed, op, s->align);
				T_CHECK(t, !"realloc keeps alignment");
			}
			T_CHECK(t, keel_usable_size(h, q) >= size);
			live_bytes = live_bytes - s->size + size;
			s->p = q;
			s->size = size;
			s->tag = x;
			t_fill(q, size, s->tag);
		} else {
			/* allocate */
			size_t size = pick_size(&r, pl->mix);
			size_t align = 0;
			unsigned char *q;
			if (live_bytes + size > pl->budget)
				continue;
			int use_calloc =
			        (pl->mix == MIX_CALLOC || pl->mix == MIX_ALL) && kind % 3 == 0;
			int use_align =
			        (pl->mix == MIX_ALIGNED || pl->mix == MIX_ALL) && kind % 3 == 1;
			if (use_align) {
				align = (size_t)1 << ((x >> 40) % 17);
				q = keel_aligned_alloc(h, align, size);
			} else if (use_calloc) {
				size_t n = 1 + (x >> 40) % 8;
				size = size / n * n;
				q = keel_calloc(h, n, size / n);
			} else {
				q = keel_malloc(h, size);
			}
			if (!q) {
				t_diag("  seed 0x%llx op %u: allocation of %zu returned NULL",
				       (unsigned long long)pl->seed, op, size);
				T_CHECK(t, q != NULL);
				return;
			}
			T_CHECK(t, T_ALIGNED(q, 16));
			if (align)
				T_CHECK(t, T_ALIGNED(q, align));
			T_CHECK(t, keel_usable_size(h, q) >= size);
			if (use_calloc && !t_is_zero(q, size)) {
				t_diag("  seed 0x%llx op %u: calloc of %zu not zeroed",
				       (unsigned long long)pl->seed, op, size);
				T_CHECK(t, !"calloc zeroed");
			}
			s->p = q;
			s->size = size;
			s->align = align;
			s->tag = x;
			t_fill(q, size, s->tag);
			live_bytes += size;
			live++;
		}
		if (op % 1000 == 0) {
			struct keel_stats st;
			if (!T_CHECK_HEAP(t, h)) {
				t_diag("  seed 0x%llx: after op %u", (unsigned long long)pl->seed,
				       op);
				return;
			}
			T_CHECK(t, keel_stats(h, &st) == 0);
			T_CHECK(t, st.live_blocks == live);
		}
		if (t->failed > 20)
			return;
	}
	/* the whole model once more, then everything back */
	for (unsigned i = 0; i < SLOTS; i++)
		if (slots[i].p && !slot_ok(t, pl, i))
			return;
	T_CHECK_HEAP(t, h);
	for (unsigned i = 0; i < SLOTS; i++) {
		if (!slots[i].p)
			continue;
		T_CHECK(t, keel_free(h, slots[i].p) == 0);
		slots[i].p = NULL;
	}
	struct keel_stats st;
	T_CHECK(t, keel_stats(h, &st) == 0);
	T_CHECK(t, st.live_blocks == 0 && st.in_use_bytes == 0);
	T_CHECK(t, st.failed_allocs == 0);
	T_CHECK_HEAP(t, h);
	keel_trim(h);
	T_CHECK(t, t->src->live_bytes == 0);
}

#define MIB ((size_t)1 << 20)

static void random_small(struct t *t)
{
	static const struct plan pl = { 0x5eed0001, MIX_SMALL, 40000, 2 * MIB };
	run_plan(t, &pl);
}

static void random_small_2(struct t *t)
{
	static const struct plan pl = { 0xdecafbad, MIX_SMALL, 40000, MIB / 4 };
	run_plan(t, &pl);
}

static void random_medium(struct t *t)
{
	static const struct plan pl = { 0x5eed0002, MIX_MEDIUM, 20000, 6 * MIB };
	run_plan(t, &pl);
}

static void random_mixed_large(struct t *t)
{
	static const struct plan pl = { 0x5eed0003, MIX_LARGE, 15000, 6 * MIB };
	run_plan(t, &pl);
}

static void random_aligned(struct t *t)
{
	static const struct plan pl = { 0x5eed0004, MIX_ALIGNED, 20000, 6 * MIB };
	run_plan(t, &pl);
}

static void random_realloc(struct t *t)
{
	static const struct plan pl = { 0x5eed0005, MIX_REALLOC, 30000, 6 * MIB };
	run_plan(t, &pl);
}

static void random_calloc(struct t *t)
{
	static const struct plan pl = { 0x5eed0006, MIX_CALLOC, 20000, 4 * MIB };
	run_plan(t, &pl);
}

static void random_all_ops(struct t *t)
{
	static const struct plan pl = { 0x5eed0007, MIX_ALL, 25000, 6 * MIB };
	run_plan(t, &pl);
}

static void random_all_ops_2(struct t *t)
{
	static const struct plan pl = { 0x0badc0de5eedull, MIX_ALL, 30000, 3 * MIB };
	run_plan(t, &pl);
}

const struct t_case random_cases[] = {
	T_CASE(random_small),     T_CASE(random_small_2),
	T_CASE(random_medium),    T_CASE(random_mixed_large),
	T_CASE(random_aligned),   T_CASE(random_realloc),
	T_CASE(random_calloc),    T_CASE(random_all_ops),
	T_CASE(random_all_ops_2), { 0 },
};
