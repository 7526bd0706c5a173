//! The emulator side of the differential tester: the case and outcome
//! types, a guest memory laid out like the probe's address space, running a
//! case under an `Executor` (the interpreter now, the JIT later), and the
//! comparison with the host's outcome, undefined flags masked (SDM vol. 2
//! flag tables, with iced-x86's per-instruction table as the base).

use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter, Mnemonic, OpKind};
use x86::interp::{self, Env};
use x86::mem::{Exception, MemFault, Memory};
use x86::state::{CpuState, AC, AF, CF, DF, ECX, ID, IF, NT, OF, PF, SF, ZF};
use x87::{EnvFormat, X87};

/// Where the probe puts things (see probe.c).
pub const CODE_ADDR: u32 = 0x2000_0000;
pub const CODE_PAGE: usize = 0x1000;
pub const CODE_MAX: usize = 64;
pub const DATA_ADDR: u32 = 0x1000_0000;
pub const DATA_SIZE: usize = 0x2000;
/// A read-only page filled with `ro_byte(i)`, for write-protection faults.
pub const RO_ADDR: u32 = 0x1000_3000;
pub const RO_SIZE: usize = 0x1000;
/// A page below 64 KiB for 16-bit addressing (mapped when the host allows).
pub const LOW_ADDR: u32 = 0x7000;
pub const LOW_SIZE: usize = 0x1000;
/// The x87 state in the 32-bit protected-mode FNSAVE/FRSTOR layout (SDM
/// vol. 1 figures 8-9 and 8-13): environment, then ST(0)..ST(7).
pub const FPU_IMAGE: usize = 108;

/// The EFLAGS bits compared: arithmetic flags, TF, IF, DF, IOPL, NT, AC, ID
/// (RF is set in a fault's frame by the host and is not architectural state
/// the instructions here touch).
pub const COMPARED_FLAGS: u32 = 0x0024_7fd5 | 0x2;

pub fn ro_byte(i: usize) -> u8 {
    (i as u8).wrapping_mul(7).wrapping_add(3)
}

/// One test: instruction bytes run at CODE_ADDR from this state until EIP
/// reaches the end of the bytes.
#[derive(Clone, Debug)]
pub struct Case {
    pub code: Vec<u8>,
    pub regs: [u32; 8],
    pub eflags: u32,
    pub mxcsr: u32,
    pub xmm: [[u8; 16]; 8],
    /// The x87 state the case starts with (FRSTOR image).
    pub fpu: [u8; FPU_IMAGE],
    pub data: Vec<u8>,
    pub low: Vec<u8>,
    /// Result bits the SDM leaves undefined and the host does not settle
    /// (per register); flags are masked by `undefined_flags`.
    pub ignore_regs: [u32; 8],
    /// x87 results the host does not round correctly (see `FpuLoose`).
    pub fpu_loose: FpuLoose,
    /// Instructions the emulator may execute (REP slices count once each).
    pub max_steps: u32,
}

/// Registers of the final x87 state holding the result of a
/// transcendental instruction, which the emulator rounds correctly and the
/// host does not (the x87 crate's documentation; FYL2X and FYL2XP1 of a
/// power of two included, where the host's log2 is a hair off the exact
/// integer for negative ones): such a register may
/// differ from the host's by up to `ulps` units in the last place when both
/// are finite, not both zero, or by up to 2^`abs_exp` (FSIN/FCOS of
/// |x| >= 1, which the host reduces with a 66-bit pi: an absolute error
/// that grows with |x|; `ulps` u64::MAX for FPTAN there, which magnifies
/// it without bound near the poles), and with it what follows from the
/// rounding: C1 (rounded up), and when that register's value differs PE/UE
/// with ES and B, its tag, and FOP/FDP (recorded only with an unmasked
/// exception).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FpuLoose {
    /// Bit i: ST(i).
    pub regs: u8,
    pub ulps: u64,
    pub abs_exp: Option<i32>,
}

impl Case {
    pub fn end(&self) -> u32 {
        CODE_ADDR + self.code.len() as u32
    }
}

/// What the host says the processor did, or what the emulator did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    DivideError,
    Breakpoint,
    Overflow,
    BoundRange,
    InvalidOpcode,
    GeneralProtection,
    /// #PF: CR2, and the W/R and P bits of the error code.
    Page {
        addr: u32,
        write: bool,
        protection: bool,
    },
    AlignmentCheck,
    SimdFp,
    /// #MF: a waiting x87 instruction found an unmasked exception pending.
    FpuError,
    /// The host's alarm fired, or the emulator hit the step limit.
    Timeout,
    Other(String),
}

/// Registers and memory after the case (or at the faulting instruction).
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub regs: [u32; 8],
    pub eflags: u32,
    pub eip: u32,
    /// None when the host could not report it (fault without FXSR frame).
    pub mxcsr: Option<u32>,
    pub xmm: [[u8; 16]; 8],
    /// The x87 state as FNSAVE stores it.
    pub fpu: [u8; FPU_IMAGE],
    pub data: Vec<u8>,
    /// Empty when the low area is not mapped.
    pub low: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub fault: Option<Fault>,
    pub snap: Snapshot,
}

/// What the probe managed to map; the emulator's memory mirrors it.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub low_mapped: bool,
}

pub struct Region {
    pub base: u32,
    pub bytes: Vec<u8>,
    pub writable: bool,
    /// Only the code page; the others are mapped without PROT_EXEC.
    pub executable: bool,
}

/// Guest memory with the probe's regions; everything else is unmapped.
pub struct TestMemory {
    pub regions: Vec<Region>,
}

impl TestMemory {
    pub fn for_case(case: &Case, layout: &Layout) -> TestMemory {
        let mut code = vec![0xccu8; CODE_PAGE];
        code[..case.code.len()].copy_from_slice(&case.code);
        let mut regions = vec![
            Region {
                base: CODE_ADDR,
                bytes: code,
                writable: true,
                executable: true,
            },
            Region {
                base: DATA_ADDR,
                bytes: case.data.clone(),
                writable: true,
                executable: false,
            },
            Region {
                base: RO_ADDR,
                bytes: (0..RO_SIZE).map(ro_byte).collect(),
                writable: false,
                executable: false,
            },
        ];
        if layout.low_mapped {
            regions.push(Region {
                base: LOW_ADDR,
                bytes: case.low.clone(),
                writable: true,
                executable: false,
            });
        }
        TestMemory { regions }
    }

    fn region(&self, addr: u32) -> Option<usize> {
        self.regions
            .iter()
            .position(|r| addr >= r.base && ((addr - r.base) as usize) < r.bytes.len())
    }

    /// The region and offset of `len` bytes at `addr`, or the fault of the
    /// first byte that is not accessible.
    fn range(&self, addr: u32, len: usize, write: bool) -> Result<(usize, usize), MemFault> {
        let fault = |a: u32, protection: bool| MemFault {
            addr: a,
            write,
            protection,
        };
        let Some(i) = self.region(addr) else {
            return Err(fault(addr, false));
        };
        let r = &self.regions[i];
        let off = (addr - r.base) as usize;
        if write && !r.writable {
            return Err(fault(addr, true));
        }
        if off + len > r.bytes.len() {
            return Err(fault(r.base.wrapping_add(r.bytes.len() as u32), false));
        }
        Ok((i, off))
    }

    pub fn bytes_of(&self, base: u32) -> Vec<u8> {
        self.regions
            .iter()
            .find(|r| r.base == base)
            .map(|r| r.bytes.clone())
            .unwrap_or_default()
    }
}

impl Memory for TestMemory {
    fn read(&mut self, addr: u32, buf: &mut [u8]) -> Result<(), MemFault> {
        let (i, off) = self.range(addr, buf.len(), false)?;
        buf.copy_from_slice(&self.regions[i].bytes[off..off + buf.len()]);
        Ok(())
    }

    fn write(&mut self, addr: u32, data: &[u8]) -> Result<(), MemFault> {
        let (i, off) = self.range(addr, data.len(), true)?;
        self.regions[i].bytes[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn fetch(&mut self, addr: u32, buf: &mut [u8]) -> Result<usize, MemFault> {
        let Some(i) = self.region(addr) else {
            return Err(MemFault {
                addr,
                write: false,
                protection: false,
            });
        };
        let r = &self.regions[i];
        if !r.executable {
            return Err(MemFault {
                addr,
                write: false,
                protection: true,
            });
        }
        let off = (addr - r.base) as usize;
        let n = buf.len().min(r.bytes.len() - off);
        buf[..n].copy_from_slice(&r.bytes[off..off + n]);
        Ok(n)
    }

    fn cmpxchg(
        &mut self,
        addr: u32,
        expected: &[u8],
        new: &[u8],
        old: &mut [u8],
    ) -> Result<bool, MemFault> {
        let (i, off) = self.range(addr, new.len(), true)?;
        let cur = &mut self.regions[i].bytes[off..off + new.len()];
        old.copy_from_slice(cur);
        if old == expected {
            cur.copy_from_slice(new);
            Ok(true)
        } else {
            Ok(false)
        }
    }
}

/// Why an executor stopped before the end of the case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Exception(Exception),
    StepLimit,
}

/// Something that runs guest code: the interpreter, later the JIT.
pub trait Executor {
    /// Runs from `cpu` until EIP equals `end`, an exception (state as at
    /// the faulting instruction) or `max_steps` instructions.
    fn run(
        &mut self,
        cpu: &mut CpuState,
        mem: &mut TestMemory,
        end: u32,
        max_steps: u32,
    ) -> Result<(), Stop>;
}

/// The environment services the cases need: none are used.
pub struct NoEnv;

impl Env for NoEnv {
    fn rdtsc(&mut self) -> u64 {
        0
    }
    fn load_segment(&mut self, _: usize, _: u16) -> Result<(u32, u32), Exception> {
        Err(Exception::GeneralProtection(0))
    }
}

/// The interpreter, one `decode` + `step` per instruction.
pub struct Interpreter;

impl Executor for Interpreter {
    fn run(
        &mut self,
        cpu: &mut CpuState,
        mem: &mut TestMemory,
        end: u32,
        max_steps: u32,
    ) -> Result<(), Stop> {
        for _ in 0..max_steps {
            if cpu.eip == end {
                return Ok(());
            }
            let insn = interp::decode(cpu, mem).map_err(Stop::Exception)?;
            interp::step(cpu, mem, &mut NoEnv, &insn).map_err(Stop::Exception)?;
        }
        if cpu.eip == end {
            Ok(())
        } else {
            Err(Stop::StepLimit)
        }
    }
}

pub fn fault_of(e: Exception) -> Fault {
    match e {
        Exception::DivideError => Fault::DivideError,
        Exception::Breakpoint => Fault::Breakpoint,
        Exception::Overflow => Fault::Overflow,
        Exception::BoundRange => Fault::BoundRange,
        Exception::InvalidOpcode => Fault::InvalidOpcode,
        Exception::GeneralProtection(_) => Fault::GeneralProtection,
        Exception::PageFault(f) => Fault::Page {
            addr: f.addr,
            write: f.write,
            protection: f.protection,
        },
        Exception::AlignmentCheck => Fault::AlignmentCheck,
        Exception::SimdFpError => Fault::SimdFp,
        Exception::FpuError => Fault::FpuError,
        other => Fault::Other(format!("{other:?}")),
    }
}

/// The FNSAVE image of `fpu` (without FNSAVE's reinitialisation).
pub fn fpu_image(fpu: &X87) -> [u8; FPU_IMAGE] {
    let mut img = [0u8; FPU_IMAGE];
    img.copy_from_slice(&fpu.save_image(EnvFormat::Protected32));
    img
}

/// Runs `case` under `exec` in a fresh CPU and memory.
pub fn run_emulated(case: &Case, layout: &Layout, exec: &mut impl Executor) -> Outcome {
    let mut cpu = CpuState {
        regs: case.regs,
        eip: CODE_ADDR,
        xmm: case.xmm,
        mxcsr: case.mxcsr,
        ..CpuState::default()
    };
    cpu.set_eflags(case.eflags, !0);
    // FRSTOR cannot fault; a pending exception in the image is reported by
    // the first waiting instruction, as on the host.
    let _ = cpu.fpu.frstor(EnvFormat::Protected32, &case.fpu);
    let mut mem = TestMemory::for_case(case, layout);
    let fault = match exec.run(&mut cpu, &mut mem, case.end(), case.max_steps) {
        Ok(()) => None,
        Err(Stop::Exception(e)) => Some(fault_of(e)),
        Err(Stop::StepLimit) => Some(Fault::Timeout),
    };
    Outcome {
        fault,
        snap: Snapshot {
            regs: cpu.regs,
            eflags: cpu.eflags(),
            eip: cpu.eip,
            mxcsr: Some(cpu.mxcsr),
            xmm: cpu.xmm,
            fpu: fpu_image(&cpu.fpu),
            data: mem.bytes_of(DATA_ADDR),
            low: if layout.low_mapped {
                mem.bytes_of(LOW_ADDR)
            } else {
                Vec::new()
            },
        },
    }
}

fn decode_all(case: &Case) -> Vec<Instruction> {
    let mut d = Decoder::with_ip(32, &case.code, CODE_ADDR as u64, DecoderOptions::NONE);
    let mut v = Vec::new();
    while d.can_decode() {
        v.push(d.decode());
    }
    v
}

/// iced-x86's RflagsBits as EFLAGS bits.
fn eflags_of_iced(r: u32) -> u32 {
    use iced_x86::RflagsBits as R;
    let pairs = [
        (R::OF, OF),
        (R::SF, SF),
        (R::ZF, ZF),
        (R::AF, AF),
        (R::CF, CF),
        (R::PF, PF),
        (R::DF, DF),
        (R::AC, AC),
    ];
    pairs
        .iter()
        .filter(|(i, _)| r & i != 0)
        .fold(0, |a, (_, e)| a | e)
}

/// The shift/rotate count of `insn` as the first instruction of `case`.
fn count_of(insn: &Instruction, case: &Case) -> u32 {
    let Some(last) = insn.op_count().checked_sub(1) else {
        return 1;
    };
    match insn.op_kind(last) {
        OpKind::Register => case.regs[ECX] & 0xff,
        OpKind::Immediate8 => insn.immediate8() as u32,
        _ => 1,
    }
}

/// The flags the SDM leaves undefined after the case's instructions. For
/// the first instruction, where the operand values are known, the
/// count-dependent rules of the shifts are applied: count 0 changes no
/// flag, count 1 defines OF, larger counts leave OF undefined.
pub fn undefined_flags(case: &Case) -> u32 {
    let mut mask = 0;
    for (i, insn) in decode_all(case).iter().enumerate() {
        let mut u = eflags_of_iced(insn.rflags_undefined());
        if i == 0 {
            let bits = match insn.op_kind(0) {
                OpKind::Register => insn.op_register(0).size() as u32 * 8,
                _ => insn.memory_size().size() as u32 * 8,
            };
            let c = count_of(insn, case) & 0x1f;
            match insn.mnemonic() {
                Mnemonic::Shl | Mnemonic::Sal | Mnemonic::Shr | Mnemonic::Sar => {
                    u = match c {
                        0 => 0,
                        1 => AF,
                        _ => AF | OF,
                    }
                }
                Mnemonic::Rol | Mnemonic::Ror | Mnemonic::Rcl | Mnemonic::Rcr => {
                    u = if c > 1 { OF } else { 0 }
                }
                Mnemonic::Shld | Mnemonic::Shrd => {
                    u = match c {
                        0 => 0,
                        1 => AF,
                        c if c <= bits => AF | OF,
                        _ => CF | PF | AF | ZF | SF | OF,
                    }
                }
                _ => {}
            }
        }
        mask |= u;
    }
    mask
}

/// `DIFFTEST_STRICT_FLAGS=1` compares the undefined flags too (to see how
/// far the emulator's choices match this host).
fn strict_flags() -> bool {
    std::env::var_os("DIFFTEST_STRICT_FLAGS").is_some_and(|v| v == "1")
}

/// The differences between the host's and the emulator's outcome, empty
/// when they agree.
pub fn compare(case: &Case, host: &Outcome, emu: &Outcome) -> Vec<String> {
    let mut d = Vec::new();
    if host.fault != emu.fault {
        d.push(format!(
            "fault: host {:?}, emulator {:?}",
            host.fault, emu.fault
        ));
        return d;
    }
    let (h, e) = (&host.snap, &emu.snap);
    if h.eip != e.eip {
        d.push(format!(
            "eip: host {:#010x}, emulator {:#010x}",
            h.eip, e.eip
        ));
    }
    const NAMES: [&str; 8] = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"];
    for (i, name) in NAMES.iter().enumerate() {
        let m = !case.ignore_regs[i];
        if h.regs[i] & m != e.regs[i] & m {
            d.push(format!(
                "{name}: host {:#010x}, emulator {:#010x}",
                h.regs[i], e.regs[i]
            ));
        }
    }
    let fm = if strict_flags() {
        COMPARED_FLAGS
    } else {
        COMPARED_FLAGS & !undefined_flags(case)
    };
    if h.eflags & fm != e.eflags & fm {
        d.push(format!(
            "eflags: host {:#010x}, emulator {:#010x} (differ in {:#x}, compared {:#x})",
            h.eflags,
            e.eflags,
            (h.eflags ^ e.eflags) & fm,
            fm
        ));
    }
    if let (Some(hm), Some(em)) = (h.mxcsr, e.mxcsr) {
        if hm != em {
            d.push(format!("mxcsr: host {hm:#x}, emulator {em:#x}"));
        }
        for i in 0..8 {
            if h.xmm[i] != e.xmm[i] {
                d.push(format!(
                    "xmm{i}: host {:02x?}, emulator {:02x?}",
                    h.xmm[i], e.xmm[i]
                ));
            }
        }
    }
    d.extend(fpu_differences(case, &h.fpu, &e.fpu));
    for (name, base, hb, eb) in [
        ("data", DATA_ADDR, &h.data, &e.data),
        ("low", LOW_ADDR, &h.low, &e.low),
    ] {
        if hb != eb {
            let diffs: Vec<String> = hb
                .iter()
                .zip(eb.iter())
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .take(8)
                .map(|(i, (a, b))| format!("[{:#x}] host {a:02x} emu {b:02x}", base as usize + i))
                .collect();
            d.push(format!("{name} memory differs: {}", diffs.join(", ")));
        }
    }
    d
}

fn w16(img: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([img[o], img[o + 1]])
}

fn d32(img: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([img[o], img[o + 1], img[o + 2], img[o + 3]])
}

/// ST(i) of an FNSAVE image as (sign and exponent, significand).
fn st_of(img: &[u8], i: usize) -> (u16, u64) {
    let o = 28 + 10 * i;
    let mut m = [0u8; 8];
    m.copy_from_slice(&img[o..o + 8]);
    (w16(img, o + 8), u64::from_le_bytes(m))
}

/// The distance in units of the last place between two finite values, not
/// both zero (None when either is infinite or NaN): the smallest denormal
/// is one unit from zero. A result whose
/// exponent was wrapped by 24576 (an unmasked overflow or underflow, SDM
/// vol. 1 §8.5.4-8.5.5) is measured unwrapped: the other side may have
/// rounded to a value that does not overflow or underflow.
fn ulps_between(a: (u16, u64), b: (u16, u64)) -> Option<u64> {
    const WRAP: i32 = 24576;
    if a.1 == 0 && b.1 == 0 {
        return None;
    }
    let ordinal = |(se, m): (u16, u64), adjust: i32| -> Option<(bool, u128)> {
        let e = (se & 0x7fff) as i32;
        if e == 0x7fff {
            return None;
        }
        let e = u128::try_from(e + adjust).ok()?;
        Some((se & 0x8000 != 0, (e << 63) | (m & !(1 << 63)) as u128))
    };
    [0, WRAP, -WRAP]
        .iter()
        .filter_map(|&adj| {
            let ((sa, oa), (sb, ob)) = (ordinal(a, 0)?, ordinal(b, adj)?);
            let d = if sa == sb { oa.abs_diff(ob) } else { oa + ob };
            Some(u64::try_from(d).unwrap_or(u64::MAX))
        })
        .min()
}

/// Whether two finite values differ by at most 2^k.
fn within_abs(a: (u16, u64), b: (u16, u64), k: i32) -> bool {
    // Fixed point in units of 2^(k-4).
    let fixed = |(se, m): (u16, u64)| -> Option<i128> {
        let e = (se & 0x7fff) as i32;
        if e == 0x7fff {
            return None;
        }
        let sh = e.max(1) - 16383 - 63 - (k - 4);
        let v = match sh {
            61.. => return None,
            0..=60 => (m as i128) << sh,
            -63..=-1 => (m >> -sh) as i128,
            _ => 0,
        };
        Some(if se & 0x8000 != 0 { -v } else { v })
    };
    match (fixed(a), fixed(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= 16,
        _ => false,
    }
}

/// The x87 state in words.
pub fn describe_fpu(img: &[u8]) -> String {
    let mut s = format!(
        "fcw={:04x} fsw={:04x} ftw={:04x} fip={:08x} fcs={:04x} fop={:03x} fdp={:08x} fds={:04x}",
        w16(img, 0),
        w16(img, 4),
        w16(img, 8),
        d32(img, 12),
        w16(img, 16),
        w16(img, 18),
        d32(img, 20),
        w16(img, 24)
    );
    for i in 0..8 {
        let (se, m) = st_of(img, i);
        s += &format!(" st{i}={se:04x}:{m:016x}");
    }
    s
}

/// The differences between the host's and the emulator's x87 state.
fn fpu_differences(case: &Case, h: &[u8; FPU_IMAGE], e: &[u8; FPU_IMAGE]) -> Vec<String> {
    let mut loose_hit = 0u8;
    let mut regs_ok = true;
    let top = (w16(h, 4) >> 11) & 7;
    for i in 0..8 {
        let (a, b) = (st_of(h, i), st_of(e, i));
        if a == b {
            continue;
        }
        let lo = &case.fpu_loose;
        let close = ulps_between(a, b).is_some_and(|u| u <= lo.ulps)
            || lo.abs_exp.is_some_and(|k| within_abs(a, b, k));
        if lo.regs & (1 << i) != 0 && close {
            loose_hit |= 1 << i;
        } else {
            regs_ok = false;
        }
    }
    let mut sw_mask = 0xffffu16;
    if case.fpu_loose.regs != 0 {
        // C1 says whether the (differently rounded) result was rounded up.
        sw_mask &= !0x0200;
    }
    let mut tw_mask = 0xffffu16;
    let mut pointers_follow_result = false;
    if loose_hit != 0 {
        // PE and UE (and with them ES and B) follow from the result, and
        // FOP and FDP are recorded only with an unmasked exception.
        sw_mask &= !(0x0020 | 0x0010 | 0x0080 | 0x8000);
        pointers_follow_result = (w16(h, 4) ^ w16(e, 4)) & 0x0080 != 0;
        for i in 0..8u16 {
            if loose_hit & (1 << i) != 0 {
                tw_mask &= !(3 << (2 * ((top + i) & 7)));
            }
        }
    }
    let mut ok = regs_ok
        && w16(h, 0) == w16(e, 0)
        && w16(h, 4) & sw_mask == w16(e, 4) & sw_mask
        && w16(h, 8) & tw_mask == w16(e, 8) & tw_mask
        && d32(h, 12) == d32(e, 12);
    // FCS, FOP, FDP, FDS and the reserved halves.
    for o in [2, 6, 10, 16, 18, 20, 22, 24, 26] {
        let follows = matches!(o, 18 | 20 | 22);
        ok &= w16(h, o) == w16(e, o) || (follows && pointers_follow_result);
    }
    if ok {
        return Vec::new();
    }
    vec![
        format!("x87 host     {}", describe_fpu(h)),
        format!("x87 emulator {}", describe_fpu(e)),
    ]
}

/// The case in words: bytes, disassembly and initial state.
pub fn describe(case: &Case) -> String {
    let mut fmt = IntelFormatter::new();
    let mut text = String::new();
    for insn in decode_all(case) {
        let mut s = String::new();
        fmt.format(&insn, &mut s);
        if !text.is_empty() {
            text.push_str("; ");
        }
        text.push_str(&s);
    }
    let hex: Vec<String> = case.code.iter().map(|b| format!("{b:02x}")).collect();
    let r = &case.regs;
    let x87 = if case.fpu != fpu_image(&X87::new()) {
        format!("\n    x87 before   {}", describe_fpu(&case.fpu))
    } else {
        String::new()
    };
    format!(
        "{} [{}]\n    eax={:08x} ecx={:08x} edx={:08x} ebx={:08x} esp={:08x} ebp={:08x} esi={:08x} edi={:08x} eflags={:08x}",
        text,
        hex.join(" "),
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        r[5],
        r[6],
        r[7],
        case.eflags
    ) + &x87
}

/// `DIFFTEST_TRACE=1` adds to each reported mismatch the emulator's x87
/// state after every instruction of the case.
fn trace_wanted() -> bool {
    std::env::var_os("DIFFTEST_TRACE").is_some_and(|v| v == "1")
}

/// The interpreter's run of `case`, one line per instruction.
fn trace(case: &Case, layout: &Layout) -> String {
    let mut cpu = CpuState {
        regs: case.regs,
        eip: CODE_ADDR,
        xmm: case.xmm,
        mxcsr: case.mxcsr,
        ..CpuState::default()
    };
    cpu.set_eflags(case.eflags, !0);
    let _ = cpu.fpu.frstor(EnvFormat::Protected32, &case.fpu);
    let mut mem = TestMemory::for_case(case, layout);
    let mut fmt = IntelFormatter::new();
    let mut out = String::new();
    for _ in 0..case.max_steps {
        if cpu.eip == case.end() {
            break;
        }
        let r = interp::decode(&cpu, &mut mem).and_then(|insn| {
            let mut text = String::new();
            fmt.format(&insn, &mut text);
            out.push_str(&format!("    trace {text:<40}"));
            interp::step(&mut cpu, &mut mem, &mut NoEnv, &insn)
        });
        out.push_str(&format!(
            " {:?}\n        {}\n",
            r.err(),
            describe_fpu(&fpu_image(&cpu.fpu))
        ));
        if r.is_err() {
            break;
        }
    }
    out
}

/// Runs `cases` natively and under `exec`; returns a report of the
/// mismatches (at most `max_report` described) and their count.
pub fn differential(cases: &[Case], exec: &mut impl Executor, max_report: usize) -> Summary {
    let (layout, host) = super::probe::run_native(cases);
    let mut sum = Summary::default();
    for (i, (case, h)) in cases.iter().zip(host.iter()).enumerate() {
        let e = run_emulated(case, &layout, exec);
        let d = compare(case, h, &e);
        *sum.host_faults
            .entry(h.fault.as_ref().map_or("none".into(), fault_name))
            .or_default() += 1;
        if d.is_empty() {
            if let Some(u) = loose_ulps(case, &h.snap.fpu, &e.snap.fpu) {
                sum.loose.push(u);
            }
            continue;
        }
        sum.bad += 1;
        if sum.bad <= max_report {
            sum.report
                .push_str(&format!("case {i}: {}\n", describe(case)));
            for line in d {
                sum.report.push_str(&format!("    {line}\n"));
            }
            if trace_wanted() {
                sum.report.push_str(&trace(case, &layout));
            }
        }
    }
    sum
}

/// What a differential run found.
#[derive(Default)]
pub struct Summary {
    /// Cases that differ, and the first of them described.
    pub bad: usize,
    pub report: String,
    /// How the cases ended on the host (fault kind or "none").
    pub host_faults: std::collections::BTreeMap<String, usize>,
    /// For each agreeing case that needed the transcendental tolerance,
    /// the largest distance in units of the last place.
    pub loose: Vec<u64>,
}

fn fault_name(f: &Fault) -> String {
    match f {
        Fault::Page { .. } => "#PF".into(),
        Fault::FpuError => "#MF".into(),
        Fault::Other(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// The largest distance between differing results in the tolerated
/// registers of `case` (None when they are equal).
fn loose_ulps(case: &Case, h: &[u8; FPU_IMAGE], e: &[u8; FPU_IMAGE]) -> Option<u64> {
    (0..8)
        .filter(|&i| case.fpu_loose.regs & (1 << i) != 0 && st_of(h, i) != st_of(e, i))
        .map(|i| ulps_between(st_of(h, i), st_of(e, i)).unwrap_or(u64::MAX))
        .max()
}

/// Flags a case may start with: the arithmetic ones and DF (IF is always
/// set at CPL 3 and bit 1 is fixed).
pub const CASE_FLAGS: u32 = CF | PF | AF | ZF | SF | OF | DF;
pub const BASE_EFLAGS: u32 = IF | 0x2;
pub const SETTABLE_BY_POPF: u32 = CASE_FLAGS | NT | AC | ID;
