//! `meta.k8s.io/v1` Tables: server-side printing for `kubectl get`. The columns and cells are
//! `muster_api::table`'s; this adds the request-level parts (row order, watch framing).

use muster_api::ApiError;
use muster_api::registry::ResourceType;
use serde_json::Value;

use crate::compat::{self, IncludeObject};

pub fn include_from_query(v: Option<&str>) -> Result<IncludeObject, ApiError> {
    IncludeObject::parse(v.unwrap_or("")).ok_or_else(|| {
        ApiError::bad_request(format!(
            "includeObject must be one of None, Metadata, Object; got {:?}",
            v.unwrap_or("")
        ))
    })
}

fn sort_key(obj: &Value) -> (&str, &str) {
    // `get`, not `pointer`: this runs for every comparison of the sort, and `pointer`
    // allocates.
    let get = |field: &str| {
        obj.get("metadata")
            .and_then(|m| m.get(field))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    (get("namespace"), get("name"))
}

/// A Table of `objects`, rows sorted by namespace and name (kubectl prints them as given).
/// `with_columns` is false for watch events after the first, which Kubernetes also omits.
pub fn table(
    rt: &ResourceType,
    mut objects: Vec<Value>,
    resource_version: &str,
    continue_token: Option<&str>,
    include: IncludeObject,
    with_columns: bool,
) -> Value {
    objects.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
    // The objects are given up, so their metadata moves into the rows instead of being copied.
    let mut t = compat::table_owned(rt, objects, resource_version, continue_token, include);
    if !with_columns {
        t["columnDefinitions"] = Value::Null;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_are_sorted_and_carry_partial_metadata() {
        let rt = muster_api::registry::find("", "v1", "pods").unwrap();
        let objs = vec![
            json!({"metadata": {"name": "b", "namespace": "x", "labels": {"a": "1"}}}),
            json!({"metadata": {"name": "a", "namespace": "y"}}),
            json!({"metadata": {"name": "a", "namespace": "x"}}),
        ];
        let t = table(rt, objs.clone(), "7", None, IncludeObject::Metadata, true);
        let names: Vec<(String, String)> = t["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let (ns, name) = sort_key(&r["object"]);
                (ns.to_string(), name.to_string())
            })
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
        assert_eq!(b["metadata"]["labels"]["a"], "1");
        assert_eq!(t["metadata"]["resourceVersion"], "7");
        assert!(t["columnDefinitions"].as_array().unwrap().len() >= 2);
        let no_cols = table(rt, objs, "7", None, IncludeObject::None, false);
        assert!(no_cols["columnDefinitions"].is_null());
        assert!(no_cols["rows"][0].get("object").is_none());
    }

    #[test]
    fn include_object_parameter() {
        let cases = [
            (None, Some(IncludeObject::Metadata)),
            (Some("Object"), Some(IncludeObject::Object)),
            (Some("None"), Some(IncludeObject::None)),
            (Some("All"), None),
        ];
        for (q, want) in cases {
            assert_eq!(include_from_query(q).ok(), want, "{q:?}");
        }
    }
}
