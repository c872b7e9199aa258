//! Turning decoded `k8s-pb` messages into Kubernetes JSON.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1::{Duration, FieldsV1, MicroTime, Time};
use k8s_pb::apimachinery::pkg::runtime::RawExtension;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Map, Value};

use crate::status::{ApiError, ApiResult};

/// A protobuf value in its Kubernetes JSON form; `None` when the field is unset and so left out.
pub trait ToJson {
    fn to_json(&self) -> Option<Value>;

    /// Whether this is Go's zero value, which `omitempty` leaves out of JSON.
    fn is_zero(&self) -> bool {
        false
    }
}

impl ToJson for String {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.clone()))
    }

    fn is_zero(&self) -> bool {
        self.is_empty()
    }
}

impl ToJson for bool {
    fn to_json(&self) -> Option<Value> {
        Some(Value::Bool(*self))
    }

    fn is_zero(&self) -> bool {
        !*self
    }
}

impl ToJson for i32 {
    fn to_json(&self) -> Option<Value> {
        Some(Value::from(*self))
    }

    fn is_zero(&self) -> bool {
        *self == 0
    }
}

impl ToJson for i64 {
    fn to_json(&self) -> Option<Value> {
        Some(Value::from(*self))
    }

    fn is_zero(&self) -> bool {
        *self == 0
    }
}

impl ToJson for f64 {
    fn to_json(&self) -> Option<Value> {
        serde_json::Number::from_f64(*self).map(Value::Number)
    }

    fn is_zero(&self) -> bool {
        *self == 0.0
    }
}

/// Byte fields (Secret `data`, ConfigMap `binaryData`) are base64 in JSON.
impl ToJson for Vec<u8> {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(
            base64::engine::general_purpose::STANDARD.encode(self),
        ))
    }
}

impl<T: ToJson> ToJson for Option<T> {
    fn to_json(&self) -> Option<Value> {
        self.as_ref().and_then(ToJson::to_json)
    }

    fn is_zero(&self) -> bool {
        self.as_ref().is_none_or(ToJson::is_zero)
    }
}

/// Empty lists are left out, as Kubernetes' `omitempty` does.
impl<T: ToJson> ToJson for Vec<T> {
    fn to_json(&self) -> Option<Value> {
        if self.is_empty() {
            return None;
        }
        Some(Value::Array(
            self.iter()
                .map(|item| item.to_json().unwrap_or(Value::Null))
                .collect(),
        ))
    }
}

impl<T: ToJson> ToJson for BTreeMap<String, T> {
    fn to_json(&self) -> Option<Value> {
        if self.is_empty() {
            return None;
        }
        Some(Value::Object(
            self.iter()
                .map(|(k, v)| (k.clone(), v.to_json().unwrap_or(Value::Null)))
                .collect(),
        ))
    }
}

/// `metav1.Time`: RFC 3339 in seconds; the zero time is unset (Go writes `null`).
impl ToJson for Time {
    fn to_json(&self) -> Option<Value> {
        let seconds = self.seconds.unwrap_or(0);
        if seconds == 0 && self.nanos.unwrap_or(0) == 0 {
            return None;
        }
        let t = chrono::DateTime::from_timestamp(seconds, 0)?;
        Some(Value::String(
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ))
    }
}

/// `metav1.MicroTime`: RFC 3339 with microseconds.
impl ToJson for MicroTime {
    fn to_json(&self) -> Option<Value> {
        let seconds = self.seconds.unwrap_or(0);
        let nanos = self.nanos.unwrap_or(0);
        if seconds == 0 && nanos == 0 {
            return None;
        }
        let nanos = u32::try_from(nanos).ok()?;
        let t = chrono::DateTime::from_timestamp(seconds, nanos - nanos % 1000)?;
        Some(Value::String(
            t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        ))
    }
}

/// `intstr.IntOrString`: type 0 is an int, type 1 a string.
impl ToJson for IntOrString {
    fn to_json(&self) -> Option<Value> {
        match self.r#type.unwrap_or(0) {
            1 => Some(Value::String(self.str_val.clone().unwrap_or_default())),
            _ => Some(Value::from(self.int_val.unwrap_or(0))),
        }
    }
}

impl ToJson for Quantity {
    fn to_json(&self) -> Option<Value> {
        self.string.clone().map(Value::String)
    }
}

/// `metav1.Duration` (nanoseconds) as Go prints it: `1h2m3s`, `1.5s`, `0s`.
impl ToJson for Duration {
    fn to_json(&self) -> Option<Value> {
        let nanos = self.duration?;
        Some(Value::String(go_duration(nanos)))
    }
}

fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let (h, rest) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
    let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let (s, frac) = (rest / 1_000_000_000, rest % 1_000_000_000);
    let mut out = sign.to_string();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if frac == 0 {
        out.push_str(&format!("{s}s"));
    } else {
        let digits = format!("{frac:09}");
        out.push_str(&format!("{s}.{}s", digits.trim_end_matches('0')));
    }
    out
}

/// Embedded JSON (`runtime.RawExtension`) stays JSON.
impl ToJson for RawExtension {
    fn to_json(&self) -> Option<Value> {
        raw_json(self.raw.as_deref())
    }
}

impl ToJson for FieldsV1 {
    fn to_json(&self) -> Option<Value> {
        raw_json(self.raw.as_deref())
    }
}

fn raw_json(raw: Option<&[u8]>) -> Option<Value> {
    let raw = raw.filter(|r| !r.is_empty())?;
    Some(
        serde_json::from_slice(raw).unwrap_or_else(|_| {
            Value::String(base64::engine::general_purpose::STANDARD.encode(raw))
        }),
    )
}

/// Inserts `value` under `name` unless it is unset.
pub(super) fn put(map: &mut Map<String, Value>, name: &str, value: &impl ToJson) {
    if let Some(v) = value.to_json() {
        map.insert(name.to_string(), v);
    }
}

/// For Go's non-pointer `omitempty` scalars: protobuf always carries them, JSON only when set.
pub(super) fn put_nonzero(map: &mut Map<String, Value>, name: &str, value: &impl ToJson) {
    if !value.is_zero() {
        put(map, name, value);
    }
}

/// For Go's embedded (`json:",inline"`) structs: their fields join the outer object.
pub(super) fn put_inline(map: &mut Map<String, Value>, value: &impl ToJson) {
    if let Some(Value::Object(fields)) = value.to_json() {
        map.extend(fields);
    }
}

/// `message!(k8s_pb::api::core::v1::Probe { handler: inline, period_seconds: "periodSeconds"
/// omitempty, ... })`: a [`ToJson`] impl writing each listed field under its JSON name. A set
/// message is always an object, even when empty (Go never omits struct fields).
macro_rules! message {
    ($ty:path { $($field:ident : $json:tt $($flag:ident)?),* $(,)? }) => {
        impl $crate::protobuf::ToJson for $ty {
            fn to_json(&self) -> Option<serde_json::Value> {
                #[allow(unused_mut)]
                let mut map = serde_json::Map::new();
                $( $crate::protobuf::convert::field!(map, self.$field, $json $($flag)?); )*
                Some(serde_json::Value::Object(map))
            }
        }
    };
}

macro_rules! field {
    ($map:ident, $value:expr, inline) => {
        $crate::protobuf::convert::put_inline(&mut $map, &$value)
    };
    ($map:ident, $value:expr, $json:literal omitempty) => {
        $crate::protobuf::convert::put_nonzero(&mut $map, $json, &$value)
    };
    ($map:ident, $value:expr, $json:literal) => {
        $crate::protobuf::convert::put(&mut $map, $json, &$value)
    };
}
pub(super) use field;
pub(super) use message;

fn decode_as<M: Message + Default + ToJson>(raw: &[u8]) -> ApiResult<Value> {
    let message = M::decode(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid protobuf message: {e}")))?;
    Ok(message
        .to_json()
        .unwrap_or_else(|| Value::Object(Map::new())))
}

/// Decodes the typed message of `kind` in `api_version`.
pub(super) fn decode_kind(api_version: &str, kind: &str, raw: &[u8]) -> ApiResult<Value> {
    use k8s_pb::api::{apps, coordination, core, discovery, events};
    match (api_version, kind) {
        ("v1", "Namespace") => decode_as::<core::v1::Namespace>(raw),
        ("v1", "Service") => decode_as::<core::v1::Service>(raw),
        ("v1", "ConfigMap") => decode_as::<core::v1::ConfigMap>(raw),
        ("v1", "Secret") => decode_as::<core::v1::Secret>(raw),
        ("v1", "ServiceAccount") => decode_as::<core::v1::ServiceAccount>(raw),
        ("v1", "Pod") => decode_as::<core::v1::Pod>(raw),
        ("v1", "Endpoints") => decode_as::<core::v1::Endpoints>(raw),
        ("v1", "Event") => decode_as::<core::v1::Event>(raw),
        ("v1", "Node") => decode_as::<core::v1::Node>(raw),
        ("apps/v1", "Deployment") => decode_as::<apps::v1::Deployment>(raw),
        ("apps/v1", "ReplicaSet") => decode_as::<apps::v1::ReplicaSet>(raw),
        ("apps/v1", "StatefulSet") => decode_as::<apps::v1::StatefulSet>(raw),
        ("apps/v1", "ControllerRevision") => decode_as::<apps::v1::ControllerRevision>(raw),
        ("discovery.k8s.io/v1", "EndpointSlice") => decode_as::<discovery::v1::EndpointSlice>(raw),
        ("coordination.k8s.io/v1", "Lease") => decode_as::<coordination::v1::Lease>(raw),
        ("events.k8s.io/v1", "Event") => decode_as::<events::v1::Event>(raw),
        _ => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "protobuf bodies of kind {kind:?} in {api_version:?} are not supported; send application/json"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let cases = [
            (0, "0s"),
            (1_500_000_000, "1.5s"),
            (60_000_000_000, "1m0s"),
            (3_723_000_000_000, "1h2m3s"),
            (-2_000_000_000, "-2s"),
        ];
        for (nanos, want) in cases {
            assert_eq!(go_duration(nanos), want);
        }
    }
}
