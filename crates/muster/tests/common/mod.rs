//! Shared by the integration tests: starts the built `muster` binary on a free loopback port
//! with a fresh data dir, and runs the real `kubectl` (and `curl` for raw HTTP) against it.

#![allow(dead_code)] // each test binary uses a different part of this module

/// Loopback etcd clusters, shared with the store's tests.
#[path = "../../../muster-store/tests/common/etcd.rs"]
pub mod etcd;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const KUBECTL: &str = "/usr/bin/kubectl";

/// `None` (after printing why) when the tools a test needs are missing.
pub fn tools_present(need_curl: bool) -> bool {
    if !Path::new(KUBECTL).exists() {
        eprintln!("skipping: {KUBECTL} is not installed");
        return false;
    }
    if need_curl && Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipping: curl is not installed");
        return false;
    }
    true
}

/// The result of one command.
#[derive(Debug)]
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            code: out.status.code().unwrap_or(-1),
        }
    }

    /// Panics with both streams unless the command succeeded.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "command failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the command failed.
    #[track_caller]
    pub fn failed(self) -> Run {
        assert_ne!(
            self.code, 0,
            "command unexpectedly succeeded\nstdout:\n{}",
            self.stdout
        );
        self
    }
}

/// A running `muster apiserver` on its own data dir.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub cache: tempfile::TempDir,
    child: Option<Child>,
    pub log: PathBuf,
    /// `apiserver`, or `up` for everything in one process.
    command: &'static str,
    /// Flags after `muster COMMAND --data-dir D --api-listen 127.0.0.1:0` (the store).
    args: Vec<String>,
    /// Other API servers of the same cluster that kubectl commands also go to, in turn.
    peers: Vec<Server>,
    turn: AtomicUsize,
}

/// `muster apiserver` flags for an etcd store: the cluster's endpoints and a key prefix that
/// keeps this test's objects apart from those of other tests on the same etcd.
pub fn etcd_args(endpoints: &[String], prefix: &str) -> Vec<String> {
    vec![
        "--store".into(),
        "etcd".into(),
        "--etcd-endpoints".into(),
        endpoints.join(","),
        "--etcd-prefix".into(),
        prefix.into(),
        // Short, so that outage tests see answers quickly.
        "--etcd-request-timeout".into(),
        "2s".into(),
    ]
}

impl Server {
    /// Starts a server on a fresh data dir and waits until `/readyz` is ok.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Like [`Server::start`], with more `muster apiserver` flags (for example a store).
    pub fn start_with(args: &[String]) -> Server {
        let mut s = Server::new("apiserver", args);
        s.launch();
        s
    }

    /// `muster up` (API server, controllers, DNS; with `--no-agent` no pods run) with `args`.
    pub fn start_up(args: &[String]) -> Server {
        let mut s = Server::new("up", args);
        s.launch();
        s
    }

    /// Starts another `muster apiserver` of `first`'s cluster with `args` (the same store),
    /// the same CA and token, its own data dir and port. A kubeconfig of either works for both.
    pub fn start_peer(first: &Server, args: &[String]) -> Server {
        let mut s = Server::new("apiserver", args);
        let pki = s.dir.path().join("pki");
        std::fs::create_dir_all(&pki).expect("pki dir");
        for file in ["ca.crt", "ca.key", "token"] {
            std::fs::copy(first.dir.path().join("pki").join(file), pki.join(file))
                .expect("copying the cluster's CA and token");
        }
        s.launch();
        s
    }

    /// Two API servers on the etcd at `endpoints` under `prefix`; kubectl commands through
    /// the returned server alternate between them, so every transcript step that reads what
    /// the previous one wrote crosses from one API server to the other.
    pub fn start_pair_on_etcd(endpoints: &[String], prefix: &str) -> Server {
        let args = etcd_args(endpoints, prefix);
        let mut first = Server::start_with(&args);
        let second = Server::start_peer(&first, &args);
        first.peers.push(second);
        first
    }

    fn new(command: &'static str, args: &[String]) -> Server {
        Server {
            command,
            dir: tempfile::tempdir().expect("tempdir"),
            cache: tempfile::tempdir().expect("tempdir"),
            child: None,
            log: PathBuf::new(),
            args: args.to_vec(),
            peers: Vec::new(),
            turn: AtomicUsize::new(0),
        }
    }

    pub fn peers(&self) -> &[Server] {
        &self.peers
    }

    pub fn peers_mut(&mut self) -> &mut Vec<Server> {
        &mut self.peers
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Starts the binary (again) on the same data dir.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "already running");
        let _ = std::fs::remove_file(self.kubeconfig());
        // A fresh discovery cache: kubectl caches per host:port, and the port changes.
        self.cache = tempfile::tempdir().expect("tempdir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("muster.log"))
            .expect("log file");
        self.log = self.dir.path().join("muster.log");
        let child = Command::new(env!("CARGO_BIN_EXE_muster"))
            .args([self.command, "--data-dir"])
            .arg(self.dir.path())
            .args(["--api-listen", "127.0.0.1:0"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting muster");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.kubeconfig().exists() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("muster exited with {status}:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "no kubeconfig after 30 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        loop {
            let r = self.own_kubectl(&["get", "--raw", "/readyz"]);
            if r.code == 0 && r.stdout.trim() == "ok" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not ready after 30 s: {r:?}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("muster did not stop within 10 s after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kubectl against this server, or with peers, against the next API server in turn.
    fn kubectl_command(&self, args: &[&str]) -> Command {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed) % (self.peers.len() + 1);
        match turn {
            0 => self.own_kubectl_command(args),
            peer => self.peers[peer - 1].own_kubectl_command(args),
        }
    }

    fn own_kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(KUBECTL);
        cmd.env("KUBECONFIG", self.kubeconfig())
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .arg(format!("--cache-dir={}", self.cache.path().display()))
            .args(args);
        cmd
    }

    /// kubectl against this server only, whatever its peers.
    pub fn own_kubectl(&self, args: &[&str]) -> Run {
        Run::from(
            self.own_kubectl_command(args)
                .output()
                .expect("running kubectl"),
        )
    }

    pub fn kubectl(&self, args: &[&str]) -> Run {
        Run::from(
            self.kubectl_command(args)
                .output()
                .expect("running kubectl"),
        )
    }

    pub fn kubectl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.kubectl_command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run::from(cmd.output().expect("running kubectl"))
    }

    /// `kubectl <args> -f -` with `input` on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Run {
        let mut child = self
            .kubectl_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("writing stdin");
        Run::from(child.wait_with_output().expect("kubectl output"))
    }

    /// A long-running kubectl (e.g. `get -w`) with piped stdout.
    pub fn kubectl_spawn(&self, args: &[&str]) -> Child {
        self.kubectl_command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl")
    }

    /// Writes `contents` to `name` in a scratch dir of this server and returns its path.
    pub fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join("files").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pki/token"))
            .expect("token")
            .trim()
            .to_string()
    }

    /// The `https://127.0.0.1:PORT` from the kubeconfig.
    pub fn url(&self) -> String {
        let cfg = std::fs::read_to_string(self.kubeconfig()).expect("kubeconfig");
        cfg.lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .expect("server line")
            .trim()
            .to_string()
    }

    /// Raw HTTPS with curl: returns (status code, body). `token: false` sends no credentials.
    pub fn curl(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&[u8]>,
        token: bool,
    ) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
            .arg("--cacert")
            .arg(self.dir.path().join("pki/ca.crt"));
        if token {
            cmd.args(["-H", &format!("Authorization: Bearer {}", self.token())]);
        }
        if let Some(ct) = content_type {
            cmd.args(["-H", &format!("Content-Type: {ct}")]);
        }
        let body_file;
        if let Some(b) = body {
            body_file = self.dir.path().join("curl-body");
            std::fs::write(&body_file, b).unwrap();
            cmd.arg("--data-binary")
                .arg(format!("@{}", body_file.display()));
        }
        cmd.arg(format!("{}{path}", self.url()));
        let out = cmd.output().expect("running curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').expect("status line");
        (code.trim().parse().expect("status code"), body.to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts a server, or returns `None` (printing why) if kubectl or curl is missing.
pub fn server(need_curl: bool) -> Option<Server> {
    tools_present(need_curl).then(Server::start)
}

pub const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx
  labels:
    app: nginx
spec:
  replicas: 2
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - containerPort: 80
"#;

pub const SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: nginx
spec:
  selector:
    app: nginx
  ports:
  - name: http
    port: 80
"#;

pub fn pod(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, infinity]\n"
    )
}

pub fn configmap(name: &str, value: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: {value:?}\n")
}
