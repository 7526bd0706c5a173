//! Conditions and control transfer: SETcc, CMOVcc, Jcc (short and near)
//! over all 16 conditions and flag combinations; LOOP/LOOPE/LOOPNE/JECXZ
//! with CX and ECX; CALL/RET/JMP; the traps and faults INT3, INTO, UD2,
//! HLT.

use super::{base, full_reg, mem_operand, push_modrm, rm_operand, set_mem, Rng, STACK_TOP};
use crate::asm::{self, Rm};
use crate::harness::{Case, BASE_EFLAGS, CASE_FLAGS, CODE_ADDR, DATA_ADDR};

/// SETcc r/m8, CMOVcc r, r/m (16/32), Jcc rel8/rel32 with every flag
/// combination drawn at random.
pub fn conditions(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|i| {
            let mut c = base(rng);
            let cc = (i % 16) as u8;
            c.eflags = BASE_EFLAGS | (rng.u32() & CASE_FLAGS);
            match (i / 16) % 4 {
                0 => {
                    let v = rng.value(1);
                    let (rm, _) = rm_operand(rng, &mut c, 1, v, &[]);
                    c.code.extend_from_slice(&[0x0f, 0x90 + cc]);
                    push_modrm(&mut c, 0, &rm);
                }
                1 => {
                    let bytes = rng.pick(&[2, 4]);
                    let r = rng.below(8) as u8;
                    let v = rng.value(bytes);
                    let (rm, _) = rm_operand(rng, &mut c, bytes, v, &[full_reg(r, bytes)]);
                    asm::osize(&mut c.code, bytes);
                    c.code.extend_from_slice(&[0x0f, 0x40 + cc]);
                    push_modrm(&mut c, r, &rm);
                }
                // jcc over an INC EAX
                2 => c.code.extend_from_slice(&[0x70 + cc, 0x01, 0x40]),
                _ => c
                    .code
                    .extend_from_slice(&[0x0f, 0x80 + cc, 0x01, 0, 0, 0, 0x40]),
            }
            c
        })
        .collect()
}

/// LOOP, LOOPE, LOOPNE, JECXZ over an INC EAX; 0x67 selects CX.
pub fn loops(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let mut c = base(rng);
            let cx = rng.pick(&[0u32, 1, 2, 3, 0xffff, 0x1_0000, 0x1_0001, 0xffff_ffff]);
            c.regs[1] = if rng.one_in(4) { rng.u32() } else { cx };
            if rng.one_in(3) {
                c.code.push(0x67);
            }
            c.code
                .extend_from_slice(&[rng.pick(&[0xe0, 0xe1, 0xe2, 0xe3]), 0x01, 0x40]);
            c
        })
        .collect()
}

/// CALL rel/r/m, RET (imm16, 16-bit), JMP rel8/rel32/r/m, all landing at
/// the end of the case (or on a byte of it); INT3, INTO, UD2, HLT, CLI,
/// an undefined opcode and LOCK on an instruction that does not take it.
pub fn transfers(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|i| {
            let mut c = base(rng);
            c.regs[4] = STACK_TOP - 4 * rng.below(8);
            match i % 12 {
                0 => c.code.extend_from_slice(&[0xe8, 0x01, 0, 0, 0, 0x40]),
                1 => {
                    // call r/m32 to the end (after the 2-6 byte instruction)
                    let r = rng.pick(&[0u8, 1, 2, 3, 5, 6, 7]);
                    let rm = if rng.one_in(4) {
                        // ESP-based: the address uses ESP before the push.
                        Rm::Mem {
                            base: Some(4),
                            index: None,
                            disp: 4 * rng.below(4) as i32,
                        }
                    } else if rng.one_in(2) {
                        Rm::Reg(r)
                    } else {
                        let a = DATA_ADDR + 0x200 + 4 * rng.below(0x100);
                        mem_operand(rng, &mut c, a, &[4])
                    };
                    c.code.push(0xff);
                    push_modrm(&mut c, 2, &rm);
                    let end = CODE_ADDR + c.code.len() as u32;
                    match rm {
                        Rm::Reg(r) => c.regs[r as usize] = end,
                        Rm::Mem { .. } => {
                            let a = x86_ea(&c, &rm);
                            set_mem(&mut c, a, 4, end);
                        }
                    }
                }
                2 => {
                    c.code.push(0xc3);
                    let sp = c.regs[4];
                    set_mem(&mut c, sp, 4, CODE_ADDR + 1);
                }
                3 => {
                    let k = rng.pick(&[0u16, 4, 8, 0x100, 0xfffc]);
                    c.code.push(0xc2);
                    c.code.extend_from_slice(&k.to_le_bytes());
                    let sp = c.regs[4];
                    set_mem(&mut c, sp, 4, CODE_ADDR + 3);
                }
                4 => {
                    // 16-bit transfers truncate EIP: they land below 64 KiB,
                    // in the low page (mapped without execute) or unmapped.
                    let k = rng.u32() as u16;
                    let forms: [&[u8]; 6] = [
                        &[0x66, 0xc3],
                        &[0x66, 0xc2, k as u8, (k >> 8) as u8],
                        &[0x66, 0xe8, k as u8, (k >> 8) as u8],
                        &[0x66, 0xe9, k as u8, (k >> 8) as u8],
                        &[0x66, 0xeb, k as u8],
                        &[0x66, 0xff, 0xe0 | rng.below(8) as u8],
                    ];
                    c.code.extend_from_slice(rng.pick(&forms));
                }
                5 => c.code.extend_from_slice(&[0xeb, 0x01, 0x40]),
                6 => c.code.extend_from_slice(&[0xe9, 0x01, 0, 0, 0, 0x40]),
                7 => {
                    let r = rng.pick(&[0u8, 1, 2, 3, 5, 6, 7]);
                    c.code.push(0xff);
                    push_modrm(&mut c, 4, &Rm::Reg(r));
                    c.regs[r as usize] = CODE_ADDR + 2 + rng.below(2) * 0x100;
                }
                8 => {
                    c.code.push(0xce);
                }
                9 => c.code.push(0xcc),
                10 => c.code.extend_from_slice(&[0x0f, 0x0b]),
                _ => {
                    // HLT, CLI, STI (#GP at CPL 3); LOCK NOP, LOCK MOV,
                    // LOCK CMP, LOCK TEST, LOCK BT on memory (#UD).
                    let bad: &[u8] = rng.pick(&[
                        &[0xf4][..],
                        &[0xfa],
                        &[0xfb],
                        &[0xf0, 0x90],
                        &[0xf0, 0x89, 0x03],
                        &[0xf0, 0x39, 0x03],
                        &[0xf0, 0x85, 0x03],
                        &[0xf0, 0x0f, 0xa3, 0x03],
                        &[0xf0, 0x0f, 0xba, 0x23, 0x01],
                        // IN, OUT, INS, OUTS (#GP at IOPL 0)
                        &[0xec],
                        &[0xe6, 0x80],
                        &[0x6c],
                        &[0xf3, 0x6f],
                        // CLTS, LGDT, MOV from CR0, WRMSR, RDMSR, WBINVD,
                        // INVD, LTR, LMSW, INVLPG (#GP at CPL 3)
                        &[0x0f, 0x06],
                        &[0x0f, 0x01, 0x13],
                        &[0x0f, 0x20, 0xc0],
                        &[0x0f, 0x30],
                        &[0x0f, 0x32],
                        &[0x0f, 0x09],
                        &[0x0f, 0x08],
                        &[0x0f, 0x00, 0xd8],
                        &[0x0f, 0x01, 0xf0],
                        &[0x0f, 0x01, 0x3b],
                        // multi-byte NOP, PAUSE, PREFETCH of an unmapped
                        // address (never faults), UD1
                        &[0x0f, 0x1f, 0x44, 0x00, 0x00],
                        &[0xf3, 0x90],
                        &[0x0f, 0x18, 0x0d, 0x00, 0x00, 0x00, 0x30],
                        &[0x0f, 0xb9, 0xc0],
                    ]);
                    c.regs[3] = DATA_ADDR + 0x400;
                    c.code.extend_from_slice(bad);
                }
            }
            c
        })
        .collect()
}

/// The address of a memory operand as `mem_operand` built it.
fn x86_ea(c: &Case, rm: &Rm) -> u32 {
    match *rm {
        Rm::Mem { base, index, disp } => {
            let mut a = disp as u32;
            if let Some(b) = base {
                a = a.wrapping_add(c.regs[b as usize]);
            }
            if let Some((i, s)) = index {
                a = a.wrapping_add(c.regs[i as usize].wrapping_mul(s as u32));
            }
            a
        }
        Rm::Reg(r) => c.regs[r as usize],
    }
}
