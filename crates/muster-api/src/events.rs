//! Conversion between core/v1 Events and events.k8s.io/v1 Events.
//!
//! Kubernetes stores events once and serves them in both groups; muster stores the core/v1
//! form. The field mapping is Kubernetes' own conversion:
//!
//! | events.k8s.io/v1           | core/v1              |
//! |----------------------------|----------------------|
//! | `regarding`                | `involvedObject`     |
//! | `note`                     | `message`            |
//! | `reportingController`      | `reportingComponent` |
//! | `reportingInstance`        | `reportingInstance`  |
//! | `deprecatedSource`         | `source`             |
//! | `deprecatedFirstTimestamp` | `firstTimestamp`     |
//! | `deprecatedLastTimestamp`  | `lastTimestamp`      |
//! | `deprecatedCount`          | `count`              |
//!
//! `metadata`, `eventTime`, `series`, `action`, `reason`, `type` and `related` keep their
//! names. Nothing is derived from anything else (a core event with only `source.component`
//! reads back with an empty `reportingController`, as in Kubernetes).
//!
//! Serving events.k8s.io: create = `strategy::prepare_create(events_rt, &mut body)`, store
//! `to_core(&body)`; read/list/watch = `from_core(&stored)`; update = `prepare_update(events_rt,
//! &from_core(&stored), &mut body)`, store `to_core(&body)`. Field selectors and Tables work on
//! the stored form directly (`selector::field_value`, `table::row_cells`).

use serde_json::{Map, Value};

/// `(events.k8s.io name, core name)` of the renamed fields.
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Fields with the same name in both groups.
const SHARED: &[&str] = &[
    "metadata",
    "eventTime",
    "series",
    "action",
    "reason",
    "type",
    "related",
    "reportingInstance",
];

fn convert(obj: &Value, api_version: &str, to_core: bool) -> Value {
    let mut out = Map::new();
    out.insert("kind".into(), Value::from("Event"));
    out.insert("apiVersion".into(), Value::from(api_version));
    let Some(src) = obj.as_object() else {
        return Value::Object(out);
    };
    for key in SHARED {
        if let Some(v) = src.get(*key).filter(|v| !v.is_null()) {
            out.insert((*key).into(), v.clone());
        }
    }
    for (new_name, core_name) in RENAMED {
        let (from, to) = if to_core {
            (new_name, core_name)
        } else {
            (core_name, new_name)
        };
        if let Some(v) = src.get(*from).filter(|v| !v.is_null()) {
            out.insert((*to).into(), v.clone());
        }
    }
    // Fields neither form knows pass through under their own name, so strict field validation
    // of the converted body still reports them; one that is a field name of the other form
    // (`message` sent to events.k8s.io) cannot pass without changing meaning and is dropped.
    let known = |k: &str| {
        k == "kind"
            || k == "apiVersion"
            || SHARED.contains(&k)
            || RENAMED.iter().any(|(n, c)| *n == k || *c == k)
    };
    for (k, v) in src {
        if !known(k) {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// An events.k8s.io/v1 Event in its stored core/v1 form.
pub fn to_core(event: &Value) -> Value {
    convert(event, "v1", true)
}

/// A stored core/v1 Event as events.k8s.io/v1 serves it.
pub fn from_core(event: &Value) -> Value {
    convert(event, "events.k8s.io/v1", false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn core_event() -> Value {
        json!({
            "kind": "Event", "apiVersion": "v1",
            "metadata": {"name": "nginx.17a", "namespace": "default", "uid": "e1", "resourceVersion": "9"},
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": "nginx", "uid": "p1", "apiVersion": "v1", "fieldPath": "spec.containers{nginx}"},
            "reason": "Pulled", "message": "Container image \"nginx\" already present on machine",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2026-11-23T12:00:00Z", "lastTimestamp": "2026-11-23T12:01:00Z",
            "count": 2, "type": "Normal", "eventTime": null,
            "reportingComponent": "kubelet", "reportingInstance": "node-1"
        })
    }

    fn new_event() -> Value {
        json!({
            "kind": "Event", "apiVersion": "events.k8s.io/v1",
            "metadata": {"name": "web.17b", "namespace": "default"},
            "eventTime": "2026-11-23T12:00:00.000000Z",
            "series": {"count": 3, "lastObservedTime": "2026-11-23T12:05:00.000000Z"},
            "reportingController": "muster/statefulset-controller", "reportingInstance": "muster-1",
            "action": "Create", "reason": "SuccessfulCreate",
            "regarding": {"kind": "StatefulSet", "namespace": "default", "name": "web", "apiVersion": "apps/v1"},
            "related": {"kind": "Pod", "namespace": "default", "name": "web-0"},
            "note": "create Pod web-0 in StatefulSet web successful", "type": "Normal"
        })
    }

    #[test]
    fn core_to_events_k8s_io_renames_every_field() {
        let converted = from_core(&core_event());
        // (pointer in the events.k8s.io form, pointer in the core form)
        let cases = [
            ("/apiVersion", None),
            ("/regarding/fieldPath", Some("/involvedObject/fieldPath")),
            ("/note", Some("/message")),
            ("/deprecatedSource/host", Some("/source/host")),
            ("/deprecatedFirstTimestamp", Some("/firstTimestamp")),
            ("/deprecatedLastTimestamp", Some("/lastTimestamp")),
            ("/deprecatedCount", Some("/count")),
            ("/reportingController", Some("/reportingComponent")),
            ("/reportingInstance", Some("/reportingInstance")),
            ("/reason", Some("/reason")),
            ("/metadata/uid", Some("/metadata/uid")),
        ];
        for (new_ptr, core_ptr) in cases {
            let expected = match core_ptr {
                Some(p) => core_event().pointer(p).cloned(),
                None => Some(json!("events.k8s.io/v1")),
            };
            assert_eq!(converted.pointer(new_ptr).cloned(), expected, "{new_ptr}");
        }
        assert!(
            converted.get("eventTime").is_none(),
            "null eventTime is dropped"
        );
        assert!(converted.get("message").is_none() && converted.get("count").is_none());
    }

    #[test]
    fn unknown_fields_survive_conversion_for_strict_validation() {
        let mut ev = new_event();
        ev["bogus"] = json!(1);
        ev["message"] = json!("core name, unknown here");
        let core = to_core(&ev);
        assert_eq!(core["bogus"], 1);
        assert_eq!(core["message"], ev["note"], "note is not overridden");
        let rt = crate::registry::find("", "v1", "events").unwrap();
        assert_eq!(crate::strategy::unknown_fields(rt, &core), vec!["bogus"]);
    }

    #[test]
    fn round_trips_are_lossless() {
        let mut core = core_event();
        core.as_object_mut().unwrap().remove("eventTime");
        assert_eq!(to_core(&from_core(&core)), core);
        assert_eq!(from_core(&to_core(&new_event())), new_event());
        let stored = to_core(&new_event());
        assert_eq!(stored["involvedObject"]["name"], "web");
        assert_eq!(
            stored["reportingComponent"],
            "muster/statefulset-controller"
        );
        assert_eq!(stored["series"]["count"], 3);
        assert!(stored.get("source").is_none());
    }
}
