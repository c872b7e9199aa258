//! muster-controllers: the controllers that turn what users declare into what service
//! discovery reads. Each controller is a pure `reconcile` (observed state in, actions out)
//! plus a thin driver that watches through a `kube::Client` and executes the actions.
//!
//! Entry point: [`run`].
//!
//! How the pieces fit:
//! - `runtime`: caches with secondary indexes (labels, owners, namespace, node) kept by
//!   list+watch, and client-go style work queues (a key queued once, synced by one worker at a
//!   time, retried with backoff). Indexes are updated per event, so finding the pods of a
//!   Service or the dependents of an owner never scans everything.
//! - `driver*.rs`: watch handlers that queue keys, and the sync functions that read the caches,
//!   call a pure `reconcile` and execute its plan; `ops` holds the API writes they share
//!   (status patches, deletes that accept "gone", ownerReference changes, pod creation and
//!   deletion with their events).
//! - The DNS critical path: a pod event queues its Services on the EndpointSlice queue; that
//!   sync writes the slices first and then queues the Service for the core/v1 Endpoints, which
//!   a second queue writes, so the slice write never waits for (or competes with) the
//!   Endpoints write. The watch echo of the controller's own write (a resourceVersion the cache
//!   already holds) queues nothing.
//! - `events`: every controller records events through one writer task, which aggregates them
//!   as client-go's recorder does (repeats become a count on one Event, similar ones are
//!   combined), so `kubectl describe` shows "(x5 over 2m)" as on a cluster.

pub mod deployment;
pub mod driver;
pub mod driver_apps;
pub mod driver_gc;
pub mod endpoints;
pub mod events;
pub mod gc;
pub mod leader;
pub mod namespace;
pub mod ops;
pub mod replicaset;
pub mod runtime;
pub mod scheduler;
pub mod statefulset;
pub mod util;

#[cfg(test)]
mod testutil;

use std::sync::Arc;

use kube::Client;
use tokio::sync::watch;

/// How the controllers run.
#[derive(Clone, Debug)]
pub struct ControllersConfig {
    /// Concurrent workers per controller (keys of one controller never sync concurrently
    /// with themselves).
    pub workers: usize,
    /// Workers of the EndpointSlice controller, the one on DNS's critical path (its syncs are
    /// mostly waiting on API writes, so more of them help at scale); as many again write the
    /// core/v1 Endpoints, after the slices.
    pub endpoints_workers: usize,
    /// Who is acting: event `reportingInstance`, lease holder identity.
    pub identity: String,
    /// With several controller processes, only the holder of this Lease acts.
    pub leader_election: Option<leader::LeaderElection>,
}

impl Default for ControllersConfig {
    fn default() -> Self {
        ControllersConfig {
            workers: 4,
            endpoints_workers: 16,
            identity: format!(
                "muster-controllers-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ),
            leader_election: None,
        }
    }
}

/// Runs every controller against the API behind `client` until the process ends or a task
/// fails. `ready` turns true once every informer has listed its resource (with leader
/// election: once this process leads and has synced). Losing the lease ends `run` with an
/// error, as Kubernetes' controller manager exits: the caller restarts or stops.
pub async fn run(
    client: Client,
    config: ControllersConfig,
    ready: watch::Sender<bool>,
) -> anyhow::Result<()> {
    let Some(le) = config.leader_election.clone() else {
        return run_unguarded(client, config, ready).await;
    };
    tracing::info!(identity = %config.identity, lease = %format!("{}/{}", le.namespace, le.name), "waiting to lead");
    leader::acquire(&client, &le, &config.identity).await;
    tracing::info!(identity = %config.identity, "leading");
    let keeper = leader::keep(&client, &le, &config.identity);
    tokio::select! {
        r = run_unguarded(client.clone(), config.clone(), ready.clone()) => r,
        _ = keeper => {
            ready.send_replace(false);
            anyhow::bail!("lost the controllers lease {}/{}", le.namespace, le.name)
        }
    }
}

/// The controllers without a lease gate.
pub async fn run_unguarded(
    client: Client,
    config: ControllersConfig,
    ready: watch::Sender<bool>,
) -> anyhow::Result<()> {
    let ctx = driver::Ctx::new(client, config.identity.clone());
    let mut tasks = tokio::task::JoinSet::new();
    driver::start_informers(&ctx, &mut tasks).await;
    spawn_controllers(&ctx, &mut tasks, &config);
    tracing::info!("controllers synced and running");
    ready.send_replace(true);
    while let Some(done) = tasks.join_next().await {
        done?;
    }
    Ok(())
}

fn spawn_controllers(
    ctx: &Arc<driver::Ctx>,
    tasks: &mut tokio::task::JoinSet<()>,
    config: &ControllersConfig,
) {
    let w = config.workers;
    driver::spawn_workers(
        ctx,
        tasks,
        "endpoints",
        ctx.q_endpoints.clone(),
        config.endpoints_workers,
        driver::sync_service,
    );
    driver::spawn_workers(
        ctx,
        tasks,
        "endpoints-legacy",
        ctx.q_legacy_endpoints.clone(),
        config.endpoints_workers,
        driver::sync_legacy_endpoints,
    );
    driver::spawn_workers(
        ctx,
        tasks,
        "replicaset",
        ctx.q_replicasets.clone(),
        w,
        driver::sync_replicaset,
    );
    // One scheduler worker: decisions depend on the previous ones (node load).
    driver::spawn_workers(
        ctx,
        tasks,
        "scheduler",
        ctx.q_scheduler.clone(),
        1,
        driver::sync_pod_schedule,
    );
    let more: [(&'static str, Arc<runtime::WorkQueue>, usize, driver::SyncFn); 4] = [
        (
            "deployment",
            ctx.q_deployments.clone(),
            w,
            driver_apps::sync_deployment,
        ),
        (
            "statefulset",
            ctx.q_statefulsets.clone(),
            w,
            driver_apps::sync_statefulset,
        ),
        ("garbage-collector", ctx.q_gc.clone(), w, driver_gc::sync_gc),
        // Namespace deletion walks discovery; one at a time is plenty.
        (
            "namespace",
            ctx.q_namespaces.clone(),
            1,
            driver_gc::sync_namespace,
        ),
    ];
    for (name, queue, workers, sync) in more {
        driver::spawn_workers(ctx, tasks, name, queue, workers, sync);
    }
}
