//! Fuzzes the query parser and engine: any bytes, over UDP and TCP limits, against a zone with
//! ClusterIP, headless and ExternalName services. Must never panic, and every reply must fit
//! the transport's limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use muster_dns::{ClientInfo, Outcome, Zone, ZoneSettings, answer};
use serde_json::json;
use std::sync::OnceLock;

fn zone() -> &'static Zone {
    static Z: OnceLock<Zone> = OnceLock::new();
    Z.get_or_init(|| {
        let ns = serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
        let svcs = [
            json!({"metadata": {"name": "a", "namespace": "default"}, "spec": {"clusterIP": "10.96.0.5", "ports": [{"name": "http", "port": 80}]}}),
            json!({"metadata": {"name": "h", "namespace": "default"}, "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}}),
            json!({"metadata": {"name": "e", "namespace": "default"}, "spec": {"type": "ExternalName", "externalName": "example.com"}}),
        ]
        .map(|v| serde_json::from_value(v).unwrap());
        let slice = serde_json::from_value(json!({
            "metadata": {"name": "h-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "h"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["10.244.0.1"], "hostname": "p0"}, {"addresses": ["10.244.0.2"]}]
        }))
        .unwrap();
        Zone::from_objects(ZoneSettings::default(), &[ns], &svcs, &[slice], &[]).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let mut out = vec![0u8; 65535];
    for tcp in [false, true] {
        let client = ClientInfo { tcp, recursion: data.first().is_some_and(|b| b & 1 == 1) };
        if let Outcome::Reply { len, .. } | Outcome::Chase { len, .. } = answer(zone(), data, &client, &mut out) {
            assert!(len >= 12 && len <= if tcp { 65535 } else { 4096 });
        }
    }
});
