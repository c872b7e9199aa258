//! Deployments, StatefulSets, garbage collection and namespace deletion against a real
//! `muster apiserver`, with a fake node that makes every pod Ready.
//! `cargo build -p muster && cargo test -p muster-controllers --test workloads -- --ignored`

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams};

/// A workload manifest: `kind` named `name` with `replicas` pods labelled `app: <app>`
/// running `image`; `spec` adds lines to the spec (indented by two spaces), `labels` gives
/// the object labels too.
fn workload(kind: &str, name: &str, replicas: u32, app: &str, image: &str, spec: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: {kind}
metadata:
  name: {name}
  labels:
    app: {app}
spec:
  replicas: {replicas}
{spec}  selector:
    matchLabels:
      app: {app}
  template:
    metadata:
      labels:
        app: {app}
    spec:
      containers:
      - name: c
        image: {image}
        ports:
        - containerPort: 80
"
    )
}

/// The Deployment most tests use: nginx, 3 replicas.
fn deploy_nginx() -> String {
    workload("Deployment", "nginx", 3, "nginx", "nginx:1", "")
}

async fn live_pods(c: &Cluster, ns: &str, selector: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    api.list(&ListParams::default().labels(selector))
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect()
        })
        .unwrap_or_default()
}

/// (live pods matching `selector`, how many of them have an owner).
async fn owned_pods(c: &Cluster, selector: &str) -> (usize, usize) {
    let pods = live_pods(c, "default", selector).await;
    let owned = pods
        .iter()
        .filter(|p| {
            p.metadata
                .owner_references
                .as_ref()
                .is_some_and(|r| !r.is_empty())
        })
        .count();
    (pods.len(), owned)
}

/// `kubectl rollout status`, with the objects' state in the failure message.
fn rollout_status(c: &Cluster, what: &str) {
    let (ok, out, err) = c.kubectl_result(&["rollout", "status", what, "--timeout=60s"]);
    if !ok
        || !(out.contains("successfully rolled out")
            || out.contains("roll out complete")
            || out.contains("rolling update complete"))
    {
        let state = c
            .kubectl_result(&["get", "rs,statefulsets,pods,deployments", "-o", "yaml"])
            .1;
        panic!("rollout status {what}: {out} {err}\n{state}");
    }
}

fn image(p: &Pod) -> String {
    p.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the muster binary (cargo build -p muster)"]
async fn deployment_rollout_undo_scale_and_gc() {
    let c = Cluster::start().await;
    let kubelet = fake_kubelet(c.client.clone(), "default");
    let f = c.write("deploy.yaml", &deploy_nginx());
    c.kubectl(&["apply", "-f", f.to_str().unwrap()]);
    rollout_status(&c, "deployment/nginx");
    let pods = live_pods(&c, "default", "app=nginx").await;
    assert_eq!(pods.len(), 3);
    let rs_name = pods[0].metadata.owner_references.as_ref().unwrap()[0]
        .name
        .clone();
    let hash = rs_name.strip_prefix("nginx-").unwrap();
    assert!(
        pods.iter()
            .all(|p| p.metadata.labels.as_ref().unwrap()["pod-template-hash"] == hash)
    );

    c.kubectl(&["set", "image", "deployment/nginx", "c=nginx:2"]);
    rollout_status(&c, "deployment/nginx");
    eventually(20, "only new pods", || async {
        let pods = live_pods(&c, "default", "app=nginx").await;
        let images: Vec<String> = pods.iter().map(image).collect();
        if images.len() == 3 && images.iter().all(|i| i == "nginx:2") {
            Ok(())
        } else {
            Err(format!("{images:?}"))
        }
    })
    .await;
    let history = c.kubectl(&["rollout", "history", "deployment/nginx"]);
    assert!(
        history.lines().any(|l| l.trim_start().starts_with('1'))
            && history.lines().any(|l| l.trim_start().starts_with('2')),
        "{history}"
    );

    c.kubectl(&["rollout", "undo", "deployment/nginx"]);
    rollout_status(&c, "deployment/nginx");
    eventually(20, "rolled back", || async {
        let pods = live_pods(&c, "default", "app=nginx").await;
        let images: Vec<String> = pods.iter().map(image).collect();
        if images.len() == 3 && images.iter().all(|i| i == "nginx:1") {
            Ok(())
        } else {
            Err(format!("{images:?}"))
        }
    })
    .await;
    let rs_api: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    let first = rs_api.get(&rs_name).await.unwrap();
    assert_eq!(
        first.metadata.annotations.unwrap()["deployment.kubernetes.io/revision"],
        "3"
    );

    c.kubectl(&["scale", "deployment/nginx", "--replicas=5"]);
    eventually(20, "scaled", || async {
        let n = live_pods(&c, "default", "app=nginx").await.len();
        if n == 5 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    let d_api: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    eventually(20, "status", || async {
        let d = d_api.get("nginx").await.map_err(|e| e.to_string())?;
        let s = d.status.unwrap_or_default();
        let conds: Vec<(String, String)> = s
            .conditions
            .iter()
            .flatten()
            .map(|c| (c.type_.clone(), c.reason.clone().unwrap_or_default()))
            .collect();
        let want = vec![
            (
                "Available".to_string(),
                "MinimumReplicasAvailable".to_string(),
            ),
            (
                "Progressing".to_string(),
                "NewReplicaSetAvailable".to_string(),
            ),
        ];
        if s.available_replicas == Some(5) && s.updated_replicas == Some(5) && conds == want {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;

    // Background deletion: the garbage collector removes the ReplicaSets and their pods.
    c.kubectl(&["delete", "deployment", "nginx", "--wait=false"]);
    eventually(30, "dependents collected", || async {
        let rss = rs_api
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
        let pods = live_pods(&c, "default", "app=nginx").await.len();
        if rss == 0 && pods == 0 {
            Ok(())
        } else {
            Err(format!("{rss} rs, {pods} pods"))
        }
    })
    .await;
    kubelet.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the muster binary (cargo build -p muster)"]
async fn statefulset_ordered_with_stable_names() {
    let c = Cluster::start().await;
    let f = c.write(
        "sts.yaml",
        &workload(
            "StatefulSet",
            "web",
            3,
            "web",
            "nginx:1",
            "  serviceName: nginx\n  updateStrategy:\n    type: RollingUpdate\n",
        ),
    );
    c.kubectl(&["apply", "-f", f.to_str().unwrap()]);
    // No node yet: web-0 only, and it waits.
    eventually(10, "web-0", || async {
        let n = live_pods(&c, "default", "app=web").await.len();
        if n > 0 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let names: Vec<String> = live_pods(&c, "default", "app=web")
        .await
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, ["web-0"]);
    let kubelet = fake_kubelet(c.client.clone(), "default");
    rollout_status(&c, "statefulset/web");
    let pods = live_pods(&c, "default", "app=web").await;
    let mut names: Vec<String> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["web-0", "web-1", "web-2"]);
    for p in &pods {
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname, p.metadata.name);
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
    }
    c.kubectl(&["scale", "statefulset/web", "--replicas=1"]);
    eventually(20, "scaled down", || async {
        let mut names: Vec<String> = live_pods(&c, "default", "app=web")
            .await
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        names.sort();
        if names == ["web-0"] {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await;
    kubelet.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the muster binary (cargo build -p muster)"]
async fn namespace_deletion_empties_and_removes_it() {
    let c = Cluster::start().await;
    let ns_api: Api<Namespace> = Api::all(c.client.clone());
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some("doomed".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    ns_api.create(&Default::default(), &ns).await.unwrap();
    let f = c.write("deploy.yaml", &deploy_nginx());
    c.kubectl(&["apply", "-n", "doomed", "-f", f.to_str().unwrap()]);
    eventually(10, "pods in doomed", || async {
        let n = live_pods(&c, "doomed", "app=nginx").await.len();
        if n == 3 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "doomed");
    for i in 0..20 {
        let cm = ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("cm-{i}")),
                ..Default::default()
            },
            ..Default::default()
        };
        cms.create(&Default::default(), &cm).await.unwrap();
    }
    ns_api
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    eventually(30, "namespace gone", || async {
        match ns_api.get_opt("doomed").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(ns) => Err(format!("{:?}", ns.status)),
        }
    })
    .await;
    // The 20 ConfigMaps went in one DELETE of the collection, not one by one.
    let metrics = c.kubectl(&["get", "--raw", "/metrics"]);
    let requests = |verb: &str| {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with(&format!(
                    "apiserver_request_total{{verb=\"{verb}\",resource=\"configmaps\""
                ))
            })
            .count()
    };
    assert!(requests("deletecollection") > 0, "{metrics}");
    assert_eq!(requests("delete"), 0, "{metrics}");
}

async fn add_node(c: &Cluster, name: &str, ready: bool) {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Patch, PatchParams};
    let api: Api<Node> = Api::all(c.client.clone());
    let node = Node {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            labels: Some([("kubernetes.io/hostname".to_string(), name.to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&Default::default(), &node).await.unwrap();
    let status = serde_json::json!({"status": {"conditions": [
        {"type": "Ready", "status": if ready { "True" } else { "False" }, "reason": "KubeletReady"}
    ]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the muster binary (cargo build -p muster)"]
async fn scheduler_spreads_over_ready_nodes_and_reports_failures() {
    let c = Cluster::start().await;
    add_node(&c, "node-b", false).await;
    let f = c.write(
        "rs.yaml",
        &workload("ReplicaSet", "small", 4, "small", "x", ""),
    );
    c.kubectl(&["apply", "-f", f.to_str().unwrap()]);
    eventually(10, "FailedScheduling", || async {
        let pods = live_pods(&c, "default", "app=small").await;
        let msgs: Vec<String> = pods
            .iter()
            .filter_map(|p| {
                let conds = p.status.as_ref()?.conditions.as_ref()?;
                conds.iter().find(|c| c.type_ == "PodScheduled")?.message.clone()
            })
            .collect();
        let want = "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }.";
        if msgs.len() == 4 && msgs.iter().all(|m| m == want) { Ok(()) } else { Err(format!("{msgs:?}")) }
    })
    .await;
    // A node change that matters (a label) retries the pods; each failed attempt is an
    // event, and the repeats count on one event per pod.
    c.kubectl(&["label", "node", "node-b", "retry=1"]);
    eventually(10, "counted FailedScheduling", || async {
        let counts = c.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "reason=FailedScheduling",
            "-o",
            r#"jsonpath={range .items[*]}{.count} {end}"#,
        ]);
        let counts: Vec<i64> = counts
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        if counts.len() == 4 && counts.iter().all(|n| *n >= 2) {
            Ok(())
        } else {
            Err(format!("{counts:?}"))
        }
    })
    .await;
    let pod = &live_pods(&c, "default", "app=small").await[0];
    let describe = c.kubectl(&["describe", "pod", pod.metadata.name.as_deref().unwrap()]);
    let line = describe
        .lines()
        .find(|l| l.contains("FailedScheduling"))
        .unwrap_or_default();
    assert!(
        line.contains(" (x") && line.contains(" over "),
        "{describe}"
    );
    // Two Ready nodes appear: the pending pods are retried and bound to them. Some may be
    // bound before the second node is Ready, so the spread is checked on 4 more pods: each
    // goes to the least loaded node, which always ends at 4 and 4.
    add_node(&c, "node-a", true).await;
    add_node(&c, "node-c", true).await;
    let bound_nodes = || async {
        let pods = live_pods(&c, "default", "app=small").await;
        let mut nodes: Vec<String> = pods
            .iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        nodes.sort();
        nodes
    };
    eventually(10, "bound", || async {
        let nodes = bound_nodes().await;
        if nodes.len() == 4 && !nodes.iter().any(|n| n == "node-b") {
            Ok(())
        } else {
            Err(format!("{nodes:?}"))
        }
    })
    .await;
    c.kubectl(&["scale", "rs/small", "--replicas=8"]);
    eventually(10, "spread", || async {
        let nodes = bound_nodes().await;
        let on = |n: &str| nodes.iter().filter(|x| x.as_str() == n).count();
        if nodes.len() == 8 && on("node-a") == 4 && on("node-c") == 4 {
            Ok(())
        } else {
            Err(format!("{nodes:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the muster binary (cargo build -p muster)"]
async fn orphan_and_foreground_deletion() {
    let c = Cluster::start().await;
    let f = c.write(
        "rs.yaml",
        &workload("ReplicaSet", "small", 4, "small", "x", ""),
    );
    c.kubectl(&["apply", "-f", f.to_str().unwrap()]);
    eventually(10, "pods", || async {
        let n = live_pods(&c, "default", "app=small").await.len();
        if n == 4 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    // Orphan: the ReplicaSet goes, its pods stay and lose their owner.
    c.kubectl(&["delete", "rs", "small", "--cascade=orphan"]);
    eventually(20, "orphaned", || async {
        match owned_pods(&c, "app=small").await {
            (4, 0) => Ok(()),
            (n, owned) => Err(format!("{n} pods, {owned} owned")),
        }
    })
    .await;
    // A new ReplicaSet adopts them; foreground deletion removes pods before the set.
    c.kubectl(&["apply", "-f", f.to_str().unwrap()]);
    eventually(20, "adopted", || async {
        match owned_pods(&c, "app=small").await {
            (4, 4) => Ok(()),
            (n, owned) => Err(format!("{n} pods, {owned} owned")),
        }
    })
    .await;
    c.kubectl(&["delete", "rs", "small", "--cascade=foreground"]);
    let rs_api: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    eventually(20, "all gone", || async {
        let rs = rs_api.get_opt("small").await.map_err(|e| e.to_string())?;
        let pods = live_pods(&c, "default", "app=small").await.len();
        if rs.is_none() && pods == 0 {
            Ok(())
        } else {
            Err(format!(
                "rs {:?}, {pods} pods",
                rs.map(|r| r.metadata.finalizers)
            ))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the muster binary (cargo build -p muster)"]
async fn only_the_lease_holder_acts_and_a_standby_takes_over() {
    use muster_controllers::{ControllersConfig, leader::LeaderElection};
    let c = Cluster::start_api_only().await;
    let le = LeaderElection {
        lease_duration: Duration::from_secs(3),
        renew_interval: Duration::from_millis(300),
        ..Default::default()
    };
    let config = |id: &str| ControllersConfig {
        identity: id.into(),
        leader_election: Some(le.clone()),
        ..Default::default()
    };
    let (tx_a, mut rx_a) = tokio::sync::watch::channel(false);
    let a = tokio::spawn(muster_controllers::run(c.client.clone(), config("a"), tx_a));
    tokio::time::timeout(Duration::from_secs(20), rx_a.wait_for(|r| *r))
        .await
        .unwrap()
        .unwrap();
    let (tx_b, mut rx_b) = tokio::sync::watch::channel(false);
    let b = tokio::spawn(muster_controllers::run(c.client.clone(), config("b"), tx_b));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !*rx_b.borrow(),
        "the standby must not act while the leader renews"
    );
    a.abort();
    let t = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(20), rx_b.wait_for(|r| *r))
        .await
        .unwrap()
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "took over before the lease expired"
    );
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(c.client.clone(), "kube-system");
    let lease = leases.get("muster-controllers").await.unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
    b.abort();
}

/// ReplicaSets report pod creation failures as Kubernetes does: a `ReplicaFailure`
/// condition (FailedCreate, with the API's message) while they last, removed once pods can
/// be created again; a Deployment shows its ReplicaSet's condition as its own. The failure is made by marking the namespace Terminating in its status
/// (the API then refuses new content there, events included) and undone by marking it
/// Active again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the muster binary (cargo build -p muster)"]
async fn replica_failure_condition_comes_and_goes() {
    let c = Cluster::start().await;
    c.kubectl(&["create", "namespace", "frozen"]);
    let rs = workload("ReplicaSet", "small", 4, "small", "x", "");
    let deploy = workload("Deployment", "dep", 1, "dep", "x", "");
    let f = c.write("both.yaml", &format!("{rs}---\n{deploy}"));
    c.kubectl(&["apply", "-n", "frozen", "-f", f.to_str().unwrap()]);
    eventually(10, "5 pods", || async {
        let n = live_pods(&c, "frozen", "app=small").await.len()
            + live_pods(&c, "frozen", "app=dep").await.len();
        if n == 5 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    let phase = |p: &str| {
        c.kubectl(&[
            "patch",
            "namespace",
            "frozen",
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!(r#"{{"status":{{"phase":"{p}"}}}}"#),
        ]);
    };
    phase("Terminating");
    c.kubectl(&["scale", "-n", "frozen", "rs/small", "--replicas=6"]);
    c.kubectl(&["scale", "-n", "frozen", "deployment/dep", "--replicas=2"]);
    // The ReplicaFailure condition of `what` as "status/reason: message", or "".
    let failure = |what: &str| {
        c.kubectl(&[
            "get",
            "-n",
            "frozen",
            what,
            "-o",
            r#"jsonpath={range .status.conditions[?(@.type=="ReplicaFailure")]}{.status}/{.reason}: {.message}{end}"#,
        ])
    };
    for what in ["rs/small", "deployment/dep"] {
        let failing = eventually(10, "ReplicaFailure", || async {
            let got = failure(what);
            if got.starts_with("True/FailedCreate: ") {
                Ok(got)
            } else {
                Err(got)
            }
        })
        .await;
        assert!(
            failing.contains("is forbidden: unable to create new content in namespace frozen because it is being terminated"),
            "{what}: {failing}"
        );
    }
    let describe = c.kubectl(&["describe", "-n", "frozen", "rs/small"]);
    assert!(
        describe.contains("ReplicaFailure   True    FailedCreate"),
        "{describe}"
    );

    phase("Active");
    eventually(30, "recovered", || async {
        let n = live_pods(&c, "frozen", "app=small").await.len();
        let m = live_pods(&c, "frozen", "app=dep").await.len();
        let left = format!("{}{}", failure("rs/small"), failure("deployment/dep"));
        if n == 6 && m == 2 && left.is_empty() {
            Ok(())
        } else {
            Err(format!("{n} + {m} pods, {left}"))
        }
    })
    .await;
}

/// Events are aggregated as client-go's recorder does: 15 "Created pod" events of one
/// ReplicaSet are 9 events plus one "(combined from similar events)" event counted 6 times,
/// which `kubectl describe` shows as "(x6 over ...)".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the muster binary (cargo build -p muster)"]
async fn similar_events_are_combined_and_counted() {
    let c = Cluster::start().await;
    let f = c.write(
        "many.yaml",
        &workload("ReplicaSet", "many", 15, "many", "x", ""),
    );
    c.kubectl(&["apply", "-f", f.to_str().unwrap()]);
    let describe = eventually(20, "combined event", || async {
        let out = c.kubectl(&["describe", "rs/many"]);
        let combined: Vec<&str> = out
            .lines()
            .filter(|l| l.contains("(combined from similar events): Created pod: many-"))
            .collect();
        if combined.len() == 1 && combined[0].contains("(x6 over ") {
            Ok(out)
        } else {
            Err(out)
        }
    })
    .await;
    let created = describe
        .lines()
        .filter(|l| l.contains("SuccessfulCreate"))
        .count();
    assert_eq!(
        created, 10,
        "9 single events and the combined one: {describe}"
    );
    let counts = c.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=SuccessfulCreate,involvedObject.name=many",
        "-o",
        r#"jsonpath={range .items[*]}{.count} {end}"#,
    ]);
    let mut counts: Vec<i64> = counts
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    counts.sort();
    assert_eq!(counts, [1, 1, 1, 1, 1, 1, 1, 1, 1, 6]);
}

fn controller_of_rs(c: &Cluster, name: &str) -> String {
    c.kubectl(&[
        "get",
        "rs",
        name,
        "-o",
        r#"jsonpath={range .metadata.ownerReferences[?(@.controller==true)]}{.kind}/{.name}{end}"#,
    ])
}

/// A Deployment adopts an orphan ReplicaSet its selector matches (with the same template it
/// becomes its current ReplicaSet: no new one, no new pods) and releases it when its labels
/// stop matching (then it makes its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the muster binary (cargo build -p muster)"]
async fn deployment_adopts_and_releases_replicasets() {
    let c = Cluster::start().await;
    let kubelet = fake_kubelet(c.client.clone(), "default");
    let f = c.write(
        "orphan.yaml",
        &workload("ReplicaSet", "orphan", 3, "nginx", "nginx:1", ""),
    );
    c.kubectl(&["apply", "-f", f.to_str().unwrap()]);
    eventually(10, "orphan's pods", || async {
        let n = live_pods(&c, "default", "app=nginx").await.len();
        if n == 3 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    let f = c.write("deploy.yaml", &deploy_nginx());
    c.kubectl(&["apply", "-f", f.to_str().unwrap()]);
    eventually(10, "adopted", || async {
        let owner = controller_of_rs(&c, "orphan");
        if owner == "Deployment/nginx" {
            Ok(())
        } else {
            Err(owner)
        }
    })
    .await;
    rollout_status(&c, "deployment/nginx");
    let names = c.kubectl(&["get", "rs", "-o", "name"]);
    assert_eq!(
        names.trim(),
        "replicaset.apps/orphan",
        "no second ReplicaSet"
    );
    assert_eq!(live_pods(&c, "default", "app=nginx").await.len(), 3);

    // Relabelled out of the selector: released, and the Deployment makes its own.
    c.kubectl(&["label", "rs", "orphan", "app=elsewhere", "--overwrite"]);
    eventually(10, "released", || async {
        let owner = controller_of_rs(&c, "orphan");
        if owner.is_empty() { Ok(()) } else { Err(owner) }
    })
    .await;
    rollout_status(&c, "deployment/nginx");
    let rs_list = c.kubectl(&["get", "rs", "-o", "name"]);
    let own: Vec<&str> = rs_list
        .lines()
        .filter(|l| l.starts_with("replicaset.apps/nginx-"))
        .collect();
    assert_eq!(own.len(), 1, "{rs_list}");
    assert_eq!(
        controller_of_rs(&c, own[0].trim_start_matches("replicaset.apps/")),
        "Deployment/nginx"
    );
    kubelet.abort();
}

/// `kubectl scale` in the middle of a rollout spreads the change over the old and new
/// ReplicaSets in proportion to their sizes, as Kubernetes does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the muster binary (cargo build -p muster)"]
async fn scaling_mid_rollout_is_proportional() {
    let c = Cluster::start().await;
    let kubelet = fake_kubelet(c.client.clone(), "default");
    let f = c.write(
        "big.yaml",
        &workload(
            "Deployment",
            "big",
            10,
            "big",
            "app:1",
            "  strategy:\n    rollingUpdate:\n      maxSurge: 3\n      maxUnavailable: 2\n",
        ),
    );
    c.kubectl(&["apply", "-f", f.to_str().unwrap()]);
    rollout_status(&c, "deployment/big");
    // New pods never become ready: the rollout stops at old 8 (10 - maxUnavailable) and
    // new 5 (10 + maxSurge - 8).
    kubelet.abort();
    c.kubectl(&["set", "image", "deployment/big", "c=app:2"]);
    let sizes = || {
        c.kubectl(&[
            "get",
            "rs",
            "--sort-by=.metadata.annotations.deployment\\.kubernetes\\.io/revision",
            "-o",
            r#"jsonpath={range .items[*]}{.spec.replicas} {end}"#,
        ])
        .trim()
        .to_string()
    };
    eventually(20, "stuck mid-rollout", || async {
        let got = sizes();
        if got == "8 5" { Ok(()) } else { Err(got) }
    })
    .await;
    c.kubectl(&["scale", "deployment/big", "--replicas=20"]);
    // 10 more (20 + 3 - 13), by proportion: 8 → 14 (8·23/13 rounded) and 5 → 9 (5·23/13).
    eventually(20, "proportional", || async {
        let got = sizes();
        if got == "14 9" { Ok(()) } else { Err(got) }
    })
    .await;
    let annotations = c.kubectl(&[
        "get",
        "rs",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.annotations.deployment\.kubernetes\.io/desired-replicas}/{.metadata.annotations.deployment\.kubernetes\.io/max-replicas} {end}"#,
    ]);
    assert_eq!(annotations.trim(), "20/23 20/23");
}
