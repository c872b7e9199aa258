//! The thin IO layer: watches feed caches and queues; workers run the pure reconcilers and
//! execute their actions with a `kube::Client`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{
    Binding, Endpoints, Event, EventSource, Namespace, Node, ObjectReference, Pod, PodCondition,
    Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::runtime::{Cache, Change, Handler, WorkQueue, informer, obj_key};
use crate::util::{self, Labels, Timestamp, split_key};
use crate::{endpoints, events, ops, replicaset, scheduler};

pub type SyncResult = anyhow::Result<Option<Duration>>;
pub type SyncFn = fn(Arc<Ctx>, String) -> BoxFuture<'static, SyncResult>;

/// Everything the workers share.
pub struct Ctx {
    pub client: Client,
    pub identity: String,
    pub pods: Arc<Cache<Pod>>,
    pub services: Arc<Cache<Service>>,
    pub slices: Arc<Cache<EndpointSlice>>,
    pub endpoints: Arc<Cache<Endpoints>>,
    pub nodes: Arc<Cache<Node>>,
    pub replicasets: Arc<Cache<ReplicaSet>>,
    pub deployments: Arc<Cache<Deployment>>,
    pub statefulsets: Arc<Cache<StatefulSet>>,
    pub revisions: Arc<Cache<ControllerRevision>>,
    pub namespaces: Arc<Cache<Namespace>>,
    /// EndpointSlices (what DNS reads) of a Service key.
    pub q_endpoints: Arc<WorkQueue>,
    /// The core/v1 Endpoints of a Service key: queued once its slices are written, so the
    /// slice write never waits for (or shares the API with) the Endpoints write.
    pub q_legacy_endpoints: Arc<WorkQueue>,
    pub q_replicasets: Arc<WorkQueue>,
    pub q_scheduler: Arc<WorkQueue>,
    pub q_deployments: Arc<WorkQueue>,
    pub q_statefulsets: Arc<WorkQueue>,
    pub q_gc: Arc<WorkQueue>,
    pub q_namespaces: Arc<WorkQueue>,
    /// Events for the event writer (see `record`).
    events: tokio::sync::mpsc::Sender<Event>,
    events_rx: Mutex<Option<tokio::sync::mpsc::Receiver<Event>>>,
    /// Per service key: when the change that queued it happened.
    triggers: Mutex<HashMap<String, Timestamp>>,
    /// The same for the Endpoints sync, handed over by the slice sync.
    legacy_triggers: Mutex<HashMap<String, Timestamp>>,
    /// Pods bound by this scheduler whose binding the watch has not shown yet: pod key → node.
    assumed: Mutex<HashMap<String, String>>,
}

// ---------------------------------------------------------------------------------------
// Indexes

pub fn label_keys(ns: &str, labels: &Labels) -> impl Iterator<Item = String> {
    labels.iter().map(move |(k, v)| format!("{ns}/{k}={v}"))
}

pub fn owner_keys(meta: &ObjectMeta) -> impl Iterator<Item = String> + '_ {
    meta.owner_references
        .iter()
        .flatten()
        .map(|r| format!("owner:{}", r.uid))
}

fn pod_index(p: &Pod) -> Vec<String> {
    let ns = p.metadata.namespace.clone().unwrap_or_default();
    let mut keys: Vec<String> = label_keys(&ns, util::labels_of(&p.metadata)).collect();
    keys.extend(owner_keys(&p.metadata));
    keys.push(format!("ns:{ns}"));
    match util::pod_node(p) {
        Some(n) => keys.push(format!("node:{n}")),
        None => keys.push("unscheduled".into()),
    }
    keys
}

fn service_index(s: &Service) -> Vec<String> {
    let ns = s.metadata.namespace.clone().unwrap_or_default();
    let mut keys: Vec<String> = s
        .spec
        .as_ref()
        .and_then(|sp| sp.selector.as_ref())
        .map(|sel| label_keys(&ns, sel).collect())
        .unwrap_or_default();
    keys.push(format!("ns:{ns}"));
    keys
}

fn slice_index(s: &EndpointSlice) -> Vec<String> {
    let labels = util::labels_of(&s.metadata);
    let mut keys: Vec<String> = owner_keys(&s.metadata).collect();
    keys.push(format!(
        "ns:{}",
        s.metadata.namespace.as_deref().unwrap_or("")
    ));
    if labels.get(endpoints::LABEL_MANAGED_BY).map(String::as_str) == Some(endpoints::MANAGED_BY)
        && let Some(svc) = labels.get(endpoints::LABEL_SERVICE_NAME)
    {
        keys.push(format!(
            "svc:{}/{svc}",
            s.metadata.namespace.as_deref().unwrap_or("")
        ));
    }
    keys
}

fn owned_index<K: Resource>(o: &K) -> Vec<String> {
    let mut keys: Vec<String> = owner_keys(o.meta()).collect();
    keys.push(format!(
        "ns:{}",
        o.meta().namespace.as_deref().unwrap_or("")
    ));
    keys
}

/// Pods of `ns` whose labels may match `selector`: looked up through the rarest label pair.
pub fn candidate_pods(ctx: &Ctx, ns: &str, selector: &Labels) -> Vec<Arc<Pod>> {
    let best = label_keys(ns, selector).min_by_key(|k| ctx.pods.index_len(k));
    match best {
        Some(k) => ctx.pods.by_index(&k),
        None => ctx.pods.by_index(&format!("ns:{ns}")),
    }
}

// ---------------------------------------------------------------------------------------
// Events

/// The object reference an Event points at.
pub fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into()),
        kind: Some(K::kind(&()).into()),
        name: obj.meta().name.clone(),
        namespace: obj.meta().namespace.clone(),
        uid: obj.meta().uid.clone(),
        resource_version: obj.meta().resource_version.clone(),
        ..Default::default()
    }
}

/// Queues a core/v1 Event (what `kubectl describe` and `get events` read) for the event
/// writer, which aggregates repeats as client-go does. Events never block a controller: when
/// the writer is far behind, new ones are dropped, as client-go drops them.
pub fn record(
    ctx: &Ctx,
    component: &str,
    obj: ObjectReference,
    type_: &str,
    reason: &str,
    message: String,
) {
    let now = Timestamp::now();
    let ns = obj
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    let event = Event {
        metadata: ObjectMeta {
            namespace: Some(ns),
            ..Default::default()
        },
        involved_object: obj,
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some(type_.into()),
        source: Some(EventSource {
            component: Some(component.into()),
            host: None,
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        reporting_component: Some(component.into()),
        reporting_instance: Some(ctx.identity.clone()),
        ..Default::default()
    };
    if ctx.events.try_send(event).is_err() {
        tracing::debug!(reason, "event queue full; dropping an event");
    }
}

/// Events waiting for the writer, at most (client-go's broadcaster keeps 1000 too).
const EVENT_QUEUE: usize = 1000;

/// Writes queued events one after the other (so a repeat always finds the event it counts
/// on), creating new ones and patching repeated ones.
async fn write_events(client: Client, mut rx: tokio::sync::mpsc::Receiver<Event>) {
    let mut correlator = events::Correlator::default();
    while let Some(event) = rx.recv().await {
        let now = event
            .last_timestamp
            .as_ref()
            .map_or_else(Timestamp::now, |t| t.0);
        let ns = event.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(client.clone(), &ns);
        let (result, event) = match correlator.correlate(event, now) {
            events::EventWrite::Create(e) => (api.create(&PostParams::default(), &e).await, e),
            events::EventWrite::Patch { event, patch } => {
                let name = event.metadata.name.clone().unwrap_or_default();
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    // Gone (expired or deleted): create it again with the count so far.
                    Err(e) if is_status(&e, 404) => {
                        (api.create(&PostParams::default(), &event).await, event)
                    }
                    other => (other, event),
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "writing an event failed");
            correlator.forget(&event);
        }
    }
}

/// The message of an API error as Kubernetes' controllers put it in events and conditions
/// (the Status message, not the client's wrapping).
pub fn error_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

// ---------------------------------------------------------------------------------------
// Wiring

impl Ctx {
    pub fn new(client: Client, identity: String) -> Arc<Ctx> {
        let (events, events_rx) = tokio::sync::mpsc::channel(EVENT_QUEUE);
        Arc::new(Ctx {
            events,
            events_rx: Mutex::new(Some(events_rx)),
            client,
            identity,
            pods: Cache::new(pod_index),
            services: Cache::new(service_index),
            slices: Cache::new(slice_index),
            endpoints: Cache::new(|_| Vec::new()),
            nodes: Cache::new(|_| Vec::new()),
            replicasets: Cache::new(owned_index::<ReplicaSet>),
            deployments: Cache::new(owned_index::<Deployment>),
            statefulsets: Cache::new(owned_index::<StatefulSet>),
            revisions: Cache::new(owned_index::<ControllerRevision>),
            namespaces: Cache::new(|_| Vec::new()),
            q_endpoints: WorkQueue::new(),
            q_legacy_endpoints: WorkQueue::new(),
            q_replicasets: WorkQueue::new(),
            q_scheduler: WorkQueue::new(),
            q_deployments: WorkQueue::new(),
            q_statefulsets: WorkQueue::new(),
            q_gc: WorkQueue::new(),
            q_namespaces: WorkQueue::new(),
            triggers: Mutex::new(HashMap::new()),
            legacy_triggers: Mutex::new(HashMap::new()),
            assumed: Mutex::new(HashMap::new()),
        })
    }

    fn trigger(&self, service_key: String) {
        let now = Timestamp::now();
        self.triggers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(service_key.clone(), now);
        self.q_endpoints.add(service_key);
    }

    /// Services in `ns` whose selector matches `labels`.
    fn services_selecting(&self, ns: &str, labels: &Labels) -> Vec<String> {
        let mut out = HashSet::new();
        for k in label_keys(ns, labels) {
            for s in self.services.by_index(&k) {
                if let Some(sel) = s.spec.as_ref().and_then(|sp| sp.selector.as_ref())
                    && !sel.is_empty()
                    && util::map_selector_matches(sel, labels)
                {
                    out.insert(obj_key(s.as_ref()));
                }
            }
        }
        out.into_iter().collect()
    }

    fn on_pod(&self, change: Change<'_, Pod>) {
        // The echo of the scheduler's own Unschedulable condition is not a new reason to
        // schedule (each attempt records a FailedScheduling event). Other echoes are: a pod
        // our ReplicaSet just created is in the cache before its watch event arrives.
        let echo = change.is_known_version()
            && matches!(&change, Change::Upsert { new, .. } if scheduler::marked_unschedulable(new));
        let (old, new, deleted) = match change {
            Change::Upsert { old, new } => (old, new, false),
            Change::Deleted(p) => (None, p, true),
        };
        let ns = new.metadata.namespace.clone().unwrap_or_default();
        let key = obj_key(new);
        let mut services: HashSet<String> = self
            .services_selecting(&ns, util::labels_of(&new.metadata))
            .into_iter()
            .collect();
        if let Some(old) = old
            && old.metadata.labels != new.metadata.labels
        {
            services.extend(self.services_selecting(&ns, util::labels_of(&old.metadata)));
        }
        for s in services {
            self.trigger(s);
        }
        // Owners and would-be owners.
        let mut owners: Vec<(String, String)> = Vec::new();
        for m in [Some(&new.metadata), old.map(|o| &o.metadata)]
            .into_iter()
            .flatten()
        {
            if let Some(r) = util::controller_ref(m) {
                owners.push((r.kind.clone(), format!("{ns}/{}", r.name)));
            }
        }
        if util::controller_ref(&new.metadata).is_none() && !deleted {
            for rs in self.replicasets.by_index(&format!("ns:{ns}")) {
                if let Some(spec) = &rs.spec
                    && util::selects(&spec.selector, &new.metadata)
                {
                    owners.push(("ReplicaSet".into(), obj_key(rs.as_ref())));
                }
            }
        }
        for (kind, owner) in owners {
            match kind.as_str() {
                "ReplicaSet" => self.q_replicasets.add(owner),
                "StatefulSet" => self.q_statefulsets.add(owner),
                _ => {}
            }
        }
        if deleted || util::pod_node(new).is_some() {
            self.assumed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        }
        if !deleted && !echo && scheduler::wants_scheduling(new) {
            self.q_scheduler.add(key);
        }
        if !deleted
            && new
                .metadata
                .owner_references
                .as_ref()
                .is_some_and(|r| !r.is_empty())
        {
            self.q_gc.add(format!("Pod:{}", obj_key(new)));
        }
    }

    pub fn handlers(self: &Arc<Self>) -> Handlers {
        let c = self.clone();
        let pods: Handler<Pod> = Arc::new(move |ch| c.on_pod(ch));
        let c = self.clone();
        let services: Handler<Service> = Arc::new(move |ch| {
            let s = match ch {
                Change::Upsert { new, .. } => new,
                Change::Deleted(s) => s,
            };
            c.trigger(obj_key(s));
        });
        let c = self.clone();
        let slices: Handler<EndpointSlice> = Arc::new(move |ch| {
            let known = ch.is_known_version();
            let (s, deleted) = match ch {
                Change::Upsert { new, .. } => (new, false),
                Change::Deleted(s) => (s, true),
            };
            let labels = util::labels_of(&s.metadata);
            // The echo of our own write changes nothing: no sync for it.
            if !known
                && labels.get(endpoints::LABEL_MANAGED_BY).map(String::as_str)
                    == Some(endpoints::MANAGED_BY)
                && let Some(svc) = labels.get(endpoints::LABEL_SERVICE_NAME)
            {
                c.q_endpoints.add(format!(
                    "{}/{svc}",
                    s.metadata.namespace.as_deref().unwrap_or("")
                ));
            }
            if deleted {
                c.dependent_gone(&s.metadata);
            } else {
                c.q_gc.add(format!("EndpointSlice:{}", obj_key(s)));
            }
        });
        let c = self.clone();
        let eps: Handler<Endpoints> = Arc::new(move |ch| {
            if ch.is_known_version() {
                return;
            }
            let e = match ch {
                Change::Upsert { new, .. } => new,
                Change::Deleted(e) => e,
            };
            c.q_legacy_endpoints.add(obj_key(e));
        });
        let c = self.clone();
        let nodes: Handler<Node> = Arc::new(move |ch| {
            let matters = match ch {
                Change::Upsert { old, new } => scheduler::node_change_matters(old, new),
                Change::Deleted(_) => true,
            };
            if !matters {
                return;
            }
            for p in c.pods.by_index("unscheduled") {
                if scheduler::wants_scheduling(&p) {
                    c.q_scheduler.add(obj_key(p.as_ref()));
                }
            }
        });
        let c = self.clone();
        let rs: Handler<ReplicaSet> = Arc::new(move |ch| {
            let (old, r, deleted) = match ch {
                Change::Upsert { old, new } => (old, new, false),
                Change::Deleted(r) => (None, r, true),
            };
            c.q_replicasets.add(obj_key(r));
            c.on_replicaset_for_deployments(old, r, deleted);
            c.owner_changed(&r.metadata, deleted, "ReplicaSet");
        });
        let c = self.clone();
        let deploys: Handler<Deployment> = Arc::new(move |ch| {
            let (d, deleted) = match ch {
                Change::Upsert { new, .. } => (new, false),
                Change::Deleted(d) => (d, true),
            };
            c.q_deployments.add(obj_key(d));
            c.owner_changed(&d.metadata, deleted, "Deployment");
        });
        let c = self.clone();
        let sts: Handler<StatefulSet> = Arc::new(move |ch| {
            let (s, deleted) = match ch {
                Change::Upsert { new, .. } => (new, false),
                Change::Deleted(s) => (s, true),
            };
            c.q_statefulsets.add(obj_key(s));
            c.owner_changed(&s.metadata, deleted, "StatefulSet");
        });
        let c = self.clone();
        let revs: Handler<ControllerRevision> = Arc::new(move |ch| {
            let (r, deleted) = match ch {
                Change::Upsert { new, .. } => (new, false),
                Change::Deleted(r) => (r, true),
            };
            if let Some(o) = util::controller_ref(&r.metadata) {
                c.q_statefulsets.add(format!(
                    "{}/{}",
                    r.metadata.namespace.as_deref().unwrap_or(""),
                    o.name
                ));
            }
            c.owner_changed(&r.metadata, deleted, "ControllerRevision");
        });
        let c = self.clone();
        let nss: Handler<Namespace> = Arc::new(move |ch| {
            if let Change::Upsert { new, .. } = ch {
                c.q_namespaces.add(new.name_any());
            }
        });
        let c = self.clone();
        let services_gc: Handler<Service> = {
            let inner = services.clone();
            Arc::new(move |ch| {
                if let Change::Deleted(s) = &ch {
                    c.owner_changed(&s.metadata, true, "Service");
                }
                inner(ch)
            })
        };
        Handlers {
            pods,
            services: services_gc,
            slices,
            endpoints: eps,
            nodes,
            replicasets: rs,
            deployments: deploys,
            statefulsets: sts,
            revisions: revs,
            namespaces: nss,
        }
    }

    /// An owner appeared, changed or went away: its dependents (and itself, if it is a
    /// dependent or has deletion finalizers) need the garbage collector's attention.
    fn owner_changed(&self, meta: &ObjectMeta, deleted: bool, kind: &str) {
        let key = format!("{kind}:{}", util::key(meta));
        if deleted {
            self.dependent_gone(meta);
        } else {
            self.q_gc.add(key);
        }
        if let Some(uid) = &meta.uid
            && (deleted || util::is_deleting(meta))
        {
            self.q_gc.add(format!("owner:{uid}"));
        }
    }
}

impl Ctx {
    /// Deployments that own a ReplicaSet, owned it before, or may adopt it (it is an orphan
    /// their selector matches) look at it again.
    fn on_replicaset_for_deployments(
        &self,
        old: Option<&ReplicaSet>,
        rs: &ReplicaSet,
        deleted: bool,
    ) {
        let ns = rs.metadata.namespace.as_deref().unwrap_or("");
        let mut orphan = false;
        for meta in [Some(&rs.metadata), old.map(|o| &o.metadata)]
            .into_iter()
            .flatten()
        {
            match util::controller_ref(meta) {
                Some(o) if o.kind == "Deployment" => {
                    self.q_deployments.add(format!("{ns}/{}", o.name));
                }
                Some(_) => {}
                None => orphan = true,
            }
        }
        if orphan && !deleted {
            for d in self.deployments.by_index(&format!("ns:{ns}")) {
                if let Some(spec) = &d.spec
                    && util::selects(&spec.selector, &rs.metadata)
                {
                    self.q_deployments.add(obj_key(d.as_ref()));
                }
            }
        }
    }

    /// A dependent went away: an owner waiting for its dependents may be done.
    fn dependent_gone(&self, meta: &ObjectMeta) {
        let ns = meta.namespace.as_deref().unwrap_or("");
        for r in meta.owner_references.iter().flatten() {
            self.q_gc.add(format!("{}:{ns}/{}", r.kind, r.name));
        }
    }
}

pub struct Handlers {
    pub pods: Handler<Pod>,
    pub services: Handler<Service>,
    pub slices: Handler<EndpointSlice>,
    pub endpoints: Handler<Endpoints>,
    pub nodes: Handler<Node>,
    pub replicasets: Handler<ReplicaSet>,
    pub deployments: Handler<Deployment>,
    pub statefulsets: Handler<StatefulSet>,
    pub revisions: Handler<ControllerRevision>,
    pub namespaces: Handler<Namespace>,
}

/// Starts every informer and the event writer; returns once all caches hold a complete
/// first list.
pub async fn start_informers(ctx: &Arc<Ctx>, tasks: &mut tokio::task::JoinSet<()>) {
    if let Some(rx) = ctx
        .events_rx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        tasks.spawn(write_events(ctx.client.clone(), rx));
    }
    let h = ctx.handlers();
    let c = ctx.client.clone();
    tasks.spawn(informer(Api::all(c.clone()), ctx.pods.clone(), h.pods));
    tasks.spawn(informer(
        Api::all(c.clone()),
        ctx.services.clone(),
        h.services,
    ));
    tasks.spawn(informer(Api::all(c.clone()), ctx.slices.clone(), h.slices));
    tasks.spawn(informer(
        Api::all(c.clone()),
        ctx.endpoints.clone(),
        h.endpoints,
    ));
    tasks.spawn(informer(Api::all(c.clone()), ctx.nodes.clone(), h.nodes));
    tasks.spawn(informer(
        Api::all(c.clone()),
        ctx.replicasets.clone(),
        h.replicasets,
    ));
    tasks.spawn(informer(
        Api::all(c.clone()),
        ctx.deployments.clone(),
        h.deployments,
    ));
    tasks.spawn(informer(
        Api::all(c.clone()),
        ctx.statefulsets.clone(),
        h.statefulsets,
    ));
    tasks.spawn(informer(
        Api::all(c.clone()),
        ctx.revisions.clone(),
        h.revisions,
    ));
    tasks.spawn(informer(Api::all(c), ctx.namespaces.clone(), h.namespaces));
    ctx.pods.wait_synced().await;
    ctx.services.wait_synced().await;
    ctx.slices.wait_synced().await;
    ctx.endpoints.wait_synced().await;
    ctx.nodes.wait_synced().await;
    ctx.replicasets.wait_synced().await;
    ctx.deployments.wait_synced().await;
    ctx.statefulsets.wait_synced().await;
    ctx.revisions.wait_synced().await;
    ctx.namespaces.wait_synced().await;
}

/// Runs `workers` workers on `queue`, each syncing one key at a time.
pub fn spawn_workers(
    ctx: &Arc<Ctx>,
    tasks: &mut tokio::task::JoinSet<()>,
    name: &'static str,
    queue: Arc<WorkQueue>,
    workers: usize,
    sync: SyncFn,
) {
    for _ in 0..workers.max(1) {
        let ctx = ctx.clone();
        let queue = queue.clone();
        tasks.spawn(async move {
            loop {
                let key = queue.get().await;
                let result = std::panic::AssertUnwindSafe(sync(ctx.clone(), key.clone()))
                    .catch_unwind()
                    .await;
                match result {
                    Ok(Ok(requeue)) => {
                        queue.forget(&key);
                        if let Some(d) = requeue {
                            queue.add_after(key.clone(), d);
                        }
                    }
                    Ok(Err(e)) => {
                        let delay = queue.failed(&key);
                        tracing::debug!(controller = name, %key, error = %e, ?delay, "sync failed; retrying");
                        queue.add_after(key.clone(), delay);
                    }
                    Err(_) => {
                        let delay = queue.failed(&key);
                        tracing::error!(controller = name, %key, "sync panicked; retrying");
                        queue.add_after(key.clone(), delay);
                    }
                }
                queue.done(&key);
            }
        });
    }
}

// ---------------------------------------------------------------------------------------
// EndpointSlices and Endpoints

/// What both endpoint syncs read about one Service: the Service, the pods it may select and
/// the nodes' zones.
struct ServiceView {
    service: Option<Arc<Service>>,
    pods: Vec<Arc<Pod>>,
    zones: BTreeMap<String, String>,
}

fn service_view(ctx: &Ctx, key: &str) -> ServiceView {
    let (ns, _) = split_key(key);
    let service = ctx.services.get(key);
    let selector = service
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    let pods = if selector.is_empty() {
        Vec::new()
    } else {
        candidate_pods(ctx, ns, &selector)
    };
    let zones = ctx
        .nodes
        .all()
        .iter()
        .filter_map(|n| {
            let zone = util::labels_of(&n.metadata).get("topology.kubernetes.io/zone")?;
            Some((n.name_any(), zone.clone()))
        })
        .collect();
    ServiceView {
        service,
        pods,
        zones,
    }
}

fn take_trigger(map: &Mutex<HashMap<String, Timestamp>>, key: &str) -> Option<Timestamp> {
    map.lock().unwrap_or_else(|e| e.into_inner()).remove(key)
}

/// Writes the EndpointSlices of one Service, then hands the Service to the Endpoints sync.
pub fn sync_service(ctx: Arc<Ctx>, key: String) -> BoxFuture<'static, SyncResult> {
    async move {
        let (ns, name) = split_key(&key);
        let view = service_view(&ctx, &key);
        let pod_refs: Vec<&Pod> = view.pods.iter().map(|p| p.as_ref()).collect();
        let slices = ctx.slices.by_index(&format!("svc:{ns}/{name}"));
        let slice_refs: Vec<&EndpointSlice> = slices.iter().map(|s| s.as_ref()).collect();
        let trigger = take_trigger(&ctx.triggers, &key);
        let obs = endpoints::Observed {
            service: view.service.as_deref(),
            pods: &pod_refs,
            slices: &slice_refs,
            endpoints: None,
            node_zones: &view.zones,
            trigger_time: trigger,
        };
        let written = write_slices(&ctx, ns, endpoints::reconcile_slices(&obs)).await;
        if let Some(t) = trigger {
            let mut legacy = ctx
                .legacy_triggers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let at = legacy.entry(key.clone()).or_insert(t);
            *at = (*at).max(t);
        }
        ctx.q_legacy_endpoints.add(key.clone());
        written?;
        Ok(None)
    }
    .boxed()
}

/// Writes the core/v1 Endpoints of one Service.
pub fn sync_legacy_endpoints(ctx: Arc<Ctx>, key: String) -> BoxFuture<'static, SyncResult> {
    async move {
        let (ns, name) = split_key(&key);
        let view = service_view(&ctx, &key);
        let pod_refs: Vec<&Pod> = view.pods.iter().map(|p| p.as_ref()).collect();
        let current = ctx.endpoints.get(&key);
        let obs = endpoints::Observed {
            service: view.service.as_deref(),
            pods: &pod_refs,
            slices: &[],
            endpoints: current.as_deref(),
            node_zones: &view.zones,
            trigger_time: take_trigger(&ctx.legacy_triggers, &key),
        };
        write_endpoints(&ctx, ns, name, endpoints::reconcile_endpoints(&obs)).await?;
        Ok(None)
    }
    .boxed()
}

async fn write_slices(
    ctx: &Ctx,
    ns: &str,
    actions: Vec<endpoints::SliceAction>,
) -> anyhow::Result<()> {
    let slice_api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), ns);
    let pp = PostParams::default();
    for action in actions {
        match action {
            endpoints::SliceAction::Create(s) => {
                let created = slice_api.create(&pp, &s).await?;
                ctx.slices.upsert(created);
            }
            endpoints::SliceAction::Update(s) => {
                let name = s.name_any();
                let updated = slice_api.replace(&name, &pp, &s).await?;
                ctx.slices.refresh(updated);
            }
            endpoints::SliceAction::Delete { name } => {
                match slice_api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(e) if is_status(&e, 404) => {}
                    Err(e) => return Err(e.into()),
                }
                ctx.slices.remove(&format!("{ns}/{name}"));
            }
        }
    }
    Ok(())
}

async fn write_endpoints(
    ctx: &Ctx,
    ns: &str,
    name: &str,
    action: Option<endpoints::EndpointsAction>,
) -> anyhow::Result<()> {
    let ep_api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), ns);
    let pp = PostParams::default();
    match action {
        Some(endpoints::EndpointsAction::Create(e)) => {
            // A conflict means someone wrote it in between: the watch brings it, we retry.
            let created = ep_api.create(&pp, &e).await?;
            ctx.endpoints.upsert(created);
        }
        Some(endpoints::EndpointsAction::Update(e)) => {
            let updated = ep_api.replace(name, &pp, &e).await?;
            ctx.endpoints.refresh(updated);
        }
        Some(endpoints::EndpointsAction::Delete { name }) => {
            match ep_api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(e.into()),
            }
            ctx.endpoints.remove(&format!("{ns}/{name}"));
        }
        None => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// ReplicaSets

pub fn sync_replicaset(ctx: Arc<Ctx>, key: String) -> BoxFuture<'static, SyncResult> {
    async move {
        let Some(rs) = ctx.replicasets.get(&key) else {
            return Ok(None);
        };
        let (ns, _) = split_key(&key);
        let ns = ns.to_string();
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let mut pods: HashMap<String, Arc<Pod>> = HashMap::new();
        for p in ctx.pods.by_index(&format!("owner:{uid}")) {
            pods.insert(obj_key(p.as_ref()), p);
        }
        let selector = rs
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.clone())
            .unwrap_or_default();
        for p in candidate_pods(&ctx, &ns, &selector) {
            pods.insert(obj_key(p.as_ref()), p);
        }
        let pod_refs: Vec<&Pod> = pods.values().map(|p| p.as_ref()).collect();
        let plan = replicaset::reconcile(&replicaset::Observed {
            rs: &rs,
            pods: &pod_refs,
            now: Timestamp::now(),
        });
        let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        for change in plan.adopt.iter().chain(plan.release.iter()) {
            ops::set_owner_references(&pod_api, &ctx.pods, change).await?;
        }
        let rs_ref = reference(rs.as_ref());
        let mut failure = None;
        if plan.create > 0 {
            let pods = vec![replicaset::pod_from_template(&rs); plan.create];
            if let Some(e) =
                ops::create_pods(&ctx, &ns, ops::PodOwner::ReplicaSet, &rs_ref, pods).await
            {
                failure = Some((replicaset::ManageFailure::Create(error_message(&e)), e));
            }
        }
        if !plan.delete.is_empty()
            && let Some(e) =
                ops::delete_pods(&ctx, &ns, ops::PodOwner::ReplicaSet, &rs_ref, plan.delete).await
        {
            failure = Some((replicaset::ManageFailure::Delete(error_message(&e)), e));
        }
        let status = replicaset::status_update(
            &rs,
            plan.status,
            failure.as_ref().map(|(f, _)| f),
            Timestamp::now(),
        );
        if let Some(status) = status {
            let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
            ops::patch_status(&api, &ctx.replicasets, &rs.name_any(), &status).await?;
        }
        if let Some((_, e)) = failure {
            return Err(e.into());
        }
        Ok(plan.requeue_after.map(Duration::from_secs))
    }
    .boxed()
}

// ---------------------------------------------------------------------------------------
// Scheduler

pub fn sync_pod_schedule(ctx: Arc<Ctx>, key: String) -> BoxFuture<'static, SyncResult> {
    async move {
        let Some(pod) = ctx.pods.get(&key) else {
            return Ok(None);
        };
        if !scheduler::wants_scheduling(&pod) {
            return Ok(None);
        }
        if ctx
            .assumed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&key)
        {
            return Ok(None);
        }
        let nodes = ctx.nodes.all();
        let node_refs: Vec<&Node> = nodes.iter().map(|n| n.as_ref()).collect();
        let mut load: HashMap<String, usize> = HashMap::new();
        for n in &nodes {
            let name = n.name_any();
            let count = ctx
                .pods
                .by_index(&format!("node:{name}"))
                .iter()
                .filter(|p| !util::pod_is_terminal(p))
                .count();
            load.insert(name, count);
        }
        for node in ctx
            .assumed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            *load.entry(node.clone()).or_default() += 1;
        }
        let (ns, name) = split_key(&key);
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
        match scheduler::schedule(&pod, &node_refs, &load) {
            scheduler::Decision::Bind { node } => {
                ctx.assumed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key.clone(), node.clone());
                let binding = Binding {
                    metadata: ObjectMeta {
                        name: Some(name.to_string()),
                        namespace: Some(ns.to_string()),
                        uid: pod.metadata.uid.clone(),
                        ..Default::default()
                    },
                    target: ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Node".into()),
                        name: Some(node.clone()),
                        ..Default::default()
                    },
                };
                let bound: Result<serde_json::Value, _> = api
                    .create_subresource("binding", name, &PostParams::default(), &binding)
                    .await;
                let result = match bound {
                    Err(e) if is_status(&e, 404) || is_status(&e, 405) => {
                        // No binding subresource: set spec.nodeName directly.
                        let patch = json!({"spec": {"nodeName": node}});
                        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                            .map(|_| ())
                    }
                    other => other.map(|_| ()),
                };
                if let Err(e) = result {
                    ctx.assumed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&key);
                    if is_status(&e, 404) || is_status(&e, 409) {
                        // Gone, or bound by someone else: the watch will tell.
                        return Ok(None);
                    }
                    return Err(e.into());
                }
                record(
                    &ctx,
                    "default-scheduler",
                    reference(pod.as_ref()),
                    "Normal",
                    "Scheduled",
                    format!("Successfully assigned {ns}/{name} to {node}"),
                );
                Ok(None)
            }
            scheduler::Decision::Unschedulable { message } => {
                let conditions = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.clone())
                    .unwrap_or_default();
                let already = conditions.iter().any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.message.as_deref() == Some(message.as_str())
                });
                if !already {
                    let mut conditions: Vec<PodCondition> = conditions
                        .into_iter()
                        .filter(|c| c.type_ != "PodScheduled")
                        .collect();
                    conditions.push(PodCondition {
                        type_: "PodScheduled".into(),
                        status: "False".into(),
                        reason: Some("Unschedulable".into()),
                        message: Some(message.clone()),
                        last_transition_time: Some(Time(Timestamp::now())),
                        ..Default::default()
                    });
                    // The resourceVersion guards against overwriting a status the kubelet just wrote.
                    let patch = json!({
                        "metadata": {"resourceVersion": pod.metadata.resource_version},
                        "status": {"conditions": conditions},
                    });
                    match api
                        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(p) => {
                            ctx.pods.refresh(p);
                        }
                        Err(e) if is_status(&e, 404) => return Ok(None),
                        // A newer pod is on its way through the watch; it queues us again.
                        Err(e) if is_status(&e, 409) => return Ok(None),
                        Err(e) => return Err(e.into()),
                    }
                }
                // Every failed attempt is an event, as Kubernetes' scheduler records them;
                // repeats become one event with a count ("(x3 over 2m)").
                record(
                    &ctx,
                    "default-scheduler",
                    reference(pod.as_ref()),
                    "Warning",
                    "FailedScheduling",
                    message,
                );
                // Node changes requeue every pending pod; this is a slow safety net.
                Ok(Some(Duration::from_secs(30)))
            }
        }
    }
    .boxed()
}
