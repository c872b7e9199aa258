//! `muster apiserver`: the store plus the API server, until SIGTERM or Ctrl-C.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use muster_store::Store;

use crate::cli::{ApiserverArgs, StoreArgs, StoreKind};

/// Opens the object store the flags select.
pub async fn open_store(
    data_dir: &std::path::Path,
    args: &StoreArgs,
) -> anyhow::Result<Arc<dyn Store>> {
    match args.store {
        StoreKind::Redb => {
            let path = data_dir.join("store.redb");
            let store = muster_store::RedbStore::open(&path, muster_store::StoreOptions::default())
                .with_context(|| format!("opening the store at {}", path.display()))?;
            Ok(store)
        }
        #[cfg(feature = "etcd")]
        StoreKind::Etcd => {
            let store = muster_store::EtcdStore::connect(
                &args.etcd_endpoints,
                muster_store::EtcdOptions::default(),
            )
            .await
            .with_context(|| format!("connecting to etcd at {:?}", args.etcd_endpoints))?;
            Ok(store)
        }
        #[cfg(not(feature = "etcd"))]
        StoreKind::Etcd => anyhow::bail!(
            "--store etcd needs a muster built with `--features etcd` (endpoints: {:?}); use --store redb",
            args.etcd_endpoints
        ),
    }
}

/// Opens the store and starts the API server.
pub async fn start(args: &ApiserverArgs) -> anyhow::Result<muster_apiserver::ApiServer> {
    let store = open_store(&args.data_dir, &args.store).await?;
    muster_apiserver::start(muster_apiserver::ApiServerConfig {
        data_dir: args.data_dir.clone(),
        listen: args.api_listen,
        service_cidr: args.service_cidr.clone(),
        store,
    })
    .await
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        r = tokio::signal::ctrl_c() => { r?; tracing::info!("interrupted: shutting down") }
    }
    Ok(())
}

pub async fn run(args: ApiserverArgs) -> anyhow::Result<()> {
    let mut api = start(&args).await?;
    // Agents run elsewhere (`muster agent`): logs and exec go to the one on the pod's node.
    api.set_node_proxy(Arc::new(crate::components::AgentProxy {
        token: api.token().to_string(),
    }));
    tokio::select! {
        r = shutdown_signal() => r?,
        _ = api.wait() => anyhow::bail!("the API server stopped unexpectedly"),
    }
    api.shutdown(Duration::from_secs(2)).await;
    Ok(())
}
