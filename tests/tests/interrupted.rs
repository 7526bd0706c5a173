//! Crash consistency: a `convert` or `commit` killed with SIGKILL at any
//! moment never leaves an image the real `qemu-img check` calls corrupt
//! (exit 2); leaked clusters (exit 3) are acceptable. Inputs stay intact.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn check_code(dir: &std::path::Path, img: &str) -> (Option<i32>, String) {
    let o = run_in(dir, &real(), &["check", img]);
    (
        o.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Starts our qemu-img and SIGKILLs it after `delay`; true if it was still
/// running then.
fn kill_after(dir: &std::path::Path, args: &[&str], delay: Duration) -> bool {
    let mut child = Command::new(ours())
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn our qemu-img");
    std::thread::sleep(delay);
    let running = matches!(child.try_wait(), Ok(None));
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    running
}

#[test]
fn killed_convert_never_corrupts() {
    let t = TempDir::new("killconv");
    write_mixed_raw(&t.join("src.raw"), 256 << 20, 41);
    let src_before = std::fs::read(t.join("src.raw")).expect("read");
    let mut interrupted = 0;
    for (i, ms) in [2u64, 10, 25, 60, 120, 250].into_iter().enumerate() {
        for compress in [false, true] {
            let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
            if compress {
                args.push("-c");
            }
            args.extend(["src.raw", "out.qcow2"]);
            if kill_after(t.path(), &args, Duration::from_millis(ms + i as u64)) {
                interrupted += 1;
            }
            if !t.join("out.qcow2").exists() {
                continue;
            }
            let (code, text) = check_code(t.path(), "out.qcow2");
            assert!(
                matches!(code, Some(0) | Some(3)),
                "convert (compress={compress}) killed after {ms} ms: check says {code:?}:\n{text}"
            );
            let _ = std::fs::remove_file(t.join("out.qcow2"));
        }
    }
    assert!(
        std::fs::read(t.join("src.raw")).ok() == Some(src_before),
        "source modified"
    );
    assert!(
        interrupted >= 6,
        "only {interrupted} runs were killed mid-way"
    );
}

#[test]
fn killed_commit_never_corrupts() {
    let t = TempDir::new("killcommit");
    write_mixed_raw(&t.join("data.raw"), 128 << 20, 42);
    let mut interrupted = 0;
    for ms in [2u64, 10, 30, 80, 150] {
        ok(
            t.path(),
            &real(),
            &["create", "-q", "-f", "qcow2", "base.qcow2", "128M"],
        );
        ok(
            t.path(),
            &real(),
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                "base.qcow2",
                "-F",
                "qcow2",
                "top.qcow2",
            ],
        );
        ok(
            t.path(),
            &real(),
            &[
                "convert",
                "-n",
                "-f",
                "raw",
                "-O",
                "qcow2",
                "data.raw",
                "top.qcow2",
            ],
        );
        if kill_after(
            t.path(),
            &["commit", "top.qcow2"],
            Duration::from_millis(ms),
        ) {
            interrupted += 1;
        }
        for img in ["base.qcow2", "top.qcow2"] {
            let (code, text) = check_code(t.path(), img);
            assert!(
                matches!(code, Some(0) | Some(3)),
                "commit killed after {ms} ms: {img}: check says {code:?}:\n{text}"
            );
        }
        // Whatever was committed, top still reads as the data.
        assert_same(t.path(), "data.raw", "top.qcow2");
    }
    assert!(
        interrupted >= 3,
        "only {interrupted} commits were killed mid-way"
    );
}
