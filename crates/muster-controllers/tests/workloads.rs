//! Deployments, StatefulSets, garbage collection and namespace deletion against a real
//! `muster apiserver`, with a fake node that makes every pod Ready.
//! `cargo build -p muster && cargo test -p muster-controllers --test workloads -- --ignored`

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams};

const DEPLOY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx
spec:
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: nginx:1
        ports:
        - containerPort: 80
"#;

const STS: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: nginx
  updateStrategy:
    type: RollingUpdate
  replicas: 3
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: nginx
        image: nginx:1
"#;

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
    let f = c.write("deploy.yaml", DEPLOY);
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

    c.kubectl(&["set", "image", "deployment/nginx", "nginx=nginx:2"]);
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
    let f = c.write("sts.yaml", STS);
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
    let f = c.write("deploy.yaml", DEPLOY);
    c.kubectl(&["apply", "-n", "doomed", "-f", f.to_str().unwrap()]);
    eventually(10, "pods in doomed", || async {
        let n = live_pods(&c, "doomed", "app=nginx").await.len();
        if n == 3 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
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
}

const RS_SMALL: &str = r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: small
spec:
  replicas: 4
  selector:
    matchLabels:
      app: small
  template:
    metadata:
      labels:
        app: small
    spec:
      containers:
      - name: c
        image: x
"#;

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
    let f = c.write("rs.yaml", RS_SMALL);
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
    // Two Ready nodes appear: the pending pods are retried and spread evenly.
    add_node(&c, "node-a", true).await;
    add_node(&c, "node-c", true).await;
    eventually(10, "bound", || async {
        let pods = live_pods(&c, "default", "app=small").await;
        let mut nodes: Vec<String> = pods
            .iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        nodes.sort();
        if nodes == ["node-a", "node-a", "node-c", "node-c"] {
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
    let f = c.write("rs.yaml", RS_SMALL);
    c.kubectl(&["apply", "-f", f.to_str().unwrap()]);
    eventually(10, "pods", || async {
        let n = live_pods(&c, "default", "app=small").await.len();
        if n == 4 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    // Orphan: the ReplicaSet goes, its pods stay and lose their owner.
    c.kubectl(&["delete", "rs", "small", "--cascade=orphan"]);
    eventually(20, "orphaned", || async {
        let pods = live_pods(&c, "default", "app=small").await;
        let owned = pods
            .iter()
            .filter(|p| {
                p.metadata
                    .owner_references
                    .as_ref()
                    .is_some_and(|r| !r.is_empty())
            })
            .count();
        if pods.len() == 4 && owned == 0 {
            Ok(())
        } else {
            Err(format!("{} pods, {owned} owned", pods.len()))
        }
    })
    .await;
    // A new ReplicaSet adopts them; foreground deletion removes pods before the set.
    c.kubectl(&["apply", "-f", f.to_str().unwrap()]);
    eventually(20, "adopted", || async {
        let pods = live_pods(&c, "default", "app=small").await;
        let owned = pods
            .iter()
            .filter(|p| {
                p.metadata
                    .owner_references
                    .as_ref()
                    .is_some_and(|r| !r.is_empty())
            })
            .count();
        if pods.len() == 4 && owned == 4 {
            Ok(())
        } else {
            Err(format!("{} pods, {owned} owned", pods.len()))
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
