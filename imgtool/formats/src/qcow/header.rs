//! The qcow version 1 header: parsing with full validation of every field an
//! image file controls, and serialising a fresh image the way `qemu-img
//! create -f qcow` lays it out.
//!
//! Layout (all big-endian, 48 bytes), from the published qcow v1 format
//! description:
//!
//! ```text
//!  0  u32 magic "QFI\xfb"          4  u32 version (1)
//!  8  u64 backing_file_offset     16  u32 backing_file_size
//! 20  u32 mtime                   24  u64 size (virtual, bytes)
//! 32  u8  cluster_bits            33  u8  l2_bits
//! 34  u16 padding                 36  u32 crypt_method (0 none, 1 AES)
//! 40  u64 l1_table_offset
//! ```
//!
//! The limits (cluster and L2 table sizes between 512 bytes and 64 KiB, an
//! L1 table of at most `INT_MAX / 8` entries, backing names below 1024
//! bytes) and the error texts are those the real qemu-img 10 shows.

use crate::error::{Error, Result};

/// "QFI\xfb", shared with qcow2.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// The only version this driver opens (qcow2 takes 2 and 3).
pub const VERSION: u32 = 1;
/// Size of the fixed header.
pub const HEADER_SIZE: usize = 48;
/// Longest backing file name QEMU accepts.
pub const MAX_BACKING_NAME: u32 = 1023;
/// Most L1 entries QEMU accepts (the table's byte size must fit an `int`).
pub const MAX_L1_ENTRIES: u64 = (i32::MAX as u64) / 8;

/// No encryption.
pub const CRYPT_NONE: u32 = 0;
/// Legacy AES-128-CBC with a plain64 sector IV.
pub const CRYPT_AES: u32 = 1;

/// A parsed, validated qcow v1 header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub backing_file_offset: u64,
    pub backing_file_size: u32,
    pub mtime: u32,
    pub size: u64,
    pub cluster_bits: u32,
    pub l2_bits: u32,
    pub crypt_method: u32,
    pub l1_table_offset: u64,
    /// Number of L1 entries implied by `size`, `cluster_bits`, `l2_bits`.
    pub l1_size: u64,
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// Number of L1 entries needed to map `size` bytes with `shift` bits per
/// L1 entry (`cluster_bits + l2_bits`).
pub fn l1_entries(size: u64, shift: u32) -> u64 {
    // u128 so that a size near 2^64 cannot overflow the rounding.
    let per = 1u128 << shift;
    u128::from(size).div_ceil(per) as u64
}

impl Header {
    /// Parses and validates the first bytes of a file (at least 48 are
    /// needed). Offsets are checked against the file later, by the caller
    /// that knows the file length.
    pub fn parse(buf: &[u8]) -> Result<Header> {
        if buf.len() < 4 || buf[..4] != MAGIC {
            return Err(Error::invalid("Image not in qcow format"));
        }
        if buf.len() < HEADER_SIZE {
            return Err(Error::corrupt(format!(
                "qcow header truncated: the file has {} bytes, the header needs {HEADER_SIZE}",
                buf.len()
            )));
        }
        let version = be32(buf, 4);
        if version != VERSION {
            let mut msg = format!("qcow (v1) does not support qcow version {version}");
            if version == 2 || version == 3 {
                msg.push_str("\nTry the 'qcow2' driver instead.");
            }
            return Err(Error::unsupported(msg));
        }
        let cluster_bits = u32::from(buf[32]);
        let l2_bits = u32::from(buf[33]);
        if !(9..=16).contains(&cluster_bits) {
            return Err(Error::corrupt("Cluster size must be between 512 and 64k"));
        }
        // An L2 table holds 2^l2_bits eight-byte entries: 512 B .. 64 KiB.
        if !(6..=13).contains(&l2_bits) {
            return Err(Error::corrupt("L2 table size must be between 512 and 64k"));
        }
        let crypt_method = be32(buf, 36);
        if crypt_method > CRYPT_AES {
            return Err(Error::corrupt("invalid encryption method in qcow header"));
        }
        let size = be64(buf, 24);
        let l1_size = l1_entries(size, cluster_bits + l2_bits);
        if l1_size > MAX_L1_ENTRIES {
            return Err(Error::corrupt("Image too large"));
        }
        let backing_file_offset = be64(buf, 8);
        let backing_file_size = be32(buf, 16);
        if backing_file_offset != 0 && backing_file_size > MAX_BACKING_NAME {
            return Err(Error::corrupt("Backing file name too long"));
        }
        Ok(Header {
            backing_file_offset,
            backing_file_size,
            mtime: be32(buf, 20),
            size,
            cluster_bits,
            l2_bits,
            crypt_method,
            l1_table_offset: be64(buf, 40),
            l1_size,
        })
    }

    /// The 48 header bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..8].copy_from_slice(&VERSION.to_be_bytes());
        b[8..16].copy_from_slice(&self.backing_file_offset.to_be_bytes());
        b[16..20].copy_from_slice(&self.backing_file_size.to_be_bytes());
        b[20..24].copy_from_slice(&self.mtime.to_be_bytes());
        b[24..32].copy_from_slice(&self.size.to_be_bytes());
        // Validated to fit a byte on parse; `new_image` only uses 9/12.
        b[32] = self.cluster_bits as u8;
        b[33] = self.l2_bits as u8;
        b[36..40].copy_from_slice(&self.crypt_method.to_be_bytes());
        b[40..48].copy_from_slice(&self.l1_table_offset.to_be_bytes());
        b
    }

    /// The header of a new image as `qemu-img create` makes it: 4 KiB
    /// clusters with 512-entry L2 tables, or, over a backing file, 512-byte
    /// clusters with 4096-entry L2 tables; the backing name right after the
    /// header, the L1 table after it at an 8-byte boundary; mtime 0.
    pub fn new_image(size: u64, backing: Option<&str>, crypt_method: u32) -> Result<Header> {
        let (cluster_bits, l2_bits) = if backing.is_some() { (9, 12) } else { (12, 9) };
        let l1_size = l1_entries(size, cluster_bits + l2_bits);
        if l1_size > MAX_L1_ENTRIES {
            // QEMU would write a multi-gigabyte L1 table it then refuses to
            // open; refusing up front is kinder.
            return Err(Error::invalid("Image too large"));
        }
        let name_len = backing.map_or(0, str::len) as u64;
        let backing_file_size =
            u32::try_from(name_len).map_err(|_| Error::invalid("Backing file name too long"))?;
        let l1_table_offset = (HEADER_SIZE as u64 + name_len).div_ceil(8) * 8;
        Ok(Header {
            backing_file_offset: if backing.is_some() {
                HEADER_SIZE as u64
            } else {
                0
            },
            backing_file_size,
            mtime: 0,
            size,
            cluster_bits,
            l2_bits,
            crypt_method,
            l1_table_offset,
            l1_size,
        })
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Entries per L2 table.
    pub fn l2_entries(&self) -> u64 {
        1 << self.l2_bits
    }

    /// Byte length of the L1 table.
    pub fn l1_bytes(&self) -> u64 {
        self.l1_size * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header::new_image(1 << 20, None, CRYPT_NONE).expect("1 MiB image header")
    }

    #[test]
    fn round_trip() {
        let h = sample();
        assert_eq!(h.l1_size, 1);
        assert_eq!(h.l1_table_offset, 48);
        let p = Header::parse(&h.to_bytes()).expect("own header parses");
        assert_eq!(p, h);
    }

    #[test]
    fn backing_layout() {
        let h = Header::new_image(10 << 20, Some("/nonexist/longer/path/x.raw"), 0)
            .expect("header with backing");
        assert_eq!((h.cluster_bits, h.l2_bits), (9, 12));
        assert_eq!(h.backing_file_size, 27);
        assert_eq!(h.l1_table_offset, 80);
        assert_eq!(h.l1_size, 5);
    }

    #[test]
    fn rejects_bad_fields() {
        let good = sample().to_bytes();
        let patch = |at: usize, bytes: &[u8]| {
            let mut b = good;
            b[at..at + bytes.len()].copy_from_slice(bytes);
            Header::parse(&b)
        };
        assert!(patch(0, b"QFI\0").is_err());
        assert!(patch(4, &2u32.to_be_bytes())
            .map_err(|e| e.to_string())
            .is_err_and(|e| e.contains("Try the 'qcow2' driver")));
        assert!(patch(4, &0u32.to_be_bytes()).is_err());
        assert!(patch(32, &[8]).is_err());
        assert!(patch(32, &[17]).is_err());
        assert!(patch(32, &[30]).is_err());
        assert!(patch(33, &[5]).is_err());
        assert!(patch(33, &[14]).is_err());
        assert!(patch(36, &2u32.to_be_bytes()).is_err());
        assert!(patch(24, &u64::MAX.to_be_bytes()).is_err());
        assert!(patch(24, &(1u64 << 49).to_be_bytes()).is_err());
        assert!(patch(24, &(1u64 << 48).to_be_bytes()).is_ok());
        assert!(Header::parse(&good[..47]).is_err());
        assert!(Header::parse(&[]).is_err());
        let mut b = good;
        b[8..16].copy_from_slice(&48u64.to_be_bytes());
        b[16..20].copy_from_slice(&1024u32.to_be_bytes());
        assert!(Header::parse(&b).is_err());
    }
}
