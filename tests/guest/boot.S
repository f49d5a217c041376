/* Entry code of the dirtying guest: the two boot headers, the switch to our
 * own flat GDT, the stack, and the interrupt stubs.
 *
 * The ELF carries a Multiboot v1 header (QEMU prefers it on pc/q35 and loads
 * us through SeaBIOS + multiboot.bin) and a Xen PVH note naming a second
 * entry point (microvm's qboot, or pvh.bin).  Both protocols enter in 32-bit
 * protected mode with paging off and %ebx pointing at the boot information;
 * which structure it really is gets decided in C from its magic, because
 * firmware does not always pass the magic register the protocol promises.
 * The stubs save the caller-saved state and call one C function per kind
 * (exception, PIC IRQ); anything else is ignored with a bare iret.
 */
#include "bootdefs.h"

        .section .multiboot, "a"
        .balign 4
mb_header:
        .long   MB_HEADER_MAGIC
        .long   MB_HEADER_FLAGS
        .long   -(MB_HEADER_MAGIC + MB_HEADER_FLAGS)

        /* QEMU aligns the note's name to the PT_NOTE p_align: keep it 4. */
        .section .note.Xen, "a", @note
        .balign 4
        .long   4                       /* namesz: "Xen\0" */
        .long   4                       /* descsz */
        .long   XEN_ELFNOTE_PHYS32_ENTRY
        .asciz  "Xen"
        .balign 4
        .long   pvh_entry

        .text
        .code32
        .globl  mb_entry
mb_entry:
        movl    $BOOT_KIND_MULTIBOOT, %edx
        jmp     common_entry

        .globl  pvh_entry
pvh_entry:
        movl    $BOOT_KIND_PVH, %edx

common_entry:
        cli
        cld
        movl    %eax, %esi              /* boot magic */
        movl    %ebx, %ebp              /* boot info */

        lgdt    gdt_desc
        ljmp    $SEL_CODE, $1f
1:      movl    $SEL_DATA, %eax
        movl    %eax, %ds
        movl    %eax, %es
        movl    %eax, %ss
        movl    %eax, %fs
        movl    %eax, %gs

        /* Zero .bss (the stack lives there, so before it is used). */
        movl    $__bss_start, %edi
        movl    $__bss_end, %ecx
        subl    %edi, %ecx
        shrl    $2, %ecx
        xorl    %eax, %eax
        rep stosl

        movl    $stack_top, %esp
        pushl   %edx                    /* kind */
        pushl   %ebp                    /* info */
        pushl   %esi                    /* magic */
        call    kmain
2:      cli
        hlt
        jmp     2b

/* Exceptions: push a dummy error code where the CPU pushes none, then the
 * vector, so exc_handler() always sees the same frame. */
        .macro  EXC_NOERR n
exc_\n:
        pushl   $0
        pushl   $\n
        jmp     exc_common
        .endm
        .macro  EXC_ERR n
exc_\n:
        pushl   $\n
        jmp     exc_common
        .endm

        .irp    n, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
        EXC_NOERR \n
        .endr
        .irp    n, 8,10,11,12,13,14,17,21,29,30
        EXC_ERR \n
        .endr

exc_common:
        pushal
        pushl   %esp                    /* struct exc_frame * */
        call    exc_handler             /* does not return */
3:      cli
        hlt
        jmp     3b

/* The 16 PIC vectors 0x20..0x2f. */
        .irp    n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
irq_\n:
        pushl   $\n
        jmp     irq_common
        .endr

irq_common:
        pushal
        cld
        pushl   32(%esp)                /* the IRQ number pushed by the stub */
        call    irq_handler
        addl    $4, %esp
        popal
        addl    $4, %esp
        iret

        .globl  ignore_int
ignore_int:
        iret

        .section .rodata
        .balign 4
        .globl  exc_stubs
exc_stubs:
        .irp    n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        .long   exc_\n
        .endr
        .globl  irq_stubs
irq_stubs:
        .irp    n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
        .long   irq_\n
        .endr

        .balign 8
gdt:
        .quad   0
        .quad   0x00cf9b000000ffff      /* 0x08: code, base 0, 4 GiB, accessed */
        .quad   0x00cf93000000ffff      /* 0x10: data, base 0, 4 GiB, accessed */
gdt_end:
gdt_desc:
        .word   gdt_end - gdt - 1
        .long   gdt

        .section .bss.stack, "aw", @nobits
        .balign 16
stack_bottom:
        .skip   STACK_SIZE
stack_top:

        .section .note.GNU-stack, "", @progbits
