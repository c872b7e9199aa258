//! StatefulSet: pods `<sts>-<ordinal>` with stable names and DNS identity (`hostname`,
//! `subdomain`), created in order (OrderedReady) or all at once (Parallel), rolled from the
//! highest ordinal down to the partition, versioned by ControllerRevisions.

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde_json::json;

use crate::util::{self, Timestamp};

pub const LABEL_POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
pub const LABEL_POD_INDEX: &str = "apps.kubernetes.io/pod-index";
pub const LABEL_REVISION: &str = "controller-revision-hash";

pub struct Observed<'a> {
    pub sts: &'a StatefulSet,
    /// Pods the StatefulSet controls.
    pub pods: &'a [&'a Pod],
    /// ControllerRevisions the StatefulSet controls.
    pub revisions: &'a [&'a ControllerRevision],
    pub now: Timestamp,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    pub create_revision: Option<ControllerRevision>,
    pub create_pods: Vec<Pod>,
    pub delete_pods: Vec<String>,
    pub delete_revisions: Vec<String>,
    pub status: Option<StatefulSetStatus>,
    pub requeue_after: Option<u64>,
}

fn name(sts: &StatefulSet) -> String {
    sts.metadata.name.clone().unwrap_or_default()
}

/// The ordinal of a pod named `<sts>-<n>`, if it is one of this set's names.
pub fn ordinal(sts_name: &str, pod_name: &str) -> Option<i32> {
    let rest = pod_name.strip_prefix(sts_name)?.strip_prefix('-')?;
    if rest.is_empty()
        || !rest.bytes().all(|b| b.is_ascii_digit())
        || (rest.len() > 1 && rest.starts_with('0'))
    {
        return None;
    }
    rest.parse().ok()
}

/// What a revision records: the pod template, as Kubernetes stores it (a patch that replaces
/// the template).
fn revision_data(template: &PodTemplateSpec) -> serde_json::Value {
    let mut t = serde_json::to_value(template).unwrap_or_default();
    if let Some(obj) = t.as_object_mut() {
        obj.insert("$patch".into(), json!("replace"));
    }
    json!({ "spec": { "template": t } })
}

fn template_of_revision(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.get("spec")?.get("template")?.clone();
    if let Some(obj) = t.as_object_mut() {
        obj.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

fn revision_name(sts: &StatefulSet) -> String {
    let template = sts
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let collision = sts.status.as_ref().and_then(|s| s.collision_count);
    format!(
        "{}-{}",
        name(sts),
        util::template_hash(&template, collision)
    )
}

fn pod_revision(pod: &Pod) -> Option<&str> {
    util::labels_of(&pod.metadata)
        .get(LABEL_REVISION)
        .map(String::as_str)
}

fn healthy(pod: &Pod) -> bool {
    util::pod_phase(pod) == "Running"
        && util::pod_is_ready(pod)
        && !util::is_deleting(&pod.metadata)
}

/// The pod for `ordinal`, from `template` at revision `revision`.
pub fn new_pod(sts: &StatefulSet, template: &PodTemplateSpec, revision: &str, ordinal: i32) -> Pod {
    let sts_name = name(sts);
    let pod_name = format!("{sts_name}-{ordinal}");
    let tm = template.metadata.clone().unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    labels.insert(LABEL_POD_NAME.into(), pod_name.clone());
    labels.insert(LABEL_POD_INDEX.into(), ordinal.to_string());
    labels.insert(LABEL_REVISION.into(), revision.into());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(pod_name.clone());
    spec.subdomain = sts
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .filter(|s| !s.is_empty());
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name),
            namespace: sts.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tm.annotations,
            owner_references: Some(vec![util::owner_ref(
                "apps/v1",
                "StatefulSet",
                &sts.metadata,
            )]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

pub fn reconcile(obs: &Observed) -> Plan {
    let sts = obs.sts;
    let mut plan = Plan::default();
    let Some(spec) = sts.spec.as_ref() else {
        return plan;
    };
    let sts_name = name(sts);
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let start = spec
        .ordinals
        .as_ref()
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let on_delete = strategy.type_.as_deref() == Some("OnDelete");
    let partition = strategy
        .rolling_update
        .as_ref()
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);

    // Revisions: the update revision is the current template's; create it if missing.
    let update_name = revision_name(sts);
    let max_revision = obs.revisions.iter().map(|r| r.revision).max().unwrap_or(0);
    let update_rev = obs
        .revisions
        .iter()
        .copied()
        .find(|r| r.metadata.name.as_deref() == Some(update_name.as_str()));
    if update_rev.is_none() {
        plan.create_revision = Some(ControllerRevision {
            metadata: ObjectMeta {
                name: Some(update_name.clone()),
                namespace: sts.metadata.namespace.clone(),
                labels: spec.selector.match_labels.clone(),
                owner_references: Some(vec![util::owner_ref(
                    "apps/v1",
                    "StatefulSet",
                    &sts.metadata,
                )]),
                ..Default::default()
            },
            data: Some(RawExtension(revision_data(&spec.template))),
            revision: max_revision + 1,
        });
    }
    let status_old = sts.status.clone().unwrap_or_default();
    let current_name = status_old
        .current_revision
        .clone()
        .filter(|c| {
            obs.revisions
                .iter()
                .any(|r| r.metadata.name.as_deref() == Some(c.as_str()))
        })
        .unwrap_or_else(|| update_name.clone());
    let current_template = obs
        .revisions
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(current_name.as_str()))
        .and_then(|r| template_of_revision(r))
        .unwrap_or_else(|| spec.template.clone());

    // Pods by ordinal; pods not named like ours are ignored.
    let mut by_ordinal: std::collections::BTreeMap<i32, &Pod> = std::collections::BTreeMap::new();
    for p in obs.pods.iter().copied() {
        if let Some(o) = p
            .metadata
            .name
            .as_deref()
            .and_then(|n| ordinal(&sts_name, n))
        {
            by_ordinal.insert(o, p);
        }
    }
    let wanted = start..start + replicas;
    let deleting = util::is_deleting(&sts.metadata);

    if !deleting {
        // Which revision a (re)created pod gets.
        let revision_for = |ord: i32| -> (String, PodTemplateSpec) {
            let at_current = if on_delete {
                false
            } else {
                ord - start < partition
            };
            if at_current && current_name != update_name {
                (current_name.clone(), current_template.clone())
            } else {
                (update_name.clone(), spec.template.clone())
            }
        };
        let mut blocked = false;
        for ord in wanted.clone() {
            match by_ordinal.get(&ord) {
                None => {
                    let (rev, t) = revision_for(ord);
                    plan.create_pods.push(new_pod(sts, &t, &rev, ord));
                    if !parallel {
                        blocked = true;
                        break;
                    }
                }
                Some(p) if util::pod_phase(p) == "Failed" && !util::is_deleting(&p.metadata) => {
                    // Failed pods are replaced under the same name.
                    plan.delete_pods
                        .push(p.metadata.name.clone().unwrap_or_default());
                    if !parallel {
                        blocked = true;
                        break;
                    }
                }
                Some(p) if !parallel && !healthy(p) => {
                    blocked = true;
                    break;
                }
                Some(_) => {}
            }
        }
        // Scale down: highest ordinal first; ordered sets one at a time, after the rest is
        // healthy.
        let condemned: Vec<&Pod> = by_ordinal
            .iter()
            .rev()
            .filter(|(o, _)| !wanted.contains(o))
            .map(|(_, p)| *p)
            .collect();
        if !blocked {
            for p in &condemned {
                if util::is_deleting(&p.metadata) {
                    if parallel {
                        continue;
                    }
                    blocked = true;
                    break;
                }
                plan.delete_pods
                    .push(p.metadata.name.clone().unwrap_or_default());
                if !parallel {
                    blocked = true;
                    break;
                }
            }
        }
        // Rolling update: with everything in place and healthy, replace the highest pod
        // (at or above the partition) that is not at the update revision.
        if !blocked
            && !on_delete
            && condemned.is_empty()
            && plan.create_pods.is_empty()
            && wanted
                .clone()
                .all(|o| by_ordinal.get(&o).is_some_and(|p| healthy(p)))
            && plan.create_revision.is_none()
            && let Some(p) = wanted
                .clone()
                .rev()
                .filter(|o| o - start >= partition)
                .filter_map(|o| by_ordinal.get(&o))
                .find(|p| pod_revision(p) != Some(update_name.as_str()))
        {
            plan.delete_pods
                .push(p.metadata.name.clone().unwrap_or_default());
        }
    }

    // Status.
    let existing: Vec<&Pod> = by_ordinal.values().copied().collect();
    let ready = existing.iter().filter(|p| util::pod_is_ready(p)).count() as i32;
    let available = existing
        .iter()
        .filter(|p| util::pod_is_available(p, min_ready, obs.now))
        .count() as i32;
    let updated = existing
        .iter()
        .filter(|p| pod_revision(p) == Some(update_name.as_str()))
        .count() as i32;
    let mut current = existing
        .iter()
        .filter(|p| pod_revision(p) == Some(current_name.as_str()))
        .count() as i32;
    let mut current_revision = current_name.clone();
    let total = existing.len() as i32;
    if updated == replicas && ready == replicas && total == replicas {
        current_revision = update_name.clone();
        current = updated;
    }
    let status = StatefulSetStatus {
        replicas: total,
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        current_replicas: Some(current),
        updated_replicas: Some(updated),
        current_revision: Some(current_revision.clone()),
        update_revision: Some(update_name.clone()),
        observed_generation: sts.metadata.generation,
        collision_count: status_old.collision_count,
        conditions: status_old.conditions.clone(),
    };
    if status != status_old {
        plan.status = Some(status);
    }
    plan.requeue_after = existing
        .iter()
        .filter_map(|p| util::pod_ready_since(p))
        .map(|since| since.as_second() + min_ready as i64 - obs.now.as_second())
        .filter(|left| *left > 0)
        .min()
        .map(|l| l as u64);

    // History: revisions no pod uses and that are neither current nor update, oldest first.
    let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let mut unused: Vec<&ControllerRevision> = obs
        .revisions
        .iter()
        .copied()
        .filter(|r| {
            let n = r.metadata.name.as_deref().unwrap_or("");
            n != update_name
                && n != current_revision
                && !existing.iter().any(|p| pod_revision(p) == Some(n))
        })
        .collect();
    unused.sort_by_key(|r| r.revision);
    if unused.len() > limit {
        plan.delete_revisions = unused[..unused.len() - limit]
            .iter()
            .filter_map(|r| r.metadata.name.clone())
            .collect();
    }
    plan
}

#[cfg(test)]
mod tests;
