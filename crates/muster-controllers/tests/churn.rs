//! Convergence under churn against a real `muster apiserver`: pods flip readiness and are
//! deleted in random order, the controllers restart midway, and the slices end up listing
//! exactly the pods that exist, ready exactly when the pod is.
//! `cargo build -p muster && cargo test -p muster-controllers --test churn -- --ignored`

mod common;

use std::collections::BTreeMap;

use common::*;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use rand::{Rng, SeedableRng, rngs::StdRng};

const PODS: usize = 1000;

fn ip(i: usize) -> String {
    format!("10.244.{}.{}", i / 250, i % 250 + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the muster binary (cargo build -p muster)"]
async fn slices_equal_the_ready_pods_after_churn_and_a_restart() {
    let mut c = Cluster::start().await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let services: Api<Service> = Api::namespaced(c.client.clone(), "default");
    let svc = Service {
        metadata: ObjectMeta {
            name: Some("churn".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some([("app".to_string(), "churn".to_string())].into()),
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    services.create(&PostParams::default(), &svc).await.unwrap();
    let mut rng = StdRng::seed_from_u64(42);
    // name → (ip, ready) of the pods that should exist.
    let mut want: BTreeMap<String, (String, bool)> = BTreeMap::new();
    for i in 0..PODS {
        let name = format!("churn-{i}");
        let p = Pod {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("app".to_string(), "churn".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("x".into()),
                    ..Default::default()
                }],
                node_name: Some("node-a".into()),
                ..Default::default()
            }),
            status: None,
        };
        pods.create(&PostParams::default(), &p).await.unwrap();
        let ready = rng.random_bool(0.5);
        set_pod_status(&c.client, "default", &name, &ip(i), ready).await;
        want.insert(name, (ip(i), ready));
    }
    for round in 0..6 {
        for _ in 0..100 {
            let names: Vec<String> = want.keys().cloned().collect();
            let name = names[rng.random_range(0..names.len())].clone();
            if rng.random_bool(0.1) {
                pods.delete(&name, &DeleteParams::default().grace_period(0))
                    .await
                    .unwrap();
                want.remove(&name);
            } else {
                let (ip, ready) = want.get(&name).cloned().unwrap();
                set_pod_status(&c.client, "default", &name, &ip, !ready).await;
                want.insert(name, (ip, !ready));
            }
        }
        if round == 2 {
            c.start_controllers(muster_controllers::ControllersConfig::default())
                .await;
        }
    }
    let expected: BTreeMap<String, bool> = want.values().cloned().collect();
    let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), "default");
    eventually(30, "slices equal the pods", || async {
        let list = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=churn"))
            .await
            .map_err(|e| e.to_string())?;
        let mut have: BTreeMap<String, bool> = BTreeMap::new();
        for s in &list.items {
            if s.endpoints.len() > 100 {
                return Err(format!("slice with {} endpoints", s.endpoints.len()));
            }
            for e in &s.endpoints {
                let ready = e.conditions.as_ref().and_then(|c| c.ready) == Some(true);
                if have.insert(e.addresses[0].clone(), ready).is_some() {
                    return Err(format!("{} listed twice", e.addresses[0]));
                }
            }
        }
        if have == expected {
            Ok(())
        } else {
            Err(format!(
                "{} endpoints vs {} pods",
                have.len(),
                expected.len()
            ))
        }
    })
    .await;
}
