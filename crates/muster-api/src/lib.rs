//! Kubernetes API semantics without IO: the resource registry, validation and defaulting,
//! server-side printing (Tables), label and field selectors, patches (JSON, merge, strategic
//! merge, apply), protobuf request bodies, and `Status` errors.
//!
//! Everything here is a pure function of its inputs: no clocks read implicitly (callers pass
//! `now`), no storage, no HTTP.

// `ApiError` carries a whole Kubernetes `Status`; errors are the cold path, so returning it by
// value is fine.
#![allow(clippy::result_large_err)]

pub mod events;
pub mod patch;
pub mod protobuf;
pub mod registry;
pub mod selector;
pub mod status;
pub mod strategy;
pub mod table;

pub use registry::{RESOURCES, ResourceType};
pub use status::{ApiError, ApiResult, Cause, Causes};
