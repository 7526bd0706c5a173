//! Hostile and corrupt images: every command that reads them fails (or, for
//! `check`, reports) with a clear message and a proper exit code — never a
//! panic, a signal, a hang, or a modified input file.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs our qemu-img with a 20 s watchdog; a hang is a failure.
fn run_bounded(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut child = Command::new(ours())
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().expect("collect output");
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("{args:?} hangs");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn put_be(buf: &mut [u8], off: usize, bytes: &[u8]) {
    buf[off..off + bytes.len()].copy_from_slice(bytes);
}

/// A valid small qcow2 with data, made by the real qemu-img.
fn base_qcow2(dir: &std::path::Path) -> Vec<u8> {
    std::fs::write(dir.join("d.raw"), pattern(1 << 20, 61)).expect("write");
    ok(
        dir,
        &real(),
        &["convert", "-f", "raw", "-O", "qcow2", "d.raw", "base.qcow2"],
    );
    std::fs::read(dir.join("base.qcow2")).expect("read")
}

fn be64(b: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

#[test]
fn hostile_qcow2_headers_and_tables() {
    let t = TempDir::new("hostile");
    let good = base_qcow2(t.path());
    let l1_off = be64(&good, 40) as usize;
    let rt_off = be64(&good, 48) as usize;
    let l2_off = (be64(&good, l1_off) & 0x00ff_ffff_ffff_fe00) as usize;
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut m = |name: &'static str, f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = good.clone();
        f(&mut v);
        cases.push((name, v));
    };
    m("bad magic", &|v| put_be(v, 0, b"QFI\x00"));
    m("version 4", &|v| put_be(v, 4, &4u32.to_be_bytes()));
    m("cluster_bits 40", &|v| put_be(v, 20, &40u32.to_be_bytes()));
    m("cluster_bits 8", &|v| put_be(v, 20, &8u32.to_be_bytes()));
    m("size 2^63", &|v| put_be(v, 24, &(1u64 << 63).to_be_bytes()));
    m("l1_size huge", &|v| {
        put_be(v, 36, &0x7fff_ffffu32.to_be_bytes())
    });
    m("l1_size too small", &|v| put_be(v, 36, &0u32.to_be_bytes()));
    m("l1 offset past EOF", &|v| {
        put_be(v, 40, &(1u64 << 50).to_be_bytes())
    });
    m("l1 offset unaligned", &|v| {
        put_be(v, 40, &(l1_off as u64 + 8).to_be_bytes())
    });
    m("refcount table at 0", &|v| {
        put_be(v, 48, &0u64.to_be_bytes())
    });
    m("refcount clusters huge", &|v| {
        put_be(v, 56, &0x00ff_ffffu32.to_be_bytes())
    });
    m("snapshots count huge", &|v| {
        put_be(v, 60, &0xffff_ffffu32.to_be_bytes())
    });
    m("unknown incompatible bit", &|v| {
        put_be(v, 72, &(1u64 << 40).to_be_bytes())
    });
    m("refcount_order 7", &|v| put_be(v, 96, &7u32.to_be_bytes()));
    m("header_length huge", &|v| {
        put_be(v, 100, &0xffff_fff0u32.to_be_bytes())
    });
    m("backing name past EOF", &|v| {
        put_be(v, 8, &(1u64 << 40).to_be_bytes());
        put_be(v, 16, &100u32.to_be_bytes());
    });
    m("backing name 1 MiB", &|v| {
        put_be(v, 8, &512u64.to_be_bytes());
        put_be(v, 16, &(1u32 << 20).to_be_bytes());
    });
    m("L1 entry -> header", &|v| {
        put_be(v, l1_off, &(0x8000_0000_0000_0000u64).to_be_bytes())
    });
    m("L1 entry -> L1 itself", &|v| {
        put_be(v, l1_off, &((l1_off as u64) | (1 << 63)).to_be_bytes())
    });
    m("L2 entry past EOF", &|v| {
        put_be(v, l2_off, &((1u64 << 45) | (1 << 63)).to_be_bytes())
    });
    m("L2 entry unaligned", &|v| {
        put_be(v, l2_off, &((0x10200u64) | (1 << 63)).to_be_bytes())
    });
    m("compressed garbage", &|v| {
        // A compressed descriptor pointing into the refcount table.
        let desc = (1u64 << 62) | (rt_off as u64);
        put_be(v, l2_off, &desc.to_be_bytes());
    });
    m("refcount table -> itself", &|v| {
        put_be(v, rt_off, &(rt_off as u64).to_be_bytes())
    });
    m("truncated to 50 bytes", &|v| v.truncate(50));
    m("truncated after header", &|v| v.truncate(4096));
    for (name, bytes) in &cases {
        std::fs::write(t.join("h.qcow2"), bytes).expect("write");
        for args in [
            vec!["info", "h.qcow2"],
            vec!["info", "--output=json", "h.qcow2"],
            vec!["check", "h.qcow2"],
            vec!["map", "h.qcow2"],
            vec!["convert", "-O", "raw", "h.qcow2", "o.raw"],
            vec!["compare", "h.qcow2", "d.raw"],
            vec!["snapshot", "-l", "h.qcow2"],
        ] {
            let o = run_bounded(t.path(), &args);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                o.status.code().is_some(),
                "{name}: {args:?} died by a signal"
            );
            assert!(
                !err.contains("panicked"),
                "{name}: {args:?} panicked: {err}"
            );
            if o.status.code() != Some(0) {
                let out = String::from_utf8_lossy(&o.stdout);
                assert!(
                    !(err.trim().is_empty() && out.trim().is_empty()),
                    "{name}: {args:?} failed silently"
                );
            }
            assert!(
                std::fs::read(t.join("h.qcow2")).ok().as_ref() == Some(bytes),
                "{name}: {args:?} modified the input"
            );
        }
    }
}
