//! String instructions with and without REP prefixes (SDM vol. 1 §7.3.9,
//! vol. 2 "MOVS", "CMPS", "SCAS", "LODS", "STOS", "REP/REPE/REPNE").
//!
//! A REP instruction runs in slices: after `SLICE` iterations it returns to
//! its own address with ECX and the index registers updated, so pending
//! signals and interrupts are seen between slices, and a fault in the
//! middle leaves the registers of the iterations done, as on hardware.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::operand::{mask, seg_index};
use super::Flow;
use crate::flags::{self, CcOp};
use crate::mem::{Exception, Memory};
use crate::state::{CpuState, EAX, ECX, EDI, ES, ESI, ZF};

const SLICE: u32 = 1 << 16;

fn elem_size(m: Mnemonic) -> Option<(Mnemonic, u32)> {
    use Mnemonic::*;
    Some(match m {
        Movsb => (Movsb, 1),
        Movsw => (Movsb, 2),
        Movsd => (Movsb, 4),
        Cmpsb => (Cmpsb, 1),
        Cmpsw => (Cmpsb, 2),
        Cmpsd => (Cmpsb, 4),
        Stosb => (Stosb, 1),
        Stosw => (Stosb, 2),
        Stosd => (Stosb, 4),
        Lodsb => (Lodsb, 1),
        Lodsw => (Lodsb, 2),
        Lodsd => (Lodsb, 4),
        Scasb => (Scasb, 1),
        Scasw => (Scasb, 2),
        Scasd => (Scasb, 4),
        _ => return None,
    })
}

fn rd<M: Memory>(mem: &mut M, a: u32, n: u32) -> Result<u32, Exception> {
    Ok(match n {
        1 => mem.read_u8(a)? as u32,
        2 => mem.read_u16(a)? as u32,
        _ => mem.read_u32(a)?,
    })
}

fn wr<M: Memory>(mem: &mut M, a: u32, n: u32, v: u32) -> Result<(), Exception> {
    match n {
        1 => mem.write_u8(a, v as u8)?,
        2 => mem.write_u16(a, v as u16)?,
        _ => mem.write_u32(a, v)?,
    }
    Ok(())
}

/// Bytes moved per chunk by the bulk path.
const CHUNK: u32 = 4096;

/// Forward REP MOVS/STOS in chunks of whole elements instead of one
/// element at a time. A chunk that cannot be read or written entirely is
/// left to the element loop, which stops at the exact faulting element.
/// Overlapping MOVS with the destination less than a chunk ahead of the
/// source is copied in steps of that distance, which gives the same bytes
/// as the element-by-element copy. Returns the iterations done.
fn bulk<M: Memory>(
    cpu: &mut CpuState,
    mem: &mut M,
    kind: Mnemonic,
    n: u32,
    src_seg: u32,
    dst_seg: u32,
) -> Result<u32, Exception> {
    let mut done = 0u32;
    let mut buf = [0u8; CHUNK as usize];
    while cpu.regs[ECX] != 0 && done < SLICE {
        let mut elems = cpu.regs[ECX].min(CHUNK / n).min(SLICE - done);
        let si = src_seg.wrapping_add(cpu.regs[ESI]);
        let di = dst_seg.wrapping_add(cpu.regs[EDI]);
        if kind == Mnemonic::Movsb {
            let dist = di.wrapping_sub(si);
            if dist != 0 && dist < elems * n {
                // Overlap: the source bytes ahead are rewritten as we go.
                elems = elems.min((dist / n).max(1));
                if dist < n {
                    return Ok(done);
                }
            }
        }
        let bytes = (elems * n) as usize;
        let chunk = &mut buf[..bytes];
        if kind == Mnemonic::Movsb {
            if mem.read(si, chunk).is_err() {
                return Ok(done);
            }
        } else {
            let v = cpu.regs[EAX].to_le_bytes();
            for (i, b) in chunk.iter_mut().enumerate() {
                *b = v[i % n as usize];
            }
        }
        if mem.write(di, chunk).is_err() {
            return Ok(done);
        }
        let adv = elems * n;
        if kind == Mnemonic::Movsb {
            cpu.regs[ESI] = cpu.regs[ESI].wrapping_add(adv);
        }
        cpu.regs[EDI] = cpu.regs[EDI].wrapping_add(adv);
        cpu.regs[ECX] -= elems;
        done += elems;
    }
    Ok(done)
}

/// None if `insn` is not one of the string instructions handled here
/// (INS/OUTS are privileged in user mode and raise #GP).
pub fn exec<M: Memory>(
    cpu: &mut CpuState,
    mem: &mut M,
    insn: &Instruction,
) -> Result<Option<Flow>, Exception> {
    let m = insn.mnemonic();
    if matches!(
        m,
        Mnemonic::Insb
            | Mnemonic::Insw
            | Mnemonic::Insd
            | Mnemonic::Outsb
            | Mnemonic::Outsw
            | Mnemonic::Outsd
    ) {
        return Err(Exception::GeneralProtection(0));
    }
    let Some((kind, n)) = elem_size(m) else {
        return Ok(None);
    };
    let saved = (cpu.cc_op, cpu.cc_dst, cpu.cc_src, cpu.cc_src2);
    let r = iterate(cpu, mem, insn, kind, n);
    if r.is_err() && matches!(kind, Mnemonic::Cmpsb | Mnemonic::Scasb) {
        // SDM vol. 2 "REP/REPE/REPNE": a fault in a repeated CMPS or SCAS
        // restores EFLAGS to their value before the instruction (the
        // count and index registers keep the iterations done).
        (cpu.cc_op, cpu.cc_dst, cpu.cc_src, cpu.cc_src2) = saved;
    }
    r.map(Some)
}

/// Runs the iterations of string instruction `kind` with elements of `n`
/// bytes (one without a REP prefix, up to a slice with one).
fn iterate<M: Memory>(
    cpu: &mut CpuState,
    mem: &mut M,
    insn: &Instruction,
    kind: Mnemonic,
    n: u32,
) -> Result<Flow, Exception> {
    // 16-bit addressing (0x67) uses SI, DI and CX.
    let a16 = (0..insn.op_count())
        .any(|i| matches!(insn.op_kind(i), OpKind::MemorySegSI | OpKind::MemoryESDI));
    let amask = if a16 { 0xffff } else { u32::MAX };
    let rep = insn.has_rep_prefix() || insn.has_repne_prefix();
    let src_seg = cpu.segs[seg_index(insn.memory_segment())].base;
    let dst_seg = cpu.segs[ES].base;
    let step = if cpu.df() { n.wrapping_neg() } else { n };
    let mut done = 0u32;
    if rep && !a16 && !cpu.df() && matches!(kind, Mnemonic::Movsb | Mnemonic::Stosb) {
        done = bulk(cpu, mem, kind, n, src_seg, dst_seg)?;
    }
    loop {
        if rep {
            if cpu.regs[ECX] & amask == 0 {
                return Ok(Flow::Next);
            }
            if done == SLICE {
                return Ok(Flow::Jump(insn.ip32()));
            }
        }
        let si = cpu.regs[ESI] & amask;
        let di = cpu.regs[EDI] & amask;
        let (mut adv_si, mut adv_di) = (false, false);
        let mut stop = false;
        match kind {
            Mnemonic::Movsb => {
                let v = rd(mem, src_seg.wrapping_add(si), n)?;
                wr(mem, dst_seg.wrapping_add(di), n, v)?;
                adv_si = true;
                adv_di = true;
            }
            Mnemonic::Stosb => {
                wr(mem, dst_seg.wrapping_add(di), n, cpu.regs[EAX] & mask(n))?;
                adv_di = true;
            }
            Mnemonic::Lodsb => {
                let v = rd(mem, src_seg.wrapping_add(si), n)?;
                match n {
                    1 => cpu.set_reg8(0, v as u8),
                    2 => cpu.set_reg16(EAX, v as u16),
                    _ => cpu.regs[EAX] = v,
                }
                adv_si = true;
            }
            _ => {
                let (a, b) = if kind == Mnemonic::Cmpsb {
                    adv_si = true;
                    // The host reads ES:EDI first: when both operands
                    // fault, the fault is reported for the destination.
                    let b = rd(mem, dst_seg.wrapping_add(di), n)?;
                    (rd(mem, src_seg.wrapping_add(si), n)?, b)
                } else {
                    (
                        cpu.regs[EAX] & mask(n),
                        rd(mem, dst_seg.wrapping_add(di), n)?,
                    )
                };
                adv_di = true;
                let r = a.wrapping_sub(b) & mask(n);
                flags::set(cpu, CcOp::Sub, n, r, b, a);
                if insn.has_repe_prefix() {
                    stop = flags::compute(cpu) & ZF == 0;
                } else if insn.has_repne_prefix() {
                    stop = flags::compute(cpu) & ZF != 0;
                }
            }
        }
        if adv_si {
            let v = si.wrapping_add(step) & amask;
            cpu.regs[ESI] = (cpu.regs[ESI] & !amask) | v;
        }
        if adv_di {
            let v = di.wrapping_add(step) & amask;
            cpu.regs[EDI] = (cpu.regs[EDI] & !amask) | v;
        }
        if !rep {
            return Ok(Flow::Next);
        }
        let c = (cpu.regs[ECX] & amask).wrapping_sub(1) & amask;
        cpu.regs[ECX] = (cpu.regs[ECX] & !amask) | c;
        done += 1;
        if stop {
            return Ok(Flow::Next);
        }
    }
}
