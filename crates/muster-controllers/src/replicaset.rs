//! ReplicaSet: keep `replicas` pods that match the selector, adopting orphans and releasing
//! pods that stopped matching.

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

use crate::util::{self, Timestamp};

/// Upper bound of pods created or deleted by one sync, so a typo (replicas: 100000) cannot
/// flood the API in one go; the next sync continues.
pub const BURST: usize = 500;

pub struct Observed<'a> {
    pub rs: &'a ReplicaSet,
    /// Pods of the ReplicaSet's namespace.
    pub pods: &'a [&'a Pod],
    pub now: Timestamp,
}

/// A change of a pod's ownerReferences: the complete new list.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnerChange {
    pub pod: String,
    pub resource_version: Option<String>,
    pub owner_references: Vec<OwnerReference>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    pub adopt: Vec<OwnerChange>,
    pub release: Vec<OwnerChange>,
    /// Pods to create from `pod_from_template`.
    pub create: usize,
    /// Names of pods to delete, best candidates first.
    pub delete: Vec<String>,
    /// New status, when it differs from the stored one.
    pub status: Option<ReplicaSetStatus>,
    /// Seconds until a ready pod becomes available (minReadySeconds), to sync again then.
    pub requeue_after: Option<u64>,
}

/// An empty selector selects nothing here: Kubernetes refuses such ReplicaSets, and matching
/// every pod in the namespace would be the worst possible reading of one.
pub fn selects(selector: &LabelSelector, meta: &ObjectMeta) -> bool {
    let empty = selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|m| m.is_empty());
    !empty && util::selector_matches(selector, util::labels_of(meta))
}

fn without_owner(meta: &ObjectMeta, uid: &str) -> Vec<OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != uid)
        .cloned()
        .collect()
}

pub fn reconcile(obs: &Observed) -> Plan {
    let rs = obs.rs;
    let mut plan = Plan::default();
    let Some(spec) = rs.spec.as_ref() else {
        return plan;
    };
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let rs_deleting = util::is_deleting(&rs.metadata);

    // Claim pods: keep ours that still match, adopt matching orphans, release the rest.
    let mut owned: Vec<&Pod> = Vec::new();
    for pod in obs.pods.iter().copied() {
        let matches = selects(&spec.selector, &pod.metadata);
        match util::controller_ref(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if matches {
                    owned.push(pod);
                } else if !rs_deleting {
                    plan.release.push(OwnerChange {
                        pod: pod.metadata.name.clone().unwrap_or_default(),
                        resource_version: pod.metadata.resource_version.clone(),
                        owner_references: without_owner(&pod.metadata, &uid),
                    });
                }
            }
            Some(_) => {}
            None => {
                if matches && !rs_deleting && util::pod_is_active(pod) {
                    let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
                    refs.push(util::owner_ref("apps/v1", "ReplicaSet", &rs.metadata));
                    plan.adopt.push(OwnerChange {
                        pod: pod.metadata.name.clone().unwrap_or_default(),
                        resource_version: pod.metadata.resource_version.clone(),
                        owner_references: refs,
                    });
                    owned.push(pod);
                }
            }
        }
    }
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
    let status = ReplicaSetStatus {
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
    if !same_status(&old, &status) {
        plan.status = Some(status);
    }
    plan
}

/// Absent counts and zero counts mean the same to clients.
fn same_status(a: &ReplicaSetStatus, b: &ReplicaSetStatus) -> bool {
    let n = |v: Option<i32>| v.unwrap_or(0);
    a.replicas == b.replicas
        && n(a.fully_labeled_replicas) == n(b.fully_labeled_replicas)
        && n(a.ready_replicas) == n(b.ready_replicas)
        && n(a.available_replicas) == n(b.available_replicas)
        && a.observed_generation == b.observed_generation
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
        let names = |v: &[OwnerChange]| v.iter().map(|o| o.pod.clone()).collect::<Vec<_>>();
        assert_eq!(plan.create, c.create, "{}: create", c.name);
        assert_eq!(plan.delete, c.delete, "{}: delete", c.name);
        assert_eq!(names(&plan.adopt), c.adopt, "{}: adopt", c.name);
        assert_eq!(names(&plan.release), c.release, "{}: release", c.name);
        let s = plan.status.expect("status changes from empty");
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
        r.status = first.status;
        let second = reconcile(&Observed {
            rs: &r,
            pods: &[&p],
            now: ts(6).0,
        });
        assert_eq!(second, Plan::default());
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
