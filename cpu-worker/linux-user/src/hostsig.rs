//! Host signals: every catchable host signal is caught by one handler that
//! queues it for the guest and asks the CPU loop to stop (signal(7),
//! sigaction(2), rt_sigaction(2) and the x86_64 `struct kernel_sigaction`).
//!
//! The host signal mask of each thread mirrors its guest mask, so the host
//! kernel keeps blocked signals pending and routes process-directed ones
//! to a thread that accepts them. The handler only touches atomics: it
//! queues the signal on the thread it ran on and sets that thread's
//! exit-request word. Guest signal
//! numbers are the host's (i386 and x86_64 share them), including 32 and
//! 33 that glibc keeps for itself: handlers are installed with the raw
//! system call, and the emulator never uses thread cancellation.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};

pub const NSIG: usize = 65;
const MAX_THREADS: usize = 4096;
/// Words of a host siginfo_t (128 bytes).
pub const INFO_WORDS: usize = 32;

/// Pending signals with the host siginfo of each (one per signal number:
/// like standard signals, a second instance before delivery merges).
pub struct SigQueue {
    bits: AtomicU64,
    info: [[AtomicU32; INFO_WORDS]; NSIG],
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO_INFO: [AtomicU32; INFO_WORDS] = [const { AtomicU32::new(0) }; INFO_WORDS];

impl SigQueue {
    pub const fn new() -> Self {
        SigQueue {
            bits: AtomicU64::new(0),
            info: [ZERO_INFO; NSIG],
        }
    }

    /// Queues `sig` with its raw siginfo words (async-signal-safe).
    pub fn post(&self, sig: usize, raw: &[u32; INFO_WORDS]) {
        if sig == 0 || sig >= NSIG {
            return;
        }
        if self.bits.load(Ordering::Acquire) & (1 << (sig - 1)) == 0 {
            for (d, s) in self.info[sig].iter().zip(raw.iter()) {
                d.store(*s, Ordering::Relaxed);
            }
        }
        self.bits.fetch_or(1 << (sig - 1), Ordering::Release);
    }

    pub fn pending(&self) -> u64 {
        self.bits.load(Ordering::Acquire)
    }

    /// Removes `sig` and returns its siginfo words.
    pub fn take(&self, sig: usize) -> Option<[u32; INFO_WORDS]> {
        if sig == 0 || sig >= NSIG {
            return None;
        }
        let bit = 1u64 << (sig - 1);
        let mut out = [0u32; INFO_WORDS];
        for (d, s) in out.iter_mut().zip(self.info[sig].iter()) {
            *d = s.load(Ordering::Relaxed);
        }
        if self.bits.fetch_and(!bit, Ordering::AcqRel) & bit == 0 {
            return None;
        }
        Some(out)
    }

    pub fn clear(&self) {
        self.bits.store(0, Ordering::Release);
    }
}

impl Default for SigQueue {
    fn default() -> Self {
        Self::new()
    }
}

/// What the handler knows about one guest thread.
pub struct ThreadSlot {
    pub queue: SigQueue,
    exit_request: AtomicPtr<AtomicU32>,
    pub tid: AtomicI32,
    in_use: AtomicBool,
}

/// Process-directed signals.
pub static PROCESS: SigQueue = SigQueue::new();
static SLOTS: [AtomicPtr<ThreadSlot>; MAX_THREADS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_THREADS];
static RESTORER: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static CURRENT: Cell<*const ThreadSlot> = const { Cell::new(std::ptr::null()) };
}

/// Registers the calling thread, whose CPU state's exit-request word is
/// `exit_request` (it must stay where it is until `unregister`).
pub fn register(exit_request: &AtomicU32) -> &'static ThreadSlot {
    let tid = gettid();
    // Reuse a free slot, or leak a new one (a handful per thread ever made).
    for s in SLOTS.iter() {
        let p = s.load(Ordering::Acquire);
        if p.is_null() {
            let slot: &'static ThreadSlot = Box::leak(Box::new(ThreadSlot {
                queue: SigQueue::new(),
                exit_request: AtomicPtr::new(exit_request as *const _ as *mut _),
                tid: AtomicI32::new(tid),
                in_use: AtomicBool::new(true),
            }));
            let raw = slot as *const ThreadSlot as *mut ThreadSlot;
            if s.compare_exchange(
                std::ptr::null_mut(),
                raw,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
            {
                CURRENT.with(|c| c.set(slot));
                return slot;
            }
            continue;
        }
        // SAFETY: slots are leaked `ThreadSlot`s, never freed.
        let slot: &'static ThreadSlot = unsafe { &*p };
        if slot
            .in_use
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            slot.queue.clear();
            slot.tid.store(tid, Ordering::Release);
            slot.exit_request
                .store(exit_request as *const _ as *mut _, Ordering::Release);
            CURRENT.with(|c| c.set(slot));
            return slot;
        }
    }
    // Out of slots: share the last one (signals still reach the process).
    let p = SLOTS[MAX_THREADS - 1].load(Ordering::Acquire);
    // SAFETY: a full table means every slot holds a leaked ThreadSlot.
    unsafe { &*p }
}

/// The thread is exiting: its exit-request word is going away.
pub fn unregister(slot: &ThreadSlot) {
    slot.exit_request
        .store(std::ptr::null_mut(), Ordering::Release);
    slot.tid.store(0, Ordering::Release);
    slot.in_use.store(false, Ordering::Release);
    CURRENT.with(|c| c.set(std::ptr::null()));
}

/// After fork: only the calling thread exists in the child.
pub fn forget_other_threads(me: &ThreadSlot) {
    for s in SLOTS.iter() {
        let p = s.load(Ordering::Acquire);
        if p.is_null() || std::ptr::eq(p, me) {
            continue;
        }
        // SAFETY: slots are leaked `ThreadSlot`s, never freed.
        let slot = unsafe { &*p };
        slot.exit_request
            .store(std::ptr::null_mut(), Ordering::Release);
        slot.in_use.store(false, Ordering::Release);
    }
    me.tid.store(gettid(), Ordering::Release);
    PROCESS.clear();
}

fn poke(slot: &ThreadSlot) {
    let er = slot.exit_request.load(Ordering::Acquire);
    if !er.is_null() {
        // SAFETY: a registered exit-request word lives in the CPU state of a
        // running thread, which unregisters before it goes away.
        unsafe { (*er).fetch_or(1, Ordering::AcqRel) };
    }
}

/// Asks every guest thread to look at the signal queues.
pub fn poke_all() {
    for s in SLOTS.iter() {
        let p = s.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: slots are leaked `ThreadSlot`s, never freed.
            poke(unsafe { &*p });
        }
    }
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let mut raw = [0u32; INFO_WORDS];
    if !info.is_null() {
        // SAFETY: the kernel passes a valid siginfo_t of 128 bytes.
        let words = unsafe { std::slice::from_raw_parts(info as *const u32, INFO_WORDS) };
        raw.copy_from_slice(words);
    }
    let code = raw[2] as i32;
    let sync_fault = matches!(
        sig,
        libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP
    ) && code > 0;
    if sync_fault && matches!(sig, libc::SIGSEGV | libc::SIGBUS) {
        // A guest access from translated code (an unmapped or protected
        // page, or a write to a page holding translated code): leave the
        // block; the engine re-runs the instruction in the interpreter.
        // SAFETY: `uc` is the context the kernel passed to this handler.
        if unsafe { x86::jit::recover_from_fault(uc, x86::jit::translate::EXIT_FAULT) } {
            return;
        }
    }
    if sync_fault {
        // A fault in the emulator itself: a bug, or guest memory changed
        // under a host access by another guest thread. Die of it.
        let msg = b"qemu-i386: host fault in the emulator (emulator bug or a racing munmap)\n";
        // SAFETY: write(2) and rt_sigaction(2) are async-signal-safe.
        unsafe {
            libc::write(2, msg.as_ptr() as *const libc::c_void, msg.len());
        }
        set_default(sig);
        return;
    }
    // The host mask mirrors the guest's, so the kernel already picked a
    // thread that does not block the signal: queue it for this thread.
    let cur = CURRENT.with(|c| c.get());
    if !cur.is_null() {
        // SAFETY: CURRENT points at this thread's leaked slot.
        let slot = unsafe { &*cur };
        slot.queue.post(sig as usize, &raw);
        poke(slot);
    } else {
        PROCESS.post(sig as usize, &raw);
        poke_all();
    }
}

/// The x86_64 kernel's `struct sigaction` for rt_sigaction(2).
#[repr(C)]
#[derive(Default)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

fn raw_sigaction(
    sig: i32,
    new: Option<&KernelSigaction>,
    old: Option<&mut KernelSigaction>,
) -> i64 {
    let np = new.map_or(std::ptr::null(), |n| n as *const KernelSigaction);
    let op = old.map_or(std::ptr::null_mut(), |o| o as *mut KernelSigaction);
    // SAFETY: both pointers are null or point at live KernelSigaction
    // values, the layout the x86_64 kernel expects with sigsetsize 8.
    unsafe { libc::syscall(libc::SYS_rt_sigaction, sig as i64, np, op, 8i64) }
}

const SA_RESTORER: u64 = 0x0400_0000;

/// Finds glibc's signal restorer (x86_64 needs SA_RESTORER) by letting
/// glibc install a handler once and reading the kernel's copy back.
fn restorer() -> usize {
    let r = RESTORER.load(Ordering::Acquire);
    if r != 0 {
        return r as usize;
    }
    // SAFETY: a zeroed sigaction is valid; sigaction(2) with our handler.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigfillset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    let mut k = KernelSigaction::default();
    raw_sigaction(libc::SIGUSR1, None, Some(&mut k));
    RESTORER.store(k.restorer as u64, Ordering::Release);
    k.restorer
}

/// Catches `sig` with the queueing handler.
pub fn catch(sig: i32) {
    if sig == libc::SIGKILL || sig == libc::SIGSTOP {
        return;
    }
    let k = KernelSigaction {
        handler: handler as *const () as usize,
        flags: (libc::SA_SIGINFO | libc::SA_ONSTACK) as u64 | SA_RESTORER,
        restorer: restorer(),
        mask: u64::MAX,
    };
    raw_sigaction(sig, Some(&k), None);
}

pub fn set_default(sig: i32) {
    if sig == libc::SIGKILL || sig == libc::SIGSTOP {
        return;
    }
    let k = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: SA_RESTORER,
        restorer: restorer(),
        mask: 0,
    };
    raw_sigaction(sig, Some(&k), None);
}

pub fn set_ignore(sig: i32) {
    if sig == libc::SIGKILL || sig == libc::SIGSTOP {
        return;
    }
    let k = KernelSigaction {
        handler: libc::SIG_IGN,
        flags: SA_RESTORER,
        restorer: restorer(),
        mask: 0,
    };
    raw_sigaction(sig, Some(&k), None);
}

/// Reads the dispositions and mask we inherited (across the execve that
/// started us they are the guest's) and catches the signals whose default
/// action dumps core (we die of those ourselves, without a core file).
/// Returns (ignored set, blocked mask).
pub fn install_initial(catch_default: impl Fn(i32) -> bool) -> (u64, u64) {
    let mut ignored = 0u64;
    for sig in 1..NSIG as i32 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let mut old = KernelSigaction::default();
        if raw_sigaction(sig, None, Some(&mut old)) != 0 {
            continue;
        }
        if old.handler == libc::SIG_IGN {
            ignored |= 1 << (sig - 1);
            continue;
        }
        if catch_default(sig) {
            catch(sig);
        } else {
            set_default(sig);
        }
    }
    let mut mask = 0u64;
    // SAFETY: rt_sigprocmask reading into a live 8-byte set.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK as i64,
            std::ptr::null::<u64>(),
            &mut mask as *mut u64,
            8i64,
        );
    }
    (ignored, mask)
}

/// The host signals pending for this thread or the process.
pub fn host_pending() -> u64 {
    let mut set = 0u64;
    // SAFETY: rt_sigpending into a live 8-byte set.
    unsafe {
        libc::syscall(libc::SYS_rt_sigpending, &mut set as *mut u64, 8i64);
    }
    set
}

/// Sets the host thread's signal mask (raw: 64 bits, signals 32/33 too).
pub fn set_host_mask(mask: u64) -> u64 {
    let mut old = 0u64;
    // SAFETY: rt_sigprocmask with pointers to live 8-byte sets.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK as i64,
            &mask as *const u64,
            &mut old as *mut u64,
            8i64,
        );
    }
    old
}

pub fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Kills the emulator with `sig` the way the guest would have died:
/// default disposition, unblocked, no core file from us.
pub fn die_by(sig: i32) -> ! {
    let rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain system calls with pointers to live locals.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &rl);
    }
    set_default(sig);
    let mask = !(1u64 << (sig - 1));
    set_host_mask(mask);
    // SAFETY: tgkill to our own thread.
    unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            libc::getpid() as i64,
            gettid() as i64,
            sig as i64,
        );
    }
    // Signals whose default is to stop or that did not kill us.
    // SAFETY: _exit never returns.
    unsafe { libc::_exit(128 + sig) }
}
