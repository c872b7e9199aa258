//! Server-side apply and managedFields.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::rt;
use crate::patch::{record_subresource_manager, record_update_manager, server_side_apply};

const T0: &str = "2026-01-01T00:00:00Z";
const T1: &str = "2026-01-01T00:01:00Z";
const T2: &str = "2026-01-01T00:02:00Z";

fn manifest(replicas: i64, image: &str, extra_label: Option<&str>) -> Value {
    let mut labels = json!({"app": "web"});
    if let Some(l) = extra_label {
        labels[l] = json!("yes");
    }
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": image}]}}
        }
    })
}

fn entry<'a>(obj: &'a Value, manager: &str) -> Option<&'a Value> {
    obj["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager)
}

fn apply(current: Option<&Value>, applied: &Value, manager: &str, force: bool, now: &str) -> Value {
    server_side_apply(rt("Deployment"), current, applied, manager, force, now)
        .unwrap_or_else(|e| panic!("apply by {manager} failed: {e}"))
}

#[test]
fn create_records_the_applier_in_kubernetes_format() {
    let created = apply(None, &manifest(2, "nginx", None), "kubectl", false, T0);
    assert_eq!(created["spec"]["replicas"], 2);
    let e = entry(&created, "kubectl").expect("entry");
    assert_eq!(e["operation"], "Apply");
    assert_eq!(e["apiVersion"], "apps/v1");
    assert_eq!(e["time"], T0);
    assert_eq!(e["fieldsType"], "FieldsV1");
    assert_eq!(
        e["fieldsV1"],
        json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}}}
                }
            }
        })
    );
}

#[test]
fn reapplying_the_same_manifest_changes_nothing() {
    let m = manifest(2, "nginx", Some("tier"));
    let created = apply(None, &m, "kubectl", false, T0);
    let again = apply(Some(&created), &m, "kubectl", false, T1);
    assert_eq!(again, created);
}

#[test]
fn fields_no_longer_applied_are_removed_unless_owned_by_others() {
    let created = apply(
        None,
        &manifest(2, "nginx", Some("tier")),
        "kubectl",
        false,
        T0,
    );
    // Another writer adds a label of its own.
    let mut labelled = created.clone();
    labelled["metadata"]["labels"]["owner"] = json!("ops");
    record_update_manager(
        rt("Deployment"),
        Some(&created),
        &mut labelled,
        "kubectl-label",
        "Update",
        T1,
    );

    let out = apply(
        Some(&labelled),
        &manifest(2, "nginx", None),
        "kubectl",
        false,
        T2,
    );
    assert_eq!(
        out["metadata"]["labels"],
        json!({"app": "web", "owner": "ops"})
    );
    assert_eq!(entry(&out, "kubectl").unwrap()["time"], T2);
    assert!(entry(&out, "kubectl-label").is_some());
}

#[test]
fn removed_list_items_go_away() {
    let mut two = manifest(2, "nginx", None);
    two["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "sidecar", "image": "busybox"}));
    let created = apply(None, &two, "kubectl", false, T0);
    let out = apply(
        Some(&created),
        &manifest(2, "nginx:2", None),
        "kubectl",
        false,
        T1,
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"],
        json!([{"name": "web", "image": "nginx:2"}])
    );
}

#[test]
fn conflicts_with_other_managers_and_force() {
    // Client-side apply created the object: kubectl-client-side-apply owns every field.
    let mut created = manifest(2, "nginx", None);
    record_update_manager(
        rt("Deployment"),
        None,
        &mut created,
        "kubectl-client-side-apply",
        "Update",
        T0,
    );
    assert_eq!(
        entry(&created, "kubectl-client-side-apply").unwrap()["operation"],
        "Update"
    );

    // Same values: no conflict, ownership shared.
    let shared = apply(
        Some(&created),
        &manifest(2, "nginx", None),
        "kubectl",
        false,
        T1,
    );
    assert!(entry(&shared, "kubectl").is_some());
    assert!(entry(&shared, "kubectl-client-side-apply").is_some());

    let cases: &[(&str, Value, &str)] = &[
        (
            "one conflict",
            manifest(3, "nginx", None),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas",
        ),
        (
            "two conflicts",
            manifest(3, "nginx:2", None),
            "Apply failed with 2 conflicts: conflicts with \"kubectl-client-side-apply\" using apps/v1:\n- .spec.replicas\n- .spec.template.spec.containers[name=\"web\"].image",
        ),
    ];
    for (name, applied, message) in cases {
        let err = server_side_apply(
            rt("Deployment"),
            Some(&created),
            applied,
            "kubectl",
            false,
            T1,
        )
        .expect_err(name);
        assert_eq!(err.code, 409, "{name}");
        assert_eq!(err.reason, "Conflict", "{name}");
        assert_eq!(&err.message, message, "{name}");
        assert_eq!(err.causes[0].reason, "FieldManagerConflict", "{name}");
        assert_eq!(err.causes[0].field, ".spec.replicas", "{name}");

        let forced = apply(Some(&created), applied, "kubectl", true, T1);
        assert_eq!(forced["spec"]["replicas"], 3, "{name}");
        let old_owner = entry(&forced, "kubectl-client-side-apply").unwrap();
        assert!(
            old_owner["fieldsV1"]["f:spec"].get("f:replicas").is_none(),
            "{name}: ownership moved: {old_owner}"
        );
    }

    // A conflict between two appliers names the other applier without apiVersion.
    let a = apply(None, &manifest(2, "nginx", None), "alice", false, T0);
    let err = server_side_apply(
        rt("Deployment"),
        Some(&a),
        &manifest(5, "nginx", None),
        "bob",
        false,
        T1,
    )
    .unwrap_err();
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"alice\": .spec.replicas"
    );
}

#[test]
fn updates_take_ownership_of_what_they_change() {
    let created = apply(None, &manifest(2, "nginx", None), "kubectl", false, T0);
    // `kubectl scale` changes replicas: the applier loses it, so a later apply without
    // replicas leaves the scaled value alone.
    let mut scaled = created.clone();
    scaled["spec"]["replicas"] = json!(5);
    record_update_manager(
        rt("Deployment"),
        Some(&created),
        &mut scaled,
        "kubectl-scale",
        "Update",
        T1,
    );
    assert_eq!(
        entry(&scaled, "kubectl-scale").unwrap()["fieldsV1"],
        json!({"f:spec": {"f:replicas": {}}})
    );
    assert!(
        entry(&scaled, "kubectl").unwrap()["fieldsV1"]["f:spec"]
            .get("f:replicas")
            .is_none()
    );

    let mut without = manifest(2, "nginx", None);
    without["spec"]
        .as_object_mut()
        .unwrap()
        .shift_remove("replicas");
    let out = apply(Some(&scaled), &without, "kubectl", false, T2);
    assert_eq!(out["spec"]["replicas"], 5);

    // An update that changes nothing adds no entry.
    let mut same = out.clone();
    record_update_manager(
        rt("Deployment"),
        Some(&out),
        &mut same,
        "noop",
        "Update",
        T2,
    );
    assert_eq!(same, out);
}

#[test]
fn apply_rejects_bad_input() {
    let cases: &[(&str, Value, &str)] = &[
        ("no manager", manifest(1, "x", None), ""),
        ("not an object", json!([1]), "kubectl"),
        (
            "wrong kind",
            json!({"apiVersion": "v1", "kind": "Pod"}),
            "kubectl",
        ),
    ];
    for (name, applied, manager) in cases {
        let err =
            server_side_apply(rt("Deployment"), None, applied, manager, false, T0).expect_err(name);
        assert_eq!(err.code, 400, "{name}");
    }
}

#[test]
fn server_fields_in_the_applied_config_are_ignored() {
    let mut current = apply(None, &manifest(2, "nginx", None), "kubectl", false, T0);
    current["metadata"]["creationTimestamp"] = json!(T0);
    current["metadata"]["uid"] = json!("u-1");
    current["status"] = json!({"replicas": 2});
    // What `kubectl create deployment --dry-run=client -o yaml` prints.
    let mut applied = manifest(2, "nginx", None);
    applied["metadata"]["creationTimestamp"] = Value::Null;
    applied["status"] = json!({});
    applied["metadata"]["managedFields"] = json!([{"manager": "evil", "operation": "Apply"}]);
    let out = apply(Some(&current), &applied, "kubectl", false, T1);
    assert_eq!(out, current);
}

#[test]
fn set_lists_and_granular_maps_are_recorded_per_item() {
    let mut m = manifest(1, "x", None);
    m["metadata"]["finalizers"] = json!(["a/b"]);
    let created = apply(None, &m, "kubectl", false, T0);
    let fields = &entry(&created, "kubectl").unwrap()["fieldsV1"]["f:metadata"];
    assert_eq!(fields["f:finalizers"], json!({".": {}, "v:\"a/b\"": {}}));

    // Dropping the finalizer from the manifest removes it; another manager's stays.
    let mut more = created.clone();
    more["metadata"]["finalizers"] = json!(["a/b", "c/d"]);
    record_update_manager(
        rt("Deployment"),
        Some(&created),
        &mut more,
        "ctrl",
        "Update",
        T1,
    );
    let out = apply(Some(&more), &manifest(1, "x", None), "kubectl", false, T2);
    assert_eq!(out["metadata"]["finalizers"], json!(["c/d"]));
}

/// A small Deployment manifest: labels, maybe replicas, containers with env and ports.
fn arb_manifest() -> impl Strategy<Value = Value> {
    let env = prop::collection::btree_map("[A-C]", "[0-2]", 0..3);
    let ports = prop::collection::btree_set(80..83i64, 0..3);
    let container = ("[a-c]:[1-2]", env, ports);
    (
        prop::collection::btree_map("[p-r]", "[x-y]", 0..3),
        prop::option::of(0..3i64),
        prop::collection::btree_map("[a-d]", container, 1..4),
        prop::option::of(prop::sample::select(vec!["Recreate", "RollingUpdate"])),
    )
        .prop_map(|(labels, replicas, containers, strategy)| {
            let containers = containers
                .into_iter()
                .map(|(name, (image, env, ports))| {
                    let mut c = json!({"name": name, "image": image});
                    if !env.is_empty() {
                        c["env"] = env
                            .into_iter()
                            .map(|(n, v)| json!({"name": n, "value": v}))
                            .collect();
                    }
                    if !ports.is_empty() {
                        c["ports"] = ports
                            .into_iter()
                            .map(|p| json!({"containerPort": p}))
                            .collect();
                    }
                    c
                })
                .collect::<Vec<_>>();
            let mut m = json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web"},
                "spec": {"template": {"spec": {"containers": containers}}}
            });
            if !labels.is_empty() {
                m["metadata"]["labels"] = json!(labels);
            }
            if let Some(r) = replicas {
                m["spec"]["replicas"] = json!(r);
            }
            if let Some(s) = strategy {
                m["spec"]["strategy"] = json!({"type": s});
            }
            m
        })
}

fn without_managed_fields(mut obj: Value) -> Value {
    obj["metadata"]
        .as_object_mut()
        .unwrap()
        .shift_remove("managedFields");
    obj
}

/// Sorts keyed lists by key so that comparisons ignore the order SSA merges items in.
fn canonical(mut obj: Value) -> Value {
    if let Some(containers) = obj.pointer_mut("/spec/template/spec/containers") {
        let list = containers.as_array_mut().unwrap();
        list.sort_by_key(|c| c["name"].as_str().unwrap().to_string());
        for c in list {
            for (field, key) in [("env", "name"), ("ports", "containerPort")] {
                if let Some(items) = c.get_mut(field).and_then(Value::as_array_mut) {
                    items.sort_by_key(|i| i[key].to_string());
                }
            }
        }
    }
    obj
}

proptest! {
    /// With a single applier, applying `b` over what `a` created gives exactly `b`, and
    /// re-applying `b` changes nothing.
    #[test]
    fn a_lone_applier_gets_exactly_its_manifest(a in arb_manifest(), b in arb_manifest()) {
        let created = apply(None, &a, "kubectl", false, T0);
        let updated = apply(Some(&created), &b, "kubectl", false, T1);
        prop_assert_eq!(canonical(without_managed_fields(updated.clone())), canonical(b.clone()));
        let again = apply(Some(&updated), &b, "kubectl", false, T2);
        prop_assert_eq!(&again, &updated);
    }
}

#[test]
fn status_writes_are_recorded_with_their_subresource() {
    let created = apply(None, &manifest(2, "nginx", None), "kubectl", false, T0);
    let mut with_status = created.clone();
    with_status["status"] =
        json!({"replicas": 2, "conditions": [{"type": "Available", "status": "True"}]});
    record_subresource_manager(
        rt("Deployment"),
        Some(&created),
        &mut with_status,
        "muster-controllers",
        "Update",
        "status",
        T1,
    );
    let e = entry(&with_status, "muster-controllers").unwrap();
    assert_eq!(e["subresource"], "status");
    assert_eq!(
        e["fieldsV1"],
        json!({"f:status": {"f:conditions": {".": {}, "k:{\"type\":\"Available\"}": {".": {}, "f:status": {}, "f:type": {}}}, "f:replicas": {}}})
    );
    // A status write owns nothing outside status.
    let mut sneaky = with_status.clone();
    sneaky["spec"]["replicas"] = json!(9);
    sneaky["status"]["replicas"] = json!(3);
    record_subresource_manager(
        rt("Deployment"),
        Some(&with_status),
        &mut sneaky,
        "muster-controllers",
        "Update",
        "status",
        T2,
    );
    let e = entry(&sneaky, "muster-controllers").unwrap();
    assert!(e["fieldsV1"].get("f:spec").is_none(), "{e}");

    // The same manager writing the main resource gets a separate entry.
    let mut relabelled = with_status.clone();
    relabelled["metadata"]["labels"]["x"] = json!("y");
    record_update_manager(
        rt("Deployment"),
        Some(&with_status),
        &mut relabelled,
        "muster-controllers",
        "Update",
        T2,
    );
    let entries = relabelled["metadata"]["managedFields"].as_array().unwrap();
    assert_eq!(
        entries
            .iter()
            .filter(|e| e["manager"] == "muster-controllers")
            .count(),
        2
    );
}

/// The managedFields Kubernetes writes for `kubectl create deployment web --image=nginx
/// --port=80` (after defaulting): maps, pointers and optional lists carry `.`, structs and
/// required lists do not; ports are keyed by port and protocol; the selector is atomic.
#[test]
fn field_sets_follow_kubernetes_conventions() {
    let mut created = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
                     "creationTimestamp": "2026-01-01T00:00:00Z", "uid": "u"},
        "spec": {
            "replicas": 1, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{"name": "nginx", "image": "nginx", "imagePullPolicy": "Always",
                                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                    "resources": {}, "terminationMessagePath": "/dev/termination-log",
                                    "terminationMessagePolicy": "File"}],
                    "dnsPolicy": "ClusterFirst", "restartPolicy": "Always",
                    "schedulerName": "default-scheduler", "securityContext": {},
                    "terminationGracePeriodSeconds": 30
                }
            }
        },
        "status": {}
    });
    record_update_manager(
        rt("Deployment"),
        None,
        &mut created,
        "kubectl-create",
        "Update",
        T0,
    );
    let e = entry(&created, "kubectl-create").unwrap();
    assert_eq!(
        e["fieldsV1"],
        json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:progressDeadlineSeconds": {}, "f:replicas": {}, "f:revisionHistoryLimit": {},
                "f:selector": {},
                "f:strategy": {"f:rollingUpdate": {".": {}, "f:maxSurge": {}, "f:maxUnavailable": {}}, "f:type": {}},
                "f:template": {
                    "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {
                        "f:containers": {"k:{\"name\":\"nginx\"}": {
                            ".": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {},
                            "f:ports": {".": {}, "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                                ".": {}, "f:containerPort": {}, "f:protocol": {}}},
                            "f:resources": {}, "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {}
                        }},
                        "f:dnsPolicy": {}, "f:restartPolicy": {}, "f:schedulerName": {},
                        "f:securityContext": {}, "f:terminationGracePeriodSeconds": {}
                    }
                }
            }
        })
    );

    // An applied port without protocol is the same item as the defaulted one: a different
    // container port value is a conflict, reported with both key fields.
    let mut applied = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "nginx", "ports": [{"containerPort": 80, "name": "http"}]}]}}}});
    let shared = apply(Some(&created), &applied, "kubectl", false, T1);
    assert_eq!(
        shared["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"],
        "http"
    );
    applied["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    let err = server_side_apply(
        rt("Deployment"),
        Some(&created),
        &applied,
        "kubectl",
        false,
        T1,
    )
    .unwrap_err();
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"kubectl-create\" using apps/v1: .spec.template.spec.containers[name=\"nginx\"].image"
    );
}

#[test]
fn conflicts_with_several_managers_are_grouped_by_manager() {
    let mut current = apply(None, &manifest(2, "nginx", None), "zed", false, T0);
    let mut scaled = current.clone();
    scaled["spec"]["replicas"] = json!(3);
    record_update_manager(
        rt("Deployment"),
        Some(&current),
        &mut scaled,
        "alpha",
        "Update",
        T1,
    );
    current = scaled;
    let err = server_side_apply(
        rt("Deployment"),
        Some(&current),
        &manifest(4, "nginx:2", None),
        "me",
        false,
        T2,
    )
    .unwrap_err();
    assert_eq!(
        err.message,
        "Apply failed with 2 conflicts: conflicts with \"alpha\" using apps/v1:\n- .spec.replicas\nconflicts with \"zed\":\n- .spec.template.spec.containers[name=\"web\"].image"
    );
    assert_eq!(err.causes.len(), 2);
}

/// kubectl's switch from client-side to server-side apply: its first apply conflicts on what
/// it changes; then it rewrites managedFields with a JSON patch (the entries the client sends
/// are kept), after which its applies own what client-side apply owned.
#[test]
fn client_side_apply_upgrades_to_server_side_apply() {
    let mut csa = manifest(2, "nginx", None);
    record_update_manager(
        rt("Deployment"),
        None,
        &mut csa,
        "kubectl-client-side-apply",
        "Update",
        T0,
    );
    let err = server_side_apply(
        rt("Deployment"),
        Some(&csa),
        &manifest(3, "nginx", None),
        "kubectl",
        false,
        T1,
    )
    .unwrap_err();
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
    );

    // What kubectl's JSON patch does: the client-side entry becomes kubectl's Apply entry.
    let mut upgraded = csa.clone();
    let entry = &mut upgraded["metadata"]["managedFields"][0];
    entry["manager"] = json!("kubectl");
    entry["operation"] = json!("Apply");
    record_update_manager(
        rt("Deployment"),
        Some(&csa),
        &mut upgraded,
        "kubectl",
        "Update",
        T1,
    );
    assert_eq!(
        upgraded["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        upgraded["metadata"]["managedFields"][0]["operation"],
        "Apply"
    );

    let out = apply(
        Some(&upgraded),
        &manifest(3, "nginx", None),
        "kubectl",
        false,
        T2,
    );
    assert_eq!(out["spec"]["replicas"], 3);
}

#[test]
fn managed_fields_sent_by_the_client() {
    let created = apply(None, &manifest(2, "nginx", None), "kubectl", false, T0);
    let cases: &[(&str, Value, &[&str])] = &[
        (
            "an empty list keeps the stored entries",
            json!([]),
            &["kubectl", "editor"],
        ),
        ("[{}] strips them all", json!([{}]), &[]),
        (
            "a list replaces them",
            json!([{"manager": "other", "operation": "Update", "apiVersion": "apps/v1",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]),
            &["other", "editor"],
        ),
    ];
    for (name, sent, managers) in cases {
        let mut updated = created.clone();
        updated["metadata"]["managedFields"] = sent.clone();
        updated["metadata"]["labels"]["edited"] = json!("yes");
        record_update_manager(
            rt("Deployment"),
            Some(&created),
            &mut updated,
            "editor",
            "Update",
            T1,
        );
        let got = updated["metadata"]["managedFields"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|e| e["manager"].as_str().unwrap())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        assert_eq!(&got, managers, "{name}");
    }
}
