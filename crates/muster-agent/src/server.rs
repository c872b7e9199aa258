//! The agent's HTTP server: `kubectl logs` and `kubectl exec`, proxied by the API server.
//!
//! Plain HTTP; every request except `/healthz` needs `Authorization: Bearer <token>` (the token
//! given in [`ServerState`]; `muster up` uses the API server's own token). Paths, both
//! kubelet's and the API's own (so a proxy may forward the API path unchanged):
//!
//! | path | query |
//! |---|---|
//! | `GET /containerLogs/{ns}/{pod}/{container}` | `follow`, `previous`, `tailLines`, `sinceSeconds`, `sinceTime`, `timestamps`, `limitBytes` |
//! | `GET /api/v1/namespaces/{ns}/pods/{pod}/log` | the same, plus `container` (default: the first) |
//! | `GET /exec/{ns}/{pod}/{container}` | `command` (repeated), `input`/`stdin`, `output`/`stdout`, `error`/`stderr`, `tty` |
//! | `GET /api/v1/namespaces/{ns}/pods/{pod}/exec` | the same, plus `container` |
//!
//! exec is a WebSocket speaking `v5.channel.k8s.io` (or `v4.channel.k8s.io`): binary frames
//! whose first byte is the channel (0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize, 255
//! close a stream); the exit status goes on channel 3 as a `metav1.Status`, then the socket
//! is closed with 1000.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::logs::{self, LogOptions};
use crate::pod::{PodContext, PodTable, log_target};
use crate::process::{self, ProcessSpec};

pub const EXEC_PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

#[derive(Clone)]
pub struct ServerState {
    pub token: String,
    pub pods: PodTable,
}

pub fn router(state: ServerState) -> Router {
    let protected = Router::new()
        .route("/containerLogs/{ns}/{pod}/{container}", get(kubelet_logs))
        .route("/api/v1/namespaces/{ns}/pods/{pod}/log", get(api_logs))
        .route(
            "/exec/{ns}/{pod}/{container}",
            get(kubelet_exec).post(kubelet_exec),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{pod}/exec",
            get(api_exec).post(api_exec),
        )
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(protected)
}

/// Serves until the listener fails or the future is dropped.
pub async fn serve(listener: tokio::net::TcpListener, state: ServerState) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}

async fn require_token(State(state): State<ServerState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), state.token.as_bytes()) {
        return status_error(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn status_error(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn bad_request(message: &str) -> Response {
    status_error(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// An error answer, turned into a `Status` response at the handler's edge.
struct HttpError {
    code: StatusCode,
    reason: &'static str,
    message: String,
}

impl HttpError {
    fn bad_request(message: String) -> Self {
        HttpError {
            code: StatusCode::BAD_REQUEST,
            reason: "BadRequest",
            message,
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        status_error(self.code, self.reason, &self.message)
    }
}

/// Decodes a query string into (key, value) pairs, keeping repeated keys in order.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }
    fn flag(&self, keys: &[&str]) -> bool {
        keys.iter()
            .any(|k| matches!(self.get(k), Some("true" | "1" | "True")))
    }
    fn number(&self, key: &str) -> Result<Option<i64>, HttpError> {
        self.get(key)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| HttpError::bad_request(format!("invalid {key}: {v:?}")))
            })
            .transpose()
    }
}

fn find_pod(state: &ServerState, ns: &str, pod: &str) -> Result<Arc<PodContext>, HttpError> {
    state
        .pods
        .read()
        .get(&(ns.to_string(), pod.to_string()))
        .cloned()
        .ok_or_else(|| HttpError {
            code: StatusCode::NOT_FOUND,
            reason: "NotFound",
            message: format!("pod {ns}/{pod} is not running on this node"),
        })
}

fn default_container(ctx: &PodContext, query: &Query) -> String {
    if let Some(c) = query.get("container").filter(|c| !c.is_empty()) {
        return c.to_string();
    }
    let annotated = ctx
        .pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubectl.kubernetes.io/default-container").cloned());
    annotated.unwrap_or_else(|| {
        ctx.pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .map(|c| c.name.clone())
            .unwrap_or_default()
    })
}

async fn kubelet_logs(
    State(state): State<ServerState>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = Query(parse_query(query.as_deref().unwrap_or("")));
    logs_response(&state, &ns, &pod, Some(container), query).await
}

async fn api_logs(
    State(state): State<ServerState>,
    Path((ns, pod)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = Query(parse_query(query.as_deref().unwrap_or("")));
    logs_response(&state, &ns, &pod, None, query).await
}

fn log_options(query: &Query) -> Result<LogOptions, HttpError> {
    let since = match (query.number("sinceSeconds")?, query.get("sinceTime")) {
        (Some(secs), _) => {
            let now = Timestamp::now();
            Some(now - Duration::from_secs(secs.max(0) as u64))
        }
        (None, Some(t)) => Some(
            t.parse::<Timestamp>()
                .map_err(|_| HttpError::bad_request(format!("invalid sinceTime: {t:?}")))?,
        ),
        (None, None) => None,
    };
    Ok(LogOptions {
        follow: query.flag(&["follow"]),
        previous: query.flag(&["previous"]),
        timestamps: query.flag(&["timestamps"]),
        tail_lines: query.number("tailLines")?.map(|n| n.max(0) as u64),
        since,
        limit_bytes: query.number("limitBytes")?.map(|n| n.max(0) as u64),
    })
}

async fn logs_response(
    state: &ServerState,
    ns: &str,
    pod: &str,
    container: Option<String>,
    query: Query,
) -> Response {
    let ctx = match find_pod(state, ns, pod) {
        Ok(ctx) => ctx,
        Err(r) => return r.into_response(),
    };
    let container = container.unwrap_or_else(|| default_container(&ctx, &query));
    let opts = match log_options(&query) {
        Ok(o) => o,
        Err(r) => return r.into_response(),
    };
    let (path, running) = match log_target(&ctx, &container, opts.previous) {
        Ok(t) => t,
        Err(message) => return bad_request(&message),
    };
    let content = tokio::fs::read(&path).await.unwrap_or_default();
    let first = logs::render(&content, &opts);
    let text = [(header::CONTENT_TYPE, "text/plain")];
    if !opts.follow || !running {
        return (StatusCode::OK, text, first).into_response();
    }
    // Follow: send what is there, then whole new lines as they arrive, until this container
    // instance has ended and its file is drained.
    let instance_id = {
        let rt = ctx.runtime.borrow();
        rt.containers
            .iter()
            .chain(rt.init_containers.iter())
            .find(|c| c.name == container)
            .and_then(|c| c.container_id.clone())
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let mut offset = content
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p + 1);
    let leftover_partial = offset < content.len();
    let opts_more = opts.clone();
    tokio::spawn(async move {
        // records after the last full line were not yet complete: re-read them later
        if leftover_partial {
            let trimmed = logs::render(&content[..offset], &opts);
            let _ = tx.send(Ok(Bytes::from(trimmed))).await;
        } else {
            let _ = tx.send(Ok(Bytes::from(first))).await;
        }
        loop {
            let ended = {
                let rt = ctx.runtime.borrow();
                let c = rt
                    .containers
                    .iter()
                    .chain(rt.init_containers.iter())
                    .find(|c| c.name == container);
                !c.is_some_and(|c| c.is_running() && c.container_id == instance_id)
            };
            let data = tokio::fs::read(&path).await.unwrap_or_default();
            if data.len() > offset {
                let end = if ended {
                    data.len()
                } else {
                    data.iter()
                        .rposition(|b| *b == b'\n')
                        .map_or(offset, |p| p + 1)
                        .max(offset)
                };
                if end > offset {
                    let out = logs::render_more(&data[offset..end], &opts_more);
                    offset = end;
                    if !out.is_empty() && tx.send(Ok(Bytes::from(out))).await.is_err() {
                        return;
                    }
                }
            }
            if ended && data.len() <= offset {
                return;
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let stream = tokio_stream_from(rx);
    (StatusCode::OK, text, Body::from_stream(stream)).into_response()
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn kubelet_exec(
    State(state): State<ServerState>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let query = Query(parse_query(query.as_deref().unwrap_or("")));
    exec_response(state, &ns, &pod, Some(container), query, headers, ws)
}

async fn api_exec(
    State(state): State<ServerState>,
    Path((ns, pod)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let query = Query(parse_query(query.as_deref().unwrap_or("")));
    exec_response(state, &ns, &pod, None, query, headers, ws)
}

struct ExecRequest {
    ctx: Arc<PodContext>,
    container: String,
    command: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

fn exec_response(
    state: ServerState,
    ns: &str,
    pod: &str,
    container: Option<String>,
    query: Query,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect();
    let Some(protocol) = EXEC_PROTOCOLS
        .iter()
        .find(|p| offered.iter().any(|o| o == *p))
    else {
        return bad_request(
            "exec needs a WebSocket offering v5.channel.k8s.io or v4.channel.k8s.io",
        );
    };
    let ctx = match find_pod(&state, ns, pod) {
        Ok(ctx) => ctx,
        Err(r) => return r.into_response(),
    };
    let container = container.unwrap_or_else(|| default_container(&ctx, &query));
    let command = query.all("command");
    if command.is_empty() {
        return bad_request("you must specify at least 1 command");
    }
    let running = ctx
        .runtime
        .borrow()
        .containers
        .iter()
        .any(|c| c.name == container && c.is_running());
    if !running {
        return bad_request(&format!(
            "container {container} is not running in pod {pod}"
        ));
    }
    let tty = query.flag(&["tty"]);
    let request = ExecRequest {
        ctx,
        container,
        command,
        stdin: query.flag(&["input", "stdin"]),
        stdout: query.flag(&["output", "stdout"]),
        // with a tty, stderr is the terminal too
        stderr: query.flag(&["error", "stderr"]) && !tty,
        tty,
    };
    ws.protocols([*protocol])
        .on_upgrade(move |socket| exec_session(socket, request))
}

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(Bytes::from(v))
}

/// The channel-3 status kubectl turns into its exit code.
pub fn exit_status_json(code: i32) -> serde_json::Value {
    if code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({
            "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": format!("command terminated with non-zero exit code: error executing command [...], exit code {code}"),
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        })
    }
}

fn internal_error_json(message: &str) -> serde_json::Value {
    json!({"metadata": {}, "status": "Failure", "reason": "InternalError", "message": message,
           "details": {"causes": [{"message": message}]}})
}

async fn exec_session(socket: WebSocket, req: ExecRequest) {
    let (mut sink, mut incoming) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            let closing = matches!(msg, Message::Close(_));
            if sink.send(msg).await.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let outcome = run_exec(&req, &out_tx, &mut incoming).await;
    let status = match outcome {
        Ok(code) => exit_status_json(code),
        Err(message) => {
            if req.stderr || req.tty {
                let ch = if req.tty { STDOUT } else { STDERR };
                let _ = out_tx
                    .send(frame(ch, format!("{message}\n").as_bytes()))
                    .await;
            }
            internal_error_json(&message)
        }
    };
    let _ = out_tx
        .send(frame(STATUS, status.to_string().as_bytes()))
        .await;
    let _ = out_tx
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: "".into(),
        })))
        .await;
    drop(out_tx);
    let _ = writer.await;
}

/// Runs the exec'd process, pumping streams; returns its exit code.
async fn run_exec(
    req: &ExecRequest,
    out: &mpsc::Sender<Message>,
    incoming: &mut futures::stream::SplitStream<WebSocket>,
) -> Result<i32, String> {
    let ctx = &req.ctx;
    let container = ctx
        .container(&req.container)
        .ok_or_else(|| format!("container {} not found", req.container))?;
    let mut env = ctx.container_env(container)?;
    if req.tty {
        env.push(("TERM".into(), "xterm".into()));
    }
    let (master, replica) = if req.tty {
        let pty = nix::pty::openpty(None, None).map_err(|e| format!("openpty: {e}"))?;
        (Some(pty.master), Some(pty.slave))
    } else {
        (None, None)
    };
    let spec = ProcessSpec {
        argv: req.command.clone(),
        env,
        working_dir: container.working_dir.clone().map(Into::into),
        tty: replica,
        stdin: req.stdin,
    };
    let mut child = match process::spawn(&ctx.sandbox, spec) {
        Ok(c) => c,
        Err(process::SpawnError::NotFound(p)) => {
            // as a shell would: the message on stderr, exit code 127
            let message = format!("exec: \"{p}\": executable file not found in $PATH\n");
            let channel = if req.tty { STDOUT } else { STDERR };
            let _ = out.send(frame(channel, message.as_bytes())).await;
            return Ok(127);
        }
        Err(e) => return Err(e.to_string()),
    };
    let pid = child.id().unwrap_or(0);
    let mut pumps = tokio::task::JoinSet::new();
    let mut stdin_writer: Option<Box<dyn tokio::io::AsyncWrite + Unpin + Send>> = None;
    let mut master_fd: Option<OwnedFd> = None;
    if let Some(master) = master {
        let write_half = master.try_clone().map_err(|e| e.to_string())?;
        master_fd = Some(master.try_clone().map_err(|e| e.to_string())?);
        let reader = tokio::fs::File::from_std(std::fs::File::from(master));
        pumps.spawn(pump(reader, STDOUT, out.clone(), req.stdout));
        if req.stdin {
            stdin_writer = Some(Box::new(tokio::fs::File::from_std(std::fs::File::from(
                write_half,
            ))));
        }
    } else {
        if let Some(o) = child.stdout.take() {
            pumps.spawn(pump(o, STDOUT, out.clone(), req.stdout));
        }
        if let Some(e) = child.stderr.take() {
            pumps.spawn(pump(e, STDERR, out.clone(), req.stderr));
        }
        if let Some(i) = child.stdin.take() {
            stdin_writer = Some(Box::new(i));
        }
    }
    let exit = loop {
        tokio::select! {
            status = child.wait() => break status.map_err(|e| e.to_string())?,
            msg = incoming.next() => match msg {
                Some(Ok(Message::Binary(data))) if !data.is_empty() => match data[0] {
                    STDIN => {
                        if let Some(w) = stdin_writer.as_mut()
                            && (w.write_all(&data[1..]).await.is_err() || w.flush().await.is_err())
                        {
                            stdin_writer = None;
                        }
                    }
                    RESIZE => {
                        if let Some(fd) = &master_fd {
                            resize(fd, &data[1..]);
                        }
                    }
                    CLOSE if data.get(1) == Some(&STDIN) => {
                        if let Some(mut w) = stdin_writer.take() {
                            let _ = w.shutdown().await;
                        }
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // the client went away: stop what it started
                    process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                    let status = child.wait().await.map_err(|e| e.to_string())?;
                    break status;
                }
                Some(Ok(_)) => {}
            },
        }
    };
    drop(stdin_writer);
    drop(master_fd);
    // The output pipes close when the process (and whatever it left behind) is gone.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while pumps.join_next().await.is_some() {}
    })
    .await;
    pumps.abort_all();
    Ok(process::exit_code(exit).0)
}

async fn pump(
    mut reader: impl tokio::io::AsyncRead + Unpin,
    channel: u8,
    out: mpsc::Sender<Message>,
    forward: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            // a pty reports EIO once the terminal's other side is closed
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if forward && out.send(frame(channel, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn resize(master: &OwnedFd, payload: &[u8]) {
    let Ok(size) = serde_json::from_slice::<HashMap<String, u16>>(payload) else {
        return;
    };
    let ws = libc::winsize {
        ws_row: size.get("Height").copied().unwrap_or(0),
        ws_col: size.get("Width").copied().unwrap_or(0),
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize struct from a valid pointer.
    unsafe {
        libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_table() {
        let q = parse_query("command=sh&command=-c&command=echo+a%20b%3D&tty=true&x=%zz&flag");
        let want: Vec<(String, String)> = [
            ("command", "sh"),
            ("command", "-c"),
            ("command", "echo a b="),
            ("tty", "true"),
            ("x", "%zz"),
            ("flag", ""),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(q, want);
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }

    #[test]
    fn exit_status_frames() {
        assert_eq!(
            exit_status_json(0),
            json!({"metadata": {}, "status": "Success"})
        );
        let failed = exit_status_json(3);
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(
            failed["details"]["causes"][0],
            json!({"reason": "ExitCode", "message": "3"})
        );
    }
}
