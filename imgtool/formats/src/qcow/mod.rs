//! The qcow (version 1) image format: QEMU's original copy-on-write format,
//! following the published qcow v1 layout (a 48-byte big-endian header, a
//! one-level L1 table of L2 table offsets, L2 tables of cluster offsets,
//! bit 63 marking a compressed cluster whose byte length sits in the
//! `cluster_bits` bits below it) and the behaviour of the real qemu-img 10,
//! observed by running it.
//!
//! There are no refcounts: clusters are appended at the end of the file
//! (rounded up to a cluster; compressed data to a sector), so crash safety
//! comes only from write ordering. A new L2 table is written zeroed before the
//! L1 entry that points to it, and cluster data before the L2 entry, so a
//! process killed at any point leaves at worst unreferenced space at the end
//! of the file, never an entry pointing at garbage.

mod compress;
mod crypt;
mod header;

#[cfg(test)]
mod tests;

use std::path::Path;

use crate::driver::{
    check_range, read_backing, Alloc, BlockDriver, BlockStatus, Compressor, CreateOpts, OpenOpts,
    OptDesc, OptKind,
};
use crate::error::{Error, Result};
use crate::file::{ImageFile, Prealloc};
use crate::{FormatOps, FormattingOpt, Measure};

pub use compress::{compress_cluster, decompress_cluster, QcowCompressor};
pub use crypt::SectorCipher;
pub use header::{Header, CRYPT_AES, CRYPT_NONE, HEADER_SIZE, MAGIC};

/// Creation options, in the order `qemu-img create -f qcow -o help` lists
/// them.
pub const CREATE_OPTS: &[OptDesc] = &[
    OptDesc {
        name: "backing_file",
        kind: OptKind::Str,
        help: "File name of a base image",
    },
    OptDesc {
        name: "backing_fmt",
        kind: OptKind::Str,
        help: "Format of the backing image",
    },
    OptDesc {
        name: "encrypt.format",
        kind: OptKind::Str,
        help: "Encrypt the image, format choices: 'aes'",
    },
    OptDesc {
        name: "encrypt.key-secret",
        kind: OptKind::Str,
        help: "ID of the secret that provides the AES encryption key",
    },
    OptDesc {
        name: "encryption",
        kind: OptKind::Bool,
        help: "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)",
    },
    OptDesc {
        name: "size",
        kind: OptKind::Size,
        help: "Virtual disk size",
    },
];

/// The registry entry of the format (see [`crate::formats`]).
pub const FORMAT: FormatOps = FormatOps {
    name: "qcow",
    create_opts: CREATE_OPTS,
    amend_opts: &[],
    create,
    open: open_boxed,
    probe,
    measure: Some(measure),
    supports_backing: true,
    // The order of the real "Formatting 'x', fmt=qcow ..." line.
    formatting: &[
        FormattingOpt {
            name: "size",
            default: Some("0"),
            size: true,
        },
        FormattingOpt {
            name: "backing_file",
            default: None,
            size: false,
        },
        FormattingOpt {
            name: "backing_fmt",
            default: None,
            size: false,
        },
        FormattingOpt {
            name: "encryption",
            default: None,
            size: false,
        },
        FormattingOpt {
            name: "encrypt.format",
            default: None,
            size: false,
        },
        FormattingOpt {
            name: "encrypt.key-secret",
            default: None,
            size: false,
        },
        FormattingOpt {
            name: "nocow",
            default: None,
            size: false,
        },
        FormattingOpt {
            name: "preallocation",
            default: None,
            size: false,
        },
        FormattingOpt {
            name: "extent_size_hint",
            default: None,
            size: true,
        },
    ],
};

fn open_boxed(file: ImageFile, opts: &OpenOpts) -> Result<Box<dyn BlockDriver>> {
    Ok(Box::new(Qcow::open(file, opts)?))
}

/// The real qemu-img cannot measure for qcow; neither can we.
fn measure(
    _opts: &CreateOpts,
    _size: u64,
    _source: Option<&mut dyn BlockDriver>,
) -> Result<Measure> {
    Err(Error::unsupported(
        "Block driver 'qcow' does not support size measurement",
    ))
}

/// The message QEMU gives when an encrypted image is opened without a key.
pub const NEED_KEY: &str = "Parameter 'encrypt.key-secret' is required for cipher";

/// L2 tables kept in memory (each at most 64 KiB).
const L2_CACHE_TABLES: usize = 32;

/// Bit 63 of an L2 entry: the cluster is compressed.
const COMPRESSED: u64 = 1 << 63;

/// Scores a header for probing: the qcow magic with version 1.
pub fn probe(header: &[u8]) -> u32 {
    if header.len() >= 8 && header[..4] == MAGIC && header[4..8] == 1u32.to_be_bytes() {
        100
    } else {
        0
    }
}

/// What an L2 entry says about one cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mapping {
    /// Not allocated here: read from the backing file or as zeroes.
    Unallocated,
    /// Stored plainly (encrypted if the image is) at this host offset.
    Data(u64),
    /// Stored deflated: `len` bytes at host `offset`.
    Compressed { offset: u64, len: u64 },
}

/// One cached L2 table.
#[derive(Debug)]
struct L2Table {
    offset: u64,
    entries: Vec<u64>,
}

/// An open qcow v1 image.
pub struct Qcow {
    file: ImageFile,
    header: Header,
    /// Virtual size: the header's size rounded down to a sector, as QEMU
    /// reports it.
    size: u64,
    cluster_bits: u32,
    cluster_size: u64,
    l2_bits: u32,
    l1: Vec<u64>,
    /// Most recently used last.
    l2_cache: Vec<L2Table>,
    /// Length of the host file, tracked so allocation and offset checks do
    /// not need a syscall per cluster (this process is the only writer).
    file_len: u64,
    backing: Option<Box<dyn BlockDriver>>,
    backing_name: Option<String>,
    cipher: Option<SectorCipher>,
    /// The last compressed cluster inflated: (host offset, data).
    inflated: Option<(u64, Vec<u8>)>,
}

impl std::fmt::Debug for Qcow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow")
            .field("file", &self.file.path())
            .field("header", &self.header)
            .field("backing_name", &self.backing_name)
            .finish_non_exhaustive()
    }
}

fn be64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i * 8..i * 8 + 8]);
    u64::from_be_bytes(a)
}

fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

impl Qcow {
    /// Opens a qcow image over a host file, validating the header, the L1
    /// table's placement and the backing file name. An encrypted image needs
    /// `opts.key` (QEMU's "Parameter 'encrypt.key-secret' is required for
    /// cipher" otherwise).
    /// With `opts.metadata_only` an encrypted image opens without its key.
    pub fn open(file: ImageFile, opts: &OpenOpts) -> Result<Qcow> {
        Qcow::open_inner(file, opts.key.as_deref(), opts.metadata_only)
    }

    /// Opens an image for metadata queries only, as `qemu-img info` does:
    /// an encrypted image opens without its key, and then every data read
    /// or write fails with the missing-key error.
    pub fn open_without_key(file: ImageFile) -> Result<Qcow> {
        Qcow::open_inner(file, None, true)
    }

    fn open_inner(file: ImageFile, key: Option<&[u8]>, key_optional: bool) -> Result<Qcow> {
        let file_len = file.len()?;
        let mut hbuf = [0u8; HEADER_SIZE];
        let n = file_len.min(HEADER_SIZE as u64) as usize;
        file.read_at(&mut hbuf[..n], 0)?;
        let header = Header::parse(&hbuf[..n])?;
        let path = file.path().display().to_string();

        let l1_bytes = header.l1_bytes();
        let l1_end = header.l1_table_offset.checked_add(l1_bytes);
        if l1_end.is_none_or(|end| end > file_len) {
            return Err(Error::corrupt(format!(
                "{path}: qcow L1 table at offset {} ({} entries) lies beyond the end of the file ({file_len} bytes)",
                header.l1_table_offset, header.l1_size
            )));
        }
        // Bounded by the file length just checked.
        let mut raw = vec![0u8; l1_bytes as usize];
        file.read_at(&mut raw, header.l1_table_offset)?;
        let l1: Vec<u64> = (0..header.l1_size as usize)
            .map(|i| be64_at(&raw, i))
            .collect();

        let mut backing_name = None;
        if header.backing_file_offset != 0 && header.backing_file_size != 0 {
            let len = u64::from(header.backing_file_size);
            let end = header.backing_file_offset.checked_add(len);
            if end.is_none_or(|e| e > file_len) {
                return Err(Error::corrupt(format!(
                    "{path}: qcow backing file name at offset {} ({len} bytes) lies beyond the end of the file ({file_len} bytes)",
                    header.backing_file_offset
                )));
            }
            let mut name = vec![0u8; len as usize];
            file.read_at(&mut name, header.backing_file_offset)?;
            // QEMU handles the name as a C string.
            if let Some(nul) = name.iter().position(|&b| b == 0) {
                name.truncate(nul);
            }
            if !name.is_empty() {
                backing_name = Some(String::from_utf8_lossy(&name).into_owned());
            }
        }

        let cipher = if header.crypt_method == CRYPT_AES {
            match key {
                Some(k) => Some(SectorCipher::new(k)),
                None if key_optional => None,
                None => return Err(Error::NeedKey(NEED_KEY.to_string())),
            }
        } else {
            None
        };

        Ok(Qcow {
            file,
            size: header.size / 512 * 512,
            cluster_bits: header.cluster_bits,
            cluster_size: header.cluster_size(),
            l2_bits: header.l2_bits,
            header,
            l1,
            l2_cache: Vec::new(),
            file_len,
            backing: None,
            backing_name,
            cipher,
            inflated: None,
        })
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Fails when the image is encrypted but was opened without its key.
    fn check_key(&self) -> Result<()> {
        if self.header.crypt_method != CRYPT_NONE && self.cipher.is_none() {
            return Err(Error::NeedKey(NEED_KEY.to_string()));
        }
        Ok(())
    }

    fn l2_len(&self) -> u64 {
        1 << self.l2_bits
    }

    fn l2_bytes(&self) -> u64 {
        self.l2_len() * 8
    }

    fn path(&self) -> String {
        self.file.path().display().to_string()
    }

    /// Index of the L2 table (in `l2_cache`) at `l2_offset`, loading and
    /// validating it if needed. The table ends up most recently used.
    fn load_l2(&mut self, l2_offset: u64) -> Result<usize> {
        if let Some(i) = self.l2_cache.iter().position(|t| t.offset == l2_offset) {
            let t = self.l2_cache.remove(i);
            self.l2_cache.push(t);
            return Ok(self.l2_cache.len() - 1);
        }
        let bytes = self.l2_bytes();
        if !l2_offset.is_multiple_of(self.cluster_size)
            || l2_offset
                .checked_add(bytes)
                .is_none_or(|end| end > self.file_len)
        {
            return Err(Error::corrupt(format!(
                "{}: qcow L2 table offset {l2_offset:#x} is not cluster aligned or lies beyond the end of the file ({} bytes)",
                self.path(),
                self.file_len
            )));
        }
        let mut raw = vec![0u8; bytes as usize];
        self.file.read_at(&mut raw, l2_offset)?;
        let entries = (0..self.l2_len() as usize)
            .map(|i| be64_at(&raw, i))
            .collect();
        if self.l2_cache.len() >= L2_CACHE_TABLES {
            self.l2_cache.remove(0);
        }
        self.l2_cache.push(L2Table {
            offset: l2_offset,
            entries,
        });
        Ok(self.l2_cache.len() - 1)
    }

    /// The L1 entry covering virtual cluster `c`.
    fn l1_entry(&self, c: u64) -> Result<u64> {
        let i = c >> self.l2_bits;
        usize::try_from(i)
            .ok()
            .and_then(|i| self.l1.get(i).copied())
            .ok_or_else(|| {
                Error::corrupt(format!(
                    "{}: virtual cluster {c} lies outside the qcow L1 table",
                    self.path()
                ))
            })
    }

    /// The raw L2 entry of virtual cluster `c` (0 when no L2 table).
    fn l2_entry(&mut self, c: u64) -> Result<u64> {
        let l2 = self.l1_entry(c)?;
        if l2 == 0 {
            return Ok(0);
        }
        let t = self.load_l2(l2)?;
        let idx = (c & (self.l2_len() - 1)) as usize;
        Ok(self.l2_cache[t].entries[idx])
    }

    /// Decodes and validates an L2 entry against the file.
    fn decode(&self, entry: u64) -> Result<Mapping> {
        if entry == 0 {
            return Ok(Mapping::Unallocated);
        }
        let path = || self.path();
        if entry & COMPRESSED != 0 {
            let shift = 63 - self.cluster_bits;
            let offset = entry & ((1u64 << shift) - 1);
            let len = (entry & !COMPRESSED) >> shift;
            if len == 0 || offset.checked_add(len).is_none_or(|e| e > self.file_len) {
                return Err(Error::corrupt(format!(
                    "{}: qcow compressed cluster at offset {offset:#x} ({len} bytes) lies beyond the end of the file ({} bytes)",
                    path(),
                    self.file_len
                )));
            }
            return Ok(Mapping::Compressed { offset, len });
        }
        if !entry.is_multiple_of(self.cluster_size)
            || entry
                .checked_add(self.cluster_size)
                .is_none_or(|e| e > self.file_len)
        {
            return Err(Error::corrupt(format!(
                "{}: qcow data cluster offset {entry:#x} is not cluster aligned or lies beyond the end of the file ({} bytes)",
                path(),
                self.file_len
            )));
        }
        Ok(Mapping::Data(entry))
    }

    fn mapping(&mut self, c: u64) -> Result<Mapping> {
        let e = self.l2_entry(c)?;
        self.decode(e)
    }

    /// Reads `buf` from plain (possibly encrypted) data at `host`, which
    /// holds virtual offset `voff`.
    fn read_data(&self, host: u64, voff: u64, buf: &mut [u8]) -> Result<()> {
        let Some(cipher) = &self.cipher else {
            return self.file.read_at(buf, host);
        };
        // Whole sectors around the range; clusters are whole sectors, so
        // the widened range stays inside the same contiguous clusters.
        let head = voff % 512;
        let total = round_up(head + buf.len() as u64, 512);
        let mut tmp = vec![0u8; total as usize];
        self.file.read_at(&mut tmp, host - head)?;
        cipher.decrypt((voff - head) / 512, &mut tmp)?;
        buf.copy_from_slice(&tmp[head as usize..head as usize + buf.len()]);
        Ok(())
    }

    /// Writes `data` over plain data already allocated at `host` (virtual
    /// offset `voff`), encrypting when needed.
    fn write_data(&self, host: u64, voff: u64, data: &[u8]) -> Result<()> {
        let Some(cipher) = &self.cipher else {
            return self.file.write_at(data, host);
        };
        let head = voff % 512;
        let total = round_up(head + data.len() as u64, 512);
        let mut tmp = vec![0u8; total as usize];
        if head != 0 || total != data.len() as u64 {
            self.file.read_at(&mut tmp, host - head)?;
            cipher.decrypt((voff - head) / 512, &mut tmp)?;
        }
        tmp[head as usize..head as usize + data.len()].copy_from_slice(data);
        cipher.encrypt((voff - head) / 512, &mut tmp)?;
        self.file.write_at(&tmp, host - head)
    }

    /// The whole inflated cluster stored compressed at `offset`.
    fn inflate(&mut self, offset: u64, len: u64) -> Result<&[u8]> {
        let cached = matches!(&self.inflated, Some((o, _)) if *o == offset);
        if !cached {
            // `len` < cluster size: it came from a field of cluster_bits bits.
            let mut z = vec![0u8; len as usize];
            self.file.read_at(&mut z, offset)?;
            let mut out = vec![0u8; self.cluster_size as usize];
            decompress_cluster(&z, &mut out, offset)?;
            self.inflated = Some((offset, out));
        }
        match &self.inflated {
            Some((_, d)) => Ok(d),
            None => Err(Error::corrupt("qcow: inflated cluster cache lost")),
        }
    }

    /// The current contents of virtual cluster `c` as a whole cluster (from
    /// this layer if compressed, else from the backing chain), for
    /// copy-on-write before a partial write.
    fn cluster_base(&mut self, c: u64, m: Mapping) -> Result<Vec<u8>> {
        match m {
            Mapping::Compressed { offset, len } => Ok(self.inflate(offset, len)?.to_vec()),
            _ => {
                let mut buf = vec![0u8; self.cluster_size as usize];
                let start = c << self.cluster_bits;
                let n = (self.size.saturating_sub(start)).min(self.cluster_size) as usize;
                read_backing(self.backing.as_deref_mut(), start, &mut buf[..n])?;
                Ok(buf)
            }
        }
    }

    fn writable(&self) -> Result<()> {
        if self.file.writable() {
            Ok(())
        } else {
            Err(Error::ReadOnly)
        }
    }

    /// Where the next cluster-aligned allocation goes.
    fn next_cluster(&self) -> u64 {
        round_up(self.file_len, self.cluster_size)
    }

    /// Makes sure the L1 entry for virtual cluster `c` points at an L2
    /// table, allocating a zeroed one at the end of the file (written before
    /// the L1 entry). Returns the table's offset.
    fn ensure_l2(&mut self, c: u64) -> Result<u64> {
        let cur = self.l1_entry(c)?;
        if cur != 0 {
            self.load_l2(cur)?;
            return Ok(cur);
        }
        let off = self.next_cluster();
        let bytes = self.l2_bytes();
        self.file.write_zeroes(off, bytes)?;
        self.file_len = self.file_len.max(off + bytes);
        let i = (c >> self.l2_bits) as usize;
        let at = self.header.l1_table_offset + 8 * i as u64;
        self.file.write_at(&off.to_be_bytes(), at)?;
        self.l1[i] = off;
        Ok(off)
    }

    /// Writes L2 entries `[first, first+values.len())` of the table at
    /// `l2_offset`, on disk and in the cache.
    fn set_l2_entries(&mut self, l2_offset: u64, first: usize, values: &[u64]) -> Result<()> {
        // Loading validates the table's offset before anything is written.
        let t = self.load_l2(l2_offset)?;
        let mut raw = Vec::with_capacity(values.len() * 8);
        for v in values {
            raw.extend_from_slice(&v.to_be_bytes());
        }
        self.file.write_at(&raw, l2_offset + 8 * first as u64)?;
        self.l2_cache[t].entries[first..first + values.len()].copy_from_slice(values);
        Ok(())
    }

    /// Writes `buf` at `offset`, all within the clusters of one L2 table.
    fn write_segment(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        let cs = self.cluster_size;
        let first_c = offset >> self.cluster_bits;
        let l2_offset = self.ensure_l2(first_c)?;
        let first_idx = (first_c & (self.l2_len() - 1)) as usize;
        let alloc_start = self.next_cluster();
        // New clusters, contiguous from `alloc_start`, and their L2 values.
        let mut new_data: Vec<u8> = Vec::new();
        let mut l2_values: Vec<u64> = Vec::new();
        let mut done = 0usize;
        while done < buf.len() {
            let voff = offset + done as u64;
            let c = voff >> self.cluster_bits;
            let in_off = voff & (cs - 1);
            let n = ((cs - in_off) as usize).min(buf.len() - done);
            let chunk = &buf[done..done + n];
            let entry = self.l2_entry(c)?;
            let m = self.decode(entry)?;
            let value = match m {
                Mapping::Data(host) => {
                    self.write_data(host + in_off, voff, chunk)?;
                    entry
                }
                _ => {
                    let mut cluster = if n as u64 == cs {
                        chunk.to_vec()
                    } else {
                        let mut base = self.cluster_base(c, m)?;
                        base[in_off as usize..in_off as usize + n].copy_from_slice(chunk);
                        base
                    };
                    if let Some(cipher) = &self.cipher {
                        cipher.encrypt((c << self.cluster_bits) / 512, &mut cluster)?;
                    }
                    let host = alloc_start + new_data.len() as u64;
                    new_data.extend_from_slice(&cluster);
                    host
                }
            };
            l2_values.push(value);
            done += n;
        }
        if !new_data.is_empty() {
            // Data first, then the entries that point at it.
            self.file.write_at(&new_data, alloc_start)?;
            self.file_len = self.file_len.max(alloc_start + new_data.len() as u64);
        }
        let t = self.load_l2(l2_offset)?;
        let changed = l2_values
            .iter()
            .enumerate()
            .any(|(i, v)| self.l2_cache[t].entries[first_idx + i] != *v);
        if changed {
            self.set_l2_entries(l2_offset, first_idx, &l2_values)?;
        }
        Ok(())
    }

    /// Bytes from `offset` to the end of its L2 table's coverage.
    fn segment_len(&self, offset: u64) -> u64 {
        let span = 1u64 << (self.cluster_bits + self.l2_bits);
        span - (offset & (span - 1))
    }

    /// Deallocates whole cluster `c` (its L2 entry becomes 0; the space is
    /// left unreferenced, as qcow has no free-space tracking).
    fn deallocate(&mut self, c: u64) -> Result<()> {
        let l2 = self.l1_entry(c)?;
        if l2 == 0 {
            return Ok(());
        }
        let idx = (c & (self.l2_len() - 1)) as usize;
        self.set_l2_entries(l2, idx, &[0])
    }

    /// True if reading unallocated cluster `c` would give zeroes without
    /// consulting data (no backing image covers it).
    fn backing_covers(&self, c: u64) -> bool {
        let start = c << self.cluster_bits;
        match self.backing.as_deref() {
            Some(b) => start < b.size(),
            None => false,
        }
    }

    /// Creates a qcow image as `qemu-img create -f qcow` does, byte for byte.
    pub fn create(path: &Path, size: u64, opts: &CreateOpts) -> Result<()> {
        create(path, size, opts)
    }
}

/// Creates a qcow image. Checks happen in the real qemu-img's order: option
/// syntax before the file is created; size, preallocation and encryption
/// after (the real one leaves an empty file behind then, and so do we).
pub fn create(path: &Path, size: u64, opts: &CreateOpts) -> Result<()> {
    let prealloc = opts.prealloc()?;
    let encryption = opts.get_bool("encryption")?;
    let format = opts.get("encrypt.format");
    if encryption == Some(true) && format.is_some() {
        return Err(Error::invalid(
            "'encrypt.format' and its alias 'encryption' can't be used at the same time",
        ));
    }
    let backing = opts.get("backing_file");
    if backing == Some("") {
        return Err(Error::invalid(
            "Expected backing file name, got empty string",
        ));
    }
    let file = ImageFile::create(path)?;
    if prealloc == Prealloc::Metadata {
        return Err(Error::invalid("Unsupported preallocation mode: metadata"));
    }
    let size = round_up(size, 512);
    if size == 0 {
        return Err(Error::invalid(
            "Image size is too small, cannot be zero length",
        ));
    }
    let crypt = match (encryption, format) {
        (_, Some("aes")) | (Some(true), None) => CRYPT_AES,
        (_, Some(_)) => return Err(Error::invalid("Unsupported encryption format")),
        _ => {
            if opts.get("encrypt.key-secret").is_some() {
                return Err(Error::invalid("Parameter 'encrypt.format' is missing"));
            }
            CRYPT_NONE
        }
    };
    if crypt == CRYPT_AES && opts.get("encrypt.key-secret").is_none() && opts.key.is_none() {
        return Err(Error::invalid(NEED_KEY));
    }
    let header = Header::new_image(size, backing, crypt)?;
    let mut head = header.to_bytes().to_vec();
    if let Some(b) = backing {
        head.extend_from_slice(b.as_bytes());
    }
    head.resize(header.l1_table_offset as usize, 0);
    file.write_at(&head, 0)?;
    // The L1 table is written out as zeroes, rounded up to a sector.
    file.write_zeroes(header.l1_table_offset, round_up(header.l1_bytes(), 512))?;
    file.flush()
}

impl BlockDriver for Qcow {
    fn format_name(&self) -> &'static str {
        "qcow"
    }

    fn file(&self) -> &ImageFile {
        &self.file
    }

    fn file_mut(&mut self) -> &mut ImageFile {
        &mut self.file
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn cluster_size(&self) -> Option<u64> {
        Some(self.cluster_size)
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(offset, buf.len() as u64, self.size)?;
        self.check_key()?;
        let cs = self.cluster_size;
        let mut done = 0usize;
        while done < buf.len() {
            let voff = offset + done as u64;
            let c = voff >> self.cluster_bits;
            let in_off = voff & (cs - 1);
            let n = ((cs - in_off) as usize).min(buf.len() - done);
            match self.mapping(c)? {
                Mapping::Unallocated => {
                    // Merge a run of unallocated clusters into one backing read.
                    let mut run = n;
                    while done + run < buf.len()
                        && self.mapping(c + (run as u64 + in_off) / cs)? == Mapping::Unallocated
                    {
                        run += (cs as usize).min(buf.len() - done - run);
                    }
                    read_backing(
                        self.backing.as_deref_mut(),
                        voff,
                        &mut buf[done..done + run],
                    )?;
                    done += run;
                }
                Mapping::Data(host) => {
                    // Merge clusters that are contiguous on the host too.
                    let mut run = n;
                    while done + run < buf.len() {
                        let k = (run as u64 + in_off) / cs;
                        if self.mapping(c + k)? != Mapping::Data(host + k * cs) {
                            break;
                        }
                        run += (cs as usize).min(buf.len() - done - run);
                    }
                    self.read_data(host + in_off, voff, &mut buf[done..done + run])?;
                    done += run;
                }
                Mapping::Compressed { offset: zoff, len } => {
                    let data = self.inflate(zoff, len)?;
                    buf[done..done + n]
                        .copy_from_slice(&data[in_off as usize..in_off as usize + n]);
                    done += n;
                }
            }
        }
        Ok(())
    }

    fn write(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        check_range(offset, buf.len() as u64, self.size)?;
        self.check_key()?;
        self.writable()?;
        let mut done = 0usize;
        while done < buf.len() {
            let voff = offset + done as u64;
            let n = (self.segment_len(voff) as usize).min(buf.len() - done);
            self.write_segment(voff, &buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, may_unmap: bool) -> Result<()> {
        check_range(offset, len, self.size)?;
        self.check_key()?;
        self.writable()?;
        let cs = self.cluster_size;
        let end = offset + len;
        let mut off = offset;
        // A pending run of bytes that must be written as zero data.
        let mut run_start = off;
        let zeroes = vec![0u8; (len.min(1 << 20)) as usize];
        let flush_run = |q: &mut Qcow, from: u64, to: u64| -> Result<()> {
            let mut p = from;
            while p < to {
                let n = (to - p).min(zeroes.len() as u64) as usize;
                q.write(p, &zeroes[..n])?;
                p += n as u64;
            }
            Ok(())
        };
        while off < end {
            let c = off >> self.cluster_bits;
            let in_off = off & (cs - 1);
            let n = (cs - in_off).min(end - off);
            let m = self.mapping(c)?;
            let whole = in_off == 0 && n == cs;
            // Unallocated without backing data already reads as zeroes;
            // deallocating reads as zeroes only without a backing file.
            let unmap = m != Mapping::Unallocated && whole && may_unmap && self.backing.is_none();
            if unmap || (m == Mapping::Unallocated && !self.backing_covers(c)) {
                flush_run(self, run_start, off)?;
                if unmap {
                    self.deallocate(c)?;
                }
                run_start = off + n;
            }
            off += n;
        }
        flush_run(self, run_start, end)
    }

    fn compressor(&self) -> Option<Box<dyn Compressor>> {
        if self.cipher.is_some() || self.header.crypt_method != CRYPT_NONE {
            return None;
        }
        Some(Box::new(QcowCompressor {
            cluster_size: self.cluster_size as usize,
        }))
    }

    fn write_compressed(&mut self, offset: u64, compressed: &[u8]) -> Result<()> {
        self.writable()?;
        if self.header.crypt_method != CRYPT_NONE {
            return Err(Error::unsupported(
                "Compression and encryption not supported at the same time",
            ));
        }
        let cs = self.cluster_size;
        if !offset.is_multiple_of(cs) || offset >= self.size {
            return Err(Error::invalid(format!(
                "qcow: compressed write at offset {offset} is not at a cluster boundary inside the disk"
            )));
        }
        let len = compressed.len() as u64;
        if len == 0 || len >= cs {
            return Err(Error::invalid(format!(
                "qcow: compressed cluster of {len} bytes does not fit a {cs}-byte cluster"
            )));
        }
        let c = offset >> self.cluster_bits;
        let l2 = self.ensure_l2(c)?;
        let host = round_up(self.file_len, 512);
        let shift = 63 - self.cluster_bits;
        if host >= 1 << shift {
            return Err(Error::unsupported(
                "qcow: image file too large for a compressed cluster offset",
            ));
        }
        self.file.write_at(compressed, host)?;
        self.file_len = self.file_len.max(host + len);
        let entry = COMPRESSED | (len << shift) | host;
        let idx = (c & (self.l2_len() - 1)) as usize;
        self.set_l2_entries(l2, idx, &[entry])
    }

    fn flush(&mut self) -> Result<()> {
        self.file.flush()
    }

    fn block_status(&mut self, offset: u64, max_len: u64) -> Result<BlockStatus> {
        let max_len = max_len.min(self.size.saturating_sub(offset));
        if max_len == 0 {
            return Err(Error::OutOfRange {
                offset,
                len: 0,
                size: self.size,
            });
        }
        let cs = self.cluster_size;
        let end = offset + max_len;
        let c0 = offset >> self.cluster_bits;
        let first = self.mapping(c0)?;
        let mut pos = (c0 + 1) << self.cluster_bits;
        while pos < end {
            let c = pos >> self.cluster_bits;
            if first == Mapping::Unallocated && self.l1_entry(c)? == 0 {
                // A whole missing L2 table is one unallocated run.
                pos = pos.saturating_add(self.segment_len(pos));
                continue;
            }
            let m = self.mapping(c)?;
            let same = match (first, m) {
                (Mapping::Unallocated, Mapping::Unallocated) => true,
                (Mapping::Compressed { .. }, Mapping::Compressed { .. }) => true,
                (Mapping::Data(h0), Mapping::Data(h)) => {
                    h == h0 + (pos - (c0 << self.cluster_bits))
                }
                _ => false,
            };
            if !same {
                break;
            }
            pos += cs;
        }
        let len = pos.min(end) - offset;
        let (alloc, host) = match first {
            Mapping::Unallocated => (Alloc::Unallocated, None),
            Mapping::Compressed { .. } => (Alloc::Compressed, None),
            Mapping::Data(h) => (
                Alloc::Data,
                // Encrypted data is not stored plainly: QEMU shows no offset.
                self.cipher.is_none().then_some(h + (offset & (cs - 1))),
            ),
        };
        Ok(BlockStatus {
            len,
            alloc,
            offset: host,
        })
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
        self.backing_name.clone()
    }

    fn change_backing_file(&mut self, _name: Option<&str>, _fmt: Option<&str>) -> Result<()> {
        // The real qemu-img cannot rewrite a qcow v1 backing name either.
        Err(Error::unsupported("Operation not supported"))
    }

    fn supports_backing(&self) -> bool {
        true
    }

    fn encrypted(&self) -> bool {
        self.header.crypt_method != CRYPT_NONE
    }

    fn resize(&mut self, _new_size: u64, _prealloc: Prealloc, _shrink: bool) -> Result<()> {
        Err(Error::unsupported(
            "Image format driver does not support resize",
        ))
    }

    fn make_empty(&mut self) -> Result<()> {
        self.writable()?;
        let off = self.header.l1_table_offset;
        let bytes = self.header.l1_bytes();
        // Unhook everything first, then drop the space behind the table.
        self.file.write_zeroes(off, bytes)?;
        self.file.flush()?;
        self.l1.fill(0);
        self.l2_cache.clear();
        self.inflated = None;
        let mut keep = off + bytes;
        if self.header.backing_file_offset != 0 {
            keep = keep
                .max(self.header.backing_file_offset + u64::from(self.header.backing_file_size));
        }
        keep = keep.max(HEADER_SIZE as u64);
        self.file.set_len(keep)?;
        self.file_len = keep;
        Ok(())
    }
}
