/* uefi/main.c: keel as a UEFI application (build/keel.efi, started as
 * EFI/BOOT/BOOTX64.EFI). Boot services stay up: the heap's pages come from
 * AllocatePages (source.c). The console is ConOut/ConIn (OVMF mirrors both on
 * the serial line) plus QEMU's debug console, port 0xe9, which carries only
 * this application's bytes. QEMU's SMBIOS OEM string chooses the mode, as
 * for the kernel: keel.mode=monitor opens the monitor, anything else runs the
 * shared cases and exits QEMU through isa-debug-exit. */
#include "../kernel/cpu.h"
#include "../kernel/keel_assert.h"
#include "../tests/test.h"
#include "uefi.h"

#define DEBUGCON 0xe9

EFI_SYSTEM_TABLE *uefi_st;
static uint64_t tsc_per_sec;

/* ---- console ------------------------------------------------------------------- */

/* ConOut takes UCS-2 strings, so bytes are gathered into one until a newline. */
static CHAR16 con_buf[160];
static size_t con_len;

void console_flush(void)
{
	if (!con_len)
		return;
	con_buf[con_len] = 0;
	uefi_st->ConOut->OutputString(uefi_st->ConOut, con_buf);
	con_len = 0;
}

static void con_put(CHAR16 c)
{
	if (con_len + 1 == ARRAY_LEN(con_buf))
		console_flush();
	con_buf[con_len++] = c;
}

void serial_putc(char c)
{
	outb(DEBUGCON, (uint8_t)c);
	if (c == '\n')
		con_put('\r');
	con_put((CHAR16)(unsigned char)c);
	if (c == '\n')
		console_flush();
}

/* A typed character (UEFI delivers Enter as CR, Backspace as BS), or -1. */
int serial_getc(void)
{
	EFI_INPUT_KEY key;
	console_flush();
	if (EFI_ERROR(uefi_st->ConIn->ReadKeyStroke(uefi_st->ConIn, &key)))
		return -1;
	return key.UnicodeChar && key.UnicodeChar < 128 ? key.UnicodeChar : -1;
}

void keel_assert_fail(const char *file, int line, const char *expr)
{
	panic("keel_assert_fail: %s:%d: %s", file, line, expr);
}

void uefi_exit(unsigned code)
{
	console_flush();
	/* isa-debug-exit (iobase 0xf4): QEMU exits with (code << 1) | 1 */
	outl(0xf4, code);
}

uint64_t uefi_tsc_hz(void)
{
	return tsc_per_sec;
}

/* ---- the mode, from QEMU's -smbios type=11,value=... ------------------------------ */

static uint64_t read_le(const uint8_t *p, unsigned nbytes)
{
	uint64_t v = 0;
	while (nbytes--)
		v = v << 8 | p[nbytes];
	return v;
}

static int guid_is(const EFI_GUID *g, EFI_GUID want)
{
	return !memcmp(g, &want, sizeof(want));
}

/* The first string of the SMBIOS OEM strings structure (type 11), or NULL. */
static const char *smbios_oem_string(void)
{
	const uint8_t *table = NULL;
	size_t len = 0;
	for (UINTN i = 0; i < uefi_st->NumberOfTableEntries; i++) {
		const EFI_CONFIGURATION_TABLE *c = &uefi_st->ConfigurationTable[i];
		const uint8_t *ep = c->VendorTable;
		if (guid_is(&c->VendorGuid, (EFI_GUID)SMBIOS3_TABLE_GUID) && !memcmp(ep, "_SM3_", 5)) {
			/* 3.x entry point: table address at 0x10 (8 bytes), maximum size at 0x0c */
			table = (const uint8_t *)(uintptr_t)read_le(ep + 0x10, 8);
			len = read_le(ep + 0x0c, 4);
			break;
		}
		if (guid_is(&c->VendorGuid, (EFI_GUID)SMBIOS_TABLE_GUID) && !memcmp(ep, "_SM_", 4)) {
			/* 2.x entry point: table length at 0x16 (2 bytes), address at 0x18 (4) */
			table = (const uint8_t *)(uintptr_t)read_le(ep + 0x18, 4);
			len = read_le(ep + 0x16, 2);
		}
	}
	/* each structure: type, length of the formatted part, handle, ..., then
	 * its strings, each NUL-terminated, and one more NUL */
	for (const uint8_t *p = table, *end = table + len; p && p + 4 <= end;) {
		const uint8_t *s = p + p[1];
		if (p[0] == 11 && p[1] >= 5 && p[4] >= 1 && s < end)
			return (const char *)s;
		if (p[0] == 127 || p[1] < 4)
			break;
		while (s + 1 < end && (s[0] || s[1]))
			s++;
		p = s + 2;
	}
	return NULL;
}

static int has_word(const char *s, const char *word)
{
	size_t n = kstrlen(word);
	for (; s && *s; s++)
		if (!kstrncmp(s, word, n))
			return 1;
	return 0;
}

/* ---- the test runner's environment --------------------------------------------- */

static long foreign_slot;
static int quiet_tap, at_line_start = 1, line_shown;

void t_env_write(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		/* quiet: only "not ok", "#" and "Bail out!" lines */
		if (at_line_start)
			line_shown = !quiet_tap || s[i] == 'n' || s[i] == '#' || s[i] == 'B';
		if (line_shown)
			serial_putc(s[i]);
		at_line_start = s[i] == '\n';
	}
}

const struct keel_source *t_env_source(void)
{
	return &uefi_source;
}

void *t_env_foreign_pointer(void)
{
	return &foreign_slot;
}

int uefi_run_tests(int quiet, unsigned *passed, unsigned *failed)
{
	unsigned np = 0, nf = 0;
	size_t pages = uefi_source_pages();
	uint64_t t0 = rdtsc();
	quiet_tap = quiet;
	t_run_all(&np, &nf);
	quiet_tap = 0;
	if (uefi_source_pages() != pages) {
		kprintf("# uefi: %lu pages not given back after the cases\n",
		        uefi_source_pages() - pages);
		nf++;
	}
	kprintf("# uefi: %u passed, %u failed in %lu ms\n", np, nf,
	        (unsigned long)((rdtsc() - t0) / (tsc_per_sec / 1000 + 1)));
	if (passed)
		*passed = np;
	if (failed)
		*failed = nf;
	return (int)nf;
}

/* ---- entry ------------------------------------------------------------------- */

/* gnu-efi's crt0 calls this with the System V convention (not EFIAPI). */
EFI_STATUS efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *st);
EFI_STATUS efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *st)
{
	(void)image;
	uefi_st = st;
	/* no watchdog: the boot manager's 5 minutes would reset an idle monitor */
	st->BootServices->SetWatchdogTimer(0, 0, 0, NULL);
	uint64_t t0 = rdtsc();
	st->BootServices->Stall(10000);
	tsc_per_sec = (rdtsc() - t0) * 100;

	const char *oem = smbios_oem_string();
	int is_monitor = has_word(oem, "keel.mode=monitor");
	kprintf("\nkeel %s UEFI application (%s mode; firmware revision %x, UEFI %u.%u)\n",
	        KEEL_VERSION, is_monitor ? "monitor" : "test", st->FirmwareRevision,
	        st->Hdr.Revision >> 16, st->Hdr.Revision & 0xffff);
	unsigned code;
	if (is_monitor)
		code = uefi_monitor();
	else
		code = uefi_run_tests(0, NULL, NULL) ? QEMU_EXIT_FAIL : QEMU_EXIT_PASS;
	uefi_exit(code);
	/* no isa-debug-exit: back to the firmware */
	return code == QEMU_EXIT_PASS ? EFI_SUCCESS : EFI_ABORTED;
}
