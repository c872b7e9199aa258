//! Helpers shared by the store's integration tests.
#![allow(dead_code)] // each test binary uses a different subset

pub mod behaviour;
pub mod etcd;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use muster_store::{Event, RedbStore, Store, StoreError, StoreOptions, WatchStream};
use serde_json::{Value, json};

pub fn options() -> StoreOptions {
    StoreOptions {
        // Long enough that no test sees a progress event it did not ask for.
        progress_interval: Duration::from_secs(3600),
        ..StoreOptions::default()
    }
}

pub fn open(dir: &Path, options: StoreOptions) -> Arc<RedbStore> {
    RedbStore::open(&dir.join("store.redb"), options).expect("open store")
}

/// A small pod-shaped object.
pub fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    })
}

pub fn resource_version(object: &muster_store::Object) -> String {
    object.json().unwrap()["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion is a string")
        .to_string()
}

/// The next item of a watch, failing the test if none arrives within 5 s.
pub async fn next_event(stream: &mut WatchStream) -> Option<Result<Event, StoreError>> {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("watch event within 5 s")
}

/// Asserts that nothing is waiting in the stream.
pub fn assert_idle(stream: &mut WatchStream) {
    match stream.rx.try_recv() {
        Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {}
        other => panic!("expected an idle stream, got {other:?}"),
    }
}

/// (kind, key, revision) of an event, for compact comparisons.
pub fn summary(event: &Event) -> (&'static str, String, u64) {
    match event {
        Event::Put { object, prev } => (
            if prev.is_some() { "update" } else { "create" },
            object.key.to_string(),
            object.mod_revision,
        ),
        Event::Delete { object, revision } => ("delete", object.key.to_string(), *revision),
        Event::Progress(revision) => ("progress", String::new(), *revision),
    }
}

/// The next event that is not a progress notification.
pub async fn next_change(stream: &mut WatchStream) -> Option<Result<Event, StoreError>> {
    loop {
        match next_event(stream).await {
            Some(Ok(Event::Progress(_))) => continue,
            other => return other,
        }
    }
}

/// Asserts that no change arrives within a moment (progress notifications are allowed): for
/// backends whose events come from another process.
pub async fn assert_no_change(stream: &mut WatchStream) {
    tokio::time::sleep(Duration::from_millis(150)).await;
    loop {
        match stream.rx.try_recv() {
            Ok(Ok(Event::Progress(_))) => continue,
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => return,
            other => panic!("expected no change, got {other:?}"),
        }
    }
}

pub async fn create_all<S: Store + ?Sized>(store: &S, keys: &[&str]) {
    for key in keys {
        store.create(key, pod(key)).await.expect("create");
    }
}
