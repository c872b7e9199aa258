//! Wiring of the API clients (controllers, DNS, node agent): each runs the same code whether it
//! shares the `muster up` process with the API server or runs alone against any API server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::cli::{AgentArgs, ControllersArgs, DnsArgs};

/// A `kube::Client` from a kubeconfig file (its current context).
pub async fn client_from_kubeconfig(path: &Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .with_context(|| format!("loading kubeconfig {}", path.display()))?;
    kube::Client::try_from(config).context("building the API client")
}

/// The bearer token of the kubeconfig's current user: the agent's exec/log server requires the
/// same token the API server sends when it proxies `pods/exec` and `pods/log`.
pub fn kubeconfig_token(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let named = |list: &str, name: &str| -> Option<serde_yaml::Value> {
        doc.get(list)?
            .as_sequence()?
            .iter()
            .find(|e| e.get("name").and_then(|n| n.as_str()) == Some(name))
            .cloned()
    };
    let context = doc
        .get("current-context")
        .and_then(|c| c.as_str())
        .unwrap_or_default();
    let user = named("contexts", context)
        .and_then(|c| c.get("context")?.get("user")?.as_str().map(str::to_string))
        .unwrap_or_default();
    named("users", &user)
        .and_then(|u| u.get("user")?.get("token")?.as_str().map(str::to_string))
        .with_context(|| format!("the current user of {} has no bearer token", path.display()))
}

/// The DNS configuration shared by `muster dns` and `muster up`.
pub fn dns_config(
    listen: Vec<SocketAddr>,
    domain: &str,
    upstream: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    dns_ip: IpAddr,
) -> muster_dns::DnsConfig {
    muster_dns::DnsConfig {
        listen,
        domain: domain.to_string(),
        upstreams: upstream.map(|u| vec![u]),
        metrics_listen,
        dns_ips: vec![dns_ip],
        ..muster_dns::DnsConfig::default()
    }
}

/// The Lease settings of `muster controllers`, checked.
pub fn leader_election(
    args: &ControllersArgs,
) -> anyhow::Result<muster_controllers::leader::LeaderElection> {
    let lease = args.leader_elect_lease_duration;
    let retry = args.leader_elect_retry_period;
    // A Lease holds whole seconds.
    if lease < Duration::from_secs(1) || lease.subsec_nanos() != 0 {
        anyhow::bail!("--leader-elect-lease-duration must be whole seconds, at least 1s");
    }
    if retry.is_zero() || retry >= lease {
        anyhow::bail!(
            "--leader-elect-retry-period ({retry:?}) must be more than zero and shorter than \
             --leader-elect-lease-duration ({lease:?}), or the leader loses its lease"
        );
    }
    Ok(muster_controllers::leader::LeaderElection {
        lease_duration: lease,
        renew_interval: retry,
        ..Default::default()
    })
}

pub async fn run_controllers(args: ControllersArgs) -> anyhow::Result<()> {
    let leader_election = leader_election(&args)?;
    let client = client_from_kubeconfig(&args.kubeconfig).await?;
    let config = muster_controllers::ControllersConfig {
        // Separate controller processes elect one leader through a Lease.
        leader_election: Some(leader_election),
        ..Default::default()
    };
    let (ready, _) = watch::channel(false);
    tokio::select! {
        r = muster_controllers::run(client, config, ready) => r,
        r = crate::apiserver_cmd::shutdown_signal() => r,
    }
}

pub async fn run_dns(args: DnsArgs) -> anyhow::Result<()> {
    let client = client_from_kubeconfig(&args.kubeconfig).await?;
    let config = dns_config(
        vec![args.listen],
        &args.domain,
        args.upstream,
        Some(args.metrics_listen),
        IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)),
    );
    let (ready, _) = watch::channel(false);
    tokio::select! {
        r = muster_dns::run(config, client, ready) => r,
        r = crate::apiserver_cmd::shutdown_signal() => r,
    }
}

/// The agent's configuration for a node.
pub fn agent_config(
    node_name: &str,
    data_dir: PathBuf,
    token: &str,
    pod_cidr: &str,
    cluster_dns: IpAddr,
    cluster_domain: &str,
) -> anyhow::Result<muster_agent::AgentConfig> {
    let mut config = muster_agent::AgentConfig::new(node_name, data_dir, token);
    config.cluster_pod_cidr = pod_cidr
        .parse()
        .map_err(|e| anyhow::anyhow!("--pod-cidr {pod_cidr}: {e:?}"))?;
    config.cluster_dns = cluster_dns;
    config.cluster_domain = cluster_domain.to_string();
    Ok(config)
}

pub async fn run_agent(args: AgentArgs) -> anyhow::Result<()> {
    let client = client_from_kubeconfig(&args.kubeconfig).await?;
    let token = kubeconfig_token(&args.kubeconfig)?;
    let data_dir = std::env::var_os("MUSTER_AGENT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/muster/agent").join(&args.node_name));
    let config = agent_config(
        &args.node_name,
        data_dir,
        &token,
        &args.pod_cidr,
        IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)),
        "cluster.local",
    )?;
    let shutdown = async {
        if let Err(e) = crate::apiserver_cmd::shutdown_signal().await {
            tracing::warn!("signal handling failed: {e:#}");
        }
    };
    muster_agent::run_until(client, config, shutdown).await
}

/// The node name `muster up` gives its embedded agent when `--node-name` is not set.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "muster-node".to_string())
}

/// Serves `pods/log` and `pods/exec` by forwarding them to the agent on the pod's node, with
/// the cluster's bearer token (the agents require the token their kubeconfig carries).
pub struct AgentProxy {
    pub token: String,
}

impl muster_apiserver::NodeProxy for AgentProxy {
    fn proxy(
        &self,
        req: muster_apiserver::NodeProxyRequest,
    ) -> futures::future::BoxFuture<'static, http::Response<axum::body::Body>> {
        let token = self.token.clone();
        Box::pin(async move {
            muster_agent::proxy::forward(
                req.node_address,
                &token,
                &req.namespace,
                &req.pod,
                &req.subresource,
                req.request,
            )
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn lease_flags_are_checked() {
        let secs = Duration::from_secs;
        // (flags, Ok((lease, renew)) or Err(part of the message))
        type Want = Result<(Duration, Duration), &'static str>;
        let cases: &[(&str, Want)] = &[
            ("", Ok((secs(15), secs(2)))),
            (
                "--leader-elect-lease-duration 3s --leader-elect-retry-period 500ms",
                Ok((secs(3), Duration::from_millis(500))),
            ),
            ("--leader-elect-lease-duration 1500ms", Err("whole seconds")),
            ("--leader-elect-lease-duration 0s", Err("whole seconds")),
            ("--leader-elect-lease-duration 2s", Err("shorter than")),
            ("--leader-elect-retry-period 0s", Err("more than zero")),
            ("--leader-elect-retry-period 2", Err("not a duration")),
        ];
        for (flags, want) in cases {
            let argv = format!("muster controllers --kubeconfig k {flags}");
            let got = Cli::try_parse_from(argv.split_whitespace())
                .map_err(|e| e.to_string())
                .and_then(|cli| match cli.command {
                    Command::Controllers(args) => leader_election(&args).map_err(|e| e.to_string()),
                    _ => unreachable!("parsed as controllers"),
                })
                .map(|le| (le.lease_duration, le.renew_interval));
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, *want, "{flags}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{flags}: {got}"),
                (got, want) => panic!("{flags}: got {got:?}, want {want:?}"),
            }
        }
    }
}
