//! The emulated process and its threads: what every guest thread shares
//! (address space, signal actions, options, log) and what each one owns
//! (CPU state, signal mask, alternate stack, TLS descriptors, clear-tid
//! address), following clone(2), sigaction(2), sigaltstack(2) and
//! set_thread_area(2).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Mutex, MutexGuard};

use x86::mem::Exception;
use x86::state::CpuState;

use crate::hostsig::ThreadSlot;
use crate::log::Log;
use crate::mmap::AddressSpace;
use crate::options::Options;

/// A guest `struct sigaction` (the rt_sigaction layout of i386: handler,
/// flags, restorer, 64-bit mask).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestSigaction {
    pub handler: u32,
    pub flags: u32,
    pub restorer: u32,
    pub mask: u64,
}

pub struct Process {
    pub space: AddressSpace,
    pub opts: Options,
    pub log: Log,
    /// Absolute path of the guest program (/proc/self/exe).
    pub exe: PathBuf,
    pub argv: Vec<Vec<u8>>,
    pub auxv: Vec<(u32, u32)>,
    pub actions: Mutex<[GuestSigaction; 65]>,
    pub read_implies_exec: AtomicBool,
    pub live_threads: AtomicUsize,
    pub personality: std::sync::atomic::AtomicU32,
}

impl Process {
    pub fn actions(&self) -> MutexGuard<'_, [GuestSigaction; 65]> {
        match self.actions.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn rie(&self) -> bool {
        self.read_implies_exec
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The three GDT entries set_thread_area manages (6, 7, 8), as raw
/// descriptors: what `mov gs, sel` loads through `Env::load_segment`.
pub const TLS_FIRST: usize = 6;
pub const TLS_COUNT: usize = 3;
pub const USER_CS: u16 = 0x23;
pub const USER_DS: u16 = 0x2b;

#[derive(Clone, Copy, Debug, Default)]
pub struct AltStack {
    pub sp: u32,
    pub flags: u32,
    pub size: u32,
}

pub const SS_ONSTACK: u32 = 1;
pub const SS_DISABLE: u32 = 2;

pub struct Thread {
    pub cpu: Box<CpuState>,
    pub tid: i32,
    pub sigmask: u64,
    pub altstack: AltStack,
    pub clear_child_tid: u32,
    pub robust_list: (u32, u32),
    pub slot: &'static ThreadSlot,
    /// The signal mask to restore after rt_sigsuspend's handler runs.
    pub saved_mask: Option<u64>,
    pub proc: std::sync::Arc<Process>,
}

/// The interpreter's environment for one thread: RDTSC and segment loads
/// through the thread's GDT copy.
pub struct CpuEnv {
    pub gdt: [u64; 16],
}

/// Base and limit of a raw descriptor, if it is a present data/code one.
pub fn descriptor_base_limit(d: u64) -> Option<(u32, u32)> {
    let present = d & (1 << 47) != 0;
    let s_bit = d & (1 << 44) != 0;
    if !present || !s_bit {
        return None;
    }
    let base = ((d >> 16) & 0xff_ffff) as u32 | (((d >> 56) & 0xff) as u32) << 24;
    let mut limit = (d & 0xffff) as u32 | (((d >> 48) & 0xf) as u32) << 16;
    if d & (1 << 55) != 0 {
        limit = (limit << 12) | 0xfff;
    }
    Some((base, limit))
}

impl x86::interp::Env for CpuEnv {
    fn rdtsc(&mut self) -> u64 {
        // SAFETY: RDTSC has no memory effects; every x86_64 host has it.
        unsafe { std::arch::x86_64::_rdtsc() }
    }

    fn load_segment(&mut self, seg: usize, selector: u16) -> Result<(u32, u32), Exception> {
        let idx = (selector >> 3) as usize;
        let gp = Exception::GeneralProtection(selector as u32 & !3);
        if selector & 4 != 0 {
            // No LDT (modify_ldt is not emulated).
            return Err(gp);
        }
        if idx == 0 {
            // The null selector: fine in DS/ES/FS/GS, not in SS or CS.
            return if seg == x86::state::SS || seg == x86::state::CS {
                Err(gp)
            } else {
                Ok((0, 0))
            };
        }
        if selector & 3 != 3 {
            return Err(gp);
        }
        match selector & !3 {
            s if s == USER_CS & !3 || s == USER_DS & !3 => {
                if seg == x86::state::CS && selector != USER_CS {
                    return Err(gp);
                }
                Ok((0, u32::MAX))
            }
            _ if (TLS_FIRST..TLS_FIRST + TLS_COUNT).contains(&idx) => {
                match descriptor_base_limit(self.gdt[idx]) {
                    Some(bl) => Ok(bl),
                    // Not present: #NP, which Linux reports like #GP.
                    None => Err(gp),
                }
            }
            _ => Err(gp),
        }
    }
}
