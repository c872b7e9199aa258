//! What exists in every cluster from the start (DESIGN.md): the system namespaces and the
//! `kubernetes` and `kube-dns` Services. Idempotent: existing objects are left as they are.

use muster_api::registry;
use serde_json::{Value, json};

use crate::handler::{State, WriteOptions, create_object};

const NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

fn services() -> Vec<(&'static str, Value)> {
    vec![
        (
            "default",
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "namespace": "default",
                    "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                    "ports": [{"name": "https", "protocol": "TCP", "port": 443, "targetPort": 6443}],
                    "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                    "internalTrafficPolicy": "Cluster"}}),
        ),
        (
            "kube-system",
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kube-dns", "namespace": "kube-system",
                    "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
                        "kubernetes.io/name": "CoreDNS"}},
                "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                    "selector": {"k8s-app": "kube-dns"},
                    "ports": [
                        {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 53},
                        {"name": "dns-tcp", "protocol": "TCP", "port": 53, "targetPort": 53},
                        {"name": "metrics", "protocol": "TCP", "port": 9153, "targetPort": 9153}],
                    "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                    "internalTrafficPolicy": "Cluster"}}),
        ),
    ]
}

pub async fn run(state: &State) -> anyhow::Result<()> {
    let ns_rt = registry::find("", "v1", "namespaces").expect("namespaces");
    let svc_rt = registry::find("", "v1", "services").expect("services");
    let mut warnings = Vec::new();
    for ns in NAMESPACES {
        if state.store.get(&ns_rt.key(None, ns)).await?.is_some() {
            continue;
        }
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        match create_object(
            state,
            ns_rt,
            None,
            obj,
            &WriteOptions::internal(),
            true,
            &mut warnings,
        )
        .await
        {
            Ok(_) => {}
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => anyhow::bail!("creating namespace {ns}: {e}"),
        }
    }
    for (ns, svc) in services() {
        let name = svc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if state
            .store
            .get(&svc_rt.key(Some(ns), &name))
            .await?
            .is_some()
        {
            continue;
        }
        match create_object(
            state,
            svc_rt,
            Some(ns),
            svc,
            &WriteOptions::internal(),
            true,
            &mut warnings,
        )
        .await
        {
            Ok(_) => {}
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => anyhow::bail!("creating service {ns}/{name}: {e}"),
        }
    }
    Ok(())
}
