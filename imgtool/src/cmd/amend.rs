//! `qemu-img amend`: change format options of an existing image in place
//! (qcow2: compat level, lazy refcounts, refcount width, backing file ...).

use imgformats::CreateOpts;

use crate::args::opt;
use crate::common::{
    self, parse_cmd, usage_error, CmdResult, Fail, ImageSpec, OpenParams, Progress, Secrets,
};

const HELP: &str = "Update format-specific options of the image.  Usage:

  qemu-img amend [--object OBJDEF] [--image-opts] [-f FMT] [-t CACHE]
        [--force] [-p] [-q] -o FMT_OPTS FILENAME

Arguments:
  -h, --help            print this help and exit
  -f, --format FMT      format of the image (probed if omitted)
  -t, --cache CACHE     cache mode for the image
  --force               allow unsafe operations (e.g. compat downgrades
                        that need data conversion)
  -o, --options FMT_OPTS
                        the options to change ('-o help' for a list)
  -p, --progress        display progress information
  -q, --quiet           quiet operation
  --object OBJDEF       a secret object for encrypted images
";

/// Runs `qemu-img amend`.
pub fn run(argv: &[String]) -> CmdResult {
    let spec = [
        opt(Some('o'), Some("options"), true, "options"),
        opt(Some('f'), Some("format"), true, "format"),
        opt(Some('t'), Some("cache"), true, "cache"),
        opt(Some('p'), Some("progress"), false, "progress"),
        opt(Some('q'), Some("quiet"), false, "quiet"),
        opt(None, Some("force"), false, "force"),
        opt(None, Some("object"), true, "object"),
        opt(None, Some("image-opts"), false, "image-opts"),
    ];
    let Some(p) = parse_cmd("amend", argv, &spec, HELP)? else {
        return Ok(0);
    };
    let o_strings = p.all("options");
    if o_strings.is_empty() {
        return Err(usage_error("amend", "Must specify options (-o)"));
    }
    let help = crate::cmd::create::wants_help(&o_strings);
    if help && p.args.is_empty() {
        if let Some(f) = p.last("format") {
            let ops = imgformats::format(f)
                .map_err(|_| Fail::msg(format!("Unknown file format '{f}'")))?;
            print_amend_help(ops)?;
            return Ok(0);
        }
    }
    if p.args.len() != 1 {
        return Err(usage_error("amend", "Expecting one image file name"));
    }
    let secrets = Secrets::from_objects(&p.all("object"))?;
    let cache = common::parse_cache(p.last("cache"))?;
    let ispec = ImageSpec::new(&p.args[0], p.last("format"), p.has("image-opts"))?;
    let mut img = common::open(
        &ispec,
        &secrets,
        &OpenParams {
            writable: !help,
            no_backing: true,
            cache,
        },
    )?;
    let ops = imgformats::format(img.format_name())?;
    if help {
        print_amend_help(ops)?;
        return Ok(0);
    }
    common::warn_probed_raw(&ispec, img.as_ref());
    if ops.amend_opts.is_empty() {
        return Err(Fail::msg(format!(
            "Format driver '{}' does not support option amendment",
            ops.name
        )));
    }
    let mut opts = CreateOpts::new();
    for o in &o_strings {
        for (k, v) in common::split_opts(o) {
            if !ops.amend_opts.iter().any(|d| d.name == k) {
                if ops.create_opts.iter().any(|d| d.name == k) {
                    return Err(Fail::msg(format!(
                        "Invalid parameter '{k}'\nThis option is only supported for image creation"
                    )));
                }
                return Err(Fail::msg(format!("Invalid parameter '{k}'")));
            }
            let Some(v) = v else {
                return Err(Fail::msg(format!("Invalid parameter '{k}'")));
            };
            opts.set(&k, &v);
        }
    }
    if let Some(id) = opts.get("encrypt.key-secret").map(str::to_string) {
        opts.key = Some(secrets.get(&id)?);
    }
    let mut progress = Progress::new(p.has("progress") && !p.has("quiet"));
    img.amend(&opts, p.has("force"))
        .map_err(|e| Fail::msg(common::error_text(&e)))?;
    img.flush()?;
    progress.finish();
    Ok(0)
}

fn print_amend_help(ops: &imgformats::FormatOps) -> Result<(), Fail> {
    if ops.amend_opts.is_empty() {
        return Err(Fail::msg(format!(
            "Format driver '{}' does not support option amendment",
            ops.name
        )));
    }
    println!("Amend options for '{}':", ops.name);
    for o in ops.amend_opts {
        let left = format!("{}={}", o.name, o.kind.tag());
        println!("  {left:<22} - {}", o.help);
    }
    Ok(())
}
