/* boot/multiboot2.S: the multiboot2 header GRUB looks for in the first 32 KiB
 * of the image (linker.ld places it first and asserts that). No tags but the
 * end tag: an ELF kernel needs no address tag, and text mode is fine. */
#include "../kernel/layout.h"

	.section .multiboot, "a"
	.balign 8
	.global mb2_header
mb2_header:
	/* magic, architecture (i386 protected mode), length, checksum */
	.long MB2_HEADER_MAGIC
	.long 0
	.long mb2_header_end - mb2_header
	.long 0x100000000 - (MB2_HEADER_MAGIC + (mb2_header_end - mb2_header))
	/* end tag: type 0, flags 0, size 8 */
	.balign 8
	.short 0
	.short 0
	.long 8
mb2_header_end:

	/* no executable stack */
	.section .note.GNU-stack, "", @progbits
