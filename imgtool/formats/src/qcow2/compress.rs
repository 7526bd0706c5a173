//! Compressed clusters: raw deflate with a 4 KiB window (the spec's "zlib"
//! compression type 0, no zlib header, as QEMU writes it) and zstd (type 1).
//! A compressed cluster must decompress to exactly one full cluster.
//!
//! Compression goes through the system zlib (the library QEMU itself uses)
//! so `convert -c` output is byte-identical to the real qemu-img's; the
//! Rust deflate encoders produce different (valid) streams.

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
        CompressionType::Zlib => zlib::deflate_raw_4k(input, limit)?,
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

/// Raw deflate through the system zlib.
mod zlib {
    use std::os::raw::{c_char, c_int, c_uint, c_ulong, c_void};

    /// zlib's `z_stream` (zlib.h), laid out as the C library expects.
    #[repr(C)]
    struct ZStream {
        next_in: *const u8,
        avail_in: c_uint,
        total_in: c_ulong,
        next_out: *mut u8,
        avail_out: c_uint,
        total_out: c_ulong,
        msg: *const c_char,
        state: *mut c_void,
        zalloc: *const c_void,
        zfree: *const c_void,
        opaque: *mut c_void,
        data_type: c_int,
        adler: c_ulong,
        reserved: c_ulong,
    }

    #[link(name = "z")]
    extern "C" {
        fn zlibVersion() -> *const c_char;
        fn deflateInit2_(
            strm: *mut ZStream,
            level: c_int,
            method: c_int,
            window_bits: c_int,
            mem_level: c_int,
            strategy: c_int,
            version: *const c_char,
            stream_size: c_int,
        ) -> c_int;
        fn deflate(strm: *mut ZStream, flush: c_int) -> c_int;
        fn deflateEnd(strm: *mut ZStream) -> c_int;
    }

    const Z_FINISH: c_int = 4;
    const Z_STREAM_END: c_int = 1;
    const Z_DEFLATED: c_int = 8;
    const Z_DEFAULT_COMPRESSION: c_int = -1;

    /// Deflates `input` with a 4 KiB window and no header into at most
    /// `limit` bytes, with QEMU's parameters; `None` if it does not fit.
    pub fn deflate_raw_4k(input: &[u8], limit: usize) -> Option<Vec<u8>> {
        let mut out = vec![0u8; limit];
        let mut s = ZStream {
            next_in: input.as_ptr(),
            avail_in: c_uint::try_from(input.len()).ok()?,
            total_in: 0,
            next_out: out.as_mut_ptr(),
            avail_out: c_uint::try_from(limit).ok()?,
            total_out: 0,
            msg: std::ptr::null(),
            state: std::ptr::null_mut(),
            zalloc: std::ptr::null(),
            zfree: std::ptr::null(),
            opaque: std::ptr::null_mut(),
            data_type: 0,
            adler: 0,
            reserved: 0,
        };
        // SAFETY: `s` is a properly laid out z_stream with null allocator
        // callbacks (zlib then uses malloc/free); the version string comes
        // from the library itself and the size is that of our struct.
        let r = unsafe {
            deflateInit2_(
                &mut s,
                Z_DEFAULT_COMPRESSION,
                Z_DEFLATED,
                -12,
                9,
                0,
                zlibVersion(),
                std::mem::size_of::<ZStream>() as c_int,
            )
        };
        if r != 0 {
            return None;
        }
        // SAFETY: the stream was initialised above; next_in/next_out point
        // into `input` and `out`, which outlive the call, with the lengths
        // given in avail_in/avail_out.
        let r = unsafe { deflate(&mut s, Z_FINISH) };
        let produced = limit - s.avail_out as usize;
        // SAFETY: ends the stream initialised above, freeing zlib's state.
        unsafe { deflateEnd(&mut s) };
        if r != Z_STREAM_END {
            return None;
        }
        out.truncate(produced);
        Some(out)
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
