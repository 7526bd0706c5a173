//! The raw format: the virtual disk is the file, byte for byte. Holes in the
//! host file are reported as zero extents (QEMU's file driver does the same
//! through SEEK_DATA/SEEK_HOLE).

use std::path::Path;

use crate::driver::{check_range, Alloc, BlockDriver, BlockStatus, CreateOpts, OptDesc, OptKind};
use crate::error::{Error, Result};
use crate::file::{ImageFile, Prealloc};

/// Creation options of raw (the file protocol adds `preallocation`).
pub const CREATE_OPTS: &[OptDesc] = &[OptDesc {
    name: "size",
    kind: OptKind::Size,
    help: "Virtual disk size",
}];

/// Largest raw image QEMU accepts (`INT64_MAX` rounded down to a sector).
pub const MAX_SIZE: u64 = (i64::MAX as u64) & !511;

/// An open raw image.
#[derive(Debug)]
pub struct Raw {
    file: ImageFile,
    size: u64,
}

impl Raw {
    /// Opens a raw image over a host file.
    pub fn open(file: ImageFile) -> Result<Raw> {
        let size = round_up_sector(file.len()?);
        Ok(Raw { file, size })
    }
}

fn round_up_sector(n: u64) -> u64 {
    n.div_ceil(512).saturating_mul(512)
}

/// Creates a raw image of `size` bytes (rounded up to 512).
pub fn create(path: &Path, size: u64, opts: &CreateOpts) -> Result<()> {
    let size = round_up_sector(size);
    if size > MAX_SIZE {
        return Err(Error::invalid(
            "The image size is too large for file format 'raw'",
        ));
    }
    let prealloc = opts.prealloc()?;
    if prealloc == Prealloc::Metadata {
        return Err(Error::invalid("Unsupported preallocation mode 'metadata'"));
    }
    let file = ImageFile::create(path)?;
    file.grow(size, prealloc)?;
    // Like qemu-img, allocate the first block of a new image (QEMU does it
    // so alignment probing has a real block to read); `map` and "disk size"
    // then match the real tool's on images we create.
    let first = size.min(4096);
    if first > 0 && prealloc != Prealloc::Full {
        file.write_at(&vec![0u8; first as usize], 0)?;
    }
    file.flush()
}

impl BlockDriver for Raw {
    fn format_name(&self) -> &'static str {
        "raw"
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

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(offset, buf.len() as u64, self.size)?;
        self.file.read_at(buf, offset)
    }

    fn write(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        check_range(offset, buf.len() as u64, self.size)?;
        self.file.write_at(buf, offset)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, may_unmap: bool) -> Result<()> {
        check_range(offset, len, self.size)?;
        if may_unmap {
            self.file.punch_hole(offset, len)
        } else {
            self.file.write_zeroes(offset, len)
        }
    }

    fn discard(&mut self, offset: u64, len: u64) -> Result<()> {
        check_range(offset, len, self.size)?;
        self.file.punch_hole(offset, len)
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
        let ext = self.file.host_extent(offset, max_len)?;
        Ok(BlockStatus {
            len: ext.len.max(1).min(max_len),
            alloc: if ext.hole { Alloc::Zero } else { Alloc::Data },
            offset: Some(offset),
        })
    }

    fn resize(&mut self, new_size: u64, prealloc: Prealloc, shrink: bool) -> Result<()> {
        if new_size < self.size && !shrink {
            return Err(Error::invalid(
                "Use the --shrink option to perform a shrink operation.",
            ));
        }
        if new_size > MAX_SIZE {
            return Err(Error::invalid(
                "The image size is too large for file format 'raw'",
            ));
        }
        if prealloc == Prealloc::Metadata {
            return Err(Error::invalid("Unsupported preallocation mode 'metadata'"));
        }
        self.file.grow(new_size, prealloc)?;
        self.size = round_up_sector(new_size);
        Ok(())
    }

    fn make_empty(&mut self) -> Result<()> {
        Err(Error::unsupported(
            "Image format 'raw' cannot be emptied: it has no backing file",
        ))
    }
}
