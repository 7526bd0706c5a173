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
