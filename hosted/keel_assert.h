/* keel_assert.h: the hosted assert hook. The sanitizer build force-includes
 * it into the core (-include), so a failed KL_ASSERT names its file, line and
 * expression before aborting, instead of the default bare trap. */
#ifndef KEEL_HOSTED_ASSERT_H
#define KEEL_HOSTED_ASSERT_H

/* Defined by the runner (hosted/run_tests.c): prints, then abort()s. */
_Noreturn void keel_hosted_assert_fail(const char *file, int line, const char *expr);
#define KEEL_ASSERT_FAIL(file, line, expr) keel_hosted_assert_fail(file, line, expr)

#endif
