/* kernel/layout.h: the kernel's address-space layout and boot constants,
 * shared by the boot assembly, linker.ld's users and the C kernel.
 * C-only parts sit under #ifndef __ASSEMBLER__.
 *
 *   0x0000000000000000  identity map of the low 4 GiB (boot only, gone after pt_init)
 *   0xffff800000000000  direct map of physical memory (2 MiB pages, no-execute;
 *                       the low 4 GiB only, until pt_init maps all RAM)
 *   0xffffc00000000000  kernel heap range, 512 GiB (4 KiB pages, kernel/source.c)
 *   0xffffffff80000000  kernel image (physical 1 MiB at +1 MiB, 4 KiB pages)
 *   0xffffffffc0000000  device registers (the local APIC), 4 KiB uncached pages
 *
 * Below 1 MiB, physical TRAMPOLINE_PA holds the application processors'
 * real-mode start code (kernel/trampoline.S), identity-mapped only while
 * they start; mb2.c keeps that frame out of the frame allocator.
 */
#ifndef KERNEL_LAYOUT_H
#define KERNEL_LAYOUT_H

#define KERNEL_VMA       0xffffffff80000000
#define KERNEL_PA        0x100000
#define DIRECT_MAP_BASE  0xffff800000000000
#define HEAP_BASE        0xffffc00000000000
#define HEAP_BYTES       0x8000000000 /* 512 GiB: one PML4 entry */
#define BOOT_WINDOW      0x100000000  /* the boot tables' direct map: the low 4 GiB */
#define MMIO_BASE        0xffffffffc0000000
#define TRAMPOLINE_PA    0x8000 /* SIPI vector 0x08: a page-aligned address below 1 MiB */
#define MAX_CPUS         16

#define KSTACK_BYTES     0x20000 /* 128 KiB kernel stack, a guard page below it */
#define IST_STACK_BYTES  0x4000  /* per IST stack (#DF, #PF, NMI/#MC) */

#define MB2_HEADER_MAGIC 0xe85250d6
#define MB2_BOOT_MAGIC   0x36d76289

#define CR0_PE   (1 << 0)
#define CR0_WP   (1 << 16)
#define CR0_PG   (1 << 31)
#define CR4_PAE  (1 << 5)
#define MSR_EFER 0xc0000080
#define EFER_LME (1 << 8)
#define EFER_NXE (1 << 11)

#define GDT_KCODE 0x08
#define GDT_KDATA 0x10
#define GDT_TSS   0x18

/* the trampoline's own GDT (kernel/trampoline.S) */
#define TRAMP_CODE32 0x08
#define TRAMP_DATA   0x10
#define TRAMP_CODE64 0x18

#endif
