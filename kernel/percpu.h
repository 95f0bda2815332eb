/* kernel/percpu.h: what each CPU owns and how CPUs meet: the per-CPU area
 * (reached through GS base), spinlocks whose token carries the saved
 * RFLAGS.IF, running a job on every CPU, the local APIC timer and the
 * interrupt-handler heap. kernel/smp.c implements it, kernel/acpi.c finds
 * the CPUs, kernel/stress.c is the SMP stress over per-CPU keel caches. */
#ifndef KERNEL_PERCPU_H
#define KERNEL_PERCPU_H

#include <stddef.h>
#include <stdint.h>

#include "../alloc/keel.h"
#include "layout.h"

/* A spinlock: atomic xchg, pause while it is taken. Taken with interrupts
 * saved and disabled; the token spin_lock returns is RFLAGS as it was, so
 * unlocking puts IF back exactly (a caller that ran with interrupts off keeps
 * them off). Taking a lock this CPU already holds panics instead of hanging.
 *   S1  owner == 0  <=>  locked == 0 (outside the two instructions that set them) */
struct spinlock {
	volatile uint32_t locked;
	volatile uint32_t owner; /* CPU index + 1 of the holder, 0 if free */
	uint64_t contended;      /* acquisitions that had to wait */
};
uintptr_t spin_lock(struct spinlock *l);
void spin_unlock(struct spinlock *l, uintptr_t token);
/* keel lock hooks over the struct spinlock given as ctx:
 * struct keel_lock hooks = { spin_hook_lock, spin_hook_unlock, &lock }. */
uintptr_t spin_hook_lock(void *ctx);
void spin_hook_unlock(void *ctx, uintptr_t token);
/* The lock of every heap configured with kernel_lock (source.c). */
extern struct spinlock heap_lock;

/* Interrupt vectors of the local APIC (isr.S has stubs for 48-63). */
#define VEC_TIMER    48
#define VEC_WAKE     49
#define VEC_TLB      50
#define VEC_SPURIOUS 63 /* low four bits set, as older APICs need */

#define ISR_RING 16 /* blocks each CPU's timer handler keeps live */

/* One CPU. The first word points at the struct itself, so %gs:0 is this CPU. */
struct cpu {
	struct cpu *self;
	unsigned index; /* 0 is the bootstrap CPU */
	uint32_t apic_id;
	volatile int is_online;
	/* the job smp_run hands out: seq moves on when a new one is posted */
	void (*job)(struct cpu *c, void *arg);
	void *job_arg;
	volatile uint32_t job_seq, done_seq;
	volatile uint32_t tlb_seen; /* the last shootdown generation this CPU flushed for */
	uint64_t tlb_flushes;       /* shootdowns it served */
	/* the CPU's keel cache, attached to the heap of the job that uses it */
	struct keel_cache cache;
	/* what the last stress run did here */
	uint64_t st_allocs, st_frees, st_sent, st_received, st_errors;
	uint64_t st_cache_calls; /* keel_cache_malloc/free calls, interrupts off around each */
	/* the timer and the interrupt-handler heap */
	volatile uint64_t ticks;
	volatile uint64_t isr_allocs, isr_frees, isr_fails, isr_bad;
	void *isr_ring[ISR_RING];
	uint32_t isr_size[ISR_RING];
	unsigned isr_head, isr_count;
	uint64_t isr_seq;
	void *stack;                 /* an application processor's stack (kernel heap) */
	struct cpu_tables *tables;   /* its GDT, TSS and IST stacks */
} __attribute__((aligned(64)));

static inline struct cpu *this_cpu(void)
{
	struct cpu *c;
	__asm__ volatile("movq %%gs:0, %0" : "=r"(c));
	return c;
}

/* acpi.c: the MADT's view of the machine, read through the multiboot2 RSDP. */
struct acpi_info {
	int has_madt;
	unsigned rsdp_revision; /* 0: ACPI 1.0 (RSDT), 2+: XSDT */
	uint64_t lapic_pa;
	unsigned ncpus; /* enabled processor local APIC entries (at most MAX_CPUS) */
	uint32_t apic_ids[MAX_CPUS];
	unsigned ndisabled;
};
extern struct acpi_info acpi_info;
void acpi_init(uint64_t mb2_info_pa); /* before pt_init: reads tables below 4 GiB */

/* smp.c */
extern struct cpu *cpus[MAX_CPUS];
extern unsigned ncpus; /* online CPUs */
void percpu_init_bsp(void);  /* GS base for the bootstrap CPU, right after gdt_init */
void smp_init(void);         /* the local APIC, then start every CPU the MADT lists */
/* Run fn(c, arg) on every online CPU at once (this one included) with
 * interrupts enabled, and return when all have finished. */
void smp_run(void (*fn)(struct cpu *c, void *arg), void *arg);
void smp_interrupt(unsigned vector); /* isr_dispatch, for vectors 48-63 */
/* After page-table entries were cleared or narrowed: every other online CPU
 * flushes its TLB before this returns. Call with the page source's lock held
 * (shootdowns never overlap) and before freed frames can be handed out again.
 * A CPU spinning for a lock with interrupts off serves the request from its
 * spin loop, so no lock holder waits on a CPU that waits on it. */
void tlb_shootdown(void);
extern uint64_t tlb_shootdowns; /* requests made, since boot */
/* The local APIC timer on this CPU: period in APIC ticks (bus / 16), 0 stops it. */
void timer_set(uint32_t count);

/* A barrier for the CPUs of one smp_run. */
struct barrier {
	volatile uint32_t count, gen;
	uint32_t n;
};
void barrier_wait(struct barrier *b);

/* The interrupt-handler heap: a keel heap over a fixed region reserved at
 * boot (no page source, so an allocation there never grows anything). While
 * isr_alloc_on is set, each timer tick allocates a block, writes a pattern,
 * and frees the block ISR_RING ticks older after verifying it. */
extern struct keel_heap isr_heap;
extern volatile int isr_alloc_on;
/* Free what each CPU's handler still holds (runs on every CPU). */
void isr_alloc_drain(void);

/* A byte pattern derived from key and offset, and its check (1 if intact). */
void pattern_fill(void *p, size_t n, uint64_t key);
int pattern_ok(const void *p, size_t n, uint64_t key);

/* stress.c */
struct stress_result {
	unsigned ncpus, rounds;
	uint64_t allocs, frees, crossed, received; /* crossed: handed to another CPU */
	uint64_t errors;                            /* pattern, free or count mismatches */
	uint64_t isr_allocs, isr_frees, isr_fails, isr_bad;
	uint64_t ticks;
	int check_rc;          /* keel_check of the stress heap before destroy */
	int isr_check_rc;      /* keel_check of the interrupt-handler heap */
	int frames_back;       /* every frame the run took is free again */
	int counts_add_up;
	char what[96];         /* the first thing that went wrong, "" if none */
};
/* N rounds on every CPU over a fresh heap (kernel page source, a spinlock
 * hook) through each CPU's keel cache, the timer allocating in its handler
 * throughout. Returns 0 if everything held. */
int smp_stress(unsigned rounds, struct stress_result *r);

#endif
