//! Pod networking: a node bridge, and per pod a network namespace joined to it by a veth pair.
//!
//! Links and addresses are managed with iproute2 (`ip`) rather than netlink from Rust: the
//! workspace has no netlink crate, `ip` is on every machine this runs on (scripts/test installs
//! it), and `ip netns add` creates the standard `/run/netns/<name>` handles, so a person can
//! inspect a pod with `ip netns exec` or `nsenter`. Each pod costs about eight short `ip` runs.
//!
//! Everything the agent creates is recorded in a state file under its data dir before it is
//! created, so after a crash the next start removes exactly its own leftovers (and never another
//! agent's on the same machine).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::cidr::Ipv4Cidr;
use crate::ipam::write_atomically;

/// Prefix of every network namespace the agent creates.
pub const NETNS_PREFIX: &str = "muster-";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("`ip {args}` failed: {stderr}")]
    Ip { args: String, stderr: String },
    #[error("cannot run `ip` (install iproute2): {0}")]
    Spawn(std::io::Error),
    #[error("network state {path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runs `ip` with `args`; returns its stdout.
pub async fn ip(args: &[&str]) -> Result<String, NetError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(NetError::Spawn)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetError::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// `ip` where "already exists" / "not found" mean the goal is already reached.
async fn ip_idempotent(args: &[&str]) -> Result<(), NetError> {
    match ip(args).await {
        Ok(_) => Ok(()),
        Err(NetError::Ip { stderr, .. })
            if stderr.contains("File exists")
                || stderr.contains("Cannot find device")
                || stderr.contains("No such file")
                || stderr.contains("does not exist") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[derive(Debug, Clone)]
pub struct NodeNetworkConfig {
    /// Bridge name (at most 15 characters).
    pub bridge: String,
    /// This node's pod subnet; its first address goes on the bridge.
    pub node_subnet: Ipv4Cidr,
    /// Whole-cluster CIDRs that get blackhole routes (pod CIDR and service CIDR).
    pub blackholes: Vec<Ipv4Cidr>,
    /// Addresses put on `lo` (the DNS service IP, so pods reach the node's DNS server).
    pub local_addresses: Vec<IpAddr>,
}

/// Sets up the node side (idempotent): bridge with the gateway address, blackhole routes and
/// local service addresses.
pub async fn setup_node(config: &NodeNetworkConfig) -> Result<(), NetError> {
    let gateway = config
        .node_subnet
        .gateway()
        .expect("node subnet has a gateway");
    let bridge = config.bridge.as_str();
    ip_idempotent(&["link", "add", bridge, "type", "bridge"]).await?;
    let addr = format!("{gateway}/{}", config.node_subnet.prefix());
    ip(&["addr", "replace", &addr, "dev", bridge]).await?;
    ip(&["link", "set", bridge, "up"]).await?;
    ip(&["link", "set", "lo", "up"]).await?;
    for local in &config.local_addresses {
        let prefix = if local.is_ipv4() { 32 } else { 128 };
        ip(&["addr", "replace", &format!("{local}/{prefix}"), "dev", "lo"]).await?;
    }
    for cidr in &config.blackholes {
        ip(&["route", "replace", "blackhole", &cidr.to_string()]).await?;
    }
    Ok(())
}

/// Removes what `setup_node` created (bridge, lo addresses, blackhole routes).
pub async fn teardown_node(config: &NodeNetworkConfig) -> Result<(), NetError> {
    ip_idempotent(&["link", "del", &config.bridge]).await?;
    for local in &config.local_addresses {
        let prefix = if local.is_ipv4() { 32 } else { 128 };
        ip_idempotent(&["addr", "del", &format!("{local}/{prefix}"), "dev", "lo"]).await?;
    }
    for cidr in &config.blackholes {
        ip_idempotent(&["route", "del", "blackhole", &cidr.to_string()]).await?;
    }
    Ok(())
}

/// The names of a pod's network objects, derived from its UID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNetNames {
    pub netns: String,
    pub host_veth: String,
    pub pod_veth_tmp: String,
}

impl PodNetNames {
    pub fn for_uid(uid: &str) -> PodNetNames {
        let id: String = uid
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(12)
            .collect::<String>()
            .to_ascii_lowercase();
        PodNetNames {
            netns: format!("{NETNS_PREFIX}{id}"),
            // interface names are limited to 15 bytes
            host_veth: format!("mh{id}"),
            pod_veth_tmp: format!("mp{id}"),
        }
    }

    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }
}

/// Creates the pod's network namespace with `eth0` at `ip` and a default route via the
/// bridge. A leftover with the same names is removed first.
pub async fn setup_pod(
    names: &PodNetNames,
    bridge: &str,
    subnet: Ipv4Cidr,
    ip_addr: Ipv4Addr,
) -> Result<(), NetError> {
    teardown_pod(names).await?;
    let gateway = subnet.gateway().expect("subnet has a gateway").to_string();
    let ns = names.netns.as_str();
    ip(&["netns", "add", ns]).await?;
    let result = async {
        ip(&[
            "link",
            "add",
            &names.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            &names.pod_veth_tmp,
            "netns",
            ns,
        ])
        .await?;
        ip(&["link", "set", &names.host_veth, "master", bridge, "up"]).await?;
        ip(&["-n", ns, "link", "set", &names.pod_veth_tmp, "name", "eth0"]).await?;
        let addr = format!("{ip_addr}/{}", subnet.prefix());
        ip(&["-n", ns, "addr", "add", &addr, "dev", "eth0"]).await?;
        ip(&["-n", ns, "link", "set", "lo", "up"]).await?;
        ip(&["-n", ns, "link", "set", "eth0", "up"]).await?;
        ip(&["-n", ns, "route", "add", "default", "via", &gateway]).await?;
        Ok(())
    }
    .await;
    if result.is_err() {
        let _ = teardown_pod(names).await;
    }
    result
}

/// Removes the pod's namespace (which takes its veth end with it) and the host veth.
pub async fn teardown_pod(names: &PodNetNames) -> Result<(), NetError> {
    if names.netns_path().exists() {
        ip_idempotent(&["netns", "del", &names.netns]).await?;
    }
    ip_idempotent(&["link", "del", &names.host_veth]).await?;
    Ok(())
}

/// The record of pod networks this agent created (pod UID -> names).
pub struct NetState {
    path: PathBuf,
    pods: BTreeMap<String, PodNetNames>,
}

impl NetState {
    pub fn open(path: &Path) -> Result<NetState, NetError> {
        let err = |source| NetError::State {
            path: path.to_path_buf(),
            source,
        };
        let pods = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(err(e)),
        };
        Ok(NetState {
            path: path.to_path_buf(),
            pods,
        })
    }

    pub fn record(&mut self, uid: &str, names: &PodNetNames) -> Result<(), NetError> {
        self.pods.insert(uid.to_string(), names.clone());
        self.save()
    }

    pub fn forget(&mut self, uid: &str) -> Result<(), NetError> {
        if self.pods.remove(uid).is_some() {
            self.save()?;
        }
        Ok(())
    }

    pub fn recorded(&self) -> Vec<(String, PodNetNames)> {
        self.pods
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Tears down every recorded pod network (after a crash or an unclean stop).
    pub async fn remove_leftovers(&mut self) -> Vec<String> {
        let mut removed = Vec::new();
        for (uid, names) in self.recorded() {
            match teardown_pod(&names).await {
                Ok(()) => {
                    removed.push(names.netns.clone());
                    let _ = self.forget(&uid);
                }
                Err(e) => {
                    tracing::warn!(netns = %names.netns, error = %e, "cannot remove leftover pod network")
                }
            }
        }
        removed
    }

    fn save(&self) -> Result<(), NetError> {
        let bytes = serde_json::to_vec_pretty(&self.pods).expect("serializes");
        write_atomically(&self.path, &bytes).map_err(|source| NetError::State {
            path: self.path.clone(),
            source,
        })
    }
}

/// Without root there are no namespaces: each pod gets a distinct loopback address instead,
/// `127.<b>.<c>.<d>` for the pod-CIDR address `a.b.c.d` it was allocated.
pub fn loopback_pod_ip(allocated: Ipv4Addr) -> Ipv4Addr {
    let [_, b, c, d] = allocated.octets();
    Ipv4Addr::new(127, b, c, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_interface_limits() {
        let n = PodNetNames::for_uid("8F0C2A1B-77e4-4c1e-9b8e-0123456789ab");
        assert_eq!(n.netns, "muster-8f0c2a1b77e4");
        assert_eq!(n.host_veth, "mh8f0c2a1b77e4");
        assert!(n.host_veth.len() <= 15 && n.pod_veth_tmp.len() <= 15);
        assert_eq!(n.netns_path(), Path::new("/run/netns/muster-8f0c2a1b77e4"));
        assert_eq!(
            loopback_pod_ip("10.244.3.7".parse().unwrap()),
            Ipv4Addr::new(127, 244, 3, 7)
        );
    }

    #[test]
    fn state_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net.json");
        let mut state = NetState::open(&path).unwrap();
        state.record("u1", &PodNetNames::for_uid("u1")).unwrap();
        state.record("u2", &PodNetNames::for_uid("u2")).unwrap();
        state.forget("u1").unwrap();
        let again = NetState::open(&path).unwrap();
        assert_eq!(
            again.recorded(),
            vec![("u2".to_string(), PodNetNames::for_uid("u2"))]
        );
    }
}
