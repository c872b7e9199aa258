//! Pod start-up on one node, against the in-process API server:
//! - one pod at a time: create -> Running and create -> Ready (no probes), p50/p99;
//! - 100 pods created at once: time until all are Ready;
//! - agent + API server memory growth per running pod.
//!
//! The reference, measured in the same run, is the bare cost of the work a pod cannot avoid:
//! creating a network namespace and a veth pair with `ip` and starting one process in it
//! (as root), or starting one process (without root). Figures are printed as absolute values
//! and as ratios to that reference.
//!
//! Run: `cargo bench -p muster-agent --bench pods` (as root it runs in a private network
//! namespace; `PODS=N` changes the burst size).

use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use serde_json::json;

const INNER: &str = "MUSTER_AGENT_POD_BENCH";

fn main() {
    let root = nix::unistd::geteuid().is_root();
    if root && std::env::var(INNER).is_err() {
        let status = Command::new("unshare")
            .args(["--net", "--"])
            .arg(std::env::current_exe().unwrap())
            .args(std::env::args().skip(1))
            .env(INNER, "1")
            .status()
            .expect("unshare");
        std::process::exit(status.code().unwrap_or(1));
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench(root));
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn reference(root: bool) -> Duration {
    let mut times = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        if root {
            let ns = format!("mbench-ref{}-{i}", std::process::id());
            let run =
                |args: &[&str]| assert!(Command::new("ip").args(args).status().unwrap().success());
            run(&["netns", "add", &ns]);
            let (host, peer) = (format!("mbr{i}a"), format!("mbr{i}b"));
            run(&[
                "link", "add", &host, "type", "veth", "peer", "name", &peer, "netns", &ns,
            ]);
            assert!(
                Command::new("ip")
                    .args(["netns", "exec", &ns, "true"])
                    .status()
                    .unwrap()
                    .success()
            );
            times.push(t.elapsed());
            run(&["netns", "del", &ns]);
        } else {
            assert!(Command::new("true").status().unwrap().success());
            times.push(t.elapsed());
        }
    }
    times.sort();
    percentile(&times, 0.5)
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"bench": "pods"}},
        "spec": {"nodeName": "node-b", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1000"]}]}
    }))
    .unwrap()
}

async fn bench(root: bool) {
    let dir = tempfile::tempdir().unwrap();
    if root {
        assert!(
            Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .unwrap()
                .success()
        );
    }
    let reference = reference(root);
    let api_dir = dir.path().join("api");
    std::fs::create_dir_all(&api_dir).unwrap();
    let store = muster_store::RedbStore::open(
        &api_dir.join("store.redb"),
        muster_store::StoreOptions::default(),
    )
    .unwrap();
    let api = muster_apiserver::start(muster_apiserver::ApiServerConfig {
        data_dir: api_dir.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        service_cidr: "10.96.0.0/12".into(),
        store,
    })
    .await
    .unwrap();
    let kubeconfig = Kubeconfig::read_from(api.kubeconfig_path()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let mut agent_config =
        muster_agent::AgentConfig::new("node-b", dir.path().join("agent"), api.token());
    agent_config.workload_exe = env!("CARGO_BIN_EXE_muster-agent-workload").into();
    agent_config.bridge = "mbench0".into();
    agent_config.shutdown_grace = Duration::from_secs(1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(muster_agent::run_until(
        client.clone(),
        agent_config,
        async {
            let _ = stop_rx.await;
        },
    ));

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // a watch records when each pod is first seen Running and Ready
    let (seen_tx, mut seen_rx) =
        tokio::sync::mpsc::unbounded_channel::<(String, bool, bool, Instant)>();
    let watch_pods = pods.clone();
    tokio::spawn(async move {
        let mut stream = watcher(watch_pods, watcher::Config::default()).boxed();
        while let Some(Ok(ev)) = stream.next().await {
            if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = ev {
                let _ = seen_tx.send((
                    p.metadata.name.clone().unwrap_or_default(),
                    running(&p),
                    ready(&p),
                    Instant::now(),
                ));
            }
        }
    });
    async fn wait_for(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, bool, bool, Instant)>,
        name: &str,
    ) -> (Instant, Instant) {
        let mut at_running = None;
        loop {
            let (n, run, rdy, t) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("pod in time")
                .unwrap();
            if n != name {
                continue;
            }
            if run && at_running.is_none() {
                at_running = Some(t);
            }
            if rdy {
                return (at_running.unwrap_or(t), t);
            }
        }
    }

    let mem_before = rss_kib();
    // one at a time
    let single = 40;
    let (mut to_running, mut to_ready) = (Vec::new(), Vec::new());
    for i in 0..single {
        let name = format!("one-{i}");
        let t0 = Instant::now();
        pods.create(&PostParams::default(), &pod(&name))
            .await
            .unwrap();
        let (r, rd) = wait_for(&mut seen_rx, &name).await;
        to_running.push(r - t0);
        to_ready.push(rd - t0);
    }
    to_running.sort();
    to_ready.sort();

    // a burst
    let burst: usize = std::env::var("PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let t0 = Instant::now();
    for i in 0..burst {
        pods.create(&PostParams::default(), &pod(&format!("burst-{i}")))
            .await
            .unwrap();
    }
    let mut pending: std::collections::HashSet<String> =
        (0..burst).map(|i| format!("burst-{i}")).collect();
    while !pending.is_empty() {
        let (n, _, rdy, _) = tokio::time::timeout(Duration::from_secs(60), seen_rx.recv())
            .await
            .expect("burst in time")
            .unwrap();
        if rdy {
            pending.remove(&n);
        }
    }
    let burst_time = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mem_after = rss_kib();
    let running_pods = single + burst;

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let ratio = |d: Duration| d.as_secs_f64() / reference.as_secs_f64();
    println!(
        "reference ({}): {:.2} ms",
        if root {
            "ip netns add + veth + one process"
        } else {
            "one process"
        },
        ms(reference)
    );
    println!(
        "create -> Running, one at a time ({single} pods): p50 {:.1} ms ({:.1}x ref), p99 {:.1} ms ({:.1}x ref)",
        ms(percentile(&to_running, 0.5)),
        ratio(percentile(&to_running, 0.5)),
        ms(percentile(&to_running, 0.99)),
        ratio(percentile(&to_running, 0.99))
    );
    println!(
        "create -> Ready (no probes): p50 {:.1} ms, p99 {:.1} ms ({:.1}x ref)",
        ms(percentile(&to_ready, 0.5)),
        ms(percentile(&to_ready, 0.99)),
        ratio(percentile(&to_ready, 0.99))
    );
    println!(
        "{burst} pods created at once: all Ready after {:.0} ms ({:.1} ms per pod)",
        ms(burst_time),
        ms(burst_time) / burst as f64
    );
    println!(
        "memory (agent + API server process): {} KiB before, {} KiB with {running_pods} pods: {:.0} KiB per pod",
        mem_before,
        mem_after,
        (mem_after.saturating_sub(mem_before)) as f64 / running_pods as f64
    );

    let _ = pods
        .delete_collection(
            &DeleteParams::default(),
            &kube::api::ListParams::default().labels("bench=pods"),
        )
        .await;
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), agent).await;
    api.shutdown(Duration::from_secs(1)).await;
}
