//! The native probe (`probe.c`): builds it once per test run with
//! `gcc -m32 -static` into the cargo target directory (cached by a hash of
//! its source) and runs batches of cases through it.
//!
//! The record layouts are the ones described at the top of `probe.c`; this
//! file is their reference and the C side follows it.

use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::harness::{
    Case, Fault, Layout, Outcome, Snapshot, CODE_MAX, DATA_SIZE, FPU_IMAGE, LOW_SIZE,
};

const SOURCE: &str = include_str!("probe.c");

const MAGIC_HELLO: u32 = 0x3142_5250;
const MAGIC_CASE: u32 = 0x4553_4143;
const MAGIC_RESULT: u32 = 0x544c_5352;

/// eax..edi, eflags, eip, mxcsr, pad, xmm0-7, the FNSAVE image.
const STATE_SIZE: usize = 8 * 4 + 4 * 4 + 8 * 16 + FPU_IMAGE;
const CASE_SIZE: usize = 8 + STATE_SIZE + CODE_MAX + DATA_SIZE + LOW_SIZE;
const RESULT_SIZE: usize = 24 + STATE_SIZE + DATA_SIZE + LOW_SIZE;

const SIGSEGV: i32 = 11;
const SIGBUS: i32 = 7;
const SIGFPE: i32 = 8;
const SIGILL: i32 = 4;
const SIGTRAP: i32 = 5;
const SIGALRM: i32 = 14;

/// The probe binary, built on first use. Panics (failing the test) with
/// the compiler's message when it cannot be built: the host needs gcc
/// with 32-bit support (Debian: gcc-multilib).
pub fn binary() -> &'static PathBuf {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        SOURCE.hash(&mut h);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let exe = dir.join(format!("difftest-probe-{:016x}", h.finish()));
        if exe.exists() {
            return exe;
        }
        let src = dir.join(format!("difftest-probe-{:016x}.c", h.finish()));
        std::fs::write(&src, SOURCE).expect("writing the probe source to the target dir");
        // Build under a unique name and rename: test binaries may race.
        let tmp = dir.join(format!(
            "difftest-probe-{:016x}.{}.tmp",
            h.finish(),
            std::process::id()
        ));
        let out = Command::new("gcc")
            .args(["-m32", "-static", "-O1", "-fno-pie", "-no-pie", "-o"])
            .arg(&tmp)
            .arg(&src)
            .output()
            .expect("running gcc to build the difftest probe (install gcc-multilib)");
        assert!(
            out.status.success(),
            "gcc -m32 -static failed building the difftest probe (install gcc-multilib):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&tmp, &exe).expect("renaming the built probe into place");
        exe
    })
}

fn put_state(
    buf: &mut Vec<u8>,
    regs: &[u32; 8],
    eflags: u32,
    eip: u32,
    mxcsr: u32,
    xmm: &[[u8; 16]; 8],
    fpu: &[u8; FPU_IMAGE],
) {
    for r in regs {
        buf.extend_from_slice(&r.to_le_bytes());
    }
    for v in [eflags, eip, mxcsr, 0] {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    for x in xmm {
        buf.extend_from_slice(x);
    }
    buf.extend_from_slice(fpu);
}

fn encode_case(case: &Case) -> Vec<u8> {
    let mut b = Vec::with_capacity(CASE_SIZE);
    b.extend_from_slice(&MAGIC_CASE.to_le_bytes());
    b.extend_from_slice(&(case.code.len() as u32).to_le_bytes());
    put_state(
        &mut b,
        &case.regs,
        case.eflags,
        0,
        case.mxcsr,
        &case.xmm,
        &case.fpu,
    );
    let mut code = [0u8; CODE_MAX];
    code[..case.code.len()].copy_from_slice(&case.code);
    b.extend_from_slice(&code);
    b.extend_from_slice(&case.data);
    b.extend_from_slice(&case.low);
    assert_eq!(b.len(), CASE_SIZE, "case record size");
    b
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn decode_result(b: &[u8], layout: &Layout) -> Outcome {
    assert_eq!(
        u32_at(b, 0),
        MAGIC_RESULT,
        "probe result record out of step"
    );
    let signo = u32_at(b, 4) as i32;
    let trapno = u32_at(b, 8);
    let err = u32_at(b, 12);
    let addr = u32_at(b, 16);
    let s = 24;
    let mut regs = [0u32; 8];
    for (i, r) in regs.iter_mut().enumerate() {
        *r = u32_at(b, s + 4 * i);
    }
    let eflags = u32_at(b, s + 32);
    let eip = u32_at(b, s + 36);
    let mxcsr = u32_at(b, s + 40);
    let mut xmm = [[0u8; 16]; 8];
    for (i, x) in xmm.iter_mut().enumerate() {
        x.copy_from_slice(&b[s + 48 + 16 * i..s + 64 + 16 * i]);
    }
    let mut fpu = [0u8; FPU_IMAGE];
    fpu.copy_from_slice(&b[s + 176..s + 176 + FPU_IMAGE]);
    let d = s + STATE_SIZE;
    let data = b[d..d + DATA_SIZE].to_vec();
    let low = if layout.low_mapped {
        b[d + DATA_SIZE..d + DATA_SIZE + LOW_SIZE].to_vec()
    } else {
        Vec::new()
    };
    let fault = match signo {
        0 => None,
        SIGALRM => Some(Fault::Timeout),
        SIGSEGV | SIGBUS | SIGFPE | SIGILL | SIGTRAP => Some(match trapno {
            0 => Fault::DivideError,
            3 => Fault::Breakpoint,
            4 => Fault::Overflow,
            5 => Fault::BoundRange,
            6 => Fault::InvalidOpcode,
            13 => Fault::GeneralProtection,
            16 if signo == SIGFPE => Fault::FpuError,
            14 => Fault::Page {
                addr,
                write: err & 2 != 0,
                protection: err & 1 != 0,
            },
            17 => Fault::AlignmentCheck,
            19 => Fault::SimdFp,
            t => Fault::Other(format!(
                "signal {signo} trap {t} err {err:#x} addr {addr:#x}"
            )),
        }),
        _ => Some(Fault::Other(format!("signal {signo}"))),
    };
    Outcome {
        fault,
        snap: Snapshot {
            regs,
            eflags,
            eip,
            // 0xffffffff: the signal frame had no FXSR image.
            mxcsr: (mxcsr != u32::MAX).then_some(mxcsr),
            xmm,
            fpu,
            data,
            low,
        },
    }
}

/// Runs `cases` on the host CPU; returns the layout the probe could map
/// and one outcome per case.
pub fn run_native(cases: &[Case]) -> (Layout, Vec<Outcome>) {
    let mut child = Command::new(binary())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting the difftest probe");
    let mut stdin = child.stdin.take().expect("probe stdin is piped");
    let mut stdout = child.stdout.take().expect("probe stdout is piped");
    let input: Vec<u8> = cases.iter().flat_map(encode_case).collect();
    // Feed from another thread: the probe answers while we still write.
    let writer = std::thread::spawn(move || {
        stdin.write_all(&input).expect("writing cases to the probe");
    });
    let mut hello = [0u8; 8];
    stdout
        .read_exact(&mut hello)
        .expect("reading the probe's hello");
    assert_eq!(u32_at(&hello, 0), MAGIC_HELLO, "probe hello");
    let layout = Layout {
        low_mapped: u32_at(&hello, 4) & 1 != 0,
    };
    let mut rec = vec![0u8; RESULT_SIZE];
    let mut outs = Vec::with_capacity(cases.len());
    for _ in cases {
        stdout.read_exact(&mut rec).expect("reading a probe result");
        outs.push(decode_result(&rec, &layout));
    }
    writer.join().expect("probe writer thread");
    let status = child.wait().expect("waiting for the probe");
    assert!(status.success(), "probe exited with {status}");
    (layout, outs)
}
