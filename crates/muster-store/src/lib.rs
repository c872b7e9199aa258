//! Revisioned, durable object storage for the API server.
//!
//! The store is a key/value map with one global, strictly increasing revision counter, in the
//! shape of etcd's API: every successful write gets the next revision, an object's
//! `resourceVersion` is the revision of its last write, lists are served at a revision, and a
//! watch replays every change after a revision (or fails with [`StoreError::Gone`] when that
//! revision has been compacted away).
//!
//! The store knows nothing of HTTP or of Kubernetes kinds. It knows exactly one thing about the
//! values it holds: they are JSON objects, and it writes the object's revision into
//! `metadata.resourceVersion` (as a decimal string) so that readers never have to patch it in.
//!
//! Keys look like `/registry/<group or "core">/<resource>/<namespace>/<name>` (cluster-scoped:
//! no namespace segment), so a namespace's objects of one resource share a prefix that ends in
//! `/`. Keys are ordered bytewise; lists come back in key order.
//!
//! Invariants every backend keeps:
//! - A write is acknowledged (its future resolves `Ok`) only once it is durable.
//! - Readers and watchers never see a write before it is durable.
//! - Revisions never go backwards, also across restarts.
//! - A watcher sees every change after its start revision exactly once, in revision order, or
//!   its stream ends with an error; it never silently skips events.

use std::sync::Arc;

mod backend;
pub mod redb_store;
pub use redb_store::{RedbStore, StoreOptions, StoreStats};
#[cfg(feature = "etcd")]
pub mod etcd_store;
#[cfg(feature = "etcd")]
pub use etcd_store::{EtcdOptions, EtcdStore, EtcdTls};

use bytes::Bytes;
use futures::future::BoxFuture;
use serde_json::Value;

pub type Revision = u64;

/// One stored object as readers see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub key: Arc<str>,
    /// Revision of the write that created this key (etcd's `create_revision`).
    pub create_revision: Revision,
    /// Revision of the last write to this key; equals `metadata.resourceVersion` in `value`.
    pub mod_revision: Revision,
    /// The object as compact JSON, with `metadata.resourceVersion` set to `mod_revision`.
    pub value: Bytes,
}

impl Object {
    /// Parses the stored JSON. Values are written by the store itself, so this only fails on
    /// disk corruption.
    pub fn json(&self) -> Result<Value, StoreError> {
        serde_json::from_slice(&self.value).map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}

#[derive(Clone, Debug)]
pub struct ListResult {
    pub items: Vec<Object>,
    /// The store revision this list reflects.
    pub revision: Revision,
    /// When a `limit` cut the list short: the key of the last returned item, to pass back as
    /// `start_after`.
    pub continue_after: Option<Arc<str>>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Created or updated. `prev` is the value before the write, when there was one.
    Put {
        object: Object,
        prev: Option<Object>,
    },
    /// Deleted at `revision`. `object` is the last value, re-stamped with
    /// `mod_revision == revision` and `metadata.resourceVersion` set to it, which is what a
    /// Kubernetes DELETED watch event carries.
    Delete { object: Object, revision: Revision },
    /// Nothing under the watched prefix changed up to and including this revision. Sent
    /// periodically on idle streams so that the API server can emit BOOKMARK events.
    Progress(Revision),
}

impl Event {
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put { object, .. } => object.mod_revision,
            Event::Delete { revision, .. } => *revision,
            Event::Progress(rev) => *rev,
        }
    }
}

/// A live watch. Dropping it cancels the watch.
pub struct WatchStream {
    pub rx: tokio::sync::mpsc::Receiver<Result<Event, StoreError>>,
}

impl WatchStream {
    /// The next event; `None` when the store closed the stream (shut down).
    /// An `Err` (for example [`StoreError::Gone`] when the watcher fell too far behind) is the
    /// last item.
    pub async fn next(&mut self) -> Option<Result<Event, StoreError>> {
        self.rx.recv().await
    }
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("key already exists: {0}")]
    AlreadyExists(String),
    #[error("key not found: {0}")]
    NotFound(String),
    /// The precondition revision did not match the current `mod_revision`.
    #[error("conflict on {key}: expected revision {expected}, current {current}")]
    Conflict {
        key: String,
        expected: Revision,
        current: Revision,
    },
    /// The requested revision was compacted away (410 Gone / Expired).
    #[error("revision {requested} is compacted; oldest available is {oldest}")]
    Gone {
        requested: Revision,
        oldest: Revision,
    },
    /// The requested revision is in the future.
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    /// The backend cannot be reached (503).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The backend gave no answer within the request timeout (504). A write that timed out
    /// may still take effect.
    #[error("storage timed out: {0}")]
    Timeout(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("storage I/O error: {0}")]
    Io(String),
    /// The value is not a JSON object with a `metadata` object.
    #[error("invalid value: {0}")]
    InvalidValue(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The storage contract the API server is written against. Implementations: the embedded redb
/// store ([`redb_store::RedbStore`]) and, behind the `etcd` feature, an etcd-backed store.
pub trait Store: Send + Sync + 'static {
    /// Current revision (the revision of the latest durable write).
    fn revision(&self) -> Revision;

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Object>>>;

    /// Objects whose key starts with `prefix`, in key order, strictly after `start_after` if
    /// given, at most `limit` items if given.
    fn list<'a>(
        &'a self,
        prefix: &'a str,
        start_after: Option<&'a str>,
        limit: Option<usize>,
    ) -> BoxFuture<'a, Result<ListResult>>;

    /// Creates `key`; fails with `AlreadyExists` if it exists.
    fn create<'a>(&'a self, key: &'a str, value: Value) -> BoxFuture<'a, Result<Object>>;

    /// Replaces `key`. With `expected = Some(rev)`, fails with `Conflict` unless the current
    /// `mod_revision` is `rev`. Fails with `NotFound` if the key does not exist.
    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Value,
        expected: Option<Revision>,
    ) -> BoxFuture<'a, Result<Object>>;

    /// Deletes `key`, with the same precondition rule as `update`. Returns the deleted object
    /// re-stamped with the deletion revision.
    fn delete<'a>(
        &'a self,
        key: &'a str,
        expected: Option<Revision>,
    ) -> BoxFuture<'a, Result<Object>>;

    /// Every change under `prefix` with a revision greater than `after`, then live changes.
    /// Fails with `Gone` when `after` is older than the retained history allows.
    fn watch<'a>(&'a self, prefix: &'a str, after: Revision) -> BoxFuture<'a, Result<WatchStream>>;

    /// A list and a watch that starts exactly at the list's revision, so that nothing is missed
    /// or duplicated between them.
    fn list_and_watch<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<(ListResult, WatchStream)>>;
}
