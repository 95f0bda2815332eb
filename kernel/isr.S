/* kernel/isr.S: interrupt entry stubs. Each pushes a dummy error code when the
 * CPU pushes none, then its vector, saves every general register and calls
 * isr_dispatch(struct isr_frame *) in idt.c. Also the setjmp/longjmp pair
 * fault_try uses to resume after an expected fault. */

	.text

.macro ISR_NOERR vec
	.balign 16
isr_\vec:
	/* no error code from the CPU: push a zero one */
	pushq $0
	/* push the vector and join the common path */
	pushq $\vec
	jmp isr_common
.endm

.macro ISR_ERR vec
	.balign 16
isr_\vec:
	/* the CPU pushed an error code: push the vector and join */
	pushq $\vec
	jmp isr_common
.endm

isr_common:
	/* save the general registers (struct isr_frame, last pushed first) */
	pushq %rax
	pushq %rbx
	pushq %rcx
	pushq %rdx
	pushq %rsi
	pushq %rdi
	pushq %rbp
	pushq %r8
	pushq %r9
	pushq %r10
	pushq %r11
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	/* string instructions run forwards in C */
	cld
	/* call isr_dispatch(frame); the stack is 16-byte aligned here */
	movq %rsp, %rdi
	call isr_dispatch
	/* restore the registers (isr_dispatch may have changed rip and rdi) */
	popq %r15
	popq %r14
	popq %r13
	popq %r12
	popq %r11
	popq %r10
	popq %r9
	popq %r8
	popq %rbp
	popq %rdi
	popq %rsi
	popq %rdx
	popq %rcx
	popq %rbx
	popq %rax
	/* drop the vector and error code */
	addq $16, %rsp
	/* return to the interrupted code */
	iretq

	/* exceptions with an error code: 8, 10-14, 17, 21, 29, 30 */
	ISR_NOERR 0
	ISR_NOERR 1
	ISR_NOERR 2
	ISR_NOERR 3
	ISR_NOERR 4
	ISR_NOERR 5
	ISR_NOERR 6
	ISR_NOERR 7
	ISR_ERR   8
	ISR_NOERR 9
	ISR_ERR   10
	ISR_ERR   11
	ISR_ERR   12
	ISR_ERR   13
	ISR_ERR   14
	ISR_NOERR 15
	ISR_NOERR 16
	ISR_ERR   17
	ISR_NOERR 18
	ISR_NOERR 19
	ISR_NOERR 20
	ISR_ERR   21
	ISR_NOERR 22
	ISR_NOERR 23
	ISR_NOERR 24
	ISR_NOERR 25
	ISR_NOERR 26
	ISR_NOERR 27
	ISR_NOERR 28
	ISR_ERR   29
	ISR_ERR   30
	ISR_NOERR 31
	/* the legacy PIC's 16 lines, remapped to 32-47 */
	.irp v, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47
	ISR_NOERR \v
	.endr
	/* the local APIC's vectors 48-63 (kernel/percpu.h) */
	.irp v, 48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63
	ISR_NOERR \v
	.endr

	/* the table idt.c installs: one stub address per vector 0-63 */
	.section .rodata
	.balign 8
	.global isr_stubs
isr_stubs:
	.irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.quad isr_\v
	.endr
	.irp v, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47
	.quad isr_\v
	.endr
	.irp v, 48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63
	.quad isr_\v
	.endr

	.text
	/* int kjmp_set(struct kjmp *j): save callee-saved registers, rsp and the
	 * return address; returns 0 now and 1 when kjmp_resume jumps back */
	.global kjmp_set
kjmp_set:
	/* save rbx, rbp, r12-r15 */
	movq %rbx, 0(%rdi)
	movq %rbp, 8(%rdi)
	movq %r12, 16(%rdi)
	movq %r13, 24(%rdi)
	movq %r14, 32(%rdi)
	movq %r15, 40(%rdi)
	/* save the caller's stack pointer (after our return) and return address */
	leaq 8(%rsp), %rax
	movq %rax, 48(%rdi)
	movq (%rsp), %rax
	movq %rax, 56(%rdi)
	/* first return: 0 */
	xorl %eax, %eax
	ret

	/* kjmp_resume: where isr_dispatch sends an expected fault, with rdi
	 * pointing at the struct kjmp to return through */
	.global kjmp_resume
kjmp_resume:
	/* restore the callee-saved registers and the stack */
	movq 0(%rdi), %rbx
	movq 8(%rdi), %rbp
	movq 16(%rdi), %r12
	movq 24(%rdi), %r13
	movq 32(%rdi), %r14
	movq 40(%rdi), %r15
	movq 48(%rdi), %rsp
	/* return 1 from kjmp_set */
	movl $1, %eax
	jmpq *56(%rdi)

	/* no executable stack */
	.section .note.GNU-stack, "", @progbits
