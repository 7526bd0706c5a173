//! Size parsing (`64k`, `1.5G`, `100G`) and QEMU's human size printing
//! (`0.977 MiB`: three significant digits, binary units).

use crate::error::{Error, Result};

/// Parses a size with an optional suffix `b k K M G T P E` (binary
/// multiples; `b`/`B` means bytes). A fractional number is allowed with a
/// suffix (`1.5G`). Rejects negative numbers and values of 2^63 and above,
/// as qemu-img does for image sizes.
pub fn parse_size(s: &str) -> Result<u64> {
    let bad = || Error::invalid(format!("Invalid size '{s}'"));
    let s = s.trim();
    if s.is_empty() || s.starts_with('-') || s.starts_with('+') {
        return Err(bad());
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() {
        return Err(bad());
    }
    let shift = match suffix {
        "" | "b" | "B" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        "t" | "T" => 40,
        "p" | "P" => 50,
        "e" | "E" => 60,
        _ => return Err(bad()),
    };
    if let Some((int, frac)) = num.split_once('.') {
        if frac.contains('.') || (int.is_empty() && frac.is_empty()) {
            return Err(bad());
        }
        let v: f64 = num.parse().map_err(|_| bad())?;
        let bytes = v * (1u64 << shift) as f64;
        if !bytes.is_finite() || bytes >= 18446744073709551616.0 {
            return Err(bad());
        }
        return Ok(bytes as u64);
    }
    let v: u64 = num.parse().map_err(|_| bad())?;
    v.checked_mul(1u64 << shift).ok_or_else(bad)
}

/// Formats a byte count the way QEMU's `size_to_str` does: the unit is the
/// power of 1024 that keeps the number below 1000, printed with `%0.3g`.
pub fn size_to_str(val: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let scaled = val as f64 * 1.024;
    let exp = if scaled < 1.0 {
        0
    } else {
        // frexp exponent: the e with 2^(e-1) <= x < 2^e.
        scaled.log2().floor() as i64 + 1
    };
    let idx = (((exp - 1).max(0)) / 10).min(6) as usize;
    let div = (1u64 << (idx * 10)) as f64;
    format!("{} {}", fmt_g3(val as f64 / div), UNITS[idx])
}

/// C's `%0.3g`.
pub fn fmt_g3(v: f64) -> String {
    fmt_g(v, 3)
}

/// C's `%.<prec>g` for finite non-negative or negative values.
pub fn fmt_g(v: f64, prec: usize) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    let prec = prec.max(1);
    let e = format!("{:.*e}", prec - 1, v);
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= prec as i32 {
        let mant = strip_zeros(mant);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (prec as i32 - 1 - exp).max(0) as usize;
        strip_zeros(&format!("{v:.decimals$}")).to_string()
    }
}

fn strip_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes() {
        assert_eq!(parse_size("0").ok(), Some(0));
        assert_eq!(parse_size("512").ok(), Some(512));
        assert_eq!(parse_size("64k").ok(), Some(65536));
        assert_eq!(parse_size("1M").ok(), Some(1 << 20));
        assert_eq!(parse_size("1.5G").ok(), Some(3 << 29));
        assert_eq!(parse_size("2E").ok(), Some(2 << 60));
        assert!(parse_size("16E").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("k").is_err());
    }

    #[test]
    fn prints_like_qemu() {
        // Expected strings observed from qemu-img 10.0.2 `info` output.
        assert_eq!(size_to_str(0), "0 B");
        assert_eq!(size_to_str(512), "512 B");
        assert_eq!(size_to_str(1024), "1 KiB");
        assert_eq!(size_to_str(1536), "1.5 KiB");
        assert_eq!(size_to_str(12800), "12.5 KiB");
        assert_eq!(size_to_str(123904), "121 KiB");
        assert_eq!(size_to_str(999424), "976 KiB");
        assert_eq!(size_to_str(1000448), "977 KiB");
        assert_eq!(size_to_str(1024000), "0.977 MiB");
        assert_eq!(size_to_str(1048064), "1 MiB");
        assert_eq!(size_to_str(1000000000), "954 MiB");
        assert_eq!(size_to_str(1000000000000), "931 GiB");
        assert_eq!(size_to_str(197120), "192 KiB");
    }
}
