//! muster-agent: the node agent. It runs each pod bound to its node as host processes inside
//! the pod's own network, UTS and mount namespaces, and reports status as a kubelet does.

pub mod backoff;
pub mod cidr;
pub mod dnsfiles;
pub mod env;
pub mod ipam;
pub mod logs;
pub mod net;
pub mod pod;
pub mod probe;
pub mod process;
pub mod server;
pub mod status;
pub mod workload;
