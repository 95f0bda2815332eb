/* kernel/stress.c: the SMP stress. Every CPU allocates through its own keel
 * cache (interrupts off around each call), writes a pattern, frees half of
 * its blocks itself and hands the other half to the next CPU, which checks
 * and frees them through its cache: blocks cross CPUs every round. The heap
 * is fresh (kernel page source, a spinlock hook), so at the end keel_check,
 * the counters and the frame count say whether everything came back. The
 * timer allocates from the interrupt-handler heap all along. */
#include "../alloc/keel.h"
#include "cpu.h"
#include "kernel.h"
#include "percpu.h"

#define STRESS_BLOCKS 32      /* blocks each CPU allocates per round */
#define TIMER_COUNT   62500   /* 1 ms at QEMU's 1 GHz APIC bus, divided by 16 */

struct handoff {
	void *p;
	size_t size;
	uint64_t key;
};

struct stress_run {
	struct keel_heap heap; /* first: 64-byte aligned */
	struct spinlock lock, err_lock;
	struct keel_lock hooks;
	struct barrier bar;
	unsigned rounds, n;
	struct handoff mail[MAX_CPUS][STRESS_BLOCKS];
	unsigned nmail[MAX_CPUS];
	struct handoff mine[MAX_CPUS][STRESS_BLOCKS];
	uint64_t errors;
	char what[96];
};

static void stress_error(struct stress_run *run, struct cpu *c, const char *what, const void *p)
{
	uintptr_t t = spin_lock(&run->err_lock);
	if (!run->errors++)
		ksnprintf(run->what, sizeof(run->what), "cpu %u: %s %p", c->index, what, p);
	spin_unlock(&run->err_lock, t);
	c->st_errors++;
}

static size_t stress_size(uint64_t *seed, unsigned round, unsigned j)
{
	*seed ^= *seed << 13;
	*seed ^= *seed >> 7;
	*seed ^= *seed << 17;
	if (j == 0 && round % 8 == 7)
		return (size_t)2 << 20; /* now and then a large block: the page source, concurrently */
	if (*seed % 8 == 0)
		return 1025 + (size_t)(*seed >> 8) % 15000; /* medium: under the heap lock */
	return 1 + (size_t)(*seed >> 8) % KEEL_SMALL_MAX; /* small: the cache */
}

/* Check a block's pattern and free it through this CPU's cache. */
static void stress_free(struct stress_run *run, struct cpu *c, const struct handoff *h)
{
	if (!pattern_ok(h->p, h->size, h->key))
		stress_error(run, c, "pattern broken in", h->p);
	uint64_t flags = irq_save();
	int rc = keel_cache_free(&c->cache, h->p);
	irq_restore(flags);
	c->st_cache_calls++;
	if (rc)
		stress_error(run, c, keel_strerror(rc), h->p);
}

static void stress_job(struct cpu *c, void *arg)
{
	struct stress_run *run = arg;
	unsigned i = c->index, next = (i + 1) % run->n, prev = (i + run->n - 1) % run->n;
	uint64_t seed = 0x2545f4914f6cdd1dull * (i + 1);
	c->st_allocs = c->st_frees = c->st_sent = c->st_received = c->st_errors = 0;
	c->st_cache_calls = 0;
	if (keel_cache_init(&c->cache, &run->heap))
		stress_error(run, c, "keel_cache_init failed", &c->cache);
	timer_set(TIMER_COUNT);
	barrier_wait(&run->bar);
	for (unsigned r = 0; r < run->rounds; r++) {
		/* allocate and fill; free the even ones here, hand the odd ones on */
		unsigned nsent = 0;
		for (unsigned j = 0; j < STRESS_BLOCKS; j++) {
			struct handoff *h = &run->mine[i][j];
			h->size = stress_size(&seed, r, j);
			uint64_t flags = irq_save();
			h->p = keel_cache_malloc(&c->cache, h->size);
			irq_restore(flags);
			c->st_cache_calls++;
			if (!h->p) {
				stress_error(run, c, "allocation failed", NULL);
				continue;
			}
			h->key = ((uint64_t)i << 48) ^ ((uint64_t)r << 24) ^ j ^ (uintptr_t)h->p;
			pattern_fill(h->p, h->size, h->key);
			c->st_allocs++;
		}
		for (unsigned j = 0; j < STRESS_BLOCKS; j++) {
			struct handoff *h = &run->mine[i][j];
			if (!h->p)
				continue;
			if (j % 2) {
				run->mail[i][nsent++] = *h;
				c->st_sent++;
			} else {
				stress_free(run, c, h);
				c->st_frees++;
			}
		}
		run->nmail[i] = nsent;
		barrier_wait(&run->bar);
		/* the previous CPU's blocks: check and free them here */
		for (unsigned j = 0; j < run->nmail[prev]; j++) {
			stress_free(run, c, &run->mail[prev][j]);
			c->st_received++;
		}
		barrier_wait(&run->bar);
	}
	(void)next;
	timer_set(0);
	uint64_t flags = irq_save();
	keel_cache_flush(&c->cache);
	irq_restore(flags);
}

int smp_stress(unsigned rounds, struct stress_result *r)
{
	memset(r, 0, sizeof(*r));
	r->ncpus = ncpus;
	r->rounds = rounds;
	struct stress_run *run = keel_aligned_alloc(&kernel_heap, 64, sizeof(*run));
	if (!run) {
		ksnprintf(r->what, sizeof(r->what), "no memory for the run");
		return -1;
	}
	memset(run, 0, sizeof(*run));
	run->rounds = rounds;
	run->n = ncpus;
	run->bar.n = ncpus;
	run->hooks = (struct keel_lock){ spin_hook_lock, spin_hook_unlock, &run->lock };
	struct keel_stats ist0, ist1, st;
	keel_stats(&isr_heap, &ist0);
	uint64_t isr0[4] = { 0, 0, 0, 0 }, ticks0 = 0;
	for (unsigned i = 0; i < ncpus; i++) {
		isr0[0] += cpus[i]->isr_allocs;
		isr0[1] += cpus[i]->isr_frees;
		isr0[2] += cpus[i]->isr_fails;
		isr0[3] += cpus[i]->isr_bad;
		ticks0 += cpus[i]->ticks;
	}
	size_t frames = frame_free_count();
	struct keel_config cfg = { .source = &kernel_source, .lock = &run->hooks };
	if (keel_heap_init(&run->heap, &cfg)) {
		ksnprintf(r->what, sizeof(r->what), "keel_heap_init failed");
		keel_free(&kernel_heap, run);
		return -1;
	}

	isr_alloc_on = 1;
	smp_run(stress_job, run);
	isr_alloc_on = 0;
	isr_alloc_drain();

	for (unsigned i = 0; i < ncpus; i++) {
		struct cpu *c = cpus[i];
		r->allocs += c->st_allocs;
		r->frees += c->st_frees;
		r->received += c->st_received;
		if (ncpus > 1)
			r->crossed += c->st_sent;
		r->isr_allocs += c->isr_allocs;
		r->isr_frees += c->isr_frees;
		r->isr_fails += c->isr_fails;
		r->isr_bad += c->isr_bad;
		r->ticks += c->ticks;
	}
	r->isr_allocs -= isr0[0];
	r->isr_frees -= isr0[1];
	r->isr_fails -= isr0[2];
	r->isr_bad -= isr0[3];
	r->ticks -= ticks0;
	r->errors = run->errors;
	struct keel_fault f = { NULL, NULL };
	r->check_rc = keel_check(&run->heap, &f);
	if (r->check_rc && !run->errors)
		ksnprintf(run->what, sizeof(run->what), "keel_check: %s at %p", f.what, f.where);
	keel_stats(&run->heap, &st);
	keel_stats(&isr_heap, &ist1);
	r->isr_check_rc = keel_check(&isr_heap, NULL);
	uint64_t sent = 0;
	for (unsigned i = 0; i < ncpus; i++)
		sent += cpus[i]->st_sent;
	r->counts_add_up = r->allocs == r->frees + r->received && sent == r->received &&
	                   st.live_blocks == 0 && st.alloc_count == st.free_count &&
	                   ist1.live_blocks == ist0.live_blocks &&
	                   ist1.alloc_count - ist0.alloc_count == r->isr_allocs &&
	                   ist1.free_count - ist0.free_count == r->isr_frees &&
	                   r->isr_allocs == r->isr_frees;
	if (keel_heap_destroy(&run->heap))
		r->errors++;
	r->frames_back = frame_free_count() == frames;
	if (run->what[0])
		ksnprintf(r->what, sizeof(r->what), "%s", run->what);
	else if (!r->counts_add_up)
		ksnprintf(r->what, sizeof(r->what), "counts: %lu allocs, %lu + %lu freed, %lu live",
		          r->allocs, r->frees, r->received, st.live_blocks);
	else if (!r->frames_back)
		ksnprintf(r->what, sizeof(r->what), "frames: %lu before, %lu after", frames,
		          frame_free_count());
	keel_free(&kernel_heap, run);
	return r->errors || r->check_rc || r->isr_check_rc || !r->counts_add_up || !r->frames_back ||
	                       r->isr_fails || r->isr_bad
	               ? -1
	               : 0;
}
