//! `meta.k8s.io/v1` Tables: server-side printing for `kubectl get`.

use muster_api::registry::ResourceType;
use serde_json::{Value, json};

use crate::compat;

/// How much of each object a row carries (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn from_query(v: Option<&str>) -> Result<Self, muster_api::ApiError> {
        match v {
            None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(muster_api::ApiError::bad_request(format!(
                "includeObject must be one of None, Metadata, Object; got {other:?}"
            ))),
        }
    }
}

/// The `PartialObjectMetadata` form of an object (what rows carry by default).
pub fn partial_metadata(obj: &Value) -> Value {
    let mut meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    if let Some(m) = meta.as_object_mut() {
        m.remove("managedFields");
    }
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
}

pub fn row(
    rt: &ResourceType,
    obj: &Value,
    include: IncludeObject,
    now: chrono::DateTime<chrono::Utc>,
) -> Value {
    let cells = compat::row_cells(rt, obj, now);
    match include {
        IncludeObject::None => json!({"cells": cells}),
        IncludeObject::Metadata => json!({"cells": cells, "object": partial_metadata(obj)}),
        IncludeObject::Object => json!({"cells": cells, "object": obj}),
    }
}

fn sort_key(obj: &Value) -> (String, String) {
    let get = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (get("/metadata/namespace"), get("/metadata/name"))
}

/// A Table of `objects`, rows sorted by namespace and name (kubectl prints them as given).
/// `with_columns` is false for watch events after the first, which Kubernetes also omits.
pub fn table(
    rt: &ResourceType,
    objects: &[Value],
    list_meta: Value,
    include: IncludeObject,
    with_columns: bool,
) -> Value {
    let now = chrono::Utc::now();
    let mut sorted: Vec<&Value> = objects.iter().collect();
    sorted.sort_by_key(|o| sort_key(o));
    let rows: Vec<Value> = sorted
        .into_iter()
        .map(|o| row(rt, o, include, now))
        .collect();
    let columns = if with_columns {
        json!(compat::column_definitions(rt))
    } else {
        Value::Null
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_sorted_and_carry_partial_metadata() {
        let rt = muster_api::registry::find("", "v1", "pods").unwrap();
        let objs = vec![
            json!({"metadata": {"name": "b", "namespace": "x", "managedFields": [{}], "labels": {"a": "1"}}}),
            json!({"metadata": {"name": "a", "namespace": "y"}}),
            json!({"metadata": {"name": "a", "namespace": "x"}}),
        ];
        let t = table(
            rt,
            &objs,
            json!({"resourceVersion": "7"}),
            IncludeObject::Metadata,
            true,
        );
        let names: Vec<(String, String)> = t["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| sort_key(&r["object"]))
            .collect();
        assert_eq!(
            names,
            vec![
                ("x".into(), "a".into()),
                ("x".into(), "b".into()),
                ("y".into(), "a".into())
            ]
        );
        let b = &t["rows"][1]["object"];
        assert_eq!(b["kind"], "PartialObjectMetadata");
        assert!(b["metadata"].get("managedFields").is_none());
        assert_eq!(b["metadata"]["labels"]["a"], "1");
        assert_eq!(t["metadata"]["resourceVersion"], "7");
        assert!(t["columnDefinitions"].as_array().unwrap().len() >= 2);
        let no_cols = table(rt, &objs, json!({}), IncludeObject::None, false);
        assert!(no_cols["columnDefinitions"].is_null());
        assert!(no_cols["rows"][0].get("object").is_none());
    }
}
