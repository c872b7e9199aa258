//! muster's HTTPS Kubernetes API server: the part the real `kubectl` talks to.
//!
//! [`start`] loads (or creates) the CA, server certificate and bearer token under the data dir,
//! writes `DIR/kubeconfig`, bootstraps the objects that exist in every cluster, and serves
//! HTTP/1.1 and HTTP/2 over TLS on one port. Everything is stored through the
//! [`muster_store::Store`] trait; this crate holds no object state of its own except the
//! pre-rendered discovery and OpenAPI documents.

// `ApiError` (muster-api's Status error) is large by design and returned everywhere here; boxing
// it at every call would only add noise on the error path.
#![allow(clippy::result_large_err)]

mod alloc;
mod bootstrap;
mod compat;
mod discovery;
mod freshness;
mod handler;
mod http;
mod list;
mod metrics;
mod openapi;
mod pki;
mod query;
mod route;
mod table;
mod watch;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use muster_store::Store;
use parking_lot::Mutex;

pub use alloc::ServiceCidr;
pub use handler::{NodeProxy, NodeProxyRequest};
pub use pki::KUBERNETES_SERVICE_IP;

/// How to run the API server.
pub struct ApiServerConfig {
    /// Holds `pki/` (CA, token) and receives `kubeconfig`.
    pub data_dir: PathBuf,
    /// Where to listen; port 0 picks a free port (see [`ApiServer::local_addr`]).
    pub listen: SocketAddr,
    /// CIDR that Service ClusterIPs are allocated from, e.g. `10.96.0.0/12`.
    pub service_cidr: String,
    pub store: Arc<dyn Store>,
}

/// Components that must report ready before `/readyz` answers `ok`.
#[derive(Clone, Default)]
pub struct Readiness {
    components: Arc<Mutex<BTreeMap<String, bool>>>,
}

/// Held by one component; reports its readiness.
#[derive(Clone)]
pub struct ReadyHandle {
    name: String,
    components: Arc<Mutex<BTreeMap<String, bool>>>,
}

impl Readiness {
    /// Registers a component as not ready yet. `/readyz` fails until it calls
    /// [`ReadyHandle::set_ready`].
    pub fn register(&self, name: &str) -> ReadyHandle {
        self.components.lock().insert(name.to_string(), false);
        ReadyHandle {
            name: name.to_string(),
            components: self.components.clone(),
        }
    }

    /// Every registered component with its state, in name order.
    pub fn snapshot(&self) -> Vec<(String, bool)> {
        self.components
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    pub fn all_ready(&self) -> bool {
        self.components.lock().values().all(|ready| *ready)
    }
}

impl ReadyHandle {
    pub fn set_ready(&self) {
        self.components.lock().insert(self.name.clone(), true);
    }

    pub fn set_not_ready(&self) {
        self.components.lock().insert(self.name.clone(), false);
    }
}

/// A running API server.
pub struct ApiServer {
    local_addr: SocketAddr,
    kubeconfig: PathBuf,
    token: String,
    ca_pem: String,
    readiness: Readiness,
    state: Arc<handler::State>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// Aborted when the server is dropped or shut down.
    _repair: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ApiServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `https://127.0.0.1:6443`: the URL clients dial.
    pub fn url(&self) -> String {
        format!("https://{}", pki::client_address(self.local_addr))
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The bearer token every request must carry.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The CA certificate (PEM) that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Lets the node agent serve `pods/log` and `pods/exec`; until one is set those answer
    /// with an error Status.
    pub fn set_node_proxy(&self, proxy: Arc<dyn NodeProxy>) {
        *self.state.node_proxy.write() = Some(proxy);
    }

    /// Stops accepting, lets in-flight requests finish (at most `grace`), then ends open
    /// streams such as watches.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
        }
    }

    /// Resolves when the server stopped on its own (it only does on a fatal accept error).
    pub async fn wait(&mut self) {
        let _ = (&mut self.task).await;
    }
}

/// Starts the API server; returns once it accepts connections and the bootstrap objects exist.
pub async fn start(config: ApiServerConfig) -> anyhow::Result<ApiServer> {
    // Installing the process-wide provider fails harmlessly when another part of the binary
    // already did.
    let _ = rustls::crypto::ring::default_provider().install_default();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let cidr: ServiceCidr = config.service_cidr.parse()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the API server to {}", config.listen))?;
    let local_addr = listener.local_addr()?;
    let pki = pki::load_or_create(&config.data_dir, local_addr)?;
    let readiness = Readiness::default();
    let state = Arc::new(handler::State::new(
        config.store.clone(),
        pki.token.clone(),
        readiness.clone(),
        cidr,
    ));
    bootstrap::run(&state)
        .await
        .context("creating the bootstrap namespaces and services")?;
    let kubeconfig =
        pki::write_kubeconfig(&config.data_dir, pki::client_address(local_addr), &pki)?;
    let repair = AbortOnDrop(tokio::spawn(repair_allocations(Arc::downgrade(
        &config.store,
    ))));
    let tls = http::tls_config(&pki)?;
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(http::serve(listener, tls, state.clone(), shutdown_rx));
    tracing::info!(
        address = %local_addr,
        "API server is serving; kubeconfig is at {}",
        kubeconfig.display()
    );
    Ok(ApiServer {
        local_addr,
        kubeconfig,
        token: pki.token.clone(),
        ca_pem: pki.ca_pem.clone(),
        readiness,
        state,
        shutdown,
        task,
        _repair: repair,
    })
}

/// How long an allocation no Service holds must stay so before the repair releases it.
const REPAIR_GRACE: Duration = Duration::from_secs(10);
/// How often the repair runs after the one at start (kube-apiserver: every 3 minutes).
const REPAIR_INTERVAL: Duration = Duration::from_secs(180);

/// Releases ClusterIP/NodePort keys left by a crash between allocation and Service write,
/// at start and then periodically; see [`alloc::repair`]. Holds the store only during a
/// pass, so that dropping everything else closes it.
async fn repair_allocations(store: std::sync::Weak<dyn Store>) {
    loop {
        let Some(strong) = store.upgrade() else {
            return;
        };
        let suspects = alloc::unheld_allocations(strong.as_ref()).await;
        drop(strong);
        let outcome = match suspects {
            Ok(suspects) => {
                if !suspects.is_empty() {
                    tokio::time::sleep(REPAIR_GRACE).await;
                }
                let Some(strong) = store.upgrade() else {
                    return;
                };
                alloc::repair(strong.as_ref(), &suspects).await
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(report) => {
                if !report.released.is_empty() || !report.restored.is_empty() {
                    tracing::info!(
                        released = ?report.released,
                        restored = ?report.restored,
                        "repaired ClusterIP/NodePort allocations"
                    );
                }
                if !report.conflicts.is_empty() {
                    tracing::warn!(
                        keys = ?report.conflicts,
                        "Services claim addresses allocated to another Service"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "repairing ClusterIP/NodePort allocations"),
        }
        tokio::time::sleep(REPAIR_INTERVAL).await;
    }
}
