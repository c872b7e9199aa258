//! The two tutorials in `shared/seeds/`, end to end, with the real kubectl, `dig` and pods that
//! run as processes: `muster up` runs inside a private network namespace (no route off the
//! machine), and kubectl and dig reach it there through `nsenter`.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const KUBECTL: &str = "/usr/bin/kubectl";
const API: &str = "127.0.0.1:6443";
const DNS_PORT: &str = "5353";

/// A `muster up` in its own network namespace.
struct Cluster {
    dir: tempfile::TempDir,
    /// The `unshare` process that holds the network namespace.
    holder: Child,
}

/// Why a test cannot run here, if it cannot.
fn missing_capability(need: &[&str]) -> Option<String> {
    if !nix_is_root() {
        return Some("needs root for network namespaces and pods".into());
    }
    for tool in need {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

macro_rules! require {
    ($($tool:expr),*) => {
        if let Some(why) = missing_capability(&[$($tool),*]) {
            eprintln!("skipping: {why}");
            return;
        }
    };
}

impl Cluster {
    fn start(extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let log = std::fs::File::create(dir.path().join("muster.log")).expect("log");
        let script = format!(
            "ip link set lo up && exec {} up --data-dir {} --api-listen {API} --dns-listen 127.0.0.1:{DNS_PORT} --dns-upstream 127.0.0.1:9 {}",
            env!("CARGO_BIN_EXE_muster"),
            data.display(),
            extra.join(" ")
        );
        let holder = Command::new("unshare")
            .args(["--net", "--fork", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("unshare");
        let cluster = Cluster { dir, holder };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if cluster.kubeconfig().exists() {
                let r = cluster.kubectl(&["get", "--raw", "/readyz"]);
                if r.status.success() && String::from_utf8_lossy(&r.stdout).trim() == "ok" {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "muster up not ready after 60 s:\n{}",
                cluster.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("data/kubeconfig")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("muster.log")).unwrap_or_default()
    }

    fn netns(&self) -> String {
        format!("--net=/proc/{}/ns/net", self.holder.id())
    }

    fn in_netns(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(self.netns()).arg(program);
        cmd
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        self.in_netns(KUBECTL)
            .env("KUBECONFIG", self.kubeconfig())
            .arg(format!(
                "--cache-dir={}",
                self.dir.path().join("cache").display()
            ))
            .args(args)
            .output()
            .expect("kubectl")
    }

    /// kubectl that must succeed; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply_file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("manifest");
        self.ok(&["create", "-f", path.to_str().expect("utf-8")])
    }

    /// `dig +short` against muster's DNS on the host side of the namespace.
    fn dig(&self, args: &[&str]) -> Vec<String> {
        let out = self
            .in_netns("dig")
            .args(["@127.0.0.1", "-p", DNS_PORT, "+tries=1", "+time=2"])
            .args(args)
            .output()
            .expect("dig");
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect();
        lines.sort();
        lines
    }

    fn dig_status(&self, name: &str) -> String {
        let out = self
            .in_netns("dig")
            .args(["@127.0.0.1", "-p", DNS_PORT, "+tries=1", "+time=2", name])
            .output()
            .expect("dig");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split("status: ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap_or("")
            .to_string()
    }

    /// Waits until `check` holds, or fails with what it last saw.
    fn eventually<T: std::fmt::Debug>(
        &self,
        what: &str,
        mut probe: impl FnMut() -> T,
        check: impl Fn(&T) -> bool,
    ) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let seen = probe();
            if check(&seen) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: still {seen:?} after 60 s\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn pod_ips(&self, selector: &str) -> Vec<String> {
        let out = self.ok(&[
            "get",
            "pods",
            "-l",
            selector,
            "-o",
            "jsonpath={.items[*].status.podIP}",
        ]);
        let mut ips: Vec<String> = out.split_whitespace().map(str::to_string).collect();
        ips.sort();
        ips
    }

    /// Stops muster with SIGTERM (it stops its pods and removes their namespaces), then the
    /// namespace holder.
    fn stop(mut self) {
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.holder.id()))
                .unwrap_or_default();
        for pid in children.split_whitespace() {
            let _ = Command::new("kill").args(["-TERM", pid]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.holder.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.holder.kill();
                panic!(
                    "muster up did not stop within 60 s of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    /// After a failed assertion: kill muster (the holder's child) and the holder, so that no
    /// process or namespace outlives the test.
    fn drop(&mut self) {
        if self.holder.try_wait().ok().flatten().is_none() {
            let children =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.holder.id()))
                    .unwrap_or_default();
            for pid in children.split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
            let _ = self.holder.kill();
            let _ = self.holder.wait();
        }
    }
}

/// A child process killed when the test ends, also when it fails.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const TERRA10: &str = "apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: terra10-rs
spec:
  replicas: 3
  selector:
    matchLabels:
      app: terra10
  template:
    metadata:
      labels:
        app: terra10
    spec:
      containers:
      - name: terra10
        image: lgorissen/terra10:r1
        ports:
        - containerPort: 8080
";

const TERRA10_HEADLESS: &str = "apiVersion: v1
kind: Service
metadata:
  name: terra10-headless
spec:
  clusterIP: None
  ports:
  - port: 80
    targetPort: 8080
  selector:
    app: terra10
";

const SIDECAR: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: sidecar-app
spec:
  replicas: 3
  selector:
    matchLabels:
      app: sidecar-app
  template:
    metadata:
      labels:
        app: sidecar-app
    spec:
      containers:
      - name: web
        image: nginx
        ports:
        - containerPort: 80
      - name: sidecar
        image: busybox
        command: [\"sh\", \"-c\", \"while true; do sleep 5; done\"]
";

const SIDECAR_HEADLESS: &str = "apiVersion: v1
kind: Service
metadata:
  name: sidecar-svc-headless
spec:
  clusterIP: None
  selector:
    app: sidecar-app
  ports:
  - port: 8080
    targetPort: 80
";

fn mark_ready(cluster: &Cluster, pod: &str, ip: &str, ready: bool) {
    let patch = format!(
        r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"conditions":[{{"type":"Ready","status":"{}"}}]}}}}"#,
        if ready { "True" } else { "False" }
    );
    cluster.ok(&[
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ]);
}

/// Seed 1 with `--no-agent`: the test plays the node through `pods/status`.
#[test]
fn headless_replicaset_without_agent_follows_readiness() {
    require!("unshare", "nsenter", "dig", KUBECTL);
    let cluster = Cluster::start(&["--no-agent"]);
    assert!(
        cluster
            .apply_file("rs.yaml", TERRA10)
            .contains("replicaset.apps/terra10-rs created")
    );
    let rs = cluster.ok(&["get", "rs"]);
    assert!(rs.contains("NAME") && rs.contains("DESIRED"), "{rs}");
    assert!(
        cluster
            .apply_file("svc.yaml", TERRA10_HEADLESS)
            .contains("service/terra10-headless created")
    );
    let svc = cluster.ok(&["get", "service", "terra10-headless"]);
    let row: Vec<&str> = svc
        .lines()
        .nth(1)
        .expect("a row")
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..5],
        ["terra10-headless", "ClusterIP", "None", "<none>", "80/TCP"],
        "{svc}"
    );

    let pods = cluster.eventually(
        "three pods",
        || {
            cluster
                .ok(&["get", "pods", "-l", "app=terra10", "-o", "name"])
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        },
        |p| p.len() == 3,
    );
    let names: Vec<String> = pods
        .iter()
        .map(|p| p.trim_start_matches("pod/").to_string())
        .collect();
    let ips = ["10.244.0.5", "10.244.0.6", "10.244.0.7"];
    for (name, ip) in names.iter().zip(ips) {
        mark_ready(&cluster, name, ip, true);
    }
    mark_ready(&cluster, &names[2], ips[2], false);

    let fqdn = "terra10-headless.default.svc.cluster.local";
    cluster.eventually(
        "ready pods in DNS",
        || cluster.dig(&["+short", fqdn]),
        |a| a == &["10.244.0.5", "10.244.0.6"],
    );
    let describe = cluster.ok(&["describe", "service", "terra10-headless"]);
    assert!(
        describe.contains("Endpoints:                10.244.0.5:8080,10.244.0.6:8080\n"),
        "{describe}"
    );
    let endpoints = cluster.ok(&["get", "endpoints", "terra10-headless"]);
    assert!(
        endpoints.contains("10.244.0.5:8080,10.244.0.6:8080"),
        "{endpoints}"
    );
    let rs = cluster.eventually(
        "READY 2",
        || cluster.ok(&["get", "rs", "terra10-rs"]),
        |t| {
            t.lines().nth(1).is_some_and(|l| {
                l.split_whitespace().take(4).collect::<Vec<_>>() == ["terra10-rs", "3", "3", "2"]
            })
        },
    );
    assert!(rs.contains("terra10-rs"));

    // Flipping readiness changes the answer at once; no ready endpoint is NXDOMAIN.
    mark_ready(&cluster, &names[2], ips[2], true);
    cluster.eventually(
        "third pod in DNS",
        || cluster.dig(&["+short", fqdn]),
        |a| a.len() == 3,
    );
    for (name, ip) in names.iter().zip(ips) {
        mark_ready(&cluster, name, ip, false);
    }
    cluster.eventually(
        "NXDOMAIN without ready pods",
        || cluster.dig_status(fqdn),
        |s| s == "NXDOMAIN",
    );
    cluster.stop();
}

/// Seed 1 as written: pods run, `nslookup` from a dnsutils pod lists every ready pod.
#[test]
fn seed_headless_service_point_to_multipoint() {
    require!("unshare", "nsenter", "ip", "nslookup", KUBECTL);
    let cluster = Cluster::start(&[]);
    cluster.apply_file("rs.yaml", TERRA10);
    cluster.eventually(
        "kubectl get rs READY 3",
        || cluster.ok(&["get", "rs"]),
        |t| {
            t.lines().nth(1).is_some_and(|l| {
                l.split_whitespace().take(4).collect::<Vec<_>>() == ["terra10-rs", "3", "3", "3"]
            })
        },
    );
    cluster.apply_file("svc.yaml", TERRA10_HEADLESS);
    let ips = cluster.pod_ips("app=terra10");
    assert_eq!(ips.len(), 3);
    let describe = cluster.eventually(
        "three endpoints",
        || cluster.ok(&["describe", "service", "terra10-headless"]),
        |d| ips.iter().all(|ip| d.contains(&format!("{ip}:8080"))),
    );
    assert!(
        describe.contains("IP:                       None"),
        "{describe}"
    );

    assert!(
        cluster
            .ok(&[
                "run",
                "dnsutils",
                "--image=tutum/dnsutils",
                "--command",
                "--",
                "sleep",
                "infinity"
            ])
            .contains("pod/dnsutils created")
    );
    cluster.eventually(
        "dnsutils Running",
        || cluster.ok(&["get", "pod", "dnsutils"]),
        |t| t.contains("1/1") && t.contains("Running"),
    );
    let lookup = cluster.ok(&["exec", "dnsutils", "--", "nslookup", "terra10-headless"]);
    assert!(lookup.contains("Server:\t\t10.96.0.10"), "{lookup}");
    for ip in &ips {
        assert!(
            lookup.contains(&format!("Address: {ip}")),
            "{ip} missing from\n{lookup}"
        );
    }
    assert_eq!(
        lookup
            .matches("Name:\tterra10-headless.default.svc.cluster.local")
            .count(),
        3,
        "{lookup}"
    );

    // A client in one pod reaches every other pod's port by the IPs DNS returned (the default
    // workload answers with the pod's name).
    let names = cluster.ok(&[
        "get",
        "pods",
        "-l",
        "app=terra10",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    for ip in &ips {
        let body = cluster.ok(&[
            "exec",
            "dnsutils",
            "--",
            "curl",
            "-s",
            "--max-time",
            "5",
            &format!("http://{ip}:8080/"),
        ]);
        assert!(
            names.split_whitespace().any(|n| body.trim() == n),
            "{ip} answered {body:?}"
        );
    }

    // Deleting a pod removes its IP from DNS; its replacement appears once Ready.
    let victim = names.split_whitespace().next().expect("a pod").to_string();
    let victim_ip = cluster.ok(&["get", "pod", &victim, "-o", "jsonpath={.status.podIP}"]);
    cluster.ok(&["delete", "pod", &victim]);
    let after = cluster.eventually(
        "replacement in DNS",
        || cluster.dig(&["+short", "terra10-headless.default.svc.cluster.local"]),
        |a| a.len() == 3 && !a.contains(&victim_ip),
    );
    assert_eq!(after, cluster.pod_ips("app=terra10"));
    cluster.stop();
}

/// Seed 2: a Deployment with two containers per pod, reverse lookups from inside a pod.
#[test]
fn seed_headless_service_stateful_pods() {
    require!("unshare", "nsenter", "ip", "nslookup", KUBECTL);
    let cluster = Cluster::start(&[]);
    assert!(
        cluster
            .apply_file("sidecar.yaml", SIDECAR)
            .contains("deployment.apps/sidecar-app created")
    );
    let status = cluster.ok(&[
        "rollout",
        "status",
        "deployment/sidecar-app",
        "--timeout=60s",
    ]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let pods = cluster.ok(&["get", "pods"]);
    assert_eq!(
        pods.lines()
            .filter(|l| l.contains("sidecar-app-") && l.contains("2/2") && l.contains("Running"))
            .count(),
        3,
        "{pods}"
    );
    assert!(
        cluster
            .apply_file("svc.yaml", SIDECAR_HEADLESS)
            .contains("service/sidecar-svc-headless created")
    );
    let services = cluster.ok(&["get", "services"]);
    assert!(
        services
            .lines()
            .any(|l| l.split_whitespace().take(5).collect::<Vec<_>>()
                == [
                    "sidecar-svc-headless",
                    "ClusterIP",
                    "None",
                    "<none>",
                    "8080/TCP"
                ]),
        "{services}"
    );
    let ips = cluster.pod_ips("app=sidecar-app");
    let endpoints = cluster.eventually(
        "endpoints",
        || cluster.ok(&["get", "endpoints", "sidecar-svc-headless"]),
        |e| ips.iter().all(|ip| e.contains(&format!("{ip}:80"))),
    );
    assert!(endpoints.starts_with("NAME"), "{endpoints}");

    cluster.ok(&[
        "run",
        "curl",
        "--image=tutum/dnsutils",
        "--command",
        "--",
        "sleep",
        "infinity",
    ]);
    cluster.eventually(
        "curl pod Running",
        || cluster.ok(&["get", "pod", "curl"]),
        |t| t.contains("Running"),
    );
    let forward = cluster.ok(&["exec", "curl", "--", "nslookup", "sidecar-svc-headless"]);
    for ip in &ips {
        assert!(forward.contains(&format!("Address: {ip}")), "{forward}");
        let reverse = cluster.ok(&["exec", "curl", "--", "nslookup", ip]);
        let dashed = ip.replace('.', "-");
        assert!(
            reverse.contains(&format!(
                "name = {dashed}.sidecar-svc-headless.default.svc.cluster.local."
            )),
            "{reverse}"
        );
    }
    cluster.stop();
}

/// A StatefulSet behind a headless service: stable per-pod names and FQDN hostnames.
#[test]
fn statefulset_pods_have_stable_dns_names() {
    require!("unshare", "nsenter", "ip", "nslookup", KUBECTL);
    let cluster = Cluster::start(&[]);
    cluster.apply_file(
        "web.yaml",
        "apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  clusterIP: None
  selector:
    app: web
  ports:
  - name: http
    port: 80
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: web
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: nginx
        ports:
        - containerPort: 80
          name: http
",
    );
    let status = cluster.ok(&["rollout", "status", "statefulset/web", "--timeout=60s"]);
    assert!(status.contains("roll out complete"), "{status}");
    let ip0 = cluster.ok(&["get", "pod", "web-0", "-o", "jsonpath={.status.podIP}"]);
    let lookup = cluster.ok(&[
        "exec",
        "web-1",
        "-c",
        "web",
        "--",
        "nslookup",
        "web-0.web.default.svc.cluster.local",
    ]);
    assert!(lookup.contains(&format!("Address: {ip0}")), "{lookup}");
    for pod in ["web-0", "web-1"] {
        let fqdn = cluster.ok(&["exec", pod, "--", "hostname", "-f"]);
        assert_eq!(fqdn.trim(), format!("{pod}.web.default.svc.cluster.local"));
    }
    let srv = cluster.dig(&["+short", "SRV", "_http._tcp.web.default.svc.cluster.local"]);
    assert_eq!(srv.len(), 2, "{srv:?}");
    assert!(
        srv.iter()
            .any(|r| r.ends_with("web-0.web.default.svc.cluster.local.")),
        "{srv:?}"
    );
    cluster.stop();
}

/// `muster dns --kubeconfig` against muster's API answers what the embedded DNS answers.
#[test]
fn standalone_dns_matches_embedded_dns() {
    require!("unshare", "nsenter", "dig", KUBECTL);
    let cluster = Cluster::start(&["--no-agent"]);
    cluster.apply_file("rs.yaml", TERRA10);
    cluster.apply_file("svc.yaml", TERRA10_HEADLESS);
    let pods = cluster.eventually(
        "three pods",
        || {
            cluster
                .ok(&["get", "pods", "-o", "name"])
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        },
        |p| p.len() == 3,
    );
    for (i, pod) in pods.iter().enumerate() {
        mark_ready(
            &cluster,
            pod.trim_start_matches("pod/"),
            &format!("10.244.0.{}", 20 + i),
            true,
        );
    }
    let _standalone = KillOnDrop(
        cluster
            .in_netns(env!("CARGO_BIN_EXE_muster"))
            .args(["dns", "--kubeconfig"])
            .arg(cluster.kubeconfig())
            .args([
                "--listen",
                "127.0.0.1:5354",
                "--upstream",
                "127.0.0.1:9",
                "--metrics-listen",
                "127.0.0.1:9154",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("muster dns"),
    );
    let queries: &[&[&str]] = &[
        &["terra10-headless.default.svc.cluster.local"],
        &["kubernetes.default.svc.cluster.local"],
        &["AAAA", "kubernetes.default.svc.cluster.local"],
        &["SRV", "_dns._udp.kube-dns.kube-system.svc.cluster.local"],
        &["-x", "10.244.0.20"],
        &["-x", "10.96.0.10"],
        &["TXT", "dns-version.cluster.local"],
        &["nosuch.default.svc.cluster.local"],
    ];
    let dig_at = |port: &str, q: &[&str]| -> Vec<String> {
        let out = cluster
            .in_netns("dig")
            .args([
                "@127.0.0.1",
                "-p",
                port,
                "+tries=1",
                "+time=2",
                "+noall",
                "+answer",
                "+comments",
            ])
            .args(q)
            .output()
            .expect("dig");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| l.contains("status:") || (!l.starts_with(';') && !l.is_empty()))
            .map(|l| l.split(", id:").next().unwrap_or(l).to_string())
            .collect();
        lines.sort();
        lines
    };
    // The embedded DNS first has to see the pods' readiness; then both servers must agree.
    cluster.eventually(
        "ready pods in the embedded DNS",
        || cluster.dig(&["+short", "terra10-headless.default.svc.cluster.local"]),
        |a| a.len() == 3,
    );
    for q in queries {
        let (embedded, standalone) = cluster.eventually(
            &format!("the same answer to {q:?} from both servers"),
            || (dig_at(DNS_PORT, q), dig_at("5354", q)),
            |(e, s)| e == s,
        );
        assert!(
            embedded
                .iter()
                .any(|l| l.contains("status: NOERROR") || l.contains("status: NXDOMAIN")),
            "{q:?}: {embedded:?} / {standalone:?}"
        );
    }
    cluster.stop();
}
