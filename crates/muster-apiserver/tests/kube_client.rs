//! The API server against kube-rs, the client the controllers, DNS and agent use: typed CRUD,
//! optimistic concurrency, status writes, and `kube::runtime::watcher` (list, watch, bookmarks).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher;

struct Running {
    api: muster_apiserver::ApiServer,
    client: kube::Client,
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let store =
        muster_store::RedbStore::open(&dir.path().join("store.redb"), Default::default()).unwrap();
    let api = muster_apiserver::start(muster_apiserver::ApiServerConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        service_cidr: "10.96.0.0/12".into(),
        store: store as Arc<dyn muster_store::Store>,
    })
    .await
    .unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(api.kubeconfig_path()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    Running {
        api,
        client,
        _dir: dir,
    }
}

fn configmap(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "test"}},
        "data": {"key": value},
    }))
    .unwrap()
}

#[tokio::test]
async fn typed_crud_and_optimistic_concurrency() {
    let r = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(r.client.clone(), "default");
    let created = cms
        .create(&PostParams::default(), &configmap("a", "1"))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.clone().unwrap();
    assert!(created.metadata.uid.is_some());

    let mut stale = created.clone();
    let mut fresh = created.clone();
    fresh
        .data
        .as_mut()
        .unwrap()
        .insert("key".into(), "2".into());
    let updated = cms
        .replace("a", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert!(
        updated
            .metadata
            .resource_version
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > rv.parse().unwrap()
    );

    stale
        .data
        .as_mut()
        .unwrap()
        .insert("key".into(), "3".into());
    match cms.replace("a", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (409, "Conflict")),
        other => panic!("expected a conflict, got {other:?}"),
    }

    let patched = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"other": "x"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap().get("key").unwrap(), "2");

    let listed = cms
        .list(&ListParams::default().labels("app=test"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);

    cms.delete("a", &DeleteParams::default()).await.unwrap();
    match cms.get("a").await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 404),
        other => panic!("expected 404, got {other:?}"),
    }
    r.api.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn status_subresource_only_changes_status() {
    let r = start().await;
    let pods: Api<Pod> = Api::namespaced(r.client.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = serde_json::json!({
        "metadata": {"labels": {"ignored-on-main": "no"}},
        "spec": {"nodeName": "not-through-status"},
        "status": {"phase": "Running", "podIP": "10.244.0.5"},
    });
    let after = pods
        .patch_status("p", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    assert_eq!(after.status.unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(after.spec.unwrap().node_name, None);
    r.api.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn runtime_watcher_sees_initial_objects_and_changes() {
    let r = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(r.client.clone(), "default");
    cms.create(&PostParams::default(), &configmap("before", "1"))
        .await
        .unwrap();
    let mut stream = watcher(cms.clone(), watcher::Config::default().labels("app=test")).boxed();
    let mut seen_initial = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut created_later = false;
    loop {
        let event = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("watcher event in time")
            .expect("stream open")
            .expect("no watcher error");
        match event {
            watcher::Event::InitApply(cm) => {
                seen_initial |= cm.metadata.name.as_deref() == Some("before");
            }
            watcher::Event::InitDone => {
                assert!(seen_initial, "the initial list missed an object");
                cms.create(&PostParams::default(), &configmap("after", "2"))
                    .await
                    .unwrap();
                created_later = true;
            }
            watcher::Event::Apply(cm) if cm.metadata.name.as_deref() == Some("after") => {
                assert!(created_later);
                break;
            }
            _ => {}
        }
    }
    r.api.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn readiness_waits_for_registered_components() {
    let r = start().await;
    let dns = r.api.readiness().register("dns");
    let raw = |path: &str| {
        let client = r.client.clone();
        let path = path.to_string();
        async move {
            let req = http::Request::get(path).body(Vec::new()).unwrap();
            client.request_text(req).await
        }
    };
    assert!(raw("/readyz").await.is_err(), "ready before dns reported");
    dns.set_ready();
    assert_eq!(raw("/readyz").await.unwrap(), "ok");
    let verbose = raw("/readyz?verbose").await.unwrap();
    assert!(verbose.contains("[+]dns ok"), "{verbose}");
    let namespaces: Api<Namespace> = Api::all(r.client.clone());
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    r.api.shutdown(Duration::from_secs(1)).await;
}

/// Reads at a resourceVersion the store has not reached: a plain watch is accepted and stays
/// silent until the store passes it; a list waits for it (a write that arrives meanwhile
/// satisfies it) and otherwise, after Kubernetes' 3 s, fails with 504 "Too large resource
/// version".
#[tokio::test]
async fn reads_ahead_of_the_store_wait_then_time_out() {
    let r = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(r.client.clone(), "default");
    let now: u64 = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap()
        .parse()
        .unwrap();

    let mut events = cms
        .watch(&WatchParams::default().timeout(10), &(now + 2).to_string())
        .await
        .unwrap()
        .boxed();
    for name in ["ahead-1", "ahead-2", "ahead-3"] {
        cms.create(&PostParams::default(), &configmap(name, "v"))
            .await
            .unwrap();
    }
    match events.next().await {
        Some(Ok(WatchEvent::Added(cm))) => {
            assert_eq!(cm.metadata.name.as_deref(), Some("ahead-3"))
        }
        other => panic!("expected ADDED ahead-3 only, got {other:?}"),
    }

    let writer = {
        let cms = cms.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            cms.create(&PostParams::default(), &configmap("ahead-4", "v"))
                .await
                .unwrap();
        })
    };
    let list = cms
        .list(&ListParams::default().at(&(now + 4).to_string()))
        .await
        .unwrap();
    writer.await.unwrap();
    assert!(
        list.items
            .iter()
            .any(|cm| cm.metadata.name.as_deref() == Some("ahead-4"))
    );

    // kube-rs (like client-go) re-sends a 504 that carries Retry-After; ask once.
    let kubeconfig = kube::config::Kubeconfig::read_from(r.api.kubeconfig_path()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    config.default_retry = false;
    let once: Api<ConfigMap> = Api::namespaced(kube::Client::try_from(config).unwrap(), "default");
    let started = std::time::Instant::now();
    let far = now + 1_000;
    match once.list(&ListParams::default().at(&far.to_string())).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 504);
            assert_eq!(status.reason, "Timeout");
            assert_eq!(
                status.message,
                format!(
                    "Timeout: Too large resource version: {far}, current: {}",
                    now + 4
                )
            );
        }
        other => panic!("expected 504, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        (Duration::from_secs(3)..Duration::from_secs(10)).contains(&waited),
        "{waited:?}"
    );
    r.api.shutdown(Duration::from_secs(1)).await;
}

/// kubectl 1.33 asks for /openapi/v2 (protobuf only) in client-side `apply` and `diff`, after
/// finding no strategic-merge-patch support in the v3 document, and on a 404 computes the
/// patch from the metadata compiled into it, which is exact for every built-in kind; so a
/// NotFound Status is the right answer (see openapi.rs).
#[tokio::test]
async fn openapi_v2_is_not_found() {
    let r = start().await;
    let req = http::Request::get("/openapi/v2")
        .header(
            "Accept",
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
        )
        .body(Vec::new())
        .unwrap();
    match r.client.request_text(req).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"))
        }
        other => panic!("expected 404, got {other:?}"),
    }
    r.api.shutdown(Duration::from_secs(1)).await;
}

/// A paged list reports the first page's revision on every page, so a watch from the list's
/// revision (what an informer does) still sees a change made to an earlier page while paging.
#[tokio::test]
async fn pages_report_the_first_revision_so_a_watch_misses_nothing() {
    let r = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(r.client.clone(), "default");
    for name in ["a", "b", "c", "d", "e"] {
        cms.create(&PostParams::default(), &configmap(name, "1"))
            .await
            .unwrap();
    }
    let first = cms.list(&ListParams::default().limit(2)).await.unwrap();
    let first_rv = first.metadata.resource_version.clone().unwrap();
    let token = first.metadata.continue_.clone().expect("more pages");
    assert_eq!(first.items.len(), 2);
    // Changed after its page was sent, before the next page is read.
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"key": "2"}})),
    )
    .await
    .unwrap();
    let mut pages = vec![first];
    let mut token = Some(token);
    while let Some(t) = token.take() {
        let page = cms
            .list(&ListParams::default().limit(2).continue_token(&t))
            .await
            .unwrap();
        assert_eq!(
            page.metadata.resource_version.as_deref(),
            Some(first_rv.as_str()),
            "every page reports the first page's revision"
        );
        token = page.metadata.continue_.clone().filter(|t| !t.is_empty());
        pages.push(page);
    }
    let names: Vec<String> = pages
        .iter()
        .flat_map(|p| p.items.iter())
        .map(|cm| cm.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c", "d", "e"]);

    let mut events = cms
        .watch(&WatchParams::default().timeout(10), &first_rv)
        .await
        .unwrap()
        .boxed();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("the change to page 1 is replayed in time")
            .expect("stream open")
            .unwrap();
        if let WatchEvent::Modified(cm) = event {
            assert_eq!(cm.metadata.name.as_deref(), Some("a"));
            assert_eq!(cm.data.unwrap()["key"], "2");
            break;
        }
    }
    r.api.shutdown(Duration::from_secs(1)).await;
}
