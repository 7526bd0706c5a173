//! Binary and decimal arithmetic and logic: ADD/ADC/SUB/SBB/CMP/AND/OR/
//! XOR/TEST, INC/DEC/NEG/NOT, MUL/IMUL/DIV/IDIV, the BCD adjustments and
//! the sign extensions of the accumulator.

use super::{base, full_reg, mask, push_modrm, rm_operand, set_reg, Rng};
use crate::asm::{self, Rm};
use crate::harness::Case;

/// ADD, OR, ADC, SBB, AND, SUB, XOR, CMP in every encoding.
pub fn alu(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n).map(|_| alu_one(rng)).collect()
}

fn alu_one(rng: &mut Rng) -> Case {
    let mut c = base(rng);
    let op = rng.below(8) as u8;
    let bytes = rng.size();
    let a = rng.value(bytes);
    let b = rng.value(bytes);
    let form = rng.below(5);
    let mut code = Vec::new();
    match form {
        // r/m, reg and reg, r/m
        0 | 1 => {
            let r = rng.below(8) as u8;
            set_reg(&mut c, r, bytes, if form == 0 { b } else { a });
            let (rm, is_mem) = if rng.one_in(8) {
                // The same register on both sides (XOR EAX, EAX and such).
                (Rm::Reg(r), false)
            } else {
                rm_operand(
                    rng,
                    &mut c,
                    bytes,
                    if form == 0 { a } else { b },
                    &[full_reg(r, bytes)],
                )
            };
            if form == 0 && is_mem && op != 7 && rng.one_in(3) {
                code.push(0xf0);
            }
            asm::osize(&mut code, bytes);
            code.push(op * 8 + if form == 0 { 0 } else { 2 } + asm::w(bytes));
            c.code = code;
            push_modrm(&mut c, r, &rm);
            return c;
        }
        // AL/AX/EAX, imm
        2 => {
            set_reg(&mut c, 0, bytes, a);
            asm::osize(&mut code, bytes);
            code.push(op * 8 + 4 + asm::w(bytes));
            asm::imm(&mut code, b, bytes);
        }
        // 80/81 /op and 83 /op (sign-extended imm8)
        _ => {
            let short = form == 4 && bytes != 1;
            let (rm, is_mem) = rm_operand(rng, &mut c, bytes, a, &[]);
            if is_mem && op != 7 && rng.one_in(3) {
                code.push(0xf0);
            } else if !is_mem && rng.one_in(40) {
                // LOCK on a register destination: #UD.
                code.push(0xf0);
            }
            asm::osize(&mut code, bytes);
            code.push(if short { 0x83 } else { 0x80 + asm::w(bytes) });
            asm::modrm(&mut code, op, &rm);
            let ib = if short { 1 } else { bytes };
            asm::imm(&mut code, b, ib);
        }
    }
    c.code = code;
    c
}

/// TEST r/m, reg; TEST acc, imm; TEST r/m, imm.
pub fn test(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let mut c = base(rng);
            let bytes = rng.size();
            let (a, b) = (rng.value(bytes), rng.value(bytes));
            let mut code = Vec::new();
            asm::osize(&mut code, bytes);
            match rng.below(3) {
                0 => {
                    let r = rng.below(8) as u8;
                    set_reg(&mut c, r, bytes, b);
                    let (rm, _) = rm_operand(rng, &mut c, bytes, a, &[full_reg(r, bytes)]);
                    code.push(0x84 + asm::w(bytes));
                    asm::modrm(&mut code, r, &rm);
                }
                1 => {
                    set_reg(&mut c, 0, bytes, a);
                    code.push(0xa8 + asm::w(bytes));
                    asm::imm(&mut code, b, bytes);
                }
                _ => {
                    let (rm, _) = rm_operand(rng, &mut c, bytes, a, &[]);
                    code.push(0xf6 + asm::w(bytes));
                    asm::modrm(&mut code, 0, &rm);
                    asm::imm(&mut code, b, bytes);
                }
            }
            c.code = code;
            c
        })
        .collect()
}

/// INC/DEC (short forms and FE/FF), NEG/NOT (F6/F7), LOCKed on memory.
pub fn unary(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let mut c = base(rng);
            let bytes = rng.size();
            let a = rng.value(bytes);
            let mut code = Vec::new();
            let kind = rng.below(5);
            if kind == 4 && bytes != 1 {
                let r = rng.below(8) as u8;
                set_reg(&mut c, r, bytes, a);
                asm::osize(&mut code, bytes);
                code.push(rng.pick(&[0x40, 0x48]) + r);
            } else {
                let (rm, is_mem) = rm_operand(rng, &mut c, bytes, a, &[]);
                if is_mem && rng.one_in(3) {
                    code.push(0xf0);
                }
                asm::osize(&mut code, bytes);
                let (opc, sub) = match kind {
                    0 | 4 => (0xfe, 0),
                    1 => (0xfe, 1),
                    2 => (0xf6, 2),
                    _ => (0xf6, 3),
                };
                code.push(opc + asm::w(bytes));
                asm::modrm(&mut code, sub, &rm);
            }
            c.code = code;
            c
        })
        .collect()
}

/// MUL, IMUL, DIV, IDIV with one operand, including #DE (divisor zero,
/// quotient too large) and the most negative dividends.
pub fn muldiv(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let mut c = base(rng);
            let bytes = rng.size();
            let sub = 4 + rng.below(4) as u8;
            let lo = rng.value(bytes);
            let mut hi = rng.value(bytes);
            let mut d = rng.value(bytes);
            if sub >= 6 && !rng.one_in(5) {
                // Mostly divisions that do not overflow.
                if d == 0 {
                    d = 1 + rng.below(mask(bytes));
                }
                if sub == 6 {
                    hi = rng.below(d);
                } else {
                    let neg = lo & (1 << (bytes * 8 - 1)) != 0;
                    hi = if neg { mask(bytes) } else { 0 };
                }
            }
            if bytes == 1 {
                set_reg(&mut c, 0, 2, lo | (hi << 8));
            } else {
                set_reg(&mut c, 0, bytes, lo);
                set_reg(&mut c, 2, bytes, hi);
            }
            // The divisor must not be in the dividend's registers.
            let avoid: &[u8] = if bytes == 1 { &[0] } else { &[0, 2] };
            let (rm, _) = if rng.one_in(10) {
                // A divisor or factor that is part of the dividend (DIV AH,
                // MUL EDX, IDIV EAX...).
                let r = if bytes == 1 {
                    rng.pick(&[0, 4])
                } else {
                    rng.pick(&[0, 2])
                };
                (Rm::Reg(r), false)
            } else {
                rm_operand(rng, &mut c, bytes, d, avoid)
            };
            asm::osize(&mut c.code, bytes);
            c.code.push(0xf6 + asm::w(bytes));
            push_modrm(&mut c, sub, &rm);
            c
        })
        .collect()
}

/// IMUL r, r/m (0F AF); IMUL r, r/m, imm (69, 6B).
pub fn imul(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let mut c = base(rng);
            let bytes = rng.pick(&[2, 4]);
            let (a, b) = (rng.value(bytes), rng.value(bytes));
            let r = rng.below(8) as u8;
            set_reg(&mut c, r, bytes, a);
            let (rm, _) = rm_operand(rng, &mut c, bytes, b, &[r]);
            let mut code = Vec::new();
            asm::osize(&mut code, bytes);
            match rng.below(3) {
                0 => {
                    code.extend_from_slice(&[0x0f, 0xaf]);
                    asm::modrm(&mut code, r, &rm);
                }
                1 => {
                    code.push(0x69);
                    asm::modrm(&mut code, r, &rm);
                    asm::imm(&mut code, rng.value(bytes), bytes);
                }
                _ => {
                    code.push(0x6b);
                    asm::modrm(&mut code, r, &rm);
                    asm::imm(&mut code, rng.value(1), 1);
                }
            }
            c.code = code;
            c
        })
        .collect()
}

/// DAA, DAS, AAA, AAS over random AL/AH with CF and AF in both states;
/// AAM and AAD with base 10, other bases and 0 (#DE for AAM).
pub fn bcd(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|i| {
            let mut c = base(rng);
            let op = [0x27u8, 0x2f, 0x37, 0x3f, 0xd4, 0xd5][i % 6];
            c.code.push(op);
            if op >= 0xd4 {
                let b = match rng.below(4) {
                    0 | 1 => 10,
                    2 => rng.pick(&[0, 1, 2, 16, 255]),
                    _ => rng.below(256),
                };
                c.code.push(b as u8);
            }
            c
        })
        .collect()
}

/// CBW, CWDE, CWD, CDQ; the accumulator's sign bits at the edges.
pub fn sign_extend(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|i| {
            let mut c = base(rng);
            let v = rng.value(4);
            c.regs[0] = v;
            if i % 2 == 0 {
                c.code.push(0x66);
            }
            c.code.push(if (i / 2) % 2 == 0 { 0x98 } else { 0x99 });
            c
        })
        .collect()
}
