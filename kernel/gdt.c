/* kernel/gdt.c: the kernel's GDT and TSS. The TSS exists for its interrupt
 * stack table: #DF, #PF and NMI/#MC run on their own stacks, so a kernel stack
 * overflow (a fault on the guard page) is still reported, not a triple fault. */
#include "kernel.h"

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

static struct tss tss;
static uint8_t ist_stacks[3][IST_STACK_BYTES] __attribute__((aligned(16)));

/* null, kernel code (64-bit), kernel data, TSS (two slots) */
static uint64_t gdt[5] = { 0, 0x00af9a000000ffff, 0x00cf92000000ffff, 0, 0 };
_Static_assert(GDT_TSS == 3 * 8, "TSS selector matches its slot");

void gdt_init(void)
{
	for (int i = 0; i < 3; i++)
		tss.ist[i] = (uint64_t)(uintptr_t)&ist_stacks[i][IST_STACK_BYTES];
	tss.iomap_base = sizeof(tss);

	uint64_t base = (uintptr_t)&tss, limit = sizeof(tss) - 1;
	gdt[3] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ull << 40) |
	         (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
	gdt[4] = base >> 32;

	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) ptr = { sizeof(gdt) - 1, (uintptr_t)gdt };
	__asm__ volatile("lgdt %0\n\t"
	                 /* reload CS with a far return, then the data selectors */
	                 "pushq %1\n\t"
	                 "leaq 1f(%%rip), %%rax\n\t"
	                 "pushq %%rax\n\t"
	                 "lretq\n"
	                 "1:\n\t"
	                 "movw %w2, %%ax\n\t"
	                 "movw %%ax, %%ds\n\t"
	                 "movw %%ax, %%es\n\t"
	                 "movw %%ax, %%ss\n\t"
	                 "ltr %w3"
	                 :
	                 : "m"(ptr), "i"(GDT_KCODE), "r"(GDT_KDATA), "r"(GDT_TSS)
	                 : "rax", "memory");
}
