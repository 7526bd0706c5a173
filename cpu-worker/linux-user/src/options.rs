//! The command line and QEMU_* environment variables of `qemu-i386`, as
//! QEMU's user-mode documentation describes them ("QEMU User space
//! emulator", "Command line options" and `qemu-i386 -h`).
//!
//! Options come before the program; the first word that is not an option
//! (or the one after `--`) is the program. Both `-opt` and `--opt` work.
//! Environment variables are read first, so the command line wins.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use crate::log::{self, LogItems};

pub const DEFAULT_STACK_SIZE: u32 = 8 * 1024 * 1024;
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("option {0} is not implemented yet")]
    NotImplemented(String),
    #[error("{0}")]
    Log(#[from] log::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// What to do after parsing.
#[derive(Debug)]
pub enum Action {
    Run(Box<Options>),
    /// Print this text to stdout and exit 0 (`-h`, `-version`, `-cpu help`,
    /// `-d help`).
    Print(String),
}

#[derive(Clone, Debug)]
pub struct Options {
    pub prefix: Option<PathBuf>,
    pub stack_size: u32,
    pub cpu_model: String,
    pub env_set: Vec<(Vec<u8>, Vec<u8>)>,
    pub env_unset: Vec<Vec<u8>>,
    pub argv0: Option<Vec<u8>>,
    pub uname_release: Option<String>,
    pub log_items: LogItems,
    pub log_file: Option<PathBuf>,
    pub seed: Option<u64>,
    pub program: OsString,
    pub args: Vec<OsString>,
    /// The options to pass again when a guest execve's an i386 program.
    pub reexec: Vec<OsString>,
}

/// CPU models `-cpu` accepts: (name, leaf 1 EDX features kept, text).
/// The interpreter has no SSE yet, so the default model is one whose
/// CPUID sends libc down its integer-only paths.
pub const CPU_MODELS: &[(&str, u32, &str)] = &[
    ("pentium", FPU | TSC | CX8, "Intel Pentium: FPU TSC CX8"),
    (
        "pentiumpro",
        FPU | TSC | CX8 | CMOV,
        "Intel Pentium Pro: FPU TSC CX8 CMOV (default)",
    ),
    (
        "pentium2",
        FPU | TSC | CX8 | CMOV | MMX,
        "Intel Pentium II: + MMX",
    ),
    (
        "pentium3",
        FPU | TSC | CX8 | CMOV | MMX | FXSR | SSE,
        "Intel Pentium III: + FXSR SSE",
    ),
    (
        "qemu32",
        u32::MAX,
        "QEMU's default i386 model: every feature the CPU has (+ SSE2)",
    ),
    ("max", u32::MAX, "every feature the emulated CPU has"),
];
pub const DEFAULT_CPU: &str = "pentiumpro";
const FPU: u32 = 1;
const TSC: u32 = 1 << 4;
const CX8: u32 = 1 << 8;
const CMOV: u32 = 1 << 15;
const MMX: u32 = 1 << 23;
const FXSR: u32 = 1 << 24;
const SSE: u32 = 1 << 25;

/// The leaf 1 EDX mask of a model.
pub fn cpu_feature_mask(model: &str) -> u32 {
    CPU_MODELS
        .iter()
        .find(|(n, _, _)| *n == model)
        .map_or(u32::MAX, |(_, m, _)| *m)
}

pub fn usage() -> String {
    let mut s = String::new();
    s.push_str(
        "usage: qemu-i386 [options] program [arguments...]\n\
         Linux CPU emulator (compiled for i386 emulation)\n\n\
         Options and associated environment variables:\n\n\
         Argument             Env-variable      Description\n\
         -h                                     print this help\n\
         -help                                  \n\
         -g port              QEMU_GDB          wait gdb connection to 'port' (not implemented yet)\n\
         -L path              QEMU_LD_PREFIX    set the elf interpreter prefix to 'path'\n\
         -s size              QEMU_STACK_SIZE   set the stack size to 'size' bytes\n\
         -cpu model           QEMU_CPU          select CPU (-cpu help for list)\n\
         -E var=value         QEMU_SET_ENV      sets targets environment variable (see below)\n\
         -U var               QEMU_UNSET_ENV    unsets targets environment variable (see below)\n\
         -0 argv0             QEMU_ARGV0        forces target process argv[0] to be 'argv0'\n\
         -r uname             QEMU_UNAME        set qemu uname release string to 'uname'\n\
         -B address           QEMU_GUEST_BASE   set guest_base address to 'address' (not implemented yet)\n\
         -R size              QEMU_RESERVED_VA  reserve 'size' bytes for guest virtual address space (not implemented yet)\n\
         -d item[,...]        QEMU_LOG          enable logging of specified items (use '-d help' for a list of items)\n\
         -dfilter range[,...] QEMU_DFILTER      filter logging based on address range (not implemented yet)\n\
         -D logfile           QEMU_LOG_FILENAME write logs to 'logfile' (default stderr)\n\
         -p pagesize          QEMU_PAGESIZE     set the host page size to 'pagesize' (not implemented yet)\n\
         -one-insn-per-tb     QEMU_ONE_INSN_PER_TB  run with one guest instruction per emulated TB\n\
         -singlestep          QEMU_SINGLESTEP   deprecated synonym for -one-insn-per-tb\n\
         -strace              QEMU_STRACE       log system calls\n\
         -seed                QEMU_RAND_SEED    Seed for pseudo-random number generator\n\
         -trace               QEMU_TRACE        (not implemented yet)\n\
         -plugin              QEMU_PLUGIN       (not implemented yet)\n\
         -version             QEMU_VERSION      display version information and exit\n\n\
         Defaults:\n\
         QEMU_LD_PREFIX  = /usr/gnemul/qemu-i386\n",
    );
    s.push_str(&format!("QEMU_STACK_SIZE = {DEFAULT_STACK_SIZE} byte\n\n"));
    s.push_str(
        "You can use -E and -U options or the QEMU_SET_ENV and\n\
         QEMU_UNSET_ENV environment variables to set and unset\n\
         environment variables for the target process.\n\
         It is possible to provide several variables by separating them\n\
         by commas in getsubopt(3) style. Additionally it is possible to\n\
         provide the -E and -U options multiple times.\n\
         The following lines are equivalent:\n\
         \x20   -E var1=val2 -E var2=val2 -U LD_PRELOAD -U LD_DEBUG\n\
         \x20   -E var1=val2,var2=val2 -U LD_PRELOAD,LD_DEBUG\n\
         \x20   QEMU_SET_ENV=var1=val2,var2=val2 QEMU_UNSET_ENV=LD_PRELOAD,LD_DEBUG\n\
         Note that if you provide several changes to a single variable\n\
         the last change will stay in effect.\n",
    );
    s
}

fn parse_size(s: &str) -> Result<u32> {
    let bad = || Error::Usage(format!("qemu: invalid stack size '{s}'"));
    let (num, mult) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1024u64),
        Some(b'M') => (&s[..s.len() - 1], 1024 * 1024),
        Some(b'G') => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (s, 1),
    };
    let v = if let Some(h) = num.strip_prefix("0x").or_else(|| num.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).map_err(|_| bad())?
    } else {
        num.parse::<u64>().map_err(|_| bad())?
    };
    let v = v.checked_mul(mult).ok_or_else(bad)?;
    if v == 0 || v > 0x8000_0000 {
        return Err(bad());
    }
    Ok(v as u32)
}

fn split_commas(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').filter(|s| !s.is_empty())
}

struct Builder {
    o: Options,
    log_spec: Option<String>,
}

impl Builder {
    /// Applies one option (name without dashes) with its argument.
    fn apply(&mut self, name: &str, arg: Option<&OsString>) -> Result<Option<Action>> {
        let need =
            || arg.ok_or_else(|| Error::Usage(format!("qemu: option '-{name}' needs an argument")));
        let s = |a: &OsString| a.to_string_lossy().into_owned();
        match name {
            "h" | "help" => return Ok(Some(Action::Print(usage()))),
            "version" => {
                return Ok(Some(Action::Print(format!(
                    "qemu-i386 version {VERSION} (rqemu)\n\
                     A clean-room Rust re-implementation of QEMU's user-mode emulator.\n"
                ))))
            }
            "L" => self.o.prefix = Some(PathBuf::from(need()?)),
            "s" => self.o.stack_size = parse_size(&s(need()?))?,
            "cpu" => {
                let m = s(need()?);
                if m == "help" || m == "?" {
                    let mut t = String::from("Available CPUs:\n");
                    for (n, _, d) in CPU_MODELS {
                        t.push_str(&format!("  {n:<10} {d}\n"));
                    }
                    return Ok(Some(Action::Print(t)));
                }
                if !CPU_MODELS.iter().any(|(n, _, _)| *n == m) {
                    return Err(Error::Usage(format!(
                        "qemu: unable to find CPU model '{m}' (-cpu help lists them)"
                    )));
                }
                self.o.cpu_model = m;
            }
            "E" => {
                for kv in split_commas(need()?.as_bytes()) {
                    let eq = kv.iter().position(|&b| b == b'=').ok_or_else(|| {
                        Error::Usage(format!(
                            "qemu: -E needs var=value, got '{}'",
                            String::from_utf8_lossy(kv)
                        ))
                    })?;
                    let k = kv[..eq].to_vec();
                    self.o.env_unset.retain(|u| *u != k);
                    self.o.env_set.push((k, kv[eq + 1..].to_vec()));
                }
            }
            "U" => {
                for k in split_commas(need()?.as_bytes()) {
                    self.o.env_set.retain(|(s, _)| s != k);
                    self.o.env_unset.push(k.to_vec());
                }
            }
            "0" => self.o.argv0 = Some(need()?.as_bytes().to_vec()),
            "r" => self.o.uname_release = Some(s(need()?)),
            "d" => self.log_spec = Some(s(need()?)),
            "D" => self.o.log_file = Some(PathBuf::from(need()?)),
            "strace" => self.o.log_items.strace = true,
            "one-insn-per-tb" | "singlestep" => {
                // The interpreter already runs one instruction at a time.
            }
            "seed" => {
                let v = s(need()?);
                self.o.seed = Some(
                    v.parse()
                        .map_err(|_| Error::Usage(format!("qemu: invalid seed '{v}'")))?,
                );
            }
            "g" | "B" | "R" | "p" | "dfilter" | "trace" | "plugin" => {
                need()?;
                return Err(Error::NotImplemented(format!("-{name}")));
            }
            _ => return Err(Error::Usage(format!("qemu: unknown option '-{name}'"))),
        }
        Ok(None)
    }
}

/// Options that take an argument.
fn takes_arg(name: &str) -> bool {
    matches!(
        name,
        "L" | "s"
            | "cpu"
            | "E"
            | "U"
            | "0"
            | "r"
            | "d"
            | "D"
            | "seed"
            | "g"
            | "B"
            | "R"
            | "p"
            | "dfilter"
            | "trace"
            | "plugin"
    )
}

/// Parses QEMU_* variables from `env` and then `args` (without argv[0]).
pub fn parse(args: &[OsString], env: &[(OsString, OsString)]) -> Result<Action> {
    let mut b = Builder {
        o: Options {
            prefix: None,
            stack_size: DEFAULT_STACK_SIZE,
            cpu_model: DEFAULT_CPU.into(),
            env_set: Vec::new(),
            env_unset: Vec::new(),
            argv0: None,
            uname_release: None,
            log_items: LogItems::default(),
            log_file: None,
            seed: None,
            program: OsString::new(),
            args: Vec::new(),
            reexec: Vec::new(),
        },
        log_spec: None,
    };
    const ENV_MAP: &[(&str, &str)] = &[
        ("QEMU_LD_PREFIX", "L"),
        ("QEMU_STACK_SIZE", "s"),
        ("QEMU_CPU", "cpu"),
        ("QEMU_SET_ENV", "E"),
        ("QEMU_UNSET_ENV", "U"),
        ("QEMU_ARGV0", "0"),
        ("QEMU_UNAME", "r"),
        ("QEMU_LOG", "d"),
        ("QEMU_LOG_FILENAME", "D"),
        ("QEMU_STRACE", "strace"),
        ("QEMU_RAND_SEED", "seed"),
        ("QEMU_GDB", "g"),
        ("QEMU_GUEST_BASE", "B"),
        ("QEMU_RESERVED_VA", "R"),
        ("QEMU_PAGESIZE", "p"),
        ("QEMU_DFILTER", "dfilter"),
        ("QEMU_TRACE", "trace"),
        ("QEMU_PLUGIN", "plugin"),
        ("QEMU_ONE_INSN_PER_TB", "one-insn-per-tb"),
        ("QEMU_SINGLESTEP", "singlestep"),
        ("QEMU_VERSION", "version"),
    ];
    for (var, opt) in ENV_MAP {
        if let Some((_, v)) = env.iter().find(|(k, _)| k.as_bytes() == var.as_bytes()) {
            let arg = if takes_arg(opt) { Some(v) } else { None };
            if let Some(a) = b.apply(opt, arg)? {
                return Ok(a);
            }
        }
    }
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_bytes();
        if a == b"--" {
            i += 1;
            break;
        }
        if a.len() < 2 || a[0] != b'-' {
            break;
        }
        let name = String::from_utf8_lossy(a.strip_prefix(b"--").unwrap_or(&a[1..])).into_owned();
        let arg = if takes_arg(&name) {
            i += 1;
            args.get(i)
        } else {
            None
        };
        if let Some(act) = b.apply(&name, arg)? {
            return Ok(act);
        }
        // Options an execve'd i386 program runs with again (not -E/-U/-0,
        // which were already applied to the environment and argv it gets).
        if matches!(
            name.as_str(),
            "L" | "s" | "cpu" | "d" | "D" | "strace" | "r"
        ) {
            b.o.reexec.push(OsString::from(format!("-{name}")));
            if let Some(v) = arg {
                b.o.reexec.push(v.clone());
            }
        }
        i += 1;
    }
    if let Some(spec) = &b.log_spec {
        match log::parse_items(spec)? {
            log::Parsed::Help(t) => return Ok(Action::Print(t)),
            log::Parsed::Items(it) => {
                let strace = b.o.log_items.strace;
                b.o.log_items = it;
                b.o.log_items.strace |= strace;
            }
        }
    }
    let Some(program) = args.get(i) else {
        return Err(Error::Usage(format!(
            "{}qemu: no user program specified",
            usage()
        )));
    };
    b.o.program = program.clone();
    b.o.args = args[i + 1..].to_vec();
    Ok(Action::Run(Box::new(b.o)))
}

/// The guest's environment: ours with -E/-U applied.
pub fn guest_env(o: &Options) -> Vec<Vec<u8>> {
    let mut env: Vec<Vec<u8>> = std::env::vars_os()
        .map(|(k, v)| {
            let mut e = k.into_vec();
            e.push(b'=');
            e.extend(v.into_vec());
            e
        })
        .collect();
    let key = |e: &Vec<u8>| -> Vec<u8> {
        let n = e.iter().position(|&b| b == b'=').unwrap_or(e.len());
        e[..n].to_vec()
    };
    for u in &o.env_unset {
        env.retain(|e| key(e) != *u);
    }
    for (k, v) in &o.env_set {
        env.retain(|e| key(e) != *k);
        let mut e = k.clone();
        e.push(b'=');
        e.extend(v);
        env.push(e);
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn program_and_options() {
        let a = parse(
            &os(&[
                "-L", "/r", "-s", "1M", "-E", "A=1,B=2", "-U", "A", "prog", "-x",
            ]),
            &[],
        )
        .expect("valid");
        let Action::Run(o) = a else {
            panic!("expected Run");
        };
        assert_eq!(o.prefix, Some(PathBuf::from("/r")));
        assert_eq!(o.stack_size, 1 << 20);
        assert_eq!(o.env_set, vec![(b"B".to_vec(), b"2".to_vec())]);
        assert_eq!(o.env_unset, vec![b"A".to_vec()]);
        assert_eq!(o.program, OsString::from("prog"));
        assert_eq!(o.args, os(&["-x"]));
    }

    #[test]
    fn unimplemented_and_help() {
        assert!(matches!(
            parse(&os(&["-g", "1234", "p"]), &[]),
            Err(Error::NotImplemented(_))
        ));
        assert!(matches!(
            parse(&os(&["-d", "help"]), &[]),
            Ok(Action::Print(_))
        ));
        assert!(matches!(
            parse(&os(&["-d", "op_opt", "p"]), &[]),
            Err(Error::Log(_))
        ));
        assert!(matches!(
            parse(&os(&["-cpu", "help"]), &[]),
            Ok(Action::Print(_))
        ));
        let env = vec![(OsString::from("QEMU_STRACE"), OsString::from("1"))];
        let Ok(Action::Run(o)) = parse(&os(&["p"]), &env) else {
            panic!("expected Run");
        };
        assert!(o.log_items.strace);
    }
}
