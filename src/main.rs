//! The `archpack` command line: parses arguments, calls the library, prints results.
//! Results go to stdout; progress, warnings and errors to stderr.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    return_large_buffers_to_the_system();
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("archpack: error: {}", cli::render_error(&err));
            ExitCode::from(err.exit_code())
        }
    }
}

/// glibc raises its mmap threshold each time a large block is freed, after which
/// MiB-sized buffers (zstd windows, gzip and copy blocks) come from per-thread arenas and
/// stay resident after they are freed. A fixed threshold sends them to mmap and back:
/// `serve` with two gzip transfers of a 48 MiB layer peaked at 92 MiB before, 55 MiB
/// after. (musl and others have no such knob and no such growth.)
fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 512 << 10);
    }
}
