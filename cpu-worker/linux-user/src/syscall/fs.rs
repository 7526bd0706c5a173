//! Files and directories: open(2), read(2), write(2), readv(2), lseek(2),
//! _llseek(2), stat64/fstatat64 (i386 `struct stat64`, 96 bytes), old
//! stat (`struct stat`), statx(2), getdents(2)/getdents64, fcntl64 (i386
//! `struct flock`/`flock64`), statfs64 (compat `struct statfs64`, packed),
//! the *at(2) family, truncate64, utimensat, sendfile64 and friends.
//! Magic paths: /proc/self/exe is the guest program, /proc/self/maps,
//! cmdline and auxv are the guest's.

use std::ffi::{CStr, CString};

use super::{err, join64, le32, nr, raw, ret, Ctx, Out, Sys, R};
use crate::host::Errno;

pub const AT_FDCWD: i32 = -100;

/// A signed int argument as the host's long.
pub fn sx(v: u32) -> usize {
    v as i32 as isize as usize
}

pub fn handle(c: &mut Ctx, n: u32) -> Option<R> {
    let a = c.a;
    Some(match n {
        nr::READ => {
            let b = match c.buf(a[1], a[2] as usize) {
                Ok(b) => b,
                Err(e) => return Some(Err(e)),
            };
            c.blocking(true, || {
                raw(libc::SYS_read, [sx(a[0]), b, a[2] as usize, 0, 0, 0])
            })
        }
        nr::WRITE => {
            let b = match c.buf(a[1], a[2] as usize) {
                Ok(b) => b,
                Err(e) => return Some(Err(e)),
            };
            c.blocking(true, || {
                raw(libc::SYS_write, [sx(a[0]), b, a[2] as usize, 0, 0, 0])
            })
        }
        nr::READV | nr::WRITEV | nr::PREADV | nr::PWRITEV | nr::PREADV2 | nr::PWRITEV2 => {
            rw_vec(c, n)
        }
        nr::PREAD64 | nr::PWRITE64 => {
            let b = match c.buf(a[1], a[2] as usize) {
                Ok(b) => b,
                Err(e) => return Some(Err(e)),
            };
            let off = join64(a[3], a[4]) as usize;
            let hn = if n == nr::PREAD64 {
                libc::SYS_pread64
            } else {
                libc::SYS_pwrite64
            };
            c.blocking(true, || raw(hn, [sx(a[0]), b, a[2] as usize, off, 0, 0]))
        }
        nr::OPEN => open(c, AT_FDCWD, a[0], a[1], a[2]),
        nr::CREAT => open(
            c,
            AT_FDCWD,
            a[0],
            (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u32,
            a[1],
        ),
        nr::OPENAT => open(c, a[0] as i32, a[1], a[2], a[3]),
        nr::OPENAT2 => (|| {
            let p = c.path(a[1])?;
            let how = c.buf(a[2], a[3] as usize)?;
            Ok(raw(
                libc::SYS_openat2,
                [sx(a[0]), p.as_ptr() as usize, how, a[3] as usize, 0, 0],
            )? as u32)
        })(),
        nr::CLOSE => {
            forget_dir_cookies(a[0] as i32);
            ret(raw(libc::SYS_close, [sx(a[0]), 0, 0, 0, 0, 0]))
        }
        nr::CLOSE_RANGE => simple(
            libc::SYS_close_range,
            [a[0] as usize, a[1] as usize, a[2] as usize],
        ),
        nr::DUP => simple(libc::SYS_dup, [sx(a[0]), 0, 0]),
        nr::DUP2 => simple(libc::SYS_dup2, [sx(a[0]), sx(a[1]), 0]),
        nr::DUP3 => simple(libc::SYS_dup3, [sx(a[0]), sx(a[1]), a[2] as usize]),
        nr::LSEEK => (|| {
            let off = dir_seek_target(a[0] as i32, a[1] as i32 as i64, a[2]);
            let r = raw(
                libc::SYS_lseek,
                [sx(a[0]), off as usize, a[2] as usize, 0, 0, 0],
            )?;
            if r > i32::MAX as usize {
                return err(libc::EOVERFLOW);
            }
            Ok(r as u32)
        })(),
        nr::_LLSEEK => (|| {
            let off = dir_seek_target(a[0] as i32, join64(a[2], a[1]) as i64, a[4]);
            let r = raw(
                libc::SYS_lseek,
                [sx(a[0]), off as usize, a[4] as usize, 0, 0, 0],
            )?;
            c.write(a[3], &(r as u64).to_le_bytes())?;
            Ok(0)
        })(),
        nr::FCNTL | nr::FCNTL64 => fcntl(c, n == nr::FCNTL64),
        nr::IOCTL => super::ioctl::ioctl(c),
        nr::STAT64 | nr::LSTAT64 => {
            let fl = if n == nr::LSTAT64 {
                libc::AT_SYMLINK_NOFOLLOW
            } else {
                0
            };
            stat_common(c, AT_FDCWD, Some(a[0]), fl, a[1], StatKind::Stat64)
        }
        nr::FSTAT64 => stat_common(
            c,
            a[0] as i32,
            None,
            libc::AT_EMPTY_PATH,
            a[1],
            StatKind::Stat64,
        ),
        nr::FSTATAT64 => stat_common(
            c,
            a[0] as i32,
            Some(a[1]),
            a[3] as i32,
            a[2],
            StatKind::Stat64,
        ),
        nr::STAT | nr::LSTAT => {
            let fl = if n == nr::LSTAT {
                libc::AT_SYMLINK_NOFOLLOW
            } else {
                0
            };
            stat_common(c, AT_FDCWD, Some(a[0]), fl, a[1], StatKind::Old)
        }
        nr::FSTAT => stat_common(
            c,
            a[0] as i32,
            None,
            libc::AT_EMPTY_PATH,
            a[1],
            StatKind::Old,
        ),
        nr::STATX => (|| {
            let p = c.path(a[1])?;
            let b = c.buf(a[4], 256)?;
            Ok(raw(
                libc::SYS_statx,
                [
                    sx(a[0]),
                    p.as_ptr() as usize,
                    a[2] as usize,
                    a[3] as usize,
                    b,
                    0,
                ],
            )? as u32)
        })(),
        nr::GETDENTS64 => getdents64(c),
        nr::GETDENTS => getdents_old(c),
        nr::ACCESS => path_call(
            c,
            libc::SYS_faccessat,
            AT_FDCWD,
            a[0],
            [a[1] as usize, 0, 0],
        ),
        nr::FACCESSAT => path_call(
            c,
            libc::SYS_faccessat,
            a[0] as i32,
            a[1],
            [a[2] as usize, 0, 0],
        ),
        nr::FACCESSAT2 => path_call(
            c,
            libc::SYS_faccessat2,
            a[0] as i32,
            a[1],
            [a[2] as usize, a[3] as usize, 0],
        ),
        nr::MKDIR => path_call(c, libc::SYS_mkdirat, AT_FDCWD, a[0], [a[1] as usize, 0, 0]),
        nr::MKDIRAT => path_call(
            c,
            libc::SYS_mkdirat,
            a[0] as i32,
            a[1],
            [a[2] as usize, 0, 0],
        ),
        nr::MKNOD => path_call(
            c,
            libc::SYS_mknodat,
            AT_FDCWD,
            a[0],
            [a[1] as usize, a[2] as usize, 0],
        ),
        nr::MKNODAT => path_call(
            c,
            libc::SYS_mknodat,
            a[0] as i32,
            a[1],
            [a[2] as usize, a[3] as usize, 0],
        ),
        nr::RMDIR => path_call(
            c,
            libc::SYS_unlinkat,
            AT_FDCWD,
            a[0],
            [libc::AT_REMOVEDIR as usize, 0, 0],
        ),
        nr::UNLINK => path_call(c, libc::SYS_unlinkat, AT_FDCWD, a[0], [0, 0, 0]),
        nr::UNLINKAT => path_call(
            c,
            libc::SYS_unlinkat,
            a[0] as i32,
            a[1],
            [a[2] as usize, 0, 0],
        ),
        nr::CHMOD => path_call(c, libc::SYS_fchmodat, AT_FDCWD, a[0], [a[1] as usize, 0, 0]),
        nr::FCHMODAT => path_call(
            c,
            libc::SYS_fchmodat,
            a[0] as i32,
            a[1],
            [a[2] as usize, 0, 0],
        ),
        nr::FCHMOD => simple(libc::SYS_fchmod, [sx(a[0]), a[1] as usize, 0]),
        nr::CHOWN32 | nr::LCHOWN32 => {
            let fl = if n == nr::LCHOWN32 {
                libc::AT_SYMLINK_NOFOLLOW as usize
            } else {
                0
            };
            path_call(
                c,
                libc::SYS_fchownat,
                AT_FDCWD,
                a[0],
                [sx(a[1]), sx(a[2]), fl],
            )
        }
        nr::CHOWN | nr::LCHOWN => {
            let fl = if n == nr::LCHOWN {
                libc::AT_SYMLINK_NOFOLLOW as usize
            } else {
                0
            };
            path_call(
                c,
                libc::SYS_fchownat,
                AT_FDCWD,
                a[0],
                [id16(a[1]), id16(a[2]), fl],
            )
        }
        nr::FCHOWN32 => simple(libc::SYS_fchown, [sx(a[0]), sx(a[1]), sx(a[2])]),
        nr::FCHOWN => simple(libc::SYS_fchown, [sx(a[0]), id16(a[1]), id16(a[2])]),
        nr::FCHOWNAT => path_call(
            c,
            libc::SYS_fchownat,
            a[0] as i32,
            a[1],
            [sx(a[2]), sx(a[3]), a[4] as usize],
        ),
        nr::RENAME => two_paths(c, libc::SYS_renameat2, AT_FDCWD, a[0], AT_FDCWD, a[1], 0),
        nr::RENAMEAT => two_paths(
            c,
            libc::SYS_renameat2,
            a[0] as i32,
            a[1],
            a[2] as i32,
            a[3],
            0,
        ),
        nr::RENAMEAT2 => two_paths(
            c,
            libc::SYS_renameat2,
            a[0] as i32,
            a[1],
            a[2] as i32,
            a[3],
            a[4] as usize,
        ),
        nr::LINK => two_paths(c, libc::SYS_linkat, AT_FDCWD, a[0], AT_FDCWD, a[1], 0),
        nr::LINKAT => two_paths(
            c,
            libc::SYS_linkat,
            a[0] as i32,
            a[1],
            a[2] as i32,
            a[3],
            a[4] as usize,
        ),
        nr::SYMLINK => symlink(c, a[0], AT_FDCWD, a[1]),
        nr::SYMLINKAT => symlink(c, a[0], a[1] as i32, a[2]),
        nr::READLINK => readlink(c, AT_FDCWD, a[0], a[1], a[2]),
        nr::READLINKAT => readlink(c, a[0] as i32, a[1], a[2], a[3]),
        nr::TRUNCATE => path_call(c, libc::SYS_truncate, -1, a[0], [sx(a[1]), 0, 0]),
        nr::TRUNCATE64 => path_call(
            c,
            libc::SYS_truncate,
            -1,
            a[0],
            [join64(a[1], a[2]) as usize, 0, 0],
        ),
        nr::FTRUNCATE => simple(libc::SYS_ftruncate, [sx(a[0]), sx(a[1]), 0]),
        nr::FTRUNCATE64 => simple(
            libc::SYS_ftruncate,
            [sx(a[0]), join64(a[1], a[2]) as usize, 0],
        ),
        nr::FALLOCATE => simple6(
            libc::SYS_fallocate,
            [
                sx(a[0]),
                sx(a[1]),
                join64(a[2], a[3]) as usize,
                join64(a[4], a[5]) as usize,
                0,
                0,
            ],
        ),
        nr::FADVISE64 => simple6(
            libc::SYS_fadvise64,
            [
                sx(a[0]),
                join64(a[1], a[2]) as usize,
                a[3] as usize,
                sx(a[4]),
                0,
                0,
            ],
        ),
        nr::FADVISE64_64 => simple6(
            libc::SYS_fadvise64,
            [
                sx(a[0]),
                join64(a[1], a[2]) as usize,
                join64(a[3], a[4]) as usize,
                sx(a[5]),
                0,
                0,
            ],
        ),
        nr::READAHEAD => simple6(
            libc::SYS_readahead,
            [
                sx(a[0]),
                join64(a[1], a[2]) as usize,
                a[3] as usize,
                0,
                0,
                0,
            ],
        ),
        nr::UMASK => simple(libc::SYS_umask, [a[0] as usize, 0, 0]),
        nr::CHDIR => path_call(c, libc::SYS_chdir, -1, a[0], [0, 0, 0]),
        nr::CHROOT => path_call(c, libc::SYS_chroot, -1, a[0], [0, 0, 0]),
        nr::FCHDIR => simple(libc::SYS_fchdir, [sx(a[0]), 0, 0]),
        nr::GETCWD => (|| {
            let b = c.buf(a[0], a[1] as usize)?;
            Ok(raw(libc::SYS_getcwd, [b, a[1] as usize, 0, 0, 0, 0])? as u32)
        })(),
        nr::SYNC => simple(libc::SYS_sync, [0, 0, 0]),
        nr::SYNCFS => simple(libc::SYS_syncfs, [sx(a[0]), 0, 0]),
        nr::FSYNC => simple(libc::SYS_fsync, [sx(a[0]), 0, 0]),
        nr::FDATASYNC => simple(libc::SYS_fdatasync, [sx(a[0]), 0, 0]),
        nr::SYNC_FILE_RANGE => simple6(
            libc::SYS_sync_file_range,
            [
                sx(a[0]),
                join64(a[1], a[2]) as usize,
                join64(a[3], a[4]) as usize,
                a[5] as usize,
                0,
                0,
            ],
        ),
        nr::FLOCK => {
            let fd = sx(a[0]);
            let op = a[1] as usize;
            c.blocking(true, || raw(libc::SYS_flock, [fd, op, 0, 0, 0, 0]))
        }
        nr::UTIMENSAT => utimensat(c, false),
        nr::UTIMENSAT_TIME64 => utimensat(c, true),
        nr::UTIMES => utimes(c, AT_FDCWD, a[0], a[1]),
        nr::FUTIMESAT => utimes(c, a[0] as i32, a[1], a[2]),
        nr::UTIME => (|| {
            let p = c.path(a[0])?;
            if a[1] == 0 {
                return Ok(raw(
                    libc::SYS_utimensat,
                    [sx(AT_FDCWD as u32), p.as_ptr() as usize, 0, 0, 0, 0],
                )? as u32);
            }
            let b = c.read(a[1], 8)?;
            let ts = [
                libc::timespec {
                    tv_sec: le32(&b, 0) as i32 as i64,
                    tv_nsec: 0,
                },
                libc::timespec {
                    tv_sec: le32(&b, 4) as i32 as i64,
                    tv_nsec: 0,
                },
            ];
            Ok(raw(
                libc::SYS_utimensat,
                [
                    sx(AT_FDCWD as u32),
                    p.as_ptr() as usize,
                    ts.as_ptr() as usize,
                    0,
                    0,
                    0,
                ],
            )? as u32)
        })(),
        nr::SENDFILE | nr::SENDFILE64 => sendfile(c, n == nr::SENDFILE64),
        nr::COPY_FILE_RANGE => (|| {
            let i = c.buf(a[1], 8)?;
            let o = c.buf(a[3], 8)?;
            Ok(raw(
                libc::SYS_copy_file_range,
                [sx(a[0]), i, sx(a[2]), o, a[4] as usize, a[5] as usize],
            )? as u32)
        })(),
        nr::SPLICE => (|| {
            let i = c.buf(a[1], 8)?;
            let o = c.buf(a[3], 8)?;
            let args = [sx(a[0]), i, sx(a[2]), o, a[4] as usize, a[5] as usize];
            c.blocking(true, || raw(libc::SYS_splice, args))
        })(),
        nr::TEE => simple6(
            libc::SYS_tee,
            [sx(a[0]), sx(a[1]), a[2] as usize, a[3] as usize, 0, 0],
        ),
        nr::STATFS64 | nr::FSTATFS64 => statfs(c, n == nr::FSTATFS64, true),
        nr::STATFS | nr::FSTATFS => statfs(c, n == nr::FSTATFS, false),
        nr::MEMFD_CREATE => (|| {
            let name = CString::new(c.cstr(a[0])?).unwrap_or_default();
            Ok(raw(
                libc::SYS_memfd_create,
                [name.as_ptr() as usize, a[1] as usize, 0, 0, 0, 0],
            )? as u32)
        })(),
        nr::INOTIFY_INIT => simple(libc::SYS_inotify_init1, [0, 0, 0]),
        nr::INOTIFY_INIT1 => simple(libc::SYS_inotify_init1, [a[0] as usize, 0, 0]),
        nr::INOTIFY_ADD_WATCH => path_arg1(
            c,
            libc::SYS_inotify_add_watch,
            sx(a[0]),
            a[1],
            a[2] as usize,
        ),
        nr::INOTIFY_RM_WATCH => simple(libc::SYS_inotify_rm_watch, [sx(a[0]), sx(a[1]), 0]),
        nr::GETXATTR | nr::LGETXATTR => (|| {
            let p = c.path(a[0])?;
            let name = CString::new(c.cstr(a[1])?).unwrap_or_default();
            let b = c.buf(a[2], a[3] as usize)?;
            let hn = if n == nr::GETXATTR {
                libc::SYS_getxattr
            } else {
                libc::SYS_lgetxattr
            };
            Ok(raw(
                hn,
                [
                    p.as_ptr() as usize,
                    name.as_ptr() as usize,
                    b,
                    a[3] as usize,
                    0,
                    0,
                ],
            )? as u32)
        })(),
        nr::FGETXATTR => (|| {
            let name = CString::new(c.cstr(a[1])?).unwrap_or_default();
            let b = c.buf(a[2], a[3] as usize)?;
            Ok(raw(
                libc::SYS_fgetxattr,
                [sx(a[0]), name.as_ptr() as usize, b, a[3] as usize, 0, 0],
            )? as u32)
        })(),
        nr::LISTXATTR | nr::LLISTXATTR => (|| {
            let p = c.path(a[0])?;
            let b = c.buf(a[1], a[2] as usize)?;
            let hn = if n == nr::LISTXATTR {
                libc::SYS_listxattr
            } else {
                libc::SYS_llistxattr
            };
            Ok(raw(hn, [p.as_ptr() as usize, b, a[2] as usize, 0, 0, 0])? as u32)
        })(),
        nr::FLISTXATTR => (|| {
            let b = c.buf(a[1], a[2] as usize)?;
            Ok(raw(libc::SYS_flistxattr, [sx(a[0]), b, a[2] as usize, 0, 0, 0])? as u32)
        })(),
        nr::SETXATTR
        | nr::LSETXATTR
        | nr::FSETXATTR
        | nr::REMOVEXATTR
        | nr::LREMOVEXATTR
        | nr::FREMOVEXATTR => {
            c.unimp("extended attribute changes");
            err(libc::ENOTSUP)
        }
        _ => return None,
    })
}

/// A guest path as the host opens it: /proc/self/exe is the guest
/// program, absolute paths go under the `-L` prefix when found there.
pub fn host_path(c: &Ctx, raw_path: Vec<u8>) -> CString {
    if is_proc_self(&raw_path, "exe") {
        use std::os::unix::ffi::OsStrExt;
        return CString::new(c.p.exe.as_os_str().as_bytes()).unwrap_or_default();
    }
    c.redirect(raw_path)
}

/// A 16-bit uid/gid argument: 0xffff means "unchanged" (-1).
fn id16(v: u32) -> usize {
    if v as u16 == 0xffff {
        usize::MAX
    } else {
        (v & 0xffff) as usize
    }
}

pub fn simple(n: libc::c_long, a: [usize; 3]) -> R {
    Ok(raw(n, [a[0], a[1], a[2], 0, 0, 0])? as u32)
}

pub fn simple6(n: libc::c_long, a: [usize; 6]) -> R {
    Ok(raw(n, a)? as u32)
}

/// A call whose first argument (or second after a dirfd when `dirfd` is
/// not -1) is a path.
fn path_call(c: &Ctx, n: libc::c_long, dirfd: i32, path: u32, rest: [usize; 3]) -> R {
    let p = c.path(path)?;
    let args = if dirfd == -1 {
        [p.as_ptr() as usize, rest[0], rest[1], rest[2], 0, 0]
    } else {
        [
            dirfd as isize as usize,
            p.as_ptr() as usize,
            rest[0],
            rest[1],
            rest[2],
            0,
        ]
    };
    Ok(raw(n, args)? as u32)
}

fn path_arg1(c: &Ctx, n: libc::c_long, first: usize, path: u32, rest: usize) -> R {
    let p = c.path(path)?;
    Ok(raw(n, [first, p.as_ptr() as usize, rest, 0, 0, 0])? as u32)
}

fn two_paths(c: &Ctx, n: libc::c_long, d1: i32, p1: u32, d2: i32, p2: u32, flags: usize) -> R {
    let a = c.path(p1)?;
    let b = c.path(p2)?;
    Ok(raw(
        n,
        [
            d1 as isize as usize,
            a.as_ptr() as usize,
            d2 as isize as usize,
            b.as_ptr() as usize,
            flags,
            0,
        ],
    )? as u32)
}

fn symlink(c: &Ctx, target: u32, dirfd: i32, path: u32) -> R {
    // The link's contents are not a path to redirect.
    let t = CString::new(c.cstr(target)?).unwrap_or_default();
    let p = c.path(path)?;
    Ok(raw(
        libc::SYS_symlinkat,
        [
            t.as_ptr() as usize,
            dirfd as isize as usize,
            p.as_ptr() as usize,
            0,
            0,
            0,
        ],
    )? as u32)
}

/// True if `p` names this process's /proc entry `what` ("exe", "maps").
fn is_proc_self(p: &[u8], what: &str) -> bool {
    let Some(rest) = p.strip_prefix(b"/proc/") else {
        return false;
    };
    let Some(slash) = rest.iter().position(|&b| b == b'/') else {
        return false;
    };
    let (who, tail) = rest.split_at(slash);
    if &tail[1..] != what.as_bytes() {
        return false;
    }
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    who == b"self" || who == b"thread-self" || who == pid.to_string().as_bytes()
}

fn readlink(c: &Ctx, dirfd: i32, path: u32, buf: u32, size: u32) -> R {
    let raw_path = c.cstr(path)?;
    if is_proc_self(&raw_path, "exe") {
        use std::os::unix::ffi::OsStrExt;
        let exe = c.p.exe.as_os_str().as_bytes();
        let n = exe.len().min(size as usize);
        c.write(buf, &exe[..n])?;
        return Ok(n as u32);
    }
    let p = c.redirect(raw_path);
    let b = c.buf(buf, size as usize)?;
    Ok(raw(
        libc::SYS_readlinkat,
        [
            dirfd as isize as usize,
            p.as_ptr() as usize,
            b,
            size as usize,
            0,
            0,
        ],
    )? as u32)
}

/// A memfd holding `data`, rewound, for synthesized /proc files.
fn memfd_with(data: &[u8], flags: u32) -> R {
    let name = c"rqemu-proc";
    let fd = raw(
        libc::SYS_memfd_create,
        [
            name.as_ptr() as usize,
            libc::MFD_CLOEXEC as usize,
            0,
            0,
            0,
            0,
        ],
    )? as i32;
    let mut off = 0;
    while off < data.len() {
        let r = raw(
            libc::SYS_write,
            [
                fd as usize,
                data[off..].as_ptr() as usize,
                data.len() - off,
                0,
                0,
                0,
            ],
        );
        match r {
            Ok(0) | Err(_) => break,
            Ok(k) => off += k,
        }
    }
    let _ = raw(libc::SYS_lseek, [fd as usize, 0, 0, 0, 0, 0]);
    if flags & libc::O_CLOEXEC as u32 == 0 {
        let _ = raw(
            libc::SYS_fcntl,
            [fd as usize, libc::F_SETFD as usize, 0, 0, 0, 0],
        );
    }
    Ok(fd as u32)
}

fn open(c: &mut Ctx, dirfd: i32, path: u32, flags: u32, mode: u32) -> R {
    let raw_path = c.cstr(path)?;
    if is_proc_self(&raw_path, "exe") {
        use std::os::unix::ffi::OsStrExt;
        let exe = CString::new(c.p.exe.as_os_str().as_bytes()).unwrap_or_default();
        return Ok(raw(
            libc::SYS_openat,
            [
                AT_FDCWD as isize as usize,
                exe.as_ptr() as usize,
                flags as usize,
                mode as usize,
                0,
                0,
            ],
        )? as u32);
    }
    if is_proc_self(&raw_path, "maps") {
        let m = c.p.space.render_maps();
        return memfd_with(m.as_bytes(), flags);
    }
    if is_proc_self(&raw_path, "cmdline") {
        let mut v = Vec::new();
        for a in &c.p.argv {
            v.extend_from_slice(a);
            v.push(0);
        }
        return memfd_with(&v, flags);
    }
    if is_proc_self(&raw_path, "auxv") {
        let v: Vec<u8> =
            c.p.auxv
                .iter()
                .flat_map(|(k, v)| k.to_le_bytes().into_iter().chain(v.to_le_bytes()))
                .collect();
        return memfd_with(&v, flags);
    }
    let p = c.redirect(raw_path);
    let pp = p.as_ptr() as usize;
    // Opening a FIFO blocks until the other end opens.
    c.blocking(true, || {
        raw(
            libc::SYS_openat,
            [
                dirfd as isize as usize,
                pp,
                flags as usize,
                mode as usize,
                0,
                0,
            ],
        )
    })
}

fn rw_vec(c: &mut Ctx, n: u32) -> R {
    let a = c.a;
    let cnt = a[2] as usize;
    if cnt > 1024 {
        return err(libc::EINVAL);
    }
    let raw_iov = c.read(a[1], cnt * 8)?;
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(cnt);
    for i in 0..cnt {
        let base = le32(&raw_iov, i * 8);
        let len = le32(&raw_iov, i * 8 + 4);
        if (len as i32) < 0 {
            return err(libc::EINVAL);
        }
        let h = c.buf(base, len as usize)?;
        iov.push(libc::iovec {
            iov_base: h as *mut libc::c_void,
            iov_len: len as usize,
        });
    }
    let ip = iov.as_ptr() as usize;
    let fd = sx(a[0]);
    let (hn, pos, flags) = match n {
        nr::READV => (libc::SYS_readv, 0, 0),
        nr::WRITEV => (libc::SYS_writev, 0, 0),
        nr::PREADV => (libc::SYS_preadv, join64(a[3], a[4]) as usize, 0),
        nr::PWRITEV => (libc::SYS_pwritev, join64(a[3], a[4]) as usize, 0),
        nr::PREADV2 => (
            libc::SYS_preadv2,
            join64(a[3], a[4]) as usize,
            a[5] as usize,
        ),
        _ => (
            libc::SYS_pwritev2,
            join64(a[3], a[4]) as usize,
            a[5] as usize,
        ),
    };
    let r = c.blocking(true, || raw(hn, [fd, ip, cnt, pos, 0, flags]));
    drop(iov);
    r
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum StatKind {
    Stat64,
    Old,
}

pub fn host_fstatat(dirfd: i32, path: &CStr, flags: i32) -> Result<libc::stat, Errno> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: a valid C string and a local stat buffer.
    let r = unsafe { libc::fstatat(dirfd, path.as_ptr(), st.as_mut_ptr(), flags) };
    if r != 0 {
        return Err(Errno::last());
    }
    // SAFETY: fstatat succeeded and filled the buffer (zeroed before).
    Ok(unsafe { st.assume_init() })
}

/// The i386 `struct stat64` (96 bytes, 4-byte aligned fields).
pub fn stat64_bytes(st: &libc::stat) -> Vec<u8> {
    let mut o = Out::default();
    o.u64(st.st_dev)
        .zeros(4)
        .u32(st.st_ino as u32)
        .u32(st.st_mode)
        .u32(st.st_nlink as u32)
        .u32(st.st_uid)
        .u32(st.st_gid)
        .u64(st.st_rdev)
        .zeros(4)
        .u64(st.st_size as u64)
        .u32(st.st_blksize as u32)
        .u64(st.st_blocks as u64)
        .u32(st.st_atime as u32)
        .u32(st.st_atime_nsec as u32)
        .u32(st.st_mtime as u32)
        .u32(st.st_mtime_nsec as u32)
        .u32(st.st_ctime as u32)
        .u32(st.st_ctime_nsec as u32)
        .u64(st.st_ino);
    o.0
}

/// The old i386 `struct stat` (64 bytes); EOVERFLOW where it cannot hold
/// the values.
fn old_stat_bytes(st: &libc::stat) -> Result<Vec<u8>, Sys> {
    if st.st_ino > u32::MAX as u64 || st.st_size > i32::MAX as i64 || st.st_nlink > 0xffff {
        return err(libc::EOVERFLOW);
    }
    let mut o = Out::default();
    o.u32(st.st_dev as u32)
        .u32(st.st_ino as u32)
        .u16(st.st_mode as u16)
        .u16(st.st_nlink as u16)
        .u16(st.st_uid.min(0xfffe) as u16)
        .u16(st.st_gid.min(0xfffe) as u16)
        .u32(st.st_rdev as u32)
        .u32(st.st_size as u32)
        .u32(st.st_blksize as u32)
        .u32(st.st_blocks as u32)
        .u32(st.st_atime as u32)
        .u32(st.st_atime_nsec as u32)
        .u32(st.st_mtime as u32)
        .u32(st.st_mtime_nsec as u32)
        .u32(st.st_ctime as u32)
        .u32(st.st_ctime_nsec as u32)
        .zeros(8);
    Ok(o.0)
}

fn stat_common(c: &Ctx, dirfd: i32, path: Option<u32>, flags: i32, buf: u32, kind: StatKind) -> R {
    let p = match path {
        Some(p) => host_path(c, c.cstr(p)?),
        None => CString::default(),
    };
    let st = host_fstatat(dirfd, &p, flags)?;
    let b = match kind {
        StatKind::Stat64 => stat64_bytes(&st),
        StatKind::Old => old_stat_bytes(&st)?,
    };
    c.write(buf, &b)?;
    Ok(0)
}

/// Directory offsets the guest can hold: filesystems that hash names
/// (ext4) give a 64-bit process 64-bit d_off cookies, which an i386 libc
/// rejects with EOVERFLOW (the kernel gives compat processes 32-bit ones).
/// Such cookies are replaced by small indices, translated back on lseek.
struct DirCookies {
    ino: u64,
    offs: Vec<u64>,
}

static DIR_COOKIES: std::sync::Mutex<Option<std::collections::HashMap<i32, DirCookies>>> =
    std::sync::Mutex::new(None);

fn cookies() -> std::sync::MutexGuard<'static, Option<std::collections::HashMap<i32, DirCookies>>> {
    match DIR_COOKIES.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

pub fn forget_dir_cookies(fd: i32) {
    if let Some(m) = cookies().as_mut() {
        m.remove(&fd);
    }
}

fn fd_ino(fd: i32) -> u64 {
    host_fstatat(fd, c"", libc::AT_EMPTY_PATH).map_or(0, |st| st.st_ino)
}

/// The guest-visible offset for host directory offset `off` of `fd`.
fn guest_dir_off(fd: i32, off: u64) -> u64 {
    if off <= i32::MAX as u64 {
        return off;
    }
    let ino = fd_ino(fd);
    let mut g = cookies();
    let m = g.get_or_insert_with(Default::default);
    let e = m.entry(fd).or_insert_with(|| DirCookies {
        ino,
        offs: Vec::new(),
    });
    if e.ino != ino {
        e.ino = ino;
        e.offs.clear();
    }
    let i = match e.offs.iter().position(|&o| o == off) {
        Some(i) => i,
        None => {
            e.offs.push(off);
            e.offs.len() - 1
        }
    };
    // Past the small offsets a filesystem without hashing would use.
    0x4000_0000 + i as u64
}

fn dir_seek_target(fd: i32, off: i64, whence: u32) -> i64 {
    if whence != 0 || !(0x4000_0000..0x7fff_ffff).contains(&off) {
        return off;
    }
    let g = cookies();
    match g.as_ref().and_then(|m| m.get(&fd)) {
        Some(e) => e
            .offs
            .get((off - 0x4000_0000) as usize)
            .map_or(off, |&o| o as i64),
        None => off,
    }
}

fn getdents64(c: &Ctx) -> R {
    let a = c.a;
    let fd = a[0] as i32;
    let count = (a[2] as usize).min(1 << 20);
    let mut hb = vec![0u8; count];
    let n = raw(
        libc::SYS_getdents64,
        [sx(a[0]), hb.as_mut_ptr() as usize, count, 0, 0, 0],
    )?;
    let mut off = 0;
    while off + 19 <= n {
        let reclen = super::le16(&hb, off + 16) as usize;
        if reclen < 19 || off + reclen > n {
            break;
        }
        let d_off = super::le64(&hb, off + 8);
        let g = guest_dir_off(fd, d_off);
        hb[off + 8..off + 16].copy_from_slice(&g.to_le_bytes());
        off += reclen;
    }
    c.write(a[1], &hb[..n])?;
    Ok(n as u32)
}

/// getdents(2) with the old `struct linux_dirent` (32-bit d_ino/d_off,
/// d_type in the last byte), built from getdents64.
fn getdents_old(c: &Ctx) -> R {
    let a = c.a;
    let count = (a[2] as usize).min(1 << 20);
    let mut hb = vec![0u8; count];
    let n = raw(
        libc::SYS_getdents64,
        [sx(a[0]), hb.as_mut_ptr() as usize, count, 0, 0, 0],
    )?;
    let mut out = Vec::with_capacity(count);
    let mut off = 0;
    let mut prev_off = 0u64;
    while off + 19 <= n {
        let ino = super::le64(&hb, off);
        let host_off = super::le64(&hb, off + 8);
        let doff = guest_dir_off(a[0] as i32, host_off);
        let reclen = super::le16(&hb, off + 16) as usize;
        let ty = hb[off + 18];
        if reclen < 19 || off + reclen > n {
            break;
        }
        let name_end = hb[off + 19..off + reclen]
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(reclen - 19);
        let name = &hb[off + 19..off + 19 + name_end];
        let rl = (10 + name.len() + 2 + 3) & !3;
        if out.len() + rl > count {
            if out.is_empty() {
                return err(libc::EINVAL);
            }
            // Rewind so the entry is read again next time.
            let _ = raw(libc::SYS_lseek, [sx(a[0]), prev_off as usize, 0, 0, 0, 0]);
            break;
        }
        if ino > u32::MAX as u64 {
            return err(libc::EOVERFLOW);
        }
        let mut e = Out::default();
        e.u32(ino as u32).u32(doff as u32).u16(rl as u16);
        e.0.extend_from_slice(name);
        e.0.resize(rl - 1, 0);
        e.0.push(ty);
        out.extend(e.0);
        off += reclen;
        prev_off = host_off;
    }
    c.write(a[1], &out)?;
    Ok(out.len() as u32)
}

fn fcntl(c: &mut Ctx, is64: bool) -> R {
    let a = c.a;
    let fd = sx(a[0]);
    let cmd = a[1] as i32;
    // i386 command numbers for the 64-bit record locks.
    const F_GETLK64: i32 = 12;
    const F_SETLK64: i32 = 13;
    const F_SETLKW64: i32 = 14;
    let (lk, wide) = match cmd {
        libc::F_GETLK | libc::F_SETLK | libc::F_SETLKW => (Some(cmd), false),
        F_GETLK64 if is64 => (Some(libc::F_GETLK), true),
        F_SETLK64 if is64 => (Some(libc::F_SETLK), true),
        F_SETLKW64 if is64 => (Some(libc::F_SETLKW), true),
        libc::F_OFD_GETLK | libc::F_OFD_SETLK | libc::F_OFD_SETLKW => (Some(cmd), true),
        _ => (None, false),
    };
    let Some(hcmd) = lk else {
        return match cmd {
            libc::F_DUPFD
            | libc::F_DUPFD_CLOEXEC
            | libc::F_GETFD
            | libc::F_SETFD
            | libc::F_GETFL
            | libc::F_SETFL
            | libc::F_SETOWN
            | libc::F_GETOWN
            | 10 // F_SETSIG
            | 11 // F_GETSIG
            | libc::F_SETLEASE
            | libc::F_GETLEASE
            | libc::F_NOTIFY
            | libc::F_SETPIPE_SZ
            | libc::F_GETPIPE_SZ
            | libc::F_ADD_SEALS
            | libc::F_GET_SEALS => simple(libc::SYS_fcntl, [fd, cmd as usize, sx(a[2])]),
            _ => {
                c.unimp(&format!("fcntl command {cmd}"));
                err(libc::EINVAL)
            }
        };
    };
    // struct flock (i386): type, whence (shorts), start, len (32-bit), pid;
    // struct flock64: type, whence, start, len (64-bit, packed), pid.
    let size = if wide { 24 } else { 16 };
    let b = c.read(a[2], size)?;
    let mut fl: libc::flock = {
        // SAFETY: flock is plain data; all-zero is a valid value.
        unsafe { std::mem::zeroed() }
    };
    fl.l_type = super::le16(&b, 0) as i16;
    fl.l_whence = super::le16(&b, 2) as i16;
    if wide {
        fl.l_start = super::le64(&b, 4) as i64;
        fl.l_len = super::le64(&b, 12) as i64;
        fl.l_pid = le32(&b, 20) as i32;
    } else {
        fl.l_start = le32(&b, 4) as i32 as i64;
        fl.l_len = le32(&b, 8) as i32 as i64;
        fl.l_pid = le32(&b, 12) as i32;
    }
    let fp = &mut fl as *mut libc::flock as usize;
    let r = if hcmd == libc::F_SETLKW || hcmd == libc::F_OFD_SETLKW {
        c.blocking(true, || {
            raw(libc::SYS_fcntl, [fd, hcmd as usize, fp, 0, 0, 0])
        })?
    } else {
        raw(libc::SYS_fcntl, [fd, hcmd as usize, fp, 0, 0, 0])? as u32
    };
    if hcmd == libc::F_GETLK || hcmd == libc::F_OFD_GETLK {
        let mut o = Out::default();
        o.u16(fl.l_type as u16).u16(fl.l_whence as u16);
        if wide {
            o.u64(fl.l_start as u64)
                .u64(fl.l_len as u64)
                .u32(fl.l_pid as u32);
        } else {
            if fl.l_start > i32::MAX as i64 || fl.l_len > i32::MAX as i64 {
                return err(libc::EOVERFLOW);
            }
            o.u32(fl.l_start as u32)
                .u32(fl.l_len as u32)
                .u32(fl.l_pid as u32);
        }
        c.write(a[2], &o.0)?;
    }
    Ok(r)
}

fn utimensat(c: &Ctx, time64: bool) -> R {
    let a = c.a;
    let p = if a[1] == 0 { None } else { Some(c.path(a[1])?) };
    let mut ts = [libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    }; 2];
    let tp = if a[2] == 0 {
        0
    } else {
        if time64 {
            let b = c.read(a[2], 32)?;
            for (i, t) in ts.iter_mut().enumerate() {
                t.tv_sec = super::le64(&b, i * 16) as i64;
                t.tv_nsec = super::le64(&b, i * 16 + 8) as i64;
            }
        } else {
            let b = c.read(a[2], 16)?;
            for (i, t) in ts.iter_mut().enumerate() {
                t.tv_sec = le32(&b, i * 8) as i32 as i64;
                t.tv_nsec = le32(&b, i * 8 + 4) as i32 as i64;
            }
        }
        ts.as_ptr() as usize
    };
    let pp = p.as_ref().map_or(0, |p| p.as_ptr() as usize);
    Ok(raw(libc::SYS_utimensat, [sx(a[0]), pp, tp, a[3] as usize, 0, 0])? as u32)
}

fn utimes(c: &Ctx, dirfd: i32, path: u32, times: u32) -> R {
    let p = c.path(path)?;
    let mut tv = [libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    }; 2];
    let tp = if times == 0 {
        0
    } else {
        let b = c.read(times, 16)?;
        for (i, t) in tv.iter_mut().enumerate() {
            t.tv_sec = le32(&b, i * 8) as i32 as i64;
            t.tv_usec = le32(&b, i * 8 + 4) as i32 as i64;
        }
        tv.as_ptr() as usize
    };
    Ok(raw(
        libc::SYS_futimesat,
        [dirfd as isize as usize, p.as_ptr() as usize, tp, 0, 0, 0],
    )? as u32)
}

fn sendfile(c: &mut Ctx, wide: bool) -> R {
    let a = c.a;
    let mut off: i64 = 0;
    let op = if a[2] == 0 {
        0
    } else {
        off = if wide {
            c.read_u64(a[2])? as i64
        } else {
            c.read_u32(a[2])? as i32 as i64
        };
        &mut off as *mut i64 as usize
    };
    let args = [sx(a[0]), sx(a[1]), op, a[3] as usize, 0, 0];
    let r = c.blocking(true, || raw(libc::SYS_sendfile, args))?;
    if a[2] != 0 {
        if wide {
            c.write(a[2], &(off as u64).to_le_bytes())?;
        } else {
            c.write_u32(a[2], off as u32)?;
        }
    }
    Ok(r)
}

/// The x86_64 kernel's `struct statfs`.
#[repr(C)]
struct KStatfs {
    f_type: i64,
    f_bsize: i64,
    f_blocks: u64,
    f_bfree: u64,
    f_bavail: u64,
    f_files: u64,
    f_ffree: u64,
    f_fsid: [i32; 2],
    f_namelen: i64,
    f_frsize: i64,
    f_flags: i64,
    f_spare: [i64; 4],
}

fn statfs(c: &Ctx, by_fd: bool, wide: bool) -> R {
    let a = c.a;
    let mut st = std::mem::MaybeUninit::<KStatfs>::zeroed();
    let sp = st.as_mut_ptr() as usize;
    if by_fd {
        raw(libc::SYS_fstatfs, [sx(a[0]), sp, 0, 0, 0, 0])?;
    } else {
        let p = c.path(a[0])?;
        raw(libc::SYS_statfs, [p.as_ptr() as usize, sp, 0, 0, 0, 0])?;
    }
    // SAFETY: the host call succeeded and filled the zeroed buffer.
    let st = unsafe { st.assume_init() };
    let fsid = st.f_fsid;
    let mut o = Out::default();
    let buf = if wide { a[2] } else { a[1] };
    if wide {
        o.u32(st.f_type as u32)
            .u32(st.f_bsize as u32)
            .u64(st.f_blocks)
            .u64(st.f_bfree)
            .u64(st.f_bavail)
            .u64(st.f_files)
            .u64(st.f_ffree)
            .u32(fsid[0] as u32)
            .u32(fsid[1] as u32)
            .u32(st.f_namelen as u32)
            .u32(st.f_frsize as u32)
            .u32(st.f_flags as u32)
            .zeros(16);
    } else {
        let big = |v: u64| v > u32::MAX as u64;
        if big(st.f_blocks) || big(st.f_bfree) || big(st.f_bavail) {
            return err(libc::EOVERFLOW);
        }
        o.u32(st.f_type as u32)
            .u32(st.f_bsize as u32)
            .u32(st.f_blocks as u32)
            .u32(st.f_bfree as u32)
            .u32(st.f_bavail as u32)
            .u32(st.f_files.min(u32::MAX as u64) as u32)
            .u32(st.f_ffree.min(u32::MAX as u64) as u32)
            .u32(fsid[0] as u32)
            .u32(fsid[1] as u32)
            .u32(st.f_namelen as u32)
            .u32(st.f_frsize as u32)
            .u32(st.f_flags as u32)
            .zeros(16);
    }
    c.write(buf, &o.0)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat64_layout() {
        // SAFETY: stat is plain data.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        st.st_dev = 0x801;
        st.st_ino = 0x1_0000_0002;
        st.st_mode = 0o100644;
        st.st_size = 0x1_2345_6789;
        st.st_mtime = 77;
        let b = stat64_bytes(&st);
        assert_eq!(b.len(), 96);
        assert_eq!(le32(&b, 0), 0x801);
        assert_eq!(le32(&b, 12), 2);
        assert_eq!(le32(&b, 16), 0o100644);
        assert_eq!(super::super::le64(&b, 44), 0x1_2345_6789);
        assert_eq!(le32(&b, 72), 77);
        assert_eq!(super::super::le64(&b, 88), 0x1_0000_0002);
    }

    #[test]
    fn proc_self_names() {
        assert!(is_proc_self(b"/proc/self/exe", "exe"));
        assert!(!is_proc_self(b"/proc/self/exe2", "exe"));
        assert!(!is_proc_self(b"/proc/1/exe", "exe") || std::process::id() == 1);
    }
}
