//! Entering translated code, and leaving it from a host signal handler
//! (System V AMD64 ABI, §3.2: callee-saved registers and stack alignment).
//!
//! `rqemu_jit_enter` saves the callee-saved registers, records its stack
//! pointer in the thread's `JitThread` and calls the block. A guest memory
//! access in translated code that faults raises a host SIGSEGV; the handler
//! (the environment's) calls `recover_from_fault`, which rewrites the
//! signal context so the thread resumes at `rqemu_jit_resume` with that
//! stack pointer and an exit code: the translated frames are dropped and the
//! callee-saved registers come back from the trampoline's own frame, like a
//! longjmp. Guest state is precise at every access (see `translate.rs`).

use std::cell::Cell;

std::arch::global_asm!(
    ".globl rqemu_jit_enter",
    ".globl rqemu_jit_resume",
    ".p2align 4",
    "rqemu_jit_enter:",
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "sub rsp, 8",
    "mov [rcx], rsp",
    "call r8",
    "rqemu_jit_resume:",
    "add rsp, 8",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
);

extern "C" {
    fn rqemu_jit_enter(
        cpu: *mut u8,
        ctx: *mut u8,
        code: *const u8,
        save_sp: *mut usize,
        shim: *const u8,
    ) -> u64;
    fn rqemu_jit_resume();
}

/// Per-thread record of the translated code running now.
pub struct JitThread {
    /// Stack pointer saved by the trampoline (the resume frame).
    pub saved_sp: Cell<usize>,
    /// Inside translated code (set around the trampoline call).
    pub active: Cell<bool>,
    /// Code range of the current generation, to tell a fault in translated
    /// code from one in a helper.
    pub code_lo: Cell<usize>,
    pub code_hi: Cell<usize>,
    /// Host PC of the last fault recovered from.
    pub fault_rip: Cell<usize>,
}

thread_local! {
    pub static JIT_THREAD: JitThread = const {
        JitThread {
            saved_sp: Cell::new(0),
            active: Cell::new(false),
            code_lo: Cell::new(0),
            code_hi: Cell::new(0),
            fault_rip: Cell::new(0),
        }
    };
}

/// Runs translated code from block `code` through the generation's entry
/// shim (which calls blocks in their own calling convention).
///
/// # Safety
/// `code` must be a finalized block function of this crate's signature,
/// `shim` the entry shim of the same generation, `cpu` and `ctx` the
/// pointers they were translated for.
pub unsafe fn enter(cpu: *mut u8, ctx: *mut u8, code: *const u8, shim: *const u8) -> u64 {
    JIT_THREAD.with(|t| {
        t.active.set(true);
        let sp = t.saved_sp.as_ptr();
        // SAFETY: the caller guarantees `code` follows the block ABI; the
        // trampoline preserves every callee-saved register.
        let r = unsafe { rqemu_jit_enter(cpu, ctx, code, sp, shim) };
        t.active.set(false);
        r
    })
}

/// Called by the environment's SIGSEGV/SIGBUS handler. If the thread was in
/// translated code (not in a helper it called), rewrites `uc` to leave the
/// block with `exit_code` and returns true.
///
/// # Safety
/// `uc` must be the `ucontext_t` the kernel passed to the signal handler of
/// the current thread.
pub unsafe fn recover_from_fault(uc: *mut libc::c_void, exit_code: u64) -> bool {
    let uc = uc as *mut libc::ucontext_t;
    JIT_THREAD.with(|t| {
        if !t.active.get() {
            return false;
        }
        // SAFETY: the kernel gave us a valid context for this thread.
        let gregs = unsafe { &mut (*uc).uc_mcontext.gregs };
        let rip = gregs[libc::REG_RIP as usize] as usize;
        if rip < t.code_lo.get() || rip >= t.code_hi.get() {
            return false;
        }
        t.fault_rip.set(rip);
        gregs[libc::REG_RSP as usize] = t.saved_sp.get() as i64;
        gregs[libc::REG_RIP as usize] = rqemu_jit_resume as *const () as usize as i64;
        gregs[libc::REG_RAX as usize] = exit_code as i64;
        true
    })
}
