//! Where translated code lives: one memfd mapped twice, read-write for the
//! translator and read-execute for running (no page is ever writable and
//! executable at once), blocks packed densely. Cranelift's JIT module puts
//! every finalized function on pages of its own; with one block per
//! finalization that spread hot code over thousands of pages and every
//! block transition missed the instruction TLB.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub struct CodeBuf {
    rw: *mut u8,
    rx: *mut u8,
    size: usize,
    used: usize,
    _fd: OwnedFd,
}

impl CodeBuf {
    pub fn new(size: usize) -> std::io::Result<CodeBuf> {
        // SAFETY: plain system calls on a fresh memfd; the two mappings are
        // owned by the returned value and unmapped in Drop.
        unsafe {
            let fd = libc::memfd_create(c"rqemu-jit".as_ptr(), libc::MFD_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            if libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let map = |prot| {
                libc::mmap(
                    std::ptr::null_mut(),
                    size,
                    prot,
                    libc::MAP_SHARED,
                    fd.as_raw_fd(),
                    0,
                )
            };
            let rw = map(libc::PROT_READ | libc::PROT_WRITE);
            if rw == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            let rx = map(libc::PROT_READ | libc::PROT_EXEC);
            if rx == libc::MAP_FAILED {
                let e = std::io::Error::last_os_error();
                libc::munmap(rw, size);
                return Err(e);
            }
            Ok(CodeBuf {
                rw: rw as *mut u8,
                rx: rx as *mut u8,
                size,
                used: 0,
                _fd: fd,
            })
        }
    }

    /// Copies position-independent machine code in; returns its executable
    /// address, or None when the buffer is full.
    pub fn add(&mut self, code: &[u8]) -> Option<*const u8> {
        let start = self.used.div_ceil(16) * 16;
        let end = start.checked_add(code.len())?;
        if end > self.size {
            return None;
        }
        // SAFETY: [start, end) lies inside the read-write mapping, and no
        // code runs from that range (it was never handed out).
        unsafe {
            std::ptr::copy_nonoverlapping(code.as_ptr(), self.rw.add(start), code.len());
        }
        self.used = end;
        // SAFETY: same offset in the executable view.
        Some(unsafe { self.rx.add(start) } as *const u8)
    }

    /// Forgets all code (the caller dropped every pointer into it).
    pub fn reset(&mut self) {
        self.used = 0;
    }

    pub fn used(&self) -> usize {
        self.used
    }

    /// The executable range, for telling faults in translated code.
    pub fn range(&self) -> (usize, usize) {
        (self.rx as usize, self.rx as usize + self.size)
    }
}

impl Drop for CodeBuf {
    fn drop(&mut self) {
        // SAFETY: the two mappings made in `new`, no longer used.
        unsafe {
            libc::munmap(self.rw as *mut libc::c_void, self.size);
            libc::munmap(self.rx as *mut libc::c_void, self.size);
        }
    }
}
