//! OpenAPI v3 documents, one per group-version, rendered once from the registry.
//!
//! What kubectl needs from them (reference/kubectl.md §2): for every kind a PATCH operation
//! that carries `x-kubernetes-group-version-kind` and a `fieldValidation` parameter. With that,
//! `kubectl apply/create` trusts the server to validate (we do, in `fieldValidation=Strict`)
//! instead of downloading the protobuf `/openapi/v2`. Component schemas are left empty on
//! purpose: a schema without the strategic-merge extensions would make client-side apply
//! compute wrong patches, while no schema makes kubectl use its compiled-in patch metadata.

use muster_api::registry::{self, RESOURCES, ResourceType};
use serde_json::{Map, Value, json};

pub struct OpenApi {
    /// `(group, version, rendered document)`
    docs: Vec<(String, String, Vec<u8>)>,
    index: Vec<u8>,
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
        "components": {"schemas": {}},
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

impl OpenApi {
    pub fn new() -> OpenApi {
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
        OpenApi { docs, index }
    }

    pub fn index(&self) -> &[u8] {
        &self.index
    }

    pub fn document(&self, group: &str, version: &str) -> Option<&[u8]> {
        self.docs
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
        let api = OpenApi::new();
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
}
