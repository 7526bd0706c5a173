//! qcow (version 1) both ways against the real qemu-img: plain, with a
//! backing file, compressed (which the real `convert -c -O qcow` cannot
//! write) and AES-encrypted.

mod common;

use common::*;

#[test]
fn create_is_byte_identical() {
    let t = TempDir::new("qcreate");
    // Size 0 is refused by both ("Image size is too small ...").
    let a = run_in(
        t.path(),
        &ours(),
        &["create", "-q", "-f", "qcow", "z.qcow", "0"],
    );
    let b = run_in(
        t.path(),
        &real(),
        &["create", "-q", "-f", "qcow", "z.qcow", "0"],
    );
    assert_eq!(a.status.code(), b.status.code());
    assert_eq!(a.stderr, b.stderr);
    for size in ["1M", "1G", "100G", "2T"] {
        ok(
            t.path(),
            &ours(),
            &["create", "-q", "-f", "qcow", "a.qcow", size],
        );
        ok(
            t.path(),
            &real(),
            &["create", "-q", "-f", "qcow", "b.qcow", size],
        );
        assert!(
            std::fs::read(t.join("a.qcow")).ok() == std::fs::read(t.join("b.qcow")).ok(),
            "create {size}: files differ"
        );
    }
}

#[test]
fn both_ways_plain_and_compressed() {
    let t = TempDir::new("qboth");
    write_mixed_raw(&t.join("src.raw"), 3 << 20, 51);
    ok(
        t.path(),
        &real(),
        &["convert", "-f", "raw", "-O", "qcow", "src.raw", "real.qcow"],
    );
    ok(
        t.path(),
        &ours(),
        &[
            "convert",
            "-f",
            "qcow",
            "-O",
            "raw",
            "real.qcow",
            "back.raw",
        ],
    );
    assert!(std::fs::read(t.join("src.raw")).ok() == std::fs::read(t.join("back.raw")).ok());
    for compress in [false, true] {
        let mut args = vec!["convert", "-f", "raw", "-O", "qcow"];
        if compress {
            args.push("-c");
        }
        args.extend(["src.raw", "ours.qcow"]);
        ok(t.path(), &ours(), &args);
        assert_same(t.path(), "src.raw", "ours.qcow");
        // Our compressed image reads back through our reader too.
        ok(t.path(), &ours(), &["compare", "src.raw", "ours.qcow"]);
    }
}

#[test]
fn backing_file_both_ways() {
    let t = TempDir::new("qback");
    std::fs::write(t.join("base.raw"), pattern(2 << 20, 52)).expect("write");
    ok(
        t.path(),
        &ours(),
        &[
            "create", "-q", "-f", "qcow", "-b", "base.raw", "-F", "raw", "o.qcow",
        ],
    );
    ok(
        t.path(),
        std::path::Path::new("/usr/bin/qemu-io"),
        &["-f", "qcow", "-c", "write -P 0x33 5k 10k", "o.qcow"],
    );
    ok(
        t.path(),
        &real(),
        &["convert", "-O", "raw", "o.qcow", "real.raw"],
    );
    ok(
        t.path(),
        &ours(),
        &["convert", "-O", "raw", "o.qcow", "ours.raw"],
    );
    assert!(std::fs::read(t.join("real.raw")).ok() == std::fs::read(t.join("ours.raw")).ok());
}

#[test]
fn aes_encryption_both_ways() {
    let t = TempDir::new("qaes");
    write_mixed_raw(&t.join("src.raw"), 1 << 20, 53);
    let obj = "secret,id=sec0,data=hunter2";
    let io_opts = "driver=qcow,file.filename=IMG,encrypt.key-secret=sec0";
    // Ours writes, the real one reads.
    ok(
        t.path(),
        &ours(),
        &[
            "convert",
            "--object",
            obj,
            "-f",
            "raw",
            "-O",
            "qcow",
            "-o",
            "encrypt.format=aes,encrypt.key-secret=sec0",
            "src.raw",
            "ours.qcow",
        ],
    );
    ok(
        t.path(),
        &real(),
        &[
            "compare",
            "--object",
            obj,
            "--image-opts",
            "driver=raw,file.filename=src.raw",
            &io_opts.replace("IMG", "ours.qcow"),
        ],
    );
    // The real one writes, ours reads.
    ok(
        t.path(),
        &real(),
        &[
            "convert",
            "--object",
            obj,
            "-f",
            "raw",
            "-O",
            "qcow",
            "-o",
            "encrypt.format=aes,encrypt.key-secret=sec0",
            "src.raw",
            "real.qcow",
        ],
    );
    ok(
        t.path(),
        &ours(),
        &[
            "convert",
            "--object",
            obj,
            "--image-opts",
            &io_opts.replace("IMG", "real.qcow"),
            "-O",
            "raw",
            "back.raw",
        ],
    );
    assert!(std::fs::read(t.join("src.raw")).ok() == std::fs::read(t.join("back.raw")).ok());
    // Without the key: a clear error.
    let o = run_in(
        t.path(),
        &ours(),
        &["convert", "-O", "raw", "real.qcow", "x.raw"],
    );
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn classic_dash_e_encrypts_with_a_typed_password() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let t = TempDir::new("qdashe");
    write_mixed_raw(&t.join("src.raw"), 1 << 20, 54);
    let mut child = Command::new(ours())
        .args([
            "convert", "-e", "-f", "raw", "-O", "qcow", "src.raw", "e.qcow",
        ])
        .current_dir(t.path())
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(b"s3cret\n")
        .expect("write password");
    assert!(child.wait().expect("wait").success());
    ok(
        t.path(),
        &real(),
        &[
            "compare",
            "--object",
            "secret,id=k,data=s3cret",
            "--image-opts",
            "driver=raw,file.filename=src.raw",
            "driver=qcow,file.filename=e.qcow,encrypt.key-secret=k",
        ],
    );
}
