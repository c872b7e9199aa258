//! Strategic merge patch, applied on the server.
//!
//! A strategic merge patch is a JSON merge patch whose lists are merged by a per-field merge key
//! (containers by `name`, container ports by `containerPort`, ...), plus a few `$` directives.
//! Kubernetes reads the list strategies from Go struct tags; muster keeps them in
//! [`list_strategy`], keyed by kind and field path, because the same field name means different
//! things in different places (`ports` of a container vs. `ports` of a Service).

use serde_json::{Map, Value};

use crate::status::{ApiError, ApiResult};

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// How a list field is merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListStrategy {
    /// The patch's list replaces the original (the default for lists).
    Atomic,
    /// A set of primitives: the patch's values are added to the original's.
    Set,
    /// A list of objects merged item by item, matched by this field.
    MergeKey(&'static str),
}

/// Pod-spec lists whose items are merged by `name`.
const POD_LISTS_BY_NAME: &[&str] = &[
    "containers",
    "initContainers",
    "ephemeralContainers",
    "volumes",
    "imagePullSecrets",
    "resourceClaims",
    "schedulingGates",
];
const CONTAINER_LISTS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// The path of the pod spec inside an object of this kind, if it has one.
fn pod_spec_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&["spec"]),
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => Some(&["spec", "template", "spec"]),
        "PodTemplate" => Some(&["template", "spec"]),
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template", "spec"]),
        _ => None,
    }
}

/// The merge strategy of the list at `path` (field names from the root; list items add no
/// segment) in an object of `kind`.
pub(crate) fn list_strategy(kind: &str, path: &[&str]) -> ListStrategy {
    let Some((&last, parents)) = path.split_last() else {
        return ListStrategy::Atomic;
    };
    let parent = parents.last().copied();
    match (parent, last) {
        (Some("metadata"), "finalizers") => return ListStrategy::Set,
        (Some("metadata"), "ownerReferences") => return ListStrategy::MergeKey("uid"),
        // Every built-in `conditions` list (pods, nodes, workloads, namespaces) is keyed by type.
        (Some("status"), "conditions") => return ListStrategy::MergeKey("type"),
        _ => {}
    }
    if let Some(rel) = pod_spec_path(kind).and_then(|prefix| path.strip_prefix(prefix)) {
        return match rel {
            [field] if POD_LISTS_BY_NAME.contains(field) => ListStrategy::MergeKey("name"),
            ["hostAliases"] => ListStrategy::MergeKey("ip"),
            ["topologySpreadConstraints"] => ListStrategy::MergeKey("topologyKey"),
            [c, field] if CONTAINER_LISTS.contains(c) => match *field {
                "env" => ListStrategy::MergeKey("name"),
                "ports" => ListStrategy::MergeKey("containerPort"),
                "volumeMounts" => ListStrategy::MergeKey("mountPath"),
                "volumeDevices" => ListStrategy::MergeKey("devicePath"),
                _ => ListStrategy::Atomic,
            },
            _ => ListStrategy::Atomic,
        };
    }
    match (kind, path) {
        // Kubernetes keys Service ports by port+protocol; muster by port alone.
        ("Service", ["spec", "ports"]) => ListStrategy::MergeKey("port"),
        ("Node", ["status", "addresses"]) => ListStrategy::MergeKey("type"),
        ("Node", ["spec", "podCIDRs"]) => ListStrategy::Set,
        ("Pod", ["status", "podIPs" | "hostIPs"]) => ListStrategy::MergeKey("ip"),
        _ => ListStrategy::Atomic,
    }
}

/// Applies a strategic merge patch to `original` (an object of `kind`).
pub(crate) fn strategic_merge(kind: &str, original: &Value, patch: &Value) -> ApiResult<Value> {
    let original = match original {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    let Value::Object(patch) = patch else {
        return Err(ApiError::bad_request(
            "strategic merge patch must be a JSON object",
        ));
    };
    let mut path = Vec::new();
    Ok(Value::Object(merge_map(kind, &mut path, original, patch)?))
}

fn directive_str<'a>(map: &'a Map<String, Value>, key: &str) -> ApiResult<Option<&'a str>> {
    match map.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ApiError::bad_request(format!(
            "invalid value for {key}: {other}, expected a string"
        ))),
    }
}

fn merge_map(
    kind: &str,
    path: &mut Vec<String>,
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
) -> ApiResult<Map<String, Value>> {
    match directive_str(patch, PATCH)? {
        None | Some("merge") => {}
        Some("replace") => {
            let mut rest = patch.clone();
            rest.shift_remove(PATCH);
            return merge_map(kind, path, Map::new(), &rest);
        }
        Some("delete") => return Ok(Map::new()),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Unknown patch type: {other} in map: {}",
                Value::Object(patch.clone())
            )));
        }
    }

    let retain_keys = match patch.get(RETAIN_KEYS) {
        None => None,
        Some(Value::Array(keys)) => {
            let keys = keys
                .iter()
                .map(|k| k.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    ApiError::bad_request("invalid patch: $retainKeys must be a list of strings")
                })?;
            Some(keys)
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid patch: $retainKeys must be a list of strings",
            ));
        }
    };

    // `$setElementOrder/<field>` lists, each with the field's list as it was before the patch.
    let mut orders = Vec::new();
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) {
            let Value::Array(order) = value else {
                return Err(ApiError::bad_request(format!(
                    "invalid patch: {key} must be a list"
                )));
            };
            orders.push((field, order, original.get(field).cloned()));
        }
    }

    // Deletions from primitive lists come first, so that a patch may delete and add in one go.
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let Value::Array(doomed) = value else {
                return Err(ApiError::bad_request(format!(
                    "invalid patch: {key} must be a list"
                )));
            };
            if let Some(Value::Array(items)) = original.get_mut(field) {
                items.retain(|item| !doomed.contains(item));
            }
        }
    }

    // `$retainKeys` first drops the original's other fields, then the patch merges in.
    if let Some(keys) = &retain_keys {
        original.retain(|k, _| keys.contains(k));
    }

    for (key, value) in patch {
        if key == PATCH || key == RETAIN_KEYS || key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            continue;
        }
        if key.starts_with(SET_ELEMENT_ORDER) {
            continue;
        }
        // A null (kubectl sends `"rollingUpdate": null` next to `$retainKeys`) is allowed.
        if let Some(keys) = &retain_keys
            && !value.is_null()
            && !keys.contains(key)
        {
            return Err(ApiError::bad_request(format!(
                "invalid patch format of retainKeys: {key:?} is not listed in {keys:?}"
            )));
        }
        if value.is_null() {
            original.shift_remove(key);
            continue;
        }
        path.push(key.clone());
        let merged = merge_value(kind, path, original.get(key), value);
        path.pop();
        original.insert(key.clone(), merged?);
    }

    for (field, order, before) in orders {
        path.push(field.to_string());
        let strategy = list_strategy(kind, &path.iter().map(String::as_str).collect::<Vec<_>>());
        path.pop();
        let key = match strategy {
            ListStrategy::MergeKey(key) => Some(key),
            _ => None,
        };
        if let Some(Value::Array(items)) = original.get_mut(field) {
            let server_order = match before {
                Some(Value::Array(list)) => list,
                _ => Vec::new(),
            };
            *items = normalize_order(std::mem::take(items), order, &server_order, key);
        }
    }

    Ok(original)
}

/// Merges one patch value (not null) into the original value of the same field.
fn merge_value(
    kind: &str,
    path: &mut Vec<String>,
    original: Option<&Value>,
    patch: &Value,
) -> ApiResult<Value> {
    Ok(match patch {
        Value::Object(p) => {
            let base = match original {
                Some(Value::Object(o)) => o.clone(),
                _ => Map::new(),
            };
            Value::Object(merge_map(kind, path, base, p)?)
        }
        Value::Array(p) => {
            let base = match original {
                Some(Value::Array(o)) => o.clone(),
                _ => Vec::new(),
            };
            Value::Array(merge_list(kind, path, base, p)?)
        }
        scalar => scalar.clone(),
    })
}

fn merge_list(
    kind: &str,
    path: &mut Vec<String>,
    original: Vec<Value>,
    patch: &[Value],
) -> ApiResult<Vec<Value>> {
    let strategy = list_strategy(kind, &path.iter().map(String::as_str).collect::<Vec<_>>());
    match strategy {
        ListStrategy::Atomic => patch
            .iter()
            .map(|item| merge_value(kind, path, None, item))
            .collect(),
        ListStrategy::Set => {
            let mut merged = original.clone();
            for item in patch {
                if !item.is_object() && !merged.contains(item) {
                    merged.push(item.clone());
                }
            }
            Ok(normalize_order(merged, patch, &original, None))
        }
        ListStrategy::MergeKey(key) => merge_keyed_list(kind, path, original, patch, key),
    }
}

fn merge_keyed_list(
    kind: &str,
    path: &mut Vec<String>,
    original: Vec<Value>,
    patch: &[Value],
    key: &str,
) -> ApiResult<Vec<Value>> {
    let field = path.join(".");
    let mut replace = false;
    let mut deleted = Vec::new();
    let mut merges = Vec::new();
    for item in patch {
        let Value::Object(obj) = item else {
            return Err(ApiError::bad_request(format!(
                "invalid patch: {field} is a list of objects merged by {key:?}, got item {item}"
            )));
        };
        match directive_str(obj, PATCH)? {
            Some("replace") => replace = true,
            Some("delete") => match obj.get(key) {
                Some(k) => deleted.push(k),
                None => {
                    return Err(ApiError::bad_request(format!(
                        "delete directive in {field} must name its merge key {key:?}: {item}"
                    )));
                }
            },
            None | Some("merge") => merges.push(obj),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "Unknown patch type: {other} in list {field}: {item}"
                )));
            }
        }
    }

    let mut out = if replace { Vec::new() } else { original };
    out.retain(|item| item.get(key).is_none_or(|k| !deleted.contains(&k)));
    let server_order = out.clone();
    for obj in merges.iter().copied() {
        let Some(wanted) = obj.get(key) else {
            return Err(ApiError::bad_request(format!(
                "map: {} does not contain declared merge key: {key}",
                Value::Object(obj.clone())
            )));
        };
        match out.iter().position(|item| item.get(key) == Some(wanted)) {
            Some(pos) => {
                let base = out[pos].as_object().cloned().unwrap_or_default();
                out[pos] = Value::Object(merge_map(kind, path, base, obj)?);
            }
            None => out.push(Value::Object(merge_map(kind, path, Map::new(), obj)?)),
        }
    }
    let patch_order = merges
        .into_iter()
        .map(|m| Value::Object(m.clone()))
        .collect::<Vec<_>>();
    Ok(normalize_order(out, &patch_order, &server_order, Some(key)))
}

/// Orders a merged list as Kubernetes does: the items named in `order` (the patch's list or its
/// `$setElementOrder`) take that order; the others ("server-only") keep their order in
/// `server_order` (the list before the patch) and are merged in before the first named item
/// that comes after them there. A named item the server did not have comes before any
/// remaining server-only item, so a plain patch adding a list item puts it first.
fn normalize_order(
    merged: Vec<Value>,
    order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let identity = |item: &'_ Value| -> Option<Value> {
        match key {
            Some(k) => item.get(k).cloned(),
            None => Some(item.clone()),
        }
    };
    let position = |list: &[Value], item: &Value| {
        let id = identity(item)?;
        list.iter().position(|o| identity(o).as_ref() == Some(&id))
    };
    let (mut named, mut server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|item| position(order, item).is_some());
    named.sort_by_key(|item| position(order, item));
    server_only.sort_by_key(|item| position(server_order, item).unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(named.len() + server_only.len());
    let mut named = named.into_iter().peekable();
    let mut server_only = server_only.into_iter().peekable();
    loop {
        let take_server_only = match (server_only.peek(), named.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(s), Some(n)) => matches!(
                (position(server_order, s), position(server_order, n)),
                (Some(a), Some(b)) if a < b
            ),
        };
        let next = if take_server_only {
            server_only.next()
        } else {
            named.next()
        };
        out.extend(next);
    }
    out
}
