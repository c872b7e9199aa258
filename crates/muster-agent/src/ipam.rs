//! Pod IP allocation from the node's subnet.
//!
//! `.0` is the network, `.1` the node bridge (gateway) and the last address the broadcast; the
//! rest go to pods. Allocation is round-robin after the last address handed out, so an address
//! that was just released is not reused at once (clients and DNS caches may still hold it). The
//! table is written to disk (atomically, on every change) so a restarted agent gives a pod that
//! still exists the same address and never hands out one in use.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cidr::Ipv4Cidr;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("no free pod IP left in {0}")]
    Exhausted(Ipv4Cidr),
    #[error("pod subnet {0} is too small (needs at least a /30)")]
    TooSmall(Ipv4Cidr),
    #[error("IPAM state {path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    subnet: String,
    last_offset: u64,
    /// pod UID -> address
    allocations: BTreeMap<String, Ipv4Addr>,
}

pub struct Ipam {
    subnet: Ipv4Cidr,
    path: Option<PathBuf>,
    state: State,
}

impl Ipam {
    /// An allocator kept only in memory (tests, and the non-root fallback).
    pub fn in_memory(subnet: Ipv4Cidr) -> Result<Self, IpamError> {
        if subnet.size() < 4 {
            return Err(IpamError::TooSmall(subnet));
        }
        Ok(Ipam {
            subnet,
            path: None,
            state: State {
                subnet: subnet.to_string(),
                last_offset: 1,
                allocations: BTreeMap::new(),
            },
        })
    }

    /// Loads the table at `path` (if any). Entries outside `subnet` (the node's subnet changed)
    /// are dropped.
    pub fn open(subnet: Ipv4Cidr, path: &Path) -> Result<Self, IpamError> {
        let mut ipam = Ipam::in_memory(subnet)?;
        ipam.path = Some(path.to_path_buf());
        match std::fs::read(path) {
            Ok(bytes) => {
                let loaded: State =
                    serde_json::from_slice(&bytes).map_err(|e| IpamError::State {
                        path: path.to_path_buf(),
                        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                    })?;
                let usable = |ip: &Ipv4Addr| {
                    subnet
                        .offset_of(*ip)
                        .is_some_and(|o| o > 1 && o < subnet.size() - 1)
                };
                ipam.state.allocations = loaded
                    .allocations
                    .into_iter()
                    .filter(|(_, ip)| usable(ip))
                    .collect();
                if loaded.subnet == subnet.to_string() {
                    ipam.state.last_offset = loaded.last_offset;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(IpamError::State {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
        Ok(ipam)
    }

    pub fn subnet(&self) -> Ipv4Cidr {
        self.subnet
    }

    pub fn get(&self, pod_uid: &str) -> Option<Ipv4Addr> {
        self.state.allocations.get(pod_uid).copied()
    }

    pub fn allocations(&self) -> impl Iterator<Item = (&str, Ipv4Addr)> {
        self.state.allocations.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// The pod's address: the one it already has, else the next free one.
    pub fn allocate(&mut self, pod_uid: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = self.get(pod_uid) {
            return Ok(ip);
        }
        let size = self.subnet.size();
        let (first, last) = (2, size - 2);
        let used: std::collections::HashSet<Ipv4Addr> =
            self.state.allocations.values().copied().collect();
        let span = (last - first + 1) as i64;
        let base = self.state.last_offset as i64 - first as i64;
        for step in 1..=span {
            let offset = first + (base + step).rem_euclid(span) as u64;
            let ip = self.subnet.nth(offset).expect("offset inside subnet");
            if !used.contains(&ip) {
                self.state.last_offset = offset;
                self.state.allocations.insert(pod_uid.to_string(), ip);
                self.persist()?;
                return Ok(ip);
            }
        }
        Err(IpamError::Exhausted(self.subnet))
    }

    pub fn release(&mut self, pod_uid: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        let released = self.state.allocations.remove(pod_uid);
        if released.is_some() {
            self.persist()?;
        }
        Ok(released)
    }

    /// Drops every allocation whose pod is not in `live` (after a restart, once the pods bound to
    /// this node are known).
    pub fn retain(&mut self, live: &dyn Fn(&str) -> bool) -> Result<Vec<String>, IpamError> {
        let gone: Vec<String> = self
            .state
            .allocations
            .keys()
            .filter(|uid| !live(uid))
            .cloned()
            .collect();
        for uid in &gone {
            self.state.allocations.remove(uid);
        }
        if !gone.is_empty() {
            self.persist()?;
        }
        Ok(gone)
    }

    fn persist(&self) -> Result<(), IpamError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let err = |source| IpamError::State {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(&self.state).expect("state serializes");
        write_atomically(path, &bytes).map_err(err)
    }
}

/// Writes via a temporary file and a rename, so a crash leaves the old or the new content.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn allocates_round_robin_without_reuse() {
        let mut ipam = Ipam::in_memory(subnet("10.244.0.0/29")).unwrap();
        // usable: .2 .. .6 (.0 network, .1 bridge, .7 broadcast)
        let got: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|uid| ipam.allocate(uid).unwrap().to_string())
            .collect();
        assert_eq!(got, ["10.244.0.2", "10.244.0.3", "10.244.0.4"]);
        assert_eq!(
            ipam.allocate("a").unwrap().to_string(),
            "10.244.0.2",
            "idempotent"
        );
        ipam.release("a").unwrap();
        // .2 was just released: the next ones come first
        assert_eq!(ipam.allocate("d").unwrap().to_string(), "10.244.0.5");
        assert_eq!(ipam.allocate("e").unwrap().to_string(), "10.244.0.6");
        assert_eq!(ipam.allocate("f").unwrap().to_string(), "10.244.0.2");
        assert!(matches!(ipam.allocate("g"), Err(IpamError::Exhausted(_))));
    }

    #[test]
    fn survives_restart_and_drops_dead_pods() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        let net = subnet("10.244.1.0/24");
        {
            let mut ipam = Ipam::open(net, &path).unwrap();
            assert_eq!(ipam.allocate("p1").unwrap().to_string(), "10.244.1.2");
            assert_eq!(ipam.allocate("p2").unwrap().to_string(), "10.244.1.3");
        }
        let mut ipam = Ipam::open(net, &path).unwrap();
        assert_eq!(ipam.get("p1").unwrap().to_string(), "10.244.1.2");
        assert_eq!(ipam.allocate("p3").unwrap().to_string(), "10.244.1.4");
        let gone = ipam.retain(&|uid| uid != "p2").unwrap();
        assert_eq!(gone, ["p2"]);
        // a different subnet drops every stale entry
        let other = Ipam::open(subnet("10.244.2.0/24"), &path).unwrap();
        assert_eq!(other.allocations().count(), 0);
    }

    #[test]
    fn rejects_tiny_subnets_and_corrupt_state() {
        assert!(Ipam::in_memory(subnet("10.0.0.0/31")).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        std::fs::write(&path, b"not json").unwrap();
        let err = Ipam::open(subnet("10.0.0.0/24"), &path).err().unwrap();
        assert!(err.to_string().contains("ipam.json"), "{err}");
    }
}
