//! Rendering for people: aligned columns and colour on a terminal (never
//! when `NO_COLOR` is set or output is piped).

use std::io::IsTerminal;

pub const RED: &str = "31";
pub const GREEN: &str = "32";
pub const YELLOW: &str = "33";
pub const DIM: &str = "2";

pub fn stdout_color() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

pub fn stderr_color() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

pub fn paint(on: bool, code: &str, text: &str) -> String {
    if on {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// Formats milliseconds with a fixed width so columns line up.
pub fn ms(d: std::time::Duration) -> String {
    format!("{:>9.1}ms", d.as_secs_f64() * 1000.0)
}
