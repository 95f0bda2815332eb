/* kernel/smp.c: every CPU the MADT lists, started and kept. The bootstrap CPU
 * maps its local APIC, copies the trampoline below 1 MiB and starts each
 * other CPU with INIT-SIPI-SIPI; each gets a stack, GDT/TSS and a struct cpu
 * (GS base) from the kernel heap, then sleeps in hlt until smp_run hands it a
 * job through a wake-up IPI. Also the spinlocks, the local APIC timer and the
 * interrupt-handler heap (a fixed region, so its allocations never grow).
 * kprintf takes no lock (print.c is shared with the UEFI application): other
 * CPUs print only when they fail, so at worst a failure's lines interleave.
 *
 * TLB coherence: source.c clears page-table entries on whichever CPU unmaps
 * and then calls tlb_shootdown, which IPIs every other online CPU and waits
 * until each has flushed, all before the source's lock (and so the freed
 * frames) is let go. A CPU spinning for any spinlock serves a pending
 * shootdown from its spin loop, so a CPU waiting with interrupts off cannot
 * stall the one that asked.
 */
#include "../alloc/keel.h"
#include "cpu.h"
#include "kernel.h"
#include "percpu.h"

#define MSR_APIC_BASE 0x1b
#define MSR_GS_BASE   0xc0000101

/* local APIC registers (offsets into its 4 KiB page) */
#define LAPIC_ID        0x020
#define LAPIC_EOI       0x0b0
#define LAPIC_SVR       0x0f0
#define LAPIC_ESR       0x280
#define LAPIC_ICR_LO    0x300
#define LAPIC_ICR_HI    0x310
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_INIT 0x380
#define LAPIC_TIMER_DIV 0x3e0

#define ICR_INIT     0x00000500
#define ICR_STARTUP  0x00000600
#define ICR_ASSERT   0x00004000
#define ICR_PENDING  0x00001000
#define LVT_MASKED   0x00010000
#define LVT_PERIODIC 0x00020000

static struct cpu bsp;
struct cpu *cpus[MAX_CPUS];
unsigned ncpus = 1;
static volatile uint32_t *lapic; /* NULL: no local APIC mapped */

/* The trampoline (trampoline.S) and its data, filled before each start. */
extern const char tramp_start[], tramp_end[], tramp_data[];
struct tramp_data {
	uint64_t cr3, efer, stack, arg, entry;
};

static volatile uint32_t tlb_gen;
uint64_t tlb_shootdowns;

/* Flush this CPU's TLB if a shootdown is pending, and say so. */
static void tlb_serve(struct cpu *c)
{
	uint32_t gen = __atomic_load_n(&tlb_gen, __ATOMIC_ACQUIRE);
	if (c->tlb_seen == gen)
		return;
	tlb_flush_all();
	c->tlb_flushes++;
	__atomic_store_n(&c->tlb_seen, gen, __ATOMIC_RELEASE);
}

/* ---- spinlocks ------------------------------------------------------------- */

struct spinlock heap_lock;

uintptr_t spin_lock(struct spinlock *l)
{
	uintptr_t token = irq_save();
	uint32_t me = this_cpu()->index + 1;
	if (l->owner == me)
		panic("spin_lock: %p is already held by this CPU", (void *)l);
	int waited = 0;
	while (__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE)) {
		waited = 1;
		while (__atomic_load_n(&l->locked, __ATOMIC_RELAXED)) {
			tlb_serve(this_cpu());
			cpu_pause();
		}
	}
	l->owner = me;
	l->contended += waited;
	return token;
}

void spin_unlock(struct spinlock *l, uintptr_t token)
{
	l->owner = 0;
	__atomic_store_n(&l->locked, 0, __ATOMIC_RELEASE);
	irq_restore(token);
}

uintptr_t spin_hook_lock(void *ctx)
{
	return spin_lock(ctx);
}

void spin_hook_unlock(void *ctx, uintptr_t token)
{
	spin_unlock(ctx, token);
}

void barrier_wait(struct barrier *b)
{
	uint32_t gen = __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE);
	if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == b->n) {
		__atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&b->gen, gen + 1, __ATOMIC_RELEASE);
		return;
	}
	while (__atomic_load_n(&b->gen, __ATOMIC_ACQUIRE) == gen)
		cpu_pause();
}

/* ---- patterns ---------------------------------------------------------------- */

static uint64_t pattern_word(uint64_t key, size_t i)
{
	uint64_t x = key ^ (i * 0x9e3779b97f4a7c15ull);
	x ^= x >> 29;
	return x * 0xbf58476d1ce4e5b9ull;
}

/* Whole words where the block allows (keel blocks are 16-byte aligned), bytes
 * for the tail. */
void pattern_fill(void *p, size_t n, uint64_t key)
{
	uint8_t *b = p;
	size_t i = 0;
	if (!((uintptr_t)b & 7))
		for (; i + 8 <= n; i += 8)
			*(uint64_t *)(void *)(b + i) = pattern_word(key, i / 8);
	for (; i < n; i++)
		b[i] = (uint8_t)(pattern_word(key, i / 8) >> (8 * (i % 8)));
}

int pattern_ok(const void *p, size_t n, uint64_t key)
{
	const uint8_t *b = p;
	size_t i = 0;
	if (!((uintptr_t)b & 7))
		for (; i + 8 <= n; i += 8)
			if (*(const uint64_t *)(const void *)(b + i) != pattern_word(key, i / 8))
				return 0;
	for (; i < n; i++)
		if (b[i] != (uint8_t)(pattern_word(key, i / 8) >> (8 * (i % 8))))
			return 0;
	return 1;
}

/* ---- the local APIC -------------------------------------------------------- */

static uint32_t lapic_read(unsigned reg)
{
	return lapic[reg / 4];
}

static void lapic_write(unsigned reg, uint32_t v)
{
	lapic[reg / 4] = v;
}

static void lapic_ipi(uint32_t apic_id, uint32_t lo)
{
	uint64_t flags = irq_save();
	lapic_write(LAPIC_ICR_HI, apic_id << 24);
	lapic_write(LAPIC_ICR_LO, lo);
	while (lapic_read(LAPIC_ICR_LO) & ICR_PENDING)
		cpu_pause();
	irq_restore(flags);
}

/* Software-enable this CPU's local APIC, timer masked. */
static void lapic_enable(void)
{
	lapic_write(LAPIC_SVR, 0x100 | VEC_SPURIOUS);
	lapic_write(LAPIC_TIMER_DIV, 0x3); /* divide by 16 */
	lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | VEC_TIMER);
	lapic_write(LAPIC_ESR, 0);
}

void timer_set(uint32_t count)
{
	if (!lapic)
		return;
	if (!count) {
		lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | VEC_TIMER);
		lapic_write(LAPIC_TIMER_INIT, 0);
		return;
	}
	lapic_write(LAPIC_LVT_TIMER, LVT_PERIODIC | VEC_TIMER);
	lapic_write(LAPIC_TIMER_INIT, count);
}

static void udelay(uint64_t us)
{
	uint64_t hz = tsc_hz() ? tsc_hz() : 1000000000ull;
	uint64_t end = rdtsc() + hz / 1000000 * us;
	while (rdtsc() < end)
		cpu_pause();
}

/* ---- the interrupt-handler heap ---------------------------------------------- */

struct keel_heap isr_heap;
volatile int isr_alloc_on;
static struct spinlock isr_lock;
static const struct keel_lock isr_lock_hooks = { spin_hook_lock, spin_hook_unlock, &isr_lock };
/* Room for every CPU's ring in runs of every class it uses, with metadata. */
static uint8_t isr_region[512 << 10] __attribute__((aligned(4096)));

static uint64_t isr_key(const struct cpu *c, const void *p)
{
	return (uint64_t)(uintptr_t)p ^ ((uint64_t)c->index << 56);
}

/* Free the oldest block of c's ring after checking its pattern. */
static void isr_free_oldest(struct cpu *c)
{
	unsigned i = c->isr_head;
	void *p = c->isr_ring[i];
	if (!pattern_ok(p, c->isr_size[i], isr_key(c, p)))
		c->isr_bad++;
	if (keel_free(&isr_heap, p))
		c->isr_bad++;
	else
		c->isr_frees++;
	c->isr_ring[i] = NULL;
	c->isr_head = (i + 1) % ISR_RING;
	c->isr_count--;
}

/* One timer tick's allocation: never a page-source call (the heap has none). */
static void isr_tick(struct cpu *c)
{
	/* the interrupted code must hold no heap lock on this CPU */
	uint32_t me = c->index + 1;
	if (heap_lock.owner == me || isr_lock.owner == me)
		c->isr_bad++;
	if (c->isr_count == ISR_RING)
		isr_free_oldest(c);
	size_t size = 16 + (size_t)(c->isr_seq * 97 % 497); /* 16-512 bytes */
	c->isr_seq++;
	void *p = keel_malloc(&isr_heap, size);
	if (!p) {
		c->isr_fails++;
		return;
	}
	pattern_fill(p, size, isr_key(c, p));
	unsigned slot = (c->isr_head + c->isr_count) % ISR_RING;
	c->isr_ring[slot] = p;
	c->isr_size[slot] = (uint32_t)size;
	c->isr_count++;
	c->isr_allocs++;
}

static void isr_drain_job(struct cpu *c, void *arg)
{
	(void)arg;
	uint64_t flags = irq_save();
	while (c->isr_count)
		isr_free_oldest(c);
	irq_restore(flags);
}

void isr_alloc_drain(void)
{
	smp_run(isr_drain_job, NULL);
}

void smp_interrupt(unsigned vector)
{
	struct cpu *c = this_cpu();
	if (vector == VEC_SPURIOUS)
		return; /* no EOI for a spurious interrupt */
	if (vector == VEC_TLB)
		tlb_serve(c);
	if (vector == VEC_TIMER) {
		c->ticks++;
		if (isr_alloc_on)
			isr_tick(c);
	}
	if (lapic)
		lapic_write(LAPIC_EOI, 0);
}

/* ---- the CPUs ------------------------------------------------------------------ */

void percpu_init_bsp(void)
{
	bsp.self = &bsp;
	bsp.index = 0;
	cpus[0] = &bsp;
	wrmsr(MSR_GS_BASE, (uint64_t)(uintptr_t)&bsp);
}

/* Where an application processor arrives from the trampoline. */
void ap_entry(struct cpu *c) __attribute__((noreturn));
void ap_entry(struct cpu *c)
{
	wrmsr(MSR_GS_BASE, (uint64_t)(uintptr_t)c);
	gdt_load(c->tables);
	idt_load();
	lapic_enable();
	__atomic_store_n(&c->is_online, 1, __ATOMIC_RELEASE);
	for (;;) {
		irq_save();
		uint32_t seq = __atomic_load_n(&c->job_seq, __ATOMIC_ACQUIRE);
		if (seq != c->done_seq) {
			irq_enable();
			c->job(c, c->job_arg);
			__atomic_store_n(&c->done_seq, seq, __ATOMIC_RELEASE);
			continue;
		}
		/* sti takes effect after hlt starts: a wake-up IPI cannot slip in between */
		__asm__ volatile("sti; hlt" : : : "memory");
	}
}

void smp_run(void (*fn)(struct cpu *c, void *arg), void *arg)
{
	for (unsigned i = 1; i < ncpus; i++) {
		struct cpu *c = cpus[i];
		c->job = fn;
		c->job_arg = arg;
		__atomic_store_n(&c->job_seq, c->job_seq + 1, __ATOMIC_RELEASE);
		lapic_ipi(c->apic_id, VEC_WAKE);
	}
	fn(cpus[0], arg);
	for (unsigned i = 1; i < ncpus; i++)
		while (__atomic_load_n(&cpus[i]->done_seq, __ATOMIC_ACQUIRE) != cpus[i]->job_seq)
			cpu_pause();
}

void tlb_shootdown(void)
{
	if (ncpus == 1)
		return;
	struct cpu *me = this_cpu();
	uint32_t gen = __atomic_add_fetch(&tlb_gen, 1, __ATOMIC_ACQ_REL);
	me->tlb_seen = gen; /* the caller flushed its own entries (invlpg) */
	tlb_shootdowns++;
	for (unsigned i = 0; i < ncpus; i++)
		if (cpus[i] != me)
			lapic_ipi(cpus[i]->apic_id, VEC_TLB);
	for (unsigned i = 0; i < ncpus; i++)
		while (cpus[i] != me && __atomic_load_n(&cpus[i]->tlb_seen, __ATOMIC_ACQUIRE) != gen)
			cpu_pause();
}

/* Start the CPU with apic_id; returns its struct cpu once it is online, or
 * NULL (it did not answer within a second, or no memory). */
static struct cpu *start_ap(uint32_t apic_id, unsigned index)
{
	struct cpu *c = keel_aligned_alloc(&kernel_heap, 64, sizeof(*c));
	struct cpu_tables *t = keel_aligned_alloc(&kernel_heap, 64, sizeof(*t));
	void *stack = keel_aligned_alloc(&kernel_heap, PAGE_SIZE, KSTACK_BYTES);
	if (!c || !t || !stack) {
		keel_free(&kernel_heap, c);
		keel_free(&kernel_heap, t);
		keel_free(&kernel_heap, stack);
		return NULL;
	}
	memset(c, 0, sizeof(*c));
	c->self = c;
	c->index = index;
	c->apic_id = apic_id;
	c->tables = t;
	c->stack = stack;

	struct tramp_data *d = phys_to_virt(TRAMPOLINE_PA + (uintptr_t)(tramp_data - tramp_start));
	d->cr3 = read_cr3();
	d->efer = rdmsr(MSR_EFER) & (EFER_LME | EFER_NXE);
	d->stack = (uintptr_t)stack + KSTACK_BYTES;
	d->arg = (uintptr_t)c;
	d->entry = (uintptr_t)ap_entry;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);

	/* INIT, 10 ms, then STARTUP twice (200 us apart) at the trampoline's page */
	lapic_ipi(apic_id, ICR_INIT | ICR_ASSERT);
	udelay(10000);
	for (int n = 0; n < 2 && !__atomic_load_n(&c->is_online, __ATOMIC_ACQUIRE); n++) {
		lapic_ipi(apic_id, ICR_STARTUP | ICR_ASSERT | (TRAMPOLINE_PA >> 12));
		udelay(200);
	}
	uint64_t deadline = rdtsc() + (tsc_hz() ? tsc_hz() : 1000000000ull);
	while (!__atomic_load_n(&c->is_online, __ATOMIC_ACQUIRE) && rdtsc() < deadline)
		cpu_pause();
	if (!c->is_online) {
		/* it may still wake up later and use these: keep them */
		kprintf("smp: CPU with APIC id %u did not start\n", apic_id);
		return NULL;
	}
	return c;
}

void smp_init(void)
{
	struct keel_config icfg = { .source = NULL, .lock = &isr_lock_hooks };
	if (keel_heap_init(&isr_heap, &icfg) || keel_heap_add_region(&isr_heap, isr_region,
	                                                               sizeof(isr_region)))
		panic("smp_init: the interrupt-handler heap");

	/* the local APIC: the MSR says where this CPU's is; the MADT should agree */
	uint64_t lapic_pa = rdmsr(MSR_APIC_BASE) & ~0xfffull & 0xffffffffffull;
	if (acpi_info.has_madt && acpi_info.lapic_pa != lapic_pa)
		kprintf("smp: the MADT puts the local APIC at %lx, the MSR at %lx\n",
		        acpi_info.lapic_pa, lapic_pa);
	if (pt_map(MMIO_BASE, lapic_pa, PTE_P | PTE_W | PTE_PCD | PTE_PWT | pt_nx()))
		panic("smp_init: cannot map the local APIC");
	lapic = (volatile uint32_t *)MMIO_BASE;
	bsp.apic_id = lapic_read(LAPIC_ID) >> 24;
	bsp.is_online = 1;
	lapic_enable();

	unsigned others = 0;
	for (unsigned i = 0; i < acpi_info.ncpus; i++)
		others += acpi_info.apic_ids[i] != bsp.apic_id;
	if (!others)
		return;

	/* the trampoline, at its physical page, identity-mapped while CPUs start */
	memcpy(phys_to_virt(TRAMPOLINE_PA), tramp_start, (size_t)(tramp_end - tramp_start));
	if (pt_map(TRAMPOLINE_PA, TRAMPOLINE_PA, PTE_P | PTE_W))
		panic("smp_init: cannot map the trampoline");
	for (unsigned i = 0; i < acpi_info.ncpus && ncpus < MAX_CPUS; i++) {
		if (acpi_info.apic_ids[i] == bsp.apic_id)
			continue;
		struct cpu *c = start_ap(acpi_info.apic_ids[i], ncpus);
		if (c)
			cpus[ncpus++] = c;
	}
	pt_unmap(TRAMPOLINE_PA);
	pt_prune(TRAMPOLINE_PA, PAGE_SIZE);
	tlb_shootdown();
}
