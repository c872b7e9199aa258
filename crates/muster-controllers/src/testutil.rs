//! Builders for test fixtures.

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Pod, PodCondition, PodIP, PodSpec, PodStatus, Service, ServicePort,
    ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub fn ts(secs: i64) -> Time {
    Time(crate::util::Timestamp::from_second(1_700_000_000 + secs).unwrap())
}

/// A distinct IPv4 address per index.
pub fn ip(i: usize) -> String {
    format!("10.244.{}.{}", i / 250, i % 250 + 1)
}

pub enum Tgt {
    Num(i32),
    Name(&'static str),
}

pub fn svc(name: &str, selector: &[(&str, &str)], ports: &[(Option<&str>, i32, Tgt)]) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-svc-{name}")),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: (!selector.is_empty()).then(|| {
                selector
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p, t)| ServicePort {
                        name: n.map(str::to_string),
                        port: *p,
                        protocol: Some("TCP".into()),
                        target_port: Some(match t {
                            Tgt::Num(n) => IntOrString::Int(*n),
                            Tgt::Name(s) => IntOrString::String(s.to_string()),
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub struct PodBuilder(Pod);

pub fn pod(name: &str, ip: &str) -> PodBuilder {
    PodBuilder(Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            labels: Some([("app".to_string(), "web".to_string())].into()),
            creation_timestamp: Some(ts(0)),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: (!ip.is_empty()).then(|| ip.to_string()),
            pod_ips: (!ip.is_empty()).then(|| vec![PodIP { ip: ip.to_string() }]),
            ..Default::default()
        }),
    })
}

impl PodBuilder {
    pub fn ready(self, ready: bool) -> Self {
        self.ready_at(ready, 0)
    }

    pub fn ready_at(mut self, ready: bool, at: i64) -> Self {
        let st = self.0.status.get_or_insert_default();
        let conds = st.conditions.get_or_insert_default();
        conds.retain(|c| c.type_ != "Ready");
        conds.push(PodCondition {
            type_: "Ready".into(),
            status: if ready { "True" } else { "False" }.into(),
            last_transition_time: Some(ts(at)),
            ..Default::default()
        });
        self
    }

    pub fn labels(mut self, labels: &[(&str, &str)]) -> Self {
        self.0.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self
    }

    pub fn namespace(mut self, ns: &str) -> Self {
        self.0.metadata.namespace = Some(ns.into());
        self
    }

    pub fn phase(mut self, phase: &str) -> Self {
        self.0.status.get_or_insert_default().phase = Some(phase.into());
        self
    }

    pub fn deleting(mut self) -> Self {
        self.0.metadata.deletion_timestamp = Some(ts(100));
        self
    }

    pub fn port(mut self, name: &str, port: i32) -> Self {
        let spec = self.0.spec.get_or_insert_default();
        spec.containers[0]
            .ports
            .get_or_insert_default()
            .push(ContainerPort {
                name: Some(name.into()),
                container_port: port,
                protocol: Some("TCP".into()),
                ..Default::default()
            });
        self
    }

    pub fn hostname(mut self, hostname: &str, subdomain: &str) -> Self {
        let spec = self.0.spec.get_or_insert_default();
        spec.hostname = Some(hostname.into());
        spec.subdomain = Some(subdomain.into());
        self
    }

    pub fn node(mut self, node: &str) -> Self {
        self.0.spec.get_or_insert_default().node_name = Some(node.into());
        self
    }

    pub fn ipv6(mut self, ip: &str) -> Self {
        let st = self.0.status.get_or_insert_default();
        st.pod_ips
            .get_or_insert_default()
            .push(PodIP { ip: ip.to_string() });
        self
    }

    pub fn created(mut self, at: i64) -> Self {
        self.0.metadata.creation_timestamp = Some(ts(at));
        self
    }

    pub fn build(self) -> Pod {
        self.0
    }
}
