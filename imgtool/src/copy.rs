//! The data-moving core shared by `convert`, `commit`, `rebase` and `dd`:
//! zero detection, chain-aware block status, and compression of clusters on
//! all cores while the image is written in order on this thread.

pub use imgformats::{chain_run, RunKind};
use imgformats::{BlockDriver, Result};

/// Largest buffer moved in one read/write.
pub const CHUNK: u64 = 1 << 20;

/// True if every byte of `buf` is zero (vectorises well).
pub fn is_zero(buf: &[u8]) -> bool {
    let (pre, mid, post) = {
        // SAFETY: u8 -> u128 reinterpretation is valid for any bit pattern;
        // align_to only yields correctly aligned middle elements.
        unsafe { buf.align_to::<u128>() }
    };
    pre.iter().all(|&b| b == 0)
        && mid.iter().fold(0u128, |acc, &w| acc | w) == 0
        && post.iter().all(|&b| b == 0)
}

/// Like [`chain_run`], but joins following runs of the same kind (up to
/// `want` bytes), so one read covers many clusters (compressed clusters are
/// reported one by one; a multi-cluster read lets the driver inflate them
/// in parallel).
pub fn coalesced_run(
    src: &mut dyn BlockDriver,
    off: u64,
    want: u64,
    depth: Option<usize>,
) -> Result<(u64, RunKind)> {
    let (len, kind) = chain_run(src, off, want, depth)?;
    let mut len = len.clamp(1, want);
    while len < want {
        let (next, k) = chain_run(src, off + len, want - len, depth)?;
        if k != kind {
            break;
        }
        len += next.clamp(1, want - len);
    }
    Ok((len, kind))
}

/// One piece of a source produced by [`read_ahead`].
pub struct Piece {
    /// Offset in the source.
    pub offset: u64,
    /// Length of the run.
    pub len: u64,
    /// What the run holds.
    pub kind: RunKind,
    /// The bytes, for `RunKind::Data` (empty otherwise).
    pub data: Vec<u8>,
    /// For data, which granules are all zero (see [`zero_granules`]),
    /// computed on the reading thread when a granule size was asked for.
    pub zero_map: Option<Vec<bool>>,
}

/// Splits `[at, at + buf.len())` into granules aligned to multiples of
/// `granule` (the first and last may be partial) and tells which hold only
/// zeroes.
pub fn zero_granules(buf: &[u8], at: u64, granule: u64) -> Vec<bool> {
    let end = at + buf.len() as u64;
    let mut v = Vec::with_capacity((buf.len() as u64 / granule.max(1) + 2) as usize);
    let mut pos = at;
    while pos < end {
        let g_end = ((pos / granule + 1) * granule).min(end);
        v.push(is_zero(&buf[(pos - at) as usize..(g_end - at) as usize]));
        pos = g_end;
    }
    v
}

/// Reads `src` (down to `depth` layers) on a second thread, `chunk` bytes
/// at most per piece, and hands the pieces in order to `consume` on this
/// thread, so reading the source overlaps writing the target. Buffers are
/// recycled; at most a few pieces are in flight. Errors from either side
/// stop both.
///
/// With `scan = Some((granule, base))` the reader also maps the zero
/// granules of each data piece as it will land at `base + offset` in the
/// target, so the writing thread does not have to look at the bytes.
pub fn read_ahead<E, F>(
    src: &mut dyn BlockDriver,
    depth: Option<usize>,
    chunk: u64,
    scan: Option<(u64, u64)>,
    mut consume: F,
) -> std::result::Result<(), E>
where
    E: From<imgformats::Error> + Send,
    F: FnMut(&Piece) -> std::result::Result<(), E>,
{
    use std::sync::mpsc;
    let size = src.size();
    let (full_tx, full_rx) = mpsc::sync_channel::<Result<Piece>>(4);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut off = 0u64;
            while off < size {
                let want = (size - off).min(chunk);
                let piece = coalesced_run(src, off, want, depth).and_then(|(len, kind)| {
                    let mut data = Vec::new();
                    let mut zero_map = None;
                    if kind == RunKind::Data {
                        data = empty_rx.try_recv().unwrap_or_default();
                        data.resize(len as usize, 0);
                        src.read(off, &mut data)?;
                        if let Some((granule, base)) = scan.filter(|(g, _)| *g > 0) {
                            zero_map = Some(zero_granules(&data, base + off, granule));
                        }
                    }
                    Ok(Piece {
                        offset: off,
                        len,
                        kind,
                        data,
                        zero_map,
                    })
                });
                let failed = piece.is_err();
                let len = piece.as_ref().map(|p| p.len).unwrap_or(0);
                if full_tx.send(piece).is_err() || failed {
                    return;
                }
                off += len;
            }
        });
        for piece in full_rx {
            let piece = piece?;
            consume(&piece)?;
            // Only real buffers go back: an empty Vec in the queue would be
            // taken instead of a big one and let big ones pile up.
            if piece.data.capacity() > 0 {
                let _ = empty_tx.send(piece.data);
            }
        }
        Ok(())
    })
}

/// True when a cluster is so close to uniformly random that deflate with
/// qcow2's 4 KiB window cannot shrink it: its byte entropy is above what a
/// sample of this size from a uniform source typically shows, minus a
/// margin. Data with repeats inside the window (period <= 4 KiB) has
/// visibly lower sample entropy and is still compressed. Skipping the
/// hopeless attempt stores the cluster uncompressed, as qemu-img would
/// after trying.
pub fn looks_incompressible(data: &[u8]) -> bool {
    let n = data.len();
    if n < 4096 {
        return false;
    }
    let mut hist = [0u32; 256];
    for &b in data {
        hist[b as usize] += 1;
    }
    let nf = n as f64;
    let entropy: f64 = hist
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / nf;
            -p * p.log2()
        })
        .sum();
    // A uniform sample of n bytes has expected entropy of about
    // 8 - 255 / (2 n ln 2) bits; allow twice that shortfall.
    let threshold = 8.0 - 255.0 / (nf * std::f64::consts::LN_2);
    entropy > threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        let mut v = vec![0u8; 4099];
        assert!(is_zero(&v));
        assert!(is_zero(&v[1..]));
        v[4098] = 1;
        assert!(!is_zero(&v));
        v[4098] = 0;
        v[17] = 3;
        assert!(!is_zero(&v[3..]));
        assert!(is_zero(&[]));
    }

    #[test]
    fn zero_granules_follow_target_alignment() {
        let mut buf = vec![0u8; 10000];
        buf[5000] = 1;
        // Target offset 1000: granules [1000,4096) [4096,8192) [8192,11000).
        assert_eq!(zero_granules(&buf, 1000, 4096), vec![true, false, true]);
        assert_eq!(zero_granules(&buf, 0, 4096), vec![true, false, true]);
        assert_eq!(zero_granules(&[], 0, 4096), Vec::<bool>::new());
    }

    fn xorshift(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect()
    }

    #[test]
    fn incompressibility_estimate() {
        // Random clusters are skipped ...
        assert!(looks_incompressible(&xorshift(65536, 3)));
        assert!(looks_incompressible(&xorshift(4096, 5)));
        // ... but a random block repeated inside deflate's window is not,
        // nor is text or a mostly-zero cluster.
        let block = xorshift(4096, 7);
        let repeated: Vec<u8> = block.iter().cycle().take(65536).copied().collect();
        assert!(!looks_incompressible(&repeated));
        let text = b"the quick brown fox jumps over the lazy dog ".repeat(1500);
        assert!(!looks_incompressible(&text));
        let mut sparse = vec![0u8; 65536];
        sparse[..8192].copy_from_slice(&xorshift(8192, 9));
        assert!(!looks_incompressible(&sparse));
    }
}
