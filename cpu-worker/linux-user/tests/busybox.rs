//! Real programs: Debian's busybox-static:i386 and the dynamic busybox
//! and coreutils of an i386 root given with -L, compared with native runs.
//! Skipped (with a message) only when the packages cannot be fetched.

mod common;

use std::path::Path;
use std::process::Command;

use common::{debian_user_dir, qemu, run_cmd, work_dir, Run};

fn input() -> Vec<u8> {
    let mut v = Vec::new();
    let mut x: u32 = 12345;
    for i in 0..3000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        v.extend(format!("{} line{} {}\n", x % 1000, i, x >> 16).as_bytes());
    }
    v
}

fn both(prefix: Option<&Path>, prog: &Path, args: &[&str], stdin: Option<&[u8]>) -> (Run, Run) {
    let mut n = Command::new(prog);
    n.args(args);
    if let Some(pre) = prefix {
        // Natively, the root's loader runs the program with its libraries.
        let mut c = Command::new(pre.join("lib/ld-linux.so.2"));
        c.arg("--library-path")
            .arg(format!(
                "{}:{}",
                pre.join("lib/i386-linux-gnu").display(),
                pre.join("usr/lib/i386-linux-gnu").display()
            ))
            .arg(prog)
            .args(args);
        n = c;
    }
    let native = run_cmd(n, stdin);
    let mut e = Command::new(qemu());
    if let Some(pre) = prefix {
        e.arg("-L").arg(pre);
    }
    e.arg(prog).args(args);
    let emu = run_cmd(e, stdin);
    (native, emu)
}

fn check(prefix: Option<&Path>, prog: &Path, args: &[&str], stdin: Option<&[u8]>) {
    let (n, e) = both(prefix, prog, args, stdin);
    assert_eq!(
        e.stdout,
        n.stdout,
        "{} {:?}: stderr {}",
        prog.display(),
        args,
        e.stderr
    );
    assert_eq!(
        e.status,
        n.status,
        "{} {:?}: stderr {}",
        prog.display(),
        args,
        e.stderr
    );
}

#[test]
fn static_busybox_applets() {
    let Some(w) = debian_user_dir() else {
        return;
    };
    let bb = w.join("bb/bin/busybox");
    let data = input();
    let f = work_dir().join("bb-input.txt");
    std::fs::write(&f, &data).expect("write input");
    let fs = f.to_str().expect("utf-8 path");
    check(None, &bb, &["echo", "hello", "from busybox"], None);
    check(
        None,
        &bb,
        &[
            "sh",
            "-c",
            "x=0; for i in 1 2 3 4 5; do x=$((x+i)); done; echo $x; exit 3",
        ],
        None,
    );
    check(
        None,
        &bb,
        &[
            "sh",
            "-c",
            "echo a | (read v; echo got $v) && false || echo or",
        ],
        None,
    );
    check(None, &bb, &["ls", "-1", "/"], None);
    check(None, &bb, &["sort"], Some(&data));
    check(None, &bb, &["sort", "-k", "2", fs], None);
    check(None, &bb, &["sha256sum", fs], None);
    check(None, &bb, &["md5sum"], Some(&data));
    check(None, &bb, &["gzip", "-c", fs], None);
    check(None, &bb, &["wc", fs], None);
    check(None, &bb, &["uniq", "-c"], Some(b"a\na\nb\nc\nc\nc\n"));
    check(None, &bb, &["tr", "a-z", "A-Z"], Some(b"shout this\n"));
    check(
        None,
        &bb,
        &["sed", "-n", "s/line1\\([0-9]*\\)/L\\1/p", fs],
        None,
    );
    check(None, &bb, &["grep", "-c", "line2", fs], None);
    check(
        None,
        &bb,
        &[
            "sh",
            "-c",
            "echo $(echo nested) | cat; ls /nonexistent; echo rc=$?",
        ],
        None,
    );
}

#[test]
fn static_busybox_awk() {
    let Some(w) = debian_user_dir() else {
        return;
    };
    let bb = w.join("bb/bin/busybox");
    // awk keeps numbers as doubles: this needs the x87 unit of the CPU.
    let (n, e) = both(None, &bb, &["awk", "{ print $2 }"], Some(b"a b c\nd e f\n"));
    assert_eq!(e.stdout, n.stdout, "stderr {}", e.stderr);
}

#[test]
fn dynamic_busybox_and_coreutils_with_prefix() {
    let Some(w) = debian_user_dir() else {
        return;
    };
    let root = w.join("root");
    let data = input();
    let f = work_dir().join("cu-input.txt");
    std::fs::write(&f, &data).expect("write input");
    let fs = f.to_str().expect("utf-8 path");
    let bb = root.join("bin/busybox");
    check(Some(&root), &bb, &["echo", "dynamic", "busybox"], None);
    check(
        Some(&root),
        &bb,
        &["sh", "-c", "for w in a b c; do echo $w; done | wc -l"],
        None,
    );
    check(Some(&root), &bb, &["sha256sum", fs], None);
    for (prog, args) in [
        ("bin/cat", vec![fs]),
        ("usr/bin/sha256sum", vec![fs]),
        ("usr/bin/head", vec!["-n", "5", fs]),
        ("usr/bin/wc", vec!["-l", fs]),
        ("bin/echo", vec!["coreutils", "echo"]),
        ("usr/bin/tr", vec!["-d", "0-9"]),
        ("bin/ls", vec!["-1", "/"]),
    ] {
        let p = root.join(prog);
        if !p.exists() {
            continue;
        }
        let stdin = if prog.ends_with("tr") {
            Some(&data[..])
        } else {
            None
        };
        check(Some(&root), &p, &args, stdin);
    }
    let _ = Path::new(fs);
}
