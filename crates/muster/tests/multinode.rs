//! Several API servers on one etcd cluster, as docs/multi-node.md describes, with real
//! processes on loopback: a three-member etcd, two `muster apiserver --store etcd`, and two
//! `muster controllers --kubeconfig`. A test skips, saying why, only when kubectl or etcd is
//! missing.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::{Server, configmap, etcd_args, tools_present};
use serde_json::{Value, json};

/// A three-member etcd and two API servers on it (same CA and token, different ports).
fn cluster() -> Option<(Etcd, Server, Server)> {
    if !tools_present(false) {
        return None;
    }
    let etcd = Etcd::start(3)?;
    let args = etcd_args(&etcd.endpoints(), "/multinode");
    let a = Server::start_with(&args);
    let b = Server::start_peer(&a, &args);
    Some((etcd, a, b))
}

/// Polls `probe` every 100 ms until it returns `Some`, failing after `limit`.
#[track_caller]
fn wait_for<T>(limit: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_write_through_one_apiserver_is_seen_by_list_and_watch_through_the_other() {
    let Some((_etcd, a, b)) = cluster() else {
        return;
    };
    a.kubectl_stdin(&["create", "-f", "-"], &configmap("first", "1"))
        .ok();
    // A watch through b: the list part shows "first", then changes through a must follow.
    let mut watch = b.kubectl_spawn(&["get", "configmaps", "-w", "-o", "name"]);
    let lines = {
        let stdout = watch.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let next = || {
        lines
            .recv_timeout(Duration::from_secs(20))
            .expect("a watch line within 20 s")
    };
    assert_eq!(next(), "configmap/first");
    let created = a
        .kubectl_stdin(
            &[
                "create",
                "-o",
                "jsonpath={.metadata.resourceVersion}",
                "-f",
                "-",
            ],
            &configmap("second", "2"),
        )
        .ok()
        .stdout;
    assert_eq!(next(), "configmap/second", "b's watch sees a's create");
    let read = b
        .kubectl(&[
            "get",
            "cm",
            "second",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .ok()
        .stdout;
    assert_eq!(read, created, "b reads a's write with its resourceVersion");
    a.kubectl(&["label", "cm", "second", "seen=yes"]).ok();
    assert_eq!(next(), "configmap/second", "b's watch sees a's update");
    let listed = b.kubectl(&["get", "cm", "-o", "name"]).ok().stdout;
    assert!(
        listed.contains("configmap/first\n") && listed.contains("configmap/second\n"),
        "{listed}"
    );
    let _ = watch.kill();
    let _ = watch.wait();

    // Optimistic concurrency across API servers: the same stale object replaced through both
    // at once gives one success and one 409 Conflict, several times over.
    for round in 0..4 {
        let current = a
            .kubectl(&["get", "cm", "second", "-o", "json"])
            .ok()
            .stdout;
        let mut object: Value = serde_json::from_str(&current).expect("configmap JSON");
        let mut with = |value: &str| {
            object["data"]["key"] = json!(value);
            object.to_string()
        };
        let (via_a, via_b) = (with(&format!("a{round}")), with(&format!("b{round}")));
        let (ran_a, ran_b) = std::thread::scope(|scope| {
            let ran_a = scope.spawn(|| a.kubectl_stdin(&["replace", "-f", "-"], &via_a));
            let ran_b = scope.spawn(|| b.kubectl_stdin(&["replace", "-f", "-"], &via_b));
            (ran_a.join().unwrap(), ran_b.join().unwrap())
        });
        let (winner, loser) = match (ran_a.code, ran_b.code) {
            (0, c) if c != 0 => (format!("a{round}"), ran_b),
            (c, 0) if c != 0 => (format!("b{round}"), ran_a),
            _ => panic!("round {round}: want one success and one failure: {ran_a:?} {ran_b:?}"),
        };
        assert!(
            loser.stderr.contains("Error from server (Conflict)"),
            "round {round}: {}",
            loser.stderr
        );
        let stored = b
            .kubectl(&["get", "cm", "second", "-o", "jsonpath={.data.key}"])
            .ok()
            .stdout;
        assert_eq!(
            stored, winner,
            "round {round}: the winner's value is stored"
        );
    }

    // ClusterIPs are allocated with atomic creates in etcd: Services created at the same time
    // through both API servers never share one.
    std::thread::scope(|scope| {
        for i in 0..8 {
            let server = if i % 2 == 0 { &a } else { &b };
            scope.spawn(move || {
                server
                    .kubectl(&[
                        "create",
                        "service",
                        "clusterip",
                        &format!("s{i}"),
                        "--tcp=80",
                    ])
                    .ok()
            });
        }
    });
    let ips = a
        .kubectl(&[
            "get",
            "svc",
            "-l",
            "app",
            "-o",
            "jsonpath={range .items[*]}{.spec.clusterIP}{\"\\n\"}{end}",
        ])
        .ok()
        .stdout;
    let mut ips: Vec<&str> = ips.lines().collect();
    assert_eq!(ips.len(), 8, "{ips:?}");
    ips.sort_unstable();
    ips.dedup();
    assert_eq!(ips.len(), 8, "distinct ClusterIPs");
}

/// A client of one API server, from its kubeconfig.
async fn client(server: &Server) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(server.kubeconfig()).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("client config");
    // A request to a killed API server or a stuck one must not hold a writer up for long.
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(Duration::from_secs(10));
    // Each create is sent once: kube re-sends a POST answered 503/504 by default, and when
    // the first one did land (etcd committed it, but no answer came in time) the second
    // gets 409 AlreadyExists, which would hide what the first answer was.
    config.default_retry = false;
    kube::Client::try_from(config).expect("client")
}

/// One acknowledged create: the name, its resourceVersion and when the 201 came.
struct Ack {
    name: String,
    resource_version: String,
    at: Instant,
}

/// Creates ConfigMaps `{id}-NNNNN` until `until`, each name once, through the first client
/// that answers: a client that cannot reach its API server passes the next write to the other,
/// as a load balancer in front of them would. Returns the acknowledged ones and how many
/// failed (which may or may not have been stored).
async fn write_until(clients: Vec<kube::Client>, id: String, until: Instant) -> (Vec<Ack>, usize) {
    let mut acks = Vec::new();
    let (mut failed, mut current) = (0, 0);
    for i in 0.. {
        if Instant::now() >= until {
            break;
        }
        let name = format!("{id}-{i:05}");
        let body = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name},
            "data": {"writer": id},
        });
        let request = http::Request::post("/api/v1/namespaces/default/configmaps")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .unwrap();
        match clients[current].request::<Value>(request).await {
            Ok(created) => acks.push(Ack {
                resource_version: created["metadata"]["resourceVersion"]
                    .as_str()
                    .expect("resourceVersion")
                    .to_string(),
                name,
                at: Instant::now(),
            }),
            Err(kube::Error::Api(status)) => {
                // A Status from a live API server (503/504 while etcd elects a new leader).
                assert!(status.code >= 500, "{name}: {status:?}");
                failed += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => {
                failed += 1;
                current = (current + 1) % clients.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    (acks, failed)
}

#[test]
fn killing_an_etcd_member_and_an_apiserver_during_writes_loses_no_acknowledged_write() {
    let Some((mut etcd, mut a, b)) = cluster() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (client_a, client_b) = runtime.block_on(async { (client(&a).await, client(&b).await) });
    let start = Instant::now();
    let until = start + Duration::from_secs(10);
    // Two writers start on each API server.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let clients = if w % 2 == 0 {
                vec![client_a.clone(), client_b.clone()]
            } else {
                vec![client_b.clone(), client_a.clone()]
            };
            runtime.spawn(write_until(clients, format!("w{w}"), until))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    // The first endpoint of both API servers' etcd clients, and API server a, crash.
    etcd.kill(0);
    a.kill9();
    let killed = Instant::now();
    let mut acks = Vec::new();
    let mut failed = 0;
    for writer in writers {
        let (mine, errors) = runtime.block_on(writer).unwrap();
        acks.extend(mine);
        failed += errors;
    }
    let before = acks.iter().filter(|ack| ack.at < killed).count();
    let after = acks.len() - before;
    eprintln!("{before} writes acknowledged before the kills, {after} after, {failed} failed");
    assert!(before >= 10, "writes went through before the kills");
    assert!(after >= 10, "the survivors kept serving writes");

    // Every acknowledged write is there, through the surviving API server, with the
    // resourceVersion its 201 carried.
    let listed = runtime.block_on(async {
        let request = http::Request::get("/api/v1/namespaces/default/configmaps")
            .body(Vec::new())
            .unwrap();
        client_b.request::<Value>(request).await.expect("list")
    });
    let stored: std::collections::BTreeMap<&str, &str> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|item| {
            Some((
                item["metadata"]["name"].as_str()?,
                item["metadata"]["resourceVersion"].as_str()?,
            ))
        })
        .collect();
    for ack in &acks {
        assert_eq!(
            stored.get(ack.name.as_str()),
            Some(&ack.resource_version.as_str()),
            "acknowledged write {}",
            ack.name
        );
    }
    // And the cluster keeps serving reads and writes through b with one member down.
    b.kubectl_stdin(&["create", "-f", "-"], &configmap("after", "1"))
        .ok();
    b.kubectl(&["get", "cm", "after"]).ok();
}

/// A `muster controllers` process, SIGKILLed when dropped.
struct Controllers {
    child: Option<Child>,
    log: PathBuf,
}

impl Controllers {
    fn start(kubeconfig: &Path, log: PathBuf) -> Controllers {
        let stderr = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_muster"))
            .arg("controllers")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--leader-elect-lease-duration", "3s"])
            .args(["--leader-elect-retry-period", "500ms"])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starting muster controllers");
        Controllers {
            child: Some(child),
            log,
        }
    }

    /// The Lease holder identity this process uses (the controllers put their PID in it).
    fn identity_prefix(&self) -> String {
        let pid = self.child.as_ref().expect("running").id();
        format!("muster-controllers-{pid}-")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Controllers {
    fn drop(&mut self) {
        self.kill9();
    }
}

const REPLICA_SET: &str = "apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: rs
spec:
  replicas: 2
  selector:
    matchLabels: {app: rs}
  template:
    metadata:
      labels: {app: rs}
    spec:
      containers:
      - name: c
        image: busybox
";

/// Two controller processes, each through its own API server: only the Lease holder acts;
/// when it is killed, the other takes over once the lease has expired, and acts.
#[test]
fn two_controller_processes_elect_one_leader_and_the_standby_takes_over() {
    let Some((_etcd, a, b)) = cluster() else {
        return;
    };
    let lease_duration = Duration::from_secs(3);
    let holder = || {
        let out = b.kubectl(&[
            "get",
            "lease",
            "-n",
            "kube-system",
            "muster-controllers",
            "-o",
            "jsonpath={.spec.holderIdentity} {.spec.leaseTransitions}",
        ]);
        (out.code == 0).then_some(out.stdout)
    };
    let pods = |want: usize| {
        wait_for(Duration::from_secs(30), "pods of the ReplicaSet", || {
            let out = a
                .kubectl(&["get", "pods", "-l", "app=rs", "-o", "name"])
                .ok();
            (out.stdout.lines().count() == want).then_some(())
        })
    };
    let mut first = Controllers::start(&a.kubeconfig(), a.data_dir().join("controllers-1.log"));
    let first_id = first.identity_prefix();
    wait_for(Duration::from_secs(30), "the first process leads", || {
        holder().filter(|h| h.starts_with(&first_id))
    });
    let second = Controllers::start(&b.kubeconfig(), b.data_dir().join("controllers-2.log"));
    let second_id = second.identity_prefix();
    wait_for(Duration::from_secs(30), "the second process waits", || {
        second.log_text().contains("waiting to lead").then_some(())
    });
    // Longer than a lease: a standby that ignored the Lease would have taken it by now.
    std::thread::sleep(lease_duration + Duration::from_secs(1));
    let held = holder().expect("lease");
    assert!(
        held.starts_with(&first_id) && held.ends_with(" 0"),
        "{held}"
    );
    assert!(
        !second.log_text().contains("controllers synced"),
        "the standby runs no controllers:\n{}",
        second.log_text()
    );
    b.kubectl_stdin(&["create", "-f", "-"], REPLICA_SET).ok();
    pods(2);

    first.kill9();
    let killed = Instant::now();
    let took_over = wait_for(Duration::from_secs(30), "the standby takes over", || {
        holder().filter(|h| h.starts_with(&second_id))
    });
    let elapsed = killed.elapsed();
    assert!(took_over.ends_with(" 1"), "one transition: {took_over}");
    // It waits for the lease to expire (renewed at most one retry period before the kill),
    // then needs one retry period to notice; the rest is slack for a loaded machine.
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed <= lease_duration + Duration::from_secs(4),
        "took over after {elapsed:?} (lease {lease_duration:?})"
    );
    a.kubectl(&["scale", "rs", "rs", "--replicas=3"]).ok();
    pods(3);
    assert!(
        second.log_text().contains("controllers synced"),
        "{}",
        second.log_text()
    );
}

/// `muster apiserver` on an etcd that requires TLS client certificates, through the
/// `--etcd-*` flags; and combinations of flags that cannot work are refused at start with a
/// message that says why.
#[test]
fn etcd_tls_flags_connect_and_bad_combinations_are_refused() {
    if !tools_present(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = common::etcd::make_tls_files(dir.path());
    let Some(etcd) = Etcd::start_with(1, Some(&files)) else {
        return;
    };
    let endpoint = etcd.endpoints()[0].clone();
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let tls_args = |prefix: &str, with_cert: bool| {
        let mut args = etcd_args(std::slice::from_ref(&endpoint), prefix);
        args.extend(["--etcd-cafile".into(), path(&files.ca)]);
        if with_cert {
            args.extend(["--etcd-certfile".into(), path(&files.client_cert)]);
            args.extend(["--etcd-keyfile".into(), path(&files.client_key)]);
        }
        args
    };
    let s = Server::start_with(&tls_args("/tls", true));
    s.kubectl_stdin(&["create", "-f", "-"], &configmap("over-tls", "1"))
        .ok();
    s.kubectl(&["get", "cm", "over-tls"]).ok();
    // Another prefix on the same etcd is another cluster: it does not see the object.
    let other = Server::start_with(&tls_args("/other", true));
    other.kubectl(&["get", "cm", "over-tls"]).failed();

    // (flags after `--data-dir D --api-listen 127.0.0.1:0`, part of the error message)
    let bad: Vec<(Vec<String>, &str)> = vec![
        (tls_args("/tls", false), "connecting to etcd"),
        (
            {
                let mut args = tls_args("/tls", false);
                args.extend(["--etcd-certfile".into(), path(&files.client_cert)]);
                args
            },
            "--etcd-certfile needs --etcd-keyfile",
        ),
        (
            etcd_args(std::slice::from_ref(&endpoint), "/tls"),
            "https:// etcd endpoints need --etcd-cafile",
        ),
        (
            vec!["--etcd-cafile".into(), path(&files.ca)],
            "--etcd-cafile only applies with --store etcd",
        ),
        (
            vec!["--store".into(), "etcd".into()],
            "--store etcd needs --etcd-endpoints",
        ),
    ];
    for (args, want) in bad {
        let data = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_muster"))
            .arg("apiserver")
            .arg("--data-dir")
            .arg(data.path())
            .args(["--api-listen", "127.0.0.1:0"])
            .args(&args)
            .output()
            .expect("running muster");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(
            stderr.contains(want),
            "{args:?}: want {want:?} in:\n{stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{args:?}: refused only after {:?}",
            started.elapsed()
        );
    }
}

/// etcd frozen: requests answer 504 Timeout after the request timeout, without Retry-After
/// (kubectl does not re-send); etcd gone: 503 ServiceUnavailable. Both with a Status, and the
/// API serves again by itself once etcd is back.
#[test]
fn an_etcd_outage_answers_504_or_503_and_the_api_recovers() {
    if !tools_present(true) {
        return;
    }
    let Some(mut etcd) = Etcd::start(1) else {
        return;
    };
    let s = Server::start_with(&etcd_args(&etcd.endpoints(), "/outage"));
    s.kubectl_stdin(&["create", "-f", "-"], &configmap("kept", "1"))
        .ok();
    // (outage, what kubectl prints, HTTP status of a raw request)
    let cases = [
        ("frozen", "Error from server (Timeout)", 504),
        ("killed", "Error from server (ServiceUnavailable)", 503),
    ];
    for (outage, printed, code) in cases {
        match outage {
            "frozen" => etcd.pause(0, true),
            _ => etcd.kill(0),
        }
        let started = Instant::now();
        let out = s.kubectl(&["get", "cm", "kept"]).failed();
        assert!(out.stderr.contains(printed), "{outage}: {}", out.stderr);
        // One request timeout (2s), not ten re-sends of it.
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{outage}: kubectl took {:?}",
            started.elapsed()
        );
        let (status, body) = s.curl(
            "GET",
            "/api/v1/namespaces/default/configmaps/kept",
            None,
            None,
            true,
        );
        assert_eq!(status, code, "{outage}: {body}");
        let status: Value = serde_json::from_str(&body).expect("a Status body");
        assert_eq!(status["kind"], "Status", "{body}");
        assert_eq!(status["code"], code, "{body}");
        assert!(
            status["details"].get("retryAfterSeconds").is_none(),
            "{body}"
        );
        match outage {
            "frozen" => etcd.pause(0, false),
            _ => etcd.restart(0),
        }
        wait_for(Duration::from_secs(20), "the API serves again", || {
            let r = s.kubectl(&["get", "cm", "kept", "-o", "jsonpath={.data.key}"]);
            (r.code == 0).then_some(())
        });
        s.kubectl_stdin(
            &["create", "-f", "-"],
            &configmap(&format!("after-{outage}"), "1"),
        )
        .ok();
    }
}

/// `muster up --store etcd`: the controllers and the DNS of the one process work from etcd, and
/// a separate `muster apiserver` on the same etcd sees what they did.
#[test]
fn muster_up_on_etcd_runs_controllers_and_dns_from_it() {
    if !tools_present(false) {
        return;
    }
    if Command::new("dig").arg("-v").output().is_err() {
        eprintln!("skipping: dig is not installed (dnsutils)");
        return;
    }
    let Some(etcd) = Etcd::start(3) else {
        return;
    };
    let store = etcd_args(&etcd.endpoints(), "/up");
    let dns_port = common::etcd::free_port();
    let mut up_args = vec![
        "--no-agent".to_string(),
        "--dns-listen".into(),
        format!("127.0.0.1:{dns_port}"),
        "--dns-upstream".into(),
        "127.0.0.1:9".into(),
    ];
    up_args.extend(store.iter().cloned());
    let up = Server::start_up(&up_args);
    let other = Server::start_peer(&up, &store);
    up.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=2",
    ])
    .ok();
    // The controllers in `muster up` create the pods; the other API server lists them.
    wait_for(
        Duration::from_secs(30),
        "two pods through the other API server",
        || {
            let pods = other
                .kubectl(&["get", "pods", "-l", "app=web", "-o", "name"])
                .ok();
            (pods.stdout.lines().count() == 2).then_some(())
        },
    );
    other
        .kubectl(&["create", "service", "clusterip", "web", "--tcp=80"])
        .ok();
    let ip = other
        .kubectl(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"])
        .ok()
        .stdout;
    // The DNS of `muster up` answers for a Service created through the other API server.
    wait_for(Duration::from_secs(20), "the DNS answers for web", || {
        let out = Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &dns_port.to_string(),
                "+short",
                "+time=1",
            ])
            .args(["+tries=1", "web.default.svc.cluster.local"])
            .output()
            .ok()?;
        (String::from_utf8_lossy(&out.stdout).trim() == ip).then_some(())
    });
}

/// etcd's compaction is the history limit of watches: a watch from a compacted
/// resourceVersion gets the 410 Expired that makes clients re-list, as from kube-apiserver.
#[test]
fn a_watch_from_a_revision_etcd_compacted_is_410_expired() {
    if !tools_present(true) {
        return;
    }
    let Some(etcd) = Etcd::start(1) else {
        return;
    };
    let s = Server::start_with(&etcd_args(&etcd.endpoints(), "/compacted"));
    let rv = |args: &[&str]| -> u64 {
        let out = s.kubectl(args).ok().stdout;
        out.parse()
            .unwrap_or_else(|_| panic!("a resourceVersion: {out:?}"))
    };
    let first = rv(&[
        "create",
        "cm",
        "a",
        "--from-literal=k=0",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    let mut last = first;
    for i in 1..=3 {
        last = rv(&[
            "patch",
            "cm",
            "a",
            "-p",
            &format!(r#"{{"data":{{"k":"{i}"}}}}"#),
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ]);
    }
    // Compact etcd's history up to the last write, through etcd's JSON gateway.
    let compacted = Command::new("curl")
        .args(["-sf", "-X", "POST", "-d"])
        .arg(format!(r#"{{"revision":"{last}"}}"#))
        .arg(format!("{}/v3/kv/compaction", etcd.endpoints()[0]))
        .output()
        .expect("curl");
    assert!(compacted.status.success(), "{compacted:?}");
    let watch = |from: u64| {
        s.kubectl(&[
            "get",
            "--raw",
            &format!(
                "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={from}&timeoutSeconds=1"
            ),
            "--request-timeout=10s",
        ])
    };
    let old = watch(first);
    assert!(
        old.stdout.contains(r#""reason":"Expired""#) && old.stdout.contains(r#""code":410"#),
        "{old:?}"
    );
    // From the compaction revision on, the watch is served (until timeoutSeconds).
    let recent = watch(last).ok();
    assert!(!recent.stdout.contains("Expired"), "{recent:?}");
}
