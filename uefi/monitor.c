/* uefi/monitor.c: the UEFI application's interactive monitor (make run-efi),
 * on ConIn/ConOut, hence on the serial line too. The kernel monitor's
 * commands where they make sense without the kernel's paging: the commands act
 * on one heap over the boot-services source. Bad input changes nothing;
 * halt or Ctrl-D leaves QEMU. */
#include "uefi.h"

#define LINE_BYTES 128

static struct keel_heap heap;
static uintptr_t last; /* `$`: the address the last alloc/realloc printed */

/* "123", "0x1f", and with units also "64k", "3m", "1g". Returns 0 or -1. */
static int to_u64(const char *s, int units, uint64_t *out)
{
	int hex = s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
	const char *digits = hex ? s + 2 : s;
	uint64_t v = 0, radix = hex ? 16 : 10;
	const char *p = digits;
	for (;; p++) {
		int d = *p >= '0' && *p <= '9' ? *p - '0'
		        : hex && *p >= 'a' && *p <= 'f' ? *p - 'a' + 10
		        : hex && *p >= 'A' && *p <= 'F' ? *p - 'A' + 10 : -1;
		if (d < 0)
			break;
		if (v > (UINT64_MAX - (uint64_t)d) / radix)
			return -1;
		v = v * radix + (uint64_t)d;
	}
	if (p == digits)
		return -1;
	unsigned shift = 0;
	if (units && *p && !p[1]) {
		const char *u = "kKmMgG";
		for (unsigned i = 0; u[i]; i++)
			if (*p == u[i])
				shift = 10 * (i / 2 + 1);
		if (shift)
			p++;
	}
	if (*p || (shift && v > UINT64_MAX >> shift))
		return -1;
	*out = v << shift;
	return 0;
}

static int to_addr(const char *s, uintptr_t *out)
{
	uint64_t v = last;
	if (kstrcmp(s, "$") ? to_u64(s, 0, &v) : !last)
		return -1;
	*out = (uintptr_t)v;
	return 0;
}

static void show_block(void *p, uint64_t size, const char *how)
{
	last = (uintptr_t)p;
	kprintf("%p (%lu bytes, usable %lu%s%s)\n", p, size, keel_usable_size(&heap, p),
	        how ? ", " : "", how ? how : "");
}

static void cmd_alloc(int argc, char **argv)
{
	uint64_t size, align = 0;
	if (argc != 2 && argc != 3) {
		kprintf("usage: alloc SIZE [ALIGN]\n");
	} else if (to_u64(argv[1], 1, &size)) {
		kprintf("alloc: bad size '%s'\n", argv[1]);
	} else if (argc == 3 && (to_u64(argv[2], 1, &align) || !align ||
	                         (align & (align - 1)) || align > KEEL_MAX_ALIGN)) {
		kprintf("alloc: bad alignment '%s' (a power of two up to 1g)\n", argv[2]);
	} else {
		void *p = align ? keel_aligned_alloc(&heap, align, size) : keel_malloc(&heap, size);
		if (p)
			show_block(p, size, NULL);
		else
			kprintf("alloc: no memory for %lu bytes\n", size);
	}
}

static void cmd_realloc(int argc, char **argv)
{
	uintptr_t a;
	uint64_t size;
	if (argc != 3 || to_addr(argv[1], &a) || to_u64(argv[2], 1, &size)) {
		kprintf("usage: realloc ADDR SIZE\n");
		return;
	}
	if (a && !keel_usable_size(&heap, (void *)a)) {
		kprintf("realloc: %p is not a live block; nothing changed\n", (void *)a);
		return;
	}
	void *p = keel_realloc(&heap, (void *)a, size);
	if (a && !size)
		kprintf("freed %p\n", (void *)a);
	else if (!p)
		kprintf("realloc: no memory for %lu bytes; %p unchanged\n", size, (void *)a);
	else
		show_block(p, size, (uintptr_t)p == a ? "in place" : "moved");
}

static void cmd_free(int argc, char **argv)
{
	uintptr_t a;
	int rc;
	if (argc != 2)
		kprintf("usage: free ADDR\n");
	else if (to_addr(argv[1], &a))
		kprintf("free: bad address '%s'\n", argv[1]);
	else if (!a)
		kprintf("free: NULL: nothing to free\n");
	else if ((rc = keel_free(&heap, (void *)a)) != 0)
		kprintf("free: %p: %s; nothing changed\n", (void *)a, keel_strerror(rc));
	else
		kprintf("freed %p\n", (void *)a);
}

static void cmd_stats(void)
{
	struct keel_stats st;
	keel_stats(&heap, &st);
	kprintf("heap: %lu live blocks, %lu bytes in use (peak %lu), %lu segments, %lu large\n",
	        st.live_blocks, st.in_use_bytes, st.peak_in_use_bytes, st.segments, st.large_blocks);
	kprintf("  from boot services: %lu KiB (peak %lu KiB), %lu maps, %lu unmaps, %lu refused\n",
	        st.source_bytes >> 10, st.peak_source_bytes >> 10, st.source_maps,
	        st.source_unmaps, st.source_failures);
	kprintf("  free: %lu bytes, largest %lu, fragmentation %u%%; calls: %lu allocs, %lu frees\n",
	        st.free_bytes, st.largest_free, st.fragmentation_pct, st.alloc_count, st.free_count);
}

static void cmd_check(void)
{
	struct keel_fault f = { NULL, NULL };
	if (keel_check(&heap, &f))
		kprintf("check: FAILED: %s at %p\n", f.what, f.where);
	else
		kprintf("check: heap ok\n");
}

/* Conventional memory left, from the firmware's memory map. */
static void cmd_mem(void)
{
	EFI_BOOT_SERVICES *bs = uefi_st->BootServices;
	UINTN size = 0, key, desc_size;
	UINT32 version;
	EFI_MEMORY_DESCRIPTOR *map = NULL;
	bs->GetMemoryMap(&size, NULL, &key, &desc_size, &version);
	size += 4 * desc_size; /* the pool allocation below may add entries */
	if (EFI_ERROR(bs->AllocatePool(EfiLoaderData, size, (void **)&map)) ||
	    EFI_ERROR(bs->GetMemoryMap(&size, map, &key, &desc_size, &version))) {
		kprintf("mem: no memory map\n");
	} else {
		uint64_t pages = 0, ranges = 0, entries = size / desc_size;
		for (UINTN off = 0; off < size; off += desc_size) {
			const EFI_MEMORY_DESCRIPTOR *d = (const void *)((const char *)map + off);
			if (d->Type == EfiConventionalMemory) {
				pages += d->NumberOfPages;
				ranges++;
			}
		}
		kprintf("conventional memory: %lu KiB free in %lu ranges (%lu map entries)\n",
		        pages * 4, ranges, entries);
		kprintf("keel's source holds %lu KiB\n", (unsigned long)uefi_source_pages() * 4);
	}
	if (map)
		bs->FreePool(map);
}

static void cmd_help(void)
{
	kprintf("commands (numbers: decimal or 0x hex; sizes may end in k, m or g;\n"
	        "ADDR may be $, the address the last alloc/realloc printed):\n"
	        "  alloc SIZE [ALIGN]   allocate, print the address\n"
	        "  free ADDR            free a block\n"
	        "  realloc ADDR SIZE    resize a block (SIZE 0 frees it)\n"
	        "  stats                the heap's counters\n"
	        "  check                validate every invariant of the heap\n"
	        "  test [-v]            run the shared test cases (-v: every TAP line)\n"
	        "  mem                  free conventional memory, pages keel holds\n"
	        "  halt                 leave QEMU (also Ctrl-D)\n");
}

/* Returns 1 when the monitor should stop. */
static int execute(char *line)
{
	char *argv[4];
	int argc = 0;
	for (char *p = line; *p;) {
		if (*p == ' ') {
			*p++ = 0;
			continue;
		}
		if (argc == (int)ARRAY_LEN(argv)) {
			kprintf("too many words\n");
			return 0;
		}
		argv[argc++] = p;
		while (*p && *p != ' ')
			p++;
	}
	const char *c = argc ? argv[0] : "";
	if (!argc)
		return 0;
	if (!kstrcmp(c, "alloc"))
		cmd_alloc(argc, argv);
	else if (!kstrcmp(c, "free"))
		cmd_free(argc, argv);
	else if (!kstrcmp(c, "realloc"))
		cmd_realloc(argc, argv);
	else if (!kstrcmp(c, "test") && (argc == 1 || (argc == 2 && !kstrcmp(argv[1], "-v")))) {
		unsigned passed, failed;
		uefi_run_tests(argc == 1, &passed, &failed);
	} else if (argc > 1 && (!kstrcmp(c, "help") || !kstrcmp(c, "stats") ||
	                        !kstrcmp(c, "check") || !kstrcmp(c, "mem") || !kstrcmp(c, "halt")))
		kprintf("%s takes no arguments\n", c);
	else if (!kstrcmp(c, "help") || !kstrcmp(c, "?"))
		cmd_help();
	else if (!kstrcmp(c, "stats"))
		cmd_stats();
	else if (!kstrcmp(c, "check"))
		cmd_check();
	else if (!kstrcmp(c, "mem"))
		cmd_mem();
	else if (!kstrcmp(c, "halt"))
		return 1;
	else
		kprintf("unknown command '%s' (try help)\n", c);
	return 0;
}

unsigned uefi_monitor(void)
{
	static char line[LINE_BYTES + 1];
	size_t len = 0;
	struct keel_config cfg = { .source = &uefi_source };
	int rc = keel_heap_init(&heap, &cfg);
	if (rc) {
		kprintf("monitor: keel_heap_init: %s\n", keel_strerror(rc));
		return QEMU_EXIT_FAIL;
	}
	kprintf("keel monitor: type help for commands, halt (or Ctrl-D) to leave\nkeel> ");
	int prev = 0;
	for (;;) {
		int c = serial_getc();
		if (c < 0) {
			/* idle in the firmware until a key comes */
			UINTN which;
			uefi_st->BootServices->WaitForEvent(1, &uefi_st->ConIn->WaitForKey, &which);
			continue;
		}
		int is_lf_after_cr = c == '\n' && prev == '\r';
		prev = c;
		if (is_lf_after_cr)
			continue; /* CR LF is one end of line */
		if (c == '\r' || c == '\n' || c == 4) {
			kprintf("\n");
			line[len] = 0;
			len = 0;
			if (execute(line) || c == 4)
				break;
			kprintf("keel> ");
		} else if ((c == 8 || c == 127) && len) {
			len--;
			kprintf("\b \b");
		} else if (c >= ' ' && c < 127 && len < LINE_BYTES) {
			line[len++] = (char)c;
			serial_putc((char)c);
		}
	}
	kprintf("halt\n");
	keel_heap_destroy(&heap);
	return QEMU_EXIT_PASS;
}
