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
