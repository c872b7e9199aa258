//! Benchmarks against a real `muster apiserver` (the binary from `MUSTER_BIN` or the cargo
//! target dir), with this crate's controllers in-process:
//!
//! 1. Ready-to-slice latency: time from a pod's Ready status write (pods/status) to the
//!    EndpointSlice update that reflects it, over `FLIPS` flips (p50/p99).
//! 2. Convergence: `SERVICES` services × `PODS` ready pods exist; the controllers start from
//!    nothing; time until every service has a slice listing all its pods.
//!
//! `cargo bench -p muster-controllers --bench endpoints` (sizes: BENCH_FLIPS (1000),
//! BENCH_SERVICES (1000; 0 skips the convergence run), BENCH_PODS (10); the issue's
//! convergence figure uses 10000 services).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pod(name: &str, app: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("app".to_string(), app.to_string())].into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some("x".into()),
                ..Default::default()
            }],
            // Keep the scheduler out of the measurement.
            node_name: Some("bench-node".into()),
            ..Default::default()
        }),
        status: None,
    }
}

fn service(name: &str, app: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some([("app".to_string(), app.to_string())].into()),
            ports: Some(vec![ServicePort {
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn ip(i: usize) -> String {
    format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn flip_latency(flips: usize) {
    let c = Cluster::start().await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let services: Api<Service> = Api::namespaced(c.client.clone(), "default");
    let n = 100;
    for i in 0..n {
        pods.create(&PostParams::default(), &pod(&format!("flip-{i}"), "flip"))
            .await
            .unwrap();
        set_pod_status(&c.client, "default", &format!("flip-{i}"), &ip(i), true).await;
    }
    services
        .create(&PostParams::default(), &service("flip", "flip"))
        .await
        .unwrap();
    // Every slice event: (ip → ready) as of that event, with the arrival time.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, HashMap<String, bool>)>();
    let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), "default");
    let slice_watch = tokio::spawn(async move {
        let cfg = watcher::Config::default().labels("kubernetes.io/service-name=flip");
        let mut s = watcher(slices, cfg).applied_objects().boxed();
        while let Ok(Some(slice)) = s.try_next().await {
            let m = slice
                .endpoints
                .iter()
                .map(|e| {
                    (
                        e.addresses[0].clone(),
                        e.conditions.as_ref().and_then(|c| c.ready) == Some(true),
                    )
                })
                .collect();
            let _ = tx.send((Instant::now(), m));
        }
    });
    // Wait for the initial state.
    loop {
        let (_, m) = rx.recv().await.unwrap();
        if m.len() == n && m.values().all(|r| *r) {
            break;
        }
    }
    // Reference measured in the same run: when the pod's own watch event arrives (the API's
    // write + watch latency, which the controller cannot beat).
    let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel::<(Instant, String, bool)>();
    let pod_watch: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let reference_watch = tokio::spawn(async move {
        let cfg = watcher::Config::default().labels("app=flip");
        let mut s = watcher(pod_watch, cfg).applied_objects().boxed();
        while let Ok(Some(p)) = s.try_next().await {
            let ready = muster_controllers::util::pod_is_ready(&p);
            let _ = ptx.send((Instant::now(), p.metadata.name.unwrap_or_default(), ready));
        }
    });
    // Second reference: the API's write + watch of a slice of the same size, written directly
    // (an unmanaged copy the controllers leave alone), interleaved with the flips so both see
    // the same load. The controller's own share is what the slice event adds beyond it.
    let mut reference = slices_api_list(&c, "kubernetes.io/service-name=flip").await;
    reference.metadata = ObjectMeta {
        name: Some("flip-reference".into()),
        labels: Some([("bench".to_string(), "reference".to_string())].into()),
        ..Default::default()
    };
    let slice_api: Api<EndpointSlice> = Api::namespaced(c.client.clone(), "default");
    let mut reference = slice_api
        .create(&PostParams::default(), &reference)
        .await
        .unwrap();
    let (rtx, mut rrx) = tokio::sync::mpsc::unbounded_channel::<(Instant, String)>();
    let ref_watch = slice_api.clone();
    let pod_watch_task = tokio::spawn(async move {
        let cfg = watcher::Config::default().labels("bench=reference");
        let mut s = watcher(ref_watch, cfg).applied_objects().boxed();
        while let Ok(Some(slice)) = s.try_next().await {
            let _ = rtx.send((
                Instant::now(),
                slice.metadata.resource_version.unwrap_or_default(),
            ));
        }
    });
    let mut direct = Vec::with_capacity(flips);
    let mut ready = vec![true; n];
    let mut write = Vec::with_capacity(flips);
    let mut pod_event = Vec::with_capacity(flips);
    let mut lat = Vec::with_capacity(flips);
    for k in 0..flips {
        let i = (k * 37) % n;
        ready[i] = !ready[i];
        while prx.try_recv().is_ok() {}
        let start = Instant::now();
        set_pod_status(&c.client, "default", &format!("flip-{i}"), &ip(i), ready[i]).await;
        write.push(start.elapsed());
        loop {
            let (at, name, r) = tokio::time::timeout(Duration::from_secs(10), prx.recv())
                .await
                .expect("pod event")
                .unwrap();
            if name == format!("flip-{i}") && r == ready[i] {
                pod_event.push(at - start);
                break;
            }
        }
        loop {
            let (at, m) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("slice update")
                .unwrap();
            if m.get(&ip(i)) == Some(&ready[i]) {
                lat.push(at - start);
                break;
            }
        }
        let conditions = reference.endpoints[i].conditions.get_or_insert_default();
        conditions.ready = Some(!conditions.ready.unwrap_or(false));
        while rrx.try_recv().is_ok() {}
        let start = Instant::now();
        reference = slice_api
            .replace("flip-reference", &PostParams::default(), &reference)
            .await
            .unwrap();
        let rv = reference
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        loop {
            let (at, got) = tokio::time::timeout(Duration::from_secs(10), rrx.recv())
                .await
                .expect("reference slice event")
                .unwrap();
            if got == rv {
                direct.push(at - start);
                break;
            }
        }
    }
    // Stop watching before the API server goes, so no watch reports its death.
    for task in [slice_watch, reference_watch, pod_watch_task] {
        task.abort();
    }
    let mut added: Vec<Duration> = lat
        .iter()
        .zip(&pod_event)
        .map(|(slice, pod)| slice.saturating_sub(*pod))
        .collect();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "ready → EndpointSlice over {flips} flips (load average {})",
        load_average()
    );
    println!(
        "{:<36} {:>9} {:>9} {:>9}",
        "figure", "p50 ms", "p99 ms", "max ms"
    );
    for (what, v) in [
        ("status write answered", &mut write),
        ("pod watch event (reference)", &mut pod_event),
        ("EndpointSlice watch event", &mut lat),
        ("slice event - pod event (per flip)", &mut added),
        ("direct slice write: watch event", &mut direct),
    ] {
        v.sort();
        println!(
            "{what:<36} {:>9.2} {:>9.2} {:>9.2}",
            ms(percentile(v, 0.50)),
            ms(percentile(v, 0.99)),
            ms(*v.last().unwrap())
        );
    }
    println!(
        "slice / pod event: {:.2}x at p50, {:.2}x at p99; slice / (pod event + direct slice write): {:.2}x at p50, {:.2}x at p99; bar p99 < 20 ms: {}",
        ms(percentile(&lat, 0.50)) / ms(percentile(&pod_event, 0.50)),
        ms(percentile(&lat, 0.99)) / ms(percentile(&pod_event, 0.99)),
        ms(percentile(&lat, 0.50))
            / (ms(percentile(&pod_event, 0.50)) + ms(percentile(&direct, 0.50))),
        ms(percentile(&lat, 0.99))
            / (ms(percentile(&pod_event, 0.99)) + ms(percentile(&direct, 0.99))),
        if percentile(&lat, 0.99) < Duration::from_millis(20) {
            "met"
        } else {
            "not met"
        }
    );
}

/// The one slice listed by `selector`.
async fn slices_api_list(c: &Cluster, selector: &str) -> EndpointSlice {
    let api: Api<EndpointSlice> = Api::namespaced(c.client.clone(), "default");
    let mut list = api
        .list(&kube::api::ListParams::default().labels(selector))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1, "one slice for {selector}");
    list.items.remove(0)
}

/// The 1-minute load average, to say how busy the machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

async fn convergence(services_n: usize, pods_n: usize) {
    // Every pod and service exists before the controllers start: they converge from empty.
    let mut c = Cluster::start_api_only().await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let services: Api<Service> = Api::namespaced(c.client.clone(), "default");
    let t = Instant::now();
    futures::stream::iter(0..services_n)
        .map(|s| {
            let pods = pods.clone();
            let services = services.clone();
            let client = c.client.clone();
            async move {
                for p in 0..pods_n {
                    let name = format!("s{s}-p{p}");
                    pods.create(&PostParams::default(), &pod(&name, &format!("s{s}")))
                        .await
                        .unwrap();
                    set_pod_status(&client, "default", &name, &ip(s * pods_n + p), true).await;
                }
                services
                    .create(
                        &PostParams::default(),
                        &service(&format!("s{s}"), &format!("s{s}")),
                    )
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    println!(
        "setup: {services_n} services and {} pods written in {:.1} s",
        services_n * pods_n,
        t.elapsed().as_secs_f64()
    );
    let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), "default");
    let start = Instant::now();
    let cfg = muster_controllers::ControllersConfig {
        workers: 8,
        ..Default::default()
    };
    c.start_controllers(cfg).await;
    let synced = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let list = slices.list(&Default::default()).await.unwrap();
        let complete = list
            .items
            .iter()
            .filter(|s| s.endpoints.len() == pods_n)
            .count();
        if complete >= services_n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no convergence: {complete}/{services_n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "converge from empty, {services_n} services × {pods_n} pods: informers synced in {:.2} s, all slices complete in {:.2} s (load average {})",
        synced.as_secs_f64(),
        start.elapsed().as_secs_f64(),
        load_average()
    );
}

#[tokio::main]
async fn main() {
    flip_latency(env("BENCH_FLIPS", 1000)).await;
    // 0 services skips the convergence run (the 10,000-service figure takes minutes).
    let services = env("BENCH_SERVICES", 1000);
    if services > 0 {
        convergence(services, env("BENCH_PODS", 10)).await;
    }
}
