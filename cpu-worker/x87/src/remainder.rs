//! Partial remainder (FPREM, FPREM1), FSCALE and FXTRACT.
//!
//! Follows the Intel SDM Vol. 2 pages FPREM, FPREM1, FSCALE, FXTRACT and Vol. 1 §8.3.10.
//! FPREM/FPREM1 reduce the exponent difference by at most 63 per execution: when it is 64
//! or more, the host (and this model) reduces by N = 32 + (D mod 32) bits, leaving a
//! multiple of 32, and reports C2 = 1 with C0 = C1 = C3 = 0 (measured on the host CPU; the
//! SDM only says N is between 32 and 63).

use crate::arith::nan2;
use crate::f80::{round_pack_ext, Class, Ctx, DE, F80, IE, ZE};

/// Condition-code bits set by an instruction.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Cond {
    /// C0
    pub c0: bool,
    /// C1
    pub c1: bool,
    /// C2
    pub c2: bool,
    /// C3
    pub c3: bool,
}

/// FPREM (`ieee` = false: truncated quotient) and FPREM1 (`ieee` = true: quotient rounded to
/// nearest even) of a = ST(0) by b = ST(1). The condition codes are those of a complete
/// reduction (C0, C3, C1 = Q2, Q1, Q0, C2 = 0) or of a partial one (C2 = 1); None for NaN
/// and invalid operands (C2 and C1 cleared, C0 and C3 unchanged, as the host does).
pub fn fprem(ctx: &mut Ctx, a: F80, b: F80, ieee: bool) -> (F80, Option<Cond>) {
    ctx.c1_round_up = false;
    let none = None;
    let (ca, cb) = (a.class(), b.class());
    if ca == Class::Unsupported || cb == Class::Unsupported {
        ctx.raise(IE);
        return (F80::INDEFINITE, none);
    }
    if a.is_nan() || b.is_nan() {
        return (nan2(ctx, a, b), none);
    }
    if ca == Class::Inf || cb == Class::Zero {
        ctx.raise(IE);
        return (F80::INDEFINITE, none);
    }
    if a.is_denormal() || b.is_denormal() {
        ctx.raise(DE);
    }
    let zero_q = Some(Cond::default());
    if ca == Class::Zero {
        return (a, zero_q);
    }
    if cb == Class::Inf {
        // ST(0) unchanged (a pseudo-denormal normalized), and unlike the other unchanged
        // results no underflow for a denormal, even with UE unmasked (host behaviour).
        let r = if ca == Class::PseudoDenormal {
            F80::new(a.sign(), 1, a.signif)
        } else {
            a
        };
        return (r, zero_q);
    }
    let (x, y) = (a.unpack_finite(), b.unpack_finite());
    let d = x.exp - y.exp;
    if d >= 64 {
        let n = 32 + (d % 32) as u32;
        let r = ((x.sig as u128) << n) % y.sig as u128;
        let v = exact(ctx, x.sign, r, x.exp - 63 - n as i32);
        return (
            v,
            Some(Cond {
                c2: true,
                ..Cond::default()
            }),
        );
    }
    if d < -1 || (d == -1 && !ieee) {
        // Unchanged, but a pseudo-denormal comes back normalized.
        return (exact(ctx, x.sign, x.sig as u128, x.exp - 63), zero_q);
    }
    let (num, den, lsb) = if d >= 0 {
        ((x.sig as u128) << d, y.sig as u128, y.exp - 63)
    } else {
        (x.sig as u128, (y.sig as u128) << 1, y.exp - 64)
    };
    let mut q = num / den;
    let mut r = num % den;
    let mut sign = x.sign;
    if ieee && (2 * r > den || (2 * r == den && q & 1 != 0)) {
        q += 1;
        r = den - r;
        sign = !sign;
    }
    let v = if r == 0 {
        F80::new(x.sign, 0, 0)
    } else {
        exact(ctx, sign, r, lsb)
    };
    let cc = Cond {
        c0: q & 4 != 0,
        c3: q & 2 != 0,
        c1: q & 1 != 0,
        c2: false,
    };
    (v, Some(cc))
}

/// An exact remainder sig × 2^lsb: a tiny one raises UE and wraps when UE is unmasked.
fn exact(ctx: &mut Ctx, sign: bool, sig: u128, lsb: i32) -> F80 {
    if sig == 0 {
        return F80::new(sign, 0, 0);
    }
    round_pack_ext(ctx, sign, lsb + 127, sig, 64)
}

/// FSCALE: a × 2^trunc(b), rounded to 64 bits with the overflow/underflow responses.
pub fn fscale(ctx: &mut Ctx, a: F80, b: F80) -> F80 {
    ctx.c1_round_up = false;
    let (ca, cb) = (a.class(), b.class());
    if ca == Class::Unsupported || cb == Class::Unsupported {
        ctx.raise(IE);
        return F80::INDEFINITE;
    }
    if a.is_nan() || b.is_nan() {
        return nan2(ctx, a, b);
    }
    if cb == Class::Inf {
        if a.is_denormal() {
            ctx.raise(DE);
        }
        return match (ca, b.sign()) {
            (Class::Zero, false) | (Class::Inf, true) => {
                ctx.raise(IE);
                F80::INDEFINITE
            }
            (_, true) => F80::new(a.sign(), 0, 0),
            (_, false) => F80::INFINITY.with_sign(a.sign()),
        };
    }
    if a.is_denormal() || b.is_denormal() {
        ctx.raise(DE);
    }
    if ca == Class::Zero || ca == Class::Inf {
        return a;
    }
    let n: i32 = if cb == Class::Zero {
        0
    } else {
        let s = b.unpack_finite();
        if s.exp < 0 {
            0
        } else if s.exp > 20 {
            if s.sign {
                -(1 << 20)
            } else {
                1 << 20
            }
        } else {
            let m = (s.sig >> (63 - s.exp)) as i32;
            if s.sign {
                -m
            } else {
                m
            }
        }
    };
    let u = a.unpack_finite();
    if cb == Class::Zero {
        // Scaling by ±0 leaves a denormal as it is, without underflow (host behaviour; a
        // nonzero |b| < 1 goes through the rounding and its underflow rules); a
        // pseudo-denormal comes back in its normal encoding.
        return crate::f80::pack_ext(u.sign, u.sig as u128, u.exp - 63);
    }
    round_pack_ext(ctx, u.sign, u.exp + n, (u.sig as u128) << 64, 64)
}

/// FXTRACT: returns (exponent, significand); the caller puts the exponent in ST(0)'s place
/// and pushes the significand.
pub fn fxtract(ctx: &mut Ctx, a: F80) -> (F80, F80) {
    ctx.c1_round_up = false;
    match a.class() {
        Class::Unsupported => {
            ctx.raise(IE);
            (F80::INDEFINITE, F80::INDEFINITE)
        }
        Class::QNaN | Class::SNaN => {
            let n = crate::arith::nan1(ctx, a);
            (n, n)
        }
        Class::Zero => {
            ctx.raise(ZE);
            (F80::INFINITY.neg(), a)
        }
        Class::Inf => (F80::INFINITY, a),
        Class::Normal | Class::Denormal | Class::PseudoDenormal => {
            if a.is_denormal() {
                ctx.raise(DE);
            }
            let u = a.unpack_finite();
            let e = crate::convert::from_int(u.exp as i64);
            (e, F80::new(u.sign, 0x3FFF, u.sig))
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::f80::PE;
    use crate::host::{self, hexf, Rng, N};

    fn cc_of(sw: u16) -> Cond {
        Cond {
            c0: sw & 0x100 != 0,
            c1: sw & 0x200 != 0,
            c2: sw & 0x400 != 0,
            c3: sw & 0x4000 != 0,
        }
    }

    #[test]
    fn fprem_matches_host() {
        let mut rng = Rng(21);
        let mut bad = 0;
        for i in 0..N {
            let a = rng.f80();
            let b = if i % 2 == 0 {
                rng.f80_near(a)
            } else {
                rng.f80()
            };
            for ieee in [false, true] {
                let h = if ieee {
                    host::fprem1(0x37F, a, b, [0; 16])
                } else {
                    host::fprem(0x37F, a, b, [0; 16])
                };
                let mut c = Ctx::default();
                let (r, cc) = fprem(&mut c, a, b, ieee);
                let hcc = cc_of(h.sw);
                let ccok = match cc {
                    None => !hcc.c2,
                    Some(cc) => cc == hcc,
                };
                if r != h.st[0] || c.flags != (h.sw & 0x3F) as u8 || !ccok {
                    bad += 1;
                    eprintln!(
                        "fprem ieee={ieee} a={} b={} soft={} {:02x} {cc:?} host={} {:02x} {hcc:?}",
                        hexf(a),
                        hexf(b),
                        hexf(r),
                        c.flags,
                        hexf(h.st[0]),
                        h.sw & 0x3F
                    );
                }
            }
            if bad > 12 {
                break;
            }
        }
        assert_eq!(bad, 0);
    }

    #[test]
    fn fscale_matches_host() {
        let mut rng = Rng(22);
        let mut bad = 0;
        for i in 0..N {
            let a = rng.f80();
            let b = if i % 2 == 0 {
                crate::convert::from_int(rng.next() as i64 >> (48 + rng.below(16)))
            } else {
                rng.f80()
            };
            let cw = rng.cw_post();
            let h = host::fscale(cw, a, b, [0; 16]);
            let mut c = Ctx::from_control_word(cw);
            let r = fscale(&mut c, a, b);
            let c1 = c.c1_round_up && c.flags & PE != 0;
            if r != h.st[0] || c.flags != (h.sw & 0x3F) as u8 || c1 != (h.sw & 0x200 != 0) {
                bad += 1;
                eprintln!(
                    "fscale cw={cw:04x} a={} b={} soft={} {:02x} host={} {:04x}",
                    hexf(a),
                    hexf(b),
                    hexf(r),
                    c.flags,
                    hexf(h.st[0]),
                    h.sw
                );
            }
            if bad > 12 {
                break;
            }
        }
        assert_eq!(bad, 0);
    }

    #[test]
    fn fxtract_matches_host() {
        let mut rng = Rng(23);
        for _ in 0..N {
            let a = rng.f80();
            let h = host::fxtract(0x37F, a, F80::ZERO, [0; 16]);
            let mut c = Ctx::default();
            let (e, s) = fxtract(&mut c, a);
            assert_eq!(
                (s, e, c.flags),
                (h.st[0], h.st[1], (h.sw & 0x3F) as u8),
                "fxtract {}",
                hexf(a)
            );
        }
    }
}
