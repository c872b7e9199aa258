//! Drivers for the garbage collector and the namespace controller.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    Preconditions, PropagationPolicy,
};
use kube::discovery::{Discovery, Scope, verbs};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::driver::{Ctx, SyncResult, is_status};
use crate::gc::{self, DependentAction, OwnerAction, OwnerState};
use crate::namespace;
use crate::runtime::Cache;
use crate::util::{self, Timestamp, split_key};

/// The kinds whose ownerReferences the collector follows (the ones muster's controllers
/// create or own). References to other kinds are left alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pod,
    ReplicaSet,
    Deployment,
    StatefulSet,
    ControllerRevision,
    EndpointSlice,
    Service,
}

const KINDS: [Kind; 7] = [
    Kind::Pod,
    Kind::ReplicaSet,
    Kind::Deployment,
    Kind::StatefulSet,
    Kind::ControllerRevision,
    Kind::EndpointSlice,
    Kind::Service,
];

fn meta_of<K: Resource>(c: &Cache<K>, key: &str) -> Option<ObjectMeta> {
    c.get(key).map(|o| o.meta().clone())
}

fn metas_by_owner<K: Resource>(c: &Cache<K>, uid: &str) -> Vec<ObjectMeta> {
    c.by_index(&format!("owner:{uid}"))
        .iter()
        .map(|o| o.meta().clone())
        .collect()
}

impl Kind {
    pub fn parse(kind: &str) -> Option<Kind> {
        KINDS.into_iter().find(|k| k.name() == kind)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::ControllerRevision => "ControllerRevision",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Service => "Service",
        }
    }

    fn api_resource(self) -> ApiResource {
        match self {
            Kind::Pod => ApiResource::erase::<Pod>(&()),
            Kind::ReplicaSet => ApiResource::erase::<ReplicaSet>(&()),
            Kind::Deployment => ApiResource::erase::<Deployment>(&()),
            Kind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
            Kind::ControllerRevision => ApiResource::erase::<ControllerRevision>(&()),
            Kind::EndpointSlice => ApiResource::erase::<EndpointSlice>(&()),
            Kind::Service => ApiResource::erase::<Service>(&()),
        }
    }

    fn cached(self, ctx: &Ctx, key: &str) -> Option<ObjectMeta> {
        match self {
            Kind::Pod => meta_of(&ctx.pods, key),
            Kind::ReplicaSet => meta_of(&ctx.replicasets, key),
            Kind::Deployment => meta_of(&ctx.deployments, key),
            Kind::StatefulSet => meta_of(&ctx.statefulsets, key),
            Kind::ControllerRevision => meta_of(&ctx.revisions, key),
            Kind::EndpointSlice => meta_of(&ctx.slices, key),
            Kind::Service => meta_of(&ctx.services, key),
        }
    }

    fn api(self, ctx: &Ctx, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(ctx.client.clone(), ns, &self.api_resource())
    }
}

/// Everything in the caches that names `uid` as an owner.
fn dependents(ctx: &Ctx, uid: &str) -> Vec<(Kind, ObjectMeta)> {
    let mut out = Vec::new();
    let mut add = |k: Kind, v: Vec<ObjectMeta>| out.extend(v.into_iter().map(|m| (k, m)));
    add(Kind::Pod, metas_by_owner(&ctx.pods, uid));
    add(Kind::ReplicaSet, metas_by_owner(&ctx.replicasets, uid));
    add(Kind::Deployment, metas_by_owner(&ctx.deployments, uid));
    add(Kind::StatefulSet, metas_by_owner(&ctx.statefulsets, uid));
    add(
        Kind::ControllerRevision,
        metas_by_owner(&ctx.revisions, uid),
    );
    add(Kind::EndpointSlice, metas_by_owner(&ctx.slices, uid));
    out
}

fn blocks(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == uid && r.block_owner_deletion == Some(true))
}

/// The state of one owner: from the cache, confirmed with the API before calling it gone
/// (a cache can lag behind a just-created owner).
async fn owner_state(ctx: &Ctx, ns: &str, r: &OwnerReference) -> anyhow::Result<OwnerState> {
    let Some(kind) = Kind::parse(&r.kind) else {
        return Ok(OwnerState::Present);
    };
    let cached = kind.cached(ctx, &format!("{ns}/{}", r.name));
    let state = gc::owner_state_of(cached.as_ref(), &r.uid);
    if state != OwnerState::Missing {
        return Ok(state);
    }
    let live = kind.api(ctx, ns).get_opt(&r.name).await?;
    Ok(gc::owner_state_of(
        live.as_ref().map(|o| &o.metadata),
        &r.uid,
    ))
}

pub fn sync_gc(ctx: Arc<Ctx>, key: String) -> BoxFuture<'static, SyncResult> {
    async move {
        if let Some(uid) = key.strip_prefix("owner:") {
            for (kind, meta) in dependents(&ctx, uid) {
                ctx.q_gc
                    .add(format!("{}:{}", kind.name(), util::key(&meta)));
            }
            return Ok(None);
        }
        let Some((kind, obj_key)) = key.split_once(':') else {
            return Ok(None);
        };
        let Some(kind) = Kind::parse(kind) else {
            return Ok(None);
        };
        let Some(meta) = kind.cached(&ctx, obj_key) else {
            return Ok(None);
        };
        let (ns, name) = split_key(obj_key);
        let api = kind.api(&ctx, ns);
        let uid = meta.uid.clone().unwrap_or_default();

        // As an owner being deleted.
        let deps = dependents(&ctx, &uid);
        let blocking = deps.iter().filter(|(_, m)| blocks(m, &uid)).count();
        match gc::owner_action(&meta, blocking) {
            Some(OwnerAction::Orphan) => {
                for (dkind, dmeta) in &deps {
                    let refs: Vec<OwnerReference> = dmeta
                        .owner_references
                        .iter()
                        .flatten()
                        .filter(|r| r.uid != uid)
                        .cloned()
                        .collect();
                    let patch = json!({"metadata": {
                        "ownerReferences": refs,
                        "resourceVersion": dmeta.resource_version,
                    }});
                    let dns = dmeta.namespace.as_deref().unwrap_or("");
                    let dname = dmeta.name.as_deref().unwrap_or("");
                    match dkind
                        .api(&ctx, dns)
                        .patch(dname, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => {}
                        Err(e) if is_status(&e, 404) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                remove_finalizer(&api, name, &meta, gc::FINALIZER_ORPHAN).await?;
                return Ok(None);
            }
            Some(OwnerAction::FinishForeground) => {
                remove_finalizer(&api, name, &meta, gc::FINALIZER_FOREGROUND).await?;
                return Ok(None);
            }
            Some(OwnerAction::Wait) => {
                for (dkind, dmeta) in deps {
                    ctx.q_gc
                        .add(format!("{}:{}", dkind.name(), util::key(&dmeta)));
                }
                // Dependents going away queue this owner again; this is a safety net.
                return Ok(Some(Duration::from_secs(5)));
            }
            None => {}
        }

        // As a dependent.
        if meta.owner_references.as_ref().is_none_or(|r| r.is_empty()) || util::is_deleting(&meta) {
            return Ok(None);
        }
        let mut states = Vec::new();
        for r in meta.owner_references.iter().flatten() {
            states.push((r.uid.clone(), owner_state(&ctx, ns, r).await?));
        }
        let state_of = |r: &OwnerReference| {
            states
                .iter()
                .find(|(u, _)| *u == r.uid)
                .map(|(_, s)| *s)
                .unwrap_or(OwnerState::Present)
        };
        let has_blocking = deps.iter().any(|(_, m)| blocks(m, &uid));
        match gc::dependent_action(&meta, state_of, has_blocking) {
            Some(DependentAction::Delete { foreground }) => {
                let dp = DeleteParams {
                    propagation_policy: Some(if foreground {
                        PropagationPolicy::Foreground
                    } else {
                        PropagationPolicy::Background
                    }),
                    preconditions: Some(Preconditions {
                        uid: meta.uid.clone(),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match api.delete(name, &dp).await {
                    Ok(_) => {}
                    Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Some(DependentAction::SetOwnerReferences(refs)) => {
                let patch = json!({"metadata": {
                    "ownerReferences": refs,
                    "resourceVersion": meta.resource_version,
                }});
                match api
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_status(&e, 404) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            None => {}
        }
        Ok(None)
    }
    .boxed()
}

async fn remove_finalizer(
    api: &Api<DynamicObject>,
    name: &str,
    meta: &ObjectMeta,
    f: &str,
) -> anyhow::Result<()> {
    let patch = json!({"metadata": {
        "finalizers": gc::without_finalizer(meta, f),
        "resourceVersion": meta.resource_version,
    }});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

// ---------------------------------------------------------------------------------------
// Namespaces

async fn delete_collection(api: &Api<DynamicObject>) -> kube::Result<()> {
    match api
        .delete_collection(&DeleteParams::background(), &ListParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn delete_one_by_one(api: &Api<DynamicObject>) -> kube::Result<()> {
    let list = api.list(&ListParams::default()).await?;
    let mut first_error = None;
    for obj in list.items {
        if obj.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Err(e) = crate::ops::delete(api, &obj.name_any(), &DeleteParams::background()).await
        {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// How Kubernetes names a resource in namespace conditions: `pods.`, `deployments.apps`.
fn resource_label(ar: &ApiResource) -> String {
    format!("{}.{}", ar.plural, ar.group)
}

pub fn sync_namespace(ctx: Arc<Ctx>, key: String) -> BoxFuture<'static, SyncResult> {
    async move {
        let Some(ns) = ctx.namespaces.get(&format!("/{key}")) else {
            return Ok(None);
        };
        if !namespace::is_terminating(&ns) || !namespace::has_finalizer(&ns) {
            return Ok(None);
        }
        let name = ns.name_any();
        let discovery = Discovery::new(ctx.client.clone()).run().await?;
        // (resource, whether it can be deleted as a collection)
        let mut targets: Vec<(ApiResource, bool)> = Vec::new();
        for group in discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                if caps.scope == Scope::Namespaced
                    && caps.supports_operation(verbs::LIST)
                    && caps.supports_operation(verbs::DELETE)
                {
                    let collection = caps.supports_operation(verbs::DELETE_COLLECTION);
                    targets.push((ar, collection));
                }
            }
        }
        let mut rem = namespace::Remaining::default();
        for (ar, collection) in &targets {
            let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &name, ar);
            // One DELETE of the collection per resource, as Kubernetes' namespace controller
            // does; one by one only where the resource has no deletecollection.
            let result = if *collection {
                delete_collection(&api).await
            } else {
                delete_one_by_one(&api).await
            };
            if let Err(e) = result {
                rem.failures.push(format!("{}: {e}", resource_label(ar)));
            }
        }
        // What is still there after the deletes (graceful pods, finalizers).
        for (ar, _) in &targets {
            let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &name, ar);
            if let Ok(list) = api.list(&ListParams::default()).await
                && !list.items.is_empty()
            {
                *rem.instances.entry(resource_label(ar)).or_default() += list.items.len();
                for obj in &list.items {
                    for f in obj.metadata.finalizers.iter().flatten() {
                        *rem.finalizers.entry(f.clone()).or_default() += 1;
                    }
                }
            }
        }
        let old = ns
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let conditions = namespace::conditions(&rem, &old, Timestamp::now());
        let api: Api<Namespace> = Api::all(ctx.client.clone());
        let phase = ns.status.as_ref().and_then(|s| s.phase.as_deref());
        if conditions != old || phase != Some("Terminating") {
            let patch = json!({"status": {"phase": "Terminating", "conditions": conditions}});
            match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        if rem.is_empty() && rem.failures.is_empty() {
            let fresh = api.get(&name).await?;
            let done: Namespace = api
                .replace_subresource("finalize", &name, &PostParams::default(), &namespace::finalized(&fresh))
                .await?;
            tracing::info!(namespace = %name, finalizers = ?done.spec.and_then(|s| s.finalizers), "namespace finalized");
            return Ok(None);
        }
        Ok(Some(Duration::from_millis(500)))
    }
    .boxed()
}
