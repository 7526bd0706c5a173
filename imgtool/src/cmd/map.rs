//! `qemu-img map`: where the guest-visible data of an image lives, through
//! its whole backing chain, as qemu-img 10.0.2 prints it.
//!
//! Each run of bytes is described by the first layer (from the top) that
//! allocates it: `depth` (0 = the image itself), `present` (some layer
//! allocates it), `zero` (reads as zeroes), `data`, `compressed`, and the
//! host `offset` when the bytes are stored plainly in that layer's file.
//! Where no layer allocates a run, `depth` is the last layer looked at (a
//! backing image shorter than the layer above ends the walk there).
//! Adjacent runs with equal properties and contiguous host offsets merge.

use imgformats::{Alloc, BlockDriver, Error};

use crate::args::opt;
use crate::cmd::info::full_backing_name;
use crate::common::{
    self, parse_cmd, parse_output, usage_error, CmdResult, Fail, ImageSpec, OpenParams,
    OutputFormat, Secrets,
};
use crate::strtosz;

const HELP: &str = include_str!("help/map.txt");

/// One run of the map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub length: u64,
    pub depth: u32,
    pub present: bool,
    pub zero: bool,
    pub data: bool,
    pub compressed: bool,
    pub offset: Option<u64>,
}

impl MapEntry {
    /// True if `next` continues this run and can be merged into it.
    pub fn mergeable(&self, next: &MapEntry) -> bool {
        self.start + self.length == next.start
            && self.depth == next.depth
            && self.present == next.present
            && self.zero == next.zero
            && self.data == next.data
            && self.compressed == next.compressed
            && match (self.offset, next.offset) {
                (None, None) => true,
                (Some(a), Some(b)) => a + self.length == b,
                _ => false,
            }
    }

    /// The JSON line qemu-img prints for the run (without separators).
    pub fn json(&self) -> String {
        let mut s = format!(
            "{{ \"start\": {}, \"length\": {}, \"depth\": {}, \"present\": {}, \"zero\": {}, \"data\": {}, \"compressed\": {}",
            self.start, self.length, self.depth, self.present, self.zero, self.data, self.compressed
        );
        if let Some(o) = self.offset {
            s.push_str(&format!(", \"offset\": {o}"));
        }
        s.push('}');
        s
    }
}

/// Data stored plainly in a layer's file may sit in a hole of that file.
/// For layers that ask for it ([`BlockDriver::map_zeroes_from_host`], QEMU's
/// behaviour for metadata-preallocated qcow2 images) such runs are reported
/// as `"zero": true` (still `"data": true`), split where the host file
/// changes between data and hole.
fn refine_by_host(layer: &dyn BlockDriver, host: u64, e: &mut MapEntry) -> Result<(), Error> {
    let file = layer.file();
    if host >= file.len()? {
        e.zero = true;
        return Ok(());
    }
    let ext = file.host_extent(host, e.length)?;
    e.length = e.length.min(ext.len.max(1));
    e.zero = ext.hole;
    Ok(())
}

/// Describes the run at `offset` (at most `max` bytes) through the chain
/// below `layer`, which sits at `depth` and is shown as `name`. Returns
/// the entry and the name of the layer that defines it (backing file names
/// resolved as qemu-img spells them, see [`full_backing_name`]).
fn chain_entry(
    layer: &mut dyn BlockDriver,
    name: &str,
    depth: u32,
    offset: u64,
    max: u64,
) -> Result<(MapEntry, String), (Error, &'static str)> {
    let fmt = layer.format_name();
    let st = layer.block_status(offset, max).map_err(|e| (e, fmt))?;
    let len = st.len.min(max);
    let mut e = MapEntry {
        start: offset,
        length: len,
        depth,
        present: true,
        zero: false,
        data: false,
        compressed: false,
        offset: None,
    };
    match st.alloc {
        Alloc::Data => {
            e.data = true;
            e.offset = st.offset;
            if let Some(host) = st.offset.filter(|_| layer.map_zeroes_from_host()) {
                refine_by_host(layer, host, &mut e).map_err(|e| (e, fmt))?;
            }
        }
        Alloc::Compressed => {
            e.data = true;
            e.compressed = true;
        }
        Alloc::Zero => {
            e.zero = true;
            e.offset = st.offset;
        }
        Alloc::Unallocated => {
            let bfile = layer.backing_file_name().unwrap_or_default();
            if let Some(b) = layer.backing() {
                let bsize = b.size();
                if offset < bsize {
                    let bname = full_backing_name(name, &bfile);
                    return chain_entry(b, &bname, depth + 1, offset, len.min(bsize - offset));
                }
            }
            e.present = false;
            e.zero = true;
        }
    }
    Ok((e, name.to_string()))
}

/// The failure of a block status query, as qemu-img reports it. A
/// corrupt image is announced first the way QEMU's drivers do it.
fn metadata_error(err: &Error, fmt: &str) -> Fail {
    match err {
        Error::Corrupt(m) => {
            eprintln!(
                "{fmt}: Image is corrupt: {m}; further non-fatal corruption events will be suppressed"
            );
            Fail::msg("Could not read file metadata: Input/output error")
        }
        other => Fail::msg(format!(
            "Could not read file metadata: {}",
            common::error_text(other)
        )),
    }
}

/// The merged map of `[start, start+len)` (clipped to the disk), each run
/// with the name of the file holding it. A failure after some runs were
/// found returns those runs with the error.
pub fn map_image(
    img: &mut dyn BlockDriver,
    name: &str,
    start: u64,
    len: u64,
) -> (Vec<(MapEntry, String)>, Option<Fail>) {
    let end = start.saturating_add(len).min(img.size());
    let mut out: Vec<(MapEntry, String)> = Vec::new();
    let mut off = start;
    while off < end {
        let (e, file) = match chain_entry(img, name, 0, off, end - off) {
            Ok(x) => x,
            Err((err, fmt)) => return (out, Some(metadata_error(&err, fmt))),
        };
        if e.length == 0 {
            break;
        }
        off += e.length;
        match out.last_mut() {
            Some((last, _)) if last.mergeable(&e) => last.length += e.length,
            _ => out.push((e, file)),
        }
    }
    (out, None)
}

/// The JSON map qemu-img prints; with no run at all, one empty run at the
/// start offset.
pub fn json_text(entries: &[(MapEntry, String)], start: u64) -> String {
    if entries.is_empty() {
        let e = MapEntry {
            start,
            length: 0,
            depth: 0,
            present: false,
            zero: false,
            data: false,
            compressed: false,
            offset: None,
        };
        return format!("[{}]\n", e.json());
    }
    let lines: Vec<String> = entries.iter().map(|(e, _)| e.json()).collect();
    format!("[{}]\n", lines.join(",\n"))
}

/// The header of the human map.
pub const HUMAN_HEADER: &str = "Offset          Length          Mapped to       File\n";

/// One line of the human map (C's `%#-15x`: no `0x` for zero).
pub fn human_line(e: &MapEntry, offset: u64, file: &str) -> String {
    fn hex(v: u64) -> String {
        if v == 0 {
            "0".to_string()
        } else {
            format!("{v:#x}")
        }
    }
    format!(
        "{:<15} {:<15} {:<15} {}\n",
        hex(e.start),
        hex(e.length),
        hex(offset),
        file
    )
}

/// Runs `qemu-img map`.
pub fn run(argv: &[String]) -> CmdResult {
    let spec = [
        opt(Some('f'), Some("format"), true, "format"),
        opt(None, Some("image-opts"), false, "image-opts"),
        opt(None, Some("object"), true, "object"),
        opt(None, Some("output"), true, "output"),
        opt(Some('s'), Some("start-offset"), true, "start-offset"),
        opt(Some('l'), Some("max-length"), true, "max-length"),
        opt(Some('U'), Some("force-share"), false, "force-share"),
    ];
    let Some(p) = parse_cmd("map", argv, &spec, HELP)? else {
        return Ok(0);
    };
    // Options are validated in command-line order, as qemu-img does.
    let mut output = OutputFormat::Human;
    let mut start = 0u64;
    let mut max_len = i64::MAX as u64;
    for (id, val) in &p.opts {
        let v = val.as_deref().unwrap_or_default();
        match *id {
            "output" => output = parse_output("map", Some(v))?,
            "start-offset" => {
                start = strtosz::parse(v)
                    .map_err(|e| Fail::msg(strtosz::message("start offset", v, e)))?
            }
            "max-length" => {
                max_len = strtosz::parse(v)
                    .map_err(|e| Fail::msg(strtosz::message("max length", v, e)))?
            }
            "object" => {
                Secrets::from_objects(&[val.as_deref().unwrap_or_default()])?;
            }
            _ => {}
        }
    }
    if p.args.len() != 1 {
        return Err(usage_error("map", "Expecting one image file name"));
    }
    let secrets = Secrets::from_objects(&p.all("object"))?;
    let ispec = ImageSpec::new(&p.args[0], p.last("format"), p.has("image-opts"))?;
    let mut img = common::open(&ispec, &secrets, &OpenParams::default())
        .map_err(|f| common::name_by_arg(f, &ispec, &p.args[0], p.has("image-opts")))?;
    let (mut entries, err) = map_image(img.as_mut(), &ispec.display(), start, max_len);
    if err.is_some() {
        // qemu-img prints a run once the next one is known: the run in
        // progress when a query fails is never printed.
        entries.pop();
    }
    match output {
        OutputFormat::Json => {
            if let Some(f) = err {
                let mut text = String::from("[");
                for (e, _) in &entries {
                    text.push_str(&e.json());
                    text.push_str(",\n");
                }
                print!("{text}");
                return Err(f);
            }
            print!("{}", json_text(&entries, start));
        }
        OutputFormat::Human => {
            let mut text = String::from(HUMAN_HEADER);
            // Only runs of plain data are listed (zeroes are not).
            for (e, file) in &entries {
                if !e.data || e.zero {
                    continue;
                }
                let Some(o) = e.offset else {
                    print!("{text}");
                    return Err(Fail::msg(
                        "File contains external, encrypted or compressed clusters.",
                    ));
                };
                text.push_str(&human_line(e, o, file));
            }
            print!("{text}");
            if let Some(f) = err {
                return Err(f);
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(start: u64, length: u64, depth: u32, data: bool, offset: Option<u64>) -> MapEntry {
        MapEntry {
            start,
            length,
            depth,
            present: true,
            zero: !data,
            data,
            compressed: false,
            offset,
        }
    }

    #[test]
    fn json_lines_like_qemu() {
        // Observed: qemu-img map --output=json of a qcow2 image.
        let v = vec![
            (e(0, 65536, 0, true, Some(327680)), String::new()),
            (
                MapEntry {
                    present: false,
                    ..e(65536, 983040, 0, false, None)
                },
                String::new(),
            ),
        ];
        assert_eq!(
            json_text(&v, 0),
            "[{ \"start\": 0, \"length\": 65536, \"depth\": 0, \"present\": true, \"zero\": false, \"data\": true, \"compressed\": false, \"offset\": 327680},\n{ \"start\": 65536, \"length\": 983040, \"depth\": 0, \"present\": false, \"zero\": true, \"data\": false, \"compressed\": false}]\n"
        );
        assert_eq!(
            json_text(&[], 2097152),
            "[{ \"start\": 2097152, \"length\": 0, \"depth\": 0, \"present\": false, \"zero\": false, \"data\": false, \"compressed\": false}]\n"
        );
    }

    #[test]
    fn human_lines_like_qemu() {
        assert_eq!(
            human_line(&e(0, 0x80000, 2, true, Some(0)), 0, "base.raw"),
            "0               0x80000         0               base.raw\n"
        );
        assert_eq!(
            human_line(
                &e(0x110000, 0x70000, 1, true, Some(0xe0000)),
                0xe0000,
                "mid.qcow2"
            ),
            "0x110000        0x70000         0xe0000         mid.qcow2\n"
        );
    }

    #[test]
    fn merging_needs_contiguous_host_offsets() {
        let a = e(0, 0x10000, 0, true, Some(0x50000));
        assert!(a.mergeable(&e(0x10000, 0x10000, 0, true, Some(0x60000))));
        assert!(!a.mergeable(&e(0x10000, 0x10000, 0, true, Some(0x80000))));
        assert!(!a.mergeable(&e(0x10000, 0x10000, 1, true, Some(0x60000))));
        assert!(!a.mergeable(&e(0x20000, 0x10000, 0, true, Some(0x70000))));
    }
}
