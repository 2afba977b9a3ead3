//! What a config member is checked with before a bundle carries or loads it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = archpack_format::config_facts(data);
});
