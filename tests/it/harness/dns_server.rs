//! A throwaway DNS server with a test zone, started from the installed
//! binary (unbound), and a DNS "server" that reads queries and never answers.
//!
//! The zone `test.` holds every record type the `dns` probe asks for; see
//! [`ZONE`]. `refused.test.` is refused, other names under `test.` do not
//! exist (NXDOMAIN) and `www.test` has no MX (NOERROR with no answers).

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use super::process::{self, log_to, on_a_free_port, Process};

/// Where the binary is looked for; `LOOKOUT_UNBOUND` overrides.
pub const UNBOUND: &str = "/usr/sbin/unbound";

/// The test zone, as unbound `local-data` lines (one record each).
pub const ZONE: &[&str] = &[
    "test. 300 IN SOA ns1.test. hostmaster.test. 2024010101 3600 900 604800 300",
    "test. 300 IN NS ns1.test.",
    "test. 300 IN NS ns2.test.",
    "ns1.test. 300 IN A 192.0.2.1",
    "ns2.test. 300 IN A 192.0.2.2",
    "www.test. 300 IN A 192.0.2.10",
    "www.test. 300 IN A 192.0.2.11",
    "www.test. 300 IN AAAA 2001:db8::10",
    "alias.test. 300 IN CNAME www.test.",
    "test. 300 IN MX 10 mail.test.",
    "test. 300 IN MX 20 backup.test.",
    "mail.test. 300 IN A 192.0.2.25",
    "test. 300 IN TXT \"v=spf1 -all\"",
    "multi.test. 300 IN TXT \"hello \" \"world\"",
    "_sip._tcp.test. 300 IN SRV 10 60 5060 sip.test.",
    "test. 300 IN CAA 0 issue \"letsencrypt.org\"",
];

/// `local-data-ptr` lines: address and name.
pub const PTRS: &[(&str, &str)] = &[("192.0.2.10", "www.test."), ("2001:db8::10", "www.test.")];

/// How many TXT records `big.test` has: together far more than a UDP
/// response may carry, so the answer comes back truncated over UDP.
pub const BIG_TXT_RECORDS: usize = 40;

/// A running unbound serving the test zone on 127.0.0.1, UDP and TCP.
/// Killed when dropped.
pub struct DnsServer {
    /// First, so that it is killed before its directory is removed.
    process: Process,
    port: u16,
    dir: TempDir,
}

impl DnsServer {
    /// Starts unbound on a free port and waits until it answers.
    pub fn start() -> DnsServer {
        let binary = unbound_binary();
        on_a_free_port("unbound", free_port, |port| {
            let dir = tempfile::tempdir().expect("temporary directory for unbound");
            let conf = dir.path().join("unbound.conf");
            std::fs::write(&conf, config(port, dir.path())).expect("write unbound.conf");
            let log_path = dir.path().join("unbound.log");
            let process = Process::spawn(log_to(
                Command::new(&binary).arg("-d").arg("-c").arg(&conf),
                &log_path,
            ));
            let mut server = DnsServer { process, port, dir };
            server.wait_ready(Duration::from_secs(10)).map(|()| server)
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, as written in a probe's `server:`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn config_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Polls with real queries until the server answers over UDP and
    /// accepts TCP. Returns the server's log when it exited instead.
    fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP client socket");
        socket.connect(addr).expect("connect UDP socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set read timeout");
        let query = raw_query(0x4c4f, "www.test");
        let mut buf = [0u8; 1500];
        let log_path = self.dir.path().join("unbound.log");
        process::wait_ready(
            &mut self.process,
            &format!("unbound on {addr}"),
            within,
            // Not listening yet, the kernel answers "port unreachable" at
            // once; otherwise the read timeout has already waited.
            Duration::from_millis(10),
            || std::fs::read_to_string(&log_path).unwrap_or_default(),
            || {
                let _ = socket.send(&query);
                match socket.recv(&mut buf) {
                    Ok(n) if n >= 12 && buf[..2] == query[..2] && buf[2] & 0x80 != 0 => {
                        TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                            .map(drop)
                            .map_err(|e| format!("answers over UDP, but TCP: {e}"))
                    }
                    Ok(n) => Err(format!("an unexpected answer of {n} bytes")),
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                        Err("nothing listening yet".to_string())
                    }
                    Err(e) => Err(e.to_string()),
                }
            },
        )
    }
}

fn unbound_binary() -> PathBuf {
    let path = std::env::var_os("LOOKOUT_UNBOUND")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(UNBOUND));
    if !path.is_file() {
        panic!(
            "the DNS tests need unbound, and {} does not exist: run tests/run.sh, which installs it \
             (apt-get install unbound), or point LOOKOUT_UNBOUND at the binary",
            path.display()
        );
    }
    path
}

fn config(port: u16, dir: &Path) -> String {
    let mut c = format!(
        r#"server:
  interface: 127.0.0.1@{port}
  port: {port}
  do-daemonize: no
  chroot: ""
  username: ""
  directory: "{dir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 1
  num-threads: 1
  so-reuseport: no
  do-ip6: no
  module-config: "iterator"
  access-control: 127.0.0.0/8 allow
  local-zone: "test." static
  local-zone: "refused.test." refuse
"#,
        dir = dir.display()
    );
    for rr in ZONE {
        c.push_str(&format!("  local-data: '{rr}'\n"));
    }
    for i in 0..BIG_TXT_RECORDS {
        c.push_str(&format!(
            "  local-data: 'big.test. 300 IN TXT \"record {i:02} {}\"'\n",
            "x".repeat(90)
        ));
    }
    for (ip, name) in PTRS {
        c.push_str(&format!("  local-data-ptr: \"{ip} {name}\"\n"));
    }
    c.push_str("remote-control:\n  control-enable: no\n");
    c
}

/// A free loopback port, free for both UDP and TCP when checked.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP port 0");
        let port = udp.local_addr().expect("local address").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("found no loopback port free for both UDP and TCP");
}

/// A minimal DNS query (recursion desired) for `name` A.
fn raw_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// A UDP socket on loopback that reads every query and never replies.
/// It stops when dropped.
pub struct SilentDnsServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl SilentDnsServer {
    pub async fn start() -> SilentDnsServer {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind the silent DNS server");
        let addr = socket.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while socket.recv_from(&mut buf).await.is_ok() {}
        });
        SilentDnsServer { addr, task }
    }
}

impl Drop for SilentDnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
