/* source_linux.h: the Linux page source, mmap/munmap/mprotect over raw
 * syscalls. Freestanding and libc-free, so a program with no libc at all
 * (tests/seed_example.asm) can link it. */
#ifndef KEEL_HOSTED_SOURCE_LINUX_H
#define KEEL_HOSTED_SOURCE_LINUX_H

#include "../alloc/keel.h"

/* Thread-safe (mmap is), zeroed (anonymous mappings are), with protect.
 * ctx is unused. */
extern const struct keel_source keel_linux_source;

#endif
