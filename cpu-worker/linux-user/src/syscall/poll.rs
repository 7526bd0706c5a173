//! Pipes and waiting for fds: pipe(2)/pipe2, poll(2)/ppoll (`struct
//! pollfd` is the same on i386), select(2) (old one-argument form and
//! _newselect, i386 fd_set of 32-bit words), pselect6(2), epoll(7)
//! (`struct epoll_event` is packed, 12 bytes, on i386 and x86_64 alike),
//! eventfd(2).

use super::fs::sx;
use super::{err, le32, nr, raw, ret, Ctx, Out, R};
use crate::signal;

pub fn handle(c: &mut Ctx, n: u32) -> Option<R> {
    let a = c.a;
    Some(match n {
        nr::PIPE | nr::PIPE2 => (|| {
            let mut fds = [0i32; 2];
            let fl = if n == nr::PIPE2 { a[1] as usize } else { 0 };
            raw(libc::SYS_pipe2, [fds.as_mut_ptr() as usize, fl, 0, 0, 0, 0])?;
            let mut o = Out::default();
            o.u32(fds[0] as u32).u32(fds[1] as u32);
            if let Err(e) = c.write(a[0], &o.0) {
                let _ = raw(libc::SYS_close, [fds[0] as usize, 0, 0, 0, 0, 0]);
                let _ = raw(libc::SYS_close, [fds[1] as usize, 0, 0, 0, 0, 0]);
                return Err(e);
            }
            Ok(0)
        })(),
        nr::POLL => (|| {
            let nfds = a[1] as usize;
            if nfds > 65536 {
                return err(libc::EINVAL);
            }
            let p = c.buf(a[0], nfds * 8)?;
            let t = sx(a[2]);
            // poll is not restarted after a handler (ERESTART_RESTARTBLOCK).
            c.blocking(false, || raw(libc::SYS_poll, [p, nfds, t, 0, 0, 0]))
        })(),
        nr::PPOLL | nr::PPOLL_TIME64 => (|| {
            let nfds = a[1] as usize;
            if nfds > 65536 {
                return err(libc::EINVAL);
            }
            let p = c.buf(a[0], nfds * 8)?;
            let ts = if a[2] == 0 {
                None
            } else {
                Some(super::time::read_timespec(c, a[2], n == nr::PPOLL_TIME64)?)
            };
            let tp = ts
                .as_ref()
                .map_or(0, |t| t as *const libc::timespec as usize);
            let mask = if a[3] == 0 {
                None
            } else {
                Some(c.read_u64(a[3])?)
            };
            with_mask(c, mask, |c| {
                c.blocking(false, || raw(libc::SYS_ppoll, [p, nfds, tp, 0, 8, 0]))
            })
        })(),
        nr::_NEWSELECT => select(c, a[0], a[1], a[2], a[3], a[4], None, None),
        nr::SELECT => (|| {
            let b = c.read(a[0], 20)?;
            select(
                c,
                le32(&b, 0),
                le32(&b, 4),
                le32(&b, 8),
                le32(&b, 12),
                le32(&b, 16),
                None,
                None,
            )
        })(),
        nr::PSELECT6 | nr::PSELECT6_TIME64 => (|| {
            let mask = if a[5] == 0 {
                None
            } else {
                let b = c.read(a[5], 8)?;
                let p = le32(&b, 0);
                if p == 0 {
                    None
                } else {
                    Some(c.read_u64(p)?)
                }
            };
            select(
                c,
                a[0],
                a[1],
                a[2],
                a[3],
                a[4],
                mask,
                Some(n == nr::PSELECT6_TIME64),
            )
        })(),
        nr::EPOLL_CREATE => {
            if (a[0] as i32) <= 0 {
                err(libc::EINVAL)
            } else {
                ret(raw(libc::SYS_epoll_create1, [0; 6]))
            }
        }
        nr::EPOLL_CREATE1 => ret(raw(libc::SYS_epoll_create1, [a[0] as usize, 0, 0, 0, 0, 0])),
        nr::EPOLL_CTL => (|| {
            let ev = c.buf(a[3], 12)?;
            Ok(raw(
                libc::SYS_epoll_ctl,
                [sx(a[0]), sx(a[1]), sx(a[2]), ev, 0, 0],
            )? as u32)
        })(),
        nr::EPOLL_WAIT | nr::EPOLL_PWAIT | nr::EPOLL_PWAIT2 => (|| {
            let max = a[2] as i32;
            if max <= 0 || max > 1 << 20 {
                return err(libc::EINVAL);
            }
            let ev = c.buf(a[1], max as usize * 12)?;
            let mask = if n != nr::EPOLL_WAIT && a[4] != 0 {
                Some(c.read_u64(a[4])?)
            } else {
                None
            };
            let epfd = sx(a[0]);
            if n == nr::EPOLL_PWAIT2 {
                let ts = if a[3] == 0 {
                    None
                } else {
                    Some(super::time::read_timespec(c, a[3], true)?)
                };
                let tp = ts
                    .as_ref()
                    .map_or(0, |t| t as *const libc::timespec as usize);
                return with_mask(c, mask, |c| {
                    c.blocking(false, || {
                        raw(libc::SYS_epoll_pwait2, [epfd, ev, max as usize, tp, 0, 8])
                    })
                });
            }
            let t = sx(a[3]);
            with_mask(c, mask, |c| {
                c.blocking(false, || {
                    raw(libc::SYS_epoll_pwait, [epfd, ev, max as usize, t, 0, 8])
                })
            })
        })(),
        nr::EVENTFD => ret(raw(libc::SYS_eventfd2, [a[0] as usize, 0, 0, 0, 0, 0])),
        nr::EVENTFD2 => ret(raw(
            libc::SYS_eventfd2,
            [a[0] as usize, a[1] as usize, 0, 0, 0, 0],
        )),
        _ => return None,
    })
}

/// Runs `f` with the guest (and host) signal mask temporarily `mask`, as
/// ppoll/pselect/epoll_pwait do; after an interruption the old mask comes
/// back once the handler has run.
fn with_mask(c: &mut Ctx, mask: Option<u64>, f: impl FnOnce(&mut Ctx) -> R) -> R {
    let Some(m) = mask else {
        return f(c);
    };
    let old = c.t.sigmask;
    signal::set_mask(c.t, m);
    let r = f(c);
    if matches!(r, Err(super::Sys::Err(libc::EINTR))) {
        c.t.saved_mask = Some(old);
    } else {
        signal::set_mask(c.t, old);
    }
    r
}

#[allow(clippy::too_many_arguments)]
fn select(
    c: &mut Ctx,
    nfds: u32,
    r: u32,
    w: u32,
    e: u32,
    tmo: u32,
    mask: Option<u64>,
    pselect_t64: Option<bool>,
) -> R {
    let nfds = nfds as i32;
    if !(0..=libc::FD_SETSIZE as i32 * 16).contains(&nfds) {
        return err(libc::EINVAL);
    }
    let gbytes = (nfds as usize).div_ceil(32) * 4;
    let hwords = (nfds as usize).div_ceil(64).max(1);
    let mut sets = [vec![0u64; hwords], vec![0u64; hwords], vec![0u64; hwords]];
    for (set, addr) in sets.iter_mut().zip([r, w, e]) {
        if addr != 0 {
            let b = c.read(addr, gbytes)?;
            for (i, byte) in b.iter().enumerate() {
                set[i / 8] |= (*byte as u64) << ((i % 8) * 8);
            }
        }
    }
    let ptr = |i: usize, addr: u32, sets: &mut [Vec<u64>; 3]| {
        if addr == 0 {
            0
        } else {
            sets[i].as_mut_ptr() as usize
        }
    };
    let rp = ptr(0, r, &mut sets);
    let wp = ptr(1, w, &mut sets);
    let ep = ptr(2, e, &mut sets);
    let pselect = pselect_t64.is_some();
    let pselect_t64 = pselect_t64.unwrap_or(false);
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let tp = if tmo == 0 {
        0
    } else {
        if pselect {
            ts = super::time::read_timespec(c, tmo, pselect_t64)?;
        } else {
            let b = c.read(tmo, 8)?;
            ts.tv_sec = le32(&b, 0) as i32 as i64;
            ts.tv_nsec = le32(&b, 4) as i32 as i64 * 1000;
            if ts.tv_nsec < 0 || ts.tv_nsec >= 1_000_000_000 || ts.tv_sec < 0 {
                return err(libc::EINVAL);
            }
        }
        &mut ts as *mut libc::timespec as usize
    };
    let n = nfds as usize;
    let res = with_mask(c, mask, |c| {
        c.blocking(false, || raw(libc::SYS_pselect6, [n, rp, wp, ep, tp, 0]))
    });
    let count = res?;
    for (set, addr) in sets.iter().zip([r, w, e]) {
        if addr != 0 {
            let bytes: Vec<u8> = set
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .take(gbytes)
                .collect();
            c.write(addr, &bytes)?;
        }
    }
    if tmo != 0 {
        // Linux writes the time left back (select; pselect does not).
        if !pselect {
            let mut o = Out::default();
            o.u32(ts.tv_sec as u32).u32((ts.tv_nsec / 1000) as u32);
            c.write(tmo, &o.0)?;
        }
    }
    Ok(count)
}
