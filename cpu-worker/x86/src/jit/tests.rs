//! Engine tests: the same guest code run by the interpreter alone and by
//! the engine with translation must end in the same state.

use super::*;
use crate::mem::MemFault;
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
        e.hot_threshold = 32;
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
    assert_eq!(a.xmm, b.xmm, "xmm");
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
fn long_rep_movsb_ends_its_block() {
    // A REP MOVSB longer than one slice of the interpreter, then an
    // instruction after it in the same block: the copy must complete.
    //   l: mov esi,0x100000; mov edi,0x200000; mov ecx,0x30000; rep movsb
    //      inc ebx; cmp ebx,40; jne l; int3
    let code = [
        0xbe, 0, 0, 0x10, 0, 0xbf, 0, 0, 0x20, 0, 0xb9, 0, 0, 3, 0, 0xf3, 0xa4, 0x43, 0x83, 0xfb,
        40, 0x75, 0xe9, 0xcc,
    ];
    let (a, b, _) = both(&code, |_, mem| {
        for (i, x) in mem.slice(0x100000, 0x30000).iter_mut().enumerate() {
            *x = (i * 7 + 3) as u8;
        }
    });
    same(&a, &b);
    assert_eq!(b.regs[ECX], 0);
    assert_eq!(b.regs[crate::state::EDI], 0x230000);
}

#[test]
fn sse_integer_lowering_agrees() {
    // A loop over 4 KiB at 0x30000: for each 16 bytes, every lowered SSE
    // form once; results and masks stored at 0x40000+.
    let body: &[u8] = &[
        0x66, 0x0f, 0x6f, 0x06, // movdqa xmm0,[esi]
        0xf3, 0x0f, 0x6f, 0x4e, 0x01, // movdqu xmm1,[esi+1]
        0x66, 0x0f, 0x74, 0xd1, // pcmpeqb xmm2,xmm1 (xmm2 running)
        0x66, 0x0f, 0xd7, 0xc2, // pmovmskb eax,xmm2
        0x89, 0x07, // mov [edi],eax
        0x66, 0x0f, 0xef, 0xd8, // pxor xmm3,xmm0
        0x66, 0x0f, 0xda, 0xe0, // pminub xmm4,xmm0
        0x66, 0x0f, 0xde, 0xe9, // pmaxub xmm5,xmm1
        0x66, 0x0f, 0x64, 0xf0, // pcmpgtb xmm6,xmm0
        0x66, 0x0f, 0xf8, 0xf9, // psubb xmm7,xmm1
        0x66, 0x0f, 0xfe, 0x7e, 0x10, // paddd xmm7,[esi+16]  (aligned)
        0x66, 0x0f, 0x75, 0xc1, // pcmpeqw xmm0,xmm1
        0x66, 0x0f, 0x76, 0xc9, // pcmpeqd xmm1,xmm1
        0x66, 0x0f, 0xdf, 0xd8, // pandn xmm3,xmm0
        0x66, 0x0f, 0xdb, 0xe3, // pand xmm4,xmm3
        0x66, 0x0f, 0xeb, 0xec, // por xmm5,xmm4
        0x66, 0x0f, 0x7e, 0xe8, // movd eax,xmm5
        0x89, 0x47, 0x04, // mov [edi+4],eax
        0x66, 0x0f, 0x6e, 0xc3, // movd xmm0,ebx
        0xf3, 0x0f, 0x7e, 0x4e, 0x08, // movq xmm1,[esi+8]
        0x66, 0x0f, 0xd6, 0x4f, 0x08, // movq [edi+8],xmm1
        0x0f, 0x29, 0x6f, 0x10, // movaps [edi+16],xmm5
        0x0f, 0x11, 0x77, 0x21, // movups [edi+33],xmm6
        0x43, // inc ebx
        0x83, 0xc6, 0x10, // add esi,16
        0x83, 0xc7, 0x40, // add edi,64
        0x49, // dec ecx
    ];
    let mut code = vec![0xbe, 0, 0, 3, 0, 0xbf, 0, 0, 4, 0, 0xb9, 250, 0, 0, 0];
    let top = code.len();
    code.extend_from_slice(body);
    let back = top as i32 - (code.len() as i32 + 6);
    code.extend([0x0f, 0x85]);
    code.extend(back.to_le_bytes());
    code.push(0xcc);
    let (a, b, stats) = both(&code, |_, mem| {
        let mut x = 0x1234_5677u32;
        for v in mem.slice(0x30000, 0x1100).iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *v = if x % 5 == 0 { 0 } else { x as u8 };
        }
    });
    same(&a, &b);
    assert!(stats.translated >= 1);
}

#[test]
fn misaligned_movdqa_faults_in_translated_code() {
    // Hot loop of aligned loads, then one misaligned: #GP from the JIT too.
    //   l: movdqa xmm0,[esi]; add esi,16; dec ecx; jnz l; inc esi;
    //      movdqa xmm0,[esi]; int3
    let code = [
        0xbe, 0, 0, 3, 0, 0xb9, 200, 0, 0, 0, 0x66, 0x0f, 0x6f, 0x06, 0x83, 0xc6, 0x10, 0x49, 0x75,
        0xf6, 0x46, 0x66, 0x0f, 0x6f, 0x06, 0xcc,
    ];
    for jit in [false, true] {
        let mut mem = Space::new();
        mem.slice(0x1000, code.len()).copy_from_slice(&code);
        let mut cpu = CpuState {
            eip: 0x1000,
            ..CpuState::default()
        };
        cpu.regs[ESP] = 0x80000;
        let mut e = Engine::new();
        e.interpret_only = !jit;
        e.hot_threshold = 1;
        let r = e.run(&mut cpu, &mut mem, &mut NoEnv);
        assert_eq!(
            r,
            Stop::Exception(Exception::GeneralProtection(0)),
            "jit {jit}"
        );
        assert_eq!(cpu.eip, 0x1000 + 21, "jit {jit}");
    }
}

#[test]
fn cl_shifts_bt_and_half_moves_agree() {
    //   mov esi,0x30000; mov edi,0x40000; mov ecx,200
    // l: mov eax,[esi]; mov edx,eax; push ecx; mov ecx,[esi+4]
    //    shl eax,cl; shr edx,cl; sar dword [esi+8],cl; pop ecx
    //    add eax,edx; bt eax,7; jnc s; inc ebx
    // s: bt edx,ecx; adc ebx,0; std; cld
    //    movlpd xmm0,[esi]; movhpd xmm0,[esi+8]; movhps [edi+8],xmm0
    //    movlps [edi],xmm0; mov [edi+16],eax; add esi,12; add edi,32
    //    dec ecx; jnz l; int3
    let mut code = vec![0xbe, 0, 0, 3, 0, 0xbf, 0, 0, 4, 0, 0xb9, 200, 0, 0, 0];
    let top = code.len();
    code.extend([
        0x8b, 0x06, 0x89, 0xc2, 0x51, 0x8b, 0x4e, 0x04, 0xd3, 0xe0, 0xd3, 0xea, 0xd3, 0x7e, 0x08,
        0x59, 0x01, 0xd0, 0x0f, 0xba, 0xe0, 0x07, 0x73, 0x01, 0x43,
    ]);
    code.extend([0x0f, 0xa3, 0xca, 0x83, 0xd3, 0x00, 0xfd, 0xfc]);
    code.extend([
        0x66, 0x0f, 0x12, 0x06, 0x66, 0x0f, 0x16, 0x46, 0x08, 0x0f, 0x17, 0x47, 0x08, 0x0f, 0x13,
        0x07, 0x89, 0x47, 0x10, 0x83, 0xc6, 0x0c, 0x83, 0xc7, 0x20, 0x49,
    ]);
    let back = top as i32 - (code.len() as i32 + 6);
    code.extend([0x0f, 0x85]);
    code.extend(back.to_le_bytes());
    code.push(0xcc);
    let (a, b, stats) = both(&code, |_, mem| {
        let mut x = 0x0bad_cafeu32;
        for v in mem.slice(0x30000, 0x1000).iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *v = x as u8;
        }
    });
    same(&a, &b);
    assert!(stats.translated >= 1);
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
