//! The i386 Linux system call interface (`int $0x80`: number in EAX,
//! arguments in EBX, ECX, EDX, ESI, EDI, EBP, result or -errno in EAX),
//! translated to host system calls. Each submodule follows the man pages
//! of its calls and the i386 layouts of their structures (Linux UAPI
//! headers, compat definitions of arch/x86).

mod fs;
mod ioctl;
mod mm;
mod net;
pub mod nr;
mod poll;
mod process;
mod sig;
mod strace;
mod thread;
mod time;

use std::ffi::CString;

use x86::mem::MemFault;
use x86::state::{EAX, EBP, EBX, ECX, EDI, EDX, ESI};

use crate::host::{self, Errno};
use crate::signal;
use crate::task::{Process, Thread};

/// What the CPU loop does after a system call.
pub enum Flow {
    Continue,
    ExitThread,
}

/// A system call's outcome other than a plain result.
#[derive(Debug)]
pub enum Sys {
    /// Fail with this errno.
    Err(i32),
    /// Interrupted by a signal whose handler has SA_RESTART (or the call
    /// never started): run the `int $0x80` again after the handler.
    Restart,
    /// The registers were set by the call itself (sigreturn, execve).
    Regs,
    /// The calling thread is gone.
    ExitThread,
}

impl From<MemFault> for Sys {
    fn from(_: MemFault) -> Self {
        Sys::Err(libc::EFAULT)
    }
}

impl From<Errno> for Sys {
    fn from(e: Errno) -> Self {
        Sys::Err(e.0)
    }
}

pub type R = Result<u32, Sys>;

/// A host result as a guest one.
pub fn ret(r: Result<usize, Errno>) -> R {
    Ok(r? as u32)
}

pub fn err<T>(e: i32) -> Result<T, Sys> {
    Err(Sys::Err(e))
}

/// One system call in progress.
pub struct Ctx<'a> {
    pub t: &'a mut Thread,
    pub p: &'a Process,
    pub nr: u32,
    pub a: [u32; 6],
}

/// Performs host system call `nr` whose pointer arguments come from
/// `Ctx::buf`/`Ctx::out` (inside the guest reservation, range checked) or
/// point at live locals of the caller.
pub fn raw(nr: libc::c_long, a: [usize; 6]) -> Result<usize, Errno> {
    // SAFETY: by the contract above: every pointer argument is a checked
    // guest address (the kernel validates guest memory and returns EFAULT)
    // or a live local buffer of the calling syscall handler.
    unsafe { host::syscall(nr, a) }
}

impl Ctx<'_> {
    pub fn space(&self) -> &crate::mmap::AddressSpace {
        &self.p.space
    }

    /// The host address of guest buffer [addr, addr+len); null stays null.
    /// The range must lie below 4 GiB (the kernel checks the rest).
    pub fn buf(&self, addr: u32, len: usize) -> Result<usize, Sys> {
        if addr == 0 {
            return Ok(0);
        }
        if addr as u64 + len as u64 > 1 << 32 {
            return err(libc::EFAULT);
        }
        Ok(self.p.space.host_addr(addr))
    }

    pub fn read(&self, addr: u32, len: usize) -> Result<Vec<u8>, Sys> {
        if len > 1 << 24 {
            return err(libc::EINVAL);
        }
        let mut v = vec![0u8; len];
        self.p.space.read(addr, &mut v)?;
        Ok(v)
    }

    pub fn write(&self, addr: u32, data: &[u8]) -> Result<(), Sys> {
        self.p.space.write(addr, data)?;
        Ok(())
    }

    pub fn read_u32(&self, addr: u32) -> Result<u32, Sys> {
        Ok(self.p.space.read_u32(addr)?)
    }

    pub fn write_u32(&self, addr: u32, v: u32) -> Result<(), Sys> {
        Ok(self.p.space.write_u32(addr, v)?)
    }

    pub fn read_u64(&self, addr: u32) -> Result<u64, Sys> {
        let b = self.read(addr, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_le_bytes(a))
    }

    pub fn cstr(&self, addr: u32) -> Result<Vec<u8>, Sys> {
        if addr == 0 {
            return err(libc::EFAULT);
        }
        self.p
            .space
            .read_cstr(addr, 4096)
            .map_err(|_| Sys::Err(libc::EFAULT))
    }

    /// A path argument, redirected under the `-L` prefix when the file
    /// exists there (as QEMU's path() does for absolute paths).
    pub fn path(&self, addr: u32) -> Result<CString, Sys> {
        let p = self.cstr(addr)?;
        Ok(self.redirect(p))
    }

    pub fn redirect(&self, p: Vec<u8>) -> CString {
        if let (Some(pre), Some(b'/')) = (&self.p.opts.prefix, p.first()) {
            if p.len() > 1 {
                use std::os::unix::ffi::OsStrExt;
                let mut full = pre.as_os_str().as_bytes().to_vec();
                full.extend_from_slice(&p);
                if let Ok(c) = CString::new(full) {
                    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
                    // SAFETY: lstat with a valid C string and a local buffer.
                    if unsafe { libc::lstat(c.as_ptr(), st.as_mut_ptr()) } == 0 {
                        return c;
                    }
                }
            }
        }
        CString::new(p).unwrap_or_default()
    }

    /// Runs a host call that may block: EINTR becomes a restart (SA_RESTART
    /// handlers, `restartable` calls) or -EINTR when a guest signal wants
    /// delivery; otherwise the call is retried.
    pub fn blocking(
        &mut self,
        restartable: bool,
        mut f: impl FnMut() -> Result<usize, Errno>,
    ) -> R {
        if signal::interrupting(self.t, self.p).is_some() {
            // The signal came before the call started: deliver it first.
            return Err(Sys::Restart);
        }
        loop {
            match f() {
                Err(Errno(libc::EINTR)) => {
                    if let Some((_, flags)) = signal::interrupting(self.t, self.p) {
                        if restartable && flags & signal::SA_RESTART != 0 {
                            return Err(Sys::Restart);
                        }
                        return err(libc::EINTR);
                    }
                }
                Ok(v) => return Ok(v as u32),
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub fn unimp(&self, what: &str) {
        if self.p.log.items.unimp {
            self.p.log.write(&format!("qemu: unsupported {what}\n"));
        }
    }
}

/// Handles the system call in the thread's registers.
pub fn dispatch(t: &mut Thread, p: &Process) -> Flow {
    let nr = t.cpu.regs[EAX];
    let a = [
        t.cpu.regs[EBX],
        t.cpu.regs[ECX],
        t.cpu.regs[EDX],
        t.cpu.regs[ESI],
        t.cpu.regs[EDI],
        t.cpu.regs[EBP],
    ];
    let tracing = p.log.items.strace;
    if tracing {
        strace::pre(p, t.tid, nr, &a);
    }
    let r = {
        let mut c = Ctx { t, p, nr, a };
        handle(&mut c)
    };
    let ret = match r {
        Ok(v) => {
            t.cpu.regs[EAX] = v;
            Some(v)
        }
        Err(Sys::Err(e)) => {
            let v = (-e) as u32;
            t.cpu.regs[EAX] = v;
            Some(v)
        }
        Err(Sys::Restart) => {
            t.cpu.eip = t.cpu.eip.wrapping_sub(2);
            t.cpu.regs[EAX] = nr;
            if tracing {
                p.log.write(" = ? (restarted)\n");
            }
            None
        }
        Err(Sys::Regs) => {
            if tracing {
                p.log.write(" = ?\n");
            }
            None
        }
        Err(Sys::ExitThread) => return Flow::ExitThread,
    };
    if let (true, Some(v)) = (tracing, ret) {
        strace::post(p, nr, v);
    }
    Flow::Continue
}

fn handle(c: &mut Ctx) -> R {
    let n = c.nr;
    if let Some(r) = fs::handle(c, n) {
        return r;
    }
    if let Some(r) = mm::handle(c, n) {
        return r;
    }
    if let Some(r) = process::handle(c, n) {
        return r;
    }
    if let Some(r) = sig::handle(c, n) {
        return r;
    }
    if let Some(r) = thread::handle(c, n) {
        return r;
    }
    if let Some(r) = time::handle(c, n) {
        return r;
    }
    if let Some(r) = poll::handle(c, n) {
        return r;
    }
    if let Some(r) = net::handle(c, n) {
        return r;
    }
    c.unimp(&format!(
        "syscall {} ({})",
        n,
        nr::name(n).unwrap_or("unknown")
    ));
    err(libc::ENOSYS)
}

/// Little-endian struct building for guest layouts.
#[derive(Default)]
pub struct Out(pub Vec<u8>);

impl Out {
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.0.extend(std::iter::repeat_n(0u8, n));
        self
    }
}

/// Reads little-endian fields of a guest struct.
pub fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

pub fn le64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

pub fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

/// Joins a 64-bit value passed as two 32-bit registers (low first).
pub fn join64(lo: u32, hi: u32) -> u64 {
    ((hi as u64) << 32) | lo as u64
}
