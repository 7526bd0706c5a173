//! `qemu-img info`: describe an image (and with `--backing-chain` every
//! image below it), as human text or JSON, exactly as qemu-img 10.0.2
//! prints it.
//!
//! The image is opened without its backing chain, so a missing backing file
//! does not stop `info`. With `--backing-chain` each layer is opened in turn
//! from the backing file name recorded in the layer above; a chain that
//! comes back to a file already shown is reported as a loop (never a hang).

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use imgformats::size::size_to_str;
use imgformats::{BlockDriver, SnapshotInfo, Value};

use crate::args::opt;
use crate::cmd::snapshot::snapshot_table;
use crate::common::{
    self, parse_cmd, parse_output, usage_error, CmdResult, Fail, ImageSpec, OpenParams,
    OutputFormat, Secrets,
};
use crate::json;

const HELP: &str = include_str!("help/info.txt");

/// What `info` reports about one image of a chain.
pub struct ImageInfo {
    /// The name the image is shown under (as given, or the backing path).
    pub filename: String,
    pub format: String,
    pub virtual_size: u64,
    /// Bytes the image file occupies on disk (`st_blocks * 512`).
    pub actual_size: u64,
    /// Length of the image file (rounded up to a 512-byte sector).
    pub file_length: u64,
    pub cluster_size: Option<u64>,
    pub encrypted: bool,
    pub dirty: bool,
    pub backing_filename: Option<String>,
    pub full_backing_filename: Option<String>,
    pub backing_format: Option<String>,
    pub snapshots: Vec<SnapshotInfo>,
    pub format_specific: Option<Value>,
}

impl ImageInfo {
    /// Collects the information of an open image shown as `filename`.
    pub fn gather(filename: &str, img: &dyn BlockDriver) -> Result<ImageInfo, Fail> {
        let file = img.file();
        let actual_size = file.allocated_size()?;
        let file_length = file.len()?.div_ceil(512).saturating_mul(512);
        let backing_filename = img.backing_file_name();
        let full_backing_filename = backing_filename
            .as_deref()
            .map(|b| full_backing_name(filename, b));
        Ok(ImageInfo {
            filename: filename.to_string(),
            format: img.format_name().to_string(),
            virtual_size: img.size(),
            actual_size,
            file_length,
            cluster_size: img.cluster_size(),
            encrypted: img.encrypted(),
            dirty: img.dirty(),
            backing_format: backing_filename.as_ref().and(img.backing_format()),
            backing_filename,
            full_backing_filename,
            snapshots: img.snapshots(),
            format_specific: img.format_specific(),
        })
    }

    /// The JSON object qemu-img prints (keys in any order: the printer
    /// sorts them).
    pub fn to_value(&self) -> Value {
        let file_info = Value::object()
            .with("children", Value::Array(Vec::new()))
            .with("virtual-size", self.file_length)
            .with("filename", self.filename.as_str())
            .with("format", "file")
            .with("actual-size", self.actual_size)
            .with(
                "format-specific",
                Value::object()
                    .with("type", "file")
                    .with("data", Value::object()),
            )
            .with("dirty-flag", false);
        let child = Value::object().with("name", "file").with("info", file_info);
        let mut v = Value::object()
            .with("children", Value::Array(vec![child]))
            .with("virtual-size", self.virtual_size)
            .with("filename", self.filename.as_str())
            .with("format", self.format.as_str())
            .with("actual-size", self.actual_size)
            .with("dirty-flag", self.dirty);
        if let Some(cs) = self.cluster_size {
            v.push("cluster-size", cs);
        }
        if self.encrypted {
            v.push("encrypted", true);
        }
        if let Some(b) = &self.backing_filename {
            v.push("backing-filename", b.as_str());
        }
        if let Some(b) = &self.full_backing_filename {
            v.push("full-backing-filename", b.as_str());
        }
        if let Some(f) = &self.backing_format {
            v.push("backing-filename-format", f.as_str());
        }
        if !self.snapshots.is_empty() {
            let snaps = self.snapshots.iter().map(snapshot_value).collect();
            v.push("snapshots", Value::Array(snaps));
        }
        if let Some(data) = &self.format_specific {
            v.push(
                "format-specific",
                Value::object()
                    .with("type", self.format.as_str())
                    .with("data", data.clone()),
            );
        }
        v
    }

    /// The human text qemu-img prints.
    pub fn to_human(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("image: {}\n", self.filename));
        s.push_str(&format!("file format: {}\n", self.format));
        s.push_str(&format!(
            "virtual size: {} ({} bytes)\n",
            size_to_str(self.virtual_size),
            self.virtual_size
        ));
        s.push_str(&format!("disk size: {}\n", size_to_str(self.actual_size)));
        if self.encrypted {
            s.push_str("encrypted: yes\n");
        }
        if let Some(cs) = self.cluster_size {
            s.push_str(&format!("cluster_size: {cs}\n"));
        }
        if self.dirty {
            s.push_str("cleanly shut down: no\n");
        }
        if let Some(b) = &self.backing_filename {
            s.push_str(&format!("backing file: {b}"));
            match &self.full_backing_filename {
                Some(full) if full != b => s.push_str(&format!(" (actual path: {full})\n")),
                _ => s.push('\n'),
            }
            if let Some(f) = &self.backing_format {
                s.push_str(&format!("backing file format: {f}\n"));
            }
        }
        if !self.snapshots.is_empty() {
            s.push_str(&snapshot_table(&self.snapshots));
        }
        if let Some(data) = &self.format_specific {
            s.push_str("Format specific information:\n");
            s.push_str(&json::to_human(data, 1));
        }
        s.push_str("Child node '/file':\n");
        s.push_str(&format!("    filename: {}\n", self.filename));
        s.push_str("    protocol type: file\n");
        s.push_str(&format!(
            "    file length: {} ({} bytes)\n",
            size_to_str(self.file_length),
            self.file_length
        ));
        s.push_str(&format!(
            "    disk size: {}\n",
            size_to_str(self.actual_size)
        ));
        s
    }
}

/// A snapshot as qemu-img's JSON shows it.
pub fn snapshot_value(sn: &SnapshotInfo) -> Value {
    let mut v = Value::object()
        .with("id", sn.id.as_str())
        .with("name", sn.name.as_str())
        .with("vm-state-size", sn.vm_state_size)
        .with("date-sec", sn.date_sec)
        .with("date-nsec", sn.date_nsec)
        .with("vm-clock-sec", sn.vm_clock_nsec / 1_000_000_000)
        .with("vm-clock-nsec", sn.vm_clock_nsec % 1_000_000_000);
    if let Some(i) = sn.icount {
        v.push("icount", i);
    }
    v
}

/// The path a backing file name refers to, spelled as QEMU shows it
/// ("full-backing-filename"): relative names are taken relative to the
/// directory part of the image's own name.
pub fn full_backing_name(image: &str, backing: &str) -> String {
    if backing.starts_with('/') || backing.contains("://") {
        return backing.to_string();
    }
    match image.rfind('/') {
        Some(i) => format!("{}{}", &image[..=i], backing),
        None => backing.to_string(),
    }
}

fn file_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Runs `qemu-img info`.
pub fn run(argv: &[String]) -> CmdResult {
    let spec = [
        opt(Some('f'), Some("format"), true, "format"),
        opt(None, Some("image-opts"), false, "image-opts"),
        opt(Some('b'), Some("backing-chain"), false, "backing-chain"),
        opt(Some('U'), Some("force-share"), false, "force-share"),
        opt(None, Some("object"), true, "object"),
        opt(None, Some("output"), true, "output"),
    ];
    let Some(p) = parse_cmd("info", argv, &spec, HELP)? else {
        return Ok(0);
    };
    let output = parse_output("info", p.last("output"))?;
    if p.args.len() != 1 {
        return Err(usage_error("info", "Expecting one image file name"));
    }
    let secrets = Secrets::from_objects(&p.all("object"))?;
    let ispec = ImageSpec::new(&p.args[0], p.last("format"), p.has("image-opts"))?;
    let params = OpenParams {
        writable: false,
        no_backing: true,
        cache: None,
    };

    let mut infos = Vec::new();
    if p.has("backing-chain") {
        let mut names: HashSet<String> = HashSet::new();
        let mut ids: HashSet<(u64, u64)> = HashSet::new();
        // Set when a file is met a second time under another name: a loop
        // through a link. qemu-img notices loops by name, so keep going
        // (boundedly) until a name repeats, to name the file it would.
        let mut inode_loop: Option<(String, usize)> = None;
        let mut spec = ispec.clone();
        loop {
            let name = spec.display();
            if !names.insert(name.clone()) {
                return Err(Fail::msg(format!(
                    "Backing file '{name}' creates an infinite loop."
                )));
            }
            if let Some(id) = file_identity(&spec.path) {
                if !ids.insert(id) && inode_loop.is_none() {
                    inode_loop = Some((name.clone(), infos.len()));
                }
            }
            if let Some((first, at)) = &inode_loop {
                if infos.len() > 2 * at + 2 {
                    return Err(Fail::msg(format!(
                        "Backing file '{first}' creates an infinite loop."
                    )));
                }
            }
            let img = common::open_metadata(&spec, &secrets, &params)?;
            let info = ImageInfo::gather(&name, img.as_ref())?;
            let next = info.full_backing_filename.clone();
            let next_fmt = info.backing_format.clone();
            infos.push(info);
            let Some(next) = next else { break };
            // Opened and shown under the path as QEMU spells it.
            spec = ImageSpec {
                path: next.into(),
                fmt: next_fmt,
                key_secret: spec.key_secret.clone(),
            };
        }
    } else {
        let img = common::open_metadata(&ispec, &secrets, &params)?;
        infos.push(ImageInfo::gather(&ispec.display(), img.as_ref())?);
    }

    let text = match (output, p.has("backing-chain")) {
        (OutputFormat::Json, true) => json::to_json(&Value::Array(
            infos.iter().map(ImageInfo::to_value).collect(),
        )),
        (OutputFormat::Json, false) => json::to_json(&infos[0].to_value()),
        (OutputFormat::Human, _) => infos
            .iter()
            .map(ImageInfo::to_human)
            .collect::<Vec<_>>()
            .join("\n"),
    };
    print!("{text}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backing_names_resolve_like_qemu() {
        assert_eq!(full_backing_name("top.qcow2", "mid.qcow2"), "mid.qcow2");
        assert_eq!(
            full_backing_name("ch/top.qcow2", "mid.qcow2"),
            "ch/mid.qcow2"
        );
        assert_eq!(full_backing_name("ch/top.qcow2", "/abs/b"), "/abs/b");
        assert_eq!(full_backing_name("/x/top", "../b"), "/x/../b");
    }
}
