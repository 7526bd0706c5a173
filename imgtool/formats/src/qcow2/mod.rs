//! The qcow2 image format (QEMU copy-on-write version 2 and 3), following
//! QEMU's `docs/interop/qcow2.rst` and checked byte for byte against the
//! real qemu-img 10.0.2 / qemu-io (clean room: only the spec and the tools'
//! observable behaviour were used).
//!
//! Metadata (L2 tables, refcount blocks) is cached for reading and written
//! through on every change, in the order kill -9 consistency needs:
//! refcounts up before anything points at a cluster, data before the L2
//! entry naming it, refcounts down only after nothing points there. A crash
//! can leak clusters, never corrupt the image.
//!
//! Host clusters are placed where QEMU places them, so images we write are
//! byte-identical to the real tools' for the same operations: `create` (all
//! options), guest writes / zero writes / discards / compressed writes
//! (compared with qemu-io), snapshots, amend, resize, `make_empty` (commit)
//! and backing file changes. The observed rules: first-fit from a moving
//! free index; new clusters of a request continue right after the previous
//! cluster of the same request when free there; clusters freed by a request
//! are released at its end; a missing refcount block goes to the next free
//! cluster; a growing refcount table moves to a self-describing area past
//! the clusters its old blocks cover.
//!
//! Split by concern: `header` (cluster 0), `cluster` (L1/L2 entries and the
//! L2 cache), `refcount` (refcounts and allocation), `io` (read/write
//! paths), `compress`, `snapshot`, `check`, `create` (create, measure,
//! amend, resize).

pub mod check;
pub mod cluster;
pub mod compress;
pub mod create;
pub mod header;
mod io;
pub mod refcount;
pub mod snapshot;

#[cfg(test)]
mod interop_tests;

use crate::driver::{
    BlockDriver, BlockStatus, CheckReport, Compressor, CreateOpts, FixMode, OpenOpts, SnapshotInfo,
};
use crate::error::{Error, Result};
use crate::file::{ImageFile, Prealloc};
use crate::value::Value;

use cluster::{L2Cache, OFFSET_MASK};
use compress::{ClusterCompressor, CompressionType};
use header::Header;
use refcount::Refcounts;
use snapshot::Snapshot;

pub use create::{create, measure, CREATE_OPTS, FORMATTING};

/// QEMU's limit on the L1 table: 32 MiB.
pub const MAX_L1_BYTES: u64 = 32 << 20;

/// Scores a header for probing: qcow2 is magic `QFI\xfb` with version 2 or
/// 3 (version 1 is the older qcow format).
pub fn probe(buf: &[u8]) -> u32 {
    if buf.len() >= 8 && buf[..4] == header::MAGIC.to_be_bytes() {
        let v = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        if v == 2 || v == 3 {
            return 100;
        }
    }
    0
}

/// Opens a qcow2 image (the registry's `open`).
pub fn open(file: ImageFile, opts: &OpenOpts) -> Result<Box<dyn BlockDriver>> {
    Ok(Box::new(Qcow2::open(file, opts)?))
}

/// An open qcow2 image.
pub struct Qcow2 {
    file: ImageFile,
    hdr: Header,
    cluster_bits: u32,
    /// log2 of L2 entries per table.
    l2_bits: u32,
    extended: bool,
    compression: CompressionType,
    l1: Vec<u64>,
    rc: Refcounts,
    l2c: L2Cache,
    backing: Option<Box<dyn BlockDriver>>,
    snapshots: Vec<Snapshot>,
    /// Where the next compressed cluster may be packed (0 = start a new
    /// host cluster).
    free_byte_offset: u64,
    /// Last decompressed cluster: (L2 descriptor, data).
    decompressed: Option<(u64, Vec<u8>)>,
    /// Header bits that must be cleared before the first change were.
    prepared_for_write: bool,
    /// References the current write request dropped, released at its end.
    pending_release: Vec<io::Held>,
    /// Whether the image looks metadata-preallocated (decided once).
    metadata_prealloc: Option<bool>,
}

impl Qcow2 {
    /// Opens and validates an image.
    pub fn open(file: ImageFile, opts: &OpenOpts) -> Result<Qcow2> {
        let mut first = [0u8; 104];
        file.read_at(&mut first, 0)?;
        let file_len = file.len()?;
        if file_len < 72 {
            return Err(Error::corrupt("qcow2 header too short"));
        }
        // Peek the cluster size to read the whole first cluster.
        let cb = u32::from_be_bytes([first[20], first[21], first[22], first[23]]);
        if probe(&first) == 0 {
            let v = u32::from_be_bytes([first[4], first[5], first[6], first[7]]);
            if first[..4] == header::MAGIC.to_be_bytes() {
                return Err(Error::unsupported(format!("Unsupported qcow2 version {v}")));
            }
            return Err(Error::corrupt("Image is not in qcow2 format"));
        }
        if !(9..=21).contains(&cb) {
            return Err(Error::unsupported(format!(
                "Unsupported cluster size: 2^{cb}"
            )));
        }
        let cs = 1u64 << cb;
        let mut buf = vec![0u8; cs as usize];
        file.read_at(&mut buf, 0)?;
        let hdr = Header::parse(&buf)?;
        if file_len < hdr.header_length as u64 {
            return Err(Error::corrupt("qcow2 header too short"));
        }
        if let Some(msg) = hdr.unknown_incompatible() {
            return Err(Error::unsupported(msg));
        }
        if hdr.incompatible & header::INCOMPAT_DATA_FILE != 0 || hdr.data_file.is_some() {
            return Err(Error::unsupported(
                "qcow2 images with an external data file are not supported",
            ));
        }
        match hdr.crypt_method {
            0 => {}
            // Encrypted images open read-only for their metadata (info,
            // check, map); their data cannot be read or written.
            1 | 2 if !opts.writable => {}
            1 | 2 => {
                return Err(Error::unsupported(
                    "Encrypted qcow2 images (AES or LUKS) are not supported",
                ))
            }
            m => {
                return Err(Error::unsupported(format!(
                    "Unsupported encryption method {m}"
                )))
            }
        }
        if hdr.extended_l2() && cb < 14 {
            return Err(Error::corrupt(
                "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes",
            ));
        }
        let compression = if hdr.incompatible & header::INCOMPAT_COMPRESSION != 0 {
            if hdr.header_length <= 104 || hdr.compression_type == 0 {
                return Err(Error::corrupt(
                    "qcow2: Compression type incompatible feature bit must not be set when compression type is zlib",
                ));
            }
            CompressionType::from_header(hdr.compression_type)?
        } else {
            if hdr.compression_type != 0 {
                return Err(Error::corrupt(
                    "qcow2: Compression type incompatible feature bit must be set for non-zlib compression type",
                ));
            }
            CompressionType::Zlib
        };
        if opts.writable && !opts.repair && hdr.incompatible & header::INCOMPAT_CORRUPT != 0 {
            return Err(Error::corrupt(
                "qcow2: Image is corrupt; cannot be opened read/write",
            ));
        }

        // Refcount table.
        if hdr.refcount_table_offset & (cs - 1) != 0 || hdr.refcount_table_offset == 0 {
            return Err(Error::corrupt("Reference count table offset invalid"));
        }
        let rt_bytes = (hdr.refcount_table_clusters as u64) << cb;
        if rt_bytes > refcount::MAX_REFTABLE_BYTES {
            return Err(Error::corrupt("Reference count table too large"));
        }
        if hdr
            .refcount_table_offset
            .checked_add(rt_bytes)
            .is_none_or(|e| e > 1 << 56)
        {
            return Err(Error::corrupt("Reference count table offset invalid"));
        }

        // L1 table.
        let extended = hdr.extended_l2();
        let l2_bits = if extended { cb - 4 } else { cb - 3 };
        let l1_bytes = hdr.l1_size as u64 * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(Error::corrupt("Active L1 table too large"));
        }
        let span_bits = cb + l2_bits;
        let needed = hdr.size.div_ceil(1u64 << span_bits.min(63));
        if needed > hdr.l1_size as u64 {
            return Err(Error::corrupt("L1 table is too small"));
        }
        if hdr.l1_size > 0
            && (hdr.l1_table_offset & (cs - 1) != 0
                || hdr
                    .l1_table_offset
                    .checked_add(l1_bytes)
                    .is_none_or(|e| e > 1 << 56))
        {
            return Err(Error::corrupt("Active L1 table offset invalid"));
        }
        let mut l1 = vec![0u64; hdr.l1_size as usize];
        if hdr.l1_size > 0 {
            let mut raw = vec![0u8; l1_bytes as usize];
            // Past the end of the file the table reads as zeroes (QEMU
            // opens such truncated images too).
            file.read_at(&mut raw, hdr.l1_table_offset)?;
            for (e, c) in l1.iter_mut().zip(raw.chunks_exact(8)) {
                *e = u64::from_be_bytes(c.try_into().expect("chunks_exact(8) yields 8 bytes"));
            }
        }
        if hdr.snapshots_offset & (cs - 1) != 0 {
            return Err(Error::corrupt("Snapshot table offset invalid"));
        }
        let snapshots = snapshot::read_table(&file, hdr.snapshots_offset, hdr.nb_snapshots, cb)?;
        let rc = Refcounts::load(
            &file,
            cb,
            hdr.refcount_order,
            hdr.refcount_table_offset,
            hdr.refcount_table_clusters,
        )?;
        let mut img = Qcow2 {
            file,
            cluster_bits: cb,
            l2_bits,
            extended,
            compression,
            l1,
            rc,
            l2c: L2Cache::new(cb),
            backing: None,
            snapshots,
            free_byte_offset: 0,
            decompressed: None,
            metadata_prealloc: None,
            prepared_for_write: false,
            pending_release: Vec::new(),
            hdr,
        };
        if opts.writable && opts.repair && img.hdr.incompatible & header::INCOMPAT_DIRTY != 0 {
            // Opened to be checked and repaired: the check itself finds
            // (and with `-r all` rebuilds) stale refcounts, as qemu-img's.
            img.hdr.incompatible &= !header::INCOMPAT_DIRTY;
            img.write_header()?;
        } else if opts.writable && img.hdr.incompatible & header::INCOMPAT_DIRTY != 0 {
            // Refcounts may be stale after a crash with lazy refcounts:
            // rebuild them, then the image is clean again.
            img.check(FixMode {
                leaks: true,
                errors: true,
            })?;
            img.hdr.incompatible &= !header::INCOMPAT_DIRTY;
            img.write_header()?;
        }
        Ok(img)
    }

    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Rewrites cluster 0 from `hdr`.
    fn write_header(&mut self) -> Result<()> {
        self.hdr.refcount_table_offset = self.rc.table_offset;
        self.hdr.refcount_table_clusters = self.rc.table_clusters;
        self.hdr.refcount_order = self.rc.order;
        self.hdr.l1_size = self.l1.len() as u32;
        let mut buf = self.hdr.serialize()?;
        // The rest of cluster 0 is zeroed: stale extensions and fields of
        // a longer previous header must not survive.
        buf.resize(self.cluster_size() as usize, 0);
        self.file.write_at(&buf, 0)?;
        Ok(())
    }

    /// Before the first change: clear autoclear bits we do not maintain
    /// (the spec requires it, e.g. bitmaps become inconsistent).
    fn prepare_write(&mut self) -> Result<()> {
        if self.prepared_for_write {
            return Ok(());
        }
        if !self.file.writable() {
            return Err(Error::ReadOnly);
        }
        self.prepared_for_write = true;
        // Persistent bitmaps stay valid, but the enabled ("auto") ones
        // will not see our writes: mark them in use (inconsistent), as the
        // spec requires of software that does not sync them.
        let keep =
            if self.hdr.autoclear & header::AUTOCLEAR_BITMAPS != 0 && self.mark_bitmaps_in_use()? {
                header::AUTOCLEAR_BITMAPS
            } else {
                0
            };
        if self.hdr.version >= 3 && self.hdr.autoclear & !keep != 0 {
            self.hdr.autoclear &= keep;
            self.file.write_at(&self.hdr.autoclear.to_be_bytes(), 88)?;
        }
        Ok(())
    }

    fn l1_entry_offset(&self, l1i: usize) -> u64 {
        self.l1.get(l1i).map_or(0, |e| e & OFFSET_MASK)
    }

    /// Writes L1 entry `l1i` (memory and file).
    fn set_l1(&mut self, l1i: usize, val: u64) -> Result<()> {
        self.l1[l1i] = val;
        self.file.write_at(
            &val.to_be_bytes(),
            self.hdr.l1_table_offset + l1i as u64 * 8,
        )
    }

    /// Writes the whole L1 table at `offset`.
    fn write_l1_at(&self, l1: &[u64], offset: u64) -> Result<()> {
        let mut raw = Vec::with_capacity(l1.len() * 8);
        for e in l1 {
            raw.extend_from_slice(&e.to_be_bytes());
        }
        self.file.write_at(&raw, offset)
    }

    fn snapshot_index(&self, id_or_name: &str) -> Option<usize> {
        self.snapshots
            .iter()
            .position(|s| s.id == id_or_name)
            .or_else(|| self.snapshots.iter().position(|s| s.name == id_or_name))
    }
}

impl BlockDriver for Qcow2 {
    fn format_name(&self) -> &'static str {
        "qcow2"
    }

    /// Observed from qemu-img: an image looks metadata-preallocated when
    /// the clusters in use (nonzero refcount) are at least the clusters the
    /// host file really allocates (whole clusters of `st_blocks * 512`)
    /// times 10/9 (rounded down), and at least those plus two; the length
    /// of the file plays no part.
    fn map_zeroes_from_host(&mut self) -> bool {
        if let Some(v) = self.metadata_prealloc {
            return v;
        }
        let v = match (self.file.allocated_size(), self.rc.count_used(&self.file)) {
            (Ok(real), Ok(used)) => {
                let real = real >> self.cluster_bits;
                used >= (real * 10 / 9).max(real + 2)
            }
            _ => false,
        };
        self.metadata_prealloc = Some(v);
        v
    }

    fn file(&self) -> &ImageFile {
        &self.file
    }

    fn file_mut(&mut self) -> &mut ImageFile {
        &mut self.file
    }

    fn size(&self) -> u64 {
        self.hdr.size
    }

    fn cluster_size(&self) -> Option<u64> {
        Some(1 << self.cluster_bits)
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        crate::driver::check_range(offset, buf.len() as u64, self.hdr.size)?;
        self.read_at(offset, buf)
    }

    fn write(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        crate::driver::check_range(offset, buf.len() as u64, self.hdr.size)?;
        self.prepare_write()?;
        self.write_at(offset, buf)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, may_unmap: bool) -> Result<()> {
        crate::driver::check_range(offset, len, self.hdr.size)?;
        self.prepare_write()?;
        self.zero_range(offset, len, may_unmap)
    }

    fn discard(&mut self, offset: u64, len: u64) -> Result<()> {
        crate::driver::check_range(offset, len, self.hdr.size)?;
        self.prepare_write()?;
        self.discard_range(offset, len)
    }

    fn compressor(&self) -> Option<Box<dyn Compressor>> {
        Some(Box::new(ClusterCompressor {
            kind: self.compression,
            cluster_size: self.cluster_size() as usize,
        }))
    }

    fn write_compressed(&mut self, offset: u64, compressed: &[u8]) -> Result<()> {
        self.prepare_write()?;
        self.write_compressed_cluster(offset, compressed)
    }

    fn flush(&mut self) -> Result<()> {
        self.file.flush()
    }

    fn block_status(&mut self, offset: u64, max_len: u64) -> Result<BlockStatus> {
        self.status(offset, max_len)
    }

    fn backing(&mut self) -> Option<&mut (dyn BlockDriver + 'static)> {
        self.backing.as_deref_mut()
    }

    fn set_backing(&mut self, backing: Option<Box<dyn BlockDriver>>) {
        self.backing = backing;
    }

    fn take_backing(&mut self) -> Option<Box<dyn BlockDriver>> {
        self.backing.take()
    }

    fn backing_file_name(&self) -> Option<String> {
        self.hdr.backing_file.clone()
    }

    fn backing_format(&self) -> Option<String> {
        self.hdr.backing_format.clone()
    }

    fn change_backing_file(&mut self, name: Option<&str>, fmt: Option<&str>) -> Result<()> {
        self.prepare_write()?;
        let old = self.hdr.clone();
        self.hdr.backing_file = name.map(str::to_string);
        self.hdr.backing_format = if name.is_some() {
            fmt.map(str::to_string)
        } else {
            None
        };
        let fits = self.hdr.clone().serialize();
        if let Err(e) = fits {
            self.hdr = old;
            return Err(e);
        }
        self.write_header()
    }

    fn supports_backing(&self) -> bool {
        true
    }

    fn format_specific(&self) -> Option<Value> {
        let h = &self.hdr;
        let mut v = Value::object();
        v.push("compat", if h.version >= 3 { "1.1" } else { "0.10" });
        v.push("compression-type", self.compression.name());
        if h.version >= 3 {
            v.push(
                "lazy-refcounts",
                h.compatible & header::COMPAT_LAZY_REFCOUNTS != 0,
            );
            if let Some(b) = self.bitmaps_info() {
                v.push("bitmaps", b);
            }
        }
        v.push("refcount-bits", 1u64 << h.refcount_order);
        match h.crypt_method {
            1 => v.push("encrypt", Value::object().with("format", "aes")),
            2 => v.push("encrypt", Value::object().with("format", "luks")),
            _ => {}
        }
        if h.version >= 3 {
            v.push("corrupt", h.incompatible & header::INCOMPAT_CORRUPT != 0);
            v.push("extended-l2", self.extended);
        }
        Some(v)
    }

    fn encrypted(&self) -> bool {
        self.hdr.crypt_method != 0
    }

    fn dirty(&self) -> bool {
        self.hdr.incompatible & header::INCOMPAT_DIRTY != 0
    }

    fn check(&mut self, fix: FixMode) -> Result<CheckReport> {
        let report = check::check(self, fix)?;
        if (fix.leaks || fix.errors)
            && report.corruptions == 0
            && self.hdr.incompatible & header::INCOMPAT_CORRUPT != 0
        {
            // A successful repair clears the corrupt mark.
            self.hdr.incompatible &= !header::INCOMPAT_CORRUPT;
            self.write_header()?;
        }
        Ok(report)
    }

    fn resize(&mut self, new_size: u64, prealloc: Prealloc, shrink: bool) -> Result<()> {
        self.prepare_write()?;
        create::resize(self, new_size, prealloc, shrink)
    }

    fn snapshots(&self) -> Vec<SnapshotInfo> {
        self.snapshots.iter().map(Snapshot::info).collect()
    }

    fn snapshot_create(&mut self, info: &SnapshotInfo) -> Result<()> {
        self.prepare_write()?;
        self.create_snapshot(info)
    }

    fn snapshot_apply(&mut self, id_or_name: &str) -> Result<()> {
        self.prepare_write()?;
        self.apply_snapshot(id_or_name)
    }

    fn snapshot_load_tmp(&mut self, id: &str) -> Result<()> {
        self.load_snapshot_tmp(id)
    }

    fn snapshot_delete(&mut self, id_or_name: &str) -> Result<()> {
        self.prepare_write()?;
        self.delete_snapshot(id_or_name)
    }

    fn make_empty(&mut self) -> Result<()> {
        self.prepare_write()?;
        self.empty_image()
    }

    fn amend(&mut self, opts: &CreateOpts, force: bool) -> Result<()> {
        self.prepare_write()?;
        create::amend(self, opts, force)
    }
}

impl Qcow2 {
    /// The "bitmaps" list for `info`, from the bitmap directory.
    fn bitmaps_info(&self) -> Option<Value> {
        if self.hdr.autoclear & header::AUTOCLEAR_BITMAPS == 0 {
            return None;
        }
        let ext = self.hdr.bitmaps_ext.as_ref()?;
        if ext.len() < 24 {
            return None;
        }
        let nb = u32::from_be_bytes([ext[0], ext[1], ext[2], ext[3]]);
        let size = u64::from_be_bytes(ext[8..16].try_into().ok()?);
        let off = u64::from_be_bytes(ext[16..24].try_into().ok()?);
        if size > 64 << 20 || nb > 65535 {
            return None;
        }
        let mut dir = vec![0u8; size as usize];
        self.file.read_at(&mut dir, off).ok()?;
        let mut list = Vec::new();
        let mut p = 0usize;
        for _ in 0..nb {
            if p + 24 > dir.len() {
                break;
            }
            let flags = u32::from_be_bytes(dir[p + 12..p + 16].try_into().ok()?);
            let gran_bits = dir[p + 17];
            let name_len = u16::from_be_bytes([dir[p + 18], dir[p + 19]]) as usize;
            let extra = u32::from_be_bytes(dir[p + 20..p + 24].try_into().ok()?) as usize;
            let ns = p + 24 + extra;
            let name = String::from_utf8_lossy(dir.get(ns..ns + name_len)?).into_owned();
            let mut fl = Vec::new();
            if flags & 1 != 0 {
                fl.push(Value::from("in-use"));
            }
            if flags & 2 != 0 {
                fl.push(Value::from("auto"));
            }
            let mut b = Value::object();
            b.push("flags", Value::Array(fl));
            b.push("name", name);
            b.push("granularity", 1u64 << gran_bits.min(63));
            list.push(b);
            p = (ns + name_len).div_ceil(8) * 8;
        }
        Some(Value::Array(list))
    }

    /// Sets the in-use flag of every enabled bitmap in the bitmap
    /// directory. Returns false if the directory cannot be handled (then
    /// the bitmaps are dropped by clearing the autoclear bit instead).
    fn mark_bitmaps_in_use(&mut self) -> Result<bool> {
        let Some(ext) = self.hdr.bitmaps_ext.as_ref() else {
            return Ok(false);
        };
        if ext.len() < 24 {
            return Ok(false);
        }
        let nb = u32::from_be_bytes([ext[0], ext[1], ext[2], ext[3]]);
        let size = u64::from_be_bytes(ext[8..16].try_into().expect("8-byte slice"));
        let off = u64::from_be_bytes(ext[16..24].try_into().expect("8-byte slice"));
        if size > 64 << 20 || off.saturating_add(size) > self.file.len()? {
            return Ok(false);
        }
        let mut dir = vec![0u8; size as usize];
        self.file.read_at(&mut dir, off)?;
        let mut p = 0usize;
        let mut changed = false;
        for _ in 0..nb {
            if p + 24 > dir.len() {
                return Ok(false);
            }
            let flags = u32::from_be_bytes(dir[p + 12..p + 16].try_into().expect("4-byte slice"));
            if flags & 2 != 0 && flags & 1 == 0 {
                dir[p + 12..p + 16].copy_from_slice(&(flags | 1).to_be_bytes());
                changed = true;
            }
            let name_len = u16::from_be_bytes([dir[p + 18], dir[p + 19]]) as usize;
            let extra =
                u32::from_be_bytes(dir[p + 20..p + 24].try_into().expect("4-byte slice")) as usize;
            p = (p + 24 + extra + name_len).div_ceil(8) * 8;
        }
        if changed {
            self.file.write_at(&dir, off)?;
        }
        Ok(true)
    }

    /// The header (for tests and check).
    pub fn header(&self) -> &Header {
        &self.hdr
    }

    /// Marks the image corrupt in the header (as QEMU does when it finds
    /// inconsistent metadata while writing).
    fn mark_corrupt(&mut self) {
        if self.hdr.version >= 3 && self.file.writable() {
            self.hdr.incompatible |= header::INCOMPAT_CORRUPT;
            let _ = self.file.write_at(&self.hdr.incompatible.to_be_bytes(), 72);
        }
    }

    /// Refuses host clusters that overlap the fixed metadata (header, L1
    /// table, refcount table, snapshot table): a sign the refcounts are
    /// corrupt. QEMU's overlap check does the same.
    fn check_overlap(&mut self, host: u64, len: u64) -> Result<()> {
        let cs = self.cluster_size();
        let mut regions = vec![
            (0, cs, "qcow2_header"),
            (
                self.hdr.l1_table_offset,
                (self.l1.len() as u64 * 8).div_ceil(cs) * cs,
                "active L1 table",
            ),
            (
                self.rc.table_offset,
                (self.rc.table_clusters as u64) * cs,
                "refcount table",
            ),
        ];
        if self.hdr.nb_snapshots > 0 {
            regions.push((self.hdr.snapshots_offset, cs, "snapshot table"));
        }
        for (start, l, what) in regions {
            if l > 0 && host < start + l && start < host + len {
                self.mark_corrupt();
                return Err(Error::corrupt(format!(
                    "Preventing invalid write on metadata (overlaps with {what}); image marked as corrupt"
                )));
            }
        }
        Ok(())
    }
}
