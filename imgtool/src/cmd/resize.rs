//! `qemu-img resize`: grow or (with `--shrink`) shrink the virtual disk,
//! with absolute or relative (`+1G`, `-512M`) sizes.

use imgformats::Prealloc;

use crate::args::opt;
use crate::common::{
    self, parse_cmd, usage_error, CmdResult, Fail, ImageSpec, OpenParams, Secrets,
};

const HELP: &str = "Resize the image to the new size.  Usage:

  qemu-img resize [--object OBJDEF] [--image-opts] [-f FMT]
        [--preallocation PREALLOC] [-q] [--shrink] FILENAME [+|-]SIZE[bkKMGTPE]

Arguments:
  -h, --help            print this help and exit
  -f, --format FMT      format of the image (probed if omitted)
  --preallocation PREALLOC
                        off, metadata, falloc or full, for the new part
  --shrink              allow shrinking the image (data beyond the new end
                        is lost)
  -q, --quiet           quiet operation
  --object OBJDEF       a secret object for encrypted images
";

/// Runs `qemu-img resize`.
pub fn run(argv: &[String]) -> CmdResult {
    // A size like "-1G" looks like an option to getopt; QEMU handles it by
    // taking a last argument starting with '-' as the size.
    let mut argv = argv.to_vec();
    let mut neg_size = None;
    if argv.len() >= 2 {
        if let Some(last) = argv.last() {
            if last.starts_with('-')
                && last.len() > 1
                && last[1..].starts_with(|c: char| c.is_ascii_digit())
            {
                neg_size = argv.pop();
            }
        }
    }
    let spec = [
        opt(Some('f'), Some("format"), true, "format"),
        opt(None, Some("preallocation"), true, "prealloc"),
        opt(None, Some("shrink"), false, "shrink"),
        opt(Some('q'), Some("quiet"), false, "quiet"),
        opt(Some('U'), Some("force-share"), false, "force-share"),
        opt(None, Some("object"), true, "object"),
        opt(None, Some("image-opts"), false, "image-opts"),
    ];
    let Some(mut p) = parse_cmd("resize", &argv, &spec, HELP)? else {
        return Ok(0);
    };
    if let Some(n) = neg_size {
        p.args.push(n);
    }
    if p.args.len() != 2 {
        return Err(usage_error("resize", "Expecting image file name and size"));
    }
    let secrets = Secrets::from_objects(&p.all("object"))?;
    let prealloc = match p.last("prealloc") {
        None => Prealloc::Off,
        Some(s) => Prealloc::parse(s)
            .map_err(|_| Fail::msg(format!("Invalid preallocation mode '{s}'")))?,
    };
    let size_arg = p.args[1].as_str();
    let (rel, num) = match size_arg.as_bytes().first() {
        Some(b'+') => (1i8, &size_arg[1..]),
        Some(b'-') => (-1, &size_arg[1..]),
        _ => (0, size_arg),
    };
    let n = imgformats::size::parse_size(num).map_err(|_| {
        Fail::msg("Parameter 'size' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.")
    })?;
    let ispec = ImageSpec::new(&p.args[0], p.last("format"), p.has("image-opts"))?;
    let mut img = common::open(
        &ispec,
        &secrets,
        &OpenParams {
            writable: true,
            no_backing: false,
            cache: None,
        },
    )?;
    common::warn_probed_raw(&ispec, img.as_ref());
    let cur = img.size() as i128;
    let new = match rel {
        1 => cur + n as i128,
        -1 => cur - n as i128,
        _ => n as i128,
    };
    if new <= 0 {
        return Err(Fail::msg("New image size must be positive"));
    }
    if new > i64::MAX as i128 {
        return Err(Fail::msg("Image size is too large"));
    }
    let new = new as u64;
    let shrink = p.has("shrink");
    if (new as i128) < cur {
        if !shrink {
            return Err(Fail::msg(
                "Use the --shrink option to perform a shrink operation.",
            ));
        }
        if img.format_name() == "raw" {
            eprintln!("qemu-img: warning: Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there.");
        }
    }
    if prealloc == Prealloc::Metadata && img.format_name() == "raw" {
        return Err(Fail::msg("Unsupported preallocation mode: metadata"));
    }
    img.resize(new, prealloc, shrink)?;
    img.flush()?;
    if !p.has("quiet") {
        println!("Image resized.");
    }
    Ok(0)
}
