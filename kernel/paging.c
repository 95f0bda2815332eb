/* kernel/paging.c: the kernel's 4-level page tables. pt_init replaces the
 * boot tables with: the image at KERNEL_VMA in 4 KiB pages (text read-only,
 * data no-execute, the stack guard page absent), a direct map of physical
 * memory in 2 MiB pages, and an empty heap range that source.c fills with
 * 4 KiB pages. Tables come from frame.c and go back when they empty.
 *
 *   PTE: 63 NX | 51..12 frame | 9 GUARD (software) | 7 PS | 1 W | 0 P
 */
#include "cpu.h"
#include "kernel.h"

static int is_ready; /* pt_init is done: the direct map covers all RAM */
static uint64_t pml4_pa;
static uint64_t nx;
static size_t ntables;

#define IDX(va, level) (((va) >> (12 + 9 * (level))) & 511)

static uint64_t table_new(void)
{
	uint64_t pa = frame_alloc();
	if (!pa)
		return 0;
	if (!is_ready && pa + PAGE_SIZE > BOOT_WINDOW)
		panic("table_new: frame %lx outside the boot window", pa);
	memset(phys_to_virt(pa), 0, PAGE_SIZE);
	ntables++;
	return pa;
}

/* The entry for va at level (0 = PTE, 1 = PDE, 2 = PDPTE), creating tables on
 * the way if create; NULL if a table is missing (or out of frames). */
static uint64_t *walk(uintptr_t va, int level, int create)
{
	uint64_t *table = phys_to_virt(pml4_pa);
	for (int l = 3; l > level; l--) {
		uint64_t *e = &table[IDX(va, l)];
		if (!(*e & PTE_P)) {
			if (!create)
				return NULL;
			uint64_t pa = table_new();
			if (!pa)
				return NULL;
			*e = pa | PTE_P | PTE_W;
		}
		if (*e & PTE_PS)
			panic("walk: %lx is inside a large page", (uint64_t)va);
		table = phys_to_virt(*e & PTE_ADDR);
	}
	return &table[IDX(va, level)];
}

static int table_is_empty(const uint64_t *t)
{
	for (int i = 0; i < 512; i++)
		if (t[i])
			return 0;
	return 1;
}

int pt_map(uintptr_t va, uint64_t pa, uint64_t flags)
{
	uint64_t *e = walk(va, 0, 1);
	if (!e)
		return -1;
	if (*e)
		panic("pt_map: %lx is already mapped (%lx)", (uint64_t)va, *e);
	*e = pa | flags;
	return 0;
}

uint64_t pt_get(uintptr_t va)
{
	uint64_t *e = walk(va, 0, 0);
	return e ? *e : 0;
}

void pt_set(uintptr_t va, uint64_t pte)
{
	uint64_t *e = walk(va, 0, 0);
	if (!e)
		panic("pt_set: no table for %lx", (uint64_t)va);
	*e = pte;
	invlpg((void *)va);
}

uint64_t pt_unmap(uintptr_t va)
{
	uint64_t *e = walk(va, 0, 0);
	if (!e)
		return 0;
	uint64_t old = *e;
	*e = 0;
	invlpg((void *)va);
	return old;
}

void pt_prune(uintptr_t va, size_t bytes)
{
	uintptr_t end = va + bytes;
	/* page tables first, then page directories, so a freed PT can empty its PD */
	for (int level = 1; level <= 2; level++) {
		uintptr_t span = (uintptr_t)1 << (12 + 9 * level);
		for (uintptr_t a = ALIGN_DOWN(va, span); a < end; a += span) {
			uint64_t *e = walk(a, level, 0);
			if (!e || !(*e & PTE_P) || (*e & PTE_PS))
				continue;
			if (!table_is_empty(phys_to_virt(*e & PTE_ADDR)))
				continue;
			uint64_t pa = *e & PTE_ADDR;
			*e = 0;
			frame_free(pa);
			ntables--;
		}
	}
	/* one invlpg drops every cached upper-level entry (SDM 4.10.4.1) */
	invlpg((void *)va);
}

static void map_image(uintptr_t from, uintptr_t to, uint64_t flags)
{
	for (uintptr_t va = from; va < to; va += PAGE_SIZE) {
		if (va == (uintptr_t)kstack_guard)
			continue; /* the guard page below the kernel stack stays absent */
		if (pt_map(va, va - KERNEL_VMA, flags))
			panic("pt_init: out of frames mapping the image");
	}
}

void pt_init(void)
{
	if (rdmsr(MSR_EFER) & EFER_NXE)
		nx = PTE_NX;
	pml4_pa = table_new();
	if (!pml4_pa)
		panic("pt_init: no frame for the PML4");

	/* the image, by section */
	map_image((uintptr_t)kernel_text, (uintptr_t)kernel_rodata, PTE_P);
	map_image((uintptr_t)kernel_rodata, (uintptr_t)kernel_data, PTE_P | nx);
	map_image((uintptr_t)kernel_data, (uintptr_t)kernel_end, PTE_P | PTE_W | nx);

	/* the direct map: every RAM-like area of the memory map, in 2 MiB pages */
	uint64_t dm_end = 0;
	for (unsigned i = 0; i < boot_info.nmmap; i++) {
		const struct mb2_region *r = &boot_info.mmap[i];
		if ((r->type == 1 || r->type == 3 || r->type == 4) && r->pa + r->bytes > dm_end)
			dm_end = r->pa + r->bytes;
	}
	dm_end = ALIGN_UP(dm_end, 1ull << 21);
	for (uint64_t pa = 0; pa < dm_end; pa += 1ull << 21) {
		uint64_t *e = walk(DIRECT_MAP_BASE + pa, 1, 1);
		if (!e)
			panic("pt_init: out of frames for the direct map");
		*e = pa | PTE_P | PTE_W | PTE_PS | nx;
	}

	/* the heap range's PDPT, so its PML4 entry never changes */
	if (!walk(HEAP_BASE, 2, 1))
		panic("pt_init: out of frames for the heap range");

	write_cr3(pml4_pa);
	is_ready = 1;
}

size_t pt_table_count(void)
{
	return ntables;
}

uint64_t pt_nx(void)
{
	return nx;
}
