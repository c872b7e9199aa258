//! Patches: RFC 6902 JSON patch, RFC 7386 merge patch, strategic merge patch and server-side
//! apply, plus decoding of request bodies (JSON, YAML, Kubernetes protobuf).
//!
//! Everything works on objects in their JSON form (`serde_json::Value`), the way the API server
//! stores them.
//!
//! How the API server uses this module:
//! - request bodies (POST, PUT): [`decode_body`] with the `Content-Type` (JSON, YAML, protobuf);
//! - `PATCH`: [`PatchType::from_content_type`] (`None` → 415); for `Apply`, decode the body
//!   with [`decode_body`] (`application/apply-patch+yaml`) and call [`server_side_apply`] with
//!   the stored object or `None` (then create it: 201); otherwise [`apply_patch`] (raw body) or
//!   [`apply_patch_value`] (parsed body) on the stored object;
//! - every write that is not an apply (create, update, patch) calls [`record_update_manager`]
//!   (or [`record_subresource_manager`] for `/status` and `/scale`) with the request's
//!   `fieldManager` (kubectl's default names: `kubectl-create`, `kubectl-client-side-apply`,
//!   `kubectl-patch`, ...; Kubernetes falls back to the user agent's program name), operation
//!   `Update`, before storing. Applies must not call it: [`server_side_apply`] does its own.

mod managed;
mod strategic;

use serde_json::Value;

use crate::registry::ResourceType;
use crate::status::{ApiError, ApiResult};

pub use managed::{record_subresource_manager, record_update_manager, server_side_apply};

/// The patch formats of `PATCH` requests, named by their `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
    /// `application/apply-patch+yaml`: server-side apply (see [`server_side_apply`]).
    Apply,
}

impl PatchType {
    /// The patch type of a `Content-Type` header (parameters such as `charset` are ignored).
    /// `application/apply-patch+cbor` is not supported and gives `None` (a 415).
    pub fn from_content_type(content_type: &str) -> Option<PatchType> {
        match media_type(content_type).as_str() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            "application/apply-patch+yaml" => Some(PatchType::Apply),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::StrategicMerge => "application/strategic-merge-patch+json",
            PatchType::Apply => "application/apply-patch+yaml",
        }
    }
}

/// `application/json; charset=utf-8` → `application/json`.
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Applies a JSON, merge or strategic merge patch to `current`, giving the patched object.
///
/// Malformed patches are 400 BadRequest; a JSON patch that cannot be applied (a failing `test`,
/// a missing path) is 422, as in Kubernetes. `PatchType::Apply` is not a patch in this sense:
/// call [`server_side_apply`].
pub fn apply_patch(
    rt: &ResourceType,
    patch_type: PatchType,
    current: &Value,
    patch: &[u8],
) -> ApiResult<Value> {
    let what = match patch_type {
        PatchType::Json => "JSON patch",
        PatchType::Merge => "merge patch",
        PatchType::StrategicMerge => "strategic merge patch",
        PatchType::Apply => "apply patch",
    };
    let patch: Value = serde_json::from_slice(patch)
        .map_err(|e| ApiError::bad_request(format!("error decoding {what}: {e}")))?;
    apply_patch_value(rt, patch_type, current, &patch)
}

/// Kubernetes' bound on the operations of one JSON patch.
const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// [`apply_patch`] for a patch already parsed from JSON.
pub fn apply_patch_value(
    rt: &ResourceType,
    patch_type: PatchType,
    current: &Value,
    patch: &Value,
) -> ApiResult<Value> {
    match patch_type {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("error decoding JSON patch: {e}")))?;
            if ops.0.len() > MAX_JSON_PATCH_OPERATIONS {
                return Err(ApiError::request_entity_too_large(format!(
                    "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
                    ops.0.len()
                )));
            }
            let mut doc = current.clone();
            json_patch::patch(&mut doc, &ops).map_err(|e| unprocessable(&e.to_string()))?;
            Ok(doc)
        }
        PatchType::Merge => {
            require_object(patch, "merge patch")?;
            let mut doc = current.clone();
            json_patch::merge(&mut doc, patch);
            Ok(doc)
        }
        PatchType::StrategicMerge => {
            require_object(patch, "strategic merge patch")?;
            strategic::strategic_merge(rt.kind, current, patch)
        }
        PatchType::Apply => Err(ApiError::bad_request(
            "apply patches are handled by server-side apply, not apply_patch",
        )),
    }
}

/// The 422 Kubernetes gives for a patch that cannot be applied: a fixed message, with the
/// reason in a cause (`The request is invalid: the server rejected our request ...`).
pub(crate) fn unprocessable(why: &str) -> ApiError {
    ApiError::new(
        422,
        "Invalid",
        "the server rejected our request due to an error in our request",
    )
    .with_cause("UnexpectedServerResponse", "", why)
}

fn require_object(patch: &Value, what: &str) -> ApiResult<()> {
    if patch.is_object() {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "error decoding {what}: expected a JSON object, got {}",
            json_type(patch)
        )))
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Decodes a request body into an object in its JSON form.
///
/// Accepts `application/json`, `application/yaml` (one document; also
/// `application/apply-patch+yaml`, whose JSON bodies are YAML too) and
/// `application/vnd.kubernetes.protobuf`. Other media types are 415; malformed bodies are 400.
pub fn decode_body(content_type: &str, body: &[u8]) -> ApiResult<Value> {
    let value = match media_type(content_type).as_str() {
        "application/json" => serde_json::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON body: {e}")))?,
        "application/yaml" | "application/apply-patch+yaml" => decode_yaml(body)?,
        "application/vnd.kubernetes.protobuf" => crate::protobuf::decode(body)?,
        _ => return Err(ApiError::unsupported_media_type(content_type)),
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(format!(
            "the request body must be an object, got {}",
            json_type(&value)
        )));
    }
    Ok(value)
}

fn decode_yaml(body: &[u8]) -> ApiResult<Value> {
    use serde::Deserialize;
    let mut docs = serde_yaml::Deserializer::from_slice(body);
    let first = docs
        .next()
        .ok_or_else(|| ApiError::bad_request("error decoding YAML body: empty document"))?;
    let value = Value::deserialize(first)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML body: {e}")))?;
    if docs.next().is_some() {
        return Err(ApiError::bad_request(
            "error decoding YAML body: expected a single document, got several",
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests;
