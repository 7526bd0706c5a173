//! qcow2 both ways against the real qemu-img 10.0.2: images it writes (every
//! option combination) we read exactly; images we write it checks clean and
//! compares identical; `create` is byte-identical; chains, commit, rebase,
//! snapshots.

mod common;

use common::*;

const OPTION_SETS: &[&str] = &[
    "compat=1.1",
    "compat=0.10",
    "cluster_size=512",
    "cluster_size=4k",
    "cluster_size=2M",
    "refcount_bits=1",
    "refcount_bits=8",
    "refcount_bits=64",
    "extended_l2=on",
    "extended_l2=on,cluster_size=16k",
    "compression_type=zstd",
    "lazy_refcounts=on",
    "preallocation=metadata",
    "preallocation=falloc",
    "preallocation=full",
];

#[test]
fn create_is_byte_identical() {
    let t = TempDir::new("q2create");
    for opts in OPTION_SETS {
        for size in ["0", "1M", "1G", "100G"] {
            if opts.starts_with("preallocation") && size == "100G" {
                continue;
            }
            let o = opts.to_string();
            ok(
                t.path(),
                &ours(),
                &["create", "-q", "-f", "qcow2", "-o", &o, "a.qcow2", size],
            );
            ok(
                t.path(),
                &real(),
                &["create", "-q", "-f", "qcow2", "-o", &o, "b.qcow2", size],
            );
            let a = std::fs::read(t.join("a.qcow2")).expect("ours exists");
            let b = std::fs::read(t.join("b.qcow2")).expect("real exists");
            assert!(
                a == b,
                "create -o {o} {size}: files differ (ours {} bytes, real {} bytes)",
                a.len(),
                b.len()
            );
        }
    }
}

#[test]
fn we_read_what_real_writes() {
    let t = TempDir::new("q2read");
    write_mixed_raw(&t.join("src.raw"), 5 << 20, 11);
    for opts in OPTION_SETS {
        for compress in [false, true] {
            if compress && opts.starts_with("preallocation") {
                continue;
            }
            let mut args = vec!["convert", "-f", "raw", "-O", "qcow2", "-o", opts];
            if compress {
                args.push("-c");
            }
            args.extend(["src.raw", "real.qcow2"]);
            ok(t.path(), &real(), &args);
            ok(
                t.path(),
                &ours(),
                &[
                    "convert",
                    "-f",
                    "qcow2",
                    "-O",
                    "raw",
                    "real.qcow2",
                    "back.raw",
                ],
            );
            assert!(
                std::fs::read(t.join("src.raw")).ok() == std::fs::read(t.join("back.raw")).ok(),
                "-o {opts} compress={compress}: our read differs"
            );
        }
    }
}

#[test]
fn real_reads_what_we_write() {
    let t = TempDir::new("q2write");
    write_mixed_raw(&t.join("src.raw"), 5 << 20, 12);
    for opts in OPTION_SETS {
        for compress in [false, true] {
            if compress && opts.starts_with("preallocation") {
                continue;
            }
            let mut args = vec!["convert", "-f", "raw", "-O", "qcow2", "-o", opts];
            if compress {
                args.push("-c");
            }
            args.extend(["src.raw", "ours.qcow2"]);
            ok(t.path(), &ours(), &args);
            ok(t.path(), &real(), &["check", "ours.qcow2"]);
            assert_same(t.path(), "src.raw", "ours.qcow2");
        }
    }
}

#[test]
fn partial_writes_over_backing_chain_depth_3() {
    let t = TempDir::new("q2chain");
    let io = std::path::PathBuf::from("/usr/bin/qemu-io");
    std::fs::write(t.join("base.raw"), pattern(4 << 20, 21)).expect("write");
    ok(
        t.path(),
        &real(),
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.raw",
            "-F",
            "raw",
            "mid.qcow2",
        ],
    );
    ok(
        t.path(),
        &io,
        &["-f", "qcow2", "-c", "write -P 0x11 100k 70k", "mid.qcow2"],
    );
    ok(
        t.path(),
        &io,
        &["-f", "qcow2", "-c", "write -z 1M 64k", "mid.qcow2"],
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
            "mid.qcow2",
            "-F",
            "qcow2",
            "top.qcow2",
        ],
    );
    ok(
        t.path(),
        &io,
        &["-f", "qcow2", "-c", "write -P 0x22 130k 3k", "top.qcow2"],
    );
    // Whole-chain reads agree with the real one's.
    ok(
        t.path(),
        &ours(),
        &["convert", "-O", "raw", "top.qcow2", "ours.raw"],
    );
    ok(
        t.path(),
        &real(),
        &["convert", "-O", "raw", "top.qcow2", "real.raw"],
    );
    assert!(std::fs::read(t.join("ours.raw")).ok() == std::fs::read(t.join("real.raw")).ok());
    // commit top -> mid, then mid + base must read as top did.
    ok(t.path(), &ours(), &["commit", "top.qcow2"]);
    ok(t.path(), &real(), &["check", "mid.qcow2"]);
    ok(t.path(), &real(), &["check", "top.qcow2"]);
    assert_same(t.path(), "real.raw", "mid.qcow2");
    assert_same(t.path(), "real.raw", "top.qcow2");
}

#[test]
fn rebase_safe_and_unsafe() {
    let t = TempDir::new("q2rebase");
    std::fs::write(t.join("old.raw"), pattern(2 << 20, 31)).expect("write");
    std::fs::write(t.join("new.raw"), pattern(2 << 20, 32)).expect("write");
    ok(
        t.path(),
        &real(),
        &[
            "create", "-q", "-f", "qcow2", "-b", "old.raw", "-F", "raw", "o.qcow2",
        ],
    );
    ok(
        &t.0,
        std::path::Path::new("/usr/bin/qemu-io"),
        &["-f", "qcow2", "-c", "write -P 0x5a 64k 8k", "o.qcow2"],
    );
    ok(
        t.path(),
        &real(),
        &["convert", "-O", "raw", "o.qcow2", "want.raw"],
    );
    ok(
        t.path(),
        &ours(),
        &["rebase", "-b", "new.raw", "-F", "raw", "o.qcow2"],
    );
    ok(t.path(), &real(), &["check", "o.qcow2"]);
    assert_same(t.path(), "want.raw", "o.qcow2");
    let info = ok(t.path(), &real(), &["info", "o.qcow2"]);
    assert!(info.contains("backing file: new.raw"), "{info}");
    // Unsafe: only the header changes.
    ok(
        t.path(),
        &ours(),
        &["rebase", "-u", "-b", "old.raw", "-F", "raw", "o.qcow2"],
    );
    let info = ok(t.path(), &real(), &["info", "o.qcow2"]);
    assert!(info.contains("backing file: old.raw"), "{info}");
    // Removing the backing file keeps the content.
    ok(t.path(), &ours(), &["rebase", "-b", "", "o.qcow2"]);
    ok(t.path(), &real(), &["check", "o.qcow2"]);
    let info = ok(t.path(), &real(), &["info", "o.qcow2"]);
    assert!(!info.contains("backing file"), "{info}");
    assert_same(t.path(), "want.raw", "o.qcow2");
}

#[test]
fn snapshots_both_ways() {
    let t = TempDir::new("q2snap");
    let io = std::path::PathBuf::from("/usr/bin/qemu-io");
    ok(
        t.path(),
        &real(),
        &["create", "-q", "-f", "qcow2", "s.qcow2", "4M"],
    );
    ok(
        t.path(),
        &io,
        &["-f", "qcow2", "-c", "write -P 0x01 0 1M", "s.qcow2"],
    );
    ok(t.path(), &ours(), &["snapshot", "-c", "one", "s.qcow2"]);
    ok(
        t.path(),
        &io,
        &["-f", "qcow2", "-c", "write -P 0x02 0 1M", "s.qcow2"],
    );
    ok(t.path(), &real(), &["snapshot", "-c", "two", "s.qcow2"]);
    ok(t.path(), &real(), &["check", "s.qcow2"]);
    let a = ok(t.path(), &ours(), &["snapshot", "-l", "s.qcow2"]);
    let b = ok(t.path(), &real(), &["snapshot", "-l", "s.qcow2"]);
    assert_eq!(a, b);
    // convert -l reads a snapshot without changing the image.
    ok(
        t.path(),
        &ours(),
        &[
            "convert",
            "-l",
            "one",
            "-O",
            "raw",
            "s.qcow2",
            "ours-one.raw",
        ],
    );
    ok(
        t.path(),
        &real(),
        &[
            "convert",
            "-l",
            "one",
            "-O",
            "raw",
            "s.qcow2",
            "real-one.raw",
        ],
    );
    assert!(
        std::fs::read(t.join("ours-one.raw")).ok() == std::fs::read(t.join("real-one.raw")).ok()
    );
    ok(
        t.path(),
        &io,
        &["-f", "qcow2", "-c", "read -P 0x02 0 1M", "s.qcow2"],
    );
    ok(t.path(), &ours(), &["snapshot", "-a", "one", "s.qcow2"]);
    ok(t.path(), &real(), &["check", "s.qcow2"]);
    ok(
        t.path(),
        &io,
        &["-f", "qcow2", "-c", "read -P 0x01 0 1M", "s.qcow2"],
    );
    ok(t.path(), &ours(), &["snapshot", "-d", "two", "s.qcow2"]);
    ok(t.path(), &real(), &["check", "s.qcow2"]);
    let l = ok(t.path(), &real(), &["snapshot", "-l", "s.qcow2"]);
    assert!(l.contains("one") && !l.contains("two"), "{l}");
}

#[test]
fn backing_loops_are_errors_not_hangs() {
    let t = TempDir::new("q2loop");
    ok(
        t.path(),
        &real(),
        &["create", "-q", "-f", "qcow2", "a.qcow2", "1M"],
    );
    ok(
        t.path(),
        &real(),
        &[
            "create", "-q", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", "b.qcow2",
        ],
    );
    // a -> b -> a, and c -> c.
    ok(
        t.path(),
        &real(),
        &["rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", "a.qcow2"],
    );
    ok(
        t.path(),
        &real(),
        &["create", "-q", "-f", "qcow2", "c.qcow2", "1M"],
    );
    ok(
        t.path(),
        &real(),
        &["rebase", "-u", "-b", "c.qcow2", "-F", "qcow2", "c.qcow2"],
    );
    for args in [
        vec!["convert", "-O", "raw", "a.qcow2", "x.raw"],
        vec!["compare", "c.qcow2", "c.qcow2"],
        vec!["commit", "b.qcow2"],
    ] {
        let o = run_in(t.path(), &ours(), &args);
        assert!(o.status.code().is_some_and(|c| c != 0), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("loop"), "{args:?}: {err}");
    }
}

#[test]
fn commit_with_base_through_depth_3() {
    let t = TempDir::new("q2commitb");
    let io = std::path::PathBuf::from("/usr/bin/qemu-io");
    ok(
        t.path(),
        &real(),
        &["create", "-q", "-f", "qcow2", "base.qcow2", "4M"],
    );
    ok(
        t.path(),
        &io,
        &["-f", "qcow2", "-c", "write -P 0x01 0 4M", "base.qcow2"],
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
            "mid.qcow2",
        ],
    );
    ok(
        t.path(),
        &io,
        &["-f", "qcow2", "-c", "write -P 0x02 1M 100k", "mid.qcow2"],
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
            "mid.qcow2",
            "-F",
            "qcow2",
            "top.qcow2",
        ],
    );
    ok(
        t.path(),
        &io,
        &["-f", "qcow2", "-c", "write -P 0x03 1050k 3k", "top.qcow2"],
    );
    ok(
        t.path(),
        &io,
        &["-f", "qcow2", "-c", "write -z 3M 64k", "top.qcow2"],
    );
    ok(
        t.path(),
        &real(),
        &["convert", "-O", "raw", "top.qcow2", "want.raw"],
    );
    let out = ok(
        t.path(),
        &ours(),
        &["commit", "-b", "base.qcow2", "top.qcow2"],
    );
    assert_eq!(out, "Image committed.\n");
    for img in ["base.qcow2", "mid.qcow2", "top.qcow2"] {
        ok(t.path(), &real(), &["check", img]);
    }
    assert_same(t.path(), "want.raw", "base.qcow2");
    // -b implies -d: the top image still holds its data.
    assert_same(t.path(), "want.raw", "top.qcow2");
    let map = ok(t.path(), &real(), &["map", "--output=json", "top.qcow2"]);
    assert!(
        map.contains("\"depth\": 0, \"present\": true, \"zero\": false, \"data\": true"),
        "{map}"
    );
}
