//! Server-side printing: `Table` column definitions and rows for `kubectl get`.
//!
//! The columns, their order, types and priorities, and every cell are those of a Kubernetes
//! 1.33 API server (which always prints the wide form; kubectl hides `priority > 0` columns
//! unless `-o wide`). Integer columns carry JSON numbers, everything else strings. Column
//! descriptions are our own short wording (kubectl never shows them).
//!
//! Objects are given in their stored form (events as core/v1; an `events.k8s.io` body is
//! converted first), and `now` is passed in so ages are reproducible.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::registry::ResourceType;
use crate::selector::LabelSelector;

const NAME_DESC: &str =
    "Name of the object, unique within its namespace (or the cluster for cluster-scoped kinds).";
const AGE_DESC: &str =
    "Time since the object was created (its metadata.creationTimestamp), as a human duration.";
const CONTAINERS_DESC: &str = "Names of each container in the template.";
const IMAGES_DESC: &str = "Images referenced by each container in the template.";

fn col(name: &str, ty: &str, priority: u8, description: &str) -> Value {
    json!({
        "name": name,
        "type": ty,
        "format": if name == "Name" { "name" } else { "" },
        "description": description,
        "priority": priority,
    })
}

fn name_col() -> Value {
    col("Name", "string", 0, NAME_DESC)
}

fn age_col() -> Value {
    col("Age", "string", 0, AGE_DESC)
}

/// The `columnDefinitions` of a Table of `rt`.
pub fn column_definitions(rt: &ResourceType) -> Vec<Value> {
    match (rt.group, rt.kind) {
        ("", "Pod") => vec![
            name_col(),
            col(
                "Ready",
                "string",
                0,
                "Number of ready containers out of all regular containers (and restartable init containers).",
            ),
            col(
                "Status",
                "string",
                0,
                "Summary of the pod's phase and container states.",
            ),
            col(
                "Restarts",
                "string",
                0,
                "Total container restarts, and how long ago the last one was.",
            ),
            age_col(),
            col(
                "IP",
                "string",
                1,
                "The first IP address allocated to the pod.",
            ),
            col("Node", "string", 1, "The node the pod is bound to."),
            col(
                "Nominated Node",
                "string",
                1,
                "The node the scheduler nominated for preemption, if any.",
            ),
            col(
                "Readiness Gates",
                "string",
                1,
                "Number of readiness gate conditions that are True, out of all gates.",
            ),
        ],
        ("", "Service") => vec![
            name_col(),
            col(
                "Type",
                "string",
                0,
                "How the service is exposed: ClusterIP, NodePort, LoadBalancer or ExternalName.",
            ),
            col(
                "Cluster-IP",
                "string",
                0,
                "The virtual IP of the service, or None for headless services.",
            ),
            col(
                "External-IP",
                "string",
                0,
                "Addresses outside the cluster that reach the service.",
            ),
            col(
                "Port(s)",
                "string",
                0,
                "The ports the service exposes (port[:nodePort]/protocol).",
            ),
            age_col(),
            col(
                "Selector",
                "string",
                1,
                "Labels of the pods the service routes to.",
            ),
        ],
        ("", "Endpoints") => vec![
            name_col(),
            col(
                "Endpoints",
                "string",
                0,
                "Ready addresses with their ports.",
            ),
            age_col(),
        ],
        ("", "Namespace") => vec![
            name_col(),
            col(
                "Status",
                "string",
                0,
                "The phase of the namespace (Active or Terminating).",
            ),
            age_col(),
        ],
        ("", "Node") => vec![
            name_col(),
            col(
                "Status",
                "string",
                0,
                "Readiness of the node, and whether scheduling is disabled.",
            ),
            col(
                "Roles",
                "string",
                0,
                "Roles from the node-role.kubernetes.io/ labels.",
            ),
            age_col(),
            col("Version", "string", 0, "Version of the node agent."),
            col(
                "Internal-IP",
                "string",
                1,
                "The node's first InternalIP address.",
            ),
            col(
                "External-IP",
                "string",
                1,
                "The node's first ExternalIP address.",
            ),
            col(
                "OS-Image",
                "string",
                1,
                "Operating system reported by the node.",
            ),
            col(
                "Kernel-Version",
                "string",
                1,
                "Kernel version reported by the node.",
            ),
            col(
                "Container-Runtime",
                "string",
                1,
                "Container runtime reported by the node.",
            ),
        ],
        ("", "Event") | ("events.k8s.io", "Event") => vec![
            col(
                "Last Seen",
                "string",
                0,
                "Time since the event was last observed.",
            ),
            col("Type", "string", 0, "Normal or Warning."),
            col(
                "Reason",
                "string",
                0,
                "Short machine-readable reason for the event.",
            ),
            col(
                "Object",
                "string",
                0,
                "The object the event is about (kind/name).",
            ),
            col(
                "Subobject",
                "string",
                1,
                "The part of the object the event is about (fieldPath).",
            ),
            col(
                "Source",
                "string",
                1,
                "The component (and host) that reported the event.",
            ),
            col(
                "Message",
                "string",
                0,
                "Human-readable description of the event.",
            ),
            col(
                "First Seen",
                "string",
                1,
                "Time since the event was first observed.",
            ),
            col("Count", "string", 1, "How many times the event occurred."),
            {
                let mut c = name_col();
                c["priority"] = json!(1);
                c
            },
        ],
        ("", "ConfigMap") => vec![
            name_col(),
            col(
                "Data",
                "string",
                0,
                "Number of keys in data and binaryData.",
            ),
            age_col(),
        ],
        ("", "Secret") => vec![
            name_col(),
            col("Type", "string", 0, "The type of the secret."),
            col("Data", "string", 0, "Number of keys in data."),
            age_col(),
        ],
        ("", "ServiceAccount") => vec![
            name_col(),
            col(
                "Secrets",
                "string",
                0,
                "Number of secrets listed by the service account.",
            ),
            age_col(),
        ],
        ("apps", "Deployment") => vec![
            name_col(),
            col("Ready", "string", 0, "Ready pods out of desired replicas."),
            col(
                "Up-to-date",
                "string",
                0,
                "Pods that run the current template.",
            ),
            col(
                "Available",
                "string",
                0,
                "Pods that have been ready for at least minReadySeconds.",
            ),
            age_col(),
            col("Containers", "string", 1, CONTAINERS_DESC),
            col("Images", "string", 1, IMAGES_DESC),
            col(
                "Selector",
                "string",
                1,
                "Label selector of the pods the deployment manages.",
            ),
        ],
        ("apps", "ReplicaSet") => vec![
            name_col(),
            col(
                "Desired",
                "integer",
                0,
                "Number of replicas requested in the spec.",
            ),
            col(
                "Current",
                "integer",
                0,
                "Number of pods the replica set has.",
            ),
            col("Ready", "integer", 0, "Number of ready pods."),
            age_col(),
            col("Containers", "string", 1, CONTAINERS_DESC),
            col("Images", "string", 1, IMAGES_DESC),
            col(
                "Selector",
                "string",
                1,
                "Label selector of the pods the replica set manages.",
            ),
        ],
        ("apps", "StatefulSet") => vec![
            name_col(),
            col("Ready", "string", 0, "Ready pods out of desired replicas."),
            age_col(),
            col("Containers", "string", 1, CONTAINERS_DESC),
            col("Images", "string", 1, IMAGES_DESC),
        ],
        ("apps", "ControllerRevision") => vec![
            name_col(),
            col(
                "Controller",
                "string",
                0,
                "The object that owns the revision (kind.group/name).",
            ),
            col("Revision", "string", 0, "The revision number."),
            age_col(),
        ],
        ("discovery.k8s.io", "EndpointSlice") => vec![
            name_col(),
            col(
                "AddressType",
                "string",
                0,
                "The kind of addresses in the slice: IPv4, IPv6 or FQDN.",
            ),
            col("Ports", "string", 0, "Ports of the endpoints."),
            col("Endpoints", "string", 0, "Addresses of the endpoints."),
            age_col(),
        ],
        ("coordination.k8s.io", "Lease") => vec![
            name_col(),
            col(
                "Holder",
                "string",
                0,
                "Identity of the current holder of the lease.",
            ),
            age_col(),
        ],
        _ => vec![name_col(), age_col()],
    }
}

/// The cells of one row, in the order of [`column_definitions`].
pub fn row_cells(rt: &ResourceType, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let name = json!(s(obj, "/metadata/name"));
    let age = json!(age_at(obj.pointer_at("/metadata/creationTimestamp"), now));
    match (rt.group, rt.kind) {
        ("", "Pod") => pod_cells(obj, now),
        ("", "Service") => {
            let ty = s(obj, "/spec/type");
            let cluster_ip = obj
                .pointer_at("/spec/clusterIPs/0")
                .and_then(Value::as_str)
                .unwrap_or("<none>");
            let ports = list(obj, "/spec/ports")
                .iter()
                .map(|p| {
                    let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                    let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("");
                    match p.get("nodePort").and_then(Value::as_i64) {
                        Some(np) if np > 0 => format!("{port}:{np}/{protocol}"),
                        _ => format!("{port}/{protocol}"),
                    }
                })
                .collect::<Vec<_>>()
                .join(",");
            let ports = if ports.is_empty() {
                "<none>".to_string()
            } else {
                ports
            };
            vec![
                name,
                json!(ty),
                json!(cluster_ip),
                json!(service_external_ip(obj)),
                json!(ports),
                age,
                json!(format_labels(obj.pointer_at("/spec/selector"))),
            ]
        }
        ("", "Endpoints") => vec![name, json!(format_endpoints(obj)), age],
        ("", "Namespace") => vec![name, json!(s(obj, "/status/phase")), age],
        ("", "Node") => node_cells(obj, name, age),
        ("", "Event") => event_cells(obj, now),
        ("events.k8s.io", "Event") => {
            if obj.get("involvedObject").is_some() || obj.get("regarding").is_none() {
                event_cells(obj, now)
            } else {
                event_cells(&crate::events::to_core(obj), now)
            }
        }
        ("", "ConfigMap") => {
            let n = count_keys(obj, "/data") + count_keys(obj, "/binaryData");
            vec![name, json!(n), age]
        }
        ("", "Secret") => {
            let mut keys: Vec<&String> = Vec::new();
            for field in ["/data", "/stringData"] {
                if let Some(m) = obj.pointer_at(field).and_then(Value::as_object) {
                    keys.extend(m.keys());
                }
            }
            keys.sort();
            keys.dedup();
            vec![name, json!(s(obj, "/type")), json!(keys.len()), age]
        }
        ("", "ServiceAccount") => vec![name, json!(list(obj, "/secrets").len()), age],
        ("apps", "Deployment") => {
            let (containers, images) = container_cells(obj);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(obj, "/status/readyReplicas"),
                    int(obj, "/spec/replicas")
                )),
                json!(int(obj, "/status/updatedReplicas")),
                json!(int(obj, "/status/availableReplicas")),
                age,
                json!(containers),
                json!(images),
                json!(selector_string(obj.pointer_at("/spec/selector"), "")),
            ]
        }
        ("apps", "ReplicaSet") => {
            let (containers, images) = container_cells(obj);
            vec![
                name,
                json!(int(obj, "/spec/replicas")),
                json!(int(obj, "/status/replicas")),
                json!(int(obj, "/status/readyReplicas")),
                age,
                json!(containers),
                json!(images),
                json!(selector_string(obj.pointer_at("/spec/selector"), "<none>")),
            ]
        }
        ("apps", "StatefulSet") => {
            let (containers, images) = container_cells(obj);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(obj, "/status/readyReplicas"),
                    int(obj, "/spec/replicas")
                )),
                age,
                json!(containers),
                json!(images),
            ]
        }
        ("apps", "ControllerRevision") => {
            let controller = list(obj, "/metadata/ownerReferences")
                .iter()
                .find(|r| r.get("controller") == Some(&json!(true)))
                .map(|r| {
                    let kind = r.get("kind").and_then(Value::as_str).unwrap_or("");
                    let api_version = r.get("apiVersion").and_then(Value::as_str).unwrap_or("");
                    let group = api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
                    let name = r.get("name").and_then(Value::as_str).unwrap_or("");
                    let group_kind = if group.is_empty() {
                        kind.to_string()
                    } else {
                        format!("{kind}.{group}")
                    };
                    if group_kind.is_empty() {
                        name.to_string()
                    } else {
                        format!("{}/{name}", group_kind.to_lowercase())
                    }
                })
                .unwrap_or_else(|| "<none>".to_string());
            vec![name, json!(controller), json!(int(obj, "/revision")), age]
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            let ports: Vec<String> = list(obj, "/ports")
                .iter()
                .map(
                    |p| match (p.get("port").and_then(Value::as_i64), p.get("name")) {
                        (Some(n), _) => n.to_string(),
                        (None, Some(Value::String(n))) => n.clone(),
                        _ => "*".to_string(),
                    },
                )
                .collect();
            let addresses: Vec<String> = list(obj, "/endpoints")
                .iter()
                .flat_map(|e| {
                    e.get("addresses")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                })
                .map(|a| a.as_str().unwrap_or("").to_string())
                .collect();
            vec![
                name,
                json!(s(obj, "/addressType")),
                json!(first_three(&ports, "<unset>")),
                json!(first_three(&addresses, "<unset>")),
                age,
            ]
        }
        ("coordination.k8s.io", "Lease") => {
            vec![name, json!(s(obj, "/spec/holderIdentity")), age]
        }
        _ => vec![name, age],
    }
}

/// `rows[].conditions` Kubernetes attaches to a row (pods that finished are `Completed`).
pub fn row_conditions(rt: &ResourceType, obj: &Value) -> Option<Value> {
    if !(rt.group.is_empty() && rt.kind == "Pod") {
        return None;
    }
    let (reason, message) = match s(obj, "/status/phase") {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(json!([{"type": "Completed", "status": "True", "reason": reason, "message": message}]))
}

/// What a Table row carries as `object`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    /// `includeObject=None`
    None,
    /// The default: a `PartialObjectMetadata` (kubectl needs it for `-A` and `--show-labels`).
    Metadata,
    /// `includeObject=Object`
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter (empty means the default).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "Metadata" => Some(IncludeObject::Metadata),
            "None" => Some(IncludeObject::None),
            "Object" => Some(IncludeObject::Object),
            _ => None,
        }
    }
}

/// `PartialObjectMetadata` of an object, as Table rows carry it.
pub fn partial_object_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// [`row`] of an object the caller gives up: its metadata moves into the row instead of being
/// copied (what a Table of 100,000 pods spends most of its time on otherwise).
pub fn row_owned(
    rt: &ResourceType,
    mut obj: Value,
    now: DateTime<Utc>,
    include: IncludeObject,
) -> Value {
    let mut r = Map::new();
    r.insert("cells".into(), Value::Array(row_cells(rt, &obj, now)));
    if let Some(c) = row_conditions(rt, &obj) {
        r.insert("conditions".into(), c);
    }
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            let metadata = obj
                .get_mut("metadata")
                .map(Value::take)
                .unwrap_or_else(|| json!({}));
            r.insert(
                "object".into(),
                json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": metadata,
                }),
            );
        }
        IncludeObject::Object => {
            r.insert("object".into(), obj);
        }
    }
    Value::Object(r)
}

/// [`table`] of objects the caller gives up (see [`row_owned`]).
pub fn table_owned(
    rt: &ResourceType,
    items: Vec<Value>,
    now: DateTime<Utc>,
    resource_version: &str,
    continue_token: Option<&str>,
    include: IncludeObject,
) -> Value {
    let mut metadata = Map::new();
    metadata.insert("resourceVersion".into(), json!(resource_version));
    if let Some(c) = continue_token.filter(|c| !c.is_empty()) {
        metadata.insert("continue".into(), json!(c));
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": column_definitions(rt),
        "rows": items.into_iter().map(|o| row_owned(rt, o, now, include)).collect::<Vec<_>>(),
    })
}

/// One Table row: cells, conditions and the object.
pub fn row(rt: &ResourceType, obj: &Value, now: DateTime<Utc>, include: IncludeObject) -> Value {
    let mut r = Map::new();
    r.insert("cells".into(), Value::Array(row_cells(rt, obj, now)));
    if let Some(c) = row_conditions(rt, obj) {
        r.insert("conditions".into(), c);
    }
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            r.insert("object".into(), partial_object_metadata(obj));
        }
        IncludeObject::Object => {
            r.insert("object".into(), obj.clone());
        }
    }
    Value::Object(r)
}

/// A whole `meta.k8s.io/v1` Table; `continue_token` is set for a partial list.
pub fn table<'a>(
    rt: &ResourceType,
    items: impl IntoIterator<Item = &'a Value>,
    now: DateTime<Utc>,
    resource_version: &str,
    continue_token: Option<&str>,
    include: IncludeObject,
) -> Value {
    let mut metadata = Map::new();
    metadata.insert("resourceVersion".into(), json!(resource_version));
    if let Some(c) = continue_token.filter(|c| !c.is_empty()) {
        metadata.insert("continue".into(), json!(c));
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": column_definitions(rt),
        "rows": items.into_iter().map(|o| row(rt, o, now, include)).collect::<Vec<_>>(),
    })
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

/// Kubernetes' `duration.HumanDuration`: `4s`, `2m39s`, `115m`, `5h3m`, `19d`, `2y10d`.
pub fn human_duration(d: chrono::Duration) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn parse_time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let s = v?.as_str()?;
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Age of a timestamp field, `<unknown>` when absent.
pub fn age_at(ts: Option<&Value>, now: DateTime<Utc>) -> String {
    match parse_time(ts) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `Value::pointer` without its allocations: serde_json's decodes every token into a fresh
/// `String`, which a Table of 100,000 rows pays millions of times. Tokens with `~` escapes
/// (none of the paths here have them) go through `Value::pointer` itself.
trait Pointer {
    fn pointer_at(&self, pointer: &str) -> Option<&Value>;
}

impl Pointer for Value {
    fn pointer_at(&self, pointer: &str) -> Option<&Value> {
        if pointer.contains('~') || !(pointer.is_empty() || pointer.starts_with('/')) {
            return self.pointer(pointer);
        }
        pointer
            .split('/')
            .skip(1)
            .try_fold(self, |target, token| match target {
                Value::Object(map) => map.get(token),
                // As serde_json: no sign, no leading zero.
                Value::Array(list)
                    if !token.starts_with('+') && (token == "0" || !token.starts_with('0')) =>
                {
                    token.parse::<usize>().ok().and_then(|i| list.get(i))
                }
                _ => None,
            })
    }
}

fn s<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer_at(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn int(obj: &Value, pointer: &str) -> i64 {
    obj.pointer_at(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn list<'a>(obj: &'a Value, pointer: &str) -> &'a [Value] {
    obj.pointer_at(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn count_keys(obj: &Value, pointer: &str) -> usize {
    obj.pointer_at(pointer)
        .and_then(Value::as_object)
        .map_or(0, Map::len)
}

/// `k=v,k2=v2` sorted by key, `<none>` when empty (Kubernetes' `labels.FormatLabels`).
fn format_labels(labels: Option<&Value>) -> String {
    let Some(m) = labels.and_then(Value::as_object).filter(|m| !m.is_empty()) else {
        return "<none>".into();
    };
    let mut pairs: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    pairs.join(",")
}

/// The string form of a `metav1.LabelSelector`; `empty` when it selects everything,
/// `<invalid>` when it does not parse.
fn selector_string(sel: Option<&Value>, empty: &str) -> String {
    match LabelSelector::from_json(sel.unwrap_or(&Value::Null)) {
        Ok(parsed) => {
            let text = parsed.to_string();
            if text.is_empty() {
                empty.to_string()
            } else {
                text
            }
        }
        Err(_) => "<invalid>".into(),
    }
}

fn container_cells(obj: &Value) -> (String, String) {
    let containers = list(obj, "/spec/template/spec/containers");
    let names = containers
        .iter()
        .map(|c| c.get("name").and_then(Value::as_str).unwrap_or(""))
        .collect::<Vec<_>>()
        .join(",");
    let images = containers
        .iter()
        .map(|c| c.get("image").and_then(Value::as_str).unwrap_or(""))
        .collect::<Vec<_>>()
        .join(",");
    (names, images)
}

/// The first three entries, then ` + N more...`; `when_empty` if there are none.
fn first_three(items: &[String], when_empty: &str) -> String {
    if items.is_empty() {
        return when_empty.to_string();
    }
    let shown = items.iter().take(3).cloned().collect::<Vec<_>>().join(",");
    if items.len() > 3 {
        format!("{shown} + {} more...", items.len() - 3)
    } else {
        shown
    }
}

fn format_endpoints(obj: &Value) -> String {
    let subsets = list(obj, "/subsets");
    if subsets.is_empty() {
        return "<none>".into();
    }
    let mut shown = Vec::new();
    let mut total = 0;
    for subset in subsets {
        let addresses: Vec<&str> = subset
            .get("addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|a| a.get("ip").and_then(Value::as_str).unwrap_or(""))
            .collect();
        let ports = subset
            .get("ports")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if ports.is_empty() {
            // Headless services may have no ports: list bare addresses.
            total += addresses.len();
            shown.extend(addresses.iter().map(|a| a.to_string()));
            continue;
        }
        for port in ports {
            let n = port.get("port").and_then(Value::as_i64).unwrap_or(0);
            total += addresses.len();
            shown.extend(addresses.iter().map(|a| join_host_port(a, n)));
        }
    }
    shown.truncate(3);
    let text = shown.join(",");
    if total > 3 {
        format!("{text} + {} more...", total - 3)
    } else {
        text
    }
}

fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn service_external_ip(svc: &Value) -> String {
    let external: Vec<&str> = list(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match s(svc, "/spec/type") {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".into()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let ingress: Vec<&str> = list(svc, "/status/loadBalancer/ingress")
                .iter()
                .filter_map(|i| {
                    i.get("ip")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .or_else(|| i.get("hostname").and_then(Value::as_str))
                })
                .collect();
            let mut all: Vec<&str> = ingress;
            all.extend(external);
            if all.is_empty() {
                "<pending>".into()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => s(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".into(),
    }
}

fn node_cells(obj: &Value, name: Value, age: Value) -> Vec<Value> {
    let mut status: Vec<String> = list(obj, "/status/conditions")
        .iter()
        .filter(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        .take(1)
        .map(|c| {
            if c.get("status").and_then(Value::as_str) == Some("True") {
                "Ready".to_string()
            } else {
                "NotReady".to_string()
            }
        })
        .collect();
    if status.is_empty() {
        status.push("Unknown".into());
    }
    if obj.pointer_at("/spec/unschedulable") == Some(&json!(true)) {
        status.push("SchedulingDisabled".into());
    }
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = obj
        .pointer_at("/metadata/labels")
        .and_then(Value::as_object)
    {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role.to_string());
                }
            } else if k == "kubernetes.io/role"
                && let Some(v) = v.as_str().filter(|v| !v.is_empty())
            {
                roles.push(v.to_string());
            }
        }
    }
    roles.sort();
    roles.dedup();
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    };
    let address = |ty: &str| {
        list(obj, "/status/addresses")
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) == Some(ty))
            .and_then(|a| a.get("address").and_then(Value::as_str))
            .unwrap_or("<none>")
            .to_string()
    };
    let info = |key: &str| {
        let v = s(obj, &format!("/status/nodeInfo/{key}"));
        if v.is_empty() {
            "<unknown>".to_string()
        } else {
            v.to_string()
        }
    };
    vec![
        name,
        json!(status.join(",")),
        json!(roles),
        age,
        json!(s(obj, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

fn event_cells(ev: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let first_seen = if parse_time(ev.get("firstTimestamp")).is_some() {
        age_at(ev.get("firstTimestamp"), now)
    } else {
        age_at(ev.get("eventTime"), now)
    };
    let mut last_seen = if parse_time(ev.get("lastTimestamp")).is_some() {
        age_at(ev.get("lastTimestamp"), now)
    } else {
        first_seen.clone()
    };
    let mut count = ev.get("count").and_then(Value::as_i64).unwrap_or(0);
    if let Some(series) = ev.get("series").filter(|s| s.is_object()) {
        last_seen = age_at(series.get("lastObservedTime"), now);
        count = series.get("count").and_then(Value::as_i64).unwrap_or(0);
    } else if count == 0 {
        // Events written through events.k8s.io have no count until they repeat.
        count = 1;
    }
    let kind = s(ev, "/involvedObject/kind").to_lowercase();
    let involved_name = s(ev, "/involvedObject/name");
    let object = if involved_name.is_empty() {
        kind
    } else {
        format!("{kind}/{involved_name}")
    };
    let first_non_empty = |a: &str, b: &str| {
        if a.is_empty() {
            b.to_string()
        } else {
            a.to_string()
        }
    };
    let component = first_non_empty(s(ev, "/source/component"), s(ev, "/reportingComponent"));
    let instance = first_non_empty(s(ev, "/source/host"), s(ev, "/reportingInstance"));
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last_seen),
        json!(s(ev, "/type")),
        json!(s(ev, "/reason")),
        json!(object),
        json!(s(ev, "/involvedObject/fieldPath")),
        json!(source),
        json!(s(ev, "/message").trim()),
        json!(first_seen),
        json!(count),
        json!(s(ev, "/metadata/name")),
    ]
}

// ---------------------------------------------------------------------------------------------
// Pods (kubectl's status column logic)
// ---------------------------------------------------------------------------------------------

fn is_restartable_init(spec_init: &[Value], name: &str) -> bool {
    spec_init
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|c| c.get("restartPolicy"))
        .and_then(Value::as_str)
        == Some("Always")
}

fn has_condition_true(pod: &Value, ty: &str) -> bool {
    list(pod, "/status/conditions").iter().any(|c| {
        c.get("type").and_then(Value::as_str) == Some(ty)
            && c.get("status").and_then(Value::as_str) == Some("True")
    })
}

/// `(terminated.finishedAt)` of a container's last termination, if any.
fn last_terminated_at(status: &Value) -> Option<DateTime<Utc>> {
    parse_time(status.pointer_at("/lastState/terminated/finishedAt"))
}

fn terminated_reason(t: &Value, prefix: &str) -> String {
    let reason = t.get("reason").and_then(Value::as_str).unwrap_or("");
    if !reason.is_empty() {
        return format!("{prefix}{reason}");
    }
    let signal = t.get("signal").and_then(Value::as_i64).unwrap_or(0);
    if signal != 0 {
        format!("{prefix}Signal:{signal}")
    } else {
        let code = t.get("exitCode").and_then(Value::as_i64).unwrap_or(0);
        format!("{prefix}ExitCode:{code}")
    }
}

fn pod_cells(pod: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let spec_init = list(pod, "/spec/initContainers");
    let mut total = list(pod, "/spec/containers").len();
    total += spec_init
        .iter()
        .filter(|c| c.get("restartPolicy").and_then(Value::as_str) == Some("Always"))
        .count();
    let mut ready = 0;
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut last_sidecar_restart: Option<DateTime<Utc>> = None;
    let phase = s(pod, "/status/phase");
    let mut reason = phase.to_string();
    let status_reason = s(pod, "/status/reason");
    if !status_reason.is_empty() {
        reason = status_reason.to_string();
    }
    let gated = list(pod, "/status/conditions").iter().any(|c| {
        c.get("type").and_then(Value::as_str) == Some("PodScheduled")
            && c.get("reason").and_then(Value::as_str) == Some("SchedulingGated")
    });
    if gated {
        reason = "SchedulingGated".into();
    }

    let mut initializing = false;
    for (i, c) in list(pod, "/status/initContainerStatuses")
        .iter()
        .enumerate()
    {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        let restartable = is_restartable_init(spec_init, name);
        restarts += c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
        let finished = last_terminated_at(c);
        if finished > last_restart {
            last_restart = finished;
        }
        if restartable {
            sidecar_restarts += c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
            if finished > last_sidecar_restart {
                last_sidecar_restart = finished;
            }
        }
        let terminated = c.pointer_at("/state/terminated");
        let waiting_reason = c
            .pointer_at("/state/waiting/reason")
            .and_then(Value::as_str)
            .unwrap_or("");
        if terminated.is_some_and(|t| t.get("exitCode").and_then(Value::as_i64).unwrap_or(0) == 0) {
            continue;
        }
        if restartable && c.get("started") == Some(&json!(true)) {
            if c.get("ready") == Some(&json!(true)) {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            reason = terminated_reason(t, "Init:");
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{}", spec_init.len());
        }
        initializing = true;
        break;
    }

    if !initializing || has_condition_true(pod, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for c in list(pod, "/status/containerStatuses").iter().rev() {
            restarts += c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
            let finished = last_terminated_at(c);
            if finished > last_restart {
                last_restart = finished;
            }
            let waiting_reason = c
                .pointer_at("/state/waiting/reason")
                .and_then(Value::as_str)
                .unwrap_or("");
            let terminated = c.pointer_at("/state/terminated");
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                reason = terminated_reason(t, "");
            } else if c.get("ready") == Some(&json!(true))
                && c.pointer_at("/state/running").is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if has_condition_true(pod, "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }

    let deleting = pod
        .pointer_at("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null());
    if deleting && status_reason == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(now - t)),
        _ => restarts.to_string(),
    };

    let or_none = |v: &str| {
        if v.is_empty() {
            "<none>".to_string()
        } else {
            v.to_string()
        }
    };
    let pod_ip = or_none(
        pod.pointer_at("/status/podIPs/0/ip")
            .and_then(Value::as_str)
            .unwrap_or(""),
    );
    let gates = list(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_count = gates
            .iter()
            .filter(|g| {
                let ty = g.get("conditionType").and_then(Value::as_str).unwrap_or("");
                list(pod, "/status/conditions")
                    .iter()
                    .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
                    .is_some_and(|c| c.get("status").and_then(Value::as_str) == Some("True"))
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };
    vec![
        json!(s(pod, "/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        json!(age_at(pod.pointer_at("/metadata/creationTimestamp"), now)),
        json!(pod_ip),
        json!(or_none(s(pod, "/spec/nodeName"))),
        json!(or_none(s(pod, "/status/nominatedNodeName"))),
        json!(readiness_gates),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// RFC 3339 time `secs` seconds before `now()`.
    fn ago(secs: i64) -> String {
        (now() - chrono::Duration::seconds(secs))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    fn running_container(name: &str, restarts: i64, last_finished: Option<i64>) -> Value {
        let mut c = json!({"name": name, "ready": true, "restartCount": restarts,
                           "state": {"running": {"startedAt": ago(100)}}});
        if let Some(t) = last_finished {
            c["lastState"] = json!({"terminated": {"exitCode": 1, "finishedAt": ago(t)}});
        }
        c
    }

    /// Rows built from owned objects equal rows built from borrowed ones.
    #[test]
    fn owned_tables_equal_borrowed_ones() {
        let pods = find("", "v1", "pods").unwrap();
        let objs = vec![
            json!({"metadata": {"name": "a", "namespace": "x", "labels": {"k": "v"},
                "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Running"}}),
            json!({"metadata": null}),
            json!({"spec": {}}),
        ];
        for include in [
            IncludeObject::None,
            IncludeObject::Metadata,
            IncludeObject::Object,
        ] {
            assert_eq!(
                table_owned(pods, objs.clone(), now(), "7", Some("c"), include),
                table(pods, &objs, now(), "7", Some("c"), include),
                "{include:?}"
            );
        }
    }

    /// The allocation-free pointer finds exactly what `Value::pointer` finds.
    #[test]
    fn pointer_at_agrees_with_value_pointer() {
        let v = json!({"a": {"b": [10, {"c": "x"}], "~k": 1, "s/l": 2, "": 3}, "n": null});
        for p in [
            "",
            "/a",
            "/a/b",
            "/a/b/0",
            "/a/b/1/c",
            "/a/b/01",
            "/a/b/+1",
            "/a/b/2",
            "/a/b/-",
            "/a/~0k",
            "/a/s~1l",
            "/a/",
            "/n",
            "/n/x",
            "/missing",
            "a",
            "/a/b/1/c/d",
        ] {
            assert_eq!(v.pointer_at(p), v.pointer(p), "{p:?}");
        }
    }

    #[test]
    fn human_durations_match_kubernetes() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (4, "4s"),
            (119, "119s"),
            (159, "2m39s"),
            (180, "3m"),
            (115 * 60, "115m"),
            (3 * 3600 + 5 * 60, "3h5m"),
            (10 * 3600, "10h"),
            (50 * 3600, "2d2h"),
            (19 * 86400 + 7, "19d"),
            (800 * 86400, "2y70d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, expected) in cases {
            assert_eq!(
                human_duration(chrono::Duration::seconds(secs)),
                expected,
                "{secs}s"
            );
        }
    }

    /// (plural, group, object, expected cells) — several taken from the seed tutorials' output.
    #[test]
    fn rows_match_kubectl_output() {
        let cases: Vec<(&str, &str, Value, Value)> = vec![
            // `kubectl get service terra10-headless` (seed 17).
            (
                "",
                "services",
                json!({"metadata":{"name":"terra10-headless","creationTimestamp":ago(7)},"spec":{"type":"ClusterIP","clusterIP":"None","clusterIPs":["None"],"ports":[{"port":80,"protocol":"TCP","targetPort":8080}],"selector":{"app":"terra10"}}}),
                json!([
                    "terra10-headless",
                    "ClusterIP",
                    "None",
                    "<none>",
                    "80/TCP",
                    "7s",
                    "app=terra10"
                ]),
            ),
            (
                "",
                "services",
                json!({"metadata":{"name":"web","creationTimestamp":ago(60)},"spec":{"type":"NodePort","clusterIPs":["10.96.0.12"],"ports":[{"port":80,"nodePort":30080,"protocol":"TCP"},{"port":53,"protocol":"UDP"}]}}),
                json!([
                    "web",
                    "NodePort",
                    "10.96.0.12",
                    "<none>",
                    "80:30080/TCP,53/UDP",
                    "60s",
                    "<none>"
                ]),
            ),
            (
                "",
                "services",
                json!({"metadata":{"name":"lb"},"spec":{"type":"LoadBalancer","clusterIPs":["10.96.0.13"],"ports":[]}}),
                json!([
                    "lb",
                    "LoadBalancer",
                    "10.96.0.13",
                    "<pending>",
                    "<none>",
                    "<unknown>",
                    "<none>"
                ]),
            ),
            // `kubectl get endpoints sidecar-svc-headless` (seed headless-service-stateful-pods).
            (
                "",
                "endpoints",
                json!({"metadata":{"name":"sidecar-svc-headless","creationTimestamp":ago(19*60)},"subsets":[{"addresses":[{"ip":"10.36.0.0"},{"ip":"10.36.0.1"},{"ip":"10.39.0.1"}],"ports":[{"port":80,"protocol":"TCP"}]}]}),
                json!([
                    "sidecar-svc-headless",
                    "10.36.0.0:80,10.36.0.1:80,10.39.0.1:80",
                    "19m"
                ]),
            ),
            (
                "",
                "endpoints",
                json!({"metadata":{"name":"many"},"subsets":[{"addresses":[{"ip":"10.0.0.1"},{"ip":"10.0.0.2"}],"ports":[{"port":80},{"port":443}]}]}),
                json!([
                    "many",
                    "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more...",
                    "<unknown>"
                ]),
            ),
            (
                "",
                "endpoints",
                json!({"metadata":{"name":"empty"}}),
                json!(["empty", "<none>", "<unknown>"]),
            ),
            // `kubectl get pods` rows (seed headless-service-stateful-pods).
            (
                "",
                "pods",
                json!({"metadata":{"name":"curl","creationTimestamp":ago(19*86400+3600)},"spec":{"containers":[{"name":"curl"}]},
                "status":{"phase":"Running","podIP":"10.36.0.5","podIPs":[{"ip":"10.36.0.5"}],"containerStatuses":[running_container("curl",3,Some(115*60))]}}),
                json!([
                    "curl",
                    "1/1",
                    "Running",
                    "3 (115m ago)",
                    "19d",
                    "10.36.0.5",
                    "<none>",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                "",
                "pods",
                json!({"metadata":{"name":"sidecar-app-6f58cd9946-8zdkl","creationTimestamp":ago(159)},"spec":{"nodeName":"node-1","containers":[{"name":"a"},{"name":"b"}]},
                "status":{"phase":"Running","containerStatuses":[running_container("a",0,None),running_container("b",0,None)]}}),
                json!([
                    "sidecar-app-6f58cd9946-8zdkl",
                    "2/2",
                    "Running",
                    "0",
                    "2m39s",
                    "<none>",
                    "node-1",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                "",
                "pods",
                json!({"metadata":{"name":"new","creationTimestamp":ago(1)},"spec":{"containers":[{"name":"a"}]},"status":{"phase":"Pending"}}),
                json!([
                    "new", "0/1", "Pending", "0", "1s", "<none>", "<none>", "<none>", "<none>"
                ]),
            ),
            (
                "",
                "pods",
                json!({"metadata":{"name":"creating"},"spec":{"containers":[{"name":"a"}]},"status":{"phase":"Pending","containerStatuses":[{"name":"a","ready":false,"restartCount":0,"state":{"waiting":{"reason":"ContainerCreating"}}}]}}),
                json!([
                    "creating",
                    "0/1",
                    "ContainerCreating",
                    "0",
                    "<unknown>",
                    "<none>",
                    "<none>",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                "",
                "pods",
                json!({"metadata":{"name":"crash"},"spec":{"containers":[{"name":"a"}]},"status":{"phase":"Running","containerStatuses":[{"name":"a","ready":false,"restartCount":5,"state":{"waiting":{"reason":"CrashLoopBackOff"}},"lastState":{"terminated":{"exitCode":1,"finishedAt":ago(30)}}}]}}),
                json!([
                    "crash",
                    "0/1",
                    "CrashLoopBackOff",
                    "5 (30s ago)",
                    "<unknown>",
                    "<none>",
                    "<none>",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                "",
                "pods",
                json!({"metadata":{"name":"done"},"spec":{"restartPolicy":"Never","containers":[{"name":"a"}]},"status":{"phase":"Succeeded","containerStatuses":[{"name":"a","ready":false,"restartCount":0,"state":{"terminated":{"exitCode":0,"reason":"Completed"}}}]}}),
                json!([
                    "done",
                    "0/1",
                    "Completed",
                    "0",
                    "<unknown>",
                    "<none>",
                    "<none>",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                "",
                "pods",
                json!({"metadata":{"name":"failed"},"spec":{"containers":[{"name":"a"}]},"status":{"phase":"Failed","containerStatuses":[{"name":"a","restartCount":0,"state":{"terminated":{"exitCode":3}}}]}}),
                json!([
                    "failed",
                    "0/1",
                    "ExitCode:3",
                    "0",
                    "<unknown>",
                    "<none>",
                    "<none>",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                "",
                "pods",
                json!({"metadata":{"name":"init"},"spec":{"initContainers":[{"name":"i1"},{"name":"i2"}],"containers":[{"name":"a"}]},"status":{"phase":"Pending","initContainerStatuses":[{"name":"i1","restartCount":0,"state":{"terminated":{"exitCode":0}}},{"name":"i2","restartCount":0,"state":{"running":{}}}]}}),
                json!([
                    "init",
                    "0/1",
                    "Init:1/2",
                    "0",
                    "<unknown>",
                    "<none>",
                    "<none>",
                    "<none>",
                    "<none>"
                ]),
            ),
            (
                "",
                "pods",
                json!({"metadata":{"name":"bye","deletionTimestamp":ago(0)},"spec":{"containers":[{"name":"a"}],"readinessGates":[{"conditionType":"x/y"}]},"status":{"phase":"Running","conditions":[{"type":"x/y","status":"True"}],"containerStatuses":[running_container("a",0,None)]}}),
                json!([
                    "bye",
                    "1/1",
                    "Terminating",
                    "0",
                    "<unknown>",
                    "<none>",
                    "<none>",
                    "<none>",
                    "1/1"
                ]),
            ),
            // `kubectl get rs` (seed 17).
            (
                "apps",
                "replicasets",
                json!({"metadata":{"name":"terra10-rs","creationTimestamp":ago(4)},"spec":{"replicas":3,"selector":{"matchLabels":{"app":"terra10"}},"template":{"spec":{"containers":[{"name":"web","image":"terra10:1"}]}}},"status":{"replicas":3,"readyReplicas":1}}),
                json!([
                    "terra10-rs",
                    3,
                    3,
                    1,
                    "4s",
                    "web",
                    "terra10:1",
                    "app=terra10"
                ]),
            ),
            (
                "apps",
                "deployments",
                json!({"metadata":{"name":"nginx","creationTimestamp":ago(300)},"spec":{"replicas":2,"selector":{"matchLabels":{"app":"nginx"}},"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.25"},{"name":"side","image":"busybox"}]}}},"status":{"readyReplicas":1,"updatedReplicas":2,"availableReplicas":1}}),
                json!([
                    "nginx",
                    "1/2",
                    2,
                    1,
                    "5m",
                    "nginx,side",
                    "nginx:1.25,busybox",
                    "app=nginx"
                ]),
            ),
            (
                "apps",
                "statefulsets",
                json!({"metadata":{"name":"web"},"spec":{"replicas":2,"template":{"spec":{"containers":[{"name":"nginx","image":"nginx"}]}}},"status":{"readyReplicas":2}}),
                json!(["web", "2/2", "<unknown>", "nginx", "nginx"]),
            ),
            (
                "apps",
                "controllerrevisions",
                json!({"metadata":{"name":"web-7d","ownerReferences":[{"apiVersion":"apps/v1","kind":"StatefulSet","name":"web","uid":"u","controller":true}]},"revision":1}),
                json!(["web-7d", "statefulset.apps/web", 1, "<unknown>"]),
            ),
            (
                "",
                "namespaces",
                json!({"metadata":{"name":"default","creationTimestamp":ago(86400)},"status":{"phase":"Active"}}),
                json!(["default", "Active", "24h"]),
            ),
            (
                "",
                "nodes",
                json!({"metadata":{"name":"node-1","labels":{"node-role.kubernetes.io/control-plane":""}},"spec":{"unschedulable":true},"status":{"conditions":[{"type":"Ready","status":"True"}],"addresses":[{"type":"InternalIP","address":"10.0.0.4"}],"nodeInfo":{"kubeletVersion":"v1.33.1","osImage":"Debian"}}}),
                json!([
                    "node-1",
                    "Ready,SchedulingDisabled",
                    "control-plane",
                    "<unknown>",
                    "v1.33.1",
                    "10.0.0.4",
                    "<none>",
                    "Debian",
                    "<unknown>",
                    "<unknown>"
                ]),
            ),
            (
                "",
                "events",
                json!({"metadata":{"name":"nginx.1"},"involvedObject":{"kind":"Pod","name":"nginx","fieldPath":"spec.containers{nginx}"},"reason":"Pulled","message":"pulled ","type":"Normal","source":{"component":"kubelet","host":"node-1"},"firstTimestamp":ago(600),"lastTimestamp":ago(60),"count":4}),
                json!([
                    "60s",
                    "Normal",
                    "Pulled",
                    "pod/nginx",
                    "spec.containers{nginx}",
                    "kubelet, node-1",
                    "pulled",
                    "10m",
                    4,
                    "nginx.1"
                ]),
            ),
            (
                "events.k8s.io",
                "events",
                json!({"metadata":{"name":"web.2"},"regarding":{"kind":"StatefulSet","name":"web"},"reason":"SuccessfulCreate","note":"create Pod web-0","type":"Normal","reportingController":"statefulset-controller","eventTime":"2026-11-23T11:59:50.000000Z"}),
                json!([
                    "10s",
                    "Normal",
                    "SuccessfulCreate",
                    "statefulset/web",
                    "",
                    "statefulset-controller",
                    "create Pod web-0",
                    "10s",
                    1,
                    "web.2"
                ]),
            ),
            (
                "",
                "configmaps",
                json!({"metadata":{"name":"cfg"},"data":{"a":"1","b":"2"},"binaryData":{"c":"AA=="}}),
                json!(["cfg", 3, "<unknown>"]),
            ),
            (
                "",
                "secrets",
                json!({"metadata":{"name":"s"},"type":"Opaque","data":{"a":"MQ=="}}),
                json!(["s", "Opaque", 1, "<unknown>"]),
            ),
            (
                "",
                "serviceaccounts",
                json!({"metadata":{"name":"default"}}),
                json!(["default", 0, "<unknown>"]),
            ),
            (
                "discovery.k8s.io",
                "endpointslices",
                json!({"metadata":{"name":"web-abc"},"addressType":"IPv4","ports":[{"name":"http","port":80}],"endpoints":[{"addresses":["10.0.0.1"]},{"addresses":["10.0.0.2"]},{"addresses":["10.0.0.3"]},{"addresses":["10.0.0.4"]}]}),
                json!([
                    "web-abc",
                    "IPv4",
                    "80",
                    "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...",
                    "<unknown>"
                ]),
            ),
            (
                "discovery.k8s.io",
                "endpointslices",
                json!({"metadata":{"name":"none"},"addressType":"IPv4"}),
                json!(["none", "IPv4", "<unset>", "<unset>", "<unknown>"]),
            ),
            (
                "coordination.k8s.io",
                "leases",
                json!({"metadata":{"name":"node-1"},"spec":{"holderIdentity":"node-1"}}),
                json!(["node-1", "node-1", "<unknown>"]),
            ),
        ];
        for (group, plural, obj, expected) in cases {
            let rt = find(group, "v1", plural).unwrap();
            let cells = Value::Array(row_cells(rt, &obj, now()));
            assert_eq!(cells, expected, "{plural}: {obj}");
            assert_eq!(
                column_definitions(rt).len(),
                expected.as_array().unwrap().len(),
                "{plural}: one cell per column"
            );
        }
    }

    #[test]
    fn column_sets_match_kubectl() {
        // (plural, group, columns at priority 0 | priority 1)
        let cases = [
            (
                "",
                "pods",
                "Name Ready Status Restarts Age | IP Node Nominated-Node Readiness-Gates",
            ),
            (
                "",
                "services",
                "Name Type Cluster-IP External-IP Port(s) Age | Selector",
            ),
            ("", "endpoints", "Name Endpoints Age |"),
            (
                "apps",
                "deployments",
                "Name Ready Up-to-date Available Age | Containers Images Selector",
            ),
            (
                "apps",
                "replicasets",
                "Name Desired Current Ready Age | Containers Images Selector",
            ),
            ("apps", "statefulsets", "Name Ready Age | Containers Images"),
            ("", "namespaces", "Name Status Age |"),
            (
                "",
                "events",
                "Last-Seen Type Reason Object Message | Subobject Source First-Seen Count Name",
            ),
        ];
        for (group, plural, expected) in cases {
            let cols = column_definitions(find(group, "v1", plural).unwrap());
            let names = |p: i64| {
                cols.iter()
                    .filter(|c| c["priority"] == p)
                    .map(|c| c["name"].as_str().unwrap().replace(' ', "-"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            assert_eq!(
                format!("{} | {}", names(0), names(1)).trim_end(),
                expected,
                "{plural}"
            );
            assert_eq!(
                cols[0]["format"],
                if plural == "events" { "" } else { "name" }
            );
        }
    }

    #[test]
    fn tables_carry_metadata_and_conditions() {
        let pods = find("", "v1", "pods").unwrap();
        let pod = json!({"metadata":{"name":"done","namespace":"default","labels":{"a":"b"}},"spec":{"containers":[{"name":"a"}]},"status":{"phase":"Succeeded"}});
        let t = table(
            pods,
            std::slice::from_ref(&pod),
            now(),
            "42",
            None,
            IncludeObject::Metadata,
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["metadata"], json!({"resourceVersion": "42"}));
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["labels"]["a"], "b");
        assert_eq!(t["rows"][0]["conditions"][0]["reason"], "Succeeded");
        let t = table(pods, &[pod], now(), "42", Some("next"), IncludeObject::None);
        assert_eq!(t["metadata"]["continue"], "next");
        assert!(t["rows"][0].get("object").is_none());
        assert_eq!(IncludeObject::parse("Object"), Some(IncludeObject::Object));
        assert_eq!(IncludeObject::parse("bogus"), None);
    }
}
