//! Creating qcow2 images (byte-identical to qemu-img 10.0.2's output for
//! the same options), `measure`, `resize` and `amend`.
//!
//! Layout of a new image, as QEMU lays it out: header in cluster 0, the
//! refcount table in cluster 1, its first refcount block in cluster 2, then
//! the L1 table allocated by the normal allocator; preallocation then
//! allocates L2 tables and data (metadata), or first builds refcount
//! structures for the whole file and places the data right after them
//! (falloc, full).

use std::path::Path;

use super::cluster::{COPIED, OFFSET_MASK};
use super::header::{self, Header};
use super::io::Held;
use super::refcount::{metadata_clusters, Refcounts};
use super::{Qcow2, MAX_L1_BYTES};
use crate::driver::{CreateOpts, FixMode, OpenOpts, OptDesc, OptKind};
use crate::error::{Error, Result};
use crate::file::{ImageFile, Prealloc};
use crate::{BlockDriver, FormattingOpt, Measure, Value};

macro_rules! opt {
    ($name:expr, $kind:ident, $help:expr) => {
        OptDesc {
            name: $name,
            kind: OptKind::$kind,
            help: $help,
        }
    };
}

/// Creation options, in the order `qemu-img create -f qcow2 -o help`
/// lists them.
pub const CREATE_OPTS: &[OptDesc] = &[
    opt!("backing_file", Str, "File name of a base image"),
    opt!("backing_fmt", Str, "Image format of the base image"),
    opt!("cluster_size", Size, "qcow2 cluster size"),
    opt!("compat", Str, "Compatibility level (v2 [0.10] or v3 [1.1])"),
    opt!(
        "compression_type",
        Str,
        "Compression method used for image cluster compression"
    ),
    opt!("data_file", Str, "File name of an external data file"),
    opt!(
        "data_file_raw",
        Bool,
        "The external data file must stay valid as a raw image"
    ),
    opt!(
        "encrypt.cipher-alg",
        Str,
        "Name of encryption cipher algorithm"
    ),
    opt!("encrypt.cipher-mode", Str, "Name of encryption cipher mode"),
    opt!(
        "encrypt.format",
        Str,
        "Encrypt the image, format choices: 'aes', 'luks'"
    ),
    opt!("encrypt.hash-alg", Str, "Name of encryption hash algorithm"),
    opt!(
        "encrypt.iter-time",
        Num,
        "Time to spend in PBKDF in milliseconds"
    ),
    opt!("encrypt.ivgen-alg", Str, "Name of IV generator algorithm"),
    opt!(
        "encrypt.ivgen-hash-alg",
        Str,
        "Name of IV generator hash algorithm"
    ),
    opt!(
        "encrypt.key-secret",
        Str,
        "ID of secret providing qcow AES key or LUKS passphrase"
    ),
    opt!(
        "encryption",
        Bool,
        "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)"
    ),
    opt!("extended_l2", Bool, "Extended L2 tables"),
    opt!("lazy_refcounts", Bool, "Postpone refcount updates"),
    opt!(
        "preallocation",
        Str,
        "Preallocation mode (allowed values: off, metadata, falloc, full)"
    ),
    opt!(
        "refcount_bits",
        Num,
        "Width of a reference count entry in bits"
    ),
    opt!("size", Size, "Virtual disk size"),
];

macro_rules! fmt_opt {
    ($name:expr, $default:expr, $size:expr) => {
        FormattingOpt {
            name: $name,
            default: $default,
            size: $size,
        }
    };
}

/// The "Formatting 'x', fmt=qcow2 ..." line's options, in qemu-img's order.
pub const FORMATTING: &[FormattingOpt] = &[
    fmt_opt!("encryption", None, false),
    fmt_opt!("encrypt.format", None, false),
    fmt_opt!("encrypt.key-secret", None, false),
    fmt_opt!("encrypt.cipher-alg", None, false),
    fmt_opt!("encrypt.cipher-mode", None, false),
    fmt_opt!("encrypt.ivgen-alg", None, false),
    fmt_opt!("encrypt.ivgen-hash-alg", None, false),
    fmt_opt!("encrypt.hash-alg", None, false),
    fmt_opt!("encrypt.iter-time", None, false),
    fmt_opt!("cluster_size", Some("65536"), true),
    fmt_opt!("extended_l2", Some("off"), false),
    fmt_opt!("preallocation", None, false),
    fmt_opt!("compression_type", Some("zlib"), false),
    fmt_opt!("size", Some("0"), true),
    fmt_opt!("compat", None, false),
    fmt_opt!("backing_file", None, false),
    fmt_opt!("backing_fmt", None, false),
    fmt_opt!("data_file", None, false),
    fmt_opt!("data_file_raw", None, false),
    fmt_opt!("lazy_refcounts", Some("off"), false),
    fmt_opt!("refcount_bits", Some("16"), false),
];

/// Validated creation parameters.
#[derive(Clone, Debug)]
pub struct Params {
    pub version: u32,
    pub cluster_bits: u32,
    pub refcount_order: u32,
    pub extended_l2: bool,
    pub lazy_refcounts: bool,
    pub zstd: bool,
    pub prealloc: Prealloc,
    pub backing_file: Option<String>,
    pub backing_fmt: Option<String>,
}

fn parse_version(v: &str) -> Result<u32> {
    match v {
        "0.10" | "v2" => Ok(2),
        "1.1" | "v3" => Ok(3),
        _ => Err(Error::invalid(format!(
            "Parameter 'version' does not accept value '{v}'"
        ))),
    }
}

fn parse_refcount_bits(opts: &CreateOpts) -> Result<Option<u32>> {
    match opts.get_num("refcount_bits")? {
        None => Ok(None),
        Some(b) if b > 0 && b <= 64 && b.is_power_of_two() => Ok(Some(b.trailing_zeros())),
        Some(_) => Err(Error::invalid(
            "Refcount width must be a power of two and may not exceed 64 bits",
        )),
    }
}

/// Parses and validates creation options in QEMU's order of checks.
pub fn parse_params(opts: &CreateOpts) -> Result<Params> {
    if opts.get("encryption").is_some_and(|v| v != "off") || opts.get("encrypt.format").is_some() {
        if opts.get("encrypt.key-secret").is_none() {
            // The real qemu-img's first complaint.
            return Err(Error::invalid(
                "Parameter 'encrypt.key-secret' is required for cipher",
            ));
        }
        return Err(Error::unsupported(
            "Encrypted qcow2 images are not supported by this qemu-img",
        ));
    }
    if opts.get("data_file_raw").is_some_and(|v| v == "on") && opts.get("data_file").is_none() {
        return Err(Error::invalid("data-file-raw requires data-file"));
    }
    if opts.get("data_file").is_some() {
        return Err(Error::unsupported(
            "qcow2 images with an external data file are not supported by this qemu-img",
        ));
    }
    let version = match opts.get("compat") {
        Some(v) => parse_version(v)?,
        None => 3,
    };
    let backing_file = opts.get("backing_file").map(str::to_string);
    let backing_fmt = opts.get("backing_fmt").map(str::to_string);
    if backing_fmt.is_some() && backing_file.is_none() {
        return Err(Error::invalid(
            "Backing format cannot be used without backing file",
        ));
    }
    let cluster_size = opts.get_size("cluster_size")?.unwrap_or(65536);
    if !cluster_size.is_power_of_two() || !(512..=(2 << 20)).contains(&cluster_size) {
        return Err(Error::invalid(
            "Cluster size must be a power of two between 512 and 2048k",
        ));
    }
    let cluster_bits = cluster_size.trailing_zeros();
    let extended_l2 = opts.get_bool("extended_l2")?.unwrap_or(false);
    if extended_l2 {
        if version < 3 {
            return Err(Error::invalid(
                "Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)",
            ));
        }
        if cluster_bits < 14 {
            return Err(Error::invalid(
                "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes",
            ));
        }
    }
    let prealloc = opts.prealloc()?;
    if prealloc != Prealloc::Off && backing_file.is_some() && !extended_l2 {
        return Err(Error::invalid(
            "Backing file and preallocation can only be used at the same time if extended_l2 is on",
        ));
    }
    let lazy_refcounts = opts.get_bool("lazy_refcounts")?.unwrap_or(false);
    if lazy_refcounts && version < 3 {
        return Err(Error::invalid(
            "Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)",
        ));
    }
    let refcount_order = parse_refcount_bits(opts)?.unwrap_or(4);
    if version < 3 && refcount_order != 4 {
        return Err(Error::invalid(
            "Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)",
        ));
    }
    let zstd = match opts.get("compression_type") {
        None | Some("zlib") => false,
        Some("zstd") => true,
        Some(v) => {
            return Err(Error::invalid(format!(
                "Parameter 'compression-type' does not accept value '{v}'"
            )))
        }
    };
    if zstd && version < 3 {
        return Err(Error::invalid(
            "Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)",
        ));
    }
    Ok(Params {
        version,
        cluster_bits,
        refcount_order,
        extended_l2,
        lazy_refcounts,
        zstd,
        prealloc,
        backing_file,
        backing_fmt,
    })
}

/// Entries per L2 table (log2).
fn l2_bits(p: &Params) -> u32 {
    if p.extended_l2 {
        p.cluster_bits - 4
    } else {
        p.cluster_bits - 3
    }
}

/// L1 entries needed for `size` bytes.
fn l1_entries(size: u64, cluster_bits: u32, l2_bits: u32) -> u64 {
    size.div_ceil(1u64 << (cluster_bits + l2_bits))
}

fn too_large() -> Error {
    Error::invalid(
        "The image size is too large for file format 'qcow2' (try using a larger cluster size)",
    )
}

/// Creates a qcow2 image.
pub fn create(path: &Path, size: u64, opts: &CreateOpts) -> Result<()> {
    let p = parse_params(opts)?;
    let size = size.div_ceil(512) * 512;
    let l1 = l1_entries(size, p.cluster_bits, l2_bits(&p));
    if l1 * 8 > MAX_L1_BYTES || size > i64::MAX as u64 {
        return Err(too_large());
    }
    let cb = p.cluster_bits;
    let cs = 1u64 << cb;
    let file = ImageFile::create(path)?;
    // The minimal image: header, refcount table, one refcount block.
    let mut h = Header {
        version: p.version,
        cluster_bits: cb,
        refcount_table_offset: cs,
        refcount_table_clusters: 1,
        refcount_order: p.refcount_order,
        header_length: if p.version >= 3 {
            header::V3_HEADER_LEN
        } else {
            72
        },
        ..Header::default()
    };
    if p.extended_l2 {
        h.incompatible |= header::INCOMPAT_EXTL2;
    }
    if p.zstd {
        h.incompatible |= header::INCOMPAT_COMPRESSION;
        h.compression_type = 1;
    }
    if p.lazy_refcounts {
        h.compatible |= header::COMPAT_LAZY_REFCOUNTS;
    }
    // One write of all three clusters: a header that points at a refcount
    // table not yet written (a kill between two writes) is a corrupt image.
    let c = cs as usize;
    let mut first = h.serialize()?;
    first.resize(3 * c, 0);
    first[c..c + 8].copy_from_slice(&(2 * cs).to_be_bytes());
    for i in 0..3 {
        Refcounts::set_entry(p.refcount_order, &mut first[2 * c..], i, 1);
    }
    file.write_at(&first, 0)?;
    drop(file);

    let file = ImageFile::open(path, true)?;
    let mut img = Qcow2::open(
        file,
        &OpenOpts {
            writable: true,
            ..OpenOpts::default()
        },
    )?;
    img.prepared_for_write = true;
    if size > 0 {
        img.grow_l1(l1 as usize)?;
        img.hdr.size = size;
        img.write_header()?;
    }
    if let Some(name) = p.backing_file.clone() {
        img.hdr.backing_file = Some(name.clone());
        img.hdr.backing_format = p.backing_fmt.clone();
        if let Err(e) = img.write_header() {
            return Err(Error::invalid(format!(
                "Could not assign backing file '{name}' with format '{}': {e}",
                p.backing_fmt.as_deref().unwrap_or("")
            )));
        }
    }
    if p.prealloc != Prealloc::Off {
        img.preallocate(0, size, p.prealloc)?;
    }
    img.file.flush()
}

impl Qcow2 {
    /// Grows the active L1 table to exactly `entries` entries, moving it to
    /// newly allocated clusters.
    pub(super) fn grow_l1(&mut self, entries: usize) -> Result<()> {
        if entries <= self.l1.len() {
            return Ok(());
        }
        if entries as u64 * 8 > MAX_L1_BYTES {
            return Err(too_large());
        }
        let cs = self.cluster_size();
        let nclusters = (entries as u64 * 8).div_ceil(cs);
        let new_off = self.rc.alloc(&self.file, nclusters)? << self.cluster_bits;
        let mut l1 = self.l1.clone();
        l1.resize(entries, 0);
        self.write_l1_at(&l1, new_off)?;
        let old_off = self.hdr.l1_table_offset;
        let old_clusters = (self.l1.len() as u64 * 8).div_ceil(cs);
        // Switch the header to the new table in one write (size + offset).
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&(entries as u32).to_be_bytes());
        b[4..].copy_from_slice(&new_off.to_be_bytes());
        self.file.write_at(&b, 36)?;
        self.hdr.l1_size = entries as u32;
        self.hdr.l1_table_offset = new_off;
        self.l1 = l1;
        if old_clusters > 0 && old_off != 0 {
            self.rc
                .update(&self.file, old_off >> self.cluster_bits, old_clusters, -1)?;
        }
        Ok(())
    }

    /// Preallocates guest range `[start, end)` (cluster aligned start).
    pub(super) fn preallocate(&mut self, start: u64, end: u64, mode: Prealloc) -> Result<()> {
        let cb = self.cluster_bits;
        let cs = self.cluster_size();
        let span = self.span_bits();
        let first_c = start.div_ceil(cs);
        let last_c = end.div_ceil(cs).max(first_c);
        let n_data = last_c - first_c;
        // Data placement: metadata mode allocates per L2 table; falloc and
        // full first build refcount structures for the whole new file and
        // put the data right after them.
        let mut fixed_host: Option<u64> = None;
        if matches!(mode, Prealloc::Falloc | Prealloc::Full) {
            let alloc_start = self.file.len()?.div_ceil(cs);
            let mut new_l2 = 0;
            if n_data > 0 {
                let l1_first = (first_c << cb) >> span;
                let l1_last = ((last_c << cb) - 1) >> span;
                for i in l1_first..=l1_last {
                    if self.l1_entry_offset(i as usize) == 0 {
                        new_l2 += 1;
                    }
                }
            }
            let area = self.refcount_area(alloc_start, n_data + new_l2)?;
            let data_start = alloc_start + area;
            self.rc.update(&self.file, data_start, n_data, 1)?;
            let host = data_start << cb;
            match mode {
                Prealloc::Full => self.file.grow(host + (n_data << cb), Prealloc::Full)?,
                _ => self.file.grow(host + (n_data << cb), Prealloc::Falloc)?,
            }
            fixed_host = Some(host);
        }
        let mask = (1u64 << self.l2_bits) - 1;
        let mut c = first_c;
        let mut data_end = 0;
        while c < last_c {
            let l1i = ((c << cb) >> span) as usize;
            let table_last = ((l1i as u64 + 1) << self.l2_bits).min(last_c);
            let l2off = self.ensure_l2(l1i)?;
            let n = table_last - c;
            let host = match fixed_host {
                Some(h) => h + ((c - first_c) << cb),
                None => self.rc.alloc(&self.file, n)? << cb,
            };
            let mut words = Vec::with_capacity((n as usize) * self.entry_words());
            for i in 0..n {
                words.push((host + (i << cb)) | COPIED);
                if self.extended {
                    words.push(0);
                }
            }
            let first_word = (c & mask) as usize * self.entry_words();
            self.l2c.set(&self.file, l2off, first_word, &words)?;
            let mut this_end = host + (n << cb);
            if self.extended && table_last == last_c && end < (last_c << cb) {
                // QEMU ends the file at the disk's end inside the last cluster.
                let sc = cs / 32;
                this_end -= (last_c << cb) - end.div_ceil(sc) * sc;
            }
            data_end = data_end.max(this_end);
            c = table_last;
        }
        if self.file.len()? < data_end {
            self.file.set_len(data_end)?;
        }
        Ok(())
    }

    /// Builds refcount structures at cluster `start` covering the current
    /// file plus `additional` clusters, with a new refcount table; returns
    /// the area's size in clusters.
    fn refcount_area(&mut self, start: u64, additional: u64) -> Result<u64> {
        let cb = self.cluster_bits;
        let cs = self.cluster_size();
        let order = self.rc.order;
        let per_block = 1u64 << self.rc.block_bits();
        let (_, mut blocks) = metadata_clusters(start + additional, cb, order, false);
        // Fixed point including the area itself.
        let (mut table, mut area_blocks);
        loop {
            table = (blocks * 8).div_ceil(cs);
            area_blocks = (0..blocks as usize)
                .filter(|&i| self.rc.block_offset(i) == 0)
                .count() as u64;
            let total = start + additional + area_blocks + table;
            let nb = total.div_ceil(per_block);
            if nb <= blocks {
                break;
            }
            blocks = nb;
        }
        if table * cs > super::refcount::MAX_REFTABLE_BYTES {
            return Err(too_large());
        }
        let area_len = area_blocks + table;
        // Refcounts of area clusters that existing blocks describe.
        let mut new_blocks: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut next = start;
        for i in 0..blocks as usize {
            if self.rc.block_offset(i) == 0 {
                new_blocks.push((i, vec![0u8; cs as usize]));
                next += 1;
            }
        }
        let _ = next;
        for c in start..start + area_len {
            let bi = (c / per_block) as usize;
            if let Some((_, data)) = new_blocks.iter_mut().find(|(i, _)| *i == bi) {
                Refcounts::set_entry(order, data, (c % per_block) as usize, 1);
            } else {
                self.rc.update(&self.file, c, 1, 1)?;
            }
        }
        let mut new_table = self.rc.table.clone();
        let entries = (table * cs / 8) as usize;
        new_table.resize(entries.max(new_table.len()), 0);
        for (k, (i, data)) in new_blocks.iter().enumerate() {
            let off = (start + k as u64) << cb;
            self.file.write_at(data, off)?;
            new_table[*i] = off;
        }
        new_table.truncate(entries.max(blocks as usize));
        let table_off = (start + area_blocks) << cb;
        let mut raw = Vec::with_capacity((table * cs) as usize);
        for e in &new_table {
            raw.extend_from_slice(&e.to_be_bytes());
        }
        raw.resize((table * cs) as usize, 0);
        self.file.write_at(&raw, table_off)?;
        let mut hb = [0u8; 12];
        hb[..8].copy_from_slice(&table_off.to_be_bytes());
        hb[8..].copy_from_slice(&(table as u32).to_be_bytes());
        self.file.write_at(&hb, 48)?;
        let old_off = self.rc.table_offset;
        let old_clusters = self.rc.table_clusters as u64;
        new_table.resize(entries, 0);
        self.rc.table = new_table;
        self.rc.table_offset = table_off;
        self.rc.table_clusters = table as u32;
        self.rc.invalidate();
        self.hdr.refcount_table_offset = table_off;
        self.hdr.refcount_table_clusters = table as u32;
        self.rc
            .update(&self.file, old_off >> cb, old_clusters, -1)?;
        Ok(area_len)
    }
}

/// Options of the encryption layer, which `measure` sizes apart.
const ENCRYPT_KEYS: &[&str] = &[
    "encryption",
    "encrypt.format",
    "encrypt.key-secret",
    "encrypt.cipher-alg",
    "encrypt.cipher-mode",
    "encrypt.ivgen-alg",
    "encrypt.ivgen-hash-alg",
    "encrypt.hash-alg",
    "encrypt.iter-time",
];

/// Bytes of the LUKS header `measure` adds for `encrypt.format=luks`
/// (observed: 4096 plus 8 key slots of the key size times 4000 stripes,
/// each rounded up to 4096; XTS doubles the key). Other encryption
/// options do not change the sizes.
fn luks_header_bytes(opts: &CreateOpts) -> Result<Option<u64>> {
    if opts.get("encrypt.format") != Some("luks") {
        return Ok(None);
    }
    if opts.get("encrypt.key-secret").is_none() {
        return Err(Error::invalid(
            "Parameter 'encrypt.key-secret' is required for cipher",
        ));
    }
    let alg = opts.get("encrypt.cipher-alg").unwrap_or("aes-256");
    let key: u64 = match alg {
        "aes-128" | "twofish-128" | "serpent-128" | "cast5-128" | "sm4" => 16,
        "aes-192" | "twofish-192" | "serpent-192" => 24,
        "aes-256" | "twofish-256" | "serpent-256" => 32,
        _ => {
            return Err(Error::invalid(format!(
                "Parameter 'cipher-alg' does not accept value '{alg}'"
            )))
        }
    };
    let mode = opts.get("encrypt.cipher-mode").unwrap_or("xts");
    let key = match mode {
        "xts" => key * 2,
        "ecb" | "cbc" | "ctr" => key,
        _ => {
            return Err(Error::invalid(format!(
                "Parameter 'cipher-mode' does not accept value '{mode}'"
            )))
        }
    };
    Ok(Some(4096 + 8 * (key * 4000).div_ceil(4096) * 4096))
}

/// `qemu-img measure -O qcow2`.
pub fn measure(
    opts: &CreateOpts,
    size: u64,
    source: Option<&mut dyn BlockDriver>,
) -> Result<Measure> {
    let luks = luks_header_bytes(opts)?;
    let mut plain = opts.clone();
    for k in ENCRYPT_KEYS {
        plain.remove(k);
    }
    // measure names bad values in its own words, after the cluster size.
    let mut base_opts = plain.clone();
    base_opts.remove("compat");
    base_opts.remove("preallocation");
    parse_params(&base_opts)?;
    if let Some(v) = plain.get("compat") {
        if parse_version(v).is_err() {
            return Err(Error::invalid(format!(
                "Invalid compatibility level: '{v}'"
            )));
        }
    }
    if let Some(v) = plain.get("preallocation") {
        if Prealloc::parse(v).is_err() {
            return Err(Error::invalid(format!("invalid parameter value: {v}")));
        }
    }
    let p = parse_params(&plain)?;
    let size = size.div_ceil(512) * 512;
    let cb = p.cluster_bits;
    let cs = 1u64 << cb;
    let l2b = l2_bits(&p);
    let l1 = l1_entries(size, cb, l2b);
    if l1 * 8 > MAX_L1_BYTES {
        return Err(Error::invalid(
            "The image size is too large (try using a larger cluster size)",
        ));
    }
    let data_clusters = size.div_ceil(cs);
    let l2_tables = l1;
    let l1_clusters = (l1 * 8).div_ceil(cs);
    let base = 1 + l1_clusters + l2_tables;
    let (t, b) = metadata_clusters(base + data_clusters, cb, p.refcount_order, false);
    let meta = (base + t + b) * cs;
    let full = meta + data_clusters * cs;
    let mut bitmaps = None;
    let required = match (source, p.prealloc) {
        (Some(src), Prealloc::Falloc | Prealloc::Full) => {
            if src.format_name() == "qcow2" {
                bitmaps = Some(bitmaps_size(src, cs));
            }
            full
        }
        (None, Prealloc::Falloc | Prealloc::Full) => full,
        (None, _) => meta,
        (Some(src), _) => {
            // Only a version 3 qcow2 source can carry persistent bitmaps;
            // qemu-img reports the line for those alone.
            let v3 = src
                .format_specific()
                .and_then(|v| v.get("compat").cloned())
                .is_some_and(|c| c == Value::Str("1.1".into()));
            if src.format_name() == "qcow2" && v3 {
                bitmaps = Some(bitmaps_size(src, cs));
            }
            let end = size.min(src.size());
            let mut clusters = 0u64;
            let mut last_counted: Option<u64> = None;
            let mut off = 0;
            while off < end {
                let (len, data) = crate::chain_status(src, off, end - off)?;
                if data {
                    let first = off >> cb;
                    let last = (off + len - 1) >> cb;
                    let first = match last_counted {
                        Some(l) if l >= first => l + 1,
                        _ => first,
                    };
                    if last >= first {
                        clusters += last - first + 1;
                    }
                    last_counted = Some(last);
                }
                off += len;
            }
            meta + clusters * cs
        }
    };
    // The LUKS header sits in whole clusters outside the refcounted sizes.
    let crypt = luks.map_or(0, |b| b.div_ceil(cs) * cs);
    Ok(Measure {
        required: required + crypt,
        fully_allocated: full + crypt,
        bitmaps,
    })
}

/// Bytes persistent bitmaps of `src` would take in a qcow2 image with
/// clusters of `cs` bytes: directory plus each bitmap's table and data.
fn bitmaps_size(src: &dyn BlockDriver, cs: u64) -> u64 {
    let Some(Value::Array(list)) = src
        .format_specific()
        .and_then(|v| v.get("bitmaps").cloned())
    else {
        return 0;
    };
    let mut total = 0;
    let mut dir = 0u64;
    for b in &list {
        let gran = match b.get("granularity") {
            Some(Value::UInt(g)) if *g > 0 => *g,
            _ => continue,
        };
        let name_len = match b.get("name") {
            Some(Value::Str(s)) => s.len() as u64,
            _ => 0,
        };
        let bits = src.size().div_ceil(gran);
        let data_clusters = bits.div_ceil(8).div_ceil(cs);
        let table_clusters = (data_clusters * 8).div_ceil(cs);
        total += (data_clusters + table_clusters) * cs;
        dir += (24 + name_len).div_ceil(8) * 8;
    }
    total + dir.div_ceil(cs) * cs
}

/// `resize`.
pub fn resize(img: &mut Qcow2, new_size: u64, prealloc: Prealloc, shrink: bool) -> Result<()> {
    let new_size = new_size.div_ceil(512) * 512;
    let old = img.hdr.size;
    let cb = img.cluster_bits;
    let cs = img.cluster_size();
    if new_size < old {
        if !shrink {
            return Err(Error::invalid(
                "Use the --shrink option to perform a shrink operation.",
            ));
        }
        if prealloc != Prealloc::Off {
            return Err(Error::invalid(
                "Preallocation can only be used for growing images",
            ));
        }
        // Drop everything past the new end, then trim the file.
        let start = new_size.div_ceil(cs) * cs;
        let freed = start < old && img.discard_range_full(start, old)?;
        img.hdr.size = new_size;
        img.file.write_at(&new_size.to_be_bytes(), 24)?;
        for off in img.rc.drop_empty_blocks(&img.file)? {
            img.file.punch_hole(off, cs)?;
        }
        let mut last_used = 0;
        let total = img.file.len()?.div_ceil(cs);
        for c in (0..total).rev() {
            if img.rc.get(&img.file, c)? > 0 {
                last_used = c + 1;
                break;
            }
        }
        if last_used > 0 && (last_used << cb) < img.file.len()? {
            img.file.set_len(last_used << cb)?;
        }
        if freed {
            // QEMU leaves every free cluster of a shrunk image discarded.
            let mut c = 0;
            while c < last_used {
                if img.rc.get(&img.file, c)? == 0 {
                    let s0 = c;
                    while c < last_used && img.rc.get(&img.file, c)? == 0 {
                        c += 1;
                    }
                    img.file.punch_hole(s0 << cb, (c - s0) << cb)?;
                }
                c += 1;
            }
        }
        return Ok(());
    }
    let l1 = l1_entries(new_size, cb, img.l2_bits);
    if l1 * 8 > MAX_L1_BYTES {
        return Err(too_large());
    }
    img.grow_l1(l1 as usize)?;
    let old_size = img.hdr.size;
    img.hdr.size = new_size;
    img.file.write_at(&new_size.to_be_bytes(), 24)?;
    if prealloc != Prealloc::Off {
        let start = old_size.div_ceil(cs) * cs;
        img.preallocate(start, new_size, prealloc)?;
    }
    Ok(())
}

impl Qcow2 {
    /// Deallocates every cluster in `[start, end)` (cluster aligned start)
    /// so nothing references it any more (used by shrink).
    /// Returns true if anything was freed.
    fn discard_range_full(&mut self, start: u64, end: u64) -> Result<bool> {
        let cb = self.cluster_bits;
        let span = self.span_bits();
        let mask = (1u64 << self.l2_bits) - 1;
        let mut pos = start;
        let mut freed = false;
        while pos < end {
            let l1i = (pos >> span) as usize;
            let chunk_end = end.min(((l1i as u64) + 1) << span);
            let l2 = self.l1_entry_offset(l1i);
            let whole = pos == (l1i as u64) << span;
            // QEMU allocates the L2 table of a partially discarded range.
            if l2 != 0 || !whole {
                if whole {
                    freed = true;
                    // The whole table goes: unlink it, then drop references.
                    self.set_l1(l1i, 0)?;
                    self.release_table(l2)?;
                } else {
                    let l2off = self.ensure_l2(l1i)?;
                    let c0 = pos >> cb;
                    let c1 = (chunk_end - 1) >> cb;
                    let mut releases = Vec::new();
                    for c in c0..=c1 {
                        let ci = (c & mask) as usize;
                        let ew = self.entry_words();
                        let w = self.l2c.table(&self.file, l2off)?;
                        let e = w[ci * ew];
                        releases.push(self.held(e));
                    }
                    let words = vec![0u64; ((c1 - c0 + 1) as usize) * self.entry_words()];
                    self.l2c.set(
                        &self.file,
                        l2off,
                        (c0 & mask) as usize * self.entry_words(),
                        &words,
                    )?;
                    for h in releases {
                        freed |= h != Held::Nothing;
                        self.release(h)?;
                    }
                }
            }
            pos = chunk_end;
        }
        Ok(freed)
    }

    /// Drops one reference (one L1 path) to the L2 table at `l2off`: the
    /// table's refcount and the refcount of everything it points at.
    pub(super) fn release_table(&mut self, l2off: u64) -> Result<()> {
        let words = self.l2c.table(&self.file, l2off)?.to_vec();
        let step = self.entry_words();
        let mut helds = Vec::new();
        for i in (0..words.len()).step_by(step) {
            helds.push(self.held(words[i]));
        }
        self.rc
            .update(&self.file, l2off >> self.cluster_bits, 1, -1)?;
        if self.rc.get(&self.file, l2off >> self.cluster_bits)? == 0 {
            self.l2c.forget(l2off);
        }
        for h in helds {
            self.release(h)?;
        }
        Ok(())
    }
}

const CREATION_ONLY: &[&str] = &[
    "cluster_size",
    "preallocation",
    "compression_type",
    "extended_l2",
    "encryption",
    "encrypt.format",
    "encrypt.cipher-alg",
    "encrypt.cipher-mode",
    "encrypt.hash-alg",
    "encrypt.ivgen-alg",
    "encrypt.ivgen-hash-alg",
    "encrypt.key-secret",
];

/// `amend`.
pub fn amend(img: &mut Qcow2, opts: &CreateOpts, _force: bool) -> Result<()> {
    for (k, _) in opts.pairs() {
        if CREATION_ONLY.contains(&k.as_str()) {
            return Err(Error::invalid(format!(
                "Invalid parameter '{k}'\nThis option is only supported for image creation"
            )));
        }
        let known = [
            "backing_file",
            "backing_fmt",
            "compat",
            "data_file",
            "data_file_raw",
            "lazy_refcounts",
            "refcount_bits",
            "size",
        ];
        if !known.contains(&k.as_str()) && !k.starts_with("encrypt.") {
            return Err(Error::invalid(format!("Invalid parameter '{k}'")));
        }
    }
    if opts.get("data_file").is_some() {
        return Err(Error::invalid(
            "data-file can only be set for images that use an external data file",
        ));
    }
    if opts.get("data_file_raw").is_some() {
        return Err(Error::invalid(
            "data-file-raw can only be set for images that use an external data file",
        ));
    }
    if opts.get("backing_file").is_some() || opts.get("backing_fmt").is_some() {
        return Err(Error::invalid(
            "Cannot amend the backing file\nYou can use 'qemu-img rebase' instead.",
        ));
    }
    let version = match opts.get("compat") {
        Some(v) => parse_version(v)?,
        None => img.hdr.version,
    };
    let order = parse_refcount_bits(opts)?;
    let lazy = opts.get_bool("lazy_refcounts")?;
    let size = opts.get_size("size")?;
    let new_order = order.unwrap_or(img.hdr.refcount_order);
    if version < 3 {
        if new_order != 4 {
            return Err(Error::invalid(if opts.get("compat").is_some() {
                "compat=0.10 requires refcount_bits=16"
            } else {
                "Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)"
            }));
        }
        if lazy == Some(true) {
            return Err(Error::invalid(
                "Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)",
            ));
        }
    }
    if version > img.hdr.version {
        upgrade(img)?;
    }
    if let Some(o) = order {
        if o != img.hdr.refcount_order {
            change_refcount_order(img, o)?;
        }
    }
    if let Some(l) = lazy {
        if img.hdr.version >= 3 {
            if l {
                img.hdr.compatible |= header::COMPAT_LAZY_REFCOUNTS;
            } else {
                img.hdr.compatible &= !header::COMPAT_LAZY_REFCOUNTS;
            }
            img.write_header()?;
        }
    }
    if let Some(s) = size {
        resize(img, s, Prealloc::Off, true)?;
    }
    if version < img.hdr.version {
        downgrade(img)?;
    }
    Ok(())
}

fn upgrade(img: &mut Qcow2) -> Result<()> {
    img.hdr.version = 3;
    img.hdr.header_length = header::V3_HEADER_LEN;
    img.hdr.refcount_order = 4;
    img.write_header()
}

fn downgrade(img: &mut Qcow2) -> Result<()> {
    let blocking = img.hdr.incompatible
        & !(header::INCOMPAT_DIRTY | header::INCOMPAT_COMPRESSION | header::INCOMPAT_CORRUPT);
    if blocking != 0 {
        return Err(Error::unsupported(format!(
            "Cannot downgrade an image with incompatible features {blocking:#x} set"
        )));
    }
    if img.compression != super::compress::CompressionType::Zlib && has_compressed_clusters(img)? {
        return Err(Error::unsupported(
            "Cannot downgrade an image with zstd compression type and existing compressed clusters",
        ));
    }
    if img.hdr.refcount_order != 4 {
        return Err(Error::invalid("compat=0.10 requires refcount_bits=16"));
    }
    if img.hdr.incompatible & header::INCOMPAT_DIRTY != 0 {
        img.check(FixMode {
            leaks: true,
            errors: true,
        })?;
    }
    // Zero clusters do not exist in version 2: without a backing file they
    // become unallocated, otherwise they get a zeroed data cluster.
    let has_backing = img.hdr.backing_file.is_some();
    let cb = img.cluster_bits;
    let cs = img.cluster_size();
    let mut l1s: Vec<(Vec<u64>, bool)> = vec![(img.l1.clone(), true)];
    for s in img.snapshots.clone() {
        let mut raw = vec![0u8; s.l1_size as usize * 8];
        img.file.read_at(&mut raw, s.l1_offset)?;
        let l1: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().expect("chunks_exact(8) yields 8 bytes")))
            .collect();
        l1s.push((l1, false));
    }
    // Every L2 table is rewritten once, in place: the change is the same
    // for every L1 table sharing it.
    let mut done = std::collections::BTreeSet::new();
    for (l1, _) in l1s {
        for e in l1.iter() {
            let l2off = e & OFFSET_MASK;
            if l2off == 0 || !done.insert(l2off) {
                continue;
            }
            let mut words = img.l2c.table(&img.file, l2off)?.to_vec();
            let mut changed = false;
            for w in words.iter_mut() {
                if *w & super::cluster::COMPRESSED != 0 || *w & super::cluster::ZERO == 0 {
                    continue;
                }
                let host = *w & OFFSET_MASK;
                let paths = img.rc.get(&img.file, l2off >> cb)?.max(1);
                let shared = host != 0 && img.rc.get(&img.file, host >> cb)? > paths;
                *w = if host != 0 && !shared {
                    // A preallocated zero cluster of ours: zero its data.
                    img.file.write_zeroes(host, cs)?;
                    host | if paths == 1 { COPIED } else { 0 }
                } else if host != 0 && !has_backing {
                    // Shared with a snapshot (qemu-img 10.0.2 zeroes it in
                    // place, destroying the snapshot's data): drop our
                    // references instead; unallocated reads as zeroes.
                    img.pending_release
                        .extend((0..paths).map(|_| Held::Host(host)));
                    0
                } else if has_backing {
                    // Must keep hiding the backing file: a zeroed cluster
                    // referenced by every path to this table.
                    if host != 0 {
                        img.pending_release
                            .extend((0..paths).map(|_| Held::Host(host)));
                    }
                    let h = img.rc.alloc(&img.file, 1)?;
                    if paths > 1 {
                        img.rc.update(&img.file, h, 1, paths as i64 - 1)?;
                    }
                    img.file.write_zeroes(h << cb, cs)?;
                    (h << cb) | if paths == 1 { COPIED } else { 0 }
                } else {
                    0
                };
                changed = true;
            }
            if changed {
                img.l2c.set(&img.file, l2off, 0, &words)?;
            }
            for held in std::mem::take(&mut img.pending_release) {
                img.release(held)?;
            }
        }
    }
    img.compression = super::compress::CompressionType::Zlib;
    img.hdr.version = 2;
    img.hdr.header_length = 72;
    img.hdr.incompatible = 0;
    img.hdr.compatible = 0;
    img.hdr.autoclear = 0;
    img.hdr.compression_type = 0;
    img.hdr.tail.clear();
    img.hdr.feature_names.clear();
    // Bitmaps stay recorded (QEMU keeps the extension; version 2 readers
    // then treat the bitmaps as inconsistent).
    img.write_header()
}

/// True if any L2 table (active or of a snapshot) maps a compressed cluster.
fn has_compressed_clusters(img: &mut Qcow2) -> Result<bool> {
    let mut l1s = vec![img.l1.clone()];
    for s in img.snapshots.clone() {
        let mut raw = vec![0u8; s.l1_size as usize * 8];
        img.file.read_at(&mut raw, s.l1_offset)?;
        l1s.push(
            raw.chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().expect("chunks_exact(8) yields 8 bytes")))
                .collect(),
        );
    }
    let step = img.entry_words();
    let mut seen = std::collections::BTreeSet::new();
    for l1 in l1s {
        for e in l1 {
            let off = e & OFFSET_MASK;
            if off == 0 || !seen.insert(off) {
                continue;
            }
            let words = img.l2c.table(&img.file, off)?;
            if words
                .iter()
                .step_by(step)
                .any(|w| w & super::cluster::COMPRESSED != 0)
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Rewrites the refcount structures with a new entry width.
fn change_refcount_order(img: &mut Qcow2, order: u32) -> Result<()> {
    if img.hdr.version < 3 {
        return Err(Error::invalid(
            "Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)",
        ));
    }
    let cb = img.cluster_bits;
    let cs = img.cluster_size();
    let total = img.file.len()?.div_ceil(cs);
    let mut counts: Vec<u64> = Vec::with_capacity(total as usize);
    for c in 0..total {
        counts.push(img.rc.get(&img.file, c)?);
    }
    let max = if order == 6 {
        u64::MAX
    } else {
        (1u64 << (1 << order)) - 1
    };
    if let Some(c) = counts.iter().position(|&r| r > max) {
        return Err(Error::invalid(format!(
            "Refcount of cluster {c} does not fit into the new refcount width"
        )));
    }
    // The old structures are freed in the new world.
    counts[(img.rc.table_offset >> cb) as usize..][..img.rc.table_clusters as usize].fill(0);
    for i in 0..img.rc.table.len() {
        let b = img.rc.block_offset(i);
        if b != 0 && ((b >> cb) as usize) < counts.len() {
            counts[(b >> cb) as usize] = 0;
        }
    }
    super::check::write_structure(img, counts, order, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_matches_qemu_without_source() {
        let o = CreateOpts::new();
        // qemu-img measure -O qcow2 --size N (10.0.2).
        let m = measure(&o, 1 << 30, None).expect("measures");
        assert_eq!((m.required, m.fully_allocated), (393216, 1074135040));
        let m = measure(&o, 100 << 30, None).expect("measures");
        assert_eq!((m.required, m.fully_allocated), (16646144, 107390828544));
        let m = measure(&o, 2 << 40, None).expect("measures");
        assert_eq!((m.required, m.fully_allocated), (335806464, 2199359062016));
        let m = measure(&o, 0, None).expect("measures");
        assert_eq!((m.required, m.fully_allocated), (196608, 196608));
        let mut o = CreateOpts::new();
        o.set("cluster_size", "512");
        let m = measure(&o, 1 << 30, None).expect("measures");
        assert_eq!((m.required, m.fully_allocated), (21385216, 1095127040));
        let m = measure(&o, 100 << 30, None).expect("measures");
        assert_eq!((m.required, m.fully_allocated), (2138404352, 109512586752));
        let mut o = CreateOpts::new();
        o.set("extended_l2", "on");
        let m = measure(&o, 2 << 40, None).expect("measures");
        assert_eq!((m.required, m.fully_allocated), (604241920, 2199627497472));
        let mut o = CreateOpts::new();
        o.set("refcount_bits", "1");
        let m = measure(&o, 100 << 30, None).expect("measures");
        assert_eq!((m.required, m.fully_allocated), (13565952, 107387748352));
        let mut o = CreateOpts::new();
        o.set("cluster_size", "2M");
        let m = measure(&o, 2 << 40, None).expect("measures");
        assert_eq!((m.required, m.fully_allocated), (18874368, 2199042129920));
    }

    #[test]
    fn option_errors_match_qemu() {
        let err = |k: &str, v: &str| {
            let mut o = CreateOpts::new();
            for (k, v) in k.split(',').zip(v.split(',')) {
                o.set(k, v);
            }
            parse_params(&o).err().map(|e| e.to_string())
        };
        assert_eq!(
            err("cluster_size", "1000").as_deref(),
            Some("Cluster size must be a power of two between 512 and 2048k")
        );
        assert_eq!(
            err("refcount_bits", "3").as_deref(),
            Some("Refcount width must be a power of two and may not exceed 64 bits")
        );
        assert_eq!(
            err("compat", "9").as_deref(),
            Some("Parameter 'version' does not accept value '9'")
        );
        assert_eq!(
            err("compat,refcount_bits", "0.10,8").as_deref(),
            Some("Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)")
        );
        assert!(err("data_file", "x").is_some());
        assert!(err("compat", "v2").is_none());
    }
}
