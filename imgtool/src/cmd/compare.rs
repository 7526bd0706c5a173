//! `qemu-img compare`: are two images' contents the same? Exit 0 identical,
//! 1 different, 2 error. Offsets of mismatches are reported per 512-byte
//! sector, like the real qemu-img.

use imgformats::BlockDriver;

use crate::args::opt;
use crate::common::{
    self, parse_cmd, usage_error, CmdResult, Fail, ImageSpec, OpenParams, Progress, Secrets,
};
use crate::copy::{chain_run, is_zero, RunKind, CHUNK};

const HELP: &str = "Check if two images have the same contents.  Usage:

  qemu-img compare [--object OBJDEF] [--image-opts] [-f FMT1] [-F FMT2]
        [-T SRC_CACHE] [-p] [-q] [-s] [-U] FILENAME1 FILENAME2

Arguments:
  -h, --help            print this help and exit
  -f, --a-format FMT1   format of the first image
  -F, --b-format FMT2   format of the second image
  -s, --strict          strict mode: fail on different image size or
                        allocation status
  -T, --source-cache CACHE
  -p, --progress        display progress information
  -q, --quiet           quiet operation
  -U, --force-share     open the images shared
  --object OBJDEF       a secret object for encrypted images

Exit status: 0 identical, 1 different, 2 error.
";

/// Runs `qemu-img compare`.
pub fn run(argv: &[String]) -> CmdResult {
    let spec = [
        opt(Some('f'), Some("a-format"), true, "fmt1"),
        opt(Some('F'), Some("b-format"), true, "fmt2"),
        opt(Some('s'), Some("strict"), false, "strict"),
        opt(Some('T'), Some("source-cache"), true, "cache"),
        opt(Some('p'), Some("progress"), false, "progress"),
        opt(Some('q'), Some("quiet"), false, "quiet"),
        opt(Some('U'), Some("force-share"), false, "force-share"),
        opt(None, Some("object"), true, "object"),
        opt(None, Some("image-opts"), false, "image-opts"),
    ];
    let Some(p) = parse_cmd("compare", argv, &spec, HELP)? else {
        return Ok(0);
    };
    if p.args.len() != 2 {
        return Err(usage_error("compare", "Expecting two image file names"));
    }
    // Past argument parsing every failure is exit 2 ("error"), 1 meaning
    // "different".
    compare_images(&p).map_err(|f| Fail::code(f.message, 2))
}

fn compare_images(p: &crate::args::Parsed) -> CmdResult {
    let secrets = Secrets::from_objects(&p.all("object"))?;
    let image_opts = p.has("image-opts");
    let cache = common::parse_cache(p.last("cache"))?;
    let params = OpenParams {
        writable: false,
        no_backing: false,
        cache,
    };
    let mut a = common::open(
        &ImageSpec::new(&p.args[0], p.last("fmt1"), image_opts)?,
        &secrets,
        &params,
    )?;
    let mut b = common::open(
        &ImageSpec::new(&p.args[1], p.last("fmt2"), image_opts)?,
        &secrets,
        &params,
    )?;
    let quiet = p.has("quiet");
    let strict = p.has("strict");
    let mut progress = Progress::new(p.has("progress") && !quiet);
    let say = |m: &str| {
        if !quiet {
            println!("{m}");
        }
    };

    let (sa, sb) = (a.size(), b.size());
    let common_len = sa.min(sb);
    let total = sa.max(sb);
    let verdict = (|| -> Result<Option<String>, Fail> {
        if strict && sa != sb {
            return Ok(Some("Strict mode: Image size mismatch!".into()));
        }
        let mut off = 0;
        while off < common_len {
            let want = (common_len - off).min(CHUNK);
            let (la, ka) = chain_run(a.as_mut(), off, want, None)?;
            let (lb, kb) = chain_run(b.as_mut(), off, want, None)?;
            let len = la.min(lb).clamp(1, want);
            if strict && allocated(a.as_mut(), off, len)? != allocated(b.as_mut(), off, len)? {
                return Ok(Some(format!(
                    "Strict mode: Offset {off} block status mismatch!"
                )));
            }
            if !(ka == RunKind::Zero && kb == RunKind::Zero) {
                if let Some(at) = compare_range(a.as_mut(), b.as_mut(), off, len)? {
                    return Ok(Some(format!("Content mismatch at offset {at}!")));
                }
            }
            off += len;
            progress.update(off, total);
        }
        if sa != sb {
            say("Warning: Image size mismatch!");
            let longer: &mut dyn BlockDriver = if sa > sb { a.as_mut() } else { b.as_mut() };
            if let Some(at) = nonzero_from(longer, common_len)? {
                return Ok(Some(format!("Content mismatch at offset {at}!")));
            }
        }
        Ok(None)
    })()?;
    match verdict {
        Some(m) => {
            say(&m);
            Ok(1)
        }
        None => {
            progress.update(total, total);
            say("Images are identical.");
            progress.finish_newline();
            Ok(0)
        }
    }
}

/// Whether the chain defines the run (data or zero in some layer).
fn allocated(img: &mut dyn BlockDriver, off: u64, len: u64) -> Result<bool, Fail> {
    let (_, kind) = chain_run(img, off, len, Some(usize::MAX))?;
    Ok(kind != RunKind::Unallocated)
}

/// First differing sector offset in `[off, off+len)`.
fn compare_range(
    a: &mut dyn BlockDriver,
    b: &mut dyn BlockDriver,
    off: u64,
    len: u64,
) -> Result<Option<u64>, Fail> {
    let mut ba = vec![0u8; len as usize];
    let mut bb = vec![0u8; len as usize];
    a.read(off, &mut ba)?;
    b.read(off, &mut bb)?;
    if ba == bb {
        return Ok(None);
    }
    let i = ba.iter().zip(&bb).position(|(x, y)| x != y).unwrap_or(0) as u64;
    Ok(Some((off + i) / 512 * 512))
}

/// First sector at or after `from` that is not all zero.
fn nonzero_from(img: &mut dyn BlockDriver, from: u64) -> Result<Option<u64>, Fail> {
    let size = img.size();
    let mut off = from;
    let mut buf = Vec::new();
    while off < size {
        let want = (size - off).min(CHUNK);
        let (len, kind) = chain_run(img, off, want, None)?;
        let len = len.clamp(1, want);
        if kind == RunKind::Data {
            buf.resize(len as usize, 0);
            img.read(off, &mut buf)?;
            if !is_zero(&buf) {
                let i = buf.iter().position(|&x| x != 0).unwrap_or(0) as u64;
                return Ok(Some((off + i) / 512 * 512));
            }
        }
        off += len;
    }
    Ok(None)
}
