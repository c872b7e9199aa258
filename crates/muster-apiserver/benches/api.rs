//! API-level benchmark (not a test): `bench/api/run.sh` builds the release binary and runs this.
//!
//! Starts the real `muster apiserver` (release binary given as the first argument) on a fresh
//! data dir and drives it over HTTPS (HTTP/2, bearer token, kubectl's JSON bodies) with a
//! small hyper client, one TLS connection per simulated client. Measures:
//! durable pod creates/s and latency with 1 and 16 clients, the apiserver's start to
//! `/readyz` (fresh and with every pod on restart), lists of 10,000 and all pods (JSON,
//! Table, gzip, kubectl's 500-item pages), watch events/s delivered to 100 watchers, and the
//! apiserver's resident memory. References measured in the same run, so that figures can be
//! read as ratios on a noisy machine: the redb store alone, in this process, doing the same
//! creates, lists and watch fan-out with the same stored pod JSON; and the raw fsync cost.
//!
//! Flags: `--pods N` (default 100000) pods in total; `--quick` for a smoke run (10,000).
//! Extra apiserver flags come from `MUSTER_APISERVER_ARGS` (whitespace-separated), e.g.
//! `--store etcd --etcd-endpoints http://127.0.0.1:2379`.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use muster_store::{Event, RedbStore, Store, StoreOptions};
use serde_json::{Value, json};

type Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
const CREATE_QUERY: &str = "fieldManager=kubectl-create&fieldValidation=Strict";
const WATCHERS: usize = 100;
const WATCH_EVENTS: usize = 2_000;
const LIST_RUNS: usize = 5;

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let mut muster: Option<PathBuf> = None;
    let mut pods = 100_000usize;
    let mut creates_only: Option<usize> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--pods" => {
                pods = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n >= 30_000)
                    .unwrap_or_else(|| fail("--pods takes a number >= 30000"))
            }
            "--quick" => pods = 30_000,
            // Only `N` creates from 16 clients, then stop: for profiling the create path (run
            // the apiserver under a profiler with MUSTER_APISERVER_WRAPPER).
            "--creates-only" => {
                creates_only = args.next().and_then(|n| n.parse().ok());
                if creates_only.is_none() {
                    fail("--creates-only takes a number");
                }
            }
            other if !other.starts_with('-') => muster = Some(PathBuf::from(other)),
            other => fail(&format!("unknown flag {other}")),
        }
    }
    let muster = muster.unwrap_or_else(|| fail("usage: api MUSTER_BINARY [--pods N] [--quick]"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let outcome = match creates_only {
        Some(n) => runtime.block_on(profile_creates(&muster, n)),
        None => runtime.block_on(run(&muster, pods)),
    };
    if let Err(e) = outcome {
        fail(&format!("{e:#}"));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("api bench: {message}");
    std::process::exit(2)
}

/// One row of the summary: what, the API figure, the reference figure, their ratio.
struct Row {
    what: String,
    api: String,
    reference: String,
    ratio: String,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
}

impl Report {
    fn add(&mut self, what: &str, api: String, reference: String, ratio: Option<f64>) {
        println!("  {what}: {api}   [reference: {reference}]");
        self.rows.push(Row {
            what: what.to_string(),
            api,
            reference,
            ratio: ratio.map(|r| format!("{r:.2}")).unwrap_or_default(),
        });
    }

    fn print(&self) {
        let w = |f: fn(&Row) -> &str, title: &str| {
            self.rows
                .iter()
                .map(|r| f(r).len())
                .max()
                .unwrap_or(0)
                .max(title.len())
        };
        let widths = [
            w(|r| &r.what, "measure"),
            w(|r| &r.api, "muster apiserver (HTTPS)"),
            w(|r| &r.reference, "reference (same run)"),
            w(|r| &r.ratio, "api/ref"),
        ];
        let line = |cells: [&str; 4]| {
            println!(
                "| {:<a$} | {:<b$} | {:<c$} | {:>d$} |",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                a = widths[0],
                b = widths[1],
                c = widths[2],
                d = widths[3]
            );
        };
        line([
            "measure",
            "muster apiserver (HTTPS)",
            "reference (same run)",
            "api/ref",
        ]);
        println!(
            "|{}|{}|{}|{}|",
            "-".repeat(widths[0] + 2),
            "-".repeat(widths[1] + 2),
            "-".repeat(widths[2] + 2),
            "-".repeat(widths[3] + 2)
        );
        for r in &self.rows {
            line([&r.what, &r.api, &r.reference, &r.ratio]);
        }
    }
}

async fn run(muster: &Path, pods: usize) -> anyhow::Result<()> {
    let extra: Vec<String> = std::env::var("MUSTER_APISERVER_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    println!("load average at start: {}", load_average());
    println!(
        "apiserver: {} apiserver {}",
        muster.display(),
        extra.join(" ")
    );
    let work = tempfile::tempdir()?;
    let mut report = Report::default();

    let fsync = fsync_cost(work.path());
    println!(
        "fsync of a 4 KiB write here: p50 {:.3} ms, p99 {:.3} ms",
        fsync.0, fsync.1
    );

    let data = work.path().join("api");
    let started = Instant::now();
    let mut server = Server::start(muster, &data, &extra).await?;
    let fresh_start = started.elapsed();
    let target = server.target.clone();
    println!(
        "apiserver ready on a fresh data dir after {:.1} ms",
        ms(fresh_start)
    );

    let namespaces: Vec<String> = (0..pods.div_ceil(10_000))
        .map(|i| format!("p{i}"))
        .collect();
    let mut admin = connect(&target).await?;
    for ns in ["b1", "w", "warm"]
        .iter()
        .map(|s| s.to_string())
        .chain(namespaces.iter().cloned())
    {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        let (status, _) = call(
            &mut admin,
            &target,
            Method::POST,
            &format!("/api/v1/namespaces?{CREATE_QUERY}"),
            Some(body.to_string().into()),
            "application/json",
            false,
        )
        .await?;
        anyhow::ensure!(
            status == StatusCode::CREATED,
            "creating namespace {ns}: {status}"
        );
    }

    // The stored form of a pod, for the store-alone reference: what the apiserver wrote.
    let (status, stored) = call(
        &mut admin,
        &target,
        Method::POST,
        &format!("/api/v1/namespaces/warm/pods?{CREATE_QUERY}"),
        Some(pod_body("warm", "template")),
        "application/json",
        false,
    )
    .await?;
    anyhow::ensure!(
        status == StatusCode::CREATED,
        "creating a pod: {status}: {stored:?}"
    );
    let template: Value = serde_json::from_slice(&stored)?;
    println!(
        "pod body as kubectl sends it: {} bytes of JSON; as stored: {} bytes",
        pod_body("p0", "terra10-000000").len(),
        stored.len()
    );
    create_api(&target, "warm", 16, 500, 0).await?;

    let store_dir = work.path().join("reference");
    let store = RedbStore::open(&store_dir.join("store.redb"), StoreOptions::default())?;
    create_store(&store, &template, "warm", 16, 500, 0).await;

    // Creates: API then the store alone, with 1 and then 16 clients.
    for (clients, count, ns) in [(1usize, 2_000usize, "b1"), (16, 20_000, "p0")] {
        let cpu = Cpu::start(server.pid());
        let api = create_api(&target, ns, clients, count, 0).await?;
        let (server_cpu, client_cpu) = cpu.per_op(count);
        let reference = create_store(&store, &template, ns, clients, count, 0).await;
        report.add(
            &format!("durable pod creates/s, {clients} client(s)"),
            format!(
                "{:.0}/s (server {:.0} µs CPU/create, client {:.0} µs)",
                api.rate(),
                server_cpu,
                client_cpu
            ),
            format!("{:.0}/s store alone", reference.rate()),
            Some(api.rate() / reference.rate()),
        );
        report.add(
            &format!("create latency p50 / p99, {clients} client(s)"),
            format!("{:.2} / {:.2} ms", api.p(0.5), api.p(0.99)),
            format!("{:.2} / {:.2} ms", reference.p(0.5), reference.p(0.99)),
            Some(api.p(0.99) / reference.p(0.99)),
        );
    }

    // Fill up to `pods`: the 16-client run put 20,000 pods into p0; the rest go 10,000 per
    // namespace from p1 on.
    let fill_started = Instant::now();
    let mut filled = 0;
    let cpu = Cpu::start(server.pid());
    let mut have = 20_000;
    for ns in namespaces.iter().skip(1) {
        if have >= pods {
            break;
        }
        let n = 10_000.min(pods - have);
        create_api(&target, ns, 16, n, 0).await?;
        create_store(&store, &template, ns, 16, n, 0).await;
        have += n;
        filled += n;
    }
    if filled > 0 {
        let (server_cpu, _) = cpu.per_op(filled);
        println!(
            "filled {filled} more pods with 16 clients (and the same into the reference store) in {:.1} s; apiserver {:.0} µs CPU/create",
            fill_started.elapsed().as_secs_f64(),
            server_cpu
        );
    }
    // Plus the 1-client run's 2,000 and the warm-up's 501.
    let mut total_pods = have + 2_000 + 501;
    let rss = server.rss_mib();
    report.add(
        &format!("apiserver resident memory, {} pods", thousands(total_pods)),
        format!("{rss:.0} MiB"),
        "-".into(),
        None,
    );

    // Lists.
    let ten_k_ns = &namespaces[1];
    let ten_k = 10_000;
    let lists = [
        (
            format!("list {} pods (one namespace), JSON", thousands(ten_k)),
            format!("/api/v1/namespaces/{ten_k_ns}/pods"),
            format!("/registry/core/pods/{ten_k_ns}/"),
            "application/json",
            false,
        ),
        (
            format!("list all {} pods, JSON", thousands(total_pods)),
            "/api/v1/pods".to_string(),
            "/registry/core/pods/".to_string(),
            "application/json",
            false,
        ),
        (
            format!("list all {} pods, JSON gzip", thousands(total_pods)),
            "/api/v1/pods".to_string(),
            "/registry/core/pods/".to_string(),
            "application/json",
            true,
        ),
        (
            format!("list all {} pods, as=Table", thousands(total_pods)),
            "/api/v1/pods".to_string(),
            "/registry/core/pods/".to_string(),
            TABLE_ACCEPT,
            false,
        ),
    ];
    for (what, path, prefix, accept, gzip) in lists {
        let mut times = Vec::new();
        let mut size = 0;
        let cpu = Cpu::start(server.pid());
        for _ in 0..LIST_RUNS {
            let t = Instant::now();
            let (status, bytes) = call_counting(&mut admin, &target, &path, accept, gzip).await?;
            times.push(ms(t.elapsed()));
            anyhow::ensure!(status == StatusCode::OK, "{path}: {status}");
            size = bytes;
        }
        let (server_cpu, _) = cpu.per_op(LIST_RUNS);
        let mut store_times = Vec::new();
        for _ in 0..LIST_RUNS {
            let t = Instant::now();
            let list = store.list(&prefix, None, None).await?;
            store_times.push(ms(t.elapsed()));
            std::hint::black_box(list);
        }
        let api = median(&mut times);
        let reference = median(&mut store_times);
        report.add(
            &what,
            format!(
                "{api:.0} ms median of {LIST_RUNS} ({:.1} MB, server {:.0} ms CPU each)",
                size as f64 / 1e6,
                server_cpu / 1e3
            ),
            format!("{reference:.1} ms store.list alone"),
            Some(api / reference),
        );
    }
    // What `kubectl get pods -A` does: pages of 500, each continuing the last.
    {
        let t = Instant::now();
        let mut next: Option<String> = None;
        let mut pages = 0;
        loop {
            let path = match &next {
                Some(token) => format!("/api/v1/pods?limit=500&continue={token}"),
                None => "/api/v1/pods?limit=500".to_string(),
            };
            let (status, body) = call(
                &mut admin,
                &target,
                Method::GET,
                &path,
                None,
                TABLE_ACCEPT,
                false,
            )
            .await?;
            anyhow::ensure!(status == StatusCode::OK, "{path}: {status}");
            pages += 1;
            let v: Value = serde_json::from_slice(&body)?;
            next = v["metadata"]["continue"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string);
            if next.is_none() {
                break;
            }
        }
        let elapsed = ms(t.elapsed());
        report.add(
            &format!("list all pods in {pages} pages of 500, as=Table (kubectl get pods -A)"),
            format!("{elapsed:.0} ms (client parses each page)"),
            "-".into(),
            None,
        );
    }

    // Watch fan-out.
    {
        let (api_rate, api_trail) = watch_api(&target).await?;
        let (store_rate, store_trail) = watch_store(&store, &template).await;
        report.add(
            &format!("watch events/s to {WATCHERS} watchers ({WATCH_EVENTS} creates, 16 clients)"),
            format!("{api_rate:.0}/s, last watcher done {api_trail:.0} ms after the last write"),
            format!("{store_rate:.0}/s store alone ({store_trail:.0} ms)"),
            Some(api_rate / store_rate),
        );
    }

    total_pods += WATCH_EVENTS;
    // Restart with every pod on disk: time to /readyz and the memory of a fresh process.
    let reference_reopen = {
        drop(store);
        let t = Instant::now();
        let reopened = RedbStore::open(&store_dir.join("store.redb"), StoreOptions::default())?;
        let elapsed = t.elapsed();
        drop(reopened);
        elapsed
    };
    server.stop();
    let started = Instant::now();
    let mut server = Server::start(muster, &data, &extra).await?;
    let restart = started.elapsed();
    let rss_restart = server.rss_mib();
    report.add(
        "apiserver exec → /readyz, fresh data dir",
        format!("{:.1} ms", ms(fresh_start)),
        "-".into(),
        None,
    );
    report.add(
        &format!(
            "apiserver exec → /readyz, restart with {} pods",
            thousands(total_pods)
        ),
        format!("{:.0} ms", ms(restart)),
        format!("{:.0} ms RedbStore::open alone", ms(reference_reopen)),
        Some(ms(restart) / ms(reference_reopen)),
    );
    report.add(
        "apiserver resident memory after that restart",
        format!("{rss_restart:.0} MiB"),
        "-".into(),
        None,
    );
    server.stop();

    report.add(
        "fsync of a 4 KiB write, p50 / p99",
        "-".into(),
        format!("{:.3} / {:.3} ms", fsync.0, fsync.1),
        None,
    );
    println!();
    println!("load average at end: {}", load_average());
    report.print();
    Ok(())
}

/// Starts the apiserver, makes `count` creates from 16 clients, prints the rate and stops.
async fn profile_creates(muster: &Path, count: usize) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let data = work.path().join("api");
    let extra: Vec<String> = std::env::var("MUSTER_APISERVER_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let mut server = Server::start(muster, &data, &extra).await?;
    let mut admin = connect(&server.target).await?;
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prof"}});
    call(
        &mut admin,
        &server.target,
        Method::POST,
        "/api/v1/namespaces",
        Some(body.to_string().into()),
        "application/json",
        false,
    )
    .await?;
    let cpu = Cpu::start(server.pid());
    let result = create_api(&server.target, "prof", 16, count, 0).await?;
    let (server_cpu, client_cpu) = cpu.per_op(count);
    println!(
        "{count} creates, 16 clients: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms; server {server_cpu:.0} µs CPU/create, client {client_cpu:.0} µs",
        result.rate(),
        result.p(0.5),
        result.p(0.99)
    );
    // One Table list of them, for profiling the Table path too.
    let cpu = Cpu::start(server.pid());
    let t = Instant::now();
    let (status, size) = call_counting(
        &mut admin,
        &server.target,
        "/api/v1/pods",
        TABLE_ACCEPT,
        false,
    )
    .await?;
    let (server_cpu, _) = cpu.per_op(count);
    println!(
        "Table list of {count} pods: {status}, {:.0} ms, {size} bytes, server {server_cpu:.0} µs CPU/row",
        ms(t.elapsed())
    );
    server.stop();
    Ok(())
}

// -------------------------------------------------------------------------------------------
// The apiserver process

#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    token: String,
    tls: Arc<rustls::ClientConfig>,
}

struct Server {
    child: Child,
    target: Target,
}

impl Server {
    /// Starts `muster apiserver` and returns once `/readyz` answers ok.
    async fn start(muster: &Path, data: &Path, extra: &[String]) -> anyhow::Result<Server> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        // A profiler or tracer to run the apiserver under, e.g.
        // MUSTER_APISERVER_WRAPPER="valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out".
        let wrapper: Vec<String> = std::env::var("MUSTER_APISERVER_WRAPPER")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(muster);
                c
            }
            None => Command::new(muster),
        };
        let child = command
            .arg("apiserver")
            .arg("--data-dir")
            .arg(data)
            .arg("--api-listen")
            .arg(addr.to_string())
            .args(extra)
            .env("MUSTER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut server = Server {
            child,
            target: Target {
                addr,
                token: String::new(),
                tls: Arc::new(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                ),
            },
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        // The token and CA are written before the server serves; until then, wait.
        loop {
            if let Some(status) = server.child.try_wait()? {
                anyhow::bail!("the apiserver exited with {status}");
            }
            anyhow::ensure!(Instant::now() < deadline, "the apiserver did not get ready");
            if server.target.token.is_empty() {
                match read_kubeconfig(data) {
                    Some((token, tls)) => {
                        server.target.token = token;
                        server.target.tls = tls;
                    }
                    None => {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                }
            }
            if let Ok(mut s) = connect(&server.target).await
                && let Ok((StatusCode::OK, _)) = call(
                    &mut s,
                    &server.target,
                    Method::GET,
                    "/readyz",
                    None,
                    "*/*",
                    false,
                )
                .await
            {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kib| kib.parse::<f64>().ok())
            })
            .unwrap_or(0.0)
            / 1024.0
    }

    fn stop(&mut self) {
        // SIGTERM by the child's own pid: it shuts down cleanly.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// The token and a TLS config trusting the CA, from `DIR/kubeconfig` once it is complete.
fn read_kubeconfig(data: &Path) -> Option<(String, Arc<rustls::ClientConfig>)> {
    use base64::Engine;
    let text = std::fs::read_to_string(data.join("kubeconfig")).ok()?;
    let config: Value = serde_yaml::from_str(&text).ok()?;
    let token = config.pointer("/users/0/user/token")?.as_str()?.to_string();
    let ca_b64 = config
        .pointer("/clusters/0/cluster/certificate-authority-data")?
        .as_str()?;
    let ca_pem = base64::engine::general_purpose::STANDARD
        .decode(ca_b64)
        .ok()?;
    let ca: rustls::pki_types::CertificateDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_slice(&ca_pem).ok()?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).ok()?;
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    Some((token, Arc::new(tls)))
}

// -------------------------------------------------------------------------------------------
// HTTP/2 client

async fn connect(t: &Target) -> anyhow::Result<Sender> {
    let tcp = tokio::net::TcpStream::connect(t.addr).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::IpAddress(t.addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(t.tls.clone())
        .connect(name, tcp)
        .await?;
    // Go's HTTP/2 client windows (what kubectl and client-go use): 4 MiB per stream, 1 GiB
    // per connection.
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(1 << 30)
        .handshake(TokioIo::new(tls))
        .await?;
    tokio::spawn(conn);
    Ok(sender)
}

fn request(
    t: &Target,
    method: Method,
    path: &str,
    body: Option<Bytes>,
    accept: &str,
    gzip: bool,
) -> anyhow::Result<Request<Full<Bytes>>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("https://{}{path}", t.addr))
        .header(header::AUTHORIZATION, format!("Bearer {}", t.token))
        .header(header::ACCEPT, accept)
        .header(
            header::USER_AGENT,
            "kubectl/v1.33.1 (linux/amd64) muster-apibench",
        );
    if gzip {
        builder = builder.header(header::ACCEPT_ENCODING, "gzip");
    }
    if body.is_some() {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    Ok(builder.body(Full::new(body.unwrap_or_default()))?)
}

async fn call(
    s: &mut Sender,
    t: &Target,
    method: Method,
    path: &str,
    body: Option<Bytes>,
    accept: &str,
    gzip: bool,
) -> anyhow::Result<(StatusCode, Bytes)> {
    s.ready().await?;
    let resp = s
        .send_request(request(t, method, path, body, accept, gzip)?)
        .await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// A GET whose body is only counted, not kept.
async fn call_counting(
    s: &mut Sender,
    t: &Target,
    path: &str,
    accept: &str,
    gzip: bool,
) -> anyhow::Result<(StatusCode, usize)> {
    s.ready().await?;
    let resp = s
        .send_request(request(t, Method::GET, path, None, accept, gzip)?)
        .await?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut size = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            size += data.len();
        }
    }
    Ok((status, size))
}

/// A pod as `kubectl create -f` sends it (YAML turned into JSON): the seed's pod template.
fn pod_body(namespace: &str, name: &str) -> Bytes {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"labels": {"app": "terra10"}, "name": name, "namespace": namespace},
        "spec": {"containers": [{
            "image": "lgorissen/terra10:r1",
            "name": "terra10",
            "ports": [{"containerPort": 8080}],
        }]},
    })
    .to_string()
    .into()
}

// -------------------------------------------------------------------------------------------
// Workloads

struct Latencies {
    elapsed: Duration,
    sorted_ms: Vec<f64>,
}

impl Latencies {
    fn new(elapsed: Duration, mut ms: Vec<f64>) -> Latencies {
        ms.sort_by(f64::total_cmp);
        Latencies {
            elapsed,
            sorted_ms: ms,
        }
    }

    fn rate(&self) -> f64 {
        self.sorted_ms.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn p(&self, p: f64) -> f64 {
        let i = ((self.sorted_ms.len() as f64 - 1.0) * p).round() as usize;
        self.sorted_ms[i]
    }
}

/// `count` creates in `ns` from `clients` connections, names numbered from `first`.
async fn create_api(
    t: &Target,
    ns: &str,
    clients: usize,
    count: usize,
    first: usize,
) -> anyhow::Result<Latencies> {
    let mut senders = Vec::new();
    for _ in 0..clients {
        senders.push(connect(t).await?);
    }
    let start = Instant::now();
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(c, mut sender)| {
            let t = t.clone();
            let ns = ns.to_string();
            tokio::spawn(async move {
                let path = format!("/api/v1/namespaces/{ns}/pods?{CREATE_QUERY}");
                let mut latencies = Vec::new();
                for i in (c..count).step_by(clients) {
                    let body = pod_body(&ns, &format!("terra10-{:06}", first + i));
                    let write = Instant::now();
                    let (status, answer) = call(
                        &mut sender,
                        &t,
                        Method::POST,
                        &path,
                        Some(body),
                        "application/json",
                        false,
                    )
                    .await?;
                    anyhow::ensure!(
                        status == StatusCode::CREATED,
                        "create: {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                    latencies.push(ms(write.elapsed()));
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(count);
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(Latencies::new(start.elapsed(), all))
}

fn stored_pod(template: &Value, ns: &str, name: &str) -> Value {
    let mut pod = template.clone();
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["namespace"] = json!(ns);
    pod["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
    if let Some(m) = pod["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    pod
}

/// The same creates against the store alone, with the stored form of the pod.
async fn create_store(
    store: &Arc<RedbStore>,
    template: &Value,
    ns: &str,
    writers: usize,
    count: usize,
    first: usize,
) -> Latencies {
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            let template = template.clone();
            let ns = ns.to_string();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for i in (w..count).step_by(writers) {
                    let name = format!("terra10-{:06}", first + i);
                    let key = format!("/registry/core/pods/{ns}/{name}");
                    let value = stored_pod(&template, &ns, &name);
                    let write = Instant::now();
                    store.create(&key, value).await.expect("store create");
                    latencies.push(ms(write.elapsed()));
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(count);
    for task in tasks {
        all.extend(task.await.expect("writer task"));
    }
    Latencies::new(start.elapsed(), all)
}

/// 100 watch streams on namespace `w` (each its own connection), then 16 clients create
/// `WATCH_EVENTS` pods there. Returns events/s delivered (all watchers) and how long after the
/// last acknowledged write the slowest watcher had everything.
async fn watch_api(t: &Target) -> anyhow::Result<(f64, f64)> {
    let mut admin = connect(t).await?;
    let (_, list) = call(
        &mut admin,
        t,
        Method::GET,
        "/api/v1/namespaces/w/pods",
        None,
        "application/json",
        false,
    )
    .await?;
    let rv = serde_json::from_slice::<Value>(&list)?["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut readers = Vec::new();
    for _ in 0..WATCHERS {
        let mut s = connect(t).await?;
        s.ready().await?;
        let resp = s
            .send_request(request(
                t,
                Method::GET,
                &format!("/api/v1/namespaces/w/pods?watch=true&resourceVersion={rv}&allowWatchBookmarks=true"),
                None,
                "application/json",
                false,
            )?)
            .await?;
        anyhow::ensure!(resp.status() == StatusCode::OK, "watch: {}", resp.status());
        let mut body = resp.into_body();
        readers.push(tokio::spawn(async move {
            let _keep = s;
            let mut added = 0;
            let mut partial: Vec<u8> = Vec::new();
            while added < WATCH_EVENTS {
                let Some(frame) = body.frame().await else {
                    anyhow::bail!("watch ended after {added} events");
                };
                let Some(data) = frame?.into_data().ok() else {
                    continue;
                };
                // Count complete lines of ADDED events (bookmarks are skipped).
                partial.extend_from_slice(&data);
                let mut start = 0;
                while let Some(nl) = partial[start..].iter().position(|b| *b == b'\n') {
                    let line = &partial[start..start + nl];
                    if line.starts_with(br#"{"type":"ADDED""#) {
                        added += 1;
                    }
                    start += nl + 1;
                }
                partial.drain(..start);
            }
            Ok(Instant::now())
        }));
    }
    let start = Instant::now();
    create_api(t, "w", 16, WATCH_EVENTS, 0).await?;
    let writes_done = Instant::now();
    let mut last = start;
    for r in readers {
        last = last.max(r.await??);
    }
    let elapsed = last.duration_since(start).as_secs_f64();
    Ok((
        (WATCHERS * WATCH_EVENTS) as f64 / elapsed,
        ms(last.saturating_duration_since(writes_done)),
    ))
}

/// The same fan-out on the store alone: 100 store watchers, 16 writers.
async fn watch_store(store: &Arc<RedbStore>, template: &Value) -> (f64, f64) {
    let prefix = "/registry/core/pods/w/";
    let from = store.revision();
    let mut readers = Vec::new();
    for _ in 0..WATCHERS {
        let mut stream = store.watch(prefix, from).await.expect("store watch");
        readers.push(tokio::spawn(async move {
            let mut received = 0;
            while received < WATCH_EVENTS {
                match stream.next().await {
                    Some(Ok(Event::Put { .. })) => received += 1,
                    Some(Ok(_)) => {}
                    other => panic!("store watcher ended: {other:?}"),
                }
            }
            Instant::now()
        }));
    }
    let start = Instant::now();
    create_store(store, template, "w", 16, WATCH_EVENTS, 0).await;
    let writes_done = Instant::now();
    let mut last = start;
    for r in readers {
        last = last.max(r.await.expect("reader"));
    }
    let elapsed = last.duration_since(start).as_secs_f64();
    (
        (WATCHERS * WATCH_EVENTS) as f64 / elapsed,
        ms(last.saturating_duration_since(writes_done)),
    )
}

// -------------------------------------------------------------------------------------------
// Measurement helpers

/// CPU time of the apiserver and of this process (the client) over a phase.
struct Cpu {
    pid: u32,
    server: f64,
    client: f64,
}

impl Cpu {
    fn start(pid: u32) -> Cpu {
        Cpu {
            pid,
            server: cpu_seconds(&format!("/proc/{pid}/stat")),
            client: cpu_seconds("/proc/self/stat"),
        }
    }

    /// (server µs, client µs) per operation since `start`.
    fn per_op(&self, ops: usize) -> (f64, f64) {
        let server = cpu_seconds(&format!("/proc/{}/stat", self.pid)) - self.server;
        let client = cpu_seconds("/proc/self/stat") - self.client;
        (server * 1e6 / ops as f64, client * 1e6 / ops as f64)
    }
}

/// User plus system CPU seconds of a process, from its `stat` file (ticks of 10 ms).
fn cpu_seconds(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// p50 and p99 (ms) of 200 fsyncs after a 4 KiB write, on the disk the data dirs are on.
fn fsync_cost(dir: &Path) -> (f64, f64) {
    use std::io::{Seek, SeekFrom, Write};
    let path = dir.join("fsync-probe");
    let Ok(mut file) = std::fs::File::create(&path) else {
        return (f64::NAN, f64::NAN);
    };
    let mut times = Vec::new();
    for i in 0..200u64 {
        let _ = file.seek(SeekFrom::Start((i % 16) * 4096));
        let _ = file.write_all(&[0x5a; 4096]);
        let start = Instant::now();
        let _ = file.sync_data();
        times.push(ms(start.elapsed()));
    }
    let _ = std::fs::remove_file(&path);
    let l = Latencies::new(Duration::from_secs(1), times);
    (l.p(0.5), l.p(0.99))
}
