//! Behaviour of `EtcdStore` through the `Store` trait, on real etcd processes started on free
//! loopback ports (the Debian `etcd-server` package; scripts/test installs it): the behaviours
//! shared with the embedded store (tests/common/behaviour.rs; a fresh etcd starts at revision 1
//! like a fresh embedded store), then what is particular to etcd.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::etcd::{Etcd, free_port, make_tls_files};
use common::{assert_no_change, behaviour, create_all, next_change, next_event, pod, summary};
use muster_store::{
    EtcdOptions, EtcdStore, Event, Object, Revision, Store, StoreError, WatchStream,
};
use serde_json::{Value, json};

fn options() -> EtcdOptions {
    EtcdOptions {
        request_timeout: Duration::from_secs(2),
        ..EtcdOptions::default()
    }
}

async fn connect(etcd: &Etcd, options: EtcdOptions) -> Arc<EtcdStore> {
    EtcdStore::connect(&etcd.endpoints(), options)
        .await
        .expect("connect to etcd")
}

/// Two stores on one fresh single-member etcd, standing for two API servers (the shared
/// behaviours that take several stores spread their work over both).
async fn fresh() -> Option<(Vec<behaviour::Shared>, Etcd)> {
    let etcd = Etcd::start(1)?;
    let first: behaviour::Shared = connect(&etcd, options()).await;
    let second: behaviour::Shared = connect(&etcd, options()).await;
    Some((vec![first, second], etcd))
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
async fn stored_json_matches_the_embedded_store() {
    let Some(etcd) = Etcd::start(1) else { return };
    let store = connect(&etcd, options()).await;
    // The same JSON bytes as the embedded store for the same input, and a read returns what
    // the write returned.
    let dir = tempfile::tempdir().unwrap();
    let redb =
        muster_store::RedbStore::open(&dir.path().join("s.redb"), Default::default()).unwrap();
    for value in [
        json!({"metadata": {"resourceVersion": "999", "name": "x"}, "spec": {}}),
        json!({"kind": "Pod", "metadata": {"name": "y"}}),
    ] {
        let key = format!("/json/{}", value["metadata"]["name"].as_str().unwrap());
        let from_etcd = store.create(&key, value.clone()).await.unwrap();
        let from_redb = redb.create(&key, value).await.unwrap();
        let mut expected = from_redb.json().unwrap();
        expected["metadata"]["resourceVersion"] = json!(from_etcd.mod_revision.to_string());
        assert_eq!(from_etcd.value, serde_json::to_vec(&expected).unwrap());
        let read = store.get(&key).await.unwrap().unwrap();
        assert_eq!(read, from_etcd, "a read returns what the write returned");
    }
}

/// gRPC caps messages at 4 MiB unless told otherwise; a list of many objects is larger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_watches_larger_than_four_mib() {
    let Some(etcd) = Etcd::start(1) else {
        return;
    };
    let store = connect(&etcd, options()).await;
    let start = store.revision();
    let filler = "x".repeat(16 * 1024);
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let (store, filler) = (store.clone(), filler.clone());
            tokio::spawn(async move {
                for i in 0..40 {
                    let key = format!("/big/{w}-{i:02}");
                    let mut value = pod(&key);
                    value["spec"]["filler"] = json!(filler);
                    store.create(&key, value).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let list = store.list("/big/", None, None).await.unwrap();
    assert_eq!(list.items.len(), 320);
    let bytes: usize = list.items.iter().map(|o| o.value.len()).sum();
    assert!(bytes > 5 << 20, "{bytes} bytes");
    let mut watch = store.watch("/big/", start).await.unwrap();
    for _ in 0..320 {
        assert!(matches!(
            next_change(&mut watch).await,
            Some(Ok(Event::Put { .. }))
        ));
    }
}

#[tokio::test]
async fn watch_rejects_future_and_compacted_revisions() {
    let Some(etcd) = Etcd::start(1) else { return };
    let store = connect(&etcd, options()).await;
    create_all(&*store, &["/a", "/b", "/c", "/d", "/e"]).await; // revisions 2..=6
    let mut raw = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    raw.compact(4, None).await.unwrap();
    // Compacted at 4: reads at revision 4 and later still work, so a watch may start after 3.
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
                tokio::time::sleep(Duration::from_millis(300)).await;
                while let Ok(item) = stream.rx.try_recv() {
                    match item.unwrap() {
                        Event::Progress(_) => {}
                        _ => replayed += 1,
                    }
                }
                Ok(replayed)
            }
            Err(error) => Err(error),
        };
        assert_eq!(got, expected, "after {after}");
    }
}

#[tokio::test]
async fn idle_watchers_get_progress_events_in_order() {
    let Some(etcd) = Etcd::start(1) else { return };
    let store = connect(&etcd, options()).await;
    let mut idle = store.watch("/idle/", store.revision()).await.unwrap();
    store.create("/busy/a", pod("a")).await.unwrap();
    let revision = store.revision();
    let start = Instant::now();
    loop {
        match next_event(&mut idle).await {
            Some(Ok(Event::Progress(at))) if at >= revision => break,
            Some(Ok(Event::Progress(_))) => continue,
            other => panic!("expected progress at {revision}, got {other:?}"),
        }
    }
    assert!(start.elapsed() < Duration::from_secs(3));
    let created = store.create("/idle/x", pod("x")).await.unwrap();
    // Progress never claims a revision whose event has not been delivered yet.
    loop {
        match next_event(&mut idle).await {
            Some(Ok(Event::Progress(at))) => assert!(at < created.mod_revision, "{at}"),
            Some(Ok(event)) => {
                assert_eq!(
                    summary(&event),
                    ("create", "/idle/x".into(), created.mod_revision)
                );
                break;
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Two stores on one etcd stand for two API servers: optimistic concurrency holds across
/// them, and a write through one is seen by a list and a watch through the other.
#[tokio::test]
async fn key_prefixes_keep_two_clusters_apart_on_one_etcd() {
    let Some(etcd) = Etcd::start(1) else { return };
    let with_prefix = |prefix: &str| EtcdOptions {
        key_prefix: prefix.into(),
        ..options()
    };
    let a = connect(&etcd, with_prefix("/cluster-a")).await;
    let b = connect(&etcd, with_prefix("/cluster-ab")).await;
    // "/cluster-a" is a byte prefix of "/cluster-ab": neither may see the other's keys.
    let mut watch_a = a.watch("", a.revision()).await.unwrap();
    let mut watch_b = b.watch("/registry/", b.revision()).await.unwrap();
    a.create("/registry/pods/default/p", pod("p"))
        .await
        .unwrap();
    b.create("/registry/pods/default/q", pod("q"))
        .await
        .unwrap();
    let keys = |list: muster_store::ListResult| -> Vec<String> {
        list.items.iter().map(|o| o.key.to_string()).collect()
    };
    assert_eq!(
        keys(a.list("", None, None).await.unwrap()),
        ["/registry/pods/default/p"]
    );
    assert_eq!(
        keys(b.list("", None, None).await.unwrap()),
        ["/registry/pods/default/q"]
    );
    let event = next_change(&mut watch_a).await.unwrap().unwrap();
    assert_eq!(summary(&event).1, "/registry/pods/default/p");
    assert_no_change(&mut watch_a).await;
    let event = next_change(&mut watch_b).await.unwrap().unwrap();
    assert_eq!(summary(&event).1, "/registry/pods/default/q");
    // In etcd itself the keys carry the prefix.
    let mut raw = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .unwrap();
    let stored = raw
        .get("/cluster-a/registry/pods/default/p", None)
        .await
        .unwrap();
    let value: Value = serde_json::from_slice(stored.kvs()[0].value()).unwrap();
    assert_eq!(value["metadata"]["name"], json!("p"));
    assert!(
        matches!(
            EtcdStore::connect(&etcd.endpoints(), with_prefix("/bad/")).await,
            Err(StoreError::InvalidValue(_))
        ),
        "a prefix ending in / is refused"
    );
}

/// Unreachable (killed) etcd gives `Unavailable` and unresponsive (stopped) etcd `Timeout`,
/// within the request timeout and never a wrong answer, and the same store works again once
/// etcd is back.
///
/// A killed etcd never receives the writes, so afterwards nothing has changed. A stopped one
/// has them in its socket buffer and may apply them once it runs again: like any etcd client,
/// the store cannot know, so it said `Timeout` (never "done" or "not done"), and the test
/// only requires each written key to be in one of the states the write could have left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_is_unavailable_and_the_store_recovers() {
    let Some(mut etcd) = Etcd::start(1) else {
        return;
    };
    let store = connect(&etcd, options()).await;
    let kept = store.create("/k/kept", pod("kept")).await.unwrap();
    let timeout = options().request_timeout;

    for outage in ["killed", "stopped"] {
        let victim_key = format!("/k/victim-{outage}");
        let victim = store.create(&victim_key, pod("v")).await.unwrap();
        let new_key = format!("/k/new-{outage}");
        match outage {
            "killed" => etcd.kill(0),
            _ => etcd.pause(0, true),
        }
        let started = Instant::now();
        let results = [
            store.get("/k/kept").await.map(|_| ()),
            store.list("/k/", None, None).await.map(|_| ()),
            store.watch("/k/", kept.mod_revision).await.map(|_| ()),
            store.create(&new_key, pod("new")).await.map(|_| ()),
            store
                .update(&victim_key, pod("v2"), Some(victim.mod_revision))
                .await
                .map(|_| ()),
        ];
        for (i, result) in results.iter().enumerate() {
            let expected = matches!(
                (outage, result),
                ("killed", Err(StoreError::Unavailable(_)))
                    | ("stopped", Err(StoreError::Timeout(_)))
            );
            assert!(expected, "{outage}: request {i}: {result:?}");
        }
        assert!(
            started.elapsed() < timeout * 5 + Duration::from_secs(2),
            "{outage}: each request gave up within the timeout ({:?})",
            started.elapsed()
        );
        match outage {
            "killed" => etcd.restart(0),
            _ => etcd.pause(0, false),
        }
        // Recovery without a new store: retry for a while, as a client would.
        let deadline = Instant::now() + Duration::from_secs(15);
        let got = loop {
            match store.get("/k/kept").await {
                Ok(got) => break got,
                Err(StoreError::Unavailable(_) | StoreError::Timeout(_))
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(other) => panic!("{outage}: {other}"),
            }
        };
        assert_eq!(got.as_ref(), Some(&kept), "{outage}: an untouched key");
        let new = store.get(&new_key).await.unwrap();
        let victim_now = store.get(&victim_key).await.unwrap().unwrap();
        let name = |o: &Object| o.json().unwrap()["metadata"]["name"].clone();
        match outage {
            "killed" => {
                assert_eq!(new, None, "a killed etcd received no create");
                assert_eq!(victim_now, victim, "a killed etcd received no update");
            }
            _ => {
                if let Some(new) = &new {
                    assert_eq!(name(new), json!("new"));
                }
                assert!(
                    victim_now == victim || name(&victim_now) == json!("v2"),
                    "{victim_now:?}"
                );
            }
        }
        let mut stream = store.watch("/k/", store.revision()).await.unwrap();
        let written = store
            .create(&format!("/k/after-{outage}"), pod("x"))
            .await
            .unwrap();
        let event = next_change(&mut stream).await.unwrap().unwrap();
        assert_eq!(event.revision(), written.mod_revision);
    }
}

/// A three-member cluster loses one member during a stream of writes: every acknowledged
/// write is there afterwards, writes keep succeeding, and a watch through the store sees
/// every acknowledged write exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_of_three_members_loses_no_acknowledged_write() {
    let Some(mut etcd) = Etcd::start(3) else {
        return;
    };
    let store = connect(&etcd, options()).await;
    let (_, mut watch) = store.list_and_watch("/stream/").await.unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut unavailable = 0;
            // Each write is retried as a client would (through a leader election if the
            // killed member led) until it is acknowledged, or turns out to have landed
            // although it was answered Unavailable.
            let deadline = Instant::now() + Duration::from_secs(30);
            for i in 0..300 {
                let key = format!("/stream/{i:04}");
                loop {
                    match store.create(&key, pod(&key)).await {
                        Ok(object) => {
                            acknowledged.push((key, object.mod_revision));
                            break;
                        }
                        Err(StoreError::AlreadyExists(_)) => break,
                        Err(StoreError::Unavailable(_) | StoreError::Timeout(_))
                            if Instant::now() < deadline =>
                        {
                            unavailable += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(other) => panic!("{key}: {other}"),
                    }
                }
            }
            (acknowledged, unavailable)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Kill the member our first endpoint points at; the leader may be any of them.
    etcd.kill(0);
    let (acknowledged, unavailable) = writer.await.unwrap();
    assert!(
        acknowledged.len() >= 290,
        "the cluster kept serving: {} acknowledged, {unavailable} answers Unavailable",
        acknowledged.len()
    );
    // Check through a fresh connection to the two survivors only.
    let survivors = EtcdStore::connect(&etcd.endpoints()[1..], options())
        .await
        .unwrap();
    let stored: BTreeMap<String, Revision> = survivors
        .list("/stream/", None, None)
        .await
        .unwrap()
        .items
        .iter()
        .map(|o| (o.key.to_string(), o.mod_revision))
        .collect();
    for (key, revision) in &acknowledged {
        assert_eq!(stored.get(key), Some(revision), "acknowledged write {key}");
    }
    assert_eq!(stored.len(), 300, "every write was done in the end");
    // The watch (which may have had to move to another member) saw each write exactly once.
    let mut seen = BTreeSet::new();
    creates_seen_once(&mut watch, &mut seen, stored.len()).await;
    assert_eq!(seen, stored.keys().cloned().collect());

    // Then every other member is killed and brought back in turn, so the member that serves
    // the watch certainly dies at least once: the watch resumes on another member from the
    // next revision it needs, without a gap or a duplicate.
    etcd.restart(0);
    let mut acknowledged: BTreeSet<String> = stored.keys().cloned().collect();
    for victim in [1, 2] {
        etcd.kill(victim);
        // Retried as a client would, through a leader election if the victim led.
        let deadline = Instant::now() + Duration::from_secs(15);
        for i in 0..20 {
            let key = format!("/stream/m{victim}-{i:02}");
            loop {
                match store.create(&key, pod(&key)).await {
                    Ok(_) => {
                        acknowledged.insert(key);
                        break;
                    }
                    // An earlier attempt that answered Unavailable did land.
                    Err(StoreError::AlreadyExists(_)) => break,
                    Err(StoreError::Unavailable(_) | StoreError::Timeout(_))
                        if Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    Err(other) => panic!("{key}: {other}"),
                }
            }
        }
        etcd.restart(victim);
    }
    let stored: BTreeSet<String> = store
        .list("/stream/", None, None)
        .await
        .unwrap()
        .items
        .iter()
        .map(|o| o.key.to_string())
        .collect();
    assert!(
        acknowledged.is_subset(&stored),
        "every acknowledged write is there"
    );
    assert!(
        acknowledged.len() >= seen.len() + 30,
        "the cluster kept serving"
    );
    creates_seen_once(&mut watch, &mut seen, stored.len()).await;
    assert_eq!(seen, stored);
    assert_no_change(&mut watch).await;
}

#[tokio::test]
async fn connect_reports_unreachable_etcd_and_bad_arguments() {
    let port = free_port(); // nothing listens here
    let cases: Vec<(Vec<String>, EtcdOptions, &str)> = vec![
        (
            vec![format!("http://127.0.0.1:{port}")],
            options(),
            "unavailable",
        ),
        (vec![], options(), "invalid"),
        (
            vec![format!("http://127.0.0.1:{port}")],
            EtcdOptions {
                tls: Some(muster_store::EtcdTls {
                    ca_file: "/nonexistent/ca.pem".into(),
                    cert_file: None,
                    key_file: None,
                }),
                ..options()
            },
            "io",
        ),
    ];
    for (endpoints, options, want) in cases {
        let got = match EtcdStore::connect(&endpoints, options).await {
            Err(StoreError::Unavailable(_)) => "unavailable",
            Err(StoreError::InvalidValue(_)) => "invalid",
            Err(StoreError::Io(_)) => "io",
            Err(other) => panic!("{endpoints:?}: unexpected {other}"),
            Ok(_) => "connected",
        };
        assert_eq!(got, want, "{endpoints:?}");
    }
}

/// etcd with `--client-cert-auth`: the store connects with a client certificate and a CA that
/// verifies etcd; without the certificate, or trusting another CA, it gets no answer.
#[tokio::test]
async fn tls_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let files = make_tls_files(dir.path());
    let Some(etcd) = Etcd::start_with(1, Some(&files)) else {
        return;
    };
    let tls = |ca: &PathBuf, with_cert: bool| EtcdOptions {
        tls: Some(muster_store::EtcdTls {
            ca_file: ca.clone(),
            cert_file: with_cert.then(|| files.client_cert.clone()),
            key_file: with_cert.then(|| files.client_key.clone()),
        }),
        ..options()
    };
    // etcd may still be electing itself: retry the good connection for a while.
    let deadline = Instant::now() + Duration::from_secs(15);
    let store = loop {
        match EtcdStore::connect(&etcd.endpoints(), tls(&files.ca, true)).await {
            Ok(store) => break store,
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("TLS connect: {error}"),
        }
    };
    let created = store.create("/tls/a", pod("a")).await.unwrap();
    assert_eq!(store.get("/tls/a").await.unwrap(), Some(created));
    let cases = [
        ("no client certificate", tls(&files.ca, false)),
        (
            "etcd's certificate from an unknown CA",
            tls(&files.other_ca, true),
        ),
    ];
    for (case, options) in cases {
        match EtcdStore::connect(&etcd.endpoints(), options).await {
            Err(StoreError::Unavailable(_)) => {}
            Err(other) => panic!("{case}: expected Unavailable, got {other}"),
            Ok(_) => panic!("{case}: connected"),
        }
    }
    // Plain HTTP to a TLS-only etcd gets no answer either.
    let plain: Vec<String> = etcd
        .endpoints()
        .iter()
        .map(|url| url.replace("https://", "http://"))
        .collect();
    assert!(matches!(
        EtcdStore::connect(&plain, options()).await,
        Err(StoreError::Unavailable(_))
    ));
}

/// Reads creates from `watch` into `seen` until it holds `count` keys; anything but a create,
/// or a key seen twice, fails the test.
async fn creates_seen_once(watch: &mut WatchStream, seen: &mut BTreeSet<String>, count: usize) {
    while seen.len() < count {
        match next_change(watch).await {
            Some(Ok(Event::Put { object, prev: None })) => {
                assert!(
                    seen.insert(object.key.to_string()),
                    "duplicate {}",
                    object.key
                )
            }
            other => panic!("expected a create, got {other:?}"),
        }
    }
}
