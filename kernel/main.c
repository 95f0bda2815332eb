/* kernel/main.c: kernel_main, called by boot/entry.S in long mode. Brings up
 * the console, GDT/IDT, memory map, CPUs (acpi.c, smp.c), frames, paging and
 * the kernel heap, then runs the test suite and exits QEMU (keel.mode=test)
 * or opens the serial monitor (keel.mode=monitor). */
#include "../alloc/keel.h"
#include "cpu.h"
#include "kernel.h"
#include "keel_assert.h"
#include "percpu.h"

static uint64_t tsc_per_sec;

void keel_assert_fail(const char *file, int line, const char *expr)
{
	panic("keel_assert_fail: %s:%d: %s", file, line, expr);
}

/* TSC ticks per second, measured once against PIT channel 2 (10 ms). */
static uint64_t tsc_calibrate(void)
{
	const unsigned count = 11932; /* 1193182 Hz / 100 */
	/* gate channel 2 on, speaker off */
	outb(0x61, (uint8_t)((inb(0x61) & ~0x02) | 0x01));
	/* channel 2, lobyte/hibyte, mode 0 (interrupt on terminal count) */
	outb(0x43, 0xb0);
	outb(0x42, count & 0xff);
	outb(0x42, count >> 8);
	uint64_t t0 = rdtsc();
	for (unsigned long spins = 0; !(inb(0x61) & 0x20); spins++)
		if (spins > 100000000ul)
			return 0;
	return (rdtsc() - t0) * 100;
}

uint64_t tsc_hz(void)
{
	return tsc_per_sec;
}

static void print_memory_map(void)
{
	kprintf("memory map (%s):\n", boot_info.loader[0] ? boot_info.loader : "unknown loader");
	for (unsigned i = 0; i < boot_info.nmmap; i++) {
		const struct mb2_region *r = &boot_info.mmap[i];
		kprintf("  %016lx-%016lx %8lu KiB  %s\n", r->pa, r->pa + r->bytes - 1,
		        r->bytes / 1024, mb2_type_name(r->type));
	}
	kprintf("reserved: kernel %lx-%lx", (uint64_t)(uintptr_t)kernel_start_pa,
	        (uint64_t)(uintptr_t)kernel_end_pa - 1);
	for (unsigned i = 1; i < boot_info.nreserved; i++) {
		const struct mb2_region *r = &boot_info.reserved[i];
		kprintf(", %lx-%lx", r->pa, r->pa + r->bytes - 1);
	}
	kprintf("\nframes: %lu free of %lu usable (%lu MiB), %lu page tables\n",
	        frame_free_count(), frame_total_count(), frame_total_count() / 256,
	        pt_table_count());
}

/* keel.fault=triple|hang: fail the way broken boots do, so tests/qemu can
 * show that it notices (keel.fault=pf strikes later, in run_tests.c). */
static void fault_inject_at_boot(void)
{
	const char *what = cmdline_get("keel.fault");
	if (!what)
		return;
	if (!kstrncmp(what, "triple", 6)) {
		kprintf("keel.fault=triple: loading an empty IDT, then int3\n");
		struct {
			uint16_t limit;
			uint64_t base;
		} __attribute__((packed)) none = { 0, 0 };
		__asm__ volatile("lidt %0; int3" : : "m"(none));
	}
	if (!kstrncmp(what, "hang", 4)) {
		kprintf("keel.fault=hang: stopping here\n");
		for (;;)
			__asm__ volatile("cli; hlt");
	}
}

void kernel_main(uint32_t magic, uint32_t info_pa);
void kernel_main(uint32_t magic, uint32_t info_pa)
{
	percpu_init_bsp();
	serial_init();
	kprintf("\nkeel %s kernel\n", KEEL_VERSION);
	if (magic != MB2_BOOT_MAGIC)
		panic("kernel_main: bad multiboot2 magic %x", magic);
	gdt_init();
	idt_init();
	mb2_parse(info_pa);
	acpi_init(info_pa);
	frame_init();
	pt_init();
	source_init();
	monitor_init();
	irq_enable();
	tsc_per_sec = tsc_calibrate();
	smp_init();

	const char *mode = cmdline_get("keel.mode");
	int is_test = !mode || !kstrncmp(mode, "test", 4);
	kprintf("command line: \"%s\" (%s mode)\n", boot_info.cmdline, is_test ? "test" : "monitor");
	print_memory_map();
	kprintf("cpus: %u online (MADT: %s, %u enabled, %u disabled, RSDP revision %u)\n", ncpus,
	        acpi_info.has_madt ? "found" : "none", acpi_info.ncpus, acpi_info.ndisabled,
	        acpi_info.rsdp_revision);
	if (is_test) {
		fault_inject_at_boot();
		int failed = run_tests(0, NULL, NULL);
		qemu_exit(failed ? QEMU_EXIT_FAIL : QEMU_EXIT_PASS);
	}
	unsigned passed, failed;
	run_tests(RUN_QUIET | RUN_KERNEL_ONLY, &passed, &failed);
	kprintf("self-test: %u passed, %u failed (the kernel's cases; `test` runs all)\n", passed,
	        failed);
	monitor_stats();
	monitor_run();
}
