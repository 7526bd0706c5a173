//! `qemu-img check` for qcow2: rebuilds every reference from the header,
//! L1/L2 tables (active and snapshots), refcount structures, snapshot
//! table and bitmaps, compares them with the stored refcounts and reports
//! leaks and corruptions with the same lines the real qemu-img prints.
//! Repair sets wrong refcounts in place, rebuilds the whole refcount
//! structure at the end of the file when a cluster in use has refcount 0
//! (`-r leaks` then fails, as qemu-img does), and fixes OFLAG_COPIED bits.
//!
//! Hostile images cannot make it hang: every L2 table is walked once per
//! distinct offset (repeats are counted by multiplicity) and the reference
//! array is bounded by the file size.

use std::collections::BTreeMap;

use super::cluster::{CompressedDesc, COMPRESSED, COPIED, OFFSET_MASK, ZERO};
use super::refcount::{metadata_clusters, Refcounts};
use super::Qcow2;
use crate::driver::{CheckReport, FixMode};
use crate::error::{Error, Result};

/// Largest number of clusters a check tracks (2^28: 1 GiB of counters).
const MAX_CHECK_CLUSTERS: u64 = 1 << 28;

/// Reserved bits of a standard L2 entry (1-8 and 56-61).
const L2_RESERVED: u64 = 0x3f00_0000_0000_01fe;

struct Walk {
    refs: Vec<u32>,
    nb_clusters: u64,
    file_len: u64,
    cluster_bits: u32,
    corruptions: u64,
    check_errors: u64,
    messages: Vec<String>,
    allocated: u64,
    fragmented: u64,
    compressed: u64,
    /// Clusters holding refcount structures (freed by a rebuild).
    refcount_meta: Vec<u64>,
}

impl Walk {
    fn inc(&mut self, offset: u64, size: u64, times: u32) {
        if size == 0 {
            return;
        }
        let cb = self.cluster_bits;
        let first = offset >> cb;
        let last = (offset + size - 1) >> cb;
        if last >= self.nb_clusters {
            self.messages.push(format!(
                "ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset {offset:#x} size {size:#x}"
            ));
            self.corruptions += 1;
            return;
        }
        for c in first..=last {
            let r = &mut self.refs[c as usize];
            *r = r.saturating_add(times);
        }
    }
}

fn read_u64s(img: &Qcow2, offset: u64, count: usize) -> Result<Vec<u64>> {
    let mut raw = vec![0u8; count * 8];
    img.file.read_at(&mut raw, offset)?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("chunks_exact(8) yields 8 bytes")))
        .collect())
}

/// Counts references; does not change anything.
fn walk(img: &mut Qcow2) -> Result<Walk> {
    let cb = img.cluster_bits;
    let cs = img.cluster_size();
    let file_len = img.file.len()?;
    let nb_clusters = file_len.div_ceil(cs);
    if nb_clusters > MAX_CHECK_CLUSTERS {
        return Err(Error::unsupported(format!(
            "Image file too large to check ({nb_clusters} clusters)"
        )));
    }
    let mut w = Walk {
        refs: vec![0; nb_clusters as usize],
        nb_clusters,
        file_len,
        cluster_bits: cb,
        corruptions: 0,
        check_errors: 0,
        messages: Vec::new(),
        allocated: 0,
        fragmented: 0,
        compressed: 0,
        refcount_meta: Vec::new(),
    };
    w.inc(0, cs, 1);

    // All L1 tables: active first, then snapshots; each L2 table offset is
    // walked once with the number of paths that reach it.
    let mut l2_uses: BTreeMap<u64, u32> = BTreeMap::new();
    let mut l2_order: Vec<u64> = Vec::new();
    let active = img.l1.clone();
    w.inc(img.hdr.l1_table_offset, active.len() as u64 * 8, 1);
    let mut l1s: Vec<Vec<u64>> = vec![active];
    let mut seen_l1: BTreeMap<(u64, u32), u32> = BTreeMap::new();
    for s in img.snapshots.clone() {
        if s.l1_offset & (cs - 1) != 0 || s.l1_size as u64 * 8 > super::MAX_L1_BYTES {
            w.messages.push(format!(
                "ERROR snapshot {} ({}) has an invalid L1 table (offset {:#x}, {} entries)",
                s.id, s.name, s.l1_offset, s.l1_size
            ));
            w.corruptions += 1;
            continue;
        }
        w.inc(s.l1_offset, s.l1_size as u64 * 8, 1);
        *seen_l1.entry((s.l1_offset, s.l1_size)).or_insert(0) += 1;
    }
    let total_l1: u64 = seen_l1.keys().map(|(_, size)| *size as u64 * 8).sum();
    if total_l1 > 1 << 30 {
        return Err(Error::unsupported(format!(
            "Snapshot L1 tables too large to check ({total_l1} bytes)"
        )));
    }
    let mut snap_l1_mult: Vec<u32> = Vec::new();
    for ((off, size), n) in &seen_l1 {
        if off.saturating_add(*size as u64 * 8) > file_len {
            continue;
        }
        l1s.push(read_u64s(img, *off, *size as usize)?);
        snap_l1_mult.push(*n);
    }
    for (k, l1) in l1s.iter().enumerate() {
        let mult = if k == 0 { 1 } else { snap_l1_mult[k - 1] };
        for &e in l1 {
            let off = e & OFFSET_MASK;
            if off == 0 {
                continue;
            }
            if off & (cs - 1) != 0 {
                if k == 0 {
                    w.messages.push(format!(
                        "ERROR l2_offset={off:x}: Table is not cluster aligned; L1 entry corrupted"
                    ));
                    w.corruptions += 1;
                }
                continue;
            }
            let u = l2_uses.entry(off).or_insert(0);
            if *u == 0 {
                l2_order.push(off);
            }
            *u = u.saturating_add(mult);
        }
    }
    let mut active_l2: Vec<u64> = img.l1.iter().map(|e| e & OFFSET_MASK).collect();
    active_l2.dedup();
    let mut prev_end = 0u64;
    let ext = img.extended;
    let step = img.entry_words();
    for off in l2_order {
        let times = l2_uses[&off];
        w.inc(off, cs, times);
        if off >= file_len {
            continue;
        }
        let words = read_u64s(img, off, (cs / 8) as usize)?;
        let is_active = active_l2.contains(&off);
        for i in (0..words.len()).step_by(step) {
            let e = words[i];
            if e & COMPRESSED != 0 {
                let d = CompressedDesc::decode(e, cb);
                w.inc(d.offset & !511, (d.extra_sectors + 1) * 512, times);
                if is_active {
                    w.allocated += 1;
                    w.compressed += 1;
                    w.fragmented += 1;
                    prev_end = 0;
                }
                continue;
            }
            let reserved = if ext { L2_RESERVED | ZERO } else { L2_RESERVED };
            if e & reserved != 0 {
                w.messages.push(format!(
                    "ERROR found l2 entry with reserved bits set: {e:x}"
                ));
                w.corruptions += 1;
            }
            let host = e & OFFSET_MASK;
            if host == 0 {
                continue;
            }
            if host & (cs - 1) != 0 {
                w.messages.push(format!(
                    "ERROR offset={host:x}: Data cluster is not properly aligned; L2 entry corrupted."
                ));
                w.corruptions += 1;
            }
            if is_active {
                w.allocated += 1;
                if prev_end != 0 && host != prev_end {
                    w.fragmented += 1;
                }
                prev_end = host + cs;
            }
            w.inc(host, cs, times);
        }
    }

    // Snapshot table.
    if img.hdr.nb_snapshots > 0 {
        let len = super::snapshot::serialize_table(&img.snapshots).len() as u64;
        w.inc(img.hdr.snapshots_offset, len, 1);
    }
    // Refcount table and blocks.
    w.inc(img.rc.table_offset, (img.rc.table_clusters as u64) << cb, 1);
    for c in 0..img.rc.table_clusters as u64 {
        w.refcount_meta.push((img.rc.table_offset >> cb) + c);
    }
    for i in 0..img.rc.table.len() {
        if img.rc.table[i] & 511 != 0 {
            w.messages.push(format!(
                "ERROR refcount table entry {i} has reserved bits set"
            ));
            w.corruptions += 1;
            continue;
        }
        let b = img.rc.table[i];
        if b == 0 {
            continue;
        }
        if b & (cs - 1) != 0 {
            w.messages.push(format!(
                "ERROR refcount block {i} is not cluster aligned; refcount table entry corrupted"
            ));
            w.corruptions += 1;
            continue;
        }
        w.inc(b, cs, 1);
        w.refcount_meta.push(b >> cb);
    }
    // The LUKS header (full disk encryption header pointer extension).
    if let Some(c) = img.hdr.crypto_ext.as_ref().filter(|c| c.len() >= 16) {
        let off = u64::from_be_bytes(c[0..8].try_into().expect("8-byte slice"));
        let len = u64::from_be_bytes(c[8..16].try_into().expect("8-byte slice"));
        w.inc(off, len.div_ceil(cs) * cs, 1);
    }
    walk_bitmaps(img, &mut w)?;
    Ok(w)
}

/// References of persistent bitmaps: directory, tables, data clusters.
fn walk_bitmaps(img: &mut Qcow2, w: &mut Walk) -> Result<()> {
    // QEMU only trusts the bitmaps of version 3 images whose autoclear
    // bit says they are consistent; otherwise their clusters are leaks.
    if img.hdr.version < 3 || img.hdr.autoclear & super::header::AUTOCLEAR_BITMAPS == 0 {
        return Ok(());
    }
    let Some(ext) = img.hdr.bitmaps_ext.clone() else {
        return Ok(());
    };
    if ext.len() < 24 {
        return Ok(());
    }
    let cs = img.cluster_size();
    let nb = u32::from_be_bytes([ext[0], ext[1], ext[2], ext[3]]);
    let size = u64::from_be_bytes(ext[8..16].try_into().expect("slice of 8 bytes"));
    let off = u64::from_be_bytes(ext[16..24].try_into().expect("slice of 8 bytes"));
    if size > 64 << 20 || off.saturating_add(size) > w.file_len {
        return Ok(());
    }
    w.inc(off, size, 1);
    let mut dir = vec![0u8; size as usize];
    img.file.read_at(&mut dir, off)?;
    let mut p = 0usize;
    for _ in 0..nb.min(65535) {
        if p + 24 > dir.len() {
            break;
        }
        let t_off = u64::from_be_bytes(dir[p..p + 8].try_into().expect("slice of 8 bytes"));
        let t_size = u32::from_be_bytes(dir[p + 8..p + 12].try_into().expect("slice of 4 bytes"));
        let name_len = u16::from_be_bytes([dir[p + 18], dir[p + 19]]) as usize;
        let extra =
            u32::from_be_bytes(dir[p + 20..p + 24].try_into().expect("slice of 4 bytes")) as usize;
        p = (p + 24 + extra + name_len).div_ceil(8) * 8;
        if t_size as u64 * 8 > 64 << 20 || t_off.saturating_add(t_size as u64 * 8) > w.file_len {
            continue;
        }
        w.inc(t_off, t_size as u64 * 8, 1);
        for e in read_u64s(img, t_off, t_size as usize)? {
            let d = e & OFFSET_MASK;
            if d != 0 {
                w.inc(d, cs, 1);
            }
        }
    }
    Ok(())
}

/// Checks (and repairs) an image.
pub fn check(img: &mut Qcow2, fix: FixMode) -> Result<CheckReport> {
    let first = run_pass(img, fix)?;
    if !(fix.leaks || fix.errors) || (first.leaks_fixed == 0 && first.corruptions_fixed == 0) {
        return Ok(first);
    }
    // Double check the repaired image, as qemu-img does.
    let mut second = match run_pass(img, FixMode::default()) {
        Ok(r) => r,
        Err(e) => return Err(with_messages(first.messages, e)),
    };
    let mut messages = first.messages;
    messages.append(&mut second.messages);
    Ok(CheckReport {
        corruptions_fixed: first.corruptions_fixed,
        leaks_fixed: first.leaks_fixed,
        messages,
        ..second
    })
}

/// `error` with `messages` to print before it (messages already carried
/// by a failed check come after them).
fn with_messages(mut messages: Vec<String>, error: Error) -> Error {
    match error {
        Error::CheckFailed {
            messages: mut later,
            error,
        } => {
            messages.append(&mut later);
            Error::CheckFailed { messages, error }
        }
        e if messages.is_empty() => e,
        e => Error::CheckFailed {
            messages,
            error: Box::new(e),
        },
    }
}

fn run_pass(img: &mut Qcow2, fix: FixMode) -> Result<CheckReport> {
    img.l2c.clear();
    img.rc.invalidate();
    let mut w = walk(img)?;
    // Messages found so far are printed even when the pass fails.
    compare_and_repair(img, fix, &mut w)
        .map_err(|e| with_messages(std::mem::take(&mut w.messages), e))
}

fn compare_and_repair(img: &mut Qcow2, fix: FixMode, w: &mut Walk) -> Result<CheckReport> {
    let cb = img.cluster_bits;
    let mut leaks = 0u64;
    let mut leaks_fixed = 0u64;
    let mut corruptions_fixed = 0u64;
    let mut low: Vec<(u64, u64, u64)> = Vec::new();
    let mut leaked: Vec<(u64, u64, u64)> = Vec::new();
    for i in 0..w.nb_clusters {
        let r = match img.rc.get(&img.file, i) {
            Ok(r) => r,
            Err(_) => {
                w.check_errors += 1;
                continue;
            }
        };
        let f = w.refs[i as usize] as u64;
        if r == f {
            continue;
        }
        if r > f {
            w.messages
                .push(format!("Leaked cluster {i} refcount={r} reference={f}"));
            leaked.push((i, r, f));
        } else {
            w.messages
                .push(format!("ERROR cluster {i} refcount={r} reference={f}"));
            low.push((i, r, f));
        }
    }
    let mut corruptions = w.corruptions + low.len() as u64;
    // A refcount of 0 under a cluster in use cannot be patched in place
    // (the cluster could be handed out again): qemu-img rebuilds the
    // structure with `-r all` and gives up with `-r leaks` (observed).
    let zero_low = low.iter().any(|&(_, r, _)| r == 0);
    if fix.leaks && !fix.errors && zero_low {
        w.messages
            .push("ERROR need to rebuild refcount structures".to_string());
        return Err(Error::CheckFailed {
            messages: std::mem::take(&mut w.messages),
            error: Box::new(Error::RawIo(std::io::Error::from_raw_os_error(5))),
        });
    }
    if fix.errors && zero_low {
        w.messages.push("Rebuilding refcount structure".to_string());
        rebuild(img, w)?;
        corruptions_fixed += low.len() as u64;
        corruptions -= low.len() as u64;
        leaks_fixed += leaked.len() as u64;
    } else if fix.leaks || fix.errors {
        // Every mismatch in cluster order: fixed in place when the mode
        // allows, else reported again (as qemu-img does).
        let mut all: Vec<(u64, u64, u64)> = low.iter().chain(&leaked).copied().collect();
        all.sort_unstable();
        for (i, r, f) in all {
            let fixable = if r > f { fix.leaks } else { fix.errors };
            if !fixable {
                if r < f {
                    w.messages
                        .push(format!("ERROR cluster {i} refcount={r} reference={f}"));
                } else {
                    leaks += 1;
                }
                continue;
            }
            w.messages
                .push(format!("Repairing cluster {i} refcount={r} reference={f}"));
            img.rc.update(&img.file, i, 1, f as i64 - r as i64)?;
            if r > f {
                leaks_fixed += 1;
            } else {
                corruptions_fixed += 1;
                corruptions -= 1;
            }
        }
    } else {
        leaks = leaked.len() as u64;
    }
    // OFLAG_COPIED in the active tables.
    let (bad, fixed) = check_copied(img, fix.errors, &mut w.messages)?;
    corruptions += bad;
    corruptions_fixed += fixed;
    if fix.errors && corruptions_fixed > 0 {
        img.l2c.clear();
    }
    let mut end = 0;
    for i in (0..w.nb_clusters).rev() {
        if img.rc.get(&img.file, i).unwrap_or(0) > 0 || w.refs[i as usize] > 0 {
            end = i + 1;
            break;
        }
    }
    if end == 0 {
        end = w.nb_clusters;
    }
    // A rebuilt structure lies past the old end.
    let total_now = img.file.len()?.div_ceil(img.cluster_size());
    for i in (end..total_now).rev() {
        if img.rc.get(&img.file, i).unwrap_or(0) > 0 {
            end = i + 1;
            break;
        }
    }
    Ok(CheckReport {
        corruptions,
        leaks,
        check_errors: w.check_errors,
        corruptions_fixed,
        leaks_fixed,
        image_end_offset: Some(end << cb),
        total_clusters: Some(img.hdr.size.div_ceil(img.cluster_size())),
        allocated_clusters: Some(w.allocated),
        fragmented_clusters: Some(w.fragmented),
        compressed_clusters: Some(w.compressed),
        messages: std::mem::take(&mut w.messages),
    })
}

/// Compares COPIED flags of the active L1/L2 entries with refcounts.
fn check_copied(img: &mut Qcow2, fix: bool, msgs: &mut Vec<String>) -> Result<(u64, u64)> {
    let cb = img.cluster_bits;
    let cs = img.cluster_size();
    let file_len = img.file.len()?;
    let mut bad = 0;
    let mut fixed = 0;
    let step = img.entry_words();
    for l1i in 0..img.l1.len() {
        let e = img.l1[l1i];
        let off = e & OFFSET_MASK;
        if off == 0 || off & (cs - 1) != 0 {
            continue;
        }
        let r = if off >= file_len {
            0
        } else {
            img.rc.get(&img.file, off >> cb)?
        };
        if (r == 1) != (e & COPIED != 0) {
            if fix {
                msgs.push(format!(
                    "Repairing OFLAG_COPIED L2 cluster: l1_index={l1i} l1_entry={e:x} refcount={r}"
                ));
                let ne = if r == 1 { e | COPIED } else { e & !COPIED };
                img.set_l1(l1i, ne)?;
                fixed += 1;
            } else {
                msgs.push(format!(
                    "ERROR OFLAG_COPIED L2 cluster: l1_index={l1i} l1_entry={e:x} refcount={r}"
                ));
                bad += 1;
            }
        }
        if off >= file_len {
            continue;
        }
        let mut words = read_u64s(img, off, (cs / 8) as usize)?;
        let mut changed = false;
        for i in (0..words.len()).step_by(step) {
            let w = words[i];
            if w & COMPRESSED != 0 {
                continue;
            }
            let host = w & OFFSET_MASK;
            if host == 0 {
                continue;
            }
            let r = if host >= file_len {
                0
            } else {
                img.rc.get(&img.file, host >> cb)?
            };
            if (r == 1) != (w & COPIED != 0) {
                if fix {
                    msgs.push(format!(
                        "Repairing OFLAG_COPIED data cluster: l2_entry={w:x} refcount={r}"
                    ));
                    words[i] = if r == 1 { w | COPIED } else { w & !COPIED };
                    changed = true;
                    fixed += 1;
                } else {
                    msgs.push(format!(
                        "ERROR OFLAG_COPIED data cluster: l2_entry={w:x} refcount={r}"
                    ));
                    bad += 1;
                }
            }
        }
        if changed {
            let mut raw = Vec::with_capacity(cs as usize);
            for x in &words {
                raw.extend_from_slice(&x.to_be_bytes());
            }
            img.file.write_at(&raw, off)?;
            img.l2c.forget(off);
        }
    }
    Ok((bad, fixed))
}

/// Writes a fresh refcount structure holding the walked references at the
/// end of the file and switches the header to it.
/// Like QEMU, the new structure first still counts the old refcount table
/// and blocks; they are then repaired as leaks (freed and discarded).
fn rebuild(img: &mut Qcow2, w: &mut Walk) -> Result<()> {
    let counts: Vec<u64> = w.refs.iter().map(|&r| r as u64).collect();
    write_structure(img, counts, img.hdr.refcount_order, false)?;
    let cb = img.cluster_bits;
    let mut old = w.refcount_meta.clone();
    old.sort_unstable();
    old.dedup();
    for c in old {
        let r = img.rc.get(&img.file, c)?;
        let f = w
            .refs
            .get(c as usize)
            .map_or(0, |&x| x as u64)
            .saturating_sub(1);
        if r > f {
            w.messages
                .push(format!("Repairing cluster {c} refcount={r} reference={f}"));
            img.rc.update(&img.file, c, 1, -((r - f) as i64))?;
            if img.rc.get(&img.file, c)? == 0 {
                img.file.punch_hole(c << cb, 1 << cb)?;
            }
        }
    }
    Ok(())
}

/// Lays out a complete refcount structure for `counts` (one entry per
/// cluster) past every used cluster, then points the header at it.
/// With `mark_in_old`, the new clusters are first counted in the old
/// (trusted) structure, as QEMU's allocator would.
pub(super) fn write_structure(
    img: &mut Qcow2,
    mut counts: Vec<u64>,
    order: u32,
    mark_in_old: bool,
) -> Result<()> {
    let cb = img.cluster_bits;
    let cs = img.cluster_size();
    let file_clusters = img.file.len()?.div_ceil(cs);
    let start = (counts.len() as u64).max(file_clusters);
    let per_block = 1u64 << (cb + 3 - order);
    let (table, blocks) = metadata_clusters(start, cb, order, false);
    let table = table.max(1);
    let area = blocks + table;
    counts.resize((start + area) as usize, 0);
    for c in start..start + area {
        counts[c as usize] = 1;
    }
    let bb = img.rc.block_bits();
    let covered = (start >> bb..=(start + area - 1) >> bb)
        .all(|ti| usize::try_from(ti).is_ok_and(|ti| img.rc.block_offset(ti) != 0));
    if mark_in_old && covered {
        img.rc.update(&img.file, start, area, 1)?;
    }
    let max = if order == 6 {
        u64::MAX
    } else {
        (1u64 << (1 << order)) - 1
    };
    let mut rt = vec![0u64; (table * cs / 8) as usize];
    let nblocks = (counts.len() as u64).div_ceil(per_block);
    if nblocks > blocks || nblocks as usize > rt.len() {
        return Err(Error::invalid("Refcount structure sizing failed"));
    }
    for bi in 0..blocks {
        let lo = (bi * per_block) as usize;
        let hi = (((bi + 1) * per_block) as usize).min(counts.len());
        let mut data = vec![0u8; cs as usize];
        for (k, &r) in counts[lo..hi].iter().enumerate() {
            let r = r.min(max);
            if r != 0 {
                Refcounts::set_entry(order, &mut data, k, r);
            }
        }
        let off = (start + bi) << cb;
        img.file.write_at(&data, off)?;
        rt[bi as usize] = off;
    }
    let table_off = (start + blocks) << cb;
    let mut raw = Vec::with_capacity((table * cs) as usize);
    for e in &rt {
        raw.extend_from_slice(&e.to_be_bytes());
    }
    img.file.write_at(&raw, table_off)?;
    img.hdr.refcount_order = order;
    img.hdr.refcount_table_offset = table_off;
    img.hdr.refcount_table_clusters = table as u32;
    if order != 4 || img.hdr.version >= 3 {
        // Order and table in one header write (bytes 48..100).
        let mut b = [0u8; 52];
        b[..8].copy_from_slice(&table_off.to_be_bytes());
        b[8..12].copy_from_slice(&(table as u32).to_be_bytes());
        b[12..16].copy_from_slice(&img.hdr.nb_snapshots.to_be_bytes());
        b[16..24].copy_from_slice(&img.hdr.snapshots_offset.to_be_bytes());
        if img.hdr.version >= 3 {
            b[24..32].copy_from_slice(&img.hdr.incompatible.to_be_bytes());
            b[32..40].copy_from_slice(&img.hdr.compatible.to_be_bytes());
            b[40..48].copy_from_slice(&img.hdr.autoclear.to_be_bytes());
            b[48..52].copy_from_slice(&order.to_be_bytes());
            img.file.write_at(&b, 48)?;
        } else {
            img.file.write_at(&b[..24], 48)?;
        }
    } else {
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&table_off.to_be_bytes());
        b[8..12].copy_from_slice(&(table as u32).to_be_bytes());
        img.file.write_at(&b, 48)?;
    }
    img.rc = Refcounts::load(&img.file, cb, order, table_off, table as u32)?;
    img.rc.free_index = 0;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_checks_keep_their_messages_in_order() {
        let e = with_messages(
            vec!["a".into()],
            Error::CheckFailed {
                messages: vec!["b".into()],
                error: Box::new(Error::corrupt("x")),
            },
        );
        match e {
            Error::CheckFailed { messages, error } => {
                assert_eq!(messages, ["a", "b"]);
                assert_eq!(error.to_string(), "x");
            }
            other => panic!("unexpected {other:?}"),
        }
        let plain = with_messages(Vec::new(), Error::corrupt("y"));
        assert!(matches!(plain, Error::Corrupt(m) if m == "y"));
        let wrapped = with_messages(vec!["c".into()], Error::corrupt("z"));
        assert!(matches!(wrapped, Error::CheckFailed { ref messages, .. } if messages == &["c"]));
    }
}
