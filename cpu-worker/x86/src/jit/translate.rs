//! Translation of one guest basic block to a Cranelift function
//! `extern "C" fn(cpu: *mut CpuState, ctx: *mut u8) -> u64`.
//!
//! A block is straight-line code: side exits (faults in helpers) leave the
//! function, and only the last instruction branches. Guest registers and
//! the lazy flag record are kept as SSA values while the block runs and
//! written back ("synced") before anything that can observe the state: a
//! guest memory access (it may fault: the signal handler then abandons the
//! block, so the state in memory must be exact, with EIP on the faulting
//! instruction), a helper call, and the block's end.
//!
//! Instructions without a lowering here run through the interpreter
//! (`helper_step`), which keeps every instruction available while the
//! common ones run as native code.

use std::mem::offset_of;

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::AtomicRmwOp;
use cranelift_codegen::ir::{types, AbiParam, Block, InstBuilder, MemFlagsData, Signature, Value};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::FunctionBuilder;
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use crate::flags::{self, CcOp};
use crate::state::{CpuState, ESP};

/// Exit codes returned by a block.
pub const EXIT_NEXT: u64 = 0;
pub const EXIT_EXCEPTION: u64 = 1;
/// Set by the fault handler through `recover_from_fault`.
pub const EXIT_FAULT: u64 = 2;

/// Addresses of the helpers a block may call.
#[derive(Clone, Copy)]
pub struct Helpers {
    /// `fn(cpu, ctx, insn: *const Instruction) -> u64` (0 or EXIT_EXCEPTION)
    pub step: usize,
    /// The same for x87 instructions, without the general dispatch.
    pub x87: usize,
    /// `fn(cpu, cc: u32) -> u32`
    pub cond: usize,
    /// The engine's front cache: `FRONT_CACHE` entries of (eip: u64, code:
    /// u64), looked up inline for indirect branches.
    pub front: usize,
    pub front_mask: u32,
}

/// Where a block's direct exits keep their successor (chaining): one
/// pointer-sized cell per exit, null until the dispatcher fills it.
pub type ExitSlots = [usize; 2];

/// The block calling convention: blocks tail-call their successors.
pub const BLOCK_CALL_CONV: CallConv = CallConv::Tail;

/// Offset in the run context of the cell where a block leaving through an
/// unfilled exit slot stores that slot's address.
pub const CTX_LAST_SLOT: i32 = 0;

const I32: types::Type = types::I32;
const I64: types::Type = types::I64;

fn reg_off(n: usize) -> i32 {
    (offset_of!(CpuState, regs) + 4 * n) as i32
}

const EIP_OFF: i32 = offset_of!(CpuState, eip) as i32;
const CC_OP_OFF: i32 = offset_of!(CpuState, cc_op) as i32;
const CC_DST_OFF: i32 = offset_of!(CpuState, cc_dst) as i32;
const CC_SRC_OFF: i32 = offset_of!(CpuState, cc_src) as i32;
const CC_SRC2_OFF: i32 = offset_of!(CpuState, cc_src2) as i32;

fn seg_base_off(seg: usize) -> i32 {
    (offset_of!(CpuState, segs) + seg * std::mem::size_of::<crate::state::Segment>() + 4) as i32
}

#[derive(Clone, Copy)]
struct Pending {
    op: u32,
    dst: Value,
    src: Value,
    src2: Value,
}

pub struct Translator<'a, 'b> {
    pub b: &'b mut FunctionBuilder<'a>,
    cpu: Value,
    ctx: Value,
    base: Value,
    helpers: Helpers,
    regs: [Option<Value>; 8],
    dirty: u8,
    /// The flag record of the last flag-setting instruction, if this block
    /// produced it; `flags_dirty` when not yet stored.
    flags: Option<Pending>,
    flags_dirty: bool,
    /// The EIP value the state holds now, if known.
    eip_in_state: Option<u32>,
    /// Flags of the current instruction some later one reads.
    flags_needed: u32,
    /// Flags some later instruction may read (iced-x86 RflagsBits).
    live_after: u32,
    exit: Block,
    step_sig: cranelift_codegen::ir::SigRef,
    cond_sig: cranelift_codegen::ir::SigRef,
    block_sig: cranelift_codegen::ir::SigRef,
    slots: *const ExitSlots,
    next_slot: usize,
}

/// `fn(cpu: i64, ctx: i64) -> i64` in the block calling convention.
pub fn block_signature() -> Signature {
    let mut sig = Signature::new(BLOCK_CALL_CONV);
    sig.params.push(AbiParam::new(I64));
    sig.params.push(AbiParam::new(I64));
    sig.returns.push(AbiParam::new(I64));
    sig
}

const EXIT_REQ_OFF: i32 = offset_of!(CpuState, exit_request) as i32;

fn mf() -> MemFlagsData {
    // Guest memory: may trap (the handler recovers), little-endian.
    MemFlagsData::new()
}

fn sf() -> MemFlagsData {
    // CpuState: always valid.
    MemFlagsData::trusted()
}

/// Whether the translator lowers `insn` itself (else: interpreter helper).
pub fn lowered(insn: &Instruction) -> bool {
    let all_gpr_or_imm = (0..insn.op_count()).all(|i| match insn.op_kind(i) {
        OpKind::Register => {
            insn.op_register(i).is_gpr32()
                || insn.op_register(i).is_gpr16()
                || insn.op_register(i).is_gpr8()
        }
        OpKind::Memory => insn.memory_base().size() != 2 && insn.memory_index().size() != 2,
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::NearBranch32 => true,
        _ => false,
    });
    if lowered_sse(insn) {
        return true;
    }
    if !all_gpr_or_imm {
        return false;
    }
    // Locked read-modify-writes become host atomics (32-bit forms).
    let atomic_ok = matches!(
        insn.mnemonic(),
        Mnemonic::Xchg | Mnemonic::Cmpxchg | Mnemonic::Xadd
    ) && op_bytes(insn, 0) == 4;
    if insn.has_lock_prefix() && !atomic_ok {
        return false;
    }
    match insn.mnemonic() {
        Mnemonic::Mov
        | Mnemonic::Movzx
        | Mnemonic::Movsx
        | Mnemonic::Lea
        | Mnemonic::Add
        | Mnemonic::Sub
        | Mnemonic::And
        | Mnemonic::Or
        | Mnemonic::Xor
        | Mnemonic::Cmp
        | Mnemonic::Test
        | Mnemonic::Inc
        | Mnemonic::Dec
        | Mnemonic::Neg
        | Mnemonic::Not
        | Mnemonic::Nop
        | Mnemonic::Cdq
        | Mnemonic::Cwde => true,
        Mnemonic::Push | Mnemonic::Pop => insn.stack_pointer_increment().abs() == 4,
        Mnemonic::Call => {
            insn.op_kind(0) == OpKind::NearBranch32 || insn.stack_pointer_increment() == -4
        }
        Mnemonic::Ret => matches!(
            insn.code(),
            iced_x86::Code::Retnd | iced_x86::Code::Retnd_imm16
        ),
        Mnemonic::Jmp => !insn.is_jmp_far() && !insn.is_jmp_far_indirect(),
        Mnemonic::Shl | Mnemonic::Sal | Mnemonic::Shr | Mnemonic::Sar => {
            // Constant non-zero counts; or CL on 32 bits when the flags are
            // dead (checked in `instruction`: a zero count keeps them).
            insn.op_count() == 1
                || matches!(insn.op_kind(1), OpKind::Immediate8) && insn.immediate8() & 0x1f != 0
                || insn.op_kind(1) == OpKind::Register
                    && insn.op_register(1) == Register::CL
                    && op_bytes(insn, 0) == 4
        }
        Mnemonic::Bt => {
            op_bytes(insn, 0) == 4
                && (insn.op_kind(1) == OpKind::Immediate8
                    || insn.op_kind(0) == OpKind::Register && insn.op_kind(1) == OpKind::Register)
        }
        Mnemonic::Cld | Mnemonic::Std => true,
        Mnemonic::Imul => insn.op_count() >= 2 || op_bytes(insn, 0) == 4,
        Mnemonic::Mul => op_bytes(insn, 0) == 4,
        Mnemonic::Shld | Mnemonic::Shrd => {
            op_bytes(insn, 0) == 4
                && insn.op_kind(2) == OpKind::Immediate8
                && insn.immediate8() & 0x1f != 0
        }
        Mnemonic::Adc | Mnemonic::Sbb => true,
        Mnemonic::Rol | Mnemonic::Ror => {
            // Constant counts; the flags (CF, OF) only when nobody reads
            // them (checked at translation, see `instruction`).
            insn.op_count() == 1
                || matches!(insn.op_kind(1), OpKind::Immediate8) && insn.immediate8() & 0x1f != 0
        }
        Mnemonic::Bswap => insn.op_register(0).is_gpr32(),
        Mnemonic::Xchg => {
            insn.op_kind(0) == OpKind::Register && insn.op_kind(1) == OpKind::Register
                || atomic_ok && insn.op_kind(1) == OpKind::Register
        }
        Mnemonic::Cmpxchg | Mnemonic::Xadd => atomic_ok && insn.op_kind(0) == OpKind::Memory,
        Mnemonic::Div | Mnemonic::Idiv => op_bytes(insn, 0) == 4,
        _ if insn.is_jcc_short_or_near() => true,
        m if crate::interp::is_setcc(m) || crate::interp::is_cmovcc(m) => true,
        _ => false,
    }
}

/// SSE/SSE2 integer instructions lowered to Cranelift vector code (the
/// ones string and memory functions live on). Others go to the
/// interpreter. Legacy-SSE memory operands must be 16-byte aligned except
/// for the explicitly unaligned moves; a misaligned one leaves through the
/// interpreter, which raises #GP.
pub fn lowered_sse(insn: &Instruction) -> bool {
    use iced_x86::Code as C;
    let xmm_or_mem = |i: u32| match insn.op_kind(i) {
        OpKind::Register => insn.op_register(i).is_xmm(),
        OpKind::Memory => insn.memory_base().size() != 2 && insn.memory_index().size() != 2,
        _ => false,
    };
    if insn.has_lock_prefix() {
        return false;
    }
    match insn.code() {
        C::Movdqa_xmm_xmmm128
        | C::Movdqa_xmmm128_xmm
        | C::Movdqu_xmm_xmmm128
        | C::Movdqu_xmmm128_xmm
        | C::Movaps_xmm_xmmm128
        | C::Movaps_xmmm128_xmm
        | C::Movups_xmm_xmmm128
        | C::Movups_xmmm128_xmm
        | C::Movapd_xmm_xmmm128
        | C::Movapd_xmmm128_xmm
        | C::Movupd_xmm_xmmm128
        | C::Movupd_xmmm128_xmm
        | C::Lddqu_xmm_m128
        | C::Pxor_xmm_xmmm128
        | C::Por_xmm_xmmm128
        | C::Pand_xmm_xmmm128
        | C::Pandn_xmm_xmmm128
        | C::Xorps_xmm_xmmm128
        | C::Xorpd_xmm_xmmm128
        | C::Pcmpeqb_xmm_xmmm128
        | C::Pcmpeqw_xmm_xmmm128
        | C::Pcmpeqd_xmm_xmmm128
        | C::Pcmpgtb_xmm_xmmm128
        | C::Pminub_xmm_xmmm128
        | C::Pmaxub_xmm_xmmm128
        | C::Psubb_xmm_xmmm128
        | C::Paddb_xmm_xmmm128
        | C::Paddd_xmm_xmmm128
        | C::Psubd_xmm_xmmm128 => (0..insn.op_count()).all(xmm_or_mem),
        C::Pmovmskb_r32_xmm => true,
        C::Movd_xmm_rm32 | C::Movd_rm32_xmm => (0..2).all(|i| match insn.op_kind(i) {
            OpKind::Register => insn.op_register(i).is_xmm() || insn.op_register(i).is_gpr32(),
            OpKind::Memory => insn.memory_base().size() != 2 && insn.memory_index().size() != 2,
            _ => false,
        }),
        C::Movq_xmm_xmmm64 | C::Movq_xmmm64_xmm => (0..2).all(xmm_or_mem),
        C::Movlpd_xmm_m64
        | C::Movhpd_xmm_m64
        | C::Movlps_xmm_m64
        | C::Movhps_xmm_m64
        | C::Movlpd_m64_xmm
        | C::Movhpd_m64_xmm
        | C::Movlps_m64_xmm
        | C::Movhps_m64_xmm => (0..2).all(xmm_or_mem),
        _ => false,
    }
}

/// The six arithmetic flags in iced-x86's `RflagsBits` encoding.
const ARITH: u32 = 0x3f;

/// For each instruction of a block, the arithmetic flags it writes that a
/// later instruction may read (all flags are live at the block's end).
/// Flags of an instruction whose flags nobody reads are not computed.
///
/// Shifts and rotates by CL leave the flags alone when the count is zero,
/// so they count as reading what they write.
pub fn flag_liveness(insns: &[Instruction]) -> Vec<(u32, u32)> {
    let mut live = ARITH;
    let mut needed = vec![(0u32, 0u32); insns.len()];
    for (i, insn) in insns.iter().enumerate().rev() {
        // Flags left "undefined" keep their old values on real CPUs (and in
        // the interpreter): they do not end the life of earlier flags.
        let modified = (insn.rflags_written() | insn.rflags_cleared() | insn.rflags_set()) & ARITH;
        let mut read = insn.rflags_read() & ARITH;
        let variable_count = matches!(
            insn.mnemonic(),
            Mnemonic::Shl
                | Mnemonic::Sal
                | Mnemonic::Shr
                | Mnemonic::Sar
                | Mnemonic::Rol
                | Mnemonic::Ror
                | Mnemonic::Rcl
                | Mnemonic::Rcr
                | Mnemonic::Shld
                | Mnemonic::Shrd
        ) && (insn.op_count() < 2
            || insn.op_kind(insn.op_count() - 1) != OpKind::Immediate8
            || insn.immediate8() & 0x1f == 0);
        if variable_count && insn.op_count() >= 2 {
            read |= modified;
        }
        needed[i] = (modified & live, live);
        live = (live & !modified) | read;
    }
    needed
}

fn size_mask(bytes: u32) -> i64 {
    match bytes {
        1 => 0xff,
        2 => 0xffff,
        _ => 0xffff_ffff,
    }
}

fn op_bytes(insn: &Instruction, i: u32) -> u32 {
    crate::interp::operand::op_size(insn, i)
}

impl<'a, 'b> Translator<'a, 'b> {
    /// Sets up the entry block; `host_base` is where guest address 0 is
    /// mapped in this process.
    pub fn new(
        b: &'b mut FunctionBuilder<'a>,
        host_base: u64,
        helpers: Helpers,
        slots: *const ExitSlots,
    ) -> Self {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let cpu = b.block_params(entry)[0];
        let ctx = b.block_params(entry)[1];
        let base = b.ins().iconst(I64, host_base as i64);
        let exit = b.create_block();
        b.append_block_param(exit, I64);
        let mut step = Signature::new(CallConv::SystemV);
        step.params
            .extend([AbiParam::new(I64), AbiParam::new(I64), AbiParam::new(I64)]);
        step.returns.push(AbiParam::new(I64));
        let step_sig = b.import_signature(step);
        let mut cond = Signature::new(CallConv::SystemV);
        cond.params.extend([AbiParam::new(I64), AbiParam::new(I32)]);
        cond.returns.push(AbiParam::new(I32));
        let cond_sig = b.import_signature(cond);
        let block_sig = b.import_signature(block_signature());
        Translator {
            b,
            cpu,
            ctx,
            base,
            helpers,
            regs: [None; 8],
            dirty: 0,
            flags: None,
            flags_dirty: false,
            eip_in_state: None,
            flags_needed: ARITH,
            live_after: ARITH,
            exit,
            step_sig,
            cond_sig,
            block_sig,
            slots,
            next_slot: 0,
        }
    }

    /// Emits the shared exit block and seals everything.
    pub fn finish(self) {
        self.b.switch_to_block(self.exit);
        let code = self.b.block_params(self.exit)[0];
        self.b.ins().return_(&[code]);
        self.b.seal_all_blocks();
    }

    fn iconst(&mut self, v: u32) -> Value {
        self.b.ins().iconst(I32, v as i64)
    }

    fn reg32(&mut self, n: usize) -> Value {
        if let Some(v) = self.regs[n] {
            return v;
        }
        let v = self.b.ins().load(I32, sf(), self.cpu, reg_off(n));
        self.regs[n] = Some(v);
        v
    }

    fn set_reg32(&mut self, n: usize, v: Value) {
        self.regs[n] = Some(v);
        self.dirty |= 1 << n;
    }

    fn read_reg(&mut self, r: Register) -> Value {
        let n = r.number() & 7;
        match r.size() {
            1 if n >= 4 => {
                let full = self.reg32(n - 4);
                let s = self.b.ins().ushr_imm_u(full, 8);
                self.b.ins().band_imm_u(s, 0xff)
            }
            1 => {
                let full = self.reg32(n);
                self.b.ins().band_imm_u(full, 0xff)
            }
            2 => {
                let full = self.reg32(n);
                self.b.ins().band_imm_u(full, 0xffff)
            }
            _ => self.reg32(n),
        }
    }

    fn write_reg(&mut self, r: Register, v: Value) {
        let n = r.number() & 7;
        match r.size() {
            1 => {
                let (idx, shift) = if n >= 4 { (n - 4, 8) } else { (n, 0) };
                let full = self.reg32(idx);
                let keep = self
                    .b
                    .ins()
                    .band_imm_u(full, !(0xffi64 << shift) & 0xffff_ffff);
                let low = self.b.ins().band_imm_u(v, 0xff);
                let low = if shift != 0 {
                    self.b.ins().ishl_imm_u(low, shift)
                } else {
                    low
                };
                let nv = self.b.ins().bor(keep, low);
                self.set_reg32(idx, nv);
            }
            2 => {
                let full = self.reg32(n);
                let keep = self.b.ins().band_imm_u(full, 0xffff_0000);
                let low = self.b.ins().band_imm_u(v, 0xffff);
                let nv = self.b.ins().bor(keep, low);
                self.set_reg32(n, nv);
            }
            _ => self.set_reg32(n, v),
        }
    }

    /// Writes back dirty registers, the flag record and EIP.
    fn sync(&mut self, eip: u32) {
        for n in 0..8 {
            if self.dirty & (1 << n) != 0 {
                if let Some(v) = self.regs[n] {
                    self.b.ins().store(sf(), v, self.cpu, reg_off(n));
                }
            }
        }
        self.dirty = 0;
        self.sync_flags();
        self.store_eip(eip);
    }

    fn sync_flags(&mut self) {
        if self.flags_dirty {
            if let Some(p) = self.flags {
                let op = self.iconst(p.op);
                self.b.ins().store(sf(), op, self.cpu, CC_OP_OFF);
                self.b.ins().store(sf(), p.dst, self.cpu, CC_DST_OFF);
                self.b.ins().store(sf(), p.src, self.cpu, CC_SRC_OFF);
                self.b.ins().store(sf(), p.src2, self.cpu, CC_SRC2_OFF);
            }
            self.flags_dirty = false;
        }
    }

    fn store_eip(&mut self, eip: u32) {
        if self.eip_in_state != Some(eip) {
            let v = self.iconst(eip);
            self.b.ins().store(sf(), v, self.cpu, EIP_OFF);
            self.eip_in_state = Some(eip);
        }
    }

    fn set_flags(&mut self, kind: CcOp, bytes: u32, dst: Value, src: Value, src2: Value) {
        if self.flags_needed == 0 {
            return;
        }
        self.flags = Some(Pending {
            op: flags::op(kind, bytes),
            dst,
            src,
            src2,
        });
        self.flags_dirty = true;
    }

    /// Linear address of the memory operand. Only FS and GS bases are
    /// added: user mode's other segments are flat (the interpreter, used by
    /// the system emulator's modes later, adds every base).
    fn ea(&mut self, insn: &Instruction) -> Value {
        let mut a = self.offset_value(insn);
        let seg = crate::interp::operand::seg_index(insn.memory_segment());
        if seg == crate::state::FS || seg == crate::state::GS {
            let base = self.b.ins().load(I32, sf(), self.cpu, seg_base_off(seg));
            a = self.b.ins().iadd(a, base);
        }
        a
    }

    /// The offset part of the memory operand (what LEA computes).
    fn offset_value(&mut self, insn: &Instruction) -> Value {
        let mut a = self.iconst(insn.memory_displacement32());
        if insn.memory_base() != Register::None {
            let r = self.read_reg(insn.memory_base());
            a = self.b.ins().iadd(a, r);
        }
        if insn.memory_index() != Register::None {
            let r = self.read_reg(insn.memory_index());
            let s = insn.memory_index_scale();
            let scaled = if s > 1 {
                self.b.ins().ishl_imm_u(r, s.trailing_zeros() as i64)
            } else {
                r
            };
            a = self.b.ins().iadd(a, scaled);
        }
        a
    }

    fn host_addr(&mut self, addr: Value) -> Value {
        let wide = self.b.ins().uextend(I64, addr);
        self.b.ins().iadd(self.base, wide)
    }

    fn load(&mut self, addr: Value, bytes: u32) -> Value {
        self.sync_regs_and_flags();
        let h = self.host_addr(addr);
        match bytes {
            1 => self.b.ins().uload8(I32, mf(), h, 0),
            2 => self.b.ins().uload16(I32, mf(), h, 0),
            _ => self.b.ins().load(I32, mf(), h, 0),
        }
    }

    fn store(&mut self, addr: Value, v: Value, bytes: u32) {
        self.sync_regs_and_flags();
        let h = self.host_addr(addr);
        match bytes {
            1 => self.b.ins().istore8(mf(), v, h, 0),
            2 => self.b.ins().istore16(mf(), v, h, 0),
            _ => self.b.ins().store(mf(), v, h, 0),
        };
    }

    fn read_op(&mut self, insn: &Instruction, i: u32) -> Value {
        match insn.op_kind(i) {
            OpKind::Register => self.read_reg(insn.op_register(i)),
            OpKind::Memory => {
                let a = self.ea(insn);
                self.load(a, op_bytes(insn, i))
            }
            OpKind::Immediate8 => self.iconst(insn.immediate8() as u32),
            OpKind::Immediate16 => self.iconst(insn.immediate16() as u32),
            OpKind::Immediate8to16 => self.iconst(insn.immediate8to16() as u16 as u32),
            OpKind::Immediate8to32 => self.iconst(insn.immediate8to32() as u32),
            _ => self.iconst(insn.immediate32()),
        }
    }

    /// Writes operand `i`; `addr` is the already computed address for a
    /// memory operand (read-modify-write forms compute it once).
    fn write_op(&mut self, insn: &Instruction, i: u32, addr: Option<Value>, v: Value) {
        match insn.op_kind(i) {
            OpKind::Register => self.write_reg(insn.op_register(i), v),
            _ => {
                let a = match addr {
                    Some(a) => a,
                    None => self.ea(insn),
                };
                self.store(a, v, op_bytes(insn, i));
            }
        }
    }

    /// Reads operand 0 for a read-modify-write, returning its address too.
    fn read_rmw(&mut self, insn: &Instruction) -> (Value, Option<Value>) {
        if insn.op_kind(0) == OpKind::Memory {
            let a = self.ea(insn);
            let v = self.load(a, op_bytes(insn, 0));
            (v, Some(a))
        } else {
            (self.read_reg(insn.op_register(0)), None)
        }
    }

    fn mask(&mut self, v: Value, bytes: u32) -> Value {
        if bytes == 4 {
            v
        } else {
            self.b.ins().band_imm_u(v, size_mask(bytes))
        }
    }

    fn sign_extend(&mut self, v: Value, bytes: u32) -> Value {
        match bytes {
            1 => {
                let n = self.b.ins().ireduce(types::I8, v);
                self.b.ins().sextend(I32, n)
            }
            2 => {
                let n = self.b.ins().ireduce(types::I16, v);
                self.b.ins().sextend(I32, n)
            }
            _ => v,
        }
    }

    fn push(&mut self, v: Value) {
        let sp = self.reg32(ESP);
        let nsp = self.b.ins().iadd_imm_s(sp, -4);
        self.store(nsp, v, 4);
        self.set_reg32(ESP, nsp);
    }

    /// Leaves the block for the computed address `target`: the front
    /// cache is probed inline and a hit is tail-called.
    fn end_at(&mut self, target: Value) {
        self.sync_regs_and_flags();
        self.b.ins().store(sf(), target, self.cpu, EIP_OFF);
        let req = self.b.ins().load(I32, sf(), self.cpu, EXIT_REQ_OFF);
        let probe = self.b.create_block();
        let back = self.b.create_block();
        self.b.ins().brif(req, back, &[], probe, &[]);
        self.b.switch_to_block(probe);
        let idx = self
            .b
            .ins()
            .band_imm_u(target, self.helpers.front_mask as i64);
        let idx = self.b.ins().uextend(I64, idx);
        let off = self.b.ins().ishl_imm_u(idx, 4);
        let front = self.b.ins().iconst(I64, self.helpers.front as i64);
        let entry = self.b.ins().iadd(front, off);
        let tag = self.b.ins().load(I64, sf(), entry, 0);
        let want = self.b.ins().uextend(I64, target);
        let hit = self.b.ins().icmp(IntCC::Equal, tag, want);
        let call = self.b.create_block();
        self.b.ins().brif(hit, call, &[], back, &[]);
        self.b.switch_to_block(call);
        let code = self.b.ins().load(I64, sf(), entry, 8);
        self.b
            .ins()
            .return_call_indirect(self.block_sig, code, &[self.cpu, self.ctx]);
        self.b.switch_to_block(back);
        let c = self.b.ins().iconst(I64, EXIT_NEXT as i64);
        self.b.ins().jump(self.exit, &[c.into()]);
    }

    /// Leaves the block for the constant address `target` through a
    /// chainable exit slot.
    fn end_at_const(&mut self, target: u32) {
        self.sync_regs_and_flags();
        let t = self.iconst(target);
        self.b.ins().store(sf(), t, self.cpu, EIP_OFF);
        let slot_idx = self.next_slot.min(1);
        self.next_slot += 1;
        // SAFETY-free address arithmetic: the slots live as long as the
        // block (the engine keeps them until the generation is dropped).
        let slot_addr = self.slots as usize + slot_idx * std::mem::size_of::<usize>();
        let slot = self.b.ins().iconst(I64, slot_addr as i64);
        let next = self.b.ins().load(I64, sf(), slot, 0);
        let req = self.b.ins().load(I32, sf(), self.cpu, EXIT_REQ_OFF);
        let req = self.b.ins().uextend(I64, req);
        let unchained = self.b.ins().icmp_imm_u(IntCC::Equal, next, 0);
        let unchained = self.b.ins().uextend(I64, unchained);
        let stop = self.b.ins().bor(req, unchained);
        let call = self.b.create_block();
        let back = self.b.create_block();
        self.b.ins().brif(stop, back, &[], call, &[]);
        self.b.switch_to_block(call);
        self.b
            .ins()
            .return_call_indirect(self.block_sig, next, &[self.cpu, self.ctx]);
        self.b.switch_to_block(back);
        // Tell the dispatcher which slot to fill.
        self.b.ins().store(sf(), slot, self.ctx, CTX_LAST_SLOT);
        let c = self.b.ins().iconst(I64, EXIT_NEXT as i64);
        self.b.ins().jump(self.exit, &[c.into()]);
    }

    fn sync_regs_and_flags(&mut self) {
        for n in 0..8 {
            if self.dirty & (1 << n) != 0 {
                if let Some(v) = self.regs[n] {
                    self.b.ins().store(sf(), v, self.cpu, reg_off(n));
                }
            }
        }
        self.dirty = 0;
        self.sync_flags();
    }

    /// Ends the block after its last instruction (no branch): EIP = next.
    pub fn end_fallthrough(&mut self, next: u32) {
        self.end_at_const(next);
    }

    /// The value (i8, 0/1) of condition `cc` (0-15, the Jcc nibble).
    fn condition(&mut self, cc: u8) -> Value {
        if let Some(p) = self.flags {
            if let Some(v) = self.fast_condition(p, cc >> 1) {
                return if cc & 1 != 0 {
                    let one = self.b.ins().iconst(types::I8, 1);
                    self.b.ins().bxor(v, one)
                } else {
                    v
                };
            }
        }
        self.sync_flags();
        let cc_v = self.iconst(cc as u32);
        let callee = self.b.ins().iconst(I64, self.helpers.cond as i64);
        let call = self
            .b
            .ins()
            .call_indirect(self.cond_sig, callee, &[self.cpu, cc_v]);
        let r = self.b.inst_results(call)[0];
        self.b.ins().icmp_imm_u(IntCC::NotEqual, r, 0)
    }

    /// Condition pairs (the Jcc nibble >> 1: O, B, E, BE, S, P, L, LE)
    /// computed directly from a flag record this block produced.
    fn fast_condition(&mut self, p: Pending, pair: u8) -> Option<Value> {
        let kind = p.op >> 2;
        let bytes = match p.op & 3 {
            0 => 1,
            1 => 2,
            _ => 4,
        };
        let sub = kind == CcOp::Sub as u32;
        let logic = kind == CcOp::Logic as u32;
        let add = kind == CcOp::Add as u32;
        let incdec = kind == CcOp::Inc as u32 || kind == CcOp::Dec as u32;
        if kind == CcOp::Eflags as u32 {
            return Some(self.eflags_condition(p.src, pair));
        }
        if incdec && (pair == 1 || pair == 3) {
            // INC/DEC keep CF: it is in the record's src.
            let c = self.b.ins().icmp_imm_u(IntCC::NotEqual, p.src, 0);
            if pair == 1 {
                return Some(c);
            }
            let z = self.b.ins().icmp_imm_u(IntCC::Equal, p.dst, 0);
            return Some(self.b.ins().bor(c, z));
        }
        if !(sub || logic || add || incdec) {
            return None;
        }
        let zf = |t: &mut Self| t.b.ins().icmp_imm_u(IntCC::Equal, p.dst, 0);
        let sign = |t: &mut Self| {
            let s = t.b.ins().band_imm_u(p.dst, 1i64 << (bytes * 8 - 1));
            t.b.ins().icmp_imm_u(IntCC::NotEqual, s, 0)
        };
        Some(match (pair, sub, logic) {
            (2, _, _) => zf(self),
            (4, _, _) => sign(self),
            (0, true, _) => {
                let x = self.b.ins().bxor(p.src2, p.src);
                let y = self.b.ins().bxor(p.src2, p.dst);
                let o = self.b.ins().band(x, y);
                let o = self.b.ins().band_imm_u(o, 1i64 << (bytes * 8 - 1));
                self.b.ins().icmp_imm_u(IntCC::NotEqual, o, 0)
            }
            (1, true, _) => self.b.ins().icmp(IntCC::UnsignedLessThan, p.src2, p.src),
            (3, true, _) => self
                .b
                .ins()
                .icmp(IntCC::UnsignedLessThanOrEqual, p.src2, p.src),
            (6, true, _) | (7, true, _) => {
                let a = self.sign_extend(p.src2, bytes);
                let b = self.sign_extend(p.src, bytes);
                let cc = if pair == 6 {
                    IntCC::SignedLessThan
                } else {
                    IntCC::SignedLessThanOrEqual
                };
                self.b.ins().icmp(cc, a, b)
            }
            (0, _, true) | (1, _, true) => self.b.ins().iconst(types::I8, 0),
            (3, _, true) => zf(self),
            (6, _, true) => sign(self),
            (7, _, true) => {
                let z = zf(self);
                let s = sign(self);
                self.b.ins().bor(z, s)
            }
            (1, _, _) | (3, _, _) if add => {
                let c = self.b.ins().icmp(IntCC::UnsignedLessThan, p.dst, p.src2);
                if pair == 1 {
                    c
                } else {
                    let z = zf(self);
                    self.b.ins().bor(c, z)
                }
            }
            _ => return None,
        })
    }

    fn xmm_off(r: Register) -> i32 {
        (offset_of!(CpuState, xmm) + 16 * (r.number() & 7)) as i32
    }

    fn read_xmm(&mut self, r: Register) -> Value {
        let f = MemFlagsData::new().with_notrap();
        self.b
            .ins()
            .load(types::I8X16, f, self.cpu, Self::xmm_off(r))
    }

    fn write_xmm(&mut self, r: Register, v: Value) {
        let f = MemFlagsData::new().with_notrap();
        self.b.ins().store(f, v, self.cpu, Self::xmm_off(r));
    }

    /// Leaves the block through the interpreter for `insn` when `bad` is
    /// non-zero (state already synced): it raises the right exception.
    fn side_exit_if(&mut self, bad: Value, insn_ptr: *const Instruction) {
        let slow = self.b.create_block();
        let cont = self.b.create_block();
        self.b.ins().brif(bad, slow, &[], cont, &[]);
        self.b.switch_to_block(slow);
        let callee = self.b.ins().iconst(I64, self.helpers.step as i64);
        let p = self.b.ins().iconst(I64, insn_ptr as i64);
        let call = self
            .b
            .ins()
            .call_indirect(self.step_sig, callee, &[self.cpu, self.ctx, p]);
        let r = self.b.inst_results(call)[0];
        self.b.ins().jump(self.exit, &[r.into()]);
        self.b.switch_to_block(cont);
    }

    /// Address of the memory operand, synced state, and (for legacy SSE
    /// operands that must be aligned) the alignment check.
    fn sse_mem_addr(
        &mut self,
        insn: &Instruction,
        insn_ptr: *const Instruction,
        aligned: bool,
    ) -> Value {
        let a = self.ea(insn);
        self.sync(insn.ip32());
        if aligned {
            let mis = self.b.ins().band_imm_u(a, 15);
            self.side_exit_if(mis, insn_ptr);
        }
        self.host_addr(a)
    }

    fn sse_src(
        &mut self,
        insn: &Instruction,
        insn_ptr: *const Instruction,
        i: u32,
        aligned: bool,
    ) -> Value {
        if insn.op_kind(i) == OpKind::Register {
            self.read_xmm(insn.op_register(i))
        } else {
            let h = self.sse_mem_addr(insn, insn_ptr, aligned);
            self.b.ins().load(types::I8X16, mf(), h, 0)
        }
    }

    fn as_lanes(&mut self, v: Value, t: types::Type) -> Value {
        if t == types::I8X16 {
            v
        } else {
            let f = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
            self.b.ins().bitcast(t, f, v)
        }
    }

    fn sse(&mut self, insn: &Instruction, insn_ptr: *const Instruction) {
        use iced_x86::Code as C;
        let code = insn.code();
        let unaligned = matches!(
            code,
            C::Movdqu_xmm_xmmm128
                | C::Movdqu_xmmm128_xmm
                | C::Movups_xmm_xmmm128
                | C::Movups_xmmm128_xmm
                | C::Movupd_xmm_xmmm128
                | C::Movupd_xmmm128_xmm
                | C::Lddqu_xmm_m128
        );
        match code {
            C::Movdqa_xmmm128_xmm
            | C::Movdqu_xmmm128_xmm
            | C::Movaps_xmmm128_xmm
            | C::Movups_xmmm128_xmm
            | C::Movapd_xmmm128_xmm
            | C::Movupd_xmmm128_xmm => {
                let v = self.read_xmm(insn.op_register(1));
                if insn.op_kind(0) == OpKind::Register {
                    self.write_xmm(insn.op_register(0), v);
                } else {
                    let h = self.sse_mem_addr(insn, insn_ptr, !unaligned);
                    self.b.ins().store(mf(), v, h, 0);
                }
            }
            C::Movdqa_xmm_xmmm128
            | C::Movdqu_xmm_xmmm128
            | C::Movaps_xmm_xmmm128
            | C::Movups_xmm_xmmm128
            | C::Movapd_xmm_xmmm128
            | C::Movupd_xmm_xmmm128
            | C::Lddqu_xmm_m128 => {
                let v = self.sse_src(insn, insn_ptr, 1, !unaligned);
                self.write_xmm(insn.op_register(0), v);
            }
            C::Pmovmskb_r32_xmm => {
                let v = self.read_xmm(insn.op_register(1));
                let m = self.b.ins().vhigh_bits(I32, v);
                self.write_reg(insn.op_register(0), m);
            }
            C::Movd_xmm_rm32 => {
                let v = self.read_op(insn, 1);
                let vec = self.b.ins().scalar_to_vector(types::I32X4, v);
                let vec = self.as_lanes(vec, types::I8X16);
                self.write_xmm(insn.op_register(0), vec);
            }
            C::Movd_rm32_xmm => {
                let v = self.read_xmm(insn.op_register(1));
                let l = self.as_lanes(v, types::I32X4);
                let x = self.b.ins().extractlane(l, 0);
                self.write_op(insn, 0, None, x);
            }
            C::Movq_xmm_xmmm64 => {
                let lo = if insn.op_kind(1) == OpKind::Register {
                    let v = self.read_xmm(insn.op_register(1));
                    let l = self.as_lanes(v, types::I64X2);
                    self.b.ins().extractlane(l, 0)
                } else {
                    let h = self.sse_mem_addr(insn, insn_ptr, false);
                    self.b.ins().load(I64, mf(), h, 0)
                };
                let vec = self.b.ins().scalar_to_vector(types::I64X2, lo);
                let vec = self.as_lanes(vec, types::I8X16);
                self.write_xmm(insn.op_register(0), vec);
            }
            C::Movq_xmmm64_xmm => {
                let v = self.read_xmm(insn.op_register(1));
                let l = self.as_lanes(v, types::I64X2);
                let lo = self.b.ins().extractlane(l, 0);
                if insn.op_kind(0) == OpKind::Register {
                    let vec = self.b.ins().scalar_to_vector(types::I64X2, lo);
                    let vec = self.as_lanes(vec, types::I8X16);
                    self.write_xmm(insn.op_register(0), vec);
                } else {
                    let h = self.sse_mem_addr(insn, insn_ptr, false);
                    self.b.ins().store(mf(), lo, h, 0);
                }
            }
            C::Movlpd_xmm_m64 | C::Movlps_xmm_m64 | C::Movhpd_xmm_m64 | C::Movhps_xmm_m64 => {
                let h = self.sse_mem_addr(insn, insn_ptr, false);
                let q = self.b.ins().load(I64, mf(), h, 0);
                let v = self.read_xmm(insn.op_register(0));
                let l = self.as_lanes(v, types::I64X2);
                let lane = if matches!(code, C::Movlpd_xmm_m64 | C::Movlps_xmm_m64) {
                    0
                } else {
                    1
                };
                let l = self.b.ins().insertlane(l, q, lane);
                let v = self.as_lanes(l, types::I8X16);
                self.write_xmm(insn.op_register(0), v);
            }
            C::Movlpd_m64_xmm | C::Movlps_m64_xmm | C::Movhpd_m64_xmm | C::Movhps_m64_xmm => {
                let v = self.read_xmm(insn.op_register(1));
                let l = self.as_lanes(v, types::I64X2);
                let lane = if matches!(code, C::Movlpd_m64_xmm | C::Movlps_m64_xmm) {
                    0
                } else {
                    1
                };
                let q = self.b.ins().extractlane(l, lane);
                let h = self.sse_mem_addr(insn, insn_ptr, false);
                self.b.ins().store(mf(), q, h, 0);
            }
            _ => {
                // Two-operand packed integer operations.
                let b = self.sse_src(insn, insn_ptr, 1, true);
                let a = self.read_xmm(insn.op_register(0));
                let lanes = match code {
                    C::Pcmpeqw_xmm_xmmm128 => types::I16X8,
                    C::Pcmpeqd_xmm_xmmm128 | C::Paddd_xmm_xmmm128 | C::Psubd_xmm_xmmm128 => {
                        types::I32X4
                    }
                    _ => types::I8X16,
                };
                let (a, b) = (self.as_lanes(a, lanes), self.as_lanes(b, lanes));
                let r = match code {
                    C::Pxor_xmm_xmmm128 | C::Xorps_xmm_xmmm128 | C::Xorpd_xmm_xmmm128 => {
                        self.b.ins().bxor(a, b)
                    }
                    C::Por_xmm_xmmm128 => self.b.ins().bor(a, b),
                    C::Pand_xmm_xmmm128 => self.b.ins().band(a, b),
                    C::Pandn_xmm_xmmm128 => self.b.ins().band_not(b, a),
                    C::Pcmpeqb_xmm_xmmm128 | C::Pcmpeqw_xmm_xmmm128 | C::Pcmpeqd_xmm_xmmm128 => {
                        self.b.ins().icmp(IntCC::Equal, a, b)
                    }
                    C::Pcmpgtb_xmm_xmmm128 => self.b.ins().icmp(IntCC::SignedGreaterThan, a, b),
                    C::Pminub_xmm_xmmm128 => self.b.ins().umin(a, b),
                    C::Pmaxub_xmm_xmmm128 => self.b.ins().umax(a, b),
                    C::Psubb_xmm_xmmm128 | C::Psubd_xmm_xmmm128 => self.b.ins().isub(a, b),
                    _ => self.b.ins().iadd(a, b),
                };
                let r = self.as_lanes(r, types::I8X16);
                self.write_xmm(insn.op_register(0), r);
            }
        }
    }

    /// A condition pair (see `fast_condition`) from materialized EFLAGS bits.
    fn eflags_condition(&mut self, f: Value, pair: u8) -> Value {
        let bit = |t: &mut Self, n: u32| {
            let v = t.b.ins().ushr_imm_u(f, n as i64);
            t.b.ins().band_imm_u(v, 1)
        };
        let v = match pair {
            0 => bit(self, 11),
            1 => bit(self, 0),
            2 => bit(self, 6),
            3 => {
                let c = bit(self, 0);
                let z = bit(self, 6);
                self.b.ins().bor(c, z)
            }
            4 => bit(self, 7),
            5 => bit(self, 2),
            6 | 7 => {
                let sflag = bit(self, 7);
                let o = bit(self, 11);
                let l = self.b.ins().bxor(sflag, o);
                if pair == 6 {
                    l
                } else {
                    let z = bit(self, 6);
                    self.b.ins().bor(l, z)
                }
            }
            _ => bit(self, 0),
        };
        self.b.ins().icmp_imm_u(IntCC::NotEqual, v, 0)
    }

    /// Runs `insn` through the interpreter helper. Returns true if the block
    /// must end after it (it may have changed EIP).
    fn call_step(&mut self, insn: &Instruction, insn_ptr: *const Instruction) {
        self.sync(insn.ip32());
        let x87 = crate::interp::family(insn) == crate::interp::Family::X87;
        let helper = if x87 {
            self.helpers.x87
        } else {
            self.helpers.step
        };
        let callee = self.b.ins().iconst(I64, helper as i64);
        let p = self.b.ins().iconst(I64, insn_ptr as i64);
        let call = self
            .b
            .ins()
            .call_indirect(self.step_sig, callee, &[self.cpu, self.ctx, p]);
        let r = self.b.inst_results(call)[0];
        let cont = self.b.create_block();
        self.b.ins().brif(r, self.exit, &[r.into()], cont, &[]);
        self.b.switch_to_block(cont);
        // The helper may have changed anything; an x87 instruction only
        // EAX (FNSTSW AX) and the flags (FCOMI).
        if x87 {
            self.regs[crate::state::EAX] = None;
        } else {
            self.regs = [None; 8];
        }
        self.flags = None;
        self.eip_in_state = None;
    }

    /// Translates one instruction. Returns false if it ended the block.
    pub fn instruction(
        &mut self,
        insn: &Instruction,
        insn_ptr: *const Instruction,
        last: bool,
        (flags_needed, live_after): (u32, u32),
    ) -> bool {
        let eip = insn.ip32();
        let next = insn.next_ip32();
        // Host code made for this instruction carries its EIP: a fault in
        // translated code finds the guest instruction from the host PC, so
        // inline accesses need not store EIP first.
        self.b
            .set_srcloc(cranelift_codegen::ir::SourceLoc::new(eip));
        self.flags_needed = flags_needed;
        self.live_after = live_after;
        if !lowered(insn) {
            self.call_step(insn, insn_ptr);
            let flow = insn.flow_control();
            // A REP string instruction runs in slices and may come back to
            // itself: it ends the block, like a branch.
            let repeats =
                insn.is_string_instruction() && (insn.has_rep_prefix() || insn.has_repne_prefix());
            if flow != iced_x86::FlowControl::Next || last || repeats {
                // EIP was set by the interpreter.
                let code = self.b.ins().iconst(I64, EXIT_NEXT as i64);
                self.b.ins().jump(self.exit, &[code.into()]);
                return false;
            }
            self.eip_in_state = Some(next);
            return true;
        }
        if lowered_sse(insn) {
            self.sse(insn, insn_ptr);
            if last {
                self.end_fallthrough(next);
                return false;
            }
            return true;
        }
        let m = insn.mnemonic();
        // BT writes CF and leaves the others undefined (kept by the
        // interpreter): lowered when only CF can be read afterwards.
        let bt_keeps_flags = m == Mnemonic::Bt && live_after & (ARITH & !0x10) != 0;
        if matches!(
            m,
            Mnemonic::Rol | Mnemonic::Ror | Mnemonic::Shld | Mnemonic::Shrd
        ) && flags_needed != 0
            || bt_keeps_flags
        {
            // Rotates keep SF/ZF/AF/PF: their flags go through the
            // interpreter when something reads them.
            self.call_step(insn, insn_ptr);
            if last {
                let code = self.b.ins().iconst(I64, EXIT_NEXT as i64);
                self.b.ins().jump(self.exit, &[code.into()]);
                return false;
            }
            self.eip_in_state = Some(next);
            return true;
        }
        match m {
            Mnemonic::Nop => {}
            Mnemonic::Rol | Mnemonic::Ror => {
                let bytes = op_bytes(insn, 0);
                let bits = bytes * 8;
                let count = if insn.op_count() == 1 {
                    1
                } else {
                    (insn.immediate8() & 0x1f) as u32
                } % bits;
                let (a, addr) = self.read_rmw(insn);
                let r = if count == 0 {
                    a
                } else if bytes == 4 {
                    if m == Mnemonic::Rol {
                        self.b.ins().rotl_imm_u(a, count as i64)
                    } else {
                        self.b.ins().rotr_imm_u(a, count as i64)
                    }
                } else {
                    let left = if m == Mnemonic::Rol {
                        count
                    } else {
                        bits - count
                    };
                    let hi = self.b.ins().ishl_imm_u(a, left as i64);
                    let lo = self.b.ins().ushr_imm_u(a, (bits - left) as i64);
                    let v = self.b.ins().bor(hi, lo);
                    self.mask(v, bytes)
                };
                self.write_op(insn, 0, addr, r);
            }
            Mnemonic::Shld | Mnemonic::Shrd => {
                let c = (insn.immediate8() & 0x1f) as i64;
                let (a, addr) = self.read_rmw(insn);
                let src = self.read_op(insn, 1);
                let r = if m == Mnemonic::Shld {
                    let hi = self.b.ins().ishl_imm_u(a, c);
                    let lo = self.b.ins().ushr_imm_u(src, 32 - c);
                    self.b.ins().bor(hi, lo)
                } else {
                    let lo = self.b.ins().ushr_imm_u(a, c);
                    let hi = self.b.ins().ishl_imm_u(src, 32 - c);
                    self.b.ins().bor(hi, lo)
                };
                self.write_op(insn, 0, addr, r);
            }
            Mnemonic::Mul | Mnemonic::Imul if insn.op_count() == 1 => {
                let src = self.read_op(insn, 0);
                let a = self.reg32(crate::state::EAX);
                let (a64, b64) = if m == Mnemonic::Mul {
                    (self.b.ins().uextend(I64, a), self.b.ins().uextend(I64, src))
                } else {
                    (self.b.ins().sextend(I64, a), self.b.ins().sextend(I64, src))
                };
                let p = self.b.ins().imul(a64, b64);
                let lo = self.b.ins().ireduce(I32, p);
                let hi64 = self.b.ins().ushr_imm_u(p, 32);
                let hi = self.b.ins().ireduce(I32, hi64);
                self.set_reg32(crate::state::EAX, lo);
                self.set_reg32(crate::state::EDX, hi);
                if self.flags_needed != 0 {
                    // CF = OF = the high half is significant.
                    let over = if m == Mnemonic::Mul {
                        self.b.ins().icmp_imm_u(IntCC::NotEqual, hi, 0)
                    } else {
                        let back = self.b.ins().sextend(I64, lo);
                        self.b.ins().icmp(IntCC::NotEqual, back, p)
                    };
                    let over = self.b.ins().uextend(I32, over);
                    let cfof = self
                        .b
                        .ins()
                        .imul_imm_u(over, (crate::state::CF | crate::state::OF) as i64);
                    self.eager_flags_with_szp(cfof, lo, 4);
                }
            }
            Mnemonic::Shl | Mnemonic::Sal | Mnemonic::Shr | Mnemonic::Sar
                if insn.op_count() == 2 && insn.op_kind(1) == OpKind::Register =>
            {
                // By CL (32-bit): the host shift masks the count to 5 bits
                // as x86 does. A zero count changes neither the flags nor
                // (for a memory operand) the value: with live flags the new
                // record is selected against the stored one, branch-free.
                let cl = self.read_reg(Register::CL);
                let count = self.b.ins().band_imm_u(cl, 31);
                let (a, addr) = self.read_rmw(insn);
                let r = match m {
                    Mnemonic::Shr => self.b.ins().ushr(a, count),
                    Mnemonic::Sar => self.b.ins().sshr(a, count),
                    _ => self.b.ins().ishl(a, count),
                };
                self.write_op(insn, 0, addr, r);
                if self.flags_needed != 0 {
                    let one = self.iconst(1);
                    let cm1 = self.b.ins().isub(count, one);
                    let before = match m {
                        Mnemonic::Shr => self.b.ins().ushr(a, cm1),
                        Mnemonic::Sar => self.b.ins().sshr(a, cm1),
                        _ => self.b.ins().ishl(a, cm1),
                    };
                    let kind = match m {
                        Mnemonic::Shr => CcOp::Shr,
                        Mnemonic::Sar => CcOp::Sar,
                        _ => CcOp::Shl,
                    };
                    self.sync_flags();
                    let zero = self.b.ins().icmp_imm_u(IntCC::Equal, count, 0);
                    let new_op = self.iconst(flags::op(kind, 4));
                    let fields = [
                        (CC_OP_OFF, new_op),
                        (CC_DST_OFF, r),
                        (CC_SRC_OFF, before),
                        (CC_SRC2_OFF, a),
                    ];
                    for (off, v) in fields {
                        let old = self.b.ins().load(I32, sf(), self.cpu, off);
                        let nv = self.b.ins().select(zero, old, v);
                        self.b.ins().store(sf(), nv, self.cpu, off);
                    }
                    // The record is in the state now.
                    self.flags = None;
                    self.flags_dirty = false;
                }
            }
            Mnemonic::Bt => {
                let v = self.read_op(insn, 0);
                let bit = if insn.op_kind(1) == OpKind::Immediate8 {
                    self.iconst((insn.immediate8() & 31) as u32)
                } else {
                    let r = self.read_reg(insn.op_register(1));
                    self.b.ins().band_imm_u(r, 31)
                };
                let sh = self.b.ins().ushr(v, bit);
                let cf = self.b.ins().band_imm_u(sh, 1);
                if self.flags_needed != 0 {
                    let zero = self.iconst(0);
                    self.flags = Some(Pending {
                        op: CcOp::Eflags as u32,
                        dst: zero,
                        src: cf,
                        src2: zero,
                    });
                    self.flags_dirty = true;
                }
            }
            Mnemonic::Cld | Mnemonic::Std => {
                let off = offset_of!(CpuState, eflags) as i32;
                let f = self.b.ins().load(I32, sf(), self.cpu, off);
                let f = if m == Mnemonic::Cld {
                    self.b
                        .ins()
                        .band_imm_u(f, !(crate::state::DF as i64) & 0xffff_ffff)
                } else {
                    self.b.ins().bor_imm_u(f, crate::state::DF as i64)
                };
                self.b.ins().store(sf(), f, self.cpu, off);
            }
            Mnemonic::Bswap => {
                let a = self.read_reg(insn.op_register(0));
                let r = self.b.ins().bswap(a);
                self.write_reg(insn.op_register(0), r);
            }
            Mnemonic::Adc | Mnemonic::Sbb => {
                let bytes = op_bytes(insn, 0);
                let cf = self.carry_flag();
                let (a, addr) = self.read_rmw(insn);
                let bv = self.read_op(insn, 1);
                let bv = self.mask(bv, bytes);
                let r = if m == Mnemonic::Adc {
                    let t = self.b.ins().iadd(a, bv);
                    self.b.ins().iadd(t, cf)
                } else {
                    let t = self.b.ins().isub(a, bv);
                    self.b.ins().isub(t, cf)
                };
                let r = self.mask(r, bytes);
                self.write_op(insn, 0, addr, r);
                if self.flags_needed != 0 {
                    // The flag record's kind depends on the carry-in:
                    // Adc/Sbb with it, Add/Sub without (flags.rs).
                    let (with, without) = if m == Mnemonic::Adc {
                        (CcOp::Adc, CcOp::Add)
                    } else {
                        (CcOp::Sbb, CcOp::Sub)
                    };
                    let k1 = self.iconst(flags::op(with, bytes));
                    let k0 = self.iconst(flags::op(without, bytes));
                    let op = self.b.ins().select(cf, k1, k0);
                    self.sync_regs_and_flags();
                    self.b.ins().store(sf(), op, self.cpu, CC_OP_OFF);
                    self.b.ins().store(sf(), r, self.cpu, CC_DST_OFF);
                    self.b.ins().store(sf(), bv, self.cpu, CC_SRC_OFF);
                    self.b.ins().store(sf(), a, self.cpu, CC_SRC2_OFF);
                    // Stored already; later conditions read the state.
                    self.flags = None;
                    self.flags_dirty = false;
                }
            }
            Mnemonic::Mov => {
                let v = self.read_op(insn, 1);
                self.write_op(insn, 0, None, v);
            }
            Mnemonic::Movzx | Mnemonic::Movsx => {
                let v = self.read_op(insn, 1);
                let v = if m == Mnemonic::Movsx {
                    let sb = op_bytes(insn, 1);
                    let s = self.sign_extend(v, sb);
                    let db = op_bytes(insn, 0);
                    self.mask(s, db)
                } else {
                    v
                };
                self.write_op(insn, 0, None, v);
            }
            Mnemonic::Lea => {
                // LEA ignores the segment base.
                let a = self.offset_value(insn);
                self.write_op(insn, 0, None, a);
            }
            Mnemonic::Add
            | Mnemonic::Sub
            | Mnemonic::And
            | Mnemonic::Or
            | Mnemonic::Xor
            | Mnemonic::Cmp
            | Mnemonic::Test => {
                let bytes = op_bytes(insn, 0);
                // xor r, r / sub r, r: the value is zero whatever r was.
                let same_reg = insn.op_kind(0) == OpKind::Register
                    && insn.op_kind(1) == OpKind::Register
                    && insn.op_register(0) == insn.op_register(1);
                let (a, addr) = if matches!(m, Mnemonic::Cmp | Mnemonic::Test) {
                    (self.read_op(insn, 0), None)
                } else {
                    self.read_rmw(insn)
                };
                let bv = self.read_op(insn, 1);
                let bv = self.mask(bv, bytes);
                let (r, kind) = match m {
                    Mnemonic::Add => (self.b.ins().iadd(a, bv), CcOp::Add),
                    Mnemonic::Sub | Mnemonic::Cmp => {
                        if same_reg {
                            (self.iconst(0), CcOp::Sub)
                        } else {
                            (self.b.ins().isub(a, bv), CcOp::Sub)
                        }
                    }
                    Mnemonic::And | Mnemonic::Test => (self.b.ins().band(a, bv), CcOp::Logic),
                    Mnemonic::Or => (self.b.ins().bor(a, bv), CcOp::Logic),
                    _ => {
                        if same_reg {
                            (self.iconst(0), CcOp::Logic)
                        } else {
                            (self.b.ins().bxor(a, bv), CcOp::Logic)
                        }
                    }
                };
                let r = self.mask(r, bytes);
                if !matches!(m, Mnemonic::Cmp | Mnemonic::Test) {
                    self.write_op(insn, 0, addr, r);
                }
                if kind == CcOp::Logic {
                    let z = self.iconst(0);
                    self.set_flags(kind, bytes, r, z, z);
                } else {
                    self.set_flags(kind, bytes, r, bv, a);
                }
            }
            Mnemonic::Inc | Mnemonic::Dec => {
                let bytes = op_bytes(insn, 0);
                let (a, addr) = self.read_rmw(insn);
                // INC/DEC keep CF: take it from the current flags, unless
                // nothing reads CF before it is written again.
                let cf = if self.flags_needed != 0 && self.live_after & 0x10 != 0 {
                    self.carry_flag()
                } else {
                    self.iconst(0)
                };
                let r = if m == Mnemonic::Inc {
                    self.b.ins().iadd_imm_s(a, 1)
                } else {
                    self.b.ins().iadd_imm_s(a, -1)
                };
                let r = self.mask(r, bytes);
                self.write_op(insn, 0, addr, r);
                let z = self.iconst(0);
                let kind = if m == Mnemonic::Inc {
                    CcOp::Inc
                } else {
                    CcOp::Dec
                };
                self.set_flags(kind, bytes, r, cf, z);
            }
            Mnemonic::Neg => {
                let bytes = op_bytes(insn, 0);
                let (a, addr) = self.read_rmw(insn);
                let z = self.iconst(0);
                let r = self.b.ins().isub(z, a);
                let r = self.mask(r, bytes);
                self.write_op(insn, 0, addr, r);
                self.set_flags(CcOp::Sub, bytes, r, a, z);
            }
            Mnemonic::Not => {
                let bytes = op_bytes(insn, 0);
                let (a, addr) = self.read_rmw(insn);
                let r = self.b.ins().bnot(a);
                let r = self.mask(r, bytes);
                self.write_op(insn, 0, addr, r);
            }
            Mnemonic::Shl | Mnemonic::Sal | Mnemonic::Shr | Mnemonic::Sar => {
                let bytes = op_bytes(insn, 0);
                let count = if insn.op_count() == 1 {
                    1
                } else {
                    (insn.immediate8() & 0x1f) as i64
                };
                let (a, addr) = self.read_rmw(insn);
                let (r, before, kind) = match m {
                    Mnemonic::Shr => (
                        self.b.ins().ushr_imm_u(a, count),
                        self.b.ins().ushr_imm_u(a, count - 1),
                        CcOp::Shr,
                    ),
                    Mnemonic::Sar => {
                        let s = self.sign_extend(a, bytes);
                        (
                            self.b.ins().sshr_imm_u(s, count),
                            self.b.ins().sshr_imm_u(s, count - 1),
                            CcOp::Sar,
                        )
                    }
                    _ => (
                        self.b.ins().ishl_imm_u(a, count),
                        self.b.ins().ishl_imm_u(a, count - 1),
                        CcOp::Shl,
                    ),
                };
                let r = self.mask(r, bytes);
                self.write_op(insn, 0, addr, r);
                self.set_flags(kind, bytes, r, before, a);
            }
            Mnemonic::Imul => {
                let bytes = op_bytes(insn, 0);
                let (a, b) = if insn.op_count() == 3 {
                    (self.read_op(insn, 1), self.read_op(insn, 2))
                } else {
                    (self.read_op(insn, 0), self.read_op(insn, 1))
                };
                let a = self.sign_extend(a, bytes);
                let b = self.sign_extend(b, bytes);
                let a64 = self.b.ins().sextend(I64, a);
                let b64 = self.b.ins().sextend(I64, b);
                let p = self.b.ins().imul(a64, b64);
                let r32 = self.b.ins().ireduce(I32, p);
                let r = self.mask(r32, bytes);
                let rs = self.sign_extend(r, bytes);
                let back = self.b.ins().sextend(I64, rs);
                let over = self.b.ins().icmp(IntCC::NotEqual, back, p);
                let over = self.b.ins().uextend(I32, over);
                // CF = OF = overflow; SF, ZF, PF are undefined: computed
                // from the result like the interpreter does.
                let cfof = self
                    .b
                    .ins()
                    .imul_imm_u(over, (crate::state::CF | crate::state::OF) as i64);
                self.write_op(insn, 0, None, r);
                self.eager_flags_with_szp(cfof, r, bytes);
            }
            Mnemonic::Xchg if insn.op_kind(0) == OpKind::Memory => {
                // Always locked: an atomic swap on the host address.
                let a = self.ea(insn);
                self.sync(eip);
                let h = self.host_addr(a);
                let v = self.read_reg(insn.op_register(1));
                let old = self.b.ins().atomic_rmw(I32, mf(), AtomicRmwOp::Xchg, h, v);
                self.write_reg(insn.op_register(1), old);
            }
            Mnemonic::Cmpxchg => {
                let a = self.ea(insn);
                self.sync(eip);
                let h = self.host_addr(a);
                let acc = self.reg32(crate::state::EAX);
                let new = self.read_reg(insn.op_register(1));
                let old = self.b.ins().atomic_cas(mf(), h, acc, new);
                let eq = self.b.ins().icmp(IntCC::Equal, old, acc);
                let eax = self.b.ins().select(eq, acc, old);
                self.set_reg32(crate::state::EAX, eax);
                // The flags of CMP EAX, old.
                let d = self.b.ins().isub(acc, old);
                self.set_flags(CcOp::Sub, 4, d, old, acc);
            }
            Mnemonic::Xadd => {
                let a = self.ea(insn);
                self.sync(eip);
                let h = self.host_addr(a);
                let v = self.read_reg(insn.op_register(1));
                let old = if insn.has_lock_prefix() {
                    self.b.ins().atomic_rmw(I32, mf(), AtomicRmwOp::Add, h, v)
                } else {
                    let old = self.b.ins().load(I32, mf(), h, 0);
                    let sum = self.b.ins().iadd(old, v);
                    self.b.ins().store(mf(), sum, h, 0);
                    old
                };
                let sum = self.b.ins().iadd(old, v);
                self.write_reg(insn.op_register(1), old);
                self.set_flags(CcOp::Add, 4, sum, v, old);
            }
            Mnemonic::Div | Mnemonic::Idiv => {
                // EDX:EAX / r/m32. A zero divisor, a quotient that does not
                // fit (and IDIV by -1, to keep the host from trapping on
                // INT64_MIN / -1) leave through the interpreter: #DE.
                let d = self.read_op(insn, 0);
                let lo = self.reg32(crate::state::EAX);
                let hi = self.reg32(crate::state::EDX);
                let lo64 = self.b.ins().uextend(I64, lo);
                let hi64 = self.b.ins().uextend(I64, hi);
                let hi64 = self.b.ins().ishl_imm_u(hi64, 32);
                let n = self.b.ins().bor(hi64, lo64);
                self.sync(eip);
                let zero = self.b.ins().icmp_imm_u(IntCC::Equal, d, 0);
                let bad = if m == Mnemonic::Idiv {
                    let m1 = self.b.ins().icmp_imm_s(IntCC::Equal, d, -1);
                    self.b.ins().bor(zero, m1)
                } else {
                    zero
                };
                self.side_exit_if(bad, insn_ptr);
                let (q, r) = if m == Mnemonic::Div {
                    let d64 = self.b.ins().uextend(I64, d);
                    (self.b.ins().udiv(n, d64), self.b.ins().urem(n, d64))
                } else {
                    let d64 = self.b.ins().sextend(I64, d);
                    (self.b.ins().sdiv(n, d64), self.b.ins().srem(n, d64))
                };
                let q32 = self.b.ins().ireduce(I32, q);
                let over = if m == Mnemonic::Div {
                    self.b
                        .ins()
                        .icmp_imm_u(IntCC::UnsignedGreaterThan, q, 0xffff_ffff)
                } else {
                    let back = self.b.ins().sextend(I64, q32);
                    self.b.ins().icmp(IntCC::NotEqual, back, q)
                };
                self.side_exit_if(over, insn_ptr);
                let r32 = self.b.ins().ireduce(I32, r);
                self.set_reg32(crate::state::EAX, q32);
                self.set_reg32(crate::state::EDX, r32);
                // Flags are undefined after DIV: the interpreter keeps them.
            }
            Mnemonic::Xchg => {
                let a = self.read_op(insn, 0);
                let b = self.read_op(insn, 1);
                self.write_op(insn, 0, None, b);
                self.write_op(insn, 1, None, a);
            }
            Mnemonic::Cdq => {
                let a = self.reg32(crate::state::EAX);
                let s = self.b.ins().sshr_imm_u(a, 31);
                self.set_reg32(crate::state::EDX, s);
            }
            Mnemonic::Cwde => {
                let a = self.reg32(crate::state::EAX);
                let s = self.sign_extend(a, 2);
                self.set_reg32(crate::state::EAX, s);
            }
            Mnemonic::Push => {
                let v = match insn.op_kind(0) {
                    OpKind::Immediate8to32 => self.iconst(insn.immediate8to32() as u32),
                    _ => self.read_op(insn, 0),
                };
                self.push(v);
            }
            Mnemonic::Pop => {
                let sp = self.reg32(ESP);
                let v = self.load(sp, 4);
                let nsp = self.b.ins().iadd_imm_s(sp, 4);
                if insn.op_kind(0) == OpKind::Register {
                    self.set_reg32(ESP, nsp);
                    self.write_reg(insn.op_register(0), v);
                } else {
                    // The address of an ESP-based destination uses the new
                    // ESP; a fault must leave the old one: store first.
                    let old = self.regs[ESP];
                    self.regs[ESP] = Some(nsp);
                    let a = self.ea(insn);
                    self.regs[ESP] = old;
                    self.store(a, v, 4);
                    self.set_reg32(ESP, nsp);
                }
            }
            Mnemonic::Call => {
                if insn.op_kind(0) == OpKind::NearBranch32 {
                    let ret = self.iconst(next);
                    self.push(ret);
                    self.end_at_const(insn.near_branch32());
                } else {
                    let target = self.read_op(insn, 0);
                    let ret = self.iconst(next);
                    self.push(ret);
                    self.end_at(target);
                }
                return false;
            }
            Mnemonic::Ret => {
                let sp = self.reg32(ESP);
                let t = self.load(sp, 4);
                let extra = if insn.op_count() > 0 {
                    insn.immediate16() as i64
                } else {
                    0
                };
                let nsp = self.b.ins().iadd_imm_s(sp, 4 + extra);
                self.set_reg32(ESP, nsp);
                self.end_at(t);
                return false;
            }
            Mnemonic::Jmp => {
                if insn.op_kind(0) == OpKind::NearBranch32 {
                    self.end_at_const(insn.near_branch32());
                } else {
                    let t = self.read_op(insn, 0);
                    self.end_at(t);
                }
                return false;
            }
            _ if insn.is_jcc_short_or_near() => {
                let cc = (insn.condition_code() as u8).wrapping_sub(1) & 15;
                let c = self.condition(cc);
                // Both exits write back the same state: sync once here.
                self.sync_regs_and_flags();
                let taken = self.b.create_block();
                let fall = self.b.create_block();
                self.b.ins().brif(c, taken, &[], fall, &[]);
                self.b.switch_to_block(taken);
                self.end_at_const(insn.near_branch32());
                self.b.switch_to_block(fall);
                self.end_at_const(next);
                return false;
            }
            _ if crate::interp::is_setcc(m) => {
                let cc = (insn.condition_code() as u8).wrapping_sub(1) & 15;
                let c = self.condition(cc);
                let v = self.b.ins().uextend(I32, c);
                self.write_op(insn, 0, None, v);
            }
            _ if crate::interp::is_cmovcc(m) => {
                let cc = (insn.condition_code() as u8).wrapping_sub(1) & 15;
                let src = self.read_op(insn, 1);
                let c = self.condition(cc);
                let cur = self.read_reg(insn.op_register(0));
                let v = self.b.ins().select(c, src, cur);
                self.write_reg(insn.op_register(0), v);
            }
            _ => {
                // `lowered` and this match disagree: fall back safely.
                self.call_step(insn, insn_ptr);
                let code = self.b.ins().iconst(I64, EXIT_NEXT as i64);
                self.b.ins().jump(self.exit, &[code.into()]);
                return false;
            }
        }
        if last {
            self.end_fallthrough(next);
            return false;
        }
        true
    }

    /// CF (as the EFLAGS bit value, 0 or 1) of the current flags.
    fn carry_flag(&mut self) -> Value {
        if let Some(p) = self.flags {
            if let Some(c) = self.fast_condition(p, 1) {
                return self.b.ins().uextend(I32, c);
            }
        }
        self.sync_flags();
        let cc_v = self.iconst(2);
        let callee = self.b.ins().iconst(I64, self.helpers.cond as i64);
        let call = self
            .b
            .ins()
            .call_indirect(self.cond_sig, callee, &[self.cpu, cc_v]);
        self.b.inst_results(call)[0]
    }

    /// Stores eager flags: `base` holds CF/OF bits, SF/ZF/PF come from `r`.
    fn eager_flags_with_szp(&mut self, base: Value, r: Value, bytes: u32) {
        if self.flags_needed == 0 {
            return;
        }
        let z = self.b.ins().icmp_imm_u(IntCC::Equal, r, 0);
        let z = self.b.ins().uextend(I32, z);
        let zf = self.b.ins().ishl_imm_u(z, 6);
        let s = self.b.ins().ushr_imm_u(r, (bytes * 8 - 1) as i64);
        let s = self.b.ins().band_imm_u(s, 1);
        let sflag = self.b.ins().ishl_imm_u(s, 7);
        let low = self.b.ins().band_imm_u(r, 0xff);
        let pc = self.b.ins().popcnt(low);
        let odd = self.b.ins().band_imm_u(pc, 1);
        let even = self.b.ins().bxor_imm_u(odd, 1);
        let pf = self.b.ins().ishl_imm_u(even, 2);
        let f = self.b.ins().bor(base, zf);
        let f = self.b.ins().bor(f, sflag);
        let f = self.b.ins().bor(f, pf);
        let zero = self.iconst(0);
        self.flags = Some(Pending {
            op: CcOp::Eflags as u32,
            dst: zero,
            src: f,
            src2: zero,
        });
        self.flags_dirty = true;
    }
}
