//! x87 floating-point unit: an 80-bit soft-float and the register-stack unit built on it.
//!
//! Follows the Intel SDM Vol. 1 chapters 4 and 8 and the x87 instruction pages of Vol. 2,
//! and IEEE 754-2008 for rounding. Pure state machine: no I/O, no host floating point, no
//! panics on any guest input.
//!
//! Two layers:
//!
//! - Values: [`F80`] with a rounding context [`Ctx`] (RC, PC and the masks in; the IE, DE,
//!   ZE, OE, UE, PE flags and C1 out). [`arith`] (add, sub, mul, div, sqrt, round to
//!   integer, compare, FXAM), [`convert`] (f32/f64, integers, packed BCD, constants),
//!   [`remainder`] (FPREM/FPREM1, FSCALE, FXTRACT), [`transcend`] (FSIN ... F2XM1).
//! - Instructions: [`X87`] holds the registers, TOP, tags, control/status words and the
//!   last-instruction pointers; its methods take operands already fetched from memory and
//!   return what must be stored. A waiting instruction started while an unmasked exception
//!   is pending returns [`PendingFault`] (the caller raises #MF, SIGFPE in user mode).
//!
//! Fidelity, as checked by the tests against the host CPU's own x87:
//!
//! - bit-exact, flags and condition codes included, in every rounding and precision mode,
//!   masked and unmasked: arithmetic, square root, FRNDINT, FPREM/FPREM1 (including the
//!   host's partial-reduction step), FSCALE, FXTRACT, comparisons, FXAM, every
//!   conversion, the constants, and the stack/tag/exception behaviour of random
//!   instruction sequences (replayed on the host through FRSTOR/op/FNSAVE).
//! - transcendentals are correctly rounded to 64 bits (checked against mpmath vectors).
//!   The host is not: it agrees to within one ulp except for FSIN/FCOS/FPTAN with
//!   |x| ≥ 1, where it reduces the argument with a 66-bit π (SDM Vol. 1 §8.3.10) and can
//!   be far off, and for tiny arguments in the directed rounding modes, where it returns
//!   x for sin x and 1 for cos x (so no underflow either); the special operands, out-of-range behaviour (C2), the domain
//!   oddities of F2XM1/FYL2XP1 outside their documented ranges, flags and stack effects
//!   follow the host.

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
