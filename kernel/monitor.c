/* kernel/monitor.c: the interactive monitor on the serial line (make run).
 * Commands act on a heap of their own (mon_heap) over the kernel page source;
 * the monitor's own state, that heap's storage included, comes from the
 * kernel heap, so the kernel is keel's first user. Bad input gets a message
 * and changes nothing. Ctrl-D halts like `halt` (piped input ends with one). */
#include "../alloc/keel.h"
#include "cpu.h"
#include "kernel.h"
#include "percpu.h"

#define LINE_MAX  200
#define MAP_COLS  64                        /* cells per segment row */
#define MAP_CELL  (KEEL_SEGMENT_SIZE / MAP_COLS) /* 16 KiB */
#define MAP_ROWS  16
#define MAP_LARGE 8

struct map_row {
	uintptr_t base;
	uint32_t used[MAP_COLS], freeb[MAP_COLS];
};

struct map_state {
	struct map_row rows[MAP_ROWS];
	unsigned nrows, more_rows;
	struct keel_block large[MAP_LARGE];
	unsigned nlarge;
	size_t nblocks;
};

struct monitor {
	struct keel_heap heap; /* the heap commands act on */
	char line[LINE_MAX + 1];
	size_t len;
	uintptr_t last; /* `$`: the address the last alloc/realloc returned */
};
static struct monitor *mon;

/* ---- parsing --------------------------------------------------------------- */

/* A number: decimal or 0x hex, and with suffix an optional k/m/g (KiB, MiB,
 * GiB). Returns 0, or -1 if s is not one or overflows. */
static int parse_num(const char *s, uint64_t *out, int suffix)
{
	uint64_t v = 0;
	unsigned base = 10;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	if (!*s)
		return -1;
	for (; *s; s++) {
		unsigned d;
		char c = *s;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (base == 16 && c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (base == 16 && c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			break;
		if (v > (UINT64_MAX - d) / base)
			return -1;
		v = v * base + d;
	}
	if (*s && suffix && !s[1]) {
		unsigned shift = (*s == 'k' || *s == 'K') ? 10 : (*s == 'm' || *s == 'M') ? 20
		                 : (*s == 'g' || *s == 'G') ? 30 : 0;
		if (!shift || v > (UINT64_MAX >> shift))
			return -1;
		v <<= shift;
		s++;
	}
	if (*s)
		return -1;
	*out = v;
	return 0;
}

static int parse_addr(const char *s, uintptr_t *out)
{
	if (!kstrcmp(s, "$")) {
		*out = mon->last;
		return mon->last ? 0 : -1;
	}
	uint64_t v;
	if (parse_num(s, &v, 0))
		return -1;
	*out = (uintptr_t)v;
	return 0;
}

/* Print bytes as "N bytes" / "N KiB" / "N.N MiB". */
static void print_bytes(size_t n)
{
	if (n < 10 * 1024)
		kprintf("%lu bytes", n);
	else if (n < 10ul << 20)
		kprintf("%lu KiB", n >> 10);
	else
		kprintf("%lu.%lu MiB", n >> 20, ((n & ((1ul << 20) - 1)) * 10) >> 20);
}

/* ---- commands -------------------------------------------------------------- */

static void cmd_help(void)
{
	kprintf("commands (numbers: decimal or 0x hex; sizes may end in k, m or g;\n"
	        "ADDR may be $, the address the last alloc/realloc returned):\n"
	        "  help                 this list\n"
	        "  alloc SIZE [ALIGN]   allocate from the monitor heap, print the address\n"
	        "  free ADDR            free a block of the monitor heap\n"
	        "  realloc ADDR SIZE    resize a block (SIZE 0 frees it)\n"
	        "  stats                counters of the monitor heap and the kernel heap\n"
	        "  map [mon|kernel]     picture of the heaps: segments, used/free/returned pages\n"
	        "  check                validate every invariant of both heaps\n"
	        "  test [-v]            run the whole test suite (-v: every TAP line)\n"
	        "  bench                malloc/free speed: ops/s and cycles/op\n"
	        "  mem                  physical frames and page tables\n"
	        "  cpus                 every CPU: APIC id, timer ticks, its keel cache's last stress\n"
	        "  stress N             N rounds of the SMP stress on every CPU (1-10000)\n"
	        "  halt                 leave QEMU (also Ctrl-D; or Ctrl-A X)\n");
}

static void cmd_alloc(int argc, char **argv)
{
	uint64_t size, align = 0;
	if (argc < 2 || argc > 3) {
		kprintf("usage: alloc SIZE [ALIGN]\n");
		return;
	}
	if (parse_num(argv[1], &size, 1)) {
		kprintf("alloc: bad size '%s'\n", argv[1]);
		return;
	}
	if (argc == 3 && (parse_num(argv[2], &align, 1) || !align || (align & (align - 1)) ||
	                  align > KEEL_MAX_ALIGN)) {
		kprintf("alloc: bad alignment '%s' (a power of two up to 1g)\n", argv[2]);
		return;
	}
	void *p = align ? keel_aligned_alloc(&mon->heap, align, size) : keel_malloc(&mon->heap, size);
	if (!p) {
		kprintf("alloc: no memory for %lu bytes\n", size);
		return;
	}
	mon->last = (uintptr_t)p;
	kprintf("%p (%lu bytes, usable %lu)\n", p, size, keel_usable_size(&mon->heap, p));
}

static void cmd_free(int argc, char **argv)
{
	uintptr_t a;
	if (argc != 2) {
		kprintf("usage: free ADDR\n");
		return;
	}
	if (parse_addr(argv[1], &a)) {
		kprintf("free: bad address '%s'\n", argv[1]);
		return;
	}
	if (!a) {
		kprintf("free: NULL: nothing to free\n");
		return;
	}
	int rc = keel_free(&mon->heap, (void *)a);
	if (rc)
		kprintf("free: %p: %s; nothing changed\n", (void *)a, keel_strerror(rc));
	else
		kprintf("freed %p\n", (void *)a);
}

static void cmd_realloc(int argc, char **argv)
{
	uintptr_t a;
	uint64_t size;
	if (argc != 3) {
		kprintf("usage: realloc ADDR SIZE\n");
		return;
	}
	if (parse_addr(argv[1], &a)) {
		kprintf("realloc: bad address '%s'\n", argv[1]);
		return;
	}
	if (parse_num(argv[2], &size, 1)) {
		kprintf("realloc: bad size '%s'\n", argv[2]);
		return;
	}
	if (a && !keel_usable_size(&mon->heap, (void *)a)) {
		kprintf("realloc: %p is not a live block of the monitor heap; nothing changed\n",
		        (void *)a);
		return;
	}
	void *p = keel_realloc(&mon->heap, (void *)a, size);
	if (!size && a) {
		kprintf("freed %p\n", (void *)a);
		return;
	}
	if (!p) {
		kprintf("realloc: no memory for %lu bytes; %p unchanged\n", size, (void *)a);
		return;
	}
	mon->last = (uintptr_t)p;
	kprintf("%p (%lu bytes, usable %lu, %s)\n", p, size, keel_usable_size(&mon->heap, p),
	        (uintptr_t)p == a ? "in place" : "moved");
}

static void print_stats(const char *name, struct keel_heap *h)
{
	static struct keel_stats st;
	if (keel_stats(h, &st)) {
		kprintf("%s heap: no stats\n", name);
		return;
	}
	kprintf("%s heap: %lu live blocks, ", name, st.live_blocks);
	print_bytes(st.in_use_bytes);
	kprintf(" in use (peak ");
	print_bytes(st.peak_in_use_bytes);
	kprintf("), %lu segments, %lu large\n", st.segments, st.large_blocks);
	kprintf("  from the source: ");
	print_bytes(st.source_bytes);
	kprintf(" (peak ");
	print_bytes(st.peak_source_bytes);
	kprintf("), %lu maps, %lu unmaps, %lu refused\n", st.source_maps, st.source_unmaps,
	        st.source_failures);
	kprintf("  free: ");
	print_bytes(st.free_bytes);
	kprintf(", largest ");
	print_bytes(st.largest_free);
	kprintf(", fragmentation %u%%\n", st.fragmentation_pct);
	kprintf("  calls: %lu allocs, %lu frees, %lu failed\n", st.alloc_count, st.free_count,
	        st.failed_allocs);
	int any = 0;
	for (unsigned i = 0; i < KEEL_NCLASSES; i++) {
		if (!st.class_count[i])
			continue;
		kprintf("%s%lu:%lu", any ? " " : "  live per class (size:count): ", st.class_size[i],
		        st.class_count[i]);
		any = 1;
	}
	if (any)
		kprintf("\n");
}

void monitor_stats(void)
{
	print_stats("monitor", &mon->heap);
	print_stats("kernel", &kernel_heap);
}

static int map_visit(const struct keel_block *b, void *arg)
{
	struct map_state *m = arg;
	m->nblocks++;
	if (b->kind == KEEL_KIND_LARGE) {
		if (m->nlarge < MAP_LARGE)
			m->large[m->nlarge] = *b;
		m->nlarge++;
		return 0;
	}
	uintptr_t p = (uintptr_t)b->p, end = p + b->size;
	while (p < end) {
		uintptr_t base = ALIGN_DOWN(p, KEEL_SEGMENT_SIZE);
		struct map_row *r = NULL;
		for (unsigned i = 0; i < m->nrows && !r; i++)
			if (m->rows[i].base == base)
				r = &m->rows[i];
		if (!r && m->nrows < MAP_ROWS) {
			r = &m->rows[m->nrows++];
			memset(r, 0, sizeof(*r));
			r->base = base;
		}
		uintptr_t cell_end = ALIGN_DOWN(p, MAP_CELL) + MAP_CELL;
		uintptr_t stop = end < cell_end ? end : cell_end;
		if (r) {
			unsigned c = (unsigned)((p - base) / MAP_CELL);
			if (b->is_free)
				r->freeb[c] += (uint32_t)(stop - p);
			else
				r->used[c] += (uint32_t)(stop - p);
		} else if (p == (uintptr_t)b->p) {
			m->more_rows++;
		}
		p = stop;
	}
	return 0;
}

/* One character per 16 KiB: what keel_walk reported there and what the
 * page tables say about its pages. */
static char map_cell(const struct map_row *r, unsigned c)
{
	uintptr_t va = r->base + (uintptr_t)c * MAP_CELL;
	unsigned present = 0, guard = 0;
	for (uintptr_t off = 0; off < MAP_CELL; off += PAGE_SIZE) {
		uint64_t pte = pt_get(va + off);
		present += (pte & PTE_P) != 0;
		guard += (pte & PTE_GUARD) != 0;
	}
	if (!present)
		return guard ? 'g' : '-';
	uint32_t used = r->used[c], freeb = r->freeb[c];
	if (!used && !freeb)
		return ' ';
	if (!used)
		return '.';
	return used * 4 >= (used + freeb) * 3 ? '#' : '+';
}

static void map_heap(const char *name, struct keel_heap *h, struct map_state *m)
{
	memset(m, 0, sizeof(*m));
	keel_walk(h, map_visit, m);
	static struct keel_stats st;
	keel_stats(h, &st);
	kprintf("%s heap: %lu blocks, %lu segments, ", name, m->nblocks, st.segments);
	print_bytes(st.source_bytes);
	kprintf(" held; %lu maps and %lu unmaps so far\n", st.source_maps, st.source_unmaps);
	for (unsigned i = 0; i < m->nrows; i++) {
		const struct map_row *r = &m->rows[i];
		char cells[MAP_COLS + 1];
		uint64_t used = 0;
		for (unsigned c = 0; c < MAP_COLS; c++) {
			cells[c] = map_cell(r, c);
			used += r->used[c];
		}
		cells[MAP_COLS] = 0;
		kprintf("  %016lx |%s| %3lu%%\n", (uint64_t)r->base, cells,
		        used * 100 / KEEL_SEGMENT_SIZE);
	}
	if (m->more_rows)
		kprintf("  ... and blocks in %u more segments\n", m->more_rows);
	for (unsigned i = 0; i < m->nlarge && i < MAP_LARGE; i++) {
		kprintf("  %016lx  large block, ", (uint64_t)(uintptr_t)m->large[i].p);
		print_bytes(m->large[i].size);
		kprintf("%s\n", m->large[i].is_free ? " (free)" : "");
	}
	if (m->nlarge > MAP_LARGE)
		kprintf("  ... and %u more large blocks\n", m->nlarge - MAP_LARGE);
}

static void cmd_map(int argc, char **argv)
{
	int which = 3;
	if (argc == 2 && !kstrcmp(argv[1], "mon"))
		which = 1;
	else if (argc == 2 && !kstrcmp(argv[1], "kernel"))
		which = 2;
	else if (argc != 1) {
		kprintf("usage: map [mon|kernel]\n");
		return;
	}
	struct map_state *m = keel_malloc(&kernel_heap, sizeof(*m));
	if (!m) {
		kprintf("map: no memory for the picture\n");
		return;
	}
	if (which & 2)
		map_heap("kernel", &kernel_heap, m);
	if (which & 1)
		map_heap("monitor", &mon->heap, m);
	kprintf("  one row per 1 MiB segment, one cell per 16 KiB: # used  + part used  . free\n"
	        "  (blank) header or never handed out  - returned to the source  g guard page\n");
	keel_free(&kernel_heap, m);
}

static void check_heap(const char *name, struct keel_heap *h)
{
	struct keel_fault f = { NULL, NULL };
	if (keel_check(h, &f))
		kprintf("check: %s heap: FAILED: %s at %p\n", name, f.what, f.where);
	else
		kprintf("check: %s heap ok\n", name);
}

static void cmd_check(void)
{
	check_heap("monitor", &mon->heap);
	check_heap("kernel", &kernel_heap);
}

static void cmd_test(int argc, char **argv)
{
	int verbose = argc == 2 && !kstrcmp(argv[1], "-v");
	if (argc > 2 || (argc == 2 && !verbose)) {
		kprintf("usage: test [-v]\n");
		return;
	}
	unsigned passed, failed;
	uint64_t t0 = rdtsc();
	run_tests(verbose ? 0 : RUN_QUIET, &passed, &failed);
	kprintf("test: %u passed, %u failed in %lu ms\n", passed, failed,
	        (unsigned long)((rdtsc() - t0) / (tsc_hz() / 1000 + 1)));
}

/* One bench workload: n rounds of a random size in [lo, hi], keeping up to
 * `live` blocks alive (a ring), on a fresh heap over the kernel source. */
static void bench_one(const char *name, size_t lo, size_t hi, unsigned live, unsigned n)
{
	void **ring = keel_calloc(&kernel_heap, live, sizeof(void *));
	struct keel_heap *h = keel_aligned_alloc(&kernel_heap, 64, sizeof(*h));
	struct keel_config cfg = { .source = &kernel_source, .lock = &kernel_lock };
	if (!ring || !h || keel_heap_init(h, &cfg)) {
		kprintf("bench: no memory\n");
		goto out;
	}
	uint64_t seed = 0x9e3779b97f4a7c15ull, ops = 0;
	uint64_t t0 = rdtsc();
	for (unsigned i = 0; i < n; i++) {
		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		unsigned slot = (unsigned)(seed % live);
		if (ring[slot]) {
			keel_free(h, ring[slot]);
			ops++;
		}
		ring[slot] = keel_malloc(h, lo + (size_t)((seed >> 20) % (hi - lo + 1)));
		ops++;
	}
	for (unsigned i = 0; i < live; i++)
		if (ring[i]) {
			keel_free(h, ring[i]);
			ops++;
		}
	uint64_t cycles = rdtsc() - t0;
	keel_heap_destroy(h);
	kprintf("  %-22s %8lu ops  %6lu cycles/op  %9lu ops/s\n", name, ops, cycles / ops,
	        tsc_hz() ? ops * tsc_hz() / (cycles + 1) : 0);
out:
	keel_free(&kernel_heap, h);
	keel_free(&kernel_heap, ring);
}

static void cmd_bench(void)
{
	kprintf("bench (TSC %lu MHz; emulated CPUs are slow):\n", tsc_hz() / 1000000);
	bench_one("small 16-256, 64 live", 16, 256, 64, 40000);
	bench_one("small 16-1024, 4k live", 16, 1024, 4096, 40000);
	bench_one("medium 1k-64k, 256 live", 1025, 65536, 256, 20000);
	bench_one("large 1m-4m, 4 live", 1 << 20, 4 << 20, 4, 200);
}

static void cmd_mem(void)
{
	size_t total = frame_total_count(), free_frames = frame_free_count();
	kprintf("frames: %lu usable (%lu MiB), %lu used, %lu free (%lu MiB)\n", total, total / 256,
	        total - free_frames, free_frames, free_frames / 256);
	kprintf("page tables: %lu; heap range: ", pt_table_count());
	print_bytes(source_va_bytes());
	kprintf(" mapped, %lu free ranges\n", source_va_ranges());
}

static void cmd_cpus(void)
{
	kprintf("%u CPUs online (MADT: %u enabled, %u disabled; local APIC at %lx); "
	        "%lu TLB shootdowns asked\n",
	        ncpus, acpi_info.ncpus, acpi_info.ndisabled, acpi_info.lapic_pa, tlb_shootdowns);
	for (unsigned i = 0; i < ncpus; i++) {
		const struct cpu *c = cpus[i];
		kprintf("cpu %u: apic %u, %s, %lu timer ticks, %lu TLB shootdowns served\n", c->index,
		        c->apic_id, i ? "started by SIPI" : "bootstrap", (uint64_t)c->ticks,
		        c->tlb_flushes);
		kprintf("  cache (last stress): %lu calls, %lu allocs, %lu freed here, %lu handed on, "
		        "%lu from cpu %u, %lu errors\n",
		        c->st_cache_calls, c->st_allocs, c->st_frees, c->st_sent, c->st_received,
		        (i + ncpus - 1) % ncpus, c->st_errors);
		kprintf("  timer handler heap: %lu allocs, %lu frees, %lu failed, %lu bad\n",
		        (uint64_t)c->isr_allocs, (uint64_t)c->isr_frees, (uint64_t)c->isr_fails,
		        (uint64_t)c->isr_bad);
	}
}

static void cmd_stress(int argc, char **argv)
{
	uint64_t rounds;
	if (argc != 2 || parse_num(argv[1], &rounds, 0) || !rounds || rounds > 10000) {
		kprintf("usage: stress N (rounds, 1-10000)\n");
		return;
	}
	static struct stress_result r;
	uint64_t t0 = rdtsc();
	int rc = smp_stress((unsigned)rounds, &r);
	kprintf("stress: %u rounds on %u CPUs in %lu ms: %lu blocks, %lu crossed CPUs, "
	        "%lu freed where allocated\n",
	        r.rounds, r.ncpus, (unsigned long)((rdtsc() - t0) / (tsc_hz() / 1000 + 1)), r.allocs,
	        r.crossed, r.frees);
	kprintf("  timer handler: %lu allocs, %lu frees in %lu ticks\n", r.isr_allocs, r.isr_frees,
	        r.ticks);
	if (rc)
		kprintf("stress: FAILED: %s\n", r.what[0] ? r.what : "see the counts");
	else
		kprintf("stress: ok (patterns intact, counts add up, check clean, every frame back)\n");
}

/* ---- the loop -------------------------------------------------------------- */

static void halt(void)
{
	kprintf("halt\n");
	qemu_exit(QEMU_EXIT_PASS);
}

static void execute(char *line)
{
	char *argv[8];
	int argc = 0;
	for (char *p = line; *p;) {
		while (*p == ' ' || *p == '\t')
			*p++ = 0;
		if (!*p)
			break;
		if (argc == (int)ARRAY_LEN(argv)) {
			kprintf("too many words\n");
			return;
		}
		argv[argc++] = p;
		while (*p && *p != ' ' && *p != '\t')
			p++;
	}
	if (!argc)
		return;
	const char *c = argv[0];
	if (!kstrcmp(c, "help") || !kstrcmp(c, "?"))
		cmd_help();
	else if (!kstrcmp(c, "alloc"))
		cmd_alloc(argc, argv);
	else if (!kstrcmp(c, "free"))
		cmd_free(argc, argv);
	else if (!kstrcmp(c, "realloc"))
		cmd_realloc(argc, argv);
	else if (!kstrcmp(c, "stats") && argc == 1)
		monitor_stats();
	else if (!kstrcmp(c, "map"))
		cmd_map(argc, argv);
	else if (!kstrcmp(c, "check") && argc == 1)
		cmd_check();
	else if (!kstrcmp(c, "test"))
		cmd_test(argc, argv);
	else if (!kstrcmp(c, "bench") && argc == 1)
		cmd_bench();
	else if (!kstrcmp(c, "mem") && argc == 1)
		cmd_mem();
	else if (!kstrcmp(c, "cpus") && argc == 1)
		cmd_cpus();
	else if (!kstrcmp(c, "stress"))
		cmd_stress(argc, argv);
	else if (!kstrcmp(c, "halt") && argc == 1)
		halt();
	else if (!kstrcmp(c, "stats") || !kstrcmp(c, "check") || !kstrcmp(c, "bench") ||
	         !kstrcmp(c, "mem") || !kstrcmp(c, "halt") || !kstrcmp(c, "cpus"))
		kprintf("%s takes no arguments\n", c);
	else
		kprintf("unknown command '%s' (try help)\n", c);
}

void monitor_init(void)
{
	mon = keel_aligned_alloc(&kernel_heap, 64, sizeof(*mon));
	if (!mon)
		panic("monitor_init: no memory for the monitor");
	struct keel_config cfg = { .source = &kernel_source, .lock = &kernel_lock };
	int rc = keel_heap_init(&mon->heap, &cfg);
	if (rc)
		panic("monitor_init: keel_heap_init: %s", keel_strerror(rc));
	mon->len = 0;
	mon->last = 0;
}

void monitor_run(void)
{
	kprintf("keel monitor: type help for commands, halt (or Ctrl-A X) to leave\n");
	kprintf("keel> ");
	int prev = 0;
	for (;;) {
		int c = serial_getc();
		if (c < 0) {
			__asm__ volatile("pause");
			continue;
		}
		if (c == '\n' && prev == '\r') {
			prev = c;
			continue; /* CR LF is one end of line */
		}
		prev = c;
		if (c == '\r' || c == '\n' || c == 4) {
			kprintf("\n");
			mon->line[mon->len] = 0;
			mon->len = 0;
			execute(mon->line);
			if (c == 4)
				halt();
			kprintf("keel> ");
		} else if (c == 3) {
			/* Ctrl-C: drop the line */
			kprintf("^C\nkeel> ");
			mon->len = 0;
		} else if (c == 8 || c == 127) {
			if (mon->len) {
				mon->len--;
				kprintf("\b \b");
			}
		} else if (c >= ' ' && c < 127) {
			if (mon->len < LINE_MAX) {
				mon->line[mon->len++] = (char)c;
				serial_putc((char)c);
			} else {
				serial_putc('\a');
			}
		}
	}
}
