//! Conformance: the C programs of tests/linux-user/, each run natively
//! (the host runs i386 binaries) and under qemu-i386, with the same output
//! and exit status expected.

mod common;

use common::{build, emulated, emulated_with, native, same, work_dir};

#[test]
fn hello_argv_env_auxv() {
    let p = build("hello");
    let r = same(&p, &["one", "two words", ""]);
    assert!(
        r.stdout.starts_with("hello, world\nargc=4\n"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("AT_PLATFORM=i686\n"));
    assert!(r.stdout.contains("LU_TEST_VAR=native-and-emulated\n"));
}

#[test]
fn hello_exit_status_and_abort() {
    let p = build("hello");
    assert_eq!(same(&p, &["exit", "42"]).status, 42);
    assert_eq!(same(&p, &["exit", "300"]).status, 300 & 0xff);
    // abort(): death by SIGABRT, as natively (128 + 6 in a shell).
    assert_eq!(same(&p, &["abort"]).status, 128 + 6);
}

#[test]
fn options_env_argv0_and_unset() {
    let p = build("hello");
    let r = emulated_with(
        &["-E", "LU_TEST_VAR=changed,LU_OTHER=1", "-U", "LU_NOPE"],
        &p,
        &[],
    );
    assert!(r.stdout.contains("LU_TEST_VAR=changed\n"), "{}", r.stdout);
    assert!(r.stdout.contains("LU_ vars=2\n"), "{}", r.stdout);
    let r = emulated_with(&["-U", "LU_TEST_VAR"], &p, &[]);
    assert!(r.stdout.contains("LU_TEST_VAR=(unset)\n"), "{}", r.stdout);
    let r = emulated_with(&["-0", "/x/renamed"], &p, &[]);
    assert!(r.status == 0, "{}", r.stderr);
}

#[test]
fn file_io() {
    let p = build("fileio");
    let d1 = work_dir().join("fileio-native");
    let d2 = work_dir().join("fileio-emu");
    let _ = std::fs::remove_dir_all(&d1);
    let _ = std::fs::remove_dir_all(&d2);
    let n = native(&p, &[d1.to_str().expect("utf-8 path")]);
    let e = emulated(&p, &[d2.to_str().expect("utf-8 path")]);
    assert_eq!(e.stdout, n.stdout, "emulated stderr: {}", e.stderr);
    assert_eq!(e.status, n.status);
    assert!(!e.stdout.contains("FAIL"), "{}", e.stdout);
    assert!(e.stdout.ends_with("done\n"));
}

#[test]
fn mmap_mprotect_faults() {
    let p = build("mmapfault");
    let r = same(&p, &[]);
    assert!(
        r.stdout.contains("ro page: sig=11 code=2 offset=4219\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("unmapped page: sig=11 code=1"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("found in maps=1\n"), "{}", r.stdout);
    assert!(
        r.stdout.contains("div by zero: sig=8 code=1\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("int 0x81: sig=11 code=128 addr=0\n"),
        "{}",
        r.stdout
    );
}

#[test]
fn signals_handlers_masks_restart() {
    let p = build("signals");
    let r = same(&p, &[]);
    assert!(
        r.stdout.contains("ucontext: got=4 code=2 eax=0x1234\n"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("altstack: on_alt=1\n"), "{}", r.stdout);
    assert!(
        r.stdout.contains("SA_RESTART: read=1 c=z got=14\n"),
        "{}",
        r.stdout
    );
    assert_eq!(r.status, 128 + 15);
}

#[test]
fn fork_exec_wait() {
    let p = build("forkexec");
    let r = same(&p, &[]);
    assert!(r.stdout.contains("sigkill: killed by 9\n"), "{}", r.stdout);
    assert!(r.stdout.contains("abort: killed by 6\n"), "{}", r.stdout);
    assert!(r.stdout.contains("segv: killed by 11\n"), "{}", r.stdout);
    assert!(r.stdout.contains("execve self: exited 9\n"), "{}", r.stdout);
    assert!(r.stdout.contains("posix_spawn: exited 4\n"), "{}", r.stdout);
}

#[test]
fn threads_atomics_tls() {
    let p = build("threads");
    let r = same(&p, &[]);
    assert!(
        r.stdout
            .contains("counter=80000 plain=800 exit values sum=4006 main tls=5\n"),
        "{}",
        r.stdout
    );
}

#[test]
fn pipes_poll_select_epoll() {
    let p = build("pollio");
    let r = same(&p, &[]);
    assert!(
        r.stdout.contains("epoll: n=1 events=1 data ok=1\n"),
        "{}",
        r.stdout
    );
}

#[test]
fn sockets_socketpair_tcp_udp() {
    let p = build("sockets");
    let r = same(&p, &[]);
    assert!(r.stdout.contains("fd passed: through fd\n"), "{}", r.stdout);
    assert!(r.stdout.contains("echo: echo this line\n"), "{}", r.stdout);
}

#[test]
fn time_clocks_sleeps_timers() {
    let p = build("timetest");
    let r = same(&p, &[]);
    assert!(r.stdout.contains("posix timer fired=1\n"), "{}", r.stdout);
}

#[test]
fn strace_and_log_options() {
    let p = build("hello");
    let r = emulated_with(&["-strace"], &p, &[]);
    assert!(r.stderr.contains(" write(1,"), "{}", r.stderr);
    assert!(r.stderr.contains(" exit_group(0)"), "{}", r.stderr);
    let log = work_dir().join("in_asm.log");
    let r = emulated_with(
        &["-d", "in_asm,unimp", "-D", log.to_str().expect("utf-8")],
        &p,
        &[],
    );
    assert_eq!(r.status, 0);
    let text = std::fs::read_to_string(&log).expect("log written");
    assert!(
        text.contains("IN: \n0x"),
        "{}",
        &text[..text.len().min(500)]
    );
    // What Cranelift cannot show is refused, not ignored.
    let r = emulated_with(&["-d", "op_opt"], &p, &[]);
    assert_ne!(r.status, 0);
    assert!(r.stderr.contains("not available"), "{}", r.stderr);
    // The JIT's items: IR and host code of each translated block (the
    // self-modifying-code program has hot loops).
    let smc = build("smc");
    let jlog = work_dir().join("jit.log");
    let r = emulated_with(
        &["-d", "op,out_asm", "-D", jlog.to_str().expect("utf-8 path")],
        &smc,
        &[],
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let text = std::fs::read_to_string(&jlog).expect("jit log written");
    assert!(
        text.contains("OP: block at 0x"),
        "{}",
        &text[..text.len().min(500)]
    );
    assert!(
        text.contains("OUT: block at 0x"),
        "{}",
        &text[..text.len().min(500)]
    );
    let r = emulated_with(&["-g", "1234"], &p, &[]);
    assert_ne!(r.status, 0);
    assert!(r.stderr.contains("not implemented yet"), "{}", r.stderr);
}

#[test]
fn bad_syscall_arguments() {
    let p = build("badargs");
    let r = same(&p, &[]);
    assert!(
        r.stdout.contains("read bad     r=-1 errno=14\n"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.ends_with("survived\n"), "{}", r.stdout);
}

#[test]
fn self_modifying_code() {
    // Hot code rewritten in place (so translated first), and a store into
    // the next instruction of the running block.
    let p = build("smc");
    let n = native(&p, &[]);
    let e = emulated(&p, &[]);
    assert_eq!(e.stdout, n.stdout, "emulated stderr: {}", e.stderr);
    assert_eq!(e.status, n.status);
    assert!(e.stdout.contains("total 2400"), "{}", e.stdout);
}

#[test]
fn faults_in_translated_code() {
    // The faulting load is in a hot loop: si_addr and the EIP in the
    // signal context must be those of the native run.
    let p = build("jitfault");
    let n = native(&p, &[]);
    let e = emulated(&p, &[]);
    assert_eq!(e.stdout, n.stdout, "emulated stderr: {}", e.stderr);
    assert_eq!(e.status, n.status);
    assert!(e.stdout.contains("fault 3: offset 8192"), "{}", e.stdout);
}
