//! Sockets: the socketcall(2) multiplexer of i386 and the direct socket
//! calls (socket(2), bind(2), connect(2), accept4(2), sendmsg(2),
//! recvmsg(2), ...). `struct sockaddr` and `socklen_t` are the host's;
//! `struct msghdr`, `struct cmsghdr` (cmsg(3)) and the SO_RCVTIMEO/
//! SO_SNDTIMEO `struct timeval` are converted from their i386 layouts.

use super::fs::sx;
use super::{err, le32, nr, raw, Ctx, Out, Sys, R};

const SOCKETCALL_ARGS: [usize; 21] = [
    0, 3, 3, 3, 2, 3, 3, 3, 4, 4, 4, 6, 6, 2, 5, 5, 3, 3, 4, 5, 4,
];

pub fn handle(c: &mut Ctx, n: u32) -> Option<R> {
    let a = c.a;
    let (call, args) = match n {
        nr::SOCKETCALL => {
            let call = a[0] as usize;
            if call == 0 || call >= SOCKETCALL_ARGS.len() {
                return Some(err(libc::EINVAL));
            }
            let b = match c.read(a[1], SOCKETCALL_ARGS[call] * 4) {
                Ok(b) => b,
                Err(e) => return Some(Err(e)),
            };
            let mut v = [0u32; 6];
            for (i, x) in v.iter_mut().take(SOCKETCALL_ARGS[call]).enumerate() {
                *x = le32(&b, i * 4);
            }
            (call as u32, v)
        }
        nr::SOCKET => (1, a),
        nr::BIND => (2, a),
        nr::CONNECT => (3, a),
        nr::LISTEN => (4, a),
        nr::GETSOCKNAME => (6, a),
        nr::GETPEERNAME => (7, a),
        nr::SOCKETPAIR => (8, a),
        nr::SENDTO => (11, a),
        nr::RECVFROM => (12, a),
        nr::SHUTDOWN => (13, a),
        nr::SETSOCKOPT => (14, a),
        nr::GETSOCKOPT => (15, a),
        nr::SENDMSG => (16, a),
        nr::RECVMSG => (17, a),
        nr::ACCEPT4 => (18, a),
        nr::RECVMMSG => (19, a),
        nr::SENDMMSG => (20, a),
        _ => return None,
    };
    Some(socket_call(c, call, args))
}

fn socket_call(c: &mut Ctx, call: u32, a: [u32; 6]) -> R {
    match call {
        1 => Ok(raw(libc::SYS_socket, [sx(a[0]), sx(a[1]), sx(a[2]), 0, 0, 0])? as u32),
        2 | 3 => {
            let addr = c.buf(a[1], a[2] as usize)?;
            let hn = if call == 2 {
                libc::SYS_bind
            } else {
                libc::SYS_connect
            };
            let args = [sx(a[0]), addr, a[2] as usize, 0, 0, 0];
            if call == 3 {
                c.blocking(true, || raw(hn, args))
            } else {
                Ok(raw(hn, args)? as u32)
            }
        }
        4 => Ok(raw(libc::SYS_listen, [sx(a[0]), sx(a[1]), 0, 0, 0, 0])? as u32),
        5 | 18 => {
            let (addr, lenp) = addr_out(c, a[1], a[2])?;
            let fl = if call == 18 { a[3] as usize } else { 0 };
            let fd = sx(a[0]);
            c.blocking(true, || raw(libc::SYS_accept4, [fd, addr, lenp, fl, 0, 0]))
        }
        6 | 7 => {
            let (addr, lenp) = addr_out(c, a[1], a[2])?;
            let hn = if call == 6 {
                libc::SYS_getsockname
            } else {
                libc::SYS_getpeername
            };
            Ok(raw(hn, [sx(a[0]), addr, lenp, 0, 0, 0])? as u32)
        }
        8 => {
            let mut sv = [0i32; 2];
            raw(
                libc::SYS_socketpair,
                [sx(a[0]), sx(a[1]), sx(a[2]), sv.as_mut_ptr() as usize, 0, 0],
            )?;
            let mut o = Out::default();
            o.u32(sv[0] as u32).u32(sv[1] as u32);
            c.write(a[3], &o.0)?;
            Ok(0)
        }
        9 | 11 => {
            let b = c.buf(a[1], a[2] as usize)?;
            let (to, tolen) = if call == 11 {
                (c.buf(a[4], a[5] as usize)?, a[5] as usize)
            } else {
                (0, 0)
            };
            let args = [sx(a[0]), b, a[2] as usize, a[3] as usize, to, tolen];
            c.blocking(true, || raw(libc::SYS_sendto, args))
        }
        10 | 12 => {
            let b = c.buf(a[1], a[2] as usize)?;
            let (from, lenp) = if call == 12 {
                addr_out(c, a[4], a[5])?
            } else {
                (0, 0)
            };
            let args = [sx(a[0]), b, a[2] as usize, a[3] as usize, from, lenp];
            c.blocking(true, || raw(libc::SYS_recvfrom, args))
        }
        13 => Ok(raw(libc::SYS_shutdown, [sx(a[0]), sx(a[1]), 0, 0, 0, 0])? as u32),
        14 => setsockopt(c, a),
        15 => getsockopt(c, a),
        16 => sendmsg(c, sx(a[0]), a[1], a[2] as usize),
        17 => recvmsg(c, sx(a[0]), a[1], a[2] as usize),
        19 | 20 => {
            // recvmmsg/sendmmsg: one message at a time (guest mmsghdr is
            // a 28-byte msghdr and a 32-bit msg_len).
            let fd = sx(a[0]);
            let vlen = a[2].min(1024);
            let mut done = 0u32;
            for i in 0..vlen {
                let m = a[1] + i * 32;
                let fl = if done > 0 {
                    a[3] as usize | libc::MSG_DONTWAIT as usize
                } else {
                    a[3] as usize
                };
                let r = if call == 20 {
                    sendmsg(c, fd, m, fl)
                } else {
                    recvmsg(c, fd, m, fl)
                };
                match r {
                    Ok(k) => {
                        c.write_u32(m + 28, k)?;
                        done += 1;
                    }
                    Err(e) => {
                        if done == 0 {
                            return Err(e);
                        }
                        break;
                    }
                }
                if call == 19 && a[3] as i32 & 0x10000 != 0 {
                    // MSG_WAITFORONE
                    break;
                }
            }
            Ok(done)
        }
        _ => err(libc::EINVAL),
    }
}

/// An (address buffer, length pointer) pair where the kernel writes.
fn addr_out(c: &Ctx, addr: u32, lenp: u32) -> Result<(usize, usize), Sys> {
    if addr == 0 || lenp == 0 {
        return Ok((0, c.buf(lenp, 4)?));
    }
    let len = c.read_u32(lenp)? as i32;
    if len < 0 {
        return err(libc::EINVAL);
    }
    Ok((c.buf(addr, len as usize)?, c.buf(lenp, 4)?))
}

const SO_RCVTIMEO: u32 = 20;
const SO_SNDTIMEO: u32 = 21;

fn setsockopt(c: &Ctx, a: [u32; 6]) -> R {
    if a[1] == libc::SOL_SOCKET as u32 && (a[2] == SO_RCVTIMEO || a[2] == SO_SNDTIMEO) {
        if a[4] < 8 {
            return err(libc::EINVAL);
        }
        let b = c.read(a[3], 8)?;
        let tv = libc::timeval {
            tv_sec: le32(&b, 0) as i32 as i64,
            tv_usec: le32(&b, 4) as i32 as i64,
        };
        return Ok(raw(
            libc::SYS_setsockopt,
            [
                sx(a[0]),
                a[1] as usize,
                a[2] as usize,
                &tv as *const _ as usize,
                std::mem::size_of::<libc::timeval>(),
                0,
            ],
        )? as u32);
    }
    let v = c.buf(a[3], a[4] as usize)?;
    Ok(raw(
        libc::SYS_setsockopt,
        [sx(a[0]), sx(a[1]), sx(a[2]), v, a[4] as usize, 0],
    )? as u32)
}

fn getsockopt(c: &Ctx, a: [u32; 6]) -> R {
    if a[1] == libc::SOL_SOCKET as u32 && (a[2] == SO_RCVTIMEO || a[2] == SO_SNDTIMEO) {
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        let mut len = std::mem::size_of::<libc::timeval>() as u32;
        raw(
            libc::SYS_getsockopt,
            [
                sx(a[0]),
                a[1] as usize,
                a[2] as usize,
                &mut tv as *mut _ as usize,
                &mut len as *mut u32 as usize,
                0,
            ],
        )?;
        let mut o = Out::default();
        o.u32(tv.tv_sec as u32).u32(tv.tv_usec as u32);
        let glen = c.read_u32(a[4])? as usize;
        let k = glen.min(8);
        c.write(a[3], &o.0[..k])?;
        c.write_u32(a[4], 8)?;
        return Ok(0);
    }
    let len = c.read_u32(a[4])? as usize;
    let v = c.buf(a[3], len)?;
    let lp = c.buf(a[4], 4)?;
    Ok(raw(
        libc::SYS_getsockopt,
        [sx(a[0]), sx(a[1]), sx(a[2]), v, lp, 0],
    )? as u32)
}

struct HostMsg {
    iov: Vec<libc::iovec>,
    control: Vec<u8>,
    hdr: libc::msghdr,
}

fn build_msg(c: &Ctx, m: u32, for_recv: bool) -> Result<(HostMsg, [u8; 28]), Sys> {
    let g = c.read(m, 28)?;
    let mut gh = [0u8; 28];
    gh.copy_from_slice(&g);
    let name = le32(&g, 0);
    let namelen = le32(&g, 4);
    let iovp = le32(&g, 8);
    let iovlen = le32(&g, 12) as usize;
    let control = le32(&g, 16);
    let controllen = le32(&g, 20) as usize;
    if iovlen > 1024 {
        return err(libc::EMSGSIZE);
    }
    if controllen > 1 << 20 {
        return err(libc::ENOBUFS);
    }
    let raw_iov = c.read(iovp, iovlen * 8)?;
    let mut iov = Vec::with_capacity(iovlen);
    for i in 0..iovlen {
        let base = le32(&raw_iov, i * 8);
        let len = le32(&raw_iov, i * 8 + 4) as usize;
        iov.push(libc::iovec {
            iov_base: c.buf(base, len)? as *mut libc::c_void,
            iov_len: len,
        });
    }
    let mut ctl = Vec::new();
    if control != 0 && controllen > 0 {
        if for_recv {
            ctl = vec![0u8; controllen * 2 + 64];
        } else {
            let gc = c.read(control, controllen)?;
            ctl = cmsgs_to_host(&gc);
        }
    }
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_name = c.buf(name, namelen as usize)? as *mut libc::c_void;
    hdr.msg_namelen = namelen;
    hdr.msg_iovlen = iovlen;
    hdr.msg_controllen = ctl.len();
    let mut hm = HostMsg {
        iov,
        control: ctl,
        hdr,
    };
    hm.hdr.msg_iov = hm.iov.as_mut_ptr();
    hm.hdr.msg_control = if hm.control.is_empty() {
        std::ptr::null_mut()
    } else {
        hm.control.as_mut_ptr() as *mut libc::c_void
    };
    Ok((hm, gh))
}

fn align(v: usize, a: usize) -> usize {
    (v + a - 1) & !(a - 1)
}

/// i386 control messages (12-byte header, 4-byte alignment) to host ones
/// (16-byte header, 8-byte alignment). Payloads (fds, credentials) have
/// the same layout.
fn cmsgs_to_host(g: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 12 <= g.len() {
        let len = le32(g, off) as usize;
        if len < 12 || off + len > g.len() {
            break;
        }
        let level = le32(g, off + 4);
        let ty = le32(g, off + 8);
        let data = &g[off + 12..off + len];
        let start = out.len();
        out.extend(((16 + data.len()) as u64).to_le_bytes());
        out.extend(level.to_le_bytes());
        out.extend(ty.to_le_bytes());
        out.extend_from_slice(data);
        out.resize(start + align(16 + data.len(), 8), 0);
        off += align(len, 4);
    }
    out
}

/// Host control messages back to i386 ones; (bytes, truncated).
fn cmsgs_to_guest(h: &[u8], room: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut off = 0;
    let mut trunc = false;
    while off + 16 <= h.len() {
        let len = super::le64(h, off) as usize;
        if len < 16 || off + len > h.len() {
            break;
        }
        let data = &h[off + 16..off + len];
        let glen = 12 + data.len();
        if out.len() + glen > room {
            trunc = true;
            break;
        }
        let start = out.len();
        out.extend((glen as u32).to_le_bytes());
        out.extend_from_slice(&h[off + 8..off + 16]);
        out.extend_from_slice(data);
        out.resize((start + align(glen, 4)).min(room.max(start + glen)), 0);
        off += align(len, 8);
    }
    (out, trunc)
}

fn sendmsg(c: &mut Ctx, fd: usize, m: u32, flags: usize) -> R {
    let (hm, _) = build_msg(c, m, false)?;
    let hp = &hm.hdr as *const libc::msghdr as usize;
    let r = c.blocking(true, || raw(libc::SYS_sendmsg, [fd, hp, flags, 0, 0, 0]));
    drop(hm);
    r
}

fn recvmsg(c: &mut Ctx, fd: usize, m: u32, flags: usize) -> R {
    let (mut hm, gh) = build_msg(c, m, true)?;
    let hp = &mut hm.hdr as *mut libc::msghdr as usize;
    let r = c.blocking(true, || raw(libc::SYS_recvmsg, [fd, hp, flags, 0, 0, 0]))?;
    let control = le32(&gh, 16);
    let room = le32(&gh, 20) as usize;
    let mut mflags = hm.hdr.msg_flags as u32;
    let mut clen = 0;
    if control != 0 && room > 0 {
        let used = hm.hdr.msg_controllen.min(hm.control.len());
        let (g, trunc) = cmsgs_to_guest(&hm.control[..used], room);
        if trunc {
            mflags |= libc::MSG_CTRUNC as u32;
        }
        c.write(control, &g)?;
        clen = g.len() as u32;
    }
    c.write_u32(m + 4, hm.hdr.msg_namelen)?;
    c.write_u32(m + 20, clen)?;
    c.write_u32(m + 24, mflags)?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmsg_round_trip() {
        // SCM_RIGHTS with two fds.
        let mut g = Out::default();
        g.u32(20).u32(1).u32(1).u32(5).u32(7);
        let h = cmsgs_to_host(&g.0);
        assert_eq!(h.len(), 24);
        assert_eq!(super::super::le64(&h, 0), 24);
        let (back, trunc) = cmsgs_to_guest(&h, 64);
        assert!(!trunc);
        assert_eq!(back, g.0);
    }
}
