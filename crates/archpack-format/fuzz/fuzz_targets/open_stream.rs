//! A bundle arriving on a pipe (`load -`): the stream reader with no file length to
//! bound anything by. Opens it and verifies the members in file order.
#![no_main]

use archpack_format::progress::Silent;
use archpack_format::BundleReader;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let stream = Box::new(std::io::Cursor::new(data.to_vec()));
    let gate = archpack_format::AdmitAll;
    let Ok(reader) = BundleReader::open_stream(stream, Path::new("(fuzz)"), &gate) else {
        return;
    };
    let mut buf = vec![0u8; 1 << 16];
    for m in &reader.index.members {
        if reader.verify_member(m, &mut buf, &Silent).is_err() {
            return;
        }
    }
});
