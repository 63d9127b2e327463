//! A throwaway MariaDB server, started from the installed binaries
//! (`mariadb-install-db` and `mariadbd`) with a fresh data directory on a
//! free loopback port.
//!
//! Creating the data directory and starting the server takes well under a
//! second, so every test gets its own server: tests that stop, restart or
//! reconfigure it cannot disturb the others, and the connection counts a
//! test reads are its own. The server is killed when the [`MysqlServer`]
//! is dropped (also when the test panics), and its directory removed.
//!
//! Each server has a database `app` with a table `items` of [`ITEMS`] rows
//! and two accounts besides password-less `root` (who logs in over the Unix
//! socket): [`MONITOR`] (SELECT and INSERT on `app`: INSERT so that it is
//! the read-only transaction, not a missing privilege, that refuses a
//! write; and SLAVE MONITOR for `SHOW REPLICA STATUS`) and [`SECURE`],
//! which is created `REQUIRE SSL`. A server started with
//! [`MysqlServer::start_tls`] serves TLS with the given certificate;
//! [`MysqlServer::start_primary`] and [`MysqlServer::start_replica_of`]
//! make a primary and a replica that follows it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::{FromRow, Queryable};
use mysql_async::{Conn, OptsBuilder};
use tempfile::TempDir;

use super::process::{self, free_port, on_a_free_port, Process};
use super::targets::{pem, ServerCert};

/// The monitoring account: user and password.
pub const MONITOR: (&str, &str) = ("monitor", "m0nitor-Pa55word");
/// An account that may only log in over TLS.
pub const SECURE: (&str, &str) = ("secure", "s3cure-Pa55word");
/// How many rows `app.items` has.
pub const ITEMS: usize = 3;

const SETUP: &[&str] = &[
    "CREATE DATABASE app",
    "CREATE TABLE app.items (id INT PRIMARY KEY, name VARCHAR(50) NOT NULL, \
     price DECIMAL(10,2), added DATE)",
    "INSERT INTO app.items VALUES (1, 'apple', 1.25, '2024-01-01'), \
     (2, 'pear', 0.80, '2024-02-01'), (3, 'plum', NULL, '2024-03-01')",
];

/// How long a server may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A running MariaDB; killed when dropped.
pub struct MysqlServer {
    /// First, so that it is killed before its directory is removed.
    process: Process,
    port: u16,
    dir: TempDir,
    tls: bool,
    /// The server id of a server that takes part in replication (it then
    /// writes a binary log); `None` for a stand-alone server.
    server_id: Option<u32>,
}

impl MysqlServer {
    /// A server without TLS.
    pub fn start() -> MysqlServer {
        MysqlServer::start_with(None, None, true)
    }

    /// A server that offers TLS with `cert` (whose chain ends with its CA).
    pub fn start_tls(cert: &ServerCert) -> MysqlServer {
        MysqlServer::start_with(Some(cert), None, true)
    }

    /// A server that writes a binary log, for replicas to follow.
    pub fn start_primary() -> MysqlServer {
        MysqlServer::start_with(None, Some(1), true)
    }

    /// A replica of `primary`, replicating (as root) from the start of its
    /// binary log, so it gets `app` and the accounts from the primary.
    /// Returns once it has caught up with the primary's set-up.
    pub fn start_replica_of(primary: &MysqlServer) -> MysqlServer {
        let replica = MysqlServer::start_with(None, Some(2), false);
        let socket = replica.socket();
        let port = primary.port;
        let caught_up = block_on(async move {
            let mut conn = Conn::new(root_opts(&socket))
                .await
                .expect("log in to the replica as root");
            conn.query_drop(format!(
                "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {port}, \
                 MASTER_USER = 'root', MASTER_PASSWORD = ''"
            ))
            .await
            .expect("CHANGE MASTER TO");
            conn.query_drop("START SLAVE").await.expect("START SLAVE");
            let deadline = Instant::now() + READY_WITHIN;
            let result = loop {
                let n: Option<u64> = conn
                    .query_first(format!(
                        "SELECT COUNT(*) FROM mysql.global_priv WHERE User = '{}'",
                        MONITOR.0
                    ))
                    .await
                    .expect("poll the replica");
                if n == Some(1) {
                    break Ok(());
                }
                if Instant::now() > deadline {
                    let status: Vec<mysql_async::Row> =
                        conn.query("SHOW SLAVE STATUS").await.unwrap_or_default();
                    break Err(format!("{status:?}"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            conn.disconnect().await.expect("disconnect root");
            result
        });
        if let Err(status) = caught_up {
            panic!("the replica did not catch up within {READY_WITHIN:?}: {status}");
        }
        replica
    }

    fn start_with(cert: Option<&ServerCert>, server_id: Option<u32>, setup: bool) -> MysqlServer {
        let (mariadbd, install_db) = binaries();
        let dir = tempfile::tempdir().expect("temporary directory for mariadb");
        if let Some(cert) = cert {
            write_tls_files(dir.path(), cert);
        }
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).expect("create the server's tmpdir");
        let install = Command::new(&install_db)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
                "--user=root",
                "--skip-log-bin",
            ])
            .args(SIZE_ARGS)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", install_db.display()));
        if !install.status.success() {
            panic!(
                "{} failed ({}):\n{}\n{}",
                install_db.display(),
                install.status,
                String::from_utf8_lossy(&install.stdout),
                String::from_utf8_lossy(&install.stderr)
            );
        }
        let mut server = MysqlServer {
            process: Process::default(),
            port: 0,
            dir,
            tls: cert.is_some(),
            server_id,
        };
        on_a_free_port("mariadbd", free_port, |port| {
            server.port = port;
            server.spawn(&mariadbd)
        });
        if setup {
            server.setup();
        }
        server
    }

    /// Starts mariadbd and waits until it accepts connections. Returns the
    /// server's log when it exited instead.
    fn spawn(&mut self, mariadbd: &Path) -> Result<(), String> {
        let d = self.dir.path();
        let mut cmd = Command::new(mariadbd);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--pid-file={}", d.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", self.log_path().display()))
            .arg(format!("--tmpdir={}", d.join("tmp").display()))
            .args([
                "--bind-address=127.0.0.1",
                // Tests may run as root, which mariadbd refuses without this.
                "--user=root",
                "--skip-name-resolve",
            ])
            .args(SIZE_ARGS);
        match self.server_id {
            Some(id) => {
                cmd.arg(format!("--server-id={id}"))
                    .arg(format!("--log-bin={}", d.join("binlog").display()));
            }
            None => {
                cmd.arg("--skip-log-bin");
            }
        }
        if self.tls {
            cmd.arg(format!(
                "--ssl-cert={}",
                d.join("server-cert.pem").display()
            ))
            .arg(format!("--ssl-key={}", d.join("server-key.pem").display()))
            .arg(format!("--ssl-ca={}", d.join("ca.pem").display()));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut running = Process::spawn(&mut cmd);
        // Polls with real logins (root over the socket) until the server
        // answers.
        let socket = self.socket();
        let ready = process::wait_ready(
            &mut running,
            &format!("mariadbd on port {}", self.port),
            READY_WITHIN,
            Duration::from_millis(20),
            || self.log(),
            || {
                let s = socket.clone();
                block_on(async move {
                    let login =
                        tokio::time::timeout(Duration::from_secs(2), Conn::new(root_opts(&s)));
                    match login.await {
                        Ok(Ok(conn)) => conn.disconnect().await.map_err(|e| e.to_string()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("no answer within 2s".to_string()),
                    }
                })
            },
        );
        self.process = running;
        ready
    }

    fn setup(&self) {
        let socket = self.socket();
        let tls = self.tls;
        block_on(async move {
            let mut conn = Conn::new(root_opts(&socket))
                .await
                .expect("log in as root for set-up");
            let mut statements: Vec<String> = SETUP.iter().map(|s| s.to_string()).collect();
            statements.push(format!(
                "CREATE USER '{}'@'%' IDENTIFIED BY '{}'",
                MONITOR.0, MONITOR.1
            ));
            statements.push(format!(
                "GRANT SELECT, INSERT ON app.* TO '{}'@'%'",
                MONITOR.0
            ));
            // For SHOW REPLICA STATUS.
            statements.push(format!("GRANT SLAVE MONITOR ON *.* TO '{}'@'%'", MONITOR.0));
            if tls {
                statements.push(format!(
                    "CREATE USER '{}'@'%' IDENTIFIED BY '{}' REQUIRE SSL",
                    SECURE.0, SECURE.1
                ));
                statements.push(format!("GRANT SELECT ON app.* TO '{}'@'%'", SECURE.0));
            }
            for s in statements {
                conn.query_drop(&s)
                    .await
                    .unwrap_or_else(|e| panic!("set-up statement `{s}` failed: {e}"));
            }
            conn.disconnect().await.expect("disconnect root");
        });
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Starts the server again on the same data directory and port, and
    /// waits until it accepts connections.
    pub fn start_again(&mut self) {
        assert!(!self.process.is_running(), "the server is still running");
        let (mariadbd, _) = binaries();
        if let Err(log) = self.spawn(&mariadbd) {
            panic!("mariadbd did not start again on port {}:\n{log}", self.port);
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mysql://USER:PASSWORD@127.0.0.1:PORT/DB`.
    pub fn url(&self, (user, password): (&str, &str), db: &str) -> String {
        format!("mysql://{user}:{password}@127.0.0.1:{}/{db}", self.port)
    }

    /// The monitoring account's URL for database `app`.
    pub fn monitor_url(&self) -> String {
        self.url(MONITOR, "app")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("mariadbd.sock")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mariadbd.err")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A root connection over the Unix socket, on the caller's runtime.
    pub async fn root(&self) -> Conn {
        Conn::new(root_opts(&self.socket()))
            .await
            .expect("log in as root over the socket")
    }

    /// Runs `sql` as root and returns its rows.
    pub async fn root_query<T: FromRow + Send + 'static>(&self, sql: &str) -> Vec<T> {
        let mut conn = self.root().await;
        let rows = conn
            .query(sql)
            .await
            .unwrap_or_else(|e| panic!("`{sql}` as root failed: {e}"));
        conn.disconnect().await.expect("disconnect root");
        rows
    }

    /// How many connections `user` has open, as the server sees them.
    pub async fn connections_of(&self, user: &str) -> usize {
        let n: Vec<u64> = self
            .root_query(&format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{user}'"
            ))
            .await;
        n.first().copied().unwrap_or_default() as usize
    }

    /// Polls until `user` has `n` connections; panics after `within`.
    pub async fn wait_connections(&self, user: &str, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let now = self.connections_of(user).await;
            if now == n {
                return;
            }
            if Instant::now() > deadline {
                panic!("{user} still has {now} connections after {within:?}, expected {n}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Keeps the data directory small and start-up fast; no Linux AIO, whose
/// system-wide contexts parallel servers could run out of.
const SIZE_ARGS: &[&str] = &[
    "--innodb-use-native-aio=0",
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=4M",
];

fn root_opts(socket: &Path) -> OptsBuilder {
    OptsBuilder::default()
        .socket(Some(socket.display().to_string()))
        .user(Some("root"))
        .prefer_socket(false)
}

/// Runs `f` to completion on a runtime of its own, on a thread of its own,
/// so it works from sync code and from inside a test's runtime alike.
fn block_on<F>(f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the mariadb harness")
            .block_on(f)
    })
    .join()
    .expect("the mariadb harness thread panicked")
}

fn write_tls_files(dir: &Path, cert: &ServerCert) {
    std::fs::write(dir.join("server-cert.pem"), cert.chain_pem()).expect("write server-cert.pem");
    std::fs::write(dir.join("server-key.pem"), cert.key_pem()).expect("write server-key.pem");
    let ca = cert.chain.last().expect("a chain with its CA");
    std::fs::write(dir.join("ca.pem"), pem("CERTIFICATE", ca.as_ref())).expect("write ca.pem");
}

/// `mariadbd` and `mariadb-install-db`, from `PATH` or the usual places.
fn binaries() -> (PathBuf, PathBuf) {
    let find = |names: &[&str]| -> Option<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        dirs.extend(
            ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from),
        );
        names
            .iter()
            .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
            .find(|p| p.is_file())
    };
    match (
        find(&["mariadbd"]),
        find(&["mariadb-install-db", "mysql_install_db"]),
    ) {
        (Some(d), Some(i)) => (d, i),
        _ => panic!(
            "the mysql tests need MariaDB's server binaries (mariadbd and mariadb-install-db), \
             which are not installed: run tests/run.sh, which installs them \
             (apt-get install mariadb-server)"
        ),
    }
}
