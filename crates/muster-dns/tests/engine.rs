//! The query table against the engine directly (no sockets).

mod common;

use muster_dns::{ClientInfo, Outcome, answer};

#[test]
fn query_table_engine() {
    let zone = common::zone();
    let mut out = vec![0u8; 65535];
    let mut failures = Vec::new();
    for (i, case) in common::cases().iter().enumerate() {
        for edns in [false, true] {
            let id = i as u16 + 1;
            let q = common::query(case.name, case.qtype, id, edns);
            let client = ClientInfo {
                tcp: false,
                recursion: false,
            };
            match answer(&zone, &q, &client, &mut out) {
                Outcome::Reply { len, .. } => {
                    if let Err(e) = common::check(case, &q, &out[..len]) {
                        failures.push(e);
                    }
                }
                other => failures.push(format!("{}: {other:?}", case.name)),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn ask(
    zone: &muster_dns::Zone,
    name: &str,
    qtype: hickory_proto::rr::RecordType,
    recursion: bool,
) -> (Outcome, Option<hickory_proto::op::Message>) {
    let q = common::query(name, qtype, 1, true);
    let mut out = vec![0u8; 65535];
    let o = answer(
        zone,
        &q,
        &ClientInfo {
            tcp: false,
            recursion,
        },
        &mut out,
    );
    let msg = match o {
        Outcome::Reply { len, .. } => {
            Some(hickory_proto::op::Message::from_vec(&out[..len]).unwrap())
        }
        _ => None,
    };
    (o, msg)
}

#[test]
fn pod_records_in_verified_mode() {
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType::A;
    let (ns, svc, sl, _) = common::objects();
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "namespace": "default"},
        "status": {"phase": "Running", "podIP": "10.244.0.7", "podIPs": [{"ip": "10.244.0.7"}]}
    }))
    .unwrap();
    let settings = muster_dns::ZoneSettings {
        pods: muster_dns::PodMode::Verified,
        ..Default::default()
    };
    let zone = muster_dns::Zone::from_objects(settings, &ns, &svc, &sl, &[pod]).unwrap();
    // (name, rcode, answers)
    let cases = [
        (
            "10-244-0-7.default.pod.cluster.local.",
            ResponseCode::NoError,
            1,
        ),
        (
            "10-244-0-8.default.pod.cluster.local.",
            ResponseCode::NXDomain,
            0,
        ),
        (
            "10-244-0-7.kube-system.pod.cluster.local.",
            ResponseCode::NXDomain,
            0,
        ),
    ];
    for (name, rcode, n) in cases {
        let m = ask(&zone, name, A, false).1.unwrap();
        assert_eq!(
            (m.metadata.response_code, m.answers.len()),
            (rcode, n),
            "{name}"
        );
    }
}

#[test]
fn outside_names_forward_only_for_allowed_clients() {
    use hickory_proto::op::ResponseCode;
    use hickory_proto::rr::RecordType::A;
    let zone = common::zone();
    let (o, _) = ask(&zone, "example.com.", A, true);
    assert_eq!(o, Outcome::Forward { qtype: 1 });
    let (_, m) = ask(&zone, "example.com.", A, false);
    assert_eq!(m.unwrap().metadata.response_code, ResponseCode::Refused);
    // A ExternalName is chased by the caller.
    let (o, _) = ask(&zone, "ext.default.svc.cluster.local.", A, true);
    assert!(matches!(o, Outcome::Chase { .. }), "{o:?}");
}

#[test]
fn srv_answers_carry_target_addresses() {
    use hickory_proto::rr::RecordType::SRV;
    let zone = common::zone();
    let m = ask(
        &zone,
        "_http._tcp.web.default.svc.cluster.local.",
        SRV,
        false,
    )
    .1
    .unwrap();
    let mut extra: Vec<String> = m
        .additionals
        .iter()
        .map(|r| format!("{} {}", r.name, r.data))
        .collect();
    extra.sort();
    assert_eq!(
        extra,
        [
            "10-244-0-2.web.default.svc.cluster.local. 10.244.0.2",
            "fd00--1.web.default.svc.cluster.local. fd00::1",
            "web-0.web.default.svc.cluster.local. 10.244.0.1",
        ]
    );
    let m = ask(
        &zone,
        "_https._tcp.kubernetes.default.svc.cluster.local.",
        SRV,
        false,
    )
    .1
    .unwrap();
    let extra: Vec<String> = m
        .additionals
        .iter()
        .map(|r| format!("{} {}", r.name, r.data))
        .collect();
    assert_eq!(extra, ["kubernetes.default.svc.cluster.local. 10.96.0.1"]);
}

/// ExternalName services whose targets are names in the cluster zone: the chain is followed in
/// the engine (CNAME, then the target's records with the target as owner), loops and overlong
/// chains stop, and the rcode is that of the last name (RFC 6604).
#[test]
fn externalname_chains_in_the_cluster_zone() {
    use common::Case;
    use hickory_proto::op::ResponseCode::{NXDomain, NoError};
    use hickory_proto::rr::RecordType::{A, AAAA, CNAME, SOA, SRV};
    let (ns, mut svc, sl, pods) = common::objects();
    let ext = |name: &str, target: &str| {
        common::service(
            "default",
            name,
            serde_json::json!({"type": "ExternalName", "externalName": target}),
        )
    };
    svc.extend([
        ext("to-k8s", "kubernetes.default.svc.cluster.local"),
        ext("to-web", "WEB.Default.svc.cluster.local."),
        ext("to-to-web", "to-web.default.svc.cluster.local"),
        ext("to-port", "_http._tcp.web.default.svc.cluster.local"),
        ext("to-pod", "web-0.web.default.svc.cluster.local"),
        ext("to-missing", "nope.default.svc.cluster.local"),
        ext("to-empty", "empty.default.svc.cluster.local"),
        ext("to-ext", "ext.default.svc.cluster.local"),
        ext("self", "self.default.svc.cluster.local"),
        ext("loop-a", "loop-b.default.svc.cluster.local"),
        ext("loop-b", "loop-a.default.svc.cluster.local"),
    ]);
    // c0 → c1 → … → c9 → kubernetes: longer than the 8 CNAMEs an answer may hold.
    let chain: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    for i in 0..10 {
        let next = if i == 9 {
            "kubernetes".to_string()
        } else {
            chain[i + 1].clone()
        };
        svc.push(ext(&chain[i], &format!("{next}.default.svc.cluster.local")));
    }
    let zone = muster_dns::Zone::from_objects(Default::default(), &ns, &svc, &sl, &pods).unwrap();

    let case = |name, qtype, rcode, answers, authority| Case {
        name,
        qtype,
        rcode,
        answers,
        authority,
    };
    let cases = [
        case(
            "to-k8s.default.svc.cluster.local.",
            A,
            NoError,
            &[
                "to-k8s.default.svc.cluster.local. 5 CNAME kubernetes.default.svc.cluster.local.",
                "kubernetes.default.svc.cluster.local. 5 A 10.96.0.1",
            ][..],
            &[][..],
        ),
        // The target has no AAAA: NODATA after the CNAME, with the SOA.
        case(
            "to-k8s.default.svc.cluster.local.",
            AAAA,
            NoError,
            &["to-k8s.default.svc.cluster.local. 5 CNAME kubernetes.default.svc.cluster.local."],
            &[SOA],
        ),
        // Asked for the CNAME itself: no chasing.
        case(
            "to-k8s.default.svc.cluster.local.",
            CNAME,
            NoError,
            &["to-k8s.default.svc.cluster.local. 5 CNAME kubernetes.default.svc.cluster.local."],
            &[],
        ),
        // The target's case in externalName does not matter; headless targets give ready IPs.
        case(
            "to-web.default.svc.cluster.local.",
            A,
            NoError,
            &[
                "to-web.default.svc.cluster.local. 5 CNAME web.default.svc.cluster.local.",
                "web.default.svc.cluster.local. 5 A 10.244.0.1",
                "web.default.svc.cluster.local. 5 A 10.244.0.2",
            ],
            &[],
        ),
        case(
            "to-web.default.svc.cluster.local.",
            AAAA,
            NoError,
            &[
                "to-web.default.svc.cluster.local. 5 CNAME web.default.svc.cluster.local.",
                "web.default.svc.cluster.local. 5 AAAA fd00::1",
            ],
            &[],
        ),
        // Two levels.
        case(
            "To-To-Web.default.svc.cluster.local.",
            A,
            NoError,
            &[
                "To-To-Web.default.svc.cluster.local. 5 CNAME to-web.default.svc.cluster.local.",
                "to-web.default.svc.cluster.local. 5 CNAME web.default.svc.cluster.local.",
                "web.default.svc.cluster.local. 5 A 10.244.0.1",
                "web.default.svc.cluster.local. 5 A 10.244.0.2",
            ],
            &[],
        ),
        // SRV through a chain: targets are per-endpoint names under the target service.
        case(
            "to-port.default.svc.cluster.local.",
            SRV,
            NoError,
            &[
                "to-port.default.svc.cluster.local. 5 CNAME _http._tcp.web.default.svc.cluster.local.",
                "_http._tcp.web.default.svc.cluster.local. 5 SRV 0 33 8080 web-0.web.default.svc.cluster.local.",
                "_http._tcp.web.default.svc.cluster.local. 5 SRV 0 33 8080 10-244-0-2.web.default.svc.cluster.local.",
                "_http._tcp.web.default.svc.cluster.local. 5 SRV 0 33 8080 fd00--1.web.default.svc.cluster.local.",
            ],
            &[],
        ),
        case(
            "to-pod.default.svc.cluster.local.",
            A,
            NoError,
            &[
                "to-pod.default.svc.cluster.local. 5 CNAME web-0.web.default.svc.cluster.local.",
                "web-0.web.default.svc.cluster.local. 5 A 10.244.0.1",
            ],
            &[],
        ),
        // A target that does not exist, or a headless one with no ready endpoint: NXDOMAIN,
        // the CNAME kept (RFC 6604), the SOA in authority.
        case(
            "to-missing.default.svc.cluster.local.",
            A,
            NXDomain,
            &["to-missing.default.svc.cluster.local. 5 CNAME nope.default.svc.cluster.local."],
            &[SOA],
        ),
        case(
            "to-empty.default.svc.cluster.local.",
            A,
            NXDomain,
            &["to-empty.default.svc.cluster.local. 5 CNAME empty.default.svc.cluster.local."],
            &[SOA],
        ),
        // Loops: each CNAME once, then the answer stops.
        case(
            "self.default.svc.cluster.local.",
            A,
            NoError,
            &["self.default.svc.cluster.local. 5 CNAME self.default.svc.cluster.local."],
            &[],
        ),
        case(
            "loop-a.default.svc.cluster.local.",
            A,
            NoError,
            &[
                "loop-a.default.svc.cluster.local. 5 CNAME loop-b.default.svc.cluster.local.",
                "loop-b.default.svc.cluster.local. 5 CNAME loop-a.default.svc.cluster.local.",
            ],
            &[],
        ),
        // A chain longer than 8 CNAMEs is cut after the 8th.
        case(
            "c0.default.svc.cluster.local.",
            A,
            NoError,
            &[
                "c0.default.svc.cluster.local. 5 CNAME c1.default.svc.cluster.local.",
                "c1.default.svc.cluster.local. 5 CNAME c2.default.svc.cluster.local.",
                "c2.default.svc.cluster.local. 5 CNAME c3.default.svc.cluster.local.",
                "c3.default.svc.cluster.local. 5 CNAME c4.default.svc.cluster.local.",
                "c4.default.svc.cluster.local. 5 CNAME c5.default.svc.cluster.local.",
                "c5.default.svc.cluster.local. 5 CNAME c6.default.svc.cluster.local.",
                "c6.default.svc.cluster.local. 5 CNAME c7.default.svc.cluster.local.",
                "c7.default.svc.cluster.local. 5 CNAME c8.default.svc.cluster.local.",
            ],
            &[],
        ),
        // Two links short of the cap, the chain reaches its end.
        case(
            "c2.default.svc.cluster.local.",
            A,
            NoError,
            &[
                "c2.default.svc.cluster.local. 5 CNAME c3.default.svc.cluster.local.",
                "c3.default.svc.cluster.local. 5 CNAME c4.default.svc.cluster.local.",
                "c4.default.svc.cluster.local. 5 CNAME c5.default.svc.cluster.local.",
                "c5.default.svc.cluster.local. 5 CNAME c6.default.svc.cluster.local.",
                "c6.default.svc.cluster.local. 5 CNAME c7.default.svc.cluster.local.",
                "c7.default.svc.cluster.local. 5 CNAME c8.default.svc.cluster.local.",
                "c8.default.svc.cluster.local. 5 CNAME c9.default.svc.cluster.local.",
                "c9.default.svc.cluster.local. 5 CNAME kubernetes.default.svc.cluster.local.",
                "kubernetes.default.svc.cluster.local. 5 A 10.96.0.1",
            ],
            &[],
        ),
    ];
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        for (edns, tcp) in [(false, false), (true, false), (true, true)] {
            let q = common::query(c.name, c.qtype, i as u16 + 1, edns);
            let mut out = vec![0u8; 65535];
            let client = ClientInfo {
                tcp,
                recursion: false,
            };
            match answer(&zone, &q, &client, &mut out) {
                Outcome::Reply { len, .. } => {
                    if let Err(e) = common::check(c, &q, &out[..len]) {
                        failures.push(e);
                    }
                }
                other => failures.push(format!("{} {:?}: {other:?}", c.name, c.qtype)),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // A chain that leaves the cluster zone is handed to the caller with the CNAMEs so far,
    // the last target at `target_at`.
    let q = common::query("to-ext.default.svc.cluster.local.", A, 9, true);
    let mut out = vec![0u8; 65535];
    let client = ClientInfo {
        tcp: false,
        recursion: true,
    };
    let Outcome::Chase { len, target_at, .. } = answer(&zone, &q, &client, &mut out) else {
        panic!("to-ext should be chased upstream");
    };
    let msg = hickory_proto::op::Message::from_vec(&out[..len]).unwrap();
    let got: Vec<String> = msg
        .answers
        .iter()
        .map(|r| format!("{} {}", r.name, r.data))
        .collect();
    assert_eq!(
        got,
        [
            "to-ext.default.svc.cluster.local. ext.default.svc.cluster.local.",
            "ext.default.svc.cluster.local. www.example.com.",
        ]
    );
    assert_eq!(&out[target_at..target_at + 4], b"\x03www");
}
