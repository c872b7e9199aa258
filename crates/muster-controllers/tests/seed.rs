//! The tutorial seed against a real `muster apiserver`, driven with the real kubectl; the
//! test plays the node by writing pod status. Run with
//! `cargo build -p muster && cargo test -p muster-controllers --test seed -- --ignored`.

mod common;

use common::*;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Endpoints, Event, Pod};
use kube::api::{Api, ListParams};

const RS: &str = r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: terra10-rs
spec:
  replicas: 3
  selector:
    matchLabels:
      app: terra10
  template:
    metadata:
      labels:
        app: terra10
    spec:
      containers:
      - name: terra10
        image: lucasjellema/terra10:0.1
        ports:
        - containerPort: 8080
"#;

const SVC: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: terra10-headless
spec:
  clusterIP: None
  ports:
  - port: 80
    targetPort: 8080
  selector:
    app: terra10
"#;

fn columns(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the muster binary (cargo build -p muster)"]
async fn headless_service_point_to_multipoint() {
    let c = Cluster::start().await;
    let rs = c.write("terra10-replicaset.yaml", RS);
    let out = c.kubectl(&["create", "-f", rs.to_str().unwrap()]);
    assert_eq!(out.trim(), "replicaset.apps/terra10-rs created");

    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let names: Vec<String> = eventually(10, "three pods", || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=terra10"))
                .await
                .map_err(|e| e.to_string())?;
            let names: Vec<String> = list
                .items
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            if names.len() == 3 {
                Ok(names)
            } else {
                Err(format!("{names:?}"))
            }
        }
    })
    .await;
    for n in &names {
        let suffix = n
            .strip_prefix("terra10-rs-")
            .expect("named after the ReplicaSet");
        assert_eq!(suffix.len(), 5, "{n}");
        assert!(
            suffix
                .chars()
                .all(|ch| "bcdfghjklmnpqrstvwxz2456789".contains(ch)),
            "{n}"
        );
    }
    let mut sorted = names.clone();
    sorted.sort();
    let ips = ["10.244.0.5", "10.244.0.6", "10.244.0.7"];
    for (i, n) in sorted.iter().enumerate() {
        set_pod_status(&c.client, "default", n, ips[i], i < 2).await;
    }

    let rs_api: Api<ReplicaSet> = Api::namespaced(c.client.clone(), "default");
    eventually(10, "rs status fields", || async {
        let rs = rs_api.get("terra10-rs").await.map_err(|e| e.to_string())?;
        let st = rs.status.clone().unwrap_or_default();
        let got = (
            st.replicas,
            st.ready_replicas,
            st.available_replicas,
            st.fully_labeled_replicas,
            st.observed_generation,
        );
        if got == (3, Some(2), Some(2), Some(3), rs.metadata.generation) {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
    let svc = c.write("terra10-service-headless.yaml", SVC);
    assert_eq!(
        c.kubectl(&["create", "-f", svc.to_str().unwrap()]).trim(),
        "service/terra10-headless created"
    );
    eventually(10, "describe service lists the ready pods", || async {
        let out = c.kubectl(&["describe", "service", "terra10-headless"]);
        let line = out
            .lines()
            .find(|l| l.starts_with("Endpoints:"))
            .unwrap_or("")
            .to_string();
        if columns(&line) == ["Endpoints:", "10.244.0.5:8080,10.244.0.6:8080"] {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await;
    eventually(10, "Endpoints list the ready pods", || async {
        let got = ready_endpoints(&c).await;
        if got == "10.244.0.5:8080,10.244.0.6:8080" {
            Ok(())
        } else {
            Err(got)
        }
    })
    .await;

    // The third pod becomes ready; a ready one is deleted and replaced.
    set_pod_status(&c.client, "default", &sorted[2], ips[2], true).await;
    c.kubectl(&["delete", "pod", &sorted[0], "--wait=false"]);
    eventually(10, "endpoints follow readiness and deletion", || async {
        let got = ready_endpoints(&c).await;
        if got == "10.244.0.6:8080,10.244.0.7:8080" {
            Ok(())
        } else {
            Err(got)
        }
    })
    .await;
    eventually(10, "replacement pod", || async {
        let list = pods
            .list(&ListParams::default().labels("app=terra10"))
            .await
            .map_err(|e| e.to_string())?;
        let live = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count();
        if live == 3 {
            Ok(())
        } else {
            Err(format!("{live} pods"))
        }
    })
    .await;
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    let reasons: Vec<(String, String)> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| {
            (
                e.involved_object.name.unwrap_or_default(),
                e.reason.unwrap_or_default(),
            )
        })
        .collect();
    for want in ["SuccessfulCreate", "FailedScheduling"] {
        assert!(
            reasons.iter().any(|(_, r)| r == want),
            "no {want} event: {reasons:?}"
        );
    }
    assert!(reasons.contains(&("terra10-rs".to_string(), "SuccessfulCreate".to_string())));
    // The tables kubectl prints (server-side columns).
    let out = c.kubectl(&["get", "service", "terra10-headless"]);
    let row = columns(out.lines().nth(1).unwrap_or(""));
    assert_eq!(
        row.get(..5),
        Some(&["terra10-headless", "ClusterIP", "None", "<none>", "80/TCP"].map(String::from)[..]),
        "{out}"
    );

    // kubectl get rs: DESIRED CURRENT READY
    eventually(10, "rs status", || async {
        let out = c.kubectl(&["get", "rs"]);
        let lines: Vec<&str> = out.lines().collect();
        let head = columns(lines[0]);
        let row = columns(lines.get(1).copied().unwrap_or(""));
        if head.get(..4) == Some(&["NAME", "DESIRED", "CURRENT", "READY"].map(String::from)[..])
            && row.get(..4) == Some(&["terra10-rs", "3", "3", "2"].map(String::from)[..])
        {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await;
    let out = c.kubectl(&["get", "endpoints", "terra10-headless"]);
    let row = columns(out.lines().nth(1).unwrap_or(""));
    assert_eq!(
        row.get(1).map(String::as_str),
        Some("10.244.0.6:8080,10.244.0.7:8080"),
        "{out}"
    );
}

/// `ip:port` of the ready addresses of the Endpoints object, as `kubectl get endpoints`
/// prints them.
async fn ready_endpoints(c: &Cluster) -> String {
    let api: Api<Endpoints> = Api::namespaced(c.client.clone(), "default");
    let Ok(e) = api.get("terra10-headless").await else {
        return "<missing>".into();
    };
    let mut out = Vec::new();
    for s in e.subsets.iter().flatten() {
        for a in s.addresses.iter().flatten() {
            for p in s.ports.iter().flatten() {
                out.push(format!("{}:{}", a.ip, p.port));
            }
        }
    }
    out.join(",")
}
