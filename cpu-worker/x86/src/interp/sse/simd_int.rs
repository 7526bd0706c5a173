//! Packed-integer and bitwise operations of MMX, SSE, SSE2 and SSSE3 on
//! 64-bit (MMX register) and 128-bit (XMM register) vectors: arithmetic
//! with wrap-around and saturation, compares, multiplies, averages, sums of
//! absolute differences, shifts, packs, unpacks, shuffles and the SSSE3
//! horizontal, sign and byte-shuffle operations (SDM vol. 1 §9.4, §10.4,
//! §11.4, §12.9; vol. 2 instruction pages).
//!
//! These never raise SIMD floating-point exceptions and have no rounding,
//! so they are computed here in plain integer code. Vectors are 16 bytes
//! little-endian; for MMX operands `len` is 8 and only the low 8 bytes of
//! the inputs and the result count.

use iced_x86::Mnemonic;

/// A vector register's contents, little-endian.
pub type V = [u8; 16];

/// Lane `i` of `size` bytes of `v`, zero-extended.
#[inline]
fn lane(v: &V, size: usize, i: usize) -> u64 {
    let mut x = 0u64;
    for k in 0..size {
        x |= (v[i * size + k] as u64) << (8 * k);
    }
    x
}

#[inline]
fn set_lane(v: &mut V, size: usize, i: usize, x: u64) {
    for k in 0..size {
        v[i * size + k] = (x >> (8 * k)) as u8;
    }
}

/// `x` (the low `size` bytes) sign-extended.
#[inline]
fn sx(x: u64, size: usize) -> i64 {
    let sh = 64 - 8 * size as u32;
    ((x << sh) as i64) >> sh
}

/// `v` saturated to a signed integer of `size` bytes.
#[inline]
fn sat_s(v: i64, size: usize) -> u64 {
    let bits = 8 * size as u32;
    let max = (1i64 << (bits - 1)) - 1;
    let min = -(1i64 << (bits - 1));
    v.clamp(min, max) as u64
}

/// `v` saturated to an unsigned integer of `size` bytes.
#[inline]
fn sat_u(v: i64, size: usize) -> u64 {
    let max = (1i64 << (8 * size as u32)) - 1;
    v.clamp(0, max) as u64
}

/// Applies `f` to each pair of `size`-byte lanes of `a` and `b`.
fn map2(a: &V, b: &V, len: usize, size: usize, f: impl Fn(u64, u64) -> u64) -> V {
    let mut r = [0u8; 16];
    for i in 0..len / size {
        set_lane(&mut r, size, i, f(lane(a, size, i), lane(b, size, i)));
    }
    r
}

/// Whether `binary` implements `m`.
pub fn is_binary(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Paddb
            | Paddw
            | Paddd
            | Paddq
            | Psubb
            | Psubw
            | Psubd
            | Psubq
            | Paddsb
            | Paddsw
            | Psubsb
            | Psubsw
            | Paddusb
            | Paddusw
            | Psubusb
            | Psubusw
            | Pand
            | Andps
            | Andpd
            | Pandn
            | Andnps
            | Andnpd
            | Por
            | Orps
            | Orpd
            | Pxor
            | Xorps
            | Xorpd
            | Pcmpeqb
            | Pcmpeqw
            | Pcmpeqd
            | Pcmpgtb
            | Pcmpgtw
            | Pcmpgtd
            | Pmullw
            | Pmulhw
            | Pmulhuw
            | Pmuludq
            | Pmaddwd
            | Pmaddubsw
            | Pmulhrsw
            | Pavgb
            | Pavgw
            | Pmaxsw
            | Pminsw
            | Pmaxub
            | Pminub
            | Psadbw
            | Psignb
            | Psignw
            | Psignd
            | Pabsb
            | Pabsw
            | Pabsd
            | Pshufb
            | Phaddw
            | Phaddd
            | Phaddsw
            | Phsubw
            | Phsubd
            | Phsubsw
            | Packsswb
            | Packssdw
            | Packuswb
            | Punpcklbw
            | Punpcklwd
            | Punpckldq
            | Punpcklqdq
            | Unpcklps
            | Unpcklpd
            | Punpckhbw
            | Punpckhwd
            | Punpckhdq
            | Punpckhqdq
            | Unpckhps
            | Unpckhpd
    )
}

/// The signed-saturating, unsigned-saturating and wrapping additions and
/// subtractions, compares, and the like: `dst = op(dst, src)` lane-wise.
/// Returns `None` for a mnemonic that is not a two-operand packed-integer
/// or bitwise operation.
pub fn binary(m: Mnemonic, a: &V, b: &V, len: usize) -> Option<V> {
    use Mnemonic::*;
    let s = |x: u64, n: usize| sx(x, n);
    Some(match m {
        Paddb => map2(a, b, len, 1, |x, y| x.wrapping_add(y)),
        Paddw => map2(a, b, len, 2, |x, y| x.wrapping_add(y)),
        Paddd => map2(a, b, len, 4, |x, y| x.wrapping_add(y)),
        Paddq => map2(a, b, len, 8, |x, y| x.wrapping_add(y)),
        Psubb => map2(a, b, len, 1, |x, y| x.wrapping_sub(y)),
        Psubw => map2(a, b, len, 2, |x, y| x.wrapping_sub(y)),
        Psubd => map2(a, b, len, 4, |x, y| x.wrapping_sub(y)),
        Psubq => map2(a, b, len, 8, |x, y| x.wrapping_sub(y)),
        Paddsb => map2(a, b, len, 1, |x, y| sat_s(s(x, 1) + s(y, 1), 1)),
        Paddsw => map2(a, b, len, 2, |x, y| sat_s(s(x, 2) + s(y, 2), 2)),
        Psubsb => map2(a, b, len, 1, |x, y| sat_s(s(x, 1) - s(y, 1), 1)),
        Psubsw => map2(a, b, len, 2, |x, y| sat_s(s(x, 2) - s(y, 2), 2)),
        Paddusb => map2(a, b, len, 1, |x, y| sat_u((x + y) as i64, 1)),
        Paddusw => map2(a, b, len, 2, |x, y| sat_u((x + y) as i64, 2)),
        Psubusb => map2(a, b, len, 1, |x, y| sat_u(x as i64 - y as i64, 1)),
        Psubusw => map2(a, b, len, 2, |x, y| sat_u(x as i64 - y as i64, 2)),
        Pand | Andps | Andpd => map2(a, b, len, 8, |x, y| x & y),
        Pandn | Andnps | Andnpd => map2(a, b, len, 8, |x, y| !x & y),
        Por | Orps | Orpd => map2(a, b, len, 8, |x, y| x | y),
        Pxor | Xorps | Xorpd => map2(a, b, len, 8, |x, y| x ^ y),
        Pcmpeqb => map2(a, b, len, 1, |x, y| if x == y { !0 } else { 0 }),
        Pcmpeqw => map2(a, b, len, 2, |x, y| if x == y { !0 } else { 0 }),
        Pcmpeqd => map2(a, b, len, 4, |x, y| if x == y { !0 } else { 0 }),
        Pcmpgtb => map2(a, b, len, 1, |x, y| if s(x, 1) > s(y, 1) { !0 } else { 0 }),
        Pcmpgtw => map2(a, b, len, 2, |x, y| if s(x, 2) > s(y, 2) { !0 } else { 0 }),
        Pcmpgtd => map2(a, b, len, 4, |x, y| if s(x, 4) > s(y, 4) { !0 } else { 0 }),
        Pmullw => map2(a, b, len, 2, |x, y| x.wrapping_mul(y)),
        Pmulhw => map2(a, b, len, 2, |x, y| ((s(x, 2) * s(y, 2)) >> 16) as u64),
        Pmulhuw => map2(a, b, len, 2, |x, y| (x * y) >> 16),
        Pmuludq => map2(a, b, len, 8, |x, y| (x & 0xffff_ffff) * (y & 0xffff_ffff)),
        Pmaddwd => map2(a, b, len, 4, |x, y| {
            let lo = s(x, 2) * s(y, 2);
            let hi = s(x >> 16, 2) * s(y >> 16, 2);
            // 0x8000 * 0x8000 twice is 2^31, which wraps to 0x80000000.
            (lo + hi) as u64
        }),
        Pmaddubsw => map2(a, b, len, 2, |x, y| {
            let p0 = (x & 0xff) as i64 * s(y, 1);
            let p1 = ((x >> 8) & 0xff) as i64 * s(y >> 8, 1);
            sat_s(p0 + p1, 2)
        }),
        Pmulhrsw => map2(a, b, len, 2, |x, y| {
            ((((s(x, 2) * s(y, 2)) >> 14) + 1) >> 1) as u64
        }),
        Pavgb => map2(a, b, len, 1, |x, y| (x + y + 1) >> 1),
        Pavgw => map2(a, b, len, 2, |x, y| (x + y + 1) >> 1),
        Pmaxsw => map2(a, b, len, 2, |x, y| if s(x, 2) >= s(y, 2) { x } else { y }),
        Pminsw => map2(a, b, len, 2, |x, y| if s(x, 2) <= s(y, 2) { x } else { y }),
        Pmaxub => map2(a, b, len, 1, |x, y| x.max(y)),
        Pminub => map2(a, b, len, 1, |x, y| x.min(y)),
        Psadbw => map2(a, b, len, 8, |x, y| {
            (0..8)
                .map(|k| ((x >> (8 * k)) as u8).abs_diff((y >> (8 * k)) as u8) as u64)
                .sum()
        }),
        Psignb => map2(a, b, len, 1, |x, y| sign(x, y, 1)),
        Psignw => map2(a, b, len, 2, |x, y| sign(x, y, 2)),
        Psignd => map2(a, b, len, 4, |x, y| sign(x, y, 4)),
        Pabsb => map2(a, b, len, 1, |_, y| s(y, 1).unsigned_abs()),
        Pabsw => map2(a, b, len, 2, |_, y| s(y, 2).unsigned_abs()),
        Pabsd => map2(a, b, len, 4, |_, y| s(y, 4).unsigned_abs()),
        Pshufb => {
            let mut r = [0u8; 16];
            for i in 0..len {
                r[i] = if b[i] & 0x80 != 0 {
                    0
                } else {
                    a[b[i] as usize & (len - 1)]
                };
            }
            r
        }
        Phaddw => horizontal(a, b, len, 2, |x, y| x.wrapping_add(y)),
        Phaddd => horizontal(a, b, len, 4, |x, y| x.wrapping_add(y)),
        Phaddsw => horizontal(a, b, len, 2, |x, y| sat_s(s(x, 2) + s(y, 2), 2)),
        Phsubw => horizontal(a, b, len, 2, |x, y| x.wrapping_sub(y)),
        Phsubd => horizontal(a, b, len, 4, |x, y| x.wrapping_sub(y)),
        Phsubsw => horizontal(a, b, len, 2, |x, y| sat_s(s(x, 2) - s(y, 2), 2)),
        Packsswb => pack(a, b, len, 2, |x| sat_s(s(x, 2), 1)),
        Packssdw => pack(a, b, len, 4, |x| sat_s(s(x, 4), 2)),
        Packuswb => pack(a, b, len, 2, |x| sat_u(s(x, 2), 1)),
        Punpcklbw => unpack(a, b, len, 1, false),
        Punpcklwd => unpack(a, b, len, 2, false),
        Punpckldq | Unpcklps => unpack(a, b, len, 4, false),
        Punpcklqdq | Unpcklpd => unpack(a, b, len, 8, false),
        Punpckhbw => unpack(a, b, len, 1, true),
        Punpckhwd => unpack(a, b, len, 2, true),
        Punpckhdq | Unpckhps => unpack(a, b, len, 4, true),
        Punpckhqdq | Unpckhpd => unpack(a, b, len, 8, true),
        _ => return None,
    })
}

/// PSIGNB/W/D: `x` negated, zeroed or kept by the sign of `y`.
fn sign(x: u64, y: u64, size: usize) -> u64 {
    match sx(y, size) {
        v if v < 0 => x.wrapping_neg(),
        0 => 0,
        _ => x,
    }
}

/// PHADD*/PHSUB*: adjacent pairs of `a` then of `b`.
fn horizontal(a: &V, b: &V, len: usize, size: usize, f: impl Fn(u64, u64) -> u64) -> V {
    let mut r = [0u8; 16];
    let n = len / size / 2;
    for (half, v) in [a, b].into_iter().enumerate() {
        for i in 0..n {
            let x = f(lane(v, size, 2 * i), lane(v, size, 2 * i + 1));
            set_lane(&mut r, size, half * n + i, x);
        }
    }
    r
}

/// PACKSSWB/PACKSSDW/PACKUSWB: the lanes of `a` then of `b` narrowed to
/// half their `size` by `f`.
fn pack(a: &V, b: &V, len: usize, size: usize, f: impl Fn(u64) -> u64) -> V {
    let mut r = [0u8; 16];
    let n = len / size;
    for (half, v) in [a, b].into_iter().enumerate() {
        for i in 0..n {
            set_lane(&mut r, size / 2, half * n + i, f(lane(v, size, i)));
        }
    }
    r
}

/// PUNPCKL*/PUNPCKH*: the lanes of the low (high) halves of `a` and `b`
/// interleaved.
fn unpack(a: &V, b: &V, len: usize, size: usize, high: bool) -> V {
    let mut r = [0u8; 16];
    let n = len / size / 2;
    let base = if high { n } else { 0 };
    for i in 0..n {
        set_lane(&mut r, size, 2 * i, lane(a, size, base + i));
        set_lane(&mut r, size, 2 * i + 1, lane(b, size, base + i));
    }
    r
}

/// The shifts PSLLW/D/Q, PSRLW/D/Q, PSRAW/D by `count` (an immediate or
/// the low 64 bits of a register or memory operand). Counts beyond the
/// lane width clear the lanes (fill them with the sign for PSRA).
pub fn shift(m: Mnemonic, a: &V, count: u64, len: usize) -> Option<V> {
    use Mnemonic::*;
    let (size, kind) = match m {
        Psllw => (2, 0),
        Pslld => (4, 0),
        Psllq => (8, 0),
        Psrlw => (2, 1),
        Psrld => (4, 1),
        Psrlq => (8, 1),
        Psraw => (2, 2),
        Psrad => (4, 2),
        _ => return None,
    };
    let bits = 8 * size as u64;
    Some(map2(a, a, len, size, |x, _| match kind {
        0 if count < bits => x << count,
        1 if count < bits => x >> count,
        2 => (sx(x, size) >> count.min(bits - 1)) as u64,
        _ => 0,
    }))
}

/// PSLLDQ/PSRLDQ: the whole 128-bit register shifted by `count` bytes.
pub fn byte_shift(a: &V, count: u8, left: bool) -> V {
    let c = count as usize;
    let mut r = [0u8; 16];
    for (i, out) in r.iter_mut().enumerate() {
        let src = if left { i.checked_sub(c) } else { Some(i + c) };
        if let Some(j) = src.filter(|&j| j < 16) {
            *out = a[j];
        }
    }
    r
}

/// PALIGNR: the concatenation `a:b` (a high) shifted right by `imm` bytes,
/// keeping the low `len` bytes.
pub fn palignr(a: &V, b: &V, imm: u8, len: usize) -> V {
    let mut cat = [0u8; 32];
    cat[..len].copy_from_slice(&b[..len]);
    cat[len..2 * len].copy_from_slice(&a[..len]);
    let mut r = [0u8; 16];
    for (i, out) in r.iter_mut().enumerate().take(len) {
        *out = cat.get(i + imm as usize).copied().unwrap_or(0);
    }
    r
}

/// PSHUFW (`len` 8) and PSHUFD (`len` 16): lanes picked by 2-bit fields.
pub fn pshuf(src: &V, imm: u8, size: usize) -> V {
    let mut r = [0u8; 16];
    for i in 0..4 {
        let sel = (imm as usize >> (2 * i)) & 3;
        set_lane(&mut r, size, i, lane(src, size, sel));
    }
    r
}

/// PSHUFLW (`high` false) and PSHUFHW: four words of one half shuffled,
/// the other half copied.
pub fn pshuf_half(src: &V, imm: u8, high: bool) -> V {
    let mut r = *src;
    let base = if high { 4 } else { 0 };
    for i in 0..4 {
        let sel = (imm as usize >> (2 * i)) & 3;
        set_lane(&mut r, 2, base + i, lane(src, 2, base + sel));
    }
    r
}

/// SHUFPS: two dwords of `a` then two of `b`, picked by `imm`.
pub fn shufps(a: &V, b: &V, imm: u8) -> V {
    let mut r = [0u8; 16];
    for i in 0..4 {
        let sel = (imm as usize >> (2 * i)) & 3;
        let v = if i < 2 { a } else { b };
        set_lane(&mut r, 4, i, lane(v, 4, sel));
    }
    r
}

/// SHUFPD: one qword of `a` then one of `b`, picked by imm bits 0 and 1.
pub fn shufpd(a: &V, b: &V, imm: u8) -> V {
    let mut r = [0u8; 16];
    set_lane(&mut r, 8, 0, lane(a, 8, (imm & 1) as usize));
    set_lane(&mut r, 8, 1, lane(b, 8, ((imm >> 1) & 1) as usize));
    r
}

/// PMOVMSKB: the top bit of each byte.
pub fn pmovmskb(v: &V, len: usize) -> u32 {
    (0..len).fold(0, |m, i| m | (((v[i] >> 7) as u32) << i))
}

/// MOVMSKPS (`size` 4) and MOVMSKPD (`size` 8): the sign of each element.
pub fn movmsk(v: &V, size: usize) -> u32 {
    (0..16 / size).fold(0, |m, i| m | (((v[i * size + size - 1] >> 7) as u32) << i))
}

/// Word `i` of `v`.
pub fn word(v: &V, i: usize) -> u16 {
    lane(v, 2, i) as u16
}

/// `v` with word `i` replaced.
pub fn with_word(v: &V, i: usize, w: u16) -> V {
    let mut r = *v;
    set_lane(&mut r, 2, i, w as u64);
    r
}

/// The low 64 bits of `v`.
pub fn low64(v: &V) -> u64 {
    lane(v, 8, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturation_and_lanes() {
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        a[0] = 0x7f;
        b[0] = 1;
        a[1] = 0x80;
        b[1] = 0xff;
        let r = binary(Mnemonic::Paddsb, &a, &b, 8).unwrap_or_default();
        assert_eq!(&r[..2], &[0x7f, 0x80]);
        let r = binary(Mnemonic::Paddusb, &a, &b, 8).unwrap_or_default();
        assert_eq!(&r[..2], &[0x80, 0xff]);
        // pmaddwd of 0x8000 * 0x8000 twice wraps to 0x80000000.
        let v = [0x00, 0x80, 0x00, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let r = binary(Mnemonic::Pmaddwd, &v, &v, 16).unwrap_or_default();
        assert_eq!(&r[..4], &[0, 0, 0, 0x80]);
        assert_eq!(byte_shift(&v, 1, true)[2], 0x80);
        assert_eq!(byte_shift(&v, 16, false), [0; 16]);
    }
}
