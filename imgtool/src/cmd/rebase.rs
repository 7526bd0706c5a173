//! `qemu-img rebase`: change the backing file of an image. Safe mode copies
//! into the image every range it does not define itself where the old and
//! new backing files differ, so the guest-visible content is unchanged;
//! `-u` only rewrites the header.

use std::path::Path;

use imgformats::BlockDriver;

use crate::args::opt;
use crate::common::{
    self, parse_cmd, usage_error, CmdResult, Fail, ImageSpec, OpenParams, Progress, Secrets,
};
use crate::copy::{is_zero, CHUNK};

const HELP: &str = "Change backing file of the image.  Usage:

  qemu-img rebase [--object OBJDEF] [--image-opts] [-U] [-q] [-f FMT]
        [-t CACHE] [-T SRC_CACHE] [-p] [-u] [-c] -b BACKING_FILE
        [-F BACKING_FMT] FILENAME

Arguments:
  -h, --help            print this help and exit
  -q, --quiet           quiet operation
  -f, --format FMT      format of the image (probed if omitted)
  -t, --cache CACHE / -T, --source-cache CACHE
  -p, --progress        display progress information
  -u, --unsafe          only change the recorded backing file name
  -c, --compress        compress the clusters written into the image
  -b, --backing BACKING_FILE
                        the new backing file ('' removes it)
  -F, --backing-format BACKING_FMT
  -U, --force-share     open the backing files shared
  --object OBJDEF       a secret object for encrypted images
";

/// Runs `qemu-img rebase`.
pub fn run(argv: &[String]) -> CmdResult {
    let spec = [
        opt(Some('q'), Some("quiet"), false, "quiet"),
        opt(Some('f'), Some("format"), true, "format"),
        opt(Some('t'), Some("cache"), true, "cache"),
        opt(Some('T'), Some("source-cache"), true, "src-cache"),
        opt(Some('p'), Some("progress"), false, "progress"),
        opt(Some('u'), Some("unsafe"), false, "unsafe"),
        opt(Some('c'), Some("compress"), false, "compress"),
        opt(Some('b'), Some("backing"), true, "backing"),
        opt(Some('F'), Some("backing-format"), true, "backing-format"),
        opt(Some('U'), Some("force-share"), false, "force-share"),
        opt(None, Some("object"), true, "object"),
        opt(None, Some("image-opts"), false, "image-opts"),
    ];
    let Some(p) = parse_cmd("rebase", argv, &spec, HELP)? else {
        return Ok(0);
    };
    if p.args.len() != 1 {
        return Err(usage_error("rebase", "Expecting one image file name"));
    }
    let unsafe_mode = p.has("unsafe");
    let Some(new_backing) = p.last("backing").map(str::to_string) else {
        if unsafe_mode {
            return Err(usage_error(
                "rebase",
                "Must specify backing file (-b) in unsafe mode",
            ));
        }
        return Err(usage_error(
            "rebase",
            "Must specify backing file (-b) or use unsafe mode (-u)",
        ));
    };
    let new_fmt = p.last("backing-format").map(str::to_string);
    let secrets = Secrets::from_objects(&p.all("object"))?;
    let cache = common::parse_cache(p.last("cache"))?;
    let src_cache = common::parse_cache(p.last("src-cache"))?;
    let quiet = p.has("quiet");
    let name = p.args[0].clone();
    let ispec = ImageSpec::new(&name, p.last("format"), p.has("image-opts"))?;
    let mut img = common::open(
        &ispec,
        &secrets,
        &OpenParams {
            writable: true,
            no_backing: unsafe_mode,
            cache,
        },
    )?;
    common::warn_probed_raw(&ispec, img.as_ref());
    let change_err = |m: &str| {
        Fail::msg(format!(
            "Could not change the backing file to '{new_backing}': {m}"
        ))
    };
    if !img.supports_backing() {
        return Err(change_err("Operation not supported"));
    }
    if !new_backing.is_empty() && new_fmt.is_none() {
        return Err(change_err("backing format must be specified"));
    }
    let mut progress = Progress::new(p.has("progress") && !quiet);

    if !unsafe_mode {
        let mut new_b: Option<Box<dyn BlockDriver>> = if new_backing.is_empty() {
            None
        } else {
            let bpath = imgformats::driver::resolve_backing_path(Path::new(&name), &new_backing);
            Some(
                common::open(
                    &ImageSpec {
                        path: bpath,
                        fmt: new_fmt.clone(),
                        key_secret: None,
                    },
                    &secrets,
                    &OpenParams {
                        writable: false,
                        no_backing: false,
                        cache: src_cache,
                    },
                )
                .map_err(|f| {
                    let m = f
                        .message
                        .strip_prefix(&format!("Could not open '{new_backing}': "))
                        .map(str::to_string)
                        .unwrap_or(f.message.clone());
                    let m = if m.starts_with("Could not open") {
                        m
                    } else {
                        format!("Could not open '{new_backing}': {m}")
                    };
                    Fail::msg(format!(
                        "Could not open new backing file '{new_backing}': {m}"
                    ))
                })?,
            )
        };
        copy_differences(
            img.as_mut(),
            new_b.as_deref_mut(),
            p.has("compress"),
            &mut progress,
        )?;
    }
    img.change_backing_file(
        (!new_backing.is_empty()).then_some(new_backing.as_str()),
        if new_backing.is_empty() {
            None
        } else {
            new_fmt.as_deref()
        },
    )
    .map_err(|e| change_err(&common::error_text(&e)))?;
    img.flush()?;
    progress.finish_newline();
    Ok(0)
}

/// Writes into `img` every range it leaves to its (old) backing chain where
/// the old content differs from what `new_b` would give.
fn copy_differences(
    img: &mut dyn BlockDriver,
    mut new_b: Option<&mut (dyn BlockDriver + 'static)>,
    compress: bool,
    progress: &mut Progress,
) -> Result<(), Fail> {
    let size = img.size();
    let compressor = if compress { img.compressor() } else { None };
    let cluster = img.cluster_size().unwrap_or(65536);
    let mut off = 0u64;
    let mut old = Vec::new();
    let mut new = Vec::new();
    while off < size {
        let want = (size - off).min(CHUNK);
        let st = img.block_status(off, want)?;
        let len = st.len.clamp(1, want);
        if st.alloc == imgformats::Alloc::Unallocated {
            old.resize(len as usize, 0);
            // The old backing content as the image sees it now.
            imgformats::driver::read_backing(img.backing(), off, &mut old)?;
            new.resize(len as usize, 0);
            match new_b.as_deref_mut() {
                Some(b) => imgformats::driver::read_backing(Some(b), off, &mut new)?,
                None => new.fill(0),
            }
            // Compare per cluster so only differing clusters are written.
            let mut c = off;
            while c < off + len {
                let c_end = ((c / cluster + 1) * cluster).min(off + len);
                let (a, b) = (
                    &old[(c - off) as usize..(c_end - off) as usize],
                    &new[(c - off) as usize..(c_end - off) as usize],
                );
                if a != b && is_zero(a) {
                    img.write_zeroes(c, c_end - c, true)?;
                } else if a != b {
                    let whole =
                        c.is_multiple_of(cluster) && (c_end - c == cluster || c_end == size);
                    match (&compressor, whole) {
                        (Some(comp), true) => match comp.compress(a) {
                            Some(data) => img.write_compressed(c, &data)?,
                            None => img.write(c, a)?,
                        },
                        _ => img.write(c, a)?,
                    }
                }
                c = c_end;
            }
        }
        off += len;
        progress.update(off, size);
    }
    Ok(())
}
