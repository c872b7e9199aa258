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

    /// `kubectl set image`.
    fn set_image(&mut self, image: &str) {
        let spec = self
            .d
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap();
        spec.containers[0].image = Some(image.into());
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
        s.set_image("nginx:2");
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
        s.set_image("nginx:1");
        s.run_to_completion(s_n, u_n);
        assert_eq!(s.sizes(), vec![("3".into(), n), ("2".into(), 0)]);
    }
}

#[test]
fn recreate_scales_old_to_zero_before_the_new_one() {
    let mut s = Sim::new(deployment(3, "nginx:1", "Recreate", "", ""));
    s.run_to_completion(0, 3);
    s.set_image("nginx:2");
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
    s.set_image("nginx:2");
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

/// A ReplicaSet of the Deployment `d` with `replicas`, created at `created`, running
/// `image`, sized for a Deployment of `sized_for` replicas (its annotations), all available.
fn owned_rs(
    d: &Deployment,
    name: &str,
    replicas: i32,
    created: i64,
    image: &str,
    sized_for: i32,
) -> ReplicaSet {
    let mut t = d.spec.as_ref().unwrap().template.clone();
    t.spec.as_mut().unwrap().containers[0].image = Some(image.into());
    let (surge, _) = surge_and_unavailable(d);
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            creation_timestamp: Some(ts(created)),
            annotations: Some(
                [
                    (ANN_REVISION.to_string(), created.to_string()),
                    (ANN_DESIRED.to_string(), sized_for.to_string()),
                    (ANN_MAX.to_string(), (sized_for + surge).to_string()),
                ]
                .into(),
            ),
            owner_references: Some(vec![util::owner_ref("apps/v1", "Deployment", &d.metadata)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            selector: d.spec.as_ref().unwrap().selector.clone(),
            template: Some(t),
            min_ready_seconds: None,
        }),
        status: Some(ReplicaSetStatus {
            replicas,
            ready_replicas: Some(replicas),
            available_replicas: Some(replicas),
            ..Default::default()
        }),
    }
}

/// One sync of `d` over `rss` (no pods).
fn plan_for(d: &Deployment, rss: &[ReplicaSet]) -> Plan {
    let refs: Vec<&ReplicaSet> = rss.iter().collect();
    reconcile(&Observed {
        deployment: d,
        replicasets: &refs,
        pods: &[],
        now: ts(100).0,
    })
}

/// `kubectl scale` mid-rollout, with Kubernetes' own cases (TestScale in its deployment
/// controller: maxSurge 0): the new ReplicaSet runs `nginx:new`, old ones other images.
#[test]
fn scaling_mid_rollout_is_proportional() {
    // (name, from, to, [(ReplicaSet, replicas, created)] with the new one last, sizes after)
    type Case = (
        &'static str,
        i32,
        i32,
        &'static [(&'static str, i32, i64)],
        &'static [i32],
    );
    let cases: [Case; 7] = [
        ("5 -> 10", 5, 10, &[("v1", 3, 1), ("v2", 2, 2)], &[6, 4]),
        ("5 -> 3", 5, 3, &[("v1", 3, 1), ("v2", 2, 2)], &[2, 1]),
        ("9 -> 4", 9, 4, &[("v1", 1, 1), ("v2", 8, 2)], &[0, 4]),
        (
            "7 -> 10",
            7,
            10,
            &[("v1", 2, 1), ("v2", 3, 2), ("v3", 2, 3)],
            &[3, 4, 3],
        ),
        (
            "13 -> 8",
            13,
            8,
            &[("v1", 3, 1), ("v2", 8, 2), ("v3", 2, 3)],
            &[2, 5, 1],
        ),
        ("to zero", 5, 0, &[("v1", 3, 1), ("v2", 2, 2)], &[0, 0]),
        // Only one active ReplicaSet: it takes the whole size.
        ("one active", 4, 6, &[("v1", 0, 1), ("v2", 4, 2)], &[0, 6]),
    ];
    for (case, from, to, sets, want) in cases {
        let d = deployment(to, "nginx:new", "RollingUpdate", "0", "1");
        let last = sets.len() - 1;
        let rss: Vec<ReplicaSet> = sets
            .iter()
            .enumerate()
            .map(|(i, (name, n, created))| {
                let image = if i == last {
                    "new".into()
                } else {
                    name.to_string()
                };
                owned_rs(&d, name, *n, *created, &format!("nginx:{image}"), from)
            })
            .collect();
        let plan = plan_for(&d, &rss);
        assert!(plan.create.is_none(), "{case}: scaling creates nothing");
        let size_after = |rs: &ReplicaSet| {
            plan.scale
                .iter()
                .find(|s| Some(&s.replicaset) == rs.metadata.name.as_ref())
                .map_or(rs_replicas(rs), |s| s.to)
        };
        let got: Vec<i32> = rss.iter().map(size_after).collect();
        assert_eq!(got, want, "{case}");
        let sized_for = to.to_string();
        for s in &plan.scale {
            let a = &s.annotations;
            assert_eq!(
                (&a[ANN_DESIRED], &a[ANN_MAX]),
                (&sized_for, &sized_for),
                "{case}"
            );
            assert!(!a.contains_key(ANN_REVISION), "{case}: revision kept");
        }
    }
}

/// A saturated new ReplicaSet (full size, sized for the Deployment, all available) means the
/// old ones go to zero at once; and after a proportional scale the rollout goes on to the end.
#[test]
fn scaling_then_rollout_completes() {
    let d = deployment(4, "nginx:new", "RollingUpdate", "0", "1");
    let rss = [
        owned_rs(&d, "v1", 2, 1, "nginx:v1", 4),
        owned_rs(&d, "v2", 4, 2, "nginx:new", 4),
    ];
    let plan = plan_for(&d, &rss);
    let sizes: Vec<(&str, i32)> = plan
        .scale
        .iter()
        .map(|s| (s.replicaset.as_str(), s.to))
        .collect();
    assert_eq!(sizes, vec![("v1", 0)]);

    // Mid-rollout (old 4, new 1 of 4, surge 1), scaled to 8: both grow in proportion
    // (4 → 7 and 1 → 2, 8 + surge), then the rollout finishes at 8 new replicas.
    let mut s = Sim::new(deployment(4, "nginx:1", "RollingUpdate", "1", "0"));
    s.run_to_completion(1, 0);
    s.set_image("nginx:2");
    s.step();
    s.settle();
    assert_eq!(s.sizes(), vec![("1".into(), 4), ("2".into(), 1)]);
    s.d.spec.as_mut().unwrap().replicas = Some(8);
    let plan = s.step();
    assert_eq!(
        plan.scale.len(),
        2,
        "both active ReplicaSets scale: {plan:?}"
    );
    assert_eq!(s.sizes(), vec![("1".into(), 7), ("2".into(), 2)]);
    s.settle();
    s.run_to_completion(1, 0);
    assert_eq!(s.sizes(), vec![("1".into(), 0), ("2".into(), 8)]);
}

/// A ReplicaSet's ReplicaFailure condition shows on the Deployment (the new ReplicaSet's
/// first) and goes when the ReplicaSets have none.
#[test]
fn replica_failures_surface_on_the_deployment() {
    use k8s_openapi::api::apps::v1::ReplicaSetCondition;
    let d = deployment(2, "nginx:new", "RollingUpdate", "1", "0");
    let failing = |rs: &mut ReplicaSet, message: &str| {
        rs.status.get_or_insert_default().conditions = Some(vec![ReplicaSetCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            reason: Some("FailedCreate".into()),
            message: Some(message.into()),
            last_transition_time: Some(ts(7)),
        }]);
    };
    let failure = |rss: &[ReplicaSet]| {
        let plan = plan_for(&d, rss);
        let conditions = plan.status.and_then(|s| s.conditions).unwrap_or_default();
        conditions
            .into_iter()
            .find(|c| c.type_ == "ReplicaFailure")
            .map(|c| {
                (
                    c.status,
                    c.reason.unwrap(),
                    c.message.unwrap(),
                    c.last_update_time,
                )
            })
    };
    let mut rss = vec![
        owned_rs(&d, "v1", 0, 1, "nginx:v1", 2),
        owned_rs(&d, "v2", 2, 2, "nginx:new", 2),
    ];
    assert_eq!(failure(&rss), None);
    failing(&mut rss[0], "old one failed");
    assert_eq!(
        failure(&rss),
        Some((
            "True".into(),
            "FailedCreate".into(),
            "old one failed".into(),
            Some(ts(7))
        ))
    );
    failing(&mut rss[1], "quota exceeded");
    assert_eq!(
        failure(&rss).unwrap().2,
        "quota exceeded",
        "the new ReplicaSet's first"
    );
}
