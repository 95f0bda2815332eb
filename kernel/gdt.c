/* kernel/gdt.c: the kernel's GDT and TSS, one pair per CPU. The TSS exists
 * for its interrupt stack table: #DF, #PF and NMI/#MC run on their own stacks,
 * so a kernel stack overflow (a fault on the guard page) is still reported,
 * not a triple fault. */
#include "kernel.h"

static struct cpu_tables bsp_tables;
_Static_assert(GDT_TSS == 3 * 8, "TSS selector matches its slot");

void gdt_init(void)
{
	gdt_load(&bsp_tables);
}

void gdt_load(struct cpu_tables *t)
{
	static const uint64_t segs[3] = { 0, 0x00af9a000000ffff, 0x00cf92000000ffff };
	for (int i = 0; i < 3; i++)
		t->gdt[i] = segs[i];
	memset(&t->tss, 0, sizeof(t->tss));
	for (int i = 0; i < 3; i++)
		t->tss.ist[i] = (uint64_t)(uintptr_t)&t->ist_stacks[i][IST_STACK_BYTES];
	t->tss.iomap_base = sizeof(t->tss);

	uint64_t base = (uintptr_t)&t->tss, limit = sizeof(t->tss) - 1;
	t->gdt[3] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ull << 40) |
	            (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
	t->gdt[4] = base >> 32;

	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) ptr = { sizeof(t->gdt) - 1, (uintptr_t)t->gdt };
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
