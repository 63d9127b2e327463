//! Process limits Lookout raises for itself at start.
//!
//! Every probe run in flight holds a socket (a hanging target holds it for
//! the whole timeout), so `lookout run` may need as many file descriptors
//! as `scheduler.concurrency` plus what the process itself keeps open. The
//! soft `RLIMIT_NOFILE` is often 1024 (login shells, systemd's default
//! `LimitNOFILE=1024:524288`) while the hard limit is far higher; any
//! process may raise its soft limit up to its hard limit without privilege,
//! as Go programs and most network daemons do at start. Lookout never uses
//! `select(2)`, so descriptors above 1024 are safe.

use std::io;

/// Descriptors the daemon keeps besides one per run in flight: SQLite (four
/// connections, each with the database, `-wal` and `-shm` files), the HTTP
/// listener and its clients, notifier connections, the runtime's epoll and
/// wake-up descriptors, the configuration watcher and stdio. Generous on
/// purpose: HTTP clients and deliveries come and go.
pub const RESERVED_FDS: u64 = 256;

/// The open-files limit before and after [`raise_open_files`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit the process started with.
    pub before: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit (the most the soft limit can be raised to).
    pub hard: u64,
}

/// Descriptors a daemon whose scheduler runs at most `concurrency` probes
/// at once may need.
pub fn needed_for(concurrency: usize) -> u64 {
    u64::try_from(concurrency)
        .unwrap_or(u64::MAX)
        .saturating_add(RESERVED_FDS)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. An unlimited hard
/// limit is not a value the kernel accepts for a soft limit (it refuses
/// anything above `fs.nr_open`), so then the soft limit is raised to
/// `fs.nr_open`.
pub fn raise_open_files() -> io::Result<OpenFiles> {
    let (before, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    let soft = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => soft,
        Err(e) => match nr_open() {
            Some(max) if max > before => rlimit::increase_nofile_limit(max)?,
            _ => return Err(e),
        },
    };
    Ok(OpenFiles { before, soft, hard })
}

/// The kernel's ceiling on any process's descriptors (`fs.nr_open`).
fn nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What `main` calls once, after logging is set up: raises the limit and
/// logs the outcome at debug level (a failure at warn for the daemon,
/// `daemon` true). [`warn_if_short`] then checks it against the
/// configuration.
pub fn raise_open_files_limit(daemon: bool) -> Option<OpenFiles> {
    match raise_open_files() {
        Ok(l) => {
            tracing::debug!(
                before = l.before,
                soft = l.soft,
                hard = l.hard,
                "open files limit"
            );
            Some(l)
        }
        Err(e) => {
            if daemon {
                tracing::warn!(error = %e, "cannot raise the open files limit");
            } else {
                tracing::debug!(error = %e, "cannot raise the open files limit");
            }
            None
        }
    }
}

/// `lookout run`, once the configuration is loaded: warns when the soft
/// open-files limit is below what `concurrency` runs in flight and
/// [`RESERVED_FDS`] need; with that many hanging targets at once, runs
/// would fail with "too many open files" instead of timing out.
pub fn warn_if_short(concurrency: usize) {
    let Ok((soft, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return;
    };
    let needed = needed_for(concurrency);
    if soft < needed {
        tracing::warn!(
            soft,
            hard,
            needed,
            "the open files limit is below scheduler.concurrency ({concurrency}) + \
             {RESERVED_FDS}: with that many runs in flight (hanging targets), runs would \
             fail with \"too many open files\"; raise the hard limit (LimitNOFILE=, \
             ulimit -Hn) or lower scheduler.concurrency"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_reaches_the_hard_limit_and_is_idempotent() {
        let first = raise_open_files().unwrap();
        assert!(first.soft >= first.before);
        assert!(first.soft <= first.hard);
        let again = raise_open_files().unwrap();
        assert_eq!(again.before, first.soft);
        assert_eq!(again.soft, first.soft);
        if first.hard != rlimit::INFINITY {
            assert_eq!(first.soft, first.hard);
        }
    }

    #[test]
    fn needed_counts_the_reserve() {
        assert_eq!(needed_for(4096), 4096 + RESERVED_FDS);
        assert_eq!(needed_for(usize::MAX), u64::MAX);
    }
}
