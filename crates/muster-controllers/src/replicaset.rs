//! ReplicaSet: keep `replicas` pods that match the selector, adopting orphans and releasing
//! pods that stopped matching.

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::util::{self, OwnerChange, Timestamp};

/// Upper bound of pods created or deleted by one sync, so a typo (replicas: 100000) cannot
/// flood the API in one go; the next sync continues.
pub const BURST: usize = 500;

pub struct Observed<'a> {
    pub rs: &'a ReplicaSet,
    /// Pods of the ReplicaSet's namespace.
    pub pods: &'a [&'a Pod],
    pub now: Timestamp,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    pub adopt: Vec<OwnerChange>,
    pub release: Vec<OwnerChange>,
    /// Pods to create from `pod_from_template`.
    pub create: usize,
    /// Names of pods to delete, best candidates first.
    pub delete: Vec<String>,
    /// The status as counted now (conditions as stored); `status_update` says whether to
    /// write it, once the outcome of the creates and deletes is known.
    pub status: ReplicaSetStatus,
    /// Seconds until a ready pod becomes available (minReadySeconds), to sync again then.
    pub requeue_after: Option<u64>,
}

pub fn reconcile(obs: &Observed) -> Plan {
    let rs = obs.rs;
    let mut plan = Plan::default();
    let Some(spec) = rs.spec.as_ref() else {
        return plan;
    };
    let rs_deleting = util::is_deleting(&rs.metadata);

    // Claim pods: keep ours that still match, adopt matching orphans, release the rest.
    let claimed = util::claim(
        &rs.metadata,
        &util::owner_ref("apps/v1", "ReplicaSet", &rs.metadata),
        &spec.selector,
        obs.pods,
        |p: &Pod| util::pod_is_active(p),
    );
    plan.adopt = claimed.adopt;
    plan.release = claimed.release;
    let owned = claimed.owned;
    let mut active: Vec<&Pod> = owned
        .into_iter()
        .filter(|p| util::pod_is_active(p))
        .collect();

    let want = spec.replicas.unwrap_or(1).max(0) as usize;
    if !rs_deleting {
        if active.len() < want {
            plan.create = (want - active.len()).min(BURST);
        } else if active.len() > want {
            active.sort_by(|a, b| util::deletion_order(a, b));
            plan.delete = active
                .iter()
                .take((active.len() - want).min(BURST))
                .filter_map(|p| p.metadata.name.clone())
                .collect();
        }
    }

    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .map(|m| util::labels_of(m).clone())
        .unwrap_or_default();
    let ready: Vec<&&Pod> = active.iter().filter(|p| util::pod_is_ready(p)).collect();
    let available = ready
        .iter()
        .filter(|p| util::pod_is_available(p, min_ready, obs.now))
        .count();
    plan.requeue_after = ready
        .iter()
        .filter_map(|p| util::pod_ready_since(p))
        .map(|since| since.as_second() + min_ready as i64 - obs.now.as_second())
        .filter(|left| *left > 0)
        .min()
        .map(|left| left as u64);
    let old = rs.status.clone().unwrap_or_default();
    plan.status = ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(
            active
                .iter()
                .filter(|p| {
                    util::map_selector_matches(&template_labels, util::labels_of(&p.metadata))
                })
                .count() as i32,
        ),
        ready_replicas: Some(ready.len() as i32),
        available_replicas: Some(available as i32),
        observed_generation: rs.metadata.generation,
        conditions: old.conditions.clone(),
        terminating_replicas: old.terminating_replicas,
    };
    plan
}

pub const CONDITION_REPLICA_FAILURE: &str = "ReplicaFailure";

/// Why creating or deleting pods failed in a sync, with the API's message.
#[derive(Debug, Clone, PartialEq)]
pub enum ManageFailure {
    Create(String),
    Delete(String),
}

/// The status to write after a sync, if it differs from the stored one: `counted` (from
/// `Plan::status`) with the `ReplicaFailure` condition set when creating or deleting pods
/// failed (reason FailedCreate / FailedDelete, kept as first reported while failures go on)
/// and removed once a sync manages its pods without error, as Kubernetes does.
pub fn status_update(
    rs: &ReplicaSet,
    mut counted: ReplicaSetStatus,
    failure: Option<&ManageFailure>,
    now: Timestamp,
) -> Option<ReplicaSetStatus> {
    let old = rs.status.clone().unwrap_or_default();
    let mut conditions = old.conditions.clone().unwrap_or_default();
    let has_failure = conditions
        .iter()
        .any(|c| c.type_ == CONDITION_REPLICA_FAILURE);
    match failure {
        Some(f) if !has_failure => {
            let (reason, message) = match f {
                ManageFailure::Create(m) => ("FailedCreate", m),
                ManageFailure::Delete(m) => ("FailedDelete", m),
            };
            conditions.push(ReplicaSetCondition {
                type_: CONDITION_REPLICA_FAILURE.into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(message.clone()),
                last_transition_time: Some(Time(now)),
            });
        }
        None if has_failure => conditions.retain(|c| c.type_ != CONDITION_REPLICA_FAILURE),
        _ => {}
    }
    // An empty list, not an absent one: the status is written as a merge patch, where an
    // absent field would keep the stored conditions.
    counted.conditions = (!conditions.is_empty() || old.conditions.is_some()).then_some(conditions);
    (!same_status(&old, &counted)).then_some(counted)
}

/// Absent counts and zero counts (and no conditions and an empty list) mean the same to
/// clients.
fn same_status(a: &ReplicaSetStatus, b: &ReplicaSetStatus) -> bool {
    let n = |v: Option<i32>| v.unwrap_or(0);
    a.replicas == b.replicas
        && n(a.fully_labeled_replicas) == n(b.fully_labeled_replicas)
        && n(a.ready_replicas) == n(b.ready_replicas)
        && n(a.available_replicas) == n(b.available_replicas)
        && a.observed_generation == b.observed_generation
        && a.conditions.as_deref().unwrap_or(&[]) == b.conditions.as_deref().unwrap_or(&[])
}

/// The pod a ReplicaSet creates: its template, named `<rs>-<5 chars>` by the server.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!(
                "{}-",
                rs.metadata.name.as_deref().unwrap_or_default()
            )),
            namespace: rs.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![util::owner_ref("apps/v1", "ReplicaSet", &rs.metadata)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};

    fn rs(replicas: i32, min_ready: i32) -> ReplicaSet {
        let labels: util::Labels = [("app".to_string(), "web".to_string())].into();
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("uid-rs".into()),
                generation: Some(2),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: Some(min_ready),
                selector: LabelSelector {
                    match_labels: Some(labels.clone()),
                    ..Default::default()
                },
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(
                            [("app".into(), "web".into()), ("tier".into(), "fe".into())].into(),
                        ),
                        ..Default::default()
                    }),
                    spec: None,
                }),
            }),
            status: None,
        }
    }

    fn owned(b: PodBuilder) -> Pod {
        let mut p = b.build();
        p.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "web".into(),
            uid: "uid-rs".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        p
    }

    /// `(replicas, minReadySeconds, pods, now)` → (created, deleted, adopted, released,
    /// status replicas/ready/available/fullyLabeled).
    struct Case {
        name: &'static str,
        rs: ReplicaSet,
        pods: Vec<Pod>,
        now: i64,
        create: usize,
        delete: &'static [&'static str],
        adopt: &'static [&'static str],
        release: &'static [&'static str],
        status: (i32, i32, i32, i32),
    }

    fn check(c: Case) {
        let pods: Vec<&Pod> = c.pods.iter().collect();
        let plan = reconcile(&Observed {
            rs: &c.rs,
            pods: &pods,
            now: ts(c.now).0,
        });
        let names = |v: &[OwnerChange]| v.iter().map(|o| o.name.clone()).collect::<Vec<_>>();
        assert_eq!(plan.create, c.create, "{}: create", c.name);
        assert_eq!(plan.delete, c.delete, "{}: delete", c.name);
        assert_eq!(names(&plan.adopt), c.adopt, "{}: adopt", c.name);
        assert_eq!(names(&plan.release), c.release, "{}: release", c.name);
        let s = status_update(&c.rs, plan.status, None, ts(c.now).0)
            .expect("status changes from empty");
        assert_eq!(
            (
                s.replicas,
                s.ready_replicas.unwrap(),
                s.available_replicas.unwrap(),
                s.fully_labeled_replicas.unwrap()
            ),
            c.status,
            "{}: status",
            c.name
        );
        assert_eq!(s.observed_generation, Some(2));
    }

    #[test]
    fn reconcile_table() {
        let cases = vec![
            Case {
                name: "creates the missing pods",
                rs: rs(3, 0),
                pods: vec![owned(pod("web-a", "10.0.0.1").ready(true))],
                now: 10,
                create: 2,
                delete: &[],
                adopt: &[],
                release: &[],
                status: (1, 1, 1, 0),
            },
            Case {
                name: "deletes unscheduled, then not ready, then newest first",
                rs: rs(1, 0),
                pods: vec![
                    owned(
                        pod("old-ready", "10.0.0.1")
                            .ready(true)
                            .node("n")
                            .created(1),
                    ),
                    owned(
                        pod("new-ready", "10.0.0.2")
                            .ready(true)
                            .node("n")
                            .created(5),
                    ),
                    owned(pod("not-ready", "10.0.0.3").ready(false).node("n")),
                    owned(pod("unscheduled", "").phase("Pending")),
                ],
                now: 10,
                create: 0,
                delete: &["unscheduled", "not-ready", "new-ready"],
                adopt: &[],
                release: &[],
                status: (4, 2, 2, 0),
            },
            Case {
                name: "ready for less time goes before ready longer",
                rs: rs(1, 0),
                pods: vec![
                    owned(pod("long", "10.0.0.1").ready_at(true, 1).node("n")),
                    owned(pod("short", "10.0.0.2").ready_at(true, 8).node("n")),
                ],
                now: 10,
                create: 0,
                delete: &["short"],
                adopt: &[],
                release: &[],
                status: (2, 2, 2, 0),
            },
            Case {
                name: "adopts matching orphans, ignores others' pods and terminal ones",
                rs: rs(2, 0),
                pods: vec![
                    pod("orphan", "10.0.0.1").ready(true).build(),
                    {
                        let mut p = pod("theirs", "10.0.0.2").ready(true).build();
                        p.metadata.owner_references = Some(vec![OwnerReference {
                            uid: "other".into(),
                            controller: Some(true),
                            ..Default::default()
                        }]);
                        p
                    },
                    pod("done", "10.0.0.3").phase("Succeeded").build(),
                    pod("deleting", "10.0.0.4").deleting().build(),
                ],
                now: 10,
                create: 1,
                delete: &[],
                adopt: &["orphan"],
                release: &[],
                status: (1, 1, 1, 0),
            },
            Case {
                name: "releases owned pods that no longer match",
                rs: rs(1, 0),
                pods: vec![
                    owned(
                        pod("kept", "10.0.0.1")
                            .ready(true)
                            .labels(&[("app", "web"), ("tier", "fe")]),
                    ),
                    owned(
                        pod("relabelled", "10.0.0.2")
                            .ready(true)
                            .labels(&[("app", "debug")]),
                    ),
                ],
                now: 10,
                create: 0,
                delete: &[],
                adopt: &[],
                release: &["relabelled"],
                status: (1, 1, 1, 1),
            },
            Case {
                name: "minReadySeconds holds availability back",
                rs: rs(2, 30),
                pods: vec![
                    owned(pod("a", "10.0.0.1").ready_at(true, 0)),
                    owned(pod("b", "10.0.0.2").ready_at(true, 20)),
                ],
                now: 40,
                create: 0,
                delete: &[],
                adopt: &[],
                release: &[],
                status: (2, 2, 1, 0),
            },
            Case {
                name: "terminating pods do not count and are not deleted again",
                rs: rs(2, 0),
                pods: vec![
                    owned(pod("a", "10.0.0.1").ready(true)),
                    owned(pod("b", "10.0.0.2").ready(true).deleting()),
                ],
                now: 10,
                create: 1,
                delete: &[],
                adopt: &[],
                release: &[],
                status: (1, 1, 1, 0),
            },
        ];
        for c in cases {
            check(c);
        }
    }

    #[test]
    fn requeues_when_a_pod_will_become_available() {
        let r = rs(1, 30);
        let p = owned(pod("a", "10.0.0.1").ready_at(true, 20));
        let plan = reconcile(&Observed {
            rs: &r,
            pods: &[&p],
            now: ts(40).0,
        });
        assert_eq!(plan.requeue_after, Some(10));
    }

    #[test]
    fn unchanged_status_is_not_written() {
        let mut r = rs(1, 0);
        let p = owned(
            pod("a", "10.0.0.1")
                .ready(true)
                .labels(&[("app", "web"), ("tier", "fe")]),
        );
        let first = reconcile(&Observed {
            rs: &r,
            pods: &[&p],
            now: ts(5).0,
        });
        r.status = status_update(&r, first.status, None, ts(5).0);
        let second = reconcile(&Observed {
            rs: &r,
            pods: &[&p],
            now: ts(6).0,
        });
        assert_eq!(
            status_update(&r, second.status.clone(), None, ts(6).0),
            None
        );
        assert_eq!(
            second,
            Plan {
                status: r.status.clone().unwrap(),
                ..Plan::default()
            }
        );
    }

    #[test]
    fn replica_failure_condition_follows_the_last_sync() {
        let create = ManageFailure::Create("pods \"web-x\" is forbidden: quota".into());
        let delete = ManageFailure::Delete("etcdserver: request timed out".into());
        // (failure in this sync, then the condition stored: reason, message, transition second)
        type Step = (Option<ManageFailure>, Option<(&'static str, String, i64)>);
        let steps: Vec<Step> = vec![
            (None, None),
            (
                Some(create.clone()),
                Some((
                    "FailedCreate",
                    "pods \"web-x\" is forbidden: quota".into(),
                    2,
                )),
            ),
            // Still failing (even differently): the first report stays, as in Kubernetes.
            (
                Some(delete.clone()),
                Some((
                    "FailedCreate",
                    "pods \"web-x\" is forbidden: quota".into(),
                    2,
                )),
            ),
            (None, None),
            (
                Some(delete),
                Some(("FailedDelete", "etcdserver: request timed out".into(), 5)),
            ),
        ];
        let mut r = rs(1, 0);
        let p = owned(pod("a", "10.0.0.1").ready(true));
        for (i, (failure, want)) in steps.into_iter().enumerate() {
            let now = ts(i as i64 + 1).0;
            let plan = reconcile(&Observed {
                rs: &r,
                pods: &[&p],
                now,
            });
            if let Some(s) = status_update(&r, plan.status, failure.as_ref(), now) {
                r.status = Some(s);
            }
            let cond = r
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == CONDITION_REPLICA_FAILURE))
                .map(|c| {
                    assert_eq!(c.status, "True");
                    (
                        c.reason.as_deref().unwrap(),
                        c.message.clone().unwrap(),
                        c.last_transition_time.as_ref().unwrap().0.as_second() - 1_700_000_000,
                    )
                });
            assert_eq!(cond, want, "step {i}");
        }
    }

    #[test]
    fn pods_come_from_the_template_with_an_owner() {
        let p = pod_from_template(&rs(1, 0));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(util::labels_of(&p.metadata)["tier"], "fe");
        let o = util::controller_ref(&p.metadata).unwrap();
        assert_eq!((o.kind.as_str(), o.uid.as_str()), ("ReplicaSet", "uid-rs"));
        assert_eq!(o.block_owner_deletion, Some(true));
    }

    #[test]
    fn empty_selector_selects_nothing() {
        let mut r = rs(1, 0);
        r.spec.as_mut().unwrap().selector = LabelSelector::default();
        let p = pod("orphan", "10.0.0.1").build();
        let plan = reconcile(&Observed {
            rs: &r,
            pods: &[&p],
            now: ts(0).0,
        });
        assert!(plan.adopt.is_empty());
    }
}
