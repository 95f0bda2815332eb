/* kernel/acpi.c: finds the CPUs. The RSDP comes from multiboot2 (tag 15, the
 * ACPI 2.0+ copy with the XSDT, preferred; else tag 14, ACPI 1.0 with the
 * RSDT); the MADT gives the local APIC address (type 5 overrides it) and one
 * processor-local-APIC entry (type 0) per CPU. Runs before pt_init, while the
 * boot tables map the low 4 GiB at the direct map, where firmware puts ACPI. */
#include "kernel.h"
#include "percpu.h"

#define MB2_TAG_ACPI_OLD 14
#define MB2_TAG_ACPI_NEW 15

struct rsdp {
	char signature[8];
	uint8_t checksum;
	char oem[6];
	uint8_t revision;
	uint32_t rsdt_pa;
	/* revision 2 and later */
	uint32_t length;
	uint64_t xsdt_pa;
	uint8_t xchecksum, reserved[3];
} __attribute__((packed));

struct sdt {
	char signature[4];
	uint32_t length;
	uint8_t revision, checksum;
	char oem[6], oem_table[8];
	uint32_t oem_revision, creator, creator_revision;
} __attribute__((packed));
_Static_assert(sizeof(struct sdt) == 36, "ACPI table header");

struct madt {
	struct sdt h;
	uint32_t lapic_pa, flags;
} __attribute__((packed));

struct acpi_info acpi_info;

static int sum_ok(const void *p, size_t n)
{
	uint8_t sum = 0;
	for (size_t i = 0; i < n; i++)
		sum = (uint8_t)(sum + ((const uint8_t *)p)[i]);
	return sum == 0;
}

/* The table at pa if it lies in the boot window and its checksum holds. */
static const struct sdt *table_at(uint64_t pa)
{
	if (!pa || pa + sizeof(struct sdt) > BOOT_WINDOW)
		return NULL;
	const struct sdt *t = phys_to_virt(pa);
	if (t->length < sizeof(*t) || pa + t->length > BOOT_WINDOW || !sum_ok(t, t->length))
		return NULL;
	return t;
}

static void madt_parse(const struct madt *m)
{
	acpi_info.has_madt = 1;
	acpi_info.lapic_pa = m->lapic_pa;
	const uint8_t *p = (const uint8_t *)(m + 1), *end = (const uint8_t *)m + m->h.length;
	while (p + 2 <= end && p[1] >= 2 && p + p[1] <= end) {
		if (p[0] == 0 && p[1] >= 8) {
			/* processor local APIC: ACPI id, APIC id, flags (bit 0 enabled) */
			uint32_t flags = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
			                 (uint32_t)p[7] << 24;
			if (!(flags & 1))
				acpi_info.ndisabled++;
			else if (acpi_info.ncpus < MAX_CPUS)
				acpi_info.apic_ids[acpi_info.ncpus++] = p[3];
		} else if (p[0] == 5 && p[1] >= 12) {
			/* local APIC address override: a 64-bit address */
			uint64_t pa = 0;
			for (int i = 0; i < 8; i++)
				pa |= (uint64_t)p[4 + i] << (8 * i);
			acpi_info.lapic_pa = pa;
		}
		p += p[1];
	}
}

void acpi_init(uint64_t mb2_info_pa)
{
	const struct mb2_tag *tag = mb2_find_tag(mb2_info_pa, MB2_TAG_ACPI_NEW);
	if (!tag)
		tag = mb2_find_tag(mb2_info_pa, MB2_TAG_ACPI_OLD);
	if (!tag || tag->size < 8 + 20)
		return;
	const struct rsdp *r = (const void *)(tag + 1);
	if (kstrncmp(r->signature, "RSD PTR ", 8) || !sum_ok(r, 20))
		return;
	acpi_info.rsdp_revision = r->revision;
	/* the XSDT (64-bit entries) when the RSDP has one, else the RSDT */
	const struct sdt *root = NULL;
	size_t entry_bytes = 8;
	if (r->revision >= 2 && tag->size >= 8 + sizeof(*r) && sum_ok(r, sizeof(*r)))
		root = table_at(r->xsdt_pa);
	if (!root) {
		root = table_at(r->rsdt_pa);
		entry_bytes = 4;
	}
	if (!root)
		return;
	const uint8_t *e = (const uint8_t *)(root + 1);
	size_t n = (root->length - sizeof(*root)) / entry_bytes;
	for (size_t i = 0; i < n; i++, e += entry_bytes) {
		uint64_t pa = 0;
		for (size_t b = 0; b < entry_bytes; b++)
			pa |= (uint64_t)e[b] << (8 * b);
		const struct sdt *t = table_at(pa);
		if (t && !kstrncmp(t->signature, "APIC", 4) && t->length >= sizeof(struct madt)) {
			madt_parse((const struct madt *)t);
			return;
		}
	}
}
