//! Guest cluster mapping: L1/L2 entry encoding (standard, compressed and
//! extended L2 entries with subcluster bitmaps) and the L2 table cache.
//! Per the qcow2 spec sections "Cluster mapping" and "Extended L2 Entries".

use crate::error::{Error, Result};
use crate::file::ImageFile;

/// Bits 9-55: the host offset of an L1/L2 entry.
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bit 63: refcount is exactly one.
pub const COPIED: u64 = 1 << 63;
/// Bit 62 of an L2 entry: compressed cluster.
pub const COMPRESSED: u64 = 1 << 62;
/// Bit 0 of a standard L2 entry (v3, no extended L2): reads as zeroes.
pub const ZERO: u64 = 1;
/// Bits of an L1 entry that must be zero.
pub const L1_RESERVED: u64 = 0x7f00_0000_0000_01ff;

/// Number of subclusters per cluster with extended L2 entries.
pub const SUBCLUSTERS: u32 = 32;

/// The compressed cluster descriptor fields for a given cluster size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompressedDesc {
    /// Host byte offset of the compressed data (not aligned).
    pub offset: u64,
    /// Number of 512-byte sectors after the one holding `offset`.
    pub extra_sectors: u64,
}

impl CompressedDesc {
    /// Bit position where the sector count starts.
    fn shift(cluster_bits: u32) -> u32 {
        62 - (cluster_bits - 8)
    }

    /// Decodes the descriptor of a compressed L2 entry.
    pub fn decode(entry: u64, cluster_bits: u32) -> CompressedDesc {
        let x = Self::shift(cluster_bits);
        let offset = entry & ((1u64 << x) - 1) & ((1 << 56) - 1);
        let extra_sectors = (entry >> x) & ((1u64 << (cluster_bits - 8)) - 1);
        CompressedDesc {
            offset,
            extra_sectors,
        }
    }

    /// Encodes a compressed L2 entry for `len` bytes at `offset`.
    pub fn encode(offset: u64, len: u64, cluster_bits: u32) -> u64 {
        let x = Self::shift(cluster_bits);
        let extra = ((offset + len - 1) >> 9) - (offset >> 9);
        COMPRESSED | (extra << x) | offset
    }

    /// Bytes that may belong to the compressed stream.
    pub fn max_len(&self) -> u64 {
        (self.extra_sectors + 1) * 512 - (self.offset & 511)
    }

    /// Host clusters the compressed data touches: (first, count).
    pub fn clusters(&self, cluster_bits: u32) -> (u64, u64) {
        let first = self.offset >> cluster_bits;
        let last = (self.offset + self.max_len() - 1) >> cluster_bits;
        (first, last - first + 1)
    }
}

/// What one guest cluster or subcluster maps to in this layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// Not allocated here: read from the backing file.
    Unallocated,
    /// Reads as zeroes (with the preallocated host offset, if any).
    Zero(Option<u64>),
    /// Plain data at this host offset.
    Data(u64),
    /// A compressed cluster.
    Compressed(CompressedDesc),
}

/// Classifies a standard L2 entry (no extended L2).
pub fn classify_standard(entry: u64, cluster_bits: u32, version: u32) -> Result<Mapping> {
    if entry & COMPRESSED != 0 {
        return Ok(Mapping::Compressed(CompressedDesc::decode(
            entry,
            cluster_bits,
        )));
    }
    let host = entry & OFFSET_MASK;
    if entry & ZERO != 0 && version >= 3 {
        return Ok(Mapping::Zero((host != 0).then_some(host)));
    }
    if host == 0 {
        // Offset 0 is unallocated even with bit 63 set (QEMU's check and
        // reads treat it so without an external data file).
        return Ok(Mapping::Unallocated);
    }
    check_aligned(host, cluster_bits)?;
    Ok(Mapping::Data(host))
}

/// Classifies subcluster `sc` of an extended L2 entry.
pub fn classify_extended(entry: u64, bitmap: u64, sc: u32, cluster_bits: u32) -> Result<Mapping> {
    if entry & COMPRESSED != 0 {
        return Ok(Mapping::Compressed(CompressedDesc::decode(
            entry,
            cluster_bits,
        )));
    }
    let host = entry & OFFSET_MASK;
    if bitmap & (1 << sc) != 0 {
        if host == 0 {
            return Err(Error::corrupt(
                "Allocated subcluster with host offset 0 in an extended L2 entry",
            ));
        }
        check_aligned(host, cluster_bits)?;
        return Ok(Mapping::Data(host + ((sc as u64) << (cluster_bits - 5))));
    }
    if bitmap & (1 << (sc + 32)) != 0 {
        return Ok(Mapping::Zero(None));
    }
    Ok(Mapping::Unallocated)
}

fn check_aligned(host: u64, cluster_bits: u32) -> Result<()> {
    if host & ((1 << cluster_bits) - 1) != 0 {
        return Err(Error::corrupt(format!(
            "Cluster allocation offset {host:#x} unaligned"
        )));
    }
    Ok(())
}

struct CachedTable {
    offset: u64,
    words: Vec<u64>,
    stamp: u64,
}

/// A small LRU cache of L2 tables, write-through: callers change an entry
/// with [`L2Cache::set`] and the bytes go to the file at once.
pub struct L2Cache {
    cluster_bits: u32,
    capacity: usize,
    tables: Vec<CachedTable>,
    clock: u64,
}

impl L2Cache {
    /// A cache holding up to ~16 MiB of tables (at least 4).
    pub fn new(cluster_bits: u32) -> L2Cache {
        let capacity = ((16usize << 20) >> cluster_bits).max(4);
        L2Cache {
            cluster_bits,
            capacity,
            tables: Vec::new(),
            clock: 0,
        }
    }

    /// Forgets every cached table.
    pub fn clear(&mut self) {
        self.tables.clear();
    }

    /// Forgets one table (freed or rewritten).
    pub fn forget(&mut self, offset: u64) {
        self.tables.retain(|t| t.offset != offset);
    }

    fn slot(&mut self, file: &ImageFile, offset: u64) -> Result<usize> {
        self.clock += 1;
        if let Some(i) = self.tables.iter().position(|t| t.offset == offset) {
            self.tables[i].stamp = self.clock;
            return Ok(i);
        }
        if offset == 0 || offset & ((1 << self.cluster_bits) - 1) != 0 {
            return Err(Error::corrupt(format!(
                "L2 table offset {offset:#x} unaligned or zero"
            )));
        }
        let mut raw = vec![0u8; 1 << self.cluster_bits];
        file.read_at(&mut raw, offset)?;
        let words = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().expect("chunks_exact(8) yields 8 bytes")))
            .collect();
        let t = CachedTable {
            offset,
            words,
            stamp: self.clock,
        };
        if self.tables.len() < self.capacity {
            self.tables.push(t);
            return Ok(self.tables.len() - 1);
        }
        let victim = self
            .tables
            .iter()
            .enumerate()
            .min_by_key(|(_, t)| t.stamp)
            .map(|(i, _)| i)
            .expect("cache is full, so it has a least recently used entry");
        self.tables[victim] = t;
        Ok(victim)
    }

    /// The words of the table at `offset` (loading it if needed).
    pub fn table(&mut self, file: &ImageFile, offset: u64) -> Result<&[u64]> {
        let i = self.slot(file, offset)?;
        Ok(&self.tables[i].words)
    }

    /// Installs a table's content without reading it (new or copied table).
    pub fn install(&mut self, offset: u64, words: Vec<u64>) {
        self.forget(offset);
        self.clock += 1;
        if self.tables.len() >= self.capacity {
            if let Some(v) = self
                .tables
                .iter()
                .enumerate()
                .min_by_key(|(_, t)| t.stamp)
                .map(|(i, _)| i)
            {
                self.tables.remove(v);
            }
        }
        self.tables.push(CachedTable {
            offset,
            words,
            stamp: self.clock,
        });
    }

    /// Sets words `[first, first+vals.len())` of a table and writes them.
    pub fn set(&mut self, file: &ImageFile, offset: u64, first: usize, vals: &[u64]) -> Result<()> {
        let i = self.slot(file, offset)?;
        let t = &mut self.tables[i];
        t.words[first..first + vals.len()].copy_from_slice(vals);
        let mut raw = Vec::with_capacity(vals.len() * 8);
        for v in vals {
            raw.extend_from_slice(&v.to_be_bytes());
        }
        file.write_at(&raw, offset + first as u64 * 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_descriptor_matches_qemu_layout() {
        // Observed in an image qemu-img convert -c wrote (64k clusters):
        // entry 0x4980000000054c91 = offset 0x54c91, 38 extra sectors.
        let d = CompressedDesc::decode(0x4980_0000_0005_4c91, 16);
        assert_eq!(d.offset, 0x54c91);
        assert_eq!(d.extra_sectors, 38);
        assert_eq!(
            CompressedDesc::encode(0x50000, 19601, 16),
            0x4980_0000_0005_0000
        );
        let d = CompressedDesc::decode(CompressedDesc::encode(0x50000, 19601, 16), 16);
        assert_eq!(d.clusters(16), (5, 1));
    }

    #[test]
    fn classifies_entries() {
        assert_eq!(classify_standard(0, 16, 3).ok(), Some(Mapping::Unallocated));
        assert_eq!(classify_standard(1, 16, 3).ok(), Some(Mapping::Zero(None)));
        assert_eq!(
            classify_standard(COPIED | 0x50000 | 1, 16, 3).ok(),
            Some(Mapping::Zero(Some(0x50000)))
        );
        assert_eq!(
            classify_standard(COPIED | 0x50000, 16, 3).ok(),
            Some(Mapping::Data(0x50000))
        );
        assert!(classify_standard(COPIED | 0x50200, 16, 3).is_err());
        assert_eq!(
            classify_standard(COPIED, 16, 3).ok(),
            Some(Mapping::Unallocated)
        );
        // Extended: subcluster 1 allocated, 2 zero, 3 unallocated.
        let bm = (1 << 1) | (1 << (32 + 2));
        assert_eq!(
            classify_extended(0x50000, bm, 1, 16).ok(),
            Some(Mapping::Data(0x50000 + 2048))
        );
        assert_eq!(
            classify_extended(0x50000, bm, 2, 16).ok(),
            Some(Mapping::Zero(None))
        );
        assert_eq!(
            classify_extended(0x50000, bm, 3, 16).ok(),
            Some(Mapping::Unallocated)
        );
    }
}
