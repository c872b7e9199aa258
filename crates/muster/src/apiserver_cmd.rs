//! `muster apiserver`: the store plus the API server, until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use muster_store::Store;

use crate::cli::{ApiserverArgs, StoreArgs, StoreKind};

/// The etcd settings the flags give, checked for combinations that cannot work.
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    pub key_prefix: String,
    /// CA of the members' serving certificates: TLS is on exactly when it is given.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and its key.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub request_timeout: Option<Duration>,
}

/// Checks the store flags; with `--store etcd`, returns the etcd settings.
pub fn check_store_args(args: &StoreArgs) -> anyhow::Result<Option<EtcdSettings>> {
    let etcd_flags: [(&str, bool); 6] = [
        ("--etcd-endpoints", !args.etcd_endpoints.is_empty()),
        ("--etcd-prefix", args.etcd_prefix.is_some()),
        ("--etcd-cafile", args.etcd_cafile.is_some()),
        ("--etcd-certfile", args.etcd_certfile.is_some()),
        ("--etcd-keyfile", args.etcd_keyfile.is_some()),
        (
            "--etcd-request-timeout",
            args.etcd_request_timeout.is_some(),
        ),
    ];
    if args.store != StoreKind::Etcd {
        if let Some((flag, _)) = etcd_flags.iter().find(|(_, given)| *given) {
            anyhow::bail!("{flag} only applies with --store etcd");
        }
        return Ok(None);
    }
    if args.etcd_endpoints.is_empty() {
        anyhow::bail!("--store etcd needs --etcd-endpoints URL[,URL...]");
    }
    let mut schemes = std::collections::BTreeSet::new();
    for url in &args.etcd_endpoints {
        let scheme = ["http://", "https://"]
            .into_iter()
            .find(|s| url.starts_with(s) && url.len() > s.len())
            .with_context(|| {
                format!("--etcd-endpoints: {url:?} is not an http:// or https:// URL")
            })?;
        schemes.insert(scheme);
    }
    if schemes.len() > 1 {
        anyhow::bail!("--etcd-endpoints: use either http:// or https:// for every member");
    }
    let tls = schemes.contains("https://");
    let client_cert = match (&args.etcd_certfile, &args.etcd_keyfile) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        (None, None) => None,
        (Some(_), None) => anyhow::bail!("--etcd-certfile needs --etcd-keyfile"),
        (None, Some(_)) => anyhow::bail!("--etcd-keyfile needs --etcd-certfile"),
    };
    match (tls, &args.etcd_cafile) {
        (true, None) => anyhow::bail!(
            "https:// etcd endpoints need --etcd-cafile (the CA that signed etcd's certificates)"
        ),
        (false, Some(_)) => {
            anyhow::bail!("--etcd-cafile is for https:// endpoints; the given ones are http://")
        }
        (false, None) if client_cert.is_some() => anyhow::bail!(
            "--etcd-certfile/--etcd-keyfile need https:// endpoints and --etcd-cafile"
        ),
        _ => {}
    }
    let key_prefix = args.etcd_prefix.clone().unwrap_or_default();
    if !key_prefix.is_empty() && (!key_prefix.starts_with('/') || key_prefix.ends_with('/')) {
        anyhow::bail!(
            "--etcd-prefix {key_prefix:?} must start with '/' and not end with one, e.g. /cluster-a"
        );
    }
    if args.etcd_request_timeout == Some(Duration::ZERO) {
        anyhow::bail!("--etcd-request-timeout must be more than zero");
    }
    Ok(Some(EtcdSettings {
        endpoints: args.etcd_endpoints.clone(),
        key_prefix,
        ca_file: args.etcd_cafile.clone(),
        client_cert,
        request_timeout: args.etcd_request_timeout,
    }))
}

#[cfg(feature = "etcd")]
fn etcd_options(settings: &EtcdSettings) -> muster_store::EtcdOptions {
    let defaults = muster_store::EtcdOptions::default();
    muster_store::EtcdOptions {
        key_prefix: settings.key_prefix.clone(),
        tls: settings
            .ca_file
            .as_ref()
            .map(|ca_file| muster_store::EtcdTls {
                ca_file: ca_file.clone(),
                cert_file: settings.client_cert.as_ref().map(|(cert, _)| cert.clone()),
                key_file: settings.client_cert.as_ref().map(|(_, key)| key.clone()),
            }),
        request_timeout: settings.request_timeout.unwrap_or(defaults.request_timeout),
        ..defaults
    }
}

/// Opens the object store the flags select.
pub async fn open_store(
    data_dir: &std::path::Path,
    args: &StoreArgs,
) -> anyhow::Result<Arc<dyn Store>> {
    let etcd = check_store_args(args)?;
    match etcd {
        None => {
            let path = data_dir.join("store.redb");
            let store = muster_store::RedbStore::open(&path, muster_store::StoreOptions::default())
                .with_context(|| format!("opening the store at {}", path.display()))?;
            Ok(store)
        }
        #[cfg(feature = "etcd")]
        Some(settings) => {
            let store =
                muster_store::EtcdStore::connect(&settings.endpoints, etcd_options(&settings))
                    .await
                    .with_context(|| format!("connecting to etcd at {:?}", settings.endpoints))?;
            Ok(store)
        }
        #[cfg(not(feature = "etcd"))]
        Some(settings) => anyhow::bail!(
            "--store etcd needs a muster built with `--features etcd` (endpoints: {:?}); use --store redb",
            settings.endpoints
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    /// `muster apiserver ARGS`: the etcd settings, or the error's text.
    fn check(args: &str) -> Result<Option<EtcdSettings>, String> {
        let argv = format!("muster apiserver --data-dir /tmp/x {args}");
        let cli = Cli::try_parse_from(argv.split_whitespace()).map_err(|e| e.to_string())?;
        let Command::Apiserver(apiserver) = cli.command else {
            unreachable!("parsed as apiserver")
        };
        check_store_args(&apiserver.store).map_err(|e| e.to_string())
    }

    #[test]
    fn store_flags_are_checked_together() {
        let tls = |ca: &str, cert: Option<(&str, &str)>| EtcdSettings {
            endpoints: vec!["https://127.0.0.1:2379".into()],
            key_prefix: String::new(),
            ca_file: Some(ca.into()),
            client_cert: cert.map(|(c, k)| (c.into(), k.into())),
            request_timeout: None,
        };
        let plain = EtcdSettings {
            endpoints: vec!["http://a:2379".into(), "http://b:2379".into()],
            key_prefix: "/c1".into(),
            ca_file: None,
            client_cert: None,
            request_timeout: Some(Duration::from_millis(1500)),
        };
        // (arguments, Ok(settings) or Err(part of the message))
        let cases: Vec<(&str, Result<Option<EtcdSettings>, &str>)> = vec![
            ("", Ok(None)),
            ("--store redb", Ok(None)),
            (
                "--store etcd --etcd-endpoints http://a:2379,http://b:2379 --etcd-prefix /c1 \
                 --etcd-request-timeout 1500ms",
                Ok(Some(plain)),
            ),
            (
                "--store etcd --etcd-servers https://127.0.0.1:2379 --etcd-cafile ca.pem",
                Ok(Some(tls("ca.pem", None))),
            ),
            (
                "--store etcd --etcd-endpoints https://127.0.0.1:2379 --etcd-cafile ca.pem \
                 --etcd-certfile c.pem --etcd-keyfile k.pem",
                Ok(Some(tls("ca.pem", Some(("c.pem", "k.pem"))))),
            ),
            (
                "--etcd-endpoints http://a:2379",
                Err("--etcd-endpoints only applies with --store etcd"),
            ),
            (
                "--store redb --etcd-cafile ca.pem",
                Err("--etcd-cafile only applies with --store etcd"),
            ),
            (
                "--etcd-request-timeout 5s",
                Err("--etcd-request-timeout only applies with --store etcd"),
            ),
            ("--store etcd", Err("--store etcd needs --etcd-endpoints")),
            (
                "--store etcd --etcd-endpoints a:2379",
                Err("\"a:2379\" is not an http:// or https:// URL"),
            ),
            (
                "--store etcd --etcd-endpoints http://a:1,https://b:2 --etcd-cafile ca.pem",
                Err("either http:// or https://"),
            ),
            (
                "--store etcd --etcd-endpoints https://a:1 --etcd-cafile ca.pem \
                 --etcd-certfile c.pem",
                Err("--etcd-certfile needs --etcd-keyfile"),
            ),
            (
                "--store etcd --etcd-endpoints https://a:1 --etcd-cafile ca.pem \
                 --etcd-keyfile k.pem",
                Err("--etcd-keyfile needs --etcd-certfile"),
            ),
            (
                "--store etcd --etcd-endpoints https://a:1",
                Err("https:// etcd endpoints need --etcd-cafile"),
            ),
            (
                "--store etcd --etcd-endpoints http://a:1 --etcd-cafile ca.pem",
                Err("--etcd-cafile is for https:// endpoints"),
            ),
            (
                "--store etcd --etcd-endpoints http://a:1 --etcd-certfile c --etcd-keyfile k",
                Err("need https:// endpoints and --etcd-cafile"),
            ),
            (
                "--store etcd --etcd-endpoints http://a:1 --etcd-prefix c1",
                Err("must start with '/'"),
            ),
            (
                "--store etcd --etcd-endpoints http://a:1 --etcd-prefix /c1/",
                Err("and not end with one"),
            ),
            (
                "--store etcd --etcd-endpoints http://a:1 --etcd-request-timeout 0s",
                Err("must be more than zero"),
            ),
            (
                "--store etcd --etcd-endpoints http://a:1 --etcd-request-timeout 5",
                Err("\"5\" is not a duration"),
            ),
        ];
        for (args, want) in cases {
            match (check(args), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{args}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{args}: {got}"),
                (got, want) => panic!("{args}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn durations_parse_like_kubernetes_flags() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("5s", Some(Duration::from_secs(5))),
            ("500ms", Some(Duration::from_millis(500))),
            ("1.5m", Some(Duration::from_secs(90))),
            ("2h", Some(Duration::from_secs(7200))),
            ("0s", Some(Duration::ZERO)),
            ("5", None),
            ("s", None),
            ("5x", None),
            ("-1s", None),
            ("", None),
            ("1e300h", None),
        ];
        for (text, want) in cases {
            assert_eq!(crate::cli::parse_duration(text).ok(), *want, "{text:?}");
        }
    }
}
