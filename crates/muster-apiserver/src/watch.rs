//! Watch: a chunked stream of newline-delimited WatchEvents, one flushed chunk per event.
//!
//! Selector semantics follow Kubernetes: an object that stops matching is sent as DELETED,
//! one that starts matching as ADDED. A compacted start revision is answered inside the stream
//! (HTTP 200) with an ERROR event carrying a 410 `Expired` Status, which is what clients and
//! informers expect.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use muster_api::registry::{self, ResourceType};
use muster_api::{ApiError, ApiResult};
use muster_store::{Event, StoreError, WatchStream};
use serde_json::{Value, json};

use crate::compat::IncludeObject;
use crate::handler::{Filter, State, store_error};
use crate::query::{Query, wants_table};
use crate::route::ResourcePath;
use crate::table;

/// How a client wants each event's object.
#[derive(Clone, Copy)]
struct Shape {
    rt: &'static ResourceType,
    table: Option<IncludeObject>,
}

/// Turns store events into WatchEvent lines for one client.
struct Encoder {
    shape: Shape,
    filter: Filter,
    bookmarks: bool,
    sent_columns: bool,
}

fn present(rt: &ResourceType, obj: Value) -> Value {
    if rt.group == "events.k8s.io" {
        crate::compat::event_to_events_v1(&obj)
    } else {
        obj
    }
}

impl Encoder {
    fn line(&mut self, kind: &str, obj: Value) -> Bytes {
        let object = match self.shape.table {
            Some(include) => {
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let with_columns = !self.sent_columns;
                self.sent_columns = true;
                table::table(self.shape.rt, vec![obj], &rv, None, include, with_columns)
            }
            None => obj,
        };
        let mut bytes =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    }

    /// Whether a stored object goes out exactly as stored: no selector to check, no Table
    /// and no conversion. Its event line is then spliced from the stored bytes, never parsed.
    fn passes_raw(&self) -> bool {
        self.shape.table.is_none()
            && self.shape.rt.group != "events.k8s.io"
            && self.filter.labels.is_everything()
            && self.filter.fields.is_everything()
    }

    /// `{"type":KIND,"object":OBJECT}` and a newline, with the stored JSON as the object.
    fn raw_line(kind: &str, stored: &[u8]) -> Bytes {
        let mut bytes = Vec::with_capacity(stored.len() + kind.len() + 24);
        bytes.extend_from_slice(br#"{"type":""#);
        bytes.extend_from_slice(kind.as_bytes());
        bytes.extend_from_slice(br#"","object":"#);
        bytes.extend_from_slice(stored);
        bytes.extend_from_slice(b"}\n");
        Bytes::from(bytes)
    }

    fn bookmark(&self, revision: u64, initial_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let event = json!({"type": "BOOKMARK", "object": {
            "kind": self.shape.rt.kind,
            "apiVersion": self.shape.rt.api_version(),
            "metadata": metadata,
        }});
        let mut bytes = serde_json::to_vec(&event).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    }

    fn error(err: &ApiError) -> Bytes {
        let mut bytes = serde_json::to_vec(&json!({"type": "ERROR", "object": err.to_status()}))
            .unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    }

    /// The line for one store event, if this client sees it.
    fn event(&mut self, event: Event) -> Result<Option<Bytes>, StoreError> {
        let rt = self.shape.rt;
        if self.passes_raw() {
            return Ok(match event {
                Event::Put { object, prev } => {
                    let kind = if prev.is_some() { "MODIFIED" } else { "ADDED" };
                    Some(Self::raw_line(kind, &object.value))
                }
                Event::Delete { object, .. } => Some(Self::raw_line("DELETED", &object.value)),
                Event::Progress(rev) => self.bookmarks.then(|| self.bookmark(rev, false)),
            });
        }
        Ok(match event {
            Event::Put { object, prev } => {
                let new = object.json()?;
                let now_matches = self.filter.matches(&new);
                let was_matching = match &prev {
                    Some(p) => Some(self.filter.matches(&p.json()?)),
                    None => None,
                };
                let new = present(rt, new);
                match (now_matches, was_matching) {
                    (true, Some(true)) => Some(self.line("MODIFIED", new)),
                    (true, _) => Some(self.line("ADDED", new)),
                    (false, Some(true)) => Some(self.line("DELETED", new)),
                    (false, _) => None,
                }
            }
            Event::Delete { object, .. } => {
                let old = object.json()?;
                self.filter
                    .matches(&old)
                    .then(|| self.line("DELETED", present(rt, old)))
            }
            Event::Progress(rev) => self.bookmarks.then(|| self.bookmark(rev, false)),
        })
    }
}

fn parse_revision(q: &Query) -> ApiResult<Option<u64>> {
    match q.get("resourceVersion") {
        None | Some("") | Some("0") => Ok(None),
        Some(rv) => rv.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "invalid resourceVersion {rv:?}: must be an integer"
            ))
        }),
    }
}

pub async fn serve(
    state: Arc<State>,
    rp: ResourcePath,
    query: Query,
    headers: HeaderMap,
) -> ApiResult<Response<Body>> {
    let rt = rp.rt;
    if !rt.has_verb("watch") {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    let srt = registry::storage_resource(rt);
    let filter = Filter::from_query(rt, &query)?;
    let table = if wants_table(&headers) {
        Some(table::include_from_query(query.get("includeObject"))?)
    } else {
        None
    };
    let timeout = query.u64_param("timeoutSeconds")?.map(Duration::from_secs);
    let bookmarks = query.flag("allowWatchBookmarks");
    let send_initial = query.flag("sendInitialEvents");
    let requested = parse_revision(&query)?;
    // A watch of one named object narrows the store prefix to its key (the selector still
    // filters out longer names that share the prefix).
    let prefix = match filter.fields.exact("metadata.name") {
        Some(name) if !rt.namespaced || rp.namespace.is_some() => {
            srt.key(rp.namespace.as_deref(), name)
        }
        _ => srt.namespace_prefix(rp.namespace.as_deref()),
    };
    let mut encoder = Encoder {
        shape: Shape { rt, table },
        filter,
        bookmarks,
        sent_columns: false,
    };
    // Events up to this revision are not sent: a plain watch from a resourceVersion the
    // store has not reached yet is accepted at once (as Kubernetes does) and stays silent
    // until the store passes it.
    let mut silent_through = 0;
    let start = match requested {
        // A watch-list waits for its resourceVersion, then starts with the current state.
        Some(rev) if send_initial => {
            if let Err(e) = crate::freshness::wait_for(
                state.store.as_ref(),
                &prefix,
                rev,
                crate::freshness::BLOCK_TIMEOUT,
            )
            .await
            {
                return Ok(stream_response(futures::stream::iter([Encoder::error(&e)])));
            }
            None
        }
        Some(rev) if rev > state.store.revision() => {
            silent_through = rev;
            Some(state.store.revision())
        }
        other => other,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let opened: Result<(Vec<Bytes>, WatchStream), StoreError> = match start {
        None => match state.store.list_and_watch(&prefix).await {
            Ok((list, stream)) => {
                let mut lines = Vec::new();
                let raw = encoder.passes_raw();
                for obj in &list.items {
                    if raw {
                        lines.push(Encoder::raw_line("ADDED", &obj.value));
                        continue;
                    }
                    let value = obj.json().map_err(store_error)?;
                    if encoder.filter.matches(&value) {
                        lines.push(encoder.line("ADDED", present(rt, value)));
                    }
                }
                if send_initial && bookmarks {
                    lines.push(encoder.bookmark(list.revision, true));
                }
                Ok((lines, stream))
            }
            Err(e) => Err(e),
        },
        Some(rev) => state
            .store
            .watch(&prefix, rev)
            .await
            .map(|s| (Vec::new(), s)),
    };
    let (initial, mut stream) = match opened {
        Ok(ok) => ok,
        Err(e @ (StoreError::Gone { .. } | StoreError::FutureRevision { .. })) => {
            // Inside the stream, as Kubernetes does, so `get -w` prints it and informers relist.
            let line = Encoder::error(&store_error(e));
            return Ok(stream_response(futures::stream::iter([line])));
        }
        Err(e) => return Err(store_error(e)),
    };
    tokio::spawn(async move {
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let next = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, stream.next()).await.ok(),
                    None => Some(stream.next().await),
                }
            };
            let item = tokio::select! {
                item = next => item,
                _ = tx.closed() => return,
            };
            let line = match item {
                None => return,       // timeoutSeconds reached
                Some(None) => return, // store shut down
                Some(Some(Ok(event))) if event.revision() <= silent_through => continue,
                Some(Some(Ok(event))) => match encoder.event(event) {
                    Ok(Some(line)) => line,
                    Ok(None) => continue,
                    Err(e) => Encoder::error(&store_error(e)),
                },
                Some(Some(Err(e))) => {
                    let _ = tx.send(Encoder::error(&store_error(e))).await;
                    return;
                }
            };
            if tx.send(line).await.is_err() {
                return;
            }
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (line, rx))
    });
    Ok(stream_response(body))
}

fn stream_response<S>(lines: S) -> Response<Body>
where
    S: futures::Stream<Item = Bytes> + Send + 'static,
{
    use futures::StreamExt;
    let body = Body::from_stream(lines.map(Ok::<_, std::convert::Infallible>));
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_store::Object;

    fn object(rev: u64, labels: Value) -> Object {
        let v = json!({"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "p", "namespace": "default", "resourceVersion": rev.to_string(), "labels": labels}});
        Object {
            key: Arc::from("/registry/core/pods/default/p"),
            create_revision: 1,
            mod_revision: rev,
            value: Bytes::from(serde_json::to_vec(&v).unwrap()),
        }
    }

    fn encoder(selector: &str, bookmarks: bool) -> Encoder {
        let mut q = Query::default();
        q.set("labelSelector", selector);
        Encoder {
            shape: Shape {
                rt: registry::find("", "v1", "pods").unwrap(),
                table: None,
            },
            filter: Filter::from_query(registry::find("", "v1", "pods").unwrap(), &q).unwrap(),
            bookmarks,
            sent_columns: false,
        }
    }

    fn kind_of(line: Option<Bytes>) -> Option<String> {
        line.map(|l| {
            let v: Value = serde_json::from_slice(&l).unwrap();
            v["type"].as_str().unwrap().to_string()
        })
    }

    #[test]
    fn selector_transitions_become_added_and_deleted() {
        let on = json!({"app": "x"});
        let off = json!({"app": "y"});
        let put = |new: &Value, prev: Option<&Value>| Event::Put {
            object: object(3, new.clone()),
            prev: prev.map(|p| object(2, p.clone())),
        };
        let cases = [
            (put(&on, None), Some("ADDED")),
            (put(&off, None), None),
            (put(&on, Some(&on)), Some("MODIFIED")),
            (put(&on, Some(&off)), Some("ADDED")),
            (put(&off, Some(&on)), Some("DELETED")),
            (put(&off, Some(&off)), None),
            (
                Event::Delete {
                    object: object(4, on.clone()),
                    revision: 4,
                },
                Some("DELETED"),
            ),
            (
                Event::Delete {
                    object: object(4, off.clone()),
                    revision: 4,
                },
                None,
            ),
        ];
        for (i, (event, want)) in cases.into_iter().enumerate() {
            let mut enc = encoder("app=x", false);
            assert_eq!(
                kind_of(enc.event(event).unwrap()).as_deref(),
                want,
                "case {i}"
            );
        }
    }

    /// Events with no selector are spliced from the stored bytes; they must be exactly the
    /// lines the parse-and-serialize path would send.
    #[test]
    fn raw_event_lines_equal_encoded_ones() {
        let cases = [
            (
                Event::Put {
                    object: object(3, json!({"app": "x"})),
                    prev: None,
                },
                "ADDED",
            ),
            (
                Event::Put {
                    object: object(4, json!({"app": "é\"q"})),
                    prev: Some(object(3, json!({}))),
                },
                "MODIFIED",
            ),
            (
                Event::Delete {
                    object: object(5, json!(null)),
                    revision: 5,
                },
                "DELETED",
            ),
        ];
        for (event, kind) in cases {
            let mut raw = encoder("", false);
            assert!(raw.passes_raw());
            let stored = match &event {
                Event::Put { object, .. } | Event::Delete { object, .. } => object.json().unwrap(),
                Event::Progress(_) => unreachable!(),
            };
            let want = encoder("", false).line(kind, stored);
            assert_eq!(raw.event(event).unwrap().unwrap(), want, "{kind}");
        }
        assert!(!encoder("app=x", false).passes_raw());
    }

    #[test]
    fn bookmarks_only_when_asked() {
        assert_eq!(
            kind_of(encoder("", false).event(Event::Progress(9)).unwrap()),
            None
        );
        let line = encoder("", true)
            .event(Event::Progress(9))
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["type"], "BOOKMARK");
        assert_eq!(v["object"]["metadata"]["resourceVersion"], "9");
        assert_eq!(v["object"]["kind"], "Pod");
    }

    #[test]
    fn table_events_carry_columns_only_once() {
        let mut enc = encoder("", false);
        enc.shape.table = Some(IncludeObject::Metadata);
        let first: Value =
            serde_json::from_slice(&enc.line("ADDED", json!({"metadata": {"name": "a"}}))).unwrap();
        let second: Value =
            serde_json::from_slice(&enc.line("ADDED", json!({"metadata": {"name": "b"}}))).unwrap();
        assert_eq!(first["object"]["kind"], "Table");
        assert!(first["object"]["columnDefinitions"].is_array());
        assert!(second["object"]["columnDefinitions"].is_null());
        assert_eq!(
            second["object"]["rows"][0]["object"]["metadata"]["name"],
            "b"
        );
    }

    #[test]
    fn expired_error_event_is_a_410_status() {
        let line = Encoder::error(&store_error(StoreError::Gone {
            requested: 5,
            oldest: 9,
        }));
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["type"], "ERROR");
        assert_eq!(v["object"]["code"], 410);
        assert_eq!(v["object"]["reason"], "Expired");
    }
}
