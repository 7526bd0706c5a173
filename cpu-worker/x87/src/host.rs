//! Test harness running x87 instructions on the host CPU (x86_64) to compare with the soft
//! implementation bit for bit.
//!
//! Each probe does `fninit; fldcw; fld b; fld a; <instructions>; fnsave`, so the full state
//! (status word, tags, all eight registers) is read back through the 32-bit protected-mode
//! FNSAVE image of the Intel SDM Vol. 1 §8.1.10, figure 8-9, even when an unmasked exception
//! is pending (FNSAVE does not wait).

use core::arch::asm;

use crate::f80::F80;

/// The state read back from the host.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)]
pub struct HostOut {
    pub cw: u16,
    pub sw: u16,
    pub tw: u16,
    /// ST(0)..ST(7).
    pub st: [F80; 8],
    pub eflags: u64,
    pub mem: [u8; 16],
    pub image: [u8; 108],
}

impl HostOut {
    fn parse(save: &[u8; 108], eflags: u64, mem: [u8; 16]) -> HostOut {
        let w = |o: usize| u16::from_le_bytes([save[o], save[o + 1]]);
        let mut st = [F80::ZERO; 8];
        for (i, r) in st.iter_mut().enumerate() {
            let mut b = [0u8; 10];
            b.copy_from_slice(&save[28 + 10 * i..38 + 10 * i]);
            *r = F80::from_bytes(b);
        }
        HostOut {
            cw: w(0),
            sw: w(4),
            tw: w(8),
            st,
            eflags,
            mem,
            image: *save,
        }
    }
}

/// Defines `fn $name(cw, a, b, mem) -> HostOut` running the given instructions with
/// ST(0) = a, ST(1) = b and `{m}` pointing at the 16-byte `mem` buffer.
macro_rules! host_probe {
    ($name:ident, $($ins:literal),* $(,)?) => {
        #[allow(dead_code)]
        pub fn $name(cw: u16, a: F80, b: F80, mem: [u8; 16]) -> HostOut {
            let mut save = [0u8; 108];
            let mut mem = mem;
            let (ab, bb) = (a.to_bytes(), b.to_bytes());
            let fl: u64;
            // SAFETY: the asm only reads the two 10-byte operand buffers and `cw`, reads and
            // writes the 16-byte `mem` and the 108-byte `save` buffer, all live locals; it
            // leaves the x87 stack empty (FNSAVE reinitializes the FPU) and restores the
            // stack pointer after pushfq/pop.
            unsafe {
                asm!(
                    "fninit",
                    "fldcw word ptr [{cw}]",
                    "fld tbyte ptr [{b}]",
                    "fld tbyte ptr [{a}]",
                    "lea {fl}, [{m}]",
                    $($ins,)*
                    "pushfq",
                    "pop {fl}",
                    "fnsave [{save}]",
                    cw = in(reg) &cw,
                    a = in(reg) ab.as_ptr(),
                    b = in(reg) bb.as_ptr(),
                    m = in(reg) mem.as_mut_ptr(),
                    save = in(reg) save.as_mut_ptr(),
                    fl = out(reg) fl,
                    out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
                    out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
                );
            }
            HostOut::parse(&save, fl, mem)
        }
    };
}

host_probe!(fadd, "fadd st, st(1)");
host_probe!(fsub, "fsub st, st(1)");
host_probe!(fmul, "fmul st, st(1)");
host_probe!(fdiv, "fdiv st, st(1)");
host_probe!(fsqrt, "fsqrt");
host_probe!(frndint, "frndint");
host_probe!(fprem, "fprem");
host_probe!(fprem1, "fprem1");
host_probe!(fscale, "fscale");
host_probe!(fxtract, "fxtract");
host_probe!(fcom, "fcom st(1)");
host_probe!(fucom, "fucom st(1)");
host_probe!(fcomi, "fcomi st, st(1)");
host_probe!(fucomi, "fucomi st, st(1)");
host_probe!(ftst, "ftst");
host_probe!(fxam, "fxam");
host_probe!(fst32, "fst dword ptr [{m}]");
host_probe!(fst64, "fst qword ptr [{m}]");
host_probe!(fld32, "fld dword ptr [{m}]");
host_probe!(fld64, "fld qword ptr [{m}]");
host_probe!(fist16, "fist word ptr [{m}]");
host_probe!(fist32, "fist dword ptr [{m}]");
host_probe!(fist64, "fistp qword ptr [{m}]");
host_probe!(fisttp16, "fisttp word ptr [{m}]");
host_probe!(fisttp32, "fisttp dword ptr [{m}]");
host_probe!(fisttp64, "fisttp qword ptr [{m}]");
host_probe!(fild16, "fild word ptr [{m}]");
host_probe!(fild32, "fild dword ptr [{m}]");
host_probe!(fild64, "fild qword ptr [{m}]");
host_probe!(fbld, "fbld tbyte ptr [{m}]");
host_probe!(fbstp, "fbstp tbyte ptr [{m}]");
host_probe!(fsin, "fsin");
host_probe!(fcos, "fcos");
host_probe!(fsincos, "fsincos");
host_probe!(fptan, "fptan");
host_probe!(fpatan, "fpatan");
host_probe!(fyl2x, "fyl2x");
host_probe!(fyl2xp1, "fyl2xp1");
host_probe!(f2xm1, "f2xm1");
host_probe!(fld1, "fld1");
host_probe!(fldl2t, "fldl2t");
host_probe!(fldl2e, "fldl2e");
host_probe!(fldpi, "fldpi");
host_probe!(fldlg2, "fldlg2");
host_probe!(fldln2, "fldln2");
host_probe!(fldz, "fldz");

/// Deterministic xorshift64* generator.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn bool(&mut self) -> bool {
        self.next() & 1 != 0
    }

    /// A significand biased toward rounding boundaries.
    pub fn signif(&mut self) -> u64 {
        let r = self.next();
        match self.below(8) {
            0 => (1 << 63) | (r >> 40 << 40) | (1 << self.below(40)),
            1 => (1 << 63) | (r >> 11 << 11) | 0x400,
            2 => (1 << 63) | (r >> 40 << 40),
            3 => u64::MAX << self.below(64),
            4 => (1 << 63) | (u64::MAX >> (1 + self.below(63))),
            5 => (1 << 63) | (r >> 11 << 11) | self.below(4),
            _ => (1 << 63) | r,
        }
    }

    /// Any encoding, biased toward the interesting ones.
    pub fn f80(&mut self) -> F80 {
        let sign = self.bool();
        let s = self.signif();
        match self.below(40) {
            0 => F80::new(sign, 0, 0),
            1 => F80::new(sign, 0, s >> (1 + self.below(63))),
            2 => F80::new(sign, 0, s),
            3 => F80::new(sign, 0x7FFF, 1 << 63),
            4 => F80::new(sign, 0x7FFF, s | (1 << 62)),
            5 => F80::new(sign, 0x7FFF, ((s & !(1 << 62)) | 1) | (1 << 63)),
            6 => F80::new(sign, (1 + self.below(0x7FFE)) as u16, s >> 1),
            7 => F80::new(sign, 0x7FFF, s >> 1),
            8 => F80::new(sign, 1 + self.below(80) as u16, s),
            9 => F80::new(sign, 0x7FFE - self.below(80) as u16, s),
            10 => F80::new(sign, 1, 1 << 63),
            11 => F80::new(sign, 0x7FFE, u64::MAX),
            12..=14 => F80::new(sign, (1 + self.below(0x7FFE)) as u16, s),
            _ => F80::new(sign, (0x3FFF - 70 + self.below(140)) as u16, s),
        }
    }

    /// A second operand near the first one (cancellation, ties, equal values).
    pub fn f80_near(&mut self, a: F80) -> F80 {
        match self.below(6) {
            0 => a,
            1 => a.neg(),
            2 => {
                let d = self.below(70) as u16;
                let e = if self.bool() {
                    a.exp().saturating_add(d)
                } else {
                    a.exp().saturating_sub(d)
                };
                F80::new(self.bool(), e.min(0x7FFF), self.signif())
            }
            3 => F80::new(self.bool(), a.exp(), a.signif ^ (1 << self.below(64))),
            _ => self.f80(),
        }
    }

    /// Like `cw_masked`, but a third of the time with overflow, underflow and precision
    /// unmasked (they do not stop the register destination from being written).
    pub fn cw_post(&mut self) -> u16 {
        let cw = self.cw_masked();
        if self.below(3) == 0 {
            cw & !0x38
        } else {
            cw
        }
    }

    /// A control word with all exceptions masked and random RC / PC.
    pub fn cw_masked(&mut self) -> u16 {
        let pc = [0u16, 2, 3][self.below(3) as usize];
        0x037F & !0x0300 | (pc << 8) | ((self.below(4) as u16) << 10)
    }
}

/// Iterations per randomized host test.
pub const N: usize = 50000;

pub fn hexf(x: F80) -> String {
    format!("{:04x}:{:016x}", x.se, x.signif)
}

/// Defines `fn $name(image, mem) -> HostOut`: FRSTOR the 108-byte image, run the
/// instructions (`{m}` = the 16-byte buffer), FNSAVE.
macro_rules! host_state {
    ($name:ident, $($ins:literal),* $(,)?) => {
        #[allow(dead_code)]
        pub fn $name(image: &[u8; 108], mem: [u8; 16]) -> HostOut {
            let mut save = [0u8; 108];
            let mut mem = mem;
            let fl: u64;
            // SAFETY: the asm reads the 108-byte `image`, reads and writes the 16-byte `mem`
            // and writes the 108-byte `save`, all live locals; FNSAVE leaves the x87 stack
            // empty and pushfq/pop restore the stack pointer. The caller passes images
            // without a pending unmasked exception so no #MF is raised.
            unsafe {
                asm!(
                    "frstor [{img}]",
                    "lea {fl}, [{m}]",
                    $($ins,)*
                    "pushfq",
                    "pop {fl}",
                    "fnsave [{save}]",
                    img = in(reg) image.as_ptr(),
                    m = in(reg) mem.as_mut_ptr(),
                    save = in(reg) save.as_mut_ptr(),
                    fl = out(reg) fl,
                    out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
                    out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
                );
            }
            HostOut::parse(&save, fl, mem)
        }
    };
}

pub mod state {
    use super::*;
    host_state!(fld80, "fld tbyte ptr [{m}]");
    host_state!(fld32, "fld dword ptr [{m}]");
    host_state!(fld64, "fld qword ptr [{m}]");
    host_state!(fild32, "fild dword ptr [{m}]");
    host_state!(fld_st2, "fld st(2)");
    host_state!(fldpi, "fldpi");
    host_state!(fadd, "fadd st, st(1)");
    host_state!(fadd_to2, "fadd st(2), st");
    host_state!(faddp, "faddp st(1), st");
    host_state!(fsubrp, "fsubrp st(1), st");
    host_state!(fmul_m32, "fmul dword ptr [{m}]");
    host_state!(fdiv_m64, "fdiv qword ptr [{m}]");
    host_state!(fidivr_m16, "fidivr word ptr [{m}]");
    host_state!(fsqrt, "fsqrt");
    host_state!(frndint, "frndint");
    host_state!(fscale, "fscale");
    host_state!(fprem, "fprem");
    host_state!(fxtract, "fxtract");
    host_state!(fchs, "fchs");
    host_state!(fabs, "fabs");
    host_state!(fstp_m64, "fstp qword ptr [{m}]");
    host_state!(fst_m32, "fst dword ptr [{m}]");
    host_state!(fistp_m32, "fistp dword ptr [{m}]");
    host_state!(fstp_m80, "fstp tbyte ptr [{m}]");
    host_state!(fst_st3, "fst st(3)");
    host_state!(fstp_st1, "fstp st(1)");
    host_state!(fcom, "fcom st(1)");
    host_state!(fcompp, "fcompp");
    host_state!(fucomp, "fucomp st(2)");
    host_state!(ftst, "ftst");
    host_state!(fxam, "fxam");
    host_state!(fxch2, "fxch st(2)");
    host_state!(ffree1, "ffree st(1)");
    host_state!(fincstp, "fincstp");
    host_state!(fdecstp, "fdecstp");
    host_state!(fcomip, "fcomip st, st(1)");
    host_state!(fucomi, "fucomi st, st(3)");
    host_state!(fcmove, "fcmove st, st(1)");
    host_state!(fldcw, "fldcw word ptr [{m}]");
    host_state!(fnclex, "fnclex");
    host_state!(fcom_m32, "fcom dword ptr [{m}]");
    host_state!(fucomp_st1, "fucomp st(1)");
    host_state!(ficomp_m16, "ficomp word ptr [{m}]");
    host_state!(fiadd_m32, "fiadd dword ptr [{m}]");
    host_state!(fsubr_m64, "fsubr qword ptr [{m}]");
    host_state!(fsin, "fsin");
    host_state!(fcos, "fcos");
    host_state!(fsincos, "fsincos");
    host_state!(fptan, "fptan");
    host_state!(fpatan, "fpatan");
    host_state!(fyl2x, "fyl2x");
    host_state!(fyl2xp1, "fyl2xp1");
    host_state!(f2xm1, "f2xm1");
    host_state!(fprem1, "fprem1");
    host_state!(fld1, "fld1");
    host_state!(fbld, "fbld tbyte ptr [{m}]");
    host_state!(fbstp, "fbstp tbyte ptr [{m}]");
    host_state!(fisttp16, "fisttp word ptr [{m}]");
    host_state!(fild64, "fild qword ptr [{m}]");
}

#[repr(C, align(16))]
struct FxArea([u8; 512]);

/// FRSTOR the image, then FXSAVE (32-bit layout, no REX.W) into a 512-byte area.
pub fn fxsave_after_frstor(image: &[u8; 108]) -> [u8; 512] {
    let mut area = FxArea([0; 512]);
    // SAFETY: reads the 108-byte `image`, writes the 16-byte aligned 512-byte `area`; the
    // FNINIT leaves the x87 stack empty afterwards.
    unsafe {
        asm!(
            "frstor [{img}]",
            "fxsave [{fx}]",
            "fninit",
            img = in(reg) image.as_ptr(),
            fx = in(reg) area.0.as_mut_ptr(),
            out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
            out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
        );
    }
    area.0
}

/// FRSTOR the image, MOVQ mm3 ← `v`, FNSAVE.
pub fn movq_mm3_after_frstor(image: &[u8; 108], v: u64) -> [u8; 108] {
    let mut save = [0u8; 108];
    // SAFETY: reads the 108-byte `image` and the 8-byte `v`, writes the 108-byte `save`;
    // FNSAVE reinitializes the FPU so no MMX state is left behind for the compiler.
    unsafe {
        asm!(
            "frstor [{img}]",
            "movq mm3, [{v}]",
            "fnsave [{save}]",
            img = in(reg) image.as_ptr(),
            v = in(reg) &v,
            save = in(reg) save.as_mut_ptr(),
            out("mm3") _,
            out("st(0)") _, out("st(1)") _, out("st(2)") _,
            out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
        );
    }
    save
}

/// FRSTOR the image, FNSTENV (32-bit protected-mode layout), FNSAVE: the stored
/// environment and the state after it.
pub fn fnstenv_after_frstor(image: &[u8; 108]) -> ([u8; 28], [u8; 108]) {
    let mut env = [0u8; 28];
    let mut save = [0u8; 108];
    // SAFETY: reads the 108-byte `image`, writes the 28-byte `env` and the 108-byte `save`;
    // FNSAVE leaves the x87 stack empty.
    unsafe {
        asm!(
            "frstor [{img}]",
            "fnstenv [{env}]",
            "fnsave [{save}]",
            img = in(reg) image.as_ptr(),
            env = in(reg) env.as_mut_ptr(),
            save = in(reg) save.as_mut_ptr(),
            out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
            out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
        );
    }
    (env, save)
}
