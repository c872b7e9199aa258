//! Write-to-answer latency through a real API server: an EndpointSlice write acknowledged by
//! the API → its new IP in the DNS answers.
//!
//! `write_to_answer --kubeconfig FILE --dns 127.0.0.1:PORT [--writes 200] [--namespace default]`
//!
//! Creates a headless Service without a selector and one EndpointSlice for it (as a user or an
//! external controller would), waits until the DNS answers its first IP, then N times replaces
//! the slice with a new single ready IP (PUT with the last resourceVersion, as controllers
//! write) and polls the DNS over UDP until exactly that IP is answered. Per write it records:
//! - sent → ack: the PUT's round trip through HTTPS;
//! - sent → watch: when a separate watcher on the slice (the reference: the API's own event
//!   delivery) sees the write;
//! - ack → answer and sent → answer: when the DNS first answers the new IP.
//!
//! The poll loop sends one query, waits up to 5 ms for its reply, and sleeps `--poll-us`
//! (default 50 µs) between queries; each write gives up after 2 s (counted as a miss).
//! Prints one table (p50/p90/p99/max in ms) and deletes what it created.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams, WatchEvent, WatchParams};
use parking_lot::Mutex;
use serde_json::json;

const SERVICE: &str = "w2a-bench";
const SLICE: &str = "w2a-bench-1";
const GIVE_UP: Duration = Duration::from_secs(2);

struct Args {
    kubeconfig: String,
    dns: SocketAddr,
    writes: usize,
    namespace: String,
    poll: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        kubeconfig: String::new(),
        dns: "127.0.0.1:5353".parse()?,
        writes: 200,
        namespace: "default".into(),
        poll: Duration::from_micros(50),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--kubeconfig" => args.kubeconfig = value,
            "--dns" => args.dns = value.parse().context("--dns")?,
            "--writes" => args.writes = value.parse().context("--writes")?,
            "--namespace" => args.namespace = value,
            "--poll-us" => args.poll = Duration::from_micros(value.parse().context("--poll-us")?),
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    anyhow::ensure!(!args.kubeconfig.is_empty(), "--kubeconfig FILE is required");
    anyhow::ensure!(
        (1..=60_000).contains(&args.writes),
        "--writes must be 1..=60000"
    );
    Ok(args)
}

fn slice_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 245, (i / 250) as u8, (i % 250 + 1) as u8)
}

fn slice_object(ns: &str, ip: Ipv4Addr, resource_version: Option<String>) -> EndpointSlice {
    let mut v = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": SLICE, "namespace": ns,
                     "labels": {"kubernetes.io/service-name": SERVICE}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
    });
    if let Some(rv) = resource_version {
        v["metadata"]["resourceVersion"] = json!(rv);
    }
    serde_json::from_value(v).expect("a valid EndpointSlice")
}

/// A raw A query (no EDNS) for `<SERVICE>.<ns>.svc.cluster.local` with the given ID.
fn a_query(ns: &str, id: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend([1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in [SERVICE, ns, "svc", "cluster", "local"] {
        m.push(l.len() as u8);
        m.extend(l.bytes());
    }
    m.extend([0, 0, 1, 0, 1]);
    m
}

/// Whether `reply` (to query `id`) is NOERROR with exactly the one A record `ip`.
fn answers_exactly(reply: &[u8], id: u16, ip: Ipv4Addr) -> bool {
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::RData;
    let Ok(msg) = Message::from_vec(reply) else {
        return false;
    };
    msg.metadata.id == id
        && msg.metadata.response_code == ResponseCode::NoError
        && msg.answers.len() == 1
        && matches!(&msg.answers[0].data, RData::A(a) if a.0 == ip)
}

/// Polls the DNS until it answers exactly `ip`; returns when it first did, None after GIVE_UP.
fn poll_until(
    sock: &UdpSocket,
    ns: &str,
    ip: Ipv4Addr,
    poll: Duration,
    id: &mut u16,
) -> Option<Instant> {
    let deadline = Instant::now() + GIVE_UP;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        *id = id.wrapping_add(1);
        let q = a_query(ns, *id);
        if sock.send(&q).is_err() {
            std::thread::sleep(poll);
            continue;
        }
        // Replies to earlier (timed-out) queries are skipped by their ID.
        while let Ok(n) = sock.recv(&mut buf) {
            if buf[..n].get(..2) == Some(&id.to_be_bytes()[..]) {
                if answers_exactly(&buf[..n], *id, ip) {
                    return Some(Instant::now());
                }
                break;
            }
        }
        std::thread::sleep(poll);
    }
    None
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentiles(mut v: Vec<f64>) -> [f64; 4] {
    if v.is_empty() {
        return [f64::NAN; 4];
    }
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    [at(0.5), at(0.9), at(0.99), *v.last().unwrap()]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    let ns = args.namespace.clone();
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);

    // A leftover from an interrupted run would make the creates fail.
    let _ = services.delete(SERVICE, &DeleteParams::default()).await;
    let _ = slices.delete(SLICE, &DeleteParams::default()).await;
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": SERVICE},
        "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 8080}]},
    }))?;
    services.create(&PostParams::default(), &service).await?;
    let first = slice_ip(60_000);
    let created = slices
        .create(&PostParams::default(), &slice_object(&ns, first, None))
        .await?;
    let mut rv = created.metadata.resource_version.clone();

    // The reference: the API's own watch delivery of each write, keyed by the IP it carries.
    let seen: Arc<Mutex<BTreeMap<Ipv4Addr, Instant>>> = Arc::default();
    let watch_params = WatchParams::default().fields(&format!("metadata.name={SLICE}"));
    let mut stream = slices
        .watch(&watch_params, rv.as_deref().unwrap_or("0"))
        .await?
        .boxed();
    let seen_by_watch = seen.clone();
    let watcher = tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            let now = Instant::now();
            if let Ok(WatchEvent::Modified(s) | WatchEvent::Added(s)) = event {
                for e in &s.endpoints {
                    for a in &e.addresses {
                        if let Ok(ip) = a.parse() {
                            seen_by_watch.lock().entry(ip).or_insert(now);
                        }
                    }
                }
            }
        }
    });

    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.connect(args.dns)?;
    sock.set_read_timeout(Some(Duration::from_millis(5)))?;
    let mut id = 0u16;
    let sock = Arc::new(sock);
    // The DNS has the service and its first IP before the measured writes start.
    {
        let (sock, ns, poll) = (sock.clone(), ns.clone(), args.poll);
        let ok = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut id = 0x8000u16;
            while Instant::now() < deadline {
                if poll_until(&sock, &ns, first, poll, &mut id).is_some() {
                    return true;
                }
            }
            false
        })
        .await?;
        anyhow::ensure!(ok, "the DNS at {} never answered {first}", args.dns);
    }

    let mut ack = Vec::new();
    let mut watch = Vec::new();
    let mut ack_to_answer = Vec::new();
    let mut sent_to_answer = Vec::new();
    let mut misses = 0;
    // (ack → answer, write index): the slowest ones are printed, to tell warm-up from stalls.
    let mut worst: Vec<(f64, usize)> = Vec::new();
    for i in 0..args.writes {
        let ip = slice_ip(i);
        let sent = Instant::now();
        let updated = slices
            .replace(
                SLICE,
                &PostParams::default(),
                &slice_object(&ns, ip, rv.take()),
            )
            .await
            .with_context(|| format!("write {i}"))?;
        let acked = Instant::now();
        rv = updated.metadata.resource_version;
        let (s, n, poll) = (sock.clone(), ns.clone(), args.poll);
        let answered = tokio::task::spawn_blocking(move || {
            let r = poll_until(&s, &n, ip, poll, &mut id);
            (r, id)
        })
        .await?;
        id = answered.1;
        ack.push(millis(acked - sent));
        match answered.0 {
            Some(at) => {
                worst.push((millis(at.saturating_duration_since(acked)), i));
                ack_to_answer.push(millis(at.saturating_duration_since(acked)));
                sent_to_answer.push(millis(at - sent));
            }
            None => misses += 1,
        }
        // The watcher normally has it by now; give it a moment if not.
        let deadline = Instant::now() + GIVE_UP;
        loop {
            if let Some(at) = seen.lock().get(&ip) {
                watch.push(millis(at.saturating_duration_since(sent)));
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    watcher.abort();
    let _ = slices.delete(SLICE, &DeleteParams::default()).await;
    let _ = services.delete(SERVICE, &DeleteParams::default()).await;

    println!(
        "write-to-answer over {} EndpointSlice writes ({} answered, {} missed after {:?}; {} watch events seen), ms:",
        args.writes,
        sent_to_answer.len(),
        misses,
        GIVE_UP,
        watch.len()
    );
    println!("| measure | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|");
    let rows = [
        ("sent → ack (PUT round trip)", percentiles(ack)),
        ("sent → watch event (reference)", percentiles(watch.clone())),
        ("ack → DNS answer", percentiles(ack_to_answer)),
        ("sent → DNS answer", percentiles(sent_to_answer.clone())),
    ];
    for (name, [p50, p90, p99, max]) in &rows {
        println!("| {name} | {p50:.2} | {p90:.2} | {p99:.2} | {max:.2} |");
    }
    let (w, a) = (rows[1].1, rows[3].1);
    println!(
        "ratio sent→answer / sent→watch: p50 {:.2}, p99 {:.2}",
        a[0] / w[0],
        a[2] / w[2]
    );
    worst.sort_by(|a, b| b.0.total_cmp(&a.0));
    let slowest: Vec<String> = worst
        .iter()
        .take(3)
        .map(|(ms, i)| format!("write {i}: {ms:.2} ms"))
        .collect();
    println!("slowest ack → answer: {}", slowest.join(", "));
    anyhow::ensure!(
        misses == 0,
        "{misses} writes never showed up in the DNS answers"
    );
    Ok(())
}
