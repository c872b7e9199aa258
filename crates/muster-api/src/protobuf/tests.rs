use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Value, json};

use super::*;

/// A body as kubectl frames it: magic, then the `runtime.Unknown` envelope.
fn frame(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
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
    ];
    for (name, body, code) in cases {
        let err = decode(&body).expect_err(name);
        assert_eq!(err.code, code, "{name}: {err}");
    }
}
