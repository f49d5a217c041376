/* dirtyguest: a freestanding 32-bit x86 kernel that dirties guest RAM at a
 * controlled rate, so that live-migration tests have a real guest whose
 * dirty-page rate is known and which boots in ~0.1 s under TCG.
 *
 * How it works: boot.S enters with paging off on a flat GDT and calls
 * kmain().  kmain reads the memory map and command line from whichever boot
 * protocol was used (Multiboot v1 on pc/q35, PVH start_info on microvm),
 * sets up the IDT, the 8259 PIC (IRQ0 only) and, if there is a local APIC,
 * LINT0 = ExtINT so the PIC's output reaches the CPU on every machine type.
 * It calibrates the TSC against PIT channel 0, starts the PIT at `hz`,
 * touches every working-set page once (fill=1) and prints READY on COM1.
 * The main loop sleeps in `sti; hlt` between timer ticks and on each tick
 * writes `wpp` words into as many distinct 4 KiB pages as the schedule
 * says, sweeping the working set in order.  The schedule is either wall
 * clock (pace=tsc: pages owed since READY, with up to one second of catch-up)
 * or timer ticks (pace=tick: a fixed number of pages per delivered tick).
 * Once per TSC second it prints an S line with what it really did.
 *
 * No libc and no libgcc: 64-bit division goes through udiv64*(), and the
 * compiler's implicit memset/memcpy calls land on the versions below.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bootdefs.h"

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;

#define MiB             (1u << 20)
#define PAGE_SIZE       4096u
#define PAGES_PER_MiB   (MiB / PAGE_SIZE)
#define PIT_HZ          1193182u
#define COM1            0x3f8
#define LAPIC_BASE_MSR  0x1b
#define FOUR_GiB        (1ull << 32)

/* ---- called from boot.S (declared here, defined below) ---- */
struct exc_frame {
        u32 edi, esi, ebp, esp, ebx, edx, ecx, eax;     /* pushal */
        u32 vector, error;                              /* our stub */
        u32 eip, cs, eflags;                            /* the CPU */
};
void kmain(u32 magic, u32 info, u32 kind) __attribute__((noreturn));
void exc_handler(struct exc_frame *f) __attribute__((noreturn));
void irq_handler(u32 irq);
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);

extern const u32 exc_stubs[32];
extern const u32 irq_stubs[16];
extern void ignore_int(void);
extern char _end[];

/* ---- CPU and port access ---- */

static inline void outb(u16 port, u8 v) {
        __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline u8 inb(u16 port) {
        u8 v;
        __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
        return v;
}

static inline u64 rdtsc(void) {
        u32 lo, hi;
        __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
        return ((u64) hi << 32) | lo;
}

static inline u64 rdmsr(u32 msr) {
        u32 lo, hi;
        __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
        return ((u64) hi << 32) | lo;
}

static inline void cpuid(u32 leaf, u32 *a, u32 *b, u32 *c, u32 *d) {
        __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

static void __attribute__((noreturn)) halt_forever(void) {
        for (;;)
                __asm__ volatile("cli; hlt");
}

void *memset(void *d, int c, size_t n) {
        void *ret = d;
        __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
        return ret;
}

void *memcpy(void *d, const void *s, size_t n) {
        void *ret = d;
        __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
        return ret;
}

/* ---- 64-bit division without libgcc ---- */

/* n / d for a 32-bit divisor: two divl, the high half first, so the
 * second one can never overflow. */
static u64 udiv64_32(u64 n, u32 d, u32 *ret_rem) {
        u32 hi = (u32) (n >> 32), lo = (u32) n;
        u32 qhi = hi / d, r = hi % d, qlo;

        __asm__("divl %4" : "=a"(qlo), "=d"(r) : "a"(lo), "d"(r), "rm"(d));
        if (ret_rem)
                *ret_rem = r;
        return ((u64) qhi << 32) | qlo;
}

/* n / d for any d > 0; bit-by-bit when d does not fit in 32 bits (then the
 * quotient does, and this runs a few times a second at most). */
static u64 udiv64(u64 n, u64 d) {
        u64 q = 0, r = 0;

        if ((d >> 32) == 0)
                return udiv64_32(n, (u32) d, NULL);
        for (int i = 63; i >= 0; i--) {
                r = (r << 1) | ((n >> i) & 1);
                if (r >= d) {
                        r -= d;
                        q |= 1ull << i;
                }
        }
        return q;
}

/* ---- COM1 ---- */

static void serial_init(void) {
        outb(COM1 + 1, 0x00);           /* no UART interrupts */
        outb(COM1 + 3, 0x80);           /* DLAB */
        outb(COM1 + 0, 0x01);           /* 115200 */
        outb(COM1 + 1, 0x00);
        outb(COM1 + 3, 0x03);           /* 8N1 */
        outb(COM1 + 2, 0xc7);           /* FIFO on, cleared */
        outb(COM1 + 4, 0x03);           /* DTR, RTS */
}

static void serial_putc(char c) {
        /* Bounded: a missing UART reads 0xff, a stuck one must not hang us. */
        for (u32 i = 0; i < 100000 && !(inb(COM1 + 5) & 0x20); i++)
                ;
        outb(COM1, (u8) c);
}

static void put_str(const char *s) {
        while (*s)
                serial_putc(*s++);
}

static void put_u64(u64 v) {
        char buf[21];
        int n = 0;

        do {
                u32 r;
                v = udiv64_32(v, 10, &r);
                buf[n++] = (char) ('0' + r);
        } while (v);
        while (n)
                serial_putc(buf[--n]);
}

static void put_hex(u32 v) {
        for (int s = 28; s >= 0; s -= 4)
                serial_putc("0123456789abcdef"[(v >> s) & 15]);
}

/* Tiny printf: %u (u32), %U (u64), %x (u32, 8 digits), %s, %%. */
static void kprintf(const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        for (; *fmt; fmt++) {
                if (*fmt != '%') {
                        serial_putc(*fmt);
                        continue;
                }
                switch (*++fmt) {
                case 'u': put_u64(va_arg(ap, u32)); break;
                case 'U': put_u64(va_arg(ap, u64)); break;
                case 'x': put_hex(va_arg(ap, u32)); break;
                case 's': put_str(va_arg(ap, const char *)); break;
                case '%': serial_putc('%'); break;
                case '\0': fmt--; break;
                default: serial_putc('?'); break;
                }
        }
        va_end(ap);
}

/* ---- configuration (kernel command line) ---- */

enum pace { PACE_TSC, PACE_TICK };

static struct {
        u32 mib;        /* working set, MiB (clamped to RAM) */
        u32 off;        /* working set start, MiB */
        u32 rate;       /* MiB/s of distinct pages; 0 = idle */
        bool rate_max;  /* unthrottled */
        u32 wpp;        /* 32-bit words written per page, 1..1024 */
        u32 hz;         /* PIT frequency */
        bool quiet;     /* no S lines */
        bool fill;      /* touch the working set before READY */
        bool verify;    /* check each page holds what the last sweep wrote before writing it */
        enum pace pace;
} cfg = {
        .mib = 32, .off = 4, .rate = 0, .rate_max = false, .wpp = 1,
        .hz = 100, .quiet = false, .fill = true, .pace = PACE_TSC,
};

static bool str_eq(const char *a, u32 alen, const char *b) {
        u32 i;

        for (i = 0; i < alen && b[i]; i++)
                if (a[i] != b[i])
                        return false;
        return i == alen && b[i] == '\0';
}

/* Decimal only; false on anything else or on overflow. */
static bool parse_u32(const char *s, u32 len, u32 *ret) {
        u32 v = 0;

        if (len == 0 || len > 9)
                return false;
        for (u32 i = 0; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                v = v * 10 + (u32) (s[i] - '0');
        }
        *ret = v;
        return true;
}

static u32 clamp_u32(u32 v, u32 lo, u32 hi) {
        return v < lo ? lo : v > hi ? hi : v;
}

/* key=value words separated by blanks; unknown keys (and QEMU's leading
 * kernel file name under Multiboot) are ignored, bad values keep the
 * default. */
static void parse_cmdline(const char *s) {
        while (*s) {
                const char *key, *val;
                u32 klen, vlen, v;

                while (*s == ' ' || *s == '\t')
                        s++;
                key = s;
                while (*s && *s != ' ' && *s != '\t' && *s != '=')
                        s++;
                klen = (u32) (s - key);
                if (*s != '=') {
                        continue;
                }
                val = ++s;
                while (*s && *s != ' ' && *s != '\t')
                        s++;
                vlen = (u32) (s - val);

                if (str_eq(key, klen, "mib") && parse_u32(val, vlen, &v))
                        cfg.mib = v;
                else if (str_eq(key, klen, "off") && parse_u32(val, vlen, &v))
                        cfg.off = clamp_u32(v, 1, 4095);
                else if (str_eq(key, klen, "rate")) {
                        if (str_eq(val, vlen, "max"))
                                cfg.rate_max = true;
                        else if (parse_u32(val, vlen, &v)) {
                                cfg.rate_max = false;
                                cfg.rate = clamp_u32(v, 0, 1u << 20);
                        }
                } else if (str_eq(key, klen, "wpp") && parse_u32(val, vlen, &v))
                        cfg.wpp = clamp_u32(v, 1, PAGE_SIZE / 4);
                else if (str_eq(key, klen, "hz") && parse_u32(val, vlen, &v))
                        cfg.hz = clamp_u32(v, 19, 2000);   /* 16-bit PIT divisor */
                else if (str_eq(key, klen, "quiet") && parse_u32(val, vlen, &v))
                        cfg.quiet = v != 0;
                else if (str_eq(key, klen, "fill") && parse_u32(val, vlen, &v))
                        cfg.fill = v != 0;
                else if (str_eq(key, klen, "verify") && parse_u32(val, vlen, &v))
                        cfg.verify = v != 0;
                else if (str_eq(key, klen, "pace")) {
                        if (str_eq(val, vlen, "tsc"))
                                cfg.pace = PACE_TSC;
                        else if (str_eq(val, vlen, "tick"))
                                cfg.pace = PACE_TICK;
                }
        }
}

/* ---- boot information: RAM below 4 GiB and the command line ---- */

#define MAX_RAM_RANGES 32

static struct { u32 start, end; } ram[MAX_RAM_RANGES];  /* end exclusive; 0 = 4 GiB */
static u32 n_ram;
static char cmdline[512];

static u64 range_end(u32 i) {
        return ram[i].end ? ram[i].end : FOUR_GiB;
}

static void ram_add(u64 base, u64 len) {
        u64 end = base + len;

        if (n_ram == MAX_RAM_RANGES || len == 0 || base >= FOUR_GiB)
                return;
        if (end > FOUR_GiB)
                end = FOUR_GiB;
        ram[n_ram].start = (u32) base;
        ram[n_ram].end = (u32) end;    /* 4 GiB wraps to 0 */
        n_ram++;
}

static void copy_cmdline(u32 addr) {
        const char *s = (const char *) addr;
        u32 i;

        if (!addr)
                return;
        for (i = 0; i < sizeof(cmdline) - 1 && s[i]; i++)
                cmdline[i] = s[i];
        cmdline[i] = '\0';
}

struct mb_info {
        u32 flags, mem_lower, mem_upper, boot_device, cmdline;
        u32 mods_count, mods_addr, syms[4];
        u32 mmap_length, mmap_addr;
} __attribute__((packed));

struct mb_mmap {
        u32 size;
        u64 base, len;
        u32 type;
} __attribute__((packed));

static void read_multiboot(const struct mb_info *mbi) {
        if (mbi->flags & MB_INFO_CMDLINE)
                copy_cmdline(mbi->cmdline);
        if (mbi->flags & MB_INFO_MMAP) {
                u32 p = mbi->mmap_addr, end = mbi->mmap_addr + mbi->mmap_length;

                while (p + sizeof(struct mb_mmap) <= end) {
                        const struct mb_mmap *e = (const struct mb_mmap *) p;
                        if (e->type == 1)
                                ram_add(e->base, e->len);
                        if (e->size < 20)
                                break;
                        p += e->size + 4;
                }
        }
        if (n_ram == 0 && (mbi->flags & MB_INFO_MEM))
                ram_add(MiB, (u64) mbi->mem_upper * 1024);
}

struct pvh_start_info {
        u32 magic, version, flags, nr_modules;
        u64 modlist_paddr, cmdline_paddr, rsdp_paddr;
        u64 memmap_paddr;               /* version >= 1 */
        u32 memmap_entries, reserved;
} __attribute__((packed));

struct pvh_memmap {
        u64 addr, size;
        u32 type, reserved;
} __attribute__((packed));

static void read_pvh(const struct pvh_start_info *si) {
        if (si->cmdline_paddr && si->cmdline_paddr < FOUR_GiB)
                copy_cmdline((u32) si->cmdline_paddr);
        if (si->version >= 1 && si->memmap_paddr && si->memmap_paddr < FOUR_GiB) {
                const struct pvh_memmap *m = (const struct pvh_memmap *) (u32) si->memmap_paddr;
                for (u32 i = 0; i < si->memmap_entries && i < 128; i++)
                        if (m[i].type == 1)
                                ram_add(m[i].addr, m[i].size);
        }
}

static u8 cmos_read(u8 reg) {
        outb(0x70, reg);
        return inb(0x71);
}

/* Last resort: the RAM size QEMU writes into the RTC CMOS (pc and microvm). */
static void read_cmos_ram(void) {
        u32 ext_kib = cmos_read(0x30) | ((u32) cmos_read(0x31) << 8);
        u32 above16m = cmos_read(0x34) | ((u32) cmos_read(0x35) << 8);

        if (above16m)
                ram_add(16 * MiB, (u64) above16m << 16);
        if (ext_kib)
                ram_add(MiB, above16m ? 15 * MiB : (u64) ext_kib * 1024);
}

/* ---- interrupts ---- */

struct idt_entry {
        u16 off_lo, sel;
        u8 zero, type;
        u16 off_hi;
} __attribute__((packed));

static struct idt_entry idt[256];

static void idt_set(u32 vec, u32 handler) {
        idt[vec].off_lo = (u16) handler;
        idt[vec].sel = SEL_CODE;
        idt[vec].zero = 0;
        idt[vec].type = 0x8e;           /* present, ring 0, 32-bit interrupt gate */
        idt[vec].off_hi = (u16) (handler >> 16);
}

static void idt_init(void) {
        struct { u16 limit; u32 base; } __attribute__((packed)) idtr = {
                sizeof(idt) - 1, (u32) idt,
        };

        for (u32 v = 0; v < 256; v++)
                idt_set(v, (u32) ignore_int);
        for (u32 v = 0; v < 32; v++)
                idt_set(v, exc_stubs[v]);
        for (u32 v = 0; v < 16; v++)
                idt_set(0x20 + v, irq_stubs[v]);
        __asm__ volatile("lidt %0" : : "m"(idtr));
}

void exc_handler(struct exc_frame *f) {
        u32 cr2;

        __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
        kprintf("EXC vector=%u error=%x eip=%x eflags=%x cr2=%x\n",
                f->vector, f->error, f->eip, f->eflags, cr2);
        halt_forever();
}

/* Timer state.  The ISR is the only writer of these; the main loop reads
 * aligned 32-bit values, which is atomic on x86. */
static volatile u32 ticks;              /* IRQ0s delivered since READY */
static volatile u32 ticks_lost;         /* periods with no IRQ0 (see README "late") */
static u64 tick_cycles;                 /* TSC cycles per tick; set before sti */
static u64 last_tick_tsc;               /* ISR only */

static void timer_tick(void) {
        u64 now = rdtsc();

        if (last_tick_tsc && tick_cycles) {
                u64 gap = now - last_tick_tsc;
                if (gap > tick_cycles + tick_cycles / 2)
                        ticks_lost += (u32) udiv64(gap + tick_cycles / 2, tick_cycles) - 1;
        }
        last_tick_tsc = now;
        ticks++;
}

void irq_handler(u32 irq) {
        if (irq == 0) {
                timer_tick();
                outb(0x20, 0x20);
        } else if (irq < 8) {
                /* Masked line: only spurious IRQ7 gets here; EOI only what
                 * is really in service. */
                outb(0x20, 0x0b);
                if (inb(0x20) & (1u << irq))
                        outb(0x20, 0x20);
        } else {
                outb(0xa0, 0x0b);
                if (inb(0xa0) & (1u << (irq - 8)))
                        outb(0xa0, 0x20);
                outb(0x20, 0x20);       /* the cascade line was in service */
        }
}

static void pic_init(void) {
        outb(0x21, 0xff);
        outb(0xa1, 0xff);
        outb(0x20, 0x11);               /* ICW1: edge, cascade, ICW4 */
        outb(0xa0, 0x11);
        outb(0x21, 0x20);               /* ICW2: vectors 0x20.. */
        outb(0xa1, 0x28);               /*       and 0x28.. */
        outb(0x21, 0x04);               /* ICW3: slave on IRQ2 */
        outb(0xa1, 0x02);
        outb(0x21, 0x01);               /* ICW4: 8086 mode */
        outb(0xa1, 0x01);
        outb(0x21, 0xff);               /* all masked until READY */
        outb(0xa1, 0xff);
}

/* If a local APIC is enabled, it blocks the PIC unless LINT0 is ExtINT.
 * SeaBIOS sets that up, qboot does not, so do it ourselves.  LVT writes
 * only unmask while the APIC is software-enabled, hence SVR first. */
static void lapic_route_pic(void) {
        u32 a, b, c, d;
        u64 base;
        volatile u32 *apic;

        cpuid(1, &a, &b, &c, &d);
        if (!(d & (1u << 9)))
                return;
        base = rdmsr(LAPIC_BASE_MSR);
        if (!(base & (1u << 11)) || (base >> 32))
                return;                 /* globally off: PIC goes straight to the CPU */
        apic = (volatile u32 *) ((u32) base & 0xfffff000u);
        apic[0xf0 / 4] = 0x1ff;         /* SVR: enabled, spurious vector 0xff */
        apic[0x80 / 4] = 0;             /* TPR: accept everything */
        apic[0x320 / 4] = 0x10000;      /* LVT timer: masked */
        apic[0x350 / 4] = 0x700;        /* LINT0: ExtINT, unmasked */
        apic[0x360 / 4] = 0x400;        /* LINT1: NMI */
}

static u16 pit_read0(void) {
        u8 lo, hi;

        outb(0x43, 0x00);               /* latch channel 0 */
        lo = inb(0x40);
        hi = inb(0x40);
        return (u16) (lo | (hi << 8));
}

/* Channel 0, lo/hi byte, binary, in @mode: 2 (rate generator, its counter
 * steps by 1, for calibration) or 3 (square wave, for the tick: with mode
 * 2's one-clock pulse QEMU 7.2 now and then loses an edge at low hz). */
static void pit_start(u32 mode, u32 divisor) {
        outb(0x43, (u8) (0x30 | (mode << 1)));
        outb(0x40, (u8) divisor);
        outb(0x40, (u8) (divisor >> 8));
}

/* TSC frequency in kHz, measured over ~10 ms of PIT channel 0 with
 * interrupts off.  The counter is read modulo 2^16, so sum the deltas. */
static u32 tsc_calibrate(void) {
        const u32 want = PIT_HZ / 100;  /* 10 ms */
        u32 elapsed = 0;
        u16 prev, cur;
        u64 t0, t1;

        pit_start(2, 0);                /* 65536: 55 ms period */
        prev = pit_read0();
        t0 = rdtsc();
        do {
                cur = pit_read0();
                t1 = rdtsc();
                elapsed += (u16) (prev - cur);
                prev = cur;
                if (t1 - t0 > (1ull << 34)) {
                        put_str("FAIL PIT channel 0 does not count\n");
                        halt_forever();
                }
        } while (elapsed < want);
        return (u32) udiv64((t1 - t0) * PIT_HZ, (u64) elapsed * 1000);
}

/* ---- the working set ---- */

static u32 ws_base;             /* physical address */
static u32 ws_pages;
static u32 ws_next;             /* next page to dirty */
static u32 ws_pass;             /* completed sweeps (fill not counted) */
static u32 ws_stamp;            /* changes every sweep, so pages really change */
static u32 ws_prev_stamp;       /* the stamp of the sweep before (verify=1) */
static bool ws_known;           /* every page holds what that sweep wrote */
static u32 ws_bad;              /* verify=1: pages found holding something else */

/* verify=1: page @i must hold what the previous sweep wrote (its first
 * and last word); a migration that lost or mixed up a page shows here. */
static void verify_page(volatile u32 *p, u32 i) {
        u32 want = (ws_prev_stamp ^ i) | 1, got = p[0], last = p[cfg.wpp - 1];

        if (got == want && last == want + cfg.wpp - 1)
                return;
        if (ws_bad++ < 4)
                kprintf("BAD page=%u want=%x got=%x\n", i, want, got);
}

/* Write cfg.wpp words into each of the next @n pages.  Returns pages done.
 * Without verify=1 this is the loop every earlier version ran (its state
 * in registers, stored once per call); the checked loop is its own
 * function, so turning the check on cannot change how the plain one runs. */
static u32 __attribute__((noinline)) dirty_pages_plain(u32 n) {
        const u32 wpp = cfg.wpp;

        for (u32 i = 0; i < n; i++) {
                volatile u32 *p = (volatile u32 *) (ws_base + ws_next * PAGE_SIZE);
                u32 v = (ws_stamp ^ ws_next) | 1;

                for (u32 w = 0; w < wpp; w++)
                        p[w] = v + w;
                if (++ws_next == ws_pages) {
                        ws_next = 0;
                        ws_pass++;
                        ws_stamp = (ws_pass + 1) * 0x9e3779b1u;
                }
        }
        return n;
}

/* verify=1: the same, checking each page before rewriting it. */
static u32 __attribute__((noinline)) dirty_pages_checked(u32 n) {
        const u32 wpp = cfg.wpp;

        for (u32 i = 0; i < n; i++) {
                volatile u32 *p = (volatile u32 *) (ws_base + ws_next * PAGE_SIZE);
                u32 v = (ws_stamp ^ ws_next) | 1;

                if (ws_known)
                        verify_page(p, ws_next);
                for (u32 w = 0; w < wpp; w++)
                        p[w] = v + w;
                if (++ws_next == ws_pages) {
                        ws_next = 0;
                        ws_pass++;
                        ws_prev_stamp = ws_stamp;
                        ws_known = true;
                        ws_stamp = (ws_pass + 1) * 0x9e3779b1u;
                }
        }
        return n;
}

static u32 dirty_pages(u32 n) {
        if (ws_pages == 0)
                return 0;
        return cfg.verify ? dirty_pages_checked(n) : dirty_pages_plain(n);
}

/* Place the working set: at off MiB (never below the end of the kernel),
 * inside the RAM range holding that address, and at most cfg.mib long. */
static void ws_setup(void) {
        u32 kend = ((u32) _end + MiB - 1) & ~(MiB - 1);
        u32 off = cfg.off * MiB;
        u64 avail = 0;

        if (off < kend)
                off = kend;
        for (u32 i = 0; i < n_ram; i++)
                if (ram[i].start <= off && off < range_end(i))
                        avail = range_end(i) - off;
        if (cfg.mib > (u32) (avail >> 20))
                cfg.mib = (u32) (avail >> 20);
        ws_base = off;
        ws_pages = cfg.mib * PAGES_PER_MiB;
        ws_stamp = 0x5eed0000u;
        ws_known = false;
        if (cfg.fill) {
                dirty_pages(ws_pages);
                ws_pass = 0;
        }
        ws_next = 0;
        ws_prev_stamp = 0x5eed0000u;
        ws_known = cfg.fill; /* without the fill the first sweep finds zeros */
        ws_stamp = 0x9e3779b1u;
}

/* ---- main loop ---- */

/* Sleep until at least one new tick; returns how many arrived. */
static u32 wait_tick(u32 *seen) {
        u32 now, n;

        __asm__ volatile("cli" ::: "memory");
        while ((now = ticks) == *seen)
                __asm__ volatile("sti; hlt; cli" ::: "memory");
        __asm__ volatile("sti" ::: "memory");
        n = now - *seen;
        *seen = now;
        return n;
}

static void run(u32 tsc_khz, u64 t0) __attribute__((noreturn));
static void run(u32 tsc_khz, u64 t0) {
        const u64 tsc_hz = (u64) tsc_khz * 1000;
        const u64 pps = (u64) cfg.rate * PAGES_PER_MiB;  /* pages per second */
        u64 done = 0;                   /* pages dirtied since READY */
        u64 skipped = 0;                /* pace=tsc debt forgiven (> 1 s behind) */
        u64 delivered = 0;              /* pace=tick: ticks seen */
        u64 origin = t0, origin_pages = 0;      /* pace=tsc: whole seconds so far */
        u64 win_start = t0, win_done = 0, next_report = t0 + tsc_hz;
        u32 seen = ticks, lost_reported = 0;

        for (;;) {
                u64 now;

                if (cfg.rate_max) {
                        done += dirty_pages(256);
                        now = rdtsc();
                } else {
                        u32 n = wait_tick(&seen);
                        u64 due;

                        now = rdtsc();
                        if (cfg.pace == PACE_TICK) {
                                delivered += n;
                                due = udiv64_32(delivered * pps, cfg.hz, NULL);
                        } else {
                                while (now - origin >= tsc_hz) {
                                        origin += tsc_hz;
                                        origin_pages += pps;
                                }
                                due = origin_pages + udiv64((now - origin) * pps, tsc_hz);
                                if (due > done + skipped + pps)
                                        skipped = due - done - pps;
                        }
                        if (due > done + skipped)
                                done += dirty_pages((u32) (due - done - skipped));
                }

                if (now >= next_report) {
                        u64 dt = now - win_start, pages = done - win_done;
                        u32 sec = (u32) udiv64(now - t0, tsc_hz);
                        u32 lost = ticks_lost;
                        u32 mibps = (u32) udiv64(pages * tsc_hz + dt * 128, dt * 256);

                        if (!cfg.quiet && cfg.verify)
                                kprintf("S %u pages=%U mibps=%u late=%u pass=%u bad=%u\n",
                                        sec, pages, mibps, lost - lost_reported, ws_pass, ws_bad);
                        else if (!cfg.quiet)
                                kprintf("S %u pages=%U mibps=%u late=%u pass=%u\n",
                                        sec, pages, mibps, lost - lost_reported, ws_pass);
                        lost_reported = lost;
                        win_start = now;
                        win_done = done;
                        next_report = t0 + (u64) (sec + 1) * tsc_hz;
                }
        }
}

void kmain(u32 magic, u32 info, u32 kind) {
        u32 tsc_khz, ram_top_mib = 0;
        u64 t0;

        (void) kind;
        serial_init();
        put_str("BOOT\n");
        idt_init();

        if (info && ((const struct pvh_start_info *) info)->magic == PVH_START_MAGIC)
                read_pvh((const struct pvh_start_info *) info);
        else if (magic == MB_BOOT_MAGIC && info)
                read_multiboot((const struct mb_info *) info);
        if (n_ram == 0)
                read_cmos_ram();
        parse_cmdline(cmdline);
        for (u32 i = 0; i < n_ram; i++) {
                u32 top = (u32) ((range_end(i) + MiB - 1) >> 20);
                if (top > ram_top_mib)
                        ram_top_mib = top;
        }

        pic_init();
        lapic_route_pic();
        tsc_khz = tsc_calibrate();
        tick_cycles = udiv64_32((u64) tsc_khz * 1000, cfg.hz, NULL);
        pit_start(3, (PIT_HZ + cfg.hz / 2) / cfg.hz);
        ws_setup();

        kprintf("READY ram=%uMiB mib=%u rate=", ram_top_mib, cfg.mib);
        if (cfg.rate_max)
                put_str("max");
        else
                put_u64(cfg.rate);
        kprintf(" tsc_khz=%u\n", tsc_khz);

        if (!cfg.rate_max && cfg.rate == 0)
                halt_forever();

        t0 = rdtsc();
        outb(0x21, 0xfe);               /* unmask IRQ0 */
        __asm__ volatile("sti");
        run(tsc_khz, t0);
}
