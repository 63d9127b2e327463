//! A recording HTTP/1.1 server for probe tests (TLS when given a server
//! configuration): every request is kept ([`Seen`]) and answered by a
//! handler, one connection per request. Also what the tests that check
//! secrets stay out of results share.

use std::sync::{Arc, Mutex};

use lookout::result::ProbeResult;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as a test server saw it.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// (status, content type, body); status 0 never answers.
pub type Answer = (u16, &'static str, String);

/// A full answer: an [`Answer`] with extra response headers.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl From<Answer> for Reply {
    fn from((status, content_type, body): Answer) -> Reply {
        Reply {
            status,
            content_type,
            body,
            headers: Vec::new(),
        }
    }
}

impl Reply {
    /// The answer with one more response header.
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A test HTTP server (TLS when `tls` is given) that records every request.
pub struct Server {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    pub fn last(&self) -> Seen {
        self.seen().last().cloned().expect("a request")
    }
}

async fn read_request<S: AsyncRead + Unpin>(s: &mut S) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Seen {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    handler: Handler,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    let Some(req) = read_request(&mut s).await else {
        return;
    };
    seen.lock().unwrap().push(req.clone());
    let reply = handler(&req);
    if reply.status == 0 {
        // A target that never answers: hold the connection open.
        std::future::pending::<()>().await;
    }
    let Reply {
        status,
        content_type,
        body,
        headers,
    } = reply;
    let extra: String = headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}\r\n"))
        .collect();
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(body.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// Serves on a free loopback port until the [`Server`] is dropped.
pub async fn serve<R: Into<Reply>>(
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: impl Fn(&Seen) -> R + Send + Sync + 'static,
) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler: Handler = Arc::new(move |s: &Seen| handler(s).into());
    let shared = seen.clone();
    let task = tokio::spawn(async move {
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (handler, seen, acceptor) = (handler.clone(), shared.clone(), acceptor.clone());
            tokio::spawn(async move {
                match acceptor {
                    Some(a) => {
                        if let Ok(s) = a.accept(tcp).await {
                            answer(s, handler, seen).await;
                        }
                    }
                    None => answer(tcp, handler, seen).await,
                }
            });
        }
    });
    Server { port, seen, task }
}

pub fn ok() -> Answer {
    (200, "text/plain", "ok".into())
}

pub fn json(status: u16, body: serde_json::Value) -> Answer {
    (status, "application/json", body.to_string())
}

/// The result as it is stored and served.
pub fn serialized(r: &ProbeResult) -> String {
    serde_json::to_string(r).expect("serialize")
}

pub fn assert_no_leak(results: &[&ProbeResult], secrets: &[&str]) {
    for r in results {
        let text = serialized(r);
        for s in secrets {
            assert!(!text.contains(s), "`{s}` leaked into {text}");
        }
    }
}

/// An HTTP target that answers `200 ok` after `delay` milliseconds.
pub async fn delayed_target(delay: std::sync::Arc<std::sync::atomic::AtomicU64>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let delay = delay.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                // The target's own behaviour: a slow answer.
                let ms = delay.load(std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    port
}
