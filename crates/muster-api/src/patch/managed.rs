//! Server-side apply and `metadata.managedFields`.
//!
//! Field ownership is tracked as sets of paths in Kubernetes' `FieldsV1` notation: a path is a
//! list of elements `f:<field>`, `k:<merge key as JSON>` (an item of a keyed list) and
//! `v:<value as JSON>` (an item of a set). Where muster differs from Kubernetes
//! (structured-merge-diff):
//! - it has no schema: list types come from the strategic-merge table ([`list_strategy`]),
//!   which nodes are recorded themselves (`.`) from [`has_own_node`], atomic structs (label
//!   selectors) from [`is_atomic_struct`], item keys from [`item_key`];
//! - Update entries are one per manager, operation and subresource, not split by apiVersion.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::strategic::{ListStrategy, list_strategy, strategic_merge};
use crate::registry::ResourceType;
use crate::status::{ApiError, ApiResult};

/// One owned field: path elements such as `f:spec`, `k:{"name":"web"}`, `v:"x"`.
type FieldPath = Vec<String>;
type FieldSet = BTreeSet<FieldPath>;

/// Metadata fields that belong to the server, never to a manager.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// Fields whose own node Kubernetes never records: non-pointer structs and required lists,
/// which exist (empty) in Go's zero value of their parent, so a write never "adds" them.
const ALWAYS_PRESENT: &[&str] = &[
    "metadata",
    "spec",
    "status",
    "template",
    "strategy",
    "updateStrategy",
    "containers",
    "involvedObject",
    "source",
    "loadBalancer",
    "nodeInfo",
    "daemonEndpoints",
    "kubeletEndpoint",
    "state",
    "lastState",
];

/// Whether a node with fields below it is itself a member of a field set (`"f:labels":{".":{},
/// "f:app":{}}`): maps, pointers and optional lists are; see [`ALWAYS_PRESENT`].
fn has_own_node(path: &[&str]) -> bool {
    match path {
        [] => false,
        [.., parent, "resources"] => !matches!(
            *parent,
            "containers" | "initContainers" | "ephemeralContainers"
        ),
        [.., last] => !ALWAYS_PRESENT.contains(last),
    }
}

/// The `k:` element naming `item` of a list merged by `key`: the key fields Kubernetes uses
/// (`protocol` too for ports, defaulting to `TCP` as the API server would; `whenUnsatisfiable`
/// for topology spread constraints). `None` when the item lacks the merge key.
fn item_key(key: &str, item: &Value) -> Option<Map<String, Value>> {
    let mut fields = Map::new();
    fields.insert(key.to_string(), item.get(key)?.clone());
    let extra: &[&str] = match key {
        "containerPort" | "port" => &["protocol"],
        "topologyKey" => &["whenUnsatisfiable"],
        _ => &[],
    };
    for field in extra {
        match item.get(*field) {
            Some(v) => {
                fields.insert(field.to_string(), v.clone());
            }
            None if *field == "protocol" => {
                fields.insert(field.to_string(), "TCP".into());
            }
            None => {}
        }
    }
    Some(fields)
}

/// Whether `item` has `value` in key field `field` (a missing `protocol` is `TCP`).
fn key_matches(item: &Value, field: &str, value: &Value) -> bool {
    match item.get(field) {
        Some(v) => v == value,
        None => field == "protocol" && value == "TCP",
    }
}

/// The fields set in `obj`, as a set of paths (members only; a map's own node only when it is
/// a granular map, a keyed list item's own node always).
fn field_set(kind: &str, obj: &Value) -> FieldSet {
    let mut walk = Walk::new(kind);
    walk.object(obj, None);
    walk.set
}

/// The fields set in `new`, and those of them whose value differs from `old` (all of them when
/// there is no `old`). A node with fields below it (a granular map, a list item, a set) only
/// differs by appearing; its children are compared on their own.
fn field_set_diff(kind: &str, new: &Value, old: Option<&Value>) -> (FieldSet, FieldSet) {
    let mut walk = Walk::new(kind);
    walk.object(new, Some(old.unwrap_or(&Value::Null)));
    (walk.set, walk.touched)
}

/// A walk over an object collecting its field set, and optionally, against an older version of
/// the object, the fields that changed.
struct Walk<'k, 'v> {
    kind: &'k str,
    /// Field names from the root (list items add none): the context for list strategies.
    /// Borrowed from the walked object, so that descending allocates nothing for them.
    names: Vec<&'v str>,
    path: FieldPath,
    set: FieldSet,
    touched: FieldSet,
}

impl<'k, 'v> Walk<'k, 'v> {
    fn new(kind: &'k str) -> Self {
        Walk {
            kind,
            names: Vec::new(),
            path: Vec::new(),
            set: FieldSet::new(),
            touched: FieldSet::new(),
        }
    }

    /// `old` is `None` when not comparing, `Some(Null)` when comparing with nothing.
    fn object(&mut self, obj: &'v Value, old: Option<&Value>) {
        let Some(root) = obj.as_object() else {
            return;
        };
        for (key, value) in root {
            if key == "apiVersion" || key == "kind" {
                continue;
            }
            let old_value = old.map(|o| o.get(key).unwrap_or(&Value::Null));
            if key == "metadata" {
                let Some(meta) = value.as_object() else {
                    continue;
                };
                self.names.push("metadata");
                self.path.push("f:metadata".to_string());
                for (mk, mv) in meta {
                    if !SERVER_METADATA.contains(&mk.as_str()) {
                        let old_mv = old_value.map(|o| o.get(mk).unwrap_or(&Value::Null));
                        self.field(mk, mv, old_mv);
                    }
                }
                self.path.pop();
                self.names.pop();
                continue;
            }
            self.field(key, value, old_value);
        }
    }

    /// Records the current path; `changed` says whether it differs from the old object.
    fn member(&mut self, changed: bool) {
        if changed {
            self.touched.insert(self.path.clone());
        }
        self.set.insert(self.path.clone());
    }

    fn field(&mut self, key: &'v str, value: &'v Value, old: Option<&Value>) {
        self.names.push(key);
        self.path.push(format!("f:{key}"));
        self.value(value, old);
        self.path.pop();
        self.names.pop();
    }

    fn value(&mut self, value: &'v Value, old: Option<&Value>) {
        let kind = self.kind;
        // Everything the walk needs from the names, decided before it descends further.
        let own_node = has_own_node(&self.names);
        // Compared with nothing (`Some(Null)`), everything is new.
        let appeared = old.is_some_and(Value::is_null);
        match value {
            Value::Object(map) if !map.is_empty() && !is_atomic_struct(kind, &self.names) => {
                if own_node {
                    self.member(old.is_some_and(|o| !o.is_object()));
                }
                for (k, v) in map {
                    let old_v = old.map(|o| o.get(k).unwrap_or(&Value::Null));
                    self.field(k, v, old_v);
                }
            }
            Value::Array(items) if !items.is_empty() => match list_strategy(kind, &self.names) {
                ListStrategy::MergeKey(key) if items.iter().all(|i| i.get(key).is_some()) => {
                    if own_node {
                        self.member(old.is_some_and(|o| !o.is_array()));
                    }
                    let old_items = old.and_then(Value::as_array);
                    for item in items {
                        let Some(item_key) = item_key(key, item) else {
                            continue;
                        };
                        let old_item = old.map(|_| {
                            old_items
                                .and_then(|list| {
                                    list.iter().find(|o| {
                                        item_key.iter().all(|(k, v)| key_matches(o, k, v))
                                    })
                                })
                                .unwrap_or(&Value::Null)
                        });
                        self.path.push(format!("k:{}", Value::Object(item_key)));
                        self.member(old_item.is_some_and(Value::is_null));
                        if let Some(fields) = item.as_object() {
                            for (k, v) in fields {
                                let old_v = old_item.map(|o| o.get(k).unwrap_or(&Value::Null));
                                self.field(k, v, old_v);
                            }
                        }
                        self.path.pop();
                    }
                }
                ListStrategy::Set => {
                    let old_items = old.and_then(Value::as_array);
                    self.member(old.is_some() && old_items.is_none());
                    for item in items {
                        self.path.push(format!("v:{item}"));
                        self.member(old.is_some() && !old_items.is_some_and(|l| l.contains(item)));
                        self.path.pop();
                    }
                }
                _ => self.member(old.is_some_and(|o| o != value)),
            },
            _ => self.member(appeared || old.is_some_and(|o| o != value)),
        }
    }
}

/// Structs Kubernetes marks `+structType=atomic`: owned as a whole (`"f:selector":{}`).
fn is_atomic_struct(kind: &str, path: &[&str]) -> bool {
    match path.last() {
        Some(&"selector") => kind != "Service",
        Some(&"labelSelector" | &"namespaceSelector") => true,
        _ => false,
    }
}

/// The set in `FieldsV1` form: nested objects, `.` marking a member that has children.
fn to_fields_v1(set: &FieldSet) -> Value {
    #[derive(Default)]
    struct Node {
        member: bool,
        children: std::collections::BTreeMap<String, Node>,
    }
    fn render(node: &Node) -> Value {
        let mut out = Map::new();
        if node.member && !node.children.is_empty() {
            out.insert(".".into(), json!({}));
        }
        for (k, child) in &node.children {
            out.insert(k.clone(), render(child));
        }
        Value::Object(out)
    }
    let mut root = Node::default();
    for path in set {
        let mut node = &mut root;
        for element in path {
            node = node.children.entry(element.clone()).or_default();
        }
        node.member = true;
    }
    render(&root)
}

fn from_fields_v1(value: &Value) -> FieldSet {
    fn walk(node: &Map<String, Value>, path: &mut FieldPath, set: &mut FieldSet) {
        for (k, v) in node {
            if k == "." {
                set.insert(path.clone());
                continue;
            }
            path.push(k.clone());
            match v {
                Value::Object(child) if !child.is_empty() => walk(child, path, set),
                _ => {
                    set.insert(path.clone());
                }
            }
            path.pop();
        }
    }
    let mut set = FieldSet::new();
    if let Value::Object(root) = value {
        walk(root, &mut Vec::new(), &mut set);
    }
    set
}

/// Finds the item of `items` that a `k:`/`v:` element names.
fn find_item(items: &[Value], element: &str) -> Option<usize> {
    if let Some(key) = element.strip_prefix("k:") {
        let Ok(Value::Object(wanted)) = serde_json::from_str::<Value>(key) else {
            return None;
        };
        items
            .iter()
            .position(|item| wanted.iter().all(|(k, v)| key_matches(item, k, v)))
    } else if let Some(v) = element.strip_prefix("v:") {
        let wanted = serde_json::from_str::<Value>(v).ok()?;
        items.iter().position(|item| *item == wanted)
    } else if let Some(i) = element.strip_prefix("i:") {
        i.parse().ok().filter(|i| *i < items.len())
    } else {
        None
    }
}

fn get_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for element in path {
        cur = match element.strip_prefix("f:") {
            Some(field) => cur.as_object()?.get(field)?,
            None => {
                let items = cur.as_array()?;
                &items[find_item(items, element)?]
            }
        };
    }
    Some(cur)
}

fn get_at_mut<'a>(obj: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = obj;
    for element in path {
        cur = match element.strip_prefix("f:") {
            Some(field) => cur.as_object_mut()?.get_mut(field)?,
            None => {
                let pos = find_item(cur.as_array()?, element)?;
                &mut cur.as_array_mut()?[pos]
            }
        };
    }
    Some(cur)
}

fn is_empty_container(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let Some(parent) = get_at_mut(obj, parent) else {
        return;
    };
    match last.strip_prefix("f:") {
        Some(field) => {
            if let Some(map) = parent.as_object_mut() {
                map.shift_remove(field);
            }
        }
        None => {
            if let Some(pos) = parent.as_array().and_then(|items| find_item(items, last)) {
                parent.as_array_mut().map(|items| items.remove(pos));
            }
        }
    }
}

/// `.spec.template.spec.containers[name="web"].image`, as Kubernetes prints field paths.
fn pretty_path(path: &[String]) -> String {
    let mut out = String::new();
    for element in path {
        if let Some(field) = element.strip_prefix("f:") {
            out.push('.');
            out.push_str(field);
        } else if let Some(key) = element.strip_prefix("k:") {
            let parts = match serde_json::from_str::<Value>(key) {
                Ok(Value::Object(m)) => m
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
                _ => key.to_string(),
            };
            out.push_str(&format!("[{parts}]"));
        } else if let Some(v) = element.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        } else if let Some(i) = element.strip_prefix("i:") {
            out.push_str(&format!("[{i}]"));
        }
    }
    out
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    set: FieldSet,
    /// The `fieldsV1` read from the object, reused while `set` is unchanged.
    fields_v1: Option<Value>,
}

impl Entry {
    fn new(manager: &str, operation: &str, api_version: String, time: &str, set: FieldSet) -> Self {
        Entry {
            manager: manager.to_string(),
            operation: operation.to_string(),
            api_version,
            time: Some(time.to_string()),
            subresource: None,
            set,
            fields_v1: None,
        }
    }

    fn replace_set(&mut self, set: FieldSet) {
        if set != self.set {
            self.set = set;
            self.fields_v1 = None;
        }
    }

    fn retain(&mut self, keep: impl FnMut(&FieldPath) -> bool) {
        let before = self.set.len();
        self.set.retain(keep);
        if self.set.len() != before {
            self.fields_v1 = None;
        }
    }

    fn extend(&mut self, paths: FieldSet) {
        let before = self.set.len();
        self.set.extend(paths);
        if self.set.len() != before {
            self.fields_v1 = None;
        }
    }

    fn parse(value: &Value) -> Option<Entry> {
        let s = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_string);
        let fields_v1 = value.get("fieldsV1").cloned();
        Some(Entry {
            manager: s("manager").unwrap_or_default(),
            operation: s("operation")?,
            api_version: s("apiVersion").unwrap_or_default(),
            time: s("time"),
            subresource: s("subresource").filter(|s| !s.is_empty()),
            set: fields_v1.as_ref().map(from_fields_v1).unwrap_or_default(),
            fields_v1,
        })
    }

    fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), self.manager.clone().into());
        m.insert("operation".into(), self.operation.clone().into());
        m.insert("apiVersion".into(), self.api_version.clone().into());
        if let Some(t) = &self.time {
            m.insert("time".into(), t.clone().into());
        }
        m.insert("fieldsType".into(), "FieldsV1".into());
        let fields = match &self.fields_v1 {
            Some(cached) => cached.clone(),
            None => to_fields_v1(&self.set),
        };
        m.insert("fieldsV1".into(), fields);
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), s.clone().into());
        }
        Value::Object(m)
    }

    /// How Kubernetes names a manager in conflict messages: appliers by name, updaters with
    /// the apiVersion they wrote.
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

fn entries_of(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Entry::parse).collect())
        .unwrap_or_default()
}

fn set_entries(obj: &mut Value, entries: &[Entry]) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let live = entries
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(Entry::to_value)
        .collect::<Vec<_>>();
    if live.is_empty() {
        meta.shift_remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(live));
    }
}

/// Whether `set` holds `path` itself or anything below it.
fn covers(set: &FieldSet, path: &FieldPath) -> bool {
    set.range(path.clone()..)
        .next()
        .is_some_and(|p| p.starts_with(path))
}

/// Whether the field at `path` differs between `before` and `after`. A node with owned fields
/// below it (a map, a list item) only "changes" by appearing or disappearing; its children are
/// compared on their own.
fn changed(set: &FieldSet, path: &FieldPath, before: Option<&Value>, after: &Value) -> bool {
    let has_children = set
        .range(path.clone()..)
        .nth(1)
        .is_some_and(|p| p.starts_with(path));
    let old = before.and_then(|b| get_at(b, path));
    let new = get_at(after, path);
    if has_children {
        old.is_none() != new.is_none()
    } else {
        old != new
    }
}

/// Drops what an applied configuration cannot set: server-owned metadata (so that the
/// `creationTimestamp: null` of `kubectl create --dry-run=client -o yaml` output deletes
/// nothing) and, for resources with a status subresource, `status` (main-resource writes never
/// change status in Kubernetes). `resourceVersion` and `uid` stay: they act as preconditions.
fn ignore_server_fields(rt: &ResourceType, applied: &mut Value) {
    if let Some(meta) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in SERVER_METADATA {
            if !matches!(*field, "name" | "namespace" | "resourceVersion" | "uid") {
                meta.shift_remove(*field);
            }
        }
    }
    if rt.subresource("status").is_some()
        && let Some(obj) = applied.as_object_mut()
    {
        obj.shift_remove("status");
    }
}

fn strip_managed_fields(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.shift_remove("managedFields");
    }
}

/// Server-side apply (`PATCH` with `application/apply-patch+yaml`).
///
/// With no `current` object the result is `applied` (to be created), owned by `field_manager`.
/// Otherwise `applied` is merged into `current` (lists by their merge keys), fields this manager
/// applied before and no longer applies are removed unless another manager owns them, and
/// `metadata.managedFields` is updated. A field owned by another manager whose value `applied`
/// changes is a conflict: 409 unless `force`, in which case ownership moves to `field_manager`.
pub fn server_side_apply(
    rt: &ResourceType,
    current: Option<&Value>,
    applied: &Value,
    field_manager: &str,
    force: bool,
    now: &str,
) -> ApiResult<Value> {
    if field_manager.is_empty() {
        return Err(ApiError::bad_request(
            "PATCH: fieldManager is required for apply requests",
        ));
    }
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "error decoding apply patch: expected an object",
        ));
    }
    if let Some(kind) = applied.get("kind").and_then(Value::as_str)
        && kind != rt.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the applied configuration ({kind}) does not match the resource ({})",
            rt.kind
        )));
    }
    let mut applied = applied.clone();
    ignore_server_fields(rt, &mut applied);
    let api_version = applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| rt.api_version());
    let applied_set = field_set(rt.kind, &applied);

    let Some(current) = current else {
        let mut created = applied.clone();
        set_entries(
            &mut created,
            &[Entry::new(
                field_manager,
                "Apply",
                api_version,
                now,
                applied_set,
            )],
        );
        return Ok(created);
    };

    let mut entries = entries_of(current);
    let is_mine = |e: &Entry| e.manager == field_manager && e.operation == "Apply";

    // Conflicts: fields another manager owns whose value this apply would change.
    let mut conflicts: Vec<(usize, FieldPath)> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        if is_mine(entry) {
            continue;
        }
        for path in applied_set.intersection(&entry.set) {
            if changed(&applied_set, path, Some(current), &applied) {
                conflicts.push((i, path.clone()));
            }
        }
    }
    if !conflicts.is_empty() {
        if !force {
            return Err(conflict_error(&entries, &conflicts));
        }
        for (i, path) in &conflicts {
            entries[*i].retain(|p| p != path);
        }
    }

    let mut current_plain = current.clone();
    strip_managed_fields(&mut current_plain);
    let mut merged = strategic_merge(rt.kind, &current_plain, &applied)?;

    // Fields this manager no longer applies go away, unless someone else still owns them.
    let previous = entries
        .iter()
        .find(|e| is_mine(e))
        .map(|e| e.set.clone())
        .unwrap_or_default();
    let others = entries
        .iter()
        .filter(|e| !is_mine(e))
        .flat_map(|e| e.set.iter().cloned())
        .collect::<FieldSet>();
    let removable = previous
        .difference(&applied_set)
        .filter(|p| !covers(&others, p) && !covers(&applied_set, p))
        .collect::<Vec<_>>();
    // Remove only the outermost paths: a list item must go before its key field does, or it
    // could no longer be found.
    for path in &removable {
        let inside_another = removable
            .iter()
            .any(|q| q.len() < path.len() && path.starts_with(q));
        if !inside_another {
            remove_at(&mut merged, path);
            // A list or map emptied by the removal goes too, unless someone owns it.
            let mut parent = &path[..path.len() - 1];
            while !parent.is_empty()
                && get_at(&merged, parent).is_some_and(is_empty_container)
                && !covers(&others, &parent.to_vec())
                && !covers(&applied_set, &parent.to_vec())
            {
                remove_at(&mut merged, parent);
                parent = &parent[..parent.len() - 1];
            }
        }
    }

    let unchanged = merged == current_plain && previous == applied_set;
    let time = match entries.iter().find(|e| is_mine(e)) {
        Some(e) if unchanged => e.time.clone(),
        _ => Some(now.to_string()),
    };
    match entries.iter_mut().find(|e| is_mine(e)) {
        Some(e) => {
            e.replace_set(applied_set);
            e.time = time;
            e.api_version = api_version.clone();
        }
        None => {
            let mut entry = Entry::new(field_manager, "Apply", api_version, now, applied_set);
            entry.time = time;
            entries.push(entry);
        }
    }
    set_entries(&mut merged, &entries);
    Ok(merged)
}

/// Kubernetes' 409 for apply conflicts: one line for a single conflict, else the paths grouped
/// by manager (managers sorted), and a `FieldManagerConflict` cause per conflict.
fn conflict_error(entries: &[Entry], conflicts: &[(usize, FieldPath)]) -> ApiError {
    let message = match conflicts {
        [(i, path)] => format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            entries[*i].describe(),
            pretty_path(path)
        ),
        _ => {
            let mut by_manager: Vec<(String, Vec<String>)> = Vec::new();
            for (i, path) in conflicts {
                let who = entries[*i].describe();
                let shown = pretty_path(path);
                match by_manager.iter_mut().find(|(m, _)| *m == who) {
                    Some((_, paths)) => paths.push(shown),
                    None => by_manager.push((who, vec![shown])),
                }
            }
            by_manager.sort_by(|a, b| a.0.cmp(&b.0));
            let mut lines = Vec::new();
            for (who, paths) in by_manager {
                lines.push(format!("conflicts with {who}:"));
                lines.extend(paths.into_iter().map(|p| format!("- {p}")));
            }
            format!(
                "Apply failed with {} conflicts: {}",
                conflicts.len(),
                lines.join("\n")
            )
        }
    };
    let mut error = ApiError::new(409, "Conflict", message);
    for (i, path) in conflicts {
        error = error.with_cause(
            "FieldManagerConflict",
            &pretty_path(path),
            &format!("conflict with {}", entries[*i].describe()),
        );
    }
    error
}

/// Records an ordinary write (create, update, patch) in `new`'s `metadata.managedFields`:
/// `field_manager` (with `operation`, normally `Update`) gains the fields the write set or
/// changed, which other managers lose; fields the write removed leave every manager.
///
/// The entries start from `new`'s own `managedFields` if the client sent some, else `old`'s;
/// a client sending `[{}]` strips them all, as in Kubernetes.
pub fn record_update_manager(
    rt: &ResourceType,
    old: Option<&Value>,
    new: &mut Value,
    field_manager: &str,
    operation: &str,
    now: &str,
) {
    record_manager(rt, old, new, field_manager, operation, None, now);
}

/// [`record_update_manager`] for a write through a subresource (`status`, `scale`): the entry
/// carries `subresource`, as Kubernetes records it.
pub fn record_subresource_manager(
    rt: &ResourceType,
    old: Option<&Value>,
    new: &mut Value,
    field_manager: &str,
    operation: &str,
    subresource: &str,
    now: &str,
) {
    let subresource = Some(subresource).filter(|s| !s.is_empty());
    record_manager(rt, old, new, field_manager, operation, subresource, now);
}

fn record_manager(
    rt: &ResourceType,
    old: Option<&Value>,
    new: &mut Value,
    field_manager: &str,
    operation: &str,
    subresource: Option<&str>,
    now: &str,
) {
    // As in Kubernetes: `[{}]` strips managedFields, an empty list (or none) keeps the stored
    // ones, any other list replaces them.
    let sent = new
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned();
    let mut entries = match sent.as_deref() {
        Some([Value::Object(only)]) if only.is_empty() => {
            strip_managed_fields(new);
            return;
        }
        Some(list) if !list.is_empty() => entries_of(new),
        _ => old.map(entries_of).unwrap_or_default(),
    };
    let (new_set, mut touched) = field_set_diff(rt.kind, new, old);
    // As Kubernetes' reset fields: a write to the main resource owns no status, a write to
    // the status subresource nothing else.
    if rt.subresource("status").is_some() {
        let in_status = |p: &FieldPath| p.first().is_some_and(|f| f == "f:status");
        match subresource {
            None => touched.retain(|p| !in_status(p)),
            Some("status") => touched.retain(in_status),
            Some(_) => {}
        }
    }

    let mine = |e: &Entry| {
        e.manager == field_manager
            && e.operation == operation
            && e.subresource.as_deref() == subresource
    };
    for entry in entries.iter_mut() {
        let is_mine = mine(entry);
        // Fields the write removed leave every manager; fields it changed leave the others.
        entry.retain(|p| new_set.contains(p) && (is_mine || !touched.contains(p)));
    }
    if !touched.is_empty() {
        match entries.iter_mut().find(|e| mine(e)) {
            Some(e) => {
                e.extend(touched);
                e.time = Some(now.to_string());
                e.api_version = rt.api_version();
            }
            None => {
                let mut entry =
                    Entry::new(field_manager, operation, rt.api_version(), now, touched);
                entry.subresource = subresource.map(str::to_string);
                entries.push(entry);
            }
        }
    }
    set_entries(new, &entries);
}
