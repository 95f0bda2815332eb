/* kernel/kernel.h: what kernel files share: the console and formatted
 * printing, panic and QEMU exit, and each subsystem's entry points (grouped by
 * the file that defines them). The allocator itself is reached only through
 * alloc/keel.h. */
#ifndef KERNEL_KERNEL_H
#define KERNEL_KERNEL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "layout.h"

#define PAGE_SIZE 4096u
#define ALIGN_UP(x, a)   (((x) + ((a)-1)) & ~(uint64_t)((a)-1))
#define ALIGN_DOWN(x, a) ((x) & ~(uint64_t)((a)-1))
#define ARRAY_LEN(a)     (sizeof(a) / sizeof((a)[0]))

/* Exit codes for isa-debug-exit: QEMU exits with (v << 1) | 1. */
#define QEMU_EXIT_PASS 0x10 /* status 33 */
#define QEMU_EXIT_FAIL 0x11 /* status 35 */

/* lib.c: the freestanding C library subset compilers may call. */
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t kstrlen(const char *s);
int kstrcmp(const char *a, const char *b);
int kstrncmp(const char *a, const char *b, size_t n);

/* serial.c: COM1 (115200 8N1, polled) plus QEMU's debug console on port 0xe9. */
void serial_init(void);
void serial_putc(char c);
int serial_getc(void); /* -1 when no byte is waiting */
void console_write(const char *s, size_t n);

/* print.c: printf subset %[-0][width][l|ll|z](d|i|u|x|X|p|s|c|%). */
void kvprintf(void (*put)(char c, void *arg), void *arg, const char *fmt, va_list ap);
void kprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int ksnprintf(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void panic(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void qemu_exit(unsigned code) __attribute__((noreturn));

/* gdt.c: each CPU has its own GDT and TSS (a TSS is busy once loaded), and
 * the TSS's interrupt stacks: #DF, #PF and NMI/#MC run on them. */
struct tss {
	uint32_t reserved0;
	uint64_t rsp[3];
	uint64_t reserved1;
	uint64_t ist[7];
	uint64_t reserved2;
	uint16_t reserved3;
	uint16_t iomap_base;
} __attribute__((packed));
_Static_assert(sizeof(struct tss) == 104, "TSS layout");
struct cpu_tables {
	uint64_t gdt[5]; /* null, kernel code (64-bit), kernel data, TSS (two slots) */
	struct tss tss;
	uint8_t ist_stacks[3][IST_STACK_BYTES] __attribute__((aligned(16)));
};
void gdt_init(void);                 /* the bootstrap CPU's tables */
void gdt_load(struct cpu_tables *t); /* fill t and load it on this CPU */

/* idt.c: exceptions print the fault and exit QEMU with a failing status,
 * unless a fault_try is armed: then they resume there. */
struct fault_info {
	unsigned vector;
	uint64_t error, rip, cr2;
};
void idt_init(void);
void idt_load(void); /* an application processor loads the same IDT */
/* Run fn(arg). Returns 0 if it returned, or 1 if it raised a CPU exception;
 * then *out describes it and execution resumes here (fn is abandoned). */
int fault_try(void (*fn)(void *arg), void *arg, struct fault_info *out);

/* mb2.c: the parts of the multiboot2 information the kernel keeps. */
#define MB2_MAX_MMAP 64
#define MB2_MAX_RESERVED 16
#define MB2_MEM_AVAILABLE 1
struct mb2_region {
	uint64_t pa, bytes;
	uint32_t type;
};
struct boot_info {
	char cmdline[256];
	char loader[64];
	struct mb2_region mmap[MB2_MAX_MMAP];
	unsigned nmmap;
	struct mb2_region reserved[MB2_MAX_RESERVED]; /* never handed out as frames */
	unsigned nreserved;
};
extern struct boot_info boot_info;
void mb2_parse(uint64_t info_pa);
/* The first tag of that type in the information, or NULL. */
const struct mb2_tag *mb2_find_tag(uint64_t info_pa, uint32_t type);
struct mb2_tag {
	uint32_t type, size;
};
const char *mb2_type_name(uint32_t type);
const char *cmdline_get(const char *key); /* value after the last "key=" (to a space), or NULL */

/* frame.c: one bit per 4 KiB frame of usable RAM. */
void frame_init(void);
uint64_t frame_alloc(void); /* a free frame's physical address, or 0 */
void frame_free(uint64_t pa);
size_t frame_free_count(void);
size_t frame_total_count(void);
uint64_t frame_max_pa(void);

/* paging.c: 4-level tables; the direct map and the heap range. */
#define PTE_P    (1ull << 0)
#define PTE_W    (1ull << 1)
#define PTE_PWT  (1ull << 3)
#define PTE_PCD  (1ull << 4)
#define PTE_PS   (1ull << 7)
#define PTE_G    (1ull << 8)
#define PTE_GUARD (1ull << 9) /* software: a guard page of a live mapping (not present) */
#define PTE_NX   (1ull << 63)
#define PTE_ADDR 0x000ffffffffff000ull
/* Physical memory through the direct map (before pt_init: below BOOT_WINDOW only). */
static inline void *phys_to_virt(uint64_t pa)
{
	return (void *)(uintptr_t)(DIRECT_MAP_BASE + pa);
}
void pt_init(void);
int pt_map(uintptr_t va, uint64_t pa, uint64_t flags); /* 0, or -1 when out of frames */
uint64_t pt_get(uintptr_t va);                         /* the PTE of va, 0 if none */
void pt_set(uintptr_t va, uint64_t pte);               /* va's PT must exist; invlpg */
uint64_t pt_unmap(uintptr_t va);                       /* clear, invlpg, return old PTE */
void pt_prune(uintptr_t va, size_t bytes);             /* free empty tables of the range */
size_t pt_table_count(void);
uint64_t pt_nx(void); /* PTE_NX if the CPU has it, else 0 */

/* source.c: the kernel page source over frames and the heap range. */
struct keel_source;
struct keel_lock;
struct keel_heap;
extern const struct keel_source kernel_source;
extern const struct keel_lock kernel_lock;
extern struct keel_heap kernel_heap;
void source_init(void);
size_t source_va_bytes(void);  /* heap range bytes handed out */
size_t source_va_ranges(void); /* free ranges the VA allocator tracks */
int source_owns(const void *va, size_t bytes);

/* run_tests.c */
/* Run the shared cases and the kernel's, printing TAP on the console. Returns
 * the number of failed cases; passed/failed may be NULL. */
#define RUN_QUIET       1 /* print only failures and diagnostics */
#define RUN_KERNEL_ONLY 2 /* a quick self-test: the kernel's own cases but exhaustion */
int run_tests(unsigned flags, unsigned *passed, unsigned *failed);

/* monitor.c */
void monitor_init(void); /* its state comes from the kernel heap, at boot */
void monitor_stats(void); /* the `stats` command */
void monitor_run(void) __attribute__((noreturn));

/* boot/entry.S and linker.ld */
extern char kstack_guard[], kstack_top[];
extern char kernel_text[], kernel_rodata[], kernel_data[], kernel_end[];
extern char kernel_start_pa[], kernel_end_pa[];

/* main.c */
uint64_t tsc_hz(void);

#endif
