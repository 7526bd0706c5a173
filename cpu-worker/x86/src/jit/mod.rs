//! The execution engine: an interpreter for cold code and a Cranelift JIT
//! for hot blocks (DESIGN.md §4).
//!
//! Every block start is counted while it runs in the interpreter; once a
//! block has run `HOT_THRESHOLD` times it is translated. Translated code is
//! packed into one code buffer (`codebuf.rs`); a full buffer is a new
//! generation: every translation is dropped and the buffer reused. Writes to pages holding translated code are
//! reported by the memory (`DirectMemory::take_code_writes`) and drop the
//! blocks made from those pages.

mod codebuf;
mod entry;
pub mod translate;

use std::collections::HashMap;

use cranelift_codegen::ir::{types, AbiParam, Signature};
use cranelift_codegen::isa::CallConv;
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use iced_x86::Instruction;

pub use entry::recover_from_fault;
use translate::{ExitSlots, Helpers, Translator, EXIT_EXCEPTION, EXIT_FAULT, EXIT_NEXT};

use crate::interp::{self, Env};
use crate::mem::{Exception, Memory};
use crate::state::CpuState;

/// A guest memory that the translated code may access directly.
pub trait DirectMemory: Memory {
    /// Host address of guest linear address 0. Guest addresses 0..2^32 are
    /// reserved there with host protections equal to the guest's, so an
    /// access that the guest may not make faults on the host.
    fn host_base(&self) -> *mut u8;
    /// Translated code was made from guest page `page` (address >> 12):
    /// from now on a write to it must be detected (host write protection
    /// and the SIGSEGV handler, or the checked write path).
    fn protect_code(&mut self, page: u32);
    /// Appends the code pages written since the last call.
    fn take_code_writes(&mut self, out: &mut Vec<u32>);
}

/// Why `Engine::run` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Exception(Exception),
    /// `exit_request` was set.
    Interrupted,
}

/// Executions of a block in the interpreter before it is translated.
const HOT_THRESHOLD: u32 = 100;
/// Guest instructions per block at most.
const MAX_BLOCK_INSNS: usize = 64;
/// Code generated per generation before the cache is flushed.
const GENERATION_BYTES: usize = 64 << 20;
const FRONT_CACHE: usize = 4096;

struct TBlock {
    code: *const u8,
    /// The decoded instructions the translated code points into.
    _insns: Box<[Instruction]>,
    /// The successors of its direct exits (read by the translated code).
    _slots: Box<ExitSlots>,
}

/// A block's host code length and the (start, end, guest EIP) ranges of it.
type CodeInfo = (usize, Box<[(u32, u32, u32)]>);

/// A front-cache entry, read by translated code for indirect branches.
#[repr(C)]
#[derive(Clone, Copy)]
struct FrontEntry {
    eip: u64,
    code: u64,
}

const FRONT_EMPTY: FrontEntry = FrontEntry {
    eip: u64::MAX,
    code: 0,
};

#[repr(C)]
struct RunCtx<M, E> {
    /// Set by a block leaving through an empty exit slot (translate.rs
    /// CTX_LAST_SLOT): the dispatcher fills it.
    last_slot: usize,
    mem: *mut M,
    env: *mut E,
    exception: Option<Exception>,
}

/// Statistics for `-d exec`-style reports and the monitor.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub translated: u64,
    pub flushes: u64,
    pub invalidated: u64,
    pub interp_insns: u64,
    /// Entries from the dispatcher into translated code (chained blocks
    /// run without coming back).
    pub entries: u64,
    /// Calls of `run` (each syscall or signal returns from it).
    pub runs: u64,
}

pub struct Engine {
    /// The host ISA and the code buffer, made when the first block gets hot.
    isa: Option<OwnedTargetIsa>,
    code: Option<codebuf::CodeBuf>,
    blocks: HashMap<u32, TBlock>,
    counts: HashMap<u32, u32>,
    page_blocks: HashMap<u32, Vec<u32>>,
    /// Exit slots chained to each block (by its EIP), to unchain them.
    chained_to: HashMap<u32, Vec<usize>>,
    /// Invalidated blocks, kept until the generation goes (their slots may
    /// still be listed in `chained_to`, their code may still be running
    /// further up a chain in another... no: one engine per thread).
    dead: Vec<TBlock>,
    shim: *const u8,
    /// Host code of each block (address -> length and the guest EIP of
    /// each code range), to find the faulting guest instruction.
    code_map: std::collections::BTreeMap<usize, CodeInfo>,
    front: Box<[FrontEntry]>,
    ctx: Context,
    fctx: FunctionBuilderContext,
    code_writes: Vec<u32>,
    pub stats: Stats,
    /// Translation disabled (`-d nojit`-style debugging, or JIT failure).
    pub interpret_only: bool,
    /// Executions in the interpreter before a block is translated.
    pub hot_threshold: u32,
    /// Blocks to dispatch before `run` returns `Stop::Interrupted` (tests
    /// and single-stepping); `u64::MAX` for no limit.
    pub block_budget: u64,
    /// Record the Cranelift IR (`-d op`) and the host code (`-d out_asm`)
    /// of each translated block in `dumps`, for the caller to log.
    pub dump_ir: bool,
    pub dump_asm: bool,
    pub dumps: Vec<String>,
    /// Translate only blocks starting in [lo, hi) (debugging the JIT by
    /// bisection; everything else is interpreted).
    pub translate_range: Option<(u32, u32)>,
}

fn new_isa() -> Result<OwnedTargetIsa, String> {
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").map_err(|e| e.to_string())?;
    // The IR verifier costs more than the compilation of a small block.
    flags
        .set(
            "enable_verifier",
            if cfg!(debug_assertions) {
                "true"
            } else {
                "false"
            },
        )
        .map_err(|e| e.to_string())?;
    // Tail calls (block chaining) need frame pointers on x86-64.
    flags
        .set("preserve_frame_pointers", "true")
        .map_err(|e| e.to_string())?;
    cranelift_native::builder()
        .map_err(|e| e.to_string())?
        .finish(settings::Flags::new(flags))
        .map_err(|e| e.to_string())
}

/// Compiles the function in `ctx` and copies its code into `buf`. The code
/// must be position-independent (our blocks call helpers through constant
/// addresses): any relocation is refused.
/// Machine code placed in the buffer: address, length, disassembly (if
/// asked for) and the (start, end, guest EIP) ranges of its code.
type Emitted = (*const u8, usize, Option<String>, Vec<(u32, u32, u32)>);

fn emit(
    isa: &OwnedTargetIsa,
    buf: &mut codebuf::CodeBuf,
    ctx: &mut Context,
) -> Result<Emitted, String> {
    let mut cp = cranelift_codegen::control::ControlPlane::default();
    let compiled = ctx
        .compile(&**isa, &mut cp)
        .map_err(|e| format!("{:?}", e.inner))?;
    if !compiled.buffer.relocs().is_empty() {
        return Err("translated code needs relocation".into());
    }
    let locs = compiled
        .buffer
        .get_srclocs_sorted()
        .iter()
        .filter(|l| !l.loc.is_default())
        .map(|l| (l.start, l.end, l.loc.bits()))
        .collect();
    let bytes = compiled.code_buffer();
    let text = compiled.vcode.clone();
    let len = bytes.len();
    let p = buf
        .add(bytes)
        .ok_or_else(|| "code buffer full".to_string())?;
    Ok((p, len, text, locs))
}

/// Compiles the System V entry shim of a generation: `fn(cpu, ctx, code)`
/// calls block `code` in the block calling convention and returns its exit
/// code.
fn compile_shim(
    isa: &OwnedTargetIsa,
    buf: &mut codebuf::CodeBuf,
    ctx: &mut Context,
    fctx: &mut FunctionBuilderContext,
) -> Result<*const u8, String> {
    use cranelift_codegen::ir::InstBuilder;
    ctx.clear();
    let mut sig = Signature::new(CallConv::SystemV);
    for _ in 0..3 {
        sig.params.push(AbiParam::new(types::I64));
    }
    sig.returns.push(AbiParam::new(types::I64));
    ctx.func.signature = sig;
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let p = b.block_params(entry).to_vec();
        let bsig = b.import_signature(translate::block_signature());
        let call = b.ins().call_indirect(bsig, p[2], &[p[0], p[1]]);
        let r = b.inst_results(call)[0];
        b.ins().return_(&[r]);
        b.seal_all_blocks();
        b.finalize(isa.frontend_config());
    }
    let r = emit(isa, buf, ctx);
    ctx.clear();
    Ok(r?.0)
}

/// `RQEMU_JIT_STATS=1`: count the instructions translated code hands to
/// the interpreter, and print the most frequent every 2^22 calls (to find
/// what to lower next), and the engine's counters every 64 runs.
static HELPER_STATS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static HELPER_COUNTS: std::sync::Mutex<Option<HashMap<String, u64>>> = std::sync::Mutex::new(None);

fn count_helper(insn: &Instruction) {
    let Ok(mut g) = HELPER_COUNTS.lock() else {
        return;
    };
    let map = g.get_or_insert_with(HashMap::new);
    *map.entry(format!("{:?}", insn.code())).or_insert(0) += 1;
    let total: u64 = map.values().sum();
    if total % (1 << 22) == 0 {
        let mut v: Vec<_> = map.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1));
        let top: Vec<String> = v.iter().take(12).map(|(k, n)| format!("{k}:{n}")).collect();
        eprintln!("rqemu jit helper calls ({total}): {}", top.join(" "));
    }
}

/// `RQEMU_PERF_MAP=1`: name each translated block in /tmp/perf-PID.map
/// (perf's JIT symbol file) after the guest address it came from.
static PERF_MAP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn perf_map_add(code: usize, size: usize, guest: u32) {
    use std::io::Write;
    let path = format!("/tmp/perf-{}.map", std::process::id());
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{code:x} {size:x} guest_{guest:08x}");
    }
}

/// The interpreter helper called from translated code.
extern "C" fn helper_step<M: Memory, E: Env>(
    cpu: *mut CpuState,
    ctx: *mut RunCtx<M, E>,
    insn: *const Instruction,
) -> u64 {
    // SAFETY: translated code passes the pointers `Engine::run` gave it;
    // they are valid and unaliased for the duration of the call.
    let (cpu, ctx, insn) = unsafe { (&mut *cpu, &mut *ctx, &*insn) };
    // SAFETY: as above: `mem` and `env` outlive the run.
    let (mem, env) = unsafe { (&mut *ctx.mem, &mut *ctx.env) };
    if HELPER_STATS.load(std::sync::atomic::Ordering::Relaxed) {
        count_helper(insn);
    }
    match interp::step(cpu, mem, env, insn) {
        Ok(()) => EXIT_NEXT,
        Err(e) => {
            ctx.exception = Some(e);
            EXIT_EXCEPTION
        }
    }
}

/// The helper for x87 instructions: straight to the FPU module.
extern "C" fn helper_x87<M: Memory, E: Env>(
    cpu: *mut CpuState,
    ctx: *mut RunCtx<M, E>,
    insn: *const Instruction,
) -> u64 {
    // SAFETY: as in `helper_step`.
    let (cpu, ctx, insn) = unsafe { (&mut *cpu, &mut *ctx, &*insn) };
    // SAFETY: as in `helper_step`.
    let (mem, env) = unsafe { (&mut *ctx.mem, &mut *ctx.env) };
    match interp::step_family(cpu, mem, env, insn, interp::Family::X87) {
        Ok(()) => EXIT_NEXT,
        Err(e) => {
            ctx.exception = Some(e);
            EXIT_EXCEPTION
        }
    }
}

extern "C" fn helper_cond(cpu: *const CpuState, cc: u32) -> u32 {
    // SAFETY: translated code passes the CpuState it runs on.
    let cpu = unsafe { &*cpu };
    if cc == 2 {
        // Used for "CF as 0/1" too (condition B).
        return crate::flags::compute(cpu) & crate::state::CF;
    }
    crate::flags::condition(cpu, cc as u8) as u32
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.blocks.clear();
        self.dead.clear();
        self.front.fill(FRONT_EMPTY);
        self.code = None;
        entry::JIT_THREAD.with(|t| {
            t.code_lo.set(0);
            t.code_hi.set(0);
        });
    }
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine {
    pub fn new() -> Self {
        if std::env::var_os("RQEMU_PERF_MAP").is_some() {
            PERF_MAP.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if std::env::var_os("RQEMU_JIT_STATS").is_some() {
            HELPER_STATS.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        // The Cranelift module is made when the first block gets hot: short
        // programs never pay for it.
        Engine {
            isa: None,
            code: None,
            blocks: HashMap::new(),
            counts: HashMap::new(),
            page_blocks: HashMap::new(),
            chained_to: HashMap::new(),
            dead: Vec::new(),
            shim: std::ptr::null(),
            code_map: std::collections::BTreeMap::new(),
            front: vec![FRONT_EMPTY; FRONT_CACHE].into_boxed_slice(),
            ctx: Context::new(),
            fctx: FunctionBuilderContext::new(),
            code_writes: Vec::new(),
            stats: Stats::default(),
            interpret_only: false,
            hot_threshold: HOT_THRESHOLD,
            block_budget: u64::MAX,
            dump_ir: false,
            dump_asm: false,
            dumps: Vec::new(),
            translate_range: None,
        }
    }

    /// Drops every translation (e.g. after munmap of code or on request).
    pub fn flush(&mut self) {
        self.blocks.clear();
        self.page_blocks.clear();
        self.chained_to.clear();
        self.dead.clear();
        self.counts.clear();
        self.shim = std::ptr::null();
        self.code_map.clear();
        self.front.fill(FRONT_EMPTY);
        // No translated code runs (we are in the dispatcher) and every
        // pointer into the buffer was dropped just above.
        if let Some(c) = self.code.as_mut() {
            c.reset();
        }
        self.stats.flushes += 1;
        entry::JIT_THREAD.with(|t| {
            t.code_lo.set(0);
            t.code_hi.set(0);
        });
    }

    /// The guest instruction whose host code contains `rip`.
    fn guest_eip_of(&self, rip: usize) -> Option<u32> {
        let (&start, (len, locs)) = self.code_map.range(..=rip).next_back()?;
        if rip >= start + len {
            return None;
        }
        let off = (rip - start) as u32;
        locs.iter()
            .find(|&&(s, e, _)| off >= s && off < e)
            .map(|&(_, _, eip)| eip)
    }

    /// Drops the translations of the pages in `code_writes` (`u32::MAX`:
    /// all of them).
    fn apply_code_writes(&mut self) {
        if self.code_writes.contains(&u32::MAX) {
            self.code_writes.clear();
            self.flush();
            return;
        }
        while let Some(p) = self.code_writes.pop() {
            self.invalidate_page(p);
        }
    }

    /// Drops the translations made from guest page `page`.
    pub fn invalidate_page(&mut self, page: u32) {
        if let Some(list) = self.page_blocks.remove(&page) {
            for eip in list {
                if let Some(b) = self.blocks.remove(&eip) {
                    self.stats.invalidated += 1;
                    self.dead.push(b);
                }
                for slot in self.chained_to.remove(&eip).unwrap_or_default() {
                    // SAFETY: slots of live and dead blocks stay allocated
                    // until the generation is dropped, which also clears
                    // `chained_to`.
                    unsafe { *(slot as *mut usize) = 0 };
                }
                self.counts.remove(&eip);
            }
            self.front.fill(FRONT_EMPTY);
        }
    }

    /// Runs guest code until an exception or an exit request.
    pub fn run<M: DirectMemory, E: Env>(
        &mut self,
        cpu: &mut CpuState,
        mem: &mut M,
        env: &mut E,
    ) -> Stop {
        use std::sync::atomic::Ordering;
        let mut rctx = RunCtx::<M, E> {
            last_slot: 0,
            mem: mem as *mut M,
            env: env as *mut E,
            exception: None,
        };
        self.stats.runs += 1;
        if HELPER_STATS.load(Ordering::Relaxed) && self.stats.runs % 64 == 0 {
            eprintln!("rqemu engine: {:?}", self.stats);
        }
        loop {
            if cpu.exit_request.0.load(Ordering::Acquire) != 0 || self.block_budget == 0 {
                return Stop::Interrupted;
            }
            if self.block_budget != u64::MAX {
                self.block_budget -= 1;
            }
            // SAFETY: `rctx.mem` is `mem`, which we do not otherwise use
            // while this borrow lives.
            let m = unsafe { &mut *rctx.mem };
            m.take_code_writes(&mut self.code_writes);
            if !self.code_writes.is_empty() {
                self.apply_code_writes();
            }
            let eip = cpu.eip;
            let slot = (eip as usize) & (FRONT_CACHE - 1);
            let code = if self.front[slot].eip == eip as u64 {
                self.front[slot].code as *const u8
            } else if let Some(b) = self.blocks.get(&eip) {
                self.front[slot] = FrontEntry {
                    eip: eip as u64,
                    code: b.code as u64,
                };
                b.code
            } else {
                std::ptr::null()
            };
            // Chain the exit the last block left through to this block.
            let from = std::mem::take(&mut rctx.last_slot);
            if from != 0 && !code.is_null() {
                // SAFETY: `from` is an exit slot of a block of the live
                // generation (set by its code just now).
                unsafe { *(from as *mut usize) = code as usize };
                self.chained_to.entry(eip).or_default().push(from);
            }
            if code.is_null() {
                let in_range = self
                    .translate_range
                    .is_none_or(|(lo, hi)| eip >= lo && eip < hi);
                let hot = if self.interpret_only || !in_range {
                    false
                } else {
                    let c = self.counts.entry(eip).or_insert(0);
                    *c += 1;
                    *c >= self.hot_threshold
                };
                if hot && self.translate::<M, E>(cpu, m).is_ok() {
                    continue;
                }
                // Not hot yet, or not translatable (code that does not
                // decode): the interpreter runs it or raises its exception.
                if let Err(e) = self.interpret_block(cpu, m, env) {
                    return Stop::Exception(e);
                }
                continue;
            }
            self.stats.entries += 1;
            // SAFETY: `code` is a finalized block of the live generation,
            // compiled for this M and E; cpu and rctx outlive the call.
            let r = unsafe {
                entry::enter(
                    cpu as *mut CpuState as *mut u8,
                    &mut rctx as *mut RunCtx<M, E> as *mut u8,
                    code,
                    self.shim,
                )
            };
            match r {
                EXIT_NEXT => {}
                EXIT_EXCEPTION => {
                    if let Some(e) = rctx.exception.take() {
                        return Stop::Exception(e);
                    }
                }
                EXIT_FAULT => {
                    // The state is that of the start of the faulting
                    // instruction: running it again in the interpreter,
                    // whose accesses are checked, gives the exact
                    // exception (a read-modify-write reports a write, the
                    // first inaccessible byte, ...).
                    // SAFETY: as above.
                    let m = unsafe { &mut *rctx.mem };
                    // Inline accesses do not store EIP: find it from the
                    // host PC of the fault.
                    let rip = entry::JIT_THREAD.with(|t| t.fault_rip.get());
                    if let Some(eip) = self.guest_eip_of(rip) {
                        cpu.eip = eip;
                    }
                    let r = interp::decode(cpu, m).and_then(|i| interp::step(cpu, m, env, &i));
                    self.stats.interp_insns += 1;
                    // If it succeeds now (a write to a page with translated
                    // code, or another thread changed the mapping): carry on.
                    if let Err(e) = r {
                        return Stop::Exception(e);
                    }
                }
                _ => {}
            }
        }
    }

    /// Interprets from EIP to the end of the basic block.
    fn interpret_block<M: Memory, E: Env>(
        &mut self,
        cpu: &mut CpuState,
        mem: &mut M,
        env: &mut E,
    ) -> Result<(), Exception> {
        for _ in 0..MAX_BLOCK_INSNS {
            let insn = interp::decode(cpu, mem)?;
            interp::step(cpu, mem, env, &insn)?;
            self.stats.interp_insns += 1;
            if insn.flow_control() != iced_x86::FlowControl::Next {
                break;
            }
        }
        Ok(())
    }

    fn translate<M: DirectMemory, E: Env>(
        &mut self,
        cpu: &CpuState,
        mem: &mut M,
    ) -> Result<(), Exception> {
        if self.isa.is_none() || self.code.is_none() {
            match (new_isa(), codebuf::CodeBuf::new(GENERATION_BYTES)) {
                (Ok(i), Ok(c)) => {
                    self.isa = Some(i);
                    self.code = Some(c);
                }
                _ => {
                    self.interpret_only = true;
                    return Err(Exception::InvalidOpcode);
                }
            }
        }
        // A full buffer starts a new generation.
        if self
            .code
            .as_ref()
            .is_some_and(|c| c.used() > GENERATION_BYTES - (1 << 20))
        {
            self.flush();
        }
        let (Some(isa), Some(code_buf)) = (self.isa.as_ref(), self.code.as_mut()) else {
            return Err(Exception::InvalidOpcode);
        };
        let tcfg = isa.frontend_config();
        if self.shim.is_null() {
            self.shim = compile_shim(isa, code_buf, &mut self.ctx, &mut self.fctx)
                .map_err(|_| Exception::InvalidOpcode)?;
            let (lo, hi) = code_buf.range();
            entry::JIT_THREAD.with(|t| {
                t.code_lo.set(lo);
                t.code_hi.set(hi);
            });
        }
        // Decode the block.
        let start = cpu.eip;
        let mut insns = Vec::new();
        let mut probe = cpu.clone();
        loop {
            let insn = match interp::decode(&probe, mem) {
                Ok(i) => i,
                Err(e) if insns.is_empty() => return Err(e),
                Err(_) => break,
            };
            let flow = insn.flow_control();
            probe.eip = insn.next_ip32();
            insns.push(insn);
            if flow != iced_x86::FlowControl::Next || insns.len() >= MAX_BLOCK_INSNS {
                break;
            }
            // Stay within two pages.
            if (probe.eip >> 12) != (start >> 12) && (probe.eip & 0xfff) > 0 {
                break;
            }
        }
        let insns = insns.into_boxed_slice();
        let last_byte = insns
            .last()
            .map(|i| i.next_ip32().wrapping_sub(1))
            .unwrap_or(start);
        let pages = (start >> 12, last_byte >> 12);

        let sig = translate::block_signature();
        self.ctx.func.signature = sig.clone();
        let helpers = Helpers {
            step: helper_step::<M, E> as *const () as usize,
            x87: helper_x87::<M, E> as *const () as usize,
            cond: helper_cond as *const () as usize,
            front: self.front.as_ptr() as usize,
            front_mask: (FRONT_CACHE - 1) as u32,
        };
        let slots: Box<ExitSlots> = Box::new([0; 2]);
        {
            let mut b = FunctionBuilder::new(&mut self.ctx.func, &mut self.fctx);
            let mut t = Translator::new(&mut b, mem.host_base() as u64, helpers, &*slots);
            let n = insns.len();
            let live = translate::flag_liveness(&insns);
            for (i, insn) in insns.iter().enumerate() {
                if !t.instruction(insn, insn as *const Instruction, i + 1 == n, live[i]) {
                    break;
                }
            }
            t.finish();
            b.finalize(tcfg);
        }
        if self.dump_ir {
            self.dumps.push(format!(
                "OP: block at 0x{start:08x} ({} guest instructions)\n{}\n",
                insns.len(),
                self.ctx.func.display()
            ));
        }
        self.ctx.set_disasm(self.dump_asm);
        let emitted = emit(isa, code_buf, &mut self.ctx);
        self.ctx.clear();
        let (code, size, text, locs) = match emitted {
            Ok(r) => r,
            Err(_) => {
                // Full buffer: the next attempt starts a new generation.
                return Err(Exception::InvalidOpcode);
            }
        };
        if let Some(text) = text.filter(|_| self.dump_asm) {
            self.dumps
                .push(format!("OUT: block at 0x{start:08x}\n{text}\n"));
        }
        if PERF_MAP.load(std::sync::atomic::Ordering::Relaxed) {
            perf_map_add(code as usize, size, start);
        }
        self.code_map
            .insert(code as usize, (size, locs.into_boxed_slice()));
        mem.protect_code(pages.0);
        self.page_blocks.entry(pages.0).or_default().push(start);
        if pages.1 != pages.0 {
            mem.protect_code(pages.1);
            self.page_blocks.entry(pages.1).or_default().push(start);
        }
        self.blocks.insert(
            start,
            TBlock {
                code,
                _insns: insns,
                _slots: slots,
            },
        );
        self.stats.translated += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
