//! The IA-32 CPU of rqemu (Intel SDM vols. 1-3): architectural state, lazy
//! flags, instruction semantics and an interpreter over iced-x86's decoder.
//! User-mode emulation (`qemu-i386`) and the system emulator share it.

pub mod cpuid;
pub mod flags;
pub mod interp;
pub mod jit;
pub mod mem;
pub mod state;
