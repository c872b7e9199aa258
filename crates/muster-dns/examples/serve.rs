//! Serves a zone loaded from a JSON file of Kubernetes objects, with no API server: the
//! benchmark's muster-dns (see bench/dns/run.sh).
//!
//! `serve --data FILE [--listen ADDR] [--workers N] [--empty]`
//! FILE holds `{"namespaces": [...], "services": [...], "slices": [...]}`. With `--empty` the
//! file is not loaded (an empty but synced zone), to measure the memory the data costs.

use std::net::SocketAddr;

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use muster_dns::{Dns, DnsConfig, Zone, ZoneBuilder};

#[derive(serde::Deserialize, Default)]
struct Objects {
    namespaces: Vec<Namespace>,
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let listen: SocketAddr = arg(&args, "--listen")
        .unwrap_or("127.0.0.1:5304".into())
        .parse()?;
    let workers: usize = arg(&args, "--workers").unwrap_or("1".into()).parse()?;
    let empty = args.iter().any(|a| a == "--empty");
    let config = DnsConfig {
        listen: vec![listen],
        upstreams: Some(vec![]),
        metrics_listen: None,
        udp_workers: workers,
        ..DnsConfig::default()
    };
    let objects: Objects = match (empty, arg(&args, "--data")) {
        (false, Some(path)) => {
            serde_json::from_reader(std::io::BufReader::new(std::fs::File::open(path)?))?
        }
        (false, None) => anyhow::bail!("--data FILE or --empty"),
        (true, _) => Objects::default(),
    };
    // Built and kept the way `muster dns` keeps it: the builder's indexes stay alive next to
    // the zone, so the memory figure includes them.
    let mut builder = ZoneBuilder::new(config.zone_settings())?;
    builder.replace_namespaces(&objects.namespaces);
    builder.replace_services(&objects.services);
    builder.replace_slices(&objects.slices);
    builder.mark_synced();
    let zone: Zone = builder.publish();
    let services = zone.service_count();
    drop(objects);
    // Hand the parser's freed memory back so RSS shows what the zone keeps.
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe { libc::malloc_trim(0) };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let dns = Dns::start(&config, zone).await?;
        eprintln!("serving {services} services on {:?}", dns.servers.udp_addrs);
        tokio::signal::ctrl_c().await?;
        dns.shutdown();
        drop(builder);
        anyhow::Ok(())
    })
}
