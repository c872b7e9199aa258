//! The Node object and Lease the agent keeps up to date (pure builders), and the choice of the
//! node's pod subnet.

use std::net::IpAddr;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use crate::cidr::{CidrError, Ipv4Cidr};

/// The version the node reports (kubectl prints it in `get nodes -o wide`).
pub const KUBELET_VERSION: &str = "v1.33.0-muster";
pub const RUNTIME_VERSION: &str = concat!("muster://", env!("CARGO_PKG_VERSION"));
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
pub const LEASE_DURATION_SECONDS: i32 = 40;

/// The node's /24: the one it already has (`spec.podCIDR`), else the lowest one of the
/// cluster CIDR no other node uses.
pub fn choose_node_subnet(
    cluster: Ipv4Cidr,
    existing: Option<&str>,
    others: &[String],
) -> Result<Ipv4Cidr, CidrError> {
    if let Some(mine) = existing.and_then(|c| c.parse::<Ipv4Cidr>().ok()) {
        return Ok(mine);
    }
    let taken: Vec<Ipv4Cidr> = others.iter().filter_map(|c| c.parse().ok()).collect();
    let len = cluster.prefix().max(24);
    let count = 1u32 << (len - cluster.prefix()).min(31);
    for index in 0..count {
        let candidate = cluster.subnet(len, index)?;
        if !taken.contains(&candidate) {
            return Ok(candidate);
        }
    }
    Err(CidrError::NoSuchSubnet {
        cluster: cluster.to_string(),
        len,
        index: count,
    })
}

/// Facts about the machine for `status.nodeInfo` and `capacity`.
#[derive(Debug, Clone)]
pub struct MachineFacts {
    pub cpus: usize,
    pub memory_kib: u64,
    pub kernel: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
}

impl MachineFacts {
    pub fn probe() -> MachineFacts {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let memory_kib = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let os_image = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "Linux".into());
        MachineFacts {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_kib,
            kernel: read("/proc/sys/kernel/osrelease"),
            os_image,
            machine_id: read("/etc/machine-id"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
        }
    }
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The Node as the agent creates it.
pub fn node_object(name: &str, subnet: Ipv4Cidr) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": arch(),
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": arch(),
        }},
        "spec": {"podCIDR": subnet.to_string(), "podCIDRs": [subnet.to_string()]},
    }))
    .expect("valid Node")
}

/// The Node's status: Ready, capacity, addresses, where the agent's server listens.
pub fn node_status(
    name: &str,
    node_ip: IpAddr,
    port: u16,
    facts: &MachineFacts,
    ready_since: Timestamp,
    now: Timestamp,
) -> serde_json::Value {
    let resources = json!({
        "cpu": facts.cpus.to_string(),
        "memory": format!("{}Ki", facts.memory_kib),
        "pods": "110",
        "ephemeral-storage": "10Gi",
    });
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now.to_string(), "lastTransitionTime": ready_since.to_string()})
    };
    json!({
        "capacity": resources, "allocatable": resources,
        "addresses": [{"type": "InternalIP", "address": node_ip.to_string()},
                      {"type": "Hostname", "address": name}],
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "nodeInfo": {
            "machineID": facts.machine_id, "systemUUID": facts.machine_id, "bootID": facts.boot_id,
            "kernelVersion": facts.kernel, "osImage": facts.os_image,
            "containerRuntimeVersion": RUNTIME_VERSION, "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": arch(),
        },
    })
}

/// The node's Lease, renewed at `now`.
pub fn lease_object(name: &str, node_uid: Option<&str>, now: Timestamp) -> Lease {
    let mut meta = json!({"name": name, "namespace": LEASE_NAMESPACE});
    if let Some(uid) = node_uid {
        meta["ownerReferences"] =
            json!([{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}]);
    }
    serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
        "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                 "renewTime": format!("{now:.6}")},
    }))
    .expect("valid Lease")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_choice_table() {
        let cluster: Ipv4Cidr = "10.244.0.0/16".parse().unwrap();
        let check = |existing: Option<&str>, others: &[&str], want: &str| {
            let others: Vec<String> = others.iter().map(|s| s.to_string()).collect();
            let got = choose_node_subnet(cluster, existing, &others).unwrap();
            assert_eq!(got.to_string(), want, "{existing:?} {others:?}");
        };
        check(None, &[], "10.244.0.0/24");
        check(None, &["10.244.0.0/24", "10.244.2.0/24"], "10.244.1.0/24");
        check(Some("10.244.7.0/24"), &["10.244.0.0/24"], "10.244.7.0/24");
        check(Some("garbage"), &["bad"], "10.244.0.0/24");
        let tiny: Ipv4Cidr = "10.0.0.0/24".parse().unwrap();
        assert!(choose_node_subnet(tiny, None, &["10.0.0.0/24".into()]).is_err());
    }

    #[test]
    fn node_and_lease_shapes() {
        let subnet: Ipv4Cidr = "10.244.0.0/24".parse().unwrap();
        let node = serde_json::to_value(node_object("n1", subnet)).unwrap();
        assert_eq!(node["spec"]["podCIDR"], "10.244.0.0/24");
        assert_eq!(node["metadata"]["labels"]["kubernetes.io/hostname"], "n1");
        let facts = MachineFacts {
            cpus: 2,
            memory_kib: 1024,
            kernel: "6.1".into(),
            os_image: "Debian".into(),
            machine_id: "m".into(),
            boot_id: "b".into(),
        };
        let t = Timestamp::from_second(1_700_000_000).unwrap();
        let status = node_status("n1", "127.0.0.1".parse().unwrap(), 10250, &facts, t, t);
        // the status must deserialize as a NodeStatus
        let typed: k8s_openapi::api::core::v1::NodeStatus =
            serde_json::from_value(status.clone()).unwrap();
        assert_eq!(
            typed
                .daemon_endpoints
                .unwrap()
                .kubelet_endpoint
                .unwrap()
                .port,
            10250
        );
        assert_eq!(status["capacity"]["memory"], "1024Ki");
        let ready = status["conditions"].as_array().unwrap().last().unwrap();
        assert_eq!(
            (ready["type"].as_str(), ready["status"].as_str()),
            (Some("Ready"), Some("True"))
        );
        let lease = serde_json::to_value(lease_object("n1", Some("u"), t)).unwrap();
        assert_eq!(lease["metadata"]["namespace"], "kube-node-lease");
        assert_eq!(lease["spec"]["renewTime"], "2023-11-14T22:13:20.000000Z");
        assert_eq!(lease["metadata"]["ownerReferences"][0]["uid"], "u");
    }
}
