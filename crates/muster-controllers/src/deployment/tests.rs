use super::*;
use crate::testutil::ts;
use k8s_openapi::api::apps::v1::{
    DeploymentSpec, DeploymentStrategy, ReplicaSetStatus, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

fn deployment(
    replicas: i32,
    image: &str,
    strategy: &str,
    surge: &str,
    unavailable: &str,
) -> Deployment {
    let labels: util::Labels = [("app".to_string(), "nginx".to_string())].into();
    Deployment {
        metadata: ObjectMeta {
            name: Some("nginx".into()),
            namespace: Some("default".into()),
            uid: Some("uid-d".into()),
            generation: Some(1),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some(strategy.into()),
                rolling_update: (strategy == "RollingUpdate").then(|| RollingUpdateDeployment {
                    max_surge: Some(int_or_pct(surge)),
                    max_unavailable: Some(int_or_pct(unavailable)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "nginx".into(),
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

fn int_or_pct(s: &str) -> IntOrString {
    match s.parse() {
        Ok(n) => IntOrString::Int(n),
        Err(_) => IntOrString::String(s.into()),
    }
}

#[test]
fn scaled_values_round_like_kubernetes() {
    let cases = [
        (Some(IntOrString::String("25%".into())), 10, true, 3),
        (Some(IntOrString::String("25%".into())), 10, false, 2),
        (Some(IntOrString::Int(2)), 10, true, 2),
        (None, 4, true, 1),
        (None, 1, false, 0),
        (Some(IntOrString::String("bogus".into())), 8, true, 2),
    ];
    for (v, total, up, want) in cases {
        assert_eq!(
            scaled_value(v.as_ref(), total, 25, up),
            want,
            "{v:?} of {total}"
        );
    }
    let d = deployment(1, "a", "RollingUpdate", "0", "0");
    assert_eq!(surge_and_unavailable(&d), (0, 1), "never both zero");
}

/// Plays the ReplicaSet controller and the API server: RS status follows spec, with pods
/// ready at once.
struct Sim {
    d: Deployment,
    rss: Vec<ReplicaSet>,
    now: i64,
    seq: i64,
}

impl Sim {
    fn new(d: Deployment) -> Sim {
        Sim {
            d,
            rss: Vec::new(),
            now: 0,
            seq: 0,
        }
    }

    fn step(&mut self) -> Plan {
        self.now += 1;
        let refs: Vec<&ReplicaSet> = self.rss.iter().collect();
        let plan = reconcile(&Observed {
            deployment: &self.d,
            replicasets: &refs,
            pods: &[],
            now: ts(self.now).0,
        });
        if let Some(mut rs) = plan.create.clone() {
            self.seq += 1;
            rs.metadata.creation_timestamp = Some(ts(self.seq));
            self.rss.push(rs);
        }
        for s in &plan.scale {
            let rs = self
                .rss
                .iter_mut()
                .find(|r| r.metadata.name.as_deref() == Some(s.replicaset.as_str()))
                .unwrap();
            rs.spec.as_mut().unwrap().replicas = Some(s.to);
            rs.metadata
                .annotations
                .get_or_insert_default()
                .extend(s.annotations.clone());
        }
        self.rss
            .retain(|r| !plan.delete.contains(r.metadata.name.as_ref().unwrap()));
        if let Some(st) = &plan.status {
            self.d.status = Some(st.clone());
        }
        plan
    }

    /// The RS controller catches up: every RS has exactly its spec's pods, all available.
    fn settle(&mut self) {
        for rs in &mut self.rss {
            let n = rs.spec.as_ref().unwrap().replicas.unwrap();
            rs.status = Some(ReplicaSetStatus {
                replicas: n,
                ready_replicas: Some(n),
                available_replicas: Some(n),
                ..Default::default()
            });
        }
    }

    fn sizes(&self) -> Vec<(String, i32)> {
        self.rss
            .iter()
            .map(|r| {
                (
                    revision(&r.metadata).to_string(),
                    r.spec.as_ref().unwrap().replicas.unwrap(),
                )
            })
            .collect()
    }

    fn run_to_completion(&mut self, surge: i32, unavailable: i32) {
        let want = replicas(&self.d);
        for _ in 0..100 {
            let plan = self.step();
            let total: i32 = self.rss.iter().map(rs_replicas).sum();
            assert!(total <= want + surge, "surge exceeded: {:?}", self.sizes());
            self.settle();
            let available: i32 = self.rss.iter().map(|r| rs_status(r).2).sum();
            assert!(
                available >= want - unavailable || self.rss.len() == 1,
                "too few available: {:?}",
                self.sizes()
            );
            if plan.create.is_none() && plan.scale.is_empty() && plan.status.is_none() {
                return;
            }
        }
        panic!("no convergence: {:?}", self.sizes());
    }

    fn condition(&self, t: &str) -> (String, String) {
        let c = self
            .d
            .status
            .as_ref()
            .unwrap()
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap();
        (c.status.clone(), c.reason.clone().unwrap())
    }
}

#[test]
fn first_rollout_creates_a_hashed_replicaset() {
    let mut s = Sim::new(deployment(3, "nginx:1", "RollingUpdate", "25%", "25%"));
    s.run_to_completion(1, 0);
    assert_eq!(s.rss.len(), 1);
    let rs = &s.rss[0];
    let hash = pod_template_hash(&s.d);
    assert_eq!(
        rs.metadata.name.as_deref(),
        Some(format!("nginx-{hash}").as_str())
    );
    assert!(hash.chars().all(|c| "456789bcdf".contains(c)), "{hash}");
    let spec = rs.spec.as_ref().unwrap();
    assert_eq!(
        spec.selector.match_labels.as_ref().unwrap()[LABEL_HASH],
        hash
    );
    let tl = spec
        .template
        .as_ref()
        .unwrap()
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(tl[LABEL_HASH], hash);
    assert_eq!(revision(&rs.metadata), 1);
    assert_eq!(
        util::controller_ref(&rs.metadata).unwrap().kind,
        "Deployment"
    );
    let st = s.d.status.clone().unwrap();
    assert_eq!(
        (
            st.replicas,
            st.updated_replicas,
            st.available_replicas,
            st.unavailable_replicas
        ),
        (Some(3), Some(3), Some(3), Some(0))
    );
    assert_eq!(
        s.condition("Available"),
        ("True".into(), "MinimumReplicasAvailable".into())
    );
    assert_eq!(
        s.condition("Progressing"),
        ("True".into(), "NewReplicaSetAvailable".into())
    );
}

#[test]
fn rolling_update_respects_surge_and_unavailability() {
    let cases = [
        (10, "25%", "25%", 3, 2),
        (4, "1", "0", 1, 0),
        (4, "0", "1", 0, 1),
        (1, "25%", "25%", 1, 0),
    ];
    for (n, surge, unavail, s_n, u_n) in cases {
        let mut s = Sim::new(deployment(n, "nginx:1", "RollingUpdate", surge, unavail));
        s.run_to_completion(s_n, u_n);
        s.d.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = Some("nginx:2".into());
        s.d.metadata.generation = Some(2);
        s.run_to_completion(s_n, u_n);
        let sizes = s.sizes();
        assert_eq!(
            sizes,
            vec![("1".into(), 0), ("2".into(), n)],
            "{surge}/{unavail}"
        );
        assert_eq!(s.condition("Progressing").1, "NewReplicaSetAvailable");
        // Roll back to the first template: the old RS becomes new with revision 3.
        s.d.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = Some("nginx:1".into());
        s.run_to_completion(s_n, u_n);
        assert_eq!(s.sizes(), vec![("3".into(), n), ("2".into(), 0)]);
    }
}

#[test]
fn recreate_scales_old_to_zero_before_the_new_one() {
    let mut s = Sim::new(deployment(3, "nginx:1", "Recreate", "", ""));
    s.run_to_completion(0, 3);
    s.d.spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .image = Some("nginx:2".into());
    let p = s.step();
    assert!(p.create.is_none());
    assert_eq!(p.scale.len(), 1);
    assert_eq!((p.scale[0].from, p.scale[0].to), (3, 0));
    s.settle();
    s.run_to_completion(0, 3);
    assert_eq!(s.sizes(), vec![("1".into(), 0), ("2".into(), 3)]);
}

#[test]
fn history_is_limited() {
    let mut d = deployment(1, "v0", "RollingUpdate", "1", "0");
    d.spec.as_mut().unwrap().revision_history_limit = Some(2);
    let mut s = Sim::new(d);
    for v in 1..=5 {
        s.d.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = Some(format!("v{v}"));
        s.run_to_completion(1, 0);
    }
    let revs: Vec<String> = s.sizes().into_iter().map(|(r, _)| r).collect();
    assert_eq!(
        revs,
        vec!["3", "4", "5"],
        "two old revisions and the current one"
    );
}

#[test]
fn scaling_and_pausing() {
    let mut s = Sim::new(deployment(2, "nginx:1", "RollingUpdate", "25%", "25%"));
    s.run_to_completion(1, 0);
    s.d.spec.as_mut().unwrap().replicas = Some(5);
    s.run_to_completion(2, 1);
    assert_eq!(s.sizes(), vec![("1".into(), 5)]);
    s.d.spec.as_mut().unwrap().paused = Some(true);
    s.d.spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .image = Some("nginx:2".into());
    s.run_to_completion(2, 1);
    assert_eq!(s.sizes(), vec![("1".into(), 5)], "paused: no new RS");
    assert_eq!(
        s.condition("Progressing"),
        ("Unknown".into(), "DeploymentPaused".into())
    );
    s.d.spec.as_mut().unwrap().paused = Some(false);
    s.run_to_completion(2, 1);
    assert_eq!(s.sizes(), vec![("1".into(), 0), ("2".into(), 5)]);
}

#[test]
fn progress_deadline() {
    let mut d = deployment(2, "nginx:1", "RollingUpdate", "25%", "25%");
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(30);
    let mut s = Sim::new(d);
    s.step(); // creates the RS; its pods never become ready
    let p = s.step();
    assert_eq!(s.condition("Progressing").1, "ReplicaSetUpdated", "{p:?}");
    assert!(p.requeue_after.is_some());
    s.now += 60;
    s.step();
    assert_eq!(
        s.condition("Progressing"),
        ("False".into(), "ProgressDeadlineExceeded".into())
    );
    assert_eq!(s.condition("Available").0, "False");
}
