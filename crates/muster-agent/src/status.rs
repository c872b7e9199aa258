//! What the agent knows about a pod's containers, and the `PodStatus` a kubelet would report
//! for it (pure: the clock is a parameter).

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::backoff::RestartPolicy;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// `Completed`, `Error`, or another kubelet reason.
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}

impl Terminated {
    /// The reason kubelet gives a process exit.
    pub fn reason_for(exit_code: i32) -> &'static str {
        if exit_code == 0 { "Completed" } else { "Error" }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
    },
    Terminated(Terminated),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRuntime {
    pub name: String,
    pub state: RunState,
    pub last_terminated: Option<Terminated>,
    pub restart_count: i32,
    /// Readiness (probe passed, or running with no readiness probe).
    pub ready: bool,
    /// Startup probe passed (or running with none).
    pub started: bool,
    pub container_id: Option<String>,
}

impl ContainerRuntime {
    pub fn waiting(name: &str, reason: &str) -> Self {
        ContainerRuntime {
            name: name.to_string(),
            state: RunState::Waiting {
                reason: reason.to_string(),
                message: None,
            },
            last_terminated: None,
            restart_count: 0,
            ready: false,
            started: false,
            container_id: None,
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state, RunState::Running { .. })
    }

    pub fn succeeded(&self) -> bool {
        matches!(&self.state, RunState::Terminated(t) if t.exit_code == 0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRuntime {
    pub pod_ip: Option<IpAddr>,
    pub host_ip: Option<IpAddr>,
    pub start_time: Option<Timestamp>,
    pub init_containers: Vec<ContainerRuntime>,
    pub containers: Vec<ContainerRuntime>,
    /// A pod-level failure (e.g. the network could not be set up).
    pub failure: Option<(String, String)>,
}

impl PodRuntime {
    /// The state right after the agent accepted the pod: nothing has run yet.
    pub fn accepted(pod: &Pod) -> PodRuntime {
        let spec = pod.spec.as_ref();
        let inits: Vec<ContainerRuntime> = spec
            .and_then(|s| s.init_containers.as_ref())
            .into_iter()
            .flatten()
            .map(|c| ContainerRuntime::waiting(&c.name, "PodInitializing"))
            .collect();
        let main_reason = if inits.is_empty() {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let containers = spec
            .map(|s| s.containers.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|c| ContainerRuntime::waiting(&c.name, main_reason))
            .collect();
        PodRuntime {
            pod_ip: None,
            host_ip: None,
            start_time: None,
            init_containers: inits,
            containers,
            failure: None,
        }
    }

    pub fn container_mut(&mut self, init: bool, name: &str) -> Option<&mut ContainerRuntime> {
        let list = if init {
            &mut self.init_containers
        } else {
            &mut self.containers
        };
        list.iter_mut().find(|c| c.name == name)
    }

    pub fn initialized(&self) -> bool {
        self.init_containers.iter().all(ContainerRuntime::succeeded)
    }
}

/// The pod's phase by kubelet's rules (`getPhase`): a container waiting after a previous
/// run (crash-loop) counts as stopped, and stopped containers that will restart keep the pod
/// Running.
pub fn pod_phase(runtime: &PodRuntime, policy: RestartPolicy) -> &'static str {
    if runtime.failure.is_some() {
        return "Failed";
    }
    let init_failed_for_good = runtime.init_containers.iter().any(|c| {
        matches!(&c.state, RunState::Terminated(t) if t.exit_code != 0)
            && policy == RestartPolicy::Never
    });
    if init_failed_for_good {
        return "Failed";
    }
    if !runtime.initialized() {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &runtime.containers {
        match &c.state {
            RunState::Running { .. } => running += 1,
            RunState::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            RunState::Waiting { .. } if c.last_terminated.is_some() => stopped += 1,
            RunState::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        match policy {
            RestartPolicy::Always => "Running",
            _ if stopped == succeeded => "Succeeded",
            RestartPolicy::Never => "Failed",
            RestartPolicy::OnFailure => "Running",
        }
    } else {
        "Pending"
    }
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

fn terminated_state(t: &Terminated, id: &Option<String>) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            container_id: id.clone(),
            exit_code: t.exit_code,
            signal: t.signal,
            reason: Some(t.reason.clone()),
            message: t.message.clone(),
            started_at: Some(time(t.started_at)),
            finished_at: Some(time(t.finished_at)),
        }),
        ..Default::default()
    }
}

fn container_status(c: &ContainerRuntime, image: &str) -> ContainerStatus {
    let state = match &c.state {
        RunState::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        RunState::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(*started_at)),
            }),
            ..Default::default()
        },
        RunState::Terminated(t) => terminated_state(t, &c.container_id),
    };
    ContainerStatus {
        name: c.name.clone(),
        image: image.to_string(),
        // no image is pulled: the "image" is the host's own file system
        image_id: String::new(),
        container_id: c.container_id.clone(),
        state: Some(state),
        last_state: Some(
            c.last_terminated
                .as_ref()
                .map(|t| terminated_state(t, &None))
                .unwrap_or_default(),
        ),
        ready: c.ready,
        started: Some(c.started),
        restart_count: c.restart_count,
        ..Default::default()
    }
}

/// The status to report. Conditions keep their `lastTransitionTime` from `previous` while
/// their status does not change.
pub fn compute_status(
    pod: &Pod,
    runtime: &PodRuntime,
    previous: Option<&PodStatus>,
    now: Timestamp,
) -> PodStatus {
    let spec = pod.spec.as_ref();
    let policy = RestartPolicy::parse(spec.and_then(|s| s.restart_policy.as_deref()));
    let image_of = |init: bool, name: &str| {
        let list = spec.and_then(|s| {
            if init {
                s.init_containers.as_ref()
            } else {
                Some(&s.containers)
            }
        });
        list.into_iter()
            .flatten()
            .find(|c| c.name == name)
            .and_then(|c| c.image.clone())
            .unwrap_or_default()
    };
    let phase = pod_phase(runtime, policy);
    let initialized = runtime.initialized();
    let unready: Vec<&str> = runtime
        .containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let incomplete: Vec<&str> = runtime
        .init_containers
        .iter()
        .filter(|c| !c.succeeded())
        .map(|c| c.name.as_str())
        .collect();
    // A finished pod is never ready.
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let containers_ready = unready.is_empty() && !terminal;
    let not_ready = |reason: &str| {
        if terminal {
            ("PodCompleted".to_string(), None)
        } else {
            (
                reason.to_string(),
                Some(format!(
                    "containers with unready status: [{}]",
                    unready.join(" ")
                )),
            )
        }
    };
    let mut conditions = vec![
        ("PodScheduled", true, None, None),
        if initialized {
            ("Initialized", true, None, None)
        } else {
            (
                "Initialized",
                false,
                Some("ContainersNotInitialized".to_string()),
                Some(format!(
                    "containers with incomplete status: [{}]",
                    incomplete.join(" ")
                )),
            )
        },
    ];
    for kind in ["ContainersReady", "Ready"] {
        if containers_ready {
            conditions.push((kind, true, None, None));
        } else {
            let (reason, message) = not_ready("ContainersNotReady");
            conditions.push((kind, false, Some(reason), message));
        }
    }
    let previous_conditions = previous.and_then(|p| p.conditions.as_ref());
    let conditions = conditions
        .into_iter()
        .map(|(kind, ok, reason, message)| {
            let status = if ok { "True" } else { "False" }.to_string();
            let kept = previous_conditions
                .into_iter()
                .flatten()
                .find(|c| c.type_ == kind && c.status == status)
                .and_then(|c| c.last_transition_time.clone());
            PodCondition {
                type_: kind.to_string(),
                status,
                reason,
                message,
                last_transition_time: Some(kept.unwrap_or(time(now))),
                last_probe_time: None,
                observed_generation: None,
            }
        })
        .collect();
    let (reason, message) = match &runtime.failure {
        Some((r, m)) => (Some(r.clone()), Some(m.clone())),
        None => (None, None),
    };
    let init_statuses: Vec<ContainerStatus> = runtime
        .init_containers
        .iter()
        .map(|c| container_status(c, &image_of(true, &c.name)))
        .collect();
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        host_ip: runtime.host_ip.map(|ip| ip.to_string()),
        host_ips: runtime
            .host_ip
            .map(|ip| vec![HostIP { ip: ip.to_string() }]),
        pod_ip: runtime.pod_ip.map(|ip| ip.to_string()),
        pod_ips: runtime.pod_ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
        start_time: runtime.start_time.map(time),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        container_statuses: Some(
            runtime
                .containers
                .iter()
                .map(|c| container_status(c, &image_of(false, &c.name)))
                .collect(),
        ),
        qos_class: Some("BestEffort".to_string()),
        reason,
        message,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn term(code: i32) -> Terminated {
        Terminated {
            exit_code: code,
            signal: None,
            reason: Terminated::reason_for(code).to_string(),
            message: None,
            started_at: ts(0),
            finished_at: ts(5),
        }
    }

    /// A compact description of a container: `R` running, `R+` running and ready,
    /// `W` waiting (ContainerCreating), `B` waiting in CrashLoopBackOff after a failed run,
    /// `T0`/`T1` terminated with that exit code.
    fn container(name: &str, code: &str) -> ContainerRuntime {
        let mut c = ContainerRuntime::waiting(name, "ContainerCreating");
        match code {
            "W" => {}
            "R" | "R+" => {
                c.state = RunState::Running { started_at: ts(1) };
                c.started = true;
                c.ready = code == "R+";
            }
            "B" => {
                c.state = RunState::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: Some("back-off 10s restarting failed container".into()),
                };
                c.last_terminated = Some(term(1));
                c.restart_count = 1;
            }
            "T0" => c.state = RunState::Terminated(term(0)),
            "T1" => c.state = RunState::Terminated(term(1)),
            other => panic!("bad code {other}"),
        }
        c
    }

    fn runtime(inits: &[&str], mains: &[&str]) -> PodRuntime {
        PodRuntime {
            pod_ip: Some("10.244.0.5".parse().unwrap()),
            host_ip: Some("127.0.0.1".parse().unwrap()),
            start_time: Some(ts(0)),
            init_containers: inits
                .iter()
                .enumerate()
                .map(|(i, c)| container(&format!("init{i}"), c))
                .collect(),
            containers: mains
                .iter()
                .enumerate()
                .map(|(i, c)| container(&format!("c{i}"), c))
                .collect(),
            failure: None,
        }
    }

    #[test]
    fn phase_table() {
        use RestartPolicy::*;
        let cases: &[(&[&str], &[&str], RestartPolicy, &str)] = &[
            (&[], &["W"], Always, "Pending"),
            (&[], &["R"], Always, "Running"),
            (&[], &["R", "W"], Always, "Pending"),
            (&[], &["R", "T0"], Never, "Running"),
            (&[], &["B"], Always, "Running"),
            (&[], &["T0"], Always, "Running"),
            (&[], &["T0", "T0"], Never, "Succeeded"),
            (&[], &["T0", "T1"], Never, "Failed"),
            (&[], &["T0"], OnFailure, "Succeeded"),
            (&[], &["T1"], OnFailure, "Running"),
            (&["R"], &["W"], Always, "Pending"),
            (&["T0", "W"], &["W"], Always, "Pending"),
            (&["T1"], &["W"], Never, "Failed"),
            (&["T1"], &["W"], OnFailure, "Pending"),
            (&["T0"], &["R"], Always, "Running"),
        ];
        for (inits, mains, policy, want) in cases {
            let got = pod_phase(&runtime(inits, mains), *policy);
            assert_eq!(got, *want, "inits {inits:?} mains {mains:?} {policy:?}");
        }
    }

    fn pod(policy: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"restartPolicy": policy, "nodeName": "n",
                     "initContainers": [{"name": "init0", "image": "busybox"}],
                     "containers": [{"name": "c0", "image": "nginx"}, {"name": "c1"}]}
        }))
        .unwrap()
    }

    fn condition(
        status: &PodStatus,
        kind: &str,
    ) -> (String, Option<String>, Option<String>, Timestamp) {
        let c = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == kind)
            .unwrap_or_else(|| panic!("no {kind}"));
        (
            c.status.clone(),
            c.reason.clone(),
            c.message.clone(),
            c.last_transition_time.as_ref().unwrap().0,
        )
    }

    #[test]
    fn conditions_and_transition_times() {
        let p = pod("Always");
        let first = compute_status(&p, &runtime(&["T0"], &["R+", "R"]), None, ts(10));
        assert_eq!(first.phase.as_deref(), Some("Running"));
        assert_eq!(condition(&first, "PodScheduled").0, "True");
        assert_eq!(condition(&first, "Initialized").0, "True");
        let ready = condition(&first, "Ready");
        assert_eq!(ready.0, "False");
        assert_eq!(ready.1.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            ready.2.as_deref(),
            Some("containers with unready status: [c1]")
        );
        assert_eq!(ready.3, ts(10));

        // same readiness later: the transition time stays; readiness flips: it moves
        let second = compute_status(&p, &runtime(&["T0"], &["R+", "R"]), Some(&first), ts(20));
        assert_eq!(condition(&second, "Ready").3, ts(10));
        let third = compute_status(&p, &runtime(&["T0"], &["R+", "R+"]), Some(&second), ts(30));
        assert_eq!(
            condition(&third, "Ready"),
            ("True".into(), None, None, ts(30))
        );
        assert_eq!(condition(&third, "ContainersReady").0, "True");
        assert_eq!(condition(&third, "PodScheduled").3, ts(10));

        let init = compute_status(&p, &runtime(&["R"], &["W", "W"]), None, ts(0));
        let c = condition(&init, "Initialized");
        assert_eq!(
            (c.0.as_str(), c.1.as_deref()),
            ("False", Some("ContainersNotInitialized"))
        );
        assert_eq!(
            c.2.as_deref(),
            Some("containers with incomplete status: [init0]")
        );
    }

    #[test]
    fn container_statuses_as_kubelet() {
        let p = pod("Always");
        let s = compute_status(&p, &runtime(&["T0"], &["B", "R+"]), None, ts(10));
        let v = serde_json::to_value(&s).unwrap();
        let c0 = &v["containerStatuses"][0];
        assert_eq!(c0["name"], "c0");
        assert_eq!(c0["image"], "nginx");
        assert_eq!(c0["restartCount"], 1);
        assert_eq!(c0["ready"], false);
        assert_eq!(c0["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(c0["lastState"]["terminated"]["exitCode"], 1);
        assert_eq!(c0["lastState"]["terminated"]["reason"], "Error");
        let c1 = &v["containerStatuses"][1];
        assert_eq!(c1["state"]["running"]["startedAt"], "2023-11-14T22:13:21Z");
        assert_eq!(c1["started"], true);
        assert_eq!(c1["lastState"], json!({}));
        assert_eq!(
            v["initContainerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
        assert_eq!(v["podIP"], "10.244.0.5");
        assert_eq!(v["podIPs"], json!([{"ip": "10.244.0.5"}]));
        assert_eq!(v["hostIP"], "127.0.0.1");
        assert_eq!(v["startTime"], "2023-11-14T22:13:20Z");

        let done = compute_status(
            &pod("Never"),
            &runtime(&["T0"], &["T0", "T0"]),
            None,
            ts(10),
        );
        assert_eq!(done.phase.as_deref(), Some("Succeeded"));
        let ready = condition(&done, "Ready");
        assert_eq!(
            (ready.0.as_str(), ready.1.as_deref()),
            ("False", Some("PodCompleted"))
        );
    }
}
