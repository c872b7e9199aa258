//! Per-kind create/update rules, as Kubernetes' REST strategies have them: defaulting,
//! validation, what an update may change, and which fields a status update touches.
//!
//! Contract used by the API server (bodies are JSON objects that already carry `apiVersion`,
//! `kind` and `metadata`; the API server has already set `metadata.namespace`, `name` (or
//! resolved `generateName`), `uid`, `creationTimestamp` and `generation` before calling):
//!
//! - `prepare_create(rt, &mut obj)`: apply Kubernetes defaults (e.g. Service `targetPort` =
//!   `port`, `protocol: TCP`, `sessionAffinity: None`, `ipFamilies`, Deployment strategy,
//!   StatefulSet `updateStrategy`, Pod `restartPolicy`, `dnsPolicy`, `terminationGracePeriodSeconds`,
//!   container `terminationMessagePath`, `imagePullPolicy` ...), clear `status` where Kubernetes
//!   does on create, then validate; `Err` is a 422 `Invalid` (or 400 for undecodable bodies).
//! - `prepare_update(rt, &old, &mut new)`: the same defaulting and validation, plus immutable
//!   fields (e.g. Service `clusterIP`, selector of apps/v1 workloads, Pod spec except images),
//!   `status` kept from `old` for kinds with a status subresource, and `generation` bumped when
//!   `spec` changed.
//! - `prepare_status_update(rt, &old, &mut new)`: only `status` (and for pods conditions etc.)
//!   taken from `new`, everything else from `old`.
//! - `unknown_fields(rt, &obj)`: dotted paths of fields the typed schema does not know, for
//!   `fieldValidation=Strict` (400 `strict decoding error: unknown field "spec.foo"`).
