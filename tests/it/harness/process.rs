//! What the servers started from installed binaries (unbound, PostgreSQL,
//! redis-server, MariaDB) share: a free loopback port, a process with its
//! output in a log file that is killed when dropped, starting again on
//! another port when the one found free was taken meanwhile, and waiting
//! until the server answers.

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How many ports a server is tried on before giving up.
const PORT_ATTEMPTS: usize = 5;

/// A free loopback TCP port (free when checked).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Calls `start` with a port from `port` until it succeeds: a port found
/// free can be taken before the server binds it. `start` returns the
/// server's log when it did not start; after a few ports this panics with
/// the last one.
pub fn on_a_free_port<T>(
    what: &str,
    mut port: impl FnMut() -> u16,
    mut start: impl FnMut(u16) -> Result<T, String>,
) -> T {
    let mut last_log = String::new();
    for _ in 0..PORT_ATTEMPTS {
        match start(port()) {
            Ok(server) => return server,
            Err(log) => last_log = log,
        }
    }
    panic!(
        "{what} did not start on a free port after {PORT_ATTEMPTS} attempts; its last log:\n{last_log}"
    );
}

/// Sends `cmd`'s standard output and error to the file at `path`
/// (appending, so the log of an earlier start is kept).
pub fn log_to<'c>(cmd: &'c mut Command, path: &Path) -> &'c mut Command {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let log2 = log.try_clone().expect("clone the log handle");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
}

/// A server process, or none while it is stopped. Killed (SIGKILL) and
/// waited for when dropped.
#[derive(Default)]
pub struct Process(Option<Child>);

impl Process {
    /// Starts `cmd`; panics when the binary cannot be started at all.
    pub fn spawn(cmd: &mut Command) -> Process {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
        Process(Some(child))
    }

    /// The process id, while running.
    pub fn id(&self) -> Option<u32> {
        self.0.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.0.is_some()
    }

    /// Kills the process (SIGKILL, as when a machine dies) and waits until
    /// it is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (`INT`, `QUIT`, ...) and waits until the process exits.
    pub fn stop_with(&mut self, signal: &str) {
        if let Some(mut c) = self.0.take() {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    /// How the process ended, once it has (it is then no longer running).
    fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.0.as_mut()?.try_wait().ok()??;
        self.0 = None;
        Some(status)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Calls `ready` every `every` until it succeeds. Returns the log (read by
/// `log`) when the process exits first, e.g. because its port was taken;
/// panics with `ready`'s last complaint and the log after `within`.
pub fn wait_ready(
    process: &mut Process,
    what: &str,
    within: Duration,
    every: Duration,
    log: impl Fn() -> String,
    mut ready: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = process.exited() {
            return Err(format!("{what} exited with {status}:\n{}", log()));
        }
        let why = match ready() {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        if Instant::now() > deadline {
            panic!(
                "{what} did not answer within {within:?} ({why}); its log:\n{}",
                log()
            );
        }
        std::thread::sleep(every);
    }
}
