//! Processes: identities (getpid(2), getuid(2) and the 16-bit i386 forms),
//! uname(2) (machine "i686"), rlimits (getrlimit(2), ugetrlimit,
//! prlimit64), getrusage(2) (i386 `struct rusage`), sysinfo(2), times(2),
//! prctl(2), scheduling, fork(2)/vfork(2), execve(2) (an i386 program stays
//! under emulation by re-executing the emulator, as binfmt_misc would),
//! wait4(2)/waitpid(2)/waitid(2) and kill(2)/tkill/tgkill.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::Ordering;

use super::fs::sx;
use super::{err, le32, nr, raw, Ctx, Out, Sys, R};
use crate::elf;
use crate::hostsig;

pub fn handle(c: &mut Ctx, n: u32) -> Option<R> {
    let a = c.a;
    Some(match n {
        nr::GETPID => Ok(raw(libc::SYS_getpid, [0; 6]).unwrap_or(0) as u32),
        nr::GETPPID => Ok(raw(libc::SYS_getppid, [0; 6]).unwrap_or(0) as u32),
        nr::GETTID => Ok(c.t.tid as u32),
        nr::GETUID32 => id(libc::SYS_getuid, false),
        nr::GETEUID32 => id(libc::SYS_geteuid, false),
        nr::GETGID32 => id(libc::SYS_getgid, false),
        nr::GETEGID32 => id(libc::SYS_getegid, false),
        nr::GETUID => id(libc::SYS_getuid, true),
        nr::GETEUID => id(libc::SYS_geteuid, true),
        nr::GETGID => id(libc::SYS_getgid, true),
        nr::GETEGID => id(libc::SYS_getegid, true),
        // The set*id calls change only the calling thread, as the kernel's
        // do (the guest's libc broadcasts them to its threads itself).
        nr::SETUID32 => one(libc::SYS_setuid, sx(a[0])),
        nr::SETGID32 => one(libc::SYS_setgid, sx(a[0])),
        nr::SETUID => one(libc::SYS_setuid, id16(a[0])),
        nr::SETGID => one(libc::SYS_setgid, id16(a[0])),
        nr::SETREUID32 => two(libc::SYS_setreuid, sx(a[0]), sx(a[1])),
        nr::SETREGID32 => two(libc::SYS_setregid, sx(a[0]), sx(a[1])),
        nr::SETREUID => two(libc::SYS_setreuid, id16(a[0]), id16(a[1])),
        nr::SETREGID => two(libc::SYS_setregid, id16(a[0]), id16(a[1])),
        nr::SETRESUID32 => three(libc::SYS_setresuid, sx(a[0]), sx(a[1]), sx(a[2])),
        nr::SETRESGID32 => three(libc::SYS_setresgid, sx(a[0]), sx(a[1]), sx(a[2])),
        nr::SETRESUID => three(libc::SYS_setresuid, id16(a[0]), id16(a[1]), id16(a[2])),
        nr::SETRESGID => three(libc::SYS_setresgid, id16(a[0]), id16(a[1]), id16(a[2])),
        nr::SETFSUID32 => one(libc::SYS_setfsuid, sx(a[0])),
        nr::SETFSGID32 => one(libc::SYS_setfsgid, sx(a[0])),
        nr::GETRESUID32 | nr::GETRESGID32 | nr::GETRESUID | nr::GETRESGID => getres(c, n),
        nr::GETGROUPS32 | nr::GETGROUPS => getgroups(c, n == nr::GETGROUPS),
        nr::SETGROUPS32 | nr::SETGROUPS => setgroups(c, n == nr::SETGROUPS),
        nr::UNAME => uname(c),
        nr::GETRLIMIT | nr::UGETRLIMIT => getrlimit(c, n == nr::GETRLIMIT),
        nr::SETRLIMIT => (|| {
            let b = c.read(a[1], 8)?;
            let cv = |v: u32| if v == u32::MAX { u64::MAX } else { v as u64 };
            let rl = libc::rlimit {
                rlim_cur: cv(le32(&b, 0)),
                rlim_max: cv(le32(&b, 4)),
            };
            Ok(raw(
                libc::SYS_setrlimit,
                [a[0] as usize, &rl as *const _ as usize, 0, 0, 0, 0],
            )? as u32)
        })(),
        nr::PRLIMIT64 => (|| {
            let nw = c.buf(a[2], 16)?;
            let old = c.buf(a[3], 16)?;
            Ok(raw(
                libc::SYS_prlimit64,
                [sx(a[0]), a[1] as usize, nw, old, 0, 0],
            )? as u32)
        })(),
        nr::GETRUSAGE => (|| {
            let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
            raw(
                libc::SYS_getrusage,
                [sx(a[0]), ru.as_mut_ptr() as usize, 0, 0, 0, 0],
            )?;
            // SAFETY: the call succeeded and filled the zeroed buffer.
            let ru = unsafe { ru.assume_init() };
            c.write(a[1], &rusage_bytes(&ru))?;
            Ok(0)
        })(),
        nr::SYSINFO => sysinfo(c),
        nr::TIMES => (|| {
            let mut t = std::mem::MaybeUninit::<libc::tms>::zeroed();
            let r = raw(libc::SYS_times, [t.as_mut_ptr() as usize, 0, 0, 0, 0, 0])?;
            if a[0] != 0 {
                // SAFETY: the call succeeded and filled the zeroed buffer.
                let t = unsafe { t.assume_init() };
                let mut o = Out::default();
                o.u32(t.tms_utime as u32)
                    .u32(t.tms_stime as u32)
                    .u32(t.tms_cutime as u32)
                    .u32(t.tms_cstime as u32);
                c.write(a[0], &o.0)?;
            }
            Ok(r as u32)
        })(),
        nr::GETRANDOM => (|| {
            let b = c.buf(a[0], a[1] as usize)?;
            let (len, fl) = (a[1] as usize, a[2] as usize);
            c.blocking(true, || raw(libc::SYS_getrandom, [b, len, fl, 0, 0, 0]))
        })(),
        nr::PERSONALITY => {
            let old = c.p.personality.load(Ordering::Relaxed);
            if a[0] != 0xffff_ffff {
                c.p.personality.store(a[0], Ordering::Relaxed);
            }
            Ok(old)
        }
        nr::PRCTL => prctl(c),
        nr::SCHED_YIELD => one(libc::SYS_sched_yield, 0),
        nr::SCHED_GETAFFINITY => (|| {
            let len = a[1] as usize;
            let b = c.buf(a[2], len)?;
            Ok(raw(libc::SYS_sched_getaffinity, [sx(a[0]), len, b, 0, 0, 0])? as u32)
        })(),
        nr::SCHED_SETAFFINITY => (|| {
            let len = a[1] as usize;
            let b = c.buf(a[2], len)?;
            Ok(raw(libc::SYS_sched_setaffinity, [sx(a[0]), len, b, 0, 0, 0])? as u32)
        })(),
        nr::SCHED_GETSCHEDULER => one(libc::SYS_sched_getscheduler, sx(a[0])),
        nr::SCHED_GET_PRIORITY_MAX => one(libc::SYS_sched_get_priority_max, sx(a[0])),
        nr::SCHED_GET_PRIORITY_MIN => one(libc::SYS_sched_get_priority_min, sx(a[0])),
        nr::SCHED_GETPARAM | nr::SCHED_SETPARAM => (|| {
            let b = c.buf(a[1], 4)?;
            let hn = if n == nr::SCHED_GETPARAM {
                libc::SYS_sched_getparam
            } else {
                libc::SYS_sched_setparam
            };
            Ok(raw(hn, [sx(a[0]), b, 0, 0, 0, 0])? as u32)
        })(),
        nr::SCHED_SETSCHEDULER => (|| {
            let b = c.buf(a[2], 4)?;
            Ok(raw(
                libc::SYS_sched_setscheduler,
                [sx(a[0]), sx(a[1]), b, 0, 0, 0],
            )? as u32)
        })(),
        nr::GETPRIORITY => two(libc::SYS_getpriority, sx(a[0]), sx(a[1])),
        nr::SETPRIORITY => three(libc::SYS_setpriority, sx(a[0]), sx(a[1]), sx(a[2])),
        nr::NICE => (|| {
            let cur = raw(libc::SYS_getpriority, [0, 0, 0, 0, 0, 0])? as i64;
            let nice = 20 - cur + a[0] as i32 as i64;
            Ok(raw(
                libc::SYS_setpriority,
                [0, 0, nice.clamp(-20, 19) as usize, 0, 0, 0],
            )? as u32)
        })(),
        nr::SETSID => one(libc::SYS_setsid, 0),
        nr::GETSID => one(libc::SYS_getsid, sx(a[0])),
        nr::GETPGID => one(libc::SYS_getpgid, sx(a[0])),
        nr::SETPGID => two(libc::SYS_setpgid, sx(a[0]), sx(a[1])),
        nr::GETPGRP => one(libc::SYS_getpgid, 0),
        nr::KILL => two(libc::SYS_kill, sx(a[0]), a[1] as usize),
        nr::TKILL => two(libc::SYS_tkill, sx(a[0]), a[1] as usize),
        nr::TGKILL => three(libc::SYS_tgkill, sx(a[0]), sx(a[1]), a[2] as usize),
        nr::FORK | nr::VFORK => fork(c),
        nr::EXECVE => execve(c, libc::AT_FDCWD, a[0], a[1], a[2]),
        nr::EXECVEAT => {
            if a[4] != 0 || a[0] as i32 != libc::AT_FDCWD {
                c.unimp("execveat with a directory fd or flags");
                err(libc::ENOSYS)
            } else {
                execve(c, libc::AT_FDCWD, a[1], a[2], a[3])
            }
        }
        nr::WAIT4 => wait4(c, a[0], a[1], a[2], a[3]),
        nr::WAITPID => wait4(c, a[0], a[1], a[2], 0),
        nr::WAITID => waitid(c),
        nr::GETCPU => (|| {
            let mut cpu = 0u32;
            let mut node = 0u32;
            raw(
                libc::SYS_getcpu,
                [
                    &mut cpu as *mut u32 as usize,
                    &mut node as *mut u32 as usize,
                    0,
                    0,
                    0,
                    0,
                ],
            )?;
            if a[0] != 0 {
                c.write_u32(a[0], cpu)?;
            }
            if a[1] != 0 {
                c.write_u32(a[1], node)?;
            }
            Ok(0)
        })(),
        nr::CAPGET => (|| {
            let h = c.buf(a[0], 8)?;
            let d = c.buf(a[1], 24)?;
            Ok(raw(libc::SYS_capget, [h, d, 0, 0, 0, 0])? as u32)
        })(),
        nr::IOPRIO_GET => two(libc::SYS_ioprio_get, sx(a[0]), sx(a[1])),
        nr::IOPRIO_SET => three(libc::SYS_ioprio_set, sx(a[0]), sx(a[1]), sx(a[2])),
        _ => return None,
    })
}

fn id(n: libc::c_long, narrow: bool) -> R {
    let v = raw(n, [0; 6])? as u32;
    Ok(if narrow && v > 0xffff { 0xfffe } else { v })
}

fn id16(v: u32) -> usize {
    if v as u16 == 0xffff {
        usize::MAX
    } else {
        (v & 0xffff) as usize
    }
}

fn one(n: libc::c_long, a: usize) -> R {
    Ok(raw(n, [a, 0, 0, 0, 0, 0])? as u32)
}

fn two(n: libc::c_long, a: usize, b: usize) -> R {
    Ok(raw(n, [a, b, 0, 0, 0, 0])? as u32)
}

fn three(n: libc::c_long, a: usize, b: usize, d: usize) -> R {
    Ok(raw(n, [a, b, d, 0, 0, 0])? as u32)
}

fn getres(c: &Ctx, n: u32) -> R {
    let mut v = [0u32; 3];
    let hn = if matches!(n, nr::GETRESUID32 | nr::GETRESUID) {
        libc::SYS_getresuid
    } else {
        libc::SYS_getresgid
    };
    raw(
        hn,
        [
            &mut v[0] as *mut u32 as usize,
            &mut v[1] as *mut u32 as usize,
            &mut v[2] as *mut u32 as usize,
            0,
            0,
            0,
        ],
    )?;
    let narrow = matches!(n, nr::GETRESUID | nr::GETRESGID);
    for (i, x) in v.iter().enumerate() {
        if narrow {
            let y = if *x > 0xffff { 0xfffe } else { *x as u16 };
            c.write(c.a[i], &y.to_le_bytes())?;
        } else {
            c.write_u32(c.a[i], *x)?;
        }
    }
    Ok(0)
}

fn getgroups(c: &Ctx, narrow: bool) -> R {
    let size = c.a[0] as i32;
    if !(0..=65536).contains(&size) {
        return err(libc::EINVAL);
    }
    let mut g = vec![0u32; size as usize];
    let k = raw(
        libc::SYS_getgroups,
        [size as usize, g.as_mut_ptr() as usize, 0, 0, 0, 0],
    )?;
    if size > 0 {
        let mut o = Out::default();
        for x in &g[..k] {
            if narrow {
                o.u16(if *x > 0xffff { 0xfffe } else { *x as u16 });
            } else {
                o.u32(*x);
            }
        }
        c.write(c.a[1], &o.0)?;
    }
    Ok(k as u32)
}

fn setgroups(c: &Ctx, narrow: bool) -> R {
    let size = c.a[0] as usize;
    if size > 65536 {
        return err(libc::EINVAL);
    }
    let w = if narrow { 2 } else { 4 };
    let b = c.read(c.a[1], size * w)?;
    let g: Vec<u32> = (0..size)
        .map(|i| {
            if narrow {
                super::le16(&b, i * 2) as u32
            } else {
                le32(&b, i * 4)
            }
        })
        .collect();
    Ok(raw(libc::SYS_setgroups, [size, g.as_ptr() as usize, 0, 0, 0, 0])? as u32)
}

fn uname(c: &Ctx) -> R {
    let mut u = std::mem::MaybeUninit::<libc::utsname>::zeroed();
    raw(libc::SYS_uname, [u.as_mut_ptr() as usize, 0, 0, 0, 0, 0])?;
    // SAFETY: the call succeeded and filled the zeroed buffer.
    let u = unsafe { u.assume_init() };
    let field = |f: &[libc::c_char]| -> [u8; 65] {
        let mut o = [0u8; 65];
        for (d, s) in o.iter_mut().zip(f.iter()).take(64) {
            *d = *s as u8;
        }
        o
    };
    let mut out = Vec::with_capacity(390);
    out.extend(field(&u.sysname));
    out.extend(field(&u.nodename));
    let mut rel = field(&u.release);
    if let Some(r) = &c.p.opts.uname_release {
        rel = [0u8; 65];
        let b = r.as_bytes();
        let k = b.len().min(64);
        rel[..k].copy_from_slice(&b[..k]);
    }
    out.extend(rel);
    out.extend(field(&u.version));
    let mut m = [0u8; 65];
    m[..4].copy_from_slice(b"i686");
    out.extend(m);
    out.extend(field(&u.domainname));
    c.write(c.a[0], &out)?;
    Ok(0)
}

fn getrlimit(c: &Ctx, old: bool) -> R {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    raw(
        libc::SYS_getrlimit,
        [c.a[0] as usize, &mut rl as *mut _ as usize, 0, 0, 0, 0],
    )?;
    // ugetrlimit: RLIM_INFINITY is ~0 (32-bit); the old call clamps to
    // 0x7fffffff.
    let inf = if old { 0x7fff_ffff } else { u32::MAX };
    let cv = |v: u64| if v > inf as u64 { inf } else { v as u32 };
    let mut o = Out::default();
    o.u32(cv(rl.rlim_cur)).u32(cv(rl.rlim_max));
    c.write(c.a[1], &o.0)?;
    Ok(0)
}

/// The i386 `struct rusage` (72 bytes).
pub fn rusage_bytes(ru: &libc::rusage) -> Vec<u8> {
    let mut o = Out::default();
    o.u32(ru.ru_utime.tv_sec as u32)
        .u32(ru.ru_utime.tv_usec as u32)
        .u32(ru.ru_stime.tv_sec as u32)
        .u32(ru.ru_stime.tv_usec as u32);
    for v in [
        ru.ru_maxrss,
        ru.ru_ixrss,
        ru.ru_idrss,
        ru.ru_isrss,
        ru.ru_minflt,
        ru.ru_majflt,
        ru.ru_nswap,
        ru.ru_inblock,
        ru.ru_oublock,
        ru.ru_msgsnd,
        ru.ru_msgrcv,
        ru.ru_nsignals,
        ru.ru_nvcsw,
        ru.ru_nivcsw,
    ] {
        o.u32(v as u32);
    }
    o.0
}

fn sysinfo(c: &Ctx) -> R {
    let mut si = std::mem::MaybeUninit::<libc::sysinfo>::zeroed();
    raw(libc::SYS_sysinfo, [si.as_mut_ptr() as usize, 0, 0, 0, 0, 0])?;
    // SAFETY: the call succeeded and filled the zeroed buffer.
    let si = unsafe { si.assume_init() };
    // Scale the memory figures into 32 bits as the compat call does.
    let mut unit = si.mem_unit.max(1) as u64;
    let mut shift = 0;
    let biggest = [si.totalram, si.totalswap, si.totalhigh, si.bufferram]
        .into_iter()
        .max()
        .unwrap_or(0);
    while (biggest >> shift) > u32::MAX as u64 {
        shift += 1;
    }
    unit <<= shift;
    let s = |v: u64| (v >> shift) as u32;
    let mut o = Out::default();
    o.u32(si.uptime as u32)
        .u32(si.loads[0] as u32)
        .u32(si.loads[1] as u32)
        .u32(si.loads[2] as u32)
        .u32(s(si.totalram))
        .u32(s(si.freeram))
        .u32(s(si.sharedram))
        .u32(s(si.bufferram))
        .u32(s(si.totalswap))
        .u32(s(si.freeswap))
        .u16(si.procs)
        .u16(0)
        .u32(s(si.totalhigh))
        .u32(s(si.freehigh))
        .u32(unit as u32)
        .zeros(8);
    c.write(c.a[0], &o.0)?;
    Ok(0)
}

fn prctl(c: &mut Ctx) -> R {
    let a = c.a;
    match a[0] as i32 {
        libc::PR_SET_NAME => {
            let name = c.read(a[1], 16)?;
            Ok(raw(
                libc::SYS_prctl,
                [
                    libc::PR_SET_NAME as usize,
                    name.as_ptr() as usize,
                    0,
                    0,
                    0,
                    0,
                ],
            )? as u32)
        }
        libc::PR_GET_NAME => {
            let mut name = [0u8; 16];
            raw(
                libc::SYS_prctl,
                [
                    libc::PR_GET_NAME as usize,
                    name.as_mut_ptr() as usize,
                    0,
                    0,
                    0,
                    0,
                ],
            )?;
            c.write(a[1], &name)?;
            Ok(0)
        }
        libc::PR_GET_PDEATHSIG => {
            let mut v = 0i32;
            raw(
                libc::SYS_prctl,
                [
                    libc::PR_GET_PDEATHSIG as usize,
                    &mut v as *mut i32 as usize,
                    0,
                    0,
                    0,
                    0,
                ],
            )?;
            c.write_u32(a[1], v as u32)?;
            Ok(0)
        }
        libc::PR_SET_PDEATHSIG
        | libc::PR_GET_DUMPABLE
        | libc::PR_SET_DUMPABLE
        | libc::PR_GET_KEEPCAPS
        | libc::PR_SET_KEEPCAPS
        | libc::PR_SET_NO_NEW_PRIVS
        | libc::PR_GET_NO_NEW_PRIVS
        | libc::PR_SET_CHILD_SUBREAPER
        | libc::PR_CAPBSET_READ
        | libc::PR_GET_TIMERSLACK
        | libc::PR_SET_TIMERSLACK => Ok(raw(
            libc::SYS_prctl,
            [a[0] as usize, a[1] as usize, a[2] as usize, 0, 0, 0],
        )? as u32),
        libc::PR_GET_SECCOMP => Ok(0),
        other => {
            c.unimp(&format!("prctl option {other}"));
            err(libc::EINVAL)
        }
    }
}

fn fork(c: &mut Ctx) -> R {
    let pid = fork_host(c)?;
    Ok(pid as u32)
}

/// Forks the emulator; in the child only the calling thread goes on.
pub fn fork_host(c: &mut Ctx) -> Result<i32, Sys> {
    c.p.log.flush();
    // Hold the mapping lock so no other thread is inside it at the fork.
    let g = c.p.space.lock();
    // SAFETY: fork(2); the child continues with this thread only, and the
    // locks other threads might hold (the allocator's) are made safe by
    // glibc's atfork handlers; ours is held by us.
    let pid = unsafe { libc::fork() };
    drop(g);
    if pid < 0 {
        return Err(Sys::Err(crate::host::Errno::last().0));
    }
    if pid == 0 {
        hostsig::forget_other_threads(c.t.slot);
        c.p.live_threads.store(1, Ordering::Release);
        c.t.tid = hostsig::gettid();
    }
    Ok(pid)
}

fn read_str_array(c: &Ctx, mut at: u32) -> Result<Vec<Vec<u8>>, Sys> {
    let mut v = Vec::new();
    if at == 0 {
        return Ok(v);
    }
    loop {
        let p = c.read_u32(at)?;
        if p == 0 {
            return Ok(v);
        }
        if v.len() > 0x20000 {
            return err(libc::E2BIG);
        }
        v.push(
            c.p.space
                .read_cstr(p, 128 * 1024)
                .map_err(|_| Sys::Err(libc::EFAULT))?,
        );
        at = at.wrapping_add(4);
    }
}

fn cstrings(v: &[Vec<u8>]) -> Vec<CString> {
    v.iter()
        .map(|s| CString::new(s.clone()).unwrap_or_default())
        .collect()
}

fn host_execve(path: &CString, argv: &[CString], envp: &[CString]) -> Sys {
    let mut ap: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    ap.push(std::ptr::null());
    let mut ep: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    ep.push(std::ptr::null());
    // SAFETY: NUL-terminated arrays of pointers to live C strings.
    unsafe { libc::execve(path.as_ptr(), ap.as_ptr(), ep.as_ptr()) };
    Sys::Err(crate::host::Errno::last().0)
}

/// The interpreter line of a script ("#!interp [arg]").
fn shebang(head: &[u8]) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let rest = head.strip_prefix(b"#!")?;
    let line_end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let line = &rest[..line_end];
    let trimmed: &[u8] = {
        let s = line
            .iter()
            .position(|&b| b != b' ' && b != b'\t')
            .unwrap_or(line.len());
        let e = line
            .iter()
            .rposition(|&b| b != b' ' && b != b'\t' && b != b'\r')
            .map_or(s, |e| e + 1);
        &line[s..e.max(s)]
    };
    if trimmed.is_empty() {
        return None;
    }
    let split = trimmed
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(trimmed.len());
    let interp = trimmed[..split].to_vec();
    let arg = trimmed[split..]
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .map(|s| trimmed[split + s..].to_vec());
    Some((interp, arg))
}

fn read_head(path: &CString) -> Result<Vec<u8>, Sys> {
    use std::io::Read;
    let p = std::path::Path::new(std::ffi::OsStr::from_bytes(path.as_bytes()));
    let mut f =
        std::fs::File::open(p).map_err(|e| Sys::Err(e.raw_os_error().unwrap_or(libc::ENOENT)))?;
    let mut head = vec![0u8; 256];
    let n = f
        .read(&mut head)
        .map_err(|e| Sys::Err(e.raw_os_error().unwrap_or(libc::EIO)))?;
    head.truncate(n);
    Ok(head)
}

fn execve(c: &mut Ctx, _dirfd: i32, path: u32, argv: u32, envp: u32) -> R {
    let guest_path = c.cstr(path)?;
    let mut args = read_str_array(c, argv)?;
    let env = read_str_array(c, envp)?;
    let mut host_path = super::fs::host_path(c, guest_path.clone());
    // Check access the way the kernel would before replacing ourselves.
    // SAFETY: access(2) with a valid C string.
    if unsafe { libc::access(host_path.as_ptr(), libc::X_OK) } != 0 {
        return Err(Sys::Err(crate::host::Errno::last().0));
    }
    let mut head = read_head(&host_path)?;
    let mut prog_name = guest_path.clone();
    if let Some((interp, arg)) = shebang(&head) {
        let ipath = c.redirect(interp.clone());
        let ihead = read_head(&ipath)?;
        if !elf::is_i386_elf(&ihead) {
            // A host interpreter runs the script natively.
            return Err(host_execve(&host_path, &cstrings(&args), &cstrings(&env)));
        }
        let mut nargs = vec![interp.clone()];
        if let Some(a) = arg {
            nargs.push(a);
        }
        nargs.push(guest_path.clone());
        nargs.extend(args.iter().skip(1).cloned());
        args = nargs;
        host_path = ipath;
        head = ihead;
        prog_name = interp;
    }
    if !elf::is_i386_elf(&head) {
        return Err(host_execve(&host_path, &cstrings(&args), &cstrings(&env)));
    }
    // Re-execute the emulator on the new program with our options.
    let me = match std::env::current_exe() {
        Ok(p) => p,
        Err(_) => return err(libc::ENOEXEC),
    };
    let mut hargs: Vec<OsString> = vec![OsString::from("qemu-i386")];
    hargs.extend(c.p.opts.reexec.iter().cloned());
    hargs.push(OsString::from("-0"));
    hargs.push(OsString::from_vec(
        args.first().cloned().unwrap_or_default(),
    ));
    hargs.push(OsString::from("--"));
    hargs.push(OsString::from_vec(host_path.as_bytes().to_vec()));
    hargs.extend(args.iter().skip(1).map(|a| OsString::from_vec(a.clone())));
    let _ = prog_name;
    let hargs: Vec<CString> = hargs
        .into_iter()
        .map(|a| CString::new(a.into_vec()).unwrap_or_default())
        .collect();
    let me = CString::new(me.into_os_string().into_vec()).unwrap_or_default();
    c.p.log.flush();
    Err(host_execve(&me, &hargs, &cstrings(&env)))
}

fn wait4(c: &mut Ctx, pid: u32, status: u32, options: u32, rusage: u32) -> R {
    let mut st = 0i32;
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    let sp = &mut st as *mut i32 as usize;
    let rp = ru.as_mut_ptr() as usize;
    let args = [sx(pid), sp, options as usize, rp, 0, 0];
    let r = c.blocking(true, || raw(libc::SYS_wait4, args))?;
    if r != 0 {
        if status != 0 {
            c.write_u32(status, st as u32)?;
        }
        if rusage != 0 {
            // SAFETY: wait4 filled the zeroed buffer (or left it zero).
            let ru = unsafe { ru.assume_init() };
            c.write(rusage, &rusage_bytes(&ru))?;
        }
    }
    Ok(r)
}

fn waitid(c: &mut Ctx) -> R {
    let a = c.a;
    let mut si = [0u32; 32];
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    let args = [
        a[0] as usize,
        sx(a[1]),
        si.as_mut_ptr() as usize,
        a[3] as usize,
        ru.as_mut_ptr() as usize,
        0,
    ];
    let r = c.blocking(true, || raw(libc::SYS_waitid, args))?;
    if a[2] != 0 {
        let g = crate::signal::GuestSiginfo::from_host(si[0] as usize, &si);
        let mut g = g;
        g.0[0] = si[0];
        c.write(a[2], &g.bytes())?;
    }
    if a[4] != 0 {
        // SAFETY: waitid filled the zeroed buffer (or left it zero).
        let ru = unsafe { ru.assume_init() };
        c.write(a[4], &rusage_bytes(&ru))?;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_lines() {
        assert_eq!(
            shebang(b"#!/bin/sh\necho"),
            Some((b"/bin/sh".to_vec(), None))
        );
        assert_eq!(
            shebang(b"#! /usr/bin/env  python3 \nx"),
            Some((b"/usr/bin/env".to_vec(), Some(b"python3".to_vec())))
        );
        assert_eq!(shebang(b"#!\n"), None);
        assert_eq!(shebang(b"\x7fELF"), None);
    }
}
