//! The tar header parser every member read goes through.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() >= 512 {
        let mut block = [0u8; 512];
        block.copy_from_slice(&data[..512]);
        let _ = archpack_format::ustar::parse(&block);
    }
});
