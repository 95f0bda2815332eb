/* uefi/uefi.h: what the files of the UEFI application share. It reuses the
 * kernel's freestanding helpers (kernel/print.c, kernel/lib.c: kprintf,
 * ksnprintf, memcpy...) and supplies their console, serial_putc/serial_getc,
 * over ConOut/ConIn; everything else is boot services. */
#ifndef UEFI_UEFI_H
#define UEFI_UEFI_H

#include <efi.h>

#include "../alloc/keel.h"
#include "../kernel/kernel.h"

/* main.c */
extern EFI_SYSTEM_TABLE *uefi_st;
void console_flush(void); /* send what serial_putc buffered to ConOut */
uint64_t uefi_tsc_hz(void);
/* Run the shared cases, TAP on the console (quiet: failures and diagnostics
 * only). Returns the number of failed cases; passed/failed may be NULL. */
int uefi_run_tests(int quiet, unsigned *passed, unsigned *failed);
void uefi_exit(unsigned code); /* isa-debug-exit; returns if there is none */

/* source.c: keel's page source over AllocatePages/FreePages. */
extern const struct keel_source uefi_source;
size_t uefi_source_pages(void); /* pages handed out and not yet given back */

/* monitor.c: the interactive monitor; returns the QEMU exit code to use. */
unsigned uefi_monitor(void);

#endif
