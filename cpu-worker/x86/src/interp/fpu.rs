//! The x87 FPU instructions (SDM vol. 1 ch. 8, vol. 2 instruction pages
//! F2XM1 to FYL2XP1, WAIT/FWAIT): iced-x86's instruction codes decoded
//! into operations of the `x87` crate's unit, which does the arithmetic
//! and keeps the stack, tags and exception state; this file fetches and
//! stores the memory operands, feeds FCMOVcc its EFLAGS condition, writes
//! FCOMI's flags and records the last-instruction pointers.
//!
//! Precision: a memory source is read before the unit changes, and a store
//! runs on a copy of the unit that replaces it only once the memory write
//! has succeeded, so a page fault leaves the x87 state as it was. A
//! waiting instruction started with an unmasked exception pending faults
//! with #MF before it touches memory or the unit (vol. 1 §8.6).
//!
//! Pointers (vol. 1 §8.1.8-8.1.10), as current processors keep them:
//! every non-control instruction that executes records FIP (its offset);
//! FOP (the low three bits of its first opcode byte and its ModR/M byte)
//! and, with a memory operand, FDP (the operand's offset) are recorded
//! only by an instruction that raises an unmasked exception, the one an
//! exception handler looks at: the FOP compatibility mode is off (vol. 1
//! §8.1.9.1, the default since the Pentium 4) and FDP_EXCPTN_ONLY is set
//! (CPUID.(EAX=07H):EBX[6], since Haswell). FCS and FDS are deprecated and
//! always 0 (CPUID.(EAX=07H):EBX[13]), even after FRSTOR, FLDENV or
//! FXRSTOR loaded others. The CPUID model, which stops at leaf 1, shows
//! neither bit; the host agrees with all of this in every difftest case.
//! The control instructions FCLEX, FLDCW, FSTCW, FSTSW, FSTENV, FLDENV and
//! WAIT leave the pointers; FINIT and FSAVE clear them and FRSTOR loads
//! them.
//!
//! iced-x86 decodes the 9B prefix of FSTSW, FSTENV, FINIT... as a WAIT
//! instruction of its own followed by the no-wait form, as the processor
//! executes them; the combined codes are accepted too.

use iced_x86::{Code, Instruction, OpKind, Register};
use x87::{ArithOp, Constant, EnvFormat, Src};

use super::operand::{ea, offset};
use super::Flow;
use crate::mem::{Exception, Memory};
use crate::state::{CpuState, CF, CS, EAX, PF, ZF};

/// The format of an x87 memory operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemFmt {
    F32,
    F64,
    F80,
    I16,
    I32,
    I64,
    /// 18-digit packed BCD (FBLD/FBSTP).
    Bcd,
}

impl MemFmt {
    /// Size in bytes.
    pub fn size(self) -> usize {
        match self {
            MemFmt::I16 => 2,
            MemFmt::F32 | MemFmt::I32 => 4,
            MemFmt::F64 | MemFmt::I64 => 8,
            MemFmt::F80 | MemFmt::Bcd => 10,
        }
    }
}

/// Source or destination of a data or arithmetic instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// ST(i).
    St(u8),
    /// The instruction's memory operand, in this format.
    Mem(MemFmt),
}

/// Instructions on ST(0) (and ST(1)) without further operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    Chs,
    Abs,
    Tst,
    Xam,
    Sqrt,
    Rndint,
    Scale,
    Prem,
    Prem1,
    Xtract,
    Sin,
    Cos,
    Sincos,
    Ptan,
    Patan,
    Yl2x,
    Yl2xp1,
    F2xm1,
    Incstp,
    Decstp,
    Nop,
}

/// A decoded x87 instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// FLD m32fp/m64fp/m80fp/ST(i), FILD, FBLD.
    Load(Operand),
    /// FLD1, FLDL2T, FLDL2E, FLDPI, FLDLG2, FLDLN2, FLDZ.
    Const(Constant),
    /// FST/FSTP m32fp/m64fp/m80fp/ST(i), FIST/FISTP, FBSTP; FISTTP with
    /// `truncate`.
    Store {
        to: Operand,
        pop: bool,
        truncate: bool,
    },
    /// FADD ... FDIVR in all forms: ST(dst) = ST(dst) op src, then pop.
    Arith {
        op: ArithOp,
        dst: u8,
        src: Operand,
        pop: bool,
    },
    /// FCOM/FCOMP/FCOMPP, FUCOM* (`quiet`), FICOM/FICOMP.
    Compare {
        src: Operand,
        pops: u8,
        quiet: bool,
    },
    /// FCOMI/FCOMIP, FUCOMI/FUCOMIP (`quiet`) ST(0), ST(i).
    Comi {
        i: u8,
        pop: bool,
        quiet: bool,
    },
    Unary(Unary),
    /// FSTP ST(i) through the undocumented D9 D8+i (FSTPNCE): as FSTP,
    /// except that with ST(0) empty it raises no stack fault and leaves
    /// ST(i) alone: it only pops (host behaviour).
    StpNce(u8),
    /// FXCH ST(i).
    Xch(u8),
    /// FFREE ST(i).
    Free(u8),
    /// FFREEP ST(i) (DF C0+i).
    Freep(u8),
    /// FCMOVcc ST(0), ST(i) with `cc` a Jcc condition code.
    Cmov {
        cc: u8,
        i: u8,
    },
    /// FLDCW m2byte.
    Ldcw,
    /// FNSTCW m2byte.
    Stcw,
    /// FNSTSW m2byte.
    StswMem,
    /// FNSTSW AX.
    StswAx,
    /// FNCLEX.
    Clex,
    /// FNINIT.
    Init,
    /// FNSTENV.
    Stenv(EnvFormat),
    /// FLDENV.
    Ldenv(EnvFormat),
    /// FNSAVE.
    Save(EnvFormat),
    /// FRSTOR.
    Rstor(EnvFormat),
    /// WAIT/FWAIT.
    Wait,
    /// FNENI, FNDISI, FNSETPM: 8087/80287 controls, no-ops since the 387.
    Legacy,
}

/// An x87 instruction: its operation and whether it is a wait form
/// (FSTSW, FINIT...) that checks for a pending exception first although
/// its operation does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub op: Op,
    pub wait: bool,
}

/// The ST(i) register of operand `n`.
fn st(insn: &Instruction, n: u32) -> u8 {
    ((insn.op_register(n) as u32).wrapping_sub(Register::ST0 as u32) & 7) as u8
}

/// Decodes `insn` if it is an x87 instruction.
pub fn decode(insn: &Instruction) -> Option<Decoded> {
    use ArithOp::*;
    use Code as C;
    use MemFmt::*;
    use Operand::{Mem, St};
    let wait = matches!(
        insn.code(),
        C::Fstcw_m2byte
            | C::Fstsw_m2byte
            | C::Fstsw_AX
            | C::Fclex
            | C::Finit
            | C::Fstenv_m14byte
            | C::Fstenv_m28byte
            | C::Fsave_m94byte
            | C::Fsave_m108byte
            | C::Feni
            | C::Fdisi
            | C::Fsetpm
    );
    let arith = |op, dst, src, pop| Op::Arith { op, dst, src, pop };
    let store = |to, pop| Op::Store {
        to,
        pop,
        truncate: false,
    };
    let fisttp = |f| Op::Store {
        to: Mem(f),
        pop: true,
        truncate: true,
    };
    let cmp = |src, pops, quiet| Op::Compare { src, pops, quiet };
    let comi = |i, pop, quiet| Op::Comi { i, pop, quiet };
    let cmov = |cc| Op::Cmov { cc, i: st(insn, 1) };
    let op = match insn.code() {
        C::Fld_m32fp => Op::Load(Mem(F32)),
        C::Fld_m64fp => Op::Load(Mem(F64)),
        C::Fld_m80fp => Op::Load(Mem(F80)),
        C::Fld_sti => Op::Load(St(st(insn, 0))),
        C::Fild_m16int => Op::Load(Mem(I16)),
        C::Fild_m32int => Op::Load(Mem(I32)),
        C::Fild_m64int => Op::Load(Mem(I64)),
        C::Fbld_m80bcd => Op::Load(Mem(Bcd)),
        C::Fld1 => Op::Const(Constant::One),
        C::Fldl2t => Op::Const(Constant::L2T),
        C::Fldl2e => Op::Const(Constant::L2E),
        C::Fldpi => Op::Const(Constant::Pi),
        C::Fldlg2 => Op::Const(Constant::Lg2),
        C::Fldln2 => Op::Const(Constant::Ln2),
        C::Fldz => Op::Const(Constant::Zero),

        C::Fst_m32fp => store(Mem(F32), false),
        C::Fstp_m32fp => store(Mem(F32), true),
        C::Fst_m64fp => store(Mem(F64), false),
        C::Fstp_m64fp => store(Mem(F64), true),
        C::Fstp_m80fp => store(Mem(F80), true),
        C::Fist_m16int => store(Mem(I16), false),
        C::Fistp_m16int => store(Mem(I16), true),
        C::Fist_m32int => store(Mem(I32), false),
        C::Fistp_m32int => store(Mem(I32), true),
        C::Fistp_m64int => store(Mem(I64), true),
        C::Fbstp_m80bcd => store(Mem(Bcd), true),
        C::Fisttp_m16int => fisttp(I16),
        C::Fisttp_m32int => fisttp(I32),
        C::Fisttp_m64int => fisttp(I64),
        C::Fst_sti => store(St(st(insn, 0)), false),
        // DF D0+i and DF D8+i are undocumented aliases of FSTP.
        C::Fstp_sti | C::Fstp_sti_DFD0 | C::Fstp_sti_DFD8 => store(St(st(insn, 0)), true),
        C::Fstpnce_sti => Op::StpNce(st(insn, 0)),

        C::Fadd_m32fp => arith(Add, 0, Mem(F32), false),
        C::Fmul_m32fp => arith(Mul, 0, Mem(F32), false),
        C::Fsub_m32fp => arith(Sub, 0, Mem(F32), false),
        C::Fsubr_m32fp => arith(SubR, 0, Mem(F32), false),
        C::Fdiv_m32fp => arith(Div, 0, Mem(F32), false),
        C::Fdivr_m32fp => arith(DivR, 0, Mem(F32), false),
        C::Fadd_m64fp => arith(Add, 0, Mem(F64), false),
        C::Fmul_m64fp => arith(Mul, 0, Mem(F64), false),
        C::Fsub_m64fp => arith(Sub, 0, Mem(F64), false),
        C::Fsubr_m64fp => arith(SubR, 0, Mem(F64), false),
        C::Fdiv_m64fp => arith(Div, 0, Mem(F64), false),
        C::Fdivr_m64fp => arith(DivR, 0, Mem(F64), false),
        C::Fiadd_m32int => arith(Add, 0, Mem(I32), false),
        C::Fimul_m32int => arith(Mul, 0, Mem(I32), false),
        C::Fisub_m32int => arith(Sub, 0, Mem(I32), false),
        C::Fisubr_m32int => arith(SubR, 0, Mem(I32), false),
        C::Fidiv_m32int => arith(Div, 0, Mem(I32), false),
        C::Fidivr_m32int => arith(DivR, 0, Mem(I32), false),
        C::Fiadd_m16int => arith(Add, 0, Mem(I16), false),
        C::Fimul_m16int => arith(Mul, 0, Mem(I16), false),
        C::Fisub_m16int => arith(Sub, 0, Mem(I16), false),
        C::Fisubr_m16int => arith(SubR, 0, Mem(I16), false),
        C::Fidiv_m16int => arith(Div, 0, Mem(I16), false),
        C::Fidivr_m16int => arith(DivR, 0, Mem(I16), false),
        C::Fadd_st0_sti => arith(Add, 0, St(st(insn, 1)), false),
        C::Fmul_st0_sti => arith(Mul, 0, St(st(insn, 1)), false),
        C::Fsub_st0_sti => arith(Sub, 0, St(st(insn, 1)), false),
        C::Fsubr_st0_sti => arith(SubR, 0, St(st(insn, 1)), false),
        C::Fdiv_st0_sti => arith(Div, 0, St(st(insn, 1)), false),
        C::Fdivr_st0_sti => arith(DivR, 0, St(st(insn, 1)), false),
        // The DC and DE register forms name the destination ST(i) first
        // (SDM mnemonics: DC E8+i is FSUB ST(i), ST(0), i.e. ST(i) - ST(0)).
        C::Fadd_sti_st0 => arith(Add, st(insn, 0), St(0), false),
        C::Fmul_sti_st0 => arith(Mul, st(insn, 0), St(0), false),
        C::Fsub_sti_st0 => arith(Sub, st(insn, 0), St(0), false),
        C::Fsubr_sti_st0 => arith(SubR, st(insn, 0), St(0), false),
        C::Fdiv_sti_st0 => arith(Div, st(insn, 0), St(0), false),
        C::Fdivr_sti_st0 => arith(DivR, st(insn, 0), St(0), false),
        C::Faddp_sti_st0 => arith(Add, st(insn, 0), St(0), true),
        C::Fmulp_sti_st0 => arith(Mul, st(insn, 0), St(0), true),
        C::Fsubp_sti_st0 => arith(Sub, st(insn, 0), St(0), true),
        C::Fsubrp_sti_st0 => arith(SubR, st(insn, 0), St(0), true),
        C::Fdivp_sti_st0 => arith(Div, st(insn, 0), St(0), true),
        C::Fdivrp_sti_st0 => arith(DivR, st(insn, 0), St(0), true),

        C::Fcom_m32fp => cmp(Mem(F32), 0, false),
        C::Fcomp_m32fp => cmp(Mem(F32), 1, false),
        C::Fcom_m64fp => cmp(Mem(F64), 0, false),
        C::Fcomp_m64fp => cmp(Mem(F64), 1, false),
        C::Ficom_m32int => cmp(Mem(I32), 0, false),
        C::Ficomp_m32int => cmp(Mem(I32), 1, false),
        C::Ficom_m16int => cmp(Mem(I16), 0, false),
        C::Ficomp_m16int => cmp(Mem(I16), 1, false),
        // DC D0+i, DC D8+i and DE D0+i are undocumented aliases.
        C::Fcom_st0_sti | C::Fcom_st0_sti_DCD0 => cmp(St(st(insn, 1)), 0, false),
        C::Fcomp_st0_sti | C::Fcomp_st0_sti_DCD8 | C::Fcomp_st0_sti_DED0 => {
            cmp(St(st(insn, 1)), 1, false)
        }
        C::Fcompp => cmp(St(1), 2, false),
        C::Fucom_st0_sti => cmp(St(st(insn, 1)), 0, true),
        C::Fucomp_st0_sti => cmp(St(st(insn, 1)), 1, true),
        C::Fucompp => cmp(St(1), 2, true),
        C::Fcomi_st0_sti => comi(st(insn, 1), false, false),
        C::Fcomip_st0_sti => comi(st(insn, 1), true, false),
        C::Fucomi_st0_sti => comi(st(insn, 1), false, true),
        C::Fucomip_st0_sti => comi(st(insn, 1), true, true),

        C::Fchs => Op::Unary(Unary::Chs),
        C::Fabs => Op::Unary(Unary::Abs),
        C::Ftst => Op::Unary(Unary::Tst),
        C::Fxam => Op::Unary(Unary::Xam),
        C::Fsqrt => Op::Unary(Unary::Sqrt),
        C::Frndint => Op::Unary(Unary::Rndint),
        C::Fscale => Op::Unary(Unary::Scale),
        C::Fprem => Op::Unary(Unary::Prem),
        C::Fprem1 => Op::Unary(Unary::Prem1),
        C::Fxtract => Op::Unary(Unary::Xtract),
        C::Fsin => Op::Unary(Unary::Sin),
        C::Fcos => Op::Unary(Unary::Cos),
        C::Fsincos => Op::Unary(Unary::Sincos),
        C::Fptan => Op::Unary(Unary::Ptan),
        C::Fpatan => Op::Unary(Unary::Patan),
        C::Fyl2x => Op::Unary(Unary::Yl2x),
        C::Fyl2xp1 => Op::Unary(Unary::Yl2xp1),
        C::F2xm1 => Op::Unary(Unary::F2xm1),
        C::Fincstp => Op::Unary(Unary::Incstp),
        C::Fdecstp => Op::Unary(Unary::Decstp),
        C::Fnop => Op::Unary(Unary::Nop),

        // DD C8+i and DF C8+i are undocumented aliases of D9 C8+i.
        C::Fxch_st0_sti | C::Fxch_st0_sti_DDC8 | C::Fxch_st0_sti_DFC8 => Op::Xch(st(insn, 1)),
        C::Ffree_sti => Op::Free(st(insn, 0)),
        C::Ffreep_sti => Op::Freep(st(insn, 0)),
        C::Fcmovb_st0_sti => cmov(0x2),
        C::Fcmovnb_st0_sti => cmov(0x3),
        C::Fcmove_st0_sti => cmov(0x4),
        C::Fcmovne_st0_sti => cmov(0x5),
        C::Fcmovbe_st0_sti => cmov(0x6),
        C::Fcmovnbe_st0_sti => cmov(0x7),
        C::Fcmovu_st0_sti => cmov(0xa),
        C::Fcmovnu_st0_sti => cmov(0xb),

        C::Fldcw_m2byte => Op::Ldcw,
        C::Fnstcw_m2byte | C::Fstcw_m2byte => Op::Stcw,
        C::Fnstsw_m2byte | C::Fstsw_m2byte => Op::StswMem,
        C::Fnstsw_AX | C::Fstsw_AX => Op::StswAx,
        C::Fnclex | C::Fclex => Op::Clex,
        C::Fninit | C::Finit => Op::Init,
        C::Fnstenv_m14byte | C::Fstenv_m14byte => Op::Stenv(EnvFormat::Protected16),
        C::Fnstenv_m28byte | C::Fstenv_m28byte => Op::Stenv(EnvFormat::Protected32),
        C::Fldenv_m14byte => Op::Ldenv(EnvFormat::Protected16),
        C::Fldenv_m28byte => Op::Ldenv(EnvFormat::Protected32),
        C::Fnsave_m94byte | C::Fsave_m94byte => Op::Save(EnvFormat::Protected16),
        C::Fnsave_m108byte | C::Fsave_m108byte => Op::Save(EnvFormat::Protected32),
        C::Frstor_m94byte => Op::Rstor(EnvFormat::Protected16),
        C::Frstor_m108byte => Op::Rstor(EnvFormat::Protected32),
        C::Wait => Op::Wait,
        C::Fneni | C::Feni | C::Fndisi | C::Fdisi | C::Fnsetpm | C::Fsetpm => Op::Legacy,
        _ => return None,
    };
    Some(Decoded { op, wait })
}

impl Op {
    /// Whether the instruction checks for a pending unmasked exception
    /// before it starts (a "waiting" instruction, SDM vol. 1 §8.3.11):
    /// all but the no-wait controls. FLDENV and FRSTOR do check (on the
    /// host) although they replace the exception state.
    fn waits(self) -> bool {
        !matches!(
            self,
            Op::Stcw
                | Op::StswMem
                | Op::StswAx
                | Op::Clex
                | Op::Init
                | Op::Stenv(_)
                | Op::Save(_)
                | Op::Legacy
        )
    }

    /// Whether the instruction records FIP (and, when it raises an
    /// unmasked exception, FOP and FDP): every one but the controls (SDM
    /// vol. 1 §8.1.8).
    fn records_pointers(self) -> bool {
        !matches!(
            self,
            Op::Ldcw
                | Op::Stcw
                | Op::StswMem
                | Op::StswAx
                | Op::Clex
                | Op::Init
                | Op::Stenv(_)
                | Op::Ldenv(_)
                | Op::Save(_)
                | Op::Rstor(_)
                | Op::Wait
                | Op::Legacy
        )
    }
}

/// FCS and FDS read as 0 whatever was loaded (deprecated, see above).
pub(crate) fn deprecate_selectors(fpu: &mut x87::X87) {
    fpu.fcs = 0;
    fpu.fds = 0;
}

fn pending(_: x87::PendingFault) -> Exception {
    Exception::FpuError
}

/// FOP of the instruction at EIP: the low three bits of its first opcode
/// byte (D8-DF) and its second byte (ModR/M), from the instruction bytes.
/// Fetched only for an instruction that raised an unmasked exception,
/// after it executed: the decoder has just read the same bytes, so the
/// fetch cannot fail unless another thread unmapped the code meanwhile, and
/// then FOP is 0 rather than the state half changed.
fn fop<M: Memory>(cpu: &CpuState, mem: &mut M, insn: &Instruction) -> u16 {
    let mut buf = [0u8; 15];
    let len = insn.len().min(15);
    let lin = cpu.segs[CS].base.wrapping_add(cpu.eip);
    let Ok(n) = mem.fetch(lin, &mut buf[..len]) else {
        return 0;
    };
    let bytes = &buf[..n];
    let at = bytes
        .iter()
        .position(|b| (0xd8..=0xdf).contains(b))
        .unwrap_or(0);
    let b0 = bytes.get(at).copied().unwrap_or(0);
    let b1 = bytes.get(at + 1).copied().unwrap_or(0);
    (((b0 & 7) as u16) << 8) | b1 as u16
}

/// Reads the memory operand as a source value for the unit.
fn read_src<M: Memory>(mem: &mut M, a: u32, f: MemFmt) -> Result<Src, Exception> {
    Ok(match f {
        MemFmt::F32 => Src::F32(mem.read_u32(a)?),
        MemFmt::F64 => Src::F64(mem.read_u64(a)?),
        MemFmt::I16 => Src::I16(mem.read_u16(a)? as i16),
        MemFmt::I32 => Src::I32(mem.read_u32(a)? as i32),
        // The 80-bit formats and m64int are no arithmetic sources.
        _ => return Err(Exception::InvalidOpcode),
    })
}

fn read10<M: Memory>(mem: &mut M, a: u32) -> Result<[u8; 10], Exception> {
    let mut b = [0u8; 10];
    mem.read(a, &mut b)?;
    Ok(b)
}

/// Loads (FLD, FILD, FBLD) from memory at `a`.
fn load_mem<M: Memory>(
    cpu: &mut CpuState,
    mem: &mut M,
    a: u32,
    f: MemFmt,
) -> Result<(), Exception> {
    let u = &mut cpu.fpu;
    match f {
        MemFmt::F32 => {
            let v = mem.read_u32(a)?;
            u.fld_f32(v)
        }
        MemFmt::F64 => {
            let v = mem.read_u64(a)?;
            u.fld_f64(v)
        }
        MemFmt::F80 => {
            let v = read10(mem, a)?;
            u.fld_f80(v)
        }
        MemFmt::I16 => {
            let v = mem.read_u16(a)? as i16;
            u.fild(v as i64)
        }
        MemFmt::I32 => {
            let v = mem.read_u32(a)? as i32;
            u.fild(v as i64)
        }
        MemFmt::I64 => {
            let v = mem.read_u64(a)? as i64;
            u.fild(v)
        }
        MemFmt::Bcd => {
            let v = read10(mem, a)?;
            u.fbld(v)
        }
    }
    .map_err(pending)
}

/// Stores ST(0) to memory at `a` (FST/FSTP, FIST/FISTP/FISTTP, FBSTP). The
/// unit runs on a copy that replaces it once the write succeeded; an
/// unmasked exception writes nothing.
fn store_mem<M: Memory>(
    cpu: &mut CpuState,
    mem: &mut M,
    a: u32,
    f: MemFmt,
    pop: bool,
    truncate: bool,
) -> Result<(), Exception> {
    let mut u = cpu.fpu.clone();
    let mut buf = [0u8; 10];
    let stored = match f {
        MemFmt::F32 => u
            .fst_f32(pop)
            .map(|r| r.map(|v| buf[..4].copy_from_slice(&v.to_le_bytes()))),
        MemFmt::F64 => u
            .fst_f64(pop)
            .map(|r| r.map(|v| buf[..8].copy_from_slice(&v.to_le_bytes()))),
        MemFmt::F80 => u.fst_f80(pop).map(|r| r.map(|v| buf = v)),
        MemFmt::I16 | MemFmt::I32 | MemFmt::I64 => {
            let bits = 8 * f.size() as u32;
            u.fist(bits, pop, truncate)
                .map(|r| r.map(|v| buf[..8].copy_from_slice(&v.to_le_bytes())))
        }
        MemFmt::Bcd => u.fbstp().map(|r| r.map(|v| buf = v)),
    }
    .map_err(pending)?;
    if stored.is_some() {
        if f.size() == 10 {
            // Two stores, significand first: across a page boundary the
            // host writes the low eight bytes before the fault on the
            // exponent.
            mem.write(a, &buf[..8])?;
            mem.write(a.wrapping_add(8), &buf[8..10])?;
        } else {
            mem.write(a, &buf[..f.size()])?;
        }
    }
    cpu.fpu = u;
    Ok(())
}

/// The access check of the environment and save images, in the order
/// the host makes it: the first field (4 bytes in the 32-bit layouts, 2
/// in the 16-bit ones), then the last byte, and only then the whole image,
/// of which nothing is written unless all of it can be. So an image that
/// runs into a page it cannot access faults at its last byte, unless its
/// first field already straddles the boundary. A write check reads the
/// bytes and writes them back unchanged.
fn check_image<M: Memory>(
    mem: &mut M,
    a: u32,
    fmt: EnvFormat,
    len: usize,
    write: bool,
) -> Result<(), Exception> {
    let first = match fmt {
        EnvFormat::Protected32 | EnvFormat::Real32 => 4,
        EnvFormat::Protected16 | EnvFormat::Real16 => 2,
    };
    for (at, n) in [(a, first), (a.wrapping_add(len as u32 - 1), 1)] {
        let mut b = [0u8; 4];
        mem.read(at, &mut b[..n])
            .map_err(|f| crate::mem::MemFault { write, ..f })?;
        if write {
            mem.write(at, &b[..n])?;
        }
    }
    Ok(())
}

fn unary(cpu: &mut CpuState, op: Unary) -> Result<(), x87::PendingFault> {
    let u = &mut cpu.fpu;
    match op {
        Unary::Chs => u.fchs(),
        Unary::Abs => u.fabs(),
        Unary::Tst => u.ftst(),
        Unary::Xam => u.fxam(),
        Unary::Sqrt => u.fsqrt(),
        Unary::Rndint => u.frndint(),
        Unary::Scale => u.fscale(),
        Unary::Prem => u.fprem(false),
        Unary::Prem1 => u.fprem(true),
        Unary::Xtract => u.fxtract(),
        Unary::Sin => u.fsin(),
        Unary::Cos => u.fcos(),
        Unary::Sincos => u.fsincos(),
        Unary::Ptan => u.fptan(),
        Unary::Patan => u.fpatan(),
        Unary::Yl2x => u.fyl2x(),
        Unary::Yl2xp1 => u.fyl2xp1(),
        Unary::F2xm1 => u.f2xm1(),
        Unary::Incstp => u.fincstp(),
        Unary::Decstp => u.fdecstp(),
        Unary::Nop => u.fwait(),
    }
}

/// Executes `insn` if it is an x87 instruction; `Ok(None)` for anything
/// else.
pub fn exec<M: Memory>(
    cpu: &mut CpuState,
    mem: &mut M,
    insn: &Instruction,
) -> Result<Option<Flow>, Exception> {
    let Some(d) = decode(insn) else {
        return Ok(None);
    };
    run(cpu, mem, insn, d)?;
    Ok(Some(Flow::Next))
}

/// Runs a decoded x87 instruction.
fn run<M: Memory>(
    cpu: &mut CpuState,
    mem: &mut M,
    insn: &Instruction,
    d: Decoded,
) -> Result<(), Exception> {
    if d.wait || d.op.waits() {
        cpu.fpu.fwait().map_err(pending)?;
    }
    let has_mem = (0..insn.op_count()).any(|i| insn.op_kind(i) == OpKind::Memory);
    let a = if has_mem { ea(cpu, insn) } else { 0 };
    let data = has_mem.then(|| (offset(cpu, insn) as u64, 0));
    let u = &mut cpu.fpu;
    match d.op {
        Op::Load(Operand::Mem(f)) => load_mem(cpu, mem, a, f)?,
        Op::Load(Operand::St(i)) => u.fld_st(i).map_err(pending)?,
        Op::Const(k) => u.fld_const(k).map_err(pending)?,
        Op::Store {
            to: Operand::Mem(f),
            pop,
            truncate,
        } => store_mem(cpu, mem, a, f, pop, truncate)?,
        Op::Store {
            to: Operand::St(i),
            pop,
            ..
        } => u.fst_st(i, pop).map_err(pending)?,
        Op::Arith { op, dst, src, pop } => {
            let src = match src {
                Operand::St(i) => Src::St(i),
                Operand::Mem(f) => read_src(mem, a, f)?,
            };
            cpu.fpu.arith(op, dst, src, pop).map_err(pending)?;
        }
        Op::Compare { src, pops, quiet } => {
            let src = match src {
                Operand::St(i) => Src::St(i),
                Operand::Mem(f) => read_src(mem, a, f)?,
            };
            cpu.fpu.fcom(src, pops, quiet).map_err(pending)?;
        }
        Op::Comi { i, pop, quiet } => {
            // ZF, PF, CF from the comparison; OF, SF and AF cleared.
            if let Some(f) = u.fcomi(i, pop, quiet).map_err(pending)? {
                let bits = if f.zf { ZF } else { 0 }
                    | if f.pf { PF } else { 0 }
                    | if f.cf { CF } else { 0 };
                crate::flags::set_eager(cpu, bits);
            }
        }
        Op::Unary(op) => unary(cpu, op).map_err(pending)?,
        Op::StpNce(i) => {
            if u.st_empty(0) {
                // Popping an empty ST(0) is moving TOP, with C1 = 0.
                u.fincstp().map_err(pending)?;
            } else {
                u.fst_st(i, true).map_err(pending)?;
            }
        }
        Op::Xch(i) => u.fxch(i).map_err(pending)?,
        Op::Free(i) => u.ffree(i).map_err(pending)?,
        Op::Freep(i) => u.ffreep(i).map_err(pending)?,
        Op::Cmov { cc, i } => {
            let cond = crate::flags::condition(cpu, cc);
            cpu.fpu.fcmov(cond, i).map_err(pending)?;
        }
        Op::Ldcw => {
            let cw = mem.read_u16(a)?;
            cpu.fpu.fldcw(cw).map_err(pending)?;
        }
        Op::Stcw => mem.write_u16(a, u.fnstcw())?,
        Op::StswMem => mem.write_u16(a, u.fnstsw())?,
        Op::StswAx => {
            let sw = u.fnstsw();
            cpu.set_reg16(EAX, sw);
        }
        Op::Clex => u.fnclex(),
        Op::Init => u.fninit(),
        Op::Stenv(fmt) => {
            check_image(mem, a, fmt, fmt.env_len(), true)?;
            let mut u = cpu.fpu.clone();
            let img = u.fnstenv(fmt);
            mem.write(a, &img)?;
            cpu.fpu = u;
        }
        Op::Save(fmt) => {
            check_image(mem, a, fmt, fmt.save_len(), true)?;
            let mut u = cpu.fpu.clone();
            let img = u.fnsave(fmt);
            mem.write(a, &img)?;
            cpu.fpu = u;
        }
        Op::Ldenv(fmt) => {
            let mut img = [0u8; 108];
            let img = &mut img[..fmt.env_len()];
            check_image(mem, a, fmt, img.len(), false)?;
            mem.read(a, img)?;
            cpu.fpu.fldenv(fmt, img).map_err(pending)?;
        }
        Op::Rstor(fmt) => {
            let mut img = [0u8; 108];
            let img = &mut img[..fmt.save_len()];
            check_image(mem, a, fmt, img.len(), false)?;
            mem.read(a, img)?;
            cpu.fpu.frstor(fmt, img).map_err(pending)?;
        }
        Op::Wait => {}
        Op::Legacy => {}
    }
    if d.op.records_pointers() {
        // The instruction started with nothing pending (it waits), so ES
        // set now means it raised an unmasked exception.
        if cpu.fpu.status_word() & 0x0080 != 0 {
            let fop = fop(cpu, mem, insn);
            cpu.fpu.set_pointers(cpu.eip as u64, 0, fop, data);
        } else {
            cpu.fpu.fip = cpu.eip as u64;
        }
    }
    deprecate_selectors(&mut cpu.fpu);
    Ok(())
}

#[cfg(test)]
mod tests;
