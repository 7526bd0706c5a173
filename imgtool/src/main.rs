//! `qemu-img`: the disk image utility, command-line compatible with QEMU's
//! (`qemu-img --help`, QEMU's qemu-img manual). Each command lives in
//! `cmd/<name>.rs`; the format work is in the `imgformats` library.

mod args;
mod cmd;
mod common;
mod copy;
mod json;
mod strtosz;

use std::process::ExitCode;

use common::Fail;

const VERSION_TEXT: &str = "qemu-img version 10.0.2 (rqemu 0.1.0)\nCopyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers\n";

fn main() -> ExitCode {
    // Buffers of 64 KiB and more get their own mappings and go back to the
    // system when freed. Without a fixed threshold glibc raises it after the
    // first large free, and the buffers handed between our worker threads
    // then fragment its per-thread arenas: peak RSS grew by several MiB.
    // SAFETY: mallopt only changes allocator tuning; called before any
    // thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
    let argv: Vec<String> = std::env::args().collect();
    let code = run(&argv);
    ExitCode::from(code)
}

fn run(argv: &[String]) -> u8 {
    if let Some(a0) = argv.first() {
        common::set_argv0(a0);
    }
    let a0 = common::argv0();
    let Some(cmd) = argv.get(1) else {
        eprintln!("qemu-img: Not enough arguments\nTry '{a0} --help' for more info");
        return 1;
    };
    let rest = &argv[2..];
    let result = match cmd.as_str() {
        "-h" | "--help" => {
            print!("{}", cmd::help_text());
            return 0;
        }
        "-V" | "--version" => {
            print!("{VERSION_TEXT}");
            return 0;
        }
        "amend" => cmd::amend::run(rest),
        "check" => cmd::check::run(rest),
        "commit" => cmd::commit::run(rest),
        "compare" => cmd::compare::run(rest),
        "convert" => cmd::convert::run(rest),
        "create" => cmd::create::run(rest),
        "dd" => cmd::dd::run(rest),
        "info" => cmd::info::run(rest),
        "map" => cmd::map::run(rest),
        "measure" => cmd::measure::run(rest),
        "rebase" => cmd::rebase::run(rest),
        "resize" => cmd::resize::run(rest),
        "snapshot" => cmd::snapshot::run(rest),

        "bench" | "bitmap" => Err(Fail::msg(format!(
            "'{cmd}' is not implemented yet in rqemu's qemu-img"
        ))),
        other => {
            eprintln!("qemu-img: Command not found: {other}\nTry '{a0} --help' for more info");
            return 1;
        }
    };
    match result {
        Ok(code) => code,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("qemu-img: {}", f.message);
            }
            f.code
        }
    }
}
