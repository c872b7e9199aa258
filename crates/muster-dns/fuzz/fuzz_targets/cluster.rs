//! Fuzzes the whole query path on fuzzer-made cluster data: Services (ClusterIP, headless with
//! endpoints, ExternalName pointing into the zone, at other ExternalNames, at itself, or out of
//! it), then one well-formed query for a name from that data (any case, any type, EDNS size,
//! UDP or TCP), and — when the answer leaves the zone — a fuzzer-made upstream reply spliced
//! after the CNAMEs.
//!
//! Checks: no panic; every reply fits the transport; replies made from cluster data parse with
//! hickory and echo the ID and question; replies with an upstream's records spliced in are
//! structurally sound (counts match the records, every record inside the message).
#![no_main]

use hickory_proto::op::Message;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use muster_dns::forward::splice_target_answers;
use muster_dns::{ClientInfo, Outcome, Zone, ZoneSettings, answer};
use serde_json::json;

const NAMES: [&str; 6] = ["a", "b", "web", "x-y", "db", "self"];
const NAMESPACES: [&str; 2] = ["default", "ns1"];
const QTYPES: [u16; 12] = [1, 28, 33, 5, 12, 16, 2, 6, 255, 15, 0, 65];

#[derive(Arbitrary, Debug)]
enum Target {
    Service(u8, u8),
    Endpoint(u8, u8, u8),
    Port(u8, u8),
    Outside,
    Apex,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct Endpoint {
    ip: [u8; 4],
    v6: bool,
    hostname: Option<u8>,
    ready: Option<bool>,
}

#[derive(Arbitrary, Debug)]
enum Kind {
    ClusterIp([u8; 4]),
    Headless(Vec<Endpoint>),
    External(Target),
}

#[derive(Arbitrary, Debug)]
struct Svc {
    name: u8,
    namespace: u8,
    kind: Kind,
}

#[derive(Arbitrary, Debug)]
struct Input {
    services: Vec<Svc>,
    qname: Target,
    qtype: u8,
    raw_qtype: Option<u16>,
    case_flips: u64,
    edns: Option<u16>,
    tcp: bool,
    recursion: bool,
    upstream: Vec<u8>,
}

fn pick<'a>(list: &[&'a str], i: u8) -> &'a str {
    list[i as usize % list.len()]
}

fn target_name(t: &Target) -> String {
    match t {
        Target::Service(n, ns) => format!(
            "{}.{}.svc.cluster.local",
            pick(&NAMES, *n),
            pick(&NAMESPACES, *ns)
        ),
        Target::Endpoint(h, n, ns) => format!(
            "{}.{}.{}.svc.cluster.local",
            pick(&NAMES, *h),
            pick(&NAMES, *n),
            pick(&NAMESPACES, *ns)
        ),
        Target::Port(n, ns) => format!(
            "_http._tcp.{}.{}.svc.cluster.local",
            pick(&NAMES, *n),
            pick(&NAMESPACES, *ns)
        ),
        Target::Outside => "www.example.com".into(),
        Target::Apex => "cluster.local".into(),
        Target::Raw(s) => s.clone(),
    }
}

fn zone(services: &[Svc]) -> Option<Zone> {
    let namespaces: Vec<_> = NAMESPACES
        .iter()
        .map(|n| serde_json::from_value(json!({"metadata": {"name": n}})).unwrap())
        .collect();
    let mut svcs = Vec::new();
    let mut slices = Vec::new();
    for (i, s) in services.iter().take(12).enumerate() {
        let (name, ns) = (pick(&NAMES, s.name), pick(&NAMESPACES, s.namespace));
        let spec = match &s.kind {
            Kind::ClusterIp(ip) => json!({"clusterIP": format!("10.96.{}.{}", ip[2], ip[3]),
                "ports": [{"name": "http", "port": 80}]}),
            Kind::Headless(eps) => {
                let endpoints: Vec<_> = eps
                    .iter()
                    .take(40)
                    .map(|e| {
                        let ip = if e.v6 {
                            format!(
                                "fd00::{:x}:{:x}",
                                e.ip[0],
                                u16::from_be_bytes([e.ip[2], e.ip[3]])
                            )
                        } else {
                            format!("10.{}.{}.{}", e.ip[1], e.ip[2], e.ip[3])
                        };
                        let mut v = json!({"addresses": [ip]});
                        if let Some(h) = e.hostname {
                            v["hostname"] = json!(pick(&NAMES, h));
                        }
                        if let Some(r) = e.ready {
                            v["conditions"] = json!({"ready": r});
                        }
                        v
                    })
                    .collect();
                for (family, v6) in [("IPv4", false), ("IPv6", true)] {
                    let eps: Vec<_> = endpoints
                        .iter()
                        .zip(eps.iter())
                        .filter(|(_, e)| e.v6 == v6)
                        .map(|(v, _)| v.clone())
                        .collect();
                    slices.push(
                        serde_json::from_value(json!({
                            "metadata": {"name": format!("{name}-{i}-{family}"), "namespace": ns,
                                         "labels": {"kubernetes.io/service-name": name}},
                            "addressType": family,
                            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                            "endpoints": eps,
                        }))
                        .ok()?,
                    );
                }
                json!({"clusterIP": "None", "ports": [{"name": "http", "port": 80}]})
            }
            Kind::External(t) => json!({"type": "ExternalName", "externalName": target_name(t)}),
        };
        svcs.push(
            serde_json::from_value(
                json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}),
            )
            .ok()?,
        );
    }
    Zone::from_objects(ZoneSettings::default(), &namespaces, &svcs, &slices, &[]).ok()
}

/// A query in wire form: `name` with some letters upper-cased, the type, optional EDNS.
fn query(name: &str, flips: u64, qtype: u16, edns: Option<u16>) -> Option<Vec<u8>> {
    let mut m = vec![0x4a, 0x17, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    let mut k = 0;
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        m.push(label.len() as u8);
        for c in label.bytes() {
            let upper = flips >> (k % 64) & 1 == 1;
            k += 1;
            m.push(if upper { c.to_ascii_uppercase() } else { c });
        }
    }
    m.push(0);
    if m.len() - 12 > 255 {
        return None;
    }
    m.extend(qtype.to_be_bytes());
    m.extend(1u16.to_be_bytes());
    if let Some(size) = edns {
        m[11] = 1;
        m.extend([0, 0, 41]);
        m.extend(size.to_be_bytes());
        m.extend([0, 0, 0, 0, 0, 0]);
    }
    Some(m)
}

/// Skips a possibly compressed name; None if it runs out of the message.
fn skip_name(m: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *m.get(pos)? as usize;
        if len & 0xc0 == 0xc0 {
            m.get(pos + 1)?;
            return Some(pos + 2);
        }
        if len > 63 {
            return None;
        }
        pos += 1 + len;
        if len == 0 {
            return Some(pos);
        }
    }
}

/// Whether the header's counts describe exactly the records in the message.
fn structurally_sound(m: &[u8]) -> bool {
    let count = |at: usize| u16::from_be_bytes([m[at], m[at + 1]]) as usize;
    if m.len() < 12 {
        return false;
    }
    let mut pos = 12;
    for _ in 0..count(4) {
        match skip_name(m, pos) {
            Some(p) if p + 4 <= m.len() => pos = p + 4,
            _ => return false,
        }
    }
    for _ in 0..count(6) + count(8) + count(10) {
        let Some(p) = skip_name(m, pos) else {
            return false;
        };
        if p + 10 > m.len() {
            return false;
        }
        let rdlen = u16::from_be_bytes([m[p + 8], m[p + 9]]) as usize;
        pos = p + 10 + rdlen;
        if pos > m.len() {
            return false;
        }
    }
    pos == m.len()
}

fuzz_target!(|input: Input| {
    let Some(zone) = zone(&input.services) else {
        return;
    };
    let qtype = input
        .raw_qtype
        .unwrap_or(QTYPES[input.qtype as usize % QTYPES.len()]);
    let Some(q) = query(
        &target_name(&input.qname),
        input.case_flips,
        qtype,
        input.edns,
    ) else {
        return;
    };
    let client = ClientInfo {
        tcp: input.tcp,
        recursion: input.recursion,
    };
    let limit = if input.tcp {
        65535
    } else {
        input.edns.map_or(512, |s| (s as usize).clamp(512, 4096))
    };
    let mut out = vec![0u8; 65535];
    match answer(&zone, &q, &client, &mut out) {
        Outcome::Reply { len, .. } => {
            assert!(
                (12..=limit).contains(&len),
                "reply of {len} bytes, limit {limit}"
            );
            let msg = Message::from_vec(&out[..len]).expect("our reply parses");
            assert_eq!(msg.metadata.id, 0x4a17);
            assert_eq!(msg.queries.len(), 1);
            let end = q.len() - if input.edns.is_some() { 11 } else { 0 };
            assert_eq!(&out[12..end], &q[12..end], "question echoed byte for byte");
        }
        Outcome::Chase { len, target_at, .. } => {
            assert!(
                (12..=limit).contains(&len),
                "chase of {len} bytes, limit {limit}"
            );
            assert!(target_at < len);
            Message::from_vec(&out[..len]).expect("the CNAME part parses");
            let (n, _) = splice_target_answers(&q, &client, &mut out, len, &input.upstream, limit);
            assert!(
                (12..=limit).contains(&n),
                "spliced reply of {n} bytes, limit {limit}"
            );
            assert!(structurally_sound(&out[..n]), "spliced reply is malformed");
        }
        Outcome::Forward { .. } => assert!(input.recursion),
        Outcome::Drop => panic!("a well-formed query was dropped"),
    }
});
