/* kernel/keel_assert.h: force-included (-include) when the kernel compiles
 * the core (alloc/), so a failed KL_ASSERT in the core prints its place on the
 * console and exits QEMU with the failing status instead of a bare #UD. */
#ifndef KERNEL_KEEL_ASSERT_H
#define KERNEL_KEEL_ASSERT_H

void keel_assert_fail(const char *file, int line, const char *expr) __attribute__((noreturn));
#define KEEL_ASSERT_FAIL(file, line, expr) keel_assert_fail(file, line, expr)

#endif
