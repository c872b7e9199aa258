//! Service ClusterIP and NodePort allocation.
//!
//! Each allocated IP or port is its own store key, created with create-if-absent; the store's
//! atomic create is the lock. That makes allocation race-free between concurrent requests and
//! between several API servers sharing one store, and it survives restarts without a bitmap to
//! rebuild. Releasing deletes the key.

use std::net::Ipv4Addr;
use std::str::FromStr;

use muster_api::{ApiError, ApiResult, Cause};
use muster_store::{Store, StoreError};
use serde_json::{Value, json};

pub const IP_PREFIX: &str = "/registry/ipallocations/";
pub const NODE_PORT_PREFIX: &str = "/registry/servicenodeports/";
pub const NODE_PORT_RANGE: std::ops::RangeInclusive<u16> = 30000..=32767;

/// An IPv4 CIDR such as `10.96.0.0/12`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCidr {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl FromStr for ServiceCidr {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| anyhow::anyhow!("service CIDR {s:?} must look like 10.96.0.0/12"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|e| anyhow::anyhow!("service CIDR {s:?}: {e}"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| anyhow::anyhow!("service CIDR {s:?}: prefix must be 8..=30"))?;
        let mask = u32::MAX << (32 - prefix);
        Ok(ServiceCidr {
            base: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }
}

impl std::fmt::Display for ServiceCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl ServiceCidr {
    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }

    /// Usable addresses: not the network address, not the broadcast address.
    pub fn contains_usable(&self, ip: Ipv4Addr) -> bool {
        let (b, i) = (u32::from(self.base), u32::from(ip));
        i > b && i < b + self.size() - 1
    }

    /// As Kubernetes does, dynamic allocation prefers the upper band and leaves the lowest
    /// addresses (at least 16, at most 256) to explicit requests such as 10.96.0.1 and
    /// 10.96.0.10.
    fn static_band(&self) -> u32 {
        (self.size() / 16).clamp(16, 256)
    }
}

fn ip_key(ip: Ipv4Addr) -> String {
    format!("{IP_PREFIX}{ip}")
}

fn port_key(port: u16) -> String {
    format!("{NODE_PORT_PREFIX}{port}")
}

fn owner_record(kind: &str, name: &str, namespace: &str, service: &str) -> Value {
    json!({
        "kind": kind,
        "metadata": {"name": name},
        "spec": {"parentRef": {"resource": "services", "namespace": namespace, "name": service}},
    })
}

fn store_err(e: StoreError) -> ApiError {
    crate::handler::store_error(e)
}

fn invalid_ip(ip: &str, why: &str) -> ApiError {
    ApiError::new(
        422,
        "Invalid",
        format!("spec.clusterIPs: Invalid value: []string{{\"{ip}\"}}: {why}"),
    )
}

pub struct Allocator {
    pub cidr: ServiceCidr,
}

impl Allocator {
    /// Reserves `ip` exactly; fails as Kubernetes does when it is taken or out of range.
    pub async fn reserve_ip(
        &self,
        store: &dyn Store,
        ip_text: &str,
        namespace: &str,
        service: &str,
        dry_run: bool,
    ) -> ApiResult<()> {
        let ip: Ipv4Addr = ip_text
            .parse()
            .map_err(|_| invalid_ip(ip_text, "must be a valid IP address"))?;
        if !self.cidr.contains_usable(ip) {
            return Err(invalid_ip(
                ip_text,
                &format!(
                    "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                    self.cidr
                ),
            ));
        }
        let taken = || {
            invalid_ip(
                ip_text,
                &format!("failed to allocate IP {ip}: provided IP is already allocated"),
            )
        };
        if dry_run {
            return match store.get(&ip_key(ip)).await.map_err(store_err)? {
                Some(_) => Err(taken()),
                None => Ok(()),
            };
        }
        match store
            .create(
                &ip_key(ip),
                owner_record("IPAddress", &ip.to_string(), namespace, service),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::AlreadyExists(_)) => Err(taken()),
            Err(e) => Err(store_err(e)),
        }
    }

    /// Picks a free IP (random in the dynamic band, then any free one).
    pub async fn allocate_ip(
        &self,
        store: &dyn Store,
        namespace: &str,
        service: &str,
        dry_run: bool,
    ) -> ApiResult<Ipv4Addr> {
        let base = u32::from(self.cidr.base);
        let size = self.cidr.size();
        let low = self.cidr.static_band();
        let high_end = size - 1; // exclusive: broadcast
        let candidates = (0..32)
            .map(|_| rand::random_range(low..high_end))
            .chain((low..high_end).chain(1..low));
        for offset in candidates {
            let ip = Ipv4Addr::from(base + offset);
            if dry_run {
                if store.get(&ip_key(ip)).await.map_err(store_err)?.is_none() {
                    return Ok(ip);
                }
                continue;
            }
            match store
                .create(
                    &ip_key(ip),
                    owner_record("IPAddress", &ip.to_string(), namespace, service),
                )
                .await
            {
                Ok(_) => return Ok(ip),
                Err(StoreError::AlreadyExists(_)) => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(ApiError::internal(format!(
            "failed to allocate a serviceIP: range is full ({})",
            self.cidr
        )))
    }

    pub async fn reserve_node_port(
        &self,
        store: &dyn Store,
        port: u16,
        namespace: &str,
        service: &str,
        field: &str,
    ) -> ApiResult<()> {
        let invalid = |why: String| {
            let mut e = ApiError::invalid(
                "",
                "Service",
                service,
                vec![Cause {
                    reason: "FieldValueInvalid".into(),
                    field: field.into(),
                    message: format!("Invalid value: {port}: {why}"),
                }],
            );
            e.name = Some(service.to_string());
            e
        };
        if !NODE_PORT_RANGE.contains(&port) {
            return Err(invalid(format!(
                "provided port is not in the valid range. The range of valid ports is {}-{}",
                NODE_PORT_RANGE.start(),
                NODE_PORT_RANGE.end()
            )));
        }
        match store
            .create(
                &port_key(port),
                owner_record("NodePort", &port.to_string(), namespace, service),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::AlreadyExists(_)) => {
                Err(invalid("provided port is already allocated".to_string()))
            }
            Err(e) => Err(store_err(e)),
        }
    }

    pub async fn allocate_node_port(
        &self,
        store: &dyn Store,
        namespace: &str,
        service: &str,
    ) -> ApiResult<u16> {
        let (lo, hi) = (*NODE_PORT_RANGE.start(), *NODE_PORT_RANGE.end());
        let candidates = (0..32).map(|_| rand::random_range(lo..=hi)).chain(lo..=hi);
        for port in candidates {
            match store
                .create(
                    &port_key(port),
                    owner_record("NodePort", &port.to_string(), namespace, service),
                )
                .await
            {
                Ok(_) => return Ok(port),
                Err(StoreError::AlreadyExists(_)) => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(ApiError::internal(
            "failed to allocate a nodePort: range is full",
        ))
    }

    /// Releases whatever `svc` holds (best effort: a leaked key only wastes one address).
    pub async fn release(&self, store: &dyn Store, svc: &Value) {
        for ip in cluster_ips(svc) {
            if let Ok(ip) = ip.parse::<Ipv4Addr>() {
                let _ = store.delete(&ip_key(ip), None).await;
            }
        }
        for port in node_ports(svc) {
            let _ = store.delete(&port_key(port), None).await;
        }
    }

    pub async fn release_node_ports(&self, store: &dyn Store, ports: &[u16]) {
        for port in ports {
            let _ = store.delete(&port_key(*port), None).await;
        }
    }

    /// Allocates what a new Service needs and writes it into `svc`. On error, releases what
    /// it took.
    pub async fn allocate_for_create(
        &self,
        store: &dyn Store,
        svc: &mut Value,
        dry_run: bool,
    ) -> ApiResult<()> {
        let namespace = svc
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        let name = svc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let svc_type = svc
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        if svc_type == "ExternalName" {
            return Ok(());
        }
        let requested = svc
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .or_else(|| {
                svc.pointer("/spec/clusterIPs/0")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            });
        let ip = match requested.as_deref() {
            Some("None") => "None".to_string(),
            Some(ip) => {
                self.reserve_ip(store, ip, &namespace, &name, dry_run)
                    .await?;
                ip.to_string()
            }
            None => self
                .allocate_ip(store, &namespace, &name, dry_run)
                .await?
                .to_string(),
        };
        svc["spec"]["clusterIP"] = json!(ip);
        svc["spec"]["clusterIPs"] = json!([ip]);
        if matches!(svc_type.as_str(), "NodePort" | "LoadBalancer")
            && let Err(e) = self.allocate_node_ports(store, svc, &[], dry_run).await
        {
            if !dry_run && ip != "None" {
                let _ = store
                    .delete(&ip_key(ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED)), None)
                    .await;
            }
            return Err(e);
        }
        Ok(())
    }

    /// Gives every port of a NodePort/LoadBalancer Service a node port; `already_held` are
    /// ports the Service owned before this write (kept without re-reserving).
    pub async fn allocate_node_ports(
        &self,
        store: &dyn Store,
        svc: &mut Value,
        already_held: &[u16],
        dry_run: bool,
    ) -> ApiResult<Vec<u16>> {
        let namespace = svc
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        let name = svc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut taken: Vec<u16> = Vec::new();
        let count = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for i in 0..count {
            let field = format!("spec.ports[{i}].nodePort");
            let wanted = svc["spec"]["ports"][i]
                .get("nodePort")
                .and_then(Value::as_u64)
                .filter(|p| *p != 0);
            let result = match wanted {
                Some(p) if already_held.contains(&(p as u16)) => Ok(p as u16),
                Some(p) if dry_run => Ok(p as u16),
                Some(p) => match u16::try_from(p) {
                    Ok(p) => self
                        .reserve_node_port(store, p, &namespace, &name, &field)
                        .await
                        .map(|_| p),
                    Err(_) => Err(ApiError::bad_request(format!("{field}: invalid port {p}"))),
                },
                None if dry_run => Ok(0),
                None => self.allocate_node_port(store, &namespace, &name).await,
            };
            match result {
                Ok(p) => {
                    if !already_held.contains(&p) && p != 0 {
                        taken.push(p);
                    }
                    if p != 0 {
                        svc["spec"]["ports"][i]["nodePort"] = json!(p);
                    }
                }
                Err(e) => {
                    if !dry_run {
                        self.release_node_ports(store, &taken).await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(taken)
    }
}

/// What one repair pass found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Allocation keys that no Service holds, released (or, in a first pass, suspected).
    pub released: Vec<String>,
    /// Allocation keys a Service holds but the store lacked, re-created.
    pub restored: Vec<String>,
    /// Addresses that two Services claim, or that a Service holds under another owner's key.
    pub conflicts: Vec<String>,
}

/// Allocation keys with their `mod_revision`, and the keys every Service holds (with its
/// owner record), as the store has them now.
async fn allocation_state(
    store: &dyn Store,
) -> Result<(Vec<(String, u64)>, Vec<(String, Value)>), StoreError> {
    let services = muster_api::registry::find("", "v1", "services").expect("services");
    let mut held: Vec<(String, Value)> = Vec::new();
    for object in store.list(&services.key_prefix(), None, None).await?.items {
        let svc = object.json()?;
        let namespace = svc
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        let name = svc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        for ip in cluster_ips(&svc) {
            if let Ok(ip) = ip.parse::<Ipv4Addr>() {
                let owner = owner_record("IPAddress", &ip.to_string(), namespace, name);
                held.push((ip_key(ip), owner));
            }
        }
        for port in node_ports(&svc) {
            let owner = owner_record("NodePort", &port.to_string(), namespace, name);
            held.push((port_key(port), owner));
        }
    }
    let mut allocated = Vec::new();
    for prefix in [IP_PREFIX, NODE_PORT_PREFIX] {
        for object in store.list(prefix, None, None).await?.items {
            allocated.push((object.key.to_string(), object.mod_revision));
        }
    }
    Ok((allocated, held))
}

/// Allocation keys (with their `mod_revision`) that no Service holds right now: the first
/// pass of [`repair`].
pub async fn unheld_allocations(store: &dyn Store) -> Result<Vec<(String, u64)>, StoreError> {
    let (allocated, held) = allocation_state(store).await?;
    Ok(allocated
        .into_iter()
        .filter(|(key, _)| !held.iter().any(|(h, _)| h == key))
        .collect())
}

/// Reconciles allocation keys with Services, as kube-apiserver's repair controllers do after
/// a crash between an allocation and the Service write that would have used it (or a
/// Service written without its allocation, e.g. a restored backup).
///
/// A key that no Service holds is released only if it was among `suspects` (from
/// [`unheld_allocations`] a grace period earlier) at the same revision: a create in flight
/// (here or on another API server sharing the store) allocates first and writes the Service
/// a moment later, and must not lose its address meanwhile. The delete carries that revision
/// as precondition, so a key re-used in between is kept.
pub async fn repair(
    store: &dyn Store,
    suspects: &[(String, u64)],
) -> Result<RepairReport, StoreError> {
    let mut report = RepairReport::default();
    for (key, revision) in unheld_allocations(store).await? {
        if !suspects.contains(&(key.clone(), revision)) {
            continue;
        }
        match store.delete(&key, Some(revision)).await {
            Ok(_) => report.released.push(key),
            Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let (_, held) = allocation_state(store).await?;
    let mut seen: Vec<&str> = Vec::new();
    for (key, owner) in &held {
        if seen.contains(&key.as_str()) {
            report.conflicts.push(key.clone());
            continue;
        }
        seen.push(key);
        match store.get(key).await? {
            Some(existing) => {
                let parent = existing.json()?.pointer("/spec/parentRef").cloned();
                if parent.as_ref() != owner.pointer("/spec/parentRef") {
                    report.conflicts.push(key.clone());
                }
            }
            None => match store.create(key, owner.clone()).await {
                Ok(_) => report.restored.push(key.clone()),
                Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            },
        }
    }
    Ok(report)
}

pub fn cluster_ips(svc: &Value) -> Vec<String> {
    let mut ips: Vec<String> = svc
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if let Some(ip) = svc.pointer("/spec/clusterIP").and_then(Value::as_str)
        && !ips.iter().any(|x| x == ip)
    {
        ips.push(ip.to_string());
    }
    ips.retain(|ip| !ip.is_empty() && ip != "None");
    ips
}

pub fn node_ports(svc: &Value) -> Vec<u16> {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
                .filter_map(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn open_store(dir: &std::path::Path) -> Arc<muster_store::RedbStore> {
        muster_store::RedbStore::open(&dir.join("store.redb"), Default::default()).unwrap()
    }

    fn service(name: &str, ip: &str, node_ports: &[u16]) -> Value {
        let ports: Vec<Value> = node_ports
            .iter()
            .map(|p| json!({"port": 80, "nodePort": p}))
            .collect();
        json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"type": if node_ports.is_empty() { "ClusterIP" } else { "NodePort" },
                "clusterIP": ip, "clusterIPs": [ip], "ports": ports}})
    }

    async fn put_service(store: &dyn Store, svc: &Value) {
        let name = svc["metadata"]["name"].as_str().unwrap();
        store
            .create(
                &format!("/registry/core/services/default/{name}"),
                svc.clone(),
            )
            .await
            .unwrap();
    }

    /// Both passes of the repair, `grace` apart.
    async fn repair_after(store: &dyn Store, grace: Duration) -> RepairReport {
        let suspects = unheld_allocations(store).await.unwrap();
        tokio::time::sleep(grace).await;
        repair(store, &suspects).await.unwrap()
    }

    async fn keys(store: &dyn Store) -> Vec<String> {
        let mut keys = Vec::new();
        for prefix in [IP_PREFIX, NODE_PORT_PREFIX] {
            for o in store.list(prefix, None, None).await.unwrap().items {
                keys.push(o.key.to_string());
            }
        }
        keys
    }

    /// A crash between allocation and the Service write leaves keys no Service holds; the
    /// repair releases them, keeps held ones, restores missing ones and reports conflicts.
    #[tokio::test]
    async fn repair_releases_leaks_and_restores_missing_allocations() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let alloc = Allocator {
            cidr: "10.96.0.0/12".parse().unwrap(),
        };
        // Held and present.
        let held = service("held", "10.96.0.50", &[30002]);
        alloc
            .reserve_ip(store.as_ref(), "10.96.0.50", "default", "held", false)
            .await
            .unwrap();
        alloc
            .reserve_node_port(store.as_ref(), 30002, "default", "held", "f")
            .await
            .unwrap();
        put_service(store.as_ref(), &held).await;
        // Allocated for creates that never happened (the crash).
        let mut lost = json!({"metadata": {"name": "lost", "namespace": "default"},
            "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        alloc
            .allocate_for_create(store.as_ref(), &mut lost, false)
            .await
            .unwrap();
        let lost_ip = ip_key(lost["spec"]["clusterIP"].as_str().unwrap().parse().unwrap());
        let lost_port = port_key(node_ports(&lost)[0]);
        // A Service whose allocation is missing (restored from a backup).
        put_service(store.as_ref(), &service("restored", "10.96.0.70", &[])).await;
        // Two Services claiming one address.
        put_service(store.as_ref(), &service("twin-a", "10.96.0.80", &[])).await;
        put_service(store.as_ref(), &service("twin-b", "10.96.0.80", &[])).await;

        let report = repair_after(store.as_ref(), Duration::ZERO).await;
        let mut released = report.released.clone();
        released.sort();
        let mut want_released = vec![lost_ip.clone(), lost_port.clone()];
        want_released.sort();
        assert_eq!(released, want_released);
        assert_eq!(
            report.restored,
            vec![
                ip_key("10.96.0.70".parse().unwrap()),
                ip_key("10.96.0.80".parse().unwrap())
            ]
        );
        assert_eq!(
            report.conflicts,
            vec![ip_key("10.96.0.80".parse().unwrap())]
        );
        let after = keys(store.as_ref()).await;
        for kept in [
            "/registry/ipallocations/10.96.0.50",
            "/registry/servicenodeports/30002",
        ] {
            assert!(after.contains(&kept.to_string()), "{kept} kept: {after:?}");
        }
        assert!(
            !after.contains(&lost_ip) && !after.contains(&lost_port),
            "{after:?}"
        );
        // A second pass finds nothing more to do.
        let again = repair_after(store.as_ref(), Duration::ZERO).await;
        assert!(
            again.released.is_empty() && again.restored.is_empty(),
            "{again:?}"
        );
        // The released address can be taken again.
        let ip = lost["spec"]["clusterIP"].as_str().unwrap().to_string();
        alloc
            .reserve_ip(store.as_ref(), &ip, "default", "next", false)
            .await
            .unwrap();
    }

    /// An allocation whose Service is written during the grace period (a create in flight)
    /// is not released.
    #[tokio::test]
    async fn repair_spares_a_create_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let alloc = Allocator {
            cidr: "10.96.0.0/12".parse().unwrap(),
        };
        alloc
            .reserve_ip(store.as_ref(), "10.96.0.90", "default", "slow", false)
            .await
            .unwrap();
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                put_service(store.as_ref(), &service("slow", "10.96.0.90", &[])).await;
            })
        };
        let report = repair_after(store.as_ref(), Duration::from_millis(500)).await;
        writer.await.unwrap();
        assert_eq!(report, RepairReport::default());
        assert_eq!(
            keys(store.as_ref()).await,
            vec!["/registry/ipallocations/10.96.0.90"]
        );
    }

    #[test]
    fn cidr_parsing_and_ranges() {
        let c: ServiceCidr = "10.96.0.0/12".parse().unwrap();
        assert_eq!(c.base, Ipv4Addr::new(10, 96, 0, 0));
        let cases = [
            ("10.96.0.0", false),
            ("10.96.0.1", true),
            ("10.96.0.10", true),
            ("10.111.255.254", true),
            ("10.111.255.255", false),
            ("10.112.0.1", false),
            ("192.168.0.1", false),
        ];
        for (ip, want) in cases {
            assert_eq!(c.contains_usable(ip.parse().unwrap()), want, "{ip}");
        }
        assert_eq!(c.static_band(), 256);
        assert!("10.96.0.0".parse::<ServiceCidr>().is_err());
        assert!("10.96.0.0/40".parse::<ServiceCidr>().is_err());
        assert_eq!(
            "10.96.5.7/24".parse::<ServiceCidr>().unwrap().to_string(),
            "10.96.5.0/24"
        );
    }
}
