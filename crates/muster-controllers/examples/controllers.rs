//! Runs the controllers against the API server of a kubeconfig, like
//! `muster controllers --kubeconfig FILE` will:
//! `cargo run -p muster-controllers --example controllers -- /path/to/kubeconfig`.

use kube::config::{KubeConfigOptions, Kubeconfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: controllers KUBECONFIG"))?;
    let kc = Kubeconfig::read_from(&path)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(config)?;
    let (ready, _) = tokio::sync::watch::channel(false);
    muster_controllers::run(
        client,
        muster_controllers::ControllersConfig::default(),
        ready,
    )
    .await
}
