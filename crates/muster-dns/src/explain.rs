//! "Why does this name answer what it answers?" — the data behind `/explain`.
//!
//! It runs the real engine on the question (so it cannot drift from what clients get) and adds
//! what the answer came from: the namespace, the service, every slice and every endpoint, with
//! the reason each endpoint is in the answer or not.

use serde_json::{Value, json};

use crate::query::{ClientInfo, Outcome, answer};
use crate::wire::{self, rtype};
use crate::zone::{ServiceKind, Zone};

/// Query type names accepted by `/explain`.
pub fn parse_qtype(s: &str) -> Option<u16> {
    Some(match s.to_ascii_uppercase().as_str() {
        "A" => rtype::A,
        "AAAA" => rtype::AAAA,
        "SRV" => rtype::SRV,
        "PTR" => rtype::PTR,
        "TXT" => rtype::TXT,
        "SOA" => rtype::SOA,
        "NS" => rtype::NS,
        "CNAME" => rtype::CNAME,
        "MX" => rtype::MX,
        "ANY" => rtype::ANY,
        n => n.parse().ok()?,
    })
}

const RCODE_NAMES: [&str; 6] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
];

/// Renders the records of one section starting at `pos`; returns them and the end offset.
fn render_records(msg: &[u8], mut pos: usize, count: u16) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    for _ in 0..count {
        let mut owner = Vec::new();
        let Some(p) = wire::read_name(msg, pos, &mut owner) else {
            break;
        };
        let Some(fixed) = msg.get(p..p + 10) else {
            break;
        };
        let t = u16::from_be_bytes([fixed[0], fixed[1]]);
        let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let rdlen = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
        let rd = p + 10;
        let Some(data) = msg.get(rd..rd + rdlen) else {
            break;
        };
        let name_at = |at: usize| {
            let mut n = Vec::new();
            wire::read_name(msg, at, &mut n)
                .map_or_else(|| "?".into(), |_| wire::name_to_string(&n))
        };
        let (tname, text) = match t {
            rtype::A if rdlen == 4 => (
                "A",
                std::net::Ipv4Addr::new(data[0], data[1], data[2], data[3]).to_string(),
            ),
            rtype::AAAA if rdlen == 16 => {
                let b: [u8; 16] = data.try_into().unwrap_or([0; 16]);
                ("AAAA", std::net::Ipv6Addr::from(b).to_string())
            }
            rtype::CNAME => ("CNAME", name_at(rd)),
            rtype::PTR => ("PTR", name_at(rd)),
            rtype::NS => ("NS", name_at(rd)),
            rtype::SRV if rdlen >= 7 => (
                "SRV",
                format!(
                    "{} {} {} {}",
                    u16::from_be_bytes([data[0], data[1]]),
                    u16::from_be_bytes([data[2], data[3]]),
                    u16::from_be_bytes([data[4], data[5]]),
                    name_at(rd + 6)
                ),
            ),
            rtype::TXT => (
                "TXT",
                String::from_utf8_lossy(data.get(1..).unwrap_or_default()).into(),
            ),
            rtype::SOA => ("SOA", name_at(rd)),
            _ => ("TYPE", format!("{t} ({rdlen} bytes)")),
        };
        out.push(format!(
            "{} {ttl} {tname} {text}",
            wire::name_to_string(&owner)
        ));
        pos = rd + rdlen;
    }
    (out, pos)
}

/// Explains `name`/`qtype` against `zone` as JSON.
pub fn explain(zone: &Zone, name: &str, qtype: u16) -> Value {
    let Some(qname) = wire::encode_name(name) else {
        return json!({"name": name, "error": "not a valid domain name"});
    };
    let mut q = vec![0u8, 1, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend_from_slice(&qname);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    let mut out = vec![0u8; 65535];
    let client = ClientInfo {
        tcp: true,
        recursion: true,
    };
    let mut result = json!({
        "name": wire::name_to_string(&qname),
        "type": qtype,
        "zone": zone.settings().domain,
        "synced": zone.is_synced(),
    });
    match answer(zone, &q, &client, &mut out) {
        Outcome::Reply { len, .. } | Outcome::Chase { len, .. } if len >= wire::HEADER_LEN => {
            let msg = &out[..len];
            let an = u16::from_be_bytes([msg[6], msg[7]]);
            let ns = u16::from_be_bytes([msg[8], msg[9]]);
            let start = wire::parse_query_like_response(msg).unwrap_or(len);
            let (answers, pos) = render_records(msg, start, an);
            let (authority, _) = render_records(msg, pos, ns);
            let rcode = RCODE_NAMES.get((msg[3] & 0x0f) as usize).copied();
            result["rcode"] = json!(rcode.unwrap_or("other"));
            result["answers"] = json!(answers);
            result["authority"] = json!(authority);
        }
        Outcome::Forward { .. } => {
            result["rcode"] = json!("FORWARDED");
            result["reason"] =
                json!("outside the cluster data: forwarded to the upstream resolvers");
            return result;
        }
        _ => {}
    }
    result["reason"] = json!(reason(zone, &qname, &mut result));
    result
}

/// Labels of a wire name, left to right.
fn labels(name: &[u8]) -> Vec<String> {
    let mut v = Vec::new();
    let mut pos = 0;
    while pos < name.len() && name[pos] != 0 {
        let l = name[pos] as usize;
        v.push(String::from_utf8_lossy(&name[pos + 1..pos + 1 + l]).into_owned());
        pos += 1 + l;
    }
    v
}

fn reason(zone: &Zone, qname: &[u8], result: &mut Value) -> String {
    if !zone.is_synced() {
        return "the first list of Namespaces, Services and EndpointSlices is not complete: cluster names answer SERVFAIL until it is".into();
    }
    let all = labels(qname);
    let zone_labels = labels(&wire::encode_name(&zone.settings().domain).unwrap_or_default());
    if all.len() < zone_labels.len() || all[all.len() - zone_labels.len()..] != zone_labels[..] {
        return "a reverse name of a ClusterIP or endpoint IP".into();
    }
    let rel = &all[..all.len() - zone_labels.len()];
    let n = rel.len();
    if n < 2 || (rel[n - 1] != "svc" && rel[n - 1] != "pod") {
        return "a fixed name of the zone (apex, dns-version, ns.dns, svc, pod) or a name that does not exist".into();
    }
    let ns = &rel[n - 2];
    if !zone.has_namespace(ns) {
        return format!("namespace {ns:?} does not exist, so every name under it is NXDOMAIN");
    }
    result["namespace"] = json!({"name": ns, "exists": true});
    if rel[n - 1] == "pod" {
        return format!(
            "pod records: the IP written in the name, answered because namespace {ns:?} exists ({:?} mode)",
            zone.settings().pods
        );
    }
    if n == 2 {
        return "a namespace name: it exists but holds no records (NODATA)".into();
    }
    let svc_name = &rel[n - 3];
    let Some(svc) = zone.service(ns, svc_name) else {
        return format!("no Service {svc_name:?} in namespace {ns:?}");
    };
    let slices: Vec<Value> = svc
        .slices
        .iter()
        .map(|s| {
            json!({
                "name": &*s.name,
                "ports": s.ports.iter().map(|p| json!({"name": &*p.name, "port": p.port, "protocol": String::from_utf8_lossy(p.proto.label()).to_uppercase()})).collect::<Vec<_>>(),
                "endpoints": s.endpoints.iter().enumerate().map(|(i, e)| json!({
                    "ip": e.ip.to_string(),
                    "hostname": s.hostname(i),
                    "ready": e.ready, "serving": e.serving, "terminating": e.terminating,
                    "pod": s.unready_pod(i),
                    "answered": e.is_ready(),
                    "why": if e.is_ready() {
                        if e.ready.is_none() { "conditions.ready is unset, which counts as ready" } else { "conditions.ready is true" }
                    } else if e.terminating == Some(true) {
                        "not ready: the pod is terminating (conditions.ready is false)"
                    } else {
                        "not ready: conditions.ready is false (the pod's readiness probe fails or it has not started; publishNotReadyAddresses would include it)"
                    },
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let ready = svc.ready_endpoints().count();
    let total: usize = svc.slices.iter().map(|s| s.endpoints.len()).sum();
    let kind = match &svc.kind {
        ServiceKind::ClusterIp => "ClusterIP",
        ServiceKind::Headless => "headless",
        ServiceKind::ExternalName(_) => "ExternalName",
    };
    result["service"] = json!({
        "namespace": &*svc.namespace, "name": &*svc.name, "kind": kind,
        "clusterIPs": svc.cluster_ips.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
        "ports": svc.ports.iter().map(|p| json!({"name": &*p.name, "port": p.port})).collect::<Vec<_>>(),
        "readyEndpoints": ready, "endpoints": total,
    });
    result["slices"] = json!(slices);
    match &svc.kind {
        ServiceKind::ExternalName(None) => "an ExternalName whose externalName is an IP or invalid: NXDOMAIN (as CoreDNS)".into(),
        ServiceKind::ExternalName(Some(t)) => {
            let target = wire::name_to_string(t);
            let domain = zone.settings().domain.clone();
            let inside = target.trim_end_matches('.') == domain
                || target.trim_end_matches('.').ends_with(&format!(".{domain}"));
            if inside {
                format!("ExternalName: a CNAME to {target}, inside the cluster zone, so its records follow from this server (explain {target} for why they are what they are); loops and chains over 8 CNAMEs stop")
            } else {
                format!("ExternalName: a CNAME to {target}, whose records are resolved upstream and appended")
            }
        }
        ServiceKind::Headless if svc.slices.is_empty() => format!(
            "headless service with no EndpointSlice labelled kubernetes.io/service-name={svc_name}: NXDOMAIN (does its selector match any pod?)"
        ),
        ServiceKind::Headless if ready == 0 => format!(
            "headless service with {total} endpoint(s) in {} slice(s), none ready: NXDOMAIN (spec §2.4.1); see each endpoint's \"why\"",
            svc.slices.len()
        ),
        ServiceKind::Headless => format!("headless service: one record per ready endpoint ({ready} of {total} ready)"),
        ServiceKind::ClusterIp => "ClusterIP service: the name answers its ClusterIP(s); endpoint names answer ready endpoints".into(),
    }
}
