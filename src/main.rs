//! The `lookout` binary: parse arguments, set up logging, run the command,
//! and turn its outcome into the process exit status.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use lookout::cli::{dispatch, Cli, LogFormat};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the C library's allocator: glibc gives each thread
/// that allocates its own arena and keeps freed memory in them (about 30 MB
/// more resident with 10,000 probes, BENCHMARKS.md), and musl's allocator,
/// which the static build would otherwise get, is slow under threads.
/// Built with `no_thp`: mimalloc otherwise asks for transparent huge pages,
/// which turns a few touched KB into resident 2 MB pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
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
