//! Architectural state of an IA-32 processor as the emulator keeps it
//! (Intel SDM vol. 1 ch. 3 "Basic execution environment", vol. 3 §2.3).
//!
//! The six arithmetic flags are kept lazily (see `flags.rs`): the last
//! flag-setting operation and its operands are recorded and the flags are
//! computed only when something reads them. `#[repr(C)]` because translated
//! code addresses the fields by offset.

use crate::flags::{self, CcOp};

pub const EAX: usize = 0;
pub const ECX: usize = 1;
pub const EDX: usize = 2;
pub const EBX: usize = 3;
pub const ESP: usize = 4;
pub const EBP: usize = 5;
pub const ESI: usize = 6;
pub const EDI: usize = 7;

/// Segment register indices, in the encoding order of the ModRM `reg` field.
pub const ES: usize = 0;
pub const CS: usize = 1;
pub const SS: usize = 2;
pub const DS: usize = 3;
pub const FS: usize = 4;
pub const GS: usize = 5;

/// EFLAGS bits (SDM vol. 1 §3.4.3).
pub const CF: u32 = 1 << 0;
pub const PF: u32 = 1 << 2;
pub const AF: u32 = 1 << 4;
pub const ZF: u32 = 1 << 6;
pub const SF: u32 = 1 << 7;
pub const TF: u32 = 1 << 8;
pub const IF: u32 = 1 << 9;
pub const DF: u32 = 1 << 10;
pub const OF: u32 = 1 << 11;
pub const NT: u32 = 1 << 14;
pub const AC: u32 = 1 << 18;
pub const ID: u32 = 1 << 21;
/// The six flags kept lazily.
pub const ARITH_FLAGS: u32 = CF | PF | AF | ZF | SF | OF;

/// A segment register: the visible selector and the hidden base/limit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub selector: u32,
    pub base: u32,
    pub limit: u32,
    pub flags: u32,
}

/// The exit-request word: an atomic u32 (same layout as u32, so translated
/// code reads it at its offset) that clones by value.
#[repr(transparent)]
#[derive(Debug, Default)]
pub struct ExitRequest(pub std::sync::atomic::AtomicU32);

impl Clone for ExitRequest {
    fn clone(&self) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        ExitRequest(AtomicU32::new(self.0.load(Ordering::Relaxed)))
    }
}

#[repr(C)]
#[derive(Clone, Debug)]
pub struct CpuState {
    pub regs: [u32; 8],
    pub eip: u32,
    /// Every flag except the six arithmetic ones, which live in `cc_*`.
    pub eflags: u32,
    pub cc_op: u32,
    pub cc_dst: u32,
    pub cc_src: u32,
    pub cc_src2: u32,
    pub segs: [Segment; 6],
    /// The SSE registers XMM0-7 as little-endian bytes, and MXCSR.
    pub xmm: [[u8; 16]; 8],
    pub mxcsr: u32,
    /// Raw segment descriptors the environment may load selectors from
    /// (user mode: the GDT's thread-local entries set by set_thread_area).
    pub gdt: [u64; 16],
    /// Non-zero asks the running code to stop at the next instruction or
    /// block boundary (a signal arrived, another thread wants the CPU).
    /// Written from signal handlers and other threads.
    pub exit_request: ExitRequest,
    /// The x87 FPU (SDM vol. 1 ch. 8). The MMX registers MM0-7 are the
    /// significands of its physical registers R0-R7 (vol. 1 §9.5): reach
    /// them through `mmx()` and `set_mmx()`. Last in the struct: translated
    /// code does not address it.
    pub fpu: x87::X87,
}

impl Default for CpuState {
    fn default() -> Self {
        CpuState {
            regs: [0; 8],
            eip: 0,
            eflags: 0x2 | IF,
            cc_op: CcOp::Eflags as u32,
            cc_dst: 0,
            cc_src: 0,
            cc_src2: 0,
            segs: [Segment::default(); 6],
            xmm: [[0; 16]; 8],
            mxcsr: 0x1f80,
            gdt: [0; 16],
            exit_request: ExitRequest::default(),
            fpu: x87::X87::new(),
        }
    }
}

impl CpuState {
    /// The full EFLAGS value.
    pub fn eflags(&self) -> u32 {
        (self.eflags & !ARITH_FLAGS) | flags::compute(self) | 0x2
    }

    /// Sets EFLAGS; `mask` says which bits may change.
    pub fn set_eflags(&mut self, value: u32, mask: u32) {
        let cur = self.eflags();
        let v = (cur & !mask) | (value & mask);
        self.eflags = (v & !ARITH_FLAGS) | 0x2;
        self.cc_op = CcOp::Eflags as u32;
        self.cc_src = v & ARITH_FLAGS;
    }

    /// MMX register `i`: the significand of x87 physical register `i`.
    pub fn mmx(&self, i: usize) -> u64 {
        self.fpu.as_mmx(i as u8 & 7)
    }

    /// Writes MMX register `i`; as every MMX instruction, this sets the
    /// x87 TOP to 0 and all tags valid, and the register's exponent and
    /// sign bits to ones (SDM vol. 1 §9.5.1).
    pub fn set_mmx(&mut self, i: usize, v: u64) {
        self.fpu.set_mmx(i as u8 & 7, v);
    }

    pub fn df(&self) -> bool {
        self.eflags & DF != 0
    }

    pub fn reg8(&self, idx: usize) -> u8 {
        if idx < 4 {
            self.regs[idx] as u8
        } else {
            (self.regs[idx - 4] >> 8) as u8
        }
    }

    pub fn set_reg8(&mut self, idx: usize, v: u8) {
        if idx < 4 {
            self.regs[idx] = (self.regs[idx] & !0xff) | v as u32;
        } else {
            let r = &mut self.regs[idx - 4];
            *r = (*r & !0xff00) | ((v as u32) << 8);
        }
    }

    pub fn set_reg16(&mut self, idx: usize, v: u16) {
        self.regs[idx] = (self.regs[idx] & !0xffff) | v as u32;
    }
}
