//! EndpointSlices and Endpoints for Services with a selector.
//!
//! Pure: from a Service, the pods of its namespace and the objects that exist now, compute the
//! writes that make them right. No write when nothing changed; slices are updated in place and
//! endpoints stay in the slice they are in, so watchers (DNS) see small diffs.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, ObjectReference, Pod,
    Service, ServicePort,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::util::{self, Labels, Timestamp, format_time};

pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
pub const ANNOTATION_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
pub const ANNOTATION_OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
pub const MAX_ENDPOINTS_ADDRESSES: usize = 1000;

/// What the Service's namespace looks like now.
pub struct Observed<'a> {
    /// None when the Service is gone.
    pub service: Option<&'a Service>,
    /// Pods of the Service's namespace (filtered here by the selector).
    pub pods: &'a [&'a Pod],
    /// Slices labelled with this Service's name and managed by this controller.
    pub slices: &'a [&'a EndpointSlice],
    pub endpoints: Option<&'a Endpoints>,
    /// `topology.kubernetes.io/zone` of each node, where known.
    pub node_zones: &'a BTreeMap<String, String>,
    /// The latest pod or service change that caused this sync, for the trigger-time annotation.
    pub trigger_time: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SliceAction {
    /// A new slice (named by the server from `generateName`).
    Create(EndpointSlice),
    /// New content for an existing slice (carries its name and resourceVersion).
    Update(EndpointSlice),
    Delete {
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum EndpointsAction {
    Create(Endpoints),
    Update(Endpoints),
    Delete { name: String },
}

/// Services without a selector get no managed endpoints: users write their own. Nor do
/// ExternalName services, which are a DNS alias and never have endpoints.
fn selector(service: &Service) -> Option<&Labels> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

fn is_headless(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

fn publish_not_ready(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

fn service_ports(service: &Service) -> &[ServicePort] {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or(&[])
}

/// Address types the Service wants, from `ipFamilies` (IPv4 if unset).
fn address_types(service: &Service) -> Vec<&'static str> {
    let fams = service.spec.as_ref().and_then(|s| s.ip_families.as_ref());
    let mut out: Vec<&'static str> = fams
        .into_iter()
        .flatten()
        .filter_map(|f| match f.as_str() {
            "IPv4" => Some("IPv4"),
            "IPv6" => Some("IPv6"),
            _ => None,
        })
        .collect();
    out.dedup();
    if out.is_empty() {
        out.push("IPv4");
    }
    out
}

fn family_of(ip: &str) -> &'static str {
    if ip.contains(':') { "IPv6" } else { "IPv4" }
}

/// The pod's IP of the given family, from `podIPs` (or `podIP`).
fn pod_ip<'a>(pod: &'a Pod, family: &str) -> Option<&'a str> {
    let status = pod.status.as_ref()?;
    let from_list = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .find(|ip| !ip.is_empty() && family_of(ip) == family);
    from_list.or_else(|| {
        status
            .pod_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && family_of(ip) == family)
    })
}

/// The container port a Service port sends traffic to on this pod, or None if a named
/// targetPort is not declared by the pod.
fn resolve_target_port(sp: &ServicePort, pod: &Pod) -> Option<i32> {
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let protocol = sp.protocol.as_deref().unwrap_or("TCP");
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|cp| {
                    cp.name.as_deref() == Some(name.as_str())
                        && cp.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|cp| cp.container_port)
        }
    }
}

struct ResolvedPort<'a> {
    sp: &'a ServicePort,
    port: i32,
}

fn pod_ports<'a>(service: &'a Service, pod: &Pod) -> Vec<ResolvedPort<'a>> {
    service_ports(service)
        .iter()
        .filter_map(|sp| resolve_target_port(sp, pod).map(|port| ResolvedPort { sp, port }))
        .collect()
}

fn should_set_hostname(pod: &Pod, service: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == service.metadata.name.as_deref()
        && pod.metadata.namespace == service.metadata.namespace)
        .then(|| hostname.to_string())
}

fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// Pods selected by the Service that can be endpoints at all: they have an IP and have not
/// finished.
fn selected_pods<'a>(service: &Service, pods: &[&'a Pod]) -> Vec<&'a Pod> {
    let Some(sel) = selector(service) else {
        return Vec::new();
    };
    pods.iter()
        .copied()
        .filter(|p| p.metadata.namespace == service.metadata.namespace)
        .filter(|p| util::map_selector_matches(sel, util::labels_of(&p.metadata)))
        .filter(|p| !util::pod_is_terminal(p))
        .collect()
}

/// Labels shared by managed slices and Endpoints: the Service's own, plus the headless mark.
fn derived_labels(service: &Service) -> Labels {
    let mut labels: Labels = util::labels_of(&service.metadata)
        .iter()
        .filter(|(k, _)| k.as_str() != LABEL_SERVICE_NAME && k.as_str() != LABEL_MANAGED_BY)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if is_headless(service) {
        labels.insert(LABEL_HEADLESS.into(), String::new());
    } else {
        labels.remove(LABEL_HEADLESS);
    }
    labels
}

fn slice_labels(service: &Service) -> Labels {
    let mut labels = derived_labels(service);
    labels.insert(
        LABEL_SERVICE_NAME.into(),
        service.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    labels
}

// ---------------------------------------------------------------------------------------
// EndpointSlices

/// Identity of an endpoint across syncs: the pod's uid, or its address without a targetRef.
fn endpoint_id(ep: &Endpoint) -> String {
    ep.target_ref
        .as_ref()
        .and_then(|r| r.uid.clone())
        .unwrap_or_else(|| ep.addresses.first().cloned().unwrap_or_default())
}

fn ports_key(ports: &[EndpointPort]) -> String {
    serde_json::to_string(ports).unwrap_or_default()
}

fn sorted_endpoints(mut eps: Vec<Endpoint>) -> Vec<Endpoint> {
    eps.sort_by(|a, b| {
        a.addresses
            .cmp(&b.addresses)
            .then_with(|| endpoint_id(a).cmp(&endpoint_id(b)))
    });
    eps
}

/// Desired endpoints of one address family, grouped by their resolved port list.
fn desired_groups(
    service: &Service,
    pods: &[&Pod],
    family: &str,
    node_zones: &BTreeMap<String, String>,
) -> BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> {
    let publish = publish_not_ready(service);
    let mut groups: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
    for pod in selected_pods(service, pods) {
        let Some(ip) = pod_ip(pod, family) else {
            continue;
        };
        let ports: Vec<EndpointPort> = pod_ports(service, pod)
            .into_iter()
            .map(|rp| EndpointPort {
                name: Some(rp.sp.name.clone().unwrap_or_default()),
                port: Some(rp.port),
                protocol: Some(rp.sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: rp.sp.app_protocol.clone(),
            })
            .collect();
        let terminating = util::is_deleting(&pod.metadata);
        let serving = publish || util::pod_is_ready(pod);
        let node_name = util::pod_node(pod).map(str::to_string);
        let zone = node_name.as_ref().and_then(|n| node_zones.get(n)).cloned();
        let ep = Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(publish || (serving && !terminating)),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            hostname: should_set_hostname(pod, service),
            node_name,
            zone,
            target_ref: Some(target_ref(pod)),
            ..Default::default()
        };
        groups
            .entry(ports_key(&ports))
            .or_insert_with(|| (ports, Vec::new()))
            .1
            .push(ep);
    }
    groups
}

/// The full desired object for a slice, keeping the name/resourceVersion of `base`.
fn build_slice(
    service: &Service,
    base: Option<&EndpointSlice>,
    family: &str,
    ports: Vec<EndpointPort>,
    endpoints: Vec<Endpoint>,
    trigger: Option<&str>,
) -> EndpointSlice {
    let svc_name = service.metadata.name.clone().unwrap_or_default();
    let mut annotations = base
        .and_then(|b| b.metadata.annotations.clone())
        .unwrap_or_default();
    match trigger {
        Some(t) => {
            annotations.insert(ANNOTATION_TRIGGER_TIME.into(), t.to_string());
        }
        None => {
            annotations.remove(ANNOTATION_TRIGGER_TIME);
        }
    }
    let metadata = ObjectMeta {
        name: base.and_then(|b| b.metadata.name.clone()),
        generate_name: if base.is_none() {
            Some(format!("{svc_name}-"))
        } else {
            base.and_then(|b| b.metadata.generate_name.clone())
        },
        namespace: service.metadata.namespace.clone(),
        resource_version: base.and_then(|b| b.metadata.resource_version.clone()),
        uid: base.and_then(|b| b.metadata.uid.clone()),
        creation_timestamp: base.and_then(|b| b.metadata.creation_timestamp.clone()),
        labels: Some(slice_labels(service)),
        annotations: (!annotations.is_empty()).then_some(annotations),
        owner_references: Some(vec![util::owner_ref("v1", "Service", &service.metadata)]),
        ..Default::default()
    };
    EndpointSlice {
        metadata,
        address_type: family.to_string(),
        endpoints: sorted_endpoints(endpoints),
        ports: Some(ports),
    }
}

/// Whether an existing slice already has this content (the trigger time does not count).
fn same_slice(have: &EndpointSlice, want: &EndpointSlice) -> bool {
    have.address_type == want.address_type
        && have.ports.as_deref().unwrap_or(&[]) == want.ports.as_deref().unwrap_or(&[])
        && sorted_endpoints(have.endpoints.clone()) == want.endpoints
        && have.metadata.labels == want.metadata.labels
        && have.metadata.owner_references == want.metadata.owner_references
}

fn slice_ports_key(s: &EndpointSlice) -> String {
    ports_key(s.ports.as_deref().unwrap_or(&[]))
}

/// Computes the slice writes for one Service.
pub fn reconcile_slices(obs: &Observed) -> Vec<SliceAction> {
    let mut actions = Vec::new();
    let service = match obs.service {
        Some(s) if selector(s).is_some() => s,
        Some(_) => return actions,
        None => {
            // Service gone: its managed slices go too (the garbage collector would get there,
            // but DNS should not serve them a moment longer than needed).
            for s in obs.slices {
                if let Some(name) = &s.metadata.name {
                    actions.push(SliceAction::Delete { name: name.clone() });
                }
            }
            return actions;
        }
    };
    let trigger = obs.trigger_time.map(format_time);
    let families = address_types(service);
    for s in obs.slices {
        if !families.contains(&s.address_type.as_str())
            && let Some(name) = &s.metadata.name
        {
            actions.push(SliceAction::Delete { name: name.clone() });
        }
    }
    for family in families {
        let mut existing: Vec<&EndpointSlice> = obs
            .slices
            .iter()
            .copied()
            .filter(|s| s.address_type == family)
            .collect();
        existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        reconcile_family(
            service,
            family,
            desired_groups(service, obs.pods, family, obs.node_zones),
            &existing,
            trigger.as_deref(),
            &mut actions,
        );
    }
    actions
}

fn reconcile_family(
    service: &Service,
    family: &str,
    groups: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)>,
    existing: &[&EndpointSlice],
    trigger: Option<&str>,
    actions: &mut Vec<SliceAction>,
) {
    // Content for existing slices, by index into `existing`.
    let mut assigned: Vec<Option<(Vec<EndpointPort>, Vec<Endpoint>)>> = vec![None; existing.len()];
    // Content that needs a slice: reused from a freed one or created.
    let mut homeless: Vec<(Vec<EndpointPort>, Vec<Endpoint>)> = Vec::new();

    for (key, (ports, eps)) in groups {
        let candidates: Vec<usize> = (0..existing.len())
            .filter(|&i| slice_ports_key(existing[i]) == key)
            .collect();
        let mut where_now: HashMap<String, usize> = HashMap::new();
        for &i in &candidates {
            for ep in &existing[i].endpoints {
                where_now.insert(endpoint_id(ep), i);
            }
        }
        let mut buckets: BTreeMap<usize, Vec<Endpoint>> =
            candidates.iter().map(|&i| (i, Vec::new())).collect();
        let mut leftover = Vec::new();
        for ep in sorted_endpoints(eps) {
            match where_now
                .get(&endpoint_id(&ep))
                .and_then(|i| buckets.get_mut(i))
            {
                Some(b) if b.len() < MAX_ENDPOINTS_PER_SLICE => b.push(ep),
                _ => leftover.push(ep),
            }
        }
        // New endpoints first fill slices of the same ports that have room and are already
        // being written (or are non-empty), then new slices.
        let mut leftover = leftover.into_iter().peekable();
        for b in buckets.values_mut() {
            if b.is_empty() {
                continue;
            }
            while b.len() < MAX_ENDPOINTS_PER_SLICE {
                match leftover.next() {
                    Some(ep) => b.push(ep),
                    None => break,
                }
            }
        }
        for b in buckets.values_mut() {
            if leftover.peek().is_none() {
                break;
            }
            while b.len() < MAX_ENDPOINTS_PER_SLICE {
                match leftover.next() {
                    Some(ep) => b.push(ep),
                    None => break,
                }
            }
        }
        let rest: Vec<Endpoint> = leftover.collect();
        for chunk in rest.chunks(MAX_ENDPOINTS_PER_SLICE) {
            homeless.push((ports.clone(), chunk.to_vec()));
        }
        for (i, b) in buckets {
            if !b.is_empty() {
                assigned[i] = Some((ports.clone(), b));
            }
        }
    }

    // With no endpoints at all, one empty placeholder slice says "known, none ready".
    let nothing = assigned.iter().all(Option::is_none) && homeless.is_empty();
    if nothing {
        homeless.push((Vec::new(), Vec::new()));
    }

    let mut free: Vec<usize> = (0..existing.len())
        .filter(|&i| assigned[i].is_none())
        .collect();
    // A free slice that already has the wanted content is the cheapest to reuse.
    let mut creates = Vec::new();
    for (ports, eps) in homeless {
        let want = build_slice(service, None, family, ports.clone(), eps.clone(), trigger);
        let reuse = free
            .iter()
            .position(|&i| same_slice(existing[i], &with_meta_of(&want, existing[i])))
            .or(if free.is_empty() { None } else { Some(0) });
        match reuse {
            Some(pos) => {
                let i = free.remove(pos);
                assigned[i] = Some((ports, eps));
            }
            None => creates.push(want),
        }
    }
    for (i, content) in assigned.into_iter().enumerate() {
        if let Some((ports, eps)) = content {
            let want = build_slice(service, Some(existing[i]), family, ports, eps, trigger);
            if !same_slice(existing[i], &want) {
                actions.push(SliceAction::Update(want));
            }
        }
    }
    for want in creates {
        actions.push(SliceAction::Create(want));
    }
    for i in free {
        if let Some(name) = &existing[i].metadata.name {
            actions.push(SliceAction::Delete { name: name.clone() });
        }
    }
}

fn with_meta_of(want: &EndpointSlice, base: &EndpointSlice) -> EndpointSlice {
    let mut w = want.clone();
    w.metadata.name = base.metadata.name.clone();
    w
}

// ---------------------------------------------------------------------------------------
// Endpoints (core/v1)

fn address_key(a: &EndpointAddress) -> (String, String) {
    (
        a.ip.clone(),
        a.target_ref
            .as_ref()
            .and_then(|r| r.uid.clone())
            .unwrap_or_default(),
    )
}

/// The desired subsets (sorted, repacked by port set) and whether they were truncated.
fn desired_subsets(service: &Service, pods: &[&Pod]) -> (Vec<EndpointSubset>, bool) {
    let publish = publish_not_ready(service);
    let family = address_types(service)[0];
    let has_ports = !service_ports(service).is_empty();
    // port set key -> (ports, ready, not ready)
    type Group = (Vec<CorePort>, Vec<EndpointAddress>, Vec<EndpointAddress>);
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for pod in selected_pods(service, pods) {
        if util::is_deleting(&pod.metadata) && !publish {
            continue;
        }
        let Some(ip) = pod_ip(pod, family) else {
            continue;
        };
        let mut ports: Vec<CorePort> = pod_ports(service, pod)
            .into_iter()
            .map(|rp| CorePort {
                name: Some(rp.sp.name.clone().unwrap_or_default()),
                port: rp.port,
                protocol: Some(rp.sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: rp.sp.app_protocol.clone(),
            })
            .collect();
        if has_ports && ports.is_empty() {
            continue;
        }
        ports.sort_by(|a, b| a.name.cmp(&b.name).then(a.port.cmp(&b.port)));
        let addr = EndpointAddress {
            ip: ip.to_string(),
            hostname: should_set_hostname(pod, service),
            node_name: util::pod_node(pod).map(str::to_string),
            target_ref: Some(target_ref(pod)),
        };
        let g = groups
            .entry(serde_json::to_string(&ports).unwrap_or_default())
            .or_insert_with(|| (ports, Vec::new(), Vec::new()));
        if publish || util::pod_is_ready(pod) {
            g.1.push(addr);
        } else {
            g.2.push(addr);
        }
    }
    let mut subsets: Vec<Group> = groups.into_values().collect();
    for (_, ready, not_ready) in &mut subsets {
        ready.sort_by_key(address_key);
        not_ready.sort_by_key(address_key);
    }
    // Over capacity: keep ready addresses first, then not-ready ones, up to the limit.
    let total: usize = subsets.iter().map(|(_, r, n)| r.len() + n.len()).sum();
    let truncated = total > MAX_ENDPOINTS_ADDRESSES;
    if truncated {
        let mut budget = MAX_ENDPOINTS_ADDRESSES;
        for (_, ready, _) in &mut subsets {
            ready.truncate(budget);
            budget -= ready.len();
        }
        for (_, _, not_ready) in &mut subsets {
            not_ready.truncate(budget);
            budget -= not_ready.len();
        }
    }
    let out = subsets
        .into_iter()
        .filter(|(_, r, n)| !r.is_empty() || !n.is_empty())
        .map(|(ports, ready, not_ready)| EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: (!ports.is_empty()).then_some(ports),
        })
        .collect();
    (out, truncated)
}

/// Computes the write (if any) that makes the Service's Endpoints object right.
pub fn reconcile_endpoints(obs: &Observed) -> Option<EndpointsAction> {
    let service = match obs.service {
        Some(s) => s,
        None => {
            return obs
                .endpoints
                .and_then(|e| e.metadata.name.clone())
                .map(|name| EndpointsAction::Delete { name });
        }
    };
    selector(service)?;
    let (subsets, truncated) = desired_subsets(service, obs.pods);
    let labels = derived_labels(service);
    let subsets_opt = (!subsets.is_empty()).then_some(subsets);
    if let Some(have) = obs.endpoints {
        let have_truncated = have
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_OVER_CAPACITY))
            .is_some();
        let have_subsets = have.subsets.clone().filter(|s| !s.is_empty());
        if have_subsets == subsets_opt
            && util::labels_of(&have.metadata) == &labels
            && have_truncated == truncated
        {
            return None;
        }
    }
    let mut annotations = obs
        .endpoints
        .and_then(|e| e.metadata.annotations.clone())
        .unwrap_or_default();
    match obs.trigger_time {
        Some(t) => {
            annotations.insert(ANNOTATION_TRIGGER_TIME.into(), format_time(t));
        }
        None => {
            annotations.remove(ANNOTATION_TRIGGER_TIME);
        }
    }
    if truncated {
        annotations.insert(ANNOTATION_OVER_CAPACITY.into(), "truncated".into());
    } else {
        annotations.remove(ANNOTATION_OVER_CAPACITY);
    }
    let base = obs.endpoints.map(|e| &e.metadata);
    let want = Endpoints {
        metadata: ObjectMeta {
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            resource_version: base.and_then(|m| m.resource_version.clone()),
            uid: base.and_then(|m| m.uid.clone()),
            creation_timestamp: base.and_then(|m| m.creation_timestamp.clone()),
            labels: (!labels.is_empty()).then_some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..Default::default()
        },
        subsets: subsets_opt,
    };
    Some(if obs.endpoints.is_some() {
        EndpointsAction::Update(want)
    } else {
        EndpointsAction::Create(want)
    })
}

#[cfg(test)]
mod tests;
