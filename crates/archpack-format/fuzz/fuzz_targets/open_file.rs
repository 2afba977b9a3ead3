//! A bundle file: open it (index, signature slot, layout checks), verify every member,
//! and read every small member through the index. Errors are fine; panics, hangs and
//! unbounded allocations are findings.
#![no_main]

use archpack_format::progress::Silent;
use archpack_format::{BundleReader, MemberKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = tempfile::NamedTempFile::new() else {
        return;
    };
    if std::fs::write(file.path(), data).is_err() {
        return;
    }
    let Ok(reader) = BundleReader::open(file.path()) else {
        return;
    };
    let _ = reader.verify(&Silent);
    for m in &reader.index.members {
        if m.kind != MemberKind::Layer {
            let _ = reader.read_member(m);
        }
    }
});
