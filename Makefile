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
TEST_SRCS := $(filter-out tests/fuzz.c,$(wildcard tests/*.c)) # fuzz.c: see hardening

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
HOSTED_LIBC_SRCS := hosted/run_tests.c hosted/demo.c hosted/stress.c hosted/dropin_test.c \
                    hosted/guard_test.c

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

# `make run-hosted`: the demo on Linux (`make run` boots the kernel).
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

# keel.h as C++: it must compile on its own with g++ and clang++.
TAP_SUITES += header-cxx
$(BUILD)/test/header-cxx.tap: tests/keel_h.cpp alloc/keel.h FORCE
	$(call say,TEST,$@)
	$(Q)scripts/tap-run -n keel_h_gxx_and_clangxx $@ sh -c '\
		g++ -std=c++17 -Wall -Wextra -Werror -fsyntax-only tests/keel_h.cpp && \
		clang++ -std=c++17 -Wall -Wextra -Werror -fsyntax-only tests/keel_h.cpp'

-include $(HOSTED_OBJS:.o=.d)

# ---- drop-in (Linux malloc) -------------------------------------------------
# build/libkeel.so (LD_PRELOAD) and build/libkeel.a: the core and the Linux
# source compiled freestanding with -fPIC and hidden visibility, so only the
# keel_ API (KEEL_API) and hosted/dropin.c's malloc family are exported.
# Suites: dropin (glibc semantics, threads, fork, misuse, under LD_PRELOAD),
# stress (4 threads x 1 M operations on per-thread caches) and its
# ThreadSanitizer build, programs (real programs with and without keel).
DI := $(BUILD)/dropin
# Link-time optimisation lets malloc and free inline the cache's fast paths
# (a handful of instructions each); fat objects keep libkeel.a usable by any
# linker. keel_ calls inside the library bind to keel's own definitions
# (-Bsymbolic-functions), so the compiler may inline them too.
DROPIN_LTO := -flto=auto -ffat-lto-objects -fno-semantic-interposition
DROPIN_FREE_SRCS := $(CORE_SRCS) hosted/source_linux.c
DROPIN_OBJS := $(DROPIN_FREE_SRCS:%.c=$(DI)/%.o) $(DI)/hosted/dropin.o
$(DROPIN_FREE_SRCS:%.c=$(DI)/%.o): $(DI)/%.o: %.c
	@mkdir -p $(@D)
	$(call say,CC,$@)
	$(Q)$(GCC) $(CFLAGS_CORE) $(DROPIN_LTO) -DKEEL_MEMCPY=memcpy -fPIC -fvisibility=hidden \
		-c $< -o $@
$(DI)/hosted/dropin.o: hosted/dropin.c
	@mkdir -p $(@D)
	$(call say,CC,$@)
	$(Q)$(GCC) $(CFLAGS_HOSTED) $(DROPIN_LTO) -mgeneral-regs-only -fPIC -fvisibility=hidden -c $< -o $@
$(BUILD)/libkeel.so: $(DROPIN_OBJS)
	$(call say,LD,$@)
	$(Q)$(GCC) -O2 $(DROPIN_LTO) -shared -pthread -Wl,-z,defs -Wl,-Bsymbolic-functions \
		-Wl,--fatal-warnings $^ -o $@
$(BUILD)/libkeel.a: $(DROPIN_OBJS)
	$(call say,AR,$@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^
dropin: $(BUILD)/libkeel.so $(BUILD)/libkeel.a
all: dropin
.PHONY: dropin

# The stress test on the hosted-gcc core, and again with everything under
# ThreadSanitizer (clang, its own home: build/hosted-tsan/).
$(HG)/stress: $(HG)/hosted/stress.o $(HG)/hosted/source_linux.o $(HOSTED_CORE_OBJS_gcc)
	$(call say,LD,$@)
	$(Q)$(GCC) -pthread -Wl,--fatal-warnings $^ -o $@
$(HG)/dropin_test: $(HG)/hosted/dropin_test.o
	$(call say,LD,$@)
	$(Q)$(GCC) -pthread -Wl,--fatal-warnings $^ -o $@
TS := $(BUILD)/hosted-tsan
TSAN := -fsanitize=thread
$(TS)/%.o: %.c
	@mkdir -p $(@D)
	$(call say,CC,$@)
	$(Q)$(CLANG) $(if $(filter alloc/% hosted/source_linux.c,$<),$(filter-out -O2,$(CFLAGS_CORE)),$(filter-out -O2,$(CFLAGS_HOSTED))) -O1 $(TSAN) -c $< -o $@
$(TS)/stress: $(TS)/hosted/stress.o $(TS)/hosted/source_linux.o $(CORE_SRCS:%.c=$(TS)/%.o)
	$(call say,LD,$@)
	$(Q)$(CLANG) $(TSAN) -pthread $^ -o $@

TAP_SUITES += dropin stress stress-tsan programs
$(BUILD)/test/dropin.tap: $(HG)/dropin_test $(BUILD)/libkeel.so FORCE
	$(call say,TEST,$@)
	$(Q)LD_PRELOAD=$(abspath $(BUILD)/libkeel.so) scripts/tap-run -t 120 $@ $<
$(BUILD)/test/stress.tap: $(HG)/stress FORCE
	$(call say,TEST,$@)
	$(Q)scripts/tap-run -t 300 $@ $< 1000000
$(BUILD)/test/stress-tsan.tap: $(TS)/stress FORCE
	$(call say,TEST,$@)
	$(Q)TSAN_OPTIONS=halt_on_error=1 scripts/tap-run -t 300 $@ $< 100000
$(BUILD)/test/programs.tap: $(BUILD)/libkeel.so FORCE
	$(call say,TEST,$@)
	$(Q)scripts/tap-run -t 400 $@ tests/programs $(abspath $(BUILD)/libkeel.so) $(BUILD)/programs

-include $(DROPIN_OBJS:.o=.d) $(TS)/hosted/stress.d $(TS)/hosted/source_linux.d \
         $(CORE_SRCS:%.c=$(TS)/%.d)

# ---- valgrind ------------------------------------------------------------------
# The core built with KEEL_VALGRIND=1 tells memcheck of every block it hands
# out and takes back (valgrind's header-only client requests); tests/valgrind
# runs hosted/valgrind_test under memcheck: a clean run, a leak, a one-byte
# overflow and a read after free, each of which memcheck must name.
VG := $(BUILD)/hosted-vg
VG_FREE_SRCS := $(CORE_SRCS) hosted/source_linux.c
$(VG_FREE_SRCS:%.c=$(VG)/%.o): $(VG)/%.o: %.c
	@mkdir -p $(@D)
	$(call say,CC,$@)
	$(Q)$(GCC) $(CFLAGS_CORE) -DKEEL_VALGRIND=1 -c $< -o $@
$(VG)/hosted/valgrind_test.o: hosted/valgrind_test.c
	@mkdir -p $(@D)
	$(call say,CC,$@)
	$(Q)$(GCC) $(CFLAGS_HOSTED) -c $< -o $@
$(VG)/valgrind_test: $(VG)/hosted/valgrind_test.o $(VG_FREE_SRCS:%.c=$(VG)/%.o)
	$(call say,LD,$@)
	$(Q)$(GCC) -Wl,--fatal-warnings $^ -o $@
TAP_SUITES += valgrind
$(BUILD)/test/valgrind.tap: $(VG)/valgrind_test FORCE
	$(call say,TEST,$@)
	$(Q)scripts/tap-run -t 300 $@ tests/valgrind $<
-include $(VG_FREE_SRCS:%.c=$(VG)/%.d) $(VG)/hosted/valgrind_test.d

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

# The ISO: GRUB with only the modules grub.cfg uses, about 5 MiB; it boots on
# BIOS and, through the EFI image grub-mkrescue adds, on UEFI (OVMF).
$(BUILD)/keel.iso: $(BUILD)/kernel/keel.elf boot/grub.cfg
	@mkdir -p $(BUILD)/iso/boot/grub
	$(call say,ISO,$@)
	$(Q)cp $(BUILD)/kernel/keel.elf $(BUILD)/iso/boot/keel.elf
	$(Q)cp boot/grub.cfg $(BUILD)/iso/boot/grub/grub.cfg
	$(Q)$(GRUB_MKRESCUE) --install-modules="multiboot2 normal test smbios regexp" --locales= \
		--fonts= --themes= -o $@ $(BUILD)/iso 2>$(BUILD)/iso.log || \
		{ cat $(BUILD)/iso.log >&2; exit 1; }
iso: $(BUILD)/keel.iso
kernel: $(BUILD)/kernel/keel.elf
all: iso
.PHONY: kernel

# make run: the monitor on this terminal (quit with `halt`, or Ctrl-A X).
# Without a terminal on stdin, stdin is the monitor's input and Ctrl-D (sent
# after it) halts: `echo stats | make run`. QEMU exits 33 on halt, 0 on
# Ctrl-A X (accepted only from a terminal: otherwise 0 is a triple fault).
# MEM=1G picks the RAM size (default 128M), SMP=1 the number of CPUs (default 4).
MEM ?= 128M
SMP ?= 4
QEMU_RUN = $(QEMU) -M pc -accel tcg -m $(MEM) -smp $(SMP) -display none -no-reboot \
           -device isa-debug-exit,iobase=0xf4,iosize=0x04 -cdrom $(BUILD)/keel.iso \
           -smbios type=11,value=keel.mode=monitor
# $(call qemu_interactive,QEMU COMMAND[,LOG]): that, with the serial line on
# this terminal; with LOG, piped input waits until the prompt is in LOG.
comma := ,
qemu_interactive = if [ -t 0 ]; then $(1) -serial mon:stdio; rc=$$?; [ $$rc -eq 0 ] && rc=33; \
	else { $(if $(2),n=0; until grep -qs 'keel> ' $(2) || [ $$n -gt 300 ]; do \
	sleep 1; n=$$((n + 1)); done;) cat; printf '\004'; } | timeout 600 $(1) \
	$(if $(2),-chardev stdio$(comma)id=con$(comma)logfile=$(2) -serial chardev:con,-serial stdio); \
	rc=$$?; fi; \
		[ $$rc -eq 33 ] || { echo "make $@: QEMU exit status $$rc" >&2; exit 1; }
run: $(BUILD)/keel.iso
	$(Q)$(call qemu_interactive,$(QEMU_RUN))
RUN_HELP := boot the kernel in QEMU and open its monitor on this terminal (halt or Ctrl-A X quits)

# Suites: the kernel's cases at three memory sizes, the monitor driven through
# the serial port, tests/qemu's check that broken boots count as failed
# (tests/qemu all boots them all at once), and the clang build of the kernel.
# One boot alone: tests/qemu kernel 32M build/keel.iso OUT.tap
TAP_SUITES += $(KERNEL_MEMS:%=kernel-%) monitor qemu-selfcheck kernel-clang
KERNEL_TAPS := $(KERNEL_MEMS:%=$(BUILD)/test/kernel-%.tap) $(BUILD)/test/monitor.tap \
               $(BUILD)/test/qemu-selfcheck.tap
# kernel-smp4: the cases at 128M on four CPUs (-smp 4), where the SMP stress
# hands blocks between CPUs (the other boots have one CPU).
TAP_SUITES += kernel-smp4
KERNEL_TAPS += $(BUILD)/test/kernel-smp4.tap
$(KERNEL_TAPS) &: $(BUILD)/keel.iso FORCE
	$(call say,QEMU,$(KERNEL_TAPS))
	$(Q)tests/qemu all $(BUILD)/keel.iso $(BUILD)/test
$(BUILD)/test/kernel-clang.tap: FORCE
	$(call say,TEST,$@)
	$(Q)scripts/tap-run -n kernel_clang_build $@ $(MAKE) --no-print-directory \
		$(BUILD)/kernel-clang/keel.elf

-include $(KERNEL_OBJS:.o=.d)

# ---- UEFI application (GNU-EFI) ----------------------------------------------
# build/keel.efi: the core, the shared cases, uefi/ and the kernel's printf and
# memcpy (kernel/print.c, kernel/lib.c) compiled for UEFI into build/uefi/
# (position-independent, no red zone, 2-byte wchar_t for UCS-2 strings, the
# firmware's ms_abi calls), linked by gnu-efi's crt0 and linker script into an
# ELF shared object, which objcopy turns into a PE image. build/uefi/esp.img
# is a FAT image holding it as EFI/BOOT/BOOTX64.EFI, which OVMF boots by
# itself. Each QEMU run gets its own copy of the OVMF variables.
EFI_INC ?= /usr/include/efi
EFI_LIB ?= /usr/lib
OBJCOPY ?= objcopy
OVMF_CODE ?= /usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS ?= /usr/share/OVMF/OVMF_VARS_4M.fd
UE := $(BUILD)/uefi
UEFI_SRCS := $(CORE_SRCS) $(TEST_SRCS) $(wildcard uefi/*.c) kernel/print.c kernel/lib.c
UEFI_OBJS := $(UEFI_SRCS:%.c=$(UE)/%.o)
CFLAGS_UEFI := $(CFLAGS_CORE) -fpic -fshort-wchar -mno-red-zone -fno-asynchronous-unwind-tables \
               -DKEEL_DEBUG=1 -DGNU_EFI_USE_MS_ABI -isystem $(EFI_INC) -isystem $(EFI_INC)/x86_64
LDFLAGS_UEFI := -nostdlib -znocombreloc -shared -Bsymbolic --fatal-warnings \
                -T $(EFI_LIB)/elf_x86_64_efi.lds
$(UEFI_OBJS): $(UE)/%.o: %.c
	@mkdir -p $(@D)
	$(call say,CC,$@)
	$(Q)$(CC) $(CFLAGS_UEFI) $(if $(filter alloc/%,$<),$(CFLAGS_KERNEL_CORE)) -c $< -o $@
$(UE)/keel.so: $(UEFI_OBJS)
	$(call say,LD,$@)
	$(Q)$(LD) $(LDFLAGS_UEFI) $(EFI_LIB)/crt0-efi-x86_64.o $^ -L$(EFI_LIB) -lgnuefi -o $@
$(BUILD)/keel.efi: $(UE)/keel.so
	$(call say,EFI,$@)
	$(Q)$(OBJCOPY) -j .text -j .sdata -j .data -j .dynamic -j .dynsym -j .rel -j .rela \
		-j '.rel.*' -j '.rela.*' -j .reloc --target efi-app-x86_64 --subsystem=10 $< $@
$(UE)/esp.img: $(BUILD)/keel.efi
	$(call say,FAT,$@)
	$(Q)rm -f $@ && dd if=/dev/zero of=$@ bs=1k count=2880 status=none && \
		mformat -i $@ -f 2880 :: && mmd -i $@ ::/EFI ::/EFI/BOOT && \
		mcopy -i $@ $< ::/EFI/BOOT/BOOTX64.EFI
efi: $(BUILD)/keel.efi $(UE)/esp.img
all: efi
.PHONY: efi

# make run-efi: the application's monitor on this terminal, as make run does
# for the kernel. Piped input (`echo stats | make run-efi`) waits for the
# application's prompt: the firmware reads and drops what comes earlier.
# EFI_MEM: the RAM (256M).
EFI_MEM ?= 256M
QEMU_EFI_RUN = $(QEMU) -M pc -accel tcg -m $(EFI_MEM) -display none -no-reboot -nic none \
               -drive if=pflash,format=raw,readonly=on,file=$(OVMF_CODE) \
               -drive if=pflash,format=raw,file=$(UE)/run-vars.fd \
               -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
               -drive format=raw,file=$(UE)/esp.img,snapshot=on \
               -smbios type=11,value=keel.mode=monitor
run-efi: $(UE)/esp.img
	$(Q)cp $(OVMF_VARS) $(UE)/run-vars.fd && rm -f $(UE)/run.log
	$(Q)$(call qemu_interactive,$(QEMU_EFI_RUN),$(UE)/run.log)
.PHONY: run-efi

# Suites, booted by OVMF side by side (tests/qemu ovmf): kernel-ovmf, the
# kernel's cases at 128M with build/keel.iso started by UEFI GRUB, and uefi,
# the shared cases in the application at 256M (a case maps up to about
# 11 MiB, and the firmware keeps its share of RAM).
# One boot alone: tests/qemu efi 256M build/uefi/esp.img OUT.tap
TAP_SUITES += kernel-ovmf uefi
OVMF_TAPS := $(BUILD)/test/kernel-ovmf.tap $(BUILD)/test/uefi.tap
$(OVMF_TAPS) &: $(BUILD)/keel.iso $(UE)/esp.img FORCE
	$(call say,QEMU,$(OVMF_TAPS))
	$(Q)tests/qemu ovmf $(BUILD)/keel.iso $(UE)/esp.img $(BUILD)/test

-include $(UEFI_OBJS:.o=.d)

# ---- embedding kit ------------------------------------------------------------
# For kernels that copy keel in (PORTING.md):
#   make amalgamation   build/dist/keel.c + keel.h: the core as one file pair
#   make install        libkeel.a, libkeel.so (drop-in section), keel.h and
#                       keel.pc under PREFIX (default /usr/local; DESTDIR too)
# Suites: dist-gcc/dist-clang build the amalgamation with kernel flags and
# check its symbols; dist runs the cases linked with it over a static-buffer
# source (hosted/run_static.c); liballoc and liballoc-names run the liballoc
# adapter (compat/) over mock hooks; install installs into a temporary prefix
# and builds a program with pkg-config.
DIST := $(BUILD)/dist
DT := $(BUILD)/dist-test
# The issue's kernel flags, plus -fno-pic (kernel code model, PIE compilers).
CFLAGS_DIST_KERNEL := -std=c11 -O2 $(WARN) -ffreestanding -nostdlib -mno-red-zone \
                      -mgeneral-regs-only -mcmodel=kernel -fno-pic -fno-pie

amalgamation: $(DIST)/keel.c $(DIST)/keel.h
$(DIST)/keel.c: scripts/amalgamate $(CORE_SRCS) $(wildcard alloc/*.h)
	$(call say,GEN,$@)
	$(Q)scripts/amalgamate $(DIST)
$(DIST)/keel.h: $(DIST)/keel.c ;

$(DT)/keel-gcc.o: $(DIST)/keel.c
	@mkdir -p $(@D)
	$(call say,CC,$@)
	$(Q)$(GCC) $(CFLAGS_DIST_KERNEL) -c $< -o $@
$(DT)/keel-clang.o: $(DIST)/keel.c
	@mkdir -p $(@D)
	$(call say,CC,$@)
	$(Q)$(CLANG) $(CFLAGS_DIST_KERNEL) -c $< -o $@
# The runner: keel.c with ordinary hosted flags, and the cases compiled from a
# copy whose "../alloc/keel.h" is build/dist/keel.h, so they see only dist/.
$(DT)/keel.o: $(DIST)/keel.c
	@mkdir -p $(@D)
	$(call say,CC,$@)
	$(Q)$(GCC) $(CFLAGS_HOSTED) -c $< -o $@
$(DT)/alloc/keel.h: $(DIST)/keel.h
	@mkdir -p $(@D)
	$(Q)cp $< $@
$(DT)/tests/%: tests/%
	@mkdir -p $(@D)
	$(Q)cp $< $@
$(DT)/hosted/run_static.c: hosted/run_static.c
	@mkdir -p $(@D)
	$(Q)cp $< $@
.PRECIOUS: $(DT)/tests/% $(DT)/hosted/run_static.c
$(DT)/tests/%.o: $(DT)/tests/%.c $(DT)/tests/test.h $(DT)/alloc/keel.h
	$(call say,CC,$@)
	$(Q)$(GCC) $(CFLAGS_CORE) -c $< -o $@
$(DT)/hosted/run_static.o: $(DT)/hosted/run_static.c $(DT)/tests/test.h $(DT)/alloc/keel.h
	$(call say,CC,$@)
	$(Q)$(GCC) $(CFLAGS_HOSTED) -c $< -o $@
$(DT)/run_static: $(DT)/keel.o $(DT)/hosted/run_static.o $(TEST_SRCS:%.c=$(DT)/%.o)
	$(call say,LD,$@)
	$(Q)$(GCC) -Wl,--fatal-warnings $^ -o $@

# The liballoc adapter, freestanding like the core, and its runner on the
# hosted-gcc core and cases.
$(BUILD)/compat/liballoc.o: compat/liballoc.c
	@mkdir -p $(@D)
	$(call say,CC,$@)
	$(Q)$(GCC) $(CFLAGS_CORE) -c $< -o $@
$(BUILD)/compat/run_liballoc.o: compat/run_liballoc.c
	@mkdir -p $(@D)
	$(call say,CC,$@)
	$(Q)$(GCC) $(CFLAGS_HOSTED) -c $< -o $@
$(BUILD)/compat/run_liballoc: $(BUILD)/compat/run_liballoc.o $(BUILD)/compat/liballoc.o \
                              $(HOSTED_CORE_OBJS_gcc) $(TEST_SRCS:%.c=$(HG)/%.o)
	$(call say,LD,$@)
	$(Q)$(GCC) -Wl,--fatal-warnings $^ -o $@
-include $(BUILD)/compat/liballoc.d $(BUILD)/compat/run_liballoc.d \
         $(DT)/hosted/run_static.d

# make install: the drop-in's libraries, the header and a pkg-config file.
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
KEEL_VERSION := $(shell sed -n 's/^\#define KEEL_VERSION "\(.*\)"$$/\1/p' alloc/keel.h)
install: $(BUILD)/libkeel.a $(BUILD)/libkeel.so alloc/keel.h scripts/keel.pc.in
	$(call say,INSTALL,$(DESTDIR)$(PREFIX))
	$(Q)install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	$(Q)install -m 644 $(BUILD)/libkeel.a $(DESTDIR)$(LIBDIR)/libkeel.a
	$(Q)install -m 755 $(BUILD)/libkeel.so $(DESTDIR)$(LIBDIR)/libkeel.so
	$(Q)install -m 644 alloc/keel.h $(DESTDIR)$(INCLUDEDIR)/keel.h
	$(Q)sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
		-e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(KEEL_VERSION)|' \
		scripts/keel.pc.in >$(DESTDIR)$(PKGCONFIGDIR)/keel.pc
.PHONY: amalgamation install

TAP_SUITES += dist-gcc dist-clang dist liballoc liballoc-names install
$(BUILD)/test/dist-%.tap: $(DT)/keel-%.o FORCE
	$(call say,TEST,$@)
	$(Q)NM=$(NM) scripts/tap-run $@ scripts/nm-check $<
$(BUILD)/test/dist.tap: $(DT)/run_static FORCE
	$(call say,TEST,$@)
	$(Q)scripts/tap-run $@ $<
$(BUILD)/test/liballoc.tap: $(BUILD)/compat/run_liballoc FORCE
	$(call say,TEST,$@)
	$(Q)scripts/tap-run $@ $<
$(BUILD)/test/liballoc-names.tap: $(BUILD)/compat/run_liballoc FORCE
	$(call say,TEST,$@)
	$(Q)scripts/tap-run $@ $< names
$(BUILD)/test/install.tap: FORCE
	$(call say,TEST,$@)
	$(Q)scripts/tap-run $@ scripts/install-test "$(MAKE)" $(GCC)

# ---- bench ------------------------------------------------------------------
# make bench: bench/bench.c's workloads under keel (build/libkeel.so, from the
# drop-in section), glibc, jemalloc, mimalloc and tcmalloc-minimal, RUNS
# interleaved rounds (default 5), into build/bench/report.md and report.png
# (scripts/bench says how runs are checked and compared). A few minutes.
# make bench-callgrind: instructions per operation of the single-threaded
# workloads under each allocator, into build/bench/callgrind.md.
# Suite bench: every workload at a tiny scale under glibc prints its line and
# the same checksum twice (under a second); the suite also builds the
# workloads with clang, whose warnings differ.
CFLAGS_BENCH := -std=c11 -O2 -g -pthread -Wall -Wextra -Werror
RUNS ?= 5

$(BUILD)/bench/bench: bench/bench.c
	@mkdir -p $(@D)
	$(call say,CC,$@)
	$(Q)$(GCC) $(CFLAGS_BENCH) $< -o $@
$(BUILD)/bench/bench-clang: bench/bench.c
	@mkdir -p $(@D)
	$(call say,CC,$@)
	$(Q)$(CLANG) $(CFLAGS_BENCH) $< -o $@
bench: $(BUILD)/bench/bench $(BUILD)/libkeel.so
	$(Q)scripts/deps
	$(Q)scripts/bench --runs $(RUNS)
bench-callgrind: $(BUILD)/bench/bench $(BUILD)/libkeel.so
	$(Q)scripts/deps
	$(Q)scripts/bench --callgrind
.PHONY: bench-callgrind

TAP_SUITES += bench
$(BUILD)/test/bench.tap: $(BUILD)/bench/bench $(BUILD)/bench/bench-clang FORCE
	$(call say,TEST,$@)
	$(Q)scripts/tap-run -t 120 $@ scripts/bench --tap

# ---- hardening --------------------------------------------------------------
# Issue 7's suites beyond the shared cases (tests/misuse.c and tests/inject.c
# are in TEST_SRCS, so every runner has them):
#   guard  hosted/guard_test.c: a checked heap's large blocks sit between guard
#          pages; a child process steps off either end and must die of SIGSEGV.
#   fuzz   tests/fuzz.c under libFuzzer for FUZZ_TEST_SECS (60) seconds from
#          the seed corpus tests/fuzz-corpus/; ok iff nothing is found. The
#          core and the Linux source are built with clang, coverage feedback,
#          ASan+UBSan and KEEL_DEBUG=2 (build/fuzz/).
# make fuzz: the same for FUZZ_SECS (default 300) seconds; the corpus grows in
# build/fuzz/corpus/, a finding is saved as build/fuzz/crash-* (replay it:
# build/fuzz/fuzz build/fuzz/crash-...).
FZ := $(BUILD)/fuzz
FUZZ_SECS ?= 300
FUZZ_TEST_SECS ?= 60
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CORE_FLAGS := $(filter-out -O2,$(CFLAGS_CORE)) -O1 $(FUZZ_SAN) -fsanitize=fuzzer-no-link \
                   -DKEEL_DEBUG=2 -include hosted/keel_assert.h
FUZZ_FREE_SRCS := $(CORE_SRCS) hosted/source_linux.c
FUZZ_OBJS := $(FUZZ_FREE_SRCS:%.c=$(FZ)/%.o) $(FZ)/tests/fuzz.o
$(FUZZ_FREE_SRCS:%.c=$(FZ)/%.o): $(FZ)/%.o: %.c
	@mkdir -p $(@D)
	$(call say,CC,$@)
	$(Q)$(CLANG) $(FUZZ_CORE_FLAGS) -c $< -o $@
$(FZ)/tests/fuzz.o: tests/fuzz.c
	@mkdir -p $(@D)
	$(call say,CC,$@)
	$(Q)$(CLANG) $(FUZZ_CORE_FLAGS) -c $< -o $@
$(FZ)/fuzz: $(FUZZ_OBJS)
	$(call say,LD,$@)
	$(Q)$(CLANG) $(FUZZ_SAN) -fsanitize=fuzzer $^ -o $@
fuzz: $(FZ)/fuzz
	$(Q)scripts/fuzz-run $(FZ)/fuzz $(FUZZ_SECS) tests/fuzz-corpus $(FZ)

$(HG)/guard_test: $(HG)/hosted/guard_test.o $(HG)/hosted/source_linux.o $(HOSTED_CORE_OBJS_gcc)
	$(call say,LD,$@)
	$(Q)$(GCC) -Wl,--fatal-warnings $^ -o $@
.PHONY: fuzz

TAP_SUITES += guard fuzz
$(BUILD)/test/guard.tap: $(HG)/guard_test FORCE
	$(call say,TEST,$@)
	$(Q)scripts/tap-run -t 60 $@ $<
$(BUILD)/test/fuzz.tap: $(FZ)/fuzz FORCE
	$(call say,TEST,$@)
	$(Q)scripts/tap-run -t $$(($(FUZZ_TEST_SECS) + 120)) $@ scripts/fuzz-run --tap $< \
		$(FUZZ_TEST_SECS) tests/fuzz-corpus $(FZ)/test

-include $(FUZZ_OBJS:.o=.d)

# ---- coverage -----------------------------------------------------------------
# make coverage: line and branch coverage of alloc/*.c from the hosted suites,
# printed and written to build/coverage/report.txt (gcc --coverage, plain
# gcov). The core is built once at -O0 (so lines map to code) with -fPIC, and
# the same objects make the runner, hosted/whitebox.c, the stress test, the
# guard test and build/coverage/libkeel.so, so every run adds to one set of
# counts. scripts/coverage clears the counts, runs those (dropin_test under
# the drop-in) and sums gcov's output; COV_MIN (95) is the line figure the
# coverage suite requires. About 15 s.
# Suite whitebox: hosted/whitebox.c, on the hosted-gcc core, breaks each
# invariant keel_check tests (fields the API cannot reach) and checks the
# label it reports, then repairs it and checks the heap is clean again.
COV := $(BUILD)/coverage
COV_MIN ?= 95
CFLAGS_COV_CORE := $(filter-out -O2,$(CFLAGS_CORE)) -O0 -fPIC --coverage -fprofile-update=atomic
COV_FREE_SRCS := $(TEST_SRCS) hosted/source_linux.c
COV_LIBC_SRCS := hosted/run_tests.c hosted/whitebox.c hosted/stress.c hosted/guard_test.c
COV_CORE_OBJS := $(CORE_SRCS:%.c=$(COV)/%.o)
COV_SOURCE_OBJ := $(COV)/hosted/source_linux.o
COV_PROGS := $(COV)/run_tests $(COV)/whitebox $(COV)/stress $(COV)/guard_test \
             $(COV)/dropin_test $(COV)/libkeel.so
$(COV_CORE_OBJS): $(COV)/%.o: %.c
	@mkdir -p $(@D)
	$(call say,CC,$@)
	$(Q)$(GCC) $(CFLAGS_COV_CORE) -c $< -o $@
$(COV_FREE_SRCS:%.c=$(COV)/%.o): $(COV)/%.o: %.c
	@mkdir -p $(@D)
	$(call say,CC,$@)
	$(Q)$(GCC) $(CFLAGS_CORE) -fPIC -c $< -o $@
$(COV_LIBC_SRCS:%.c=$(COV)/%.o) $(COV)/hosted/dropin.o: $(COV)/%.o: %.c
	@mkdir -p $(@D)
	$(call say,CC,$@)
	$(Q)$(GCC) $(CFLAGS_HOSTED) -fPIC -c $< -o $@
$(COV)/run_tests: $(COV_CORE_OBJS) $(TEST_SRCS:%.c=$(COV)/%.o) $(COV_SOURCE_OBJ) \
                  $(COV)/hosted/run_tests.o
$(COV)/whitebox: $(COV_CORE_OBJS) $(COV_SOURCE_OBJ) $(COV)/hosted/whitebox.o
$(COV)/guard_test: $(COV_CORE_OBJS) $(COV_SOURCE_OBJ) $(COV)/hosted/guard_test.o
$(COV)/stress: $(COV_CORE_OBJS) $(COV_SOURCE_OBJ) $(COV)/hosted/stress.o
$(COV)/run_tests $(COV)/whitebox $(COV)/guard_test $(COV)/stress:
	$(call say,LD,$@)
	$(Q)$(GCC) --coverage -pthread -Wl,--fatal-warnings $^ -o $@
$(COV)/libkeel.so: $(COV_CORE_OBJS) $(COV_SOURCE_OBJ) $(COV)/hosted/dropin.o
	$(call say,LD,$@)
	$(Q)$(GCC) --coverage -shared -pthread -Wl,-z,defs -Wl,-Bsymbolic-functions \
		-Wl,--fatal-warnings $^ -o $@
$(COV)/dropin_test: $(HG)/dropin_test
	$(Q)cp $< $@
coverage: $(COV_PROGS)
	$(Q)scripts/coverage $(COV) $(COV_MIN)
.PHONY: coverage

# The whitebox test on the hosted-gcc core, as an embedder builds it.
$(HG)/hosted/whitebox.o: hosted/whitebox.c
	@mkdir -p $(@D)
	$(call say,CC,$@)
	$(Q)$(GCC) $(CFLAGS_HOSTED) -c $< -o $@
$(HG)/whitebox: $(HG)/hosted/whitebox.o $(HG)/hosted/source_linux.o $(HOSTED_CORE_OBJS_gcc)
	$(call say,LD,$@)
	$(Q)$(GCC) -Wl,--fatal-warnings $^ -o $@

TAP_SUITES += whitebox coverage
$(BUILD)/test/whitebox.tap: $(HG)/whitebox FORCE
	$(call say,TEST,$@)
	$(Q)scripts/tap-run -t 60 $@ $<
$(BUILD)/test/coverage.tap: $(COV_PROGS) FORCE
	$(call say,TEST,$@)
	$(Q)scripts/tap-run -t 120 $@ scripts/coverage --tap $(COV) $(COV_MIN)

-include $(COV_CORE_OBJS:.o=.d) $(COV_FREE_SRCS:%.c=$(COV)/%.d) \
         $(COV_LIBC_SRCS:%.c=$(COV)/%.d) $(COV)/hosted/dropin.d $(HG)/hosted/whitebox.d

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
	$(Q)$(MAKE) --no-print-directory -k test-suites || true
	$(Q)scripts/tap-sum $(TAP_FILES)
# every suite's TAP file; make test calls it with -k and sums what it left
test-suites: $(TAP_FILES)
.PHONY: test-suites

deps:
	$(Q)scripts/deps

FORCE:
.PHONY: FORCE

help:
	@echo 'keel targets:'
	@echo '  make run     $(RUN_HELP)'
	@echo '  make run-hosted  the hosted demo: a heap on mmap allocates, frees, prints stats'
	@echo '  make run-efi     boot the UEFI application (OVMF) and open its monitor here'
	@echo '  make test    install missing packages (scripts/deps), build and run every'
	@echo '               suite ($(TAP_SUITES)), print "N passed, N failed"'
	@echo '  make bench   time every workload under keel, glibc, jemalloc, mimalloc and'
	@echo '               tcmalloc (RUNS=5): build/bench/report.md, report.png'
	@echo '  make bench-callgrind  instructions per operation: build/bench/callgrind.md'
	@echo '  make fuzz    run the libFuzzer target for FUZZ_SECS (300) seconds; findings'
	@echo '               go to build/fuzz/crash-*'
	@echo '  make coverage  line and branch coverage of alloc/ from the hosted suites:'
	@echo '               build/coverage/report.txt'
	@echo '  make all     build everything (hosted runners, seed example, demo, ...)'
	@echo '  make deps    install the packages the build needs, if missing'
	@echo '  make clean   remove build/'
	@echo 'Output goes to build/<home>/; V=1 shows the commands.'
RUN_HELP ?= run the hosted demo (a heap on mmap: allocate, free, stats, check)

clean:
	$(Q)rm -rf $(BUILD)
