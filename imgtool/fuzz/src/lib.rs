//! Shared driver for the image-format fuzz targets: the fuzzer's bytes
//! become an image file, which is opened (read-only, then read-write) and
//! driven through reads, block status, writes and zero writes. Any outcome
//! is fine except a panic, an abort or a hang; hostile images must come back
//! as errors.

use std::path::PathBuf;

use imgformats::{BlockDriver, OpenOpts};

/// Largest single read or write, so a hostile header claiming an exabyte
/// disk cannot make the harness itself allocate wildly.
const MAX_IO: u64 = 64 * 1024;

fn scratch_path(tag: &str) -> PathBuf {
    // One file per process: libFuzzer runs one input at a time per process
    // (-jobs/-fork use separate processes).
    std::env::temp_dir().join(format!("rqemu-fuzz-{tag}-{}.img", std::process::id()))
}

fn offsets(size: u64, seed: &[u8]) -> Vec<u64> {
    let mut v = vec![0, size / 2, size.saturating_sub(MAX_IO)];
    // A few offsets picked by the input itself, so the fuzzer can aim at
    // particular clusters.
    for w in seed.chunks_exact(8).take(3) {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        if size > 0 {
            v.push(u64::from_le_bytes(b) % size);
        }
    }
    v
}

fn drive(img: &mut dyn BlockDriver, seed: &[u8], write: bool) {
    let size = img.size();
    let mut buf = vec![0u8; MAX_IO as usize];
    for off in offsets(size, seed) {
        let len = (size - off.min(size)).min(MAX_IO) as usize;
        let _ = img.read(off, &mut buf[..len]);
        if write && len > 0 {
            let n = len.min(3000);
            buf[..n].fill(0xa5);
            let _ = img.write(off, &buf[..n]);
            let _ = img.read(off, &mut buf[..len]);
            let _ = img.write_zeroes(off, n as u64, true);
            if let Some(c) = img.compressor() {
                if let Some(cs) = img.cluster_size() {
                    let at = off / cs * cs;
                    if let Some(z) = c.compress(&buf[..cs.min(MAX_IO) as usize]) {
                        let _ = img.write_compressed(at, &z);
                    }
                }
            }
        }
    }
    let mut off = 0;
    for _ in 0..64 {
        if off >= size {
            break;
        }
        match img.block_status(off, size - off) {
            Ok(st) if st.len > 0 => off += st.len,
            _ => break,
        }
    }
    let _ = img.flush();
}

/// Opens `data` as an image of format `fmt` (probing when `None`) and
/// exercises it read-only and then read-write.
pub fn exercise(data: &[u8], fmt: Option<&str>, tag: &str) {
    let path = scratch_path(tag);
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let seed = &data[data.len().saturating_sub(24)..];
    for writable in [false, true] {
        let opts = OpenOpts {
            writable,
            key: Some(b"abc".to_vec()),
            no_backing: true,
            ..OpenOpts::default()
        };
        if let Ok(mut img) = imgformats::open_image(&path, fmt, &opts) {
            let _ = img.format_specific();
            let _ = img.backing_file_name();
            drive(img.as_mut(), seed, writable);
        }
    }
    let _ = std::fs::remove_file(&path);
}
