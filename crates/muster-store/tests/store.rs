//! Behaviour of the redb store through the `Store` trait.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use muster_store::{Event, Revision, Store, StoreError, StoreOptions};
use serde_json::json;

#[derive(Debug)]
enum Step {
    Create(&'static str),
    Update(&'static str, Option<Revision>),
    Delete(&'static str, Option<Revision>),
    Get(&'static str),
}

#[derive(Debug, PartialEq)]
enum Expect {
    /// Written (or found) with this mod_revision and create_revision.
    Revisions(Revision, Revision),
    Absent,
    Error(StoreError),
}

#[tokio::test]
async fn single_key_operations_follow_the_contract() {
    use Expect::*;
    use Step::*;
    let conflict = |expected, current| {
        Error(StoreError::Conflict {
            key: "/a".into(),
            expected,
            current,
        })
    };
    // A fresh store is at revision 1; every successful write takes the next revision.
    let cases: Vec<(Step, Expect)> = vec![
        (Get("/a"), Absent),
        (Create("/a"), Revisions(2, 2)),
        (Get("/a"), Revisions(2, 2)),
        (Create("/a"), Error(StoreError::AlreadyExists("/a".into()))),
        (Update("/a", Some(2)), Revisions(3, 2)),
        (Update("/a", Some(2)), conflict(2, 3)),
        (Update("/b", None), Error(StoreError::NotFound("/b".into()))),
        (Delete("/b", None), Error(StoreError::NotFound("/b".into()))),
        (Delete("/a", Some(2)), conflict(2, 3)),
        (Update("/a", None), Revisions(4, 2)),
        (Delete("/a", Some(4)), Revisions(5, 2)),
        (Get("/a"), Absent),
        (Delete("/a", None), Error(StoreError::NotFound("/a".into()))),
        (
            Update("/a", Some(5)),
            Error(StoreError::NotFound("/a".into())),
        ),
        (Create("/a"), Revisions(6, 6)),
        (Delete("/a", None), Revisions(7, 6)),
    ];
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), options());
    assert_eq!(store.revision(), 1);
    for (step, expect) in cases {
        let before = store.revision();
        let result = match &step {
            Create(key) => store.create(key, pod(key)).await.map(Some),
            Update(key, expected) => store.update(key, pod(key), *expected).await.map(Some),
            Delete(key, expected) => store.delete(key, *expected).await.map(Some),
            Get(key) => store.get(key).await,
        };
        let got = match &result {
            Ok(Some(object)) => {
                assert_eq!(
                    resource_version(object),
                    object.mod_revision.to_string(),
                    "{step:?}: resourceVersion in the JSON"
                );
                Revisions(object.mod_revision, object.create_revision)
            }
            Ok(None) => Absent,
            Err(error) => Error(error.clone()),
        };
        assert_eq!(got, expect, "{step:?}");
        let wrote = matches!(got, Revisions(..)) && !matches!(step, Get(_));
        let expected_revision = if wrote { before + 1 } else { before };
        assert_eq!(
            store.revision(),
            expected_revision,
            "{step:?}: store revision"
        );
    }
}

#[tokio::test]
async fn values_must_be_objects_with_metadata() {
    let cases = [
        json!(1),
        json!("pod"),
        json!(null),
        json!([{"metadata": {}}]),
        json!({}),
        json!({"kind": "Pod"}),
        json!({"metadata": "x"}),
        json!({"metadata": null}),
        json!({"metadata": []}),
    ];
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), options());
    store.create("/exists", pod("exists")).await.unwrap();
    let revision = store.revision();
    for value in cases {
        for result in [
            store.create("/new", value.clone()).await,
            store.update("/exists", value.clone(), None).await,
        ] {
            match result {
                Err(StoreError::InvalidValue(message)) => assert!(!message.is_empty()),
                other => panic!("{value}: expected InvalidValue, got {other:?}"),
            }
        }
    }
    assert_eq!(store.revision(), revision, "nothing was written");
    assert_eq!(store.get("/new").await.unwrap(), None);
    // The minimal valid value, and one that carries a stale resourceVersion to overwrite.
    let object = store
        .create("/new", json!({"metadata": {"resourceVersion": "999"}}))
        .await
        .unwrap();
    assert_eq!(resource_version(&object), object.mod_revision.to_string());
}

#[tokio::test]
async fn list_honours_prefix_start_after_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), options());
    create_all(
        &store,
        &[
            "/p/ns2/a",
            "/p/ns1/c",
            "/p/ns1/a",
            "/p/ns10/a",
            "/p/ns1/b",
            "/q/x",
        ],
    )
    .await;
    // (prefix, start_after, limit, expected keys, expected continue_after)
    type ListCase<'a> = (
        &'a str,
        Option<&'a str>,
        Option<usize>,
        &'a [&'a str],
        Option<&'a str>,
    );
    let cases: &[ListCase] = &[
        (
            "/p/ns1/",
            None,
            None,
            &["/p/ns1/a", "/p/ns1/b", "/p/ns1/c"],
            None,
        ),
        (
            "/p/ns1/",
            None,
            Some(2),
            &["/p/ns1/a", "/p/ns1/b"],
            Some("/p/ns1/b"),
        ),
        ("/p/ns1/", Some("/p/ns1/b"), Some(2), &["/p/ns1/c"], None),
        (
            "/p/ns1/",
            None,
            Some(3),
            &["/p/ns1/a", "/p/ns1/b", "/p/ns1/c"],
            None,
        ),
        ("/p/ns1/", Some("/p/ns1/c"), None, &[], None),
        (
            "/p/ns1/",
            Some("/a"),
            Some(1),
            &["/p/ns1/a"],
            Some("/p/ns1/a"),
        ),
        ("/p/ns1/", None, Some(0), &[], None),
        (
            "/p/",
            None,
            None,
            &["/p/ns1/a", "/p/ns1/b", "/p/ns1/c", "/p/ns10/a", "/p/ns2/a"],
            None,
        ),
        ("/p/ns1", Some("/p/ns1/c"), None, &["/p/ns10/a"], None),
        ("", Some("/p/ns2/a"), None, &["/q/x"], None),
        ("/r/", None, None, &[], None),
    ];
    for (prefix, start_after, limit, keys, continue_after) in cases {
        let list = store.list(prefix, *start_after, *limit).await.unwrap();
        let got: Vec<&str> = list.items.iter().map(|o| &*o.key).collect();
        let case = format!("{prefix:?} after {start_after:?} limit {limit:?}");
        assert_eq!(got, *keys, "{case}");
        assert_eq!(list.continue_after.as_deref(), *continue_after, "{case}");
        assert_eq!(list.revision, store.revision(), "{case}");
    }
}

#[tokio::test]
async fn objects_and_revisions_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let before: Vec<_>;
    let revision;
    {
        let store = open(dir.path(), options());
        create_all(&store, &["/k/a", "/k/b", "/k/c"]).await;
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
async fn delete_returns_the_last_value_stamped_with_the_deletion_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), options());
    let created = store.create("/d/a", pod("a")).await.unwrap();
    let (_, mut stream) = store.list_and_watch("/d/").await.unwrap();
    let deleted = store.delete("/d/a", None).await.unwrap();
    assert_eq!(deleted.mod_revision, created.mod_revision + 1);
    assert_eq!(deleted.create_revision, created.create_revision);
    assert_eq!(resource_version(&deleted), deleted.mod_revision.to_string());
    let mut last = deleted.json().unwrap();
    last["metadata"]["resourceVersion"] = json!(created.mod_revision.to_string());
    assert_eq!(
        last,
        created.json().unwrap(),
        "only resourceVersion changes"
    );
    match next_event(&mut stream).await {
        Some(Ok(Event::Delete { object, revision })) => {
            assert_eq!(object, deleted);
            assert_eq!(revision, deleted.mod_revision);
        }
        other => panic!("expected a delete event, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_replays_history_then_streams_live_events_under_its_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), options());
    create_all(&store, &["/w/a", "/other/x", "/w/b"]).await; // revisions 2, 3, 4
    store.update("/w/a", pod("a"), None).await.unwrap(); // 5
    // (after, expected replay as (kind, key, revision))
    type Replay<'a> = &'a [(&'a str, &'a str, Revision)];
    let cases: &[(Revision, Replay)] = &[
        (
            1,
            &[
                ("create", "/w/a", 2),
                ("create", "/w/b", 4),
                ("update", "/w/a", 5),
            ],
        ),
        (2, &[("create", "/w/b", 4), ("update", "/w/a", 5)]),
        (3, &[("create", "/w/b", 4), ("update", "/w/a", 5)]),
        (4, &[("update", "/w/a", 5)]),
        (5, &[]),
    ];
    let mut streams = Vec::new();
    for (after, expected) in cases {
        let mut stream = store.watch("/w/", *after).await.unwrap();
        for want in *expected {
            let event = next_event(&mut stream).await.unwrap().unwrap();
            let (kind, key, revision) = summary(&event);
            assert_eq!((kind, key.as_str(), revision), *want, "after {after}");
        }
        assert_idle(&mut stream);
        streams.push(stream);
    }
    // Live: every stream gets the /w/ write and nothing of the /other/ ones.
    store.create("/other/y", pod("y")).await.unwrap(); // 6
    store.delete("/w/b", None).await.unwrap(); // 7
    for stream in &mut streams {
        let event = next_event(stream).await.unwrap().unwrap();
        assert_eq!(summary(&event), ("delete", "/w/b".to_string(), 7));
        assert_idle(stream);
    }
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
        create_all(&store, &["/a", "/b", "/c", "/d", "/e"]).await; // revisions 2..=6
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

#[tokio::test]
async fn concurrent_creates_of_one_key_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), options());
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.create("/race", pod(&format!("p{i}"))).await })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => winners += 1,
            Err(StoreError::AlreadyExists(key)) => assert_eq!(key, "/race"),
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(store.revision(), 2);
}

#[tokio::test]
async fn concurrent_updates_with_preconditions_never_lose_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), options());
    store
        .create("/counter", json!({"metadata": {}, "count": 0}))
        .await
        .unwrap();
    // Each task increments the counter 10 times with read-modify-write and retries on
    // Conflict, as controllers do; the final count proves no update was lost.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut conflicts = 0;
                for _ in 0..10 {
                    loop {
                        let current = store.get("/counter").await.unwrap().unwrap();
                        let mut value = current.json().unwrap();
                        value["count"] = json!(value["count"].as_u64().unwrap() + 1);
                        match store
                            .update("/counter", value, Some(current.mod_revision))
                            .await
                        {
                            Ok(_) => break,
                            Err(StoreError::Conflict { .. }) => conflicts += 1,
                            Err(other) => panic!("{other}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let counter = store.get("/counter").await.unwrap().unwrap();
    assert_eq!(counter.json().unwrap()["count"], json!(80));
    assert_eq!(counter.mod_revision, 2 + 80);
    assert_eq!(
        store.revision(),
        82,
        "failed preconditions took no revision"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_watch_neither_misses_nor_repeats_under_concurrent_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), options());
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..60 {
                    let key = format!("/lw/{w}/{}", i % 7);
                    // A mix of creates, updates and deletes on a few keys per writer.
                    if store.create(&key, pod(&key)).await.is_err() {
                        if i % 3 == 0 {
                            store.delete(&key, None).await.unwrap();
                        } else {
                            store.update(&key, pod(&key), None).await.unwrap();
                        }
                    }
                }
            })
        })
        .collect();
    let mut snapshots = Vec::new();
    for _ in 0..8 {
        snapshots.push(store.list_and_watch("/lw/").await.unwrap());
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let final_list = store.list("/lw/", None, None).await.unwrap();
    let expected: BTreeMap<String, Revision> = final_list
        .items
        .iter()
        .map(|o| (o.key.to_string(), o.mod_revision))
        .collect();
    for (list, mut stream) in snapshots {
        // Replay the watch onto the list; it must land exactly on the final state.
        let mut state: BTreeMap<String, Revision> = list
            .items
            .iter()
            .map(|o| (o.key.to_string(), o.mod_revision))
            .collect();
        let mut at = list.revision;
        while at < final_list.revision {
            let event = next_event(&mut stream).await.unwrap().unwrap();
            let (kind, key, revision) = summary(&event);
            assert!(revision > at, "events strictly after the list, in order");
            at = revision;
            match kind {
                "create" => assert!(state.insert(key, revision).is_none(), "duplicate create"),
                "update" => assert!(state.insert(key, revision).is_some(), "update of unknown"),
                "delete" => assert!(state.remove(&key).is_some(), "delete of unknown"),
                _ => {}
            }
        }
        assert_eq!(state, expected);
        assert_idle(&mut stream);
    }
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
