//! Restarts and crashes: every acknowledged write survives, resourceVersions keep increasing.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{configmap, server};

fn rv(s: &common::Server, what: &[&str]) -> u64 {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "jsonpath={.metadata.resourceVersion}"]);
    s.kubectl(&args)
        .ok()
        .stdout
        .parse()
        .expect("numeric resourceVersion")
}

#[test]
fn restart_keeps_objects_and_resource_versions() {
    let Some(mut s) = server(false) else { return };
    s.kubectl_stdin(&["create", "-f", "-"], &configmap("kept", "1"))
        .ok();
    let before = rv(&s, &["cm", "kept"]);
    let svc_ip = s
        .kubectl(&[
            "get",
            "svc",
            "kubernetes",
            "-o",
            "jsonpath={.spec.clusterIP} {.metadata.uid}",
        ])
        .ok()
        .stdout;
    let status = s.stop();
    assert!(status.success(), "SIGTERM should stop cleanly: {status}");
    s.launch();
    assert_eq!(rv(&s, &["cm", "kept"]), before);
    // The bootstrap is idempotent: the same Service, not a new one.
    let after_ip = s
        .kubectl(&[
            "get",
            "svc",
            "kubernetes",
            "-o",
            "jsonpath={.spec.clusterIP} {.metadata.uid}",
        ])
        .ok()
        .stdout;
    assert_eq!(after_ip, svc_ip);
    s.kubectl_stdin(&["create", "-f", "-"], &configmap("new", "1"))
        .ok();
    assert!(rv(&s, &["cm", "new"]) > before);
}

#[test]
fn kill_9_during_writes_loses_no_acknowledged_write() {
    let Some(mut s) = server(true) else { return };
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let url = s.url();
    let token = s.token();
    let ca = s.data_dir().join("pki/ca.crt");
    let writer = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            // Bounded: at most 400 writes or 60 s, whichever comes first.
            let deadline = Instant::now() + Duration::from_secs(60);
            for i in 0..400 {
                if Instant::now() > deadline {
                    break;
                }
                let name = format!("crash-{i}");
                let body = format!(
                    r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"i":"{i}"}}}}"#
                );
                let out = std::process::Command::new("curl")
                    .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
                    .arg("--cacert")
                    .arg(&ca)
                    .args(["-H", &format!("Authorization: Bearer {token}")])
                    .args(["-H", "Content-Type: application/json", "--data", &body])
                    .arg(format!("{url}/api/v1/namespaces/default/configmaps"))
                    .output();
                match out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()) {
                    Ok(code) if code == "201" => acked.lock().unwrap().push(name),
                    _ => break, // the server is gone
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 30 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    s.kill9();
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 30,
        "only {} writes before the kill",
        acked.len()
    );
    s.launch();
    let listed = s.kubectl(&["get", "cm", "-o", "name"]).ok().stdout;
    for name in &acked {
        assert!(
            listed.contains(&format!("configmap/{name}\n")),
            "{name} was acknowledged but is gone"
        );
    }
}

#[test]
fn sigterm_stops_promptly_with_open_watches() {
    let Some(mut s) = server(false) else { return };
    let mut watch = s.kubectl_spawn(&["get", "pods", "-A", "-w"]);
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let status = s.stop();
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let _ = watch.kill();
    let _ = watch.wait();
}
