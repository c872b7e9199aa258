//! Probe scheduling (pure) and probe handlers, as kubelet's prober workers do them.
//!
//! A probe's result only flips after `successThreshold` consecutive successes or
//! `failureThreshold` consecutive failures. Readiness starts failed, liveness starts passed,
//! startup starts unknown; while a startup probe has not passed, liveness and readiness do
//! not run.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    Exec {
        command: Vec<String>,
    },
    HttpGet {
        https: bool,
        host: Option<String>,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    TcpSocket {
        host: Option<String>,
        port: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub action: ProbeAction,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// Reads a Kubernetes `Probe`, with its defaults (period 10 s, timeout 1 s, thresholds 1/3),
/// resolving named ports against the container's ports.
pub fn probe_spec(probe: &Probe, container: &Container) -> Result<ProbeSpec, String> {
    let secs =
        |v: Option<i32>, default: u64| Duration::from_secs(v.map_or(default, |v| v.max(0) as u64));
    let action = if let Some(exec) = &probe.exec {
        ProbeAction::Exec {
            command: exec.command.clone().unwrap_or_default(),
        }
    } else if let Some(http) = &probe.http_get {
        ProbeAction::HttpGet {
            https: http.scheme.as_deref() == Some("HTTPS"),
            host: http.host.clone().filter(|h| !h.is_empty()),
            port: resolve_port(&http.port, container)?,
            path: http.path.clone().unwrap_or_else(|| "/".into()),
            headers: http
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        }
    } else if let Some(tcp) = &probe.tcp_socket {
        ProbeAction::TcpSocket {
            host: tcp.host.clone().filter(|h| !h.is_empty()),
            port: resolve_port(&tcp.port, container)?,
        }
    } else if probe.grpc.is_some() {
        return Err("grpc probes are not supported by this node".into());
    } else {
        return Err("probe has no handler (exec, httpGet or tcpSocket)".into());
    };
    Ok(ProbeSpec {
        action,
        initial_delay: secs(probe.initial_delay_seconds, 0),
        period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
        success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
    })
}

/// A number, or the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid port {n}")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("port {name:?} not found in container {}", container.name))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    Unknown,
    Success,
    Failure,
}

/// One probe of one running container instance.
#[derive(Debug, Clone)]
pub struct ProbeTracker {
    pub kind: ProbeKind,
    pub spec: ProbeSpec,
    next_run: Instant,
    successes: u32,
    failures: u32,
    result: ProbeResult,
}

impl ProbeTracker {
    pub fn new(kind: ProbeKind, spec: ProbeSpec, container_started: Instant) -> Self {
        let result = match kind {
            ProbeKind::Liveness => ProbeResult::Success,
            ProbeKind::Readiness => ProbeResult::Failure,
            ProbeKind::Startup => ProbeResult::Unknown,
        };
        ProbeTracker {
            kind,
            next_run: container_started + spec.initial_delay,
            spec,
            successes: 0,
            failures: 0,
            result,
        }
    }

    pub fn result(&self) -> ProbeResult {
        self.result
    }

    pub fn next_run(&self) -> Instant {
        self.next_run
    }

    pub fn is_due(&self, now: Instant) -> bool {
        now >= self.next_run
    }

    /// Records one probe outcome at `now`; returns the new result when it changed.
    pub fn record(&mut self, success: bool, now: Instant) -> Option<ProbeResult> {
        self.next_run = now + self.spec.period;
        if success {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let new = if success && self.successes >= self.spec.success_threshold {
            ProbeResult::Success
        } else if !success && self.failures >= self.spec.failure_threshold {
            ProbeResult::Failure
        } else {
            self.result
        };
        (new != self.result).then(|| {
            self.result = new;
            new
        })
    }
}

/// Which probe kinds run now: startup alone until it passed, then liveness and readiness.
pub fn probes_active(kind: ProbeKind, has_startup: bool, startup_passed: bool) -> bool {
    match kind {
        ProbeKind::Startup => has_startup && !startup_passed,
        _ => !has_startup || startup_passed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container() -> Container {
        serde_json::from_value(
            json!({"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}),
        )
        .unwrap()
    }

    #[test]
    fn spec_defaults_and_ports() {
        let check =
            |probe: serde_json::Value,
             want: Result<(ProbeAction, u64, u64, u64, u32, u32), &str>| {
                let p: Probe = serde_json::from_value(probe.clone()).unwrap();
                match (probe_spec(&p, &container()), want) {
                    (Ok(got), Ok((action, delay, period, timeout, st, ft))) => {
                        assert_eq!(got.action, action, "{probe}");
                        assert_eq!(
                            (
                                got.initial_delay.as_secs(),
                                got.period.as_secs(),
                                got.timeout.as_secs()
                            ),
                            (delay, period, timeout),
                            "{probe}"
                        );
                        assert_eq!(
                            (got.success_threshold, got.failure_threshold),
                            (st, ft),
                            "{probe}"
                        );
                    }
                    (Err(e), Err(w)) => assert!(e.contains(w), "{e}"),
                    (got, want) => panic!("{probe}: got {got:?}, want {want:?}"),
                }
            };
        check(
            json!({"tcpSocket": {"port": 8080}}),
            Ok((
                ProbeAction::TcpSocket {
                    host: None,
                    port: 8080,
                },
                0,
                10,
                1,
                1,
                3,
            )),
        );
        check(
            json!({"httpGet": {"port": "http", "path": "/healthz", "httpHeaders": [{"name": "X", "value": "y"}]},
                   "initialDelaySeconds": 2, "periodSeconds": 3, "timeoutSeconds": 4,
                   "successThreshold": 2, "failureThreshold": 5}),
            Ok((
                ProbeAction::HttpGet {
                    https: false,
                    host: None,
                    port: 8080,
                    path: "/healthz".into(),
                    headers: vec![("X".into(), "y".into())],
                },
                2,
                3,
                4,
                2,
                5,
            )),
        );
        check(
            json!({"exec": {"command": ["true"]}, "periodSeconds": 0}),
            Ok((
                ProbeAction::Exec {
                    command: vec!["true".into()],
                },
                0,
                1,
                1,
                1,
                3,
            )),
        );
        check(
            json!({"tcpSocket": {"port": "nope"}}),
            Err("port \"nope\" not found"),
        );
        check(
            json!({"tcpSocket": {"port": 70000}}),
            Err("invalid port 70000"),
        );
        check(
            json!({"grpc": {"port": 1}}),
            Err("grpc probes are not supported"),
        );
        check(json!({}), Err("no handler"));
    }

    fn spec(success: u32, failure: u32, delay: u64) -> ProbeSpec {
        ProbeSpec {
            action: ProbeAction::TcpSocket {
                host: None,
                port: 1,
            },
            initial_delay: Duration::from_secs(delay),
            period: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    /// Feeds `outcomes` (one per period) and returns the result after each.
    fn run(kind: ProbeKind, spec: ProbeSpec, outcomes: &str) -> String {
        let start = Instant::now();
        let mut t = ProbeTracker::new(kind, spec, start);
        let mut now = t.next_run();
        outcomes
            .chars()
            .map(|c| {
                assert!(t.is_due(now));
                t.record(c == '+', now);
                now = t.next_run();
                match t.result() {
                    ProbeResult::Success => 'S',
                    ProbeResult::Failure => 'F',
                    ProbeResult::Unknown => '?',
                }
            })
            .collect()
    }

    #[test]
    fn threshold_table() {
        use ProbeKind::*;
        let cases = [
            (Readiness, 1, 3, "+-+--+", "SSSSSS"),
            (Readiness, 1, 3, "+---+", "SSSFS"),
            (Readiness, 2, 1, "+-++-", "FFFSF"),
            (Liveness, 1, 3, "--+---", "SSSSSF"),
            (Liveness, 1, 1, "-", "F"),
            (Startup, 1, 3, "--+", "??S"),
            (Startup, 1, 2, "--", "?F"),
        ];
        for (kind, st, ft, input, want) in cases {
            assert_eq!(
                run(kind, spec(st, ft, 0), input),
                want,
                "{kind:?} {st}/{ft} {input}"
            );
        }
    }

    #[test]
    fn initial_delay_and_period() {
        let start = Instant::now();
        let mut t = ProbeTracker::new(ProbeKind::Readiness, spec(1, 3, 7), start);
        assert!(!t.is_due(start + Duration::from_secs(6)));
        assert!(t.is_due(start + Duration::from_secs(7)));
        assert_eq!(
            t.record(true, start + Duration::from_secs(7)),
            Some(ProbeResult::Success)
        );
        assert_eq!(t.next_run(), start + Duration::from_secs(12));
        assert_eq!(t.record(true, start + Duration::from_secs(12)), None);
    }

    #[test]
    fn startup_gates_the_others() {
        use ProbeKind::*;
        let cases = [
            (Startup, false, false, false),
            (Startup, true, false, true),
            (Startup, true, true, false),
            (Liveness, true, false, false),
            (Liveness, true, true, true),
            (Readiness, false, false, true),
        ];
        for (kind, has, passed, want) in cases {
            assert_eq!(
                probes_active(kind, has, passed),
                want,
                "{kind:?} {has} {passed}"
            );
        }
    }
}
