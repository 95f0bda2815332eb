/* stress.c: four threads hammer one keel heap through their own caches, the
 * way the drop-in does: sizes from 1 byte to 1 MiB, a third of the frees
 * handed to the next thread, every block's contents checked before it goes.
 * Built plainly and under ThreadSanitizer; prints TAP.
 * Usage: stress [ops-per-thread]   (default 1000000) */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../alloc/keel.h"
#include "source_linux.h"

#define THREADS 4
#define LIVE    2048 /* blocks each thread keeps at once */
#define MAILBOX 4096 /* blocks in flight to one thread */

static struct keel_heap heap;

/* The heap lock: a pthread mutex through keel's lock hooks, as a hosted
 * program with more threads than cores should use (the built-in spinlock
 * cannot yield). */
static pthread_mutex_t heap_mutex = PTHREAD_MUTEX_INITIALIZER;
static uintptr_t heap_lock(void *ctx)
{
	pthread_mutex_lock(ctx);
	return 0;
}
static void heap_unlock(void *ctx, uintptr_t token)
{
	(void)token;
	pthread_mutex_unlock(ctx);
}
static const struct keel_lock lock_hooks = { heap_lock, heap_unlock, &heap_mutex };

struct block {
	unsigned char *p;
	size_t size;
	uint64_t tag;
};

/* A thread's inbox: blocks other threads hand over for it to check and free. */
struct mailbox {
	pthread_mutex_t lock;
	struct block q[MAILBOX];
	size_t n;
};
static struct mailbox box[THREADS];

struct worker {
	int id;
	long ops;
	struct keel_cache cache;
	uint64_t rng;
	long allocs, frees, crossed, bad, failed;
	struct block live[LIVE];
};
static struct worker workers[THREADS];

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

/* Mostly small, some medium, a few large (up to 1 MiB). */
static size_t pick_size(uint64_t *s)
{
	uint64_t r = rnd(s);
	unsigned k = (unsigned)(r % 1000);
	if (k < 800)
		return 1 + (r >> 10) % 1024;
	if (k < 995)
		return 1025 + (r >> 10) % (256 * 1024);
	return 256 * 1024 + (r >> 10) % (768 * 1024 + 1);
}

/* Tag the head, the tail and one byte in every 256: enough to catch a
 * block handed out twice or overlapping another, cheap enough for 1 MiB. */
static void stamp(const struct block *b)
{
	for (size_t i = 0; i < b->size; i += (i < 64 || b->size - i <= 64) ? 1 : 256)
		b->p[i] = (unsigned char)(b->tag + i * 31);
}

static int intact(const struct block *b)
{
	for (size_t i = 0; i < b->size; i += (i < 64 || b->size - i <= 64) ? 1 : 256)
		if (b->p[i] != (unsigned char)(b->tag + i * 31))
			return 0;
	return 1;
}

static void release(struct worker *w, struct block *b)
{
	if (!intact(b))
		w->bad++;
	if (keel_cache_free(&w->cache, b->p) != 0)
		w->bad++;
	w->frees++;
	b->p = NULL;
}

static void drain(struct worker *w)
{
	struct mailbox *m = &box[w->id];
	struct block got[64];
	for (;;) {
		size_t n = 0;
		pthread_mutex_lock(&m->lock);
		while (m->n && n < 64)
			got[n++] = m->q[--m->n];
		pthread_mutex_unlock(&m->lock);
		if (!n)
			return;
		for (size_t i = 0; i < n; i++)
			release(w, &got[i]);
	}
}

/* Hand b to the next thread; if its inbox is full, free it here. */
static void hand_over(struct worker *w, struct block *b)
{
	struct mailbox *m = &box[(w->id + 1) % THREADS];
	pthread_mutex_lock(&m->lock);
	int sent = m->n < MAILBOX;
	if (sent)
		m->q[m->n++] = *b;
	pthread_mutex_unlock(&m->lock);
	if (sent) {
		w->crossed++;
		b->p = NULL;
	} else {
		release(w, b);
	}
}

static void *run(void *arg)
{
	struct worker *w = arg;
	keel_cache_init(&w->cache, &heap);
	for (long op = 0; op < w->ops; op++) {
		struct block *b = &w->live[rnd(&w->rng) % LIVE];
		if (b->p) {
			if (rnd(&w->rng) % 3 == 0)
				hand_over(w, b);
			else
				release(w, b);
		} else {
			b->size = pick_size(&w->rng);
			b->tag = rnd(&w->rng);
			b->p = keel_cache_malloc(&w->cache, b->size);
			if (!b->p) {
				w->failed++;
				continue;
			}
			w->allocs++;
			stamp(b);
		}
		if ((op & 255) == 0)
			drain(w);
	}
	drain(w);
	for (size_t i = 0; i < LIVE; i++)
		if (w->live[i].p)
			release(w, &w->live[i]);
	return NULL;
}

int main(int argc, char **argv)
{
	long ops = argc > 1 ? atol(argv[1]) : 1000000;
	struct keel_config cfg = { .source = &keel_linux_source, .lock = &lock_hooks };
	int n = 0, failed = 0;
	printf("1..5\n");
	if (keel_heap_init(&heap, &cfg) != 0) {
		printf("Bail out! keel_heap_init\n");
		return 1;
	}
	pthread_t tid[THREADS];
	for (int i = 0; i < THREADS; i++)
		pthread_mutex_init(&box[i].lock, NULL);
	for (int i = 0; i < THREADS; i++) {
		workers[i].id = i;
		workers[i].ops = ops;
		workers[i].rng = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
		pthread_create(&tid[i], NULL, run, &workers[i]);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(tid[i], NULL);
	/* what is still in flight goes back through its receiver's cache */
	long allocs = 0, frees = 0, crossed = 0, bad = 0, fails = 0;
	for (int i = 0; i < THREADS; i++)
		drain(&workers[i]);
	for (int i = 0; i < THREADS; i++) {
		struct worker *w = &workers[i];
		allocs += w->allocs;
		frees += w->frees;
		crossed += w->crossed;
		bad += w->bad;
		fails += w->failed;
		keel_cache_flush(&w->cache);
	}
#define CHECK(cond, name)                                                                          \
	do {                                                                                       \
		int ok_ = (cond);                                                                  \
		failed += !ok_;                                                                    \
		printf("%s %d - %s\n", ok_ ? "ok" : "not ok", ++n, name);                          \
	} while (0)
	printf("# %d threads x %ld ops: %ld allocs, %ld frees, %ld crossed threads, %ld failed\n",
	       THREADS, ops, allocs, frees, crossed, fails);
	CHECK(bad == 0, "every block intact when freed, every free accepted");
	CHECK(allocs == frees && fails == 0, "every block allocated was freed once");
	CHECK(crossed * 4 >= frees, "at least a quarter of the frees crossed threads");
	struct keel_fault f;
	int rc = keel_check(&heap, &f);
	if (rc)
		printf("# keel_check: %s at %p\n", f.what, f.where);
	CHECK(rc == 0, "keel_check clean after the run");
	struct keel_stats st;
	keel_stats(&heap, &st);
	printf("# live %zu, peak source %zu KiB, maps %zu, unmaps %zu\n", st.live_blocks,
	       st.peak_source_bytes >> 10, st.source_maps, st.source_unmaps);
	CHECK(st.live_blocks == 0 && st.in_use_bytes == 0,
	      "nothing live once every cache is flushed");
	return failed ? 1 : 0;
}
