//! Fuzzes format probing plus whichever driver the probe picks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imgtool_fuzz::exercise(data, None, "probe");
});
