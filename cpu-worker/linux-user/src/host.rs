//! Raw host system calls (syscall(2) on x86_64), the one gate through which
//! the syscall layer reaches the host kernel with guest-memory pointers.

/// A host errno value (the same numbers on i386 and x86_64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    pub fn last() -> Errno {
        Errno(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }
}

/// Performs host system call `nr`.
///
/// # Safety
/// Every argument the call treats as a pointer must be null, a host address
/// inside the guest reservation (the kernel validates guest memory itself
/// and returns EFAULT; the caller checked that the whole range lies below
/// 4 GiB), or point at a live buffer of the caller big enough for what the
/// call reads or writes.
pub unsafe fn syscall(nr: libc::c_long, a: [usize; 6]) -> Result<usize, Errno> {
    // SAFETY: forwarded to the caller's contract above.
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if r == -1 {
        Err(Errno::last())
    } else {
        Ok(r as usize)
    }
}
