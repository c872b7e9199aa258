//! DNS programming latency: an EndpointSlice change delivered by the watch → its IP in the
//! answers. Runs `muster_dns::run` against an in-process mock API (the same `kube` watcher path
//! as against a real API server, minus the API server's own latency), changes a headless
//! service's slice N times, and polls over UDP every 50 µs until each new IP is answered.
//!
//! `propagation [N]` (default 200); prints p50/p99/max.

#[path = "../tests/common/mock_api.rs"]
mod mock_api;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mock_api::{EPS, MockApi, NS, SVC};
use serde_json::{Value, json};

fn slice(ip: &str, rv: usize) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "default", "resourceVersion": rv.to_string(),
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
    })
}

/// A raw A query for web.default.svc.cluster.local.
fn query() -> Vec<u8> {
    let mut m = vec![0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in ["web", "default", "svc", "cluster", "local"] {
        m.push(l.len() as u8);
        m.extend(l.bytes());
    }
    m.extend([0, 0, 1, 0, 1]);
    m
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let api = Arc::new(MockApi::default());
    api.slices_open
        .store(true, std::sync::atomic::Ordering::SeqCst);
    api.lists.lock().unwrap().extend([
        (NS, vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default", "resourceVersion": "1"}})]),
        (SVC, vec![json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "2"}, "spec": {"clusterIP": "None"}})]),
        (EPS, vec![slice("10.244.0.1", 3)]),
    ]);
    let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = muster_dns::DnsConfig {
        listen: vec![addr],
        upstreams: Some(vec![]),
        metrics_listen: None,
        udp_workers: 1,
        ..Default::default()
    };
    let (ready_tx, mut ready_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(muster_dns::run(config, api.client(), ready_tx));
    ready_rx.wait_for(|r| *r).await?;
    while !api.watches.lock().unwrap().contains_key(EPS) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let samples = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Duration>> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.set_read_timeout(Some(Duration::from_secs(1)))?;
        let q = query();
        let mut buf = [0u8; 512];
        let mut samples = Vec::with_capacity(n);
        for i in 0..n {
            let ip = [10, 245, (i / 250) as u8, (i % 250 + 1) as u8];
            let text = format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]);
            let t0 = Instant::now();
            api.send(
                EPS,
                json!({"type": "MODIFIED", "object": slice(&text, 10 + i)}),
            );
            loop {
                sock.send_to(&q, addr)?;
                let len = sock.recv(&mut buf)?;
                if buf[..len].windows(4).any(|w| w == ip) {
                    break;
                }
                anyhow::ensure!(
                    t0.elapsed() < Duration::from_secs(5),
                    "{text} never appeared"
                );
                std::thread::sleep(Duration::from_micros(50));
            }
            samples.push(t0.elapsed());
        }
        Ok(samples)
    })
    .await??;
    let mut sorted = samples.clone();
    sorted.sort();
    let at = |p: f64| sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)];
    println!(
        "watch event -> answer over {n} changes: p50={:?} p99={:?} max={:?}",
        at(0.5),
        at(0.99),
        sorted[sorted.len() - 1]
    );
    Ok(())
}
