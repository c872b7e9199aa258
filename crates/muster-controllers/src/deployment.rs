//! Deployment: one ReplicaSet per pod template (`<deploy>-<pod-template-hash>`), rolled
//! from old to new with RollingUpdate (maxSurge/maxUnavailable) or Recreate.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::util::{self, Timestamp};

pub const LABEL_HASH: &str = "pod-template-hash";
pub const ANN_REVISION: &str = "deployment.kubernetes.io/revision";
pub const ANN_DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
pub const ANN_MAX: &str = "deployment.kubernetes.io/max-replicas";
const ANN_LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

pub struct Observed<'a> {
    pub deployment: &'a Deployment,
    /// ReplicaSets the Deployment controls.
    pub replicasets: &'a [&'a ReplicaSet],
    /// Pods of those ReplicaSets (Recreate waits for old ones to be gone).
    pub pods: &'a [&'a Pod],
    pub now: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScaleTo {
    pub replicaset: String,
    pub from: i32,
    pub to: i32,
    /// Annotations to set along with the new size.
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    pub create: Option<ReplicaSet>,
    pub scale: Vec<ScaleTo>,
    /// Old ReplicaSets beyond revisionHistoryLimit.
    pub delete: Vec<String>,
    pub status: Option<DeploymentStatus>,
    pub requeue_after: Option<u64>,
}

fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0)
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

pub fn revision(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(ANN_REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// `value` (int or "25%") of `total`; percentages round up for surge, down for unavailable.
pub fn scaled_value(
    value: Option<&IntOrString>,
    total: i32,
    default_pct: i32,
    round_up: bool,
) -> i32 {
    let pct = match value {
        Some(IntOrString::Int(n)) => return (*n).max(0),
        Some(IntOrString::String(s)) => {
            match s.strip_suffix('%').and_then(|p| p.parse::<i32>().ok()) {
                Some(p) => p,
                None => default_pct,
            }
        }
        None => default_pct,
    };
    let num = total as i64 * pct.max(0) as i64;
    (if round_up {
        (num + 99) / 100
    } else {
        num / 100
    }) as i32
}

/// (maxSurge, maxUnavailable) for a RollingUpdate Deployment; never both zero.
pub fn surge_and_unavailable(d: &Deployment) -> (i32, i32) {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let n = replicas(d);
    let surge = scaled_value(ru.and_then(|r| r.max_surge.as_ref()), n, 25, true);
    let mut unavailable = scaled_value(ru.and_then(|r| r.max_unavailable.as_ref()), n, 25, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(n))
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

fn template(d: &Deployment) -> PodTemplateSpec {
    d.spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default()
}

/// The template without the hash label, for comparing an RS with its Deployment.
fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(m) = t.metadata.as_mut()
        && let Some(l) = m.labels.as_mut()
    {
        l.remove(LABEL_HASH);
        if l.is_empty() {
            m.labels = None;
        }
    }
    t
}

pub fn pod_template_hash(d: &Deployment) -> String {
    let collision = d.status.as_ref().and_then(|s| s.collision_count);
    util::template_hash(&without_hash(&template(d)), collision)
}

fn rs_annotations(d: &Deployment, revision: i64, surge: i32) -> BTreeMap<String, String> {
    let mut a: BTreeMap<String, String> = d
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k != ANN_LAST_APPLIED && k != ANN_REVISION)
        .collect();
    a.insert(ANN_REVISION.into(), revision.to_string());
    a.insert(ANN_DESIRED.into(), replicas(d).to_string());
    a.insert(ANN_MAX.into(), (replicas(d) + surge).to_string());
    a
}

fn new_replicaset(d: &Deployment, hash: &str, revision: i64, surge: i32, size: i32) -> ReplicaSet {
    let dname = d.metadata.name.clone().unwrap_or_default();
    let mut t = without_hash(&template(d));
    let tm = t.metadata.get_or_insert_default();
    tm.labels
        .get_or_insert_default()
        .insert(LABEL_HASH.into(), hash.into());
    let mut selector = d
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default();
    selector
        .match_labels
        .get_or_insert_default()
        .insert(LABEL_HASH.into(), hash.into());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{dname}-{hash}")),
            namespace: d.metadata.namespace.clone(),
            labels: tm.labels.clone(),
            annotations: Some(rs_annotations(d, revision, surge)),
            owner_references: Some(vec![util::owner_ref("apps/v1", "Deployment", &d.metadata)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(size),
            min_ready_seconds: d.spec.as_ref().and_then(|s| s.min_ready_seconds),
            selector,
            template: Some(t),
        }),
        status: None,
    }
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    old: Option<&DeploymentCondition>,
    now: Timestamp,
    progressed: bool,
) -> DeploymentCondition {
    let same = old.is_some_and(|o| o.status == status && o.reason.as_deref() == Some(reason));
    let same_message = same && old.is_some_and(|o| o.message.as_deref() == Some(message.as_str()));
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: if same {
            old.and_then(|o| o.last_transition_time.clone())
        } else {
            Some(Time(now))
        },
        last_update_time: if same_message && !progressed {
            old.and_then(|o| o.last_update_time.clone())
        } else {
            Some(Time(now))
        },
    }
}

pub fn reconcile(obs: &Observed) -> Plan {
    let d = obs.deployment;
    let mut plan = Plan::default();
    let Some(spec) = d.spec.as_ref() else {
        return plan;
    };
    let want = replicas(d);
    let paused = spec.paused == Some(true);
    let deleting = util::is_deleting(&d.metadata);
    let (surge, max_unavailable) = if is_recreate(d) {
        (0, want)
    } else {
        surge_and_unavailable(d)
    };
    let hash = pod_template_hash(d);
    let dname = d.metadata.name.clone().unwrap_or_default();
    let new_name = format!("{dname}-{hash}");
    let tmpl = without_hash(&template(d));

    // The new RS: the one named by the hash, else one with an equal template.
    let new_rs = obs
        .replicasets
        .iter()
        .copied()
        .find(|rs| rs.metadata.name.as_deref() == Some(new_name.as_str()))
        .or_else(|| {
            obs.replicasets.iter().copied().find(|rs| {
                rs.spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| util::semantically_equal(&without_hash(t), &tmpl))
            })
        });
    let mut olds: Vec<&ReplicaSet> = obs
        .replicasets
        .iter()
        .copied()
        .filter(|rs| {
            Some(rs.metadata.name.as_deref())
                != Some(new_rs.and_then(|n| n.metadata.name.as_deref()))
        })
        .collect();
    olds.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .cmp(&b.metadata.creation_timestamp)
            .then(a.metadata.name.cmp(&b.metadata.name))
    });
    let max_old_revision = olds
        .iter()
        .map(|r| revision(&r.metadata))
        .max()
        .unwrap_or(0);
    let old_total: i32 = olds.iter().map(|r| rs_replicas(r)).sum();
    let old_pods_running = obs.pods.iter().any(|p| {
        !util::pod_is_terminal(p)
            && olds
                .iter()
                .any(|rs| util::is_controlled_by(&p.metadata, &rs.metadata))
    });

    let mut created = false;
    if !deleting {
        if paused || is_scaling_event(d, new_rs, &olds) {
            // A paused Deployment, or one whose size changed (`kubectl scale`), only scales:
            // mid-rollout the change is spread over the active ReplicaSets.
            scale(d, new_rs, &olds, surge, &mut plan);
        } else {
            match new_rs {
                None => {
                    let size = if is_recreate(d) {
                        if old_total > 0 || old_pods_running {
                            None
                        } else {
                            Some(want)
                        }
                    } else {
                        let current: i32 = old_total;
                        let room = (want + surge - current).max(0);
                        Some(room.min(want))
                    };
                    if let Some(size) = size {
                        plan.create =
                            Some(new_replicaset(d, &hash, max_old_revision + 1, surge, size));
                        created = true;
                    }
                    if is_recreate(d) {
                        scale_down_all(&olds, &mut plan, d, surge);
                    }
                }
                Some(new) => {
                    let new_revision = revision(&new.metadata);
                    let new_size = rs_replicas(new);
                    let mut annotations_stale = new_revision <= max_old_revision
                        || new
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(ANN_DESIRED))
                            != Some(&want.to_string());
                    let revision_now = if new_revision <= max_old_revision {
                        max_old_revision + 1
                    } else {
                        new_revision
                    };
                    if is_recreate(d) {
                        if old_total > 0 {
                            scale_down_all(&olds, &mut plan, d, surge);
                        } else if !old_pods_running && new_size != want {
                            plan.scale.push(ScaleTo {
                                replicaset: new.metadata.name.clone().unwrap_or_default(),
                                from: new_size,
                                to: want,
                                annotations: rs_annotations(d, revision_now, surge),
                            });
                            annotations_stale = false;
                        }
                    } else {
                        let all_total = old_total + new_size;
                        if new_size > want {
                            plan.scale.push(ScaleTo {
                                replicaset: new.metadata.name.clone().unwrap_or_default(),
                                from: new_size,
                                to: want,
                                annotations: rs_annotations(d, revision_now, surge),
                            });
                            annotations_stale = false;
                        } else if new_size < want && all_total < want + surge {
                            let up = (want + surge - all_total).min(want - new_size);
                            plan.scale.push(ScaleTo {
                                replicaset: new.metadata.name.clone().unwrap_or_default(),
                                from: new_size,
                                to: new_size + up,
                                annotations: rs_annotations(d, revision_now, surge),
                            });
                            annotations_stale = false;
                        } else if old_total > 0 {
                            scale_down_old(&olds, new, want, max_unavailable, &mut plan, d, surge);
                        }
                    }
                    if annotations_stale {
                        // Same size, new revision (a rollback to this template) or new desired count.
                        plan.scale.push(ScaleTo {
                            replicaset: new.metadata.name.clone().unwrap_or_default(),
                            from: new_size,
                            to: new_size,
                            annotations: rs_annotations(d, revision_now, surge),
                        });
                    }
                }
            }
        }
        // History: old RSs scaled to zero beyond the limit go, oldest first.
        let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let idle: Vec<&&ReplicaSet> = olds
            .iter()
            .filter(|r| rs_replicas(r) == 0 && rs_status(r).0 == 0)
            .collect();
        if idle.len() > limit {
            plan.delete = idle[..idle.len() - limit]
                .iter()
                .filter_map(|r| r.metadata.name.clone())
                .collect();
        }
    }

    plan.status = status(
        obs,
        new_rs,
        created.then_some(new_name.as_str()),
        max_unavailable,
        &mut plan.requeue_after,
    );
    plan
}

/// Spec replicas of the ReplicaSets that have any.
fn active<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> Vec<&'a ReplicaSet> {
    rss.into_iter().filter(|r| rs_replicas(r) > 0).collect()
}

fn desired_annotation(rs: &ReplicaSet) -> Option<i32> {
    rs.metadata
        .annotations
        .as_ref()?
        .get(ANN_DESIRED)?
        .parse()
        .ok()
}

fn max_annotation(rs: &ReplicaSet) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(ANN_MAX)?.parse().ok()
}

/// Kubernetes' isScalingEvent: an active ReplicaSet was sized for another replica count
/// than the Deployment's now.
fn is_scaling_event(d: &Deployment, new_rs: Option<&ReplicaSet>, olds: &[&ReplicaSet]) -> bool {
    active(olds.iter().copied().chain(new_rs))
        .iter()
        .any(|rs| desired_annotation(rs).is_some_and(|n| n != replicas(d)))
}

/// Kubernetes' FindActiveOrLatest: the only active ReplicaSet, or with none active the new
/// one (else the newest old one); None when several are active.
fn active_or_latest<'a>(
    new_rs: Option<&'a ReplicaSet>,
    olds: &[&'a ReplicaSet],
) -> Option<&'a ReplicaSet> {
    let all = active(olds.iter().copied().chain(new_rs));
    match all.len() {
        0 => new_rs.or_else(|| olds.iter().copied().max_by(|a, b| by_creation(a, b))),
        1 => Some(all[0]),
        _ => None,
    }
}

/// Oldest first; names break ties.
fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> std::cmp::Ordering {
    a.metadata
        .creation_timestamp
        .cmp(&b.metadata.creation_timestamp)
        .then(a.metadata.name.cmp(&b.metadata.name))
}

/// Kubernetes' getReplicaSetFraction: how many replicas `rs` gains (or loses) when the
/// Deployment goes from the size recorded in the max-replicas annotation to its size now.
fn fraction(rs: &ReplicaSet, d: &Deployment, surge: i32) -> i32 {
    let want = replicas(d);
    if want == 0 {
        return -rs_replicas(rs);
    }
    let max_now = want + surge;
    let max_before = match max_annotation(rs) {
        Some(n) if n > 0 => n,
        // Scaled by hand (no annotation): the Deployment's current size is the best guess.
        _ => d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0),
    };
    if max_before <= 0 {
        return 0;
    }
    let size = (rs_replicas(rs) as f64 * max_now as f64 / max_before as f64).round() as i32;
    size - rs_replicas(rs)
}

/// Kubernetes' DeploymentController.scale: the only active ReplicaSet takes the whole size;
/// a saturated new one means the old ones go to zero; otherwise (RollingUpdate) the
/// difference to `replicas + maxSurge` is shared in proportion to the ReplicaSets' sizes,
/// the leftover going to the largest.
fn scale(
    d: &Deployment,
    new_rs: Option<&ReplicaSet>,
    olds: &[&ReplicaSet],
    surge: i32,
    plan: &mut Plan,
) {
    let want = replicas(d);
    let mut resize = |rs: &ReplicaSet, to: i32| {
        let annotations = size_annotations(d, surge);
        let stale = annotations
            .iter()
            .any(|(k, v)| rs.metadata.annotations.as_ref().and_then(|a| a.get(k)) != Some(v));
        if rs_replicas(rs) != to || stale {
            plan.scale.push(ScaleTo {
                replicaset: rs.metadata.name.clone().unwrap_or_default(),
                from: rs_replicas(rs),
                to,
                annotations,
            });
        }
    };
    if let Some(rs) = active_or_latest(new_rs, olds) {
        if rs_replicas(rs) != want {
            resize(rs, want);
        }
        return;
    }
    let saturated = new_rs.is_some_and(|n| {
        rs_replicas(n) == want && desired_annotation(n) == Some(want) && rs_status(n).2 == want
    });
    if saturated {
        for old in active(olds.iter().copied()) {
            resize(old, 0);
        }
        return;
    }
    if is_recreate(d) {
        return;
    }
    let mut all = active(olds.iter().copied().chain(new_rs));
    let total: i32 = all.iter().map(|r| rs_replicas(r)).sum();
    let allowed = if want > 0 { want + surge } else { 0 };
    let to_add = allowed - total;
    // Largest first; among equals, newer first when growing and older first when shrinking.
    all.sort_by(|a, b| {
        rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| {
            if to_add > 0 {
                by_creation(b, a)
            } else {
                by_creation(a, b)
            }
        })
    });
    let mut added = 0;
    let mut sizes: Vec<i32> = Vec::with_capacity(all.len());
    for rs in &all {
        let mut share = 0;
        if to_add != 0 && to_add != added {
            let allowed_now = to_add - added;
            let f = fraction(rs, d, surge);
            share = if to_add > 0 {
                f.min(allowed_now)
            } else {
                f.max(allowed_now)
            };
        }
        added += share;
        sizes.push(rs_replicas(rs) + share);
    }
    if let Some(first) = sizes.first_mut() {
        *first = (*first + to_add - added).max(0);
    }
    for (rs, size) in all.into_iter().zip(sizes) {
        resize(rs, size);
    }
}

fn scale_down_all(olds: &[&ReplicaSet], plan: &mut Plan, d: &Deployment, surge: i32) {
    for rs in olds {
        if rs_replicas(rs) > 0 {
            plan.scale.push(ScaleTo {
                replicaset: rs.metadata.name.clone().unwrap_or_default(),
                from: rs_replicas(rs),
                to: 0,
                annotations: size_annotations(d, surge),
            });
        }
    }
}

/// The size annotations (desired and max replicas) Kubernetes sets whenever it resizes a
/// ReplicaSet; the revision stays as it is.
fn size_annotations(d: &Deployment, surge: i32) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert(ANN_DESIRED.into(), replicas(d).to_string());
    a.insert(ANN_MAX.into(), (replicas(d) + surge).to_string());
    a
}

/// Kubernetes' reconcileOldReplicaSets: first drop unhealthy old pods, then scale old RSs
/// down as far as availability allows, oldest first.
fn scale_down_old(
    olds: &[&ReplicaSet],
    new: &ReplicaSet,
    want: i32,
    max_unavailable: i32,
    plan: &mut Plan,
    d: &Deployment,
    surge: i32,
) {
    let all_total: i32 = olds.iter().map(|r| rs_replicas(r)).sum::<i32>() + rs_replicas(new);
    let min_available = want - max_unavailable;
    let new_unavailable = (rs_replicas(new) - rs_status(new).2).max(0);
    let mut budget = all_total - min_available - new_unavailable;
    if budget <= 0 {
        return;
    }
    let mut sizes: Vec<i32> = olds.iter().map(|r| rs_replicas(r)).collect();
    for (i, rs) in olds.iter().enumerate() {
        if budget == 0 {
            break;
        }
        let unhealthy = (sizes[i] - rs_status(rs).2).max(0);
        let cut = unhealthy.min(budget);
        sizes[i] -= cut;
        budget -= cut;
    }
    let available: i32 = olds.iter().map(|r| rs_status(r).2).sum::<i32>() + rs_status(new).2;
    let mut more = (available - min_available).max(0);
    for size in sizes.iter_mut() {
        if more == 0 {
            break;
        }
        let cut = (*size).min(more);
        *size -= cut;
        more -= cut;
    }
    for (rs, size) in olds.iter().zip(sizes) {
        if size != rs_replicas(rs) {
            plan.scale.push(ScaleTo {
                replicaset: rs.metadata.name.clone().unwrap_or_default(),
                from: rs_replicas(rs),
                to: size,
                annotations: size_annotations(d, surge),
            });
        }
    }
}

/// Kubernetes' getReplicaFailures: a ReplicaSet's `ReplicaFailure` condition (the new
/// ReplicaSet's first) becomes the Deployment's, with the same status, reason and message.
fn replica_failure(
    new_rs: Option<&ReplicaSet>,
    all: &[&ReplicaSet],
) -> Option<DeploymentCondition> {
    let failure_of = |rs: &ReplicaSet| {
        rs.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == crate::replicaset::CONDITION_REPLICA_FAILURE)
            .cloned()
    };
    let c = new_rs
        .and_then(failure_of)
        .or_else(|| all.iter().find_map(|rs| failure_of(rs)))?;
    Some(DeploymentCondition {
        type_: c.type_,
        status: c.status,
        reason: c.reason,
        message: c.message,
        last_transition_time: c.last_transition_time.clone(),
        last_update_time: c.last_transition_time,
    })
}

fn status(
    obs: &Observed,
    new_rs: Option<&ReplicaSet>,
    created: Option<&str>,
    max_unavailable: i32,
    requeue: &mut Option<u64>,
) -> Option<DeploymentStatus> {
    let d = obs.deployment;
    let want = replicas(d);
    let old = d.status.clone().unwrap_or_default();
    let mut total = 0;
    let mut ready = 0;
    let mut available = 0;
    for rs in obs.replicasets {
        let (r, re, av) = rs_status(rs);
        total += r;
        ready += re;
        available += av;
    }
    let updated = new_rs.map(|r| rs_status(r).0).unwrap_or(0);
    let new_name = created
        .map(str::to_string)
        .or_else(|| new_rs.and_then(|r| r.metadata.name.clone()))
        .unwrap_or_default();
    let find = |t: &str| {
        old.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t)
            .cloned()
    };
    let old_available = find("Available");
    let old_progressing = find("Progressing");
    let avail_cond = if available >= want - max_unavailable {
        condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            old_available.as_ref(),
            obs.now,
            false,
        )
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            old_available.as_ref(),
            obs.now,
            false,
        )
    };
    let spec = d.spec.clone().unwrap_or_default();
    let generation_seen = d.metadata.generation;
    let complete = updated == want
        && total == want
        && available == want
        && new_rs.is_some_and(|r| rs_replicas(r) == want);
    let progressed = created.is_some()
        || (
            old.updated_replicas.unwrap_or(0),
            old.ready_replicas.unwrap_or(0),
            old.available_replicas.unwrap_or(0),
            old.replicas.unwrap_or(0),
        ) != (updated, ready, available, total);
    let deadline = spec.progress_deadline_seconds.unwrap_or(600) as i64;
    let prog_cond = if spec.paused == Some(true) {
        condition(
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
            old_progressing.as_ref(),
            obs.now,
            false,
        )
    } else if complete {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            old_progressing.as_ref(),
            obs.now,
            false,
        )
    } else if let Some(name) = created {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set \"{name}\""),
            old_progressing.as_ref(),
            obs.now,
            true,
        )
    } else {
        let last = old_progressing
            .as_ref()
            .and_then(|c| c.last_update_time.as_ref())
            .map(|t| t.0.as_second())
            .unwrap_or(obs.now.as_second());
        let stalled = !progressed && obs.now.as_second() - last > deadline;
        let was_exceeded = old_progressing
            .as_ref()
            .is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
        if (stalled || was_exceeded) && !progressed {
            condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                old_progressing.as_ref(),
                obs.now,
                false,
            )
        } else {
            if !progressed {
                *requeue = Some((last + deadline + 1 - obs.now.as_second()).max(1) as u64);
            }
            condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_name}\" is progressing."),
                old_progressing.as_ref(),
                obs.now,
                progressed,
            )
        }
    };
    let mut conditions = vec![avail_cond, prog_cond];
    conditions.extend(replica_failure(new_rs, obs.replicasets));
    let status = DeploymentStatus {
        replicas: Some(total),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((want - available).max(0)),
        observed_generation: generation_seen,
        collision_count: old.collision_count,
        conditions: Some(conditions),
        terminating_replicas: old.terminating_replicas,
    };
    (status != old).then_some(status)
}

#[cfg(test)]
mod tests;
