//! `qemu-img check`: consistency check (and with `-r` repair) of an image's
//! metadata, reported as qemu-img 10.0.2 does.
//!
//! Exit codes (qemu-img's manual): 0 consistent (or repaired), 1 check not
//! completed (an error), 2 corruptions, 3 leaked clusters only, 63 the
//! format does not support checks. The driver's own messages (one per
//! problem found or repaired) go to stderr; the summary to stdout, nothing
//! of it with `-q`.

use imgformats::{CheckReport, Error, FixMode, Value};

use crate::args::opt;
use crate::common::{
    self, parse_cmd, parse_output, usage_error, CmdResult, Fail, ImageSpec, OpenParams,
    OutputFormat, Secrets,
};
use crate::json;

const HELP: &str = include_str!("help/check.txt");

/// The message of formats without a consistency check, and its exit code.
const NO_CHECK: &str = "This image format does not support checks";

/// The JSON object of a check result.
pub fn report_value(filename: &str, format: &str, r: &CheckReport) -> Value {
    let mut v = Value::object()
        .with("filename", filename)
        .with("format", format)
        .with("check-errors", r.check_errors);
    let mut opt = |key: &str, n: Option<u64>| {
        if let Some(n) = n.filter(|&n| n != 0) {
            v.push(key, n);
        }
    };
    opt("image-end-offset", r.image_end_offset);
    opt("corruptions", Some(r.corruptions));
    opt("leaks", Some(r.leaks));
    opt("corruptions-fixed", Some(r.corruptions_fixed));
    opt("leaks-fixed", Some(r.leaks_fixed));
    opt("total-clusters", r.total_clusters);
    opt("allocated-clusters", r.allocated_clusters);
    opt("fragmented-clusters", r.fragmented_clusters);
    opt("compressed-clusters", r.compressed_clusters);
    v
}

/// The human summary of a check result.
pub fn report_human(r: &CheckReport) -> String {
    let mut s = String::new();
    if r.leaks_fixed != 0 || r.corruptions_fixed != 0 {
        s.push_str(&format!(
            "The following inconsistencies were found and repaired:\n\n    {} leaked clusters\n    {} corruptions\n\nDouble checking the fixed image now...\n",
            r.leaks_fixed, r.corruptions_fixed
        ));
    }
    if r.corruptions == 0 && r.leaks == 0 && r.check_errors == 0 {
        s.push_str("No errors were found on the image.\n");
    } else {
        if r.corruptions != 0 {
            s.push_str(&format!(
                "\n{} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n",
                r.corruptions
            ));
        }
        if r.leaks != 0 {
            s.push_str(&format!(
                "\n{} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n",
                r.leaks
            ));
        }
        if r.check_errors != 0 {
            s.push_str(&format!(
                "\n{} internal errors have occurred during the check.\n",
                r.check_errors
            ));
        }
    }
    let total = r.total_clusters.unwrap_or(0);
    let alloc = r.allocated_clusters.unwrap_or(0);
    if total != 0 && alloc != 0 {
        let pct = |n: u64, of: u64| n as f64 * 100.0 / of as f64;
        s.push_str(&format!(
            "{alloc}/{total} = {:.2}% allocated, {:.2}% fragmented, {:.2}% compressed clusters\n",
            pct(alloc, total),
            pct(r.fragmented_clusters.unwrap_or(0), alloc),
            pct(r.compressed_clusters.unwrap_or(0), alloc),
        ));
    }
    if let Some(end) = r.image_end_offset.filter(|&e| e != 0) {
        s.push_str(&format!("Image end offset: {end}\n"));
    }
    s
}

/// The exit code of a completed check.
pub fn exit_code(r: &CheckReport) -> u8 {
    if r.check_errors != 0 {
        1
    } else if r.corruptions != 0 {
        2
    } else if r.leaks != 0 {
        3
    } else {
        0
    }
}

/// Runs `qemu-img check`.
pub fn run(argv: &[String]) -> CmdResult {
    let spec = [
        opt(Some('q'), Some("quiet"), false, "quiet"),
        opt(Some('f'), Some("format"), true, "format"),
        opt(None, Some("image-opts"), false, "image-opts"),
        opt(Some('T'), Some("cache"), true, "cache"),
        opt(Some('U'), Some("force-share"), false, "force-share"),
        opt(None, Some("output"), true, "output"),
        opt(Some('r'), Some("repair"), true, "repair"),
        opt(None, Some("object"), true, "object"),
    ];
    let Some(p) = parse_cmd("check", argv, &spec, HELP)? else {
        return Ok(0);
    };
    // Options are validated in command-line order, as qemu-img does.
    let mut output = OutputFormat::Human;
    let mut fix = FixMode::default();
    for (id, val) in &p.opts {
        let val = val.as_deref();
        match *id {
            "output" => output = parse_output("check", val)?,
            "repair" => {
                fix = match val {
                    Some("leaks") => FixMode {
                        leaks: true,
                        errors: false,
                    },
                    Some("all") => FixMode {
                        leaks: true,
                        errors: true,
                    },
                    other => {
                        return Err(usage_error(
                            "check",
                            &format!(
                                "--repair (-r) expects 'leaks' or 'all' not '{}'",
                                other.unwrap_or_default()
                            ),
                        ))
                    }
                }
            }
            "object" => {
                Secrets::from_objects(&[val.unwrap_or_default()])?;
            }
            _ => {}
        }
    }
    if p.args.len() != 1 {
        return Err(usage_error("check", "Expecting one image file name"));
    }
    let cache = match p.last("cache") {
        None => None,
        Some(c) => Some(
            imgformats::CacheMode::parse(c)
                .map_err(|_| Fail::msg(format!("Invalid source cache option: {c}")))?,
        ),
    };
    let quiet = p.has("quiet");
    let repair = fix.leaks || fix.errors;
    let secrets = Secrets::from_objects(&p.all("object"))?;
    let ispec = ImageSpec::new(&p.args[0], p.last("format"), p.has("image-opts"))?;
    if repair && p.has("force-share") {
        return Err(Fail::msg(format!(
            "Could not open '{}': force-share=on can only be used with read-only images",
            p.args[0]
        )));
    }
    let params = OpenParams {
        writable: repair,
        no_backing: false,
        cache,
    };
    let opened = if repair {
        common::open_for_repair(&ispec, &secrets, &params)
    } else {
        common::open(&ispec, &secrets, &params)
    };
    let mut img =
        opened.map_err(|f| common::name_by_arg(f, &ispec, &p.args[0], p.has("image-opts")))?;
    if repair {
        common::warn_probed_raw(&ispec, img.as_ref());
    }
    let report = match img.check(fix) {
        Ok(r) => r,
        Err(Error::Unsupported(m)) if m == NO_CHECK => return Err(Fail::code(NO_CHECK, 63)),
        Err(Error::CheckFailed { messages, error }) => {
            for m in &messages {
                eprintln!("{m}");
            }
            return Err(Fail::msg(format!(
                "Check failed: {}",
                common::error_text(&error)
            )));
        }
        Err(e) => {
            return Err(Fail::msg(format!(
                "Check failed: {}",
                common::error_text(&e)
            )))
        }
    };
    for m in &report.messages {
        eprintln!("{m}");
    }
    if !quiet {
        match output {
            OutputFormat::Human => print!("{}", report_human(&report)),
            OutputFormat::Json => print!(
                "{}",
                json::to_json(&report_value(&p.args[0], img.format_name(), &report))
            ),
        }
    }
    Ok(exit_code(&report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep() -> CheckReport {
        CheckReport {
            image_end_offset: Some(589824),
            total_clusters: Some(64),
            allocated_clusters: Some(4),
            ..CheckReport::default()
        }
    }

    #[test]
    fn clean_image() {
        // Observed: qemu-img check of a qcow2 image with 4 data clusters.
        assert_eq!(
            report_human(&rep()),
            "No errors were found on the image.\n4/64 = 6.25% allocated, 0.00% fragmented, 0.00% compressed clusters\nImage end offset: 589824\n"
        );
        assert_eq!(
            json::to_json(&report_value("ck.qcow2", "qcow2", &rep())),
            "{\n    \"image-end-offset\": 589824,\n    \"total-clusters\": 64,\n    \"check-errors\": 0,\n    \"allocated-clusters\": 4,\n    \"filename\": \"ck.qcow2\",\n    \"format\": \"qcow2\"\n}\n"
        );
        assert_eq!(exit_code(&rep()), 0);
    }

    #[test]
    fn corruptions_and_leaks() {
        let r = CheckReport {
            corruptions: 3,
            leaks: 1,
            ..rep()
        };
        assert_eq!(
            report_human(&r),
            "\n3 errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n\n1 leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n4/64 = 6.25% allocated, 0.00% fragmented, 0.00% compressed clusters\nImage end offset: 589824\n"
        );
        assert_eq!(exit_code(&r), 2);
        assert_eq!(exit_code(&CheckReport { leaks: 2, ..rep() }), 3);
    }

    #[test]
    fn repaired_then_remaining() {
        // Observed: check -r all of an image with a misaligned L2 entry.
        let r = CheckReport {
            corruptions: 1,
            corruptions_fixed: 2,
            fragmented_clusters: Some(1),
            ..rep()
        };
        assert_eq!(
            report_human(&r),
            "The following inconsistencies were found and repaired:\n\n    0 leaked clusters\n    2 corruptions\n\nDouble checking the fixed image now...\n\n1 errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n4/64 = 6.25% allocated, 25.00% fragmented, 0.00% compressed clusters\nImage end offset: 589824\n"
        );
        assert_eq!(
            json::to_json(&report_value("t.qcow2", "qcow2", &r)),
            "{\n    \"image-end-offset\": 589824,\n    \"total-clusters\": 64,\n    \"corruptions\": 1,\n    \"corruptions-fixed\": 2,\n    \"check-errors\": 0,\n    \"allocated-clusters\": 4,\n    \"filename\": \"t.qcow2\",\n    \"format\": \"qcow2\",\n    \"fragmented-clusters\": 1\n}\n"
        );
    }

    #[test]
    fn compressed_percentages_round_like_printf() {
        let r = CheckReport {
            allocated_clusters: Some(18),
            fragmented_clusters: Some(18),
            compressed_clusters: Some(18),
            image_end_offset: Some(393216),
            ..rep()
        };
        assert_eq!(
            report_human(&r),
            "No errors were found on the image.\n18/64 = 28.12% allocated, 100.00% fragmented, 100.00% compressed clusters\nImage end offset: 393216\n"
        );
    }
}
