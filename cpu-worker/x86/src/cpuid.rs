//! The CPUID model (SDM vol. 2 "CPUID"): a family 6 processor that
//! reports only what this emulator implements.

use std::sync::atomic::{AtomicU32, Ordering};

/// Feature bits of leaf 1, EDX: FPU, TSC, CX8, CMOV, MMX, FXSR, SSE, SSE2.
pub const FEATURES_EDX: u32 =
    (1 << 0) | (1 << 4) | (1 << 8) | (1 << 15) | (1 << 23) | (1 << 24) | (1 << 25) | (1 << 26);
/// Feature bits of leaf 1, ECX: SSE3 (bit 0; its FISTTP is the x87
/// unit's) and SSSE3 (bit 9).
pub const FEATURES_ECX: u32 = (1 << 0) | (1 << 9);

static MASK_EDX: AtomicU32 = AtomicU32::new(u32::MAX);
static MASK_ECX: AtomicU32 = AtomicU32::new(u32::MAX);

/// Restricts the feature bits leaf 1 reports (a CPU model with fewer
/// features than the emulator has, e.g. `-cpu` of user-mode emulation).
pub fn set_feature_mask(edx: u32, ecx: u32) {
    MASK_EDX.store(edx, Ordering::Relaxed);
    MASK_ECX.store(ecx, Ordering::Relaxed);
}

const BRAND: &[u8; 48] = b"rqemu Virtual CPU version 0.1\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

fn brand_words(part: usize) -> (u32, u32, u32, u32) {
    let b = &BRAND[part * 16..part * 16 + 16];
    let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (w(0), w(4), w(8), w(12))
}

/// EAX, EBX, ECX, EDX for leaf `leaf`, subleaf `sub`.
pub fn query(leaf: u32, _sub: u32) -> (u32, u32, u32, u32) {
    match leaf {
        // Highest leaf and "GenuineIntel" in EBX, EDX, ECX.
        0 => (1, 0x756e_6547, 0x6c65_746e, 0x4965_6e69),
        // Family 6, model 6, stepping 3 (like QEMU's qemu32); CLFLUSH size 8.
        1 => (
            0x0000_0663,
            0x0000_0800,
            FEATURES_ECX & MASK_ECX.load(Ordering::Relaxed),
            FEATURES_EDX & MASK_EDX.load(Ordering::Relaxed),
        ),
        0x8000_0000 => (0x8000_0004, 0, 0, 0),
        0x8000_0001 => (0, 0, 0, 0),
        0x8000_0002 => brand_words(0),
        0x8000_0003 => brand_words(1),
        0x8000_0004 => brand_words(2),
        // Leaves above the maximum report the highest basic leaf's data
        // on Intel; zeros are what software handles best.
        _ => (0, 0, 0, 0),
    }
}
