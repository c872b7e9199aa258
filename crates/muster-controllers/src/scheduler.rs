//! Scheduler: binds each pending pod to the least loaded Ready node that fits it.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};

use crate::util;

pub const DEFAULT_SCHEDULER: &str = "default-scheduler";
const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Bind {
        node: String,
    },
    /// No node fits; the message is the `FailedScheduling` event and condition text.
    Unschedulable {
        message: String,
    },
}

/// Pods this scheduler is responsible for: not bound, not finished, not being deleted, and
/// asking for the default scheduler.
pub fn wants_scheduling(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    util::pod_node(pod).is_none()
        && spec
            .scheduler_name
            .as_deref()
            .is_none_or(|s| s.is_empty() || s == DEFAULT_SCHEDULER)
        && util::pod_is_active(pod)
}

/// Whether a node update can change a scheduling decision (readiness, labels, taints,
/// unschedulable), as opposed to a heartbeat; additions and deletions always can.
pub fn node_change_matters(old: Option<&Node>, new: &Node) -> bool {
    match old {
        None => true,
        Some(old) => {
            node_ready(old) != node_ready(new)
                || old.metadata.labels != new.metadata.labels
                || old.spec != new.spec
        }
    }
}

/// Whether the pod carries the scheduler's `PodScheduled=False` condition.
pub fn marked_unschedulable(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "PodScheduled" && c.status == "False")
        })
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let effect_ok = t
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == taint.effect);
        let key_ok = match t.key.as_deref() {
            None | Some("") => t.operator.as_deref() == Some("Exists"),
            Some(k) => k == taint.key,
        };
        let value_ok = match t.operator.as_deref() {
            Some("Exists") => true,
            _ => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        };
        effect_ok && key_ok && value_ok
    })
}

/// Why a node cannot take the pod, worded as Kubernetes' scheduler words it.
fn misfit(pod: &Pod, node: &Node) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let node_spec = node.spec.clone().unwrap_or_default();
    let mut taints: Vec<Taint> = node_spec.taints.clone().unwrap_or_default();
    // No node lifecycle controller adds this taint here, so derive it from the condition.
    if !node_ready(node) && !taints.iter().any(|t| t.key == TAINT_NOT_READY) {
        taints.push(Taint {
            key: TAINT_NOT_READY.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
    }
    if node_spec.unschedulable == Some(true) {
        return Some("node(s) were unschedulable".into());
    }
    let selector = spec.node_selector.clone().unwrap_or_default();
    if !util::map_selector_matches(&selector, util::labels_of(&node.metadata)) {
        return Some("node(s) didn't match Pod's node affinity/selector".into());
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or(&[]);
    for taint in &taints {
        if (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
            && !tolerates(tolerations, taint)
        {
            return Some(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            ));
        }
    }
    None
}

/// Picks a node for `pod`. `load` counts the active pods already bound to each node.
pub fn schedule(pod: &Pod, nodes: &[&Node], load: &HashMap<String, usize>) -> Decision {
    if nodes.is_empty() {
        return Decision::Unschedulable {
            message: "no nodes available to schedule pods".into(),
        };
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<(usize, &str)> = None;
    for node in nodes {
        let name = node.metadata.name.as_deref().unwrap_or("");
        match misfit(pod, node) {
            Some(reason) => *reasons.entry(reason).or_default() += 1,
            None => {
                let n = load.get(name).copied().unwrap_or(0);
                if best.is_none_or(|(bn, bname)| (n, name) < (bn, bname)) {
                    best = Some((n, name));
                }
            }
        }
    }
    match best {
        Some((_, node)) => Decision::Bind {
            node: node.to_string(),
        },
        None => {
            let mut parts: Vec<String> = reasons
                .into_iter()
                .map(|(reason, n)| format!("{n} {reason}"))
                .collect();
            parts.sort();
            Decision::Unschedulable {
                message: format!(
                    "0/{} nodes are available: {}.",
                    nodes.len(),
                    parts.join(", ")
                ),
            }
        }
    }
}

/// Active pods per node, for `schedule`.
pub fn node_load<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> HashMap<String, usize> {
    let mut load = HashMap::new();
    for p in pods {
        if let Some(n) = util::pod_node(p)
            && !util::pod_is_terminal(p)
        {
            *load.entry(n.to_string()).or_default() += 1;
        }
    }
    load
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::pod;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, ready: bool) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([("kubernetes.io/hostname".to_string(), name.to_string())].into()),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn check(
        nodes: Vec<Node>,
        load: &[(&str, usize)],
        node_selector: &[(&str, &str)],
        tolerate_all: bool,
        want: Decision,
    ) {
        let mut p = pod("p", "").build();
        let spec = p.spec.as_mut().unwrap();
        if !node_selector.is_empty() {
            spec.node_selector = Some(
                node_selector
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
        }
        if tolerate_all {
            spec.tolerations = Some(vec![Toleration {
                operator: Some("Exists".into()),
                ..Default::default()
            }]);
        }
        let load: HashMap<String, usize> = load.iter().map(|(n, c)| (n.to_string(), *c)).collect();
        let refs: Vec<&Node> = nodes.iter().collect();
        assert_eq!(schedule(&p, &refs, &load), want);
    }

    fn bind(n: &str) -> Decision {
        Decision::Bind { node: n.into() }
    }

    fn refuse(m: &str) -> Decision {
        Decision::Unschedulable { message: m.into() }
    }

    #[test]
    fn only_scheduling_relevant_node_changes_matter() {
        let node = |ready: bool, label: &str, heartbeat: i64| {
            let mut n = Node {
                metadata: ObjectMeta {
                    name: Some("n".into()),
                    labels: Some([("zone".to_string(), label.to_string())].into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            n.status = Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    last_heartbeat_time: Some(crate::testutil::ts(heartbeat)),
                    ..Default::default()
                }]),
                ..Default::default()
            });
            n
        };
        let base = node(true, "a", 0);
        let mut cordoned = base.clone();
        cordoned.spec.get_or_insert_default().unschedulable = Some(true);
        let cases = [
            (None, node(true, "a", 0), true),
            (Some(base.clone()), node(true, "a", 10), false),
            (Some(base.clone()), node(false, "a", 10), true),
            (Some(base.clone()), node(true, "b", 0), true),
            (Some(base.clone()), cordoned, true),
        ];
        for (i, (old, new, want)) in cases.into_iter().enumerate() {
            assert_eq!(node_change_matters(old.as_ref(), &new), want, "case {i}");
        }
    }

    #[test]
    fn schedule_table() {
        let cordoned = {
            let mut n = node("c", true);
            n.spec.as_mut().unwrap().unschedulable = Some(true);
            n
        };
        let tainted = {
            let mut n = node("t", true);
            n.spec.as_mut().unwrap().taints = Some(vec![Taint {
                key: "dedicated".into(),
                value: Some("db".into()),
                effect: "NoSchedule".into(),
                ..Default::default()
            }]);
            n
        };
        check(
            vec![],
            &[],
            &[],
            false,
            refuse("no nodes available to schedule pods"),
        );
        check(vec![node("a", true)], &[], &[], false, bind("a"));
        check(
            vec![node("a", true), node("b", true)],
            &[("a", 3), ("b", 1)],
            &[],
            false,
            bind("b"),
        );
        check(
            vec![node("a", true), node("b", true)],
            &[],
            &[],
            false,
            bind("a"),
        );
        check(
            vec![node("a", false)],
            &[],
            &[],
            false,
            refuse(
                "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }.",
            ),
        );
        check(vec![node("a", false)], &[], &[], true, bind("a"));
        check(
            vec![node("a", true), node("b", true), cordoned.clone()],
            &[],
            &[("kubernetes.io/hostname", "zzz")],
            false,
            refuse(
                "0/3 nodes are available: 1 node(s) were unschedulable, 2 node(s) didn't match Pod's node affinity/selector.",
            ),
        );
        check(
            vec![node("a", true), node("b", true)],
            &[("b", 9)],
            &[("kubernetes.io/hostname", "b")],
            false,
            bind("b"),
        );
        check(
            vec![tainted.clone()],
            &[],
            &[],
            false,
            refuse("0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: db}."),
        );
        check(vec![tainted], &[], &[], true, bind("t"));
    }

    #[test]
    fn who_is_scheduled_here() {
        let mut other = pod("o", "").build();
        other.spec.as_mut().unwrap().scheduler_name = Some("my-scheduler".into());
        let cases = [
            (pod("p", "").phase("Pending").build(), true),
            (pod("p", "").node("a").build(), false),
            (pod("p", "").deleting().build(), false),
            (pod("p", "").phase("Failed").build(), false),
            (other, false),
        ];
        for (p, want) in cases {
            assert_eq!(wants_scheduling(&p), want, "{p:?}");
        }
    }
}
