//! Behaviour of the redb store through the `Store` trait: the behaviours shared with the etcd
//! store (tests/common/behaviour.rs), then what is particular to redb.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{behaviour, *};
use muster_store::{Event, Revision, Store, StoreError, StoreOptions};
use serde_json::json;

/// A fresh redb store, as the shared behaviours want it.
async fn fresh() -> Option<(Vec<behaviour::Shared>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let store: behaviour::Shared = open(dir.path(), options());
    Some((vec![store], dir))
}

store_behaviours!(fresh();
    single_key_operations_follow_the_contract,
    values_must_be_objects_with_metadata,
    list_honours_prefix_start_after_and_limit,
    delete_returns_the_last_value_stamped_with_the_deletion_revision,
    watch_replays_history_then_streams_live_events_under_its_prefix,
    concurrent_creates_of_one_key_have_exactly_one_winner,
    concurrent_updates_with_preconditions_never_lose_a_write,
    list_and_watch_neither_misses_nor_repeats_under_concurrent_writes,
);

#[tokio::test]
async fn objects_and_revisions_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let before: Vec<_>;
    let revision;
    {
        let store = open(dir.path(), options());
        create_all(&*store, &["/k/a", "/k/b", "/k/c"]).await;
        store.update("/k/a", pod("a2"), None).await.unwrap();
        store.delete("/k/b", None).await.unwrap();
        // A delete as the last write: the revision it took must survive too.
        store.create("/k/d", pod("d")).await.unwrap();
        store.delete("/k/d", None).await.unwrap();
        before = store.list("/", None, None).await.unwrap().items;
        revision = store.revision();
    }
    let store = open(dir.path(), options());
    assert_eq!(store.revision(), revision);
    let after = store.list("/", None, None).await.unwrap();
    assert_eq!(after.items, before);
    assert_eq!(after.revision, revision);
    let a = store.get("/k/a").await.unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (2, 5));
    let next = store.update("/k/a", pod("a3"), Some(5)).await.unwrap();
    assert_eq!(next.mod_revision, revision + 1);
    assert_eq!(next.create_revision, 2);
}

#[tokio::test]
async fn watch_rejects_future_and_compacted_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        history_len: 3,
        ..options()
    };
    {
        let store = open(dir.path(), options.clone());
        create_all(&*store, &["/a", "/b", "/c", "/d", "/e"]).await; // revisions 2..=6
        assert_eq!(store.revision(), 6);
        // History holds 4, 5, 6: a watch may start after 3 or later.
        let gone = |requested| {
            Err(StoreError::Gone {
                requested,
                oldest: 3,
            })
        };
        let cases: Vec<(Revision, Result<usize, StoreError>)> = vec![
            (1, gone(1)),
            (2, gone(2)),
            (3, Ok(3)),
            (5, Ok(1)),
            (6, Ok(0)),
            (
                7,
                Err(StoreError::FutureRevision {
                    requested: 7,
                    current: 6,
                }),
            ),
        ];
        for (after, expected) in cases {
            let got = match store.watch("/", after).await {
                Ok(mut stream) => {
                    let mut replayed = 0;
                    while stream.rx.try_recv().is_ok() {
                        replayed += 1;
                    }
                    Ok(replayed)
                }
                Err(error) => Err(error),
            };
            assert_eq!(got, expected, "after {after}");
        }
    }
    // After a restart there is no history: only the current revision can be watched from.
    let store = open(dir.path(), options);
    assert!(matches!(
        store.watch("/", 5).await,
        Err(StoreError::Gone {
            requested: 5,
            oldest: 6
        })
    ));
    let mut stream = store.watch("/", 6).await.unwrap();
    store.create("/f", pod("f")).await.unwrap();
    let event = next_event(&mut stream).await.unwrap().unwrap();
    assert_eq!(summary(&event), ("create", "/f".to_string(), 7));
}

#[tokio::test]
async fn a_watcher_that_falls_behind_gets_gone_and_never_blocks_writers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        dir.path(),
        StoreOptions {
            watch_capacity: 4,
            ..options()
        },
    );
    let mut slow = store.watch("/s/", store.revision()).await.unwrap();
    let mut other_prefix = store.watch("/elsewhere/", store.revision()).await.unwrap();
    let writes = tokio::time::timeout(Duration::from_secs(10), async {
        for i in 0..20 {
            let key = format!("/s/{i}");
            store.create(&key, pod(&key)).await.unwrap();
        }
    });
    writes
        .await
        .expect("writes finish although nobody reads the watch");
    let mut puts = 0;
    let end = loop {
        match next_event(&mut slow).await {
            Some(Ok(Event::Put { .. })) => puts += 1,
            other => break other,
        }
    };
    assert_eq!(puts, 4, "the channel held watch_capacity events");
    match end {
        // Revisions 2..=5 were delivered; the watcher is told where it stopped.
        Some(Err(StoreError::Gone { requested, .. })) => assert_eq!(requested, 5),
        other => panic!("expected Gone, got {other:?}"),
    }
    assert!(slow.next().await.is_none(), "Gone is the last item");
    // The filtered watcher saw nothing and is still alive.
    assert_idle(&mut other_prefix);
    store.create("/elsewhere/a", pod("a")).await.unwrap();
    let event = next_event(&mut other_prefix).await.unwrap().unwrap();
    assert_eq!(summary(&event).1, "/elsewhere/a");
}

#[tokio::test]
async fn idle_watchers_get_progress_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        dir.path(),
        StoreOptions {
            progress_interval: Duration::from_millis(50),
            ..options()
        },
    );
    let mut idle = store.watch("/idle/", store.revision()).await.unwrap();
    store.create("/busy/a", pod("a")).await.unwrap();
    let revision = store.revision();
    // The /busy/ write is filtered out; progress tells the watcher it is at `revision`.
    let start = std::time::Instant::now();
    loop {
        match next_event(&mut idle).await {
            Some(Ok(Event::Progress(at))) if at == revision => break,
            Some(Ok(Event::Progress(at))) if at < revision => continue,
            other => panic!("expected progress at {revision}, got {other:?}"),
        }
    }
    assert!(start.elapsed() < Duration::from_secs(2));
    // A stream that just got an event is not idle: no progress right after it.
    store.create("/idle/x", pod("x")).await.unwrap();
    let event = next_event(&mut idle).await.unwrap().unwrap();
    assert_eq!(summary(&event).0, "create");
}

#[tokio::test]
async fn writes_queued_together_apply_in_queue_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), options());
    let key = "/batch/ключ 🔑"; // keys are opaque strings
    // join! sends every request on its first poll, so they usually reach the writer as one
    // batch; the answers must be the same as one at a time.
    let (a, b, c, d, e, f, g) = futures::join!(
        store.create(key, pod("a")),
        store.create(key, pod("b")),
        store.update(key, pod("c"), Some(99)),
        store.update(key, pod("d"), Some(2)),
        store.delete(key, None),
        store.update(key, pod("f"), None),
        store.create(key, pod("g")),
    );
    let revisions = |r: &Result<muster_store::Object, StoreError>| {
        r.as_ref()
            .map(|o| (o.create_revision, o.mod_revision))
            .map_err(Clone::clone)
    };
    assert_eq!(revisions(&a), Ok((2, 2)));
    assert_eq!(revisions(&b), Err(StoreError::AlreadyExists(key.into())));
    assert_eq!(
        revisions(&c),
        Err(StoreError::Conflict {
            key: key.into(),
            expected: 99,
            current: 2
        })
    );
    assert_eq!(revisions(&d), Ok((2, 3)));
    assert_eq!(revisions(&e), Ok((2, 4)));
    assert_eq!(revisions(&f), Err(StoreError::NotFound(key.into())));
    assert_eq!(revisions(&g), Ok((5, 5)));
    let stored = store.get(key).await.unwrap().unwrap();
    assert_eq!(stored.json().unwrap()["metadata"]["name"], json!("g"));
    assert_eq!(store.revision(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_get_distinct_consecutive_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), options());
    let start = store.revision();
    let tasks: Vec<_> = (0..16)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut revisions = Vec::new();
                for i in 0..25 {
                    let key = format!("/c/{w}/{i}");
                    revisions.push(store.create(&key, pod(&key)).await.unwrap().mod_revision);
                }
                revisions
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        let revisions = task.await.unwrap();
        assert!(
            revisions.windows(2).all(|w| w[0] < w[1]),
            "per-writer order"
        );
        all.extend(revisions);
    }
    all.sort_unstable();
    let expected: Vec<Revision> = (start + 1..=start + 400).collect();
    assert_eq!(all, expected);
    let stats = store.stats();
    assert_eq!((stats.objects, stats.committed_writes), (400, 400));
    // Group commit: writers that queue during a commit share the next one.
    assert!(stats.commits < 400, "{stats:?}");
}

#[tokio::test]
async fn open_reports_a_clear_error_for_an_unusable_path() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_database = dir.path().join("garbage.redb");
    std::fs::write(&not_a_database, vec![0x5a; 8192]).unwrap();
    match muster_store::RedbStore::open(&not_a_database, options()) {
        Err(StoreError::Io(message)) => assert!(message.contains("garbage.redb"), "{message}"),
        Err(other) => panic!("expected Io, got {other}"),
        Ok(_) => panic!("opened a file that is not a redb database"),
    }
    let _: Arc<_> = open(dir.path(), options());
}

#[test]
fn open_outside_a_runtime_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        muster_store::RedbStore::open(&dir.path().join("s.redb"), options()),
        Err(StoreError::Unavailable(_))
    ));
}
