//! x87 FPU cases (SDM vol. 1 ch. 8): every instruction form from a random
//! initial x87 state (loaded with FRSTOR: random control word with all
//! rounding and precision modes, stack depths from empty to full, sticky
//! and pending exceptions, random pointers) and operands biased toward the
//! encodings that matter: signed zeros, denormals and pseudo-denormals,
//! unnormals, infinities, QNaN/SNaN, pseudo-NaNs, the limits of the
//! integer, BCD, single and double formats, halfway cases. Memory operands
//! come in every addressing form and now and then fault.

use ::x87::F80;

use super::{base, mem_addr, mem_operand, push_modrm, set_mem, Rng, OPERANDS};
use crate::asm::{self, Rm};
use crate::harness::{Case, FpuLoose, DATA_ADDR, FPU_IMAGE, LOW_ADDR, LOW_SIZE};

/// A significand biased toward rounding boundaries.
fn signif(rng: &mut Rng) -> u64 {
    let r = rng.u64();
    match rng.below(8) {
        0 => (1 << 63) | (r >> 40 << 40) | (1 << rng.below(40)),
        1 => (1 << 63) | (r >> 11 << 11) | 0x400,
        2 => (1 << 63) | (r >> 40 << 40),
        3 => u64::MAX << rng.below(64),
        4 => (1 << 63) | (u64::MAX >> (1 + rng.below(63))),
        5 => (1 << 63) | (r >> 11 << 11) | rng.below(4) as u64,
        _ => (1 << 63) | r,
    }
}

/// The value `mag / 2^frac_bits` (truncated to 64 significant bits).
fn fixed(neg: bool, mag: u128, frac_bits: u32) -> F80 {
    if mag == 0 {
        return F80::new(neg, 0, 0);
    }
    let p = 127 - mag.leading_zeros();
    let m = if p >= 63 {
        (mag >> (p - 63)) as u64
    } else {
        (mag << (63 - p)) as u64
    };
    F80::new(neg, (0x3fff + p as i32 - frac_bits as i32) as u16, m)
}

/// An integer-valued or nearly integer-valued number around the limits of
/// FIST/FISTTP (2^15, 2^31, 2^63), FBSTP (10^18) and rounding ties.
fn near_integer(rng: &mut Rng) -> F80 {
    let centre: u128 = match rng.below(6) {
        0 => rng.below(20) as u128,
        1 => 1 << 15,
        2 => 1 << 31,
        3 => 1 << 63,
        4 => 1_000_000_000_000_000_000,
        _ => rng.u64() as u128 >> rng.below(64),
    };
    let delta = rng.below(5) as u128;
    let int = if rng.one_in(2) {
        centre + delta
    } else {
        centre.saturating_sub(delta)
    };
    // Exact, a half, or a small fraction either side.
    let frac: u128 = rng.pick(&[0, 0, 2, 1, 3]);
    fixed(rng.one_in(2), (int << 2) | frac, 2)
}

/// Any 80-bit encoding, biased toward the interesting ones.
pub fn f80(rng: &mut Rng) -> F80 {
    let sign = rng.one_in(2);
    let s = signif(rng);
    match rng.below(48) {
        0 | 1 => F80::new(sign, 0, 0),
        2 => F80::new(sign, 0, s >> (1 + rng.below(63))),
        3 => F80::new(sign, 0, s | (1 << 63)),
        4 | 5 => F80::new(sign, 0x7fff, 1 << 63),
        6 => F80::new(sign, 0x7fff, s | (3 << 62)),
        7 => F80::new(sign, 0x7fff, ((s & !(1 << 62)) | 1) | (1 << 63)),
        8 => F80::new(sign, (1 + rng.below(0x7ffe)) as u16, s >> 1),
        9 => F80::new(sign, 0x7fff, s >> 1),
        10 => F80::new(sign, 1 + rng.below(80) as u16, s),
        11 => F80::new(sign, 0x7ffe - rng.below(80) as u16, s),
        12 => F80::new(sign, 1, 1 << 63),
        13 => F80::new(sign, 0x7ffe, u64::MAX),
        14 => F80::INDEFINITE,
        15 => F80::new(sign, 0x3fff, 1 << 63),
        16..=20 => near_integer(rng),
        // Around the single and double ranges (overflow, denormal results).
        21..=23 => {
            let e = rng.pick(&[126u32, 127, 128, 149, 150, 151]) as i32;
            let e = if rng.one_in(2) { e } else { -e };
            F80::new(sign, (0x3fff + e + rng.below(3) as i32 - 1) as u16, s)
        }
        24..=26 => {
            let e = rng.pick(&[1022u32, 1023, 1024, 1074, 1075, 1076]) as i32;
            let e = if rng.one_in(2) { e } else { -e };
            F80::new(sign, (0x3fff + e + rng.below(3) as i32 - 1) as u16, s)
        }
        27..=30 => F80::new(sign, (1 + rng.below(0x7ffe)) as u16, s),
        _ => F80::new(sign, (0x3fff - 70 + rng.below(140)) as u16, s),
    }
}

fn f32_bits(rng: &mut Rng) -> u32 {
    let sign = (rng.below(2)) << 31;
    let r = rng.u32();
    sign | match rng.below(20) {
        0 => 0,
        1 => r & 0x007f_ffff,
        2 => 1,
        3 => 0x0080_0000,
        4 => 0x7f7f_ffff,
        5 => 0x7f80_0000,
        6 => 0x7fc0_0000 | (r & 0x003f_ffff),
        7 => 0x7f80_0000 | (r & 0x003f_ffff) | 1,
        8 => 0x3f80_0000,
        9..=13 => ((127 - 20 + rng.below(40)) << 23) | (r & 0x007f_ffff),
        _ => r & 0x7fff_ffff,
    }
}

fn f64_bits(rng: &mut Rng) -> u64 {
    let sign = (rng.below(2) as u64) << 63;
    let r = rng.u64() & 0x000f_ffff_ffff_ffff;
    sign | match rng.below(20) {
        0 => 0,
        1 => r,
        2 => 1,
        3 => 0x0010_0000_0000_0000,
        4 => 0x7fef_ffff_ffff_ffff,
        5 => 0x7ff0_0000_0000_0000,
        6 => 0x7ff8_0000_0000_0000 | r,
        7 => 0x7ff0_0000_0000_0000 | (r & !(1 << 51)) | 1,
        8 => 0x3ff0_0000_0000_0000,
        9..=13 => ((1023 - 40 + rng.below(80) as u64) << 52) | r,
        14 => r >> rng.below(52) << rng.below(12),
        _ => rng.u64() & 0x7fff_ffff_ffff_ffff,
    }
}

/// A signed integer of `bits` bits, edge values likely.
fn int_value(rng: &mut Rng, bits: u32) -> i64 {
    let min = i64::MIN >> (64 - bits);
    let max = i64::MAX >> (64 - bits);
    match rng.below(8) {
        0 => rng.pick(&[0, 1, -1, min, max, min + 1, max - 1]),
        1 => rng.below(200) as i64 - 100,
        _ => (rng.u64() as i64) >> (64 - bits) >> rng.below(bits),
    }
}

/// A packed BCD operand: 18 valid digits mostly, now and then an invalid
/// digit or a sign byte with more than the sign bit.
fn bcd(rng: &mut Rng) -> [u8; 10] {
    let mut b = [0u8; 10];
    let digits = rng.below(19);
    for (i, byte) in b.iter_mut().take(9).enumerate() {
        if (2 * i as u32) < digits {
            *byte = (rng.below(10) | (rng.below(10) << 4)) as u8;
        }
    }
    if rng.one_in(8) {
        let i = rng.below(9) as usize;
        b[i] |= 0xa0;
    }
    b[9] = match rng.below(8) {
        0 => rng.u32() as u8,
        1..=3 => 0x80,
        _ => 0,
    };
    b
}

/// The x87 state a case starts with.
#[derive(Clone, Debug)]
pub struct Fpu {
    pub cw: u16,
    /// Status word without TOP.
    pub sw: u16,
    pub top: u8,
    /// Bit i: ST(i) is empty.
    pub empty: u8,
    /// The tags written for the non-empty registers (FRSTOR recomputes
    /// them from the contents).
    pub tags: u16,
    pub st: [F80; 8],
    pub fip: u32,
    pub fop: u16,
    pub fdp: u32,
}

/// How exceptions are set up.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Masks {
    /// All masked, sticky flags now and then.
    Masked,
    /// Random masks; sticky flags only where masked (nothing pending).
    Unmasked,
    /// Random masks and flags: an exception may be pending.
    Pending,
}

impl Fpu {
    pub fn random(rng: &mut Rng, masks: Masks, min_depth: u32) -> Fpu {
        let rc = rng.below(4) as u16;
        let pc = rng.pick(&[0u16, 2, 3, 3, 3, 1]);
        let m = match masks {
            Masks::Masked => 0x3f,
            _ if rng.one_in(4) => 0x3f,
            _ => rng.u32() as u16 & 0x3f,
        };
        let mut cw = 0x0040 | m | (pc << 8) | (rc << 10);
        if rng.one_in(16) {
            // Reserved bits and the 287's infinity control.
            cw |= rng.u32() as u16 & 0xf080;
        }
        let mut flags = if rng.one_in(4) {
            rng.u32() as u16 & 0x3f
        } else {
            0
        };
        if masks != Masks::Pending {
            flags &= m;
        }
        let sf = if rng.one_in(8) { 0x40 } else { 0 };
        let cc = rng.u32() as u16 & 0x4700;
        let mut es = if flags & !m & 0x3f != 0 { 0x8080 } else { 0 };
        if masks == Masks::Pending && rng.one_in(32) {
            // An image whose ES and B disagree with the flags.
            es ^= rng.pick(&[0x8080u16, 0x0080, 0x8000]);
        }
        let top = rng.below(8) as u8;
        let depth = (min_depth + rng.below(9 - min_depth.min(8))).min(8);
        let mut empty = (0xffu16 << depth) as u8;
        if rng.one_in(8) {
            empty = rng.u32() as u8;
        }
        let mut st = [F80::ZERO; 8];
        for v in st.iter_mut() {
            *v = f80(rng);
        }
        Fpu {
            cw,
            sw: flags | sf | cc | es,
            top,
            empty,
            tags: rng.u32() as u16,
            st,
            fip: rng.u32(),
            fop: 1 + rng.below(0x7ff) as u16,
            fdp: rng.u32(),
        }
    }

    /// The 32-bit protected-mode FNSAVE image.
    pub fn image(&self) -> [u8; FPU_IMAGE] {
        let mut img = [0u8; FPU_IMAGE];
        let mut tw = 0u16;
        for i in 0..8u8 {
            let p = (self.top + i) & 7;
            let tag = if self.empty & (1 << i) != 0 {
                3
            } else {
                // 0-2; FRSTOR only looks at empty / not empty.
                ((self.tags >> (2 * i)) & 3) % 3
            };
            tw |= tag << (2 * p);
        }
        let sw = (self.sw & !0x3800) | ((self.top as u16) << 11);
        let dwords = [
            0xffff_0000 | self.cw as u32,
            0xffff_0000 | sw as u32,
            0xffff_0000 | tw as u32,
            self.fip,
            (self.fop as u32) << 16,
            self.fdp,
            0xffff_0000,
        ];
        for (i, d) in dwords.iter().enumerate() {
            img[4 * i..4 * i + 4].copy_from_slice(&d.to_le_bytes());
        }
        for (i, v) in self.st.iter().enumerate() {
            img[28 + 10 * i..38 + 10 * i].copy_from_slice(&v.to_bytes());
        }
        img
    }

    /// The 16-bit protected-mode image (14-byte environment).
    pub fn image16(&self) -> Vec<u8> {
        let img = self.image();
        let w = |o: usize| [img[o], img[o + 1]];
        let mut v = Vec::with_capacity(94);
        for o in [0, 4, 8, 12, 16, 20, 24] {
            v.extend_from_slice(&w(o));
        }
        v.extend_from_slice(&img[28..]);
        v
    }
}

/// Stores `bytes` at `a` where it is case memory.
fn set_bytes(c: &mut Case, a: u32, bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        set_mem(c, a.wrapping_add(i as u32), 1, *b as u32);
    }
}

/// How the memory operands of a case are addressed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Addr {
    /// Any addressing form and address, faults now and then.
    Any,
    /// Absolute addresses in the data area (sequences: later instructions
    /// must not disturb the registers of earlier ones).
    Fixed,
}

/// Emits `opcode` with a memory operand (ModR/M reg field `reg`) of `size`
/// bytes holding `bytes` (when given); returns the address. Now and then
/// (`Addr::Any`) the operand is addressed with 16-bit addressing (0x67)
/// in the low page, whose offset is FDP.
fn mem_form(
    rng: &mut Rng,
    c: &mut Case,
    addr: Addr,
    opcode: &[u8],
    reg: u8,
    size: u32,
    bytes: Option<&[u8]>,
) -> u32 {
    if addr == Addr::Any && rng.one_in(12) {
        return mem_form16(rng, c, opcode, reg, size, bytes);
    }
    let align = size.next_power_of_two().min(16);
    let a = match addr {
        Addr::Any => mem_addr(rng, align),
        Addr::Fixed => (OPERANDS.0 + rng.below(OPERANDS.1 - OPERANDS.0 - 128)) & !(align - 1),
    };
    if let Some(b) = bytes {
        set_bytes(c, a, b);
    }
    let rm = match addr {
        Addr::Any => mem_operand(rng, c, a, &[4]),
        Addr::Fixed => Rm::Mem {
            base: None,
            index: None,
            disp: a as i32,
        },
    };
    x87_prefix(rng, c, addr, opcode);
    c.code.extend_from_slice(opcode);
    push_modrm(c, reg, &rm);
    a
}

/// Now and then a prefix that does not change an x87 memory operand (a
/// segment override with base 0), or in single-instruction cases LOCK,
/// which makes it #UD.
fn x87_prefix(rng: &mut Rng, c: &mut Case, addr: Addr, opcode: &[u8]) {
    if (0xd8..=0xdf).contains(&opcode[0]) && rng.one_in(16) {
        let n = if addr == Addr::Any { 7 } else { 6 };
        c.code
            .push([0x3e, 0x36, 0x26, 0x3e, 0x36, 0x26, 0xf0][rng.below(n) as usize]);
    }
}

/// `mem_form` with 16-bit addressing: [SI], [DI] or [BX] plus a 16-bit
/// displacement (the register's upper half is garbage the address
/// ignores) or a bare disp16, into the low page (near its end sometimes,
/// to fault across it).
fn mem_form16(
    rng: &mut Rng,
    c: &mut Case,
    opcode: &[u8],
    reg: u8,
    size: u32,
    bytes: Option<&[u8]>,
) -> u32 {
    let a = if rng.one_in(8) {
        LOW_ADDR + LOW_SIZE as u32 - 1 - rng.below(size.max(2) - 1)
    } else {
        LOW_ADDR + rng.below(LOW_SIZE as u32 - 128)
    };
    if let Some(b) = bytes {
        set_bytes(c, a, b);
    }
    x87_prefix(rng, c, Addr::Any, opcode);
    c.code.push(0x67);
    c.code.extend_from_slice(opcode);
    let (rm16, base) = rng.pick(&[(4u8, Some(6usize)), (5, Some(7)), (7, Some(3)), (6, None)]);
    match base {
        Some(r) => {
            let v = rng.u32();
            c.regs[r] = v;
            let disp = (a as u16).wrapping_sub(v as u16);
            asm::modrm16(&mut c.code, reg, rm16, 2, disp);
        }
        None => asm::modrm16(&mut c.code, reg, 6, 0, a as u16),
    }
    a
}

fn reg_form(c: &mut Case, b0: u8, b1: u8) {
    c.code.push(b0);
    c.code.push(b1);
}

/// A case with a random x87 state.
fn x87_case(rng: &mut Rng, masks: Masks, min_depth: u32) -> (Case, Fpu) {
    let c = base(rng);
    let f = Fpu::random(rng, masks, min_depth);
    (c, f)
}

fn finish(mut c: Case, f: &Fpu) -> Case {
    c.fpu = f.image();
    c
}

/// Masks for the single-instruction groups: mostly all masked, a quarter
/// with exceptions unmasked, some with one already pending.
fn masks(rng: &mut Rng) -> Masks {
    match rng.below(8) {
        0 | 1 => Masks::Unmasked,
        2 => Masks::Pending,
        _ => Masks::Masked,
    }
}

// ----- single-instruction families -----

/// FLD/FILD/FBLD from memory, FLD ST(i), the constants.
fn emit_load(rng: &mut Rng, c: &mut Case, addr: Addr) {
    match rng.below(10) {
        0 => {
            let v = f32_bits(rng).to_le_bytes();
            mem_form(rng, c, addr, &[0xd9], 0, 4, Some(&v));
        }
        1 => {
            let v = f64_bits(rng).to_le_bytes();
            mem_form(rng, c, addr, &[0xdd], 0, 8, Some(&v));
        }
        2 => {
            let v = f80(rng).to_bytes();
            mem_form(rng, c, addr, &[0xdb], 5, 10, Some(&v));
        }
        3 => {
            let (b0, reg, bits) = rng.pick(&[(0xdfu8, 0u8, 16u32), (0xdb, 0, 32), (0xdf, 5, 64)]);
            let v = int_value(rng, bits).to_le_bytes();
            mem_form(
                rng,
                c,
                addr,
                &[b0],
                reg,
                bits / 8,
                Some(&v[..bits as usize / 8]),
            );
        }
        4 => {
            let v = bcd(rng);
            mem_form(rng, c, addr, &[0xdf], 4, 10, Some(&v));
        }
        5 | 6 => reg_form(c, 0xd9, 0xc0 | rng.below(8) as u8),
        _ => reg_form(c, 0xd9, 0xe8 + rng.below(7) as u8),
    }
}

/// FST/FSTP (m32, m64, m80, ST(i) and the aliases), FIST/FISTP, FISTTP,
/// FBSTP.
fn emit_store(rng: &mut Rng, c: &mut Case, addr: Addr) {
    let mem: [(u8, u8, u32); 15] = [
        (0xd9, 2, 4),
        (0xd9, 3, 4),
        (0xdd, 2, 8),
        (0xdd, 3, 8),
        (0xdb, 7, 10),
        (0xdf, 2, 2),
        (0xdf, 3, 2),
        (0xdb, 2, 4),
        (0xdb, 3, 4),
        (0xdf, 7, 8),
        (0xdf, 1, 2),
        (0xdb, 1, 4),
        (0xdd, 1, 8),
        (0xdf, 6, 10),
        (0xdf, 6, 10),
    ];
    if rng.one_in(5) {
        let i = rng.below(8) as u8;
        let (b0, b1) = rng.pick(&[
            (0xddu8, 0xd0u8),
            (0xdd, 0xd8),
            (0xdd, 0xd8),
            (0xd9, 0xd8),
            (0xdf, 0xd0),
            (0xdf, 0xd8),
        ]);
        reg_form(c, b0, b1 | i);
    } else {
        let (b0, reg, size) = rng.pick(&mem);
        mem_form(rng, c, addr, &[b0], reg, size, None);
    }
}

/// FADD/FMUL/FSUB/FSUBR/FDIV/FDIVR in all forms.
fn emit_arith(rng: &mut Rng, c: &mut Case, addr: Addr) {
    let reg = rng.pick(&[0u8, 1, 4, 5, 6, 7]);
    match rng.below(7) {
        0 => {
            let v = f32_bits(rng).to_le_bytes();
            mem_form(rng, c, addr, &[0xd8], reg, 4, Some(&v));
        }
        1 => {
            let v = f64_bits(rng).to_le_bytes();
            mem_form(rng, c, addr, &[0xdc], reg, 8, Some(&v));
        }
        2 => {
            let v = (int_value(rng, 32) as i32).to_le_bytes();
            mem_form(rng, c, addr, &[0xda], reg, 4, Some(&v));
        }
        3 => {
            let v = (int_value(rng, 16) as i16).to_le_bytes();
            mem_form(rng, c, addr, &[0xde], reg, 2, Some(&v));
        }
        4 => reg_form(c, 0xd8, 0xc0 | (reg << 3) | rng.below(8) as u8),
        5 => reg_form(c, 0xdc, 0xc0 | (reg << 3) | rng.below(8) as u8),
        _ => reg_form(c, 0xde, 0xc0 | (reg << 3) | rng.below(8) as u8),
    }
}

/// FCOM/FCOMP/FCOMPP, FUCOM*, FICOM*, FTST, FXAM, FCOMI*, FUCOMI*,
/// FCMOVcc.
fn emit_compare(rng: &mut Rng, c: &mut Case, addr: Addr) {
    let i = rng.below(8) as u8;
    match rng.below(14) {
        0 => {
            let v = f32_bits(rng).to_le_bytes();
            let reg = 2 + rng.below(2) as u8;
            mem_form(rng, c, addr, &[0xd8], reg, 4, Some(&v));
        }
        1 => {
            let v = f64_bits(rng).to_le_bytes();
            let reg = 2 + rng.below(2) as u8;
            mem_form(rng, c, addr, &[0xdc], reg, 8, Some(&v));
        }
        2 => {
            let v = (int_value(rng, 32) as i32).to_le_bytes();
            let reg = 2 + rng.below(2) as u8;
            mem_form(rng, c, addr, &[0xda], reg, 4, Some(&v));
        }
        3 => {
            let v = (int_value(rng, 16) as i16).to_le_bytes();
            let reg = 2 + rng.below(2) as u8;
            mem_form(rng, c, addr, &[0xde], reg, 2, Some(&v));
        }
        4 => {
            let (b0, b1) = rng.pick(&[
                (0xd8u8, 0xd0u8),
                (0xd8, 0xd8),
                (0xdc, 0xd0),
                (0xdc, 0xd8),
                (0xde, 0xd0),
                (0xdd, 0xe0),
                (0xdd, 0xe8),
            ]);
            reg_form(c, b0, b1 | i);
        }
        5 => reg_form(c, 0xde, 0xd9),
        6 => reg_form(c, 0xda, 0xe9),
        7 => reg_form(c, 0xd9, 0xe4),
        8 => reg_form(c, 0xd9, 0xe5),
        9 | 10 => {
            let (b0, b1) = rng.pick(&[(0xdbu8, 0xf0u8), (0xdb, 0xe8), (0xdf, 0xf0), (0xdf, 0xe8)]);
            reg_form(c, b0, b1 | i);
        }
        _ => {
            let b0 = rng.pick(&[0xdau8, 0xdb]);
            reg_form(c, b0, 0xc0 | (rng.below(4) as u8) << 3 | i);
        }
    }
}

/// FCHS, FABS, FSQRT, FRNDINT, FSCALE, FPREM, FPREM1, FXTRACT.
fn emit_unary(rng: &mut Rng, c: &mut Case) {
    let b1 = rng.pick(&[0xe0u8, 0xe1, 0xfa, 0xfa, 0xfc, 0xfc, 0xfd, 0xf8, 0xf5, 0xf4]);
    reg_form(c, 0xd9, b1);
}

/// FXCH (and aliases), FFREE, FFREEP, FINCSTP, FDECSTP, FNOP.
fn emit_stack(rng: &mut Rng, c: &mut Case) {
    let i = rng.below(8) as u8;
    match rng.below(9) {
        0..=2 => {
            let b0 = rng.pick(&[0xd9u8, 0xd9, 0xdd, 0xdf]);
            reg_form(c, b0, 0xc8 | i);
        }
        3 => reg_form(c, 0xdd, 0xc0 | i),
        4 => reg_form(c, 0xdf, 0xc0 | i),
        5 => reg_form(c, 0xd9, 0xf7),
        6 => reg_form(c, 0xd9, 0xf6),
        _ => reg_form(c, 0xd9, 0xd0),
    }
}

/// A control word for FLDCW: random masks, modes and reserved bits.
fn control_word(rng: &mut Rng) -> u16 {
    let mut cw = 0x0040
        | (rng.u32() as u16 & 0x3f)
        | (rng.pick(&[0u16, 1, 2, 3]) << 8)
        | ((rng.below(4) as u16) << 10);
    if rng.one_in(4) {
        cw |= 0x3f;
    }
    if rng.one_in(8) {
        cw = rng.u32() as u16;
    }
    cw
}

/// An environment or save image for FLDENV/FRSTOR: a random state, now
/// and then with garbage in the reserved halves.
fn env_image(rng: &mut Rng, sixteen: bool) -> Vec<u8> {
    let f = Fpu::random(rng, Masks::Pending, 0);
    if sixteen {
        return f.image16();
    }
    let mut img = f.image().to_vec();
    if rng.one_in(4) {
        for o in [2usize, 6, 10, 26] {
            img[o] = rng.u32() as u8;
            img[o + 1] = rng.u32() as u8;
        }
    }
    img
}

/// FLDCW, FNSTCW/FSTCW, FNSTSW/FSTSW (m16 and AX), FNCLEX/FCLEX,
/// FNINIT/FINIT, FNSTENV/FSTENV/FLDENV and FNSAVE/FSAVE/FRSTOR (32- and
/// 16-bit), FWAIT, FNENI/FNDISI/FNSETPM with and without WAIT.
fn emit_control(rng: &mut Rng, c: &mut Case, addr: Addr) {
    let wait = rng.one_in(3);
    let sixteen = rng.one_in(4);
    let prefix = |c: &mut Case, osize: bool| {
        if wait {
            c.code.push(0x9b);
        }
        if osize && sixteen {
            c.code.push(0x66);
        }
    };
    match rng.below(13) {
        0 | 1 => {
            let v = control_word(rng).to_le_bytes();
            mem_form(rng, c, addr, &[0xd9], 5, 2, Some(&v));
        }
        2 => {
            prefix(c, false);
            mem_form(rng, c, addr, &[0xd9], 7, 2, None);
        }
        3 => {
            prefix(c, false);
            mem_form(rng, c, addr, &[0xdd], 7, 2, None);
        }
        4 => {
            prefix(c, false);
            reg_form(c, 0xdf, 0xe0);
        }
        5 => {
            prefix(c, false);
            reg_form(c, 0xdb, 0xe2);
        }
        6 => {
            prefix(c, false);
            reg_form(c, 0xdb, 0xe3);
        }
        7 => {
            prefix(c, true);
            mem_form(
                rng,
                c,
                addr,
                &[0xd9],
                6,
                if sixteen { 14 } else { 28 },
                None,
            );
        }
        8 => {
            prefix(c, true);
            mem_form(
                rng,
                c,
                addr,
                &[0xdd],
                6,
                if sixteen { 94 } else { 108 },
                None,
            );
        }
        9 => {
            let img = env_image(rng, sixteen);
            let n = if sixteen { 14 } else { 28 };
            if sixteen {
                c.code.push(0x66);
            }
            mem_form(rng, c, addr, &[0xd9], 4, n, Some(&img[..n as usize]));
        }
        10 => {
            let img = env_image(rng, sixteen);
            if sixteen {
                c.code.push(0x66);
            }
            mem_form(rng, c, addr, &[0xdd], 4, img.len() as u32, Some(&img));
        }
        11 => c.code.push(0x9b),
        _ => {
            prefix(c, false);
            reg_form(c, 0xdb, rng.pick(&[0xe0u8, 0xe1, 0xe4]));
        }
    }
}

/// A 16-byte aligned FXSAVE area: one of five disjoint slots above the
/// other operands, so that no other store lands in the middle of an image
/// FXRSTOR loads.
fn fxsave_slot(rng: &mut Rng) -> u32 {
    DATA_ADDR + 0x1000 + 0x130 * rng.below(5)
}

/// MMX instructions that meet the x87 state: moves in and out of MMX
/// registers, arithmetic, EMMS, CVTPI2PS (which makes the transition only
/// with a register source), FXSAVE/FXRSTOR.
fn emit_mmx(rng: &mut Rng, c: &mut Case, addr: Addr) {
    let r = rng.below(8) as u8;
    let r2 = rng.below(8) as u8;
    let gpr = rng.pick(&[0u8, 1, 2, 3, 5, 6, 7]);
    match rng.below(11) {
        0 | 1 => {
            let v = rng.u64().to_le_bytes();
            mem_form(rng, c, addr, &[0x0f, 0x6f], r, 8, Some(&v));
        }
        2 => {
            mem_form(rng, c, addr, &[0x0f, 0x7f], r, 8, None);
        }
        3 => c
            .code
            .extend_from_slice(&[0x0f, 0x6e, 0xc0 | (r << 3) | gpr]),
        4 => c
            .code
            .extend_from_slice(&[0x0f, 0x7e, 0xc0 | (r << 3) | gpr]),
        5 => {
            let op = rng.pick(&[0xfcu8, 0xef, 0xd4, 0xf5]);
            c.code.extend_from_slice(&[0x0f, op, 0xc0 | (r << 3) | r2]);
        }
        6 | 7 => c.code.extend_from_slice(&[0x0f, 0x77]),
        8 => {
            if rng.one_in(2) {
                c.code
                    .extend_from_slice(&[0x0f, 0x2a, 0xc0 | (r << 3) | r2]);
            } else {
                let v = rng.u64().to_le_bytes();
                mem_form(rng, c, addr, &[0x0f, 0x2a], r, 8, Some(&v));
            }
        }
        9 => {
            // FXSAVE to a 16-byte aligned area.
            let a = fxsave_slot(rng);
            c.code.extend_from_slice(&[0x0f, 0xae, 0x05]);
            c.code.extend_from_slice(&a.to_le_bytes());
        }
        _ => {
            // FXRSTOR of a random x87 state with a valid MXCSR.
            let a = fxsave_slot(rng);
            let f = Fpu::random(rng, Masks::Pending, 0);
            let img = f.image();
            let mut fx = [0u8; 288];
            fx[0..2].copy_from_slice(&img[0..2]);
            fx[2..4].copy_from_slice(&img[4..6]);
            fx[4] = !f.empty.rotate_left(f.top as u32);
            fx[6..8].copy_from_slice(&(f.fop & 0x7ff).to_le_bytes());
            fx[8..12].copy_from_slice(&f.fip.to_le_bytes());
            fx[16..20].copy_from_slice(&f.fdp.to_le_bytes());
            fx[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
            fx[28..32].copy_from_slice(&0xffffu32.to_le_bytes());
            for (i, v) in f.st.iter().enumerate() {
                fx[32 + 16 * i..42 + 16 * i].copy_from_slice(&v.to_bytes());
            }
            for (i, x) in c.xmm.iter().enumerate() {
                fx[160 + 16 * i..176 + 16 * i].copy_from_slice(x);
            }
            set_bytes(c, a, &fx);
            c.code.extend_from_slice(&[0x0f, 0xae, 0x0d]);
            c.code.extend_from_slice(&a.to_le_bytes());
        }
    }
}

/// Makes the operands of the first instruction of `c` meet: now and then
/// ST(1) (or ST(i)) equal to ST(0) or its negation, or ST(0) an integer.
fn relate_operands(rng: &mut Rng, f: &mut Fpu) {
    match rng.below(6) {
        0 => f.st[1] = f.st[0],
        1 => f.st[1] = f.st[0].neg(),
        2 => {
            let i = rng.below(8) as usize;
            f.st[i] = f.st[0];
        }
        3 => f.st[0] = near_integer(rng),
        _ => {}
    }
}

// ----- groups -----

pub fn load_store(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let m = masks(rng);
            if rng.one_in(2) {
                let (mut c, f) = x87_case(rng, m, 0);
                emit_load(rng, &mut c, Addr::Any);
                finish(c, &f)
            } else {
                let (mut c, mut f) = x87_case(rng, m, 1);
                if rng.one_in(2) {
                    f.st[0] = near_integer(rng);
                }
                emit_store(rng, &mut c, Addr::Any);
                finish(c, &f)
            }
        })
        .collect()
}

pub fn arith(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let m = masks(rng);
            let (mut c, mut f) = x87_case(rng, m, 2);
            relate_operands(rng, &mut f);
            emit_arith(rng, &mut c, Addr::Any);
            finish(c, &f)
        })
        .collect()
}

pub fn compare(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let m = masks(rng);
            let (mut c, mut f) = x87_case(rng, m, 2);
            relate_operands(rng, &mut f);
            emit_compare(rng, &mut c, Addr::Any);
            if rng.one_in(3) {
                // fnstsw ax; sahf: the classic use of the condition codes.
                c.code.extend_from_slice(&[0xdf, 0xe0, 0x9e]);
            }
            finish(c, &f)
        })
        .collect()
}

pub fn unary(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let m = masks(rng);
            let (mut c, mut f) = x87_case(rng, m, 2);
            match rng.below(4) {
                // FSCALE factors: small integers mostly.
                0 => f.st[1] = fixed(rng.one_in(2), rng.below(80) as u128, 0),
                // FPREM: exponent differences around the 63-bit step.
                1 => {
                    let d = rng.below(80) as u16;
                    let e0 = f.st[0].exp().clamp(1, 0x7ffe);
                    f.st[1] = F80::new(rng.one_in(2), e0.saturating_sub(d).max(1), signif(rng));
                }
                _ => relate_operands(rng, &mut f),
            }
            emit_unary(rng, &mut c);
            finish(c, &f)
        })
        .collect()
}

/// FSIN, FCOS, FSINCOS, FPTAN, FPATAN, FYL2X, FYL2XP1, F2XM1.
pub fn transcendental(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let m = masks(rng);
            let (mut c, mut f) = x87_case(rng, m, 2);
            let (b1, loose_regs) = rng.pick(&[
                (0xfeu8, 1u8),
                (0xff, 1),
                (0xfb, 3),
                (0xf2, 2),
                (0xf3, 1),
                (0xf1, 1),
                (0xf9, 1),
                (0xf0, 1),
            ]);
            // Arguments in the documented domains mostly.
            if rng.below(3) != 0 {
                let sign = rng.one_in(2);
                f.st[0] = match b1 {
                    // |x| < 1 for F2XM1, |x| < 1 - sqrt(2)/2 for FYL2XP1.
                    0xf0 => F80::new(sign, 0x3fff - 1 - rng.below(70) as u16, signif(rng)),
                    0xf9 => F80::new(sign, 0x3fff - 2 - rng.below(70) as u16, signif(rng)),
                    0xf1 => F80::new(false, 0x3fff - 70 + rng.below(140) as u16, signif(rng)),
                    0xf3 => F80::new(sign, 0x3fff - 70 + rng.below(140) as u16, signif(rng)),
                    _ => F80::new(sign, 0x3fff - 66 + rng.below(130) as u16, signif(rng)),
                };
            }
            // Exact logarithms (x, or x + 1, a power of two): y * k, which
            // the host computes with log2 x a hair off k (see FpuLoose).
            if matches!(b1, 0xf1 | 0xf9) && rng.one_in(4) {
                let k = rng.pick(&[1i32, 2, 3, 5, 20, 63, 64, 1000, 16383]);
                f.st[0] = match (b1, rng.one_in(2)) {
                    (0xf1, neg) => {
                        F80::new(false, (0x3fff + if neg { -k } else { k }) as u16, 1 << 63)
                    }
                    // 2^j - 1 for j = 1..=3, and -(1 - 2^-j).
                    (_, false) => fixed(false, (1u128 << (k % 3 + 1)) - 1, 0),
                    (_, true) => fixed(true, (1u128 << (k % 3 + 1)) - 1, k as u32 % 3 + 1),
                };
                if rng.one_in(2) {
                    // Tiny and huge products.
                    f.st[1] = F80::new(
                        rng.one_in(2),
                        rng.pick(&[0u16, 1, 2, 0x7ffe]),
                        signif(rng) >> rng.below(2),
                    );
                }
            }
            // |x| >= 1 for the trigonometric ones: the host's reduction
            // error, below 2^(e-67) for 2^e <= |x| < 2^(e+1) in every run
            // so far (and 2^(e-72) fails often): allow 2^(e-64).
            let ex = f.st[0].exp() as i32 - 0x3fff;
            let far = matches!(b1, 0xfe | 0xff | 0xfb | 0xf2) && (0..0x4000).contains(&ex);
            c.fpu_loose = FpuLoose {
                regs: loose_regs,
                ulps: if far && b1 == 0xf2 { u64::MAX } else { 1 },
                abs_exp: far.then_some(ex - 64),
            };
            reg_form(&mut c, 0xd9, b1);
            finish(c, &f)
        })
        .collect()
}

pub fn stack(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let m = masks(rng);
            let (mut c, f) = x87_case(rng, m, 0);
            emit_stack(rng, &mut c);
            finish(c, &f)
        })
        .collect()
}

pub fn control(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let m = masks(rng);
            let (mut c, f) = x87_case(rng, m, 0);
            emit_control(rng, &mut c, Addr::Any);
            finish(c, &f)
        })
        .collect()
}

/// One instruction of any family (no transcendentals: their results
/// would have to be masked in what follows).
fn emit_any(rng: &mut Rng, c: &mut Case, addr: Addr) {
    match rng.below(16) {
        0..=2 => emit_load(rng, c, addr),
        3 | 4 => emit_store(rng, c, addr),
        5..=7 => emit_arith(rng, c, addr),
        8 | 9 => emit_compare(rng, c, addr),
        10 | 11 => emit_unary(rng, c),
        12 | 13 => emit_stack(rng, c),
        _ => emit_control(rng, c, addr),
    }
}

/// Short sequences with exceptions unmasked: an exception raised by one
/// instruction is delivered (#MF) at the next waiting one, with the state
/// as the faulting instruction left it; no-wait instructions in between
/// see and change the pending state.
pub fn exceptions(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let m = if rng.one_in(4) {
                Masks::Pending
            } else {
                Masks::Unmasked
            };
            let (mut c, mut f) = x87_case(rng, m, 1);
            relate_operands(rng, &mut f);
            let len = 2 + rng.below(3);
            for _ in 0..len {
                match rng.below(8) {
                    0 => {
                        // A no-wait instruction.
                        let b =
                            rng.pick(&[[0xdfu8, 0xe0], [0xdb, 0xe2], [0xdb, 0xe3], [0xdb, 0xe0]]);
                        c.code.extend_from_slice(&b);
                    }
                    1 => c.code.push(0x9b),
                    _ => emit_any(rng, &mut c, Addr::Fixed),
                }
            }
            finish(c, &f)
        })
        .collect()
}

/// Random sequences of x87 instructions with all exceptions masked (the
/// stack, tags and condition codes flowing from one to the next).
pub fn sequences(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let (mut c, mut f) = x87_case(rng, Masks::Masked, 0);
            relate_operands(rng, &mut f);
            for _ in 0..2 + rng.below(5) {
                emit_any(rng, &mut c, Addr::Fixed);
            }
            finish(c, &f)
        })
        .collect()
}

/// MMX and x87 instructions mixed: MMX writes make TOP 0, every tag valid
/// and the exponent bits ones; EMMS empties the tags; an MMX instruction
/// with an exception pending faults (#MF).
pub fn mmx(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|_| {
            let m = if rng.one_in(6) {
                Masks::Pending
            } else {
                Masks::Masked
            };
            let (mut c, f) = x87_case(rng, m, 0);
            for _ in 0..1 + rng.below(4) {
                if rng.one_in(2) {
                    emit_mmx(rng, &mut c, Addr::Fixed);
                } else {
                    emit_any(rng, &mut c, Addr::Fixed);
                }
            }
            finish(c, &f)
        })
        .collect()
}
