//! The `archpack` command line: parses arguments, calls the library, prints results.
//! Results go to stdout; progress, warnings and errors to stderr.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("archpack: error: {}", cli::render_error(&err));
            ExitCode::from(err.exit_code())
        }
    }
}
