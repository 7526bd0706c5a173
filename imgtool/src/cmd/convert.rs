//! `qemu-img convert`: copy one or more images (concatenated) into a new or
//! existing image of any format, skipping zeroes (`-S`), optionally
//! compressing clusters (`-c`) on all cores.

use std::path::Path;

use imgformats::{BlockDriver, CreateOpts};

use crate::args::opt;
use crate::cmd::create::{merge_opts, print_opts_help, wants_help};
use crate::cmd::measure::{load_snapshot, SnapshotParam};
use crate::common::{self, parse_cmd, CmdResult, Fail, ImageSpec, OpenParams, Progress, Secrets};
use crate::copy::{
    chain_run, is_zero, looks_incompressible, read_ahead, zero_granules, Piece, RunKind, CHUNK,
};

const HELP: &str = "Copy one image to another with optional format conversion.  Usage:

  qemu-img convert [--object OBJDEF] [--image-opts] [--target-image-opts]
        [--target-is-zero] [-U] [-C] [-c] [-f SRC_FMT] [-O TGT_FMT]
        [-B BACKING_FILE [-F BACKING_FMT]] [-o TGT_OPTS] [-S SPARSE_SIZE]
        [-r RATE_LIMIT] [-m NUM_PARALLEL] [-W] [-n] [-t CACHE] [-T SRC_CACHE]
        [-l SNAPSHOT] [-p] [-q] SRC_FILE [SRC_FILE2...] TGT_FILE

Arguments:
  -h, --help            print this help and exit
  -q, --quiet           quiet operation
  -p, --progress        display progress information
  -f, --source-format SRC_FMT
                        format of the source image(s) (probed if omitted)
  -O, --target-format TGT_FMT
                        format of the target image, default raw
  -o, --target-options TGT_OPTS
                        format options of the target ('-o help' for a list)
  -B, --target-backing BACKING_FILE
                        the target will use BACKING_FILE as its backing image
  -F, --target-backing-format BACKING_FMT
  -l, --source-snapshot SNAPSHOT
                        copy an internal snapshot of the source (a name, or
                        snapshot.id=ID[,snapshot.name=NAME])
  -c, --compress        compress clusters (target format must support it)
  -S, --sparse-size SPARSE_SIZE
                        zero runs of at least this size are not written
                        (default 4k; 0 fully allocates the target)
  -n, --no-create       do not create the target; it must exist
  --target-is-zero      with -n: the target already reads as zeroes
  -t, --target-cache CACHE / -T, --source-cache CACHE
                        cache modes (writeback, unsafe, none, ...)
  -U, --force-share     open the source(s) shared
  -C, --copy-range-offloading, -W, --parallel, -m NUM, -r RATE
                        accepted for compatibility
  --object OBJDEF       a secret object for encrypted images
";

/// Runs `qemu-img convert`.
pub fn run(argv: &[String]) -> CmdResult {
    let spec = [
        opt(Some('q'), Some("quiet"), false, "quiet"),
        opt(Some('p'), Some("progress"), false, "progress"),
        opt(Some('f'), Some("source-format"), true, "format"),
        opt(Some('O'), Some("target-format"), true, "target-format"),
        opt(Some('o'), Some("target-options"), true, "options"),
        opt(Some('B'), Some("target-backing"), true, "backing"),
        opt(
            Some('F'),
            Some("target-backing-format"),
            true,
            "backing-format",
        ),
        opt(Some('c'), Some("compress"), false, "compress"),
        opt(Some('S'), Some("sparse-size"), true, "sparse"),
        opt(Some('n'), Some("no-create"), false, "no-create"),
        opt(None, Some("target-is-zero"), false, "target-is-zero"),
        opt(Some('t'), Some("target-cache"), true, "cache"),
        opt(Some('T'), Some("source-cache"), true, "src-cache"),
        opt(Some('U'), Some("force-share"), false, "force-share"),
        opt(
            Some('C'),
            Some("copy-range-offloading"),
            false,
            "copy-range",
        ),
        opt(Some('W'), Some("parallel"), false, "parallel"),
        opt(Some('m'), Some("num-coroutines"), true, "coroutines"),
        opt(Some('r'), Some("rate-limit"), true, "rate"),
        opt(Some('l'), Some("source-snapshot"), true, "snapshot"),
        opt(None, Some("object"), true, "object"),
        opt(None, Some("image-opts"), false, "image-opts"),
        opt(None, Some("target-image-opts"), false, "target-image-opts"),
        opt(None, Some("salvage"), false, "salvage"),
        opt(None, Some("bitmaps"), false, "bitmaps"),
        opt(
            None,
            Some("skip-broken-bitmaps"),
            false,
            "skip-broken-bitmaps",
        ),
        opt(Some('e'), None, false, "encrypt"),
        opt(Some('6'), None, false, "compat6"),
    ];
    let Some(p) = parse_cmd("convert", argv, &spec, HELP)? else {
        return Ok(0);
    };
    if p.has("compat6") {
        return Err(Fail::msg(
            "Option -6 has been removed, use -o compat6 instead",
        ));
    }
    for unsupported in ["bitmaps", "target-image-opts", "salvage"] {
        if p.has(unsupported) {
            let name = match unsupported {
                "bitmaps" => "--bitmaps",
                "target-image-opts" => "--target-image-opts",
                _ => "--salvage",
            };
            return Err(Fail::msg(format!(
                "convert {name} is not implemented yet in rqemu's qemu-img"
            )));
        }
    }
    let out_fmt = p.last("target-format").unwrap_or("raw");
    let o_strings = p.all("options");
    let ops = imgformats::format(out_fmt)
        .map_err(|_| Fail::msg(format!("Unknown file format '{out_fmt}'")))?;
    if wants_help(&o_strings) {
        print_opts_help(ops, false);
        return Ok(0);
    }
    let mut secrets = Secrets::from_objects(&p.all("object"))?;
    let quiet = p.has("quiet");
    let no_create = p.has("no-create");
    let compress = p.has("compress");
    let sparse: u64 = match p.last("sparse") {
        None => 4096,
        Some(s) => match imgformats::size::parse_size(s) {
            Ok(v) if v % 512 == 0 && v <= 16 << 20 => v,
            _ => {
                return Err(Fail::msg(
                    "Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. Select 0 to disable sparse detection (fully allocates output).",
                ))
            }
        },
    };
    if p.has("target-is-zero") && !no_create {
        return Err(Fail::msg("--target-is-zero requires use of -n flag"));
    }
    // qemu-img writes the target of convert with cache=unsafe unless -t
    // says otherwise (no flush at the end).
    let cache =
        Some(common::parse_cache(p.last("cache"))?.unwrap_or(imgformats::CacheMode::Unsafe));
    let src_cache = common::parse_cache(p.last("src-cache"))?;
    if let Some(m) = p.last("coroutines") {
        match m.parse::<u32>() {
            Ok(1..=16) => {}
            _ => return Err(Fail::msg(
                "Invalid number of coroutines. Allowed number of coroutines is between 1 and 16",
            )),
        }
    }
    if let Some(r) = p.last("rate") {
        if imgformats::size::parse_size(r).is_err() {
            return Err(Fail::msg(format!("Invalid rate limit specified: '{r}'")));
        }
    }
    if p.args.len() < 2 {
        return Err(Fail::msg("Must specify image file name"));
    }
    let (srcs, out) = p.args.split_at(p.args.len() - 1);
    let out_name = out[0].clone();
    let image_opts = p.has("image-opts");

    let mut sources: Vec<Box<dyn BlockDriver>> = Vec::new();
    for s in srcs {
        let spec = ImageSpec::new(s, p.last("format"), image_opts)?;
        sources.push(common::open(
            &spec,
            &secrets,
            &OpenParams {
                writable: false,
                no_backing: false,
                cache: src_cache,
            },
        )?);
    }
    if let Some(l) = p.last("snapshot") {
        let sp = SnapshotParam::parse(l)?;
        if sources.len() > 1 {
            return Err(Fail::msg("No support for concatenating multiple snapshot"));
        }
        if let Some(src) = sources.first_mut() {
            load_snapshot(src.as_mut(), &sp)?;
        }
    }
    let total: u64 = sources.iter().map(|s| s.size()).sum();

    let backing = p.last("backing").map(str::to_string);
    let mut opts = CreateOpts::new();
    merge_opts(ops, &o_strings, &mut opts).map_err(Fail::msg)?;
    if let Some(b) = &backing {
        opts.set("backing_file", b);
    }
    if let Some(bf) = p.last("backing-format") {
        opts.set("backing_fmt", bf);
    }
    let has_backing = opts.get("backing_file").is_some();
    if has_backing && !ops.supports_backing {
        return Err(Fail::msg(format!(
            "Backing file not supported for file format '{out_fmt}'"
        )));
    }
    if has_backing && opts.get("backing_fmt").is_none() {
        return Err(Fail::msg(
            "Use of backing file requires explicit backing format",
        ));
    }
    let encrypting = opts.get_bool("encryption").ok().flatten() == Some(true)
        || opts.get("encrypt.format").is_some()
        || p.has("encrypt");
    if compress && encrypting {
        return Err(Fail::msg(
            "Compression and encryption not supported at the same time",
        ));
    }
    if compress && !(ops.name == "qcow2" || ops.name == "qcow") {
        return Err(Fail::msg("Compression not supported for this file format"));
    }
    if let Some(id) = opts.get("encrypt.key-secret").map(str::to_string) {
        opts.key = Some(secrets.get(&id)?);
    }
    let mut key_secret = opts.get("encrypt.key-secret").map(str::to_string);
    if p.has("encrypt") {
        // The seed's `-e`: encrypt the target, asking for the password if
        // no secret was given.
        opts.set("encryption", "on");
        if opts.key.is_none() {
            let pw = common::read_password("Password: ")?;
            secrets.insert(common::CLASSIC_E_SECRET, pw.clone());
            opts.key = Some(pw);
            key_secret = Some(common::CLASSIC_E_SECRET.to_string());
        }
    }

    let out_spec = ImageSpec {
        path: out_name.clone().into(),
        fmt: Some(out_fmt.to_string()),
        key_secret,
    };
    let target_zero;
    let mut target = if no_create {
        let t = common::open(
            &out_spec,
            &secrets,
            &OpenParams {
                writable: true,
                no_backing: false,
                cache,
            },
        )?;
        if t.size() < total {
            return Err(Fail::msg("output file is smaller than input file"));
        }
        target_zero = p.has("target-is-zero");
        t
    } else {
        opts.set("size", &total.to_string());
        (ops.create)(Path::new(&out_name), total, &opts)
            .map_err(|e| Fail::msg(format!("{out_name}: {}", common::error_text(&e))))?;
        let t = common::open(
            &out_spec,
            &secrets,
            &OpenParams {
                writable: true,
                no_backing: false,
                cache,
            },
        )?;
        // A new image reads as zeroes unless preallocated with data or
        // stacked on a backing file.
        target_zero = !has_backing;
        t
    };
    if compress && target.compressor().is_none() {
        return Err(Fail::msg("Compression not supported for this file format"));
    }

    let mut progress = Progress::new(p.has("progress") && !quiet);
    let mut copier = Copier {
        target: target.as_mut(),
        target_zero,
        sparse,
        compress,
        done: 0,
        total,
    };
    let mut base = 0u64;
    for src in sources.iter_mut() {
        // With a backing file on the target, only the source's top layer
        // is copied; the rest is expected to come from the new backing file.
        let depth = if has_backing { Some(1) } else { None };
        copier.copy_image(src.as_mut(), base, depth, &mut progress)?;
        base += src.size();
    }
    target.flush()?;
    progress.finish();
    Ok(0)
}

/// A cluster handed to a compression worker.
struct CJob {
    seq: u64,
    off: u64,
    data: Vec<u8>,
}

/// What a worker made of a cluster.
enum COutcome {
    Zero,
    Compressed(Vec<u8>),
    Plain,
}

/// A worker's result, written in `seq` order.
struct CDone {
    seq: u64,
    off: u64,
    data: Vec<u8>,
    outcome: COutcome,
}

/// Copies runs of a source chain into a target at an offset.
pub struct Copier<'a> {
    pub target: &'a mut dyn BlockDriver,
    /// The target reads as zeroes where nothing was written.
    pub target_zero: bool,
    /// Zero-detection granularity; 0 writes everything.
    pub sparse: u64,
    pub compress: bool,
    pub done: u64,
    pub total: u64,
}

impl Copier<'_> {
    /// Copies the whole of `src` (down to `depth` layers) to `base` in the
    /// target.
    pub fn copy_image(
        &mut self,
        src: &mut dyn BlockDriver,
        base: u64,
        depth: Option<usize>,
        progress: &mut Progress,
    ) -> Result<(), Fail> {
        if self.compress {
            let size = src.size();
            return self.copy_compressed(src, base, size, progress);
        }
        let scan = Some((self.sparse, base));
        read_ahead(src, depth, CHUNK, scan, |p: &Piece| {
            match p.kind {
                RunKind::Unallocated => {}
                RunKind::Zero => self.zero_out(base + p.offset, p.len)?,
                RunKind::Data => {
                    self.write_sparse_mapped(base + p.offset, &p.data, p.zero_map.as_deref())?
                }
            }
            self.done += p.len;
            progress.update(self.done, self.total);
            Ok::<(), Fail>(())
        })?;
        Ok(())
    }

    /// Makes a range of the target read as zeroes.
    pub fn zero_out(&mut self, off: u64, len: u64) -> Result<(), Fail> {
        if self.sparse == 0 {
            let zeroes = vec![0u8; len.min(CHUNK) as usize];
            let mut o = off;
            while o < off + len {
                let n = (off + len - o).min(CHUNK);
                self.target.write(o, &zeroes[..n as usize])?;
                o += n;
            }
            return Ok(());
        }
        if !self.target_zero {
            self.target.write_zeroes(off, len, true)?;
        }
        Ok(())
    }

    /// Writes `buf` at `off`, leaving out aligned zero granules of the
    /// sparse size.
    pub fn write_sparse(&mut self, off: u64, buf: &[u8]) -> Result<(), Fail> {
        self.write_sparse_mapped(off, buf, None)
    }

    /// [`Copier::write_sparse`] with the zero granules already known
    /// (`zero_map` from [`zero_granules`] with this copier's sparse size).
    pub fn write_sparse_mapped(
        &mut self,
        off: u64,
        buf: &[u8],
        zero_map: Option<&[bool]>,
    ) -> Result<(), Fail> {
        if self.sparse == 0 {
            self.target.write(off, buf)?;
            return Ok(());
        }
        let computed;
        let map = match zero_map {
            Some(m) => m,
            None => {
                computed = zero_granules(buf, off, self.sparse);
                &computed
            }
        };
        let end = off + buf.len() as u64;
        // Granule boundaries: aligned to the sparse size in target offsets.
        let bounds = |i: usize| -> (u64, u64) {
            let first_end = ((off / self.sparse + 1) * self.sparse).min(end);
            if i == 0 {
                (off, first_end)
            } else {
                let s = first_end + (i as u64 - 1) * self.sparse;
                (s, (s + self.sparse).min(end))
            }
        };
        let mut i = 0;
        while i < map.len() {
            let zero = map[i];
            let mut j = i + 1;
            while j < map.len() && map[j] == zero {
                j += 1;
            }
            let (s, _) = bounds(i);
            let (_, e) = bounds(j - 1);
            if !zero {
                self.target
                    .write(s, &buf[(s - off) as usize..(e - off) as usize])?;
            } else if !self.target_zero {
                self.target.write_zeroes(s, e - s, true)?;
            }
            i = j;
        }
        Ok(())
    }

    fn copy_compressed(
        &mut self,
        src: &mut dyn BlockDriver,
        base: u64,
        size: u64,
        progress: &mut Progress,
    ) -> Result<(), Fail> {
        use std::collections::BTreeMap;
        use std::sync::{mpsc, Arc, Mutex};

        let Some(compressor) = self.target.compressor() else {
            return Err(Fail::msg("Compression not supported for this file format"));
        };
        let cluster = self.target.cluster_size().unwrap_or(65536).max(512);
        if !base.is_multiple_of(cluster) {
            return Err(Fail::msg(
                "Compressed output needs each source to start on a cluster boundary of the target",
            ));
        }
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .max(1);
        // Clusters go to a pool of compressing workers (one per core) and
        // come back tagged with their sequence number; this thread reads the
        // source, hands out clusters and writes the results in order. A few
        // clusters per worker are in flight, so memory stays small.
        let (job_tx, job_rx) = mpsc::sync_channel::<CJob>(threads * 2);
        // The workers own the receiving end: if they all stop, sending a
        // job fails instead of blocking forever.
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = mpsc::channel::<CDone>();
        let comp: &dyn imgformats::Compressor = compressor.as_ref();
        std::thread::scope(|s| {
            for _ in 0..threads {
                let done_tx = done_tx.clone();
                let job_rx = Arc::clone(&job_rx);
                s.spawn(move || loop {
                    let job = {
                        let Ok(rx) = job_rx.lock() else { return };
                        match rx.recv() {
                            Ok(j) => j,
                            Err(_) => return,
                        }
                    };
                    let outcome = if is_zero(&job.data) {
                        COutcome::Zero
                    } else if looks_incompressible(&job.data) {
                        COutcome::Plain
                    } else {
                        // A compressor that fails (even by panicking) only
                        // means this cluster is stored uncompressed.
                        let data = &job.data;
                        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            comp.compress(data)
                        })) {
                            Ok(Some(v)) => COutcome::Compressed(v),
                            _ => COutcome::Plain,
                        }
                    };
                    let done = CDone {
                        seq: job.seq,
                        off: job.off,
                        data: job.data,
                        outcome,
                    };
                    if done_tx.send(done).is_err() {
                        return;
                    }
                });
            }
            drop(done_tx);
            drop(job_rx);
            let mut pending: BTreeMap<u64, CDone> = BTreeMap::new();
            let mut next = 0u64;
            let mut seq = 0u64;
            // Cluster buffers come back with the results and are reused, so
            // memory does not churn through the allocator.
            let mut spare: Vec<Vec<u8>> = Vec::new();
            let flush_ready = |this: &mut Self,
                               pending: &mut BTreeMap<u64, CDone>,
                               next: &mut u64,
                               spare: &mut Vec<Vec<u8>>,
                               progress: &mut Progress|
             -> Result<(), Fail> {
                while let Some(d) = pending.remove(next) {
                    let at = base + d.off;
                    match d.outcome {
                        COutcome::Zero => this.zero_out(at, d.data.len() as u64)?,
                        COutcome::Compressed(v) => this.target.write_compressed(at, &v)?,
                        COutcome::Plain => this.target.write(at, &d.data)?,
                    }
                    this.done += d.data.len() as u64;
                    progress.update(this.done, this.total);
                    *next += 1;
                    spare.push(d.data);
                }
                Ok(())
            };
            let batch = cluster * 4;
            let max_in_flight = threads as u64 * 4;
            let mut buf = Vec::new();
            let mut off = 0u64;
            let result = (|| -> Result<(), Fail> {
                while off < size {
                    let len = (size - off).min(batch);
                    // Skip whole zero runs without reading them.
                    let (run, kind) = chain_run(src, off, len, None)?;
                    if kind != RunKind::Data && run >= cluster {
                        let skip = run / cluster * cluster;
                        self.zero_out(base + off, skip)?;
                        off += skip;
                        self.done += skip;
                        progress.update(self.done, self.total);
                        continue;
                    }
                    buf.resize(len as usize, 0);
                    src.read(off, &mut buf)?;
                    for (i, piece) in buf.chunks(cluster as usize).enumerate() {
                        let mut data = spare.pop().unwrap_or_default();
                        data.clear();
                        data.extend_from_slice(piece);
                        let job = CJob {
                            seq,
                            off: off + i as u64 * cluster,
                            data,
                        };
                        seq += 1;
                        if job_tx.send(job).is_err() {
                            return Err(Fail::msg("compression worker stopped"));
                        }
                        for d in done_rx.try_iter() {
                            pending.insert(d.seq, d);
                        }
                        flush_ready(self, &mut pending, &mut next, &mut spare, progress)?;
                        // Bound the clusters in flight: when one worker is
                        // descheduled, the others must not run ahead and pile
                        // up finished clusters waiting for its result.
                        while seq - next > max_in_flight {
                            let Ok(d) = done_rx.recv() else {
                                return Err(Fail::msg("compression worker stopped"));
                            };
                            pending.insert(d.seq, d);
                            flush_ready(self, &mut pending, &mut next, &mut spare, progress)?;
                        }
                    }
                    off += len;
                }
                Ok(())
            })();
            drop(job_tx);
            result?;
            for d in done_rx.iter() {
                pending.insert(d.seq, d);
                flush_ready(self, &mut pending, &mut next, &mut spare, progress)?;
            }
            if next != seq {
                return Err(Fail::msg("compression worker stopped"));
            }
            Ok(())
        })
    }
}
