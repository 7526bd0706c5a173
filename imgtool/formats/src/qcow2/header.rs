//! The qcow2 header (cluster 0): the fixed fields of versions 2 and 3, the
//! header extensions that follow them, and the backing file name stored at
//! the end of the header area. Layout per QEMU's `docs/interop/qcow2.rst`,
//! sections "Header", "Header extensions" and "Feature name table".

use crate::error::{Error, Result};

/// `QFI\xfb`.
pub const MAGIC: u32 = 0x5146_49fb;

/// Incompatible feature bits.
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 = 0x1f;

/// Compatible feature bits.
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;

/// Autoclear feature bits.
pub const AUTOCLEAR_BITMAPS: u64 = 1 << 0;
pub const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;

/// Header extension types.
pub const EXT_END: u32 = 0;
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
pub const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
pub const EXT_BITMAPS: u32 = 0x2385_2875;
pub const EXT_CRYPTO: u32 = 0x0537_be77;
pub const EXT_DATA_FILE: u32 = 0x4441_5441;

/// Length of the version 3 header QEMU writes (through compression_type
/// plus padding).
pub const V3_HEADER_LEN: u32 = 112;

/// The feature name table QEMU writes into every version 3 image, in its
/// order: (type, bit, name).
pub const FEATURE_TABLE: &[(u8, u8, &str)] = &[
    (0, 0, "dirty bit"),
    (0, 1, "corrupt bit"),
    (0, 2, "external data file"),
    (0, 3, "compression type"),
    (0, 4, "extended L2 entries"),
    (1, 0, "lazy refcounts"),
    (2, 0, "bitmaps"),
    (2, 1, "raw external data"),
];

/// A parsed qcow2 header with its extensions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub backing_file_offset: u64,
    pub backing_file_size: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible: u64,
    pub compatible: u64,
    pub autoclear: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression_type: u8,
    /// Header bytes past byte 105 up to `header_length`, preserved as is.
    pub tail: Vec<u8>,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
    pub data_file: Option<String>,
    /// Raw bitmaps extension data (24 bytes), preserved.
    pub bitmaps_ext: Option<Vec<u8>>,
    /// Raw full-disk-encryption pointer extension data, preserved.
    pub crypto_ext: Option<Vec<u8>>,
    /// Feature names found in the image: (type, bit, name).
    pub feature_names: Vec<(u8, u8, String)>,
    /// Extensions this implementation does not know, preserved in order.
    pub unknown_exts: Vec<(u32, Vec<u8>)>,
}

/// Big-endian u32 at `o` (the caller checked the bounds).
pub(super) fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// Big-endian u64 at `o` (the caller checked the bounds).
pub(super) fn be64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_be_bytes(a)
}

impl Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// True when L2 entries are 128 bits with subcluster bitmaps.
    pub fn extended_l2(&self) -> bool {
        self.incompatible & INCOMPAT_EXTL2 != 0
    }

    /// Parses and validates the fixed header and extensions from the first
    /// cluster's bytes. `file_len` bounds offsets.
    pub fn parse(buf: &[u8]) -> Result<Header> {
        if buf.len() < 72 {
            return Err(Error::corrupt("qcow2 header too short"));
        }
        if be32(buf, 0) != MAGIC {
            return Err(Error::corrupt("Image is not in qcow2 format"));
        }
        let version = be32(buf, 4);
        if !(2..=3).contains(&version) {
            return Err(Error::unsupported(format!(
                "Unsupported qcow2 version {version}"
            )));
        }
        let mut h = Header {
            version,
            backing_file_offset: be64(buf, 8),
            backing_file_size: be32(buf, 16),
            cluster_bits: be32(buf, 20),
            size: be64(buf, 24),
            crypt_method: be32(buf, 32),
            l1_size: be32(buf, 36),
            l1_table_offset: be64(buf, 40),
            refcount_table_offset: be64(buf, 48),
            refcount_table_clusters: be32(buf, 56),
            nb_snapshots: be32(buf, 60),
            snapshots_offset: be64(buf, 64),
            refcount_order: 4,
            header_length: 72,
            ..Header::default()
        };
        if !(9..=21).contains(&h.cluster_bits) {
            return Err(Error::unsupported(format!(
                "Unsupported cluster size: 2^{}",
                h.cluster_bits
            )));
        }
        let cs = h.cluster_size() as usize;
        if version >= 3 {
            if buf.len() < 104 {
                return Err(Error::corrupt("qcow2 header too short"));
            }
            h.incompatible = be64(buf, 72);
            h.compatible = be64(buf, 80);
            h.autoclear = be64(buf, 88);
            h.refcount_order = be32(buf, 96);
            h.header_length = be32(buf, 100);
            if h.header_length < 104 {
                return Err(Error::corrupt("qcow2 header too short"));
            }
            if h.header_length as usize > cs {
                return Err(Error::corrupt("qcow2 header exceeds cluster size"));
            }
            if h.header_length as usize > buf.len() {
                return Err(Error::corrupt("qcow2 header too short"));
            }
            if h.header_length > 104 {
                h.compression_type = buf[104];
                h.tail = buf[105..h.header_length as usize].to_vec();
            }
        }
        if h.refcount_order > 6 {
            return Err(Error::corrupt(
                "Reference count entry width too large; may not exceed 64 bits",
            ));
        }
        h.parse_extensions(buf)?;
        if h.backing_file_offset != 0 {
            let off = h.backing_file_offset;
            let len = h.backing_file_size as u64;
            if len > 1023 || off.checked_add(len).is_none_or(|e| e > cs as u64) {
                return Err(Error::corrupt("Backing file name too long"));
            }
            let end = (off + len) as usize;
            if end > buf.len() {
                return Err(Error::corrupt("Backing file name too long"));
            }
            h.backing_file = Some(String::from_utf8_lossy(&buf[off as usize..end]).into_owned());
        }
        Ok(h)
    }

    fn parse_extensions(&mut self, buf: &[u8]) -> Result<()> {
        let cs = self.cluster_size() as usize;
        let end = if self.backing_file_offset != 0 {
            (self.backing_file_offset as usize).min(cs)
        } else {
            cs
        };
        let end = end.min(buf.len());
        let mut o = self.header_length as usize;
        if o > end && self.backing_file_offset != 0 {
            return Err(Error::corrupt("Header extension too large"));
        }
        while o < end {
            if o + 8 > end {
                return Err(Error::corrupt("Header extension too large"));
            }
            let ty = be32(buf, o);
            let len = be32(buf, o + 4) as usize;
            o += 8;
            if ty == EXT_END {
                break;
            }
            if len > end - o {
                return Err(Error::corrupt("Header extension too large"));
            }
            let data = &buf[o..o + len];
            match ty {
                EXT_BACKING_FORMAT => {
                    if len > 1023 {
                        return Err(Error::corrupt("Backing format name too long"));
                    }
                    self.backing_format = Some(String::from_utf8_lossy(data).into_owned());
                }
                EXT_FEATURE_TABLE => {
                    for e in data.chunks_exact(48) {
                        let name_end = e[2..].iter().position(|&b| b == 0).unwrap_or(46);
                        let name = String::from_utf8_lossy(&e[2..2 + name_end]).into_owned();
                        self.feature_names.push((e[0], e[1], name));
                    }
                }
                EXT_DATA_FILE => {
                    self.data_file = Some(String::from_utf8_lossy(data).into_owned());
                }
                EXT_BITMAPS => self.bitmaps_ext = Some(data.to_vec()),
                EXT_CRYPTO => self.crypto_ext = Some(data.to_vec()),
                _ => self.unknown_exts.push((ty, data.to_vec())),
            }
            o += len.div_ceil(8) * 8;
        }
        Ok(())
    }

    /// Names of unknown incompatible features, as QEMU reports them
    /// ("Unsupported qcow2 feature(s): ..."), or `None` if all are known.
    pub fn unknown_incompatible(&self) -> Option<String> {
        let unknown = self.incompatible & !INCOMPAT_KNOWN;
        if unknown == 0 {
            return None;
        }
        let mut parts = Vec::new();
        let mut rest = unknown;
        for bit in 0..64u8 {
            if unknown & (1 << bit) == 0 {
                continue;
            }
            if let Some((_, _, name)) = self
                .feature_names
                .iter()
                .find(|(t, b, _)| *t == 0 && *b == bit)
            {
                parts.push(name.clone());
                rest &= !(1 << bit);
            }
        }
        if rest != 0 {
            parts.push(format!("Unknown incompatible feature: {rest:x}"));
        }
        Some(format!(
            "Unsupported qcow2 feature(s): {}",
            parts.join(", ")
        ))
    }

    /// Serialises the header area (header, extensions, backing file name)
    /// for cluster 0. Fails if it does not fit in one cluster. Updates
    /// `backing_file_offset`/`size` to where the name is stored.
    pub fn serialize(&mut self) -> Result<Vec<u8>> {
        let mut exts: Vec<u8> = Vec::new();
        let mut push_ext = |ty: u32, data: &[u8]| {
            exts.extend_from_slice(&ty.to_be_bytes());
            exts.extend_from_slice(&(data.len() as u32).to_be_bytes());
            exts.extend_from_slice(data);
            let pad = data.len().div_ceil(8) * 8 - data.len();
            exts.extend(std::iter::repeat_n(0u8, pad));
        };
        if let Some(c) = &self.crypto_ext {
            push_ext(EXT_CRYPTO, c);
        }
        if let Some(f) = &self.backing_format {
            push_ext(EXT_BACKING_FORMAT, f.as_bytes());
        }
        if let Some(d) = &self.data_file {
            push_ext(EXT_DATA_FILE, d.as_bytes());
        }
        // QEMU writes the feature name table only with clusters above 4 KiB.
        if self.version >= 3 && self.cluster_bits > 12 {
            let mut t = Vec::with_capacity(FEATURE_TABLE.len() * 48);
            for (ty, bit, name) in FEATURE_TABLE {
                let mut e = [0u8; 48];
                e[0] = *ty;
                e[1] = *bit;
                e[2..2 + name.len()].copy_from_slice(name.as_bytes());
                t.extend_from_slice(&e);
            }
            push_ext(EXT_FEATURE_TABLE, &t);
        }
        if let Some(b) = &self.bitmaps_ext {
            push_ext(EXT_BITMAPS, b);
        }
        for (ty, d) in &self.unknown_exts {
            push_ext(*ty, d);
        }
        push_ext(EXT_END, &[]);

        let hlen = if self.version >= 3 {
            self.header_length.max(104) as usize
        } else {
            72
        };
        let mut out = vec![0u8; hlen];
        let name = self.backing_file.clone();
        let name_off = hlen + exts.len();
        match &name {
            Some(n) => {
                self.backing_file_offset = name_off as u64;
                self.backing_file_size = n.len() as u32;
            }
            None => {
                self.backing_file_offset = 0;
                self.backing_file_size = 0;
            }
        }
        if name.as_ref().is_some_and(|n| n.len() > 1023)
            || self.backing_format.as_ref().is_some_and(|f| f.len() > 1023)
        {
            return Err(Error::invalid("Invalid argument"));
        }
        let total = name_off + name.as_ref().map_or(0, |n| n.len());
        if total as u64 > self.cluster_size() {
            return Err(Error::invalid("No space left in the file header"));
        }
        out[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        out[4..8].copy_from_slice(&self.version.to_be_bytes());
        out[8..16].copy_from_slice(&self.backing_file_offset.to_be_bytes());
        out[16..20].copy_from_slice(&self.backing_file_size.to_be_bytes());
        out[20..24].copy_from_slice(&self.cluster_bits.to_be_bytes());
        out[24..32].copy_from_slice(&self.size.to_be_bytes());
        out[32..36].copy_from_slice(&self.crypt_method.to_be_bytes());
        out[36..40].copy_from_slice(&self.l1_size.to_be_bytes());
        out[40..48].copy_from_slice(&self.l1_table_offset.to_be_bytes());
        out[48..56].copy_from_slice(&self.refcount_table_offset.to_be_bytes());
        out[56..60].copy_from_slice(&self.refcount_table_clusters.to_be_bytes());
        out[60..64].copy_from_slice(&self.nb_snapshots.to_be_bytes());
        out[64..72].copy_from_slice(&self.snapshots_offset.to_be_bytes());
        if self.version >= 3 {
            out[72..80].copy_from_slice(&self.incompatible.to_be_bytes());
            out[80..88].copy_from_slice(&self.compatible.to_be_bytes());
            out[88..96].copy_from_slice(&self.autoclear.to_be_bytes());
            out[96..100].copy_from_slice(&self.refcount_order.to_be_bytes());
            out[100..104].copy_from_slice(&(hlen as u32).to_be_bytes());
            if hlen > 104 {
                out[104] = self.compression_type;
                let n = self.tail.len().min(hlen - 105);
                out[105..105 + n].copy_from_slice(&self.tail[..n]);
            }
        }
        out.extend_from_slice(&exts);
        if let Some(n) = &name {
            out.extend_from_slice(n.as_bytes());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            version: 3,
            cluster_bits: 16,
            size: 1 << 30,
            l1_size: 2,
            l1_table_offset: 0x30000,
            refcount_table_offset: 0x10000,
            refcount_table_clusters: 1,
            refcount_order: 4,
            header_length: V3_HEADER_LEN,
            ..Header::default()
        }
    }

    #[test]
    fn round_trips_v3_with_backing() {
        let mut h = sample();
        h.backing_file = Some("base.raw".into());
        h.backing_format = Some("raw".into());
        let bytes = h.serialize().expect("fits");
        // Backing format ext, feature table, end marker, then the name.
        assert_eq!(h.backing_file_offset, 112 + 16 + 392 + 8);
        let p = Header::parse(&bytes).expect("parses");
        assert_eq!(p.backing_file.as_deref(), Some("base.raw"));
        assert_eq!(p.backing_format.as_deref(), Some("raw"));
        assert_eq!(p.feature_names.len(), FEATURE_TABLE.len());
        assert_eq!(p.l1_table_offset, 0x30000);
    }

    #[test]
    fn rejects_bad_fields() {
        let mut h = sample();
        let mut b = h.serialize().expect("fits");
        b[23] = 22;
        assert!(Header::parse(&b).is_err());
        b[23] = 16;
        b[99] = 7;
        assert!(Header::parse(&b).is_err());
        b[99] = 4;
        b[7] = 4;
        assert!(Header::parse(&b).is_err());
        assert!(Header::parse(&b[..50]).is_err());
    }

    #[test]
    fn names_unknown_features() {
        let mut h = sample();
        h.incompatible = 1 << 5;
        assert_eq!(
            h.unknown_incompatible().as_deref(),
            Some("Unsupported qcow2 feature(s): Unknown incompatible feature: 20")
        );
        h.feature_names.push((0, 5, "frobnication".into()));
        assert_eq!(
            h.unknown_incompatible().as_deref(),
            Some("Unsupported qcow2 feature(s): frobnication")
        );
    }
}
