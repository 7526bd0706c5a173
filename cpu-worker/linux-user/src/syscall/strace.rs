//! `-strace`: one line per system call in the format of QEMU's user-mode
//! strace (`pid name(args) = result`), with strings quoted, pointers in
//! hex and errors as `-1 errno=N (message)`.

use super::nr;
use crate::task::Process;

/// How to print each argument: s string, p pointer, d signed, u
/// unsigned, x hex, o octal; an empty spec prints every argument in hex.
fn spec(n: u32) -> &'static str {
    match n {
        nr::READ | nr::WRITE => "dpu",
        nr::OPEN => "sxo",
        nr::OPENAT => "dsxo",
        nr::CREAT => "so",
        nr::CLOSE | nr::DUP | nr::FSYNC | nr::FDATASYNC | nr::FCHDIR => "d",
        nr::DUP2 => "dd",
        nr::DUP3 => "ddx",
        nr::STAT64 | nr::LSTAT64 | nr::STAT | nr::LSTAT | nr::STATFS | nr::STATFS64 => "sp",
        nr::FSTAT64 | nr::FSTAT => "dp",
        nr::FSTATAT64 => "dspx",
        nr::STATX => "dsxxp",
        nr::ACCESS | nr::CHMOD | nr::MKDIR => "so",
        nr::FACCESSAT | nr::MKDIRAT | nr::FCHMODAT => "dso",
        nr::UNLINK | nr::RMDIR | nr::CHDIR | nr::CHROOT => "s",
        nr::UNLINKAT => "dsx",
        nr::RENAME | nr::LINK | nr::SYMLINK => "ss",
        nr::RENAMEAT | nr::LINKAT => "dsds",
        nr::READLINK => "spu",
        nr::READLINKAT => "dspu",
        nr::EXECVE => "spp",
        nr::EXIT | nr::EXIT_GROUP | nr::UMASK | nr::ALARM => "d",
        nr::BRK => "p",
        nr::MMAP2 => "puxxdx",
        nr::MUNMAP => "pu",
        nr::MPROTECT => "pux",
        nr::LSEEK => "ddd",
        nr::_LLSEEK => "duupd",
        nr::IOCTL => "dxp",
        nr::FCNTL64 | nr::FCNTL => "ddx",
        nr::KILL | nr::TKILL => "dd",
        nr::TGKILL => "ddd",
        nr::WAIT4 => "dpxp",
        nr::GETDENTS64 | nr::GETDENTS => "dpu",
        nr::PREAD64 | nr::PWRITE64 => "dpuuu",
        nr::READV | nr::WRITEV => "dpu",
        nr::RT_SIGACTION => "dppu",
        nr::RT_SIGPROCMASK => "dppu",
        nr::SOCKETCALL => "dp",
        nr::CLONE => "xppxp",
        nr::FUTEX | nr::FUTEX_TIME64 => "pddpxd",
        nr::SET_TID_ADDRESS => "p",
        nr::NANOSLEEP => "pp",
        nr::CLOCK_GETTIME | nr::CLOCK_GETTIME64 => "dp",
        nr::GETCWD => "pu",
        nr::PIPE | nr::PIPE2 => "px",
        nr::POLL => "pud",
        _ => "",
    }
}

pub fn pre(p: &Process, tid: i32, n: u32, a: &[u32; 6]) {
    let name = nr::name(n).unwrap_or("unknown");
    let sp = spec(n);
    let mut s = format!("{tid} {name}(");
    let count = if sp.is_empty() { 6 } else { sp.len() };
    for (i, &v) in a.iter().enumerate().take(count) {
        if i > 0 {
            s.push(',');
        }
        let kind = sp.as_bytes().get(i).copied().unwrap_or(b'x');
        match kind {
            b's' => {
                if v == 0 {
                    s.push_str("NULL");
                } else {
                    match p.space.read_cstr(v, 4096) {
                        Ok(b) => {
                            s.push('"');
                            s.push_str(&String::from_utf8_lossy(&b).escape_default().to_string());
                            s.push('"');
                        }
                        Err(_) => s.push_str(&format!("{v:#x}")),
                    }
                }
            }
            b'p' => {
                if v == 0 {
                    s.push_str("NULL");
                } else {
                    s.push_str(&format!("{v:#x}"));
                }
            }
            b'd' => s.push_str(&format!("{}", v as i32)),
            b'u' => s.push_str(&format!("{v}")),
            b'o' => s.push_str(&format!("{v:#o}")),
            _ => s.push_str(&format!("{v:#x}")),
        }
    }
    s.push(')');
    p.log.write(&s);
}

pub fn post(p: &Process, n: u32, v: u32) {
    let r = v as i32;
    let s = if (-4095..0).contains(&r) {
        let e = -r;
        format!(
            " = -1 errno={e} ({})\n",
            std::io::Error::from_raw_os_error(e)
                .to_string()
                .split(" (os error")
                .next()
                .unwrap_or("")
        )
    } else if matches!(n, nr::BRK | nr::MMAP2 | nr::MMAP | nr::MREMAP) {
        format!(" = {v:#010x}\n")
    } else {
        format!(" = {r}\n")
    };
    p.log.write(&s);
}
