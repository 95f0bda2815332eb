/* tests/fuzz.c: the libFuzzer target (hosted only, not one of the shared
 * cases). The input is an operation sequence run on a keel heap over the
 * Linux source and on a shadow model of every live block (size, alignment,
 * fill pattern); any difference traps. Byte 0 picks the mode (bit 0:
 * KEEL_HEAP_CHECKED), then each op is one byte and its arguments. The same
 * input always runs the same way: nothing depends on time or addresses. */
#include <stddef.h>
#include <stdint.h>

#include "../alloc/keel.h"
#include "../hosted/source_linux.h"
#include "../hosted/syscall.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
_Noreturn void keel_hosted_assert_fail(const char *file, int line, const char *expr);

static void say(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	(void)sys_call3(SYS_write, 2, (long)(uintptr_t)s, (long)n);
}

/* The core's KL_ASSERT (KEEL_DEBUG=2 in this build, hosted/keel_assert.h). */
_Noreturn void keel_hosted_assert_fail(const char *file, int line, const char *expr)
{
	(void)line;
	say("keel assertion failed: ");
	say(file);
	say(": ");
	say(expr);
	say("\n");
	__builtin_trap();
}

static void say_num(size_t v)
{
	char d[24];
	int n = 0;
	do {
		d[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	char s[25];
	for (int i = 0; i < n; i++)
		s[i] = d[n - 1 - i];
	s[n] = 0;
	say(s);
}

/* What the run is doing, for the report of a mismatch. */
static struct {
	unsigned step, op;
	size_t size, align, usable;
} now;

/* A mismatch between keel and the model: say which check and where, then
 * trap so libFuzzer keeps the input. */
static _Noreturn void mismatch(const char *what)
{
	say(what);
	say("\n  at step ");
	say_num(now.step);
	say(", op ");
	say_num(now.op);
	say(", size ");
	say_num(now.size);
	say(", align ");
	say_num(now.align);
	say(", usable size ");
	say_num(now.usable);
	say("\n");
	__builtin_trap();
}
#define STR2(x) #x
#define STR(x)  STR2(x)
#define FZ_CHECK(e)                                                                                \
	do {                                                                                       \
		if (!(e))                                                                          \
			mismatch("fuzz.c:" STR(__LINE__) ": " #e);                                 \
	} while (0)

/* ---- the source: keel_linux_source, counted, refusing on demand ---------- */

struct fz_source {
	long live_maps;
	size_t live_bytes;
	size_t refused; /* maps refused so far (on purpose or by mmap) */
	int fail_in;    /* >= 0: the map that many calls from now is refused */
};
static struct fz_source fzs;

static void *fz_map(void *ctx, size_t bytes, size_t align)
{
	struct fz_source *s = ctx;
	if (s->fail_in >= 0 && s->fail_in-- == 0) {
		s->refused++;
		return NULL;
	}
	void *p = keel_linux_source.map(keel_linux_source.ctx, bytes, align);
	if (!p) {
		s->refused++;
		return NULL;
	}
	FZ_CHECK(((uintptr_t)p & (align - 1)) == 0);
	s->live_maps++;
	s->live_bytes += bytes;
	return p;
}

static int fz_unmap(void *ctx, void *p, size_t bytes)
{
	struct fz_source *s = ctx;
	FZ_CHECK(s->live_maps > 0 && s->live_bytes >= bytes);
	int rc = keel_linux_source.unmap(keel_linux_source.ctx, p, bytes);
	FZ_CHECK(rc == 0);
	s->live_maps--;
	s->live_bytes -= bytes;
	return rc;
}

static int fz_protect(void *ctx, void *p, size_t bytes, int prot)
{
	(void)ctx;
	return keel_linux_source.protect(keel_linux_source.ctx, p, bytes, prot);
}

/* Pages keel gives up stay mapped: fill them with junk, as a source may
 * hand back anything there, so keel must rely on none of it. */
static int fz_decommit(void *ctx, void *p, size_t bytes)
{
	struct fz_source *s = ctx;
	FZ_CHECK((((uintptr_t)p | bytes) & (KEEL_PAGE_SIZE - 1)) == 0 && bytes > 0);
	FZ_CHECK(s->live_bytes >= bytes);
	for (size_t i = 0; i < bytes; i += 8)
		*(uint64_t *)(void *)((char *)p + i) = 0xdbdbdbdbdbdbdbdbull;
	return 0;
}

static const struct keel_source fz_src = {
	.map = fz_map,
	.unmap = fz_unmap,
	.protect = fz_protect,
	.ctx = &fzs,
	.zeroed = 1,
};

/* The same, with decommit: blocks of 256 KiB to 8 MiB then come from 32 MiB
 * arenas. */
static const struct keel_source fz_src_big = {
	.map = fz_map,
	.unmap = fz_unmap,
	.protect = fz_protect,
	.ctx = &fzs,
	.zeroed = 1,
	.decommit = fz_decommit,
};

/* ---- input ---------------------------------------------------------------- */

struct in {
	const uint8_t *p;
	size_t n, i;
};

static unsigned u8(struct in *in)
{
	return in->i < in->n ? in->p[in->i++] : 0;
}

/* Sizes: mostly small and medium, some large, powers of two, and edge values.
 * *must_fail is set for sizes no heap can serve. */
static size_t fz_size(struct in *in, int *must_fail)
{
	static const size_t edge[] = { 0,
		                       1,
		                       15,
		                       16,
		                       17,
		                       KEEL_SMALL_MAX,
		                       KEEL_SMALL_MAX + 1,
		                       KEEL_PAGE_SIZE - 1,
		                       KEEL_PAGE_SIZE,
		                       KEEL_PAGE_SIZE + 1,
		                       KEEL_SEGMENT_SIZE / 2,
		                       KEEL_SEGMENT_SIZE - 16,
		                       KEEL_SEGMENT_SIZE,
		                       KEEL_SEGMENT_SIZE + 1,
		                       SIZE_MAX,
		                       SIZE_MAX - 4096,
		                       SIZE_MAX / 2 + 1,
		                       SIZE_MAX - KEEL_SEGMENT_SIZE };
	unsigned b0 = u8(in), b1 = u8(in);
	size_t low = ((size_t)(b0 & 31) << 8) | b1;
	*must_fail = 0;
	switch (b0 >> 5) {
	case 0:
	case 1:
	case 2:
		return low & 1023;
	case 3:
		return low;
	case 4:
		return low * 32;
	case 5:
		return KEEL_SEGMENT_SIZE - 8192 + low * 128;
	case 6:
		return ((size_t)1 << (b1 % 22)) - (b0 & 1);
	default: {
		size_t s = edge[b1 % (sizeof edge / sizeof edge[0])];
		*must_fail = s >= SIZE_MAX / 2;
		return s;
	}
	}
}

/* Alignments: powers of two up to KEEL_MAX_ALIGN, and some bad ones. */
static size_t fz_align(struct in *in, int *bad)
{
	static const size_t wrong[] = {
		0, 3, 24, 48, 4097, KEEL_MAX_ALIGN * 2, SIZE_MAX, SIZE_MAX / 2 + 1
	};
	unsigned b = u8(in);
	*bad = b >= 240;
	if (*bad)
		return wrong[b % (sizeof wrong / sizeof wrong[0])];
	if (b >= 232)
		return (size_t)1 << (22 + b % 9); /* 4 MiB .. 1 GiB: own mappings */
	return (size_t)1 << (b % 22);
}

/* ---- the model ------------------------------------------------------------ */

#define SLOTS  64
#define BUDGET ((size_t)96 << 20) /* asked bytes live at once */
#define FILL   2048               /* bytes filled at each end of a block */

struct blk {
	unsigned char *p;
	size_t size, align; /* align: asked of keel_aligned_alloc, else 0 */
	uint8_t tag;
};

static struct keel_heap heap;
static struct keel_cache cache, cache2; /* two, as two threads: blocks cross between them */
static struct blk blk[SLOTS];
static size_t live_bytes;
static unsigned nlive;
static int checked;
static unsigned char *freed[16]; /* recently freed pointers, for double frees */
static unsigned nfreed;

static unsigned char pat(uint8_t tag, size_t i)
{
	uint32_t x = (uint32_t)(i * 2654435761u) ^ ((uint32_t)tag * 0x9e3779b9u);
	return (unsigned char)(x ^ (x >> 13) ^ (x >> 24));
}

/* The filled ranges of a block of n bytes: all of a small one, else both
 * ends and a stretch in the middle. Returns how many ranges [lo, hi). */
static unsigned ranges(size_t n, size_t lo[3], size_t hi[3])
{
	if (n <= 3 * FILL) {
		lo[0] = 0;
		hi[0] = n;
		return 1;
	}
	lo[0] = 0, hi[0] = FILL;
	lo[1] = n / 2, hi[1] = n / 2 + 64;
	lo[2] = n - FILL, hi[2] = n;
	return 3;
}

static void fill(unsigned char *p, size_t n, uint8_t tag)
{
	size_t lo[3], hi[3];
	for (unsigned r = ranges(n, lo, hi); r--;)
		for (size_t i = lo[r]; i < hi[r]; i++)
			p[i] = pat(tag, i);
}

/* The first n bytes of a block filled as one of total bytes still hold the
 * pattern (zero: are all zero). */
static int intact(const unsigned char *p, size_t n, size_t total, uint8_t tag, int zero)
{
	size_t lo[3], hi[3];
	for (unsigned r = ranges(total, lo, hi); r--;)
		for (size_t i = lo[r]; i < hi[r] && i < n; i++)
			if (p[i] != (zero ? 0 : pat(tag, i)))
				return 0;
	return 1;
}

/* Everything the model knows about b holds in keel. */
static void verify(const struct blk *b)
{
	size_t usable = keel_usable_size(&heap, b->p);
	now.size = b->size;
	now.align = b->align;
	now.usable = usable;
	if (checked)
		FZ_CHECK(usable == b->size || (b->size == 0 && usable <= 16));
	else
		FZ_CHECK(usable >= b->size && usable >= 1);
	FZ_CHECK(((uintptr_t)b->p & 15) == 0);
	if (b->align)
		FZ_CHECK(((uintptr_t)b->p & (b->align - 1)) == 0);
	FZ_CHECK(intact(b->p, b->size, b->size, b->tag, 0));
}

/* A new block from an allocating call: check it and take it into the model. */
static void adopt(unsigned slot, unsigned char *p, size_t size, size_t align, uint8_t tag)
{
	struct blk *b = &blk[slot];
	for (unsigned i = 0; i < SLOTS; i++)
		FZ_CHECK(!blk[i].p || blk[i].p != p); /* never handed out twice */
	b->p = p;
	b->size = size;
	b->align = align;
	b->tag = tag;
	live_bytes += size;
	nlive++;
	fill(p, size, tag);
	verify(b);
}

static void forget(unsigned slot)
{
	struct blk *b = &blk[slot];
	freed[nfreed++ % 16] = b->p;
	live_bytes -= b->size;
	nlive--;
	b->p = NULL;
}

static int is_live_start(const void *p)
{
	for (unsigned i = 0; i < SLOTS; i++)
		if (blk[i].p == p)
			return 1;
	return 0;
}

static void check_heap(void)
{
	struct keel_fault f;
	FZ_CHECK(keel_check(&heap, &f) == 0);
}

/* NULL is right only for a request no heap can serve, or when the source
 * refused a map during the call. */
static void null_ok(int must_fail, size_t refused_before)
{
	FZ_CHECK(must_fail || fzs.refused != refused_before);
}

/* ---- the run -------------------------------------------------------------- */

enum {
	OP_MALLOC,
	OP_MALLOC2,
	OP_CALLOC,
	OP_FREE,
	OP_FREE2,
	OP_REALLOC,
	OP_ALIGNED,
	OP_CACHE_MALLOC,
	OP_CACHE_FREE,
	OP_CACHE_ALIGNED,
	OP_TRIM,
	OP_CHECK,
	OP_FLUSH,
	OP_BAD_FREE,
	OP_OVERFLOW,
	OP_FAIL_MAP,
	OP_VERIFY,
	NOPS
};

static void step(struct in *in, unsigned op, unsigned slot, uint8_t tag)
{
	struct blk *b = &blk[slot];
	size_t refused = fzs.refused;
	int must_fail = 0, bad = 0;
	switch (op) {
	case OP_MALLOC:
	case OP_MALLOC2:
	case OP_CACHE_MALLOC: {
		size_t size = fz_size(in, &must_fail);
		if (b->p || (!must_fail && live_bytes + size > BUDGET))
			break;
		unsigned char *p = op == OP_CACHE_MALLOC
		                           ? keel_cache_malloc(tag & 1 ? &cache2 : &cache, size)
		                           : keel_malloc(&heap, size);
		if (!p) {
			null_ok(must_fail, refused);
			break;
		}
		FZ_CHECK(!must_fail);
		if (size && (size & (size - 1)) == 0 && size <= KEEL_PAGE_SIZE)
			FZ_CHECK(((uintptr_t)p & (size - 1)) == 0);
		adopt(slot, p, size, 0, tag);
		break;
	}
	case OP_CALLOC: {
		size_t n = 1 + u8(in) % 16;
		size_t size = fz_size(in, &must_fail);
		int over = size != 0 && n > SIZE_MAX / size;
		if (b->p || (!must_fail && !over && live_bytes + n * size > BUDGET))
			break;
		unsigned char *p = keel_calloc(&heap, n, size);
		if (!p) {
			null_ok(must_fail || over, refused);
			break;
		}
		FZ_CHECK(!must_fail && !over);
		FZ_CHECK(intact(p, n * size, n * size, 0, 1));
		adopt(slot, p, n * size, 0, tag);
		break;
	}
	case OP_FREE:
	case OP_FREE2:
	case OP_CACHE_FREE:
		if (!b->p)
			break;
		verify(b);
		if (op == OP_CACHE_FREE)
			FZ_CHECK(keel_cache_usable_size(tag & 2 ? &cache2 : &cache, b->p) >=
			         b->size);
		FZ_CHECK((op == OP_CACHE_FREE ? keel_cache_free(tag & 2 ? &cache2 : &cache, b->p)
		                              : keel_free(&heap, b->p)) == 0);
		forget(slot);
		break;
	case OP_REALLOC: {
		size_t size = fz_size(in, &must_fail);
		if (!must_fail && live_bytes - (b->p ? b->size : 0) + size > BUDGET)
			break;
		if (b->p)
			verify(b);
		unsigned char *p =
		        tag & 4 ? keel_cache_realloc(tag & 1 ? &cache2 : &cache, b->p, size)
		                : keel_realloc(&heap, b->p, size);
		if (!p) {
			if (b->p && size == 0) { /* freed */
				forget(slot);
				break;
			}
			null_ok(must_fail, refused);
			if (b->p)
				verify(b); /* untouched */
			break;
		}
		FZ_CHECK(!must_fail);
		if (!b->p) {
			adopt(slot, p, size, 0, tag);
			break;
		}
		size_t keep = b->size < size ? b->size : size;
		FZ_CHECK(intact(p, keep, b->size, b->tag, 0));
		if (p != b->p) {
			for (unsigned i = 0; i < SLOTS; i++)
				FZ_CHECK(i == slot || blk[i].p != p);
			if (b->align)
				FZ_CHECK(((uintptr_t)p & (b->align - 1)) == 0);
		}
		size_t align = b->align;
		live_bytes -= b->size;
		nlive--;
		b->p = NULL;
		adopt(slot, p, size, align, tag);
		break;
	}
	case OP_ALIGNED: {
		size_t align = fz_align(in, &bad);
		size_t size = fz_size(in, &must_fail);
		if (b->p || (!must_fail && !bad && live_bytes + size > BUDGET))
			break;
		unsigned char *p = keel_aligned_alloc(&heap, align, size);
		if (!p) {
			null_ok(must_fail || bad, refused);
			break;
		}
		FZ_CHECK(!must_fail && !bad);
		adopt(slot, p, size, align, tag);
		break;
	}
	case OP_CACHE_ALIGNED: {
		/* as keel_aligned_alloc, but the block keeps its alignment only
		 * until keel_realloc (keel.h), so the model does not ask for it */
		size_t align = fz_align(in, &bad);
		size_t size = fz_size(in, &must_fail);
		if (b->p || (!must_fail && !bad && live_bytes + size > BUDGET))
			break;
		unsigned char *p =
		        keel_cache_aligned_alloc(tag & 1 ? &cache2 : &cache, align, size);
		if (!p) {
			null_ok(must_fail || bad, refused);
			break;
		}
		FZ_CHECK(!must_fail && !bad);
		FZ_CHECK(((uintptr_t)p & (align - 1)) == 0);
		adopt(slot, p, size, 0, tag);
		break;
	}
	case OP_TRIM:
		keel_trim(&heap);
		break;
	case OP_CHECK:
		check_heap();
		break;
	case OP_FLUSH: {
		keel_cache_flush(&cache);
		keel_cache_flush(&cache2);
		struct keel_stats st;
		FZ_CHECK(keel_stats(&heap, &st) == 0);
		FZ_CHECK(st.live_blocks == nlive);
		break;
	}
	case OP_BAD_FREE: {
		/* a recently freed pointer that is no live block now, or inside a live block */
		unsigned k = u8(in);
		if (b->p && b->size >= 2) {
			size_t off = 1 + k % (b->size - 1 < 4096 ? b->size - 1 : 4096);
			FZ_CHECK(keel_free(&heap, b->p + off) != 0);
			FZ_CHECK(keel_usable_size(&heap, b->p + off) == 0);
			verify(b);
		} else if (nfreed) {
			unsigned char *p = freed[k % (nfreed < 16 ? nfreed : 16)];
			if (is_live_start(p))
				break;
			FZ_CHECK(keel_usable_size(&heap, p) == 0);
			FZ_CHECK((k & 1 ? keel_cache_free(&cache, p) : keel_free(&heap, p)) != 0);
			FZ_CHECK(keel_realloc(&heap, p, 8) == NULL);
		}
		break;
	}
	case OP_OVERFLOW:
		/* checked mode: one byte past the end is seen by keel_check and
		 * keel_free; put back, the block is as good as before */
		if (!checked || !b->p || b->size >= KEEL_SEGMENT_SIZE / 2)
			break;
		{
			unsigned char old = b->p[b->size];
			b->p[b->size] = (unsigned char)(old ^ (1u << (tag & 7)));
			FZ_CHECK(keel_check(&heap, NULL) == KEEL_ECORRUPT);
			FZ_CHECK(keel_free(&heap, b->p) == KEEL_EOVERFLOW);
			b->p[b->size] = old;
			verify(b);
		}
		break;
	case OP_FAIL_MAP:
		fzs.fail_in = (int)(u8(in) % 4);
		break;
	case OP_VERIFY:
		for (unsigned i = 0; i < SLOTS; i++)
			if (blk[i].p)
				verify(&blk[i]);
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct in in = { data, size, 0 };
	unsigned mode = u8(&in);
	struct keel_config cfg = { 0 };
	cfg.source = (mode & 4) ? &fz_src_big : &fz_src;
	cfg.flags = (mode & 1) ? KEEL_HEAP_CHECKED : 0;
	cfg.retain_bytes = (mode & 2) ? 4 * KEEL_SEGMENT_SIZE : 0;
	cfg.dirty_bytes = (mode & 8) ? KEEL_SEGMENT_SIZE : 0; /* decommit soon, or late */
	checked = (mode & 1) != 0;
	fzs.live_maps = 0;
	fzs.live_bytes = 0;
	fzs.refused = 0;
	fzs.fail_in = -1;
	for (unsigned i = 0; i < SLOTS; i++)
		blk[i].p = NULL;
	live_bytes = 0;
	nlive = 0;
	nfreed = 0;
	FZ_CHECK(keel_heap_init(&heap, &cfg) == 0);
	FZ_CHECK(keel_cache_init(&cache, &heap) == 0);
	FZ_CHECK(keel_cache_init(&cache2, &heap) == 0);

	unsigned n = 0;
	while (in.i < in.n) {
		unsigned op = u8(&in) % NOPS;
		unsigned slot = u8(&in) % SLOTS;
		now.step = n;
		now.op = op;
		now.size = now.align = now.usable = 0;
		step(&in, op, slot, (uint8_t)(n * 37 + slot));
		if (blk[slot].p)
			verify(&blk[slot]);
		if (blk[n % SLOTS].p)
			verify(&blk[n % SLOTS]); /* and one more in turn */
		if (++n % 64 == 0)
			check_heap();
	}
	fzs.fail_in = -1;

	/* free everything, half through the cache; then the heap is empty */
	for (unsigned i = 0; i < SLOTS; i++) {
		if (!blk[i].p)
			continue;
		verify(&blk[i]);
		FZ_CHECK((i & 1 ? keel_cache_free(i & 2 ? &cache2 : &cache, blk[i].p)
		                : keel_free(&heap, blk[i].p)) == 0);
		forget(i);
	}
	keel_cache_flush(&cache);
	keel_cache_flush(&cache2);
	check_heap();
	struct keel_stats st;
	FZ_CHECK(keel_stats(&heap, &st) == 0);
	FZ_CHECK(st.live_blocks == 0 && st.in_use_bytes == 0);
	keel_trim(&heap);
	check_heap();
	FZ_CHECK(keel_heap_destroy(&heap) == 0);
	FZ_CHECK(fzs.live_maps == 0 && fzs.live_bytes == 0);
	return 0;
}
