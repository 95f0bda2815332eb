/* kernel/trampoline.S: where an application processor starts. smp.c copies
 * tramp_start..tramp_end to TRAMPOLINE_PA (below 1 MiB), fills the data at
 * its end, identity-maps that page and sends INIT-SIPI-SIPI: the CPU wakes in
 * real mode at TRAMPOLINE_PA, enters protected mode, then long mode on the
 * kernel's own page tables, and calls ap_entry(cpu) on its own stack. */
#include "layout.h"

/* the run-time address of a trampoline label */
#define TR(x) ((x) - tramp_start + TRAMPOLINE_PA)

	.section .rodata, "a"
	.balign 16
	.global tramp_start, tramp_end, tramp_data
	.code16
tramp_start:
	/* no interrupts; string instructions go forwards */
	cli
	cld
	/* data segment 0, so TR() addresses work as offsets */
	xorw %ax, %ax
	movw %ax, %ds
	/* load the trampoline's GDT */
	lgdtl TR(tramp_gdt_ptr)
	/* enable protected mode */
	movl %cr0, %eax
	orl $CR0_PE, %eax
	movl %eax, %cr0
	/* far jump into the 32-bit code segment */
	ljmpl $TRAMP_CODE32, $TR(tramp_pm)

	.code32
tramp_pm:
	/* load the data segment selectors */
	movw $TRAMP_DATA, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	/* enable PAE */
	movl %cr4, %eax
	orl $CR4_PAE, %eax
	movl %eax, %cr4
	/* load the kernel's PML4 (below 4 GiB: frame.c hands out low frames first) */
	movl TR(tramp_cr3), %eax
	movl %eax, %cr3
	/* set EFER.LME, and EFER.NXE if the bootstrap CPU uses it */
	movl $MSR_EFER, %ecx
	rdmsr
	orl TR(tramp_efer), %eax
	wrmsr
	/* enable paging and supervisor write protection */
	movl %cr0, %eax
	orl $(CR0_PG | CR0_WP | CR0_PE), %eax
	movl %eax, %cr0
	/* far jump into the 64-bit code segment (this page is identity-mapped) */
	ljmpl $TRAMP_CODE64, $TR(tramp_lm)

	.code64
tramp_lm:
	/* switch to the CPU's stack, then call ap_entry(cpu), which never returns */
	movq TR(tramp_stack), %rsp
	movq TR(tramp_arg), %rdi
	movq TR(tramp_entry), %rax
	xorl %ebp, %ebp
	call *%rax
	/* stop if it does */
1:	cli
	hlt
	jmp 1b

	.balign 8
tramp_gdt:
	/* null, 32-bit code, data, 64-bit code */
	.quad 0
	.quad 0x00cf9a000000ffff
	.quad 0x00cf92000000ffff
	.quad 0x00af9a000000ffff
tramp_gdt_end:
tramp_gdt_ptr:
	.short tramp_gdt_end - tramp_gdt - 1
	.long TR(tramp_gdt)

	/* filled by smp.c before each start (struct tramp_data) */
	.balign 8
tramp_data:
tramp_cr3:
	.quad 0
tramp_efer:
	.quad 0
tramp_stack:
	.quad 0
tramp_arg:
	.quad 0
tramp_entry:
	.quad 0
tramp_end:

	/* no executable stack */
	.section .note.GNU-stack, "", @progbits
