//! Bad arguments and bad files: a clear message on stderr, a non-zero exit,
//! never a panic or a signal, and the input file untouched.

mod common;

use common::*;

fn assert_clean_failure(o: &std::process::Output, what: &str) {
    let code = o.status.code();
    assert!(
        code.is_some(),
        "{what}: killed by a signal ({:?})",
        o.status
    );
    assert_ne!(code, Some(0), "{what}: should fail");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{what}: panic: {err}");
    assert!(!err.trim().is_empty(), "{what}: no message on stderr");
}

#[test]
fn bad_arguments_fail_cleanly() {
    let t = TempDir::new("badargs");
    std::fs::write(t.join("r.img"), vec![0u8; 4096]).expect("write");
    let cases: &[&[&str]] = &[
        &[],
        &["frobnicate"],
        &["info"],
        &["info", "-z", "r.img"],
        &["info", "--bogus", "r.img"],
        &["info", "-f", "nosuchfmt", "r.img"],
        &["create", "x.img", "8E"],
        &["create", "x.img", "--", "-1"],
        &["create", "x.img", "1Q"],
        &["create", "x.img"],
        &["create", "-f", "nosuchfmt", "x.img", "1M"],
        &["create", "-f", "raw", "-o", "foo=bar", "x.img", "1M"],
        &["create", "-f", "raw", "-b", "r.img", "x.img", "1M"],
        &["convert", "r.img"],
        &["convert", "-S", "100", "r.img", "o.img"],
        &["convert", "-O", "nosuchfmt", "r.img", "o.img"],
        &["convert", "missing.img", "o.img"],
        &["convert", "-c", "-O", "raw", "r.img", "o.img"],
        &["compare", "r.img"],
        &["dd", "if=r.img", "of=o.img", "bs=0"],
        &["dd", "if=r.img", "of=o.img", "foo=1"],
        &["dd", "if=r.img"],
        &["resize", "r.img"],
        &["resize", "-f", "raw", "r.img", "1X"],
        &["commit", "-f", "raw", "r.img"],
        &["rebase", "-f", "raw", "r.img"],
        &["amend", "-f", "raw", "r.img"],
        &["bench", "r.img"],
        &["bitmap", "r.img"],
    ];
    for args in cases {
        let before = std::fs::read(t.join("r.img")).expect("read");
        let o = run_in(t.path(), &ours(), args);
        assert_clean_failure(&o, &format!("{args:?}"));
        assert_eq!(
            std::fs::read(t.join("r.img")).ok(),
            Some(before),
            "{args:?} modified its input"
        );
    }
}

#[test]
fn bad_files_fail_cleanly() {
    let t = TempDir::new("badfiles");
    std::fs::create_dir(t.join("dir")).expect("mkdir");
    for args in [
        vec!["info", "missing.img"],
        vec!["info", "dir"],
        vec!["convert", "dir", "o.img"],
        vec!["compare", "dir", "dir"],
    ] {
        let o = run_in(t.path(), &ours(), &args);
        assert_clean_failure(&o, &format!("{args:?}"));
    }
}
