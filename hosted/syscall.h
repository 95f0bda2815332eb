/* syscall.h: raw Linux x86-64 system calls through the `syscall` instruction.
 * The only place keel's hosted code talks to the kernel without libc: each
 * function returns the raw result, a value in [-4095, -1] being -errno.
 * Constants shared with assembly sit outside the C-only part. */
#ifndef KEEL_HOSTED_SYSCALL_H
#define KEEL_HOSTED_SYSCALL_H

/* System call numbers (arch/x86/entry/syscalls/syscall_64.tbl). */
#define SYS_read        0
#define SYS_write       1
#define SYS_open        2
#define SYS_close       3
#define SYS_mmap        9
#define SYS_mprotect    10
#define SYS_munmap      11
#define SYS_sched_yield 24
#define SYS_madvise     28
#define SYS_getpid      39
#define SYS_exit        60
#define SYS_kill        62
#define SYS_exit_group  231

/* mmap/mprotect arguments (asm-generic/mman-common.h, asm/mman.h). Files that
 * include this header use no libc headers, so the usual names are free. */
#define PROT_NONE     0x0
#define PROT_READ     0x1
#define PROT_WRITE    0x2
#define MAP_PRIVATE   0x02
#define MAP_ANONYMOUS 0x20
#define MAP_NORESERVE 0x4000
#define MADV_DONTNEED 4

/* errno values keel's hosted code looks at. */
#define KEEL_LINUX_ENOMEM 12
#define KEEL_LINUX_EINVAL 22

#ifndef __ASSEMBLER__

/* The kernel clobbers rcx (return rip) and r11 (rflags); "memory" because
 * calls such as write read and mmap/munmap change memory the compiler sees. */
static inline long sys_call0(long n)
{
	long ret;
	__asm__ volatile("syscall" : "=a"(ret) : "a"(n) : "rcx", "r11", "memory");
	return ret;
}

static inline long sys_call1(long n, long a1)
{
	long ret;
	__asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a1) : "rcx", "r11", "memory");
	return ret;
}

static inline long sys_call2(long n, long a1, long a2)
{
	long ret;
	__asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a1), "S"(a2) : "rcx", "r11", "memory");
	return ret;
}

static inline long sys_call3(long n, long a1, long a2, long a3)
{
	long ret;
	__asm__ volatile("syscall"
	                 : "=a"(ret)
	                 : "a"(n), "D"(a1), "S"(a2), "d"(a3)
	                 : "rcx", "r11", "memory");
	return ret;
}

static inline long sys_call4(long n, long a1, long a2, long a3, long a4)
{
	long ret;
	register long r10 __asm__("r10") = a4;
	__asm__ volatile("syscall"
	                 : "=a"(ret)
	                 : "a"(n), "D"(a1), "S"(a2), "d"(a3), "r"(r10)
	                 : "rcx", "r11", "memory");
	return ret;
}

static inline long sys_call5(long n, long a1, long a2, long a3, long a4, long a5)
{
	long ret;
	register long r10 __asm__("r10") = a4;
	register long r8 __asm__("r8") = a5;
	__asm__ volatile("syscall"
	                 : "=a"(ret)
	                 : "a"(n), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8)
	                 : "rcx", "r11", "memory");
	return ret;
}

static inline long sys_call6(long n, long a1, long a2, long a3, long a4, long a5, long a6)
{
	long ret;
	register long r10 __asm__("r10") = a4;
	register long r8 __asm__("r8") = a5;
	register long r9 __asm__("r9") = a6;
	__asm__ volatile("syscall"
	                 : "=a"(ret)
	                 : "a"(n), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9)
	                 : "rcx", "r11", "memory");
	return ret;
}

/* A raw result is an error when it lies in [-4095, -1]. */
static inline int sys_is_error(long ret)
{
	return (unsigned long)ret > (unsigned long)-4096L;
}

#endif /* __ASSEMBLER__ */
#endif /* KEEL_HOSTED_SYSCALL_H */
