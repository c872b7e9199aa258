use super::*;
use crate::testutil::ts;
use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{Container, PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

fn sts(replicas: i32, parallel: bool, image: &str) -> StatefulSet {
    let labels: util::Labels = [("app".to_string(), "db".to_string())].into();
    StatefulSet {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("uid-sts".into()),
            generation: Some(1),
            ..Default::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some("nginx".into()),
            pod_management_policy: Some(if parallel { "Parallel" } else { "OrderedReady" }.into()),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(0),
                    ..Default::default()
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "c".into(),
                        image: Some(image.into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

struct Sim {
    sts: StatefulSet,
    pods: Vec<Pod>,
    revisions: Vec<ControllerRevision>,
}

impl Sim {
    fn new(sts: StatefulSet) -> Sim {
        Sim {
            sts,
            pods: Vec::new(),
            revisions: Vec::new(),
        }
    }

    fn step(&mut self) -> Plan {
        let pods: Vec<&Pod> = self.pods.iter().collect();
        let revs: Vec<&ControllerRevision> = self.revisions.iter().collect();
        let plan = reconcile(&Observed {
            sts: &self.sts,
            pods: &pods,
            revisions: &revs,
            now: ts(100).0,
        });
        if let Some(r) = &plan.create_revision {
            self.revisions.push(r.clone());
        }
        self.pods
            .retain(|p| !plan.delete_pods.contains(p.metadata.name.as_ref().unwrap()));
        self.pods.extend(plan.create_pods.iter().cloned());
        self.revisions.retain(|r| {
            !plan
                .delete_revisions
                .contains(r.metadata.name.as_ref().unwrap())
        });
        if let Some(s) = &plan.status {
            self.sts.status = Some(s.clone());
        }
        plan
    }

    /// The node: every pod runs and is ready.
    fn kubelet(&mut self) {
        for p in &mut self.pods {
            p.status = Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(ts(0)),
                    ..Default::default()
                }]),
                ..Default::default()
            });
        }
    }

    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        v.sort();
        v
    }

    fn images(&self) -> Vec<String> {
        let mut pods: Vec<&Pod> = self.pods.iter().collect();
        pods.sort_by_key(|p| p.metadata.name.clone());
        pods.iter()
            .map(|p| {
                p.spec.as_ref().unwrap().containers[0]
                    .image
                    .clone()
                    .unwrap()
            })
            .collect()
    }

    fn settle(&mut self) {
        for _ in 0..50 {
            let p = self.step();
            self.kubelet();
            if p.create_pods.is_empty()
                && p.delete_pods.is_empty()
                && p.create_revision.is_none()
                && p.status.is_none()
            {
                return;
            }
        }
        panic!("no convergence: {:?}", self.names());
    }
}

#[test]
fn ordinals_parse_only_our_names() {
    let cases = [
        ("web-0", Some(0)),
        ("web-12", Some(12)),
        ("web-01", None),
        ("web-", None),
        ("web-x", None),
        ("webby-1", None),
        ("web-1-2", None),
    ];
    for (n, want) in cases {
        assert_eq!(ordinal("web", n), want, "{n}");
    }
}

#[test]
fn ordered_ready_creates_one_at_a_time() {
    let mut s = Sim::new(sts(3, false, "v1"));
    s.step();
    assert_eq!(s.names(), ["web-0"]);
    s.step();
    assert_eq!(s.names(), ["web-0"], "waits for web-0 to be ready");
    s.kubelet();
    s.step();
    assert_eq!(s.names(), ["web-0", "web-1"]);
    s.settle();
    assert_eq!(s.names(), ["web-0", "web-1", "web-2"]);
    let p = s
        .pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("web-1"))
        .unwrap();
    let spec = p.spec.as_ref().unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("web-1"));
    assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
    let labels = util::labels_of(&p.metadata);
    assert_eq!(labels[LABEL_POD_NAME], "web-1");
    assert_eq!(labels[LABEL_POD_INDEX], "1");
    assert_eq!(labels["app"], "db");
    assert_eq!(
        &labels[LABEL_REVISION],
        s.revisions[0].metadata.name.as_ref().unwrap()
    );
    let st = s.sts.status.clone().unwrap();
    assert_eq!(
        (
            st.replicas,
            st.ready_replicas,
            st.updated_replicas,
            st.current_replicas
        ),
        (3, Some(3), Some(3), Some(3))
    );
    assert_eq!(st.current_revision, st.update_revision);
}

#[test]
fn parallel_creates_all_at_once_and_scales_down_together() {
    let mut s = Sim::new(sts(3, true, "v1"));
    s.step();
    assert_eq!(s.names(), ["web-0", "web-1", "web-2"]);
    s.kubelet();
    s.sts.spec.as_mut().unwrap().replicas = Some(1);
    s.step();
    assert_eq!(s.names(), ["web-0"]);
}

#[test]
fn ordered_scale_down_goes_from_the_highest_ordinal() {
    let mut s = Sim::new(sts(3, false, "v1"));
    s.settle();
    s.sts.spec.as_mut().unwrap().replicas = Some(1);
    s.step();
    assert_eq!(s.names(), ["web-0", "web-1"]);
    s.step();
    assert_eq!(s.names(), ["web-0"]);
}

#[test]
fn rolling_update_with_partition() {
    let mut s = Sim::new(sts(3, false, "v1"));
    s.settle();
    let first_rev = s.sts.status.as_ref().unwrap().current_revision.clone();
    let spec = s.sts.spec.as_mut().unwrap();
    spec.template.spec.as_mut().unwrap().containers[0].image = Some("v2".into());
    spec.update_strategy
        .as_mut()
        .unwrap()
        .rolling_update
        .as_mut()
        .unwrap()
        .partition = Some(1);
    s.step(); // new revision
    s.step();
    assert_eq!(s.names(), ["web-0", "web-1"], "highest ordinal goes first");
    s.settle();
    assert_eq!(s.images(), ["v1", "v2", "v2"]);
    let st = s.sts.status.clone().unwrap();
    assert_eq!(
        (st.updated_replicas, st.current_replicas),
        (Some(2), Some(1))
    );
    assert_eq!(st.current_revision, first_rev, "partitioned: current stays");
    assert_ne!(st.update_revision, first_rev);
    // Partition 0 finishes the rollout; the update revision becomes current.
    s.sts
        .spec
        .as_mut()
        .unwrap()
        .update_strategy
        .as_mut()
        .unwrap()
        .rolling_update
        .as_mut()
        .unwrap()
        .partition = Some(0);
    s.settle();
    assert_eq!(s.images(), ["v2", "v2", "v2"]);
    let st = s.sts.status.clone().unwrap();
    assert_eq!(st.current_revision, st.update_revision);
    assert_eq!(st.current_replicas, Some(3));
}

#[test]
fn a_recreated_pod_below_the_partition_keeps_the_current_revision() {
    let mut s = Sim::new(sts(2, false, "v1"));
    s.settle();
    let spec = s.sts.spec.as_mut().unwrap();
    spec.template.spec.as_mut().unwrap().containers[0].image = Some("v2".into());
    spec.update_strategy
        .as_mut()
        .unwrap()
        .rolling_update
        .as_mut()
        .unwrap()
        .partition = Some(2);
    s.settle();
    assert_eq!(s.images(), ["v1", "v1"]);
    s.pods
        .retain(|p| p.metadata.name.as_deref() != Some("web-0"));
    s.settle();
    assert_eq!(s.images(), ["v1", "v1"]);
}
