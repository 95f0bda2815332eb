# keel: one Makefile for every home. Output goes under build/<home>/, mirroring
# the source path; the core is compiled once per home with that home's flags.
# Targets: all test run bench iso clean help. Quiet unless V=1.

Q := $(if $(filter 1,$(V)),,@)
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
# Three homes, each with the core, the cases and the Linux source compiled
# freestanding, and a runner that links them with libc:
#   hosted-gcc    $(GCC),   CFLAGS_CORE as is
#   hosted-clang  $(CLANG), CFLAGS_CORE as is
#   hosted-asan   $(CLANG), CFLAGS_CORE at -O1 with ASan+UBSan, and the core's
#                 asserts on (KEEL_DEBUG=2, reported by hosted/keel_assert.h).
#                 The core stays -ffreestanding: the instrumentation only adds
#                 calls into the sanitizer runtime, which the runner's link
#                 brings in. ASan cannot see keel's blocks inside mmap'd
#                 segments; it checks keel's own stack/global accesses, UBSan
#                 all of its arithmetic.
# gcc and clang build the core exactly as an embedder would (KEEL_DEBUG=0).
# Only hosted/run_tests.c and hosted/demo.c use libc.
GCC ?= gcc
NASM ?= nasm
NM ?= nm
SAN := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
CFLAGS_HOSTED := -std=c11 -O2 -g $(WARN) -MMD -MP

HOSTED_HOMES := gcc clang asan
hosted_cc_gcc := $(GCC)
hosted_cc_clang := $(CLANG)
hosted_cc_asan := $(CLANG)
hosted_core_gcc := $(CFLAGS_CORE)
hosted_core_clang := $(CFLAGS_CORE)
hosted_core_asan := $(filter-out -O2,$(CFLAGS_CORE)) -O1 $(SAN) -DKEEL_DEBUG=2 \
                     -include hosted/keel_assert.h
hosted_libc_gcc := $(CFLAGS_HOSTED)
hosted_libc_clang := $(CFLAGS_HOSTED)
hosted_libc_asan := $(filter-out -O2,$(CFLAGS_HOSTED)) -O1 $(SAN) -DKEEL_HOSTED_SANITIZE
hosted_ld_asan := $(SAN)

# Freestanding in every home; run_tests.c and demo.c get the home's libc flags.
HOSTED_FREE_SRCS := $(CORE_SRCS) $(TEST_SRCS) hosted/source_linux.c hosted/seed_glue.c
HOSTED_LIBC_SRCS := hosted/run_tests.c hosted/demo.c

HOSTED_OBJS := # simple, so each home's += below expands H at once
# $(call hosted_home,NAME): the rules of build/hosted-NAME/.
define hosted_home
H := $(BUILD)/hosted-$(1)
HOSTED_CORE_OBJS_$(1) := $$(CORE_SRCS:%.c=$$(H)/%.o)
HOSTED_RUNNER_OBJS_$(1) := $$(HOSTED_CORE_OBJS_$(1)) $$(TEST_SRCS:%.c=$$(H)/%.o) \
                           $$(H)/hosted/source_linux.o $$(H)/hosted/run_tests.o
HOSTED_OBJS += $$(HOSTED_FREE_SRCS:%.c=$$(H)/%.o) $$(HOSTED_LIBC_SRCS:%.c=$$(H)/%.o)

$$(HOSTED_FREE_SRCS:%.c=$$(H)/%.o): $$(H)/%.o: %.c
	@mkdir -p $$(@D)
	$$(call say,CC,$$@)
	$$(Q)$$(hosted_cc_$(1)) $$(hosted_core_$(1)) -c $$< -o $$@
$$(HOSTED_LIBC_SRCS:%.c=$$(H)/%.o): $$(H)/%.o: %.c
	@mkdir -p $$(@D)
	$$(call say,CC,$$@)
	$$(Q)$$(hosted_cc_$(1)) $$(hosted_libc_$(1)) -c $$< -o $$@
$$(H)/run_tests: $$(HOSTED_RUNNER_OBJS_$(1))
	$$(call say,LD,$$@)
	$$(Q)$$(hosted_cc_$(1)) -Wl,--fatal-warnings $$(hosted_ld_$(1)) $$^ -o $$@
endef
say = $(if $(filter 1,$(V)),,@printf '  %-6s %s\n' '$(1)' '$(2)')
$(foreach h,$(HOSTED_HOMES),$(eval $(call hosted_home,$(h))))

HOSTED_RUNNERS := $(HOSTED_HOMES:%=$(BUILD)/hosted-%/run_tests)
HG := $(BUILD)/hosted-gcc

# The seed's NASM example, linked with no libc at all: core, Linux source, glue.
$(HG)/tests/seed_example.o: tests/seed_example.asm
	@mkdir -p $(@D)
	$(call say,NASM,$@)
	$(Q)$(NASM) -f elf64 -g -w+all -Werror $< -o $@
$(HG)/seed_example: $(HG)/tests/seed_example.o $(HG)/hosted/seed_glue.o \
                    $(HG)/hosted/source_linux.o $(HOSTED_CORE_OBJS_gcc)
	$(call say,LD,$@)
	$(Q)$(LD) --fatal-warnings -static -nostdlib -e _start $^ -o $@

# `make run` until the kernel boots: the kernel section then deletes the line
# `run: run-hosted` below and gives `run` its own recipe.
$(HG)/demo: $(HG)/hosted/demo.o $(HG)/hosted/source_linux.o $(HOSTED_CORE_OBJS_gcc)
	$(call say,LD,$@)
	$(Q)$(GCC) -Wl,--fatal-warnings $^ -o $@
run-hosted: $(HG)/demo
	$(Q)$(HG)/demo

hosted: $(HOSTED_RUNNERS) $(HG)/seed_example $(HG)/demo
all: hosted
.PHONY: hosted run-hosted

# Test suites: each leaves build/test/<suite>.tap (see the test summary).
TAP_SUITES += gcc clang asan seed demo nm-gcc nm-clang
$(HOSTED_HOMES:%=$(BUILD)/test/%.tap): $(BUILD)/test/%.tap: $(BUILD)/hosted-%/run_tests FORCE
	$(call say,TEST,$@)
	$(Q)scripts/tap-run $@ $<
$(BUILD)/test/seed.tap: $(HG)/seed_example FORCE
	$(call say,TEST,$@)
	$(Q)scripts/tap-run -n seed_example $@ $<
$(BUILD)/test/demo.tap: $(HG)/demo FORCE
	$(call say,TEST,$@)
	$(Q)scripts/tap-run -n hosted_demo $@ $<
$(BUILD)/test/nm-gcc.tap: $(HOSTED_CORE_OBJS_gcc) FORCE
	$(call say,TEST,$@)
	$(Q)NM=$(NM) scripts/tap-run $@ scripts/nm-check $(HOSTED_CORE_OBJS_gcc)
$(BUILD)/test/nm-clang.tap: $(HOSTED_CORE_OBJS_clang) FORCE
	$(call say,TEST,$@)
	$(Q)NM=$(NM) scripts/tap-run $@ scripts/nm-check $(HOSTED_CORE_OBJS_clang)

-include $(HOSTED_OBJS:.o=.d)

# ---- kernel (x86-64, multiboot2) -------------------------------------------
# The kernel home: the core, the shared cases and kernel/ compiled with kernel
# flags (higher half, no red zone, no SSE), linked by linker.ld into
# build/kernel/keel.elf; GRUB wraps it into build/keel.iso. $(CC) builds it
# (CC=clang works); build/kernel-clang/ is the same build with $(CLANG), kept
# as a suite so clang keeps compiling it. tests/qemu boots the ISO.
KERNEL_SRCS := $(CORE_SRCS) $(TEST_SRCS) \
               $(wildcard kernel/*.c) $(wildcard kernel/*.S) $(wildcard boot/*.S)
CFLAGS_KERNEL := $(CFLAGS_CORE) -mno-red-zone -mcmodel=kernel -fno-pic -fno-pie \
                 -fno-asynchronous-unwind-tables -DKEEL_DEBUG=1
# the core reports a failed KL_ASSERT through the kernel console
CFLAGS_KERNEL_CORE := -include kernel/keel_assert.h
LDFLAGS_KERNEL := -T linker.ld -nostdlib -z max-page-size=0x1000 --fatal-warnings
QEMU ?= qemu-system-x86_64
GRUB_MKRESCUE ?= grub-mkrescue
KERNEL_MEMS := 128M 32M 1G

KERNEL_OBJS := # simple, so each home's += below expands K at once
# $(call kernel_home,DIR,COMPILER): the rules of build/DIR/ and build/DIR/keel.elf.
define kernel_home
K := $(BUILD)/$(1)
KERNEL_OBJS_$(1) := $$(patsubst %,$$(K)/%.o,$$(basename $$(KERNEL_SRCS)))
KERNEL_OBJS += $$(KERNEL_OBJS_$(1))
$$(K)/%.o: %.c
	@mkdir -p $$(@D)
	$$(call say,CC,$$@)
	$$(Q)$(2) $$(CFLAGS_KERNEL) $$(if $$(filter alloc/%,$$<),$$(CFLAGS_KERNEL_CORE)) -c $$< -o $$@
$$(K)/%.o: %.S
	@mkdir -p $$(@D)
	$$(call say,AS,$$@)
	$$(Q)$(2) $$(CFLAGS_KERNEL) -c $$< -o $$@
$$(K)/keel.elf: $$(KERNEL_OBJS_$(1)) linker.ld
	$$(call say,LD,$$@)
	$$(Q)$$(LD) $$(LDFLAGS_KERNEL) $$(KERNEL_OBJS_$(1)) -o $$@
endef
$(eval $(call kernel_home,kernel,$(CC)))
$(eval $(call kernel_home,kernel-clang,$(CLANG)))

# The ISO: GRUB (BIOS) with only the modules grub.cfg uses, about 4 MiB.
$(BUILD)/keel.iso: $(BUILD)/kernel/keel.elf boot/grub.cfg
	@mkdir -p $(BUILD)/iso/boot/grub
	$(call say,ISO,$@)
	$(Q)cp $(BUILD)/kernel/keel.elf $(BUILD)/iso/boot/keel.elf
	$(Q)cp boot/grub.cfg $(BUILD)/iso/boot/grub/grub.cfg
	$(Q)$(GRUB_MKRESCUE) --install-modules="multiboot2 normal test smbios" --locales= \
		--fonts= --themes= -o $@ $(BUILD)/iso 2>$(BUILD)/iso.log || \
		{ cat $(BUILD)/iso.log >&2; exit 1; }
iso: $(BUILD)/keel.iso
kernel: $(BUILD)/kernel/keel.elf
all: iso
.PHONY: kernel

# make run: the monitor on this terminal (quit with `halt`, or Ctrl-A X).
# Without a terminal on stdin, stdin is the monitor's input and Ctrl-D (sent
# after it) halts: `echo stats | make run`. QEMU exits 33 on halt.
QEMU_RUN := $(QEMU) -M pc -accel tcg -m 128M -display none -no-reboot \
            -device isa-debug-exit,iobase=0xf4,iosize=0x04 -cdrom $(BUILD)/keel.iso \
            -smbios type=11,value=keel.mode=monitor
run: $(BUILD)/keel.iso
	$(Q)if [ -t 0 ]; then $(QEMU_RUN) -serial mon:stdio; else \
		{ cat; printf '\004'; } | timeout 600 $(QEMU_RUN) -serial stdio; fi; \
		rc=$$?; [ $$rc -eq 33 ] || { echo "make run: QEMU exit status $$rc" >&2; exit 1; }
RUN_HELP := boot the kernel in QEMU and open its monitor on this terminal (halt or Ctrl-A X quits)

# Suites: the kernel's cases at three memory sizes, the monitor driven through
# the serial port (tests/qemu all boots them two at a time), and the clang
# build of the kernel. One boot alone: tests/qemu kernel 32M build/keel.iso OUT.tap
TAP_SUITES += $(KERNEL_MEMS:%=kernel-%) monitor kernel-clang
KERNEL_TAPS := $(KERNEL_MEMS:%=$(BUILD)/test/kernel-%.tap) $(BUILD)/test/monitor.tap
$(KERNEL_TAPS) &: $(BUILD)/keel.iso FORCE
	$(call say,QEMU,$(KERNEL_TAPS))
	$(Q)tests/qemu all $(BUILD)/keel.iso $(BUILD)/test
$(BUILD)/test/kernel-clang.tap: FORCE
	$(call say,TEST,$@)
	$(Q)scripts/tap-run -n kernel_clang_build $@ $(MAKE) --no-print-directory \
		$(BUILD)/kernel-clang/keel.elf

-include $(KERNEL_OBJS:.o=.d)

# ---- test summary -----------------------------------------------------------
# A suite is one TAP file, build/test/<suite>.tap, made by a rule that always
# leaves the file (scripts/tap-run records a bad exit in it). To add a suite,
# append its name to TAP_SUITES and write the rule for its .tap file.
# `make test` checks the packages, rebuilds every suite (going on past a suite
# whose build fails, which then counts as failed), prints each suite's count
# and ends with one line "N passed, N failed"; it fails if anything failed.
TAP_FILES = $(TAP_SUITES:%=$(BUILD)/test/%.tap)

test:
	$(Q)scripts/deps
	$(Q)rm -rf $(BUILD)/test
	$(Q)$(MAKE) --no-print-directory -k $(TAP_FILES) || true
	$(Q)scripts/tap-sum $(TAP_FILES)

deps:
	$(Q)scripts/deps

FORCE:
.PHONY: FORCE

help:
	@echo 'keel targets:'
	@echo '  make run     $(RUN_HELP)'
	@echo '  make test    install missing packages (scripts/deps), build and run every'
	@echo '               suite ($(TAP_SUITES)), print "N passed, N failed"'
	@echo '  make all     build everything (hosted runners, seed example, demo, ...)'
	@echo '  make deps    install the packages the build needs, if missing'
	@echo '  make clean   remove build/'
	@echo 'Output goes to build/<home>/; V=1 shows the commands.'
RUN_HELP ?= run the hosted demo (a heap on mmap: allocate, free, stats, check)

clean:
	$(Q)rm -rf $(BUILD)
