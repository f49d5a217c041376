/* Constants shared by boot.S and kernel.c: the two boot protocols the guest
 * accepts (Multiboot v1 from SeaBIOS' multiboot.bin on pc/q35, Xen PVH from
 * qboot on microvm or pvh.bin), the load address and the GDT layout.
 */
#pragma once

#define GUEST_LOAD_ADDR         0x100000        /* 1 MiB, below the working set */

/* Multiboot v1 */
#define MB_HEADER_MAGIC         0x1BADB002
#define MB_HEADER_FLAGS         0x00000002      /* bit 1: give us mem_* and the mmap */
#define MB_BOOT_MAGIC           0x2BADB002      /* %eax at entry */
#define MB_INFO_MEM             (1u << 0)
#define MB_INFO_CMDLINE         (1u << 2)
#define MB_INFO_MMAP            (1u << 6)

/* Xen PVH (xen/include/public/elfnote.h, arch-x86/hvm/start_info.h) */
#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define PVH_START_MAGIC         0x336ec578      /* hvm_start_info.magic */

/* How the kernel was entered (third argument of kmain). */
#define BOOT_KIND_MULTIBOOT     0
#define BOOT_KIND_PVH           1

/* GDT selectors */
#define SEL_CODE                0x08
#define SEL_DATA                0x10

#define STACK_SIZE              16384
