//! muster-agent: the node agent. It runs each pod bound to its node as host processes inside
//! the pod's own network, UTS and mount namespaces, and reports status as a kubelet does.

pub mod agent;
pub mod backoff;
pub mod cidr;
pub mod dnsfiles;
pub mod env;
pub mod ipam;
pub mod logs;
pub mod net;
pub mod node;
pub mod pod;
pub mod probe;
pub mod process;
pub mod server;
pub mod status;
pub mod workload;

pub use agent::{AgentConfig, run, run_until};
pub use workload::{DEFAULT_WORKLOAD_SUBCOMMAND, WorkloadArgs, default_workload_main};
pub mod proxy;
