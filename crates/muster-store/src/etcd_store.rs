//! A [`Store`] on a real etcd cluster (etcd v3 API, through the `etcd-client` crate).
//!
//! # Mapping
//!
//! - **Revisions.** etcd's revision is the resourceVersion: an object's `mod_revision` and
//!   `create_revision` are etcd's, and every object handed out carries
//!   `metadata.resourceVersion` = its `mod_revision`. The value stored in etcd is the caller's
//!   JSON with `metadata.resourceVersion` blanked (kept in place, so that key order is the same
//!   as with the embedded store); the revision is stamped in on every read.
//! - **Keys.** Keys given to the store already start with `/registry/...`; the optional
//!   [`EtcdOptions::key_prefix`] goes in front of them in etcd (so several clusters can share
//!   one etcd) and is stripped again on the way out.
//! - **Writes** are single transactions, so preconditions are checked by etcd itself and hold
//!   across any number of API servers: create compares `create_revision == 0`; update and
//!   delete compare `create_revision > 0` (the key exists) and, with an expected revision,
//!   `mod_revision == expected`. The failure branch reads the key in the same transaction,
//!   which tells `NotFound` from `Conflict` (with the current revision) without a race.
//! - **Reads** are linearizable ranges (served through the leader's read index), so a read
//!   after an acknowledged write, through any API server, sees it. A list is one range
//!   request, so it reflects exactly one revision.
//! - **Watch** uses etcd's watch with `prev_kv` from `after + 1`: puts carry the previous
//!   value, deletes the last value re-stamped with the deletion revision. A start revision that
//!   etcd has compacted away is [`StoreError::Gone`]. If the connection to one member breaks,
//!   the stream resumes from the next revision it still needs on any reachable member; only
//!   when no member answers within the request timeout does it end with `Unavailable`.
//!   [`Event::Progress`] comes from etcd's own per-watcher progress notifications, which etcd
//!   sends in order with the watcher's events (only to watchers that are caught up) every
//!   `--experimental-watch-progress-notify-interval` (10 minutes unless the etcd server is
//!   started with a shorter one; muster's docs recommend 5s). A client-side `RequestProgress`
//!   is not used: etcd 3.4 answers it with the store revision even for a watcher that has not
//!   caught up, which could make a bookmark claim revisions whose events are still coming.
//! - **Failures.** A request that fails to reach etcd or finds no leader is answered
//!   `Unavailable` (the API's 503); one that gets no answer within
//!   [`EtcdOptions::request_timeout`] (or that etcd itself reports as timed out) is answered
//!   `Timeout` (the API's 504). Never a guess: a write that timed out may still have been
//!   committed, as with any etcd client, and the caller re-reads. The gRPC channel reconnects
//!   by itself, so the store recovers when etcd is back, with no restart.
//! - **[`Store::revision`]** is the highest etcd revision this store has seen in any response,
//!   not etcd's live revision: the trait's method is synchronous, so it cannot ask etcd, and
//!   following every write of every API server would cost a full watch stream per process.
//!   What it promises is enough for its callers: it is at least the revision of everything
//!   this store has returned, so a resourceVersion taken from it never hides an object or an
//!   event that this process already handed out. Anything that needs etcd's present revision
//!   asks for it (a list, or [`Store::watch`], which reads it first).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KeyValue,
    KvClient, PutOptions, Txn, TxnOp, TxnOpResponse, WatchClient, WatchOptions,
};
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::{Event, ListResult, Object, Result, Revision, Store, StoreError, WatchStream};

/// How an [`EtcdStore`] reaches etcd.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// Put in front of every key in etcd (for example `/cluster-a`), so that several muster
    /// clusters can share one etcd. Empty by default: keys are stored as given
    /// (`/registry/...`), as Kubernetes does.
    pub key_prefix: String,
    /// Client certificate, key and CA for an etcd that requires TLS (`https://` endpoints).
    pub tls: Option<EtcdTls>,
    /// The longest a single request may take before it is answered `Timeout`; also how
    /// long a broken watch keeps trying to resume before it ends with `Unavailable`.
    pub request_timeout: Duration,
    /// The longest a TCP/TLS connection attempt to one member may take.
    pub dial_timeout: Duration,
    /// How many events may wait unread in one watch stream before the store stops reading
    /// from etcd for it (etcd then buffers, and cancels the watch if it falls too far behind).
    pub watch_capacity: usize,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            key_prefix: String::new(),
            tls: None,
            request_timeout: Duration::from_secs(5),
            dial_timeout: Duration::from_secs(2),
            watch_capacity: 4_096,
        }
    }
}

/// PEM files for mutual TLS with etcd.
#[derive(Clone, Debug)]
pub struct EtcdTls {
    /// The CA that signed the etcd members' serving certificates.
    pub ca_file: PathBuf,
    /// This client's certificate and key (etcd's `--client-cert-auth`). Both or neither.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// A [`Store`] on an etcd cluster. See the module documentation.
pub struct EtcdStore {
    /// Owns the balanced channel's endpoint set; `kv` and `watch` share its connections.
    _client: Client,
    /// The KV and watch clients, with no cap on response size: a list of many objects easily
    /// exceeds gRPC's default 4 MiB.
    kv: KvClient,
    watch: WatchClient,
    prefix: String,
    options: EtcdOptions,
    /// The highest etcd revision seen in any response; backs [`Store::revision`].
    revision: AtomicU64,
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` (`http://host:port` or `https://host:port`; several
    /// members are balanced and failed over) and reads the current revision, so an unreachable
    /// cluster is reported here as `Unavailable`.
    pub async fn connect(endpoints: &[String], options: EtcdOptions) -> Result<Arc<EtcdStore>> {
        if endpoints.is_empty() {
            return Err(StoreError::InvalidValue(
                "etcd: at least one endpoint is required".into(),
            ));
        }
        if options.watch_capacity == 0 {
            return Err(StoreError::InvalidValue(
                "EtcdOptions: watch_capacity must be at least 1".into(),
            ));
        }
        if options.key_prefix.ends_with('/') {
            // Keys start with '/', so a trailing one would make "//registry".
            return Err(StoreError::InvalidValue(format!(
                "etcd key prefix {:?} must not end with '/'",
                options.key_prefix
            )));
        }
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.dial_timeout)
            .with_keep_alive(Duration::from_secs(10), options.request_timeout)
            .with_keep_alive_while_idle(true)
            // A member cut off from the leader fails requests at once instead of hanging.
            .with_require_leader(true);
        if let Some(tls) = &options.tls {
            connect = connect.with_tls(tls_options(tls)?);
        }
        let client = tokio::time::timeout(
            options.request_timeout,
            Client::connect(endpoints, Some(connect)),
        )
        .await
        .map_err(|_| {
            StoreError::Unavailable(format!(
                "etcd connecting: no answer within {:?}",
                options.request_timeout
            ))
        })?
        .map_err(|e| etcd_error("connecting", e))?;
        let store = Arc::new(EtcdStore {
            kv: client
                .kv_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES)
                .max_encoding_message_size(MAX_RESPONSE_BYTES),
            watch: client
                .watch_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
            _client: client,
            prefix: options.key_prefix.clone(),
            options,
            revision: AtomicU64::new(0),
        });
        // At connect time a timeout also just means "cannot use this cluster".
        store.current_revision().await.map_err(|e| match e {
            StoreError::Timeout(message) => StoreError::Unavailable(message),
            other => other,
        })?;
        tracing::info!(
            endpoints = ?endpoints,
            revision = store.revision(),
            prefix = %store.prefix,
            "connected to etcd"
        );
        Ok(store)
    }

    fn etcd_key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(self.prefix.as_bytes());
        full.extend_from_slice(key.as_bytes());
        full
    }

    /// Records the revision of an etcd response for [`Store::revision`] and returns it.
    fn observe(&self, header: Option<&etcd_client::ResponseHeader>) -> Revision {
        let revision = revision_of(header.map_or(0, |h| h.revision()));
        self.revision.fetch_max(revision, Ordering::AcqRel);
        revision
    }

    /// Runs one etcd request under the request timeout. A request that failed before it
    /// reached any member (connection refused, for example to a member that just died) is
    /// retried until the timeout: it cannot have taken effect, so retrying it is safe even for
    /// a write, and the balancer moves it to a live member. Any other failure is final.
    async fn call<T, F, Fut>(&self, what: &str, request: F) -> Result<T>
    where
        F: FnMut(KvClient) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.call_raw(what, request)
            .await
            .map_err(|failure| match failure {
                Failure::TimedOut => timed_out(what, self.options.request_timeout),
                Failure::Unreachable(e) => unreachable(what, self.options.request_timeout, e),
                Failure::Etcd(e) => etcd_error(what, e),
            })
    }

    /// [`Self::call`] for callers that need to look at etcd's error themselves.
    async fn call_raw<T, F, Fut>(&self, what: &str, mut request: F) -> Result<T, Failure>
    where
        F: FnMut(KvClient) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.options.request_timeout;
        // Once an attempt could not reach any member, a later one that hangs is most likely
        // waiting for a connection too: running out of time then means "unreachable".
        let mut not_sent: Option<etcd_client::Error> = None;
        loop {
            match tokio::time::timeout_at(deadline, request(self.kv.clone())).await {
                Err(_) => {
                    return Err(match not_sent {
                        Some(e) => Failure::Unreachable(e),
                        None => Failure::TimedOut,
                    });
                }
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(e)) if never_sent(&e) => {
                    if tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
                        return Err(Failure::Unreachable(e));
                    }
                    tracing::debug!(error = %e, "etcd {what}: not sent; retrying");
                    not_sent = Some(e);
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Ok(Err(e)) => return Err(Failure::Etcd(e)),
            }
        }
    }

    /// Asks etcd for its current revision (a count-only range on one key).
    async fn current_revision(&self) -> Result<Revision> {
        let key = self.etcd_key("/");
        let response = self
            .call("reading the revision", |mut client| {
                let key = key.clone();
                async move {
                    client
                        .get(key, Some(GetOptions::new().with_count_only()))
                        .await
                }
            })
            .await?;
        Ok(self.observe(response.header()))
    }

    /// Turns a key/value from etcd into an [`Object`] stamped with `mod_revision`.
    fn object(&self, kv: &KeyValue) -> Result<Object> {
        self.object_at(kv, revision_of(kv.mod_revision()))
    }

    /// Like [`Self::object`], but stamped with `revision` (a deletion's revision).
    fn object_at(&self, kv: &KeyValue, revision: Revision) -> Result<Object> {
        let key = std::str::from_utf8(kv.key())
            .ok()
            .and_then(|key| key.strip_prefix(self.prefix.as_str()))
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "etcd key {:?} is not UTF-8 under the prefix {:?}",
                    String::from_utf8_lossy(kv.key()),
                    self.prefix
                ))
            })?;
        Ok(Object {
            key: Arc::from(key),
            create_revision: revision_of(kv.create_revision()),
            mod_revision: revision,
            value: stamp_stored(key, kv.value(), revision)?,
        })
    }

    /// The etcd range `[start, end)` holding every key under `prefix`.
    fn prefix_range(&self, prefix: &str) -> (Vec<u8>, Vec<u8>) {
        // Every key starts with '/': with a key prefix, "everything" is `<key prefix>/`, so
        // that the keys of a cluster under "/c" never include those of one under "/cc".
        let prefix = if prefix.is_empty() && !self.prefix.is_empty() {
            "/"
        } else {
            prefix
        };
        let start = self.etcd_key(prefix);
        let end = prefix_end(&start);
        (start, end)
    }

    /// The etcd range `[start, end)` holding the keys under `prefix` strictly after
    /// `start_after`; `None` when that range is empty.
    fn range(&self, prefix: &str, start_after: Option<&str>) -> Option<(Vec<u8>, Vec<u8>)> {
        let (full_prefix, end) = self.prefix_range(prefix);
        let start = match start_after {
            Some(after) if after >= prefix => {
                let mut start = self.etcd_key(after);
                start.push(0); // the smallest key after `after`
                start
            }
            _ => full_prefix,
        };
        // An end of [0] means "no upper bound" to etcd.
        if end != [0] && start >= end {
            return None;
        }
        Some((start, end))
    }

    /// Runs a single-key write transaction: `compares` decide between `write` and a read of
    /// the key, so a failed precondition also says what is there now.
    async fn write_txn(
        &self,
        what: &str,
        key: &str,
        compares: Vec<Compare>,
        write: TxnOp,
    ) -> Result<WriteOutcome> {
        let txn = Txn::new()
            .when(compares)
            .and_then([write])
            .or_else([TxnOp::get(self.etcd_key(key), None)]);
        let response = self
            .call(what, |mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })
            .await?;
        // A transaction's header revision is the revision its write created.
        let revision = self.observe(response.header());
        let first = response.op_responses().into_iter().next();
        if response.succeeded() {
            let prev = match first {
                Some(TxnOpResponse::Put(put)) => put.prev_key().cloned(),
                Some(TxnOpResponse::Delete(delete)) => delete.prev_kvs().first().cloned(),
                _ => None,
            };
            Ok(WriteOutcome::Written { revision, prev })
        } else {
            let current = match first {
                Some(TxnOpResponse::Get(get)) => get.kvs().first().cloned(),
                _ => None,
            };
            Ok(WriteOutcome::Failed { current })
        }
    }

    /// Update and delete share their preconditions: the key exists and, with `expected`, its
    /// `mod_revision` is `expected`.
    fn existing_compares(&self, key: &str, expected: Option<Revision>) -> Vec<Compare> {
        let mut compares = vec![Compare::create_revision(
            self.etcd_key(key),
            CompareOp::Greater,
            0,
        )];
        if let Some(expected) = expected {
            compares.push(Compare::mod_revision(
                self.etcd_key(key),
                CompareOp::Equal,
                expected.min(i64::MAX as u64) as i64,
            ));
        }
        compares
    }

    /// Opens an etcd watch on `[start, end)` from `from` and pumps it into a [`WatchStream`].
    fn spawn_watch(&self, start: Vec<u8>, end: Vec<u8>, after: Revision) -> WatchStream {
        let (tx, rx) = mpsc::channel(self.options.watch_capacity);
        let pump = WatchPump {
            watch: self.watch.clone(),
            prefix: self.prefix.clone(),
            start,
            end,
            delivered: after,
            request_timeout: self.options.request_timeout,
            tx,
        };
        tokio::spawn(pump.run());
        WatchStream { rx }
    }

    /// When a watch from `after` is impossible because etcd compacted that history: the
    /// oldest `after` that etcd can still serve, learned from etcd's own cancel response.
    async fn compacted_oldest(&self, after: Revision) -> Result<Revision> {
        let options = WatchOptions::new()
            .with_all_keys()
            .with_start_revision(after as i64 + 1);
        let mut stream = self
            .call("probing the compacted revision", |_| {
                let (mut watch, options) = (self.watch.clone(), options.clone());
                async move { watch.watch(vec![0], Some(options)).await }
            })
            .await?;
        let deadline = tokio::time::Instant::now() + self.options.request_timeout;
        loop {
            let response = match tokio::time::timeout_at(deadline, stream.message()).await {
                Err(_) => {
                    return Err(timed_out(
                        "probing the compacted revision",
                        self.options.request_timeout,
                    ));
                }
                Ok(Err(e)) => return Err(etcd_error("probing the compacted revision", e)),
                Ok(Ok(None)) => {
                    return Err(StoreError::Unavailable(
                        "etcd closed the watch stream".into(),
                    ));
                }
                Ok(Ok(Some(response))) => response,
            };
            if response.compact_revision() > 0 {
                return Ok(revision_of(response.compact_revision()).saturating_sub(1));
            }
            if response.canceled() || !response.events().is_empty() {
                // Not compacted after all (a race with the range check): any answer that is
                // not a compaction means `after` is servable.
                return Ok(after);
            }
        }
    }
}

/// Why [`EtcdStore::call_raw`] got no answer.
enum Failure {
    TimedOut,
    /// Every attempt failed to reach a member until the time was up (the last error).
    Unreachable(etcd_client::Error),
    Etcd(etcd_client::Error),
}

enum WriteOutcome {
    Written {
        revision: Revision,
        prev: Option<KeyValue>,
    },
    Failed {
        current: Option<KeyValue>,
    },
}

impl Store for EtcdStore {
    fn revision(&self) -> Revision {
        self.revision.load(Ordering::Acquire)
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Object>>> {
        Box::pin(async move {
            let etcd_key = self.etcd_key(key);
            let response = self
                .call("get", |mut client| {
                    let etcd_key = etcd_key.clone();
                    async move { client.get(etcd_key, None).await }
                })
                .await?;
            self.observe(response.header());
            response.kvs().first().map(|kv| self.object(kv)).transpose()
        })
    }

    fn list<'a>(
        &'a self,
        prefix: &'a str,
        start_after: Option<&'a str>,
        limit: Option<usize>,
    ) -> BoxFuture<'a, Result<ListResult>> {
        Box::pin(async move {
            let range = self.range(prefix, start_after);
            // etcd reads a limit of 0 as "no limit".
            let (Some((start, end)), false) = (range, limit == Some(0)) else {
                return Ok(ListResult {
                    items: Vec::new(),
                    revision: self.current_revision().await?,
                    continue_after: None,
                });
            };
            let mut options = GetOptions::new().with_range(end);
            if let Some(limit) = limit {
                options = options.with_limit(limit.min(i64::MAX as usize) as i64);
            }
            let response = self
                .call("list", |mut client| {
                    let (start, options) = (start.clone(), options.clone());
                    async move { client.get(start, Some(options)).await }
                })
                .await?;
            let revision = self.observe(response.header());
            let items = response
                .kvs()
                .iter()
                .map(|kv| self.object(kv))
                .collect::<Result<Vec<_>>>()?;
            let continue_after = match items.last() {
                Some(last) if response.more() => Some(last.key.clone()),
                _ => None,
            };
            Ok(ListResult {
                items,
                revision,
                continue_after,
            })
        })
    }

    fn create<'a>(&'a self, key: &'a str, value: Value) -> BoxFuture<'a, Result<Object>> {
        Box::pin(async move {
            let (value, stored) = prepare(key, value)?;
            let compares = vec![Compare::create_revision(
                self.etcd_key(key),
                CompareOp::Equal,
                0,
            )];
            let put = TxnOp::put(self.etcd_key(key), stored, None);
            match self.write_txn("create", key, compares, put).await? {
                WriteOutcome::Written { revision, .. } => Ok(Object {
                    key: Arc::from(key),
                    create_revision: revision,
                    mod_revision: revision,
                    value: stamp(key, value, revision)?,
                }),
                WriteOutcome::Failed { .. } => Err(StoreError::AlreadyExists(key.to_string())),
            }
        })
    }

    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Value,
        expected: Option<Revision>,
    ) -> BoxFuture<'a, Result<Object>> {
        Box::pin(async move {
            let (value, stored) = prepare(key, value)?;
            let compares = self.existing_compares(key, expected);
            let put = TxnOp::put(
                self.etcd_key(key),
                stored,
                Some(PutOptions::new().with_prev_key()),
            );
            match self.write_txn("update", key, compares, put).await? {
                WriteOutcome::Written { revision, prev } => {
                    let prev = prev.ok_or_else(|| missing_prev(key))?;
                    Ok(Object {
                        key: Arc::from(key),
                        create_revision: revision_of(prev.create_revision()),
                        mod_revision: revision,
                        value: stamp(key, value, revision)?,
                    })
                }
                WriteOutcome::Failed { current } => Err(precondition_error(key, expected, current)),
            }
        })
    }

    fn delete<'a>(
        &'a self,
        key: &'a str,
        expected: Option<Revision>,
    ) -> BoxFuture<'a, Result<Object>> {
        Box::pin(async move {
            let compares = self.existing_compares(key, expected);
            let delete = TxnOp::delete(
                self.etcd_key(key),
                Some(DeleteOptions::new().with_prev_key()),
            );
            match self.write_txn("delete", key, compares, delete).await? {
                WriteOutcome::Written { revision, prev } => {
                    let prev = prev.ok_or_else(|| missing_prev(key))?;
                    self.object_at(&prev, revision)
                }
                WriteOutcome::Failed { current } => Err(precondition_error(key, expected, current)),
            }
        })
    }

    fn watch<'a>(&'a self, prefix: &'a str, after: Revision) -> BoxFuture<'a, Result<WatchStream>> {
        Box::pin(async move {
            let current = self.current_revision().await?;
            if after > current {
                return Err(StoreError::FutureRevision {
                    requested: after,
                    current,
                });
            }
            if after < current {
                // The watch starts at after + 1; a range at that revision fails exactly when
                // etcd has compacted it away.
                let key = self.etcd_key("/");
                let options = GetOptions::new()
                    .with_count_only()
                    .with_revision(after as i64 + 1);
                let probe = self
                    .call_raw("watch", |mut client| {
                        let (key, options) = (key.clone(), options.clone());
                        async move { client.get(key, Some(options)).await }
                    })
                    .await;
                match probe {
                    Ok(_) => {}
                    Err(Failure::Etcd(e)) if is_compacted(&e) => {
                        let oldest = self.compacted_oldest(after).await?;
                        if oldest > after {
                            return Err(StoreError::Gone {
                                requested: after,
                                oldest,
                            });
                        }
                    }
                    Err(Failure::TimedOut) => {
                        return Err(timed_out("watch", self.options.request_timeout));
                    }
                    Err(Failure::Unreachable(e)) => {
                        return Err(unreachable("watch", self.options.request_timeout, e));
                    }
                    Err(Failure::Etcd(e)) => return Err(etcd_error("watch", e)),
                }
            }
            let (start, end) = self.prefix_range(prefix);
            Ok(self.spawn_watch(start, end, after))
        })
    }

    fn list_and_watch<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<(ListResult, WatchStream)>> {
        Box::pin(async move {
            // The list is one range at revision R; the watch starts at R + 1, so etcd's
            // history joins them without a gap or an overlap.
            let list = self.list(prefix, None, None).await?;
            let (start, end) = self.prefix_range(prefix);
            let stream = self.spawn_watch(start, end, list.revision);
            Ok((list, stream))
        })
    }
}

/// One watch: reads etcd's watch stream and forwards mapped events, resuming on another
/// connection when the current one breaks.
struct WatchPump {
    watch: WatchClient,
    prefix: String,
    start: Vec<u8>,
    end: Vec<u8>,
    /// Every event up to this revision has been forwarded (or did not exist).
    delivered: Revision,
    request_timeout: Duration,
    tx: mpsc::Sender<Result<Event>>,
}

impl WatchPump {
    async fn run(mut self) {
        // When the watch broke and nothing has come since; bounded by the request timeout.
        let mut broken_since: Option<tokio::time::Instant> = None;
        let mut backoff = Duration::from_millis(50);
        loop {
            if let Some(since) = broken_since {
                if since.elapsed() >= self.request_timeout {
                    let _ = self
                        .tx
                        .send(Err(StoreError::Unavailable(format!(
                            "etcd watch could not be resumed after revision {} within {:?}",
                            self.delivered, self.request_timeout
                        ))))
                        .await;
                    return;
                }
                tokio::select! {
                    _ = self.tx.closed() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            let options = WatchOptions::new()
                .with_range(self.end.clone())
                .with_start_revision(self.delivered as i64 + 1)
                .with_prev_key()
                .with_progress_notify();
            let mut watch = self.watch.clone();
            let opened = tokio::select! {
                _ = self.tx.closed() => return,
                opened = tokio::time::timeout(
                    self.request_timeout,
                    watch.watch(self.start.clone(), Some(options)),
                ) => opened,
            };
            let mut stream = match opened {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "etcd watch: opening failed; retrying");
                    broken_since.get_or_insert_with(tokio::time::Instant::now);
                    continue;
                }
                Err(_) => {
                    broken_since.get_or_insert_with(tokio::time::Instant::now);
                    continue;
                }
            };
            loop {
                let message = tokio::select! {
                    _ = self.tx.closed() => return,
                    message = stream.message() => message,
                };
                let response = match message {
                    Ok(Some(response)) => response,
                    Ok(None) | Err(_) => {
                        tracing::debug!(
                            delivered = self.delivered,
                            "etcd watch: stream broke; resuming"
                        );
                        broken_since.get_or_insert_with(tokio::time::Instant::now);
                        break;
                    }
                };
                broken_since = None;
                backoff = Duration::from_millis(50);
                if response.compact_revision() > 0 {
                    let oldest = revision_of(response.compact_revision()).saturating_sub(1);
                    let _ = self
                        .tx
                        .send(Err(StoreError::Gone {
                            requested: self.delivered,
                            oldest,
                        }))
                        .await;
                    return;
                }
                if response.canceled() {
                    // Canceled for another reason (for example the member lost its leader):
                    // resume elsewhere from where we are.
                    tracing::debug!(reason = response.cancel_reason(), "etcd watch canceled");
                    broken_since.get_or_insert_with(tokio::time::Instant::now);
                    break;
                }
                if response.created() {
                    continue;
                }
                if response.events().is_empty() {
                    let revision = revision_of(response.header().map_or(0, |h| h.revision()));
                    if revision > self.delivered {
                        self.delivered = revision;
                    }
                    if self
                        .tx
                        .send(Ok(Event::Progress(self.delivered)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    continue;
                }
                for event in response.events() {
                    let mapped = self.map_event(event);
                    let failed = mapped.is_err();
                    if let Ok(event) = &mapped {
                        self.delivered = event.revision();
                    }
                    if self.tx.send(mapped).await.is_err() || failed {
                        return;
                    }
                }
            }
        }
    }

    fn map_event(&self, event: &etcd_client::Event) -> Result<Event> {
        let kv = event
            .kv()
            .ok_or_else(|| StoreError::Corrupt("etcd watch event without a key".into()))?;
        let store_key = |kv: &KeyValue| -> Result<Arc<str>> {
            std::str::from_utf8(kv.key())
                .ok()
                .and_then(|key| key.strip_prefix(self.prefix.as_str()))
                .map(Arc::from)
                .ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "etcd key {:?} is not UTF-8 under the prefix {:?}",
                        String::from_utf8_lossy(kv.key()),
                        self.prefix
                    ))
                })
        };
        let decode = |kv: &KeyValue, revision: Revision| -> Result<Object> {
            let key = store_key(kv)?;
            Ok(Object {
                create_revision: revision_of(kv.create_revision()),
                mod_revision: revision,
                value: stamp_stored(&key, kv.value(), revision)?,
                key,
            })
        };
        let revision = revision_of(kv.mod_revision());
        match event.event_type() {
            EventType::Put => {
                let object = decode(kv, revision)?;
                // A create has no previous value; etcd sends none for it either.
                let prev = match event.prev_kv() {
                    Some(prev) if kv.create_revision() != kv.mod_revision() => {
                        Some(decode(prev, revision_of(prev.mod_revision()))?)
                    }
                    _ => None,
                };
                Ok(Event::Put { object, prev })
            }
            EventType::Delete => {
                let prev = event.prev_kv().ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "etcd delete event for {:?} without its previous value",
                        String::from_utf8_lossy(kv.key())
                    ))
                })?;
                Ok(Event::Delete {
                    object: decode(prev, revision)?,
                    revision,
                })
            }
        }
    }
}

/// Validates a value (a JSON object with a `metadata` object, as the embedded store requires)
/// and returns it with the bytes to store: `metadata.resourceVersion` blanked if present, so
/// that etcd never holds a revision that could go stale.
fn prepare(key: &str, mut value: Value) -> Result<(Value, Vec<u8>)> {
    let metadata = metadata_mut(key, &mut value)?;
    if let Some(version) = metadata.get_mut("resourceVersion") {
        *version = Value::String(String::new());
    }
    let stored =
        serde_json::to_vec(&value).map_err(|e| StoreError::InvalidValue(format!("{key}: {e}")))?;
    Ok((value, stored))
}

/// The object's JSON with `metadata.resourceVersion` set to `revision`: in place when the key
/// exists, else as the last key of `metadata` (the same bytes as the embedded store).
fn stamp(key: &str, mut value: Value, revision: Revision) -> Result<Bytes> {
    metadata_mut(key, &mut value)?.insert(
        "resourceVersion".to_string(),
        Value::String(revision.to_string()),
    );
    serde_json::to_vec(&value)
        .map(Bytes::from)
        .map_err(|e| StoreError::InvalidValue(format!("{key}: {e}")))
}

/// The JSON of a value as etcd holds it, with `metadata.resourceVersion` set to `revision`:
/// the same bytes as parsing it and [`stamp`]ing the result. Values this store wrote are
/// compact JSON, so the revision is spliced in where [`revision_spot`] finds it (a list of
/// many objects then costs one scan of each, not a parse and a re-serialisation); anything
/// else takes the parse.
fn stamp_stored(key: &str, stored: &[u8], revision: Revision) -> Result<Bytes> {
    use std::io::Write;
    let Some(spot) = revision_spot(stored) else {
        let value: Value = serde_json::from_slice(stored)
            .map_err(|e| StoreError::Corrupt(format!("{key}: {e}")))?;
        return stamp(key, value, revision);
    };
    let mut json = Vec::with_capacity(stored.len() + 42);
    // Writing into a Vec cannot fail.
    match spot {
        RevisionSpot::Value(range) => {
            json.extend_from_slice(&stored[..range.start]);
            let _ = write!(json, "\"{revision}\"");
            json.extend_from_slice(&stored[range.end..]);
        }
        RevisionSpot::Missing { close, empty } => {
            json.extend_from_slice(&stored[..close]);
            let comma = if empty { "" } else { "," };
            let _ = write!(json, "{comma}\"resourceVersion\":\"{revision}\"");
            json.extend_from_slice(&stored[close..]);
        }
    }
    Ok(Bytes::from(json))
}

/// Where `metadata.resourceVersion` goes in a JSON object.
#[derive(Debug, PartialEq)]
enum RevisionSpot {
    /// Its value is at these bytes.
    Value(std::ops::Range<usize>),
    /// `metadata` has no such key: it goes before the `}` at `close`, after a comma unless
    /// `metadata` is empty.
    Missing { close: usize, empty: bool },
}

/// Finds [`RevisionSpot`] in compact JSON (no whitespace outside strings) of an object whose
/// `metadata` is an object, checking the structure of the two outer levels as it goes.
/// `None` for anything else (whitespace, escapes in a key, duplicate keys, no `metadata`):
/// the caller then parses, which also reports what is wrong. Values other than `metadata`
/// are skipped, not validated; the API server parses the result anyway.
fn revision_spot(json: &[u8]) -> Option<RevisionSpot> {
    /// The key at `at` (a string without escapes) and the index after its `:`.
    fn key(json: &[u8], at: usize) -> Option<(&[u8], usize)> {
        if json.get(at) != Some(&b'"') {
            return None;
        }
        let len = json[at + 1..].iter().position(|&b| b == b'"')?;
        let name = &json[at + 1..at + 1 + len];
        let colon = at + len + 2;
        (!name.contains(&b'\\') && json.get(colon) == Some(&b':')).then_some((name, colon + 1))
    }
    /// The index after the string that starts at `at`.
    fn skip_string(json: &[u8], at: usize) -> Option<usize> {
        let mut i = at + 1;
        loop {
            match json.get(i)? {
                b'"' => return Some(i + 1),
                b'\\' => i += 2,
                _ => i += 1,
            }
        }
    }
    /// The index after the value that starts at `at`.
    fn skip_value(json: &[u8], at: usize) -> Option<usize> {
        match json.get(at)? {
            b'"' => skip_string(json, at),
            b'{' | b'[' => {
                let mut depth = 0usize;
                let mut i = at;
                loop {
                    match json.get(i)? {
                        b'"' => {
                            i = skip_string(json, i)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(i + 1);
                            }
                        }
                        b' ' | b'\n' | b'\r' | b'\t' => return None,
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => {
                let len = json[at..]
                    .iter()
                    .position(|b| matches!(b, b',' | b'}' | b']'))?;
                let scalar = &json[at..at + len];
                (len > 0 && !scalar.iter().any(u8::is_ascii_whitespace)).then_some(at + len)
            }
        }
    }
    /// Walks the members of the object at `at`, calling `member(name, value start, value
    /// end)`; returns the index of its closing `}`.
    fn members(
        json: &[u8],
        at: usize,
        mut member: impl FnMut(&[u8], usize, usize) -> Option<()>,
    ) -> Option<usize> {
        if json.get(at) != Some(&b'{') {
            return None;
        }
        let mut i = at + 1;
        if json.get(i) == Some(&b'}') {
            return Some(i);
        }
        loop {
            let (name, start) = key(json, i)?;
            let end = skip_value(json, start)?;
            member(name, start, end)?;
            match json.get(end)? {
                b',' => i = end + 1,
                b'}' => return Some(end),
                _ => return None,
            }
        }
    }
    let mut spot = None;
    let close = members(json, 0, |name, start, _| {
        if name != b"metadata" {
            return Some(());
        }
        if spot.is_some() {
            return None; // a second `metadata`: leave duplicates to the parser
        }
        let mut found = None;
        let close = members(json, start, |name, start, end| {
            if name == b"resourceVersion" {
                if found.is_some() {
                    return None;
                }
                found = Some(start..end);
            }
            Some(())
        })?;
        spot = Some(match found {
            Some(range) => RevisionSpot::Value(range),
            None => RevisionSpot::Missing {
                close,
                empty: close == start + 1,
            },
        });
        Some(())
    })?;
    // Nothing may follow the object.
    (close + 1 == json.len()).then_some(())?;
    spot
}

fn metadata_mut<'v>(
    key: &str,
    value: &'v mut Value,
) -> Result<&'v mut serde_json::Map<String, Value>> {
    let Some(object) = value.as_object_mut() else {
        return Err(StoreError::InvalidValue(format!(
            "{key}: value must be a JSON object"
        )));
    };
    match object.get_mut("metadata") {
        Some(Value::Object(metadata)) => Ok(metadata),
        Some(_) => Err(StoreError::InvalidValue(format!(
            "{key}: metadata must be a JSON object"
        ))),
        None => Err(StoreError::InvalidValue(format!(
            "{key}: value has no metadata"
        ))),
    }
}

/// Why an update or delete transaction took its failure branch, given what the key holds.
fn precondition_error(
    key: &str,
    expected: Option<Revision>,
    current: Option<KeyValue>,
) -> StoreError {
    match (current, expected) {
        (Some(current), Some(expected)) => StoreError::Conflict {
            key: key.to_string(),
            expected,
            current: revision_of(current.mod_revision()),
        },
        // The only compare without an expected revision is "exists".
        _ => StoreError::NotFound(key.to_string()),
    }
}

fn missing_prev(key: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "{key}: etcd returned no previous value for a write"
    ))
}

/// The first key after every key that starts with `prefix`: etcd's `range_end` for a prefix.
/// `[0]` (no upper bound) when there is none, as for an empty prefix.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn revision_of(revision: i64) -> Revision {
    revision.max(0) as Revision
}

fn is_compacted(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status)
        if status.code() as i32 == grpc_code::OUT_OF_RANGE
            && status.message().contains("compacted"))
}

/// gRPC status codes (fixed by the gRPC spec; etcd-client does not re-export tonic's enum).
mod grpc_code {
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const ABORTED: i32 = 10;
    pub const OUT_OF_RANGE: i32 = 11;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
}

/// Whether a request failed before any etcd member received it.
fn never_sent(error: &etcd_client::Error) -> bool {
    let message = error.to_string().to_ascii_lowercase();
    message.contains("tcp connect error") || message.contains("connection refused")
}

/// The largest gRPC message the store sends or accepts (etcd itself caps a request at 1.5 MiB
/// by default; responses such as lists are bounded only by memory).
const MAX_RESPONSE_BYTES: usize = 1 << 31;

/// Between retries of a request that could not be sent.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

fn timed_out(what: &str, timeout: Duration) -> StoreError {
    StoreError::Timeout(format!("etcd {what}: no answer within {timeout:?}"))
}

fn unreachable(what: &str, timeout: Duration, last: etcd_client::Error) -> StoreError {
    StoreError::Unavailable(format!(
        "etcd {what}: no member reachable within {timeout:?}: {last}"
    ))
}

/// Maps an etcd client error. "The answer did not come in time" (a deadline, or etcd's own
/// "request timed out" when a proposal was not committed in time) is `Timeout`; anything else
/// that means "could not get an answer" is `Unavailable`; the rest are programming or
/// configuration errors, reported as I/O errors.
fn etcd_error(what: &str, error: etcd_client::Error) -> StoreError {
    use grpc_code::*;
    match &error {
        etcd_client::Error::GRpcStatus(status)
            if status.code() as i32 == DEADLINE_EXCEEDED
                || status.message().contains("request timed out") =>
        {
            StoreError::Timeout(format!("etcd {what}: {}", status.message()))
        }
        etcd_client::Error::GRpcStatus(status) => match status.code() as i32 {
            UNAVAILABLE | CANCELLED | ABORTED | RESOURCE_EXHAUSTED | UNKNOWN | INTERNAL => {
                StoreError::Unavailable(format!("etcd {what}: {}", status.message()))
            }
            _ => StoreError::Io(format!("etcd {what}: {error}")),
        },
        etcd_client::Error::TransportError(_)
        | etcd_client::Error::IoError(_)
        | etcd_client::Error::WatchError(_)
        | etcd_client::Error::EndpointError(_) => {
            StoreError::Unavailable(format!("etcd {what}: {error}"))
        }
        _ => StoreError::Io(format!("etcd {what}: {error}")),
    }
}

fn tls_options(tls: &EtcdTls) -> Result<etcd_client::TlsOptions> {
    let read = |path: &PathBuf, what: &str| {
        std::fs::read(path)
            .map_err(|e| StoreError::Io(format!("reading the etcd {what} {}: {e}", path.display())))
    };
    let mut options = etcd_client::TlsOptions::new().ca_certificate(
        etcd_client::Certificate::from_pem(read(&tls.ca_file, "CA")?),
    );
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            options = options.identity(etcd_client::Identity::from_pem(
                read(cert, "client certificate")?,
                read(key, "client key")?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(StoreError::InvalidValue(
                "etcd TLS: give both a client certificate and its key, or neither".into(),
            ));
        }
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"/registry/pods/", b"/registry/pods0"),
            (b"a", b"b"),
            (b"a\xff", b"b"),
            (b"\xff\xff", b"\0"),
            (b"", b"\0"),
        ];
        for (prefix, end) in cases {
            assert_eq!(prefix_end(prefix), end.to_vec(), "{prefix:?}");
        }
    }

    /// Splicing the revision into stored bytes gives exactly what parsing and stamping gives,
    /// and whatever the splice cannot handle takes the parse.
    #[test]
    fn stamping_stored_bytes_equals_parsing_and_stamping() {
        // (stored JSON, whether the splice handles it)
        let cases: &[(&str, bool)] = &[
            (r#"{"metadata":{}}"#, true),
            (r#"{"metadata":{"name":"a"}}"#, true),
            (r#"{"metadata":{"resourceVersion":""}}"#, true),
            (r#"{"metadata":{"resourceVersion":17,"name":"a"}}"#, true),
            (
                r#"{"metadata":{"name":"a","resourceVersion":"","uid":"u"}}"#,
                true,
            ),
            (
                r#"{"kind":"Pod","metadata":{"name":"q\"uote\\"},"spec":{"x":[1,2.5,null,true,{"a":"}"}]}}"#,
                true,
            ),
            (
                r#"{"a":{"metadata":{"resourceVersion":"nested"}},"metadata":{},"z":"é\u0001"}"#,
                true,
            ),
            (
                r#"{"metadata":{"annotations":{"resourceVersion":"in a map"},"labels":{}}}"#,
                true,
            ),
            (
                r#"{"metadata":{"ownerReferences":[{"resourceVersion":"x"}]},"b":[]}"#,
                true,
            ),
            (r#"{"metadata": {}}"#, false),
            (r#"{"metadata":{"name":"a b","x":1 }}"#, false),
            (r#"{"metadata":{},"metadata":{"name":"b"}}"#, false),
            (
                r#"{"metadata":{"resourceVersion":"1","resourceVersion":"2"}}"#,
                false,
            ),
            (r#"{"metadata":{"na\u006de":"a"}}"#, false),
            (r#"{"metadata":{}} "#, false),
            (r#"{"metadata":[]}"#, false),
            (r#"{"kind":"Pod"}"#, false),
            (r#"[]"#, false),
            (r#"{"metadata":{"a":"#, false),
            (r#"{"metadata":{"a":"unterminated}}"#, false),
        ];
        for (stored, spliced) in cases {
            assert_eq!(
                revision_spot(stored.as_bytes()).is_some(),
                *spliced,
                "{stored}"
            );
            let parsed = serde_json::from_slice::<Value>(stored.as_bytes())
                .map_err(|e| e.to_string())
                .and_then(|value| stamp("/k", value, 42).map_err(|e| e.to_string()));
            let got = stamp_stored("/k", stored.as_bytes(), 42).map_err(|e| e.to_string());
            match (got, parsed) {
                (Ok(got), Ok(want)) => assert_eq!(
                    std::str::from_utf8(&got).unwrap(),
                    std::str::from_utf8(&want).unwrap(),
                    "{stored}"
                ),
                (Err(_), Err(_)) => {}
                (got, want) => panic!("{stored}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn stored_values_carry_no_revision_and_reads_stamp_it_in_place() {
        let cases = [
            (
                json!({"metadata": {}}),
                r#"{"metadata":{}}"#,
                r#"{"metadata":{"resourceVersion":"7"}}"#,
            ),
            (
                json!({"metadata": {"resourceVersion": "3", "name": "a"}}),
                r#"{"metadata":{"resourceVersion":"","name":"a"}}"#,
                r#"{"metadata":{"resourceVersion":"7","name":"a"}}"#,
            ),
            (
                json!({"kind": "Pod", "metadata": {"name": "a"}, "spec": {}}),
                r#"{"kind":"Pod","metadata":{"name":"a"},"spec":{}}"#,
                r#"{"kind":"Pod","metadata":{"name":"a","resourceVersion":"7"},"spec":{}}"#,
            ),
        ];
        for (value, stored, read) in cases {
            let (value, bytes) = prepare("/k", value).unwrap();
            assert_eq!(std::str::from_utf8(&bytes).unwrap(), stored);
            let from_etcd: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(
                std::str::from_utf8(&stamp("/k", from_etcd, 7).unwrap()).unwrap(),
                read
            );
            assert_eq!(
                std::str::from_utf8(&stamp("/k", value, 7).unwrap()).unwrap(),
                read
            );
        }
        for bad in [json!(1), json!({}), json!({"metadata": []})] {
            assert!(matches!(
                prepare("/k", bad),
                Err(StoreError::InvalidValue(_))
            ));
        }
    }
}
