/* kernel/source.c: the kernel page source, keel's seam to this kernel. map
 * takes an aligned range of the heap's virtual range (next fit over a sorted
 * table of free ranges) and backs each page with a fresh, zeroed frame; unmap
 * gives back frames and range (invlpg on every page); protect turns pages into
 * guards (frame returned, PTE absent but marked GUARD) or read-only.
 * One spinlock (interrupts off while held) covers the range table and the
 * page tables, so any CPU may call the source; unmap and protect end with a
 * TLB shootdown (smp.c) before the lock, and so the frames, are let go. Also the heaps' lock hooks
 * (a spinlock whose token is the saved RFLAGS) and the kernel's own heap.
 *   V1  free ranges are sorted, disjoint, non-adjacent and inside the range
 *   V2  every page of a live mapping is present or GUARD; no other heap PTE is */
#include "../alloc/keel.h"
#include "cpu.h"
#include "kernel.h"
#include "percpu.h"

#define VA_MAX_RANGES 2048

struct va_range {
	uintptr_t start, end;
};

static struct va_range va_free[VA_MAX_RANGES];
static size_t va_nfree;
static size_t va_used_bytes;
static size_t va_lost_bytes; /* freed while the table was full: never reused */

struct keel_heap kernel_heap;
static struct spinlock source_lock;

static void va_remove(size_t i)
{
	memmove(&va_free[i], &va_free[i + 1], (va_nfree - i - 1) * sizeof(va_free[0]));
	va_nfree--;
}

static int va_insert(size_t i, uintptr_t start, uintptr_t end)
{
	if (va_nfree == VA_MAX_RANGES)
		return -1;
	memmove(&va_free[i + 1], &va_free[i], (va_nfree - i) * sizeof(va_free[0]));
	va_free[i] = (struct va_range){ start, end };
	va_nfree++;
	return 0;
}

/* Next fit: the lowest address at or after the cursor (the end of the last
 * mapping) with room for bytes at align, wrapping once. Addresses are not
 * reused until the range wraps (512 GiB later), so a stale pointer into a
 * returned mapping faults instead of reaching a newer one. 0 if none. */
static uintptr_t va_cursor = HEAP_BASE;

static uintptr_t va_take(size_t i, uintptr_t va, size_t bytes)
{
	struct va_range *r = &va_free[i];
	uintptr_t lo = r->start, hi = r->end;
	if (va > lo && va + bytes < hi) {
		/* carve from the middle: the range splits in two */
		if (va_insert(i + 1, va + bytes, hi))
			return 0;
		va_free[i].end = va;
	} else if (va > lo) {
		r->end = va;
	} else if (va + bytes < hi) {
		r->start = va + bytes;
	} else {
		va_remove(i);
	}
	va_used_bytes += bytes;
	va_cursor = va + bytes;
	return va;
}

static uintptr_t va_alloc(size_t bytes, size_t align)
{
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < va_nfree; i++) {
			struct va_range *r = &va_free[i];
			uintptr_t from = r->start;
			if (pass == 0 && r->end <= va_cursor)
				continue;
			if (pass == 0 && from < va_cursor)
				from = va_cursor;
			uintptr_t va = ALIGN_UP(from, align);
			if (va < from || va > r->end || r->end - va < bytes)
				continue;
			return va_take(i, va, bytes);
		}
	}
	return 0;
}

static void va_release(uintptr_t va, size_t bytes)
{
	uintptr_t end = va + bytes;
	size_t i = 0;
	while (i < va_nfree && va_free[i].start < va)
		i++;
	va_used_bytes -= bytes;
	int join_prev = i > 0 && va_free[i - 1].end == va;
	int join_next = i < va_nfree && va_free[i].start == end;
	if (join_prev && join_next) {
		va_free[i - 1].end = va_free[i].end;
		va_remove(i);
	} else if (join_prev) {
		va_free[i - 1].end = end;
	} else if (join_next) {
		va_free[i].start = va;
	} else if (va_insert(i, va, end)) {
		va_lost_bytes += bytes;
	}
}

/* Unmap [va, va+bytes) page by page, returning the frames; then the range's
 * empty tables. */
static void unmap_pages(uintptr_t va, size_t bytes)
{
	for (size_t off = 0; off < bytes; off += PAGE_SIZE) {
		uint64_t pte = pt_unmap(va + off);
		if (pte & PTE_P)
			frame_free(pte & PTE_ADDR);
	}
	pt_prune(va, bytes);
}

static void *source_map(void *ctx, size_t bytes, size_t align)
{
	(void)ctx;
	if (!bytes || bytes % PAGE_SIZE || align % PAGE_SIZE || (align & (align - 1)))
		return NULL;
	uintptr_t flags = spin_lock(&source_lock);
	uintptr_t va = va_alloc(bytes, align);
	if (!va)
		goto fail;
	for (size_t off = 0; off < bytes; off += PAGE_SIZE) {
		uint64_t pa = frame_alloc();
		if (!pa || pt_map(va + off, pa, PTE_P | PTE_W | pt_nx())) {
			if (pa)
				frame_free(pa);
			unmap_pages(va, off);
			va_release(va, bytes);
			goto fail;
		}
		memset(phys_to_virt(pa), 0, PAGE_SIZE);
	}
	spin_unlock(&source_lock, flags);
	return (void *)va;
fail:
	spin_unlock(&source_lock, flags);
	return NULL;
}

/* 1 if [va, va+bytes) is page-aligned, inside the heap range and every page
 * is present or a guard (V2). */
static int range_is_mapped(uintptr_t va, size_t bytes)
{
	if (va % PAGE_SIZE || bytes % PAGE_SIZE || !bytes || va < HEAP_BASE ||
	    va - HEAP_BASE > HEAP_BYTES - bytes)
		return 0;
	for (size_t off = 0; off < bytes; off += PAGE_SIZE)
		if (!(pt_get(va + off) & (PTE_P | PTE_GUARD)))
			return 0;
	return 1;
}

static int source_unmap(void *ctx, void *p, size_t bytes)
{
	(void)ctx;
	uintptr_t va = (uintptr_t)p;
	uintptr_t flags = spin_lock(&source_lock);
	if (!range_is_mapped(va, bytes)) {
		spin_unlock(&source_lock, flags);
		return -22; /* EINVAL: not a mapping of this source */
	}
	unmap_pages(va, bytes);
	va_release(va, bytes);
	tlb_shootdown();
	spin_unlock(&source_lock, flags);
	return 0;
}

static int source_protect(void *ctx, void *p, size_t bytes, int prot)
{
	(void)ctx;
	uintptr_t va = (uintptr_t)p;
	if (prot != KEEL_PROT_NONE && prot != KEEL_PROT_READ && prot != KEEL_PROT_RW)
		return -22;
	uintptr_t flags = spin_lock(&source_lock);
	if (!range_is_mapped(va, bytes)) {
		spin_unlock(&source_lock, flags);
		return -22;
	}
	for (size_t off = 0; off < bytes; off += PAGE_SIZE) {
		uint64_t pte = pt_get(va + off);
		if (prot == KEEL_PROT_NONE) {
			/* a guard page holds no frame */
			if (pte & PTE_P)
				frame_free(pte & PTE_ADDR);
			pt_set(va + off, PTE_GUARD);
			continue;
		}
		if (!(pte & PTE_P)) {
			/* a guard page becomes memory again: a fresh zeroed frame */
			uint64_t pa = frame_alloc();
			if (!pa) {
				tlb_shootdown();
				spin_unlock(&source_lock, flags);
				return -12; /* ENOMEM; pages before this one are changed */
			}
			memset(phys_to_virt(pa), 0, PAGE_SIZE);
			pte = pa | PTE_P | pt_nx();
		}
		pte = prot == KEEL_PROT_RW ? pte | PTE_W : pte & ~PTE_W;
		pt_set(va + off, pte);
	}
	tlb_shootdown();
	spin_unlock(&source_lock, flags);
	return 0;
}

const struct keel_source kernel_source = {
	.map = source_map,
	.unmap = source_unmap,
	.protect = source_protect,
	.ctx = NULL,
	.zeroed = 1,
};

/* The heap lock: a spinlock taken with interrupts saved and disabled; the
 * token is RFLAGS as it was, so a caller that ran with interrupts off keeps
 * them off. Every heap given kernel_lock shares heap_lock. */
const struct keel_lock kernel_lock = { spin_hook_lock, spin_hook_unlock, &heap_lock };

void source_init(void)
{
	va_free[0] = (struct va_range){ HEAP_BASE, HEAP_BASE + HEAP_BYTES };
	va_nfree = 1;
	struct keel_config cfg = { .source = &kernel_source, .lock = &kernel_lock };
	int err = keel_heap_init(&kernel_heap, &cfg);
	if (err)
		panic("source_init: keel_heap_init: %s", keel_strerror(err));
}

size_t source_va_bytes(void)
{
	return va_used_bytes;
}

size_t source_va_ranges(void)
{
	return va_nfree;
}

int source_owns(const void *va, size_t bytes)
{
	uintptr_t flags = spin_lock(&source_lock);
	int ok = range_is_mapped((uintptr_t)va, bytes);
	spin_unlock(&source_lock, flags);
	return ok;
}
