//! As root: pods in their own network namespaces on a node bridge, with their own IP, host
//! name, resolv.conf and hosts; exec and logs through the agent's server, driven by kube-rs's
//! client (which speaks the same WebSocket protocol as kubectl).
//!
//! Each test re-runs itself under `unshare --net`, so the "node" is a private network
//! namespace with no route off the machine; pod namespaces are named after random UIDs and
//! removed by name afterwards, also when the test fails.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, LogParams};
use muster_agent::backoff::BackoffSettings;
use muster_agent::cidr::Ipv4Cidr;
use muster_agent::dnsfiles::{ClusterDns, HostDns};
use muster_agent::env::StaticEnvSources;
use muster_agent::ipam::Ipam;
use muster_agent::net::{self, NetState, NodeNetworkConfig, PodNetNames};
use muster_agent::pod::{PodContext, PodTable, RuntimeSettings, run_pod};
use muster_agent::server::{ServerState, serve};
use muster_agent::status::PodRuntime;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const INNER: &str = "MUSTER_AGENT_NETNS_TEST";

/// True in the re-executed copy that runs inside a private network namespace.
fn isolated(test: &str) -> bool {
    if std::env::var(INNER).as_deref() == Ok(test) {
        return true;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping {test}: needs root (network namespaces, veth, bridge)");
        return false;
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

fn unique_uid(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{:06x}{:06x}-{tag}",
        std::process::id() & 0xffffff,
        nanos & 0xffffff
    )
}

/// Removes pod namespaces by name when dropped (also on panic).
struct Cleanup(Vec<PodNetNames>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for names in self.0.iter().filter(|n| n.netns_path().exists()) {
            let _ = Command::new("ip")
                .args(["netns", "del", &names.netns])
                .status();
        }
    }
}

fn node_config() -> NodeNetworkConfig {
    NodeNetworkConfig {
        bridge: "muster0".into(),
        node_subnet: "10.244.0.0/24".parse().unwrap(),
        blackholes: vec![
            "10.244.0.0/16".parse().unwrap(),
            "10.96.0.0/12".parse().unwrap(),
        ],
        local_addresses: vec!["10.96.0.10".parse().unwrap()],
    }
}

fn settings(dir: &std::path::Path) -> Arc<RuntimeSettings> {
    Arc::new(RuntimeSettings {
        node_name: "node-a".into(),
        pods_dir: dir.join("pods"),
        backoff: BackoffSettings::default(),
        workload_exe: env!("CARGO_BIN_EXE_muster-agent-workload").into(),
        cluster_dns: ClusterDns {
            nameserver: "10.96.0.10".parse().unwrap(),
            domain: "cluster.local".into(),
        },
        host_dns: HostDns::default(),
        host_ip: "127.0.0.1".parse().unwrap(),
        isolated: true,
    })
}

async fn wait_until(ctx: &PodContext, what: &str, cond: impl Fn(&PodRuntime) -> bool) {
    let mut rx = ctx.runtime.subscribe();
    let ok = tokio::time::timeout(Duration::from_secs(15), async {
        while !cond(&rx.borrow_and_update()) {
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(
        ok.is_ok(),
        "timed out waiting for {what}: {:#?}",
        ctx.runtime.borrow()
    );
}

struct Node {
    subnet: Ipv4Cidr,
    ipam: Ipam,
    settings: Arc<RuntimeSettings>,
    cleanup: Cleanup,
    table: PodTable,
}

impl Node {
    async fn start_pod(&mut self, pod: serde_json::Value) -> Arc<PodContext> {
        let pod: Pod = serde_json::from_value(pod).unwrap();
        let uid = pod.metadata.uid.clone().unwrap();
        let ip = self.ipam.allocate(&uid).unwrap();
        let names = PodNetNames::for_uid(&uid);
        self.cleanup.0.push(names.clone());
        net::setup_pod(&names, "muster0", self.subnet, ip)
            .await
            .unwrap();
        let ctx = PodContext::prepare(
            pod,
            IpAddr::V4(ip),
            Some(names.netns_path()),
            self.settings.clone(),
            StaticEnvSources::default(),
        )
        .unwrap();
        self.table
            .write()
            .insert((ctx.namespace.clone(), ctx.name.clone()), ctx.clone());
        tokio::spawn(run_pod(ctx.clone()));
        ctx
    }
}

async fn exec(
    api: &Api<Pod>,
    pod: &str,
    ap: &AttachParams,
    cmd: &[&str],
    stdin: Option<&[u8]>,
) -> (String, String, Option<i32>) {
    let mut proc = api.exec(pod, cmd.to_vec(), ap).await.expect("exec upgrade");
    if let Some(input) = stdin {
        let mut w = proc.stdin().unwrap();
        w.write_all(input).await.unwrap();
        w.shutdown().await.unwrap();
        drop(w);
    }
    let mut out = String::new();
    let mut err = String::new();
    let stdout = proc.stdout();
    let stderr = proc.stderr();
    let status = proc.take_status().unwrap();
    let read_out = async {
        if let Some(mut s) = stdout {
            s.read_to_string(&mut out).await.unwrap();
        }
    };
    let read_err = async {
        if let Some(mut s) = stderr {
            s.read_to_string(&mut err).await.unwrap();
        }
    };
    tokio::join!(read_out, read_err);
    let status = tokio::time::timeout(Duration::from_secs(10), status)
        .await
        .expect("status in time");
    let code = status.map(|s| {
        if s.status.as_deref() == Some("Success") {
            0
        } else {
            s.details
                .and_then(|d| d.causes)
                .and_then(|c| {
                    c.into_iter()
                        .find(|c| c.reason.as_deref() == Some("ExitCode"))
                })
                .and_then(|c| c.message)
                .and_then(|m| m.parse().ok())
                .unwrap_or(-1)
        }
    });
    (out, err, code)
}

#[test]
fn pods_get_their_own_network_and_files_exec_and_logs_work() {
    if !isolated("pods_get_their_own_network_and_files_exec_and_logs_work") {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(pods_body());
}

async fn pods_body() {
    let dir = tempfile::tempdir().unwrap();
    let node_cfg = node_config();
    net::setup_node(&node_cfg).await.unwrap();
    let routes = net::ip(&["route", "show"]).await.unwrap();
    assert!(routes.contains("blackhole 10.244.0.0/16"), "{routes}");
    assert!(routes.contains("blackhole 10.96.0.0/12"), "{routes}");

    let mut node = Node {
        subnet: node_cfg.node_subnet,
        ipam: Ipam::in_memory(node_cfg.node_subnet).unwrap(),
        settings: settings(dir.path()),
        cleanup: Cleanup(vec![]),
        table: PodTable::default(),
    };
    let web_uid = unique_uid("web");
    let web = node
        .start_pod(json!({
            "metadata": {"name": "web-0", "namespace": "default", "uid": web_uid},
            "spec": {"hostname": "web-0", "subdomain": "web", "containers": [
                {"name": "show", "command": ["sh", "-c",
                    "hostname; hostname -f; cat /etc/resolv.conf /etc/hosts; ip -4 -o addr show eth0; echo done; sleep 1000"]},
                {"name": "http", "ports": [{"containerPort": 8080}]}]}
        }))
        .await;
    let client_pod = node
        .start_pod(json!({
            "metadata": {"name": "client", "namespace": "team", "uid": unique_uid("cli")},
            "spec": {"containers": [{"name": "c", "command": ["sleep", "1000"],
                                     "env": [{"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}]}
        }))
        .await;
    wait_until(&web, "web running", |rt| {
        rt.containers.iter().all(|c| c.is_running())
    })
    .await;
    wait_until(&client_pod, "client running", |rt| {
        rt.containers[0].is_running()
    })
    .await;
    let web_ip = web.pod_ip;
    assert_eq!(web_ip, IpAddr::V4(Ipv4Addr::new(10, 244, 0, 2)));

    // what the first container saw of its pod
    let log_path = dir.path().join(format!("pods/{web_uid}/logs/show/0.log"));
    let mut seen = String::new();
    for _ in 0..100 {
        seen = std::fs::read_to_string(&log_path).unwrap_or_default();
        if seen.contains("done") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for want in [
        " F web-0\n",
        " F web-0.web.default.svc.cluster.local\n",
        " F nameserver 10.96.0.10\n",
        " F search default.svc.cluster.local svc.cluster.local cluster.local\n",
        " F options ndots:5\n",
        " F 10.244.0.2\tweb-0.web.default.svc.cluster.local\tweb-0\n",
        "inet 10.244.0.2/24",
    ] {
        assert!(seen.contains(want), "missing {want:?} in:\n{seen}");
    }

    // the default workload answers from the pod's IP, reached over the bridge
    let mut reply = String::new();
    for _ in 0..100 {
        if let Ok(mut s) = tokio::net::TcpStream::connect((web_ip, 8080)).await {
            s.read_to_string(&mut reply).await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reply, "web-0\n");

    // something listening on the DNS service IP in the node namespace is reachable from pods
    let dns_side = tokio::net::TcpListener::bind(("10.96.0.10", 8053))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, peer)) = dns_side.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let body = format!("from {}", peer.ip());
            let _ = s
                .write_all(
                    format!(
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
        }
    });

    // the agent's server, used the way the API server proxies to it
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let token = "test-token".to_string();
    tokio::spawn(serve(
        listener,
        ServerState {
            token: token.clone(),
            pods: node.table.clone(),
        },
    ));
    let mut config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
    config.headers.push((
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    ));
    let client = kube::Client::try_from(config).unwrap();
    let default_ns: Api<Pod> = Api::namespaced(client.clone(), "default");
    let team_ns: Api<Pod> = Api::namespaced(client.clone(), "team");

    // (namespace, pod, command, stdout, stderr, exit code)
    type Case<'a> = (&'a Api<Pod>, &'a str, Vec<&'a str>, &'a str, &'a str, i32);
    let cases: Vec<Case> = vec![
        (&default_ns, "web-0", vec!["hostname"], "web-0\n", "", 0),
        (
            &default_ns,
            "web-0",
            vec!["sh", "-c", "echo out; echo err >&2; exit 3"],
            "out\n",
            "err\n",
            3,
        ),
        (
            &default_ns,
            "web-0",
            vec!["no-such-command"],
            "",
            "exec: \"no-such-command\": executable file not found in $PATH\n",
            127,
        ),
        (
            &default_ns,
            "web-0",
            vec!["curl", "-s", "http://10.96.0.10:8053/"],
            "from 10.244.0.2",
            "",
            0,
        ),
        (
            &team_ns,
            "client",
            vec!["curl", "-s", "http://10.244.0.2:8080/"],
            "web-0\n",
            "",
            0,
        ),
        (
            &team_ns,
            "client",
            vec![
                "sh",
                "-c",
                "echo $MY_IP; hostname; grep search /etc/resolv.conf",
            ],
            "10.244.0.3\nclient\nsearch team.svc.cluster.local svc.cluster.local cluster.local\n",
            "",
            0,
        ),
    ];
    for (api, pod, cmd, want_out, want_err, want_code) in cases {
        let ap = if pod == "client" {
            AttachParams::default().stderr(true)
        } else {
            AttachParams::default().container("show").stderr(true)
        };
        let got = exec(api, pod, &ap, &cmd, None).await;
        assert_eq!(
            got,
            (want_out.to_string(), want_err.to_string(), Some(want_code)),
            "{pod} {cmd:?}"
        );
    }
    // stdin, closed by the client
    let ap = AttachParams::default()
        .container("show")
        .stdin(true)
        .stderr(false);
    let got = exec(
        &default_ns,
        "web-0",
        &ap,
        &["sh", "-c", "tr a-z A-Z"],
        Some(b"hello\n"),
    )
    .await;
    assert_eq!(got, ("HELLO\n".to_string(), String::new(), Some(0)));
    // a terminal
    let ap = AttachParams::interactive_tty()
        .container("show")
        .stdin(false);
    let (out, _, code) = exec(
        &default_ns,
        "web-0",
        &ap,
        &["sh", "-c", "tty; echo $TERM"],
        None,
    )
    .await;
    assert!(
        out.starts_with("/dev/pts/") && out.contains("xterm"),
        "{out:?}"
    );
    assert_eq!(code, Some(0));

    // logs: tail, timestamps, default container, errors
    let logs = default_ns
        .logs(
            "web-0",
            &LogParams {
                container: Some("show".into()),
                tail_lines: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        logs.starts_with("2: eth0    inet 10.244.0.2/24") || logs.contains("inet 10.244.0.2/24"),
        "{logs:?}"
    );
    assert!(logs.ends_with("done\n"), "{logs:?}");
    let stamped = default_ns
        .logs(
            "web-0",
            &LogParams {
                container: Some("show".into()),
                tail_lines: Some(1),
                timestamps: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (ts, rest) = stamped.split_once(' ').unwrap();
    assert!(
        ts.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
        "{stamped:?}"
    );
    assert_eq!(rest, "done\n");
    let err = default_ns
        .logs(
            "web-0",
            &LogParams {
                container: Some("show".into()),
                previous: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("previous terminated container"),
        "{err}"
    );
    let err = default_ns
        .logs("nope", &LogParams::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("not running on this node"),
        "{err}"
    );
    // without the token: 401
    let anonymous = kube::Client::try_from(kube::Config::new(
        format!("http://127.0.0.1:{port}").parse().unwrap(),
    ))
    .unwrap();
    let err = Api::<Pod>::namespaced(anonymous, "default")
        .logs("web-0", &LogParams::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Unauthorized"), "{err}");

    // follow: new lines stream until the container ends
    let follower = Api::<Pod>::namespaced(client.clone(), "default");
    let follow = tokio::spawn(async move {
        use futures::AsyncBufReadExt;
        let stream = follower
            .log_stream(
                "web-0",
                &LogParams {
                    container: Some("http".into()),
                    follow: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let mut lines = stream.lines();
        let mut got = Vec::new();
        while let Some(Ok(line)) = futures::StreamExt::next(&mut lines).await {
            got.push(line);
        }
        got
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = tokio::net::TcpStream::connect((web_ip, 8080))
        .await
        .unwrap();
    s.write_all(b"GET /followed HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = String::new();
    s.read_to_string(&mut sink).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;

    // deletion: containers stop, the network goes away
    for ctx in [&web, &client_pod] {
        ctx.request_stop(Duration::from_secs(2));
    }
    wait_until(&web, "web stopped", |rt| {
        rt.containers.iter().all(|c| !c.is_running())
    })
    .await;
    wait_until(&client_pod, "client stopped", |rt| {
        !rt.containers[0].is_running()
    })
    .await;
    let followed = tokio::time::timeout(Duration::from_secs(5), follow)
        .await
        .expect("follow ends")
        .unwrap();
    assert!(
        followed
            .iter()
            .any(|l| l.contains("GET /followed HTTP/1.1")),
        "{followed:?}"
    );
    for names in &node.cleanup.0 {
        net::teardown_pod(names).await.unwrap();
        assert!(!names.netns_path().exists());
        assert!(net::ip(&["link", "show", &names.host_veth]).await.is_err());
    }

    // a crash leaves namespaces behind; the next start removes exactly the recorded ones
    let state_path = dir.path().join("net.json");
    let uid = unique_uid("left");
    let names = PodNetNames::for_uid(&uid);
    node.cleanup.0.push(names.clone());
    {
        let mut state = NetState::open(&state_path).unwrap();
        state.record(&uid, &names).unwrap();
        net::setup_pod(
            &names,
            "muster0",
            node.subnet,
            Ipv4Addr::new(10, 244, 0, 50),
        )
        .await
        .unwrap();
    }
    assert!(names.netns_path().exists());
    let mut restarted = NetState::open(&state_path).unwrap();
    let removed = restarted.remove_leftovers().await;
    assert_eq!(removed, vec![names.netns.clone()]);
    assert!(!names.netns_path().exists());
    assert!(restarted.recorded().is_empty());

    net::teardown_node(&node_cfg).await.unwrap();
    assert!(net::ip(&["link", "show", "muster0"]).await.is_err());
}
