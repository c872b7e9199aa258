//! Request handling: routes to discovery, OpenAPI, health, and the object verbs.
//!
//! Invariant: a request that fails stores nothing. Every check (validation, preconditions,
//! namespace lifecycle, allocation) runs before the one store write that commits the request,
//! and allocations made for a write that then fails are released.

use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use muster_api::registry::{self, ResourceType};
use muster_api::{ApiError, ApiResult};
use muster_store::{Store, StoreError};
use parking_lot::RwLock;
use serde_json::{Map, Value, json};

use crate::alloc::{self, Allocator, ServiceCidr};
use crate::compat::{self, PatchType};
use crate::http::{bytes_response, error_response, json_response, text_response};
use crate::metrics::Metrics;
use crate::openapi::OpenApi;
use crate::query::{FieldValidation, Query, wants_aggregated_discovery, wants_table};
use crate::route::{ResourcePath, Route};
use crate::table;
use crate::{Readiness, discovery};

/// Kubernetes' limit on request bodies.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
const ENDPOINTS_WARNING: &str =
    "299 - \"v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice\"";
/// Namespaces that can never be deleted.
const IMMORTAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];
/// How often an update that lost a race on the store is retried.
const UPDATE_RETRIES: usize = 16;

/// What the node agent gets for `pods/log` and `pods/exec`.
pub struct NodeProxyRequest {
    pub node_name: String,
    /// `InternalIP:kubeletEndpoint.Port` from the Node's status, when it has them.
    pub node_address: Option<std::net::SocketAddr>,
    pub namespace: String,
    pub pod: String,
    /// `log` or `exec`.
    pub subresource: String,
    pub request: Request<Incoming>,
}

/// Serves `pods/log` and `pods/exec` (the node agent implements it).
pub trait NodeProxy: Send + Sync + 'static {
    fn proxy(&self, req: NodeProxyRequest) -> BoxFuture<'static, Response<Body>>;
}

pub struct State {
    pub store: Arc<dyn Store>,
    pub token: String,
    pub readiness: Readiness,
    pub alloc: Allocator,
    pub metrics: Metrics,
    pub openapi: OpenApi,
    pub node_proxy: RwLock<Option<Arc<dyn NodeProxy>>>,
    discovery_core: Bytes,
    discovery_apis: Bytes,
}

impl State {
    pub fn new(
        store: Arc<dyn Store>,
        token: String,
        readiness: Readiness,
        cidr: ServiceCidr,
    ) -> State {
        State {
            store,
            token,
            readiness,
            alloc: Allocator { cidr },
            metrics: Metrics::new(),
            openapi: OpenApi::default(),
            node_proxy: RwLock::new(None),
            discovery_core: serde_json::to_vec(&discovery::aggregated(true))
                .unwrap_or_default()
                .into(),
            discovery_apis: serde_json::to_vec(&discovery::aggregated(false))
                .unwrap_or_default()
                .into(),
        }
    }
}

pub fn store_error(e: StoreError) -> ApiError {
    match e {
        // No Retry-After on storage outages: client-go re-sends a 5xx that carries one up to
        // ten times, so kubectl would sit silent for a minute instead of saying what is wrong.
        StoreError::Unavailable(m) => {
            let mut e = ApiError::service_unavailable(format!("storage is unavailable: {m}"));
            e.retry_after_seconds = None;
            e
        }
        StoreError::Timeout(m) => {
            let mut e = ApiError::timeout(format!("storage did not answer in time: {m}"));
            e.retry_after_seconds = None;
            e
        }
        StoreError::Gone { requested, oldest } => {
            ApiError::expired(format!("too old resource version: {requested} ({oldest})"))
        }
        StoreError::FutureRevision { requested, current } => {
            crate::freshness::too_large(requested, current)
        }
        other => ApiError::internal(other.to_string()),
    }
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.1",
        "gitCommit": "muster",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub async fn dispatch(state: &Arc<State>, route: Route, req: Request<Incoming>) -> Response<Body> {
    let query = Query::parse(req.uri().query());
    let read_only = matches!(*req.method(), Method::GET | Method::HEAD);
    if !read_only && !matches!(route, Route::Resource(_)) {
        // As in `resource`: read the body first so the client sees the 405, not a reset.
        let _ = read_body(req.into_body()).await;
        return error_response(&ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    match route {
        Route::Version => json_response(StatusCode::OK, &version_info()),
        Route::Health { kind, check } => health(state, kind, check.as_deref(), &query),
        Route::Metrics => bytes_response(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics.render(),
        ),
        Route::CoreVersions => {
            if wants_aggregated_discovery(req.headers()) {
                aggregated(state.discovery_core.clone())
            } else {
                let host = req
                    .headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .or_else(|| req.uri().authority().map(|a| a.as_str()))
                    .unwrap_or("")
                    .to_string();
                json_response(StatusCode::OK, &discovery::core_versions(&host))
            }
        }
        Route::Groups => {
            if wants_aggregated_discovery(req.headers()) {
                aggregated(state.discovery_apis.clone())
            } else {
                json_response(StatusCode::OK, &discovery::group_list())
            }
        }
        Route::Group(g) => json_response(StatusCode::OK, &discovery::group(&g)),
        Route::ResourceList { group, version } => {
            json_response(StatusCode::OK, &discovery::resource_list(&group, &version))
        }
        Route::OpenApiV3Index => bytes_response(
            StatusCode::OK,
            "application/json",
            state.openapi.index().to_vec(),
        ),
        Route::OpenApiV3 { group, version } => match state.openapi.document(&group, &version) {
            Some(doc) => bytes_response(StatusCode::OK, "application/json", doc.to_vec()),
            None => not_found_route(),
        },
        Route::OpenApiV2 | Route::NotFound => not_found_route(),
        Route::Resource(rp) => {
            let mut warnings = Vec::new();
            if rp.rt.kind == "Endpoints" && rp.rt.group.is_empty() {
                warnings.push(ENDPOINTS_WARNING.to_string());
            }
            let mut resp = match resource(state, rp, query, req, &mut warnings).await {
                Ok(resp) => resp,
                Err(e) => error_response(&e),
            };
            for w in warnings {
                if let Ok(v) = HeaderValue::from_str(&w) {
                    resp.headers_mut().append(header::WARNING, v);
                }
            }
            resp
        }
    }
}

fn not_found_route() -> Response<Body> {
    error_response(&ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    ))
}

fn aggregated(body: Bytes) -> Response<Body> {
    let mut resp = bytes_response(StatusCode::OK, discovery::AGGREGATED_CONTENT_TYPE, body);
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    resp
}

fn health(state: &State, kind: &str, check: Option<&str>, query: &Query) -> Response<Body> {
    let mut checks: Vec<(String, bool)> = vec![("ping".into(), true), ("log".into(), true)];
    if kind == "readyz" {
        checks.extend(state.readiness.snapshot());
    }
    if let Some(name) = check {
        return match checks.iter().find(|(n, _)| n == name) {
            Some((_, true)) => text_response(StatusCode::OK, "ok"),
            Some((_, false)) => text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal server error: {name} is not ready\n"),
            ),
            None => text_response(StatusCode::NOT_FOUND, "404 page not found\n"),
        };
    }
    let healthy = checks.iter().all(|(_, ok)| *ok);
    let verbose = query.get("verbose").is_some();
    if healthy && !verbose {
        return text_response(StatusCode::OK, "ok");
    }
    let mut body = String::new();
    for (name, ok) in &checks {
        if *ok {
            body.push_str(&format!("[+]{name} ok\n"));
        } else {
            body.push_str(&format!("[-]{name} failed: reason withheld\n"));
        }
    }
    if healthy {
        body.push_str(&format!("{kind} check passed\n"));
        text_response(StatusCode::OK, body)
    } else {
        body.push_str(&format!("{kind} check failed\n"));
        text_response(StatusCode::INTERNAL_SERVER_ERROR, body)
    }
}

// ---------------------------------------------------------------------------------------------
// Bodies

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

async fn read_body(body: Incoming) -> ApiResult<Bytes> {
    match http_body_util::Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::request_entity_too_large(format!(
                "Request entity too large: limit is {MAX_BODY_BYTES}"
            )))
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "reading the request body: {e}"
        ))),
    }
}

fn parse_json(bytes: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request could not be decoded as JSON: {e}"
        ))
    })
}

fn parse_yaml(bytes: &[u8]) -> ApiResult<Value> {
    serde_yaml::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request could not be decoded as YAML: {e}"
        ))
    })
}

/// Decodes an object body by Content-Type (JSON, YAML, protobuf) into JSON.
fn decode_object(headers: &HeaderMap, bytes: &[u8]) -> ApiResult<Value> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    // No Content-Type is read as JSON, as Kubernetes does (`kubectl replace --raw` sends none).
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|ct| !ct.trim().is_empty())
        .unwrap_or("application/json");
    compat::decode_body(ct, bytes)
}

/// The body's `apiVersion`/`kind` must name the resource of the URL (when given).
fn check_type(rt: &ResourceType, obj: &Value) -> ApiResult<()> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    if !api_version.is_empty() && api_version != rt.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    if !kind.is_empty() && kind != rt.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            rt.kind
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Object helpers

fn meta<'a>(obj: &'a Value, field: &str) -> Option<&'a Value> {
    obj.get("metadata").and_then(|m| m.get(field))
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj, field).and_then(Value::as_str)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"].as_object_mut().expect("metadata object")
}

fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj, "finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The form a client of `rt` sees (events.k8s.io/v1 events are stored as core/v1).
fn present(rt: &ResourceType, obj: Value) -> Value {
    if rt.group == "events.k8s.io" {
        compat::event_to_events_v1(&obj)
    } else {
        obj
    }
}

fn to_storage(rt: &ResourceType, obj: Value) -> Value {
    if rt.group == "events.k8s.io" {
        compat::event_from_events_v1(&obj)
    } else {
        obj
    }
}

fn object_response(
    rt: &ResourceType,
    code: StatusCode,
    obj: Value,
    headers: &HeaderMap,
    query: &Query,
) -> ApiResult<Response<Body>> {
    let obj = present(rt, obj);
    if wants_table(headers) {
        let include = table::include_from_query(query.get("includeObject"))?;
        let rv = meta_str(&obj, "resourceVersion").unwrap_or("").to_string();
        let t = table::table(rt, vec![obj], &rv, None, include, true);
        return Ok(json_response(code, &t));
    }
    Ok(json_response(code, &obj))
}

/// What a create produced: the stored object, or (dry run) the object that would be stored.
pub(crate) enum Written {
    Stored(muster_store::Object),
    DryRun(Value),
}

impl Written {
    pub(crate) fn into_value(self) -> ApiResult<Value> {
        match self {
            Written::Stored(object) => object.json().map_err(store_error),
            Written::DryRun(value) => Ok(value),
        }
    }
}

/// [`object_response`] of a create. A stored object that goes out as stored is answered with
/// its stored JSON, which is exactly what serializing its parsed form would give.
fn written_response(
    rt: &ResourceType,
    code: StatusCode,
    written: Written,
    headers: &HeaderMap,
    query: &Query,
) -> ApiResult<Response<Body>> {
    match written {
        Written::Stored(object) if rt.group != "events.k8s.io" && !wants_table(headers) => {
            Ok(bytes_response(code, "application/json", object.value))
        }
        other => object_response(rt, code, other.into_value()?, headers, query),
    }
}

pub(crate) struct WriteOptions {
    pub dry_run: bool,
    pub validation: FieldValidation,
    /// Who makes the write, for `metadata.managedFields`.
    pub field_manager: String,
    /// `force` of server-side apply.
    pub force: bool,
}

impl WriteOptions {
    fn from_request(q: &Query, headers: &HeaderMap) -> ApiResult<WriteOptions> {
        let field_manager = match q.get("fieldManager").filter(|f| !f.is_empty()) {
            Some(fm) if fm.len() > 128 => {
                return Err(ApiError::bad_request(
                    "fieldManager: Too long: may not be more than 128 bytes",
                ));
            }
            Some(fm) => fm.to_string(),
            // Kubernetes names an unnamed manager after the client's User-Agent.
            None => headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .and_then(|ua| ua.split('/').next())
                .filter(|s| !s.is_empty())
                .unwrap_or("unknown")
                .chars()
                .take(128)
                .collect(),
        };
        Ok(WriteOptions {
            dry_run: q.dry_run()?,
            validation: FieldValidation::from_query(q)?,
            field_manager,
            force: q.flag("force"),
        })
    }

    /// Options for writes the server makes itself (bootstrap).
    pub(crate) fn internal() -> WriteOptions {
        WriteOptions {
            dry_run: false,
            validation: FieldValidation::Ignore,
            field_manager: "muster-apiserver".into(),
            force: false,
        }
    }
}

fn check_unknown_fields(
    rt: &ResourceType,
    obj: &Value,
    validation: FieldValidation,
    warnings: &mut Vec<String>,
) -> ApiResult<()> {
    if validation == FieldValidation::Ignore {
        return Ok(());
    }
    report_unknown_fields(compat::unknown_fields(rt, obj), validation, warnings)
}

/// A 400 under `fieldValidation=Strict`, warnings under `Warn`.
fn report_unknown_fields(
    unknown: Vec<String>,
    validation: FieldValidation,
    warnings: &mut Vec<String>,
) -> ApiResult<()> {
    if unknown.is_empty() {
        return Ok(());
    }
    match validation {
        FieldValidation::Strict => Err(compat::strict_decoding_error(&unknown)),
        _ => {
            for w in compat::unknown_field_warnings(&unknown) {
                warnings.push(format!("299 - {}", serde_json::Value::String(w)));
            }
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Verb dispatch

async fn resource(
    state: &Arc<State>,
    rp: ResourcePath,
    query: Query,
    req: Request<Incoming>,
    warnings: &mut Vec<String>,
) -> ApiResult<Response<Body>> {
    let method = req.method().clone();
    let sub = rp.subresource.clone();
    let watching = rp.legacy_watch || query.flag("watch");
    let not_allowed = || {
        ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )
    };
    match (method.as_str(), rp.name.is_some(), sub.as_deref()) {
        ("GET", false, None) if watching => {
            crate::watch::serve(state.clone(), rp, query, req.headers().clone()).await
        }
        ("GET", false, None) => crate::list::list(state, &rp, &query, req.headers()).await,
        ("GET", true, None) if watching => {
            // `/watch/namespaces/ns/pods/name` is a watch of one object.
            let mut rp = rp;
            let name = rp.name.take().unwrap_or_default();
            let mut query = query;
            query.push_field_selector(&format!("metadata.name={name}"));
            crate::watch::serve(state.clone(), rp, query, req.headers().clone()).await
        }
        ("GET", true, None | Some("status")) => get(state, &rp, &query, req.headers()).await,
        ("GET", true, Some("scale")) => get_scale(state, &rp).await,
        ("GET", true, Some("log" | "exec")) | ("POST", true, Some("exec")) => {
            node_proxy(state, &rp, req).await
        }
        ("POST", false, None) => {
            let (parts, body) = req.into_parts();
            let bytes = read_body(body).await?;
            create(state, &rp, &query, &parts.headers, &bytes, warnings).await
        }
        ("POST", true, Some("binding")) => {
            let (parts, body) = req.into_parts();
            let bytes = read_body(body).await?;
            binding(state, &rp, &query, &parts.headers, &bytes).await
        }
        ("POST", true, Some("eviction")) => {
            let (parts, body) = req.into_parts();
            let bytes = read_body(body).await?;
            eviction(state, &rp, &parts.headers, &bytes).await
        }
        ("PUT", true, sub @ (None | Some("status") | Some("scale") | Some("finalize"))) => {
            let sub = sub.map(str::to_string);
            let (parts, body) = req.into_parts();
            let bytes = read_body(body).await?;
            match sub.as_deref() {
                Some("scale") => put_scale(state, &rp, &query, &parts.headers, &bytes).await,
                _ => replace(state, &rp, &query, &parts.headers, &bytes, warnings).await,
            }
        }
        ("PATCH", true, sub @ (None | Some("status") | Some("scale"))) => {
            let sub = sub.map(str::to_string);
            let (parts, body) = req.into_parts();
            let bytes = read_body(body).await?;
            match sub.as_deref() {
                Some("scale") => patch_scale(state, &rp, &query, &parts.headers, &bytes).await,
                _ => patch(state, &rp, &query, &parts.headers, &bytes, warnings).await,
            }
        }
        ("DELETE", true, None) => {
            let (parts, body) = req.into_parts();
            let bytes = read_body(body).await?;
            let opts = DeleteOptions::parse(&query, &parts.headers, &bytes)?;
            let name = rp.name.clone().unwrap_or_default();
            let obj = delete_one(state, rp.rt, rp.namespace.as_deref(), &name, &opts).await?;
            object_response(rp.rt, StatusCode::OK, obj, &parts.headers, &query)
        }
        ("DELETE", false, None) if rp.rt.has_verb("deletecollection") => {
            let (parts, body) = req.into_parts();
            let bytes = read_body(body).await?;
            let opts = DeleteOptions::parse(&query, &parts.headers, &bytes)?;
            delete_collection(state, &rp, &query, &opts).await
        }
        _ => {
            // Read the body before refusing: answering while the client is still sending
            // makes some clients (curl over HTTP/2) see a reset stream instead of the 405.
            let _ = read_body(req.into_body()).await;
            Err(not_allowed())
        }
    }
}

impl Query {
    /// Adds `term` to the field selector (used for legacy single-object watch paths).
    pub fn push_field_selector(&mut self, term: &str) {
        let combined = match self.get("fieldSelector") {
            Some(existing) if !existing.is_empty() => format!("{existing},{term}"),
            _ => term.to_string(),
        };
        self.set("fieldSelector", &combined);
    }
}

// ---------------------------------------------------------------------------------------------
// Reads

async fn load(
    state: &State,
    rt: &'static ResourceType,
    ns: Option<&str>,
    name: &str,
) -> ApiResult<muster_store::Object> {
    let srt = registry::storage_resource(rt);
    state
        .store
        .get(&srt.key(ns, name))
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found(rt.group, rt.plural, name))
}

async fn get(
    state: &State,
    rp: &ResourcePath,
    query: &Query,
    headers: &HeaderMap,
) -> ApiResult<Response<Body>> {
    let name = rp.name.as_deref().unwrap_or_default();
    // A resourceVersion asks for data at least that new (Kubernetes' NotOlderThan).
    if let Some(rv) = query
        .get("resourceVersion")
        .filter(|rv| !rv.is_empty() && *rv != "0")
    {
        let wanted = rv.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid resourceVersion {rv:?}: must be an integer"
            ))
        })?;
        let key = registry::storage_resource(rp.rt).key(rp.namespace.as_deref(), name);
        crate::freshness::wait_for(
            state.store.as_ref(),
            &key,
            wanted,
            crate::freshness::BLOCK_TIMEOUT,
        )
        .await?;
    }
    let obj = load(state, rp.rt, rp.namespace.as_deref(), name).await?;
    let value = obj.json().map_err(store_error)?;
    object_response(rp.rt, StatusCode::OK, value, headers, query)
}

/// Selectors of a list or watch request.
pub struct Filter {
    pub rt: &'static ResourceType,
    pub labels: compat::LabelSelector,
    pub fields: compat::FieldSelector,
}

impl Filter {
    pub fn from_query(rt: &'static ResourceType, q: &Query) -> ApiResult<Filter> {
        Ok(Filter {
            rt,
            labels: compat::parse_label_selector(q.get("labelSelector").unwrap_or(""))?,
            fields: compat::parse_field_selector(rt, q.get("fieldSelector").unwrap_or(""))?,
        })
    }

    /// Matches an object in its stored form.
    pub fn matches(&self, stored: &Value) -> bool {
        self.labels.matches_object(stored) && self.fields.matches(self.rt, stored)
    }
}

// ---------------------------------------------------------------------------------------------
// Create

/// Checks that `ns` exists and is not terminating (NamespaceLifecycle admission).
async fn check_namespace(state: &State, rt: &ResourceType, ns: &str, name: &str) -> ApiResult<()> {
    let ns_rt = registry::find("", "v1", "namespaces").expect("namespaces");
    let Some(obj) = state
        .store
        .get(&ns_rt.key(None, ns))
        .await
        .map_err(store_error)?
    else {
        return Err(ApiError::not_found("", "namespaces", ns));
    };
    // Most namespaces are plainly active: only parse one that could be terminating.
    let contains = |needle: &[u8]| obj.value.windows(needle.len()).any(|w| w == needle);
    if !contains(b"\"deletionTimestamp\"") && !contains(b"Terminating") {
        return Ok(());
    }
    let value = obj.json().map_err(store_error)?;
    let terminating = meta(&value, "deletionTimestamp").is_some_and(|v| !v.is_null())
        || value.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating");
    if terminating {
        let mut e = ApiError::forbidden(format!(
            "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
            rt.qualified_plural()
        ));
        e.name = Some(name.to_string());
        e.group = Some(rt.group.to_string()).filter(|g| !g.is_empty());
        e.kind = Some(rt.plural.to_string());
        e.causes.push(muster_api::Cause {
            reason: "NamespaceTerminating".into(),
            message: format!("namespace {ns} is being terminated"),
            field: "metadata.namespace".into(),
        });
        return Err(e);
    }
    Ok(())
}

const GENERATE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn generated_suffix() -> String {
    (0..5)
        .map(|_| GENERATE_ALPHABET[rand::random_range(0..GENERATE_ALPHABET.len())] as char)
        .collect()
}

/// Sets the namespace from the URL; a different one in the body is a 400.
fn apply_url_namespace(
    rt: &ResourceType,
    url_ns: Option<&str>,
    obj: &mut Value,
) -> ApiResult<Option<String>> {
    if !rt.namespaced {
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("namespace");
        }
        return Ok(None);
    }
    let Some(ns) = url_ns else {
        return Err(ApiError::bad_request(
            "the namespace of the object must be given in the URL (POST /api/v1/namespaces/<ns>/...)",
        ));
    };
    match meta_str(obj, "namespace") {
        Some(body_ns) if !body_ns.is_empty() && body_ns != ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            meta_mut(obj).insert("namespace".into(), json!(ns));
            Ok(Some(ns.to_string()))
        }
    }
}

/// Creates `obj` (already decoded and in storage form). Shared by POST, apply-create and the
/// bootstrap.
pub(crate) async fn create_object(
    state: &State,
    rt: &'static ResourceType,
    ns: Option<&str>,
    mut obj: Value,
    opts: &WriteOptions,
    record_manager: bool,
    warnings: &mut Vec<String>,
) -> ApiResult<Written> {
    let dry_run = opts.dry_run;
    let srt = registry::storage_resource(rt);
    let kind = srt.kind;
    obj["apiVersion"] = json!(srt.api_version());
    obj["kind"] = json!(kind);
    // Name or generateName.
    let name = match meta_str(&obj, "name").filter(|n| !n.is_empty()) {
        Some(n) => n.to_string(),
        None => match meta_str(&obj, "generateName").filter(|n| !n.is_empty()) {
            Some(prefix) => {
                let mut prefix = prefix.to_string();
                prefix.truncate(63 - 5);
                let name = format!("{prefix}{}", generated_suffix());
                meta_mut(&mut obj).insert("name".into(), json!(name));
                name
            }
            None => {
                return Err(ApiError::invalid(
                    rt.group,
                    rt.kind,
                    "",
                    vec![muster_api::Cause {
                        reason: "FieldValueRequired".into(),
                        message: "Required value: name or generateName is required".into(),
                        field: "metadata.name".into(),
                    }],
                ));
            }
        },
    };
    if meta_str(&obj, "resourceVersion").is_some_and(|rv| !rv.is_empty()) {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    if let Some(ns) = ns {
        check_namespace(state, rt, ns, &name).await?;
    }
    {
        let m = meta_mut(&mut obj);
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        m.remove("resourceVersion");
        m.remove("selfLink");
    }
    // One typed decode serves both the unknown-field check and the create strategy.
    let known = compat::decode_known(srt, &obj)?;
    if opts.validation != FieldValidation::Ignore {
        let unknown = compat::unknown_fields_of(&obj, &known);
        report_unknown_fields(unknown, opts.validation, warnings)?;
    }
    compat::prepare_create_decoded(srt, &mut obj, known)?;
    if kind == "Namespace" && srt.group.is_empty() {
        if obj.pointer("/spec/finalizers").is_none() {
            obj["spec"]["finalizers"] = json!(["kubernetes"]);
        }
        obj["status"] = json!({"phase": "Active"});
        let labels = meta_mut(&mut obj)
            .entry("labels")
            .or_insert_with(|| json!({}));
        if labels.is_object() {
            labels["kubernetes.io/metadata.name"] = json!(name);
        }
    }
    if record_manager {
        compat::record_update_manager(srt, None, &mut obj, &opts.field_manager, &now_rfc3339());
    }
    let is_service = kind == "Service" && srt.group.is_empty();
    if is_service {
        state
            .alloc
            .allocate_for_create(state.store.as_ref(), &mut obj, dry_run)
            .await?;
    }
    if dry_run {
        return Ok(Written::DryRun(obj));
    }
    let key = srt.key(ns, &name);
    // Only a Service needs its value after a failed write (to release what it holds).
    let allocated = is_service.then(|| obj.clone());
    match state.store.create(&key, obj).await {
        Ok(stored) => Ok(Written::Stored(stored)),
        Err(e) => {
            if let Some(svc) = &allocated {
                state.alloc.release(state.store.as_ref(), svc).await;
            }
            Err(match e {
                StoreError::AlreadyExists(_) => {
                    ApiError::already_exists(rt.group, rt.plural, &name)
                }
                other => store_error(other),
            })
        }
    }
}

async fn create(
    state: &State,
    rp: &ResourcePath,
    query: &Query,
    headers: &HeaderMap,
    bytes: &[u8],
    warnings: &mut Vec<String>,
) -> ApiResult<Response<Body>> {
    let rt = rp.rt;
    if !rt.has_verb("create") {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    let opts = WriteOptions::from_request(query, headers)?;
    let mut obj = decode_object(headers, bytes)?;
    check_type(rt, &obj)?;
    let ns = apply_url_namespace(rt, rp.namespace.as_deref(), &mut obj)?;
    let obj = to_storage(rt, obj);
    let created = create_object(state, rt, ns.as_deref(), obj, &opts, true, warnings).await?;
    written_response(rt, StatusCode::CREATED, created, headers, query)
}

// ---------------------------------------------------------------------------------------------
// Update

/// What an update computes from the current object.
type Mutation<'a> = dyn FnMut(&Value) -> ApiResult<Value> + Send + 'a;

/// Reads the current object, computes the new one with `mutate`, and writes it with the
/// current revision as precondition, retrying when another writer got in between. `mutate`
/// returns a Conflict itself when the client's own precondition fails.
// The arguments are the object's address plus the write's options; grouping them would only
// move the list into a struct built at every call.
#[allow(clippy::too_many_arguments)]
async fn update_object(
    state: &State,
    rt: &'static ResourceType,
    ns: Option<&str>,
    name: &str,
    subresource: Option<&str>,
    dry_run: bool,
    manager: Option<&str>,
    mutate: &mut Mutation<'_>,
) -> ApiResult<Value> {
    let srt = registry::storage_resource(rt);
    let key = srt.key(ns, name);
    for _ in 0..UPDATE_RETRIES {
        let current = load(state, rt, ns, name).await?;
        let old = current.json().map_err(store_error)?;
        let mut new = mutate(&old)?;
        // What clients can never change through an update.
        new["apiVersion"] = json!(srt.api_version());
        new["kind"] = json!(srt.kind);
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "name",
            "namespace",
        ] {
            match meta(&old, field) {
                Some(v) => {
                    meta_mut(&mut new).insert(field.into(), v.clone());
                }
                None => {
                    meta_mut(&mut new).remove(field);
                }
            }
        }
        if let Some(g) = meta(&old, "generation") {
            meta_mut(&mut new).insert("generation".into(), g.clone());
        }
        meta_mut(&mut new).insert(
            "resourceVersion".into(),
            json!(current.mod_revision.to_string()),
        );
        match subresource {
            Some("status") => compat::prepare_status_update(srt, &old, &mut new)?,
            // Written by the server itself from a validated request, not a client's object.
            Some("finalize" | "binding") => {}
            _ => compat::prepare_update(srt, &old, &mut new)?,
        }
        let is_service = srt.kind == "Service" && srt.group.is_empty();
        let mut newly_held: Vec<u16> = Vec::new();
        if is_service {
            newly_held = service_update(state, &old, &mut new, dry_run).await?;
        }
        if new == old {
            return Ok(old);
        }
        if let Some(fm) = manager {
            compat::record_update_manager(srt, Some(&old), &mut new, fm, &now_rfc3339());
        }
        if dry_run {
            return Ok(new);
        }
        // A finalizer-held deletion completes when the last finalizer goes.
        let finished = meta(&new, "deletionTimestamp").is_some_and(|v| !v.is_null())
            && finalizers(&new).is_empty()
            && meta(&new, "deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                == 0
            && (srt.kind != "Namespace" || namespace_spec_finalizers(&new).is_empty());
        let result = if finished {
            state.store.delete(&key, Some(current.mod_revision)).await
        } else {
            state
                .store
                .update(&key, new.clone(), Some(current.mod_revision))
                .await
        };
        match result {
            Ok(stored) => {
                let value = stored.json().map_err(store_error)?;
                if is_service {
                    if finished {
                        state.alloc.release(state.store.as_ref(), &value).await;
                    } else {
                        let kept = alloc::node_ports(&value);
                        let dropped: Vec<u16> = alloc::node_ports(&old)
                            .into_iter()
                            .filter(|p| !kept.contains(p))
                            .collect();
                        state
                            .alloc
                            .release_node_ports(state.store.as_ref(), &dropped)
                            .await;
                    }
                }
                return Ok(value);
            }
            Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound(_)) => {
                state
                    .alloc
                    .release_node_ports(state.store.as_ref(), &newly_held)
                    .await;
                continue;
            }
            Err(e) => {
                state
                    .alloc
                    .release_node_ports(state.store.as_ref(), &newly_held)
                    .await;
                return Err(store_error(e));
            }
        }
    }
    Err(ApiError::conflict(
        rt.group,
        rt.plural,
        name,
        "the object is being modified too often; try again",
    ))
}

fn namespace_spec_finalizers(ns: &Value) -> Vec<String> {
    ns.pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Keeps a Service's allocated IPs (a replace without them keeps them, as Kubernetes does) and
/// allocates node ports that a type change needs. Returns node ports newly reserved.
async fn service_update(
    state: &State,
    old: &Value,
    new: &mut Value,
    dry_run: bool,
) -> ApiResult<Vec<u16>> {
    let new_ip = new
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("");
    let old_ip = old
        .pointer("/spec/clusterIP")
        .cloned()
        .unwrap_or(Value::Null);
    if new_ip.is_empty() && !old_ip.is_null() {
        new["spec"]["clusterIP"] = old_ip;
        if let Some(ips) = old.pointer("/spec/clusterIPs") {
            new["spec"]["clusterIPs"] = ips.clone();
        }
    } else if Some(new_ip) != old_ip.as_str() {
        return Err(ApiError::invalid(
            "",
            "Service",
            meta_str(old, "name").unwrap_or(""),
            vec![muster_api::Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: \"{new_ip}\": field is immutable"),
                field: "spec.clusterIPs[0]".into(),
            }],
        ));
    }
    let svc_type = new
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if matches!(svc_type, "NodePort" | "LoadBalancer") {
        // Ports the client left out keep their old node port (matched by port number).
        let old_ports = old
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut() {
                if p.get("nodePort")
                    .is_none_or(|v| v.as_u64() == Some(0) || v.is_null())
                    && let Some(prev) = old_ports.iter().find(|o| o.get("port") == p.get("port"))
                    && let Some(np) = prev.get("nodePort")
                {
                    p["nodePort"] = np.clone();
                }
            }
        }
        let held = alloc::node_ports(old);
        return state
            .alloc
            .allocate_node_ports(state.store.as_ref(), new, &held, dry_run)
            .await;
    }
    if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut() {
            if let Some(m) = p.as_object_mut() {
                m.remove("nodePort");
            }
        }
    }
    Ok(Vec::new())
}

/// The client's resourceVersion precondition: absent means unconditional.
fn check_precondition(
    rt: &ResourceType,
    name: &str,
    body: &Value,
    current: &Value,
) -> ApiResult<()> {
    match meta_str(body, "resourceVersion").filter(|s| !s.is_empty()) {
        None => Ok(()),
        Some(rv) if Some(rv) == meta_str(current, "resourceVersion") => Ok(()),
        Some(rv) if rv.parse::<u64>().is_err() => Err(ApiError::bad_request(format!(
            "invalid resourceVersion {rv:?}"
        ))),
        Some(_) => Err(ApiError::stale(rt.group, rt.plural, name)),
    }
}

fn check_name(body: &Value, url_name: &str) -> ApiResult<()> {
    match meta_str(body, "name") {
        Some(n) if !n.is_empty() && n != url_name => Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({url_name})"
        ))),
        _ => Ok(()),
    }
}

async fn replace(
    state: &State,
    rp: &ResourcePath,
    query: &Query,
    headers: &HeaderMap,
    bytes: &[u8],
    warnings: &mut Vec<String>,
) -> ApiResult<Response<Body>> {
    let rt = rp.rt;
    let name = rp.name.clone().unwrap_or_default();
    let opts = WriteOptions::from_request(query, headers)?;
    let mut body = decode_object(headers, bytes)?;
    check_type(rt, &body)?;
    check_name(&body, &name)?;
    apply_url_namespace(rt, rp.namespace.as_deref(), &mut body)?;
    let body = to_storage(rt, body);
    check_unknown_fields(
        registry::storage_resource(rt),
        &body,
        opts.validation,
        warnings,
    )?;
    let sub = rp.subresource.as_deref();
    let updated = update_object(
        state,
        rt,
        rp.namespace.as_deref(),
        &name,
        sub,
        opts.dry_run,
        Some(&opts.field_manager),
        &mut |current: &Value| {
            check_precondition(rt, &name, &body, current)?;
            if sub == Some("finalize") {
                let mut out = current.clone();
                out["spec"]["finalizers"] = body
                    .pointer("/spec/finalizers")
                    .cloned()
                    .unwrap_or(json!([]));
                return Ok(out);
            }
            Ok(body.clone())
        },
    )
    .await?;
    object_response(rt, StatusCode::OK, updated, headers, query)
}

async fn patch(
    state: &State,
    rp: &ResourcePath,
    query: &Query,
    headers: &HeaderMap,
    bytes: &[u8],
    warnings: &mut Vec<String>,
) -> ApiResult<Response<Body>> {
    let rt = rp.rt;
    let name = rp.name.clone().unwrap_or_default();
    let ct = media_type(headers);
    let Some(kind) = PatchType::from_content_type(&ct) else {
        return Err(ApiError::unsupported_media_type(&ct));
    };
    if bytes.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let opts = WriteOptions::from_request(query, headers)?;
    let patch_doc = match kind {
        PatchType::Apply => parse_yaml(bytes)?,
        _ => parse_json(bytes)?,
    };
    if kind != PatchType::Json && !patch_doc.is_object() {
        return Err(ApiError::bad_request("the patch must be a JSON object"));
    }
    if kind == PatchType::Apply {
        check_type(rt, &patch_doc)?;
        if query.get("fieldManager").is_none_or(str::is_empty) {
            return Err(ApiError::bad_request(
                "PATCH with apply-patch+yaml requires a fieldManager",
            ));
        }
        let exists = state
            .store
            .get(&registry::storage_resource(rt).key(rp.namespace.as_deref(), &name))
            .await
            .map_err(store_error)?
            .is_some();
        if !exists && rp.subresource.is_none() {
            check_name(&patch_doc, &name)?;
            let mut obj = compat::server_side_apply(
                rt,
                None,
                &patch_doc,
                &opts.field_manager,
                opts.force,
                &now_rfc3339(),
            )?;
            meta_mut(&mut obj).insert("name".into(), json!(name));
            let ns = apply_url_namespace(rt, rp.namespace.as_deref(), &mut obj)?;
            let obj = to_storage(rt, obj);
            match create_object(state, rt, ns.as_deref(), obj, &opts, false, warnings).await {
                Ok(created) => {
                    return written_response(rt, StatusCode::CREATED, created, headers, query);
                }
                // Lost a race with another creator: fall through and patch what they made.
                Err(e) if e.reason == "AlreadyExists" => {}
                Err(e) => return Err(e),
            }
        }
    }
    let storage_rt = registry::storage_resource(rt);
    let updated = update_object(
        state,
        rt,
        rp.namespace.as_deref(),
        &name,
        rp.subresource.as_deref(),
        opts.dry_run,
        (kind != PatchType::Apply).then_some(opts.field_manager.as_str()),
        &mut |current: &Value| {
            let presented = present(rt, current.clone());
            let patched = if kind == PatchType::Apply {
                compat::server_side_apply(
                    rt,
                    Some(&presented),
                    &patch_doc,
                    &opts.field_manager,
                    opts.force,
                    &now_rfc3339(),
                )?
            } else {
                compat::apply_patch(kind, rt, &presented, &patch_doc)?
            };
            if !patched.is_object() {
                return Err(ApiError::bad_request(
                    "the patched object is not a JSON object",
                ));
            }
            check_name(&patched, &name)?;
            check_precondition(rt, &name, &patched, &presented)?;
            let stored = to_storage(rt, patched);
            let mut unknown = Vec::new();
            check_unknown_fields(storage_rt, &stored, opts.validation, &mut unknown)?;
            Ok(stored)
        },
    )
    .await?;
    object_response(rt, StatusCode::OK, updated, headers, query)
}

// ---------------------------------------------------------------------------------------------
// Scale

fn selector_string(selector: Option<&Value>) -> String {
    let Some(sel) = selector else {
        return String::new();
    };
    let mut terms: Vec<String> = Vec::new();
    if let Some(labels) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            terms.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => terms.push(format!("{key} in ({})", values.join(","))),
                "NotIn" => terms.push(format!("{key} notin ({})", values.join(","))),
                "Exists" => terms.push(key.to_string()),
                "DoesNotExist" => terms.push(format!("!{key}")),
                _ => {}
            }
        }
    }
    terms.join(",")
}

fn to_scale(obj: &Value) -> Value {
    let m = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let mut metadata = json!({});
    for f in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = m.get(f) {
            metadata[f] = v.clone();
        }
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector_string(obj.pointer("/spec/selector")),
        },
    })
}

async fn get_scale(state: &State, rp: &ResourcePath) -> ApiResult<Response<Body>> {
    let name = rp.name.as_deref().unwrap_or_default();
    let obj = load(state, rp.rt, rp.namespace.as_deref(), name).await?;
    Ok(json_response(
        StatusCode::OK,
        &to_scale(&obj.json().map_err(store_error)?),
    ))
}

fn replicas_from_scale(scale: &Value, rt: &ResourceType, name: &str) -> ApiResult<i64> {
    let replicas = scale.pointer("/spec/replicas");
    match replicas.and_then(Value::as_i64) {
        Some(r) if r >= 0 => Ok(r),
        Some(r) => Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            name,
            vec![muster_api::Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: {r}: must be greater than or equal to 0"),
                field: "spec.replicas".into(),
            }],
        )),
        None if replicas.is_none() => Ok(0),
        None => Err(ApiError::bad_request(format!(
            "{}: spec.replicas must be an integer",
            rt.kind
        ))),
    }
}

/// The body of a subresource write that takes JSON or YAML (Scale, Binding, DeleteOptions).
fn parse_options_body(headers: &HeaderMap, bytes: &[u8]) -> ApiResult<Value> {
    match media_type(headers).as_str() {
        "application/json" | "" => parse_json(bytes),
        "application/yaml" => parse_yaml(bytes),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

async fn put_scale(
    state: &State,
    rp: &ResourcePath,
    query: &Query,
    headers: &HeaderMap,
    bytes: &[u8],
) -> ApiResult<Response<Body>> {
    let rt = rp.rt;
    let name = rp.name.clone().unwrap_or_default();
    let opts = WriteOptions::from_request(query, headers)?;
    let scale = parse_options_body(headers, bytes)?;
    check_name(&scale, &name)?;
    // An invalid Scale is refused before the object is read.
    replicas_from_scale(&scale, rt, &name)?;
    write_scale(state, rp, &name, &opts, &mut |_current: &Value| {
        Ok(scale.clone())
    })
    .await
}

/// Writes `spec.replicas` of a workload from a Scale that `scale_of` derives from the current
/// object (the PUT body, or the current Scale with a patch applied), honouring the Scale's
/// resourceVersion and uid preconditions, and answers with the resulting Scale.
async fn write_scale(
    state: &State,
    rp: &ResourcePath,
    name: &str,
    opts: &WriteOptions,
    scale_of: &mut (dyn FnMut(&Value) -> ApiResult<Value> + Send),
) -> ApiResult<Response<Body>> {
    let rt = rp.rt;
    let updated = update_object(
        state,
        rt,
        rp.namespace.as_deref(),
        name,
        None,
        opts.dry_run,
        Some(&opts.field_manager),
        &mut |current: &Value| {
            let scale = scale_of(current)?;
            check_precondition(rt, name, &scale, current)?;
            let replicas = replicas_from_scale(&scale, rt, name)?;
            let mut out = current.clone();
            out["spec"]["replicas"] = json!(replicas);
            Ok(out)
        },
    )
    .await?;
    Ok(json_response(StatusCode::OK, &to_scale(&updated)))
}

async fn patch_scale(
    state: &State,
    rp: &ResourcePath,
    query: &Query,
    headers: &HeaderMap,
    bytes: &[u8],
) -> ApiResult<Response<Body>> {
    let rt = rp.rt;
    let name = rp.name.clone().unwrap_or_default();
    let ct = media_type(headers);
    let Some(kind) = PatchType::from_content_type(&ct) else {
        return Err(ApiError::unsupported_media_type(&ct));
    };
    let opts = WriteOptions::from_request(query, headers)?;
    let patch_doc = match kind {
        PatchType::Apply => parse_yaml(bytes)?,
        _ => parse_json(bytes)?,
    };
    write_scale(state, rp, &name, &opts, &mut |current: &Value| {
        compat::apply_patch(kind, rt, &to_scale(current), &patch_doc)
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Pods: binding, eviction, log/exec

async fn binding(
    state: &State,
    rp: &ResourcePath,
    query: &Query,
    headers: &HeaderMap,
    bytes: &[u8],
) -> ApiResult<Response<Body>> {
    let name = rp.name.clone().unwrap_or_default();
    let opts = WriteOptions::from_request(query, headers)?;
    let body = parse_options_body(headers, bytes)?;
    let node = body
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                "",
                "Binding",
                &name,
                vec![muster_api::Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value".into(),
                    field: "target.name".into(),
                }],
            )
        })?
        .to_string();
    update_object(state, rp.rt, rp.namespace.as_deref(), &name, Some("binding"), opts.dry_run, None, &mut |current: &Value| {
        if meta(current, "deletionTimestamp").is_some_and(|v| !v.is_null()) {
            return Err(ApiError::conflict("", "pods", &name, "pod is being deleted, cannot be assigned to a host"));
        }
        if let Some(existing) = current.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict("", "pods", &name, &format!("pod {name} is already assigned to node \"{existing}\"")));
        }
        let mut out = current.clone();
        out["spec"]["nodeName"] = json!(node);
        let condition = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now_rfc3339()});
        let conditions = out["status"]["conditions"].as_array().cloned().unwrap_or_default();
        let mut conditions: Vec<Value> = conditions.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
        conditions.push(condition);
        out["status"]["conditions"] = json!(conditions);
        Ok(out)
    })
    .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

async fn eviction(
    state: &State,
    rp: &ResourcePath,
    headers: &HeaderMap,
    bytes: &[u8],
) -> ApiResult<Response<Body>> {
    let name = rp.name.clone().unwrap_or_default();
    let body = if bytes.is_empty() {
        json!({})
    } else {
        match media_type(headers).as_str() {
            "application/json" | "" => parse_json(bytes)?,
            other => return Err(ApiError::unsupported_media_type(other)),
        }
    };
    let opts = DeleteOptions::from_value(body.get("deleteOptions").unwrap_or(&json!({})))?;
    delete_one(state, rp.rt, rp.namespace.as_deref(), &name, &opts).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

async fn node_proxy(
    state: &State,
    rp: &ResourcePath,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let name = rp.name.clone().unwrap_or_default();
    let ns = rp.namespace.clone().unwrap_or_default();
    let pod = load(state, rp.rt, Some(&ns), &name)
        .await?
        .json()
        .map_err(store_error)?;
    let Some(node) = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let node = node.to_string();
    let nodes = registry::find("", "v1", "nodes").expect("nodes");
    let node_address = match state
        .store
        .get(&nodes.key(None, &node))
        .await
        .map_err(store_error)?
    {
        Some(n) => node_endpoint(&n.json().map_err(store_error)?),
        None => None,
    };
    let proxy = state.node_proxy.read().clone();
    match proxy {
        Some(p) => Ok(p
            .proxy(NodeProxyRequest {
                node_name: node,
                node_address,
                namespace: ns,
                pod: name,
                subresource: rp.subresource.clone().unwrap_or_default(),
                request: req,
            })
            .await),
        None => Err(ApiError::service_unavailable(format!(
            "no node agent serves node \"{node}\": pods/{} needs the muster agent running on that node",
            rp.subresource.as_deref().unwrap_or("")
        ))),
    }
}

/// `InternalIP:kubeletEndpoint.Port` of a Node.
fn node_endpoint(node: &Value) -> Option<std::net::SocketAddr> {
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)?;
    let ip = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)?
        .iter()
        .find(|a| a["type"] == "InternalIP")?
        .get("address")?
        .as_str()?
        .parse()
        .ok()?;
    Some(std::net::SocketAddr::new(ip, u16::try_from(port).ok()?))
}

// ---------------------------------------------------------------------------------------------
// Delete

#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    grace_period: Option<i64>,
    propagation: Option<String>,
    dry_run: bool,
    uid: Option<String>,
    resource_version: Option<String>,
}

impl DeleteOptions {
    fn from_value(v: &Value) -> ApiResult<DeleteOptions> {
        let mut o = DeleteOptions {
            grace_period: v.get("gracePeriodSeconds").and_then(Value::as_i64),
            propagation: v
                .get("propagationPolicy")
                .and_then(Value::as_str)
                .map(str::to_string),
            ..Default::default()
        };
        if let Some(dry) = v.get("dryRun").and_then(Value::as_array) {
            for d in dry {
                match d.as_str() {
                    Some("All") => o.dry_run = true,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "Invalid dryRun value {other:?}: supported values: \"All\""
                        )));
                    }
                }
            }
        }
        if v.get("orphanDependents").and_then(Value::as_bool) == Some(true)
            && o.propagation.is_none()
        {
            o.propagation = Some("Orphan".into());
        }
        o.uid = v
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        o.resource_version = v
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(o)
    }

    fn parse(query: &Query, headers: &HeaderMap, bytes: &[u8]) -> ApiResult<DeleteOptions> {
        let body = if bytes.is_empty() {
            json!({})
        } else {
            parse_options_body(headers, bytes)?
        };
        let mut o = DeleteOptions::from_value(&body)?;
        if let Some(g) = query.i64_param("gracePeriodSeconds")? {
            o.grace_period = Some(g);
        }
        if let Some(p) = query.get("propagationPolicy").filter(|p| !p.is_empty()) {
            o.propagation = Some(p.to_string());
        }
        if query.flag("orphanDependents") && o.propagation.is_none() {
            o.propagation = Some("Orphan".into());
        }
        o.dry_run |= query.dry_run()?;
        match o.propagation.as_deref() {
            None | Some("Background" | "Foreground" | "Orphan") => Ok(o),
            Some(other) => Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            ))),
        }
    }
}

/// Deletes one object as Kubernetes does: immediately, or by setting `deletionTimestamp` when
/// finalizers (or a running pod's grace period) hold it.
pub(crate) async fn delete_one(
    state: &State,
    rt: &'static ResourceType,
    ns: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
) -> ApiResult<Value> {
    let srt = registry::storage_resource(rt);
    let key = srt.key(ns, name);
    let is_namespace = srt.kind == "Namespace" && srt.group.is_empty();
    let is_pod = srt.kind == "Pod" && srt.group.is_empty();
    if is_namespace && IMMORTAL_NAMESPACES.contains(&name) {
        let mut e = ApiError::forbidden(format!(
            "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
        ));
        e.name = Some(name.to_string());
        e.kind = Some("namespaces".into());
        return Err(e);
    }
    for _ in 0..UPDATE_RETRIES {
        let current = load(state, rt, ns, name).await?;
        let obj = current.json().map_err(store_error)?;
        if let Some(uid) = &opts.uid
            && meta_str(&obj, "uid") != Some(uid.as_str())
        {
            return Err(ApiError::conflict(
                rt.group,
                rt.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&obj, "uid").unwrap_or("")
                ),
            ));
        }
        if let Some(rv) = &opts.resource_version
            && meta_str(&obj, "resourceVersion") != Some(rv.as_str())
        {
            return Err(ApiError::conflict(
                rt.group,
                rt.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&obj, "resourceVersion").unwrap_or("")
                ),
            ));
        }
        let already_deleting = meta(&obj, "deletionTimestamp").is_some_and(|v| !v.is_null());
        let mut fins = finalizers(&obj);
        let mut new = obj.clone();
        match opts.propagation.as_deref() {
            Some("Foreground")
                if !already_deleting && !fins.iter().any(|f| f == "foregroundDeletion") =>
            {
                fins.push("foregroundDeletion".into());
            }
            Some("Orphan") if !already_deleting && !fins.iter().any(|f| f == "orphan") => {
                fins.push("orphan".into());
            }
            _ => {}
        }
        // A pod on a node gets its grace period: the agent stops it and deletes it with 0.
        let pod_grace = if is_pod
            && obj
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty())
        {
            let phase = obj
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("");
            let default = obj
                .pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(30);
            let grace = opts.grace_period.unwrap_or(default).max(0);
            // Pods that already finished have nothing to stop.
            if matches!(phase, "Succeeded" | "Failed") {
                0
            } else {
                grace
            }
        } else {
            0
        };
        // A namespace with nothing to finalize goes at once, as in Kubernetes.
        let namespace_held =
            is_namespace && !(namespace_spec_finalizers(&obj).is_empty() && fins.is_empty());
        let hold = namespace_held || !fins.is_empty() || pod_grace > 0;
        if !hold {
            if opts.dry_run {
                return Ok(obj);
            }
            match state.store.delete(&key, Some(current.mod_revision)).await {
                Ok(deleted) => {
                    let value = deleted.json().map_err(store_error)?;
                    if srt.kind == "Service" && srt.group.is_empty() {
                        state.alloc.release(state.store.as_ref(), &value).await;
                    }
                    return Ok(value);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound(_)) => {
                    return Err(ApiError::not_found(rt.group, rt.plural, name));
                }
                Err(e) => return Err(store_error(e)),
            }
        }
        if is_namespace {
            if already_deleting {
                // Finalize emptied everything: the namespace goes now.
                if namespace_spec_finalizers(&obj).is_empty() && fins.is_empty() {
                    if opts.dry_run {
                        return Ok(obj);
                    }
                    match state.store.delete(&key, Some(current.mod_revision)).await {
                        Ok(d) => return d.json().map_err(store_error),
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => return Err(store_error(e)),
                    }
                }
                return Ok(obj);
            }
            new["status"]["phase"] = json!("Terminating");
        }
        let m = meta_mut(&mut new);
        if !already_deleting {
            m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            m.insert("deletionGracePeriodSeconds".into(), json!(pod_grace));
        } else if is_pod && pod_grace == 0 && fins.is_empty() {
            // The agent's final DELETE (gracePeriodSeconds=0) for a pod that was terminating.
            if opts.dry_run {
                return Ok(obj);
            }
            match state.store.delete(&key, Some(current.mod_revision)).await {
                Ok(d) => return d.json().map_err(store_error),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(e)),
            }
        } else if is_pod {
            // A shorter grace period may replace a longer one, never the reverse.
            let current_grace = meta(&obj, "deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if pod_grace < current_grace {
                m.insert("deletionGracePeriodSeconds".into(), json!(pod_grace));
            }
        }
        if !fins.is_empty() {
            meta_mut(&mut new).insert("finalizers".into(), json!(fins));
        }
        if new == obj || opts.dry_run {
            return Ok(if opts.dry_run { new } else { obj });
        }
        match state
            .store
            .update(&key, new, Some(current.mod_revision))
            .await
        {
            Ok(stored) => return stored.json().map_err(store_error),
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound(_)) => {
                return Err(ApiError::not_found(rt.group, rt.plural, name));
            }
            Err(e) => return Err(store_error(e)),
        }
    }
    Err(ApiError::conflict(
        rt.group,
        rt.plural,
        name,
        "the object is being modified too often; try again",
    ))
}

async fn delete_collection(
    state: &State,
    rp: &ResourcePath,
    query: &Query,
    opts: &DeleteOptions,
) -> ApiResult<Response<Body>> {
    let rt = rp.rt;
    let srt = registry::storage_resource(rt);
    let filter = Filter::from_query(rp.rt, query)?;
    let prefix = srt.namespace_prefix(rp.namespace.as_deref());
    let listed = state
        .store
        .list(&prefix, None, None)
        .await
        .map_err(store_error)?;
    let mut deleted = Vec::new();
    for obj in listed.items {
        let value = obj.json().map_err(store_error)?;
        if !filter.matches(&value) {
            continue;
        }
        let name = meta_str(&value, "name").unwrap_or("").to_string();
        let ns = meta_str(&value, "namespace").map(str::to_string);
        match delete_one(state, rt, ns.as_deref(), &name, opts).await {
            Ok(v) => deleted.push(present(rt, v)),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "kind": rt.list_kind,
            "apiVersion": rt.api_version(),
            "metadata": {"resourceVersion": state.store.revision().to_string()},
            "items": deleted,
        }),
    ))
}
