//! Garbage collection by ownerReferences: dependents of deleted owners go (background),
//! owners deleted in the foreground wait for their dependents, owners deleted with the
//! orphan policy let go of theirs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

pub const FINALIZER_FOREGROUND: &str = "foregroundDeletion";
pub const FINALIZER_ORPHAN: &str = "orphan";

/// What is known about one owner reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    /// The owner exists (with that uid) and is not waiting for its dependents.
    Present,
    /// The owner exists and is being deleted in the foreground: dependents go first.
    WaitingForDependents,
    /// No object with that uid: the dependent is garbage (once confirmed with the API).
    Missing,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DependentAction {
    /// Delete the dependent; `foreground` when an owner waits on it and it has dependents of
    /// its own that block.
    Delete { foreground: bool },
    /// Keep the dependent but drop references to owners that are gone or going.
    SetOwnerReferences(Vec<OwnerReference>),
}

/// The collector's decision for one dependent, given the state of each of its owners.
pub fn dependent_action(
    meta: &ObjectMeta,
    owner_state: impl Fn(&OwnerReference) -> OwnerState,
    has_blocking_dependents: bool,
) -> Option<DependentAction> {
    let refs = meta.owner_references.as_deref().unwrap_or(&[]);
    if refs.is_empty() || meta.deletion_timestamp.is_some() {
        return None;
    }
    let states: Vec<OwnerState> = refs.iter().map(&owner_state).collect();
    let solid = states.contains(&OwnerState::Present);
    let waiting = states.contains(&OwnerState::WaitingForDependents);
    let dangling = states.contains(&OwnerState::Missing);
    if !waiting && !dangling {
        return None;
    }
    if solid {
        let keep: Vec<OwnerReference> = refs
            .iter()
            .zip(&states)
            .filter(|(_, s)| **s == OwnerState::Present)
            .map(|(r, _)| r.clone())
            .collect();
        return Some(DependentAction::SetOwnerReferences(keep));
    }
    Some(DependentAction::Delete {
        foreground: waiting && has_blocking_dependents,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerAction {
    /// Remove this owner's reference from each named dependent, then the `orphan` finalizer.
    Orphan,
    /// No blocking dependent left: remove the `foregroundDeletion` finalizer.
    FinishForeground,
    /// Dependents still exist: wait (they are deleted through `dependent_action`).
    Wait,
}

fn has_finalizer(meta: &ObjectMeta, f: &str) -> bool {
    meta.finalizers.iter().flatten().any(|x| x == f)
}

/// What to do for an owner that is being deleted, given how many dependents still reference
/// it and how many of those block its deletion.
pub fn owner_action(meta: &ObjectMeta, blocking_dependents: usize) -> Option<OwnerAction> {
    meta.deletion_timestamp.as_ref()?;
    if has_finalizer(meta, FINALIZER_ORPHAN) {
        return Some(OwnerAction::Orphan);
    }
    if has_finalizer(meta, FINALIZER_FOREGROUND) {
        return Some(if blocking_dependents == 0 {
            OwnerAction::FinishForeground
        } else {
            OwnerAction::Wait
        });
    }
    None
}

pub fn owner_state_of(owner: Option<&ObjectMeta>, uid: &str) -> OwnerState {
    match owner {
        Some(m) if m.uid.as_deref() == Some(uid) => {
            if m.deletion_timestamp.is_some() && has_finalizer(m, FINALIZER_FOREGROUND) {
                OwnerState::WaitingForDependents
            } else {
                OwnerState::Present
            }
        }
        _ => OwnerState::Missing,
    }
}

/// The finalizer list without `f`.
pub fn without_finalizer(meta: &ObjectMeta, f: &str) -> Vec<String> {
    meta.finalizers
        .iter()
        .flatten()
        .filter(|x| x.as_str() != f)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::ts;

    fn oref(uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: format!("rs-{uid}"),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn meta(owners: &[&str]) -> ObjectMeta {
        ObjectMeta {
            name: Some("dep".into()),
            owner_references: Some(owners.iter().map(|u| oref(u)).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn dependent_table() {
        use DependentAction::*;
        use OwnerState::*;
        type Case<'a> = (
            &'a [&'a str],
            &'a [OwnerState],
            bool,
            Option<DependentAction>,
        );
        let cases: Vec<Case> = vec![
            (&["a"], &[Present], false, None),
            (
                &["a"],
                &[Missing],
                false,
                Some(Delete { foreground: false }),
            ),
            (
                &["a"],
                &[WaitingForDependents],
                false,
                Some(Delete { foreground: false }),
            ),
            (
                &["a"],
                &[WaitingForDependents],
                true,
                Some(Delete { foreground: true }),
            ),
            (
                &["a", "b"],
                &[Present, Missing],
                false,
                Some(SetOwnerReferences(vec![oref("a")])),
            ),
            (
                &["a", "b"],
                &[Missing, Missing],
                false,
                Some(Delete { foreground: false }),
            ),
            (
                &["a", "b"],
                &[WaitingForDependents, Present],
                false,
                Some(SetOwnerReferences(vec![oref("b")])),
            ),
            (&[], &[], false, None),
        ];
        for (owners, states, blocking, want) in cases {
            let m = meta(owners);
            let got = dependent_action(
                &m,
                |r| states[owners.iter().position(|u| *u == r.uid).unwrap()],
                blocking,
            );
            assert_eq!(got, want, "{owners:?} {states:?}");
        }
        let mut deleting = meta(&["a"]);
        deleting.deletion_timestamp = Some(ts(1));
        assert_eq!(dependent_action(&deleting, |_| Missing, false), None);
    }

    #[test]
    fn owner_table() {
        let with = |fins: &[&str], deleting: bool| ObjectMeta {
            finalizers: Some(fins.iter().map(|s| s.to_string()).collect()),
            deletion_timestamp: deleting.then(|| ts(1)),
            uid: Some("u".into()),
            ..Default::default()
        };
        let cases = [
            (with(&[], false), 0, None),
            (
                with(&[FINALIZER_ORPHAN], true),
                3,
                Some(OwnerAction::Orphan),
            ),
            (
                with(&[FINALIZER_FOREGROUND], true),
                2,
                Some(OwnerAction::Wait),
            ),
            (
                with(&[FINALIZER_FOREGROUND], true),
                0,
                Some(OwnerAction::FinishForeground),
            ),
            (with(&["other"], true), 0, None),
        ];
        for (m, n, want) in cases {
            assert_eq!(owner_action(&m, n), want, "{m:?}");
        }
        assert_eq!(
            owner_state_of(Some(&with(&[], false)), "u"),
            OwnerState::Present
        );
        assert_eq!(
            owner_state_of(Some(&with(&[], false)), "other-uid"),
            OwnerState::Missing
        );
        assert_eq!(owner_state_of(None, "u"), OwnerState::Missing);
        assert_eq!(
            owner_state_of(Some(&with(&[FINALIZER_FOREGROUND], true)), "u"),
            OwnerState::WaitingForDependents
        );
        assert_eq!(
            without_finalizer(&with(&["a", FINALIZER_ORPHAN], true), FINALIZER_ORPHAN),
            vec!["a"]
        );
    }
}
