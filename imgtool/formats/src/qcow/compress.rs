//! Compressed clusters of qcow v1: raw deflate streams (no zlib header),
//! stored byte-exact at a sector-aligned host offset, their length kept in
//! the L2 entry. QEMU inflates them with a 4 KiB window (zlib window bits
//! -12), so the compressor never refers back further than 4 KiB: clusters
//! larger than that are compressed in 4 KiB pieces separated by full flushes,
//! which reset the dictionary.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::driver::Compressor;
use crate::error::{Error, Result};

/// Largest back-reference distance QEMU's inflate accepts.
const WINDOW: usize = 4096;

/// Compresses whole clusters of one image.
#[derive(Clone, Copy, Debug)]
pub struct QcowCompressor {
    pub cluster_size: usize,
}

impl Compressor for QcowCompressor {
    fn compress(&self, data: &[u8]) -> Option<Vec<u8>> {
        if data.len() > self.cluster_size {
            return None;
        }
        // The last cluster of a disk may be short: it is stored as a whole
        // cluster, zero-padded.
        let mut padded;
        let data = if data.len() < self.cluster_size {
            padded = vec![0u8; self.cluster_size];
            padded[..data.len()].copy_from_slice(data);
            &padded[..]
        } else {
            data
        };
        compress_cluster(data)
    }
}

/// Deflates one cluster; `None` if the result is not smaller than the
/// cluster (the length must fit the L2 entry's size field).
pub fn compress_cluster(data: &[u8]) -> Option<Vec<u8>> {
    let limit = data.len().checked_sub(1)?;
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    let pieces: Vec<&[u8]> = data.chunks(WINDOW).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let last = i + 1 == pieces.len();
        let flush = if last {
            FlushCompress::Finish
        } else {
            FlushCompress::Full
        };
        let mut input = *piece;
        loop {
            out.reserve(input.len() + 1024);
            let (in0, out0) = (c.total_in(), c.total_out());
            let status = c.compress_vec(input, &mut out, flush).ok()?;
            input = &input[(c.total_in() - in0) as usize..];
            if out.len() > limit {
                return None;
            }
            let done = if last {
                status == Status::StreamEnd
            } else {
                // The flush is complete once the input is used up and the
                // compressor stopped with room to spare.
                input.is_empty() && out.len() < out.capacity()
            };
            if done {
                break;
            }
            if c.total_in() == in0 && c.total_out() == out0 && out.len() < out.capacity() {
                return None;
            }
        }
    }
    Some(out)
}

/// Inflates one compressed cluster into `out` (exactly a cluster long).
/// Garbage or a stream that does not fill the cluster is a corruption error.
pub fn decompress_cluster(data: &[u8], out: &mut [u8], host_offset: u64) -> Result<()> {
    let mut d = Decompress::new(false);
    let bad = |why: &str| {
        Error::corrupt(format!(
            "qcow: compressed cluster at host offset {host_offset} ({} bytes) is invalid: {why}",
            data.len()
        ))
    };
    loop {
        let in_done = d.total_in() as usize;
        let out_done = d.total_out() as usize;
        if out_done >= out.len() {
            break;
        }
        let status = d
            .decompress(
                &data[in_done..],
                &mut out[out_done..],
                FlushDecompress::Finish,
            )
            .map_err(|e| bad(&e.to_string()))?;
        let progressed = d.total_in() as usize != in_done || d.total_out() as usize != out_done;
        match status {
            Status::StreamEnd => break,
            _ if !progressed => break,
            _ => {}
        }
    }
    let produced = d.total_out() as usize;
    if produced != out.len() {
        return Err(bad(&format!(
            "it inflates to {produced} bytes, not a whole cluster of {}",
            out.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_small_and_large_clusters() {
        for cs in [512usize, 4096, 65536] {
            let data: Vec<u8> = (0..cs).map(|i| ((i / 7) % 13) as u8).collect();
            let c = QcowCompressor { cluster_size: cs };
            let z = c.compress(&data).expect("patterned data compresses");
            assert!(z.len() < cs);
            let mut out = vec![0u8; cs];
            decompress_cluster(&z, &mut out, 0).expect("own output inflates");
            assert_eq!(out, data);
        }
    }

    #[test]
    fn short_last_cluster_is_padded() {
        let c = QcowCompressor { cluster_size: 4096 };
        let z = c.compress(&[7u8; 1000]).expect("compresses");
        let mut out = vec![1u8; 4096];
        decompress_cluster(&z, &mut out, 0).expect("inflates");
        assert!(out[..1000].iter().all(|&b| b == 7));
        assert!(out[1000..].iter().all(|&b| b == 0));
    }

    #[test]
    fn incompressible_is_none() {
        // xorshift noise does not deflate.
        let mut x = 0x1234_5678_9abc_def0u64;
        let data: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(compress_cluster(&data).is_none());
    }

    #[test]
    fn window_never_exceeds_4k() {
        // A 64 KiB cluster of one random 4 KiB block repeated: with a 32 KiB
        // window this would compress to ~4 KiB; with dictionary resets every
        // 4 KiB each piece stands alone.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let block: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x & 0x0f) as u8
            })
            .collect();
        let data: Vec<u8> = block.iter().copied().cycle().take(65536).collect();
        let z = compress_cluster(&data).expect("4-bit symbols compress");
        assert!(z.len() > 16 * 1024, "pieces must not refer to each other");
        let mut out = vec![0u8; 65536];
        decompress_cluster(&z, &mut out, 0).expect("inflates");
        assert_eq!(out, data);
    }

    #[test]
    fn garbage_is_an_error() {
        let mut out = vec![0u8; 4096];
        assert!(decompress_cluster(&[0xff; 21], &mut out, 0).is_err());
        assert!(decompress_cluster(&[], &mut out, 0).is_err());
        // A valid stream that is too short for the cluster.
        let z = compress_cluster(&[0u8; 512]).expect("zeroes compress");
        assert!(decompress_cluster(&z, &mut out, 0).is_err());
    }
}
