/* tests/suites.c: the one list of case tables every runner walks, in order. */
#include "test.h"

const struct t_case *const t_suites[] = {
	selftest_cases, basic_cases,  calloc_cases, free_cases,   realloc_cases,
	align_cases,    region_cases, source_cases, heap_cases,   introspect_cases,
	random_cases,   cache_cases,  misuse_cases, inject_cases, corrupt_cases, NULL,
};
