//! Store benchmark (not a test): `cargo bench -p muster-store`.
//!
//! Prints durable creates/s and write latency with 1 and 16 concurrent writers, list times at
//! 10,000 and 100,000 pod-sized objects, watch fan-out to 100 watchers, resident memory with
//! 100,000 objects, and the time to reopen that store. Every write is a durable commit to a
//! redb file in a temporary directory on the same disk as /tmp.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_store::{Event, RedbStore, Store, StoreOptions};
use serde_json::{Value, json};

const POD_PREFIX: &str = "/registry/core/pods/";
/// Set on the child process that measures a freshly opened store's memory.
const RSS_PROBE_ENV: &str = "MUSTER_STORE_BENCH_RSS_PROBE";

fn main() {
    if let Ok(dir) = std::env::var(RSS_PROBE_ENV) {
        return rss_probe(Path::new(&dir));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    println!("load average at start: {}", load_average());
    println!(
        "pod object: {} bytes of JSON",
        serde_json::to_vec(&pod("ns-0", "web-0")).unwrap().len()
    );

    // Each configuration twice, interleaved, so that load from other processes on the
    // machine hits both hole-filling settings alike.
    for round in 1..=2 {
        for writers in [1, 16] {
            for fill_holes in [true, false] {
                let dir = tempfile::tempdir().unwrap();
                let store = open_with(dir.path(), fill_holes);
                // Warm up the file and the writer before measuring.
                create_pods(&store, "warmup", writers, 200).await;
                let count = if writers == 1 { 2_000 } else { 20_000 };
                let cpu_before = cpu_seconds();
                let (elapsed, mut latencies) = create_pods(&store, "bench", writers, count).await;
                let cpu_per_create = (cpu_seconds() - cpu_before) / count as f64;
                latencies.sort_by(f64::total_cmp);
                let stats = store.stats();
                println!(
                    "round {round}: durable creates, {writers:>2} writer(s), fill_holes={fill_holes:<5}: {:>6.0} creates/s  p50 {:.2} ms  p99 {:.2} ms  ({count} creates in {:.2} s, {:.1} writes per commit, {:.0} us CPU per create incl. client)",
                    count as f64 / elapsed.as_secs_f64(),
                    percentile(&latencies, 0.50),
                    percentile(&latencies, 0.99),
                    elapsed.as_secs_f64(),
                    stats.committed_writes as f64 / stats.commits.max(1) as f64,
                    cpu_per_create * 1e6,
                );
            }
        }
    }

    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        // 10 namespaces of 10,000 pods: one namespace is a 10,000 list, all of them 100,000.
        let load = Instant::now();
        for ns in 0..10 {
            create_pods(&store, &format!("ns-{ns}"), 16, 10_000).await;
        }
        println!(
            "loaded 100,000 pods with 16 writers in {:.1} s",
            load.elapsed().as_secs_f64()
        );
        for (what, prefix, expected) in [
            ("10,000", format!("{POD_PREFIX}ns-3/"), 10_000),
            ("100,000", POD_PREFIX.to_string(), 100_000),
        ] {
            let mut times = Vec::new();
            for _ in 0..7 {
                let start = Instant::now();
                let list = store.list(&prefix, None, None).await.unwrap();
                times.push(start.elapsed().as_secs_f64() * 1e3);
                assert_eq!(list.items.len(), expected);
            }
            times.sort_by(f64::total_cmp);
            println!(
                "list {what:>7} pods: median {:.2} ms, max {:.2} ms (7 runs)",
                times[3], times[6]
            );
        }
        watch_fan_out(&store).await;
    }

    // A fresh process opens the store: restart cost and the memory 100,000 pods hold, free of
    // this process's earlier allocations.
    let probe = std::process::Command::new(std::env::current_exe().unwrap())
        .env(RSS_PROBE_ENV, dir.path())
        .output()
        .expect("run the memory probe");
    print!("{}", String::from_utf8_lossy(&probe.stdout));
    let db_size = std::fs::metadata(dir.path().join("store.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!("redb file size: {} MiB", db_size / (1024 * 1024));
    println!(
        "fsync of a 4 KiB write on this disk: {}",
        fsync_cost(dir.path())
    );
    println!("load average at end: {}", load_average());
}

fn rss_probe(dir: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let _guard = runtime.enter();
    let before = resident_kib();
    let start = Instant::now();
    let store = open(dir);
    let reopen = start.elapsed();
    let after = resident_kib();
    println!(
        "fresh process opens {} objects in {:.0} ms; resident memory {} MiB ({} MiB before opening)",
        store.len(),
        reopen.as_secs_f64() * 1e3,
        after / 1024,
        before / 1024
    );
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn open(dir: &Path) -> Arc<RedbStore> {
    open_with(dir, StoreOptions::default().fill_holes)
}

fn open_with(dir: &Path, fill_holes: bool) -> Arc<RedbStore> {
    let options = StoreOptions {
        fill_holes,
        ..StoreOptions::default()
    };
    RedbStore::open(&dir.join("store.redb"), options).expect("open store")
}

/// A pod as kubectl and controllers write it, around 1.5 KB of JSON.
fn pod(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": format!("6f1c2a9e-0b7d-4c1e-9a8f-{:0>12}", name.len()),
            "generateName": "web-7d4b9c8f6-",
            "creationTimestamp": "2026-11-23T12:00:00Z",
            "labels": {"app": "web", "pod-template-hash": "7d4b9c8f6", "tier": "frontend"},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c8f6",
                "uid": "0e5d3b2a-1111-4c1e-9a8f-222233334444",
                "controller": true, "blockOwnerDeletion": true
            }]
        },
        "spec": {
            "containers": [{
                "name": "web",
                "image": "registry.example/web:1.27.3",
                "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent"
            }],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "nodeName": "node-1",
            "enableServiceLinks": true
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-23T12:00:03Z"},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": "2026-11-23T12:00:03Z"},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-23T12:00:00Z"}
            ],
            "hostIP": "10.250.0.1",
            "podIP": "10.244.1.17",
            "podIPs": [{"ip": "10.244.1.17"}],
            "startTime": "2026-11-23T12:00:00Z",
            "containerStatuses": [{
                "name": "web", "ready": true, "restartCount": 0, "started": true,
                "image": "registry.example/web:1.27.3", "imageID": "",
                "containerID": "muster://4b1f0c3e9d2a",
                "state": {"running": {"startedAt": "2026-11-23T12:00:02Z"}}
            }],
            "qosClass": "Burstable"
        }
    })
}

/// Creates `count` pods in `namespace` from `writers` concurrent tasks. Returns the wall time
/// and every write's latency in milliseconds.
async fn create_pods(
    store: &Arc<RedbStore>,
    namespace: &str,
    writers: usize,
    count: usize,
) -> (Duration, Vec<f64>) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            let namespace = namespace.to_string();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for i in (w..count).step_by(writers) {
                    let name = format!("web-{i:06}");
                    let key = format!("{POD_PREFIX}{namespace}/{name}");
                    let value = pod(&namespace, &name);
                    let write = Instant::now();
                    store.create(&key, value).await.expect("create");
                    latencies.push(write.elapsed().as_secs_f64() * 1e3);
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(count);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    (start.elapsed(), latencies)
}

/// 100 watchers on all pods. Live: 16 writers create 5,000 pods while the watchers read;
/// reports the delivery rate and how far the slowest watcher trails the last write. Replay:
/// 100 new watchers start from before those writes and drain them from the history, which
/// measures delivery alone, without the disk.
async fn watch_fan_out(store: &Arc<RedbStore>) {
    const WATCHERS: usize = 100;
    const EVENTS: usize = 5_000;
    let from = store.revision();
    let start = Instant::now();
    let readers = spawn_readers(store, from, WATCHERS, EVENTS).await;
    let (write_time, _) = create_pods(store, "watched", 16, EVENTS).await;
    let writes_done = Instant::now();
    let mut last = start;
    for reader in readers {
        last = last.max(reader.await.unwrap());
    }
    println!(
        "watch fan-out, live: {WATCHERS} watchers x {EVENTS} events in {:.2} s = {:.0} events/s; writes took {:.2} s, the slowest watcher had everything {:.1} ms after the last write",
        last.duration_since(start).as_secs_f64(),
        (WATCHERS * EVENTS) as f64 / last.duration_since(start).as_secs_f64(),
        write_time.as_secs_f64(),
        last.saturating_duration_since(writes_done).as_secs_f64() * 1e3,
    );
    let start = Instant::now();
    let readers = spawn_readers(store, from, WATCHERS, EVENTS).await;
    let mut last = start;
    for reader in readers {
        last = last.max(reader.await.unwrap());
    }
    let elapsed = last.duration_since(start).as_secs_f64();
    println!(
        "watch fan-out, replay from history: {WATCHERS} watchers x {EVENTS} events in {:.3} s = {:.0} events/s",
        elapsed,
        (WATCHERS * EVENTS) as f64 / elapsed
    );
}

/// Watchers from `from`, each counting `events` puts; each task returns when it has them all.
async fn spawn_readers(
    store: &Arc<RedbStore>,
    from: u64,
    watchers: usize,
    events: usize,
) -> Vec<tokio::task::JoinHandle<Instant>> {
    let mut readers = Vec::new();
    for _ in 0..watchers {
        let mut stream = store.watch(POD_PREFIX, from).await.unwrap();
        readers.push(tokio::spawn(async move {
            let mut received = 0;
            while received < events {
                match stream.next().await {
                    Some(Ok(Event::Put { .. })) => received += 1,
                    Some(Ok(_)) => {}
                    Some(Err(error)) => panic!("watcher ended: {error}"),
                    None => panic!("watch closed"),
                }
            }
            Instant::now()
        }));
    }
    readers
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// User plus system CPU time of this process so far, from /proc (clock ticks of 10 ms).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
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

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// Median and p99 of 200 fsyncs after a 4 KiB write, for comparison with the commit latency.
fn fsync_cost(dir: &Path) -> String {
    use std::io::{Seek, SeekFrom, Write};
    let path = dir.join("fsync-probe");
    let Ok(mut file) = std::fs::File::create(&path) else {
        return "unavailable".into();
    };
    let mut times = Vec::new();
    for i in 0..200u64 {
        let _ = file.seek(SeekFrom::Start((i % 16) * 4096));
        let _ = file.write_all(&[0x5a; 4096]);
        let start = Instant::now();
        let _ = file.sync_all();
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let _ = std::fs::remove_file(&path);
    times.sort_by(f64::total_cmp);
    format!(
        "p50 {:.3} ms, p99 {:.3} ms",
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    )
}
