//! `run` against a mock Kubernetes API (a tower service behind a real `kube::Client`): SERVFAIL
//! and not ready until every list completes, watch events reach answers at once, and a 410 Gone
//! makes the watcher re-list, which replaces the state (an object deleted meanwhile is gone).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::mock_api::{EPS, MockApi, NS, SVC};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ask(addr: SocketAddr, name: &str) -> Message {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.send_to(&common::query(name, RecordType::A, 3, true), addr)
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.recv(&mut buf).unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

fn ips(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if tokio::task::block_in_place(&mut f) {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("timed out waiting for {what}");
}

fn slice_json(ips: &[&str], rv: &str) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "default", "resourceVersion": rv,
                     "labels": {"kubernetes.io/service-name": "web"},
                     "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": chrono::Utc::now().to_rfc3339()}},
        "addressType": "IPv4",
        "endpoints": ips.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}})).collect::<Vec<_>>(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_syncs_watches_and_recovers_from_410() {
    let api = Arc::new(MockApi::default());
    api.lists.lock().unwrap().extend([
        (NS, vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default", "resourceVersion": "1"}})]),
        (SVC, vec![
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default", "resourceVersion": "2"}, "spec": {"clusterIP": "None"}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubernetes", "namespace": "default", "resourceVersion": "3"}, "spec": {"clusterIP": "10.96.0.1"}}),
        ]),
        (EPS, vec![slice_json(&["10.244.0.1"], "4")]),
    ]);
    let client = api.client();
    let port = free_port();
    let ops_port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = muster_dns::DnsConfig {
        listen: vec![addr],
        upstreams: Some(vec![]),
        metrics_listen: Some(([127, 0, 0, 1], ops_port).into()),
        udp_workers: 1,
        ..Default::default()
    };
    let (ready_tx, mut ready_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(muster_dns::run(config, client, ready_tx));

    // Slices not listed yet: SERVFAIL (never NXDOMAIN), not ready.
    eventually("the server to answer", || {
        std::panic::catch_unwind(|| ask(addr, "web.default.svc.cluster.local.")).is_ok()
    })
    .await;
    let m = ask(addr, "nope.default.svc.cluster.local.");
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(!*ready_rx.borrow());

    api.slices_open
        .store(true, std::sync::atomic::Ordering::SeqCst);
    api.slices_gate.notify_waiters();
    tokio::time::timeout(Duration::from_secs(10), ready_rx.wait_for(|r| *r))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ips(&ask(addr, "web.default.svc.cluster.local.")),
        ["10.244.0.1"]
    );
    assert_eq!(
        ask(addr, "nope.default.svc.cluster.local.")
            .metadata
            .response_code,
        ResponseCode::NXDomain
    );

    // A watch event is in the answers as soon as it arrives.
    eventually("the slice watch", || {
        api.watches.lock().unwrap().contains_key(EPS)
    })
    .await;
    api.send(
        EPS,
        json!({"type": "MODIFIED", "object": slice_json(&["10.244.0.1", "10.244.0.2"], "20")}),
    );
    let took = eventually("the new endpoint", || {
        ips(&ask(addr, "web.default.svc.cluster.local.")).len() == 2
    })
    .await;
    assert!(took < Duration::from_secs(1), "{took:?}");

    // `web` is deleted while the watch is broken; the watch then fails with 410 Gone.
    eventually("the service watch", || {
        api.watches.lock().unwrap().contains_key(SVC)
    })
    .await;
    api.lists
        .lock()
        .unwrap()
        .get_mut(SVC)
        .unwrap()
        .retain(|s| s["metadata"]["name"] != "web");
    api.send(SVC, json!({"type": "ERROR", "object": {"apiVersion": "v1", "kind": "Status", "metadata": {},
        "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410}}));
    eventually("the re-list to drop web", || {
        ask(addr, "web.default.svc.cluster.local.")
            .metadata
            .response_code
            == ResponseCode::NXDomain
    })
    .await;
    assert_eq!(
        ips(&ask(addr, "kubernetes.default.svc.cluster.local.")),
        ["10.96.0.1"]
    );

    // The programming-latency histogram saw the slice changes.
    let metrics = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", ops_port)).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut t = String::new();
        s.read_to_string(&mut t).unwrap();
        t
    })
    .await
    .unwrap();
    assert!(
        metrics.contains("muster_dns_programming_duration_seconds_headless_count 2"),
        "{metrics}"
    );
    task.abort();
}
