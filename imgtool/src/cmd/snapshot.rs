//! `qemu-img snapshot`: list (`-l`, the default), create (`-c`), apply
//! (`-a`) and delete (`-d`) internal snapshots.

use imgformats::{size::size_to_str, SnapshotInfo};

use crate::args::opt;
use crate::common::{
    self, parse_cmd, usage_error, CmdResult, Fail, ImageSpec, OpenParams, Secrets,
};

const HELP: &str = "List or manipulate snapshots within image.  Usage:

  qemu-img snapshot [--object OBJDEF] [--image-opts] [-U] [-q]
        [-l | -a SNAPSHOT | -c SNAPSHOT | -d SNAPSHOT] FILENAME

Arguments:
  -h, --help            print this help and exit
  -l, --list            list the snapshots (the default)
  -a, --apply SNAPSHOT  revert the disk to SNAPSHOT (id or name)
  -c, --create SNAPSHOT create a snapshot named SNAPSHOT
  -d, --delete SNAPSHOT delete the snapshot named SNAPSHOT
  -f, --format FMT      format of the image (probed if omitted)
  -q, --quiet           quiet operation
  -U, --force-share     open the image shared (with -l)
  --object OBJDEF       a secret object for encrypted images
";

/// The "Snapshot list:" table qemu-img prints for `snapshot -l` and `info`
/// (observed on qemu-img 10.0.2: columns `%-7s %-16s %8s %19s %15s %10s`,
/// padded by bytes, not characters; "--" in ICOUNT when a snapshot has no
/// instruction count; long values push the following columns right).
pub fn snapshot_table(snaps: &[SnapshotInfo]) -> String {
    let mut s = String::from("Snapshot list:\n");
    s.push_str(&snapshot_row(
        "ID", "TAG", "VM_SIZE", "DATE", "VM_CLOCK", "ICOUNT",
    ));
    for sn in snaps {
        let clock = sn.vm_clock_nsec;
        let ms = clock / 1_000_000;
        let vm_clock = format!(
            "{:04}:{:02}:{:02}.{:03}",
            ms / 3_600_000,
            (ms / 60_000) % 60,
            (ms / 1000) % 60,
            ms % 1000
        );
        let icount = sn
            .icount
            .map(|i| i.to_string())
            .unwrap_or_else(|| "--".to_string());
        s.push_str(&snapshot_row(
            &sn.id,
            &sn.name,
            &size_to_str(sn.vm_state_size),
            &local_time(sn.date_sec),
            &vm_clock,
            &icount,
        ));
    }
    s
}

/// One table row; C's printf pads by bytes, so multi-byte UTF-8 names
/// get fewer padding spaces than `format!` would give them.
fn snapshot_row(id: &str, tag: &str, size: &str, date: &str, clock: &str, icount: &str) -> String {
    fn pad(s: &str, width: usize, left: bool) -> String {
        let fill = " ".repeat(width.saturating_sub(s.len()));
        if left {
            format!("{s}{fill}")
        } else {
            format!("{fill}{s}")
        }
    }
    format!(
        "{} {} {} {} {} {}\n",
        pad(id, 7, true),
        pad(tag, 16, true),
        pad(size, 8, false),
        pad(date, 19, false),
        pad(clock, 15, false),
        pad(icount, 10, false)
    )
}

/// `YYYY-MM-DD HH:MM:SS` in the local time zone.
pub fn local_time(secs: u64) -> String {
    let t = secs as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value; localtime_r fills it from a
    // valid time_t and both pointers are to live locals.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        tm
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// Runs `qemu-img snapshot`.
pub fn run(argv: &[String]) -> CmdResult {
    let spec = [
        opt(Some('l'), Some("list"), false, "list"),
        opt(Some('a'), Some("apply"), true, "apply"),
        opt(Some('c'), Some("create"), true, "create"),
        opt(Some('d'), Some("delete"), true, "delete"),
        opt(Some('f'), Some("format"), true, "format"),
        opt(Some('q'), Some("quiet"), false, "quiet"),
        opt(Some('U'), Some("force-share"), false, "force-share"),
        opt(None, Some("object"), true, "object"),
        opt(None, Some("image-opts"), false, "image-opts"),
    ];
    let Some(p) = parse_cmd("snapshot", argv, &spec, HELP)? else {
        return Ok(0);
    };
    let actions: Vec<&str> = ["list", "apply", "create", "delete"]
        .into_iter()
        .filter(|a| p.has(a))
        .collect();
    if actions.len() > 1
        || p.opts
            .iter()
            .filter(|(i, _)| ["list", "apply", "create", "delete"].contains(i))
            .count()
            > 1
    {
        return Err(usage_error("snapshot", "Cannot mix '-l', '-a', '-c', '-d'"));
    }
    if p.args.len() != 1 {
        return Err(usage_error("snapshot", "Expecting one image file name"));
    }
    let action = actions.first().copied().unwrap_or("list");
    let secrets = Secrets::from_objects(&p.all("object"))?;
    let ispec = ImageSpec::new(&p.args[0], p.last("format"), p.has("image-opts"))?;
    let mut img = common::open(
        &ispec,
        &secrets,
        &OpenParams {
            writable: action != "list",
            no_backing: true,
            cache: None,
        },
    )?;
    if action != "list" {
        common::warn_probed_raw(&ispec, img.as_ref());
    }
    match action {
        "list" => {
            let snaps = img.snapshots();
            if !snaps.is_empty() {
                print!("{}", snapshot_table(&snaps));
            }
        }
        "create" => {
            let name = p.last("create").unwrap_or_default().to_string();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let info = SnapshotInfo {
                id: String::new(),
                name: name.clone(),
                vm_state_size: 0,
                date_sec: now.as_secs(),
                date_nsec: now.subsec_nanos(),
                vm_clock_nsec: 0,
                icount: Some(0),
            };
            img.snapshot_create(&info).map_err(|e| {
                Fail::msg(format!(
                    "Could not create snapshot '{name}': {}",
                    snapshot_error(&e)
                ))
            })?;
        }
        "apply" => {
            let name = p.last("apply").unwrap_or_default().to_string();
            img.snapshot_apply(&name).map_err(|e| {
                Fail::msg(format!(
                    "Could not apply snapshot '{name}': {}",
                    snapshot_error(&e)
                ))
            })?;
        }
        _ => {
            let name = p.last("delete").unwrap_or_default().to_string();
            img.snapshot_delete(&name).map_err(|e| {
                Fail::msg(format!(
                    "Could not delete snapshot '{name}': {}",
                    snapshot_error(&e)
                ))
            })?;
        }
    }
    img.flush()?;
    Ok(0)
}

fn snapshot_error(e: &imgformats::Error) -> String {
    match e {
        imgformats::Error::Unsupported(_) => "Operation not supported".to_string(),
        other => common::error_text(other),
    }
}
