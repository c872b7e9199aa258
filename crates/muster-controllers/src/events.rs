//! Event correlation as client-go's EventRecorder does it, so `kubectl describe` shows
//! "(x5 over 2m)" instead of five rows:
//!
//! - Aggregation: from the [`MAX_SIMILAR`]th distinct message within [`AGGREGATE_WINDOW_SECS`]
//!   on, events that differ only in their message (same object, source, type and reason)
//!   become one event whose message starts with "(combined from similar events): ".
//! - Deduplication: an event equal to an earlier one (object, source, type, reason, message)
//!   is not created again; the earlier one is patched with `count + 1`, the new
//!   `lastTimestamp` and the message.
//!
//! Pure: the caller owns the clock and the API calls.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use crate::util::Timestamp;

/// Distinct messages of one (object, source, type, reason) at which they are combined.
pub const MAX_SIMILAR: usize = 10;
/// How long similar messages are remembered for aggregation.
pub const AGGREGATE_WINDOW_SECS: i64 = 600;
/// Entries each cache keeps (least recently used go first), as client-go's LRU.
pub const CACHE_SIZE: usize = 4096;
pub const COMBINED_PREFIX: &str = "(combined from similar events): ";

/// A small least-recently-used map.
struct Lru<V> {
    entries: HashMap<String, (u64, V)>,
    order: BTreeMap<u64, String>,
    tick: u64,
    capacity: usize,
}

impl<V> Lru<V> {
    fn new(capacity: usize) -> Self {
        Lru {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            capacity,
        }
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let (t, v) = self.entries.get_mut(key)?;
        self.tick += 1;
        self.order.remove(t);
        *t = self.tick;
        self.order.insert(self.tick, key.to_string());
        Some(v)
    }

    fn insert(&mut self, key: String, value: V) {
        self.tick += 1;
        if let Some((old, _)) = self.entries.insert(key.clone(), (self.tick, value)) {
            self.order.remove(&old);
        }
        self.order.insert(self.tick, key);
        while self.entries.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some((t, _)) = self.entries.remove(key) {
            self.order.remove(&t);
        }
    }
}

struct Similar {
    messages: HashSet<String>,
    last: Timestamp,
}

struct Seen {
    name: String,
    count: i32,
    first: Option<Time>,
}

/// What to write for one recorded event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventWrite {
    Create(Event),
    /// Patch the existing event `event.metadata.name` with `patch`; if it is gone (expired),
    /// create `event` (which carries the count and first timestamp) instead.
    Patch {
        event: Event,
        patch: serde_json::Value,
    },
}

/// Remembers recent events; see the module docs.
pub struct Correlator {
    similar: Lru<Similar>,
    seen: Lru<Seen>,
}

impl Default for Correlator {
    fn default() -> Self {
        Correlator {
            similar: Lru::new(CACHE_SIZE),
            seen: Lru::new(CACHE_SIZE),
        }
    }
}

/// Everything but the message that makes events "similar".
fn aggregate_key(e: &Event) -> String {
    let o = &e.involved_object;
    let source = e.source.clone().unwrap_or_default();
    [
        source.component.as_deref().unwrap_or(""),
        source.host.as_deref().unwrap_or(""),
        o.kind.as_deref().unwrap_or(""),
        o.namespace.as_deref().unwrap_or(""),
        o.name.as_deref().unwrap_or(""),
        o.field_path.as_deref().unwrap_or(""),
        o.uid.as_deref().unwrap_or(""),
        o.api_version.as_deref().unwrap_or(""),
        e.type_.as_deref().unwrap_or(""),
        e.reason.as_deref().unwrap_or(""),
        e.reporting_component.as_deref().unwrap_or(""),
        e.reporting_instance.as_deref().unwrap_or(""),
    ]
    .join("\u{0}")
}

/// The name client-go gives an event: `<object>.<unix nanoseconds in hex>`.
pub fn event_name(object: &str, now: Timestamp) -> String {
    format!(
        "{}.{:x}",
        if object.is_empty() { "object" } else { object },
        now.as_nanosecond()
    )
}

impl Correlator {
    /// Decides how `event` (fresh: count 1, both timestamps `now`) reaches the API.
    pub fn correlate(&mut self, mut event: Event, now: Timestamp) -> EventWrite {
        let agg_key = aggregate_key(&event);
        let message = event.message.clone().unwrap_or_default();
        let distinct = match self.similar.get_mut(&agg_key) {
            Some(rec) if now.as_second() - rec.last.as_second() <= AGGREGATE_WINDOW_SECS => {
                rec.messages.insert(message.clone());
                rec.last = now;
                rec.messages.len()
            }
            _ => {
                self.similar.insert(
                    agg_key.clone(),
                    Similar {
                        messages: [message.clone()].into(),
                        last: now,
                    },
                );
                1
            }
        };
        let key = if distinct >= MAX_SIMILAR {
            event.message = Some(format!("{COMBINED_PREFIX}{message}"));
            agg_key
        } else {
            format!("{agg_key}\u{0}{message}")
        };
        match self.seen.get_mut(&key) {
            Some(seen) => {
                seen.count = seen.count.saturating_add(1);
                event.metadata.name = Some(seen.name.clone());
                event.count = Some(seen.count);
                event.first_timestamp = seen.first.clone();
                let patch = json!({
                    "count": seen.count,
                    "lastTimestamp": event.last_timestamp,
                    "message": event.message,
                });
                EventWrite::Patch { event, patch }
            }
            None => {
                let name = event.metadata.name.clone().unwrap_or_else(|| {
                    event_name(event.involved_object.name.as_deref().unwrap_or(""), now)
                });
                event.metadata.name = Some(name.clone());
                self.seen.insert(
                    key,
                    Seen {
                        name,
                        count: event.count.unwrap_or(1),
                        first: event.first_timestamp.clone(),
                    },
                );
                EventWrite::Create(event)
            }
        }
    }

    /// The API refused to store an event: forget it, so the next one starts afresh.
    pub fn forget(&mut self, event: &Event) {
        let agg_key = aggregate_key(event);
        let message = event.message.clone().unwrap_or_default();
        self.seen.remove(&format!("{agg_key}\u{0}{message}"));
        if message.starts_with(COMBINED_PREFIX) {
            self.seen.remove(&agg_key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EventSource, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn event(object: &str, reason: &str, message: &str, secs: i64) -> Event {
        Event {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                kind: Some("ReplicaSet".into()),
                namespace: Some("default".into()),
                name: Some(object.into()),
                uid: Some(format!("uid-{object}")),
                api_version: Some("apps/v1".into()),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some("Normal".into()),
            source: Some(EventSource {
                component: Some("replicaset-controller".into()),
                host: None,
            }),
            first_timestamp: Some(Time(at(secs))),
            last_timestamp: Some(Time(at(secs))),
            count: Some(1),
            ..Default::default()
        }
    }

    /// What a write amounts to: (create or patch, name, count, message, first second).
    fn summary(w: &EventWrite) -> (&'static str, String, i32, String, i64) {
        let (kind, e) = match w {
            EventWrite::Create(e) => ("create", e),
            EventWrite::Patch { event, patch } => {
                assert_eq!(patch["count"], json!(event.count));
                assert_eq!(patch["message"], json!(event.message));
                assert_eq!(patch["lastTimestamp"], json!(event.last_timestamp));
                ("patch", event)
            }
        };
        (
            kind,
            e.metadata.name.clone().unwrap(),
            e.count.unwrap(),
            e.message.clone().unwrap(),
            e.first_timestamp.as_ref().unwrap().0.as_second() - 1_700_000_000,
        )
    }

    #[test]
    fn repeated_events_become_counts_and_similar_ones_combine() {
        // (object, reason, message, second) → (write, name of the event, count, message, first)
        type Step = (
            &'static str,
            &'static str,
            &'static str,
            i64,
            (&'static str, &'static str, i32, &'static str, i64),
        );
        let fail = "Error creating: forbidden";
        let steps: Vec<Step> = vec![
            (
                "web",
                "FailedCreate",
                fail,
                0,
                ("create", "web.0", 1, fail, 0),
            ),
            (
                "web",
                "FailedCreate",
                fail,
                5,
                ("patch", "web.0", 2, fail, 0),
            ),
            (
                "web",
                "FailedCreate",
                fail,
                9,
                ("patch", "web.0", 3, fail, 0),
            ),
            // Another object, reason or message is another event.
            (
                "db",
                "FailedCreate",
                fail,
                10,
                ("create", "db.10", 1, fail, 10),
            ),
            (
                "web",
                "SuccessfulCreate",
                "Created pod: web-1",
                11,
                ("create", "web.11", 1, "Created pod: web-1", 11),
            ),
            (
                "web",
                "SuccessfulCreate",
                "Created pod: web-2",
                12,
                ("create", "web.12", 1, "Created pod: web-2", 12),
            ),
            (
                "web",
                "FailedCreate",
                fail,
                13,
                ("patch", "web.0", 4, fail, 0),
            ),
        ];
        let mut c = Correlator::default();
        for (i, (obj, reason, msg, secs, want)) in steps.into_iter().enumerate() {
            let mut e = event(obj, reason, msg, secs);
            // Names are stable in the test: `<object>.<second>`.
            e.metadata.name = Some(format!("{obj}.{secs}"));
            let got = summary(&c.correlate(e, at(secs)));
            let want = (
                want.0,
                want.1.to_string(),
                want.2,
                want.3.to_string(),
                want.4,
            );
            assert_eq!(got, want, "step {i}");
        }
    }

    #[test]
    fn the_tenth_distinct_message_for_one_reason_is_combined() {
        let mut c = Correlator::default();
        let mut writes = Vec::new();
        for i in 0..14 {
            let mut e = event(
                "web",
                "SuccessfulCreate",
                &format!("Created pod: web-{i}"),
                i,
            );
            e.metadata.name = Some(format!("web.{i}"));
            writes.push(summary(&c.correlate(e, at(i))));
        }
        for (i, w) in writes.iter().take(MAX_SIMILAR - 1).enumerate() {
            assert_eq!(w.0, "create", "message {i} is new");
            assert!(!w.3.starts_with(COMBINED_PREFIX));
        }
        // The 10th distinct message starts the combined event, later ones count on it.
        let combined = |i: usize| format!("{COMBINED_PREFIX}Created pod: web-{i}");
        assert_eq!(writes[9], ("create", "web.9".into(), 1, combined(9), 9));
        assert_eq!(writes[10], ("patch", "web.9".into(), 2, combined(10), 9));
        assert_eq!(writes[13], ("patch", "web.9".into(), 5, combined(13), 9));
        // After the window, similar messages start over.
        let late = AGGREGATE_WINDOW_SECS + 20;
        let mut e = event("web", "SuccessfulCreate", "Created pod: web-99", late);
        e.metadata.name = Some("web.late".into());
        assert_eq!(
            summary(&c.correlate(e, at(late))),
            (
                "create",
                "web.late".into(),
                1,
                "Created pod: web-99".into(),
                late
            )
        );
    }

    #[test]
    fn generated_names_follow_client_go_and_forget_starts_over() {
        let mut c = Correlator::default();
        let now = at(1);
        let w = c.correlate(event("web", "FailedCreate", "x", 1), now);
        let EventWrite::Create(e) = w else {
            panic!("first is a create")
        };
        assert_eq!(
            e.metadata.name.as_deref(),
            Some(format!("web.{:x}", now.as_nanosecond()).as_str())
        );
        assert!(matches!(
            c.correlate(event("web", "FailedCreate", "x", 2), at(2)),
            EventWrite::Patch { .. }
        ));
        c.forget(&e);
        assert!(matches!(
            c.correlate(event("web", "FailedCreate", "x", 3), at(3)),
            EventWrite::Create(_)
        ));
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut lru: Lru<u32> = Lru::new(3);
        for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
            lru.insert(k.into(), i as u32);
        }
        // Touching "a" makes "b" the least recently used.
        assert_eq!(lru.get_mut("a").copied(), Some(0));
        lru.insert("d".into(), 3);
        assert!(lru.get_mut("b").is_none());
        assert!(lru.get_mut("a").is_some() && lru.get_mut("c").is_some());
        assert_eq!(lru.entries.len(), 3);
        assert_eq!(lru.order.len(), 3);
    }
}
