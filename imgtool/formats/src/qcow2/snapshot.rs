//! Internal snapshots: the snapshot table (spec section "Snapshots") and
//! the operations on it: create (copy the active L1 table and take a
//! reference on everything it reaches), apply (make a copy of the snapshot's
//! L1 active), delete (drop those references) and list.

use super::cluster::{COMPRESSED, COPIED, OFFSET_MASK};
use super::header::{be32, be64};
use super::io::Held;
use super::refcount::Refcounts;
use super::Qcow2;
use crate::driver::SnapshotInfo;
use crate::error::{Error, Result};
use crate::file::ImageFile;

/// QEMU's limits on the snapshot table.
pub const MAX_SNAPSHOTS: u32 = 65536;
pub const MAX_TABLE_BYTES: u64 = 64 << 20;
const MAX_EXTRA: u32 = 1024;

/// One snapshot table entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub l1_offset: u64,
    pub l1_size: u32,
    pub id: String,
    pub name: String,
    pub date_sec: u32,
    pub date_nsec: u32,
    pub vm_clock_nsec: u64,
    pub vm_state_size: u64,
    pub disk_size: Option<u64>,
    pub icount: Option<u64>,
    /// Extra data bytes past the fields this implementation knows.
    pub extra_tail: Vec<u8>,
}

impl Snapshot {
    /// The public description.
    pub fn info(&self) -> SnapshotInfo {
        SnapshotInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            vm_state_size: self.vm_state_size,
            date_sec: self.date_sec as u64,
            date_nsec: self.date_nsec,
            vm_clock_nsec: self.vm_clock_nsec,
            icount: self.icount.filter(|&i| i != u64::MAX),
        }
    }

    fn serialize(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.l1_offset.to_be_bytes());
        out.extend_from_slice(&self.l1_size.to_be_bytes());
        out.extend_from_slice(&(self.id.len() as u16).to_be_bytes());
        out.extend_from_slice(&(self.name.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.date_sec.to_be_bytes());
        out.extend_from_slice(&self.date_nsec.to_be_bytes());
        out.extend_from_slice(&self.vm_clock_nsec.to_be_bytes());
        out.extend_from_slice(&(self.vm_state_size.min(u32::MAX as u64) as u32).to_be_bytes());
        let extra_len = 24 + self.extra_tail.len();
        out.extend_from_slice(&(extra_len as u32).to_be_bytes());
        out.extend_from_slice(&self.vm_state_size.to_be_bytes());
        out.extend_from_slice(&self.disk_size.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&self.icount.unwrap_or(u64::MAX).to_be_bytes());
        out.extend_from_slice(&self.extra_tail);
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(self.name.as_bytes());
        let _ = start;
    }
}

/// Reads and validates the snapshot table.
pub fn read_table(
    file: &ImageFile,
    offset: u64,
    count: u32,
    cluster_bits: u32,
) -> Result<Vec<Snapshot>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if count > MAX_SNAPSHOTS {
        return Err(Error::corrupt("Too many snapshots"));
    }
    if offset & ((1 << cluster_bits) - 1) != 0 {
        return Err(Error::corrupt("Snapshot table offset invalid"));
    }
    let file_len = file.len()?;
    let mut snaps = Vec::with_capacity(count.min(1024) as usize);
    let mut pos = offset;
    for i in 0..count {
        if pos - offset > MAX_TABLE_BYTES {
            return Err(Error::corrupt("Snapshot table too large"));
        }
        let mut h = [0u8; 40];
        file.read_at(&mut h, pos)?;
        if pos >= file_len {
            return Err(Error::corrupt(format!(
                "Snapshot table entry {i} lies beyond the end of the file"
            )));
        }
        let id_len = u16::from_be_bytes([h[12], h[13]]) as usize;
        let name_len = u16::from_be_bytes([h[14], h[15]]) as usize;
        let extra_len = be32(&h, 36);
        if extra_len > MAX_EXTRA {
            return Err(Error::corrupt(format!(
                "Too much extra metadata in snapshot table entry {i}\nYou can force-remove this extra metadata with qemu-img check -r all"
            )));
        }
        let mut extra = vec![0u8; extra_len as usize];
        file.read_at(&mut extra, pos + 40)?;
        let mut names = vec![0u8; id_len + name_len];
        file.read_at(&mut names, pos + 40 + extra_len as u64)?;
        let mut s = Snapshot {
            l1_offset: be64(&h, 0),
            l1_size: be32(&h, 8),
            id: String::from_utf8_lossy(&names[..id_len]).into_owned(),
            name: String::from_utf8_lossy(&names[id_len..]).into_owned(),
            date_sec: be32(&h, 16),
            date_nsec: be32(&h, 20),
            vm_clock_nsec: be64(&h, 24),
            vm_state_size: be32(&h, 32) as u64,
            ..Snapshot::default()
        };
        if extra.len() >= 8 {
            s.vm_state_size = be64(&extra, 0);
        }
        if extra.len() >= 16 {
            s.disk_size = Some(be64(&extra, 8));
        }
        if extra.len() >= 24 {
            s.icount = Some(be64(&extra, 16));
        }
        if extra.len() > 24 {
            s.extra_tail = extra[24..].to_vec();
        }
        let entry = 40 + extra_len as u64 + (id_len + name_len) as u64;
        pos += entry.div_ceil(8) * 8;
        snaps.push(s);
    }
    Ok(snaps)
}

/// Serialises a snapshot table.
pub fn serialize_table(snaps: &[Snapshot]) -> Vec<u8> {
    // Entries start 8-byte aligned; the table ends right after the last
    // entry (QEMU does not pad it).
    let mut out = Vec::new();
    for s in snaps {
        out.resize(out.len().div_ceil(8) * 8, 0);
        s.serialize(&mut out);
    }
    out
}

impl Qcow2 {
    fn read_l1(&self, offset: u64, size: u32) -> Result<Vec<u64>> {
        if offset & (self.cluster_size() - 1) != 0 || size as u64 * 8 > super::MAX_L1_BYTES {
            return Err(Error::corrupt("Snapshot L1 table offset invalid"));
        }
        let mut raw = vec![0u8; size as usize * 8];
        self.file
            .read_exact_at(&mut raw, offset, "snapshot L1 table")?;
        Ok(raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().expect("chunks_exact(8) yields 8 bytes")))
            .collect())
    }

    /// Adds one path reference (`+1`) or drops one (`-1`) for everything an
    /// L1 table reaches: its L2 tables and their clusters. Like QEMU, the
    /// COPIED flags of the L2 tables walked (and of the L1 table, written
    /// back at `l1_offset` if given) are then recomputed from the new
    /// refcounts. Returns the L1 table with recomputed flags.
    fn update_l1_refs(
        &mut self,
        l1: &[u64],
        l1_offset: Option<u64>,
        delta: i64,
    ) -> Result<Vec<u64>> {
        let cb = self.cluster_bits;
        let step = self.entry_words();
        let mut new_l1 = l1.to_vec();
        for (li, &e) in l1.iter().enumerate() {
            let off = e & OFFSET_MASK;
            if off == 0 {
                continue;
            }
            let mut words = self.l2c.table(&self.file, off)?.to_vec();
            let mut changed = false;
            for i in (0..words.len()).step_by(step) {
                let held = self.held(words[i]);
                match held {
                    Held::Nothing => continue,
                    h if delta < 0 => self.release_discard(h)?,
                    Held::Host(h) => self.rc.update(&self.file, h >> cb, 1, delta)?,
                    Held::Compressed(d) => {
                        let (f, n) = d.clusters(cb);
                        self.rc.update(&self.file, f, n, delta)?;
                    }
                }
                if let Held::Host(h) = held {
                    let r = self.rc.get(&self.file, h >> cb)?;
                    let w = if r == 1 {
                        words[i] | COPIED
                    } else {
                        words[i] & !COPIED
                    };
                    if w != words[i] {
                        words[i] = w;
                        changed = true;
                    }
                }
            }
            if changed {
                self.l2c.set(&self.file, off, 0, &words)?;
            }
            if delta < 0 {
                self.free_discard(off >> cb, 1)?;
            } else {
                self.rc.update(&self.file, off >> cb, 1, delta)?;
            }
            let r = self.rc.get(&self.file, off >> cb)?;
            if r == 0 {
                self.l2c.forget(off);
            }
            new_l1[li] = if r == 1 { e | COPIED } else { e & !COPIED };
        }
        if let Some(o) = l1_offset {
            if new_l1 != l1 {
                self.write_l1_at(&new_l1, o)?;
            }
        }
        Ok(new_l1)
    }

    /// True if taking one more reference on everything `l1` reaches would
    /// overflow a refcount.
    fn refs_would_overflow(&mut self, l1: &[u64]) -> Result<bool> {
        let cb = self.cluster_bits;
        let max = self.rc.max_refcount();
        let step = self.entry_words();
        for &e in l1 {
            let off = e & OFFSET_MASK;
            if off == 0 {
                continue;
            }
            if self.rc.get(&self.file, off >> cb)? >= max {
                return Ok(true);
            }
            let words = self.l2c.table(&self.file, off)?.to_vec();
            for i in (0..words.len()).step_by(step) {
                let (first, n) = match self.held(words[i]) {
                    Held::Nothing => continue,
                    Held::Host(h) => (h >> cb, 1),
                    Held::Compressed(d) => d.clusters(cb),
                };
                for c in first..first + n {
                    if self.rc.get(&self.file, c)? >= max {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }

    /// Drops one reference on clusters `[first, first+n)` and punches those
    /// that became free (QEMU discards them for snapshot operations).
    fn free_discard(&mut self, first: u64, n: u64) -> Result<()> {
        self.rc.update(&self.file, first, n, -1)?;
        let cb = self.cluster_bits;
        for c in first..first + n {
            if self.rc.get(&self.file, c)? == 0 {
                self.file.punch_hole(c << cb, 1 << cb)?;
            }
        }
        Ok(())
    }

    /// Sets COPIED on active L1/L2 entries exactly where the refcount is 1.
    pub(super) fn fix_copied_flags(&mut self) -> Result<()> {
        let cb = self.cluster_bits;
        let step = self.entry_words();
        for l1i in 0..self.l1.len() {
            let e = self.l1[l1i];
            let off = e & OFFSET_MASK;
            if off == 0 {
                continue;
            }
            let r = self.rc.get(&self.file, off >> cb)?;
            let want = if r == 1 { e | COPIED } else { e & !COPIED };
            if want != e {
                self.set_l1(l1i, want)?;
            }
            if r != 1 {
                continue;
            }
            let mut words = self.l2c.table(&self.file, off)?.to_vec();
            let mut changed = false;
            for i in (0..words.len()).step_by(step) {
                let w = words[i];
                if w & COMPRESSED != 0 || w & OFFSET_MASK == 0 {
                    continue;
                }
                let r = self.rc.get(&self.file, (w & OFFSET_MASK) >> cb)?;
                let nw = if r == 1 { w | COPIED } else { w & !COPIED };
                if nw != w {
                    words[i] = nw;
                    changed = true;
                }
            }
            if changed {
                self.l2c.set(&self.file, off, 0, &words)?;
            }
        }
        Ok(())
    }

    /// Writes the snapshot list to newly allocated clusters, points the
    /// header at it and frees the old table.
    fn write_snapshot_table(&mut self, snaps: Vec<Snapshot>) -> Result<()> {
        let cb = self.cluster_bits;
        let cs = self.cluster_size();
        let old_off = self.hdr.snapshots_offset;
        let old_len = serialize_table(&self.snapshots).len() as u64;
        let old_n = self.hdr.nb_snapshots;
        let bytes = serialize_table(&snaps);
        let new_off = if bytes.is_empty() {
            0
        } else {
            let n = (bytes.len() as u64).div_ceil(cs);
            let off = self.rc.alloc(&self.file, n)? << cb;
            self.file.write_at(&bytes, off)?;
            off
        };
        let mut h = [0u8; 12];
        h[..4].copy_from_slice(&(snaps.len() as u32).to_be_bytes());
        h[4..].copy_from_slice(&new_off.to_be_bytes());
        self.file.write_at(&h, 60)?;
        self.hdr.nb_snapshots = snaps.len() as u32;
        self.hdr.snapshots_offset = new_off;
        self.snapshots = snaps;
        if old_n > 0 && old_len > 0 {
            self.free_discard(old_off >> cb, old_len.div_ceil(cs))?;
        }
        Ok(())
    }

    /// Creates an internal snapshot of the active state.
    pub(super) fn create_snapshot(&mut self, info: &SnapshotInfo) -> Result<()> {
        // (QEMU allows several snapshots with the same name.)
        if self.snapshots.len() as u32 >= MAX_SNAPSHOTS {
            return Err(Error::invalid("Too many snapshots"));
        }
        let id = if info.id.is_empty() {
            let max = self
                .snapshots
                .iter()
                .filter_map(|s| s.id.parse::<u64>().ok())
                .max()
                .unwrap_or(0);
            (max + 1).to_string()
        } else {
            info.id.clone()
        };
        let cb = self.cluster_bits;
        let cs = self.cluster_size();
        let l1 = self.l1.clone();
        // Refuse before changing anything if a refcount would overflow
        // (QEMU fails with EINVAL, e.g. with 1-bit refcounts).
        if self.refs_would_overflow(&l1)? {
            return Err(Error::invalid("Invalid argument"));
        }
        self.update_l1_refs(&l1, None, 1)?;
        // The copy keeps the flags as they were (QEMU copies the table
        // verbatim; flags only matter in the active table).
        let copy: Vec<u64> = l1.iter().map(|e| e & !COPIED).collect();
        let l1_off = if l1.is_empty() {
            0
        } else {
            let n = (l1.len() as u64 * 8).div_ceil(cs);
            let off = self.rc.alloc(&self.file, n)? << cb;
            self.write_l1_at(&l1, off)?;
            off
        };
        let mut snaps = self.snapshots.clone();
        snaps.push(Snapshot {
            l1_offset: l1_off,
            l1_size: copy.len() as u32,
            id,
            name: info.name.clone(),
            date_sec: info.date_sec as u32,
            date_nsec: info.date_nsec,
            vm_clock_nsec: info.vm_clock_nsec,
            vm_state_size: info.vm_state_size,
            disk_size: Some(self.hdr.size),
            icount: Some(info.icount.unwrap_or(u64::MAX)),
            extra_tail: Vec::new(),
        });
        self.write_snapshot_table(snaps)?;
        // The active L1 now shares everything: clear its COPIED flags.
        self.write_l1_at(&copy, self.hdr.l1_table_offset)?;
        self.l1 = copy;
        Ok(())
    }

    /// Reverts the active state to a snapshot.
    pub(super) fn apply_snapshot(&mut self, id_or_name: &str) -> Result<()> {
        let idx = self.snapshot_index(id_or_name).ok_or_else(|| {
            // qemu-img's text; the caller prefixes "Could not apply snapshot 'x': ".
            Error::invalid("Failed to load snapshot: No such file or directory")
        })?;
        let s = self.snapshots[idx].clone();
        let snap_l1 = self.read_l1(s.l1_offset, s.l1_size)?;
        // A different disk size is set first, as a resize (QEMU shrinks or
        // grows the active state, then switches the L1 table).
        if let Some(size) = s.disk_size {
            if size != self.hdr.size {
                super::create::resize(self, size, crate::file::Prealloc::Off, true)?;
            }
        }
        let snap_l1 = self.update_l1_refs(&snap_l1, Some(s.l1_offset), 1)?;
        if snap_l1.len() > self.l1.len() {
            self.grow_l1(snap_l1.len())?;
        }
        let old = self.l1.clone();
        let mut new: Vec<u64> = snap_l1.iter().map(|e| e & !COPIED).collect();
        new.resize(self.l1.len(), 0);
        self.write_l1_at(&new, self.hdr.l1_table_offset)?;
        self.l1 = new;
        self.update_l1_refs(&old, None, -1)?;
        self.l2c.clear();
        self.fix_copied_flags()
    }

    /// Switches a read-only image to a snapshot's L1 table and size, so
    /// reads return the snapshot's contents; nothing is written.
    pub(super) fn load_snapshot_tmp(&mut self, id: &str) -> Result<()> {
        if self.file.writable() {
            return Err(Error::invalid(
                "Temporarily loading a snapshot needs a read-only image",
            ));
        }
        let s = self
            .snapshots
            .iter()
            .find(|s| s.id == id)
            .cloned()
            .ok_or_else(|| Error::invalid("Can't find snapshot"))?;
        let mut l1 = self.read_l1(s.l1_offset, s.l1_size)?;
        let size = s.disk_size.unwrap_or(self.hdr.size);
        // Every cluster of the snapshot's disk must have an L1 slot: pad a
        // short table with unallocated entries.
        let per_l1 = self.cluster_size() << self.l2_bits;
        let need = size.div_ceil(per_l1) as usize;
        if need as u64 * 8 > super::MAX_L1_BYTES {
            return Err(Error::corrupt("Snapshot L1 table too large"));
        }
        if l1.len() < need {
            l1.resize(need, 0);
        }
        self.l1 = l1;
        self.hdr.size = size;
        self.l2c.clear();
        Ok(())
    }

    /// Deletes a snapshot and frees what only it referenced.
    pub(super) fn delete_snapshot(&mut self, id_or_name: &str) -> Result<()> {
        let idx = self.snapshot_index(id_or_name).ok_or_else(|| {
            // qemu-img's text; the caller prefixes "Could not delete snapshot 'x': ".
            Error::invalid("snapshot not found")
        })?;
        let s = self.snapshots[idx].clone();
        let snap_l1 = self.read_l1(s.l1_offset, s.l1_size)?;
        let mut snaps = self.snapshots.clone();
        snaps.remove(idx);
        self.write_snapshot_table(snaps)?;
        self.update_l1_refs(&snap_l1, None, -1)?;
        if s.l1_size > 0 {
            let n = (s.l1_size as u64 * 8).div_ceil(self.cluster_size());
            self.free_discard(s.l1_offset >> self.cluster_bits, n)?;
        }
        self.fix_copied_flags()
    }

    /// Drops every mapping of the active L1 (after commit).
    pub(super) fn empty_image(&mut self) -> Result<()> {
        self.decompressed = None;
        let cb = self.cluster_bits;
        let cs = self.cluster_size();
        let l1_clusters = (self.l1.len() as u64 * 8).div_ceil(cs);
        let per_block = 1u64 << self.rc.block_bits();
        let standard_layout = self.hdr.version >= 3
            && self.snapshots.is_empty()
            && self.hdr.bitmaps_ext.is_none()
            && self.rc.table_offset == cs
            && self.rc.table_clusters == 1
            && self.rc.block_offset(0) == 2 * cs
            && (self.hdr.l1_table_offset == 3 * cs || self.l1.is_empty())
            && 3 + l1_clusters <= per_block;
        if standard_layout {
            // Like QEMU: the image becomes a freshly created one (header,
            // refcount table, one refcount block, zeroed L1), truncated.
            // Zeroing the L1 first makes every data cluster unreachable,
            // so a crash in between only leaks.
            let zeros = vec![0u64; self.l1.len()];
            if !zeros.is_empty() {
                let mut raw = vec![0u8; (l1_clusters * cs) as usize];
                raw.truncate((l1_clusters * cs) as usize);
                self.file.write_at(&raw, self.hdr.l1_table_offset)?;
            }
            self.l1 = zeros;
            let mut block = vec![0u8; cs as usize];
            for c in 0..3 + l1_clusters {
                Refcounts::set_entry(self.rc.order, &mut block, c as usize, 1);
            }
            self.file.write_at(&block, 2 * cs)?;
            let mut table = vec![0u8; cs as usize];
            table[..8].copy_from_slice(&(2 * cs).to_be_bytes());
            self.file.write_at(&table, cs)?;
            self.file.set_len((3 + l1_clusters) * cs)?;
            self.rc = Refcounts::load(&self.file, cb, self.rc.order, cs, 1)?;
            self.l2c.clear();
            self.free_byte_offset = 0;
            return Ok(());
        }
        // With snapshots: every active L2 table becomes ours and empty.
        let step = self.entry_words();
        for l1i in 0..self.l1.len() {
            if self.l1[l1i] & OFFSET_MASK == 0 {
                continue;
            }
            let l2off = self.ensure_l2(l1i)?;
            let words = self.l2c.table(&self.file, l2off)?.to_vec();
            let helds: Vec<Held> = (0..words.len())
                .step_by(step)
                .map(|i| self.held(words[i]))
                .collect();
            self.l2c
                .set(&self.file, l2off, 0, &vec![0u64; words.len()])?;
            for h in helds {
                self.release_discard(h)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_layout_matches_qemu() {
        // An entry qemu-img 10.0.2 wrote into a v2 image (1 MiB disk).
        let s = Snapshot {
            l1_offset: 0x40000,
            l1_size: 1,
            id: "1".into(),
            name: "snap1".into(),
            date_sec: 0x6b06_820b,
            date_nsec: 0x117c_d268,
            vm_clock_nsec: 0,
            vm_state_size: 0,
            disk_size: Some(1 << 20),
            icount: Some(0),
            extra_tail: Vec::new(),
        };
        let b = serialize_table(std::slice::from_ref(&s));
        assert_eq!(b.len(), 70);
        assert_eq!(&b[..16], &[0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 1, 0, 1, 0, 5]);
        assert_eq!(&b[36..40], &[0, 0, 0, 0x18]);
        assert_eq!(&b[64..70], b"1snap1");
    }
}
