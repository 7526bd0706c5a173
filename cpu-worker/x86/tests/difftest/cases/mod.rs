//! Case generators, one function per instruction group, all driven by a
//! deterministic PRNG: edge values of each operand size, random values,
//! register and memory operands in every addressing form, both carry-in
//! states and both directions.

pub mod arith;
pub mod bits;
pub mod control;
pub mod data;
pub mod sequence;
pub mod string;
pub mod x87;

use super::asm::{self, Rm};
use super::harness::{
    fpu_image, Case, FpuLoose, BASE_EFLAGS, CASE_FLAGS, DATA_ADDR, DATA_SIZE, LOW_ADDR, LOW_SIZE,
    RO_ADDR,
};

/// xorshift64* seeded through splitmix64.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn u32(&mut self) -> u32 {
        (self.u64() >> 32) as u32
    }

    /// A number in 0..n.
    pub fn below(&mut self, n: u32) -> u32 {
        ((self.u32() as u64 * n as u64) >> 32) as u32
    }

    /// True with probability 1/n.
    pub fn one_in(&mut self, n: u32) -> bool {
        self.below(n) == 0
    }

    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u32) as usize]
    }

    pub fn size(&mut self) -> u32 {
        self.pick(&[1, 2, 4])
    }

    /// A value of `bytes` width: an edge value (0, 1, the signed limits,
    /// all ones and their neighbours), a small number or a random one.
    pub fn value(&mut self, bytes: u32) -> u32 {
        let bits = bytes * 8;
        let max = mask(bytes);
        let smin = 1u32 << (bits - 1);
        match self.below(8) {
            0..=3 => {
                self.pick(&[
                    0,
                    1,
                    2,
                    smin - 1,
                    smin,
                    smin + 1,
                    max - 1,
                    max,
                    0x7f,
                    0x80,
                    0xff,
                    0x7fff,
                    0x8000,
                    0xffff,
                ]) & max
            }
            4 => self.below(16),
            5 => (1u32 << self.below(bits)) ^ if self.one_in(2) { max } else { 0 },
            _ => self.u32() & max,
        }
    }
}

pub fn mask(bytes: u32) -> u32 {
    match bytes {
        1 => 0xff,
        2 => 0xffff,
        _ => u32::MAX,
    }
}

/// Where the stack starts and where memory operands go in the data area.
pub const STACK_TOP: u32 = DATA_ADDR + 0x1800;
pub const OPERANDS: (u32, u32) = (DATA_ADDR + 0x100, DATA_ADDR + 0x1000);
/// Unmapped on the host and in the emulator (the probe's address space
/// has nothing between 0x20001000 and 0x40000000).
pub const UNMAPPED: (u32, u32) = (0x3000_0000, 0x4000_0000);

/// A case with random registers, flags, data and XMM contents.
pub fn base(rng: &mut Rng) -> Case {
    let mut regs = [0u32; 8];
    for r in regs.iter_mut() {
        *r = rng.u32();
    }
    regs[4] = STACK_TOP;
    let mut data = vec![0u8; DATA_SIZE];
    for c in data.chunks_mut(8) {
        c.copy_from_slice(&rng.u64().to_le_bytes());
    }
    let mut low = vec![0u8; LOW_SIZE];
    for c in low.chunks_mut(8) {
        c.copy_from_slice(&rng.u64().to_le_bytes());
    }
    let mut xmm = [[0u8; 16]; 8];
    for x in xmm.iter_mut() {
        x[..8].copy_from_slice(&rng.u64().to_le_bytes());
        x[8..].copy_from_slice(&rng.u64().to_le_bytes());
    }
    Case {
        code: Vec::new(),
        regs,
        eflags: BASE_EFLAGS | (rng.u32() & CASE_FLAGS),
        mxcsr: 0x1f80,
        xmm,
        fpu: fpu_image(&::x87::X87::new()),
        data,
        low,
        ignore_regs: [0; 8],
        fpu_loose: FpuLoose::default(),
        max_steps: 16,
    }
}

/// Sets general register `r` (a byte register number 0-7 is AL..BH when
/// `bytes` is 1) to `v`, keeping the other bits.
pub fn set_reg(case: &mut Case, r: u8, bytes: u32, v: u32) {
    let r = r as usize & 7;
    match bytes {
        1 if r >= 4 => {
            case.regs[r - 4] = (case.regs[r - 4] & !0xff00) | ((v & 0xff) << 8);
        }
        1 => case.regs[r] = (case.regs[r] & !0xff) | (v & 0xff),
        2 => case.regs[r] = (case.regs[r] & !0xffff) | (v & 0xffff),
        _ => case.regs[r] = v,
    }
}

/// Stores `v` at guest address `a` where that is case memory (the data
/// or low area; bytes outside them are dropped).
pub fn set_mem(case: &mut Case, a: u32, bytes: u32, v: u32) {
    for (i, b) in v.to_le_bytes()[..bytes as usize].iter().enumerate() {
        let x = a.wrapping_add(i as u32);
        if (DATA_ADDR..DATA_ADDR + DATA_SIZE as u32).contains(&x) {
            case.data[(x - DATA_ADDR) as usize] = *b;
        } else if (LOW_ADDR..LOW_ADDR + LOW_SIZE as u32).contains(&x) {
            case.low[(x - LOW_ADDR) as usize] = *b;
        }
    }
}

pub fn set_mem64(case: &mut Case, a: u32, v: u64) {
    set_mem(case, a, 4, v as u32);
    set_mem(case, a.wrapping_add(4), 4, (v >> 32) as u32);
}

/// An address for a memory operand of `bytes`: usually in the data area
/// (sometimes misaligned), now and then one that faults or half faults:
/// across the end of the data area, on the read-only page, unmapped.
pub fn mem_addr(rng: &mut Rng, bytes: u32) -> u32 {
    match rng.below(40) {
        0 => DATA_ADDR + DATA_SIZE as u32 - 1 - rng.below(bytes.max(2) - 1),
        1 => RO_ADDR + rng.below(0x100),
        2 => rng.below(UNMAPPED.1 - UNMAPPED.0) + UNMAPPED.0,
        3 => DATA_ADDR - 1 - rng.below(3),
        _ => {
            let a = OPERANDS.0 + rng.below(OPERANDS.1 - OPERANDS.0 - 8);
            if rng.one_in(3) {
                a
            } else {
                a & !(bytes - 1)
            }
        }
    }
}

/// A memory operand addressing `addr` in a random addressing form. Base
/// and index registers are picked outside `avoid` and set in `case`.
pub fn mem_operand(rng: &mut Rng, case: &mut Case, addr: u32, avoid: &[u8]) -> Rm {
    let free: Vec<u8> = (0..8u8).filter(|r| !avoid.contains(r)).collect();
    let form = if free.len() < 2 { 0 } else { rng.below(6) };
    let disp8 = (rng.u32() as i8) as i32;
    let disp32 = rng.u32() as i32;
    match form {
        0 => Rm::Mem {
            base: None,
            index: None,
            disp: addr as i32,
        },
        1..=3 => {
            let b = rng.pick(&free);
            let disp = match form {
                1 => 0,
                2 => disp8,
                _ => disp32,
            };
            case.regs[b as usize] = addr.wrapping_sub(disp as u32);
            Rm::Mem {
                base: Some(b),
                index: None,
                disp,
            }
        }
        4 => {
            let b = rng.pick(&free);
            let idx: Vec<u8> = free.iter().copied().filter(|&r| r != b && r != 4).collect();
            let Some(&i) = idx.get(rng.below(idx.len().max(1) as u32) as usize) else {
                return mem_operand(rng, case, addr, &[0, 1, 2, 3, 4, 5, 6, 7]);
            };
            let s = rng.pick(&[1u8, 2, 4, 8]);
            let iv = if rng.one_in(2) {
                rng.below(64)
            } else {
                rng.u32()
            };
            let disp = if rng.one_in(2) { disp8 } else { disp32 };
            case.regs[i as usize] = iv;
            case.regs[b as usize] = addr
                .wrapping_sub(disp as u32)
                .wrapping_sub(iv.wrapping_mul(s as u32));
            Rm::Mem {
                base: Some(b),
                index: Some((i, s)),
                disp,
            }
        }
        _ => {
            let idx: Vec<u8> = free.iter().copied().filter(|&r| r != 4).collect();
            let i = rng.pick(&idx);
            let s = rng.pick(&[1u8, 2, 4, 8]);
            let iv = rng.below(256);
            case.regs[i as usize] = iv;
            Rm::Mem {
                base: None,
                index: Some((i, s)),
                disp: addr.wrapping_sub(iv.wrapping_mul(s as u32)) as i32,
            }
        }
    }
}

/// An r/m operand of `bytes` holding `v`: a register (not in `avoid`) or
/// memory. Returns the operand and whether it is memory.
pub fn rm_operand(rng: &mut Rng, case: &mut Case, bytes: u32, v: u32, avoid: &[u8]) -> (Rm, bool) {
    if rng.one_in(2) {
        let regs: Vec<u8> = (0..8u8)
            .filter(|r| !avoid.contains(&(r & if bytes == 1 { 3 } else { 7 })))
            .collect();
        let r = if regs.is_empty() { 0 } else { rng.pick(&regs) };
        set_reg(case, r, bytes, v);
        (Rm::Reg(r), false)
    } else {
        let a = mem_addr(rng, bytes);
        set_mem(case, a, bytes, v);
        // Byte registers 4-7 are AH..BH: their full register is r & 3.
        let full: Vec<u8> = avoid.iter().map(|&r| r & 7).collect();
        (mem_operand(rng, case, a, &full), true)
    }
}

/// The full register behind operand register number `r` of `bytes`.
pub fn full_reg(r: u8, bytes: u32) -> u8 {
    if bytes == 1 {
        r & 3
    } else {
        r & 7
    }
}

pub fn push_modrm(case: &mut Case, reg: u8, rm: &Rm) {
    asm::modrm(&mut case.code, reg, rm);
}
