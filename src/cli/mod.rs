//! The command line: argument definitions and one module per command.
//!
//! Commands return an [`Exit`] status or an error; `main.rs` is the one
//! place that prints errors and sets the process exit code. Output is for
//! people by default (aligned, coloured on a terminal) and JSON with `--json`.

pub mod check;
pub mod healthcheck;
pub mod history;
pub mod notify_test;
pub mod output;
pub mod probe;
pub mod reload;
pub mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, Diagnostics};

#[derive(Debug, Parser)]
#[command(
    name = "lookout",
    version,
    about = "Synthetic health-check and dependency prober"
)]
pub struct Cli {
    /// The main configuration file.
    #[arg(
        short,
        long,
        global = true,
        env = "LOOKOUT_CONFIG",
        default_value = "lookout.yaml"
    )]
    pub config: PathBuf,
    /// Print JSON instead of text meant for people.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: schedule, probe, record, serve.
    Run,
    /// Validate the configuration, print every error, exit 0 or 2.
    Check,
    /// Run probes once now and print each phase and expectation.
    Probe(probe::ProbeArgs),
    /// Recent results, uptime and latency percentiles from the database.
    History(history::HistoryArgs),
    /// Send a test notice through one notifier and report its answer.
    NotifyTest(notify_test::NotifyTestArgs),
    /// GET a running daemon's /healthz once: exit 0 on a 200, else 1 (for
    /// container health checks).
    Healthcheck(healthcheck::HealthcheckArgs),
}

/// How a command ended, as the process exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything passed.
    Ok = 0,
    /// A probe failed, or the command could not do its work.
    Failed = 1,
    /// The configuration (or the command line) is invalid.
    Invalid = 2,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// Loads the configuration, printing diagnostics to stderr. Warnings are
/// printed and loading continues; errors end the command with status 2.
pub fn load_config(cli: &Cli) -> Result<Config, Exit> {
    match crate::config::load(&cli.config) {
        Ok((cfg, warnings)) => {
            print_diagnostics(&warnings);
            Ok(cfg)
        }
        Err(diags) => {
            print_diagnostics(&diags);
            let n = diags.errors().count();
            eprintln!(
                "{}: configuration refused: {n} error{}",
                cli.config.display(),
                if n == 1 { "" } else { "s" }
            );
            Err(Exit::Invalid)
        }
    }
}

pub fn print_diagnostics(d: &Diagnostics) {
    let color = output::stderr_color();
    for diag in &d.0 {
        let line = diag.to_string();
        let painted = match diag.severity {
            crate::config::diag::Severity::Error => output::paint(color, output::RED, &line),
            crate::config::diag::Severity::Warning => output::paint(color, output::YELLOW, &line),
        };
        eprintln!("{painted}");
    }
}

/// Runs the parsed command line.
pub fn dispatch(cli: Cli) -> Exit {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lookout: cannot start the async runtime: {e}");
            return Exit::Failed;
        }
    };
    match &cli.command {
        Command::Check => check::run(&cli),
        Command::Run => rt.block_on(run::run(&cli)),
        Command::Probe(args) => rt.block_on(probe::run(&cli, args)),
        Command::History(args) => history::run(&cli, args),
        Command::NotifyTest(args) => rt.block_on(notify_test::run(&cli, args)),
        Command::Healthcheck(args) => healthcheck::run(args),
    }
}
