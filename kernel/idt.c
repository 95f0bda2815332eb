/* kernel/idt.c: the IDT. Every CPU exception prints its vector, error code,
 * RIP (and CR2 for a page fault) and the registers, then exits QEMU with the
 * failing status; unless fault_try is armed, in which case the exception is
 * recorded and execution resumes in fault_try. The PIC is remapped to 32-47
 * and fully masked (the kernel polls), so only spurious IRQs can arrive.
 * Vectors 48-63 belong to the local APIC (timer, wake-up IPI, spurious):
 * smp.c handles them. */
#include "cpu.h"
#include "kernel.h"
#include "percpu.h"

struct isr_frame {
	uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
	uint64_t vector, error;
	uint64_t rip, cs, rflags, rsp, ss; /* pushed by the CPU */
};

struct idt_gate {
	uint16_t offset_lo, selector;
	uint8_t ist, type_attr;
	uint16_t offset_mid;
	uint32_t offset_hi, zero;
} __attribute__((packed));
_Static_assert(sizeof(struct idt_gate) == 16, "IDT gate layout");

/* where an expected fault resumes (kjmp_set/kjmp_resume in isr.S) */
struct kjmp {
	uint64_t rbx, rbp, r12, r13, r14, r15, rsp, rip;
};
int kjmp_set(struct kjmp *j) __attribute__((returns_twice));
void kjmp_resume(void);

#define NVECTORS 64
extern const uint64_t isr_stubs[NVECTORS];
static struct idt_gate idt[256];
static struct kjmp catch_jmp;
static volatile int catch_armed;
static struct fault_info catch_info;

static const char *const exc_names[32] = {
	"divide error", "debug", "NMI", "breakpoint", "overflow", "bound range",
	"invalid opcode", "device not available", "double fault", "coprocessor overrun",
	"invalid TSS", "segment not present", "stack fault", "general protection",
	"page fault", "reserved", "x87 FPU error", "alignment check", "machine check",
	"SIMD error", "virtualization", "control protection", "reserved", "reserved",
	"reserved", "reserved", "reserved", "reserved", "hypervisor injection",
	"VMM communication", "security", "reserved",
};

static void idt_set(unsigned vec, uint64_t handler, unsigned ist)
{
	idt[vec] = (struct idt_gate){
		.offset_lo = (uint16_t)handler,
		.selector = GDT_KCODE,
		.ist = (uint8_t)ist,
		.type_attr = 0x8e, /* present, ring 0, 64-bit interrupt gate */
		.offset_mid = (uint16_t)(handler >> 16),
		.offset_hi = (uint32_t)(handler >> 32),
	};
}

static void pic_init(void)
{
	/* start initialisation of both PICs (ICW1: edge, cascade, ICW4 follows) */
	outb(0x20, 0x11);
	outb(0xa0, 0x11);
	/* ICW2: vector offsets 32 and 40 */
	outb(0x21, 32);
	outb(0xa1, 40);
	/* ICW3: slave on line 2 */
	outb(0x21, 4);
	outb(0xa1, 2);
	/* ICW4: 8086 mode */
	outb(0x21, 1);
	outb(0xa1, 1);
	/* mask every line: the kernel polls */
	outb(0x21, 0xff);
	outb(0xa1, 0xff);
}

void idt_init(void)
{
	for (unsigned v = 0; v < NVECTORS; v++) {
		/* IST1: double fault, IST2: page fault, IST3: NMI and machine check */
		unsigned ist = v == 8 ? 1 : v == 14 ? 2 : (v == 2 || v == 18) ? 3 : 0;
		idt_set(v, isr_stubs[v], ist);
	}
	idt_load();
	pic_init();
}

void idt_load(void)
{
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) ptr = { sizeof(idt) - 1, (uintptr_t)idt };
	__asm__ volatile("lidt %0" : : "m"(ptr));
}

static void irq_handle(unsigned irq)
{
	/* a spurious IRQ 7 or 15 is not in service and gets no EOI */
	if (irq == 7 || irq == 15) {
		uint16_t port = irq == 7 ? 0x20 : 0xa0;
		outb(port, 0x0b); /* read the in-service register next */
		if (!(inb(port) & 0x80)) {
			if (irq == 15)
				outb(0x20, 0x20);
			return;
		}
	}
	if (irq >= 8)
		outb(0xa0, 0x20);
	outb(0x20, 0x20);
}

void isr_dispatch(struct isr_frame *f);
void isr_dispatch(struct isr_frame *f)
{
	if (f->vector >= 48) {
		smp_interrupt((unsigned)f->vector);
		return;
	}
	if (f->vector >= 32) {
		irq_handle((unsigned)f->vector - 32);
		return;
	}
	uint64_t cr2 = read_cr2();
	/* an expected fault: record it and resume in fault_try */
	if (catch_armed && f->vector != 2 && f->vector != 8 && f->vector != 18) {
		catch_armed = 0;
		catch_info = (struct fault_info){ (unsigned)f->vector, f->error, f->rip, cr2 };
		f->rip = (uint64_t)(uintptr_t)kjmp_resume;
		f->rdi = (uint64_t)(uintptr_t)&catch_jmp;
		return;
	}
	kprintf("\nexception %u (%s) error=0x%lx\n", (unsigned)f->vector, exc_names[f->vector],
	        f->error);
	kprintf("  rip=%016lx rsp=%016lx rflags=%016lx cs=%lx\n", f->rip, f->rsp, f->rflags,
	        f->cs);
	if (f->vector == 14)
		kprintf("  cr2=%016lx (%s, %s%s)\n", cr2, f->error & 1 ? "protection" : "not present",
		        f->error & 2 ? "write" : "read", f->error & 16 ? ", fetch" : "");
	kprintf("  rax=%016lx rbx=%016lx rcx=%016lx rdx=%016lx\n", f->rax, f->rbx, f->rcx, f->rdx);
	kprintf("  rsi=%016lx rdi=%016lx rbp=%016lx r8 =%016lx\n", f->rsi, f->rdi, f->rbp, f->r8);
	kprintf("  r9 =%016lx r10=%016lx r11=%016lx r12=%016lx\n", f->r9, f->r10, f->r11, f->r12);
	kprintf("  r13=%016lx r14=%016lx r15=%016lx\n", f->r13, f->r14, f->r15);
	if (f->vector == 14 && cr2 >= (uintptr_t)kstack_guard &&
	    cr2 < (uintptr_t)kstack_guard + PAGE_SIZE)
		kprintf("  (kernel stack overflow)\n");
	kprintf("Bail out! exception %u\n", (unsigned)f->vector);
	qemu_exit(QEMU_EXIT_FAIL);
}

int fault_try(void (*fn)(void *arg), void *arg, struct fault_info *out)
{
	if (kjmp_set(&catch_jmp) == 0) {
		catch_armed = 1;
		fn(arg);
		catch_armed = 0;
		return 0;
	}
	*out = catch_info;
	return 1;
}
