/* bench/bench.c: the workloads of `make bench`, one program, named by its first argument.
 * Each workload uses only the standard malloc API, so any allocator can be preloaded under
 * it, and prints one line of key=value pairs: workload ops secs cpu_secs ops_per_sec
 * peak_rss_kb checksum (plus extras). The checksum mixes data written into the blocks and
 * read back before they are freed: every correct allocator gives the same one, a broken
 * one cannot.
 *   bench WORKLOAD [SCALE]   SCALE multiplies the operation count (default 1; 0.001 = smoke)
 *   bench --list             the workload names, one a line
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <x86intrin.h>

#define KIB ((size_t)1024)
#define MIB (1024 * KIB)

/* What one run leaves for main to print. ops counts every call into the allocator
 * (malloc, free, realloc, posix_memalign, aligned_alloc). */
struct run {
	uint64_t ops;
	uint64_t checksum;
	double secs, cpu; /* set by a workload that times only part of itself, else by main */
	char extra[512];
};

static double scale = 1.0;

/* n operations at this run's scale, at least one */
static size_t scaled(size_t n)
{
	double v = (double)n * scale;
	return v < 1.0 ? 1 : (size_t)v;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

__attribute__((noreturn)) static void die(const char *what)
{
	fprintf(stderr, "bench: %s failed\n", what);
	exit(2);
}

/* VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across execve, so a child
 * of a big parent (the harness) would report the parent's peak */
/* user + system CPU seconds of the whole process, all threads */
static double cpu_secs(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

static long peak_rss_kb(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		die("fopen /proc/self/status");
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n);
	if (!p)
		die("malloc");
	return p;
}

/* ---- random numbers and the checksum --------------------------------------------------- */

/* xorshift64*: fast, and the same sequence everywhere for a given seed */
struct rng {
	uint64_t s;
};

static struct rng rng_seed(uint64_t seed)
{
	struct rng r = { seed * 0x9E3779B97F4A7C15u | 1 };
	return r;
}

static uint64_t rng_next(struct rng *r)
{
	r->s ^= r->s >> 12;
	r->s ^= r->s << 25;
	r->s ^= r->s >> 27;
	return r->s * 0x2545F4914F6CDD1Du;
}

/* uniform in [0, n), n < 2^32 */
static size_t rng_below(struct rng *r, size_t n)
{
	return (size_t)(((rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

/* uniform in [lo, hi) */
static size_t rng_range(struct rng *r, size_t lo, size_t hi)
{
	return lo + rng_below(r, hi - lo);
}

static uint64_t mix(uint64_t h, uint64_t v)
{
	h ^= v;
	h *= 0x100000001B3u;
	return h ^ (h >> 29);
}

/* A block of n bytes with tag t reads, where digest() looks:
 *   n < 16:      every byte                           (t >> 8*(i%8))
 *   otherwise:   [t .......... byte t .......... | t^n]   head word, tail word
 *                bytes [8, n-8) all (t & 0xff) when n <= 1 KiB;
 *                else one byte per 4 KiB page, at offsets 4096*k, so pages are touched.
 * fill_from(b, from, n, t) writes what lies at or past `from` (minus the old tail word),
 * which is how a block grown by realloc from `from` bytes to n is completed. */
static void fill_from(unsigned char *b, size_t from, size_t n, uint64_t t)
{
	size_t lo = from > 8 ? from - 8 : 8;
	if (n <= KIB) {
		memset(b + lo, (int)(t & 0xff), n - 8 - lo);
	} else {
		size_t off = lo < 4096 ? 4096 : (lo + 4095) & ~(size_t)4095;
		for (; off + 8 < n; off += 4096)
			b[off] = (unsigned char)(t + (off >> 12));
	}
	uint64_t tail = t ^ n;
	memcpy(b + n - 8, &tail, 8);
}

static void fill(void *p, size_t n, uint64_t t)
{
	unsigned char *b = p;
	if (n < 16) {
		for (size_t i = 0; i < n; i++)
			b[i] = (unsigned char)(t >> (8 * (i & 7)));
		return;
	}
	memcpy(b, &t, 8);
	fill_from(b, 0, n, t);
}

static uint64_t digest(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = n, w;
	if (n < 16) {
		for (size_t i = 0; i < n; i++)
			h = mix(h, b[i]);
		return h;
	}
	memcpy(&w, b, 8);
	h = mix(h, w);
	if (n <= KIB)
		h = mix(h, b[n / 2]);
	else
		for (size_t off = 4096; off + 8 < n; off += 4096)
			h = mix(h, b[off]);
	memcpy(&w, b + n - 8, 8);
	return mix(h, w);
}

/* ---- churn: random replacement in a live set ------------------------------------------- */

/* nslots blocks of [lo, hi) bytes stay live; each step frees a random one (after reading
 * it back) and allocates a new one of a random size in its place. */
struct churn {
	size_t nslots, nsteps, lo, hi;
	uint64_t seed;
	uint64_t ops, checksum; /* out */
};

static void churn_run(struct churn *c)
{
	struct rng r = rng_seed(c->seed);
	void **slot = xmalloc(c->nslots * sizeof *slot);
	uint32_t *size = xmalloc(c->nslots * sizeof *size);
	uint64_t h = 0;
	for (size_t i = 0; i < c->nslots; i++) {
		size[i] = (uint32_t)rng_range(&r, c->lo, c->hi);
		slot[i] = malloc(size[i]);
		if (!slot[i])
			die("malloc");
		fill(slot[i], size[i], i);
	}
	for (size_t s = 0; s < c->nsteps; s++) {
		size_t i = rng_below(&r, c->nslots);
		h = mix(h, digest(slot[i], size[i]));
		free(slot[i]);
		size[i] = (uint32_t)rng_range(&r, c->lo, c->hi);
		slot[i] = malloc(size[i]);
		if (!slot[i])
			die("malloc");
		fill(slot[i], size[i], s);
	}
	for (size_t i = 0; i < c->nslots; i++) {
		h = mix(h, digest(slot[i], size[i]));
		free(slot[i]);
	}
	free(slot);
	free(size);
	c->ops = 2 * (c->nslots + c->nsteps);
	c->checksum = h;
}

/* small objects, 8-256 B, 200k live (about 26 MiB) */
__attribute__((noinline)) static void wl_churn(struct run *run)
{
	struct churn c = {
		.nslots = 200000, .nsteps = scaled(3000000), .lo = 8, .hi = 257, .seed = 1
	};
	churn_run(&c);
	run->ops = c.ops;
	run->checksum = c.checksum;
}

/* ---- mixed sizes, heavy tail ----------------------------------------------------------- */

/* 70% 8-128 B, 20% to 1 KiB, 8% to 8 KiB, 2% to 64 KiB: most requests are small, most
 * bytes are in the tail */
static size_t mixed_size(struct rng *r, size_t max)
{
	size_t u = rng_below(r, 100), n;
	if (u < 70)
		n = rng_range(r, 8, 129);
	else if (u < 90)
		n = rng_range(r, 129, KIB + 1);
	else if (u < 98)
		n = rng_range(r, KIB + 1, 8 * KIB + 1);
	else
		n = rng_range(r, 8 * KIB + 1, 64 * KIB + 1);
	return n < max ? n : max;
}

__attribute__((noinline)) static void wl_mixed(struct run *run)
{
	enum { NSLOTS = 20000 };
	size_t nsteps = scaled(3000000);
	struct rng r = rng_seed(2);
	void **slot = xmalloc(NSLOTS * sizeof *slot);
	uint32_t *size = xmalloc(NSLOTS * sizeof *size);
	uint64_t h = 0;
	for (size_t i = 0; i < NSLOTS; i++) {
		size[i] = (uint32_t)mixed_size(&r, SIZE_MAX);
		if (!(slot[i] = malloc(size[i])))
			die("malloc");
		fill(slot[i], size[i], i);
	}
	for (size_t s = 0; s < nsteps; s++) {
		size_t i = rng_below(&r, NSLOTS);
		h = mix(h, digest(slot[i], size[i]));
		free(slot[i]);
		size[i] = (uint32_t)mixed_size(&r, SIZE_MAX);
		if (!(slot[i] = malloc(size[i])))
			die("malloc");
		fill(slot[i], size[i], s);
	}
	for (size_t i = 0; i < NSLOTS; i++) {
		h = mix(h, digest(slot[i], size[i]));
		free(slot[i]);
	}
	free(slot);
	free(size);
	run->ops = 2 * (NSLOTS + nsteps);
	run->checksum = h;
}

/* ---- realloc growth -------------------------------------------------------------------- */

/* Two growth patterns, interleaved across many blocks so no block has the heap to itself:
 * vectors doubling from 16 B to 1 MiB, and strings appended 1-16 bytes at a time up to
 * 1-8 KiB. Every realloc counts as one operation. */
__attribute__((noinline)) static void wl_realloc(struct run *run)
{
	enum { NVEC = 64, NSTR = 1024, VEC_MAX = 1 << 20 };
	size_t nsteps = scaled(2000000);
	struct rng r = rng_seed(3);
	unsigned char *vec[NVEC] = { 0 };
	size_t cap[NVEC] = { 0 };
	uint64_t tag[NVEC] = { 0 };
	unsigned char **str = xmalloc(NSTR * sizeof *str);
	uint32_t *len = xmalloc(NSTR * sizeof *len), *limit = xmalloc(NSTR * sizeof *limit);
	uint64_t h = 0, ops = 0;
	for (size_t i = 0; i < NSTR; i++) {
		str[i] = NULL;
		len[i] = 0;
		limit[i] = (uint32_t)rng_range(&r, KIB, 8 * KIB + 1);
	}
	for (size_t s = 0; s < nsteps; s++) {
		if (rng_below(&r, 64) == 0) { /* one vector step for every 63 string steps */
			size_t v = rng_below(&r, NVEC);
			if (cap[v] == VEC_MAX) {
				h = mix(h, digest(vec[v], cap[v]));
				free(vec[v]);
				vec[v] = NULL;
				cap[v] = 0;
				ops++;
			}
			size_t old = cap[v], n = old ? 2 * old : 16;
			unsigned char *p = realloc(vec[v], n);
			if (!p)
				die("realloc");
			if (old)
				fill_from(p, old, n, tag[v]);
			else
				fill(p, n, tag[v] = s);
			vec[v] = p;
			cap[v] = n;
		} else {
			size_t i = rng_below(&r, NSTR), k = rng_range(&r, 1, 17);
			if (len[i] + k > limit[i]) {
				uint64_t sum = 0;
				for (size_t j = 0; j < len[i]; j++)
					sum = sum * 31 + str[i][j];
				h = mix(h, sum);
				free(str[i]);
				str[i] = NULL;
				len[i] = 0;
				ops++;
			}
			unsigned char *p = realloc(str[i], len[i] + k + 1);
			if (!p)
				die("realloc");
			for (size_t j = 0; j < k; j++)
				p[len[i] + j] = (unsigned char)('a' + (s + j) % 26);
			len[i] += (uint32_t)k;
			p[len[i]] = 0;
			str[i] = p;
		}
		ops++;
	}
	for (size_t v = 0; v < NVEC; v++) {
		if (vec[v])
			h = mix(h, digest(vec[v], cap[v]));
		free(vec[v]);
	}
	for (size_t i = 0; i < NSTR; i++) {
		for (size_t j = 0; j < len[i]; j++)
			h = mix(h, str[i][j]);
		free(str[i]);
	}
	free(str);
	free(len);
	free(limit);
	run->ops = ops + NVEC + NSTR;
	run->checksum = h;
}

/* ---- private churn in threads ---------------------------------------------------------- */

static void *churn_thread(void *arg)
{
	churn_run(arg);
	return NULL;
}

/* nthreads threads, each churning its own 20k small blocks; the total work is fixed, so
 * on two cores two threads should take half the time of one */
static void threads_run(struct run *run, int nthreads)
{
	pthread_t tid[8];
	struct churn c[8];
	for (int t = 0; t < nthreads; t++) {
		c[t] = (struct churn){ .nslots = 20000,
			               .nsteps = scaled(6000000) / nthreads,
			               .lo = 8,
			               .hi = 257,
			               .seed = 10 + t };
		if (pthread_create(&tid[t], NULL, churn_thread, &c[t]))
			die("pthread_create");
	}
	for (int t = 0; t < nthreads; t++) {
		pthread_join(tid[t], NULL);
		run->ops += c[t].ops;
		run->checksum = mix(run->checksum, c[t].checksum);
	}
}

__attribute__((noinline)) static void wl_threads2(struct run *run)
{
	threads_run(run, 2);
}

__attribute__((noinline)) static void wl_threads4(struct run *run)
{
	threads_run(run, 4);
}

/* ---- producer/consumer: every block is freed by a thread that did not allocate it ------ */

/* A single-producer single-consumer ring. Each side publishes its index every BATCH
 * items (or when it would wait), so the shared lines move once per batch, not per item. */
enum { RING = 4096, BATCH = 64 };
struct ring {
	_Alignas(64) _Atomic size_t head; /* consumer's */
	_Alignas(64) _Atomic size_t tail; /* producer's */
	_Alignas(64) void *item[RING];
	uint32_t size[RING];
	size_t n;
	uint64_t checksum;
};

static void *producer(void *arg)
{
	struct ring *q = arg;
	struct rng r = rng_seed(4);
	size_t tail = 0, head = 0;
	for (size_t s = 0; s < q->n; s++) {
		while (tail - head == RING) {
			atomic_store_explicit(&q->tail, tail, memory_order_release);
			head = atomic_load_explicit(&q->head, memory_order_acquire);
			if (tail - head == RING)
				sched_yield();
		}
		size_t n = rng_range(&r, 8, rng_below(&r, 8) ? 257 : 4097);
		void *p = malloc(n);
		if (!p)
			die("malloc");
		fill(p, n, s);
		q->item[tail % RING] = p;
		q->size[tail % RING] = (uint32_t)n;
		tail++;
		if (tail % BATCH == 0)
			atomic_store_explicit(&q->tail, tail, memory_order_release);
	}
	atomic_store_explicit(&q->tail, tail, memory_order_release);
	return NULL;
}

static void *consumer(void *arg)
{
	struct ring *q = arg;
	size_t head = 0;
	uint64_t h = 0;
	while (head < q->n) {
		size_t tail = atomic_load_explicit(&q->tail, memory_order_acquire);
		if (tail == head) {
			sched_yield();
			continue;
		}
		for (; head < tail; head++) {
			h = mix(h, digest(q->item[head % RING], q->size[head % RING]));
			free(q->item[head % RING]);
			if (head % BATCH == 0)
				atomic_store_explicit(&q->head, head + 1, memory_order_release);
		}
		atomic_store_explicit(&q->head, head, memory_order_release);
	}
	q->checksum = h;
	return NULL;
}

/* one producer thread allocates 8-256 B blocks (1 in 8 up to 4 KiB), one consumer frees */
__attribute__((noinline)) static void wl_prodcons(struct run *run)
{
	struct ring *q = aligned_alloc(64, sizeof *q);
	if (!q)
		die("aligned_alloc");
	memset(q, 0, sizeof *q);
	q->n = scaled(3000000);
	pthread_t p, c;
	if (pthread_create(&c, NULL, consumer, q) || pthread_create(&p, NULL, producer, q))
		die("pthread_create");
	pthread_join(p, NULL);
	pthread_join(c, NULL);
	run->ops = 2 * q->n + 2;
	run->checksum = q->checksum;
	free(q);
}

/* ---- large blocks ---------------------------------------------------------------------- */

/* 16 live blocks of 128 KiB-8 MiB (log-uniform), every page written and read: an
 * allocator that hands pages back and forth to the kernel pays a fault per page. */
__attribute__((noinline)) static void wl_large(struct run *run)
{
	enum { NSLOTS = 16 };
	size_t nsteps = scaled(3000);
	struct rng r = rng_seed(5);
	void *slot[NSLOTS] = { 0 };
	size_t size[NSLOTS] = { 0 };
	uint64_t h = 0;
	for (size_t s = 0; s < nsteps + NSLOTS; s++) {
		size_t i = s < NSLOTS ? s : rng_below(&r, NSLOTS);
		if (slot[i]) {
			h = mix(h, digest(slot[i], size[i]));
			free(slot[i]);
		}
		size_t base = (128 * KIB) << rng_below(&r, 6);
		size[i] = base + rng_below(&r, base);
		if (!(slot[i] = malloc(size[i])))
			die("malloc");
		fill(slot[i], size[i], s);
	}
	for (size_t i = 0; i < NSLOTS; i++) {
		h = mix(h, digest(slot[i], size[i]));
		free(slot[i]);
	}
	run->ops = 2 * (nsteps + NSLOTS);
	run->checksum = h;
}

/* ---- fragmentation --------------------------------------------------------------------- */

/* Allocate many small blocks, free every other one, then allocate larger blocks that
 * cannot reuse the holes; twice over. Reports peak RSS over peak live (requested) bytes:
 * 1.0 is perfect, and the slot arrays and program itself add about 3%. */
__attribute__((noinline)) static void wl_frag(struct run *run)
{
	size_t n = scaled(500000);
	struct rng r = rng_seed(6);
	void **slot = xmalloc(n * sizeof *slot);
	uint32_t *size = xmalloc(n * sizeof *size);
	size_t live = 0, peak = 0;
	uint64_t h = 0, ops = 0;
	/* phase p: the slots of parity p get sizes in [lo[p], hi[p]) */
	static const size_t lo[3] = { 16, 128, 320 }, hi[3] = { 97, 385, 961 };
	for (size_t i = 0; i < n; i++) {
		size[i] = (uint32_t)rng_range(&r, lo[0], hi[0]);
		if (!(slot[i] = malloc(size[i])))
			die("malloc");
		fill(slot[i], size[i], i);
		live += size[i];
	}
	ops += n;
	peak = live;
	for (int phase = 1; phase <= 2; phase++) {
		size_t par = phase & 1;
		for (size_t i = par; i < n; i += 2) {
			h = mix(h, digest(slot[i], size[i]));
			free(slot[i]);
			live -= size[i];
		}
		for (size_t i = par; i < n; i += 2) {
			size[i] = (uint32_t)rng_range(&r, lo[phase], hi[phase]);
			if (!(slot[i] = malloc(size[i])))
				die("malloc");
			fill(slot[i], size[i], i + phase);
			live += size[i];
		}
		ops += n;
		if (live > peak)
			peak = live;
	}
	for (size_t i = 0; i < n; i++) {
		h = mix(h, digest(slot[i], size[i]));
		free(slot[i]);
	}
	ops += n;
	free(slot);
	free(size);
	run->ops = ops;
	run->checksum = h;
	long rss = peak_rss_kb();
	snprintf(run->extra, sizeof run->extra, " peak_live_kb=%zu rss_over_live=%.3f", peak / KIB,
	         (double)rss / (double)(peak / KIB));
}

/* ---- aligned allocation ---------------------------------------------------------------- */

/* 20k live blocks, alignment 16 B-4 KiB, size a quarter to twice the alignment, half by
 * posix_memalign and half by aligned_alloc. A misaligned pointer changes the checksum. */
__attribute__((noinline)) static void wl_aligned(struct run *run)
{
	enum { NSLOTS = 20000 };
	size_t nsteps = scaled(1200000);
	struct rng r = rng_seed(7);
	void **slot = xmalloc(NSLOTS * sizeof *slot);
	uint32_t *size = xmalloc(NSLOTS * sizeof *size);
	uint64_t h = 0;
	for (size_t s = 0; s < nsteps + NSLOTS; s++) {
		size_t i = s < NSLOTS ? s : rng_below(&r, NSLOTS);
		if (s >= NSLOTS) {
			h = mix(h, digest(slot[i], size[i]));
			free(slot[i]);
		}
		size_t align = (size_t)16 << rng_below(&r, 9);
		size_t n = rng_range(&r, align / 4 > 8 ? align / 4 : 8, 2 * align + 1);
		void *p;
		if (s & 1) {
			n = (n + align - 1) & ~(align - 1); /* aligned_alloc wants a multiple */
			p = aligned_alloc(align, n);
		} else if (posix_memalign(&p, align, n)) {
			p = NULL;
		}
		if (!p)
			die("aligned allocation");
		h = mix(h, (uintptr_t)p & (align - 1));
		slot[i] = p;
		size[i] = (uint32_t)n;
		fill(p, n, s);
	}
	for (size_t i = 0; i < NSLOTS; i++) {
		h = mix(h, digest(slot[i], size[i]));
		free(slot[i]);
	}
	free(slot);
	free(size);
	run->ops = 2 * (nsteps + NSLOTS);
	run->checksum = h;
}

/* ---- worst-case latency ---------------------------------------------------------------- */

/* 50k live blocks of mixed sizes up to 16 KiB, all touched, then one warm-up pass of
 * replacements; then every free and malloc of 1M replacements is timed alone with rdtsc
 * (fenced, so the operation sits between the two reads). The cost of the read itself is
 * in every sample: compare allocators, not absolute figures. A replacement during which
 * the thread was preempted (its involuntary context switch count moved) says more about
 * the machine's load than about the allocator: it is counted (preempted=) and left out.
 * Blocking inside the allocator is a voluntary switch and stays in. The report splits
 * p99.9 by block size too (up to 1 KiB, the sizes most allocators serve from slabs, and
 * above): a tail set by one path shows which one. After the timed replacements, as many
 * empty windows are timed the same way (timer_p999=, timer_max=): what the machine adds
 * with no allocator at all, its own stalls included. */
static uint32_t *lat_malloc, *lat_free;
static uint8_t *lat_big; /* bit 0: the malloc asked over 1 KiB; bit 1: the block freed was */
static size_t lat_n, lat_preempted;
static uint32_t lat_timer_p999, lat_timer_max;

static long involuntary_switches(void)
{
	struct rusage ru;
	getrusage(RUSAGE_THREAD, &ru);
	return ru.ru_nivcsw;
}

static inline uint64_t tsc_begin(void)
{
	_mm_lfence();
	uint64_t t = __rdtsc();
	_mm_lfence();
	return t;
}

static inline uint64_t tsc_end(void)
{
	unsigned aux;
	uint64_t t = __rdtscp(&aux);
	_mm_lfence();
	return t;
}

static uint32_t clamp32(uint64_t v)
{
	return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

/* Time n empty windows as wl_latency times an operation, left out the same way when the
 * thread was preempted: their p99.9 and max, by a histogram (no array that would add to
 * the peak RSS). */
static void timer_alone(size_t n)
{
	enum { BUCKETS = 65536 };
	static uint32_t count[BUCKETS + 1]; /* the last: BUCKETS cycles or more */
	memset(count, 0, sizeof count);
	size_t kept = 0;
	uint32_t max = 0;
	long switches = involuntary_switches();
	for (size_t s = 0; s < n; s++) {
		uint64_t a = tsc_begin();
		uint64_t b = tsc_end();
		long sw = involuntary_switches();
		if (sw == switches) {
			uint32_t v = clamp32(b - a);
			count[v < BUCKETS ? v : BUCKETS]++;
			max = v > max ? v : max;
			kept++;
		}
		switches = sw;
	}
	size_t rank = kept * 999 / 1000, seen = 0;
	uint32_t v = 0;
	while (v < BUCKETS && seen + count[v] <= rank)
		seen += count[v++];
	lat_timer_p999 = v; /* BUCKETS: that many or more */
	lat_timer_max = max;
}

__attribute__((noinline)) static void wl_latency(struct run *run)
{
	enum { NSLOTS = 50000 };
	size_t nsamples = scaled(1000000);
	struct rng r = rng_seed(8);
	void **slot = xmalloc(NSLOTS * sizeof *slot);
	uint32_t *size = xmalloc(NSLOTS * sizeof *size);
	lat_malloc = xmalloc(nsamples * sizeof *lat_malloc);
	lat_free = xmalloc(nsamples * sizeof *lat_free);
	lat_big = xmalloc(nsamples);
	memset(lat_malloc, 0, nsamples * sizeof *lat_malloc);
	memset(lat_free, 0, nsamples * sizeof *lat_free);
	memset(lat_big, 0, nsamples);
	uint64_t h = 0;
	for (size_t i = 0; i < NSLOTS; i++) {
		size[i] = (uint32_t)mixed_size(&r, 16 * KIB);
		if (!(slot[i] = malloc(size[i])))
			die("malloc");
		fill(slot[i], size[i], i);
	}
	for (size_t s = 0; s < NSLOTS; s++) { /* warm-up: every size class has been freed */
		size_t i = rng_below(&r, NSLOTS);
		h = mix(h, digest(slot[i], size[i]));
		free(slot[i]);
		size[i] = (uint32_t)mixed_size(&r, 16 * KIB);
		if (!(slot[i] = malloc(size[i])))
			die("malloc");
		fill(slot[i], size[i], s);
	}
	size_t kept = 0;
	long switches = involuntary_switches();
	double t0 = now(), c0 = cpu_secs();
	for (size_t s = 0; s < nsamples; s++) {
		size_t i = rng_below(&r, NSLOTS);
		h = mix(h, digest(slot[i], size[i]));
		void *old = slot[i];
		size_t n = mixed_size(&r, 16 * KIB);
		uint64_t a = tsc_begin();
		free(old);
		uint64_t b = tsc_end();
		void *p = malloc(n);
		uint64_t c = tsc_end();
		if (!p)
			die("malloc");
		long sw = involuntary_switches();
		if (sw == switches) {
			lat_free[kept] = clamp32(b - a);
			lat_malloc[kept] = clamp32(c - b);
			lat_big[kept] = (uint8_t)((n > KIB) | (size[i] > KIB) << 1);
			kept++;
		}
		switches = sw;
		slot[i] = p;
		size[i] = (uint32_t)n;
		fill(p, n, s);
	}
	run->secs = now() - t0;
	run->cpu = cpu_secs() - c0;
	lat_n = kept;
	lat_preempted = nsamples - kept;
	timer_alone(nsamples);
	for (size_t i = 0; i < NSLOTS; i++) {
		h = mix(h, digest(slot[i], size[i]));
		free(slot[i]);
	}
	free(slot);
	free(size);
	run->ops = 2 * nsamples;
	run->checksum = h;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

/* p99.9 of v's samples whose lat_big has bit set as want, or 0 if none (v unsorted) */
static uint32_t band_p999(const uint32_t *v, size_t n, unsigned bit, unsigned want)
{
	uint32_t *w = xmalloc((n ? n : 1) * sizeof *w);
	size_t m = 0;
	for (size_t i = 0; i < n; i++)
		if ((lat_big[i] >> bit & 1) == want)
			w[m++] = v[i];
	uint32_t r = 0;
	if (m) {
		qsort(w, m, sizeof *w, cmp_u32);
		r = w[m * 999 / 1000];
	}
	free(w);
	return r;
}

/* percentiles of both sample arrays, after the timed part */
static void latency_report(struct run *run)
{
	size_t len = (size_t)snprintf(run->extra, sizeof run->extra,
	                              " preempted=%zu timer_p999=%u timer_max=%u", lat_preempted,
	                              lat_timer_p999, lat_timer_max);
	struct {
		const char *name;
		uint32_t *v;
	} op[2] = { { "malloc", lat_malloc }, { "free", lat_free } };
	for (unsigned k = 0; k < 2; k++) {
		uint32_t *v = op[k].v;
		size_t n = lat_n;
		len += (size_t)snprintf(run->extra + len, sizeof run->extra - len,
		                        " %s_p999_1k=%u %s_p999_big=%u", op[k].name,
		                        band_p999(v, n, k, 0), op[k].name, band_p999(v, n, k, 1));
		if (n == 0) /* preempted throughout: report zeros rather than read nothing */
			v[n++] = 0;
		qsort(v, n, sizeof *v, cmp_u32);
		len += (size_t)snprintf(run->extra + len, sizeof run->extra - len,
		                        " %s_min=%u %s_p50=%u %s_p99=%u %s_p999=%u %s_max=%u",
		                        op[k].name, v[0], op[k].name, v[n / 2], op[k].name,
		                        v[n * 99 / 100], op[k].name, v[n * 999 / 1000], op[k].name,
		                        v[n - 1]);
	}
	free(lat_malloc);
	free(lat_free);
	free(lat_big);
}

/* ---- main ------------------------------------------------------------------------------ */

static const struct workload {
	const char *name;
	void (*run)(struct run *);
	void (*report)(struct run *); /* after timing and the RSS reading */
	int threads;                  /* > 1: left out of callgrind counts */
} workloads[] = {
	{ "churn", wl_churn, NULL, 1 },       { "mixed", wl_mixed, NULL, 1 },
	{ "realloc", wl_realloc, NULL, 1 },   { "threads2", wl_threads2, NULL, 2 },
	{ "threads4", wl_threads4, NULL, 4 }, { "prodcons", wl_prodcons, NULL, 2 },
	{ "large", wl_large, NULL, 1 },       { "frag", wl_frag, NULL, 1 },
	{ "aligned", wl_aligned, NULL, 1 },   { "latency", wl_latency, latency_report, 1 },
};

int main(int argc, char **argv)
{
	const size_t nworkloads = sizeof workloads / sizeof workloads[0];
	if (argc == 2 && strcmp(argv[1], "--list") == 0) {
		for (size_t i = 0; i < nworkloads; i++)
			printf("%s threads=%d\n", workloads[i].name, workloads[i].threads);
		return 0;
	}
	const struct workload *w = NULL;
	for (size_t i = 0; argc >= 2 && i < nworkloads; i++)
		if (strcmp(argv[1], workloads[i].name) == 0)
			w = &workloads[i];
	if (!w || argc > 3 || (argc == 3 && (scale = atof(argv[2])) <= 0)) {
		fprintf(stderr, "usage: bench WORKLOAD [SCALE] | bench --list\n");
		return 2;
	}
	struct run run = { 0 };
	double t0 = now(), c0 = cpu_secs();
	w->run(&run);
	double secs = now() - t0, cpu = cpu_secs() - c0;
	if (run.secs > 0) {
		secs = run.secs;
		cpu = run.cpu;
	}
	long rss = peak_rss_kb();
	if (w->report)
		w->report(&run);
	printf("workload=%s ops=%llu secs=%.6f cpu_secs=%.6f ops_per_sec=%.0f peak_rss_kb=%ld "
	       "checksum=%016llx%s\n",
	       w->name, (unsigned long long)run.ops, secs, cpu, (double)run.ops / secs, rss,
	       (unsigned long long)run.checksum, run.extra);
	return 0;
}
