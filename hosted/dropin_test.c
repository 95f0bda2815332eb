/* dropin_test.c: the drop-in's glibc semantics, threads, fork and misuse,
 * run as an ordinary program under LD_PRELOAD=build/libkeel.so. Prints TAP.
 * It first proves keel is the malloc in use (keel_strerror is visible). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static int n, failed;

static void check(int ok, const char *name)
{
	failed += !ok;
	printf("%s %d - %s\n", ok ? "ok" : "not ok", ++n, name);
	fflush(stdout);
}

static int aligned(const void *p, size_t a)
{
	return ((uintptr_t)p & (a - 1)) == 0;
}

static void semantics(void)
{
	volatile size_t huge = SIZE_MAX; /* hidden from the compiler's size checks */
	check(dlsym(RTLD_DEFAULT, "keel_strerror") != NULL, "keel is the malloc in use");

	void *a = malloc(0), *b = malloc(0);
	check(a && b && a != b, "malloc(0) gives unique pointers");
	free(a);
	free(b);

	errno = 0;
	check(malloc(huge) == NULL && errno == ENOMEM, "malloc(SIZE_MAX): NULL, ENOMEM");
	errno = 0;
	check(calloc(huge / 2, 3) == NULL && errno == ENOMEM, "calloc overflow: NULL, ENOMEM");
	errno = 0;
	check(reallocarray(NULL, huge / 2, 3) == NULL && errno == ENOMEM,
	      "reallocarray overflow: NULL, ENOMEM");

	unsigned char *z = malloc(5000);
	memset(z, 0xff, 5000);
	free(z);
	z = calloc(1000, 5);
	int zero = z != NULL;
	for (size_t i = 0; z && i < 5000; i++)
		zero &= z[i] == 0;
	check(zero, "calloc zeroes reused memory");
	free(z);

	char *s = realloc(NULL, 10);
	strcpy(s, "keel");
	s = realloc(s, 100000);
	check(s && !strcmp(s, "keel"), "realloc grows and keeps contents");
	s = realloc(s, 3);
	check(s && !memcmp(s, "kee", 3), "realloc shrinks and keeps contents");
	errno = 0;
	check(realloc(s, 0) == NULL, "realloc(p, 0) frees and gives NULL");

	void *p = malloc(100);
	check(malloc_usable_size(p) >= 100 && malloc_usable_size(NULL) == 0, "malloc_usable_size");
	free(p);

	errno = 0;
	check(aligned_alloc(3, 10) == NULL && errno == EINVAL, "aligned_alloc(3): EINVAL");
	p = aligned_alloc(4096, 100);
	check(p && aligned(p, 4096), "aligned_alloc(4096)");
	free(p);

	errno = 1234;
	int rc = posix_memalign(&p, 3, 10);
	check(rc == EINVAL && errno == 1234, "posix_memalign(3): EINVAL, errno untouched");
	rc = posix_memalign(&p, 4, 10);
	check(rc == EINVAL, "posix_memalign(4): EINVAL (not a multiple of sizeof(void *))");
	rc = posix_memalign(&p, 1 << 20, 10);
	check(rc == 0 && aligned(p, 1 << 20), "posix_memalign(1 MiB)");
	free(p);
	rc = posix_memalign(&p, 64, huge - 100);
	check(rc == ENOMEM && errno == 1234, "posix_memalign too big: ENOMEM, errno untouched");
	/* a power of two past what keel aligns to is valid, just too much */
	rc = posix_memalign(&p, (size_t)1 << 31, 10);
	check(rc == ENOMEM && errno == 1234, "posix_memalign(2 GiB): ENOMEM, not EINVAL");
	errno = 0;
	check(aligned_alloc((size_t)1 << 31, 10) == NULL && errno == ENOMEM,
	      "aligned_alloc(2 GiB): NULL, ENOMEM");
	errno = 0;
	check(memalign((size_t)1 << 31, 10) == NULL && errno == ENOMEM,
	      "memalign(2 GiB): NULL, ENOMEM");

	p = memalign(24, 10);
	check(p && aligned(p, 32), "memalign(24) rounds up to 32");
	free(p);
	p = valloc(10);
	check(p && aligned(p, 4096), "valloc is page-aligned");
	free(p);
	p = pvalloc(1);
	check(p && aligned(p, 4096) && malloc_usable_size(p) >= 4096, "pvalloc rounds to a page");
	free(p);

	errno = 77;
	free(NULL);
	p = malloc(32);
	free(p);
	check(errno == 77, "free leaves errno alone");

	static void *m[64];
	for (int i = 0; i < 64; i++) /* medium blocks: their arenas are kept once free */
		memset(m[i] = malloc(200000), 1, 200000);
	for (int i = 0; i < 64; i++)
		free(m[i]);
	check(malloc_trim(0) == 1, "malloc_trim gives back what keel keeps");
}

/* Threads that allocate, hand blocks across, and exit: their caches go back. */
static void *churn(void *arg)
{
	void **out = arg;
	void *keep[512];
	for (int r = 0; r < 20; r++) {
		for (int i = 0; i < 512; i++)
			keep[i] = malloc(16 + (size_t)(i * 7) % 900);
		for (int i = 0; i < 512; i++)
			free(keep[i]);
	}
	for (int i = 0; i < 64; i++)
		out[i] = malloc(48);
	return NULL;
}

static long rss_kb(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long pages = 0, resident = 0;
	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
			resident = 0;
		fclose(f);
	}
	return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static void threads(void)
{
	static void *handed[64];
	long before = 0;
	int ok = 1;
	for (int round = 0; round < 300; round++) {
		pthread_t t;
		ok &= pthread_create(&t, NULL, churn, handed) == 0;
		ok &= pthread_join(t, NULL) == 0;
		for (int i = 0; i < 64; i++)
			free(handed[i]); /* freed by a thread other than the allocating one */
		if (round == 20)
			before = rss_kb();
	}
	long after = rss_kb();
	check(ok, "300 threads allocate, free and exit");
	printf("# rss after 20 threads %ld KiB, after 300 %ld KiB\n", before, after);
	check(after <= before + 2048, "memory does not grow with threads that come and go");
}

static void *spin_alloc(void *arg)
{
	volatile int *stop = arg;
	while (!*stop) {
		void *p = malloc(64 + (size_t)rand() % 4000);
		free(p);
	}
	return NULL;
}

static void fork_in_threads(void)
{
	static volatile int stop;
	pthread_t t[3];
	for (int i = 0; i < 3; i++)
		pthread_create(&t[i], NULL, spin_alloc, (void *)&stop);
	int ok = 1;
	for (int k = 0; k < 20; k++) {
		pid_t pid = fork();
		if (pid == 0) {
			for (int i = 0; i < 1000; i++)
				free(malloc((size_t)i * 13 + 1));
			_exit(0);
		}
		int st;
		ok &= pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) &&
		      WEXITSTATUS(st) == 0;
	}
	stop = 1;
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	check(ok, "fork while other threads allocate: the child allocates");
}

/* Run the misuse named `name` in a fresh image of this program with
 * KEEL_OPTIONS=opts (read at start-up); return its wait status and what it
 * wrote to stderr. */
static int child(const char *name, const char *opts, char *err, size_t errlen)
{
	int fds[2];
	if (pipe(fds))
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		dup2(fds[1], 2);
		close(fds[0]);
		setenv("KEEL_OPTIONS", opts, 1);
		execl("/proc/self/exe", "dropin_test", "--child", name, (char *)NULL);
		_exit(99);
	}
	close(fds[1]);
	size_t got = 0;
	ssize_t r;
	while (got + 1 < errlen && (r = read(fds[0], err + got, errlen - 1 - got)) > 0)
		got += (size_t)r;
	err[got] = 0;
	close(fds[0]);
	int st = 0;
	waitpid(pid, &st, 0);
	return st;
}

static void double_free(void)
{
	void *volatile p = malloc(40);
	free(p);
	free(p);
}

static void double_free_medium(void)
{
	void *volatile p = malloc(20000);
	free(p);
	free(p);
}

/* The faults go through a volatile pointer so the compiler, which sees
 * them coming, lets them through. */
static void stack_free(void)
{
	int x = 0;
	int *volatile px = &x;
	free(px);
}

static void interior_free(void)
{
	char *p = malloc(100);
	char *volatile q = p + 16;
	free(q);
}

static void plain_exit(void)
{
	void *volatile p = malloc(10); /* a malloc/free pair the compiler keeps */
	free(p);
}

/* Checked mode counts a block's bytes as asked: a realloc of a malloc(0)
 * block is no misuse. */
static void realloc_zero_block(void)
{
	char *p = malloc(0);
	char *volatile q = realloc(p, 10);
	if (!q)
		_exit(3);
	memset(q, 1, 10);
	free(q);
}

/* The address space capped a little above what the program holds, with
 * 64 MiB of large blocks freed that keel kept: a 150 MiB request is met once
 * keel gives those back, as the source's refusal makes it do. */
static long vsz_bytes(void)
{
	long pages = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	if (!f || fscanf(f, "%ld", &pages) != 1)
		_exit(4);
	fclose(f);
	return pages * sysconf(_SC_PAGESIZE);
}

static void refused_map_releases(void)
{
	static void *v[16];
	for (int i = 0; i < 16; i++)
		memset(v[i] = malloc(4 << 20), 1, 4 << 20);
	for (int i = 0; i < 16; i++)
		free(v[i]);
	long held = vsz_bytes();
	struct rlimit r = { (rlim_t)held + (100l << 20), RLIM_INFINITY };
	if (setrlimit(RLIMIT_AS, &r) != 0)
		_exit(5);
	char *volatile p = malloc(150 << 20);
	if (!p)
		_exit(6);
	memset(p, 1, 150 << 20);
	free(p);
}

/* Checked mode: one byte past the end, found by free. */
static void overflow_by_one(void)
{
	char *p = malloc(40);
	char *volatile launder = p; /* the compiler cannot see where q points */
	volatile char *q = launder;
	q[40] = 1;
	free(p);
}

/* Checked mode: a write after free, found when the memory would come back. */
static void write_after_free(void)
{
	char *p = malloc(100);
	char *volatile launder = p;
	free(p);
	volatile char *q = launder;
	q[50] = 1;
	for (int i = 0; i < 5000; i++) {
		void *volatile r = malloc(100);
		free(r);
	}
}

/* Allocate, fill, verify and free a batch of every size kind: the heap
 * still works. Exits 3 if it does not. */
static void heap_still_works(int round)
{
	static unsigned char *p[64];
	for (int i = 0; i < 64; i++) {
		size_t size = (size_t)(i * 613 + round * 7) % (i % 8 ? 5000 : 600000) + 1;
		p[i] = malloc(size);
		if (!p[i])
			_exit(3);
		memset(p[i], i + round, size < 64 ? size : 64);
	}
	for (int i = 0; i < 64; i++) {
		size_t size = (size_t)(i * 613 + round * 7) % (i % 8 ? 5000 : 600000) + 1;
		for (size_t k = 0; k < (size < 64 ? size : 64); k++)
			if (p[i][k] != (unsigned char)(i + round))
				_exit(3);
		free(p[i]);
	}
}

/* Warn mode: every kind of bad free and realloc is reported, changes
 * nothing, and the program goes on allocating and freeing correctly. */
static void warn_every_fault(void)
{
	int x = 0;
	static char foreign[64]; /* memory no heap owns */
	char *volatile v;
	heap_still_works(0);
	v = malloc(40); /* double free, small */
	free(v);
	free(v);
	heap_still_works(1);
	v = malloc(20000); /* double free, medium */
	free(v);
	free(v);
	heap_still_works(2);
	v = malloc(3 << 20); /* double free, large */
	free(v);
	free(v);
	heap_still_works(3);
	v = malloc(100); /* interior pointer */
	char *volatile inner = v + 16;
	free(inner);
	free(v);
	heap_still_works(4);
	v = (char *)&x; /* a stack address */
	free(v);
	v = foreign; /* a static buffer */
	free(v);
	heap_still_works(5);
	v = malloc(64); /* realloc of a freed block */
	free(v);
	if (realloc(v, 200) != NULL || errno != EINVAL)
		_exit(4);
	v = malloc(300); /* realloc of an interior pointer */
	inner = v + 32;
	if (realloc(inner, 600) != NULL)
		_exit(4);
	free(v);
	heap_still_works(6);
}

/* The same under checked mode, with its own faults. */
static void warn_checked_faults(void)
{
	char *p = malloc(40);
	char *volatile launder = p;
	volatile char *q = launder;
	q[40] = 1; /* overflow: free reports it and keeps the block */
	free(p);
	q[40] = (char)0; /* not the canary's byte: still damaged, reported again */
	heap_still_works(0);
	char *r = malloc(100);
	launder = r;
	free(r);
	q = launder;
	q[50] = 1; /* write after free: reported when the memory comes back */
	heap_still_works(1);
	for (int i = 0; i < 3000; i++) {
		void *volatile t = malloc(100);
		free(t);
	}
	heap_still_works(2);
}

static const struct {
	const char *name;
	void (*fn)(void);
} faults[] = {
	{ "warn_every_fault", warn_every_fault },
	{ "warn_checked_faults", warn_checked_faults },
	{ "overflow_by_one", overflow_by_one },
	{ "write_after_free", write_after_free },
	{ "double_free", double_free },
	{ "double_free_medium", double_free_medium },
	{ "stack_free", stack_free },
	{ "interior_free", interior_free },
	{ "plain_exit", plain_exit },
	{ "realloc_zero_block", realloc_zero_block },
	{ "refused_map_releases", refused_map_releases },
};

static void misuse(void)
{
	char err[512];
	struct {
		const char *fault, *want, *name;
	} cases[] = {
		{ "double_free", "double free",
		  "double free of a small block aborts with one line" },
		{ "double_free_medium", "double free", "double free of a medium block aborts" },
		{ "stack_free", "not owned", "free of a stack address aborts" },
		{ "interior_free", "inside a block", "free of an interior pointer aborts" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int st = child(cases[i].fault, "abort", err, sizeof err);
		check(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT && strstr(err, cases[i].want) &&
		              strstr(err, "keel: free(0x") &&
		              strchr(err, '\n') == strrchr(err, '\n'),
		      cases[i].name);
	}
	int st = child("overflow_by_one", "checked", err, sizeof err);
	check(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT && strstr(err, "write past the end"),
	      "KEEL_OPTIONS=checked: a one-byte overflow is caught at free");
	st = child("overflow_by_one", "", err, sizeof err);
	check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "without checked mode it goes unseen");
	st = child("write_after_free", "checked", err, sizeof err);
	check(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT && strstr(err, "after its free"),
	      "KEEL_OPTIONS=checked: a write after free is caught when the memory comes back");
	st = child("double_free", "warn", err, sizeof err);
	check(WIFEXITED(st) && WEXITSTATUS(st) == 0 && strstr(err, "double free"),
	      "KEEL_OPTIONS=warn reports and goes on");
	st = child("warn_every_fault", "warn", err, sizeof err);
	int lines = 0;
	for (const char *c = err; (c = strstr(c, "keel: ")) != NULL; c++)
		lines++;
	if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0 && lines == 8))
		printf("# status %d, %d report lines:\n%s", st, lines, err);
	check(WIFEXITED(st) && WEXITSTATUS(st) == 0 && lines == 8,
	      "KEEL_OPTIONS=warn: eight kinds of bad free/realloc reported once each, heap still "
	      "works");
	st = child("warn_checked_faults", "checked,warn", err, sizeof err);
	if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0 && strstr(err, "write past the end") &&
	      strstr(err, "after its free")))
		printf("# status %d:\n%s", st, err);
	check(WIFEXITED(st) && WEXITSTATUS(st) == 0 && strstr(err, "write past the end") &&
	              strstr(err, "after its free"),
	      "KEEL_OPTIONS=checked,warn: overflow and write after free reported, heap still "
	      "works");
	st = child("realloc_zero_block", "checked", err, sizeof err);
	check(WIFEXITED(st) && WEXITSTATUS(st) == 0 && !strstr(err, "keel:"),
	      "KEEL_OPTIONS=checked: realloc of a malloc(0) block is no misuse");
	st = child("refused_map_releases", "", err, sizeof err);
	if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
		printf("# status %d:\n%s", st, err);
	check(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	      "a refused mapping makes keel give back what it keeps, and ask again");
	st = child("plain_exit", "stats", err, sizeof err);
	check(WIFEXITED(st) && WEXITSTATUS(st) == 0 && strstr(err, "keel: in_use_bytes") &&
	              strstr(err, "keel: alloc_count"),
	      "KEEL_OPTIONS=stats prints the statistics at exit");
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--child")) {
		for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++)
			if (!strcmp(argv[2], faults[i].name))
				faults[i].fn();
		return 0;
	}
	semantics();
	threads();
	fork_in_threads();
	misuse();
	printf("1..%d\n", n);
	return failed ? 1 : 0;
}
