//! Shared helpers for integration tests: locate our `qemu-img`, run it and
//! the real one side by side, temporary directories, test patterns.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Our `qemu-img`, built by `cargo build --workspace` next to the test
/// binary's directory (target/<profile>/qemu-img).
pub fn ours() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path is known");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let p = profile_dir.join("qemu-img");
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace` first (tests/run-all.sh does)",
        p.display()
    );
    p
}

/// The real qemu-img (Debian's qemu-utils).
pub fn real() -> PathBuf {
    PathBuf::from("/usr/bin/qemu-img")
}

/// Runs a command with arguments in `dir`, returning its output.
pub fn run_in(dir: &Path, prog: &Path, args: &[&str]) -> Output {
    Command::new(prog)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", prog.display()))
}

/// Runs and asserts success, returning stdout.
pub fn ok(dir: &Path, prog: &Path, args: &[&str]) -> String {
    let o = run_in(dir, prog, args);
    assert!(
        o.status.success(),
        "{} {:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        prog.display(),
        args,
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "rqemu-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir can be created");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Writes a raw test image: `size` bytes with pattern data in some 64 KiB
/// slots and holes/zeroes elsewhere.
pub fn write_mixed_raw(path: &Path, size: usize, seed: u64) {
    let mut data = vec![0u8; size];
    let p = pattern(size, seed);
    let slot = 65536;
    for (i, chunk) in data.chunks_mut(slot).enumerate() {
        match i % 5 {
            0 | 3 => chunk.copy_from_slice(&p[i * slot..i * slot + chunk.len()]),
            1 => {
                // Partly filled slot: data in the middle only.
                let n = chunk.len();
                chunk[n / 4..n / 2].copy_from_slice(&p[i * slot + n / 4..i * slot + n / 2]);
            }
            _ => {}
        }
    }
    std::fs::write(path, &data).expect("test image can be written");
}

/// Asserts that the real qemu-img finds two images identical.
pub fn assert_same(dir: &Path, a: &str, b: &str) {
    let o = run_in(dir, &real(), &["compare", a, b]);
    assert!(
        o.status.success(),
        "real qemu-img compare {a} {b}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
