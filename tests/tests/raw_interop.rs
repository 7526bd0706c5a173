//! Interoperability of our qemu-img with the real one on raw images:
//! create, convert, compare, dd, resize, and the outputs of each.

mod common;

use common::*;

#[test]
fn create_matches_real() {
    let t = TempDir::new("create");
    for size in ["0", "1", "512", "1000", "1M", "1.5k", "100G"] {
        let a = run_in(t.path(), &ours(), &["create", "-f", "raw", "a.img", size]);
        let b = run_in(t.path(), &real(), &["create", "-f", "raw", "b.img", size]);
        assert_eq!(a.status.code(), b.status.code(), "size {size}");
        let sa = String::from_utf8_lossy(&a.stdout).replace("a.img", "X");
        let sb = String::from_utf8_lossy(&b.stdout).replace("b.img", "X");
        assert_eq!(sa, sb, "Formatting line for size {size}");
        let la = std::fs::metadata(t.join("a.img")).map(|m| m.len()).ok();
        let lb = std::fs::metadata(t.join("b.img")).map(|m| m.len()).ok();
        assert_eq!(la, lb, "file length for size {size}");
    }
}

#[test]
fn convert_raw_round_trip_is_sparse_and_exact() {
    let t = TempDir::new("convert");
    write_mixed_raw(&t.join("src.img"), 3 << 20, 7);
    ok(
        t.path(),
        &ours(),
        &["convert", "-f", "raw", "-O", "raw", "src.img", "out.img"],
    );
    assert_eq!(
        std::fs::read(t.join("src.img")).ok(),
        std::fs::read(t.join("out.img")).ok()
    );
    assert_same(t.path(), "src.img", "out.img");
    // Zero slots are holes in the output.
    let m = std::fs::metadata(t.join("out.img")).expect("output exists");
    use std::os::unix::fs::MetadataExt;
    assert!(m.blocks() * 512 < 3 << 20, "output is sparse");
    // -S 0 fully allocates.
    ok(
        t.path(),
        &ours(),
        &["convert", "-S", "0", "-f", "raw", "src.img", "full.img"],
    );
    let m = std::fs::metadata(t.join("full.img")).expect("output exists");
    assert!(
        m.blocks() * 512 >= 3 << 20,
        "-S 0 output is fully allocated"
    );
}

#[test]
fn convert_concatenates_sources() {
    let t = TempDir::new("concat");
    std::fs::write(t.join("a.img"), pattern(1 << 20, 1)).expect("write");
    std::fs::write(t.join("b.img"), pattern(1 << 20, 2)).expect("write");
    ok(
        t.path(),
        &ours(),
        &["convert", "-f", "raw", "a.img", "b.img", "ab.img"],
    );
    let mut want = pattern(1 << 20, 1);
    want.extend(pattern(1 << 20, 2));
    assert_eq!(std::fs::read(t.join("ab.img")).ok(), Some(want));
}

#[test]
fn compare_reports_like_real() {
    let t = TempDir::new("compare");
    std::fs::write(t.join("a.img"), vec![0u8; 1 << 20]).expect("write");
    let mut b = vec![0u8; 2 << 20];
    b[1_500_000] = 1;
    std::fs::write(t.join("b.img"), &b).expect("write");
    let mut c = vec![0u8; 1 << 20];
    c[5000] = 7;
    std::fs::write(t.join("c.img"), &c).expect("write");
    for args in [
        vec!["compare", "a.img", "b.img"],
        vec!["compare", "-s", "a.img", "b.img"],
        vec!["compare", "a.img", "c.img"],
        vec!["compare", "-q", "a.img", "c.img"],
        vec!["compare", "a.img", "a.img"],
        vec!["compare", "a.img", "missing.img"],
        vec!["compare", "a.img"],
    ] {
        let x = run_in(t.path(), &ours(), &args);
        let y = run_in(t.path(), &real(), &args);
        assert_eq!(x.status.code(), y.status.code(), "{args:?}");
        assert_eq!(x.stdout, y.stdout, "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&x.stderr).replace(&*ours().to_string_lossy(), "QEMU_IMG"),
            String::from_utf8_lossy(&y.stderr).replace(&*real().to_string_lossy(), "QEMU_IMG"),
            "{args:?}"
        );
    }
}

#[test]
fn dd_matches_real() {
    let t = TempDir::new("dd");
    std::fs::write(t.join("in.img"), pattern(3_000_000, 3)).expect("write");
    for ops in [
        vec!["bs=64k", "count=3", "skip=2"],
        vec!["bs=1000", "count=7", "skip=3"],
        vec!["bs=1000", "skip=2999"],
        vec![],
    ] {
        let mut a = vec!["dd", "-f", "raw", "-O", "raw", "if=in.img", "of=ours.img"];
        a.extend(&ops);
        let mut b = vec!["dd", "-f", "raw", "-O", "raw", "if=in.img", "of=real.img"];
        b.extend(&ops);
        ok(t.path(), &ours(), &a);
        ok(t.path(), &real(), &b);
        assert_eq!(
            std::fs::read(t.join("ours.img")).ok(),
            std::fs::read(t.join("real.img")).ok(),
            "dd {ops:?}"
        );
    }
}

#[test]
fn resize_grows_and_shrinks() {
    let t = TempDir::new("resize");
    std::fs::write(t.join("r.img"), pattern(1 << 20, 4)).expect("write");
    ok(t.path(), &ours(), &["resize", "-f", "raw", "r.img", "+1M"]);
    assert_eq!(
        std::fs::metadata(t.join("r.img")).map(|m| m.len()).ok(),
        Some(2 << 20)
    );
    let o = run_in(t.path(), &ours(), &["resize", "-f", "raw", "r.img", "1M"]);
    assert_eq!(o.status.code(), Some(1), "shrinking needs --shrink");
    ok(
        t.path(),
        &ours(),
        &["resize", "-f", "raw", "--shrink", "r.img", "-1M"],
    );
    let data = std::fs::read(t.join("r.img")).expect("read");
    assert_eq!(data, pattern(1 << 20, 4));
}
