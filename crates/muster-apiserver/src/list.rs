//! LIST: selectors, `limit`/`continue` pages, `resourceVersion`, JSON lists and Tables.
//!
//! A list whose items go out exactly as stored (no selector to check, no Table, no
//! conversion) is written by splicing the stored JSON of each object into the list envelope,
//! without parsing or re-serializing anything: the stored bytes are compact serde_json
//! output, so the result is byte for byte what serializing the parsed objects would give.
//!
//! Pages: every page is read at the store's revision of the moment. Kubernetes reads every
//! page at the first page's resourceVersion (an etcd snapshot) and answers 410 Expired once
//! that revision is compacted; muster's redb store keeps no old versions to read, so an
//! object created, changed or deleted between two pages shows up in the later page as it is
//! then (as Kubernetes' own "inconsistent continue" does after a 410). Every page still
//! reports the first page's revision as its `metadata.resourceVersion`, as Kubernetes does:
//! an informer watches from the list's revision, and a watch from the first page's revision
//! replays every change made while it paged, so a change to an object on an earlier page is
//! never lost (a watch from the last page's revision would miss it and leave the cache stale).
//! Pages never skip or repeat an object that exists throughout: the token resumes after the
//! last key sent.

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use muster_api::registry::{self, ResourceType};
use muster_api::{ApiError, ApiResult};
use serde_json::{Value, json};

use crate::handler::{Filter, State, store_error};
use crate::http::{bytes_response, json_response};
use crate::query::{Query, wants_table};
use crate::route::ResourcePath;
use crate::{freshness, table};

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    start: String,
}

fn encode_continue(rv: u64, start: &str) -> String {
    use base64::Engine;
    let raw = serde_json::to_vec(&ContinueToken {
        rv,
        start: start.to_string(),
    })
    .unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str, prefix: &str) -> ApiResult<ContinueToken> {
    use base64::Engine;
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let t: ContinueToken = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if !t.start.starts_with(prefix) {
        return Err(bad());
    }
    Ok(t)
}

/// The `resourceVersion` a list must be at least as new as: none for "" and "0" (any).
fn minimum_revision(query: &Query) -> ApiResult<Option<u64>> {
    match query.get("resourceVersion") {
        None | Some("") | Some("0") => Ok(None),
        Some(rv) => rv.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "invalid resourceVersion {rv:?}: must be an integer"
            ))
        }),
    }
}

/// The items of a list, as they go out.
enum Items {
    /// Stored JSON, spliced as is.
    Raw(Vec<Bytes>),
    /// Stored objects for a Table with nothing to filter: parsed one at a time as rows.
    Stored(Vec<muster_store::Object>),
    /// Parsed (selectors, Tables, conversions).
    Parsed(Vec<Value>),
}

impl Items {
    fn len(&self) -> usize {
        match self {
            Items::Raw(v) => v.len(),
            Items::Stored(v) => v.len(),
            Items::Parsed(v) => v.len(),
        }
    }
}

pub async fn list(
    state: &State,
    rp: &ResourcePath,
    query: &Query,
    headers: &HeaderMap,
) -> ApiResult<Response<Body>> {
    let rt = rp.rt;
    let srt = registry::storage_resource(rt);
    let filter = Filter::from_query(rp.rt, query)?;
    let limit = query
        .u64_param("limit")?
        .filter(|l| *l > 0)
        .map(|l| l as usize);
    let prefix = srt.namespace_prefix(rp.namespace.as_deref());
    let mut start_after: Option<String> = None;
    // The revision every page of this list reports: the first page's (see the module docs).
    let mut revision = 0;
    if let Some(token) = query.get("continue").filter(|t| !t.is_empty()) {
        let token = decode_continue(token, &prefix)?;
        start_after = Some(token.start);
        revision = token.rv;
    }
    if let Some(wanted) = minimum_revision(query)? {
        freshness::wait_for(
            state.store.as_ref(),
            &prefix,
            wanted,
            freshness::BLOCK_TIMEOUT,
        )
        .await?;
    }
    let as_table = wants_table(headers);
    // Nothing to filter or convert: no item needs parsing to be selected.
    let unfiltered = rt.group != "events.k8s.io"
        && filter.labels.is_everything()
        && filter.fields.is_everything();
    let mut items = if unfiltered && !as_table {
        Items::Raw(Vec::new())
    } else if unfiltered {
        Items::Stored(Vec::new())
    } else {
        Items::Parsed(Vec::new())
    };
    let mut next: Option<String> = None;
    loop {
        let want = limit.map(|l| (l - items.len()).max(64));
        let page = state
            .store
            .list(&prefix, start_after.as_deref(), want)
            .await
            .map_err(store_error)?;
        if revision == 0 {
            revision = page.revision;
        }
        let exhausted = page.continue_after.is_none();
        for obj in page.items {
            start_after = Some(obj.key.to_string());
            match &mut items {
                Items::Raw(out) => out.push(obj.value),
                Items::Stored(out) => out.push(obj),
                Items::Parsed(out) => {
                    let value = obj.json().map_err(store_error)?;
                    if filter.matches(&value) {
                        out.push(present(rt, value));
                    }
                }
            }
            if limit.is_some_and(|l| items.len() >= l) {
                break;
            }
        }
        if limit.is_some_and(|l| items.len() >= l) {
            // More may follow: only when the store had more or this page was cut short.
            let last = start_after.clone().unwrap_or_default();
            let more = state
                .store
                .list(&prefix, Some(&last), Some(1))
                .await
                .map_err(store_error)?;
            if !more.items.is_empty() {
                next = Some(last);
            }
            break;
        }
        if exhausted {
            break;
        }
    }
    let continue_token = next
        .as_deref()
        .map(|start| encode_continue(revision, start));
    let items = match items {
        Items::Raw(items) => {
            let body = raw_list_body(rt, revision, continue_token.as_deref(), &items);
            return Ok(bytes_response(StatusCode::OK, "application/json", body));
        }
        Items::Stored(objects) => {
            let include = table::include_from_query(query.get("includeObject"))?;
            let body = table::table_json_of_stored(
                rt,
                objects,
                &revision.to_string(),
                continue_token.as_deref(),
                include,
            )
            .map_err(store_error)?;
            return Ok(bytes_response(StatusCode::OK, "application/json", body));
        }
        Items::Parsed(items) => items,
    };
    if as_table {
        let include = table::include_from_query(query.get("includeObject"))?;
        let t = table::table(
            rt,
            items,
            &revision.to_string(),
            continue_token.as_deref(),
            include,
            true,
        );
        return Ok(json_response(StatusCode::OK, &t));
    }
    let mut list_meta = json!({"resourceVersion": revision.to_string()});
    if let Some(token) = &continue_token {
        list_meta["continue"] = json!(token);
    }
    let body = json!({
        "kind": rt.list_kind,
        "apiVersion": rt.api_version(),
        "metadata": list_meta,
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &body))
}

fn present(rt: &ResourceType, obj: Value) -> Value {
    if rt.group == "events.k8s.io" {
        crate::compat::event_to_events_v1(&obj)
    } else {
        obj
    }
}

/// `{"kind":..,"apiVersion":..,"metadata":{..},"items":[..]}` around stored JSON objects,
/// exactly as `serde_json` writes the parsed list.
fn raw_list_body(
    rt: &ResourceType,
    revision: u64,
    continue_token: Option<&str>,
    items: &[Bytes],
) -> Vec<u8> {
    let mut head = json!({
        "kind": rt.list_kind,
        "apiVersion": rt.api_version(),
        "metadata": {"resourceVersion": revision.to_string()},
    });
    if let Some(token) = continue_token {
        head["metadata"]["continue"] = json!(token);
    }
    let head = serde_json::to_vec(&head).unwrap_or_default();
    let size = head.len() + 12 + items.iter().map(|i| i.len() + 1).sum::<usize>();
    let mut body = Vec::with_capacity(size);
    // The envelope without its closing brace, then the items array.
    body.extend_from_slice(&head[..head.len() - 1]);
    body.extend_from_slice(br#","items":["#);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"]}");
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_list_bodies_equal_serialized_lists() {
        let pods = registry::find("", "v1", "pods").unwrap();
        let objects = [
            json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "a", "resourceVersion": "5"}}),
            json!({"kind": "Pod", "metadata": {"name": "é\"b", "labels": {"x": "1"}}, "spec": {"n": [1, 2.5, null]}}),
        ];
        for count in 0..=objects.len() {
            for token in [None, Some("abc")] {
                let items: Vec<Bytes> = objects[..count]
                    .iter()
                    .map(|o| Bytes::from(serde_json::to_vec(o).unwrap()))
                    .collect();
                let mut meta = json!({"resourceVersion": "42"});
                if let Some(t) = token {
                    meta["continue"] = json!(t);
                }
                let want = serde_json::to_vec(&json!({
                    "kind": "PodList", "apiVersion": "v1", "metadata": meta,
                    "items": objects[..count].to_vec(),
                }))
                .unwrap();
                assert_eq!(
                    String::from_utf8(raw_list_body(pods, 42, token, &items)).unwrap(),
                    String::from_utf8(want).unwrap(),
                    "{count} items, token {token:?}"
                );
            }
        }
    }

    #[test]
    fn continue_tokens_round_trip_and_stay_in_their_prefix() {
        let token = encode_continue(7, "/registry/core/pods/a/x");
        let t = decode_continue(&token, "/registry/core/pods/a/").unwrap();
        assert_eq!((t.rv, t.start.as_str()), (7, "/registry/core/pods/a/x"));
        for (token, prefix) in [
            (token.as_str(), "/registry/core/pods/b/"),
            ("not base64!", "/"),
            ("e30", "/"),
        ] {
            assert_eq!(
                decode_continue(token, prefix).unwrap_err().code,
                400,
                "{token}"
            );
        }
    }
}
