//! The host-file protocol layer under every format: positional reads and
//! writes, length, allocation (SEEK_DATA/SEEK_HOLE), hole punching and
//! preallocation. This is QEMU's "file" protocol node.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// How writes reach the disk (`-t`/`-T` cache modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// Flushes are honoured (the default: `writeback`).
    #[default]
    Writeback,
    /// Flushes are ignored (`unsafe`).
    Unsafe,
    /// O_DIRECT would be used by QEMU (`none`, `directsync`); we honour flushes
    /// and do not use O_DIRECT (buffers here are not aligned).
    Direct,
    /// Every write is followed by a flush (`writethrough`).
    Writethrough,
}

impl CacheMode {
    /// Parses a QEMU cache mode name.
    pub fn parse(s: &str) -> Result<CacheMode> {
        match s {
            "writeback" => Ok(CacheMode::Writeback),
            "unsafe" => Ok(CacheMode::Unsafe),
            "none" | "directsync" => Ok(CacheMode::Direct),
            "writethrough" => Ok(CacheMode::Writethrough),
            _ => Err(Error::invalid(format!("Invalid cache option: {s}"))),
        }
    }
}

/// Preallocation modes for creation and growth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Prealloc {
    #[default]
    Off,
    Metadata,
    Falloc,
    Full,
}

impl Prealloc {
    /// Parses `off|metadata|falloc|full`.
    pub fn parse(s: &str) -> Result<Prealloc> {
        match s {
            "off" => Ok(Prealloc::Off),
            "metadata" => Ok(Prealloc::Metadata),
            "falloc" => Ok(Prealloc::Falloc),
            "full" => Ok(Prealloc::Full),
            _ => Err(Error::invalid(format!(
                "Parameter 'preallocation' does not accept value '{s}'"
            ))),
        }
    }

    /// The name QEMU prints for the mode.
    pub fn name(self) -> &'static str {
        match self {
            Prealloc::Off => "off",
            Prealloc::Metadata => "metadata",
            Prealloc::Falloc => "falloc",
            Prealloc::Full => "full",
        }
    }
}

/// Whether a byte range of the host file is backed by data or is a hole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostExtent {
    /// Length of the run starting at the queried offset.
    pub len: u64,
    /// True if the run is a hole (reads as zeroes, no blocks allocated).
    pub hole: bool,
}

/// An open host file.
#[derive(Debug)]
pub struct ImageFile {
    file: File,
    path: PathBuf,
    writable: bool,
    cache: CacheMode,
}

impl ImageFile {
    /// Opens an existing file.
    pub fn open(path: &Path, writable: bool) -> Result<ImageFile> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            return Err(Error::io(
                path,
                io::Error::new(io::ErrorKind::IsADirectory, "Is a directory"),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(ImageFile {
            file,
            path: path.to_path_buf(),
            writable,
            cache: CacheMode::default(),
        })
    }

    /// Creates (or truncates) a file for a new image.
    pub fn create(path: &Path) -> Result<ImageFile> {
        if path.is_dir() {
            return Err(Error::io(
                path,
                io::Error::new(io::ErrorKind::IsADirectory, "Is a directory"),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(ImageFile {
            file,
            path: path.to_path_buf(),
            writable: true,
            cache: CacheMode::default(),
        })
    }

    /// Sets the cache mode (flush behaviour).
    pub fn set_cache(&mut self, cache: CacheMode) {
        self.cache = cache;
    }

    /// The path the file was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True if opened for writing.
    pub fn writable(&self) -> bool {
        self.writable
    }

    fn err(&self, e: io::Error) -> Error {
        Error::io(&self.path, e)
    }

    /// Reads exactly `buf.len()` bytes at `offset`; bytes past EOF read as zero.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    buf[done..].fill(0);
                    return Ok(());
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.err(e)),
            }
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes at `offset`, failing with a corruption
    /// error naming `what` if the file ends first.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64, what: &str) -> Result<()> {
        let len = self.len()?;
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > len)
        {
            return Err(Error::corrupt(format!(
                "{}: {what} at offset {offset} (length {}) is beyond the end of the file ({len} bytes)",
                self.path.display(),
                buf.len()
            )));
        }
        self.read_at(buf, offset)
    }

    /// Writes all of `buf` at `offset`.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly);
        }
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| self.err(e))?;
        if self.cache == CacheMode::Writethrough {
            self.file.sync_data().map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Current length of the file in bytes.
    pub fn len(&self) -> Result<u64> {
        Ok(self.file.metadata().map_err(|e| self.err(e))?.len())
    }

    /// True if the file is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Bytes actually allocated on the host (st_blocks * 512), QEMU's "disk size".
    pub fn allocated_size(&self) -> Result<u64> {
        Ok(self.file.metadata().map_err(|e| self.err(e))?.blocks() * 512)
    }

    /// Truncates or extends the file (extension is sparse).
    pub fn set_len(&self, len: u64) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly);
        }
        self.file.set_len(len).map_err(|e| self.err(e))
    }

    /// Grows the file to `len` with the given preallocation for the new part.
    pub fn grow(&self, len: u64, prealloc: Prealloc) -> Result<()> {
        let old = self.len()?;
        if len <= old {
            return self.set_len(len);
        }
        match prealloc {
            Prealloc::Off | Prealloc::Metadata => self.set_len(len),
            Prealloc::Falloc => self.fallocate(0, old, len - old),
            Prealloc::Full => {
                let chunk = vec![0u8; 1 << 20];
                let mut off = old;
                while off < len {
                    let n = (len - off).min(chunk.len() as u64) as usize;
                    self.write_at(&chunk[..n], off)?;
                    off += n as u64;
                }
                Ok(())
            }
        }
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly);
        }
        let (Ok(off), Ok(l)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(Error::invalid("fallocate range too large"));
        };
        // SAFETY: fallocate on a valid owned fd with plain integer arguments.
        let r = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, l) };
        if r != 0 {
            return Err(self.err(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Deallocates a range so it reads as zeroes. Falls back to writing zeroes
    /// when the host file system cannot punch holes.
    pub fn punch_hole(&self, offset: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        if self.fallocate(mode, offset, len).is_ok() {
            return Ok(());
        }
        self.write_zeroes(offset, len)
    }

    /// Writes zeroes over a range (keeps it allocated).
    pub fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        let chunk = vec![0u8; (len.min(1 << 20)) as usize];
        let mut off = offset;
        let end = offset + len;
        while off < end {
            let n = (end - off).min(chunk.len() as u64) as usize;
            self.write_at(&chunk[..n], off)?;
            off += n as u64;
        }
        Ok(())
    }

    /// Flushes written data to stable storage, unless the cache mode is `unsafe`.
    pub fn flush(&self) -> Result<()> {
        if !self.writable || self.cache == CacheMode::Unsafe {
            return Ok(());
        }
        self.file.sync_data().map_err(|e| self.err(e))
    }

    /// Describes the host allocation at `offset`: a run of data or a hole,
    /// clipped to `max_len`. Uses SEEK_DATA/SEEK_HOLE; a file system that
    /// does not support them reports everything as data.
    pub fn host_extent(&self, offset: u64, max_len: u64) -> Result<HostExtent> {
        let fd = self.file.as_raw_fd();
        let Ok(off) = i64::try_from(offset) else {
            return Ok(HostExtent {
                len: max_len,
                hole: true,
            });
        };
        // SAFETY: lseek on a valid owned fd; it only moves the file offset,
        // which this type never relies on (all I/O is positional).
        let data = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                // Past the last data: a hole until EOF (and beyond).
                return Ok(HostExtent {
                    len: max_len,
                    hole: true,
                });
            }
            return Ok(HostExtent {
                len: max_len,
                hole: false,
            });
        }
        let data = data as u64;
        if data > offset {
            return Ok(HostExtent {
                len: (data - offset).min(max_len),
                hole: true,
            });
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, off, libc::SEEK_HOLE) };
        if hole < 0 {
            return Ok(HostExtent {
                len: max_len,
                hole: false,
            });
        }
        let hole = hole as u64;
        Ok(HostExtent {
            len: hole.saturating_sub(offset).clamp(1, max_len.max(1)).min(max_len),
            hole: false,
        })
    }
}
