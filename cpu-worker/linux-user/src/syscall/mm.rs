//! Memory: mmap(2)/mmap2 (and the old one-pointer mmap of i386),
//! munmap(2), mprotect(2), mremap(2), brk(2), madvise(2), msync(2),
//! mlock(2), mincore(2), on the guest address space of `mmap.rs`.

use super::{err, le32, nr, raw, ret, Ctx, Sys, R};
use crate::mmap::{page_up, Backing, MMAP_TOP, P_EXEC, P_READ, P_WRITE};

const MAP_SHARED: u32 = 0x01;
const MAP_PRIVATE: u32 = 0x02;
const MAP_SHARED_VALIDATE: u32 = 0x03;
const MAP_FIXED: u32 = 0x10;
const MAP_ANONYMOUS: u32 = 0x20;
const MAP_FIXED_NOREPLACE: u32 = 0x10_0000;
const MREMAP_MAYMOVE: u32 = 1;
const MREMAP_FIXED: u32 = 2;
/// Lowest address mmap hands out (vm.mmap_min_addr).
const MMAP_MIN: u64 = 0x1_0000;

pub fn handle(c: &mut Ctx, n: u32) -> Option<R> {
    let a = c.a;
    Some(match n {
        nr::MMAP2 => mmap(c, a[0], a[1], a[2], a[3], a[4] as i32, a[5] as u64 * 4096),
        nr::MMAP => (|| {
            let b = c.read(a[0], 24)?;
            let w = |i: usize| le32(&b, i * 4);
            if w(5) & 0xfff != 0 {
                return err(libc::EINVAL);
            }
            mmap(c, w(0), w(1), w(2), w(3), w(4) as i32, w(5) as u64)
        })(),
        nr::MUNMAP => munmap(c, a[0], a[1]),
        nr::MPROTECT => mprotect(c, a[0], a[1], a[2]),
        nr::MREMAP => mremap(c, a[0], a[1], a[2], a[3], a[4]),
        nr::BRK => Ok(brk(c, a[0])),
        nr::MADVISE => (|| {
            let len = page_up(a[1] as u64);
            if a[0] & 0xfff != 0 {
                return err(libc::EINVAL);
            }
            if !c
                .space()
                .lock()
                .fully_mapped(a[0] as u64, a[0] as u64 + len)
            {
                return err(libc::ENOMEM);
            }
            let h = c.buf(a[0], len as usize)?;
            Ok(raw(libc::SYS_madvise, [h, len as usize, a[2] as usize, 0, 0, 0])? as u32)
        })(),
        nr::MSYNC | nr::MLOCK | nr::MUNLOCK | nr::MINCORE => (|| {
            let len = page_up(a[1] as u64);
            if !c
                .space()
                .lock()
                .fully_mapped(a[0] as u64 & !0xfff, a[0] as u64 + len)
            {
                return err(libc::ENOMEM);
            }
            let h = c.buf(a[0], len as usize)?;
            match n {
                nr::MSYNC => {
                    Ok(raw(libc::SYS_msync, [h, a[1] as usize, a[2] as usize, 0, 0, 0])? as u32)
                }
                nr::MLOCK => Ok(raw(libc::SYS_mlock, [h, a[1] as usize, 0, 0, 0, 0])? as u32),
                nr::MUNLOCK => Ok(raw(libc::SYS_munlock, [h, a[1] as usize, 0, 0, 0, 0])? as u32),
                _ => {
                    let v = c.buf(a[2], (len / 4096) as usize)?;
                    Ok(raw(libc::SYS_mincore, [h, a[1] as usize, v, 0, 0, 0])? as u32)
                }
            }
        })(),
        nr::MLOCKALL => ret(raw(libc::SYS_mlockall, [a[0] as usize, 0, 0, 0, 0, 0])),
        nr::MUNLOCKALL => ret(raw(libc::SYS_munlockall, [0; 6])),
        _ => return None,
    })
}

fn prot_bits(prot: u32) -> u8 {
    let mut p = 0;
    if prot & 1 != 0 {
        p |= P_READ;
    }
    if prot & 2 != 0 {
        p |= P_WRITE;
    }
    if prot & 4 != 0 {
        p |= P_EXEC;
    }
    p
}

fn mmap(c: &Ctx, addr: u32, len: u32, prot: u32, flags: u32, fd: i32, off: u64) -> R {
    if len == 0 {
        return err(libc::EINVAL);
    }
    let len = page_up(len as u64);
    if len > 0xffff_f000 {
        return err(libc::ENOMEM);
    }
    let kind = flags & 3;
    if kind != MAP_SHARED && kind != MAP_PRIVATE && kind != MAP_SHARED_VALIDATE {
        return err(libc::EINVAL);
    }
    if prot & !7 != 0 && prot & !(7 | 0x0100_0000 | 0x0200_0000) != 0 {
        return err(libc::EINVAL);
    }
    let shared = kind != MAP_PRIVATE;
    let anon = flags & MAP_ANONYMOUS != 0;
    if !anon && off & 0xfff != 0 {
        return err(libc::EINVAL);
    }
    let rie = c.p.rie();
    let space = c.space();
    let mut v = space.lock();
    let start = if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0 {
        if addr & 0xfff != 0 {
            return err(libc::EINVAL);
        }
        if addr as u64 + len > 1 << 32 {
            return err(libc::ENOMEM);
        }
        if flags & MAP_FIXED == 0 && !v.is_free(addr as u64, addr as u64 + len) {
            return err(libc::EEXIST);
        }
        addr as u64
    } else {
        let hint = addr as u64 & !0xfff;
        if hint >= MMAP_MIN && v.is_free(hint, hint + len) {
            hint
        } else {
            match v
                .find_free_down(len, MMAP_TOP as u64)
                .or_else(|| v.find_free_down(len, 0xffff_e000))
            {
                Some(s) if s >= MMAP_MIN => s,
                _ => return err(libc::ENOMEM),
            }
        }
    };
    let p = prot_bits(prot);
    let r = if anon {
        space.map_anon(
            &mut v,
            start as u32,
            len,
            p,
            shared,
            Backing::default(),
            rie,
        )
    } else {
        space.map_file(&mut v, start as u32, len, p, shared, fd, off, rie)
    };
    match r {
        Ok(()) => {
            if c.p.log.items.page {
                c.p.log.write(&format!(
                    "mmap: {:08x}-{:08x} prot={:x} flags={:x}\n",
                    start,
                    start + len,
                    prot,
                    flags
                ));
            }
            Ok(start as u32)
        }
        Err(e) => err(e.raw_os_error().unwrap_or(libc::ENOMEM)),
    }
}

fn munmap(c: &Ctx, addr: u32, len: u32) -> R {
    if addr & 0xfff != 0 || len == 0 {
        return err(libc::EINVAL);
    }
    let len = page_up(len as u64);
    if addr as u64 + len > 1 << 32 {
        return err(libc::EINVAL);
    }
    let space = c.space();
    let mut v = space.lock();
    space
        .unmap(&mut v, addr, len)
        .map_err(|e| Sys::Err(e.raw_os_error().unwrap_or(libc::EINVAL)))?;
    Ok(0)
}

fn mprotect(c: &Ctx, addr: u32, len: u32, prot: u32) -> R {
    if addr & 0xfff != 0 {
        return err(libc::EINVAL);
    }
    // PROT_GROWSDOWN/GROWSUP: applied to the given range only.
    let prot = prot & !(0x0100_0000 | 0x0200_0000);
    if prot & !7 != 0 {
        return err(libc::EINVAL);
    }
    let len = page_up(len as u64);
    if len == 0 {
        return Ok(0);
    }
    let space = c.space();
    let mut v = space.lock();
    if !v.fully_mapped(addr as u64, addr as u64 + len) {
        return err(libc::ENOMEM);
    }
    space
        .protect(&mut v, addr, len, prot_bits(prot), c.p.rie())
        .map_err(|e| Sys::Err(e.raw_os_error().unwrap_or(libc::EINVAL)))?;
    Ok(0)
}

fn mremap(c: &Ctx, old: u32, old_len: u32, new_len: u32, flags: u32, new_addr: u32) -> R {
    if old & 0xfff != 0 || flags & !(MREMAP_MAYMOVE | MREMAP_FIXED) != 0 {
        return err(libc::EINVAL);
    }
    if flags & MREMAP_FIXED != 0 && flags & MREMAP_MAYMOVE == 0 {
        return err(libc::EINVAL);
    }
    let old_len = page_up(old_len as u64);
    let new_len = page_up(new_len as u64);
    if new_len == 0 || old_len == 0 {
        return err(libc::EINVAL);
    }
    let space = c.space();
    let mut v = space.lock();
    if !v.fully_mapped(old as u64, old as u64 + old_len) {
        return err(libc::EFAULT);
    }
    let oe = |e: std::io::Error| Sys::Err(e.raw_os_error().unwrap_or(libc::ENOMEM));
    if flags & MREMAP_FIXED != 0 {
        if new_addr & 0xfff != 0 || new_addr as u64 + new_len > 1 << 32 {
            return err(libc::EINVAL);
        }
        space.unmap(&mut v, new_addr, new_len).map_err(oe)?;
        space
            .remap(&mut v, old, old_len, new_addr, new_len)
            .map_err(oe)?;
        return Ok(new_addr);
    }
    if new_len <= old_len || v.is_free(old as u64 + old_len, old as u64 + new_len) {
        space
            .remap(&mut v, old, old_len, old, new_len)
            .map_err(oe)?;
        return Ok(old);
    }
    if flags & MREMAP_MAYMOVE == 0 {
        return err(libc::ENOMEM);
    }
    let Some(to) = v.find_free_down(new_len, MMAP_TOP as u64) else {
        return err(libc::ENOMEM);
    };
    space
        .remap(&mut v, old, old_len, to as u32, new_len)
        .map_err(oe)?;
    Ok(to as u32)
}

/// brk(2): returns the new break, or the old one when it cannot move.
fn brk(c: &Ctx, new: u32) -> u32 {
    let space = c.space();
    let mut v = space.lock();
    let cur = v.brk;
    if new == 0 || new < v.brk_start {
        return cur;
    }
    let old_top = page_up(cur as u64);
    let new_top = page_up(new as u64);
    if new_top > old_top {
        if !v.is_free(old_top, new_top) {
            return cur;
        }
        let backing = Backing {
            path: "[heap]".into(),
            ..Backing::default()
        };
        if space
            .map_anon(
                &mut v,
                old_top as u32,
                new_top - old_top,
                P_READ | P_WRITE,
                false,
                backing,
                c.p.rie(),
            )
            .is_err()
        {
            return cur;
        }
    } else if new_top < old_top
        && space
            .unmap(&mut v, new_top as u32, old_top - new_top)
            .is_err()
    {
        return cur;
    }
    v.brk = new;
    new
}
