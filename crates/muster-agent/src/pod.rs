//! Running one pod: init containers in order, then every container under its restart policy
//! with back-off and probes, and termination (preStop, SIGTERM, grace period, SIGKILL).
//!
//! The pod's state lives in a `watch` channel of [`PodRuntime`]; whoever reports status
//! subscribes to it. Network setup and teardown are the caller's (the agent owns IPAM).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};
use k8s_openapi::jiff::Timestamp;
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use crate::backoff::{BackoffSettings, RestartBackoff, RestartPolicy};
use crate::dnsfiles::{self, ClusterDns, HostDns};
use crate::env::{self, PodFacts, StaticEnvSources};
use crate::logs::{LogSink, Stream};
use crate::probe::{
    ProbeAction, ProbeKind, ProbeResult, ProbeTracker, probe_spec, probes_active, resolve_port,
};
use crate::process::{self, ProcessSpec, Sandbox};
use crate::status::{ContainerRuntime, PodRuntime, RunState, Terminated};
use crate::workload::{Protocol, WorkloadArgs};

/// Node-wide settings every pod uses.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    pub node_name: String,
    /// Per-pod files and logs go under `<pods_dir>/<uid>/`.
    pub pods_dir: PathBuf,
    pub backoff: BackoffSettings,
    /// Executable that runs the default workload (`<exe> default-workload ...`).
    pub workload_exe: PathBuf,
    pub cluster_dns: ClusterDns,
    pub host_dns: HostDns,
    pub host_ip: IpAddr,
    /// Pods get network/UTS/mount namespaces (root); otherwise they share the host's.
    pub isolated: bool,
}

/// One pod the agent runs.
pub struct PodContext {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub pod: Pod,
    pub dir: PathBuf,
    pub sandbox: Sandbox,
    pub pod_ip: IpAddr,
    pub settings: Arc<RuntimeSettings>,
    pub env_sources: StaticEnvSources,
    pub runtime: watch::Sender<PodRuntime>,
    stop: watch::Sender<Option<Duration>>,
    events: mpsc::UnboundedSender<PodEventNote>,
    events_rx: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<PodEventNote>>>,
}

/// Something worth a Kubernetes Event about the pod (`kubectl describe pod` lists them), as
/// kubelet records them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEventNote {
    /// `Normal` or `Warning`.
    pub kind: &'static str,
    pub reason: &'static str,
    pub message: String,
    /// `spec.containers{name}` / `spec.initContainers{name}`.
    pub field_path: Option<String>,
}

impl PodContext {
    /// Writes the pod's resolv.conf, hosts and hostname files and prepares its sandbox.
    pub fn prepare(
        pod: Pod,
        pod_ip: IpAddr,
        netns: Option<PathBuf>,
        settings: Arc<RuntimeSettings>,
        env_sources: StaticEnvSources,
    ) -> std::io::Result<Arc<PodContext>> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let dir = settings.pods_dir.join(&uid);
        std::fs::create_dir_all(&dir)?;
        let hostname = dnsfiles::pod_hostname(&pod);
        std::fs::write(
            dir.join("resolv.conf"),
            dnsfiles::render_resolv_conf(&pod, &settings.cluster_dns, &settings.host_dns),
        )?;
        std::fs::write(
            dir.join("hosts"),
            dnsfiles::render_hosts(&pod, Some(pod_ip), &settings.cluster_dns.domain),
        )?;
        std::fs::write(dir.join("hostname"), format!("{hostname}\n"))?;
        let sandbox = match (settings.isolated, netns) {
            (true, Some(netns)) => Sandbox::isolated(netns, &hostname, &dir),
            _ => Sandbox::default(),
        };
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut runtime = PodRuntime::accepted(&pod);
        runtime.pod_ip = Some(pod_ip);
        runtime.host_ip = Some(settings.host_ip);
        runtime.start_time = Some(Timestamp::now());
        Ok(Arc::new(PodContext {
            uid,
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: pod.metadata.name.clone().unwrap_or_default(),
            pod,
            dir,
            sandbox,
            pod_ip,
            settings,
            env_sources,
            runtime: watch::channel(runtime).0,
            stop: watch::channel(None).0,
            events: events_tx,
            events_rx: parking_lot::Mutex::new(Some(events_rx)),
        }))
    }

    /// Asks every container to stop within `grace`. The first request's grace wins unless a
    /// later one is shorter (as `kubectl delete --grace-period` can shorten it).
    pub fn request_stop(&self, grace: Duration) {
        self.stop.send_modify(|current| {
            if current.is_none_or(|g| grace < g) {
                *current = Some(grace);
            }
        });
    }

    /// The pod's events, for whoever records them (once).
    pub fn take_events(&self) -> Option<mpsc::UnboundedReceiver<PodEventNote>> {
        self.events_rx.lock().take()
    }

    fn note(
        &self,
        kind: &'static str,
        reason: &'static str,
        c: Option<(&Container, bool)>,
        message: String,
    ) {
        let field_path = c.map(|(c, init)| {
            let list = if init { "initContainers" } else { "containers" };
            format!("spec.{list}{{{}}}", c.name)
        });
        let _ = self.events.send(PodEventNote {
            kind,
            reason,
            message,
            field_path,
        });
    }

    /// Resolves with the grace period once a stop was requested.
    pub async fn stop_requested(&self) -> Duration {
        let mut rx = self.stop.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(g) => g.unwrap_or_default(),
            // the sender lives in `self`: it cannot be gone while we borrow it
            Err(_) => Duration::ZERO,
        }
    }

    pub fn stopping(&self) -> bool {
        self.stop.borrow().is_some()
    }

    pub fn container(&self, name: &str) -> Option<&Container> {
        let spec = self.pod.spec.as_ref()?;
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == name)
    }

    pub fn restart_policy(&self) -> RestartPolicy {
        RestartPolicy::parse(
            self.pod
                .spec
                .as_ref()
                .and_then(|s| s.restart_policy.as_deref()),
        )
    }

    fn termination_grace(&self) -> Duration {
        let secs = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        Duration::from_secs(secs.max(0) as u64)
    }

    fn facts(&self) -> PodFacts {
        PodFacts {
            pod_ip: Some(self.pod_ip.to_string()),
            host_ip: Some(self.settings.host_ip.to_string()),
            node_name: Some(self.settings.node_name.clone()),
        }
    }

    /// The container's environment as its processes (and `exec`) see it.
    pub fn container_env(&self, container: &Container) -> Result<Vec<(String, String)>, String> {
        let mut vars = vec![
            ("PATH".to_string(), process::DEFAULT_PATH.to_string()),
            ("HOSTNAME".to_string(), dnsfiles::pod_hostname(&self.pod)),
        ];
        let own = env::resolve_env(&self.pod, container, &self.facts(), &self.env_sources)
            .map_err(|e| e.0)?;
        for (k, v) in own {
            match vars.iter_mut().find(|(n, _)| *n == k) {
                Some(slot) => slot.1 = v,
                None => vars.push((k, v)),
            }
        }
        Ok(vars)
    }

    /// The command line the container runs.
    fn argv(&self, container: &Container, env: &[(String, String)]) -> Vec<String> {
        if let Some(argv) = env::expanded_argv(container, env) {
            return argv;
        }
        let ports = container
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let proto = match p.protocol.as_deref() {
                    Some("UDP") => Protocol::Udp,
                    Some("SCTP") => return None,
                    _ => Protocol::Tcp,
                };
                Some((u16::try_from(p.container_port).ok()?, proto))
            })
            .collect();
        let args = WorkloadArgs {
            pod_name: self.name.clone(),
            ports,
            // without a network namespace, pods share the host's ports: bind to the pod's own
            // loopback address so two pods can use the same containerPort
            bind: (!self.settings.isolated).then_some(self.pod_ip),
        };
        std::iter::once(self.settings.workload_exe.display().to_string())
            .chain(args.to_argv())
            .collect()
    }

    fn update(&self, init: bool, name: &str, f: impl FnOnce(&mut ContainerRuntime)) {
        self.runtime.send_modify(|rt| {
            if let Some(c) = rt.container_mut(init, name) {
                f(c)
            }
        });
    }
}

/// Runs the pod until it is asked to stop and every container has stopped.
pub async fn run_pod(ctx: Arc<PodContext>) {
    let spec = ctx.pod.spec.clone().unwrap_or_default();
    let policy = ctx.restart_policy();
    for init in spec.init_containers.iter().flatten() {
        if !run_init_container(&ctx, init, policy).await {
            // failed for good (restartPolicy Never), or stopping: nothing else starts
            wait_for_stop(&ctx).await;
            return;
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for container in spec.containers {
        let ctx = ctx.clone();
        tasks.spawn(async move { supervise(&ctx, &container, policy).await });
    }
    while tasks.join_next().await.is_some() {}
    wait_for_stop(&ctx).await;
}

async fn wait_for_stop(ctx: &PodContext) {
    ctx.stop_requested().await;
}

/// Runs an init container to success (restarting it on failure unless the policy is Never).
/// Returns whether the pod may go on.
async fn run_init_container(ctx: &Arc<PodContext>, c: &Container, policy: RestartPolicy) -> bool {
    let mut backoff = RestartBackoff::new(ctx.settings.backoff);
    let mut instance = 0;
    loop {
        match run_instance(ctx, c, true, instance).await {
            Outcome::Stopped => return false,
            Outcome::Exited { code: 0, .. } => return true,
            Outcome::Exited { ran_for, .. } => {
                if policy == RestartPolicy::Never {
                    return false;
                }
                if !back_off(ctx, c, true, &mut backoff, ran_for).await {
                    return false;
                }
                instance += 1;
            }
        }
    }
}

/// Runs a container for the pod's lifetime under its restart policy.
async fn supervise(ctx: &Arc<PodContext>, c: &Container, policy: RestartPolicy) {
    let mut backoff = RestartBackoff::new(ctx.settings.backoff);
    let mut instance = 0;
    loop {
        match run_instance(ctx, c, false, instance).await {
            Outcome::Stopped => return,
            Outcome::Exited { code, ran_for } => {
                if ctx.stopping() || !policy.should_restart(code) {
                    return;
                }
                if !back_off(ctx, c, false, &mut backoff, ran_for).await {
                    return;
                }
                instance += 1;
            }
        }
    }
}

/// Waits out the back-off (shown as CrashLoopBackOff); false when the pod stops meanwhile.
async fn back_off(
    ctx: &PodContext,
    c: &Container,
    init: bool,
    backoff: &mut RestartBackoff,
    ran_for: Duration,
) -> bool {
    let delay = backoff.after_exit(ran_for);
    if !delay.is_zero() {
        let message = format!(
            "back-off {} restarting failed container={} pod={}_{}({})",
            humanize(delay),
            c.name,
            ctx.name,
            ctx.namespace,
            ctx.uid
        );
        ctx.note(
            "Warning",
            "BackOff",
            Some((c, init)),
            format!(
                "Back-off restarting failed container {} in pod {}_{}({})",
                c.name, ctx.name, ctx.namespace, ctx.uid
            ),
        );
        ctx.update(init, &c.name, |s| {
            if let RunState::Terminated(t) = &s.state {
                s.last_terminated = Some(t.clone());
            }
            s.state = RunState::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(message),
            };
            s.ready = false;
        });
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => !ctx.stopping(),
        _ = ctx.stop_requested() => false,
    }
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{}m0s", s / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

enum Outcome {
    /// The pod is stopping; the container was terminated for that.
    Stopped,
    Exited {
        code: i32,
        ran_for: Duration,
    },
}

/// Starts one instance of the container and waits for it to end.
async fn run_instance(ctx: &Arc<PodContext>, c: &Container, init: bool, instance: i32) -> Outcome {
    if ctx.stopping() {
        return Outcome::Stopped;
    }
    let started = Timestamp::now();
    let started_instant = Instant::now();
    let fail = |reason: &str, message: String, code: i32| {
        tracing::warn!(pod = %ctx.name, container = %c.name, %message, "container did not start");
        ctx.note(
            "Warning",
            "Failed",
            Some((c, init)),
            format!("Error: {message}"),
        );
        ctx.update(init, &c.name, |s| {
            begin_instance(s, instance);
            s.state = RunState::Terminated(Terminated {
                exit_code: code,
                signal: None,
                reason: reason.to_string(),
                message: Some(message),
                started_at: started,
                finished_at: Timestamp::now(),
            });
        });
        Outcome::Exited {
            code,
            ran_for: Duration::ZERO,
        }
    };
    let env = match ctx.container_env(c) {
        Ok(env) => env,
        Err(message) => {
            // kubelet keeps such a container waiting; it is retried with back-off
            ctx.note(
                "Warning",
                "Failed",
                Some((c, init)),
                format!("Error: {message}"),
            );
            ctx.update(init, &c.name, |s| {
                s.state = RunState::Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: Some(message.clone()),
                }
            });
            return Outcome::Exited {
                code: 1,
                ran_for: Duration::ZERO,
            };
        }
    };
    let sink = match LogSink::create(&ctx.dir, &c.name, instance).await {
        Ok(sink) => sink,
        Err(e) => return fail("StartError", format!("cannot create log file: {e}"), 128),
    };
    let spec = ProcessSpec {
        argv: ctx.argv(c, &env),
        env,
        working_dir: c.working_dir.clone().map(PathBuf::from),
        tty: None,
        stdin: false,
    };
    let mut child = match process::spawn(&ctx.sandbox, spec) {
        Ok(child) => child,
        Err(e) => {
            let message = match &e {
                process::SpawnError::NotFound(p) => {
                    format!("exec: \"{p}\": executable file not found in $PATH")
                }
                other => other.to_string(),
            };
            let _ = sink.write(Stream::Stderr, false, message.as_bytes()).await;
            return fail("StartError", message, 128);
        }
    };
    let pid = child.id().unwrap_or(0);
    ctx.note(
        "Normal",
        "Created",
        Some((c, init)),
        format!("Created container: {}", c.name),
    );
    ctx.note(
        "Normal",
        "Started",
        Some((c, init)),
        format!("Started container {}", c.name),
    );
    let mut copiers = tokio::task::JoinSet::new();
    if let Some(out) = child.stdout.take() {
        let sink = sink.clone();
        copiers.spawn(async move { sink.copy_from(Stream::Stdout, out).await });
    }
    if let Some(err) = child.stderr.take() {
        let sink = sink.clone();
        copiers.spawn(async move { sink.copy_from(Stream::Stderr, err).await });
    }
    let has_probes = !init && (c.startup_probe.is_some() || c.readiness_probe.is_some());
    ctx.update(init, &c.name, |s| {
        begin_instance(s, instance);
        s.state = RunState::Running {
            started_at: started,
        };
        s.container_id = Some(format!("muster://{}/{}", ctx.uid, pid));
        s.started = c.startup_probe.is_none();
        // without probes a running container is ready; init containers never are
        s.ready = !init && !has_probes;
    });
    let (kill_tx, mut kill_rx) = mpsc::channel::<String>(1);
    let probes = (!init).then(|| {
        let ctx = ctx.clone();
        let c = c.clone();
        tokio::spawn(async move { probe_loop(&ctx, &c, started_instant, kill_tx).await })
    });

    let stopped_by_pod;
    let status = tokio::select! {
        status = child.wait() => { stopped_by_pod = false; status.ok() }
        grace = ctx.stop_requested() => {
            stopped_by_pod = true;
            terminate(ctx, c, &mut child, pid, grace).await
        }
        Some(reason) = kill_rx.recv() => {
            stopped_by_pod = false;
            tracing::info!(pod = %ctx.name, container = %c.name, %reason, "restarting container");
            let _ = sink.write(Stream::Stderr, false, reason.as_bytes()).await;
            let grace = c
                .liveness_probe
                .as_ref()
                .and_then(|p| p.termination_grace_period_seconds)
                .map(|s| Duration::from_secs(s.max(0) as u64))
                .unwrap_or_else(|| ctx.termination_grace());
            terminate(ctx, c, &mut child, pid, grace).await
        }
    };
    if let Some(p) = probes {
        p.abort();
    }
    // Output may still sit in the pipes; grandchildren holding them must not block us.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while copiers.join_next().await.is_some() {}
    })
    .await;
    copiers.abort_all();
    let (code, signal) = status.map(process::exit_code).unwrap_or((137, Some(9)));
    ctx.update(init, &c.name, |s| {
        s.ready = false;
        s.state = RunState::Terminated(Terminated {
            exit_code: code,
            signal,
            reason: Terminated::reason_for(code).to_string(),
            message: None,
            started_at: started,
            finished_at: Timestamp::now(),
        });
    });
    if stopped_by_pod {
        Outcome::Stopped
    } else {
        Outcome::Exited {
            code,
            ran_for: started_instant.elapsed(),
        }
    }
}

/// Bookkeeping when instance `n` of a container begins: the previous run becomes `lastState`.
fn begin_instance(s: &mut ContainerRuntime, instance: i32) {
    if instance > 0 && s.restart_count < instance {
        if let RunState::Terminated(t) = &s.state {
            s.last_terminated = Some(t.clone());
        }
        s.restart_count = instance;
    }
}

/// preStop hook, SIGTERM to the process group, the rest of the grace period, SIGKILL.
async fn terminate(
    ctx: &PodContext,
    c: &Container,
    child: &mut tokio::process::Child,
    pid: u32,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = tokio::time::Instant::now() + grace;
    ctx.note(
        "Normal",
        "Killing",
        Some((c, false)),
        format!("Stopping container {}", c.name),
    );
    if !grace.is_zero()
        && let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref())
    {
        let hook_run = run_hook(ctx, c, hook);
        if let Err(e) = tokio::time::timeout_at(deadline, hook_run)
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
        {
            tracing::warn!(pod = %ctx.name, container = %c.name, error = %e, "preStop hook failed");
        }
    }
    if !grace.is_zero() {
        process::signal_group(pid, stop_signal(c));
        // kubelet gives at least 2 s after a preStop hook used up the grace period
        let deadline = deadline.max(
            tokio::time::Instant::now()
                + Duration::from_millis(
                    if c.lifecycle
                        .as_ref()
                        .and_then(|l| l.pre_stop.as_ref())
                        .is_some()
                    {
                        2000
                    } else {
                        0
                    },
                ),
        );
        if let Ok(status) = tokio::time::timeout_at(deadline, child.wait()).await {
            // the main process is gone; its group goes with it
            process::signal_group(pid, Signal::SIGKILL);
            return status.ok();
        }
    }
    process::signal_group(pid, Signal::SIGKILL);
    child.wait().await.ok()
}

fn stop_signal(c: &Container) -> Signal {
    c.lifecycle
        .as_ref()
        .and_then(|l| l.stop_signal.as_deref())
        .and_then(|s| s.parse::<Signal>().ok())
        .unwrap_or(Signal::SIGTERM)
}

async fn run_hook(ctx: &PodContext, c: &Container, hook: &LifecycleHandler) -> Result<(), String> {
    if let Some(sleep) = &hook.sleep {
        tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
        return Ok(());
    }
    let action = if let Some(exec) = &hook.exec {
        ProbeAction::Exec {
            command: exec.command.clone().unwrap_or_default(),
        }
    } else if let Some(http) = &hook.http_get {
        ProbeAction::HttpGet {
            https: http.scheme.as_deref() == Some("HTTPS"),
            host: http.host.clone().filter(|h| !h.is_empty()),
            port: resolve_port(&http.port, c)?,
            path: http.path.clone().unwrap_or_else(|| "/".into()),
            headers: vec![],
        }
    } else if let Some(tcp) = &hook.tcp_socket {
        ProbeAction::TcpSocket {
            host: tcp.host.clone(),
            port: resolve_port(&tcp.port, c)?,
        }
    } else {
        return Err("hook has no handler".into());
    };
    run_action(ctx, c, &action, Duration::from_secs(3600)).await
}

/// Runs probes while the container runs: sets `started`/`ready`, and asks for a restart
/// (through `kill`) when a liveness or startup probe fails.
async fn probe_loop(ctx: &PodContext, c: &Container, started: Instant, kill: mpsc::Sender<String>) {
    let mut trackers = Vec::new();
    for (kind, probe) in [
        (ProbeKind::Startup, &c.startup_probe),
        (ProbeKind::Liveness, &c.liveness_probe),
        (ProbeKind::Readiness, &c.readiness_probe),
    ] {
        let Some(probe) = probe else { continue };
        match probe_spec(probe, c) {
            Ok(spec) => trackers.push(ProbeTracker::new(kind, spec, started)),
            Err(e) => {
                tracing::warn!(pod = %ctx.name, container = %c.name, ?kind, error = %e, "probe ignored")
            }
        }
    }
    let has_startup = trackers.iter().any(|t| t.kind == ProbeKind::Startup);
    let has_readiness = trackers.iter().any(|t| t.kind == ProbeKind::Readiness);
    let mut startup_passed = !has_startup;
    let set = |f: &dyn Fn(&mut ContainerRuntime)| ctx.update(false, &c.name, |s| f(s));
    if startup_passed {
        set(&|s| {
            s.started = true;
            s.ready = !has_readiness;
        });
    }
    loop {
        let next = trackers
            .iter()
            .filter(|t| probes_active(t.kind, has_startup, startup_passed))
            .map(|t| t.next_run())
            .min();
        let Some(next) = next else {
            std::future::pending::<()>().await;
            return;
        };
        tokio::time::sleep_until(next.into()).await;
        let now = Instant::now();
        for t in trackers.iter_mut() {
            if !probes_active(t.kind, has_startup, startup_passed) || !t.is_due(now) {
                continue;
            }
            let outcome = run_action(ctx, c, &t.spec.action, t.spec.timeout).await;
            if let Err(e) = &outcome {
                tracing::debug!(pod = %ctx.name, container = %c.name, kind = ?t.kind, error = %e, "probe failed");
                let which = match t.kind {
                    ProbeKind::Startup => "Startup",
                    ProbeKind::Liveness => "Liveness",
                    ProbeKind::Readiness => "Readiness",
                };
                ctx.note(
                    "Warning",
                    "Unhealthy",
                    Some((c, false)),
                    format!("{which} probe failed: {e}"),
                );
            }
            let changed = t.record(outcome.is_ok(), Instant::now());
            match (t.kind, changed) {
                (ProbeKind::Startup, Some(ProbeResult::Success)) => {
                    startup_passed = true;
                    set(&|s| {
                        s.started = true;
                        s.ready = !has_readiness;
                    });
                }
                (ProbeKind::Readiness, Some(r)) => {
                    let ready = r == ProbeResult::Success;
                    set(&|s| s.ready = ready);
                }
                (ProbeKind::Startup | ProbeKind::Liveness, Some(ProbeResult::Failure)) => {
                    let which = if t.kind == ProbeKind::Startup {
                        "startup"
                    } else {
                        "liveness"
                    };
                    let reason = format!(
                        "Container {} failed {which} probe, will be restarted: {}",
                        c.name,
                        outcome.err().unwrap_or_default()
                    );
                    let _ = kill.send(reason).await;
                    return;
                }
                _ => {}
            }
        }
    }
}

/// Runs a probe or hook action against the pod, within `timeout`.
pub async fn run_action(
    ctx: &PodContext,
    c: &Container,
    action: &ProbeAction,
    timeout: Duration,
) -> Result<(), String> {
    let work = async {
        match action {
            ProbeAction::Exec { command } => {
                let env = ctx.container_env(c)?;
                let spec = ProcessSpec {
                    argv: command.clone(),
                    env,
                    working_dir: c.working_dir.clone().map(PathBuf::from),
                    tty: None,
                    stdin: false,
                };
                let mut child = process::spawn(&ctx.sandbox, spec).map_err(|e| e.to_string())?;
                let pid = child.id().unwrap_or(0);
                let guard = KillGroupOnDrop(pid);
                let mut output = Vec::new();
                if let Some(mut out) = child.stdout.take() {
                    let _ = out.read_to_end(&mut output).await;
                }
                let status = child.wait().await.map_err(|e| e.to_string())?;
                drop(guard);
                let (code, _) = process::exit_code(status);
                if code == 0 {
                    Ok(())
                } else {
                    Err(format!(
                        "command {command:?} exited with {code}: {}",
                        String::from_utf8_lossy(&output).trim()
                    ))
                }
            }
            ProbeAction::TcpSocket { host, port } => {
                let addr = target(ctx, host.as_deref(), *port).await?;
                tokio::net::TcpStream::connect(addr)
                    .await
                    .map(drop)
                    .map_err(|e| format!("dial tcp {addr}: {e}"))
            }
            ProbeAction::HttpGet {
                https,
                host,
                port,
                path,
                headers,
            } => {
                if *https {
                    return Err("HTTPS probes are not supported by this node".into());
                }
                let addr = target(ctx, host.as_deref(), *port).await?;
                http_get(addr, path, headers).await
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {timeout:?}")))
}

struct KillGroupOnDrop(u32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if self.0 != 0 {
            process::signal_group(self.0, Signal::SIGKILL);
        }
    }
}

async fn target(ctx: &PodContext, host: Option<&str>, port: u16) -> Result<SocketAddr, String> {
    let ip = match host {
        None => ctx.pod_ip,
        Some(h) => match h.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => tokio::net::lookup_host((h, port))
                .await
                .map_err(|e| format!("lookup {h}: {e}"))?
                .next()
                .ok_or_else(|| format!("lookup {h}: no address"))?
                .ip(),
        },
    };
    Ok(SocketAddr::new(ip, port))
}

/// A minimal HTTP/1.1 GET as kubelet's prober sends it; 200-399 is success.
pub async fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
) -> Result<(), String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("dial tcp {addr}: {e}"))?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("malformed HTTP response from {addr}"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

/// Everything needed to serve `kubectl logs` and `kubectl exec` for a pod.
pub type PodTable = Arc<parking_lot::RwLock<HashMap<(String, String), Arc<PodContext>>>>;

/// The log file of the container's current (or, with `previous`, last) instance, and whether
/// that instance is still running.
pub fn log_target(
    ctx: &PodContext,
    container: &str,
    previous: bool,
) -> Result<(PathBuf, bool), String> {
    let rt = ctx.runtime.borrow();
    let c = rt
        .containers
        .iter()
        .chain(rt.init_containers.iter())
        .find(|c| c.name == container)
        .ok_or_else(|| format!("container {container} is not valid for pod {}", ctx.name))?;
    // As kubelet: `previous` is the run in `lastState`; while a container waits out its
    // back-off, that run is also what plain `logs` shows.
    let waiting = matches!(c.state, RunState::Waiting { .. });
    let instance = match (previous, waiting, c.last_terminated.is_some()) {
        (true, _, false) => {
            return Err(format!(
                "previous terminated container \"{container}\" in pod \"{}\" not found",
                ctx.name
            ));
        }
        // back-off: lastState is the run that just ended, numbered restart_count
        (_, true, true) => c.restart_count,
        (true, false, true) => c.restart_count - 1,
        (false, true, false) => {
            let reason = match &c.state {
                RunState::Waiting { reason, .. } => reason.as_str(),
                _ => "",
            };
            return Err(format!(
                "container \"{container}\" in pod \"{}\" is waiting to start: {reason}",
                ctx.name
            ));
        }
        (false, false, _) => c.restart_count,
    };
    let running = !previous && c.is_running();
    Ok((
        crate::logs::instance_log_path(&ctx.dir, container, instance),
        running,
    ))
}

/// Pod directory helper for callers that only know the UID.
pub fn pod_dir(settings: &RuntimeSettings, uid: &str) -> PathBuf {
    settings.pods_dir.join(uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Terminated;

    fn ctx(dir: &std::path::Path) -> Arc<PodContext> {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
            "spec": {"containers": [{"name": "c"}]}
        }))
        .unwrap();
        let settings = Arc::new(RuntimeSettings {
            node_name: "n".into(),
            pods_dir: dir.to_path_buf(),
            backoff: BackoffSettings::default(),
            workload_exe: "/bin/false".into(),
            cluster_dns: ClusterDns {
                nameserver: "10.96.0.10".parse().unwrap(),
                domain: "cluster.local".into(),
            },
            host_dns: HostDns::default(),
            host_ip: "127.0.0.1".parse().unwrap(),
            isolated: false,
        });
        let ip = "127.0.0.2".parse().unwrap();
        PodContext::prepare(pod, ip, None, settings, StaticEnvSources::default()).unwrap()
    }

    #[test]
    fn log_target_follows_kubelet() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path());
        let ended = Terminated {
            exit_code: 1,
            signal: None,
            reason: "Error".into(),
            message: None,
            started_at: Timestamp::now(),
            finished_at: Timestamp::now(),
        };
        let running = RunState::Running {
            started_at: Timestamp::now(),
        };
        let backoff = RunState::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: None,
        };
        let creating = RunState::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        };
        // (state, restarts, has lastState, previous?) -> instance or error text
        type Case = (
            RunState,
            i32,
            bool,
            bool,
            Result<&'static str, &'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                creating.clone(),
                0,
                false,
                false,
                Err("is waiting to start: ContainerCreating"),
            ),
            (running.clone(), 0, false, false, Ok("0.log")),
            (
                running.clone(),
                0,
                false,
                true,
                Err("previous terminated container"),
            ),
            (running.clone(), 2, true, false, Ok("2.log")),
            (running.clone(), 2, true, true, Ok("1.log")),
            (backoff.clone(), 2, true, false, Ok("2.log")),
            (backoff.clone(), 2, true, true, Ok("2.log")),
            (
                RunState::Terminated(ended.clone()),
                3,
                true,
                false,
                Ok("3.log"),
            ),
            (
                RunState::Terminated(ended.clone()),
                3,
                true,
                true,
                Ok("2.log"),
            ),
        ];
        for (state, restarts, last, previous, want) in cases {
            ctx.runtime.send_modify(|rt| {
                let c = &mut rt.containers[0];
                c.state = state.clone();
                c.restart_count = restarts;
                c.last_terminated = last.then(|| ended.clone());
            });
            let got = log_target(&ctx, "c", previous);
            match (got, want) {
                (Ok((path, _)), Ok(file)) => assert!(
                    path.ends_with(format!("logs/c/{file}")),
                    "{state:?} {path:?}"
                ),
                (Err(e), Err(text)) => assert!(e.contains(text), "{state:?}: {e}"),
                (got, want) => {
                    panic!("{state:?} {restarts} {previous}: got {got:?}, want {want:?}")
                }
            }
        }
        assert!(
            log_target(&ctx, "nope", false)
                .unwrap_err()
                .contains("is not valid")
        );
    }
}
