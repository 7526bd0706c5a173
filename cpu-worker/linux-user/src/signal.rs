//! Guest signals: actions, masks, delivery on i386 signal frames and
//! sigreturn, as Linux does for ia32 processes (signal(7), sigaction(2),
//! sigreturn(2), sigaltstack(2); the frame layouts `struct sigframe_ia32`,
//! `struct rt_sigframe_ia32`, `struct sigcontext_32`, `struct
//! _fpstate_32` and the compat `siginfo_t` of the kernel's UAPI headers).

use x86::mem::{Exception, MemFault};
use x86::state::{self, CpuState, EAX, EBP, EBX, ECX, EDI, EDX, ESI, ESP};

use crate::hostsig::{self, INFO_WORDS};
use crate::task::{
    AltStack, CpuEnv, GuestSigaction, Process, Thread, SS_DISABLE, SS_ONSTACK, USER_CS, USER_DS,
};

pub const SIGQUIT: usize = 3;
pub const SIGILL: usize = 4;
pub const SIGTRAP: usize = 5;
pub const SIGABRT: usize = 6;
pub const SIGBUS: usize = 7;
pub const SIGFPE: usize = 8;
pub const SIGKILL: usize = 9;
pub const SIGSEGV: usize = 11;
pub const SIGCHLD: usize = 17;
pub const SIGCONT: usize = 18;
pub const SIGSTOP: usize = 19;
pub const SIGTSTP: usize = 20;
pub const SIGTTIN: usize = 21;
pub const SIGTTOU: usize = 22;
pub const SIGURG: usize = 23;
pub const SIGXCPU: usize = 24;
pub const SIGXFSZ: usize = 25;
pub const SIGWINCH: usize = 28;
pub const SIGSYS: usize = 31;

pub const SIG_DFL: u32 = 0;
pub const SIG_IGN: u32 = 1;

pub const SA_SIGINFO: u32 = 4;
pub const SA_RESTORER: u32 = 0x0400_0000;
pub const SA_ONSTACK: u32 = 0x0800_0000;
pub const SA_RESTART: u32 = 0x1000_0000;
pub const SA_NODEFER: u32 = 0x4000_0000;
pub const SA_RESETHAND: u32 = 0x8000_0000;

pub const SI_KERNEL: i32 = 0x80;
pub const SEGV_MAPERR: i32 = 1;
pub const SEGV_ACCERR: i32 = 2;
pub const FPE_INTDIV: i32 = 1;
pub const FPE_FLTDIV: i32 = 3;
pub const FPE_FLTOVF: i32 = 4;
pub const FPE_FLTUND: i32 = 5;
pub const FPE_FLTRES: i32 = 6;
pub const FPE_FLTINV: i32 = 7;
pub const ILL_ILLOPN: i32 = 2;
pub const BUS_ADRALN: i32 = 1;

const NR_SIGRETURN: u32 = 119;
const NR_RT_SIGRETURN: u32 = 173;

/// Signals that cannot be caught, blocked or ignored.
pub const UNBLOCKABLE: u64 = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1));

pub fn bit(sig: usize) -> u64 {
    1u64 << (sig - 1)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Default {
    Ignore,
    Stop,
    Term,
    Core,
}

pub fn default_action(sig: usize) -> Default {
    match sig {
        SIGCHLD | SIGURG | SIGWINCH | SIGCONT => Default::Ignore,
        SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU => Default::Stop,
        SIGQUIT | SIGILL | SIGTRAP | SIGABRT | SIGBUS | SIGFPE | SIGSEGV | SIGXCPU | SIGXFSZ
        | SIGSYS => Default::Core,
        _ => Default::Term,
    }
}

/// A guest (compat, 128-byte) siginfo_t as 32 words.
#[derive(Clone, Copy, Debug)]
pub struct GuestSiginfo(pub [u32; 32]);

impl GuestSiginfo {
    pub fn new(sig: usize, code: i32) -> Self {
        let mut w = [0u32; 32];
        w[0] = sig as u32;
        w[2] = code as u32;
        GuestSiginfo(w)
    }

    pub fn fault(sig: usize, code: i32, addr: u32) -> Self {
        let mut s = Self::new(sig, code);
        s.0[3] = addr;
        s
    }

    /// Converts a host (x86_64) siginfo to the i386 layout.
    pub fn from_host(sig: usize, h: &[u32; INFO_WORDS]) -> Self {
        let code = h[2] as i32;
        let mut s = Self::new(sig, code);
        s.0[1] = h[1];
        if code <= 0 {
            // kill/tkill/sigqueue/timer: pid (or timer id), uid (or
            // overrun), sigval (low half of the host's pointer-sized one).
            s.0[3] = h[4];
            s.0[4] = h[5];
            s.0[5] = h[6];
        } else if sig == SIGCHLD {
            s.0[3] = h[4];
            s.0[4] = h[5];
            s.0[5] = h[6];
            s.0[6] = h[8];
            s.0[7] = h[10];
        } else if sig == 29 {
            // SIGPOLL: band (long), fd.
            s.0[3] = h[4];
            s.0[4] = h[6];
        } else {
            s.0[3] = h[4];
            s.0[4] = h[5];
            s.0[5] = h[6];
        }
        s
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

/// A signal taken from the queues, ready for delivery.
pub struct Taken {
    pub sig: usize,
    pub info: GuestSiginfo,
}

fn pending_for(t: &Thread) -> u64 {
    t.slot.queue.pending() | hostsig::PROCESS.pending()
}

/// The lowest pending signal the thread does not block, if any.
pub fn next_unblocked(t: &Thread) -> Option<usize> {
    let p = pending_for(t) & (!t.sigmask | UNBLOCKABLE);
    if p == 0 {
        None
    } else {
        Some(p.trailing_zeros() as usize + 1)
    }
}

/// True if a signal is pending that would run a handler or kill us (what
/// makes a blocking syscall return EINTR). Ignored ones are dropped here.
pub fn interrupting(t: &Thread, proc: &Process) -> Option<(usize, u32)> {
    loop {
        let sig = next_unblocked(t)?;
        let act = proc.actions()[sig];
        let ignored = act.handler == SIG_IGN
            || (act.handler == SIG_DFL && default_action(sig) == Default::Ignore);
        if ignored && sig != SIGKILL && sig != SIGSTOP {
            // Discard it, as the kernel does for ignored signals.
            if t.slot.queue.take(sig).is_none() {
                hostsig::PROCESS.take(sig);
            }
            continue;
        }
        return Some((sig, act.flags));
    }
}

fn take(t: &Thread) -> Option<Taken> {
    let sig = next_unblocked(t)?;
    let raw = t
        .slot
        .queue
        .take(sig)
        .or_else(|| hostsig::PROCESS.take(sig))?;
    Some(Taken {
        sig,
        info: GuestSiginfo::from_host(sig, &raw),
    })
}

/// Delivers every pending, unblocked signal: runs default actions or
/// builds a frame for the handler (nested frames for several).
pub fn deliver_pending(t: &mut Thread, proc: &Process) {
    while let Some(tk) = take(t) {
        deliver(t, proc, tk.sig, tk.info, None);
    }
    if let Some(m) = t.saved_mask.take() {
        set_mask(t, m);
    }
}

/// Runs the default action of `sig`.
fn default_act(t: &mut Thread, proc: &Process, sig: usize) {
    match default_action(sig) {
        Default::Ignore => {}
        Default::Stop => {
            proc.log.flush();
            hostsig::set_default(sig as i32);
            let old = hostsig::set_host_mask(!bit(sig));
            // SAFETY: tgkill to our own thread; the process stops here until
            // SIGCONT.
            unsafe {
                libc::syscall(
                    libc::SYS_tgkill,
                    libc::getpid() as i64,
                    hostsig::gettid() as i64,
                    sig as i64,
                );
            }
            hostsig::set_host_mask(old);
            hostsig::catch(sig as i32);
            let _ = t;
        }
        Default::Term | Default::Core => {
            if proc.log.items.int || proc.log.items.strace {
                proc.log.write(&format!("--- killed by signal {sig} ---\n"));
            }
            proc.log.flush();
            hostsig::die_by(sig as i32);
        }
    }
}

/// Delivers `sig` now. `fault` carries (trapno, error code, cr2) for CPU
/// exceptions.
pub fn deliver(
    t: &mut Thread,
    proc: &Process,
    sig: usize,
    info: GuestSiginfo,
    fault: Option<(u32, u32, u32)>,
) {
    let act = proc.actions()[sig];
    if proc.log.items.int {
        proc.log.write(&format!(
            "qemu: delivering signal {sig} (code {}) at eip={:08x}\n",
            info.0[2] as i32, t.cpu.eip
        ));
    }
    match act.handler {
        SIG_IGN => {}
        SIG_DFL => default_act(t, proc, sig),
        _ => {
            let old_mask = t.saved_mask.take().unwrap_or(t.sigmask);
            let ok = if act.flags & SA_SIGINFO != 0 {
                setup_rt_frame(t, proc, sig, &act, &info, old_mask, fault)
            } else {
                setup_frame(t, proc, sig, &act, old_mask, fault)
            };
            if ok.is_err() {
                // The frame could not be written: the kernel forces SIGSEGV.
                force_default_death(proc, SIGSEGV);
            }
            let mut m = t.sigmask | act.mask;
            if act.flags & SA_NODEFER == 0 {
                m |= bit(sig);
            }
            set_mask(t, m);
            if act.flags & SA_RESETHAND != 0 {
                proc.actions()[sig] = GuestSigaction::default();
            }
        }
    }
}

fn force_default_death(proc: &Process, sig: usize) -> ! {
    proc.log.flush();
    hostsig::die_by(sig as i32)
}

/// A synchronous signal from a CPU exception: if the guest blocks or
/// ignores it, the kernel resets it to the default (and so kills).
pub fn force(
    t: &mut Thread,
    proc: &Process,
    sig: usize,
    info: GuestSiginfo,
    fault: (u32, u32, u32),
) {
    {
        let mut acts = proc.actions();
        let blocked = t.sigmask & bit(sig) != 0;
        if blocked || acts[sig].handler == SIG_IGN {
            acts[sig] = GuestSigaction::default();
        }
    }
    let m = t.sigmask & !bit(sig);
    set_mask(t, m);
    deliver(t, proc, sig, info, Some(fault));
}

/// Maps a CPU exception to its signal, as Linux's trap handlers do.
pub fn exception_signal(cpu: &CpuState, e: Exception) -> (usize, GuestSiginfo, (u32, u32, u32)) {
    let eip = cpu.eip;
    match e {
        Exception::PageFault(MemFault {
            addr,
            write,
            protection,
        }) => {
            let code = if protection { SEGV_ACCERR } else { SEGV_MAPERR };
            let err = (protection as u32) | ((write as u32) << 1) | 4;
            (
                SIGSEGV,
                GuestSiginfo::fault(SIGSEGV, code, addr),
                (14, err, addr),
            )
        }
        Exception::DivideError => (
            SIGFPE,
            GuestSiginfo::fault(SIGFPE, FPE_INTDIV, eip),
            (0, 0, 0),
        ),
        Exception::InvalidOpcode => (
            SIGILL,
            GuestSiginfo::fault(SIGILL, ILL_ILLOPN, eip),
            (6, 0, 0),
        ),
        Exception::GeneralProtection(err) => {
            (SIGSEGV, GuestSiginfo::new(SIGSEGV, SI_KERNEL), (13, err, 0))
        }
        Exception::StackFault => (SIGBUS, GuestSiginfo::new(SIGBUS, SI_KERNEL), (12, 0, 0)),
        Exception::Breakpoint => (SIGTRAP, GuestSiginfo::new(SIGTRAP, SI_KERNEL), (3, 0, 0)),
        Exception::Overflow => (SIGSEGV, GuestSiginfo::new(SIGSEGV, SI_KERNEL), (4, 0, 0)),
        Exception::BoundRange => (SIGSEGV, GuestSiginfo::new(SIGSEGV, SI_KERNEL), (5, 0, 0)),
        Exception::FpuError => (
            SIGFPE,
            GuestSiginfo::fault(SIGFPE, FPE_FLTINV, eip),
            (16, 0, 0),
        ),
        Exception::SimdFpError => {
            let m = cpu.mxcsr;
            let err = !(m >> 7) & m & 0x3f;
            let code = if err & 0x01 != 0 {
                FPE_FLTINV
            } else if err & 0x04 != 0 {
                FPE_FLTDIV
            } else if err & 0x08 != 0 {
                FPE_FLTOVF
            } else if err & 0x12 != 0 {
                FPE_FLTUND
            } else if err & 0x20 != 0 {
                FPE_FLTRES
            } else {
                0
            };
            (SIGFPE, GuestSiginfo::fault(SIGFPE, code, eip), (19, 0, 0))
        }
        Exception::AlignmentCheck => (
            SIGBUS,
            GuestSiginfo::fault(SIGBUS, BUS_ADRALN, eip),
            (17, 0, 0),
        ),
        Exception::SoftwareInterrupt(n) => (
            SIGSEGV,
            GuestSiginfo::new(SIGSEGV, SI_KERNEL),
            (13, ((n as u32) << 3) | 2, 0),
        ),
        Exception::Sysenter | Exception::Halt => {
            (SIGSEGV, GuestSiginfo::new(SIGSEGV, SI_KERNEL), (13, 0, 0))
        }
    }
}

fn on_altstack(a: &AltStack, sp: u32) -> bool {
    a.size != 0 && sp > a.sp && sp.wrapping_sub(a.sp) <= a.size
}

/// sas_ss_flags(sp) of the kernel.
pub fn altstack_flags(a: &AltStack, sp: u32) -> u32 {
    if a.size == 0 || a.flags & SS_DISABLE != 0 {
        SS_DISABLE
    } else if on_altstack(a, sp) {
        SS_ONSTACK
    } else {
        0
    }
}

const FPSTATE_LEGACY: u32 = 112;
const FXSAVE_SIZE: u32 = 512;
const SIGCONTEXT_SIZE: usize = 88;
const SIGFRAME_SIZE: u32 = 4 + 4 + 88 + 624 + 4 + 8;
const RT_SIGFRAME_SIZE: u32 = 4 + 4 + 4 + 4 + 128 + 116 + 8;

struct Placement {
    frame: u32,
    fpstate: u32,
}

fn place(t: &Thread, act: &GuestSigaction, frame_size: u32) -> Placement {
    let mut sp = t.cpu.regs[ESP];
    if act.flags & SA_ONSTACK != 0 && altstack_flags(&t.altstack, sp) == 0 {
        sp = t.altstack.sp.wrapping_add(t.altstack.size);
    }
    let buf_fx = sp.wrapping_sub(FXSAVE_SIZE) & !63;
    let fpstate = buf_fx.wrapping_sub(FPSTATE_LEGACY);
    let sp = fpstate.wrapping_sub(frame_size);
    let frame = (sp.wrapping_add(4) & !15).wrapping_sub(4);
    Placement { frame, fpstate }
}

fn sigcontext(
    cpu: &CpuState,
    fpstate: u32,
    oldmask: u32,
    fault: Option<(u32, u32, u32)>,
) -> Vec<u8> {
    let (trapno, err, cr2) = fault.unwrap_or((0, 0, 0));
    let w = [
        cpu.segs[state::GS].selector & 0xffff,
        cpu.segs[state::FS].selector & 0xffff,
        cpu.segs[state::ES].selector & 0xffff,
        cpu.segs[state::DS].selector & 0xffff,
        cpu.regs[EDI],
        cpu.regs[ESI],
        cpu.regs[EBP],
        cpu.regs[ESP],
        cpu.regs[EBX],
        cpu.regs[EDX],
        cpu.regs[ECX],
        cpu.regs[EAX],
        trapno,
        err,
        cpu.eip,
        cpu.segs[state::CS].selector & 0xffff,
        cpu.eflags(),
        cpu.regs[ESP],
        cpu.segs[state::SS].selector & 0xffff,
        fpstate,
        oldmask,
        cr2,
    ];
    let v: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
    debug_assert_eq!(v.len(), SIGCONTEXT_SIZE);
    v
}

/// The FP area: the 112-byte legacy header then an FXSAVE image. The x87
/// registers are reported in their reset state until the x87 unit keeps
/// them in `CpuState`.
fn fpstate_bytes(cpu: &CpuState) -> Vec<u8> {
    let mut b = vec![0u8; (FPSTATE_LEGACY + FXSAVE_SIZE) as usize];
    // Legacy header: cw, sw, tag (all empty), ...; status; magic 0 = FXSR.
    b[0..4].copy_from_slice(&0xffff_037fu32.to_le_bytes());
    b[4..8].copy_from_slice(&0xffff_0000u32.to_le_bytes());
    b[8..12].copy_from_slice(&0xffff_ffffu32.to_le_bytes());
    let fx = FPSTATE_LEGACY as usize;
    b[fx..fx + 2].copy_from_slice(&0x037fu16.to_le_bytes());
    b[fx + 24..fx + 28].copy_from_slice(&cpu.mxcsr.to_le_bytes());
    b[fx + 28..fx + 32].copy_from_slice(&0xffffu32.to_le_bytes());
    for (i, x) in cpu.xmm.iter().enumerate() {
        let o = fx + 160 + i * 16;
        b[o..o + 16].copy_from_slice(x);
    }
    b
}

fn restore_fpstate(t: &mut Thread, proc: &Process, at: u32) -> Result<(), MemFault> {
    if at == 0 {
        return Ok(());
    }
    let mut b = vec![0u8; (FPSTATE_LEGACY + FXSAVE_SIZE) as usize];
    proc.space.read(at, &mut b)?;
    let fx = FPSTATE_LEGACY as usize;
    let magic = u16::from_le_bytes([b[110], b[111]]);
    if magic == 0xffff {
        // Plain FSAVE data only: nothing of SSE to restore.
        return Ok(());
    }
    let mx = u32::from_le_bytes([b[fx + 24], b[fx + 25], b[fx + 26], b[fx + 27]]);
    t.cpu.mxcsr = mx & 0xffff;
    for i in 0..8 {
        let o = fx + 160 + i * 16;
        t.cpu.xmm[i].copy_from_slice(&b[o..o + 16]);
    }
    Ok(())
}

fn enter_handler(t: &mut Thread, act: &GuestSigaction, sig: usize, frame: u32, edx: u32, ecx: u32) {
    let cpu = &mut t.cpu;
    cpu.regs[ESP] = frame;
    cpu.eip = act.handler;
    cpu.regs[EAX] = sig as u32;
    cpu.regs[EDX] = edx;
    cpu.regs[ECX] = ecx;
    for (seg, sel) in [
        (state::DS, USER_DS),
        (state::ES, USER_DS),
        (state::SS, USER_DS),
        (state::CS, USER_CS),
    ] {
        cpu.segs[seg].selector = sel as u32;
        cpu.segs[seg].base = 0;
        cpu.segs[seg].limit = u32::MAX;
    }
    cpu.eflags &= !(state::DF | state::TF);
}

fn setup_frame(
    t: &mut Thread,
    proc: &Process,
    sig: usize,
    act: &GuestSigaction,
    old_mask: u64,
    fault: Option<(u32, u32, u32)>,
) -> Result<(), MemFault> {
    let p = place(t, act, SIGFRAME_SIZE);
    let f = p.frame;
    let retcode_addr = f + SIGFRAME_SIZE - 8;
    let pretcode = if act.flags & SA_RESTORER != 0 {
        act.restorer
    } else {
        retcode_addr
    };
    let mut b = Vec::with_capacity(SIGFRAME_SIZE as usize);
    b.extend(pretcode.to_le_bytes());
    b.extend((sig as u32).to_le_bytes());
    b.extend(sigcontext(&t.cpu, p.fpstate, old_mask as u32, fault));
    b.extend(std::iter::repeat_n(0u8, 624));
    b.extend(((old_mask >> 32) as u32).to_le_bytes());
    // popl %eax; movl $__NR_sigreturn,%eax; int $0x80
    b.extend([0x58, 0xb8]);
    b.extend(NR_SIGRETURN.to_le_bytes());
    b.extend([0xcd, 0x80]);
    proc.space.write(p.fpstate, &fpstate_bytes(&t.cpu))?;
    proc.space.write(f, &b)?;
    enter_handler(t, act, sig, f, 0, 0);
    Ok(())
}

fn setup_rt_frame(
    t: &mut Thread,
    proc: &Process,
    sig: usize,
    act: &GuestSigaction,
    info: &GuestSiginfo,
    old_mask: u64,
    fault: Option<(u32, u32, u32)>,
) -> Result<(), MemFault> {
    let p = place(t, act, RT_SIGFRAME_SIZE);
    let f = p.frame;
    let info_addr = f + 16;
    let uc_addr = f + 16 + 128;
    let retcode_addr = f + RT_SIGFRAME_SIZE - 8;
    let pretcode = if act.flags & SA_RESTORER != 0 {
        act.restorer
    } else {
        retcode_addr
    };
    let mut b = Vec::with_capacity(RT_SIGFRAME_SIZE as usize);
    b.extend(pretcode.to_le_bytes());
    b.extend((sig as u32).to_le_bytes());
    b.extend(info_addr.to_le_bytes());
    b.extend(uc_addr.to_le_bytes());
    b.extend(info.bytes());
    // ucontext: uc_flags, uc_link, uc_stack, uc_mcontext, uc_sigmask.
    b.extend(0u32.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend(t.altstack.sp.to_le_bytes());
    b.extend(altstack_flags(&t.altstack, t.cpu.regs[ESP]).to_le_bytes());
    b.extend(t.altstack.size.to_le_bytes());
    b.extend(sigcontext(&t.cpu, p.fpstate, old_mask as u32, fault));
    b.extend(old_mask.to_le_bytes());
    // movl $__NR_rt_sigreturn,%eax; int $0x80; (pad)
    b.push(0xb8);
    b.extend(NR_RT_SIGRETURN.to_le_bytes());
    b.extend([0xcd, 0x80, 0x00]);
    proc.space.write(p.fpstate, &fpstate_bytes(&t.cpu))?;
    proc.space.write(f, &b)?;
    enter_handler(t, act, sig, f, info_addr, uc_addr);
    Ok(())
}

/// EFLAGS bits a signal handler may change through the sigcontext.
const FIX_EFLAGS: u32 = 0x0005_0dd5;

fn restore_sigcontext(t: &mut Thread, proc: &Process, sc: u32) -> Result<(), Exception> {
    let mut b = [0u8; SIGCONTEXT_SIZE];
    proc.space.read(sc, &mut b)?;
    let w = |i: usize| u32::from_le_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]]);
    let mut env = CpuEnv { gdt: t.cpu.gdt };
    use x86::interp::Env;
    for (seg, idx) in [
        (state::GS, 0),
        (state::FS, 1),
        (state::ES, 2),
        (state::DS, 3),
        (state::CS, 15),
        (state::SS, 18),
    ] {
        let sel = (w(idx) & 0xffff) as u16;
        // CS and SS must be the user ones with RPL 3 (the kernel forces RPL 3).
        let sel = if seg == state::CS || seg == state::SS {
            sel | 3
        } else {
            sel
        };
        let (base, limit) = env.load_segment(seg, sel)?;
        t.cpu.segs[seg].selector = sel as u32;
        t.cpu.segs[seg].base = base;
        t.cpu.segs[seg].limit = limit;
    }
    let cpu = &mut t.cpu;
    cpu.regs[EDI] = w(4);
    cpu.regs[ESI] = w(5);
    cpu.regs[EBP] = w(6);
    cpu.regs[ESP] = w(7);
    cpu.regs[EBX] = w(8);
    cpu.regs[EDX] = w(9);
    cpu.regs[ECX] = w(10);
    cpu.regs[EAX] = w(11);
    cpu.eip = w(14);
    cpu.set_eflags(w(16), FIX_EFLAGS);
    let fp = w(19);
    restore_fpstate(t, proc, fp)?;
    Ok(())
}

/// sigreturn(2) for the non-RT frame: ESP is 8 past the frame start.
pub fn sys_sigreturn(t: &mut Thread, proc: &Process) -> Result<(), Exception> {
    let frame = t.cpu.regs[ESP].wrapping_sub(8);
    let lo = proc.space.read_u32(frame + 4 + 4 + 80)?;
    let hi = proc.space.read_u32(frame + SIGFRAME_SIZE - 12)?;
    set_mask(t, ((hi as u64) << 32) | lo as u64);
    restore_sigcontext(t, proc, frame + 8)
}

/// rt_sigreturn(2): ESP is 4 past the frame start.
pub fn sys_rt_sigreturn(t: &mut Thread, proc: &Process) -> Result<(), Exception> {
    let frame = t.cpu.regs[ESP].wrapping_sub(4);
    let uc = frame + 16 + 128;
    let mut m = [0u8; 8];
    proc.space.read(uc + 20 + 88, &mut m)?;
    set_mask(t, u64::from_le_bytes(m));
    let ss_sp = proc.space.read_u32(uc + 8)?;
    let ss_flags = proc.space.read_u32(uc + 12)?;
    let ss_size = proc.space.read_u32(uc + 16)?;
    restore_sigcontext(t, proc, uc + 20)?;
    // Like the kernel, a bad alternate stack in the frame is ignored.
    let _ = set_altstack(t, ss_sp, ss_flags, ss_size);
    Ok(())
}

/// sigaltstack's checks; Err(errno).
pub fn set_altstack(t: &mut Thread, sp: u32, flags: u32, size: u32) -> Result<(), i32> {
    if on_altstack(&t.altstack, t.cpu.regs[ESP]) {
        return Err(libc::EPERM);
    }
    let mode = flags & !0x8000_0000; // SS_AUTODISARM accepted
    if mode != 0 && mode != SS_DISABLE && mode != SS_ONSTACK {
        return Err(libc::EINVAL);
    }
    if mode == SS_DISABLE {
        t.altstack = AltStack {
            sp: 0,
            flags: SS_DISABLE,
            size: 0,
        };
        return Ok(());
    }
    // MINSIGSTKSZ of i386 is 2048.
    if size < 2048 {
        return Err(libc::ENOMEM);
    }
    t.altstack = AltStack { sp, flags: 0, size };
    Ok(())
}

/// Host side of a guest action: ignored signals and default actions that
/// ignore, stop or terminate are left to the host kernel (exactly the
/// guest's semantics, and the setting survives execve); handlers and
/// core-dumping defaults go through the queueing handler.
pub fn sync_host_action(sig: usize, act: &GuestSigaction) {
    if sig == SIGKILL || sig == SIGSTOP || sig >= hostsig::NSIG {
        return;
    }
    match act.handler {
        SIG_IGN => hostsig::set_ignore(sig as i32),
        SIG_DFL if default_action(sig) != Default::Core => hostsig::set_default(sig as i32),
        _ => hostsig::catch(sig as i32),
    }
}

/// True for signals whose default action we carry out ourselves.
pub fn caught_by_default(sig: i32) -> bool {
    sig > 0 && default_action(sig as usize) == Default::Core
}

/// Sets the thread's guest signal mask and the host mask that mirrors it.
pub fn set_mask(t: &mut Thread, mask: u64) {
    t.sigmask = mask & !UNBLOCKABLE;
    hostsig::set_host_mask(t.sigmask);
}
