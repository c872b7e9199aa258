//! The agent against a real (in-process) muster API server: Node and Lease, pods bound to the
//! node run and report kubelet-style status, crash loops show, deletion completes.
//! As root it runs inside a private network namespace (pods get 10.244.x IPs); otherwise it
//! checks the degraded mode (loopback pod IPs).

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, AttachParams, DeleteParams, LogParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use muster_agent::AgentConfig;
use muster_agent::backoff::BackoffSettings;
use serde_json::json;
use tokio::io::AsyncReadExt;

const INNER: &str = "MUSTER_AGENT_KUBE_LOOP_TEST";

/// The API server's `pods/log` and `pods/exec`, forwarded to the agent as `muster up` does.
struct ToAgent {
    token: String,
}

impl muster_apiserver::NodeProxy for ToAgent {
    fn proxy(
        &self,
        req: muster_apiserver::NodeProxyRequest,
    ) -> futures::future::BoxFuture<'static, http::Response<axum::body::Body>> {
        let token = self.token.clone();
        Box::pin(async move {
            muster_agent::proxy::forward(
                req.node_address,
                &token,
                &req.namespace,
                &req.pod,
                &req.subresource,
                req.request,
            )
            .await
        })
    }
}

fn maybe_isolated(test: &str) -> bool {
    if std::env::var(INNER).as_deref() == Ok(test) || !nix::unistd::geteuid().is_root() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("{test}: not root, checking the degraded (loopback) mode only");
        }
        return true;
    }
    let status = Command::new("unshare")
        .args(["--net", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INNER, test)
        .status()
        .expect("run unshare");
    assert!(
        status.success(),
        "{test} failed inside its network namespace"
    );
    false
}

async fn eventually<T>(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn condition(pod: &Pod, kind: &str) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
}

#[test]
fn agent_runs_pods_bound_to_its_node() {
    if !maybe_isolated("agent_runs_pods_bound_to_its_node") {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(body());
}

async fn body() {
    let root = nix::unistd::geteuid().is_root();
    let dir = tempfile::tempdir().unwrap();
    if root {
        // the private namespace starts with lo down
        assert!(
            Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .unwrap()
                .success()
        );
    }
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

    api.set_node_proxy(std::sync::Arc::new(ToAgent {
        token: api.token().to_string(),
    }));
    let mut agent_config = AgentConfig::new("node-t", dir.path().join("agent"), api.token());
    agent_config.workload_exe = env!("CARGO_BIN_EXE_muster-agent-workload").into();
    agent_config.bridge = "mtest0".into();
    agent_config.backoff = BackoffSettings {
        initial: Duration::from_millis(500),
        max: Duration::from_secs(2),
        reset_after: Duration::from_secs(600),
    };
    agent_config.lease_renew = Duration::from_millis(500);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(muster_agent::run_until(
        client.clone(),
        agent_config,
        async {
            let _ = stop_rx.await;
        },
    ));

    // the Node: Ready, with the agent's port, and a Lease
    let nodes: Api<Node> = Api::all(client.clone());
    let node = eventually("node Ready", Duration::from_secs(10), async || {
        let n = nodes.get_opt("node-t").await.ok()??;
        let ready = n
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(n)
    })
    .await;
    let spec = node.spec.clone().unwrap();
    assert_eq!(spec.pod_cidr.as_deref(), Some("10.244.0.0/24"));
    let status = node.status.clone().unwrap();
    let port = status
        .daemon_endpoints
        .unwrap()
        .kubelet_endpoint
        .unwrap()
        .port;
    assert!(port > 0);
    let addresses = status.addresses.unwrap();
    assert!(
        addresses
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == "127.0.0.1")
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = eventually("lease", Duration::from_secs(5), async || {
        leases.get_opt("node-t").await.ok()?
    })
    .await;
    let first_renew = lease.spec.unwrap().renew_time.unwrap();
    eventually("lease renewed", Duration::from_secs(5), async || {
        let l = leases.get_opt("node-t").await.ok()??;
        (l.spec?.renew_time? != first_renew).then_some(())
    })
    .await;

    // a two-container pod with a readiness probe
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"nodeName": "node-t", "containers": [
            {"name": "http", "image": "nginx", "ports": [{"containerPort": 8080}],
             "readinessProbe": {"httpGet": {"port": 8080, "path": "/"}, "periodSeconds": 1}},
            {"name": "sidecar", "image": "busybox", "command": ["sleep", "1000"]}]}
    }))
    .unwrap();
    let created = Instant::now();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let running = eventually("web Running", Duration::from_secs(10), async || {
        let p = pods.get("web").await.ok()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
    })
    .await;
    let to_running = created.elapsed();
    let ready = eventually("web Ready", Duration::from_secs(10), async || {
        let p = pods.get("web").await.ok()?;
        (condition(&p, "Ready").as_deref() == Some("True")).then_some(p)
    })
    .await;
    let to_ready = created.elapsed();
    eprintln!(
        "figures: create -> Running {to_running:?}, create -> Ready {to_ready:?} (readiness probe period 1 s)"
    );
    let status = ready.status.unwrap();
    let ip = status.pod_ip.clone().unwrap();
    if root {
        assert_eq!(ip, "10.244.0.2");
    } else {
        assert!(ip.starts_with("127.244.0."), "{ip}");
    }
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
    let cs = status.container_statuses.unwrap();
    assert_eq!(cs.len(), 2);
    assert!(
        cs.iter()
            .all(|c| c.ready && c.state.as_ref().unwrap().running.is_some()),
        "{cs:?}"
    );
    assert_eq!(condition(&running, "PodScheduled").as_deref(), Some("True"));
    // the default workload answers on the pod IP
    let reply = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-s", "--max-time", "2", &format!("http://{ip}:8080/")])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&reply.stdout), "web\n");

    // exec and logs through the API server, as kubectl uses them
    let mut proc = pods
        .exec(
            "web",
            ["sh", "-c", "hostname; echo oops >&2; exit 4"],
            &AttachParams::default().container("sidecar").stderr(true),
        )
        .await
        .expect("exec through the API server");
    let (mut out, mut err) = (String::new(), String::new());
    let (stdout, stderr) = (proc.stdout(), proc.stderr());
    let status = proc.take_status().unwrap();
    let (_, _) = tokio::join!(
        async { stdout.unwrap().read_to_string(&mut out).await },
        async { stderr.unwrap().read_to_string(&mut err).await }
    );
    let status = status.await.unwrap();
    if root {
        // the pod's own UTS namespace (without root it is the host's name)
        assert_eq!(out, "web\n");
    }
    assert_eq!(err, "oops\n");
    let code = status.details.unwrap().causes.unwrap()[0].message.clone();
    assert_eq!(code.as_deref(), Some("4"));
    let logs = pods
        .logs(
            "web",
            &LogParams {
                container: Some("http".into()),
                ..Default::default()
            },
        )
        .await
        .expect("logs through the API server");
    assert!(logs.contains("listening on"), "{logs:?}");

    // a crash loop shows as kubectl expects it
    let crasher: Pod = serde_json::from_value(json!({
        "metadata": {"name": "crasher"},
        "spec": {"nodeName": "node-t", "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "echo bye; exit 3"]}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &crasher).await.unwrap();
    let looped = eventually("CrashLoopBackOff", Duration::from_secs(15), async || {
        let p = pods.get("crasher").await.ok()?;
        let c = p
            .status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .first()?
            .clone();
        let waiting = c.state.as_ref()?.waiting.as_ref()?.reason.clone()?;
        (waiting == "CrashLoopBackOff" && c.restart_count >= 1).then_some(c)
    })
    .await;
    let last = looped.last_state.unwrap().terminated.unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
    // `kubectl logs --previous` through the API server: the last finished run's output
    let previous = pods
        .logs(
            "crasher",
            &LogParams {
                previous: true,
                ..Default::default()
            },
        )
        .await
        .expect("previous logs");
    assert_eq!(previous, "bye\n");

    // kubelet-style events, for `kubectl describe pod`
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    let reasons = eventually("events", Duration::from_secs(5), async || {
        let list = events.list(&Default::default()).await.ok()?;
        let reasons: Vec<(String, String, i32)> = list
            .items
            .iter()
            .filter(|e| e.involved_object.name.as_deref() == Some("crasher"))
            .map(|e| {
                (
                    e.reason.clone().unwrap_or_default(),
                    e.type_.clone().unwrap_or_default(),
                    e.count.unwrap_or(0),
                )
            })
            .collect();
        reasons.iter().any(|r| r.0 == "BackOff").then_some(reasons)
    })
    .await;
    assert!(
        reasons
            .iter()
            .any(|(r, t, _)| r == "Started" && t == "Normal"),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(r, t, _)| r == "BackOff" && t == "Warning"),
        "{reasons:?}"
    );
    let started = reasons.iter().filter(|(r, _, _)| r == "Started").count();
    assert_eq!(
        started, 1,
        "repeats are one event with a count: {reasons:?}"
    );

    // deletion: the agent stops the pod and removes the object
    for name in ["web", "crasher"] {
        pods.delete(name, &DeleteParams::default().grace_period(2))
            .await
            .unwrap();
    }
    let t0 = Instant::now();
    eventually("pods gone", Duration::from_secs(10), async || {
        let web = pods.get_opt("web").await.ok()?;
        let crasher = pods.get_opt("crasher").await.ok()?;
        (web.is_none() && crasher.is_none()).then_some(())
    })
    .await;
    eprintln!(
        "figures: delete (grace 2 s) -> object gone {:?}",
        t0.elapsed()
    );
    if root {
        let left: Vec<String> = std::fs::read_dir("/run/netns")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let state = std::fs::read_to_string(dir.path().join("agent/network.json")).unwrap();
        assert_eq!(
            state.trim(),
            "{}",
            "network state not empty; netns: {left:?}"
        );
    }

    // shutdown removes the node's bridge
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(20), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    if root {
        let out = Command::new("ip")
            .args(["link", "show", "mtest0"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "bridge still there");
    }
    api.shutdown(Duration::from_secs(1)).await;
}
