//! Basic arithmetic on 80-bit values: add, subtract, multiply, divide, square root, round to
//! integer, compare, test and examine.
//!
//! Follows the Intel SDM Vol. 1 §4.8.3.5 and table 4-7 (NaN operands), §4.9.1 (invalid
//! operation, denormal operand, divide by zero), §8.1.5 (precision control), §8.3.5
//! (comparison), §8.5, and the instruction pages FADD, FSUB, FMUL, FDIV, FSQRT, FRNDINT, FCOM,
//! FUCOM, FTST, FXAM in Vol. 2; results are correctly rounded as IEEE 754-2008 §5.4.1 requires.

use crate::f80::{round_pack_ext, shr_jam, Class, Ctx, Rounding, Unpacked, DE, F80, IE, PE, ZE};

/// Result of a comparison.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ordering {
    /// a < b
    Less,
    /// a = b
    Equal,
    /// a > b
    Greater,
    /// A NaN or an unsupported operand took part.
    Unordered,
}

impl Ordering {
    /// Condition codes (C3, C2, C0) as FCOM sets them (SDM Vol. 1 table 8-6).
    pub fn fcom_cc(self) -> (bool, bool, bool) {
        match self {
            Ordering::Greater => (false, false, false),
            Ordering::Less => (false, false, true),
            Ordering::Equal => (true, false, false),
            Ordering::Unordered => (true, true, true),
        }
    }
}

/// NaN propagation for one operand (SNaN raises IE and is quieted).
pub(crate) fn nan1(ctx: &mut Ctx, a: F80) -> F80 {
    if a.is_snan() {
        ctx.raise(IE);
    }
    a.quieted()
}

/// NaN propagation for two operands, at least one a NaN (SDM Vol. 1 table 4-7).
pub(crate) fn nan2(ctx: &mut Ctx, a: F80, b: F80) -> F80 {
    let (an, bn) = (a.is_nan(), b.is_nan());
    if a.is_snan() || b.is_snan() {
        ctx.raise(IE);
    }
    if an && bn {
        let (aq, bq) = (a.quieted(), b.quieted());
        if a.signif << 1 > b.signif << 1 {
            aq
        } else if b.signif << 1 > a.signif << 1 {
            bq
        } else if a.is_snan() != b.is_snan() {
            if a.is_snan() {
                bq
            } else {
                aq
            }
        } else if a.sign() {
            bq
        } else {
            aq
        }
    } else if an {
        a.quieted()
    } else {
        b.quieted()
    }
}

/// The checks shared by the two-operand operations: unsupported encodings and NaNs produce
/// the result directly; denormals raise DE.
fn binary_pre(ctx: &mut Ctx, a: F80, b: F80) -> Option<F80> {
    let (ca, cb) = (a.class(), b.class());
    if ca == Class::Unsupported || cb == Class::Unsupported {
        ctx.raise(IE);
        return Some(F80::INDEFINITE);
    }
    if a.is_nan() || b.is_nan() {
        return Some(nan2(ctx, a, b));
    }
    if a.is_denormal() || b.is_denormal() {
        ctx.raise(DE);
    }
    None
}

fn invalid(ctx: &mut Ctx) -> F80 {
    ctx.raise(IE);
    F80::INDEFINITE
}

/// a + b rounded to the context's precision.
pub fn add(ctx: &mut Ctx, a: F80, b: F80) -> F80 {
    add_sub(ctx, a, b, false)
}

/// a − b rounded to the context's precision.
pub fn sub(ctx: &mut Ctx, a: F80, b: F80) -> F80 {
    add_sub(ctx, a, b, true)
}

fn add_sub(ctx: &mut Ctx, a: F80, b: F80, negate_b: bool) -> F80 {
    ctx.c1_round_up = false;
    if let Some(r) = binary_pre(ctx, a, b) {
        return r;
    }
    let b = if negate_b { b.neg() } else { b };
    let prec = ctx.pc.bits();
    match (a.class(), b.class()) {
        (Class::Inf, Class::Inf) => {
            if a.sign() != b.sign() {
                invalid(ctx)
            } else {
                a
            }
        }
        (Class::Inf, _) => a,
        (_, Class::Inf) => b,
        (Class::Zero, Class::Zero) => {
            if a.sign() == b.sign() {
                a
            } else {
                F80::new(ctx.rc == Rounding::Down, 0, 0)
            }
        }
        (Class::Zero, _) => {
            let u = b.unpack_finite();
            round_pack_ext(ctx, u.sign, u.exp, (u.sig as u128) << 64, prec)
        }
        (_, Class::Zero) => {
            let u = a.unpack_finite();
            round_pack_ext(ctx, u.sign, u.exp, (u.sig as u128) << 64, prec)
        }
        _ => {
            let (mut x, mut y) = (a.unpack_finite(), b.unpack_finite());
            if (y.exp, y.sig) > (x.exp, x.sig) {
                core::mem::swap(&mut x, &mut y);
            }
            let d = (x.exp - y.exp) as u32;
            let xs = (x.sig as u128) << 63;
            let ys = shr_jam((y.sig as u128) << 63, d);
            let exp = x.exp + 1;
            if x.sign == y.sign {
                round_pack_ext(ctx, x.sign, exp, xs + ys, prec)
            } else {
                let diff = xs - ys;
                if diff == 0 {
                    F80::new(ctx.rc == Rounding::Down, 0, 0)
                } else {
                    round_pack_ext(ctx, x.sign, exp, diff, prec)
                }
            }
        }
    }
}

/// a × b rounded to the context's precision.
pub fn mul(ctx: &mut Ctx, a: F80, b: F80) -> F80 {
    ctx.c1_round_up = false;
    if let Some(r) = binary_pre(ctx, a, b) {
        return r;
    }
    let sign = a.sign() != b.sign();
    match (a.class(), b.class()) {
        (Class::Inf, Class::Zero) | (Class::Zero, Class::Inf) => invalid(ctx),
        (Class::Inf, _) | (_, Class::Inf) => F80::INFINITY.with_sign(sign),
        (Class::Zero, _) | (_, Class::Zero) => F80::new(sign, 0, 0),
        _ => {
            let (x, y) = (a.unpack_finite(), b.unpack_finite());
            let p = x.sig as u128 * y.sig as u128;
            round_pack_ext(ctx, sign, x.exp + y.exp + 1, p, ctx.pc.bits())
        }
    }
}

/// The quotient of two normalized significands as a 128-bit value with a sticky bit:
/// x/y ≈ result × 2^−127.
pub(crate) fn div_sig(x: u64, y: u64) -> u128 {
    let (x, y) = (x as u128, y as u128);
    // y has bit 63 set, so y != 0.
    let q = (x << 64) / y;
    let r = (x << 64) % y;
    let q2 = (r << 64) / y;
    let r2 = (r << 64) % y;
    (q << 63) | (q2 >> 1) | ((q2 & 1) | (r2 != 0) as u128)
}

/// a ÷ b rounded to the context's precision.
pub fn div(ctx: &mut Ctx, a: F80, b: F80) -> F80 {
    ctx.c1_round_up = false;
    // Division by zero of a finite nonzero (even denormal) dividend reports ZE alone.
    if b.is_zero()
        && matches!(
            a.class(),
            Class::Normal | Class::Denormal | Class::PseudoDenormal
        )
    {
        ctx.raise(ZE);
        return F80::INFINITY.with_sign(a.sign() != b.sign());
    }
    if let Some(r) = binary_pre(ctx, a, b) {
        return r;
    }
    let sign = a.sign() != b.sign();
    match (a.class(), b.class()) {
        (Class::Inf, Class::Inf) | (Class::Zero, Class::Zero) => invalid(ctx),
        (Class::Inf, _) => F80::INFINITY.with_sign(sign),
        (_, Class::Inf) | (Class::Zero, _) => F80::new(sign, 0, 0),
        (_, Class::Zero) => {
            ctx.raise(ZE);
            F80::INFINITY.with_sign(sign)
        }
        _ => {
            let (x, y) = (a.unpack_finite(), b.unpack_finite());
            if y.sig == 0 {
                return invalid(ctx);
            }
            round_pack_ext(
                ctx,
                sign,
                x.exp - y.exp,
                div_sig(x.sig, y.sig),
                ctx.pc.bits(),
            )
        }
    }
}

/// Integer square root by the bit-pair method: radicand `n` (128 bits) followed by
/// `extra_pairs` pairs of zero bits. Returns (root, remainder != 0).
pub(crate) fn isqrt_bits(n: u128, extra_pairs: u32) -> (u128, bool) {
    let mut root: u128 = 0;
    let mut rem: u128 = 0;
    for i in 0..(64 + extra_pairs) {
        let pair = if i < 64 { (n >> (126 - 2 * i)) & 3 } else { 0 };
        rem = (rem << 2) | pair;
        let trial = (root << 2) | 1;
        if rem >= trial {
            rem -= trial;
            root = (root << 1) | 1;
        } else {
            root <<= 1;
        }
    }
    (root, rem != 0)
}

/// √a rounded to the context's precision.
pub fn sqrt(ctx: &mut Ctx, a: F80) -> F80 {
    ctx.c1_round_up = false;
    match a.class() {
        Class::Unsupported => return invalid(ctx),
        Class::QNaN | Class::SNaN => return nan1(ctx, a),
        Class::Zero => return a,
        _ if a.sign() => return invalid(ctx),
        Class::Inf => return a,
        Class::Denormal | Class::PseudoDenormal => ctx.raise(DE),
        Class::Normal => {}
    }
    let u = a.unpack_finite();
    // value = sig × 2^(exp − 63); make the power of two even.
    let mut e = u.exp - 63;
    let mut n = (u.sig as u128) << 62;
    if e & 1 != 0 {
        n <<= 1;
        e -= 1;
    }
    // √(n × 2^64) = root; value = n × 2^(e − 62) so √value = root × 2^((e − 62 − 64) / 2).
    let (root, sticky) = isqrt_bits(n, 32);
    let sig = (root << 1) | sticky as u128;
    let lsb = (e - 126) / 2 - 1;
    round_pack_ext(ctx, false, lsb + 127, sig, ctx.pc.bits())
}

/// Rounds a finite nonzero unpacked value to an integer in `rc`, returning the integer's
/// magnitude (saturating beyond 2^64 is never needed: callers pass exp < 64) and whether it
/// was inexact / rounded up.
pub(crate) fn round_int_mag(rc: Rounding, u: Unpacked) -> (u128, bool, bool) {
    // value = sig × 2^(exp − 63)
    if u.exp >= 63 {
        let sh = (u.exp - 63) as u32;
        return ((u.sig as u128) << sh.min(64), false, false);
    }
    let frac_bits = (63 - u.exp) as u32; // 1..
    let x = u.sig as u128;
    let (int, rem_hi, rem_lo) = if frac_bits > 64 {
        (0u128, false, true)
    } else {
        let int = x >> frac_bits;
        let rem = x & ((1u128 << frac_bits) - 1);
        let half = 1u128 << (frac_bits - 1);
        (int, rem & half != 0, rem & (half - 1) != 0)
    };
    let inexact = rem_hi || rem_lo;
    let inc = match rc {
        Rounding::NearestEven => rem_hi && (rem_lo || int & 1 != 0),
        Rounding::Zero => false,
        Rounding::Up => !u.sign && inexact,
        Rounding::Down => u.sign && inexact,
    };
    (int + inc as u128, inexact, inc)
}

/// FRNDINT: round to an integer in the current rounding mode (precision control ignored).
pub fn round_to_int(ctx: &mut Ctx, a: F80) -> F80 {
    ctx.c1_round_up = false;
    match a.class() {
        Class::Unsupported => return invalid(ctx),
        Class::QNaN | Class::SNaN => return nan1(ctx, a),
        Class::Zero | Class::Inf => return a,
        Class::Denormal | Class::PseudoDenormal => ctx.raise(DE),
        Class::Normal => {}
    }
    let u = a.unpack_finite();
    if u.exp >= 63 {
        return a;
    }
    let (m, inexact, inc) = round_int_mag(ctx.rc, u);
    if inexact {
        ctx.raise(PE);
    }
    ctx.c1_round_up = inc;
    if m == 0 {
        return F80::new(u.sign, 0, 0);
    }
    crate::f80::pack_ext(u.sign, m, 0)
}

/// Compares a with b. `quiet`: FUCOM semantics (IE only on SNaN / unsupported); otherwise
/// FCOM (IE on any NaN).
pub fn compare(ctx: &mut Ctx, a: F80, b: F80, quiet: bool) -> Ordering {
    ctx.c1_round_up = false;
    let (ca, cb) = (a.class(), b.class());
    if ca == Class::Unsupported || cb == Class::Unsupported {
        ctx.raise(IE);
        return Ordering::Unordered;
    }
    if a.is_nan() || b.is_nan() {
        if !quiet || a.is_snan() || b.is_snan() {
            ctx.raise(IE);
        }
        return Ordering::Unordered;
    }
    if a.is_denormal() || b.is_denormal() {
        ctx.raise(DE);
    }
    compare_values(a, b)
}

/// Ordering of two non-NaN supported values.
pub(crate) fn compare_values(a: F80, b: F80) -> Ordering {
    let key = |x: F80| -> (bool, i128) {
        if x.is_zero() {
            return (false, 0);
        }
        if x.is_inf() {
            return (x.sign(), i128::MAX);
        }
        let u = x.unpack_finite();
        // Monotonic key for the magnitude: exponent then significand.
        (
            x.sign(),
            (((u.exp as i128) + (1 << 20)) << 64) | u.sig as i128,
        )
    };
    let (sa, ka) = key(a);
    let (sb, kb) = key(b);
    let va = if sa { -ka } else { ka };
    let vb = if sb { -kb } else { kb };
    match va.cmp(&vb) {
        core::cmp::Ordering::Less => Ordering::Less,
        core::cmp::Ordering::Equal => Ordering::Equal,
        core::cmp::Ordering::Greater => Ordering::Greater,
    }
}

/// FXAM condition codes (C3, C2, C1, C0) for a register (SDM Vol. 1 table 8-7 / FXAM).
pub fn fxam(a: F80, empty: bool) -> (bool, bool, bool, bool) {
    let c1 = a.sign();
    let (c3, c2, c0) = if empty {
        (true, false, true)
    } else {
        match a.class() {
            Class::Unsupported => (false, false, false),
            Class::QNaN | Class::SNaN => (false, false, true),
            Class::Normal => (false, true, false),
            Class::Inf => (false, true, true),
            Class::Zero => (true, false, false),
            Class::Denormal | Class::PseudoDenormal => (true, true, false),
        }
    };
    (c3, c2, c1, c0)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::host::{self, hexf, Rng, N};

    type Bin = fn(&mut Ctx, F80, F80) -> F80;
    type Probe = fn(u16, F80, F80, [u8; 16]) -> host::HostOut;

    /// Compares result, exception flags and C1 with the host for a two-operand op.
    fn check_binary(name: &str, soft: Bin, probe: Probe, seed: u64) {
        let mut rng = Rng(seed);
        let mut bad = 0;
        for i in 0..N {
            let a = rng.f80();
            let b = if i % 2 == 0 {
                rng.f80_near(a)
            } else {
                rng.f80()
            };
            let cw = rng.cw_post();
            let h = probe(cw, a, b, [0; 16]);
            let mut ctx = Ctx::from_control_word(cw);
            let r = soft(&mut ctx, a, b);
            let c1 = ctx.c1_round_up && ctx.flags & PE != 0;
            let hc1 = h.sw & 0x200 != 0;
            if r != h.st[0] || ctx.flags != (h.sw & 0x3F) as u8 || c1 != hc1 {
                bad += 1;
                if bad < 12 {
                    eprintln!(
                        "{name} cw={cw:04x} a={} b={} soft={} fl={:02x} c1={} host={} fl={:02x} c1={}",
                        hexf(a),
                        hexf(b),
                        hexf(r),
                        ctx.flags,
                        c1,
                        hexf(h.st[0]),
                        h.sw & 0x3F,
                        hc1
                    );
                }
            }
        }
        assert_eq!(bad, 0, "{name}: {bad} of {N} differ from the host");
    }

    #[test]
    fn add_matches_host() {
        check_binary("fadd", add, host::fadd, 1);
    }
    #[test]
    fn sub_matches_host() {
        check_binary("fsub", sub, host::fsub, 2);
    }
    #[test]
    fn mul_matches_host() {
        check_binary("fmul", mul, host::fmul, 3);
    }
    #[test]
    fn div_matches_host() {
        check_binary("fdiv", div, host::fdiv, 4);
    }
    #[test]
    fn sqrt_matches_host() {
        check_binary("fsqrt", |c, a, _| sqrt(c, a), host::fsqrt, 5);
    }
    #[test]
    fn frndint_matches_host() {
        check_binary("frndint", |c, a, _| round_to_int(c, a), host::frndint, 6);
    }

    #[test]
    fn compare_matches_host() {
        let mut rng = Rng(7);
        for i in 0..N {
            let a = rng.f80();
            let b = if i % 2 == 0 {
                rng.f80_near(a)
            } else {
                rng.f80()
            };
            for quiet in [false, true] {
                let h = if quiet {
                    host::fucom(0x37F, a, b, [0; 16])
                } else {
                    host::fcom(0x37F, a, b, [0; 16])
                };
                let hi = if quiet {
                    host::fucomi(0x37F, a, b, [0; 16])
                } else {
                    host::fcomi(0x37F, a, b, [0; 16])
                };
                let mut c = Ctx::default();
                let o = compare(&mut c, a, b, quiet);
                let (c3, c2, c0) = o.fcom_cc();
                let cc = (h.sw & 0x4000 != 0, h.sw & 0x400 != 0, h.sw & 0x100 != 0);
                assert_eq!(
                    ((c3, c2, c0), c.flags),
                    (cc, (h.sw & 0x3F) as u8),
                    "quiet={quiet} {} {}",
                    hexf(a),
                    hexf(b)
                );
                // FCOMI: ZF, PF, CF carry C3, C2, C0.
                let fl = (
                    hi.eflags & 0x40 != 0,
                    hi.eflags & 0x4 != 0,
                    hi.eflags & 1 != 0,
                );
                assert_eq!(
                    ((c3, c2, c0), c.flags),
                    (fl, (hi.sw & 0x3F) as u8),
                    "fcomi quiet={quiet} {} {}",
                    hexf(a),
                    hexf(b)
                );
            }
            let h = host::ftst(0x37F, a, b, [0; 16]);
            let mut c = Ctx::default();
            let (c3, c2, c0) = compare(&mut c, a, F80::ZERO, false).fcom_cc();
            let cc = (h.sw & 0x4000 != 0, h.sw & 0x400 != 0, h.sw & 0x100 != 0);
            assert_eq!(
                ((c3, c2, c0), c.flags),
                (cc, (h.sw & 0x3F) as u8),
                "ftst {}",
                hexf(a)
            );
            let h = host::fxam(0x37F, a, b, [0; 16]);
            let cc = (
                h.sw & 0x4000 != 0,
                h.sw & 0x400 != 0,
                h.sw & 0x200 != 0,
                h.sw & 0x100 != 0,
            );
            assert_eq!(fxam(a, false), cc, "fxam {}", hexf(a));
        }
    }

    /// The reserved precision control 01 behaves as 64 bits on the host, as modelled.
    #[test]
    fn reserved_precision_control_is_64_bits() {
        let mut rng = Rng(8);
        for _ in 0..N / 10 {
            let (a, b) = (rng.f80(), rng.f80());
            let cw = 0x017F | ((rng.below(4) as u16) << 10);
            for (soft, probe) in [
                (add as Bin, host::fadd as Probe),
                (div, host::fdiv),
                (mul, host::fmul),
            ] {
                let h = probe(cw, a, b, [0; 16]);
                let mut ctx = Ctx::from_control_word(cw);
                let r = soft(&mut ctx, a, b);
                assert_eq!(
                    (r, ctx.flags),
                    (h.st[0], (h.sw & 0x3F) as u8),
                    "cw={cw:04x} {} {}",
                    hexf(a),
                    hexf(b)
                );
            }
        }
    }
}
