//! Throwaway SMTP servers: Debian's python3-aiosmtpd, run by
//! `/usr/bin/python3` (not a `python3` earlier on `PATH`, which may lack
//! Debian's packages) from a small script written into a temporary
//! directory. The server listens on a free loopback port, optionally offers
//! STARTTLS (and then requires it) with a certificate from [`TestCa`], and
//! optionally requires AUTH (only after STARTTLS) for one user.
//!
//! Every message it accepts is written as one JSON file (envelope, decoded
//! headers, each text part decoded, the raw message) into its `mail`
//! directory *before* it answers 250, so a test reads it as soon as the
//! send returns. [`SmtpServer::reply_next`] makes it answer the next DATA
//! with a given line (`550 ...`, `451 ...`) instead. [`SmtpServer::stop`]
//! and [`SmtpServer::start`] take it down and bring it back on the same
//! port. Killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::process::{free_port, log_to, on_a_free_port, wait_ready, Process};
use super::targets::{TestCa, Validity, NAMES};

/// The interpreter with Debian's packages.
pub const PYTHON: &str = "/usr/bin/python3";

const SCRIPT: &str = r#"
import json, os, ssl, sys, threading, time
from email import policy
from email.parser import BytesParser
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

cfg = json.load(open(sys.argv[1]))

class Handler:
    def __init__(self):
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        try:
            with open(cfg["control"]) as f:
                reply = f.read().strip()
            os.remove(cfg["control"])
            if reply:
                return reply
        except FileNotFoundError:
            pass
        raw = envelope.original_content or b""
        msg = BytesParser(policy=policy.default).parsebytes(raw)
        parts = []
        for part in msg.walk():
            if part.is_multipart():
                continue
            parts.append({"content_type": part.get_content_type(),
                          "text": part.get_content()})
        headers = {}
        for k, v in msg.items():
            headers.setdefault(k.lower(), str(v))
        self.n += 1
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "content_type": msg.get_content_type(),
            "headers": headers,
            "parts": parts,
            "raw": raw.decode("utf-8", "replace"),
            "tls": session.ssl is not None,
            "authenticated": bool(session.authenticated),
        }
        name = "%020d-%04d" % (time.time_ns(), self.n)
        tmp = os.path.join(cfg["mail"], "." + name)
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(cfg["mail"], name + ".json"))
        return "250 2.0.0 Ok: queued as lookout-%d" % self.n

kwargs = {}
if cfg.get("cert"):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cfg["cert"], cfg["key"])
    kwargs["tls_context"] = ctx
    kwargs["require_starttls"] = True
if cfg.get("user"):
    user, password = cfg["user"].encode(), cfg["password"].encode()
    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = getattr(auth_data, "login", None) == user and \
             getattr(auth_data, "password", None) == password
        return AuthResult(success=ok, handled=False)
    kwargs["authenticator"] = authenticator
    kwargs["auth_require_tls"] = True

controller = Controller(Handler(), hostname="127.0.0.1", port=cfg["port"], **kwargs)
controller.start()
print("aiosmtpd listening on", cfg["port"], flush=True)
threading.Event().wait()
"#;

/// How a server is to be configured; see [`SmtpServer::builder`].
#[derive(Default)]
pub struct Builder {
    starttls: Option<(String, String)>,
    auth: Option<(String, String)>,
}

impl Builder {
    /// Offer STARTTLS with a certificate for localhost and 127.0.0.1 issued
    /// by `ca`, and refuse mail before it.
    pub fn starttls(mut self, ca: &TestCa) -> Builder {
        let cert = ca.issue(NAMES, Validity::days_left(90));
        self.starttls = Some((cert.chain_pem(), cert.key_pem()));
        self
    }

    /// Require AUTH (PLAIN or LOGIN, after STARTTLS) as this user.
    pub fn auth(mut self, user: &str, password: &str) -> Builder {
        self.auth = Some((user.to_string(), password.to_string()));
        self
    }

    /// Starts the server on a free port and waits until it greets.
    pub fn start(self) -> SmtpServer {
        require_aiosmtpd();
        on_a_free_port("aiosmtpd", free_port, |port| {
            let dir = tempfile::tempdir().expect("temporary directory for aiosmtpd");
            let mail = dir.path().join("mail");
            std::fs::create_dir_all(&mail).expect("mail directory");
            let mut cfg = serde_json::json!({
                "port": port,
                "mail": mail,
                "control": dir.path().join("next-reply"),
            });
            if let Some((cert, key)) = &self.starttls {
                let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
                std::fs::write(&c, cert).expect("write certificate");
                std::fs::write(&k, key).expect("write key");
                cfg["cert"] = c.display().to_string().into();
                cfg["key"] = k.display().to_string().into();
            }
            if let Some((user, password)) = &self.auth {
                cfg["user"] = user.clone().into();
                cfg["password"] = password.clone().into();
            }
            std::fs::write(dir.path().join("server.py"), SCRIPT).expect("write server.py");
            std::fs::write(dir.path().join("config.json"), cfg.to_string())
                .expect("write config.json");
            let mut server = SmtpServer {
                process: Process::default(),
                port,
                dir,
            };
            server.spawn().map(|()| server)
        })
    }
}

/// A running (or stopped) aiosmtpd.
pub struct SmtpServer {
    process: Process,
    pub port: u16,
    dir: TempDir,
}

/// One accepted message, as the server decoded it.
#[derive(Debug, Clone)]
pub struct Delivered(pub Value);

impl Delivered {
    pub fn mail_from(&self) -> &str {
        self.0["mail_from"].as_str().unwrap_or_default()
    }

    pub fn rcpt_tos(&self) -> Vec<String> {
        self.0["rcpt_tos"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A header, decoded (lower-case name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.0["headers"][name.to_lowercase()]
            .as_str()
            .map(String::from)
    }

    /// The decoded text of the first part of this content type.
    pub fn part(&self, content_type: &str) -> Option<String> {
        self.0["parts"].as_array()?.iter().find_map(|p| {
            (p["content_type"] == content_type)
                .then(|| p["text"].as_str().map(String::from))
                .flatten()
        })
    }

    /// The message as sent, before decoding.
    pub fn raw(&self) -> &str {
        self.0["raw"].as_str().unwrap_or_default()
    }

    pub fn content_type(&self) -> &str {
        self.0["content_type"].as_str().unwrap_or_default()
    }

    pub fn tls(&self) -> bool {
        self.0["tls"].as_bool().unwrap_or(false)
    }

    pub fn authenticated(&self) -> bool {
        self.0["authenticated"].as_bool().unwrap_or(false)
    }
}

impl SmtpServer {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A plain relay: no TLS, no AUTH.
    pub fn plain() -> SmtpServer {
        Builder::default().start()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("aiosmtpd.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(PYTHON);
        cmd.arg(self.dir.path().join("server.py"))
            .arg(self.dir.path().join("config.json"))
            .env("PYTHONUNBUFFERED", "1");
        log_to(&mut cmd, &self.log_path());
        self.process = Process::spawn(&mut cmd);
        let port = self.port;
        let log_path = self.log_path();
        wait_ready(
            &mut self.process,
            "aiosmtpd",
            Duration::from_secs(15),
            Duration::from_millis(20),
            || std::fs::read_to_string(&log_path).unwrap_or_default(),
            || greets(port),
        )
    }

    /// Takes the server down (SIGKILL): connections are refused.
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Brings a stopped server back on the same port.
    pub fn start(&mut self) {
        if let Err(log) = self.spawn() {
            panic!("aiosmtpd did not come back on port {}:\n{log}", self.port);
        }
    }

    /// The next message's DATA is answered with `line` (e.g.
    /// `550 5.1.1 mailbox unavailable`) and not stored.
    pub fn reply_next(&self, line: &str) {
        std::fs::write(self.dir.path().join("next-reply"), line).expect("write next-reply");
    }

    /// Every message accepted so far, oldest first.
    pub fn messages(&self) -> Vec<Delivered> {
        let dir = self.dir.path().join("mail");
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("read the mail directory")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names.iter().map(|p| Delivered(read_json(p))).collect()
    }

    /// The server's log, for assertion messages.
    pub fn server_log(&self) -> String {
        self.log()
    }
}

fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Connects and reads the 220 greeting.
fn greets(port: u16) -> Result<(), String> {
    let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if line.starts_with("220") {
        Ok(())
    } else {
        Err(format!("greeting was {line:?}"))
    }
}

fn require_aiosmtpd() {
    let ok = Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        panic!(
            "{PYTHON} cannot import aiosmtpd: install Debian's python3-aiosmtpd \
             (tests/run.sh installs it when missing)"
        );
    }
}
