//! The operations endpoint: `/health`, `/ready`, `/metrics`, `/explain?name=&type=`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::explain::{explain, parse_qtype};
use crate::server::Shared;

#[derive(Clone)]
struct Ops {
    shared: Arc<Shared>,
    registry: Arc<Registry>,
}

#[derive(serde::Deserialize)]
struct ExplainParams {
    name: Option<String>,
    #[serde(rename = "type")]
    qtype: Option<String>,
}

pub fn router(shared: Arc<Shared>) -> Router {
    let registry = Arc::new(shared.metrics.registry());
    Router::new()
        .route("/health", get(|| async { "OK" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/explain", get(explain_handler))
        .with_state(Ops { shared, registry })
}

async fn ready(State(ops): State<Ops>) -> Response {
    if ops.shared.zone.load().is_synced() {
        (StatusCode::OK, "OK").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first full list of Namespaces, Services and EndpointSlices",
        )
            .into_response()
    }
}

async fn metrics(State(ops): State<Ops>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &ops.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn explain_handler(State(ops): State<Ops>, Query(p): Query<ExplainParams>) -> Response {
    let Some(name) = p.name.filter(|n| !n.is_empty()) else {
        return (StatusCode::BAD_REQUEST, "missing ?name=<fqdn>").into_response();
    };
    let qtype_text = p.qtype.unwrap_or_else(|| "A".into());
    let Some(qtype) = parse_qtype(&qtype_text) else {
        return (
            StatusCode::BAD_REQUEST,
            format!("unknown type {qtype_text:?}"),
        )
            .into_response();
    };
    let zone = ops.shared.zone.load_full();
    axum::Json(explain(&zone, &name, qtype)).into_response()
}

/// Serves the operations endpoint on `addr` until the task is dropped; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    shared: Arc<Shared>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the DNS metrics address {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let app = router(shared);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "DNS metrics server stopped");
        }
    });
    Ok((bound, task))
}
