//! Tests of the MMX/SSE/SSE2/SSE3/SSSE3 interpreter against the host
//! processor (STYLE.md rule 11): every instruction is run through
//! `interp::decode`/`step` and natively, with the same bytes, on the same
//! deterministic pseudo-random inputs (edge values: signed zeros,
//! denormals, infinities, QNaN/SNaN, integer extremes), under all
//! rounding modes with FTZ/DAZ on and off, first with all exceptions
//! masked, then with random masks, where an unmasked exception makes the
//! host trap (SIGFPE, observed by a handler that skips the instruction)
//! and the interpreter must return #XM with the same MXCSR and an
//! unchanged destination. Registers, memory, MXCSR and the arithmetic
//! flags must match bit for bit.
//!
//! The encodings are those of 32-bit code; without a REX prefix they mean
//! the same in 64-bit code, with `[eax]`/`[edi]` becoming `[rax]`/`[rdi]`,
//! which point to the host copy of the guest's data.

use std::arch::asm;
use std::cell::Cell;
use std::sync::Once;

use crate::interp::{decode, step, Env};
use crate::mem::{Exception, FlatMemory};
use crate::state::{CpuState, ARITH_FLAGS, EAX, EDI};

const GUEST_CODE: u32 = 0x1000;
const GUEST_DATA: u32 = 0x2000;
const DATA_LEN: usize = 64;

struct NoEnv;
impl Env for NoEnv {
    fn rdtsc(&mut self) -> u64 {
        0
    }
    fn load_segment(&mut self, _: usize, _: u16) -> Result<(u32, u32), Exception> {
        Err(Exception::GeneralProtection(0))
    }
}

/// The state an instruction sees and changes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Machine {
    xmm: [[u8; 16]; 8],
    mm: [u64; 8],
    /// EAX..EDI; ESP and EBP stay 0 (the host needs its own).
    gpr: [u32; 8],
    mxcsr: u32,
    /// The six arithmetic flags.
    eflags: u32,
    data: [u8; DATA_LEN],
}

fn is_ptr(v: u32) -> bool {
    (GUEST_DATA..GUEST_DATA + DATA_LEN as u32).contains(&v)
}

/// Runs `code` (one instruction) in the interpreter.
fn run_interp(code: &[u8], m: &Machine) -> (Machine, Result<(), Exception>) {
    let mut mem = FlatMemory::new(0x3000);
    mem.bytes[GUEST_CODE as usize..GUEST_CODE as usize + code.len()].copy_from_slice(code);
    mem.bytes[GUEST_DATA as usize..GUEST_DATA as usize + DATA_LEN].copy_from_slice(&m.data);
    let mut cpu = CpuState {
        eip: GUEST_CODE,
        ..CpuState::default()
    };
    cpu.xmm = m.xmm;
    for (i, &v) in m.mm.iter().enumerate() {
        cpu.set_mmx(i, v);
    }
    cpu.regs = m.gpr;
    cpu.mxcsr = m.mxcsr;
    cpu.set_eflags(m.eflags, ARITH_FLAGS);
    let r = decode(&cpu, &mut mem).and_then(|i| {
        assert_eq!(i.len(), code.len(), "decoded length of {code:02x?}");
        step(&mut cpu, &mut mem, &mut NoEnv, &i)
    });
    let expect_eip = if r.is_ok() {
        GUEST_CODE + code.len() as u32
    } else {
        GUEST_CODE
    };
    assert_eq!(cpu.eip, expect_eip, "EIP after {code:02x?} ({r:?})");
    let mut out = m.clone();
    out.xmm = cpu.xmm;
    for (i, v) in out.mm.iter_mut().enumerate() {
        *v = cpu.mmx(i);
    }
    out.gpr = cpu.regs;
    out.mxcsr = cpu.mxcsr;
    out.eflags = cpu.eflags() & ARITH_FLAGS;
    out.data
        .copy_from_slice(&mem.bytes[GUEST_DATA as usize..GUEST_DATA as usize + DATA_LEN]);
    (out, r)
}

/// What the host block reads and writes; offsets are used in `asm!`.
#[repr(C, align(64))]
struct HostCtx {
    xmm: [[u8; 16]; 8],
    mm: [u64; 8],
    /// rax rcx rdx rbx rsp rbp rsi rdi (rsp and rbp unused).
    gpr: [u64; 8],
    mxcsr: u32,
    host_mxcsr: u32,
    rflags: u64,
}

#[repr(C, align(64))]
struct HostData([u8; DATA_LEN]);

/// r14 holds this while the tested instruction runs; the SIGFPE handler
/// recognises it.
const MAGIC: u64 = 0x5ee5_7e57_0000_0001;

extern "C" fn on_sigfpe(_sig: libc::c_int, _info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid, exclusive ucontext_t to an
    // SA_SIGINFO handler for the duration of the call.
    let uc = unsafe { &mut *(uc as *mut libc::ucontext_t) };
    let g = &mut uc.uc_mcontext.gregs;
    if g[libc::REG_R14 as usize] == MAGIC as i64 {
        // Resume at the `ret` after the instruction (r15), leaving the
        // MXCSR as the fault left it; r14 tells the test it trapped.
        g[libc::REG_RIP as usize] = g[libc::REG_R15 as usize];
        g[libc::REG_R14 as usize] = 0;
    } else {
        // Not ours: die as the default action would.
        // SAFETY: resetting the disposition of SIGFPE is async-signal-safe.
        unsafe {
            libc::signal(libc::SIGFPE, libc::SIG_DFL);
        }
    }
}

fn install_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction is a valid starting point; the handler
        // is an extern "C" fn with the SA_SIGINFO signature.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigfpe as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGFPE, &sa, std::ptr::null_mut()), 0);
        }
    });
}

thread_local! {
    static CODE_PAGE: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

/// An executable page of this thread for the tested instruction.
fn code_page() -> *mut u8 {
    CODE_PAGE.with(|c| {
        if c.get().is_null() {
            // SAFETY: an anonymous private mapping; checked for failure.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED, "mmap of an executable page");
            c.set(p as *mut u8);
        }
        c.get()
    })
}

/// Runs `code` natively; returns the state after it and whether it trapped
/// with #XM.
fn run_host(code: &[u8], m: &Machine) -> (Machine, bool) {
    install_handler();
    let page = code_page();
    // SAFETY: the page is 4096 bytes, ours, and the code is < 16 bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(code.as_ptr(), page, code.len());
        *page.add(code.len()) = 0xc3; // ret
    }
    let mut data = HostData(m.data);
    let base = data.0.as_mut_ptr() as u64;
    let to_host = |v: u32| {
        if is_ptr(v) {
            base + (v - GUEST_DATA) as u64
        } else {
            v as u64
        }
    };
    let mut ctx = HostCtx {
        xmm: m.xmm,
        mm: m.mm,
        gpr: [0; 8],
        mxcsr: m.mxcsr,
        host_mxcsr: 0,
        rflags: 0x202 | m.eflags as u64,
    };
    for i in 0..8 {
        ctx.gpr[i] = to_host(m.gpr[i]);
    }
    let ctx_ptr = &mut ctx as *mut HostCtx;
    let resume = page as u64 + code.len() as u64;
    let trap: u64;
    // SAFETY: loads the test state into the registers, calls the page
    // (the instruction and a `ret`), stores the registers back and
    // restores MXCSR, rbx and rbp. The instruction's memory operands point
    // into `data`; every register it can change is declared clobbered
    // (rbx/rbp saved by hand); EMMS leaves the x87 stack empty.
    unsafe {
        asm!(
            "push rbx",
            "push rbp",
            "movdqu xmm0, [r12]",
            "movdqu xmm1, [r12 + 16]",
            "movdqu xmm2, [r12 + 32]",
            "movdqu xmm3, [r12 + 48]",
            "movdqu xmm4, [r12 + 64]",
            "movdqu xmm5, [r12 + 80]",
            "movdqu xmm6, [r12 + 96]",
            "movdqu xmm7, [r12 + 112]",
            "movq mm0, [r12 + 128]",
            "movq mm1, [r12 + 136]",
            "movq mm2, [r12 + 144]",
            "movq mm3, [r12 + 152]",
            "movq mm4, [r12 + 160]",
            "movq mm5, [r12 + 168]",
            "movq mm6, [r12 + 176]",
            "movq mm7, [r12 + 184]",
            "stmxcsr [r12 + 260]",
            "ldmxcsr [r12 + 256]",
            "push qword ptr [r12 + 264]",
            "popfq",
            "mov rax, [r12 + 192]",
            "mov rcx, [r12 + 200]",
            "mov rdx, [r12 + 208]",
            "mov rbx, [r12 + 216]",
            "mov rsi, [r12 + 240]",
            "mov rdi, [r12 + 248]",
            "call r13",
            "pushfq",
            "pop qword ptr [r12 + 264]",
            "mov [r12 + 192], rax",
            "mov [r12 + 200], rcx",
            "mov [r12 + 208], rdx",
            "mov [r12 + 216], rbx",
            "mov [r12 + 240], rsi",
            "mov [r12 + 248], rdi",
            "stmxcsr [r12 + 256]",
            "ldmxcsr [r12 + 260]",
            "movdqu [r12], xmm0",
            "movdqu [r12 + 16], xmm1",
            "movdqu [r12 + 32], xmm2",
            "movdqu [r12 + 48], xmm3",
            "movdqu [r12 + 64], xmm4",
            "movdqu [r12 + 80], xmm5",
            "movdqu [r12 + 96], xmm6",
            "movdqu [r12 + 112], xmm7",
            "movq [r12 + 128], mm0",
            "movq [r12 + 136], mm1",
            "movq [r12 + 144], mm2",
            "movq [r12 + 152], mm3",
            "movq [r12 + 160], mm4",
            "movq [r12 + 168], mm5",
            "movq [r12 + 176], mm6",
            "movq [r12 + 184], mm7",
            "emms",
            "pop rbp",
            "pop rbx",
            in("r12") ctx_ptr,
            in("r13") page,
            inout("r14") MAGIC => trap,
            in("r15") resume,
            out("rax") _, out("rcx") _, out("rdx") _, out("rsi") _, out("rdi") _,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
            out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
            out("mm0") _, out("mm1") _, out("mm2") _, out("mm3") _,
            out("mm4") _, out("mm5") _, out("mm6") _, out("mm7") _,
        );
    }
    let from_host = |h: u64| {
        if (base..base + DATA_LEN as u64).contains(&h) {
            GUEST_DATA + (h - base) as u32
        } else {
            h as u32
        }
    };
    let mut out = m.clone();
    out.xmm = ctx.xmm;
    out.mm = ctx.mm;
    for i in 0..8 {
        out.gpr[i] = from_host(ctx.gpr[i]);
    }
    out.gpr[4] = m.gpr[4];
    out.gpr[5] = m.gpr[5];
    out.mxcsr = ctx.mxcsr;
    out.eflags = ctx.rflags as u32 & ARITH_FLAGS;
    out.data = data.0;
    (out, trap == 0)
}

/// xorshift64*: deterministic inputs.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len() as u64) as usize]
    }
}

const F32_EDGE: [u32; 28] = [
    0,
    0x8000_0000,
    0x3f80_0000,
    0xbf80_0000,
    1,
    0x8000_0001,
    0x007f_ffff,
    0x0040_0000,
    0x0080_0000,
    0x8080_0000,
    0x7f7f_ffff,
    0xff7f_ffff,
    0x7f80_0000,
    0xff80_0000,
    0x7fc0_0000,
    0xffc0_0000,
    0x7fa0_0000,
    0x7f80_0001,
    0xffbf_ffff,
    0x4f00_0000,
    0xcf00_0000,
    0x4eff_ffff,
    0xcf00_0001,
    0x3f00_0000,
    0x4040_0000,
    0x3eaa_aaab,
    0x0080_0001,
    0x3f80_0001,
];

const F64_EDGE: [u64; 26] = [
    0,
    0x8000_0000_0000_0000,
    0x3ff0_0000_0000_0000,
    0xbff0_0000_0000_0000,
    1,
    0x8000_0000_0000_0001,
    0x000f_ffff_ffff_ffff,
    0x0010_0000_0000_0000,
    0x8010_0000_0000_0000,
    0x7fef_ffff_ffff_ffff,
    0xffef_ffff_ffff_ffff,
    0x7ff0_0000_0000_0000,
    0xfff0_0000_0000_0000,
    0x7ff8_0000_0000_0000,
    0xfff8_0000_0000_0000,
    0x7ff4_0000_0000_0000,
    0x7ff0_0000_0000_0001,
    0x41e0_0000_0000_0000,
    0xc1e0_0000_0000_0000,
    0x41df_ffff_ffc0_0000,
    0xc1e0_0000_0020_0000,
    0x3fe0_0000_0000_0000,
    0x47ef_ffff_e000_0000,
    0x3810_0000_0000_0000,
    0x36a0_0000_0000_0000,
    0x3ff0_0000_0000_0001,
];

/// What the inputs of an instruction look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    F32,
    F64,
    Int,
    /// Integers, with small shift counts in register 1 and memory.
    Count,
}

fn f32_el(r: &mut Rng) -> u32 {
    match r.below(4) {
        0 => r.pick(&F32_EDGE),
        1 => r.next() as u32,
        // Moderate magnitudes: mostly exact or inexact arithmetic.
        2 => ((r.next() as u32) & 0x807f_ffff) | ((127 - 30 + r.below(60) as u32) << 23),
        // Near the bottom: underflow and denormals.
        _ => ((r.next() as u32) & 0x807f_ffff) | ((r.below(40) as u32) << 23),
    }
}

fn f64_el(r: &mut Rng) -> u64 {
    match r.below(4) {
        0 => r.pick(&F64_EDGE),
        1 => r.next(),
        2 => (r.next() & 0x800f_ffff_ffff_ffff) | ((1023 - 60 + r.below(120)) << 52),
        // Near the float range limits (for conversions to float).
        _ => {
            let e = r.pick(&[1023 - 126, 1023 - 149, 1023 + 127, 1023 - 140, 1, 2]);
            (r.next() & 0x800f_ffff_ffff_ffff) | ((e + r.below(3)) << 52)
        }
    }
}

fn int_bytes(r: &mut Rng, out: &mut [u8]) {
    for c in out.chunks_mut(2) {
        let v: u16 = match r.below(3) {
            0 => r.pick(&[
                0, 1, 0x7f, 0x80, 0xff, 0x7fff, 0x8000, 0xffff, 0x0080, 0xff7f,
            ]),
            _ => r.next() as u16,
        };
        c.copy_from_slice(&v.to_le_bytes()[..c.len()]);
    }
}

fn fill(r: &mut Rng, kind: Kind, out: &mut [u8]) {
    match kind {
        Kind::F32 => {
            for c in out.chunks_mut(4) {
                c.copy_from_slice(&f32_el(r).to_le_bytes());
            }
        }
        Kind::F64 => {
            for c in out.chunks_mut(8) {
                c.copy_from_slice(&f64_el(r).to_le_bytes());
            }
        }
        Kind::Int | Kind::Count => int_bytes(r, out),
    }
}

fn gpr_value(r: &mut Rng, kind: Kind) -> u32 {
    let v = match r.below(3) {
        0 => r.pick(&[0, 1, u32::MAX, 0x7fff_ffff, 0x8000_0000, 0xffff, 0x8000, 3]),
        1 if kind == Kind::F32 || kind == Kind::F64 => f32_el(r),
        _ => r.next() as u32,
    };
    if is_ptr(v) {
        v ^ 0x8000_0000
    } else {
        v
    }
}

/// A random machine state; EAX and EDI point at `GUEST_DATA + offset`.
fn machine(r: &mut Rng, kind: Kind, offset: u32, masks: bool) -> Machine {
    let mut m = Machine {
        xmm: [[0; 16]; 8],
        mm: [0; 8],
        gpr: [0; 8],
        mxcsr: 0,
        eflags: (r.next() as u32) & ARITH_FLAGS,
        data: [0; DATA_LEN],
    };
    for x in m.xmm.iter_mut() {
        fill(r, kind, x);
    }
    for v in m.mm.iter_mut() {
        let mut b = [0u8; 8];
        fill(r, kind, &mut b);
        *v = u64::from_le_bytes(b);
    }
    fill(r, kind, &mut m.data);
    for (i, g) in m.gpr.iter_mut().enumerate() {
        *g = if i == 4 || i == 5 {
            0
        } else {
            gpr_value(r, kind)
        };
    }
    m.gpr[EAX] = GUEST_DATA + offset;
    m.gpr[EDI] = GUEST_DATA + offset;
    if kind == Kind::Count && r.below(4) != 0 {
        let limit = if r.below(2) == 0 { 17 } else { 70 };
        let c = r.below(limit);
        m.xmm[1][..8].copy_from_slice(&c.to_le_bytes());
        m.xmm[1][8..].copy_from_slice(&(r.below(2) << 40).to_le_bytes());
        m.mm[1] = c;
        let o = offset as usize;
        m.data[o..o + 8].copy_from_slice(&c.to_le_bytes());
    }
    let rc = (r.below(4) as u32) << 13;
    let ftz = if r.below(2) == 0 { 0x8000 } else { 0 };
    let daz = if r.below(2) == 0 { 0x40 } else { 0 };
    let flags = if r.below(2) == 0 {
        0
    } else {
        r.below(64) as u32
    };
    let mask = if masks {
        0x1f80
    } else {
        (r.below(64) as u32) << 7
    };
    m.mxcsr = rc | ftz | daz | flags | mask;
    m
}

/// Which operand forms an opcode is tested in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// `op reg0, reg1` and `op reg1, [eax]`.
    Both,
    RegOnly,
    MemOnly,
    /// Memory form at any alignment (MOVUPS, MOVDQU, LDDQU, scalar and
    /// 64-bit operands).
    BothUnaligned,
    MemUnaligned,
    /// Shift-by-immediate groups: ModRM reg field is the extension.
    Ext(u8),
}

/// One opcode (prefixes, 0F, opcode bytes) to test.
struct Op {
    name: &'static str,
    bytes: &'static [u8],
    form: Form,
    kind: Kind,
    /// Immediates to try; empty for none. A random one is added.
    imm: &'static [u8],
}

const fn op(name: &'static str, bytes: &'static [u8], form: Form, kind: Kind) -> Op {
    Op {
        name,
        bytes,
        form,
        kind,
        imm: &[],
    }
}

const fn opi(
    name: &'static str,
    bytes: &'static [u8],
    form: Form,
    kind: Kind,
    imm: &'static [u8],
) -> Op {
    Op {
        name,
        bytes,
        form,
        kind,
        imm,
    }
}

const ANY_IMM: &[u8] = &[0, 1, 0x1b, 0x4e, 0xe4, 0xff];
const CMP_IMM: &[u8] = &[0, 1, 2, 3, 4, 5, 6, 7];
const SHIFT_IMM: &[u8] = &[0, 1, 7, 8, 15, 16, 31, 32, 63, 64, 200];

/// The encodings of `o` to try with immediate `imm` and memory `offset`.
fn encodings(o: &Op, imm: Option<u8>, offset: &mut u32, r: &mut Rng) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let enc = |modrm: u8| {
        let mut v = o.bytes.to_vec();
        v.push(modrm);
        if let Some(i) = imm {
            v.push(i);
        }
        v
    };
    match o.form {
        Form::Both | Form::BothUnaligned => {
            out.push(enc(0xc1));
            out.push(enc(0x08));
        }
        Form::RegOnly => out.push(enc(0xc1)),
        Form::MemOnly | Form::MemUnaligned => out.push(enc(0x08)),
        Form::Ext(e) => out.push(enc(0xc0 | (e << 3))),
    }
    *offset = if matches!(o.form, Form::BothUnaligned | Form::MemUnaligned) {
        r.below(17) as u32
    } else {
        16 * r.below(3) as u32
    };
    out
}

/// Runs `code` both ways on `m` and compares; returns whether it trapped.
fn compare(name: &str, code: &[u8], m: &Machine) -> bool {
    let (mi, ri) = run_interp(code, m);
    let (mh, trapped) = run_host(code, m);
    let ctx = || format!("{name} {code:02x?}\ninput: {m:x?}");
    if trapped {
        assert_eq!(ri, Err(Exception::SimdFpError), "host trapped: {}", ctx());
    } else {
        assert_eq!(ri, Ok(()), "{}", ctx());
    }
    if mi != mh {
        let diff = |f: &str, a: String, b: String| {
            if a != b {
                format!("  {f}: interp {a}\n  {f}: host   {b}\n")
            } else {
                String::new()
            }
        };
        let mut d = String::new();
        for i in 0..8 {
            d += &diff(
                &format!("xmm{i}"),
                format!("{:02x?}", mi.xmm[i]),
                format!("{:02x?}", mh.xmm[i]),
            );
            d += &diff(
                &format!("mm{i}"),
                format!("{:016x}", mi.mm[i]),
                format!("{:016x}", mh.mm[i]),
            );
            d += &diff(
                &format!("gpr{i}"),
                format!("{:08x}", mi.gpr[i]),
                format!("{:08x}", mh.gpr[i]),
            );
        }
        d += &diff(
            "mxcsr",
            format!("{:04x}", mi.mxcsr),
            format!("{:04x}", mh.mxcsr),
        );
        d += &diff(
            "eflags",
            format!("{:03x}", mi.eflags),
            format!("{:03x}", mh.eflags),
        );
        d += &diff(
            "data",
            format!("{:02x?}", mi.data),
            format!("{:02x?}", mh.data),
        );
        panic!("mismatch ({ri:?}, trapped {trapped}): {}\n{d}", ctx());
    }
    trapped
}

/// Runs every encoding of every op `iters` times with masked exceptions
/// and, for floating-point kinds, `iters` times with random masks.
/// Returns (runs, runs that trapped with #XM).
fn check_ops(ops: &[Op], seed: u64, iters: usize) -> (usize, usize) {
    let mut r = Rng(seed);
    let (mut runs, mut traps) = (0, 0);
    for o in ops {
        let fp = matches!(o.kind, Kind::F32 | Kind::F64);
        for round in 0..iters * if fp { 2 } else { 1 } {
            let imm = if o.imm.is_empty() {
                None
            } else if round < o.imm.len() {
                Some(o.imm[round])
            } else {
                Some(r.next() as u8)
            };
            let mut offset = 0;
            for code in encodings(o, imm, &mut offset, &mut r) {
                let m = machine(&mut r, o.kind, offset, round < iters);
                runs += 1;
                traps += compare(o.name, &code, &m) as usize;
            }
        }
    }
    (runs, traps)
}

use Form::*;
use Kind::*;

const FP_ARITH: &[Op] = &[
    op("addps", &[0x0f, 0x58], Both, F32),
    op("addss", &[0xf3, 0x0f, 0x58], BothUnaligned, F32),
    op("addpd", &[0x66, 0x0f, 0x58], Both, F64),
    op("addsd", &[0xf2, 0x0f, 0x58], BothUnaligned, F64),
    op("mulps", &[0x0f, 0x59], Both, F32),
    op("mulss", &[0xf3, 0x0f, 0x59], BothUnaligned, F32),
    op("mulpd", &[0x66, 0x0f, 0x59], Both, F64),
    op("mulsd", &[0xf2, 0x0f, 0x59], BothUnaligned, F64),
    op("subps", &[0x0f, 0x5c], Both, F32),
    op("subss", &[0xf3, 0x0f, 0x5c], BothUnaligned, F32),
    op("subpd", &[0x66, 0x0f, 0x5c], Both, F64),
    op("subsd", &[0xf2, 0x0f, 0x5c], BothUnaligned, F64),
    op("minps", &[0x0f, 0x5d], Both, F32),
    op("minss", &[0xf3, 0x0f, 0x5d], BothUnaligned, F32),
    op("minpd", &[0x66, 0x0f, 0x5d], Both, F64),
    op("minsd", &[0xf2, 0x0f, 0x5d], BothUnaligned, F64),
    op("divps", &[0x0f, 0x5e], Both, F32),
    op("divss", &[0xf3, 0x0f, 0x5e], BothUnaligned, F32),
    op("divpd", &[0x66, 0x0f, 0x5e], Both, F64),
    op("divsd", &[0xf2, 0x0f, 0x5e], BothUnaligned, F64),
    op("maxps", &[0x0f, 0x5f], Both, F32),
    op("maxss", &[0xf3, 0x0f, 0x5f], BothUnaligned, F32),
    op("maxpd", &[0x66, 0x0f, 0x5f], Both, F64),
    op("maxsd", &[0xf2, 0x0f, 0x5f], BothUnaligned, F64),
    op("sqrtps", &[0x0f, 0x51], Both, F32),
    op("sqrtss", &[0xf3, 0x0f, 0x51], BothUnaligned, F32),
    op("sqrtpd", &[0x66, 0x0f, 0x51], Both, F64),
    op("sqrtsd", &[0xf2, 0x0f, 0x51], BothUnaligned, F64),
    op("rsqrtps", &[0x0f, 0x52], Both, F32),
    op("rsqrtss", &[0xf3, 0x0f, 0x52], BothUnaligned, F32),
    op("rcpps", &[0x0f, 0x53], Both, F32),
    op("rcpss", &[0xf3, 0x0f, 0x53], BothUnaligned, F32),
    op("addsubpd", &[0x66, 0x0f, 0xd0], Both, F64),
    op("addsubps", &[0xf2, 0x0f, 0xd0], Both, F32),
    op("haddpd", &[0x66, 0x0f, 0x7c], Both, F64),
    op("haddps", &[0xf2, 0x0f, 0x7c], Both, F32),
    op("hsubpd", &[0x66, 0x0f, 0x7d], Both, F64),
    op("hsubps", &[0xf2, 0x0f, 0x7d], Both, F32),
    opi("cmpps", &[0x0f, 0xc2], Both, F32, CMP_IMM),
    opi("cmpss", &[0xf3, 0x0f, 0xc2], BothUnaligned, F32, CMP_IMM),
    opi("cmppd", &[0x66, 0x0f, 0xc2], Both, F64, CMP_IMM),
    opi("cmpsd", &[0xf2, 0x0f, 0xc2], BothUnaligned, F64, CMP_IMM),
    op("comiss", &[0x0f, 0x2f], BothUnaligned, F32),
    op("ucomiss", &[0x0f, 0x2e], BothUnaligned, F32),
    op("comisd", &[0x66, 0x0f, 0x2f], BothUnaligned, F64),
    op("ucomisd", &[0x66, 0x0f, 0x2e], BothUnaligned, F64),
];

const FP_CONVERT: &[Op] = &[
    op("cvtps2pd", &[0x0f, 0x5a], BothUnaligned, F32),
    op("cvtpd2ps", &[0x66, 0x0f, 0x5a], Both, F64),
    op("cvtss2sd", &[0xf3, 0x0f, 0x5a], BothUnaligned, F32),
    op("cvtsd2ss", &[0xf2, 0x0f, 0x5a], BothUnaligned, F64),
    op("cvtdq2ps", &[0x0f, 0x5b], Both, Int),
    op("cvtps2dq", &[0x66, 0x0f, 0x5b], Both, F32),
    op("cvttps2dq", &[0xf3, 0x0f, 0x5b], Both, F32),
    op("cvtdq2pd", &[0xf3, 0x0f, 0xe6], BothUnaligned, Int),
    op("cvtpd2dq", &[0xf2, 0x0f, 0xe6], Both, F64),
    op("cvttpd2dq", &[0x66, 0x0f, 0xe6], Both, F64),
    op("cvtpi2ps", &[0x0f, 0x2a], BothUnaligned, Int),
    op("cvtpi2pd", &[0x66, 0x0f, 0x2a], BothUnaligned, Int),
    op("cvtsi2ss", &[0xf3, 0x0f, 0x2a], BothUnaligned, Int),
    op("cvtsi2sd", &[0xf2, 0x0f, 0x2a], BothUnaligned, Int),
    op("cvttps2pi", &[0x0f, 0x2c], BothUnaligned, F32),
    op("cvttpd2pi", &[0x66, 0x0f, 0x2c], Both, F64),
    op("cvttss2si", &[0xf3, 0x0f, 0x2c], BothUnaligned, F32),
    op("cvttsd2si", &[0xf2, 0x0f, 0x2c], BothUnaligned, F64),
    op("cvtps2pi", &[0x0f, 0x2d], BothUnaligned, F32),
    op("cvtpd2pi", &[0x66, 0x0f, 0x2d], Both, F64),
    op("cvtss2si", &[0xf3, 0x0f, 0x2d], BothUnaligned, F32),
    op("cvtsd2si", &[0xf2, 0x0f, 0x2d], BothUnaligned, F64),
];

const FP_LOGIC_SHUFFLE: &[Op] = &[
    op("andps", &[0x0f, 0x54], Both, F32),
    op("andpd", &[0x66, 0x0f, 0x54], Both, F64),
    op("andnps", &[0x0f, 0x55], Both, F32),
    op("andnpd", &[0x66, 0x0f, 0x55], Both, F64),
    op("orps", &[0x0f, 0x56], Both, F32),
    op("orpd", &[0x66, 0x0f, 0x56], Both, F64),
    op("xorps", &[0x0f, 0x57], Both, F32),
    op("xorpd", &[0x66, 0x0f, 0x57], Both, F64),
    op("unpcklps", &[0x0f, 0x14], Both, F32),
    op("unpcklpd", &[0x66, 0x0f, 0x14], Both, F64),
    op("unpckhps", &[0x0f, 0x15], Both, F32),
    op("unpckhpd", &[0x66, 0x0f, 0x15], Both, F64),
    opi("shufps", &[0x0f, 0xc6], Both, F32, ANY_IMM),
    opi("shufpd", &[0x66, 0x0f, 0xc6], Both, F64, ANY_IMM),
];

const MOVES: &[Op] = &[
    op("movups load", &[0x0f, 0x10], BothUnaligned, F32),
    op("movups store", &[0x0f, 0x11], BothUnaligned, F32),
    op("movupd load", &[0x66, 0x0f, 0x10], BothUnaligned, F64),
    op("movupd store", &[0x66, 0x0f, 0x11], BothUnaligned, F64),
    op("movss load", &[0xf3, 0x0f, 0x10], BothUnaligned, F32),
    op("movss store", &[0xf3, 0x0f, 0x11], BothUnaligned, F32),
    op("movsd load", &[0xf2, 0x0f, 0x10], BothUnaligned, F64),
    op("movsd store", &[0xf2, 0x0f, 0x11], BothUnaligned, F64),
    op("movlps load", &[0x0f, 0x12], MemUnaligned, F32),
    op("movhlps", &[0x0f, 0x12], RegOnly, F32),
    op("movlps store", &[0x0f, 0x13], MemUnaligned, F32),
    op("movlpd load", &[0x66, 0x0f, 0x12], MemUnaligned, F64),
    op("movlpd store", &[0x66, 0x0f, 0x13], MemUnaligned, F64),
    op("movhps load", &[0x0f, 0x16], MemUnaligned, F32),
    op("movlhps", &[0x0f, 0x16], RegOnly, F32),
    op("movhps store", &[0x0f, 0x17], MemUnaligned, F32),
    op("movhpd load", &[0x66, 0x0f, 0x16], MemUnaligned, F64),
    op("movhpd store", &[0x66, 0x0f, 0x17], MemUnaligned, F64),
    op("movaps load", &[0x0f, 0x28], Both, F32),
    op("movaps store", &[0x0f, 0x29], Both, F32),
    op("movapd load", &[0x66, 0x0f, 0x28], Both, F64),
    op("movapd store", &[0x66, 0x0f, 0x29], Both, F64),
    op("movntps", &[0x0f, 0x2b], MemOnly, F32),
    op("movntpd", &[0x66, 0x0f, 0x2b], MemOnly, F64),
    op("movmskps", &[0x0f, 0x50], RegOnly, F32),
    op("movmskpd", &[0x66, 0x0f, 0x50], RegOnly, F64),
    op("movddup", &[0xf2, 0x0f, 0x12], BothUnaligned, F64),
    op("movsldup", &[0xf3, 0x0f, 0x12], Both, F32),
    op("movshdup", &[0xf3, 0x0f, 0x16], Both, F32),
    op("lddqu", &[0xf2, 0x0f, 0xf0], MemUnaligned, Int),
    op("movd mm, r/m32", &[0x0f, 0x6e], BothUnaligned, Int),
    op("movd xmm, r/m32", &[0x66, 0x0f, 0x6e], BothUnaligned, Int),
    op("movd r/m32, mm", &[0x0f, 0x7e], BothUnaligned, Int),
    op("movd r/m32, xmm", &[0x66, 0x0f, 0x7e], BothUnaligned, Int),
    op("movq mm, mm/m64", &[0x0f, 0x6f], BothUnaligned, Int),
    op("movq mm/m64, mm", &[0x0f, 0x7f], BothUnaligned, Int),
    op("movq xmm, xmm/m64", &[0xf3, 0x0f, 0x7e], BothUnaligned, Int),
    op("movq xmm/m64, xmm", &[0x66, 0x0f, 0xd6], BothUnaligned, Int),
    op("movdqa load", &[0x66, 0x0f, 0x6f], Both, Int),
    op("movdqa store", &[0x66, 0x0f, 0x7f], Both, Int),
    op("movdqu load", &[0xf3, 0x0f, 0x6f], BothUnaligned, Int),
    op("movdqu store", &[0xf3, 0x0f, 0x7f], BothUnaligned, Int),
    op("movq2dq", &[0xf3, 0x0f, 0xd6], RegOnly, Int),
    op("movdq2q", &[0xf2, 0x0f, 0xd6], RegOnly, Int),
    op("movntq", &[0x0f, 0xe7], MemUnaligned, Int),
    op("movntdq", &[0x66, 0x0f, 0xe7], MemOnly, Int),
    op("movnti", &[0x0f, 0xc3], MemUnaligned, Int),
    op("maskmovq", &[0x0f, 0xf7], RegOnly, Int),
    op("maskmovdqu", &[0x66, 0x0f, 0xf7], RegOnly, Int),
    op("pmovmskb mm", &[0x0f, 0xd7], RegOnly, Int),
    op("pmovmskb xmm", &[0x66, 0x0f, 0xd7], RegOnly, Int),
    opi("pextrw mm", &[0x0f, 0xc5], RegOnly, Int, ANY_IMM),
    opi("pextrw xmm", &[0x66, 0x0f, 0xc5], RegOnly, Int, ANY_IMM),
    opi("pinsrw mm", &[0x0f, 0xc4], BothUnaligned, Int, ANY_IMM),
    opi(
        "pinsrw xmm",
        &[0x66, 0x0f, 0xc4],
        BothUnaligned,
        Int,
        ANY_IMM,
    ),
];

/// The packed-integer opcodes of MMX/SSE2 (0F xx on MMX registers, 66 0F
/// xx on XMM registers).
const INT_OPCODES: &[(&str, u8)] = &[
    ("punpcklbw", 0x60),
    ("punpcklwd", 0x61),
    ("punpckldq", 0x62),
    ("packsswb", 0x63),
    ("pcmpgtb", 0x64),
    ("pcmpgtw", 0x65),
    ("pcmpgtd", 0x66),
    ("packuswb", 0x67),
    ("punpckhbw", 0x68),
    ("punpckhwd", 0x69),
    ("punpckhdq", 0x6a),
    ("packssdw", 0x6b),
    ("pcmpeqb", 0x74),
    ("pcmpeqw", 0x75),
    ("pcmpeqd", 0x76),
    ("paddq", 0xd4),
    ("pmullw", 0xd5),
    ("psubusb", 0xd8),
    ("psubusw", 0xd9),
    ("pminub", 0xda),
    ("pand", 0xdb),
    ("paddusb", 0xdc),
    ("paddusw", 0xdd),
    ("pmaxub", 0xde),
    ("pandn", 0xdf),
    ("pavgb", 0xe0),
    ("pavgw", 0xe3),
    ("pmulhuw", 0xe4),
    ("pmulhw", 0xe5),
    ("psubsb", 0xe8),
    ("psubsw", 0xe9),
    ("pminsw", 0xea),
    ("por", 0xeb),
    ("paddsb", 0xec),
    ("paddsw", 0xed),
    ("pmaxsw", 0xee),
    ("pxor", 0xef),
    ("pmuludq", 0xf4),
    ("pmaddwd", 0xf5),
    ("psadbw", 0xf6),
    ("psubb", 0xf8),
    ("psubw", 0xf9),
    ("psubd", 0xfa),
    ("psubq", 0xfb),
    ("paddb", 0xfc),
    ("paddw", 0xfd),
    ("paddd", 0xfe),
];

const SHIFT_OPCODES: &[(&str, u8)] = &[
    ("psrlw", 0xd1),
    ("psrld", 0xd2),
    ("psrlq", 0xd3),
    ("psraw", 0xe1),
    ("psrad", 0xe2),
    ("psllw", 0xf1),
    ("pslld", 0xf2),
    ("psllq", 0xf3),
];

/// SSSE3: 0F 38 xx (66 for XMM).
const SSSE3_OPCODES: &[(&str, u8)] = &[
    ("pshufb", 0x00),
    ("phaddw", 0x01),
    ("phaddd", 0x02),
    ("phaddsw", 0x03),
    ("pmaddubsw", 0x04),
    ("phsubw", 0x05),
    ("phsubd", 0x06),
    ("phsubsw", 0x07),
    ("psignb", 0x08),
    ("psignw", 0x09),
    ("psignd", 0x0a),
    ("pmulhrsw", 0x0b),
    ("pabsb", 0x1c),
    ("pabsw", 0x1d),
    ("pabsd", 0x1e),
];

const INT_IMM: &[Op] = &[
    opi("pshufw", &[0x0f, 0x70], BothUnaligned, Int, ANY_IMM),
    opi("pshufd", &[0x66, 0x0f, 0x70], Both, Int, ANY_IMM),
    opi("pshufhw", &[0xf3, 0x0f, 0x70], Both, Int, ANY_IMM),
    opi("pshuflw", &[0xf2, 0x0f, 0x70], Both, Int, ANY_IMM),
    opi(
        "palignr mm",
        &[0x0f, 0x3a, 0x0f],
        BothUnaligned,
        Int,
        SHIFT_IMM,
    ),
    opi(
        "palignr xmm",
        &[0x66, 0x0f, 0x3a, 0x0f],
        Both,
        Int,
        SHIFT_IMM,
    ),
    opi("psrlw mm, imm", &[0x0f, 0x71], Ext(2), Int, SHIFT_IMM),
    opi("psraw mm, imm", &[0x0f, 0x71], Ext(4), Int, SHIFT_IMM),
    opi("psllw mm, imm", &[0x0f, 0x71], Ext(6), Int, SHIFT_IMM),
    opi("psrld mm, imm", &[0x0f, 0x72], Ext(2), Int, SHIFT_IMM),
    opi("psrad mm, imm", &[0x0f, 0x72], Ext(4), Int, SHIFT_IMM),
    opi("pslld mm, imm", &[0x0f, 0x72], Ext(6), Int, SHIFT_IMM),
    opi("psrlq mm, imm", &[0x0f, 0x73], Ext(2), Int, SHIFT_IMM),
    opi("psllq mm, imm", &[0x0f, 0x73], Ext(6), Int, SHIFT_IMM),
    opi(
        "psrlw xmm, imm",
        &[0x66, 0x0f, 0x71],
        Ext(2),
        Int,
        SHIFT_IMM,
    ),
    opi(
        "psraw xmm, imm",
        &[0x66, 0x0f, 0x71],
        Ext(4),
        Int,
        SHIFT_IMM,
    ),
    opi(
        "psllw xmm, imm",
        &[0x66, 0x0f, 0x71],
        Ext(6),
        Int,
        SHIFT_IMM,
    ),
    opi(
        "psrld xmm, imm",
        &[0x66, 0x0f, 0x72],
        Ext(2),
        Int,
        SHIFT_IMM,
    ),
    opi(
        "psrad xmm, imm",
        &[0x66, 0x0f, 0x72],
        Ext(4),
        Int,
        SHIFT_IMM,
    ),
    opi(
        "pslld xmm, imm",
        &[0x66, 0x0f, 0x72],
        Ext(6),
        Int,
        SHIFT_IMM,
    ),
    opi(
        "psrlq xmm, imm",
        &[0x66, 0x0f, 0x73],
        Ext(2),
        Int,
        SHIFT_IMM,
    ),
    opi(
        "psrldq xmm, imm",
        &[0x66, 0x0f, 0x73],
        Ext(3),
        Int,
        SHIFT_IMM,
    ),
    opi(
        "psllq xmm, imm",
        &[0x66, 0x0f, 0x73],
        Ext(6),
        Int,
        SHIFT_IMM,
    ),
    opi(
        "pslldq xmm, imm",
        &[0x66, 0x0f, 0x73],
        Ext(7),
        Int,
        SHIFT_IMM,
    ),
];

/// Builds MMX and XMM ops from a list of opcodes.
fn int_ops(list: &[(&'static str, u8)], esc: &[u8], kind: Kind) -> Vec<Op> {
    let mut v = Vec::new();
    for &(name, opc) in list {
        let mm: Vec<u8> = [&[0x0f], esc, &[opc]].concat();
        let xmm: Vec<u8> = [&[0x66, 0x0f], esc, &[opc]].concat();
        // Leaked once per test run: `Op` holds static slices.
        v.push(op(
            name,
            Box::leak(mm.into_boxed_slice()),
            BothUnaligned,
            kind,
        ));
        v.push(op(name, Box::leak(xmm.into_boxed_slice()), Both, kind));
    }
    v
}

const ITERS: usize = 600;

#[test]
fn fp_arithmetic_matches_host() {
    let (runs, traps) = check_ops(FP_ARITH, 0x1234_5678_9abc_def1, ITERS);
    eprintln!("{runs} runs, {traps} with #XM");
    assert!(traps > runs / 10, "the unmasked cases are exercised");
}

#[test]
fn fp_conversions_match_host() {
    let (runs, traps) = check_ops(FP_CONVERT, 0x2345_6789_abcd_ef12, ITERS);
    eprintln!("{runs} runs, {traps} with #XM");
    assert!(traps > runs / 10, "the unmasked cases are exercised");
}

#[test]
fn fp_logic_and_shuffles_match_host() {
    let _ = check_ops(FP_LOGIC_SHUFFLE, 0x3456_789a_bcde_f123, ITERS / 3);
}

#[test]
fn moves_match_host() {
    let _ = check_ops(MOVES, 0x4567_89ab_cdef_1234, ITERS / 3);
}

#[test]
fn packed_integer_ops_match_host() {
    let _ = check_ops(
        &int_ops(INT_OPCODES, &[], Int),
        0x5678_9abc_def1_2345,
        ITERS / 3,
    );
    let _ = check_ops(
        &int_ops(SHIFT_OPCODES, &[], Count),
        0x6789_abcd_ef12_3456,
        ITERS / 3,
    );
    let _ = check_ops(
        &int_ops(SSSE3_OPCODES, &[0x38], Int),
        0x789a_bcde_f123_4567,
        ITERS / 3,
    );
    let _ = check_ops(INT_IMM, 0x89ab_cdef_1234_5678, ITERS / 3);
}

/// Runs one instruction in the interpreter after `setup`.
fn run_one(
    code: &[u8],
    setup: impl FnOnce(&mut CpuState, &mut FlatMemory),
) -> (CpuState, FlatMemory, Result<(), Exception>) {
    let mut mem = FlatMemory::new(0x3000);
    mem.bytes[GUEST_CODE as usize..GUEST_CODE as usize + code.len()].copy_from_slice(code);
    let mut cpu = CpuState {
        eip: GUEST_CODE,
        ..CpuState::default()
    };
    setup(&mut cpu, &mut mem);
    let r = decode(&cpu, &mut mem).and_then(|i| step(&mut cpu, &mut mem, &mut NoEnv, &i));
    (cpu, mem, r)
}

fn fill_xmm(cpu: &mut CpuState) {
    for (i, x) in cpu.xmm.iter_mut().enumerate() {
        for (j, b) in x.iter_mut().enumerate() {
            *b = (i * 16 + j) as u8;
        }
    }
}

#[test]
fn misaligned_128_bit_operands_fault_and_leave_state_unchanged() {
    // movaps xmm0,[eax]; movdqa [eax],xmm0; addps xmm0,[eax]; pshufd
    // xmm0,[eax],0; movshdup xmm0,[eax]; psllw xmm0,[eax]
    let aligned: [&[u8]; 6] = [
        &[0x0f, 0x28, 0x00],
        &[0x66, 0x0f, 0x7f, 0x00],
        &[0x0f, 0x58, 0x00],
        &[0x66, 0x0f, 0x70, 0x00, 0x00],
        &[0xf3, 0x0f, 0x16, 0x00],
        &[0x66, 0x0f, 0xf1, 0x00],
    ];
    for code in aligned {
        for off in [1u32, 4, 8, 12] {
            let (cpu, mem, r) = run_one(code, |cpu, _| {
                fill_xmm(cpu);
                cpu.regs[EAX] = GUEST_DATA + off;
            });
            assert_eq!(
                r,
                Err(Exception::GeneralProtection(0)),
                "{code:02x?} +{off}"
            );
            assert_eq!(cpu.eip, GUEST_CODE);
            let mut expect = CpuState::default();
            fill_xmm(&mut expect);
            assert_eq!(cpu.xmm, expect.xmm);
            assert!(mem.bytes[GUEST_DATA as usize..].iter().all(|&b| b == 0));
        }
    }
    // The unaligned forms and scalar operands do not care.
    let unaligned: [&[u8]; 5] = [
        &[0x0f, 0x10, 0x00],
        &[0xf3, 0x0f, 0x7f, 0x00],
        &[0xf2, 0x0f, 0xf0, 0x00],
        &[0xf3, 0x0f, 0x58, 0x00],
        &[0x0f, 0x12, 0x00],
    ];
    for code in unaligned {
        let (_, _, r) = run_one(code, |cpu, _| cpu.regs[EAX] = GUEST_DATA + 3);
        assert_eq!(r, Ok(()), "{code:02x?}");
    }
}

#[test]
fn page_faults_leave_state_unchanged() {
    // movdqu xmm0,[eax] across the end of memory; movups [eax],xmm0;
    // paddb xmm0,[eax]; movq mm0,[eax]
    let codes: [&[u8]; 4] = [
        &[0xf3, 0x0f, 0x6f, 0x00],
        &[0x0f, 0x11, 0x00],
        &[0x66, 0x0f, 0xfc, 0x00],
        &[0x0f, 0x6f, 0x00],
    ];
    for code in codes {
        let (cpu, mem, r) = run_one(code, |cpu, _| {
            fill_xmm(cpu);
            cpu.set_mmx(0, 0x1234);
            // Aligned operands start past the end; the others straddle it.
            cpu.regs[EAX] = if code[2] == 0xfc { 0x3000 } else { 0x3000 - 4 };
        });
        assert!(
            matches!(r, Err(Exception::PageFault(_))),
            "{code:02x?}: {r:?}"
        );
        let mut expect = CpuState::default();
        fill_xmm(&mut expect);
        assert_eq!(cpu.xmm, expect.xmm);
        assert_eq!(cpu.mmx(0), 0x1234);
        assert_eq!(cpu.eip, GUEST_CODE);
        assert!(mem.bytes[0x2ff0..].iter().all(|&b| b == 0));
    }
}

#[test]
fn ldmxcsr_rejects_reserved_bits_and_stmxcsr_stores() {
    let ld = [0x0f, 0xae, 0x10]; // ldmxcsr [eax]
    let st = [0x0f, 0xae, 0x18]; // stmxcsr [eax]
    for (v, ok) in [
        (0xffffu32, true),
        (0x1f80 | 0x8040 | 0x3f, true),
        (0x1_0000, false),
    ] {
        let (cpu, _, r) = run_one(&ld, |cpu, mem| {
            cpu.regs[EAX] = GUEST_DATA + 2;
            mem.bytes[GUEST_DATA as usize + 2..][..4].copy_from_slice(&v.to_le_bytes());
        });
        if ok {
            assert_eq!((r, cpu.mxcsr), (Ok(()), v));
        } else {
            assert_eq!(
                (r, cpu.mxcsr),
                (Err(Exception::GeneralProtection(0)), 0x1f80)
            );
        }
    }
    let (_, mem, r) = run_one(&st, |cpu, _| {
        cpu.regs[EAX] = GUEST_DATA + 1;
        cpu.mxcsr = 0x9fa5;
    });
    assert_eq!(r, Ok(()));
    assert_eq!(
        &mem.bytes[GUEST_DATA as usize + 1..][..4],
        &0x9fa5u32.to_le_bytes()
    );
}

#[test]
fn unmasked_exception_keeps_destination_and_stale_flags_do_not_trap() {
    let one = 1.0f32.to_le_bytes();
    let zero = 0.0f32.to_le_bytes();
    // divps xmm0,xmm1: 1/0 in lane 0 with ZE unmasked.
    let setup = |cpu: &mut CpuState, csr: u32| {
        for l in 0..4 {
            cpu.xmm[0][4 * l..4 * l + 4].copy_from_slice(&one);
            cpu.xmm[1][4 * l..4 * l + 4].copy_from_slice(&one);
        }
        cpu.xmm[1][..4].copy_from_slice(&zero);
        cpu.mxcsr = csr;
    };
    let (cpu, _, r) = run_one(&[0x0f, 0x5e, 0xc1], |cpu, _| setup(cpu, 0x1f80 & !(1 << 9)));
    assert_eq!(r, Err(Exception::SimdFpError));
    assert_eq!(cpu.mxcsr, (0x1f80 & !(1 << 9)) | 0x04);
    assert_eq!(&cpu.xmm[0][..4], &one);
    assert_eq!(cpu.eip, GUEST_CODE);
    // addps xmm0,xmm0 with ZE unmasked and already set: no new exception,
    // no trap.
    let (cpu, _, r) = run_one(&[0x0f, 0x58, 0xc0], |cpu, _| {
        setup(cpu, (0x1f80 & !(1 << 9)) | 0x04)
    });
    assert_eq!(r, Ok(()));
    assert_eq!(&cpu.xmm[0][..4], &2.0f32.to_le_bytes());
    // comiss with an unmasked invalid (QNaN compare) leaves EFLAGS alone.
    let (cpu, _, r) = run_one(&[0x0f, 0x2f, 0xc1], |cpu, _| {
        cpu.xmm[1][..4].copy_from_slice(&f32::NAN.to_le_bytes());
        cpu.mxcsr = 0x1f80 & !(1 << 7);
        cpu.set_eflags(crate::state::SF | crate::state::OF, ARITH_FLAGS);
    });
    assert_eq!(r, Err(Exception::SimdFpError));
    assert_eq!(
        cpu.eflags() & ARITH_FLAGS,
        crate::state::SF | crate::state::OF
    );
}

#[test]
fn fxsave_and_fxrstor_round_trip_the_sse_state() {
    let save = [0x0f, 0xae, 0x00]; // fxsave [eax]
    let restore = [0x0f, 0xae, 0x08]; // fxrstor [eax]
    let (cpu, mem, r) = run_one(&save, |cpu, mem| {
        fill_xmm(cpu);
        cpu.mxcsr = 0x9f83;
        cpu.set_mmx(3, 0x0123_4567_89ab_cdef);
        cpu.regs[EAX] = GUEST_DATA;
        mem.bytes[GUEST_DATA as usize + 464] = 0xaa;
    });
    assert_eq!(r, Ok(()));
    let area = &mem.bytes[GUEST_DATA as usize..GUEST_DATA as usize + 512];
    assert_eq!(&area[24..28], &0x9f83u32.to_le_bytes());
    assert_eq!(&area[28..32], &0xffffu32.to_le_bytes());
    assert_eq!(&area[160..176], &cpu.xmm[0]);
    assert_eq!(&area[272..288], &cpu.xmm[7]);
    assert_eq!(&area[80..88], &0x0123_4567_89ab_cdefu64.to_le_bytes());
    // Software's bytes are not written.
    assert_eq!(area[464], 0xaa);
    let image = area.to_vec();
    let (cpu2, _, r) = run_one(&restore, |cpu, mem| {
        cpu.regs[EAX] = GUEST_DATA;
        mem.bytes[GUEST_DATA as usize..GUEST_DATA as usize + 512].copy_from_slice(&image);
    });
    assert_eq!(r, Ok(()));
    assert_eq!(
        (cpu2.xmm, cpu2.mxcsr, cpu2.mmx(3)),
        (cpu.xmm, 0x9f83, cpu.mmx(3))
    );
    // A reserved MXCSR bit in the image: #GP(0), nothing restored.
    let (cpu3, _, r) = run_one(&restore, |cpu, mem| {
        cpu.regs[EAX] = GUEST_DATA;
        mem.bytes[GUEST_DATA as usize..GUEST_DATA as usize + 512].copy_from_slice(&image);
        mem.bytes[GUEST_DATA as usize + 26] = 1;
    });
    assert_eq!(r, Err(Exception::GeneralProtection(0)));
    assert_eq!((cpu3.xmm, cpu3.mxcsr), ([[0; 16]; 8], 0x1f80));
    // Misaligned area.
    let (_, _, r) = run_one(&save, |cpu, _| cpu.regs[EAX] = GUEST_DATA + 8);
    assert_eq!(r, Err(Exception::GeneralProtection(0)));
}

#[test]
fn other_encodings_and_extensions_are_invalid() {
    let codes: [&[u8]; 4] = [
        &[0xc5, 0xf8, 0x58, 0xc1],             // vaddps xmm0,xmm0,xmm1 (AVX)
        &[0x66, 0x0f, 0x38, 0x38, 0xc1],       // pminsb (SSE4.1)
        &[0x66, 0x0f, 0x3a, 0x15, 0xc0, 0x01], // pextrw r32/m16 form (SSE4.1)
        &[0x66, 0x0f, 0x38, 0x17, 0xc1],       // ptest (SSE4.1)
    ];
    for code in codes {
        let (_, _, r) = run_one(code, |_, _| {});
        assert_eq!(r, Err(Exception::InvalidOpcode), "{code:02x?}");
    }
    // emms, prefetchnta [eax], clflush [eax], lfence/sfence/mfence.
    let ok: [&[u8]; 6] = [
        &[0x0f, 0x77],
        &[0x0f, 0x18, 0x00],
        &[0x0f, 0xae, 0x38],
        &[0x0f, 0xae, 0xe8],
        &[0x0f, 0xae, 0xf8],
        &[0x0f, 0xae, 0xf0],
    ];
    for code in ok {
        let (_, _, r) = run_one(code, |cpu, _| cpu.regs[EAX] = GUEST_DATA);
        assert_eq!(r, Ok(()), "{code:02x?}");
    }
}

#[test]
fn ldmxcsr_stmxcsr_and_emms_match_host() {
    let mut r = Rng(0x9abc_def1_2345_6789);
    for i in 0..400 {
        let mut m = machine(&mut r, Kind::F32, 0, i % 2 == 0);
        let v = (r.next() as u32) & 0xffff;
        m.data[..4].copy_from_slice(&v.to_le_bytes());
        compare("ldmxcsr", &[0x0f, 0xae, 0x10], &m);
        compare("stmxcsr", &[0x0f, 0xae, 0x18], &m);
        compare("emms", &[0x0f, 0x77], &m);
    }
}
