//! The API-semantics calls the server makes, in one place.
//!
//! TEMPORARY (for the "api" and "patch" engineers to replace): while `muster_api::{strategy,
//! selector, table, patch, protobuf, events}` are being written, this module carries minimal,
//! correct-as-far-as-they-go versions so the server runs end to end. Each function keeps the
//! signature the handlers need; swapping in the real implementation is a one-line change here.

use muster_api::registry::ResourceType;
use muster_api::{ApiError, ApiResult};
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------------
// Selectors

#[derive(Debug, Clone, PartialEq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector`; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<LabelReq>);

/// Splits on commas that are not inside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn check_label_key(key: &str, selector: &str) -> ApiResult<String> {
    let ok = !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(key.to_string())
    } else {
        Err(ApiError::bad_request(format!(
            "unable to parse requirement: invalid label key {key:?} in selector {selector:?}"
        )))
    }
}

fn parse_set(rest: &str, selector: &str) -> ApiResult<Vec<String>> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unable to parse requirement: expected a parenthesised set in {selector:?}"
            ))
        })?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

pub fn parse_label_selector(s: &str) -> ApiResult<LabelSelector> {
    let mut reqs = Vec::new();
    for term in split_terms(s) {
        let req = if let Some(key) = term.strip_prefix('!') {
            LabelReq::NotExists(check_label_key(key.trim(), s)?)
        } else if let Some((k, v)) = term.split_once("!=") {
            LabelReq::NotEq(check_label_key(k.trim(), s)?, v.trim().to_string())
        } else if let Some((k, v)) = term.split_once("==") {
            LabelReq::Eq(check_label_key(k.trim(), s)?, v.trim().to_string())
        } else if let Some((k, v)) = term.split_once('=') {
            LabelReq::Eq(check_label_key(k.trim(), s)?, v.trim().to_string())
        } else if let Some((k, rest)) = term.split_once(" notin ") {
            LabelReq::NotIn(check_label_key(k.trim(), s)?, parse_set(rest, s)?)
        } else if let Some((k, rest)) = term.split_once(" in ") {
            LabelReq::In(check_label_key(k.trim(), s)?, parse_set(rest, s)?)
        } else {
            LabelReq::Exists(check_label_key(term, s)?)
        };
        reqs.push(req);
    }
    Ok(LabelSelector(reqs))
}

impl LabelSelector {
    /// Matches the object's `metadata.labels`.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A parsed `fieldSelector`: `path=value`, `path==value`, `path!=value` terms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

pub fn parse_field_selector(s: &str) -> ApiResult<FieldSelector> {
    let mut terms = Vec::new();
    for term in split_terms(s) {
        let (path, equal, value) = if let Some((k, v)) = term.split_once("!=") {
            (k, false, v)
        } else if let Some((k, v)) = term.split_once("==") {
            (k, true, v)
        } else if let Some((k, v)) = term.split_once('=') {
            (k, true, v)
        } else {
            return Err(ApiError::bad_request(format!(
                "invalid field selector: {term:?}: expected an operator"
            )));
        };
        terms.push((path.trim().to_string(), equal, value.trim().to_string()));
    }
    Ok(FieldSelector(terms))
}

/// The string value of a dotted field path, as field selectors compare it.
pub fn field_value(obj: &Value, path: &str) -> Option<String> {
    let mut cur = obj;
    for part in path.split('.') {
        cur = cur.get(part)?;
    }
    match cur {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

impl FieldSelector {
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, equal, value)| {
            let actual = field_value(obj, path).unwrap_or_default();
            (actual == *value) == *equal
        })
    }

    /// The exact `metadata.name` this selector requires, if any (lets a watch narrow its key).
    pub fn required_name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|(p, eq, _)| p == "metadata.name" && *eq)
            .map(|(_, _, v)| v.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Strategy

pub fn prepare_create(_rt: &ResourceType, _obj: &mut Value) -> ApiResult<()> {
    Ok(())
}

fn has_status_subresource(rt: &ResourceType) -> bool {
    rt.subresource("status").is_some()
}

pub fn prepare_update(rt: &ResourceType, old: &Value, new: &mut Value) -> ApiResult<()> {
    if has_status_subresource(rt) {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    let old_gen = old.pointer("/metadata/generation").and_then(Value::as_i64);
    if let Some(g) = old_gen {
        let bumped = if old.get("spec") != new.get("spec") {
            g + 1
        } else {
            g
        };
        new["metadata"]["generation"] = json!(bumped);
    }
    Ok(())
}

pub fn prepare_status_update(_rt: &ResourceType, old: &Value, new: &mut Value) -> ApiResult<()> {
    let status = new.get("status").cloned();
    let mut out = old.clone();
    match status {
        Some(s) => out["status"] = s,
        None => {
            if let Some(o) = out.as_object_mut() {
                o.remove("status");
            }
        }
    }
    // Labels and annotations may change through status too (Kubernetes allows it).
    *new = out;
    Ok(())
}

pub fn unknown_fields(_rt: &ResourceType, _obj: &Value) -> Vec<String> {
    Vec::new()
}

// ---------------------------------------------------------------------------------------------
// Patches

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    StrategicMerge,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        match ct {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            "application/apply-patch+yaml" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

/// Applies `patch` (already decoded from JSON or YAML) to `old`.
pub fn apply_patch(
    kind: PatchType,
    _rt: &ResourceType,
    old: &Value,
    patch: &Value,
) -> ApiResult<Value> {
    let mut doc = old.clone();
    match kind {
        PatchType::Json => {
            let p: json_patch_ops::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch_ops::apply(&mut doc, &p).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
        }
        PatchType::Merge => merge(&mut doc, patch),
        PatchType::StrategicMerge => strategic_merge(&mut doc, patch),
        PatchType::Apply => strategic_merge(&mut doc, patch),
    }
    Ok(doc)
}

/// RFC 7386 JSON merge patch.
fn merge(doc: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !doc.is_object() {
                *doc = Value::Object(Map::new());
            }
            let d = doc.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    d.remove(k);
                } else {
                    merge(d.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *doc = other.clone(),
    }
}

/// The merge key of a list field in Kubernetes' strategic merge patch, by field name.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => "name",
        "ports" => "containerPort",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        _ => return None,
    })
}

/// A reduced strategic merge patch: lists with a known merge key merge by that key (with
/// `$patch: delete` elements), `finalizers` merge as a set, directives are honoured or
/// dropped, never stored.
fn strategic_merge(doc: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *doc = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = patch.clone();
        strip_directives(&mut replaced);
        *doc = replaced;
        return;
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        if let Some(d) = doc.as_object_mut() {
            d.retain(|k, _| keep.contains(&k.as_str()) || p.contains_key(k));
        }
    }
    for (k, v) in p {
        if k.starts_with('$') || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(del)) = (doc.get_mut(field), v) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        let d = doc.as_object_mut().expect("object");
        if v.is_null() {
            d.remove(k);
            continue;
        }
        match (v, merge_key(k)) {
            (Value::Array(items), Some(key)) if d.get(k).is_some_and(Value::is_array) => {
                let target = d.get_mut(k).and_then(Value::as_array_mut).expect("array");
                for item in items {
                    let id = item.get(key).cloned();
                    let pos = id
                        .as_ref()
                        .and_then(|id| target.iter().position(|t| t.get(key) == Some(id)));
                    let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                    match (pos, delete) {
                        (Some(i), true) => {
                            target.remove(i);
                        }
                        (None, true) => {}
                        (Some(i), false) => strategic_merge(&mut target[i], item),
                        (None, false) => {
                            let mut fresh = item.clone();
                            strip_directives(&mut fresh);
                            target.push(fresh);
                        }
                    }
                }
            }
            (Value::Array(items), None) if k == "finalizers" => {
                let target = d.entry(k.clone()).or_insert_with(|| json!([]));
                if let Value::Array(t) = target {
                    for item in items {
                        if !t.contains(item) {
                            t.push(item.clone());
                        }
                    }
                }
            }
            (Value::Object(_), _) => strategic_merge(d.entry(k.clone()).or_insert(Value::Null), v),
            _ => {
                let mut fresh = v.clone();
                strip_directives(&mut fresh);
                d.insert(k.clone(), fresh);
            }
        }
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// RFC 6902 JSON patch, on `serde_json::Value`.
mod json_patch_ops {
    pub use json_patch::Patch;

    pub fn apply(doc: &mut serde_json::Value, p: &Patch) -> Result<(), json_patch::PatchError> {
        json_patch::patch(doc, p)
    }
}

// ---------------------------------------------------------------------------------------------
// Protobuf bodies

pub fn decode_protobuf(_rt: &ResourceType, _body: &[u8]) -> ApiResult<Value> {
    Err(ApiError::unsupported_media_type(
        "application/vnd.kubernetes.protobuf",
    ))
}

// ---------------------------------------------------------------------------------------------
// Tables

pub fn column_definitions(_rt: &ResourceType) -> Vec<Value> {
    vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
        json!({"name": "Age", "type": "string", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0}),
    ]
}

pub fn row_cells(
    _rt: &ResourceType,
    obj: &Value,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<Value> {
    let name = obj.pointer("/metadata/name").cloned().unwrap_or(json!(""));
    let age = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| human_duration(now.signed_duration_since(t)))
        .unwrap_or_else(|| "<unknown>".to_string());
    vec![name, json!(age)]
}

/// Kubernetes' `duration.HumanDuration`.
pub fn human_duration(d: chrono::TimeDelta) -> String {
    let secs = d.num_seconds();
    if secs < 0 {
        return "<invalid>".into();
    }
    let (m, h) = (secs / 60, secs / 3600);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        if secs % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", secs % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{}d", h / 24)
        } else {
            format!("{}d{}h", h / 24, h % 24)
        }
    } else if h < 24 * 365 * 2 {
        format!("{}d", h / 24)
    } else if h < 24 * 365 * 8 {
        let y = h / (24 * 365);
        let dd = (h % (24 * 365)) / 24;
        if dd == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{dd}d")
        }
    } else {
        format!("{}y", h / (24 * 365))
    }
}

// ---------------------------------------------------------------------------------------------
// Events: stored as core/v1, also served as events.k8s.io/v1.

const EVENT_FIELD_MAP: &[(&str, &str)] = &[
    // (core/v1, events.k8s.io/v1)
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

fn rename_fields(obj: &Value, api_version: &str, to_events_v1: bool) -> Value {
    let mut out = obj.clone();
    let Some(m) = out.as_object_mut() else {
        return out;
    };
    for (core, ev) in EVENT_FIELD_MAP {
        let (from, to) = if to_events_v1 { (core, ev) } else { (ev, core) };
        if let Some(v) = m.remove(*from) {
            m.insert((*to).to_string(), v);
        }
    }
    m.insert("apiVersion".into(), json!(api_version));
    out
}

pub fn event_to_events_v1(core: &Value) -> Value {
    rename_fields(core, "events.k8s.io/v1", true)
}

pub fn event_from_events_v1(ev: &Value) -> Value {
    rename_fields(ev, "v1", false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors() {
        let obj = json!({"metadata": {"labels": {"app": "nginx", "tier": "web"}}});
        let cases = [
            ("", true),
            ("app=nginx", true),
            ("app==nginx", true),
            ("app!=nginx", false),
            ("app=nginx,tier=db", false),
            ("app in (nginx,redis)", true),
            ("app notin (nginx)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("missing!=x", true),
        ];
        for (sel, want) in cases {
            assert_eq!(
                parse_label_selector(sel).unwrap().matches(&obj),
                want,
                "{sel}"
            );
        }
        assert!(parse_label_selector("a b=c").is_err());
    }

    #[test]
    fn field_selectors() {
        let obj = json!({"metadata": {"name": "x", "namespace": "default"},
                         "involvedObject": {"kind": "Pod", "uid": "u1"}, "spec": {"replicas": 3}});
        let cases = [
            ("metadata.name=x", true),
            ("metadata.name!=x", false),
            ("involvedObject.kind=Pod,involvedObject.uid=u1", true),
            ("involvedObject.uid=u1,metadata.namespace=other", false),
            ("spec.nodeName=", true),
            ("spec.replicas=3", true),
        ];
        for (sel, want) in cases {
            assert_eq!(
                parse_field_selector(sel).unwrap().matches(&obj),
                want,
                "{sel}"
            );
        }
        assert!(parse_field_selector("nonsense").is_err());
    }

    #[test]
    fn strategic_merge_merges_containers_by_name_and_drops_directives() {
        let old = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}});
        let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "a"}],
            "containers": [{"name": "a", "image": "2"}, {"$patch": "delete", "name": "b"}]}});
        let rt = muster_api::registry::find("", "v1", "pods").unwrap();
        let out = apply_patch(PatchType::StrategicMerge, rt, &old, &patch).unwrap();
        assert_eq!(
            out,
            json!({"spec": {"containers": [{"name": "a", "image": "2"}]}})
        );
    }

    #[test]
    fn human_durations() {
        let cases = [
            (5, "5s"),
            (119, "119s"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (10 * 3600, "10h"),
            (3 * 86400, "3d"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(chrono::TimeDelta::seconds(secs)), want);
        }
    }
}
