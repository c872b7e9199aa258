//! A real muster API server (the `muster apiserver` binary) on a free loopback port, with
//! the controllers of this crate running in-process against it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, PodCondition, PodIP, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// The `muster` binary: `MUSTER_BIN`, else the debug build in the cargo target dir.
pub fn muster_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MUSTER_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| format!("{}/../../target", env!("CARGO_MANIFEST_DIR")));
    PathBuf::from(target).join("debug/muster")
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub client: Client,
    child: Child,
    controllers: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// Starts the API server and the controllers; returns once the controllers are synced.
    pub async fn start() -> Cluster {
        Self::start_with(muster_controllers::ControllersConfig::default()).await
    }

    pub async fn start_with(config: muster_controllers::ControllersConfig) -> Cluster {
        let mut c = Self::start_api_only().await;
        c.start_controllers(config).await;
        c
    }

    /// Only the API server; `start_controllers` later.
    pub async fn start_api_only() -> Cluster {
        // RUST_LOG=muster_controllers=debug shows what the controllers do.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let bin = muster_bin();
        assert!(
            bin.exists(),
            "build the muster binary first (cargo build -p muster): {}",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("apiserver.log")).unwrap();
        let child = Command::new(&bin)
            .args(["apiserver", "--data-dir"])
            .arg(dir.path())
            .args(["--api-listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start muster apiserver");
        let kubeconfig = dir.path().join("kubeconfig");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            assert!(
                Instant::now() < deadline,
                "no kubeconfig from the API server"
            );
            if kubeconfig.exists()
                && let Ok(kc) = Kubeconfig::read_from(&kubeconfig)
                && let Ok(cfg) =
                    Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await
                && let Ok(client) = Client::try_from(cfg)
                && client.apiserver_version().await.is_ok()
            {
                break client;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Cluster {
            dir,
            kubeconfig,
            client,
            child,
            controllers: None,
        }
    }

    /// Starts (or restarts, from nothing: new caches, new queues) the controllers and waits
    /// until they are synced.
    pub async fn start_controllers(&mut self, config: muster_controllers::ControllersConfig) {
        if let Some(old) = self.controllers.take() {
            old.abort();
        }
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        self.controllers = Some(tokio::spawn(muster_controllers::run(
            self.client.clone(),
            config,
            tx,
        )));
        tokio::time::timeout(Duration::from_secs(120), rx.wait_for(|r| *r))
            .await
            .expect("controllers synced in time")
            .unwrap();
    }

    /// Runs the real kubectl against this cluster; returns stdout, panics with stderr.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("kubectl-cache"))
            .args(args)
            .output()
            .expect("run kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(c) = self.controllers.take() {
            c.abort();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Plays the kubelet: writes a pod's status through `pods/status`.
pub async fn set_pod_status(client: &Client, ns: &str, name: &str, ip: &str, ready: bool) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = PodStatus {
        phase: Some("Running".into()),
        pod_ip: Some(ip.into()),
        pod_ips: Some(vec![PodIP { ip: ip.into() }]),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: if ready { "True" } else { "False" }.into(),
            last_transition_time: Some(now),
            ..Default::default()
        }]),
        ..Default::default()
    };
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({ "status": status })),
    )
    .await
    .unwrap();
}

/// Polls `f` until it returns Some, or panics after `secs` seconds with the last value seen.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => panic!("{what}: gave up; last: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Plays a node that starts every pod at once: pods without an IP get one, phase Running
/// and Ready=True. Returns the task; abort it to stop.
pub fn fake_kubelet(client: Client, ns: &str) -> tokio::task::JoinHandle<()> {
    let api: Api<Pod> = Api::namespaced(client, ns);
    tokio::spawn(async move {
        let mut next = 1usize;
        loop {
            if let Ok(list) = api.list(&Default::default()).await {
                for p in list.items {
                    let has_ip = p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some();
                    if has_ip || p.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    let ip = format!("10.244.{}.{}", 1 + next / 250, next % 250 + 1);
                    next += 1;
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let status = PodStatus {
                        phase: Some("Running".into()),
                        pod_ip: Some(ip.clone()),
                        pod_ips: Some(vec![PodIP { ip }]),
                        conditions: Some(vec![PodCondition {
                            type_: "Ready".into(),
                            status: "True".into(),
                            last_transition_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    };
                    let _ = api
                        .patch_status(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(&serde_json::json!({ "status": status })),
                        )
                        .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

impl Cluster {
    /// kubectl that may fail: (success, stdout, stderr).
    pub fn kubectl_result(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("kubectl-cache"))
            .args(args)
            .output()
            .expect("run kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}
