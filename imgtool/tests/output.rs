//! Output compatibility of `info`, `check`, `map` and `measure` with the
//! real qemu-img 10.0.2: both are run on the same images (made by the real
//! qemu-img and qemu-io, some then damaged on purpose) and must print the
//! same stdout and stderr and exit with the same code, once the program
//! path and the temporary directory are replaced by fixed names.
//!
//! Tests for a format our build does not know yet (see `qemu-img --help`)
//! are skipped with a note, as are all of them when the real qemu-img is
//! missing or another version.

use std::path::{Path, PathBuf};
use std::process::Command;

const OURS: &str = env!("CARGO_BIN_EXE_qemu-img");
const REAL: &str = "/usr/bin/qemu-img";
const QEMU_IO: &str = "/usr/bin/qemu-io";

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "rqemu-output-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir can be created");
        TempDir(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// True if the real qemu-img 10.0.2 (and qemu-io) can be compared with.
fn have_real() -> bool {
    let ok = Command::new(REAL)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).starts_with("qemu-img version 10.0.2"))
        .unwrap_or(false);
    if !ok {
        eprintln!("note: skipped: {REAL} is not qemu-img 10.0.2");
    }
    ok && Path::new(QEMU_IO).exists()
}

/// True if our build knows `fmt` (listed by `qemu-img --help`).
fn ours_knows(fmt: &str) -> bool {
    let out = Command::new(OURS)
        .arg("--help")
        .output()
        .expect("our qemu-img runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let known = text
        .split("Supported image formats:")
        .nth(1)
        .is_some_and(|l| l.split_whitespace().any(|w| w == fmt));
    if !known {
        eprintln!("note: skipped: our qemu-img does not know the {fmt} format yet");
    }
    known
}

/// What a run printed, normalised.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

fn run(prog: &str, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let out = Command::new(prog)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"));
    let dir_s = dir.display().to_string();
    let norm = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .replace(OURS, "qemu-img")
            .replace(REAL, "qemu-img")
            .replace(&dir_s, "$DIR")
    };
    Outcome {
        stdout: norm(&out.stdout),
        stderr: norm(&out.stderr),
        code: out.status.code(),
    }
}

/// Runs both and asserts identical outcomes; returns ours.
fn same_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let real = run(REAL, dir, args, env);
    let ours = run(OURS, dir, args, env);
    assert_eq!(
        real, ours,
        "qemu-img {args:?}: real (left) and ours (right) differ"
    );
    ours
}

fn same(dir: &Path, args: &[&str]) -> Outcome {
    same_env(dir, args, &[])
}

/// Runs the real qemu-img (or another tool) and asserts success.
fn tool(prog: &str, dir: &Path, args: &[&str]) {
    let o = run(prog, dir, args, &[]);
    assert_eq!(o.code, Some(0), "{prog} {args:?} failed: {}", o.stderr);
}

fn real(dir: &Path, args: &[&str]) {
    tool(REAL, dir, args)
}

fn qemu_io(dir: &Path, file: &str, cmds: &[&str]) {
    let mut args = Vec::new();
    for c in cmds {
        args.push("-c");
        args.push(*c);
    }
    args.push(file);
    tool(QEMU_IO, dir, &args);
}

/// Every output form of the read-only commands on one image.
fn compare_all_outputs(dir: &Path, img: &str) {
    for out in ["human", "json"] {
        let o = format!("--output={out}");
        same(dir, &["info", &o, img]);
        same(dir, &["info", "--backing-chain", &o, img]);
        same(dir, &["map", &o, img]);
        same(dir, &["check", &o, img]);
        same(dir, &["measure", &o, img]);
    }
    same(
        dir,
        &[
            "map",
            "--output=json",
            "--start-offset",
            "70k",
            "--max-length",
            "1M",
            img,
        ],
    );
    same(dir, &["map", "--start-offset=1.5k", img]);
    same(dir, &["info", "-U", img]);
    same(dir, &["check", "-q", img]);
}

// ---- raw ---------------------------------------------------------------

fn raw_images(t: &TempDir) {
    let d = t.path();
    real(d, &["create", "-q", "-f", "raw", "r.img", "1M"]);
    std::fs::write(t.join("odd.raw"), vec![7u8; 1000]).expect("write odd.raw");
    std::fs::write(t.join("empty.raw"), b"").expect("write empty.raw");
    let f = std::fs::File::create(t.join("hr.raw")).expect("create hr.raw");
    f.set_len(4 << 20).expect("size hr.raw");
    qemu_io(
        d,
        "hr.raw",
        &[
            "write -P 1 64k 64k",
            "write -P 2 1M 8k",
            "write -P 0 2M 64k",
        ],
    );
}

#[test]
fn raw_outputs_match_real() {
    if !have_real() {
        return;
    }
    let t = TempDir::new("raw");
    raw_images(&t);
    for img in ["r.img", "odd.raw", "empty.raw", "hr.raw"] {
        compare_all_outputs(t.path(), img);
    }
    let d = t.path();
    same(
        d,
        &["info", "--image-opts", "driver=raw,file.filename=r.img"],
    );
    same(
        d,
        &["map", "--image-opts", "driver=raw,file.filename=hr.raw"],
    );
    same(
        d,
        &[
            "check",
            "--output=json",
            "--image-opts",
            "driver=raw,file.filename=r.img",
        ],
    );
    same(d, &["check", "-r", "leaks", "r.img"]);
    same(d, &["check", "-r", "all", "-f", "raw", "r.img"]);
    same(d, &["check", "-T", "none", "r.img"]);
    same(
        d,
        &[
            "map",
            "-f",
            "raw",
            "--max-length=0",
            "--output=json",
            "r.img",
        ],
    );
    same(d, &["map", "--start-offset=2M", "--output=json", "r.img"]);
    same(
        d,
        &["map", "--start-offset=0x10", "--max-length", "1", "r.img"],
    );
}

#[test]
fn measure_matches_real() {
    if !have_real() {
        return;
    }
    let t = TempDir::new("measure");
    raw_images(&t);
    let d = t.path();
    for args in [
        &["measure", "--size", "1G"][..],
        &["measure", "--output=json", "--size", "1G"],
        &["measure", "--size", "1000"],
        &["measure", "--size", "1.00001k"],
        &["measure", "--size", "9223372036854775807"],
        &[
            "measure",
            "-O",
            "raw",
            "-o",
            "preallocation=full",
            "--size",
            "1000",
        ],
        &[
            "measure",
            "-O",
            "raw",
            "-o",
            "preallocation=foo",
            "--size",
            "1",
        ],
        &["measure", "-O", "raw", "hr.raw", "--output=json"],
        &["measure", "-U", "--size", "1"],
        &["measure", "--help"],
    ] {
        same(d, args);
    }
    if ours_knows("qcow2") {
        for args in [
            &["measure", "-O", "qcow2", "--size", "1G"][..],
            &["measure", "--output=json", "-O", "qcow2", "--size", "1G"],
            &["measure", "-O", "qcow2", "hr.raw"],
            &[
                "measure",
                "-O",
                "qcow2",
                "-o",
                "cluster_size=1k",
                "--size",
                "1G",
            ],
            &[
                "measure",
                "-O",
                "qcow2",
                "-o",
                "extended_l2=on",
                "--size",
                "1G",
            ],
            &[
                "measure",
                "-O",
                "qcow2",
                "-o",
                "lazy_refcounts",
                "--size",
                "1M",
            ],
            &["measure", "-O", "qcow2", "-o", "nocow=on", "--size", "1M"],
            &["measure", "-O", "qcow2", "-o", "cluster_size=3k", "r.img"],
            &[
                "measure",
                "-O",
                "qcow2",
                "-o",
                "preallocation=full",
                "--size",
                "1M",
            ],
        ] {
            same(d, args);
        }
    }
}

#[test]
fn bad_arguments_match_real() {
    if !have_real() {
        return;
    }
    let t = TempDir::new("bad");
    raw_images(&t);
    let d = t.path();
    for cmd in ["info", "check", "map"] {
        for args in [
            &[][..],
            &["r.img", "extra"],
            &["nothere"],
            &["/"],
            &["-f", "foo", "r.img"],
            &["-z", "r.img"],
            &["--bogus", "r.img"],
            &["--output=xml", "r.img"],
            &["--output=xml"],
            &["--help"],
            &[
                "--image-opts",
                "-f",
                "raw",
                "driver=raw,file.filename=r.img",
            ],
            &["--image-opts", "driver=raw,file.filename=nothere"],
            &["--image-opts", "driver=foo,file.filename=r.img"],
        ] {
            let mut v = vec![cmd];
            v.extend_from_slice(args);
            same(d, &v);
        }
    }
    for args in [
        &["info", "--limits", "r.img"][..],
        &["info", "--output"],
        &["check", "-r", "foo", "r.img"],
        &["check", "-r", "x"],
        &["check", "-T", "foo", "r.img"],
        &["check", "-U", "-r", "all", "r.img"],
        &["map", "--start-offset=-1", "r.img"],
        &["map", "--start-offset=1x", "r.img"],
        &["map", "--start-offset=1.5", "r.img"],
        &["map", "--start-offset=8E", "r.img"],
        &["map", "--max-length=abc", "r.img"],
        &["map", "--max-length=-5", "r.img"],
        &["map", "--max-length", "9E", "r.img"],
        &["map", "--output=x", "--start-offset=y"],
        &["measure"],
        &["measure", "--size", "1G", "x"],
        &["measure", "a", "b"],
        &["measure", "a", "b", "--size", "1"],
        &["measure", "-O", "foo", "--size", "1G"],
        &["measure", "-O", "foo"],
        &["measure", "-O", "foo", "r.img"],
        &["measure", "-O", "foo", "nothere"],
        &["measure", "-O", "raw", "-o", "bogus=1", "--size", "1"],
        &[
            "measure",
            "-O",
            "raw",
            "-o",
            "cluster_size=64k",
            "--size",
            "1M",
        ],
        &["measure", "-O", "raw", "-o", "size=x", "--size", "1"],
        &["measure", "-O", "raw", "-o", "size=1M,", "--size", "1"],
        &["measure", "-O", "raw", "-o", ",", "--size", "1"],
        &["measure", "--size", "1X", "--size", "2"],
        &["measure", "--size", "-1"],
        &["measure", "--size", "-1k"],
        &["measure", "--size", "0x"],
        &["measure", "--size", "9223372036854775808"],
        &["measure", "nothere"],
        &["measure", "/"],
        &["measure", "-l", "snap1", "hr.raw"],
        &["measure", "-l", "snapshot.foo=1"],
        &["measure", "-l", "snap1", "--size", "1M"],
        &["measure", "-f", "raw", "--size", "1"],
        &["measure", "--image-opts", "--size", "1"],
        &["measure", "--output=xml", "--size", "1"],
        &["measure", "-s", "1"],
        &["map", "-l", "1k", "-s", "1k", "--output=json", "r.img"],
        &["info", "--object", "r.img"],
        &["info", "--object", "foo", "--output=x"],
        &["check", "--output=x", "--object", "foo"],
        &["info", "--object", "secret,id=s,data=x,file=y", "r.img"],
        &["info", "--object", "secret,data=x", "r.img"],
        &["map", "--object", "secret,id=s,data=x,bogus=1", "r.img"],
        &["measure", "--object", "secret,id=s", "--size", "1"],
        &["check", "--object", "secret,id=1s,data=x", "r.img"],
        &["info", "--object", "secret,id=s,file=/nonexistent", "r.img"],
        &[
            "info",
            "--object",
            "secret,id=s,data=x",
            "--object",
            "secret,id=s,data=y",
            "r.img",
        ],
        &["measure", "--si", "5"],
        &["check", "--rep", "leaks", "r.img"],
        &["info", "--b", "r.img"],
        &["map", "--s", "0", "r.img"],
        &[
            "measure",
            "--image-opts",
            "driver=raw,file.filename=nothere",
        ],
    ] {
        same(d, args);
    }
}

// ---- qcow2 ------------------------------------------------------------

fn read_be(path: &Path, off: u64, n: usize) -> u64 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).expect("open image");
    let mut b = vec![0u8; n];
    f.read_exact_at(&mut b, off).expect("read image");
    b.iter().fold(0, |a, &x| (a << 8) | u64::from(x))
}

fn write_be(path: &Path, off: u64, n: usize, v: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open image for writing");
    let b = v.to_be_bytes();
    f.write_all_at(&b[8 - n..], off).expect("write image");
}

/// Sets the 16-bit refcount of a cluster (first refcount block).
fn qcow2_set_refcount(path: &Path, cluster: u64, value: u64) {
    let rt = read_be(path, 48, 8);
    let rb = read_be(path, rt, 8);
    write_be(path, rb + 2 * cluster, 2, value);
}

/// Overwrites an entry of the first L2 table.
fn qcow2_set_l2(path: &Path, index: u64, value: u64) {
    let l1 = read_be(path, 40, 8);
    let l2 = read_be(path, l1, 8) & 0x00ff_ffff_ffff_fe00;
    write_be(path, l2 + 8 * index, 8, value);
}

/// Changes fields of snapshot `index` in place: VM clock (ns), VM state
/// size, instruction count.
fn qcow2_edit_snapshot(path: &Path, index: usize, clock: u64, vm_size: u64, icount: u64) {
    let nb = read_be(path, 60, 4);
    let mut off = read_be(path, 64, 8);
    for i in 0..nb as usize {
        let id_len = read_be(path, off + 12, 2);
        let name_len = read_be(path, off + 14, 2);
        let extra = read_be(path, off + 36, 4);
        if i == index {
            write_be(path, off + 24, 8, clock);
            write_be(path, off + 32, 4, vm_size.min(u64::from(u32::MAX)));
            if extra >= 8 {
                write_be(path, off + 40, 8, vm_size);
            }
            if extra >= 24 {
                write_be(path, off + 56, 8, icount);
            }
        }
        off += (40 + extra + id_len + name_len).div_ceil(8) * 8;
    }
}

fn qcow2_images(t: &TempDir) {
    let d = t.path();
    real(d, &["create", "-q", "-f", "qcow2", "q.qcow2", "10M"]);
    qemu_io(
        d,
        "q.qcow2",
        // Whole clusters: a partly written last cluster followed by a
        // snapshot table makes QEMU look into the host file (see
        // qcow2_driver_details_match_real).
        &[
            "write -P 1 0 64k",
            "write -z 128k 64k",
            "write -P 2 1M 128k",
        ],
    );
    real(d, &["snapshot", "-c", "snap1", "q.qcow2"]);
    real(d, &["snapshot", "-c", "sn \"2\\ é", "q.qcow2"]);
    real(
        d,
        &[
            "snapshot",
            "-c",
            "a very long snapshot name here",
            "q.qcow2",
        ],
    );
    qcow2_edit_snapshot(
        &t.join("q.qcow2"),
        0,
        3_723_456_789_012,
        123_456_789,
        987_654_321,
    );
    qcow2_edit_snapshot(&t.join("q.qcow2"), 1, 0, 0, u64::MAX);
    qcow2_edit_snapshot(
        &t.join("q.qcow2"),
        2,
        3_600_000_000_000_000,
        5_000_000_000,
        0,
    );

    real(
        d,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "compat=0.10",
            "c010.qcow2",
            "1M",
        ],
    );
    real(
        d,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "extended_l2=on,cluster_size=128k",
            "el2.qcow2",
            "1M",
        ],
    );
    real(
        d,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "compression_type=zstd,refcount_bits=1",
            "zs.qcow2",
            "1M",
        ],
    );
    real(d, &["create", "-q", "-f", "qcow2", "bm.qcow2", "1M"]);
    real(d, &["bitmap", "--add", "bm.qcow2", "b0"]);
    real(
        d,
        &[
            "bitmap",
            "--add",
            "-g",
            "128k",
            "--disable",
            "bm.qcow2",
            "b\"1",
        ],
    );

    // A dirty image (lazy refcounts, process aborted) with a backing file.
    real(d, &["create", "-q", "-f", "raw", "base.raw", "4M"]);
    qemu_io(d, "base.raw", &["write -P 7 0 1M"]);
    real(
        d,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "lazy_refcounts=on",
            "-b",
            "base.raw",
            "-F",
            "raw",
            "dirty.qcow2",
        ],
    );
    let _ = run(
        QEMU_IO,
        d,
        &["-c", "write 0 4k", "-c", "abort", "dirty.qcow2"],
        &[],
    );

    // Compressed and fragmented images.
    real(d, &["create", "-q", "-f", "raw", "src.raw", "4M"]);
    qemu_io(
        d,
        "src.raw",
        &["write -P 3 0 1M", "write -P 0 1M 64k", "write -P 5 2M 100k"],
    );
    real(
        d,
        &["convert", "-c", "-O", "qcow2", "src.raw", "comp.qcow2"],
    );
    std::fs::copy(t.join("comp.qcow2"), t.join("comp2.qcow2")).expect("copy");
    qemu_io(d, "comp2.qcow2", &["write -P 9 0 64k"]);
    real(d, &["create", "-q", "-f", "qcow2", "fr.qcow2", "4M"]);
    qemu_io(
        d,
        "fr.qcow2",
        &[
            "write 1M 64k",
            "write 0 64k",
            "write 2M 64k",
            "write 64k 64k",
        ],
    );

    // A chain of depth 3 (raw at the bottom), partly allocated, and images
    // larger and smaller than their backing files.
    std::fs::create_dir_all(t.join("ch")).expect("mkdir ch");
    let ch = t.join("ch");
    real(&ch, &["create", "-q", "-f", "raw", "base.raw", "4M"]);
    qemu_io(&ch, "base.raw", &["write -P 7 0 1M"]);
    real(
        &ch,
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
    qemu_io(&ch, "mid.qcow2", &["write -P 8 512k 1M", "write -z 3M 64k"]);
    real(
        &ch,
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
            "2M",
        ],
    );
    qemu_io(&ch, "top.qcow2", &["write -P 9 1M 32k"]);
    real(
        &ch,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "top.qcow2",
            "-F",
            "qcow2",
            "big.qcow2",
            "8M",
        ],
    );
    real(
        &ch,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "mid.qcow2",
            "-F",
            "qcow2",
            "small2.qcow2",
            "5M",
        ],
    );
    real(&ch, &["create", "-q", "-f", "qcow2", "a2.qcow2", "1M"]);
    qemu_io(&ch, "a2.qcow2", &["write 0 4k"]);
    real(
        &ch,
        &[
            "create", "-q", "-f", "qcow2", "-b", "a2.qcow2", "-F", "qcow2", "b2.qcow2",
        ],
    );
    real(
        &ch,
        &[
            "create", "-q", "-f", "qcow2", "-b", "b2.qcow2", "-F", "qcow2", "c2.qcow2", "2M",
        ],
    );

    // Subclusters (extended L2) over raw, under another overlay; a
    // compressed backing image.
    real(
        &ch,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "extended_l2=on",
            "-b",
            "base.raw",
            "-F",
            "raw",
            "ex.qcow2",
        ],
    );
    qemu_io(
        &ch,
        "ex.qcow2",
        &["write -P 1 4k 4k", "write -z 64k 8k", "write 200k 20k"],
    );
    real(
        &ch,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "ex.qcow2",
            "-F",
            "qcow2",
            "ex2.qcow2",
        ],
    );
    qemu_io(&ch, "ex2.qcow2", &["write 2k 1k"]);
    real(
        d,
        &["convert", "-c", "-O", "qcow2", "src.raw", "ch/cb.qcow2"],
    );
    real(
        &ch,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "cb.qcow2",
            "-F",
            "qcow2",
            "cbt.qcow2",
        ],
    );
    qemu_io(&ch, "cbt.qcow2", &["write 64k 64k"]);

    // Missing backing file, absolute backing path.
    real(
        d,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            "nothere.qcow2",
            "-F",
            "qcow2",
            "m.qcow2",
            "1M",
        ],
    );
    let abs = ch.join("base.raw").display().to_string();
    real(
        d,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            &abs,
            "-F",
            "raw",
            "abs.qcow2",
        ],
    );

    // A cluster written in part (a hole in the host file) before more data.
    real(d, &["create", "-q", "-f", "qcow2", "part.qcow2", "10M"]);
    qemu_io(d, "part.qcow2", &["write -P 2 1M 100k", "write 3M 64k"]);

    // Preallocated with fallocate (unwritten extents read as holes).
    real(
        d,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "preallocation=falloc",
            "pf.qcow2",
            "1M",
        ],
    );
    qemu_io(d, "pf.qcow2", &["write 64k 4k"]);

    // A snapshot of less data than the image holds now, at a smaller size.
    real(d, &["create", "-q", "-f", "qcow2", "ms.qcow2", "10M"]);
    qemu_io(d, "ms.qcow2", &["write 0 1M"]);
    real(d, &["snapshot", "-c", "s1", "ms.qcow2"]);
    qemu_io(d, "ms.qcow2", &["write 2M 3M"]);
    real(d, &["resize", "-q", "ms.qcow2", "20M"]);

    // Damaged images: leaks, a refcount too low, a misaligned L2 entry.
    real(d, &["create", "-q", "-f", "qcow2", "ck.qcow2", "4M"]);
    qemu_io(d, "ck.qcow2", &["write -P 1 0 192k", "write -P 2 1M 64k"]);
    for name in ["ckleak", "ckcor", "ckboth", "mis", "misleak"] {
        std::fs::copy(t.join("ck.qcow2"), t.join(format!("{name}.qcow2"))).expect("copy");
    }
    for name in ["ckleak", "misleak"] {
        let p = t.join(format!("{name}.qcow2"));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .and_then(|f| f.set_len(11 * 65536))
            .expect("extend image");
        qcow2_set_refcount(&p, 9, 1);
    }
    qcow2_set_refcount(&t.join("ckleak.qcow2"), 10, 1);
    qcow2_set_refcount(&t.join("ckcor.qcow2"), 4, 0);
    qcow2_set_refcount(&t.join("ckboth.qcow2"), 4, 0);
    qcow2_set_refcount(&t.join("ckboth.qcow2"), 7, 2);
    qcow2_set_l2(&t.join("mis.qcow2"), 0, 0x8000_0000_0005_0200);
    qcow2_set_l2(&t.join("misleak.qcow2"), 0, 0x8000_0000_0005_0200);
}

#[test]
fn qcow2_outputs_match_real() {
    if !have_real() || !ours_knows("qcow2") {
        return;
    }
    let t = TempDir::new("qcow2");
    qcow2_images(&t);
    let d = t.path();
    for img in [
        "q.qcow2",
        "c010.qcow2",
        "el2.qcow2",
        "zs.qcow2",
        "bm.qcow2",
        "dirty.qcow2",
        "comp.qcow2",
        "fr.qcow2",
        "ck.qcow2",
        "ckleak.qcow2",
        "ckcor.qcow2",
        "ckboth.qcow2",
        "ch/top.qcow2",
        "ch/mid.qcow2",
        "ch/big.qcow2",
        "ch/small2.qcow2",
        "ch/c2.qcow2",
        "ch/ex.qcow2",
        "ch/ex2.qcow2",
        "ch/cbt.qcow2",
    ] {
        compare_all_outputs(d, img);
    }
    // The snapshot table is printed in local time.
    same_env(d, &["info", "q.qcow2"], &[("TZ", "America/New_York")]);
    same_env(d, &["info", "q.qcow2"], &[("TZ", "Asia/Kolkata")]);
    same(d, &["snapshot", "-l", "q.qcow2"]);
    for args in [
        &["map", "comp2.qcow2"][..],
        &["map", "--output=json", "comp2.qcow2"],
        &[
            "map",
            "--start-offset",
            "600k",
            "--max-length",
            "1000k",
            "ch/top.qcow2",
        ],
        &[
            "map",
            "--output=json",
            "--start-offset",
            "600k",
            "--max-length",
            "1000k",
            "ch/big.qcow2",
        ],
        &["info", "m.qcow2"],
        &["info", "--output=json", "m.qcow2"],
        &["info", "--backing-chain", "m.qcow2"],
        &["info", "abs.qcow2"],
        &["info", "--backing-chain", "--output=json", "abs.qcow2"],
        &["check", "m.qcow2"],
        &["map", "m.qcow2"],
        &["measure", "m.qcow2"],
        &["measure", "-O", "qcow2", "q.qcow2"],
        &["measure", "--output=json", "-O", "qcow2", "bm.qcow2"],
        &["measure", "-O", "qcow2", "ch/top.qcow2"],
        &["measure", "-l", "nosnap", "q.qcow2"],
        &["measure", "-l", "s1", "-O", "qcow2", "ms.qcow2"],
        &["measure", "-l", "1", "ms.qcow2"],
        &[
            "measure",
            "-l",
            "snapshot.name=s1",
            "--output=json",
            "-O",
            "qcow2",
            "ms.qcow2",
        ],
        &["measure", "-O", "qcow2", "ms.qcow2"],
        &[
            "measure",
            "-l",
            "snapshot.name=snap1,snapshot.id=2",
            "-O",
            "qcow2",
            "q.qcow2",
        ],
        &["info", "--image-opts", "driver=qcow2,file.filename=q.qcow2"],
        &[
            "check",
            "--output=json",
            "--image-opts",
            "driver=qcow2,file.filename=ck.qcow2",
        ],
        &["check", "-f", "qcow2", "base.raw"],
        &["map", "ch//top.qcow2"],
        &["map", "part.qcow2"],
        &["measure", "-O", "qcow2", "part.qcow2"],
        &["measure", "-O", "qcow2", "pf.qcow2"],
        &["map", "--output=json", "pf.qcow2"],
        &["map", "--output=json", "part.qcow2"],
        &["map", "--output=json", "./ch/../ch/big.qcow2"],
        &["info", "--backing-chain", "ch//top.qcow2"],
        &["info", "mis.qcow2"],
        &["check", "mis.qcow2"],
        &["check", "--output=json", "mis.qcow2"],
    ] {
        same(d, args);
    }
    // Run from inside the chain's directory too (no "actual path").
    let ch = t.join("ch");
    same(&ch, &["info", "--backing-chain", "top.qcow2"]);
    same(&ch, &["map", "top.qcow2"]);
}

/// `check -r` on copies: same report, same exit code, same repaired image.
#[test]
fn qcow2_repair_matches_real() {
    if !have_real() || !ours_knows("qcow2") {
        return;
    }
    let t = TempDir::new("repair");
    qcow2_images(&t);
    for (img, mode) in [
        ("ckleak", "leaks"),
        ("ckleak", "all"),
        ("ckcor", "all"),
        ("ckboth", "all"),
        ("mis", "leaks"),
        ("misleak", "leaks"),
        ("ck", "all"),
    ] {
        for out in ["human", "json"] {
            let mut results = Vec::new();
            for prog in [REAL, OURS] {
                let copy = "t.qcow2";
                std::fs::copy(t.join(format!("{img}.qcow2")), t.join(copy)).expect("copy");
                let o = run(
                    prog,
                    t.path(),
                    &["check", "-r", mode, "--output", out, copy],
                    &[],
                );
                let after = run(REAL, t.path(), &["check", "--output=json", copy], &[]);
                results.push((o.stdout, o.code, after));
            }
            assert_eq!(
                results[0], results[1],
                "check -r {mode} --output={out} {img}: real (left) and ours (right) differ"
            );
        }
    }
}

/// Zero clusters with a host offset (allocated zeroes) are separate runs
/// from zero clusters without one, and join only contiguous ones.
#[test]
fn qcow2_zero_cluster_runs_match_real() {
    if !have_real() || !ours_knows("qcow2") {
        return;
    }
    let t = TempDir::new("zeroruns");
    let d = t.path();
    real(d, &["create", "-q", "-f", "qcow2", "zz.qcow2", "1M"]);
    qemu_io(
        d,
        "zz.qcow2",
        &[
            "write -P 1 0 256k",
            "write -z 64k 64k",
            "write -z -u 128k 64k",
        ],
    );
    real(d, &["create", "-q", "-f", "qcow2", "z2.qcow2", "1M"]);
    qemu_io(
        d,
        "z2.qcow2",
        &[
            "write -P 1 128k 64k",
            "write -P 1 0 64k",
            "write -P 1 64k 64k",
            "write -z 0 192k",
            "write -z -u 256k 64k",
            "write -z 320k 64k",
        ],
    );
    for img in ["zz.qcow2", "z2.qcow2"] {
        same(d, &["map", "--output=json", img]);
        same(d, &["map", img]);
    }
}

/// `map` of damaged images: the corruption message names the L2 entry (or
/// L1 index), and the runs found before the damage are printed.
#[test]
fn qcow2_damaged_map_matches_real() {
    if !have_real() || !ours_knows("qcow2") {
        return;
    }
    let t = TempDir::new("damagedmap");
    let d = t.path();
    real(d, &["create", "-q", "-f", "qcow2", "ck.qcow2", "4M"]);
    qemu_io(d, "ck.qcow2", &["write -P 1 0 192k", "write -P 2 1M 64k"]);
    for name in ["mis0", "mis17", "l1bad"] {
        std::fs::copy(t.join("ck.qcow2"), t.join(format!("{name}.qcow2"))).expect("copy");
    }
    qcow2_set_l2(&t.join("mis0.qcow2"), 0, 0x8000_0000_0005_0200);
    qcow2_set_l2(&t.join("mis17.qcow2"), 17, 0x8000_0000_0005_0200);
    let p = t.join("l1bad.qcow2");
    let l1 = read_be(&p, 40, 8);
    write_be(&p, l1, 8, read_be(&p, l1, 8) + 0x200);
    for img in ["mis0.qcow2", "mis17.qcow2", "l1bad.qcow2"] {
        same(d, &["map", img]);
        same(d, &["map", "--output=json", img]);
    }
    // An image marked corrupt.
    let corrupt = t.join("corr.qcow2");
    std::fs::copy(t.join("ck.qcow2"), &corrupt).expect("copy");
    write_be(&corrupt, 72, 8, read_be(&corrupt, 72, 8) | 2);
    same(d, &["info", "corr.qcow2"]);
    same(d, &["check", "corr.qcow2"]);
}

/// Host offset of the guest cluster at `guest` (from the real map).
fn host_offset_of(d: &Path, img: &str, guest: u64) -> u64 {
    let o = run(
        REAL,
        d,
        &[
            "map",
            "--output=json",
            "--start-offset",
            &guest.to_string(),
            "--max-length",
            "65536",
            img,
        ],
        &[],
    );
    let key = "\"offset\": ";
    let at = o.stdout.find(key).expect("mapped cluster") + key.len();
    o.stdout[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("offset")
}

/// QEMU reports host holes under data as zero (`"zero": true, "data":
/// true`) only for images that look metadata-preallocated
/// (`BlockDriver::map_zeroes_from_host`): the clusters in use against the
/// clusters the host file really allocates (in use >= max(real * 10 / 9,
/// real + 2)). Images at both sides of the threshold, made by punching
/// holes under data clusters.
#[test]
fn qcow2_metadata_preallocation_matches_real() {
    if !have_real() || !ours_knows("qcow2") {
        return;
    }
    let t = TempDir::new("mprealloc");
    let d = t.path();
    real(
        d,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "preallocation=metadata",
            "pm.qcow2",
            "1M",
        ],
    );
    qemu_io(d, "pm.qcow2", &["write 64k 4k"]);
    let mut imgs = vec!["pm.qcow2".to_string()];
    real(d, &["create", "-q", "-f", "qcow2", "ps.qcow2", "10M"]);
    qemu_io(d, "ps.qcow2", &["write -P 2 1M 100k"]);
    real(d, &["snapshot", "-c", "s", "ps.qcow2"]);
    imgs.push("ps.qcow2".to_string());
    // 100 data clusters + 5 of metadata; holes punched under the first k
    // data clusters (observed: reported from k = 9 on, on ext4).
    for k in [1u64, 8, 9, 12] {
        let img = format!("h{k}.qcow2");
        real(d, &["create", "-q", "-f", "qcow2", &img, "64M"]);
        qemu_io(d, &img, &["write -P 1 0 6400k"]);
        let mut punched = true;
        for i in 0..k {
            let host = host_offset_of(d, &img, i * 65536);
            let o = run(
                "fallocate",
                d,
                &["-p", "-o", &host.to_string(), "-l", "65536", &img],
                &[],
            );
            punched &= o.code == Some(0);
        }
        if punched {
            imgs.push(img);
        }
    }
    // Small images: the tail of data cluster 0 punched (observed: 4k of
    // one of 10 clusters is not reported, 8k of one of 2 is).
    for (n, bytes) in [(10u64, 4096u64), (2, 8192)] {
        let img = format!("t{n}.qcow2");
        real(d, &["create", "-q", "-f", "qcow2", &img, "64M"]);
        qemu_io(d, &img, &[&format!("write -P 1 0 {}", n * 65536)]);
        let host = host_offset_of(d, &img, 0) + 65536 - bytes;
        let o = run(
            "fallocate",
            d,
            &[
                "-p",
                "-o",
                &host.to_string(),
                "-l",
                &bytes.to_string(),
                &img,
            ],
            &[],
        );
        if o.code == Some(0) {
            imgs.push(img);
        }
    }
    for img in &imgs {
        same(d, &["map", "--output=json", img]);
        same(d, &["map", img]);
        same(d, &["measure", "-O", "qcow2", img]);
    }
}

/// `measure -O qcow2`: its own messages for bad `compat` and
/// `preallocation` values, and the LUKS header of an encrypted target.
#[test]
fn qcow2_measure_options_match_real() {
    if !have_real() || !ours_knows("qcow2") {
        return;
    }
    let t = TempDir::new("measureopts");
    let d = t.path();
    real(d, &["create", "-q", "-f", "qcow2", "src.qcow2", "1M"]);
    qemu_io(d, "src.qcow2", &["write -P 1 0 256k"]);
    let sec = "secret,id=s,data=x";
    for o in [
        "compat=x",
        "compat=0.9",
        "preallocation=bogus",
        "compat=x,preallocation=bogus",
        "compat=x,cluster_size=3",
        "encrypt.format=luks",
        "encrypt.format=luks,encrypt.key-secret=s",
        "encrypt.format=luks,encrypt.key-secret=nosuch",
        "encrypt.format=luks,encrypt.key-secret=s,encrypt.cipher-mode=cbc",
        "encrypt.format=luks,encrypt.key-secret=s,encrypt.cipher-alg=aes-128",
        "encrypt.format=luks,encrypt.key-secret=s,encrypt.cipher-alg=bogus",
        "encrypt.format=luks,encrypt.key-secret=s,cluster_size=512",
        "encrypt.format=luks,encrypt.key-secret=s,cluster_size=2M,preallocation=full",
        "encrypt.format=aes,encrypt.key-secret=s",
        "encryption=on",
    ] {
        same(
            d,
            &[
                "measure", "-O", "qcow2", "--object", sec, "-o", o, "--size", "100M",
            ],
        );
    }
    same(
        d,
        &[
            "measure",
            "-O",
            "qcow2",
            "--object",
            sec,
            "-o",
            "encrypt.format=luks,encrypt.key-secret=s",
            "src.qcow2",
        ],
    );
}

/// `check -r` messages (stderr), exit codes and repair strategy of the
/// qcow2 driver: leaks listed before repairs, refcounts patched in place
/// unless one is 0 (`-r all` rebuilds, `-r leaks` fails after its
/// messages), corrupt-marked and dirty images opened for repair as is.
#[test]
fn qcow2_driver_details_match_real() {
    if !have_real() || !ours_knows("qcow2") {
        return;
    }
    let t = TempDir::new("details");
    qcow2_images(&t);
    let d = t.path();
    let corrupt = t.join("corr.qcow2");
    std::fs::copy(t.join("ck.qcow2"), &corrupt).expect("copy");
    write_be(&corrupt, 72, 8, read_be(&corrupt, 72, 8) | 2);
    for (img, mode) in [
        ("corr", "leaks"),
        ("corr", "all"),
        ("ckleak", "leaks"),
        ("ckcor", "leaks"),
        ("ckcor", "all"),
        ("ckboth", "leaks"),
        ("mis", "all"),
        ("misleak", "all"),
        ("dirty", "leaks"),
    ] {
        let copy = format!("{img}-{mode}.qcow2");
        let copy2 = format!("{img}-{mode}-2.qcow2");
        std::fs::copy(t.join(format!("{img}.qcow2")), t.join(&copy)).expect("copy");
        std::fs::copy(t.join(format!("{img}.qcow2")), t.join(&copy2)).expect("copy");
        let a = run(REAL, d, &["check", "-r", mode, &copy], &[]);
        let b = run(OURS, d, &["check", "-r", mode, &copy2], &[]);
        assert_eq!(
            (a.stdout, a.stderr.replace(&copy, "X"), a.code),
            (b.stdout, b.stderr.replace(&copy2, "X"), b.code),
            "check -r {mode} {img}"
        );
    }
}

// ---- qcow ---------------------------------------------------------------

#[test]
fn qcow_outputs_match_real() {
    if !have_real() || !ours_knows("qcow") {
        return;
    }
    let t = TempDir::new("qcow");
    let d = t.path();
    real(d, &["create", "-q", "-f", "qcow", "q1.qcow", "1M"]);
    qemu_io(d, "q1.qcow", &["write -P 4 0 64k"]);
    real(
        d,
        &[
            "create",
            "-q",
            "-f",
            "qcow",
            "--object",
            "secret,id=s,data=x",
            "-o",
            "encrypt.format=aes,encrypt.key-secret=s",
            "aes.qcow",
            "1M",
        ],
    );
    compare_all_outputs(d, "q1.qcow");
    same(d, &["measure", "-O", "qcow", "--size", "1M"]);
    same(d, &["map", "aes.qcow"]);
    same(d, &["check", "aes.qcow"]);
    same(
        d,
        &[
            "map",
            "--object",
            "secret,id=s,data=x",
            "--output=json",
            "--image-opts",
            "driver=qcow,file.filename=aes.qcow,encrypt.key-secret=s",
        ],
    );
}

/// `info` describes an encrypted image without its key (the driver must
/// honour `OpenOpts::metadata_only`).
#[test]
fn qcow_encrypted_info_matches_real() {
    if !have_real() || !ours_knows("qcow") {
        return;
    }
    let t = TempDir::new("qcow-aes");
    let d = t.path();
    real(
        d,
        &[
            "create",
            "-q",
            "-f",
            "qcow",
            "--object",
            "secret,id=s,data=x",
            "-o",
            "encrypt.format=aes,encrypt.key-secret=s",
            "aes.qcow",
            "1M",
        ],
    );
    for args in [
        &["info", "aes.qcow"][..],
        &["info", "--output=json", "aes.qcow"],
        &[
            "info",
            "--object",
            "secret,id=s,data=x",
            "--image-opts",
            "driver=qcow,file.filename=aes.qcow,encrypt.key-secret=s",
        ],
    ] {
        same(d, args);
    }
}

// ---- backing loops: an error, never a hang ------------------------------

#[test]
fn backing_loops_are_errors() {
    if !have_real() || !ours_knows("qcow2") {
        return;
    }
    let t = TempDir::new("loops");
    let d = t.path();
    real(d, &["create", "-q", "-f", "qcow2", "a.qcow2", "1M"]);
    real(
        d,
        &[
            "create", "-q", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", "b.qcow2",
        ],
    );
    real(
        d,
        &["rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", "a.qcow2"],
    );
    real(d, &["create", "-q", "-f", "qcow2", "self.qcow2", "1M"]);
    real(
        d,
        &[
            "rebase",
            "-u",
            "-b",
            "self.qcow2",
            "-F",
            "qcow2",
            "self.qcow2",
        ],
    );
    // The real qemu-img reports these loops for `info --backing-chain`.
    same(d, &["info", "--backing-chain", "a.qcow2"]);
    same(d, &["info", "--backing-chain", "self.qcow2"]);
    same(d, &["info", "a.qcow2"]);
    // It hangs for check/map/measure; ours must fail cleanly.
    for cmd in ["check", "map", "measure"] {
        let o = run(OURS, d, &[cmd, "a.qcow2"], &[]);
        assert_eq!(o.code, Some(1), "{cmd}: {o:?}");
        assert!(o.stderr.contains("loop"), "{cmd}: {}", o.stderr);
    }
    // A loop through a symbolic link is still found, named as qemu-img does.
    std::os::unix::fs::symlink("a.qcow2", t.join("alias.qcow2")).expect("symlink");
    real(
        d,
        &[
            "rebase",
            "-u",
            "-b",
            "alias.qcow2",
            "-F",
            "qcow2",
            "b.qcow2",
        ],
    );
    same(d, &["info", "--backing-chain", "a.qcow2"]);
}
