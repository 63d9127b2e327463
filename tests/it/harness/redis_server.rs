//! Throwaway Redis servers started from the installed `redis-server` on
//! free loopback ports, configured entirely on the command line: with a
//! password or ACL users, over TLS (certificates from [`TestCa`]), or as a
//! replica of another. Each runs in its own temporary directory, persists
//! nothing, and is killed when dropped. [`RedisServer::stop`] and
//! [`RedisServer::restart`] take it down and bring it back on the same port;
//! [`RedisServer::freeze`] stops the process (SIGSTOP) so that connections
//! are accepted by the kernel and never answered.
//!
//! The test side talks to a server through the `redis` crate's synchronous
//! client ([`RedisServer::admin`]), logged in as the default user.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::{self, free_port, log_to, on_a_free_port, Process};
use super::targets::{TestCa, Validity, NAMES};

/// Overrides where `redis-server` is looked for (otherwise `PATH`).
pub const REDIS_SERVER_ENV: &str = "LOOKOUT_REDIS_SERVER";

/// How a server is to be configured; see [`RedisServer::builder`].
#[derive(Default)]
pub struct Builder {
    password: Option<String>,
    users: Vec<String>,
    tls: Option<TlsFiles>,
    replica_of: Option<(u16, Option<String>)>,
}

/// The certificate files a TLS server uses, and the CA that signed them.
struct TlsFiles {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl Builder {
    /// `requirepass`: the default user's password.
    pub fn password(mut self, password: &str) -> Builder {
        self.password = Some(password.to_string());
        self
    }

    /// An ACL user, as `--user` rules: `monitor on >secret ~* +@read`.
    pub fn user(mut self, rules: &str) -> Builder {
        self.users.push(rules.to_string());
        self
    }

    /// TLS only (no plain port), with a certificate for localhost and
    /// 127.0.0.1 issued by `ca`.
    pub fn tls(mut self, ca: &TestCa) -> Builder {
        let cert = ca.issue(NAMES, Validity::days_left(90));
        self.tls = Some(TlsFiles {
            ca_pem: ca.pem.clone(),
            cert_pem: cert.chain_pem(),
            key_pem: cert.key_pem(),
        });
        self
    }

    /// A replica of `master` (authenticating with its password).
    pub fn replica_of(mut self, master: &RedisServer) -> Builder {
        self.replica_of = Some((master.port, master.password.clone()));
        self
    }

    /// Starts the server on a free port and waits until it answers PING.
    pub fn start(self) -> RedisServer {
        let binary = redis_binary();
        on_a_free_port("redis-server", free_port, |port| {
            let dir = tempfile::tempdir().expect("temporary directory for redis");
            let mut server = RedisServer {
                process: Process::default(),
                port,
                binary: binary.clone(),
                args: Vec::new(),
                password: self.password.clone(),
                ca_pem: self.tls.as_ref().map(|t| t.ca_pem.clone()),
                dir,
            };
            server.args = self.args(&server);
            server.spawn().map(|()| server)
        })
    }

    fn args(&self, server: &RedisServer) -> Vec<String> {
        let dir = server.dir.path();
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        let port = server.port.to_string();
        match &self.tls {
            None => push(&["--port", &port]),
            Some(t) => {
                let write = |name: &str, text: &str| -> String {
                    let p = dir.join(name);
                    std::fs::write(&p, text).expect("write a TLS file for redis");
                    p.display().to_string()
                };
                let cert = write("server.pem", &t.cert_pem);
                let key = write("server.key", &t.key_pem);
                let ca = write("ca.pem", &t.ca_pem);
                push(&["--port", "0", "--tls-port", &port]);
                push(&["--tls-cert-file", &cert, "--tls-key-file", &key]);
                push(&["--tls-ca-cert-file", &ca, "--tls-auth-clients", "no"]);
            }
        }
        let dir_text = dir.display().to_string();
        push(&["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        push(&["--dir", &dir_text, "--daemonize", "no", "--logfile", ""]);
        // A replica's first sync starts at once instead of after 5 s.
        push(&["--repl-diskless-sync-delay", "0"]);
        if let Some(p) = &self.password {
            push(&["--requirepass", p]);
        }
        for u in &self.users {
            a.push("--user".into());
            a.extend(u.split_whitespace().map(str::to_string));
        }
        if let Some((port, password)) = &self.replica_of {
            a.extend(["--replicaof".into(), "127.0.0.1".into(), port.to_string()]);
            if let Some(p) = password {
                a.extend(["--masterauth".into(), p.clone()]);
            }
        }
        a
    }
}

/// A running redis-server. Killed when dropped.
pub struct RedisServer {
    /// First, so that it is killed before its directory is removed.
    process: Process,
    port: u16,
    binary: PathBuf,
    args: Vec<String>,
    password: Option<String>,
    /// The CA that signed the server's certificate, for TLS servers.
    ca_pem: Option<String>,
    dir: TempDir,
}

impl RedisServer {
    /// A plain server with no password.
    pub fn start() -> RedisServer {
        RedisServer::builder().start()
    }

    pub fn builder() -> Builder {
        Builder::default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT` (no credentials).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `rediss://127.0.0.1:PORT` (no credentials).
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.id()
    }

    /// Kills the server (SIGKILL, so clients see their connections drop
    /// as when a machine dies) and waits until it is gone.
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Starts the server again on the same port with the same configuration
    /// and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.spawn() {
            panic!(
                "redis-server did not start again on port {}:\n{log}",
                self.port
            );
        }
    }

    /// Stops the process with SIGSTOP: the kernel still accepts
    /// connections, but nothing answers until it is killed.
    pub fn freeze(&self) {
        let pid = self.pid().expect("the server is running");
        let status = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .expect("run kill -STOP");
        assert!(status.success(), "kill -STOP {pid} failed");
    }

    /// A new connection for the test itself, as the default user.
    pub fn admin(&self) -> redis::Connection {
        self.try_admin(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("cannot connect to redis on port {}: {e}", self.port))
    }

    fn try_admin(&self, timeout: Duration) -> redis::RedisResult<redis::Connection> {
        let auth = self
            .password
            .as_ref()
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        let client = match &self.ca_pem {
            None => redis::Client::open(format!("redis://{auth}127.0.0.1:{}", self.port))?,
            Some(ca) => redis::Client::build_with_tls(
                format!("rediss://{auth}127.0.0.1:{}", self.port),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.as_bytes().to_vec()),
                },
            )?,
        };
        let con = client.get_connection_with_timeout(timeout)?;
        con.set_read_timeout(Some(timeout))?;
        con.set_write_timeout(Some(timeout))?;
        Ok(con)
    }

    /// Runs one command as the default user on a fresh connection.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut con = self.admin();
        run_cmd(&mut con, args)
    }

    /// Polls INFO until `field` has `value`, or panics after 10 s.
    pub fn wait_for_info(&self, field: &str, value: &str) {
        let mut con = self.admin();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = info_field(&mut con, field);
            if got.as_deref() == Some(value) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "redis on port {}: INFO {field} is {got:?}, not {value:?}, after 10 s",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the process and polls with PING until the server answers.
    /// Returns the server's log when it exited instead (e.g. its port was
    /// taken).
    fn spawn(&mut self) -> Result<(), String> {
        let log_path = self.dir.path().join("redis.log");
        let mut running = Process::spawn(log_to(
            Command::new(&self.binary).args(&self.args),
            &log_path,
        ));
        let answered = process::wait_ready(
            &mut running,
            &format!("redis-server on port {}", self.port),
            Duration::from_secs(10),
            Duration::from_millis(10),
            || std::fs::read_to_string(&log_path).unwrap_or_default(),
            || {
                self.try_admin(Duration::from_millis(500))
                    .and_then(|mut con| redis::cmd("PING").query::<String>(&mut con))
                    .map(drop)
                    .map_err(|e| e.to_string())
            },
        );
        self.process = running;
        answered
    }
}

/// Runs one command on `con`, panicking with the server's error.
pub fn run_cmd<T: redis::FromRedisValue>(con: &mut redis::Connection, args: &[&str]) -> T {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con)
        .unwrap_or_else(|e| panic!("redis command {args:?} failed: {e}"))
}

/// One field of INFO, read on `con`; `slave0.state` reads `state=` inside
/// the `slave0` field's `k=v,...` value.
pub fn info_field(con: &mut redis::Connection, field: &str) -> Option<String> {
    let text: String = run_cmd(con, &["INFO"]);
    let lookup = |name: &str| {
        text.lines()
            .filter_map(|l| l.trim().split_once(':'))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    if let Some(v) = lookup(field) {
        return Some(v);
    }
    let (name, key) = field.split_once('.')?;
    lookup(name)?
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
}

fn redis_binary() -> PathBuf {
    if let Some(p) = std::env::var_os(REDIS_SERVER_ENV) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "{REDIS_SERVER_ENV} points at {}, which does not exist",
            p.display()
        );
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the redis tests need redis-server, which is not installed: run tests/run.sh, \
                 which installs it (apt-get install redis-server), or point {REDIS_SERVER_ENV} \
                 at the binary"
            )
        })
}

/// How many bytes sit unread in the sockets of established connections to
/// local `port` (from /proc/net/tcp): with the server frozen, more than
/// zero means a client has sent its request and is waiting for the answer.
pub fn unread_bytes_at(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let want = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            if cols.len() > 4 && cols[1].ends_with(&want) && cols[3] == "01" {
                let rx = cols[4].split_once(':')?.1;
                u64::from_str_radix(rx, 16).ok()
            } else {
                None
            }
        })
        .sum()
}
