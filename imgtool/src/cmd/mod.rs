//! The qemu-img commands, one module each.

pub mod amend;
pub mod check;
pub mod commit;
pub mod compare;
pub mod convert;
pub mod create;
pub mod dd;
pub mod info;
pub mod map;
pub mod measure;
pub mod rebase;
pub mod resize;
pub mod snapshot;

/// Top-level `--help` text.
pub fn help_text() -> String {
    let mut s = String::from(
        "qemu-img version 10.0.2 (rqemu 0.1.0)\nQEMU disk image utility (rqemu).  Usage:\n\n  qemu-img [standard options] COMMAND [--help | command options]\n\nStandard options:\n  -h, --help\n     display this help and exit\n  -V, --version\n     display version info and exit\n\nRecognized commands (run qemu-img COMMAND --help for command-specific help):\n\n",
    );
    for (name, what) in [
        ("amend", "Update format-specific options of the image"),
        ("bench", "Run simple image benchmark (not implemented yet)"),
        (
            "bitmap",
            "Perform modifications of the persistent bitmap in the image (not implemented yet)",
        ),
        ("check", "Check basic image integrity"),
        ("commit", "Commit image to its backing file"),
        ("compare", "Check if two images have the same contents"),
        (
            "convert",
            "Copy one image to another with optional format conversion",
        ),
        ("create", "Create and format new image file"),
        ("dd", "Copy input to output with optional format conversion"),
        ("info", "Display information about image"),
        ("map", "Dump image metadata"),
        ("measure", "Calculate file size required for a new image"),
        ("rebase", "Change backing file of the image"),
        ("resize", "Resize the image to the new size"),
        ("snapshot", "List or manipulate snapshots within image"),
    ] {
        s.push_str(&format!("  {name} - {what}\n"));
    }
    s.push_str("\nSupported image formats:\n\n ");
    for f in imgformats::formats() {
        s.push(' ');
        s.push_str(f.name);
    }
    s.push('\n');
    s
}
