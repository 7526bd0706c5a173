//! `qemu-img commit`: write the data of an image (and, with `-b`, of every
//! layer above the chosen base) into its backing file, then empty the top
//! image unless `-d` or `-b` is given.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use imgformats::{BlockDriver, Prealloc};

use crate::args::opt;
use crate::cmd::convert::Copier;
use crate::common::{
    self, parse_cmd, usage_error, CmdResult, Fail, ImageSpec, OpenParams, Progress, Secrets,
};

const HELP: &str = "Commit image to its backing file.  Usage:

  qemu-img commit [--object OBJDEF] [--image-opts] [-q] [-f FMT] [-t CACHE]
        [-b BASE_IMG] [-d] [-r RATE] [-p] FILENAME

Arguments:
  -h, --help            print this help and exit
  -q, --quiet           quiet operation
  -f, --format FMT      format of the image (probed if omitted)
  -t, --cache CACHE     cache mode for the images
  -b, --base BASE_IMG   commit down to this image of the backing chain
                        (implies -d)
  -d, --drop            do not empty FILENAME after the commit
  -r, --rate-limit RATE accepted for compatibility
  -p, --progress        display progress information
  --object OBJDEF       a secret object for encrypted images
";

/// One layer of an open chain: its path and format.
pub struct Layer {
    pub path: PathBuf,
    pub fmt: &'static str,
}

/// The layers of an open chain, top first.
pub fn chain_layers(top: &mut dyn BlockDriver) -> Vec<Layer> {
    let mut v = vec![Layer {
        path: top.file().path().to_path_buf(),
        fmt: top.format_name(),
    }];
    let mut cur = top.backing();
    while let Some(b) = cur {
        v.push(Layer {
            path: b.file().path().to_path_buf(),
            fmt: b.format_name(),
        });
        cur = b.backing();
    }
    v
}

/// True if two paths name the same file.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Runs `qemu-img commit`.
pub fn run(argv: &[String]) -> CmdResult {
    let spec = [
        opt(Some('q'), Some("quiet"), false, "quiet"),
        opt(Some('f'), Some("format"), true, "format"),
        opt(Some('t'), Some("cache"), true, "cache"),
        opt(Some('b'), Some("base"), true, "base"),
        opt(Some('d'), Some("drop"), false, "drop"),
        opt(Some('r'), Some("rate-limit"), true, "rate"),
        opt(Some('p'), Some("progress"), false, "progress"),
        opt(None, Some("object"), true, "object"),
        opt(None, Some("image-opts"), false, "image-opts"),
    ];
    let Some(p) = parse_cmd("commit", argv, &spec, HELP)? else {
        return Ok(0);
    };
    if p.args.len() != 1 {
        return Err(usage_error("commit", "Expecting one image file name"));
    }
    let secrets = Secrets::from_objects(&p.all("object"))?;
    let cache = common::parse_cache(p.last("cache"))?;
    let quiet = p.has("quiet");
    let name = p.args[0].clone();
    let ispec = ImageSpec::new(&name, p.last("format"), p.has("image-opts"))?;
    let mut top = common::open(
        &ispec,
        &secrets,
        &OpenParams {
            writable: false,
            no_backing: false,
            cache,
        },
    )?;
    common::warn_probed_raw(&ispec, top.as_ref());
    let layers = chain_layers(top.as_mut());
    if layers.len() < 2 {
        return Err(Fail::msg("Image does not have a backing file"));
    }
    let base_idx = match p.last("base") {
        None => 1,
        Some(b) => layers
            .iter()
            .enumerate()
            .skip(1)
            .find(|(_, l)| same_file(&l.path, Path::new(b)))
            .map(|(i, _)| i)
            .ok_or_else(|| {
                Fail::msg(format!(
                    "Did not find '{b}' in the backing chain of '{name}'"
                ))
            })?,
    };
    let drop_top = p.has("drop") || p.has("base");
    let base_layer = &layers[base_idx];
    let mut base = common::open(
        &ImageSpec {
            path: base_layer.path.clone(),
            fmt: Some(base_layer.fmt.to_string()),
            key_secret: ispec.key_secret.clone(),
        },
        &secrets,
        &OpenParams {
            writable: true,
            no_backing: false,
            cache,
        },
    )?;
    if base.size() < top.size() {
        base.resize(top.size(), Prealloc::Off, false)?;
    }
    let mut progress = Progress::new(p.has("progress") && !quiet);
    let total = top.size();
    let mut copier = Copier {
        target: base.as_mut(),
        target_zero: false,
        sparse: 4096,
        compress: false,
        done: 0,
        total,
    };
    copier.copy_image(top.as_mut(), 0, Some(base_idx), &mut progress)?;
    base.flush()?;
    drop(base);
    if !drop_top {
        drop(top);
        let mut t = common::open(
            &ispec,
            &secrets,
            &OpenParams {
                writable: true,
                no_backing: true,
                cache,
            },
        )?;
        t.make_empty()?;
        t.flush()?;
    }
    progress.finish();
    if !quiet {
        println!("Image committed.");
    }
    Ok(0)
}
