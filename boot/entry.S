/* boot/entry.S: the 32-bit multiboot2 entry. Builds boot page tables that map
 * the low 4 GiB twice (identity, and at DIRECT_MAP_BASE, where the kernel
 * reads the loader's data wherever below 4 GiB it is) and the low 1 GiB at
 * KERNEL_VMA, enters long mode and calls kernel_main(magic, info_pa) on the
 * kernel stack. kernel/paging.c replaces these tables once the memory map is
 * known. */
#include "../kernel/layout.h"

	.section .boot.text, "ax"
	.code32
	.global boot_entry
boot_entry:
	/* no interrupts until the kernel has an IDT */
	cli
	/* keep the loader's magic and info address for kernel_main */
	mov %eax, %edi
	mov %ebx, %esi
	/* use the small boot stack (physical address) */
	mov $boot_stack_top, %esp
	/* refuse anything but a multiboot2 loader */
	cmp $MB2_BOOT_MAGIC, %edi
	jne boot_fail
	/* check that the CPU has extended CPUID leaves */
	mov $0x80000000, %eax
	cpuid
	cmp $0x80000001, %eax
	jb boot_fail
	/* check for long mode; keep the feature bits (NX is bit 20) in ebp */
	mov $0x80000001, %eax
	cpuid
	test $(1 << 29), %edx
	jz boot_fail
	mov %edx, %ebp
	/* clear the boot tables (the loader zeroes bss, but do not rely on it) */
	mov $boot_tables, %edi
	mov $(boot_tables_end - boot_tables) / 4, %ecx
	xor %eax, %eax
	rep stosl
	/* rep stosl used edi: put the magic (checked above) back */
	mov $MB2_BOOT_MAGIC, %edi
	/* PML4[0] (identity) and PML4[256] (direct map) -> low PDPT, PML4[511] -> high PDPT */
	movl $boot_pdpt_lo + 3, boot_pml4
	movl $boot_pdpt_lo + 3, boot_pml4 + 256 * 8
	movl $boot_pdpt_hi + 3, boot_pml4 + 511 * 8
	/* low PDPT[0..3] -> the four PDs: 4 GiB */
	movl $boot_pd + 3, boot_pdpt_lo
	movl $boot_pd + 4096 + 3, boot_pdpt_lo + 8
	movl $boot_pd + 2 * 4096 + 3, boot_pdpt_lo + 16
	movl $boot_pd + 3 * 4096 + 3, boot_pdpt_lo + 24
	/* high PDPT[510] -> the first PD, so KERNEL_VMA maps physical 0 */
	movl $boot_pd + 3, boot_pdpt_hi + 510 * 8
	/* fill the PDs with 2048 present, writable 2 MiB pages: the low 4 GiB */
	xor %ecx, %ecx
1:	mov %ecx, %eax
	shl $21, %eax
	or $0x83, %eax
	mov %eax, boot_pd(, %ecx, 8)
	/* the high half of the entry: bits 32+ of the address */
	mov %ecx, %eax
	shr $11, %eax
	mov %eax, boot_pd + 4(, %ecx, 8)
	inc %ecx
	cmp $2048, %ecx
	jne 1b
	/* enable PAE */
	mov %cr4, %eax
	or $CR4_PAE, %eax
	mov %eax, %cr4
	/* load the PML4 */
	mov $boot_pml4, %eax
	mov %eax, %cr3
	/* set EFER.LME, and EFER.NXE when the CPU has NX */
	mov $MSR_EFER, %ecx
	rdmsr
	or $EFER_LME, %eax
	test $(1 << 20), %ebp
	jz 2f
	or $EFER_NXE, %eax
2:	wrmsr
	/* enable paging and supervisor write protection */
	mov %cr0, %eax
	or $(CR0_PG | CR0_WP | CR0_PE), %eax
	mov %eax, %cr0
	/* load the 64-bit GDT */
	lgdt boot_gdt_ptr
	/* far jump into the 64-bit code segment */
	ljmp $GDT_KCODE, $boot_long

boot_fail:
	/* print "keel: no multiboot2 or long mode" on the VGA text screen */
	mov $boot_fail_msg, %esi
	mov $0xb8000, %edi
3:	lodsb
	test %al, %al
	jz 4f
	mov $0x4f, %ah
	stosw
	jmp 3b
	/* stop */
4:	cli
	hlt
	jmp 4b

	.code64
boot_long:
	/* load the data segment selectors */
	mov $GDT_KDATA, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %ss
	xor %ax, %ax
	mov %ax, %fs
	mov %ax, %gs
	/* switch to the kernel stack in the higher half */
	movabs $kstack_top, %rsp
	/* zero-extend magic (edi) and info address (esi) into the argument registers */
	mov %edi, %edi
	mov %esi, %esi
	/* clear the frame pointer so backtraces stop here */
	xor %ebp, %ebp
	/* call kernel_main, which never returns */
	movabs $kernel_main, %rax
	call *%rax
	/* stop if it does */
5:	cli
	hlt
	jmp 5b

	.section .boot.data, "a"
	.balign 8
boot_gdt:
	/* null, 64-bit kernel code, kernel data */
	.quad 0
	.quad 0x00af9a000000ffff
	.quad 0x00cf92000000ffff
boot_gdt_end:
boot_gdt_ptr:
	.short boot_gdt_end - boot_gdt - 1
	.long boot_gdt
boot_fail_msg:
	.asciz "keel: not booted by multiboot2, or no long mode"

	.section .boot.bss, "aw", @nobits
	.balign 4096
boot_tables:
boot_pml4:
	.skip 4096
boot_pdpt_lo:
	.skip 4096
boot_pdpt_hi:
	.skip 4096
boot_pd:
	.skip 4 * 4096
boot_tables_end:
	.skip 4096
boot_stack_top:

	/* the kernel stack, with an unmapped guard page below it (kernel/paging.c) */
	.section .bss.stack, "aw", @nobits
	.balign 4096
	.global kstack_guard, kstack_top
kstack_guard:
	.skip 4096
	.skip KSTACK_BYTES
kstack_top:

	/* no executable stack */
	.section .note.GNU-stack, "", @progbits
