//! `qemu-i386`: runs a Linux i386 program on this x86_64 Linux host by
//! emulating the CPU and translating system calls, as QEMU's user-mode
//! emulator does ("QEMU User space emulator" in QEMU's documentation).

mod cpu;
mod elf;
mod host;
mod hostsig;
mod log;
mod mmap;
mod options;
mod signal;
mod syscall;
mod task;

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use x86::state::{self, CpuState, Segment};

use crate::options::Action;
use crate::task::{AltStack, GuestSigaction, Process, Thread, SS_DISABLE, USER_CS, USER_DS};

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let opts = match options::parse(&args, &env) {
        Ok(Action::Print(text)) => {
            print!("{text}");
            std::process::exit(0);
        }
        Ok(Action::Run(o)) => o,
        Err(e) => {
            eprintln!("qemu-i386: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = run(*opts) {
        eprintln!("qemu-i386: {e:#}");
        std::process::exit(1);
    }
}

fn random_bytes(seed: Option<u64>) -> [u8; 16] {
    let mut b = [0u8; 16];
    if let Some(mut s) = seed {
        for x in b.iter_mut() {
            // splitmix64, enough for a reproducible AT_RANDOM
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            *x = (z ^ (z >> 31)) as u8;
        }
        return b;
    }
    let _ = syscall::raw(
        libc::SYS_getrandom,
        [b.as_mut_ptr() as usize, 16, 0, 0, 0, 0],
    );
    b
}

fn run(opts: options::Options) -> anyhow::Result<()> {
    x86::cpuid::set_feature_mask(options::cpu_feature_mask(&opts.cpu_model), u32::MAX);
    let log = log::Log::new(opts.log_items, opts.log_file.as_deref())?;
    let program = PathBuf::from(&opts.program);
    if let Err(e) = std::fs::metadata(&program) {
        anyhow::bail!("Could not open '{}': {}", program.display(), e);
    }
    let exe = std::fs::canonicalize(&program)
        .with_context(|| format!("Could not open '{}'", program.display()))?;
    let space = mmap::AddressSpace::new()?;
    let mut argv: Vec<Vec<u8>> = Vec::with_capacity(opts.args.len() + 1);
    argv.push(
        opts.argv0
            .clone()
            .unwrap_or_else(|| opts.program.as_bytes().to_vec()),
    );
    argv.extend(opts.args.iter().map(|a| a.as_bytes().to_vec()));
    let envp = options::guest_env(&opts);
    let ids = [
        syscall::raw(libc::SYS_getuid, [0; 6]).unwrap_or(0) as u32,
        syscall::raw(libc::SYS_geteuid, [0; 6]).unwrap_or(0) as u32,
        syscall::raw(libc::SYS_getgid, [0; 6]).unwrap_or(0) as u32,
        syscall::raw(libc::SYS_getegid, [0; 6]).unwrap_or(0) as u32,
    ];
    let aux = elf::AuxInfo {
        hwcap: x86::cpuid::query(1, 0).3,
        uid: ids[0],
        euid: ids[1],
        gid: ids[2],
        egid: ids[3],
        random: random_bytes(opts.seed),
    };
    let loaded = elf::load(
        &space,
        &program,
        opts.prefix.as_deref(),
        &argv,
        &envp,
        opts.program.as_bytes(),
        opts.stack_size,
        &aux,
    )
    .with_context(|| format!("Error while loading {}", program.display()))?;
    {
        let mut v = space.lock();
        v.brk_start = loaded.brk;
        v.brk = loaded.brk;
    }
    if log.items.page {
        log.write(&format!(
            "guest_base  {:#x}\n{}start_brk   0x{:08x}\nentry       0x{:08x}\nphdr        0x{:08x} ({} x {} bytes)\ninterp base 0x{:08x}\nstack       0x{:08x}-0x{:08x}\nstart_stack 0x{:08x}\n",
            space.base(),
            space.render_maps(),
            loaded.brk,
            loaded.prog_entry,
            loaded.phdr,
            loaded.phnum,
            loaded.phent,
            loaded.interp_base,
            loaded.stack_low,
            mmap::STACK_TOP,
            loaded.sp
        ));
    }

    let (ignored, mask) = hostsig::install_initial(signal::caught_by_default);
    let mut actions = [GuestSigaction::default(); 65];
    for (sig, a) in actions.iter_mut().enumerate().skip(1) {
        if ignored & (1u64 << (sig - 1)) != 0 {
            a.handler = signal::SIG_IGN;
        }
    }
    let personality = if loaded.read_implies_exec {
        0x0040_0000
    } else {
        0
    };
    let proc = Arc::new(Process {
        space,
        opts,
        log,
        exe,
        argv,
        auxv: loaded.auxv.clone(),
        actions: Mutex::new(actions),
        read_implies_exec: AtomicBool::new(loaded.read_implies_exec),
        live_threads: AtomicUsize::new(1),
        personality: AtomicU32::new(personality),
    });

    let mut cpu = Box::new(CpuState::default());
    cpu.eip = loaded.entry;
    cpu.regs[state::ESP] = loaded.sp;
    let flat = |sel: u16| Segment {
        selector: sel as u32,
        base: 0,
        limit: u32::MAX,
        flags: 0,
    };
    cpu.segs[state::CS] = flat(USER_CS);
    for s in [state::DS, state::ES, state::SS] {
        cpu.segs[s] = flat(USER_DS);
    }
    let slot = hostsig::register(&cpu.exit_request.0);
    let mut t = Thread {
        cpu,
        tid: hostsig::gettid(),
        sigmask: mask,
        altstack: AltStack {
            sp: 0,
            flags: SS_DISABLE,
            size: 0,
        },
        clear_child_tid: 0,
        robust_list: (0, 0),
        slot,
        saved_mask: None,
        proc: Arc::clone(&proc),
    };
    cpu::cpu_loop(&mut t, &proc);
    // The main thread called exit(2) while other threads run on: end only
    // this thread, as the kernel would.
    proc.log.flush();
    // SAFETY: SYS_exit ends the calling thread only; nothing of it is used
    // afterwards.
    unsafe { libc::syscall(libc::SYS_exit, 0) };
    Ok(())
}
