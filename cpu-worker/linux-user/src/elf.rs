//! Loading an i386 ELF program as Linux's binfmt_elf does (System V ABI,
//! Intel386 supplement: ELF header, program headers, the initial process
//! stack with argv, envp and the auxiliary vector; elf(5), getauxval(3)).
//!
//! Layout of an i386 process on an x86_64 kernel: ET_EXEC at its link
//! address, a PIE at ELF_ET_DYN_BASE (0x56555000), the interpreter and a
//! static PIE top-down from below the stack, the stack ending at 0xffffe000.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::mmap::{
    page_down, page_up, AddressSpace, Backing, MMAP_TOP, PIE_BASE, P_EXEC, P_READ, P_WRITE,
    STACK_TOP,
};

const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PT_PHDR: u32 = 6;
const PT_GNU_STACK: u32 = 0x6474_e551;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_386: u16 = 3;

pub const AT_NULL: u32 = 0;
pub const AT_PHDR: u32 = 3;
pub const AT_PHENT: u32 = 4;
pub const AT_PHNUM: u32 = 5;
pub const AT_PAGESZ: u32 = 6;
pub const AT_BASE: u32 = 7;
pub const AT_FLAGS: u32 = 8;
pub const AT_ENTRY: u32 = 9;
pub const AT_UID: u32 = 11;
pub const AT_EUID: u32 = 12;
pub const AT_GID: u32 = 13;
pub const AT_EGID: u32 = 14;
pub const AT_PLATFORM: u32 = 15;
pub const AT_HWCAP: u32 = 16;
pub const AT_CLKTCK: u32 = 17;
pub const AT_SECURE: u32 = 23;
pub const AT_RANDOM: u32 = 25;
pub const AT_EXECFN: u32 = 31;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {err}")]
    Io { path: String, err: std::io::Error },
    #[error("{0}: not an i386 ELF executable")]
    NotI386(String),
    #[error("{path}: bad ELF file: {what}")]
    Bad { path: String, what: &'static str },
    #[error("{path}: cannot map segment at {addr:#x}: {err}")]
    Map {
        path: String,
        addr: u32,
        err: std::io::Error,
    },
    #[error("{0}: no room in the guest address space")]
    NoRoom(String),
    #[error("cannot map the stack: {0}")]
    Stack(std::io::Error),
    #[error("the arguments and environment do not fit on the stack")]
    StackTooSmall,
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Clone, Copy, Debug)]
pub struct Phdr {
    pub p_type: u32,
    pub offset: u32,
    pub vaddr: u32,
    pub filesz: u32,
    pub memsz: u32,
    pub flags: u32,
}

/// A parsed ELF32 file header and program headers.
pub struct Elf {
    pub path: String,
    pub file: File,
    pub e_type: u16,
    pub entry: u32,
    pub phoff: u32,
    pub phentsize: u16,
    pub phdrs: Vec<Phdr>,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// True if `head` (the first bytes of a file) is an i386 ELF executable.
pub fn is_i386_elf(head: &[u8]) -> bool {
    head.len() >= 20
        && &head[..4] == b"\x7fELF"
        && head[4] == 1
        && head[5] == 1
        && matches!(u16_at(head, 16), ET_EXEC | ET_DYN)
        && matches!(u16_at(head, 18), EM_386 | 6)
}

impl Elf {
    pub fn open(path: &Path) -> Result<Elf> {
        let p = path.display().to_string();
        let io = |err| Error::Io {
            path: p.clone(),
            err,
        };
        let file = File::open(path).map_err(io)?;
        let mut h = [0u8; 52];
        let n = file.read_at(&mut h, 0).map_err(io)?;
        if n < 52 || !is_i386_elf(&h) {
            return Err(Error::NotI386(p));
        }
        let e_type = u16_at(&h, 16);
        let entry = u32_at(&h, 24);
        let phoff = u32_at(&h, 28);
        let phentsize = u16_at(&h, 42);
        let phnum = u16_at(&h, 44) as usize;
        if phentsize < 32 || phnum == 0 || phnum > 512 {
            return Err(Error::Bad {
                path: p,
                what: "program header table",
            });
        }
        let mut tab = vec![0u8; phentsize as usize * phnum];
        let got = file.read_at(&mut tab, phoff as u64).map_err(io)?;
        if got != tab.len() {
            return Err(Error::Bad {
                path: p,
                what: "truncated program headers",
            });
        }
        let phdrs = tab
            .chunks(phentsize as usize)
            .map(|c| Phdr {
                p_type: u32_at(c, 0),
                offset: u32_at(c, 4),
                vaddr: u32_at(c, 8),
                filesz: u32_at(c, 16),
                memsz: u32_at(c, 20),
                flags: u32_at(c, 24),
            })
            .collect();
        Ok(Elf {
            path: p,
            file,
            e_type,
            entry,
            phoff,
            phentsize,
            phdrs,
        })
    }

    pub fn interp(&self) -> Result<Option<String>> {
        for ph in &self.phdrs {
            if ph.p_type == PT_INTERP {
                if ph.filesz == 0 || ph.filesz > 4096 {
                    return Err(Error::Bad {
                        path: self.path.clone(),
                        what: "PT_INTERP size",
                    });
                }
                let mut b = vec![0u8; ph.filesz as usize];
                self.file
                    .read_at(&mut b, ph.offset as u64)
                    .map_err(|err| Error::Io {
                        path: self.path.clone(),
                        err,
                    })?;
                let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                return Ok(Some(String::from_utf8_lossy(&b[..end]).into_owned()));
            }
        }
        Ok(None)
    }

    fn span(&self) -> (u64, u64) {
        let loads = self.phdrs.iter().filter(|p| p.p_type == PT_LOAD);
        let lo = loads
            .clone()
            .map(|p| page_down(p.vaddr as u64))
            .min()
            .unwrap_or(0);
        let hi = loads
            .map(|p| page_up(p.vaddr as u64 + p.memsz as u64))
            .max()
            .unwrap_or(0);
        (lo, hi)
    }

    /// Maps the PT_LOAD segments at `bias` + their addresses. Returns the
    /// end of the highest segment's memory (for the program break).
    fn map_segments(&self, space: &AddressSpace, bias: u32, rie: bool) -> Result<u64> {
        let mut top = 0u64;
        let (dev, ino) = {
            use std::os::unix::fs::MetadataExt;
            match self.file.metadata() {
                Ok(m) => (m.dev(), m.ino()),
                Err(_) => (0, 0),
            }
        };
        for ph in self.phdrs.iter().filter(|p| p.p_type == PT_LOAD) {
            let va = bias as u64 + ph.vaddr as u64;
            let start = page_down(va);
            let file_end = va + ph.filesz as u64;
            let mem_end = va + ph.memsz as u64;
            let file_len = self.file.metadata().map_or(0, |m| m.len());
            if ph.filesz > ph.memsz
                || mem_end > 1 << 32
                || ph.offset as u64 + ph.filesz as u64 > file_len
            {
                return Err(Error::Bad {
                    path: self.path.clone(),
                    what: "segment sizes",
                });
            }
            let end = page_up(mem_end);
            let mut prot = 0u8;
            if ph.flags & 4 != 0 {
                prot |= P_READ;
            }
            if ph.flags & 2 != 0 {
                prot |= P_WRITE;
            }
            if ph.flags & 1 != 0 {
                prot |= P_EXEC;
            }
            let map_err = |err| Error::Map {
                path: self.path.clone(),
                addr: start as u32,
                err,
            };
            let mut v = space.lock();
            let file_pages_end = page_up(file_end).min(end);
            let backing = Backing {
                path: self.path.clone(),
                offset: page_down(ph.offset as u64),
                dev,
                ino,
            };
            space
                .map_anon(
                    &mut v,
                    start as u32,
                    file_pages_end.max(start) - start,
                    P_READ | P_WRITE,
                    false,
                    backing,
                    rie,
                )
                .map_err(map_err)?;
            if end > file_pages_end {
                space
                    .map_anon(
                        &mut v,
                        file_pages_end as u32,
                        end - file_pages_end,
                        P_READ | P_WRITE,
                        false,
                        Backing::default(),
                        rie,
                    )
                    .map_err(map_err)?;
            }
            drop(v);
            // The file part, from the page start so the bytes before the
            // segment in its first page are there as with a file mapping.
            let off0 = page_down(ph.offset as u64);
            let len = (file_end - start) as usize;
            let mut buf = vec![0u8; len];
            let n = self.file.read_at(&mut buf, off0).map_err(|err| Error::Io {
                path: self.path.clone(),
                err,
            })?;
            buf.truncate(n);
            space.write(start as u32, &buf).map_err(|_| Error::Bad {
                path: self.path.clone(),
                what: "segment write",
            })?;
            // Bytes after the file data in the last file page are zero (bss).
            let mut v = space.lock();
            space
                .protect(&mut v, start as u32, end - start, prot, rie)
                .map_err(map_err)?;
            top = top.max(mem_end);
        }
        Ok(top)
    }
}

/// What the loader did, for the CPU and the auxiliary vector (all of it
/// is logged by `-d page`).
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    pub entry: u32,
    pub prog_entry: u32,
    pub phdr: u32,
    pub phnum: u32,
    pub phent: u32,
    pub interp_base: u32,
    pub brk: u32,
    pub sp: u32,
    pub read_implies_exec: bool,
    pub stack_low: u32,
    pub auxv: Vec<(u32, u32)>,
}

/// Per-process values the auxiliary vector carries.
pub struct AuxInfo {
    pub hwcap: u32,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
    pub random: [u8; 16],
}

/// Finds the interpreter under the `-L` prefix first.
pub fn find_in_prefix(prefix: Option<&Path>, path: &str) -> PathBuf {
    if let Some(pre) = prefix {
        if path.starts_with('/') {
            let p = pre.join(path.trim_start_matches('/'));
            if p.exists() {
                return p;
            }
        }
    }
    PathBuf::from(path)
}

/// Loads `path` (and its interpreter) and builds the initial stack.
#[allow(clippy::too_many_arguments)]
pub fn load(
    space: &AddressSpace,
    path: &Path,
    prefix: Option<&Path>,
    argv: &[Vec<u8>],
    envp: &[Vec<u8>],
    execfn: &[u8],
    stack_size: u32,
    aux: &AuxInfo,
) -> Result<Loaded> {
    let exe = Elf::open(path)?;
    let interp = exe.interp()?;
    let exec_stack = exe
        .phdrs
        .iter()
        .find(|p| p.p_type == PT_GNU_STACK)
        .map(|p| p.flags & 1 != 0);
    // Without PT_GNU_STACK the kernel sets READ_IMPLIES_EXEC for i386.
    let rie = exec_stack.is_none();
    let (lo, hi) = exe.span();
    let bias: u32 = if exe.e_type == ET_DYN {
        if interp.is_some() {
            (PIE_BASE as u64).wrapping_sub(lo) as u32
        } else {
            let v = space.lock();
            let at = v
                .find_free_down(hi - lo, MMAP_TOP as u64)
                .ok_or_else(|| Error::NoRoom(exe.path.clone()))?;
            (at.wrapping_sub(lo)) as u32
        }
    } else {
        0
    };
    let seg_end = exe.map_segments(space, bias, rie)?;
    let mut brk = page_up(seg_end) as u32;
    if exe.e_type == ET_DYN && interp.is_none() {
        brk = PIE_BASE;
    }
    let phdr = exe
        .phdrs
        .iter()
        .find(|p| p.p_type == PT_PHDR)
        .map(|p| p.vaddr.wrapping_add(bias))
        .or_else(|| {
            exe.phdrs
                .iter()
                .find(|p| {
                    p.p_type == PT_LOAD
                        && p.offset <= exe.phoff
                        && exe.phoff < p.offset.saturating_add(p.filesz)
                })
                .map(|p| {
                    p.vaddr
                        .wrapping_add(exe.phoff - p.offset)
                        .wrapping_add(bias)
                })
        })
        .unwrap_or(0);
    let prog_entry = exe.entry.wrapping_add(bias);
    let mut entry = prog_entry;
    let mut interp_base = 0;
    if let Some(ip) = interp {
        let ipath = find_in_prefix(prefix, &ip);
        let ie = Elf::open(&ipath)?;
        let (ilo, ihi) = ie.span();
        let ibias = if ie.e_type == ET_DYN {
            let v = space.lock();
            let at = v
                .find_free_down(ihi - ilo, MMAP_TOP as u64)
                .ok_or_else(|| Error::NoRoom(ie.path.clone()))?;
            at.wrapping_sub(ilo) as u32
        } else {
            0
        };
        ie.map_segments(space, ibias, rie)?;
        interp_base = ibias.wrapping_add(ilo as u32);
        entry = ie.entry.wrapping_add(ibias);
    }

    // The stack.
    let stack_size = page_up(stack_size.max(0x2_0000) as u64);
    let stack_low = STACK_TOP as u64 - stack_size;
    {
        let mut v = space.lock();
        let mut prot = P_READ | P_WRITE;
        if exec_stack == Some(true) {
            prot |= P_EXEC;
        }
        space
            .map_anon(
                &mut v,
                stack_low as u32,
                stack_size,
                prot,
                false,
                Backing {
                    path: "[stack]".into(),
                    ..Backing::default()
                },
                rie,
            )
            .map_err(Error::Stack)?;
    }
    let mut auxv: Vec<(u32, u32)> = Vec::new();
    let sp = build_stack(
        space,
        stack_low as u32,
        argv,
        envp,
        execfn,
        aux,
        |execfn_addr, platform_addr, random_addr| {
            auxv = vec![
                (AT_HWCAP, aux.hwcap),
                (AT_PAGESZ, 4096),
                (AT_CLKTCK, 100),
                (AT_PHDR, phdr),
                (AT_PHENT, exe.phentsize as u32),
                (AT_PHNUM, exe.phdrs.len() as u32),
                (AT_BASE, interp_base),
                (AT_FLAGS, 0),
                (AT_ENTRY, prog_entry),
                (AT_UID, aux.uid),
                (AT_EUID, aux.euid),
                (AT_GID, aux.gid),
                (AT_EGID, aux.egid),
                (AT_SECURE, 0),
                (AT_RANDOM, random_addr),
                (AT_EXECFN, execfn_addr),
                (AT_PLATFORM, platform_addr),
                (AT_NULL, 0),
            ];
            auxv.clone()
        },
    )?;
    let _ = hi;
    Ok(Loaded {
        entry,
        prog_entry,
        phdr,
        phnum: exe.phdrs.len() as u32,
        phent: exe.phentsize as u32,
        interp_base,
        brk,
        sp,
        read_implies_exec: rie,
        stack_low: stack_low as u32,
        auxv,
    })
}

/// Lays out strings, the platform name, AT_RANDOM bytes, auxv, envp,
/// argv and argc from the top of the stack down, as create_elf_tables.
fn build_stack(
    space: &AddressSpace,
    low: u32,
    argv: &[Vec<u8>],
    envp: &[Vec<u8>],
    execfn: &[u8],
    aux: &AuxInfo,
    make_auxv: impl FnOnce(u32, u32, u32) -> Vec<(u32, u32)>,
) -> Result<u32> {
    let mut p = STACK_TOP as u64 - 4;
    let put = |p: &mut u64, bytes: &[u8]| -> Result<u32> {
        *p = p
            .checked_sub(bytes.len() as u64 + 1)
            .ok_or(Error::StackTooSmall)?;
        if *p < low as u64 + 0x1000 {
            return Err(Error::StackTooSmall);
        }
        let mut b = bytes.to_vec();
        b.push(0);
        space
            .write(*p as u32, &b)
            .map_err(|_| Error::StackTooSmall)?;
        Ok(*p as u32)
    };
    let execfn_addr = put(&mut p, execfn)?;
    let mut env_addrs = Vec::with_capacity(envp.len());
    for e in envp.iter().rev() {
        env_addrs.push(put(&mut p, e)?);
    }
    env_addrs.reverse();
    let mut arg_addrs = Vec::with_capacity(argv.len());
    for a in argv.iter().rev() {
        arg_addrs.push(put(&mut p, a)?);
    }
    arg_addrs.reverse();
    p &= !0xf;
    let platform = put(&mut p, b"i686")?;
    p -= 16;
    let random = p as u32;
    space
        .write(random, &aux.random)
        .map_err(|_| Error::StackTooSmall)?;
    p &= !0xf;
    let auxv = make_auxv(execfn_addr, platform, random);
    let items = (argv.len() + 1) + (envp.len() + 1) + 1 + auxv.len() * 2;
    let sp = (p - items as u64 * 4) & !0xf;
    if sp < low as u64 + 0x1000 {
        return Err(Error::StackTooSmall);
    }
    let mut words: Vec<u32> = Vec::with_capacity(items);
    words.push(argv.len() as u32);
    words.extend(&arg_addrs);
    words.push(0);
    words.extend(&env_addrs);
    words.push(0);
    for (k, v) in auxv {
        words.push(k);
        words.push(v);
    }
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    space
        .write(sp as u32, &bytes)
        .map_err(|_| Error::StackTooSmall)?;
    Ok(sp as u32)
}
