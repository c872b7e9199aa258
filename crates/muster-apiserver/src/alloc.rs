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
