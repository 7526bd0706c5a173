//! String instructions: MOVS, CMPS, SCAS, LODS, STOS in byte, word and
//! doubleword forms, without and with REP/REPE/REPNE, both directions,
//! 32- and 16-bit addressing, segment overrides on the source, counts
//! that run into unmapped memory.

use super::{base, set_mem, Rng, UNMAPPED};
use crate::harness::{Case, DATA_ADDR, DATA_SIZE, LOW_ADDR, LOW_SIZE};

pub fn strings(rng: &mut Rng, n: usize) -> Vec<Case> {
    (0..n)
        .map(|i| {
            let mut c = base(rng);
            // movs, cmps, stos, lods, scas
            let (op8, reads_both) = [
                (0xa4u8, true),
                (0xa6, true),
                (0xaa, false),
                (0xac, false),
                (0xae, false),
            ][i % 5];
            let bytes = rng.pick(&[1u32, 2, 4]);
            let a16 = rng.one_in(5);
            let df = rng.one_in(2);
            c.eflags = (c.eflags & !0x400) | if df { 0x400 } else { 0 };
            let count = match rng.below(6) {
                0 => 0,
                1 => 1,
                2 => 2 + rng.below(6),
                _ => rng.below(40),
            };
            let span = count * bytes + 8;
            // Source and destination areas; sometimes next to the end of
            // the mapped area so the REP runs into the guard page.
            let (lo, hi) = if a16 {
                (LOW_ADDR, LOW_ADDR + LOW_SIZE as u32)
            } else {
                (DATA_ADDR, DATA_ADDR + DATA_SIZE as u32)
            };
            let place = |rng: &mut Rng| -> u32 {
                if rng.one_in(10) {
                    // Near an edge, going towards it.
                    if df {
                        lo + rng.below(span.min(hi - lo))
                    } else {
                        hi - 1 - rng.below(span.min(hi - lo))
                    }
                } else if df {
                    lo + span + rng.below(hi - lo - 2 * span)
                } else {
                    lo + rng.below(hi - lo - 2 * span)
                }
            };
            let si = place(rng);
            let di = if reads_both && rng.one_in(20) {
                // Both operands unmapped: which fault comes first?
                c.regs[6] = UNMAPPED.0 + rng.below(0x1000_0000);
                UNMAPPED.0 + rng.below(0x1000_0000)
            } else if reads_both && rng.one_in(4) {
                // Overlapping copies and comparisons.
                si.wrapping_add(rng.below(16)).wrapping_sub(8)
            } else {
                place(rng)
            };
            // CMPS/SCAS: make the operands mostly equal so REPE runs a while.
            if matches!(op8, 0xa6 | 0xae) && rng.one_in(2) {
                let fill = rng.u32() as u8;
                for k in 0..span {
                    let off = k.wrapping_sub(if df { span - 1 } else { 0 });
                    set_mem(&mut c, si.wrapping_add(off), 1, fill as u32);
                    if op8 == 0xa6 || !rng.one_in(12) {
                        set_mem(&mut c, di.wrapping_add(off), 1, fill as u32);
                    }
                }
                let f = fill as u32;
                c.regs[0] = f | (f << 8) | (f << 16) | (f << 24);
                if rng.one_in(3) {
                    // One difference somewhere.
                    let k = rng.below(span);
                    let off = k.wrapping_sub(if df { span - 1 } else { 0 });
                    set_mem(&mut c, di.wrapping_add(off), 1, rng.u32());
                }
            }
            let hi16 = |rng: &mut Rng, v: u32| {
                if a16 {
                    (rng.u32() & 0xffff_0000) | (v & 0xffff)
                } else {
                    v
                }
            };
            let si = if di >= UNMAPPED.0 { c.regs[6] } else { si };
            c.regs[6] = hi16(rng, si);
            c.regs[7] = hi16(rng, di);
            c.regs[1] = hi16(rng, count);
            if rng.one_in(4) && reads_both | (op8 == 0xac) {
                c.code.push(rng.pick(&[0x26, 0x2e, 0x36, 0x3e]));
            }
            match rng.below(3) {
                0 => {}
                1 => c.code.push(0xf3),
                _ => c.code.push(0xf2),
            }
            if a16 {
                c.code.push(0x67);
            }
            if bytes == 2 {
                c.code.push(0x66);
            }
            c.code.push(op8 + (bytes != 1) as u8);
            c
        })
        .collect()
}
