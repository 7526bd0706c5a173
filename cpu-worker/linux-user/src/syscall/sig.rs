//! Signal system calls: rt_sigaction(2) (i386 `struct sigaction`: handler,
//! flags, restorer, mask), sigaction/signal (old forms), rt_sigprocmask(2),
//! sigreturn(2), sigaltstack(2) (`stack_t`), rt_sigsuspend(2),
//! rt_sigpending(2), rt_sigtimedwait(2) (32-bit and time64 timespec),
//! rt_sigqueueinfo(2), pause(2), alarm(2), signalfd(2).

use super::fs::sx;
use super::{err, le32, le64, nr, raw, Ctx, Out, Sys, R};
use crate::hostsig;
use crate::signal::{self, GuestSiginfo, SA_NODEFER, SA_RESETHAND, UNBLOCKABLE};
use crate::task::{GuestSigaction, SS_ONSTACK};

pub fn handle(c: &mut Ctx, n: u32) -> Option<R> {
    let a = c.a;
    Some(match n {
        nr::RT_SIGACTION => rt_sigaction(c),
        nr::SIGACTION => old_sigaction(c),
        nr::SIGNAL => (|| {
            let sig = a[0] as usize;
            check_sig(sig, true)?;
            let new = GuestSigaction {
                handler: a[1],
                flags: SA_RESETHAND | SA_NODEFER,
                restorer: 0,
                mask: 0,
            };
            let old = std::mem::replace(&mut c.p.actions()[sig], new);
            signal::sync_host_action(sig, &new);
            Ok(old.handler)
        })(),
        nr::RT_SIGPROCMASK => (|| {
            if a[3] != 8 {
                return err(libc::EINVAL);
            }
            let set = if a[1] == 0 {
                None
            } else {
                Some(c.read_u64(a[1])?)
            };
            sigprocmask(c, a[0], set, a[2], true)
        })(),
        nr::SIGPROCMASK => (|| {
            let set = if a[1] == 0 {
                None
            } else {
                Some(c.read_u32(a[1])? as u64)
            };
            sigprocmask(c, a[0], set, a[2], false)
        })(),
        nr::SIGRETURN => match signal::sys_sigreturn(c.t, c.p) {
            Ok(()) => Err(Sys::Regs),
            Err(_) => {
                kill_segv(c);
                Err(Sys::Regs)
            }
        },
        nr::RT_SIGRETURN => match signal::sys_rt_sigreturn(c.t, c.p) {
            Ok(()) => Err(Sys::Regs),
            Err(_) => {
                kill_segv(c);
                Err(Sys::Regs)
            }
        },
        nr::SIGALTSTACK => sigaltstack(c),
        nr::RT_SIGSUSPEND => (|| {
            if a[1] != 8 {
                return err(libc::EINVAL);
            }
            let m = c.read_u64(a[0])?;
            suspend(c, m)
        })(),
        nr::SIGSUSPEND => {
            // i386 sigsuspend(int, int, old_sigset_t mask)
            let m = (c.t.sigmask & !0xffff_ffff) | a[2] as u64;
            suspend(c, m)
        }
        nr::PAUSE => {
            loop {
                if signal::interrupting(c.t, c.p).is_some() {
                    break;
                }
                // SAFETY: pause(2) has no arguments.
                unsafe { libc::pause() };
            }
            err(libc::EINTR)
        }
        nr::RT_SIGPENDING | nr::SIGPENDING => (|| {
            let p =
                (hostsig::host_pending() | c.t.slot.queue.pending() | hostsig::PROCESS.pending())
                    & c.t.sigmask;
            if n == nr::RT_SIGPENDING {
                c.write(a[0], &p.to_le_bytes())?;
            } else {
                c.write_u32(a[0], p as u32)?;
            }
            Ok(0)
        })(),
        nr::RT_SIGTIMEDWAIT => sigtimedwait(c, false),
        nr::RT_SIGTIMEDWAIT_TIME64 => sigtimedwait(c, true),
        nr::RT_SIGQUEUEINFO | nr::RT_TGSIGQUEUEINFO => (|| {
            let (pid, tid, sig, info) = if n == nr::RT_SIGQUEUEINFO {
                (a[0], 0, a[1], a[2])
            } else {
                (a[0], a[1], a[2], a[3])
            };
            let g = c.read(info, 128)?;
            // Host siginfo: signo, errno, code, pad, then pid, uid, sigval.
            let mut h = [0u32; 32];
            h[0] = sig;
            h[1] = le32(&g, 4);
            h[2] = le32(&g, 8);
            h[4] = le32(&g, 12);
            h[5] = le32(&g, 16);
            h[6] = le32(&g, 20);
            let hp = h.as_ptr() as usize;
            if n == nr::RT_SIGQUEUEINFO {
                Ok(raw(
                    libc::SYS_rt_sigqueueinfo,
                    [sx(pid), sig as usize, hp, 0, 0, 0],
                )? as u32)
            } else {
                Ok(raw(
                    libc::SYS_rt_tgsigqueueinfo,
                    [sx(pid), sx(tid), sig as usize, hp, 0, 0],
                )? as u32)
            }
        })(),
        nr::ALARM => Ok(raw(libc::SYS_alarm, [a[0] as usize, 0, 0, 0, 0, 0]).unwrap_or(0) as u32),
        nr::SIGNALFD | nr::SIGNALFD4 => (|| {
            if a[2] != 8 {
                return err(libc::EINVAL);
            }
            let m = c.read_u64(a[1])?;
            let fl = if n == nr::SIGNALFD4 { a[3] as usize } else { 0 };
            Ok(raw(
                libc::SYS_signalfd4,
                [sx(a[0]), &m as *const u64 as usize, 8, fl, 0, 0],
            )? as u32)
        })(),
        _ => return None,
    })
}

fn kill_segv(c: &mut Ctx) {
    let info = GuestSiginfo::new(signal::SIGSEGV, signal::SI_KERNEL);
    signal::force(c.t, c.p, signal::SIGSEGV, info, (13, 0, 0));
}

fn check_sig(sig: usize, settable: bool) -> Result<(), Sys> {
    if sig == 0 || sig >= hostsig::NSIG {
        return err(libc::EINVAL);
    }
    if settable && (sig == signal::SIGKILL || sig == signal::SIGSTOP) {
        return err(libc::EINVAL);
    }
    Ok(())
}

fn rt_sigaction(c: &mut Ctx) -> R {
    let a = c.a;
    let sig = a[0] as usize;
    if a[3] != 8 {
        return err(libc::EINVAL);
    }
    check_sig(sig, false)?;
    let new = if a[1] != 0 {
        if sig == signal::SIGKILL || sig == signal::SIGSTOP {
            return err(libc::EINVAL);
        }
        let b = c.read(a[1], 20)?;
        Some(GuestSigaction {
            handler: le32(&b, 0),
            flags: le32(&b, 4),
            restorer: le32(&b, 8),
            mask: le64(&b, 12) & !UNBLOCKABLE,
        })
    } else {
        None
    };
    let old = c.p.actions()[sig];
    if a[2] != 0 {
        let mut o = Out::default();
        o.u32(old.handler)
            .u32(old.flags)
            .u32(old.restorer)
            .u64(old.mask);
        c.write(a[2], &o.0)?;
    }
    if let Some(nw) = new {
        c.p.actions()[sig] = nw;
        signal::sync_host_action(sig, &nw);
    }
    Ok(0)
}

/// The old sigaction(2): handler, 32-bit mask, flags, restorer.
fn old_sigaction(c: &mut Ctx) -> R {
    let a = c.a;
    let sig = a[0] as usize;
    check_sig(sig, false)?;
    let new = if a[1] != 0 {
        if sig == signal::SIGKILL || sig == signal::SIGSTOP {
            return err(libc::EINVAL);
        }
        let b = c.read(a[1], 16)?;
        Some(GuestSigaction {
            handler: le32(&b, 0),
            mask: le32(&b, 4) as u64 & !UNBLOCKABLE,
            flags: le32(&b, 8),
            restorer: le32(&b, 12),
        })
    } else {
        None
    };
    let old = c.p.actions()[sig];
    if a[2] != 0 {
        let mut o = Out::default();
        o.u32(old.handler)
            .u32(old.mask as u32)
            .u32(old.flags)
            .u32(old.restorer);
        c.write(a[2], &o.0)?;
    }
    if let Some(nw) = new {
        c.p.actions()[sig] = nw;
        signal::sync_host_action(sig, &nw);
    }
    Ok(0)
}

fn sigprocmask(c: &mut Ctx, how: u32, set: Option<u64>, oldp: u32, wide: bool) -> R {
    let old = c.t.sigmask;
    if let Some(s) = set {
        let m = match how as i32 {
            libc::SIG_BLOCK => old | s,
            libc::SIG_UNBLOCK => old & !s,
            libc::SIG_SETMASK => {
                if wide {
                    s
                } else {
                    (old & !0xffff_ffff) | s
                }
            }
            _ => return err(libc::EINVAL),
        };
        signal::set_mask(c.t, m);
    }
    if oldp != 0 {
        if wide {
            c.write(oldp, &old.to_le_bytes())?;
        } else {
            c.write_u32(oldp, old as u32)?;
        }
    }
    Ok(0)
}

fn sigaltstack(c: &mut Ctx) -> R {
    let a = c.a;
    let cur = c.t.altstack;
    let old = if a[1] != 0 {
        let mut o = Out::default();
        let flags = signal::altstack_flags(&cur, c.t.cpu.regs[x86::state::ESP]);
        o.u32(cur.sp).u32(flags).u32(cur.size);
        Some(o.0)
    } else {
        None
    };
    if a[0] != 0 {
        let b = c.read(a[0], 12)?;
        if let Err(e) = signal::set_altstack(c.t, le32(&b, 0), le32(&b, 4), le32(&b, 8)) {
            return err(e);
        }
    }
    if let Some(o) = old {
        c.write(a[1], &o)?;
    }
    let _ = SS_ONSTACK;
    Ok(0)
}

/// rt_sigsuspend: wait with `mask` until a signal runs a handler (or
/// kills us); the old mask comes back after the handler.
fn suspend(c: &mut Ctx, mask: u64) -> R {
    let old = c.t.sigmask;
    signal::set_mask(c.t, mask);
    loop {
        if signal::interrupting(c.t, c.p).is_some() {
            break;
        }
        let m = c.t.sigmask;
        // SAFETY: rt_sigsuspend with a live 8-byte mask.
        unsafe {
            libc::syscall(libc::SYS_rt_sigsuspend, &m as *const u64, 8i64);
        }
    }
    c.t.saved_mask = Some(old);
    err(libc::EINTR)
}

fn sigtimedwait(c: &mut Ctx, time64: bool) -> R {
    let a = c.a;
    if a[3] != 8 {
        return err(libc::EINVAL);
    }
    let set = c.read_u64(a[0])? & !UNBLOCKABLE;
    // A signal our handler already took off the host queue comes first.
    for sig in 1..hostsig::NSIG {
        if set & signal::bit(sig) == 0 {
            continue;
        }
        let raw_info =
            c.t.slot
                .queue
                .take(sig)
                .or_else(|| hostsig::PROCESS.take(sig));
        if let Some(h) = raw_info {
            if a[1] != 0 {
                c.write(a[1], &GuestSiginfo::from_host(sig, &h).bytes())?;
            }
            return Ok(sig as u32);
        }
    }
    let ts = if a[2] == 0 {
        None
    } else {
        Some(super::time::read_timespec(c, a[2], time64)?)
    };
    let tp = ts
        .as_ref()
        .map_or(0, |t| t as *const libc::timespec as usize);
    let mut info = [0u32; 32];
    let ip = info.as_mut_ptr() as usize;
    let sp = &set as *const u64 as usize;
    let r = c.blocking(false, || {
        raw(libc::SYS_rt_sigtimedwait, [sp, ip, tp, 8, 0, 0])
    })?;
    if a[1] != 0 {
        c.write(a[1], &GuestSiginfo::from_host(r as usize, &info).bytes())?;
    }
    Ok(r)
}
