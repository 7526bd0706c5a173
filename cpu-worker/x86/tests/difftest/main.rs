//! Differential tests of the x86 interpreter against the host CPU (the
//! host is x86_64 Linux and runs i386 code natively).
//!
//! Each group generates cases (instruction bytes plus an initial state)
//! with a deterministic PRNG, runs them natively through the probe
//! (`probe.c`, built with `gcc -m32 -static`) and under the emulator
//! (`harness::Executor`; the interpreter here, the JIT later), and
//! compares registers, EFLAGS (the flags the SDM leaves undefined masked),
//! XMM/MXCSR, the x87 state (FNSAVE image: control, status and tag words,
//! pointers, ST0-7), memory and faults (#DE, #PF with its address, #UD,
//! #BP, #MF...). The x87 results of the transcendental instructions,
//! which the host does not round correctly, are compared within the
//! tolerance `harness::FpuLoose` documents; everything else exactly.
//!
//! `DIFFTEST_SEED=n` changes the seed, `DIFFTEST_SCALE=k` multiplies the
//! case counts (for longer runs by hand), `DIFFTEST_TRACE=1` adds the
//! emulator's x87 state after each instruction to the reported
//! mismatches, `DIFFTEST_HIST=1` prints how far the tolerated
//! transcendental results were from the host's.

mod asm;
mod cases;
mod harness;
mod jit;
mod probe;

use cases::Rng;
use harness::{differential, Case, Interpreter};

fn seed() -> u64 {
    std::env::var("DIFFTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234)
}

fn scale(n: usize) -> usize {
    let k: usize = std::env::var("DIFFTEST_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    n * k.max(1)
}

/// Generates `n` cases of a group (seeded by the group name) and checks
/// them; fails with the first mismatches described.
fn check(name: &str, n: usize, generate: fn(&mut Rng, usize) -> Vec<Case>) {
    let salt = name
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let mut rng = Rng::new(seed() ^ salt);
    let cases = generate(&mut rng, scale(n));
    for c in &cases {
        assert!(c.code.len() <= harness::CODE_MAX, "case code too long");
    }
    let sum = differential(&cases, &mut Interpreter, 12);
    let faults: Vec<String> = sum
        .host_faults
        .iter()
        .filter(|(k, _)| *k != "none")
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let mut notes = String::new();
    if !faults.is_empty() {
        notes += &format!("; host faults: {}", faults.join(", "));
    }
    if std::env::var_os("DIFFTEST_HIST").is_some() && !sum.loose.is_empty() {
        let mut h = std::collections::BTreeMap::new();
        for &u in &sum.loose {
            *h.entry(64 - u.leading_zeros()).or_insert(0) += 1;
        }
        eprintln!("ulp histogram (bits): {h:?}");
    }
    if !sum.loose.is_empty() {
        let one = sum.loose.iter().filter(|&&u| u <= 1).count();
        notes += &format!(
            "; transcendental results off the host's: {} by one ulp, {} by more (trigonometric, |x| >= 1)",
            one,
            sum.loose.len() - one
        );
    }
    eprintln!(
        "difftest {name}: {} cases, {} mismatches{notes}",
        cases.len(),
        sum.bad
    );
    assert!(
        sum.bad == 0,
        "difftest {name}: {} of {} cases differ from the host CPU:\n{}",
        sum.bad,
        cases.len(),
        sum.report
    );
    let jit_sum = differential(&cases, &mut jit::Jit, 12);
    eprintln!(
        "difftest {name} (jit): {} cases, {} mismatches",
        cases.len(),
        jit_sum.bad
    );
    assert!(
        jit_sum.bad == 0,
        "difftest {name} (jit): {} of {} cases differ from the host CPU:\n{}",
        jit_sum.bad,
        cases.len(),
        jit_sum.report
    );
}

#[test]
fn alu() {
    check("alu", 2400, cases::arith::alu);
}

#[test]
fn test_insn() {
    check("test", 600, cases::arith::test);
}

#[test]
fn inc_dec_neg_not() {
    check("unary", 1200, cases::arith::unary);
}

#[test]
fn mul_div() {
    check("muldiv", 1800, cases::arith::muldiv);
}

#[test]
fn imul() {
    check("imul", 900, cases::arith::imul);
}

#[test]
fn bcd() {
    check("bcd", 1800, cases::arith::bcd);
}

#[test]
fn sign_extend() {
    check("cbw", 120, cases::arith::sign_extend);
}

#[test]
fn shifts() {
    check("shifts", 2880, cases::bits::shifts);
}

#[test]
fn double_shifts() {
    check("shld", 1200, cases::bits::double_shifts);
}

#[test]
fn bit_tests() {
    check("bt", 1500, cases::bits::bit_tests);
}

#[test]
fn bit_scans() {
    check("bsf", 600, cases::bits::bit_scans);
}

#[test]
fn bswap() {
    check("bswap", 192, cases::bits::bswap);
}

#[test]
fn mov() {
    check("mov", 1200, cases::data::mov);
}

#[test]
fn lea() {
    check("lea", 900, cases::data::lea);
}

#[test]
fn movx() {
    check("movx", 600, cases::data::movx);
}

#[test]
fn exchange() {
    check("xchg", 1500, cases::data::exchange);
}

#[test]
fn flag_ops() {
    check("flags", 480, cases::data::flag_ops);
}

#[test]
fn pushf_popf() {
    check("pushf", 450, cases::data::pushf_popf);
}

#[test]
fn push_pop() {
    check("push", 1200, cases::data::push_pop);
}

#[test]
fn enter_leave() {
    check("enter", 600, cases::data::enter_leave);
}

#[test]
fn xlat() {
    check("xlat", 300, cases::data::xlat);
}

#[test]
fn bound() {
    check("bound", 450, cases::data::bound);
}

#[test]
fn conditions() {
    check("cc", 1920, cases::control::conditions);
}

#[test]
fn loops() {
    check("loop", 600, cases::control::loops);
}

#[test]
fn transfers() {
    check("transfer", 720, cases::control::transfers);
}

#[test]
fn strings() {
    check("string", 3000, cases::string::strings);
}

#[test]
fn sequences() {
    check("sequence", 1800, cases::sequence::sequences);
}

#[test]
fn x87_load_store() {
    check("x87 load/store", 6000, cases::x87::load_store);
}

#[test]
fn x87_arith() {
    check("x87 arith", 6000, cases::x87::arith);
}

#[test]
fn x87_compare() {
    check("x87 compare", 5000, cases::x87::compare);
}

#[test]
fn x87_unary() {
    check("x87 unary", 4000, cases::x87::unary);
}

#[test]
fn x87_transcendental() {
    check("x87 transcendental", 4000, cases::x87::transcendental);
}

#[test]
fn x87_stack() {
    check("x87 stack", 2000, cases::x87::stack);
}

#[test]
fn x87_control() {
    check("x87 control", 4000, cases::x87::control);
}

#[test]
fn x87_exceptions() {
    check("x87 exceptions", 4000, cases::x87::exceptions);
}

#[test]
fn x87_sequences() {
    check("x87 sequences", 4000, cases::x87::sequences);
}

#[test]
fn x87_mmx() {
    check("x87 mmx", 3000, cases::x87::mmx);
}
