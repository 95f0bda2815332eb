/* kernel/frame.c: the physical frame allocator, one bit per 4 KiB frame up to
 * the end of usable RAM (1 = in use or not RAM). The bitmap itself lives in
 * the first usable RAM that no reserved area covers. Allocation scans from a
 * hint, lowest frames first (paging.c needs early tables in the boot window).
 *   F1  free == number of clear bits
 *   F2  a clear bit is a frame of a usable region outside every reserved area */
#include "cpu.h"
#include "kernel.h"
#include "percpu.h"

static uint64_t bitmap_pa;
/* through the direct map: the boot tables' (low 4 GiB) until pt_init */
#define bitmap ((uint64_t *)phys_to_virt(bitmap_pa))
static size_t nwords, nframes_free, nframes_total;
static size_t hint; /* no clear bit below word hint */
static uint64_t max_pa;
static struct spinlock frame_lock; /* any CPU may take or give frames */

static int overlaps_reserved(uint64_t pa, uint64_t bytes, uint64_t *next)
{
	for (unsigned i = 0; i < boot_info.nreserved; i++) {
		const struct mb2_region *r = &boot_info.reserved[i];
		if (pa < r->pa + r->bytes && r->pa < pa + bytes) {
			*next = r->pa + r->bytes;
			return 1;
		}
	}
	return 0;
}

static void bit_clear(size_t f)
{
	bitmap[f / 64] &= ~(1ull << (f % 64));
}

static int bit_test(size_t f)
{
	return (bitmap[f / 64] >> (f % 64)) & 1;
}

void frame_init(void)
{
	for (unsigned i = 0; i < boot_info.nmmap; i++) {
		const struct mb2_region *r = &boot_info.mmap[i];
		if (r->type == MB2_MEM_AVAILABLE && ALIGN_DOWN(r->pa + r->bytes, PAGE_SIZE) > max_pa)
			max_pa = ALIGN_DOWN(r->pa + r->bytes, PAGE_SIZE);
	}
	nwords = (size_t)ALIGN_UP(max_pa / PAGE_SIZE, 64) / 64;
	uint64_t bitmap_bytes = ALIGN_UP(nwords * 8, PAGE_SIZE);

	/* place the bitmap in usable RAM inside the boot window, clear of reserved areas */
	for (unsigned i = 0; i < boot_info.nmmap && !bitmap_pa; i++) {
		const struct mb2_region *r = &boot_info.mmap[i];
		if (r->type != MB2_MEM_AVAILABLE)
			continue;
		uint64_t pa = ALIGN_UP(r->pa, PAGE_SIZE), end = ALIGN_DOWN(r->pa + r->bytes, PAGE_SIZE);
		uint64_t next;
		while (pa + bitmap_bytes <= end && overlaps_reserved(pa, bitmap_bytes, &next))
			pa = ALIGN_UP(next, PAGE_SIZE);
		if (pa + bitmap_bytes <= end && pa + bitmap_bytes <= BOOT_WINDOW)
			bitmap_pa = pa;
	}
	if (!bitmap_pa)
		panic("frame_init: no room for a %lu-byte bitmap", bitmap_bytes);
	memset(bitmap, 0xff, nwords * 8);

	/* clear the bits of usable frames, then set those of reserved areas again */
	for (unsigned i = 0; i < boot_info.nmmap; i++) {
		const struct mb2_region *r = &boot_info.mmap[i];
		if (r->type != MB2_MEM_AVAILABLE)
			continue;
		for (uint64_t pa = ALIGN_UP(r->pa, PAGE_SIZE); pa + PAGE_SIZE <= r->pa + r->bytes;
		     pa += PAGE_SIZE) {
			uint64_t next;
			if (overlaps_reserved(pa, PAGE_SIZE, &next) ||
			    (pa >= bitmap_pa && pa < bitmap_pa + bitmap_bytes))
				continue;
			if (!bit_test(pa / PAGE_SIZE))
				continue; /* overlapping map entries */
			bit_clear(pa / PAGE_SIZE);
			nframes_free++;
		}
	}
	nframes_total = nframes_free;
}

uint64_t frame_alloc(void)
{
	uintptr_t flags = spin_lock(&frame_lock);
	for (size_t w = hint; w < nwords; w++) {
		if (bitmap[w] == ~0ull)
			continue;
		unsigned b = (unsigned)__builtin_ctzll(~bitmap[w]);
		bitmap[w] |= 1ull << b;
		nframes_free--;
		hint = w;
		spin_unlock(&frame_lock, flags);
		return ((uint64_t)w * 64 + b) * PAGE_SIZE;
	}
	hint = nwords;
	spin_unlock(&frame_lock, flags);
	return 0;
}

void frame_free(uint64_t pa)
{
	size_t f = pa / PAGE_SIZE;
	if ((pa & (PAGE_SIZE - 1)) || pa == 0 || f >= nwords * 64)
		panic("frame_free: bad frame %lx", pa);
	uintptr_t flags = spin_lock(&frame_lock);
	if (!bit_test(f))
		panic("frame_free: frame %lx is already free", pa);
	bitmap[f / 64] &= ~(1ull << (f % 64));
	nframes_free++;
	if (f / 64 < hint)
		hint = f / 64;
	spin_unlock(&frame_lock, flags);
}

size_t frame_free_count(void)
{
	return nframes_free;
}

size_t frame_total_count(void)
{
	return nframes_total;
}

uint64_t frame_max_pa(void)
{
	return max_pa;
}
