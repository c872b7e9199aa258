//! The pod supervisor without namespaces (no root needed): restarts with back-off, restart
//! policies, init containers, probes, termination. Pods get loopback IPs as in the non-root
//! fallback.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use muster_agent::backoff::BackoffSettings;
use muster_agent::dnsfiles::{ClusterDns, HostDns};
use muster_agent::env::StaticEnvSources;
use muster_agent::pod::{PodContext, RuntimeSettings, run_pod};
use muster_agent::status::{PodRuntime, RunState, compute_status};
use serde_json::json;

fn settings(dir: &std::path::Path) -> Arc<RuntimeSettings> {
    Arc::new(RuntimeSettings {
        node_name: "node-a".into(),
        pods_dir: dir.join("pods"),
        backoff: BackoffSettings {
            initial: Duration::from_millis(300),
            max: Duration::from_secs(2),
            reset_after: Duration::from_secs(600),
        },
        workload_exe: env!("CARGO_BIN_EXE_muster-agent-workload").into(),
        cluster_dns: ClusterDns {
            nameserver: "10.96.0.10".parse().unwrap(),
            domain: "cluster.local".into(),
        },
        host_dns: HostDns::default(),
        host_ip: "127.0.0.1".parse().unwrap(),
        isolated: false,
    })
}

fn start(dir: &std::path::Path, pod: serde_json::Value, ip: &str) -> Arc<PodContext> {
    let pod: Pod = serde_json::from_value(pod).unwrap();
    let ip: IpAddr = ip.parse().unwrap();
    let ctx =
        PodContext::prepare(pod, ip, None, settings(dir), StaticEnvSources::default()).unwrap();
    tokio::spawn(run_pod(ctx.clone()));
    ctx
}

async fn wait_until(
    ctx: &PodContext,
    what: &str,
    cond: impl Fn(&PodRuntime) -> bool,
) -> PodRuntime {
    let mut rx = ctx.runtime.subscribe();
    let waited = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if cond(&rx.borrow_and_update()) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    let rt = ctx.runtime.borrow().clone();
    assert!(waited.is_ok(), "timed out waiting for {what}: {rt:#?}");
    rt
}

#[tokio::test]
async fn crash_loop_backs_off_and_counts_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = start(
        dir.path(),
        json!({"metadata": {"name": "crasher", "namespace": "default", "uid": "uid-crash"},
               "spec": {"containers": [{"name": "c", "command": ["sh", "-c", "echo run $RUN; exit 2"],
                                        "env": [{"name": "RUN", "value": "x"}]}]}}),
        "127.244.0.2",
    );
    let rt = wait_until(&ctx, "a crash loop", |rt| {
        let c = &rt.containers[0];
        c.restart_count >= 2
            && matches!(&c.state, RunState::Waiting { reason, .. } if reason == "CrashLoopBackOff")
    })
    .await;
    let c = &rt.containers[0];
    let last = c.last_terminated.as_ref().unwrap();
    assert_eq!((last.exit_code, last.reason.as_str()), (2, "Error"));
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "crasher"}, "spec": {"containers": [{"name": "c"}]}}),
    )
    .unwrap();
    let status = compute_status(&pod, &rt, None, k8s_openapi::jiff::Timestamp::now());
    assert_eq!(status.phase.as_deref(), Some("Running"));
    // the previous instance's log is kept
    let log = std::fs::read_to_string(dir.path().join("pods/uid-crash/logs/c/1.log")).unwrap();
    assert!(log.contains(" stdout F run x"), "{log}");
    ctx.request_stop(Duration::from_secs(1));
}

#[tokio::test]
async fn restart_policies_and_init_containers() {
    let dir = tempfile::tempdir().unwrap();
    // OnFailure: exit 0 is final, the pod Succeeds; init containers ran first, in order
    let marker = dir.path().join("order");
    let m = marker.display();
    let ctx = start(
        dir.path(),
        json!({"metadata": {"name": "job", "namespace": "default", "uid": "uid-job"},
               "spec": {"restartPolicy": "OnFailure",
                        "initContainers": [
                            {"name": "i1", "command": ["sh", "-c", format!("echo i1 >> {m}")]},
                            {"name": "i2", "command": ["sh", "-c", format!("echo i2 >> {m}")]}],
                        "containers": [{"name": "c", "command": ["sh", "-c", format!("echo c >> {m}")]}]}}),
        "127.244.0.3",
    );
    let rt = wait_until(&ctx, "completion", |rt| rt.containers[0].succeeded()).await;
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "i1\ni2\nc\n");
    assert_eq!(
        muster_agent::status::pod_phase(&rt, muster_agent::backoff::RestartPolicy::OnFailure),
        "Succeeded"
    );
    assert_eq!(rt.containers[0].restart_count, 0);
    ctx.request_stop(Duration::ZERO);

    // Never + a failing init container: the pod fails and the main container never starts
    let ctx = start(
        dir.path(),
        json!({"metadata": {"name": "bad-init", "namespace": "default", "uid": "uid-badinit"},
               "spec": {"restartPolicy": "Never",
                        "initContainers": [{"name": "i", "command": ["false"]}],
                        "containers": [{"name": "c", "command": ["sleep", "100"]}]}}),
        "127.244.0.4",
    );
    let rt = wait_until(&ctx, "init failure", |rt| {
        matches!(rt.init_containers[0].state, RunState::Terminated(_))
    })
    .await;
    assert_eq!(
        muster_agent::status::pod_phase(&rt, muster_agent::backoff::RestartPolicy::Never),
        "Failed"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!ctx.runtime.borrow().containers[0].is_running());
    ctx.request_stop(Duration::ZERO);

    // a command that does not exist: StartError with the shell's message, retried
    let ctx = start(
        dir.path(),
        json!({"metadata": {"name": "missing", "namespace": "default", "uid": "uid-missing"},
               "spec": {"containers": [{"name": "c", "command": ["no-such-binary-anywhere"]}]}}),
        "127.244.0.5",
    );
    let rt = wait_until(&ctx, "start error", |rt| {
        rt.containers[0].last_terminated.is_some()
    })
    .await;
    let last = rt.containers[0].last_terminated.clone().unwrap();
    assert_eq!((last.exit_code, last.reason.as_str()), (128, "StartError"));
    assert!(
        last.message
            .unwrap()
            .contains("executable file not found in $PATH")
    );
    ctx.request_stop(Duration::ZERO);
}

#[tokio::test]
async fn probes_gate_readiness_and_liveness_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("ready-flag");
    let ctx = start(
        dir.path(),
        json!({"metadata": {"name": "probed", "namespace": "default", "uid": "uid-probed"},
               "spec": {"containers": [
                   {"name": "web", "ports": [{"containerPort": 18080, "name": "http"}],
                    "readinessProbe": {"httpGet": {"port": "http", "path": "/"}, "periodSeconds": 1},
                    "startupProbe": {"tcpSocket": {"port": 18080}, "periodSeconds": 1}},
                   {"name": "gated", "command": ["sleep", "100"],
                    "readinessProbe": {"exec": {"command": ["test", "-e", flag.display().to_string()]},
                                       "periodSeconds": 1}},
                   {"name": "dies", "command": ["sleep", "100"],
                    "livenessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1,
                                      "failureThreshold": 2, "terminationGracePeriodSeconds": 1}}]}}),
        "127.244.0.6",
    );
    let rt = wait_until(&ctx, "web ready", |rt| rt.containers[0].ready).await;
    assert!(rt.containers[0].started);
    assert!(!rt.containers[1].ready, "gated must wait for its flag");
    std::fs::write(&flag, b"").unwrap();
    wait_until(&ctx, "gated ready", |rt| rt.containers[1].ready).await;
    let rt = wait_until(&ctx, "liveness restart", |rt| {
        rt.containers[2].restart_count >= 1
    })
    .await;
    let last = rt.containers[2].last_terminated.clone().unwrap();
    assert_eq!(
        last.exit_code, 143,
        "SIGTERM'd by the liveness failure: {last:?}"
    );
    // the default workload answers on the pod's loopback address with the pod name
    let body = tokio::task::spawn_blocking(|| {
        std::process::Command::new("curl")
            .args(["-s", "http://127.244.0.6:18080/"])
            .output()
    })
    .await
    .unwrap();
    if let Ok(out) = body {
        assert_eq!(String::from_utf8_lossy(&out.stdout), "probed\n");
    }
    std::fs::remove_file(&flag).unwrap();
    wait_until(&ctx, "gated unready again", |rt| !rt.containers[1].ready).await;

    // termination: SIGTERM, everything ends well within the grace period
    let t0 = std::time::Instant::now();
    ctx.request_stop(Duration::from_secs(5));
    // (a container waiting out its back-off simply never starts again)
    wait_until(&ctx, "all stopped", |rt| {
        rt.containers.iter().all(|c| !c.is_running())
    })
    .await;
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn sigkill_after_grace_period_and_prestop_hook() {
    let dir = tempfile::tempdir().unwrap();
    let hook_ran = dir.path().join("hook");
    let ctx = start(
        dir.path(),
        json!({"metadata": {"name": "stubborn", "namespace": "default", "uid": "uid-stubborn"},
               "spec": {"containers": [{"name": "c",
                    "command": ["sh", "-c", "trap '' TERM; echo started; while true; do sleep 0.1; done"],
                    "lifecycle": {"preStop": {"exec": {"command": ["touch", hook_ran.display().to_string()]}}}}]}}),
        "127.244.0.7",
    );
    wait_until(&ctx, "running", |rt| rt.containers[0].is_running()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = std::time::Instant::now();
    ctx.request_stop(Duration::from_secs(1));
    let rt = wait_until(&ctx, "killed", |rt| {
        matches!(rt.containers[0].state, RunState::Terminated(_))
    })
    .await;
    let elapsed = t0.elapsed();
    assert!(hook_ran.exists(), "preStop hook did not run");
    // 1 s grace, but at least 2 s after a preStop hook (as kubelet)
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    match &rt.containers[0].state {
        RunState::Terminated(t) => assert_eq!((t.exit_code, t.signal), (137, Some(9))),
        other => panic!("{other:?}"),
    }
}
