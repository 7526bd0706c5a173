//! Lazy arithmetic flags (SDM vol. 1 §3.4.3.1 and the flag tables of
//! vol. 2 for each instruction).
//!
//! An instruction that sets the arithmetic flags records its operation and
//! operands in `cc_op`/`cc_dst`/`cc_src`/`cc_src2`; `compute` derives CF,
//! PF, AF, ZF, SF and OF from them when they are read. Most flag results are
//! overwritten before anything reads them, so this saves the work.
//!
//! `cc_op` is `kind << 2 | size` with size 0/1/2 for 8/16/32-bit operands.

use crate::state::{CpuState, AF, CF, OF, PF, SF, ZF};

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CcOp {
    /// The flags themselves are in `cc_src`.
    Eflags = 0,
    /// dst = result, src = second operand, src2 = first operand.
    Add = 1,
    /// As Add, with a carry-in of one (with carry-in zero it is Add).
    Adc = 2,
    /// dst = result, src = subtrahend, src2 = minuend.
    Sub = 3,
    /// As Sub, with a borrow-in of one.
    Sbb = 4,
    /// AND/OR/XOR/TEST: dst = result; CF = OF = 0.
    Logic = 5,
    /// dst = result, src = the CF from before (INC/DEC keep CF).
    Inc = 6,
    Dec = 7,
    /// dst = result, src = operand shifted by count-1 (its top bit is CF).
    Shl = 8,
    /// dst = result, src = operand shifted by count-1 (bit 0 is CF),
    /// src2 = the original operand (OF = its top bit for SHR).
    Shr = 9,
    Sar = 10,
}

/// Operand size in bytes to the size code of `cc_op`.
pub fn size_code(bytes: u32) -> u32 {
    match bytes {
        1 => 0,
        2 => 1,
        _ => 2,
    }
}

pub fn op(kind: CcOp, bytes: u32) -> u32 {
    ((kind as u32) << 2) | size_code(bytes)
}

const KINDS: [CcOp; 11] = [
    CcOp::Eflags,
    CcOp::Add,
    CcOp::Adc,
    CcOp::Sub,
    CcOp::Sbb,
    CcOp::Logic,
    CcOp::Inc,
    CcOp::Dec,
    CcOp::Shl,
    CcOp::Shr,
    CcOp::Sar,
];

fn parity(v: u32) -> u32 {
    if (v as u8).count_ones() % 2 == 0 {
        PF
    } else {
        0
    }
}

fn bits_of(code: u32) -> u32 {
    match code & 3 {
        0 => 8,
        1 => 16,
        _ => 32,
    }
}

/// The six arithmetic flags as EFLAGS bits.
pub fn compute(s: &CpuState) -> u32 {
    compute_from(s.cc_op, s.cc_dst, s.cc_src, s.cc_src2)
}

pub fn compute_from(cc_op: u32, dst: u32, src: u32, src2: u32) -> u32 {
    let kind = KINDS
        .get((cc_op >> 2) as usize)
        .copied()
        .unwrap_or(CcOp::Eflags);
    if kind == CcOp::Eflags {
        return src & (CF | PF | AF | ZF | SF | OF);
    }
    let bits = bits_of(cc_op);
    let mask = if bits == 32 {
        u32::MAX
    } else {
        (1u32 << bits) - 1
    };
    let sign = 1u32 << (bits - 1);
    let res = dst & mask;
    let mut f = parity(res);
    if res == 0 {
        f |= ZF;
    }
    if res & sign != 0 {
        f |= SF;
    }
    match kind {
        CcOp::Add | CcOp::Adc => {
            let (a, b) = (src2 & mask, src & mask);
            let carry = if kind == CcOp::Adc { res <= a } else { res < a };
            if carry {
                f |= CF;
            }
            if (a ^ res) & (b ^ res) & sign != 0 {
                f |= OF;
            }
            f |= (a ^ b ^ res) & AF;
        }
        CcOp::Sub | CcOp::Sbb => {
            let (a, b) = (src2 & mask, src & mask);
            let borrow = if kind == CcOp::Sbb { a <= b } else { a < b };
            if borrow {
                f |= CF;
            }
            if (a ^ b) & (a ^ res) & sign != 0 {
                f |= OF;
            }
            f |= (a ^ b ^ res) & AF;
        }
        CcOp::Logic => {}
        CcOp::Inc => {
            f |= src & CF;
            if res == sign {
                f |= OF;
            }
            if res & 0xf == 0 {
                f |= AF;
            }
        }
        CcOp::Dec => {
            f |= src & CF;
            if res == sign - 1 {
                f |= OF;
            }
            if res & 0xf == 0xf {
                f |= AF;
            }
        }
        CcOp::Shl => {
            if src & sign != 0 {
                f |= CF;
            }
            if ((f & CF != 0) as u32) ^ ((res & sign != 0) as u32) != 0 {
                f |= OF;
            }
        }
        CcOp::Shr => {
            f |= src & 1;
            if src2 & sign != 0 {
                f |= OF;
            }
        }
        CcOp::Sar => {
            f |= src & 1;
        }
        CcOp::Eflags => {}
    }
    f
}

/// Records an operation's flags in `s`.
#[inline]
pub fn set(s: &mut CpuState, kind: CcOp, bytes: u32, dst: u32, src: u32, src2: u32) {
    s.cc_op = op(kind, bytes);
    s.cc_dst = dst;
    s.cc_src = src;
    s.cc_src2 = src2;
}

/// Stores already computed flags (only the arithmetic bits of `f` count).
#[inline]
pub fn set_eager(s: &mut CpuState, f: u32) {
    s.cc_op = CcOp::Eflags as u32;
    s.cc_src = f;
}

/// The value of condition code `cc` (the low nibble of Jcc/SETcc/CMOVcc:
/// O, NO, B, AE, E, NE, BE, A, S, NS, P, NP, L, GE, LE, G).
pub fn condition(s: &CpuState, cc: u8) -> bool {
    let f = compute(s);
    let (cf, zf, sf, of, pf) = (
        f & CF != 0,
        f & ZF != 0,
        f & SF != 0,
        f & OF != 0,
        f & PF != 0,
    );
    let r = match cc >> 1 {
        0 => of,
        1 => cf,
        2 => zf,
        3 => cf || zf,
        4 => sf,
        5 => pf,
        6 => sf != of,
        _ => zf || sf != of,
    };
    r ^ (cc & 1 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_sub_flags() {
        // 0x7f + 1 (8 bit): OF, SF, AF; no CF.
        let f = compute_from(op(CcOp::Add, 1), 0x80, 1, 0x7f);
        assert_eq!(f & (OF | SF | AF | CF | ZF), OF | SF | AF);
        // 0xffffffff + 1: CF, ZF, AF, PF.
        let f = compute_from(op(CcOp::Add, 4), 0, 1, u32::MAX);
        assert_eq!(f, CF | ZF | AF | PF);
        // 0 - 1 (16 bit): CF, SF, AF, PF.
        let f = compute_from(op(CcOp::Sub, 2), 0xffff, 1, 0);
        assert_eq!(f, CF | SF | AF | PF);
        // adc 0xff + 0 + 1 = 0 with carry.
        let f = compute_from(op(CcOp::Adc, 1), 0, 0, 0xff);
        assert_eq!(f & (CF | ZF), CF | ZF);
        // sbb 5 - 5 - 1 borrows.
        let f = compute_from(op(CcOp::Sbb, 4), u32::MAX, 5, 5);
        assert_eq!(f & CF, CF);
    }
}
