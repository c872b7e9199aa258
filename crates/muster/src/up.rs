//! `muster up`: every piece in one process, started in dependency order. Each piece registers
//! with the API server's readiness so `/readyz` answers `ok` only when all of them are ready.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::apiserver_cmd;
use crate::cli::UpArgs;
use crate::components;

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    // 1. Store and API server.
    let mut api = apiserver_cmd::start(&args.apiserver).await?;
    api.set_node_proxy(std::sync::Arc::new(components::AgentProxy {
        token: api.token().to_string(),
    }));
    let client = components::client_from_kubeconfig(api.kubeconfig_path()).await?;
    let mut tasks: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    let (stop_tx, stop_rx) = watch::channel(false);

    // 2. Controllers.
    let controllers_ready = api.readiness().register("controllers");
    let (ready_tx, ready_rx) = watch::channel(false);
    let controllers_client = client.clone();
    tasks.spawn(async move {
        let config = muster_controllers::ControllersConfig::default();
        (
            "controllers",
            muster_controllers::run(controllers_client, config, ready_tx).await,
        )
    });
    tokio::spawn(mark_ready(ready_rx, controllers_ready));

    // 3. The node agent (unless --no-agent). It sets up the pod network, including the DNS
    //    service IP on the node, so it starts before the DNS listens there.
    let agent_enabled = !args.no_agent;
    let mut agent: Option<tokio::task::JoinHandle<anyhow::Result<()>>> = None;
    if agent_enabled {
        let node_name = args.node_name.clone().unwrap_or_else(components::host_name);
        let config = components::agent_config(
            &node_name,
            args.apiserver.data_dir.join("agent"),
            api.token(),
            &args.pod_cidr,
            args.dns_service_ip,
            &args.cluster_domain,
        )?;
        let agent_client = client.clone();
        let mut stop = stop_rx.clone();
        agent = Some(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            muster_agent::run_until(agent_client, config, shutdown).await
        }));
    }

    // 4. Cluster DNS, on --dns-listen and, with the agent, on the DNS service IP inside the pod
    //    network.
    let dns_ready = api.readiness().register("dns");
    let (ready_tx, ready_rx) = watch::channel(false);
    let mut listen = vec![args.dns_listen];
    if agent_enabled && nix::unistd::geteuid().is_root() {
        let service_addr = SocketAddr::new(args.dns_service_ip, 53);
        if wait_until_local(args.dns_service_ip, Duration::from_secs(10)).await {
            listen.push(service_addr);
        } else {
            tracing::warn!(
                "{} is not an address of this node after 10s: the DNS serves only {}",
                args.dns_service_ip,
                args.dns_listen
            );
        }
    }
    let dns_config = components::dns_config(
        listen,
        &args.cluster_domain,
        args.dns_upstream,
        Some(
            args.dns_metrics_listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        ),
        args.dns_service_ip,
    );
    let dns_client = client.clone();
    tasks.spawn(async move {
        (
            "dns",
            muster_dns::run(dns_config, dns_client, ready_tx).await,
        )
    });
    tokio::spawn(mark_ready(ready_rx, dns_ready));

    let mut agent_finished = false;
    let agent_ended = async {
        match agent.as_mut() {
            Some(handle) => handle.await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        r = apiserver_cmd::shutdown_signal() => r,
        _ = api.wait() => Err(anyhow::anyhow!("the API server stopped unexpectedly")),
        Some(done) = tasks.join_next() => match done {
            Ok((name, Ok(()))) => Err(anyhow::anyhow!("{name} stopped unexpectedly")),
            Ok((name, Err(e))) => Err(e.context(format!("{name} failed"))),
            Err(e) => Err(anyhow::Error::from(e).context("a component panicked")),
        },
        done = agent_ended => {
            let result = match done {
                Ok(Ok(())) => Err(anyhow::anyhow!("the node agent stopped unexpectedly")),
                Ok(Err(e)) => Err(e.context("the node agent failed")),
                Err(e) => Err(anyhow::Error::from(e).context("the node agent panicked")),
            };
            agent_finished = true;
            result
        }
    };

    // Stop in reverse order: the agent stops its pods and removes their namespaces and links
    // while the API server still answers; the API server goes last.
    let _ = stop_tx.send(true);
    if let Some(handle) = agent.filter(|_| !agent_finished) {
        match tokio::time::timeout(Duration::from_secs(60), handle).await {
            Ok(Ok(Err(e))) => tracing::warn!("the node agent stopped with an error: {e:#}"),
            Ok(_) => {}
            Err(_) => tracing::warn!("the node agent did not stop within 60s"),
        }
    }
    tasks.abort_all();
    api.shutdown(Duration::from_secs(2)).await;
    outcome.context("muster up")
}

/// Reports a component ready to the API server's `/readyz` once it says so.
async fn mark_ready(mut ready: watch::Receiver<bool>, handle: muster_apiserver::ReadyHandle) {
    if ready.wait_for(|r| *r).await.is_ok() {
        handle.set_ready();
    }
}

/// Waits until `ip` is an address of this host (the agent puts the DNS service IP on the node).
async fn wait_until_local(ip: IpAddr, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
