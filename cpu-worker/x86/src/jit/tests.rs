//! Engine tests: the same guest code run by the interpreter alone and by
//! the engine with translation must end in the same state.

use super::*;
use crate::state::{EAX, EBX, ECX, EDX, ESI, ESP};

/// 16 MiB of read-write guest memory at guest address 0 inside a 4 GiB
/// reservation, like user mode's address space.
struct Space {
    base: *mut u8,
    size: usize,
}

const SPACE: usize = 16 << 20;

impl Space {
    fn new() -> Space {
        // SAFETY: a fresh anonymous reservation; nothing else maps there.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                1 << 32,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "reserve 4 GiB");
        // SAFETY: inside the reservation just made.
        let r = unsafe { libc::mprotect(base, SPACE, libc::PROT_READ | libc::PROT_WRITE) };
        assert_eq!(r, 0, "mprotect");
        Space {
            base: base as *mut u8,
            size: SPACE,
        }
    }

    fn check(&self, addr: u32, len: usize, write: bool) -> Result<(), MemFault> {
        if addr as usize + len <= self.size {
            Ok(())
        } else {
            Err(MemFault {
                addr,
                write,
                protection: false,
            })
        }
    }

    fn slice(&mut self, addr: u32, len: usize) -> &mut [u8] {
        // SAFETY: callers checked the range lies in the mapped part.
        unsafe { std::slice::from_raw_parts_mut(self.base.add(addr as usize), len) }
    }
}

impl Drop for Space {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the reservation made in `new`.
        unsafe { libc::munmap(self.base as *mut libc::c_void, 1 << 32) };
    }
}

impl Memory for Space {
    fn read(&mut self, addr: u32, buf: &mut [u8]) -> Result<(), MemFault> {
        self.check(addr, buf.len(), false)?;
        buf.copy_from_slice(self.slice(addr, buf.len()));
        Ok(())
    }
    fn write(&mut self, addr: u32, data: &[u8]) -> Result<(), MemFault> {
        self.check(addr, data.len(), true)?;
        self.slice(addr, data.len()).copy_from_slice(data);
        Ok(())
    }
    fn fetch(&mut self, addr: u32, buf: &mut [u8]) -> Result<usize, MemFault> {
        self.check(addr, 1, false)?;
        let n = buf.len().min(self.size - addr as usize);
        buf[..n].copy_from_slice(self.slice(addr, n));
        Ok(n)
    }
    fn cmpxchg(
        &mut self,
        addr: u32,
        expected: &[u8],
        new: &[u8],
        old: &mut [u8],
    ) -> Result<bool, MemFault> {
        self.check(addr, new.len(), true)?;
        old.copy_from_slice(self.slice(addr, new.len()));
        if old == expected {
            self.slice(addr, new.len()).copy_from_slice(new);
            Ok(true)
        } else {
            Ok(false)
        }
    }
}

impl DirectMemory for Space {
    fn host_base(&self) -> *mut u8 {
        self.base
    }
    fn protect_code(&mut self, _page: u32) {}
    fn take_code_writes(&mut self, _out: &mut Vec<u32>) {}
    fn take_fault(&mut self) -> Option<MemFault> {
        None
    }
}

struct NoEnv;
impl Env for NoEnv {
    fn rdtsc(&mut self) -> u64 {
        0
    }
    fn load_segment(&mut self, _: usize, _: u16) -> Result<(u32, u32), Exception> {
        Err(Exception::GeneralProtection(0))
    }
}

/// Runs `code` at 0x1000 until INT3, with and without translation.
fn both(code: &[u8], setup: impl Fn(&mut CpuState, &mut Space)) -> (CpuState, CpuState, Stats) {
    let mut out = Vec::new();
    let mut mems: Vec<Vec<u8>> = Vec::new();
    let mut stats = Stats::default();
    for jit in [false, true] {
        let mut mem = Space::new();
        mem.slice(0x1000, code.len()).copy_from_slice(code);
        let mut cpu = CpuState {
            eip: 0x1000,
            ..CpuState::default()
        };
        cpu.regs[ESP] = 0x80000;
        setup(&mut cpu, &mut mem);
        let mut e = Engine::new();
        e.interpret_only = !jit;
        let r = e.run(&mut cpu, &mut mem, &mut NoEnv);
        assert_eq!(r, Stop::Exception(Exception::Breakpoint));
        if jit {
            stats = e.stats;
        }
        out.push(cpu);
        mems.push(mem.slice(0x20000, 0x30000).to_vec());
    }
    assert!(mems[0] == mems[1], "memory differs");
    let b = out.pop().expect("two runs");
    let a = out.pop().expect("two runs");
    (a, b, stats)
}

fn same(a: &CpuState, b: &CpuState) {
    assert_eq!(a.regs, b.regs, "registers");
    assert_eq!(a.eip, b.eip, "eip");
    assert_eq!(a.eflags(), b.eflags(), "eflags");
}

#[test]
fn hot_loop_is_translated_and_agrees() {
    // sum of i*i for i in 1..=1000 with memory traffic and a call:
    //   mov ecx, 1000; xor eax, eax; mov esi, 0x20000
    // l: mov edx, ecx; imul edx, ecx; call f; add eax, edx; mov [esi], eax
    //    add esi, 4; dec ecx; jnz l; int3
    // f: push ebx; mov ebx, edx; shr ebx, 3; xor edx, ebx; pop ebx; ret
    let code = [
        0xb9, 0xe8, 0x03, 0, 0, 0x31, 0xc0, 0xbe, 0, 0, 2, 0, // 12
        0x89, 0xca, 0x0f, 0xaf, 0xd1, 0xe8, 0x0b, 0, 0, 0, // 22
        0x01, 0xd0, 0x89, 0x06, 0x83, 0xc6, 0x04, 0x49, 0x75, 0xec, 0xcc, // 33
        0x53, 0x89, 0xd3, 0xc1, 0xeb, 0x03, 0x31, 0xda, 0x5b, 0xc3,
    ];
    let (a, b, stats) = both(&code, |_, _| {});
    same(&a, &b);
    assert_eq!(a.regs[ECX], 0);
    assert!(
        stats.translated >= 2,
        "blocks translated: {}",
        stats.translated
    );
    assert!(
        stats.interp_insns < 2000,
        "interpreted: {}",
        stats.interp_insns
    );
}

#[test]
fn flags_conditions_agree() {
    // For many (a, b): cmp a, b and setcc for every condition, stored to
    // memory; then the byte/word forms and inc/dec/neg/shifts.
    let mut code = vec![
        0xbe, 0, 0, 3, 0, // mov esi, 0x30000 (pairs of dwords)
        0xbf, 0, 0, 4, 0, // mov edi, 0x40000 (results)
        0xb9, 64, 0, 0, 0, // mov ecx, 64
    ];
    let top = code.len();
    code.extend([0x8b, 0x06, 0x8b, 0x5e, 0x04]); // mov eax,[esi]; mov ebx,[esi+4]
    for cc in 0..16u8 {
        code.extend([0x39, 0xd8, 0x0f, 0x90 + cc, 0x07, 0x47]); // cmp eax,ebx; setcc [edi]; inc edi
    }
    for cc in 0..16u8 {
        code.extend([0x38, 0xd8, 0x0f, 0x90 + cc, 0x07, 0x47]); // cmp al,bl; setcc [edi]; inc edi
    }
    for cc in 0..16u8 {
        code.extend([0x85, 0xd8, 0x0f, 0x90 + cc, 0x07, 0x47]); // test eax,ebx
    }
    for cc in 0..16u8 {
        code.extend([0x89, 0xc2, 0x01, 0xda, 0x0f, 0x90 + cc, 0x07, 0x47]); // mov edx,eax; add edx,ebx
    }
    for cc in 0..16u8 {
        code.extend([0x89, 0xc2, 0x4a, 0x0f, 0x90 + cc, 0x07, 0x47]); // mov edx,eax; dec edx
    }
    code.extend([0x89, 0xc2, 0xc1, 0xfa, 0x03, 0x89, 0x17, 0x83, 0xc7, 0x04]); // sar edx,3; store
    code.extend([0x89, 0xc2, 0xf7, 0xda, 0x9c, 0x8f, 0x07, 0x83, 0xc7, 0x04]); // neg edx; pushfd; pop [edi]
    code.extend([0x83, 0xc6, 0x08, 0x49]); // add esi,8; dec ecx
    let back = top as i32 - (code.len() as i32 + 6);
    code.extend([0x0f, 0x85]);
    code.extend(back.to_le_bytes());
    code.push(0xcc);
    let vals: [u32; 8] = [
        0,
        1,
        0x7f,
        0x80,
        0xffff_ffff,
        0x8000_0000,
        0x7fff_ffff,
        0x1234_5678,
    ];
    let (a, b, stats) = both(&code, |_, mem| {
        let mut x = 0x9e37_79b9u32;
        for i in 0..128u32 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let v = if i % 3 == 0 {
                vals[(x % 8) as usize]
            } else {
                x
            };
            mem.slice(0x30000 + i * 4, 4)
                .copy_from_slice(&v.to_le_bytes());
        }
    });
    same(&a, &b);
    assert!(stats.translated >= 1);
    let _ = (EAX, EBX, ECX, EDX, ESI);
}

#[test]
fn x87_in_a_hot_loop_agrees() {
    // The x87 instructions go through the interpreter helper inside
    // translated blocks; FCOMI's flags feed a JBE, FISTP's result an ADD.
    //      mov ecx, 300; mov esi, 0x20000; xor ebx, ebx; fld1
    //   l: mov [esi], ecx; fild dword [esi]; fsqrt; faddp st1, st0
    //      fild dword [esi]; fcomi st0, st1; jbe s; fchs
    //   s: fistp dword [esi+4]; add ebx, [esi+4]; dec ecx; jnz l
    //      fstp qword [esi+8]; fwait; fnstsw ax; int3
    let code = [
        0xb9, 0x2c, 0x01, 0, 0, 0xbe, 0, 0, 2, 0, 0x31, 0xdb, 0xd9, 0xe8, // 0x0e
        0x89, 0x0e, 0xdb, 0x06, 0xd9, 0xfa, 0xde, 0xc1, 0xdb, 0x06, // 0x18
        0xdb, 0xf1, 0x76, 0x02, 0xd9, 0xe0, // 0x1e
        0xdb, 0x5e, 0x04, 0x03, 0x5e, 0x04, 0x49, 0x75, 0xe7, // 0x27
        0xdd, 0x5e, 0x08, 0x9b, 0xdf, 0xe0, 0xcc,
    ];
    let (a, b, stats) = both(&code, |_, _| {});
    same(&a, &b);
    assert_eq!(a.fpu, b.fpu, "x87 state");
    assert_eq!(a.regs[ECX], 0);
    assert_eq!(a.fpu.tag_word(), 0xffff, "stack balanced");
    assert!(
        stats.translated >= 1,
        "blocks translated: {}",
        stats.translated
    );
}
