/* uefi/source.c: keel's page source under UEFI boot services. Memory is
 * identity-mapped, so a mapping is a run of physical pages from AllocatePages
 * (EfiLoaderData, anywhere) and goes back with FreePages. An alignment above a
 * page is met by taking bytes + align - 4 KiB and freeing the head and tail
 * around the aligned range: boot services free any allocated page range, part
 * of one included. No protect: the firmware's page tables are not keel's. */
#include "uefi.h"

static size_t pages_out;

static void *uefi_map(void *ctx, size_t bytes, size_t align)
{
	(void)ctx;
	EFI_BOOT_SERVICES *bs = uefi_st->BootServices;
	if (!bytes || bytes % EFI_PAGE_SIZE || align < EFI_PAGE_SIZE || (align & (align - 1)))
		return NULL;
	size_t slack = align - EFI_PAGE_SIZE;
	if (bytes > SIZE_MAX - slack)
		return NULL;
	EFI_PHYSICAL_ADDRESS pa = 0;
	if (EFI_ERROR(bs->AllocatePages(AllocateAnyPages, EfiLoaderData,
	                                (bytes + slack) / EFI_PAGE_SIZE, &pa)))
		return NULL;
	uint64_t start = ALIGN_UP(pa, align), end = pa + bytes + slack;
	if (start > pa)
		bs->FreePages(pa, (start - pa) / EFI_PAGE_SIZE);
	if (end > start + bytes)
		bs->FreePages(start + bytes, (end - start - bytes) / EFI_PAGE_SIZE);
	if (!start) {
		/* page 0 reads as NULL: refuse it rather than lose it */
		bs->FreePages(start, bytes / EFI_PAGE_SIZE);
		return NULL;
	}
	pages_out += bytes / EFI_PAGE_SIZE;
	return (void *)(uintptr_t)start;
}

/* The firmware refuses a range it did not hand out (EFI_NOT_FOUND). */
static int uefi_unmap(void *ctx, void *p, size_t bytes)
{
	(void)ctx;
	if ((uintptr_t)p % EFI_PAGE_SIZE || !bytes || bytes % EFI_PAGE_SIZE)
		return -22; /* EINVAL */
	if (EFI_ERROR(uefi_st->BootServices->FreePages((uintptr_t)p, bytes / EFI_PAGE_SIZE)))
		return -14; /* EFAULT */
	pages_out -= bytes / EFI_PAGE_SIZE;
	return 0;
}

const struct keel_source uefi_source = {
	.map = uefi_map,
	.unmap = uefi_unmap,
	.protect = NULL,
	.ctx = NULL,
	.zeroed = 0, /* AllocatePages leaves old contents */
};

size_t uefi_source_pages(void)
{
	return pages_out;
}
