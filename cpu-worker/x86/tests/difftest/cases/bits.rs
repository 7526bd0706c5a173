//! Shifts and rotates, SHLD/SHRD, the bit tests, BSF/BSR and BSWAP.

use super::{base, full_reg, mem_operand, push_modrm, rm_operand, set_mem, set_reg, Rng, UNMAPPED};
use crate::asm::{self, Rm};
use crate::harness::{Case, DATA_ADDR};

const COUNTS: [u32; 16] = [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 63, 255];

fn count(rng: &mut Rng) -> u32 {
    if rng.one_in(5) {
        rng.below(256)
    } else {
        rng.pick(&COUNTS)
    }
}

/// ROL, ROR, RCL, RCR, SHL, SHR, SAL (/6), SAR by 1, by imm8 and by CL.
pub fn shifts(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|i| {
            let mut c = base(rng);
            let bytes = rng.size();
            let sub = (i % 8) as u8;
            let v = rng.value(bytes);
            let cnt = count(rng);
            let form = rng.below(3);
            let avoid: &[u8] = if form == 2 { &[1] } else { &[] };
            let (rm, _) = if form == 2 && rng.one_in(10) {
                // The count register shifted by itself (SHL CL, CL ...).
                (Rm::Reg(1), false)
            } else {
                rm_operand(rng, &mut c, bytes, v, avoid)
            };
            asm::osize(&mut c.code, bytes);
            match form {
                0 => {
                    c.code.push(0xd0 + asm::w(bytes));
                    push_modrm(&mut c, sub, &rm);
                }
                1 => {
                    c.code.push(0xc0 + asm::w(bytes));
                    push_modrm(&mut c, sub, &rm);
                    c.code.push(cnt as u8);
                }
                _ => {
                    set_reg(&mut c, 1, 1, cnt);
                    c.code.push(0xd2 + asm::w(bytes));
                    push_modrm(&mut c, sub, &rm);
                }
            }
            c
        })
        .collect()
}

/// SHLD and SHRD by imm8 and by CL, 16 and 32 bits (16-bit counts above
/// 16 included: see `undefined_flags`).
pub fn double_shifts(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let mut c = base(rng);
            let bytes = rng.pick(&[2, 4]);
            let right = rng.one_in(2);
            let by_cl = rng.one_in(2);
            let cnt = count(rng);
            let r = rng.pick(&[0u8, 2, 3, 5, 6, 7]);
            set_reg(&mut c, r, bytes, rng.value(bytes));
            let v = rng.value(bytes);
            let (rm, _) = if rng.one_in(10) {
                // Source and destination the same register.
                (Rm::Reg(r), false)
            } else {
                rm_operand(rng, &mut c, bytes, v, &[r, 1])
            };
            asm::osize(&mut c.code, bytes);
            let op = if right { 0xac } else { 0xa4 } + by_cl as u8;
            c.code.extend_from_slice(&[0x0f, op]);
            push_modrm(&mut c, r, &rm);
            if by_cl {
                set_reg(&mut c, 1, 1, cnt);
            } else {
                c.code.push(cnt as u8);
            }
            c
        })
        .collect()
}

/// BT, BTS, BTR, BTC with register and imm8 offsets; on memory with
/// register offsets reaching far before and after the operand (also into
/// unmapped pages), LOCKed now and then.
pub fn bit_tests(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let mut c = base(rng);
            let bytes = rng.pick(&[2, 4]);
            let kind = rng.below(4) as u8; // bt, bts, btr, btc
            let imm_form = rng.one_in(3);
            let lockable = kind != 0;
            asm::osize(&mut c.code, bytes);
            if imm_form {
                let v = rng.value(bytes);
                let (rm, is_mem) = rm_operand(rng, &mut c, bytes, v, &[]);
                if is_mem && lockable && rng.one_in(3) {
                    c.code.insert(0, 0xf0);
                }
                c.code.extend_from_slice(&[0x0f, 0xba]);
                push_modrm(&mut c, 4 + kind, &rm);
                let off = if rng.one_in(2) {
                    rng.below(bytes * 8)
                } else {
                    rng.below(256)
                };
                c.code.push(off as u8);
                return c;
            }
            let r = rng.pick(&[0u8, 1, 2, 3, 5, 6, 7]);
            let op = [0xa3u8, 0xab, 0xb3, 0xbb][kind as usize];
            if rng.one_in(3) {
                // Register operand: the offset is taken modulo the size.
                let rr = rng.pick(&[0u8, 1, 2, 3, 5, 6, 7]);
                set_reg(&mut c, rr, bytes, rng.value(bytes));
                set_reg(&mut c, r, bytes, rng.u32());
                c.code.extend_from_slice(&[0x0f, op]);
                push_modrm(&mut c, r, &Rm::Reg(rr));
                return c;
            }
            // Memory with a register offset: pick the bit's address, then
            // the operand address from it.
            let off: i32 = if bytes == 2 {
                rng.u32() as u16 as i16 as i32
            } else {
                match rng.below(4) {
                    0 => rng.u32() as i32,
                    1 => -(rng.below(0x7fff_0000) as i32) - 0x8000,
                    _ => (rng.u32() as i32) >> rng.below(20),
                }
            };
            let target = if rng.one_in(4) {
                UNMAPPED.0 + rng.below(UNMAPPED.1 - UNMAPPED.0)
            } else {
                DATA_ADDR + 0x100 + rng.below(0x1e00)
            };
            let opaddr = target.wrapping_sub((off >> 3) as u32);
            let v = rng.value(bytes);
            set_mem(&mut c, target & !(bytes - 1), bytes, v);
            set_reg(&mut c, r, bytes, off as u32);
            let rm = mem_operand(rng, &mut c, opaddr, &[r]);
            if lockable && rng.one_in(3) {
                c.code.insert(0, 0xf0);
            }
            c.code.extend_from_slice(&[0x0f, op]);
            push_modrm(&mut c, r, &rm);
            c
        })
        .collect()
}

/// BSF and BSR, zero sources included (the destination keeps its value).
pub fn bit_scans(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let mut c = base(rng);
            let bytes = rng.pick(&[2, 4]);
            let v = if rng.one_in(4) { 0 } else { rng.value(bytes) };
            let r = rng.below(8) as u8;
            let (rm, _) = rm_operand(rng, &mut c, bytes, v, &[full_reg(r, bytes)]);
            asm::osize(&mut c.code, bytes);
            c.code
                .extend_from_slice(&[0x0f, if rng.one_in(2) { 0xbc } else { 0xbd }]);
            push_modrm(&mut c, r, &rm);
            c
        })
        .collect()
}

/// BSWAP of each register; with an operand-size prefix now and then.
pub fn bswap(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|i| {
            let mut c = base(rng);
            if rng.one_in(4) {
                c.code.push(0x66);
            }
            c.code.extend_from_slice(&[0x0f, 0xc8 + (i % 8) as u8]);
            c
        })
        .collect()
}
