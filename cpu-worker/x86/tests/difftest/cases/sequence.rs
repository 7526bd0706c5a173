//! Short random sequences of register instructions, so that flags set by
//! one instruction are consumed by the next (ADC after ADD, INC keeping CF,
//! SETcc/CMOVcc/LAHF/PUSHF after anything): the lazy flag records of
//! `flags.rs` are exercised across instruction boundaries. Only
//! instructions whose flags are all defined here (or whose undefined flags
//! the interpreter sets as this host does) are used, so nothing undefined
//! flows into a register.

use super::{base, Rng};
use crate::asm::{self, Rm};
use crate::harness::Case;

/// A general register other than ESP for 16/32-bit operands; any byte
/// register for 8-bit ones.
fn reg(rng: &mut Rng, bytes: u32) -> u8 {
    if bytes == 1 {
        rng.below(8) as u8
    } else {
        rng.pick(&[0u8, 1, 2, 3, 5, 6, 7])
    }
}

fn one(rng: &mut Rng, code: &mut Vec<u8>) {
    let bytes = rng.size();
    let r = reg(rng, bytes);
    let r2 = reg(rng, bytes);
    match rng.below(16) {
        0..=3 => {
            // ALU r/m, r (add, or, adc, sbb, and, sub, xor, cmp)
            asm::osize(code, bytes);
            code.push(rng.below(8) as u8 * 8 + asm::w(bytes));
            asm::modrm(code, r, &Rm::Reg(r2));
        }
        4 => {
            asm::osize(code, bytes);
            code.push(0x80 + asm::w(bytes));
            asm::modrm(code, rng.below(8) as u8, &Rm::Reg(r));
            asm::imm(code, rng.value(bytes), bytes);
        }
        5 => {
            // inc/dec/neg/not
            asm::osize(code, bytes);
            let (op, sub) = rng.pick(&[(0xfe, 0), (0xfe, 1), (0xf6, 2), (0xf6, 3)]);
            code.push(op + asm::w(bytes));
            asm::modrm(code, sub, &Rm::Reg(r));
        }
        6 => {
            // shifts and rotates by 1
            asm::osize(code, bytes);
            code.push(0xd0 + asm::w(bytes));
            asm::modrm(code, rng.below(8) as u8, &Rm::Reg(r));
        }
        7 => {
            code.extend_from_slice(&[0x0f, 0x90 + rng.below(16) as u8]);
            asm::modrm(code, 0, &Rm::Reg(rng.below(8) as u8));
        }
        8 => {
            let b = rng.pick(&[2, 4]);
            asm::osize(code, b);
            code.extend_from_slice(&[0x0f, 0x40 + rng.below(16) as u8]);
            let (x, y) = (reg(rng, b), reg(rng, b));
            asm::modrm(code, x, &Rm::Reg(y));
        }
        9 => code.push(rng.pick(&[0x9f, 0x9e, 0xf5, 0xf8, 0xf9, 0xd6])),
        10 => {
            // pushfd; pop r32
            code.push(0x9c);
            code.push(0x58 + reg(rng, 4));
        }
        11 => {
            // bt r, imm8
            let b = rng.pick(&[2, 4]);
            asm::osize(code, b);
            code.extend_from_slice(&[0x0f, 0xba]);
            asm::modrm(code, 4 + rng.below(4) as u8, &Rm::Reg(reg(rng, b)));
            code.push(rng.below(32) as u8);
        }
        12 => {
            // xadd / cmpxchg r, r
            asm::osize(code, bytes);
            let op = if rng.one_in(2) { 0xc0 } else { 0xb0 };
            code.extend_from_slice(&[0x0f, op + asm::w(bytes)]);
            asm::modrm(code, r, &Rm::Reg(r2));
        }
        13 => {
            // jcc over an INC of a register
            code.extend_from_slice(&[0x70 + rng.below(16) as u8, 0x01, 0x40 + reg(rng, 4)]);
        }
        14 => {
            // test r, r
            asm::osize(code, bytes);
            code.push(0x84 + asm::w(bytes));
            asm::modrm(code, r, &Rm::Reg(r2));
        }
        _ => {
            // adc/sbb r, imm8 sign-extended
            let b = rng.pick(&[2, 4]);
            asm::osize(code, b);
            code.push(0x83);
            asm::modrm(code, rng.pick(&[2u8, 3]), &Rm::Reg(reg(rng, b)));
            code.push(rng.value(1) as u8);
        }
    }
}

pub fn sequences(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let mut c = base(rng);
            for r in [0usize, 1, 2, 3, 5, 6, 7] {
                c.regs[r] = rng.value(4) ^ (rng.value(4) << 16);
            }
            let len = 2 + rng.below(4);
            for _ in 0..len {
                one(rng, &mut c.code);
            }
            c.max_steps = 16;
            c
        })
        .collect()
}
