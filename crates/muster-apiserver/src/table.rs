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

/// The JSON of [`table`] over stored objects of `rt`, built one row at a time: each object
/// is parsed, turned into its row and serialized before the next is parsed, so a Table of
/// 100,000 pods never holds 100,000 parsed objects (which costs more in allocation and page
/// faults than the rows themselves). Rows are sorted as [`table`] sorts them, by namespace and
/// name, taken from the storage keys.
pub fn table_json_of_stored(
    rt: &'static ResourceType,
    mut objects: Vec<muster_store::Object>,
    resource_version: &str,
    continue_token: Option<&str>,
    include: IncludeObject,
) -> Result<Vec<u8>, muster_store::StoreError> {
    let prefix = muster_api::registry::storage_resource(rt).key_prefix();
    let namespaced = rt.namespaced;
    let key_of = |o: &muster_store::Object| -> (String, String) {
        let rest = o.key.strip_prefix(prefix.as_str()).unwrap_or(&o.key);
        match rest.split_once('/') {
            Some((ns, name)) if namespaced => (ns.to_string(), name.to_string()),
            _ => (String::new(), rest.to_string()),
        }
    };
    objects.sort_by_cached_key(key_of);
    let head = compat::table_owned(rt, Vec::new(), resource_version, continue_token, include);
    let head = serde_json::to_vec(&head).unwrap_or_default();
    // `head` ends with `"rows":[]}`: rows go between the brackets.
    let mut body = Vec::with_capacity(head.len() + objects.len() * 512);
    body.extend_from_slice(&head[..head.len() - 2]);
    let now = chrono::Utc::now();
    for (i, object) in objects.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let row = compat::table_row_owned(rt, object.json()?, now, include);
        serde_json::to_writer(&mut body, &row)
            .map_err(|e| muster_store::StoreError::Corrupt(e.to_string()))?;
    }
    body.extend_from_slice(b"]}");
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The row-at-a-time Table of stored objects is the Table of the parsed objects.
    #[test]
    fn streamed_tables_equal_built_ones() {
        let pods = muster_api::registry::find("", "v1", "pods").unwrap();
        let nodes = muster_api::registry::find("", "v1", "nodes").unwrap();
        let stored = |key: &str, v: Value| muster_store::Object {
            key: key.into(),
            create_revision: 2,
            mod_revision: 3,
            value: serde_json::to_vec(&v).unwrap().into(),
        };
        let pod = |ns: &str, name: &str| {
            json!({"metadata": {"name": name, "namespace": ns, "labels": {"a": "1"}},
                "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Running"}})
        };
        // Key order differs from (namespace, name) order: "a-b/x" < "a/x" bytewise.
        let cases = [
            (
                pods,
                vec![
                    ("a/x", pod("a", "x")),
                    ("a-b/x", pod("a-b", "x")),
                    ("a/w", pod("a", "w")),
                ],
            ),
            (pods, vec![]),
            (
                nodes,
                vec![
                    ("n2", json!({"metadata": {"name": "n2"}})),
                    ("n1", json!({"metadata": {"name": "n1"}})),
                ],
            ),
        ];
        for (rt, objects) in cases {
            let prefix = rt.key_prefix();
            let stored_objects: Vec<_> = objects
                .iter()
                .map(|(k, v)| stored(&format!("{prefix}{k}"), v.clone()))
                .collect();
            let values: Vec<Value> = objects.into_iter().map(|(_, v)| v).collect();
            for (include, token) in [
                (IncludeObject::Metadata, None),
                (IncludeObject::Object, Some("c")),
            ] {
                let streamed: Value = serde_json::from_slice(
                    &table_json_of_stored(rt, stored_objects.clone(), "9", token, include).unwrap(),
                )
                .unwrap();
                assert_eq!(
                    streamed,
                    table(rt, values.clone(), "9", token, include, true),
                    "{}",
                    rt.plural
                );
            }
        }
    }

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
