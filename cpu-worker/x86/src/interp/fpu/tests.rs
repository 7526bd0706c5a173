//! Tests of the x87 instruction decoding (every form of D8-DF and WAIT,
//! against the opcode maps of SDM vol. 2 appendix A.4) and of the
//! interpreter's handling around the unit: memory operands, faults
//! leaving the state unchanged, #MF, FCOMI flags, FCMOVcc, pointers and
//! MMX aliasing. The numeric results themselves are the x87 crate's and
//! are compared with the host CPU there and in the differential tester.

use iced_x86::{Decoder, DecoderOptions};
use x87::{ArithOp, Constant, EnvFormat, F80};

use super::{decode, Decoded, MemFmt, Op, Operand, Unary};
use crate::interp::{self, Env};
use crate::mem::{Exception, FlatMemory, Memory};
use crate::state::{CpuState, AF, CF, EAX, EBX, OF, PF, SF, ZF};

fn decoded(bytes: &[u8]) -> Option<Decoded> {
    let mut d = Decoder::with_ip(32, bytes, 0x1000, DecoderOptions::NONE);
    let insn = d.decode();
    assert_eq!(insn.len(), bytes.len(), "length of {bytes:02x?}");
    decode(&insn)
}

fn op(bytes: &[u8]) -> Op {
    match decoded(bytes) {
        Some(d) => {
            assert!(!d.wait, "{bytes:02x?} decoded as a wait form");
            d.op
        }
        None => panic!("{bytes:02x?} not decoded as x87"),
    }
}

const MEM: [u8; 1] = [0x03]; // ModR/M rm = [ebx], reg set by the caller

fn m(b0: u8, reg: u8) -> Vec<u8> {
    vec![b0, (reg << 3) | MEM[0]]
}

fn r(b0: u8, b1: u8) -> Vec<u8> {
    vec![b0, b1]
}

#[test]
fn arithmetic_forms() {
    use ArithOp::*;
    use MemFmt::*;
    use Operand::{Mem, St};
    let ops = [Add, Mul, Sub, SubR, Div, DivR];
    // reg field of D8/DA/DC/DE: 0 add, 1 mul, 2 com, 3 comp, 4 sub, 5 subr, 6 div, 7 divr.
    let regs = [0u8, 1, 4, 5, 6, 7];
    for (&o, &reg) in ops.iter().zip(regs.iter()) {
        let a = |dst, src, pop| Op::Arith {
            op: o,
            dst,
            src,
            pop,
        };
        assert_eq!(op(&m(0xd8, reg)), a(0, Mem(F32), false));
        assert_eq!(op(&m(0xdc, reg)), a(0, Mem(F64), false));
        assert_eq!(op(&m(0xda, reg)), a(0, Mem(I32), false));
        assert_eq!(op(&m(0xde, reg)), a(0, Mem(I16), false));
        for i in 0..8u8 {
            assert_eq!(op(&r(0xd8, 0xc0 | (reg << 3) | i)), a(0, St(i), false));
            // DC and DE: destination ST(i); SDM swaps the SUB/SUBR and
            // DIV/DIVR encodings there (DC E0+i is FSUBR ST(i), ST(0)).
            let swapped = match o {
                Sub => SubR,
                SubR => Sub,
                Div => DivR,
                DivR => Div,
                x => x,
            };
            let b = |pop| Op::Arith {
                op: swapped,
                dst: i,
                src: St(0),
                pop,
            };
            assert_eq!(op(&r(0xdc, 0xc0 | (reg << 3) | i)), b(false));
            assert_eq!(op(&r(0xde, 0xc0 | (reg << 3) | i)), b(true));
        }
    }
}

#[test]
fn compare_forms() {
    use MemFmt::*;
    use Operand::{Mem, St};
    let c = |src, pops, quiet| Op::Compare { src, pops, quiet };
    assert_eq!(op(&m(0xd8, 2)), c(Mem(F32), 0, false));
    assert_eq!(op(&m(0xd8, 3)), c(Mem(F32), 1, false));
    assert_eq!(op(&m(0xdc, 2)), c(Mem(F64), 0, false));
    assert_eq!(op(&m(0xdc, 3)), c(Mem(F64), 1, false));
    assert_eq!(op(&m(0xda, 2)), c(Mem(I32), 0, false));
    assert_eq!(op(&m(0xda, 3)), c(Mem(I32), 1, false));
    assert_eq!(op(&m(0xde, 2)), c(Mem(I16), 0, false));
    assert_eq!(op(&m(0xde, 3)), c(Mem(I16), 1, false));
    for i in 0..8u8 {
        assert_eq!(op(&r(0xd8, 0xd0 | i)), c(St(i), 0, false));
        assert_eq!(op(&r(0xd8, 0xd8 | i)), c(St(i), 1, false));
        // Undocumented aliases.
        assert_eq!(op(&r(0xdc, 0xd0 | i)), c(St(i), 0, false));
        assert_eq!(op(&r(0xdc, 0xd8 | i)), c(St(i), 1, false));
        assert_eq!(op(&r(0xde, 0xd0 | i)), c(St(i), 1, false));
        assert_eq!(op(&r(0xdd, 0xe0 | i)), c(St(i), 0, true));
        assert_eq!(op(&r(0xdd, 0xe8 | i)), c(St(i), 1, true));
        let ci = |pop, quiet| Op::Comi { i, pop, quiet };
        assert_eq!(op(&r(0xdb, 0xf0 | i)), ci(false, false));
        assert_eq!(op(&r(0xdb, 0xe8 | i)), ci(false, true));
        assert_eq!(op(&r(0xdf, 0xf0 | i)), ci(true, false));
        assert_eq!(op(&r(0xdf, 0xe8 | i)), ci(true, true));
    }
    assert_eq!(op(&[0xde, 0xd9]), c(St(1), 2, false));
    assert_eq!(op(&[0xda, 0xe9]), c(St(1), 2, true));
    assert_eq!(op(&[0xd9, 0xe4]), Op::Unary(Unary::Tst));
    assert_eq!(op(&[0xd9, 0xe5]), Op::Unary(Unary::Xam));
}

#[test]
fn load_and_store_forms() {
    use MemFmt::*;
    use Operand::{Mem, St};
    let st = |to, pop, truncate| Op::Store { to, pop, truncate };
    assert_eq!(op(&m(0xd9, 0)), Op::Load(Mem(F32)));
    assert_eq!(op(&m(0xd9, 2)), st(Mem(F32), false, false));
    assert_eq!(op(&m(0xd9, 3)), st(Mem(F32), true, false));
    assert_eq!(op(&m(0xdd, 0)), Op::Load(Mem(F64)));
    assert_eq!(op(&m(0xdd, 1)), st(Mem(I64), true, true));
    assert_eq!(op(&m(0xdd, 2)), st(Mem(F64), false, false));
    assert_eq!(op(&m(0xdd, 3)), st(Mem(F64), true, false));
    assert_eq!(op(&m(0xdb, 0)), Op::Load(Mem(I32)));
    assert_eq!(op(&m(0xdb, 1)), st(Mem(I32), true, true));
    assert_eq!(op(&m(0xdb, 2)), st(Mem(I32), false, false));
    assert_eq!(op(&m(0xdb, 3)), st(Mem(I32), true, false));
    assert_eq!(op(&m(0xdb, 5)), Op::Load(Mem(F80)));
    assert_eq!(op(&m(0xdb, 7)), st(Mem(F80), true, false));
    assert_eq!(op(&m(0xdf, 0)), Op::Load(Mem(I16)));
    assert_eq!(op(&m(0xdf, 1)), st(Mem(I16), true, true));
    assert_eq!(op(&m(0xdf, 2)), st(Mem(I16), false, false));
    assert_eq!(op(&m(0xdf, 3)), st(Mem(I16), true, false));
    assert_eq!(op(&m(0xdf, 4)), Op::Load(Mem(Bcd)));
    assert_eq!(op(&m(0xdf, 5)), Op::Load(Mem(I64)));
    assert_eq!(op(&m(0xdf, 6)), st(Mem(Bcd), true, false));
    assert_eq!(op(&m(0xdf, 7)), st(Mem(I64), true, false));
    for i in 0..8u8 {
        assert_eq!(op(&r(0xd9, 0xc0 | i)), Op::Load(St(i)));
        assert_eq!(op(&r(0xdd, 0xd0 | i)), st(St(i), false, false));
        assert_eq!(op(&r(0xdd, 0xd8 | i)), st(St(i), true, false));
        // Undocumented FSTP aliases.
        assert_eq!(op(&r(0xd9, 0xd8 | i)), Op::StpNce(i));
        assert_eq!(op(&r(0xdf, 0xd0 | i)), st(St(i), true, false));
        assert_eq!(op(&r(0xdf, 0xd8 | i)), st(St(i), true, false));
    }
    let consts = [
        (0xe8, Constant::One),
        (0xe9, Constant::L2T),
        (0xea, Constant::L2E),
        (0xeb, Constant::Pi),
        (0xec, Constant::Lg2),
        (0xed, Constant::Ln2),
        (0xee, Constant::Zero),
    ];
    for (b, k) in consts {
        assert_eq!(op(&[0xd9, b]), Op::Const(k));
    }
}

#[test]
fn stack_and_misc_forms() {
    for i in 0..8u8 {
        assert_eq!(op(&r(0xd9, 0xc8 | i)), Op::Xch(i));
        assert_eq!(op(&r(0xdd, 0xc8 | i)), Op::Xch(i));
        assert_eq!(op(&r(0xdf, 0xc8 | i)), Op::Xch(i));
        assert_eq!(op(&r(0xdd, 0xc0 | i)), Op::Free(i));
        assert_eq!(op(&r(0xdf, 0xc0 | i)), Op::Freep(i));
        let cm = |b0: u8, b1: u8, cc| assert_eq!(op(&r(b0, b1 | i)), Op::Cmov { cc, i });
        cm(0xda, 0xc0, 0x2);
        cm(0xda, 0xc8, 0x4);
        cm(0xda, 0xd0, 0x6);
        cm(0xda, 0xd8, 0xa);
        cm(0xdb, 0xc0, 0x3);
        cm(0xdb, 0xc8, 0x5);
        cm(0xdb, 0xd0, 0x7);
        cm(0xdb, 0xd8, 0xb);
    }
    let unary = [
        (0xe0, Unary::Chs),
        (0xe1, Unary::Abs),
        (0xf0, Unary::F2xm1),
        (0xf1, Unary::Yl2x),
        (0xf2, Unary::Ptan),
        (0xf3, Unary::Patan),
        (0xf4, Unary::Xtract),
        (0xf5, Unary::Prem1),
        (0xf6, Unary::Decstp),
        (0xf7, Unary::Incstp),
        (0xf8, Unary::Prem),
        (0xf9, Unary::Yl2xp1),
        (0xfa, Unary::Sqrt),
        (0xfb, Unary::Sincos),
        (0xfc, Unary::Rndint),
        (0xfd, Unary::Scale),
        (0xfe, Unary::Sin),
        (0xff, Unary::Cos),
        (0xd0, Unary::Nop),
    ];
    for (b, u) in unary {
        assert_eq!(op(&[0xd9, b]), Op::Unary(u));
    }
}

#[test]
fn control_forms_and_wait() {
    use EnvFormat::*;
    assert_eq!(op(&m(0xd9, 4)), Op::Ldenv(Protected32));
    assert_eq!(op(&[0x66, 0xd9, 0x23]), Op::Ldenv(Protected16));
    assert_eq!(op(&m(0xd9, 5)), Op::Ldcw);
    assert_eq!(op(&m(0xd9, 6)), Op::Stenv(Protected32));
    assert_eq!(op(&[0x66, 0xd9, 0x33]), Op::Stenv(Protected16));
    assert_eq!(op(&m(0xd9, 7)), Op::Stcw);
    assert_eq!(op(&m(0xdd, 4)), Op::Rstor(Protected32));
    assert_eq!(op(&[0x66, 0xdd, 0x23]), Op::Rstor(Protected16));
    assert_eq!(op(&m(0xdd, 6)), Op::Save(Protected32));
    assert_eq!(op(&[0x66, 0xdd, 0x33]), Op::Save(Protected16));
    assert_eq!(op(&m(0xdd, 7)), Op::StswMem);
    assert_eq!(op(&[0xdf, 0xe0]), Op::StswAx);
    assert_eq!(op(&[0xdb, 0xe2]), Op::Clex);
    assert_eq!(op(&[0xdb, 0xe3]), Op::Init);
    for b in [0xe0, 0xe1, 0xe4] {
        assert_eq!(op(&[0xdb, b]), Op::Legacy);
    }
    // The 9B prefix of the wait forms is an instruction of its own.
    assert_eq!(op(&[0x9b]), Op::Wait);
    let bytes = [0x9b, 0xdd, 0x3b];
    let mut d = Decoder::with_ip(32, &bytes, 0x1000, DecoderOptions::NONE);
    let (a, b) = (d.decode(), d.decode());
    assert_eq!((a.len(), b.len()), (1, 2));
    assert_eq!(
        (decode(&a).map(|d| d.op), decode(&b).map(|d| d.op)),
        (Some(Op::Wait), Some(Op::StswMem))
    );
}

/// Every ModR/M byte after D8-DF: what iced-x86 decodes as an x87
/// instruction is decoded here too, the rest is #UD for both.
#[test]
fn every_escape_opcode_is_decoded() {
    let mut n = 0;
    for b0 in 0xd8..=0xdfu8 {
        for modrm in 0..=255u8 {
            // A SIB and a 32-bit displacement, of which the decoder takes
            // what the ModR/M byte asks for.
            let bytes = [b0, modrm, 0x24, 0, 0, 0, 0, 0];
            let mut d = Decoder::with_ip(32, &bytes, 0x1000, DecoderOptions::NONE);
            let insn = d.decode();
            if insn.is_invalid() {
                assert!(decode(&insn).is_none());
                continue;
            }
            assert!(
                decode(&insn).is_some(),
                "{:02x?} ({:?}) not decoded",
                &bytes[..insn.len()],
                insn.code()
            );
            n += 1;
        }
    }
    // 8 opcodes x 192 memory ModR/M bytes less the reserved /r (D9 /1,
    // DB /4, DB /6, DD /5), and the register forms less the reserved ones.
    assert!(n > 1800, "{n} x87 encodings decoded");
}

// ----- execution -----

struct NoEnv;
impl Env for NoEnv {
    fn rdtsc(&mut self) -> u64 {
        0
    }
    fn load_segment(&mut self, _: usize, _: u16) -> Result<(u32, u32), Exception> {
        Err(Exception::GeneralProtection(0))
    }
}

const CODE: u32 = 0x1000;
const DATA: u32 = 0x2000;

/// Runs `code` from a CPU prepared by `setup` until an exception or the
/// end of the code.
fn run(
    code: &[u8],
    setup: impl FnOnce(&mut CpuState, &mut FlatMemory),
) -> (CpuState, FlatMemory, Result<(), Exception>) {
    let mut mem = FlatMemory::new(0x3000);
    mem.bytes[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
    let mut cpu = CpuState {
        eip: CODE,
        ..CpuState::default()
    };
    cpu.regs[EBX] = DATA;
    setup(&mut cpu, &mut mem);
    let end = CODE + code.len() as u32;
    while cpu.eip != end {
        let r = interp::decode(&cpu, &mut mem)
            .and_then(|i| interp::step(&mut cpu, &mut mem, &mut NoEnv, &i));
        if r.is_err() {
            return (cpu, mem, r);
        }
    }
    (cpu, mem, Ok(()))
}

fn f64_at(mem: &FlatMemory, a: u32) -> f64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&mem.bytes[a as usize..a as usize + 8]);
    f64::from_le_bytes(b)
}

#[test]
fn loads_arithmetic_and_stores() {
    // fld qword [ebx]; fild dword [ebx+8]; faddp st1; fidiv word [ebx+12];
    // fstp qword [ebx+16]
    let code = [
        0xdd, 0x03, 0xdb, 0x43, 0x08, 0xde, 0xc1, 0xde, 0x73, 0x0c, 0xdd, 0x5b, 0x10,
    ];
    let (cpu, mem, r) = run(&code, |_, mem| {
        mem.write_u64(DATA, 2.5f64.to_bits()).expect("in range");
        mem.write_u32(DATA + 8, 7).expect("in range");
        mem.write_u16(DATA + 12, 4).expect("in range");
    });
    assert_eq!(r, Ok(()));
    assert_eq!(f64_at(&mem, DATA + 16), 2.375);
    assert_eq!(cpu.fpu.tag_word(), 0xffff);
    assert_eq!(cpu.fpu.status_word(), 0);
}

#[test]
fn fcomi_sets_zf_pf_cf_and_clears_of_sf_af() {
    // fld1; fldz; fcomi st0, st1 (0 < 1: CF); fucomip st0, st1
    let code = [0xd9, 0xe8, 0xd9, 0xee, 0xdb, 0xf1];
    let (cpu, _, r) = run(&code, |cpu, _| {
        cpu.set_eflags(OF | SF | AF | ZF | PF, OF | SF | AF | ZF | PF | CF);
    });
    assert_eq!(r, Ok(()));
    assert_eq!(cpu.eflags() & (OF | SF | AF | ZF | PF | CF), CF);
    // Unordered: ZF, PF and CF all set.
    // fld1; fchs; fsqrt (NaN, IE masked); fucomip st0, st1
    let code = [0xd9, 0xe8, 0xd9, 0xe0, 0xd9, 0xfa, 0xdf, 0xe9];
    let (cpu, _, r) = run(&code, |_, _| {});
    assert_eq!(r, Ok(()));
    assert_eq!(cpu.eflags() & (ZF | PF | CF), ZF | PF | CF);
    assert_eq!(cpu.fpu.top(), 0);
    // Equal: ZF alone. fld1; fld1; fsqrt; fucomip st0, st1
    let code = [0xd9, 0xe8, 0xd9, 0xe8, 0xd9, 0xfa, 0xdf, 0xe9];
    let (cpu, _, r) = run(&code, |_, _| {});
    assert_eq!(r, Ok(()));
    assert_eq!(cpu.eflags() & (ZF | PF | CF), ZF);
}

#[test]
fn fcmov_follows_eflags() {
    // fld1; fldz; fcmove st0, st1
    let code = [0xd9, 0xe8, 0xd9, 0xee, 0xda, 0xc9];
    for zf in [false, true] {
        let (cpu, _, r) = run(&code, |cpu, _| {
            cpu.set_eflags(if zf { ZF } else { 0 }, ZF);
        });
        assert_eq!(r, Ok(()));
        let want = if zf { F80::ONE } else { F80::ZERO };
        assert_eq!(cpu.fpu.st(0), want);
    }
}

#[test]
fn pending_exception_faults_at_next_waiting_instruction() {
    // fldcw [ebx] (ZE unmasked); fld1; fldz; fdivp st1 (1/0: ZE pending,
    // destination kept); fnstsw ax; fnstcw [ebx+2]; fwait
    let code = [
        0xd9, 0x2b, 0xd9, 0xe8, 0xd9, 0xee, 0xde, 0xf9, 0xdf, 0xe0, 0xd9, 0x7b, 0x02, 0x9b,
    ];
    let (cpu, mem, r) = run(&code, |_, mem| {
        mem.write_u16(DATA, 0x037b).expect("in range");
    });
    assert_eq!(r, Err(Exception::FpuError));
    assert_eq!(cpu.eip, CODE + 13, "faults at the FWAIT");
    let sw = cpu.regs[EAX] as u16;
    assert_eq!(sw & 0x80ff, 0x8084, "ES, B and ZE");
    assert_eq!(mem.bytes[DATA as usize + 2], 0x7b);
    assert_eq!(cpu.fpu.st(0), F80::ZERO);
    assert_eq!(cpu.fpu.st(1), F80::ONE);
    // The faulting instruction is recorded: FDIVRP is DE F8+i, FOP 0x6f9.
    assert_eq!((cpu.fpu.fip, cpu.fpu.fop), ((CODE + 6) as u64, 0x6f9));
    // With FNCLEX before it, the FWAIT runs.
    let mut c = code.to_vec();
    c.splice(13..13, [0xdb, 0xe2]);
    let (_, _, r) = run(&c, |_, mem| {
        mem.write_u16(DATA, 0x037b).expect("in range");
    });
    assert_eq!(r, Ok(()));
}

#[test]
fn faulting_store_leaves_the_unit_unchanged() {
    // fldpi; fstp qword [ebx] with EBX past the end of memory.
    let (cpu, _, r) = run(&[0xd9, 0xeb, 0xdd, 0x1b], |cpu, _| {
        cpu.regs[EBX] = 0x2ffc;
    });
    assert!(matches!(r, Err(Exception::PageFault(_))), "{r:?}");
    assert_eq!(cpu.eip, CODE + 2);
    assert_eq!(cpu.fpu.top(), 7);
    assert!(!cpu.fpu.st_empty(0));
    // The instruction pointer is still the FLDPI's.
    assert_eq!(cpu.fpu.fip, CODE as u64);
    // fnsave to a faulting address: no reinitialisation.
    let (cpu, _, r) = run(&[0xd9, 0xeb, 0xdd, 0x33], |cpu, _| {
        cpu.regs[EBX] = 0x2fc0;
    });
    assert!(matches!(r, Err(Exception::PageFault(_))), "{r:?}");
    assert_eq!(cpu.fpu.top(), 7);
    // A faulting load leaves it too.
    let (cpu, _, r) = run(&[0xdb, 0x2b], |cpu, _| {
        cpu.regs[EBX] = 0x2ff8;
    });
    assert!(matches!(r, Err(Exception::PageFault(_))), "{r:?}");
    assert_eq!(cpu.fpu.tag_word(), 0xffff);
}

#[test]
fn pointers_follow_the_last_non_control_instruction() {
    // fld dword [ebx+4]; fnstcw [ebx+8]: FIP is the FLD's; FOP and FDP
    // stay (recorded only with an unmasked exception); FNSTCW is a control
    // instruction.
    let (cpu, _, r) = run(&[0xd9, 0x43, 0x04, 0xd9, 0x7b, 0x08], |cpu, _| {
        cpu.fpu.set_pointers(0x55, 0, 0x123, Some((0x66, 0)));
    });
    assert_eq!(r, Ok(()));
    assert_eq!(
        (cpu.fpu.fip, cpu.fpu.fop, cpu.fpu.fdp),
        (CODE as u64, 0x123, 0x66)
    );
    // fldcw [ebx] (ZE unmasked); fld1; fdiv dword [ebx+4] (by +0: ZE);
    // fnop would fault, fnstenv [ebx+16] does not wait.
    let code = [0xd9, 0x2b, 0xd9, 0xe8, 0xd8, 0x73, 0x04, 0xd9, 0x73, 0x10];
    let (cpu, mem, r) = run(&code, |_, mem| {
        mem.write_u16(DATA, 0x037b).expect("in range");
    });
    assert_eq!(r, Ok(()));
    assert_eq!(cpu.fpu.fip, (CODE + 4) as u64);
    assert_eq!(cpu.fpu.fop, 0x073, "D8 /6 with ModR/M 73");
    assert_eq!(cpu.fpu.fdp, (DATA + 4) as u64);
    assert_eq!((cpu.fpu.fcs, cpu.fpu.fds), (0, 0));
    // The image: FIP at 12, FOP at 18, FDP at 20.
    let env = &mem.bytes[DATA as usize + 16..DATA as usize + 44];
    assert_eq!(&env[12..16], &(CODE + 4).to_le_bytes());
    assert_eq!(&env[18..20], &0x073u16.to_le_bytes());
    assert_eq!(&env[20..24], &(DATA + 4).to_le_bytes());
}

#[test]
fn mmx_aliases_the_register_stack() {
    // movq mm0, [ebx]; fld st0 would overflow: all tags are valid after
    // an MMX instruction; emms empties them; fld qword [ebx] then works.
    let code = [0x0f, 0x6f, 0x03, 0xd9, 0xc0];
    let (cpu, _, r) = run(&code, |_, mem| {
        mem.write_u64(DATA, 0x8000_0000_0000_0001)
            .expect("in range");
    });
    assert_eq!(r, Ok(()));
    assert_eq!(cpu.fpu.top(), 7);
    // Stack overflow (masked): IE, SF and C1, the indefinite pushed.
    assert_eq!(cpu.fpu.status_word() & 0x0241, 0x0241);
    assert_eq!(cpu.fpu.st(0), F80::INDEFINITE);
    assert_eq!(cpu.mmx(0), 0x8000_0000_0000_0001);
    let code = [0x0f, 0x6f, 0x03, 0x0f, 0x77, 0xdd, 0x03];
    let (cpu, _, r) = run(&code, |_, mem| {
        mem.write_u64(DATA, 1.0f64.to_bits()).expect("in range");
    });
    assert_eq!(r, Ok(()));
    assert_eq!(cpu.fpu.status_word() & 0x3fff, 0x3800);
    assert_eq!(cpu.fpu.st(0), F80::ONE);
    // An MMX instruction with an unmasked exception pending: #MF first.
    let (cpu, _, r) = run(&[0x0f, 0x6f, 0x03], |cpu, _| {
        let mut img = cpu.fpu.save_image(EnvFormat::Protected32);
        img[0] = 0x7e; // IE unmasked
        img[4] = 0x81; // IE and ES
        img[5] = 0x80; // B
        cpu.fpu
            .frstor(EnvFormat::Protected32, &img)
            .expect("frstor never faults");
    });
    assert_eq!(r, Err(Exception::FpuError));
    assert_eq!(cpu.fpu.tag_word(), 0xffff);
}
