//! Creates per second and write latency of `EtcdStore` on one local etcd member (a fresh data
//! directory under /tmp, loopback ports), with 1 and with 16 concurrent clients.
//!
//!   cargo bench -p muster-store --features etcd --bench etcd [-- CREATES_PER_RUN]
//!
//! Every write is an etcd transaction that etcd acknowledges after its WAL fsync, so the
//! figures include one fsync per etcd batch, as the embedded store's bench does for redb.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_store::{EtcdOptions, EtcdStore, Store};
use serde_json::json;

struct EtcdProcess(Child);

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn start_etcd(dir: &std::path::Path) -> (EtcdProcess, String) {
    let (client, peer) = (free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new("etcd")
        .args(["--name", "bench", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("bench={peer_url}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start /usr/bin/etcd (Debian package etcd-server)");
    (EtcdProcess(child), client_url)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Creates `creates` pods from `clients` concurrent tasks and prints the figures, unless
/// this is the warm-up.
async fn run(store: &Arc<EtcdStore>, clients: usize, creates: usize, run: &str) {
    let per_client = creates / clients;
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let store = store.clone();
            let run = run.to_string();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let name = format!("p-{c}-{i}");
                    let pod = json!({
                        "apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": name, "namespace": "bench", "labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
                    });
                    let key = format!("/registry/core/pods/{run}/{name}");
                    let t = Instant::now();
                    store.create(&key, pod).await.expect("create");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client task"));
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    if run == "warmup" {
        return;
    }
    println!(
        "etcd creates, {clients:>2} client(s): {:>6.0} creates/s, p50 {:>6.2} ms, p99 {:>6.2} ms ({} creates in {:.2} s)",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.len(),
        elapsed.as_secs_f64(),
    );
}

fn main() {
    let creates: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2_000)
        .clamp(16, 100_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let (_etcd, endpoint) = start_etcd(dir.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // etcd needs a moment to elect itself; connect retries for up to 20 s.
        let deadline = Instant::now() + Duration::from_secs(20);
        let store = loop {
            match EtcdStore::connect(std::slice::from_ref(&endpoint), EtcdOptions::default()).await
            {
                Ok(store) => break store,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("etcd did not come up: {e}"),
            }
        };
        // Warm-up: connections and etcd's first WAL segment.
        run(&store, 4, 200, "warmup").await;
        run(&store, 1, creates / 4, "one").await;
        run(&store, 16, creates, "sixteen").await;
    });
}
