//! OpenAPI v3 documents, one per group-version, rendered on first use from the registry and
//! the `k8s-openapi` types.
//!
//! What kubectl needs from them (reference/kubectl.md §2):
//! - for every kind a PATCH operation that carries `x-kubernetes-group-version-kind` and a
//!   `fieldValidation` parameter. With that, `kubectl apply/create` trusts the server to
//!   validate (we do, in `fieldValidation=Strict`) instead of downloading the protobuf
//!   `/openapi/v2`;
//! - component schemas for `kubectl explain`, named as Kubernetes names them
//!   (`io.k8s.api.apps.v1.Deployment`), the kinds tagged with `x-kubernetes-group-version-kind`.
//!   Client-side apply reads strategic-merge metadata from the same schemas, so every list
//!   Kubernetes merges by key carries `x-kubernetes-patch-merge-key`/`-strategy` (a schema
//!   without them would make kubectl replace those lists wholesale).
//!
//! `/openapi/v2` is answered 404, on this evidence (kubectl 1.33 at `-v=6`, every command of
//! the list): only client-side `apply` of an existing object and `diff` ask for it,
//! protobuf only, after logging "OpenAPI V3 path does not support strategic merge patch"
//! (our PATCH operations list no request content types); on the 404 kubectl computes the
//! patch from the strategic-merge metadata compiled into it, which is exact for every kind
//! served here, and the command succeeds. Serving v2 would mean the gnostic protobuf
//! encoding of the whole document for no change in what kubectl does.

use std::sync::OnceLock;

use muster_api::registry::{self, RESOURCES, ResourceType};
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

/// The documents, built on the first OpenAPI request (they take a moment and most clients never
/// ask), so they cost nothing at startup.
#[derive(Default)]
pub struct OpenApi {
    rendered: OnceLock<Rendered>,
}

struct Rendered {
    /// `(group, version, rendered document)`
    docs: Vec<(String, String, Vec<u8>)>,
    index: Vec<u8>,
}

/// Adds the schema of `T` (and everything it references) to `generator`; returns its name.
fn add<T: JsonSchema>(generator: &mut SchemaGenerator) -> String {
    generator.subschema_for::<T>();
    T::schema_name().into_owned()
}

/// The `k8s-openapi` type of a served kind.
fn schema_for_kind(rt: &ResourceType, generator: &mut SchemaGenerator) -> Option<String> {
    use k8s_openapi::api::{apps, coordination, core, discovery, events};
    Some(match (rt.group, rt.kind) {
        ("", "Pod") => add::<core::v1::Pod>(generator),
        ("", "Service") => add::<core::v1::Service>(generator),
        ("", "Endpoints") => add::<core::v1::Endpoints>(generator),
        ("", "Namespace") => add::<core::v1::Namespace>(generator),
        ("", "Node") => add::<core::v1::Node>(generator),
        ("", "Event") => add::<core::v1::Event>(generator),
        ("", "ConfigMap") => add::<core::v1::ConfigMap>(generator),
        ("", "Secret") => add::<core::v1::Secret>(generator),
        ("", "ServiceAccount") => add::<core::v1::ServiceAccount>(generator),
        ("apps", "Deployment") => add::<apps::v1::Deployment>(generator),
        ("apps", "ReplicaSet") => add::<apps::v1::ReplicaSet>(generator),
        ("apps", "StatefulSet") => add::<apps::v1::StatefulSet>(generator),
        ("apps", "ControllerRevision") => add::<apps::v1::ControllerRevision>(generator),
        ("discovery.k8s.io", "EndpointSlice") => add::<discovery::v1::EndpointSlice>(generator),
        ("events.k8s.io", "Event") => add::<events::v1::Event>(generator),
        ("coordination.k8s.io", "Lease") => add::<coordination::v1::Lease>(generator),
        _ => return None,
    })
}

/// Kubernetes' strategic-merge tags, as its Go types declare them:
/// (schema, property, merge key or "", strategy).
const PATCH_METADATA: &[(&str, &str, &str, &str)] = &[
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "",
        "merge",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "uid",
        "merge",
    ),
    ("io.k8s.api.core.v1.PodSpec", "containers", "name", "merge"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        "name",
        "merge",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        "name",
        "merge",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        "name",
        "merge,retainKeys",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        "name",
        "merge",
    ),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "ip", "merge"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "topologyKey",
        "merge",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        "name",
        "merge,retainKeys",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        "name",
        "merge",
    ),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        "containerPort",
        "merge",
    ),
    ("io.k8s.api.core.v1.Container", "env", "name", "merge"),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        "mountPath",
        "merge",
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        "devicePath",
        "merge",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        "containerPort",
        "merge",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "env",
        "name",
        "merge",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        "mountPath",
        "merge",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        "devicePath",
        "merge",
    ),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "port", "merge"),
    (
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        "type",
        "merge",
    ),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", "ip", "merge"),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", "ip", "merge"),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        "type",
        "merge",
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        "type",
        "merge",
    ),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "", "merge"),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        "type",
        "merge",
    ),
    (
        "io.k8s.api.core.v1.ServiceStatus",
        "conditions",
        "type",
        "merge",
    ),
    (
        "io.k8s.api.core.v1.ServiceAccount",
        "secrets",
        "name",
        "merge",
    ),
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        "",
        "retainKeys",
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        "type",
        "merge",
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        "type",
        "merge",
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        "type",
        "merge",
    ),
];

/// Tags the kinds with their GVK and the lists with their merge keys.
fn annotate(schemas: &mut Map<String, Value>, kinds: &[(&ResourceType, String)]) {
    for (rt, name) in kinds {
        if let Some(schema) = schemas.get_mut(name).and_then(Value::as_object_mut) {
            schema.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": rt.group, "version": rt.version, "kind": rt.kind}]),
            );
        }
    }
    for (schema, property, key, strategy) in PATCH_METADATA {
        let Some(prop) = schemas
            .get_mut(*schema)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(*property))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if !key.is_empty() {
            prop.insert("x-kubernetes-patch-merge-key".into(), json!(key));
        }
        prop.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
    }
}

/// The schemas of one group-version's kinds and everything they reference.
fn schemas(group: &str, version: &str) -> Map<String, Value> {
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let kinds: Vec<(&ResourceType, String)> = RESOURCES
        .iter()
        .filter(|rt| rt.group == group && rt.version == version)
        .filter_map(|rt| schema_for_kind(rt, &mut generator).map(|name| (rt, name)))
        .collect();
    let mut defs = generator.take_definitions(true);
    annotate(&mut defs, &kinds);
    defs
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn operation(rt: &ResourceType, verb: &str, action: &str) -> Value {
    let mut params = vec![
        json!({"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}}),
        json!({"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}}),
    ];
    if matches!(verb, "post" | "put" | "patch") {
        params.push(json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}}));
    }
    if verb == "patch" {
        params.push(json!({"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}));
    }
    json!({
        "operationId": format!("{verb}{}", rt.kind),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "parameters": params,
        "responses": {"200": {"description": "OK"}},
    })
}

fn document(group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    for rt in RESOURCES
        .iter()
        .filter(|rt| rt.group == group && rt.version == version)
    {
        let base = format!("/{}", gv_path(group, version));
        let collection = if rt.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", rt.plural)
        } else {
            format!("{base}/{}", rt.plural)
        };
        paths.insert(
            collection.clone(),
            json!({
                "get": operation(rt, "get", "list"),
                "post": operation(rt, "post", "post"),
            }),
        );
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({
                "get": operation(rt, "get", "get"),
                "put": operation(rt, "put", "put"),
                "patch": operation(rt, "patch", "patch"),
                "delete": operation(rt, "delete", "delete"),
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.1"},
        "paths": paths,
        "components": {"schemas": schemas(group, version)},
    })
}

/// FNV-1a, hex: a content hash for the index's cache-busting `hash` parameter.
fn content_hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016X}")
}

impl Rendered {
    fn new() -> Rendered {
        let mut docs = Vec::new();
        let mut index = Map::new();
        for (g, v) in registry::group_versions() {
            let doc = serde_json::to_vec(&document(g, v)).unwrap_or_default();
            let path = gv_path(g, v);
            index.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", content_hash(&doc))}),
            );
            docs.push((g.to_string(), v.to_string(), doc));
        }
        let index = serde_json::to_vec(&json!({"paths": index})).unwrap_or_default();
        Rendered { docs, index }
    }
}

impl OpenApi {
    fn rendered(&self) -> &Rendered {
        self.rendered.get_or_init(Rendered::new)
    }

    pub fn index(&self) -> &[u8] {
        &self.rendered().index
    }

    pub fn document(&self, group: &str, version: &str) -> Option<&[u8]> {
        self.rendered()
            .docs
            .iter()
            .find(|(g, v, _)| g == group && v == version)
            .map(|(_, _, d)| d.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_patch_operation_with_field_validation() {
        let api = OpenApi::default();
        for rt in RESOURCES {
            let doc: Value =
                serde_json::from_slice(api.document(rt.group, rt.version).unwrap()).unwrap();
            let patch = doc["paths"]
                .as_object()
                .unwrap()
                .values()
                .filter_map(|p| p.get("patch"))
                .find(|op| op["x-kubernetes-group-version-kind"]["kind"] == rt.kind)
                .unwrap_or_else(|| panic!("no patch for {}", rt.kind));
            assert!(
                patch["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == "fieldValidation")
            );
        }
        let index: Value = serde_json::from_slice(api.index()).unwrap();
        assert!(
            index["paths"]["apis/apps/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/apis/apps/v1?hash=")
        );
    }

    #[test]
    fn kinds_have_schemas_with_gvk_and_merge_keys() {
        let api = OpenApi::default();
        let doc: Value = serde_json::from_slice(api.document("apps", "v1").unwrap()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let deploy = &schemas["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deploy["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        assert!(deploy["properties"]["spec"].is_object());
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        let core: Value = serde_json::from_slice(api.document("", "v1").unwrap()).unwrap();
        let ports =
            &core["components"]["schemas"]["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"];
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "port");
        // Every tag names a real property of a real schema (a typo would silently do nothing).
        let all: Vec<Value> = registry::group_versions()
            .into_iter()
            .map(|(g, v)| serde_json::from_slice(api.document(g, v).unwrap()).unwrap())
            .collect();
        for (schema, property, _, _) in PATCH_METADATA {
            assert!(
                all.iter().any(
                    |d| d["components"]["schemas"][*schema]["properties"][*property]
                        .get("x-kubernetes-patch-strategy")
                        .is_some()
                ),
                "{schema}.{property}"
            );
        }
    }
}
