//! `lookout check`: the configuration compile step alone.

use super::{load_config, output, Cli, Exit};

pub fn run(cli: &Cli) -> Exit {
    if cli.json {
        return match crate::config::load(&cli.config) {
            Ok((cfg, warnings)) => {
                let v = serde_json::json!({
                    "valid": true,
                    "probes": cfg.probes.len(),
                    "files": cfg.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
                    "diagnostics": warnings.0,
                });
                println!("{v}");
                Exit::Ok
            }
            Err(diags) => {
                println!(
                    "{}",
                    serde_json::json!({ "valid": false, "diagnostics": diags.0 })
                );
                Exit::Invalid
            }
        };
    }
    match load_config(cli) {
        Ok(cfg) => {
            let color = output::stdout_color();
            println!(
                "{} {}: {} probe{} in {} file{}, {} notifier{}",
                output::paint(color, output::GREEN, "ok"),
                cli.config.display(),
                cfg.probes.len(),
                plural(cfg.probes.len()),
                cfg.files.len(),
                plural(cfg.files.len()),
                cfg.notifiers.len(),
                plural(cfg.notifiers.len()),
            );
            Exit::Ok
        }
        Err(e) => e,
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
