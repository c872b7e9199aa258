//! The IO side shared by every controller: indexed caches fed by watches, and a work queue
//! that never processes one key twice at the same time and retries with backoff.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};

/// `ns/name` of any object.
pub fn obj_key<K: Resource>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Index keys for an object (for example one per label, or its owners' uids).
pub type Indexer<K> = fn(&K) -> Vec<String>;

struct Inner<K> {
    objects: HashMap<String, Arc<K>>,
    index: HashMap<String, HashSet<String>>,
}

/// A local copy of one resource type, with secondary indexes.
pub struct Cache<K> {
    inner: RwLock<Inner<K>>,
    indexer: Indexer<K>,
    synced: watch::Sender<bool>,
}

fn rv_number(rv: Option<&str>) -> Option<u64> {
    rv?.parse().ok()
}

impl<K: Resource> Cache<K> {
    pub fn new(indexer: Indexer<K>) -> Arc<Self> {
        Arc::new(Cache {
            inner: RwLock::new(Inner {
                objects: HashMap::new(),
                index: HashMap::new(),
            }),
            indexer,
            synced: watch::channel(false).0,
        })
    }

    fn unindex(inner: &mut Inner<K>, indexer: Indexer<K>, key: &str, obj: &K) {
        for ik in indexer(obj) {
            if let Some(set) = inner.index.get_mut(&ik) {
                set.remove(key);
                if set.is_empty() {
                    inner.index.remove(&ik);
                }
            }
        }
    }

    /// Stores `obj`, returning the previous version. A write that the controller made itself
    /// lands here before its watch event does; an older resourceVersion arriving later (when
    /// versions are numeric, as in muster and etcd) is ignored.
    pub fn upsert(&self, obj: K) -> Option<Arc<K>> {
        let key = obj_key(&obj);
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let old = inner.objects.get(&key).cloned();
        if let Some(old) = &old
            && let (Some(have), Some(new)) = (
                rv_number(old.meta().resource_version.as_deref()),
                rv_number(obj.meta().resource_version.as_deref()),
            )
            && new < have
        {
            return Some(old.clone());
        }
        if let Some(old) = &old {
            Self::unindex(&mut inner, self.indexer, &key, old);
        }
        for ik in (self.indexer)(&obj) {
            inner.index.entry(ik).or_default().insert(key.clone());
        }
        inner.objects.insert(key, Arc::new(obj));
        old
    }

    /// Stores the answer to our own update, patch or delete, but only over the same object:
    /// if the watch already reported it deleted, a late answer must not bring it back.
    pub fn refresh(&self, obj: K) {
        let key = obj_key(&obj);
        let same = self
            .get(&key)
            .is_some_and(|cur| cur.meta().uid == obj.meta().uid);
        if same {
            self.upsert(obj);
        }
    }

    pub fn remove(&self, key: &str) -> Option<Arc<K>> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let old = inner.objects.remove(key)?;
        Self::unindex(&mut inner, self.indexer, key, &old);
        Some(old)
    }

    /// Replaces everything after a (re)list; returns the objects that disappeared.
    fn replace_all(&self, objs: Vec<K>) -> Vec<Arc<K>> {
        let mut fresh: HashMap<String, Arc<K>> = HashMap::new();
        let mut index: HashMap<String, HashSet<String>> = HashMap::new();
        for obj in objs {
            let key = obj_key(&obj);
            for ik in (self.indexer)(&obj) {
                index.entry(ik).or_default().insert(key.clone());
            }
            fresh.insert(key, Arc::new(obj));
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let gone = inner
            .objects
            .iter()
            .filter(|(k, _)| !fresh.contains_key(*k))
            .map(|(_, v)| v.clone())
            .collect();
        inner.objects = fresh;
        inner.index = index;
        gone
    }

    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.objects.get(key).cloned()
    }

    pub fn by_index(&self, index_key: &str) -> Vec<Arc<K>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .index
            .get(index_key)
            .into_iter()
            .flatten()
            .filter_map(|k| inner.objects.get(k).cloned())
            .collect()
    }

    pub fn index_len(&self, index_key: &str) -> usize {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.index.get(index_key).map_or(0, HashSet::len)
    }

    pub fn all(&self) -> Vec<Arc<K>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.objects.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// What a watch told us about one object.
pub enum Change<'a, K> {
    /// Added or modified; `old` is the cached version before, if any.
    Upsert {
        old: Option<&'a K>,
        new: &'a K,
    },
    Deleted(&'a K),
}

impl<K: Resource> Change<'_, K> {
    /// An update to a version the cache already had (or a newer one): the watch echoing a
    /// write whose answer the controller stored itself, or a late event.
    pub fn is_known_version(&self) -> bool {
        match self {
            Change::Upsert {
                old: Some(old),
                new,
            } => matches!(
                (
                    rv_number(old.meta().resource_version.as_deref()),
                    rv_number(new.meta().resource_version.as_deref()),
                ),
                (Some(have), Some(got)) if got <= have
            ),
            _ => false,
        }
    }
}

pub type Handler<K> = Arc<dyn Fn(Change<'_, K>) + Send + Sync>;

/// Keeps `cache` in step with the API through list+watch (re-listing after errors and 410s)
/// and calls `handler` for every change. Runs until the task is dropped.
pub async fn informer<K>(api: Api<K>, cache: Arc<Cache<K>>, handler: Handler<K>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut buffer: Vec<K> = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => buffer.clear(),
            Ok(watcher::Event::InitApply(obj)) => buffer.push(obj),
            Ok(watcher::Event::InitDone) => {
                let objs = std::mem::take(&mut buffer);
                let gone = cache.replace_all(objs);
                for obj in &gone {
                    handler(Change::Deleted(obj));
                }
                for obj in cache.all() {
                    handler(Change::Upsert {
                        old: None,
                        new: &obj,
                    });
                }
                cache.synced.send_replace(true);
            }
            Ok(watcher::Event::Apply(obj)) => {
                let old = cache.upsert(obj.clone());
                handler(Change::Upsert {
                    old: old.as_deref(),
                    new: &obj,
                });
            }
            Ok(watcher::Event::Delete(obj)) => {
                cache.remove(&obj_key(&obj));
                handler(Change::Deleted(&obj));
            }
            Err(e) => {
                tracing::warn!(error = %e, kind = %K::kind(&Default::default()), "watch failed; retrying")
            }
        }
    }
}

#[derive(Default)]
struct QueueState {
    queue: VecDeque<String>,
    /// Keys waiting in `queue` or re-added while processing.
    dirty: HashSet<String>,
    processing: HashSet<String>,
    failures: HashMap<String, u32>,
}

/// A deduplicating work queue in the style of client-go's: a key is queued at most once and
/// handed to at most one worker at a time; an add while it is processed queues it again after.
#[derive(Default)]
pub struct WorkQueue {
    state: Mutex<QueueState>,
    notify: Notify,
}

impl WorkQueue {
    pub fn new() -> Arc<Self> {
        Arc::new(WorkQueue::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        let mut st = self.lock();
        if !st.dirty.insert(key.clone()) {
            return;
        }
        if !st.processing.contains(&key) {
            st.queue.push_back(key);
            drop(st);
            self.notify.notify_one();
        }
    }

    pub fn add_after(self: &Arc<Self>, key: String, delay: Duration) {
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(key);
        });
    }

    pub async fn get(&self) -> String {
        loop {
            let notified = self.notify.notified();
            {
                let mut st = self.lock();
                if let Some(key) = st.queue.pop_front() {
                    st.dirty.remove(&key);
                    st.processing.insert(key.clone());
                    let more = !st.queue.is_empty();
                    drop(st);
                    if more {
                        // Wake another worker for the rest.
                        self.notify.notify_one();
                    }
                    return key;
                }
            }
            notified.await;
        }
    }

    pub fn done(&self, key: &str) {
        let mut st = self.lock();
        st.processing.remove(key);
        if st.dirty.contains(key) {
            st.queue.push_back(key.to_string());
            drop(st);
            self.notify.notify_one();
        }
    }

    /// Records a failure and returns the delay before the next try: 5 ms doubling to 30 s.
    pub fn failed(&self, key: &str) -> Duration {
        let mut st = self.lock();
        let n = st.failures.entry(key.to_string()).or_default();
        *n = n.saturating_add(1);
        let ms = 5u64.saturating_mul(1u64 << (*n - 1).min(13));
        Duration::from_millis(ms.min(30_000))
    }

    pub fn forget(&self, key: &str) {
        self.lock().failures.remove(key);
    }

    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, rv: &str, label: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                labels: Some([("app".to_string(), label.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn by_app(p: &Pod) -> Vec<String> {
        p.metadata
            .labels
            .iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }

    #[test]
    fn cache_indexes_follow_updates_and_ignore_older_versions() {
        let c = Cache::new(by_app as Indexer<Pod>);
        c.upsert(pod("a", "5", "web"));
        c.upsert(pod("b", "6", "web"));
        assert_eq!(c.index_len("app=web"), 2);
        c.upsert(pod("a", "7", "db"));
        assert_eq!(c.index_len("app=web"), 1);
        assert_eq!(c.index_len("app=db"), 1);
        // An older version (a late watch event after our own write) changes nothing.
        c.upsert(pod("a", "6", "web"));
        assert_eq!(c.index_len("app=db"), 1);
        c.remove("ns/a");
        assert_eq!(c.index_len("app=db"), 0);
        // A late answer to our own write does not resurrect what the watch deleted.
        c.refresh(pod("a", "8", "db"));
        assert!(c.get("ns/a").is_none());
        c.refresh(pod("b", "8", "db"));
        assert_eq!(c.index_len("app=db"), 1);
        let gone = c.replace_all(vec![pod("c", "9", "x")]);
        assert_eq!(gone.len(), 1);
        assert_eq!(c.len(), 1);
        assert_eq!(c.index_len("app=web"), 0);
    }

    #[test]
    fn echoes_of_known_versions_are_recognised() {
        let cases = [
            (Some("5"), "5", true),
            (Some("6"), "5", true),
            (Some("5"), "6", false),
            (None, "5", false),
            // Versions that are not numbers are never assumed known.
            (Some("a"), "a", false),
        ];
        for (old, new, want) in cases {
            let old = old.map(|rv| pod("a", rv, "web"));
            let new = pod("a", new, "web");
            let ch = Change::Upsert {
                old: old.as_ref(),
                new: &new,
            };
            assert_eq!(ch.is_known_version(), want, "{old:?} -> {new:?}");
        }
        assert!(!Change::Deleted(&pod("a", "5", "web")).is_known_version());
    }

    #[tokio::test]
    async fn queue_dedups_and_serialises_a_key() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let k = q.get().await;
        assert_eq!(k, "a");
        // Re-added while processing: not handed out until done.
        q.add("a");
        assert_eq!(q.get().await, "b");
        assert!(q.is_empty());
        q.done("a");
        assert_eq!(q.get().await, "a");
        assert_eq!(q.failed("a"), Duration::from_millis(5));
        assert_eq!(q.failed("a"), Duration::from_millis(10));
        q.forget("a");
        assert_eq!(q.failed("a"), Duration::from_millis(5));
    }
}
