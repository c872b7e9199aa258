//! Property tests: no input panics the engine; every response parses with hickory-proto and
//! echoes the question; a zone built from watch deltas answers exactly like one built from the
//! final objects.

mod common;

use hickory_proto::op::Message;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use muster_dns::{ClientInfo, Outcome, Zone, ZoneBuilder, ZoneSettings, answer};
use proptest::prelude::*;
use serde_json::json;

const LABELS: &[&str] = &[
    "web",
    "web-0",
    "10-244-0-2",
    "fd00--1",
    "_http",
    "_tcp",
    "_udp",
    "kubernetes",
    "default",
    "ghost",
    "svc",
    "pod",
    "cluster",
    "local",
    "dns-version",
    "dns",
    "ns",
    "ext",
    "in-addr",
    "arpa",
    "ip6",
    "1",
    "0",
    "244",
    "10",
    "96",
    "empty",
    "dual",
    "example",
    "com",
    "*",
    "",
];

fn name_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((prop::sample::select(LABELS), any::<u64>()), 0..8).prop_map(|labels| {
        let mut wire = Vec::new();
        for (l, case_bits) in labels {
            if l.is_empty() {
                continue;
            }
            wire.push(l.len() as u8);
            // Random case per character.
            wire.extend(l.bytes().enumerate().map(|(i, c)| {
                if case_bits >> (i % 64) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            }));
        }
        wire.push(0);
        wire
    })
}

fn query_bytes(id: u16, name: &[u8], qtype: u16, edns: Option<u16>, rd: bool) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend([
        if rd { 1 } else { 0 },
        0,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        u8::from(edns.is_some()),
    ]);
    m.extend(name);
    m.extend(qtype.to_be_bytes());
    m.extend(1u16.to_be_bytes());
    if let Some(size) = edns {
        m.extend([0, 0, 41]);
        m.extend(size.to_be_bytes());
        m.extend([0, 0, 0, 0, 0, 0]);
    }
    m
}

fn zone() -> &'static Zone {
    static Z: std::sync::OnceLock<Zone> = std::sync::OnceLock::new();
    Z.get_or_init(common::zone)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), tcp in any::<bool>()) {
        let mut out = vec![0u8; 65535];
        let client = ClientInfo { tcp, recursion: true };
        if let Outcome::Reply { len, .. } = answer(zone(), &bytes, &client, &mut out) {
            prop_assert!(len >= 12);
            prop_assert!(Message::from_vec(&out[..len]).is_ok(), "{:?}", &out[..len]);
        }
    }

    #[test]
    fn every_response_parses_and_echoes_the_question(
        id in any::<u16>(),
        name in name_strategy(),
        qtype in prop::sample::select(vec![1u16, 2, 5, 6, 12, 15, 16, 28, 33, 255, 65, 99]),
        edns in prop::option::of(0u16..9000),
        tcp in any::<bool>(),
        mutate in prop::option::of((any::<prop::sample::Index>(), any::<u8>())),
    ) {
        let mut q = query_bytes(id, &name, qtype, edns, true);
        if let Some((at, v)) = mutate {
            let i = at.index(q.len());
            q[i] = v;
        }
        let mut out = vec![0u8; 65535];
        let client = ClientInfo { tcp, recursion: false };
        match answer(zone(), &q, &client, &mut out) {
            Outcome::Reply { len, .. } | Outcome::Chase { len, .. } => {
                let r = &out[..len];
                let m = Message::from_vec(r);
                prop_assert!(m.is_ok(), "unparseable {:?} for {:?}", r, q);
                prop_assert_eq!(&r[..2], &q[..2]);
                let limit = if tcp { 65535 } else { edns.map_or(512, |e| (e as usize).clamp(512, 4096)) };
                prop_assert!(len <= limit, "{} > {}", len, limit);
                if mutate.is_none() {
                    let qend = 12 + name.len() + 4;
                    prop_assert_eq!(&r[12..qend], &q[12..qend], "question not echoed");
                }
            }
            Outcome::Forward { .. } => prop_assert!(false, "forward without recursion"),
            Outcome::Drop => prop_assert!(mutate.is_some(), "a well-formed query was dropped"),
        }
    }
}

/// A small universe of objects that watch deltas add, change and delete.
#[derive(Clone, Debug)]
enum Op {
    Namespace(u8, bool),
    Service(u8, u8),
    DeleteService(u8),
    Slice(u8, u8, Vec<(u8, Option<bool>, bool)>),
    DeleteSlice(u8, u8),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..2, any::<bool>()).prop_map(|(n, on)| Op::Namespace(n, on)),
        (0u8..3, 0u8..3).prop_map(|(s, kind)| Op::Service(s, kind)),
        (0u8..3).prop_map(Op::DeleteService),
        (
            0u8..3,
            0u8..2,
            prop::collection::vec(
                (0u8..6, prop::option::of(any::<bool>()), any::<bool>()),
                0..4
            )
        )
            .prop_map(|(s, i, eps)| Op::Slice(s, i, eps)),
        (0u8..3, 0u8..2).prop_map(|(s, i)| Op::DeleteSlice(s, i)),
    ]
}

fn ns_obj(n: u8) -> Namespace {
    common::namespace(["default", "other"][n as usize])
}
fn svc_obj(s: u8, kind: u8) -> Service {
    let spec = match kind {
        0 => json!({"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}),
        1 => {
            json!({"clusterIP": format!("10.96.0.{}", 50 + s), "ports": [{"name": "http", "port": 80}]})
        }
        _ => json!({"type": "ExternalName", "externalName": "example.com"}),
    };
    common::service("default", &format!("s{s}"), spec)
}
fn slice_obj(s: u8, i: u8, eps: &[(u8, Option<bool>, bool)]) -> EndpointSlice {
    let endpoints: Vec<_> = eps
        .iter()
        .map(|(ip, ready, host)| {
            let mut e = json!({"addresses": [format!("10.244.0.{ip}")], "conditions": {}});
            if let Some(r) = ready {
                e["conditions"]["ready"] = json!(r);
            }
            if *host {
                e["hostname"] = json!(format!("h{ip}"));
            }
            e
        })
        .collect();
    common::slice(
        "default",
        &format!("s{s}-{i}"),
        &format!("s{s}"),
        json!({"ports": [{"name": "http", "port": 8080}], "endpoints": endpoints}),
    )
}

fn probe_names() -> Vec<(String, u16)> {
    let mut v = Vec::new();
    for s in 0..3 {
        for (prefix, t) in [
            ("", 1u16),
            ("", 33),
            ("_http._tcp.", 33),
            ("h1.", 1),
            ("10-244-0-2.", 1),
            ("", 5),
        ] {
            v.push((format!("{prefix}s{s}.default.svc.cluster.local"), t));
        }
    }
    for ip in 0..6 {
        v.push((format!("{ip}.0.244.10.in-addr.arpa"), 12));
    }
    for s in 0..3 {
        v.push((format!("{}.0.96.10.in-addr.arpa", 50 + s), 12));
    }
    v.push(("default.svc.cluster.local".into(), 1));
    v
}

fn answers_of(zone: &Zone) -> Vec<String> {
    let mut out = vec![0u8; 65535];
    probe_names()
        .into_iter()
        .map(|(name, t)| {
            let q = query_bytes(
                1,
                &muster_dns::wire::encode_name(&name).unwrap(),
                t,
                None,
                false,
            );
            let client = ClientInfo {
                tcp: true,
                recursion: false,
            };
            match answer(zone, &q, &client, &mut out) {
                Outcome::Reply { len, .. } | Outcome::Chase { len, .. } => {
                    let m = Message::from_vec(&out[..len]).unwrap();
                    format!(
                        "{name} {t} {:?} {:?}",
                        m.metadata.response_code,
                        common::render(&m)
                    )
                }
                other => format!("{name} {t} {other:?}"),
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn deltas_match_a_full_rebuild(ops in prop::collection::vec(op_strategy(), 0..25), publish_every in 1usize..5) {
        let mut b = ZoneBuilder::new(ZoneSettings::default()).unwrap();
        b.mark_synced();
        let mut namespaces = std::collections::BTreeMap::new();
        let mut services = std::collections::BTreeMap::new();
        let mut slices = std::collections::BTreeMap::new();
        let mut snapshots = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Namespace(n, true) => { b.apply_namespace(&ns_obj(*n)); namespaces.insert(*n, ns_obj(*n)); }
                Op::Namespace(n, false) => { b.delete_namespace(&ns_obj(*n)); namespaces.remove(n); }
                Op::Service(s, k) => { b.apply_service(&svc_obj(*s, *k)); services.insert(*s, svc_obj(*s, *k)); }
                Op::DeleteService(s) => {
                    if let Some(o) = services.remove(s) { b.delete_service(&o); }
                }
                Op::Slice(s, i, eps) => { b.apply_slice(&slice_obj(*s, *i, eps)); slices.insert((*s, *i), slice_obj(*s, *i, eps)); }
                Op::DeleteSlice(s, i) => {
                    if let Some(o) = slices.remove(&(*s, *i)) { b.delete_slice(&o); }
                }
            }
            if i % publish_every == 0 {
                // Old snapshots must keep answering what they answered when published.
                let z = b.publish();
                let a = answers_of(&z);
                snapshots.push((z, a));
            }
        }
        let incremental = b.publish();
        let full = Zone::from_objects(
            ZoneSettings::default(),
            &namespaces.values().cloned().collect::<Vec<_>>(),
            &services.values().cloned().collect::<Vec<_>>(),
            &slices.values().cloned().collect::<Vec<_>>(),
            &[],
        ).unwrap();
        prop_assert_eq!(answers_of(&incremental), answers_of(&full));
        for (z, a) in &snapshots {
            prop_assert_eq!(&answers_of(z), a);
        }
    }
}
