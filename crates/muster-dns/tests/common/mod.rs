//! The shared fixture (namespaces, services, slices) and the table of queries with their expected
//! answers, checked against the engine directly and against the running servers.
#![allow(dead_code)]

pub mod mock_api;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use muster_dns::{Zone, ZoneSettings};
use serde_json::json;

pub fn namespace(name: &str) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

pub fn service(ns: &str, name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
        .unwrap()
}

pub fn slice(ns: &str, name: &str, svc: &str, body: serde_json::Value) -> EndpointSlice {
    let mut v = json!({
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": []
    });
    for (k, val) in body.as_object().unwrap() {
        v[k] = val.clone();
    }
    serde_json::from_value(v).unwrap()
}

pub fn objects() -> (Vec<Namespace>, Vec<Service>, Vec<EndpointSlice>, Vec<Pod>) {
    let namespaces = ["default", "kube-system", "empty-ns"]
        .map(namespace)
        .to_vec();
    let services = vec![
        service(
            "default",
            "kubernetes",
            json!({"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
            "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}),
        ),
        service(
            "kube-system",
            "kube-dns",
            json!({"clusterIP": "10.96.0.10",
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                      {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                      {"name": "metrics", "port": 9153, "protocol": "TCP"}]}),
        ),
        service(
            "default",
            "dual",
            json!({"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20", "fd00::20"],
            "ports": [{"name": "http", "port": 80}]}),
        ),
        service(
            "default",
            "web",
            json!({"clusterIP": "None",
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}),
        ),
        service(
            "default",
            "empty",
            json!({"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}),
        ),
        service(
            "default",
            "ext",
            json!({"type": "ExternalName", "externalName": "www.example.com"}),
        ),
        // A chain: through `ext` (in the cluster zone) to www.example.com (upstream).
        service(
            "default",
            "ext-chain",
            json!({"type": "ExternalName", "externalName": "ext.default.svc.cluster.local"}),
        ),
        service(
            "default",
            "extip",
            json!({"type": "ExternalName", "externalName": "192.0.2.1"}),
        ),
        service("default", "noports", json!({"clusterIP": "10.96.0.30"})),
        service("default", "v6only", json!({"clusterIP": "None"})),
        // A service whose namespace does not exist answers NXDOMAIN.
        service("ghost", "svc", json!({"clusterIP": "10.96.0.40"})),
    ];
    let slices = vec![
        slice(
            "default",
            "web-abc",
            "web",
            json!({
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.244.0.1"], "hostname": "web-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.0.2"], "conditions": {}},
                {"addresses": ["10.244.0.3"], "conditions": {"ready": false},
                 "targetRef": {"kind": "Pod", "name": "web-2"}},
            ]}),
        ),
        slice(
            "default",
            "web-v6",
            "web",
            json!({
            "addressType": "IPv6",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["fd00::1"], "conditions": {"ready": true}}]}),
        ),
        slice(
            "default",
            "empty-1",
            "empty",
            json!({
            "ports": [{"name": "http", "port": 80}],
            "endpoints": [{"addresses": ["10.244.0.9"], "conditions": {"ready": false}}]}),
        ),
        slice(
            "default",
            "v6only-1",
            "v6only",
            json!({
            "addressType": "IPv6",
            "endpoints": [{"addresses": ["fd00::2"]}]}),
        ),
        // Endpoints of a ClusterIP service also get per-endpoint names and PTRs.
        slice(
            "default",
            "dual-1",
            "dual",
            json!({
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["10.244.1.5"]}]}),
        ),
    ];
    (namespaces, services, slices, Vec::new())
}

pub fn zone() -> Zone {
    let (ns, svc, sl, pods) = objects();
    Zone::from_objects(ZoneSettings::default(), &ns, &svc, &sl, &pods).unwrap()
}

/// One query and what must come back.
pub struct Case {
    pub name: &'static str,
    pub qtype: RecordType,
    pub rcode: ResponseCode,
    /// Answer records as `name ttl TYPE rdata`, compared as a set.
    pub answers: &'static [&'static str],
    /// Types in the authority section (SOA for NXDOMAIN/NODATA).
    pub authority: &'static [RecordType],
}

use RecordType::*;
const NOERROR: ResponseCode = ResponseCode::NoError;
const NXDOMAIN: ResponseCode = ResponseCode::NXDomain;
const NODATA: &[&str] = &[];
const SOA_AUTH: &[RecordType] = &[RecordType::SOA];

macro_rules! case {
    ($name:expr, $qt:expr, $rc:expr, $ans:expr, $auth:expr) => {
        Case {
            name: $name,
            qtype: $qt,
            rcode: $rc,
            answers: $ans,
            authority: $auth,
        }
    };
}

pub fn cases() -> Vec<Case> {
    vec![
        // ClusterIP services, case kept from the question.
        case!(
            "kubernetes.default.svc.cluster.local.",
            A,
            NOERROR,
            &["kubernetes.default.svc.cluster.local. 5 A 10.96.0.1"],
            &[]
        ),
        case!(
            "KuBeRnEtEs.Default.SVC.cluster.LOCAL.",
            A,
            NOERROR,
            &["KuBeRnEtEs.Default.SVC.cluster.LOCAL. 5 A 10.96.0.1"],
            &[]
        ),
        case!(
            "kubernetes.default.svc.cluster.local.",
            AAAA,
            NOERROR,
            NODATA,
            SOA_AUTH
        ),
        case!(
            "kubernetes.default.svc.cluster.local.",
            TXT,
            NOERROR,
            NODATA,
            SOA_AUTH
        ),
        case!(
            "kubernetes.default.svc.cluster.local.",
            MX,
            NOERROR,
            NODATA,
            SOA_AUTH
        ),
        case!(
            "dual.default.svc.cluster.local.",
            A,
            NOERROR,
            &["dual.default.svc.cluster.local. 5 A 10.96.0.20"],
            &[]
        ),
        case!(
            "dual.default.svc.cluster.local.",
            AAAA,
            NOERROR,
            &["dual.default.svc.cluster.local. 5 AAAA fd00::20"],
            &[]
        ),
        case!(
            "noports.default.svc.cluster.local.",
            A,
            NOERROR,
            &["noports.default.svc.cluster.local. 5 A 10.96.0.30"],
            &[]
        ),
        case!(
            "noports.default.svc.cluster.local.",
            SRV,
            NOERROR,
            NODATA,
            SOA_AUTH
        ),
        // SRV for named ports.
        case!(
            "_https._tcp.kubernetes.default.svc.cluster.local.",
            SRV,
            NOERROR,
            &[
                "_https._tcp.kubernetes.default.svc.cluster.local. 5 SRV 0 100 443 kubernetes.default.svc.cluster.local."
            ],
            &[]
        ),
        case!(
            "_dns._udp.kube-dns.kube-system.svc.cluster.local.",
            SRV,
            NOERROR,
            &[
                "_dns._udp.kube-dns.kube-system.svc.cluster.local. 5 SRV 0 100 53 kube-dns.kube-system.svc.cluster.local."
            ],
            &[]
        ),
        case!(
            "_dns._tcp.kube-dns.kube-system.svc.cluster.local.",
            SRV,
            NXDOMAIN,
            NODATA,
            SOA_AUTH
        ),
        case!(
            "_http._tcp.kubernetes.default.svc.cluster.local.",
            SRV,
            NXDOMAIN,
            NODATA,
            SOA_AUTH
        ),
        case!(
            "_https._tcp.kubernetes.default.svc.cluster.local.",
            A,
            NOERROR,
            NODATA,
            SOA_AUTH
        ),
        // Empty non-terminal (RFC 8020).
        case!(
            "_tcp.kubernetes.default.svc.cluster.local.",
            SRV,
            NOERROR,
            NODATA,
            SOA_AUTH
        ),
        case!(
            "kube-dns.kube-system.svc.cluster.local.",
            SRV,
            NOERROR,
            &[
                "kube-dns.kube-system.svc.cluster.local. 5 SRV 0 33 53 kube-dns.kube-system.svc.cluster.local.",
                "kube-dns.kube-system.svc.cluster.local. 5 SRV 0 33 9153 kube-dns.kube-system.svc.cluster.local."
            ],
            &[]
        ),
        // Headless: ready endpoints of all slices; nil ready counts as ready.
        case!(
            "web.default.svc.cluster.local.",
            A,
            NOERROR,
            &[
                "web.default.svc.cluster.local. 5 A 10.244.0.1",
                "web.default.svc.cluster.local. 5 A 10.244.0.2"
            ],
            &[]
        ),
        case!(
            "web.default.svc.cluster.local.",
            AAAA,
            NOERROR,
            &["web.default.svc.cluster.local. 5 AAAA fd00::1"],
            &[]
        ),
        case!(
            "web-0.web.default.svc.cluster.local.",
            A,
            NOERROR,
            &["web-0.web.default.svc.cluster.local. 5 A 10.244.0.1"],
            &[]
        ),
        case!(
            "web-0.web.default.svc.cluster.local.",
            AAAA,
            NOERROR,
            NODATA,
            SOA_AUTH
        ),
        case!(
            "10-244-0-2.web.default.svc.cluster.local.",
            A,
            NOERROR,
            &["10-244-0-2.web.default.svc.cluster.local. 5 A 10.244.0.2"],
            &[]
        ),
        case!(
            "fd00--1.web.default.svc.cluster.local.",
            AAAA,
            NOERROR,
            &["fd00--1.web.default.svc.cluster.local. 5 AAAA fd00::1"],
            &[]
        ),
        // A hostname replaces the dashed name; not-ready endpoints have no name.
        case!(
            "10-244-0-1.web.default.svc.cluster.local.",
            A,
            NXDOMAIN,
            NODATA,
            SOA_AUTH
        ),
        case!(
            "10-244-0-3.web.default.svc.cluster.local.",
            A,
            NXDOMAIN,
            NODATA,
            SOA_AUTH
        ),
        case!(
            "_http._tcp.web.default.svc.cluster.local.",
            SRV,
            NOERROR,
            &[
                "_http._tcp.web.default.svc.cluster.local. 5 SRV 0 33 8080 web-0.web.default.svc.cluster.local.",
                "_http._tcp.web.default.svc.cluster.local. 5 SRV 0 33 8080 10-244-0-2.web.default.svc.cluster.local.",
                "_http._tcp.web.default.svc.cluster.local. 5 SRV 0 33 8080 fd00--1.web.default.svc.cluster.local."
            ],
            &[]
        ),
        case!(
            "v6only.default.svc.cluster.local.",
            A,
            NOERROR,
            NODATA,
            SOA_AUTH
        ),
        case!(
            "v6only.default.svc.cluster.local.",
            AAAA,
            NOERROR,
            &["v6only.default.svc.cluster.local. 5 AAAA fd00::2"],
            &[]
        ),
        // Headless with no ready endpoint: NXDOMAIN, for every type.
        case!(
            "empty.default.svc.cluster.local.",
            A,
            NXDOMAIN,
            NODATA,
            SOA_AUTH
        ),
        case!(
            "empty.default.svc.cluster.local.",
            AAAA,
            NXDOMAIN,
            NODATA,
            SOA_AUTH
        ),
        case!(
            "_http._tcp.empty.default.svc.cluster.local.",
            SRV,
            NXDOMAIN,
            NODATA,
            SOA_AUTH
        ),
        // Per-endpoint names of a ClusterIP service.
        case!(
            "10-244-1-5.dual.default.svc.cluster.local.",
            A,
            NOERROR,
            &["10-244-1-5.dual.default.svc.cluster.local. 5 A 10.244.1.5"],
            &[]
        ),
        // ExternalName: the CNAME alone when asked for CNAME.
        case!(
            "ext.default.svc.cluster.local.",
            CNAME,
            NOERROR,
            &["ext.default.svc.cluster.local. 5 CNAME www.example.com."],
            &[]
        ),
        case!(
            "extip.default.svc.cluster.local.",
            A,
            NXDOMAIN,
            NODATA,
            SOA_AUTH
        ),
        case!(
            "x.ext.default.svc.cluster.local.",
            A,
            NXDOMAIN,
            NODATA,
            SOA_AUTH
        ),
        // Missing names, namespaces, and the structure around them.
        case!(
            "nope.default.svc.cluster.local.",
            A,
            NXDOMAIN,
            NODATA,
            SOA_AUTH
        ),
        case!(
            "svc.ghost.svc.cluster.local.",
            A,
            NXDOMAIN,
            NODATA,
            SOA_AUTH
        ),
        case!("ghost.svc.cluster.local.", A, NXDOMAIN, NODATA, SOA_AUTH),
        case!("default.svc.cluster.local.", A, NOERROR, NODATA, SOA_AUTH),
        case!("empty-ns.svc.cluster.local.", A, NOERROR, NODATA, SOA_AUTH),
        case!("svc.cluster.local.", A, NOERROR, NODATA, SOA_AUTH),
        case!("pod.cluster.local.", A, NOERROR, NODATA, SOA_AUTH),
        case!("foo.cluster.local.", A, NXDOMAIN, NODATA, SOA_AUTH),
        case!(
            "a.b.c.web.default.svc.cluster.local.",
            A,
            NXDOMAIN,
            NODATA,
            SOA_AUTH
        ),
        // Pod records (pods insecure).
        case!(
            "10-244-0-7.default.pod.cluster.local.",
            A,
            NOERROR,
            &["10-244-0-7.default.pod.cluster.local. 5 A 10.244.0.7"],
            &[]
        ),
        case!(
            "fd00--7.default.pod.cluster.local.",
            AAAA,
            NOERROR,
            &["fd00--7.default.pod.cluster.local. 5 AAAA fd00::7"],
            &[]
        ),
        case!(
            "10-244-0-7.default.pod.cluster.local.",
            AAAA,
            NOERROR,
            NODATA,
            SOA_AUTH
        ),
        case!(
            "10-244-0-7.ghost.pod.cluster.local.",
            A,
            NXDOMAIN,
            NODATA,
            SOA_AUTH
        ),
        case!(
            "not-an-ip.default.pod.cluster.local.",
            A,
            NXDOMAIN,
            NODATA,
            SOA_AUTH
        ),
        case!("default.pod.cluster.local.", A, NOERROR, NODATA, SOA_AUTH),
        // Apex, version, NS and glue.
        case!(
            "cluster.local.",
            SOA,
            NOERROR,
            &[
                "cluster.local. 5 SOA ns.dns.cluster.local. hostmaster.cluster.local. SERIAL 7200 1800 86400 5"
            ],
            &[]
        ),
        case!(
            "cluster.local.",
            NS,
            NOERROR,
            &["cluster.local. 5 NS ns.dns.cluster.local."],
            &[]
        ),
        case!("cluster.local.", A, NOERROR, NODATA, SOA_AUTH),
        case!(
            "ns.dns.cluster.local.",
            A,
            NOERROR,
            &["ns.dns.cluster.local. 5 A 10.96.0.10"],
            &[]
        ),
        case!("dns.cluster.local.", A, NOERROR, NODATA, SOA_AUTH),
        case!(
            "dns-version.cluster.local.",
            TXT,
            NOERROR,
            &["dns-version.cluster.local. 28800 TXT 1.1.0"],
            &[]
        ),
        case!("dns-version.cluster.local.", A, NOERROR, NODATA, SOA_AUTH),
        // Reverse: ClusterIPs, endpoint hostnames and dashed names.
        case!(
            "1.0.96.10.in-addr.arpa.",
            PTR,
            NOERROR,
            &["1.0.96.10.in-addr.arpa. 5 PTR kubernetes.default.svc.cluster.local."],
            &[]
        ),
        case!(
            "1.0.244.10.in-addr.arpa.",
            PTR,
            NOERROR,
            &["1.0.244.10.in-addr.arpa. 5 PTR web-0.web.default.svc.cluster.local."],
            &[]
        ),
        case!(
            "2.0.244.10.in-addr.arpa.",
            PTR,
            NOERROR,
            &["2.0.244.10.in-addr.arpa. 5 PTR 10-244-0-2.web.default.svc.cluster.local."],
            &[]
        ),
        case!("1.0.244.10.IN-ADDR.ARPA.", A, NOERROR, NODATA, SOA_AUTH),
        case!(
            "0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
            PTR,
            NOERROR,
            &[
                "0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa. 5 PTR dual.default.svc.cluster.local."
            ],
            &[]
        ),
    ]
}

/// `name ttl TYPE rdata` for each answer record; the SOA serial is replaced by `SERIAL`.
pub fn render(msg: &Message) -> Vec<String> {
    let mut v: Vec<String> = msg
        .answers
        .iter()
        .map(|r| {
            let mut data = r.data.to_string();
            if r.record_type() == RecordType::SOA {
                let mut parts: Vec<&str> = data.split(' ').collect();
                parts[2] = "SERIAL";
                data = parts.join(" ");
            }
            format!(
                "{} {} {} {}",
                r.name,
                r.ttl,
                r.record_type(),
                data.trim_matches('"')
            )
        })
        .collect();
    v.sort();
    v
}

/// Checks a response against a case; returns a description of the first difference.
pub fn check(case: &Case, query: &[u8], response: &[u8]) -> Result<(), String> {
    let query_id = u16::from_be_bytes([query[0], query[1]]);
    // The question, byte for byte (so its case too), right after the header.
    let qlen = hickory_proto::op::Message::from_vec(query)
        .map(|_| ())
        .ok()
        .and_then(|_| {
            let end = 12 + query[12..].iter().position(|&b| b == 0)? + 5;
            Some(end)
        });
    if let Some(end) = qlen
        && response.get(12..end) != query.get(12..end)
    {
        return Err(format!("{}: question bytes not echoed", case.name));
    }
    let msg =
        Message::from_vec(response).map_err(|e| format!("{}: unparseable: {e}", case.name))?;
    let ctx = |what: &str| format!("{} {:?}: {what}", case.name, case.qtype);
    if msg.metadata.id != query_id {
        return Err(ctx("wrong id"));
    }
    if msg.queries.len() != 1
        || !msg.queries[0]
            .name()
            .to_string()
            .eq_ignore_ascii_case(case.name)
        || msg.queries[0].query_type() != case.qtype
    {
        return Err(ctx(&format!("question not echoed: {:?}", msg.queries)));
    }
    if msg.metadata.response_code != case.rcode {
        return Err(ctx(&format!(
            "rcode {:?}, want {:?}",
            msg.metadata.response_code, case.rcode
        )));
    }
    if !msg.metadata.authoritative {
        return Err(ctx("AA not set"));
    }
    let mut want: Vec<String> = case.answers.iter().map(|s| s.to_string()).collect();
    want.sort();
    let got = render(&msg);
    if got != want {
        return Err(ctx(&format!("answers {got:#?}, want {want:#?}")));
    }
    let auth: Vec<RecordType> = msg.authorities.iter().map(|r| r.record_type()).collect();
    if auth != case.authority {
        return Err(ctx(&format!(
            "authority {auth:?}, want {:?}",
            case.authority
        )));
    }
    for r in &msg.authorities {
        if r.record_type() == RecordType::SOA
            && !r.name.to_string().eq_ignore_ascii_case(
                if case.name.to_ascii_lowercase().ends_with(".arpa.") {
                    if case.name.to_ascii_lowercase().ends_with("ip6.arpa.") {
                        "ip6.arpa."
                    } else {
                        "in-addr.arpa."
                    }
                } else {
                    "cluster.local."
                },
            )
        {
            return Err(ctx(&format!("SOA owner {}", r.name)));
        }
    }
    Ok(())
}

/// A query for a case, with EDNS (4096) when asked.
pub fn query(name: &str, qtype: RecordType, id: u16, edns: bool) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(hickory_proto::op::Query::query(
        name.parse().unwrap(),
        qtype,
    ));
    if edns {
        let mut e = hickory_proto::op::Edns::new();
        e.set_max_payload(4096);
        m.edns = Some(e);
    }
    let mut bytes = m.to_vec().unwrap();
    // hickory writes names lower-cased: put the question's own case back.
    let mut pos = 12;
    for label in name.trim_end_matches('.').split('.') {
        bytes[pos + 1..pos + 1 + label.len()].copy_from_slice(label.as_bytes());
        pos += 1 + label.len();
    }
    bytes
}
