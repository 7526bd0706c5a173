//! Disk image formats for rqemu: one library shared by `qemu-img` and the
//! block back-end. Every format implements [`BlockDriver`]; this module is the
//! registry (probing, opening whole backing chains with loop detection,
//! creating images).
//!
//! Formats follow their published specifications (QEMU's `docs/interop/
//! qcow2.txt` for qcow2, the qcow version 1 header layout for qcow) and are
//! checked for byte-level interoperability against the real qemu-img.

pub mod driver;
pub mod error;
pub mod file;
pub mod qcow;
pub mod qcow2;
pub mod raw;
pub mod size;
pub mod value;

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

pub use driver::{
    Alloc, BlockDriver, BlockStatus, CheckReport, Compressor, CreateOpts, FixMode, OpenOpts,
    OptDesc, OptKind, SnapshotInfo,
};
pub use error::{Error, Result};
pub use file::{CacheMode, ImageFile, Prealloc};
pub use value::Value;

/// Result of `measure`: bytes needed for a new image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Measure {
    pub required: u64,
    pub fully_allocated: u64,
    /// Bytes of persistent bitmaps (qcow2 only reports this).
    pub bitmaps: Option<u64>,
}

/// Computes `measure` for a format: options, virtual size, optional source.
pub type MeasureFn = fn(&CreateOpts, u64, Option<&mut dyn BlockDriver>) -> Result<Measure>;

/// How a format is created, opened, probed and measured.
pub struct FormatOps {
    /// The format name as `-f` takes it.
    pub name: &'static str,
    /// Creation options, in the order `-o help` lists them.
    pub create_opts: &'static [OptDesc],
    /// Options `amend` can change, in the order `amend -o help` lists them
    /// (empty: the format does not support amendment).
    pub amend_opts: &'static [OptDesc],
    /// Creates an image of the given virtual size.
    pub create: fn(&Path, u64, &CreateOpts) -> Result<()>,
    /// Opens an image over an already open host file.
    pub open: fn(ImageFile, &OpenOpts) -> Result<Box<dyn BlockDriver>>,
    /// Scores a file header (0 = not this format), as QEMU's probing does.
    pub probe: fn(&[u8]) -> u32,
    /// Computes the size needed for a new image of this format.
    pub measure: Option<MeasureFn>,
    /// True if the format supports backing files.
    pub supports_backing: bool,
    /// The options the "Formatting ..." line of `create` prints, in order.
    pub formatting: &'static [FormattingOpt],
}

/// One option of the "Formatting 'x', fmt=..." line.
#[derive(Clone, Copy, Debug)]
pub struct FormattingOpt {
    pub name: &'static str,
    /// Printed when the option was not given; `None`: omitted then.
    pub default: Option<&'static str>,
    /// A size option, printed normalised to bytes.
    pub size: bool,
}

fn raw_open(file: ImageFile, _opts: &OpenOpts) -> Result<Box<dyn BlockDriver>> {
    Ok(Box::new(raw::Raw::open(file)?))
}

fn raw_probe(_header: &[u8]) -> u32 {
    1
}

fn raw_measure(
    _opts: &CreateOpts,
    size: u64,
    _source: Option<&mut dyn BlockDriver>,
) -> Result<Measure> {
    // A raw image needs its whole size whatever the source holds (holes
    // are a property of the host file system, not of the format).
    let size = size.div_ceil(512) * 512;
    Ok(Measure {
        required: size,
        fully_allocated: size,
        bitmaps: None,
    })
}

/// One layer's status refined by its host file: plainly stored data over a
/// hole of the host file reads as zeroes (QEMU reports such runs with
/// `"zero": true, "data": true`), for layers that ask for it
/// ([`BlockDriver::map_zeroes_from_host`]: QEMU looks at the host file only
/// for qcow2 images that seem metadata-preallocated; for other images
/// `measure` and `map` count such runs as data). Returns the status, clipped to where the
/// host allocation changes, and whether the run reads as zero.
pub fn layer_status(
    img: &mut dyn BlockDriver,
    offset: u64,
    max_len: u64,
) -> Result<(BlockStatus, bool)> {
    let mut st = img.block_status(offset, max_len)?;
    let zero = match (st.alloc, st.offset) {
        (Alloc::Zero, _) => true,
        (Alloc::Data, Some(host)) if img.map_zeroes_from_host() => {
            let ext = img.file().host_extent(host, st.len)?;
            st.len = ext.len.clamp(1, st.len);
            ext.hole
        }
        _ => false,
    };
    Ok((st, zero))
}

/// What a run of a backing chain holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunKind {
    /// Reads as zeroes.
    Zero,
    /// Holds data (maybe zero-valued; copiers check).
    Data,
    /// Not allocated in the layers looked at (left to a backing file).
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
    let (st, zero) = layer_status(img, offset, max_len)?;
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

/// Walks the whole chain at `offset`: returns the run length and whether the
/// run holds data (false when it reads as zeroes in every layer down to the
/// one that defines it).
pub fn chain_status(top: &mut dyn BlockDriver, offset: u64, max_len: u64) -> Result<(u64, bool)> {
    let (len, kind) = chain_run(top, offset, max_len, None)?;
    Ok((len, kind == RunKind::Data))
}

/// The qcow2 options `amend` can change, in `amend -o help` order (the
/// encryption key-slot options of LUKS are not supported and so not listed).
const QCOW2_AMEND_OPTS: &[OptDesc] = &[
    OptDesc {
        name: "backing_file",
        kind: OptKind::Str,
        help: "File name of a base image",
    },
    OptDesc {
        name: "backing_fmt",
        kind: OptKind::Str,
        help: "Image format of the base image",
    },
    OptDesc {
        name: "compat",
        kind: OptKind::Str,
        help: "Compatibility level (v2 [0.10] or v3 [1.1])",
    },
    OptDesc {
        name: "data_file",
        kind: OptKind::Str,
        help: "File name of an external data file",
    },
    OptDesc {
        name: "data_file_raw",
        kind: OptKind::Bool,
        help: "The external data file must stay valid as a raw image",
    },
    OptDesc {
        name: "lazy_refcounts",
        kind: OptKind::Bool,
        help: "Postpone refcount updates",
    },
    OptDesc {
        name: "refcount_bits",
        kind: OptKind::Num,
        help: "Width of a reference count entry in bits",
    },
    OptDesc {
        name: "size",
        kind: OptKind::Size,
        help: "Virtual disk size",
    },
];

/// Every format this library knows, in the order `qemu-img --help` would
/// list them.
pub fn formats() -> &'static [FormatOps] {
    static FORMATS: &[FormatOps] = &[
        FormatOps {
            name: "raw",
            create_opts: raw::CREATE_OPTS,
            amend_opts: &[],
            create: raw::create,
            open: raw_open,
            probe: raw_probe,
            measure: Some(raw_measure),
            supports_backing: false,
            formatting: &[
                FormattingOpt {
                    name: "size",
                    default: Some("0"),
                    size: true,
                },
                FormattingOpt {
                    name: "preallocation",
                    default: None,
                    size: false,
                },
            ],
        },
        FormatOps {
            name: "qcow2",
            create_opts: qcow2::CREATE_OPTS,
            amend_opts: QCOW2_AMEND_OPTS,
            create: qcow2::create,
            open: qcow2::open,
            probe: qcow2::probe,
            measure: Some(qcow2::measure),
            supports_backing: true,
            formatting: qcow2::FORMATTING,
        },
        qcow::FORMAT,
    ];
    FORMATS
}

/// Looks up a format by name.
pub fn format(name: &str) -> Result<&'static FormatOps> {
    formats()
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| Error::invalid(format!("Unknown driver '{name}'")))
}

/// Guesses the format of a file from its first bytes (raw when nothing
/// else matches).
pub fn probe(file: &ImageFile) -> Result<&'static FormatOps> {
    let mut header = vec![0u8; 2048];
    file.read_at(&mut header, 0)?;
    let mut best: Option<(&'static FormatOps, u32)> = None;
    for f in formats() {
        let score = (f.probe)(&header);
        if score > 0 && best.is_none_or(|(_, s)| score > s) {
            best = Some((f, score));
        }
    }
    best.map(|(f, _)| f)
        .ok_or_else(|| Error::invalid("Could not determine image format"))
}

/// Opens one image file (no backing chain). `fmt` of `None` probes.
pub fn open_image(path: &Path, fmt: Option<&str>, opts: &OpenOpts) -> Result<Box<dyn BlockDriver>> {
    let file = ImageFile::open(path, opts.writable)?;
    let ops = match fmt {
        Some(f) => format(f)?,
        None => probe(&file)?,
    };
    (ops.open)(file, opts)
}

/// Identity of a file for loop detection.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Opens an image and its whole backing chain. Backing files are opened
/// read-only; a chain that loops (a->a, a->b->a ...) is an error, never a hang.
pub fn open_chain(path: &Path, fmt: Option<&str>, opts: &OpenOpts) -> Result<Box<dyn BlockDriver>> {
    let mut seen = HashSet::new();
    open_chain_inner(path, fmt, opts, &mut seen)
}

fn open_chain_inner(
    path: &Path,
    fmt: Option<&str>,
    opts: &OpenOpts,
    seen: &mut HashSet<(u64, u64)>,
) -> Result<Box<dyn BlockDriver>> {
    if let Some(id) = file_id(path) {
        if !seen.insert(id) {
            return Err(Error::BackingLoop(path.display().to_string()));
        }
    }
    let mut img = open_image(path, fmt, opts)?;
    if opts.no_backing {
        return Ok(img);
    }
    if let Some(name) = img.backing_file_name() {
        let bpath = driver::resolve_backing_path(path, &name);
        let bfmt = img.backing_format();
        let bopts = OpenOpts {
            writable: false,
            key: opts.key.clone(),
            no_backing: false,
            metadata_only: opts.metadata_only,
            repair: false,
        };
        let backing =
            open_chain_inner(&bpath, bfmt.as_deref(), &bopts, seen).map_err(|e| match e {
                Error::BackingLoop(_) => e,
                other => Error::invalid(format!(
                    "Could not open backing file: Could not open '{}': {}",
                    bpath.display(),
                    strip_path_prefix(&other)
                )),
            })?;
        img.set_backing(Some(backing));
    }
    Ok(img)
}

/// The message of an error without a leading "path: " prefix.
pub fn strip_path_prefix(e: &Error) -> String {
    match e {
        Error::Io { source, .. } => os_error_text(source),
        other => other.to_string(),
    }
}

/// The strerror text of an I/O error, as QEMU prints it ("No such file or
/// directory"), without Rust's " (os error 2)" suffix.
pub fn os_error_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}
