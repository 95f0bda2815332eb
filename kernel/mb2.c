/* kernel/mb2.c: reads the multiboot2 information GRUB leaves in memory: the
 * command line, the memory map and the areas that must never become free
 * frames (the kernel image, the information itself, modules, frame 0). It
 * copies what it keeps, so the information's memory is only reserved, and
 * only BIOS-or-UEFI-neutral facts are used (type 1 is usable, all else not). */
#include "kernel.h"

#define MB2_TAG_END     0
#define MB2_TAG_CMDLINE 1
#define MB2_TAG_LOADER  2
#define MB2_TAG_MODULE  3
#define MB2_TAG_MMAP    6

struct mb2_mmap_entry {
	uint64_t pa, bytes;
	uint32_t type, reserved;
};

struct boot_info boot_info;

static void reserve(uint64_t pa, uint64_t bytes)
{
	if (boot_info.nreserved == MB2_MAX_RESERVED)
		panic("mb2_parse: more than %u reserved areas", MB2_MAX_RESERVED);
	boot_info.reserved[boot_info.nreserved++] = (struct mb2_region){ pa, bytes, 0 };
}

static void copy_str(char *dst, size_t n, const char *src, size_t max)
{
	size_t i = 0;
	for (; i + 1 < n && i < max && src[i]; i++)
		dst[i] = src[i];
	dst[i] = 0;
}

const struct mb2_tag *mb2_find_tag(uint64_t info_pa, uint32_t type)
{
	const uint8_t *info = phys_to_virt(info_pa);
	uint32_t total = *(const uint32_t *)(const void *)info;
	for (uint32_t off = 8; off + 8 <= total;) {
		const struct mb2_tag *tag = (const void *)(info + off);
		if (tag->type == MB2_TAG_END)
			break;
		if (tag->type == type)
			return tag;
		off += (uint32_t)ALIGN_UP(tag->size, 8);
	}
	return NULL;
}

void mb2_parse(uint64_t info_pa)
{
	if (info_pa & 7)
		panic("mb2_parse: info at %lx is not 8-byte aligned", info_pa);
	const uint8_t *info = phys_to_virt(info_pa);
	uint32_t total = *(const uint32_t *)(const void *)info;

	/* the kernel image, the information itself, frame 0 and the frame the
	 * other CPUs start in (smp.c) stay out of use */
	reserve((uintptr_t)kernel_start_pa, (uintptr_t)kernel_end_pa - (uintptr_t)kernel_start_pa);
	reserve(info_pa, total);
	reserve(0, PAGE_SIZE);
	reserve(TRAMPOLINE_PA, PAGE_SIZE);

	const struct mb2_tag *tag = mb2_find_tag(info_pa, MB2_TAG_CMDLINE);
	if (tag)
		copy_str(boot_info.cmdline, sizeof(boot_info.cmdline), (const char *)(tag + 1),
		         tag->size - 8);
	tag = mb2_find_tag(info_pa, MB2_TAG_LOADER);
	if (tag)
		copy_str(boot_info.loader, sizeof(boot_info.loader), (const char *)(tag + 1),
		         tag->size - 8);

	/* modules (none today, but a loader may add them) */
	for (uint32_t off = 8; off + 8 <= total;) {
		const struct mb2_tag *t = (const void *)(info + off);
		if (t->type == MB2_TAG_END)
			break;
		if (t->type == MB2_TAG_MODULE) {
			const uint32_t *m = (const uint32_t *)(t + 1);
			reserve(m[0], m[1] - m[0]);
		}
		off += (uint32_t)ALIGN_UP(t->size, 8);
	}

	tag = mb2_find_tag(info_pa, MB2_TAG_MMAP);
	if (!tag)
		panic("mb2_parse: the loader gave no memory map");
	const uint32_t *hdr = (const uint32_t *)(tag + 1);
	uint32_t entry_size = hdr[0];
	if (entry_size < sizeof(struct mb2_mmap_entry))
		panic("mb2_parse: memory map entries of %u bytes", entry_size);
	const uint8_t *p = (const uint8_t *)(hdr + 2), *end = (const uint8_t *)tag + tag->size;
	for (; p + entry_size <= end; p += entry_size) {
		const struct mb2_mmap_entry *e = (const void *)p;
		if (boot_info.nmmap == MB2_MAX_MMAP)
			panic("mb2_parse: more than %u memory map entries", MB2_MAX_MMAP);
		boot_info.mmap[boot_info.nmmap++] = (struct mb2_region){ e->pa, e->bytes, e->type };
	}
}

const char *mb2_type_name(uint32_t type)
{
	switch (type) {
	case 1:
		return "usable";
	case 2:
		return "reserved";
	case 3:
		return "ACPI reclaimable";
	case 4:
		return "ACPI NVS";
	case 5:
		return "bad RAM";
	default:
		return "other";
	}
}

const char *cmdline_get(const char *key)
{
	size_t n = kstrlen(key);
	const char *value = NULL;
	/* the last key=value wins: what QEMU appends overrides grub.cfg's */
	for (const char *p = boot_info.cmdline; *p;) {
		while (*p == ' ')
			p++;
		if (!kstrncmp(p, key, n) && p[n] == '=')
			value = p + n + 1;
		while (*p && *p != ' ')
			p++;
	}
	return value;
}
