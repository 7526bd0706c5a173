//! The data-moving core shared by `convert`, `commit`, `rebase` and `dd`:
//! zero detection, chain-aware block status, and compression of clusters on
//! all cores while the image is written in order on this thread.

use imgformats::{Alloc, BlockDriver, Compressor, Result};

/// Largest buffer moved in one read/write.
pub const CHUNK: u64 = 2 << 20;

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

/// What a run of a chain holds, for copying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunKind {
    /// Reads as zeroes.
    Zero,
    /// Holds data (maybe zero-valued; the copier checks).
    Data,
    /// Not allocated in the layers being copied (left to a backing file).
    Unallocated,
}

/// Status of the chain from `img` down, stopping before layer `depth_limit`
/// (`None`: the whole chain, where unallocated means zero). Returns the run
/// length (<= max_len) and its kind.
pub fn chain_run(
    img: &mut dyn BlockDriver,
    offset: u64,
    max_len: u64,
    depth_limit: Option<usize>,
) -> Result<(u64, RunKind)> {
    if depth_limit == Some(0) {
        return Ok((max_len, RunKind::Unallocated));
    }
    let (st, zero) = imgformats::layer_status(img, offset, max_len)?;
    match st.alloc {
        Alloc::Data if zero => Ok((st.len, RunKind::Zero)),
        Alloc::Data | Alloc::Compressed => Ok((st.len, RunKind::Data)),
        Alloc::Zero => Ok((st.len, RunKind::Zero)),
        Alloc::Unallocated => {
            let next = depth_limit.map(|d| d - 1);
            match img.backing() {
                Some(b) if offset < b.size() => {
                    let max = st.len.min(b.size() - offset);
                    chain_run(b, offset, max, next)
                }
                Some(_) => Ok((st.len, RunKind::Zero)),
                None if depth_limit.is_some() => Ok((st.len, RunKind::Unallocated)),
                None => Ok((st.len, RunKind::Zero)),
            }
        }
    }
}

/// Compresses clusters in parallel. Jobs are handed out in order and
/// results returned in the same order, so the writer stays sequential.
pub struct ParallelCompressor<'a> {
    compressor: &'a dyn Compressor,
    threads: usize,
}

impl<'a> ParallelCompressor<'a> {
    /// Uses every available core.
    pub fn new(compressor: &'a dyn Compressor) -> ParallelCompressor<'a> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .max(1);
        ParallelCompressor {
            compressor,
            threads,
        }
    }

    /// Compresses each `cluster_size` piece of `data` (the last may be
    /// short). `None` entries did not shrink and are written plainly; zero
    /// clusters are reported as `Some(empty)` so callers can skip them.
    pub fn compress_all(&self, data: &[u8], cluster_size: usize) -> Vec<Option<Vec<u8>>> {
        let pieces: Vec<&[u8]> = data.chunks(cluster_size).collect();
        let n = pieces.len();
        let mut out: Vec<Option<Vec<u8>>> = vec![None; n];
        if n == 0 {
            return out;
        }
        let per = n.div_ceil(self.threads);
        std::thread::scope(|s| {
            for (slot, work) in out.chunks_mut(per).zip(pieces.chunks(per)) {
                let c = self.compressor;
                s.spawn(move || {
                    for (o, piece) in slot.iter_mut().zip(work) {
                        *o = if is_zero(piece) {
                            Some(Vec::new())
                        } else {
                            c.compress(piece)
                        };
                    }
                });
            }
        });
        out
    }
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
}
