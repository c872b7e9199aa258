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
use crate::util::{self, Timestamp, split_key};
use crate::{deployment, statefulset};

const DEPLOYMENT_CONTROLLER: &str = "deployment-controller";
const STATEFULSET_CONTROLLER: &str = "statefulset-controller";

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
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let rss = controlled(ctx.replicasets.by_index(&format!("owner:{uid}")), &uid);
        let mut pods: Vec<Arc<Pod>> = Vec::new();
        for rs in &rss {
            pods.extend(ctx.pods.by_index(&format!(
                "owner:{}",
                rs.metadata.uid.as_deref().unwrap_or("")
            )));
        }
        let rs_refs: Vec<&ReplicaSet> = rss.iter().map(|r| r.as_ref()).collect();
        let pod_refs: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
        let plan = deployment::reconcile(&deployment::Observed {
            deployment: &d,
            replicasets: &rs_refs,
            pods: &pod_refs,
            now: Timestamp::now(),
        });
        let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), ns);
        let d_api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
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
                        let patch = json!({"status": {"collisionCount": count}});
                        let updated = d_api
                            .patch_status(
                                &d.name_any(),
                                &PatchParams::default(),
                                &Patch::Merge(&patch),
                            )
                            .await?;
                        ctx.deployments.refresh(updated);
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
            match rs_api.delete(name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(status) = plan.status {
            let patch = json!({ "status": status });
            match d_api
                .patch_status(
                    &d.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(updated) => {
                    ctx.deployments.refresh(updated);
                }
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(e.into()),
            }
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
        let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
        for pod in plan.create_pods {
            let name = pod.name_any();
            match pod_api.create(&pp, &pod).await {
                Ok(created) => {
                    record(
                        &ctx,
                        STATEFULSET_CONTROLLER,
                        sts_ref.clone(),
                        "Normal",
                        "SuccessfulCreate",
                        format!(
                            "create Pod {name} in StatefulSet {} successful",
                            sts.name_any()
                        ),
                    );
                    ctx.pods.upsert(created);
                }
                // The old pod of that name is still terminating: its deletion requeues us.
                Err(e) if is_status(&e, 409) => {}
                Err(e) => {
                    record(
                        &ctx,
                        STATEFULSET_CONTROLLER,
                        sts_ref.clone(),
                        "Warning",
                        "FailedCreate",
                        format!(
                            "create Pod {name} in StatefulSet {} failed error: {e}",
                            sts.name_any()
                        ),
                    );
                    return Err(e.into());
                }
            }
        }
        for name in &plan.delete_pods {
            match pod_api.delete(name, &DeleteParams::default()).await {
                Ok(either) => {
                    record(
                        &ctx,
                        STATEFULSET_CONTROLLER,
                        sts_ref.clone(),
                        "Normal",
                        "SuccessfulDelete",
                        format!(
                            "delete Pod {name} in StatefulSet {} successful",
                            sts.name_any()
                        ),
                    );
                    match either.left() {
                        // Still there while it terminates.
                        Some(p) if p.metadata.deletion_timestamp.is_some() => ctx.pods.refresh(p),
                        _ => {
                            ctx.pods.remove(&format!("{ns}/{name}"));
                        }
                    }
                }
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for name in &plan.delete_revisions {
            match rev_api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(status) = plan.status {
            let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
            let patch = json!({ "status": status });
            match api
                .patch_status(
                    &sts.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(updated) => {
                    ctx.statefulsets.refresh(updated);
                }
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(plan.requeue_after.map(Duration::from_secs))
    }
    .boxed()
}
