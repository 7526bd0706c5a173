//! Tests of the qcow driver: round trips, byte-identical creation and
//! two-way interoperability with the real `/usr/bin/qemu-img` (skipped when
//! it is not installed), compressed and encrypted images, and hostile images
//! that must fail cleanly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::driver::{Alloc, OpenOpts};

const QEMU_IMG: &str = "/usr/bin/qemu-img";
const QEMU_IO: &str = "/usr/bin/qemu-io";

/// A unique scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rqemu-qcow-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn have_qemu() -> bool {
    let ok = Path::new(QEMU_IMG).exists();
    if !ok {
        eprintln!("skipping: {QEMU_IMG} not installed");
    }
    ok
}

fn run(cmd: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .expect("spawn qemu tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn qemu_img(args: &[&str]) -> (i32, String) {
    run(QEMU_IMG, args)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Deterministic test data: noise, runs of one byte (compressible) and
/// zero stretches, changing every few KiB.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut v = vec![0u8; len];
    let mut i = 0;
    while i < len {
        let run = (1536 + (next() % 8192) as usize).min(len - i);
        match next() % 4 {
            0 => {}
            1 => v[i..i + run].fill((next() % 255 + 1) as u8),
            2 => {
                for b in &mut v[i..i + run] {
                    *b = next() as u8;
                }
            }
            _ => {
                for (k, b) in v[i..i + run].iter_mut().enumerate() {
                    *b = (k / 3 % 17) as u8 + 1;
                }
            }
        }
        i += run;
    }
    v
}

fn create_ours(path: &Path, size: u64, pairs: &[(&str, &str)], key: Option<&[u8]>) {
    let mut o = CreateOpts::new();
    for (k, v) in pairs {
        o.set(k, v);
    }
    o.key = key.map(<[u8]>::to_vec);
    create(path, size, &o).expect("create qcow");
}

fn open_rw(path: &Path, key: Option<&[u8]>) -> Box<dyn BlockDriver> {
    crate::open_chain(
        path,
        Some("qcow"),
        &OpenOpts {
            writable: true,
            key: key.map(<[u8]>::to_vec),
            ..OpenOpts::default()
        },
    )
    .expect("open qcow read-write")
}

fn read_all(img: &mut dyn BlockDriver) -> Vec<u8> {
    let mut v = vec![0u8; img.size() as usize];
    // Odd-sized chunks exercise partial clusters and run merging.
    let mut off = 0;
    while off < v.len() {
        let n = (v.len() - off).min(12345);
        img.read(off as u64, &mut v[off..off + n]).expect("read");
        off += n;
    }
    v
}

#[test]
fn probe_only_version_1() {
    let h = Header::new_image(1 << 20, None, 0)
        .expect("header")
        .to_bytes();
    assert_eq!(probe(&h), 100);
    let mut v2 = h;
    v2[7] = 2;
    assert_eq!(probe(&v2), 0);
    assert_eq!(probe(&h[..6]), 0);
}

#[test]
fn round_trip_random_writes() {
    let d = Scratch::new("rt");
    let p = d.path("a.qcow");
    let size = 3 << 20;
    create_ours(&p, size, &[], None);
    let mut img = open_rw(&p, None);
    assert_eq!(img.size(), size);
    assert_eq!(img.cluster_size(), Some(4096));
    let mut model = vec![0u8; size as usize];
    let data = pattern(200_000, 7);
    let writes = [
        (0u64, 512usize),
        (100, 9000),
        (4096 * 511, 70_000),
        (2_100_000, 100_000),
        (size - 700, 700),
    ];
    for (i, (off, len)) in writes.iter().enumerate() {
        let src = &data[i * 1000..i * 1000 + len];
        img.write(*off, src).expect("write");
        model[*off as usize..*off as usize + len].copy_from_slice(src);
    }
    assert_eq!(read_all(img.as_mut()), model);
    img.flush().expect("flush");
    drop(img);
    let mut img = open_rw(&p, None);
    assert_eq!(read_all(img.as_mut()), model);
    assert!(img.write(size - 1, &[0, 0]).is_err());
    let mut b = [0u8; 2];
    assert!(img.read(size - 1, &mut b).is_err());
}

#[test]
fn block_status_runs() {
    let d = Scratch::new("bs");
    let p = d.path("a.qcow");
    create_ours(&p, 4 << 20, &[], None);
    let mut img = open_rw(&p, None);
    img.write(8192, &[1u8; 8192]).expect("write");
    let st = img.block_status(0, 4 << 20).expect("status");
    assert_eq!((st.alloc, st.len), (Alloc::Unallocated, 8192));
    let st = img.block_status(8192, 4 << 20).expect("status");
    assert_eq!(st.alloc, Alloc::Data);
    assert_eq!(st.len, 8192);
    assert!(st.offset.is_some());
    let st = img.block_status(16384, 4 << 20).expect("status");
    assert_eq!((st.alloc, st.len), (Alloc::Unallocated, (4 << 20) - 16384));
    assert!(img.block_status(4 << 20, 1).is_err());
}

#[test]
fn write_zeroes_and_unmap() {
    let d = Scratch::new("wz");
    let p = d.path("a.qcow");
    create_ours(&p, 1 << 20, &[], None);
    let mut img = open_rw(&p, None);
    img.write(0, &[9u8; 16384]).expect("write");
    img.write_zeroes(100, 1000, false).expect("zero partial");
    img.write_zeroes(4096, 4096, true).expect("unmap cluster");
    img.write_zeroes(8192, 4096, false).expect("zero cluster");
    let len_before = std::fs::metadata(&p).expect("stat").len();
    img.write_zeroes(65536, 65536, false)
        .expect("zero unallocated");
    assert_eq!(std::fs::metadata(&p).expect("stat").len(), len_before);
    let mut v = vec![0u8; 16384];
    img.read(0, &mut v).expect("read");
    assert!(v[..100].iter().all(|&b| b == 9));
    assert!(v[100..1100].iter().all(|&b| b == 0));
    assert!(v[1100..4096].iter().all(|&b| b == 9));
    assert!(v[4096..12288].iter().all(|&b| b == 0));
    assert!(v[12288..].iter().all(|&b| b == 9));
    assert_eq!(
        img.block_status(4096, 4096).expect("status").alloc,
        Alloc::Unallocated
    );
    assert_eq!(
        img.block_status(8192, 4096).expect("status").alloc,
        Alloc::Data
    );
}

#[test]
fn compressed_round_trip_and_partial_overwrite() {
    let d = Scratch::new("cz");
    let p = d.path("c.qcow");
    let size = 1 << 20;
    create_ours(&p, size, &[], None);
    let mut img = open_rw(&p, None);
    let data = pattern(size as usize, 3);
    let comp = img.compressor().expect("qcow compresses");
    let mut compressed = 0;
    for (i, chunk) in data.chunks(4096).enumerate() {
        let off = (i * 4096) as u64;
        if chunk.iter().all(|&b| b == 0) {
            continue;
        }
        match comp.compress(chunk) {
            Some(z) => {
                img.write_compressed(off, &z).expect("write compressed");
                compressed += 1;
            }
            None => img.write(off, chunk).expect("write plain"),
        }
    }
    assert!(compressed > 10);
    assert_eq!(read_all(img.as_mut()), data);
    // Find a compressed cluster and overwrite part of it.
    let mut off = 0;
    while img.block_status(off, 4096).expect("status").alloc != Alloc::Compressed {
        off += 4096;
    }
    img.write(off + 100, &[0xee; 50]).expect("overwrite");
    let mut model = data.clone();
    model[off as usize + 100..off as usize + 150].fill(0xee);
    assert_eq!(
        img.block_status(off, 4096).expect("status").alloc,
        Alloc::Data
    );
    assert_eq!(read_all(img.as_mut()), model);
    assert!(img.write_compressed(1, &[1, 2, 3]).is_err());
    assert!(img.write_compressed(0, &vec![0u8; 4096]).is_err());
}

#[test]
fn backing_chain_cow_and_make_empty() {
    let d = Scratch::new("bk");
    let base = d.path("base.raw");
    let data = pattern(2 << 20, 11);
    std::fs::write(&base, &data).expect("write base");
    let top = d.path("top.qcow");
    create_ours(
        &top,
        3 << 20,
        &[("backing_file", "base.raw"), ("backing_fmt", "raw")],
        None,
    );
    let mut img = open_rw(&top, None);
    assert_eq!(img.cluster_size(), Some(512));
    assert_eq!(img.backing_file_name().as_deref(), Some("base.raw"));
    let mut model = data.clone();
    model.resize(3 << 20, 0);
    // Partial-cluster writes copy the rest of the cluster from the backing.
    img.write(1000, &[0xaa; 100]).expect("write");
    model[1000..1100].fill(0xaa);
    img.write((2 << 20) - 300, &[0xbb; 600])
        .expect("write across backing end");
    model[(2 << 20) - 300..(2 << 20) + 300].fill(0xbb);
    assert_eq!(read_all(img.as_mut()), model);
    // Zeroing over a backing file writes zeroes (qcow has no zero flag).
    img.write_zeroes(4096, 4096, true)
        .expect("zero over backing");
    model[4096..8192].fill(0);
    assert_eq!(read_all(img.as_mut()), model);
    img.make_empty().expect("make empty");
    let mut expect = data.clone();
    expect.resize(3 << 20, 0);
    assert_eq!(read_all(img.as_mut()), expect);
    assert!(img.change_backing_file(Some("x"), None).is_err());
}

#[test]
fn encrypted_round_trip_and_wrong_or_missing_key() {
    let d = Scratch::new("enc");
    let p = d.path("e.qcow");
    create_ours(
        &p,
        1 << 20,
        &[("encrypt.format", "aes"), ("encrypt.key-secret", "s")],
        Some(b"abc"),
    );
    let mut img = open_rw(&p, Some(b"abc"));
    assert!(img.encrypted());
    assert!(img.compressor().is_none());
    let data = pattern(1 << 20, 5);
    img.write(0, &data[..300_000]).expect("write");
    img.write(300_001, &data[300_001..300_777])
        .expect("odd write");
    let mut model = vec![0u8; 1 << 20];
    model[..300_000].copy_from_slice(&data[..300_000]);
    model[300_001..300_777].copy_from_slice(&data[300_001..300_777]);
    assert_eq!(read_all(img.as_mut()), model);
    assert_eq!(img.block_status(0, 4096).expect("status").offset, None);
    drop(img);
    let err = crate::open_image(&p, Some("qcow"), &OpenOpts::default())
        .err()
        .map(|e| e.to_string());
    assert_eq!(err.as_deref(), Some(NEED_KEY));
    // Metadata without the key, as `qemu-img info` needs; data I/O fails.
    let file = ImageFile::open(&p, false).expect("open file");
    let mut meta = Qcow::open_without_key(file).expect("open without key");
    assert!(meta.encrypted());
    assert_eq!(
        meta.block_status(0, 4096).expect("status").alloc,
        Alloc::Data
    );
    let mut b = [0u8; 512];
    assert!(matches!(meta.read(0, &mut b), Err(Error::NeedKey(_))));
    let mut wrong = open_rw(&p, Some(b"abd"));
    assert_ne!(read_all(wrong.as_mut()), model);
}

#[test]
fn create_errors() {
    let d = Scratch::new("ce");
    let p = d.path("x.qcow");
    let mut o = CreateOpts::new();
    assert!(create(&p, 0, &o).is_err());
    o.set("encrypt.format", "aes");
    assert!(create(&p, 1 << 20, &o)
        .err()
        .is_some_and(|e| e.to_string() == NEED_KEY));
    o.set("encrypt.format", "luks");
    assert!(create(&p, 1 << 20, &o).is_err());
    o.set("encryption", "on");
    assert!(create(&p, 1 << 20, &o).is_err());
    let mut o = CreateOpts::new();
    o.set("preallocation", "metadata");
    assert!(create(&p, 1 << 20, &o).is_err());
    assert!(create(&p, 1 << 50, &CreateOpts::new()).is_err());
}

/// Writes an image with one data cluster and returns its bytes, for the
/// hostile-image tests to corrupt.
fn small_image(d: &Scratch) -> Vec<u8> {
    let p = d.path("base.qcow");
    create_ours(&p, 1 << 20, &[], None);
    let mut img = open_rw(&p, None);
    img.write(0, &[0x33; 8192]).expect("write");
    drop(img);
    std::fs::read(&p).expect("read image")
}

/// Opens hostile bytes read-write and writes through every path; errors
/// are expected, panics are bugs (found by the qcow_open fuzz target).
fn write_bytes(d: &Scratch, name: &str, bytes: &[u8]) -> Result<()> {
    let p = d.path(name);
    std::fs::write(&p, bytes).expect("write hostile image");
    let opts = OpenOpts {
        writable: true,
        ..OpenOpts::default()
    };
    let mut img = crate::open_image(&p, Some("qcow"), &opts)?;
    let r1 = img.write(100, &[1u8; 3000]);
    let r2 = img.write_compressed(
        5 * 4096,
        &compress_cluster(&[0u8; 4096]).unwrap_or_default(),
    );
    let r3 = img.write_zeroes(0, 4096, true);
    r1.and(r2).and(r3)
}

fn open_bytes(d: &Scratch, name: &str, bytes: &[u8]) -> Result<Vec<u8>> {
    let p = d.path(name);
    std::fs::write(&p, bytes).expect("write hostile image");
    let mut img = crate::open_image(&p, Some("qcow"), &OpenOpts::default())?;
    let mut buf = vec![0u8; 16384];
    img.read(0, &mut buf)?;
    img.block_status(0, img.size())?;
    Ok(buf)
}

#[test]
fn hostile_images_fail_cleanly() {
    let d = Scratch::new("hostile");
    let good = small_image(&d);
    assert!(open_bytes(&d, "good", &good).is_ok());
    let patch = |at: usize, bytes: &[u8]| {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        b
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bad version", patch(4, &2u32.to_be_bytes())),
        ("truncated header", good[..40].to_vec()),
        ("cluster_bits 30", patch(32, &[30])),
        ("l2_bits 20", patch(33, &[20])),
        ("crypt 7", patch(36, &7u32.to_be_bytes())),
        ("huge size", patch(24, &u64::MAX.to_be_bytes())),
        ("l1 past eof", patch(40, &0x10_0000u64.to_be_bytes())),
        (
            "l1 offset overflow",
            patch(40, &(u64::MAX - 3).to_be_bytes()),
        ),
        ("l2 unaligned", patch(48, &0x1001u64.to_be_bytes())),
        ("l2 past eof", patch(48, &0x10_0000u64.to_be_bytes())),
        ("data unaligned", patch(0x1000, &0x2001u64.to_be_bytes())),
        ("data past eof", patch(0x1000, &0x20_0000u64.to_be_bytes())),
        (
            "high bits",
            patch(0x1000, &0x7010_0000_0000_2000u64.to_be_bytes()),
        ),
        (
            "compressed garbage",
            patch(0x1000, &0x8010_0000_0000_2000u64.to_be_bytes()),
        ),
        (
            "compressed size 0",
            patch(0x1000, &0x8000_0000_0000_2000u64.to_be_bytes()),
        ),
        (
            "compressed past eof",
            patch(0x1000, &0x8010_0000_0020_0000u64.to_be_bytes()),
        ),
        (
            "backing past eof",
            patch(8, &[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 8]),
        ),
        (
            "backing too long",
            patch(8, &[0, 0, 0, 0, 0, 0, 0, 48, 0, 0, 4, 0]),
        ),
    ];
    for (what, bytes) in cases {
        assert!(
            open_bytes(&d, "h.qcow", &bytes).is_err(),
            "{what} must be rejected"
        );
        let _ = write_bytes(&d, "w.qcow", &bytes);
    }
    // An L1 entry near 2^64 once overflowed the L2 entry write.
    let huge_l2 = patch(48, &0xffff_ffff_ffff_fff8u64.to_be_bytes());
    assert!(write_bytes(&d, "w.qcow", &huge_l2).is_err());
    assert!(write_bytes(&d, "w.qcow", &good).is_ok());
    // Every single-byte corruption of the header and tables either works or
    // fails cleanly; none may panic.
    for at in (0..good.len()).step_by(7) {
        for v in [0u8, 0x80, 0xff] {
            let mut b = good.clone();
            b[at] = v;
            let _ = open_bytes(&d, "f.qcow", &b);
            if at < 0x1100 {
                let _ = write_bytes(&d, "f.qcow", &b);
            }
        }
    }
}

#[test]
fn create_matches_real_qemu_img() {
    if !have_qemu() {
        return;
    }
    let d = Scratch::new("cmp");
    std::fs::write(d.path("base.raw"), vec![0u8; 10 << 20]).expect("base");
    type Case<'a> = (&'a str, u64, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        ("1", 1, &[], &[]),
        ("513", 513, &[], &[]),
        ("1M", 1 << 20, &[], &[]),
        ("1G", 1 << 30, &[], &[]),
        ("100G", 100 << 30, &[], &[]),
        (
            "backing",
            10 << 20,
            &[("backing_file", "base.raw"), ("backing_fmt", "raw")],
            &["-b", "base.raw", "-F", "raw"],
        ),
        (
            "aes",
            1 << 20,
            &[("encrypt.format", "aes"), ("encrypt.key-secret", "s")],
            &[
                "--object",
                "secret,id=s,data=abc",
                "-o",
                "encrypt.format=aes,encrypt.key-secret=s",
            ],
        ),
        (
            "legacy-encryption",
            5 << 20,
            &[("encryption", "on"), ("encrypt.key-secret", "s")],
            &[
                "--object",
                "secret,id=s,data=abc",
                "-o",
                "encryption=on,encrypt.key-secret=s",
            ],
        ),
    ];
    for (name, size, pairs, args) in cases {
        let ours = d.path(&format!("ours-{name}.qcow"));
        let real = d.path(&format!("real-{name}.qcow"));
        create_ours(&ours, *size, pairs, Some(b"abc"));
        let sz = size.to_string();
        let mut a = vec!["create", "-q", "-f", "qcow"];
        a.extend_from_slice(args);
        a.push(s(&real));
        a.push(&sz);
        let (rc, out) = qemu_img(&a);
        assert_eq!(rc, 0, "{name}: {out}");
        assert_eq!(
            std::fs::read(&ours).expect("ours"),
            std::fs::read(&real).expect("real"),
            "{name}: created images differ"
        );
    }
}

#[test]
fn reads_images_written_by_real_qemu() {
    if !have_qemu() {
        return;
    }
    let d = Scratch::new("r2o");
    let raw = d.path("src.raw");
    let size = 6 << 20;
    let data = pattern(size, 42);
    std::fs::write(&raw, &data).expect("raw");
    // Plain and compressed (the real convert -c exits 1 with no message, but
    // the image it leaves is complete).
    for compress in [false, true] {
        let q = d.path(&format!("real-{compress}.qcow"));
        let mut a = vec!["convert", "-f", "raw", "-O", "qcow"];
        if compress {
            a.push("-c");
        }
        a.push(s(&raw));
        a.push(s(&q));
        let (rc, out) = qemu_img(&a);
        assert!(rc == 0 || compress, "convert: {out}");
        let mut img = crate::open_image(&q, Some("qcow"), &OpenOpts::default()).expect("open");
        assert_eq!(read_all(img.as_mut()), data, "compress={compress}");
        if compress {
            let mut any = false;
            let mut off = 0;
            while off < img.size() {
                let st = img.block_status(off, img.size() - off).expect("status");
                any |= st.alloc == Alloc::Compressed;
                off += st.len;
            }
            assert!(any, "real convert -c wrote compressed clusters");
        }
    }
    // Encrypted: the real tool writes through a secret.
    let e = d.path("real-enc.qcow");
    let (rc, out) = qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow",
        "--object",
        "secret,id=s,data=abc",
        "-o",
        "encrypt.format=aes,encrypt.key-secret=s",
        s(&e),
        &size.to_string(),
    ]);
    assert_eq!(rc, 0, "{out}");
    let target = format!("driver=qcow,file.filename={},encrypt.key-secret=s", s(&e));
    let (rc, out) = qemu_img(&[
        "convert",
        "-n",
        "--object",
        "secret,id=s,data=abc",
        "-f",
        "raw",
        s(&raw),
        "--target-image-opts",
        &target,
    ]);
    assert_eq!(rc, 0, "{out}");
    let opts = OpenOpts {
        key: Some(b"abc".to_vec()),
        ..OpenOpts::default()
    };
    let mut img = crate::open_image(&e, Some("qcow"), &opts).expect("open encrypted");
    assert_eq!(read_all(img.as_mut()), data);
    // Over a backing file, with 512-byte clusters, partially written.
    let top = d.path("real-top.qcow");
    let (rc, out) = qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow",
        "-b",
        "src.raw",
        "-F",
        "raw",
        s(&top),
    ]);
    assert_eq!(rc, 0, "{out}");
    if Path::new(QEMU_IO).exists() {
        let (rc, out) = run(
            QEMU_IO,
            &[
                "-f",
                "qcow",
                "-c",
                "write -P 0x77 1000 3000",
                "-c",
                "write -P 0x66 5M 100k",
                s(&top),
            ],
        );
        assert_eq!(rc, 0, "{out}");
        let mut model = data.clone();
        model[1000..4000].fill(0x77);
        model[5 << 20..(5 << 20) + 102_400].fill(0x66);
        let mut img = crate::open_chain(&top, Some("qcow"), &OpenOpts::default()).expect("open");
        assert_eq!(read_all(img.as_mut()), model);
    }
}

#[test]
fn real_qemu_reads_our_images() {
    if !have_qemu() {
        return;
    }
    let d = Scratch::new("o2r");
    let raw = d.path("src.raw");
    let size = 5 << 20;
    let data = pattern(size, 9);
    std::fs::write(&raw, &data).expect("raw");

    // Plain, written in odd pieces.
    let q = d.path("ours.qcow");
    create_ours(&q, size as u64, &[], None);
    let mut img = open_rw(&q, None);
    for (i, chunk) in data.chunks(77_777).enumerate() {
        if chunk.iter().any(|&b| b != 0) {
            img.write((i * 77_777) as u64, chunk).expect("write");
        }
    }
    img.flush().expect("flush");
    drop(img);
    let (rc, out) = qemu_img(&["check", "-f", "qcow", s(&q)]);
    assert!(rc == 0 || out.contains("does not support checks"), "{out}");
    let (rc, out) = qemu_img(&["compare", "-f", "raw", "-F", "qcow", s(&raw), s(&q)]);
    assert_eq!(rc, 0, "{out}");

    // Compressed.
    let c = d.path("ours-c.qcow");
    create_ours(&c, size as u64, &[], None);
    let mut img = open_rw(&c, None);
    let comp = img.compressor().expect("compressor");
    for (i, chunk) in data.chunks(4096).enumerate() {
        let off = (i * 4096) as u64;
        if chunk.iter().all(|&b| b == 0) {
            continue;
        }
        match comp.compress(chunk) {
            Some(z) => img.write_compressed(off, &z).expect("compressed"),
            None => img.write(off, chunk).expect("plain"),
        }
    }
    drop(img);
    let (rc, out) = qemu_img(&["compare", "-f", "raw", "-F", "qcow", s(&raw), s(&c)]);
    assert_eq!(rc, 0, "{out}");
    let (_, map) = qemu_img(&["map", "--output=json", "-f", "qcow", s(&c)]);
    assert!(map.contains("\"compressed\": true"), "{map}");

    // Encrypted.
    let e = d.path("ours-e.qcow");
    create_ours(
        &e,
        size as u64,
        &[("encrypt.format", "aes"), ("encrypt.key-secret", "s")],
        Some(b"abc"),
    );
    let mut img = open_rw(&e, Some(b"abc"));
    img.write(0, &data).expect("write encrypted");
    drop(img);
    let src = format!("driver=raw,file.filename={}", s(&raw));
    let tgt = format!("driver=qcow,file.filename={},encrypt.key-secret=s", s(&e));
    let (rc, out) = qemu_img(&[
        "compare",
        "--object",
        "secret,id=s,data=abc",
        "--image-opts",
        &src,
        &tgt,
    ]);
    assert_eq!(rc, 0, "{out}");

    // Over a backing file, then emptied.
    let top = d.path("ours-top.qcow");
    create_ours(
        &top,
        size as u64,
        &[("backing_file", "src.raw"), ("backing_fmt", "raw")],
        None,
    );
    let mut img = open_rw(&top, None);
    img.write(777, &[0x5a; 5000]).expect("write");
    drop(img);
    let mut model = data.clone();
    model[777..5777].fill(0x5a);
    let expect = d.path("expect.raw");
    std::fs::write(&expect, &model).expect("expect");
    let (rc, out) = qemu_img(&["compare", "-f", "raw", "-F", "qcow", s(&expect), s(&top)]);
    assert_eq!(rc, 0, "{out}");
    let mut img = open_rw(&top, None);
    img.make_empty().expect("make empty");
    drop(img);
    let (rc, out) = qemu_img(&["compare", "-f", "raw", "-F", "qcow", s(&raw), s(&top)]);
    assert_eq!(rc, 0, "{out}");
    // The real commit leaves exactly header + name + L1 behind, as we do.
    assert_eq!(std::fs::metadata(&top).expect("stat").len(), 48 + 8 + 8 * 3);
}
