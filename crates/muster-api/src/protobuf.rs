//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) decoded to the
//! JSON form the API server stores.
//!
//! A body is the magic `k8s\0`, then a `runtime.Unknown` envelope (`typeMeta`, `raw`,
//! `contentEncoding`, `contentType`) whose `raw` is the typed message. The typed messages are
//! decoded with the `k8s-pb` prost types and turned into JSON by [`ToJson`], field by field,
//! omitting unset fields as Kubernetes' JSON encoding does.

mod convert;
mod messages;

use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::Value;

use crate::status::{ApiError, ApiResult};

pub use convert::ToJson;

/// The 4-byte prefix of every Kubernetes protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// Decodes a protobuf request body into an object carrying `apiVersion` and `kind`.
pub fn decode(body: &[u8]) -> ApiResult<Value> {
    let envelope = body.strip_prefix(MAGIC).ok_or_else(|| {
        ApiError::bad_request(
            "invalid protobuf body: missing the Kubernetes magic prefix \"k8s\\x00\"",
        )
    })?;
    let unknown = Unknown::decode(envelope)
        .map_err(|e| ApiError::bad_request(format!("invalid protobuf envelope: {e}")))?;
    if let Some(encoding) = unknown
        .content_encoding
        .as_deref()
        .filter(|e| !e.is_empty())
    {
        return Err(ApiError::bad_request(format!(
            "unsupported protobuf content encoding {encoding:?}"
        )));
    }
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    // The envelope may say how `raw` is encoded; Kubernetes clients leave it empty (protobuf).
    let mut object = match unknown.content_type.as_deref().unwrap_or_default() {
        "" | "application/vnd.kubernetes.protobuf" => {
            convert::decode_kind(&api_version, &kind, &raw)?
        }
        "application/json" => serde_json::from_slice(&raw).map_err(|e| {
            ApiError::bad_request(format!("invalid JSON inside the protobuf envelope: {e}"))
        })?,
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("unsupported content type {other:?} inside the protobuf envelope"),
            ));
        }
    };
    if let Value::Object(map) = &mut object {
        // apiVersion and kind come first, as in Kubernetes' JSON.
        let mut out = serde_json::Map::new();
        out.insert("kind".into(), kind.into());
        out.insert("apiVersion".into(), api_version.into());
        out.extend(std::mem::take(map));
        *map = out;
    }
    Ok(object)
}

#[cfg(test)]
mod tests;
