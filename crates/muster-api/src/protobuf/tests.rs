use k8s_pb::api::core::v1 as core;
use k8s_pb::api::{coordination::v1 as coordination, discovery::v1 as discovery};
use k8s_pb::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Value, json};

use super::*;

/// A body as kubectl frames it: magic, then the `runtime.Unknown` envelope.
fn frame(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    envelope(api_version, kind, &raw, "")
}

fn envelope(api_version: &str, kind: &str, raw: &[u8], content_type: &str) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw.to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(content_type.into()),
    };
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

fn meta(name: &str) -> Option<ObjectMeta> {
    Some(ObjectMeta {
        name: Some(name.into()),
        creation_timestamp: Some(Time::default()),
        ..Default::default()
    })
}

/// Request bodies recorded from the real kubectl 1.33 by `testdata/capture.sh`: `<name>.bin`
/// (protobuf) or `<name>.request.json` (JSON, as `kubectl run` sends), each with `<name>.json`,
/// what `kubectl ... --dry-run=client -o json` prints for the same command.
#[test]
fn kubectl_fixtures_decode_to_what_kubectl_would_send_as_json() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/protobuf"));
    let mut protobuf_bodies = 0;
    for entry in std::fs::read_dir(dir).expect("fixture dir") {
        let expected = entry.unwrap().path();
        let Some(name) = expected
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
            .filter(|n| !n.ends_with(".request"))
        else {
            continue;
        };
        let (content_type, body) = match std::fs::read(dir.join(format!("{name}.bin"))) {
            Ok(body) => {
                protobuf_bodies += 1;
                ("application/vnd.kubernetes.protobuf", body)
            }
            Err(_) => (
                "application/json",
                std::fs::read(dir.join(format!("{name}.request.json"))).expect("a request body"),
            ),
        };
        let want: Value = serde_json::from_slice(&std::fs::read(&expected).unwrap()).unwrap();
        let got = crate::patch::decode_body(content_type, &body)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(without_nulls(&got), without_nulls(&want), "{name}");
    }
    assert!(
        protobuf_bodies >= 10,
        "only {protobuf_bodies} protobuf fixtures"
    );
}

/// kubectl's JSON carries `creationTimestamp: null`; protobuf has no null.
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

#[test]
fn typed_messages_convert_field_by_field() {
    let secret = core::Secret {
        metadata: meta("s"),
        data: [("a".to_string(), b"hello".to_vec())].into(),
        r#type: Some("Opaque".into()),
        ..Default::default()
    };
    let service = core::Service {
        metadata: meta("web"),
        spec: Some(core::ServiceSpec {
            ports: vec![core::ServicePort {
                port: Some(80),
                target_port: Some(IntOrString {
                    r#type: Some(1),
                    int_val: Some(0),
                    str_val: Some("http".into()),
                }),
                ..Default::default()
            }],
            cluster_ip: Some("None".into()),
            ..Default::default()
        }),
        status: Some(Default::default()),
    };
    let cases: Vec<(&str, &str, Vec<u8>, Value)> = vec![
        (
            "v1",
            "Secret",
            secret.encode_to_vec(),
            json!({"kind":"Secret","apiVersion":"v1","metadata":{"name":"s"},
                   "data":{"a":"aGVsbG8="},"type":"Opaque"}),
        ),
        (
            "v1",
            "Service",
            service.encode_to_vec(),
            json!({"kind":"Service","apiVersion":"v1","metadata":{"name":"web"},
                   "spec":{"ports":[{"port":80,"targetPort":"http"}],"clusterIP":"None"},
                   "status":{}}),
        ),
    ];
    // An envelope may also carry JSON, saying so in its content type.
    let json_inside = envelope(
        "v1",
        "ConfigMap",
        br#"{"metadata":{"name":"c"},"data":{"a":"b"}}"#,
        "application/json",
    );
    assert_eq!(
        decode(&json_inside).unwrap(),
        json!({"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c"},"data":{"a":"b"}})
    );
    for (api_version, kind, raw, want) in cases {
        let got = decode(&frame(api_version, kind, raw)).unwrap();
        assert_eq!(got, want, "{kind}");
        // Keys come out in Kubernetes' order: kind, apiVersion, metadata, ...
        let keys = got.as_object().unwrap().keys().take(2).collect::<Vec<_>>();
        assert_eq!(keys, ["kind", "apiVersion"]);
    }
}

#[test]
fn bad_bodies_are_rejected() {
    let ns = core::Namespace {
        metadata: meta("x"),
        ..Default::default()
    }
    .encode_to_vec();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("no magic", ns.clone(), 400),
        ("garbage envelope", b"k8s\0\xff\xff\xff".to_vec(), 400),
        ("unknown kind", frame("batch/v1", "Job", ns.clone()), 415),
        (
            "garbage message",
            frame("v1", "Namespace", vec![0xff, 0xff, 0x01]),
            400,
        ),
        (
            "unknown inner content type",
            envelope("v1", "Namespace", b"{}", "text/plain"),
            415,
        ),
        (
            "bad inner JSON",
            envelope("v1", "Namespace", b"{", "application/json"),
            400,
        ),
    ];
    for (name, body, code) in cases {
        let err = decode(&body).expect_err(name);
        assert_eq!(err.code, code, "{name}: {err}");
    }
}

/// Kinds no kubectl command sends as protobuf, built by hand: they exercise Go's embedded
/// (`inline`) structs, micro-times, Kubernetes' irregular JSON names and pointer zeros.
#[test]
fn other_kinds_convert_with_kubernetes_field_names() {
    let pod = core::Pod {
        metadata: meta("p"),
        spec: Some(core::PodSpec {
            containers: vec![core::Container {
                name: Some("c".into()),
                image: Some("busybox".into()),
                env: vec![core::EnvVar {
                    name: Some("PASSWORD".into()),
                    value: Some(String::new()),
                    value_from: Some(core::EnvVarSource {
                        secret_key_ref: Some(core::SecretKeySelector {
                            local_object_reference: Some(core::LocalObjectReference {
                                name: Some("creds".into()),
                            }),
                            key: Some("pw".into()),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                }],
                readiness_probe: Some(core::Probe {
                    handler: Some(core::ProbeHandler {
                        http_get: Some(core::HttpGetAction {
                            path: Some("/healthz".into()),
                            port: Some(IntOrString {
                                r#type: Some(0),
                                int_val: Some(8080),
                                str_val: Some(String::new()),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    initial_delay_seconds: Some(0),
                    period_seconds: Some(5),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            volumes: vec![core::Volume {
                name: Some("cfg".into()),
                volume_source: Some(core::VolumeSource {
                    config_map: Some(core::ConfigMapVolumeSource {
                        local_object_reference: Some(core::LocalObjectReference {
                            name: Some("settings".into()),
                        }),
                        default_mode: Some(0o644),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }],
            host_network: Some(false),
            termination_grace_period_seconds: Some(0),
            ..Default::default()
        }),
        status: Some(core::PodStatus {
            pod_ip: Some("10.1.0.5".into()),
            pod_ips: vec![core::PodIp {
                ip: Some("10.1.0.5".into()),
            }],
            start_time: Some(Time {
                seconds: Some(1_767_225_600),
                nanos: Some(0),
            }),
            ..Default::default()
        }),
    };
    let lease = coordination::Lease {
        metadata: meta("node-1"),
        spec: Some(coordination::LeaseSpec {
            holder_identity: Some("node-1".into()),
            lease_duration_seconds: Some(40),
            renew_time: Some(MicroTime {
                seconds: Some(1_767_225_600),
                nanos: Some(123_456_789),
            }),
            ..Default::default()
        }),
    };
    let slice = discovery::EndpointSlice {
        metadata: meta("web-abc"),
        address_type: Some("IPv4".into()),
        endpoints: vec![discovery::Endpoint {
            addresses: vec!["10.1.0.5".into()],
            conditions: Some(discovery::EndpointConditions {
                ready: Some(false),
                serving: Some(true),
                terminating: None,
            }),
            node_name: Some("node-1".into()),
            ..Default::default()
        }],
        ports: vec![discovery::EndpointPort {
            name: Some(String::new()),
            port: Some(80),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }],
    };
    let node = core::Node {
        metadata: meta("node-1"),
        spec: Some(core::NodeSpec {
            pod_cidr: Some("10.1.0.0/24".into()),
            pod_cid_rs: vec!["10.1.0.0/24".into()],
            ..Default::default()
        }),
        status: None,
    };
    let cases: Vec<(&str, &str, Vec<u8>, Value)> = vec![
        (
            "v1",
            "Pod",
            pod.encode_to_vec(),
            json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p"},
                "spec": {
                    "volumes": [{"name": "cfg", "configMap": {"name": "settings", "defaultMode": 420}}],
                    "containers": [{"name": "c", "image": "busybox",
                        "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "pw"}}}],
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5}}],
                    "terminationGracePeriodSeconds": 0
                },
                "status": {"podIP": "10.1.0.5", "podIPs": [{"ip": "10.1.0.5"}], "startTime": "2026-01-01T00:00:00Z"}}),
        ),
        (
            "coordination.k8s.io/v1",
            "Lease",
            lease.encode_to_vec(),
            json!({"kind": "Lease", "apiVersion": "coordination.k8s.io/v1", "metadata": {"name": "node-1"},
                "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40,
                         "renewTime": "2026-01-01T00:00:00.123456Z"}}),
        ),
        (
            "discovery.k8s.io/v1",
            "EndpointSlice",
            slice.encode_to_vec(),
            json!({"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1", "metadata": {"name": "web-abc"},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.1.0.5"], "conditions": {"ready": false, "serving": true},
                               "nodeName": "node-1"}],
                "ports": [{"name": "", "protocol": "TCP", "port": 80}]}),
        ),
        (
            "v1",
            "Node",
            node.encode_to_vec(),
            json!({"kind": "Node", "apiVersion": "v1", "metadata": {"name": "node-1"},
                "spec": {"podCIDR": "10.1.0.0/24", "podCIDRs": ["10.1.0.0/24"]}}),
        ),
    ];
    for (api_version, kind, raw, want) in cases {
        let got = decode(&frame(api_version, kind, raw)).unwrap();
        assert_eq!(got, want, "{kind}: got {got:#}");
    }
}
