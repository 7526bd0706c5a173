//! x87 floating-point unit: an 80-bit soft-float (`f80`, `arith`, `convert`, `transcend`) and
//! the register-stack unit built on it (`unit`).
//!
//! Follows the Intel SDM Vol. 1 chapters 4 and 8 and the x87 instruction pages of Vol. 2,
//! and IEEE 754-2008 for rounding. Pure state machine: no I/O, no host floating point, no
//! panics on any guest input.

pub mod arith;
mod bigfloat;
pub mod convert;
pub mod f80;
pub mod remainder;
pub mod transcend;
pub mod unit;

pub use arith::Ordering;
pub use convert::Constant;
pub use f80::{Class, Ctx, Precision, Rounding, F80};
pub use remainder::Cond;
pub use unit::{ArithOp, CompareFlags, EnvFormat, PendingFault, Src, X87};

#[cfg(all(test, target_arch = "x86_64"))]
mod host;
