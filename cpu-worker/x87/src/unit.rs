//! The x87 unit: eight 80-bit data registers used as a stack, the control, status and tag
//! words, the last-instruction and last-operand pointers, and the instruction-level
//! operations built on the soft-float layer.
//!
//! Follows the Intel SDM Vol. 1 §8.1 (registers, TOP, tags, pointers, FNSTENV/FNSAVE
//! images: figures 8-9 to 8-12 in their 32- and 16-bit protected-mode forms), §8.5
//! (exception handling: masked responses, the stack-fault rules with C1, pre-computation
//! exceptions leaving the destination unchanged, the wrapped exponent of unmasked overflow and
//! underflow, ES/B and the deferred #MF raised by the next waiting instruction), §8.6 and
//! §9.5 (MMX aliasing), §10.5.1 (FXSAVE layout, abridged tag word), and the instruction pages
//! of Vol. 2.

use crate::arith::{self, Ordering};
use crate::convert::{self, Constant, BCD_INDEFINITE};
use crate::f80::{Class, Ctx, DE, F80, IE, OE, PE, UE, ZE};
use crate::remainder::{self, Cond};
use crate::transcend;

/// Status word bits beyond the six exception flags.
pub mod sw {
    /// Stack fault.
    pub const SF: u16 = 0x0040;
    /// Exception summary.
    pub const ES: u16 = 0x0080;
    /// Condition code C0.
    pub const C0: u16 = 0x0100;
    /// Condition code C1.
    pub const C1: u16 = 0x0200;
    /// Condition code C2.
    pub const C2: u16 = 0x0400;
    /// TOP field.
    pub const TOP: u16 = 0x3800;
    /// Condition code C3.
    pub const C3: u16 = 0x4000;
    /// Busy (mirrors ES).
    pub const B: u16 = 0x8000;
}

/// A waiting x87 instruction found an unmasked exception pending (ES set): the caller
/// delivers #MF (SIGFPE in user mode) before the instruction executes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PendingFault;

impl core::fmt::Display for PendingFault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("x87 floating-point error pending (#MF)")
    }
}

impl std::error::Error for PendingFault {}

/// Result of a waiting instruction.
pub type Result<T> = core::result::Result<T, PendingFault>;

/// Two-operand arithmetic.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ArithOp {
    /// dest + src
    Add,
    /// dest − src
    Sub,
    /// src − dest (FSUBR)
    SubR,
    /// dest × src
    Mul,
    /// dest ÷ src
    Div,
    /// src ÷ dest (FDIVR)
    DivR,
}

/// Source operand of an arithmetic or compare instruction, already fetched by the caller.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Src {
    /// ST(i)
    St(u8),
    /// m32fp
    F32(u32),
    /// m64fp
    F64(u64),
    /// m16int (FIADD etc.)
    I16(i16),
    /// m32int
    I32(i32),
}

/// Layout of the FNSTENV/FLDENV and FNSAVE/FRSTOR images.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EnvFormat {
    /// 32-bit protected mode: 28-byte environment.
    Protected32,
    /// 16-bit protected mode: 14-byte environment.
    Protected16,
    /// 32-bit real or virtual-8086 mode: 28 bytes, FIP/FDP as 32-bit linear addresses split
    /// 16 + 16 with FOP beside the high half (SDM Vol. 1 figure 8-10).
    Real32,
    /// 16-bit real or virtual-8086 mode: 14 bytes, 20-bit FIP/FDP (figure 8-12).
    Real16,
}

impl EnvFormat {
    /// Size of the environment image.
    pub const fn env_len(self) -> usize {
        match self {
            EnvFormat::Protected32 | EnvFormat::Real32 => 28,
            EnvFormat::Protected16 | EnvFormat::Real16 => 14,
        }
    }
    /// Size of the FNSAVE image.
    pub const fn save_len(self) -> usize {
        self.env_len() + 80
    }
}

/// EFLAGS bits produced by FCOMI/FUCOMI (ZF, PF, CF).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CompareFlags {
    /// ZF
    pub zf: bool,
    /// PF
    pub pf: bool,
    /// CF
    pub cf: bool,
}

/// The x87 FPU state.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct X87 {
    /// Physical registers R0..R7.
    regs: [F80; 8],
    /// Bit i set: physical register i is empty.
    empty: u8,
    top: u8,
    cw: u16,
    /// Status word without the TOP field.
    sw: u16,
    /// Last instruction pointer (offset), selector, opcode (11 bits).
    pub fip: u64,
    /// Last instruction code selector.
    pub fcs: u16,
    /// Last data pointer (offset).
    pub fdp: u64,
    /// Last data selector.
    pub fds: u16,
    /// Last opcode (low 11 bits of the two opcode bytes).
    pub fop: u16,
}

impl Default for X87 {
    fn default() -> X87 {
        X87::new()
    }
}

const WRITE_BLOCKERS: u8 = IE | DE | ZE;

impl X87 {
    /// The state after FNINIT.
    pub fn new() -> X87 {
        X87 {
            regs: [F80::ZERO; 8],
            empty: 0xFF,
            top: 0,
            cw: 0x037F,
            sw: 0,
            fip: 0,
            fcs: 0,
            fdp: 0,
            fds: 0,
            fop: 0,
        }
    }

    // ----- plain accessors -----

    /// The control word.
    pub fn control_word(&self) -> u16 {
        self.cw
    }

    /// The status word including TOP.
    pub fn status_word(&self) -> u16 {
        (self.sw & !sw::TOP) | ((self.top as u16 & 7) << 11)
    }

    /// TOP.
    pub fn top(&self) -> u8 {
        self.top
    }

    /// The full tag word (2 bits per physical register: 00 valid, 01 zero, 10 special,
    /// 11 empty).
    pub fn tag_word(&self) -> u16 {
        let mut t = 0u16;
        for i in 0..8 {
            let tag = if self.empty & (1 << i) != 0 {
                3
            } else {
                let r = self.regs[i];
                match r.class() {
                    Class::Zero => 1,
                    Class::Normal => 0,
                    _ => 2,
                }
            };
            t |= tag << (2 * i);
        }
        t
    }

    /// The abridged tag of FXSAVE (bit i set: physical register i not empty).
    pub fn abridged_tag(&self) -> u8 {
        !self.empty
    }

    /// ST(i) (whatever the register holds, empty or not).
    pub fn st(&self, i: u8) -> F80 {
        self.regs[self.phys(i)]
    }

    /// Whether ST(i) is empty.
    pub fn st_empty(&self, i: u8) -> bool {
        self.empty & (1 << self.phys(i)) != 0
    }

    /// Physical register i.
    pub fn reg(&self, i: u8) -> F80 {
        self.regs[(i & 7) as usize]
    }

    /// Records the last non-control instruction's pointers (FIP, FCS, FOP and, for memory
    /// operands, FDP/FDS), as the hardware does for every non-control instruction.
    pub fn set_pointers(&mut self, fip: u64, fcs: u16, fop: u16, operand: Option<(u64, u16)>) {
        self.fip = fip;
        self.fcs = fcs;
        self.fop = fop & 0x7FF;
        if let Some((fdp, fds)) = operand {
            self.fdp = fdp;
            self.fds = fds;
        }
    }

    fn phys(&self, i: u8) -> usize {
        (self.top.wrapping_add(i) & 7) as usize
    }

    fn ctx(&self) -> Ctx {
        Ctx::from_control_word(self.cw)
    }

    fn masked(&self, f: u8) -> bool {
        (self.cw as u8) & f == f
    }

    fn set_c(&mut self, bit: u16, v: bool) {
        if v {
            self.sw |= bit;
        } else {
            self.sw &= !bit;
        }
    }

    fn set_cond(&mut self, c: Cond) {
        self.set_c(sw::C0, c.c0);
        self.set_c(sw::C1, c.c1);
        self.set_c(sw::C2, c.c2);
        self.set_c(sw::C3, c.c3);
    }

    /// Starts a waiting instruction.
    fn begin(&mut self) -> Result<()> {
        if self.sw & sw::ES != 0 {
            return Err(PendingFault);
        }
        Ok(())
    }

    /// Merges raised flags, sets ES/B for unmasked ones and C1 from rounding. Returns whether
    /// the destination may be written (no unmasked pre-computation exception).
    fn finish(&mut self, ctx: &Ctx) -> bool {
        let mut raised = ctx.flags;
        // An unmasked pre-computation exception stops the instruction before it computes.
        if raised & !(self.cw as u8) & WRITE_BLOCKERS != 0 {
            raised &= WRITE_BLOCKERS;
        }
        self.sw |= raised as u16;
        self.set_c(
            sw::C1,
            ctx.c1_round_up && raised & (PE | OE | UE) != 0 && raised & IE == 0,
        );
        let unmasked = raised & !(self.cw as u8) & 0x3F;
        if unmasked != 0 {
            self.sw |= sw::ES | sw::B;
        }
        unmasked & WRITE_BLOCKERS == 0
    }

    /// Raises a stack fault (IE + SF, C1 = overflow). Returns whether the masked response
    /// applies.
    fn stack_fault(&mut self, overflow: bool) -> bool {
        self.sw |= IE as u16 | sw::SF;
        self.set_c(sw::C1, overflow);
        if self.masked(IE) {
            true
        } else {
            self.sw |= sw::ES | sw::B;
            false
        }
    }

    fn write_st(&mut self, i: u8, v: F80) {
        let p = self.phys(i);
        self.regs[p] = v;
        self.empty &= !(1 << p);
    }

    fn pop(&mut self) {
        let p = self.phys(0);
        self.empty |= 1 << p;
        self.top = (self.top + 1) & 7;
    }

    fn push_raw(&mut self, v: F80) {
        self.top = (self.top + 7) & 7;
        self.write_st(0, v);
    }

    /// Pushes the result of `make` with the stack-overflow rule.
    fn push_with(&mut self, make: impl FnOnce(&mut Ctx) -> F80) -> Result<()> {
        self.begin()?;
        if !self.st_empty(7) {
            if self.stack_fault(true) {
                self.push_raw(F80::INDEFINITE);
            }
            return Ok(());
        }
        let mut ctx = self.ctx();
        let v = make(&mut ctx);
        // Loads complete even with an unmasked denormal-operand exception (host behaviour).
        let unmasked = ctx.flags & !(self.cw as u8);
        self.finish(&ctx);
        if unmasked & (IE | ZE) == 0 {
            self.push_raw(v);
        }
        Ok(())
    }

    /// Reads ST(i) for an operation, or reports stack underflow.
    fn read(&self, i: u8) -> Option<F80> {
        if self.st_empty(i) {
            None
        } else {
            Some(self.st(i))
        }
    }

    // ----- loads -----

    /// FLD m32fp.
    pub fn fld_f32(&mut self, v: u32) -> Result<()> {
        self.push_with(|c| convert::from_f32(c, v))
    }

    /// FLD m64fp.
    pub fn fld_f64(&mut self, v: u64) -> Result<()> {
        self.push_with(|c| convert::from_f64(c, v))
    }

    /// FLD m80fp (no exception but stack overflow; SNaNs load unchanged).
    pub fn fld_f80(&mut self, v: [u8; 10]) -> Result<()> {
        self.push_with(|_| F80::from_bytes(v))
    }

    /// FLD ST(i).
    pub fn fld_st(&mut self, i: u8) -> Result<()> {
        self.begin()?;
        let src = self.read(i);
        if !self.st_empty(7) && src.is_some() {
            if self.stack_fault(true) {
                self.push_raw(F80::INDEFINITE);
            }
            return Ok(());
        }
        match src {
            Some(v) => {
                self.set_c(sw::C1, false);
                self.push_raw(v);
            }
            None => {
                if self.stack_fault(false) {
                    self.push_raw(F80::INDEFINITE);
                }
            }
        }
        Ok(())
    }

    /// FILD m16int/m32int/m64int (the caller sign-extends).
    pub fn fild(&mut self, v: i64) -> Result<()> {
        self.push_with(|_| convert::from_int(v))
    }

    /// FBLD m80bcd.
    pub fn fbld(&mut self, v: [u8; 10]) -> Result<()> {
        self.push_with(|_| convert::from_bcd(v))
    }

    /// FLD1, FLDL2T, FLDL2E, FLDPI, FLDLG2, FLDLN2, FLDZ.
    pub fn fld_const(&mut self, k: Constant) -> Result<()> {
        self.push_with(|c| convert::constant(c, k))
    }

    // ----- stores -----

    /// Runs a store of ST(0): `conv` makes the memory value. Returns None when memory must
    /// not be written (unmasked exception).
    fn store<T>(
        &mut self,
        pop: bool,
        indefinite: T,
        conv: impl FnOnce(&mut Ctx, F80) -> T,
    ) -> Result<Option<T>> {
        self.begin()?;
        let Some(v) = self.read(0) else {
            if self.stack_fault(false) {
                if pop {
                    self.pop();
                }
                return Ok(Some(indefinite));
            }
            return Ok(None);
        };
        let mut ctx = self.ctx();
        let out = conv(&mut ctx, v);
        // Unmasked overflow/underflow on a memory destination: nothing is stored, so
        // nothing is inexact either.
        let unmasked = ctx.flags & !(self.cw as u8);
        if unmasked & (OE | UE) != 0 {
            ctx.flags &= !PE;
        }
        let ok = self.finish(&ctx);
        if !ok || unmasked & (OE | UE) != 0 {
            self.set_c(sw::C1, false);
            return Ok(None);
        }
        if pop {
            self.pop();
        }
        Ok(Some(out))
    }

    /// FST/FSTP m32fp.
    pub fn fst_f32(&mut self, pop: bool) -> Result<Option<u32>> {
        self.store(pop, 0xFFC0_0000, convert::to_f32)
    }

    /// FST/FSTP m64fp.
    pub fn fst_f64(&mut self, pop: bool) -> Result<Option<u64>> {
        self.store(pop, 0xFFF8_0000_0000_0000, convert::to_f64)
    }

    /// FSTP m80fp.
    pub fn fst_f80(&mut self, pop: bool) -> Result<Option<[u8; 10]>> {
        self.store(pop, F80::INDEFINITE.to_bytes(), |_, v| v.to_bytes())
    }

    /// FIST/FISTP (`truncate` false) or FISTTP (`truncate` true) to a `bits`-wide integer;
    /// returned sign-extended (the caller stores the low `bits`).
    pub fn fist(&mut self, bits: u32, pop: bool, truncate: bool) -> Result<Option<i64>> {
        let indefinite = i64::MIN >> (64 - bits.clamp(16, 64));
        self.store(pop, indefinite, |c, v| {
            convert::to_int(c, v, bits, truncate)
        })
    }

    /// FBSTP m80bcd.
    pub fn fbstp(&mut self) -> Result<Option<[u8; 10]>> {
        self.store(true, BCD_INDEFINITE, convert::to_bcd)
    }

    /// FST/FSTP ST(i).
    pub fn fst_st(&mut self, i: u8, pop: bool) -> Result<()> {
        self.begin()?;
        self.set_c(sw::C1, false);
        match self.read(0) {
            Some(v) => self.write_st(i, v),
            None => {
                if !self.stack_fault(false) {
                    return Ok(());
                }
                self.write_st(i, F80::INDEFINITE);
            }
        }
        if pop {
            self.pop();
        }
        Ok(())
    }

    // ----- arithmetic -----

    fn fetch(&self, ctx: &mut Ctx, src: Src) -> Option<F80> {
        match src {
            Src::St(i) => self.read(i),
            Src::F32(v) => Some(convert::widen_f32(ctx, v)),
            Src::F64(v) => Some(convert::widen_f64(ctx, v)),
            Src::I16(v) => Some(convert::from_int(v as i64)),
            Src::I32(v) => Some(convert::from_int(v as i64)),
        }
    }

    /// FADD/FSUB/FSUBR/FMUL/FDIV/FDIVR and their P and FI forms: ST(dst) = ST(dst) op src
    /// (memory forms use dst = 0), then pops when `pop`.
    pub fn arith(&mut self, op: ArithOp, dst: u8, src: Src, pop: bool) -> Result<()> {
        self.begin()?;
        let mut ctx = self.ctx();
        let (Some(d), Some(s)) = (self.read(dst), self.fetch(&mut ctx, src)) else {
            if self.stack_fault(false) {
                self.write_st(dst, F80::INDEFINITE);
                if pop {
                    self.pop();
                }
            }
            return Ok(());
        };
        // A denormal memory operand reports DE only where a register operand would: not
        // next to a NaN or unsupported operand, not for a finite dividend over zero.
        if ctx.flags & DE != 0 {
            let (num, den) = if op == ArithOp::Div { (d, s) } else { (s, d) };
            let nan_like = |v: F80| v.is_nan() || v.is_unsupported();
            let div = matches!(op, ArithOp::Div | ArithOp::DivR);
            if nan_like(d)
                || nan_like(s)
                || (div && den.is_zero() && !num.is_zero() && !num.is_inf())
            {
                ctx.flags &= !DE;
            }
        }
        let r = match op {
            ArithOp::Add => arith::add(&mut ctx, d, s),
            ArithOp::Sub => arith::sub(&mut ctx, d, s),
            ArithOp::SubR => arith::sub(&mut ctx, s, d),
            ArithOp::Mul => arith::mul(&mut ctx, d, s),
            ArithOp::Div => arith::div(&mut ctx, d, s),
            ArithOp::DivR => arith::div(&mut ctx, s, d),
        };
        if self.finish(&ctx) {
            self.write_st(dst, r);
            if pop {
                self.pop();
            }
        }
        Ok(())
    }

    /// Applies a one-operand operation to ST(0).
    fn unary(&mut self, f: impl FnOnce(&mut Ctx, F80) -> F80) -> Result<()> {
        self.begin()?;
        let Some(v) = self.read(0) else {
            if self.stack_fault(false) {
                self.write_st(0, F80::INDEFINITE);
            }
            return Ok(());
        };
        let mut ctx = self.ctx();
        let r = f(&mut ctx, v);
        if self.finish(&ctx) {
            self.write_st(0, r);
        }
        Ok(())
    }

    /// FSQRT.
    pub fn fsqrt(&mut self) -> Result<()> {
        self.unary(arith::sqrt)
    }

    /// FRNDINT.
    pub fn frndint(&mut self) -> Result<()> {
        self.unary(arith::round_to_int)
    }

    /// FCHS (sets C1 = 0; no numeric exception).
    pub fn fchs(&mut self) -> Result<()> {
        self.unary(|_, v| v.neg())?;
        self.set_c(sw::C1, false);
        Ok(())
    }

    /// FABS.
    pub fn fabs(&mut self) -> Result<()> {
        self.unary(|_, v| v.abs())?;
        self.set_c(sw::C1, false);
        Ok(())
    }

    /// FSCALE: ST(0) × 2^trunc(ST(1)).
    pub fn fscale(&mut self) -> Result<()> {
        self.binary_st0_st1(remainder::fscale)
    }

    fn binary_st0_st1(&mut self, f: impl FnOnce(&mut Ctx, F80, F80) -> F80) -> Result<()> {
        self.begin()?;
        let (Some(a), Some(b)) = (self.read(0), self.read(1)) else {
            if self.stack_fault(false) {
                self.write_st(0, F80::INDEFINITE);
            }
            return Ok(());
        };
        let mut ctx = self.ctx();
        let r = f(&mut ctx, a, b);
        if self.finish(&ctx) {
            self.write_st(0, r);
        }
        Ok(())
    }

    /// FPREM (`ieee` false) / FPREM1 (`ieee` true).
    pub fn fprem(&mut self, ieee: bool) -> Result<()> {
        self.begin()?;
        let (Some(a), Some(b)) = (self.read(0), self.read(1)) else {
            self.set_c(sw::C2, false);
            if self.stack_fault(false) {
                self.write_st(0, F80::INDEFINITE);
            }
            return Ok(());
        };
        let mut ctx = self.ctx();
        let (r, cc) = remainder::fprem(&mut ctx, a, b, ieee);
        let ok = self.finish(&ctx);
        match cc {
            Some(cc) if ok => self.set_cond(cc),
            _ => {
                self.set_c(sw::C1, false);
                self.set_c(sw::C2, false);
            }
        }
        if ok {
            self.write_st(0, r);
        }
        Ok(())
    }

    /// FXTRACT: ST(0) becomes the exponent and the significand is pushed.
    pub fn fxtract(&mut self) -> Result<()> {
        self.begin()?;
        let Some(v) = self.read(0) else {
            if self.stack_fault(false) {
                self.write_st(0, F80::INDEFINITE);
                self.push_raw(F80::INDEFINITE);
            }
            return Ok(());
        };
        if !self.st_empty(7) {
            if self.stack_fault(true) {
                self.write_st(0, F80::INDEFINITE);
                self.push_raw(F80::INDEFINITE);
            }
            return Ok(());
        }
        let mut ctx = self.ctx();
        let (e, s) = remainder::fxtract(&mut ctx, v);
        if self.finish(&ctx) {
            self.write_st(0, e);
            self.push_raw(s);
        }
        Ok(())
    }

    // ----- transcendentals -----

    /// FSIN/FCOS: C2 = 1 and ST(0) unchanged when |ST(0)| ≥ 2^63.
    fn trig_unary(&mut self, f: impl FnOnce(&mut Ctx, F80) -> Option<F80>) -> Result<()> {
        self.begin()?;
        let Some(v) = self.read(0) else {
            self.set_c(sw::C2, false);
            if self.stack_fault(false) {
                self.write_st(0, F80::INDEFINITE);
            }
            return Ok(());
        };
        let mut ctx = self.ctx();
        match f(&mut ctx, v) {
            None => {
                self.set_c(sw::C2, true);
                self.set_c(sw::C1, false);
            }
            Some(r) => {
                self.set_c(sw::C2, false);
                if self.finish(&ctx) {
                    self.write_st(0, r);
                }
            }
        }
        Ok(())
    }

    /// FSIN.
    pub fn fsin(&mut self) -> Result<()> {
        self.trig_unary(transcend::fsin)
    }

    /// FCOS.
    pub fn fcos(&mut self) -> Result<()> {
        self.trig_unary(transcend::fcos)
    }

    /// ST(0) ← first, then push second (FSINCOS, FPTAN), with the stack rules.
    fn replace_and_push(
        &mut self,
        f: impl FnOnce(&mut Ctx, F80) -> Option<(F80, F80)>,
    ) -> Result<()> {
        self.begin()?;
        let Some(v) = self.read(0) else {
            self.set_c(sw::C2, false);
            if self.stack_fault(false) {
                self.write_st(0, F80::INDEFINITE);
                self.push_raw(F80::INDEFINITE);
            }
            return Ok(());
        };
        if !self.st_empty(7) {
            self.set_c(sw::C2, false);
            if self.stack_fault(true) {
                self.write_st(0, F80::INDEFINITE);
                self.push_raw(F80::INDEFINITE);
            }
            return Ok(());
        }
        let mut ctx = self.ctx();
        match f(&mut ctx, v) {
            None => {
                self.set_c(sw::C2, true);
                self.set_c(sw::C1, false);
            }
            Some((a, b)) => {
                self.set_c(sw::C2, false);
                if self.finish(&ctx) {
                    self.write_st(0, a);
                    self.push_raw(b);
                }
            }
        }
        Ok(())
    }

    /// FSINCOS: ST(0) ← sin, then push cos.
    pub fn fsincos(&mut self) -> Result<()> {
        self.replace_and_push(transcend::fsincos)
    }

    /// FPTAN: ST(0) ← tan, then push 1.0.
    pub fn fptan(&mut self) -> Result<()> {
        // A NaN result is pushed in place of the 1.0 as well (host behaviour).
        self.replace_and_push(|c, v| {
            transcend::fptan(c, v).map(|t| (t, if t.is_nan() { t } else { F80::ONE }))
        })
    }

    /// ST(1) ← f(ST(1), ST(0)), pop (FPATAN, FYL2X, FYL2XP1).
    fn st1_op_pop(&mut self, f: impl FnOnce(&mut Ctx, F80, F80) -> F80) -> Result<()> {
        self.begin()?;
        let (Some(x), Some(y)) = (self.read(0), self.read(1)) else {
            if self.stack_fault(false) {
                self.write_st(1, F80::INDEFINITE);
                self.pop();
            }
            return Ok(());
        };
        let mut ctx = self.ctx();
        let r = f(&mut ctx, y, x);
        if self.finish(&ctx) {
            self.write_st(1, r);
            self.pop();
        }
        Ok(())
    }

    /// FPATAN: ST(1) ← atan(ST(1)/ST(0)), pop.
    pub fn fpatan(&mut self) -> Result<()> {
        self.st1_op_pop(transcend::fpatan)
    }

    /// FYL2X: ST(1) ← ST(1)·log2 ST(0), pop.
    pub fn fyl2x(&mut self) -> Result<()> {
        self.st1_op_pop(transcend::fyl2x)
    }

    /// FYL2XP1: ST(1) ← ST(1)·log2(ST(0) + 1), pop.
    pub fn fyl2xp1(&mut self) -> Result<()> {
        self.st1_op_pop(transcend::fyl2xp1)
    }

    /// F2XM1: ST(0) ← 2^ST(0) − 1.
    pub fn f2xm1(&mut self) -> Result<()> {
        self.unary(transcend::f2xm1)
    }

    // ----- compares -----

    fn set_compare_cc(&mut self, o: Ordering) {
        let (c3, c2, c0) = o.fcom_cc();
        self.set_c(sw::C3, c3);
        self.set_c(sw::C2, c2);
        self.set_c(sw::C0, c0);
    }

    /// FCOM/FCOMP/FCOMPP (`quiet` false) and FUCOM/FUCOMP/FUCOMPP (`quiet` true), FICOM
    /// (integer sources): compares ST(0) with `src`, then pops `pops` times (0..=2).
    pub fn fcom(&mut self, src: Src, pops: u8, quiet: bool) -> Result<()> {
        self.begin()?;
        let mut ctx = self.ctx();
        let (a, b) = (self.read(0), self.fetch(&mut ctx, src));
        self.set_c(sw::C1, false);
        let (Some(a), Some(b)) = (a, b) else {
            self.set_compare_cc(Ordering::Unordered);
            if self.stack_fault(false) {
                for _ in 0..pops.min(2) {
                    self.pop();
                }
            }
            return Ok(());
        };
        // As for arithmetic: a denormal memory operand next to a NaN reports no DE.
        let nan_like = |v: F80| v.is_nan() || v.is_unsupported();
        if nan_like(a) || nan_like(b) {
            ctx.flags &= !DE;
        }
        let o = arith::compare(&mut ctx, a, b, quiet);
        // The condition codes are written even when an unmasked exception is reported.
        self.set_compare_cc(o);
        if self.finish(&ctx) {
            for _ in 0..pops.min(2) {
                self.pop();
            }
        }
        Ok(())
    }

    /// FTST: compares ST(0) with 0.0.
    pub fn ftst(&mut self) -> Result<()> {
        self.begin()?;
        self.set_c(sw::C1, false);
        let Some(a) = self.read(0) else {
            self.set_compare_cc(Ordering::Unordered);
            self.stack_fault(false);
            return Ok(());
        };
        let mut ctx = self.ctx();
        let o = arith::compare(&mut ctx, a, F80::ZERO, false);
        self.set_compare_cc(o);
        self.finish(&ctx);
        Ok(())
    }

    /// FCOMI/FCOMIP (`quiet` false), FUCOMI/FUCOMIP: compares ST(0) with ST(i) and returns
    /// the ZF/PF/CF values for EFLAGS, or None when an unmasked exception leaves them alone.
    pub fn fcomi(&mut self, i: u8, pop: bool, quiet: bool) -> Result<Option<CompareFlags>> {
        self.begin()?;
        // C1 changes only on stack underflow (as on the host; the SDM says it is cleared).
        let (o, ok) = match (self.read(0), self.read(i)) {
            (Some(a), Some(b)) => {
                let mut ctx = self.ctx();
                let o = arith::compare(&mut ctx, a, b, quiet);
                let c1 = self.sw & sw::C1;
                let ok = self.finish(&ctx);
                self.sw = (self.sw & !sw::C1) | c1;
                (o, ok)
            }
            _ => (Ordering::Unordered, self.stack_fault(false)),
        };
        if pop && ok {
            self.pop();
        }
        let (zf, pf, cf) = o.fcom_cc();
        Ok(Some(CompareFlags { zf, pf, cf }))
    }

    /// FXAM: classifies ST(0) into C3..C0 (works on empty registers, no exception).
    pub fn fxam(&mut self) -> Result<()> {
        self.begin()?;
        let (c3, c2, c1, c0) = arith::fxam(self.st(0), self.st_empty(0));
        self.set_cond(Cond { c0, c1, c2, c3 });
        Ok(())
    }

    // ----- register stack -----

    /// FXCH ST(i).
    pub fn fxch(&mut self, i: u8) -> Result<()> {
        self.begin()?;
        self.set_c(sw::C1, false);
        let (a, b) = (self.read(0), self.read(i));
        let (a, b) = match (a, b) {
            (Some(a), Some(b)) => (a, b),
            (a, b) => {
                if !self.stack_fault(false) {
                    return Ok(());
                }
                (a.unwrap_or(F80::INDEFINITE), b.unwrap_or(F80::INDEFINITE))
            }
        };
        self.write_st(0, b);
        self.write_st(i, a);
        Ok(())
    }

    /// FFREE ST(i).
    pub fn ffree(&mut self, i: u8) -> Result<()> {
        self.begin()?;
        self.set_c(sw::C1, false);
        let p = self.phys(i);
        self.empty |= 1 << p;
        Ok(())
    }

    /// FFREEP ST(i) (undocumented DF C0+i): FFREE, then pop.
    pub fn ffreep(&mut self, i: u8) -> Result<()> {
        self.ffree(i)?;
        self.pop();
        Ok(())
    }

    /// FINCSTP.
    pub fn fincstp(&mut self) -> Result<()> {
        self.begin()?;
        self.top = (self.top + 1) & 7;
        self.set_c(sw::C1, false);
        Ok(())
    }

    /// FDECSTP.
    pub fn fdecstp(&mut self) -> Result<()> {
        self.begin()?;
        self.top = (self.top + 7) & 7;
        self.set_c(sw::C1, false);
        Ok(())
    }

    /// FCMOVcc ST(0), ST(i): the caller evaluates the EFLAGS condition.
    pub fn fcmov(&mut self, cond: bool, i: u8) -> Result<()> {
        self.begin()?;
        if self.st_empty(0) || self.st_empty(i) {
            // The masked stack-underflow response writes the indefinite whatever the
            // condition (host behaviour).
            if self.stack_fault(false) {
                self.write_st(0, F80::INDEFINITE);
            }
            return Ok(());
        }
        if cond {
            let v = self.st(i);
            self.write_st(0, v);
        }
        Ok(())
    }

    /// FNOP / FWAIT: only the pending-exception check.
    pub fn fwait(&mut self) -> Result<()> {
        self.begin()
    }

    // ----- control -----

    /// FLDCW. Unmasking a raised exception sets ES (the #MF comes with the next waiting
    /// instruction).
    pub fn fldcw(&mut self, cw: u16) -> Result<()> {
        self.begin()?;
        self.load_cw(cw);
        Ok(())
    }

    fn load_cw(&mut self, cw: u16) {
        self.cw = (cw & 0x1F3F) | 0x0040;
        self.update_es();
    }

    fn update_es(&mut self) {
        if (self.sw as u8) & !(self.cw as u8) & 0x3F != 0 {
            self.sw |= sw::ES | sw::B;
        } else {
            self.sw &= !(sw::ES | sw::B);
        }
    }

    /// FNSTCW (no wait).
    pub fn fnstcw(&self) -> u16 {
        self.cw
    }

    /// FNSTSW (no wait).
    pub fn fnstsw(&self) -> u16 {
        self.status_word()
    }

    /// FNCLEX: clears the exception flags, SF, ES and B.
    pub fn fnclex(&mut self) {
        self.sw &= !(0x3F | sw::SF | sw::ES | sw::B);
    }

    /// FNINIT: control word 037FH, status word 0, every register empty, the pointers
    /// cleared. The data registers keep their contents (SDM Vol. 2 "FINIT/FNINIT"): FNSAVE
    /// and the MMX registers still show them.
    pub fn fninit(&mut self) {
        *self = X87 {
            regs: self.regs,
            ..X87::new()
        };
    }

    /// FNSTENV: stores the environment, then masks all exceptions.
    pub fn fnstenv(&mut self, fmt: EnvFormat) -> Vec<u8> {
        let img = self.env_image(fmt);
        // With every exception masked nothing is pending any more: ES and B clear (host).
        self.load_cw(self.cw | 0x3F);
        img
    }

    fn env_image(&self, fmt: EnvFormat) -> Vec<u8> {
        let mut v = Vec::with_capacity(fmt.save_len());
        match fmt {
            EnvFormat::Protected32 => {
                let mut d = |lo: u16, hi: u16| {
                    v.extend_from_slice(&lo.to_le_bytes());
                    v.extend_from_slice(&hi.to_le_bytes());
                };
                d(self.cw, 0xFFFF);
                d(self.status_word(), 0xFFFF);
                d(self.tag_word(), 0xFFFF);
                d(self.fip as u16, (self.fip >> 16) as u16);
                d(self.fcs, self.fop & 0x7FF);
                d(self.fdp as u16, (self.fdp >> 16) as u16);
                d(self.fds, 0xFFFF);
            }
            EnvFormat::Protected16 => {
                for w in [
                    self.cw,
                    self.status_word(),
                    self.tag_word(),
                    self.fip as u16,
                    self.fcs,
                    self.fdp as u16,
                    self.fds,
                ] {
                    v.extend_from_slice(&w.to_le_bytes());
                }
            }
            EnvFormat::Real32 => {
                let mut d = |x: u32| v.extend_from_slice(&x.to_le_bytes());
                d(0xFFFF_0000 | self.cw as u32);
                d(0xFFFF_0000 | self.status_word() as u32);
                d(0xFFFF_0000 | self.tag_word() as u32);
                d(0xFFFF_0000 | (self.fip as u32 & 0xFFFF));
                d(((self.fip as u32 >> 16) << 12) | (self.fop as u32 & 0x7FF));
                d(0xFFFF_0000 | (self.fdp as u32 & 0xFFFF));
                d((self.fdp as u32 >> 16) << 12);
            }
            EnvFormat::Real16 => {
                for w in [
                    self.cw,
                    self.status_word(),
                    self.tag_word(),
                    self.fip as u16,
                    (((self.fip >> 16) as u16 & 0xF) << 12) | (self.fop & 0x7FF),
                    self.fdp as u16,
                    ((self.fdp >> 16) as u16 & 0xF) << 12,
                ] {
                    v.extend_from_slice(&w.to_le_bytes());
                }
            }
        }
        v
    }

    /// FLDENV from an image of `fmt.env_len()` bytes (shorter images read as zero-filled).
    /// The processor checks for a pending unmasked exception before FLDENV and FRSTOR as
    /// before any waiting instruction (#MF, checked on the host); these methods load the
    /// image whatever is pending, which the caller checks first (`fwait`). An unmasked
    /// exception in the loaded image is reported by the next waiting instruction.
    pub fn fldenv(&mut self, fmt: EnvFormat, img: &[u8]) -> Result<()> {
        self.load_env(fmt, img);
        Ok(())
    }

    fn load_env(&mut self, fmt: EnvFormat, img: &[u8]) {
        let w = |o: usize| -> u16 {
            let b0 = img.get(o).copied().unwrap_or(0);
            let b1 = img.get(o + 1).copied().unwrap_or(0);
            u16::from_le_bytes([b0, b1])
        };
        let (cw, swd, tw) = match fmt {
            EnvFormat::Protected32 => {
                self.fip = w(12) as u64 | (w(14) as u64) << 16;
                self.fcs = w(16);
                self.fop = w(18) & 0x7FF;
                self.fdp = w(20) as u64 | (w(22) as u64) << 16;
                self.fds = w(24);
                (w(0), w(4), w(8))
            }
            EnvFormat::Protected16 => {
                // The 16-bit protected-mode image has no FOP: it loads as 0 (host behaviour).
                self.fip = w(6) as u64;
                self.fcs = w(8);
                self.fop = 0;
                self.fdp = w(10) as u64;
                self.fds = w(12);
                (w(0), w(2), w(4))
            }
            EnvFormat::Real32 => {
                self.fip = w(12) as u64 | ((w(16) as u64 | (w(18) as u64) << 16) >> 12) << 16;
                self.fop = w(16) & 0x7FF;
                self.fdp = w(20) as u64 | ((w(24) as u64 | (w(26) as u64) << 16) >> 12) << 16;
                (w(0), w(4), w(8))
            }
            EnvFormat::Real16 => {
                self.fip = w(6) as u64 | ((w(8) >> 12) as u64) << 16;
                self.fop = w(8) & 0x7FF;
                self.fdp = w(10) as u64 | ((w(12) >> 12) as u64) << 16;
                (w(0), w(2), w(4))
            }
        };
        self.sw = swd & !sw::TOP;
        self.top = ((swd >> 11) & 7) as u8;
        let mut empty = 0u8;
        for i in 0..8 {
            if (tw >> (2 * i)) & 3 == 3 {
                empty |= 1 << i;
            }
        }
        self.empty = empty;
        self.load_cw(cw);
    }

    /// FNSAVE: the environment then ST(0)..ST(7), then FNINIT.
    pub fn fnsave(&mut self, fmt: EnvFormat) -> Vec<u8> {
        let mut img = self.env_image(fmt);
        for i in 0..8 {
            img.extend_from_slice(&self.st(i).to_bytes());
        }
        self.fninit();
        img
    }

    /// The FNSAVE image without the reinitialization.
    pub fn save_image(&self, fmt: EnvFormat) -> Vec<u8> {
        let mut img = self.env_image(fmt);
        for i in 0..8 {
            img.extend_from_slice(&self.st(i).to_bytes());
        }
        img
    }

    /// FRSTOR from an image of `fmt.save_len()` bytes.
    pub fn frstor(&mut self, fmt: EnvFormat, img: &[u8]) -> Result<()> {
        self.load_env(fmt, img);
        let base = fmt.env_len();
        for i in 0..8u8 {
            let mut b = [0u8; 10];
            for (k, byte) in b.iter_mut().enumerate() {
                *byte = img.get(base + 10 * i as usize + k).copied().unwrap_or(0);
            }
            let p = self.phys(i);
            self.regs[p] = F80::from_bytes(b);
        }
        Ok(())
    }

    /// FXSAVE: writes the x87 part of the 512-byte image (bytes 0..24 except MXCSR, and the
    /// registers at 32..160). `rex_w` selects the 64-bit FIP/FDP layout.
    pub fn fxsave(&self, img: &mut [u8; 512], rex_w: bool) {
        img[0..2].copy_from_slice(&self.cw.to_le_bytes());
        img[2..4].copy_from_slice(&self.status_word().to_le_bytes());
        img[4] = self.abridged_tag();
        img[5] = 0;
        img[6..8].copy_from_slice(&self.fop.to_le_bytes());
        if rex_w {
            img[8..16].copy_from_slice(&self.fip.to_le_bytes());
            img[16..24].copy_from_slice(&self.fdp.to_le_bytes());
        } else {
            img[8..12].copy_from_slice(&(self.fip as u32).to_le_bytes());
            img[12..14].copy_from_slice(&self.fcs.to_le_bytes());
            img[14..16].fill(0);
            img[16..20].copy_from_slice(&(self.fdp as u32).to_le_bytes());
            img[20..22].copy_from_slice(&self.fds.to_le_bytes());
            img[22..24].fill(0);
        }
        for i in 0..8u8 {
            let o = 32 + 16 * i as usize;
            img[o..o + 10].copy_from_slice(&self.st(i).to_bytes());
            img[o + 10..o + 16].fill(0);
        }
    }

    /// FXRSTOR: loads the x87 part of the image.
    pub fn fxrstor(&mut self, img: &[u8; 512], rex_w: bool) {
        let w = |o: usize| u16::from_le_bytes([img[o], img[o + 1]]);
        let d = |o: usize| u32::from_le_bytes([img[o], img[o + 1], img[o + 2], img[o + 3]]);
        let swd = w(2);
        self.sw = swd & !sw::TOP;
        self.top = ((swd >> 11) & 7) as u8;
        self.empty = !img[4];
        self.fop = w(6) & 0x7FF;
        if rex_w {
            self.fip = d(8) as u64 | (d(12) as u64) << 32;
            self.fdp = d(16) as u64 | (d(20) as u64) << 32;
        } else {
            self.fip = d(8) as u64;
            self.fcs = w(12);
            self.fdp = d(16) as u64;
            self.fds = w(20);
        }
        for i in 0..8u8 {
            let o = 32 + 16 * i as usize;
            let mut b = [0u8; 10];
            b.copy_from_slice(&img[o..o + 10]);
            let p = self.phys(i);
            self.regs[p] = F80::from_bytes(b);
        }
        self.load_cw(w(0));
    }

    // ----- MMX aliasing -----

    /// MMX register i (the significand of physical register i).
    pub fn as_mmx(&self, i: u8) -> u64 {
        self.regs[(i & 7) as usize].signif
    }

    /// Any MMX instruction: TOP = 0 and every register tagged valid.
    pub fn mmx_enter(&mut self) {
        self.top = 0;
        self.empty = 0;
    }

    /// Writes MMX register i: exponent and sign all ones, TOP = 0, all tags valid.
    pub fn set_mmx(&mut self, i: u8, v: u64) {
        self.mmx_enter();
        self.regs[(i & 7) as usize] = F80 {
            signif: v,
            se: 0xFFFF,
        };
    }

    /// EMMS: every register empty. Like every MMX instruction it also sets TOP to 0 (host
    /// behaviour; the SDM names only the tags).
    pub fn emms(&mut self) {
        self.top = 0;
        self.empty = 0xFF;
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::host::{self, hexf, state, HostOut, Rng};

    fn image(x: &X87) -> [u8; 108] {
        let mut img = [0u8; 108];
        img.copy_from_slice(&x.save_image(EnvFormat::Protected32));
        img
    }

    fn mem_of(b: &[u8]) -> [u8; 16] {
        let mut m = [0u8; 16];
        m[..b.len()].copy_from_slice(b);
        m
    }

    /// Compares control, status, tag words and registers (not the pointers).
    fn same_state(soft: &[u8; 108], h: &HostOut) -> bool {
        let ranges = [0..2, 4..6, 8..10, 28..108];
        ranges.iter().all(|r| soft[r.clone()] == h.image[r.clone()])
    }

    fn dump(img: &[u8; 108]) -> String {
        let w = |o: usize| u16::from_le_bytes([img[o], img[o + 1]]);
        let mut s = format!("cw={:04x} sw={:04x} tw={:04x}", w(0), w(4), w(8));
        for i in 0..8 {
            let mut b = [0u8; 10];
            b.copy_from_slice(&img[28 + 10 * i..38 + 10 * i]);
            s += &format!(" {}", hexf(F80::from_bytes(b)));
        }
        s
    }

    #[test]
    fn random_sequences_match_host() {
        let mut rng = Rng(77);
        let mut x = X87::new();
        let mut bad = 0;
        let ops = 45;
        for step in 0..60000 {
            if x.status_word() & sw::ES != 0 || step % 500 == 0 {
                x.fnclex();
            }
            if step % 3000 == 0 {
                x.fninit();
            }
            let img = image(&x);
            let op = rng.below(ops);
            let v80 = rng.f80();
            let rbits = rng.next();
            let m80 = mem_of(&v80.to_bytes());
            let m64 = mem_of(&rbits.to_le_bytes());
            let f32bits = (rbits as u32 & 0x807F_FFFF)
                | [0, 0x7F80_0000, 0x3F80_0000, 0x4000_0000][rng.below(4) as usize];
            let m32 = mem_of(&f32bits.to_le_bytes());
            let before = x.clone();
            let mut soft_mem: Option<Vec<u8>> = None;
            let mut soft_fl: Option<Option<CompareFlags>> = None;
            let (name, h) = match op {
                0..=2 => {
                    x.fld_f80(v80.to_bytes()).ok();
                    ("fld80", state::fld80(&img, m80))
                }
                3 => {
                    x.fld_f32(f32bits).ok();
                    ("fld32", state::fld32(&img, m32))
                }
                4 => {
                    x.fld_f64(rbits).ok();
                    ("fld64", state::fld64(&img, m64))
                }
                5 => {
                    x.fild(rbits as i32 as i64).ok();
                    ("fild32", state::fild32(&img, m64))
                }
                6 => {
                    x.fld_st(2).ok();
                    ("fld st2", state::fld_st2(&img, m64))
                }
                7 => {
                    x.fld_const(Constant::Pi).ok();
                    ("fldpi", state::fldpi(&img, m64))
                }
                8 => {
                    x.arith(ArithOp::Add, 0, Src::St(1), false).ok();
                    ("fadd", state::fadd(&img, m64))
                }
                9 => {
                    x.arith(ArithOp::Add, 2, Src::St(0), false).ok();
                    ("fadd st2", state::fadd_to2(&img, m64))
                }
                10 => {
                    x.arith(ArithOp::Add, 1, Src::St(0), true).ok();
                    ("faddp", state::faddp(&img, m64))
                }
                11 => {
                    x.arith(ArithOp::SubR, 1, Src::St(0), true).ok();
                    ("fsubrp", state::fsubrp(&img, m64))
                }
                12 => {
                    x.arith(ArithOp::Mul, 0, Src::F32(f32bits), false).ok();
                    ("fmul m32", state::fmul_m32(&img, m32))
                }
                13 => {
                    x.arith(ArithOp::Div, 0, Src::F64(rbits), false).ok();
                    ("fdiv m64", state::fdiv_m64(&img, m64))
                }
                14 => {
                    x.arith(ArithOp::DivR, 0, Src::I16(rbits as i16), false)
                        .ok();
                    ("fidivr m16", state::fidivr_m16(&img, m64))
                }
                15 => {
                    x.fsqrt().ok();
                    ("fsqrt", state::fsqrt(&img, m64))
                }
                16 => {
                    x.frndint().ok();
                    ("frndint", state::frndint(&img, m64))
                }
                17 => {
                    x.fscale().ok();
                    ("fscale", state::fscale(&img, m64))
                }
                18 => {
                    x.fprem(false).ok();
                    ("fprem", state::fprem(&img, m64))
                }
                19 => {
                    x.fxtract().ok();
                    ("fxtract", state::fxtract(&img, m64))
                }
                20 => {
                    x.fchs().ok();
                    ("fchs", state::fchs(&img, m64))
                }
                21 => {
                    x.fabs().ok();
                    ("fabs", state::fabs(&img, m64))
                }
                22 => {
                    let r = x.fst_f64(true).ok().flatten();
                    soft_mem = Some(
                        r.map(|v| v.to_le_bytes().to_vec())
                            .unwrap_or(m64[..8].to_vec()),
                    );
                    ("fstp m64", state::fstp_m64(&img, m64))
                }
                23 => {
                    let r = x.fst_f32(false).ok().flatten();
                    soft_mem = Some(
                        r.map(|v| v.to_le_bytes().to_vec())
                            .unwrap_or(m64[..4].to_vec()),
                    );
                    ("fst m32", state::fst_m32(&img, m64))
                }
                24 => {
                    let r = x.fist(32, true, false).ok().flatten();
                    soft_mem = Some(
                        r.map(|v| (v as i32).to_le_bytes().to_vec())
                            .unwrap_or(m64[..4].to_vec()),
                    );
                    ("fistp m32", state::fistp_m32(&img, m64))
                }
                25 => {
                    let r = x.fst_f80(true).ok().flatten();
                    soft_mem = Some(r.map(|v| v.to_vec()).unwrap_or(m80[..10].to_vec()));
                    ("fstp m80", state::fstp_m80(&img, m80))
                }
                26 => {
                    x.fst_st(3, false).ok();
                    ("fst st3", state::fst_st3(&img, m64))
                }
                27 => {
                    x.fst_st(1, true).ok();
                    ("fstp st1", state::fstp_st1(&img, m64))
                }
                28 => {
                    x.fcom(Src::St(1), 0, false).ok();
                    ("fcom", state::fcom(&img, m64))
                }
                29 => {
                    x.fcom(Src::St(1), 2, false).ok();
                    ("fcompp", state::fcompp(&img, m64))
                }
                30 => {
                    x.fcom(Src::St(2), 1, true).ok();
                    ("fucomp", state::fucomp(&img, m64))
                }
                31 => {
                    x.ftst().ok();
                    ("ftst", state::ftst(&img, m64))
                }
                32 => {
                    x.fxam().ok();
                    ("fxam", state::fxam(&img, m64))
                }
                33 => {
                    x.fxch(2).ok();
                    ("fxch", state::fxch2(&img, m64))
                }
                34 => {
                    x.ffree(1).ok();
                    ("ffree", state::ffree1(&img, m64))
                }
                35 => {
                    if rng.bool() {
                        x.fincstp().ok();
                        ("fincstp", state::fincstp(&img, m64))
                    } else {
                        x.fdecstp().ok();
                        ("fdecstp", state::fdecstp(&img, m64))
                    }
                }
                36 => {
                    soft_fl = Some(x.fcomi(1, true, false).ok().flatten());
                    ("fcomip", state::fcomip(&img, m64))
                }
                37 => {
                    soft_fl = Some(x.fcomi(3, false, true).ok().flatten());
                    ("fucomi", state::fucomi(&img, m64))
                }
                40 => {
                    x.fcom(Src::F32(f32bits), 0, false).ok();
                    ("fcom m32", state::fcom_m32(&img, m32))
                }
                41 => {
                    x.fcom(Src::St(1), 1, true).ok();
                    ("fucomp st1", state::fucomp_st1(&img, m32))
                }
                42 => {
                    x.fcom(Src::I16(rbits as i16), 1, false).ok();
                    ("ficomp m16", state::ficomp_m16(&img, m64))
                }
                43 => {
                    x.arith(ArithOp::Add, 0, Src::I32(rbits as i32), false).ok();
                    ("fiadd m32", state::fiadd_m32(&img, m64))
                }
                44 => {
                    let v = rbits & 0x800F_FFFF_FFFF_FFFF
                        | [0, 0x7FF0_0000_0000_0000, 0x3FF0_0000_0000_0000][rng.below(3) as usize];
                    x.arith(ArithOp::SubR, 0, Src::F64(v), false).ok();
                    (
                        "fsubr m64",
                        state::fsubr_m64(&img, mem_of(&v.to_le_bytes())),
                    )
                }
                38 => {
                    // The host's ZF comes from the pushfq of the harness: use FCMOVE with
                    // whatever ZF the host had, read back from its EFLAGS.
                    let h = state::fcmove(&img, m64);
                    x.fcmov(h.eflags & 0x40 != 0, 1).ok();
                    ("fcmove", h)
                }
                _ => {
                    let mut cw = 0x037Fu16 & !0x0F00 | ((rng.below(4) as u16) << 10);
                    cw |= [0u16, 2, 3][rng.below(3) as usize] << 8;
                    for bit in 0..6 {
                        if rng.below(3) == 0 {
                            cw &= !(1 << bit);
                        }
                    }
                    x.fldcw(cw).ok();
                    let h = state::fldcw(&img, mem_of(&cw.to_le_bytes()));
                    ("fldcw", h)
                }
            };
            let soft = image(&x);
            let mut ok = same_state(&soft, &h);
            if let Some(m) = &soft_mem {
                ok &= m[..] == h.mem[..m.len()];
            }
            if let Some(f) = soft_fl {
                let hf = CompareFlags {
                    zf: h.eflags & 0x40 != 0,
                    pf: h.eflags & 4 != 0,
                    cf: h.eflags & 1 != 0,
                };
                if let Some(f) = f {
                    ok &= f == hf;
                }
            }
            if !ok {
                bad += 1;
                if bad < 10 {
                    eprintln!("step {step} {name}\n before {}\n soft   {}\n host   {}\n mem soft={soft_mem:02x?} host={:02x?} fl={soft_fl:?} host eflags={:x}", dump(&image(&before)), dump(&soft), dump(&h.image), &h.mem[..10], h.eflags);
                }
                x.frstor(EnvFormat::Protected32, &h.image).ok();
            }
        }
        assert_eq!(bad, 0);
    }

    #[test]
    fn pending_exception_faults_next_waiting_instruction() {
        let mut x = X87::new();
        x.fldcw(0x037F & !(ZE as u16)).ok();
        x.fld_const(Constant::One).ok();
        x.fld_const(Constant::Zero).ok();
        // 0 / 1 fine; 1 / 0 raises unmasked ZE: destination unchanged, ES set.
        assert_eq!(x.arith(ArithOp::DivR, 0, Src::St(1), false), Ok(()));
        assert_eq!(x.st(0), F80::ZERO);
        assert_ne!(x.status_word() & sw::ES, 0);
        assert_ne!(x.status_word() & sw::B, 0);
        assert_eq!(x.fadd_check(), Err(PendingFault));
        // No-wait forms still work.
        assert_eq!(x.fnstsw() & 0x3F, ZE as u16);
        let _ = x.fnstenv(EnvFormat::Protected32);
        x.fnclex();
        assert_eq!(x.fwait(), Ok(()));
    }

    impl X87 {
        fn fadd_check(&mut self) -> Result<()> {
            self.arith(ArithOp::Add, 0, Src::St(1), false)
        }
    }

    #[test]
    fn stack_overflow_and_underflow() {
        let mut x = X87::new();
        for _ in 0..8 {
            x.fld_const(Constant::One).unwrap_or(());
        }
        assert_eq!(x.status_word() & 0x7F, 0);
        // Ninth push: masked stack overflow loads the indefinite, C1 = 1.
        x.fld_const(Constant::Pi).unwrap_or(());
        assert_eq!(
            x.status_word() & (sw::SF | IE as u16 | sw::C1),
            sw::SF | IE as u16 | sw::C1
        );
        assert_eq!(x.st(0), F80::INDEFINITE);
        // Unmasked underflow: nothing written, ES set, C1 = 0.
        let mut y = X87::new();
        y.fldcw(0x037E).unwrap_or(());
        assert_eq!(y.fst_f64(true), Ok(None));
        assert_eq!(
            y.status_word() & (sw::SF | sw::ES | sw::C1 | 1),
            sw::SF | sw::ES | 1
        );
        assert_eq!(y.top(), 0);
        assert_eq!(y.fst_f64(true), Err(PendingFault));
    }

    #[test]
    fn fnstenv_and_fnsave_match_host() {
        let mut rng = Rng(5);
        for _ in 0..200 {
            let mut x = X87::new();
            for _ in 0..rng.below(9) {
                x.fld_f80(rng.f80().to_bytes()).unwrap_or(());
            }
            x.fldcw(0x0360 | rng.below(0x40) as u16).unwrap_or(());
            x.fnclex();
            let img = image(&x);
            // FNSTENV: same bytes (pointers aside), then every exception masked.
            let (henv, hafter) = host::fnstenv_after_frstor(&img);
            let mut e = x.clone();
            let senv = e.fnstenv(EnvFormat::Protected32);
            assert_eq!(senv[0..12], henv[0..12], "{}", dump(&img));
            assert_eq!(senv[26..28], henv[26..28]);
            assert_eq!(e.control_word(), u16::from_le_bytes([hafter[0], hafter[1]]));
            let h = state::fnclex(&img, [0; 16]);
            let soft = x.fnsave(EnvFormat::Protected32);
            assert!(same_state(&img, &h), "{}\n{}", dump(&img), dump(&h.image));
            // The reserved halves of the 32-bit image read as ones on the host too.
            for r in [2..4, 6..8, 10..12] {
                assert_eq!(soft[r.clone()], h.image[r.clone()]);
            }
            // FNSAVE reinitializes as FNINIT: the registers keep their contents.
            let mut init = X87::new();
            init.regs = x.regs;
            assert_eq!(x, init);
            // Round trip through FRSTOR/FNSAVE and the 16-bit format.
            let mut y = X87::new();
            y.frstor(EnvFormat::Protected32, &soft).unwrap_or(());
            assert_eq!(y.save_image(EnvFormat::Protected32), soft);
            let s16 = y.save_image(EnvFormat::Protected16);
            let mut z = X87::new();
            z.frstor(EnvFormat::Protected16, &s16).unwrap_or(());
            assert_eq!(z.save_image(EnvFormat::Protected16), s16);
            let mut fx = [0u8; 512];
            z.fxsave(&mut fx, false);
            let mut w = X87::new();
            w.fxrstor(&fx, false);
            assert_eq!(w.save_image(EnvFormat::Protected16), s16);
            // Real-mode layouts carry linear 20/32-bit pointers and FOP.
            for (fmt, ip_mask) in [
                (EnvFormat::Real32, 0xFFFF_FFFFu64),
                (EnvFormat::Real16, 0xF_FFFF),
            ] {
                let mut r = w.clone();
                r.set_pointers(
                    rng.next() & ip_mask,
                    0,
                    rng.next() as u16,
                    Some((rng.next() & ip_mask, 0)),
                );
                let img = r.save_image(fmt);
                assert_eq!(img.len(), fmt.save_len());
                let mut back = X87::new();
                back.frstor(fmt, &img).unwrap_or(());
                assert_eq!((back.fip, back.fdp, back.fop), (r.fip, r.fdp, r.fop));
                assert_eq!(back.save_image(fmt), img);
            }
        }
    }

    /// Arbitrary guest input never panics (run in the dev profile for overflow checks).
    #[test]
    fn arbitrary_input_never_panics() {
        let mut rng = Rng(4242);
        let mut x = X87::new();
        for _ in 0..100_000 {
            let v = F80 {
                signif: rng.next(),
                se: rng.next() as u16,
            };
            let v = if rng.bool() { rng.f80() } else { v };
            let i = rng.next() as u8;
            let r = rng.next();
            let mut b10 = [0u8; 10];
            b10.copy_from_slice(&r.to_le_bytes().repeat(2)[..10]);
            if rng.below(50) == 0 {
                x.fldcw(r as u16).ok();
            }
            if x.status_word() & sw::ES != 0 && rng.bool() {
                x.fnclex();
            }
            let _ = match rng.below(40) {
                0 => x.fld_f80(v.to_bytes()),
                1 => x.fld_f32(r as u32),
                2 => x.fld_f64(r),
                3 => x.fbld(b10),
                4 => x.fild(r as i64),
                5 => x.fld_st(i),
                6 => x.fst_st(i, rng.bool()),
                7 => x.fst_f32(rng.bool()).map(|_| ()),
                8 => x.fst_f64(rng.bool()).map(|_| ()),
                9 => x.fst_f80(rng.bool()).map(|_| ()),
                10 => x.fist(r as u32 % 80, rng.bool(), rng.bool()).map(|_| ()),
                11 => x.fbstp().map(|_| ()),
                12 => {
                    let ops = [
                        ArithOp::Add,
                        ArithOp::Sub,
                        ArithOp::SubR,
                        ArithOp::Mul,
                        ArithOp::Div,
                        ArithOp::DivR,
                    ];
                    let src = [
                        Src::St(i),
                        Src::F32(r as u32),
                        Src::F64(r),
                        Src::I16(r as i16),
                        Src::I32(r as i32),
                    ];
                    x.arith(
                        ops[rng.below(6) as usize],
                        i,
                        src[rng.below(5) as usize],
                        rng.bool(),
                    )
                }
                13 => x.fcom(Src::St(i), i, rng.bool()),
                14 => x.fcomi(i, rng.bool(), rng.bool()).map(|_| ()),
                15 => x.fsqrt(),
                16 => x.frndint(),
                17 => x.fscale(),
                18 => x.fprem(rng.bool()),
                19 => x.fxtract(),
                20 => x.fsin(),
                21 => x.fcos(),
                22 => x.fsincos(),
                23 => x.fptan(),
                24 => x.fpatan(),
                25 => x.fyl2x(),
                26 => x.fyl2xp1(),
                27 => x.f2xm1(),
                28 => x.fxch(i),
                29 => x.ffree(i),
                30 => x.fcmov(rng.bool(), i),
                31 => x.fxam(),
                32 => x.ftst(),
                33 => {
                    let img: Vec<u8> = (0..rng.below(120)).map(|_| rng.next() as u8).collect();
                    let fmt = if rng.bool() {
                        EnvFormat::Protected32
                    } else {
                        EnvFormat::Protected16
                    };
                    if rng.bool() {
                        x.frstor(fmt, &img)
                    } else {
                        x.fldenv(fmt, &img)
                    }
                }
                34 => {
                    let mut img = [0u8; 512];
                    for b in img.iter_mut() {
                        *b = rng.next() as u8;
                    }
                    x.fxrstor(&img, rng.bool());
                    Ok(())
                }
                35 => {
                    x.set_mmx(i, r);
                    Ok(())
                }
                36 => {
                    x.emms();
                    Ok(())
                }
                37 => x.fld_const(Constant::Pi),
                38 => x.fincstp().and_then(|_| x.fdecstp()),
                _ => {
                    let _ = x.fnsave(EnvFormat::Protected16);
                    Ok(())
                }
            };
        }
    }

    #[test]
    fn fxsave_matches_host() {
        let mut rng = Rng(6);
        for _ in 0..300 {
            let mut x = X87::new();
            for _ in 0..rng.below(9) {
                x.fld_f80(rng.f80().to_bytes()).unwrap_or(());
            }
            for _ in 0..rng.below(3) {
                x.ffree(rng.below(8) as u8).unwrap_or(());
            }
            x.fldcw(0x0360 | rng.below(0x40) as u16 | ((rng.below(4) as u16) << 10))
                .unwrap_or(());
            x.fnclex();
            let img = image(&x);
            let h = host::fxsave_after_frstor(&img);
            let mut soft = [0u8; 512];
            x.fxsave(&mut soft, false);
            // FCW, FSW, abridged FTW, and the eight 16-byte register slots (FOP and the
            // pointers depend on the host's own instruction stream).
            assert_eq!(soft[0..5], h[0..5], "{}", dump(&img));
            assert_eq!(soft[32..160], h[32..160], "{}", dump(&img));
            let mut y = X87::new();
            y.fxrstor(&soft, false);
            assert_eq!(image(&y), img);
        }
    }

    /// Corner cases found by the interpreter's differential tester, with the values the
    /// host CPU gave (see the commit history of `x86/tests/difftest`).
    #[test]
    fn host_observed_corner_cases() {
        // FNINIT and FNSAVE keep the register contents (visible through FNSAVE and MMX).
        let mut x = X87::new();
        x.fld_const(Constant::Pi).unwrap_or(());
        x.fninit();
        assert_eq!(x.tag_word(), 0xFFFF);
        assert_eq!(x.as_mmx(7), 0xC90F_DAA2_2168_C235);
        // EMMS sets TOP to 0 as well.
        x.fld_const(Constant::One).unwrap_or(());
        x.emms();
        assert_eq!((x.top(), x.tag_word()), (0, 0xFFFF));
        // FNSTENV masks everything, so nothing is pending any more.
        let mut x = X87::new();
        x.fldcw(0x037F & !(ZE as u16)).unwrap_or(());
        x.fld_const(Constant::One).unwrap_or(());
        x.fld_const(Constant::Zero).unwrap_or(());
        x.arith(ArithOp::DivR, 0, Src::St(1), false).unwrap_or(());
        assert_ne!(x.status_word() & sw::ES, 0);
        let _ = x.fnstenv(EnvFormat::Protected32);
        assert_eq!(x.status_word() & (sw::ES | sw::B), 0);
        // A 16-bit protected-mode image has no FOP: it loads as 0.
        x.set_pointers(0, 0, 0x123, None);
        let img = x.save_image(EnvFormat::Protected16);
        x.frstor(EnvFormat::Protected16, &img).unwrap_or(());
        assert_eq!(x.fop, 0);
        // FPREM of a denormal by an infinity: unchanged, DE only, even with UE unmasked.
        let den = F80 {
            signif: 0x07C0_0000_0000_0000,
            se: 0x8000,
        };
        let mut x = X87::new();
        x.fldcw(0x037F & !(UE as u16)).unwrap_or(());
        x.fld_f80(F80::INFINITY.to_bytes()).unwrap_or(());
        x.fld_f80(den.to_bytes()).unwrap_or(());
        x.fprem(false).unwrap_or(());
        assert_eq!(x.st(0), den);
        assert_eq!(x.status_word() & 0xBF, DE as u16);
        // FYL2XP1 with x <= -1: y = +inf gives -inf and y = +0 gives -0, both exact.
        for (y, want) in [
            (F80::INFINITY, F80::INFINITY.neg()),
            (F80::ZERO, F80::ZERO.neg()),
        ] {
            let mut x = X87::new();
            x.fld_f80(y.to_bytes()).unwrap_or(());
            x.fld_f80(F80::new(true, 0x4000, 1 << 63).to_bytes())
                .unwrap_or(());
            x.fyl2xp1().unwrap_or(());
            assert_eq!(x.st(0), want);
            assert_eq!(x.status_word() & 0x3F, 0);
        }
        // FYL2X of a power of two: exact product, inexact and (tiny) underflowing.
        let mut x = X87::new();
        x.fld_f80(F80::new(false, 0, 0x127CD7).to_bytes())
            .unwrap_or(());
        x.fld_f80(F80::new(false, 0x4000, 1 << 63).to_bytes())
            .unwrap_or(());
        x.fyl2x().unwrap_or(());
        assert_eq!(x.st(0), F80::new(false, 0, 0x127CD7));
        assert_eq!(x.status_word() & 0x3F, (PE | UE | DE) as u16);
    }

    #[test]
    fn mmx_aliasing() {
        let mut x = X87::new();
        x.fld_const(Constant::Pi).unwrap_or(());
        x.set_mmx(3, 0x1234_5678_9ABC_DEF0);
        assert_eq!(x.top(), 0);
        assert_eq!(
            x.reg(3),
            F80 {
                signif: 0x1234_5678_9ABC_DEF0,
                se: 0xFFFF
            }
        );
        assert_eq!(x.as_mmx(3), 0x1234_5678_9ABC_DEF0);
        assert_eq!(x.abridged_tag(), 0xFF);
        x.emms();
        assert_eq!(x.tag_word(), 0xFFFF);
        // Against the host: MOVQ into MM3 after some stack traffic.
        let mut rng = Rng(9);
        for _ in 0..200 {
            let mut x = X87::new();
            for _ in 0..rng.below(9) {
                x.fld_f80(rng.f80().to_bytes()).unwrap_or(());
            }
            let img = image(&x);
            let v = rng.next();
            let h = host::movq_mm3_after_frstor(&img, v);
            x.set_mmx(3, v);
            let soft = image(&x);
            assert_eq!(soft[0..12], h[0..12], "{}", dump(&img));
            assert_eq!(soft[28..108], h[28..108], "{}", dump(&img));
        }
    }

    /// Transcendental instructions inside random sequences: stack effects, tags, C2,
    /// exception flags and every register but the results must match the host exactly; the
    /// results must be identical when special (NaN, ∞, 0, operand left in place) and have
    /// the host's class otherwise (the host is not correctly rounded). Also covers
    /// FPREM1, FBLD/FBSTP, FISTTP and FILD m64 exactly.
    #[test]
    fn transcendental_sequences_match_host() {
        let mut rng = Rng(78);
        let mut x = X87::new();
        let mut bad = 0;
        for step in 0..20000 {
            if x.status_word() & sw::ES != 0 || step % 300 == 0 {
                x.fnclex();
            }
            let img = image(&x);
            let v80 = if rng.bool() {
                rng.f80()
            } else {
                F80::new(rng.bool(), (0x3FFF - 3 + rng.below(5)) as u16, rng.signif())
            };
            let m80 = mem_of(&v80.to_bytes());
            let rbits = rng.next();
            let m64 = mem_of(&rbits.to_le_bytes());
            let mut bcd = [0u8; 10];
            for b in bcd.iter_mut().take(9) {
                *b = (((rng.below(10)) << 4) | rng.below(10)) as u8;
            }
            bcd[9] = if rng.bool() { 0x80 } else { 0 };
            // (name, host, result registers compared loosely)
            let (name, h, loose): (&str, HostOut, &[u8]) = match rng.below(20) {
                0..=3 => {
                    x.fld_f80(v80.to_bytes()).ok();
                    ("fld80", state::fld80(&img, m80), &[])
                }
                4 => {
                    x.fld_const(Constant::One).ok();
                    ("fld1", state::fld1(&img, m80), &[])
                }
                5 => {
                    x.fsin().ok();
                    ("fsin", state::fsin(&img, m80), &[0])
                }
                6 => {
                    x.fcos().ok();
                    ("fcos", state::fcos(&img, m80), &[0])
                }
                7 => {
                    x.fsincos().ok();
                    ("fsincos", state::fsincos(&img, m80), &[0, 1])
                }
                8 => {
                    x.fptan().ok();
                    ("fptan", state::fptan(&img, m80), &[1])
                }
                9 => {
                    x.fpatan().ok();
                    ("fpatan", state::fpatan(&img, m80), &[0])
                }
                10 => {
                    x.fyl2x().ok();
                    ("fyl2x", state::fyl2x(&img, m80), &[0])
                }
                11 => {
                    x.fyl2xp1().ok();
                    ("fyl2xp1", state::fyl2xp1(&img, m80), &[0])
                }
                12 => {
                    x.f2xm1().ok();
                    ("f2xm1", state::f2xm1(&img, m80), &[0])
                }
                13 => {
                    x.fprem(true).ok();
                    ("fprem1", state::fprem1(&img, m80), &[])
                }
                14 => {
                    x.fbld(bcd).ok();
                    ("fbld", state::fbld(&img, mem_of(&bcd)), &[])
                }
                15 => {
                    let r = x.fbstp().ok().flatten();
                    let h = state::fbstp(&img, m80);
                    let want = r.map(|b| b.to_vec()).unwrap_or(m80[..10].to_vec());
                    if want[..] != h.mem[..10] {
                        bad += 1;
                        eprintln!(
                            "step {step} fbstp mem soft={want:02x?} host={:02x?}",
                            &h.mem[..10]
                        );
                    }
                    ("fbstp", h, &[])
                }
                16 => {
                    let r = x.fist(16, true, true).ok().flatten();
                    let h = state::fisttp16(&img, m64);
                    let want = r
                        .map(|v| (v as i16).to_le_bytes().to_vec())
                        .unwrap_or(m64[..2].to_vec());
                    if want[..] != h.mem[..2] {
                        bad += 1;
                        eprintln!(
                            "step {step} fisttp mem soft={want:02x?} host={:02x?}",
                            &h.mem[..2]
                        );
                    }
                    ("fisttp16", h, &[])
                }
                17 => {
                    x.fild(rbits as i64).ok();
                    ("fild64", state::fild64(&img, m64), &[])
                }
                18 => {
                    x.fincstp().ok();
                    ("fincstp", state::fincstp(&img, m80), &[])
                }
                _ => {
                    let mut cw = 0x037Fu16 & !0x0F00 | ((rng.below(4) as u16) << 10);
                    cw |= [0u16, 2, 3][rng.below(3) as usize] << 8;
                    for bit in 0..6 {
                        if rng.below(3) == 0 {
                            cw &= !(1 << bit);
                        }
                    }
                    x.fldcw(cw).ok();
                    ("fldcw", state::fldcw(&img, mem_of(&cw.to_le_bytes())), &[])
                }
            };
            let soft = image(&x);
            let mut ok = true;
            // C1 depends on the rounding of a result the host rounds differently.
            let w = |img: &[u8; 108], o: usize| u16::from_le_bytes([img[o], img[o + 1]]);
            let reg = |img: &[u8; 108], i: u8| {
                let o = 28 + 10 * i as usize;
                let mut b = [0u8; 10];
                b.copy_from_slice(&img[o..o + 10]);
                F80::from_bytes(b)
            };
            // Where a result differs (the host is not correctly rounded, e.g. it returns x
            // for sin x and 1 for cos x at tiny x even when rounding down), so may its
            // underflow report (and hence ES/B) and the tag of that register.
            let differs: Vec<u8> = loose
                .iter()
                .copied()
                .filter(|&i| reg(&soft, i) != reg(&h.image, i))
                .collect();
            let mut swmask: u16 = if loose.is_empty() {
                0xFFFF
            } else {
                !(sw::C1 | PE as u16)
            };
            let mut twmask: u16 = 0xFFFF;
            if !differs.is_empty() {
                swmask &= !(UE as u16 | sw::ES | sw::B);
                let top = (w(&h.image, 4) >> 11) & 7;
                for &i in &differs {
                    twmask &= !(3 << (2 * ((top + i as u16) & 7)));
                }
            }
            ok &= w(&soft, 0) == w(&h.image, 0) && w(&soft, 8) & twmask == w(&h.image, 8) & twmask;
            ok &= w(&soft, 4) & swmask == w(&h.image, 4) & swmask;
            for i in 0..8u8 {
                let o = 28 + 10 * i as usize;
                let (mut a, mut b) = ([0u8; 10], [0u8; 10]);
                a.copy_from_slice(&soft[o..o + 10]);
                b.copy_from_slice(&h.image[o..o + 10]);
                let (a, b) = (F80::from_bytes(a), F80::from_bytes(b));
                let loose_here = loose.contains(&i);
                if loose_here && a.is_normal_finite() && b.is_normal_finite() {
                    // Even the sign may differ for huge trigonometric arguments (66-bit π
                    // reduction on the host).
                } else {
                    ok &= a == b;
                }
            }
            if !ok {
                bad += 1;
                if bad < 10 {
                    eprintln!(
                        "step {step} {name}\n before {}\n soft   {}\n host   {}",
                        dump(&img),
                        dump(&soft),
                        dump(&h.image)
                    );
                }
            }
            // Continue from the host's state so one rounding difference does not cascade.
            x.frstor(EnvFormat::Protected32, &h.image).ok();
        }
        assert_eq!(bad, 0);
    }
}
