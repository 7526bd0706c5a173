//! `qemu-img dd`: copy a byte range of an image into a new image, with dd's
//! `bs=`, `count=`, `skip=`, `if=`, `of=` operands. As in qemu-img, `count`
//! counts blocks from the start of the input (skipped blocks included).

use std::path::Path;

use imgformats::CreateOpts;

use crate::args::opt;
use crate::cmd::convert::Copier;
use crate::common::{self, parse_cmd, CmdResult, Fail, ImageSpec, OpenParams, Progress, Secrets};

const HELP: &str = "Copy input to output with optional format conversion.  Usage:

  qemu-img dd [-f FMT|--image-opts] [-O OUTPUT_FMT] [-U]
        [bs=BLOCK_SIZE] [count=BLOCKS] [skip=BLOCKS] if=INPUT of=OUTPUT

Arguments:
  -h, --help                print this help and exit
  -f, --format FMT          format of INPUT (probed if omitted)
  --image-opts              INPUT is a complete image specification
  -O, --output-format OUTPUT_FMT
                            format of OUTPUT (default raw)
  -U, --force-share         open INPUT shared
  bs=BLOCK_SIZE[kKMGTP]     size of an I/O block (default 512)
  count=COUNT               number of blocks from the start of INPUT to
                            copy up to (default all of INPUT)
  skip=COUNT                number of blocks of INPUT to skip
  if=INPUT                  input file name
  of=OUTPUT                 output file name to create
";

/// Runs `qemu-img dd`.
pub fn run(argv: &[String]) -> CmdResult {
    let spec = [
        opt(Some('f'), Some("format"), true, "format"),
        opt(Some('O'), Some("output-format"), true, "out-format"),
        opt(Some('U'), Some("force-share"), false, "force-share"),
        opt(None, Some("image-opts"), false, "image-opts"),
        opt(None, Some("object"), true, "object"),
    ];
    let Some(p) = parse_cmd("dd", argv, &spec, HELP)? else {
        return Ok(0);
    };
    let mut bs: u64 = 512;
    let mut count: Option<u64> = None;
    let mut skip: u64 = 0;
    let mut input = None;
    let mut output = None;
    for a in &p.args {
        let Some((k, v)) = a.split_once('=') else {
            return Err(Fail::msg(format!("unrecognized operand {a}")));
        };
        match k {
            "bs" => {
                bs = match imgformats::size::parse_size(v) {
                    Ok(n) if (1..=i32::MAX as u64).contains(&n) => n,
                    _ => {
                        return Err(Fail::msg(
                            "Invalid bs specified. Must be between 1 and 2147483647.",
                        ))
                    }
                }
            }
            "count" => {
                count = Some(
                    v.parse()
                        .map_err(|_| Fail::msg(format!("Invalid count specified: '{v}'.")))?,
                )
            }
            "skip" => {
                skip = v
                    .parse()
                    .map_err(|_| Fail::msg(format!("Invalid skip specified: '{v}'.")))?
            }
            "if" => input = Some(v.to_string()),
            "of" => output = Some(v.to_string()),
            _ => return Err(Fail::msg(format!("unrecognized operand {a}"))),
        }
    }
    let (Some(input), Some(output)) = (input, output) else {
        return Err(Fail::msg("Must specify both input and output files"));
    };
    let out_fmt = p.last("out-format").unwrap_or("raw");
    let ops = imgformats::format(out_fmt)
        .map_err(|_| Fail::msg(format!("Unknown file format '{out_fmt}'")))?;
    let secrets = Secrets::from_objects(&p.all("object"))?;
    let ispec = ImageSpec::new(&input, p.last("format"), p.has("image-opts"))?;
    let mut src = common::open(&ispec, &secrets, &OpenParams::default())?;
    let in_size = src.size();
    let end = match count {
        Some(c) => c.saturating_mul(bs).min(in_size),
        None => in_size,
    };
    let start = skip.saturating_mul(bs);
    if start > in_size {
        return Err(Fail::msg(format!(
            "{input}: cannot skip to specified offset"
        )));
    }
    let out_size = end.saturating_sub(start);
    let mut opts = CreateOpts::new();
    opts.set("size", &out_size.to_string());
    (ops.create)(Path::new(&output), out_size, &opts)
        .map_err(|e| Fail::msg(format!("{output}: {}", common::error_text(&e))))?;
    let mut dst = common::open(
        &ImageSpec {
            path: output.clone().into(),
            fmt: Some(out_fmt.to_string()),
            key_secret: None,
        },
        &secrets,
        &OpenParams {
            writable: true,
            no_backing: true,
            cache: None,
        },
    )?;
    // Copy block by block (bs bytes at a time, as dd does), skipping zeroes.
    let mut copier = Copier {
        target: dst.as_mut(),
        target_zero: true,
        sparse: 4096,
        compress: false,
        done: 0,
        total: out_size,
    };
    let mut progress = Progress::new(false);
    let mut buf = vec![0u8; crate::copy::CHUNK as usize];
    let mut off = start;
    while off < end {
        let n = (end - off).min(buf.len() as u64) as usize;
        src.read(off, &mut buf[..n])?;
        copier.write_sparse(off - start, &buf[..n])?;
        off += n as u64;
        progress.update(off - start, out_size);
    }
    dst.flush()?;
    Ok(0)
}
