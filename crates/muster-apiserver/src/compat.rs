//! The API-semantics calls the server makes, gathered in one place so the handlers read as
//! HTTP plumbing. Everything here delegates to `muster_api` (strategy, selectors, tables,
//! patches, protobuf, events); the only logic of its own is choosing which call applies.

use muster_api::ApiResult;
use muster_api::registry::ResourceType;
use serde_json::Value;

pub use muster_api::patch::PatchType;
pub use muster_api::selector::{FieldSelector, LabelSelector};
pub use muster_api::table::IncludeObject;

pub fn parse_label_selector(s: &str) -> ApiResult<LabelSelector> {
    muster_api::selector::parse_label_selector(s)
}

pub fn parse_field_selector(rt: &ResourceType, s: &str) -> ApiResult<FieldSelector> {
    let sel = muster_api::selector::parse_field_selector(s)?;
    sel.check_supported(rt)?;
    Ok(sel)
}

/// The typed round trip of a new object; one serves both [`unknown_fields_of`] and
/// [`prepare_create_decoded`].
pub fn decode_known(rt: &ResourceType, obj: &Value) -> ApiResult<Value> {
    muster_api::strategy::decode_known(rt, obj)
}

pub fn unknown_fields_of(obj: &Value, known: &Value) -> Vec<String> {
    muster_api::strategy::unknown_fields_of(obj, known)
}

pub fn prepare_create_decoded(rt: &ResourceType, obj: &mut Value, known: Value) -> ApiResult<()> {
    muster_api::strategy::prepare_create_decoded(rt, obj, known)
}

pub fn prepare_update(rt: &ResourceType, old: &Value, new: &mut Value) -> ApiResult<()> {
    muster_api::strategy::prepare_update(rt, old, new)
}

pub fn prepare_status_update(rt: &ResourceType, old: &Value, new: &mut Value) -> ApiResult<()> {
    muster_api::strategy::prepare_status_update(rt, old, new)
}

pub fn unknown_fields(rt: &ResourceType, obj: &Value) -> Vec<String> {
    muster_api::strategy::unknown_fields(rt, obj)
}

pub fn strict_decoding_error(fields: &[String]) -> muster_api::ApiError {
    muster_api::strategy::strict_decoding_error(fields)
}

pub fn unknown_field_warnings(fields: &[String]) -> Vec<String> {
    muster_api::strategy::unknown_field_warnings(fields)
}

/// A JSON, merge or strategic merge patch (apply patches go through [`server_side_apply`]).
pub fn apply_patch(
    kind: PatchType,
    rt: &ResourceType,
    old: &Value,
    patch: &Value,
) -> ApiResult<Value> {
    muster_api::patch::apply_patch_value(rt, kind, old, patch)
}

pub fn server_side_apply(
    rt: &ResourceType,
    current: Option<&Value>,
    applied: &Value,
    field_manager: &str,
    force: bool,
    now: &str,
) -> ApiResult<Value> {
    muster_api::patch::server_side_apply(rt, current, applied, field_manager, force, now)
}

pub fn record_update_manager(
    rt: &ResourceType,
    old: Option<&Value>,
    new: &mut Value,
    field_manager: &str,
    now: &str,
) {
    muster_api::patch::record_update_manager(rt, old, new, field_manager, "Update", now)
}

/// Decodes an object body (JSON, YAML, Kubernetes protobuf) by its Content-Type.
pub fn decode_body(content_type: &str, body: &[u8]) -> ApiResult<Value> {
    muster_api::patch::decode_body(content_type, body)
}

/// A Table of objects the caller gives up: their metadata moves into the rows.
pub fn table_owned(
    rt: &ResourceType,
    items: Vec<Value>,
    resource_version: &str,
    continue_token: Option<&str>,
    include: IncludeObject,
) -> Value {
    muster_api::table::table_owned(
        rt,
        items,
        chrono::Utc::now(),
        resource_version,
        continue_token,
        include,
    )
}

/// One Table row of an object the caller gives up, at `now`.
pub fn table_row_owned(
    rt: &ResourceType,
    obj: Value,
    now: chrono::DateTime<chrono::Utc>,
    include: IncludeObject,
) -> Value {
    muster_api::table::row_owned(rt, obj, now, include)
}

pub fn event_to_events_v1(core: &Value) -> Value {
    muster_api::events::from_core(core)
}

pub fn event_from_events_v1(ev: &Value) -> Value {
    muster_api::events::to_core(ev)
}
