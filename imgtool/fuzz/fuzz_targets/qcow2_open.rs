//! Fuzzes the qcow2 driver: header and extensions, L1/L2 tables (standard
//! and extended), refcounts, snapshots, compressed clusters, allocation on
//! write, and the consistency check.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imgtool_fuzz::exercise(data, Some("qcow2"), "qcow2");
});
