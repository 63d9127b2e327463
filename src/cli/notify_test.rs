//! `lookout notify-test NOTIFIER`: send a test notice through one notifier
//! and report its answer. Exit 0 when the receiver accepted it, 1 when the
//! delivery failed (the error says why and whether a retry could help), 2
//! when the configuration is invalid or names no such notifier.

use clap::Args;

use super::output::{paint, stdout_color, GREEN, RED};
use super::{Cli, Exit};
use crate::notify::{self, Notice};

#[derive(Debug, Args)]
pub struct NotifyTestArgs {
    /// The notifier's name in the configuration.
    pub notifier: String,
}

pub async fn run(cli: &Cli, args: &NotifyTestArgs) -> Exit {
    let cfg = match super::load_config(cli) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let name = args.notifier.as_str();
    let Some(notifier) = cfg.notifiers.get(name) else {
        let names: Vec<&str> = cfg.notifiers.keys().map(String::as_str).collect();
        let hint = match crate::config::read::suggest(name, &names) {
            Some(s) => format!("; did you mean `{s}`?"),
            None if names.is_empty() => "; the configuration defines no notifiers".to_string(),
            None => format!("; configured: {}", names.join(", ")),
        };
        let error = format!("no notifier named `{name}`{hint}");
        if cli.json {
            println!(
                "{}",
                serde_json::json!({ "notifier": name, "ok": false, "error": error })
            );
        } else {
            eprintln!("lookout notify-test: {error}");
        }
        return Exit::Invalid;
    };
    let link = cfg.server.public_url.clone();
    let notice = Notice::test(name, link);
    let kind = notifier.kind();
    match notify::send(notifier, &notice).await {
        Ok(answer) => {
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({ "notifier": name, "kind": kind, "ok": true, "answer": answer })
                );
            } else {
                let ok = paint(stdout_color(), GREEN, "delivered");
                println!("{name} ({kind}): {ok}: {answer}");
            }
            Exit::Ok
        }
        Err(e) => {
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "notifier": name,
                        "kind": kind,
                        "ok": false,
                        "error": e.message,
                        "permanent": e.permanent,
                        "retry_after_secs": e.retry_after.map(|d| d.as_secs_f64()),
                    })
                );
            } else {
                let failed = paint(stdout_color(), RED, "failed");
                println!("{name} ({kind}): {failed}: {e}");
            }
            Exit::Failed
        }
    }
}
