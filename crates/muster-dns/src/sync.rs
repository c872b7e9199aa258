//! Keeping the zone in step with an API server through `kube::runtime::watcher`.
//!
//! - One watcher per kind (Namespaces, Services, EndpointSlices, and Pods when pod records are
//!   verified). Deltas go into a [`ZoneBuilder`]; every event already waiting is applied before
//!   one snapshot is published, so a burst costs one publish and a single change is published
//!   at once (no timer, no debounce).
//! - A (re-)list (`Init` … `InitDone`) is buffered and then *replaces* that kind's state, so
//!   objects deleted while a watch was broken (or across a 410 Gone) disappear; until the new
//!   list is complete the last complete state is served.
//! - A list is buffered as objects trimmed to what DNS reads (no managedFields, pod specs,
//!   statuses or unrelated labels and annotations), so a re-list of a large cluster costs a
//!   fraction of the objects' size (CoreDNS is OOM-killed by exactly this, kubernetes #139117).
//! - Until every watcher has completed its first list the zone is unsynced and cluster names
//!   answer SERVFAIL, never NXDOMAIN; `ready` turns true at that moment.

use std::sync::Arc;

use futures::{FutureExt, Stream, StreamExt, stream::BoxStream};
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Pod, PodStatus, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use crate::server::Shared;
use crate::zone::{SERVICE_NAME_LABEL, TRIGGER_TIME_ANNOTATION, ZoneBuilder};

/// One watch event of any kind. Each is moved once into the builder, so its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Delta {
    Namespace(Event<Namespace>),
    Service(Event<Service>),
    Slice(Event<EndpointSlice>),
    Pod(Event<Pod>),
    Error(String),
}

fn watch<K>(api: Api<K>, wrap: fn(Event<K>) -> Delta) -> BoxStream<'static, Delta>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .map(move |r| match r {
            Ok(ev) => wrap(ev),
            Err(e) => Delta::Error(e.to_string()),
        })
        .boxed()
}

/// Keeps only the metadata DNS reads: name, namespace, and one label and annotation by name.
fn trim_meta(meta: &mut ObjectMeta, keep_label: Option<&str>, keep_annotation: Option<&str>) {
    fn keep(map: &mut Option<BTreeMap<String, String>>, key: Option<&str>) {
        *map = key.and_then(|k| {
            let v = map.as_mut()?.remove(k)?;
            Some(BTreeMap::from([(k.to_string(), v)]))
        });
    }
    keep(&mut meta.labels, keep_label);
    keep(&mut meta.annotations, keep_annotation);
    meta.managed_fields = None;
    meta.owner_references = None;
    meta.finalizers = None;
}

fn trim_namespace(mut ns: Namespace) -> Namespace {
    trim_meta(&mut ns.metadata, None, None);
    ns.spec = None;
    ns.status = None;
    ns
}

fn trim_service(mut svc: Service) -> Service {
    trim_meta(&mut svc.metadata, None, None);
    svc.status = None;
    if let Some(spec) = &mut svc.spec {
        spec.selector = None;
    }
    svc
}

fn trim_slice(mut slice: EndpointSlice) -> EndpointSlice {
    trim_meta(
        &mut slice.metadata,
        Some(SERVICE_NAME_LABEL),
        Some(TRIGGER_TIME_ANNOTATION),
    );
    for e in &mut slice.endpoints {
        e.deprecated_topology = None;
        e.hints = None;
        e.node_name = None;
        e.zone = None;
    }
    slice
}

fn trim_pod(mut pod: Pod) -> Pod {
    trim_meta(&mut pod.metadata, None, None);
    pod.spec = None;
    pod.status = pod.status.map(|s| PodStatus {
        phase: s.phase,
        pod_ip: s.pod_ip,
        pod_ips: s.pod_ips,
        ..PodStatus::default()
    });
    pod
}

/// Per-kind list state.
struct Kind<K> {
    buffer: Option<Vec<K>>,
    listed: bool,
}

impl<K> Default for Kind<K> {
    fn default() -> Self {
        Kind {
            buffer: None,
            listed: false,
        }
    }
}

impl<K> Kind<K> {
    /// Applies one event; a finished list is handed to `replace`.
    fn apply(
        &mut self,
        ev: Event<K>,
        b: &mut ZoneBuilder,
        trim: fn(K) -> K,
        apply: fn(&mut ZoneBuilder, &K),
        delete: fn(&mut ZoneBuilder, &K),
        replace: fn(&mut ZoneBuilder, &[K]),
    ) {
        match ev {
            Event::Init => self.buffer = Some(Vec::new()),
            Event::InitApply(o) => self.buffer.get_or_insert_with(Vec::new).push(trim(o)),
            Event::InitDone => {
                let list = self.buffer.take().unwrap_or_default();
                replace(b, &list);
                self.listed = true;
            }
            Event::Apply(o) => apply(b, &o),
            Event::Delete(o) => delete(b, &o),
        }
    }
}

/// Watches the API through `client` and publishes snapshots into `shared` until the streams end.
pub async fn run_sync(
    client: kube::Client,
    mut builder: ZoneBuilder,
    shared: Arc<Shared>,
    ready: tokio::sync::watch::Sender<bool>,
    watch_pods: bool,
) -> anyhow::Result<()> {
    let mut streams = vec![
        watch(Api::<Namespace>::all(client.clone()), Delta::Namespace),
        watch(Api::<Service>::all(client.clone()), Delta::Service),
        watch(Api::<EndpointSlice>::all(client.clone()), Delta::Slice),
    ];
    if watch_pods {
        streams.push(watch(Api::<Pod>::all(client.clone()), Delta::Pod));
    }
    let stream = futures::stream::select_all(streams);
    drive(stream, &mut builder, &shared, &ready, watch_pods).await;
    anyhow::bail!("the Kubernetes watch streams ended")
}

/// The event loop, separate from the API client so tests can feed it any stream.
async fn drive(
    mut stream: impl Stream<Item = Delta> + Unpin,
    builder: &mut ZoneBuilder,
    shared: &Shared,
    ready: &tokio::sync::watch::Sender<bool>,
    watch_pods: bool,
) {
    let mut namespaces = Kind::<Namespace>::default();
    let mut services = Kind::<Service>::default();
    let mut slices = Kind::<EndpointSlice>::default();
    let mut pods = Kind::<Pod>::default();
    let mut synced = false;
    while let Some(first) = stream.next().await {
        let mut next = Some(first);
        let mut applied = 0;
        while let Some(delta) = next {
            match delta {
                Delta::Namespace(e) => namespaces.apply(
                    e,
                    builder,
                    trim_namespace,
                    ZoneBuilder::apply_namespace,
                    ZoneBuilder::delete_namespace,
                    ZoneBuilder::replace_namespaces,
                ),
                Delta::Service(e) => services.apply(
                    e,
                    builder,
                    trim_service,
                    ZoneBuilder::apply_service,
                    ZoneBuilder::delete_service,
                    ZoneBuilder::replace_services,
                ),
                Delta::Slice(e) => slices.apply(
                    e,
                    builder,
                    trim_slice,
                    ZoneBuilder::apply_slice,
                    ZoneBuilder::delete_slice,
                    ZoneBuilder::replace_slices,
                ),
                Delta::Pod(e) => pods.apply(
                    e,
                    builder,
                    trim_pod,
                    ZoneBuilder::apply_pod,
                    ZoneBuilder::delete_pod,
                    ZoneBuilder::replace_pods,
                ),
                Delta::Error(e) => tracing::warn!(error = %e, "watch error; re-listing"),
            }
            applied += 1;
            // Take whatever else is already waiting, bounded so a huge list still publishes.
            next = if applied < 50_000 {
                stream.next().now_or_never().flatten()
            } else {
                None
            };
        }
        let all_listed =
            namespaces.listed && services.listed && slices.listed && (!watch_pods || pods.listed);
        let became_synced = all_listed && !synced;
        if became_synced {
            builder.mark_synced();
            synced = true;
        }
        if builder.has_changes() || became_synced {
            let zone = builder.publish();
            let services = zone.service_count();
            shared.zone.store(Arc::new(zone));
            record_programming(builder, shared);
            if became_synced {
                tracing::info!(services, "DNS synced with the Kubernetes API; answering");
                let _ = ready.send(true);
            }
        }
    }
}

fn record_programming(builder: &mut ZoneBuilder, shared: &Shared) {
    let now_ms = chrono::Utc::now().timestamp_millis();
    for (t, headless) in builder.take_trigger_times() {
        let secs = (now_ms - t).max(0) as f64 / 1000.0;
        if headless {
            shared.metrics.programming_headless.observe(secs);
        } else {
            shared.metrics.programming_cluster_ip.observe(secs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::Forwarder;
    use crate::metrics::Metrics;
    use crate::zone::{Zone, ZoneSettings};
    use serde_json::json;

    fn svc(name: &str, ip: &str) -> Service {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip}}))
        .unwrap()
    }
    fn ns(name: &str) -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
    }

    #[test]
    fn trimming_keeps_what_dns_reads() {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "s", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "web", "other": "x"},
                "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-01-01T00:00:00Z", "big": "y"},
                "managedFields": [{"manager": "m"}]},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "hostname": "h", "nodeName": "n", "conditions": {"ready": true}}]
        }))
        .unwrap();
        let t = trim_slice(slice.clone());
        assert_eq!(t.metadata.labels.unwrap().len(), 1);
        assert_eq!(t.metadata.annotations.unwrap().len(), 1);
        assert!(t.metadata.managed_fields.is_none());
        // What DNS derives from it is unchanged.
        let mut a = ZoneBuilder::new(ZoneSettings::default()).unwrap();
        let mut b = ZoneBuilder::new(ZoneSettings::default()).unwrap();
        a.apply_slice(&slice);
        b.apply_slice(&trim_slice(slice));
        assert_eq!(a.take_trigger_times(), b.take_trigger_times());
        for builder in [&mut a, &mut b] {
            builder.apply_service(&svc("web", "None"));
        }
        let (za, zb) = (a.publish(), b.publish());
        let slices = |z: &Zone| z.service("default", "web").unwrap().slices.clone();
        assert_eq!(slices(&za), slices(&zb));
        assert_eq!(slices(&za)[0].hostname(0), Some("h"));
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "hostIP": "1.2.3.4"}
        }))
        .unwrap();
        let t = trim_pod(pod);
        assert!(t.spec.is_none());
        let status = t.status.unwrap();
        assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.1"));
        assert!(status.host_ip.is_none());
    }

    #[tokio::test]
    async fn relist_replaces_state_and_sync_gates_readiness() {
        let settings = ZoneSettings::default();
        let metrics = Arc::new(Metrics::default());
        let shared = Shared::new(
            Zone::empty(settings.clone()).unwrap(),
            metrics.clone(),
            Arc::new(Forwarder::new(
                vec![],
                std::time::Duration::from_secs(1),
                metrics,
            )),
            vec![],
            tokio::runtime::Handle::current(),
        );
        let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
        let mut builder = ZoneBuilder::new(settings).unwrap();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let shared = Arc::new(shared);
        let task = {
            let shared = shared.clone();
            tokio::spawn(async move {
                drive(rx, &mut builder, &shared, &ready_tx, false).await;
            })
        };
        let send = |d: Delta| tx.unbounded_send(d).unwrap();
        let settle = || tokio::time::sleep(std::time::Duration::from_millis(50));
        send(Delta::Namespace(Event::Init));
        send(Delta::Namespace(Event::InitApply(ns("default"))));
        send(Delta::Namespace(Event::InitDone));
        send(Delta::Service(Event::Init));
        send(Delta::Service(Event::InitApply(svc("a", "10.96.0.5"))));
        send(Delta::Service(Event::InitApply(svc("b", "10.96.0.6"))));
        send(Delta::Service(Event::InitDone));
        settle().await;
        // Slices not listed yet: not synced, not ready.
        assert!(!shared.zone.load().is_synced());
        assert!(!*ready_rx.borrow());
        send(Delta::Slice(Event::Init));
        send(Delta::Slice(Event::InitDone));
        settle().await;
        assert!(shared.zone.load().is_synced());
        assert!(*ready_rx.borrow());
        assert!(shared.zone.load().service("default", "b").is_some());
        // A watch break: the re-list no longer has `b`, and `c` appeared meanwhile.
        send(Delta::Service(Event::Init));
        send(Delta::Service(Event::InitApply(svc("a", "10.96.0.5"))));
        send(Delta::Service(Event::InitApply(svc("c", "10.96.0.7"))));
        send(Delta::Service(Event::InitDone));
        settle().await;
        let z = shared.zone.load();
        assert!(z.service("default", "b").is_none());
        assert!(z.service("default", "c").is_some());
        send(Delta::Service(Event::Delete(svc("a", "10.96.0.5"))));
        settle().await;
        assert!(shared.zone.load().service("default", "a").is_none());
        drop(tx);
        task.await.unwrap();
    }
}
