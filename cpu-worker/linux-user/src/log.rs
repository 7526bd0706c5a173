//! `-d item[,...]` and `-D logfile`: the log items of QEMU's user-mode
//! documentation (`-d help`), and the log sink shared by all threads.
//!
//! Items that describe the translator (`out_asm`, `op`, `op_opt`,
//! `op_ind`) belong to the JIT, which does not exist yet: asking for them
//! is an error rather than a silently empty log.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("log item '{0}' is not available yet (it needs the JIT)")]
    NeedsJit(String),
    #[error("log item '{0}' is not implemented yet")]
    NotImplemented(String),
    #[error("unknown log item '{0}' (-d help lists them)")]
    Unknown(String),
    #[error("cannot open log file {path}: {err}")]
    Open { path: String, err: std::io::Error },
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogItems {
    pub out_asm: bool,
    pub op: bool,
    pub in_asm: bool,
    pub int: bool,
    pub exec: bool,
    pub cpu: bool,
    pub unimp: bool,
    pub strace: bool,
    pub page: bool,
    pub guest_errors: bool,
}

impl LogItems {
    /// True if anything needs to be logged per instruction or block.
    pub fn per_block(&self) -> bool {
        self.in_asm || self.exec || self.cpu
    }
}

/// (name, description, status)
const ITEMS: &[(&str, &str, Status)] = &[
    (
        "out_asm",
        "show generated host assembly code for each compiled TB",
        Status::Ok,
    ),
    (
        "in_asm",
        "show target assembly code for each compiled TB",
        Status::Ok,
    ),
    (
        "op",
        "show micro ops (Cranelift IR) for each compiled TB",
        Status::Ok,
    ),
    (
        "op_opt",
        "show micro ops after optimization (not available: Cranelift optimizes while compiling)",
        Status::Jit,
    ),
    (
        "op_ind",
        "show micro ops before indirect lowering (not available)",
        Status::Jit,
    ),
    (
        "int",
        "show interrupts/exceptions in short format",
        Status::Ok,
    ),
    (
        "exec",
        "show trace before each executed TB (lots of logs)",
        Status::Ok,
    ),
    (
        "cpu",
        "show CPU registers before entering a TB (lots of logs)",
        Status::Ok,
    ),
    (
        "fpu",
        "include FPU registers in the 'cpu' logging (not implemented yet)",
        Status::No,
    ),
    (
        "mmu",
        "log MMU-related activities (not implemented yet)",
        Status::No,
    ),
    (
        "pcall",
        "x86 only: show protected mode far calls/returns/exceptions (not implemented yet)",
        Status::No,
    ),
    (
        "cpu_reset",
        "show CPU state before CPU resets (not implemented yet)",
        Status::No,
    ),
    ("unimp", "log unimplemented functionality", Status::Ok),
    (
        "guest_errors",
        "log when the guest OS does something invalid (eg accessing a non-existent register)",
        Status::Ok,
    ),
    (
        "page",
        "dump pages at beginning of user mode emulation",
        Status::Ok,
    ),
    (
        "nochain",
        "do not chain compiled TBs so that \"exec\" and \"cpu\" show complete traces",
        Status::Ok,
    ),
    (
        "plugin",
        "output from TCG plugins (not implemented yet)",
        Status::No,
    ),
    (
        "strace",
        "log every user-mode syscall, its input, and its result",
        Status::Ok,
    ),
    (
        "tid",
        "open a separate log file per thread; filename must contain '%d' (not implemented yet)",
        Status::No,
    ),
    (
        "vpu",
        "include VPU registers in the 'cpu' logging (not implemented yet)",
        Status::No,
    ),
    (
        "invalid_mem",
        "log invalid memory accesses (not implemented yet)",
        Status::No,
    ),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    Jit,
    No,
}

pub enum Parsed {
    Help(String),
    Items(LogItems),
}

pub fn help() -> String {
    let mut s = String::from("Log items (comma separated):\n");
    for (n, d, _) in ITEMS {
        s.push_str(&format!("{n:<8} {d}\n"));
    }
    s.push_str("trace:PATTERN   enable trace events (not implemented yet)\n");
    s
}

pub fn parse_items(spec: &str) -> Result<Parsed> {
    let mut it = LogItems::default();
    for name in spec.split(',').filter(|s| !s.is_empty()) {
        if name == "help" || name == "?" {
            return Ok(Parsed::Help(help()));
        }
        if name == "all" {
            it = LogItems {
                out_asm: true,
                op: true,
                in_asm: true,
                int: true,
                exec: true,
                cpu: true,
                unimp: true,
                strace: true,
                page: true,
                guest_errors: true,
            };
            continue;
        }
        if name.starts_with("trace:") {
            return Err(Error::NotImplemented(name.into()));
        }
        let Some((_, _, st)) = ITEMS.iter().find(|(n, _, _)| *n == name) else {
            return Err(Error::Unknown(name.into()));
        };
        match st {
            Status::Jit => return Err(Error::NeedsJit(name.into())),
            Status::No => return Err(Error::NotImplemented(name.into())),
            Status::Ok => {}
        }
        match name {
            "out_asm" => it.out_asm = true,
            "op" => it.op = true,
            "in_asm" => it.in_asm = true,
            "int" => it.int = true,
            "exec" => it.exec = true,
            "cpu" => it.cpu = true,
            "unimp" => it.unimp = true,
            "strace" => it.strace = true,
            "page" => it.page = true,
            "guest_errors" => it.guest_errors = true,
            // nochain: nothing is chained in the interpreter.
            _ => {}
        }
    }
    Ok(Parsed::Items(it))
}

/// The log: stderr or the `-D` file, one locked write per message.
pub struct Log {
    pub items: LogItems,
    sink: Mutex<Box<dyn Write + Send>>,
}

impl Log {
    pub fn new(items: LogItems, file: Option<&Path>) -> Result<Log> {
        let sink: Box<dyn Write + Send> = match file {
            Some(p) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .open(p)
                    .map_err(|err| Error::Open {
                        path: p.display().to_string(),
                        err,
                    })?;
                // Unbuffered: a guest signal whose default action kills is
                // left to the host kernel, and must not lose the log's tail.
                Box::new(f)
            }
            None => Box::new(std::io::stderr()),
        };
        Ok(Log {
            items,
            sink: Mutex::new(sink),
        })
    }

    pub fn write(&self, msg: &str) {
        let mut s = match self.sink.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let _ = s.write_all(msg.as_bytes());
    }

    pub fn flush(&self) {
        let mut s = match self.sink.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let _ = s.flush();
    }
}
