//! The `lookout` binary: parse arguments, set up logging, run the command,
//! and turn its outcome into the process exit status.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use lookout::cli::{dispatch, Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the C library's allocator: glibc gives each thread
/// that allocates its own arena and keeps freed memory in them (about 30 MB
/// more resident with 10,000 probes, BENCHMARKS.md), and musl's allocator,
/// which the static build would otherwise get, is slow under threads.
/// Built with `no_thp`: mimalloc otherwise asks for transparent huge pages,
/// which turns a few touched KB into resident 2 MB pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v2 and v3 (`mimalloc.h`), which
/// libmimalloc-sys does not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc v3 keeps freed pages for 1 s (arenas 10 s) before returning
/// them to the OS. Loading a large configuration frees a parse tree of tens
/// of MB just after building it, so that second was the process's peak
/// RSS (64 MiB with 10,000 probes; 58.6 MiB purging at once, at no
/// measurable CPU cost: BENCHMARKS.md). `MIMALLOC_PURGE_DELAY` in the
/// environment still wins. The crate's one `unsafe` block: the option API
/// is C, and no safe wrapper exposes this option.
#[allow(unsafe_code)]
fn purge_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set stores an integer in mimalloc's option
        // table; it is safe to call at any time from any thread.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
    }
}

fn main() -> ExitCode {
    purge_freed_memory_promptly();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    lookout::limits::raise_open_files_limit(matches!(cli.command, Command::Run));
    dispatch(cli).into()
}

/// Logs go to stderr, at the level in `LOOKOUT_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("LOOKOUT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal, never in files or journals.
    let ansi = std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}
