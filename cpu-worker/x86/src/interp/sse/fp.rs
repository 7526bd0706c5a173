//! SSE/SSE2/SSE3 floating-point semantics on top of the host's SSE unit
//! (`host.rs`): the guest MXCSR's sticky flags and the SIMD
//! floating-point exception (#XM) rules of SDM vol. 1 §11.5
//! ("SSE/SSE2/SSE3 exceptions"), §11.5.2 (the masked and unmasked
//! responses) and §11.5.3 (pre- and post-computation exceptions).
//!
//! The host computes every operation with all exceptions masked. The
//! flags it returns are what the guest sees when the guest masks them
//! too. When the guest unmasks some:
//!
//! * a pre-computation exception (IE, DE, ZE) in any element that is
//!   unmasked stops the instruction: the pre-computation flags of all
//!   elements are set and nothing else;
//! * otherwise the post-computation flags are, per element: for an
//!   overflow OE and PE if OE is masked, OE alone if it is unmasked (plus
//!   PE when the result rounded to the destination precision with an
//!   unbounded exponent is inexact); for a tiny result (tininess detected
//!   after rounding) with UE unmasked UE, whether exact or not and
//!   regardless of FTZ (plus PE as for overflow), with UE masked UE and PE
//!   only when inexact unless FTZ flushes it; PE for any other inexact
//!   result; the flags of all elements are ORed;
//! * an unmasked flag among them raises #XM without writing the
//!   destination; the flags stay set in the guest MXCSR.
//!
//! These rules were established and are checked against the host
//! processor with unmasked exceptions trapping (`tests.rs`). Only the
//! operations that can overflow or underflow need per-element work, and
//! only when OE or UE is unmasked: each element is then recomputed alone
//! with the matching scalar instruction, and the exactness with an
//! unbounded exponent is decided in integer arithmetic.

use super::host::{self, Binary, Comis, Compare, FromInt, ToInt, FLAGS};
use super::simd_int::V;
use crate::mem::Exception;
use crate::state::{CpuState, CF, PF, ZF};

pub const IE: u32 = 0x01;
pub const DE: u32 = 0x02;
pub const ZE: u32 = 0x04;
pub const OE: u32 = 0x08;
pub const UE: u32 = 0x10;
pub const PE: u32 = 0x20;
const PRE: u32 = IE | DE | ZE;
/// MXCSR.FTZ.
pub const FTZ: u32 = 0x8000;

/// The exception flags the guest has unmasked.
fn unmasked(csr: u32) -> u32 {
    !(csr >> 7) & FLAGS
}

/// Applies the flags `flags` an operation raised with everything masked
/// to the guest MXCSR, following the unmasked-exception rules; `elements`
/// recomputes the flags element by element when OE or UE is unmasked
/// (`None` for operations that cannot overflow or underflow). Returns
/// `Err(#XM)` when the destination must not be written.
fn settle(
    cpu: &mut CpuState,
    flags: u32,
    elements: Option<&dyn Fn(u32) -> u32>,
) -> Result<(), Exception> {
    let unm = unmasked(cpu.mxcsr);
    let pre = flags & PRE;
    if pre & unm != 0 {
        cpu.mxcsr |= pre;
        return Err(Exception::SimdFpError);
    }
    let flags = match elements {
        Some(f) if unm & (OE | UE) != 0 => f(cpu.mxcsr),
        _ => flags,
    };
    cpu.mxcsr |= flags;
    if flags & unm != 0 {
        Err(Exception::SimdFpError)
    } else {
        Ok(())
    }
}

/// Whether the `size`-byte float at the start of `v` is a (nonzero)
/// denormal.
fn is_denormal(v: &[u8], size: usize) -> bool {
    if size == 4 {
        let x = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
        x & 0x7f80_0000 == 0 && x & 0x007f_ffff != 0
    } else {
        let mut b = [0u8; 8];
        b.copy_from_slice(&v[..8]);
        let x = u64::from_le_bytes(b);
        x & 0x7ff0_0000_0000_0000 == 0 && x & 0x000f_ffff_ffff_ffff != 0
    }
}

/// The flags of one element computed alone by the scalar operation `op`
/// on the `size`-byte floats `x` and `y`, with the unmasked OE/UE
/// responses of guest MXCSR `csr` applied.
fn element_flags(op: Binary, csr: u32, x: &[u8], y: &[u8], size: usize) -> u32 {
    let mut a = [0u8; 16];
    let mut b = [0u8; 16];
    a[..size].copy_from_slice(x);
    b[..size].copy_from_slice(y);
    // FTZ does not apply when UE is unmasked; with it off a tiny exact
    // result shows as a denormal.
    let f = host::binary(op, csr & !FTZ, &mut a, &b);
    classify(f, csr, &a, size, &|| inexact_unbounded(op, x, y, csr))
}

/// The element `i` of `size` bytes of `v`.
fn el(v: &V, size: usize, i: usize) -> &[u8] {
    &v[i * size..i * size + size]
}

/// The per-element flag computation of the operations that can overflow
/// or underflow, or `None`.
fn per_element(op: Binary, a: &V, b: &V, csr: u32) -> Option<u32> {
    use Binary::*;
    // (scalar operation, element size, [(x from a?, index, y from a?, index)])
    let f = |sop: Binary, size: usize, pairs: &[(bool, usize, bool, usize)]| -> u32 {
        pairs.iter().fold(0, |acc, &(xa, xi, ya, yi)| {
            let x = el(if xa { a } else { b }, size, xi);
            let y = el(if ya { a } else { b }, size, yi);
            acc | element_flags(sop, csr, x, y, size)
        })
    };
    let lanes4 = [
        (true, 0, false, 0),
        (true, 1, false, 1),
        (true, 2, false, 2),
        (true, 3, false, 3),
    ];
    let lanes2 = [(true, 0, false, 0), (true, 1, false, 1)];
    let lane0 = [(true, 0, false, 0)];
    let hpairs4 = [
        (true, 0, true, 1),
        (true, 2, true, 3),
        (false, 0, false, 1),
        (false, 2, false, 3),
    ];
    let hpairs2 = [(true, 0, true, 1), (false, 0, false, 1)];
    Some(match op {
        Addps => f(Addss, 4, &lanes4),
        Subps => f(Subss, 4, &lanes4),
        Mulps => f(Mulss, 4, &lanes4),
        Divps => f(Divss, 4, &lanes4),
        Addss => f(Addss, 4, &lane0),
        Subss => f(Subss, 4, &lane0),
        Mulss => f(Mulss, 4, &lane0),
        Divss => f(Divss, 4, &lane0),
        Addpd => f(Addsd, 8, &lanes2),
        Subpd => f(Subsd, 8, &lanes2),
        Mulpd => f(Mulsd, 8, &lanes2),
        Divpd => f(Divsd, 8, &lanes2),
        Addsd => f(Addsd, 8, &lane0),
        Subsd => f(Subsd, 8, &lane0),
        Mulsd => f(Mulsd, 8, &lane0),
        Divsd => f(Divsd, 8, &lane0),
        Addsubps => f(Subss, 4, &[lanes4[0], lanes4[2]]) | f(Addss, 4, &[lanes4[1], lanes4[3]]),
        Addsubpd => f(Subsd, 8, &[lanes2[0]]) | f(Addsd, 8, &[lanes2[1]]),
        Haddps => f(Addss, 4, &hpairs4),
        Hsubps => f(Subss, 4, &hpairs4),
        Haddpd => f(Addsd, 8, &hpairs2),
        Hsubpd => f(Subsd, 8, &hpairs2),
        Cvtpd2ps | Cvtsd2ss => {
            let n = if op == Cvtpd2ps { 2 } else { 1 };
            (0..n).fold(0, |acc, i| {
                let mut x = [0u8; 16];
                let mut y = [0u8; 16];
                y[..8].copy_from_slice(el(b, 8, i));
                let fl = host::binary(Cvtsd2ss, csr & !FTZ, &mut x, &y);
                acc | classify(fl, csr, &x, 4, &|| {
                    inexact_unbounded(Cvtsd2ss, &[], el(b, 8, i), csr)
                })
            })
        }
        _ => return None,
    })
}

/// The per-element flags from a scalar run's masked flags `f` and result
/// (computed without FTZ). An unmasked overflow or underflow also sets PE
/// when the result rounded to the destination precision with an unbounded
/// exponent is inexact (`inexact`), as the host does.
fn classify(f: u32, csr: u32, result: &[u8], out_size: usize, inexact: &dyn Fn() -> bool) -> u32 {
    let unm = unmasked(csr);
    let unbounded_pe = || if inexact() { PE } else { 0 };
    let post = if f & OE != 0 {
        if unm & OE != 0 {
            OE | unbounded_pe()
        } else {
            OE | PE
        }
    } else if f & UE != 0 || is_denormal(result, out_size) {
        if unm & UE != 0 {
            UE | unbounded_pe()
        } else if csr & FTZ != 0 {
            UE | PE
        } else {
            f & (UE | PE)
        }
    } else {
        f & PE
    };
    (f & PRE) | post
}

/// `a op b` for the two-operand floating-point operations and
/// conversions. Returns the new destination value, or #XM with the guest
/// MXCSR updated and nothing to write.
pub fn binary(cpu: &mut CpuState, op: Binary, a: &V, b: &V) -> Result<V, Exception> {
    let mut r = *a;
    let flags = host::binary(op, cpu.mxcsr, &mut r, b);
    let elements = |csr: u32| per_element(op, a, b, csr).unwrap_or(flags);
    let can_over_underflow = per_element_kind(op);
    settle(
        cpu,
        flags,
        if can_over_underflow {
            Some(&elements)
        } else {
            None
        },
    )?;
    Ok(r)
}

/// Whether `op` can overflow or underflow.
fn per_element_kind(op: Binary) -> bool {
    use Binary::*;
    matches!(
        op,
        Addps
            | Subps
            | Mulps
            | Divps
            | Addss
            | Subss
            | Mulss
            | Divss
            | Addpd
            | Subpd
            | Mulpd
            | Divpd
            | Addsd
            | Subsd
            | Mulsd
            | Divsd
            | Addsubps
            | Addsubpd
            | Haddps
            | Hsubps
            | Haddpd
            | Hsubpd
            | Cvtpd2ps
            | Cvtsd2ss
    )
}

/// CMPPS/CMPSS/CMPPD/CMPSD with predicate `pred` (imm8 bits 2:0).
pub fn compare(cpu: &mut CpuState, op: Compare, pred: u8, a: &V, b: &V) -> Result<V, Exception> {
    let mut r = *a;
    let flags = host::compare(op, pred, cpu.mxcsr, &mut r, b);
    settle(cpu, flags, None)?;
    Ok(r)
}

/// COMISS/UCOMISS/COMISD/UCOMISD: ZF, PF, CF from the comparison; OF, SF
/// and AF cleared. EFLAGS is left alone on #XM.
pub fn comis(cpu: &mut CpuState, op: Comis, a: &V, b: &V) -> Result<(), Exception> {
    let ((z, p, c), flags) = host::comis(op, cpu.mxcsr, a, b);
    settle(cpu, flags, None)?;
    let f = if z { ZF } else { 0 } | if p { PF } else { 0 } | if c { CF } else { 0 };
    crate::flags::set_eager(cpu, f);
    Ok(())
}

/// CVTSI2SS/CVTSI2SD: `v` converted into the low element of `a`.
pub fn from_int(cpu: &mut CpuState, op: FromInt, a: &V, v: u32) -> Result<V, Exception> {
    let mut r = *a;
    let flags = host::from_int(op, cpu.mxcsr, &mut r, v);
    settle(cpu, flags, None)?;
    Ok(r)
}

/// CVT(T)SS2SI/CVT(T)SD2SI: the low element of `b` as a 32-bit integer.
pub fn to_int(cpu: &mut CpuState, op: ToInt, b: &V) -> Result<u32, Exception> {
    let (r, flags) = host::to_int(op, cpu.mxcsr, b);
    settle(cpu, flags, None)?;
    Ok(r)
}

/// A finite nonzero float as `m * 2^e`.
struct Exact {
    neg: bool,
    m: u128,
    e: i32,
}

/// Decodes the `size`-byte float `v`; `None` for zeros (denormals too
/// under DAZ), infinities and NaNs.
fn decode(v: &[u8], size: usize, daz: bool) -> Option<Exact> {
    let (bits, mant_bits, exp_bits) = if size == 4 {
        let b = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
        (b as u64, 23, 8)
    } else {
        let mut b = [0u8; 8];
        b.copy_from_slice(&v[..8]);
        (u64::from_le_bytes(b), 52, 11)
    };
    let neg = bits >> (mant_bits + exp_bits) & 1 != 0;
    let exp = ((bits >> mant_bits) & ((1 << exp_bits) - 1)) as i32;
    let frac = bits & ((1u64 << mant_bits) - 1);
    let bias = (1 << (exp_bits - 1)) - 1;
    if exp == (1 << exp_bits) - 1 || (exp == 0 && (frac == 0 || daz)) {
        return None;
    }
    Some(if exp == 0 {
        Exact {
            neg,
            m: frac as u128,
            e: 1 - bias - mant_bits,
        }
    } else {
        Exact {
            neg,
            m: (frac | (1 << mant_bits)) as u128,
            e: exp - bias - mant_bits,
        }
    })
}

/// Whether the integer `m` needs more than `p` significant bits.
fn too_wide(m: u128, p: u32) -> bool {
    m != 0 && 128 - m.leading_zeros() - m.trailing_zeros() > p
}

/// Whether the scalar operation `op` on `x` and `y` is inexact when its
/// result is rounded to the destination precision with an unbounded
/// exponent range (SDM vol. 1 §4.9.1.6: the precision of the result of
/// an unmasked overflow or underflow).
fn inexact_unbounded(op: Binary, x: &[u8], y: &[u8], csr: u32) -> bool {
    use Binary::*;
    let daz = csr & 0x40 != 0;
    let (size, p) = match op {
        Addss | Subss | Mulss | Divss => (4, 24),
        Cvtsd2ss => (8, 24),
        _ => (8, 53),
    };
    if op == Cvtsd2ss {
        return decode(y, 8, daz).is_some_and(|b| too_wide(b.m, p));
    }
    let (Some(a), Some(b)) = (decode(x, size, daz), decode(y, size, daz)) else {
        return false;
    };
    match op {
        Mulss | Mulsd => too_wide(a.m * b.m, p),
        Divss | Divsd => {
            let (oa, ob) = (a.m >> a.m.trailing_zeros(), b.m >> b.m.trailing_zeros());
            oa % ob != 0 || too_wide(oa / ob, p)
        }
        _ => {
            let sub = matches!(op, Subss | Subsd);
            let bneg = b.neg ^ sub;
            let (hi, lo) = if a.e >= b.e {
                ((a.neg, a.m), (bneg, b.m, b.e, a.e))
            } else {
                ((bneg, b.m), (a.neg, a.m, a.e, b.e))
            };
            let d = (lo.3 - lo.2) as u32;
            if d > 74 {
                // The smaller operand lies wholly below the rounding point.
                return true;
            }
            let big = (hi.1 << d) as i128 * if hi.0 { -1 } else { 1 };
            let small = lo.1 as i128 * if lo.0 { -1 } else { 1 };
            too_wide((big + small).unsigned_abs(), p)
        }
    }
}
