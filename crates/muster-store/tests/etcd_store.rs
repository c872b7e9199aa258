//! Behaviour of `EtcdStore` through the `Store` trait, on real etcd processes started on free
//! loopback ports (the Debian `etcd-server` package; scripts/test installs it). Each test gets
//! its own fresh etcd, which starts at revision 1 like a fresh embedded store, so the same
//! revision tables as tests/store.rs apply.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_store::{
    EtcdOptions, EtcdStore, Event, Object, Revision, Store, StoreError, WatchStream,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// A loopback etcd cluster owned by one test.

struct Member {
    name: String,
    client_url: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

struct Etcd {
    members: Vec<Member>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Finds etcd, installing the Debian package once if we are root and it is missing.
fn etcd_binary() -> Option<&'static str> {
    static FOUND: std::sync::OnceLock<Option<&'static str>> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| {
        let path = "/usr/bin/etcd";
        if Path::new(path).exists() {
            return Some(path);
        }
        let root = Command::new("id").arg("-u").output().ok().map(|o| o.stdout);
        if root.as_deref() == Some(b"0\n".as_slice()) {
            let _ = Command::new("apt-get")
                .args(["install", "-y", "-qq", "etcd-server"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status();
        }
        Path::new(path).exists().then_some(path)
    })
}

impl Etcd {
    /// Starts `size` members and waits until each is healthy. `None` (with the reason printed)
    /// only when etcd is not installed and cannot be.
    fn start(size: usize) -> Option<Etcd> {
        Etcd::start_with(size, None)
    }

    /// Like [`Etcd::start`]; with `tls`, clients must connect over HTTPS with a certificate
    /// signed by the CA in it.
    fn start_with(size: usize, tls: Option<&TlsFiles>) -> Option<Etcd> {
        let Some(binary) = etcd_binary() else {
            eprintln!("SKIP: /usr/bin/etcd is missing and could not be installed (etcd-server)");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("m{i}");
            let scheme = if tls.is_some() { "https" } else { "http" };
            let client_url = format!("{scheme}://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let data = dir.path().join(&name);
            let args: Vec<String> = [
                "--name",
                &name,
                "--data-dir",
                data.to_str().unwrap(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &cluster,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "muster-test",
                // Progress events for idle watches, quickly enough for a test.
                "--experimental-watch-progress-notify-interval",
                "100ms",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let mut args = args;
            if let Some(tls) = tls {
                for (flag, path) in [
                    ("--cert-file", &tls.server_cert),
                    ("--key-file", &tls.server_key),
                    ("--trusted-ca-file", &tls.ca),
                ] {
                    args.push(flag.into());
                    args.push(path.to_str().unwrap().into());
                }
                args.push("--client-cert-auth".into());
            }
            let mut member = Member {
                log: dir.path().join(format!("{name}.log")),
                name,
                client_url,
                args,
                child: None,
            };
            member.spawn(binary);
            members.push(member);
        }
        let etcd = Etcd { members, _dir: dir };
        for i in 0..size {
            etcd.wait_healthy(i);
        }
        Some(etcd)
    }

    fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    fn wait_healthy(&self, index: usize) {
        let member = &self.members[index];
        let tls = member.client_url.starts_with("https://");
        let address = member
            .client_url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            // Over TLS a listening port is enough; the test's connect retries until ready.
            if (tls && TcpStream::connect(&address).is_ok()) || (!tls && health(&address)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(&member.log).unwrap_or_default();
        panic!(
            "etcd member {} not healthy in 20 s; log:\n{log}",
            member.name
        );
    }

    /// SIGKILLs one member (by the PID we started).
    fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts a killed member with its data directory.
    fn restart(&mut self, index: usize) {
        let binary = etcd_binary().expect("etcd ran before");
        self.members[index].spawn(binary);
        self.wait_healthy(index);
    }

    fn pause(&self, index: usize, stop: bool) {
        let pid = self.members[index].child.as_ref().expect("running").id();
        let signal = if stop { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Member {
    fn spawn(&mut self, binary: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("etcd log file");
        let child = Command::new(binary)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                // A paused member must be continued to die cleanly; SIGKILL works either way.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// etcd's /health over plain HTTP/1.0 on loopback.
fn health(address: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.contains(r#""health":"true""#)
}

/// PEM files of a throwaway CA, an etcd serving certificate for 127.0.0.1 and a client
/// certificate, all made with rcgen.
struct TlsFiles {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// A CA that signed nothing here, to check that etcd's certificate is verified.
    other_ca: PathBuf,
}

fn make_tls_files(dir: &Path) -> TlsFiles {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        SanType,
    };
    let ca = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.clone().self_signed(&key).unwrap();
        (cert.pem(), Issuer::new(params, key))
    };
    let (ca_pem, issuer) = ca("muster-test-etcd-ca");
    let (other_ca_pem, _) = ca("unrelated-ca");
    let leaf = |usage: ExtendedKeyUsagePurpose, name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key) = leaf(ExtendedKeyUsagePurpose::ServerAuth, "localhost");
    let (client_pem, client_key) = leaf(ExtendedKeyUsagePurpose::ClientAuth, "muster");
    let write = |name: &str, contents: &str| {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    };
    TlsFiles {
        ca: write("ca.crt", &ca_pem),
        server_cert: write("server.crt", &server_pem),
        server_key: write("server.key", &server_key),
        client_cert: write("client.crt", &client_pem),
        client_key: write("client.key", &client_key),
        other_ca: write("other-ca.crt", &other_ca_pem),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

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

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    })
}

fn resource_version(object: &Object) -> String {
    object.json().unwrap()["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion is a string")
        .to_string()
}

async fn next_event(stream: &mut WatchStream) -> Option<Result<Event, StoreError>> {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("watch event within 5 s")
}

/// The next event that is not a progress notification.
async fn next_change(stream: &mut WatchStream) -> Option<Result<Event, StoreError>> {
    loop {
        match next_event(stream).await {
            Some(Ok(Event::Progress(_))) => continue,
            other => return other,
        }
    }
}

/// Asserts that no change is waiting (progress notifications are allowed).
async fn assert_no_change(stream: &mut WatchStream) {
    tokio::time::sleep(Duration::from_millis(150)).await;
    loop {
        match stream.rx.try_recv() {
            Ok(Ok(Event::Progress(_))) => continue,
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => return,
            other => panic!("expected no change, got {other:?}"),
        }
    }
}

fn summary(event: &Event) -> (&'static str, String, u64) {
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

async fn create_all(store: &EtcdStore, keys: &[&str]) {
    for key in keys {
        store.create(key, pod(key)).await.expect("create");
    }
}

// ---------------------------------------------------------------------------------------------
// The behaviour table of the embedded store.

#[derive(Debug)]
enum Step {
    Create(&'static str),
    Update(&'static str, Option<Revision>),
    Delete(&'static str, Option<Revision>),
    Get(&'static str),
}

#[derive(Debug, PartialEq)]
enum Expect {
    Revisions(Revision, Revision),
    Absent,
    Error(StoreError),
}

#[tokio::test]
async fn single_key_operations_follow_the_contract() {
    use Expect::*;
    use Step::*;
    let Some(etcd) = Etcd::start(1) else { return };
    let conflict = |expected, current| {
        Error(StoreError::Conflict {
            key: "/a".into(),
            expected,
            current,
        })
    };
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
        (
            Update("/a", Some(0)),
            Error(StoreError::NotFound("/a".into())),
        ),
        (Create("/a"), Revisions(6, 6)),
        (Delete("/a", None), Revisions(7, 6)),
    ];
    let store = connect(&etcd, options()).await;
    assert_eq!(store.revision(), 1, "a fresh etcd is at revision 1");
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
async fn values_must_be_objects_with_metadata_and_stored_json_matches_the_embedded_store() {
    let Some(etcd) = Etcd::start(1) else { return };
    let store = connect(&etcd, options()).await;
    store.create("/exists", pod("exists")).await.unwrap();
    let revision = store.revision();
    for value in [
        json!(1),
        json!(null),
        json!([{"metadata": {}}]),
        json!({}),
        json!({"metadata": "x"}),
        json!({"metadata": null}),
    ] {
        for result in [
            store.create("/new", value.clone()).await,
            store.update("/exists", value.clone(), None).await,
        ] {
            assert!(
                matches!(result, Err(StoreError::InvalidValue(_))),
                "{value}: {result:?}"
            );
        }
    }
    assert_eq!(store.revision(), revision, "nothing was written");
    // The same JSON bytes as the embedded store for the same input.
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

#[tokio::test]
async fn list_honours_prefix_start_after_and_limit() {
    let Some(etcd) = Etcd::start(1) else { return };
    let store = connect(&etcd, options()).await;
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
async fn delete_returns_the_last_value_stamped_with_the_deletion_revision() {
    let Some(etcd) = Etcd::start(1) else { return };
    let store = connect(&etcd, options()).await;
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

#[tokio::test]
async fn watch_replays_history_then_streams_live_events_under_its_prefix() {
    let Some(etcd) = Etcd::start(1) else { return };
    let store = connect(&etcd, options()).await;
    create_all(&store, &["/w/a", "/other/x", "/w/b"]).await; // revisions 2, 3, 4
    let updated = store.update("/w/a", pod("a"), None).await.unwrap(); // 5
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
    store.create("/other/y", pod("y")).await.unwrap(); // 6
    store.delete("/w/b", None).await.unwrap(); // 7
    for stream in &mut streams {
        let event = next_change(stream).await.unwrap().unwrap();
        assert_eq!(summary(&event), ("delete", "/w/b".to_string(), 7));
        assert_no_change(stream).await;
    }
}

#[tokio::test]
async fn watch_rejects_future_and_compacted_revisions() {
    let Some(etcd) = Etcd::start(1) else { return };
    let store = connect(&etcd, options()).await;
    create_all(&store, &["/a", "/b", "/c", "/d", "/e"]).await; // revisions 2..=6
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

#[tokio::test]
async fn concurrent_creates_of_one_key_have_exactly_one_winner() {
    let Some(etcd) = Etcd::start(1) else { return };
    let store = connect(&etcd, options()).await;
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

/// Two stores on one etcd stand for two API servers: optimistic concurrency holds across
/// them, and a write through one is seen by a list and a watch through the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_etcd_share_state_and_concurrency_control() {
    let Some(etcd) = Etcd::start(1) else { return };
    let stores = [
        connect(&etcd, options()).await,
        connect(&etcd, options()).await,
    ];
    stores[0]
        .create("/counter", json!({"metadata": {}, "count": 0}))
        .await
        .unwrap();
    let (_, mut watch) = stores[1].list_and_watch("/counter").await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = stores[i % 2].clone();
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
    let counter = stores[1].get("/counter").await.unwrap().unwrap();
    assert_eq!(counter.json().unwrap()["count"], json!(80));
    assert_eq!(
        counter.mod_revision,
        2 + 80,
        "failed preconditions took no revision"
    );
    let mut updates = 0;
    while updates < 80 {
        let event = next_change(&mut watch).await.unwrap().unwrap();
        assert_eq!(summary(&event).0, "update");
        updates += 1;
    }
    let listed = stores[0].list("/", None, None).await.unwrap();
    assert_eq!(listed.items, vec![counter]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_watch_neither_misses_nor_repeats_under_concurrent_writes() {
    let Some(etcd) = Etcd::start(1) else { return };
    let store = connect(&etcd, options()).await;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    let key = format!("/lw/{w}/{}", i % 7);
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
        tokio::time::sleep(Duration::from_millis(5)).await;
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

/// Unreachable (killed) and unresponsive (stopped) etcd give `Unavailable` within the request
/// timeout, never a wrong answer, and the same store works again once etcd is back.
///
/// A killed etcd never receives the writes, so afterwards nothing has changed. A stopped one
/// has them in its socket buffer and may apply them once it runs again: like any etcd client,
/// the store cannot know, so it said `Unavailable` (never "done" or "not done"), and the test
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
            assert!(
                matches!(result, Err(StoreError::Unavailable(_))),
                "{outage}: request {i}: {result:?}"
            );
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
                Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
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
                        Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
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
    while seen.len() < stored.len() {
        match next_change(&mut watch).await {
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
                    Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
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
    while seen.len() < stored.len() {
        match next_change(&mut watch).await {
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
