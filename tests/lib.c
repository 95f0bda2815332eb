/* tests/lib.c: the shared test library every runner links: the counting page
 * source, the TAP case runner, a tiny printf and freestanding helpers.
 * Sits between a runner's t_env_* functions and the case files. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "test.h"

/* ---- output ------------------------------------------------------------- */

struct out {
	char buf[160];
	size_t n;
};

static void out_flush(struct out *o)
{
	if (o->n) {
		t_env_write(o->buf, o->n);
		o->n = 0;
	}
}

static void out_putc(struct out *o, char c)
{
	if (o->n == sizeof o->buf)
		out_flush(o);
	o->buf[o->n++] = c;
}

static void out_puts(struct out *o, const char *s)
{
	if (!s)
		s = "(null)";
	while (*s)
		out_putc(o, *s++);
}

static void out_unsigned(struct out *o, unsigned long long v, unsigned base)
{
	char tmp[24];
	int i = 0;
	do {
		unsigned d = (unsigned)(v % base);
		tmp[i++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
		v /= base;
	} while (v);
	while (i)
		out_putc(o, tmp[--i]);
}

static void out_vformat(struct out *o, const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			out_putc(o, *fmt);
			continue;
		}
		fmt++;
		switch (*fmt) {
		case 's':
			out_puts(o, va_arg(ap, const char *));
			break;
		case 'c':
			out_putc(o, (char)va_arg(ap, int));
			break;
		case 'd': {
			int v = va_arg(ap, int);
			unsigned long long u = (unsigned long long)v;
			if (v < 0) {
				out_putc(o, '-');
				u = 0ull - u;
			}
			out_unsigned(o, u, 10);
			break;
		}
		case 'u':
			out_unsigned(o, va_arg(ap, unsigned), 10);
			break;
		case 'x':
			out_unsigned(o, va_arg(ap, unsigned), 16);
			break;
		case 'p':
			out_puts(o, "0x");
			out_unsigned(o, (uintptr_t)va_arg(ap, void *), 16);
			break;
		case 'z':
			if (fmt[1] == 'u') {
				fmt++;
				out_unsigned(o, va_arg(ap, size_t), 10);
			}
			break;
		case 'l':
			if (fmt[1] == 'u') {
				fmt++;
				out_unsigned(o, va_arg(ap, unsigned long), 10);
			} else if (fmt[1] == 'l' && fmt[2] == 'x') {
				fmt += 2;
				out_unsigned(o, va_arg(ap, unsigned long long), 16);
			}
			break;
		case '%':
			out_putc(o, '%');
			break;
		case '\0':
			return;
		default:
			out_putc(o, '%');
			out_putc(o, *fmt);
			break;
		}
	}
}

static void out_format(struct out *o, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	out_vformat(o, fmt, ap);
	va_end(ap);
}

void t_diag(const char *fmt, ...)
{
	struct out o;
	va_list ap;
	o.n = 0;
	out_puts(&o, "# ");
	va_start(ap, fmt);
	out_vformat(&o, fmt, ap);
	va_end(ap);
	out_putc(&o, '\n');
	out_flush(&o);
}

/* ---- helpers ------------------------------------------------------------ */

uint64_t t_rand(uint64_t *state)
{
	uint64_t x = *state ? *state : 0x9e3779b97f4a7c15ull;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545f4914f6cdd1dull;
}

/* Eight pattern bytes at a time: word j of the pattern of tag. One mix per
 * eight bytes keeps filling cheap under emulation, where the cases spend
 * most of their time in t_fill and t_verify. */
static uint64_t pattern_word(uint64_t tag, size_t j)
{
	uint64_t x = tag * 0x9e3779b97f4a7c15ull + (uint64_t)j * 0xbf58476d1ce4e5b9ull;
	x ^= x >> 29;
	return x ^ (x >> 31) ^ ((uint64_t)j << 3);
}

void t_fill(void *p, size_t n, uint64_t tag)
{
	unsigned char *b = p;
	uint64_t w = 0;
	for (size_t i = 0; i < n; i++) {
		if ((i & 7) == 0)
			w = pattern_word(tag, i >> 3);
		b[i] = (unsigned char)(w >> ((i & 7) * 8));
	}
}

int t_verify(const void *p, size_t n, uint64_t tag)
{
	const unsigned char *b = p;
	uint64_t w = 0;
	for (size_t i = 0; i < n; i++) {
		if ((i & 7) == 0)
			w = pattern_word(tag, i >> 3);
		if (b[i] != (unsigned char)(w >> ((i & 7) * 8)))
			return 0;
	}
	return 1;
}

int t_all_bytes(const void *p, size_t n, unsigned char c)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i] != c)
			return 0;
	return 1;
}

int t_is_zero(const void *p, size_t n)
{
	return t_all_bytes(p, n, 0);
}

void t_memset(void *p, int c, size_t n)
{
	volatile unsigned char *b = p; /* volatile: never turned into a memset call */
	for (size_t i = 0; i < n; i++)
		b[i] = (unsigned char)c;
}

int t_streq(const char *a, const char *b)
{
	while (*a && *a == *b) {
		a++;
		b++;
	}
	return *a == *b;
}

unsigned t_class_sizes(struct keel_heap *heap, size_t out[KEEL_NCLASSES])
{
	static struct keel_stats st;
	unsigned n = 0;
	if (keel_stats(heap, &st) != 0)
		return 0;
	for (unsigned i = 0; i < KEEL_NCLASSES; i++)
		if (st.class_size[i] != 0)
			out[n++] = st.class_size[i];
	return n;
}

/* ---- the counting source ------------------------------------------------ */

#define T_JUNK 0xA5

static void *ts_map(void *ctx, size_t bytes, size_t align)
{
	struct t_source *ts = ctx;
	if (ts->hook)
		ts->hook(ts, T_CALL_MAP, bytes);
	long call = (long)ts->map_calls++;
	if ((ts->fail_at >= 0 && call >= ts->fail_at) || call == ts->fail_only) {
		ts->failed_maps++;
		return NULL;
	}
	size_t slot = 0;
	while (slot < T_SRC_MAX_MAPS && ts->live[slot].p)
		slot++;
	if (slot == T_SRC_MAX_MAPS) {
		ts->failed_maps++;
		return NULL;
	}
	void *p = ts->base->map(ts->base->ctx, bytes, align);
	if (!p) {
		ts->failed_maps++;
		return NULL;
	}
	if (!ts->base->zeroed)
		t_memset(p, T_JUNK, bytes);
	ts->live[slot].p = p;
	ts->live[slot].bytes = bytes;
	ts->maps++;
	ts->live_maps++;
	ts->live_bytes += bytes;
	if (ts->live_bytes > ts->peak_bytes)
		ts->peak_bytes = ts->live_bytes;
	return p;
}

static int ts_unmap(void *ctx, void *p, size_t bytes)
{
	struct t_source *ts = ctx;
	if (ts->hook)
		ts->hook(ts, T_CALL_UNMAP, bytes);
	size_t slot = 0;
	while (slot < T_SRC_MAX_MAPS &&
	       !(p && ts->live[slot].p == p && ts->live[slot].bytes == bytes))
		slot++;
	if (slot == T_SRC_MAX_MAPS) {
		ts->bad_unmaps++;
		if (!ts->quiet)
			t_diag("counting source: unmap(%p, %zu) matches no live mapping", p, bytes);
		return -22;
	}
	int rc = ts->base->unmap(ts->base->ctx, p, bytes);
	if (rc != 0)
		return rc; /* still mapped as far as we know */
	ts->live[slot].p = NULL;
	ts->live[slot].bytes = 0;
	ts->unmaps++;
	ts->live_maps--;
	ts->live_bytes -= bytes;
	return ts->unmap_error;
}

static int ts_protect(void *ctx, void *p, size_t bytes, int prot)
{
	struct t_source *ts = ctx;
	if (ts->hook)
		ts->hook(ts, T_CALL_PROTECT, bytes);
	ts->protects++;
	if (!ts->base->protect)
		return -38;
	return ts->base->protect(ts->base->ctx, p, bytes, prot);
}

static int ts_decommit(void *ctx, void *p, size_t bytes)
{
	struct t_source *ts = ctx;
	uintptr_t a = (uintptr_t)p;
	size_t slot = 0;
	while (slot < T_SRC_MAX_MAPS &&
	       !(ts->live[slot].p && a >= (uintptr_t)ts->live[slot].p &&
	         a + bytes <= (uintptr_t)ts->live[slot].p + ts->live[slot].bytes))
		slot++;
	if (slot == T_SRC_MAX_MAPS || bytes == 0 || ((a | bytes) & (KEEL_PAGE_SIZE - 1))) {
		ts->bad_decommits++;
		t_diag("counting source: decommit(%p, %zu) is no page range of a mapping", p,
		       bytes);
		return -22;
	}
	t_memset(p, T_JUNK, bytes);
	ts->decommits++;
	ts->decommit_bytes += bytes;
	return 0;
}

void t_source_init(struct t_source *ts, const struct keel_source *base)
{
	ts->src.map = ts_map;
	ts->src.unmap = ts_unmap;
	ts->src.protect = ts_protect;
	ts->src.ctx = ts;
	ts->src.zeroed = base->zeroed;
	ts->src.decommit = NULL;
	ts->base = base;
	ts->decommits = ts->decommit_bytes = 0;
	ts->bad_decommits = 0;
	ts->live_maps = ts->live_bytes = ts->peak_bytes = 0;
	ts->maps = ts->unmaps = ts->protects = 0;
	ts->map_calls = ts->failed_maps = 0;
	ts->fail_at = -1;
	ts->fail_only = -1;
	ts->bad_unmaps = 0;
	ts->unmap_error = 0;
	ts->quiet = 0;
	ts->hook = NULL;
	ts->hook_ctx = NULL;
	for (size_t i = 0; i < T_SRC_MAX_MAPS; i++) {
		ts->live[i].p = NULL;
		ts->live[i].bytes = 0;
	}
}

size_t t_segment_bytes(const struct t_source *ts)
{
	size_t n = 0;
	for (unsigned i = 0; i < T_SRC_MAX_MAPS; i++)
		if (ts->live[i].p && ts->live[i].bytes >= KEEL_SEGMENT_SIZE)
			n += ts->live[i].bytes;
	return n;
}

/* ---- the runner ----------------------------------------------------------- */

#define T_MAX_DIAGS 20 /* failed checks printed per case; the rest are counted */

void t_fail(struct t *t, const char *file, int line, const char *expr)
{
	t->failed++;
	if (t->failed <= T_MAX_DIAGS)
		t_diag("  %s:%d: %s", file, line, expr);
}

int t_check_heap(struct t *t, struct keel_heap *heap, const char *file, int line)
{
	struct keel_fault f;
	f.what = NULL;
	f.where = NULL;
	int rc = keel_check(heap, &f);
	if (rc == 0) {
		t->checks++;
		return 1;
	}
	t->failed++;
	if (t->failed <= T_MAX_DIAGS)
		t_diag("  %s:%d: keel_check = %d: %s at %p", file, line, rc, f.what, f.where);
	return 0;
}

static struct t_aux aux_heaps[T_AUX_MAX];

/* config.report of every aux heap: called with the heap lock held, so it
 * only records. */
static void aux_report(void *ctx, int err, const void *p)
{
	struct t_aux *a = ctx;
	if (a->nreports < T_AUX_REPORTS) {
		a->reports[a->nreports].err = err;
		a->reports[a->nreports].p = p;
	}
	a->nreports++;
}

static struct t_aux *aux_open(struct t *t, const struct keel_source *base,
                              const struct keel_lock *lock, unsigned flags, size_t retain_bytes,
                              size_t dirty_bytes)
{
	for (int i = 0; i < T_AUX_MAX; i++) {
		struct t_aux *a = &aux_heaps[i];
		if (a->is_open)
			continue;
		if (base) {
			t_source_init(&a->src, base);
			a->config.source = &a->src.src;
		} else {
			t_source_init(&a->src, t_env_source());
			a->config.source = NULL;
		}
		a->config.lock = lock;
		a->config.flags = flags;
		a->config.retain_bytes = retain_bytes;
		a->config.dirty_bytes = dirty_bytes;
		if (dirty_bytes)
			a->src.src.decommit = ts_decommit;
		a->config.report = aux_report;
		a->config.report_ctx = a;
		a->nreports = 0;
		int rc = keel_heap_init(&a->heap, &a->config);
		if (rc != 0) {
			t_diag("  t_aux_open: keel_heap_init = %d", rc);
			t_fail(t, __FILE__, __LINE__, "keel_heap_init(aux) == 0");
			return NULL;
		}
		a->is_open = 1;
		return a;
	}
	t_fail(t, __FILE__, __LINE__, "a free aux heap slot");
	return NULL;
}

struct t_aux *t_aux_open(struct t *t, const struct keel_source *base, const struct keel_lock *lock,
                         unsigned flags, size_t retain_bytes)
{
	return aux_open(t, base, lock, flags, retain_bytes, 0);
}

struct t_aux *t_aux_open_big(struct t *t, size_t dirty_bytes)
{
	return aux_open(t, t_env_source(), NULL, 0, 0, dirty_bytes);
}

int t_aux_close(struct t *t, struct t_aux *a)
{
	int ok = 1;
	if (!a || !a->is_open)
		return 0;
	a->is_open = 0;
	if (a->nreports != 0) {
		t_diag("  aux heap: %u reports the case did not take, the first %d at %p",
		       a->nreports, a->reports[0].err, a->reports[0].p);
		t_fail(t, __FILE__, __LINE__, "no unexpected config.report call");
		ok = 0;
	}
	ok &= t_check_heap(t, &a->heap, __FILE__, __LINE__);
	int rc = keel_heap_destroy(&a->heap);
	if (rc != 0) {
		t_diag("  aux keel_heap_destroy = %d", rc);
		t_fail(t, __FILE__, __LINE__, "keel_heap_destroy(aux) == 0");
		ok = 0;
	}
	if (a->src.live_bytes != 0 || a->src.live_maps != 0 || a->src.bad_unmaps != 0 ||
	    a->src.bad_decommits != 0) {
		t_diag("  aux source after destroy: live_bytes %zu live_maps %zu bad_unmaps %d "
		       "bad_decommits %d",
		       a->src.live_bytes, a->src.live_maps, a->src.bad_unmaps,
		       a->src.bad_decommits);
		t_fail(t, __FILE__, __LINE__, "aux source returned to zero");
		ok = 0;
	}
	return ok;
}

static struct keel_heap run_heap;
static struct t_source run_src;
static struct keel_config run_config;

static void run_case(const struct t_case *c, unsigned n, unsigned *npassed, unsigned *nfailed)
{
	struct t t;
	struct out o;
	int rc;

	t_source_init(&run_src, t_env_source());
	run_config.source = &run_src.src;
	run_config.lock = NULL;
	run_config.flags = 0;
	run_config.retain_bytes = 0;
	t.heap = &run_heap;
	t.src = &run_src;
	t.config = &run_config;
	t.failed = 0;
	t.checks = 0;
	t.seed = 0;

	rc = keel_heap_init(&run_heap, &run_config);
	if (rc != 0) {
		t_diag("  keel_heap_init = %d", rc);
		t_fail(&t, __FILE__, __LINE__, "keel_heap_init == 0");
	} else {
		c->fn(&t);
		for (int i = 0; i < T_AUX_MAX; i++)
			if (aux_heaps[i].is_open)
				t_aux_close(&t, &aux_heaps[i]);
		t_check_heap(&t, &run_heap, "after case", 0);
		rc = keel_heap_destroy(&run_heap);
		if (rc != 0) {
			t_diag("  keel_heap_destroy = %d", rc);
			t_fail(&t, __FILE__, __LINE__, "keel_heap_destroy == 0");
		}
		if (run_src.live_bytes != 0 || run_src.live_maps != 0 || run_src.bad_unmaps != 0) {
			t_diag("  source after destroy: live_bytes %zu live_maps %zu bad_unmaps %d",
			       run_src.live_bytes, run_src.live_maps, run_src.bad_unmaps);
			t_fail(&t, __FILE__, __LINE__, "source returned to zero");
		}
	}
	if (t.failed > T_MAX_DIAGS)
		t_diag("  (%d failed checks, %d shown)", t.failed, T_MAX_DIAGS);
	if (t.failed && t.seed)
		t_diag("  seed 0x%llx", (unsigned long long)t.seed);

	o.n = 0;
	out_format(&o, "%sok %u - %s\n", t.failed ? "not " : "", n, c->name);
	out_flush(&o);
	if (t.failed)
		(*nfailed)++;
	else
		(*npassed)++;
}

int t_run_all(unsigned *passed, unsigned *failed)
{
	unsigned total = 0, npassed = 0, nfailed = 0, n = 0;
	struct out o;

	for (const struct t_case *const *s = t_suites; *s; s++)
		for (const struct t_case *c = *s; c->fn; c++)
			total++;
	o.n = 0;
	out_format(&o, "1..%u\n", total);
	out_flush(&o);
	for (const struct t_case *const *s = t_suites; *s; s++)
		for (const struct t_case *c = *s; c->fn; c++)
			run_case(c, ++n, &npassed, &nfailed);
	if (passed)
		*passed = npassed;
	if (failed)
		*failed = nfailed;
	return (int)nfailed;
}
