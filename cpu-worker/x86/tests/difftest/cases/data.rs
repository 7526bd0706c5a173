//! Data transfer: MOV in its forms and addressing modes (32- and 16-bit),
//! LEA, MOVZX/MOVSX, XCHG/XADD/CMPXCHG/CMPXCHG8B, the stack (PUSH/POP,
//! PUSHA/POPA, PUSHF/POPF, ENTER/LEAVE), LAHF/SAHF, XLAT, SALC, BOUND and
//! the flag-control instructions.

use super::{
    base, full_reg, mem_addr, mem_operand, push_modrm, rm_operand, set_mem, set_mem64, set_reg,
    Rng, STACK_TOP, UNMAPPED,
};
use crate::asm::{self, Rm};
use crate::harness::{Case, DATA_ADDR, DATA_SIZE, LOW_ADDR, SETTABLE_BY_POPF};

/// MOV r/m,r; r,r/m; r/m,imm; r,imm; moffs; and loads through every
/// 16-bit addressing form (0x67) into the low page.
pub fn mov(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let mut c = base(rng);
            let bytes = rng.size();
            let v = rng.value(bytes);
            match rng.below(6) {
                0 | 1 => {
                    let r = rng.below(8) as u8;
                    let (rm, _) = rm_operand(rng, &mut c, bytes, v, &[full_reg(r, bytes)]);
                    asm::osize(&mut c.code, bytes);
                    c.code.push(0x88 + asm::w(bytes) + 2 * rng.below(2) as u8);
                    push_modrm(&mut c, r, &rm);
                }
                2 => {
                    let (rm, _) = rm_operand(rng, &mut c, bytes, v, &[]);
                    asm::osize(&mut c.code, bytes);
                    c.code.push(0xc6 + asm::w(bytes));
                    push_modrm(&mut c, 0, &rm);
                    asm::imm(&mut c.code, rng.value(bytes), bytes);
                }
                3 => {
                    let r = rng.below(8) as u8;
                    asm::osize(&mut c.code, bytes);
                    c.code.push(if bytes == 1 { 0xb0 } else { 0xb8 } + r);
                    asm::imm(&mut c.code, v, bytes);
                }
                4 => {
                    // moffs: 32-bit, or 16-bit with 0x67 (into the low page).
                    let a16 = rng.one_in(3);
                    let a = if a16 {
                        LOW_ADDR + rng.below(0x1000)
                    } else {
                        mem_addr(rng, bytes)
                    };
                    set_mem(&mut c, a, bytes, v);
                    asm::osize(&mut c.code, bytes);
                    if a16 {
                        c.code.push(0x67);
                    }
                    c.code.push(0xa0 + asm::w(bytes) + 2 * rng.below(2) as u8);
                    asm::imm(&mut c.code, a, if a16 { 2 } else { 4 });
                }
                _ => addr16(rng, &mut c, bytes, v),
            }
            c
        })
        .collect()
}

/// A load or store through 16-bit addressing: BX, BP, SI, DI set so the
/// 16-bit sum lands in the low page (or wraps, or misses).
fn addr16(rng: &mut Rng, c: &mut Case, bytes: u32, v: u32) {
    let rm16 = rng.below(8) as u8;
    let md = rng.below(3) as u8;
    let disp = match md {
        1 => rng.u32() as i8 as i16 as u16,
        _ => rng.u32() as u16,
    };
    // The registers each rm16 adds: BX=3, BP=5, SI=6, DI=7.
    let parts: &[usize] = match (rm16, md) {
        (0, _) => &[3, 6],
        (1, _) => &[3, 7],
        (2, _) => &[5, 6],
        (3, _) => &[5, 7],
        (4, _) => &[6],
        (5, _) => &[7],
        (6, 0) => &[],
        (6, _) => &[5],
        _ => &[3],
    };
    let target = if rng.one_in(6) {
        rng.u32() & 0xffff
    } else {
        LOW_ADDR + rng.below(0x1000 - 3)
    };
    let dval = if md == 0 && rm16 != 6 { 0 } else { disp };
    let mut rest = (target as u16).wrapping_sub(dval);
    for (k, &r) in parts.iter().enumerate() {
        let part = if k + 1 == parts.len() {
            rest
        } else {
            rng.u32() as u16
        };
        rest = rest.wrapping_sub(part);
        // The upper halves do not take part in 16-bit addressing.
        c.regs[r] = (rng.u32() & 0xffff_0000) | part as u32;
    }
    let disp = if md == 0 && rm16 == 6 {
        target as u16
    } else {
        disp
    };
    set_mem(c, target, bytes, v);
    let reg = rng.pick(&[0u8, 1, 2]);
    asm::osize(&mut c.code, bytes);
    c.code.push(0x67);
    c.code.push(0x88 + asm::w(bytes) + 2 * rng.below(2) as u8);
    asm::modrm16(&mut c.code, reg, rm16, md, disp);
}

/// LEA with every ModRM/SIB form, 16- and 32-bit destinations, 16-bit
/// addressing (0x67) included.
pub fn lea(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let mut c = base(rng);
            let bytes = rng.pick(&[2, 4]);
            let r = rng.below(8) as u8;
            asm::osize(&mut c.code, bytes);
            if rng.one_in(3) {
                c.code.extend_from_slice(&[0x67, 0x8d]);
                let md = rng.below(3) as u8;
                asm::modrm16(&mut c.code, r, rng.below(8) as u8, md, rng.u32() as u16);
            } else {
                let a = rng.u32();
                let rm = mem_operand(rng, &mut c, a, &[]);
                // Scramble the registers again: LEA reads nothing else.
                if rng.one_in(2) {
                    for x in c.regs.iter_mut() {
                        *x = x.wrapping_add(rng.value(4));
                    }
                }
                c.code.push(0x8d);
                push_modrm(&mut c, r, &rm);
            }
            c
        })
        .collect()
}

/// MOVZX and MOVSX from 8 and 16 bits into 16 and 32 bits.
pub fn movx(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let mut c = base(rng);
            let from = rng.pick(&[1, 2]);
            let to = rng.pick(&[2, 4]);
            let v = rng.value(from);
            let r = rng.below(8) as u8;
            let (rm, _) = rm_operand(rng, &mut c, from, v, &[r]);
            asm::osize(&mut c.code, to);
            let signed = rng.one_in(2);
            let op = match (signed, from) {
                (false, 1) => 0xb6,
                (false, _) => 0xb7,
                (true, 1) => 0xbe,
                (true, _) => 0xbf,
            };
            c.code.extend_from_slice(&[0x0f, op]);
            push_modrm(&mut c, r, &rm);
            c
        })
        .collect()
}

/// XCHG (86/87 and 90+r), XADD, CMPXCHG (equal and unequal), CMPXCHG8B,
/// with and without LOCK.
pub fn exchange(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let mut c = base(rng);
            let bytes = rng.size();
            let kind = rng.below(5);
            if kind == 4 {
                return cmpxchg8b(rng, c);
            }
            if kind == 3 && bytes != 1 {
                asm::osize(&mut c.code, bytes);
                c.code.push(0x90 + rng.below(8) as u8);
                return c;
            }
            let r = rng.below(8) as u8;
            let d = rng.value(bytes);
            set_reg(&mut c, r, bytes, rng.value(bytes));
            let (rm, is_mem) = if rng.one_in(8) {
                (Rm::Reg(r), false)
            } else if rng.one_in(7) {
                // The accumulator as the destination (CMPXCHG AH, CL ...).
                (
                    Rm::Reg(if bytes == 1 { rng.pick(&[0, 4]) } else { 0 }),
                    false,
                )
            } else {
                // CMPXCHG uses the accumulator: keep it out of addressing.
                rm_operand(rng, &mut c, bytes, d, &[full_reg(r, bytes), 0])
            };
            if kind == 2 && rng.one_in(2) {
                // Make the comparison succeed.
                set_reg(&mut c, 0, bytes, d);
                if let Rm::Reg(x) = rm {
                    set_reg(&mut c, x, bytes, d);
                }
            }
            if is_mem && rng.one_in(2) || !is_mem && rng.one_in(30) {
                c.code.push(0xf0);
            }
            asm::osize(&mut c.code, bytes);
            match kind {
                0 | 3 => c.code.push(0x86 + asm::w(bytes)),
                1 => c.code.extend_from_slice(&[0x0f, 0xc0 + asm::w(bytes)]),
                _ => c.code.extend_from_slice(&[0x0f, 0xb0 + asm::w(bytes)]),
            }
            push_modrm(&mut c, r, &rm);
            c
        })
        .collect()
}

fn cmpxchg8b(rng: &mut Rng, mut c: Case) -> Case {
    let a = mem_addr(rng, 8);
    let v = rng.u64();
    set_mem64(&mut c, a, v);
    if rng.one_in(2) {
        c.regs[0] = v as u32;
        c.regs[2] = (v >> 32) as u32;
    } else if rng.one_in(2) {
        c.regs[0] = v as u32;
    }
    if rng.one_in(2) {
        c.code.push(0xf0);
    }
    c.code.extend_from_slice(&[0x0f, 0xc7]);
    if rng.one_in(20) {
        // The register form is #UD.
        c.code.push(0xc8 | rng.below(8) as u8);
    } else {
        let rm = mem_operand(rng, &mut c, a, &[0, 1, 2, 3]);
        push_modrm(&mut c, 1, &rm);
    }
    c
}

/// LAHF, SAHF; CLC, STC, CMC, CLD, STD; SALC.
pub fn flag_ops(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|i| {
            let mut c = base(rng);
            c.code
                .push([0x9f, 0x9e, 0xf8, 0xf9, 0xf5, 0xfc, 0xfd, 0xd6][i % 8]);
            c
        })
        .collect()
}

/// PUSHF/POPF in both sizes; the popped images set ID, AC, NT, DF, the
/// arithmetic flags and try IF and IOPL (ignored at CPL 3). TF stays 0:
/// a single-step trap would fire inside the probe.
pub fn pushf_popf(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let mut c = base(rng);
            let bytes = rng.pick(&[2, 4]);
            let img = (rng.u32() & (SETTABLE_BY_POPF | 0x3200 | 0x3_0000)) | 0x2;
            set_mem(&mut c, STACK_TOP, 4, img);
            asm::osize(&mut c.code, bytes);
            c.code.push(if rng.one_in(2) { 0x9c } else { 0x9d });
            c
        })
        .collect()
}

/// The stack pointer for a stack case: usually in the middle of the data
/// area, sometimes misaligned or at its bottom edge (pushes fault).
fn stack_pointer(rng: &mut Rng) -> u32 {
    match rng.below(12) {
        0 => DATA_ADDR + rng.below(12),
        1 => DATA_ADDR + DATA_SIZE as u32 - rng.below(8),
        2 => STACK_TOP - rng.below(64),
        _ => STACK_TOP - 4 * rng.below(16),
    }
}

/// PUSH/POP of registers (ESP included), immediates and memory (ESP-based
/// addresses included), 16 and 32 bits; PUSHA/POPA.
pub fn push_pop(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let mut c = base(rng);
            let sp = stack_pointer(rng);
            c.regs[4] = sp;
            let bytes = rng.pick(&[2, 4, 4]);
            asm::osize(&mut c.code, bytes);
            match rng.below(8) {
                0 => c.code.push(0x50 + rng.below(8) as u8),
                1 => c.code.push(0x58 + rng.below(8) as u8),
                2 => {
                    c.code.push(0x6a);
                    c.code.push(rng.value(1) as u8);
                }
                3 => {
                    c.code.push(0x68);
                    asm::imm(&mut c.code, rng.value(4), bytes);
                }
                4 | 5 => {
                    // FF /6 push r/m or 8F /0 pop r/m, often ESP-based.
                    let push = rng.one_in(2);
                    let rm = if rng.one_in(2) {
                        let disp = rng.pick(&[0, 2, 4, 8, -4, -2]) + 4 * rng.below(4) as i32;
                        Rm::Mem {
                            base: Some(4),
                            index: None,
                            disp,
                        }
                    } else if rng.one_in(3) {
                        Rm::Reg(rng.below(8) as u8)
                    } else {
                        let a = mem_addr(rng, bytes);
                        mem_operand(rng, &mut c, a, &[4])
                    };
                    c.code.push(if push { 0xff } else { 0x8f });
                    push_modrm(&mut c, if push { 6 } else { 0 }, &rm);
                }
                6 => c.code.push(0x60),
                _ => c.code.push(0x61),
            }
            c
        })
        .collect()
}

/// ENTER with nesting levels 0-31 (and masked 32+), frame sizes, 16- and
/// 32-bit operand size; LEAVE.
pub fn enter_leave(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let mut c = base(rng);
            c.regs[4] = STACK_TOP - 4 * rng.below(16);
            c.regs[5] = if rng.one_in(8) {
                // Never a random u32: it could hit the probe's own stack.
                UNMAPPED.0 + rng.below(UNMAPPED.1 - UNMAPPED.0)
            } else {
                DATA_ADDR + 0x1000 + rng.below(0x400)
            };
            let bytes = rng.pick(&[2, 4, 4]);
            asm::osize(&mut c.code, bytes);
            if rng.one_in(3) {
                c.code.push(0xc9);
            } else {
                c.code.push(0xc8);
                let size = rng.pick(&[0u32, 4, 8, 0x10, 0x100, 0xffff]) + rng.below(3);
                asm::imm(&mut c.code, size, 2);
                let level = rng.pick(&[0u8, 1, 2, 3, 4, 5, 8, 31, 32, 33, 255]);
                c.code.push(level);
                c.max_steps = 16;
            }
            c
        })
        .collect()
}

/// XLAT with 32- and 16-bit addressing and segment overrides.
pub fn xlat(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let mut c = base(rng);
            let a16 = rng.one_in(3);
            let al = rng.value(1);
            c.regs[0] = (c.regs[0] & !0xff) | al;
            let table = if a16 {
                (rng.u32() & 0xffff_0000) | (LOW_ADDR + rng.below(0xf00))
            } else {
                mem_addr(rng, 1).wrapping_sub(al)
            };
            c.regs[3] = table;
            if rng.one_in(3) {
                c.code.push(rng.pick(&[0x26, 0x2e, 0x36, 0x3e]));
            }
            if a16 {
                c.code.push(0x67);
            }
            c.code.push(0xd7);
            c
        })
        .collect()
}

/// BOUND r16/r32 against bounds in memory: inside, at the edges, outside
/// (#BR).
pub fn bound(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let mut c = base(rng);
            let bytes = rng.pick(&[2, 4]);
            let lo = rng.value(bytes);
            let hi = rng.value(bytes);
            let idx = match rng.below(4) {
                0 => lo,
                1 => hi,
                2 => lo.wrapping_add(rng.below(3)).wrapping_sub(1),
                _ => rng.value(bytes),
            };
            let r = rng.below(8) as u8;
            set_reg(&mut c, r, bytes, idx);
            let a = mem_addr(rng, bytes * 2);
            set_mem(&mut c, a, bytes, lo);
            set_mem(&mut c, a.wrapping_add(bytes), bytes, hi);
            let rm = mem_operand(rng, &mut c, a, &[r]);
            asm::osize(&mut c.code, bytes);
            c.code.push(0x62);
            push_modrm(&mut c, r, &rm);
            c
        })
        .collect()
}
