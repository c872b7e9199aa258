//! Drivers for Deployments and StatefulSets: run the pure reconcilers on cached state and
//! execute their plans.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::driver::{Ctx, SyncResult, is_status, record, reference};
use crate::ops::{self, PodOwner};
use crate::util::{self, Timestamp, split_key};
use crate::{deployment, statefulset};

const DEPLOYMENT_CONTROLLER: &str = "deployment-controller";

fn controlled<K: kube::Resource>(items: Vec<Arc<K>>, uid: &str) -> Vec<Arc<K>> {
    items
        .into_iter()
        .filter(|o| util::controller_ref(o.meta()).is_some_and(|r| r.uid == uid))
        .collect()
}

pub fn sync_deployment(ctx: Arc<Ctx>, key: String) -> BoxFuture<'static, SyncResult> {
    async move {
        let Some(d) = ctx.deployments.get(&key) else {
            return Ok(None);
        };
        let (ns, _) = split_key(&key);
        let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), ns);
        let d_api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
        // Claim ReplicaSets as Kubernetes does: adopt orphans that match the selector,
        // release ours that stopped matching.
        let in_namespace = ctx.replicasets.by_index(&format!("ns:{ns}"));
        let candidates: Vec<&ReplicaSet> = in_namespace.iter().map(|r| r.as_ref()).collect();
        let selector = d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        let claim = util::claim(
            &d.metadata,
            &util::owner_ref("apps/v1", "Deployment", &d.metadata),
            &selector,
            &candidates,
            |_| true,
        );
        for change in claim.adopt.iter().chain(claim.release.iter()) {
            ops::set_owner_references(&rs_api, &ctx.replicasets, change).await?;
        }
        let rs_refs = claim.owned;
        let mut pods: Vec<Arc<Pod>> = Vec::new();
        for rs in &rs_refs {
            pods.extend(ctx.pods.by_index(&format!(
                "owner:{}",
                rs.metadata.uid.as_deref().unwrap_or("")
            )));
        }
        let pod_refs: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
        let plan = deployment::reconcile(&deployment::Observed {
            deployment: &d,
            replicasets: &rs_refs,
            pods: &pod_refs,
            now: Timestamp::now(),
        });
        let d_ref = reference(d.as_ref());
        if let Some(rs) = plan.create {
            match rs_api.create(&PostParams::default(), &rs).await {
                Ok(created) => {
                    let size = created.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                    record(
                        &ctx,
                        DEPLOYMENT_CONTROLLER,
                        d_ref.clone(),
                        "Normal",
                        "ScalingReplicaSet",
                        format!(
                            "Scaled up replica set {} from 0 to {size}",
                            created.name_any()
                        ),
                    );
                    ctx.replicasets.upsert(created);
                }
                Err(e) if is_status(&e, 409) => {
                    // A ReplicaSet of that name exists but is not ours (or not in the cache
                    // yet): if it is someone else's, count a collision so the hash changes.
                    let existing = rs_api.get(&rs.name_any()).await?;
                    if !util::is_controlled_by(&existing.metadata, &d.metadata) {
                        let count = d
                            .status
                            .as_ref()
                            .and_then(|s| s.collision_count)
                            .unwrap_or(0)
                            + 1;
                        let status = json!({"collisionCount": count});
                        ops::patch_status(&d_api, &ctx.deployments, &d.name_any(), &status).await?;
                    } else {
                        ctx.replicasets.upsert(existing);
                    }
                    return Ok(Some(Duration::from_millis(10)));
                }
                Err(e) => return Err(e.into()),
            }
        }
        for s in &plan.scale {
            let patch = json!({
                "metadata": {"annotations": s.annotations},
                "spec": {"replicas": s.to},
            });
            let updated = rs_api
                .patch(
                    &s.replicaset,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            if s.from != s.to {
                let dir = if s.to > s.from { "up" } else { "down" };
                record(
                    &ctx,
                    DEPLOYMENT_CONTROLLER,
                    d_ref.clone(),
                    "Normal",
                    "ScalingReplicaSet",
                    format!(
                        "Scaled {dir} replica set {} from {} to {}",
                        s.replicaset, s.from, s.to
                    ),
                );
            }
            ctx.replicasets.refresh(updated);
        }
        for name in &plan.delete {
            ops::delete(&rs_api, name, &DeleteParams::background()).await?;
        }
        if let Some(status) = plan.status {
            ops::patch_status(&d_api, &ctx.deployments, &d.name_any(), &status).await?;
        }
        Ok(plan.requeue_after.map(Duration::from_secs))
    }
    .boxed()
}

pub fn sync_statefulset(ctx: Arc<Ctx>, key: String) -> BoxFuture<'static, SyncResult> {
    async move {
        let Some(sts) = ctx.statefulsets.get(&key) else {
            return Ok(None);
        };
        let (ns, _) = split_key(&key);
        let uid = sts.metadata.uid.clone().unwrap_or_default();
        let pods = controlled(ctx.pods.by_index(&format!("owner:{uid}")), &uid);
        let revs = controlled(ctx.revisions.by_index(&format!("owner:{uid}")), &uid);
        let pod_refs: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
        let rev_refs: Vec<&ControllerRevision> = revs.iter().map(|r| r.as_ref()).collect();
        let plan = statefulset::reconcile(&statefulset::Observed {
            sts: &sts,
            pods: &pod_refs,
            revisions: &rev_refs,
            now: Timestamp::now(),
        });
        let pp = PostParams::default();
        let sts_ref = reference(sts.as_ref());
        let rev_api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), ns);
        if let Some(rev) = plan.create_revision {
            match rev_api.create(&pp, &rev).await {
                Ok(created) => {
                    ctx.revisions.upsert(created);
                }
                Err(e) if is_status(&e, 409) => {
                    let existing = rev_api.get(&rev.name_any()).await?;
                    ctx.revisions.upsert(existing);
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Pods are created before any is deleted, as the plan orders them; a failure stops
        // the sync (it is retried with backoff).
        if let Some(e) =
            ops::create_pods(&ctx, ns, PodOwner::StatefulSet, &sts_ref, plan.create_pods).await
        {
            return Err(e.into());
        }
        if let Some(e) =
            ops::delete_pods(&ctx, ns, PodOwner::StatefulSet, &sts_ref, plan.delete_pods).await
        {
            return Err(e.into());
        }
        for name in &plan.delete_revisions {
            ops::delete(&rev_api, name, &DeleteParams::default()).await?;
        }
        if let Some(status) = plan.status {
            let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
            ops::patch_status(&api, &ctx.statefulsets, &sts.name_any(), &status).await?;
        }
        Ok(plan.requeue_after.map(Duration::from_secs))
    }
    .boxed()
}
