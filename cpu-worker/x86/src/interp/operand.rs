//! Operand access for the interpreter: registers, immediates and memory
//! operands with their effective addresses (SDM vol. 2 §2.1.5, vol. 3 §3.4
//! for segment bases).

use iced_x86::{Instruction, OpKind, Register};

use crate::mem::{Exception, Memory};
use crate::state::CpuState;

/// Where an operand lives.
#[derive(Clone, Copy, Debug)]
pub enum Loc {
    /// General register (number 0-7) of the given width in bytes; for
    /// byte registers numbers 4-7 are AH, CH, DH, BH.
    Reg(usize, u32),
    Mem(u32),
    Imm(u32),
}

pub fn mask(bytes: u32) -> u32 {
    match bytes {
        1 => 0xff,
        2 => 0xffff,
        _ => u32::MAX,
    }
}

pub fn sign_bit(bytes: u32) -> u32 {
    1u32 << (bytes * 8 - 1)
}

/// Sign-extends the low `bytes` of `v`.
pub fn sext(v: u32, bytes: u32) -> i32 {
    match bytes {
        1 => v as u8 as i8 as i32,
        2 => v as u16 as i16 as i32,
        _ => v as i32,
    }
}

pub fn seg_index(r: Register) -> usize {
    match r {
        Register::ES => 0,
        Register::CS => 1,
        Register::SS => 2,
        Register::DS => 3,
        Register::FS => 4,
        Register::GS => 5,
        _ => 3,
    }
}

pub fn read_reg(cpu: &CpuState, r: Register) -> u32 {
    let n = r.number() & 7;
    match r.size() {
        1 => cpu.reg8(n) as u32,
        2 => cpu.regs[n] & 0xffff,
        _ => cpu.regs[n],
    }
}

pub fn write_reg(cpu: &mut CpuState, r: Register, v: u32) {
    let n = r.number() & 7;
    match r.size() {
        1 => cpu.set_reg8(n, v as u8),
        2 => cpu.set_reg16(n, v as u16),
        _ => cpu.regs[n] = v,
    }
}

/// The offset part of the memory operand (before the segment base).
pub fn offset(cpu: &CpuState, insn: &Instruction) -> u32 {
    let base = insn.memory_base();
    let index = insn.memory_index();
    let mut a = insn.memory_displacement32();
    if base != Register::None {
        a = a.wrapping_add(read_reg(cpu, base));
    }
    if index != Register::None {
        a = a.wrapping_add(read_reg(cpu, index).wrapping_mul(insn.memory_index_scale()));
    }
    // 16-bit addressing (an 0x67 prefix in 32-bit code) wraps at 64 KiB.
    if base.size() == 2 || index.size() == 2 {
        a &= 0xffff;
    }
    a
}

/// The linear address of the memory operand.
pub fn ea(cpu: &CpuState, insn: &Instruction) -> u32 {
    let seg = seg_index(insn.memory_segment());
    cpu.segs[seg].base.wrapping_add(offset(cpu, insn))
}

/// Width in bytes of operand `i`.
pub fn op_size(insn: &Instruction, i: u32) -> u32 {
    match insn.op_kind(i) {
        OpKind::Register => insn.op_register(i).size() as u32,
        OpKind::Memory => insn.memory_size().size() as u32,
        OpKind::Immediate8 => 1,
        OpKind::Immediate16 | OpKind::Immediate8to16 => 2,
        _ => 4,
    }
}

pub fn loc(cpu: &CpuState, insn: &Instruction, i: u32) -> Result<Loc, Exception> {
    Ok(match insn.op_kind(i) {
        OpKind::Register => {
            let r = insn.op_register(i);
            if !r.is_gpr() {
                return Err(Exception::InvalidOpcode);
            }
            Loc::Reg(r.number() & 7, r.size() as u32)
        }
        OpKind::Memory => Loc::Mem(ea(cpu, insn)),
        OpKind::Immediate8 => Loc::Imm(insn.immediate8() as u32),
        OpKind::Immediate16 => Loc::Imm(insn.immediate16() as u32),
        OpKind::Immediate32 => Loc::Imm(insn.immediate32()),
        OpKind::Immediate8to16 => Loc::Imm(insn.immediate8to16() as u16 as u32),
        OpKind::Immediate8to32 => Loc::Imm(insn.immediate8to32() as u32),
        _ => return Err(Exception::InvalidOpcode),
    })
}

pub fn read_loc<M: Memory>(
    cpu: &CpuState,
    mem: &mut M,
    l: Loc,
    bytes: u32,
) -> Result<u32, Exception> {
    Ok(match l {
        Loc::Reg(n, 1) => cpu.reg8(n) as u32,
        Loc::Reg(n, 2) => cpu.regs[n] & 0xffff,
        Loc::Reg(n, _) => cpu.regs[n],
        Loc::Imm(v) => v & mask(bytes),
        Loc::Mem(a) => match bytes {
            1 => mem.read_u8(a)? as u32,
            2 => mem.read_u16(a)? as u32,
            _ => mem.read_u32(a)?,
        },
    })
}

pub fn write_loc<M: Memory>(
    cpu: &mut CpuState,
    mem: &mut M,
    l: Loc,
    bytes: u32,
    v: u32,
) -> Result<(), Exception> {
    match l {
        Loc::Reg(n, 1) => cpu.set_reg8(n, v as u8),
        Loc::Reg(n, 2) => cpu.set_reg16(n, v as u16),
        Loc::Reg(n, _) => cpu.regs[n] = v,
        Loc::Imm(_) => return Err(Exception::InvalidOpcode),
        Loc::Mem(a) => match bytes {
            1 => mem.write_u8(a, v as u8)?,
            2 => mem.write_u16(a, v as u16)?,
            _ => mem.write_u32(a, v)?,
        },
    }
    Ok(())
}

pub fn read_op<M: Memory>(
    cpu: &CpuState,
    mem: &mut M,
    insn: &Instruction,
    i: u32,
) -> Result<u32, Exception> {
    let l = loc(cpu, insn, i)?;
    read_loc(cpu, mem, l, op_size(insn, i))
}

pub fn write_op<M: Memory>(
    cpu: &mut CpuState,
    mem: &mut M,
    insn: &Instruction,
    i: u32,
    v: u32,
) -> Result<(), Exception> {
    let l = loc(cpu, insn, i)?;
    write_loc(cpu, mem, l, op_size(insn, i), v)
}
