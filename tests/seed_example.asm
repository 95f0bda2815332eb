; seed_example.asm: the original NASM allocator's example, kept working on
; keel. No libc: malloc/free/calloc come from hosted/seed_glue.c over the
; core and the Linux page source. Exits 0 if every step worked, else 1.

%define SYS_EXIT_GROUP 231
%define SUCCESS_CODE   0
%define FAILURE_CODE   1

section .text
    global _start
    extern malloc, free, calloc

_start:
    ; allocate memory
    mov     rdi, 64             ; size in bytes
    call    malloc              ; pointer in rax
    test    rax, rax
    jz      .error              ; NULL means it failed (a valid pointer may look negative)

    mov     rbx, rax            ; keep the pointer: rbx survives calls

    ; write data to the memory, first and last word, and read it back
    mov     qword [rbx], 0x1234
    mov     qword [rbx + 56], -1
    cmp     qword [rbx], 0x1234
    jne     .error

    ; free allocated memory
    mov     rdi, rbx
    call    free                ; int status in eax: 0 or a negative KEEL_E* code
    test    eax, eax
    js      .error              ; make sure it didn't fail

    ; freeing it again must fail, and say so
    mov     rdi, rbx
    call    free
    test    eax, eax
    jns     .error

    ; dirty a block the size calloc will ask for, so calloc must clear it
    mov     rdi, 640
    call    malloc
    test    rax, rax
    jz      .error
    mov     rbx, rax
    mov     rdi, rbx
    mov     al, 0xaa
    mov     rcx, 640
    rep stosb
    mov     rdi, rbx
    call    free
    test    eax, eax
    js      .error

    ; allocate 10 elements of 64 bytes, zeroed
    mov     rdi, 10             ; number of elements
    mov     rsi, 64             ; size of each element
    call    calloc
    test    rax, rax
    jz      .error
    mov     rbx, rax

    ; every one of the 80 quadwords must be zero
    mov     rcx, 80
    mov     rdi, rbx
.check_zero:
    cmp     qword [rdi], 0
    jne     .error
    add     rdi, 8
    dec     rcx
    jnz     .check_zero

    ; free it
    mov     rdi, rbx
    call    free
    test    eax, eax
    js      .error

    ; exit
    mov     rax, SYS_EXIT_GROUP
    mov     rdi, SUCCESS_CODE
    syscall

.error:
    mov     rax, SYS_EXIT_GROUP
    mov     rdi, FAILURE_CODE
    syscall

; no executable stack
section .note.GNU-stack noalloc noexec nowrite progbits
