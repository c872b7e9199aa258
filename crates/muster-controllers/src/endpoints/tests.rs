use super::*;
use crate::testutil::*;

/// Plays the API server for slices: applies actions, naming created slices.
fn apply_slices(slices: &mut Vec<EndpointSlice>, actions: &[SliceAction], seq: &mut u32) {
    for a in actions {
        match a {
            SliceAction::Create(s) => {
                let mut s = s.clone();
                *seq += 1;
                s.metadata.name = Some(format!(
                    "{}{:05}",
                    s.metadata.generate_name.clone().unwrap(),
                    seq
                ));
                s.metadata.resource_version = Some("1".into());
                slices.push(s);
            }
            SliceAction::Update(s) => {
                let i = slices
                    .iter()
                    .position(|x| x.metadata.name == s.metadata.name)
                    .expect("update of a slice that exists");
                assert_eq!(
                    slices[i].metadata.resource_version, s.metadata.resource_version,
                    "update carries the resourceVersion it read"
                );
                slices[i] = s.clone();
            }
            SliceAction::Delete { name } => {
                let before = slices.len();
                slices.retain(|x| x.metadata.name.as_deref() != Some(name));
                assert_eq!(before, slices.len() + 1, "delete of a slice that exists");
            }
        }
    }
}

fn render_slice(s: &EndpointSlice) -> String {
    let ports: Vec<String> = s
        .ports
        .iter()
        .flatten()
        .map(|p| {
            format!(
                "{}:{}/{}",
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or(0),
                p.protocol.clone().unwrap_or_default()
            )
        })
        .collect();
    let eps: Vec<String> = s
        .endpoints
        .iter()
        .map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            let mut flags = String::new();
            flags.push(if c.ready == Some(true) { 'R' } else { '-' });
            flags.push(if c.serving == Some(true) { 'S' } else { '-' });
            flags.push(if c.terminating == Some(true) {
                'T'
            } else {
                '-'
            });
            let mut out = format!("{}({flags})", e.addresses.join(","));
            if let Some(h) = &e.hostname {
                out.push_str(&format!("h={h}"));
            }
            out
        })
        .collect();
    format!("{} [{}] {}", s.address_type, ports.join(","), eps.join(" "))
}

struct World {
    service: Option<Service>,
    pods: Vec<Pod>,
    slices: Vec<EndpointSlice>,
    endpoints: Option<Endpoints>,
    seq: u32,
}

impl World {
    fn new(service: Service, pods: Vec<Pod>) -> World {
        World {
            service: Some(service),
            pods,
            slices: Vec::new(),
            endpoints: None,
            seq: 0,
        }
    }

    /// One sync; returns (slice actions, endpoints action).
    fn sync(&mut self) -> (Vec<SliceAction>, Option<EndpointsAction>) {
        let pods: Vec<&Pod> = self.pods.iter().collect();
        let slices: Vec<&EndpointSlice> = self.slices.iter().collect();
        let zones = BTreeMap::from([("node-a".to_string(), "zone-1".to_string())]);
        let obs = Observed {
            service: self.service.as_ref(),
            pods: &pods,
            slices: &slices,
            endpoints: self.endpoints.as_ref(),
            node_zones: &zones,
            trigger_time: None,
        };
        let sa = reconcile_slices(&obs);
        let ea = reconcile_endpoints(&obs);
        apply_slices(&mut self.slices, &sa, &mut self.seq);
        match &ea {
            Some(EndpointsAction::Create(e)) | Some(EndpointsAction::Update(e)) => {
                self.endpoints = Some(e.clone())
            }
            Some(EndpointsAction::Delete { .. }) => self.endpoints = None,
            None => {}
        }
        (sa, ea)
    }

    /// Syncs, then checks that a second sync writes nothing.
    fn converge(&mut self) {
        self.sync();
        let (sa, ea) = self.sync();
        assert!(sa.is_empty(), "second sync still writes slices: {sa:?}");
        assert!(ea.is_none(), "second sync still writes endpoints: {ea:?}");
    }

    fn rendered_slices(&self) -> Vec<String> {
        let mut out: Vec<String> = self.slices.iter().map(render_slice).collect();
        out.sort();
        out
    }

    fn rendered_endpoints(&self) -> String {
        let Some(e) = &self.endpoints else {
            return "<no endpoints>".into();
        };
        let mut parts = Vec::new();
        for s in e.subsets.iter().flatten() {
            let ports: Vec<String> = s
                .ports
                .iter()
                .flatten()
                .map(|p| format!("{}:{}", p.name.clone().unwrap_or_default(), p.port))
                .collect();
            let ready: Vec<&str> = s
                .addresses
                .iter()
                .flatten()
                .map(|a| a.ip.as_str())
                .collect();
            let nr: Vec<&str> = s
                .not_ready_addresses
                .iter()
                .flatten()
                .map(|a| a.ip.as_str())
                .collect();
            parts.push(format!(
                "[{}] ready={} notready={}",
                ports.join(","),
                ready.join(","),
                nr.join(",")
            ));
        }
        parts.join(" | ")
    }
}

fn check(service: Service, pods: Vec<Pod>, want_slices: &[&str], want_endpoints: &str) {
    let mut w = World::new(service, pods);
    w.converge();
    assert_eq!(w.rendered_slices(), want_slices);
    assert_eq!(w.rendered_endpoints(), want_endpoints);
}

#[test]
fn ready_and_not_ready_pods() {
    check(
        svc("web", &[("app", "web")], &[(None, 80, Tgt::Num(8080))]),
        vec![
            pod("a", "10.0.0.1").ready(true).build(),
            pod("b", "10.0.0.2").ready(false).build(),
            pod("c", "").ready(true).build(),
            pod("d", "10.0.0.4")
                .ready(true)
                .labels(&[("app", "db")])
                .build(),
            pod("e", "10.0.0.5").ready(true).phase("Succeeded").build(),
            pod("f", "10.0.0.6").ready(true).namespace("other").build(),
        ],
        &["IPv4 [:8080/TCP] 10.0.0.1(RS-) 10.0.0.2(---)"],
        "[:8080] ready=10.0.0.1 notready=10.0.0.2",
    );
}

#[test]
fn publish_not_ready_addresses_makes_everything_ready() {
    let mut s = svc("web", &[("app", "web")], &[(None, 80, Tgt::Num(8080))]);
    s.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    check(
        s,
        vec![
            pod("a", "10.0.0.1").ready(false).build(),
            pod("b", "10.0.0.2").ready(false).deleting().build(),
        ],
        &["IPv4 [:8080/TCP] 10.0.0.1(RS-) 10.0.0.2(RST)"],
        "[:8080] ready=10.0.0.1,10.0.0.2 notready=",
    );
}

#[test]
fn terminating_pods_are_serving_but_not_ready_and_leave_endpoints() {
    check(
        svc(
            "web",
            &[("app", "web")],
            &[(Some("http"), 80, Tgt::Num(80))],
        ),
        vec![
            pod("a", "10.0.0.1").ready(true).deleting().build(),
            pod("b", "10.0.0.2").ready(false).deleting().build(),
            pod("c", "10.0.0.3").ready(true).build(),
        ],
        &["IPv4 [http:80/TCP] 10.0.0.1(-ST) 10.0.0.2(--T) 10.0.0.3(RS-)"],
        "[http:80] ready=10.0.0.3 notready=",
    );
}

#[test]
fn named_target_ports_resolve_per_pod() {
    check(
        svc(
            "web",
            &[("app", "web")],
            &[(Some("web"), 80, Tgt::Name("http"))],
        ),
        vec![
            pod("a", "10.0.0.1").ready(true).port("http", 8080).build(),
            pod("b", "10.0.0.2").ready(true).port("http", 9090).build(),
            pod("c", "10.0.0.3")
                .ready(true)
                .port("metrics", 9100)
                .build(),
            pod("d", "10.0.0.4").ready(true).port("http", 8080).build(),
        ],
        &[
            "IPv4 [] 10.0.0.3(RS-)",
            "IPv4 [web:8080/TCP] 10.0.0.1(RS-) 10.0.0.4(RS-)",
            "IPv4 [web:9090/TCP] 10.0.0.2(RS-)",
        ],
        "[web:8080] ready=10.0.0.1,10.0.0.4 notready= | [web:9090] ready=10.0.0.2 notready=",
    );
}

#[test]
fn hostname_only_when_subdomain_is_the_service() {
    check(
        svc("db", &[("app", "web")], &[(None, 5432, Tgt::Num(5432))]),
        vec![
            pod("db-0", "10.0.0.1")
                .ready(true)
                .hostname("db-0", "db")
                .build(),
            pod("x", "10.0.0.2")
                .ready(true)
                .hostname("x", "other")
                .build(),
        ],
        &["IPv4 [:5432/TCP] 10.0.0.1(RS-)h=db-0 10.0.0.2(RS-)"],
        "[:5432] ready=10.0.0.1,10.0.0.2 notready=",
    );
}

#[test]
fn no_pods_gives_one_empty_slice_and_empty_endpoints() {
    check(
        svc("web", &[("app", "web")], &[(None, 80, Tgt::Num(80))]),
        vec![],
        &["IPv4 [] "],
        "",
    );
}

#[test]
fn dual_stack_gives_one_slice_per_family() {
    let mut s = svc("web", &[("app", "web")], &[(None, 80, Tgt::Num(80))]);
    s.spec.as_mut().unwrap().ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
    check(
        s,
        vec![pod("a", "10.0.0.1").ipv6("fd00::1").ready(true).build()],
        &[
            "IPv4 [:80/TCP] 10.0.0.1(RS-)",
            "IPv6 [:80/TCP] fd00::1(RS-)",
        ],
        "[:80] ready=10.0.0.1 notready=",
    );
}

#[test]
fn services_without_selector_are_left_alone() {
    let mut w = World::new(
        svc("ext", &[], &[(None, 80, Tgt::Num(80))]),
        vec![pod("a", "10.0.0.1").ready(true).build()],
    );
    let (sa, ea) = w.sync();
    assert!(sa.is_empty() && ea.is_none());
    let mut external = svc("alias", &[("app", "web")], &[(None, 80, Tgt::Num(80))]);
    external.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
    let mut w = World::new(external, vec![pod("a", "10.0.0.1").ready(true).build()]);
    let (sa, ea) = w.sync();
    assert!(
        sa.is_empty() && ea.is_none(),
        "ExternalName services have no endpoints"
    );
}

#[test]
fn slice_metadata_labels_owner_and_zone() {
    let mut w = World::new(
        svc("web", &[("app", "web")], &[(None, 80, Tgt::Num(80))]),
        vec![pod("a", "10.0.0.1").ready(true).node("node-a").build()],
    );
    w.service
        .as_mut()
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .cluster_ip = Some("None".into());
    w.converge();
    let s = &w.slices[0];
    let labels = s.metadata.labels.clone().unwrap();
    assert_eq!(labels[LABEL_SERVICE_NAME], "web");
    assert_eq!(labels[LABEL_MANAGED_BY], MANAGED_BY);
    assert_eq!(labels[LABEL_HEADLESS], "");
    assert_eq!(s.metadata.generate_name.as_deref(), Some("web-"));
    let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Service", "web")
    );
    assert_eq!(owner.controller, Some(true));
    let ep = &s.endpoints[0];
    assert_eq!(ep.zone.as_deref(), Some("zone-1"));
    assert_eq!(ep.node_name.as_deref(), Some("node-a"));
    assert_eq!(ep.target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
}

#[test]
fn trigger_time_is_written_only_with_a_change() {
    let service = svc("web", &[("app", "web")], &[(None, 80, Tgt::Num(80))]);
    let p = pod("a", "10.0.0.1").ready(true).build();
    let pods = vec![&p];
    let t: Timestamp = "2026-01-02T03:04:05.250Z".parse().unwrap();
    let zones = BTreeMap::new();
    let obs = Observed {
        service: Some(&service),
        pods: &pods,
        slices: &[],
        endpoints: None,
        node_zones: &zones,
        trigger_time: Some(t),
    };
    let created: [SliceAction; 1] = reconcile_slices(&obs).try_into().unwrap();
    let [SliceAction::Create(slice)] = created else {
        panic!("want one create")
    };
    let Some(EndpointsAction::Create(ep)) = reconcile_endpoints(&obs) else {
        panic!("want endpoints create")
    };
    for ann in [&slice.metadata.annotations, &ep.metadata.annotations] {
        assert_eq!(
            ann.as_ref().unwrap()[ANNOTATION_TRIGGER_TIME],
            "2026-01-02T03:04:05Z"
        );
    }
    let later = Timestamp::from_second(t.as_second() + 10).unwrap();
    let slices = vec![&slice];
    let obs = Observed {
        slices: &slices,
        endpoints: Some(&ep),
        trigger_time: Some(later),
        ..obs
    };
    assert!(reconcile_slices(&obs).is_empty());
    assert!(reconcile_endpoints(&obs).is_none());
}

#[test]
fn at_most_100_endpoints_per_slice() {
    let pods: Vec<Pod> = (0..250)
        .map(|i| pod(&format!("p{i}"), &ip(i)).ready(true).build())
        .collect();
    let mut w = World::new(
        svc("web", &[("app", "web")], &[(None, 80, Tgt::Num(80))]),
        pods,
    );
    w.converge();
    let mut sizes: Vec<usize> = w.slices.iter().map(|s| s.endpoints.len()).collect();
    sizes.sort();
    assert_eq!(sizes, vec![50, 100, 100]);
}

#[test]
fn endpoints_truncate_at_1000_with_annotation() {
    let pods: Vec<Pod> = (0..1005)
        .map(|i| pod(&format!("p{i}"), &ip(i)).ready(i % 2 == 0).build())
        .collect();
    let mut w = World::new(
        svc("web", &[("app", "web")], &[(None, 80, Tgt::Num(80))]),
        pods,
    );
    w.converge();
    let e = w.endpoints.clone().unwrap();
    let subset = &e.subsets.as_ref().unwrap()[0];
    let ready = subset.addresses.as_ref().unwrap().len();
    let not_ready = subset.not_ready_addresses.as_ref().unwrap().len();
    assert_eq!(
        (ready, not_ready),
        (503, 497),
        "ready addresses are kept first"
    );
    assert_eq!(
        e.metadata.annotations.unwrap()[ANNOTATION_OVER_CAPACITY],
        "truncated"
    );
    // Back under capacity, the annotation goes away.
    w.pods.truncate(10);
    w.converge();
    let e = w.endpoints.clone().unwrap();
    assert!(
        e.metadata
            .annotations
            .is_none_or(|a| !a.contains_key(ANNOTATION_OVER_CAPACITY))
    );
}

#[test]
fn one_readiness_flip_is_one_slice_update() {
    let pods: Vec<Pod> = (0..150)
        .map(|i| pod(&format!("p{i}"), &ip(i)).ready(true).build())
        .collect();
    let mut w = World::new(
        svc("web", &[("app", "web")], &[(None, 80, Tgt::Num(80))]),
        pods,
    );
    w.converge();
    let names_before: Vec<_> = w.slices.iter().map(|s| s.metadata.name.clone()).collect();
    w.pods[120] = pod("p120", &ip(120)).ready(false).build();
    let (sa, _) = w.sync();
    assert_eq!(sa.len(), 1, "{sa:?}");
    assert!(matches!(sa[0], SliceAction::Update(_)));
    // A deleted pod and a new pod: the new one takes the free place, still no create.
    w.pods.remove(3);
    w.pods.push(pod("new", &ip(999)).ready(true).build());
    let (sa, _) = w.sync();
    assert!(
        sa.iter().all(|a| matches!(a, SliceAction::Update(_))),
        "{sa:?}"
    );
    assert!(sa.len() <= 2);
    let names_after: Vec<_> = w.slices.iter().map(|s| s.metadata.name.clone()).collect();
    assert_eq!(names_before, names_after);
}

#[test]
fn service_deleted_removes_managed_objects() {
    let mut w = World::new(
        svc("web", &[("app", "web")], &[(None, 80, Tgt::Num(80))]),
        vec![pod("a", "10.0.0.1").ready(true).build()],
    );
    w.converge();
    w.service = None;
    w.converge();
    assert!(w.slices.is_empty());
    assert!(w.endpoints.is_none());
}

/// 1,000 pods flip readiness and are deleted in random order; after every batch the slices
/// hold exactly the pods that exist, with the right readiness, and a controller rebuilt from
/// nothing but the API state (here: the slices) agrees.
#[test]
fn converges_under_churn() {
    use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
    let mut rng = StdRng::seed_from_u64(7);
    let pods: Vec<Pod> = (0..1000)
        .map(|i| {
            pod(&format!("p{i}"), &ip(i))
                .ready(rng.random_bool(0.5))
                .build()
        })
        .collect();
    let mut w = World::new(
        svc("web", &[("app", "web")], &[(None, 80, Tgt::Num(80))]),
        pods,
    );
    w.converge();
    for round in 0..40 {
        for _ in 0..50 {
            let i: usize = rng.random_range(0..w.pods.len());
            let name = w.pods[i].metadata.name.clone().unwrap();
            let idx: usize = name[1..].parse().unwrap();
            let ready = !crate::util::pod_is_ready(&w.pods[i]);
            w.pods[i] = pod(&name, &ip(idx)).ready(ready).build();
        }
        w.pods.shuffle(&mut rng);
        let remove: usize = rng.random_range(0..10usize).min(w.pods.len());
        w.pods.truncate(w.pods.len() - remove);
        if round % 7 == 3 {
            // Restart: nothing carried over but what the API holds.
            let mut fresh = World::new(w.service.clone().unwrap(), w.pods.clone());
            fresh.slices = w.slices.clone();
            fresh.endpoints = w.endpoints.clone();
            fresh.seq = w.seq + 10_000;
            w = fresh;
        }
        w.converge();
        let mut want: Vec<(String, bool)> = w
            .pods
            .iter()
            .map(|p| {
                (
                    p.status.as_ref().unwrap().pod_ip.clone().unwrap(),
                    crate::util::pod_is_ready(p),
                )
            })
            .collect();
        want.sort();
        let mut have: Vec<(String, bool)> = w
            .slices
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .map(|e| {
                (
                    e.addresses[0].clone(),
                    e.conditions.as_ref().unwrap().ready == Some(true),
                )
            })
            .collect();
        have.sort();
        assert_eq!(have, want, "round {round}");
        assert!(
            w.slices
                .iter()
                .all(|s| s.endpoints.len() <= MAX_ENDPOINTS_PER_SLICE)
        );
        let ready_ips: usize = w
            .endpoints
            .iter()
            .flat_map(|e| e.subsets.iter().flatten())
            .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
            .sum();
        assert_eq!(ready_ips, want.iter().filter(|(_, r)| *r).count());
    }
}
