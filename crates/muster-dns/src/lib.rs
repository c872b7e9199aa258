//! muster-dns: the cluster DNS of muster — a Kubernetes DNS-Based Service Discovery 1.1.0
//! server that answers from an in-memory snapshot of the API's Services, EndpointSlices,
//! Namespaces (and Pods in verified mode), kept current by watches.
//!
//! Layers, each usable alone:
//! - [`wire`]: the query parser and response writer (no allocation).
//! - [`zone`]: [`Zone`] snapshots and the [`ZoneBuilder`] that turns objects and watch deltas
//!   into them ([`Zone::from_objects`] for tests and benchmarks).
//! - [`query`]: [`answer`], one packet in, one response out, no lock and no allocation.
//!   The RFC-vs-CoreDNS decisions are written down there.
//! - [`server`]: UDP (`recvmmsg`/`sendmmsg` worker threads) and TCP servers.
//! - [`forward`]: upstream forwarding with TCP retry and loop detection; ExternalName chains
//!   that leave the cluster zone (chains inside it are followed by [`query`]).
//!
//! Fuzzing: two cargo-fuzz targets in `fuzz/` (the query parser and engine on any bytes; the
//! whole path on fuzzer-made cluster data); how they are run and what they covered is in
//! `fuzz/README.md`.
//! - [`sync`]: the `kube` watchers; SERVFAIL until the first full list.
//! - [`http`], [`metrics`], [`explain`]: `/health`, `/ready`, `/metrics`, `/explain`.
//!
//! [`run`] wires them together; it is what `muster dns` and `muster up` call.
//!
//! Decisions that are not about one query:
//! - No positive or negative cache sits in front of cluster data: every answer is computed from
//!   the newest snapshot, which is replaced as soon as a watch event arrives.
//! - Recursion (forwarding) is offered to loopback clients and to `recursion_clients`
//!   (by default the pod and service CIDRs); others get REFUSED for non-cluster names.
//! - Pod records default to CoreDNS's `pods insecure`, which needs no pod watch (CoreDNS's
//!   verified mode and its memory cost are available as [`PodMode::Verified`]).

pub mod explain;
pub mod forward;
pub mod http;
pub mod metrics;
pub mod query;
pub mod server;
pub mod sync;
pub mod wire;
pub mod zone;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub use query::{ClientInfo, Outcome, answer};
pub use server::{Cidr, ServerHandle, Shared};
pub use zone::{PodMode, Zone, ZoneBuilder, ZoneSettings};

/// Everything `muster dns` and `muster up` configure.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// UDP and TCP listen addresses (port 0 picks a free port, the same for UDP and TCP).
    pub listen: Vec<SocketAddr>,
    /// Cluster domain, e.g. `cluster.local`.
    pub domain: String,
    /// Upstream resolvers; None reads the host's `/etc/resolv.conf`.
    pub upstreams: Option<Vec<SocketAddr>>,
    /// TTL of cluster records and negative answers.
    pub ttl: u32,
    /// Where `/health`, `/ready`, `/metrics` and `/explain` are served (None: not served).
    pub metrics_listen: Option<SocketAddr>,
    /// Clients besides loopback that may use forwarding (the pod and service CIDRs).
    pub recursion_clients: Vec<Cidr>,
    /// The DNS service's own addresses: glue for `ns.dns.<zone>`.
    pub dns_ips: Vec<IpAddr>,
    pub pods: PodMode,
    /// UDP worker threads per listen address.
    pub udp_workers: usize,
    /// How long one upstream gets to answer.
    pub forward_timeout: Duration,
    /// A TCP connection with no complete query for this long is closed.
    pub tcp_idle_timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 5353))],
            domain: "cluster.local".into(),
            upstreams: None,
            ttl: 5,
            metrics_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 9153))),
            recursion_clients: vec![
                Cidr {
                    addr: IpAddr::V4(Ipv4Addr::new(10, 244, 0, 0)),
                    prefix: 16,
                },
                Cidr {
                    addr: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 0)),
                    prefix: 12,
                },
            ],
            dns_ips: vec![IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10))],
            pods: PodMode::Insecure,
            udp_workers: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
            forward_timeout: Duration::from_secs(2),
            tcp_idle_timeout: Duration::from_secs(10),
        }
    }
}

impl DnsConfig {
    pub fn zone_settings(&self) -> ZoneSettings {
        ZoneSettings {
            domain: self.domain.trim_end_matches('.').to_ascii_lowercase(),
            ttl: self.ttl,
            dns_ips: self.dns_ips.clone(),
            pods: self.pods,
        }
    }

    /// The upstreams to use: configured ones, else resolv.conf's, never one of our own addresses.
    pub fn resolve_upstreams(&self) -> Vec<SocketAddr> {
        let list = match &self.upstreams {
            Some(u) => u.clone(),
            None => std::fs::read_to_string("/etc/resolv.conf")
                .map(|t| forward::resolv_conf_nameservers(&t))
                .unwrap_or_default(),
        };
        list.into_iter()
            .filter(|u| {
                let ours = self.listen.contains(u);
                if ours {
                    tracing::warn!(upstream = %u, "ignoring an upstream that is this server (forwarding loop)");
                }
                !ours
            })
            .collect()
    }
}

/// A DNS server that is up: its bound addresses and the shared state (zone, metrics).
pub struct Dns {
    pub shared: Arc<Shared>,
    pub servers: ServerHandle,
    pub metrics_addr: Option<SocketAddr>,
    metrics_task: Option<tokio::task::JoinHandle<()>>,
}

impl Dns {
    /// Binds every listener and serves `zone` (an empty unsynced zone answers SERVFAIL).
    pub async fn start(config: &DnsConfig, zone: Zone) -> anyhow::Result<Dns> {
        let metrics = Arc::new(metrics::Metrics::default());
        let forwarder = Arc::new(forward::Forwarder::new(
            config.resolve_upstreams(),
            config.forward_timeout,
            metrics.clone(),
        ));
        let mut shared = Shared::new(
            zone,
            metrics,
            forwarder,
            config.recursion_clients.clone(),
            tokio::runtime::Handle::current(),
        );
        shared.tcp_idle = config.tcp_idle_timeout;
        let shared = Arc::new(shared);
        let servers = server::serve(shared.clone(), &config.listen, config.udp_workers).await?;
        let (metrics_addr, metrics_task) = match config.metrics_listen {
            Some(addr) => {
                let (a, t) = http::serve(addr, shared.clone()).await?;
                (Some(a), Some(t))
            }
            None => (None, None),
        };
        Ok(Dns {
            shared,
            servers,
            metrics_addr,
            metrics_task,
        })
    }

    /// Replaces the served zone (tests and tools that build zones themselves).
    pub fn set_zone(&self, zone: Zone) {
        self.shared.zone.store(Arc::new(zone));
    }

    /// Stops the servers and waits for the UDP threads.
    pub fn shutdown(mut self) {
        if let Some(t) = self.metrics_task.take() {
            t.abort();
        }
        self.servers.stop_and_join();
    }
}

/// Dropping a running server (e.g. with `run`'s future) stops everything it started: the UDP
/// threads and TCP listeners through [`ServerHandle`]'s own drop, the ops endpoint here.
impl Drop for Dns {
    fn drop(&mut self) {
        if let Some(t) = self.metrics_task.take() {
            t.abort();
        }
    }
}

/// Runs the cluster DNS against the API server behind `client` until an error or until the
/// returned future is dropped (which stops the servers). `ready` turns true after the first
/// full sync; before it every cluster name answers SERVFAIL.
pub async fn run(
    config: DnsConfig,
    client: kube::Client,
    ready: tokio::sync::watch::Sender<bool>,
) -> anyhow::Result<()> {
    let settings = config.zone_settings();
    let builder = ZoneBuilder::new(settings.clone())?;
    let dns = Dns::start(&config, Zone::empty(settings)?).await?;
    tracing::info!(
        udp = ?dns.servers.udp_addrs,
        metrics = ?dns.metrics_addr,
        upstreams = ?dns.shared.forwarder_upstreams(),
        "cluster DNS started; waiting for the first sync"
    );
    let result = sync::run_sync(
        client,
        builder,
        dns.shared.clone(),
        ready,
        config.pods == PodMode::Verified,
    )
    .await;
    dns.shutdown();
    result
}
