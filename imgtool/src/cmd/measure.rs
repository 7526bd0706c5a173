//! `qemu-img measure`: how large a new image of the output format would be
//! for a given virtual size, or to hold a copy of an existing image, as
//! qemu-img 10.0.2 reports it. The numbers come from the output format's
//! `FormatOps::measure`; this command does the option handling, the source
//! image and the printing.

use imgformats::{BlockDriver, CreateOpts, FormatOps, SnapshotInfo, Value};

use crate::args::opt;
use crate::cmd::create::{opt_value_error, value_ok, FILE_OPTS};
use crate::common::{
    self, parse_cmd, parse_output, CmdResult, Fail, ImageSpec, OpenParams, OutputFormat, Secrets,
};
use crate::{json, strtosz};

const HELP: &str = include_str!("help/measure.txt");

/// Which snapshot `-l` names: `snapshot.id=..,snapshot.name=..` or a bare
/// id-or-name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotParam {
    IdOrName(String),
    Fields {
        id: Option<String>,
        name: Option<String>,
    },
}

impl SnapshotParam {
    /// Parses `-l`'s argument as qemu-img does.
    pub fn parse(arg: &str) -> Result<SnapshotParam, Fail> {
        if !arg.starts_with("snapshot.") {
            return Ok(SnapshotParam::IdOrName(arg.to_string()));
        }
        let mut id = None;
        let mut name = None;
        for (k, v) in common::split_opts(arg) {
            match (k.as_str(), v) {
                ("snapshot.id", Some(v)) => id = Some(v),
                ("snapshot.name", Some(v)) => name = Some(v),
                (other, _) => {
                    return Err(Fail::msg(format!(
                        "Invalid parameter '{other}'\nqemu-img: Failed in parsing snapshot param '{arg}'"
                    )))
                }
            }
        }
        Ok(SnapshotParam::Fields { id, name })
    }

    /// True if the snapshot is the one named.
    pub fn matches(&self, sn: &SnapshotInfo) -> bool {
        match self {
            SnapshotParam::IdOrName(s) => sn.id == *s || sn.name == *s,
            SnapshotParam::Fields { id, name } => {
                id.as_ref().is_none_or(|i| *i == sn.id)
                    && name.as_ref().is_none_or(|n| *n == sn.name)
            }
        }
    }
}

/// Parses the `-o` strings for format `ops` the way qemu-img's option lists
/// do: known keys only (the format's and the file protocol's), typed values,
/// a bare key meaning `on`.
pub fn parse_create_opts(ops: &FormatOps, strings: &[&str]) -> Result<CreateOpts, Fail> {
    let mut opts = CreateOpts::new();
    for s in strings {
        if s.is_empty() || (s.ends_with(',') && !s.ends_with(",,")) {
            return Err(Fail::msg(format!("Invalid option list: {s}")));
        }
        for (k, v) in common::split_opts(s) {
            let desc = ops
                .create_opts
                .iter()
                .chain(FILE_OPTS.iter())
                .find(|d| d.name == k);
            let invalid = |m: String| {
                Fail::msg(format!(
                    "{m}\nqemu-img: Invalid options for file format '{}'",
                    ops.name
                ))
            };
            let Some(desc) = desc else {
                return Err(invalid(format!("Invalid parameter '{k}'")));
            };
            let v = v.unwrap_or_else(|| "on".to_string());
            if !value_ok(desc.kind, &v) {
                return Err(invalid(opt_value_error(&k, desc.kind)));
            }
            opts.set(&k, &v);
        }
    }
    Ok(opts)
}

/// Switches an open (read-only) image to the internal snapshot `-l`
/// names, with qemu-img's "Failed to load snapshot: ..." errors. Shared by
/// `measure` and `convert`.
pub fn load_snapshot(img: &mut dyn BlockDriver, sp: &SnapshotParam) -> Result<(), Fail> {
    let fmt = img.format_name();
    if fmt != "qcow2" {
        return Err(Fail::msg(format!(
            "Failed to load snapshot: Block format '{fmt}' used by device '' does not support temporarily loading internal snapshots"
        )));
    }
    let Some(sn) = img.snapshots().into_iter().find(|s| sp.matches(s)) else {
        return Err(Fail::msg("Failed to load snapshot: Can't find snapshot"));
    };
    img.snapshot_load_tmp(&sn.id).map_err(|e| {
        Fail::msg(format!(
            "Failed to load snapshot: {}",
            common::error_text(&e)
        ))
    })
}

/// Runs `qemu-img measure`.
pub fn run(argv: &[String]) -> CmdResult {
    let spec = [
        opt(Some('f'), Some("format"), true, "format"),
        opt(None, Some("image-opts"), false, "image-opts"),
        opt(Some('o'), Some("options"), true, "options"),
        opt(Some('O'), Some("target-format"), true, "target-format"),
        // The help mentions -s, but qemu-img 10.0.2 only accepts --size.
        opt(None, Some("size"), true, "size"),
        opt(Some('l'), Some("snapshot"), true, "snapshot"),
        opt(None, Some("output"), true, "output"),
        opt(None, Some("object"), true, "object"),
        opt(Some('U'), Some("force-share"), false, "force-share"),
    ];
    let Some(p) = parse_cmd("measure", argv, &spec, HELP)? else {
        return Ok(0);
    };
    // Options are validated in command-line order, as qemu-img does.
    let mut output = OutputFormat::Human;
    let mut size = None;
    let mut snapshot = None;
    for (id, val) in &p.opts {
        let v = val.as_deref().unwrap_or_default();
        match *id {
            "output" => output = parse_output("measure", Some(v))?,
            "size" => {
                size = Some(
                    strtosz::parse(v)
                        .map_err(|e| Fail::msg(strtosz::message("image size", v, e)))?,
                )
            }
            "snapshot" => snapshot = Some(SnapshotParam::parse(v)?),
            "object" => {
                Secrets::from_objects(&[val.as_deref().unwrap_or_default()])?;
            }
            _ => {}
        }
    }
    if p.args.len() > 1 {
        return Err(Fail::msg("At most one filename argument is allowed."));
    }
    let filename = p.args.first();
    if filename.is_some() && size.is_some() {
        return Err(Fail::msg(
            "--size N cannot be used together with a filename.",
        ));
    }
    if filename.is_none() && size.is_none() {
        return Err(Fail::msg(
            "Either --size N or one filename must be specified.",
        ));
    }
    if filename.is_none() && (p.has("image-opts") || p.has("format") || snapshot.is_some()) {
        return Err(Fail::msg(
            "--image-opts, -f, and -l require a filename argument.",
        ));
    }
    let secrets = Secrets::from_objects(&p.all("object"))?;

    let mut source = match filename {
        Some(f) => {
            let ispec = ImageSpec::new(f, p.last("format"), p.has("image-opts"))?;
            let img = common::open(&ispec, &secrets, &OpenParams::default())
                .map_err(|e| common::name_by_arg(e, &ispec, f, p.has("image-opts")))?;
            Some(img)
        }
        None => None,
    };
    // The size measured is the image's current one, also with -l.
    let source_size = source.as_ref().map(|s| s.size());
    if let (Some(sp), Some(img)) = (&snapshot, source.as_mut()) {
        load_snapshot(img.as_mut(), sp)?;
    }

    let out_fmt = p.last("target-format").unwrap_or("raw");
    let ops = imgformats::format(out_fmt)
        .map_err(|_| Fail::msg(format!("Unknown file format '{out_fmt}'")))?;
    let mut opts = parse_create_opts(ops, &p.all("options"))?;
    if let Some(id) = opts.get("encrypt.key-secret").map(str::to_string) {
        opts.key = Some(secrets.get(&id)?);
    }
    let Some(measure) = ops.measure else {
        return Err(Fail::msg(format!(
            "Block driver '{out_fmt}' does not support size measurement"
        )));
    };
    let virtual_size = source_size.or(size).unwrap_or(0);
    let m = measure(&opts, virtual_size, source.as_deref_mut().map(|s| s as _))
        .map_err(|e| Fail::msg(common::error_text(&e)))?;
    match output {
        OutputFormat::Human => {
            print!(
                "required size: {}\nfully allocated size: {}\n",
                m.required, m.fully_allocated
            );
            if let Some(b) = m.bitmaps {
                println!("bitmaps size: {b}");
            }
        }
        OutputFormat::Json => {
            let mut v = Value::object()
                .with("required", m.required)
                .with("fully-allocated", m.fully_allocated);
            if let Some(b) = m.bitmaps {
                v.push("bitmaps", b);
            }
            print!("{}", json::to_json(&v));
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: &str, name: &str) -> SnapshotInfo {
        SnapshotInfo {
            id: id.into(),
            name: name.into(),
            ..SnapshotInfo::default()
        }
    }

    #[test]
    fn snapshot_params() {
        let s = snap("1", "snap1");
        assert!(SnapshotParam::parse("1")
            .map(|p| p.matches(&s))
            .unwrap_or(false));
        assert!(SnapshotParam::parse("snap1")
            .map(|p| p.matches(&s))
            .unwrap_or(false));
        assert!(SnapshotParam::parse("snapshot.name=snap1,snapshot.id=1")
            .map(|p| p.matches(&s))
            .unwrap_or(false));
        assert!(!SnapshotParam::parse("snapshot.name=snap1,snapshot.id=2")
            .map(|p| p.matches(&s))
            .unwrap_or(true));
        let e = SnapshotParam::parse("snapshot.foo=1")
            .err()
            .map(|f| f.message);
        assert_eq!(
            e.as_deref(),
            Some("Invalid parameter 'snapshot.foo'\nqemu-img: Failed in parsing snapshot param 'snapshot.foo=1'")
        );
    }

    #[test]
    fn create_opts_like_qemu() {
        let raw = imgformats::format("raw").expect("raw is built in");
        let e = parse_create_opts(raw, &["cluster_size=64k"])
            .err()
            .map(|f| f.message);
        assert_eq!(
            e.as_deref(),
            Some(
                "Invalid parameter 'cluster_size'\nqemu-img: Invalid options for file format 'raw'"
            )
        );
        let e = parse_create_opts(raw, &["size=x"]).err().map(|f| f.message);
        assert!(e.is_some_and(|m| m.starts_with("Parameter 'size' expects a non-negative")));
        let e = parse_create_opts(raw, &["size=1M,"])
            .err()
            .map(|f| f.message);
        assert_eq!(e.as_deref(), Some("Invalid option list: size=1M,"));
        assert!(parse_create_opts(raw, &["preallocation=full,size=1M"]).is_ok());
    }
}
