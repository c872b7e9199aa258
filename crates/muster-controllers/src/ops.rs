//! API writes that several drivers make the same way: status patches, deletes that accept
//! "already gone", ownerReference changes, and creating/deleting a workload's pods with the
//! events Kubernetes' controllers record for them.

use std::fmt::Debug;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::driver::{Ctx, error_message, is_status, record};
use crate::runtime::Cache;
use crate::util::OwnerChange;

/// Concurrent API calls per sync when creating or deleting pods.
pub const FANOUT: usize = 32;

/// Merge-patches `name` (its status subresource when `status`) and stores the answer in
/// `cache`; an object that is gone meanwhile is not an error (its deletion is what happens
/// next).
async fn merge_patch<K>(
    api: &Api<K>,
    cache: &Cache<K>,
    name: &str,
    status: bool,
    patch: serde_json::Value,
) -> kube::Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let (pp, patch) = (PatchParams::default(), Patch::Merge(&patch));
    let result = if status {
        api.patch_status(name, &pp, &patch).await
    } else {
        api.patch(name, &pp, &patch).await
    };
    match result {
        Ok(updated) => {
            cache.refresh(updated);
            Ok(())
        }
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes the status of `name` (see `merge_patch`).
pub async fn patch_status<K, S>(
    api: &Api<K>,
    cache: &Cache<K>,
    name: &str,
    status: &S,
) -> kube::Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    merge_patch(api, cache, name, true, json!({ "status": status })).await
}

/// Deletes `name`; "not found" counts as done. Returns the object when it still exists
/// (terminating: graceful deletion or finalizers).
pub async fn delete<K>(api: &Api<K>, name: &str, dp: &DeleteParams) -> kube::Result<Option<K>>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, dp).await {
        Ok(either) => Ok(either.left()),
        Err(e) if is_status(&e, 404) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes an adoption or release: the complete ownerReferences, guarded by the
/// resourceVersion they were computed from (see `merge_patch`).
pub async fn set_owner_references<K>(
    api: &Api<K>,
    cache: &Cache<K>,
    change: &OwnerChange,
) -> kube::Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let patch = json!({"metadata": {
        "ownerReferences": change.owner_references,
        "resourceVersion": change.resource_version,
    }});
    merge_patch(api, cache, &change.name, false, patch).await
}

/// A workload that creates and deletes pods, for the wording of its events.
pub enum PodOwner {
    ReplicaSet,
    StatefulSet,
}

impl PodOwner {
    fn component(&self) -> &'static str {
        match self {
            PodOwner::ReplicaSet => "replicaset-controller",
            PodOwner::StatefulSet => "statefulset-controller",
        }
    }

    /// (reason, message) of the event for creating (`create`) or deleting pod `pod` of
    /// workload `owner`, with the API's error message if it failed. The same words as
    /// Kubernetes' replicaset and statefulset controllers.
    pub fn event(
        &self,
        create: bool,
        pod: &str,
        owner: &str,
        error: Option<&str>,
    ) -> (&'static str, String) {
        let reason = match (create, error.is_some()) {
            (true, false) => "SuccessfulCreate",
            (true, true) => "FailedCreate",
            (false, false) => "SuccessfulDelete",
            (false, true) => "FailedDelete",
        };
        let verb = if create { "create" } else { "delete" };
        let message = match (self, error) {
            (PodOwner::ReplicaSet, None) if create => format!("Created pod: {pod}"),
            (PodOwner::ReplicaSet, None) => format!("Deleted pod: {pod}"),
            (PodOwner::ReplicaSet, Some(e)) if create => format!("Error creating: {e}"),
            (PodOwner::ReplicaSet, Some(e)) => format!("Error deleting: {e}"),
            (PodOwner::StatefulSet, None) => {
                format!("{verb} Pod {pod} in StatefulSet {owner} successful")
            }
            (PodOwner::StatefulSet, Some(e)) => {
                format!("{verb} Pod {pod} in StatefulSet {owner} failed error: {e}")
            }
        };
        (reason, message)
    }

    /// A StatefulSet's pod of the same name may still be terminating: creating it again
    /// waits for that deletion (which queues the set), it is not a failure.
    fn conflict_is_wait(&self) -> bool {
        matches!(self, PodOwner::StatefulSet)
    }
}

/// Runs `call` with the pods API of `ns` on every item, up to FANOUT at a time.
async fn fanout<I, T, F, Fut>(ctx: &Ctx, ns: &str, items: I, call: F) -> Vec<T>
where
    I: IntoIterator,
    F: Fn(Api<Pod>, I::Item) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    futures::stream::iter(items)
        .map(|item| call(api.clone(), item))
        .buffer_unordered(FANOUT)
        .collect()
        .await
}

/// Records the event for creating or deleting one pod of `owner`.
fn report(
    ctx: &Ctx,
    kind: &PodOwner,
    owner: &ObjectReference,
    create: bool,
    pod: &str,
    error: Option<&kube::Error>,
) {
    let owner_name = owner.name.as_deref().unwrap_or("");
    let message = error.map(error_message);
    let (reason, text) = kind.event(create, pod, owner_name, message.as_deref());
    let type_ = if error.is_some() { "Warning" } else { "Normal" };
    record(ctx, kind.component(), owner.clone(), type_, reason, text);
}

/// Creates `pods` (up to FANOUT at a time) for the workload `owner`, records an event for
/// each outcome and puts the created pods in the cache. Returns the first failure.
pub async fn create_pods(
    ctx: &Ctx,
    ns: &str,
    kind: PodOwner,
    owner: &ObjectReference,
    pods: Vec<Pod>,
) -> Option<kube::Error> {
    let results = fanout(ctx, ns, pods, |api, pod| async move {
        api.create(&PostParams::default(), &pod)
            .await
            .map_err(|e| (pod, e))
    })
    .await;
    let mut first_error = None;
    for result in results {
        match result {
            Ok(created) => {
                report(ctx, &kind, owner, true, &created.name_any(), None);
                ctx.pods.upsert(created);
            }
            Err((_, e)) if kind.conflict_is_wait() && is_status(&e, 409) => {}
            Err((pod, e)) => {
                let name = pod.metadata.name.or(pod.metadata.generate_name);
                report(
                    ctx,
                    &kind,
                    owner,
                    true,
                    name.as_deref().unwrap_or(""),
                    Some(&e),
                );
                first_error.get_or_insert(e);
            }
        }
    }
    first_error
}

/// Deletes the pods `names` of the workload `owner` (up to FANOUT at a time), records an
/// event for each outcome and updates the cache. Returns the first failure.
pub async fn delete_pods(
    ctx: &Ctx,
    ns: &str,
    kind: PodOwner,
    owner: &ObjectReference,
    names: Vec<String>,
) -> Option<kube::Error> {
    let results = fanout(ctx, ns, names, |api, name| async move {
        let r = delete(&api, &name, &DeleteParams::default()).await;
        (name, r)
    })
    .await;
    let mut first_error = None;
    for (name, result) in results {
        report(ctx, &kind, owner, false, &name, result.as_ref().err());
        match result {
            // Still there while it terminates.
            Ok(Some(p)) if p.metadata.deletion_timestamp.is_some() => ctx.pods.refresh(p),
            Ok(_) => {
                ctx.pods.remove(&format!("{ns}/{name}"));
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_events_use_the_kubernetes_wording() {
        let cases = [
            (
                PodOwner::ReplicaSet,
                true,
                None,
                ("SuccessfulCreate", "Created pod: web-x"),
            ),
            (
                PodOwner::ReplicaSet,
                false,
                None,
                ("SuccessfulDelete", "Deleted pod: web-x"),
            ),
            (
                PodOwner::ReplicaSet,
                true,
                Some("quota exceeded"),
                ("FailedCreate", "Error creating: quota exceeded"),
            ),
            (
                PodOwner::ReplicaSet,
                false,
                Some("timeout"),
                ("FailedDelete", "Error deleting: timeout"),
            ),
            (
                PodOwner::StatefulSet,
                true,
                None,
                (
                    "SuccessfulCreate",
                    "create Pod web-x in StatefulSet web successful",
                ),
            ),
            (
                PodOwner::StatefulSet,
                false,
                None,
                (
                    "SuccessfulDelete",
                    "delete Pod web-x in StatefulSet web successful",
                ),
            ),
            (
                PodOwner::StatefulSet,
                true,
                Some("denied"),
                (
                    "FailedCreate",
                    "create Pod web-x in StatefulSet web failed error: denied",
                ),
            ),
        ];
        for (kind, create, error, (reason, message)) in cases {
            let got = kind.event(create, "web-x", "web", error);
            assert_eq!(got, (reason, message.to_string()));
        }
    }
}
