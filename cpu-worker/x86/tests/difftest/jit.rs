//! The JIT as a difftest executor: the case's memory is mirrored into a
//! 4 GiB host reservation with the same protections (as user mode maps the
//! guest), every block is translated on first use, and faults in
//! translated code come back through a SIGSEGV handler like the one
//! `qemu-i386` installs.

use std::cell::Cell;
use std::sync::Once;

use x86::jit::{recover_from_fault, translate::EXIT_FAULT, DirectMemory, Engine, Stop as EStop};
use x86::mem::{Exception, MemFault, Memory};
use x86::state::CpuState;

use super::harness::{Executor, NoEnv, Stop, TestMemory};

thread_local! {
    static BASE: Cell<usize> = const { Cell::new(0) };
}

extern "C" fn on_segv(_sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo.
    let addr = unsafe { (*info).si_addr() as usize };
    let base = BASE.with(|b| b.get());
    // The engine re-runs the faulting instruction in the interpreter for
    // the exact exception: only leaving the block is needed here.
    if base != 0 && addr >= base && addr - base < (1usize << 32) {
        // SAFETY: `uc` is this handler's context.
        if unsafe { recover_from_fault(uc, EXIT_FAULT) } {
            return;
        }
    }
    // Not a guest access from translated code: crash as usual.
    // SAFETY: restoring the default action; the fault repeats and kills us.
    unsafe {
        libc::signal(libc::SIGSEGV, libc::SIG_DFL);
    }
}

fn install_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a plain SA_SIGINFO handler installation.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_segv as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut());
        }
    });
}

struct HostSpace {
    base: *mut u8,
    /// (guest base, len, writable, executable) of the mapped regions.
    regions: Vec<(u32, usize, bool, bool)>,
}

impl HostSpace {
    fn new(mem: &TestMemory) -> HostSpace {
        // SAFETY: a fresh anonymous reservation.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                1 << 32,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        } as *mut u8;
        assert_ne!(base as *mut libc::c_void, libc::MAP_FAILED, "reserve 4 GiB");
        let mut regions = Vec::new();
        for r in &mem.regions {
            let len = r.bytes.len().div_ceil(4096) * 4096;
            // SAFETY: inside our reservation.
            unsafe {
                let p = base.add(r.base as usize);
                libc::mprotect(
                    p as *mut libc::c_void,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                );
                std::ptr::copy_nonoverlapping(r.bytes.as_ptr(), p, r.bytes.len());
                if !r.writable {
                    libc::mprotect(p as *mut libc::c_void, len, libc::PROT_READ);
                }
            }
            regions.push((r.base, r.bytes.len(), r.writable, r.executable));
        }
        HostSpace { base, regions }
    }

    fn copy_back(&self, mem: &mut TestMemory) {
        for r in &mut mem.regions {
            // SAFETY: the region was mapped readable in `new`.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.base.add(r.base as usize),
                    r.bytes.as_mut_ptr(),
                    r.bytes.len(),
                );
            }
        }
    }

    fn find(&self, addr: u32, len: usize, write: bool) -> Result<(), MemFault> {
        let mut a = addr;
        let end = addr as u64 + len as u64;
        while (a as u64) < end {
            let Some(&(b, l, w, _)) = self
                .regions
                .iter()
                .find(|&&(b, l, _, _)| a >= b && ((a - b) as usize) < l)
            else {
                return Err(MemFault {
                    addr: a,
                    write,
                    protection: false,
                });
            };
            if write && !w {
                return Err(MemFault {
                    addr: a,
                    write,
                    protection: true,
                });
            }
            a = b + l as u32;
        }
        Ok(())
    }

    fn ptr(&self, addr: u32) -> *mut u8 {
        // SAFETY: only offsets below 4 GiB, inside the reservation.
        unsafe { self.base.add(addr as usize) }
    }
}

impl Drop for HostSpace {
    fn drop(&mut self) {
        // SAFETY: our own reservation.
        unsafe { libc::munmap(self.base as *mut libc::c_void, 1 << 32) };
    }
}

impl Memory for HostSpace {
    fn read(&mut self, addr: u32, buf: &mut [u8]) -> Result<(), MemFault> {
        self.find(addr, buf.len(), false)?;
        // SAFETY: checked mapped and readable.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr(addr), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
    fn write(&mut self, addr: u32, data: &[u8]) -> Result<(), MemFault> {
        self.find(addr, data.len(), true)?;
        // SAFETY: checked mapped and writable.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr(addr), data.len()) };
        Ok(())
    }
    fn fetch(&mut self, addr: u32, buf: &mut [u8]) -> Result<usize, MemFault> {
        let Some(&(b, l, _, x)) = self
            .regions
            .iter()
            .find(|&&(b, l, _, _)| addr >= b && ((addr - b) as usize) < l)
        else {
            return Err(MemFault {
                addr,
                write: false,
                protection: false,
            });
        };
        if !x {
            return Err(MemFault {
                addr,
                write: false,
                protection: true,
            });
        }
        let n = buf.len().min(l - (addr - b) as usize);
        // SAFETY: inside a mapped region.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr(addr), buf.as_mut_ptr(), n) };
        Ok(n)
    }
    fn cmpxchg(
        &mut self,
        addr: u32,
        expected: &[u8],
        new: &[u8],
        old: &mut [u8],
    ) -> Result<bool, MemFault> {
        self.find(addr, new.len(), true)?;
        // SAFETY: checked; single-threaded test.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr(addr), old.as_mut_ptr(), old.len());
            if old == expected {
                std::ptr::copy_nonoverlapping(new.as_ptr(), self.ptr(addr), new.len());
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl DirectMemory for HostSpace {
    fn host_base(&self) -> *mut u8 {
        self.base
    }
    fn protect_code(&mut self, _page: u32) {}
    fn take_code_writes(&mut self, _out: &mut Vec<u32>) {}
}

/// Runs cases with every block translated on first execution.
pub struct Jit;

impl Executor for Jit {
    fn run(
        &mut self,
        cpu: &mut CpuState,
        mem: &mut TestMemory,
        end: u32,
        max_steps: u32,
    ) -> Result<(), Stop> {
        install_handler();
        let mut space = HostSpace::new(mem);
        BASE.with(|b| b.set(space.base as usize));
        let mut engine = Engine::new();
        engine.hot_threshold = 1;
        engine.block_budget = max_steps as u64 + 1;
        let r = engine.run(cpu, &mut space, &mut NoEnv);
        BASE.with(|b| b.set(0));
        space.copy_back(mem);
        match r {
            // The code page is filled with INT3 after the case's bytes.
            EStop::Exception(Exception::Breakpoint) if cpu.eip == end.wrapping_add(1) => {
                cpu.eip = end;
                Ok(())
            }
            EStop::Exception(e) => Err(Stop::Exception(e)),
            EStop::Interrupted => Err(Stop::StepLimit),
        }
    }
}
