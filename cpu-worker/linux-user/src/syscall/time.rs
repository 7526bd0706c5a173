//! Time: clock_gettime(2) and clock_getres(2) (32-bit `struct timespec`
//! and the time64 calls), gettimeofday(2) (32-bit `struct timeval`),
//! time(2), nanosleep(2), clock_nanosleep(2), setitimer(2)/getitimer(2)
//! (32-bit `struct itimerval`), POSIX timers (timer_create(2) with the
//! i386 `struct sigevent`, timer_settime(2)) and timerfd(2).

use super::fs::sx;
use super::{err, le32, le64, nr, raw, ret, Ctx, Out, Sys, R};

pub fn read_timespec(c: &Ctx, addr: u32, time64: bool) -> Result<libc::timespec, Sys> {
    if time64 {
        let b = c.read(addr, 16)?;
        Ok(libc::timespec {
            tv_sec: le64(&b, 0) as i64,
            tv_nsec: le64(&b, 8) as i64,
        })
    } else {
        let b = c.read(addr, 8)?;
        Ok(libc::timespec {
            tv_sec: le32(&b, 0) as i32 as i64,
            tv_nsec: le32(&b, 4) as i32 as i64,
        })
    }
}

pub fn timespec_bytes(ts: &libc::timespec, time64: bool) -> Vec<u8> {
    let mut o = Out::default();
    if time64 {
        o.u64(ts.tv_sec as u64).u64(ts.tv_nsec as u64);
    } else {
        o.u32(ts.tv_sec as u32).u32(ts.tv_nsec as u32);
    }
    o.0
}

fn read_itimerspec(c: &Ctx, addr: u32, time64: bool) -> Result<libc::itimerspec, Sys> {
    let w = if time64 { 16 } else { 8 };
    Ok(libc::itimerspec {
        it_interval: read_timespec(c, addr, time64)?,
        it_value: read_timespec(c, addr + w, time64)?,
    })
}

fn itimerspec_bytes(v: &libc::itimerspec, time64: bool) -> Vec<u8> {
    let mut b = timespec_bytes(&v.it_interval, time64);
    b.extend(timespec_bytes(&v.it_value, time64));
    b
}

fn zero_ts() -> libc::timespec {
    libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    }
}

fn zero_its() -> libc::itimerspec {
    libc::itimerspec {
        it_interval: zero_ts(),
        it_value: zero_ts(),
    }
}

pub fn handle(c: &mut Ctx, n: u32) -> Option<R> {
    let a = c.a;
    Some(match n {
        nr::CLOCK_GETTIME | nr::CLOCK_GETTIME64 | nr::CLOCK_GETRES | nr::CLOCK_GETRES_TIME64 => {
            (|| {
                let mut ts = zero_ts();
                let hn = if matches!(n, nr::CLOCK_GETTIME | nr::CLOCK_GETTIME64) {
                    libc::SYS_clock_gettime
                } else {
                    libc::SYS_clock_getres
                };
                raw(hn, [sx(a[0]), &mut ts as *mut _ as usize, 0, 0, 0, 0])?;
                if a[1] != 0 {
                    let t64 = matches!(n, nr::CLOCK_GETTIME64 | nr::CLOCK_GETRES_TIME64);
                    if !t64 && ts.tv_sec > i32::MAX as i64 {
                        return err(libc::EOVERFLOW);
                    }
                    c.write(a[1], &timespec_bytes(&ts, t64))?;
                }
                Ok(0)
            })()
        }
        nr::CLOCK_SETTIME | nr::CLOCK_SETTIME64 => (|| {
            let ts = read_timespec(c, a[1], n == nr::CLOCK_SETTIME64)?;
            Ok(raw(
                libc::SYS_clock_settime,
                [sx(a[0]), &ts as *const _ as usize, 0, 0, 0, 0],
            )? as u32)
        })(),
        nr::GETTIMEOFDAY => (|| {
            let mut tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            };
            let mut tz = [0i32; 2];
            raw(
                libc::SYS_gettimeofday,
                [
                    &mut tv as *mut _ as usize,
                    tz.as_mut_ptr() as usize,
                    0,
                    0,
                    0,
                    0,
                ],
            )?;
            if a[0] != 0 {
                let mut o = Out::default();
                o.u32(tv.tv_sec as u32).u32(tv.tv_usec as u32);
                c.write(a[0], &o.0)?;
            }
            if a[1] != 0 {
                let mut o = Out::default();
                o.u32(tz[0] as u32).u32(tz[1] as u32);
                c.write(a[1], &o.0)?;
            }
            Ok(0)
        })(),
        nr::SETTIMEOFDAY => {
            c.unimp("settimeofday");
            err(libc::EPERM)
        }
        nr::TIME => (|| {
            let mut ts = zero_ts();
            raw(
                libc::SYS_clock_gettime,
                [
                    libc::CLOCK_REALTIME as usize,
                    &mut ts as *mut _ as usize,
                    0,
                    0,
                    0,
                    0,
                ],
            )?;
            if a[0] != 0 {
                c.write_u32(a[0], ts.tv_sec as u32)?;
            }
            Ok(ts.tv_sec as u32)
        })(),
        nr::NANOSLEEP => (|| {
            let req = read_timespec(c, a[0], false)?;
            sleep(c, libc::CLOCK_MONOTONIC, 0, req, a[1], false)
        })(),
        nr::CLOCK_NANOSLEEP | nr::CLOCK_NANOSLEEP_TIME64 => (|| {
            let t64 = n == nr::CLOCK_NANOSLEEP_TIME64;
            let req = read_timespec(c, a[2], t64)?;
            sleep(c, a[0] as i32, a[1] as i32, req, a[3], t64)
        })(),
        nr::SETITIMER => (|| {
            let mut nv = [0i64; 4];
            if a[1] != 0 {
                let b = c.read(a[1], 16)?;
                for (i, v) in nv.iter_mut().enumerate() {
                    *v = le32(&b, i * 4) as i32 as i64;
                }
            }
            let mut ov = [0i64; 4];
            let np = if a[1] == 0 { 0 } else { nv.as_ptr() as usize };
            raw(
                libc::SYS_setitimer,
                [sx(a[0]), np, ov.as_mut_ptr() as usize, 0, 0, 0],
            )?;
            if a[2] != 0 {
                let mut o = Out::default();
                for v in ov {
                    o.u32(v as u32);
                }
                c.write(a[2], &o.0)?;
            }
            Ok(0)
        })(),
        nr::GETITIMER => (|| {
            let mut ov = [0i64; 4];
            raw(
                libc::SYS_getitimer,
                [sx(a[0]), ov.as_mut_ptr() as usize, 0, 0, 0, 0],
            )?;
            let mut o = Out::default();
            for v in ov {
                o.u32(v as u32);
            }
            c.write(a[1], &o.0)?;
            Ok(0)
        })(),
        nr::TIMER_CREATE => (|| {
            // Host struct sigevent: sigval (8), signo, notify, then the
            // union (thread id at offset 16); 64 bytes.
            let mut hev = [0u32; 16];
            let evp = if a[1] == 0 {
                0
            } else {
                let g = c.read(a[1], 16)?;
                hev[0] = le32(&g, 0);
                hev[2] = le32(&g, 4);
                hev[3] = le32(&g, 8);
                hev[4] = le32(&g, 12);
                if hev[3] == 2 {
                    // SIGEV_THREAD is a libc construct built on
                    // SIGEV_THREAD_ID; the raw call never sees it.
                    return err(libc::EINVAL);
                }
                hev.as_ptr() as usize
            };
            let mut id: i32 = 0;
            raw(
                libc::SYS_timer_create,
                [sx(a[0]), evp, &mut id as *mut i32 as usize, 0, 0, 0],
            )?;
            c.write_u32(a[2], id as u32)?;
            Ok(0)
        })(),
        nr::TIMER_SETTIME | nr::TIMER_SETTIME64 | nr::TIMERFD_SETTIME | nr::TIMERFD_SETTIME64 => {
            (|| {
                let t64 = matches!(n, nr::TIMER_SETTIME64 | nr::TIMERFD_SETTIME64);
                let nv = read_itimerspec(c, a[2], t64)?;
                let mut ov = zero_its();
                let hn = if matches!(n, nr::TIMER_SETTIME | nr::TIMER_SETTIME64) {
                    libc::SYS_timer_settime
                } else {
                    libc::SYS_timerfd_settime
                };
                raw(
                    hn,
                    [
                        sx(a[0]),
                        sx(a[1]),
                        &nv as *const _ as usize,
                        &mut ov as *mut _ as usize,
                        0,
                        0,
                    ],
                )?;
                if a[3] != 0 {
                    c.write(a[3], &itimerspec_bytes(&ov, t64))?;
                }
                Ok(0)
            })()
        }
        nr::TIMER_GETTIME | nr::TIMER_GETTIME64 | nr::TIMERFD_GETTIME | nr::TIMERFD_GETTIME64 => {
            (|| {
                let t64 = matches!(n, nr::TIMER_GETTIME64 | nr::TIMERFD_GETTIME64);
                let mut ov = zero_its();
                let hn = if matches!(n, nr::TIMER_GETTIME | nr::TIMER_GETTIME64) {
                    libc::SYS_timer_gettime
                } else {
                    libc::SYS_timerfd_gettime
                };
                raw(hn, [sx(a[0]), &mut ov as *mut _ as usize, 0, 0, 0, 0])?;
                c.write(a[1], &itimerspec_bytes(&ov, t64))?;
                Ok(0)
            })()
        }
        nr::TIMER_GETOVERRUN => ret(raw(libc::SYS_timer_getoverrun, [sx(a[0]), 0, 0, 0, 0, 0])),
        nr::TIMER_DELETE => ret(raw(libc::SYS_timer_delete, [sx(a[0]), 0, 0, 0, 0, 0])),
        nr::TIMERFD_CREATE => ret(raw(
            libc::SYS_timerfd_create,
            [sx(a[0]), sx(a[1]), 0, 0, 0, 0],
        )),
        _ => return None,
    })
}

fn now(clock: i32) -> libc::timespec {
    let mut ts = zero_ts();
    let _ = raw(
        libc::SYS_clock_gettime,
        [
            clock as isize as usize,
            &mut ts as *mut _ as usize,
            0,
            0,
            0,
            0,
        ],
    );
    ts
}

fn ts_ns(t: &libc::timespec) -> i128 {
    t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128
}

fn ns_ts(v: i128) -> libc::timespec {
    let v = v.max(0);
    libc::timespec {
        tv_sec: (v / 1_000_000_000) as i64,
        tv_nsec: (v % 1_000_000_000) as i64,
    }
}

/// nanosleep/clock_nanosleep: an absolute host sleep, so retries after
/// signals the guest does not see keep the deadline; a guest handler
/// interrupts with EINTR and the remaining time.
fn sleep(c: &mut Ctx, clock: i32, flags: i32, req: libc::timespec, rem: u32, t64: bool) -> R {
    if req.tv_nsec < 0 || req.tv_nsec >= 1_000_000_000 || req.tv_sec < 0 {
        return err(libc::EINVAL);
    }
    let abs = flags & libc::TIMER_ABSTIME != 0;
    let deadline = if abs {
        req
    } else {
        ns_ts(ts_ns(&now(clock)) + ts_ns(&req))
    };
    let dp = &deadline as *const libc::timespec as usize;
    let r = c.blocking(false, || {
        raw(
            libc::SYS_clock_nanosleep,
            [
                clock as isize as usize,
                libc::TIMER_ABSTIME as usize,
                dp,
                0,
                0,
                0,
            ],
        )
    });
    if let Err(Sys::Err(libc::EINTR)) = r {
        if !abs && rem != 0 {
            let left = ns_ts(ts_ns(&deadline) - ts_ns(&now(clock)));
            c.write(rem, &timespec_bytes(&left, t64))?;
        }
    }
    r
}
