//! The command-line contract (see DESIGN.md: change it only by adding).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "muster",
    version,
    about = "A small, fast, Kubernetes-compatible control plane built around service discovery"
)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `muster_dns=debug`.
    #[arg(long, global = true, env = "MUSTER_LOG", default_value = "info")]
    pub log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run everything in the foreground: API server, controllers, DNS and the node agent.
    Up(UpArgs),
    /// Run only the API server.
    Apiserver(ApiserverArgs),
    /// Run only the controllers, against any muster API server.
    Controllers(ControllersArgs),
    /// Run only the cluster DNS, against any Kubernetes API server.
    Dns(DnsArgs),
    /// Run only the node agent, against any muster API server.
    Agent(AgentArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    Redb,
    Etcd,
}

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Where objects live: the embedded redb file under the data dir, or an etcd cluster.
    #[arg(long, value_enum, default_value = "redb")]
    pub store: StoreKind,
    /// Comma-separated etcd client URLs, all http:// or all https:// (with `--store etcd`).
    #[arg(long, value_delimiter = ',', visible_alias = "etcd-servers")]
    pub etcd_endpoints: Vec<String>,
    /// Put in front of every key in etcd, e.g. `/cluster-a` stores `/cluster-a/registry/...`,
    /// so that several clusters can share one etcd (default: none, keys are `/registry/...`).
    #[arg(long)]
    pub etcd_prefix: Option<String>,
    /// CA that signed the etcd members' serving certificates (needed for https:// endpoints).
    #[arg(long)]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate for etcd's `--client-cert-auth` (with --etcd-keyfile).
    #[arg(long)]
    pub etcd_certfile: Option<PathBuf>,
    /// Key of --etcd-certfile.
    #[arg(long)]
    pub etcd_keyfile: Option<PathBuf>,
    /// How long one etcd request may take before the API answers 504 Timeout, e.g. `5s`,
    /// `1500ms` (default 5s).
    #[arg(long, value_parser = parse_duration)]
    pub etcd_request_timeout: Option<Duration>,
}

/// A duration as Kubernetes flags take it: a number with a unit (`ms`, `s`, `m`, `h`),
/// e.g. `500ms`, `5s`, `1.5m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration such as 5s, 500ms or 1m");
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.trim().parse().map_err(|_| bad())?;
    let seconds_per_unit = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let seconds = number * seconds_per_unit;
    if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[derive(Args, Debug, Clone)]
pub struct ApiserverArgs {
    /// Directory for the store, the CA, certificates, token and kubeconfig.
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub api_listen: SocketAddr,
    /// Service CIDR that ClusterIPs are allocated from.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cidr: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    #[command(flatten)]
    pub apiserver: ApiserverArgs,
    #[arg(long, default_value = "127.0.0.1:5353")]
    pub dns_listen: SocketAddr,
    /// Where names outside the cluster zones go (default: the host's resolv.conf nameservers).
    #[arg(long)]
    pub dns_upstream: Option<SocketAddr>,
    /// Run no pods: controllers create them, a client may play the node through `pods/status`.
    #[arg(long)]
    pub no_agent: bool,
    /// Pod CIDR; each node gets a /24 of it.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub pod_cidr: String,
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Cluster IP of the DNS service (`kube-dns`).
    #[arg(long, default_value = "10.96.0.10")]
    pub dns_service_ip: std::net::IpAddr,
    /// Address of the DNS's `/health`, `/ready`, `/metrics` and `/explain` endpoints
    /// (default: a free loopback port, logged at start).
    #[arg(long)]
    pub dns_metrics_listen: Option<SocketAddr>,
    /// Node name of the embedded agent (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ControllersArgs {
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// How long the controllers' Lease (kube-system/muster-controllers) stays valid without
    /// renewal: a standby takes over at most this long after the leader dies. Whole seconds.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub leader_elect_lease_duration: Duration,
    /// How often the leader renews the Lease and a standby checks whether it expired.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub leader_elect_retry_period: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct DnsArgs {
    #[arg(long)]
    pub kubeconfig: PathBuf,
    #[arg(long, default_value = "127.0.0.1:5353")]
    pub listen: SocketAddr,
    #[arg(long, default_value = "cluster.local")]
    pub domain: String,
    /// Where names outside the cluster zones go (default: the host's resolv.conf nameservers).
    #[arg(long)]
    pub upstream: Option<SocketAddr>,
    /// Address of the health, readiness and metrics endpoints.
    #[arg(long, default_value = "127.0.0.1:9153")]
    pub metrics_listen: SocketAddr,
}

#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    #[arg(long)]
    pub kubeconfig: PathBuf,
    #[arg(long)]
    pub node_name: String,
    #[arg(long, default_value = "10.244.0.0/16")]
    pub pod_cidr: String,
}

pub fn init_tracing(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => crate::up::run(args).await,
        Command::Apiserver(args) => crate::apiserver_cmd::run(args).await,
        Command::Controllers(args) => crate::components::run_controllers(args).await,
        Command::Dns(args) => crate::components::run_dns(args).await,
        Command::Agent(args) => crate::components::run_agent(args).await,
    }
}
