//! A few lines of IA-32 encoding for the case generators: ModRM/SIB
//! operands for 32-bit and 16-bit addressing (SDM vol. 2 §2.1, tables 2-1
//! to 2-3).

/// A ModRM r/m operand in 32-bit addressing.
#[derive(Clone, Copy, Debug)]
pub enum Rm {
    Reg(u8),
    Mem {
        base: Option<u8>,
        /// Index register and scale (1, 2, 4, 8); never ESP.
        index: Option<(u8, u8)>,
        disp: i32,
    },
}

pub const ESP: u8 = 4;
pub const EBP: u8 = 5;

fn scale_bits(s: u8) -> u8 {
    match s {
        1 => 0,
        2 => 1,
        4 => 2,
        _ => 3,
    }
}

/// Appends ModRM (with `reg` in the reg field), SIB and displacement.
pub fn modrm(out: &mut Vec<u8>, reg: u8, rm: &Rm) {
    let reg = (reg & 7) << 3;
    match *rm {
        Rm::Reg(r) => out.push(0xc0 | reg | (r & 7)),
        Rm::Mem {
            base: None,
            index: None,
            disp,
        } => {
            out.push(reg | 5);
            out.extend_from_slice(&disp.to_le_bytes());
        }
        Rm::Mem { base, index, disp } => {
            // mod: 00 no displacement (not with EBP as base), 01 disp8, 10 disp32.
            let (md, dbytes) = match base {
                None => (0u8, 4),
                Some(b) if disp == 0 && b != EBP => (0, 0),
                Some(_) if i8::try_from(disp).is_ok() => (1, 1),
                Some(_) => (2, 4),
            };
            let need_sib = index.is_some() || base == Some(ESP) || base.is_none();
            if need_sib {
                out.push((md << 6) | reg | 4);
                let (ix, sc) = index.map_or((4, 0), |(i, s)| (i & 7, scale_bits(s)));
                let b = base.map_or(5, |b| b & 7);
                out.push((sc << 6) | (ix << 3) | b);
            } else {
                out.push((md << 6) | reg | base.map_or(5, |b| b & 7));
            }
            match dbytes {
                1 => out.push(disp as i8 as u8),
                4 => out.extend_from_slice(&disp.to_le_bytes()),
                _ => {}
            }
        }
    }
}

/// Appends a 16-bit-addressing ModRM: `rm16` 0-7 is [BX+SI], [BX+DI],
/// [BP+SI], [BP+DI], [SI], [DI], [BP] (or disp16 with mod 0), [BX];
/// `md` is the mod field (0-2); `disp` is encoded as mod says.
pub fn modrm16(out: &mut Vec<u8>, reg: u8, rm16: u8, md: u8, disp: u16) {
    out.push((md << 6) | ((reg & 7) << 3) | (rm16 & 7));
    match (md, rm16) {
        (0, 6) | (2, _) => out.extend_from_slice(&disp.to_le_bytes()),
        (1, _) => out.push(disp as u8),
        _ => {}
    }
}

/// Appends an immediate of `bytes` bytes.
pub fn imm(out: &mut Vec<u8>, v: u32, bytes: u32) {
    out.extend_from_slice(&v.to_le_bytes()[..bytes as usize]);
}

/// The operand-size prefix for 16-bit operands.
pub fn osize(out: &mut Vec<u8>, bytes: u32) {
    if bytes == 2 {
        out.push(0x66);
    }
}

/// The w bit of the classic ALU encodings: 0 for byte operands.
pub fn w(bytes: u32) -> u8 {
    (bytes != 1) as u8
}
