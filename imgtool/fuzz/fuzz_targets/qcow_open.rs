//! Fuzzes the qcow (v1) driver: header, L1/L2 tables, compressed and
//! encrypted clusters, allocation on write.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imgtool_fuzz::exercise(data, Some("qcow"), "qcow");
});
