//! Per-kind create/update rules, as Kubernetes' REST strategies have them: defaulting,
//! validation, what an update may change, and which fields a status update touches.
//!
//! Contract used by the API server (bodies are JSON objects; `apiVersion`/`kind` are set from
//! `rt`; the API server has already set `metadata.namespace`, `name` (or resolved
//! `generateName`), `uid` and `creationTimestamp` before calling):
//!
//! - `prepare_create(rt, &mut obj)`: decode (400 with the field path on type errors or malformed
//!   quantities), apply Kubernetes defaults (e.g. Service `targetPort` = `port`, `protocol: TCP`,
//!   `sessionAffinity: None`, `ipFamilies`, Deployment strategy, StatefulSet `updateStrategy`,
//!   Pod `restartPolicy`, `dnsPolicy`, `terminationGracePeriodSeconds`, container
//!   `terminationMessagePath`, `imagePullPolicy` ...) and what the default admission plugins
//!   add to pods (service account, priority, not-ready/unreachable tolerations), reset
//!   `status` where Kubernetes does, set `metadata.generation` (1, or none for kinds without
//!   one), then validate; `Err` is a 422 `Invalid` with one cause per field.
//! - `prepare_update(rt, &old, &mut new)`: the same defaulting and validation, plus immutable
//!   fields (e.g. Service `clusterIP`, selector of apps/v1 workloads, Pod spec except images,
//!   StatefulSet spec except replicas/template/...), system metadata (`name`, `namespace`,
//!   `uid`, `creationTimestamp`, `deletionTimestamp`) and `status` (for kinds with a status
//!   subresource) kept from `old`, a Service's allocated ClusterIP/NodePorts carried over when
//!   the client left them out, and `generation` bumped when `spec` changed.
//! - `prepare_status_update(rt, &old, &mut new)`: only `status` (and for pods labels and
//!   annotations) taken from `new`, everything else from `old`; the status is validated.
//! - `unknown_fields(rt, &obj)`: dotted paths of fields the typed schema does not know, for
//!   `fieldValidation=Strict` ([`strict_decoding_error`]) or `Warn`
//!   ([`unknown_field_warnings`]).
//! - Subresources: [`bind_pod`] (`pods/binding`), [`prepare_namespace_finalize`]
//!   (`namespaces/finalize`; plain updates keep `spec.finalizers`).
//! - Helpers: [`generation_applies`], [`has_status_subresource`], [`service_needs_cluster_ip`],
//!   [`service_node_ports_to_allocate`], [`qos_class`], [`parse_quantity`],
//!   [`default_pull_policy`], and the name/label validators ([`is_dns1123_subdomain`],
//!   [`is_dns1123_label`], [`is_dns1035_label`], [`is_qualified_name`],
//!   [`is_valid_label_value`], [`is_valid_port_name`]) for the API server's own checks (e.g. a
//!   name made from `generateName`).
//!
//! Objects are passed in the form of `rt` (an `events.k8s.io/v1` Event is prepared as such;
//! converting it to the stored core/v1 form is `crate::events`' job, and an update's `old`
//! must be converted back with `events::from_core` first). Every body is decoded into its
//! `k8s-openapi` type and re-encoded, so fields the schema does not know are dropped exactly as
//! Kubernetes' decoder drops them (Strict field validation is checked first by the caller with
//! [`unknown_fields`]).
//!
//! What is *not* done here because it needs cluster state: allocating a Service's ClusterIP
//! (when [`service_needs_cluster_ip`] after `prepare_create`, allocate one and set both
//! `clusterIP` and `clusterIPs`) and NodePorts (see [`service_node_ports_to_allocate`]).

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::registry::ResourceType;
use crate::status::{ApiError, ApiResult, Causes};

// ---------------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------------

/// Defaults and validates a new object. On success `obj` is what is stored.
pub fn prepare_create(rt: &ResourceType, obj: &mut Value) -> ApiResult<()> {
    let known = decode(rt, obj)?;
    prepare_create_decoded(rt, obj, known)
}

/// The typed round trip of an object: what Kubernetes' decoder keeps of it. Fails as
/// [`prepare_create`] does on a body that does not decode.
pub fn decode_known(rt: &ResourceType, obj: &Value) -> ApiResult<Value> {
    decode(rt, obj)
}

/// [`prepare_create`] of an `obj` whose [`decode_known`] is `known`: callers that also need
/// [`unknown_fields_of`] decode once instead of twice.
pub fn prepare_create_decoded(rt: &ResourceType, obj: &mut Value, known: Value) -> ApiResult<()> {
    *obj = known;
    check_quantities(rt, obj)?;
    clear_namespace_if_cluster_scoped(rt, obj);
    reset_for_create(rt, obj);
    apply_defaults(rt, obj);
    if rt.group.is_empty() && rt.kind == "Pod" {
        admit_pod(obj);
        mark_scheduling_gated(obj);
    }
    if generation_applies(rt) {
        meta_mut(obj).insert("generation".into(), json!(1));
    } else {
        meta_mut(obj).remove("generation");
    }
    let mut causes = Causes::default();
    validate(rt, obj, &mut causes);
    if rt.group == "events.k8s.io" {
        validate_new_event_strictly(&crate::events::to_core(obj), &mut causes);
    }
    finish(rt, obj, causes)
}

/// Defaults and validates a replacement of `old` (a PUT, or the result of a PATCH).
pub fn prepare_update(rt: &ResourceType, old: &Value, new: &mut Value) -> ApiResult<()> {
    *new = decode(rt, new)?;
    check_quantities(rt, new)?;
    clear_namespace_if_cluster_scoped(rt, new);
    keep_system_metadata(old, new);
    if has_status_subresource(rt) {
        copy_field(old, new, "status");
    }
    if rt.group.is_empty() && rt.kind == "Namespace" {
        // Finalizers change only through namespaces/{name}/finalize.
        copy_field(old, new, "spec");
    }
    carry_over_allocated(rt, old, new);
    apply_defaults(rt, new);
    update_generation(rt, old, new);
    let mut causes = Causes::default();
    validate(rt, new, &mut causes);
    validate_update(rt, old, new, &mut causes);
    finish(rt, new, causes)
}

/// Prepares a write to the `status` subresource, as Kubernetes' status strategies do: `spec`
/// and system metadata come from `old`, and so do `labels` for apps/v1 workloads and
/// `ownerReferences` for pods; the rest of `new` (status, annotations such as a Deployment's
/// `deployment.kubernetes.io/revision`, a pod's labels) is kept. `generation` never changes.
pub fn prepare_status_update(rt: &ResourceType, old: &Value, new: &mut Value) -> ApiResult<()> {
    *new = decode(rt, new)?;
    clear_namespace_if_cluster_scoped(rt, new);
    keep_system_metadata(old, new);
    copy_field(old, new, "spec");
    let kept_meta: &[&str] = match (rt.group, rt.kind) {
        ("apps", _) => &["labels"],
        ("", "Pod") => &["ownerReferences"],
        _ => &[],
    };
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    for key in kept_meta {
        let m = meta_mut(new);
        match old_meta.get(*key) {
            Some(v) => {
                m.insert((*key).into(), v.clone());
            }
            None => {
                m.remove(*key);
            }
        }
    }
    if rt.group.is_empty() && rt.kind == "Pod" {
        // The QoS class is fixed at create; a status writer that omits it keeps it.
        if new.pointer("/status/qosClass").is_none()
            && let Some(qos) = old.pointer("/status/qosClass")
        {
            obj_mut(new, "status").insert("qosClass".into(), qos.clone());
        }
    }
    let mut causes = Causes::default();
    validate_object_meta(rt, new, &mut causes);
    validate_status(rt, new, &mut causes);
    finish(rt, new, causes)
}

/// Whether the kind keeps `metadata.generation` (1 on create, bumped on spec changes) as
/// Kubernetes does: the apps/v1 workloads, and pods since 1.33. Other kinds have none.
pub fn generation_applies(rt: &ResourceType) -> bool {
    (rt.group == "apps" && matches!(rt.kind, "Deployment" | "ReplicaSet" | "StatefulSet"))
        || (rt.group.is_empty() && rt.kind == "Pod")
}

/// Whether writes to the main resource keep `status` from the stored object.
pub fn has_status_subresource(rt: &ResourceType) -> bool {
    rt.subresource("status").is_some()
}

/// Dotted paths (`spec.foo`, `spec.containers[0].bar`) of fields in `obj` that the typed
/// schema of `rt` does not know. Empty when the body does not decode at all (the decode error
/// is reported by `prepare_*`).
pub fn unknown_fields(rt: &ResourceType, obj: &Value) -> Vec<String> {
    match decode(rt, obj) {
        Ok(known) => unknown_fields_of(obj, &known),
        Err(_) => Vec::new(),
    }
}

/// [`unknown_fields`] of `obj` given its [`decode_known`].
pub fn unknown_fields_of(obj: &Value, known: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_keys(obj, known, "", &mut out);
    out
}

/// The 400 Kubernetes answers for unknown fields under `fieldValidation=Strict`.
pub fn strict_decoding_error(fields: &[String]) -> ApiError {
    let list = fields
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect::<Vec<_>>()
        .join(", ");
    ApiError::bad_request(format!("strict decoding error: {list}"))
}

/// The warnings Kubernetes sends for unknown fields under `fieldValidation=Warn` (the default
/// for non-kubectl clients), one `Warning` header each.
pub fn unknown_field_warnings(fields: &[String]) -> Vec<String> {
    fields
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect()
}

/// Indices into `spec.ports` of a NodePort/LoadBalancer Service whose `nodePort` is unset and
/// must be allocated by the caller (range 30000-32767).
pub fn service_node_ports_to_allocate(svc: &Value) -> Vec<usize> {
    let ty = svc.pointer("/spec/type").and_then(Value::as_str);
    if !matches!(ty, Some("NodePort" | "LoadBalancer")) {
        return Vec::new();
    }
    ports_of(svc.pointer("/spec/ports"))
        .iter()
        .enumerate()
        .filter(|(_, p)| p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) == 0)
        .map(|(i, _)| i)
        .collect()
}

/// Prepares a write to `namespaces/{name}/finalize`: only `spec.finalizers` comes from `new`
/// (each a qualified name); everything else, status included, from `old`.
pub fn prepare_namespace_finalize(old: &Value, new: &mut Value) -> ApiResult<()> {
    let finalizers = new
        .pointer("/spec/finalizers")
        .cloned()
        .unwrap_or_else(|| json!([]));
    let mut merged = old.clone();
    obj_mut(&mut merged, "spec").insert("finalizers".into(), finalizers.clone());
    if let Some(rv) = new.pointer("/metadata/resourceVersion") {
        meta_mut(&mut merged).insert("resourceVersion".into(), rv.clone());
    }
    let mut causes = Causes::default();
    for (i, f) in ports_of(Some(&finalizers)).iter().enumerate() {
        let f = f.as_str().unwrap_or("");
        for msg in is_qualified_name(f) {
            causes.invalid(&format!("spec.finalizers[{i}]"), &json!(f), &msg);
        }
    }
    causes.finish("", "Namespace", name_of(old))?;
    *new = merged;
    Ok(())
}

/// The `pods/{name}/binding` subresource: assigns the pod to `node` (and marks it
/// `PodScheduled`), or the 409 Kubernetes answers when it is already assigned or deleting.
pub fn bind_pod(pod: &mut Value, node: &str) -> ApiResult<()> {
    let name = name_of(pod).to_string();
    let conflict = |why: String| ApiError::conflict("", "pods/binding", &name, &why);
    if pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        return Err(conflict(format!(
            "pod {name} is being deleted, cannot be assigned to a host"
        )));
    }
    let current = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !current.is_empty() {
        return Err(conflict(format!(
            "pod {name} is already assigned to node {current:?}"
        )));
    }
    obj_mut(pod, "spec").insert("nodeName".into(), json!(node));
    let status = obj_mut(pod, "status");
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    if let Some(list) = conditions.as_array_mut() {
        list.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
        list.push(json!({"type": "PodScheduled", "status": "True"}));
    }
    Ok(())
}

/// Whether a Service needs a ClusterIP allocated (type is not ExternalName and `clusterIP` is
/// empty, not `None`).
pub fn service_needs_cluster_ip(svc: &Value) -> bool {
    let ty = svc.pointer("/spec/type").and_then(Value::as_str);
    let ip = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("");
    ty != Some("ExternalName") && ip.is_empty()
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

fn decode(rt: &ResourceType, obj: &Value) -> ApiResult<Value> {
    use k8s_openapi::api::{apps::v1 as apps, coordination::v1 as coord, core::v1 as core};
    use k8s_openapi::api::{discovery::v1 as disc, events::v1 as ev};
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: expected a JSON object",
            rt.kind, rt.version, rt.kind
        )));
    }
    let mut obj = obj.clone();
    // The API server resolved the type from the URL; the typed decoders insist on both keys.
    obj["apiVersion"] = json!(rt.api_version());
    obj["kind"] = json!(rt.kind);
    match (rt.group, rt.kind) {
        ("", "Pod") => roundtrip::<core::Pod>(rt, &obj),
        ("", "Service") => roundtrip::<core::Service>(rt, &obj),
        ("", "Endpoints") => roundtrip::<core::Endpoints>(rt, &obj),
        ("", "Namespace") => roundtrip::<core::Namespace>(rt, &obj),
        ("", "Node") => roundtrip::<core::Node>(rt, &obj),
        ("", "Event") => roundtrip::<core::Event>(rt, &obj),
        ("", "ConfigMap") => roundtrip::<core::ConfigMap>(rt, &obj),
        ("", "Secret") => roundtrip::<core::Secret>(rt, &obj),
        ("", "ServiceAccount") => roundtrip::<core::ServiceAccount>(rt, &obj),
        ("apps", "Deployment") => roundtrip::<apps::Deployment>(rt, &obj),
        ("apps", "ReplicaSet") => roundtrip::<apps::ReplicaSet>(rt, &obj),
        ("apps", "StatefulSet") => roundtrip::<apps::StatefulSet>(rt, &obj),
        ("apps", "ControllerRevision") => roundtrip::<apps::ControllerRevision>(rt, &obj),
        ("discovery.k8s.io", "EndpointSlice") => roundtrip::<disc::EndpointSlice>(rt, &obj),
        ("events.k8s.io", "Event") => roundtrip::<ev::Event>(rt, &obj),
        ("coordination.k8s.io", "Lease") => roundtrip::<coord::Lease>(rt, &obj),
        _ => Err(ApiError::internal(format!(
            "no strategy for {}",
            rt.qualified_plural()
        ))),
    }
}

fn roundtrip<T: DeserializeOwned + Serialize>(rt: &ResourceType, obj: &Value) -> ApiResult<Value> {
    let typed: T = serde_path_to_error::deserialize(obj).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {}",
            rt.kind,
            rt.version,
            rt.kind,
            go_style_decode_error(&path, &inner)
        ))
    })?;
    let mut known = serde_json::to_value(&typed).map_err(|e| ApiError::internal(e.to_string()))?;
    prune_invented(obj, &mut known);
    Ok(known)
}

/// Drops the zero values the typed decoder invents for required fields the body left out
/// (`selector: {}` for a missing selector, `port: 0`), so validation sees "missing" as
/// Kubernetes does (for Go's non-pointer fields, missing and zero are the same) and nothing
/// appears that nobody wrote.
fn prune_invented(sent: &Value, known: &mut Value) {
    match (sent, known) {
        (Value::Object(s), Value::Object(k)) => {
            k.retain(|key, v| {
                s.get(key).is_some_and(|sv| !sv.is_null())
                    || !(v.as_object().is_some_and(Map::is_empty)
                        || v.as_array().is_some_and(Vec::is_empty)
                        || v.as_str() == Some("")
                        || v.as_i64() == Some(0)
                        || v.as_bool() == Some(false))
            });
            for (key, v) in k.iter_mut() {
                if let Some(sv) = s.get(key) {
                    prune_invented(sv, v);
                }
            }
        }
        (Value::Array(s), Value::Array(k)) => {
            for (sv, kv) in s.iter().zip(k.iter_mut()) {
                prune_invented(sv, kv);
            }
        }
        _ => {}
    }
}

/// Turns serde's `invalid type: string "3", expected i32` into the wording of Go's decoder
/// (`json: cannot unmarshal string into Go struct field .spec.replicas of type int32`).
fn go_style_decode_error(path: &str, serde_msg: &str) -> String {
    if let Some(rest) = serde_msg.strip_prefix("invalid type: ") {
        let got = if rest.starts_with("string") {
            "string"
        } else if rest.starts_with("integer") || rest.starts_with("floating point") {
            "number"
        } else if rest.starts_with("boolean") {
            "bool"
        } else if rest.starts_with("sequence") {
            "array"
        } else if rest.starts_with("map") {
            "object"
        } else {
            "value"
        };
        let expected = rest.rsplit(", expected ").next().unwrap_or("");
        let go_type = match expected {
            "i32" => "int32",
            "i64" => "int64",
            "u32" => "uint32",
            "f64" => "float64",
            "a boolean" | "bool" => "bool",
            e if e.contains("string") => "string",
            e if e.contains("sequence") || e.contains("list") => "array",
            _ => "object",
        };
        return format!(
            "json: cannot unmarshal {got} into Go struct field .{path} of type {go_type}"
        );
    }
    format!("error decoding {path}: {serde_msg}")
}

fn diff_keys(sent: &Value, known: &Value, prefix: &str, out: &mut Vec<String>) {
    match (sent, known) {
        (Value::Object(s), Value::Object(k)) => {
            for (key, v) in s {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                match k.get(key) {
                    Some(kv) => diff_keys(v, kv, &path, out),
                    // null, {} and [] of an optional known field vanish in the round trip.
                    None if is_empty_value(v) => {}
                    None => out.push(path),
                }
            }
        }
        (Value::Array(s), Value::Array(k)) => {
            for (i, (sv, kv)) in s.iter().zip(k).enumerate() {
                diff_keys(sv, kv, &format!("{prefix}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_empty_value),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Small JSON helpers
// ---------------------------------------------------------------------------------------------

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    obj_mut(obj, "metadata")
}

/// The object under `key`, created (or replacing a non-object) when missing.
fn obj_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    let m = v.as_object_mut().expect("object");
    let entry = m.entry(key.to_string()).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry.as_object_mut().expect("object")
}

/// Sets `key` unless it holds a value already (Go's "zero value means unset": empty strings
/// and zero numbers count as unset where the Go field is not a pointer; callers pick).
fn default_if_missing(m: &mut Map<String, Value>, key: &str, value: Value) {
    match m.get(key) {
        None | Some(Value::Null) => {
            m.insert(key.to_string(), value);
        }
        _ => {}
    }
}

/// Like [`default_if_missing`], also replacing `""` and `0` (non-pointer Go fields).
fn default_if_zero(m: &mut Map<String, Value>, key: &str, value: Value) {
    match m.get(key) {
        None | Some(Value::Null) => {
            m.insert(key.to_string(), value);
        }
        Some(Value::String(s)) if s.is_empty() => {
            m.insert(key.to_string(), value);
        }
        Some(Value::Number(n)) if n.as_i64() == Some(0) => {
            m.insert(key.to_string(), value);
        }
        _ => {}
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn ports_of(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn each_mut<'a>(
    m: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    m.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flat_map(|a| a.iter_mut())
        .filter_map(Value::as_object_mut)
}

fn copy_field(from: &Value, to: &mut Value, key: &str) {
    let Some(t) = to.as_object_mut() else { return };
    match from.get(key) {
        Some(v) => {
            t.insert(key.to_string(), v.clone());
        }
        None => {
            t.remove(key);
        }
    }
}

fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn finish(rt: &ResourceType, obj: &Value, causes: Causes) -> ApiResult<()> {
    causes.finish(rt.group, rt.kind, name_of(obj))
}

// ---------------------------------------------------------------------------------------------
// Create/update bookkeeping
// ---------------------------------------------------------------------------------------------

fn reset_for_create(rt: &ResourceType, obj: &mut Value) {
    let Some(m) = obj.as_object_mut() else { return };
    match (rt.group, rt.kind) {
        // Kubernetes clears status on create for kinds whose status is written by controllers.
        ("", "Pod") => {
            m.insert("status".into(), json!({"phase": "Pending"}));
        }
        ("", "Service") => {
            m.insert("status".into(), json!({"loadBalancer": {}}));
        }
        ("", "Namespace") => {
            m.insert("status".into(), json!({"phase": "Active"}));
        }
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet") => {
            m.insert("status".into(), json!({}));
        }
        _ => {}
    }
    if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
        // Deletion is requested with DELETE, never by creating a deleted object.
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
    }
}

/// Kubernetes silently drops a namespace sent on a cluster-scoped object.
fn clear_namespace_if_cluster_scoped(rt: &ResourceType, obj: &mut Value) {
    if !rt.namespaced
        && let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.remove("namespace");
    }
}

/// System-owned metadata always comes from the stored object.
fn keep_system_metadata(old: &Value, new: &mut Value) {
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let m = meta_mut(new);
    for key in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_meta.get(key) {
            Some(v) => {
                m.insert(key.into(), v.clone());
            }
            None => {
                m.remove(key);
            }
        }
    }
}

/// Values the server allocated that a client may omit on replace (Kubernetes'
/// `patchAllocatedValues`): a Service's ClusterIP(s) and NodePorts.
/// When a Service changes type, the fields only the old type uses are cleared if the client
/// left them as they were (Kubernetes' `dropTypeDependentFields`): NodePorts and traffic
/// policy when leaving NodePort/LoadBalancer, the ClusterIP and IP families when becoming
/// ExternalName.
fn drop_type_dependent_fields(old: &Value, new: &mut Value) {
    let ty = |v: &Value| {
        v.pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string()
    };
    let (old_type, new_type) = (ty(old), ty(new));
    if old_type == new_type {
        return;
    }
    let old_spec = old.get("spec").cloned().unwrap_or_default();
    let spec = obj_mut(new, "spec");
    let unchanged = |spec: &Map<String, Value>, key: &str| spec.get(key) == old_spec.get(key);
    let external = |t: &str| t == "NodePort" || t == "LoadBalancer";
    if external(&old_type) && !external(&new_type) {
        for key in ["externalTrafficPolicy", "healthCheckNodePort"] {
            if unchanged(spec, key) {
                spec.remove(key);
            }
        }
        let old_ports = ports_of(old_spec.get("ports")).to_vec();
        for p in each_mut(spec, "ports") {
            let np = p.get("nodePort").cloned();
            if np.is_some() && old_ports.iter().any(|o| o.get("nodePort") == np.as_ref()) {
                p.remove("nodePort");
            }
        }
    }
    if old_type == "LoadBalancer" && new_type != "LoadBalancer" {
        for key in ["allocateLoadBalancerNodePorts", "loadBalancerClass"] {
            if unchanged(spec, key) {
                spec.remove(key);
            }
        }
    }
    if new_type == "ExternalName" && old_type != "ExternalName" {
        for key in [
            "clusterIP",
            "clusterIPs",
            "ipFamilies",
            "ipFamilyPolicy",
            "internalTrafficPolicy",
        ] {
            if unchanged(spec, key) {
                spec.remove(key);
            }
        }
    }
}

fn carry_over_allocated(rt: &ResourceType, old: &Value, new: &mut Value) {
    if !(rt.group.is_empty() && rt.kind == "Service") {
        return;
    }
    drop_type_dependent_fields(old, new);
    let old_type = old.pointer("/spec/type").and_then(Value::as_str);
    let new_type = new
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .map(str::to_string);
    let new_type = new_type.as_deref();
    let needs_ip = |t: Option<&str>| t != Some("ExternalName");
    if needs_ip(old_type) && needs_ip(new_type) {
        let spec = obj_mut(new, "spec");
        if str_of(&Value::Object(spec.clone()), "clusterIP").is_empty() {
            if let Some(ip) = old.pointer("/spec/clusterIP") {
                spec.insert("clusterIP".into(), ip.clone());
            }
            let no_ips = spec
                .get("clusterIPs")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
            if no_ips && let Some(ips) = old.pointer("/spec/clusterIPs") {
                spec.insert("clusterIPs".into(), ips.clone());
            }
        }
    }
    let node_port_type = |t: Option<&str>| matches!(t, Some("NodePort" | "LoadBalancer"));
    if node_port_type(old_type) && node_port_type(new_type) {
        let old_ports = ports_of(old.pointer("/spec/ports")).to_vec();
        let spec = obj_mut(new, "spec");
        for p in each_mut(spec, "ports") {
            if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0 {
                continue;
            }
            let same = old_ports.iter().find(|o| {
                o.get("port") == p.get("port")
                    && str_of(o, "protocol")
                        == p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
            });
            if let Some(np) = same.and_then(|o| o.get("nodePort")) {
                p.insert("nodePort".into(), np.clone());
            }
        }
    }
}

fn update_generation(rt: &ResourceType, old: &Value, new: &mut Value) {
    if !generation_applies(rt) {
        return;
    }
    let old_gen = old
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    // Deployments also count annotation changes: they are copied to the ReplicaSets.
    let changed = old.get("spec") != new.get("spec")
        || (rt.kind == "Deployment"
            && old.pointer("/metadata/annotations") != new.pointer("/metadata/annotations"));
    let generation = if changed { old_gen + 1 } else { old_gen };
    meta_mut(new).insert("generation".into(), json!(generation));
}

// ---------------------------------------------------------------------------------------------
// Defaulting (Kubernetes' SetDefaults_* functions plus what the REST strategies set)
// ---------------------------------------------------------------------------------------------

fn apply_defaults(rt: &ResourceType, obj: &mut Value) {
    match (rt.group, rt.kind) {
        ("", "Pod") => default_pod(obj),
        ("", "Service") => default_service(obj_mut(obj, "spec")),
        ("", "Namespace") => {
            // Every namespace carries its own name as a label (selectable by namespaceSelector).
            let name = name_of(obj).to_string();
            if !name.is_empty() {
                let meta = meta_mut(obj);
                let labels = meta.entry("labels").or_insert_with(|| json!({}));
                if let Some(labels) = labels.as_object_mut() {
                    labels.insert("kubernetes.io/metadata.name".into(), json!(name));
                }
            }
            let spec = obj_mut(obj, "spec");
            default_if_missing(spec, "finalizers", json!(["kubernetes"]));
            let status = obj_mut(obj, "status");
            default_if_zero(status, "phase", json!("Active"));
        }
        ("", "Secret") => {
            if let Some(m) = obj.as_object_mut() {
                default_if_zero(m, "type", json!("Opaque"));
                merge_string_data(m);
            }
        }
        ("", "Endpoints") => {
            if let Some(m) = obj.as_object_mut() {
                for subset in each_mut(m, "subsets") {
                    for port in each_mut(subset, "ports") {
                        default_if_zero(port, "protocol", json!("TCP"));
                    }
                }
            }
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            if let Some(m) = obj.as_object_mut() {
                for port in each_mut(m, "ports") {
                    default_if_missing(port, "protocol", json!("TCP"));
                }
            }
        }
        ("apps", "Deployment") => {
            let spec = obj_mut(obj, "spec");
            default_if_missing(spec, "replicas", json!(1));
            default_if_missing(spec, "revisionHistoryLimit", json!(10));
            default_if_missing(spec, "progressDeadlineSeconds", json!(600));
            let strategy = spec
                .entry("strategy")
                .or_insert_with(|| json!({}))
                .as_object_mut();
            if let Some(strategy) = strategy {
                default_if_zero(strategy, "type", json!("RollingUpdate"));
                if strategy.get("type") == Some(&json!("RollingUpdate")) {
                    let ru = strategy.entry("rollingUpdate").or_insert_with(|| json!({}));
                    if let Some(ru) = ru.as_object_mut() {
                        default_if_missing(ru, "maxUnavailable", json!("25%"));
                        default_if_missing(ru, "maxSurge", json!("25%"));
                    }
                }
            }
            default_template(obj);
        }
        ("apps", "ReplicaSet") => {
            default_if_missing(obj_mut(obj, "spec"), "replicas", json!(1));
            default_template(obj);
        }
        ("apps", "StatefulSet") => {
            let spec = obj_mut(obj, "spec");
            default_if_missing(spec, "replicas", json!(1));
            default_if_zero(spec, "podManagementPolicy", json!("OrderedReady"));
            default_if_missing(spec, "revisionHistoryLimit", json!(10));
            let policy = spec
                .entry("persistentVolumeClaimRetentionPolicy")
                .or_insert_with(|| json!({}));
            if let Some(policy) = policy.as_object_mut() {
                default_if_zero(policy, "whenDeleted", json!("Retain"));
                default_if_zero(policy, "whenScaled", json!("Retain"));
            }
            let strategy = spec.entry("updateStrategy").or_insert_with(|| json!({}));
            if let Some(strategy) = strategy.as_object_mut() {
                default_if_zero(strategy, "type", json!("RollingUpdate"));
                if strategy.get("type") == Some(&json!("RollingUpdate")) {
                    let ru = strategy.entry("rollingUpdate").or_insert_with(|| json!({}));
                    if let Some(ru) = ru.as_object_mut() {
                        default_if_missing(ru, "partition", json!(0));
                    }
                }
            }
            default_template(obj);
        }
        _ => {}
    }
}

fn default_template(obj: &mut Value) {
    let spec = obj_mut(obj, "spec");
    let template = spec.entry("template").or_insert_with(|| json!({}));
    if let Some(t) = template.as_object_mut() {
        let pod_spec = t.entry("spec").or_insert_with(|| json!({}));
        if let Some(ps) = pod_spec.as_object_mut() {
            default_pod_spec(ps);
        }
    }
}

fn default_pod(obj: &mut Value) {
    let spec = obj_mut(obj, "spec");
    default_pod_spec(spec);
    let qos = qos_class(&Value::Object(spec.clone()));
    let status = obj_mut(obj, "status");
    default_if_zero(status, "phase", json!("Pending"));
    default_if_zero(status, "qosClass", json!(qos));
}

/// What Kubernetes' default admission plugins add to a new pod (ServiceAccount, Priority,
/// DefaultTolerationSeconds). Only on create: later updates may not change these fields.
/// A pod created with scheduling gates starts with `PodScheduled=False/SchedulingGated`.
fn mark_scheduling_gated(pod: &mut Value) {
    let gated = pod
        .pointer("/spec/schedulingGates")
        .and_then(Value::as_array)
        .is_some_and(|g| !g.is_empty());
    if !gated {
        return;
    }
    let status = obj_mut(pod, "status");
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    if let Some(list) = conditions.as_array_mut() {
        list.push(json!({
            "type": "PodScheduled",
            "status": "False",
            "reason": "SchedulingGated",
            "message": "Scheduling is blocked due to non-empty scheduling gates",
        }));
    }
}

fn admit_pod(obj: &mut Value) {
    let spec = obj_mut(obj, "spec");
    default_if_zero(spec, "serviceAccountName", json!("default"));
    let sa = spec.get("serviceAccountName").cloned().unwrap_or_default();
    default_if_zero(spec, "serviceAccount", sa);
    default_if_missing(spec, "priority", json!(0));
    default_if_missing(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    let existing = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut added = Vec::new();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let tolerated = existing.iter().any(|t| {
            let k = str_of(t, "key");
            let effect = str_of(t, "effect");
            (k.is_empty() || k == key) && (effect.is_empty() || effect == "NoExecute")
        });
        if !tolerated {
            added.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
    if !added.is_empty() {
        let mut all = existing;
        all.extend(added);
        spec.insert("tolerations".into(), Value::Array(all));
    }
}

fn default_pod_spec(spec: &mut Map<String, Value>) {
    default_if_zero(spec, "restartPolicy", json!("Always"));
    default_if_zero(spec, "dnsPolicy", json!("ClusterFirst"));
    default_if_zero(spec, "schedulerName", json!("default-scheduler"));
    default_if_missing(spec, "terminationGracePeriodSeconds", json!(30));
    default_if_missing(spec, "securityContext", json!({}));
    default_if_missing(spec, "enableServiceLinks", json!(true));
    let host_network = spec.get("hostNetwork") == Some(&json!(true));
    for key in ["containers", "initContainers"] {
        for c in each_mut(spec, key) {
            default_container(c, host_network);
        }
    }
    for v in each_mut(spec, "volumes") {
        default_volume(v);
    }
}

fn default_container(c: &mut Map<String, Value>, host_network: bool) {
    default_if_zero(c, "terminationMessagePath", json!("/dev/termination-log"));
    default_if_zero(c, "terminationMessagePolicy", json!("File"));
    let image = str_of(&Value::Object(c.clone()), "image").to_string();
    default_if_zero(c, "imagePullPolicy", json!(default_pull_policy(&image)));
    default_if_missing(c, "resources", json!({}));
    for p in each_mut(c, "ports") {
        default_if_zero(p, "protocol", json!("TCP"));
        if host_network && let Some(cp) = p.get("containerPort").cloned() {
            default_if_zero(p, "hostPort", cp);
        }
    }
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(probe) = c.get_mut(key).and_then(Value::as_object_mut) {
            default_if_zero(probe, "timeoutSeconds", json!(1));
            default_if_zero(probe, "periodSeconds", json!(10));
            default_if_zero(probe, "successThreshold", json!(1));
            default_if_zero(probe, "failureThreshold", json!(3));
            if let Some(get) = probe.get_mut("httpGet").and_then(Value::as_object_mut) {
                default_if_zero(get, "path", json!("/"));
                default_if_zero(get, "scheme", json!("HTTP"));
            }
        }
    }
    for env in each_mut(c, "env") {
        if let Some(field_ref) = env
            .get_mut("valueFrom")
            .and_then(|v| v.get_mut("fieldRef"))
            .and_then(Value::as_object_mut)
        {
            default_if_zero(field_ref, "apiVersion", json!("v1"));
        }
    }
}

/// `stringData` is write-only: Kubernetes merges it into `data` (base64, winning over `data`)
/// and never stores it.
fn merge_string_data(secret: &mut Map<String, Value>) {
    use base64::Engine as _;
    let Some(Value::Object(string_data)) = secret.remove("stringData") else {
        return;
    };
    if string_data.is_empty() {
        return;
    }
    let data = secret.entry("data").or_insert_with(|| json!({}));
    if !data.is_object() {
        *data = json!({});
    }
    let data = data.as_object_mut().expect("object");
    for (k, v) in string_data {
        let plain = v.as_str().unwrap_or_default();
        let encoded = base64::engine::general_purpose::STANDARD.encode(plain);
        data.insert(k, json!(encoded));
    }
}

/// `Always` for `:latest` or an untagged image, else `IfNotPresent` (digests count as tags).
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last_segment = image.rsplit('/').next().unwrap_or(image);
    match last_segment.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn default_volume(v: &mut Map<String, Value>) {
    let has_source = v.keys().any(|k| k != "name");
    if !has_source {
        v.insert("emptyDir".into(), json!({}));
    }
    for key in ["secret", "configMap", "projected", "downwardAPI"] {
        if let Some(src) = v.get_mut(key).and_then(Value::as_object_mut) {
            default_if_missing(src, "defaultMode", json!(420));
        }
    }
}

fn default_service(spec: &mut Map<String, Value>) {
    default_if_zero(spec, "type", json!("ClusterIP"));
    default_if_zero(spec, "sessionAffinity", json!("None"));
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if spec.get("sessionAffinity") == Some(&json!("ClientIP")) {
        let cfg = spec
            .entry("sessionAffinityConfig")
            .or_insert_with(|| json!({}));
        if let Some(cfg) = cfg.as_object_mut() {
            let client_ip = cfg.entry("clientIP").or_insert_with(|| json!({}));
            if let Some(client_ip) = client_ip.as_object_mut() {
                default_if_missing(client_ip, "timeoutSeconds", json!(10800));
            }
        }
    }
    for p in each_mut(spec, "ports") {
        default_if_zero(p, "protocol", json!("TCP"));
        let port = p.get("port").cloned().unwrap_or(Value::Null);
        default_if_zero(p, "targetPort", port);
    }
    if ty == "ExternalName" {
        return;
    }
    // clusterIP and clusterIPs mirror each other (`None` included).
    let ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let first = spec
        .get("clusterIPs")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .map(str::to_string);
    match (ip.is_empty(), first) {
        (false, None) => {
            spec.insert("clusterIPs".into(), json!([ip]));
        }
        (true, Some(f)) => {
            spec.insert("clusterIP".into(), json!(f));
        }
        _ => {}
    }
    default_if_missing(spec, "ipFamilyPolicy", json!("SingleStack"));
    default_if_missing(spec, "ipFamilies", json!(["IPv4"]));
    default_if_missing(spec, "internalTrafficPolicy", json!("Cluster"));
    if ty == "NodePort" || ty == "LoadBalancer" {
        default_if_zero(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        default_if_missing(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
}

/// Kubernetes' QoS class of a pod spec: `Guaranteed` when every container limits CPU and
/// memory with requests equal to limits, `BestEffort` when nothing is requested or limited,
/// `Burstable` otherwise.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|k| ports_of(spec.get(*k)).iter())
        .collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        let relevant = |m: Option<&Map<String, Value>>, r: &str| {
            m.and_then(|m| m.get(r))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        for r in ["cpu", "memory"] {
            let req = relevant(requests, r);
            let lim = relevant(limits, r);
            if req.as_deref().is_some_and(|q| !quantity_is_zero(q)) || lim.is_some() {
                any = true;
            }
            match (req, lim) {
                (_, None) => guaranteed = false,
                (Some(q), Some(l)) if !same_quantity(&q, &l) => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn quantity_is_zero(q: &str) -> bool {
    parse_quantity(q) == Some(0.0)
}

fn same_quantity(a: &str, b: &str) -> bool {
    a == b
        || matches!((parse_quantity(a), parse_quantity(b)), (Some(x), Some(y)) if (x - y).abs() <= f64::EPSILON * x.abs().max(1.0))
}

/// A Kubernetes quantity (`100m`, `1Gi`, `2e3`, `1E`) as a number; `None` when malformed.
pub fn parse_quantity(q: &str) -> Option<f64> {
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let number = |n: &str| -> Option<f64> {
        let digits = n.trim_start_matches(['+', '-']);
        let plain = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && digits.bytes().filter(|b| *b == b'.').count() <= 1
            && digits != ".";
        plain.then(|| n.parse::<f64>().ok()).flatten()
    };
    for (suffix, factor) in SUFFIXES {
        if let Some(n) = q.strip_suffix(suffix)
            && let Some(v) = number(n)
        {
            return Some(v * factor);
        }
    }
    if let Some(v) = number(q) {
        return Some(v);
    }
    // Decimal exponent: `2e3`, `1E-3`.
    let (mantissa, exponent) = q.split_once(['e', 'E'])?;
    let exponent: i32 = exponent.parse().ok()?;
    Some(number(mantissa)? * 10f64.powi(exponent))
}

/// Kubernetes rejects malformed quantities while decoding (a 400, not a 422).
fn check_quantities(rt: &ResourceType, obj: &Value) -> ApiResult<()> {
    let pod_spec = match (rt.group, rt.kind) {
        ("", "Pod") => obj.get("spec"),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet") => obj.pointer("/spec/template/spec"),
        _ => None,
    };
    let Some(pod_spec) = pod_spec else {
        return Ok(());
    };
    for key in ["containers", "initContainers"] {
        for ctr in ports_of(pod_spec.get(key)) {
            for kind in ["limits", "requests"] {
                let Some(m) = ctr
                    .pointer(&format!("/resources/{kind}"))
                    .and_then(Value::as_object)
                else {
                    continue;
                };
                for q in m.values() {
                    if q.as_str().and_then(parse_quantity).is_none() {
                        return Err(ApiError::bad_request(format!(
                            "{} in version \"{}\" cannot be handled as a {}: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                            rt.kind, rt.version, rt.kind
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Name and label validators (Kubernetes' apimachinery `validation.Is*`): each returns the
// messages of every rule broken, empty when valid.
// ---------------------------------------------------------------------------------------------

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// Go's `validation.RegexError`: the message, the examples, then the regex.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let examples = examples
        .iter()
        .map(|e| format!("'{e}', "))
        .collect::<Vec<_>>()
        .join(" or ");
    format!("{msg} (e.g. {examples}regex used for validation is '{fmt}')")
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn is_label_chars(s: &str, first_alpha: bool) -> bool {
    let b = s.as_bytes();
    let ok_inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    let ok_end = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            (if first_alpha {
                f.is_ascii_lowercase()
            } else {
                ok_end(f)
            }) && ok_end(l)
                && b.iter().all(ok_inner)
        }
        _ => false,
    }
}

pub fn is_dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !is_label_chars(s, false) {
        errs.push(regex_error(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    errs
}

pub fn is_dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len_error(253));
    }
    if s.is_empty() || !s.split('.').all(|l| is_label_chars(l, false)) {
        errs.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

pub fn is_dns1035_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !is_label_chars(s, true) {
        errs.push(regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Label keys, annotation keys, finalizers, condition types: `[prefix/]name`.
pub fn is_qualified_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_MSG,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !is_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

pub fn is_valid_label_value(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !s.is_empty() && !is_qualified_name_part(s) {
        errs.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            &format!("({QUALIFIED_NAME_FMT})?"),
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// IANA service names (named ports): at most 15 lower-case alphanumerics and hyphens.
pub fn is_valid_port_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 15 {
        errs.push(max_len_error(15));
    }
    if !s
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if s.contains("--") {
        errs.push("must not contain consecutive hyphens".into());
    }
    if !s.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        errs.push("must not begin or end with a hyphen".into());
    }
    errs
}

const PORT_RANGE_MSG: &str = "must be between 1 and 65535, inclusive";
const IP_MSG: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

fn is_valid_port(n: i64) -> bool {
    (1..=65535).contains(&n)
}

/// Go's `%#v` of a `map[string]string` (keys sorted), as Kubernetes prints label maps.
fn go_string_map(m: Option<&Value>) -> String {
    let Some(m) = m.and_then(Value::as_object) else {
        return "map[string]string(nil)".into();
    };
    let mut pairs: Vec<(&String, &Value)> = m.iter().collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let body = pairs
        .iter()
        .map(|(k, v)| format!("{:?}:{:?}", k, v.as_str().unwrap_or("")))
        .collect::<Vec<_>>()
        .join(", ");
    format!("map[string]string{{{body}}}")
}

/// Go's `%#v` of a `metav1.LabelSelector`.
fn go_label_selector(sel: &Value) -> String {
    let exprs = match sel.get("matchExpressions").and_then(Value::as_array) {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(list) => {
            let items = list
                .iter()
                .map(|e| {
                    let values = match e.get("values").and_then(Value::as_array) {
                        None => "[]string(nil)".to_string(),
                        Some(v) => format!(
                            "[]string{{{}}}",
                            v.iter()
                                .map(|s| format!("{:?}", s.as_str().unwrap_or("")))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{:?}, Operator:{:?}, Values:{values}}}",
                        str_of(e, "key"),
                        str_of(e, "operator")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!("[]v1.LabelSelectorRequirement{{{items}}}")
        }
    };
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{exprs}}}",
        go_string_map(sel.get("matchLabels"))
    )
}

fn invalid_shown(c: &mut Causes, field: &str, shown: &str, msg: &str) {
    c.push(
        "FieldValueInvalid",
        field,
        format!("Invalid value: {shown}: {msg}"),
    );
}

fn required_because(c: &mut Causes, field: &str, why: &str) {
    c.push(
        "FieldValueRequired",
        field,
        format!("Required value: {why}"),
    );
}

fn not_found(c: &mut Causes, field: &str, value: &str) {
    c.push("FieldValueNotFound", field, format!("Not found: {value:?}"));
}

fn check_supported(c: &mut Causes, field: &str, v: Option<&Value>, supported: &[&str]) {
    if let Some(val) = v
        && !val.is_null()
        && !val.as_str().is_some_and(|s| supported.contains(&s))
    {
        c.not_supported(field, val, supported);
    }
}

fn check_non_negative(c: &mut Causes, field: &str, v: Option<&Value>) {
    if let Some(n) = v.and_then(Value::as_i64)
        && n < 0
    {
        c.invalid(field, &json!(n), "must be greater than or equal to 0");
    }
}

fn check_ip(c: &mut Causes, field: &str, ip: &str) {
    if ip.parse::<IpAddr>().is_err() {
        c.invalid(field, &json!(ip), IP_MSG);
    }
}

fn check_labels(c: &mut Causes, field: &str, labels: Option<&Value>) {
    let Some(labels) = labels.and_then(Value::as_object) else {
        return;
    };
    for (k, v) in labels {
        for msg in is_qualified_name(k) {
            c.invalid(field, &json!(k), &msg);
        }
        let value = v.as_str().unwrap_or("");
        for msg in is_valid_label_value(value) {
            c.invalid(field, &json!(value), &msg);
        }
    }
}

const ANNOTATIONS_LIMIT: usize = 256 * 1024;

fn check_annotations(c: &mut Causes, field: &str, annotations: Option<&Value>) {
    let Some(annotations) = annotations.and_then(Value::as_object) else {
        return;
    };
    let mut total = 0;
    for (k, v) in annotations {
        for msg in is_qualified_name(&k.to_lowercase()) {
            c.invalid(field, &json!(k), &msg);
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > ANNOTATIONS_LIMIT {
        c.push(
            "FieldValueTooLong",
            field,
            format!("Too long: may not be more than {ANNOTATIONS_LIMIT} bytes"),
        );
    }
}

/// The name rule of each kind, as its Kubernetes `Validate*Name` function.
fn name_validator(rt: &ResourceType) -> fn(&str) -> Vec<String> {
    match (rt.group, rt.kind) {
        ("", "Namespace") => is_dns1123_label,
        ("", "Service") => is_dns1035_label,
        _ => is_dns1123_subdomain,
    }
}

fn validate_object_meta(rt: &ResourceType, obj: &Value, c: &mut Causes) {
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let name = str_of(&meta, "name");
    if name.is_empty() {
        if str_of(&meta, "generateName").is_empty() {
            required_because(c, "metadata.name", "name or generateName is required");
        }
    } else {
        for msg in name_validator(rt)(name) {
            c.invalid("metadata.name", &json!(name), &msg);
        }
    }
    let namespace = str_of(&meta, "namespace");
    if rt.namespaced {
        if namespace.is_empty() {
            c.required("metadata.namespace");
        } else {
            for msg in is_dns1123_label(namespace) {
                c.invalid("metadata.namespace", &json!(namespace), &msg);
            }
        }
    }
    check_labels(c, "metadata.labels", meta.get("labels"));
    check_annotations(c, "metadata.annotations", meta.get("annotations"));
    // Kubernetes reports finalizer errors on the list, without an index.
    for f in ports_of(meta.get("finalizers")) {
        let f = f.as_str().unwrap_or("");
        for msg in is_qualified_name(f) {
            c.invalid("metadata.finalizers", &json!(f), &msg);
        }
    }
    let mut controllers = 0;
    for r in ports_of(meta.get("ownerReferences")) {
        for (key, what) in [
            ("apiVersion", "version"),
            ("kind", "kind"),
            ("name", "name"),
            ("uid", "uid"),
        ] {
            if str_of(r, key).is_empty() {
                c.invalid(
                    &format!("metadata.ownerReferences.{key}"),
                    &json!(""),
                    &format!("{what} must not be empty"),
                );
            }
        }
        if r.get("controller") == Some(&json!(true)) {
            controllers += 1;
        }
    }
    if controllers > 1 {
        c.push(
            "FieldValueInvalid",
            "metadata.ownerReferences",
            "Invalid value: []v1.OwnerReference{...}: Only one reference can have Controller set to true".into(),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Per-kind validation
// ---------------------------------------------------------------------------------------------

fn validate(rt: &ResourceType, obj: &Value, c: &mut Causes) {
    // Kubernetes keeps core/v1 Events on their legacy rules only (no metadata checks).
    if rt.kind == "Event" {
        if rt.group == "events.k8s.io" {
            validate_object_meta(rt, obj, c);
            validate_event(&crate::events::to_core(obj), c);
        } else {
            validate_event(obj, c);
        }
        return;
    }
    validate_object_meta(rt, obj, c);
    let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    match (rt.group, rt.kind) {
        ("", "Pod") => validate_pod_spec(&spec, "spec", false, c),
        ("", "Service") => validate_service_spec(&spec, c),
        ("", "ConfigMap") => validate_data_keys(obj, c),
        ("", "Secret") => validate_data_keys(obj, c),
        ("", "Endpoints") => validate_endpoints(obj, c),
        ("discovery.k8s.io", "EndpointSlice") => validate_endpoint_slice(obj, c),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet") => {
            validate_workload(rt.kind, &spec, c)
        }
        ("apps", "ControllerRevision") => {
            check_non_negative(c, "revision", obj.get("revision"));
        }
        ("coordination.k8s.io", "Lease") => {
            if let Some(n) = spec.get("leaseDurationSeconds").and_then(Value::as_i64)
                && n <= 0
            {
                c.invalid(
                    "spec.leaseDurationSeconds",
                    &json!(n),
                    "must be greater than 0",
                );
            }
            check_non_negative(c, "spec.leaseTransitions", spec.get("leaseTransitions"));
        }
        _ => {}
    }
}

/// Kubernetes' `legacyValidateEvent` (`event` in core/v1 form), applied to every event: events
/// with an `eventTime` are "new" events and need the reporting fields.
fn validate_event(event: &Value, c: &mut Causes) {
    let text = |key: &str| str_of(event, key);
    let ns = event
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let involved_ns = event
        .pointer("/involvedObject/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let has_event_time = event.get("eventTime").is_some_and(|t| !t.is_null());
    let mismatch = |c: &mut Causes| {
        c.invalid(
            "involvedObject.namespace",
            &json!(involved_ns),
            "does not match event.namespace",
        )
    };
    if !has_event_time {
        let ok = if involved_ns.is_empty() {
            ns.is_empty() || ns == "default"
        } else {
            ns == involved_ns
        };
        if !ok {
            mismatch(c);
        }
    } else {
        if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
            mismatch(c);
        }
        let controller = text("reportingComponent");
        if controller.is_empty() {
            c.required("reportingController");
        }
        for msg in is_qualified_name(controller) {
            c.invalid("reportingController", &json!(controller), &msg);
        }
        for (field, limit) in [("reportingInstance", 128), ("action", 128), ("reason", 128)] {
            let v = text(field);
            if v.is_empty() {
                c.required(field);
            }
            if v.len() > limit {
                c.invalid(
                    field,
                    &json!(""),
                    &format!("can have at most {limit} characters"),
                );
            }
        }
        if text("message").len() > 1024 {
            c.invalid("message", &json!(""), "can have at most 1024 characters");
        }
    }
    for msg in is_dns1123_subdomain(ns) {
        c.invalid("namespace", &json!(ns), &msg);
    }
}

/// The extra rules for events created through events.k8s.io (`event` in core/v1 form).
fn validate_new_event_strictly(event: &Value, c: &mut Causes) {
    let text = |key: &str| str_of(event, key);
    let has_event_time = event.get("eventTime").is_some_and(|t| !t.is_null());
    validate_event_series(event, c);
    if !has_event_time {
        c.required("eventTime");
    }
    let ty = text("type");
    if ty != "Normal" && ty != "Warning" {
        c.invalid("type", &json!(""), &format!("has invalid value: {ty}"));
    }
    for field in ["firstTimestamp", "lastTimestamp", "count"] {
        if event
            .get(field)
            .is_some_and(|v| !v.is_null() && v != &json!(0))
        {
            c.invalid(field, &json!(""), "needs to be unset");
        }
    }
    if !str_of(event.get("source").unwrap_or(&Value::Null), "component").is_empty()
        || !str_of(event.get("source").unwrap_or(&Value::Null), "host").is_empty()
    {
        c.invalid("source", &json!(""), "needs to be unset");
    }
}

fn validate_event_series(event: &Value, c: &mut Causes) {
    let Some(series) = event.get("series").filter(|s| !s.is_null()) else {
        return;
    };
    if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
        c.invalid("series.count", &json!(""), "should be at least 2");
    }
    if series.get("lastObservedTime").is_none_or(Value::is_null) {
        c.required("series.lastObservedTime");
    }
}

/// Kubernetes' `ValidateEventUpdate` for updates through events.k8s.io (both in core form):
/// only `series` (and metadata) may change.
fn validate_event_update(old: &Value, new: &Value, c: &mut Causes) {
    if old.get("series") != new.get("series") {
        validate_event_series(new, c);
    }
    for field in [
        "involvedObject",
        "reason",
        "message",
        "source",
        "firstTimestamp",
        "lastTimestamp",
        "count",
        "type",
        "eventTime",
        "action",
        "related",
        "reportingComponent",
        "reportingInstance",
    ] {
        if old.get(field) != new.get(field) {
            let shown = if field == "reportingComponent" {
                "reportingController"
            } else {
                field
            };
            c.invalid(shown, new.get(field).unwrap_or(&Value::Null), IMMUTABLE);
        }
    }
}

fn validate_pod_spec(spec: &Value, p: &str, in_template: bool, c: &mut Causes) {
    let mut volume_names = BTreeSet::new();
    for (i, v) in ports_of(spec.get("volumes")).iter().enumerate() {
        let name = str_of(v, "name");
        let field = format!("{p}.volumes[{i}].name");
        if name.is_empty() {
            c.required(&field);
        } else {
            for msg in is_dns1123_label(name) {
                c.invalid(&field, &json!(name), &msg);
            }
            if !volume_names.insert(name.to_string()) {
                c.duplicate(&field, &json!(name));
            }
        }
    }
    let containers = ports_of(spec.get("containers"));
    if containers.is_empty() {
        c.required(&format!("{p}.containers"));
    }
    let mut names = BTreeSet::new();
    for key in ["initContainers", "containers"] {
        for (i, ctr) in ports_of(spec.get(key)).iter().enumerate() {
            let cp = format!("{p}.{key}[{i}]");
            let name = str_of(ctr, "name");
            if name.is_empty() {
                c.required(&format!("{cp}.name"));
            } else {
                for msg in is_dns1123_label(name) {
                    c.invalid(&format!("{cp}.name"), &json!(name), &msg);
                }
                if !names.insert(name.to_string()) {
                    c.duplicate(&format!("{cp}.name"), &json!(name));
                }
            }
            validate_container(ctr, &cp, &volume_names, key == "initContainers", c);
        }
    }
    let restart_supported: &[&str] = if in_template {
        &["Always"]
    } else {
        &["Always", "OnFailure", "Never"]
    };
    check_supported(
        c,
        &format!("{p}.restartPolicy"),
        spec.get("restartPolicy"),
        restart_supported,
    );
    check_supported(
        c,
        &format!("{p}.dnsPolicy"),
        spec.get("dnsPolicy"),
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
    );
    if str_of(spec, "dnsPolicy") == "None" && spec.get("dnsConfig").is_none() {
        required_because(
            c,
            &format!("{p}.dnsConfig"),
            "must provide `dnsConfig` when `dnsPolicy` is None",
        );
    }
    if let Some(n) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64) {
        if in_template {
            c.invalid(
                &format!("{p}.activeDeadlineSeconds"),
                &json!(n),
                "activeDeadlineSeconds in ReplicaSet is not Supported",
            );
        } else if n <= 0 {
            c.invalid(
                &format!("{p}.activeDeadlineSeconds"),
                &json!(n),
                "must be between 1 and 2147483647, inclusive",
            );
        }
    }
    for key in ["hostname", "subdomain"] {
        let v = str_of(spec, key);
        if !v.is_empty() {
            for msg in is_dns1123_label(v) {
                c.invalid(&format!("{p}.{key}"), &json!(v), &msg);
            }
        }
    }
    let node = str_of(spec, "nodeName");
    if !node.is_empty() {
        for msg in is_dns1123_subdomain(node) {
            c.invalid(&format!("{p}.nodeName"), &json!(node), &msg);
        }
    }
}

fn validate_container(
    ctr: &Value,
    cp: &str,
    volume_names: &BTreeSet<String>,
    init: bool,
    c: &mut Causes,
) {
    let image = str_of(ctr, "image");
    if image.trim().is_empty() {
        c.required(&format!("{cp}.image"));
    } else if image.trim() != image {
        c.invalid(
            &format!("{cp}.image"),
            &json!(image),
            "must not have leading or trailing whitespace",
        );
    }
    // Only init containers may set a restart policy (`Always` makes them sidecars).
    match (init, ctr.get("restartPolicy").and_then(Value::as_str)) {
        (_, None) | (true, Some("Always")) => {}
        (true, Some(other)) => {
            c.not_supported(&format!("{cp}.restartPolicy"), &json!(other), &["Always"])
        }
        (false, Some(_)) => c.forbidden(
            &format!("{cp}.restartPolicy"),
            "may not be set for non-init containers",
        ),
    }
    let limits = ctr.pointer("/resources/limits").and_then(Value::as_object);
    if let (Some(requests), Some(limits)) = (
        ctr.pointer("/resources/requests")
            .and_then(Value::as_object),
        limits,
    ) {
        for (resource, request) in requests {
            let (Some(req), Some(limit)) = (
                request.as_str(),
                limits.get(resource).and_then(Value::as_str),
            ) else {
                continue;
            };
            if let (Some(r), Some(l)) = (parse_quantity(req), parse_quantity(limit))
                && r > l
            {
                c.invalid(
                    &format!("{cp}.resources.requests"),
                    &json!(req),
                    &format!("must be less than or equal to {resource} limit of {limit}"),
                );
            }
        }
    }
    check_supported(
        c,
        &format!("{cp}.imagePullPolicy"),
        ctr.get("imagePullPolicy"),
        &["Always", "IfNotPresent", "Never"],
    );
    check_supported(
        c,
        &format!("{cp}.terminationMessagePolicy"),
        ctr.get("terminationMessagePolicy"),
        &["File", "FallbackToLogsOnError"],
    );
    let mut port_names = BTreeSet::new();
    for (j, port) in ports_of(ctr.get("ports")).iter().enumerate() {
        let pp = format!("{cp}.ports[{j}]");
        let name = str_of(port, "name");
        if !name.is_empty() {
            for msg in is_valid_port_name(name) {
                c.invalid(&format!("{pp}.name"), &json!(name), &msg);
            }
            if !port_names.insert(name.to_string()) {
                c.duplicate(&format!("{pp}.name"), &json!(name));
            }
        }
        match port.get("containerPort").and_then(Value::as_i64) {
            None | Some(0) => c.required(&format!("{pp}.containerPort")),
            Some(n) if !is_valid_port(n) => {
                c.invalid(&format!("{pp}.containerPort"), &json!(n), PORT_RANGE_MSG)
            }
            _ => {}
        }
        if let Some(n) = port.get("hostPort").and_then(Value::as_i64)
            && n != 0
            && !is_valid_port(n)
        {
            c.invalid(&format!("{pp}.hostPort"), &json!(n), PORT_RANGE_MSG);
        }
        check_supported(
            c,
            &format!("{pp}.protocol"),
            port.get("protocol"),
            &["SCTP", "TCP", "UDP"],
        );
    }
    for (j, env) in ports_of(ctr.get("env")).iter().enumerate() {
        let name = str_of(env, "name");
        let field = format!("{cp}.env[{j}].name");
        if name.is_empty() {
            c.required(&field);
        } else if name.contains('=') || !name.bytes().all(|b| (32..=126).contains(&b)) {
            c.invalid(
                &field,
                &json!(name),
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            );
        }
    }
    for (j, m) in ports_of(ctr.get("volumeMounts")).iter().enumerate() {
        let name = str_of(m, "name");
        let mp = format!("{cp}.volumeMounts[{j}]");
        if name.is_empty() {
            c.required(&format!("{mp}.name"));
        } else if !volume_names.contains(name) {
            not_found(c, &format!("{mp}.name"), name);
        }
        if str_of(m, "mountPath").is_empty() {
            c.required(&format!("{mp}.mountPath"));
        }
    }
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let Some(probe) = ctr.get(key) else { continue };
        let pp = format!("{cp}.{key}");
        if init && ctr.get("restartPolicy").is_none() {
            c.forbidden(
                &pp,
                "may not be set for init containers without restartPolicy=Always",
            );
            continue;
        }
        let handlers = ["exec", "httpGet", "tcpSocket", "grpc"]
            .iter()
            .filter(|h| probe.get(**h).is_some())
            .count();
        match handlers {
            0 => required_because(c, &pp, "must specify a handler type"),
            1 => {}
            _ => c.forbidden(&pp, "may not specify more than 1 handler type"),
        }
        for (field, min) in [
            ("initialDelaySeconds", 0),
            ("timeoutSeconds", 0),
            ("periodSeconds", 0),
            ("successThreshold", 0),
            ("failureThreshold", 0),
        ] {
            if let Some(n) = probe.get(field).and_then(Value::as_i64)
                && n < min
            {
                c.invalid(
                    &format!("{pp}.{field}"),
                    &json!(n),
                    "must be greater than or equal to 0",
                );
            }
        }
        if key != "readinessProbe"
            && let Some(n) = probe.get("successThreshold").and_then(Value::as_i64)
            && n != 1
        {
            c.invalid(&format!("{pp}.successThreshold"), &json!(n), "must be 1");
        }
        for h in ["httpGet", "tcpSocket"] {
            if let Some(port) = probe.get(h).and_then(|h| h.get("port")) {
                check_port_ref(c, &format!("{pp}.{h}.port"), port);
            }
        }
        if let Some(get) = probe.get("httpGet") {
            check_supported(
                c,
                &format!("{pp}.httpGet.scheme"),
                get.get("scheme"),
                &["HTTP", "HTTPS"],
            );
        }
    }
}

/// A port given as a number or as an IANA port name (`targetPort`, probe ports).
fn check_port_ref(c: &mut Causes, field: &str, port: &Value) {
    match port {
        Value::Number(n) => {
            let n = n.as_i64().unwrap_or(0);
            if !is_valid_port(n) {
                c.invalid(field, &json!(n), PORT_RANGE_MSG);
            }
        }
        Value::String(s) => {
            for msg in is_valid_port_name(s) {
                c.invalid(field, &json!(s), &msg);
            }
        }
        _ => {}
    }
}

fn validate_service_spec(spec: &Value, c: &mut Causes) {
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    check_supported(
        c,
        "spec.type",
        spec.get("type"),
        &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
    );
    check_supported(
        c,
        "spec.sessionAffinity",
        spec.get("sessionAffinity"),
        &["ClientIP", "None"],
    );
    let cluster_ip = str_of(spec, "clusterIP");
    let headless = cluster_ip == "None";
    let ports = ports_of(spec.get("ports"));
    if ty == "ExternalName" {
        let name = str_of(spec, "externalName");
        if name.is_empty() {
            c.required("spec.externalName");
        } else {
            for msg in is_dns1123_subdomain(name.trim_end_matches('.')) {
                c.invalid("spec.externalName", &json!(name), &msg);
            }
        }
        if !cluster_ip.is_empty() {
            c.forbidden("spec.clusterIP", "may not be set for ExternalName services");
        }
    } else {
        if ports.is_empty() && !headless {
            c.required("spec.ports");
        }
        for (i, ip) in ports_of(spec.get("clusterIPs")).iter().enumerate() {
            let ip = ip.as_str().unwrap_or("");
            let field = format!("spec.clusterIPs[{i}]");
            if ip == "None" {
                if i > 0 || ports_of(spec.get("clusterIPs")).len() > 1 {
                    c.invalid(
                        &field,
                        &json!(ip),
                        "'None' must be the first and only value",
                    );
                }
            } else if ip.parse::<IpAddr>().is_err() {
                c.invalid(&field, &json!(ip), IP_MSG);
            }
        }
        if !cluster_ip.is_empty()
            && !ports_of(spec.get("clusterIPs")).is_empty()
            && spec.pointer("/clusterIPs/0").and_then(Value::as_str) != Some(cluster_ip)
        {
            c.invalid(
                "spec.clusterIPs",
                spec.get("clusterIPs").unwrap_or(&Value::Null),
                "first value must match `clusterIP`",
            );
        }
        if headless && (ty == "NodePort" || ty == "LoadBalancer") {
            c.invalid(
                "spec.clusterIPs[0]",
                &json!("None"),
                &format!("may not be set to 'None' for {ty} services"),
            );
        }
        check_supported(
            c,
            "spec.ipFamilyPolicy",
            spec.get("ipFamilyPolicy"),
            &["PreferDualStack", "RequireDualStack", "SingleStack"],
        );
        for (i, f) in ports_of(spec.get("ipFamilies")).iter().enumerate() {
            check_supported(
                c,
                &format!("spec.ipFamilies[{i}]"),
                Some(f),
                &["IPv4", "IPv6"],
            );
        }
        check_supported(
            c,
            "spec.internalTrafficPolicy",
            spec.get("internalTrafficPolicy"),
            &["Cluster", "Local"],
        );
        match (
            ty,
            spec.get("externalTrafficPolicy").and_then(Value::as_str),
        ) {
            (_, None) => {}
            ("NodePort" | "LoadBalancer", Some(p)) => check_supported(
                c,
                "spec.externalTrafficPolicy",
                Some(&json!(p)),
                &["Cluster", "Local"],
            ),
            (_, Some(p)) => c.invalid(
                "spec.externalTrafficPolicy",
                &json!(p),
                "may only be set for externally-accessible services",
            ),
        }
    }
    let mut names = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        let name = str_of(port, "name");
        if name.is_empty() {
            if ports.len() > 1 {
                c.required(&format!("{pp}.name"));
            }
        } else {
            for msg in is_dns1123_label(name) {
                c.invalid(&format!("{pp}.name"), &json!(name), &msg);
            }
            if !names.insert(name.to_string()) {
                c.duplicate(&format!("{pp}.name"), &json!(name));
            }
        }
        let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !is_valid_port(number) {
            c.invalid(&format!("{pp}.port"), &json!(number), PORT_RANGE_MSG);
        }
        check_supported(
            c,
            &format!("{pp}.protocol"),
            port.get("protocol"),
            &["SCTP", "TCP", "UDP"],
        );
        if let Some(tp) = port.get("targetPort") {
            check_port_ref(c, &format!("{pp}.targetPort"), tp);
        }
        let node_port = port.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
        if node_port != 0 {
            if ty == "ClusterIP" || ty == "ExternalName" {
                c.forbidden(
                    &format!("{pp}.nodePort"),
                    &format!("may not be used when `type` is '{ty}'"),
                );
            } else if !is_valid_port(node_port) {
                c.invalid(&format!("{pp}.nodePort"), &json!(node_port), PORT_RANGE_MSG);
            }
        }
        let protocol = str_of(port, "protocol").to_string();
        if !seen.insert((number, protocol.clone())) {
            // Kubernetes reports the (protocol, port) key as a Go struct.
            c.push(
                "FieldValueDuplicate",
                &pp,
                format!(
                    "Duplicate value: core.ServicePort{{Name:\"\", Protocol:{protocol:?}, AppProtocol:(*string)(nil), Port:{number}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}"
                ),
            );
        }
    }
    check_labels(c, "spec.selector", spec.get("selector"));
}

fn validate_data_keys(obj: &Value, c: &mut Causes) {
    let mut keys = BTreeSet::new();
    for field in ["data", "binaryData", "stringData"] {
        let Some(m) = obj.get(field).and_then(Value::as_object) else {
            continue;
        };
        for k in m.keys() {
            let ok = !k.is_empty()
                && k.len() <= 253
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !ok {
                c.invalid(
                    &format!("{field}[{k}]"),
                    &json!(k),
                    &regex_error(
                        "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                        "[-._a-zA-Z0-9]+",
                        &["key.name", "KEY_NAME", "key-name"],
                    ),
                );
            }
            if field != "stringData" && !keys.insert(k.clone()) {
                c.invalid(
                    &format!("{field}[{k}]"),
                    &json!(k),
                    "duplicate of key present in data",
                );
            }
        }
    }
}

fn validate_endpoints(obj: &Value, c: &mut Causes) {
    for (i, subset) in ports_of(obj.get("subsets")).iter().enumerate() {
        for key in ["addresses", "notReadyAddresses"] {
            for (j, a) in ports_of(subset.get(key)).iter().enumerate() {
                check_ip(c, &format!("subsets[{i}].{key}[{j}].ip"), str_of(a, "ip"));
            }
        }
        let ports = ports_of(subset.get("ports"));
        for (j, p) in ports.iter().enumerate() {
            let pp = format!("subsets[{i}].ports[{j}]");
            let n = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            if !is_valid_port(n) {
                c.invalid(&format!("{pp}.port"), &json!(n), PORT_RANGE_MSG);
            }
            if ports.len() > 1 && str_of(p, "name").is_empty() {
                c.required(&format!("{pp}.name"));
            }
            check_supported(
                c,
                &format!("{pp}.protocol"),
                p.get("protocol"),
                &["SCTP", "TCP", "UDP"],
            );
        }
    }
}

fn validate_endpoint_slice(obj: &Value, c: &mut Causes) {
    let address_type = str_of(obj, "addressType");
    check_supported(
        c,
        "addressType",
        obj.get("addressType"),
        &["IPv4", "IPv6", "FQDN"],
    );
    if address_type.is_empty() {
        c.required("addressType");
    }
    for (i, e) in ports_of(obj.get("endpoints")).iter().enumerate() {
        let addresses = ports_of(e.get("addresses"));
        let field = format!("endpoints[{i}].addresses");
        if addresses.is_empty() || addresses.len() > 100 {
            c.invalid(
                &field,
                &json!(addresses.len()),
                "must contain at least 1 address but no more than 100",
            );
        }
        for (j, a) in addresses.iter().enumerate() {
            let a = a.as_str().unwrap_or("");
            let af = format!("{field}[{j}]");
            match address_type {
                "IPv4" if a.parse::<std::net::Ipv4Addr>().is_err() => {
                    c.invalid(&af, &json!(a), "must be a valid IPv4 address")
                }
                "IPv6" if a.parse::<std::net::Ipv6Addr>().is_err() => {
                    c.invalid(&af, &json!(a), "must be a valid IPv6 address")
                }
                "FQDN" => {
                    for msg in is_dns1123_subdomain(a) {
                        c.invalid(&af, &json!(a), &msg);
                    }
                }
                _ => {}
            }
        }
    }
    for (i, p) in ports_of(obj.get("ports")).iter().enumerate() {
        let pp = format!("ports[{i}]");
        if let Some(n) = p.get("port").and_then(Value::as_i64)
            && !is_valid_port(n)
        {
            c.invalid(&format!("{pp}.port"), &json!(n), PORT_RANGE_MSG);
        }
        check_supported(
            c,
            &format!("{pp}.protocol"),
            p.get("protocol"),
            &["SCTP", "TCP", "UDP"],
        );
    }
}

fn validate_workload(kind: &str, spec: &Value, c: &mut Causes) {
    check_non_negative(c, "spec.replicas", spec.get("replicas"));
    check_non_negative(c, "spec.minReadySeconds", spec.get("minReadySeconds"));
    check_non_negative(
        c,
        "spec.revisionHistoryLimit",
        spec.get("revisionHistoryLimit"),
    );
    let selector = spec.get("selector");
    let template = spec.get("template").cloned().unwrap_or_else(|| json!({}));
    let template_labels = template.pointer("/metadata/labels");
    match selector {
        None | Some(Value::Null) => c.required("spec.selector"),
        Some(sel) => {
            validate_label_selector(sel, "spec.selector", c);
            let empty = sel
                .get("matchLabels")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty)
                && ports_of(sel.get("matchExpressions")).is_empty();
            if empty {
                invalid_shown(
                    c,
                    "spec.selector",
                    &go_label_selector(sel),
                    &format!("empty selector is invalid for {}", kind.to_lowercase()),
                );
            }
            match crate::selector::LabelSelector::from_json(sel) {
                Err(_) => invalid_shown(
                    c,
                    "spec.selector",
                    &go_label_selector(sel),
                    "invalid label selector",
                ),
                Ok(parsed) if !parsed.is_everything() => {
                    let labels = template_labels
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default();
                    if !parsed.matches(&labels) {
                        invalid_shown(
                            c,
                            "spec.template.metadata.labels",
                            &go_string_map(template_labels),
                            "`selector` does not match template `labels`",
                        );
                    }
                }
                Ok(_) => {}
            }
        }
    }
    check_labels(c, "spec.template.metadata.labels", template_labels);
    check_annotations(
        c,
        "spec.template.metadata.annotations",
        template.pointer("/metadata/annotations"),
    );
    let pod_spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
    validate_pod_spec(&pod_spec, "spec.template.spec", true, c);
    match kind {
        "Deployment" => validate_deployment_strategy(spec, c),
        "StatefulSet" => {
            check_supported(
                c,
                "spec.podManagementPolicy",
                spec.get("podManagementPolicy"),
                &["OrderedReady", "Parallel"],
            );
            check_supported(
                c,
                "spec.updateStrategy.type",
                spec.pointer("/updateStrategy/type"),
                &["OnDelete", "RollingUpdate"],
            );
            check_non_negative(
                c,
                "spec.updateStrategy.rollingUpdate.partition",
                spec.pointer("/updateStrategy/rollingUpdate/partition"),
            );
            if spec.pointer("/updateStrategy/type") == Some(&json!("OnDelete"))
                && spec.pointer("/updateStrategy/rollingUpdate").is_some()
            {
                c.invalid(
                    "spec.updateStrategy.rollingUpdate",
                    spec.pointer("/updateStrategy/rollingUpdate")
                        .unwrap_or(&Value::Null),
                    "only allowed for updateStrategy 'RollingUpdate'",
                );
            }
            let service = str_of(spec, "serviceName");
            if !service.is_empty() {
                for msg in is_dns1123_label(service) {
                    c.invalid("spec.serviceName", &json!(service), &msg);
                }
            }
        }
        _ => {}
    }
}

/// Kubernetes' `ValidateLabelSelector` for a `metav1.LabelSelector` at `path`.
fn validate_label_selector(sel: &Value, path: &str, c: &mut Causes) {
    check_labels(c, &format!("{path}.matchLabels"), sel.get("matchLabels"));
    for (i, expr) in ports_of(sel.get("matchExpressions")).iter().enumerate() {
        let ep = format!("{path}.matchExpressions[{i}]");
        let values = ports_of(expr.get("values"));
        match str_of(expr, "operator") {
            "In" | "NotIn" => {
                if values.is_empty() {
                    required_because(
                        c,
                        &format!("{ep}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    );
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    c.forbidden(
                        &format!("{ep}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    );
                }
            }
            other => c.invalid(
                &format!("{ep}.operator"),
                &json!(other),
                "not a valid selector operator",
            ),
        }
        let key = str_of(expr, "key");
        for msg in is_qualified_name(key) {
            c.invalid(&format!("{ep}.key"), &json!(key), &msg);
        }
        for (j, v) in values.iter().enumerate() {
            let v = v.as_str().unwrap_or("");
            for msg in is_valid_label_value(v) {
                c.invalid(&format!("{ep}.values[{j}]"), &json!(v), &msg);
            }
        }
    }
}

/// `25%` or `1` (an IntOrString of a rolling update); `(value, is_percent)`.
fn int_or_percent(v: &Value) -> Option<(i64, bool)> {
    match v {
        Value::Number(n) => n.as_i64().map(|n| (n, false)),
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse().ok())
            .map(|n| (n, true)),
        _ => None,
    }
}

fn validate_deployment_strategy(spec: &Value, c: &mut Causes) {
    let ty = spec.pointer("/strategy/type");
    check_supported(c, "spec.strategy.type", ty, &["Recreate", "RollingUpdate"]);
    let rolling = spec.pointer("/strategy/rollingUpdate");
    if ty == Some(&json!("Recreate")) && rolling.is_some_and(|r| !r.is_null()) {
        c.forbidden(
            "spec.strategy.rollingUpdate",
            "may not be specified when strategy `type` is 'Recreate'",
        );
    }
    if let Some(ru) = rolling.filter(|_| ty == Some(&json!("RollingUpdate"))) {
        let mut values = Vec::new();
        for key in ["maxUnavailable", "maxSurge"] {
            let field = format!("spec.strategy.rollingUpdate.{key}");
            let v = ru.get(key).cloned().unwrap_or(json!(0));
            match int_or_percent(&v) {
                None => c.invalid(&field, &v, "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"),
                Some((n, pct)) => {
                    if n < 0 {
                        c.invalid(&field, &v, "must be greater than or equal to 0");
                    }
                    if key == "maxUnavailable" && pct && n > 100 {
                        c.invalid(&field, &v, "must not be greater than 100%");
                    }
                    values.push(n);
                }
            }
        }
        if values == [0, 0] {
            c.invalid(
                "spec.strategy.rollingUpdate.maxUnavailable",
                ru.get("maxUnavailable").unwrap_or(&json!(0)),
                "may not be 0 when `maxSurge` is 0",
            );
        }
    }
    if let Some(pd) = spec.get("progressDeadlineSeconds").and_then(Value::as_i64) {
        let min_ready = spec
            .get("minReadySeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if pd <= min_ready {
            c.invalid(
                "spec.progressDeadlineSeconds",
                &json!(pd),
                "must be greater than minReadySeconds",
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Update rules
// ---------------------------------------------------------------------------------------------

const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

const STS_UPDATE_FORBIDDEN: &str = "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";

const IMMUTABLE: &str = "field is immutable";

fn validate_update(rt: &ResourceType, old: &Value, new: &Value, c: &mut Causes) {
    match (rt.group, rt.kind) {
        ("apps", "ControllerRevision") if old.get("data") != new.get("data") => {
            c.invalid("data", new.get("data").unwrap_or(&Value::Null), IMMUTABLE)
        }
        ("events.k8s.io", "Event") => validate_event_update(
            &crate::events::to_core(old),
            &crate::events::to_core(new),
            c,
        ),
        ("", "Pod") => {
            let mut mutable = new.get("spec").cloned().unwrap_or_default();
            let old_spec = old.get("spec").cloned().unwrap_or_default();
            // Neutralise what may change, then any remaining difference is forbidden.
            for key in ["containers", "initContainers"] {
                let old_list = ports_of(old_spec.get(key));
                if let Some(list) = mutable.get_mut(key).and_then(Value::as_array_mut)
                    && list.len() == old_list.len()
                {
                    for (n, o) in list.iter_mut().zip(old_list) {
                        if let (Some(n), Some(img)) = (n.as_object_mut(), o.get("image")) {
                            n.insert("image".into(), img.clone());
                        }
                    }
                }
            }
            for key in [
                "activeDeadlineSeconds",
                "tolerations",
                "terminationGracePeriodSeconds",
                "schedulingGates",
            ] {
                copy_field(&old_spec, &mut mutable, key);
            }
            if mutable != old_spec {
                c.forbidden("spec", POD_UPDATE_FORBIDDEN);
            }
        }
        ("", "Service") => {
            let needs_ip =
                |v: &Value| v.pointer("/spec/type").and_then(Value::as_str) != Some("ExternalName");
            if needs_ip(old) && needs_ip(new) {
                let old_ip = old
                    .pointer("/spec/clusterIP")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let new_ip = new
                    .pointer("/spec/clusterIP")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !old_ip.is_empty() && old_ip != new_ip {
                    let ips = ports_of(new.pointer("/spec/clusterIPs"))
                        .iter()
                        .map(|ip| format!("{:?}", ip.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(", ");
                    invalid_shown(
                        c,
                        "spec.clusterIPs[0]",
                        &format!("[]string{{{ips}}}"),
                        "may not change once set",
                    );
                }
            }
        }
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet") => {
            let old_sel = old.pointer("/spec/selector");
            let new_sel = new.pointer("/spec/selector");
            if old_sel != new_sel {
                invalid_shown(
                    c,
                    "spec.selector",
                    &new_sel
                        .map(go_label_selector)
                        .unwrap_or_else(|| "null".into()),
                    IMMUTABLE,
                );
            }
            if rt.kind == "StatefulSet" {
                let strip = |v: &Value| {
                    let mut s = v.get("spec").cloned().unwrap_or_default();
                    if let Some(m) = s.as_object_mut() {
                        for key in [
                            "replicas",
                            "ordinals",
                            "template",
                            "updateStrategy",
                            "revisionHistoryLimit",
                            "persistentVolumeClaimRetentionPolicy",
                            "minReadySeconds",
                            "selector",
                        ] {
                            m.remove(key);
                        }
                    }
                    s
                };
                if strip(old) != strip(new) {
                    c.forbidden("spec", STS_UPDATE_FORBIDDEN);
                }
            }
        }
        ("", "ConfigMap" | "Secret") => {
            if old.get("immutable") == Some(&json!(true)) {
                for key in ["data", "binaryData", "stringData"] {
                    if old.get(key) != new.get(key) {
                        c.forbidden(key, "field is immutable when `immutable` is set");
                    }
                }
                if new.get("immutable") != Some(&json!(true)) {
                    c.forbidden("immutable", "field is immutable when `immutable` is set");
                }
            }
            if rt.kind == "Secret" && old.get("type") != new.get("type") {
                c.invalid("type", new.get("type").unwrap_or(&Value::Null), IMMUTABLE);
            }
        }
        ("discovery.k8s.io", "EndpointSlice")
            if old.get("addressType") != new.get("addressType") =>
        {
            c.invalid(
                "addressType",
                new.get("addressType").unwrap_or(&Value::Null),
                IMMUTABLE,
            );
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Status validation
// ---------------------------------------------------------------------------------------------

fn validate_status(rt: &ResourceType, obj: &Value, c: &mut Causes) {
    let status = obj.get("status").cloned().unwrap_or_default();
    match (rt.group, rt.kind) {
        ("", "Pod") => {
            check_supported(
                c,
                "status.phase",
                status.get("phase").filter(|p| p.as_str() != Some("")),
                &["Pending", "Running", "Succeeded", "Failed", "Unknown"],
            );
            let pod_ip = str_of(&status, "podIP");
            if !pod_ip.is_empty() {
                check_ip(c, "status.podIP", pod_ip);
            }
            for (i, ip) in ports_of(status.get("podIPs")).iter().enumerate() {
                check_ip(c, &format!("status.podIPs[{i}].ip"), str_of(ip, "ip"));
            }
            if let Some(first) = status.pointer("/podIPs/0/ip").and_then(Value::as_str)
                && !pod_ip.is_empty()
                && first != pod_ip
            {
                c.invalid(
                    "status.podIPs[0].ip",
                    &json!(first),
                    "must be equal to status.podIP",
                );
            }
            let host_ip = str_of(&status, "hostIP");
            if !host_ip.is_empty() {
                check_ip(c, "status.hostIP", host_ip);
            }
            for (i, cond) in ports_of(status.get("conditions")).iter().enumerate() {
                let ty = str_of(cond, "type");
                for msg in is_qualified_name(ty) {
                    c.invalid(&format!("status.conditions[{i}].type"), &json!(ty), &msg);
                }
                check_supported(
                    c,
                    &format!("status.conditions[{i}].status"),
                    cond.get("status"),
                    &["True", "False", "Unknown"],
                );
            }
        }
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet") => {
            for key in [
                "replicas",
                "readyReplicas",
                "availableReplicas",
                "updatedReplicas",
                "currentReplicas",
                "unavailableReplicas",
                "fullyLabeledReplicas",
                "observedGeneration",
            ] {
                check_non_negative(c, &format!("status.{key}"), status.get(key));
            }
        }
        ("", "Service") => {
            for (i, ing) in ports_of(status.pointer("/loadBalancer/ingress"))
                .iter()
                .enumerate()
            {
                let ip = str_of(ing, "ip");
                if !ip.is_empty() {
                    check_ip(c, &format!("status.loadBalancer.ingress[{i}].ip"), ip);
                }
            }
        }
        ("", "Namespace") => {
            check_supported(
                c,
                "status.phase",
                status.get("phase"),
                &["Active", "Terminating"],
            );
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find;

    fn rt(group: &str, plural: &str) -> &'static ResourceType {
        find(group, "v1", plural).unwrap()
    }

    fn with_meta(mut obj: Value, namespaced: bool) -> Value {
        let m = meta_mut(&mut obj);
        if namespaced {
            m.entry("namespace").or_insert(json!("default"));
        }
        obj
    }

    /// Creates `obj`; `Ok` with the stored object or `Err` with `field: message` causes.
    fn create(group: &str, plural: &str, obj: Value) -> Result<Value, Vec<String>> {
        let r = rt(group, plural);
        let mut obj = with_meta(obj, r.namespaced);
        match prepare_create(r, &mut obj) {
            Ok(()) => Ok(obj),
            Err(e) => Err(e
                .causes
                .iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect::<Vec<_>>())
            .map_err(|v| if v.is_empty() { vec![e.message] } else { v }),
        }
    }

    /// (group, plural, manifest, expected causes (empty = valid))
    fn invalid_cases() -> Vec<(&'static str, &'static str, Value, Vec<&'static str>)> {
        vec![
            // The seed's headless Service.
            (
                "",
                "services",
                json!({"metadata":{"name":"terra10-headless"},"spec":{"clusterIP":"None","ports":[{"port":80,"targetPort":8080}],"selector":{"app":"terra10"}}}),
                vec![],
            ),
            // kubectl run's body.
            (
                "",
                "pods",
                json!({"kind":"Pod","apiVersion":"v1","metadata":{"name":"dnsutils","creationTimestamp":null,"labels":{"run":"dnsutils"}},"spec":{"containers":[{"name":"dnsutils","image":"tutum/dnsutils","command":["sleep","infinity"],"resources":{}}],"restartPolicy":"Always","dnsPolicy":"ClusterFirst"},"status":{}}),
                vec![],
            ),
            (
                "",
                "pods",
                json!({"metadata":{"name":"invalid"},"spec":{"containers":[{"name":"c"}]}}),
                vec!["spec.containers[0].image: Required value"],
            ),
            (
                "",
                "pods",
                json!({"metadata":{"name":"Bad_Name"},"spec":{"containers":[{"name":"c","image":"x"}]}}),
                vec![
                    "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                ],
            ),
            (
                "",
                "pods",
                json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":"x","ports":[{"containerPort":70000}]},{"name":"a","image":"y"}]}}),
                vec![
                    "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                    "spec.containers[1].name: Duplicate value: \"a\"",
                ],
            ),
            (
                "",
                "pods",
                json!({"metadata":{"name":"p"},"spec":{"containers":[]}}),
                vec!["spec.containers: Required value"],
            ),
            (
                "",
                "pods",
                json!({"metadata":{"name":"p","labels":{"bad key":"v"}},"spec":{"restartPolicy":"Sometimes","containers":[{"name":"c","image":"x"}]}}),
                vec![
                    "metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                    "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
                ],
            ),
            (
                "",
                "services",
                json!({"metadata":{"name":"1svc"},"spec":{"ports":[{"port":0}]}}),
                vec![
                    "metadata.name: Invalid value: \"1svc\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
                    "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                    "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
                ],
            ),
            (
                "",
                "services",
                json!({"metadata":{"name":"s"},"spec":{}}),
                vec!["spec.ports: Required value"],
            ),
            (
                "",
                "services",
                json!({"metadata":{"name":"s"},"spec":{"clusterIP":"abc","ports":[{"port":80}]}}),
                vec![
                    "spec.clusterIPs[0]: Invalid value: \"abc\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                ],
            ),
            (
                "",
                "services",
                json!({"metadata":{"name":"s"},"spec":{"type":"NodePort","clusterIP":"None","ports":[{"port":80}]}}),
                vec![
                    "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services",
                ],
            ),
            (
                "",
                "services",
                json!({"metadata":{"name":"s"},"spec":{"ports":[{"port":80},{"port":81,"protocol":"FOO"}]}}),
                vec![
                    "spec.ports[0].name: Required value",
                    "spec.ports[1].name: Required value",
                    "spec.ports[1].protocol: Unsupported value: \"FOO\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                ],
            ),
            (
                "apps",
                "replicasets",
                json!({"metadata":{"name":"rs"},"spec":{"selector":{"matchExpressions":[{"key":"app","operator":"In"}]},"template":{"metadata":{"labels":{"app":"x"}},"spec":{"containers":[{"name":"c","image":"x"}]}}}}),
                vec![
                    "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
                    "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement{v1.LabelSelectorRequirement{Key:\"app\", Operator:\"In\", Values:[]string(nil)}}}: invalid label selector",
                ],
            ),
            (
                "",
                "pods",
                json!({"metadata":{"name":"p"},"spec":{"initContainers":[{"name":"i","image":"x","restartPolicy":"Never"}],"containers":[{"name":"c","image":" nginx","restartPolicy":"Always"}]}}),
                vec![
                    "spec.initContainers[0].restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
                    "spec.containers[0].image: Invalid value: \" nginx\": must not have leading or trailing whitespace",
                    "spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers",
                ],
            ),
            (
                "",
                "services",
                json!({"metadata":{"name":"s"},"spec":{"externalTrafficPolicy":"Local","ports":[{"port":80}]}}),
                vec![
                    "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for externally-accessible services",
                ],
            ),
            (
                "",
                "services",
                json!({"metadata":{"name":"s"},"spec":{"ports":[{"name":"a","port":80},{"name":"a","port":80}]}}),
                vec![
                    "spec.ports[1].name: Duplicate value: \"a\"",
                    "spec.ports[1]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}",
                ],
            ),
            (
                "",
                "namespaces",
                json!({"metadata":{"name":"my.ns"}}),
                vec![
                    "metadata.name: Invalid value: \"my.ns\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                ],
            ),
            (
                "apps",
                "deployments",
                json!({"metadata":{"name":"nginx"},"spec":{"replicas":-1,"selector":{"matchLabels":{"app":"nginx"}},"template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"nginx","image":"nginx"}]}}}}),
                vec![
                    "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                    "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`",
                ],
            ),
            (
                "apps",
                "deployments",
                json!({"metadata":{"name":"nginx"},"spec":{"template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"nginx","image":"nginx"}]}}}}),
                vec!["spec.selector: Required value"],
            ),
            (
                "apps",
                "deployments",
                json!({"metadata":{"name":"nginx"},"spec":{"strategy":{"rollingUpdate":{"maxSurge":0,"maxUnavailable":0}},"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"web"}},"spec":{"restartPolicy":"Never","containers":[{"name":"nginx","image":"nginx"}]}}}}),
                vec![
                    "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
                    "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0",
                ],
            ),
            (
                "apps",
                "statefulsets",
                json!({"metadata":{"name":"web"},"spec":{"serviceName":"nginx","selector":{},"template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"nginx","image":"nginx"}]}}}}),
                vec![
                    "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for statefulset",
                ],
            ),
            (
                "",
                "configmaps",
                json!({"metadata":{"name":"cm"},"data":{"ok.key":"1","bad/key":"2"}}),
                vec![
                    "data[bad/key]: Invalid value: \"bad/key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                ],
            ),
            (
                "discovery.k8s.io",
                "endpointslices",
                json!({"metadata":{"name":"s"},"addressType":"IPv4","endpoints":[{"addresses":["10.0.0.300"]}],"ports":[{"port":80}]}),
                vec![
                    "endpoints[0].addresses[0]: Invalid value: \"10.0.0.300\": must be a valid IPv4 address",
                ],
            ),
            (
                "coordination.k8s.io",
                "leases",
                json!({"metadata":{"name":"l"},"spec":{"leaseDurationSeconds":0}}),
                vec!["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"],
            ),
            (
                "",
                "events",
                json!({"metadata":{"name":"any_name!"},"involvedObject":{"kind":"Pod","name":"p","namespace":"other"},"reason":"Created","source":{"component":"kubelet"}}),
                vec![
                    "involvedObject.namespace: Invalid value: \"other\": does not match event.namespace",
                ],
            ),
            (
                "",
                "events",
                json!({"metadata":{"name":"e"},"involvedObject":{"kind":"Pod","name":"p","namespace":"default"},"eventTime":"2026-11-23T12:00:00.000000Z","reason":"Created"}),
                vec![
                    "reportingController: Required value",
                    "reportingController: Invalid value: \"\": name part must be non-empty",
                    "reportingController: Invalid value: \"\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                    "reportingInstance: Required value",
                    "action: Required value",
                ],
            ),
            (
                "events.k8s.io",
                "events",
                json!({"metadata":{"name":"e"},"regarding":{"kind":"Pod","name":"p","namespace":"default"},"reportingController":"muster/x","reportingInstance":"m1","action":"Create","reason":"Created","type":"Normal","deprecatedCount":2}),
                vec![
                    "eventTime: Required value",
                    "count: Invalid value: \"\": needs to be unset",
                ],
            ),
            (
                "events.k8s.io",
                "events",
                json!({"metadata":{"name":"e"},"eventTime":"2026-11-23T12:00:00.000000Z","regarding":{"kind":"Pod","name":"p","namespace":"default"},"reportingController":"muster/x","reportingInstance":"m1","action":"Create","reason":"Created","type":"Normal","note":"ok"}),
                vec![],
            ),
        ]
    }

    #[test]
    fn create_validation_matches_kubernetes_messages() {
        for (group, plural, manifest, expected) in invalid_cases() {
            let got = create(group, plural, manifest.clone());
            match got {
                Ok(_) => assert!(
                    expected.is_empty(),
                    "{manifest}: accepted, expected {expected:?}"
                ),
                Err(causes) => assert_eq!(causes, expected, "{manifest}"),
            }
        }
    }

    #[test]
    fn type_errors_are_400_with_the_field_path() {
        let mut d = json!({"metadata":{"name":"x","namespace":"default"},"spec":{"replicas":"3"}});
        let e = prepare_create(rt("apps", "deployments"), &mut d).unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(
            e.message,
            "Deployment in version \"v1\" cannot be handled as a Deployment: json: cannot unmarshal string into Go struct field .spec.replicas of type int32"
        );
    }

    /// (group, plural, manifest, JSON pointer, expected value after defaulting)
    #[test]
    fn defaults_match_kubernetes() {
        let svc = create("", "services", json!({"metadata":{"name":"terra10-headless"},"spec":{"clusterIP":"None","ports":[{"port":80}],"selector":{"app":"terra10"}}})).unwrap();
        let pod = create("", "pods", json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"nginx","ports":[{"containerPort":80}],"readinessProbe":{"httpGet":{"port":80}}},{"name":"d","image":"busybox:1.36"}]}})).unwrap();
        let gated = create("", "pods", json!({"metadata":{"name":"g"},"spec":{"schedulingGates":[{"name":"example.com/wait"}],"containers":[{"name":"c","image":"x"}]}})).unwrap();
        let deploy = create("apps", "deployments", json!({"metadata":{"name":"nginx"},"spec":{"selector":{"matchLabels":{"app":"nginx"}},"template":{"metadata":{"labels":{"app":"nginx"}},"spec":{"containers":[{"name":"nginx","image":"nginx:1.25"}]}}}})).unwrap();
        let sts = create("apps", "statefulsets", json!({"metadata":{"name":"web"},"spec":{"serviceName":"nginx","selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"nginx","image":"nginx"}]}}}})).unwrap();
        let ns = create(
            "",
            "namespaces",
            json!({"metadata":{"name":"team-a","namespace":"default"}}),
        )
        .unwrap();
        let secret = create(
            "",
            "secrets",
            json!({"metadata":{"name":"s"},"data":{"k":"dmFsdWU=","both":"b2xk"},"stringData":{"both":"new","plain":"value"}}),
        )
        .unwrap();
        let cases: Vec<(&Value, &str, Value)> = vec![
            (&svc, "/spec/type", json!("ClusterIP")),
            (&svc, "/spec/clusterIP", json!("None")),
            (&svc, "/spec/clusterIPs", json!(["None"])),
            (&svc, "/spec/sessionAffinity", json!("None")),
            (&svc, "/spec/ports/0/protocol", json!("TCP")),
            (&svc, "/spec/ports/0/targetPort", json!(80)),
            (&svc, "/spec/ipFamilyPolicy", json!("SingleStack")),
            (&svc, "/spec/ipFamilies", json!(["IPv4"])),
            (&svc, "/spec/internalTrafficPolicy", json!("Cluster")),
            (&svc, "/status", json!({"loadBalancer":{}})),
            (&pod, "/spec/restartPolicy", json!("Always")),
            (&pod, "/spec/dnsPolicy", json!("ClusterFirst")),
            (&pod, "/spec/schedulerName", json!("default-scheduler")),
            (&pod, "/spec/terminationGracePeriodSeconds", json!(30)),
            (&pod, "/spec/securityContext", json!({})),
            (&pod, "/spec/enableServiceLinks", json!(true)),
            (&pod, "/spec/serviceAccountName", json!("default")),
            (&pod, "/spec/priority", json!(0)),
            (
                &pod,
                "/spec/tolerations/0",
                json!({"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}),
            ),
            (
                &pod,
                "/spec/tolerations/1/key",
                json!("node.kubernetes.io/unreachable"),
            ),
            (&pod, "/spec/containers/0/imagePullPolicy", json!("Always")),
            (
                &pod,
                "/spec/containers/1/imagePullPolicy",
                json!("IfNotPresent"),
            ),
            (
                &pod,
                "/spec/containers/0/terminationMessagePath",
                json!("/dev/termination-log"),
            ),
            (
                &pod,
                "/spec/containers/0/terminationMessagePolicy",
                json!("File"),
            ),
            (&pod, "/spec/containers/0/ports/0/protocol", json!("TCP")),
            (
                &pod,
                "/spec/containers/0/readinessProbe",
                json!({"httpGet":{"port":80,"path":"/","scheme":"HTTP"},"timeoutSeconds":1,"periodSeconds":10,"successThreshold":1,"failureThreshold":3}),
            ),
            (
                &pod,
                "/status",
                json!({"phase":"Pending","qosClass":"BestEffort"}),
            ),
            (
                &gated,
                "/status/conditions/0/reason",
                json!("SchedulingGated"),
            ),
            (&deploy, "/spec/replicas", json!(1)),
            (
                &deploy,
                "/spec/strategy",
                json!({"type":"RollingUpdate","rollingUpdate":{"maxUnavailable":"25%","maxSurge":"25%"}}),
            ),
            (&deploy, "/spec/revisionHistoryLimit", json!(10)),
            (&deploy, "/spec/progressDeadlineSeconds", json!(600)),
            (
                &deploy,
                "/spec/template/spec/restartPolicy",
                json!("Always"),
            ),
            (&deploy, "/metadata/generation", json!(1)),
            (&sts, "/spec/podManagementPolicy", json!("OrderedReady")),
            (
                &sts,
                "/spec/updateStrategy",
                json!({"type":"RollingUpdate","rollingUpdate":{"partition":0}}),
            ),
            (
                &sts,
                "/spec/persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted":"Retain","whenScaled":"Retain"}),
            ),
            (&ns, "/spec/finalizers", json!(["kubernetes"])),
            (&ns, "/status/phase", json!("Active")),
            (
                &ns,
                "/metadata",
                json!({"name":"team-a","labels":{"kubernetes.io/metadata.name":"team-a"}}),
            ),
            (&secret, "/type", json!("Opaque")),
            (
                &secret,
                "/data",
                json!({"k":"dmFsdWU=","both":"bmV3","plain":"dmFsdWU="}),
            ),
        ];
        for (obj, pointer, expected) in cases {
            assert_eq!(obj.pointer(pointer), Some(&expected), "{pointer} in {obj}");
        }
    }

    #[test]
    fn qos_classes() {
        let cases = [
            (json!({"containers":[{"name":"a"}]}), "BestEffort"),
            (
                json!({"containers":[{"resources":{"limits":{"cpu":"1","memory":"1Gi"}}}]}),
                "Guaranteed",
            ),
            (
                json!({"containers":[{"resources":{"requests":{"cpu":"1000m","memory":"1Gi"},"limits":{"cpu":"1","memory":"1Gi"}}}]}),
                "Guaranteed",
            ),
            (
                json!({"containers":[{"resources":{"requests":{"cpu":"100m"}}}]}),
                "Burstable",
            ),
            (
                json!({"containers":[{"resources":{"limits":{"cpu":"1","memory":"1Gi"}}},{"name":"b"}]}),
                "Burstable",
            ),
        ];
        for (spec, expected) in cases {
            assert_eq!(qos_class(&spec), expected, "{spec}");
        }
    }

    #[test]
    fn unknown_fields_are_reported_with_paths() {
        let pods = rt("", "pods");
        let obj = json!({"metadata":{"name":"p","bogus":1},"spec":{"containers":[{"name":"c","image":"x","imagePolicy":"y"}],"foo":{"a":1}},"status":{}});
        assert_eq!(
            unknown_fields(pods, &obj),
            vec![
                "metadata.bogus",
                "spec.containers[0].imagePolicy",
                "spec.foo"
            ]
        );
        let clean = json!({"metadata":{"name":"p","creationTimestamp":null},"spec":{"containers":[{"name":"c","image":"x","resources":{}}]},"status":{}});
        assert!(unknown_fields(pods, &clean).is_empty());
        assert_eq!(
            strict_decoding_error(&["spec.foo".into()]).message,
            "strict decoding error: unknown field \"spec.foo\""
        );
    }

    #[test]
    fn updates_keep_system_fields_and_bump_generation() {
        let deployments = rt("apps", "deployments");
        let mut old = json!({"metadata":{"name":"nginx","namespace":"default","uid":"u1","creationTimestamp":"2026-01-01T00:00:00Z"},"spec":{"selector":{"matchLabels":{"app":"nginx"}},"template":{"metadata":{"labels":{"app":"nginx"}},"spec":{"containers":[{"name":"nginx","image":"nginx:1.25"}]}}}});
        prepare_create(deployments, &mut old).unwrap();
        old["status"] = json!({"replicas": 1});
        // Same spec: generation unchanged, status kept from old.
        let mut same = old.clone();
        same["status"] = json!({"replicas": 7});
        same["metadata"]["uid"] = json!("other");
        prepare_update(deployments, &old, &mut same).unwrap();
        assert_eq!(same["metadata"]["generation"], 1);
        assert_eq!(same["metadata"]["uid"], "u1");
        assert_eq!(same["status"], json!({"replicas": 1}));
        // Image change: generation + 1.
        let mut changed = old.clone();
        changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.26");
        prepare_update(deployments, &old, &mut changed).unwrap();
        assert_eq!(changed["metadata"]["generation"], 2);
        // Selector change: immutable.
        let mut moved = old.clone();
        moved["spec"]["selector"] = json!({"matchLabels":{"app":"web"}});
        moved["spec"]["template"]["metadata"]["labels"] = json!({"app":"web"});
        let e = prepare_update(deployments, &old, &mut moved).unwrap_err();
        assert_eq!(
            e.message,
            "Deployment.apps \"nginx\" is invalid: spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
        );
    }

    #[test]
    fn pod_updates_may_change_images_only() {
        let pods = rt("", "pods");
        let mut old = json!({"metadata":{"name":"p","namespace":"default"},"spec":{"containers":[{"name":"c","image":"nginx:1.25"}]}});
        prepare_create(pods, &mut old).unwrap();
        let mut image = old.clone();
        image["spec"]["containers"][0]["image"] = json!("nginx:1.26");
        image["metadata"]["labels"] = json!({"a": "b"});
        prepare_update(pods, &old, &mut image).unwrap();
        assert_eq!(old["metadata"]["generation"], 1);
        assert_eq!(image["metadata"]["generation"], 2);
        let mut restart = old.clone();
        restart["spec"]["restartPolicy"] = json!("Never");
        let e = prepare_update(pods, &old, &mut restart).unwrap_err();
        assert_eq!(e.causes[0].field, "spec");
        assert!(e.causes[0].message.starts_with(
            "Forbidden: pod updates may not change fields other than `spec.containers[*].image`"
        ));
    }

    #[test]
    fn service_replace_keeps_the_allocated_cluster_ip() {
        let services = rt("", "services");
        let mut old =
            json!({"metadata":{"name":"s","namespace":"default"},"spec":{"ports":[{"port":80}]}});
        prepare_create(services, &mut old).unwrap();
        assert!(service_needs_cluster_ip(&old));
        old["spec"]["clusterIP"] = json!("10.96.0.20");
        old["spec"]["clusterIPs"] = json!(["10.96.0.20"]);
        let mut replace = json!({"metadata":{"name":"s"},"spec":{"ports":[{"port":81}]}});
        prepare_update(services, &old, &mut replace).unwrap();
        assert_eq!(replace["spec"]["clusterIP"], "10.96.0.20");
        assert_eq!(replace["spec"]["clusterIPs"], json!(["10.96.0.20"]));
        let mut change = old.clone();
        change["spec"]["clusterIP"] = json!("10.96.0.21");
        change["spec"]["clusterIPs"] = json!(["10.96.0.21"]);
        let e = prepare_update(services, &old, &mut change).unwrap_err();
        assert_eq!(
            e.message,
            "Service \"s\" is invalid: spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.21\"}: may not change once set"
        );
    }

    #[test]
    fn workload_status_updates_may_set_annotations_but_not_spec_or_labels() {
        let deployments = rt("apps", "deployments");
        let mut old = json!({"metadata":{"name":"nginx","namespace":"default","labels":{"app":"nginx"}},"spec":{"selector":{"matchLabels":{"app":"nginx"}},"template":{"metadata":{"labels":{"app":"nginx"}},"spec":{"containers":[{"name":"nginx","image":"nginx"}]}}}});
        prepare_create(deployments, &mut old).unwrap();
        let mut new = old.clone();
        new["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "1"});
        new["metadata"]["labels"] = json!({"app": "changed"});
        new["metadata"]["generation"] = json!(7);
        new["spec"]["replicas"] = json!(9);
        new["status"] = json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1});
        prepare_status_update(deployments, &old, &mut new).unwrap();
        assert_eq!(
            new["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
            "1"
        );
        assert_eq!(new["metadata"]["labels"], json!({"app": "nginx"}));
        assert_eq!(new["metadata"]["generation"], 1);
        assert_eq!(new["spec"]["replicas"], 1);
        assert_eq!(new["status"]["updatedReplicas"], 1);
    }

    #[test]
    fn changing_service_type_drops_fields_of_the_old_type() {
        let services = rt("", "services");
        let mut old = json!({"metadata":{"name":"s","namespace":"default"},"spec":{"type":"NodePort","ports":[{"port":80,"nodePort":30080}]}});
        prepare_create(services, &mut old).unwrap();
        old["spec"]["clusterIP"] = json!("10.96.0.20");
        old["spec"]["clusterIPs"] = json!(["10.96.0.20"]);
        let mut to_cluster_ip = old.clone();
        to_cluster_ip["spec"]["type"] = json!("ClusterIP");
        prepare_update(services, &old, &mut to_cluster_ip).unwrap();
        assert!(to_cluster_ip["spec"].get("externalTrafficPolicy").is_none());
        assert!(to_cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
        assert_eq!(to_cluster_ip["spec"]["clusterIP"], "10.96.0.20");
        let mut to_external = old.clone();
        to_external["spec"]["type"] = json!("ExternalName");
        to_external["spec"]["externalName"] = json!("example.com");
        prepare_update(services, &old, &mut to_external).unwrap();
        assert!(to_external["spec"].get("clusterIP").is_none());
        assert!(to_external["spec"].get("ipFamilies").is_none());
    }

    #[test]
    fn status_updates_touch_only_status() {
        let pods = rt("", "pods");
        let mut old = json!({"metadata":{"name":"p","namespace":"default"},"spec":{"containers":[{"name":"c","image":"nginx"}]}});
        prepare_create(pods, &mut old).unwrap();
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("changed");
        new["status"] = json!({"phase":"Running","podIP":"10.244.0.5","podIPs":[{"ip":"10.244.0.5"}],"conditions":[{"type":"Ready","status":"True"}]});
        prepare_status_update(pods, &old, &mut new).unwrap();
        assert_eq!(new["spec"]["containers"][0]["image"], "nginx");
        assert_eq!(new["status"]["phase"], "Running");
        assert_eq!(new["status"]["qosClass"], "BestEffort");
        let mut bad = old.clone();
        bad["status"] = json!({"phase":"Dancing","podIP":"nope"});
        let e = prepare_status_update(pods, &old, &mut bad).unwrap_err();
        let fields: Vec<_> = e.causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["status.phase", "status.podIP"]);
    }

    #[test]
    fn events_k8s_io_updates_may_only_count_the_series() {
        let events = find("events.k8s.io", "v1", "events").unwrap();
        let mut old = json!({"metadata":{"name":"web.1","namespace":"default"},"eventTime":"2026-11-23T12:00:00.000000Z","regarding":{"kind":"Pod","name":"web","namespace":"default"},"reportingController":"muster/kubelet","reportingInstance":"node-1","action":"Pull","reason":"Pulled","type":"Normal","note":"pulled"});
        prepare_create(events, &mut old).unwrap();
        let mut repeat = old.clone();
        repeat["series"] = json!({"count": 2, "lastObservedTime": "2026-11-23T12:01:00.000000Z"});
        prepare_update(events, &old, &mut repeat).unwrap();
        let mut bad = old.clone();
        bad["note"] = json!("changed");
        bad["series"] = json!({"count": 1, "lastObservedTime": "2026-11-23T12:01:00.000000Z"});
        let e = prepare_update(events, &old, &mut bad).unwrap_err();
        let fields: Vec<_> = e.causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["series.count", "message"]);
    }

    #[test]
    fn controller_revision_data_is_immutable() {
        let revisions = find("apps", "v1", "controllerrevisions").unwrap();
        let mut old = json!({"metadata":{"name":"web-1","namespace":"default"},"revision":1,"data":{"spec":{"a":1}}});
        prepare_create(revisions, &mut old).unwrap();
        let mut bumped = old.clone();
        bumped["revision"] = json!(3);
        prepare_update(revisions, &old, &mut bumped).unwrap();
        let mut changed = old.clone();
        changed["data"] = json!({"spec":{"a":2}});
        let e = prepare_update(revisions, &old, &mut changed).unwrap_err();
        assert_eq!(e.causes[0].field, "data");
    }

    #[test]
    fn binding_and_finalize() {
        let mut pod = json!({"metadata":{"name":"web-0"},"spec":{"containers":[]},"status":{"conditions":[{"type":"PodScheduled","status":"False"}]}});
        bind_pod(&mut pod, "node-1").unwrap();
        assert_eq!(pod["spec"]["nodeName"], "node-1");
        assert_eq!(
            pod["status"]["conditions"],
            json!([{"type":"PodScheduled","status":"True"}])
        );
        let e = bind_pod(&mut pod, "node-2").unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                409,
                "Operation cannot be fulfilled on pods/binding \"web-0\": pod web-0 is already assigned to node \"node-1\""
            )
        );
        let namespaces = rt("", "namespaces");
        let mut old = json!({"metadata":{"name":"team-a"}});
        prepare_create(namespaces, &mut old).unwrap();
        old["status"]["phase"] = json!("Terminating");
        // A plain update cannot drop the finalizer...
        let mut update = old.clone();
        update["spec"]["finalizers"] = json!([]);
        prepare_update(namespaces, &old, &mut update).unwrap();
        assert_eq!(update["spec"]["finalizers"], json!(["kubernetes"]));
        // ...the finalize subresource can.
        let mut finalize = old.clone();
        finalize["spec"]["finalizers"] = json!([]);
        finalize["status"]["phase"] = json!("Active");
        prepare_namespace_finalize(&old, &mut finalize).unwrap();
        assert_eq!(finalize["spec"]["finalizers"], json!([]));
        assert_eq!(finalize["status"]["phase"], "Terminating");
    }

    #[test]
    fn quantities() {
        let cases = [
            ("100m", Some(0.1)),
            ("1", Some(1.0)),
            ("1.5Gi", Some(1.5 * 1073741824.0)),
            ("2e3", Some(2000.0)),
            ("1E", Some(1e18)),
            ("128Mi", Some(134217728.0)),
            ("abc", None),
            ("", None),
            ("1Gb", None),
        ];
        for (q, expected) in cases {
            assert_eq!(parse_quantity(q), expected, "{q}");
        }
        let pods = rt("", "pods");
        let mut bad = json!({"metadata":{"name":"p","namespace":"default"},"spec":{"containers":[{"name":"c","image":"x","resources":{"limits":{"cpu":"lots"}}}]}});
        assert_eq!(prepare_create(pods, &mut bad).unwrap_err().code, 400);
        let mut over = json!({"metadata":{"name":"p","namespace":"default"},"spec":{"containers":[{"name":"c","image":"x","resources":{"requests":{"cpu":"2"},"limits":{"cpu":"1"}}}]}});
        let e = prepare_create(pods, &mut over).unwrap_err();
        assert_eq!(
            e.message,
            "Pod \"p\" is invalid: spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1"
        );
    }

    #[test]
    fn pull_policy_defaults() {
        for (image, policy) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.25", "IfNotPresent"),
            ("localhost:5000/nginx", "Always"),
            ("localhost:5000/nginx:1", "IfNotPresent"),
            ("nginx@sha256:abc", "IfNotPresent"),
        ] {
            assert_eq!(default_pull_policy(image), policy, "{image}");
        }
    }
}

#[cfg(test)]
mod invariants {
    use super::*;
    use crate::registry::find;

    /// Valid manifests of every kind, as users and controllers send them.
    fn corpus() -> Vec<(&'static str, &'static str, Value)> {
        vec![
            (
                "",
                "pods",
                json!({"metadata":{"name":"dnsutils","labels":{"run":"dnsutils"}},"spec":{"containers":[{"name":"dnsutils","image":"tutum/dnsutils","command":["sleep","infinity"],"resources":{}}]}}),
            ),
            (
                "",
                "pods",
                json!({"metadata":{"name":"web-0"},"spec":{"hostname":"web-0","subdomain":"nginx","volumes":[{"name":"data"},{"name":"cfg","configMap":{"name":"cfg"}}],"containers":[{"name":"web","image":"nginx:1.25","ports":[{"name":"http","containerPort":80}],"volumeMounts":[{"name":"data","mountPath":"/data"}],"livenessProbe":{"tcpSocket":{"port":"http"}},"env":[{"name":"POD_IP","valueFrom":{"fieldRef":{"fieldPath":"status.podIP"}}}]}]}}),
            ),
            (
                "",
                "services",
                json!({"metadata":{"name":"terra10-headless"},"spec":{"clusterIP":"None","ports":[{"port":80,"targetPort":8080}],"selector":{"app":"terra10"}}}),
            ),
            (
                "",
                "services",
                json!({"metadata":{"name":"web"},"spec":{"type":"NodePort","ports":[{"name":"http","port":80,"nodePort":30080},{"name":"dns","port":53,"protocol":"UDP"}],"selector":{"app":"web"}}}),
            ),
            (
                "",
                "services",
                json!({"metadata":{"name":"ext"},"spec":{"type":"ExternalName","externalName":"example.com"}}),
            ),
            (
                "",
                "endpoints",
                json!({"metadata":{"name":"web"},"subsets":[{"addresses":[{"ip":"10.244.0.5"}],"ports":[{"port":80}]}]}),
            ),
            ("", "namespaces", json!({"metadata":{"name":"team-a"}})),
            (
                "",
                "nodes",
                json!({"metadata":{"name":"node-1"},"status":{"conditions":[{"type":"Ready","status":"True"}]}}),
            ),
            (
                "",
                "events",
                json!({"metadata":{"name":"web.1"},"involvedObject":{"kind":"Pod","name":"web","namespace":"default"},"reason":"Started","message":"Started container","source":{"component":"kubelet"},"type":"Normal","count":1}),
            ),
            (
                "",
                "configmaps",
                json!({"metadata":{"name":"cfg"},"data":{"a.conf":"x"}}),
            ),
            (
                "",
                "secrets",
                json!({"metadata":{"name":"s"},"stringData":{"password":"hunter2"}}),
            ),
            (
                "",
                "serviceaccounts",
                json!({"metadata":{"name":"builder"}}),
            ),
            (
                "apps",
                "deployments",
                json!({"metadata":{"name":"nginx"},"spec":{"replicas":3,"selector":{"matchLabels":{"app":"nginx"}},"template":{"metadata":{"labels":{"app":"nginx"}},"spec":{"containers":[{"name":"nginx","image":"nginx:1.25","ports":[{"containerPort":80}],"readinessProbe":{"httpGet":{"path":"/","port":80}}}]}}}}),
            ),
            (
                "apps",
                "deployments",
                json!({"metadata":{"name":"batch"},"spec":{"strategy":{"type":"Recreate"},"selector":{"matchExpressions":[{"key":"app","operator":"In","values":["batch"]}]},"template":{"metadata":{"labels":{"app":"batch"}},"spec":{"containers":[{"name":"b","image":"busybox"}]}}}}),
            ),
            (
                "apps",
                "replicasets",
                json!({"metadata":{"name":"terra10-rs"},"spec":{"replicas":3,"selector":{"matchLabels":{"app":"terra10"}},"template":{"metadata":{"labels":{"app":"terra10"}},"spec":{"containers":[{"name":"web","image":"terra10"}]}}}}),
            ),
            (
                "apps",
                "statefulsets",
                json!({"metadata":{"name":"web"},"spec":{"serviceName":"nginx","replicas":2,"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"nginx","image":"nginx"}]}}}}),
            ),
            (
                "apps",
                "controllerrevisions",
                json!({"metadata":{"name":"web-1"},"revision":1,"data":{"spec":{"template":{}}}}),
            ),
            (
                "discovery.k8s.io",
                "endpointslices",
                json!({"metadata":{"name":"web-abc","labels":{"kubernetes.io/service-name":"web"}},"addressType":"IPv4","endpoints":[{"addresses":["10.244.0.5"],"conditions":{"ready":true}}],"ports":[{"name":"http","port":80}]}),
            ),
            (
                "events.k8s.io",
                "events",
                json!({"metadata":{"name":"web.2"},"eventTime":"2026-11-23T12:00:00.000000Z","regarding":{"kind":"StatefulSet","name":"web","namespace":"default"},"reportingController":"muster/statefulset","reportingInstance":"muster","action":"Create","reason":"SuccessfulCreate","type":"Normal","note":"create Pod web-0"}),
            ),
            (
                "coordination.k8s.io",
                "leases",
                json!({"metadata":{"name":"node-1"},"spec":{"holderIdentity":"node-1","leaseDurationSeconds":40}}),
            ),
            // What `kubectl create deployment|service --dry-run=client -o yaml` writes.
            (
                "apps",
                "deployments",
                json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"creationTimestamp":null,"labels":{"app":"nginx"},"name":"nginx"},"spec":{"replicas":1,"selector":{"matchLabels":{"app":"nginx"}},"strategy":{},"template":{"metadata":{"creationTimestamp":null,"labels":{"app":"nginx"}},"spec":{"containers":[{"image":"nginx","name":"nginx","resources":{}}]}}},"status":{}}),
            ),
            (
                "",
                "services",
                json!({"apiVersion":"v1","kind":"Service","metadata":{"creationTimestamp":null,"labels":{"app":"web"},"name":"web"},"spec":{"ports":[{"name":"80-80","port":80,"protocol":"TCP","targetPort":80}],"selector":{"app":"web"},"type":"ClusterIP"},"status":{"loadBalancer":{}}}),
            ),
        ]
    }

    fn created(group: &str, plural: &str, manifest: &Value) -> (&'static ResourceType, Value) {
        let rt = find(group, "v1", plural).unwrap();
        let mut obj = manifest.clone();
        if rt.namespaced {
            obj["metadata"]["namespace"] = json!("default");
        }
        prepare_create(rt, &mut obj).unwrap_or_else(|e| panic!("{plural}: {e}"));
        (rt, obj)
    }

    /// Everything the server stores decodes strictly (no false `unknown field` errors for
    /// kubectl's `fieldValidation=Strict`), and the manifests themselves have no unknowns.
    #[test]
    fn stored_objects_and_manifests_have_no_unknown_fields() {
        for (group, plural, manifest) in corpus() {
            let (rt, obj) = created(group, plural, &manifest);
            assert!(unknown_fields(rt, &manifest).is_empty(), "{manifest}");
            assert!(unknown_fields(rt, &obj).is_empty(), "{obj}");
        }
    }

    /// Defaulting twice changes nothing, and an unchanged update keeps the generation.
    #[test]
    fn defaulting_is_idempotent_and_noop_updates_are_noops() {
        for (group, plural, manifest) in corpus() {
            let (rt, obj) = created(group, plural, &manifest);
            let mut again = obj.clone();
            prepare_create(rt, &mut again).unwrap();
            assert_eq!(again, obj, "{plural}: create(create(x)) != create(x)");
            let mut same = obj.clone();
            prepare_update(rt, &obj, &mut same).unwrap_or_else(|e| panic!("{plural}: {e}"));
            assert_eq!(same, obj, "{plural}: a no-op update changed the object");
            let mut status = obj.clone();
            prepare_status_update(rt, &obj, &mut status).unwrap();
            assert_eq!(
                status, obj,
                "{plural}: a no-op status update changed the object"
            );
        }
    }

    /// Nothing the user sent is dropped: every leaf of the manifest is in the stored object
    /// (except write-only fields Kubernetes converts).
    #[test]
    fn nothing_sent_is_dropped() {
        fn leaves(v: &Value, path: String, out: &mut Vec<(String, Value)>) {
            match v {
                Value::Object(m) if !m.is_empty() => {
                    for (k, v) in m {
                        let k = k.replace('~', "~0").replace('/', "~1");
                        leaves(v, format!("{path}/{k}"), out);
                    }
                }
                Value::Array(a) if !a.is_empty() => {
                    for (i, v) in a.iter().enumerate() {
                        leaves(v, format!("{path}/{i}"), out);
                    }
                }
                other => out.push((path, other.clone())),
            }
        }
        for (group, plural, manifest) in corpus() {
            let (_, obj) = created(group, plural, &manifest);
            let mut sent = Vec::new();
            leaves(&manifest, String::new(), &mut sent);
            for (pointer, value) in sent {
                // `null` means unset; stringData is converted into data.
                if value.is_null() || pointer.starts_with("/stringData") {
                    continue;
                }
                let stored = obj.pointer(&pointer);
                // Times are re-rendered in Kubernetes' canonical format, and empty objects
                // (`strategy: {}`) get defaults.
                let empty = value.as_object().is_some_and(Map::is_empty);
                let same = stored == Some(&value)
                    || ((pointer.ends_with("Time") || empty) && stored.is_some());
                assert!(same, "{plural}: {pointer} = {value} became {stored:?}");
            }
        }
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use crate::registry::find;

    /// Cost of the per-request work on the write path. A measurement, not a check:
    /// `cargo test -p muster-api --release -- --ignored --nocapture timing`.
    #[test]
    #[ignore]
    fn create_update_and_table_cost() {
        let pods = find("", "v1", "pods").unwrap();
        let manifest = json!({"metadata":{"name":"web-0","namespace":"default","labels":{"app":"web"}},"spec":{"containers":[{"name":"web","image":"nginx:1.25","ports":[{"containerPort":80}],"readinessProbe":{"httpGet":{"port":80}}}]}});
        let n = 20_000;
        let start = std::time::Instant::now();
        let mut stored = Value::Null;
        for _ in 0..n {
            let mut obj = manifest.clone();
            prepare_create(pods, &mut obj).unwrap();
            stored = obj;
        }
        let create = start.elapsed() / n;
        let start = std::time::Instant::now();
        for _ in 0..n {
            let mut obj = stored.clone();
            prepare_update(pods, &stored, &mut obj).unwrap();
        }
        let update = start.elapsed() / n;
        let start = std::time::Instant::now();
        for _ in 0..n {
            assert!(unknown_fields(pods, &manifest).is_empty());
        }
        let strict = start.elapsed() / n;
        let now = chrono::Utc::now();
        let start = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(crate::table::row_cells(pods, &stored, now));
        }
        let row = start.elapsed() / n;
        println!(
            "pod prepare_create {create:?}, prepare_update {update:?}, unknown_fields {strict:?}, table row {row:?}"
        );
    }
}
