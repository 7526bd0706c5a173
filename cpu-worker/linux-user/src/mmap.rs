//! The guest's address space: one reserved 4 GiB host region, guest
//! address `a` at host `base + a`, with a per-page permission table that
//! every access from the interpreter and the syscall layer is checked
//! against (mmap(2), mprotect(2), munmap(2), mremap(2) semantics of Linux
//! as the man pages describe them; the i386-on-x86_64 layout of
//! arch/x86 `mmap_base` and `ELF_ET_DYN_BASE` as observed on a native run).
//!
//! Host protections are kept equal to the guest's (x86 paging: write and
//! execute imply read), so code that accesses `base + a` directly (the
//! future JIT) faults on the host exactly where the guest must fault.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};

use x86::mem::{MemFault, Memory};

pub const PAGE_SIZE: u32 = 4096;
const PAGES: usize = 1 << 20;
const SPACE: usize = 1 << 32;

/// Page permission bits in the table.
pub const P_READ: u8 = 1;
pub const P_WRITE: u8 = 2;
pub const P_EXEC: u8 = 4;
/// The page is mapped (possibly with no access: PROT_NONE).
pub const P_MAPPED: u8 = 8;
/// Translated code was made from the page: if it is writable, the host
/// page is read-only until the first write, which is logged (the JIT then
/// drops those translations; self-modifying code).
pub const P_CODE: u8 = 16;

/// Code-page writes kept for engines to catch up with; an engine further
/// behind flushes everything.
const CODE_LOG_MAX: usize = 1 << 16;

#[derive(Default)]
struct CodeLog {
    /// Sequence number of `pages[0]`.
    start: u64,
    pages: std::collections::VecDeque<u32>,
}

/// Where the top-down mmap search starts: below the stack and its 128 MiB
/// gap, as a native i386 process on x86_64 sees it (ld.so ends at f7ffe000).
pub const MMAP_TOP: u32 = 0xf7ff_e000;
/// The top of the initial stack (TASK_SIZE of a compat task, minus a page).
pub const STACK_TOP: u32 = 0xffff_e000;
/// Load address of a PIE main program (ELF_ET_DYN_BASE for ia32).
pub const PIE_BASE: u32 = 0x5655_5000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reserve the 4 GiB guest address space: {0}")]
    Reserve(std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

pub fn page_down(a: u64) -> u64 {
    a & !(PAGE_SIZE as u64 - 1)
}

pub fn page_up(a: u64) -> u64 {
    (a + PAGE_SIZE as u64 - 1) & !(PAGE_SIZE as u64 - 1)
}

/// What backs a mapping, for /proc/self/maps.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Backing {
    pub path: String,
    pub offset: u64,
    pub dev: u64,
    pub ino: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vma {
    pub end: u64,
    /// P_READ | P_WRITE | P_EXEC as the guest asked (PROT_* bits).
    pub prot: u8,
    pub shared: bool,
    pub backing: Backing,
}

/// The mapping table (guarded by the address space's lock) and the
/// program-break state.
#[derive(Debug, Default)]
pub struct Vmas {
    pub map: BTreeMap<u32, Vma>,
    pub brk_start: u32,
    pub brk: u32,
}

impl Vmas {
    /// Removes [start, end) from the table, splitting mappings that
    /// straddle its edges.
    fn carve(&mut self, start: u64, end: u64) {
        let keys: Vec<u32> = self
            .map
            .range(..end.min(u32::MAX as u64 + 1) as u32)
            .filter(|(k, v)| v.end > start && (**k as u64) < end)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            let Some(v) = self.map.remove(&k) else {
                continue;
            };
            let ks = k as u64;
            if ks < start {
                let mut left = v.clone();
                left.end = start;
                self.map.insert(k, left);
            }
            if v.end > end {
                let mut right = v.clone();
                right.backing.offset += end - ks;
                self.map.insert(end as u32, right);
            }
        }
    }

    pub fn is_free(&self, start: u64, end: u64) -> bool {
        if end > SPACE as u64 {
            return false;
        }
        !self
            .map
            .range(..end as u32)
            .any(|(k, v)| v.end > start && (*k as u64) < end)
    }

    pub fn fully_mapped(&self, start: u64, end: u64) -> bool {
        let mut a = start;
        for (k, v) in self.map.range(..end.min(SPACE as u64 - 1) as u32 + 1) {
            if v.end <= a {
                continue;
            }
            if *k as u64 > a {
                return false;
            }
            a = v.end;
            if a >= end {
                return true;
            }
        }
        a >= end
    }

    /// The highest free range of `len` bytes ending at or below `top`.
    pub fn find_free_down(&self, len: u64, top: u64) -> Option<u64> {
        let mut end = top;
        for (k, v) in self.map.range(..top as u32).rev() {
            if v.end < end && end - v.end >= len {
                return Some(end - len);
            }
            end = end.min(*k as u64);
            if end < len {
                return None;
            }
        }
        if end >= len + 0x1_0000 {
            Some(end - len)
        } else {
            None
        }
    }
}

pub struct AddressSpace {
    base: usize,
    pages: Box<[AtomicU8]>,
    vmas: Mutex<Vmas>,
    code_log: Mutex<CodeLog>,
    /// Code-page writes logged so far (a cheap "anything new?" check).
    code_seq: std::sync::atomic::AtomicU64,
}

/// Host PROT_* for guest permission bits: x86 pages that can be written or
/// executed can be read.
fn host_prot(prot: u8) -> i32 {
    let mut p = libc::PROT_NONE;
    if prot & (P_READ | P_WRITE | P_EXEC) != 0 {
        p |= libc::PROT_READ;
    }
    if prot & P_WRITE != 0 {
        p |= libc::PROT_WRITE;
    }
    p
}

/// Table bits for guest PROT_* bits.
fn page_bits(prot: u8, read_implies_exec: bool) -> u8 {
    let mut b = P_MAPPED;
    if prot & (P_READ | P_WRITE | P_EXEC) != 0 {
        b |= P_READ;
    }
    if prot & P_WRITE != 0 {
        b |= P_WRITE;
    }
    if prot & P_EXEC != 0 || (read_implies_exec && prot & P_READ != 0) {
        b |= P_EXEC;
    }
    b
}

static UNALIGNED_ATOMIC: Mutex<()> = Mutex::new(());

impl AddressSpace {
    /// Reserves the 4 GiB region (no access, no swap reservation).
    pub fn new() -> Result<Self> {
        // SAFETY: a fresh anonymous mapping at an address of the kernel's
        // choosing; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SPACE,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::Reserve(std::io::Error::last_os_error()));
        }
        let pages = (0..PAGES).map(|_| AtomicU8::new(0)).collect();
        Ok(AddressSpace {
            base: p as usize,
            pages,
            vmas: Mutex::new(Vmas::default()),
            code_log: Mutex::new(CodeLog::default()),
            code_seq: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn log_code_write(&self, page: u32) {
        let mut log = match self.code_log.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        log.pages.push_back(page);
        if log.pages.len() > CODE_LOG_MAX {
            log.pages.pop_front();
            log.start += 1;
        }
        self.code_seq.fetch_add(1, Ordering::Release);
    }

    /// Marks `page` as holding translated code; a writable page becomes
    /// read-only on the host so the next write is seen.
    pub fn protect_code(&self, page: u32) {
        let slot = &self.pages[(page & 0xf_ffff) as usize];
        let f = slot.fetch_or(P_CODE, Ordering::AcqRel);
        if f & P_CODE == 0 && f & P_WRITE != 0 {
            // SAFETY: one page inside our reservation; guest memory is
            // never a Rust object.
            unsafe {
                libc::mprotect(
                    (self.base + ((page as usize) << 12)) as *mut libc::c_void,
                    PAGE_SIZE as usize,
                    libc::PROT_READ,
                );
            }
        }
    }

    /// A write is about to reach code page `page`: give the host page its
    /// guest protection back and log the write.
    fn unprotect_code(&self, page: u32) {
        let slot = &self.pages[(page & 0xf_ffff) as usize];
        let f = slot.fetch_and(!P_CODE, Ordering::AcqRel);
        if f & P_CODE == 0 {
            return;
        }
        // SAFETY: one page inside our reservation.
        unsafe {
            libc::mprotect(
                (self.base + ((page as usize) << 12)) as *mut libc::c_void,
                PAGE_SIZE as usize,
                host_prot(f & (P_READ | P_WRITE | P_EXEC)),
            );
        }
        self.log_code_write(page);
    }

    /// Appends the code pages written since sequence number `*seq` and
    /// moves it on; `u32::MAX` in `out` means "too many: flush all".
    pub fn code_writes_since(&self, seq: &mut u64, out: &mut Vec<u32>) {
        if self.code_seq.load(Ordering::Acquire) == *seq {
            return;
        }
        let log = match self.code_log.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let end = log.start + log.pages.len() as u64;
        if *seq < log.start {
            out.push(u32::MAX);
        } else {
            out.extend(log.pages.iter().skip((*seq - log.start) as usize));
        }
        *seq = end;
    }

    pub fn base(&self) -> usize {
        self.base
    }

    /// The host address of guest address `a`.
    pub fn host_addr(&self, a: u32) -> usize {
        self.base + a as usize
    }

    pub fn lock(&self) -> MutexGuard<'_, Vmas> {
        match self.vmas.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn page_flags(&self, a: u32) -> u8 {
        self.pages[(a >> 12) as usize].load(Ordering::Relaxed)
    }

    fn set_page_flags(&self, start: u64, end: u64, bits: u8) {
        for p in (start >> 12)..(end >> 12) {
            let old = self.pages[p as usize].swap(bits, Ordering::AcqRel);
            if old & P_CODE != 0 {
                // Remapped or reprotected code: its translations go.
                self.log_code_write(p as u32);
            }
        }
    }

    fn host_mmap(
        &self,
        addr: u32,
        len: u64,
        prot: i32,
        flags: i32,
        fd: i32,
        off: i64,
    ) -> std::result::Result<(), std::io::Error> {
        if addr as u64 + len > SPACE as u64 {
            return Err(std::io::Error::from_raw_os_error(libc::ENOMEM));
        }
        // SAFETY: the target range lies inside our reservation (checked
        // above) and MAP_FIXED only replaces guest pages there; no Rust
        // object lives in the reservation.
        let p = unsafe {
            libc::mmap(
                (self.base + addr as usize) as *mut libc::c_void,
                len as usize,
                prot,
                flags | libc::MAP_FIXED,
                fd,
                off,
            )
        };
        if p == libc::MAP_FAILED {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Maps fresh zeroed pages at [addr, addr+len).
    #[allow(clippy::too_many_arguments)]
    pub fn map_anon(
        &self,
        v: &mut Vmas,
        addr: u32,
        len: u64,
        prot: u8,
        shared: bool,
        backing: Backing,
        rie: bool,
    ) -> std::result::Result<(), std::io::Error> {
        let flags = if shared {
            libc::MAP_SHARED | libc::MAP_ANONYMOUS
        } else {
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS
        };
        self.host_mmap(addr, len, host_prot(prot), flags, -1, 0)?;
        self.record(v, addr, len, prot, shared, backing, rie);
        Ok(())
    }

    /// Maps a host file (the guest's fd is the host's) at [addr, addr+len).
    #[allow(clippy::too_many_arguments)]
    pub fn map_file(
        &self,
        v: &mut Vmas,
        addr: u32,
        len: u64,
        prot: u8,
        shared: bool,
        fd: i32,
        off: u64,
        rie: bool,
    ) -> std::result::Result<(), std::io::Error> {
        let flags = if shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        self.host_mmap(addr, len, host_prot(prot), flags, fd, off as i64)?;
        let backing = backing_of_fd(fd, off);
        self.record(v, addr, len, prot, shared, backing, rie);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        v: &mut Vmas,
        addr: u32,
        len: u64,
        prot: u8,
        shared: bool,
        backing: Backing,
        rie: bool,
    ) {
        let start = addr as u64;
        let end = start + len;
        v.carve(start, end);
        v.map.insert(
            addr,
            Vma {
                end,
                prot,
                shared,
                backing,
            },
        );
        self.set_page_flags(start, end, page_bits(prot, rie));
    }

    /// Unmaps [addr, addr+len): the pages go back to the reservation.
    pub fn unmap(
        &self,
        v: &mut Vmas,
        addr: u32,
        len: u64,
    ) -> std::result::Result<(), std::io::Error> {
        self.host_mmap(
            addr,
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )?;
        v.carve(addr as u64, addr as u64 + len);
        self.set_page_flags(addr as u64, addr as u64 + len, 0);
        Ok(())
    }

    /// Changes the protection of mapped pages [addr, addr+len).
    pub fn protect(
        &self,
        v: &mut Vmas,
        addr: u32,
        len: u64,
        prot: u8,
        rie: bool,
    ) -> std::result::Result<(), std::io::Error> {
        let start = addr as u64;
        let end = start + len;
        // SAFETY: the range is inside the reservation (callers check it is
        // mapped, which implies it is below 4 GiB).
        let r = unsafe {
            libc::mprotect(
                (self.base + addr as usize) as *mut libc::c_void,
                len as usize,
                host_prot(prot),
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let pieces: Vec<(u32, Vma)> = v
            .map
            .range(..end as u32)
            .filter(|(k, m)| m.end > start && (**k as u64) < end)
            .map(|(k, m)| (*k, m.clone()))
            .collect();
        v.carve(start, end);
        for (k, mut m) in pieces {
            let ks = k as u64;
            let s = ks.max(start);
            let e = m.end.min(end);
            m.backing.offset += s - ks;
            m.end = e;
            m.prot = prot;
            v.map.insert(s as u32, m);
        }
        self.set_page_flags(start, end, page_bits(prot, rie));
        Ok(())
    }

    /// Moves or resizes a mapping with the host's mremap, keeping the
    /// reservation intact around it.
    pub fn remap(
        &self,
        v: &mut Vmas,
        old: u32,
        old_len: u64,
        new: u32,
        new_len: u64,
    ) -> std::result::Result<(), std::io::Error> {
        let Some((&k, vma)) = v.map.range(..=old).next_back() else {
            return Err(std::io::Error::from_raw_os_error(libc::EFAULT));
        };
        let vma = vma.clone();
        // Code pages carry host write protection the move would keep:
        // give them their guest protection first.
        for p in (old as u64 >> 12)..((old as u64 + old_len) >> 12) {
            if self.pages[(p & 0xf_ffff) as usize].load(Ordering::Relaxed) & P_CODE != 0 {
                self.unprotect_code(p as u32);
            }
        }
        let old_h = self.base + old as usize;
        let new_h = self.base + new as usize;
        if new == old && new_len > old_len {
            // Growing in place: release the reservation pages it grows into.
            // SAFETY: the pages [old+old_len, old+new_len) are free guest
            // pages of our reservation (the caller checked it).
            unsafe {
                libc::munmap(
                    (old_h + old_len as usize) as *mut libc::c_void,
                    (new_len - old_len) as usize,
                )
            };
        }
        let moved = if new == old {
            // SAFETY: the range lies inside the reservation; without
            // MREMAP_MAYMOVE the mapping stays where it is.
            unsafe {
                libc::mremap(
                    old_h as *mut libc::c_void,
                    old_len as usize,
                    new_len as usize,
                    0,
                )
            }
        } else {
            // SAFETY: both ranges lie inside the reservation; MREMAP_FIXED
            // only replaces pages there.
            unsafe {
                libc::mremap(
                    old_h as *mut libc::c_void,
                    old_len as usize,
                    new_len as usize,
                    libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                    new_h as *mut libc::c_void,
                )
            }
        };
        if moved == libc::MAP_FAILED {
            let e = std::io::Error::last_os_error();
            if new == old && new_len > old_len {
                let _ = self.host_mmap(
                    old + old_len as u32,
                    new_len - old_len,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                );
            }
            return Err(e);
        }
        let rie = self.page_flags(old) & P_EXEC != 0 && vma.prot & P_EXEC == 0;
        let mut backing = vma.backing.clone();
        backing.offset += (old - k) as u64;
        if new != old {
            // The old range left a hole in the reservation: fill it again.
            let _ = self.host_mmap(
                old,
                old_len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            v.carve(old as u64, old as u64 + old_len);
            self.set_page_flags(old as u64, old as u64 + old_len, 0);
        } else if new_len < old_len {
            let _ = self.host_mmap(
                old + new_len as u32,
                old_len - new_len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            v.carve(old as u64 + new_len, old as u64 + old_len);
            self.set_page_flags(old as u64 + new_len, old as u64 + old_len, 0);
        }
        self.record(v, new, new_len, vma.prot, vma.shared, backing, rie);
        Ok(())
    }

    /// Checks that [addr, addr+len) has all of `need` (P_* bits).
    pub fn check(&self, addr: u32, len: usize, need: u8) -> std::result::Result<(), MemFault> {
        if len == 0 {
            return Ok(());
        }
        let last = addr as u64 + len as u64 - 1;
        let mut p = (addr >> 12) as u64;
        while p <= last >> 12 {
            let mut f = self.pages[(p & 0xf_ffff) as usize].load(Ordering::Relaxed);
            if f & P_CODE != 0 && need & P_WRITE != 0 && f & P_WRITE != 0 {
                self.unprotect_code(p as u32);
                f &= !P_CODE;
            }
            if f & need != need {
                let at = if p == (addr >> 12) as u64 {
                    addr
                } else {
                    (p << 12) as u32
                };
                return Err(MemFault {
                    addr: at,
                    write: need & P_WRITE != 0,
                    protection: f & P_MAPPED != 0,
                });
            }
            p += 1;
        }
        Ok(())
    }

    /// Copies guest memory out (no wrap past 4 GiB: callers split).
    pub fn read(&self, addr: u32, buf: &mut [u8]) -> std::result::Result<(), MemFault> {
        if addr as u64 + buf.len() as u64 > SPACE as u64 {
            let first = (SPACE as u64 - addr as u64) as usize;
            let (a, b) = buf.split_at_mut(first);
            self.read(addr, a)?;
            return self.read(0, b);
        }
        self.check(addr, buf.len(), P_READ)?;
        let h = self.base + addr as usize;
        // SAFETY (all arms): the range is inside the reservation and mapped
        // readable (checked above); guest memory is never a Rust object.
        match buf.len() {
            1 => {
                // SAFETY: see above.
                buf[0] = unsafe { std::ptr::read(h as *const u8) };
                return Ok(());
            }
            2 => {
                // SAFETY: see above.
                let v = unsafe { std::ptr::read_unaligned(h as *const [u8; 2]) };
                buf.copy_from_slice(&v);
                return Ok(());
            }
            4 => {
                // SAFETY: see above.
                let v = unsafe { std::ptr::read_unaligned(h as *const [u8; 4]) };
                buf.copy_from_slice(&v);
                return Ok(());
            }
            _ => {}
        }
        // SAFETY: the range is inside the reservation and mapped readable
        // (checked above); guest memory is never a Rust object.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (self.base + addr as usize) as *const u8,
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        Ok(())
    }

    pub fn write(&self, addr: u32, data: &[u8]) -> std::result::Result<(), MemFault> {
        if addr as u64 + data.len() as u64 > SPACE as u64 {
            let first = (SPACE as u64 - addr as u64) as usize;
            let (a, b) = data.split_at(first);
            self.write(addr, a)?;
            return self.write(0, b);
        }
        self.check(addr, data.len(), P_WRITE)?;
        let h = self.base + addr as usize;
        match data.len() {
            1 => {
                // SAFETY: inside the reservation and mapped writable (checked).
                unsafe { std::ptr::write(h as *mut u8, data[0]) };
                return Ok(());
            }
            4 => {
                let mut v = [0u8; 4];
                v.copy_from_slice(data);
                // SAFETY: inside the reservation and mapped writable (checked).
                unsafe { std::ptr::write_unaligned(h as *mut [u8; 4], v) };
                return Ok(());
            }
            _ => {}
        }
        // SAFETY: inside the reservation and mapped writable (checked).
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                (self.base + addr as usize) as *mut u8,
                data.len(),
            )
        };
        Ok(())
    }

    pub fn fetch(&self, addr: u32, buf: &mut [u8]) -> std::result::Result<usize, MemFault> {
        let f = self.page_flags(addr);
        if f & P_EXEC == 0 {
            return Err(MemFault {
                addr,
                write: false,
                protection: f & P_MAPPED != 0,
            });
        }
        let to_end = (PAGE_SIZE - (addr & (PAGE_SIZE - 1))) as usize;
        let mut n = buf.len().min(to_end);
        if n < buf.len() {
            let next = addr.wrapping_add(n as u32);
            if self.page_flags(next) & P_EXEC != 0 {
                n = buf.len();
            }
        }
        if addr as u64 + n as u64 > SPACE as u64 {
            n = (SPACE as u64 - addr as u64) as usize;
        }
        // SAFETY: the bytes are inside the reservation in executable (and so
        // host-readable) pages, checked above.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (self.base + addr as usize) as *const u8,
                buf.as_mut_ptr(),
                n,
            )
        };
        Ok(n)
    }

    /// An atomic compare-exchange on guest memory, atomic with respect to
    /// other guest threads doing the same.
    pub fn cmpxchg(
        &self,
        addr: u32,
        expected: &[u8],
        new: &[u8],
        old: &mut [u8],
    ) -> std::result::Result<bool, MemFault> {
        let n = new.len();
        if addr as u64 + n as u64 > SPACE as u64 || n == 0 || n > 8 {
            return Err(MemFault {
                addr,
                write: true,
                protection: false,
            });
        }
        self.check(addr, n, P_WRITE | P_READ)?;
        let h = self.base + addr as usize;
        let le = |b: &[u8]| {
            let mut v = [0u8; 8];
            v[..b.len()].copy_from_slice(b);
            u64::from_le_bytes(v)
        };
        let e = le(expected);
        let nv = le(new);
        let aligned = h % n == 0 && matches!(n, 1 | 2 | 4 | 8);
        let (ok, seen) = if aligned {
            // SAFETY: `h` is inside the reservation, mapped read/write for
            // `n` bytes (checked) and aligned to `n`; guest memory is only
            // ever accessed through raw pointers and atomics.
            unsafe {
                match n {
                    1 => match AtomicU8::from_ptr(h as *mut u8).compare_exchange(
                        e as u8,
                        nv as u8,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    ) {
                        Ok(v) => (true, v as u64),
                        Err(v) => (false, v as u64),
                    },
                    2 => match AtomicU16::from_ptr(h as *mut u16).compare_exchange(
                        e as u16,
                        nv as u16,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    ) {
                        Ok(v) => (true, v as u64),
                        Err(v) => (false, v as u64),
                    },
                    4 => match AtomicU32::from_ptr(h as *mut u32).compare_exchange(
                        e as u32,
                        nv as u32,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    ) {
                        Ok(v) => (true, v as u64),
                        Err(v) => (false, v as u64),
                    },
                    _ => match AtomicU64::from_ptr(h as *mut u64).compare_exchange(
                        e,
                        nv,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    ) {
                        Ok(v) => (true, v),
                        Err(v) => (false, v),
                    },
                }
            }
        } else {
            // Split-lock case: atomic only against other unaligned locked
            // accesses, which is what the rest of the emulator can offer.
            let _g = match UNALIGNED_ATOMIC.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let mut cur = [0u8; 8];
            self.read(addr, &mut cur[..n])?;
            let c = le(&cur[..n]);
            if c == e {
                self.write(addr, &new[..n])?;
                (true, c)
            } else {
                (false, c)
            }
        };
        old.copy_from_slice(&seen.to_le_bytes()[..n]);
        Ok(ok)
    }

    /// Reads a NUL-terminated string of at most `max` bytes.
    pub fn read_cstr(&self, addr: u32, max: usize) -> std::result::Result<Vec<u8>, MemFault> {
        let mut out = Vec::new();
        let mut a = addr;
        loop {
            let chunk = (PAGE_SIZE - (a & (PAGE_SIZE - 1))) as usize;
            let mut buf = vec![0u8; chunk];
            self.read(a, &mut buf)?;
            if let Some(z) = buf.iter().position(|&b| b == 0) {
                out.extend_from_slice(&buf[..z]);
                return Ok(out);
            }
            out.extend_from_slice(&buf);
            if out.len() > max {
                return Err(MemFault {
                    addr: a,
                    write: false,
                    protection: false,
                });
            }
            a = a.wrapping_add(chunk as u32);
        }
    }

    pub fn read_u32(&self, addr: u32) -> std::result::Result<u32, MemFault> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    pub fn write_u32(&self, addr: u32, v: u32) -> std::result::Result<(), MemFault> {
        self.write(addr, &v.to_le_bytes())
    }

    /// Renders /proc/self/maps from the mapping table, merging neighbours
    /// the kernel would show as one.
    pub fn render_maps(&self) -> String {
        let v = self.lock();
        let mut out = String::new();
        let mut cur: Option<(u64, Vma)> = None;
        let emit = |out: &mut String, s: u64, m: &Vma| {
            let perm = format!(
                "{}{}{}{}",
                if m.prot & P_READ != 0 { 'r' } else { '-' },
                if m.prot & P_WRITE != 0 { 'w' } else { '-' },
                if m.prot & P_EXEC != 0 { 'x' } else { '-' },
                if m.shared { 's' } else { 'p' }
            );
            let dev = m.backing.dev;
            let head = format!(
                "{:08x}-{:08x} {} {:08x} {:02x}:{:02x} {}",
                s,
                m.end,
                perm,
                m.backing.offset,
                libc::major(dev),
                libc::minor(dev),
                m.backing.ino
            );
            if m.backing.path.is_empty() {
                out.push_str(&head);
                out.push_str(" \n");
            } else {
                let pad = 73usize.saturating_sub(head.len());
                out.push_str(&head);
                out.push_str(&" ".repeat(pad.max(1)));
                out.push_str(&m.backing.path);
                out.push('\n');
            }
        };
        for (k, m) in v.map.iter() {
            let s = *k as u64;
            if let Some((cs, c)) = &mut cur {
                let contiguous_file = c.backing.path == m.backing.path
                    && c.backing.ino == m.backing.ino
                    && (c.backing.path.is_empty()
                        || c.backing.path.starts_with('[')
                        || c.backing.offset + (c.end - *cs) == m.backing.offset);
                if c.end == s && c.prot == m.prot && c.shared == m.shared && contiguous_file {
                    c.end = m.end;
                    continue;
                }
                emit(&mut out, *cs, c);
            }
            cur = Some((s, m.clone()));
        }
        if let Some((cs, c)) = &cur {
            emit(&mut out, *cs, c);
        }
        out
    }
}

/// The path, device and inode behind a host fd, for /proc/self/maps.
pub fn backing_of_fd(fd: i32, off: u64) -> Backing {
    let path = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (dev, ino) = match std::fs::metadata(format!("/proc/self/fd/{fd}")) {
        Ok(m) => {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino())
        }
        Err(_) => (0, 0),
    };
    Backing {
        path,
        offset: off,
        dev,
        ino,
    }
}

/// A thread's handle on the shared address space: the interpreter's
/// `Memory`.
pub struct GuestMemory<'a> {
    pub space: &'a AddressSpace,
}

impl Memory for GuestMemory<'_> {
    fn read(&mut self, addr: u32, buf: &mut [u8]) -> std::result::Result<(), MemFault> {
        self.space.read(addr, buf)
    }
    fn write(&mut self, addr: u32, data: &[u8]) -> std::result::Result<(), MemFault> {
        self.space.write(addr, data)
    }
    fn fetch(&mut self, addr: u32, buf: &mut [u8]) -> std::result::Result<usize, MemFault> {
        self.space.fetch(addr, buf)
    }
    fn cmpxchg(
        &mut self,
        addr: u32,
        expected: &[u8],
        new: &[u8],
        old: &mut [u8],
    ) -> std::result::Result<bool, MemFault> {
        self.space.cmpxchg(addr, expected, new, old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_protect_fault_and_unmap() {
        let s = AddressSpace::new().expect("test reserves 4 GiB");
        let mut v = s.lock();
        s.map_anon(
            &mut v,
            0x1000_0000,
            0x3000,
            P_READ | P_WRITE,
            false,
            Backing::default(),
            false,
        )
        .expect("map");
        drop(v);
        s.write(0x1000_0ffe, &[1, 2, 3, 4])
            .expect("write across pages");
        let mut b = [0u8; 4];
        s.read(0x1000_0ffe, &mut b).expect("read");
        assert_eq!(b, [1, 2, 3, 4]);
        let mut v = s.lock();
        s.protect(&mut v, 0x1000_1000, 0x1000, P_READ, false)
            .expect("mprotect");
        drop(v);
        let f = s.write(0x1000_0ffe, &[0; 4]).expect_err("read-only page");
        assert_eq!(f.addr, 0x1000_1000);
        assert!(f.protection);
        let f = s.read(0x2000_0000, &mut b).expect_err("unmapped");
        assert!(!f.protection);
        assert_eq!(s.lock().map.len(), 3);
        let mut v = s.lock();
        s.unmap(&mut v, 0x1000_0000, 0x3000).expect("munmap");
        assert!(v.map.is_empty());
        drop(v);
        assert!(s.read(0x1000_0000, &mut b).is_err());
    }

    #[test]
    fn cmpxchg_aligned_and_not() {
        let s = AddressSpace::new().expect("test reserves 4 GiB");
        let mut v = s.lock();
        s.map_anon(
            &mut v,
            0x1000,
            0x1000,
            P_READ | P_WRITE,
            false,
            Backing::default(),
            false,
        )
        .expect("map");
        drop(v);
        let mut old = [0u8; 4];
        assert!(s
            .cmpxchg(0x1004, &[0; 4], &[9, 0, 0, 0], &mut old)
            .expect("ok"));
        assert!(!s
            .cmpxchg(0x1004, &[0; 4], &[7, 0, 0, 0], &mut old)
            .expect("ok"));
        assert_eq!(old, [9, 0, 0, 0]);
        assert!(s
            .cmpxchg(0x1005, &[0; 4], &[1, 1, 1, 1], &mut old)
            .expect("ok"));
        assert_eq!(s.read_u32(0x1004).expect("read"), 0x0101_0109);
    }

    #[test]
    fn find_free_top_down() {
        let mut v = Vmas::default();
        v.map.insert(
            0xf000_0000,
            Vma {
                end: 0xf800_0000,
                prot: P_READ,
                shared: false,
                backing: Backing::default(),
            },
        );
        assert_eq!(v.find_free_down(0x1000, 0xf7ff_e000), Some(0xefff_f000));
        assert_eq!(v.find_free_down(0x1000, 0xffff_0000), Some(0xfffe_f000));
    }
}
