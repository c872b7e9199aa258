//! Runs the query path N times per query kind, for `valgrind --tool=callgrind` instruction counts
//! (bench/dns/run.sh runs it with two N and divides the difference, so setup cost cancels).
//!
//! `qpath N`: a zone of 1,000 headless services × 10 endpoints plus hs1/hs100/hs250;
//! queries q1, q100, q250 (EDNS 4096) and a mix over the 1,000 services.

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use muster_dns::{ClientInfo, Outcome, Zone, ZoneSettings, answer};
use serde_json::json;

fn svc(ns: &str, name: &str) -> Service {
    serde_json::from_value(
        json!({"metadata": {"name": name, "namespace": ns}, "spec": {"clusterIP": "None"}}),
    )
    .unwrap()
}

fn slice(ns: &str, name: &str, ips: &[String]) -> EndpointSlice {
    let eps: Vec<_> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-1"), "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4", "endpoints": eps})).unwrap()
}

pub fn query(name: &str) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1];
    for l in name.split('.') {
        m.push(l.len() as u8);
        m.extend(l.bytes());
    }
    m.extend([0, 0, 1, 0, 1, 0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    m
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let mut counter = 1u32;
    let mut ips = |k: usize| -> Vec<String> {
        (0..k)
            .map(|_| {
                counter += 1;
                format!(
                    "10.{}.{}.{}",
                    counter >> 16 & 255,
                    counter >> 8 & 255,
                    counter & 255
                )
            })
            .collect()
    };
    let mut namespaces = vec![
        serde_json::from_value::<Namespace>(json!({"metadata": {"name": "default"}})).unwrap(),
    ];
    let (mut services, mut slices) = (Vec::new(), Vec::new());
    for k in [1, 100, 250] {
        services.push(svc("default", &format!("hs{k}")));
        slices.push(slice("default", &format!("hs{k}"), &ips(k)));
    }
    for ns in 0..100 {
        namespaces.push(
            serde_json::from_value(json!({"metadata": {"name": format!("ns{ns}")}})).unwrap(),
        );
    }
    for s in 0..1000 {
        let ns = format!("ns{}", s % 100);
        services.push(svc(&ns, &format!("svc{s}")));
        slices.push(slice(&ns, &format!("svc{s}"), &ips(10)));
    }
    let zone = Zone::from_objects(
        ZoneSettings::default(),
        &namespaces,
        &services,
        &slices,
        &[],
    )
    .unwrap();
    let mix: Vec<Vec<u8>> = (0..1000)
        .map(|s| query(&format!("svc{s}.ns{}.svc.cluster.local", s % 100)))
        .collect();
    let sets: [(&str, Vec<Vec<u8>>); 4] = [
        ("q1", vec![query("hs1.default.svc.cluster.local")]),
        ("q100", vec![query("hs100.default.svc.cluster.local")]),
        ("q250", vec![query("hs250.default.svc.cluster.local")]),
        ("qmix", mix),
    ];
    let which = std::env::args().nth(2).unwrap_or_default();
    let client = ClientInfo {
        tcp: false,
        recursion: false,
    };
    let mut out = vec![0u8; 65535];
    let mut bytes = 0usize;
    for (name, qs) in &sets {
        if !which.is_empty() && which != *name {
            continue;
        }
        for i in 0..n {
            if let Outcome::Reply { len, .. } = answer(&zone, &qs[i % qs.len()], &client, &mut out)
            {
                bytes += len;
            }
        }
    }
    println!("{bytes}");
}
