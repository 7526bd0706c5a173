//! The interpreter: executes one decoded instruction against `CpuState`
//! and a `Memory` (semantics from the instruction pages of SDM vol. 2).
//!
//! It is the reference semantics of the emulator: the JIT lowers the common
//! instructions itself and calls into this for everything else. State is
//! precise: an instruction that faults leaves registers and EIP as they were
//! before it (string instructions with a REP prefix keep the iterations
//! done, and POPA the registers popped before the fault, as the hardware
//! does).

pub mod fpu;
mod integer;
pub mod operand;
pub mod sse;
mod string;

use iced_x86::{Code, Instruction, Mnemonic};

use crate::mem::{Exception, Memory};
use crate::state::CpuState;

/// Services the interpreter needs from its environment beyond memory.
pub trait Env {
    /// The time-stamp counter for RDTSC.
    fn rdtsc(&mut self) -> u64;
    /// Loads a segment register from a selector (user mode: the thread-local
    /// descriptors set by set_thread_area). Returns (base, limit).
    fn load_segment(&mut self, seg: usize, selector: u16) -> Result<(u32, u32), Exception>;
}

/// What an instruction did to the flow of control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Next,
    Jump(u32),
}

/// Executes `insn` (decoded at `cpu.eip`) and moves EIP on. On an
/// exception EIP stays at the instruction, except for the trap-class
/// events (INT n, INT3, INTO, SYSENTER) where it points past it.
pub fn step<M: Memory, E: Env>(
    cpu: &mut CpuState,
    mem: &mut M,
    env: &mut E,
    insn: &Instruction,
) -> Result<(), Exception> {
    let next = insn.next_ip32();
    match exec(cpu, mem, env, insn) {
        Ok(Flow::Next) => {
            cpu.eip = next;
            Ok(())
        }
        Ok(Flow::Jump(t)) => {
            cpu.eip = t;
            Ok(())
        }
        Err(
            e @ (Exception::SoftwareInterrupt(_)
            | Exception::Sysenter
            | Exception::Breakpoint
            | Exception::Overflow),
        ) => {
            cpu.eip = next;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// SETcc, any condition.
pub fn is_setcc(m: Mnemonic) -> bool {
    matches!(
        m,
        Mnemonic::Seta
            | Mnemonic::Setae
            | Mnemonic::Setb
            | Mnemonic::Setbe
            | Mnemonic::Sete
            | Mnemonic::Setg
            | Mnemonic::Setge
            | Mnemonic::Setl
            | Mnemonic::Setle
            | Mnemonic::Setne
            | Mnemonic::Setno
            | Mnemonic::Setnp
            | Mnemonic::Setns
            | Mnemonic::Seto
            | Mnemonic::Setp
            | Mnemonic::Sets
    )
}

/// CMOVcc, any condition.
pub fn is_cmovcc(m: Mnemonic) -> bool {
    matches!(
        m,
        Mnemonic::Cmova
            | Mnemonic::Cmovae
            | Mnemonic::Cmovb
            | Mnemonic::Cmovbe
            | Mnemonic::Cmove
            | Mnemonic::Cmovg
            | Mnemonic::Cmovge
            | Mnemonic::Cmovl
            | Mnemonic::Cmovle
            | Mnemonic::Cmovne
            | Mnemonic::Cmovno
            | Mnemonic::Cmovnp
            | Mnemonic::Cmovns
            | Mnemonic::Cmovo
            | Mnemonic::Cmovp
            | Mnemonic::Cmovs
    )
}

/// Which module executes an instruction; the JIT picks it once at
/// translation time and calls `step_family` to skip the dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    X87,
    Any,
}

pub fn family(insn: &Instruction) -> Family {
    if !insn.is_string_instruction() && fpu::decode(insn).is_some() {
        Family::X87
    } else {
        Family::Any
    }
}

/// `step` for an instruction of a known family.
pub fn step_family<M: Memory, E: Env>(
    cpu: &mut CpuState,
    mem: &mut M,
    env: &mut E,
    insn: &Instruction,
    fam: Family,
) -> Result<(), Exception> {
    if fam == Family::X87 {
        // x87 instructions never branch and never trap past themselves.
        if fpu::exec(cpu, mem, insn)?.is_some() {
            cpu.eip = insn.next_ip32();
            return Ok(());
        }
    }
    step(cpu, mem, env, insn)
}

/// Decodes the instruction at `cpu.eip`.
pub fn decode<M: Memory>(cpu: &CpuState, mem: &mut M) -> Result<Instruction, Exception> {
    let mut buf = [0u8; 15];
    let eip = cpu.eip;
    let lin = cpu.segs[crate::state::CS].base.wrapping_add(eip);
    let n = mem.fetch(lin, &mut buf)?;
    let mut dec =
        iced_x86::Decoder::with_ip(32, &buf[..n], eip as u64, iced_x86::DecoderOptions::NONE);
    let insn = dec.decode();
    if insn.is_invalid() {
        if dec.last_error() == iced_x86::DecoderError::NoMoreBytes && n < 15 {
            // The instruction runs into a page we cannot fetch from.
            return Err(Exception::PageFault(crate::mem::MemFault {
                addr: lin.wrapping_add(n as u32),
                write: false,
                protection: false,
            }));
        }
        return Err(Exception::InvalidOpcode);
    }
    Ok(insn)
}

pub fn exec<M: Memory, E: Env>(
    cpu: &mut CpuState,
    mem: &mut M,
    env: &mut E,
    insn: &Instruction,
) -> Result<Flow, Exception> {
    if insn.is_string_instruction() {
        if let Some(f) = string::exec(cpu, mem, insn)? {
            return Ok(f);
        }
    }
    if let Some(f) = integer::exec(cpu, mem, env, insn)? {
        return Ok(f);
    }
    if let Some(f) = fpu::exec(cpu, mem, insn)? {
        return Ok(f);
    }
    if let Some(f) = sse::exec(cpu, mem, insn)? {
        return Ok(f);
    }
    match insn.mnemonic() {
        Mnemonic::Nop
        | Mnemonic::Pause
        | Mnemonic::Lfence
        | Mnemonic::Mfence
        | Mnemonic::Sfence => Ok(Flow::Next),
        // CET branch-target markers: hint NOPs (0F 1E) on a CPU without CET,
        // which every i386 distribution binary starts its functions with.
        Mnemonic::Endbr32 | Mnemonic::Endbr64 => Ok(Flow::Next),
        Mnemonic::Prefetchnta
        | Mnemonic::Prefetcht0
        | Mnemonic::Prefetcht1
        | Mnemonic::Prefetcht2
        | Mnemonic::Prefetchw => Ok(Flow::Next),
        _ if insn.code() == Code::INVALID => Err(Exception::InvalidOpcode),
        _ => Err(Exception::InvalidOpcode),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::FlatMemory;
    use crate::state::{EAX, ECX, ESP};

    struct NoEnv;
    impl Env for NoEnv {
        fn rdtsc(&mut self) -> u64 {
            0
        }
        fn load_segment(&mut self, _: usize, _: u16) -> Result<(u32, u32), Exception> {
            Err(Exception::GeneralProtection(0))
        }
    }

    fn run(code: &[u8], max: usize) -> (CpuState, Result<(), Exception>) {
        let mut mem = FlatMemory::new(0x10000);
        mem.bytes[0x1000..0x1000 + code.len()].copy_from_slice(code);
        let mut cpu = CpuState {
            eip: 0x1000,
            ..CpuState::default()
        };
        cpu.regs[ESP] = 0x8000;
        for _ in 0..max {
            let r = decode(&cpu, &mut mem).and_then(|i| step(&mut cpu, &mut mem, &mut NoEnv, &i));
            if r.is_err() {
                return (cpu, r);
            }
        }
        (cpu, Ok(()))
    }

    #[test]
    fn factorial_loop() {
        // mov eax,1; mov ecx,10; l: imul eax,ecx; dec ecx; jnz l; int3
        let code = [
            0xb8, 1, 0, 0, 0, 0xb9, 10, 0, 0, 0, 0x0f, 0xaf, 0xc1, 0x49, 0x75, 0xfa, 0xcc,
        ];
        let (cpu, r) = run(&code, 100);
        assert_eq!(r, Err(Exception::Breakpoint));
        assert_eq!(cpu.regs[EAX], 3_628_800);
        assert_eq!(cpu.regs[ECX], 0);
        assert_eq!(cpu.eip, 0x1000 + code.len() as u32);
    }

    #[test]
    fn call_ret_push_pop_and_faults() {
        // call f; int3; f: push 0x1234; pop eax; ret
        let code = [0xe8, 1, 0, 0, 0, 0xcc, 0x68, 0x34, 0x12, 0, 0, 0x58, 0xc3];
        let (cpu, r) = run(&code, 10);
        assert_eq!(r, Err(Exception::Breakpoint));
        assert_eq!(cpu.regs[EAX], 0x1234);
        assert_eq!(cpu.regs[ESP], 0x8000);
        // mov eax,[0xfffffff0] faults and leaves EIP on the instruction.
        let (cpu, r) = run(&[0xa1, 0xf0, 0xff, 0xff, 0xff], 1);
        assert!(matches!(r, Err(Exception::PageFault(_))));
        assert_eq!(cpu.eip, 0x1000);
        // div by zero
        let (_, r) = run(&[0x31, 0xc9, 0xf7, 0xf1], 2);
        assert_eq!(r, Err(Exception::DivideError));
    }

    #[test]
    fn rep_movsb_and_scasb() {
        // mov esi,0x2000; mov edi,0x3000; mov ecx,5; rep movsb;
        // mov edi,0x3000; mov al,'c'; mov ecx,5; repne scasb; int3
        let mut code = vec![
            0xbe, 0, 0x20, 0, 0, 0xbf, 0, 0x30, 0, 0, 0xb9, 5, 0, 0, 0, 0xf3, 0xa4,
        ];
        code.extend([
            0xbf, 0, 0x30, 0, 0, 0xb0, b'c', 0xb9, 5, 0, 0, 0, 0xf2, 0xae, 0xcc,
        ]);
        let mut mem = FlatMemory::new(0x10000);
        mem.bytes[0x1000..0x1000 + code.len()].copy_from_slice(&code);
        mem.bytes[0x2000..0x2005].copy_from_slice(b"abcde");
        let mut cpu = CpuState {
            eip: 0x1000,
            ..CpuState::default()
        };
        loop {
            let r = decode(&cpu, &mut mem).and_then(|i| step(&mut cpu, &mut mem, &mut NoEnv, &i));
            if r.is_err() {
                break;
            }
        }
        assert_eq!(&mem.bytes[0x3000..0x3005], b"abcde");
        assert_eq!(cpu.regs[crate::state::EDI], 0x3003);
        assert_eq!(cpu.regs[ECX], 2);
    }

    #[test]
    fn overlapping_rep_movs_repeats_the_pattern() {
        // rep movsb with the destination 3 bytes after the source, and rep
        // movsd 2 bytes after: the element-by-element result, a pattern.
        for (elem, dist, count) in [
            (1u32, 3u32, 5000u32),
            (4, 2, 3000),
            (1, 1, 9000),
            (4, 4096, 3000),
        ] {
            let op = if elem == 1 { 0xa4 } else { 0xa5 };
            let code = [0xf3, op, 0xcc];
            let mut mem = FlatMemory::new(0x40000);
            mem.bytes[0x1000..0x1003].copy_from_slice(&code);
            for i in 0..0x8000usize {
                mem.bytes[0x10000 + i] = (i * 13 + 1) as u8;
            }
            let mut expect = mem.bytes.clone();
            let (src, dst) = (0x10000usize, 0x10000 + dist as usize);
            // The architectural model: one element read, then written.
            let e = elem as usize;
            for i in 0..count as usize {
                let t: Vec<u8> = expect[src + i * e..src + i * e + e].to_vec();
                expect[dst + i * e..dst + i * e + e].copy_from_slice(&t);
            }
            let mut cpu = CpuState {
                eip: 0x1000,
                ..CpuState::default()
            };
            cpu.regs[crate::state::ESI] = src as u32;
            cpu.regs[crate::state::EDI] = dst as u32;
            cpu.regs[ECX] = count;
            loop {
                let r =
                    decode(&cpu, &mut mem).and_then(|i| step(&mut cpu, &mut mem, &mut NoEnv, &i));
                if r.is_err() {
                    break;
                }
            }
            assert!(mem.bytes == expect, "elem {elem} dist {dist}");
            assert_eq!(cpu.regs[ECX], 0);
        }
    }
}
