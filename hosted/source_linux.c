/* source_linux.c: the page source under every hosted heap. Anonymous private
 * mappings from mmap, trimmed to the requested alignment; no libc, only the
 * raw syscalls of syscall.h, so it links into libc-free programs too. */
#include "source_linux.h"
#include "syscall.h"

#define PAGE ((uintptr_t)KEEL_PAGE_SIZE)

static int linux_unmap(void *ctx, void *p, size_t bytes);

/* Maps exactly bytes at an align-aligned address. mmap only promises page
 * alignment, so for a larger align over-map by align - PAGE and give back the
 * head and tail:
 *   [ head | bytes, aligned | tail ]   head + tail == align - PAGE
 * Trimming the ends shrinks the one mapping, never splits it, so the munmaps
 * cannot fail for want of mapping slots. Returns NULL (and maps nothing) on a
 * bad argument or when the kernel refuses. */
static void *linux_map(void *ctx, size_t bytes, size_t align)
{
	(void)ctx;
	if (bytes == 0 || (bytes & (PAGE - 1)) != 0)
		return NULL;
	if (align < PAGE)
		align = PAGE;
	if ((align & (align - 1)) != 0)
		return NULL;
	size_t extra = align - PAGE;
	if (bytes > (size_t)-1 - extra)
		return NULL;
	size_t span = bytes + extra;
	long ret = sys_call6(SYS_mmap, 0, (long)span, PROT_READ | PROT_WRITE,
	                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (sys_is_error(ret))
		return NULL;
	uintptr_t base = (uintptr_t)ret;
	uintptr_t start = (base + (align - 1)) & ~(uintptr_t)(align - 1);
	size_t head = start - base;
	size_t tail = extra - head;
	if (head != 0 && sys_is_error(sys_call2(SYS_munmap, (long)base, (long)head))) {
		sys_call2(SYS_munmap, (long)base, (long)span);
		return NULL;
	}
	if (tail != 0 && sys_is_error(sys_call2(SYS_munmap, (long)(start + bytes), (long)tail))) {
		linux_unmap(ctx, (void *)start, bytes);
		return NULL;
	}
	return (void *)start;
}

/* 0 or -errno (-EINVAL for an unaligned or empty range). */
static int linux_unmap(void *ctx, void *p, size_t bytes)
{
	(void)ctx;
	return (int)sys_call2(SYS_munmap, (long)(uintptr_t)p, (long)bytes);
}

/* KEEL_PROT_* to PROT_*; 0 or -errno, -EINVAL for an unknown mode. */
static int linux_protect(void *ctx, void *p, size_t bytes, int prot)
{
	(void)ctx;
	long linux_prot;
	switch (prot) {
	case KEEL_PROT_NONE:
		linux_prot = PROT_NONE;
		break;
	case KEEL_PROT_READ:
		linux_prot = PROT_READ;
		break;
	case KEEL_PROT_RW:
		linux_prot = PROT_READ | PROT_WRITE;
		break;
	default:
		return -KEEL_LINUX_EINVAL;
	}
	return (int)sys_call3(SYS_mprotect, (long)(uintptr_t)p, (long)bytes, linux_prot);
}

/* The pages' memory goes back to the kernel and the range stays mapped: the
 * next touch faults in a zeroed page. 0 or -errno. */
static int linux_decommit(void *ctx, void *p, size_t bytes)
{
	(void)ctx;
	return (int)sys_call3(SYS_madvise, (long)(uintptr_t)p, (long)bytes, MADV_DONTNEED);
}

const struct keel_source keel_linux_source = {
	.map = linux_map,
	.unmap = linux_unmap,
	.protect = linux_protect,
	.ctx = 0,
	.zeroed = 1,
	.decommit = linux_decommit,
};
