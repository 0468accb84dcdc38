use std::process::ExitCode;

use clap::Parser;

use facepass::cli::{Cli, Command};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mimalloc.h` (the same in mimalloc 2 and 3).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// Keeps freed memory for reuse instead of handing it back to the system 10 ms after the last
/// free (mimalloc's default): otherwise the face engine's multi-megabyte maps come back from
/// the system on the next photo, page by page (docs/PERFORMANCE.md: ~24-32 k page faults per
/// `facepass bench` run -> ~1 k, resident memory +2%). `MIMALLOC_PURGE_DELAY` (milliseconds,
/// mimalloc's own variable) still decides when set.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // Safety: mimalloc is this binary's allocator (above); setting an option is allowed at
        // any time.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve).run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
