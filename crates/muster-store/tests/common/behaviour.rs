//! The behaviour every `Store` backend owes the API server, written once against the trait.
//! tests/store.rs runs it on the embedded redb store and tests/etcd_store.rs on a real etcd;
//! each case gets a fresh store at revision 1 (a fresh etcd also starts there).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use muster_store::{Event, Revision, Store, StoreError};
use serde_json::json;

use super::{assert_no_change, create_all, next_change, pod, resource_version, summary};

pub type Shared = Arc<dyn Store>;

/// Generates one `#[tokio::test]` per behaviour. `$fresh` is a future that yields
/// `Some((stores, guard))`: one or more stores on one fresh backend, and whatever must live
/// as long as they do (a temp dir, an etcd); or `None` to skip.
#[macro_export]
macro_rules! store_behaviours {
    ($fresh:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some((stores, _keep)) = $fresh.await {
                    common::behaviour::$name(stores).await;
                }
            }
        )*
    };
}

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

pub async fn single_key_operations_follow_the_contract(stores: Vec<Shared>) {
    use Expect::*;
    use Step::*;
    let store = &stores[0];
    let conflict = |expected, current| {
        Error(StoreError::Conflict {
            key: "/a".into(),
            expected,
            current,
        })
    };
    let not_found = |key: &str| Error(StoreError::NotFound(key.into()));
    // A fresh store is at revision 1; every successful write takes the next revision.
    let cases: Vec<(Step, Expect)> = vec![
        (Get("/a"), Absent),
        (Create("/a"), Revisions(2, 2)),
        (Get("/a"), Revisions(2, 2)),
        (Create("/a"), Error(StoreError::AlreadyExists("/a".into()))),
        (Update("/a", Some(2)), Revisions(3, 2)),
        (Update("/a", Some(2)), conflict(2, 3)),
        (Update("/b", None), not_found("/b")),
        (Delete("/b", None), not_found("/b")),
        (Delete("/a", Some(2)), conflict(2, 3)),
        (Update("/a", None), Revisions(4, 2)),
        (Delete("/a", Some(4)), Revisions(5, 2)),
        (Get("/a"), Absent),
        (Delete("/a", None), not_found("/a")),
        (Update("/a", Some(5)), not_found("/a")),
        (Update("/a", Some(0)), not_found("/a")),
        (Create("/a"), Revisions(6, 6)),
        (Delete("/a", None), Revisions(7, 6)),
    ];
    assert_eq!(store.revision(), 1, "a fresh store is at revision 1");
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

pub async fn values_must_be_objects_with_metadata(stores: Vec<Shared>) {
    let store = &stores[0];
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
    assert_eq!(store.get("/new").await.unwrap(), Some(object));
}

pub async fn list_honours_prefix_start_after_and_limit(stores: Vec<Shared>) {
    let store = &stores[0];
    create_all(
        &**store,
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
    let ns1: &[&str] = &["/p/ns1/a", "/p/ns1/b", "/p/ns1/c"];
    let cases: &[ListCase] = &[
        ("/p/ns1/", None, None, ns1, None),
        ("/p/ns1/", None, Some(2), &ns1[..2], Some("/p/ns1/b")),
        ("/p/ns1/", Some("/p/ns1/b"), Some(2), &["/p/ns1/c"], None),
        ("/p/ns1/", None, Some(3), ns1, None),
        ("/p/ns1/", Some("/p/ns1/c"), None, &[], None),
        ("/p/ns1/", Some("/a"), Some(1), &ns1[..1], Some("/p/ns1/a")),
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
        ("/p/ns1/", Some("/z"), None, &[], None),
    ];
    for (prefix, start_after, limit, keys, continue_after) in cases {
        let list = store.list(prefix, *start_after, *limit).await.unwrap();
        let got: Vec<&str> = list.items.iter().map(|o| &*o.key).collect();
        let case = format!("{prefix:?} after {start_after:?} limit {limit:?}");
        assert_eq!(got, *keys, "{case}");
        assert_eq!(list.continue_after.as_deref(), *continue_after, "{case}");
        assert_eq!(list.revision, store.revision(), "{case}");
        for item in &list.items {
            assert_eq!(resource_version(item), item.mod_revision.to_string());
        }
    }
}

pub async fn delete_returns_the_last_value_stamped_with_the_deletion_revision(stores: Vec<Shared>) {
    let store = &stores[0];
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
    match next_change(&mut stream).await {
        Some(Ok(Event::Delete { object, revision })) => {
            assert_eq!(object, deleted);
            assert_eq!(revision, deleted.mod_revision);
        }
        other => panic!("expected a delete event, got {other:?}"),
    }
}

pub async fn watch_replays_history_then_streams_live_events_under_its_prefix(stores: Vec<Shared>) {
    let store = &stores[0];
    create_all(&**store, &["/w/a", "/other/x", "/w/b"]).await; // revisions 2, 3, 4
    let updated = store.update("/w/a", pod("a"), None).await.unwrap(); // 5
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
            let event = next_change(&mut stream).await.unwrap().unwrap();
            let (kind, key, revision) = summary(&event);
            assert_eq!((kind, key.as_str(), revision), *want, "after {after}");
            if let Event::Put {
                object,
                prev: Some(prev),
            } = &event
            {
                assert_eq!(object, &updated);
                assert_eq!((prev.mod_revision, resource_version(prev)), (2, "2".into()));
            }
        }
        assert_no_change(&mut stream).await;
        streams.push(stream);
    }
    // Live: every stream gets the /w/ write and nothing of the /other/ ones.
    store.create("/other/y", pod("y")).await.unwrap(); // 6
    store.delete("/w/b", None).await.unwrap(); // 7
    for stream in &mut streams {
        let event = next_change(stream).await.unwrap().unwrap();
        assert_eq!(summary(&event), ("delete", "/w/b".to_string(), 7));
        assert_no_change(stream).await;
    }
}

pub async fn concurrent_creates_of_one_key_have_exactly_one_winner(stores: Vec<Shared>) {
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = stores[i % stores.len()].clone();
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
    assert_eq!(
        stores[0].get("/race").await.unwrap().unwrap().mod_revision,
        2
    );
}

/// Read-modify-write with a precondition, retried on Conflict as controllers do, by 8 tasks
/// spread over the given stores (several stores on one etcd stand for several API servers):
/// the final count proves that no update was lost, and a watch sees each update once.
pub async fn concurrent_updates_with_preconditions_never_lose_a_write(stores: Vec<Shared>) {
    stores[0]
        .create("/counter", json!({"metadata": {}, "count": 0}))
        .await
        .unwrap();
    let watcher = stores.last().unwrap();
    let (_, mut watch) = watcher.list_and_watch("/counter").await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = stores[i % stores.len()].clone();
            tokio::spawn(async move {
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
                            Err(StoreError::Conflict { .. }) => {}
                            Err(other) => panic!("{other}"),
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let counter = watcher.get("/counter").await.unwrap().unwrap();
    assert_eq!(counter.json().unwrap()["count"], json!(80));
    assert_eq!(
        counter.mod_revision,
        2 + 80,
        "failed preconditions took no revision"
    );
    for _ in 0..80 {
        let event = next_change(&mut watch).await.unwrap().unwrap();
        assert_eq!(summary(&event).0, "update");
    }
    assert_no_change(&mut watch).await;
    assert_eq!(
        stores[0].list("/", None, None).await.unwrap().items,
        [counter]
    );
}

pub async fn list_and_watch_neither_misses_nor_repeats_under_concurrent_writes(
    stores: Vec<Shared>,
) {
    let store = &stores[0];
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..40 {
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
    for _ in 0..6 {
        snapshots.push(store.list_and_watch("/lw/").await.unwrap());
        tokio::time::sleep(Duration::from_millis(4)).await;
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
            let event = next_change(&mut stream).await.unwrap().unwrap();
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
        assert_no_change(&mut stream).await;
    }
}
