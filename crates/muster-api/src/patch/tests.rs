use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::registry::find_kind;

fn rt(kind: &str) -> &'static ResourceType {
    let group = match kind {
        "Deployment" | "ReplicaSet" | "StatefulSet" => "apps",
        _ => "",
    };
    find_kind(group, kind).expect("known kind")
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "nginx", "namespace": "default", "labels": {"app": "nginx"},
                     "finalizers": ["a"]},
        "spec": {
            "replicas": 2,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "selector": {"matchLabels": {"app": "nginx"}},
            "template": {
                "metadata": {"labels": {"app": "nginx"}},
                "spec": {
                    "containers": [
                        {"name": "nginx", "image": "nginx:1.25",
                         "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                         "ports": [{"containerPort": 80, "protocol": "TCP"}],
                         "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                        {"name": "sidecar", "image": "busybox", "command": ["sleep", "infinity"]}
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}]
                }
            }
        }
    })
}

fn service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
            {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}
        ]}
    })
}

/// JSON pointers and the values expected there (`null`: absent).
type Expect<'a> = &'a [(&'a str, Value)];

/// Applies `patch` (of `patch_type`) to `original` of `kind`, and compares the JSON pointers in
/// `expect` (pointer → expected value, `null` meaning absent) with the result.
fn check(
    name: &str,
    kind: &str,
    patch_type: PatchType,
    original: &Value,
    patch: &str,
    expect: &[(&str, Value)],
) {
    let out = apply_patch(rt(kind), patch_type, original, patch.as_bytes())
        .unwrap_or_else(|e| panic!("{name}: patch failed: {e}"));
    for (pointer, want) in expect {
        let got = out.pointer(pointer).cloned().unwrap_or(Value::Null);
        assert_eq!(&got, want, "{name}: {pointer} in {out:#}");
    }
    assert!(
        !out.to_string().contains("\"$"),
        "{name}: a directive was stored: {out}"
    );
}

#[test]
fn strategic_merge_cases() {
    use PatchType::StrategicMerge as Smp;
    let d = deployment();
    let cases: &[(&str, &Value, &str, Expect)] = &[
        (
            "scalar replace keeps the rest",
            &d,
            r#"{"spec":{"replicas":3}}"#,
            &[
                ("/spec/replicas", json!(3)),
                ("/spec/template/spec/containers/1/name", json!("sidecar")),
            ],
        ),
        (
            "null deletes",
            &d,
            r#"{"metadata":{"labels":{"app":null}}}"#,
            &[("/metadata/labels", json!({}))],
        ),
        (
            "kubectl apply: change image, add env, keep sidecar",
            &d,
            r#"{"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"nginx"},{"name":"sidecar"}],
               "containers":[{"env":[{"name":"FOO","value":"bar"}],"image":"nginx:1.26","name":"nginx"}]}}}}"#,
            &[
                (
                    "/spec/template/spec/containers/0/image",
                    json!("nginx:1.26"),
                ),
                // Without `$setElementOrder/env`, a new item goes first, as in Kubernetes.
                (
                    "/spec/template/spec/containers/0/env/0",
                    json!({"name": "FOO", "value": "bar"}),
                ),
                (
                    "/spec/template/spec/containers/0/env/1",
                    json!({"name": "A", "value": "1"}),
                ),
                (
                    "/spec/template/spec/containers/0/ports/0/containerPort",
                    json!(80),
                ),
                ("/spec/template/spec/containers/1/name", json!("sidecar")),
            ],
        ),
        (
            "kubectl apply: env removed by null, container removed by $patch delete",
            &d,
            r#"{"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"nginx"}],
               "containers":[{"env":null,"image":"nginx:1.25","name":"nginx"},{"$patch":"delete","name":"sidecar"}]}}}}"#,
            &[
                ("/spec/template/spec/containers/0/env", Value::Null),
                (
                    "/spec/template/spec/containers/0/image",
                    json!("nginx:1.25"),
                ),
                ("/spec/template/spec/containers/1", Value::Null),
            ],
        ),
        (
            "add a container, then $setElementOrder puts it first",
            &d,
            r#"{"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"init"},{"name":"nginx"},{"name":"sidecar"}],
               "containers":[{"name":"init","image":"alpine"}]}}}}"#,
            &[
                ("/spec/template/spec/containers/0/name", json!("init")),
                ("/spec/template/spec/containers/1/name", json!("nginx")),
                ("/spec/template/spec/containers/2/name", json!("sidecar")),
            ],
        ),
        (
            "$setElementOrder alone reorders",
            &d,
            r#"{"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"sidecar"},{"name":"nginx"}]}}}}"#,
            &[
                ("/spec/template/spec/containers/0/name", json!("sidecar")),
                (
                    "/spec/template/spec/containers/1/image",
                    json!("nginx:1.25"),
                ),
            ],
        ),
        (
            "$retainKeys drops rollingUpdate",
            &d,
            r#"{"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate"}}}"#,
            &[("/spec/strategy", json!({"type": "Recreate"}))],
        ),
        (
            "env entry removed by $patch delete, another merged",
            &d,
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","env":[{"name":"A","$patch":"delete"},{"name":"B","value":"3"}]}]}}}}"#,
            &[(
                "/spec/template/spec/containers/0/env",
                json!([{"name": "B", "value": "3"}]),
            )],
        ),
        (
            "container ports merge by containerPort",
            &d,
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","ports":[{"containerPort":80,"name":"http"},{"containerPort":443}]}]}}}}"#,
            &[(
                "/spec/template/spec/containers/0/ports",
                json!([
                    {"containerPort": 80, "protocol": "TCP", "name": "http"}, {"containerPort": 443}]),
            )],
        ),
        (
            "volumeMounts merge by mountPath, volumes by name",
            &d,
            r#"{"spec":{"template":{"spec":{"volumes":[{"name":"cache","emptyDir":{}}],
               "containers":[{"name":"nginx","volumeMounts":[{"mountPath":"/cache","name":"cache"}]}]}}}}"#,
            &[
                ("/spec/template/spec/volumes/0/name", json!("cache")),
                ("/spec/template/spec/volumes/1/name", json!("data")),
                (
                    "/spec/template/spec/containers/0/volumeMounts/0/mountPath",
                    json!("/cache"),
                ),
                (
                    "/spec/template/spec/containers/0/volumeMounts/1/mountPath",
                    json!("/data"),
                ),
            ],
        ),
        (
            "other lists (command) are replaced",
            &d,
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","command":["true"]}]}}}}"#,
            &[("/spec/template/spec/containers/1/command", json!(["true"]))],
        ),
        (
            "$patch replace on a list",
            &d,
            r#"{"spec":{"template":{"spec":{"containers":[{"$patch":"replace"},{"name":"only","image":"x"}]}}}}"#,
            &[(
                "/spec/template/spec/containers",
                json!([{"name": "only", "image": "x"}]),
            )],
        ),
        (
            "$patch replace on a map",
            &d,
            r#"{"spec":{"selector":{"$patch":"replace","matchLabels":{"tier":"web"}}}}"#,
            &[("/spec/selector", json!({"matchLabels": {"tier": "web"}}))],
        ),
        (
            "$patch delete on a map empties it",
            &d,
            r#"{"metadata":{"labels":{"$patch":"delete"}}}"#,
            &[("/metadata/labels", json!({}))],
        ),
        (
            "finalizers are a set",
            &d,
            r#"{"metadata":{"finalizers":["b","a"]}}"#,
            &[("/metadata/finalizers", json!(["b", "a"]))],
        ),
        (
            "$deleteFromPrimitiveList",
            &d,
            r#"{"metadata":{"$deleteFromPrimitiveList/finalizers":["a"]}}"#,
            &[("/metadata/finalizers", json!([]))],
        ),
        (
            "new nested values lose their nulls and directives",
            &d,
            r#"{"spec":{"template":{"spec":{"nodeSelector":{"a":"b","c":null}}}}}"#,
            &[("/spec/template/spec/nodeSelector", json!({"a": "b"}))],
        ),
    ];
    for (name, original, patch, expect) in cases {
        check(name, "Deployment", Smp, original, patch, expect);
    }

    let s = service();
    let service_cases: &[(&str, &str, Expect)] = &[
        (
            "service ports merge by port",
            r#"{"spec":{"ports":[{"port":80,"targetPort":9090}]}}"#,
            &[
                (
                    "/spec/ports/0",
                    json!({"name": "http", "port": 80, "targetPort": 9090, "protocol": "TCP"}),
                ),
                ("/spec/ports/1/port", json!(443)),
            ],
        ),
        (
            "service port deleted by port",
            r#"{"spec":{"ports":[{"port":443,"$patch":"delete"}]}}"#,
            &[
                ("/spec/ports/1", Value::Null),
                ("/spec/ports/0/port", json!(80)),
            ],
        ),
        (
            "service selector is a plain map",
            r#"{"spec":{"selector":{"tier":"fe"}}}"#,
            &[("/spec/selector", json!({"app": "web", "tier": "fe"}))],
        ),
    ];
    for (name, patch, expect) in service_cases {
        check(name, "Service", Smp, &s, patch, expect);
    }

    let pod = json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},
        "spec":{"containers":[{"name":"c","image":"x","ports":[{"containerPort":80}]}]},
        "status":{"conditions":[{"type":"Ready","status":"False"},{"type":"PodScheduled","status":"True"}],
                  "podIPs":[{"ip":"10.0.0.5"}]}});
    let pod_cases: &[(&str, &str, Expect)] = &[
        (
            "pod conditions merge by type",
            r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#,
            &[
                (
                    "/status/conditions/0",
                    json!({"type": "Ready", "status": "True"}),
                ),
                ("/status/conditions/1/type", json!("PodScheduled")),
            ],
        ),
        (
            "pod IPs merge by ip",
            r#"{"status":{"podIPs":[{"ip":"fd00::5"}]}}"#,
            &[(
                "/status/podIPs",
                json!([{"ip": "fd00::5"}, {"ip": "10.0.0.5"}]),
            )],
        ),
        (
            "pod spec containers merge by name",
            r#"{"spec":{"containers":[{"name":"c","image":"y"}]}}"#,
            &[(
                "/spec/containers/0",
                json!({"name": "c", "image": "y", "ports": [{"containerPort": 80}]}),
            )],
        ),
    ];
    for (name, patch, expect) in pod_cases {
        check(name, "Pod", Smp, &pod, patch, expect);
    }
}

/// Patches the real `kubectl apply` (client-side, 1.33) computed for successive manifests
/// (`testdata/capture_apply.sh`): applied to the live object, each must give the new manifest
/// with its last-applied annotation, keeping the server-set fields.
#[test]
fn kubectl_apply_patches_reproduce_the_applied_manifests() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/smp"));
    let read = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(dir.join(name)).expect(name)).expect(name)
    };
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        let Some(step) = file.strip_suffix(".patch.json") else {
            continue;
        };
        let live = read(&format!("{step}.live.json"));
        let want = read(&format!("{step}.want.json"));
        let patch = std::fs::read(dir.join(&file)).unwrap();
        let kind = live["kind"].as_str().unwrap();
        let got = apply_patch(rt(kind), PatchType::StrategicMerge, &live, &patch)
            .unwrap_or_else(|e| panic!("{step}: {e}"));
        assert_eq!(got, want, "{step}: got {got:#}");
        seen += 1;
    }
    assert!(seen >= 7, "only {seen} recorded patches");
}

/// Patches recorded from kubectl's editing commands (`testdata/capture_patch.sh`), all against
/// the same live Deployment (containers nginx, with env FOO and BAR, and sidecar).
#[test]
fn kubectl_editing_commands_patch_as_expected() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/patches"));
    let live: Value =
        serde_json::from_slice(&std::fs::read(dir.join("live.json")).unwrap()).unwrap();
    let nginx = "/spec/template/spec/containers/0";
    let restarted = "/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt";
    let cases: &[(&str, &[(&str, Value)])] = &[
        (
            "set-image",
            &[
                (
                    "/spec/template/spec/containers/0/image",
                    json!("nginx:1.27"),
                ),
                (
                    "/spec/template/spec/containers/1/image",
                    json!("busybox:1.36"),
                ),
                ("/spec/template/spec/containers/0/env/1/name", json!("BAR")),
            ],
        ),
        (
            "set-env",
            &[(
                "/spec/template/spec/containers/0/env",
                json!([{"name": "FOO", "value": "changed"}, {"name": "BAR", "value": "2"}, {"name": "BAZ", "value": "3"}]),
            )],
        ),
        (
            "unset-env",
            &[(
                "/spec/template/spec/containers/0/env",
                json!([{"name": "BAR", "value": "2"}]),
            )],
        ),
        (
            "set-resources",
            &[
                (
                    "/spec/template/spec/containers/0/resources/limits",
                    json!({"cpu": "200m", "memory": "64Mi"}),
                ),
                ("/spec/template/spec/containers/1/name", json!("sidecar")),
            ],
        ),
        ("rollout-pause", &[("/spec/paused", json!(true))]),
        (
            "label",
            &[("/metadata/labels", json!({"app": "web", "tier": "backend"}))],
        ),
        ("unlabel", &[("/metadata/labels", json!({"app": "web"}))]),
        (
            "annotate",
            &[("/metadata/annotations/note", json!("hello"))],
        ),
        ("patch-json", &[("/spec/replicas", json!(5))]),
        (
            "patch-merge",
            &[
                ("/spec/minReadySeconds", json!(7)),
                ("/spec/replicas", json!(3)),
            ],
        ),
        // A plain strategic patch adding a container puts it first, as Kubernetes does.
        (
            "patch-strategic",
            &[
                ("/spec/template/spec/containers/0/name", json!("extra")),
                ("/spec/template/spec/containers/1/name", json!("nginx")),
                ("/spec/template/spec/containers/2/name", json!("sidecar")),
            ],
        ),
    ];
    for (name, expect) in cases {
        let patch = std::fs::read(dir.join(format!("{name}.patch.json"))).unwrap();
        let content_type = std::fs::read_to_string(dir.join(format!("{name}.type"))).unwrap();
        let patch_type = PatchType::from_content_type(&content_type).expect(name);
        let out = apply_patch(rt("Deployment"), patch_type, &live, &patch)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for (pointer, want) in *expect {
            assert_eq!(
                out.pointer(pointer).unwrap_or(&Value::Null),
                want,
                "{name}: {pointer}"
            );
        }
        // Everything else is untouched.
        assert_eq!(out["metadata"]["name"], "web", "{name}");
        assert!(
            out.pointer(nginx).is_some(),
            "{name}: the nginx container survives"
        );
    }
    let restart = std::fs::read(dir.join("rollout-restart.patch.json")).unwrap();
    let patch: Value = serde_json::from_slice(&restart).unwrap();
    let out = apply_patch(rt("Deployment"), PatchType::StrategicMerge, &live, &restart).unwrap();
    assert!(out.pointer(restarted).is_some_and(Value::is_string));
    assert_eq!(out.pointer(restarted), patch.pointer(restarted));
}

/// List order after a patch, as Kubernetes' strategic merge computes it: named items (in the
/// patch or its `$setElementOrder`) in their order, server-only items merged in by their old
/// positions.
#[test]
fn strategic_merge_list_order() {
    let env = |names: &[&str]| -> Value {
        names
            .iter()
            .map(|n| json!({"name": n, "value": n.to_lowercase()}))
            .collect()
    };
    let cases: &[(&str, &[&str], &str, &[&str])] = &[
        (
            "a patched item keeps its place",
            &["A", "B", "C"],
            r#"{"env":[{"name":"B","value":"x"}]}"#,
            &["A", "B", "C"],
        ),
        (
            "a new item goes first",
            &["A", "B"],
            r#"{"env":[{"name":"C","value":"c"}]}"#,
            &["C", "A", "B"],
        ),
        (
            "patch order wins for named items",
            &["B", "C", "A"],
            r#"{"env":[{"name":"A","value":"a"},{"name":"B","value":"b"},{"name":"D","value":"d"}]}"#,
            &["C", "A", "B", "D"],
        ),
        (
            "setElementOrder reorders",
            &["B", "A"],
            r#"{"$setElementOrder/env":[{"name":"A"},{"name":"B"}]}"#,
            &["A", "B"],
        ),
        (
            "server-only items interleave by their old place",
            &["C", "B", "D", "A", "E"],
            r#"{"$setElementOrder/env":[{"name":"A"},{"name":"B"}],"env":[{"name":"A","value":"a"},{"name":"B","value":"b"}]}"#,
            &["C", "D", "A", "B", "E"],
        ),
        (
            "setElementOrder with a delete and an addition",
            &["ENV2", "ENV5", "ENV1", "ENV3", "ENV4"],
            r#"{"$setElementOrder/env":[{"name":"ENV1"},{"name":"ENV2"},{"name":"ENV6"}],
             "env":[{"name":"ENV3","$patch":"delete"},{"name":"ENV6","value":"env6"}]}"#,
            &["ENV5", "ENV1", "ENV2", "ENV6", "ENV4"],
        ),
        (
            "unknown names in setElementOrder are ignored",
            &["A", "B"],
            r#"{"$setElementOrder/env":[{"name":"C"},{"name":"B"},{"name":"A"}]}"#,
            &["B", "A"],
        ),
    ];
    for (name, live, patch, want) in cases {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "env": env(live)}]}});
        let patch = format!(
            r#"{{"spec":{{"containers":[{{"name":"c",{}}}]}}}}"#,
            &patch[1..patch.len() - 1]
        );
        let out = apply_patch(rt("Pod"), PatchType::StrategicMerge, &pod, patch.as_bytes())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = out["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect::<Vec<_>>();
        assert_eq!(&got, want, "{name}");
    }
}

#[test]
fn bad_patches_are_rejected_with_kubernetes_codes() {
    let d = deployment();
    let cases: &[(&str, PatchType, &str, u16)] = &[
        ("smp not json", PatchType::StrategicMerge, "{nope", 400),
        ("smp not an object", PatchType::StrategicMerge, "[1,2]", 400),
        ("merge not an object", PatchType::Merge, "\"x\"", 400),
        (
            "json patch not a list",
            PatchType::Json,
            r#"{"op":"add"}"#,
            400,
        ),
        (
            "json patch unknown op",
            PatchType::Json,
            r#"[{"op":"frob","path":"/a"}]"#,
            400,
        ),
        (
            "json patch failing test",
            PatchType::Json,
            r#"[{"op":"test","path":"/spec/replicas","value":5}]"#,
            422,
        ),
        (
            "json patch missing path",
            PatchType::Json,
            r#"[{"op":"replace","path":"/spec/nosuch/x","value":5}]"#,
            422,
        ),
        (
            "smp item without merge key",
            PatchType::StrategicMerge,
            r#"{"spec":{"template":{"spec":{"containers":[{"image":"x"}]}}}}"#,
            400,
        ),
        (
            "smp unknown $patch",
            PatchType::StrategicMerge,
            r#"{"spec":{"$patch":"frob"}}"#,
            400,
        ),
        (
            "smp field outside $retainKeys",
            PatchType::StrategicMerge,
            r#"{"spec":{"strategy":{"$retainKeys":["type"],"rollingUpdate":{}}}}"#,
            400,
        ),
        ("apply is not a patch", PatchType::Apply, "{}", 400),
    ];
    let too_many = format!(
        "[{}]",
        vec![r#"{"op":"test","path":"/kind","value":"Deployment"}"#; 10_001].join(",")
    );
    let cases = cases
        .iter()
        .copied()
        .chain([(
            "json patch too long",
            PatchType::Json,
            too_many.as_str(),
            413,
        )])
        .collect::<Vec<_>>();
    for (name, patch_type, patch, code) in &cases {
        let err = apply_patch(rt("Deployment"), *patch_type, &d, patch.as_bytes()).expect_err(name);
        assert_eq!(err.code, *code, "{name}: {err}");
        if *code == 422 {
            // As Kubernetes: a fixed message, the reason in a cause.
            assert_eq!(
                err.message,
                "the server rejected our request due to an error in our request"
            );
            assert!(!err.causes[0].message.is_empty(), "{name}");
        } else {
            assert!(!err.message.is_empty(), "{name}");
        }
    }
}

#[test]
fn merge_and_json_patch_cases() {
    let d = deployment();
    check(
        "merge patch replaces lists wholesale",
        "Deployment",
        PatchType::Merge,
        &d,
        r#"{"metadata":{"labels":{"tier":"web","app":null}},"spec":{"template":{"spec":{"containers":[{"name":"x","image":"y"}]}}}}"#,
        &[
            ("/metadata/labels", json!({"tier": "web"})),
            (
                "/spec/template/spec/containers",
                json!([{"name": "x", "image": "y"}]),
            ),
        ],
    );
    check(
        "scale-style merge patch",
        "Deployment",
        PatchType::Merge,
        &d,
        r#"{"spec":{"replicas":3}}"#,
        &[
            ("/spec/replicas", json!(3)),
            ("/spec/strategy/type", json!("RollingUpdate")),
        ],
    );
    check(
        "json patch ops",
        "Deployment",
        PatchType::Json,
        &d,
        r#"[{"op":"test","path":"/spec/replicas","value":2},
            {"op":"replace","path":"/spec/replicas","value":4},
            {"op":"add","path":"/metadata/labels/tier","value":"web"},
            {"op":"remove","path":"/spec/template/spec/containers/1"},
            {"op":"copy","from":"/metadata/name","path":"/metadata/annotations"}]"#,
        &[
            ("/spec/replicas", json!(4)),
            ("/metadata/labels/tier", json!("web")),
            ("/spec/template/spec/containers/1", Value::Null),
            ("/metadata/annotations", json!("nginx")),
        ],
    );
}

#[test]
fn content_types() {
    let cases = [
        ("application/json-patch+json", Some(PatchType::Json)),
        ("application/merge-patch+json", Some(PatchType::Merge)),
        (
            "application/strategic-merge-patch+json; charset=utf-8",
            Some(PatchType::StrategicMerge),
        ),
        ("application/apply-patch+yaml", Some(PatchType::Apply)),
        ("application/apply-patch+cbor", None),
        ("application/json", None),
    ];
    for (ct, want) in cases {
        assert_eq!(PatchType::from_content_type(ct), want, "{ct}");
        if let Some(t) = want {
            assert_eq!(PatchType::from_content_type(t.content_type()), Some(t));
        }
    }
}

#[test]
fn decode_body_cases() {
    let ok: &[(&str, &str, Value)] = &[
        (
            "application/json",
            r#"{"kind":"Pod","apiVersion":"v1"}"#,
            json!({"kind":"Pod","apiVersion":"v1"}),
        ),
        (
            "application/json;charset=utf-8",
            r#"{"a":[1,2]}"#,
            json!({"a":[1,2]}),
        ),
        (
            "application/yaml",
            "kind: Pod\napiVersion: v1\nmetadata:\n  name: x\n  labels: {a: b}\n",
            json!({"kind":"Pod","apiVersion":"v1","metadata":{"name":"x","labels":{"a":"b"}}}),
        ),
        (
            "application/apply-patch+yaml",
            r#"{"kind":"Pod"}"#,
            json!({"kind":"Pod"}),
        ),
    ];
    for (ct, body, want) in ok {
        assert_eq!(
            &decode_body(ct, body.as_bytes()).unwrap(),
            want,
            "{ct} {body}"
        );
    }
    let bad: &[(&str, &str, u16)] = &[
        ("application/json", "{", 400),
        ("application/json", "[1]", 400),
        ("application/yaml", "a: [", 400),
        ("application/yaml", "a: 1\n---\nb: 2\n", 400),
        ("application/cbor", "", 415),
        ("text/plain", "{}", 415),
        ("application/vnd.kubernetes.protobuf", "nope", 400),
    ];
    for (ct, body, code) in bad {
        let err = decode_body(ct, body.as_bytes()).expect_err(body);
        assert_eq!(err.code, *code, "{ct} {body}: {err}");
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        "[a-z]{0,4}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-e]{1,2}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[a-e]{1,2}", arb_json(), 0..5)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// The RFC 7386 patch that turns `a` into `b` (for values without nulls).
fn merge_diff(a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let mut out = serde_json::Map::new();
            for (k, av) in a {
                match b.get(k) {
                    None => {
                        out.insert(k.clone(), Value::Null);
                    }
                    Some(bv) if bv != av => {
                        out.insert(k.clone(), merge_diff(av, bv));
                    }
                    Some(_) => {}
                }
            }
            for (k, bv) in b {
                if !a.contains_key(k) {
                    out.insert(k.clone(), bv.clone());
                }
            }
            Value::Object(out)
        }
        _ => b.clone(),
    }
}

proptest! {
    #[test]
    fn empty_strategic_patch_is_identity(obj in arb_object()) {
        for kind in ["Deployment", "Pod", "Service"] {
            let out = apply_patch(rt(kind), PatchType::StrategicMerge, &obj, b"{}").unwrap();
            prop_assert_eq!(&out, &obj);
        }
    }

    #[test]
    fn merge_patch_of_diff_gives_target(a in arb_object(), b in arb_object()) {
        let diff = merge_diff(&a, &b);
        let out = apply_patch(rt("Pod"), PatchType::Merge, &a, diff.to_string().as_bytes()).unwrap();
        prop_assert_eq!(&out, &b);
        // With no lists of objects and no directives, a strategic merge patch agrees.
        let smp = apply_patch(rt("ConfigMap"), PatchType::StrategicMerge, &a, diff.to_string().as_bytes()).unwrap();
        prop_assert_eq!(&smp, &b);
    }
}

mod apply;
