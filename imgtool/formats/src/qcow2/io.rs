//! The data path of qcow2: mapping guest offsets through L1/L2, reads
//! through the backing chain, allocating writes with copy-on-write,
//! zeroing, discarding and compressed cluster writes.

use super::cluster::{
    classify_extended, classify_standard, CompressedDesc, Mapping, COMPRESSED, COPIED, OFFSET_MASK,
    SUBCLUSTERS, ZERO,
};
use super::compress::decompress_cluster;
use super::Qcow2;
use crate::driver::{read_backing, Alloc, BlockStatus};
use crate::error::{Error, Result};

/// What an L2 entry holds a reference to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Held {
    Nothing,
    Host(u64),
    Compressed(CompressedDesc),
}

/// All 32 "reads as zero" bits of an extended L2 bitmap.
const ALL_ZERO_BITS: u64 = 0xffff_ffff_0000_0000;
const ALL_ALLOC_BITS: u64 = 0x0000_0000_ffff_ffff;

impl Qcow2 {
    /// log2 of the unit one mapping covers (cluster, or subcluster).
    fn unit_bits(&self) -> u32 {
        if self.extended {
            self.cluster_bits - 5
        } else {
            self.cluster_bits
        }
    }

    /// log2 of the guest bytes one L2 table maps.
    pub(super) fn span_bits(&self) -> u32 {
        self.cluster_bits + self.l2_bits
    }

    /// Words per L2 entry.
    pub(super) fn entry_words(&self) -> usize {
        if self.extended {
            2
        } else {
            1
        }
    }

    /// What an entry holds a reference to.
    pub(super) fn held(&self, entry: u64) -> Held {
        if entry & COMPRESSED != 0 {
            return Held::Compressed(CompressedDesc::decode(entry, self.cluster_bits));
        }
        match entry & OFFSET_MASK {
            0 => Held::Nothing,
            h => Held::Host(h),
        }
    }

    /// Drops the reference an old entry held.
    pub(super) fn release(&mut self, held: Held) -> Result<()> {
        match held {
            Held::Nothing => Ok(()),
            Held::Host(h) => self.rc.update(&self.file, h >> self.cluster_bits, 1, -1),
            Held::Compressed(d) => {
                let (first, n) = d.clusters(self.cluster_bits);
                self.rc.update(&self.file, first, n, -1)
            }
        }
    }

    /// Drops a reference like [`Qcow2::release`] and, as QEMU passes
    /// discards down, punches host clusters that became free.
    pub(super) fn release_discard(&mut self, held: Held) -> Result<()> {
        self.release(held)?;
        let cb = self.cluster_bits;
        let (first, n) = match held {
            Held::Nothing => return Ok(()),
            Held::Host(h) => (h >> cb, 1),
            Held::Compressed(d) => d.clusters(cb),
        };
        for c in first..first + n {
            if self.rc.get(&self.file, c)? == 0 {
                self.file.punch_hole(c << cb, 1 << cb)?;
            }
        }
        Ok(())
    }

    /// True if guest bytes `[offset, offset+len)` read as zeroes according
    /// to block status through the whole chain (not by reading data).
    fn reads_as_zero(&mut self, offset: u64, len: u64) -> Result<bool> {
        let end = (offset + len).min(self.hdr.size);
        let mut pos = offset;
        while pos < end {
            let (n, data) = crate::chain_status(self, pos, end - pos)?;
            if data {
                return Ok(false);
            }
            pos += n;
        }
        Ok(true)
    }

    /// Maps `offset` and returns the mapping (adjusted to `offset`) and how
    /// many bytes from there map the same way (contiguously for data).
    pub(super) fn map(&mut self, offset: u64, max_len: u64) -> Result<(Mapping, u64)> {
        let span = self.span_bits();
        let l1i = (offset >> span) as usize;
        let table_end = ((l1i as u64) + 1) << span;
        let lim = offset.saturating_add(max_len).min(table_end);
        let l2off = self.l1_entry_offset(l1i);
        if l2off == 0 {
            return Ok((Mapping::Unallocated, lim - offset));
        }
        if l2off & (self.cluster_size() - 1) != 0 {
            return Err(Error::corrupt(format!(
                "L2 table offset {l2off:#x} unaligned (L1 index: {})",
                c_hex(l1i as u64)
            )));
        }
        let cb = self.cluster_bits;
        let ub = self.unit_bits();
        let ext = self.extended;
        let version = self.hdr.version;
        let mask = (1u64 << self.l2_bits) - 1;
        let words = self.l2c.table(&self.file, l2off)?;
        let unit_map = |pos: u64| -> Result<Mapping> {
            let ci = ((pos >> cb) & mask) as usize;
            if ext {
                let sc = ((pos >> ub) & (SUBCLUSTERS as u64 - 1)) as u32;
                classify_extended(words[2 * ci], words[2 * ci + 1], sc, cb)
            } else {
                classify_standard(words[ci], cb, version)
            }
            .map_err(|e| match e {
                // QEMU names the damaged L2 entry.
                Error::Corrupt(m) => Error::corrupt(format!(
                    "{m} (L2 offset: {l2off:#x}, L2 index: {})",
                    c_hex(ci as u64)
                )),
                e => e,
            })
        };
        let first = unit_map(offset)?;
        let in_unit = offset & ((1 << ub) - 1);
        let first = match first {
            Mapping::Data(h) => Mapping::Data(h + in_unit),
            Mapping::Zero(Some(h)) => Mapping::Zero(Some(h + (offset & ((1 << cb) - 1)))),
            m => m,
        };
        let mut pos = ((offset >> ub) + 1) << ub;
        while pos < lim {
            // A damaged entry ends the run; it is reported when a query
            // starts there (QEMU returns the valid prefix first).
            let Ok(m) = unit_map(pos) else {
                break;
            };
            let same = match (first, m) {
                (Mapping::Data(h0), Mapping::Data(h)) => h == h0 + (pos - offset),
                // Preallocated zero clusters join only contiguous ones
                // (QEMU reports their host offsets), never plain ones.
                (Mapping::Zero(None), Mapping::Zero(None)) => true,
                (Mapping::Zero(Some(h0)), Mapping::Zero(Some(h))) => h == h0 + (pos - offset),
                (Mapping::Unallocated, Mapping::Unallocated) => true,
                (Mapping::Compressed(a), Mapping::Compressed(b)) => {
                    a == b && (pos >> cb) == (offset >> cb)
                }
                _ => false,
            };
            if !same {
                break;
            }
            pos += 1 << ub;
        }
        Ok((first, pos.min(lim) - offset))
    }

    /// Reads guest bytes (range already checked). Whole compressed clusters
    /// of one read are inflated in parallel on every core.
    pub(super) fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if self.hdr.crypt_method != 0 {
            return Err(Error::unsupported(
                "Encrypted qcow2 images (AES or LUKS) are not supported",
            ));
        }
        let cs = self.cluster_size();
        let mut whole: Vec<(usize, CompressedDesc)> = Vec::new();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (m, run) = self.map(pos, (buf.len() - done) as u64)?;
            let n = run as usize;
            let out = &mut buf[done..done + n];
            match m {
                Mapping::Unallocated => read_backing(self.backing.as_deref_mut(), pos, out)?,
                Mapping::Zero(_) => out.fill(0),
                Mapping::Data(h) => self.file.read_at(out, h)?,
                Mapping::Compressed(d) => {
                    let co = (pos & (cs - 1)) as usize;
                    if co == 0 && n as u64 == cs {
                        whole.push((done, d));
                    } else {
                        let data = self.decompress(d)?;
                        out.copy_from_slice(&data[co..co + n]);
                    }
                }
            }
            done += n;
        }
        self.inflate_whole_clusters(&whole, buf)
    }

    /// Inflates whole compressed clusters into their places in `buf`
    /// (`(offset in buf, descriptor)`, ascending, disjoint), spreading the
    /// work over the available cores.
    fn inflate_whole_clusters(
        &mut self,
        jobs: &[(usize, CompressedDesc)],
        buf: &mut [u8],
    ) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let cs = self.cluster_size() as usize;
        let file_len = self.file.len()?;
        let mut srcs = Vec::with_capacity(jobs.len());
        for (_, d) in jobs {
            if d.offset >= file_len {
                return Err(Error::corrupt(format!(
                    "Compressed cluster at host offset {:#x} lies beyond the end of the file",
                    d.offset
                )));
            }
            let len = d.max_len().min(file_len - d.offset);
            let mut src = vec![0u8; len as usize];
            self.file.read_at(&mut src, d.offset)?;
            srcs.push(src);
        }
        // Carve the disjoint output slices out of `buf`.
        let mut outs: Vec<&mut [u8]> = Vec::with_capacity(jobs.len());
        let mut rest = buf;
        let mut base = 0usize;
        for (off, _) in jobs {
            let (_, tail) = rest.split_at_mut(off - base);
            let (out, tail) = tail.split_at_mut(cs);
            outs.push(out);
            rest = tail;
            base = off + cs;
        }
        let kind = self.compression;
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, jobs.len());
        if threads == 1 {
            for (src, out) in srcs.iter().zip(outs) {
                decompress_cluster(kind, src, out)?;
            }
            return Ok(());
        }
        let per = jobs.len().div_ceil(threads);
        let mut pairs: Vec<(&Vec<u8>, &mut [u8])> = srcs.iter().zip(outs).collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = pairs
                .chunks_mut(per)
                .map(|part| {
                    s.spawn(move || -> Result<()> {
                        for (src, out) in part.iter_mut() {
                            decompress_cluster(kind, src, out)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::corrupt("decompression worker failed")))
            })
        })
    }

    fn decompress(&mut self, d: CompressedDesc) -> Result<&[u8]> {
        let key = d.offset | (d.extra_sectors << 56);
        if self.decompressed.as_ref().is_none_or(|(k, _)| *k != key) {
            let file_len = self.file.len()?;
            if d.offset >= file_len {
                return Err(Error::corrupt(format!(
                    "Compressed cluster at host offset {:#x} lies beyond the end of the file",
                    d.offset
                )));
            }
            let len = d.max_len().min(file_len - d.offset);
            let mut src = vec![0u8; len as usize];
            self.file.read_at(&mut src, d.offset)?;
            let mut out = vec![0u8; self.cluster_size() as usize];
            decompress_cluster(self.compression, &src, &mut out)?;
            self.decompressed = Some((key, out));
        }
        Ok(&self
            .decompressed
            .as_ref()
            .expect("decompressed cache was filled just above")
            .1)
    }

    /// Block status of this layer.
    pub(super) fn status(&mut self, offset: u64, max_len: u64) -> Result<BlockStatus> {
        let max_len = max_len.min(self.hdr.size.saturating_sub(offset));
        if max_len == 0 {
            return Err(Error::OutOfRange {
                offset,
                len: 0,
                size: self.hdr.size,
            });
        }
        let mut total = 0;
        let mut result: Option<BlockStatus> = None;
        // Merge runs across L2 tables.
        while total < max_len {
            let (m, len) = match self.map(offset + total, max_len - total) {
                Ok(x) => x,
                // Damage after a valid run is reported by the next query.
                Err(_) if result.is_some() => break,
                Err(e) => return Err(e),
            };
            let (alloc, host) = match m {
                Mapping::Unallocated => (Alloc::Unallocated, None),
                Mapping::Zero(h) => (Alloc::Zero, h),
                Mapping::Data(h) => (Alloc::Data, Some(h)),
                Mapping::Compressed(_) => (Alloc::Compressed, None),
            };
            match &mut result {
                None => {
                    result = Some(BlockStatus {
                        len,
                        alloc,
                        offset: host,
                    })
                }
                Some(r) => {
                    let cont = r.alloc == alloc
                        && match alloc {
                            Alloc::Data => host == r.offset.map(|o| o + r.len),
                            Alloc::Compressed => false,
                            Alloc::Zero => match (r.offset, host) {
                                (None, None) => true,
                                (Some(o), Some(h)) => h == o + r.len,
                                _ => false,
                            },
                            Alloc::Unallocated => true,
                        };
                    if !cont {
                        break;
                    }
                    r.len += len;
                }
            }
            total += len;
            if alloc == Alloc::Compressed {
                break;
            }
        }
        Ok(result.expect("max_len > 0, so at least one run was mapped"))
    }

    /// Makes sure the L2 table for `l1i` exists and is exclusively ours
    /// (COPIED); returns its offset.
    pub(super) fn ensure_l2(&mut self, l1i: usize) -> Result<u64> {
        let cs = self.cluster_size();
        let e = *self
            .l1
            .get(l1i)
            .ok_or_else(|| Error::corrupt(format!("L1 index {l1i} beyond the L1 table")))?;
        let off = e & OFFSET_MASK;
        if off != 0 && off & (cs - 1) != 0 {
            return Err(Error::corrupt(format!(
                "L2 table offset {off:#x} unaligned"
            )));
        }
        if off != 0 && e & COPIED != 0 {
            return Ok(off);
        }
        if off != 0 && self.rc.get(&self.file, off >> self.cluster_bits)? == 1 {
            self.set_l1(l1i, off | COPIED)?;
            return Ok(off);
        }
        let words = if off == 0 {
            vec![0u64; (cs / 8) as usize]
        } else {
            self.l2c.table(&self.file, off)?.to_vec()
        };
        let new = self.rc.alloc(&self.file, 1)? << self.cluster_bits;
        self.check_overlap(new, cs)?;
        let mut raw = Vec::with_capacity(cs as usize);
        for w in &words {
            raw.extend_from_slice(&w.to_be_bytes());
        }
        self.file.write_at(&raw, new)?;
        self.l2c.install(new, words);
        self.set_l1(l1i, new | COPIED)?;
        if off != 0 {
            self.rc
                .update(&self.file, off >> self.cluster_bits, 1, -1)?;
        }
        Ok(new)
    }

    /// Allocates `n` contiguous data clusters; returns the host offset.
    fn alloc_data(&mut self, n: u64) -> Result<u64> {
        let host = self.rc.alloc(&self.file, n)? << self.cluster_bits;
        self.check_overlap(host, n << self.cluster_bits)?;
        Ok(host)
    }

    fn entry_at(&mut self, l2off: u64, ci: usize) -> Result<(u64, u64)> {
        let w = self.l2c.table(&self.file, l2off)?;
        if self.extended {
            Ok((w[2 * ci], w[2 * ci + 1]))
        } else {
            Ok((w[ci], 0))
        }
    }

    /// Writes guest bytes (range checked, header prepared).
    pub(super) fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        self.decompressed = None;
        let span = self.span_bits();
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        // Host end of the previous cluster of this request (across L2
        // tables): new clusters go right after it when free there, as QEMU
        // places them.
        let mut prev_end: Option<u64> = None;
        while pos < end {
            let l1i = (pos >> span) as usize;
            let chunk_end = end.min(((l1i as u64) + 1) << span);
            let data = &buf[(pos - offset) as usize..(chunk_end - offset) as usize];
            self.write_in_table(l1i, pos, data, &mut prev_end)?;
            pos = chunk_end;
        }
        // Old clusters are freed once the whole request is mapped (as
        // QEMU does), so they are not reused within the same request.
        for held in std::mem::take(&mut self.pending_release) {
            self.release(held)?;
        }
        Ok(())
    }

    /// True if the cluster can be written in place.
    fn in_place(&self, entry: u64) -> bool {
        entry & COMPRESSED == 0
            && entry & COPIED != 0
            && entry & OFFSET_MASK != 0
            && (self.extended || entry & ZERO == 0)
    }

    /// Subcluster bits covering guest bytes `[s, e)` of cluster `cstart`.
    fn sc_bits(&self, cstart: u64, s: u64, e: u64) -> u64 {
        let ub = self.unit_bits();
        let a = (s - cstart) >> ub;
        let b = (e - cstart).div_ceil(1 << ub);
        let n = b - a;
        let bits = if n >= 32 {
            ALL_ALLOC_BITS
        } else {
            (1u64 << n) - 1
        };
        bits << a
    }

    fn write_in_table(
        &mut self,
        l1i: usize,
        start: u64,
        data: &[u8],
        prev_end: &mut Option<u64>,
    ) -> Result<()> {
        let l2off = self.ensure_l2(l1i)?;
        let cb = self.cluster_bits;
        let cs = self.cluster_size();
        let mask = (1u64 << self.l2_bits) - 1;
        let end = start + data.len() as u64;
        let last_c = (end - 1) >> cb;
        let mut c = start >> cb;
        while c <= last_c {
            let cstart = c << cb;
            let ci = (c & mask) as usize;
            let (e, bm) = self.entry_at(l2off, ci)?;
            if self.zero_alloc(e) {
                // A preallocated zero cluster is reused like QEMU does: the
                // rest of the cluster is written as zeroes.
                let host = e & OFFSET_MASK;
                let ws = start.max(cstart);
                let we = end.min(cstart + cs);
                let mut buf = vec![0u8; cs as usize];
                buf[(ws - cstart) as usize..(we - cstart) as usize]
                    .copy_from_slice(&data[(ws - start) as usize..(we - start) as usize]);
                self.check_overlap(host, cs)?;
                self.file.write_at(&buf, host)?;
                self.l2c.set(&self.file, l2off, ci, &[host | COPIED])?;
                *prev_end = Some(host + cs);
                c += 1;
                continue;
            }
            if self.in_place(e) {
                let ws = start.max(cstart);
                let we = end.min(cstart + cs);
                if self.extended {
                    let need = self.sc_bits(cstart, ws, we);
                    if bm & need != need {
                        self.write_subclusters_in_place(
                            l2off, ci, cstart, e, bm, ws, we, start, data,
                        )?;
                        *prev_end = Some((e & OFFSET_MASK) + cs);
                        c += 1;
                        continue;
                    }
                }
                // A run of in-place clusters contiguous in the host.
                let host0 = e & OFFSET_MASK;
                let mut k = c;
                while k < last_c {
                    let (ne, nbm) = self.entry_at(l2off, ((k + 1) & mask) as usize)?;
                    let full_next = if self.extended {
                        let ks = (k + 1) << cb;
                        let ke = end.min(ks + cs);
                        nbm & self.sc_bits(ks, ks, ke) == self.sc_bits(ks, ks, ke)
                    } else {
                        true
                    };
                    if !self.in_place(ne)
                        || ne & OFFSET_MASK != host0 + ((k + 1 - c) << cb)
                        || !full_next
                    {
                        break;
                    }
                    k += 1;
                }
                let we = end.min((k + 1) << cb);
                let src = &data[(ws - start) as usize..(we - start) as usize];
                self.check_overlap(host0 + (ws - cstart), src.len() as u64)?;
                self.file.write_at(src, host0 + (ws - cstart))?;
                *prev_end = Some(host0 + ((k + 1 - c) << cb));
                c = k + 1;
                continue;
            }
            // A run of clusters that need new host clusters.
            let mut k = c;
            while k < last_c {
                let (ne, _) = self.entry_at(l2off, ((k + 1) & mask) as usize)?;
                if self.in_place(ne) || self.zero_alloc(ne) {
                    break;
                }
                k += 1;
            }
            let n = k - c + 1;
            let at = match *prev_end {
                Some(h) => match self.free_run_at(h >> cb, n)? {
                    Some(m) => match self.rc.alloc_at(&self.file, h >> cb, m)? {
                        0 => None,
                        m => Some((h, m)),
                    },
                    None => None,
                },
                None => None,
            };
            if let Some((h, m)) = at {
                self.alloc_write_run(l2off, c, c + m - 1, start, data, Some(h))?;
                *prev_end = Some(h + (m << cb));
                c += m;
                continue;
            }
            let host = self.alloc_write_run(l2off, c, k, start, data, None)?;
            *prev_end = Some(host + (n << cb));
            c = k + 1;
        }
        Ok(())
    }

    /// Writes into an allocated extended-L2 cluster whose touched
    /// subclusters are not all allocated yet: fill partial subclusters from
    /// their current contents, write, then mark them allocated.
    #[allow(clippy::too_many_arguments)]
    fn write_subclusters_in_place(
        &mut self,
        l2off: u64,
        ci: usize,
        cstart: u64,
        e: u64,
        bm: u64,
        ws: u64,
        we: u64,
        start: u64,
        data: &[u8],
    ) -> Result<()> {
        let ub = self.unit_bits();
        let fs = ws >> ub << ub;
        let fe = we.div_ceil(1 << ub) << ub;
        let mut buf = vec![0u8; (fe - fs) as usize];
        self.read_at(fs, &mut buf[..(ws - fs) as usize])?;
        let tail_at = (we - fs) as usize;
        self.read_at(we, &mut buf[tail_at..])?;
        buf[(ws - fs) as usize..tail_at]
            .copy_from_slice(&data[(ws - start) as usize..(we - start) as usize]);
        self.check_overlap((e & OFFSET_MASK) + (fs - cstart), buf.len() as u64)?;
        self.file
            .write_at(&buf, (e & OFFSET_MASK) + (fs - cstart))?;
        let bits = self.sc_bits(cstart, fs, fe);
        let nbm = (bm | bits) & !(bits << 32);
        self.l2c.set(&self.file, l2off, 2 * ci + 1, &[nbm])
    }

    /// A standard-L2 preallocated zero cluster we own (reused on write).
    fn zero_alloc(&self, e: u64) -> bool {
        !self.extended
            && e & ZERO != 0
            && e & COPIED != 0
            && e & COMPRESSED == 0
            && e & OFFSET_MASK != 0
    }

    /// How many (1..=n) free clusters start exactly at cluster `first`.
    fn free_run_at(&mut self, first: u64, n: u64) -> Result<Option<u64>> {
        let mut m = 0;
        while m < n && self.rc.get(&self.file, first + m)? == 0 {
            m += 1;
        }
        Ok((m > 0).then_some(m))
    }

    /// Allocates clusters `c0..=c1` (one L2 table) and writes `data`
    /// (which starts at guest `start`) into them with copy-on-write. With
    /// `at`, the host clusters there (already refcounted) are used. Returns the
    /// host offset of the first cluster.
    fn alloc_write_run(
        &mut self,
        l2off: u64,
        c0: u64,
        c1: u64,
        start: u64,
        data: &[u8],
        at: Option<u64>,
    ) -> Result<u64> {
        let cb = self.cluster_bits;
        let cs = self.cluster_size();
        let ub = self.unit_bits();
        let mask = (1u64 << self.l2_bits) - 1;
        let end = start + data.len() as u64;
        let n = c1 - c0 + 1;
        let mut olds = Vec::with_capacity(n as usize);
        for c in c0..=c1 {
            olds.push(self.entry_at(l2off, (c & mask) as usize)?);
        }
        // With extended L2, a cluster without a host cluster can be
        // allocated partially (only the touched subclusters).
        let partial = |e: u64| e & COMPRESSED == 0 && e & OFFSET_MASK == 0;
        let first_start = c0 << cb;
        let last_start = c1 << cb;
        let ws0 = start.max(first_start);
        let we1 = end.min(last_start + cs);
        let fill_start = if self.extended && partial(olds[0].0) {
            ws0 >> ub << ub
        } else {
            first_start
        };
        let fill_end = if self.extended && partial(olds[(n - 1) as usize].0) {
            we1.div_ceil(1 << ub) << ub
        } else {
            last_start + cs
        };
        let fill_end = fill_end.min(self.hdr.size.div_ceil(1 << ub) << ub).max(we1);
        let head = (ws0 - fill_start) as usize;
        let tail = (we1 - fill_start) as usize;
        let src = &data[(ws0 - start) as usize..(we1 - start) as usize];
        // Whole clusters are written straight from the caller's buffer.
        let buf = if fill_start == ws0 && fill_end == we1 {
            None
        } else {
            let mut buf = vec![0u8; (fill_end - fill_start) as usize];
            if head > 0 {
                self.read_at(fill_start, &mut buf[..head])?;
            }
            // Past the disk end the tail still comes from the backing file
            // (QEMU copies whole clusters).
            let tail_end = fill_end;
            if we1 < tail_end {
                let t = (tail_end - fill_start) as usize;
                self.read_at(we1, &mut buf[tail..t])?;
            }
            buf[head..tail].copy_from_slice(src);
            Some(buf)
        };
        let host = match at {
            Some(h) => {
                // Already taken by `Refcounts::alloc_at`.
                self.check_overlap(h, n << cb)?;
                h
            }
            None => self.alloc_data(n)?,
        };
        self.file.write_at(
            buf.as_deref().unwrap_or(src),
            host + (fill_start - first_start),
        )?;

        let mut words = Vec::with_capacity(n as usize * self.entry_words());
        for (i, (e, bm)) in olds.iter().enumerate() {
            let h = host + ((i as u64) << cb);
            if self.extended {
                let cstart = (c0 + i as u64) << cb;
                let s = fill_start.max(cstart);
                let t = fill_end.min(cstart + cs);
                let touched = self.sc_bits(cstart, s, t);
                let alloc = if partial(*e) {
                    touched
                } else if e & COMPRESSED != 0 {
                    ALL_ALLOC_BITS
                } else {
                    (bm & ALL_ALLOC_BITS) | touched
                };
                let zero = (bm & ALL_ZERO_BITS) & !(alloc << 32);
                let zero = if e & COMPRESSED != 0 { 0 } else { zero };
                words.push(h | COPIED);
                words.push(alloc | zero);
            } else {
                words.push(h | COPIED);
            }
        }
        let first_word = (c0 & mask) as usize * self.entry_words();
        self.l2c.set(&self.file, l2off, first_word, &words)?;
        for (e, _) in olds {
            let held = self.held(e);
            self.pending_release.push(held);
        }
        Ok(host)
    }

    /// Writes zeroes over `[offset, offset+len)` as plain data.
    fn write_zero_data(&mut self, offset: u64, len: u64) -> Result<()> {
        let chunk = vec![0u8; len.min(1 << 20) as usize];
        let mut pos = offset;
        while pos < offset + len {
            let n = (offset + len - pos).min(chunk.len() as u64);
            self.write_at(pos, &chunk[..n as usize])?;
            pos += n;
        }
        Ok(())
    }

    /// `write_zeroes`.
    pub(super) fn zero_range(&mut self, offset: u64, len: u64, may_unmap: bool) -> Result<()> {
        self.decompressed = None;
        if len == 0 {
            return Ok(());
        }
        let has_backing = self.backing.is_some() || self.hdr.backing_file.is_some();
        // Version 2 has no zero flag: without a backing file unallocated
        // clusters read as zeroes (QEMU deallocates even without unmap).
        if self.hdr.version < 3 && has_backing {
            return self.write_zero_data(offset, len);
        }
        let ub = self.unit_bits();
        let mut offset = offset;
        let mut end = offset + len;
        if self.hdr.version >= 3 || !has_backing {
            // Like QEMU, widen to whole units when the rest of the unit
            // already reads as zeroes, so no data needs writing.
            let head = offset >> ub << ub;
            if head < offset && self.reads_as_zero(head, offset - head)? {
                offset = head;
            }
            let tail = (end.div_ceil(1 << ub) << ub).min(self.hdr.size);
            if tail > end && self.reads_as_zero(end, tail - end)? {
                end = tail;
            }
        }
        let len = end - offset;
        let a = offset.div_ceil(1 << ub) << ub;
        // The disk end counts as aligned.
        let b = if end == self.hdr.size {
            end
        } else {
            end >> ub << ub
        };
        if a >= b {
            return self.write_zero_data(offset, len);
        }
        if offset < a {
            self.write_zero_data(offset, a - offset)?;
        }
        // Head, body, tail in order, as QEMU allocates them.
        let span = self.span_bits();
        let mut pos = a;
        while pos < b {
            let l1i = (pos >> span) as usize;
            let chunk_end = b.min(((l1i as u64) + 1) << span);
            self.zero_in_table(l1i, pos, chunk_end, may_unmap)?;
            pos = chunk_end;
        }
        if b < end {
            self.write_zero_data(b, end - b)?;
        }
        Ok(())
    }

    fn zero_in_table(&mut self, l1i: usize, start: u64, end: u64, may_unmap: bool) -> Result<()> {
        let v2 = self.hdr.version < 3;
        if v2 && self.l1_entry_offset(l1i) == 0 {
            // v2 without backing: unallocated already reads as zeroes.
            return Ok(());
        }
        let l2off = self.ensure_l2(l1i)?;
        let cb = self.cluster_bits;
        let cs = self.cluster_size();
        let mask = (1u64 << self.l2_bits) - 1;
        let c0 = start >> cb;
        let c1 = (end - 1) >> cb;
        let mut words = Vec::new();
        let mut releases = Vec::new();
        let mut compressed_partial = Vec::new();
        for c in c0..=c1 {
            let (e, bm) = self.entry_at(l2off, (c & mask) as usize)?;
            let cstart = c << cb;
            let s = start.max(cstart);
            let t = end.min(cstart + cs);
            let whole = s == cstart && (t == cstart + cs || t == self.hdr.size);
            // Without unmap a cluster we own keeps its host cluster (also an
            // already preallocated zero cluster).
            // (QEMU keeps a shared host cluster too, just flagged zero.)
            let keep = !may_unmap && e & COMPRESSED == 0 && e & OFFSET_MASK != 0;
            if v2 {
                words.push(0);
                releases.push(self.held(e));
                continue;
            }
            if !self.extended {
                if keep {
                    words.push((e & OFFSET_MASK) | (e & COPIED) | ZERO);
                } else {
                    words.push(ZERO);
                    releases.push(self.held(e));
                }
                continue;
            }
            if whole {
                if keep {
                    words.push((e & OFFSET_MASK) | (e & COPIED));
                } else {
                    words.push(0);
                    releases.push(self.held(e));
                }
                words.push(ALL_ZERO_BITS);
            } else if e & COMPRESSED != 0 {
                compressed_partial.push((s, t));
                words.push(e);
                words.push(bm);
            } else {
                let bits = self.sc_bits(cstart, s, t);
                words.push(e);
                words.push((bm & !bits) | (bits << 32));
            }
        }
        let first_word = (c0 & mask) as usize * self.entry_words();
        self.l2c.set(&self.file, l2off, first_word, &words)?;
        for h in releases {
            self.release_discard(h)?;
        }
        for (s, t) in compressed_partial {
            self.write_zero_data(s, t - s)?;
        }
        Ok(())
    }

    /// `discard`: whole clusters become zero clusters (version 3) or
    /// unallocated (version 2), as QEMU does.
    pub(super) fn discard_range(&mut self, offset: u64, len: u64) -> Result<()> {
        self.decompressed = None;
        let cb = self.cluster_bits;
        let end = offset + len;
        let a = offset.div_ceil(1 << cb) << cb;
        let b = if end == self.hdr.size {
            end
        } else {
            end >> cb << cb
        };
        if a >= b {
            return Ok(());
        }
        // QEMU turns discarded clusters into zero clusters on version 3,
        // with or without a backing file.
        let zero = self.hdr.version >= 3;
        let has_backing = self.backing.is_some() || self.hdr.backing_file.is_some();
        if !zero && has_backing {
            // Version 2 cannot hide backing data: QEMU ignores the discard.
            return Ok(());
        }
        let span = self.span_bits();
        let mask = (1u64 << self.l2_bits) - 1;
        let mut pos = a;
        while pos < b {
            let l1i = (pos >> span) as usize;
            let chunk_end = b.min(((l1i as u64) + 1) << span);
            // QEMU allocates the L2 table even when nothing is mapped.
            {
                let l2off = self.ensure_l2(l1i)?;
                let c0 = pos >> cb;
                let c1 = (chunk_end - 1) >> cb;
                let mut words = Vec::new();
                let mut releases = Vec::new();
                for c in c0..=c1 {
                    let (e, bm) = self.entry_at(l2off, (c & mask) as usize)?;
                    releases.push(self.held(e));
                    // A cluster without a host cluster and without a
                    // backing file already reads as zeroes where it is not
                    // zero-flagged: QEMU leaves its entry alone.
                    if zero && !has_backing && e & (COMPRESSED | OFFSET_MASK) == 0 {
                        words.push(e);
                        if self.extended {
                            words.push(bm);
                        }
                        continue;
                    }
                    if self.extended {
                        words.push(0);
                        words.push(if zero { ALL_ZERO_BITS } else { 0 });
                    } else {
                        words.push(if zero { ZERO } else { 0 });
                    }
                }
                let first_word = (c0 & mask) as usize * self.entry_words();
                self.l2c.set(&self.file, l2off, first_word, &words)?;
                for h in releases {
                    self.release_discard(h)?;
                }
            }
            pos = chunk_end;
        }
        Ok(())
    }

    /// Allocates `n` bytes for compressed data, packed after the previous
    /// compressed cluster like QEMU does.
    fn alloc_bytes(&mut self, n: u64) -> Result<u64> {
        let cb = self.cluster_bits;
        let cs = self.cluster_size();
        let mut off = self.free_byte_offset;
        if off != 0 && off & (cs - 1) != 0 {
            let cl = off >> cb;
            let r = self.rc.get(&self.file, cl)?;
            if r == 0 || r >= self.rc.max_refcount() {
                off = 0;
            }
        } else {
            off = 0;
        }
        if off != 0 {
            let cl = off >> cb;
            let remaining = cs - (off & (cs - 1));
            if n <= remaining {
                self.rc.update(&self.file, cl, 1, 1)?;
                self.free_byte_offset = off + n;
                return Ok(off);
            }
            let extra = (n - remaining).div_ceil(cs);
            let saved = self.rc.free_index;
            let found = self.rc.find_free(&self.file, extra)?;
            if found == cl + 1 {
                self.rc.update(&self.file, cl, 1 + extra, 1)?;
                self.free_byte_offset = off + n;
                return Ok(off);
            }
            self.rc.free_index = saved.min(found);
        }
        let start = self.rc.alloc(&self.file, n.div_ceil(cs))?;
        let off = start << cb;
        self.free_byte_offset = off + n;
        Ok(off)
    }

    /// Stores one compressed cluster at guest `offset`.
    pub(super) fn write_compressed_cluster(
        &mut self,
        offset: u64,
        compressed: &[u8],
    ) -> Result<()> {
        let cb = self.cluster_bits;
        let cs = self.cluster_size();
        if offset & (cs - 1) != 0 || offset >= self.hdr.size {
            return Err(Error::invalid(format!(
                "Compressed write at offset {offset} is not a cluster of the image"
            )));
        }
        if compressed.is_empty() || compressed.len() as u64 >= cs {
            return Err(Error::invalid(
                "Compressed cluster data has an invalid size",
            ));
        }
        self.decompressed = None;
        let l1i = (offset >> self.span_bits()) as usize;
        let l2off = self.ensure_l2(l1i)?;
        let ci = ((offset >> cb) & ((1 << self.l2_bits) - 1)) as usize;
        let (old, _) = self.entry_at(l2off, ci)?;
        let len = compressed.len() as u64;
        let host = self.alloc_bytes(len)?;
        self.check_overlap(host, len)?;
        // Pad to the end of the last sector, as QEMU leaves the file.
        let padded_end = (host + len).div_ceil(512) * 512;
        if padded_end > self.file.len()? {
            let mut b = compressed.to_vec();
            b.resize((padded_end - host) as usize, 0);
            self.file.write_at(&b, host)?;
        } else {
            self.file.write_at(compressed, host)?;
        }
        let entry = CompressedDesc::encode(host, len, cb);
        if self.extended {
            self.l2c.set(&self.file, l2off, 2 * ci, &[entry, 0])?;
        } else {
            self.l2c.set(&self.file, l2off, ci, &[entry])?;
        }
        let held = self.held(old);
        self.release(held)
    }
}

/// C's `%#x`: hexadecimal with `0x`, except a plain `0` for zero.
fn c_hex(v: u64) -> String {
    if v == 0 {
        "0".to_string()
    } else {
        format!("{v:#x}")
    }
}
