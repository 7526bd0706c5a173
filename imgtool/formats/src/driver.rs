//! The `BlockDriver` trait every image format implements, and the types it
//! speaks: block status, check reports, snapshots, creation options.
//!
//! Semantics follow QEMU's block layer as documented for `qemu-img`: reads go
//! through the backing chain, `block_status` describes one layer only, and
//! offsets are bytes of the virtual disk.

use std::path::Path;

use crate::error::{Error, Result};
use crate::file::{ImageFile, Prealloc};
use crate::value::Value;

/// What one layer knows about a run of virtual-disk bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alloc {
    /// Not allocated in this layer: contents come from the backing file
    /// (zeroes if there is none).
    Unallocated,
    /// Allocated and reading as zeroes (a zero cluster, or a hole in raw).
    Zero,
    /// Allocated data stored in this layer.
    Data,
    /// Allocated data stored compressed.
    Compressed,
}

/// Status of a run of bytes starting at the queried offset in one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockStatus {
    /// Length of the run (> 0, never past the queried maximum).
    pub len: u64,
    /// What the layer holds there.
    pub alloc: Alloc,
    /// Host offset of the first byte in this layer's file, when the data is
    /// stored plainly and contiguously there (QEMU's "offset" in `map`).
    pub offset: Option<u64>,
}

/// Which problems `check -r` may repair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FixMode {
    pub leaks: bool,
    pub errors: bool,
}

/// The outcome of a consistency check, as `qemu-img check` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub corruptions: u64,
    pub leaks: u64,
    pub check_errors: u64,
    pub corruptions_fixed: u64,
    pub leaks_fixed: u64,
    pub image_end_offset: Option<u64>,
    pub total_clusters: Option<u64>,
    pub allocated_clusters: Option<u64>,
    pub fragmented_clusters: Option<u64>,
    pub compressed_clusters: Option<u64>,
    /// Lines the check printed while running, in order (to stderr), e.g.
    /// "Leaked cluster 5 refcount=1 reference=0".
    pub messages: Vec<String>,
}

/// One internal snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub id: String,
    pub name: String,
    pub vm_state_size: u64,
    pub date_sec: u64,
    pub date_nsec: u32,
    pub vm_clock_nsec: u64,
    pub icount: Option<u64>,
}

/// A pure compression function for clusters of one image, usable from worker
/// threads while the image itself is being written on the main thread.
pub trait Compressor: Send + Sync {
    /// Compresses one cluster's worth of data. Returns `None` if the result
    /// would not be smaller (the caller then writes the data uncompressed).
    fn compress(&self, data: &[u8]) -> Option<Vec<u8>>;
}

/// Creation options as `key=value` pairs in the order given, with typed
/// accessors. Keys use QEMU's names (`cluster_size`, `backing_file` ...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateOpts {
    pairs: Vec<(String, String)>,
    /// The encryption key, when `encrypt.key-secret` named a secret the
    /// caller resolved.
    pub key: Option<Vec<u8>>,
}

impl CreateOpts {
    /// Empty options.
    pub fn new() -> CreateOpts {
        CreateOpts::default()
    }

    /// Sets a key (replacing an earlier value, as QEMU's merging of -o does).
    pub fn set(&mut self, key: &str, value: &str) {
        if let Some(p) = self.pairs.iter_mut().find(|(k, _)| k == key) {
            p.1 = value.to_string();
        } else {
            self.pairs.push((key.to_string(), value.to_string()));
        }
    }

    /// Removes a key.
    pub fn remove(&mut self, key: &str) {
        self.pairs.retain(|(k, _)| k != key);
    }

    /// The raw string value of a key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All pairs in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// A size value (`64k`, `1G` ...).
    pub fn get_size(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => crate::size::parse_size(v).map(Some).map_err(|_| {
                Error::invalid(format!(
                    "Parameter '{key}' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively."
                ))
            }),
        }
    }

    /// A plain number value.
    pub fn get_num(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => parse_uint(v)
                .map(Some)
                .ok_or_else(|| Error::invalid(format!("Parameter '{key}' expects a number"))),
        }
    }

    /// An on/off value.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some("on" | "yes" | "true") => Ok(Some(true)),
            Some("off" | "no" | "false") => Ok(Some(false)),
            Some(_) => Err(Error::invalid(format!(
                "Parameter '{key}' expects 'on' or 'off'"
            ))),
        }
    }

    /// The preallocation mode (default off).
    pub fn prealloc(&self) -> Result<Prealloc> {
        self.get("preallocation")
            .map_or(Ok(Prealloc::Off), Prealloc::parse)
    }
}

fn parse_uint(s: &str) -> Option<u64> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else {
        s.parse().ok()
    }
}

/// Description of one creation option, for `-o help` and validation.
#[derive(Clone, Copy, Debug)]
pub struct OptDesc {
    pub name: &'static str,
    pub kind: OptKind,
    pub help: &'static str,
}

/// The type of a creation option, printed by `-o help` as `<str>`, `<size>` ...
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptKind {
    Str,
    Size,
    Bool,
    Num,
}

impl OptKind {
    /// The tag `-o help` prints.
    pub fn tag(self) -> &'static str {
        match self {
            OptKind::Str => "<str>",
            OptKind::Size => "<size>",
            OptKind::Bool => "<bool (on/off)>",
            OptKind::Num => "<num>",
        }
    }
}

/// An open image: one layer, with its backing chain attached below it.
pub trait BlockDriver: Send {
    /// The format name (`raw`, `qcow2`, `qcow`).
    fn format_name(&self) -> &'static str;

    /// The host file of this layer.
    fn file(&self) -> &ImageFile;

    /// Mutable access to the host file (cache mode etc.).
    fn file_mut(&mut self) -> &mut ImageFile;

    /// Virtual disk size in bytes.
    fn size(&self) -> u64;

    /// Cluster size, for formats that have one.
    fn cluster_size(&self) -> Option<u64> {
        None
    }

    /// Reads virtual-disk bytes (through the backing chain).
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// Writes virtual-disk bytes into this layer.
    fn write(&mut self, offset: u64, buf: &[u8]) -> Result<()>;

    /// Makes a range read as zeroes. With `may_unmap` the layer may
    /// deallocate (still reading zero, even over a backing file).
    fn write_zeroes(&mut self, offset: u64, len: u64, may_unmap: bool) -> Result<()>;

    /// Discards a range (contents become unspecified / fall back to backing
    /// for formats where that is the semantics). Default: no-op success,
    /// which QEMU also allows for discard.
    fn discard(&mut self, _offset: u64, _len: u64) -> Result<()> {
        Ok(())
    }

    /// A compressor for this image's clusters, if the format supports
    /// compressed clusters.
    fn compressor(&self) -> Option<Box<dyn Compressor>> {
        None
    }

    /// Writes one whole cluster at a cluster-aligned `offset` from data
    /// produced by this image's [`Compressor`]. The last cluster of the disk
    /// may be partial.
    fn write_compressed(&mut self, _offset: u64, _compressed: &[u8]) -> Result<()> {
        Err(Error::unsupported(format!(
            "Compression is not supported for the '{}' format",
            self.format_name()
        )))
    }

    /// Flushes metadata caches and the host file.
    fn flush(&mut self) -> Result<()>;

    /// Describes this layer (not the backing chain) at `offset`, for at most
    /// `max_len` bytes.
    fn block_status(&mut self, offset: u64, max_len: u64) -> Result<BlockStatus>;

    /// The backing image, if one is attached.
    fn backing(&mut self) -> Option<&mut (dyn BlockDriver + 'static)> {
        None
    }

    /// Attaches (or detaches) the opened backing image.
    fn set_backing(&mut self, _backing: Option<Box<dyn BlockDriver>>) {}

    /// Takes the backing image out of this layer.
    fn take_backing(&mut self) -> Option<Box<dyn BlockDriver>> {
        None
    }

    /// The backing file name as recorded in the image.
    fn backing_file_name(&self) -> Option<String> {
        None
    }

    /// The backing format as recorded in the image.
    fn backing_format(&self) -> Option<String> {
        None
    }

    /// Rewrites the recorded backing file name/format (no data is copied).
    fn change_backing_file(&mut self, _name: Option<&str>, _fmt: Option<&str>) -> Result<()> {
        Err(Error::unsupported(format!(
            "The '{}' format does not support backing files",
            self.format_name()
        )))
    }

    /// True if the format can have a backing file.
    fn supports_backing(&self) -> bool {
        false
    }

    /// Format-specific information for `info`, in QEMU's key order
    /// (`{"type": ..., "data": {...}}` is built by the caller).
    fn format_specific(&self) -> Option<Value> {
        None
    }

    /// True if `qemu-img map` must look at the host file below data this
    /// layer maps plainly, reporting host holes as zero (`"zero": true,
    /// "data": true`). QEMU does this for qcow2 images that look
    /// metadata-preallocated (clusters allocated in the image but sparse in
    /// the host file, e.g. `-o preallocation=metadata`); for ordinary images
    /// it does not, so the default is false.
    fn map_zeroes_from_host(&mut self) -> bool {
        false
    }

    /// True if the image is marked dirty (e.g. qcow2 lazy refcounts).
    fn dirty(&self) -> bool {
        false
    }

    /// True if the image is encrypted.
    fn encrypted(&self) -> bool {
        false
    }

    /// Checks (and with `fix`, repairs) the image's metadata.
    fn check(&mut self, _fix: FixMode) -> Result<CheckReport> {
        Err(Error::unsupported(
            "This image format does not support checks",
        ))
    }

    /// Resizes the virtual disk.
    fn resize(&mut self, _new_size: u64, _prealloc: Prealloc, _shrink: bool) -> Result<()> {
        Err(Error::unsupported(format!(
            "Image format '{}' does not support resizing",
            self.format_name()
        )))
    }

    /// Internal snapshots.
    fn snapshots(&self) -> Vec<SnapshotInfo> {
        Vec::new()
    }

    /// Creates an internal snapshot.
    fn snapshot_create(&mut self, _info: &SnapshotInfo) -> Result<()> {
        Err(Error::unsupported(format!(
            "Block format '{}' used by device '' does not support internal snapshots",
            self.format_name()
        )))
    }

    /// Reverts the disk to a snapshot (by id or name).
    fn snapshot_apply(&mut self, _id_or_name: &str) -> Result<()> {
        Err(Error::unsupported(format!(
            "Block format '{}' used by device '' does not support internal snapshots",
            self.format_name()
        )))
    }

    /// Presents an internal snapshot's contents instead of the current
    /// disk, without writing anything (QEMU's temporary snapshot load, used
    /// by `convert -l` and `measure -l`). The image must be open read-only.
    fn snapshot_load_tmp(&mut self, _id: &str) -> Result<()> {
        Err(Error::unsupported(format!(
            "Block format '{}' used by device '' does not support temporarily loading internal snapshots",
            self.format_name()
        )))
    }

    /// Deletes a snapshot (by id or name).
    fn snapshot_delete(&mut self, _id_or_name: &str) -> Result<()> {
        Err(Error::unsupported(format!(
            "Block format '{}' used by device '' does not support internal snapshots",
            self.format_name()
        )))
    }

    /// Deallocates all data in this layer so it reads entirely from the
    /// backing file (used after `commit`).
    fn make_empty(&mut self) -> Result<()> {
        Err(Error::unsupported(format!(
            "Image format '{}' does not support emptying after commit",
            self.format_name()
        )))
    }

    /// Changes format options in place (`qemu-img amend`).
    fn amend(&mut self, _opts: &CreateOpts, _force: bool) -> Result<()> {
        Err(Error::unsupported(format!(
            "Format driver '{}' does not support option amendment",
            self.format_name()
        )))
    }
}

/// Reads `buf` at `offset` from an optional backing image, filling what lies
/// past its end (or everything, without a backing image) with zeroes.
pub fn read_backing(
    backing: Option<&mut (dyn BlockDriver + 'static)>,
    offset: u64,
    buf: &mut [u8],
) -> Result<()> {
    let Some(b) = backing else {
        buf.fill(0);
        return Ok(());
    };
    let size = b.size();
    if offset >= size {
        buf.fill(0);
        return Ok(());
    }
    let n = ((size - offset).min(buf.len() as u64)) as usize;
    b.read(offset, &mut buf[..n])?;
    buf[n..].fill(0);
    Ok(())
}

/// Checks that `[offset, offset+len)` lies within a disk of `size` bytes.
pub fn check_range(offset: u64, len: u64, size: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::OutOfRange { offset, len, size }),
    }
}

/// Opening options every driver understands.
#[derive(Clone, Debug, Default)]
pub struct OpenOpts {
    /// Open for writing.
    pub writable: bool,
    /// The decryption key/passphrase for encrypted images (from a secret).
    pub key: Option<Vec<u8>>,
    /// Do not open the backing chain.
    pub no_backing: bool,
    /// Open only to describe the image (`qemu-img info`): an encrypted
    /// image must then open without its key, as QEMU's does, reporting
    /// `encrypted()` and its metadata; reading or writing its data may fail.
    pub metadata_only: bool,
    /// Opened by `qemu-img check -r` to repair the image: an image marked
    /// corrupt must still open read-write (QEMU clears the mark once the
    /// repair succeeded).
    pub repair: bool,
}

/// The path a relative backing file name refers to: relative to the
/// directory of the image that names it, as QEMU resolves it.
pub fn resolve_backing_path(image: &Path, backing: &str) -> std::path::PathBuf {
    let b = Path::new(backing);
    if b.is_absolute() || backing.contains("://") {
        return b.to_path_buf();
    }
    // QEMU joins the strings: everything up to the image name's last '/'
    // (kept as spelled, e.g. "dir//"), then the backing name.
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let img = image.as_os_str().as_bytes();
    match img.iter().rposition(|&c| c == b'/') {
        Some(i) => {
            let mut v = img[..=i].to_vec();
            v.extend_from_slice(backing.as_bytes());
            std::path::PathBuf::from(std::ffi::OsString::from_vec(v))
        }
        None => b.to_path_buf(),
    }
}
