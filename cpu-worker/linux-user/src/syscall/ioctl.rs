//! ioctl(2) for terminals and fds (ioctl_tty(2), ioctl_fionread): the
//! i386 `struct termios` (36 bytes) and `struct termios2` (44 bytes) and
//! `struct winsize` have the host's layout, so these pass through with the
//! argument pointer checked. Requests not listed fail with ENOTTY and are
//! logged under `-d unimp`.

use super::fs::sx;
use super::{err, raw, Ctx, R};

const TCGETS: u32 = 0x5401;
const TCSETS: u32 = 0x5402;
const TCSETSW: u32 = 0x5403;
const TCSETSF: u32 = 0x5404;
const TCSBRK: u32 = 0x5409;
const TCXONC: u32 = 0x540a;
const TCFLSH: u32 = 0x540b;
const TIOCEXCL: u32 = 0x540c;
const TIOCNXCL: u32 = 0x540d;
const TIOCSCTTY: u32 = 0x540e;
const TIOCGPGRP: u32 = 0x540f;
const TIOCSPGRP: u32 = 0x5410;
const TIOCOUTQ: u32 = 0x5411;
const TIOCGWINSZ: u32 = 0x5413;
const TIOCSWINSZ: u32 = 0x5414;
const FIONREAD: u32 = 0x541b;
const TIOCNOTTY: u32 = 0x5422;
const TIOCGSID: u32 = 0x5429;
const TCGETS2: u32 = 0x802c_542a;
const TCSETS2: u32 = 0x402c_542b;
const TCSETSW2: u32 = 0x402c_542c;
const TCSETSF2: u32 = 0x402c_542d;
const TIOCGPTN: u32 = 0x8004_5430;
const TIOCSPTLCK: u32 = 0x4004_5431;
const TIOCGPTPEER: u32 = 0x5441;
const FIONCLEX: u32 = 0x5450;
const FIOCLEX: u32 = 0x5451;
const FIOASYNC: u32 = 0x5452;
const FIONBIO: u32 = 0x5421;
const TIOCGETD: u32 = 0x5424;
const TIOCSETD: u32 = 0x5423;
const TIOCMGET: u32 = 0x5415;
const TIOCMSET: u32 = 0x5418;
const TIOCINQ: u32 = FIONREAD;
const FIOQSIZE: u32 = 0x5460;

pub fn ioctl(c: &mut Ctx) -> R {
    let a = c.a;
    let fd = sx(a[0]);
    let req = a[1];
    // (size of the pointed-to argument, or None for an integer argument)
    let size: Option<usize> = match req {
        TCGETS | TCSETS | TCSETSW | TCSETSF => Some(36),
        TCGETS2 | TCSETS2 | TCSETSW2 | TCSETSF2 => Some(44),
        TIOCGWINSZ | TIOCSWINSZ => Some(8),
        TIOCGPGRP | TIOCSPGRP | TIOCOUTQ | TIOCINQ | TIOCGSID | TIOCGPTN | TIOCSPTLCK | FIONBIO
        | FIOASYNC | TIOCGETD | TIOCSETD | TIOCMGET | TIOCMSET => Some(4),
        FIOQSIZE => Some(8),
        TCSBRK | TCXONC | TCFLSH | TIOCSCTTY | TIOCNOTTY | TIOCEXCL | TIOCNXCL | FIONCLEX
        | FIOCLEX | TIOCGPTPEER => None,
        _ => {
            c.unimp(&format!("ioctl request {req:#x} on fd {}", a[0] as i32));
            return err(libc::ENOTTY);
        }
    };
    let arg = match size {
        Some(n) => c.buf(a[2], n)?,
        None => a[2] as usize,
    };
    match req {
        TCSETSW | TCSETSF | TCSETSW2 | TCSETSF2 | TCSBRK => c.blocking(true, || {
            raw(libc::SYS_ioctl, [fd, req as usize, arg, 0, 0, 0])
        }),
        _ => Ok(raw(libc::SYS_ioctl, [fd, req as usize, arg, 0, 0, 0])? as u32),
    }
}
