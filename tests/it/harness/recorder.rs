//! An in-process HTTP receiver for webhook tests: listens on 127.0.0.1:0,
//! records every request (method, path, headers, body) before answering,
//! and answers from a programmable queue ([`Answer`]), or `200 ok` when the
//! queue is empty. [`Answer::Hang`] reads the request and never answers
//! until the recorder is dropped. Dropping it stops the server and releases
//! every hanging request.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the recorder answers to one request.
#[derive(Debug, Clone)]
pub enum Answer {
    Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Never answer (until the recorder is dropped).
    Hang,
}

impl Answer {
    pub fn status(status: u16, body: &str) -> Answer {
        Answer::Reply {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    pub fn header(self, name: &str, value: &str) -> Answer {
        match self {
            Answer::Reply {
                status,
                mut headers,
                body,
            } => {
                headers.push((name.to_string(), value.to_string()));
                Answer::Reply {
                    status,
                    headers,
                    body,
                }
            }
            Answer::Hang => Answer::Hang,
        }
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

#[derive(Default)]
struct Shared {
    answers: Mutex<VecDeque<Answer>>,
    requests: Mutex<Vec<Recorded>>,
}

pub struct Recorder {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Recorder {
    /// Starts a recorder on the current Tokio runtime.
    pub async fn start() -> Recorder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the recorder");
        let addr = listener.local_addr().expect("recorder address");
        let shared = Arc::new(Shared::default());
        let (shutdown, _) = watch::channel(false);
        let app = axum::Router::new()
            .fallback(handle)
            .with_state((shared.clone(), shutdown.clone()));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Recorder {
            addr,
            shared,
            shutdown,
            task,
        }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Queues the answer to a future request (first in, first out).
    pub fn push(&self, answer: Answer) {
        lock(&self.shared.answers).push_back(answer);
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// Waits (up to 20 s) until at least `n` requests arrived and returns
    /// them all; panics naming `what` otherwise.
    pub async fn wait_for(&self, n: usize, what: &str) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what} within 20s; {} of {n} requests so far",
                got.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The only request received so far; panics unless there is exactly one.
    pub fn only_request(&self) -> Recorded {
        let r = self.requests();
        assert_eq!(r.len(), 1, "expected one request, got {r:?}");
        r[0].clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn handle(
    State((shared, shutdown)): State<(Arc<Shared>, watch::Sender<bool>)>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    lock(&shared.requests).push(Recorded {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers,
        body,
    });
    let answer = lock(&shared.answers)
        .pop_front()
        .unwrap_or_else(|| Answer::status(200, "ok"));
    match answer {
        Answer::Reply {
            status,
            headers,
            body,
        } => {
            let mut b = Response::builder().status(status);
            for (k, v) in headers {
                b = b.header(k, v);
            }
            b.body(Body::from(body)).expect("a valid response")
        }
        Answer::Hang => {
            let mut rx = shutdown.subscribe();
            let _ = rx.wait_for(|stop| *stop).await;
            Response::builder()
                .status(503)
                .body(Body::from("recorder stopped"))
                .expect("a valid response")
        }
    }
}
