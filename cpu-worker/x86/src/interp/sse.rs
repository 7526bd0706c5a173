//! MMX, SSE, SSE2, SSE3 and SSSE3 instructions (SDM vol. 1 ch. 9-12,
//! vol. 2 instruction pages; vol. 3 §13 for FXSAVE/FXRSTOR and MXCSR):
//! operand access for MMX and XMM registers, data movement, the dispatch
//! to the packed-integer operations (`sse/simd_int.rs`) and to the
//! floating-point ones (`sse/fp.rs`, computed on the host's SSE unit).
//!
//! Memory operands of 128 bits must be 16-byte aligned (#GP(0)) except for
//! the explicitly unaligned MOVUPS/MOVUPD/MOVDQU/LDDQU; scalar, 64-bit and
//! smaller operands never are checked. Every instruction reads all its
//! operands before it writes anything, so a fault leaves the state as it
//! was.

use iced_x86::{Code, EncodingKind, Instruction, Mnemonic, OpKind, Register};

mod fp;
mod host;
mod simd_int;

use self::host::{Binary, Comis, Compare, FromInt, ToInt};
use self::simd_int::V;
use super::operand::{ea, read_op, read_reg, seg_index, write_op, write_reg};
use super::Flow;
use crate::mem::{Exception, Memory};
use crate::state::{CpuState, EDI};

/// The MXCSR bits this CPU implements (DAZ included): MXCSR_MASK.
pub const MXCSR_MASK: u32 = 0xffff;

/// A vector register operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VReg {
    Mm(usize),
    Xmm(usize),
}

fn vreg(r: Register) -> Option<VReg> {
    if r.is_xmm() {
        Some(VReg::Xmm(r.number() & 7))
    } else if r.is_mm() {
        Some(VReg::Mm(r.number() & 7))
    } else {
        None
    }
}

/// Operand `i` as a vector register, if it is one.
fn op_vreg(insn: &Instruction, i: u32) -> Option<VReg> {
    if insn.op_kind(i) == OpKind::Register {
        vreg(insn.op_register(i))
    } else {
        None
    }
}

/// Operand `i`, which the decoder guarantees to be a vector register.
fn need_vreg(insn: &Instruction, i: u32) -> Result<VReg, Exception> {
    op_vreg(insn, i).ok_or(Exception::InvalidOpcode)
}

/// The register's width in bytes.
fn width(r: VReg) -> usize {
    match r {
        VReg::Mm(_) => 8,
        VReg::Xmm(_) => 16,
    }
}

fn get(cpu: &CpuState, r: VReg) -> V {
    match r {
        VReg::Xmm(n) => cpu.xmm[n],
        VReg::Mm(n) => {
            let mut v = [0u8; 16];
            v[..8].copy_from_slice(&cpu.mmx(n).to_le_bytes());
            v
        }
    }
}

fn put(cpu: &mut CpuState, r: VReg, v: &V) {
    match r {
        VReg::Xmm(n) => cpu.xmm[n] = *v,
        VReg::Mm(n) => cpu.set_mmx(n, simd_int::low64(v)),
    }
}

/// Whether the instruction's 128-bit memory operand may be unaligned.
fn unaligned_ok(insn: &Instruction) -> bool {
    matches!(
        insn.mnemonic(),
        Mnemonic::Movups | Mnemonic::Movupd | Mnemonic::Movdqu | Mnemonic::Lddqu
    )
}

/// The linear address of the memory operand of `bytes` bytes, checked for
/// alignment.
fn mem_addr(cpu: &CpuState, insn: &Instruction, bytes: usize) -> Result<u32, Exception> {
    let a = ea(cpu, insn);
    let align = match insn.mnemonic() {
        Mnemonic::Fxsave | Mnemonic::Fxrstor => 16,
        _ if bytes == 16 && !unaligned_ok(insn) => 16,
        _ => 1,
    };
    if a % align != 0 {
        return Err(Exception::GeneralProtection(0));
    }
    Ok(a)
}

/// Operand `i` (a vector register or memory) as a vector; a memory operand
/// fills as many low bytes as its size, the rest are zero.
fn src<M: Memory>(cpu: &CpuState, mem: &mut M, insn: &Instruction, i: u32) -> Result<V, Exception> {
    match insn.op_kind(i) {
        OpKind::Register => Ok(get(cpu, need_vreg(insn, i)?)),
        OpKind::Memory => {
            let n = insn.memory_size().size().min(16);
            let a = mem_addr(cpu, insn, n)?;
            let mut v = [0u8; 16];
            mem.read(a, &mut v[..n])?;
            Ok(v)
        }
        _ => Err(Exception::InvalidOpcode),
    }
}

/// Stores the low `n` bytes of `v` to the memory operand.
fn store<M: Memory>(
    cpu: &CpuState,
    mem: &mut M,
    insn: &Instruction,
    v: &V,
    n: usize,
) -> Result<(), Exception> {
    let a = mem_addr(cpu, insn, n)?;
    mem.write(a, &v[..n])?;
    Ok(())
}

/// Writes `v` to operand 0: the whole register, or its `n` low bytes to
/// memory.
fn put_op<M: Memory>(
    cpu: &mut CpuState,
    mem: &mut M,
    insn: &Instruction,
    v: &V,
    n: usize,
) -> Result<(), Exception> {
    match op_vreg(insn, 0) {
        Some(r) => {
            put(cpu, r, v);
            Ok(())
        }
        None => store(cpu, mem, insn, v, n),
    }
}

/// `v` with bytes `range` replaced by the same bytes of `w`.
fn merge(v: &V, w: &V, range: std::ops::Range<usize>) -> V {
    let mut r = *v;
    r[range.clone()].copy_from_slice(&w[range]);
    r
}

/// The low `n` bytes of `v`, zero-extended.
fn low(v: &V, n: usize) -> V {
    let mut r = [0u8; 16];
    r[..n].copy_from_slice(&v[..n]);
    r
}

/// An MMX instruction about to run: an unmasked x87 exception still
/// pending is reported first (#MF, nothing changed), as for any waiting
/// x87 instruction (SDM vol. 1 §9.5.2 and the MMX instruction pages).
fn mmx_check_pending(cpu: &mut CpuState) -> Result<(), Exception> {
    cpu.fpu.fwait().map_err(|_| Exception::FpuError)
}

/// The x87-to-MMX transition every instruction with an MMX register
/// operand makes: TOP = 0 and all tags valid (SDM vol. 1 §9.5.1, table 9-3).
fn mmx_transition(cpu: &mut CpuState) {
    cpu.fpu.mmx_enter();
}

/// EMMS: all x87 tags empty (SDM vol. 1 §9.5.1).
fn mmx_empty(cpu: &mut CpuState) {
    cpu.fpu.emms();
}

/// Executes `insn` if it is an MMX/SSE/SSE2/SSE3/SSSE3 instruction;
/// `Ok(None)` for anything else.
pub fn exec<M: Memory>(
    cpu: &mut CpuState,
    mem: &mut M,
    insn: &Instruction,
) -> Result<Option<Flow>, Exception> {
    if insn.encoding() != EncodingKind::Legacy {
        return Ok(None);
    }
    // Memory-source forms such as CVTPI2PS xmm, m64 make no transition;
    // only an MMX register operand does.
    let mmx = (0..insn.op_count())
        .any(|i| insn.op_kind(i) == OpKind::Register && insn.op_register(i).is_mm());
    if mmx || insn.code() == Code::Emms {
        mmx_check_pending(cpu)?;
    }
    let done = misc(cpu, mem, insn)?
        || moves(cpu, mem, insn)?
        || integer(cpu, mem, insn)?
        || float(cpu, mem, insn)?;
    if !done {
        return Ok(None);
    }
    if mmx {
        mmx_transition(cpu);
    }
    Ok(Some(Flow::Next))
}

/// MXCSR loads and stores, EMMS, cache control, non-temporal stores of
/// general registers, masked stores, FXSAVE/FXRSTOR.
fn misc<M: Memory>(cpu: &mut CpuState, mem: &mut M, insn: &Instruction) -> Result<bool, Exception> {
    match insn.code() {
        Code::Emms => mmx_empty(cpu),
        Code::Ldmxcsr_m32 => {
            let v = mem.read_u32(mem_addr(cpu, insn, 4)?)?;
            if v & !MXCSR_MASK != 0 {
                return Err(Exception::GeneralProtection(0));
            }
            cpu.mxcsr = v;
        }
        Code::Stmxcsr_m32 => mem.write_u32(mem_addr(cpu, insn, 4)?, cpu.mxcsr)?,
        // Caches are not modelled. A real CLFLUSH of an unmapped address
        // faults; probing would need a read, which has side effects on
        // device memory, so it is a no-op like PREFETCHh.
        Code::Clflush_m8 => {}
        Code::Movnti_m32_r32 => {
            let v = read_reg(cpu, insn.op_register(1));
            write_op(cpu, mem, insn, 0, v)?;
        }
        Code::Maskmovq_rDI_mm_mm | Code::Maskmovdqu_rDI_xmm_xmm => {
            let data = get(cpu, need_vreg(insn, 1)?);
            let sel = get(cpu, need_vreg(insn, 2)?);
            let n = if insn.code() == Code::Maskmovq_rDI_mm_mm {
                8
            } else {
                16
            };
            let off = if insn.op0_kind() == OpKind::MemorySegDI {
                cpu.regs[EDI] & 0xffff
            } else {
                cpu.regs[EDI]
            };
            let base = cpu.segs[seg_index(insn.memory_segment())].base;
            // Byte by byte: the unselected bytes must not be touched (they
            // may be in a page that cannot be written). A fault part-way
            // leaves the bytes before it written, as on hardware, which
            // may write the selected bytes in any order.
            for i in 0..n {
                if sel[i] & 0x80 != 0 {
                    let a = base.wrapping_add(off).wrapping_add(i as u32);
                    mem.write(a, &data[i..i + 1])?;
                }
            }
        }
        Code::Fxsave_m512byte => {
            let a = mem_addr(cpu, insn, 512)?;
            let mut area = [0u8; FXSAVE_WRITTEN];
            fxsave_x87(cpu, &mut area);
            fxsave_sse(cpu, &mut area);
            mem.write(a, &area)?;
        }
        Code::Fxrstor_m512byte => {
            let a = mem_addr(cpu, insn, 512)?;
            let mut area = [0u8; FXSAVE_WRITTEN];
            mem.read(a, &mut area)?;
            // Check everything before changing anything.
            fxrstor_sse_check(&area)?;
            fxrstor_x87(cpu, &area)?;
            fxrstor_sse(cpu, &area);
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The bytes of the FXSAVE area the processor writes in 32-bit mode: the
/// x87/MXCSR header, ST0-7/MM0-7 and XMM0-7. The rest (XMM8-15 and the
/// reserved and software-available bytes) is left alone.
pub const FXSAVE_WRITTEN: usize = 288;

fn mxcsr_of(area: &[u8; FXSAVE_WRITTEN]) -> u32 {
    u32::from_le_bytes([area[24], area[25], area[26], area[27]])
}

/// The SSE part of FXSAVE (SDM vol. 1 §10.5.1, table 10-2): MXCSR,
/// MXCSR_MASK and XMM0-7.
pub fn fxsave_sse(cpu: &CpuState, area: &mut [u8; FXSAVE_WRITTEN]) {
    area[24..28].copy_from_slice(&cpu.mxcsr.to_le_bytes());
    area[28..32].copy_from_slice(&MXCSR_MASK.to_le_bytes());
    for (i, x) in cpu.xmm.iter().enumerate() {
        area[160 + 16 * i..176 + 16 * i].copy_from_slice(x);
    }
}

/// FXRSTOR's check of the saved MXCSR: reserved bits set give #GP(0).
pub fn fxrstor_sse_check(area: &[u8; FXSAVE_WRITTEN]) -> Result<(), Exception> {
    if mxcsr_of(area) & !MXCSR_MASK != 0 {
        Err(Exception::GeneralProtection(0))
    } else {
        Ok(())
    }
}

/// The SSE part of FXRSTOR (after `fxrstor_sse_check`).
pub fn fxrstor_sse(cpu: &mut CpuState, area: &[u8; FXSAVE_WRITTEN]) {
    cpu.mxcsr = mxcsr_of(area);
    for (i, x) in cpu.xmm.iter_mut().enumerate() {
        x.copy_from_slice(&area[160 + 16 * i..176 + 16 * i]);
    }
}

/// The x87 part of FXSAVE (SDM vol. 1 §10.5.1, table 10-2): FCW, FSW,
/// the abridged tag byte, FOP, FIP/FCS, FDP/FDS (32-bit layout) and the
/// eight 80-bit registers in 16-byte slots. MXCSR and MXCSR_MASK are the
/// SSE part's.
pub fn fxsave_x87(cpu: &CpuState, area: &mut [u8; FXSAVE_WRITTEN]) {
    let mut img = [0u8; 512];
    cpu.fpu.fxsave(&mut img, false);
    area[..24].copy_from_slice(&img[..24]);
    area[32..160].copy_from_slice(&img[32..160]);
}

/// The x87 part of FXRSTOR. FXRSTOR replaces the x87 state whatever
/// exception is pending (it is not a waiting instruction), so it cannot
/// fail; an unmasked exception in the image is reported by the next
/// waiting instruction.
pub fn fxrstor_x87(cpu: &mut CpuState, area: &[u8; FXSAVE_WRITTEN]) -> Result<(), Exception> {
    let mut img = [0u8; 512];
    img[..FXSAVE_WRITTEN].copy_from_slice(area);
    cpu.fpu.fxrstor(&img, false);
    super::fpu::deprecate_selectors(&mut cpu.fpu);
    Ok(())
}

/// Data movement between vector registers, memory and general registers.
fn moves<M: Memory>(
    cpu: &mut CpuState,
    mem: &mut M,
    insn: &Instruction,
) -> Result<bool, Exception> {
    use Code::*;
    match insn.code() {
        Movd_mm_rm32 | Movd_xmm_rm32 => {
            let v = read_op(cpu, mem, insn, 1)?;
            let mut r = [0u8; 16];
            r[..4].copy_from_slice(&v.to_le_bytes());
            put(cpu, need_vreg(insn, 0)?, &r);
        }
        Movd_rm32_mm | Movd_rm32_xmm => {
            let v = get(cpu, need_vreg(insn, 1)?);
            write_op(cpu, mem, insn, 0, simd_int::low64(&v) as u32)?;
        }
        Movq_mm_mmm64 | Movq_xmm_xmmm64 | Movdq2q_mm_xmm | Movq2dq_xmm_mm => {
            let v = src(cpu, mem, insn, 1)?;
            put(cpu, need_vreg(insn, 0)?, &low(&v, 8));
        }
        Movq_mmm64_mm | Movq_xmmm64_xmm | Movntq_m64_mm => {
            let v = low(&get(cpu, need_vreg(insn, 1)?), 8);
            put_op(cpu, mem, insn, &v, 8)?;
        }
        Movaps_xmm_xmmm128 | Movapd_xmm_xmmm128 | Movups_xmm_xmmm128 | Movupd_xmm_xmmm128
        | Movdqa_xmm_xmmm128 | Movdqu_xmm_xmmm128 | Lddqu_xmm_m128 => {
            let v = src(cpu, mem, insn, 1)?;
            put(cpu, need_vreg(insn, 0)?, &v);
        }
        Movaps_xmmm128_xmm | Movapd_xmmm128_xmm | Movups_xmmm128_xmm | Movupd_xmmm128_xmm
        | Movdqa_xmmm128_xmm | Movdqu_xmmm128_xmm | Movntps_m128_xmm | Movntpd_m128_xmm
        | Movntdq_m128_xmm => {
            let v = get(cpu, need_vreg(insn, 1)?);
            put_op(cpu, mem, insn, &v, 16)?;
        }
        Movss_xmm_xmmm32 | Movsd_xmm_xmmm64 => {
            let n = if insn.code() == Movss_xmm_xmmm32 {
                4
            } else {
                8
            };
            let d = need_vreg(insn, 0)?;
            let v = src(cpu, mem, insn, 1)?;
            // Register to register moves the low element only; a load
            // clears the rest of the register.
            let r = if insn.op_kind(1) == OpKind::Register {
                merge(&get(cpu, d), &v, 0..n)
            } else {
                v
            };
            put(cpu, d, &r);
        }
        Movss_xmmm32_xmm | Movsd_xmmm64_xmm => {
            let n = if insn.code() == Movss_xmmm32_xmm {
                4
            } else {
                8
            };
            let v = get(cpu, need_vreg(insn, 1)?);
            match op_vreg(insn, 0) {
                Some(d) => {
                    let r = merge(&get(cpu, d), &v, 0..n);
                    put(cpu, d, &r);
                }
                None => store(cpu, mem, insn, &v, n)?,
            }
        }
        Movhps_xmm_m64 | Movhpd_xmm_m64 => {
            let d = need_vreg(insn, 0)?;
            let v = src(cpu, mem, insn, 1)?;
            let mut r = get(cpu, d);
            r[8..].copy_from_slice(&v[..8]);
            put(cpu, d, &r);
        }
        Movhps_m64_xmm | Movhpd_m64_xmm => {
            let v = get(cpu, need_vreg(insn, 1)?);
            let mut hi = [0u8; 16];
            hi[..8].copy_from_slice(&v[8..]);
            store(cpu, mem, insn, &hi, 8)?;
        }
        Movlps_xmm_m64 | Movlpd_xmm_m64 => {
            let d = need_vreg(insn, 0)?;
            let v = src(cpu, mem, insn, 1)?;
            let r = merge(&get(cpu, d), &v, 0..8);
            put(cpu, d, &r);
        }
        Movlps_m64_xmm | Movlpd_m64_xmm => {
            let v = get(cpu, need_vreg(insn, 1)?);
            store(cpu, mem, insn, &v, 8)?;
        }
        Movhlps_xmm_xmm => {
            let d = need_vreg(insn, 0)?;
            let v = get(cpu, need_vreg(insn, 1)?);
            let mut r = get(cpu, d);
            r[..8].copy_from_slice(&v[8..]);
            put(cpu, d, &r);
        }
        Movlhps_xmm_xmm => {
            let d = need_vreg(insn, 0)?;
            let v = get(cpu, need_vreg(insn, 1)?);
            let mut r = get(cpu, d);
            r[8..].copy_from_slice(&v[..8]);
            put(cpu, d, &r);
        }
        Movddup_xmm_xmmm64 | Movshdup_xmm_xmmm128 | Movsldup_xmm_xmmm128 => {
            let v = src(cpu, mem, insn, 1)?;
            let pick: [usize; 4] = match insn.code() {
                Movddup_xmm_xmmm64 => [0, 1, 0, 1],
                Movshdup_xmm_xmmm128 => [1, 1, 3, 3],
                _ => [0, 0, 2, 2],
            };
            let mut r = [0u8; 16];
            for (i, &p) in pick.iter().enumerate() {
                r[4 * i..4 * i + 4].copy_from_slice(&v[4 * p..4 * p + 4]);
            }
            put(cpu, need_vreg(insn, 0)?, &r);
        }
        Pmovmskb_r32_mm | Pmovmskb_r32_xmm => {
            let s = need_vreg(insn, 1)?;
            let m = simd_int::pmovmskb(&get(cpu, s), width(s));
            write_reg(cpu, insn.op_register(0), m);
        }
        Movmskps_r32_xmm | Movmskpd_r32_xmm => {
            let size = if insn.code() == Movmskps_r32_xmm {
                4
            } else {
                8
            };
            let m = simd_int::movmsk(&get(cpu, need_vreg(insn, 1)?), size);
            write_reg(cpu, insn.op_register(0), m);
        }
        Pextrw_r32_mm_imm8 | Pextrw_r32_xmm_imm8 => {
            let s = need_vreg(insn, 1)?;
            let i = insn.immediate8() as usize & (width(s) / 2 - 1);
            let w = simd_int::word(&get(cpu, s), i);
            write_reg(cpu, insn.op_register(0), w as u32);
        }
        Pinsrw_mm_r32m16_imm8 | Pinsrw_xmm_r32m16_imm8 => {
            let d = need_vreg(insn, 0)?;
            let w = read_op(cpu, mem, insn, 1)? as u16;
            let i = insn.immediate8() as usize & (width(d) / 2 - 1);
            let r = simd_int::with_word(&get(cpu, d), i, w);
            put(cpu, d, &r);
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The packed-integer operations and the bitwise and shuffle operations
/// on packed floats.
fn integer<M: Memory>(
    cpu: &mut CpuState,
    mem: &mut M,
    insn: &Instruction,
) -> Result<bool, Exception> {
    use Mnemonic::*;
    let m = insn.mnemonic();
    let Some(d) = op_vreg(insn, 0) else {
        return Ok(false);
    };
    let len = width(d);
    let a = get(cpu, d);
    let r = if simd_int::is_binary(m) {
        let b = src(cpu, mem, insn, 1)?;
        simd_int::binary(m, &a, &b, len).ok_or(Exception::InvalidOpcode)?
    } else {
        match m {
            Psllw | Pslld | Psllq | Psrlw | Psrld | Psrlq | Psraw | Psrad => {
                let count = if insn.op_kind(1) == OpKind::Immediate8 {
                    insn.immediate8() as u64
                } else {
                    simd_int::low64(&src(cpu, mem, insn, 1)?)
                };
                simd_int::shift(m, &a, count, len).ok_or(Exception::InvalidOpcode)?
            }
            Pslldq | Psrldq => simd_int::byte_shift(&a, insn.immediate8(), m == Pslldq),
            Pshufw => simd_int::pshuf(&src(cpu, mem, insn, 1)?, insn.immediate8(), 2),
            Pshufd => simd_int::pshuf(&src(cpu, mem, insn, 1)?, insn.immediate8(), 4),
            Pshuflw | Pshufhw => {
                simd_int::pshuf_half(&src(cpu, mem, insn, 1)?, insn.immediate8(), m == Pshufhw)
            }
            Shufps => simd_int::shufps(&a, &src(cpu, mem, insn, 1)?, insn.immediate8()),
            Shufpd => simd_int::shufpd(&a, &src(cpu, mem, insn, 1)?, insn.immediate8()),
            Palignr => simd_int::palignr(&a, &src(cpu, mem, insn, 1)?, insn.immediate8(), len),
            _ => return Ok(false),
        }
    };
    put(cpu, d, &r);
    Ok(true)
}

/// The host operation of a floating-point instruction of the plain form
/// `op xmm, xmm/mem`.
fn binary_op(m: Mnemonic) -> Option<Binary> {
    use Mnemonic as M;
    Some(match m {
        M::Addps => Binary::Addps,
        M::Addss => Binary::Addss,
        M::Addpd => Binary::Addpd,
        M::Addsd => Binary::Addsd,
        M::Subps => Binary::Subps,
        M::Subss => Binary::Subss,
        M::Subpd => Binary::Subpd,
        M::Subsd => Binary::Subsd,
        M::Mulps => Binary::Mulps,
        M::Mulss => Binary::Mulss,
        M::Mulpd => Binary::Mulpd,
        M::Mulsd => Binary::Mulsd,
        M::Divps => Binary::Divps,
        M::Divss => Binary::Divss,
        M::Divpd => Binary::Divpd,
        M::Divsd => Binary::Divsd,
        M::Minps => Binary::Minps,
        M::Minss => Binary::Minss,
        M::Minpd => Binary::Minpd,
        M::Minsd => Binary::Minsd,
        M::Maxps => Binary::Maxps,
        M::Maxss => Binary::Maxss,
        M::Maxpd => Binary::Maxpd,
        M::Maxsd => Binary::Maxsd,
        M::Sqrtps => Binary::Sqrtps,
        M::Sqrtss => Binary::Sqrtss,
        M::Sqrtpd => Binary::Sqrtpd,
        M::Sqrtsd => Binary::Sqrtsd,
        M::Rcpps => Binary::Rcpps,
        M::Rcpss => Binary::Rcpss,
        M::Rsqrtps => Binary::Rsqrtps,
        M::Rsqrtss => Binary::Rsqrtss,
        M::Addsubps => Binary::Addsubps,
        M::Addsubpd => Binary::Addsubpd,
        M::Haddps => Binary::Haddps,
        M::Haddpd => Binary::Haddpd,
        M::Hsubps => Binary::Hsubps,
        M::Hsubpd => Binary::Hsubpd,
        M::Cvtps2pd => Binary::Cvtps2pd,
        M::Cvtpd2ps => Binary::Cvtpd2ps,
        M::Cvtss2sd => Binary::Cvtss2sd,
        M::Cvtsd2ss => Binary::Cvtsd2ss,
        M::Cvtdq2ps => Binary::Cvtdq2ps,
        M::Cvtps2dq => Binary::Cvtps2dq,
        M::Cvttps2dq => Binary::Cvttps2dq,
        M::Cvtdq2pd => Binary::Cvtdq2pd,
        M::Cvtpd2dq => Binary::Cvtpd2dq,
        M::Cvttpd2dq => Binary::Cvttpd2dq,
        _ => return None,
    })
}

/// Floating-point arithmetic, compares and conversions.
fn float<M: Memory>(
    cpu: &mut CpuState,
    mem: &mut M,
    insn: &Instruction,
) -> Result<bool, Exception> {
    use Code::*;
    let code = insn.code();
    if let Some(op) = binary_op(insn.mnemonic()) {
        let d = need_vreg(insn, 0)?;
        let b = src(cpu, mem, insn, 1)?;
        let r = fp::binary(cpu, op, &get(cpu, d), &b)?;
        put(cpu, d, &r);
        return Ok(true);
    }
    match code {
        Cmpps_xmm_xmmm128_imm8
        | Cmpss_xmm_xmmm32_imm8
        | Cmppd_xmm_xmmm128_imm8
        | Cmpsd_xmm_xmmm64_imm8 => {
            let op = match code {
                Cmpps_xmm_xmmm128_imm8 => Compare::Cmpps,
                Cmpss_xmm_xmmm32_imm8 => Compare::Cmpss,
                Cmppd_xmm_xmmm128_imm8 => Compare::Cmppd,
                _ => Compare::Cmpsd,
            };
            let d = need_vreg(insn, 0)?;
            let b = src(cpu, mem, insn, 1)?;
            let r = fp::compare(cpu, op, insn.immediate8(), &get(cpu, d), &b)?;
            put(cpu, d, &r);
        }
        Comiss_xmm_xmmm32 | Ucomiss_xmm_xmmm32 | Comisd_xmm_xmmm64 | Ucomisd_xmm_xmmm64 => {
            let op = match code {
                Comiss_xmm_xmmm32 => Comis::Comiss,
                Ucomiss_xmm_xmmm32 => Comis::Ucomiss,
                Comisd_xmm_xmmm64 => Comis::Comisd,
                _ => Comis::Ucomisd,
            };
            let a = get(cpu, need_vreg(insn, 0)?);
            let b = src(cpu, mem, insn, 1)?;
            fp::comis(cpu, op, &a, &b)?;
        }
        Cvtsi2ss_xmm_rm32 | Cvtsi2sd_xmm_rm32 => {
            let op = if code == Cvtsi2ss_xmm_rm32 {
                FromInt::Cvtsi2ss
            } else {
                FromInt::Cvtsi2sd
            };
            let d = need_vreg(insn, 0)?;
            let v = read_op(cpu, mem, insn, 1)?;
            let r = fp::from_int(cpu, op, &get(cpu, d), v)?;
            put(cpu, d, &r);
        }
        Cvtss2si_r32_xmmm32 | Cvttss2si_r32_xmmm32 | Cvtsd2si_r32_xmmm64 | Cvttsd2si_r32_xmmm64 => {
            let op = match code {
                Cvtss2si_r32_xmmm32 => ToInt::Cvtss2si,
                Cvttss2si_r32_xmmm32 => ToInt::Cvttss2si,
                Cvtsd2si_r32_xmmm64 => ToInt::Cvtsd2si,
                _ => ToInt::Cvttsd2si,
            };
            let b = src(cpu, mem, insn, 1)?;
            let r = fp::to_int(cpu, op, &b)?;
            write_reg(cpu, insn.op_register(0), r);
        }
        // The MMX conversions are the packed XMM ones on two elements: the
        // other two source elements are zero, which converts exactly.
        Cvtpi2ps_xmm_mmm64 => {
            let d = need_vreg(insn, 0)?;
            let b = low(&src(cpu, mem, insn, 1)?, 8);
            let a = get(cpu, d);
            let r = fp::binary(cpu, Binary::Cvtdq2ps, &a, &b)?;
            put(cpu, d, &merge(&a, &r, 0..8));
        }
        Cvtpi2pd_xmm_mmm64 => {
            let d = need_vreg(insn, 0)?;
            let b = low(&src(cpu, mem, insn, 1)?, 8);
            let r = fp::binary(cpu, Binary::Cvtdq2pd, &get(cpu, d), &b)?;
            put(cpu, d, &r);
        }
        Cvtps2pi_mm_xmmm64 | Cvttps2pi_mm_xmmm64 | Cvtpd2pi_mm_xmmm128 | Cvttpd2pi_mm_xmmm128 => {
            let (op, n) = match code {
                Cvtps2pi_mm_xmmm64 => (Binary::Cvtps2dq, 8),
                Cvttps2pi_mm_xmmm64 => (Binary::Cvttps2dq, 8),
                Cvtpd2pi_mm_xmmm128 => (Binary::Cvtpd2dq, 16),
                _ => (Binary::Cvttpd2dq, 16),
            };
            let d = need_vreg(insn, 0)?;
            let b = low(&src(cpu, mem, insn, 1)?, n);
            let r = fp::binary(cpu, op, &[0u8; 16], &b)?;
            put(cpu, d, &low(&r, 8));
        }
        _ => return Ok(false),
    }
    Ok(true)
}

#[cfg(test)]
mod tests;
