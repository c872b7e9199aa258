//! Requests for a resourceVersion the store has not reached yet.
//!
//! Kubernetes serves reads from its watch cache, which can trail etcd; a LIST, GET or
//! watch-list (`sendInitialEvents=true`) asking for a resourceVersion newer than the cache
//! waits up to 3 s for it, then fails with 504 `Timeout` ("Too large resource version"),
//! `retryAfterSeconds: 1` and the cause `ResourceVersionTooLarge`. A plain watch from a newer
//! resourceVersion is accepted at once and sends nothing until the store passes it. muster's
//! stores have no cache in front, but a client can still hold a resourceVersion that this
//! server has not seen: one from another API server on the same etcd, or one it made up.

use std::time::Duration;

use muster_api::{ApiError, Cause};
use muster_store::{Revision, Store};

use crate::handler::store_error;

/// How long a read waits for the store to reach its resourceVersion (Kubernetes'
/// `blockTimeout`).
pub const BLOCK_TIMEOUT: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(10);

/// The 504 Kubernetes answers when the wait runs out.
pub fn too_large(requested: Revision, current: Revision) -> ApiError {
    let mut e = ApiError::timeout(format!(
        "Timeout: Too large resource version: {requested}, current: {current}"
    ));
    e.causes.push(Cause {
        reason: "ResourceVersionTooLarge".into(),
        message: "Too large resource version".into(),
        field: String::new(),
    });
    e
}

/// Waits until the store's revision (as a read of `prefix` sees it, which on etcd is the
/// cluster's, not only what this server has seen) is at least `wanted`, at most `limit`.
pub async fn wait_for(
    store: &dyn Store,
    prefix: &str,
    wanted: Revision,
    limit: Duration,
) -> Result<(), ApiError> {
    if store.revision() >= wanted {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let current = store
            .list(prefix, None, Some(1))
            .await
            .map_err(store_error)?
            .revision;
        if current >= wanted {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(too_large(wanted, current));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn waits_for_a_write_then_times_out_with_the_kubernetes_status() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            muster_store::RedbStore::open(&dir.path().join("store.redb"), Default::default())
                .unwrap();
        let now = store.revision();
        // Reached already.
        wait_for(store.as_ref(), "/", now, Duration::ZERO)
            .await
            .unwrap();
        // Reached by a write during the wait.
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                store.create("/a", json!({"metadata": {}})).await.unwrap();
            })
        };
        wait_for(store.as_ref(), "/", now + 1, Duration::from_secs(5))
            .await
            .unwrap();
        writer.await.unwrap();
        // Never reached.
        let started = std::time::Instant::now();
        let err = wait_for(store.as_ref(), "/", now + 10, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(100));
        let status = err.to_status();
        assert_eq!(status["code"], 504);
        assert_eq!(status["reason"], "Timeout");
        assert_eq!(
            status["message"],
            format!(
                "Timeout: Too large resource version: {}, current: {}",
                now + 10,
                now + 1
            )
        );
        assert_eq!(status["details"]["retryAfterSeconds"], 1);
        let cause = &status["details"]["causes"][0];
        assert_eq!(cause["reason"], "ResourceVersionTooLarge");
        assert_eq!(cause["message"], "Too large resource version");
    }
}
