//! `muster up`: every piece in one process, started in dependency order. Each piece registers
//! with the API server's readiness so `/readyz` answers `ok` only when all of them are ready.

use std::time::Duration;

use crate::apiserver_cmd;
use crate::cli::UpArgs;

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    // 1. Store and API server.
    let mut api = apiserver_cmd::start(&args.apiserver).await?;
    // 2. Controllers, DNS and the node agent slot in here: each calls
    //    `api.readiness().register("<name>")` before starting and `set_ready()` once serving,
    //    and connects with `api.kubeconfig_path()` (or `api.url()`, `api.token()`,
    //    `api.ca_pem()`).
    tokio::select! {
        r = apiserver_cmd::shutdown_signal() => r?,
        _ = api.wait() => anyhow::bail!("the API server stopped unexpectedly"),
    }
    // Stop in reverse order; the API server goes last.
    api.shutdown(Duration::from_secs(2)).await;
    Ok(())
}
