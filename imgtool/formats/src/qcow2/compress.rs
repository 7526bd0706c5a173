//! Compressed clusters: raw deflate with a 4 KiB window (the spec's "zlib"
//! compression type 0, no zlib header, as QEMU writes it) and zstd (type 1).
//! A compressed cluster must decompress to exactly one full cluster.
//!
//! Deflate is zlib-rs (through flate2) at zlib's default level with the
//! 4 KiB window: streams any zlib reads, about twice as fast as the system
//! zlib QEMU uses and slightly smaller, so `convert -c` output is valid and
//! readable by the real qemu-img but not byte-identical to its output.

use flate2::{Decompress, FlushDecompress};

use crate::driver::Compressor;
use crate::error::{Error, Result};

/// Compression type as stored in the header's compression_type field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionType {
    Zlib,
    Zstd,
}

impl CompressionType {
    /// From the header field.
    pub fn from_header(v: u8) -> Result<CompressionType> {
        match v {
            0 => Ok(CompressionType::Zlib),
            1 => Ok(CompressionType::Zstd),
            _ => Err(Error::unsupported(format!("Unknown compression type {v}"))),
        }
    }

    /// QEMU's name (`zlib`, `zstd`).
    pub fn name(self) -> &'static str {
        match self {
            CompressionType::Zlib => "zlib",
            CompressionType::Zstd => "zstd",
        }
    }
}

/// A pure per-image compressor.
pub struct ClusterCompressor {
    pub kind: CompressionType,
    pub cluster_size: usize,
}

impl Compressor for ClusterCompressor {
    fn compress(&self, data: &[u8]) -> Option<Vec<u8>> {
        compress_cluster(self.kind, self.cluster_size, data)
    }
}

/// Compresses one cluster (a shorter last cluster is padded with zeroes).
/// `None` if the result would not be smaller than a cluster, in which case
/// QEMU writes the cluster uncompressed.
pub fn compress_cluster(
    kind: CompressionType,
    cluster_size: usize,
    data: &[u8],
) -> Option<Vec<u8>> {
    let mut padded;
    let input = if data.len() < cluster_size {
        padded = data.to_vec();
        padded.resize(cluster_size, 0);
        &padded[..]
    } else {
        &data[..cluster_size]
    };
    let limit = cluster_size - 1;
    let out = match kind {
        CompressionType::Zlib => {
            // A fresh deflate state per cluster (reusing one with reset()
            // after a stream that did not fit trips an overflow check in
            // zlib-rs 0.6.8's stored-block accounting).
            let mut c =
                flate2::Compress::new_with_window_bits(flate2::Compression::new(6), false, 12);
            let mut out = Vec::with_capacity(limit);
            match c.compress_vec(input, &mut out, flate2::FlushCompress::Finish) {
                Ok(flate2::Status::StreamEnd) => out,
                _ => return None,
            }
        }
        CompressionType::Zstd => zstd::bulk::compress(input, 0).ok()?,
    };
    (out.len() <= limit).then_some(out)
}

/// Decompresses one cluster's worth of data from `src` (which may carry
/// trailing bytes of the final sector).
pub fn decompress_cluster(kind: CompressionType, src: &[u8], out: &mut [u8]) -> Result<()> {
    let bad = || Error::corrupt("Could not decompress a compressed cluster: data is corrupt");
    match kind {
        CompressionType::Zlib => {
            // A raw deflate decoder with the maximum window reads streams
            // written with any smaller window.
            let mut d = Decompress::new(false);
            match d.decompress(src, out, FlushDecompress::Finish) {
                Ok(_) if d.total_out() as usize == out.len() => Ok(()),
                _ => Err(bad()),
            }
        }
        CompressionType::Zstd => {
            use std::io::Read;
            let mut dec = zstd::stream::read::Decoder::with_buffer(src).map_err(|_| bad())?;
            let mut done = 0;
            while done < out.len() {
                match dec.read(&mut out[done..]) {
                    Ok(0) => return Err(bad()),
                    Ok(n) => done += n,
                    Err(_) => return Err(bad()),
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| ((i / 7) % 13) as u8).collect()
    }

    #[test]
    fn zlib_round_trip() {
        let data = pattern(65536);
        let c = compress_cluster(CompressionType::Zlib, 65536, &data).expect("compressible");
        assert!(c.len() < 65536);
        let mut out = vec![0u8; 65536];
        let mut src = c.clone();
        src.extend_from_slice(&[0xaa; 100]);
        decompress_cluster(CompressionType::Zlib, &src, &mut out).expect("decompresses");
        assert_eq!(out, data);
    }

    #[test]
    fn zstd_round_trip_and_padding() {
        let data = pattern(1000);
        let c = compress_cluster(CompressionType::Zstd, 4096, &data).expect("compressible");
        let mut out = vec![0u8; 4096];
        decompress_cluster(CompressionType::Zstd, &c, &mut out).expect("decompresses");
        assert_eq!(&out[..1000], &data[..]);
        assert!(out[1000..].iter().all(|&b| b == 0));
    }

    #[test]
    fn incompressible_and_garbage() {
        let mut x = 0x1234_5678u32;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        assert!(compress_cluster(CompressionType::Zlib, 4096, &noise).is_none());
        let mut out = vec![0u8; 4096];
        assert!(decompress_cluster(CompressionType::Zlib, &noise[..300], &mut out).is_err());
        assert!(decompress_cluster(CompressionType::Zstd, &noise[..300], &mut out).is_err());
    }
}
