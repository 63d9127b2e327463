//! Integration tests: what `deploy/` ships. `lookout healthcheck` (the
//! container health check) against tiny servers answering 200, 503, nothing
//! at all, and a closed port; and the deployment files read as data: every
//! Kubernetes manifest and the compose file parse with Lookout's own YAML
//! reader and agree with each other (probes on the port the Service
//! targets, volumes, the Secret that feeds `${NAME}`), every Lookout
//! configuration under `deploy/` loads through the real loader, the
//! kustomization lists every manifest, and the systemd unit and the
//! Dockerfile start the binary the way the README says.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lookout::config::read::Cx;
use lookout::config::yaml::{parse, Node, Value};
use lookout::config::{load_with, Config};

// ---- lookout healthcheck ---------------------------------------------------

fn healthcheck(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lookout"));
    c.env_remove("LOOKOUT_CONFIG")
        .env_remove("LOOKOUT_HEALTHCHECK_URL")
        .env("NO_COLOR", "1")
        .arg("healthcheck")
        .args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run lookout healthcheck")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A server on its own thread that answers every connection with `answer`
/// after reading the request head, and sends each request head it read.
fn serve(answer: &'static [u8]) -> (u16, Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = tx.send(text(&buf));
            let _ = s.write_all(answer);
        }
    });
    (port, rx)
}

/// A port nothing listens on (free when checked).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The one line a failed health check prints on stderr.
fn one_line(out: &Output) -> String {
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr: {err:?}");
    lines[0].to_string()
}

#[test]
fn healthcheck_exits_0_on_a_200_and_sends_a_plain_get() {
    let (port, requests) =
        serve(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n");
    let url = format!("http://127.0.0.1:{port}/healthz");
    let out = healthcheck(&["--url", &url], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    assert_eq!(text(&out.stdout).trim(), format!("{url}: 200 OK"));
    let head = requests
        .recv_timeout(Duration::from_secs(5))
        .expect("request");
    let mut lines = head.split("\r\n");
    assert_eq!(lines.next(), Some("GET /healthz HTTP/1.1"), "{head}");
    assert!(
        head.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
        "{head}"
    );
    assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
}

#[test]
fn healthcheck_reads_the_url_from_the_environment() {
    let (port, requests) = serve(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    let url = format!("http://127.0.0.1:{port}/readyz?probe=1");
    let out = healthcheck(&[], &[("LOOKOUT_HEALTHCHECK_URL", &url)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let head = requests
        .recv_timeout(Duration::from_secs(5))
        .expect("request");
    assert!(
        head.starts_with("GET /readyz?probe=1 HTTP/1.1\r\n"),
        "{head}"
    );
    // --url wins over the environment.
    let closed = format!("http://127.0.0.1:{}/healthz", closed_port());
    let out = healthcheck(&["--url", &closed], &[("LOOKOUT_HEALTHCHECK_URL", &url)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line(&out).contains(&closed), "{}", one_line(&out));
}

#[test]
fn healthcheck_exits_1_on_a_503_naming_the_url_and_status() {
    let (port, _requests) = serve(
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot ready",
    );
    let url = format!("http://127.0.0.1:{port}/readyz");
    let out = healthcheck(&["--url", &url], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        one_line(&out),
        format!("lookout healthcheck: {url}: answered 503 Service Unavailable, expected 200")
    );
}

#[test]
fn healthcheck_exits_1_on_a_closed_port() {
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let out = healthcheck(&["--url", &url], &[]);
    assert_eq!(out.status.code(), Some(1));
    let line = one_line(&out);
    assert!(
        line.starts_with(&format!(
            "lookout healthcheck: {url}: connection refused by 127.0.0.1:{port}"
        )),
        "{line}"
    );
}

#[test]
fn healthcheck_gives_up_on_a_silent_server_after_2s() {
    // Accepts (the kernel's backlog does) and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let started = Instant::now();
    let out = healthcheck(&["--url", &url], &[]);
    let took = started.elapsed();
    drop(listener);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        one_line(&out),
        format!("lookout healthcheck: {url}: no answer within 2s")
    );
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "{took:?}"
    );
}

#[test]
fn healthcheck_refuses_urls_it_cannot_use_with_status_1() {
    for (url, want) in [
        ("https://127.0.0.1:9464/healthz", "only http:// URLs"),
        ("127.0.0.1:9464/healthz", "not a URL"),
    ] {
        let out = healthcheck(&["--url", url], &[]);
        // 1, not 2: Docker's HEALTHCHECK reserves every status but 0 and 1.
        assert_eq!(out.status.code(), Some(1), "{url}");
        let line = one_line(&out);
        assert!(
            line.starts_with(&format!("lookout healthcheck: {url}: ")) && line.contains(want),
            "{line}"
        );
    }
    let (port, _requests) = serve(b"SSH-2.0-OpenSSH_9.2\r\n");
    let out = healthcheck(&["--url", &format!("http://127.0.0.1:{port}/")], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        one_line(&out).contains("not an HTTP response: \"SSH-2.0"),
        "{}",
        one_line(&out)
    );
}

// ---- the deployment files ---------------------------------------------------

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let p = repo().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// One YAML file, as one document, with Lookout's own reader (which refuses
/// a second document in the same file).
fn yaml(rel: &str) -> Node {
    parse(rel, &read(rel)).unwrap_or_else(|e| panic!("{}: {}", e.pos, e.message))
}

/// The node at a dotted path of mapping keys and list indexes
/// (`spec.template.spec.containers.0`), or a panic naming the file and path.
fn at<'a>(node: &'a Node, path: &str) -> &'a Node {
    let mut n = node;
    for part in path.split('.') {
        let next = match (&n.value, part.parse::<usize>()) {
            (Value::Seq(items), Ok(i)) => items.get(i),
            _ => n.get(part),
        };
        n = next.unwrap_or_else(|| panic!("{}: no `{part}` in `{path}`", n.pos));
    }
    n
}

fn s(node: &Node, path: &str) -> String {
    let n = at(node, path);
    n.scalar_text()
        .unwrap_or_else(|| panic!("{}: `{path}` is {}, not a scalar", n.pos, n.type_name()))
}

fn items<'a>(node: &'a Node, path: &str) -> &'a [Node] {
    let n = at(node, path);
    match &n.value {
        Value::Seq(items) => items,
        _ => panic!("{}: `{path}` is {}, not a list", n.pos, n.type_name()),
    }
}

fn entries<'a>(node: &'a Node, path: &str) -> Vec<(&'a str, &'a Node)> {
    let n = at(node, path);
    match &n.value {
        Value::Map(e) => e.iter().map(|(k, v)| (k.name.as_str(), v)).collect(),
        _ => panic!("{}: `{path}` is {}, not a mapping", n.pos, n.type_name()),
    }
}

/// The `*.yaml` files of a directory, by file name.
fn yaml_files(dir: &str) -> BTreeSet<String> {
    std::fs::read_dir(repo().join(dir))
        .expect("read_dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect()
}

/// Loads a Lookout configuration with the real loader, resolving `${NAME}`
/// only from `env` (never the test process's environment), so a reference
/// the deployment does not provide is a load error. Returns the names it
/// asked for; any warning fails the test.
fn load_config(path: &Path, env: &BTreeMap<String, String>) -> (Config, Vec<String>) {
    let (cfg, asked, warnings) = load_config_warned(path, env);
    assert!(
        warnings.is_empty(),
        "{}: warnings:\n{}",
        path.display(),
        warnings.join("\n")
    );
    (cfg, asked)
}

/// Like [`load_config`], also returning the warnings (as printed).
fn load_config_warned(
    path: &Path,
    env: &BTreeMap<String, String>,
) -> (Config, Vec<String>, Vec<String>) {
    let env = env.clone();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let asked2 = asked.clone();
    let mut cx = Cx::new(Box::new(move |name| {
        asked2.lock().expect("lock").push(name.to_string());
        env.get(name).cloned()
    }));
    cx.register_secrets = false;
    match load_with(path, cx) {
        Ok((cfg, warnings)) => {
            let warnings = warnings.0.iter().map(ToString::to_string).collect();
            let mut asked = asked.lock().expect("lock").clone();
            // Every configuration may be given its location from the
            // environment; no deployment has to set it.
            asked.retain(|n| n != lookout::config::compile::LOCATION_ENV);
            (cfg, asked, warnings)
        }
        Err(diags) => panic!("{} does not load:\n{diags}", path.display()),
    }
}

/// The container port a Deployment probe or a Service names (by name or
/// number), as a number.
fn resolve_port(port: &Node, ports: &BTreeMap<String, u16>) -> u16 {
    match &port.value {
        Value::Int(n) => u16::try_from(*n).expect("port"),
        Value::Str { value, .. } => *ports
            .get(value)
            .unwrap_or_else(|| panic!("{}: no container port named `{value}`", port.pos)),
        _ => panic!("{}: a port is {}", port.pos, port.type_name()),
    }
}

#[test]
fn kubernetes_manifests_agree_with_each_other_and_the_configuration_loads() {
    let dir = "deploy/kubernetes";
    let files = yaml_files(dir);
    let mut by_kind: BTreeMap<String, Node> = BTreeMap::new();
    for f in &files {
        let doc = yaml(&format!("{dir}/{f}"));
        let kind = s(&doc, "kind");
        assert!(!s(&doc, "apiVersion").is_empty(), "{f}");
        if kind != "Kustomization" {
            assert!(!s(&doc, "metadata.name").is_empty(), "{f}");
            assert!(
                at(&doc, "metadata").get("namespace").is_none(),
                "{f}: manifests are namespace-less"
            );
        }
        assert!(by_kind.insert(kind.clone(), doc).is_none(), "two {kind}s");
    }
    let kinds: Vec<&str> = by_kind.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "Deployment",
            "Kustomization",
            "PersistentVolumeClaim",
            "Secret",
            "Service"
        ]
    );

    // The kustomization lists every manifest in the directory.
    let kust = &by_kind["Kustomization"];
    let listed: BTreeSet<String> = items(kust, "resources")
        .iter()
        .map(|n| n.scalar_text().expect("resource"))
        .collect();
    let manifests: BTreeSet<String> = files
        .iter()
        .filter(|f| *f != "kustomization.yaml")
        .cloned()
        .collect();
    assert_eq!(listed, manifests);

    // One pod at a time: SQLite has a single writer.
    let dep = &by_kind["Deployment"];
    assert_eq!(s(dep, "spec.replicas"), "1");
    assert_eq!(s(dep, "spec.strategy.type"), "Recreate");
    let pod = at(dep, "spec.template.spec");
    assert_eq!(s(pod, "securityContext.runAsNonRoot"), "true");
    let containers = items(pod, "containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(s(c, "securityContext.readOnlyRootFilesystem"), "true");
    assert_eq!(s(c, "securityContext.allowPrivilegeEscalation"), "false");
    let drop: Vec<String> = items(c, "securityContext.capabilities.drop")
        .iter()
        .filter_map(Node::scalar_text)
        .collect();
    assert_eq!(drop, ["ALL"]);
    assert!(!s(c, "resources.requests.memory").is_empty());
    assert!(!s(c, "resources.limits.memory").is_empty());
    let args: Vec<String> = items(c, "args")
        .iter()
        .filter_map(Node::scalar_text)
        .collect();
    assert_eq!(args, ["run", "-c", "/etc/lookout/lookout.yaml"]);

    // The probes and the Service reach the same container port.
    let mut ports = BTreeMap::new();
    for p in items(c, "ports") {
        let n = u16::try_from(s(p, "containerPort").parse::<i64>().expect("port")).expect("port");
        ports.insert(s(p, "name"), n);
    }
    assert_eq!(s(c, "livenessProbe.httpGet.path"), "/healthz");
    assert_eq!(s(c, "readinessProbe.httpGet.path"), "/readyz");
    let live = resolve_port(at(c, "livenessProbe.httpGet.port"), &ports);
    let ready = resolve_port(at(c, "readinessProbe.httpGet.port"), &ports);
    let svc = &by_kind["Service"];
    let svc_ports = items(svc, "spec.ports");
    assert_eq!(svc_ports.len(), 1);
    assert_eq!(s(&svc_ports[0], "port"), "9464");
    let target = resolve_port(at(&svc_ports[0], "targetPort"), &ports);
    assert_eq!((live, ready), (target, target));
    // The Service selects the pod.
    let labels = at(dep, "spec.template.metadata.labels");
    for (k, v) in entries(svc, "spec.selector") {
        let got = labels.get(k).and_then(Node::scalar_text);
        assert_eq!(got, v.scalar_text(), "pod label {k}");
    }

    // Volumes: the ConfigMap at /etc/lookout, the claim at /var/lib/lookout,
    // and env from the Secret, each naming the manifest that defines it.
    let mounts: BTreeMap<String, String> = items(c, "volumeMounts")
        .iter()
        .map(|m| (s(m, "name"), s(m, "mountPath")))
        .collect();
    let mut config_mount = None;
    let mut data_mount = None;
    for v in items(pod, "volumes") {
        let path = mounts.get(&s(v, "name")).cloned();
        if let Some(cm) = v.get("configMap") {
            assert_eq!(s(cm, "name"), s(&by_kind["ConfigMap"], "metadata.name"));
            config_mount = path;
        } else if let Some(pvc) = v.get("persistentVolumeClaim") {
            assert_eq!(
                s(pvc, "claimName"),
                s(&by_kind["PersistentVolumeClaim"], "metadata.name")
            );
            data_mount = path;
        }
    }
    assert_eq!(config_mount.as_deref(), Some("/etc/lookout"));
    assert_eq!(data_mount.as_deref(), Some("/var/lib/lookout"));
    let env_from = items(c, "envFrom");
    let secret = &by_kind["Secret"];
    assert!(
        env_from.iter().any(|e| e
            .get("secretRef")
            .and_then(|r| r.get("name"))
            .and_then(Node::scalar_text)
            == Some(s(secret, "metadata.name"))),
        "envFrom does not name the Secret"
    );

    // The ConfigMap's lookout.yaml loads, with ${NAME} taken only from the
    // Secret's keys, listens on the container port on every interface, and
    // keeps its database on the claim.
    let secret_env: BTreeMap<String, String> = entries(secret, "stringData")
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.scalar_text().expect("value")))
        .collect();
    for v in secret_env.values() {
        assert!(
            v.contains("REPLACE-ME"),
            "secret.yaml holds a real-looking value: {v}"
        );
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("lookout.yaml");
    let data = at(&by_kind["ConfigMap"], "data");
    let file = data.get("lookout.yaml").and_then(Node::scalar_text);
    std::fs::write(&path, file.expect("data: lookout.yaml")).expect("write");
    let (cfg, asked) = load_config(&path, &secret_env);
    assert_eq!(cfg.server.listen.to_string(), format!("0.0.0.0:{target}"));
    assert!(
        cfg.server.token.is_some(),
        "the API is reachable in the cluster"
    );
    assert_eq!(cfg.storage.sqlite, Path::new("/var/lib/lookout/lookout.db"));
    let asked: BTreeSet<String> = asked.into_iter().collect();
    let provided: BTreeSet<String> = secret_env.keys().cloned().collect();
    assert_eq!(
        asked, provided,
        "the Secret's keys are the configuration's references"
    );
    assert!(cfg.probes.len() >= 3);
}

#[test]
fn compose_file_builds_lookout_and_its_configuration_loads() {
    let compose = yaml("deploy/docker-compose.yml");
    let lookout = at(&compose, "services.lookout");
    assert_eq!(s(lookout, "build.context"), "..");
    assert_eq!(s(lookout, "build.dockerfile"), "deploy/Dockerfile");
    assert!(repo().join("deploy/Dockerfile").is_file());
    let test: Vec<String> = items(lookout, "healthcheck.test")
        .iter()
        .filter_map(Node::scalar_text)
        .collect();
    assert_eq!(test, ["CMD", "/usr/local/bin/lookout", "healthcheck"]);
    for (svc, image) in [
        ("app", "nginx:"),
        ("postgres", "postgres:16"),
        ("redis", "redis:7"),
    ] {
        assert!(
            s(&compose, &format!("services.{svc}.image")).starts_with(image),
            "{svc}"
        );
    }

    // The probes file and a named volume for the database.
    let volumes: Vec<String> = items(lookout, "volumes")
        .iter()
        .filter_map(Node::scalar_text)
        .collect();
    assert!(
        volumes.contains(&"./compose/lookout.yaml:/etc/lookout/lookout.yaml:ro".to_string()),
        "{volumes:?}"
    );
    let data = volumes
        .iter()
        .find_map(|v| v.strip_suffix(":/var/lib/lookout"))
        .expect("a volume at /var/lib/lookout");
    assert!(
        at(&compose, "volumes").get(data).is_some(),
        "`{data}` is not a named volume"
    );

    // Every variable of env.example reaches Lookout, from the environment
    // (compose interpolation), never written into the compose file.
    let example: BTreeMap<String, String> = read("deploy/compose/env.example")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("NAME=value");
            (k.to_string(), v.to_string())
        })
        .collect();
    assert!(example.contains_key("POSTGRES_PASSWORD"));
    for v in example.values() {
        assert!(
            v.starts_with("change-me"),
            "env.example holds a real-looking value: {v}"
        );
    }
    let env: BTreeMap<String, String> = entries(lookout, "environment")
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.scalar_text().expect("value")))
        .collect();
    for name in example.keys() {
        let v = env
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not passed to lookout"));
        assert!(v.starts_with(&format!("${{{name}")), "{name}: {v}");
    }

    // deploy/compose/lookout.yaml loads with exactly those variables.
    let (cfg, asked) = load_config(&repo().join("deploy/compose/lookout.yaml"), &example);
    assert_eq!(cfg.server.listen.to_string(), "0.0.0.0:9464");
    assert!(
        cfg.server.token.is_some(),
        "the API is reachable on the compose network"
    );
    assert_eq!(cfg.storage.sqlite, Path::new("/var/lib/lookout/lookout.db"));
    for name in &asked {
        assert!(example.contains_key(name), "{name} is not in env.example");
    }
    let kinds: BTreeSet<&str> = cfg.probes.iter().map(|p| p.kind.name()).collect();
    for k in ["http", "tcp", "postgres", "redis"] {
        assert!(kinds.contains(k), "no {k} probe: {kinds:?}");
    }
    let published: Vec<String> = items(lookout, "ports")
        .iter()
        .filter_map(Node::scalar_text)
        .collect();
    assert_eq!(published, ["127.0.0.1:9464:9464"]);
}

#[test]
fn container_image_runs_the_container_configuration() {
    // The image's default needs no variable, so a bare `docker run` starts;
    // the price is the loader's warning that the API is open on every
    // interface (the README says to set server.token before exposing it).
    let (cfg, asked, warnings) = load_config_warned(
        &repo().join("deploy/lookout.container.yaml"),
        &BTreeMap::new(),
    );
    assert!(asked.is_empty(), "{asked:?}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("warning: server.listen: 0.0.0.0:9464 is reachable"),
        "{warnings:?}"
    );
    assert_eq!(cfg.server.listen.to_string(), "0.0.0.0:9464");
    assert_eq!(cfg.storage.sqlite, Path::new("/var/lib/lookout/lookout.db"));

    let dockerfile = read("deploy/Dockerfile");
    let lines: Vec<&str> = dockerfile.lines().map(str::trim).collect();
    let has = |l: &str| lines.contains(&l);
    assert!(has("FROM gcr.io/distroless/static-debian12:nonroot"));
    assert!(has(r#"ENTRYPOINT ["/usr/local/bin/lookout"]"#));
    assert!(has(r#"CMD ["run", "-c", "/etc/lookout/lookout.yaml"]"#));
    assert!(has("EXPOSE 9464"));
    assert!(has("VOLUME /var/lib/lookout"));
    assert!(has("USER 65532:65532"));
    assert!(has(r#"CMD ["/usr/local/bin/lookout", "healthcheck"]"#));
    assert!(dockerfile.contains("deploy/lookout.container.yaml"));
    assert!(dockerfile.contains("--target x86_64-unknown-linux-musl"));
    assert!(dockerfile.contains("/etc/lookout/lookout.yaml\n"));

    let ignore = read(".dockerignore");
    let ignored: Vec<&str> = ignore.lines().map(str::trim).collect();
    assert!(
        ignored.contains(&"target/") && ignored.contains(&".git/"),
        "{ignore}"
    );
}

#[test]
fn systemd_unit_runs_and_reloads_the_installed_binary() {
    let unit = read("deploy/lookout.service");
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not KEY=value: {line}"));
        keys.entry(format!("{section}.{k}"))
            .or_default()
            .push(v.to_string());
    }
    let one = |k: &str| -> String {
        match keys.get(k).map(Vec::as_slice) {
            Some([v]) => v.clone(),
            other => panic!("{k}: {other:?}"),
        }
    };
    assert_eq!(
        one("Service.ExecStart"),
        "/usr/local/bin/lookout run -c /etc/lookout/lookout.yaml"
    );
    assert_eq!(one("Service.ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("Service.KillSignal"), "SIGTERM");
    assert_eq!(one("Service.Restart"), "on-failure");
    assert_eq!(one("Service.DynamicUser"), "yes");
    assert_eq!(one("Service.StateDirectory"), "lookout");
    assert_eq!(one("Service.EnvironmentFile"), "-/etc/lookout/env");
    assert_eq!(one("Service.NoNewPrivileges"), "yes");
    assert_eq!(one("Service.ProtectSystem"), "strict");
    assert!(matches!(one("Service.Type").as_str(), "exec" | "simple"));
    assert_eq!(one("Install.WantedBy"), "multi-user.target");
}

#[test]
fn compose_with_two_locations_shares_one_postgres_and_its_configuration_loads() {
    let compose = yaml("deploy/compose-locations.yml");
    // What both instances share comes from one anchored block.
    let shared = at(&compose, "x-lookout");
    assert_eq!(s(shared, "build.dockerfile"), "deploy/Dockerfile");
    let volumes: Vec<String> = items(shared, "volumes")
        .iter()
        .filter_map(Node::scalar_text)
        .collect();
    assert_eq!(
        volumes,
        ["./compose/locations.yaml:/etc/lookout/lookout.yaml:ro"],
        "no local database volume: history lives in PostgreSQL"
    );
    let mut locations = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for svc in ["lookout-eu", "lookout-us"] {
        let service = at(&compose, &format!("services.{svc}"));
        let env: BTreeMap<String, String> = entries(service, "environment")
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.scalar_text().expect("value")))
            .collect();
        locations.insert(env["LOOKOUT_LOCATION"].clone());
        assert!(env["POSTGRES_PASSWORD"].starts_with("${POSTGRES_PASSWORD"));
        for p in items(service, "ports").iter().filter_map(Node::scalar_text) {
            ports.insert(p);
        }
    }
    assert_eq!(locations.len(), 2, "two distinct locations: {locations:?}");
    assert_eq!(
        ports.len(),
        2,
        "each status page on its own port: {ports:?}"
    );
    assert!(s(&compose, "services.postgres.image").starts_with("postgres:"));

    // The shared configuration loads, on PostgreSQL, with a multi-location
    // alert rule, for either location.
    let env: BTreeMap<String, String> = [
        ("LOOKOUT_TOKEN", "change-me-token"),
        ("POSTGRES_PASSWORD", "change-me-postgres"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (cfg, _) = load_config(&repo().join("deploy/compose/locations.yaml"), &env);
    let pg = cfg.storage.postgres.as_ref().expect("storage.postgres");
    assert!(pg.url.contains("@postgres:5432/lookout"), "{}", pg.url);
    let home = cfg.probe("app-home").expect("app-home");
    assert_eq!(home.alert.locations, 2);
    let eu_only = cfg.probe("app-from-eu").expect("app-from-eu");
    assert!(eu_only.runs_in(Some("eu-west")) && !eu_only.runs_in(Some("us-east")));
}
