//! Shared helpers of the qemu-i386 integration tests: building the C
//! conformance programs of `tests/linux-user/` with `gcc -m32 -static`,
//! and running a program natively and under our `qemu-i386` to compare.

#![allow(dead_code)]

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn qemu() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_qemu-i386"))
}

pub fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/linux-user")
}

pub fn work_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("linux-user");
    std::fs::create_dir_all(&d).expect("create the test work directory");
    d
}

/// Builds tests/linux-user/NAME.c into a static i386 binary (once per
/// source change).
pub fn build(name: &str) -> PathBuf {
    // Tests run in parallel and several build the same program: one build
    // at a time, into a temporary name renamed into place, so no test runs
    // a file another gcc still has open for writing (ETXTBSY).
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let src = src_dir().join(format!("{name}.c"));
    let out = work_dir().join(name);
    let fresh = match (std::fs::metadata(&src), std::fs::metadata(&out)) {
        (Ok(s), Ok(o)) => o.modified().ok() > s.modified().ok(),
        _ => false,
    };
    if !fresh {
        let tmp = work_dir().join(format!("{name}.tmp{}", std::process::id()));
        let st = Command::new("gcc")
            .args(["-m32", "-static", "-O2", "-pthread", "-o"])
            .arg(&tmp)
            .arg(&src)
            .status()
            .expect("run gcc (gcc-multilib is needed for -m32)");
        assert!(st.success(), "gcc -m32 failed on {}", src.display());
        std::fs::rename(&tmp, &out).expect("move the built program into place");
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    /// Exit code, or 128 + signal number for a death by signal.
    pub status: i32,
}

fn status_of(o: &Output) -> i32 {
    match (o.status.code(), o.status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => -1,
    }
}

pub fn run_cmd(mut cmd: Command, stdin: Option<&[u8]>) -> Run {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn test program");
    if let Some(data) = stdin {
        use std::io::Write;
        let mut si = child.stdin.take().expect("piped stdin");
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = si.write_all(&data);
        });
    }
    let o = child.wait_with_output().expect("wait for test program");
    Run {
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        status: status_of(&o),
    }
}

pub fn native(prog: &Path, args: &[&str]) -> Run {
    let mut c = Command::new(prog);
    c.args(args).env("LU_TEST_VAR", "native-and-emulated");
    run_cmd(c, None)
}

pub fn emulated(prog: &Path, args: &[&str]) -> Run {
    emulated_with(&[], prog, args)
}

pub fn emulated_with(opts: &[&str], prog: &Path, args: &[&str]) -> Run {
    let mut c = Command::new(qemu());
    c.args(opts)
        .arg(prog)
        .args(args)
        .env("LU_TEST_VAR", "native-and-emulated");
    run_cmd(c, None)
}

/// Runs `prog args` natively and emulated and checks stdout and the exit
/// status are the same. Returns the emulated run.
pub fn same(prog: &Path, args: &[&str]) -> Run {
    let n = native(prog, args);
    let e = emulated(prog, args);
    assert_eq!(
        e.stdout,
        n.stdout,
        "stdout differs for {} {:?}\nemulated stderr:\n{}",
        prog.display(),
        args,
        e.stderr
    );
    assert_eq!(
        e.status,
        n.status,
        "exit status differs for {} {:?}\nemulated stderr:\n{}",
        prog.display(),
        args,
        e.stderr
    );
    e
}

/// Busybox from Debian's busybox-static:i386 and the -L root, fetched by
/// the fetch script (tests/bench/user); None (and a message) when it cannot
/// be fetched.
pub fn debian_user_dir() -> Option<PathBuf> {
    let scratch = std::env::var("SCRATCH").unwrap_or_else(|_| "/tmp/rqemu-scratch".into());
    let w = PathBuf::from(scratch).join("user");
    if w.join("bb/bin/busybox").exists() && w.join("root/.complete").exists() {
        return Some(w);
    }
    let candidates =
        [Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/bench/user/fetch-i386-debs.sh")];
    for s in candidates.iter().filter(|s| s.exists()) {
        let st = Command::new("sh").arg(s).arg("all").status();
        if matches!(st, Ok(s) if s.success())
            && w.join("bb/bin/busybox").exists()
            && w.join("root/.complete").exists()
        {
            return Some(w);
        }
    }
    eprintln!(
        "SKIPPED: the Debian i386 packages (busybox-static, libc6, coreutils) could not be \
         fetched; run tests/bench/user/fetch-i386-debs.sh (needs `dpkg --add-architecture \
         i386 && apt-get update`)"
    );
    None
}
