//! Size arguments of `map --start-offset/--max-length` and `measure --size`,
//! accepted and rejected exactly as qemu-img 10.0.2 does (observed):
//! leading blanks and `+` are allowed, `0x` hex integers (no suffix), decimal
//! numbers with an optional fraction, one suffix `b k M G T P E` (any case,
//! powers of 1024). A fraction needs a unit bigger than bytes unless it is
//! zero (`1.0`), and the result is truncated (`1.00001k` is 1024). Values
//! of 2^63 and more, and negative plain integers, are out of range.

/// Why a size argument was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeError {
    /// Not a number of the accepted form: "Invalid X specified: 'arg'."
    Invalid,
    /// Outside [0, 2^63): "Invalid X specified. Must be between 0 and ..."
    Range,
}

/// Parses a size argument.
pub fn parse(arg: &str) -> Result<u64, SizeError> {
    let s = arg.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(SizeError::Invalid);
        }
        if neg {
            return Err(SizeError::Range);
        }
        let v = u128::from_str_radix(hex, 16).map_err(|_| SizeError::Range)?;
        return check_range(v);
    }
    let int_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (int, rest) = s.split_at(int_end);
    let (frac, rest) = match rest.strip_prefix('.') {
        Some(r) => {
            let e = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            (Some(&r[..e]), &r[e..])
        }
        None => (None, rest),
    };
    if int.is_empty() && frac.is_none_or(str::is_empty) {
        return Err(SizeError::Invalid);
    }
    let shift = match rest {
        "" | "b" | "B" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        "t" | "T" => 40,
        "p" | "P" => 50,
        "e" | "E" => 60,
        _ => return Err(SizeError::Invalid),
    };
    if neg {
        // "-1" and "-0" are out of range, "-1k" and "-1.5" are malformed.
        return if rest.is_empty() && frac.is_none() {
            Err(SizeError::Range)
        } else {
            Err(SizeError::Invalid)
        };
    }
    let frac_nonzero = frac.is_some_and(|f| f.bytes().any(|c| c != b'0'));
    if frac_nonzero && shift == 0 {
        return Err(SizeError::Invalid);
    }
    let mut v: u128 = 0;
    for c in int.bytes() {
        v = v.saturating_mul(10).saturating_add(u128::from(c - b'0'));
        if v > u128::from(u64::MAX) {
            return Err(SizeError::Range);
        }
    }
    let mut total = v << shift;
    if frac_nonzero {
        let digits = frac.unwrap_or_default();
        let f: f64 = format!("0.{digits}")
            .parse()
            .map_err(|_| SizeError::Invalid)?;
        total += (f * (1u64 << shift) as f64) as u128;
    }
    check_range(total)
}

fn check_range(v: u128) -> Result<u64, SizeError> {
    if v > i64::MAX as u128 {
        Err(SizeError::Range)
    } else {
        Ok(v as u64)
    }
}

/// The qemu-img message for a refused size argument; `what` is e.g.
/// "start offset", "max length" or "image size".
pub fn message(what: &str, arg: &str, e: SizeError) -> String {
    match e {
        SizeError::Invalid => format!("Invalid {what} specified: '{arg}'."),
        SizeError::Range => {
            format!("Invalid {what} specified. Must be between 0 and 9223372036854775807.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SizeError::{Invalid, Range};

    #[test]
    fn accepts_like_qemu_img() {
        // Observed with `qemu-img map --start-offset` and `measure --size`.
        for (arg, want) in [
            ("1.5k", 1536),
            ("0x10", 16),
            (" 10", 10),
            ("+10", 10),
            ("010", 10),
            ("1.0", 1),
            ("0.5k", 512),
            (".5k", 512),
            ("5.k", 5120),
            ("1K", 1024),
            ("1m", 1 << 20),
            ("1e", 1 << 60),
            ("1B", 1),
            ("1.00001k", 1024),
            ("9223372036854775807", i64::MAX as u64),
        ] {
            assert_eq!(parse(arg), Ok(want), "{arg}");
        }
    }

    #[test]
    fn rejects_like_qemu_img() {
        for (arg, want) in [
            ("1.5", Invalid),
            ("1.5b", Invalid),
            ("0x1k", Invalid),
            ("0x1.8k", Invalid),
            ("1e3", Invalid),
            ("10 ", Invalid),
            ("1KiB", Invalid),
            ("1kk", Invalid),
            ("0.0001", Invalid),
            ("", Invalid),
            ("0x", Invalid),
            ("-1k", Invalid),
            ("-1", Range),
            ("-0", Range),
            ("9223372036854775808", Range),
            ("99999999999999999999", Range),
            ("0xffffffffffffffff", Range),
            ("9E", Range),
            ("8E", Range),
        ] {
            assert_eq!(parse(arg), Err(want), "{arg}");
        }
    }
}
