//! The host's SSE unit as the floating-point engine of the guest's SSE,
//! SSE2 and SSE3 instructions (SDM vol. 1 ch. 10-12, §11.5 for the
//! exception flags, §10.2.3 for MXCSR).
//!
//! Every operation runs as one `asm!` block that saves the host MXCSR,
//! loads the guest's rounding control, FTZ and DAZ with all exceptions
//! masked and all flags clear, executes the very instruction the guest
//! asked for, reads the flags it raised and restores the host MXCSR. The
//! result and the flags (including DE, and the host's own RCPPS/RSQRTPS
//! approximations) are then those of the host processor bit for bit. Doing
//! the load, the operation and the read in one block matters: the compiler
//! does not know that MXCSR is an input of floating-point instructions and
//! would move separate intrinsics across `_mm_setcsr`.
//!
//! The unmasked-exception logic (what reaches the guest's MXCSR when an
//! exception is unmasked) is in `fp.rs`; here everything is masked.

#[cfg(not(target_arch = "x86_64"))]
compile_error!("the SSE unit of the x86 crate executes on the host's SSE: x86_64 hosts only");

use std::arch::asm;

/// The six exception flags of MXCSR (IE DE ZE OE UE PE).
pub const FLAGS: u32 = 0x3f;
/// The exception mask bits of MXCSR.
pub const MASKS: u32 = 0x1f80;
/// The control bits taken from the guest: DAZ, rounding control, FTZ.
pub const CONTROLS: u32 = 0x0040 | 0x6000 | 0x8000;

/// The MXCSR value the host runs an operation with for guest MXCSR `csr`.
pub fn host_csr(csr: u32) -> u32 {
    (csr & CONTROLS) | MASKS
}

/// Runs one two-operand instruction `ins dst, src` on the host.
macro_rules! run2 {
    ($ins:literal, $w:ident, $a:ident, $b:ident) => {
        // SAFETY: the block reads and writes only the two 16-byte arrays
        // behind `a` and `b` and the two-word array `w`, all live locals of
        // the caller; it uses two scratch XMM registers declared as outputs
        // and restores the host MXCSR it saved before it ends.
        unsafe {
            asm!(
                "movdqu {x}, [{a}]",
                "movdqu {y}, [{b}]",
                "stmxcsr [{w} + 4]",
                "ldmxcsr [{w}]",
                concat!($ins, " {x}, {y}"),
                "stmxcsr [{w}]",
                "ldmxcsr [{w} + 4]",
                "movdqu [{a}], {x}",
                a = in(reg) $a.as_mut_ptr(),
                b = in(reg) $b.as_ptr(),
                w = in(reg) $w.as_mut_ptr(),
                x = out(xmm_reg) _,
                y = out(xmm_reg) _,
                options(nostack, preserves_flags),
            )
        }
    };
}

/// Runs one compare instruction `ins dst, src, pred` on the host.
macro_rules! run_cmp {
    ($ins:literal, $p:literal, $w:ident, $a:ident, $b:ident) => {
        // SAFETY: as in `run2`: only the caller's locals behind `a`, `b` and
        // `w` are accessed and the host MXCSR is restored.
        unsafe {
            asm!(
                "movdqu {x}, [{a}]",
                "movdqu {y}, [{b}]",
                "stmxcsr [{w} + 4]",
                "ldmxcsr [{w}]",
                concat!($ins, " {x}, {y}, ", $p),
                "stmxcsr [{w}]",
                "ldmxcsr [{w} + 4]",
                "movdqu [{a}], {x}",
                a = in(reg) $a.as_mut_ptr(),
                b = in(reg) $b.as_ptr(),
                w = in(reg) $w.as_mut_ptr(),
                x = out(xmm_reg) _,
                y = out(xmm_reg) _,
                options(nostack, preserves_flags),
            )
        }
    };
}

macro_rules! binary_ops {
    ($($v:ident => $ins:literal),* $(,)?) => {
        /// The host instructions of the form `op xmm, xmm` that compute
        /// floating-point results or conversions.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Binary { $($v),* }

        /// `a = a op b` on the host under guest MXCSR `csr`; returns the
        /// exception flags the operation raised (all masked).
        pub fn binary(op: Binary, csr: u32, a: &mut [u8; 16], b: &[u8; 16]) -> u32 {
            let mut w = [host_csr(csr), 0u32];
            match op {
                $(Binary::$v => run2!($ins, w, a, b),)*
            }
            w[0] & FLAGS
        }
    };
}

binary_ops! {
    Addps => "addps", Addss => "addss", Addpd => "addpd", Addsd => "addsd",
    Subps => "subps", Subss => "subss", Subpd => "subpd", Subsd => "subsd",
    Mulps => "mulps", Mulss => "mulss", Mulpd => "mulpd", Mulsd => "mulsd",
    Divps => "divps", Divss => "divss", Divpd => "divpd", Divsd => "divsd",
    Minps => "minps", Minss => "minss", Minpd => "minpd", Minsd => "minsd",
    Maxps => "maxps", Maxss => "maxss", Maxpd => "maxpd", Maxsd => "maxsd",
    Sqrtps => "sqrtps", Sqrtss => "sqrtss", Sqrtpd => "sqrtpd", Sqrtsd => "sqrtsd",
    Rcpps => "rcpps", Rcpss => "rcpss", Rsqrtps => "rsqrtps", Rsqrtss => "rsqrtss",
    Addsubps => "addsubps", Addsubpd => "addsubpd",
    Haddps => "haddps", Haddpd => "haddpd", Hsubps => "hsubps", Hsubpd => "hsubpd",
    Cvtps2pd => "cvtps2pd", Cvtpd2ps => "cvtpd2ps",
    Cvtss2sd => "cvtss2sd", Cvtsd2ss => "cvtsd2ss",
    Cvtdq2ps => "cvtdq2ps", Cvtps2dq => "cvtps2dq", Cvttps2dq => "cvttps2dq",
    Cvtdq2pd => "cvtdq2pd", Cvtpd2dq => "cvtpd2dq", Cvttpd2dq => "cvttpd2dq",
}

/// The CMPccPS/SS/PD/SD family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    Cmpps,
    Cmpss,
    Cmppd,
    Cmpsd,
}

macro_rules! cmp_preds {
    ($ins:literal, $pred:expr, $w:ident, $a:ident, $b:ident) => {
        match $pred & 7 {
            0 => run_cmp!($ins, "0", $w, $a, $b),
            1 => run_cmp!($ins, "1", $w, $a, $b),
            2 => run_cmp!($ins, "2", $w, $a, $b),
            3 => run_cmp!($ins, "3", $w, $a, $b),
            4 => run_cmp!($ins, "4", $w, $a, $b),
            5 => run_cmp!($ins, "5", $w, $a, $b),
            6 => run_cmp!($ins, "6", $w, $a, $b),
            _ => run_cmp!($ins, "7", $w, $a, $b),
        }
    };
}

/// `a = cmp(a, b, pred & 7)` on the host; returns the flags raised.
pub fn compare(op: Compare, pred: u8, csr: u32, a: &mut [u8; 16], b: &[u8; 16]) -> u32 {
    let mut w = [host_csr(csr), 0u32];
    match op {
        Compare::Cmpps => cmp_preds!("cmpps", pred, w, a, b),
        Compare::Cmpss => cmp_preds!("cmpss", pred, w, a, b),
        Compare::Cmppd => cmp_preds!("cmppd", pred, w, a, b),
        Compare::Cmpsd => cmp_preds!("cmpsd", pred, w, a, b),
    }
    w[0] & FLAGS
}

/// COMISS, UCOMISS, COMISD, UCOMISD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comis {
    Comiss,
    Ucomiss,
    Comisd,
    Ucomisd,
}

macro_rules! run_comis {
    ($ins:literal, $w:ident, $a:ident, $b:ident, $z:ident, $p:ident, $c:ident) => {
        // SAFETY: reads the caller's locals behind `a`, `b`, writes `w`;
        // the host MXCSR is restored; EFLAGS is clobbered (no
        // `preserves_flags`) and read through SETcc into outputs.
        unsafe {
            asm!(
                "movdqu {x}, [{a}]",
                "movdqu {y}, [{b}]",
                "stmxcsr [{w} + 4]",
                "ldmxcsr [{w}]",
                concat!($ins, " {x}, {y}"),
                "setz {z}",
                "setp {p}",
                "setc {c}",
                "stmxcsr [{w}]",
                "ldmxcsr [{w} + 4]",
                a = in(reg) $a.as_ptr(),
                b = in(reg) $b.as_ptr(),
                w = in(reg) $w.as_mut_ptr(),
                x = out(xmm_reg) _,
                y = out(xmm_reg) _,
                z = out(reg_byte) $z,
                p = out(reg_byte) $p,
                c = out(reg_byte) $c,
                options(nostack),
            )
        }
    };
}

/// Compares the low elements of `a` and `b`; returns (ZF, PF, CF) and the
/// MXCSR flags raised.
pub fn comis(op: Comis, csr: u32, a: &[u8; 16], b: &[u8; 16]) -> ((bool, bool, bool), u32) {
    let mut w = [host_csr(csr), 0u32];
    let (z, p, c): (u8, u8, u8);
    match op {
        Comis::Comiss => run_comis!("comiss", w, a, b, z, p, c),
        Comis::Ucomiss => run_comis!("ucomiss", w, a, b, z, p, c),
        Comis::Comisd => run_comis!("comisd", w, a, b, z, p, c),
        Comis::Ucomisd => run_comis!("ucomisd", w, a, b, z, p, c),
    }
    ((z != 0, p != 0, c != 0), w[0] & FLAGS)
}

/// CVTSI2SS and CVTSI2SD from a 32-bit integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FromInt {
    Cvtsi2ss,
    Cvtsi2sd,
}

macro_rules! run_from_int {
    ($ins:literal, $w:ident, $a:ident, $v:ident) => {
        // SAFETY: only the caller's locals behind `a` and `w` are accessed
        // and the host MXCSR is restored.
        unsafe {
            asm!(
                "movdqu {x}, [{a}]",
                "stmxcsr [{w} + 4]",
                "ldmxcsr [{w}]",
                concat!($ins, " {x}, {v:e}"),
                "stmxcsr [{w}]",
                "ldmxcsr [{w} + 4]",
                "movdqu [{a}], {x}",
                a = in(reg) $a.as_mut_ptr(),
                w = in(reg) $w.as_mut_ptr(),
                v = in(reg) $v,
                x = out(xmm_reg) _,
                options(nostack, preserves_flags),
            )
        }
    };
}

/// Converts the signed integer `v` into the low element of `a`.
pub fn from_int(op: FromInt, csr: u32, a: &mut [u8; 16], v: u32) -> u32 {
    let mut w = [host_csr(csr), 0u32];
    match op {
        FromInt::Cvtsi2ss => run_from_int!("cvtsi2ss", w, a, v),
        FromInt::Cvtsi2sd => run_from_int!("cvtsi2sd", w, a, v),
    }
    w[0] & FLAGS
}

/// CVT(T)SS2SI and CVT(T)SD2SI to a 32-bit integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToInt {
    Cvtss2si,
    Cvttss2si,
    Cvtsd2si,
    Cvttsd2si,
}

macro_rules! run_to_int {
    ($ins:literal, $w:ident, $b:ident, $r:ident) => {
        // SAFETY: only the caller's locals behind `b` and `w` are accessed
        // and the host MXCSR is restored.
        unsafe {
            asm!(
                "movdqu {y}, [{b}]",
                "stmxcsr [{w} + 4]",
                "ldmxcsr [{w}]",
                concat!($ins, " {r:e}, {y}"),
                "stmxcsr [{w}]",
                "ldmxcsr [{w} + 4]",
                b = in(reg) $b.as_ptr(),
                w = in(reg) $w.as_mut_ptr(),
                r = out(reg) $r,
                y = out(xmm_reg) _,
                options(nostack, preserves_flags),
            )
        }
    };
}

/// Converts the low element of `b` to a signed 32-bit integer; returns it
/// and the flags raised.
pub fn to_int(op: ToInt, csr: u32, b: &[u8; 16]) -> (u32, u32) {
    let mut w = [host_csr(csr), 0u32];
    let r: u64;
    match op {
        ToInt::Cvtss2si => run_to_int!("cvtss2si", w, b, r),
        ToInt::Cvttss2si => run_to_int!("cvttss2si", w, b, r),
        ToInt::Cvtsd2si => run_to_int!("cvtsd2si", w, b, r),
        ToInt::Cvttsd2si => run_to_int!("cvttsd2si", w, b, r),
    }
    (r as u32, w[0] & FLAGS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ps(v: [f32; 4]) -> [u8; 16] {
        let mut b = [0u8; 16];
        for (i, x) in v.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&x.to_le_bytes());
        }
        b
    }

    #[test]
    fn rounding_and_flags_follow_the_guest_mxcsr() {
        let mut a = ps([1.0, 1.0, 1.0, 1.0]);
        let b = ps([3.0, 1.0, 1.0, 1.0]);
        // Round toward zero and round up give neighbouring results.
        let f = binary(Binary::Divss, 0x1f80 | 0x6000, &mut a, &b);
        assert_eq!(f, 0x20);
        let rz = u32::from_le_bytes([a[0], a[1], a[2], a[3]]);
        let mut a = ps([1.0, 1.0, 1.0, 1.0]);
        binary(Binary::Divss, 0x1f80 | 0x4000, &mut a, &b);
        let ru = u32::from_le_bytes([a[0], a[1], a[2], a[3]]);
        assert_eq!(ru, rz + 1);
        // Unmasked exceptions in the guest MXCSR never trap on the host.
        let mut a = ps([1.0, 1.0, 1.0, 1.0]);
        let zero = ps([0.0, 1.0, 1.0, 1.0]);
        assert_eq!(binary(Binary::Divps, 0, &mut a, &zero), 0x04);
        let ((z, p, c), f) = comis(Comis::Ucomiss, 0, &a, &a);
        assert_eq!((z, p, c, f), (true, false, false, 0));
    }
}
