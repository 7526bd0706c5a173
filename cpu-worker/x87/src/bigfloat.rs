//! A small multiprecision binary floating point (384-bit significand) used to evaluate the
//! transcendental instructions far beyond the 64 bits they are rounded to.
//!
//! Plain schoolbook arithmetic on 64-bit limbs; additions keep a sticky bit so that
//! `1 − tiny` stays below 1, which directed rounding of the final F80 needs
//! (IEEE 754-2008 §4.3). No host floating point.

use crate::f80::{round_pack_ext, Ctx, F80};

/// Limbs of the significand.
pub(crate) const L: usize = 6;

/// value = 0.m × 2^exp (m normalized: top bit of m[L−1] set), or zero when m is all zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bf {
    pub neg: bool,
    pub exp: i32,
    pub m: [u64; L],
}

impl Bf {
    pub const ZERO: Bf = Bf {
        neg: false,
        exp: 0,
        m: [0; L],
    };

    pub fn is_zero(&self) -> bool {
        self.m.iter().all(|&x| x == 0)
    }

    pub fn from_u64(v: u64) -> Bf {
        let mut b = Bf {
            neg: false,
            exp: 64,
            m: [0; L],
        };
        b.m[L - 1] = v;
        b.normalize();
        b
    }

    pub fn one() -> Bf {
        Bf::from_u64(1)
    }

    /// A finite F80 (unsupported encodings must be filtered by the caller).
    pub fn from_f80(x: F80) -> Bf {
        if x.signif == 0 {
            return Bf {
                neg: x.sign(),
                ..Bf::ZERO
            };
        }
        let u = x.unpack_finite();
        let mut b = Bf {
            neg: u.sign,
            exp: u.exp + 1,
            m: [0; L],
        };
        b.m[L - 1] = u.sig;
        b
    }

    pub fn from_limbs(neg: bool, exp: i32, m: [u64; L]) -> Bf {
        let mut b = Bf { neg, exp, m };
        b.normalize();
        b
    }

    pub fn neg(mut self) -> Bf {
        self.neg = !self.neg;
        self
    }

    pub fn abs(mut self) -> Bf {
        self.neg = false;
        self
    }

    pub fn scale(mut self, k: i32) -> Bf {
        if !self.is_zero() {
            self.exp += k;
        }
        self
    }

    fn normalize(&mut self) {
        let mut lz = 0u32;
        for i in (0..L).rev() {
            if self.m[i] == 0 {
                lz += 64;
            } else {
                lz += self.m[i].leading_zeros();
                break;
            }
        }
        if lz as usize >= 64 * L {
            self.m = [0; L];
            self.exp = 0;
            return;
        }
        shl(&mut self.m, lz);
        self.exp -= lz as i32;
    }

    /// Rounds to an extended-precision value (64-bit significand); the value is treated as
    /// inexact (the callers handle exact cases before).
    pub fn to_f80(self, ctx: &mut Ctx) -> F80 {
        if self.is_zero() {
            return F80::new(self.neg, 0, 0);
        }
        let sig = ((self.m[L - 1] as u128) << 64) | self.m[L - 2] as u128 | 1;
        round_pack_ext(ctx, self.neg, self.exp - 1, sig, 64)
    }

    pub fn add(&self, o: &Bf) -> Bf {
        if self.is_zero() {
            return *o;
        }
        if o.is_zero() {
            return *self;
        }
        // a: larger magnitude.
        let (a, b) = if cmp_mag(self, o) == core::cmp::Ordering::Less {
            (o, self)
        } else {
            (self, o)
        };
        let d = (a.exp - b.exp) as u32;
        // One extra low limb for guard bits.
        let mut am = [0u64; L + 1];
        let mut bm = [0u64; L + 1];
        am[1..].copy_from_slice(&a.m);
        bm[1..].copy_from_slice(&b.m);
        shr_jam(&mut bm, d);
        let mut r = Bf {
            neg: a.neg,
            exp: a.exp,
            m: [0; L],
        };
        let mut wide = [0u64; L + 1];
        if a.neg == b.neg {
            let carry = add_into(&mut wide, &am, &bm);
            if carry {
                shr_jam(&mut wide, 1);
                wide[L] |= 1 << 63;
                r.exp += 1;
            }
        } else {
            sub_into(&mut wide, &am, &bm);
        }
        // Normalize the wide value, then fold the guard limb into a sticky bit.
        let mut lz = 0u32;
        for i in (0..=L).rev() {
            if wide[i] == 0 {
                lz += 64;
            } else {
                lz += wide[i].leading_zeros();
                break;
            }
        }
        if lz as usize >= 64 * (L + 1) {
            return Bf::ZERO;
        }
        shl(&mut wide, lz);
        r.exp -= lz as i32;
        r.m.copy_from_slice(&wide[1..]);
        if wide[0] != 0 {
            r.m[0] |= 1;
        }
        r
    }

    pub fn sub(&self, o: &Bf) -> Bf {
        self.add(&o.neg())
    }

    pub fn mul(&self, o: &Bf) -> Bf {
        if self.is_zero() || o.is_zero() {
            return Bf {
                neg: self.neg != o.neg,
                ..Bf::ZERO
            };
        }
        let mut p = [0u64; 2 * L];
        for i in 0..L {
            let mut carry = 0u128;
            for j in 0..L {
                let t = self.m[i] as u128 * o.m[j] as u128 + p[i + j] as u128 + carry;
                p[i + j] = t as u64;
                carry = t >> 64;
            }
            p[i + L] = carry as u64;
        }
        let mut exp = self.exp + o.exp;
        if p[2 * L - 1] >> 63 == 0 {
            shl(&mut p, 1);
            exp -= 1;
        }
        let mut m = [0u64; L];
        m.copy_from_slice(&p[L..]);
        if p[..L].iter().any(|&x| x != 0) {
            m[0] |= 1;
        }
        Bf {
            neg: self.neg != o.neg,
            exp,
            m,
        }
    }

    pub fn mul_small(&self, k: u64) -> Bf {
        self.mul(&Bf::from_u64(k))
    }

    pub fn div_small(&self, k: u64) -> Bf {
        if k == 0 || self.is_zero() {
            return *self;
        }
        let mut q = [0u64; L + 1];
        let mut rem = 0u128;
        let src: [u64; L + 1] = {
            let mut s = [0u64; L + 1];
            s[1..].copy_from_slice(&self.m);
            s
        };
        for i in (0..=L).rev() {
            let cur = (rem << 64) | src[i] as u128;
            q[i] = (cur / k as u128) as u64;
            rem = cur % k as u128;
        }
        let mut b = Bf {
            neg: self.neg,
            exp: self.exp,
            m: [0; L],
        };
        let mut lz = 0u32;
        for i in (0..=L).rev() {
            if q[i] == 0 {
                lz += 64;
            } else {
                lz += q[i].leading_zeros();
                break;
            }
        }
        shl(&mut q, lz);
        b.exp -= lz as i32;
        b.m.copy_from_slice(&q[1..]);
        if q[0] != 0 || rem != 0 {
            b.m[0] |= 1;
        }
        b
    }

    /// Division by restoring long division, one bit at a time.
    pub fn div(&self, o: &Bf) -> Bf {
        if self.is_zero() || o.is_zero() {
            return Bf {
                neg: self.neg != o.neg,
                ..Bf::ZERO
            };
        }
        let mut rem = [0u64; L + 1];
        rem[..L].copy_from_slice(&self.m);
        let mut den = [0u64; L + 1];
        den[..L].copy_from_slice(&o.m);
        let mut q = [0u64; L];
        let mut exp = self.exp - o.exp + 1;
        // Start with rem < 2·den.
        for bit in (0..64 * L).rev() {
            if ge(&rem, &den) {
                let r = rem;
                sub_into(&mut rem, &r, &den);
                q[bit / 64] |= 1 << (bit % 64);
            }
            shl(&mut rem, 1);
        }
        if q[L - 1] >> 63 == 0 {
            // rem at start was < den: the quotient lacks its top bit; one more step.
            shl(&mut q, 1);
            if ge(&rem, &den) {
                let r = rem;
                sub_into(&mut rem, &r, &den);
                q[0] |= 1;
            }
            shl(&mut rem, 1);
            exp -= 1;
        }
        if rem.iter().any(|&x| x != 0) {
            q[0] |= 1;
        }
        Bf {
            neg: self.neg != o.neg,
            exp,
            m: q,
        }
    }
}

fn cmp_mag(a: &Bf, b: &Bf) -> core::cmp::Ordering {
    if a.is_zero() || b.is_zero() {
        return (!a.is_zero()).cmp(&!b.is_zero());
    }
    a.exp.cmp(&b.exp).then_with(|| {
        for i in (0..L).rev() {
            match a.m[i].cmp(&b.m[i]) {
                core::cmp::Ordering::Equal => continue,
                o => return o,
            }
        }
        core::cmp::Ordering::Equal
    })
}

pub(crate) fn shl(x: &mut [u64], n: u32) {
    let len = x.len();
    let words = (n / 64) as usize;
    let bits = n % 64;
    if words >= len {
        x.fill(0);
        return;
    }
    for i in (0..len).rev() {
        let src = i as isize - words as isize;
        let hi = if src >= 0 { x[src as usize] } else { 0 };
        let lo = if src >= 1 { x[src as usize - 1] } else { 0 };
        x[i] = if bits == 0 {
            hi
        } else {
            (hi << bits) | (lo >> (64 - bits))
        };
    }
}

/// Shift right, OR-ing lost bits into bit 0.
pub(crate) fn shr_jam(x: &mut [u64], n: u32) {
    let len = x.len();
    if n == 0 {
        return;
    }
    let any = x.iter().any(|&w| w != 0);
    let words = (n / 64) as usize;
    let bits = n % 64;
    if words >= len {
        x.fill(0);
        x[0] = any as u64;
        return;
    }
    let mut lost = x[..words].iter().any(|&w| w != 0);
    if bits != 0 {
        lost |= x[words] & ((1u64 << bits) - 1) != 0;
    }
    for i in 0..len {
        let s = i + words;
        let lo = if s < len { x[s] } else { 0 };
        let hi = if s + 1 < len { x[s + 1] } else { 0 };
        x[i] = if bits == 0 {
            lo
        } else {
            (lo >> bits) | (hi << (64 - bits))
        };
    }
    x[0] |= lost as u64;
}

fn add_into(out: &mut [u64], a: &[u64], b: &[u64]) -> bool {
    let mut carry = false;
    for i in 0..out.len() {
        let (s1, c1) = a[i].overflowing_add(b[i]);
        let (s2, c2) = s1.overflowing_add(carry as u64);
        out[i] = s2;
        carry = c1 || c2;
    }
    carry
}

fn sub_into(out: &mut [u64], a: &[u64], b: &[u64]) {
    let mut borrow = false;
    for i in 0..out.len() {
        let (s1, b1) = a[i].overflowing_sub(b[i]);
        let (s2, b2) = s1.overflowing_sub(borrow as u64);
        out[i] = s2;
        borrow = b1 || b2;
    }
}

fn ge(a: &[u64], b: &[u64]) -> bool {
    for i in (0..a.len()).rev() {
        if a[i] != b[i] {
            return a[i] > b[i];
        }
    }
    true
}
