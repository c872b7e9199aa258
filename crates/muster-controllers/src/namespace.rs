//! Namespace deletion: while a namespace is Terminating, everything in it is deleted; when
//! nothing is left, the `kubernetes` finalizer is removed and the API server drops it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::util::Timestamp;

pub const FINALIZER: &str = "kubernetes";

/// What is still in the namespace, per resource (`pods.`, `deployments.apps`, as Kubernetes
/// names them in these conditions).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Remaining {
    pub instances: BTreeMap<String, usize>,
    /// Finalizers still on the remaining objects, with how many objects carry each.
    pub finalizers: BTreeMap<String, usize>,
    /// Resource types whose deletion failed, with the error.
    pub failures: Vec<String>,
}

impl Remaining {
    pub fn is_empty(&self) -> bool {
        self.instances.values().all(|n| *n == 0)
    }
}

pub fn is_terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
}

pub fn has_finalizer(ns: &Namespace) -> bool {
    ns.spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

/// The namespace as sent to `PUT /api/v1/namespaces/<ns>/finalize`: the same, minus our
/// finalizer.
pub fn finalized(ns: &Namespace) -> Namespace {
    let mut out = ns.clone();
    if let Some(spec) = out.spec.as_mut() {
        spec.finalizers = Some(
            spec.finalizers
                .iter()
                .flatten()
                .filter(|f| f.as_str() != FINALIZER)
                .cloned()
                .collect(),
        );
    }
    out
}

fn cond(
    type_: &str,
    on: bool,
    reason: &str,
    message: String,
    old: &[NamespaceCondition],
    now: Timestamp,
) -> NamespaceCondition {
    let status = if on { "True" } else { "False" };
    let prev = old.iter().find(|c| c.type_ == type_);
    let unchanged = prev.is_some_and(|p| p.status == status && p.reason.as_deref() == Some(reason));
    NamespaceCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: if unchanged {
            prev.and_then(|p| p.last_transition_time.clone())
        } else {
            Some(Time(now))
        },
    }
}

/// The five deletion conditions Kubernetes reports on a Terminating namespace.
pub fn conditions(
    rem: &Remaining,
    old: &[NamespaceCondition],
    now: Timestamp,
) -> Vec<NamespaceCondition> {
    let content: Vec<String> = rem
        .instances
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r} has {n} resource instances"))
        .collect();
    let fins: Vec<String> = rem
        .finalizers
        .iter()
        .map(|(f, n)| format!("{f} in {n} resource instances"))
        .collect();
    vec![
        cond(
            "NamespaceDeletionDiscoveryFailure",
            false,
            "ResourcesDiscovered",
            "All resources successfully discovered".into(),
            old,
            now,
        ),
        cond(
            "NamespaceDeletionGroupVersionParsingFailure",
            false,
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".into(),
            old,
            now,
        ),
        if rem.failures.is_empty() {
            cond(
                "NamespaceDeletionContentFailure",
                false,
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization".into(),
                old,
                now,
            )
        } else {
            cond(
                "NamespaceDeletionContentFailure",
                true,
                "ContentDeletionFailed",
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    rem.failures.len(),
                    rem.failures.join(", ")
                ),
                old,
                now,
            )
        },
        if content.is_empty() {
            cond(
                "NamespaceContentRemaining",
                false,
                "ContentRemoved",
                "All content successfully removed".into(),
                old,
                now,
            )
        } else {
            cond(
                "NamespaceContentRemaining",
                true,
                "SomeResourcesRemain",
                format!("Some resources are remaining: {}", content.join(", ")),
                old,
                now,
            )
        },
        if fins.is_empty() {
            cond(
                "NamespaceFinalizersRemaining",
                false,
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished".into(),
                old,
                now,
            )
        } else {
            cond(
                "NamespaceFinalizersRemaining",
                true,
                "SomeFinalizersRemain",
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    fins.join(", ")
                ),
                old,
                now,
            )
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::ts;
    use k8s_openapi::api::core::v1::NamespaceSpec;

    fn summary(cs: &[NamespaceCondition]) -> Vec<String> {
        cs.iter()
            .map(|c| {
                format!(
                    "{}={} {}: {}",
                    c.type_,
                    c.status,
                    c.reason.clone().unwrap(),
                    c.message.clone().unwrap()
                )
            })
            .collect()
    }

    #[test]
    fn conditions_table() {
        let now = ts(5).0;
        let empty = Remaining::default();
        let got = summary(&conditions(&empty, &[], now));
        assert_eq!(
            got[2],
            "NamespaceDeletionContentFailure=False ContentDeleted: All content successfully deleted, may be waiting on finalization"
        );
        assert_eq!(
            got[3],
            "NamespaceContentRemaining=False ContentRemoved: All content successfully removed"
        );
        assert_eq!(
            got[4],
            "NamespaceFinalizersRemaining=False ContentHasNoFinalizers: All content-preserving finalizers finished"
        );
        let rem = Remaining {
            instances: [
                ("pods.".to_string(), 3),
                ("deployments.apps".to_string(), 0),
            ]
            .into(),
            finalizers: [("orphan".to_string(), 1)].into(),
            failures: vec!["secrets: forbidden".into()],
        };
        assert!(!rem.is_empty());
        let got = summary(&conditions(&rem, &[], now));
        assert_eq!(
            got[2],
            "NamespaceDeletionContentFailure=True ContentDeletionFailed: Failed to delete all resource types, 1 remaining: secrets: forbidden"
        );
        assert_eq!(
            got[3],
            "NamespaceContentRemaining=True SomeResourcesRemain: Some resources are remaining: pods. has 3 resource instances"
        );
        assert_eq!(
            got[4],
            "NamespaceFinalizersRemaining=True SomeFinalizersRemain: Some content in the namespace has finalizers remaining: orphan in 1 resource instances"
        );
        // Transition times only move when a condition changes.
        let first = conditions(&empty, &[], ts(1).0);
        let again = conditions(&empty, &first, ts(9).0);
        assert_eq!(first, again);
    }

    #[test]
    fn finalize_removes_only_our_finalizer() {
        let ns = Namespace {
            spec: Some(NamespaceSpec {
                finalizers: Some(vec!["kubernetes".into(), "example.com/x".into()]),
            }),
            ..Default::default()
        };
        assert!(has_finalizer(&ns));
        let f = finalized(&ns);
        assert!(!has_finalizer(&f));
        assert_eq!(f.spec.unwrap().finalizers.unwrap(), vec!["example.com/x"]);
    }
}
