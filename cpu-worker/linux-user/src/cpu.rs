//! The CPU loop of a guest thread: run guest code until an exception or
//! an exit request (`run_cpu`, the one place an execution engine plugs
//! in), then turn `int $0x80` into a system call, other exceptions into
//! the signals Linux sends for them, and deliver pending signals.
//! Logging of `-d in_asm,exec,cpu,int` follows QEMU's user documentation.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use iced_x86::{FlowControl, Formatter, GasFormatter, Instruction};
use x86::interp;
use x86::mem::Exception;
use x86::state::{self, CpuState};

use crate::log::Log;
use crate::mmap::GuestMemory;
use crate::signal;
use crate::syscall;
use crate::task::{CpuEnv, Process, Thread};

/// Why `run_cpu` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Exception(Exception),
    /// Something (a signal, another thread) set the exit-request word.
    ExitRequest,
}

/// Per-thread state of the instruction/block trace.
pub struct Tracer<'a> {
    log: &'a Log,
    seen: HashSet<u32>,
    block_start: bool,
    fmt: GasFormatter,
}

impl<'a> Tracer<'a> {
    pub fn new(log: &'a Log) -> Self {
        Tracer {
            log,
            seen: HashSet::new(),
            block_start: true,
            fmt: GasFormatter::new(),
        }
    }

    fn format(&mut self, insn: &Instruction) -> String {
        let mut s = String::new();
        self.fmt.format(insn, &mut s);
        s
    }

    /// Logs a block (straight-line code up to a branch) the first time
    /// execution reaches it, as QEMU logs each translated block.
    fn block(&mut self, cpu: &CpuState, mem: &mut GuestMemory) {
        let items = self.log.items;
        let eip = cpu.eip;
        if items.exec {
            self.log.write(&format!(
                "Trace 0: 0x0 [{:08x}/{:08x}/{:08x}/00000000] \n",
                cpu.segs[state::CS].base,
                eip,
                0xb0
            ));
        }
        if items.cpu {
            self.log.write(&dump_cpu(cpu));
        }
        if items.in_asm && self.seen.insert(eip) {
            let mut out = String::from("----------------\nIN: \n");
            let mut c = cpu.clone();
            for _ in 0..64 {
                let Ok(insn) = interp::decode(&c, mem) else {
                    break;
                };
                out.push_str(&format!("0x{:08x}:  {}\n", c.eip, self.format(&insn)));
                if insn.flow_control() != FlowControl::Next {
                    break;
                }
                let next = insn.next_ip32();
                if next & !0xfff != eip & !0xfff {
                    break;
                }
                c.eip = next;
            }
            out.push('\n');
            self.log.write(&out);
        }
    }
}

pub fn dump_cpu(cpu: &CpuState) -> String {
    let r = &cpu.regs;
    let f = cpu.eflags();
    let fl: String = [
        (state::OF, 'O'),
        (state::DF, 'D'),
        (state::SF, 'S'),
        (state::ZF, 'Z'),
        (state::AF, 'A'),
        (state::PF, 'P'),
        (state::CF, 'C'),
    ]
    .iter()
    .map(|(b, c)| if f & b != 0 { *c } else { '-' })
    .collect();
    let mut s = format!(
        "EAX={:08x} EBX={:08x} ECX={:08x} EDX={:08x}\n\
         ESI={:08x} EDI={:08x} EBP={:08x} ESP={:08x}\n\
         EIP={:08x} EFL={:08x} [{}] CPL=3 II=0 A20=1 SMM=0 HLT=0\n",
        r[state::EAX],
        r[state::EBX],
        r[state::ECX],
        r[state::EDX],
        r[state::ESI],
        r[state::EDI],
        r[state::EBP],
        r[state::ESP],
        cpu.eip,
        f,
        fl
    );
    for (name, i) in [
        ("ES", 0),
        ("CS", 1),
        ("SS", 2),
        ("DS", 3),
        ("FS", 4),
        ("GS", 5),
    ] {
        let sg = &cpu.segs[i];
        s.push_str(&format!(
            "{name} ={:04x} {:08x} {:08x} {:08x}\n",
            sg.selector, sg.base, sg.limit, sg.flags
        ));
    }
    s
}

const CACHE_SLOTS: usize = 4096;

/// The interpreter's engine state: decoded instructions of read-only
/// code, keyed by EIP, dropped whenever the mappings change (so code that
/// is not writable cannot change under a cached decoding).
pub struct Engine {
    generation: u64,
    tags: Vec<u32>,
    insns: Vec<Instruction>,
}

impl Engine {
    pub fn new() -> Self {
        Engine {
            generation: u64::MAX,
            tags: vec![u32::MAX; CACHE_SLOTS],
            insns: vec![Instruction::default(); CACHE_SLOTS],
        }
    }

    fn decode(&mut self, cpu: &CpuState, mem: &mut GuestMemory) -> Result<Instruction, Exception> {
        let g = mem.space.generation();
        if g != self.generation {
            self.tags.fill(u32::MAX);
            self.generation = g;
        }
        let eip = cpu.eip;
        let cacheable = cpu.segs[state::CS].base == 0;
        let slot = ((eip ^ (eip >> 12)) as usize) & (CACHE_SLOTS - 1);
        if cacheable && self.tags[slot] == eip {
            return Ok(self.insns[slot]);
        }
        let insn = interp::decode(cpu, mem)?;
        let last = eip.wrapping_add(insn.len() as u32).wrapping_sub(1);
        let ro = |a: u32| mem.space.page_flags(a) & crate::mmap::P_WRITE == 0;
        if cacheable && ro(eip) && ro(last) {
            self.tags[slot] = eip;
            self.insns[slot] = insn;
        }
        Ok(insn)
    }
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs guest code until an exception or an exit request. This is the
/// execution engine's entry: the interpreter now, translated code later.
pub fn run_cpu(
    engine: &mut Engine,
    cpu: &mut CpuState,
    mem: &mut GuestMemory,
    env: &mut CpuEnv,
    tracer: Option<&mut Tracer>,
) -> Stop {
    if let Some(tr) = tracer {
        return run_traced(cpu, mem, env, tr);
    }
    loop {
        if cpu.exit_request.0.load(Ordering::Relaxed) != 0 {
            return Stop::ExitRequest;
        }
        let insn = match engine.decode(cpu, mem) {
            Ok(i) => i,
            Err(e) => return Stop::Exception(e),
        };
        if let Err(e) = interp::step(cpu, mem, env, &insn) {
            return Stop::Exception(e);
        }
    }
}

fn run_traced(
    cpu: &mut CpuState,
    mem: &mut GuestMemory,
    env: &mut CpuEnv,
    tr: &mut Tracer,
) -> Stop {
    loop {
        if cpu.exit_request.0.load(Ordering::Relaxed) != 0 {
            tr.block_start = true;
            return Stop::ExitRequest;
        }
        if tr.block_start {
            tr.block(cpu, mem);
            tr.block_start = false;
        }
        let insn = match interp::decode(cpu, mem) {
            Ok(i) => i,
            Err(e) => {
                tr.block_start = true;
                return Stop::Exception(e);
            }
        };
        if insn.flow_control() != FlowControl::Next {
            tr.block_start = true;
        }
        if let Err(e) = interp::step(cpu, mem, env, &insn) {
            tr.block_start = true;
            return Stop::Exception(e);
        }
    }
}

/// Runs a guest thread until it exits.
pub fn cpu_loop(t: &mut Thread, proc: &Process) {
    let mut engine = Engine::new();
    let mut tracer = if proc.log.items.per_block() {
        Some(Tracer::new(&proc.log))
    } else {
        None
    };
    loop {
        let stop = {
            let mut mem = GuestMemory { space: &proc.space };
            let mut env = CpuEnv { gdt: t.cpu.gdt };
            run_cpu(&mut engine, &mut t.cpu, &mut mem, &mut env, tracer.as_mut())
        };
        match stop {
            Stop::ExitRequest => {
                t.cpu.exit_request.0.store(0, Ordering::Release);
            }
            Stop::Exception(Exception::SoftwareInterrupt(0x80)) => {
                if let syscall::Flow::ExitThread = syscall::dispatch(t, proc) {
                    return;
                }
            }
            Stop::Exception(e) => {
                if proc.log.items.int {
                    proc.log.write(&format!(
                        "qemu: exception {:?} at eip={:08x}\n",
                        e, t.cpu.eip
                    ));
                }
                if let Exception::SoftwareInterrupt(_) = e {
                    // INT n through a DPL-0 gate faults on the instruction.
                    t.cpu.eip = t.cpu.eip.wrapping_sub(2);
                }
                let (sig, info, fault) = signal::exception_signal(&t.cpu, e);
                signal::force(t, proc, sig, info, fault);
            }
        }
        signal::deliver_pending(t, proc);
    }
}
