/* run_tests.c: the hosted test runner. Links the shared cases (tests/) with
 * the Linux page source and prints their TAP on stdout; exits 0 if every
 * case passed, else 1. The only hosted file besides the demo that uses libc. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../tests/test.h"
#include "keel_assert.h"
#include "source_linux.h"

static void *foreign;

/* TAP goes straight to fd 1, unbuffered, so a crash loses no line. */
void t_env_write(const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(1, s, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		s += w;
		n -= (size_t)w;
	}
}

const struct keel_source *t_env_source(void)
{
	return &keel_linux_source;
}

/* A slot in main's frame: live for the whole run, and no heap's. */
void *t_env_foreign_pointer(void)
{
	return foreign;
}

/* A failed KL_ASSERT in a core built with keel_assert.h: say where, both in
 * the TAP (so the summary shows it) and on stderr, then abort. */
void keel_hosted_assert_fail(const char *file, int line, const char *expr)
{
	char msg[512];
	int n = snprintf(msg, sizeof msg, "Bail out! keel assertion failed: %s:%d: %s\n", file,
	                 line, expr);
	if (n > 0) {
		size_t len = (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;
		t_env_write(msg, len);
		if (write(2, msg + 10, len - 10) < 0) {
			/* nothing better to do: we abort next */
		}
	}
	abort();
}

/* Otherwise a failed KL_ASSERT is __builtin_trap (SIGILL); say so in the TAP before
 * dying, so the summary shows why the plan fell short. The sanitizer build
 * leaves SIGSEGV/SIGBUS to the sanitizer's own, better report. */
static void on_fatal(int sig)
{
	static const char ill[] = "Bail out! SIGILL: a keel assertion failed (KL_ASSERT)\n";
	static const char segv[] = "Bail out! SIGSEGV: bad memory access\n";
	static const char bus[] = "Bail out! SIGBUS\n";
	const char *msg = sig == SIGILL ? ill : sig == SIGSEGV ? segv : bus;
	t_env_write(msg, strlen(msg));
	signal(sig, SIG_DFL);
	raise(sig);
}

int main(void)
{
	long anchor = 0;
	foreign = &anchor;

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_fatal;
	sigaction(SIGILL, &sa, NULL);
#ifndef KEEL_HOSTED_SANITIZE
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
#endif

	unsigned passed = 0, failed = 0;
	int nfailed = t_run_all(&passed, &failed);
	return nfailed == 0 && failed == 0 ? 0 : 1;
}
