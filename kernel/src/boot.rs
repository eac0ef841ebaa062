//! The way in: the PVH ELF note and the 32-bit entry stub.
//!
//! `qemu-system-x86_64 -kernel` reads the note `XEN_ELFNOTE_PHYS32_ENTRY` (type 18) and enters
//! [`pvh_start`] in 32-bit protected mode, paging off, with `ebx` holding the physical address
//! of the `hvm_start_info` structure. The stub
//!
//! ```text
//!   zero .bss ─▶ boot page tables: PML4[0] ─▶ PDPT[0..4] ─▶ 4 PDs × 512 × 2 MiB = 4 GiB identity
//!            ─▶ CR4.PAE|OSFXSR|OSXMMEXCPT ─▶ CR3 ─▶ EFER.LME ─▶ CR0.PG|PE|MP (EM off: SSE on)
//!            ─▶ 64-bit GDT, far jump ─▶ kernel_main(start_info) on the boot stack
//! ```
//!
//! The boot page tables and the boot stack live in the image's `.bss`, so reserving the image
//! reserves them too. The page below the boot stack is a guard: the kernel's own page tables
//! leave it unmapped, so an overflow faults instead of overwriting the page tables.
//!
//! # Unsafe
//! The stub is `global_asm!`: it runs before any Rust code, touches only `.bss` (which it
//! zeroes first), the boot page tables and stack there, and the CPU's mode registers, and
//! enters `kernel_main` on the boot stack.

use core::arch::global_asm;

// The kernel's entry point and the boot page tables, written in assembly because there is no
// Rust before long mode. Nothing here is called from Rust.
global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .p2align 2
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .p2align 2
    .quad pvh_start

    .section .text.boot, "ax"
    .code32
    .global pvh_start
pvh_start:
    cli
    cld
    movl %ebx, %esi
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb
    movl %esi, boot_start_info
    movl $boot_stack_top, %esp

    movl $boot_pdpt, %eax
    orl $0x3, %eax
    movl %eax, boot_pml4
    movl $boot_pd, %eax
    orl $0x3, %eax
    xorl %ecx, %ecx
1:
    movl %eax, boot_pdpt(,%ecx,8)
    addl $0x1000, %eax
    incl %ecx
    cmpl $4, %ecx
    jne 1b
    xorl %ecx, %ecx
2:
    movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax
    movl %eax, boot_pd(,%ecx,8)
    incl %ecx
    cmpl $2048, %ecx
    jne 2b

    movl %cr4, %eax
    orl $0x620, %eax
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    andl $0xFFFFFFF3, %eax
    orl $0x80000003, %eax
    movl %eax, %cr0
    lgdt boot_gdt_pointer
    ljmp $0x08, $long_mode_entry

    .code64
long_mode_entry:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movq $boot_stack_top, %rsp
    xorl %ebp, %ebp
    movl boot_start_info(%rip), %edi
    call kernel_main
3:
    hlt
    jmp 3b

    .section .rodata.boot, "a"
    .p2align 3
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
boot_gdt_end:
boot_gdt_pointer:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt

    .section .bss.boot, "aw", @nobits
    .p2align 12
    .global boot_pml4
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4096 * 4
boot_start_info:
    .skip 16
    .p2align 12
    .global boot_stack_guard
boot_stack_guard:
    .skip 4096
boot_stack:
    .skip 0x400000
boot_stack_top:
    "#,
    options(att_syntax)
);
