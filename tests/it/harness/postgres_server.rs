//! Throwaway PostgreSQL servers started from the installed binaries
//! (`/usr/lib/postgresql/<newest>/bin`, or `LOOKOUT_PG_BIN`), each with a
//! fresh data directory and Unix socket directory inside its own temporary
//! directory, listening on a free loopback port.
//!
//! Every server has the superuser `postgres` (trusted over its Unix socket,
//! which is how the harness runs its own SQL with `psql`), the user
//! `monitor` ([`MONITOR_PASSWORD`]) owning the database `app` with the tables
//! `items` (three rows) and `nap` (one row: how long the test query
//! `SELECT ... FROM pg_sleep((SELECT secs FROM nap))` sleeps), and the user
//! `tlsonly` ([`TLS_PASSWORD`]) whom `pg_hba.conf` lets in over TLS only.
//! Passwords over TCP are checked with scram-sha-256, so wrong passwords
//! are refused for real. With TLS on, the server's certificate (for
//! `localhost` and `127.0.0.1`) is issued by a test CA whose PEM is
//! [`PgServer::ca_file`]; [`PgServer::other_ca_file`] is an unrelated CA.
//!
//! [`PgServer::shared`] (a primary with TLS) and [`PgServer::replica`] (a
//! streaming replica of it, made with `pg_basebackup -R`) are started once
//! per test process for the tests that do not stop them; tests that stop
//! and restart a server start their own with [`PgServer::new`].
//!
//! PostgreSQL refuses to run as root: when the tests run as root, the
//! temporary directory is given to the `postgres` user and `initdb`,
//! `postgres` and `pg_basebackup` run as that user.
//!
//! Cleanup: a server is shut down when dropped. Statics are never dropped,
//! so every server also has a watchdog, a shell that reads from a pipe only
//! this process holds; when the process ends (however it ends) the pipe
//! closes and the watchdog shuts the server down and removes its directory.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::{self, free_port, log_to, on_a_free_port, Process};
use super::targets::{self_signed, TestCa, Validity};

pub const MONITOR_USER: &str = "monitor";
pub const MONITOR_PASSWORD: &str = "monitor-pw-5b1e";
pub const TLS_USER: &str = "tlsonly";
pub const TLS_PASSWORD: &str = "tlsonly-pw-93c4";
pub const SUPERUSER_PASSWORD: &str = "postgres-pw-d07a";
/// The database every test uses.
pub const DATABASE: &str = "app";

/// How long a server may take to accept a real login after it is started.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// What kind of server to start.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// `ssl = on` with the test CA's certificate.
    pub ssl: bool,
}

/// A running (or stopped) PostgreSQL server. Shut down when dropped.
pub struct PgServer {
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    dir: TempDir,
    data: PathBuf,
    sock: PathBuf,
    port: u16,
    ssl: bool,
    process: Process,
    watchdog: Option<(Child, ChildStdin)>,
}

impl PgServer {
    /// Creates a cluster (initdb, users, database, tables) and starts it.
    pub fn new(opts: Options) -> PgServer {
        let bin = pg_bin();
        let run_as = run_as();
        let dir = tempfile::Builder::new()
            .prefix("lookout-pg-")
            .tempdir()
            .expect("temporary directory for PostgreSQL");
        give(dir.path(), run_as);
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        std::fs::create_dir(&sock).expect("socket directory");
        give(&sock, run_as);

        let pwfile = dir.path().join("superuser-password");
        write_owned(&pwfile, SUPERUSER_PASSWORD.as_bytes(), run_as, 0o600);
        let out = as_postgres(Command::new(bin.join("initdb")), run_as, dir.path())
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        write_owned(&data.join("pg_hba.conf"), PG_HBA.as_bytes(), run_as, 0o600);
        single_user(
            &bin,
            run_as,
            &data,
            "postgres",
            &format!(
                "CREATE ROLE {MONITOR_USER} LOGIN PASSWORD '{MONITOR_PASSWORD}';\n\
                 CREATE ROLE {TLS_USER} LOGIN PASSWORD '{TLS_PASSWORD}';\n\
                 CREATE DATABASE {DATABASE} OWNER {MONITOR_USER};\n"
            ),
        );
        single_user(
            &bin,
            run_as,
            &data,
            DATABASE,
            &format!(
                "CREATE TABLE items (id int PRIMARY KEY, name text);\n\
                 INSERT INTO items VALUES (1, 'one'), (2, 'two'), (3, 'three');\n\
                 ALTER TABLE items OWNER TO {MONITOR_USER};\n\
                 CREATE TABLE nap (secs float8);\n\
                 INSERT INTO nap VALUES (0);\n\
                 ALTER TABLE nap OWNER TO {MONITOR_USER};\n\
                 GRANT SELECT ON items TO {TLS_USER};\n"
            ),
        );
        if opts.ssl {
            write_certificates(dir.path(), &data, run_as);
        }
        let mut server = PgServer {
            bin,
            run_as,
            dir,
            data,
            sock,
            port: 0,
            ssl: opts.ssl,
            process: Process::default(),
            watchdog: None,
        };
        server.start_on_a_free_port();
        server
    }

    /// The primary with TLS shared by the tests that do not stop it.
    pub fn shared() -> &'static PgServer {
        static SHARED: OnceLock<PgServer> = OnceLock::new();
        SHARED.get_or_init(|| PgServer::new(Options { ssl: true }))
    }

    /// A streaming replica of [`PgServer::shared`], started once.
    pub fn replica() -> &'static PgServer {
        static REPLICA: OnceLock<PgServer> = OnceLock::new();
        REPLICA.get_or_init(|| PgServer::replica_of(PgServer::shared()))
    }

    /// A base backup of `primary` started as a streaming replica; returns
    /// once it streams WAL.
    fn replica_of(primary: &PgServer) -> PgServer {
        let run_as = primary.run_as;
        let dir = tempfile::Builder::new()
            .prefix("lookout-pg-replica-")
            .tempdir()
            .expect("temporary directory for the replica");
        give(dir.path(), run_as);
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        std::fs::create_dir(&sock).expect("socket directory");
        give(&sock, run_as);
        let out = as_postgres(
            Command::new(primary.bin.join("pg_basebackup")),
            run_as,
            dir.path(),
        )
        .arg("-h")
        .arg(&primary.sock)
        .arg("-p")
        .arg(primary.port.to_string())
        .args([
            "-U",
            "postgres",
            "-R",
            "--checkpoint=fast",
            "--no-sync",
            "-D",
        ])
        .arg(&data)
        .output()
        .expect("run pg_basebackup");
        assert!(
            out.status.success(),
            "pg_basebackup failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = PgServer {
            bin: primary.bin.clone(),
            run_as,
            dir,
            data,
            sock,
            port: 0,
            ssl: primary.ssl,
            process: Process::default(),
            watchdog: None,
        };
        server.start_on_a_free_port();
        let deadline = Instant::now() + READY_WITHIN;
        while server.sql(
            "postgres",
            "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'",
        ) != "1"
        {
            assert!(
                Instant::now() < deadline,
                "the replica did not start streaming within {READY_WITHIN:?}; its log:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.sock
    }

    /// `postgres://USER:PASSWORD@127.0.0.1:PORT/app` followed by `params`
    /// (e.g. `?sslmode=disable`).
    pub fn url(&self, user: &str, password: &str, params: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{DATABASE}{params}",
            self.port
        )
    }

    /// [`PgServer::url`] for `monitor` with its password.
    pub fn monitor_url(&self, params: &str) -> String {
        self.url(MONITOR_USER, MONITOR_PASSWORD, params)
    }

    /// The test CA that issued the server's certificate (TLS servers only).
    pub fn ca_file(&self) -> PathBuf {
        assert!(self.ssl, "this server has no TLS");
        self.dir.path().join("ca.pem")
    }

    /// A CA that has nothing to do with the server's certificate.
    pub fn other_ca_file(&self) -> PathBuf {
        assert!(self.ssl, "this server has no TLS");
        self.dir.path().join("other-ca.pem")
    }

    /// Runs `sql` in `db` as the superuser (over the Unix socket) and
    /// returns its output, one row a line, columns separated by `|`.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(&self.sock)
            .arg("-p")
            .arg(self.port.to_string())
            .args([
                "-U",
                "postgres",
                "-d",
                db,
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .env_remove("PGSSLMODE")
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed on `{sql}`:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// Shuts the server down (fast shutdown: sessions are ended, their
    /// clients told) and waits until it has exited.
    pub fn stop(&mut self) {
        self.process.stop_with("INT");
    }

    /// Starts the server again on the same data directory and port, and
    /// returns once it accepts a real login.
    pub fn start(&mut self) {
        assert!(!self.process.is_running(), "the server is already running");
        if let Err(log) = self.spawn_and_wait() {
            panic!(
                "PostgreSQL did not start again on port {}:\n{log}",
                self.port
            );
        }
    }

    fn start_on_a_free_port(&mut self) {
        on_a_free_port("PostgreSQL", free_port, |port| {
            self.port = port;
            self.spawn_and_wait()
        });
        self.watch();
    }

    /// Starts `postgres` and polls with real logins until one succeeds.
    /// Returns the log when the server exits instead.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log_path = self.dir.path().join("postgres.log");
        let ssl = if self.ssl {
            vec![
                "-c",
                "ssl=on",
                "-c",
                "ssl_cert_file=server.crt",
                "-c",
                "ssl_key_file=server.key",
            ]
        } else {
            vec!["-c", "ssl=off"]
        };
        let mut cmd = as_postgres(
            Command::new(self.bin.join("postgres")),
            self.run_as,
            self.dir.path(),
        );
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("port={}", self.port))
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.sock.display()))
            .args([
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "shared_buffers=16MB",
                "-c",
                "max_connections=40",
            ])
            .args(ssl);
        log_to(&mut cmd, &log_path);
        give(&log_path, self.run_as);
        let mut running = Process::spawn(&mut cmd);
        let started = process::wait_ready(
            &mut running,
            &format!("PostgreSQL on 127.0.0.1:{}", self.port),
            READY_WITHIN,
            Duration::from_millis(20),
            || self.log(),
            || match self.login_works() {
                true => Ok(()),
                false => Err("no login yet".to_string()),
            },
        );
        self.process = running;
        started
    }

    /// One real login over TCP as `monitor`.
    fn login_works(&self) -> bool {
        Command::new(self.bin.join("psql"))
            .arg(format!(
                "host=127.0.0.1 port={} user={MONITOR_USER} dbname={DATABASE} sslmode=disable connect_timeout=2",
                self.port
            ))
            .args(["-XAtqc", "SELECT 1"])
            .env("PGPASSWORD", MONITOR_PASSWORD)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts the watchdog (see the module documentation).
    fn watch(&mut self) {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("lookout-pg-watchdog")
            .arg(&self.data)
            .arg(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the watchdog shell");
        let stdin = child.stdin.take().expect("watchdog stdin");
        self.watchdog = Some((child, stdin));
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.process.stop_with("QUIT");
        if let Some((mut child, stdin)) = self.watchdog.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// Shuts the server down when this process's end of the pipe closes, then
/// removes the directory; waits at most 10 s for the server to exit.
const WATCHDOG: &str = r#"trap '' INT TERM HUP
read -r _ignored
if [ -f "$1/postmaster.pid" ]; then
  pid=$(head -n 1 "$1/postmaster.pid")
  kill -QUIT "$pid" 2>/dev/null
  i=0
  while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done
fi
rm -rf "$2"
"#;

const PG_HBA: &str = "\
# TYPE     DATABASE     USER       ADDRESS        METHOD
local      all          postgres                  trust
local      replication  postgres                  trust
local      all          all                       scram-sha-256
hostssl    all          tlsonly    127.0.0.1/32   scram-sha-256
host       all          tlsonly    127.0.0.1/32   reject
host       all          all        127.0.0.1/32   scram-sha-256
";

/// The newest `/usr/lib/postgresql/<version>/bin`, or `LOOKOUT_PG_BIN`.
fn pg_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LOOKOUT_PG_BIN") {
        return PathBuf::from(p);
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file())
                .then_some((version, bin))
        })
        .max_by_key(|(v, _)| *v);
    match newest {
        Some((_, bin)) => bin,
        None => panic!(
            "the postgres tests need PostgreSQL's server binaries, and no \
             /usr/lib/postgresql/<version>/bin/initdb exists: run tests/run.sh, which installs \
             them (apt-get install postgresql), or point LOOKOUT_PG_BIN at the bin directory"
        ),
    }
}

/// The `postgres` user's uid and gid when this process runs as root.
fn run_as() -> Option<(u32, u32)> {
    let euid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok()?;
    if euid != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let ids = passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 3 && f[0] == "postgres")
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    });
    match ids {
        Some(ids) => Some(ids),
        None => panic!(
            "the tests run as root and PostgreSQL refuses to, but there is no `postgres` user \
             to run it as: run tests/run.sh (installing the postgresql package creates it)"
        ),
    }
}

fn as_postgres(mut cmd: Command, run_as: Option<(u32, u32)>, cwd: &Path) -> Command {
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid);
    }
    cmd.current_dir(cwd)
        .env_remove("PGDATA")
        .env_remove("PGHOST")
        .env_remove("PGPORT");
    cmd
}

fn give(path: &Path, run_as: Option<(u32, u32)>) {
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

fn write_owned(path: &Path, bytes: &[u8], run_as: Option<(u32, u32)>, mode: u32) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    give(path, run_as);
}

/// Runs SQL (one statement a line) in single-user mode, before the server
/// is started.
fn single_user(bin: &Path, run_as: Option<(u32, u32)>, data: &Path, db: &str, sql: &str) {
    let mut child = as_postgres(Command::new(bin.join("postgres")), run_as, data)
        .arg("--single")
        .arg("-D")
        .arg(data)
        .args(["-c", "fsync=off", "-c", "exit_on_error=on", db])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start postgres --single");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(sql.as_bytes())
        .expect("write SQL to postgres --single");
    let out = child
        .wait_with_output()
        .expect("wait for postgres --single");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("ERROR"),
        "postgres --single failed on:\n{sql}\n{}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The server's certificate and key (in the data directory, where
/// PostgreSQL wants them owned by its user and private) and the CA files
/// the tests point `ca:` at.
fn write_certificates(dir: &Path, data: &Path, run_as: Option<(u32, u32)>) {
    let ca = TestCa::new();
    let cert = ca.issue(&["localhost", "127.0.0.1"], Validity::days_left(90));
    write_owned(
        &data.join("server.crt"),
        cert.chain_pem().as_bytes(),
        run_as,
        0o644,
    );
    write_owned(
        &data.join("server.key"),
        cert.key_pem().as_bytes(),
        run_as,
        0o600,
    );
    write_owned(&dir.join("ca.pem"), ca.pem.as_bytes(), run_as, 0o644);
    // A different subject than the test CA's, so it is an unknown issuer
    // (a second TestCa would have the same name and fail as a bad signature).
    let other = self_signed(&["lookout-other-ca.invalid"]);
    write_owned(
        &dir.join("other-ca.pem"),
        other.chain_pem().as_bytes(),
        run_as,
        0o644,
    );
}
