//! The kube-driven loop: register the Node, renew its Lease, watch the pods bound to this
//! node, run them, report their status through `pods/status`, and finish their deletion.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, PodStatus, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::mpsc;

use crate::backoff::BackoffSettings;
use crate::cidr::Ipv4Cidr;
use crate::dnsfiles::{ClusterDns, HostDns};
use crate::env::{StaticEnvSources, referenced_sources};
use crate::ipam::Ipam;
use crate::net::{self, NetState, NodeNetworkConfig, PodNetNames};
use crate::node::{self, MachineFacts};
use crate::pod::{PodContext, PodTable, RuntimeSettings, run_pod};
use crate::server::{self, ServerState};
use crate::status::compute_status;

/// Everything the agent needs; [`AgentConfig::new`] fills in the defaults of DESIGN.md.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    /// The whole cluster's pod CIDR (10.244.0.0/16); the node takes a /24 of it.
    pub cluster_pod_cidr: Ipv4Cidr,
    /// Use this subnet instead of the Node's `spec.podCIDR` or a free /24.
    pub node_pod_cidr: Option<Ipv4Cidr>,
    /// Gets a blackhole route, like the pod CIDR.
    pub service_cidr: Ipv4Cidr,
    /// The DNS service IP (10.96.0.10): pods' nameserver, put on the node's `lo`.
    pub cluster_dns: IpAddr,
    pub cluster_domain: String,
    /// State (IPAM, network records) and per-pod files and logs.
    pub data_dir: PathBuf,
    /// The node's InternalIP (also each pod's hostIP); the API server reaches the agent's
    /// server there.
    pub node_ip: IpAddr,
    /// Where the exec/logs server listens (port 0: any free port, recorded in the Node).
    pub server_listen: SocketAddr,
    /// Bearer token the exec/logs server requires (the API server sends it when proxying).
    pub server_token: String,
    /// Node bridge name.
    pub bridge: String,
    /// Executable re-run with `default-workload ...` for containers without a command.
    pub workload_exe: PathBuf,
    pub backoff: BackoffSettings,
    pub lease_renew: Duration,
    pub node_status_every: Duration,
    /// Longest grace period given to pods when the agent itself stops.
    pub shutdown_grace: Duration,
}

impl AgentConfig {
    pub fn new(node_name: &str, data_dir: PathBuf, server_token: &str) -> AgentConfig {
        AgentConfig {
            node_name: node_name.to_string(),
            cluster_pod_cidr: "10.244.0.0/16".parse().expect("valid"),
            node_pod_cidr: None,
            service_cidr: "10.96.0.0/12".parse().expect("valid"),
            cluster_dns: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)),
            cluster_domain: "cluster.local".into(),
            data_dir,
            node_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            server_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            server_token: server_token.to_string(),
            bridge: "muster0".into(),
            workload_exe: std::env::current_exe().unwrap_or_else(|_| "muster".into()),
            backoff: BackoffSettings::default(),
            lease_renew: Duration::from_secs(10),
            node_status_every: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Runs the agent until the watch fails for good.
pub async fn run(client: kube::Client, config: AgentConfig) -> anyhow::Result<()> {
    run_until(client, config, std::future::pending()).await
}

/// Runs the agent until `shutdown` resolves; then stops every pod (within
/// `shutdown_grace`), removes their namespaces and links and the node's bridge and routes.
pub async fn run_until(
    client: kube::Client,
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let agent = Agent::start(client, config).await?;
    let watch = agent.clone().watch_pods();
    tokio::select! {
        result = watch => {
            agent.stop_everything().await;
            result
        }
        _ = shutdown => {
            agent.stop_everything().await;
            Ok(())
        }
    }
}

enum PodEvent {
    Update(Box<Pod>),
    /// The object is gone from the API (force deletion, or the agent learned it late).
    Gone,
}

struct Agent {
    client: kube::Client,
    config: AgentConfig,
    settings: Arc<RuntimeSettings>,
    subnet: Ipv4Cidr,
    isolated: bool,
    ipam: Mutex<Ipam>,
    net_state: Mutex<NetState>,
    table: PodTable,
    workers: Mutex<HashMap<String, mpsc::UnboundedSender<PodEvent>>>,
    node_net: NodeNetworkConfig,
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// True when the agent can make namespaces, links and mounts.
fn can_isolate() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not running as root".into());
    }
    match std::process::Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("`ip` (iproute2) is not installed".into()),
    }
}

impl Agent {
    async fn start(client: kube::Client, config: AgentConfig) -> anyhow::Result<Arc<Agent>> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("create {}", config.data_dir.display()))?;
        let isolated = match can_isolate() {
            Ok(()) => true,
            Err(why) => {
                tracing::warn!(
                    "node agent degraded ({why}): pods run in the host's network, UTS and mount \
                     namespaces with loopback IPs from 127.0.0.0/8; they do not get their own \
                     hostname, /etc/resolv.conf or /etc/hosts, pods on one node must not use the \
                     same port unless they bind to their pod IP, and the DNS service IP \
                     {} is not set up",
                    config.cluster_dns
                );
                false
            }
        };
        let nodes: Api<Node> = Api::all(client.clone());
        let existing = nodes.get_opt(&config.node_name).await?;
        let subnet = match config.node_pod_cidr {
            Some(s) => s,
            None => {
                let others: Vec<String> = nodes
                    .list(&ListParams::default())
                    .await?
                    .items
                    .into_iter()
                    .filter(|n| n.metadata.name.as_deref() != Some(config.node_name.as_str()))
                    .filter_map(|n| n.spec.and_then(|s| s.pod_cidr))
                    .collect();
                let mine = existing
                    .as_ref()
                    .and_then(|n| n.spec.as_ref())
                    .and_then(|s| s.pod_cidr.clone());
                node::choose_node_subnet(config.cluster_pod_cidr, mine.as_deref(), &others)?
            }
        };
        let node_net = NodeNetworkConfig {
            bridge: config.bridge.clone(),
            node_subnet: subnet,
            blackholes: vec![config.cluster_pod_cidr, config.service_cidr],
            local_addresses: vec![config.cluster_dns],
        };
        let mut net_state = NetState::open(&config.data_dir.join("network.json"))?;
        if isolated {
            let removed = net_state.remove_leftovers().await;
            if !removed.is_empty() {
                tracing::info!(?removed, "removed pod networks left by a previous run");
            }
            net::setup_node(&node_net)
                .await
                .context("set up the node network")?;
        }
        let ipam = Ipam::open(subnet, &config.data_dir.join("ipam.json"))?;

        let listener = tokio::net::TcpListener::bind(config.server_listen)
            .await
            .with_context(|| format!("listen on {}", config.server_listen))?;
        let port = listener.local_addr()?.port();
        let table = PodTable::default();
        let server_state = ServerState {
            token: config.server_token.clone(),
            pods: table.clone(),
        };
        let server_task = tokio::spawn(async move {
            if let Err(e) = server::serve(listener, server_state).await {
                tracing::error!(error = %e, "agent server stopped");
            }
        });

        let settings = Arc::new(RuntimeSettings {
            node_name: config.node_name.clone(),
            pods_dir: config.data_dir.join("pods"),
            backoff: config.backoff,
            workload_exe: config.workload_exe.clone(),
            cluster_dns: ClusterDns {
                nameserver: config.cluster_dns,
                domain: config.cluster_domain.clone(),
            },
            host_dns: HostDns::from_host(),
            host_ip: config.node_ip,
            isolated,
        });
        let agent = Arc::new(Agent {
            client,
            settings,
            subnet,
            isolated,
            ipam: Mutex::new(ipam),
            net_state: Mutex::new(net_state),
            table,
            workers: Mutex::new(HashMap::new()),
            node_net,
            background: Mutex::new(vec![server_task]),
            config,
        });
        let node_uid = agent.register_node(existing, port).await?;
        tracing::info!(
            node = %agent.config.node_name, subnet = %subnet, port, isolated,
            "node registered; exec/logs server on {}:{port}", agent.config.node_ip
        );
        let heartbeat = tokio::spawn(agent.clone().heartbeat(node_uid, port));
        agent.background.lock().push(heartbeat);
        Ok(agent)
    }

    async fn register_node(
        &self,
        existing: Option<Node>,
        port: u16,
    ) -> anyhow::Result<Option<String>> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let name = &self.config.node_name;
        let node = match existing {
            Some(n) => n,
            None => nodes
                .create(
                    &PostParams::default(),
                    &node::node_object(name, self.subnet),
                )
                .await
                .context("create Node")?,
        };
        self.patch_node_status(port, Timestamp::now()).await?;
        Ok(node.metadata.uid)
    }

    async fn patch_node_status(&self, port: u16, ready_since: Timestamp) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let status = node::node_status(
            &self.config.node_name,
            self.config.node_ip,
            port,
            &MachineFacts::probe(),
            ready_since,
            Timestamp::now(),
        );
        nodes
            .patch_status(
                &self.config.node_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .context("update Node status")?;
        Ok(())
    }

    /// Renews the Lease every `lease_renew` and the Node status every `node_status_every`.
    async fn heartbeat(self: Arc<Self>, node_uid: Option<String>, port: u16) {
        let ready_since = Timestamp::now();
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), node::LEASE_NAMESPACE);
        let name = self.config.node_name.clone();
        let mut last_status = tokio::time::Instant::now();
        loop {
            let lease = node::lease_object(&name, node_uid.as_deref(), Timestamp::now());
            let result = match leases.get_opt(&name).await {
                Ok(Some(mut current)) => {
                    current.spec = lease.spec;
                    leases
                        .replace(&name, &PostParams::default(), &current)
                        .await
                        .map(drop)
                }
                Ok(None) => leases
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(drop),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "cannot renew the node Lease");
            }
            if last_status.elapsed() >= self.config.node_status_every {
                last_status = tokio::time::Instant::now();
                if let Err(e) = self.patch_node_status(port, ready_since).await {
                    tracing::warn!(error = %e, "cannot update the Node status");
                }
            }
            tokio::time::sleep(self.config.lease_renew).await;
        }
    }

    /// Watches the pods bound to this node and hands each to its worker.
    async fn watch_pods(self: Arc<Self>) -> anyhow::Result<()> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let selector = format!("spec.nodeName={}", self.config.node_name);
        let mut stream = watcher(pods, watcher::Config::default().fields(&selector))
            .default_backoff()
            .boxed();
        let mut listed: HashSet<String> = HashSet::new();
        let mut first_list = true;
        while let Some(event) = stream.next().await {
            // the watcher re-lists by itself (with back-off); an error is never a reason to
            // stop the pods that run here
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(error = %e, "pod watch failed; retrying");
                    continue;
                }
            };
            match event {
                watcher::Event::Init => listed.clear(),
                watcher::Event::InitApply(pod) => {
                    listed.extend(pod.metadata.uid.clone());
                    self.dispatch(pod);
                }
                watcher::Event::InitDone => {
                    // anything we run that the list did not contain was deleted meanwhile
                    let gone: Vec<String> = self
                        .workers
                        .lock()
                        .keys()
                        .filter(|uid| !listed.contains(*uid))
                        .cloned()
                        .collect();
                    for uid in gone {
                        self.send(&uid, PodEvent::Gone);
                    }
                    if first_list {
                        first_list = false;
                        let live = listed.clone();
                        let dropped = self.ipam.lock().retain(&|uid| live.contains(uid))?;
                        if !dropped.is_empty() {
                            tracing::info!(
                                count = dropped.len(),
                                "released IPs of pods that no longer exist"
                            );
                        }
                    }
                }
                watcher::Event::Apply(pod) => self.dispatch(pod),
                watcher::Event::Delete(pod) => {
                    if let Some(uid) = &pod.metadata.uid {
                        self.send(uid, PodEvent::Gone);
                    }
                }
            }
        }
        Ok(())
    }

    fn send(&self, uid: &str, event: PodEvent) {
        if let Some(tx) = self.workers.lock().get(uid) {
            let _ = tx.send(event);
        }
    }

    fn dispatch(self: &Arc<Self>, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let mut workers = self.workers.lock();
        if let Some(tx) = workers.get(&uid) {
            let _ = tx.send(PodEvent::Update(Box::new(pod)));
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        workers.insert(uid.clone(), tx);
        let agent = self.clone();
        tokio::spawn(async move {
            agent.pod_worker(pod, rx).await;
            agent.workers.lock().remove(&uid);
        });
    }

    /// One pod's life on this node.
    async fn pod_worker(self: &Arc<Self>, pod: Pod, mut events: mpsc::UnboundedReceiver<PodEvent>) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        let finished = matches!(phase.as_deref(), Some("Succeeded" | "Failed"));
        if finished || pod.metadata.deletion_timestamp.is_some() {
            // Never (re)run a finished pod (e.g. after an agent restart); a deleted one that
            // does not run here only needs its final DELETE.
            let mut deleting = pod.metadata.deletion_timestamp.is_some();
            while !deleting {
                match events.recv().await {
                    Some(PodEvent::Update(p)) => deleting = p.metadata.deletion_timestamp.is_some(),
                    Some(PodEvent::Gone) | None => return,
                }
            }
            self.finish_deletion(&pods, &name, &uid).await;
            return;
        }

        // Set up the sandbox, retrying while the pod still exists.
        let ctx = loop {
            match self.create_sandbox(&pod).await {
                Ok(ctx) => break ctx,
                Err(e) => {
                    tracing::warn!(pod = %name, namespace = %namespace, error = %e, "cannot set up pod; retrying");
                    let patch = json!({"status": {"conditions": [
                        {"type": "PodScheduled", "status": "True"},
                        {"type": "Ready", "status": "False", "reason": "SandboxSetupFailed",
                         "message": e.to_string(), "lastTransitionTime": Timestamp::now().to_string()}]}});
                    let _ = pods
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                        .await;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                        event = events.recv() => match event {
                            Some(PodEvent::Update(p)) if p.metadata.deletion_timestamp.is_some() => {
                                self.release(&uid).await;
                                self.finish_deletion(&pods, &name, &uid).await;
                                return;
                            }
                            Some(PodEvent::Update(_)) => {}
                            Some(PodEvent::Gone) | None => {
                                self.release(&uid).await;
                                return;
                            }
                        }
                    }
                }
            }
        };
        self.table
            .write()
            .insert((namespace.clone(), name.clone()), ctx.clone());
        let reporter = tokio::spawn(report_status(pods.clone(), ctx.clone(), pod.status.clone()));
        let recorder = ctx.take_events().map(|rx| {
            tokio::spawn(record_events(
                self.client.clone(),
                ctx.clone(),
                self.config.node_name.clone(),
                rx,
            ))
        });
        let mut running = tokio::spawn(run_pod(ctx.clone()));
        let mut gone = false;
        loop {
            tokio::select! {
                _ = &mut running => break,
                event = events.recv() => match event {
                    Some(PodEvent::Update(p)) => {
                        if p.metadata.deletion_timestamp.is_some() {
                            let grace = p.metadata.deletion_grace_period_seconds.unwrap_or(30);
                            ctx.request_stop(Duration::from_secs(grace.max(0) as u64));
                        }
                    }
                    Some(PodEvent::Gone) | None => {
                        gone = true;
                        ctx.request_stop(Duration::ZERO);
                    }
                },
            }
        }
        // let the last state reach the API before the object goes
        tokio::time::sleep(Duration::from_millis(50)).await;
        reporter.abort();
        // events still queued (e.g. Killing) get a moment to be sent
        if let Some(r) = recorder {
            tokio::time::sleep(Duration::from_millis(100)).await;
            r.abort();
        }
        self.table
            .write()
            .remove(&(namespace.clone(), name.clone()));
        self.release(&uid).await;
        let _ = tokio::fs::remove_dir_all(&ctx.dir).await;
        if !gone {
            self.finish_deletion(&pods, &name, &uid).await;
        }
    }

    async fn create_sandbox(&self, pod: &Pod) -> anyhow::Result<Arc<PodContext>> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let sources = fetch_env_sources(&self.client, &namespace, pod).await?;
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        if host_network {
            // the node's own network: no namespace, no address of its own
            let ctx = PodContext::prepare(
                pod.clone(),
                self.config.node_ip,
                None,
                self.settings.clone(),
                sources,
            )?;
            return Ok(ctx);
        }
        let allocated = self.ipam.lock().allocate(&uid)?;
        let (pod_ip, netns) = if self.isolated {
            let names = PodNetNames::for_uid(&uid);
            // recorded before creation: a crash in between still leaves a trace to clean up
            self.net_state.lock().record(&uid, &names)?;
            net::setup_pod(&names, &self.config.bridge, self.subnet, allocated).await?;
            (IpAddr::V4(allocated), Some(names.netns_path()))
        } else {
            (IpAddr::V4(net::loopback_pod_ip(allocated)), None)
        };
        let ctx = PodContext::prepare(pod.clone(), pod_ip, netns, self.settings.clone(), sources)?;
        Ok(ctx)
    }

    /// Removes the pod's network and gives its IP back.
    async fn release(&self, uid: &str) {
        if self.isolated {
            let names = PodNetNames::for_uid(uid);
            match net::teardown_pod(&names).await {
                Ok(()) => {
                    let _ = self.net_state.lock().forget(uid);
                }
                Err(e) => {
                    tracing::warn!(netns = %names.netns, error = %e, "cannot remove pod network")
                }
            }
        }
        if let Err(e) = self.ipam.lock().release(uid) {
            tracing::warn!(error = %e, "cannot release pod IP");
        }
    }

    /// The kubelet's final word: DELETE with grace period 0 (only this very pod, by UID).
    async fn finish_deletion(&self, pods: &Api<Pod>, name: &str, uid: &str) {
        let params = DeleteParams::default()
            .grace_period(0)
            .preconditions(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            });
        match pods.delete(name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => tracing::warn!(pod = %name, error = %e, "cannot delete pod"),
        }
    }

    async fn stop_everything(&self) {
        let contexts: Vec<Arc<PodContext>> = self.table.read().values().cloned().collect();
        for ctx in &contexts {
            ctx.request_stop(self.config.shutdown_grace);
        }
        let deadline =
            tokio::time::Instant::now() + self.config.shutdown_grace + Duration::from_secs(3);
        for ctx in &contexts {
            let mut rx = ctx.runtime.subscribe();
            let _ = tokio::time::timeout_at(
                deadline,
                rx.wait_for(|rt| {
                    rt.containers
                        .iter()
                        .chain(rt.init_containers.iter())
                        .all(|c| !c.is_running())
                }),
            )
            .await;
        }
        if self.isolated {
            let uids: Vec<String> = self
                .net_state
                .lock()
                .recorded()
                .into_iter()
                .map(|(uid, _)| uid)
                .collect();
            for uid in uids {
                let names = PodNetNames::for_uid(&uid);
                if net::teardown_pod(&names).await.is_ok() {
                    let _ = self.net_state.lock().forget(&uid);
                }
            }
            if let Err(e) = net::teardown_node(&self.node_net).await {
                tracing::warn!(error = %e, "cannot remove the node network");
            }
        }
        for task in self.background.lock().drain(..) {
            task.abort();
        }
    }
}

/// Reads the ConfigMaps and Secrets the pod's env refers to (missing ones are left out; the
/// env resolution reports them unless optional).
async fn fetch_env_sources(
    client: &kube::Client,
    namespace: &str,
    pod: &Pod,
) -> anyhow::Result<StaticEnvSources> {
    let mut sources = StaticEnvSources::default();
    let spec = pod.spec.as_ref();
    let containers = spec
        .map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .into_iter()
        .flatten();
    let (mut cms, mut secrets) = (Vec::new(), Vec::new());
    for c in containers {
        let (a, b) = referenced_sources(c);
        cms.extend(a);
        secrets.extend(b);
    }
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    for name in cms.into_iter().collect::<HashSet<_>>() {
        if let Some(cm) = cm_api.get_opt(&name).await? {
            sources
                .config_maps
                .insert(name, cm.data.unwrap_or_default().into_iter().collect());
        }
    }
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for name in secrets.into_iter().collect::<HashSet<_>>() {
        if let Some(secret) = secret_api.get_opt(&name).await? {
            let mut data: HashMap<String, String> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect();
            data.extend(secret.string_data.unwrap_or_default());
            sources.secrets.insert(name, data);
        }
    }
    Ok(sources)
}

/// Writes the pod's status through `pods/status` whenever it changes.
async fn report_status(pods: Api<Pod>, ctx: Arc<PodContext>, initial: Option<PodStatus>) {
    let mut rx = ctx.runtime.subscribe();
    let mut last: Option<PodStatus> = initial;
    let mut sent_once = false;
    loop {
        let status = {
            let rt = rx.borrow_and_update();
            compute_status(&ctx.pod, &rt, last.as_ref(), Timestamp::now())
        };
        if !sent_once || Some(&status) != last.as_ref() {
            let patch = Patch::Merge(json!({"status": status}));
            match pods
                .patch_status(&ctx.name, &PatchParams::default(), &patch)
                .await
            {
                Ok(_) => {
                    last = Some(status);
                    sent_once = true;
                }
                Err(kube::Error::Api(e)) if e.code == 404 => return,
                Err(e) => {
                    tracing::warn!(pod = %ctx.name, error = %e, "cannot write pod status; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
        // several changes in a burst (all containers starting) become one write
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Posts the pod's events as kubelet does; a repeat of the same event within its series bumps
/// `count` and `lastTimestamp` instead of creating another object.
async fn record_events(
    client: kube::Client,
    ctx: Arc<PodContext>,
    node_name: String,
    mut notes: mpsc::UnboundedReceiver<crate::pod::PodEventNote>,
) {
    use k8s_openapi::api::core::v1::Event;
    let events: Api<Event> = Api::namespaced(client, &ctx.namespace);
    // (reason, message, fieldPath) -> (event name, count)
    let mut series: HashMap<(String, String, Option<String>), (String, i32)> = HashMap::new();
    while let Some(note) = notes.recv().await {
        let now = Timestamp::now();
        let key = (
            note.reason.to_string(),
            note.message.clone(),
            note.field_path.clone(),
        );
        if let Some((name, count)) = series.get_mut(&key) {
            *count += 1;
            let patch = json!({"count": *count, "lastTimestamp": now.to_string()});
            if events
                .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .is_ok()
            {
                continue;
            }
        }
        let name = format!("{}.{:x}", ctx.name, now.as_nanosecond() as u64);
        let event: Event = match serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ctx.namespace},
            "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": ctx.namespace,
                               "name": ctx.name, "uid": ctx.uid, "fieldPath": note.field_path},
            "reason": note.reason, "message": note.message, "type": note.kind,
            "source": {"component": "kubelet", "host": node_name},
            "reportingComponent": "kubelet", "reportingInstance": node_name,
            "firstTimestamp": now.to_string(), "lastTimestamp": now.to_string(), "count": 1,
        })) {
            Ok(e) => e,
            Err(_) => continue,
        };
        match events.create(&PostParams::default(), &event).await {
            Ok(_) => {
                series.insert(key, (name, 1));
            }
            Err(e) => tracing::debug!(pod = %ctx.name, error = %e, "cannot record event"),
        }
    }
}
