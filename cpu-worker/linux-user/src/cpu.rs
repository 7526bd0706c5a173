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

/// The execution engine of one guest thread: x86's interpreter for cold
/// code and Cranelift translation of hot blocks, with this thread's cursor
/// into the address space's log of code-page writes.
pub struct Engine {
    pub jit: x86::jit::Engine,
    code_seq: u64,
}

impl Engine {
    pub fn new() -> Self {
        let mut jit = x86::jit::Engine::new();
        if std::env::var_os("RQEMU_NOJIT").is_some() {
            jit.interpret_only = true;
        }
        if let Some((lo, hi)) = std::env::var("RQEMU_JIT_RANGE").ok().and_then(|v| {
            let (a, b) = v.split_once('-')?;
            let p = |x: &str| u32::from_str_radix(x.trim_start_matches("0x"), 16).ok();
            Some((p(a)?, p(b)?))
        }) {
            jit.translate_range = Some((lo, hi));
        }
        if let Some(n) = std::env::var("RQEMU_JIT_THRESHOLD")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            jit.hot_threshold = n;
        }
        Engine { jit, code_seq: 0 }
    }
}

/// The JIT's view of the guest memory: direct access at `base + addr`,
/// code-page write protection and the write log (mmap.rs).
struct JitMemory<'a, 'b> {
    mem: &'a mut GuestMemory<'b>,
    code_seq: &'a mut u64,
}

impl x86::mem::Memory for JitMemory<'_, '_> {
    fn read(&mut self, addr: u32, buf: &mut [u8]) -> Result<(), x86::mem::MemFault> {
        self.mem.read(addr, buf)
    }
    fn write(&mut self, addr: u32, data: &[u8]) -> Result<(), x86::mem::MemFault> {
        self.mem.write(addr, data)
    }
    fn fetch(&mut self, addr: u32, buf: &mut [u8]) -> Result<usize, x86::mem::MemFault> {
        self.mem.fetch(addr, buf)
    }
    fn cmpxchg(
        &mut self,
        addr: u32,
        expected: &[u8],
        new: &[u8],
        old: &mut [u8],
    ) -> Result<bool, x86::mem::MemFault> {
        self.mem.cmpxchg(addr, expected, new, old)
    }
}

impl x86::jit::DirectMemory for JitMemory<'_, '_> {
    fn host_base(&self) -> *mut u8 {
        self.mem.space.base() as *mut u8
    }
    fn protect_code(&mut self, page: u32) {
        self.mem.space.protect_code(page);
    }
    fn take_code_writes(&mut self, out: &mut Vec<u32>) {
        self.mem.space.code_writes_since(self.code_seq, out);
    }
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs guest code until an exception or an exit request (the engine: the
/// interpreter for cold code, translated code for hot blocks).
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
    let mut jm = JitMemory {
        mem,
        code_seq: &mut engine.code_seq,
    };
    match engine.jit.run(cpu, &mut jm, env) {
        x86::jit::Stop::Exception(e) => Stop::Exception(e),
        x86::jit::Stop::Interrupted => Stop::ExitRequest,
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
    engine.jit.dump_ir = proc.log.items.op;
    engine.jit.dump_asm = proc.log.items.out_asm;
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
        for d in engine.jit.dumps.drain(..) {
            proc.log.write(&d);
        }
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
