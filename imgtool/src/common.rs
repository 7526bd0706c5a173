//! What every command shares: failure values and exit codes, option parsing
//! with getopt's messages, `--object secret,...`, `--image-opts`, opening
//! images with QEMU's error texts, and the progress display.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use imgformats::{BlockDriver, Error, OpenOpts};

use crate::args::{self, Opt, Parsed};

static ARGV0: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Records how the program was invoked; "Try '<argv0> --help'" hints and
/// getopt errors name it, as the real qemu-img does.
pub fn set_argv0(s: &str) {
    let _ = ARGV0.set(s.to_string());
}

/// The program name as invoked (default "qemu-img").
pub fn argv0() -> &'static str {
    ARGV0.get().map(String::as_str).unwrap_or("qemu-img")
}

/// A command failure: a message for stderr (prefixed "qemu-img: ") and the
/// exit code.
#[derive(Debug)]
pub struct Fail {
    pub message: String,
    pub code: u8,
}

impl Fail {
    /// A failure with exit code 1.
    pub fn msg(message: impl Into<String>) -> Fail {
        Fail {
            message: message.into(),
            code: 1,
        }
    }

    /// A failure with a chosen exit code.
    pub fn code(message: impl Into<String>, code: u8) -> Fail {
        Fail {
            message: message.into(),
            code,
        }
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail::msg(error_text(&e))
    }
}

/// The result of a command: its exit code.
pub type CmdResult = Result<u8, Fail>;

/// QEMU-style text of a library error: I/O errors print the strerror text
/// without Rust's "(os error N)".
pub fn error_text(e: &Error) -> String {
    match e {
        Error::Io { path, source } => {
            format!("{}: {}", path.display(), imgformats::os_error_text(source))
        }
        Error::RawIo(source) => imgformats::os_error_text(source),
        other => other.to_string(),
    }
}

/// Parses a command's options; on a getopt error prints it the way
/// qemu-img does and fails with exit 1. `--help`/`-h` prints `help` and
/// exits 0 (signalled by `Ok(None)`).
pub fn parse_cmd(
    cmd: &str,
    argv: &[String],
    spec: &[Opt],
    help: &str,
) -> Result<Option<Parsed>, Fail> {
    let mut full: Vec<Opt> = spec.to_vec();
    full.push(args::opt(Some('h'), Some("help"), false, "help"));
    match args::parse(argv, &full) {
        Ok(p) if p.has("help") => {
            print!("{help}");
            Ok(None)
        }
        Ok(p) => Ok(Some(p)),
        Err(e) => {
            let a0 = argv0();
            eprintln!("{a0} {cmd}: {e}\nTry '{a0} {cmd} --help' for more info");
            Err(Fail::code("", 1))
        }
    }
}

/// The usage error every command prints for wrong positional arguments.
pub fn usage_error(cmd: &str, msg: &str) -> Fail {
    Fail::msg(format!(
        "{msg}\nTry '{} {cmd} --help' for more info",
        argv0()
    ))
}

/// Secrets given with `--object secret,id=...,data=...|file=...`.
#[derive(Debug, Default)]
pub struct Secrets {
    map: HashMap<String, Vec<u8>>,
}

/// QEMU object types other than `secret` (refused with rqemu's own
/// message; any other name is not a QEMU type at all).
const QOM_TYPES: &[&str] = &[
    "iothread",
    "throttle-group",
    "secret_keyring",
    "tls-creds-anon",
    "tls-creds-psk",
    "tls-creds-x509",
    "tls-cipher-suites",
    "authz-simple",
    "authz-list",
    "authz-listfile",
    "authz-pam",
    "rng-random",
    "rng-egd",
    "rng-builtin",
    "cryptodev-backend-builtin",
    "cryptodev-vhost-user",
    "input-linux",
    "filter-buffer",
    "filter-dump",
    "filter-mirror",
    "filter-redirector",
    "filter-replay",
    "filter-rewriter",
    "colo-compare",
    "can-bus",
    "pr-manager-helper",
    "dbus-vmstate",
    "main-loop",
    "iommufd",
];

impl Secrets {
    /// Parses every `--object` argument. Only `secret` objects are known.
    pub fn from_objects(objects: &[&str]) -> Result<Secrets, Fail> {
        let mut s = Secrets::default();
        for obj in objects {
            let kv = split_opts(obj);
            let mut typ = None;
            let mut id = None;
            let mut data = None;
            let mut file = None;
            let mut format = "raw".to_string();
            for (i, (k, v)) in kv.iter().enumerate() {
                match (i, k.as_str(), v) {
                    (0, t, None) => typ = Some(t.to_string()),
                    (_, "qom-type", Some(t)) => typ = Some(t.clone()),
                    (_, "id", Some(v)) => id = Some(v.clone()),
                    (_, "data", Some(v)) => data = Some(v.clone()),
                    (_, "file", Some(v)) => file = Some(v.clone()),
                    (_, "format", Some(v)) => format = v.clone(),
                    (_, other, _) => {
                        return Err(Fail::msg(format!("Parameter '{other}' is unexpected")))
                    }
                }
            }
            match typ.as_deref() {
                Some("secret") => {}
                Some(t) if QOM_TYPES.contains(&t) || t.starts_with("memory-backend-") => {
                    return Err(Fail::msg(format!(
                        "Object type '{t}' is not supported by rqemu's qemu-img (only 'secret')"
                    )))
                }
                Some(t) => {
                    return Err(Fail::msg(format!(
                        "Parameter 'qom-type' does not accept value '{t}'"
                    )))
                }
                None => return Err(Fail::msg("Parameter 'qom-type' is missing")),
            }
            let Some(id) = id else {
                return Err(Fail::msg("Parameter 'id' is missing"));
            };
            let ident = id.starts_with(|c: char| c.is_ascii_alphabetic())
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
            if !ident {
                return Err(Fail::msg(
                    "Parameter 'id' expects an identifier\nIdentifiers consist of letters, digits, '-', '.', '_', starting with a letter.",
                ));
            }
            let raw = match (data, file) {
                (Some(d), None) => d.into_bytes(),
                (None, Some(f)) => std::fs::read(&f).map_err(|e| {
                    Fail::msg(format!(
                        "Unable to read {f}: Failed to open file \u{201c}{f}\u{201d}: {}",
                        imgformats::os_error_text(&e)
                    ))
                })?,
                (Some(_), Some(_)) => {
                    return Err(Fail::msg("'file' and 'data' are mutually exclusive"))
                }
                (None, None) => return Err(Fail::msg("Either 'file' or 'data' must be provided")),
            };
            let bytes = match format.as_str() {
                "raw" => raw,
                "base64" => base64_decode(&raw)
                    .ok_or_else(|| Fail::msg(format!("Invalid base64 data in secret '{id}'")))?,
                f => {
                    return Err(Fail::msg(format!(
                        "Parameter 'format' does not accept value '{f}'"
                    )))
                }
            };
            if s.map.contains_key(&id) {
                return Err(Fail::msg(format!(
                    "attempt to add duplicate property '{id}' to object (type 'container')"
                )));
            }
            s.map.insert(id, bytes);
        }
        Ok(s)
    }

    /// Adds a secret under an id (used for the password of the classic `-e`).
    pub fn insert(&mut self, id: &str, value: Vec<u8>) {
        self.map.insert(id.to_string(), value);
    }

    /// Looks up a secret by id.
    pub fn get(&self, id: &str) -> Result<Vec<u8>, Fail> {
        self.map
            .get(id)
            .cloned()
            .ok_or_else(|| Fail::msg(format!("No secret with id '{id}'")))
    }
}

fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in input {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Splits QEMU's `a=b,c=d` option syntax; `,,` escapes a comma. A bare
/// word has no value.
pub fn split_opts(s: &str) -> Vec<(String, Option<String>)> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                cur.push(',');
            } else {
                parts.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (p, None),
        })
        .collect()
}

/// What names an image on the command line: a file name, or with
/// `--image-opts` an option string like `driver=qcow2,file.filename=x`.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub path: PathBuf,
    pub fmt: Option<String>,
    pub key_secret: Option<String>,
}

impl ImageSpec {
    /// Builds the spec from a positional argument.
    pub fn new(arg: &str, fmt: Option<&str>, image_opts: bool) -> Result<ImageSpec, Fail> {
        if !image_opts {
            return Ok(ImageSpec {
                path: PathBuf::from(arg),
                fmt: fmt.map(str::to_string),
                key_secret: None,
            });
        }
        if fmt.is_some() {
            return Err(Fail::msg(
                "--image-opts and --format are mutually exclusive",
            ));
        }
        let mut path = None;
        let mut driver = None;
        let mut key = None;
        for (k, v) in split_opts(arg) {
            let v = v.unwrap_or_default();
            match k.as_str() {
                "driver" => driver = Some(v),
                "file.filename" | "filename" => path = Some(v),
                "file.driver" if v == "file" => {}
                "encrypt.key-secret" => key = Some(v),
                "file.locking" | "cache.direct" | "cache.no-flush" | "read-only"
                | "force-share" | "file.aio" => {}
                other => {
                    return Err(Fail::msg(format!(
                        "Block option '{other}' is not supported by rqemu's qemu-img"
                    )))
                }
            }
        }
        let Some(path) = path else {
            return Err(Fail::msg("The 'file' block driver requires a file name"));
        };
        Ok(ImageSpec {
            path: PathBuf::from(path),
            fmt: driver,
            key_secret: key,
        })
    }

    /// The name QEMU shows for the image.
    pub fn display(&self) -> String {
        self.path.display().to_string()
    }
}

/// Opening parameters shared by commands.
#[derive(Debug, Default, Clone)]
pub struct OpenParams {
    pub writable: bool,
    pub no_backing: bool,
    pub cache: Option<imgformats::CacheMode>,
}

/// Opens an image (and its backing chain unless `no_backing`), producing
/// QEMU's "Could not open 'x': ..." messages.
pub fn open(
    spec: &ImageSpec,
    secrets: &Secrets,
    p: &OpenParams,
) -> Result<Box<dyn BlockDriver>, Fail> {
    open_with(spec, secrets, p, false, false)
}

/// With `--image-opts`, qemu-img names the image in "Could not open" by
/// the whole option string; rewrites a failure of [`open`] accordingly.
pub fn name_by_arg(f: Fail, spec: &ImageSpec, arg: &str, image_opts: bool) -> Fail {
    let prefix = format!("Could not open '{}': ", spec.display());
    match f.message.strip_prefix(&prefix) {
        Some(rest) if image_opts => Fail {
            message: format!("Could not open '{arg}': {rest}"),
            code: f.code,
        },
        _ => f,
    }
}

/// Opens an image only to describe it (`info`): encrypted images open
/// without their key, as with QEMU.
pub fn open_metadata(
    spec: &ImageSpec,
    secrets: &Secrets,
    p: &OpenParams,
) -> Result<Box<dyn BlockDriver>, Fail> {
    open_with(spec, secrets, p, true, false)
}

/// Opens an image for `check -r`: writable even if marked corrupt.
pub fn open_for_repair(
    spec: &ImageSpec,
    secrets: &Secrets,
    p: &OpenParams,
) -> Result<Box<dyn BlockDriver>, Fail> {
    open_with(spec, secrets, p, false, true)
}

fn open_with(
    spec: &ImageSpec,
    secrets: &Secrets,
    p: &OpenParams,
    metadata_only: bool,
    repair: bool,
) -> Result<Box<dyn BlockDriver>, Fail> {
    let key = match &spec.key_secret {
        Some(id) => Some(secrets.get(id)?),
        None => None,
    };
    let opts = OpenOpts {
        writable: p.writable,
        key,
        no_backing: p.no_backing,
        metadata_only,
        repair,
    };
    let name = spec.display();
    let fmt = spec.fmt.as_deref();
    if let Some(f) = fmt {
        if imgformats::format(f).is_err() {
            return Err(Fail::msg(format!(
                "Could not open '{name}': Unknown driver '{f}'"
            )));
        }
    }
    let mut img = imgformats::open_chain(&spec.path, fmt, &opts).map_err(|e| {
        let reason = match &e {
            Error::Io { source, .. } => {
                if source.kind() == std::io::ErrorKind::IsADirectory {
                    format!("'file' driver requires '{name}' to be a regular file")
                } else {
                    format!(
                        "Could not open '{name}': {}",
                        imgformats::os_error_text(source)
                    )
                }
            }
            other => error_text(other),
        };
        Fail::msg(format!("Could not open '{name}': {reason}"))
    })?;
    if let Some(c) = p.cache {
        set_cache(img.as_mut(), c);
    }
    Ok(img)
}

/// Applies a cache mode to a whole chain.
pub fn set_cache(img: &mut dyn BlockDriver, cache: imgformats::CacheMode) {
    img.file_mut().set_cache(cache);
    if let Some(b) = img.backing() {
        set_cache(b, cache);
    }
}

/// Parses `-t`/`-T` cache modes.
pub fn parse_cache(s: Option<&str>) -> Result<Option<imgformats::CacheMode>, Fail> {
    match s {
        None => Ok(None),
        Some(v) => imgformats::CacheMode::parse(v)
            .map(Some)
            .map_err(|_| Fail::msg(format!("Invalid cache option: {v}"))),
    }
}

/// `--output human|json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Human,
    Json,
}

/// Parses `--output` of command `cmd` (qemu-img 10.0.2's message).
pub fn parse_output(cmd: &str, s: Option<&str>) -> Result<OutputFormat, Fail> {
    match s {
        None | Some("human") => Ok(OutputFormat::Human),
        Some("json") => Ok(OutputFormat::Json),
        Some(other) => Err(usage_error(
            cmd,
            &format!("--output expects 'human' or 'json' not '{other}'"),
        )),
    }
}

/// The progress display of `-p`: "    (12.34/100%)" rewritten in place on
/// stdout, as qemu-img prints it.
pub struct Progress {
    enabled: bool,
    last: f64,
}

impl Progress {
    /// A progress display, shown only if `enabled`.
    pub fn new(enabled: bool) -> Progress {
        let p = Progress {
            enabled,
            last: -1.0,
        };
        p.print(0.0);
        p
    }

    fn print(&self, pct: f64) {
        if self.enabled {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "    ({pct:.2}/100%)\r");
            let _ = out.flush();
        }
    }

    /// Reports progress as a fraction `done/total`; prints at most every 1%.
    pub fn update(&mut self, done: u64, total: u64) {
        if !self.enabled {
            return;
        }
        let pct = if total == 0 {
            100.0
        } else {
            (done as f64 * 100.0 / total as f64).min(100.0)
        };
        if pct - self.last >= 1.0 || (pct >= 100.0 && self.last < 100.0) {
            self.last = pct;
            self.print(pct);
        }
    }

    /// Ends the display with a bare newline (as `compare` does after its
    /// verdict).
    pub fn finish_newline(&mut self) {
        if self.enabled {
            println!();
        }
    }

    /// Ends the display with 100% and a newline.
    pub fn finish(&mut self) {
        if self.enabled {
            self.print(100.0);
            println!();
        }
    }
}

/// Parses a size argument for `create`/`resize`: QEMU accepts `[0, 2^63)`.
pub fn parse_image_size(s: &str) -> Result<u64, Fail> {
    match imgformats::size::parse_size(s) {
        Ok(v) if v <= i64::MAX as u64 => Ok(v),
        Ok(_) => Err(Fail::msg(
            "Invalid image size specified. Must be between 0 and 9223372036854775807.",
        )),
        Err(_) => {
            if s.starts_with('-') {
                Err(Fail::msg(
                    "Invalid image size specified. Must be between 0 and 9223372036854775807.",
                ))
            } else if s
                .trim_start_matches(|c: char| c.is_ascii_digit() || c == '.')
                .len()
                > 1
                || s.parse::<f64>().is_err() && !s.ends_with(|c: char| "bkKMGTPE".contains(c))
            {
                Err(Fail::msg(format!("Invalid image size specified: '{s}'.")))
            } else {
                Err(Fail::msg(
                    "Invalid image size specified. Must be between 0 and 9223372036854775807.",
                ))
            }
        }
    }
}

/// The warning qemu-img prints when a raw image was probed and is about to
/// be written.
pub fn warn_probed_raw(spec: &ImageSpec, img: &dyn BlockDriver) {
    if spec.fmt.is_none() && img.format_name() == "raw" {
        eprintln!(
            "WARNING: Image format was not specified for '{}' and probing guessed raw.\n         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n         Specify the 'raw' format explicitly to remove the restrictions.",
            spec.display()
        );
    }
}

/// The secret id under which the password typed for the classic `-e`
/// option is kept.
pub const CLASSIC_E_SECRET: &str = "rqemu-classic-e-password";

/// Reads a password the way the original qemu-img's `-e` did: prompts on a
/// terminal with echo off, or reads one line from a non-terminal stdin.
pub fn read_password(prompt: &str) -> Result<Vec<u8>, Fail> {
    use std::io::BufRead;
    let fd = libc::STDIN_FILENO;
    // SAFETY: isatty only inspects the descriptor.
    let tty = unsafe { libc::isatty(fd) } == 1;
    let mut saved: Option<libc::termios> = None;
    if tty {
        eprint!("{prompt}");
        // SAFETY: tcgetattr/tcsetattr on stdin with a zero-initialised
        // termios that tcgetattr fills before it is used.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut t) == 0 {
                saved = Some(t);
                t.c_lflag &= !libc::ECHO;
                libc::tcsetattr(fd, libc::TCSANOW, &t);
            }
        }
    }
    let mut line = String::new();
    let r = std::io::stdin().lock().read_line(&mut line);
    if let Some(t) = saved {
        // SAFETY: restores the settings read above on the same descriptor.
        unsafe {
            libc::tcsetattr(fd, libc::TCSANOW, &t);
        }
        eprintln!();
    }
    match r {
        Ok(n) if n > 0 => Ok(line.trim_end_matches(['\n', '\r']).as_bytes().to_vec()),
        _ => Err(Fail::msg("No password given")),
    }
}
