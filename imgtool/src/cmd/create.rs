//! `qemu-img create`: make a new image, optionally on top of a backing file.

use imgformats::{CreateOpts, FormatOps, OptDesc, OptKind};

use crate::args::opt;
use crate::common::{
    self, parse_cmd, usage_error, CmdResult, Fail, ImageSpec, OpenParams, Secrets,
};

const HELP: &str = "Create and format new image file.  Usage:

  qemu-img create [-f FMT] [-o FMT_OPTS] [-b BACKING_FILENAME [-F BACKING_FMT]]
        [--object OBJDEF] [-u] FILENAME [SIZE[bkKMGTPE]]

Arguments:
  -h, --help         print this help and exit
  -q, --quiet        quiet operations
  -f, --format FMT   format of the new image, default is raw
  -o, --options FMT_OPTS
                     format-specific options ('-o help' for list)
  -b, --backing BACKING_FILENAME
                     stack new image on top of BACKING_FILENAME
  -F, --backing-format BACKING_FMT
                     format of BACKING_FILENAME
  -u, --backing-unsafe
                     do not fail if the backing image can not be opened
  --object OBJDEF    a secret object (secret,id=ID,data=...|file=...)
  FILENAME           image file to create; it is overwritten if it exists
  SIZE               image size with optional suffix (multiples of 1024);
                     required unless a backing image gives it
";

/// Options of the host-file protocol layer, accepted for every format.
pub const FILE_OPTS: &[OptDesc] = &[
    OptDesc {
        name: "extent_size_hint",
        kind: OptKind::Size,
        help: "Extent size hint for the image file, 0 to disable",
    },
    OptDesc {
        name: "nocow",
        kind: OptKind::Bool,
        help: "Turn off copy-on-write (valid only on btrfs)",
    },
    OptDesc {
        name: "preallocation",
        kind: OptKind::Str,
        help: "Preallocation mode (allowed values: off, falloc, full)",
    },
    OptDesc {
        name: "size",
        kind: OptKind::Size,
        help: "Virtual disk size",
    },
];

/// Prints `-o help` for a format, like qemu-img.
pub fn print_opts_help(ops: &FormatOps, with_protocol: bool) {
    println!("Supported {} options:", ops.name);
    print_opt_list(ops.create_opts);
    if with_protocol {
        println!("\nSupported file options:");
        print_opt_list(FILE_OPTS);
    } else {
        println!("\nThe protocol level may support further options.\nSpecify the target filename to include those options.");
    }
}

fn print_opt_list(list: &[OptDesc]) {
    for o in list {
        let left = format!("{}={}", o.name, o.kind.tag());
        println!("  {left:<22} - {}", o.help);
    }
}

/// True if any `-o` string asks for help.
pub fn wants_help(opts: &[&str]) -> bool {
    opts.iter().any(|o| {
        common::split_opts(o)
            .iter()
            .any(|(k, v)| v.is_none() && (k == "help" || k == "?"))
    })
}

/// qemu-img's message for a creation option value of the wrong type.
pub fn opt_value_error(key: &str, kind: OptKind) -> String {
    match kind {
        OptKind::Size => format!(
            "Parameter '{key}' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively."
        ),
        OptKind::Bool => format!("Parameter '{key}' expects 'on' or 'off'"),
        OptKind::Num => format!("Parameter '{key}' expects a number"),
        OptKind::Str => format!("Invalid parameter '{key}'"),
    }
}

/// True if `v` is a valid value for an option of type `kind`.
pub fn value_ok(kind: OptKind, v: &str) -> bool {
    match kind {
        OptKind::Str => true,
        OptKind::Size => imgformats::size::parse_size(v).is_ok(),
        OptKind::Bool => matches!(v, "on" | "off" | "yes" | "no" | "true" | "false"),
        OptKind::Num => {
            v.parse::<u64>().is_ok()
                || v.strip_prefix("0x")
                    .is_some_and(|h| u64::from_str_radix(h, 16).is_ok())
        }
    }
}

/// Merges `-o` strings into creation options, validating the keys against
/// the format's and the file protocol's lists.
pub fn merge_opts(ops: &FormatOps, opts: &[&str], into: &mut CreateOpts) -> Result<(), String> {
    for o in opts {
        for (k, v) in common::split_opts(o) {
            let Some(desc) = ops
                .create_opts
                .iter()
                .chain(FILE_OPTS.iter())
                .find(|d| d.name == k)
            else {
                return Err(format!("Invalid parameter '{k}'"));
            };
            let Some(v) = v else {
                return Err(format!("Invalid parameter '{k}'"));
            };
            // Values are type-checked while the options are parsed, before
            // anything is printed, as qemu-img does.
            if !value_ok(desc.kind, &v) {
                return Err(opt_value_error(&k, desc.kind));
            }
            into.set(&k, &v);
        }
    }
    Ok(())
}

/// The "Formatting 'x', fmt=... " line: options in the format's order,
/// sizes in bytes, defaults included.
pub fn formatting_line(path: &str, ops: &FormatOps, opts: &CreateOpts) -> String {
    let mut s = format!("Formatting '{path}', fmt={}", ops.name);
    for fo in ops.formatting {
        let val = match opts.get(fo.name) {
            Some(v) => {
                if fo.size {
                    imgformats::size::parse_size(v)
                        .map(|n| n.to_string())
                        .unwrap_or_else(|_| v.to_string())
                } else {
                    v.to_string()
                }
            }
            None => match fo.default {
                Some(d) => d.to_string(),
                None => continue,
            },
        };
        s.push_str(&format!(" {}={val}", fo.name));
    }
    s
}

/// Runs `qemu-img create`.
pub fn run(argv: &[String]) -> CmdResult {
    let spec = [
        opt(Some('q'), Some("quiet"), false, "quiet"),
        opt(Some('f'), Some("format"), true, "format"),
        opt(Some('o'), Some("options"), true, "options"),
        opt(Some('b'), Some("backing"), true, "backing"),
        opt(Some('F'), Some("backing-format"), true, "backing-format"),
        opt(Some('u'), Some("backing-unsafe"), false, "unsafe"),
        opt(None, Some("object"), true, "object"),
        // The seed's classic spellings: -e (encryption, prompting for a
        // password without a secret) and -6 (compat6, removed in QEMU).
        opt(Some('e'), None, false, "encrypt"),
        opt(Some('6'), None, false, "compat6"),
    ];
    let Some(p) = parse_cmd("create", argv, &spec, HELP)? else {
        return Ok(0);
    };
    let fmt = p.last("format").unwrap_or("raw");
    let o_strings = p.all("options");
    let secrets = Secrets::from_objects(&p.all("object"))?;
    let quiet = p.has("quiet");

    if p.has("compat6") {
        return Err(Fail::msg(
            "Option -6 has been removed, use -o compat6 instead",
        ));
    }

    let filename = p.args.first().cloned();
    let ops = match imgformats::format(fmt) {
        Ok(o) => o,
        Err(_) => {
            let f = filename.as_deref().unwrap_or("");
            return Err(Fail::msg(format!("{f}: Unknown file format '{fmt}'")));
        }
    };
    if wants_help(&o_strings) {
        print_opts_help(ops, filename.is_some());
        return Ok(0);
    }
    let Some(filename) = filename else {
        return Err(usage_error("create", "Expecting image file name"));
    };
    if p.args.len() > 2 {
        return Err(usage_error("create", "Unexpected argument"));
    }
    let fail = |m: String| Fail::msg(format!("{filename}: {m}"));

    let mut opts = CreateOpts::new();
    merge_opts(ops, &o_strings, &mut opts).map_err(fail)?;

    let size_arg = match p.args.get(1) {
        Some(s) => Some(common::parse_image_size(s)?),
        None => None,
    };
    if let Some(b) = p.last("backing") {
        opts.set("backing_file", b);
    }
    if let Some(bf) = p.last("backing-format") {
        opts.set("backing_fmt", bf);
    }
    if let Some(s) = size_arg {
        if opts.get("size").is_some() {
            return Err(fail("The image size must be specified only once".into()));
        }
        opts.set("size", &s.to_string());
    }
    if let Some(id) = opts.get("encrypt.key-secret").map(str::to_string) {
        opts.key = Some(secrets.get(&id)?);
    }
    if p.has("encrypt") {
        // The seed's `-e`: encrypt, asking for the password if no secret
        // was given.
        opts.set("encryption", "on");
        if opts.key.is_none() {
            opts.key = Some(common::read_password("Password: ")?);
        }
    }

    // A backing file: check it opens (unless -u) and take its size if none
    // was given.
    if let Some(bfile) = opts.get("backing_file").map(str::to_string) {
        if !ops.supports_backing {
            return Err(fail(format!(
                "Backing file not supported for file format '{}'",
                ops.name
            )));
        }
        let bfmt = opts.get("backing_fmt").map(str::to_string);
        let bpath =
            imgformats::driver::resolve_backing_path(std::path::Path::new(&filename), &bfile);
        let opened = common::open(
            &ImageSpec {
                path: bpath,
                fmt: bfmt.clone(),
                key_secret: None,
            },
            &secrets,
            &OpenParams::default(),
        );
        match opened {
            Ok(img) => {
                if bfmt.is_none() {
                    return Err(fail(format!(
                        "Backing file specified without backing format\nDetected format of {}.",
                        img.format_name()
                    )));
                }
                if opts.get("size").is_none() {
                    opts.set("size", &img.size().to_string());
                }
            }
            Err(e) => {
                if !p.has("unsafe") || opts.get("size").is_none() {
                    let m = e.message;
                    let m = m
                        .strip_prefix(&format!("Could not open '{}': ", bfile))
                        .unwrap_or(&m)
                        .to_string();
                    return Err(fail(format!("{m}\nCould not open backing image.")));
                }
                if bfmt.is_none() {
                    return Err(fail(
                        "Backing file specified without backing format".to_string(),
                    ));
                }
            }
        }
    }

    let size = match opts.get_size("size") {
        Ok(Some(s)) => s,
        Ok(None) => return Err(fail("Image creation needs a size parameter".into())),
        Err(e) => return Err(fail(common::error_text(&e))),
    };
    if !quiet {
        println!("{}", formatting_line(&filename, ops, &opts));
    }
    (ops.create)(std::path::Path::new(&filename), size, &opts).map_err(|e| {
        let t = match &e {
            imgformats::Error::Io { path, source } => format!(
                "Could not create '{}': {}",
                path.display(),
                imgformats::os_error_text(source)
            ),
            other => common::error_text(other),
        };
        fail(t)
    })?;
    Ok(0)
}
