//! General-purpose instructions (SDM vol. 1 §7.3, vol. 2 instruction
//! pages): data transfer, binary and decimal arithmetic, logic, shifts and
//! rotates, bit and byte instructions, control transfer, flag control,
//! segment loads, CPUID and RDTSC.

use iced_x86::{ConditionCode, Instruction, Mnemonic, OpKind};

use super::operand::{
    loc, mask, op_size, read_loc, read_op, read_reg, sext, sign_bit, write_loc, write_op,
    write_reg, Loc,
};
use super::{Env, Flow};
use crate::flags::{self, CcOp};
use crate::mem::{Exception, Memory};
use crate::state::{
    CpuState, AC, AF, CF, DF, EAX, EBP, EBX, ECX, EDX, ESP, ID, OF, PF, SF, SS, ZF,
};

/// A flag record, applied to the state only once the instruction commits.
#[derive(Clone, Copy)]
pub struct Fl {
    op: u32,
    dst: u32,
    src: u32,
    src2: u32,
}

impl Fl {
    fn lazy(kind: CcOp, bytes: u32, dst: u32, src: u32, src2: u32) -> Fl {
        Fl {
            op: flags::op(kind, bytes),
            dst,
            src,
            src2,
        }
    }
    fn eager(f: u32) -> Fl {
        Fl {
            op: CcOp::Eflags as u32,
            dst: 0,
            src: f,
            src2: 0,
        }
    }
    pub fn apply(self, cpu: &mut CpuState) {
        cpu.cc_op = self.op;
        cpu.cc_dst = self.dst;
        cpu.cc_src = self.src;
        cpu.cc_src2 = self.src2;
    }
}

fn cf(cpu: &CpuState) -> bool {
    flags::compute(cpu) & CF != 0
}

fn parity(v: u32) -> u32 {
    if (v as u8).count_ones() % 2 == 0 {
        PF
    } else {
        0
    }
}

/// SF, ZF and PF of a result of `bytes` width.
fn szp(v: u32, bytes: u32) -> u32 {
    let v = v & mask(bytes);
    let mut f = parity(v);
    if v == 0 {
        f |= ZF;
    }
    if v & sign_bit(bytes) != 0 {
        f |= SF;
    }
    f
}

/// Two-operand ALU operations (ADD ... CMP, TEST).
fn alu(cpu: &CpuState, m: Mnemonic, bytes: u32, a: u32, b: u32) -> (u32, Fl) {
    let mk = mask(bytes);
    let (a, b) = (a & mk, b & mk);
    match m {
        Mnemonic::Add => {
            let r = a.wrapping_add(b) & mk;
            (r, Fl::lazy(CcOp::Add, bytes, r, b, a))
        }
        Mnemonic::Adc => {
            let c = cf(cpu);
            let r = a.wrapping_add(b).wrapping_add(c as u32) & mk;
            let k = if c { CcOp::Adc } else { CcOp::Add };
            (r, Fl::lazy(k, bytes, r, b, a))
        }
        Mnemonic::Sub | Mnemonic::Cmp => {
            let r = a.wrapping_sub(b) & mk;
            (r, Fl::lazy(CcOp::Sub, bytes, r, b, a))
        }
        Mnemonic::Sbb => {
            let c = cf(cpu);
            let r = a.wrapping_sub(b).wrapping_sub(c as u32) & mk;
            let k = if c { CcOp::Sbb } else { CcOp::Sub };
            (r, Fl::lazy(k, bytes, r, b, a))
        }
        Mnemonic::And | Mnemonic::Test => {
            let r = a & b;
            (r, Fl::lazy(CcOp::Logic, bytes, r, 0, 0))
        }
        Mnemonic::Or => {
            let r = a | b;
            (r, Fl::lazy(CcOp::Logic, bytes, r, 0, 0))
        }
        _ => {
            let r = a ^ b;
            (r, Fl::lazy(CcOp::Logic, bytes, r, 0, 0))
        }
    }
}

/// The processor reads the destination of a read-modify-write instruction
/// with write intent: a page fault on that read reports a write access
/// (error code bit 1), as the store would.
fn write_intent(e: Exception) -> Exception {
    match e {
        Exception::PageFault(f) => Exception::PageFault(crate::mem::MemFault { write: true, ..f }),
        e => e,
    }
}

/// The access of a shift or rotate by zero: operand 0 is read and written
/// back unchanged, so it faults as a read-modify-write would.
fn rewrite_op0<M: Memory>(
    cpu: &mut CpuState,
    mem: &mut M,
    insn: &Instruction,
) -> Result<(), Exception> {
    let v = read_op(cpu, mem, insn, 0).map_err(write_intent)?;
    write_op(cpu, mem, insn, 0, v)
}

/// Read-modify-write of operand 0. `f` gets the old value and returns the
/// new one (or None: no write) and the flags; with a LOCK prefix on memory
/// the update is one atomic compare-exchange, retried until it holds.
fn rmw<M: Memory>(
    cpu: &mut CpuState,
    mem: &mut M,
    insn: &Instruction,
    mut f: impl FnMut(&CpuState, u32) -> (Option<u32>, Option<Fl>),
) -> Result<u32, Exception> {
    let bytes = op_size(insn, 0);
    let l = loc(cpu, insn, 0)?;
    match l {
        Loc::Mem(a) if insn.has_lock_prefix() || insn.mnemonic() == Mnemonic::Xchg => loop {
            let old = read_loc(cpu, mem, l, bytes).map_err(write_intent)?;
            let (new, fl) = f(cpu, old);
            let Some(new) = new else {
                if let Some(fl) = fl {
                    fl.apply(cpu);
                }
                return Ok(old);
            };
            let b = bytes as usize;
            let exp = old.to_le_bytes();
            let nv = new.to_le_bytes();
            let mut seen = [0u8; 4];
            if mem.cmpxchg(a, &exp[..b], &nv[..b], &mut seen[..b])? {
                if let Some(fl) = fl {
                    fl.apply(cpu);
                }
                return Ok(old);
            }
        },
        _ => {
            let old = read_loc(cpu, mem, l, bytes).map_err(write_intent)?;
            let (new, fl) = f(cpu, old);
            if let Some(new) = new {
                write_loc(cpu, mem, l, bytes, new)?;
            }
            if let Some(fl) = fl {
                fl.apply(cpu);
            }
            Ok(old)
        }
    }
}

pub fn push<M: Memory>(
    cpu: &mut CpuState,
    mem: &mut M,
    v: u32,
    bytes: u32,
) -> Result<(), Exception> {
    let sp = cpu.regs[ESP].wrapping_sub(bytes);
    let a = cpu.segs[SS].base.wrapping_add(sp);
    if bytes == 2 {
        mem.write_u16(a, v as u16)?;
    } else {
        mem.write_u32(a, v)?;
    }
    cpu.regs[ESP] = sp;
    Ok(())
}

/// Reads the top of stack without popping it.
fn peek<M: Memory>(cpu: &CpuState, mem: &mut M, bytes: u32, at: u32) -> Result<u32, Exception> {
    let a = cpu.segs[SS]
        .base
        .wrapping_add(cpu.regs[ESP])
        .wrapping_add(at);
    Ok(if bytes == 2 {
        mem.read_u16(a)? as u32
    } else {
        mem.read_u32(a)?
    })
}

fn cc_index(cc: ConditionCode) -> u8 {
    (cc as u8).wrapping_sub(1) & 15
}

/// The operand size of a push/pop/call/ret/enter/leave: 16 with an 0x66
/// prefix. ENTER, LEAVE and RET imm16 move ESP by more than one slot, so
/// their size comes from the instruction code.
fn stack_size(insn: &Instruction) -> u32 {
    use iced_x86::Code;
    match insn.code() {
        Code::Enterw_imm16_imm8 | Code::Leavew | Code::Retnw | Code::Retnw_imm16 => 2,
        Code::Enterd_imm16_imm8 | Code::Leaved | Code::Retnd | Code::Retnd_imm16 => 4,
        _ => match insn.stack_pointer_increment() {
            -2 | 2 => 2,
            _ => 4,
        },
    }
}

fn shift<M: Memory>(
    cpu: &mut CpuState,
    mem: &mut M,
    insn: &Instruction,
    m: Mnemonic,
) -> Result<(), Exception> {
    let bytes = op_size(insn, 0);
    let bits = bytes * 8;
    let count = if insn.op_count() > 1 {
        read_op(cpu, mem, insn, 1)? & 0x1f
    } else {
        1
    };
    if count == 0 {
        // No operation, no flag change; a memory operand is still accessed
        // for writing (a read-only page faults).
        rewrite_op0(cpu, mem, insn)?;
        return Ok(());
    }
    let mk = mask(bytes);
    let sign = sign_bit(bytes);
    rmw(cpu, mem, insn, |cpu, v| {
        let v = v & mk;
        match m {
            Mnemonic::Shl | Mnemonic::Sal => {
                let before = v << (count - 1);
                let r = (v << count) & mk;
                (Some(r), Some(Fl::lazy(CcOp::Shl, bytes, r, before, v)))
            }
            Mnemonic::Shr => {
                let before = v >> (count - 1);
                let r = v >> count;
                (Some(r), Some(Fl::lazy(CcOp::Shr, bytes, r, before, v)))
            }
            Mnemonic::Sar => {
                let s = sext(v, bytes);
                let before = (s >> (count - 1).min(31)) as u32;
                let r = (s >> count.min(31)) as u32 & mk;
                (Some(r), Some(Fl::lazy(CcOp::Sar, bytes, r, before, v)))
            }
            Mnemonic::Rol | Mnemonic::Ror => {
                let n = count % bits;
                let r = if m == Mnemonic::Rol {
                    if n == 0 {
                        v
                    } else {
                        ((v << n) | (v >> (bits - n))) & mk
                    }
                } else if n == 0 {
                    v
                } else {
                    ((v >> n) | (v << (bits - n))) & mk
                };
                let old = flags::compute(cpu);
                let mut f = old & !(CF | OF);
                if m == Mnemonic::Rol {
                    if r & 1 != 0 {
                        f |= CF;
                    }
                    if ((r & sign != 0) as u32) ^ (r & 1) != 0 {
                        f |= OF;
                    }
                } else {
                    if r & sign != 0 {
                        f |= CF;
                    }
                    if ((r & sign != 0) as u32) ^ ((r & (sign >> 1) != 0) as u32) != 0 {
                        f |= OF;
                    }
                }
                (Some(r), Some(Fl::eager(f)))
            }
            _ => {
                // RCL/RCR rotate through CF: a (bits+1)-bit rotation.
                let n = count % (bits + 1);
                let old = flags::compute(cpu);
                let mut c = (old & CF) as u64;
                let mut r = v as u64;
                let top = 1u64 << (bits - 1);
                for _ in 0..n {
                    if m == Mnemonic::Rcl {
                        let out = (r & top != 0) as u64;
                        r = ((r << 1) | c) & mk as u64;
                        c = out;
                    } else {
                        let out = r & 1;
                        r = (r >> 1) | (c << (bits - 1));
                        c = out;
                    }
                }
                let r = r as u32;
                let mut f = old & !(CF | OF);
                if c != 0 {
                    f |= CF;
                }
                let of = if m == Mnemonic::Rcl {
                    ((r & sign != 0) as u64) ^ c
                } else {
                    ((r & sign != 0) as u64) ^ ((r & (sign >> 1) != 0) as u64)
                };
                if of != 0 {
                    f |= OF;
                }
                (Some(r), Some(Fl::eager(f)))
            }
        }
    })?;
    Ok(())
}

fn double_shift<M: Memory>(
    cpu: &mut CpuState,
    mem: &mut M,
    insn: &Instruction,
    left: bool,
) -> Result<(), Exception> {
    let bytes = op_size(insn, 0);
    let bits = bytes * 8;
    let src = read_op(cpu, mem, insn, 1)?;
    let count = read_op(cpu, mem, insn, 2)? & 0x1f;
    if count == 0 {
        rewrite_op0(cpu, mem, insn)?;
        return Ok(());
    }
    let mk = mask(bytes) as u64;
    let sign = sign_bit(bytes);
    rmw(cpu, mem, insn, |_, v| {
        // SHLD/SHRD of 16-bit operands with counts above 16 are undefined;
        // like real CPUs we shift the 48-bit pattern dst:src:dst.
        let (dst, s) = (v as u64 & mk, src as u64 & mk);
        let (r, c) = if left {
            let (wide, w) = if bits == 16 {
                ((dst << 32) | (s << 16) | dst, 48)
            } else {
                ((dst << 32) | s, 64)
            };
            let r = ((wide << count) >> (w - bits)) as u32 & mk as u32;
            let c = ((wide >> (w - count)) & 1) as u32;
            (r, c)
        } else {
            let wide = if bits == 16 {
                dst | (s << 16) | (dst << 32)
            } else {
                dst | (s << 32)
            };
            let r = (wide >> count) as u32 & mk as u32;
            let c = ((wide >> (count - 1)) & 1) as u32;
            (r, c)
        };
        let mut f = szp(r, bytes);
        if c != 0 {
            f |= CF;
        }
        let of = ((r ^ v) & sign) != 0;
        if of {
            f |= OF;
        }
        (Some(r), Some(Fl::eager(f)))
    })?;
    Ok(())
}

fn bit_test<M: Memory>(
    cpu: &mut CpuState,
    mem: &mut M,
    insn: &Instruction,
    m: Mnemonic,
) -> Result<(), Exception> {
    let bytes = op_size(insn, 0);
    let bits = bytes * 8;
    let off = read_op(cpu, mem, insn, 1)?;
    // A register bit offset reaches outside the addressed operand (signed).
    let (l, bit) = match loc(cpu, insn, 0)? {
        Loc::Mem(a) if insn.op_kind(1) == OpKind::Register => {
            let s = sext(off, bytes) as i64;
            let unit = s.div_euclid(bits as i64);
            let a = (a as i64).wrapping_add(unit * bytes as i64) as u32;
            (Loc::Mem(a), s.rem_euclid(bits as i64) as u32)
        }
        l => (l, off % bits),
    };
    let old_flags = flags::compute(cpu);
    let v = if m == Mnemonic::Bt {
        read_loc(cpu, mem, l, bytes)?
    } else {
        read_loc(cpu, mem, l, bytes).map_err(write_intent)?
    };
    let set = (v >> bit) & 1;
    let new = match m {
        Mnemonic::Bts => v | (1 << bit),
        Mnemonic::Btr => v & !(1 << bit),
        Mnemonic::Btc => v ^ (1 << bit),
        _ => v,
    };
    if m != Mnemonic::Bt {
        match l {
            Loc::Mem(a) if insn.has_lock_prefix() => {
                // Retry atomically on the containing unit.
                let b = bytes as usize;
                let mut seen = [0u8; 4];
                let mut old = v;
                loop {
                    let nv = match m {
                        Mnemonic::Bts => old | (1 << bit),
                        Mnemonic::Btr => old & !(1 << bit),
                        _ => old ^ (1 << bit),
                    };
                    if mem.cmpxchg(
                        a,
                        &old.to_le_bytes()[..b],
                        &nv.to_le_bytes()[..b],
                        &mut seen[..b],
                    )? {
                        break;
                    }
                    let mut w = [0u8; 4];
                    w[..b].copy_from_slice(&seen[..b]);
                    old = u32::from_le_bytes(w);
                }
                let set = (old >> bit) & 1;
                Fl::eager((old_flags & !CF) | set).apply(cpu);
                return Ok(());
            }
            _ => write_loc(cpu, mem, l, bytes, new)?,
        }
    }
    Fl::eager((old_flags & !CF) | set).apply(cpu);
    Ok(())
}

fn muldiv<M: Memory>(
    cpu: &mut CpuState,
    mem: &mut M,
    insn: &Instruction,
    m: Mnemonic,
) -> Result<(), Exception> {
    let bytes = op_size(insn, 0);
    let src = read_op(cpu, mem, insn, 0)?;
    let old = flags::compute(cpu);
    match (m, bytes) {
        (Mnemonic::Mul, _) | (Mnemonic::Imul, _) => {
            let signed = m == Mnemonic::Imul;
            let a = read_loc(cpu, mem, Loc::Reg(EAX, bytes), bytes)?;
            let (lo, hi, over) = if signed {
                let p = sext(a, bytes) as i64 * sext(src, bytes) as i64;
                let lo = p as u32 & mask(bytes);
                let fits = p == sext(lo, bytes) as i64;
                (lo, (p >> (bytes * 8)) as u32 & mask(bytes), !fits)
            } else {
                let p = a as u64 * src as u64;
                let lo = p as u32 & mask(bytes);
                let hi = (p >> (bytes * 8)) as u32 & mask(bytes);
                (lo, hi, hi != 0)
            };
            match bytes {
                1 => cpu.set_reg16(EAX, (lo | (hi << 8)) as u16),
                2 => {
                    cpu.set_reg16(EAX, lo as u16);
                    cpu.set_reg16(EDX, hi as u16);
                }
                _ => {
                    cpu.regs[EAX] = lo;
                    cpu.regs[EDX] = hi;
                }
            }
            let mut f = (old & !(CF | OF | SF | ZF | PF | AF)) | szp(lo, bytes);
            if over {
                f |= CF | OF;
            }
            Fl::eager(f).apply(cpu);
        }
        _ => {
            let signed = m == Mnemonic::Idiv;
            let (dividend_lo, dividend_hi) = match bytes {
                1 => (cpu.regs[EAX] & 0xff, (cpu.regs[EAX] >> 8) & 0xff),
                2 => (cpu.regs[EAX] & 0xffff, cpu.regs[EDX] & 0xffff),
                _ => (cpu.regs[EAX], cpu.regs[EDX]),
            };
            let sh = bytes * 8;
            let dividend = ((dividend_hi as u64) << sh) | dividend_lo as u64;
            if src & mask(bytes) == 0 {
                return Err(Exception::DivideError);
            }
            let (q, r) = if signed {
                let n = if sh == 32 {
                    dividend as i64
                } else {
                    ((dividend << (64 - 2 * sh)) as i64) >> (64 - 2 * sh)
                };
                let d = sext(src, bytes) as i64;
                let q = n.checked_div(d).ok_or(Exception::DivideError)?;
                let r = n.checked_rem(d).ok_or(Exception::DivideError)?;
                let lim = 1i64 << (sh - 1);
                if q >= lim || q < -lim {
                    return Err(Exception::DivideError);
                }
                (q as u32 & mask(bytes), r as u32 & mask(bytes))
            } else {
                let d = (src & mask(bytes)) as u64;
                let q = dividend / d;
                if q > mask(bytes) as u64 {
                    return Err(Exception::DivideError);
                }
                (q as u32, (dividend % d) as u32)
            };
            match bytes {
                1 => cpu.set_reg16(EAX, (q | (r << 8)) as u16),
                2 => {
                    cpu.set_reg16(EAX, q as u16);
                    cpu.set_reg16(EDX, r as u16);
                }
                _ => {
                    cpu.regs[EAX] = q;
                    cpu.regs[EDX] = r;
                }
            }
        }
    }
    Ok(())
}

fn cpuid(cpu: &mut CpuState) {
    let (a, b, c, d) = crate::cpuid::query(cpu.regs[EAX], cpu.regs[ECX]);
    cpu.regs[EAX] = a;
    cpu.regs[EBX] = b;
    cpu.regs[ECX] = c;
    cpu.regs[EDX] = d;
}

fn bcd(cpu: &mut CpuState, insn: &Instruction, m: Mnemonic) -> Result<(), Exception> {
    let old = flags::compute(cpu);
    let al = cpu.regs[EAX] as u8;
    let ah = (cpu.regs[EAX] >> 8) as u8;
    let (cf0, af0) = (old & CF != 0, old & AF != 0);
    let mut f = old & !(CF | AF | SF | ZF | PF | OF);
    match m {
        Mnemonic::Daa | Mnemonic::Das => {
            let mut v = al;
            let mut cf = false;
            let mut af = false;
            let add = m == Mnemonic::Daa;
            if (al & 0xf) > 9 || af0 {
                v = if add {
                    v.wrapping_add(6)
                } else {
                    v.wrapping_sub(6)
                };
                cf = cf0 || if add { al > 0xf9 } else { al < 6 };
                af = true;
            }
            if al > 0x99 || cf0 {
                v = if add {
                    v.wrapping_add(0x60)
                } else {
                    v.wrapping_sub(0x60)
                };
                cf = true;
            }
            cpu.set_reg8(0, v);
            f |= szp(v as u32, 1);
            if cf {
                f |= CF;
            }
            if af {
                f |= AF;
            }
            // OF is undefined; real CPUs compute it like an add/sub.
            if add && (al & 0x80 == 0) && (v & 0x80 != 0)
                || !add && (al & 0x80 != 0) && (v & 0x80 == 0)
            {
                f |= OF;
            }
        }
        Mnemonic::Aaa | Mnemonic::Aas => {
            let mut ax = cpu.regs[EAX] as u16;
            if (al & 0xf) > 9 || af0 {
                if m == Mnemonic::Aaa {
                    ax = ax.wrapping_add(0x106);
                } else {
                    // AX - 6 (a borrow out of AL reaches AH), then AH - 1.
                    ax = ax.wrapping_sub(6).wrapping_sub(0x100);
                }
                f |= AF | CF;
            }
            cpu.set_reg16(EAX, ax & 0xff0f);
            f |= szp(ax as u32 & 0xf, 1);
        }
        Mnemonic::Aam => {
            let base = insn.immediate8();
            if base == 0 {
                return Err(Exception::DivideError);
            }
            let v = ((al / base) as u16) << 8 | (al % base) as u16;
            cpu.set_reg16(EAX, v);
            f |= szp(v as u32 & 0xff, 1);
        }
        _ => {
            // AAD
            let base = insn.immediate8();
            let v = al.wrapping_add(ah.wrapping_mul(base));
            cpu.set_reg16(EAX, v as u16);
            f |= szp(v as u32, 1);
        }
    }
    Fl::eager(f).apply(cpu);
    Ok(())
}

/// Executes a general-purpose instruction; None if `insn` is not one.
pub fn exec<M: Memory, E: Env>(
    cpu: &mut CpuState,
    mem: &mut M,
    env: &mut E,
    insn: &Instruction,
) -> Result<Option<Flow>, Exception> {
    let m = insn.mnemonic();
    let next = insn.next_ip32();
    match m {
        Mnemonic::Mov => {
            let k0 = insn.op_kind(0);
            let k1 = insn.op_kind(1);
            if k0 == OpKind::Register && insn.op_register(0).is_segment_register() {
                let sel = read_op(cpu, mem, insn, 1)? as u16;
                let seg = super::operand::seg_index(insn.op_register(0));
                if seg == crate::state::CS {
                    return Err(Exception::InvalidOpcode);
                }
                load_seg(cpu, env, seg, sel)?;
            } else if k1 == OpKind::Register && insn.op_register(1).is_segment_register() {
                let seg = super::operand::seg_index(insn.op_register(1));
                let sel = cpu.segs[seg].selector;
                // To a register the value is zero-extended; to memory 16 bits.
                match loc(cpu, insn, 0)? {
                    Loc::Reg(n, 4) => cpu.regs[n] = sel & 0xffff,
                    l => write_loc(cpu, mem, l, 2, sel)?,
                }
            } else if k0 == OpKind::Register && !insn.op_register(0).is_gpr()
                || k1 == OpKind::Register && !insn.op_register(1).is_gpr()
            {
                // Control and debug registers: privileged.
                return Err(Exception::GeneralProtection(0));
            } else {
                let v = read_op(cpu, mem, insn, 1)?;
                write_op(cpu, mem, insn, 0, v)?;
            }
        }
        Mnemonic::Movzx | Mnemonic::Movsx => {
            let sb = op_size(insn, 1);
            let v = read_op(cpu, mem, insn, 1)?;
            let v = if m == Mnemonic::Movsx {
                sext(v, sb) as u32
            } else {
                v
            };
            write_op(cpu, mem, insn, 0, v)?;
        }
        Mnemonic::Lea => {
            let v = super::operand::offset(cpu, insn);
            write_op(cpu, mem, insn, 0, v)?;
        }
        Mnemonic::Xchg => {
            let b = op_size(insn, 0);
            let l1 = loc(cpu, insn, 1)?;
            let v1 = read_loc(cpu, mem, l1, b)?;
            let old = rmw(cpu, mem, insn, |_, _| (Some(v1), None))?;
            write_loc(cpu, mem, l1, b, old)?;
        }
        Mnemonic::Add
        | Mnemonic::Adc
        | Mnemonic::Sub
        | Mnemonic::Sbb
        | Mnemonic::And
        | Mnemonic::Or
        | Mnemonic::Xor => {
            let bytes = op_size(insn, 0);
            let b = read_op(cpu, mem, insn, 1)?;
            rmw(cpu, mem, insn, |cpu, a| {
                let (r, fl) = alu(cpu, m, bytes, a, b);
                (Some(r), Some(fl))
            })?;
        }
        Mnemonic::Cmp | Mnemonic::Test => {
            let bytes = op_size(insn, 0);
            let a = read_op(cpu, mem, insn, 0)?;
            let b = read_op(cpu, mem, insn, 1)?;
            let (_, fl) = alu(cpu, m, bytes, a, b);
            fl.apply(cpu);
        }
        Mnemonic::Inc | Mnemonic::Dec => {
            let bytes = op_size(insn, 0);
            let mk = mask(bytes);
            rmw(cpu, mem, insn, |cpu, a| {
                let c = flags::compute(cpu) & CF;
                let (r, k) = if m == Mnemonic::Inc {
                    (a.wrapping_add(1) & mk, CcOp::Inc)
                } else {
                    (a.wrapping_sub(1) & mk, CcOp::Dec)
                };
                (Some(r), Some(Fl::lazy(k, bytes, r, c, 0)))
            })?;
        }
        Mnemonic::Neg => {
            let bytes = op_size(insn, 0);
            let mk = mask(bytes);
            rmw(cpu, mem, insn, |_, a| {
                let r = 0u32.wrapping_sub(a) & mk;
                (Some(r), Some(Fl::lazy(CcOp::Sub, bytes, r, a & mk, 0)))
            })?;
        }
        Mnemonic::Not => {
            let mk = mask(op_size(insn, 0));
            rmw(cpu, mem, insn, |_, a| (Some(!a & mk), None))?;
        }
        Mnemonic::Mul | Mnemonic::Div | Mnemonic::Idiv => muldiv(cpu, mem, insn, m)?,
        Mnemonic::Imul => {
            if insn.op_count() == 1 {
                muldiv(cpu, mem, insn, m)?;
            } else {
                let bytes = op_size(insn, 0);
                let (a, b) = if insn.op_count() == 3 {
                    (read_op(cpu, mem, insn, 1)?, read_op(cpu, mem, insn, 2)?)
                } else {
                    (read_op(cpu, mem, insn, 0)?, read_op(cpu, mem, insn, 1)?)
                };
                let p = sext(a, bytes) as i64 * sext(b, bytes) as i64;
                let r = p as u32 & mask(bytes);
                let old = flags::compute(cpu);
                let mut f = (old & !(CF | OF | SF | ZF | PF | AF)) | szp(r, bytes);
                if p != sext(r, bytes) as i64 {
                    f |= CF | OF;
                }
                write_op(cpu, mem, insn, 0, r)?;
                Fl::eager(f).apply(cpu);
            }
        }
        Mnemonic::Shl
        | Mnemonic::Sal
        | Mnemonic::Shr
        | Mnemonic::Sar
        | Mnemonic::Rol
        | Mnemonic::Ror
        | Mnemonic::Rcl
        | Mnemonic::Rcr => shift(cpu, mem, insn, m)?,
        Mnemonic::Shld => double_shift(cpu, mem, insn, true)?,
        Mnemonic::Shrd => double_shift(cpu, mem, insn, false)?,
        Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc => {
            bit_test(cpu, mem, insn, m)?
        }
        Mnemonic::Bsf | Mnemonic::Bsr | Mnemonic::Tzcnt | Mnemonic::Lzcnt => {
            // Our CPUID reports neither BMI1 nor ABM: like such CPUs we run
            // TZCNT/LZCNT (an F3 prefix on BSF/BSR) as BSF/BSR.
            let bytes = op_size(insn, 0);
            let v = read_op(cpu, mem, insn, 1)? & mask(bytes);
            let old = flags::compute(cpu);
            if v == 0 {
                Fl::eager((old & !(ZF | CF | SF | OF | PF | AF)) | ZF | PF).apply(cpu);
            } else {
                let r = if matches!(m, Mnemonic::Bsf | Mnemonic::Tzcnt) {
                    v.trailing_zeros()
                } else {
                    31 - v.leading_zeros()
                };
                write_op(cpu, mem, insn, 0, r)?;
                Fl::eager((old & !(ZF | CF | SF | OF | PF | AF)) | parity(r)).apply(cpu);
            }
        }
        Mnemonic::Bswap => {
            let r = insn.op_register(0);
            let v = read_reg(cpu, r);
            // 16-bit BSWAP is undefined; real CPUs clear the register half.
            let nv = if r.size() == 2 { 0 } else { v.swap_bytes() };
            write_reg(cpu, r, nv);
        }
        Mnemonic::Cmpxchg => {
            let bytes = op_size(insn, 0);
            let src = read_op(cpu, mem, insn, 1)?;
            let acc = read_loc(cpu, mem, Loc::Reg(EAX, bytes), bytes)?;
            let mut equal = false;
            let old = rmw(cpu, mem, insn, |cpu, d| {
                let (_, fl) = alu(cpu, Mnemonic::Cmp, bytes, acc, d);
                equal = d & mask(bytes) == acc;
                // The destination is always written (with itself if unequal).
                (Some(if equal { src } else { d }), Some(fl))
            })?;
            if !equal {
                write_loc(cpu, mem, Loc::Reg(EAX, bytes), bytes, old)?;
            }
        }
        Mnemonic::Cmpxchg8b => {
            let a = super::operand::ea(cpu, insn);
            let expected = ((cpu.regs[EDX] as u64) << 32) | cpu.regs[EAX] as u64;
            let new = ((cpu.regs[ECX] as u64) << 32) | cpu.regs[EBX] as u64;
            let mut seen = [0u8; 8];
            let ok = mem.cmpxchg(a, &expected.to_le_bytes(), &new.to_le_bytes(), &mut seen)?;
            let old = flags::compute(cpu);
            if ok {
                Fl::eager(old | ZF).apply(cpu);
            } else {
                let v = u64::from_le_bytes(seen);
                cpu.regs[EAX] = v as u32;
                cpu.regs[EDX] = (v >> 32) as u32;
                Fl::eager(old & !ZF).apply(cpu);
            }
        }
        Mnemonic::Xadd => {
            let bytes = op_size(insn, 0);
            let src = read_op(cpu, mem, insn, 1)?;
            let old = rmw(cpu, mem, insn, |cpu, d| {
                let (r, fl) = alu(cpu, Mnemonic::Add, bytes, d, src);
                (Some(r), Some(fl))
            })?;
            // With XADD reg, reg the sum wins when both are the same register.
            if !(insn.op_kind(0) == OpKind::Register && insn.op_register(0) == insn.op_register(1))
            {
                write_op(cpu, mem, insn, 1, old)?;
            }
        }
        Mnemonic::Push => {
            let bytes = stack_size(insn);
            let v = if insn.op_kind(0) == OpKind::Register
                && insn.op_register(0).is_segment_register()
            {
                cpu.segs[super::operand::seg_index(insn.op_register(0))].selector
            } else {
                match insn.op_kind(0) {
                    OpKind::Immediate8to32 | OpKind::Immediate8to16 | OpKind::Immediate8 => {
                        insn.immediate8to32() as u32
                    }
                    OpKind::Immediate32 => insn.immediate32(),
                    OpKind::Immediate16 => insn.immediate16() as u32,
                    _ => read_op(cpu, mem, insn, 0)?,
                }
            };
            push(cpu, mem, v, bytes)?;
        }
        Mnemonic::Pop => {
            let bytes = stack_size(insn);
            if insn.op_kind(0) == OpKind::Register && insn.op_register(0).is_segment_register() {
                let seg = super::operand::seg_index(insn.op_register(0));
                let v = peek(cpu, mem, bytes, 0)?;
                load_seg(cpu, env, seg, v as u16)?;
                cpu.regs[ESP] = cpu.regs[ESP].wrapping_add(bytes);
            } else {
                let v = peek(cpu, mem, bytes, 0)?;
                let sp = cpu.regs[ESP];
                // An ESP-based destination is computed after the increment.
                cpu.regs[ESP] = sp.wrapping_add(bytes);
                if let Err(e) = write_op(cpu, mem, insn, 0, v) {
                    cpu.regs[ESP] = sp;
                    return Err(e);
                }
            }
        }
        Mnemonic::Pushad | Mnemonic::Pusha => {
            let bytes = if m == Mnemonic::Pushad { 4 } else { 2 };
            let sp0 = cpu.regs[ESP];
            let base = cpu.segs[SS].base;
            for i in 0..8u32 {
                let v = cpu.regs[i as usize];
                let a = base.wrapping_add(sp0.wrapping_sub(bytes * (i + 1)));
                if bytes == 4 {
                    mem.write_u32(a, v)?;
                } else {
                    mem.write_u16(a, v as u16)?;
                }
            }
            cpu.regs[ESP] = sp0.wrapping_sub(bytes * 8);
        }
        Mnemonic::Popad | Mnemonic::Popa => {
            let bytes = if m == Mnemonic::Popad { 4 } else { 2 };
            // Popped in order, EDI first from the lowest address, each
            // register written as it is read: on a fault the hardware
            // reports the first inaccessible byte going up and keeps the
            // registers popped so far (ESP is unchanged, so restarting the
            // instruction gives the same result).
            for i in (0..8).rev() {
                let v = peek(cpu, mem, bytes, bytes * (7 - i as u32))?;
                if i == ESP {
                    continue;
                }
                if bytes == 4 {
                    cpu.regs[i] = v;
                } else {
                    cpu.set_reg16(i, v as u16);
                }
            }
            cpu.regs[ESP] = cpu.regs[ESP].wrapping_add(bytes * 8);
        }
        Mnemonic::Pushfd | Mnemonic::Pushf => {
            // VM and RF read as zero in the pushed image.
            let f = cpu.eflags() & !0x3_0000;
            push(cpu, mem, f, if m == Mnemonic::Pushfd { 4 } else { 2 })?;
        }
        Mnemonic::Popfd | Mnemonic::Popf => {
            let bytes = if m == Mnemonic::Popfd { 4 } else { 2 };
            let v = peek(cpu, mem, bytes, 0)?;
            // At CPL 3 with IOPL 0 neither IF nor IOPL changes.
            let mut mask = crate::state::ARITH_FLAGS | crate::state::TF | DF | crate::state::NT;
            if bytes == 4 {
                mask |= AC | ID;
            }
            cpu.set_eflags(v, mask);
            cpu.regs[ESP] = cpu.regs[ESP].wrapping_add(bytes);
        }
        Mnemonic::Lahf => {
            let f = cpu.eflags() as u8;
            cpu.set_reg8(4, f);
        }
        Mnemonic::Sahf => {
            let ah = cpu.reg8(4) as u32;
            cpu.set_eflags(ah, CF | PF | AF | ZF | SF);
        }
        Mnemonic::Cwde => cpu.regs[EAX] = cpu.regs[EAX] as u16 as i16 as i32 as u32,
        Mnemonic::Cbw => cpu.set_reg16(EAX, cpu.regs[EAX] as u8 as i8 as i16 as u16),
        Mnemonic::Cdq => cpu.regs[EDX] = ((cpu.regs[EAX] as i32) >> 31) as u32,
        Mnemonic::Cwd => cpu.set_reg16(EDX, ((cpu.regs[EAX] as i16) >> 15) as u16),
        Mnemonic::Clc | Mnemonic::Stc | Mnemonic::Cmc => {
            let f = flags::compute(cpu);
            let nf = match m {
                Mnemonic::Clc => f & !CF,
                Mnemonic::Stc => f | CF,
                _ => f ^ CF,
            };
            Fl::eager(nf).apply(cpu);
        }
        Mnemonic::Cld => cpu.eflags &= !DF,
        Mnemonic::Std => cpu.eflags |= DF,
        Mnemonic::Cli | Mnemonic::Sti | Mnemonic::Hlt => {
            // Privileged at CPL 3 with IOPL 0.
            return Err(Exception::GeneralProtection(0));
        }
        Mnemonic::Salc => {
            let v = if cf(cpu) { 0xff } else { 0 };
            cpu.set_reg8(0, v);
        }
        // LOOPE/LOOPNE carry a condition code too; they are handled below.
        _ if insn.condition_code() != ConditionCode::None
            && !matches!(m, Mnemonic::Loope | Mnemonic::Loopne) =>
        {
            let c = flags::condition(cpu, cc_index(insn.condition_code()));
            match m {
                _ if super::is_setcc(m) => write_op(cpu, mem, insn, 0, c as u32)?,
                _ if super::is_cmovcc(m) => {
                    // The source is read (and may fault) even when false.
                    let v = read_op(cpu, mem, insn, 1)?;
                    if c {
                        write_op(cpu, mem, insn, 0, v)?;
                    }
                }
                _ if insn.is_jcc_short_or_near() => {
                    if c {
                        return Ok(Some(Flow::Jump(branch_target(insn))));
                    }
                }
                // x87 FCMOVcc and others with a condition go elsewhere.
                _ => return Ok(None),
            }
        }
        Mnemonic::Jmp => {
            return Ok(Some(Flow::Jump(match insn.op_kind(0) {
                OpKind::NearBranch16 | OpKind::NearBranch32 => branch_target(insn),
                OpKind::FarBranch16 | OpKind::FarBranch32 => {
                    return Err(Exception::GeneralProtection(
                        insn.far_branch_selector() as u32 & !3,
                    ))
                }
                _ => {
                    if insn.is_jmp_far_indirect() {
                        return Err(Exception::GeneralProtection(0));
                    }
                    let v = read_op(cpu, mem, insn, 0)?;
                    if op_size(insn, 0) == 2 {
                        v & 0xffff
                    } else {
                        v
                    }
                }
            })));
        }
        Mnemonic::Call => {
            if insn.is_call_far() || insn.is_call_far_indirect() {
                return Err(Exception::GeneralProtection(0));
            }
            let bytes = stack_size(insn);
            let target = match insn.op_kind(0) {
                OpKind::NearBranch16 | OpKind::NearBranch32 => branch_target(insn),
                _ => {
                    let v = read_op(cpu, mem, insn, 0)?;
                    if bytes == 2 {
                        v & 0xffff
                    } else {
                        v
                    }
                }
            };
            push(cpu, mem, next, bytes)?;
            return Ok(Some(Flow::Jump(target)));
        }
        Mnemonic::Ret => {
            let bytes = stack_size(insn);
            let t = peek(cpu, mem, bytes, 0)?;
            let extra = if insn.op_count() > 0 {
                insn.immediate16() as u32
            } else {
                0
            };
            cpu.regs[ESP] = cpu.regs[ESP].wrapping_add(bytes).wrapping_add(extra);
            return Ok(Some(Flow::Jump(t)));
        }
        Mnemonic::Jecxz | Mnemonic::Jcxz => {
            let v = if m == Mnemonic::Jecxz {
                cpu.regs[ECX]
            } else {
                cpu.regs[ECX] & 0xffff
            };
            if v == 0 {
                return Ok(Some(Flow::Jump(branch_target(insn))));
            }
        }
        Mnemonic::Loop | Mnemonic::Loope | Mnemonic::Loopne => {
            // The address size (0x67) picks CX or ECX.
            let wide = !matches!(
                insn.code(),
                iced_x86::Code::Loop_rel8_16_CX
                    | iced_x86::Code::Loop_rel8_32_CX
                    | iced_x86::Code::Loope_rel8_16_CX
                    | iced_x86::Code::Loope_rel8_32_CX
                    | iced_x86::Code::Loopne_rel8_16_CX
                    | iced_x86::Code::Loopne_rel8_32_CX
            );
            let c = if wide {
                cpu.regs[ECX] = cpu.regs[ECX].wrapping_sub(1);
                cpu.regs[ECX]
            } else {
                let c = (cpu.regs[ECX] as u16).wrapping_sub(1);
                cpu.set_reg16(ECX, c);
                c as u32
            };
            let zf = flags::compute(cpu) & ZF != 0;
            let take = c != 0
                && match m {
                    Mnemonic::Loope => zf,
                    Mnemonic::Loopne => !zf,
                    _ => true,
                };
            if take {
                return Ok(Some(Flow::Jump(branch_target(insn))));
            }
        }
        Mnemonic::Enter => {
            let bytes = stack_size(insn);
            let size = insn.immediate16() as u32;
            let level = (insn.immediate8_2nd() & 31) as u32;
            let sp0 = cpu.regs[ESP];
            let ebp = cpu.regs[EBP];
            let base = cpu.segs[SS].base;
            let mut sp = sp0.wrapping_sub(bytes);
            write_sized(mem, base.wrapping_add(sp), ebp, bytes)?;
            let frame = sp;
            if level > 0 {
                let mut bp = ebp;
                for _ in 1..level {
                    bp = bp.wrapping_sub(bytes);
                    let v = read_sized(mem, base.wrapping_add(bp), bytes)?;
                    sp = sp.wrapping_sub(bytes);
                    write_sized(mem, base.wrapping_add(sp), v, bytes)?;
                }
                sp = sp.wrapping_sub(bytes);
                write_sized(mem, base.wrapping_add(sp), frame, bytes)?;
            }
            sp = sp.wrapping_sub(size);
            // Like the hardware, check that the new stack top is writable
            // once the frame is built: a fault there leaves the frame
            // written and the registers unchanged (a restart rewrites it).
            let a = base.wrapping_add(sp);
            let v = read_sized(mem, a, bytes).map_err(write_intent)?;
            write_sized(mem, a, v, bytes)?;
            if bytes == 2 {
                cpu.set_reg16(EBP, frame as u16);
            } else {
                cpu.regs[EBP] = frame;
            }
            cpu.regs[ESP] = sp;
        }
        Mnemonic::Leave => {
            let bytes = stack_size(insn);
            let bp = cpu.regs[EBP];
            let v = read_sized(mem, cpu.segs[SS].base.wrapping_add(bp), bytes)?;
            cpu.regs[ESP] = bp.wrapping_add(bytes);
            if bytes == 2 {
                cpu.set_reg16(EBP, v as u16);
            } else {
                cpu.regs[EBP] = v;
            }
        }
        Mnemonic::Int => return Err(Exception::SoftwareInterrupt(insn.immediate8())),
        Mnemonic::Int3 => return Err(Exception::Breakpoint),
        Mnemonic::Into => {
            if flags::compute(cpu) & OF != 0 {
                return Err(Exception::Overflow);
            }
        }
        Mnemonic::Int1 => return Err(Exception::Breakpoint),
        Mnemonic::Ud0 | Mnemonic::Ud1 | Mnemonic::Ud2 => return Err(Exception::InvalidOpcode),
        Mnemonic::Sysenter => return Err(Exception::Sysenter),
        Mnemonic::Bound => {
            let bytes = op_size(insn, 0);
            let idx = sext(read_op(cpu, mem, insn, 0)?, bytes);
            let a = super::operand::ea(cpu, insn);
            // Like the hardware, check the lower bound before reading the
            // upper one: an index below it raises #BR even when the upper
            // bound is on an unmapped page.
            let lo = sext(read_sized(mem, a, bytes)?, bytes);
            if idx < lo {
                return Err(Exception::BoundRange);
            }
            let hi = sext(read_sized(mem, a.wrapping_add(bytes), bytes)?, bytes);
            if idx > hi {
                return Err(Exception::BoundRange);
            }
        }
        Mnemonic::Daa
        | Mnemonic::Das
        | Mnemonic::Aaa
        | Mnemonic::Aas
        | Mnemonic::Aam
        | Mnemonic::Aad => bcd(cpu, insn, m)?,
        Mnemonic::Xlatb => {
            // iced-x86 describes the operand as [EBX+AL] or, with 0x67,
            // [BX+AL], which wraps at 64 KiB.
            let v = mem.read_u8(super::operand::ea(cpu, insn))?;
            cpu.set_reg8(0, v);
        }
        Mnemonic::Cpuid => cpuid(cpu),
        Mnemonic::Rdtsc => {
            let t = env.rdtsc();
            cpu.regs[EAX] = t as u32;
            cpu.regs[EDX] = (t >> 32) as u32;
        }
        Mnemonic::Lds | Mnemonic::Les | Mnemonic::Lfs | Mnemonic::Lgs | Mnemonic::Lss => {
            let bytes = op_size(insn, 0);
            let a = super::operand::ea(cpu, insn);
            let off = read_sized(mem, a, bytes)?;
            let sel = mem.read_u16(a.wrapping_add(bytes))?;
            let seg = match m {
                Mnemonic::Lds => crate::state::DS,
                Mnemonic::Les => crate::state::ES,
                Mnemonic::Lfs => crate::state::FS,
                Mnemonic::Lgs => crate::state::GS,
                _ => SS,
            };
            load_seg(cpu, env, seg, sel)?;
            write_op(cpu, mem, insn, 0, off)?;
        }
        Mnemonic::In
        | Mnemonic::Out
        | Mnemonic::Iret
        | Mnemonic::Iretd
        | Mnemonic::Lgdt
        | Mnemonic::Lidt
        | Mnemonic::Lldt
        | Mnemonic::Ltr
        | Mnemonic::Invlpg
        | Mnemonic::Wrmsr
        | Mnemonic::Rdmsr
        | Mnemonic::Clts
        | Mnemonic::Lmsw
        | Mnemonic::Wbinvd
        | Mnemonic::Invd
        | Mnemonic::Rdpmc
        | Mnemonic::Sysexit => return Err(Exception::GeneralProtection(0)),
        _ => return Ok(None),
    }
    Ok(Some(Flow::Next))
}

fn branch_target(insn: &Instruction) -> u32 {
    match insn.op_kind(0) {
        OpKind::NearBranch16 => insn.near_branch16() as u32,
        _ => insn.near_branch32(),
    }
}

fn read_sized<M: Memory>(mem: &mut M, a: u32, bytes: u32) -> Result<u32, Exception> {
    Ok(if bytes == 2 {
        mem.read_u16(a)? as u32
    } else {
        mem.read_u32(a)?
    })
}

fn write_sized<M: Memory>(mem: &mut M, a: u32, v: u32, bytes: u32) -> Result<(), Exception> {
    if bytes == 2 {
        mem.write_u16(a, v as u16)?;
    } else {
        mem.write_u32(a, v)?;
    }
    Ok(())
}

fn load_seg<E: Env>(
    cpu: &mut CpuState,
    env: &mut E,
    seg: usize,
    sel: u16,
) -> Result<(), Exception> {
    let (base, limit) = env.load_segment(seg, sel)?;
    let s = &mut cpu.segs[seg];
    s.selector = sel as u32;
    s.base = base;
    s.limit = limit;
    Ok(())
}
