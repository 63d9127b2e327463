//! `lookout notify-test NOTIFIER`: send a test notice through one notifier
//! and report its answer. (Being written: issue 4.)

use clap::Args;

use super::{Cli, Exit};

#[derive(Debug, Args)]
pub struct NotifyTestArgs {
    /// The notifier's name in the configuration.
    pub notifier: String,
}

pub async fn run(_cli: &Cli, _args: &NotifyTestArgs) -> Exit {
    eprintln!("lookout notify-test: not implemented yet");
    Exit::Failed
}
