//! Small pure helpers shared by the controllers: pod readiness, label selectors, owner
//! references, ranking of pods for deletion.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};

/// The alphabet Kubernetes uses for generated name suffixes and hashes: no vowels (no
/// accidental words) and no look-alike characters.
pub const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub type Labels = BTreeMap<String, String>;

/// Kubernetes' time type as k8s-openapi 0.29 models it.
pub type Timestamp = k8s_openapi::jiff::Timestamp;

/// `ns/name`, the key every controller queues.
pub fn key(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// Splits a `ns/name` key; a key without a slash is a cluster-scoped name.
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

pub fn labels_of(meta: &ObjectMeta) -> &Labels {
    static EMPTY: Labels = BTreeMap::new();
    meta.labels.as_ref().unwrap_or(&EMPTY)
}

/// Whether `labels` satisfy a `LabelSelector` (matchLabels and matchExpressions, ANDed).
/// An empty selector matches everything, as in Kubernetes; callers that must treat an empty
/// selector as "nothing" check that first.
pub fn selector_matches(selector: &LabelSelector, labels: &Labels) -> bool {
    if let Some(ml) = &selector.match_labels
        && ml.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    for expr in selector.match_expressions.iter().flatten() {
        let values = expr.values.as_deref().unwrap_or(&[]);
        let value = labels.get(&expr.key);
        let ok = match expr.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            // An operator we do not know selects nothing rather than everything.
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Whether a workload's selector selects an object. An empty selector selects nothing here:
/// Kubernetes refuses such workloads, and matching every object in the namespace would be the
/// worst possible reading of one.
pub fn selects(selector: &LabelSelector, meta: &ObjectMeta) -> bool {
    let empty = selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|m| m.is_empty());
    !empty && selector_matches(selector, labels_of(meta))
}

/// Whether a plain map selector (Service, nodeSelector) is a subset of `labels`.
pub fn map_selector_matches(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A selector rendered as `a=b,c in (d)` for `Scale.status.selector` and messages.
pub fn selector_string(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// The owner reference a controller puts on what it creates or adopts.
pub fn owner_ref(api_version: &str, kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A change of an object's ownerReferences: the complete new list, guarded by the
/// resourceVersion it was computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnerChange {
    pub name: String,
    pub resource_version: Option<String>,
    pub owner_references: Vec<OwnerReference>,
}

/// What a controller owns among `candidates`, and the ownerReference changes that make it
/// so. Kubernetes' ClaimObject rules: its own objects that still match stay; ones that
/// stopped matching are released (unless the owner is being deleted); orphans that match are
/// adopted when `adoptable` says so (and neither side is being deleted); objects of other
/// controllers are left alone. An empty selector selects nothing.
pub struct Claim<'a, T> {
    pub owned: Vec<&'a T>,
    pub adopt: Vec<OwnerChange>,
    pub release: Vec<OwnerChange>,
}

pub fn claim<'a, T: kube::Resource>(
    owner: &ObjectMeta,
    owner_ref: &OwnerReference,
    selector: &LabelSelector,
    candidates: &[&'a T],
    adoptable: impl Fn(&T) -> bool,
) -> Claim<'a, T> {
    let uid = owner.uid.as_deref().unwrap_or("");
    let owner_deleting = is_deleting(owner);
    let mut out = Claim {
        owned: Vec::new(),
        adopt: Vec::new(),
        release: Vec::new(),
    };
    for obj in candidates.iter().copied() {
        let meta = obj.meta();
        let matches = selects(selector, meta);
        let change = |refs: Vec<OwnerReference>| OwnerChange {
            name: meta.name.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone(),
            owner_references: refs,
        };
        match controller_ref(meta) {
            Some(r) if r.uid == uid => {
                if matches {
                    out.owned.push(obj);
                } else if !owner_deleting {
                    let rest = meta
                        .owner_references
                        .iter()
                        .flatten()
                        .filter(|r| r.uid != uid)
                        .cloned()
                        .collect();
                    out.release.push(change(rest));
                }
            }
            Some(_) => {}
            None => {
                if matches && !owner_deleting && !is_deleting(meta) && adoptable(obj) {
                    let mut refs = meta.owner_references.clone().unwrap_or_default();
                    refs.push(owner_ref.clone());
                    out.adopt.push(change(refs));
                    out.owned.push(obj);
                }
            }
        }
    }
    out
}

pub fn is_controlled_by(meta: &ObjectMeta, owner: &ObjectMeta) -> bool {
    match (controller_ref(meta), owner.uid.as_deref()) {
        (Some(r), Some(uid)) => r.uid == uid,
        _ => false,
    }
}

fn pod_condition<'a>(
    pod: &'a Pod,
    type_: &str,
) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

pub fn pod_is_ready(pod: &Pod) -> bool {
    pod_condition(pod, "Ready").is_some_and(|c| c.status == "True")
}

/// When the pod became Ready (None if it is not Ready).
pub fn pod_ready_since(pod: &Pod) -> Option<Timestamp> {
    let c = pod_condition(pod, "Ready")?;
    if c.status != "True" {
        return None;
    }
    Some(
        c.last_transition_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(Timestamp::MIN),
    )
}

/// Ready for at least `min_ready_seconds` at `now`.
pub fn pod_is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match pod_ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(since) => since.as_second() + min_ready_seconds as i64 <= now.as_second(),
    }
}

pub fn pod_phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

pub fn pod_is_terminal(pod: &Pod) -> bool {
    matches!(pod_phase(pod), "Succeeded" | "Failed")
}

pub fn is_deleting(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

/// Counts toward a workload's replicas: not finished and not being deleted.
pub fn pod_is_active(pod: &Pod) -> bool {
    !pod_is_terminal(pod) && !is_deleting(&pod.metadata)
}

pub fn pod_node(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

fn restart_count(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

fn creation(meta: &ObjectMeta) -> Timestamp {
    meta.creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(Timestamp::MIN)
}

/// Orders pods from "delete first" to "delete last", as Kubernetes' ActivePods does:
/// unscheduled before scheduled, Pending before Unknown before Running, not ready before
/// ready, ready for less time before ready longer, more restarts first, newer first.
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let scheduled = |p: &Pod| pod_node(p).is_some();
    let phase_rank = |p: &Pod| match pod_phase(p) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    };
    scheduled(a)
        .cmp(&scheduled(b))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| pod_is_ready(a).cmp(&pod_is_ready(b)))
        // Ready for a shorter time (later transition) goes first.
        .then_with(|| pod_ready_since(b).cmp(&pod_ready_since(a)))
        .then_with(|| restart_count(b).cmp(&restart_count(a)))
        .then_with(|| creation(&b.metadata).cmp(&creation(&a.metadata)))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// RFC 3339 in whole seconds, UTC, as Kubernetes writes times into annotations.
pub fn format_time(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

pub fn time(t: Timestamp) -> Time {
    Time(t)
}

/// Kubernetes' `rand.SafeEncodeString`: maps each byte of `s` into the safe alphabet.
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| SAFE_ALPHABET[b as usize % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// 32-bit FNV-1a, the hash Kubernetes uses for pod-template-hash and revision names.
pub fn fnv32a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for b in data {
        h ^= *b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    h
}

/// A value as JSON without nulls, empty objects and empty lists, recursively: Go's zero
/// values (`resources: {}`, `creationTimestamp: null`) mean the same as absent fields, and
/// clients send either (kubectl rollout undo sends both).
pub fn canonical_json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    fn prune(v: serde_json::Value) -> Option<serde_json::Value> {
        use serde_json::Value;
        match v {
            Value::Null => None,
            Value::Object(map) => {
                let m: serde_json::Map<String, Value> = map
                    .into_iter()
                    .filter_map(|(k, v)| prune(v).map(|v| (k, v)))
                    .collect();
                (!m.is_empty()).then_some(Value::Object(m))
            }
            Value::Array(items) => {
                let a: Vec<Value> = items.into_iter().filter_map(prune).collect();
                (!a.is_empty()).then_some(Value::Array(a))
            }
            other => Some(other),
        }
    }
    prune(serde_json::to_value(value).unwrap_or_default()).unwrap_or(serde_json::Value::Null)
}

/// Whether two values are equal up to zero values (see `canonical_json`).
pub fn semantically_equal<T: serde::Serialize>(a: &T, b: &T) -> bool {
    canonical_json(a) == canonical_json(b)
}

/// The hash of a serialisable value (a pod template), salted with a collision count, as a
/// short label-safe string. Canonical JSON stands in for Go's deep printer; what matters is
/// that equal templates give equal hashes and different ones (almost always) differ.
pub fn template_hash<T: serde::Serialize>(value: &T, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(&canonical_json(value)).unwrap_or_default();
    if let Some(c) = collision_count {
        bytes.extend_from_slice(&c.to_le_bytes());
    }
    safe_encode(&fnv32a(&bytes).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn selectors_match_like_kubernetes() {
        let pod = labels(&[("app", "web"), ("tier", "fe")]);
        let cases: Vec<(LabelSelector, bool)> = vec![
            (LabelSelector::default(), true),
            (
                LabelSelector {
                    match_labels: Some(labels(&[("app", "web")])),
                    ..Default::default()
                },
                true,
            ),
            (
                LabelSelector {
                    match_labels: Some(labels(&[("app", "db")])),
                    ..Default::default()
                },
                false,
            ),
            (
                LabelSelector {
                    match_expressions: Some(vec![expr("tier", "In", &["fe", "be"])]),
                    ..Default::default()
                },
                true,
            ),
            (
                LabelSelector {
                    match_expressions: Some(vec![expr("tier", "NotIn", &["fe"])]),
                    ..Default::default()
                },
                false,
            ),
            (
                LabelSelector {
                    match_expressions: Some(vec![expr("zone", "NotIn", &["a"])]),
                    ..Default::default()
                },
                true,
            ),
            (
                LabelSelector {
                    match_expressions: Some(vec![expr("zone", "Exists", &[])]),
                    ..Default::default()
                },
                false,
            ),
            (
                LabelSelector {
                    match_expressions: Some(vec![expr("zone", "DoesNotExist", &[])]),
                    ..Default::default()
                },
                true,
            ),
            (
                LabelSelector {
                    match_expressions: Some(vec![expr("app", "Bogus", &[])]),
                    ..Default::default()
                },
                false,
            ),
        ];
        for (i, (sel, want)) in cases.iter().enumerate() {
            assert_eq!(selector_matches(sel, &pod), *want, "case {i}: {sel:?}");
        }
    }

    #[test]
    fn zero_values_do_not_change_a_template() {
        use k8s_openapi::api::core::v1::{
            Container, PodSpec, PodTemplateSpec, ResourceRequirements,
        };
        let plain = PodTemplateSpec {
            metadata: Some(ObjectMeta::default()),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("nginx:1".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        };
        let mut undone = plain.clone();
        undone.metadata = None;
        undone.spec.as_mut().unwrap().containers[0].resources =
            Some(ResourceRequirements::default());
        undone.spec.as_mut().unwrap().containers[0].args = Some(vec![]);
        assert!(semantically_equal(&plain, &undone));
        assert_eq!(template_hash(&plain, None), template_hash(&undone, None));
        let mut other = plain.clone();
        other.spec.as_mut().unwrap().containers[0].image = Some("nginx:2".into());
        assert!(!semantically_equal(&plain, &other));
        assert_ne!(template_hash(&plain, None), template_hash(&other, None));
        assert_ne!(template_hash(&plain, None), template_hash(&plain, Some(1)));
    }

    #[test]
    fn claims_follow_kubernetes_rules() {
        use k8s_openapi::api::apps::v1::ReplicaSet;
        let owner = ObjectMeta {
            name: Some("web".into()),
            uid: Some("uid-web".into()),
            ..Default::default()
        };
        let ours = owner_ref("apps/v1", "Deployment", &owner);
        let theirs = OwnerReference {
            uid: "uid-other".into(),
            controller: Some(true),
            ..Default::default()
        };
        let rs =
            |name: &str, app: &str, owner: Option<&OwnerReference>, deleting: bool| ReplicaSet {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    labels: Some(labels(&[("app", app)])),
                    owner_references: owner.map(|o| vec![o.clone()]),
                    deletion_timestamp: deleting.then_some(Time(Timestamp::MIN)),
                    ..Default::default()
                },
                ..Default::default()
            };
        let candidates = [
            rs("ours-matching", "web", Some(&ours), false),
            rs("ours-relabelled", "db", Some(&ours), false),
            rs("orphan-matching", "web", None, false),
            rs("orphan-other", "db", None, false),
            rs("orphan-deleting", "web", None, true),
            rs("theirs", "web", Some(&theirs), false),
        ];
        let refs: Vec<&ReplicaSet> = candidates.iter().collect();
        let selector = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            ..Default::default()
        };
        let names = |v: &[OwnerChange]| v.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        // (owner being deleted, owned, adopted, released)
        type Case<'a> = (bool, &'a [&'a str], &'a [&'a str], &'a [&'a str]);
        let cases: [Case; 2] = [
            (
                false,
                &["ours-matching", "orphan-matching"],
                &["orphan-matching"],
                &["ours-relabelled"],
            ),
            // An owner being deleted neither adopts nor releases.
            (true, &["ours-matching"], &[], &[]),
        ];
        for (deleting, owned, adopted, released) in cases {
            let mut o = owner.clone();
            o.deletion_timestamp = deleting.then_some(Time(Timestamp::MIN));
            let c = claim(&o, &ours, &selector, &refs, |_| true);
            let got: Vec<String> = c
                .owned
                .iter()
                .map(|r| r.metadata.name.clone().unwrap())
                .collect();
            assert_eq!(got, owned, "deleting={deleting}");
            assert_eq!(names(&c.adopt), adopted, "deleting={deleting}");
            assert_eq!(names(&c.release), released, "deleting={deleting}");
            for a in &c.adopt {
                assert_eq!(a.owner_references, vec![ours.clone()]);
            }
            for r in &c.release {
                assert!(r.owner_references.is_empty());
            }
        }
        // Nothing is claimed by an empty selector.
        let c = claim(&owner, &ours, &LabelSelector::default(), &refs, |_| true);
        assert!(c.adopt.is_empty() && c.owned.is_empty());
    }

    #[test]
    fn safe_encode_maps_digits_like_kubernetes() {
        // Kubernetes' pod-template-hash values are made of these ten characters only.
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
        assert_eq!(fnv32a(b""), 0x811c9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c292c);
    }
}
