//! The API server's side of `pods/log` and `pods/exec`: forwards the request to the agent on
//! the pod's node and, for exec, splices the upgraded (WebSocket) connection through.
//!
//! The API server finds the agent at the Node's `InternalIP` and
//! `status.daemonEndpoints.kubeletEndpoint.Port`, and calls [`forward`] with its own bearer
//! token (the one the agent was configured with). The agent serves the API's own paths, so
//! the path is kept as it is: `/api/v1/namespaces/{ns}/pods/{pod}/{log|exec}?<query>`.

use std::net::SocketAddr;

use axum::body::Body;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;

fn status(code: StatusCode, reason: &str, message: String) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code.as_u16()});
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("valid response")
}

/// Forwards a `pods/{log,exec}` request to the node agent at `agent` and returns its answer
/// (streamed for `log?follow=true`; a 101 whose connection is spliced to the agent's for exec).
pub async fn forward(
    agent: Option<SocketAddr>,
    token: &str,
    namespace: &str,
    pod: &str,
    subresource: &str,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let Some(addr) = agent else {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!(
                "the node of pod {namespace}/{pod} does not report an agent endpoint (status.daemonEndpoints) yet"
            ),
        );
    };
    if !matches!(subresource, "log" | "exec") {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("pods/{subresource} is not served by the node agent"),
        );
    }
    let mut path = format!("/api/v1/namespaces/{namespace}/pods/{pod}/{subresource}");
    if let Some(q) = req.uri().query() {
        path.push('?');
        path.push_str(q);
    }
    let stream = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            return status(
                StatusCode::BAD_GATEWAY,
                "ServiceUnavailable",
                format!("cannot reach the node agent at {addr}: {e}"),
            );
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(pair) => pair,
        Err(e) => {
            return status(
                StatusCode::BAD_GATEWAY,
                "ServiceUnavailable",
                format!("node agent at {addr}: {e}"),
            );
        }
    };
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });

    let upgrading = req.headers().contains_key(header::UPGRADE);
    let client_side = upgrading.then(|| hyper::upgrade::on(&mut req));
    let mut out = Request::builder().method(req.method().clone()).uri(path);
    for (name, value) in req.headers() {
        // hop-by-hop credentials are replaced by the API server's own
        if name == header::AUTHORIZATION || name == header::HOST {
            continue;
        }
        out = out.header(name, value);
    }
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"));
    let out = out
        .header(header::HOST, addr.to_string())
        .header(
            header::AUTHORIZATION,
            bearer.unwrap_or(HeaderValue::from_static("")),
        )
        .body(if upgrading {
            Body::empty()
        } else {
            Body::new(req.into_body())
        });
    let out = match out {
        Ok(r) => r,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()),
    };
    let mut resp = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => {
            return status(
                StatusCode::BAD_GATEWAY,
                "ServiceUnavailable",
                format!("node agent at {addr}: {e}"),
            );
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_side) = client_side
    {
        let agent_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (Ok(client), Ok(agent)) = tokio::join!(client_side, agent_side) else {
                return;
            };
            let _ =
                tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(agent))
                    .await;
        });
        let mut answer = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        for (name, value) in resp.headers() {
            answer = answer.header(name, value);
        }
        return answer.body(Body::empty()).expect("valid response");
    }
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, Body::new(body))
}
