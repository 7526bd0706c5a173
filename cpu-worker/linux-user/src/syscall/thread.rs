//! Threads and exits: clone(2) (CLONE_VM threads become host threads
//! sharing the address space; other clones fork), exit(2), exit_group(2),
//! set_tid_address(2), set_thread_area(2)/get_thread_area (i386 `struct
//! user_desc`, GDT entries 6-8), futex(2) (host futexes on the guest's
//! words, time64 variant too), set_robust_list(2).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use x86::state::{EAX, ESP};

use super::{err, le32, nr, raw, Ctx, Out, Sys, R};
use crate::cpu;
use crate::hostsig;
use crate::task::{AltStack, Thread, TLS_COUNT, TLS_FIRST};

const CLONE_VM: u32 = 0x100;
const CLONE_VFORK: u32 = 0x4000;
const CLONE_THREAD: u32 = 0x1_0000;
const CLONE_SETTLS: u32 = 0x8_0000;
const CLONE_PARENT_SETTID: u32 = 0x10_0000;
const CLONE_CHILD_CLEARTID: u32 = 0x20_0000;
const CLONE_CHILD_SETTID: u32 = 0x100_0000;

pub fn handle(c: &mut Ctx, n: u32) -> Option<R> {
    let a = c.a;
    Some(match n {
        nr::EXIT => exit_thread(c, a[0]),
        nr::EXIT_GROUP => {
            c.p.log.flush();
            // SAFETY: _exit ends the process; nothing runs after it.
            unsafe { libc::_exit(a[0] as i32 & 0xff) }
        }
        nr::CLONE => clone(c, a[0], a[1], a[2], a[3], a[4]),
        nr::CLONE3 => {
            c.unimp("clone3");
            err(libc::ENOSYS)
        }
        nr::SET_TID_ADDRESS => {
            c.t.clear_child_tid = a[0];
            Ok(c.t.tid as u32)
        }
        nr::SET_THREAD_AREA => (|| {
            let desc = c.read(a[0], 16)?;
            let mut gdt = c.t.cpu.gdt;
            let idx = set_tls(&mut gdt, &desc)?;
            c.t.cpu.gdt = gdt;
            refresh_segments(&mut c.t.cpu, idx);
            c.write_u32(a[0], idx as u32)?;
            Ok(0)
        })(),
        nr::GET_THREAD_AREA => (|| {
            let idx = c.read_u32(a[0])? as usize;
            if !(TLS_FIRST..TLS_FIRST + TLS_COUNT).contains(&idx) {
                return err(libc::EINVAL);
            }
            c.write(a[0], &get_tls(c.t.cpu.gdt[idx], idx as u32))?;
            Ok(0)
        })(),
        nr::MODIFY_LDT => {
            c.unimp("modify_ldt");
            err(libc::ENOSYS)
        }
        nr::FUTEX => futex(c, false),
        nr::FUTEX_TIME64 => futex(c, true),
        nr::SET_ROBUST_LIST => {
            if a[1] != 12 {
                err(libc::EINVAL)
            } else {
                c.t.robust_list = (a[0], a[1]);
                Ok(0)
            }
        }
        nr::GET_ROBUST_LIST => (|| {
            if a[0] != 0 && a[0] as i32 != c.t.tid {
                return err(libc::EPERM);
            }
            c.write_u32(a[1], c.t.robust_list.0)?;
            c.write_u32(a[2], 12)?;
            Ok(0)
        })(),
        _ => return None,
    })
}

/// Fills a TLS descriptor from a `struct user_desc` as the kernel's
/// fill_ldt does; returns the entry number used.
pub fn set_tls(gdt: &mut [u64; 16], d: &[u8]) -> Result<usize, Sys> {
    let entry = le32(d, 0);
    let base = le32(d, 4);
    let limit = le32(d, 8);
    let f = le32(d, 12);
    let idx = if entry == u32::MAX {
        match (TLS_FIRST..TLS_FIRST + TLS_COUNT).find(|&i| gdt[i] == 0) {
            Some(i) => i,
            None => return err(libc::ESRCH),
        }
    } else {
        entry as usize
    };
    if !(TLS_FIRST..TLS_FIRST + TLS_COUNT).contains(&idx) {
        return err(libc::EINVAL);
    }
    let seg_32bit = f & 1;
    let contents = (f >> 1) & 3;
    let read_exec_only = (f >> 3) & 1;
    let limit_in_pages = (f >> 4) & 1;
    let seg_not_present = (f >> 5) & 1;
    let useable = (f >> 6) & 1;
    let empty = base == 0
        && limit == 0
        && ((contents == 0
            && read_exec_only == 1
            && seg_32bit == 0
            && limit_in_pages == 0
            && seg_not_present == 1
            && useable == 0)
            || f == 0);
    gdt[idx] = if empty {
        0
    } else {
        let lo = ((base & 0xffff) << 16) | (limit & 0xffff);
        let hi = (base & 0xff00_0000)
            | ((base & 0x00ff_0000) >> 16)
            | (limit & 0xf_0000)
            | ((read_exec_only ^ 1) << 9)
            | (contents << 10)
            | ((seg_not_present ^ 1) << 15)
            | (seg_32bit << 22)
            | (limit_in_pages << 23)
            | (useable << 20)
            | 0x7000;
        ((hi as u64) << 32) | lo as u64
    };
    Ok(idx)
}

/// Segment registers that hold a selector of GDT entry `idx` take the
/// entry's new base and limit (what the x86_64 kernel does after
/// set_thread_area, and what a new thread sees).
pub fn refresh_segments(cpu: &mut x86::state::CpuState, idx: usize) {
    let gdt = cpu.gdt;
    for s in cpu.segs.iter_mut() {
        if s.selector as usize >> 3 == idx && s.selector & 4 == 0 && s.selector != 0 {
            let (base, limit) = crate::task::descriptor_base_limit(gdt[idx]).unwrap_or((0, 0));
            s.base = base;
            s.limit = limit;
        }
    }
}

fn get_tls(desc: u64, idx: u32) -> Vec<u8> {
    let lo = desc as u32;
    let hi = (desc >> 32) as u32;
    let base = (lo >> 16) | ((hi & 0xff) << 16) | (hi & 0xff00_0000);
    let limit = (lo & 0xffff) | (hi & 0xf_0000);
    let f = ((hi >> 22) & 1)
        | (((hi >> 10) & 3) << 1)
        | ((((hi >> 9) & 1) ^ 1) << 3)
        | (((hi >> 23) & 1) << 4)
        | ((((hi >> 15) & 1) ^ 1) << 5)
        | (((hi >> 20) & 1) << 6);
    let mut o = Out::default();
    o.u32(idx).u32(base).u32(limit).u32(f);
    o.0
}

fn exit_thread(c: &mut Ctx, code: u32) -> R {
    if c.t.clear_child_tid != 0 {
        let a = c.t.clear_child_tid;
        if c.write_u32(a, 0).is_ok() {
            if let Ok(h) = c.buf(a, 4) {
                let _ = raw(libc::SYS_futex, [h, libc::FUTEX_WAKE as usize, 1, 0, 0, 0]);
            }
        }
    }
    if c.p.live_threads.fetch_sub(1, Ordering::AcqRel) <= 1 {
        c.p.log.flush();
        // SAFETY: the last thread leaves: the process exits.
        unsafe { libc::_exit(code as i32 & 0xff) }
    }
    hostsig::unregister(c.t.slot);
    Err(Sys::ExitThread)
}

fn clone(c: &mut Ctx, flags: u32, newsp: u32, ptid: u32, tls: u32, ctid: u32) -> R {
    if flags & CLONE_VM != 0 && flags & CLONE_VFORK == 0 {
        return clone_thread(c, flags, newsp, ptid, tls, ctid);
    }
    // A new process (fork, vfork, posix_spawn's CLONE_VM|CLONE_VFORK):
    // the child gets a copy of the address space.
    let pid = super::process::fork_host(c)?;
    if pid == 0 {
        if newsp != 0 {
            c.t.cpu.regs[ESP] = newsp;
        }
        if flags & CLONE_SETTLS != 0 {
            let desc = c.read(tls, 16)?;
            let mut gdt = c.t.cpu.gdt;
            let idx = set_tls(&mut gdt, &desc)?;
            c.t.cpu.gdt = gdt;
            refresh_segments(&mut c.t.cpu, idx);
        }
        if flags & CLONE_CHILD_SETTID != 0 {
            let _ = c.write_u32(ctid, c.t.tid as u32);
        }
        if flags & CLONE_CHILD_CLEARTID != 0 {
            c.t.clear_child_tid = ctid;
        }
        return Ok(0);
    }
    if flags & CLONE_PARENT_SETTID != 0 {
        let _ = c.write_u32(ptid, pid as u32);
    }
    Ok(pid as u32)
}

fn clone_thread(c: &mut Ctx, flags: u32, newsp: u32, ptid: u32, tls: u32, ctid: u32) -> R {
    if flags & CLONE_THREAD == 0 {
        c.unimp("clone with CLONE_VM but without CLONE_THREAD");
    }
    let mut cpu = (*c.t.cpu).clone();
    cpu.regs[EAX] = 0;
    if newsp != 0 {
        cpu.regs[ESP] = newsp;
    }
    cpu.exit_request.0.store(0, Ordering::Relaxed);
    if flags & CLONE_SETTLS != 0 {
        let desc = c.read(tls, 16)?;
        let idx = set_tls(&mut cpu.gdt, &desc)?;
        refresh_segments(&mut cpu, idx);
    }
    let proc = Arc::clone(&c.t.proc);
    let sigmask = c.t.sigmask;
    let (tx, rx) = std::sync::mpsc::channel::<i32>();
    proc.live_threads.fetch_add(1, Ordering::AcqRel);
    let spawned = std::thread::Builder::new()
        .name("guest".into())
        .stack_size(1 << 20)
        .spawn(move || {
            let cpu = Box::new(cpu);
            let slot = hostsig::register(&cpu.exit_request.0);
            let tid = hostsig::gettid();
            // The kernel writes both tids before the child runs.
            if flags & CLONE_PARENT_SETTID != 0 {
                let _ = proc.space.write_u32(ptid, tid as u32);
            }
            if flags & CLONE_CHILD_SETTID != 0 {
                let _ = proc.space.write_u32(ctid, tid as u32);
            }
            let mut t = Thread {
                cpu,
                tid,
                sigmask,
                altstack: AltStack {
                    sp: 0,
                    flags: crate::task::SS_DISABLE,
                    size: 0,
                },
                clear_child_tid: if flags & CLONE_CHILD_CLEARTID != 0 {
                    ctid
                } else {
                    0
                },
                robust_list: (0, 0),
                slot,
                saved_mask: None,
                proc: Arc::clone(&proc),
            };
            let _ = tx.send(tid);
            cpu::cpu_loop(&mut t, &proc);
        });
    if spawned.is_err() {
        c.p.live_threads.fetch_sub(1, Ordering::AcqRel);
        return err(libc::EAGAIN);
    }
    match rx.recv() {
        Ok(tid) => Ok(tid as u32),
        Err(_) => err(libc::EAGAIN),
    }
}

fn futex(c: &mut Ctx, time64: bool) -> R {
    let a = c.a;
    let op = a[1] as i32;
    let cmd = op & 0x7f;
    let uaddr = a[0];
    if uaddr & 3 != 0 {
        return err(libc::EINVAL);
    }
    let h1 = c.buf(uaddr, 4)?;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let (arg4, uses_uaddr2) = match cmd {
        libc::FUTEX_WAIT
        | libc::FUTEX_WAIT_BITSET
        | libc::FUTEX_LOCK_PI
        | 13 // FUTEX_LOCK_PI2
        | libc::FUTEX_WAIT_REQUEUE_PI => {
            let p = if a[3] == 0 {
                0
            } else {
                ts = super::time::read_timespec(c, a[3], time64)?;
                &ts as *const libc::timespec as usize
            };
            (p, cmd == libc::FUTEX_WAIT_REQUEUE_PI)
        }
        libc::FUTEX_REQUEUE | libc::FUTEX_CMP_REQUEUE | libc::FUTEX_WAKE_OP | libc::FUTEX_CMP_REQUEUE_PI => {
            (a[3] as usize, true)
        }
        _ => (0, false),
    };
    let h2 = if uses_uaddr2 {
        if a[4] & 3 != 0 {
            return err(libc::EINVAL);
        }
        c.buf(a[4], 4)?
    } else {
        0
    };
    let args = [h1, op as usize, a[2] as usize, arg4, h2, a[5] as usize];
    let waits = matches!(
        cmd,
        libc::FUTEX_WAIT
            | libc::FUTEX_WAIT_BITSET
            | libc::FUTEX_LOCK_PI
            | 13
            | libc::FUTEX_WAIT_REQUEUE_PI
    );
    if waits {
        let r = c.blocking(true, || raw(libc::SYS_futex, args));
        let _ = &ts;
        r
    } else {
        Ok(raw(libc::SYS_futex, args)? as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_descriptor_round_trip() {
        let mut gdt = [0u64; 16];
        let mut d = Out::default();
        // entry -1, base 0x12345678, limit 0xfffff, 32-bit, limit in pages,
        // useable.
        d.u32(u32::MAX)
            .u32(0x1234_5678)
            .u32(0xfffff)
            .u32(1 | (1 << 4) | (1 << 6));
        let idx = set_tls(&mut gdt, &d.0).expect("valid descriptor");
        assert_eq!(idx, 6);
        assert_eq!(
            crate::task::descriptor_base_limit(gdt[6]),
            Some((0x1234_5678, u32::MAX))
        );
        let back = get_tls(gdt[6], 6);
        assert_eq!(le32(&back, 4), 0x1234_5678);
        assert_eq!(le32(&back, 8), 0xfffff);
        assert_eq!(le32(&back, 12), 1 | (1 << 4) | (1 << 6));
    }
}
