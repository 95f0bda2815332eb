# keel: one Makefile for every home. Output goes under build/<home>/, mirroring
# the source path; the core is compiled once per home with that home's flags.
# Targets: all test run bench iso clean help. Quiet unless V=1.

Q := $(if $(V),,@)
CC ?= cc
CLANG ?= clang
BUILD := build

WARN := -Wall -Wextra -Werror -Wshadow -Wundef -Wcast-align -Wmissing-prototypes \
        -Wstrict-prototypes -Wpointer-arith
CFLAGS_CORE := -std=c11 -O2 -g $(WARN) -ffreestanding -fno-builtin -nostdlib \
               -mgeneral-regs-only -fno-stack-protector -MMD -MP

CORE_SRCS := $(wildcard alloc/*.c)
TEST_SRCS := $(wildcard tests/*.c)

.PHONY: all test run bench iso clean help deps
all:

# ---- hosted (Linux) ---------------------------------------------------------

# ---- kernel (x86-64, multiboot2) -------------------------------------------

# ---- test summary -----------------------------------------------------------

clean:
	rm -rf $(BUILD)
