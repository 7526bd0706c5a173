//! The 80-bit double extended-precision format, the rounding context and the one rounding
//! routine every operation ends in.
//!
//! Follows the Intel SDM Vol. 1 §4.2.2 (formats), §4.8 (real numbers and encodings, table 4-3
//! and 8-3 for the unsupported encodings), §4.9 (exceptions, masked responses), §8.1.5
//! (precision and rounding control) and IEEE 754-2008 §4, §7 (rounding, tininess after
//! rounding, inexact). No host floating point is used anywhere.

/// Invalid operation (status word bit 0).
pub const IE: u8 = 0x01;
/// Denormal operand (status word bit 1).
pub const DE: u8 = 0x02;
/// Zero divide (status word bit 2).
pub const ZE: u8 = 0x04;
/// Overflow (status word bit 3).
pub const OE: u8 = 0x08;
/// Underflow (status word bit 4).
pub const UE: u8 = 0x10;
/// Precision / inexact (status word bit 5).
pub const PE: u8 = 0x20;
/// All six exception bits.
pub const ALL_EXC: u8 = 0x3F;

/// Exponent bias of the extended format.
pub const BIAS: i32 = 16383;
/// Biased-exponent adjustment applied on unmasked overflow/underflow (SDM Vol. 1 §8.5.4/5).
pub const WRAP_ADJUST: i32 = 24576;

/// An 80-bit extended-precision value exactly as stored: explicit integer bit in `signif`
/// bit 63, `se` = sign << 15 | biased exponent.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct F80 {
    /// Significand with the explicit integer bit (bit 63).
    pub signif: u64,
    /// Sign (bit 15) and biased exponent (bits 14..0).
    pub se: u16,
}

/// Encoding classes (SDM Vol. 1 table 8-3, and §8.2.2 for the unsupported ones).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Class {
    /// ±0.
    Zero,
    /// Exponent 0, integer bit 0, fraction nonzero.
    Denormal,
    /// Exponent 0, integer bit 1 (valid operand on 387+, raises DE).
    PseudoDenormal,
    /// Exponent 1..=0x7FFE with the integer bit set.
    Normal,
    /// ±∞.
    Inf,
    /// Quiet NaN (integer bit and bit 62 set).
    QNaN,
    /// Signaling NaN (integer bit set, bit 62 clear, fraction nonzero).
    SNaN,
    /// Pseudo-NaN, pseudo-infinity, unnormal: invalid operands on the 387 and later.
    Unsupported,
}

impl F80 {
    /// +0.0
    pub const ZERO: F80 = F80 { signif: 0, se: 0 };
    /// +1.0
    pub const ONE: F80 = F80 {
        signif: 1 << 63,
        se: 0x3FFF,
    };
    /// +∞
    pub const INFINITY: F80 = F80 {
        signif: 1 << 63,
        se: 0x7FFF,
    };
    /// The QNaN floating-point indefinite (SDM Vol. 1 table 4-3).
    pub const INDEFINITE: F80 = F80 {
        signif: 0xC000_0000_0000_0000,
        se: 0xFFFF,
    };

    /// Builds a value from its fields.
    pub const fn new(sign: bool, biased_exp: u16, signif: u64) -> F80 {
        F80 {
            signif,
            se: ((sign as u16) << 15) | (biased_exp & 0x7FFF),
        }
    }

    /// The memory image (little-endian significand, then sign/exponent).
    pub fn to_bytes(self) -> [u8; 10] {
        let mut b = [0u8; 10];
        b[..8].copy_from_slice(&self.signif.to_le_bytes());
        b[8..].copy_from_slice(&self.se.to_le_bytes());
        b
    }

    /// Reads the memory image.
    pub fn from_bytes(b: [u8; 10]) -> F80 {
        let mut s = [0u8; 8];
        s.copy_from_slice(&b[..8]);
        F80 {
            signif: u64::from_le_bytes(s),
            se: u16::from_le_bytes([b[8], b[9]]),
        }
    }

    /// Sign bit.
    pub const fn sign(self) -> bool {
        self.se & 0x8000 != 0
    }

    /// Biased exponent.
    pub const fn exp(self) -> u16 {
        self.se & 0x7FFF
    }

    /// A normal or denormal (nonzero finite) value.
    pub fn is_normal_finite(self) -> bool {
        matches!(
            self.class(),
            Class::Normal | Class::Denormal | Class::PseudoDenormal
        )
    }

    /// Same value with the sign flipped.
    pub const fn neg(self) -> F80 {
        F80 {
            signif: self.signif,
            se: self.se ^ 0x8000,
        }
    }

    /// Same value with the sign cleared.
    pub const fn abs(self) -> F80 {
        F80 {
            signif: self.signif,
            se: self.se & 0x7FFF,
        }
    }

    /// Same value with the given sign.
    pub const fn with_sign(self, sign: bool) -> F80 {
        F80 {
            signif: self.signif,
            se: (self.se & 0x7FFF) | ((sign as u16) << 15),
        }
    }

    /// The encoding class.
    pub fn class(self) -> Class {
        let e = self.exp();
        let j = self.signif >> 63 != 0;
        match e {
            0 if self.signif == 0 => Class::Zero,
            0 if j => Class::PseudoDenormal,
            0 => Class::Denormal,
            0x7FFF if !j => Class::Unsupported,
            0x7FFF if self.signif << 1 == 0 => Class::Inf,
            0x7FFF if self.signif & (1 << 62) != 0 => Class::QNaN,
            0x7FFF => Class::SNaN,
            _ if !j => Class::Unsupported,
            _ => Class::Normal,
        }
    }

    /// NaN of either kind (not the pseudo-NaNs).
    pub fn is_nan(self) -> bool {
        matches!(self.class(), Class::QNaN | Class::SNaN)
    }

    /// Signaling NaN.
    pub fn is_snan(self) -> bool {
        self.class() == Class::SNaN
    }

    /// ±0.
    pub fn is_zero(self) -> bool {
        self.class() == Class::Zero
    }

    /// ±∞.
    pub fn is_inf(self) -> bool {
        self.class() == Class::Inf
    }

    /// Denormal or pseudo-denormal.
    pub fn is_denormal(self) -> bool {
        matches!(self.class(), Class::Denormal | Class::PseudoDenormal)
    }

    /// Invalid encodings on the 387 and later.
    pub fn is_unsupported(self) -> bool {
        self.class() == Class::Unsupported
    }

    /// The NaN with its quiet bit set.
    pub const fn quieted(self) -> F80 {
        F80 {
            signif: self.signif | (1 << 62),
            se: self.se,
        }
    }

    /// Finite nonzero value as (sign, unbiased exponent of bit 63, normalized significand).
    pub(crate) fn unpack_finite(self) -> Unpacked {
        let sign = self.sign();
        let mut e = self.exp() as i32 - BIAS;
        if self.exp() == 0 {
            e = 1 - BIAS;
        }
        let lz = self.signif.leading_zeros();
        Unpacked {
            sign,
            exp: e - lz as i32,
            sig: self.signif << lz,
        }
    }
}

/// A finite nonzero value: sig (bit 63 set) × 2^(exp − 63).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Unpacked {
    pub sign: bool,
    pub exp: i32,
    pub sig: u64,
}

/// Rounding control (control word bits 11..10).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Rounding {
    /// Round to nearest, ties to even.
    NearestEven = 0,
    /// Toward −∞.
    Down = 1,
    /// Toward +∞.
    Up = 2,
    /// Toward zero.
    Zero = 3,
}

/// Precision control (control word bits 9..8).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Precision {
    /// Single (24-bit significand).
    P24,
    /// Double (53-bit significand).
    P53,
    /// Double extended (64-bit significand).
    P64,
}

impl Precision {
    /// Significand bits.
    pub const fn bits(self) -> u32 {
        match self {
            Precision::P24 => 24,
            Precision::P53 => 53,
            Precision::P64 => 64,
        }
    }
}

/// Rounding context of one operation: the modes in, the sticky flags and C1 out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ctx {
    /// Rounding control.
    pub rc: Rounding,
    /// Precision control, applied by add/sub/mul/div/sqrt only.
    pub pc: Precision,
    /// Raised exception flags (IE, DE, ZE, OE, UE, PE bit positions of the status word).
    pub flags: u8,
    /// Set when the last rounding increased the magnitude (becomes C1).
    pub c1_round_up: bool,
    /// Exception masks (control word bits 5..0); an unmasked OE/UE makes register results
    /// carry the wrapped exponent instead of the masked response.
    pub masks: u8,
}

impl Default for Ctx {
    fn default() -> Ctx {
        Ctx::new(Rounding::NearestEven, Precision::P64)
    }
}

impl Ctx {
    /// All exceptions masked, given modes.
    pub const fn new(rc: Rounding, pc: Precision) -> Ctx {
        Ctx {
            rc,
            pc,
            flags: 0,
            c1_round_up: false,
            masks: ALL_EXC,
        }
    }

    /// Modes and masks from an x87 control word (PC = 01, reserved, acts as 64 bits here).
    pub fn from_control_word(cw: u16) -> Ctx {
        let rc = match (cw >> 10) & 3 {
            0 => Rounding::NearestEven,
            1 => Rounding::Down,
            2 => Rounding::Up,
            _ => Rounding::Zero,
        };
        let pc = match (cw >> 8) & 3 {
            0 => Precision::P24,
            2 => Precision::P53,
            _ => Precision::P64,
        };
        Ctx {
            rc,
            pc,
            flags: 0,
            c1_round_up: false,
            masks: (cw & 0x3F) as u8,
        }
    }

    /// Raises flags.
    pub fn raise(&mut self, f: u8) {
        self.flags |= f;
    }

    pub(crate) fn unmasked(&self, f: u8) -> bool {
        f & !self.masks != 0
    }
}

/// Shift right, OR-ing every bit shifted out into bit 0.
pub(crate) fn shr_jam(x: u128, n: u32) -> u128 {
    if n == 0 {
        x
    } else if n >= 128 {
        (x != 0) as u128
    } else {
        (x >> n) | ((x & ((1u128 << n) - 1)) != 0) as u128
    }
}

/// A destination format for rounding.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Format {
    /// Significand bits kept by rounding.
    pub prec: u32,
    /// Smallest normal unbiased exponent.
    pub emin: i32,
    /// Largest unbiased exponent.
    pub emax: i32,
    /// Exponent of the least significant bit of denormals.
    pub denorm_lsb: i32,
}

impl Format {
    pub(crate) const fn ext(prec: u32) -> Format {
        Format {
            prec,
            emin: 1 - BIAS,
            emax: BIAS,
            denorm_lsb: 2 - BIAS - prec as i32,
        }
    }
    pub(crate) const F32: Format = Format {
        prec: 24,
        emin: -126,
        emax: 127,
        denorm_lsb: -149,
    };
    pub(crate) const F64: Format = Format {
        prec: 53,
        emin: -1022,
        emax: 1023,
        denorm_lsb: -1074,
    };
}

/// Result of rounding a nonzero value to a format.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Rounded {
    /// value = sig × 2^lsb (sig < 2^(prec+1)); `tiny` as detected after rounding.
    Finite { sig: u128, lsb: i32 },
    /// Too large: the rounded value (unbounded exponent) is sig × 2^lsb.
    Overflow { sig: u128, lsb: i32 },
    /// Tiny (after rounding with unbounded exponent), the unbounded-exponent rounding result
    /// and the denormalized result.
    Tiny {
        wrap_sig: u128,
        wrap_lsb: i32,
        sig: u128,
        lsb: i32,
    },
}

/// Rounds sig × 2^lsb keeping the bits from `lsb_new` upward. Returns (kept, inexact,
/// incremented).
fn round_at(rc: Rounding, sign: bool, sig: u128, lsb: i32, lsb_new: i32) -> (u128, bool, bool) {
    let drop = lsb_new - lsb;
    if drop <= 0 {
        // Never happens for the callers' normalized inputs; keep it total anyway.
        return (sig, false, false);
    }
    let drop = drop as u32;
    let (kept, rem_hi, rem_lo) = if drop > 128 {
        (0u128, false, sig != 0) // below half
    } else if drop == 128 {
        (0, sig >> 127 != 0, sig << 1 != 0)
    } else {
        let kept = sig >> drop;
        let rem = sig & ((1u128 << drop) - 1);
        let half = 1u128 << (drop - 1);
        (kept, rem & half != 0, rem & (half - 1) != 0)
    };
    let inexact = rem_hi || rem_lo;
    let inc = match rc {
        Rounding::NearestEven => rem_hi && (rem_lo || kept & 1 != 0),
        Rounding::Zero => false,
        Rounding::Up => !sign && inexact,
        Rounding::Down => sign && inexact,
    };
    (kept + inc as u128, inexact, inc)
}

fn bitlen(x: u128) -> i32 {
    128 - x.leading_zeros() as i32
}

/// Rounds the nonzero value sig × 2^(exp − 127) into `fmt`, raising PE/UE/OE (with the
/// masked or unmasked rule of `ctx.masks` for UE) and setting C1.
pub(crate) fn round_value(ctx: &mut Ctx, sign: bool, exp: i32, sig: u128, fmt: Format) -> Rounded {
    // Normalize to bit 127.
    let lz = sig.leading_zeros();
    let sig = sig << lz;
    let exp = exp - lz as i32;
    let lsb = exp - 127;
    let lsb_prec = exp - (fmt.prec as i32 - 1);
    let (k, inexact, inc) = round_at(ctx.rc, sign, sig, lsb, lsb_prec);
    let top = lsb_prec + bitlen(k) - 1;
    if top > fmt.emax {
        ctx.raise(OE);
        if inexact {
            ctx.raise(PE);
        }
        ctx.c1_round_up = inc;
        return Rounded::Overflow {
            sig: k,
            lsb: lsb_prec,
        };
    }
    if top >= fmt.emin {
        if inexact {
            ctx.raise(PE);
        }
        ctx.c1_round_up = inc;
        return Rounded::Finite {
            sig: k,
            lsb: lsb_prec,
        };
    }
    // Tiny after rounding: denormalize from the exact value.
    let lsb_den = lsb_prec.max(fmt.denorm_lsb);
    let (kd, inexact_d, inc_d) = round_at(ctx.rc, sign, sig, lsb, lsb_den);
    if ctx.unmasked(UE) {
        ctx.raise(UE);
        if inexact {
            ctx.raise(PE);
        }
        ctx.c1_round_up = inc;
    } else {
        if inexact_d {
            ctx.raise(UE | PE);
        }
        ctx.c1_round_up = inc_d;
    }
    Rounded::Tiny {
        wrap_sig: k,
        wrap_lsb: lsb_prec,
        sig: kd,
        lsb: lsb_den,
    }
}

/// Packs sig × 2^lsb (finite, in range for the extended format) into an F80.
pub(crate) fn pack_ext(sign: bool, sig: u128, lsb: i32) -> F80 {
    if sig == 0 {
        return F80::new(sign, 0, 0);
    }
    let n = bitlen(sig);
    let top = lsb + n - 1;
    if top >= 1 - BIAS {
        let s = if n > 64 {
            (sig >> (n - 64)) as u64
        } else {
            (sig << (64 - n)) as u64
        };
        F80::new(sign, (top + BIAS) as u16, s)
    } else {
        let sh = lsb - (1 - BIAS - 63);
        let s = if sh >= 0 {
            (sig << sh as u32) as u64
        } else {
            (sig >> (-sh) as u32) as u64
        };
        F80::new(sign, 0, s)
    }
}

/// Largest finite value with `prec` significand bits.
pub(crate) fn max_finite_ext(sign: bool, prec: u32) -> F80 {
    F80::new(sign, 0x7FFE, u64::MAX << (64 - prec))
}

/// Whether the masked overflow response is ∞ (else the largest finite).
pub(crate) fn overflow_to_inf(rc: Rounding, sign: bool) -> bool {
    match rc {
        Rounding::NearestEven => true,
        Rounding::Zero => false,
        Rounding::Up => !sign,
        Rounding::Down => sign,
    }
}

/// Rounds sig × 2^(exp − 127) to an extended-format register result at `prec` bits, with
/// the masked responses, or the wrapped exponent when OE/UE is unmasked.
pub(crate) fn round_pack_ext(ctx: &mut Ctx, sign: bool, exp: i32, sig: u128, prec: u32) -> F80 {
    if sig == 0 {
        return F80::new(sign, 0, 0);
    }
    match round_value(ctx, sign, exp, sig, Format::ext(prec)) {
        Rounded::Finite { sig, lsb } => pack_ext(sign, sig, lsb),
        Rounded::Overflow { sig, lsb } => {
            if ctx.unmasked(OE) {
                let v = pack_wrapped(sign, sig, lsb, -WRAP_ADJUST);
                if let Some(v) = v {
                    return v;
                }
            }
            ctx.raise(PE);
            // Beyond even the wrapped range, an unmasked overflow delivers ∞ (host
            // behaviour).
            if ctx.unmasked(OE) || overflow_to_inf(ctx.rc, sign) {
                ctx.c1_round_up = true;
                F80::INFINITY.with_sign(sign)
            } else {
                ctx.c1_round_up = false;
                max_finite_ext(sign, prec)
            }
        }
        Rounded::Tiny {
            wrap_sig,
            wrap_lsb,
            sig,
            lsb,
            ..
        } => {
            if ctx.unmasked(UE) {
                if let Some(v) = pack_wrapped(sign, wrap_sig, wrap_lsb, WRAP_ADJUST) {
                    return v;
                }
                // Beyond the wrapped range: ±0, inexact (host behaviour).
                ctx.raise(PE);
                ctx.c1_round_up = false;
                return F80::new(sign, 0, 0);
            }
            pack_ext(sign, sig, lsb)
        }
    }
}

/// sig × 2^(lsb + adjust) as a normal F80 if the adjusted exponent is in range.
fn pack_wrapped(sign: bool, sig: u128, lsb: i32, adjust: i32) -> Option<F80> {
    let n = bitlen(sig);
    let top = lsb + n - 1 + adjust;
    if !(1 - BIAS..=BIAS).contains(&top) {
        return None;
    }
    Some(pack_ext(sign, sig, lsb + adjust))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip() {
        let v = F80::new(true, 0x3FFF, 0x8000_0000_0000_0001);
        assert_eq!(F80::from_bytes(v.to_bytes()), v);
        assert_eq!(v.to_bytes()[9], 0xBF);
    }

    #[test]
    fn classes() {
        assert_eq!(F80::ZERO.class(), Class::Zero);
        assert_eq!(F80::new(false, 0, 1).class(), Class::Denormal);
        assert_eq!(F80::new(false, 0, 1 << 63).class(), Class::PseudoDenormal);
        assert_eq!(F80::new(false, 5, 1 << 62).class(), Class::Unsupported);
        assert_eq!(F80::new(false, 0x7FFF, 0).class(), Class::Unsupported);
        assert_eq!(F80::new(false, 0x7FFF, 1 << 62).class(), Class::Unsupported);
        assert_eq!(F80::INFINITY.class(), Class::Inf);
        assert_eq!(F80::INDEFINITE.class(), Class::QNaN);
        assert_eq!(F80::new(false, 0x7FFF, (1 << 63) | 1).class(), Class::SNaN);
    }
}
